//! The Graph calls API: `/v1.0` and `/beta`, `/communications/calls`, and beta's `/app/calls` and
//! 2018 `/applications/{appId}/calls` aliases.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use switchboard_core::call::{Call, Input, MediaConfig, OutgoingCall, ParticipantAction};
use switchboard_core::media::OperationKind;
use switchboard_core::party::Party;
use switchboard_engine::directory::CALLING_ROLES;

use super::spec::{ROUTES, Route};
use super::{AppState, GraphError, json_body};
use crate::config::Application;
use crate::graph::decode::call::CreateCall;
use crate::graph::decode::transfer::Transferee;
use crate::graph::decode::{self, Media, Named, Policy};
use crate::graph::parse::{IdentityRef, err};
use crate::graph::render;
use crate::identity;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Version {
    V1,
    Beta,
}

impl Version {
    fn as_str(self) -> &'static str {
        match self {
            Version::V1 => "v1.0",
            Version::Beta => "beta",
        }
    }
}

/// Who is calling: the app behind the bearer token, in the token's tenant.
pub struct Caller {
    pub app: Application,
    pub tenant: String,
    pub roles: Vec<String>,
}

impl Caller {
    fn has(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    fn require(&self, role: &str, what: &str) -> Result<(), GraphError> {
        if self.has(role) {
            Ok(())
        } else {
            Err(GraphError::new(
                StatusCode::FORBIDDEN,
                "7504",
                format!("Insufficient permissions: {what} needs the application permission {role}, which the token does not carry."),
            ))
        }
    }
}

/// A bounded cache of verified access tokens: token → claims. Verifying an RS256 signature costs far
/// more than the rest of a GET; a bot sends the same token for an hour.
#[derive(Default)]
pub struct VerifiedTokens(std::sync::Mutex<std::collections::HashMap<String, identity::AccessClaims>>);

const VERIFIED_TOKENS_MAX: usize = 10_000;

impl VerifiedTokens {
    fn validate(&self, state: &AppState, token: &str) -> Result<identity::AccessClaims, identity::TokenError> {
        let now_s = state.engine.clock().now_ms() / 1000;
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(claims) = cache.get(token) {
            // Same leeway as the full check.
            if now_s <= claims.exp + 60 {
                return Ok(claims.clone());
            }
            cache.remove(token);
        }
        drop(cache);
        let claims = identity::validate_access_token(&state.key, &state.base_url, token, now_s)?;
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= VERIFIED_TOKENS_MAX {
            cache.clear();
        }
        cache.insert(token.to_owned(), claims.clone());
        Ok(claims)
    }
}

/// Validates the bearer token and finds the app and tenant it speaks for.
pub fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Caller, GraphError> {
    let raw = super::single_header(headers, "Authorization")?
        .ok_or_else(|| GraphError::unauthorized("Access token is empty: send Authorization: Bearer <token>."))?;
    let token = match raw.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => token.trim(),
        _ => {
            return Err(GraphError::unauthorized("The Authorization header must be 'Bearer <token>'."));
        }
    };
    let claims =
        state.verified.validate(state, token).map_err(|e| GraphError::unauthorized(format!("Access token validation failure: {e}.")))?;
    let app = state.config.directory.app(&claims.appid).ok_or_else(|| {
        GraphError::unauthorized(format!("Access token validation failure: application '{}' is not registered.", claims.appid))
    })?;
    if !app.tenants.iter().any(|t| t.eq_ignore_ascii_case(&claims.tid)) {
        return Err(GraphError::forbidden(format!("Application '{}' is not consented in tenant '{}'.", app.name, claims.tid)));
    }
    if let Some(per_second) = app.max_requests_per_second
        && let Err(wait) = state.rate_limits.take(&app.client_id, per_second, std::time::Instant::now())
    {
        return Err(GraphError {
            retry_after: Some(wait),
            ..GraphError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                format!("Application '{}' is over its limit of {per_second} requests per second; retry after {wait} s.", app.name),
            )
        });
    }
    let caller = Caller { app: app.clone(), tenant: claims.tid, roles: claims.roles };
    if !CALLING_ROLES.iter().any(|r| caller.has(r)) {
        return Err(GraphError::new(
            StatusCode::FORBIDDEN,
            "7504",
            format!(
                "Insufficient permissions: application '{}' holds none of the calling permissions ({}).",
                caller.app.name,
                CALLING_ROLES.join(", ")
            ),
        ));
    }
    Ok(caller)
}

pub async fn dispatch_v1(state: State<AppState>, method: Method, Path(rest): Path<String>, headers: HeaderMap, body: Body) -> Response {
    dispatch(state, Version::V1, method, rest, headers, body).await
}

pub async fn dispatch_beta(state: State<AppState>, method: Method, Path(rest): Path<String>, headers: HeaderMap, body: Body) -> Response {
    dispatch(state, Version::Beta, method, rest, headers, body).await
}

