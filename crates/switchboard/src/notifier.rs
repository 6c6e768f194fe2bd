//! The notifier: drains the outbox to the bots' callbacks.
//!
//! - **At least once.** A row leaves the outbox only after the bot answered 2xx.
//! - **In order per call.** A row is sent only when no earlier row of the same call is waiting or in
//!   flight; consecutive rows of one call for one callback travel together, in order.
//! - **Batched.** Rows due for the same callback (and app and tenant) go in one `commsNotifications` POST,
//!   up to [`MAX_BATCH`].
//! - **Retried** with jittered exponential backoff ([`next_delay`]); after `max_attempts` a row is marked
//!   failed, kept, and listed by the sim control API, which can requeue it.
//! - **Signed.** Each POST carries `Authorization: Bearer <JWT>` (RS256; `aud` = the app id, `tid`, `iss`).
//! - **Only where the callback policy allows** ([`crate::callback`]): checked again before each POST,
//!   and on every address DNS gives. A refused callback's rows fail at once (no retries), kept.
//! - **Quiet when a bot is down.** A callback's failures are logged at most once a minute, with how
//!   many were left out.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};

use switchboard_engine::Clock;
use switchboard_engine::directory::Directory;
use switchboard_engine::engine::OutboxSink;

use crate::callback::{self, CallbackPolicy};
use crate::config::NotificationSettings;
use crate::graph::{Format, render};
use crate::identity::{self, SigningKey};
use crate::metrics::Metrics;
use crate::store::{OutboxRow, OutboxStatus, Store, StoreError};

/// The stable ids of a POST's items, in order (a Switchboard extension), so that a bot can recognise
/// a resend: at least once means some notifications arrive twice.
pub const NOTIFICATION_IDS: &str = "Switchboard-Notification-Ids";

fn ids(seqs: &[i64]) -> String {
    seqs.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

/// At most this many notifications in one POST.
pub const MAX_BATCH: usize = 100;
/// At most this many POSTs in flight at once.
const MAX_IN_FLIGHT: usize = 64;
/// At most this many POSTs in flight to one bot (scheme, host and port), so that a bot that is slow or
/// gone holds a few of the [`MAX_IN_FLIGHT`] slots, never all of them: the others' notifications go on.
pub const MAX_IN_FLIGHT_PER_BOT: usize = 8;
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER_MS: u64 = 3_600_000;

/// At most this many POSTs in flight for one app, whatever its callbacks: an app cannot take every
/// slot by spreading its calls over many host names.
pub const MAX_IN_FLIGHT_PER_APP: usize = 16;

/// The bot a callback URL reaches: its scheme, host and port, as the URL parser reads them
/// (`https://bot.contoso.com:443`), so that spellings of one host share one allowance.
fn origin(callback: &str) -> String {
    match url::Url::parse(callback) {
        Ok(u) => format!(
            "{}://{}:{}",
            u.scheme(),
            u.host_str().unwrap_or_default().trim_end_matches('.'),
            u.port_or_known_default().unwrap_or_default()
        ),
        Err(_) => callback.to_owned(),
    }
}

/// The keys a POST counts against, its bot and its app, and how many POSTs each may have out.
fn allowances(callback: &str, app_id: &str) -> [String; 2] {
    [origin(callback), format!("app {app_id}")]
}

const ALLOWANCE_CAPS: [usize; 2] = [MAX_IN_FLIGHT_PER_BOT, MAX_IN_FLIGHT_PER_APP];

/// A `Retry-After` value (RFC 9110 §10.2.3): seconds, or an HTTP date; in ms from `now_ms`.
pub fn retry_after_ms(value: &str, now_ms: u64) -> Option<u64> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(secs.saturating_mul(1000).min(MAX_RETRY_AFTER_MS));
    }
    let at = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
    let at_ms = u64::try_from(at.unix_timestamp()).ok()?.saturating_mul(1000);
    Some(at_ms.saturating_sub(now_ms).min(MAX_RETRY_AFTER_MS))
}

/// The delay before attempt `attempt + 1`, after `attempt` failures (1-based): `first · 2^(attempt-1)`,
/// capped at `max`, then jittered by ±20 % so that many bots failing together don't retry in lockstep.
pub fn next_delay(attempt: u32, first_ms: u64, max_ms: u64, jitter: f64) -> u64 {
    let exp = attempt.saturating_sub(1).min(32);
    let base = first_ms.saturating_mul(1u64 << exp).min(max_ms);
    let factor = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
    (base as f64 * factor) as u64
}

/// The rows waiting to be sent, organised so that picking what to send costs in proportion to the
/// calls that can send, not to every row queued: each call's rows in commit order, and the first row
/// of each call with nothing in flight, by when it is due.
#[derive(Default)]
struct Queue {
    /// Every queued row (in flight or not), by sequence number.
    rows: HashMap<i64, OutboxRow>,
    calls: HashMap<String, CallRows>,
    /// (due at, seq) of the first row of every call with nothing in flight.
    heads: BTreeSet<(u64, i64)>,
    /// The POST each row in flight is in, so that a POST's end acts only on its own rows (a row
    /// forgotten and read back while an old POST was out may be in a newer one).
    flights: HashMap<i64, u64>,
    next_flight: u64,
    /// POSTs in flight per bot ([`origin`]).
    bots_in_flight: HashMap<String, usize>,
}

#[derive(Default)]
struct CallRows {
    /// The call's rows in commit order; the first `in_flight` of them are being POSTed.
    seqs: VecDeque<i64>,
    in_flight: usize,
    /// Its entry in `heads`, when it has one.
    head: Option<(u64, i64)>,
}

