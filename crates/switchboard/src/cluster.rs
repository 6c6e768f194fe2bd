//! Several nodes behind one address, sharing PostgreSQL (`--store postgres://…`).
//!
//! - **Leases.** [`Cluster::run`] renews this node's lease every second and adopts the calls of every
//!   node whose lease ran out (`switchboard_engine::cluster` has the rules).
//! - **Forwarding.** A request about a call that another live node owns is sent on to that node, once,
//!   and its answer comes back unchanged ([`forward`]): the owner applies it, so per-call order and
//!   "a 2xx is durable" hold as on one node. A call whose owner is dead is adopted on the spot.
//! - **Hand-over.** A consultative transfer needs both calls on one node: the transferor's node asks
//!   the consultation call's owner to let it go (`POST /cluster/v1/calls/{id}/release`, naming itself
//!   in `Switchboard-Release-To`) and adopts it.
//!
//! Nodes speak to each other with the cluster key, a secret every node reads from the database.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use switchboard_engine::cluster::{Adopted, Membership, RENEW_EVERY_MS};
use switchboard_engine::engine::Engine;

use crate::api::{AppState, GraphError};
use crate::metrics::Metrics;
use crate::notifier::Notifier;
use crate::store::{OutboxStatus, StoreError};

/// Marks a request one node sent another: served where it lands, never forwarded again.
pub const FORWARDED_BY: &str = "switchboard-forwarded-by";
/// Names the node that takes a released call (node ids are header-safe: see `node_id` in the config).
pub const RELEASE_TO: &str = "switchboard-release-to";
/// The request id the first node gave a request it sends on.
pub const REQUEST_ID: &str = "switchboard-request-id";
/// The cluster key, proving that a forwarded or internal request comes from a node.
pub const CLUSTER_KEY: &str = "switchboard-cluster-key";

/// How long a request waits for a call whose owner stopped answering to be adopted (its lease runs
/// out within `LEASE_MS`).
const ADOPTION_WAIT: Duration = Duration::from_secs(8);

pub struct Cluster {
    pub membership: Arc<dyn Membership>,
    /// Where the other nodes reach this one.
    pub address: String,
    key: String,
    engine: Arc<Engine>,
    notifier: Arc<Notifier>,
    metrics: Arc<Metrics>,
    http: reqwest::Client,
    /// Cleared while this node cannot renew its lease.
    leased: AtomicBool,
    /// When a renewal last failed (see [`Cluster::in_grace`]).
    last_failed: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// Calls being handed over from here: requests for them are told to follow the call.
    releasing: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// Where a request about a call is served.
enum Place {
    Here,
    There {
        node: String,
        address: String,
    },
    /// Being handed over from here right now: the request is answered "moved" and retried.
    Moving,
}

impl Cluster {
    pub fn new(
        membership: Arc<dyn Membership>,
        address: String,
        key: String,
        engine: Arc<Engine>,
        notifier: Arc<Notifier>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, reqwest::Error> {
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(2)).timeout(Duration::from_secs(60)).build()?;
        Ok(Arc::new(Cluster {
            membership,
            address,
            key,
            engine,
            notifier,
            metrics,
            http,
            leased: AtomicBool::new(true),
            last_failed: std::sync::Mutex::default(),
            releasing: std::sync::Mutex::default(),
        }))
    }

    pub fn node_id(&self) -> &str {
        self.membership.node_id()
    }

    /// Whether a request carries the cluster key.
    pub fn from_a_node(&self, headers: &HeaderMap) -> bool {
        headers.get(CLUSTER_KEY).and_then(|v| v.to_str().ok()).is_some_and(|k| crate::identity::same_secret(k, &self.key))
    }

    /// Takes over calls and their outbox rows: the engine resumes the calls, the notifier sends what
    /// is owed.
    async fn take(&self, adopted: Adopted) -> usize {
        let Adopted { calls, outbox, nodes } = adopted;
        let n = self.engine.adopt(calls).await;
        self.notifier.enqueue(outbox.into_iter().filter(|r| r.status == OutboxStatus::Pending).collect());
        if !nodes.is_empty() {
            self.metrics.nodes_taken_over.add(nodes.len() as u64);
            self.metrics.leases_taken_over.add(n as u64);
            tracing::warn!(?nodes, calls = n, "adopted the calls of nodes whose leases ran out");
        }
        n
    }

