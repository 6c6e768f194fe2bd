//! The sim control API (`/sim/v1`), protected by the admin key: place inbound calls, hang up from the
//! far end, change behaviours, look at the world and the outbox.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use switchboard_core::call::IncomingCall;
use switchboard_core::party::Party;

use super::{AppState, GraphError, json_body};
use crate::config::{Behaviour, is_e164};
use crate::graph::parse::{self, Obj, err};
use crate::store::OutboxStatus;

/// The admin key, in exactly one `X-Sim-Admin-Key` header; nowhere else (not as a bearer token,
/// which is a Graph access token's place).
fn admin(state: &AppState, headers: &HeaderMap) -> Result<(), GraphError> {
    let presented = super::single_header(headers, "X-Sim-Admin-Key")?;
    // The console's page: its session cookie and CSRF token stand for the key.
    if presented.is_none() {
        match state.console.authorizes(headers) {
            Ok(true) => return Ok(()),
            Err(problem) => return Err(GraphError::new(StatusCode::FORBIDDEN, "Forbidden", problem)),
            Ok(false) => {}
        }
    }
    match presented {
        None if headers.contains_key(axum::http::header::AUTHORIZATION) => Err(GraphError::unauthorized(
            "The sim control API takes the admin key in the X-Sim-Admin-Key header only, not in Authorization.",
        )),
        None => Err(GraphError::unauthorized("The sim control API needs the admin key in the X-Sim-Admin-Key header.")),
        Some(k) if crate::identity::same_secret(k, &state.config.sim.admin_key) => Ok(()),
        Some(_) => Err(GraphError::new(StatusCode::FORBIDDEN, "Forbidden", "The admin key is wrong.")),
    }
}

/// A party of the directory by user id or phone number.
fn party(state: &AppState, key: &str, field: &str) -> Result<Party, GraphError> {
    let dir = &state.config.directory;
    if let Some(u) = dir.user(key) {
        return Ok(Party::User { id: u.id.clone(), display_name: u.display_name.clone(), tenant_id: u.tenant_id.clone() });
    }
    if is_e164(key) {
        return Ok(Party::Phone { number: key.to_owned() });
    }
    Err(err(field, format!("'{key}' is neither a user id of the directory nor an E.164 phone number")).into())
}

/// `POST /sim/v1/calls {"from": user id | number, "to": app id | instance id | instance number}`.
pub(super) async fn place_inbound(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, GraphError> {
    admin(&state, &headers)?;
    let bytes = json_body(body, &headers).await?;
    let root = parse::object(&bytes)?;
    let obj = Obj::root(&root).ok_or_else(|| GraphError::bad_request("expected a JSON object"))?;
    let caller = party(&state, obj.str_req("from")?, "from")?;
    let to = obj.str_req("to")?;
    let dir = &state.config.directory;
    let (app, target, instance, tenant) = if let Some((app, inst)) = dir.instance(to).or_else(|| dir.instance_by_phone(to)) {
        let target =
            Party::ApplicationInstance { id: inst.id.clone(), display_name: inst.display_name.clone(), tenant_id: inst.tenant_id.clone() };
        (app, target, Some(inst.id.clone()), inst.tenant_id.clone())
    } else if let Some(app) = dir.app(to) {
        let tenant = match &caller {
            Party::User { tenant_id, .. } => tenant_id.clone(),
            _ => {
                return Err(err("to", "a PSTN caller can only reach an application instance or its phone number").into());
            }
        };
        if !app.tenants.iter().any(|t| t.eq_ignore_ascii_case(&tenant)) {
            return Err(GraphError::forbidden(format!("Application '{}' is not consented in the caller's tenant '{tenant}'.", app.name)));
        }
        (app, Party::Application { id: app.client_id.clone(), display_name: app.name.clone() }, None, tenant)
    } else {
        return Err(err(
            "to",
            format!("'{to}' is not an application id, application instance id or instance phone number of the directory"),
        )
        .into());
    };
    if let Some(why) = app.why_not_callable() {
        return Err(err("to", why).into());
    }
    // Checked, not held: the call is offered through the sim, after this request.
    drop(super::graph::reserve_call(&state, app)?);
    if app.calling_webhook.is_none() {
        return Err(GraphError::new(
            StatusCode::CONFLICT,
            "NoCallingWebhook",
            format!("Application '{}' has no calling webhook to offer the call to.", app.name),
        ));
    }
    let id = match obj.str_opt("callId")? {
        None => uuid::Uuid::new_v4().to_string(),
        Some(id) if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') => {
            return Err(err("callId", "must be 1 to 64 letters, digits or '-'").into());
        }
        Some(id) if state.engine.get(id).await.is_some() => {
            return Err(GraphError::new(StatusCode::CONFLICT, "CallIdTaken", format!("callId: a live call already has id '{id}'")));
        }
        Some(id) => id.to_owned(),
    };
    // The sim claims the id first: of several requests racing for one id, exactly one gets on.
    let Some(leg_id) = state.sim.attach_caller(&id, &app.client_id, caller.clone()) else {
        return Err(GraphError::new(StatusCode::CONFLICT, "CallIdTaken", format!("callId: a live call already has id '{id}'")));
    };
    let req = IncomingCall {
        id: id.clone(),
        app_id: app.client_id.clone(),
        tenant_id: tenant,
        source: caller,
        target,
        application_instance: instance,
        my_participant_id: uuid::Uuid::new_v4().to_string(),
        peer_participant_id: uuid::Uuid::new_v4().to_string(),
        call_chain_id: uuid::Uuid::new_v4().to_string(),
        transferor: None,
    };
    if let Err(e) = state.engine.offer(req).await {
        // Quietly: a hang-up would be news about a call of that id, and it is not this request's.
        state.sim.detach_caller(&id, &leg_id);
        return Err(e.into());
    }
    Ok((StatusCode::CREATED, Json(json!({"callId": id, "legId": leg_id}))).into_response())
}

