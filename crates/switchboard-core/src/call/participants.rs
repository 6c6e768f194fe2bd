//! How a call takes participant actions: invite (which turns a peer-to-peer call into a group call,
//! or pulls in the peer of another of the bot's calls with `replacesCallId`), mute a participant,
//! remove one, and hold music (one participant on hold at a time).

use super::{Call, CallState, Effect, Failure, Member, NetCommand, Operation, OperationStatus, Refusal, Timer};
use crate::Millis;
use crate::media::OperationKind;
use crate::party::Party;
use crate::result::ResultInfo;

/// Someone the bot invites into its call.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Invitee {
    /// The participant id the invitee gets in this call (the adapter chooses it).
    pub participant_id: String,
    pub party: Party,
    /// Another of the bot's peer-to-peer calls whose peer this is: that peer moves into this call and
    /// that call ends.
    #[serde(default)]
    pub replaces_call_id: Option<String>,
}

/// What the bot does to one participant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParticipantAction {
    Mute,
    /// `DELETE …/participants/{id}`: a joined one is dropped, an invited one stops ringing.
    Remove,
    /// Put the participant on hold, with music (`customPrompt`, or the network's own).
    StartHoldMusic {
        prompt: Option<String>,
    },
    StopHoldMusic,
}

impl ParticipantAction {
    fn kind(&self) -> OperationKind {
        match self {
            ParticipantAction::Mute | ParticipantAction::Remove => OperationKind::MuteParticipant,
            ParticipantAction::StartHoldMusic { .. } => OperationKind::StartHoldMusic,
            ParticipantAction::StopHoldMusic => OperationKind::StopHoldMusic,
        }
    }
}

/// The most participants one invite may name (Graph: "up to 5").
pub const INVITEES_MAX: usize = 5;

impl Call {
    /// `participants/invite`: the invitees ring (or, with `replacesCallId`, move over); the operation
    /// completes when all have joined and fails when one cannot.
    pub(super) fn invite(
        &mut self,
        operation_id: String,
        client_context: Option<String>,
        invitees: Vec<Invitee>,
        ring_timeout_ms: Millis,
        now: Millis,
    ) -> Result<Vec<Effect>, Refusal> {
        if self.state != CallState::Established {
            return Err(self.refuse("invite participants into", "'established'"));
        }
        if invitees.len() > 1 && !self.group {
            return Err(Refusal::GroupCallOnly("invite several participants at once into"));
        }
        for (n, i) in invitees.iter().enumerate() {
            let present = self.members.iter().any(|m| m.party == i.party) || (!self.group && *self.remote() == i.party);
            if present {
                return Err(Refusal::Conflict(format!("participants: '{}' is in this call already", i.party.key())));
            }
            if invitees[..n].iter().any(|o| o.party == i.party) {
                return Err(Refusal::Conflict(format!("participants: '{}' is named twice", i.party.key())));
            }
        }
        let mut fx = Vec::new();
        if !self.group {
            // A peer-to-peer call becomes a group call; its peer is its first member.
            self.group = true;
            self.members = vec![Member::joined(self.peer_participant_id.clone(), self.remote().clone())];
        }
        let mut op = Operation::new(operation_id.clone(), OperationKind::Invite, client_context);
        op.invitees = invitees.clone();
        let until = now + ring_timeout_ms;
        for invitee in invitees {
            let mut member = Member::invited(invitee.participant_id.clone(), invitee.party.clone());
            member.invitation = Some(operation_id.clone());
            member.ring_until = Some(until);
            self.members.push(member);
            fx.push(Effect::Net(NetCommand::Invite { operation_id: operation_id.clone(), invitee }));
        }
        self.add_operation(op);
        // The earliest deadline of whoever rings (the call's own invitees may ring still).
        let at = self.setup_deadline.map_or(until, |d| d.min(until));
        self.setup_deadline = Some(at);
        fx.push(Effect::Timer { timer: Timer::Setup, at });
        Ok(fx)
    }

