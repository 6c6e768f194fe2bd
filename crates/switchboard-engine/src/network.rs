//! The boundary between the engine and a telephony backend.
//!
//! The engine tells the network what to do with the remote leg of a bot's call ([`NetCommand`]); the
//! network reports what happened through [`NetworkEvents`]. The simulator (`switchboard-sim`) is one
//! backend; a SIP backend implements the same trait. Implementations must never call back into the
//! engine while executing a command: they report through the channel, which the engine drains on its
//! own task, one event at a time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use switchboard_core::call::{Call, IncomingCall, NetCommand, NetEvent};
use tokio::sync::{Notify, mpsc};

/// Whether a call may be offered to an app now (its `max_concurrent_calls`): networks ask before they
/// offer one, and refuse the caller (busy) when not.
pub type Admission = std::sync::Arc<dyn Fn(&str) -> bool + Send + Sync>;

pub trait Network: Send + Sync + 'static {
    /// Carry out a command about `call`'s remote leg. Must not block.
    fn execute(&self, call: &Call, command: &NetCommand);
    /// After a restart: pick up a live call again (rebuild its leg, re-arm what was pending).
    fn resume(&self, call: &Call);
    /// Another node takes the call over: forget its legs here without telling anyone (the new owner
    /// resumes them). Events already on their way for it find no call and are dropped.
    fn release(&self, call: &Call);
}

/// What a network reports to the engine.
#[derive(Debug, Clone)]
pub enum NetworkEvent {
    /// Something happened to the remote leg of one bot call.
    Call { call_id: String, event: NetEvent },
    /// A new call for a bot (a caller transferred to it by another bot, say).
    Offer(Box<IncomingCall>),
}

/// Where a network sends its events. It counts the events sent and not yet applied, so that the
/// engine can tell when everything the network said has been taken in ([`crate::Engine::settled`]).
#[derive(Clone)]
pub struct NetworkEvents {
    tx: mpsc::UnboundedSender<NetworkEvent>,
    pending: Arc<Pending>,
}

#[derive(Default)]
pub(crate) struct Pending {
    count: AtomicUsize,
    idle: Notify,
}

impl Pending {
    pub(crate) fn done(&self) {
        if self.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Completes once no event is waiting or being applied.
    pub(crate) async fn idle(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl NetworkEvents {
    pub fn send(&self, event: NetworkEvent) {
        self.pending.count.fetch_add(1, Ordering::SeqCst);
        // The engine outlives every network; a closed channel only happens at shutdown.
        if self.tx.send(event).is_err() {
            self.pending.done();
        }
    }

    /// Reports an event about the remote leg of the bot call `call_id`.
    pub fn call(&self, call_id: &str, event: NetEvent) {
        self.send(NetworkEvent::Call { call_id: call_id.to_owned(), event });
    }
}

/// The engine's end of a [`NetworkEvents`] channel.
pub struct NetworkEventsRx {
    pub(crate) rx: mpsc::UnboundedReceiver<NetworkEvent>,
    pub(crate) pending: Arc<Pending>,
}

/// A channel for a network backend to report events on, and its receiving end for
/// [`crate::Engine::attach_network`].
pub fn channel() -> (NetworkEvents, NetworkEventsRx) {
    let (tx, rx) = mpsc::unbounded_channel();
    let pending = Arc::new(Pending::default());
    (NetworkEvents { tx, pending: Arc::clone(&pending) }, NetworkEventsRx { rx, pending })
}
