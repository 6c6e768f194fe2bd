//! The engine: the only place where calls change.
//!
//! For each input it locks the call, lets the pure core compute the new state and effects, commits the
//! new state and the owed notifications in one store transaction, and only then carries out the
//! effects (network commands, timers) and hands the notifications to the outbox sink. Inputs of one
//! call are serialised by its lock; different calls proceed in parallel.
//!
//! The engine emits the core's protocol-neutral [`Notification`]s; a [`Render`] supplied by the API
//! adapter turns them into the bytes a bot receives, before the commit, so that what is owed is
//! durable exactly as it will be sent.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use switchboard_core::call::{Call, Effect, IncomingCall, Input, Notification, OutgoingCall, Refusal, Timer};

use crate::clock::{Clock, NotVirtual, TimerId};
use crate::metrics::Metrics;
use crate::network::{Network, NetworkEvent, NetworkEventsRx, Pending};
use crate::store::{NewNotification, OutboxRow, Store, StoreError, StoredCall};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("call {0} not found")]
    NotFound(String),
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The task that applied the input failed (a panic: a defect of ours).
    #[error("the engine could not finish applying an input: {0}")]
    Aborted(String),
}

/// Runs `step` to completion on its own task, whatever becomes of the caller: a request whose client
/// goes away must not separate a commit from the engine's copy of the call and from its effects.
async fn to_completion<T: Send + 'static>(
    step: impl std::future::Future<Output = Result<T, EngineError>> + Send + 'static,
) -> Result<T, EngineError> {
    tokio::spawn(step).await.unwrap_or_else(|e| Err(EngineError::Aborted(e.to_string())))
}

/// Turns the notifications a transition owes into outbox rows: the wire format, and where to send
/// each. `version` is the call's version once committed.
pub trait Render: Send + Sync + 'static {
    fn render(&self, call: &Call, notifications: &[&Notification], version: u64) -> Vec<NewNotification>;
}

/// Where committed outbox rows go to be delivered (the notifier).
pub trait OutboxSink: Send + Sync + 'static {
    fn enqueue(&self, rows: Vec<OutboxRow>);
    /// The call belongs to another node now: drop its queued rows (the new owner sends them).
    fn forget_call(&self, _call_id: &str) {}
}

struct Slot {
    call: Call,
    version: u64,
    /// Set once the call has terminated and left the map; late holders of the slot see it.
    gone: bool,
    /// The armed timer of each kind; re-arming a kind replaces it, termination cancels them all, so
    /// no timer outlives its call.
    timers: Vec<(Timer, TimerId)>,
}

impl Slot {
    fn new(call: Call, version: u64) -> Self {
        Slot { call, version, gone: false, timers: Vec::new() }
    }
}

type SlotRef = Arc<tokio::sync::Mutex<Slot>>;

/// Marks one network event applied when dropped.
struct Done<'a>(&'a Pending);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        self.0.done();
    }
}

/// What the engine is built from.
pub struct Parts {
    pub store: Arc<dyn Store>,
    pub clock: Clock,
    pub render: Arc<dyn Render>,
    pub outbox: Arc<dyn OutboxSink>,
    pub metrics: Arc<Metrics>,
    /// Where each call's story is told (`GET /sim/v1/calls/{id}/history`).
    pub history: Arc<crate::history::History>,
}

pub struct Engine {
    store: Arc<dyn Store>,
    clock: Clock,
    render: Arc<dyn Render>,
    outbox: Arc<dyn OutboxSink>,
    metrics: Arc<Metrics>,
    network: OnceLock<Arc<dyn Network>>,
    /// Network events sent and not yet applied.
    events_pending: OnceLock<Arc<Pending>>,
    calls: Mutex<HashMap<String, SlotRef>>,
    /// Live calls held here, per app (for `max_concurrent_calls`); kept beside `calls`.
    per_app: Mutex<HashMap<String, usize>>,
    history: Arc<crate::history::History>,
}