impl Queue {
    fn len(&self) -> usize {
        self.rows.len()
    }

    /// Queues a row (one already queued is left as it is).
    fn push(&mut self, row: OutboxRow) {
        if self.rows.contains_key(&row.seq) {
            return;
        }
        let (seq, call_id) = (row.seq, row.call_id.clone());
        self.rows.insert(seq, row);
        let call = self.calls.entry(call_id.clone()).or_default();
        // Rows arrive in commit order, except those read back from the store later (recovery).
        match call.seqs.back() {
            Some(last) if *last > seq => {
                let at = call.seqs.iter().position(|s| *s > seq).unwrap_or(call.seqs.len()).max(call.in_flight);
                call.seqs.insert(at, seq);
            }
            _ => call.seqs.push_back(seq),
        }
        self.place_head(&call_id);
    }

    /// Puts the call's first row in `heads` if nothing of the call is in flight; forgets an empty call.
    fn place_head(&mut self, call_id: &str) {
        let Some(call) = self.calls.get_mut(call_id) else { return };
        if let Some(old) = call.head.take() {
            self.heads.remove(&old);
        }
        if call.in_flight > 0 {
            return;
        }
        match call.seqs.front().and_then(|s| self.rows.get(s)) {
            Some(row) => {
                let head = (row.next_attempt_at, row.seq);
                self.heads.insert(head);
                call.head = Some(head);
            }
            None => {
                self.calls.remove(call_id);
            }
        }
    }

    /// Picks what can be sent at `now`: for each call whose first row is due, its consecutive due rows
    /// for one callback, into one batch per callback (up to [`MAX_BATCH`] rows). Returns the batches
    /// and when a row waiting for a retry falls due.
    fn take(&mut self, now: u64) -> (Vec<Batch>, Option<u64>) {
        let due: Vec<(u64, i64)> = self.heads.range(..=(now, i64::MAX)).copied().collect();
        let mut batches: Vec<Batch> = Vec::new();
        for head in due {
            let Some(first) = self.rows.get(&head.1) else { continue };
            let idx = match batches
                .iter()
                .position(|b| b.callback == first.callback && b.app_id == first.app_id && b.tenant_id == first.tenant_id)
            {
                Some(i) => i,
                None => {
                    // The bot (or its app) has its share of POSTs out: this call waits for one to end.
                    let keys = allowances(&first.callback, &first.app_id);
                    if keys.iter().zip(ALLOWANCE_CAPS).any(|(k, cap)| self.bots_in_flight.get(k).is_some_and(|n| *n >= cap)) {
                        continue;
                    }
                    for k in &keys {
                        *self.bots_in_flight.entry(k.clone()).or_default() += 1;
                    }
                    self.next_flight += 1;
                    batches.push(Batch {
                        flight: self.next_flight,
                        allowances: keys,
                        callback: first.callback.clone(),
                        app_id: first.app_id.clone(),
                        tenant_id: first.tenant_id.clone(),
                        rows: Vec::new(),
                    });
                    batches.len() - 1
                }
            };
            let batch = &mut batches[idx];
            if batch.rows.len() >= MAX_BATCH {
                // The rest goes in a later POST; the full one's completion wakes the loop.
                continue;
            }
            let Some(call) = self.calls.get_mut(&first.call_id) else { continue };
            for seq in &call.seqs {
                let Some(row) = self.rows.get(seq) else { break };
                if batch.rows.len() >= MAX_BATCH
                    || row.next_attempt_at > now
                    || row.callback != batch.callback
                    || row.app_id != batch.app_id
                    || row.tenant_id != batch.tenant_id
                {
                    break;
                }
                batch.rows.push(row.clone());
                self.flights.insert(row.seq, batch.flight);
                call.in_flight += 1;
            }
            self.heads.remove(&head);
            call.head = None;
        }
        for b in batches.iter().filter(|b| b.rows.is_empty()) {
            self.landed(&b.allowances);
        }
        batches.retain(|b| !b.rows.is_empty());
        for b in &mut batches {
            // Calls' rows side by side, in commit order.
            b.rows.sort_by_key(|r| r.seq);
        }
        let next = self.heads.range((now + 1, i64::MIN)..).next().map(|(at, _)| *at);
        (batches, next)
    }

    /// A POST counted against `keys` ([`allowances`]) is over (or was never sent): its bot and app
    /// may have another.
    fn landed(&mut self, keys: &[String; 2]) {
        for key in keys {
            if let Some(n) = self.bots_in_flight.get_mut(key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.bots_in_flight.remove(key);
                }
            }
        }
    }

    /// Ends the flight of row `seq` if POST `flight` carries it; whether it did.
    fn land(&mut self, flight: u64, seq: i64) -> bool {
        let ours = self.flights.get(&seq) == Some(&flight);
        if ours {
            self.flights.remove(&seq);
        }
        ours
    }

    /// The rows' POST is over: they leave the queue (delivered, or given up on), and their calls'
    /// next rows may go.
    fn remove(&mut self, flight: u64, seqs: &[i64]) {
        let mut touched = Vec::new();
        for seq in seqs {
            if !self.land(flight, *seq) {
                continue;
            }
            let Some(row) = self.rows.remove(seq) else { continue };
            if let Some(call) = self.calls.get_mut(&row.call_id) {
                if let Some(at) = call.seqs.iter().position(|s| s == seq) {
                    call.seqs.remove(at);
                    if at < call.in_flight {
                        call.in_flight -= 1;
                    }
                }
                touched.push(row.call_id);
            }
        }
        for call_id in touched {
            self.place_head(&call_id);
        }
    }

    /// The rows' POST failed: they stay first in their calls' queues, due again at `at`.
    fn retry(&mut self, flight: u64, seqs: &[i64], attempts: u32, at: u64, error: &str) {
        let mut touched = Vec::new();
        for seq in seqs {
            if !self.land(flight, *seq) {
                continue;
            }
            let Some(row) = self.rows.get_mut(seq) else { continue };
            row.attempts = attempts;
            row.next_attempt_at = at;
            row.last_error = Some(error.to_owned());
            if let Some(call) = self.calls.get_mut(&row.call_id) {
                call.in_flight = call.in_flight.saturating_sub(1);
                touched.push(row.call_id.clone());
            }
        }
        for call_id in touched {
            self.place_head(&call_id);
        }
    }

    /// Whether some of the call's rows are being POSTed.
    fn busy(&self, call_id: &str) -> bool {
        self.calls.get(call_id).is_some_and(|c| c.in_flight > 0)
    }

    /// Drops every row of the call, in flight or not.
    fn forget_call(&mut self, call_id: &str) {
        if let Some(call) = self.calls.remove(call_id) {
            if let Some(head) = call.head {
                self.heads.remove(&head);
            }
            for seq in call.seqs {
                self.rows.remove(&seq);
                self.flights.remove(&seq);
            }
        }
    }
}