async fn dispatch(
    State(state): State<AppState>,
    version: Version,
    method: Method,
    rest: String,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match route(&state, version, &method, &rest, &headers, body).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// An action segment without its optional `microsoft.graph.` namespace, lower-cased.
fn action_name(segment: &str) -> String {
    let s = segment.to_ascii_lowercase();
    s.strip_prefix("microsoft.graph.").map(str::to_owned).unwrap_or(s)
}

async fn route(
    state: &AppState,
    version: Version,
    method: &Method,
    rest: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, GraphError> {
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    // The collection of calls under one of its three prefixes; the rest is the same for all.
    let (tail, path_app) = match segs.as_slice() {
        [c, calls, tail @ ..] if eq(c, "communications") && eq(calls, "calls") => (tail, None),
        [a, calls, tail @ ..] if version == Version::Beta && eq(a, "app") && eq(calls, "calls") => (tail, None),
        [a, app_id, calls, tail @ ..] if version == Version::Beta && eq(a, "applications") && eq(calls, "calls") => (tail, Some(*app_id)),
        [] => return Err(GraphError::unknown_segment("")),
        [first, ..] if eq(first, "communications") || (version == Version::Beta && (eq(first, "app") || eq(first, "applications"))) => {
            return Err(GraphError::unknown_segment(segs.get(1).or(segs.get(2)).copied().unwrap_or(first)));
        }
        [first, ..] => return Err(GraphError::unknown_segment(first)),
    };
    let caller = authenticate(state, headers)?;
    if let Some(app_id) = path_app
        && !app_id.eq_ignore_ascii_case(&caller.app.client_id)
    {
        return Err(GraphError::forbidden(format!(
            "The path names application '{app_id}', but the token is for application '{}'.",
            caller.app.client_id
        )));
    }
    // The route table decides what is served: the rows whose path fits, then the one for the method.
    // Of the rows that fit, the most specific: `participants/invite` over `participants/{participantId}`.
    let fitting: Vec<&(&'static Route, Vec<&'static str>)> = call_routes().iter().filter(|(_, template)| fits(template, tail)).collect();
    let literals = |t: &[&str]| t.iter().filter(|s| !s.starts_with('{')).count();
    let most = fitting.iter().map(|(_, t)| literals(t)).max().unwrap_or(0);
    let rows: Vec<&'static Route> = fitting.iter().filter(|(_, t)| literals(t) == most).map(|(r, _)| *r).collect();
    if rows.is_empty() {
        let unknown = match tail {
            [_, action] => action_name(action),
            _ => tail.get(1).copied().unwrap_or_default().to_owned(),
        };
        return Err(GraphError::unknown_segment(&unknown));
    }
    let row = rows.iter().find(|r| r.method.eq_ignore_ascii_case(method.as_str()));
    // A call's actions are named by their method (POST) before the call is looked up; its resources
    // (itself, participants, operations) are looked up first.
    let action = tail.len() == 2 && rows.iter().all(|r| r.method == "post");
    let mut call = None;
    if !tail.is_empty() && !action {
        call = Some(owned_call(state, &caller, tail[0]).await?);
    }
    let Some(row) = row else {
        let mut methods: Vec<&str> = rows.iter().map(|r| r.method).collect();
        methods.sort_by_key(|m| METHOD_ORDER.iter().position(|o| o == m));
        let allow = methods.iter().map(|m| m.to_ascii_uppercase()).collect::<Vec<_>>().join(", ");
        let path = format!("/{}/{}", version.as_str(), rest.trim_start_matches('/'));
        return Err(GraphError::method_not_allowed(method.as_str(), &path, &allow));
    };
    if call.is_none() && !tail.is_empty() {
        call = Some(owned_call(state, &caller, tail[0]).await?);
    }
    serve(Request { state, caller: &caller, version, call, tail, headers, body }, row).await
}

/// The calls collection in the route table; every Graph route sits under it.
const CALLS: &str = "/{version}/communications/calls";
/// The order `Allow` lists methods in.
const METHOD_ORDER: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// The route table's rows under the calls collection, with their path segments after it (split once).
fn call_routes() -> &'static [(&'static Route, Vec<&'static str>)] {
    static ROWS: std::sync::OnceLock<Vec<(&'static Route, Vec<&'static str>)>> = std::sync::OnceLock::new();
    ROWS.get_or_init(|| {
        ROUTES.iter().filter_map(|r| r.path.strip_prefix(CALLS).map(|t| (r, t.split('/').filter(|s| !s.is_empty()).collect()))).collect()
    })
}

/// Whether request segments fit a row's: `{param}` takes any segment, names match case-insensitively,
/// and an action may carry the `microsoft.graph.` namespace.
fn fits(template: &[&str], tail: &[&str]) -> bool {
    template.len() == tail.len()
        && template.iter().zip(tail).enumerate().all(|(i, (t, s))| {
            t.starts_with('{') || eq(t, s) || (i == 1 && template.len() == 2 && action_name(s) == t.to_ascii_lowercase())
        })
}

/// What a Graph handler gets: the caller, the call the path names (looked up and owned), the path's
/// segments after `/calls`, and the request.
struct Request<'a> {
    state: &'a AppState,
    caller: &'a Caller,
    version: Version,
    call: Option<Call>,
    tail: &'a [&'a str],
    headers: &'a HeaderMap,
    body: Body,
}

