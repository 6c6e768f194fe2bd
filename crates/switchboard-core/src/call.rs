//! The call state machine: the lifecycle of one Graph `call` resource as the bot sees it.
//!
//! ```text
//! incoming ──answer──► establishing ──connected──► established ──hangUp──► terminating ──► terminated
//!    │ reject/redirect/timeout │ failed/ring timeout       │ remote hang-up / keepAlive timeout ─────►│
//!    └────────────────────────►┴──────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! A group call (the bot placed it to several targets) has [`Member`]s instead of one remote party:
//! it is `established` once the first of them joins, each join and leave is a roster notification,
//! and it ends when the last one leaves. A transfer from a group call names its transferee; when it
//! completes and others remain, the call goes back to `established` instead of ending.
//!
//! [`Call::handle`] is the only way a call changes. It returns the effects the engine must carry out:
//! notifications to the bot, commands to the telephony network and timers.

use serde::{Deserialize, Serialize};

use crate::Millis;
use crate::media::{CompletionReason, Media, MediaJob, MediaRequest, OperationKind, Recording, Tone, ToneInfo};
use crate::party::Party;
use crate::result::ResultInfo;

/// Graph's `callState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CallState {
    Incoming,
    Establishing,
    Established,
    Hold,
    Transferring,
    TransferAccepted,
    Redirecting,
    Terminating,
    Terminated,
}

impl CallState {
    /// Every state, in the order of the lifecycle.
    pub const ALL: [CallState; 9] = [
        CallState::Incoming,
        CallState::Establishing,
        CallState::Established,
        CallState::Hold,
        CallState::Transferring,
        CallState::TransferAccepted,
        CallState::Redirecting,
        CallState::Terminating,
        CallState::Terminated,
    ];

    /// The camelCase name Graph uses on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            CallState::Incoming => "incoming",
            CallState::Establishing => "establishing",
            CallState::Established => "established",
            CallState::Hold => "hold",
            CallState::Transferring => "transferring",
            CallState::TransferAccepted => "transferAccepted",
            CallState::Redirecting => "redirecting",
            CallState::Terminating => "terminating",
            CallState::Terminated => "terminated",
        }
    }

    /// The documented edges of the call state machine (`graph-api.md` §3.3). Every transition
    /// [`Call::handle`] makes is along one of them; the property tests check it.
    pub fn may_become(self, next: CallState) -> bool {
        use CallState::*;
        matches!(
            (self, next),
            (Incoming, Establishing | Redirecting | Terminating | Terminated)
                | (Establishing, Established | Terminating | Terminated)
                | (Established, Transferring | Hold | Terminating | Terminated)
                | (Hold, Established | Terminating | Terminated)
                | (Transferring, TransferAccepted | Established | Terminating | Terminated)
                | (TransferAccepted, Terminating | Terminated)
                // A group call whose transferee left for the target carries on with the others.
                | (TransferAccepted, Established)
                | (Redirecting, Terminated)
                | (Terminating, Terminated)
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Direction {
    Incoming,
    Outgoing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MediaState {
    Active,
    Inactive,
}

/// Which kind of `mediaConfig` the bot asked for; echoed back in the call resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MediaConfig {
    ServiceHosted,
    AppHosted,
}

/// Graph's `changeType` of a notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ChangeType {
    Created,
    Updated,
    Deleted,
}

/// One call as the bot sees it. Everything the Graph `call` resource shows is derived from this.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Call {
    pub id: String,
    /// The application (client id) that owns the call; no other app may see it.
    pub app_id: String,
    pub tenant_id: String,
    pub direction: Direction,
    pub state: CallState,
    /// Where notifications go; `None` means the app's registered calling webhook.
    pub callback_uri: Option<String>,
    /// The caller (incoming) or the bot itself (outgoing).
    pub source: Party,
    /// The callee (outgoing) or the bot that was called (incoming).
    pub target: Party,
    /// The application instance the call belongs to, if it came in on one or was placed from one.
    /// PSTN calls, and later PSTN transfers, need one.
    pub application_instance: Option<String>,
    pub requested_modalities: Vec<String>,
    pub media_config: MediaConfig,
    pub media_state: MediaState,
    pub subject: Option<String>,
    pub result_info: Option<ResultInfo>,
    pub termination_reason: Option<String>,
    pub my_participant_id: String,
    /// The participant id of the party at the far end.
    pub peer_participant_id: String,
    pub call_chain_id: String,
    pub created_at: Millis,
    /// Incoming: the bot must answer, reject or redirect by then. Outgoing: the ring timeout.
    pub setup_deadline: Option<Millis>,
    /// The call ends unless a keepAlive arrives by then.
    pub keep_alive_deadline: Millis,
    /// The transfer in progress, while `transferring` or `transferAccepted`.
    #[serde(default)]
    pub transfer: Option<Transfer>,
    /// The call's most recent operations, oldest first.
    #[serde(default)]
    pub operations: Vec<Operation>,
    /// Incoming calls that another bot transferred here: that bot (`incomingContext.transferor`).
    #[serde(default)]
    pub transferor: Option<Party>,
    /// A group call's participants other than the bot, in the order they were invited; empty for a
    /// peer-to-peer call.
    #[serde(default)]
    pub members: Vec<Member>,
    /// A group call: placed to several targets. It stays one after its members have left.
    #[serde(default)]
    pub group: bool,
    /// Prompts, recordings, tones, mute (see [`crate::media`]).
    #[serde(default, skip_serializing_if = "Media::is_idle")]
    pub media: Media,
}

