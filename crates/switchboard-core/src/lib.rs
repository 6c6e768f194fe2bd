//! The pure core of Switchboard.
//!
//! Everything here is a function of (state, input, now) returning (new state, effects). There is no
//! I/O, no clock and no async: the engine in the `switchboard` crate feeds inputs in, persists the new
//! state together with the notifications it owes, and then carries out the effects. quinn-proto is
//! the model.
//!
//! - [`party`]: who takes part in calls (users, phone numbers, applications, application instances).
//! - [`call`]: the call state machine of the Graph `call` resource.
//! - [`media`]: prompts, recordings, DTMF tones and mute (the IVR side of a call).
//! - [`result`]: the `resultInfo` codes that calls end with.

pub mod call;
pub mod media;
pub mod party;
pub mod result;

/// Milliseconds since the Unix epoch. The core never reads a clock; callers pass `now` in.
pub type Millis = u64;