    /// The lease loop: renew, fence if the lease was lost, adopt dead nodes. Runs until the process ends.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(RENEW_EVERY_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            // Bounded: a database that does not answer must not hold the fence open.
            let renewed = tokio::time::timeout(Duration::from_millis(RENEW_EVERY_MS * 2), self.membership.renew()).await;
            match renewed {
                Ok(Ok(true)) => {
                    last_renewed = tokio::time::Instant::now();
                    if !self.leased.swap(true, Ordering::SeqCst) {
                        tracing::info!("lease renewed again; sending notifications again");
                        self.notifier.fence(false);
                    }
                }
                Ok(Ok(false)) => {
                    // Declared dead and adopted: everything this node held is someone else's now.
                    self.notifier.fence(true);
                    let calls = self.engine.evict_all().await;
                    self.notifier.forget_all();
                    tracing::error!(calls, "this node's lease had run out and its calls were adopted elsewhere; it forgot them");
                    match self.membership.join(&self.address).await {
                        Ok(()) => {
                            // Anything still owned under this name (committed after the adoption)
                            // comes back now rather than waiting for a request.
                            let calls = self.engine.recover().await.unwrap_or_default();
                            let rows = self.notifier.recover().await.unwrap_or_default();
                            tracing::info!(calls, rows, "took a lease again");
                            self.leased.store(true, Ordering::SeqCst);
                            self.notifier.fence(false);
                            last_renewed = tokio::time::Instant::now();
                        }
                        Err(e) => tracing::warn!(error = %e, "could not take a lease again"),
                    }
                    continue;
                }
                Ok(Err(e)) => self.renewal_failed(&e.to_string()),
                Err(_) => self.renewal_failed("the database did not answer in time"),
            }
            // Close to the expiry without a renewal, stop sending: the rows may soon be another node's.
            let doubtful = last_renewed.elapsed() > Duration::from_millis(switchboard_engine::cluster::LEASE_MS - 1_500);
            if doubtful && self.leased.swap(false, Ordering::SeqCst) {
                tracing::error!("cannot renew this node's lease; notifications stop until it is renewed");
                self.notifier.fence(true);
            }
            if doubtful || self.in_grace() {
                continue;
            }
            match self.membership.adopt_dead().await {
                Ok(adopted) => {
                    self.take(adopted).await;
                }
                Err(e) => tracing::warn!(error = %e, "could not look for dead nodes"),
            }
        }
    }

    /// When this node could not reach the database, the others most likely could not either (a
    /// database restart): their leases ran out too, through no fault of theirs. Adopting them the
    /// moment the database is back would move every call for nothing, so give them a lease's time to
    /// renew first; this holds for adoption on the spot ([`Cluster::place`]) too.
    fn renewal_failed(&self, why: &str) {
        tracing::debug!(why, "lease renewal failed");
        *self.last_failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(tokio::time::Instant::now());
    }

    fn in_grace(&self) -> bool {
        let last = *self.last_failed.lock().unwrap_or_else(|e| e.into_inner());
        last.is_some_and(|at| at.elapsed() < Duration::from_millis(switchboard_engine::cluster::LEASE_MS + RENEW_EVERY_MS))
    }

    /// Lets the lease go on a clean shutdown, so that the other nodes adopt the calls at once.
    pub async fn leave(&self) {
        if let Err(e) = self.membership.leave().await {
            tracing::warn!(error = %e, "could not give up the lease; the other nodes adopt the calls when it expires");
        }
    }

    /// Where a request about `call_id` is served: here if this node has the call (adopting it first if
    /// its owner is dead, or loading it if it was handed here), else on its owner.
    async fn place(&self, call_id: &str) -> Result<Place, StoreError> {
        if self.releasing.lock().unwrap_or_else(|e| e.into_inner()).contains(call_id) {
            return Ok(Place::Moving);
        }
        if self.engine.holds(call_id) {
            return Ok(Place::Here);
        }
        let Some(owner) = self.membership.owner(call_id).await? else {
            return Ok(Place::Here); // no such call: answered here (404)
        };
        if owner.node == self.node_id() {
            if let Some(adopted) = self.membership.owned_call(call_id).await? {
                self.take(adopted).await;
            }
            return Ok(Place::Here);
        }
        if owner.alive || self.in_grace() {
            // In the grace after an outage the owner is most likely alive and about to renew.
            return Ok(Place::There { node: owner.node, address: owner.address });
        }
        if let Some(adopted) = self.membership.adopt_call(call_id, &owner.node).await? {
            tracing::warn!(call_id, from = owner.node, "adopted a call whose owner's lease ran out");
            self.metrics.leases_taken_over.inc();
            self.take(adopted).await;
            return Ok(Place::Here);
        }
        // Someone else adopted it just now: ask again.
        Ok(match self.membership.owner(call_id).await? {
            Some(o) if o.alive && o.node != self.node_id() => Place::There { node: o.node, address: o.address },
            _ => Place::Here,
        })
    }

    /// Brings a call of the application `app_id` here from another node (a consultative transfer's
    /// consultation call). Another application's call is left where it is. Returns whether this node
    /// holds it now.
    pub async fn pull(&self, call_id: &str, app_id: &str) -> bool {
        // A SIP call's dialog cannot move: releasing it would hang up the phone.
        if switchboard_sip::endpoint::is_sip_call(call_id) {
            return false;
        }
        match self.membership.owner(call_id).await {
            Ok(Some(owner)) if owner.app_id.eq_ignore_ascii_case(app_id) => {}
            _ => return false,
        }
        match self.place(call_id).await {
            Ok(Place::Here) => self.engine.holds(call_id),
            Ok(Place::Moving) => false,
            Ok(Place::There { node, address }) => {
                let url = format!("{address}/cluster/v1/calls/{call_id}/release");
                let released = self.http.post(&url).header(CLUSTER_KEY, &self.key).header(RELEASE_TO, self.node_id()).send().await;
                match released {
                    Ok(r) if r.status().is_success() => match self.membership.owned_call(call_id).await {
                        Ok(Some(adopted)) => {
                            self.metrics.calls_handed_over.inc();
                            self.take(adopted).await;
                            self.engine.holds(call_id)
                        }
                        Ok(None) => false,
                        Err(e) => {
                            tracing::warn!(call_id, error = %e, "could not load a call handed over here");
                            false
                        }
                    },
                    Ok(r) => {
                        tracing::warn!(call_id, node, status = %r.status(), "the owner did not hand the call over");
                        false
                    }
                    Err(e) => {
                        tracing::warn!(call_id, node, error = %e, "could not ask the owner to hand the call over");
                        false
                    }
                }
            }
            Err(e) => {
                tracing::warn!(call_id, error = %e, "could not find the owner of a call");
                false
            }
        }
    }

    /// Lets one of this node's calls go to `to` (see [`Cluster::pull`]).
    async fn release(&self, call_id: &str, to: &str) -> Result<bool, StoreError> {
        if switchboard_sip::endpoint::is_sip_call(call_id) {
            return Ok(false);
        }
        self.releasing.lock().unwrap_or_else(|e| e.into_inner()).insert(call_id.to_owned());
        let outcome = self.hand_over_now(call_id, to).await;
        self.releasing.lock().unwrap_or_else(|e| e.into_inner()).remove(call_id);
        outcome
    }

    async fn hand_over_now(&self, call_id: &str, to: &str) -> Result<bool, StoreError> {
        let Some(_call) = self.engine.evict(call_id).await else {
            return Ok(false);
        };
        self.notifier.release(call_id).await;
        match self.membership.hand_over(call_id, to).await {
            Ok(true) => Ok(true),
            outcome => {
                // Still ours in the database: take it back.
                if let Ok(Some(adopted)) = self.membership.owned_call(call_id).await {
                    self.take(adopted).await;
                }
                outcome
            }
        }
    }

    /// Sends a request on to the node that owns its call, and brings the answer back.
    async fn forward(&self, address: &str, parts: &axum::http::request::Parts, body: Bytes) -> Result<Response, reqwest::Error> {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).unwrap_or(reqwest::Method::GET);
        let mut req = self.http.request(method, format!("{address}{path}"));
        for (name, value) in &parts.headers {
            if !HOP_BY_HOP.contains(&name.as_str()) && ![FORWARDED_BY, CLUSTER_KEY, REQUEST_ID].contains(&name.as_str()) {
                req = req.header(name.as_str(), value.as_bytes());
            }
        }
        if let Some(ids) = parts.extensions.get::<crate::api::RequestIds>() {
            req = req.header(REQUEST_ID, &ids.request_id);
        }
        let resp = req.header(FORWARDED_BY, self.node_id()).header(CLUSTER_KEY, &self.key).body(body).send().await?;
        self.metrics.requests_forwarded.inc();
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut headers = HeaderMap::new();
        for (name, value) in resp.headers() {
            if !HOP_BY_HOP.contains(&name.as_str())
                && let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_str().as_bytes()), HeaderValue::from_bytes(value.as_bytes()))
            {
                headers.append(n, v);
            }
        }
        let bytes = resp.bytes().await?;
        let mut out = Response::new(Body::from(bytes));
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        Ok(out)
    }
}

