//! The HTTP surface: Graph calls API, identity endpoints, sim control API and operations endpoints.
//!
//! Every route comes from one table, [`spec::ROUTES`], which `/openapi.json` is built from too. Graph
//! paths are matched against its rows by hand (`graph::dispatch`), because Graph matches segment names
//! case-insensitively and accepts `microsoft.graph.`-qualified action names; the others are mounted
//! on axum by operation id ([`served`]).

pub mod console;
pub mod error;
pub mod graph;
pub(crate) mod identity;
mod ops;
mod sim;
pub mod spec;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, any, on};
use serde_json::json;

pub use error::GraphError;

use crate::config::Config;
use crate::engine::Engine;
use crate::identity::SigningKey;
use crate::metrics::Metrics;
use crate::notifier::Notifier;
use crate::sim::Sim;

/// The largest request body we read (Graph bodies are a few KiB).
pub const MAX_BODY: usize = 1024 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub engine: Arc<Engine>,
    pub sim: Arc<Sim>,
    pub notifier: Arc<Notifier>,
    pub store: Arc<dyn crate::store::Store>,
    /// Signs access tokens; published at `/{tenant}/discovery/v2.0/keys`.
    pub key: Arc<SigningKey>,
    /// Signs notification tokens; published at `/notifications/v1/.well-known/keys`.
    pub notification_key: Arc<SigningKey>,
    pub metrics: Arc<Metrics>,
    /// How bots reach us, e.g. `http://127.0.0.1:8080`; issuers and `Location` headers derive from it.
    pub base_url: String,
    pub ready: Arc<std::sync::atomic::AtomicBool>,
    /// Tokens already verified, so that each request does not pay for an RSA signature check.
    pub verified: Arc<graph::VerifiedTokens>,
    /// This node's place among several sharing PostgreSQL; `None` on one node.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// SIP, when it is served: outgoing calls to registered phones and trunks go there.
    pub sip: Option<Arc<switchboard_sip::network::SipNetwork>>,
    /// Where notifications may go; this server's own addresses included, as refused.
    pub callbacks: Arc<crate::callback::CallbackPolicy>,
    /// Each app's request allowance (`max_requests_per_second`).
    pub rate_limits: Arc<crate::limits::RateLimits>,
    /// Finished recordings, served at `/recordings/{id}` to the bearer of their token.
    pub recordings: Arc<switchboard_engine::recordings::Recordings>,
    /// The console's sessions.
    pub console: Arc<console::Sessions>,
}

pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    // Every route outside the Graph calls collection, straight from the route table; rows sharing a
    // path share one method router.
    let mut paths: Vec<(&'static str, MethodRouter<AppState>)> = Vec::new();
    for row in spec::ROUTES.iter().filter(|r| !r.path.starts_with("/{version}")) {
        match paths.iter_mut().find(|(p, _)| *p == row.path) {
            Some((_, m)) => *m = std::mem::take(m).merge(served(row)),
            None => paths.push((row.path, served(row))),
        }
    }
    for (path, methods) in paths {
        router = router.route(path, methods);
    }
    let router = router
        // The Graph calls collection: its rows are matched by `graph::dispatch` (case-insensitively,
        // under three prefixes), from the same table.
        .route("/v1.0/{*rest}", any(graph::dispatch_v1))
        .route("/beta/{*rest}", any(graph::dispatch_beta))
        // The console: a page, not an API, so not in the route table.
        .route("/console", axum::routing::get(console::page))
        .route("/console/login", axum::routing::post(console::login))
        .route("/console/logout", axum::routing::post(console::logout))
        .route("/console/events", axum::routing::get(console::events))
        .route("/console/assets/{name}", axum::routing::get(console::asset))
        .fallback(|| async {
            GraphError::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                "No such endpoint. Graph routes start with /v1.0 or /beta; see /openapi.json.",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY));
    // Several nodes: requests about a call are served on the node that owns it, and a node hands one
    // of its calls to another (consultative transfers across nodes). One node pays for neither.
    let router = match state.cluster {
        Some(_) => router
            .route("/cluster/v1/calls/{id}/release", axum::routing::post(crate::cluster::release))
            .layer(middleware::from_fn_with_state(state.clone(), crate::cluster::route)),
        None => router,
    };
    router.layer(middleware::from_fn_with_state(state.clone(), request_ids)).with_state(state)
}

