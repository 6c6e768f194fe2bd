#![allow(clippy::unwrap_used)]
//! The one integration-test binary: every test talks to a real `switchboard` process over loopback.

mod harness;

mod baresip;
mod clock;
mod cluster;
mod crash;
mod errors;
mod faults;
mod group;
mod hardening;
mod identity;
mod ivr;
mod lifecycle;
mod linphone;
mod load;
mod notifier;
mod ops;
mod outages;
mod outgoing;
mod postgres;
mod recovery;
mod seeds;
mod sim_api;
mod sip;
mod transfer;
mod transfer_2018;
