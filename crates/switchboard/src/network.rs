//! The boundary between the engine and a telephony backend.
//!
//! The engine tells the network what to do with the remote leg of a bot's call ([`NetCommand`]); the
//! network reports what happened through [`NetworkEvents`]. The simulator (`sim`) is one backend; a SIP
//! backend implements the same trait. Implementations must never call back into the engine while
//! executing a command: they report through the channel, which the engine drains on its own task.

use switchboard_core::call::{Call, IncomingCall, NetCommand, NetEvent};
use tokio::sync::mpsc;

pub trait Network: Send + Sync + 'static {
    /// Carry out a command about `call`'s remote leg. Must not block.
    fn execute(&self, call: &Call, command: &NetCommand);
    /// After a restart: pick up a live call again (rebuild its leg, re-arm what was pending).
    fn resume(&self, call: &Call);
}

/// What a network reports to the engine.
#[derive(Debug, Clone)]
pub enum NetworkEvent {
    /// Something happened to the remote leg of one bot call.
    Call { call_id: String, event: NetEvent },
    /// A new call for a bot (a caller transferred to it by another bot, say).
    Offer(Box<IncomingCall>),
}

/// Where a network sends its events.
pub type NetworkEvents = mpsc::UnboundedSender<NetworkEvent>;