/// The handler of a route-table row outside the Graph calls collection, by its operation id. A row
/// without one answers 501 `NotServed`, which the test of the table refuses.
fn served(row: &spec::Route) -> MethodRouter<AppState> {
    let method = match row.method {
        "post" => MethodFilter::POST,
        "put" => MethodFilter::PUT,
        "delete" => MethodFilter::DELETE,
        _ => MethodFilter::GET,
    };
    match row.id {
        "getToken" => on(method, identity::token),
        "getOpenIdConfiguration" => on(method, identity::openid_configuration),
        "getKeys" => on(method, identity::jwks),
        "getNotificationOpenIdConfiguration" => on(method, identity::notification_openid_configuration),
        "getNotificationKeys" => on(method, identity::notification_jwks),
        "simPlaceCall" => on(method, sim::place_inbound),
        "simHangUp" => on(method, sim::hang_up_remote),
        "simDeleteLeg" => on(method, sim::hang_up_leg),
        "simSetBehaviour" => on(method, sim::set_behaviour),
        "simGetBehaviour" => on(method, sim::get_behaviour),
        "simReset" => on(method, sim::reset),
        "simDirectory" => on(method, sim::directory),
        "simWorld" => on(method, sim::world),
        "simOutbox" => on(method, sim::outbox),
        "simRetryOutbox" => on(method, sim::retry_outbox),
        "simSetFaults" => on(method, sim::set_faults),
        "simGetFaults" => on(method, sim::get_faults),
        "simClearFaults" => on(method, sim::clear_faults),
        "simClock" => on(method, sim::clock),
        "simAdvanceClock" => on(method, sim::advance_clock),
        "simPressKeys" => on(method, sim::press_keys),
        "simCallHistory" => on(method, sim::call_history),
        "simListCalls" => on(method, sim::list_calls),
        "getRecording" => on(method, ops::recording),
        "healthz" => on(method, ops::healthz),
        "readyz" => on(method, ops::readyz),
        "metrics" => on(method, ops::metrics),
        "openapi" => on(method, ops::openapi),
        id => on(method, move || async move { GraphError::not_served(id) }),
    }
}

/// The call a request path is about: the segment after `calls` (Graph's paths, and the sim's).
fn call_of_path(path: &str) -> Option<String> {
    let mut segs = path.split('/');
    segs.by_ref().find(|s| s.eq_ignore_ascii_case("calls"))?;
    segs.next().filter(|s| !s.is_empty()).map(str::to_owned)
}

/// The ids of one request, as Graph echoes them.
#[derive(Clone, Debug)]
pub struct RequestIds {
    pub request_id: String,
    pub client_request_id: String,
}

impl RequestIds {
    /// A new request id (or the one another node passed on), and the client's id echoed, or the
    /// request id when the client sent none usable.
    fn new(passed_on: Option<String>, client: Option<&str>) -> RequestIds {
        // A request id must be unique, not secret: a per-thread PRNG spares every request a getrandom call.
        let request_id =
            passed_on.unwrap_or_else(|| uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid().to_string());
        let client_request_id = client.filter(|v| !v.is_empty() && v.len() <= 200).map(str::to_owned).unwrap_or_else(|| request_id.clone());
        RequestIds { request_id, client_request_id }
    }

    /// Both ids as response headers.
    fn stamp(&self, resp: &mut Response) {
        for (name, value) in [("request-id", &self.request_id), ("client-request-id", &self.client_request_id)] {
            if let Ok(v) = HeaderValue::from_str(value) {
                resp.headers_mut().insert(name, v);
            }
        }
    }
}

