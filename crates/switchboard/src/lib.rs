//! Switchboard: the Microsoft Graph calling API on a simulated telephony network.
//!
//! Code map (see docs/ARCHITECTURE.md for the whole picture):
//! - [`api`]: HTTP: Graph routes, identity endpoints, sim control API, ops endpoints.
//! - [`graph`]: Graph JSON in ([`graph::parse`]) and out ([`graph::render`]).
//! - [`engine`]: applies inputs to calls through the pure core, commits, then runs effects.
//! - [`store`]: SQLite persistence of calls and the notification outbox.
//! - [`notifier`]: delivers the outbox to bots, signed, ordered, batched, retried.
//! - [`network`]: the trait a telephony backend implements; [`sim`] is the simulated one.
//! - [`identity`]: signing keys and JWTs; [`config`]: the directory and settings.
//! - [`server`]: assembles the parts and runs them.

pub mod api;
pub mod config;
pub mod engine;
pub mod graph;
pub mod identity;
pub mod metrics;
pub mod network;
pub mod notifier;
pub mod server;
pub mod sim;
pub mod store;