impl Engine {
    pub fn new(parts: Parts) -> Arc<Self> {
        let Parts { store, clock, render, outbox, metrics, history } = parts;
        Arc::new(Engine {
            store,
            clock,
            render,
            outbox,
            metrics,
            network: OnceLock::new(),
            events_pending: OnceLock::new(),
            calls: Mutex::new(HashMap::new()),
            per_app: Mutex::new(HashMap::new()),
            history,
        })
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Connects the telephony backend and starts applying its events: each call's in the order they
    /// were sent, one at a time; different calls' side by side, so that they share the store's
    /// group commits instead of each waiting for the one before.
    pub fn attach_network(self: &Arc<Self>, network: Arc<dyn Network>, events: NetworkEventsRx) {
        if self.network.set(network).is_err() || self.events_pending.set(Arc::clone(&events.pending)).is_err() {
            tracing::warn!("a network was already attached; ignoring the second one");
            return;
        }
        let engine = Arc::clone(self);
        let NetworkEventsRx { mut rx, pending } = events;
        // Per call, the events not yet applied; a call is in the map while a task applies its events.
        let queues: Arc<Mutex<HashMap<String, VecDeque<NetworkEvent>>>> = Arc::default();
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                let call_id = match &event {
                    NetworkEvent::Call { call_id, .. } => call_id.clone(),
                    NetworkEvent::Offer(req) => req.id.clone(),
                };
                let idle = {
                    let mut q = queues.lock().unwrap_or_else(|e| e.into_inner());
                    match q.get_mut(&call_id) {
                        Some(waiting) => {
                            waiting.push_back(event);
                            false
                        }
                        None => {
                            q.insert(call_id.clone(), VecDeque::from([event]));
                            true
                        }
                    }
                };
                if idle {
                    let (engine, queues, pending) = (Arc::clone(&engine), Arc::clone(&queues), Arc::clone(&pending));
                    tokio::spawn(async move { engine.apply_events(&call_id, &queues, &pending).await });
                }
            }
        });
    }

    /// Applies one call's queued network events in order until its queue is empty.
    async fn apply_events(self: &Arc<Self>, call_id: &str, queues: &Mutex<HashMap<String, VecDeque<NetworkEvent>>>, pending: &Pending) {
        loop {
            let next = {
                let mut q = queues.lock().unwrap_or_else(|e| e.into_inner());
                match q.get_mut(call_id).and_then(VecDeque::pop_front) {
                    Some(event) => event,
                    None => {
                        q.remove(call_id);
                        return;
                    }
                }
            };
            // Counted as done however applying it ends, so that `settled` never waits forever.
            let _done = Done(pending);
            match next {
                NetworkEvent::Call { call_id, event } => match self.apply(&call_id, Input::Net(event.clone())).await {
                    Ok(_) | Err(EngineError::NotFound(_)) => {}
                    Err(e) => tracing::error!(call_id, ?event, error = %e, "network event could not be applied"),
                },
                // If the store refuses the call, the network's side times out (a transfer's timer, say).
                NetworkEvent::Offer(req) => {
                    let call_id = req.id.clone();
                    if let Err(e) = self.offer(*req).await {
                        tracing::error!(call_id, error = %e, "call offered by the network could not be admitted");
                    }
                }
            }
        }
    }

    /// Completes once every network event sent so far has been applied (and those it caused).
    pub async fn settled(&self) {
        if let Some(pending) = self.events_pending.get() {
            pending.idle().await;
        }
    }

    /// Virtual time: moves the clock forward by `ms`, firing every timer that falls due in order, each
    /// followed by what it causes. Returns the new time.
    pub async fn advance_clock(&self, ms: u64) -> Result<u64, NotVirtual> {
        self.clock.advance(ms, || self.settled()).await
    }

    /// Loads every live call from the store and resumes it: timers re-armed, network legs rebuilt.
    pub async fn recover(self: &Arc<Self>) -> Result<usize, StoreError> {
        let stored = self.store.live_calls().await?;
        Ok(self.adopt(stored).await)
    }

    /// Takes calls over as they were stored (after a restart, from a dead node, or handed over) and
    /// resumes them: timers re-armed, network legs rebuilt. A call already here is left as it is.
    /// Returns how many were taken.
    pub async fn adopt(self: &Arc<Self>, stored: Vec<StoredCall>) -> usize {
        // Every call is in the map before anything about any of them can happen: what the network
        // reports while it rebuilds its legs, and deadlines that passed while the server was down,
        // must find their call. Checked and inserted under one lock, so that two adoptions of the same
        // call at once (a request and a hand-over) resume it once.
        let mut slots = Vec::with_capacity(stored.len());
        {
            let mut calls = self.lock_calls();
            for s in stored {
                if calls.contains_key(&s.call.id) {
                    continue;
                }
                self.metrics.call_entered(s.call.state);
                self.count_app(&s.call.app_id, true);
                let id = s.call.id.clone();
                // A call resumed here (after a restart, or from another node) tells its story from now.
                self.history.begin(&s.call);
                let slot = Arc::new(tokio::sync::Mutex::new(Slot::new(s.call, s.version)));
                calls.insert(id, Arc::clone(&slot));
                slots.push(slot);
            }
        }
        let n = slots.len();
        // Then each call, under its own lock: the network picks it up, and its timers are armed, so
        // that a deadline already passed is applied only after the leg is back.
        for slot in slots {
            let mut guard = slot.lock().await;
            if let Some(net) = self.network.get() {
                net.resume(&guard.call);
            }
            let timers = guard.call.pending_timers();
            for (timer, at) in timers {
                let id = self.arm(&guard.call.id, timer, at);
                guard.timers.push((timer, id));
            }
        }
        n
    }

    /// Forgets a call that another node now owns: no notification, no network command; its timers are
    /// cancelled and the network drops its legs. Returns the call as it was.
    pub async fn evict(&self, id: &str) -> Option<Call> {
        let slot = self.slot(id)?;
        let mut guard = slot.lock().await;
        if guard.gone {
            return None;
        }
        self.forget(id, &mut guard);
        Some(guard.call.clone())
    }

    /// Forgets every call (this node lost its lease: others own them now). Returns how many.
    pub async fn evict_all(&self) -> usize {
        let ids: Vec<String> = self.lock_calls().keys().cloned().collect();
        let mut n = 0;
        for id in ids {
            n += usize::from(self.evict(&id).await.is_some());
        }
        n
    }

    fn forget(&self, id: &str, slot: &mut Slot) {
        slot.gone = true;
        if self.lock_calls().remove(id).is_some() {
            self.count_app(&slot.call.app_id, false);
        }
        self.metrics.call_left(slot.call.state);
        for (_, timer) in slot.timers.drain(..) {
            self.clock.cancel(timer);
        }
        if let Some(net) = self.network.get() {
            net.release(&slot.call);
        }
        let now = self.clock.now_ms();
        self.history.note(id, now, crate::history::What::Moved);
        self.history.ended(id, now);
    }

    fn count_app(&self, app_id: &str, entered: bool) {
        let mut per_app = self.per_app.lock().unwrap_or_else(|e| e.into_inner());
        if entered {
            *per_app.entry(app_id.to_owned()).or_default() += 1;
        } else if let Some(n) = per_app.get_mut(app_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per_app.remove(app_id);
            }
        }
    }

    /// Holds one of `app_id`'s `max` call slots while a call is being made, so that concurrent
    /// requests cannot all pass the check and exceed it; `None` when all are taken. The slot counts
    /// as a live call until the reservation is dropped (the call, once made, counts for itself).
    pub fn reserve(self: &Arc<Self>, app_id: &str, max: usize) -> Option<Reservation> {
        let mut per_app = self.per_app.lock().unwrap_or_else(|e| e.into_inner());
        let n = per_app.entry(app_id.to_owned()).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Reservation { engine: Arc::clone(self), app_id: app_id.to_owned() })
    }

    /// How many live calls of `app_id` this node holds.
    pub fn live_calls_of(&self, app_id: &str) -> usize {
        self.per_app.lock().unwrap_or_else(|e| e.into_inner()).get(app_id).copied().unwrap_or(0)
    }

    /// Whether this node holds the live call `id`.
    pub fn holds(&self, id: &str) -> bool {
        self.lock_calls().contains_key(id)
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
        let (call, effects) = Call::place(req, self.clock.now_ms());
        let engine = Arc::clone(self);
        to_completion(async move { engine.admit(call, effects).await }).await
    }

    /// The network offers an incoming call to a bot.
    pub async fn offer(self: &Arc<Self>, req: IncomingCall) -> Result<Call, EngineError> {
        let (call, effects) = Call::offer(req, self.clock.now_ms());
        let engine = Arc::clone(self);
        to_completion(async move { engine.admit(call, effects).await }).await
    }

    async fn admit(self: &Arc<Self>, call: Call, effects: Vec<Effect>) -> Result<Call, EngineError> {
        let notes = self.render(&call, &effects, 1);
        let (version, rows) = self.store.commit(&call, None, &notes, self.clock.now_ms()).await?;
        let slot = Arc::new(tokio::sync::Mutex::new(Slot::new(call.clone(), version)));
        // Hold the slot's lock while the effects run, so that no event about the call overtakes them.
        let mut guard = slot.lock().await;
        self.lock_calls().insert(call.id.clone(), Arc::clone(&slot));
        self.count_app(&call.app_id, true);
        self.metrics.call_entered(call.state);
        self.metrics.calls_created.inc();
        self.history.begin(&call);
        let now = self.clock.now_ms();
        self.history.note(&call.id, now, crate::history::What::State { from: "".into(), to: call.state.as_str().into(), result: None });
        self.tell(&call, &call, None, &effects, &rows, now);
        self.outbox.enqueue(rows);
        self.run(&mut guard, effects);
        Ok(call)
    }

    /// Applies one input to a live call. The call's owner check is the caller's job.
    pub async fn apply(self: &Arc<Self>, id: &str, input: Input) -> Result<Call, EngineError> {
        let (engine, id) = (Arc::clone(self), id.to_owned());
        to_completion(async move { engine.apply_now(&id, input).await }).await
    }

    async fn apply_now(self: &Arc<Self>, id: &str, input: Input) -> Result<Call, EngineError> {
        let slot = self.slot(id).ok_or_else(|| EngineError::NotFound(id.to_owned()))?;
        let mut guard = slot.lock().await;
        if guard.gone {
            return Err(EngineError::NotFound(id.to_owned()));
        }
        let now = self.clock.now_ms();
        let mut next = guard.call.clone();
        let event: Option<std::borrow::Cow<'static, str>> = match &input {
            Input::Net(switchboard_core::call::NetEvent::Ringing) => Some("Ringing".into()),
            Input::Net(switchboard_core::call::NetEvent::Connected) => Some("Connected".into()),
            Input::Net(switchboard_core::call::NetEvent::RemoteHangUp) => Some("RemoteHangUp".into()),
            Input::Net(e) => Some(format!("{e:?}").into()),
            Input::Timer(t) => Some(format!("timer {t:?}").into()),
            _ => None,
        };
        let effects = next.handle(input, now)?;
        if next == guard.call && effects.is_empty() {
            return Ok(next);
        }
        let notes = self.render(&next, &effects, guard.version + 1);
        let (version, rows) = match self.store.commit(&next, Some(guard.version), &notes, now).await {
            Ok(committed) => committed,
            Err(e @ StoreError::NotOwner { .. }) => {
                // Another node adopted the call while this one held it: it is theirs now, and so are
                // its notifications.
                tracing::warn!(call_id = id, "the call belongs to another node now; forgetting it here");
                self.forget(id, &mut guard);
                self.outbox.forget_call(id);
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        self.metrics.call_left(guard.call.state);
        self.observe(&guard.call, &next, now);
        self.tell(&guard.call, &next, event, &effects, &rows, now);
        guard.call = next;
        guard.version = version;
        if guard.call.is_terminated() {
            guard.gone = true;
            if self.lock_calls().remove(id).is_some() {
                self.count_app(&guard.call.app_id, false);
            }
        } else {
            self.metrics.call_entered(guard.call.state);
        }
        self.outbox.enqueue(rows);
        self.run(&mut guard, effects);
        Ok(guard.call.clone())
    }

    /// What a committed change tells an operator: a log line for each state change, transfers and
    /// answer latency counted.
    fn observe(&self, before: &Call, after: &Call, now: u64) {
        use switchboard_core::call::{CallState, OperationStatus};
        if before.state != after.state {
            let reason = after.result_info.as_ref().map(|r| format!("{}/{}", r.code, r.subcode));
            tracing::info!(
                call_id = after.id,
                app_id = after.app_id,
                from = before.state.as_str(),
                to = after.state.as_str(),
                result = reason,
                "call state changed"
            );
        }
        if before.state == CallState::Incoming && after.state == CallState::Establishing {
            self.metrics.bot_answered(now.saturating_sub(after.created_at));
        }
        let kind = |t: &switchboard_core::call::Transfer| if t.replaces_call_id.is_some() { "consultative" } else { "blind" };
        if let (None, Some(t)) = (&before.transfer, &after.transfer) {
            self.metrics.transfer_started(kind(t));
        }
        // A transfer's end: its operation leaves `running`.
        if let Some(t) = &before.transfer {
            let ended = after.operations.iter().find(|o| o.id == t.operation_id && o.status != OperationStatus::Running);
            let was_running = before.operations.iter().any(|o| o.id == t.operation_id && o.status == OperationStatus::Running);
            if let (Some(op), true) = (ended, was_running) {
                match op.status {
                    OperationStatus::Completed => self.metrics.transfer_ended(kind(t), "completed", String::new()),
                    _ => {
                        let reason = op.result_info.as_ref().map(|r| format!("{}/{}", r.code, r.subcode)).unwrap_or_default();
                        self.metrics.transfer_ended(kind(t), "failed", reason);
                    }
                }
            }
        }
    }

    /// The committed change, in the call's story: what the network said, the state change, the
    /// notifications owed (by outbox number), and the commands for the network.
    fn tell(
        &self,
        before: &Call,
        after: &Call,
        event: Option<std::borrow::Cow<'static, str>>,
        effects: &[Effect],
        rows: &[OutboxRow],
        now: u64,
    ) {
        use crate::history::What;
        let mut story = Vec::with_capacity(2 + rows.len() + effects.len());
        if let Some(event) = event {
            story.push(What::Network { event });
        }
        if before.state != after.state {
            // A transfer that ends (back to established, or on to terminated) ends with its operation's result.
            let transfer_op = before.transfer.as_ref().and_then(|t| after.operations.iter().find(|o| o.id == t.operation_id));
            let result = transfer_op.and_then(|o| o.result_info.as_ref()).or(after.result_info.as_ref());
            let result = result.map(|r| format!("{}/{}", r.code, r.subcode));
            story.push(What::State { from: before.state.as_str().into(), to: after.state.as_str().into(), result });
        }
        story.extend(rows.iter().map(notification_entry));
        story.extend(effects.iter().filter_map(|e| match e {
            Effect::Net(cmd) => Some(command_entry(cmd)),
            _ => None,
        }));
        self.history.note_all(now, story.into_iter().map(|what| (after.id.as_str(), what)));
        if after.is_terminated() {
            self.history.ended(&after.id, now);
        }
    }

    /// Each call's story.
    pub fn history(&self) -> &Arc<crate::history::History> {
        &self.history
    }

    fn render(&self, call: &Call, effects: &[Effect], version: u64) -> Vec<NewNotification> {
        let notes: Vec<&Notification> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Notify(n) => Some(n),
                _ => None,
            })
            .collect();
        if notes.is_empty() { Vec::new() } else { self.render.render(call, &notes, version) }
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
                    let id = self.arm(&slot.call.id, timer, at);
                    if let Some(i) = slot.timers.iter().position(|(t, _)| *t == timer) {
                        self.clock.cancel(slot.timers.swap_remove(i).1);
                    }
                    slot.timers.push((timer, id));
                }
            }
        }
        if slot.gone {
            for (_, id) in slot.timers.drain(..) {
                self.clock.cancel(id);
            }
        }
    }

    fn arm(self: &Arc<Self>, id: &str, timer: Timer, at: u64) -> TimerId {
        let engine = Arc::clone(self);
        let id = id.to_owned();
        self.clock.schedule(
            at,
            Box::new(move || {
                Box::pin(async move {
                    match engine.apply(&id, Input::Timer(timer)).await {
                        Ok(_) | Err(EngineError::NotFound(_)) => {}
                        Err(e) => tracing::error!(call_id = id, ?timer, error = %e, "timer could not be applied"),
                    }
                })
            }),
        )
    }
}