/// Headers that belong to one connection, not to the request.
const HOP_BY_HOP: [&str; 6] = ["host", "connection", "content-length", "transfer-encoding", "keep-alive", "upgrade"];

/// The call a request is about, if any: Graph's call resources under any of their prefixes, and the
/// sim's hang-up of a call's far end.
pub fn call_of(path: &str) -> Option<&str> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let id = match segs.as_slice() {
        [v, c, calls, id, ..] if (eq(v, "v1.0") || eq(v, "beta")) && eq(c, "communications") && eq(calls, "calls") => id,
        [v, a, calls, id, ..] if eq(v, "beta") && eq(a, "app") && eq(calls, "calls") => id,
        [v, a, _, calls, id, ..] if eq(v, "beta") && eq(a, "applications") && eq(calls, "calls") => id,
        ["sim", "v1", "calls", id, "hangup"] => id,
        _ => return None,
    };
    Some(id)
}

/// The largest body a forwarded request may carry: the API's own limit.
const MAX_FORWARDED_BODY: usize = crate::api::MAX_BODY;

/// Middleware: serves a request about a call where the call lives.
pub async fn route(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(cluster) = state.cluster else {
        return next.run(req).await;
    };
    let Some(call_id) = call_of(req.uri().path()).map(str::to_owned) else {
        if is_behaviour(&req) && !cluster.from_a_node(req.headers()) {
            return broadcast(&cluster, req, next).await;
        }
        return next.run(req).await;
    };
    let forwarded = cluster.from_a_node(req.headers()) && req.headers().contains_key(FORWARDED_BY);
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_FORWARDED_BODY).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response(); // the envelope is added around it
    };
    let deadline = tokio::time::Instant::now() + ADOPTION_WAIT;
    // A call may move while a request is on its way (adopted, handed over): the request follows it,
    // a couple of times at most; then the answer is whatever the last node said.
    let mut moves = 0;
    loop {
        match cluster.place(&call_id).await {
            Ok(Place::Here) => {
                let resp = next.clone().run(Request::from_parts(parts.clone(), Body::from(body.clone()))).await;
                let moved = resp.extensions().get::<GraphError>().is_some_and(|e| e.code == MOVED);
                if moved && !forwarded && moves < 2 {
                    moves += 1;
                    continue;
                }
                return if moved { flag_moved(resp) } else { resp };
            }
            // Being handed over from here: once it is, the request follows it.
            Ok(Place::Moving) if !forwarded && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(Place::Moving) => {
                return flag_moved(
                    GraphError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        MOVED,
                        format!("Call '{call_id}' is moving to another node; retry it."),
                    )
                    .into_response(),
                );
            }
            // A node sent it here, believing this node the owner; it is not (any more): say so, and
            // that node asks again.
            Ok(Place::There { .. }) if forwarded => {
                return flag_moved(
                    GraphError::new(StatusCode::SERVICE_UNAVAILABLE, MOVED, format!("Call '{call_id}' moved to another node; retry it."))
                        .into_response(),
                );
            }
            Ok(Place::There { node, address }) => match cluster.forward(&address, &parts, body.clone()).await {
                Ok(resp) if resp.headers().contains_key(CALL_MOVED) && moves < 2 => moves += 1,
                Ok(resp) => return resp,
                // The owner does not answer: wait for its lease to run out, then adopt the call.
                Err(e) if e.is_connect() && tokio::time::Instant::now() < deadline => {
                    tracing::debug!(call_id, node, "the owner does not answer; waiting to adopt the call");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => {
                    tracing::warn!(call_id, node, error = %e, "forwarding to the call's owner failed");
                    return unavailable(&format!("The node that holds call '{call_id}' did not answer; retry later."));
                }
            },
            Err(e) => {
                tracing::warn!(call_id, error = %e, "cannot tell which node holds the call");
                return unavailable("The request could not be routed; retry later.");
            }
        }
    }
}