/// A participant of a group call other than the bot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub participant_id: String,
    pub party: Party,
    /// Joined (answered); until then the party is being invited (ringing).
    pub joined: bool,
    /// The bot muted it (`participants/{id}/mute`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub muted: bool,
    /// The invitation (its operation id) that brought it into the call, if the bot invited it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invitation: Option<String>,
    /// While it rings: when it stops (its invitation's ring timeout). `None`: the call's setup deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_until: Option<Millis>,
}

impl Member {
    /// A party being invited (ringing).
    pub fn invited(participant_id: String, party: Party) -> Member {
        Member { participant_id, party, joined: false, muted: false, invitation: None, ring_until: None }
    }

    /// A party in the call.
    pub fn joined(participant_id: String, party: Party) -> Member {
        Member { joined: true, ..Member::invited(participant_id, party) }
    }
}

/// A transfer of this call's remote party (the transferee) to a transfer target (RFC 5589 terms).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Transfer {
    pub target: Party,
    /// Consultative transfer: the bot's call with the target; the transferee takes over its remote leg.
    pub replaces_call_id: Option<String>,
    /// The transfer fails as unanswered if the target has not accepted by then.
    pub deadline: Millis,
    /// The operation that tracks this transfer (the 2018 beta reported progress through it).
    #[serde(default)]
    pub operation_id: String,
    /// In a group call: the participant id of the member being transferred.
    #[serde(default)]
    pub transferee: Option<String>,
    /// The deadline passed and the network was asked to stop the transfer; its answer decides the
    /// outcome (a success it could no longer undo completes the transfer).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancelling: bool,
    /// Custom SIP headers (`X-…`, name and value) the target receives, from the request's
    /// `customCallingContext.sipHeaders`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sip_headers: Vec<(String, String)>,
}

/// Graph's `operationStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OperationStatus {
    Running,
    Completed,
    Failed,
}

/// A `commsOperation` of the call: a transfer's, or a media action's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    pub id: String,
    pub status: OperationStatus,
    pub client_context: Option<String>,
    /// Why it failed (for a failed operation), or how a media operation ended.
    pub result_info: Option<ResultInfo>,
    #[serde(default, skip_serializing_if = "OperationKind::is_transfer")]
    pub kind: OperationKind,
    /// How a prompt, recording or tones ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_reason: Option<CompletionReason>,
    /// A completed `recordResponse`'s recording.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<Recording>,
    /// Whom an invitation invited.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub invitees: Vec<Invitee>,
}

impl Operation {
    pub fn new(id: String, kind: OperationKind, client_context: Option<String>) -> Operation {
        Operation {
            id,
            status: OperationStatus::Running,
            client_context,
            result_info: None,
            kind,
            completion_reason: None,
            recording: None,
            invitees: Vec::new(),
        }
    }
}

/// How many finished operations a call remembers for GET (running ones are always kept).
pub const OPERATIONS_KEPT: usize = 10;

impl Transfer {
    fn kind(&self) -> &'static str {
        if self.replaces_call_id.is_some() { "consultative" } else { "blind" }
    }
}

/// How long the bot has to answer an incoming call (Graph: about 15 s).
pub const ANSWER_TIMEOUT_MS: Millis = 15_000;
/// A call without keepAlive ends after 45 minutes (Graph).
pub const KEEP_ALIVE_TIMEOUT_MS: Millis = 45 * 60 * 1000;

/// Why a network attempt to reach a party failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Failure {
    Busy,
    Declined,
    NoAnswer,
    Unreachable,
    /// The transferee left the call before the transfer completed (group calls; in a peer-to-peer
    /// call the transferee leaving ends the call).
    TransfereeLeft,
}

impl Failure {
    pub fn result_info(self) -> ResultInfo {
        match self {
            Failure::Busy => ResultInfo::busy(),
            Failure::Declined => ResultInfo::declined(),
            Failure::NoAnswer => ResultInfo::no_answer(),
            Failure::Unreachable | Failure::TransfereeLeft => ResultInfo::unreachable(),
        }
    }
}

/// Events that the telephony network reports about the remote leg of a call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NetEvent {
    /// The remote party is being alerted.
    Ringing,
    /// Media flows between the bot and the remote party.
    Connected,
    /// The remote party could not be reached.
    Failed(Failure),
    /// The remote party hung up.
    RemoteHangUp,
    /// The transfer target accepted: it answered (blind) or took the replaced leg (consultative).
    /// Each transfer event names its transfer ([`Transfer::operation_id`]); the core applies only
    /// those of the transfer in progress, so a late or stale event cannot end another transfer.
    TransferAccepted { transfer_id: String },
    /// The transferee is now connected to the target; the bot's leg is released.
    TransferCompleted { transfer_id: String },
    /// The transfer did not happen, and will not: the transferee is still with the bot.
    TransferFailed { transfer_id: String, failure: Failure },
    /// This call's remote leg was taken over by a consultative transfer of another of the bot's calls.
    Replaced { by_call_id: String },
    /// A member of a group call answered and joined.
    MemberJoined { participant_id: String },
    /// A member of a group call left: it hung up (`failure` is `None`) or never joined (why not).
    MemberLeft { participant_id: String, failure: Option<Failure> },
    /// A media operation the network was running ended (a prompt played out, a recording stopped, the
    /// tones were sent), with its recording if it made one.
    MediaCompleted { operation_id: String, reason: CompletionReason, recording: Option<Recording> },
    /// The remote party pressed a key.
    ToneReceived { tone: Tone },
    /// The remote party put the call on hold (`held`: it no longer listens to the bot's media; over
    /// SIP, its re-INVITE said `sendonly`, `inactive` or `c=0.0.0.0`), or took it off hold.
    RemoteHold { held: bool },
}

