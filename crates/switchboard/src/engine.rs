//! The engine: the only place where calls change.
//!
//! For each input it locks the call, lets the pure core compute the new state and effects, commits the
//! new state and the owed notifications in one store transaction, and only then carries out the
//! effects (network commands, timers) and hands the notifications to the notifier. Inputs of one call
//! are serialised by its lock; different calls proceed in parallel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use switchboard_core::call::{Call, Effect, IncomingCall, Input, OutgoingCall, Refusal, Timer};
use tokio::sync::mpsc;

use crate::config::{Config, NotificationFormat};
use crate::graph::render;
use crate::metrics::Metrics;
use crate::network::{Network, NetworkEvent, NetworkEvents};
use crate::notifier::Notifier;
use crate::store::{NewNotification, Store, StoreError};

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("call {0} not found")]
    NotFound(String),
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Slot {
    call: Call,
    version: u64,
    /// Set once the call has terminated and left the map; late holders of the slot see it.
    gone: bool,
    /// The armed timer of each kind; re-arming a kind replaces it, termination cancels them all, so
    /// no sleeping task outlives its call.
    timers: Vec<(Timer, tokio::task::JoinHandle<()>)>,
}

impl Slot {
    fn new(call: Call, version: u64) -> Self {
        Slot { call, version, gone: false, timers: Vec::new() }
    }
}

type SlotRef = Arc<tokio::sync::Mutex<Slot>>;

pub struct Engine {
    config: Arc<Config>,
    store: Arc<dyn Store>,
    network: OnceLock<Arc<dyn Network>>,
    notifier: Arc<Notifier>,
    metrics: Arc<Metrics>,
    calls: Mutex<HashMap<String, SlotRef>>,
}

