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