/// Timers the core asks for; the engine fires them back as [`Input::Timer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Timer {
    /// Incoming: answer deadline. Outgoing: ring timeout.
    Setup,
    KeepAlive,
    /// The transfer target did not accept in time.
    Transfer,
}

/// Everything that can happen to a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    Answer {
        callback_uri: Option<String>,
        modalities: Vec<String>,
        media_config: MediaConfig,
    },
    Reject {
        reason: String,
    },
    Redirect {
        targets: Vec<Party>,
    },
    HangUp,
    KeepAlive,
    Transfer {
        target: Party,
        replaces_call_id: Option<String>,
        timeout_ms: Millis,
        operation_id: String,
        client_context: Option<String>,
        /// In a group call: the participant id of the member to transfer (required there).
        transferee: Option<String>,
        /// Custom SIP headers for the target (see [`Transfer::sip_headers`]).
        sip_headers: Vec<(String, String)>,
    },
    /// A media action (`playPrompt`, `recordResponse`, `subscribeToTone`, …); its operation id is the
    /// adapter's to choose, like a transfer's.
    Media {
        operation_id: String,
        client_context: Option<String>,
        request: MediaRequest,
    },
    /// `participants/invite`; the invitees ring for at most `ring_timeout_ms`.
    Invite {
        operation_id: String,
        client_context: Option<String>,
        invitees: Vec<Invitee>,
        ring_timeout_ms: Millis,
    },
    /// An action on one participant (mute, remove, hold music).
    Participant {
        operation_id: String,
        client_context: Option<String>,
        participant_id: String,
        action: ParticipantAction,
    },
    Net(NetEvent),
    Timer(Timer),
}

/// Commands for the telephony network about the remote leg of this call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NetCommand {
    /// Place the outgoing call to `call.target`.
    Place,
    Answer,
    /// Refuse an incoming call: Graph's reject `reason` (`none`, `busy`, `forbidden`), or `timeout`
    /// when the bot did not answer in time.
    Reject {
        reason: String,
    },
    Redirect {
        targets: Vec<Party>,
    },
    HangUp,
    /// Transfer the remote party (the transferee) to `target`, replacing the remote leg of
    /// `replaces_call_id` if given (consultative). In a group call `transferee` names the member.
    /// The network reports the outcome with events that carry `transfer_id`.
    Transfer {
        transfer_id: String,
        target: Party,
        replaces_call_id: Option<String>,
        #[serde(default)]
        transferee: Option<String>,
    },
    /// Give up the transfer `transfer_id` if it can still be undone (the target stops ringing, a
    /// pending takeover is dropped). The network answers with the transfer's outcome: `TransferFailed`
    /// if it stopped it, or the success it had already reported if it was too late to stop.
    CancelTransfer {
        transfer_id: String,
    },
    /// A group-call member leaves: one that has not joined stops ringing (the ring timeout passed, or
    /// the bot removed it), one that has is dropped from the call.
    DropMember {
        participant_id: String,
    },
    /// Ring an invitee into this call, or move it over from the call it `replaces`; the network
    /// answers with `MemberJoined` or `MemberLeft`.
    Invite {
        operation_id: String,
        invitee: Invitee,
    },
    /// Start or stop hold music for a participant; `MediaCompleted` when done.
    HoldMusic {
        operation_id: String,
        participant_id: String,
        start: bool,
        prompt: Option<String>,
    },
    /// Play or record (the head of the call's media queue); the network answers with `MediaCompleted`.
    PlayMedia {
        job: MediaJob,
    },
    /// Stop the media operation `operation_id` at once; no `MediaCompleted` is awaited.
    StopMedia {
        operation_id: String,
    },
    /// Send DTMF tones to the remote party; `MediaCompleted` when they are sent.
    SendTones {
        operation_id: String,
        tones: Vec<Tone>,
        delay_between_ms: u64,
    },
}

/// What one notification says about the call: a snapshot taken at the transition that caused it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub change: ChangeType,
    pub state: CallState,
    /// The whole call resource (the `incoming` notification), or just what changed.
    pub full: bool,
    pub result_info: Option<ResultInfo>,
    pub termination_reason: Option<String>,
    pub media_state: Option<MediaState>,
    /// After a failed consultative transfer: the `replacesCallId` it was for.
    pub replaces_context: Option<String>,
    /// The operation this notification reports on, as it is after the transition.
    #[serde(default)]
    pub operation: Option<Operation>,
    /// A roster update (`…/participants`): the group call's participants as they are now.
    #[serde(default)]
    pub roster: bool,
    /// About `operation` itself (`…/operations/{id}`: a media operation that ended), not the call.
    #[serde(default)]
    pub on_operation: bool,
    /// A key the caller pressed (`toneInfo` on an `updated` call notification).
    #[serde(default)]
    pub tone: Option<ToneInfo>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    Notify(Notification),
    Net(NetCommand),
    Timer { timer: Timer, at: Millis },
}