pub struct Notifier {
    store: Arc<dyn Store>,
    key: Arc<SigningKey>,
    settings: NotificationSettings,
    metrics: Arc<Metrics>,
    clock: Clock,
    /// Which envelope each app gets ([`Format`]).
    directory: Arc<Directory>,
    client: reqwest::Client,
    queue: Mutex<Queue>,
    wake: Notify,
    tokens: Mutex<HashMap<(String, String), (String, u64)>>,
    stop: AtomicBool,
    /// Set while this node's lease is in doubt: it sends nothing, since another node may own its rows.
    fenced: AtomicBool,
    callbacks: Arc<CallbackPolicy>,
    /// Per callback: when its failure was last logged, and how many were not logged since.
    logged: Mutex<HashMap<String, (std::time::Instant, u64)>>,
    /// Injected faults, per app, each with its own random source.
    faults: Mutex<HashMap<String, (Faults, fastrand::Rng)>>,
    history: Arc<switchboard_engine::history::History>,
}

/// Faults injected into one app's notifications (`PUT /sim/v1/apps/{appId}/faults`), so that a bot's
/// robustness can be tested: what a real Graph does on a bad day. None breaks at-least-once delivery
/// or per-call order, except where that is the fault (a duplicate is a resend).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Faults {
    /// Each delivered POST is sent again at once with this probability (the same ids).
    #[serde(default)]
    pub duplicate_rate: f64,
    /// Waited before each POST: a fixed number of ms, or `[min, max]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<Delay>,
    /// The first N attempts of each notification are not sent: they fail, and the retries follow.
    #[serde(default)]
    pub drop_first: u32,
    /// How long the bot has to answer a POST (instead of the delivery timeout); later is a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_timeout_ms: Option<u64>,
    /// A POST's token is signed wrongly with this probability: the bot must refuse it.
    #[serde(default)]
    pub invalid_signature_rate: f64,
    /// Makes the random choices repeatable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Delay {
    Fixed(u64),
    Range([u64; 2]),
}

/// The largest seed: the largest integer a JSON number holds exactly.
pub const MAX_SEED: u64 = (1 << 53) - 1;

/// The longest delay or answer timeout a fault may set.
pub const MAX_FAULT_MS: u64 = 60_000;

impl Faults {
    /// Checks the values; the problem names the field.
    pub fn validate(&self) -> Result<(), String> {
        for (field, rate) in [("duplicateRate", self.duplicate_rate), ("invalidSignatureRate", self.invalid_signature_rate)] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{field}: {rate} is not a probability (0 to 1)"));
            }
        }
        match self.delay_ms {
            Some(Delay::Fixed(ms)) if ms > MAX_FAULT_MS => return Err(format!("delayMs: {ms} is over {MAX_FAULT_MS}")),
            Some(Delay::Range([lo, hi])) if lo.max(hi) > MAX_FAULT_MS => {
                return Err(format!("delayMs: [{lo}, {hi}] goes over {MAX_FAULT_MS}"));
            }
            _ => {}
        }
        // Seeds a JSON client can write exactly (2^53 - 1 at most).
        if let Some(seed) = self.seed
            && seed > MAX_SEED
        {
            return Err(format!("seed: {seed} is over {MAX_SEED}"));
        }
        if self.drop_first > 100 {
            return Err(format!("dropFirst: {} is over 100", self.drop_first));
        }
        if let Some(ms) = self.answer_timeout_ms
            && !(1..=MAX_FAULT_MS).contains(&ms)
        {
            return Err(format!("answerTimeoutMs: {ms} is not within 1..={MAX_FAULT_MS}"));
        }
        Ok(())
    }
}

/// What the faults decided for one POST.
#[derive(Default)]
struct FaultPlan {
    drop: bool,
    delay: Option<Duration>,
    duplicate: bool,
    invalid_signature: bool,
    answer_timeout: Option<Duration>,
}

/// A callback's delivery failures are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// What a notifier is built from.
pub struct Parts {
    pub callbacks: Arc<CallbackPolicy>,
    pub store: Arc<dyn Store>,
    pub key: Arc<SigningKey>,
    pub settings: NotificationSettings,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    pub directory: Arc<Directory>,
    /// Where each delivery attempt is told, in its calls' stories.
    pub history: Arc<switchboard_engine::history::History>,
}

/// How a POST failed.
enum Failure {
    /// Not to be tried again (the callback policy refuses the callback).
    ForGood,
    /// Tried again after the backoff, or after `wait` ms if the bot asked for longer.
    Retry { wait: Option<u64> },
}

