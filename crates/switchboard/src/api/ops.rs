//! Operations endpoints: health, readiness, metrics, the OpenAPI document.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;

pub async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// Ready once recovery has finished and until shutdown begins, while the store can take work.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let store = if state.ready.load(Ordering::SeqCst) {
        state.store.ready().await.map_err(|e| e.to_string())
    } else {
        Err("starting or draining".into())
    };
    match store {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(why) => {
            tracing::debug!(why, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "not ready"}))).into_response()
        }
    }
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

pub async fn openapi(State(state): State<AppState>) -> Response {
    Json(super::spec::document(&state.base_url, &state.config)).into_response()
}

/// `GET /recordings/{id}`: a recording, to the bearer of its `recordingAccessToken`.
pub(super) async fn recording(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<Response, super::GraphError> {
    use super::GraphError;
    let token = super::single_header(&headers, "Authorization")?
        .and_then(|v| v.split_once(' ').filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer")).map(|(_, t)| t.trim()))
        .ok_or_else(|| GraphError::unauthorized("Send the recording's recordingAccessToken: Authorization: Bearer <token>."))?;
    let recording = state.recordings.get(&id, state.engine.clock().now_ms()).ok_or_else(|| {
        GraphError::new(StatusCode::NOT_FOUND, "NotFound", format!("Recording '{id}' does not exist (recordings are kept an hour)."))
    })?;
    if !crate::identity::same_secret(token, &recording.access_token) {
        return Err(GraphError::unauthorized("The token is not this recording's recordingAccessToken."));
    }
    // As Graph serves recordings; the bytes are a WAV file.
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], recording.wav.as_ref().clone()).into_response())
}