pub(super) async fn hang_up_remote(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(call_id): Path<String>,
) -> Result<Response, GraphError> {
    admin(&state, &headers)?;
    if state.sim.hang_up_remote(&call_id) {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else if state.sim.knew_call(&call_id) {
        // The call exists (or existed) but its far end is gone already: a conflict, not a missing call.
        Err(GraphError::new(
            StatusCode::CONFLICT,
            "CallEnded",
            format!("Call '{call_id}' has no remote leg any more; its far end is gone."),
        ))
    } else {
        Err(GraphError::new(StatusCode::NOT_FOUND, "NotFound", format!("Call '{call_id}' has no remote leg in the sim.")))
    }
}

pub(super) async fn hang_up_leg(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(leg_id): Path<String>,
) -> Result<Response, GraphError> {
    admin(&state, &headers)?;
    if state.sim.hang_up_leg(&leg_id) {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(GraphError::new(StatusCode::NOT_FOUND, "NotFound", format!("Leg '{leg_id}' does not exist.")))
    }
}

pub(super) async fn set_behaviour(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    body: Body,
) -> Result<Response, GraphError> {
    admin(&state, &headers)?;
    let bytes = json_body(body, &headers).await?;
    let behaviour: Behaviour = serde_json::from_slice(&bytes).map_err(|e| {
        GraphError::bad_request(format!(
            "Invalid behaviour: {e}. Use {{\"kind\":\"answer\",\"after_ms\":200,\"hang_up_after_ms\":null}}, {{\"kind\":\"busy\"}}, {{\"kind\":\"decline\"}} or {{\"kind\":\"no-answer\"}}."
        ))
    })?;
    behaviour.validate().map_err(|p| GraphError::bad_request(format!("Invalid behaviour: {p}")))?;
    if !state.sim.set_behaviour(&key, behaviour.clone()) {
        return Err(unknown_party(&key));
    }
    Ok(Json(json!({"party": key, "behaviour": behaviour})).into_response())
}

/// `GET /sim/v1/parties/{key}/behaviour`: how a user or number acts now, and whether that was set at
/// run time (`PUT`) or comes from the configuration.
pub(super) async fn get_behaviour(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> Result<Response, GraphError> {
    admin(&state, &headers)?;
    let (behaviour, changed) = state.sim.behaviour_of(&key).ok_or_else(|| unknown_party(&key))?;
    Ok(Json(json!({"party": key, "behaviour": behaviour, "source": if changed { "set" } else { "configured" }})).into_response())
}

/// `GET /sim/v1/directory`: who can call and be called (users and numbers, with how each acts now)
/// and the bots (apps, with their instances); the secrets stay out.
pub(super) async fn directory(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, GraphError> {
    admin(&state, &headers)?;
    let dir = &state.config.directory;
    let behaviour = |key: &str| {
        let (b, set) = state.sim.behaviour_of(key).unwrap_or_default();
        (json!(b), if set { "set" } else { "configured" })
    };
    let users: Vec<Value> = dir
        .users
        .iter()
        .map(|u| {
            let (b, source) = behaviour(&u.id);
            json!({"id": u.id, "displayName": u.display_name, "tenantId": u.tenant_id, "behaviour": b, "source": source})
        })
        .collect();
    let numbers: Vec<Value> = dir
        .numbers
        .iter()
        .map(|n| {
            let (b, source) = behaviour(&n.number);
            json!({"number": n.number, "behaviour": b, "source": source})
        })
        .collect();
    let apps: Vec<Value> = dir
        .applications
        .iter()
        .map(|a| {
            let instances: Vec<Value> = a
                .instances
                .iter()
                .map(|i| json!({"id": i.id, "displayName": i.display_name, "tenantId": i.tenant_id, "phone": i.phone}))
                .collect();
            json!({"id": a.client_id, "name": a.name, "tenants": a.tenants, "instances": instances})
        })
        .collect();
    Ok(Json(json!({"users": users, "numbers": numbers, "apps": apps})).into_response())
}

fn unknown_party(key: &str) -> GraphError {
    GraphError::new(StatusCode::NOT_FOUND, "NotFound", format!("'{key}' is neither a user id nor a PSTN number of the directory."))
}

/// `POST /sim/v1/reset`: ends every call (the sim's legs hang up; a call without one is hung up as by
/// its bot), then clears the world, the calls' stories and the apps' faults, and puts the configured
/// behaviours back. Notifications already owed are still delivered.
pub(super) async fn reset(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, GraphError> {
    admin(&state, &headers)?;
    // Faults first: the notifications the reset itself causes go out plainly.
    for app in &state.config.directory.applications {
        state.notifier.set_faults(&app.client_id, None);
    }
    let live_before = state.engine.live_calls().await.len();
    let legs = state.sim.reset();
    settle(&state).await;
    for call in state.engine.live_calls().await {
        // Ended meanwhile, or ending: either way it is going.
        let _ = state.engine.apply(&call.id, switchboard_core::call::Input::HangUp).await;
    }
    settle(&state).await;
    let live_after = state.engine.live_calls().await.len();
    state.engine.history().clear();
    tracing::info!(legs, calls = live_before.saturating_sub(live_after), "the sim was reset");
    Ok(Json(json!({"legsHungUp": legs, "callsEnded": live_before.saturating_sub(live_after), "callsLive": live_after})).into_response())
}

/// Waits (a little) for the network's events to be applied: a busy SIP network may never be idle.
async fn settle(state: &AppState) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), state.engine.settled()).await;
}

pub(super) async fn world(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, GraphError> {
    admin(&state, &headers)?;
    let calls: Vec<Value> = state
        .engine
        .live_calls()
        .await
        .iter()
        .map(|c| json!({"id": c.id, "appId": c.app_id, "tenantId": c.tenant_id, "state": c.state.as_str(), "direction": c.direction, "remote": c.remote()}))
        .collect();
    Ok(Json(json!({"legs": state.sim.legs(), "calls": calls})).into_response())
}

fn clock_json(state: &AppState, now_ms: u64) -> Value {
    let now = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default();
    json!({"virtual": state.engine.clock().is_virtual(), "nowMs": now_ms, "now": now})
}

/// `GET /sim/v1/clock`: the time everything in the server goes by.
pub(super) async fn clock(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, GraphError> {
    admin(&state, &headers)?;
    Ok(Json(clock_json(&state, state.engine.clock().now_ms())).into_response())
}

/// `POST /sim/v1/clock {"advance_ms": N}`: moves virtual time forward; every timer that falls due
/// fires, in order, and what it causes settles, before the answer.
pub(super) async fn advance_clock(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, GraphError> {
    admin(&state, &headers)?;
    let bytes = json_body(body, &headers).await?;
    let root = parse::object(&bytes)?;
    let fields = root.as_object().ok_or_else(|| GraphError::bad_request("expected a JSON object"))?;
    if let Some(other) = fields.keys().find(|k| *k != "advance_ms") {
        return Err(err(other.as_str(), "unknown field; the only field is advance_ms").into());
    }
    let by = match fields.get("advance_ms") {
        None | Some(Value::Null) => return Err(err("advance_ms", "is required: how many milliseconds to move the clock forward").into()),
        Some(v) => match parse::integer(v).and_then(|n| u64::try_from(n).ok()) {
            Some(n) if n <= super::spec::MAX_ADVANCE_MS => n,
            _ => {
                return Err(err(
                    "advance_ms",
                    format!("must be a whole number of milliseconds from 0 to {} (a year), not {v}", super::spec::MAX_ADVANCE_MS),
                )
                .into());
            }
        },
    };
    match state.engine.advance_clock(by).await {
        Ok(now) => Ok(Json(clock_json(&state, now)).into_response()),
        Err(e) => Err(GraphError::new(StatusCode::CONFLICT, "ClockNotVirtual", e.to_string())),
    }
}

/// `?status=failed|pending` (default failed), read by hand so that a bad query gets the Graph envelope.
fn outbox_status(query: Option<&str>) -> Result<OutboxStatus, GraphError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or_default())
        .map_err(|e| GraphError::bad_request(format!("The query string is malformed: {e}.")))?;
    let given: Vec<&str> = pairs.iter().filter(|(k, _)| k == "status").map(|(_, v)| v.as_str()).collect();
    match given.as_slice() {
        [] | ["failed"] => Ok(OutboxStatus::Failed),
        ["pending"] => Ok(OutboxStatus::Pending),
        [other] => Err(GraphError::bad_request(format!("status '{other}' is not one of pending, failed."))),
        _ => Err(GraphError::bad_request("status is given more than once.")),
    }
}

pub(super) async fn outbox(State(state): State<AppState>, headers: HeaderMap, RawQuery(query): RawQuery) -> Result<Response, GraphError> {
    admin(&state, &headers)?;
    let status = outbox_status(query.as_deref())?;
    let rows = state.engine_store_outbox(status).await?;
    Ok(Json(json!({"value": rows})).into_response())
}

/// `PUT /sim/v1/apps/{appId}/faults`: faults injected into the app's notifications from now on.
pub(super) async fn set_faults(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(app_id): Path<String>,
    body: Body,
) -> Result<Response, GraphError> {
    admin(&state, &headers)?;
    let app = known_app(&state, &app_id)?;
    let bytes = json_body(body, &headers).await?;
    let mut value: Value = serde_json::from_slice(&bytes).map_err(|e| GraphError::bad_request(format!("Invalid faults: {e}.")))?;
    whole_numbers(&mut value);
    let faults: crate::notifier::Faults =
        serde_json::from_value(value).map_err(|e| GraphError::bad_request(format!("Invalid faults: {e}.")))?;
    faults.validate().map_err(|p| GraphError::bad_request(format!("Invalid faults: {p}.")))?;
    // Dropping every attempt would park the notifications as failed: that is not a retry test.
    let attempts = state.config.notifications.max_attempts;
    if faults.drop_first >= attempts {
        return Err(GraphError::bad_request(format!(
            "Invalid faults: dropFirst: {} would drop every one of the {attempts} delivery attempts; use at most {}.",
            faults.drop_first,
            attempts.saturating_sub(1)
        )));
    }
    state.notifier.set_faults(&app, Some(faults.clone()));
    tracing::info!(app_id = app, ?faults, "notification faults set");
    Ok(Json(json!({"appId": app, "faults": faults})).into_response())
}

/// `GET /sim/v1/apps/{appId}/faults`: the faults injected now (all zero when none).
pub(super) async fn get_faults(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(app_id): Path<String>,
) -> Result<Response, GraphError> {
    admin(&state, &headers)?;
    let app = known_app(&state, &app_id)?;
    Ok(Json(json!({"appId": app, "faults": state.notifier.faults(&app)})).into_response())
}

/// `DELETE /sim/v1/apps/{appId}/faults`: no more faults.
pub(super) async fn clear_faults(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(app_id): Path<String>,
) -> Result<Response, GraphError> {
    admin(&state, &headers)?;
    let app = known_app(&state, &app_id)?;
    state.notifier.set_faults(&app, None);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Whole numbers written as floats (`59.0`) are integers, as everywhere in the API.
fn whole_numbers(value: &mut Value) {
    match value {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && (0.0..18_446_744_073_709_551_616.0).contains(&f)
            {
                *value = Value::from(f as u64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_numbers),
        Value::Object(fields) => fields.values_mut().for_each(whole_numbers),
        _ => {}
    }
}

fn known_app(state: &AppState, app_id: &str) -> Result<String, GraphError> {
    state
        .config
        .directory
        .app(app_id)
        .map(|a| a.client_id.clone())
        .ok_or_else(|| GraphError::new(StatusCode::NOT_FOUND, "NotFound", format!("'{app_id}' is not an application of the directory.")))
}

pub(super) async fn retry_outbox(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, GraphError> {
    admin(&state, &headers)?;
    let n = state.notifier.retry_failed().await.map_err(|e| GraphError::from(crate::engine::EngineError::Store(e)))?;
    Ok(Json(json!({"requeued": n})).into_response())
}

impl AppState {
    async fn engine_store_outbox(&self, status: OutboxStatus) -> Result<Vec<Value>, GraphError> {
        let rows = self.store.outbox(status).await.map_err(|e| GraphError::from(crate::engine::EngineError::Store(e)))?;
        Ok(rows
            .into_iter()
            .map(|r| {
                json!({
                    "seq": r.seq, "callId": r.call_id, "appId": r.app_id, "callback": r.callback,
                    "attempts": r.attempts, "lastError": r.last_error,
                    "notification": serde_json::from_str::<Value>(&r.body).unwrap_or(Value::Null),
                })
            })
            .collect())
    }
}

/// `POST /sim/v1/legs/{legId}/dtmf {"tones":"12#"}`: the leg's party presses keys.
pub(super) async fn press_keys(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(leg_id): Path<String>,
    body: Body,
) -> Result<Response, GraphError> {
    admin(&state, &headers)?;
    let bytes = json_body(body, &headers).await?;
    let root = parse::object(&bytes)?;
    let fields = root.as_object().ok_or_else(|| GraphError::bad_request("expected a JSON object"))?;
    if let Some(other) = fields.keys().find(|k| *k != "tones") {
        return Err(err(other.as_str(), "unknown field; the only field is tones").into());
    }
    let tones = match fields.get("tones") {
        Some(Value::String(t)) => t,
        None | Some(Value::Null) => return Err(err("tones", "is required: the keys to press, e.g. \"12#\"").into()),
        Some(_) => return Err(err("tones", "expected a string of keys, e.g. \"12#\"").into()),
    };
    match state.sim.press_keys(&leg_id, tones) {
        Ok(()) => Ok(StatusCode::ACCEPTED.into_response()),
        Err(switchboard_sim::PressError::BadKeys(problem)) => Err(err("tones", problem).into()),
        Err(switchboard_sim::PressError::NoSuchLeg) => {
            Err(GraphError::new(StatusCode::NOT_FOUND, "NotFound", format!("Leg '{leg_id}' does not exist.")))
        }
        Err(switchboard_sim::PressError::NotWithABot) => Err(GraphError::new(
            StatusCode::CONFLICT,
            "NotWithABot",
            format!("Leg '{leg_id}' is not connected to a bot's call; only a bot hears keys."),
        )),
    }
}

/// `GET /sim/v1/calls/{callId}/history`: the call's story, live or ended (within the retention).
pub(super) async fn call_history(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(call_id): Path<String>,
) -> Result<Response, GraphError> {
    admin(&state, &headers)?;
    let now = state.engine.clock().now_ms();
    match state.engine.history().get(&call_id, now) {
        Some(h) => Ok(Json(h).into_response()),
        None => Err(GraphError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!(
                "Call '{call_id}' has no history here: it never was, or it ended longer ago than the retention ([sim] history_calls, history_max_age_ms)."
            ),
        )),
    }
}

/// `GET /sim/v1/calls?state=…&app=…`: the calls whose stories are kept, newest first.
pub(super) async fn list_calls(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, GraphError> {
    admin(&state, &headers)?;
    let (mut want_state, mut want_app) = (None, None);
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "state" => {
                let known = switchboard_core::call::CallState::ALL.iter().find(|s| s.as_str() == v).copied();
                want_state = Some(known.ok_or_else(|| {
                    err(
                        "state",
                        format!(
                            "'{v}' is not a call state; use one of {}",
                            switchboard_core::call::CallState::ALL.map(|s| s.as_str()).join(", ")
                        ),
                    )
                })?);
            }
            "app" => {
                let app =
                    state.config.directory.app(&v).ok_or_else(|| err("app", format!("'{v}' is not an application of the directory")))?;
                want_app = Some(app.client_id.clone());
            }
            other => return Err(err(other, "unknown query parameter; use state and app").into()),
        }
    }
    let now = state.engine.clock().now_ms();
    let value: Vec<Value> = state
        .engine
        .history()
        .calls(now)
        .into_iter()
        .filter(|h| want_state.is_none_or(|s| h.state == s.as_str()))
        .filter(|h| want_app.as_deref().is_none_or(|a| h.app_id.eq_ignore_ascii_case(a)))
        .map(|h| {
            json!({"id": h.call_id, "appId": h.app_id, "tenantId": h.tenant_id, "direction": h.direction, "remote": h.remote,
                "state": h.state, "createdAt": h.created_at, "endedAt": h.ended_at})
        })
        .collect();
    Ok(Json(json!({ "value": value })).into_response())
}
