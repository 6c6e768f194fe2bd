//! The networks behind the engine: the simulator, and SIP when it is served (`switchboard_sip::network`).

use std::sync::Arc;

use switchboard_core::call::{Call, NetCommand};
use switchboard_engine::network::{Network, NetworkEvents};
use switchboard_sip::network::{SipNetwork, end_lost_call};

use crate::sim::SimNetwork;

/// The networks behind the engine: a call's commands go to the backend that holds its remote leg.
pub struct Networks {
    pub sim: SimNetwork,
    pub sip: Option<Arc<SipNetwork>>,
    /// For SIP calls that cannot be resumed.
    pub events: NetworkEvents,
}

impl Networks {
    fn sip_for(&self, call: &Call) -> Option<&SipNetwork> {
        self.sip.as_deref().filter(|s| s.holds(&call.id))
    }
}

impl Network for Networks {
    fn execute(&self, call: &Call, command: &NetCommand) {
        // An outgoing call's id says where it goes (the API chose when the target was reachable over SIP).
        let placed_over_sip = matches!(command, NetCommand::Place) && switchboard_sip::endpoint::is_sip_call(&call.id);
        match self.sip.as_deref().filter(|_| placed_over_sip).or_else(|| self.sip_for(call)) {
            Some(sip) => sip.execute(call, command),
            None => self.sim.execute(call, command),
        }
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
            None => self.sim.release(call),
        }
    }
}