/// A command the call cannot take in its current state. The API turns it into a 4xx.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("cannot {action} a call in state '{}'; {action} needs state {needs}", state.as_str())]
    WrongState { action: &'static str, state: CallState, needs: &'static str },
    /// A body that fits a peer-to-peer call but not a group call (the API answers 409).
    #[error("transferee: is required to transfer from a group call; name one of its participants")]
    TransfereeRequired,
    #[error("transferee: participant '{0}' is not a joined participant of this call")]
    NotAMember(String),
    #[error(
        "{} media operations of this kind are running or waiting already; cancel media processing or wait for one to end",
        crate::media::MEDIA_QUEUE_MAX
    )]
    MediaQueueFull,
    #[error("cannot {0} a peer-to-peer call; Graph supports it in group calls only")]
    GroupCallOnly(&'static str),
    /// The call has no such participant (the API answers 404).
    #[error("participant '{0}' is not in this call")]
    NoSuchParticipant(String),
    /// A well-formed request that the call as it is cannot take (409).
    #[error("{0}")]
    Conflict(String),
}

/// Everything the bot asked for when it placed an outgoing call.
#[derive(Clone, Debug)]
pub struct OutgoingCall {
    pub id: String,
    pub app_id: String,
    pub tenant_id: String,
    pub callback_uri: String,
    pub source: Party,
    pub target: Party,
    pub application_instance: Option<String>,
    pub requested_modalities: Vec<String>,
    pub media_config: MediaConfig,
    pub subject: Option<String>,
    pub my_participant_id: String,
    pub peer_participant_id: String,
    pub call_chain_id: String,
    pub ring_timeout_ms: Millis,
    /// Several targets make a group call: every target as a member with its participant id (the
    /// first is also `target`). Empty for a peer-to-peer call.
    pub members: Vec<(String, Party)>,
}

/// A call offered to the bot by the network.
#[derive(Clone, Debug)]
pub struct IncomingCall {
    pub id: String,
    pub app_id: String,
    pub tenant_id: String,
    pub source: Party,
    pub target: Party,
    pub application_instance: Option<String>,
    pub my_participant_id: String,
    pub peer_participant_id: String,
    pub call_chain_id: String,
    /// Set when a bot transferred the caller here.
    pub transferor: Option<Party>,
}

impl Call {
    /// The bot places a call: it starts `establishing` and the network is asked to place it.
    pub fn place(req: OutgoingCall, now: Millis) -> (Call, Vec<Effect>) {
        let setup = now + req.ring_timeout_ms;
        let call = Call {
            id: req.id,
            app_id: req.app_id,
            tenant_id: req.tenant_id,
            direction: Direction::Outgoing,
            state: CallState::Establishing,
            callback_uri: Some(req.callback_uri),
            source: req.source,
            target: req.target,
            application_instance: req.application_instance,
            requested_modalities: req.requested_modalities,
            media_config: req.media_config,
            media_state: MediaState::Inactive,
            subject: req.subject,
            result_info: None,
            termination_reason: None,
            my_participant_id: req.my_participant_id,
            peer_participant_id: req.peer_participant_id,
            call_chain_id: req.call_chain_id,
            created_at: now,
            setup_deadline: Some(setup),
            keep_alive_deadline: now + KEEP_ALIVE_TIMEOUT_MS,
            transfer: None,
            operations: Vec::new(),
            transferor: None,
            media: Media::default(),
            group: !req.members.is_empty(),
            members: req.members.into_iter().map(|(participant_id, party)| Member::invited(participant_id, party)).collect(),
        };
        let effects = vec![
            call.notify(ChangeType::Updated),
            Effect::Net(NetCommand::Place),
            Effect::Timer { timer: Timer::Setup, at: setup },
            Effect::Timer { timer: Timer::KeepAlive, at: call.keep_alive_deadline },
        ];
        (call, effects)
    }

    /// The network offers a call to the bot: it starts `incoming` and the app's webhook hears of it.
    pub fn offer(req: IncomingCall, now: Millis) -> (Call, Vec<Effect>) {
        let setup = now + ANSWER_TIMEOUT_MS;
        let call = Call {
            id: req.id,
            app_id: req.app_id,
            tenant_id: req.tenant_id,
            direction: Direction::Incoming,
            state: CallState::Incoming,
            callback_uri: None,
            source: req.source,
            target: req.target,
            application_instance: req.application_instance,
            requested_modalities: vec!["audio".to_owned()],
            media_config: MediaConfig::ServiceHosted,
            media_state: MediaState::Inactive,
            subject: None,
            result_info: None,
            termination_reason: None,
            my_participant_id: req.my_participant_id,
            peer_participant_id: req.peer_participant_id,
            call_chain_id: req.call_chain_id,
            created_at: now,
            setup_deadline: Some(setup),
            keep_alive_deadline: now + KEEP_ALIVE_TIMEOUT_MS,
            transfer: None,
            operations: Vec::new(),
            transferor: req.transferor,
            members: Vec::new(),
            group: false,
            media: Media::default(),
        };
        let mut created = call.notify(ChangeType::Created);
        if let Effect::Notify(n) = &mut created {
            n.full = true;
        }
        let effects = vec![
            created,
            Effect::Timer { timer: Timer::Setup, at: setup },
            Effect::Timer { timer: Timer::KeepAlive, at: call.keep_alive_deadline },
        ];
        (call, effects)
    }

