//! The identity endpoints, shaped like the Microsoft identity platform's so that `azure-identity`'s
//! `ClientSecretCredential` works with only its authority changed.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::json;

use super::AppState;
use crate::identity;

/// An error in the identity platform's shape: `error`, `error_description` (with an AADSTS code),
/// `error_codes`, `timestamp`, `trace_id`, `correlation_id`.
fn aad_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    let now = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let trace = uuid::Uuid::new_v4().to_string();
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {trace} Timestamp: {now}"),
        "error_codes": [code],
        "timestamp": now,
        "trace_id": trace,
        "correlation_id": trace,
    });
    (status, Json(body)).into_response()
}

fn tenant_known(state: &AppState, tenant: &str) -> bool {
    state.config.directory.tenant(tenant).is_some()
}

fn unknown_tenant(tenant: &str) -> Response {
    aad_error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        90002,
        &format!("Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID."),
    )
}

/// A refusal of the token endpoint, in the identity platform's terms ([`aad_error`]).
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub error: &'static str,
    pub code: u32,
    pub description: String,
}

fn refuse(status: StatusCode, error: &'static str, code: u32, description: &str) -> Refusal {
    Refusal { status, error, code, description: description.to_owned() }
}

/// What a token request asks for, read from its form and `Authorization` header alone.
#[derive(Debug)]
pub struct TokenRequest {
    pub client_id: String,
    pub secret: String,
    pub scope: Option<String>,
}

/// Reads a client-credentials token request: the form `body` and the `Authorization` header's value.
/// Pure (the directory is consulted after), so that it can be fuzzed on its own.
pub fn read_token_request(body: &[u8], authorization: Option<&str>) -> Result<TokenRequest, Refusal> {
    let Ok(form) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(body) else {
        return Err(refuse(StatusCode::BAD_REQUEST, "invalid_request", 900144, "The request body is not valid form data."));
    };
    // A parameter we read given twice: which one counts would be up to chance (RFC 6749 §3.2).
    // Parameters we ignore may repeat.
    let read = ["grant_type", "client_id", "client_secret", "scope", "client_assertion", "client_assertion_type"];
    if let Some((twice, _)) =
        form.iter().enumerate().find(|(i, (k, _))| read.contains(&k.as_str()) && form[..*i].iter().any(|(o, _)| o == k)).map(|(_, kv)| kv)
    {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            9002313,
            &format!("Invalid request. The parameter '{twice}' appears more than once."),
        ));
    }
    // An empty value is no value (the fuzzer found `client_id=` taken for an id).
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty());
    // Client credentials may come in the body or as HTTP Basic, but not both (RFC 6749 §2.3.1).
    let basic = match authorization {
        None => None,
        Some(v) => match v.strip_prefix("Basic ").and_then(|b| {
            let text = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b.trim()).ok()?).ok()?;
            text.split_once(':').map(|(a, b)| (a.to_owned(), b.to_owned()))
        }) {
            Some(pair) => Some(pair),
            None => {
                return Err(refuse(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    7000218,
                    "The Authorization header must be 'Basic base64(client_id:client_secret)', or absent with the credentials in the body.",
                ));
            }
        },
    };
    if let Some((basic_id, _)) = &basic
        && (field("client_secret").is_some() || field("client_id").is_some_and(|id| id != basic_id))
    {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            9002313,
            "Invalid request. Client credentials were given both in the Authorization header and in the body; use one.",
        ));
    }
    match field("grant_type") {
        None => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            ));
        }
        Some("client_credentials") => {}
        Some(other) => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                &format!("The grant type '{other}' is not supported; use client_credentials."),
            ));
        }
    }
    let (client_id, secret) = match (field("client_id"), field("client_secret"), &basic) {
        (Some(id), Some(secret), _) => (id.to_owned(), secret.to_owned()),
        (_, _, Some((id, secret))) => (id.clone(), secret.clone()),
        (None, _, None) => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_id'.",
            ));
        }
        (Some(_), None, None) => {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            ));
        }
    };
    Ok(TokenRequest { client_id, secret, scope: field("scope").map(str::to_owned) })
}

