//! `resultInfo` codes, as `shared/research/graph-api.md` §8 lists them.
//!
//! Graph publishes no code for some outcomes an emulator must report (busy, declined); for those we use
//! the SIP status as `code` with subcode 0, and say so in the README.

use serde::{Deserialize, Serialize};

/// Graph's `resultInfo`: why a call ended or an operation failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultInfo {
    pub code: i32,
    pub subcode: i32,
    pub message: String,
}

impl ResultInfo {
    fn new(code: i32, subcode: i32, message: &str) -> Self {
        ResultInfo { code, subcode, message: message.to_owned() }
    }

    /// The bot hung up (DELETE): 200/7000.
    pub fn ended_by_bot() -> Self {
        Self::new(200, 7000, "The call was ended by the application.")
    }
    /// The other participant of a peer-to-peer call hung up: 200/4521.
    pub fn remote_hang_up() -> Self {
        Self::new(200, 4521, "The other participant ended the call.")
    }
    /// A PSTN party hung up: 200/540000.
    pub fn pstn_hang_up() -> Self {
        Self::new(200, 540000, "The call was ended by the PSTN user.")
    }
    /// The callee was busy (SIP 486).
    pub fn busy() -> Self {
        Self::new(486, 0, "The callee is busy.")
    }
    /// The callee declined (SIP 603).
    pub fn declined() -> Self {
        Self::new(603, 0, "The callee declined the call.")
    }
    /// Nobody answered before the ring timeout: 408/10057.
    pub fn no_answer() -> Self {
        Self::new(408, 10057, "The callee did not answer before the ring timeout.")
    }
    /// The callee could not be reached at all: 480/10076.
    pub fn unreachable() -> Self {
        Self::new(480, 10076, "The callee could not be reached.")
    }
    /// The bot did not answer, reject or redirect an incoming call in time: 408/1106.
    pub fn not_answered_in_time() -> Self {
        Self::new(408, 1106, "The application did not answer the incoming call in time.")
    }
    /// No keepAlive within 45 minutes: 408/8537.
    pub fn keep_alive_timeout() -> Self {
        Self::new(408, 8537, "The call was ended because no keepAlive was received in time.")
    }
    /// The bot rejected the incoming call.
    pub fn rejected(reason: &str) -> Self {
        match reason {
            "busy" => Self::new(486, 0, "The application rejected the call as busy."),
            "forbidden" => Self::new(403, 0, "The application rejected the call as forbidden."),
            _ => Self::new(603, 0, "The application rejected the call."),
        }
    }
    /// A blind transfer completed: 0/7015, exactly as Graph's transfer page shows it.
    pub fn transfer_completed() -> Self {
        Self::new(0, 7015, "GracefulTransferCompleted")
    }
    /// A transfer failed: 500/7000 (blind) or 500/7700 (consultative); the call stays established.
    pub fn transfer_failed(kind: &str, failure: crate::call::Failure) -> Self {
        use crate::call::Failure;
        let why = match failure {
            Failure::Busy => "the transfer target is busy",
            Failure::Declined => "the transfer target declined",
            Failure::NoAnswer => "the transfer target did not answer",
            Failure::Unreachable => "the transfer target could not be reached",
            Failure::TransfereeLeft => "the transferee left the call",
        };
        let subcode = if kind == "consultative" { 7700 } else { 7000 };
        ResultInfo { code: 500, subcode, message: format!("The {kind} transfer failed: {why}. DiagCode: 500#{subcode}.@") }
    }
    /// The consultation call whose remote leg a consultative transfer took over.
    pub fn replaced(by_call_id: &str) -> Self {
        ResultInfo {
            code: 200,
            subcode: 7015,
            message: format!("The call was handed over to call {by_call_id} by a consultative transfer."),
        }
    }
    /// Nobody the bot invited to its group call joined: 200/5013.
    pub fn nobody_joined() -> Self {
        Self::new(200, 5013, "Nobody else joined the group call.")
    }
    /// Every participant of the group call but the bot left: 200/5002.
    pub fn all_left() -> Self {
        Self::new(200, 5002, "All other participants left the group call.")
    }
    /// A media operation (prompt, recording) that ended as asked: code 200.
    pub fn media_completed(subcode: i32, message: &str) -> Self {
        Self::new(200, subcode, message)
    }
    /// A media operation cancelled by `cancelMediaProcessing`: 400/8508, as Graph reports it.
    pub fn media_cancelled() -> Self {
        Self::new(400, 8508, "Action failed, the operation was cancelled.")
    }
    /// A media operation the network could not carry out: 500/9000 (Graph publishes no code).
    pub fn media_failed(why: &str) -> Self {
        ResultInfo { code: 500, subcode: 9000, message: format!("Action failed: {why}.") }
    }
    /// The bot redirected the incoming call elsewhere.
    pub fn redirected() -> Self {
        Self::new(200, 0, "The call was redirected by the application.")
    }
}
