//! Several nodes sharing one store: who owns which call, and what happens when a node dies.
//!
//! - **Ownership.** Every live call belongs to one node. Its engine slot, its timers, its network legs
//!   and its outbox rows live there; every change to it is committed by that node, and the store
//!   refuses a commit from anyone else ([`crate::store::StoreError::NotOwner`]).
//! - **Leases.** A node holds one lease (its row in the store, with an expiry in the database's own
//!   time) that covers all its calls; it renews it every [`RENEW_EVERY_MS`]. One renewal per node
//!   instead of one per call keeps the database's write load independent of the number of calls.
//! - **Failover.** A node whose lease has expired is dead. Another node takes its row with
//!   `FOR UPDATE SKIP LOCKED` and adopts everything it owned, calls and outbox rows together, in one
//!   transaction, so that each dead node is adopted exactly once and a call's notifications stay with
//!   the call (per-call order).
//! - **Fencing.** A node that finds its lease gone (it was paused past the expiry, say) forgets its
//!   calls at once: someone else has them now.
//!
//! [`Membership`] is what a shared store implements (`switchboard-postgres`); a store only one process
//! uses (SQLite, memory) needs none of it.

use crate::store::{OutboxRow, StoreError, StoredCall};

/// A lease lasts this long after its last renewal (database time).
pub const LEASE_MS: u64 = 5_000;
/// The owner renews its lease this often, and looks for dead nodes as often.
pub const RENEW_EVERY_MS: u64 = 1_000;

/// Who owns a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub node: String,
    /// The application the call belongs to.
    pub app_id: String,
    /// Where the other nodes reach it (its listen address).
    pub address: String,
    /// Whether its lease is still running.
    pub alive: bool,
}

/// What a node took over: calls with their versions, and their outbox rows (pending and failed).
#[derive(Debug, Default)]
pub struct Adopted {
    pub calls: Vec<StoredCall>,
    pub outbox: Vec<OutboxRow>,
    /// The nodes whose leases were taken over.
    pub nodes: Vec<String>,
}

/// A node as the membership table shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub id: String,
    pub address: String,
    pub alive: bool,
}

#[async_trait::async_trait]
pub trait Membership: Send + Sync + 'static {
    /// This node's name.
    fn node_id(&self) -> &str;
    /// Takes (or takes back, after a restart) this node's lease, reachable at `address`.
    async fn join(&self, address: &str) -> Result<(), StoreError>;
    /// Renews the lease. `false`: it had expired and another node took this node's calls.
    async fn renew(&self) -> Result<bool, StoreError>;
    /// Lets the lease go at once (graceful shutdown), so that the others adopt what is left now.
    async fn leave(&self) -> Result<(), StoreError>;
    /// Every node with a row: alive ones and dead ones not yet adopted.
    async fn nodes(&self) -> Result<Vec<Node>, StoreError>;
    /// The owner of a live call; `None` if there is no such call.
    async fn owner(&self, call_id: &str) -> Result<Option<Owner>, StoreError>;
    /// Adopts every dead node, each whole, skipping those another node is adopting right now.
    async fn adopt_dead(&self) -> Result<Adopted, StoreError>;
    /// Adopts one call (and its outbox rows) from `from`, if `from` still owns it and its lease has
    /// expired. Used when a request for the call arrives before the dead node was adopted whole.
    async fn adopt_call(&self, call_id: &str, from: &str) -> Result<Option<Adopted>, StoreError>;
    /// Gives one of this node's calls (and its outbox rows) to a live node `to`. `false` if this node
    /// did not own it.
    async fn hand_over(&self, call_id: &str, to: &str) -> Result<bool, StoreError>;
    /// Every live call, whichever node owns it (listing a bot's calls).
    async fn all_calls(&self) -> Result<Vec<StoredCall>, StoreError>;
    /// Reads a call this node owns with its owed notifications (after it was handed over here).
    async fn owned_call(&self, call_id: &str) -> Result<Option<Adopted>, StoreError>;
    /// A value every node shares (the signing key, the key nodes use among themselves): the stored
    /// one, or `make()`'s, stored, if none was stored yet. Two nodes starting at once agree.
    async fn shared(&self, name: &str, make: &(dyn Fn() -> String + Send + Sync)) -> Result<String, StoreError>;
}