/// A call slot held while a call is being made ([`Engine::reserve`]); given back when dropped.
pub struct Reservation {
    engine: Arc<Engine>,
    app_id: String,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.engine.count_app(&self.app_id, false);
    }
}

/// A command as the story tells it: its name and fields, and the party it goes to if not the remote one.
fn command_entry(cmd: &switchboard_core::call::NetCommand) -> crate::history::What {
    use switchboard_core::call::NetCommand;
    let to = match cmd {
        NetCommand::Transfer { target, .. } => Some(target.label().to_owned()),
        NetCommand::Redirect { targets } => targets.first().map(|t| t.label().to_owned()),
        _ => None,
    };
    // The commands without fields (most of them) cost no allocation.
    let command = match cmd {
        NetCommand::Place => "Place".into(),
        NetCommand::Answer => "Answer".into(),
        NetCommand::HangUp => "HangUp".into(),
        other => format!("{other:?}").into(),
    };
    crate::history::What::Command { command, to }
}

/// A notification as the story tells it: its number, change, resource, and the state or operation
/// status it carries. Read off the rendered JSON by looking for its fields, without parsing it (every
/// notification passes here); a roster is parsed, to count its members.
fn notification_entry(row: &OutboxRow) -> crate::history::What {
    use std::borrow::Cow;
    let body = row.body.as_str();
    // The string value of the first `"name":"…"` in `s` (our renderer writes compact JSON, and a `"`
    // inside a value is escaped, so the pattern cannot start inside one).
    let text = |s: &str, name: &str| -> Option<String> {
        let start = s.find(&format!("\"{name}\":\""))? + name.len() + 4;
        let end = s[start..].find('"')?;
        Some(s[start..start + end].to_owned())
    };
    let change: Cow<'static, str> = match text(body, "changeType").as_deref() {
        Some("created") => "created".into(),
        Some("updated") => "updated".into(),
        Some("deleted") => "deleted".into(),
        Some(other) => other.to_owned().into(),
        None => "".into(),
    };
    let url = text(body, "resourceUrl").or_else(|| text(body, "resource")).unwrap_or_default();
    let own = url.strip_prefix("/communications/calls/") == Some(row.call_id.as_str());
    let data = body.find("\"resourceData\":").map(|at| &body[at..]).unwrap_or_default();
    let summary: Cow<'static, str> = if data.starts_with("\"resourceData\":[") {
        let members = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("resourceData").and_then(serde_json::Value::as_array).map(Vec::len))
            .unwrap_or(0);
        format!("roster of {members}").into()
    } else {
        match (text(data, "state"), text(data, "status"), text(data, "tone")) {
            (Some(state), _, Some(tone)) => format!("{state}, tone {tone}").into(),
            (Some(state), _, None) => static_state(&state).map_or_else(|| state.into(), Cow::Borrowed),
            (None, Some(status), _) => {
                let kind = text(data, "@odata.type").unwrap_or_else(|| "operation".into());
                format!("{} {status}", kind.trim_start_matches("#microsoft.graph.")).into()
            }
            _ => "".into(),
        }
    };
    crate::history::What::Notification { seq: row.seq, change_type: change, resource_url: (!own).then_some(url), summary }
}

