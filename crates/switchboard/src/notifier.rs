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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};

use switchboard_engine::Clock;
use switchboard_engine::directory::Directory;
use switchboard_engine::engine::OutboxSink;

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

/// The delay before attempt `attempt + 1`, after `attempt` failures (1-based): `first · 2^(attempt-1)`,
/// capped at `max`, then jittered by ±20 % so that many bots failing together don't retry in lockstep.
pub fn next_delay(attempt: u32, first_ms: u64, max_ms: u64, jitter: f64) -> u64 {
    let exp = attempt.saturating_sub(1).min(32);
    let base = first_ms.saturating_mul(1u64 << exp).min(max_ms);
    let factor = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
    (base as f64 * factor) as u64
}

#[derive(Default)]
struct Queue {
    /// Pending rows by sequence number (the order they were committed in).
    pending: BTreeMap<i64, OutboxRow>,
    /// Rows currently being POSTed.
    in_flight: HashSet<i64>,
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
}

/// What a notifier is built from.
pub struct Parts {
    pub store: Arc<dyn Store>,
    pub key: Arc<SigningKey>,
    pub settings: NotificationSettings,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    pub directory: Arc<Directory>,
}

/// A group of rows for one POST.
struct Batch {
    callback: String,
    app_id: String,
    tenant_id: String,
    rows: Vec<OutboxRow>,
}

