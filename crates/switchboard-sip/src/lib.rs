//! Switchboard's SIP side (issue 11), beside the simulator behind the engine's `Network` seam.
//!
//! - [`message`]: parse and print SIP messages; untrusted bytes in, a message or a named problem out.
//! - [`header`]: typed headers, one file per header (`Via`, `CSeq`, `From`/`To`/`Contact`, Digest).
//! - [`uri`]: SIP URIs.
//! - [`digest`]: Digest authentication (MD5) and stateless nonces.
//! - [`call`]: one dialog, either role (from a phone, or to a phone or trunk), from INVITE to BYE, with
//!   its retransmissions, re-INVITEs (hold, resume) and REFERs.
//! - [`transaction`]: server transactions: retransmissions answered again, for Timer J.
//! - [`registrar`]: who is registered where.
//! - [`sdp`]: the SDP offer/answer a phone needs (PCMU/PCMA, telephone-event, hold).
//! - [`rtp`]: comfort audio, G.711 RTP packets.
//! - [`wav`]: prompts read from WAV files.
//! - [`endpoint`]: the sans-IO endpoint: bytes and the time in, a response out.
//! - [`transport`]: UDP, TCP and TLS around it on the engine's clock, and the media socket.
//! - [`network`]: SIP as the engine's network backend: calls and transfers as Graph sees them.

pub mod call;
pub mod digest;
pub mod endpoint;
pub mod header;
pub mod message;
pub mod network;
pub mod registrar;
pub mod rtp;
pub mod sdp;
pub mod transaction;
pub mod transport;
pub mod uri;
pub mod wav;

pub use endpoint::{Endpoint, Event, Settings, Transport};
pub use registrar::Account;