    pub fn is_terminated(&self) -> bool {
        self.state == CallState::Terminated
    }

    /// The timers this call is waiting on; the engine re-arms them after a restart.
    pub fn pending_timers(&self) -> Vec<(Timer, Millis)> {
        if self.is_terminated() {
            return Vec::new();
        }
        let mut timers = vec![(Timer::KeepAlive, self.keep_alive_deadline)];
        if let Some(at) = self.setup_deadline {
            timers.push((Timer::Setup, at));
        }
        if let Some(t) = &self.transfer {
            timers.push((Timer::Transfer, t.deadline));
        }
        timers
    }

    /// Apply one input. On `Ok` the call has moved (or stayed) and the effects are owed; on `Err`
    /// nothing changed.
    pub fn handle(&mut self, input: Input, now: Millis) -> Result<Vec<Effect>, Refusal> {
        use CallState::*;
        if self.is_terminated() {
            // A terminated call takes nothing: commands are refused, late events and timers dropped.
            return match input {
                Input::Net(_) | Input::Timer(_) => Ok(Vec::new()),
                other => Err(self.refuse(action_name(&other), "other than 'terminated'")),
            };
        }
        let mut fx = Vec::new();
        match input {
            Input::Answer { callback_uri, modalities, media_config } => {
                if self.state != Incoming {
                    return Err(self.refuse("answer", "'incoming'"));
                }
                if callback_uri.is_some() {
                    self.callback_uri = callback_uri;
                }
                if !modalities.is_empty() {
                    self.requested_modalities = modalities;
                }
                self.media_config = media_config;
                self.setup_deadline = None;
                self.state = Establishing;
                fx.push(self.notify(ChangeType::Updated));
                fx.push(Effect::Net(NetCommand::Answer));
            }
            Input::Reject { reason } => {
                if self.state != Incoming {
                    return Err(self.refuse("reject", "'incoming'"));
                }
                self.end(ResultInfo::rejected(&reason), &mut fx);
                fx.push(Effect::Net(NetCommand::Reject { reason }));
            }
            Input::Redirect { targets } => {
                if self.state != Incoming {
                    return Err(self.refuse("redirect", "'incoming'"));
                }
                self.end(ResultInfo::redirected(), &mut fx);
                fx.push(Effect::Net(NetCommand::Redirect { targets }));
            }
            Input::HangUp => match self.state {
                Terminating => return Err(self.refuse("hang up", "other than 'terminating'")),
                _ => {
                    self.state = Terminating;
                    fx.push(self.notify(ChangeType::Updated));
                    self.end(ResultInfo::ended_by_bot(), &mut fx);
                    fx.push(Effect::Net(NetCommand::HangUp));
                }
            },
            Input::KeepAlive => {
                self.keep_alive_deadline = now + KEEP_ALIVE_TIMEOUT_MS;
                fx.push(Effect::Timer { timer: Timer::KeepAlive, at: self.keep_alive_deadline });
            }
            Input::Net(NetEvent::Ringing) => {}
            Input::Net(NetEvent::Connected) => {
                if self.state == Establishing {
                    self.setup_deadline = None;
                    self.establish(&mut fx);
                }
            }
            Input::Net(NetEvent::Failed(failure)) => {
                if matches!(self.state, Establishing | Incoming) {
                    self.end(failure.result_info(), &mut fx);
                }
            }
            Input::Net(NetEvent::RemoteHangUp) => {
                let info = if self.remote().is_phone() { ResultInfo::pstn_hang_up() } else { ResultInfo::remote_hang_up() };
                let cancel = self.cancel_transfer();
                // A call that became a group call just as its peer hung up: the others leave with it.
                let others = self.group && !self.members.is_empty();
                self.end(info, &mut fx);
                fx.extend(cancel);
                if others {
                    fx.push(Effect::Net(NetCommand::HangUp));
                }
            }
            Input::Transfer { target, replaces_call_id, timeout_ms, operation_id, client_context, transferee, sip_headers } => {
                if self.state != Established {
                    return Err(self.refuse("transfer", "'established'"));
                }
                // A peer-to-peer call has one possible transferee; a group call must name it.
                let transferee = match (self.group, transferee) {
                    (false, _) => None,
                    (true, None) => return Err(Refusal::TransfereeRequired),
                    (true, Some(pid)) if self.members.iter().any(|m| m.participant_id == pid && m.joined) => Some(pid),
                    (true, Some(pid)) => return Err(Refusal::NotAMember(pid)),
                };
                let deadline = now + timeout_ms;
                self.add_operation(Operation::new(operation_id.clone(), OperationKind::Transfer, client_context));
                self.transfer = Some(Transfer {
                    target: target.clone(),
                    replaces_call_id: replaces_call_id.clone(),
                    deadline,
                    operation_id: operation_id.clone(),
                    transferee: transferee.clone(),
                    cancelling: false,
                    sip_headers,
                });
                self.state = Transferring;
                fx.push(self.notify_operation());
                fx.push(Effect::Net(NetCommand::Transfer { transfer_id: operation_id, target, replaces_call_id, transferee }));
                fx.push(Effect::Timer { timer: Timer::Transfer, at: deadline });
            }
            Input::Media { operation_id, client_context, request } => {
                return self.media_request(operation_id, client_context, request);
            }
            Input::Invite { operation_id, client_context, invitees, ring_timeout_ms } => {
                return self.invite(operation_id, client_context, invitees, ring_timeout_ms, now);
            }
            Input::Participant { operation_id, client_context, participant_id, action } => {
                return self.participant_action(operation_id, client_context, participant_id, action);
            }
            Input::Net(NetEvent::MediaCompleted { operation_id, reason, recording }) => {
                self.media_completed(&operation_id, reason, recording, &mut fx);
            }
            Input::Net(NetEvent::ToneReceived { tone }) => self.tone_received(tone, &mut fx),
            // A peer-to-peer call's audio is with its one peer: held, it is inactive until resumed. (A
            // group call's media goes on with the others.)
            Input::Net(NetEvent::RemoteHold { held }) => {
                let now_state = if held { MediaState::Inactive } else { MediaState::Active };
                if self.state == Established && !self.group && self.media_state != now_state {
                    self.media_state = now_state;
                    if let Effect::Notify(mut n) = self.notify(ChangeType::Updated) {
                        n.media_state = Some(now_state);
                        fx.push(Effect::Notify(n));
                    }
                }
            }
            // Events of another transfer than the one in progress (an earlier one, late) change nothing.
            Input::Net(
                NetEvent::TransferAccepted { transfer_id }
                | NetEvent::TransferCompleted { transfer_id }
                | NetEvent::TransferFailed { transfer_id, .. },
            ) if !self.is_current_transfer(&transfer_id) => {}
            Input::Net(NetEvent::TransferAccepted { .. }) => {
                if self.state == Transferring {
                    self.accept_transfer(&mut fx);
                }
            }
            Input::Net(NetEvent::TransferCompleted { .. }) => {
                if self.state == Transferring {
                    self.accept_transfer(&mut fx);
                }
                if self.state == TransferAccepted && self.others_stay() {
                    self.complete_group_transfer(&mut fx);
                } else if self.state == TransferAccepted {
                    let consultative = self.transfer.as_ref().is_some_and(|t| t.replaces_call_id.is_some());
                    if consultative {
                        self.end_with(None, Some("AppTransferred"), &mut fx);
                    } else {
                        self.end_with(Some(ResultInfo::transfer_completed()), None, &mut fx);
                    }
                }
            }
            Input::Net(NetEvent::TransferFailed { failure, .. }) => {
                if self.state == Transferring {
                    self.fail_transfer(failure, &mut fx);
                }
            }
            Input::Net(NetEvent::Replaced { by_call_id }) => {
                let cancel = self.cancel_transfer();
                self.end_with(Some(ResultInfo::replaced(&by_call_id)), Some("AppTransferred"), &mut fx);
                fx.extend(cancel);
            }
            Input::Net(NetEvent::MemberJoined { participant_id }) => {
                let Some(member) = self.members.iter_mut().find(|m| m.participant_id == participant_id && !m.joined) else {
                    return Ok(fx);
                };
                member.joined = true;
                if self.state == Establishing {
                    self.establish(&mut fx);
                }
                if self.members.iter().all(|m| m.joined) {
                    self.setup_deadline = None;
                }
                fx.push(self.notify_roster());
                self.invitee_joined(&participant_id, &mut fx);
            }
            Input::Net(NetEvent::MemberLeft { participant_id, failure }) => {
                let Some(i) = self.members.iter().position(|m| m.participant_id == participant_id) else { return Ok(fx) };
                let member = self.members.remove(i);
                self.invitee_failed(&member, failure.unwrap_or(Failure::Unreachable), &mut fx);
                if self.media.held.as_deref() == Some(participant_id.as_str()) {
                    self.media.held = None;
                }
                let transferee = self.transfer.as_ref().and_then(|t| t.transferee.as_deref()) == Some(participant_id.as_str());
                if self.members.is_empty() {
                    // The last one: the call ends (a transfer in progress fails with it; hanging up
                    // the call's legs cancels it in the network too).
                    let info = if self.state == Establishing { ResultInfo::nobody_joined() } else { ResultInfo::all_left() };
                    self.end(info, &mut fx);
                    fx.push(Effect::Net(NetCommand::HangUp));
                    return Ok(fx);
                }
                if transferee && self.state == Transferring {
                    let cancel = self.cancel_transfer();
                    self.fail_transfer(Failure::TransfereeLeft, &mut fx);
                    fx.extend(cancel);
                }
                if member.joined {
                    fx.push(self.notify_roster());
                }
            }
            // The deadline does not fail the transfer by itself: the network may have moved the
            // transferee already (over SIP a REFER acted on cannot be taken back). It is asked to stop,
            // and its answer, `TransferFailed` or the success it could not undo, is the one outcome.
            Input::Timer(Timer::Transfer) => {
                if self.state == Transferring
                    && let Some(t) = self.transfer.as_mut().filter(|t| now >= t.deadline && !t.cancelling)
                {
                    t.cancelling = true;
                    fx.push(Effect::Net(NetCommand::CancelTransfer { transfer_id: t.operation_id.clone() }));
                }
            }
            Input::Timer(Timer::Setup) => {
                if self.setup_deadline.is_some_and(|at| now >= at) {
                    match self.state {
                        Incoming => {
                            self.end(ResultInfo::not_answered_in_time(), &mut fx);
                            // Not one of Graph's reject reasons: the network tells the caller nobody answered.
                            fx.push(Effect::Net(NetCommand::Reject { reason: "timeout".to_owned() }));
                        }
                        Establishing => {
                            let info = if self.group { ResultInfo::nobody_joined() } else { ResultInfo::no_answer() };
                            self.end(info, &mut fx);
                            fx.push(Effect::Net(NetCommand::HangUp));
                        }
                        // A group call stops inviting those who have not joined by the ring timeout.
                        _ => {
                            self.setup_deadline = None;
                            // Each stops at its own deadline (invitations made later ring on).
                            let due = |m: &Member| !m.joined && m.ring_until.is_none_or(|u| now >= u);
                            let (ringing, kept): (Vec<Member>, Vec<Member>) = self.members.drain(..).partition(due);
                            self.members = kept;
                            for m in ringing {
                                self.invitee_failed(&m, Failure::NoAnswer, &mut fx);
                                fx.push(Effect::Net(NetCommand::DropMember { participant_id: m.participant_id }));
                            }
                            if let Some(next) = self.members.iter().filter(|m| !m.joined).filter_map(|m| m.ring_until).min() {
                                self.setup_deadline = Some(next);
                                fx.push(Effect::Timer { timer: Timer::Setup, at: next });
                            }
                            if self.group && self.members.is_empty() {
                                self.end(ResultInfo::all_left(), &mut fx);
                                fx.push(Effect::Net(NetCommand::HangUp));
                            }
                        }
                    }
                }
            }
            Input::Timer(Timer::KeepAlive) => {
                if now >= self.keep_alive_deadline {
                    self.end(ResultInfo::keep_alive_timeout(), &mut fx);
                    fx.push(Effect::Net(NetCommand::HangUp));
                }
            }
        }
        Ok(fx)
    }