/// The Graph error code of a request that reached a node which lost the call meanwhile.
pub const MOVED: &str = "CallMoved";
/// Marks such an answer for the node that forwarded the request, which then asks the new owner.
const CALL_MOVED: &str = "switchboard-call-moved";

fn flag_moved(mut resp: Response) -> Response {
    resp.headers_mut().insert(CALL_MOVED, HeaderValue::from_static("1"));
    resp.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
    resp
}

fn unavailable(message: &str) -> Response {
    let mut resp = GraphError::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", message).into_response();
    resp.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
    resp
}

fn is_behaviour(req: &Request) -> bool {
    req.method() == axum::http::Method::PUT && req.uri().path().starts_with("/sim/v1/parties/")
}

/// A sim party's behaviour is the same on every node: the change is applied here, then on the others.
async fn broadcast(cluster: &Arc<Cluster>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_FORWARDED_BODY).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response(); // the envelope is added around it
    };
    let resp = next.run(Request::from_parts(parts.clone(), Body::from(body.clone()))).await;
    if resp.status().is_success() {
        let nodes = cluster.membership.nodes().await.unwrap_or_default();
        for node in nodes.into_iter().filter(|n| n.alive && n.id != cluster.node_id()) {
            if let Err(e) = cluster.forward(&node.address, &parts, body.clone()).await {
                tracing::warn!(node = node.id, error = %e, "could not pass a behaviour change on to a node");
            }
        }
    }
    resp
}

