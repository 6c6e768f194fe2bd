//! Group calls with members on SIP.
//!
//! A group call's members may be phones: each is a dialog of its own (a *member leg*), which the API
//! chose for SIP by giving the member a SIP participant id (a version 3 UUID, as for SIP calls), so
//! that its commands come here and, after a restart, the member is known to be gone. A peer-to-peer
//! SIP call that becomes a group call (`participants/invite`) keeps its dialog, now its first member.
//! What a member leg does is told to the group call as what a member does: it joins, leaves, or is
//! transferred. The member dialogs of one group call are a conference in the endpoint: each phone
//! hears what the others say (G.711, mixed every 20 ms), or comfort audio while nobody speaks.

use switchboard_core::call::{Call, Failure, Invitee, Member, NetEvent};
use switchboard_core::party::Party;

use super::SipNetwork;

/// The endpoint's id for the dialog of member `participant_id`.
pub(super) fn member_leg(participant_id: &str) -> String {
    format!("{MEMBER_LEG}{participant_id}")
}

/// How member legs' ids begin: news of one no longer a member (dropped, or gone) is nobody's.
pub(super) const MEMBER_LEG: &str = "member-";

/// A dialog that is a member of a group call.
#[derive(Clone, Debug)]
pub(super) struct Membership {
    pub call_id: String,
    pub participant_id: String,
    /// Its transfer under way, if one is.
    pub transfer: Option<String>,
    /// Transferred away: its phone is with the target now (or hung up by us after the REFER), so its
    /// news is nobody's and hanging the group up leaves it alone. Forgotten when the group ends.
    pub left: bool,
}

impl Membership {
    fn new(call_id: &str, participant_id: &str) -> Membership {
        Membership { call_id: call_id.to_owned(), participant_id: participant_id.to_owned(), transfer: None, left: false }
    }
}

impl SipNetwork {
    /// Reports `event` of the endpoint's call `leg`: to the Graph call it is, or, for a member leg, to
    /// its group call as what its member does.
    pub(super) fn report(&self, leg: &str, event: NetEvent) {
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        let Some(m) = members.get(leg).cloned() else {
            drop(members);
            if !leg.starts_with(MEMBER_LEG) {
                self.events.call(leg, event);
            }
            return;
        };
        if m.left {
            return;
        }
        let pid = m.participant_id.clone();
        let event = match event {
            NetEvent::Connected => Some(NetEvent::MemberJoined { participant_id: pid }),
            NetEvent::Failed(failure) => {
                members.remove(leg);
                Some(NetEvent::MemberLeft { participant_id: pid, failure: Some(failure) })
            }
            NetEvent::RemoteHangUp | NetEvent::Replaced { .. } => {
                members.remove(leg);
                Some(NetEvent::MemberLeft { participant_id: pid, failure: None })
            }
            e @ NetEvent::TransferCompleted { .. } => {
                if let Some(m) = members.get_mut(leg) {
                    m.left = true;
                }
                Some(e)
            }
            e @ NetEvent::TransferFailed { .. } => {
                if let Some(m) = members.get_mut(leg) {
                    m.transfer = None;
                }
                Some(e)
            }
            e @ NetEvent::TransferAccepted { .. } => Some(e),
            // The call's own dialog (a SIP call become a group call) carries the call's media.
            e if leg == m.call_id => Some(e),
            // Ringing, and media news of a member leg (the group's media is its host's).
            _ => None,
        };
        drop(members);
        if let Some(event) = event {
            self.events.call(&m.call_id, event);
        }
    }

    /// The endpoint's id of group call `call_id`'s member `participant_id`, if it is a SIP dialog here
    /// (and still in the call).
    pub fn member_leg_of(&self, call_id: &str, participant_id: &str) -> Option<String> {
        let members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        let found = members.iter().find(|(_, m)| m.call_id == call_id && m.participant_id == participant_id && !m.left);
        found.map(|(leg, _)| leg.clone())
    }

    /// The Graph call a leg's news is about: a member leg's group call, or the leg itself.
    pub(super) fn call_of(&self, leg: &str) -> String {
        let members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        members.get(leg).map_or_else(|| leg.to_owned(), |m| m.call_id.clone())
    }

    /// Rings member `member` of group call `call` on its phone (or at a trunk); it joins when it answers.
    pub fn place_member(&self, call: &Call, member: &Member) {
        let leg = member_leg(&member.participant_id);
        let membership = Membership::new(&call.id, &member.participant_id);
        self.members.lock().unwrap_or_else(|e| e.into_inner()).insert(leg.clone(), membership);
        let placed = self.shared.with_endpoint(|ep, now| {
            let destination = self.destination(ep, &member.party, now)?;
            let from = self.caller_id(call, ep.domain());
            ep.place(&leg, &from, destination, self.media, now);
            ep.join_conference(&call.id, &leg);
            Some(())
        });
        if placed.is_none() {
            tracing::info!(call_id = call.id, participant_id = member.participant_id, "nobody to call over SIP for this member; it fails");
            self.report(&leg, NetEvent::Failed(Failure::Unreachable));
        }
    }