impl Notifier {
    pub fn new(parts: Parts) -> Result<Arc<Self>, reqwest::Error> {
        let Parts { store, key, settings, metrics, clock, directory } = parts;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.timeout_ms))
            .connect_timeout(Duration::from_millis(settings.timeout_ms.min(5_000)))
            .redirect(reqwest::redirect::Policy::none())
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
        }))
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
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
            q.pending.insert(r.seq, r);
        }
        self.metrics.notifications_pending.store(q.pending.len() as i64, Ordering::Relaxed);
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
                let busy = q.in_flight.iter().any(|s| q.pending.get(s).is_some_and(|r| r.call_id == call_id));
                if !busy {
                    q.pending.retain(|_, r| r.call_id != call_id);
                    self.metrics.notifications_pending.store(q.pending.len() as i64, Ordering::Relaxed);
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
        q.pending.clear();
        self.metrics.notifications_pending.store(0, Ordering::Relaxed);
    }

    /// Drops the queued rows of one call that another node owns now (it sends them).
    pub fn forget_call(&self, call_id: &str) {
        let mut q = self.queue();
        q.pending.retain(|_, r| r.call_id != call_id);
        self.metrics.notifications_pending.store(q.pending.len() as i64, Ordering::Relaxed);
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
            q.pending.entry(r.seq).or_insert(r);
        }
        drop(q);
        self.wake.notify_one();
        Ok(())
    }

    /// Picks what can be sent now; returns the batches and when to look again.
    fn take_due(&self, now: u64) -> (Vec<Batch>, Option<u64>) {
        if self.fenced.load(Ordering::SeqCst) {
            return (Vec::new(), Some(now + 200));
        }
        let mut q = self.queue();
        let mut blocked: HashSet<String> = HashSet::new();
        // call id -> index of the batch its rows joined this round
        let mut joined: HashMap<String, usize> = HashMap::new();
        let mut batches: Vec<Batch> = Vec::new();
        let mut by_key: HashMap<(String, String, String), usize> = HashMap::new();
        let mut next_wake: Option<u64> = None;
        for row in q.pending.values() {
            if blocked.contains(&row.call_id) {
                continue;
            }
            if q.in_flight.contains(&row.seq) {
                blocked.insert(row.call_id.clone());
                continue;
            }
            if row.next_attempt_at > now {
                next_wake = Some(next_wake.map_or(row.next_attempt_at, |w| w.min(row.next_attempt_at)));
                blocked.insert(row.call_id.clone());
                continue;
            }
            let key = (row.callback.clone(), row.app_id.clone(), row.tenant_id.clone());
            let idx = match (joined.get(&row.call_id), by_key.get(&key)) {
                // An earlier row of this call went to another batch: wait for it.
                (Some(j), Some(k)) if j != k => {
                    blocked.insert(row.call_id.clone());
                    continue;
                }
                (Some(_), None) => {
                    blocked.insert(row.call_id.clone());
                    continue;
                }
                (_, Some(k)) => *k,
                (None, None) => {
                    batches.push(Batch { callback: key.0.clone(), app_id: key.1.clone(), tenant_id: key.2.clone(), rows: Vec::new() });
                    by_key.insert(key, batches.len() - 1);
                    batches.len() - 1
                }
            };
            if batches[idx].rows.len() >= MAX_BATCH {
                // The rest goes in a later POST; the full one's completion wakes the loop.
                blocked.insert(row.call_id.clone());
                continue;
            }
            joined.insert(row.call_id.clone(), idx);
            batches[idx].rows.push(row.clone());
        }
        for b in &batches {
            for r in &b.rows {
                q.in_flight.insert(r.seq);
            }
        }
        (batches, next_wake)
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
        let body =
            render::notifications_envelope(batch.rows.iter().map(|r| r.body.as_str()), Format::of(self.directory.app(&batch.app_id)));
        self.metrics.notification_posts.inc();
        let outcome = match self.token(&batch.app_id, &batch.tenant_id) {
            Err(e) => Err(format!("could not sign the notification token: {e}")),
            Ok(token) => {
                match self
                    .client
                    .post(&batch.callback)
                    .bearer_auth(token)
                    .header(NOTIFICATION_IDS, ids(&seqs))
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .send()
                    .await
                {
                    Ok(resp) if resp.status().is_success() => Ok(()),
                    Ok(resp) => Err(format!("the callback answered {}", resp.status())),
                    Err(e) => Err(format!("the callback could not be reached: {}", error_chain(&e))),
                }
            }
        };
        match outcome {
            Ok(()) => {
                if let Err(e) = self.store.delivered(&seqs).await {
                    // The rows stay in the database and will be sent again after a restart: at least once.
                    tracing::error!(error = %e, "could not record delivered notifications");
                }
                self.metrics.notifications_delivered.add(seqs.len() as u64);
                let mut q = self.queue();
                for s in &seqs {
                    q.in_flight.remove(s);
                    q.pending.remove(s);
                }
                self.metrics.notifications_pending.store(q.pending.len() as i64, Ordering::Relaxed);
            }
            Err(error) => self.failed(&batch, &seqs, &error).await,
        }
    }

    async fn failed(&self, batch: &Batch, seqs: &[i64], error: &str) {
        let attempts = batch.rows.iter().map(|r| r.attempts).max().unwrap_or(0) + 1;
        let give_up = attempts >= self.settings.max_attempts;
        let now = self.clock.now_ms();
        let next =
            (!give_up).then(|| now + next_delay(attempts, self.settings.first_retry_ms, self.settings.max_retry_ms, fastrand::f64()));
        if give_up {
            tracing::error!(
                callback = batch.callback,
                app_id = batch.app_id,
                attempts,
                error,
                count = seqs.len(),
                "giving up on notifications; they stay in the outbox as failed"
            );
            self.metrics.notifications_failed.add(seqs.len() as u64);
        } else {
            tracing::warn!(
                callback = batch.callback,
                attempts,
                error,
                retry_in_ms = next.map(|n| n.saturating_sub(now)),
                "notification delivery failed; will retry"
            );
            self.metrics.notifications_retried.add(seqs.len() as u64);
        }
        if let Err(e) = self.store.attempt_failed(seqs, next, error).await {
            tracing::error!(error = %e, "could not record a failed delivery attempt");
        }
        let mut q = self.queue();
        for s in seqs {
            q.in_flight.remove(s);
            match next {
                Some(at) => {
                    if let Some(r) = q.pending.get_mut(s) {
                        r.attempts = attempts;
                        r.next_attempt_at = at;
                        r.last_error = Some(error.to_owned());
                    }
                }
                None => {
                    q.pending.remove(s);
                }
            }
        }
        self.metrics.notifications_pending.store(q.pending.len() as i64, Ordering::Relaxed);
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
    use super::next_delay;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_bounded_jitter() {
        let plain: Vec<u64> = (1..=6).map(|a| next_delay(a, 1000, 10_000, 0.5)).collect();
        assert_eq!(plain, [1000, 2000, 4000, 8000, 10_000, 10_000]);
        assert_eq!(next_delay(1, 1000, 10_000, 0.0), 800);
        assert_eq!(next_delay(1, 1000, 10_000, 1.0), 1200);
        assert_eq!(next_delay(200, 1000, 10_000, 0.5), 10_000);
    }
}
