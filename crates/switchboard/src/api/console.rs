//! The live console at `/console`: plain HTML, ES modules and SVG, embedded in the binary.
//!
//! Access: the console asks for the sim admin key once (`POST /console/login`) and keeps a session in
//! an HttpOnly, SameSite=Strict cookie; the key itself never reaches the page. Everything but the login
//! page needs the session. The page then drives the sim API (`/sim/v1/...`) with the session in place
//! of the admin key, and each of those requests carries the session's CSRF token in `X-Console-CSRF`
//! (a header a cross-site form cannot send); requests whose `Origin` is another site are refused too.
//! `GET /console/events` is a server-sent event stream that says when anything changed, so the page
//! fetches again.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};

use super::{AppState, GraphError};

/// The session cookie.
const COOKIE: &str = "switchboard_console";
/// The header that carries the session's CSRF token.
pub const CSRF_HEADER: &str = "X-Console-CSRF";
/// How long a session lasts.
const SESSION_TTL: Duration = Duration::from_secs(12 * 60 * 60);
/// The most sessions kept (the oldest go first).
const SESSIONS_MAX: usize = 1_000;

const LOGIN_HTML: &str = include_str!("../../console/login.html");
const INDEX_HTML: &str = include_str!("../../console/index.html");
const ASSETS: [(&str, &str, &str); 3] = [
    ("app.js", "text/javascript; charset=utf-8", include_str!("../../console/app.js")),
    ("ladder.js", "text/javascript; charset=utf-8", include_str!("../../console/ladder.js")),
    ("style.css", "text/css; charset=utf-8", include_str!("../../console/style.css")),
];

struct Session {
    csrf: String,
    expires: Instant,
}

/// The console's sessions (in memory: a restart, or another node, asks for the key again).
#[derive(Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn open(&self) -> (String, String) {
        let (id, csrf) = (secret(), secret());
        let mut all = self.lock();
        let now = Instant::now();
        all.retain(|_, s| s.expires > now);
        while all.len() >= SESSIONS_MAX {
            let Some(oldest) = all.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| k.clone()) else { break };
            all.remove(&oldest);
        }
        all.insert(id.clone(), Session { csrf: csrf.clone(), expires: now + SESSION_TTL });
        (id, csrf)
    }

    /// The CSRF token of the live session the request's cookie names.
    fn csrf_of(&self, headers: &HeaderMap) -> Option<String> {
        let id = cookie(headers)?;
        let all = self.lock();
        let s = all.get(&id).filter(|s| s.expires > Instant::now())?;
        Some(s.csrf.clone())
    }

    fn close(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers) {
            self.lock().remove(&id);
        }
    }

    /// Whether a sim API request is the console's: a live session, its CSRF token, and no other
    /// site's `Origin`. `Err` says what is missing.
    pub fn authorizes(&self, headers: &HeaderMap) -> Result<bool, &'static str> {
        let Some(csrf) = self.csrf_of(headers) else { return Ok(false) };
        let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
        if !crate::identity::same_secret(sent, &csrf) {
            return Err("The console's requests carry its CSRF token in X-Console-CSRF.");
        }
        if !same_origin(headers) {
            return Err("The console's requests come from the console's own origin.");
        }
        Ok(true)
    }
}

/// 256 random bits, as hex.
fn secret() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// An `Origin` header, if sent, names this very host (browsers send it on every POST).
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return true };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
    !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

fn html(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    security_headers(h);
    resp
}

/// The page runs only its own scripts and styles, and no other site may frame it.
fn security_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Not `no-referrer`: with it, a browser sends `Origin: null` on the login form, which is refused.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn login_page(status: StatusCode, problem: &str) -> Response {
    let problem = if problem.is_empty() { String::new() } else { format!("<p class=\"problem\" role=\"alert\">{problem}</p>") };
    html(status, LOGIN_HTML.replace("<!--problem-->", &problem))
}

/// `GET /console`: the console, or the login page without a session.
pub async fn page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match state.console.csrf_of(&headers) {
        Some(csrf) => html(StatusCode::OK, INDEX_HTML.replace("{{csrf}}", &csrf)),
        None => login_page(StatusCode::OK, ""),
    }
}