/// `POST /cluster/v1/calls/{id}/release?to=NODE`: another node takes the call over.
pub async fn release(State(state): State<AppState>, Path(call_id): Path<String>, headers: HeaderMap) -> Response {
    let Some(cluster) = state.cluster.clone() else {
        return GraphError::new(StatusCode::NOT_FOUND, "NotFound", "This node is not part of a cluster.").into_response();
    };
    if !cluster.from_a_node(&headers) {
        return GraphError::new(StatusCode::FORBIDDEN, "Forbidden", "Only nodes of the cluster may hand calls over.").into_response();
    }
    let to = headers.get(RELEASE_TO).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    if to.is_empty() {
        return GraphError::bad_request(format!("Header {RELEASE_TO} (the node that takes the call) is required.")).into_response();
    }
    match cluster.release(&call_id, &to).await {
        Ok(true) => axum::Json(json!({"callId": call_id, "to": to})).into_response(),
        Ok(false) => {
            GraphError::new(StatusCode::CONFLICT, "NotHeld", format!("Call '{call_id}' is not held by this node.")).into_response()
        }
        Err(e) => unavailable(&format!("The call could not be handed over: {e}.")),
    }
}

#[cfg(test)]
mod tests {
    use super::call_of;

    #[test]
    fn the_call_a_request_is_about() {
        assert_eq!(call_of("/v1.0/communications/calls/abc/transfer"), Some("abc"));
        assert_eq!(call_of("/v1.0/Communications/Calls/abc"), Some("abc"));
        assert_eq!(call_of("/beta/app/calls/abc/participants"), Some("abc"));
        assert_eq!(call_of("/beta/applications/app-1/calls/abc/answer"), Some("abc"));
        assert_eq!(call_of("/sim/v1/calls/abc/hangup"), Some("abc"));
        assert_eq!(call_of("/v1.0/communications/calls"), None);
        assert_eq!(call_of("/sim/v1/calls"), None);
        assert_eq!(call_of("/metrics"), None);
    }
}
