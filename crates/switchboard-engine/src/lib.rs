//! Switchboard's engine and the seams around it.
//!
//! - [`engine`]: the only place where calls change. Input → pure core → one store commit → effects.
//! - [`network`]: the trait a telephony backend implements (the simulator, SIP).
//! - [`store`]: the trait a durable store implements (SQLite, PostgreSQL); [`memory`] is one in memory,
//!   for engine tests and benchmarks; [`record`] is how a call is written down, versioned.
//! - [`cluster`]: several nodes on one shared store: call ownership, leases, failover.
//! - [`recordings`]: finished recordings, kept for the bot to fetch.
//! - [`clock`]: the one clock everything reads, and the one timer queue; real or virtual time.
//! - [`directory`]: tenants, applications and their instances, users, PSTN numbers.
//! - [`history`]: each call's story (requests, states, notifications and deliveries, network).
//! - [`metrics`]: the counters `/metrics` shows.
//!
//! Nothing here speaks HTTP, renders Graph JSON, opens a database file or signs anything: those are
//! adapters around the engine ([`engine::Render`] and [`engine::OutboxSink`] are their seams).

pub mod clock;
pub mod cluster;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod directory;
pub mod engine;
pub mod history;
pub mod memory;
pub mod metrics;
pub mod network;
pub mod record;
pub mod recordings;
pub mod store;

pub use clock::Clock;
pub use engine::{Engine, EngineError};
