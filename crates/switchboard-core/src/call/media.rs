//! How a call takes media actions and the network's media events (see [`crate::media`]).

use super::{Call, CallState, ChangeType, Effect, NetCommand, OPERATIONS_KEPT, Operation, OperationStatus, Refusal};
use crate::media::{CompletionReason, MEDIA_QUEUE_MAX, MediaAction, MediaJob, MediaRequest, OperationKind, Recording, Tone, ToneInfo};
use crate::result::ResultInfo;

impl Call {
    /// A media action from the bot. Its operation is in `operations` afterwards, as the response
    /// shows it: `running` (prompts, recordings, tones being sent; a notification follows when it
    /// ends) or `completed` at once (no notification follows, as the `commsOperation` page says).
    pub(super) fn media_request(
        &mut self,
        operation_id: String,
        client_context: Option<String>,
        request: MediaRequest,
    ) -> Result<Vec<Effect>, Refusal> {
        if self.state != CallState::Established {
            return Err(self.refuse(request.action(), "'established'"));
        }
        // Graph: mute and unmute are "only supported for group calls".
        if matches!(request, MediaRequest::Mute | MediaRequest::Unmute) && !self.group {
            return Err(Refusal::GroupCallOnly(request.action()));
        }
        let barge_in = matches!(&request, MediaRequest::Record(r) if r.barge_in);
        let queued = matches!(request, MediaRequest::Play { .. } | MediaRequest::Record(_));
        let sending =
            self.operations.iter().filter(|o| o.kind == OperationKind::SendDtmfTones && o.status == OperationStatus::Running).count();
        let full = match request {
            _ if barge_in => false,
            MediaRequest::SendDtmfTones { .. } => sending >= MEDIA_QUEUE_MAX,
            _ => queued && self.media.queue.len() >= MEDIA_QUEUE_MAX,
        };
        if full {
            return Err(Refusal::MediaQueueFull);
        }
        let mut fx = Vec::new();
        let mut op = Operation::new(operation_id.clone(), request.kind(), client_context);
        match request {
            MediaRequest::Play { prompts, looped } => {
                self.enqueue(MediaJob { operation_id, action: MediaAction::Play { prompts, looped } }, &mut fx)
            }
            MediaRequest::Record(settings) => {
                // `bargeInAllowed`: the recording barges into the prompts and recordings playing or
                // waiting (each reported cancelled) and starts now.
                if settings.barge_in {
                    self.cancel_media(&mut fx);
                }
                self.enqueue(MediaJob { operation_id, action: MediaAction::Record(settings) }, &mut fx)
            }
            MediaRequest::SendDtmfTones { tones, delay_between_ms } => {
                fx.push(Effect::Net(NetCommand::SendTones { operation_id, tones, delay_between_ms }));
            }
            MediaRequest::SubscribeToTone => {
                self.media.tones_subscribed = true;
                op.status = OperationStatus::Completed;
            }
            MediaRequest::CancelMediaProcessing => {
                self.cancel_media(&mut fx);
                op.status = OperationStatus::Completed;
            }
            MediaRequest::Mute | MediaRequest::Unmute => {
                let muted = matches!(request, MediaRequest::Mute);
                if self.media.muted != muted {
                    self.media.muted = muted;
                    fx.push(self.notify_roster());
                }
                op.status = OperationStatus::Completed;
            }
            MediaRequest::UpdateRecordingStatus(status) => {
                if self.media.recording_status != Some(status) {
                    self.media.recording_status = Some(status);
                    fx.push(self.notify_roster());
                }
                op.status = OperationStatus::Completed;
            }
        }
        self.add_operation(op);
        Ok(fx)
    }

    /// Queues a prompt or recording; the network starts it at once if nothing is running.
    fn enqueue(&mut self, job: MediaJob, fx: &mut Vec<Effect>) {
        self.media.queue.push(job.clone());
        if self.media.queue.len() == 1 {
            fx.push(Effect::Net(NetCommand::PlayMedia { job }));
        }
    }

    /// The network finished a media operation: the head of the queue (the next one starts), or tones
    /// being sent. Anything else (an operation cancelled meanwhile, a late repeat) changes nothing.
    pub(super) fn media_completed(
        &mut self,
        operation_id: &str,
        reason: CompletionReason,
        recording: Option<Recording>,
        fx: &mut Vec<Effect>,
    ) {
        let head = self.media.queue.first().is_some_and(|j| j.operation_id == operation_id);
        let running = self.operations.iter().any(|o| o.id == operation_id && o.status == OperationStatus::Running);
        if !running || (!head && self.media.queue.iter().any(|j| j.operation_id == operation_id)) {
            return;
        }
        if head {
            self.media.queue.remove(0);
        }
        let info = reason.result_info();
        // Hold music that could not start leaves nobody on hold.
        let hold = self.operations.iter().any(|o| o.id == operation_id && o.kind == OperationKind::StartHoldMusic);
        if hold && reason.failed() {
            self.media.held = None;
        }
        self.end_operation(operation_id, reason, info, recording, fx);
        if head && let Some(next) = self.media.queue.first().cloned() {
            fx.push(Effect::Net(NetCommand::PlayMedia { job: next }));
        }
    }

