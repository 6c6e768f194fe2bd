//! Graph's error envelope, with `request-id` and `client-request-id` filled in by the middleware.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use switchboard_core::call::Refusal;

use crate::engine::EngineError;
use crate::graph::parse::BodyError;
use crate::store::StoreError;

/// A refused Graph request. Handlers return it; [`super::request_ids`] renders the envelope, because
/// only the middleware knows the request's ids.
#[derive(Debug, Clone)]
pub struct GraphError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    /// The methods the resource supports, for the `Allow` header of a 405 (RFC 9110).
    pub allow: Option<String>,
    /// Seconds for the `Retry-After` header of a 429.
    pub retry_after: Option<u64>,
}

impl GraphError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        GraphError { status, code: code.to_owned(), message: message.into(), allow: None, retry_after: None }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Forbidden", message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", message)
    }
    /// Graph's calls service: `8522` "Call not found."
    pub fn call_not_found(id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "8522", format!("Call not found: '{id}' is not a live call of this application."))
    }
    pub fn unknown_segment(segment: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "UnknownSegment", format!("Resource not found for the segment '{segment}'."))
    }
    /// A route the table documents but nothing serves: a defect of ours, never the client's.
    pub fn not_served(operation: &str) -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, "NotServed", format!("Operation '{operation}' is documented but not served."))
    }
    /// A 405 naming the methods `path` supports (`allow`, e.g. "GET, DELETE").
    pub fn method_not_allowed(method: &str, path: &str, allow: &str) -> Self {
        let message = match allow {
            "" => format!("The method {method} is not allowed on {path}."),
            _ => format!("The method {method} is not allowed on {path}; use {allow}."),
        };
        GraphError { allow: Some(allow.to_owned()), ..Self::new(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", message) }
    }
}

impl From<BodyError> for GraphError {
    fn from(e: BodyError) -> Self {
        GraphError::bad_request(format!("Invalid request body: {}: {}", e.field, e.problem))
    }
}

impl From<EngineError> for GraphError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NotFound(id) => GraphError::call_not_found(&id),
            // A body that fits a peer-to-peer call but not this group call: the same request succeeds on
            // another call, so a conflict (409), not a bad body.
            EngineError::Refused(r @ Refusal::TransfereeRequired) => GraphError::new(StatusCode::CONFLICT, "Conflict", format!("{r}.")),
            // A request that does not fit the call as it is (the message starts with the field).
            EngineError::Refused(Refusal::Conflict(problem)) => GraphError::new(StatusCode::CONFLICT, "Conflict", format!("{problem}.")),
            EngineError::Refused(r @ Refusal::NoSuchParticipant(_)) => {
                GraphError::new(StatusCode::NOT_FOUND, "NotFound", format!("{}.", upper_first(&r.to_string())))
            }
            EngineError::Refused(r) => {
                GraphError::new(StatusCode::CONFLICT, "InvalidCallState", format!("{}{}", upper_first(&r.to_string()), "."))
            }
            EngineError::Store(StoreError::Exists { id }) => {
                GraphError::new(StatusCode::CONFLICT, "CallIdTaken", format!("A call with id '{id}' already exists."))
            }
            EngineError::Aborted(e) => {
                tracing::error!(error = %e, "engine failure");
                GraphError::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", "The request could not be completed; retry later.")
            }
            // The cluster's router sends the request on to the call's new owner.
            EngineError::Store(StoreError::NotOwner { id }) => GraphError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                crate::cluster::MOVED,
                format!("Call '{id}' moved to another node while this request was served; retry it."),
            ),
            EngineError::Store(e) => {
                tracing::error!(error = %e, "store failure");
                GraphError::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", "The request could not be stored; retry later.")
            }
        }
    }
}

fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

impl IntoResponse for GraphError {
    fn into_response(self) -> Response {
        let mut resp = self.status.into_response();
        resp.extensions_mut().insert(self);
        resp
    }
}