/// A call state's name, without an allocation.
fn static_state(state: &str) -> Option<&'static str> {
    use switchboard_core::call::CallState::*;
    [Incoming, Establishing, Established, Hold, Transferring, TransferAccepted, Redirecting, Terminating, Terminated]
        .into_iter()
        .map(|s| s.as_str())
        .find(|s| *s == state)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::{Arc, Mutex};

    use switchboard_core::call::{Call, MediaConfig, NetCommand, NetEvent, Notification, OutgoingCall};
    use switchboard_core::party::Party;

    use super::{Engine, OutboxSink, Parts, Render};
    use crate::Clock;
    use crate::memory::MemoryStore;
    use crate::network::{self, Network};
    use crate::store::{NewNotification, OutboxRow};

    /// Remembers the states each call was notified of, in commit order.
    #[derive(Default)]
    struct Seen(Mutex<Vec<(String, String)>>);

    impl Render for Seen {
        fn render(&self, call: &Call, notifications: &[&Notification], _: u64) -> Vec<NewNotification> {
            let mut seen = self.0.lock().unwrap();
            for n in notifications {
                seen.push((call.id.clone(), n.state.as_str().to_owned()));
            }
            Vec::new()
        }
    }

    struct Nowhere;

    impl OutboxSink for Nowhere {
        fn enqueue(&self, _: Vec<OutboxRow>) {}
    }

    impl Network for Nowhere {
        fn execute(&self, _: &Call, _: &NetCommand) {}
        fn resume(&self, _: &Call) {}
        fn release(&self, _: &Call) {}
    }

    fn outgoing(id: &str) -> OutgoingCall {
        OutgoingCall {
            id: id.into(),
            app_id: "app".into(),
            tenant_id: "t".into(),
            callback_uri: "https://bot/cb".into(),
            source: Party::Application { id: "app".into(), display_name: "Bot".into() },
            target: Party::User { id: "u".into(), display_name: "U".into(), tenant_id: "t".into() },
            application_instance: None,
            requested_modalities: vec!["audio".into()],
            media_config: MediaConfig::ServiceHosted,
            subject: None,
            my_participant_id: format!("{id}-me"),
            peer_participant_id: format!("{id}-peer"),
            call_chain_id: format!("{id}-chain"),
            ring_timeout_ms: 60_000,
            members: Vec::new(),
        }
    }

    /// Different calls' network events are applied side by side, but each call's in the order the
    /// network sent them: answered before hung up, for every call, however the tasks interleave.
    /// (Applying each event on a task of its own fails this within a run: some hang-ups overtake.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_calls_network_events_apply_in_order() {
        let seen = Arc::new(Seen::default());
        let engine = Engine::new(Parts {
            store: Arc::new(MemoryStore::new()),
            clock: Clock::virtual_at(0),
            render: Arc::clone(&seen) as Arc<dyn Render>,
            outbox: Arc::new(Nowhere),
            metrics: Arc::default(),
            history: Default::default(),
        });
        let (events, rx) = network::channel();
        engine.attach_network(Arc::new(Nowhere), rx);
        let ids: Vec<String> = (0..1000).map(|i| format!("call-{i}")).collect();
        for id in &ids {
            engine.place(outgoing(id)).await.unwrap();
        }
        for id in &ids {
            events.call(id, NetEvent::Connected);
            events.call(id, NetEvent::RemoteHangUp);
        }
        engine.settled().await;
        let seen = seen.0.lock().unwrap();
        for id in &ids {
            let states: Vec<&str> = seen.iter().filter(|(c, _)| c == id).map(|(_, s)| s.as_str()).collect();
            assert_eq!(states, ["establishing", "established", "terminated"], "{id}");
        }
    }
}
