//! Switchboard: the Microsoft Graph calling API on a simulated telephony network and SIP.
//!
//! This crate is the HTTP/Graph adapter and the binary; the engine and its seams live in
//! `switchboard-engine`, the simulator in `switchboard-sim`, SIP in `switchboard-sip`, the stores in
//! `switchboard-sqlite` and `switchboard-postgres`.
//! Code map (see docs/ARCHITECTURE.md for the whole picture):
//! - [`api`]: HTTP: Graph routes, identity endpoints, sim control API, ops endpoints.
//! - [`graph`]: Graph JSON in ([`graph::parse`]) and out ([`graph::render`]); [`graph::Format`] decides
//!   which dialect an app gets.
//! - [`notifier`]: delivers the outbox to bots, signed, ordered, batched, retried.
//! - [`identity`]: signing keys and JWTs; [`config`]: the configuration file and the demo directory.
//! - [`cluster`]: several nodes on one PostgreSQL database: leases, forwarding, failover.
//! - [`networks`]: routes each call's network commands to the sim or SIP.
//! - [`callback`]: where notifications may go (the callback policy, checked again after DNS).
//! - [`front`]: the HTTP front door: connection cap, head, body and idle timeouts.
//! - [`server`]: assembles the parts and runs them.

pub mod api;
pub mod callback;
pub mod cluster;
pub mod config;
pub mod front;
pub mod fuzz;
pub mod graph;
pub mod identity;
pub mod limits;
pub mod load;
pub mod networks;
pub mod notifier;
pub mod prompts;
pub mod server;

pub use switchboard_engine::{engine, metrics, network, store};
pub use switchboard_sim as sim;