    /// A participant action. `Remove` answers no operation (Graph: 204).
    pub(super) fn participant_action(
        &mut self,
        operation_id: String,
        client_context: Option<String>,
        participant_id: String,
        action: ParticipantAction,
    ) -> Result<Vec<Effect>, Refusal> {
        if self.state != CallState::Established {
            return Err(self.refuse("act on a participant of", "'established'"));
        }
        let me = participant_id == self.my_participant_id;
        let peer = !self.group && participant_id == self.peer_participant_id;
        let member = self.members.iter().position(|m| m.participant_id == participant_id);
        if !me && !peer && member.is_none() {
            return Err(Refusal::NoSuchParticipant(participant_id));
        }
        let mut fx = Vec::new();
        let mut op = Operation::new(operation_id, action.kind(), client_context);
        match action {
            // The bot's own participant: as `mute` on the call.
            ParticipantAction::Mute if me => {
                if !self.group {
                    return Err(Refusal::GroupCallOnly("mute a participant of"));
                }
                if !self.media.muted {
                    self.media.muted = true;
                    fx.push(self.notify_roster());
                }
                op.status = OperationStatus::Completed;
            }
            ParticipantAction::Mute => {
                let Some(i) = member else {
                    return Err(Refusal::GroupCallOnly("mute a participant of"));
                };
                if !self.members[i].joined {
                    return Err(Refusal::Conflict(format!("participant '{participant_id}' has not joined yet")));
                }
                if !self.members[i].muted {
                    self.members[i].muted = true;
                    fx.push(self.notify_roster());
                }
                op.status = OperationStatus::Completed;
            }
            ParticipantAction::Remove => {
                let Some(i) = member.filter(|_| !me) else {
                    let what = if me {
                        "the bot leaves by hanging up (DELETE the call)"
                    } else {
                        "a peer-to-peer call ends by hanging up (DELETE the call)"
                    };
                    return Err(Refusal::Conflict(format!("participant '{participant_id}' cannot be removed: {what}")));
                };
                let removed = self.members.remove(i);
                fx.push(Effect::Net(NetCommand::DropMember { participant_id: removed.participant_id.clone() }));
                if let Some(invitation) = removed.invitation.filter(|_| !removed.joined) {
                    self.end_invitation(&invitation, OperationStatus::Failed, Some(ResultInfo::media_cancelled()), &mut fx);
                }
                if self.media.held.as_deref() == Some(participant_id.as_str()) {
                    self.media.held = None;
                }
                if self.members.is_empty() {
                    self.end(ResultInfo::all_left(), &mut fx);
                    fx.push(Effect::Net(NetCommand::HangUp));
                } else if removed.joined {
                    fx.push(self.notify_roster());
                }
                // No operation: the request answers 204.
                return Ok(fx);
            }
            ParticipantAction::StartHoldMusic { prompt } => {
                if me {
                    return Err(Refusal::Conflict("the bot cannot put itself on hold".to_owned()));
                }
                if let Some(held) = &self.media.held {
                    return Err(Refusal::Conflict(format!(
                        "participant '{held}' is on hold already; only one participant can be on hold at a time"
                    )));
                }
                if member.is_some_and(|i| !self.members[i].joined) {
                    return Err(Refusal::Conflict(format!("participant '{participant_id}' has not joined yet")));
                }
                self.media.held = Some(participant_id.clone());
                fx.push(Effect::Net(NetCommand::HoldMusic { operation_id: op.id.clone(), participant_id, start: true, prompt }));
            }
            ParticipantAction::StopHoldMusic => {
                if self.media.held.as_deref() != Some(participant_id.as_str()) {
                    return Err(Refusal::Conflict(format!("participant '{participant_id}' is not on hold")));
                }
                self.media.held = None;
                fx.push(Effect::Net(NetCommand::HoldMusic { operation_id: op.id.clone(), participant_id, start: false, prompt: None }));
            }
        }
        self.add_operation(op);
        Ok(fx)
    }

    /// A member joined: its invitation completes once every invitee of it has joined.
    pub(super) fn invitee_joined(&mut self, participant_id: &str, fx: &mut Vec<Effect>) {
        let Some(invitation) = self.members.iter().find(|m| m.participant_id == participant_id).and_then(|m| m.invitation.clone()) else {
            return;
        };
        let waiting = self.members.iter().any(|m| m.invitation.as_ref() == Some(&invitation) && !m.joined);
        if !waiting {
            self.end_invitation(&invitation, OperationStatus::Completed, None, fx);
        }
    }

    /// An invitee could not be reached (busy, declined, no answer): its invitation fails.
    pub(super) fn invitee_failed(&mut self, member: &Member, failure: Failure, fx: &mut Vec<Effect>) {
        if let Some(invitation) = member.invitation.as_ref().filter(|_| !member.joined) {
            self.end_invitation(invitation, OperationStatus::Failed, Some(failure.result_info()), fx);
        }
    }

    /// Ends a running invitation, reported once (`deleted` on the operation).
    fn end_invitation(&mut self, id: &str, status: OperationStatus, info: Option<ResultInfo>, fx: &mut Vec<Effect>) {
        let Some(op) = self.operations.iter_mut().find(|o| o.id == id && o.status == OperationStatus::Running) else { return };
        op.status = status;
        op.result_info = info;
        let op = op.clone();
        fx.push(self.notify_operation_ended(op));
    }
}
