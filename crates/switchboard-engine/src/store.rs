//! Durable state: live calls and the notification outbox, written in one transaction.
//!
//! [`Store`] is the boundary a store crate implements (`switchboard-sqlite` today, PostgreSQL next;
//! [`crate::memory::MemoryStore`] for engine tests and benchmarks). A call's new state and the
//! notifications its transition owes are committed together, so a crash can never separate them
//! (invariants 1 and 3 in docs/ARCHITECTURE.md). Every implementation passes the same suite,
//! [`crate::conformance`]. Calls are written down as [`crate::record`] says, never as the core's types.

use switchboard_core::call::Call;

type Source = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[source] Source),
    #[error("stored call {id} is unreadable: {source}")]
    Corrupt { id: String, source: crate::record::RecordError },
    #[error("call {id} changed concurrently (expected version {expected})")]
    Conflict { id: String, expected: u64 },
    /// Another node owns the call now (it adopted it, or it was handed over): this node must forget it.
    #[error("call {id} belongs to another node now")]
    NotOwner { id: String },
    #[error("a call with id {id} already exists")]
    Exists { id: String },
    #[error("cannot open the database at {path}: {source}")]
    Open { path: String, source: Source },
}

impl StoreError {
    pub fn database(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Database(Box::new(e))
    }
}

/// A notification waiting in the outbox: one rendered notification for one callback.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxRow {
    pub seq: i64,
    pub call_id: String,
    pub app_id: String,
    pub tenant_id: String,
    pub callback: String,
    /// The notification as the bot receives it (JSON).
    pub body: String,
    pub attempts: u32,
    pub next_attempt_at: u64,
    pub status: OutboxStatus,
    pub last_error: Option<String>,
}

impl OutboxRow {
    /// A row just committed for `call`: pending, due `now`, never tried.
    pub fn owed(seq: i64, call: &Call, notification: &NewNotification, now: u64) -> Self {
        OutboxRow {
            seq,
            call_id: call.id.clone(),
            app_id: call.app_id.clone(),
            tenant_id: call.tenant_id.clone(),
            callback: notification.callback.clone(),
            body: notification.body.clone(),
            attempts: 0,
            next_attempt_at: now,
            status: OutboxStatus::Pending,
            last_error: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboxStatus {
    Pending,
    /// Gave up after the last retry; kept so that it can be seen and retried by hand.
    Failed,
}

impl OutboxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxStatus::Pending => "pending",
            OutboxStatus::Failed => "failed",
        }
    }
}

/// A notification to append to the outbox in the same transaction as the call's new state.
#[derive(Clone, Debug, PartialEq)]
pub struct NewNotification {
    pub callback: String,
    pub body: String,
}

/// A call as stored, with its optimistic-concurrency version.
#[derive(Clone, Debug)]
pub struct StoredCall {
    pub call: Call,
    pub version: u64,
}

#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Persists the call's new state (deleting it once terminated) together with the notifications the
    /// transition owes. `expected_version` is `None` for a new call (refused with
    /// [`StoreError::Exists`] if the id is taken); otherwise the write happens only if the stored
    /// version is still `expected_version` ([`StoreError::Conflict`] if not). Returns the new version
    /// and the outbox rows as written, in order.
    async fn commit(
        &self,
        call: &Call,
        expected_version: Option<u64>,
        notifications: &[NewNotification],
        now: u64,
    ) -> Result<(u64, Vec<OutboxRow>), StoreError>;
    /// Every call that has not terminated.
    async fn live_calls(&self) -> Result<Vec<StoredCall>, StoreError>;
    /// Outbox rows in `status`, in commit order.
    async fn outbox(&self, status: OutboxStatus) -> Result<Vec<OutboxRow>, StoreError>;
    /// The bot acknowledged these rows: they leave the outbox.
    async fn delivered(&self, seqs: &[i64]) -> Result<(), StoreError>;
    /// Records a failed attempt; `next_attempt_at` None marks the rows as failed for good.
    async fn attempt_failed(&self, seqs: &[i64], next_attempt_at: Option<u64>, error: &str) -> Result<(), StoreError>;
    /// Puts failed rows back in the queue, due `now`, attempts reset. Returns how many.
    async fn requeue_failed(&self, now: u64) -> Result<usize, StoreError>;
    /// Whether the store can take work now (`/readyz`): a database server that is down is not.
    async fn ready(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