    /// The party at the far end of the bot's call.
    pub fn remote(&self) -> &Party {
        match self.direction {
            Direction::Incoming => &self.source,
            Direction::Outgoing => &self.target,
        }
    }

    /// The bot's own side of the call: the app or instance that was called (incoming) or that placed it.
    pub fn local(&self) -> &Party {
        match self.direction {
            Direction::Incoming => &self.target,
            Direction::Outgoing => &self.source,
        }
    }

    /// `established`, with media flowing: the remote party answered (or a group call's first member).
    fn establish(&mut self, fx: &mut Vec<Effect>) {
        self.state = CallState::Established;
        self.media_state = MediaState::Active;
        if let Effect::Notify(mut n) = self.notify(ChangeType::Updated) {
            n.media_state = Some(MediaState::Active);
            fx.push(Effect::Notify(n));
        }
    }

    /// Whether `transfer_id` names the transfer in progress.
    fn is_current_transfer(&self, transfer_id: &str) -> bool {
        self.transfer.as_ref().is_some_and(|t| t.operation_id == transfer_id)
    }

    /// The command that stops the transfer in progress in the network, for when the call is done with
    /// it (the call ends, the transferee left); taken before the transfer is cleared.
    fn cancel_transfer(&self) -> Option<Effect> {
        self.transfer.as_ref().map(|t| Effect::Net(NetCommand::CancelTransfer { transfer_id: t.operation_id.clone() }))
    }