    /// `participants/invite` of a SIP member: its phone rings; or, replacing another of the bot's SIP
    /// calls, that call's phone moves over (its dialog is the member now) and that call ends.
    pub fn invite_member(&self, call: &Call, invitee: &Invitee) {
        let pid = &invitee.participant_id;
        let Some(replaced) = &invitee.replaces_call_id else {
            return self.place_member(call, &Member::invited(pid.clone(), invitee.party.clone()));
        };
        // Decided under the endpoint's lock, so that the phone's BYE comes before (the call is not
        // established) or after (it is the member's leaving).
        let moved = self.shared.with_endpoint(|ep, _| {
            let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
            // Not one already moved into a group (the API checks; two invitations may race).
            let free = ep.is_established(replaced) && !members.contains_key(replaced.as_str());
            if free {
                members.insert(replaced.clone(), Membership::new(&call.id, pid));
                ep.join_conference(&call.id, replaced);
            }
            free
        });
        if moved {
            self.events.call(&call.id, NetEvent::MemberJoined { participant_id: pid.clone() });
            self.events.call(replaced, NetEvent::Replaced { by_call_id: call.id.clone() });
        } else {
            let failure = Some(Failure::Unreachable);
            self.events.call(&call.id, NetEvent::MemberLeft { participant_id: pid.clone(), failure });
        }
    }

    /// A SIP call becomes a group call: its dialog is its first member (`peer_participant_id`).
    /// `false` if its dialog has moved into another group call (`replacesCallId`): it is ending.
    pub fn host_group(&self, call: &Call) -> bool {
        let hosts = {
            let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
            let own = members.entry(call.id.clone()).or_insert_with(|| Membership::new(&call.id, &call.peer_participant_id));
            own.call_id == call.id
        };
        if hosts {
            self.shared.with_endpoint(|ep, _| ep.join_conference(&call.id, &call.id));
        }
        hosts
    }

    /// Member `participant_id` of group call `call_id` leaves, if it is a SIP dialog here: it stops
    /// ringing, or is hung up. `false` if it is not one of SIP's.
    pub fn drop_member(&self, call_id: &str, participant_id: &str) -> bool {
        let Some(leg) = self.member_leg_of(call_id, participant_id) else { return false };
        // Its news from now on is nobody's: the core has let it go.
        self.members.lock().unwrap_or_else(|e| e.into_inner()).remove(&leg);
        self.stop_ringing_elsewhere(&leg);
        self.shared.with_endpoint(|ep, now| ep.hang_up_member(&leg, now));
        true
    }

    /// Group call `call_id` ends (or moves to another node): its members on SIP are hung up, but
    /// not those transferred away (they are with their targets).
    pub fn hang_up_members(&self, call_id: &str) {
        let legs: Vec<(String, bool)> = {
            let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
            let legs: Vec<(String, bool)> =
                members.iter().filter(|(_, m)| m.call_id == call_id).map(|(leg, m)| (leg.clone(), m.left)).collect();
            for (leg, _) in &legs {
                // The call's own dialog, transferred away, stays known as such (`moved_away`).
                if leg != call_id {
                    members.remove(leg);
                }
            }
            legs
        };
        for (leg, left) in legs {
            if left {
                continue;
            }
            self.stop_ringing_elsewhere(&leg);
            self.shared.with_endpoint(|ep, now| ep.hang_up_member(&leg, now));
        }
    }

    /// Transfers member `participant_id` of group call `call` (a SIP dialog here) to `target`, or,
    /// with `consultation`, in that call's place: as a peer-to-peer call's phone is. `false` if the
    /// member is not one of SIP's.
    pub fn transfer_member(
        &self,
        call: &Call,
        transfer_id: &str,
        target: &Party,
        consultation: Option<&str>,
        participant_id: &str,
    ) -> bool {
        let Some(leg) = self.member_leg_of(&call.id, participant_id) else { return false };
        self.note_transfer(&leg, transfer_id);
        self.transfer_leg(call, &leg, transfer_id, target, consultation);
        true
    }

    /// SIP call `call_id` is over: what was kept of its own dialog as a group's member goes.
    pub(super) fn forget_own(&self, call_id: &str) {
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        if members.get(call_id).is_some_and(|m| m.call_id == call_id) {
            members.remove(call_id);
        }
    }

    fn note_transfer(&self, leg: &str, transfer_id: &str) {
        if let Some(m) = self.members.lock().unwrap_or_else(|e| e.into_inner()).get_mut(leg) {
            m.transfer = Some(transfer_id.to_owned());
        }
    }

    /// Whether SIP call `call_id`'s dialog is no longer its own: moved into another (group) call, or,
    /// as a group call's first member, transferred away.
    pub(super) fn moved_away(&self, call_id: &str) -> bool {
        let members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        members.get(call_id).is_some_and(|m| m.call_id != call_id || m.left)
    }

    /// The core gives up transfer `transfer_id` of a SIP member of `call`; `false` if it is not SIP's.
    pub fn cancel_member_transfer(&self, call: &Call, transfer_id: &str) -> bool {
        let leg = {
            let members = self.members.lock().unwrap_or_else(|e| e.into_inner());
            let found = members.iter().find(|(_, m)| m.call_id == call.id && m.transfer.as_deref() == Some(transfer_id) && !m.left);
            found.map(|(leg, _)| leg.clone())
        };
        let Some(leg) = leg else { return false };
        let failed = NetEvent::TransferFailed { transfer_id: transfer_id.to_owned(), failure: Failure::NoAnswer };
        if self.stop_ringing_elsewhere(&leg) {
            self.shared.with_endpoint(|ep, now| ep.not_joined_elsewhere(&leg, now));
            self.events.call(&call.id, failed);
        } else if self.shared.with_endpoint(|ep, now| ep.abandon_transfer(&leg, transfer_id, now)) {
            self.events.call(&call.id, failed);
        }
        true
    }

    /// Hold music for member `participant_id` of `call`, if it is a SIP dialog here.
    pub fn member_hold_music(&self, call: &Call, operation_id: &str, participant_id: &str, start: bool, prompt: Option<String>) -> bool {
        let Some(leg) = self.member_leg_of(&call.id, participant_id) else { return false };
        self.hold_music_on(&call.id, &leg, operation_id, start, prompt);
        true
    }
}
