//! The networks behind the engine: the simulator, and SIP when it is served (`switchboard_sip::network`).

use std::sync::Arc;

use switchboard_core::call::{Call, NetCommand};
use switchboard_engine::network::{Network, NetworkEvents};
use switchboard_sip::network::{SipNetwork, end_lost_call};

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

impl Network for Networks {
    fn execute(&self, call: &Call, command: &NetCommand) {
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
        if switchboard_sip::endpoint::is_sip_call(&call.id) {
            end_lost_call(&self.events, call);
        } else {
            self.sim.resume(call);
        }
    }

    fn release(&self, call: &Call) {
        match self.sip_for(call) {
            Some(sip) => sip.release(call),
            None => {
                // A phone still ringing for this sim call's transfer stops: the new owner starts the
                // transfer over.
                if let Some(sip) = self.sip.as_deref() {
                    sip.hang_up_leg(&call.id);
                }
                self.sim.release(call)
            }
        }
    }
}