/// A group of rows for one POST.
struct Batch {
    /// Which POST this is ([`Queue::flights`]).
    flight: u64,
    /// Its bot's and its app's keys in [`Queue::bots_in_flight`], worked out once.
    allowances: [String; 2],
    callback: String,
    app_id: String,
    tenant_id: String,
    rows: Vec<OutboxRow>,
}

impl Notifier {
    pub fn new(parts: Parts) -> Result<Arc<Self>, reqwest::Error> {
        let Parts { callbacks, store, key, settings, metrics, clock, directory, history } = parts;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.timeout_ms))
            .connect_timeout(Duration::from_millis(settings.timeout_ms.min(5_000)))
            .redirect(reqwest::redirect::Policy::none())
            // Straight to the bot: through a proxy, the proxy would resolve the name, unchecked.
            .no_proxy()
            // Every address a callback's name resolves to passes the policy (DNS rebinding).
            .dns_resolver(Arc::new(callback::Resolver(Arc::clone(&callbacks))))
            .build()?;
        Ok(Arc::new(Notifier {
            store,
            key,
            settings,
            metrics,
            clock,
            directory,
            client,
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            tokens: Mutex::new(HashMap::new()),
            stop: AtomicBool::new(false),
            fenced: AtomicBool::new(false),
            callbacks,
            logged: Mutex::new(HashMap::new()),
            faults: Mutex::new(HashMap::new()),
            history,
        }))
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Injects `faults` into `app_id`'s notifications from now on (none: stops).
    pub fn set_faults(&self, app_id: &str, faults: Option<Faults>) {
        let mut all = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        match faults {
            Some(f) => {
                let rng = f.seed.map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed);
                all.insert(app_id.to_owned(), (f, rng));
            }
            None => {
                all.remove(app_id);
            }
        }
    }

    pub fn faults(&self, app_id: &str) -> Faults {
        self.faults.lock().unwrap_or_else(|e| e.into_inner()).get(app_id).map(|(f, _)| f.clone()).unwrap_or_default()
    }

    fn plan(&self, batch: &Batch) -> FaultPlan {
        let mut all = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        let Some((f, rng)) = all.get_mut(&batch.app_id) else { return FaultPlan::default() };
        let attempts = batch.rows.iter().map(|r| r.attempts).min().unwrap_or(0);
        FaultPlan {
            drop: attempts < f.drop_first,
            delay: f.delay_ms.map(|d| {
                Duration::from_millis(match d {
                    Delay::Fixed(ms) => ms,
                    // Either order: the range between the two.
                    Delay::Range([a, b]) => rng.u64(a.min(b)..=a.max(b)),
                })
            }),
            duplicate: rng.f64() < f.duplicate_rate,
            invalid_signature: rng.f64() < f.invalid_signature_rate,
            answer_timeout: f.answer_timeout_ms.map(Duration::from_millis),
        }
    }

    /// Loads the pending rows left by a previous run.
    pub async fn recover(&self) -> Result<usize, StoreError> {
        let rows = self.store.outbox(OutboxStatus::Pending).await?;
        let n = rows.len();
        self.enqueue(rows);
        Ok(n)
    }

    /// Hands freshly committed rows to the delivery loop.
    pub fn enqueue(&self, rows: Vec<OutboxRow>) {
        if rows.is_empty() {
            return;
        }
        let mut q = self.queue();
        for r in rows {
            q.push(r);
        }
        self.metrics.notifications_pending.store(q.len() as i64, Ordering::Relaxed);
        drop(q);
        self.wake.notify_one();
    }

    /// Stops (or resumes) sending: while fenced, nothing new leaves this node.
    pub fn fence(&self, fenced: bool) {
        self.fenced.store(fenced, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// The call goes to another node: waits until none of its rows is being POSTed, then drops the
    /// rest from the queue (they travel with the call, in the database).
    pub async fn release(&self, call_id: &str) {
        loop {
            {
                let mut q = self.queue();
                if !q.busy(call_id) {
                    q.forget_call(call_id);
                    self.metrics.notifications_pending.store(q.len() as i64, Ordering::Relaxed);
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Drops every queued row (this node lost its lease; the adopter sends them). Rows in flight
    /// finish, but a failed one is not tried again here.
    pub fn forget_all(&self) {
        let mut q = self.queue();
        // Flight numbers go on rising, so that a POST still out is never taken for a new one.
        *q = Queue { next_flight: q.next_flight, bots_in_flight: std::mem::take(&mut q.bots_in_flight), ..Queue::default() };
        self.metrics.notifications_pending.store(0, Ordering::Relaxed);
    }

    /// Drops the queued rows of one call that another node owns now (it sends them).
    pub fn forget_call(&self, call_id: &str) {
        let mut q = self.queue();
        q.forget_call(call_id);
        self.metrics.notifications_pending.store(q.len() as i64, Ordering::Relaxed);
    }

    /// Requeues the rows that had failed for good. Returns how many.
    pub async fn retry_failed(&self) -> Result<usize, StoreError> {
        let n = self.store.requeue_failed(self.clock.now_ms()).await?;
        self.recover_missing().await?;
        Ok(n)
    }

    async fn recover_missing(&self) -> Result<(), StoreError> {
        let rows = self.store.outbox(OutboxStatus::Pending).await?;
        let mut q = self.queue();
        for r in rows {
            q.push(r);
        }
        self.metrics.notifications_pending.store(q.len() as i64, Ordering::Relaxed);
        drop(q);
        self.wake.notify_one();
        Ok(())
    }

    /// Picks what can be sent now; returns the batches and when to look again.
    fn take_due(&self, now: u64) -> (Vec<Batch>, Option<u64>) {
        if self.fenced.load(Ordering::SeqCst) {
            return (Vec::new(), Some(now + 200));
        }
        self.queue().take(now)
    }

    /// The delivery loop; returns when [`Notifier::shutdown`] was called and nothing is in flight.
    pub async fn run(self: Arc<Self>) {
        let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        loop {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            let (batches, next_wake) = self.take_due(self.clock.now_ms());
            for batch in batches {
                let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                    break;
                };
                let me = Arc::clone(&self);
                tokio::spawn(async move {
                    me.deliver(batch).await;
                    drop(permit);
                    me.wake.notify_one();
                });
            }
            // Retries follow the clock, virtual time included.
            let at = next_wake.unwrap_or_else(|| self.clock.now_ms() + 60_000);
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = self.clock.sleep_until(at) => {}
            }
        }
        // Drain: wait for in-flight POSTs to finish (bounded by the client timeout).
        let _ = permits.acquire_many(MAX_IN_FLIGHT as u32).await;
    }

    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    fn token(&self, app_id: &str, tenant_id: &str) -> Result<String, identity::IdentityError> {
        let now_s = self.clock.now_ms() / 1000;
        let key = (app_id.to_owned(), tenant_id.to_owned());
        let mut cache = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((tok, minted)) = cache.get(&key) {
            // Re-use a token for five minutes; it stays valid for an hour.
            if now_s < minted + 300 {
                return Ok(tok.clone());
            }
        }
        let tok = identity::issue_notification_token(&self.key, &self.settings.issuer, app_id, tenant_id, now_s)?;
        cache.insert(key, (tok.clone(), now_s));
        Ok(tok)
    }

    async fn deliver(&self, batch: Batch) {
        let seqs: Vec<i64> = batch.rows.iter().map(|r| r.seq).collect();
        // Bytes: a duplicate (an injected fault) resends it without a copy.
        let body = axum::body::Bytes::from(render::notifications_envelope(
            batch.rows.iter().map(|r| r.body.as_str()),
            Format::of(self.directory.app(&batch.app_id)),
        ));
        self.metrics.notification_posts.inc();
        let started = std::time::Instant::now();
        // Rows written before the policy changed (or under another node's) are judged by today's.
        if let Err(problem) = self.refused(&batch.callback).await {
            self.tell(&batch, started, None, Some(format!("refused by the callback policy: {problem}")), Vec::new());
            return self.refused_for_good(&batch, &seqs, &problem).await;
        }
        let plan = self.plan(&batch);
        let mut faults: Vec<String> = Vec::new();
        if plan.drop {
            self.metrics.fault("drop");
            self.tell(&batch, started, None, Some("dropped by an injected fault (dropFirst)".into()), vec!["drop".into()]);
            return self.fail(&batch, &seqs, "dropped by an injected fault (dropFirst)", Failure::Retry { wait: None }).await;
        }
        if let Some(delay) = plan.delay {
            self.metrics.fault("delay");
            faults.push(format!("delay {} ms", delay.as_millis()));
            tokio::time::sleep(delay).await;
        }
        if plan.answer_timeout.is_some() {
            faults.push("answerTimeout".into());
        }
        let mut status: Option<u16> = None;
        // Err: what went wrong, and how long the bot asked us to wait (`Retry-After`).
        let outcome = match self.token(&batch.app_id, &batch.tenant_id) {
            Err(e) => Err((format!("could not sign the notification token: {e}"), None)),
            Ok(token) => {
                let token = if plan.invalid_signature {
                    self.metrics.fault("invalidSignature");
                    faults.push("invalidSignature".into());
                    spoil_signature(&token)
                } else {
                    token
                };
                let post = || {
                    let req = self
                        .client
                        .post(&batch.callback)
                        .bearer_auth(&token)
                        .header(NOTIFICATION_IDS, ids(&seqs))
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body.clone());
                    match plan.answer_timeout {
                        Some(t) => req.timeout(t),
                        None => req,
                    }
                };
                let sent = post().send().await;
                status = sent.as_ref().ok().map(|r| r.status().as_u16());
                match sent {
                    Ok(resp) if resp.status().is_success() => {
                        if plan.duplicate {
                            // The same POST again, as a resend after a lost acknowledgement would be.
                            self.metrics.fault("duplicate");
                            faults.push("duplicate".into());
                            let _ = post().send().await;
                        }
                        Ok(())
                    }
                    Ok(resp) => {
                        let status = resp.status();
                        let wait = [reqwest::StatusCode::TOO_MANY_REQUESTS, reqwest::StatusCode::SERVICE_UNAVAILABLE]
                            .contains(&status)
                            .then(|| resp.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()))
                            .flatten()
                            .and_then(|v| retry_after_ms(v, self.clock.now_ms()));
                        Err((format!("the callback answered {status}"), wait))
                    }
                    Err(e) => match refusal(&e) {
                        Some(problem) => {
                            self.tell(&batch, started, None, Some(format!("refused by the callback policy: {problem}")), faults);
                            return self.refused_for_good(&batch, &seqs, &problem).await;
                        }
                        // The URL is in the log line already, once.
                        None => Err((format!("the callback could not be reached: {}", error_chain(&e.without_url())), None)),
                    },
                }
            }
        };
        self.tell(&batch, started, status, outcome.as_ref().err().map(|(e, _)| e.clone()), faults);
        match outcome {
            Ok(()) => {
                if let Err(e) = self.store.delivered(&seqs).await {
                    // The rows stay in the database and will be sent again after a restart: at least once.
                    tracing::error!(error = %e, "could not record delivered notifications");
                }
                self.metrics.notifications_delivered.add(seqs.len() as u64);
                let mut q = self.queue();
                q.remove(batch.flight, &seqs);
                q.landed(&batch.allowances);
                self.metrics.notifications_pending.store(q.len() as i64, Ordering::Relaxed);
            }
            Err((error, wait)) => self.fail(&batch, &seqs, &error, Failure::Retry { wait }).await,
        }
    }

    /// A delivery attempt, in the story of each call whose notifications it carried.
    fn tell(&self, batch: &Batch, started: std::time::Instant, status: Option<u16>, error: Option<String>, faults: Vec<String>) {
        let now = self.clock.now_ms();
        let latency_ms = started.elapsed().as_millis() as u64;
        // Rows of several calls interleave in a batch.
        let mut calls: Vec<&str> = batch.rows.iter().map(|r| r.call_id.as_str()).collect();
        calls.sort_unstable();
        calls.dedup();
        let story = calls.into_iter().map(|call_id| {
            let rows = batch.rows.iter().filter(|r| r.call_id == call_id);
            let (seqs, attempt) = rows.fold((Vec::new(), 0), |(mut s, a), r| {
                s.push(r.seq);
                (s, a.max(r.attempts + 1))
            });
            let what = switchboard_engine::history::What::Delivery {
                seqs,
                attempt,
                status,
                error: error.clone(),
                latency_ms,
                faults: faults.clone(),
            };
            (call_id, what)
        });
        self.history.note_all(now, story);
    }

    /// Whether the policy refuses `url`: what is known without DNS, and this server's own address
    /// behind a name (the resolver sees no ports).
    async fn refused(&self, url: &str) -> Result<(), String> {
        let parsed = self.callbacks.check(url)?;
        if let (Some(url::Host::Domain(name)), Some(port)) = (parsed.host(), parsed.port_or_known_default())
            && self.callbacks.names_own_port(port)
            && let Ok(found) = tokio::net::lookup_host((name, port)).await
        {
            for addr in found {
                self.callbacks.address(Some(name), addr.ip(), Some(port))?;
            }
        }
        Ok(())
    }

    async fn refused_for_good(&self, batch: &Batch, seqs: &[i64], problem: &str) {
        self.metrics.callbacks_refused.add(seqs.len() as u64);
        self.fail(batch, seqs, &format!("refused by the callback policy: {problem}"), Failure::ForGood).await;
    }

    /// Logs a callback's failure unless one was logged less than [`LOG_EVERY`] ago; says how many
    /// were left out since.
    fn log_failure(&self, callback: &str, log: impl FnOnce(u64)) {
        let now = std::time::Instant::now();
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        if logged.len() > 10_000 {
            logged.retain(|_, (at, _)| now.duration_since(*at) < LOG_EVERY);
            if logged.len() > 10_000 {
                // Ten thousand callbacks failing within a minute: start over rather than grow.
                logged.clear();
            }
        }
        match logged.get_mut(callback) {
            Some((at, left_out)) if now.duration_since(*at) < LOG_EVERY => {
                *left_out += 1;
                self.metrics.notification_logs_left_out.inc();
            }
            Some((at, left_out)) => {
                log(std::mem::take(left_out));
                *at = now;
            }
            None => {
                log(0);
                logged.insert(callback.to_owned(), (now, 0));
            }
        }
    }

    async fn fail(&self, batch: &Batch, seqs: &[i64], error: &str, failure: Failure) {
        let attempts = batch.rows.iter().map(|r| r.attempts).max().unwrap_or(0) + 1;
        let (give_up, wait) = match failure {
            Failure::ForGood => (true, None),
            Failure::Retry { wait } => (attempts >= self.settings.max_attempts, wait),
        };
        let now = self.clock.now_ms();
        // A bot's `Retry-After` is honoured when it asks for longer than the backoff would wait.
        let next = (!give_up).then(|| {
            let backoff = next_delay(attempts, self.settings.first_retry_ms, self.settings.max_retry_ms, fastrand::f64());
            now + backoff.max(wait.unwrap_or(0))
        });
        let shown = callback::shown(&batch.callback);
        if give_up {
            self.log_failure(&batch.callback, |left_out| {
                tracing::error!(
                    callback = shown,
                    app_id = batch.app_id,
                    attempts,
                    error,
                    count = seqs.len(),
                    left_out,
                    "giving up on notifications; they stay in the outbox as failed"
                )
            });
            self.metrics.notifications_failed.add(seqs.len() as u64);
        } else {
            self.log_failure(&batch.callback, |left_out| {
                tracing::warn!(
                    callback = shown,
                    attempts,
                    error,
                    retry_in_ms = next.map(|n| n.saturating_sub(now)),
                    left_out,
                    "notification delivery failed; will retry"
                )
            });
            self.metrics.notifications_retried.add(seqs.len() as u64);
        }
        if let Err(e) = self.store.attempt_failed(seqs, next, error).await {
            tracing::error!(error = %e, "could not record a failed delivery attempt");
        }
        let mut q = self.queue();
        match next {
            Some(at) => q.retry(batch.flight, seqs, attempts, at, error),
            None => q.remove(batch.flight, seqs),
        }
        q.landed(&batch.allowances);
        self.metrics.notifications_pending.store(q.len() as i64, Ordering::Relaxed);
    }
}

impl OutboxSink for Notifier {
    fn enqueue(&self, rows: Vec<OutboxRow>) {
        Notifier::enqueue(self, rows);
    }

    fn forget_call(&self, call_id: &str) {
        Notifier::forget_call(self, call_id);
    }
}

/// The token with its signature spoilt (its first character changed): a bot must refuse it.
fn spoil_signature(token: &str) -> String {
    match token.rsplit_once('.') {
        Some((signed, signature)) if !signature.is_empty() => {
            let first = if signature.starts_with('A') { 'B' } else { 'A' };
            format!("{signed}.{first}{}", &signature[1..])
        }
        _ => format!("{token}x"),
    }
}

/// The callback policy's refusal, when that is why a POST could not be sent (the resolver's).
fn refusal(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<callback::Refused>() {
            return Some(r.0.clone());
        }
        source = s.source();
    }
    None
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::{MAX_BATCH, MAX_IN_FLIGHT_PER_BOT, Queue, next_delay, origin, retry_after_ms};
    use crate::store::{OutboxRow, OutboxStatus};

    fn row(seq: i64, call: &str, callback: &str, at: u64) -> OutboxRow {
        OutboxRow {
            seq,
            call_id: call.into(),
            app_id: "app".into(),
            tenant_id: "t".into(),
            callback: callback.into(),
            body: format!("{seq}"),
            attempts: 0,
            next_attempt_at: at,
            status: OutboxStatus::Pending,
            last_error: None,
        }
    }

    /// What `take` picked: each batch's callback and its rows' sequence numbers.
    fn take(q: &mut Queue, now: u64) -> (Vec<(String, Vec<i64>)>, Option<u64>) {
        let (batches, next) = q.take(now);
        (batches.into_iter().map(|b| (b.callback, b.rows.iter().map(|r| r.seq).collect())).collect(), next)
    }

    /// The POSTs carrying `seqs`, each with its callback, as the notifier ends them: one flight at a time.
    fn flights_of(q: &Queue, seqs: &[i64]) -> Vec<(u64, String, Vec<i64>)> {
        let mut flights: Vec<(u64, String, Vec<i64>)> = Vec::new();
        for seq in seqs {
            let flight = q.flights.get(seq).copied().unwrap_or(0);
            let callback = q.rows.get(seq).map(|r| r.callback.clone()).unwrap_or_default();
            match flights.iter_mut().find(|(f, _, _)| *f == flight) {
                Some((_, _, s)) => s.push(*seq),
                None => flights.push((flight, callback, vec![*seq])),
            }
        }
        flights
    }

    /// The POSTs carrying `seqs` ended: delivered (or given up on).
    fn done(q: &mut Queue, seqs: &[i64]) {
        for (flight, callback, seqs) in flights_of(q, seqs) {
            q.remove(flight, &seqs);
            q.landed(&super::allowances(&callback, "app"));
        }
    }

    /// The POSTs carrying `seqs` failed; tried again at `at`.
    fn failed(q: &mut Queue, seqs: &[i64], at: u64, error: &str) {
        for (flight, callback, seqs) in flights_of(q, seqs) {
            q.retry(flight, &seqs, 1, at, error);
            q.landed(&super::allowances(&callback, "app"));
        }
    }

    #[test]
    fn one_bot_has_at_most_its_share_of_posts_out() {
        let mut q = Queue::default();
        // 20 calls of a bot that is slow (each its own callback path), and one of another bot.
        for i in 0..20 {
            q.push(row(i, &format!("slow{i}"), &format!("https://slow.example:8443/cb/{i}"), 0));
        }
        q.push(row(100, "fast", "https://fast.example/cb", 0));
        let (batches, _) = take(&mut q, 0);
        let slow = batches.iter().filter(|(cb, _)| cb.starts_with("https://slow.example:8443/")).count();
        assert_eq!(slow, MAX_IN_FLIGHT_PER_BOT);
        assert!(batches.iter().any(|(cb, _)| cb == "https://fast.example/cb"), "the other bot is not held up");
        // Nothing more for the slow bot until one of its POSTs ends; then one more.
        assert_eq!(take(&mut q, 0).0, vec![]);
        done(&mut q, &[0]);
        let (batches, _) = take(&mut q, 0);
        assert_eq!(batches, vec![("https://slow.example:8443/cb/8".to_owned(), vec![8])]);
        // A failed POST frees its slot too.
        failed(&mut q, &[1], 50, "500");
        assert_eq!(take(&mut q, 0).0, vec![("https://slow.example:8443/cb/9".to_owned(), vec![9])]);
    }

    #[test]
    fn one_app_has_at_most_its_share_whatever_its_host_names() {
        let mut q = Queue::default();
        for i in 0..40 {
            q.push(row(i, &format!("c{i}"), &format!("https://h{i}.dead.example/cb"), 0));
        }
        let (batches, _) = take(&mut q, 0);
        assert_eq!(batches.len(), super::MAX_IN_FLIGHT_PER_APP);
    }

    #[test]
    fn origins_and_retry_after() {
        assert_eq!(origin("https://bot.example:8443/api/calls?x=1"), "https://bot.example:8443");
        assert_eq!(origin("http://127.0.0.1:3978"), "http://127.0.0.1:3978");
        assert_eq!(origin("https://bot.example?x"), "https://bot.example:443");
        // Spellings of one host are one bot.
        for same in ["https://DEAD.example/a", "https://dead.example:443/b", "https://dead.example./c", "https://dead.example"] {
            assert_eq!(origin(same), "https://dead.example:443", "{same}");
        }
        assert_ne!(origin("https://a.dead.example/"), origin("https://dead.example/"));
        assert_eq!(retry_after_ms("30", 0), Some(30_000));
        assert_eq!(retry_after_ms(" 0 ", 0), Some(0));
        assert_eq!(retry_after_ms("99999999", 0), Some(3_600_000), "capped at an hour");
        // 1994-11-06T08:49:37Z, ten seconds after now.
        assert_eq!(retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_767_000), Some(10_000));
        assert_eq!(retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_787_000), Some(0), "a date past is now");
        assert_eq!(retry_after_ms("soon", 0), None);
    }

    fn sent(batches: &[(&str, &[i64])]) -> Vec<(String, Vec<i64>)> {
        batches.iter().map(|(c, s)| ((*c).to_owned(), s.to_vec())).collect()
    }

    #[test]
    fn a_call_sends_in_order_with_one_post_in_flight() {
        let mut q = Queue::default();
        for r in [row(1, "a", "cb", 0), row(2, "b", "cb", 0), row(3, "a", "cb", 0)] {
            q.push(r);
        }
        assert_eq!(take(&mut q, 10), (sent(&[("cb", &[1, 2, 3])]), None));
        // Rows committed while a call's POST is out wait for it.
        q.push(row(4, "a", "cb", 10));
        q.push(row(5, "c", "cb", 10));
        assert_eq!(take(&mut q, 10), (sent(&[("cb", &[5])]), None));
        done(&mut q, &[1, 2, 3]);
        assert_eq!(take(&mut q, 10), (sent(&[("cb", &[4])]), None));
        done(&mut q, &[4, 5]);
        assert_eq!((q.len(), q.calls.len(), q.heads.len()), (0, 0, 0));
    }

    #[test]
    fn a_failed_post_holds_its_calls_later_rows_until_the_retry() {
        let mut q = Queue::default();
        q.push(row(1, "a", "cb", 0));
        q.push(row(2, "b", "cb", 0));
        assert_eq!(take(&mut q, 0).0, sent(&[("cb", &[1, 2])]));
        q.push(row(3, "a", "cb", 1));
        failed(&mut q, &[1, 2], 5_000, "the callback answered 503");
        assert_eq!(take(&mut q, 1_000), (vec![], Some(5_000)));
        assert_eq!(q.rows[&1].last_error.as_deref(), Some("the callback answered 503"));
        assert_eq!(take(&mut q, 5_000).0, sent(&[("cb", &[1, 2, 3])]), "the retry carries the row queued behind it");
    }

    #[test]
    fn a_calls_rows_for_another_callback_wait_for_the_earlier_ones() {
        let mut q = Queue::default();
        q.push(row(1, "a", "one", 0));
        q.push(row(2, "a", "two", 0));
        q.push(row(3, "b", "two", 0));
        assert_eq!(take(&mut q, 0).0, sent(&[("one", &[1]), ("two", &[3])]));
        done(&mut q, &[1, 3]);
        assert_eq!(take(&mut q, 0).0, sent(&[("two", &[2])]));
    }

    #[test]
    fn a_full_batch_leaves_the_rest_for_the_next_post() {
        let mut q = Queue::default();
        let n = MAX_BATCH as i64 + 20;
        for seq in 1..=n {
            q.push(row(seq, &format!("call-{seq}"), "cb", 0));
        }
        let (first, _) = take(&mut q, 0);
        assert_eq!(first[0].1, (1..=MAX_BATCH as i64).collect::<Vec<_>>());
        let (second, _) = take(&mut q, 0);
        assert_eq!(second[0].1, (MAX_BATCH as i64 + 1..=n).collect::<Vec<_>>());
    }

    #[test]
    fn rows_read_back_late_and_forgotten_calls_keep_the_queue_whole() {
        let mut q = Queue::default();
        q.push(row(5, "a", "cb", 0));
        // Recovery reads an earlier row of the call, and one already queued: order kept, no duplicate.
        q.push(row(2, "a", "cb", 0));
        q.push(row(5, "a", "cb", 0));
        assert_eq!(take(&mut q, 0).0, sent(&[("cb", &[2, 5])]));
        // The call moves to another node while its POST is out; the POST's end finds nothing.
        let old = q.flights[&2];
        q.forget_call("a");
        q.remove(old, &[2, 5]);
        assert_eq!((q.len(), q.calls.len(), q.heads.len(), q.flights.len()), (0, 0, 0, 0));
    }

    #[test]
    fn an_old_posts_end_does_not_touch_the_rows_a_newer_post_carries() {
        let mut q = Queue::default();
        q.push(row(1, "a", "cb", 0));
        q.push(row(2, "a", "cb", 0));
        assert_eq!(take(&mut q, 0).0, sent(&[("cb", &[1, 2])]));
        let old = q.flights[&1];
        // Forgotten while that POST is out, then read back from the store and sent again.
        q.forget_call("a");
        q.push(row(1, "a", "cb", 0));
        q.push(row(2, "a", "cb", 0));
        assert_eq!(take(&mut q, 0).0, sent(&[("cb", &[1, 2])]));
        // The old POST fails: the new one is still out, so nothing of the call may go.
        q.retry(old, &[1, 2], 1, 0, "the callback could not be reached");
        q.push(row(3, "a", "cb", 0));
        assert_eq!(take(&mut q, 0).0, sent(&[]));
        done(&mut q, &[1, 2]);
        assert_eq!(take(&mut q, 0).0, sent(&[("cb", &[3])]));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_bounded_jitter() {
        let plain: Vec<u64> = (1..=6).map(|a| next_delay(a, 1000, 10_000, 0.5)).collect();
        assert_eq!(plain, [1000, 2000, 4000, 8000, 10_000, 10_000]);
        assert_eq!(next_delay(1, 1000, 10_000, 0.0), 800);
        assert_eq!(next_delay(1, 1000, 10_000, 1.0), 1200);
        assert_eq!(next_delay(200, 1000, 10_000, 0.5), 10_000);
    }
}