/// Gives each request its `request-id`, echoes `client-request-id`, renders Graph errors into the
/// envelope that carries both, and counts the response.
async fn request_ids(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    // A request another node sent on keeps the id that node gave it.
    let passed_on = state
        .cluster
        .as_ref()
        .filter(|c| c.from_a_node(req.headers()))
        .and_then(|_| req.headers().get(crate::cluster::REQUEST_ID).and_then(|v| v.to_str().ok()).map(str::to_owned));
    let ids = RequestIds::new(passed_on, req.headers().get("client-request-id").and_then(|v| v.to_str().ok()));
    let (request_id, client_request_id) = (ids.request_id.clone(), ids.client_request_id.clone());
    let family = family(req.uri().path());
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    req.extensions_mut().insert(ids.clone());
    let started = std::time::Instant::now();
    // A Graph request about a call goes in its story, in the place it had when it arrived (what it causes
    // comes after it), once it is answered; a refused credential writes into nobody's story.
    let history = state.engine.history();
    let arrived_at = state.engine.clock().now_ms();
    // Reads are left out: they change nothing, and a bot that polls would crowd its calls' stories.
    let place = (family == "graph" && !matches!(method, axum::http::Method::GET | axum::http::Method::HEAD)).then(|| history.reserve());
    let mut resp = next.run(req).await;
    let (status, latency_ms) = (resp.status().as_u16(), started.elapsed().as_millis() as u64);
    if let Some(place) = place.filter(|_| !matches!(status, 401 | 403)) {
        // A new call's id is in the answer's `Location`.
        let location = || resp.headers().get(header::LOCATION).and_then(|v| v.to_str().ok()).and_then(call_of_path);
        if let Some(id) = call_of_path(&path).or_else(location) {
            let method: std::borrow::Cow<'static, str> = match method.as_str() {
                "GET" => "GET".into(),
                "POST" => "POST".into(),
                "DELETE" => "DELETE".into(),
                "PATCH" => "PATCH".into(),
                "PUT" => "PUT".into(),
                other => other.to_owned().into(),
            };
            let what = switchboard_engine::history::What::Request { method, path: path.clone(), status, latency_ms };
            history.request(&id, place, arrived_at, what);
        }
    }
    if let Some(err) = resp.extensions_mut().remove::<GraphError>() {
        resp = envelope(&err, &request_id, &client_request_id);
    } else if resp.status() == StatusCode::METHOD_NOT_ALLOWED {
        // The router's own 405 (fixed routes) carries `Allow` but no body: give it the envelope too.
        let allow = resp.headers().get(header::ALLOW).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let err = GraphError::method_not_allowed(method.as_str(), &path, &allow);
        resp = envelope(&err, &request_id, &client_request_id);
    } else if resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
        let err = GraphError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("The request body exceeds the limit of {MAX_BODY} bytes."),
        );
        resp = envelope(&err, &request_id, &client_request_id);
    }
    ids.stamp(&mut resp);
    state.metrics.request(family, resp.status().as_u16());
    resp
}

/// A refusal made before routing (by the front door: a body too slow or too large), in the envelope
/// and counted like any response.
pub fn refusal(err: &GraphError, family: &'static str, client_request_id: Option<String>, metrics: &Metrics) -> Response {
    let ids = RequestIds::new(None, client_request_id.as_deref());
    let mut resp = envelope(err, &ids.request_id, &ids.client_request_id);
    ids.stamp(&mut resp);
    metrics.request(family, err.status.as_u16());
    resp
}

pub(crate) fn family(path: &str) -> &'static str {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match first {
        "v1.0" | "beta" => "graph",
        "sim" => "sim",
        "healthz" | "readyz" | "metrics" | "openapi.json" => "ops",
        "notifications" => "identity",
        _ if path.contains("/oauth2/") || path.contains("/discovery/") || path.contains("/.well-known/") => "identity",
        _ => "other",
    }
}

fn envelope(err: &GraphError, request_id: &str, client_request_id: &str) -> Response {
    let date = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let date = date.split('.').next().unwrap_or(&date).trim_end_matches('Z').to_owned();
    let body = json!({
        "error": {
            "code": err.code,
            "message": err.message,
            "innerError": {"date": date, "request-id": request_id, "client-request-id": client_request_id}
        }
    });
    let mut resp = (err.status, axum::Json(body)).into_response();
    if err.status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert("www-authenticate", HeaderValue::from_static("Bearer"));
    }
    if let Some(v) = err.allow.as_deref().filter(|a| !a.is_empty()).and_then(|a| HeaderValue::from_str(a).ok()) {
        resp.headers_mut().insert(header::ALLOW, v);
    }
    if let Some(secs) = err.retry_after {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// The value of a header that must come at most once (credentials: two would leave which one counts
/// to chance). 400 when it comes twice or is not text.
pub fn single_header<'h>(headers: &'h axum::http::HeaderMap, name: &str) -> Result<Option<&'h str>, GraphError> {
    let mut all = headers.get_all(name).iter();
    let Some(first) = all.next() else {
        return Ok(None);
    };
    let more = all.count();
    if more > 0 {
        return Err(GraphError::bad_request(format!("The request carries {} {name} headers; send exactly one.", more + 1)));
    }
    first.to_str().map(Some).map_err(|_| GraphError::bad_request(format!("The {name} header is not valid text.")))
}

/// Reads a request body up to [`MAX_BODY`]: 413 beyond it, 415 unless it is JSON (when not empty).
pub async fn json_body(body: Body, headers: &axum::http::HeaderMap) -> Result<axum::body::Bytes, GraphError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        GraphError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("The request body exceeds the limit of {MAX_BODY} bytes."),
        )
    })?;
    if !bytes.iter().all(u8::is_ascii_whitespace) {
        let ct = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("application/json") {
            let shown = if ct.is_empty() { "none".to_owned() } else { format!("'{ct}'") };
            return Err(GraphError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                format!("Content-Type must be application/json, not {shown}."),
            ));
        }
    }
    Ok(bytes)
}