/// Serves one row of the route table, by its operation id.
async fn serve(req: Request<'_>, row: &Route) -> Result<Response, GraphError> {
    let Request { state, caller, version, call, tail, headers, body } = req;
    let call = || call.clone().ok_or_else(|| GraphError::call_not_found(tail.first().copied().unwrap_or_default()));
    match row.id {
        "createCall" => create_call(state, caller, version, headers, body).await,
        "listCalls" => list_calls(state, caller, version).await,
        "getCall" => {
            let context = format!("{}/{}/$metadata#communications/calls/$entity", state.base_url, version.as_str());
            let body = render::call_with_context(&call()?, &context);
            Ok(([(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response())
        }
        "deleteCall" => {
            state.engine.apply(&call()?.id, Input::HangUp).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        "listParticipants" => {
            let call = call()?;
            let value: Vec<Value> = participants(&call, &state.config.directory).into_iter().map(|(_, p)| p).collect();
            Ok(Json(with_context(json!({ "value": value }), state, version, &format!("communications/calls('{}')/participants", call.id)))
                .into_response())
        }
        "getParticipant" => {
            let (call, pid) = (call()?, tail[2]);
            let (_, p) = participants(&call, &state.config.directory).into_iter().find(|(id, _)| id == pid).ok_or_else(|| {
                GraphError::new(StatusCode::NOT_FOUND, "NotFound", format!("Participant '{pid}' is not in call '{}'.", call.id))
            })?;
            Ok(Json(with_context(p, state, version, "communications/calls/participants/$entity")).into_response())
        }
        "listOperations" => {
            let call = call()?;
            let value: Vec<Value> = call.operations.iter().map(|op| render_operation(state, caller, &call, op)).collect();
            Ok(Json(with_context(json!({ "value": value }), state, version, "communications/calls/operations")).into_response())
        }
        "getOperation" => {
            let (call, op_id) = (call()?, tail[2]);
            let op = call.operations.iter().find(|o| o.id == op_id).ok_or_else(|| {
                GraphError::new(StatusCode::NOT_FOUND, "NotFound", format!("Operation '{op_id}' does not exist on call '{}'.", tail[0]))
            })?;
            Ok(Json(with_context(render_operation(state, caller, &call, op), state, version, "communications/calls/operations/$entity"))
                .into_response())
        }
        "answerCall" | "rejectCall" | "redirectCall" | "keepAliveCall" | "transferCall" => {
            call_action(state, caller, &call()?, &action_name(tail[1]), headers, body).await
        }
        "playPrompt"
        | "recordResponse"
        | "subscribeToTone"
        | "sendDtmfTones"
        | "cancelMediaProcessing"
        | "muteCall"
        | "unmuteCall"
        | "updateRecordingStatus" => media_action(state, version, &call()?, &action_name(tail[1]), headers, body).await,
        "inviteParticipants" => invite_participants(state, caller, version, &call()?, headers, body).await,
        "muteParticipant" | "deleteParticipant" | "startHoldMusic" | "stopHoldMusic" => {
            participant_action(state, caller, version, &call()?, (row.id, tail[2]), headers, body).await
        }
        _ => Err(GraphError::not_served(row.id)),
    }
}

fn with_context(mut v: Value, state: &AppState, version: Version, context: &str) -> Value {
    if let Some(obj) = v.as_object_mut() {
        obj.insert("@odata.context".into(), json!(format!("{}/{}/$metadata#{context}", state.base_url, version.as_str())));
    }
    v
}

/// The call, if it is live and belongs to the caller. Another app's call is a 404, not a 403: its
/// existence is none of the caller's business.
async fn owned_call(state: &AppState, caller: &Caller, id: &str) -> Result<Call, GraphError> {
    let call = state
        .engine
        .get(id)
        .await
        .filter(|c| c.app_id.eq_ignore_ascii_case(&caller.app.client_id))
        .ok_or_else(|| GraphError::call_not_found(id))?;
    if !call.tenant_id.eq_ignore_ascii_case(&caller.tenant) {
        return Err(GraphError::forbidden(format!(
            "Call '{id}' belongs to tenant '{}', but the token is for tenant '{}'.",
            call.tenant_id, caller.tenant
        )));
    }
    Ok(call)
}

async fn list_calls(state: &AppState, caller: &Caller, version: Version) -> Result<Response, GraphError> {
    // With several nodes, the database has every node's calls.
    let live = match &state.cluster {
        Some(c) => c.membership.all_calls().await.map_err(crate::engine::EngineError::Store)?.into_iter().map(|s| s.call).collect(),
        None => state.engine.live_calls().await,
    };
    let mut calls: Vec<Call> = live
        .into_iter()
        .filter(|c| c.app_id.eq_ignore_ascii_case(&caller.app.client_id) && c.tenant_id.eq_ignore_ascii_case(&caller.tenant))
        .collect();
    calls.sort_by_key(|c| c.created_at);
    let value: Vec<Value> = calls.iter().map(render::call).collect();
    Ok(Json(with_context(json!({ "value": value }), state, version, "communications/calls")).into_response())
}

/// Resolves an identity against the directory, as a party the caller may reach.
fn resolve(state: &AppState, caller: &Caller, named: Named) -> Result<Party, GraphError> {
    let dir = &state.config.directory;
    let field = named.path.as_str();
    match named.who {
        IdentityRef::User { id, tenant_id } => {
            let user =
                dir.user(&id).ok_or_else(|| GraphError::from(err(format!("{field}.user.id"), format!("user '{id}' does not exist"))))?;
            if let Some(t) = tenant_id
                && !t.eq_ignore_ascii_case(&user.tenant_id)
            {
                return Err(err(format!("{field}.user.tenantId"), format!("'{t}' is not the tenant of user '{id}'")).into());
            }
            if !user.tenant_id.eq_ignore_ascii_case(&caller.tenant) {
                return Err(GraphError::forbidden(format!(
                    "{field}: user '{id}' is in tenant '{}', not in the caller's tenant '{}'; calls across tenants are not allowed.",
                    user.tenant_id, caller.tenant
                )));
            }
            Ok(Party::User { id: user.id.clone(), display_name: user.display_name.clone(), tenant_id: user.tenant_id.clone() })
        }
        // Its form was checked by the decoder.
        IdentityRef::Phone { number } => Ok(Party::Phone { number }),
        IdentityRef::Application { id } => {
            let app = dir
                .app(&id)
                .ok_or_else(|| GraphError::from(err(format!("{field}.application.id"), format!("application '{id}' does not exist"))))?;
            if let Some(why) = app.why_not_callable() {
                return Err(err(format!("{field}.application.id"), why).into());
            }
            Ok(Party::Application { id: app.client_id.clone(), display_name: app.name.clone() })
        }
        IdentityRef::ApplicationInstance { id, .. } => {
            let (app, inst) = dir.instance(&id).ok_or_else(|| {
                GraphError::from(err(format!("{field}.applicationInstance.id"), format!("application instance '{id}' does not exist")))
            })?;
            if let Some(why) = app.why_not_callable() {
                return Err(err(format!("{field}.applicationInstance.id"), why).into());
            }
            Ok(Party::ApplicationInstance {
                id: inst.id.clone(),
                display_name: inst.display_name.clone(),
                tenant_id: inst.tenant_id.clone(),
            })
        }
    }
}

pub use crate::graph::decode::MODALITIES;

/// The media a decoded body asked for, if the caller may have it.
fn media_config(media: Media, caller: &Caller) -> Result<MediaConfig, GraphError> {
    match media {
        Media::ServiceHosted => Ok(MediaConfig::ServiceHosted),
        Media::AppHosted => {
            caller.require("Calls.AccessMedia.All", "app-hosted media")?;
            Ok(MediaConfig::AppHosted)
        }
    }
}

/// One of `app`'s call slots (`max_concurrent_calls`, counted on this node), held while the call is
/// made; 429 when all are taken. `None` when the app has no limit.
pub(super) fn reserve_call(
    state: &AppState,
    app: &switchboard_engine::directory::Application,
) -> Result<Option<switchboard_engine::engine::Reservation>, GraphError> {
    let Some(max) = app.max_concurrent_calls else { return Ok(None) };
    state.engine.reserve(&app.client_id, max as usize).map(Some).ok_or_else(|| {
        GraphError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            format!("Application '{}' has {max} live calls, its limit (max_concurrent_calls); end one first.", app.name),
        )
    })
}

/// What the decoders may depend on: the server's settings.
fn policy(state: &AppState) -> Policy<'_> {
    Policy { callbacks: &state.callbacks }
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A group call member's participant id: a SIP one (as a SIP call's id) for a party reached over SIP
/// now, or the phone of a SIP call it `replaces`, so that the member's commands go to SIP and, after
/// a restart, the member is known to be gone with its dialog.
fn participant_id(state: &AppState, party: &Party, replaces: Option<&str>) -> String {
    let over_sip = state.sip.as_ref().is_some_and(|sip| match replaces {
        Some(call) => switchboard_sip::endpoint::is_sip_call(call),
        None => sip.reaches(party),
    });
    if over_sip { switchboard_sip::endpoint::new_call_id() } else { new_id() }
}

async fn create_call(state: &AppState, caller: &Caller, version: Version, headers: &HeaderMap, body: Body) -> Result<Response, GraphError> {
    let bytes = json_body(body, headers).await?;
    let cmd = decode::call::create_call(&bytes, &policy(state))?;
    let req = outgoing_call(state, caller, cmd)?;
    let _slot = reserve_call(state, &caller.app)?;
    let call = state.engine.place(req).await?;
    let location = format!("{}/{}/communications/calls/{}", state.base_url, version.as_str(), call.id);
    let mut resp =
        (StatusCode::CREATED, Json(with_context(render::call(&call), state, version, "communications/calls/$entity"))).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(axum::http::header::LOCATION, v);
    }
    Ok(resp)
}

/// A decoded create-call body, checked against the caller's permissions and the directory.
fn outgoing_call(state: &AppState, caller: &Caller, cmd: CreateCall) -> Result<OutgoingCall, GraphError> {
    let media_config = media_config(cmd.media, caller)?;
    if let Some(t) = cmd.tenant_id.as_deref()
        && !t.eq_ignore_ascii_case(&caller.tenant)
    {
        let problem = format!("'{t}' is not the tenant of the token ('{}')", caller.tenant);
        // Another tenant of the directory is a refusal across tenants, like any other; an unknown one is a bad value.
        if state.config.directory.tenant(t).is_some() {
            return Err(GraphError::forbidden(format!("tenantId: {problem}; calls across tenants are not allowed.")));
        }
        return Err(err("tenantId", problem).into());
    }
    let ring_timeout_ms = cmd.ringing_timeout_s.map_or(state.config.calls.ring_timeout_ms, |s| s * 1000);
    // The source: the app itself, or one of its application instances.
    let mut application_instance = None;
    let mut source = Party::Application { id: caller.app.client_id.clone(), display_name: caller.app.name.clone() };
    if let Some(id) = cmd.source_instance.as_deref() {
        let own = caller.app.instances.iter().find(|i| i.id.eq_ignore_ascii_case(id)).ok_or_else(|| {
            GraphError::forbidden(format!(
                "source.identity.applicationInstance.id: application instance '{id}' does not belong to application '{}'.",
                caller.app.name
            ))
        })?;
        if !own.tenant_id.eq_ignore_ascii_case(&caller.tenant) {
            return Err(GraphError::forbidden(format!(
                "Application instance '{id}' is in tenant '{}', not in the token's tenant '{}'.",
                own.tenant_id, caller.tenant
            )));
        }
        application_instance = Some(own.id.clone());
        source =
            Party::ApplicationInstance { id: own.id.clone(), display_name: own.display_name.clone(), tenant_id: own.tenant_id.clone() };
    }
    // One target is a peer-to-peer call; several (without meetingInfo) make a new group call.
    let mut parties: Vec<Party> = Vec::with_capacity(cmd.targets.len());
    for named in cmd.targets {
        let p = named.path.trim_end_matches(".identity").to_owned();
        let party = resolve(state, caller, named)?;
        match &party {
            Party::Phone { .. } if application_instance.is_none() => {
                return Err(GraphError::forbidden(format!(
                    "{p}.identity: calls to PSTN numbers must be placed from an application instance: set source.identity.applicationInstance to one of the app's instances with a phone number."
                )));
            }
            Party::Application { id, .. } | Party::ApplicationInstance { id, .. }
                if id.eq_ignore_ascii_case(&caller.app.client_id)
                    || application_instance.as_deref().is_some_and(|i| i.eq_ignore_ascii_case(id)) =>
            {
                return Err(GraphError::forbidden(format!("{p}.identity: a bot cannot call itself.")));
            }
            _ => {}
        }
        // A party named twice is invited once.
        if !parties.contains(&party) {
            parties.push(party);
        }
    }
    let members: Vec<(String, Party)> = if parties.len() > 1 {
        caller.require("Calls.InitiateGroupCall.All", "placing a group call")?;
        parties.iter().map(|p| (participant_id(state, p, None), p.clone())).collect()
    } else {
        caller.require("Calls.Initiate.All", "placing a peer-to-peer call")?;
        Vec::new()
    };
    let target = parties.swap_remove(0);
    let peer_participant_id = members.first().map_or_else(new_id, |(pid, _)| pid.clone());
    // A call that goes over SIP gets an id that says so (it cannot be resumed on the sim after a restart).
    let over_sip = members.is_empty() && state.sip.as_ref().is_some_and(|sip| sip.reaches(&target));
    Ok(OutgoingCall {
        id: if over_sip { switchboard_sip::endpoint::new_call_id() } else { new_id() },
        app_id: caller.app.client_id.clone(),
        tenant_id: caller.tenant.clone(),
        callback_uri: cmd.callback_uri,
        source,
        target,
        application_instance,
        requested_modalities: cmd.requested_modalities,
        media_config,
        subject: cmd.subject,
        my_participant_id: new_id(),
        peer_participant_id,
        call_chain_id: new_id(),
        ring_timeout_ms,
        members,
    })
}

async fn call_action(
    state: &AppState,
    caller: &Caller,
    call: &Call,
    action: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, GraphError> {
    let bytes = json_body(body, headers).await?;
    let policy = policy(state);
    // Each body is decoded first; then the caller's permissions and the directory.
    let input = match action {
        // keepAlive takes no body.
        "keepalive" => Input::KeepAlive,
        "answer" => {
            let a = decode::action::answer(&bytes, &policy)?;
            let media_config = media_config(a.media, caller)?;
            Input::Answer { callback_uri: a.callback_uri, modalities: a.accepted_modalities, media_config }
        }
        "reject" => Input::Reject { reason: decode::action::reject(&bytes, &policy)? },
        "redirect" => {
            let r = decode::action::redirect(&bytes, &policy)?;
            caller.require("Calls.Initiate.All", "redirecting a call")?;
            let mut parties = Vec::new();
            for named in r.targets {
                let p = named.path.trim_end_matches(".identity").to_owned();
                let party = resolve(state, caller, named)?;
                if party.is_phone() && call.application_instance.is_none() {
                    return Err(GraphError::forbidden(format!(
                        "{p}: redirecting to a PSTN number needs a call that belongs to an application instance (it came in on the instance or its number)."
                    )));
                }
                parties.push(party);
            }
            Input::Redirect { targets: parties }
        }
        _ => transfer_input(state, caller, call, decode::transfer::transfer(&bytes)?).await?,
    };
    let keep_alive = matches!(input, Input::KeepAlive);
    let operation = match &input {
        Input::Transfer { operation_id, .. } => Some(operation_id.clone()),
        _ => None,
    };
    state.engine.apply(&call.id, input).await?;
    let mut resp = if keep_alive { StatusCode::OK.into_response() } else { StatusCode::ACCEPTED.into_response() };
    // The 2018 beta's transfer was tracked by an operation; point at it.
    if let (Some(op), true) = (operation, is_beta_2018(caller)) {
        let location = format!("{}/beta/app/calls/{}/operations/{op}", state.base_url, call.id);
        if let Ok(v) = HeaderValue::from_str(&location) {
            resp.headers_mut().insert(axum::http::header::LOCATION, v);
        }
    }
    Ok(resp)
}

/// A media action: its operation in the response (200, with `Location`), as Graph answers them.
async fn media_action(
    state: &AppState,
    version: Version,
    call: &Call,
    action: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, GraphError> {
    let bytes = json_body(body, headers).await?;
    let cmd = decode::media::media(action, &bytes)?;
    // Prompts, recordings and tones are Graph's media: a bot that hosts its own cannot ask for them.
    let service_media = matches!(action, "playprompt" | "recordresponse" | "subscribetotone");
    if service_media && call.media_config == MediaConfig::AppHosted {
        return Err(GraphError::new(
            StatusCode::CONFLICT,
            "UnsupportedMediaConfig",
            format!("{action}: is supported only on calls with serviceHostedMediaConfig; call '{}' hosts its own media.", call.id),
        ));
    }
    let operation_id = new_id();
    let fallback = switchboard_core::call::Operation::new(operation_id.clone(), cmd.request.kind(), cmd.client_context.clone());
    let input = Input::Media { operation_id: operation_id.clone(), client_context: cmd.client_context, request: cmd.request };
    let after = state.engine.apply(&call.id, input).await?;
    let op = kept_operation(&after, &operation_id, fallback);
    Ok(operation_response(state, version, call, &op, StatusCode::OK))
}

/// An operation in the response, with `Location` naming it (Graph answers these with 200, hold music
/// with 202).
fn operation_response(
    state: &AppState,
    version: Version,
    call: &Call,
    op: &switchboard_core::call::Operation,
    status: StatusCode,
) -> Response {
    let location = format!("{}/{}/communications/calls/{}/operations/{}", state.base_url, version.as_str(), call.id, op.id);
    let mut resp = (status, Json(render::operation(op, &state.base_url))).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(axum::http::header::LOCATION, v);
    }
    resp
}

/// The operation `id` as the call now holds it, or, for one that completed at once and was pushed out
/// of the call's list already (by ten running ones), as it was.
fn kept_operation(after: &Call, id: &str, fallback: switchboard_core::call::Operation) -> switchboard_core::call::Operation {
    after
        .operations
        .iter()
        .find(|o| o.id == id)
        .cloned()
        .unwrap_or(switchboard_core::call::Operation { status: switchboard_core::call::OperationStatus::Completed, ..fallback })
}

/// `participants/invite`: checked against the directory and the bot's calls, then the core's.
async fn invite_participants(
    state: &AppState,
    caller: &Caller,
    version: Version,
    call: &Call,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, GraphError> {
    let bytes = json_body(body, headers).await?;
    let invite = decode::participants::invite(&bytes)?;
    caller.require("Calls.InitiateGroupCall.All", "inviting participants")?;
    let mut invitees = Vec::with_capacity(invite.participants.len());
    for (i, (named, replaces)) in invite.participants.into_iter().enumerate() {
        let field = format!("participants[{i}]");
        let party = resolve(state, caller, named)?;
        if target_is_this_bot(&party, caller) {
            return Err(conflict(&format!("{field}.identity"), "names the bot itself"));
        }
        if party.is_phone() && call.application_instance.is_none() {
            return Err(GraphError::forbidden(format!(
                "{field}.identity: inviting a PSTN number needs a call that belongs to an application instance."
            )));
        }
        if let Some(other) = &replaces {
            // Both calls must be on one node: bring the replaced call here if another node has it.
            if let Some(cluster) = &state.cluster
                && !state.engine.holds(other)
            {
                cluster.pull(other, &caller.app.client_id).await;
            }
            let replaced = owned_call(state, caller, other)
                .await
                .map_err(|_| conflict(&format!("{field}.replacesCallId"), &format!("'{other}' is not a live call of this application")))?;
            let fits = replaced.id != call.id
                && !replaced.group
                && replaced.state == switchboard_core::call::CallState::Established
                && *replaced.remote() == party;
            if !fits {
                return Err(conflict(
                    &format!("{field}.replacesCallId"),
                    &format!("must be another established peer-to-peer call of the bot whose peer is the invitee; '{other}' is not"),
                ));
            }
        }
        let participant_id = participant_id(state, &party, replaces.as_deref());
        invitees.push(switchboard_core::call::Invitee { participant_id, party, replaces_call_id: replaces });
    }
    let operation_id = new_id();
    let mut fallback = switchboard_core::call::Operation::new(operation_id.clone(), OperationKind::Invite, invite.client_context.clone());
    fallback.invitees = invitees.clone();
    let input = Input::Invite {
        operation_id: operation_id.clone(),
        client_context: invite.client_context,
        invitees,
        ring_timeout_ms: state.config.calls.ring_timeout_ms,
    };
    let after = state.engine.apply(&call.id, input).await?;
    let op = kept_operation(&after, &operation_id, fallback);
    Ok(operation_response(state, version, call, &op, StatusCode::OK))
}

/// `participants/{id}/mute`, `DELETE participants/{id}`, `startHoldMusic`, `stopHoldMusic`.
async fn participant_action(
    state: &AppState,
    caller: &Caller,
    version: Version,
    call: &Call,
    (route, participant_id): (&str, &str),
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, GraphError> {
    // DELETE takes no body (whatever comes is ignored); the others take a JSON one.
    let bytes = if route == "deleteParticipant" { Default::default() } else { json_body(body, headers).await? };
    let body = decode::participants::participant(&bytes, route == "startHoldMusic")?;
    if route == "deleteParticipant" && !caller.has("Calls.JoinGroupCall.All") && !caller.has("Calls.JoinGroupCallAsGuest.All") {
        return Err(GraphError::new(
            StatusCode::FORBIDDEN,
            "7504",
            "Insufficient permissions: removing a participant needs Calls.JoinGroupCall.All or Calls.JoinGroupCallAsGuest.All.",
        ));
    }
    let action = match route {
        "muteParticipant" => ParticipantAction::Mute,
        "deleteParticipant" => ParticipantAction::Remove,
        "startHoldMusic" => ParticipantAction::StartHoldMusic { prompt: body.prompt },
        _ => ParticipantAction::StopHoldMusic,
    };
    let kind = match &action {
        ParticipantAction::StartHoldMusic { .. } => OperationKind::StartHoldMusic,
        ParticipantAction::StopHoldMusic => OperationKind::StopHoldMusic,
        _ => OperationKind::MuteParticipant,
    };
    let remove = action == ParticipantAction::Remove;
    let operation_id = new_id();
    let fallback = switchboard_core::call::Operation::new(operation_id.clone(), kind, body.client_context.clone());
    let input = Input::Participant {
        operation_id: operation_id.clone(),
        client_context: body.client_context,
        participant_id: participant_id.to_owned(),
        action,
    };
    let after = state.engine.apply(&call.id, input).await?;
    if remove {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let op = kept_operation(&after, &operation_id, fallback);
    let status = if kind == OperationKind::MuteParticipant { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok(operation_response(state, version, call, &op, status))
}

fn is_beta_2018(caller: &Caller) -> bool {
    crate::graph::Format::of(Some(&caller.app)) == crate::graph::Format::Beta2018
}

/// An operation as the caller's notification format shows it.
fn render_operation(state: &AppState, caller: &Caller, call: &Call, op: &switchboard_core::call::Operation) -> Value {
    if is_beta_2018(caller) && op.kind.is_transfer() {
        let mut v = render::operation_2018(&call.id, op, 0);
        // A GET has no notification etag to show.
        if let Some(o) = v.as_object_mut() {
            o.remove("@odata.etag");
        }
        v
    } else {
        render::operation(op, &state.base_url)
    }
}

/// The participants of a call (the bot first), with their ids.
fn participants(call: &Call, dir: &crate::config::Directory) -> Vec<(String, Value)> {
    render::participants(call, dir.bot_party(&call.app_id, call.application_instance.as_deref()).as_ref())
}

/// A well-formed transfer that the calls as they are now refuse (the target is already in the call, the
/// consultation call is gone or elsewhere): 409, since the same request succeeds on another call.
fn conflict(field: &str, problem: &str) -> GraphError {
    GraphError::new(StatusCode::CONFLICT, "Conflict", format!("{field}: {problem}."))
}

/// A decoded transfer, checked against the caller's permissions, the directory and the bot's calls.
async fn transfer_input(state: &AppState, caller: &Caller, call: &Call, cmd: decode::transfer::Transfer) -> Result<Input, GraphError> {
    caller.require("Calls.Initiate.All", "transferring a call")?;
    let decode::transfer::Transfer { target, replaces_call_id: replaces, client_context, transferee, sip_headers } = cmd;
    let field = if target.path == "target" { "target" } else { "transferTarget.identity" };
    let target = resolve(state, caller, target)?;
    let me_app = target_is_this_bot(&target, caller);
    if me_app {
        return Err(GraphError::forbidden(format!("{field}: the transfer target is this bot itself.")));
    }
    if let Some(app) = state.config.directory.app_of(&target) {
        // Another bot of the directory gets an ordinary incoming call, so it must be able to take one here.
        let tenant = match &target {
            Party::ApplicationInstance { tenant_id, .. } => tenant_id.as_str(),
            _ => app.tenants.iter().find(|t| t.eq_ignore_ascii_case(&call.tenant_id)).map_or("", String::as_str),
        };
        if !tenant.eq_ignore_ascii_case(&call.tenant_id) {
            return Err(GraphError::forbidden(format!(
                "{field}: application '{}' cannot take calls in tenant '{}'; transfers across tenants are not allowed.",
                app.name, call.tenant_id
            )));
        }
        if app.calling_webhook.is_none() {
            return Err(err(field, format!("application '{}' has no calling webhook to offer the transferred call to", app.name)).into());
        }
    }
    if call.group && call.members.iter().any(|m| m.party == target) {
        return Err(conflict(field, "the transfer target is already in this call"));
    }
    if !call.group && &target == call.remote() {
        return Err(conflict(field, "the transfer target is the transferee itself"));
    }
    if target.is_phone() && call.application_instance.is_none() {
        return Err(GraphError::forbidden(format!(
            "{field}: transfers to PSTN numbers need a call that belongs to an application instance (one that came in on the instance or its number, or was placed with source.identity.applicationInstance); call '{}' reached the bot through its application id.",
            call.id
        )));
    }
    let transferee = transferee_of(state, caller, call, transferee)?;
    let replaces_call_id = match replaces {
        None => None,
        Some((id, rfield)) => {
            let id = id.as_str();
            if id == call.id {
                return Err(conflict(rfield, "a call cannot replace itself; name the bot's call with the transfer target"));
            }
            // Both calls must be on one node: bring the consultation call here if another node has it.
            if let Some(cluster) = &state.cluster
                && !state.engine.holds(id)
            {
                cluster.pull(id, &caller.app.client_id).await;
            }
            let other = state
                .engine
                .get(id)
                .await
                .filter(|c| c.app_id.eq_ignore_ascii_case(&caller.app.client_id))
                .ok_or_else(|| conflict(rfield, &format!("'{id}' is not a live call of this application")))?;
            if other.group {
                return Err(conflict(rfield, &format!("call '{id}' is a group call; the consultation call must be peer-to-peer")));
            }
            if other.state != switchboard_core::call::CallState::Established {
                return Err(conflict(
                    rfield,
                    &format!("call '{id}' is '{}'; the consultation call must be established", other.state.as_str()),
                ));
            }
            if other.remote() != &target {
                return Err(conflict(rfield, &format!("call '{id}' is not with the transfer target named in {field}")));
            }
            Some(other.id)
        }
    };
    Ok(Input::Transfer {
        target,
        replaces_call_id,
        timeout_ms: state.config.calls.ring_timeout_ms,
        operation_id: new_id(),
        client_context,
        transferee,
        sip_headers,
    })
}

/// The transfer's `transferee`, checked against the call: in a peer-to-peer call it may only name the
/// peer; in a group call it names a joined member by `participantId`, `identity` or both (a group
/// transfer without one is the core's refusal). Returns the member's participant id in a group call.
fn transferee_of(state: &AppState, caller: &Caller, call: &Call, named: Option<Transferee>) -> Result<Option<String>, GraphError> {
    // None: the peer of a peer-to-peer call; a group call refuses it in the core.
    let Some(named) = named else { return Ok(None) };
    let who = match named.identity {
        Some(identity) => Some(resolve(state, caller, identity)?),
        None => None,
    };
    let pid = named.participant_id.as_deref();
    if pid.is_none() && who.is_none() {
        return Err(err("transferee", "must name the participant by participantId or identity").into());
    }
    if !call.group {
        if who.as_ref().is_some_and(|w| w != call.remote()) {
            return Err(conflict("transferee.identity", "names a party that is not in this call"));
        }
        if let Some(pid) = pid.filter(|pid| *pid != call.peer_participant_id) {
            return Err(conflict(
                "transferee.participantId",
                &format!("'{pid}' is not a participant of call '{}' other than the bot", call.id),
            ));
        }
        return Ok(None);
    }
    let joined = || call.members.iter().filter(|m| m.joined);
    let member = match (pid, &who) {
        (None, None) => return Err(err("transferee", "must name the participant by participantId or identity").into()),
        (Some(pid), _) => joined().find(|m| m.participant_id == pid).ok_or_else(|| {
            conflict("transferee.participantId", &format!("'{pid}' is not a joined participant of group call '{}'", call.id))
        })?,
        (None, Some(w)) => joined()
            .find(|m| m.party == *w)
            .ok_or_else(|| conflict("transferee.identity", "names a party that has not joined this group call"))?,
    };
    if who.as_ref().is_some_and(|w| *w != member.party) {
        return Err(conflict(
            "transferee.identity",
            &format!("is not participant '{}' named by transferee.participantId", member.participant_id),
        ));
    }
    Ok(Some(member.participant_id.clone()))
}

fn target_is_this_bot(target: &Party, caller: &Caller) -> bool {
    match target {
        Party::Application { id, .. } => id.eq_ignore_ascii_case(&caller.app.client_id),
        Party::ApplicationInstance { id, .. } => caller.app.instances.iter().any(|i| i.id.eq_ignore_ascii_case(id)),
        _ => false,
    }
}