impl Engine {
    pub fn new(config: Arc<Config>, store: Arc<dyn Store>, notifier: Arc<Notifier>, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Engine { config, store, network: OnceLock::new(), notifier, metrics, calls: Mutex::new(HashMap::new()) })
    }

    /// Connects the telephony backend and starts draining its events.
    pub fn attach_network(self: &Arc<Self>, network: Arc<dyn Network>, mut events: mpsc::UnboundedReceiver<NetworkEvent>) {
        if self.network.set(network).is_err() {
            tracing::warn!("a network was already attached; ignoring the second one");
            return;
        }
        let engine = Arc::clone(self);
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                match event {
                    NetworkEvent::Call { call_id, event } => match engine.apply(&call_id, Input::Net(event.clone())).await {
                        Ok(_) | Err(EngineError::NotFound(_)) => {}
                        Err(e) => tracing::error!(call_id, ?event, error = %e, "network event could not be applied"),
                    },
                    // If the store refuses the call, the network's side times out (a transfer's timer, say).
                    NetworkEvent::Offer(req) => {
                        let call_id = req.id.clone();
                        if let Err(e) = engine.offer(*req).await {
                            tracing::error!(call_id, error = %e, "call offered by the network could not be admitted");
                        }
                    }
                }
            }
        });
    }

    /// A channel for a network backend to report events on, and its receiving end for [`attach_network`].
    pub fn event_channel() -> (NetworkEvents, mpsc::UnboundedReceiver<NetworkEvent>) {
        mpsc::unbounded_channel()
    }

    /// Loads every live call from the store and resumes it: timers re-armed, network legs rebuilt.
    pub fn recover(self: &Arc<Self>) -> Result<usize, StoreError> {
        let stored = self.store.live_calls()?;
        let n = stored.len();
        let mut map = self.lock_calls();
        for s in stored {
            self.metrics.call_entered(s.call.state);
            if let Some(net) = self.network.get() {
                net.resume(&s.call);
            }
            let mut slot = Slot::new(s.call, s.version);
            for (timer, at) in slot.call.pending_timers() {
                let handle = self.arm(&slot.call.id, timer, at);
                slot.timers.push((timer, handle));
            }
            map.insert(slot.call.id.clone(), Arc::new(tokio::sync::Mutex::new(slot)));
        }
        Ok(n)
    }

    fn lock_calls(&self) -> std::sync::MutexGuard<'_, HashMap<String, SlotRef>> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn slot(&self, id: &str) -> Option<SlotRef> {
        self.lock_calls().get(id).cloned()
    }

    /// A live call, as it is now.
    pub async fn get(&self, id: &str) -> Option<Call> {
        let slot = self.slot(id)?;
        let guard = slot.lock().await;
        (!guard.gone).then(|| guard.call.clone())
    }

    /// Every live call (for the sim's world view and diagnostics).
    pub async fn live_calls(&self) -> Vec<Call> {
        let slots: Vec<SlotRef> = self.lock_calls().values().cloned().collect();
        let mut calls = Vec::with_capacity(slots.len());
        for s in slots {
            let g = s.lock().await;
            if !g.gone {
                calls.push(g.call.clone());
            }
        }
        calls
    }

    /// The bot places an outgoing call.
    pub async fn place(self: &Arc<Self>, req: OutgoingCall) -> Result<Call, EngineError> {
        let (call, effects) = Call::place(req, now_ms());
        self.admit(call, effects).await
    }

    /// The network offers an incoming call to a bot.
    pub async fn offer(self: &Arc<Self>, req: IncomingCall) -> Result<Call, EngineError> {
        let (call, effects) = Call::offer(req, now_ms());
        self.admit(call, effects).await
    }

    async fn admit(self: &Arc<Self>, call: Call, effects: Vec<Effect>) -> Result<Call, EngineError> {
        let notes = self.render(&call, &effects, 1);
        let (version, rows) = self.store.commit(&call, None, &notes, now_ms())?;
        let slot = Arc::new(tokio::sync::Mutex::new(Slot::new(call.clone(), version)));
        // Hold the slot's lock while the effects run, so that no event about the call overtakes them.
        let mut guard = slot.lock().await;
        self.lock_calls().insert(call.id.clone(), Arc::clone(&slot));
        self.metrics.call_entered(call.state);
        self.metrics.calls_created.inc();
        self.notifier.enqueue(rows);
        self.run(&mut guard, effects);
        Ok(call)
    }

    /// Applies one input to a live call. The call's owner check is the caller's job.
    pub async fn apply(self: &Arc<Self>, id: &str, input: Input) -> Result<Call, EngineError> {
        let slot = self.slot(id).ok_or_else(|| EngineError::NotFound(id.to_owned()))?;
        let mut guard = slot.lock().await;
        if guard.gone {
            return Err(EngineError::NotFound(id.to_owned()));
        }
        let now = now_ms();
        let mut next = guard.call.clone();
        let effects = next.handle(input, now)?;
        if next == guard.call && effects.is_empty() {
            return Ok(next);
        }
        let notes = self.render(&next, &effects, guard.version + 1);
        let (version, rows) = self.store.commit(&next, Some(guard.version), &notes, now)?;
        self.metrics.call_left(guard.call.state);
        guard.call = next;
        guard.version = version;
        if guard.call.is_terminated() {
            guard.gone = true;
            self.lock_calls().remove(id);
        } else {
            self.metrics.call_entered(guard.call.state);
        }
        self.notifier.enqueue(rows);
        self.run(&mut guard, effects);
        Ok(guard.call.clone())
    }

    /// Renders the notifications among `effects` for the outbox, in the app's notification format.
    /// `version` is the call's version once committed (the 2018 format's `@odata.etag`).
    fn render(&self, call: &Call, effects: &[Effect], version: u64) -> Vec<NewNotification> {
        let app = self.config.directory.app(&call.app_id);
        let beta_2018 = app.is_some_and(|a| a.notification_format == NotificationFormat::Beta2018);
        let callback = call.callback_uri.clone().or_else(|| app.and_then(|a| a.calling_webhook.clone()));
        // The bot's own participant, only for roster updates.
        let roster = effects.iter().any(|e| matches!(e, Effect::Notify(n) if n.roster));
        let me = roster.then(|| self.config.directory.bot_party(&call.app_id, call.application_instance.as_deref())).flatten();
        let mut out = Vec::new();
        for e in effects {
            let Effect::Notify(n) = e else { continue };
            let Some(cb) = &callback else {
                tracing::error!(call_id = call.id, app_id = call.app_id, "no callback and no calling webhook: notification dropped");
                continue;
            };
            let body = if beta_2018 {
                render::notification_2018(call, n, version, me.as_ref())
            } else {
                Some(render::notification(call, n, me.as_ref()))
            };
            if let Some(body) = body {
                out.push(NewNotification { callback: cb.clone(), body: body.to_string() });
            }
        }
        out
    }

    /// Carries out the effects that are not notifications (those are already in the outbox).
    fn run(self: &Arc<Self>, slot: &mut Slot, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Notify(_) => {}
                Effect::Net(cmd) => match self.network.get() {
                    Some(net) => net.execute(&slot.call, &cmd),
                    None => tracing::error!(call_id = slot.call.id, ?cmd, "no network attached"),
                },
                Effect::Timer { timer, at } => {
                    let handle = self.arm(&slot.call.id, timer, at);
                    if let Some(i) = slot.timers.iter().position(|(t, _)| *t == timer) {
                        slot.timers.swap_remove(i).1.abort();
                    }
                    slot.timers.push((timer, handle));
                }
            }
        }
        if slot.gone {
            // Safe even from a timer's own task: nothing is awaited after this point.
            for (_, handle) in slot.timers.drain(..) {
                handle.abort();
            }
        }
    }

    fn arm(self: &Arc<Self>, id: &str, timer: Timer, at: u64) -> tokio::task::JoinHandle<()> {
        let engine = Arc::clone(self);
        let id = id.to_owned();
        tokio::spawn(async move {
            // A little late rather than early: the core ignores a timer that fires before its deadline.
            let wait = at.saturating_sub(now_ms()) + 5;
            tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
            match engine.apply(&id, Input::Timer(timer)).await {
                Ok(_) | Err(EngineError::NotFound(_)) => {}
                Err(e) => {
                    tracing::error!(call_id = id, ?timer, error = %e, "timer could not be applied")
                }
            }
        })
    }
}