    fn end(&mut self, info: ResultInfo, fx: &mut Vec<Effect>) {
        self.end_with(Some(info), None, fx);
    }

    fn end_with(&mut self, info: Option<ResultInfo>, reason: Option<&str>, fx: &mut Vec<Effect>) {
        // A transfer cut short by the call's end fails with the call's reason. Today's Graph says so with
        // the call's end alone; the `deleted` notification carries the failed operation for a renderer
        // that reports transfers on their operation (the 2018 beta).
        let cut_short = self
            .transfer
            .as_ref()
            .and_then(|t| self.operations.iter().position(|o| o.id == t.operation_id && o.status == OperationStatus::Running));
        if cut_short.is_some() {
            self.finish_operation(OperationStatus::Failed, info.clone());
        }
        // Media operations still running end too, each reported once, before the call's end.
        self.end_media(fx);
        self.state = CallState::Terminated;
        self.result_info = info;
        self.termination_reason = reason.map(str::to_owned);
        self.media_state = MediaState::Inactive;
        self.setup_deadline = None;
        self.transfer = None;
        let mut deleted = self.notify(ChangeType::Deleted);
        if let (Effect::Notify(n), Some(i)) = (&mut deleted, cut_short) {
            n.operation = self.operations.get(i).cloned();
        }
        fx.push(deleted);
    }