/// `POST /console/login` (form `key`): a session for the holder of the admin key.
pub async fn login(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if !same_origin(&headers) {
        return login_page(StatusCode::FORBIDDEN, "The login form must be sent from this console.");
    }
    let key = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body)
        .ok()
        .and_then(|form| form.into_iter().find(|(k, _)| k == "key").map(|(_, v)| v))
        .unwrap_or_default();
    if !crate::identity::same_secret(&key, &state.config.sim.admin_key) {
        tracing::warn!("console login refused: wrong admin key");
        return login_page(StatusCode::FORBIDDEN, "That is not the admin key.");
    }
    let (id, _) = state.console.open();
    let secure = if state.base_url.starts_with("https://") { "; Secure" } else { "" };
    let cookie = format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}", SESSION_TTL.as_secs());
    let mut resp = StatusCode::SEE_OTHER.into_response();
    let h = resp.headers_mut();
    h.insert(header::LOCATION, HeaderValue::from_static("/console"));
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        h.insert(header::SET_COOKIE, v);
    }
    resp
}

/// `POST /console/logout`: the session ends.
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if state.console.authorizes(&headers) == Ok(true) {
        state.console.close(&headers);
    }
    let mut resp = StatusCode::SEE_OTHER.into_response();
    let h = resp.headers_mut();
    h.insert(header::LOCATION, HeaderValue::from_static("/console"));
    h.insert(header::SET_COOKIE, HeaderValue::from_static("switchboard_console=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"));
    resp
}

fn no_session() -> Response {
    GraphError::unauthorized("The console needs a session: log in at /console with the admin key.").into_response()
}

/// `GET /console/assets/{name}`: the page's scripts and styles, for a session only.
pub async fn asset(State(state): State<AppState>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    if state.console.csrf_of(&headers).is_none() {
        return no_session();
    }
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => {
            let mut resp = Body::from(*body).into_response();
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            security_headers(h);
            resp
        }
        None => GraphError::new(StatusCode::NOT_FOUND, "NotFound", format!("The console has no asset '{name}'.")).into_response(),
    }
}

/// `GET /console/events`: a `change` event whenever a call's story changes (at most four a second),
/// and at least every 2 s (the clock, the outbox).
pub async fn events(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if state.console.csrf_of(&headers).is_none() {
        return no_session();
    }
    let rx = state.engine.history().watch();
    let stream = futures_util::stream::unfold((rx, true), |(mut rx, first)| async move {
        if !first {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx.changed()).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let n = *rx.borrow_and_update();
        Some((Ok::<_, Infallible>(Event::default().event("change").data(n.to_string())), (rx, false)))
    });
    let mut resp = Sse::new(stream).keep_alive(KeepAlive::default()).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("")));
        }
        h
    }

    #[test]
    fn a_session_needs_its_cookie_its_csrf_token_and_our_origin() {
        let sessions = Sessions::default();
        let (id, csrf) = sessions.open();
        let cookie = format!("other=1; {COOKIE}={id}");
        let ok =
            headers(&[("cookie", &cookie), ("x-console-csrf", &csrf), ("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080")]);
        assert_eq!(sessions.authorizes(&ok), Ok(true));
        assert_eq!(sessions.authorizes(&headers(&[("x-console-csrf", &csrf)])), Ok(false), "no cookie: not the console");
        assert!(sessions.authorizes(&headers(&[("cookie", &cookie), ("x-console-csrf", "guess")])).is_err());
        assert!(sessions.authorizes(&headers(&[("cookie", &cookie)])).is_err());
        let elsewhere =
            headers(&[("cookie", &cookie), ("x-console-csrf", &csrf), ("host", "127.0.0.1:8080"), ("origin", "https://evil.example")]);
        assert!(sessions.authorizes(&elsewhere).is_err());
        sessions.close(&ok);
        assert_eq!(sessions.authorizes(&ok), Ok(false), "closed");
    }
}