    /// A key the remote party pressed: a `toneInfo` if the bot subscribed.
    pub(super) fn tone_received(&mut self, tone: Tone, fx: &mut Vec<Effect>) {
        if !self.media.tones_subscribed || self.state != CallState::Established {
            return;
        }
        self.media.tone_sequence += 1;
        if let Effect::Notify(mut n) = self.notify(ChangeType::Updated) {
            n.tone = Some(ToneInfo { sequence_id: self.media.tone_sequence, tone });
            fx.push(Effect::Notify(n));
        }
    }

    /// `cancelMediaProcessing`, or the caller left the bot's media: the prompt or recording running
    /// stops and every one waiting is dropped, each reported as cancelled. Tones being sent and the
    /// tone subscription carry on.
    pub(super) fn cancel_media(&mut self, fx: &mut Vec<Effect>) {
        let jobs = std::mem::take(&mut self.media.queue);
        if let Some(head) = jobs.first() {
            fx.push(Effect::Net(NetCommand::StopMedia { operation_id: head.operation_id.clone() }));
        }
        for job in jobs {
            let reason = cancelled(&job.action);
            self.end_operation(&job.operation_id, reason, ResultInfo::media_cancelled(), None, fx);
        }
    }

    /// The call is ending: every media operation still running is cancelled (400/8508), each reported
    /// once, before the call's own end; the network stops what it plays.
    pub(super) fn end_media(&mut self, fx: &mut Vec<Effect>) {
        let jobs = std::mem::take(&mut self.media.queue);
        if let Some(head) = jobs.first() {
            fx.push(Effect::Net(NetCommand::StopMedia { operation_id: head.operation_id.clone() }));
        }
        let running: Vec<(String, CompletionReason)> = self
            .operations
            .iter()
            .filter(|o| o.status == OperationStatus::Running && o.kind != OperationKind::Transfer)
            .map(|o| {
                let reason = match jobs.iter().find(|j| j.operation_id == o.id) {
                    Some(job) => cancelled(&job.action),
                    None => CompletionReason::MediaOperationCanceled,
                };
                (o.id.clone(), reason)
            })
            .collect();
        for (id, reason) in running {
            self.end_operation(&id, reason, ResultInfo::media_cancelled(), None, fx);
        }
    }

    /// Ends a running media operation and tells the bot (`deleted` on the operation).
    fn end_operation(&mut self, id: &str, reason: CompletionReason, info: ResultInfo, recording: Option<Recording>, fx: &mut Vec<Effect>) {
        let Some(op) = self.operations.iter_mut().find(|o| o.id == id && o.status == OperationStatus::Running) else { return };
        // Tones end `completed` whatever the reason, with no resultInfo (as Graph's examples show).
        let tones = op.kind == OperationKind::SendDtmfTones;
        op.status = if reason.failed() && !tones { OperationStatus::Failed } else { OperationStatus::Completed };
        op.completion_reason = Some(reason);
        op.result_info = (!tones).then_some(info);
        op.recording = recording;
        let op = op.clone();
        fx.push(self.notify_operation_ended(op));
    }

    /// `deleted` on an operation that ended: its own notification (`…/operations/{id}`).
    pub(super) fn notify_operation_ended(&self, op: Operation) -> Effect {
        let mut e = self.notify(ChangeType::Deleted);
        if let Effect::Notify(n) = &mut e {
            n.on_operation = true;
            n.operation = Some(op);
            n.result_info = None;
        }
        e
    }

    /// Remembers an operation; beyond [`OPERATIONS_KEPT`], the oldest finished one is forgotten.
    pub(super) fn add_operation(&mut self, op: Operation) {
        self.operations.push(op);
        while self.operations.len() > OPERATIONS_KEPT {
            let Some(i) = self.operations.iter().position(|o| o.status != OperationStatus::Running) else { break };
            self.operations.remove(i);
        }
    }
}

/// How a cancelled prompt or recording ends (the two enums differ).
fn cancelled(action: &MediaAction) -> CompletionReason {
    match action {
        MediaAction::Play { .. } => CompletionReason::MediaOperationCanceled,
        MediaAction::Record(_) => CompletionReason::OperationCanceled,
    }
}
