//! The networks behind the engine: the simulator, and SIP when it is served (`switchboard_sip::network`).

use std::sync::Arc;

use switchboard_core::call::{Call, Failure, NetCommand, NetEvent};
use switchboard_engine::network::{Network, NetworkEvents};
use switchboard_sip::endpoint::is_sip_call;
use switchboard_sip::network::{SipNetwork, end_lost_call, lost_members};

use crate::sim::SimNetwork;

/// The sim's side of a sim call transferred to a SIP phone.
pub struct SimHandOver(pub Arc<switchboard_sim::Sim>);

impl switchboard_sip::network::HandOver for SimHandOver {
    fn hand_over(&self, call_id: &str, member: Option<&str>, leg: &str) -> bool {
        self.0.hand_over(call_id, member, "sip", leg)
    }

    fn hung_up(&self, leg: &str) {
        self.0.external_hung_up(leg);
    }

    fn ring(&self, target: &switchboard_core::party::Party, id: &str) -> bool {
        self.0.ring_for(target, "sip", id)
    }
}

/// The networks behind the engine: a call's commands go to the backend that holds its remote leg.
pub struct Networks {
    pub sim: SimNetwork,
    pub sip: Option<Arc<SipNetwork>>,
    /// For SIP calls that cannot be resumed.
    pub events: NetworkEvents,
}

impl Networks {
    /// SIP, for a SIP call: its id says so, whether or not the endpoint still holds its dialog (it may
    /// have ended, or be joined to another network's party), so that nothing of it goes to the sim.
    fn sip_for(&self, call: &Call) -> Option<&SipNetwork> {
        self.sip.as_deref().filter(|_| switchboard_sip::endpoint::is_sip_call(&call.id))
    }
}

impl Networks {
    /// A group call's members may be on either network, whichever hosts the call: a member the API
    /// gave a SIP participant id (its party was reachable over SIP then) is a SIP dialog, the others
    /// are sim legs. The commands about members go to the network that has them; `true` if done.
    fn member_command(&self, sip: &SipNetwork, call: &Call, command: &NetCommand) -> bool {
        let sip_hosted = is_sip_call(&call.id);
        match command {
            NetCommand::Place if call.group => {
                let (on_sip, on_sim): (Vec<_>, Vec<_>) = call.members.iter().cloned().partition(|m| is_sip_call(&m.participant_id));
                // The sim holds the group (the bot's side), whether or not it rings any member.
                self.sim.execute(&Call { members: on_sim, ..call.clone() }, command);
                for member in &on_sip {
                    sip.place_member(call, member);
                }
                true
            }
            NetCommand::Invite { invitee, .. } => {
                if sip_hosted && !sip.host_group(call) {
                    // Its phone has just moved into another call: this one is ending.
                    let participant_id = invitee.participant_id.clone();
                    self.events.call(&call.id, NetEvent::MemberLeft { participant_id, failure: Some(Failure::Unreachable) });
                    return true;
                }
                if !sip_hosted && is_sip_call(&invitee.participant_id) {
                    self.sim.0.become_group(call);
                }
                match is_sip_call(&invitee.participant_id) {
                    true => sip.invite_member(call, invitee),
                    // The sim rings it (for a SIP call too: it keeps a group of its own for it).
                    false => self.sim.execute(call, command),
                }
                true
            }
            NetCommand::DropMember { participant_id } => {
                if !sip.drop_member(&call.id, participant_id) {
                    self.sim.execute(call, command);
                }
                true
            }
            NetCommand::Transfer { transfer_id, target, replaces_call_id, transferee: Some(pid) } => {
                if sip.transfer_member(call, transfer_id, target, replaces_call_id.as_deref(), pid) {
                    return true;
                }
                // A sim member: SIP calls a target it reaches, and the sim hands the member over.
                if replaces_call_id.is_none() && sip.reaches(target) && sip.transfer_foreign(call, transfer_id, target, Some(pid)) {
                    return true;
                }
                self.sim.execute(call, command);
                true
            }
            // (By the transfer's id: the core may have let go of its transferee already.)
            NetCommand::CancelTransfer { transfer_id } if call.group => {
                if sip.cancel_member_transfer(call, transfer_id) {
                    return true;
                }
                match sip.places_transfer(&call.id, transfer_id) {
                    true => sip.execute(call, command),
                    false => self.sim.execute(call, command),
                }
                true
            }
            NetCommand::HoldMusic { operation_id, participant_id, start, prompt } => {
                if sip.member_hold_music(call, operation_id, participant_id, *start, prompt.clone()) {
                    return true;
                }
                // A phone's peer-to-peer call plays it on its dialog; any other participant is the sim's.
                match sip_hosted && !call.group {
                    true => sip.execute(call, command),
                    false => self.sim.execute(call, command),
                }
                true
            }
            NetCommand::HangUp if call.group => {
                sip.hang_up_members(&call.id);
                if sip_hosted {
                    // The members the sim rang for it.
                    self.sim.execute(call, command);
                }
                false
            }
            _ => false,
        }
    }
}

impl Network for Networks {
    fn execute(&self, call: &Call, command: &NetCommand) {
        if let Some(sip) = self.sip.as_deref()
            && self.member_command(sip, call, command)
        {
            return;
        }
        // A SIP call's id says so (an outgoing one's was chosen by the API when its target was
        // reachable over SIP).
        if let Some(sip) = self.sip_for(call) {
            return sip.execute(call, command);
        }
        // A sim call whose transfer target is a registered phone (or a number a trunk takes): SIP calls
        // the target, and the sim connects its transferee once it answers.
        if let Some(sip) = self.sip.as_deref() {
            match command {
                NetCommand::Transfer { transfer_id, target, replaces_call_id: None, transferee }
                    if sip.reaches(target) && sip.transfer_foreign(call, transfer_id, target, transferee.as_deref()) =>
                {
                    return;
                }
                NetCommand::CancelTransfer { transfer_id } if sip.places_transfer(&call.id, transfer_id) => {
                    return sip.execute(call, command);
                }
                // The bot leaves: a phone still ringing for its transfer stops.
                NetCommand::HangUp | NetCommand::Reject { .. } | NetCommand::Redirect { .. } => sip.hang_up_leg(&call.id),
                _ => {}
            }
        }
        self.sim.execute(call, command)
    }

    /// A SIP call (its id says so) ends, whether or not SIP is served now: its dialog was not stored.
    /// Every other call resumes on the sim.
    fn resume(&self, call: &Call) {
        if is_sip_call(&call.id) {
            end_lost_call(&self.events, call);
        } else if call.group && call.members.iter().any(|m| is_sip_call(&m.participant_id)) {
            // Its members on SIP are gone with their dialogs; the sim's are rebuilt.
            let on_sim = call.members.iter().filter(|m| !is_sip_call(&m.participant_id)).cloned().collect();
            self.sim.resume(&Call { members: on_sim, ..call.clone() });
            lost_members(&self.events, call);
        } else {
            self.sim.resume(call);
        }
    }

    fn release(&self, call: &Call) {
        match self.sip_for(call) {
            Some(sip) => {
                sip.release(call);
                // The members the sim rang for it.
                if call.group {
                    self.sim.release(call);
                }
            }
            None => {
                // A phone still ringing for this sim call's transfer stops: the new owner starts the
                // transfer over.
                if let Some(sip) = self.sip.as_deref() {
                    sip.hang_up_leg(&call.id);
                    // Its members on SIP cannot move with it.
                    sip.hang_up_members(&call.id);
                }
                self.sim.release(call)
            }
        }
    }
}