    /// Whether a group call keeps other participants once its transferee has gone.
    fn others_stay(&self) -> bool {
        let transferee = self.transfer.as_ref().and_then(|t| t.transferee.as_deref());
        self.group && self.members.iter().any(|m| Some(m.participant_id.as_str()) != transferee)
    }

    /// `transferAccepted`, then the media-state change as the transferee leaves the bot. Graph allows
    /// either order; Switchboard always sends this one. In a group call that others stay in, the
    /// bot's media carries on.
    fn accept_transfer(&mut self, fx: &mut Vec<Effect>) {
        self.state = CallState::TransferAccepted;
        self.finish_operation(OperationStatus::Completed, None);
        fx.push(self.notify_operation());
        if self.others_stay() {
            return;
        }
        self.media_state = MediaState::Inactive;
        if let Effect::Notify(mut n) = self.notify(ChangeType::Updated) {
            n.media_state = Some(MediaState::Inactive);
            fx.push(Effect::Notify(n));
        }
        // The caller has left the bot's media: what was playing to them stops.
        self.cancel_media(fx);
    }

    /// A group call's transferee is with the target now: the call is `established` again with the
    /// others, and says why with 0/7015; the roster follows.
    fn complete_group_transfer(&mut self, fx: &mut Vec<Effect>) {
        let transferee = self.transfer.take().and_then(|t| t.transferee);
        if self.media.held.is_some() && self.media.held == transferee {
            self.media.held = None;
        }
        self.members.retain(|m| Some(&m.participant_id) != transferee.as_ref());
        self.state = CallState::Established;
        if let Effect::Notify(mut n) = self.notify(ChangeType::Updated) {
            n.result_info = Some(ResultInfo::transfer_completed());
            fx.push(Effect::Notify(n));
        }
        fx.push(self.notify_roster());
    }

    /// Back to `established`, with 500/7000 (blind) or 500/7700 and `replacesContext` (consultative).
    fn fail_transfer(&mut self, failure: Failure, fx: &mut Vec<Effect>) {
        let Some(kind) = self.transfer.as_ref().map(Transfer::kind) else { return };
        let info = ResultInfo::transfer_failed(kind, failure);
        self.finish_operation(OperationStatus::Failed, Some(info.clone()));
        let Some(transfer) = self.transfer.take() else { return };
        self.state = CallState::Established;
        self.media_state = MediaState::Active;
        if let Effect::Notify(mut n) = self.notify_operation() {
            n.result_info = Some(info);
            n.replaces_context = transfer.replaces_call_id;
            fx.push(Effect::Notify(n));
        }
    }

    /// Ends the running transfer operation.
    fn finish_operation(&mut self, status: OperationStatus, info: Option<ResultInfo>) {
        let id = self.transfer.as_ref().map(|t| t.operation_id.clone());
        if let Some(op) = self.operations.iter_mut().rev().find(|o| Some(&o.id) == id.as_ref() && o.status == OperationStatus::Running) {
            op.status = status;
            op.result_info = info;
        }
    }

    /// An `updated` call notification that also carries the transfer's operation as it now is.
    fn notify_operation(&self) -> Effect {
        let mut e = self.notify(ChangeType::Updated);
        if let Effect::Notify(n) = &mut e {
            let last_transfer = self.operations.iter().rev().find(|o| o.kind == OperationKind::Transfer).map(|o| &o.id);
            let id = self.transfer.as_ref().map(|t| &t.operation_id).or(last_transfer);
            n.operation = self.operations.iter().rev().find(|o| Some(&o.id) == id).cloned();
        }
        e
    }

    fn notify(&self, change: ChangeType) -> Effect {
        Effect::Notify(Notification {
            change,
            state: self.state,
            full: false,
            result_info: if self.state == CallState::Terminated { self.result_info.clone() } else { None },
            termination_reason: self.termination_reason.clone(),
            media_state: None,
            replaces_context: None,
            operation: None,
            roster: false,
            on_operation: false,
            tone: None,
        })
    }

    /// A roster update: the group call's participants, as they are now.
    fn notify_roster(&self) -> Effect {
        let mut e = self.notify(ChangeType::Updated);
        if let Effect::Notify(n) = &mut e {
            n.roster = true;
        }
        e
    }

    fn refuse(&self, action: &'static str, needs: &'static str) -> Refusal {
        Refusal::WrongState { action, state: self.state, needs }
    }
}

fn action_name(input: &Input) -> &'static str {
    match input {
        Input::Answer { .. } => "answer",
        Input::Reject { .. } => "reject",
        Input::Redirect { .. } => "redirect",
        Input::HangUp => "hang up",
        Input::KeepAlive => "keep alive",
        Input::Transfer { .. } => "transfer",
        Input::Media { request, .. } => request.action(),
        Input::Invite { .. } => "invite participants into",
        Input::Participant { .. } => "act on a participant of",
        Input::Net(_) => "network event",
        Input::Timer(_) => "timer",
    }
}

mod media;
mod participants;
#[cfg(test)]
mod tests;

pub use participants::{INVITEES_MAX, Invitee, ParticipantAction};