/// `POST /{tenant}/oauth2/v2.0/token`: the client-credentials grant.
pub async fn token(State(state): State<AppState>, Path(tenant): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    if !tenant_known(&state, &tenant) {
        return unknown_tenant(&tenant);
    }
    let ct = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must be application/x-www-form-urlencoded.",
        );
    }
    let authorization = match super::single_header(&headers, "Authorization") {
        Ok(v) => v,
        Err(e) => return aad_error(StatusCode::BAD_REQUEST, "invalid_request", 9002313, &format!("Invalid request. {}", e.message)),
    };
    let TokenRequest { client_id, secret, scope } = match read_token_request(&body, authorization) {
        Ok(r) => r,
        Err(r) => return aad_error(r.status, r.error, r.code, &r.description),
    };
    // An app's request allowance covers its token requests too (each costs an RSA signature, and
    // secret guessing is one more request).
    if let Some(per_second) = state.config.directory.app(&client_id).and_then(|a| a.max_requests_per_second)
        && let Err(wait) = state.rate_limits.take(&format!("token {client_id}"), per_second, std::time::Instant::now())
    {
        let mut resp = aad_error(
            StatusCode::TOO_MANY_REQUESTS,
            "temporarily_unavailable",
            90055,
            &format!("Too many token requests for app '{client_id}' (at most {per_second} a second); retry after {wait} s."),
        );
        resp.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(wait));
        return resp;
    }
    let Some(app) = state.config.directory.app(&client_id) else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!("Application with identifier '{client_id}' was not found in the directory '{tenant}'."),
        );
    };
    // During a rotation the previous secret works too, until it expires.
    if !identity::same_secret(&secret, &app.secret)
        && let (Some(previous), Some(expires)) = (&app.previous_secret, &app.previous_secret_expires)
        && identity::same_secret(&secret, previous)
    {
        let now_ms = state.engine.clock().now_ms();
        let expires_ms = time::OffsetDateTime::parse(expires, &time::format_description::well_known::Rfc3339)
            .map(|t| i128::from(t.unix_timestamp()) * 1000)
            .unwrap_or(0);
        if i128::from(now_ms) >= expires_ms {
            return aad_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000222,
                &format!("The provided client secret keys for app '{client_id}' are expired (the rotation ended at {expires})."),
            );
        }
    } else if !identity::same_secret(&secret, &app.secret) {
        return aad_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            &format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
            ),
        );
    }
    if !app.tenants.iter().any(|t| t.eq_ignore_ascii_case(&tenant)) {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!("Application with identifier '{client_id}' was not found in the directory '{tenant}'."),
        );
    }
    match scope.as_deref() {
        None => {
            return aad_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'scope'.",
            );
        }
        Some(s)
            if s.split(' ')
                .any(|s| s == "https://graph.microsoft.com/.default" || s == "00000003-0000-0000-c000-000000000000/.default") => {}
        Some(s) => {
            return aad_error(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                1002012,
                &format!(
                    "The provided value for scope '{s}' is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (https://graph.microsoft.com/.default)."
                ),
            );
        }
    }
    let tenant_id = state.config.directory.tenant(&tenant).map(|t| t.id.clone()).unwrap_or(tenant);
    match identity::issue_access_token(
        &state.key,
        &state.base_url,
        &tenant_id,
        &app.client_id,
        &app.roles,
        state.engine.clock().now_ms() / 1000,
    ) {
        Ok((token, _)) => Json(json!({
            "token_type": "Bearer",
            "expires_in": identity::TOKEN_LIFETIME_S,
            "ext_expires_in": identity::TOKEN_LIFETIME_S,
            "access_token": token,
        }))
        .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "could not sign an access token");
            aad_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", 50196, "The token could not be signed; retry later.")
        }
    }
}

pub async fn openid_configuration(State(state): State<AppState>, Path(tenant): Path<String>) -> Response {
    if !tenant_known(&state, &tenant) {
        return unknown_tenant(&tenant);
    }
    Json(identity::openid_configuration(&state.base_url, &tenant)).into_response()
}

/// The JWKS of access tokens, for the directory's tenants and `common`; other tenants are a 400, as in
/// Entra. Notification tokens have a key of their own ([`notification_jwks`]).
pub async fn jwks(State(state): State<AppState>, Path(tenant): Path<String>) -> Response {
    if !tenant_known(&state, &tenant) && !tenant.eq_ignore_ascii_case(identity::COMMON_TENANT) {
        return unknown_tenant(&tenant);
    }
    Json(state.key.jwks()).into_response()
}

/// The key that signs notification tokens, where the notification discovery document points.
pub async fn notification_jwks(State(state): State<AppState>) -> Response {
    Json(state.notification_key.jwks()).into_response()
}

pub async fn notification_openid_configuration(State(state): State<AppState>) -> Response {
    Json(identity::notification_openid_configuration(&state.base_url, &state.config.notifications.issuer)).into_response()
}
