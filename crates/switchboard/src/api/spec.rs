//! The OpenAPI document of everything Switchboard serves, built from [`ROUTES`] and the loaded directory.
//!
//! The table is the single description of the surface, and it dispatches: `api::router` mounts every
//! row by its operation id and `api::graph` matches Graph requests against its rows, so a route cannot
//! be documented and not served (a row without a handler answers 501 `NotServed`). An integration test
//! walks the table and checks that every row answers as listed. Schemas are
//! exact both ways, so that a fuzzer (Schemathesis) can hold the server to them: what they allow, the
//! server takes (ids come from the directory, `null` is allowed where the server reads it as absent);
//! what they refuse, the server refuses. Graph bodies stay open (unknown properties are ignored, as in
//! Graph); responses are closed where the server's output is fixed.

use serde_json::{Map, Value, json};

use switchboard_core::media::{CompletionReason, OperationKind};

use crate::api::graph::MODALITIES;
use crate::config::{Config, Directory, MAX_BEHAVIOUR_MS};

/// A schema built from the directory the server runs with.
pub type Schema = fn(&Ctx<'_>) -> Value;

/// A request body: its content type and its schema.
pub type Body = (&'static str, Schema);

/// One operation of the surface.
#[derive(Clone, Copy)]
pub struct Route {
    /// The `operationId`, which links refer to.
    pub id: &'static str,
    pub method: &'static str,
    /// OpenAPI path, with `{version}` standing for `v1.0` and `beta`.
    pub path: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub body: Option<Body>,
    /// Path parameters whose schema is not a plain string, and query parameters.
    pub params: &'static [Param],
    /// The route's own responses; [`document`] adds those every route of its kind shares.
    pub responses: &'static [Resp],
    pub auth: Auth,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    None,
    Bearer,
    AdminKey,
}

/// A parameter: where, its name, and its schema.
#[derive(Clone, Copy)]
pub struct Param {
    pub location: &'static str,
    pub name: &'static str,
    pub schema: Schema,
}

/// A response: status, meaning, and what its body is.
#[derive(Clone, Copy)]
pub struct Resp {
    pub status: u16,
    pub description: &'static str,
    pub content: Content,
}

#[derive(Clone, Copy)]
pub enum Content {
    /// No body at all.
    Empty,
    Json(Schema),
    /// Prometheus text.
    Text,
    /// A WAV file.
    Audio,
    /// Graph's error envelope.
    GraphError,
    /// The identity platform's error shape.
    IdentityError,
}

/// What the schemas enumerate: the directory's tenants, users, numbers, apps and instances.
pub struct Ctx<'a> {
    config: &'a Config,
}

impl Ctx<'_> {
    fn dir(&self) -> &Directory {
        &self.config.directory
    }
    fn tenants(&self) -> Vec<&str> {
        self.dir().tenants.iter().map(|t| t.id.as_str()).collect()
    }
    fn users(&self) -> Vec<&str> {
        self.dir().users.iter().map(|u| u.id.as_str()).collect()
    }
    fn numbers(&self) -> Vec<&str> {
        self.dir().numbers.iter().map(|n| n.number.as_str()).collect()
    }
    fn apps(&self) -> Vec<&str> {
        self.dir().applications.iter().map(|a| a.client_id.as_str()).collect()
    }
    fn instances(&self) -> Vec<&str> {
        self.dir().applications.iter().flat_map(|a| &a.instances).map(|i| i.id.as_str()).collect()
    }
    /// The apps calls may reach (those holding a calling permission), and their instances and numbers.
    fn callable_apps(&self) -> Vec<&str> {
        self.dir().applications.iter().filter(|a| a.can_be_called()).map(|a| a.client_id.as_str()).collect()
    }
    fn callable_instances(&self) -> Vec<&str> {
        let apps = self.dir().applications.iter().filter(|a| a.can_be_called());
        apps.flat_map(|a| &a.instances).map(|i| i.id.as_str()).collect()
    }
    fn callable_instance_numbers(&self) -> Vec<&str> {
        let apps = self.dir().applications.iter().filter(|a| a.can_be_called());
        apps.flat_map(|a| &a.instances).filter_map(|i| i.phone.as_deref()).collect()
    }
}

// ---------------------------------------------------------------------------
// Schema helpers

/// `schema`, or `null` (which the Graph parser reads as an absent property).
fn nullable(mut schema: Value) -> Value {
    match schema.get("type").cloned() {
        Some(Value::String(t)) => {
            schema["type"] = json!([t, "null"]);
            if let Some(values) = schema.get_mut("enum").and_then(Value::as_array_mut) {
                values.push(Value::Null);
            }
            schema
        }
        _ => json!({"anyOf": [schema, {"type": "null"}]}),
    }
}

fn string_enum(values: Vec<&str>) -> Value {
    json!({"type": "string", "enum": values})
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// A closed object: these properties, all required except `optional`, and nothing else.
fn closed(properties: Value, optional: &[&str]) -> Value {
    let required: Vec<&String> =
        properties.as_object().map(|m| m.keys().filter(|k| !optional.contains(&k.as_str())).collect()).unwrap_or_default();
    json!({"type": "object", "required": required, "additionalProperties": false, "properties": properties})
}

fn odata_type(name: &str) -> Value {
    json!({"const": format!("#microsoft.graph.{name}")})
}

const E164: &str = "^\\+[1-9][0-9]{1,14}$";
const CALL_STATES: [&str; 9] =
    ["incoming", "establishing", "established", "hold", "transferring", "transferAccepted", "redirecting", "terminating", "terminated"];
const MEDIA_CONFIGS: [&str; 2] = ["#microsoft.graph.serviceHostedMediaConfig", "#microsoft.graph.appHostedMediaConfig"];

// ---------------------------------------------------------------------------
// Request bodies

/// `callbackUri`: https to a host name (or plain http to loopback, when the configuration allows it).
/// Narrower than what the server takes, so that every drawn value is one it takes.
fn callback_uri(ctx: &Ctx<'_>) -> Value {
    // Public names only (`.example`, never `localhost`); plain http to the demo's hosts without a
    // port, so that no drawn value is this server's own address.
    let host = "[a-z][a-z0-9]{0,20}(\\.[a-z][a-z0-9]{0,20}){0,2}\\.example(:[1-9][0-9]{0,3})?";
    let http = ctx.config.callbacks.schemes.iter().any(|s| s == "http");
    let scheme = if http { format!("(https://{host}|http://(127\\.0\\.0\\.1|localhost))") } else { format!("https://{host}") };
    let pattern = format!("^{scheme}(/[A-Za-z0-9._~-]{{0,20}}){{0,4}}$");
    json!({"type": "string", "pattern": pattern, "description": "where notifications about the call go", "example": "https://bot.contoso.com/api/calls"})
}

fn modalities() -> Value {
    json!({"type": "array", "minItems": 1, "items": {"type": "string", "enum": MODALITIES}})
}

fn media_config_in(_: &Ctx<'_>) -> Value {
    json!({"type": "object", "required": ["@odata.type"], "properties": {"@odata.type": {"type": "string", "enum": MEDIA_CONFIGS}}})
}

/// A user of the directory; `tenantId`, when given, must be the user's.
fn user_identity(ctx: &Ctx<'_>) -> Value {
    let one = |id: &str, tenant: &str| json!({"type": "object", "required": ["id"], "properties": {"id": {"const": id}, "tenantId": {"enum": [tenant, null]}}});
    json!({"oneOf": ctx.dir().users.iter().map(|u| one(&u.id, &u.tenant_id)).collect::<Vec<_>>()})
}

fn identity_with_id(id: Value) -> Value {
    json!({"type": "object", "required": ["id"], "properties": {"id": id}})
}

/// An `identitySet` as the server reads it: exactly one of user, phone, application or applicationInstance.
fn identity_set_in(ctx: &Ctx<'_>) -> Value {
    let mut instance = identity_with_id(string_enum(ctx.callable_instances()));
    instance["properties"]["tenantId"] = json!({"type": ["string", "null"]});
    let kinds = [
        ("user", user_identity(ctx)),
        ("phone", identity_with_id(json!({"type": "string", "pattern": E164}))),
        ("application", identity_with_id(string_enum(ctx.callable_apps()))),
        ("applicationInstance", instance),
    ];
    let branches: Vec<Value> = kinds.into_iter().map(|(k, s)| json!({"required": [k], "properties": {k: s}})).collect();
    json!({"type": "object", "description": "exactly one identity; other identity kinds are refused", "oneOf": branches})
}

fn invitation_target(_: &Ctx<'_>) -> Value {
    json!({"type": "object", "required": ["identity"], "properties": {"identity": reference("identitySetInput")}})
}

/// The source of an outgoing call: the app itself (absent), or one of its application instances.
fn call_source(ctx: &Ctx<'_>) -> Value {
    let instance = identity_with_id(string_enum(ctx.instances()));
    let identity = json!({"type": "object", "properties": {"applicationInstance": nullable(instance)}});
    nullable(json!({"type": "object", "properties": {"identity": nullable(identity)}}))
}

fn create_call(ctx: &Ctx<'_>) -> Value {
    json!({"type": "object", "required": ["callbackUri", "mediaConfig", "targets"],
    "description": "A peer-to-peer call (one target) or a new group call (several); meetingInfo and chatInfo (meetings) are refused.",
    "properties": {
        "callbackUri": callback_uri(ctx),
        "mediaConfig": reference("mediaConfigInput"),
        "requestedModalities": nullable(modalities()),
        "targets": {"type": "array", "minItems": 1, "maxItems": 25, "items": reference("invitationTarget")},
        "source": call_source(ctx),
        "tenantId": nullable(string_enum(ctx.tenants())),
        "subject": {"type": ["string", "null"]},
        "ringingTimeoutInSeconds": {"type": ["integer", "null"], "minimum": 1, "maximum": 115}
    }})
}

fn answer(ctx: &Ctx<'_>) -> Value {
    json!({"type": "object", "required": ["mediaConfig", "acceptedModalities"], "properties": {
        "callbackUri": nullable(callback_uri(ctx)),
        "mediaConfig": reference("mediaConfigInput"),
        "acceptedModalities": modalities(),
        "participantCapacity": {"type": ["integer", "null"], "minimum": 0, "maximum": 2147483647}
    }})
}

fn reject(ctx: &Ctx<'_>) -> Value {
    json!({"type": "object", "properties": {
        "reason": {"type": ["string", "null"], "enum": ["none", "busy", "forbidden", null]},
        "callbackUri": nullable(callback_uri(ctx))
    }})
}

fn redirect(ctx: &Ctx<'_>) -> Value {
    json!({"type": "object", "required": ["targets"], "properties": {
        "targets": {"type": "array", "minItems": 1, "maxItems": 25, "items": reference("invitationTarget")},
        "timeout": {"type": ["integer", "null"], "minimum": 15, "maximum": 90},
        "callbackUri": nullable(callback_uri(ctx))
    }})
}

/// Today's shape (`transferTarget`) or the 2018 beta's (top-level `target`, used when `transferTarget`
/// is absent or null).
fn transfer(_: &Ctx<'_>) -> Value {
    let target = json!({"type": "object", "required": ["identity"], "properties": {
        "identity": reference("identitySetInput"),
        "replacesCallId": {"type": ["string", "null"], "description": "consultative transfer: the bot's call with the target"}
    }});
    // At least one of the two, not null (null reads as absent).
    let transferee = json!({"type": "object", "properties": {
        "identity": nullable(reference("identitySetInput")), "participantId": {"type": ["string", "null"]}
    }, "anyOf": [
        {"required": ["participantId"], "properties": {"participantId": {"type": "string"}}},
        {"required": ["identity"], "properties": {"identity": reference("identitySetInput")}}
    ]});
    json!({"type": "object",
    "properties": {
        "transferee": nullable(transferee),
        "clientContext": {"type": ["string", "null"], "maxLength": 256},
        "replacesCallId": {"type": ["string", "null"], "description": "2018 beta: the consultation call"},
        "customCallingContext": {"type": ["object", "null"],
            "description": "Switchboard's extension (after ACS's customCallingContext): SIP headers the transfer target receives",
            "properties": {"sipHeaders": {"type": ["object", "null"], "maxProperties": 5,
                "propertyNames": {"pattern": "^[Xx]-[A-Za-z0-9-]{1,62}$"},
                "additionalProperties": {"type": "string", "maxLength": 256, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"}}}}
    },
    "anyOf": [
        {"required": ["transferTarget"], "properties": {"transferTarget": target, "target": {"type": ["object", "null"]}}},
        {"required": ["target"], "properties": {"transferTarget": {"type": "null"}, "target": reference("identitySetInput")},
         "description": "2018 beta: the target as a bare identitySet"}
    ]})
}

fn client_context_in() -> Value {
    json!({"type": ["string", "null"], "maxLength": 256})
}

/// A `mediaPrompt`: the media at `mediaInfo.uri`.
fn media_prompt_in() -> Value {
    json!({"type": "object", "required": ["mediaInfo"], "properties": {
        "@odata.type": {"const": "#microsoft.graph.mediaPrompt"},
        "mediaInfo": {"type": "object", "required": ["uri"], "properties": {
            "uri": {"type": "string", "minLength": 1, "maxLength": 2048, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"},
            "resourceId": {"type": ["string", "null"]}
        }}
    }})
}

fn play_prompt(_: &Ctx<'_>) -> Value {
    json!({"type": "object", "required": ["prompts"], "properties": {
        "clientContext": client_context_in(),
        "prompts": {"type": "array", "minItems": 1, "maxItems": 20, "items": media_prompt_in()},
        "loop": {"type": ["boolean", "null"], "description": "beta: play the prompts again and again until cancelled"}
    }})
}

/// Keys as Graph's examples write stop tones (`"#"`; `"!"` is flash), or tone names.
fn stop_tone() -> Value {
    let mut keys: Vec<String> = "0123456789*#ABCDabcd!".chars().map(String::from).collect();
    keys.extend(switchboard_core::media::Tone::ALL.iter().map(|t| t.as_str().to_owned()));
    json!({"type": "string", "enum": keys})
}

fn record_response(_: &Ctx<'_>) -> Value {
    let seconds = json!({"type": ["integer", "null"], "minimum": 1, "maximum": 120, "description": "seconds (default 5)"});
    json!({"type": "object", "properties": {
        "clientContext": client_context_in(),
        "prompts": {"type": ["array", "null"], "maxItems": 1, "items": media_prompt_in()},
        "bargeInAllowed": {"type": ["boolean", "null"]},
        "initialSilenceTimeoutInSeconds": seconds, "maxSilenceTimeoutInSeconds": seconds, "maxRecordDurationInSeconds": seconds,
        "playBeep": {"type": ["boolean", "null"]},
        "stopTones": {"type": ["array", "null"], "items": stop_tone()}
    }})
}

fn tone_names() -> Value {
    json!({"type": "string", "enum": switchboard_core::media::Tone::ALL.iter().map(|t| t.as_str()).collect::<Vec<_>>()})
}

fn send_dtmf_tones(_: &Ctx<'_>) -> Value {
    json!({"type": "object", "required": ["tones"], "properties": {
        "clientContext": client_context_in(),
        "tones": {"type": "array", "minItems": 1, "maxItems": 64, "items": tone_names()},
        "delayBetweenTonesMs": {"type": ["integer", "null"], "minimum": 0, "maximum": 10000}
    }})
}

fn update_recording_status(_: &Ctx<'_>) -> Value {
    json!({"type": "object", "required": ["status"], "properties": {
        "clientContext": client_context_in(),
        "status": {"type": "string", "enum": ["notRecording", "recording", "failed", "unknown"]}
    }})
}

fn client_context_only(_: &Ctx<'_>) -> Value {
    json!({"type": "object", "properties": {"clientContext": client_context_in()}})
}

fn invite_participants(_: &Ctx<'_>) -> Value {
    let invitee = json!({"type": "object", "required": ["identity"], "properties": {
        "identity": reference("identitySetInput"),
        "replacesCallId": {"type": ["string", "null"], "pattern": "\\S", "description": "another of the bot's peer-to-peer calls, whose peer moves into this call; that call ends"}
    }});
    json!({"type": "object", "required": ["participants"], "properties": {
        "clientContext": client_context_in(),
        "participants": {"type": "array", "minItems": 1, "maxItems": 1, "items": invitee,
            "description": "Graph takes up to 5 in a group call (one with replacesCallId); the schema draws one"}
    }})
}

fn hold_music_in(_: &Ctx<'_>) -> Value {
    json!({"type": "object", "properties": {"clientContext": client_context_in(), "customPrompt": nullable(media_prompt_in())}})
}

fn history_call() -> Value {
    let s = json!({"type": "string"});
    json!({"callId": s, "appId": s, "tenantId": s, "direction": {"type": "string", "enum": ["incoming", "outgoing"]}, "remote": s,
        "state": {"type": "string", "enum": CALL_STATES}, "createdAt": {"type": "integer"}, "endedAt": {"type": ["integer", "null"]}})
}

/// A call's story: each entry its time and kind (request, state, notification, delivery, command,
/// network) and the fields of that kind.
fn call_history(_: &Ctx<'_>) -> Value {
    let entry = json!({"type": "object", "required": ["at", "kind"], "properties": {
        "at": {"type": "integer"},
        "kind": {"type": "string", "enum": ["request", "state", "notification", "delivery", "command", "network", "moved"]}
    }});
    let mut props = history_call();
    props["entries"] = json!({"type": "array", "items": entry});
    closed(props, &[])
}

fn call_summaries(_: &Ctx<'_>) -> Value {
    let mut props = history_call();
    let id = props.as_object_mut().and_then(|m| m.remove("callId")).unwrap_or_default();
    props["id"] = id;
    closed(json!({"value": {"type": "array", "items": closed(props, &[])}}), &[])
}

fn call_state_param(_: &Ctx<'_>) -> Value {
    json!({"type": "string", "enum": CALL_STATES})
}

fn sim_dtmf(_: &Ctx<'_>) -> Value {
    closed(json!({"tones": {"type": "string", "pattern": "^[0-9*#A-Da-d]{1,32}$"}}), &[])
}

fn token_form(ctx: &Ctx<'_>) -> Value {
    json!({"type": "object", "required": ["grant_type", "client_id", "client_secret", "scope"], "properties": {
        "grant_type": {"type": "string", "enum": ["client_credentials"]},
        "client_id": string_enum(ctx.apps()),
        "client_secret": {"type": "string", "minLength": 1},
        "scope": {"type": "string", "enum": ["https://graph.microsoft.com/.default", "00000003-0000-0000-c000-000000000000/.default"]}
    }})
}

fn call_id_choice() -> Value {
    json!({"type": ["string", "null"], "pattern": "^[A-Za-z0-9-]{1,64}$",
        "description": "the bot's call id (default: a new GUID); lets tests replay documented examples with their ids"})
}

/// A user calls an app, an instance or an instance's number; a PSTN number calls an instance or its number.
fn sim_call(ctx: &Ctx<'_>) -> Value {
    let instances: Vec<&str> = ctx.callable_instances().into_iter().chain(ctx.callable_instance_numbers()).collect();
    let any_bot: Vec<&str> = ctx.callable_apps().into_iter().chain(instances.iter().copied()).collect();
    let branch = |from: Value, to: Vec<&str>| json!({"type": "object", "required": ["from", "to"], "properties": {"from": from, "to": string_enum(to), "callId": call_id_choice()}});
    let user = branch(string_enum(ctx.users()), any_bot);
    let mut phone = branch(json!({"type": "string", "pattern": E164, "examples": ctx.numbers()}), instances);
    phone["description"] = json!("a PSTN caller (any E.164 number) reaches only application instances");
    json!({"oneOf": [user, phone]})
}

fn ms() -> Value {
    json!({"type": ["integer", "null"], "minimum": 0, "maximum": MAX_BEHAVIOUR_MS})
}

/// One branch per kind; each refuses fields it does not take.
fn behaviour_in(_: &Ctx<'_>) -> Value {
    let answer = json!({"type": "object", "required": ["kind"], "additionalProperties": false, "properties": {
        "kind": {"const": "answer"}, "after_ms": ms(), "hang_up_after_ms": ms(), "transfer_delay_ms": ms(),
        "press": {"type": ["string", "null"], "pattern": "^[0-9*#A-Da-d]{1,32}$", "description": "keys pressed once, after the call's first prompt starts"},
        "press_after_ms": ms(), "speak_ms": ms()
    }});
    let only_kind =
        |k: &str| json!({"type": "object", "required": ["kind"], "additionalProperties": false, "properties": {"kind": {"const": k}}});
    json!({"oneOf": [answer, only_kind("busy"), only_kind("decline"), only_kind("no-answer")]})
}

// ---------------------------------------------------------------------------
// Parameters

fn tenant(ctx: &Ctx<'_>) -> Value {
    string_enum(ctx.tenants())
}

fn keys_tenant(ctx: &Ctx<'_>) -> Value {
    string_enum(ctx.tenants().into_iter().chain([crate::identity::COMMON_TENANT]).collect())
}

fn version(_: &Ctx<'_>) -> Value {
    string_enum(vec!["v1.0", "beta"])
}

fn party_key(ctx: &Ctx<'_>) -> Value {
    json!({"type": "string", "enum": ctx.users().into_iter().chain(ctx.numbers()).collect::<Vec<_>>(), "description": "a user id or PSTN number of the directory"})
}

fn app_id(ctx: &Ctx<'_>) -> Value {
    string_enum(ctx.apps())
}

fn outbox_status(_: &Ctx<'_>) -> Value {
    json!({"type": "string", "enum": ["failed", "pending"], "default": "failed"})
}

/// The sim names legs `leg-<n>`.
fn leg_id(_: &Ctx<'_>) -> Value {
    json!({"type": "string", "pattern": "^leg-[1-9][0-9]{0,17}$"})
}

/// Ids the server made up: any non-empty segment (an empty one would name the collection).
fn opaque_id(_: &Ctx<'_>) -> Value {
    json!({"type": "string", "minLength": 1})
}

// ---------------------------------------------------------------------------
// Response bodies

fn identity_out() -> Value {
    closed(
        json!({"@odata.type": odata_type("identity"), "id": {"type": "string"}, "displayName": {"type": "string"}, "tenantId": {"type": "string"}}),
        &["displayName", "tenantId"],
    )
}

/// Exactly one identity; `phone` and `applicationInstance` come in a `communicationsIdentitySet`, the
/// type that declares them.
fn identity_set_out(_: &Ctx<'_>) -> Value {
    let one = |set: &str, kind: &str| closed(json!({"@odata.type": odata_type(set), kind: reference("identity")}), &[]);
    json!({"oneOf": [
        one("identitySet", "user"),
        one("identitySet", "application"),
        one("communicationsIdentitySet", "phone"),
        one("communicationsIdentitySet", "applicationInstance")
    ]})
}

fn participant_info(_: &Ctx<'_>) -> Value {
    closed(json!({"@odata.type": odata_type("participantInfo"), "identity": reference("identitySet")}), &[])
}

fn invitation_participant_info(_: &Ctx<'_>) -> Value {
    closed(json!({"@odata.type": odata_type("invitationParticipantInfo"), "identity": reference("identitySet")}), &[])
}

fn result_info(_: &Ctx<'_>) -> Value {
    closed(
        json!({"@odata.type": odata_type("resultInfo"), "code": {"type": "integer"}, "subcode": {"type": "integer"}, "message": {"type": "string"}}),
        &[],
    )
}

fn context() -> Value {
    json!({"type": "string", "description": "OData context URL"})
}

/// The `call` resource exactly as the server renders it (graph::render::call).
fn call(_: &Ctx<'_>) -> Value {
    let none = json!({"type": "null"});
    closed(
        json!({
            "@odata.context": context(),
            "@odata.type": odata_type("call"),
            "id": {"type": "string"},
            "state": {"type": "string", "enum": CALL_STATES},
            "direction": {"type": "string", "enum": ["incoming", "outgoing"]},
            "callbackUri": {"type": "string", "description": "absent until an incoming call is answered"},
            "callChainId": {"type": "string"},
            "myParticipantId": {"type": "string"},
            "tenantId": {"type": "string"},
            "subject": {"type": ["string", "null"]},
            "source": reference("participantInfo"),
            "targets": {"type": "array", "minItems": 1, "maxItems": 25, "items": reference("invitationParticipantInfo")},
            "requestedModalities": {"type": "array", "items": {"type": "string", "enum": MODALITIES}},
            "mediaConfig": closed(json!({"@odata.type": {"type": "string", "enum": MEDIA_CONFIGS}}), &[]),
            "mediaState": closed(json!({"@odata.type": odata_type("callMediaState"), "audio": {"type": "string", "enum": ["active", "inactive"]}}), &[]),
            "resultInfo": nullable(reference("resultInfo")),
            "callRoutes": {"type": "array", "maxItems": 0},
            "chatInfo": none, "meetingInfo": none, "callOptions": none, "toneInfo": none, "transcription": none,
            "incomingContext": nullable(closed(json!({
                "@odata.type": odata_type("incomingContext"), "sourceParticipantId": {"type": "string"}, "transferor": reference("identitySet")
            }), &[])),
            "terminationReason": {"type": "string"}
        }),
        &["@odata.context", "callbackUri", "terminationReason"],
    )
}

fn participant(_: &Ctx<'_>) -> Value {
    let none = json!({"type": "null"});
    let stream = closed(
        json!({
            "@odata.type": odata_type("mediaStream"), "mediaType": {"type": "string", "enum": MODALITIES}, "label": {"type": ["string", "null"]},
            "sourceId": {"type": "string"}, "direction": {"type": "string", "enum": ["inactive", "sendOnly", "receiveOnly", "sendReceive"]},
            "serverMuted": {"type": "boolean"}
        }),
        &[],
    );
    closed(
        json!({
            "@odata.context": context(), "@odata.type": odata_type("participant"), "id": {"type": "string"},
            "info": reference("participantInfo"), "isInLobby": {"type": "boolean"}, "isMuted": {"type": "boolean"},
            "mediaStreams": {"type": "array", "items": stream},
            "metadata": none, "removedState": none, "restrictedExperience": none,
            "recordingInfo": nullable(closed(json!({"@odata.type": odata_type("recordingInfo"), "initiator": reference("identitySet"),
                "recordingStatus": {"type": "string", "enum": ["unknown", "notRecording", "recording", "failed"]}}), &[])),
            "rosterSequenceNumber": {"type": "integer"}
        }),
        &["@odata.context"],
    )
}

/// An operation in today's shape: a transfer's (`commsOperation`) or a media action's (its subtype, with
/// `completionReason` for prompts, recordings and tones, and where a recording is).
fn media_operation(_: &Ctx<'_>) -> Value {
    let types: Vec<&str> = [
        OperationKind::Transfer,
        OperationKind::PlayPrompt,
        OperationKind::Record,
        OperationKind::SubscribeToTone,
        OperationKind::SendDtmfTones,
        OperationKind::CancelMediaProcessing,
        OperationKind::Mute,
        OperationKind::Unmute,
        OperationKind::UpdateRecordingStatus,
        OperationKind::Invite,
        OperationKind::StartHoldMusic,
        OperationKind::StopHoldMusic,
    ]
    .into_iter()
    .map(crate::graph::render::operation_type)
    .collect();
    let reasons: Vec<Value> = [
        CompletionReason::CompletedSuccessfully,
        CompletionReason::MediaOperationCanceled,
        CompletionReason::OperationCanceled,
        CompletionReason::StopToneDetected,
        CompletionReason::MaxRecordDurationReached,
        CompletionReason::InitialSilenceTimeout,
        CompletionReason::MaxSilenceTimeout,
        CompletionReason::PlayPromptFailed,
        CompletionReason::MediaReceiveTimeout,
        CompletionReason::UnspecifiedError,
    ]
    .into_iter()
    .map(|r| json!(r.as_str()))
    .chain([Value::Null])
    .collect();
    closed(
        json!({"@odata.context": context(), "@odata.type": {"type": "string", "enum": types}, "id": {"type": "string"},
            "clientContext": {"type": ["string", "null"]}, "status": {"type": "string", "enum": ["running", "completed", "failed"]},
            "resultInfo": nullable(reference("resultInfo")),
            "completionReason": {"enum": reasons},
            "recordingLocation": {"type": ["string", "null"]}, "recordingAccessToken": {"type": ["string", "null"]},
            "participants": {"type": "array", "items": {"type": "object"}}}),
        &["@odata.context", "completionReason", "recordingLocation", "recordingAccessToken", "participants"],
    )
}

/// A transfer's operation: today's shape, or the 2018 beta's (string codes) for apps on that format.
fn comms_operation(ctx: &Ctx<'_>) -> Value {
    let status = json!({"type": "string", "enum": ["running", "completed", "failed"]});
    let client_context = json!({"type": ["string", "null"]});
    let today = media_operation(ctx);
    let result_2018 =
        closed(json!({"code": {"type": "string"}, "subCode": {"type": "string"}, "message": {"type": "string"}}), &["message"]);
    let beta_2018 = closed(
        json!({"@odata.context": context(), "@odata.type": odata_type("commsOperation"), "@odata.id": {"type": "string"}, "id": {"type": "string"},
            "clientContext": client_context, "status": status, "resultInfo": result_2018}),
        &["@odata.context"],
    );
    json!({"oneOf": [today, beta_2018]})
}

fn list_of(item: Value) -> Value {
    closed(json!({"@odata.context": context(), "value": {"type": "array", "items": item}}), &[])
}

fn call_list(_: &Ctx<'_>) -> Value {
    list_of(reference("call"))
}

fn participant_list(_: &Ctx<'_>) -> Value {
    list_of(reference("participant"))
}

fn operation_list(_: &Ctx<'_>) -> Value {
    list_of(reference("commsOperation"))
}

fn graph_error(_: &Ctx<'_>) -> Value {
    let inner = closed(json!({"date": {"type": "string"}, "request-id": {"type": "string"}, "client-request-id": {"type": "string"}}), &[]);
    closed(json!({"error": closed(json!({"code": {"type": "string"}, "message": {"type": "string"}, "innerError": inner}), &[])}), &[])
}

/// The Microsoft identity platform's error (`AADSTS` codes).
fn identity_error(_: &Ctx<'_>) -> Value {
    let error =
        ["invalid_request", "unsupported_grant_type", "invalid_client", "unauthorized_client", "invalid_scope", "temporarily_unavailable"];
    closed(
        json!({"error": {"type": "string", "enum": error}, "error_description": {"type": "string"},
            "error_codes": {"type": "array", "minItems": 1, "items": {"type": "integer"}},
            "timestamp": {"type": "string"}, "trace_id": {"type": "string"}, "correlation_id": {"type": "string"}}),
        &[],
    )
}

fn token(_: &Ctx<'_>) -> Value {
    closed(
        json!({"token_type": {"const": "Bearer"}, "expires_in": {"type": "integer"}, "ext_expires_in": {"type": "integer"}, "access_token": {"type": "string"}}),
        &[],
    )
}

fn strings() -> Value {
    json!({"type": "array", "items": {"type": "string"}})
}

fn openid_configuration(_: &Ctx<'_>) -> Value {
    let url = json!({"type": "string", "format": "uri"});
    closed(
        json!({"issuer": url, "token_endpoint": url, "jwks_uri": url, "authorization_endpoint": url,
            "response_types_supported": strings(), "subject_types_supported": strings(),
            "id_token_signing_alg_values_supported": strings(), "token_endpoint_auth_methods_supported": strings(),
            "grant_types_supported": strings(), "scopes_supported": strings(), "claims_supported": strings(),
            "tenant_region_scope": {"type": "string"}, "cloud_instance_name": {"type": "string"},
            "request_uri_parameter_supported": {"type": "boolean"}}),
        &[],
    )
}

fn notification_openid_configuration(_: &Ctx<'_>) -> Value {
    closed(
        json!({"issuer": {"type": "string"}, "jwks_uri": {"type": "string", "format": "uri"},
            "id_token_signing_alg_values_supported": strings(), "token_endpoint_auth_methods_supported": strings()}),
        &[],
    )
}

fn jwks(_: &Ctx<'_>) -> Value {
    let key = closed(
        json!({"kty": {"const": "RSA"}, "use": {"const": "sig"}, "alg": {"const": "RS256"}, "kid": {"type": "string"}, "n": {"type": "string"}, "e": {"type": "string"}}),
        &[],
    );
    closed(json!({"keys": {"type": "array", "minItems": 1, "items": key}}), &[])
}

/// The longest a single `POST /sim/v1/clock` may move virtual time: a year.
pub const MAX_ADVANCE_MS: u64 = 366 * 24 * 3600 * 1000;

fn clock_advance(_: &Ctx<'_>) -> Value {
    closed(json!({"advance_ms": {"type": "integer", "minimum": 0, "maximum": MAX_ADVANCE_MS}}), &[])
}

fn clock_now(_: &Ctx<'_>) -> Value {
    closed(json!({"virtual": {"type": "boolean"}, "nowMs": {"type": "integer", "minimum": 0}, "now": {"type": "string"}}), &[])
}

fn sim_call_created(_: &Ctx<'_>) -> Value {
    closed(json!({"callId": {"type": "string"}, "legId": {"type": "string"}}), &[])
}

/// A behaviour as the server writes it back: every field of an answer filled in or left out.
fn behaviour_out() -> Value {
    let n = json!({"type": "integer", "minimum": 0});
    let answer = closed(
        json!({"kind": {"const": "answer"}, "after_ms": n, "hang_up_after_ms": n, "transfer_delay_ms": n,
            "press": {"type": "string"}, "press_after_ms": n, "speak_ms": n}),
        &["hang_up_after_ms", "transfer_delay_ms", "press", "press_after_ms", "speak_ms"],
    );
    let only_kind = |k: &str| closed(json!({"kind": {"const": k}}), &[]);
    json!({"oneOf": [answer, only_kind("busy"), only_kind("decline"), only_kind("no-answer")]})
}

fn faults(ctx: &Ctx<'_>, optional: bool) -> Value {
    let ms = json!({"type": "integer", "minimum": 0, "maximum": crate::notifier::MAX_FAULT_MS});
    let rate = json!({"type": "number", "minimum": 0, "maximum": 1});
    let properties = json!({
        "duplicateRate": rate,
        "delayMs": {"oneOf": [ms, {"type": "array", "items": ms, "minItems": 2, "maxItems": 2, "description": "a range: [min, max]"}]},
        "dropFirst": {"type": "integer", "minimum": 0, "maximum": ctx.config.notifications.max_attempts.saturating_sub(1).min(100)},
        "answerTimeoutMs": {"type": "integer", "minimum": 1, "maximum": crate::notifier::MAX_FAULT_MS},
        "invalidSignatureRate": rate,
        "seed": {"type": "integer", "minimum": 0, "maximum": crate::notifier::MAX_SEED},
    });
    let all = ["duplicateRate", "delayMs", "dropFirst", "answerTimeoutMs", "invalidSignatureRate", "seed"];
    if optional {
        // In a request, the optional values may also be null (absent).
        let mut properties = properties;
        for name in ["delayMs", "answerTimeoutMs", "seed"] {
            properties[name] = nullable(properties[name].take());
        }
        closed(properties, &all)
    } else {
        closed(properties, &["delayMs", "answerTimeoutMs", "seed"])
    }
}

fn faults_in(ctx: &Ctx<'_>) -> Value {
    faults(ctx, true)
}

fn faults_set(ctx: &Ctx<'_>) -> Value {
    closed(json!({"appId": {"type": "string"}, "faults": faults(ctx, false)}), &[])
}

fn behaviour_set(_: &Ctx<'_>) -> Value {
    closed(json!({"party": {"type": "string"}, "behaviour": behaviour_out()}), &[])
}

fn behaviour_now(_: &Ctx<'_>) -> Value {
    closed(json!({"party": {"type": "string"}, "behaviour": behaviour_out(), "source": {"enum": ["set", "configured"]}}), &[])
}

fn sim_directory(_: &Ctx<'_>) -> Value {
    let s = json!({"type": "string"});
    let source = json!({"enum": ["set", "configured"]});
    let user = closed(json!({"id": s, "displayName": s, "tenantId": s, "behaviour": behaviour_out(), "source": source}), &[]);
    let number = closed(json!({"number": s, "behaviour": behaviour_out(), "source": source}), &[]);
    let instance = closed(json!({"id": s, "displayName": s, "tenantId": s, "phone": {"type": ["string", "null"]}}), &[]);
    let app = closed(
        json!({"id": s, "name": s, "tenants": {"type": "array", "items": s}, "instances": {"type": "array", "items": instance}}),
        &[],
    );
    closed(
        json!({"users": {"type": "array", "items": user}, "numbers": {"type": "array", "items": number}, "apps": {"type": "array", "items": app}}),
        &[],
    )
}

fn reset_done(_: &Ctx<'_>) -> Value {
    let n = json!({"type": "integer", "minimum": 0});
    closed(json!({"legsHungUp": n, "callsEnded": n, "callsLive": n}), &[])
}

/// A party of the sim (`kind`-tagged).
fn party(_: &Ctx<'_>) -> Value {
    let s = json!({"type": "string"});
    json!({"oneOf": [
        closed(json!({"kind": {"const": "user"}, "id": s, "displayName": s, "tenantId": s}), &[]),
        closed(json!({"kind": {"const": "phone"}, "number": s}), &[]),
        closed(json!({"kind": {"const": "application"}, "id": s, "displayName": s}), &[]),
        closed(json!({"kind": {"const": "applicationInstance"}, "id": s, "displayName": s, "tenantId": s}), &[])
    ]})
}

fn world(_: &Ctx<'_>) -> Value {
    let s = json!({"type": "string"});
    let peer = json!({"oneOf": [
        closed(json!({"kind": {"const": "bot"}, "callId": s, "appId": s}), &[]),
        closed(json!({"kind": {"const": "leg"}, "legId": s}), &[]),
        closed(json!({"kind": {"const": "transfer"}, "callId": s, "transfereeLeg": s}), &[]),
        closed(json!({"kind": {"const": "group"}, "callId": s, "participantId": s}), &[]),
        closed(json!({"kind": {"const": "external"}, "network": s, "id": s}), &[])
    ]});
    let heard = closed(
        json!({"uri": s, "startedAt": {"type": "integer"}, "ms": {"type": "integer", "minimum": 0}, "complete": {"type": "boolean"}}),
        &[],
    );
    let leg = closed(
        json!({"id": s, "party": reference("simParty"), "state": {"type": "string", "enum": ["ringing", "connected"]}, "peer": peer,
            "heard": {"type": "array", "items": heard, "description": "prompts the party heard, in order, and for how long"},
            "pressed": {"type": "string", "description": "keys the party pressed"},
            "received": {"type": "string", "description": "DTMF tones the bot sent the party"}}),
        &[],
    );
    let call = closed(
        json!({"id": s, "appId": s, "tenantId": s, "state": {"type": "string", "enum": CALL_STATES},
            "direction": {"type": "string", "enum": ["incoming", "outgoing"]}, "remote": reference("simParty")}),
        &[],
    );
    closed(json!({"legs": {"type": "array", "items": leg}, "calls": {"type": "array", "items": call}}), &[])
}

fn outbox(_: &Ctx<'_>) -> Value {
    let row = closed(
        json!({"seq": {"type": "integer"}, "callId": {"type": "string"}, "appId": {"type": "string"}, "callback": {"type": "string"},
            "attempts": {"type": "integer", "minimum": 0}, "lastError": {"type": ["string", "null"]},
            "notification": {"type": ["object", "null"], "description": "the commsNotification as queued"}}),
        &[],
    );
    closed(json!({"value": {"type": "array", "items": row}}), &[])
}

fn requeued(_: &Ctx<'_>) -> Value {
    closed(json!({"requeued": {"type": "integer", "minimum": 0}}), &[])
}

fn status_of(value: &'static str) -> Value {
    closed(json!({"status": {"const": value}}), &[])
}

fn alive(_: &Ctx<'_>) -> Value {
    status_of("ok")
}

fn ready(_: &Ctx<'_>) -> Value {
    status_of("ready")
}

fn not_ready(_: &Ctx<'_>) -> Value {
    status_of("not ready")
}

fn openapi_document(_: &Ctx<'_>) -> Value {
    json!({"type": "object", "required": ["openapi", "info", "paths"]})
}

// ---------------------------------------------------------------------------
// The route table

const JSON: &str = "application/json";

const fn json(status: u16, description: &'static str, schema: Schema) -> Resp {
    Resp { status, description, content: Content::Json(schema) }
}

const fn empty(status: u16, description: &'static str) -> Resp {
    Resp { status, description, content: Content::Empty }
}

const fn error(status: u16, description: &'static str) -> Resp {
    Resp { status, description, content: Content::GraphError }
}

const fn aad(status: u16, description: &'static str) -> Resp {
    Resp { status, description, content: Content::IdentityError }
}

const fn path(name: &'static str, schema: Schema) -> Param {
    Param { location: "path", name, schema }
}

const GRAPH: Route =
    Route { id: "", method: "get", path: "", tag: "calls", summary: "", body: None, params: &[], responses: &[], auth: Auth::Bearer };
const SIM: Route = Route { tag: "sim", auth: Auth::AdminKey, ..GRAPH };
const OPEN: Route = Route { tag: "ops", auth: Auth::None, ..GRAPH };
const IDENTITY: Route = Route { tag: "identity", auth: Auth::None, ..GRAPH };
const NOT_FOUND: Resp = error(404, "8522: not a live call of this application (or an unknown version)");
const MEDIA_RESPONSES: &[Resp] = &[
    json(200, "the action's operation, with Location: running (a notification follows when it ends) or completed", media_operation),
    NOT_FOUND,
    error(409, "InvalidCallState: the call is not established, or 10 prompts and recordings are waiting"),
];

pub const ROUTES: &[Route] = &[
    Route {
        id: "getToken",
        method: "post",
        path: "/{tenant}/oauth2/v2.0/token",
        summary: "Client-credentials token",
        body: Some(("application/x-www-form-urlencoded", token_form)),
        responses: &[
            json(200, "token", token),
            aad(400, "invalid request, unknown tenant, client or scope"),
            aad(401, "invalid client secret"),
        ],
        ..IDENTITY
    },
    Route {
        id: "getOpenIdConfiguration",
        path: "/{tenant}/v2.0/.well-known/openid-configuration",
        summary: "OpenID configuration of a tenant",
        responses: &[json(200, "configuration", openid_configuration), aad(400, "AADSTS90002: unknown tenant")],
        ..IDENTITY
    },
    Route {
        id: "getKeys",
        path: "/{tenant}/discovery/v2.0/keys",
        summary: "Signing keys (JWKS) for access tokens",
        params: &[path("tenant", keys_tenant)],
        responses: &[json(200, "JWKS", jwks), aad(400, "AADSTS90002: unknown tenant")],
        ..IDENTITY
    },
    Route {
        id: "getNotificationOpenIdConfiguration",
        path: "/notifications/v1/.well-known/openid-configuration",
        summary: "OpenID configuration for validating notification tokens",
        responses: &[json(200, "configuration", notification_openid_configuration)],
        ..IDENTITY
    },
    Route {
        id: "getNotificationKeys",
        path: "/notifications/v1/.well-known/keys",
        summary: "Signing keys (JWKS) for notification tokens",
        responses: &[json(200, "JWKS", jwks)],
        ..IDENTITY
    },
    Route {
        id: "createCall",
        method: "post",
        path: "/{version}/communications/calls",
        summary: "Create an outgoing peer-to-peer call",
        body: Some((JSON, create_call)),
        responses: &[json(201, "the call, with Location", call), error(404, "unknown version")],
        ..GRAPH
    },
    Route {
        id: "listCalls",
        path: "/{version}/communications/calls",
        summary: "List the app's live calls",
        responses: &[json(200, "calls", call_list), error(404, "unknown version")],
        ..GRAPH
    },
    Route {
        id: "getCall",
        path: "/{version}/communications/calls/{id}",
        summary: "Get a call",
        responses: &[json(200, "the call", call), NOT_FOUND],
        ..GRAPH
    },
    Route {
        id: "deleteCall",
        method: "delete",
        path: "/{version}/communications/calls/{id}",
        summary: "Hang up",
        responses: &[empty(204, "hung up"), NOT_FOUND, error(409, "already terminating")],
        ..GRAPH
    },
    Route {
        id: "answerCall",
        method: "post",
        path: "/{version}/communications/calls/{id}/answer",
        summary: "Answer an incoming call",
        body: Some((JSON, answer)),
        responses: &[empty(202, "answering"), NOT_FOUND, error(409, "not incoming")],
        ..GRAPH
    },
    Route {
        id: "rejectCall",
        method: "post",
        path: "/{version}/communications/calls/{id}/reject",
        summary: "Reject an incoming call",
        body: Some((JSON, reject)),
        responses: &[empty(202, "rejected"), NOT_FOUND, error(409, "not incoming")],
        ..GRAPH
    },
    Route {
        id: "redirectCall",
        method: "post",
        path: "/{version}/communications/calls/{id}/redirect",
        summary: "Redirect an incoming call",
        body: Some((JSON, redirect)),
        responses: &[empty(202, "redirected"), error(403, "PSTN without an application instance"), NOT_FOUND, error(409, "not incoming")],
        ..GRAPH
    },
    Route {
        id: "transferCall",
        method: "post",
        path: "/{version}/communications/calls/{id}/transfer",
        summary: "Transfer the call: blind, consultative (replacesCallId), to PSTN",
        body: Some((JSON, transfer)),
        responses: &[
            empty(202, "transferring (apps on the 2018 format get a Location of the transfer's operation)"),
            error(403, "PSTN without an application instance, across tenants, or to the bot itself"),
            NOT_FOUND,
            error(409, "not established, or the target or consultation call does not fit the call"),
        ],
        ..GRAPH
    },
    Route {
        id: "keepAliveCall",
        method: "post",
        path: "/{version}/communications/calls/{id}/keepAlive",
        summary: "Keep the call alive for another 45 minutes",
        responses: &[empty(200, "kept alive"), NOT_FOUND],
        ..GRAPH
    },
    Route {
        id: "playPrompt",
        method: "post",
        path: "/{version}/communications/calls/{id}/playPrompt",
        summary: "Play prompts to the call (queued after other prompts and recordings)",
        body: Some((JSON, play_prompt)),
        responses: MEDIA_RESPONSES,
        ..GRAPH
    },
    Route {
        id: "recordResponse",
        method: "post",
        path: "/{version}/communications/calls/{id}/recordResponse",
        summary: "Record what the caller says (a prompt, a beep, then until silence, a stop tone or the longest)",
        body: Some((JSON, record_response)),
        responses: MEDIA_RESPONSES,
        ..GRAPH
    },
    Route {
        id: "subscribeToTone",
        method: "post",
        path: "/{version}/communications/calls/{id}/subscribeToTone",
        summary: "Hear the keys the caller presses (toneInfo notifications)",
        body: Some((JSON, client_context_only)),
        responses: MEDIA_RESPONSES,
        ..GRAPH
    },
    Route {
        id: "sendDtmfTones",
        method: "post",
        path: "/{version}/communications/calls/{id}/sendDtmfTones",
        summary: "Send DTMF tones to the call",
        body: Some((JSON, send_dtmf_tones)),
        responses: MEDIA_RESPONSES,
        ..GRAPH
    },
    Route {
        id: "cancelMediaProcessing",
        method: "post",
        path: "/{version}/communications/calls/{id}/cancelMediaProcessing",
        summary: "Stop the prompt or recording that plays, and drop those waiting",
        body: Some((JSON, client_context_only)),
        responses: MEDIA_RESPONSES,
        ..GRAPH
    },
    Route {
        id: "muteCall",
        method: "post",
        path: "/{version}/communications/calls/{id}/mute",
        summary: "Mute the bot",
        body: Some((JSON, client_context_only)),
        responses: MEDIA_RESPONSES,
        ..GRAPH
    },
    Route {
        id: "unmuteCall",
        method: "post",
        path: "/{version}/communications/calls/{id}/unmute",
        summary: "Unmute the bot",
        body: Some((JSON, client_context_only)),
        responses: MEDIA_RESPONSES,
        ..GRAPH
    },
    Route {
        id: "updateRecordingStatus",
        method: "post",
        path: "/{version}/communications/calls/{id}/updateRecordingStatus",
        summary: "Say whether the bot records the call (shown on its participant)",
        body: Some((JSON, update_recording_status)),
        responses: MEDIA_RESPONSES,
        ..GRAPH
    },
    Route {
        id: "inviteParticipants",
        method: "post",
        path: "/{version}/communications/calls/{id}/participants/invite",
        summary: "Invite participants (a peer-to-peer call becomes a group call; replacesCallId pulls in another call's peer)",
        body: Some((JSON, invite_participants)),
        responses: &[
            json(200, "the inviteParticipantsOperation, running; a notification follows when it ends", media_operation),
            error(403, "no Calls.InitiateGroupCall.All, or a PSTN invitee without an application instance"),
            NOT_FOUND,
            error(409, "not established, already in the call, several into a peer-to-peer call, or a replacesCallId that does not fit"),
        ],
        ..GRAPH
    },
    Route {
        id: "muteParticipant",
        method: "post",
        path: "/{version}/communications/calls/{id}/participants/{participantId}/mute",
        summary: "Mute a participant of a group call",
        body: Some((JSON, client_context_only)),
        responses: &[
            json(200, "the muteParticipantOperation, completed (a roster update follows)", media_operation),
            error(404, "no such call or participant"),
            error(409, "not established, or a peer-to-peer call"),
        ],
        ..GRAPH
    },
    Route {
        id: "deleteParticipant",
        method: "delete",
        path: "/{version}/communications/calls/{id}/participants/{participantId}",
        summary: "Remove a participant (a joined one is dropped, an invited one stops ringing)",
        responses: &[
            empty(204, "removed"),
            error(403, "no Calls.JoinGroupCall.All or Calls.JoinGroupCallAsGuest.All"),
            error(404, "no such call or participant"),
            error(409, "not established, the bot itself, or a peer-to-peer call's peer"),
        ],
        ..GRAPH
    },
    Route {
        id: "startHoldMusic",
        method: "post",
        path: "/{version}/communications/calls/{id}/participants/{participantId}/startHoldMusic",
        summary: "Put a participant on hold with music (one at a time)",
        body: Some((JSON, hold_music_in)),
        responses: &[
            json(202, "the startHoldMusicOperation, running", media_operation),
            error(404, "no such call or participant"),
            error(409, "not established, or someone is on hold already"),
        ],
        ..GRAPH
    },
    Route {
        id: "stopHoldMusic",
        method: "post",
        path: "/{version}/communications/calls/{id}/participants/{participantId}/stopHoldMusic",
        summary: "Take a participant off hold",
        body: Some((JSON, client_context_only)),
        responses: &[
            json(202, "the stopHoldMusicOperation, running", media_operation),
            error(404, "no such call or participant"),
            error(409, "not established, or the participant is not on hold"),
        ],
        ..GRAPH
    },
    Route {
        id: "listOperations",
        path: "/{version}/communications/calls/{id}/operations",
        summary: "List the call's recent operations (transfers)",
        responses: &[json(200, "operations", operation_list), NOT_FOUND],
        ..GRAPH
    },
    Route {
        id: "getOperation",
        path: "/{version}/communications/calls/{id}/operations/{opId}",
        summary: "Get an operation (a transfer), with its clientContext",
        responses: &[json(200, "the operation", comms_operation), error(404, "no such call or operation")],
        ..GRAPH
    },
    Route {
        id: "listParticipants",
        path: "/{version}/communications/calls/{id}/participants",
        summary: "List participants",
        responses: &[json(200, "participants", participant_list), NOT_FOUND],
        ..GRAPH
    },
    Route {
        id: "getParticipant",
        path: "/{version}/communications/calls/{id}/participants/{participantId}",
        summary: "Get a participant",
        responses: &[json(200, "the participant", participant), error(404, "no such call or participant")],
        ..GRAPH
    },
    Route {
        id: "simPlaceCall",
        method: "post",
        path: "/sim/v1/calls",
        summary: "Place an inbound call from a party to a bot",
        body: Some((JSON, sim_call)),
        responses: &[
            json(201, "callId and legId", sim_call_created),
            error(403, "the app is not consented in the caller's tenant"),
            error(409, "the call id is taken, or the app has no calling webhook"),
        ],
        ..SIM
    },
    Route {
        id: "simHangUp",
        method: "post",
        path: "/sim/v1/calls/{callId}/hangup",
        summary: "The far end of a bot's call hangs up",
        responses: &[empty(204, "hung up"), error(404, "no such call"), error(409, "the call's far end is gone already")],
        ..SIM
    },
    Route {
        id: "simDeleteLeg",
        method: "delete",
        path: "/sim/v1/legs/{legId}",
        summary: "Hang up any leg",
        params: &[path("legId", leg_id)],
        responses: &[empty(204, "hung up"), error(404, "no such leg")],
        ..SIM
    },
    Route {
        id: "simSetBehaviour",
        method: "put",
        path: "/sim/v1/parties/{key}/behaviour",
        summary: "Change a user's or number's behaviour",
        body: Some((JSON, behaviour_in)),
        params: &[path("key", party_key)],
        responses: &[json(200, "changed", behaviour_set), error(404, "unknown party")],
        ..SIM
    },
    Route {
        id: "simGetBehaviour",
        path: "/sim/v1/parties/{key}/behaviour",
        summary: "A user's or number's behaviour now: set at run time, or the configured one",
        params: &[path("key", party_key)],
        responses: &[json(200, "the behaviour", behaviour_now), error(404, "unknown party")],
        ..SIM
    },
    Route {
        id: "simDirectory",
        path: "/sim/v1/directory",
        summary: "Who can call and be called (users and numbers, with their behaviours now), and the bots",
        responses: &[json(200, "the directory", sim_directory)],
        ..SIM
    },
    Route {
        id: "simReset",
        method: "post",
        path: "/sim/v1/reset",
        summary: "End every call, clear the world, the calls' stories and the faults, restore the configured behaviours",
        responses: &[json(200, "what was ended", reset_done)],
        ..SIM
    },
    Route {
        id: "simListCalls",
        path: "/sim/v1/calls",
        summary: "The calls whose stories are kept (live, and ended within the retention), newest first",
        params: &[
            Param { location: "query", name: "state", schema: call_state_param },
            Param { location: "query", name: "app", schema: app_id },
        ],
        responses: &[json(200, "calls", call_summaries), error(400, "an unknown state or query parameter")],
        ..SIM
    },
    Route {
        id: "simCallHistory",
        path: "/sim/v1/calls/{callId}/history",
        summary: "A call's story: Graph requests, state changes, notifications and each delivery attempt, network commands and events",
        responses: &[json(200, "the story", call_history), error(404, "no such call, or its story has expired")],
        ..SIM
    },
    Route {
        id: "simPressKeys",
        method: "post",
        path: "/sim/v1/legs/{legId}/dtmf",
        summary: "The leg's party presses keys (one every 100 ms); the bot hears them if it subscribed to tones",
        body: Some((JSON, sim_dtmf)),
        params: &[path("legId", leg_id)],
        responses: &[empty(202, "pressing"), error(404, "no such leg"), error(409, "the leg is not connected to a bot's call")],
        ..SIM
    },
    Route {
        id: "getRecording",
        path: "/recordings/{recordingId}",
        summary: "A recording (recordResponse's recordingLocation); send its recordingAccessToken as a bearer token",
        responses: &[
            Resp { status: 200, description: "the recording, a WAV file", content: Content::Audio },
            error(401, "no token, or not this recording's"),
            error(404, "no such recording (or it expired: recordings are kept an hour)"),
        ],
        ..OPEN
    },
    Route { id: "simWorld", path: "/sim/v1/world", summary: "Every leg and live call", responses: &[json(200, "the world", world)], ..SIM },
    Route {
        id: "simOutbox",
        path: "/sim/v1/outbox",
        summary: "Notifications that failed for good (or pending ones, ?status=pending)",
        params: &[Param { location: "query", name: "status", schema: outbox_status }],
        responses: &[json(200, "outbox rows", outbox), error(400, "unknown status")],
        ..SIM
    },
    Route {
        id: "simRetryOutbox",
        method: "post",
        path: "/sim/v1/outbox/retry",
        summary: "Requeue failed notifications",
        responses: &[json(200, "how many were requeued", requeued)],
        ..SIM
    },
    Route {
        id: "simSetFaults",
        method: "put",
        path: "/sim/v1/apps/{appId}/faults",
        summary: "Inject faults into an app's notifications (duplicates, delays, dropped attempts, answer timeout, bad signatures)",
        body: Some((JSON, faults_in)),
        params: &[path("appId", app_id)],
        responses: &[json(200, "the faults now", faults_set), error(404, "unknown app")],
        ..SIM
    },
    Route {
        id: "simGetFaults",
        path: "/sim/v1/apps/{appId}/faults",
        summary: "The faults injected into an app's notifications",
        params: &[path("appId", app_id)],
        responses: &[json(200, "the faults now", faults_set), error(404, "unknown app")],
        ..SIM
    },
    Route {
        id: "simClearFaults",
        method: "delete",
        path: "/sim/v1/apps/{appId}/faults",
        summary: "Stop injecting faults into an app's notifications",
        params: &[path("appId", app_id)],
        responses: &[empty(204, "no more faults"), error(404, "unknown app")],
        ..SIM
    },
    Route {
        id: "simClock",
        path: "/sim/v1/clock",
        summary: "The clock's time, and whether it is virtual (serve --virtual-clock)",
        responses: &[json(200, "now", clock_now)],
        ..SIM
    },
    Route {
        id: "simAdvanceClock",
        method: "post",
        path: "/sim/v1/clock",
        summary: "Move virtual time forward; every timer that falls due fires, in order, before the answer",
        body: Some((JSON, clock_advance)),
        responses: &[json(200, "the new time", clock_now), error(409, "the clock is not virtual")],
        ..SIM
    },
    Route { id: "healthz", path: "/healthz", summary: "Liveness", responses: &[json(200, "alive", alive)], ..OPEN },
    Route {
        id: "readyz",
        path: "/readyz",
        summary: "Readiness",
        responses: &[json(200, "ready", ready), json(503, "starting, draining, or the store cannot be reached", not_ready)],
        ..OPEN
    },
    Route {
        id: "metrics",
        path: "/metrics",
        summary: "Prometheus metrics",
        responses: &[Resp { status: 200, description: "metrics", content: Content::Text }],
        ..OPEN
    },
    Route {
        id: "openapi",
        path: "/openapi.json",
        summary: "This document",
        responses: &[json(200, "OpenAPI 3.1", openapi_document)],
        ..OPEN
    },
];

/// Responses every route of a kind has, after its own (which win on the same status).
fn shared_responses(r: &Route) -> Vec<Resp> {
    let mut shared = Vec::new();
    if r.body.is_some_and(|(ct, _)| ct == JSON) {
        shared.extend([error(400, "invalid request body"), error(415, "the body is not application/json")]);
    }
    match r.auth {
        Auth::Bearer => {
            shared.extend([error(401, "missing or invalid token"), error(403, "no calling permission, or another tenant's call")])
        }
        Auth::AdminKey => shared.extend([error(401, "no admin key"), error(403, "wrong admin key")]),
        Auth::None => {}
    }
    if r.path.starts_with("/{version}") {
        shared.push(error(404, "unknown version or segment"));
    }
    shared
}

// ---------------------------------------------------------------------------
// Links: how the stateful phase of a fuzzer reaches live calls

struct Link {
    from: &'static str,
    status: u16,
    name: &'static str,
    to: &'static str,
    params: &'static [(&'static str, &'static str)],
}

const SIM_CALL: &[(&str, &str)] = &[("id", "$response.body#/callId")];
const NEW_CALL: &[(&str, &str)] = &[("id", "$response.body#/id")];
const SAME_CALL: &[(&str, &str)] = &[("id", "$request.path.id")];

const LINKS: &[Link] = &[
    Link { from: "simPlaceCall", status: 201, name: "answer", to: "answerCall", params: SIM_CALL },
    Link { from: "simPlaceCall", status: 201, name: "reject", to: "rejectCall", params: SIM_CALL },
    Link { from: "simPlaceCall", status: 201, name: "redirect", to: "redirectCall", params: SIM_CALL },
    Link { from: "simPlaceCall", status: 201, name: "get", to: "getCall", params: SIM_CALL },
    Link { from: "simPlaceCall", status: 201, name: "hangUp", to: "simHangUp", params: &[("callId", "$response.body#/callId")] },
    Link { from: "simPlaceCall", status: 201, name: "dropLeg", to: "simDeleteLeg", params: &[("legId", "$response.body#/legId")] },
    Link { from: "simPlaceCall", status: 201, name: "participants", to: "listParticipants", params: SIM_CALL },
    // While a caller waits, the bot places a consultation call (for a consultative transfer).
    Link { from: "simPlaceCall", status: 201, name: "consult", to: "createCall", params: &[] },
    Link { from: "createCall", status: 201, name: "get", to: "getCall", params: NEW_CALL },
    Link { from: "createCall", status: 201, name: "hangUp", to: "deleteCall", params: NEW_CALL },
    Link { from: "createCall", status: 201, name: "transfer", to: "transferCall", params: NEW_CALL },
    Link { from: "createCall", status: 201, name: "keepAlive", to: "keepAliveCall", params: NEW_CALL },
    Link { from: "createCall", status: 201, name: "participants", to: "listParticipants", params: NEW_CALL },
    Link { from: "createCall", status: 201, name: "operations", to: "listOperations", params: NEW_CALL },
    Link { from: "answerCall", status: 202, name: "transfer", to: "transferCall", params: SAME_CALL },
    Link { from: "answerCall", status: 202, name: "get", to: "getCall", params: SAME_CALL },
    Link { from: "transferCall", status: 202, name: "operations", to: "listOperations", params: SAME_CALL },
    Link {
        from: "listOperations",
        status: 200,
        name: "operation",
        to: "getOperation",
        params: &[("id", "$request.path.id"), ("opId", "$response.body#/value/0/id")],
    },
    Link {
        from: "listParticipants",
        status: 200,
        name: "participant",
        to: "getParticipant",
        params: &[("id", "$request.path.id"), ("participantId", "$response.body#/value/0/id")],
    },
];

fn links(route: &Route, status: u16) -> Option<Value> {
    let found: Map<String, Value> = LINKS
        .iter()
        .filter(|l| l.from == route.id && l.status == status)
        .map(|l| {
            let params: Map<String, Value> = l.params.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
            (l.name.to_owned(), json!({"operationId": l.to, "parameters": params}))
        })
        .collect();
    (!found.is_empty()).then_some(Value::Object(found))
}

// ---------------------------------------------------------------------------
// The document

fn parameters(r: &Route, ctx: &Ctx<'_>) -> Vec<Value> {
    let in_path = r.path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')));
    let mut out: Vec<Value> = in_path
        .map(|name| {
            let given = r.params.iter().find(|p| p.location == "path" && p.name == name).map(|p| p.schema);
            let schema = given.unwrap_or(match name {
                "version" => version,
                "tenant" => tenant,
                _ => opaque_id,
            });
            json!({"name": name, "in": "path", "required": true, "schema": schema(ctx)})
        })
        .collect();
    out.extend(
        r.params
            .iter()
            .filter(|p| p.location != "path")
            .map(|p| json!({"name": p.name, "in": p.location, "required": false, "schema": (p.schema)(ctx)})),
    );
    out
}

fn response(r: &Route, resp: &Resp, ctx: &Ctx<'_>) -> Value {
    let mut out = json!({"description": resp.description});
    let content = match resp.content {
        Content::Empty => None,
        Content::Json(schema) => Some(json!({JSON: {"schema": schema(ctx)}})),
        Content::Text => Some(json!({"text/plain": {"schema": {"type": "string"}}})),
        Content::Audio => Some(json!({"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}})),
        Content::GraphError => Some(json!({JSON: {"schema": reference("error")}})),
        Content::IdentityError => Some(json!({JSON: {"schema": reference("identityError")}})),
    };
    if let Some(c) = content {
        out["content"] = c;
    }
    let location = match (r.id, resp.status) {
        ("createCall", 201) => Some(true),
        ("transferCall", 202) => Some(false),
        _ => None,
    };
    if let Some(required) = location {
        out["headers"] = json!({"Location": {"required": required, "schema": {"type": "string", "format": "uri"}}});
    }
    if let Some(l) = links(r, resp.status) {
        out["links"] = l;
    }
    out
}

fn operation(r: &Route, ctx: &Ctx<'_>) -> Value {
    let mut responses = Map::new();
    for resp in r.responses.iter().copied().chain(shared_responses(r)) {
        if !responses.contains_key(&resp.status.to_string()) {
            responses.insert(resp.status.to_string(), response(r, &resp, ctx));
        }
    }
    let security = match r.auth {
        Auth::Bearer => json!([{"bearer": []}]),
        Auth::AdminKey => json!([{"adminKey": []}]),
        Auth::None => json!([]),
    };
    let mut op = json!({
        "tags": [r.tag],
        "summary": r.summary,
        "operationId": r.id,
        "parameters": parameters(r, ctx),
        "responses": responses,
        "security": security,
    });
    if let Some((ct, schema)) = r.body {
        // The media actions that take only optional fields may come without a body.
        let optional = matches!(
            r.id,
            "subscribeToTone"
                | "cancelMediaProcessing"
                | "muteCall"
                | "unmuteCall"
                | "recordResponse"
                | "muteParticipant"
                | "startHoldMusic"
                | "stopHoldMusic"
        );
        op["requestBody"] = json!({"required": !optional, "content": {ct: {"schema": schema(ctx)}}});
    }
    op
}

fn components(ctx: &Ctx<'_>) -> Value {
    let schemas: [(&str, Schema); 14] = [
        ("error", graph_error),
        ("identityError", identity_error),
        ("mediaConfigInput", media_config_in),
        ("identitySetInput", identity_set_in),
        ("invitationTarget", invitation_target),
        ("identitySet", identity_set_out),
        ("participantInfo", participant_info),
        ("invitationParticipantInfo", invitation_participant_info),
        ("resultInfo", result_info),
        ("call", call),
        ("participant", participant),
        ("commsOperation", comms_operation),
        ("simParty", party),
        ("identity", |_| identity_out()),
    ];
    let schemas: Map<String, Value> = schemas.iter().map(|(name, schema)| ((*name).to_owned(), schema(ctx))).collect();
    json!({
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            "adminKey": {"type": "apiKey", "in": "header", "name": "X-Sim-Admin-Key"}
        },
        "schemas": schemas
    })
}

/// The document for a server at `base_url` running `config`: enums list the directory's ids.
pub fn document(base_url: &str, config: &Config) -> Value {
    let ctx = Ctx { config };
    let mut paths = Map::new();
    for r in ROUTES {
        let entry = paths.entry(r.path.to_owned()).or_insert_with(|| json!({}));
        entry[r.method] = operation(r, &ctx);
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Switchboard", "version": env!("CARGO_PKG_VERSION"), "description": "Microsoft Graph calling API on a simulated telephony network. Graph routes also answer under /beta/app/calls and /beta/applications/{appId}/calls, and accept microsoft.graph.-qualified action names. Enumerations list the ids of the directory this server runs with."},
        "servers": [{"url": base_url}],
        "paths": paths,
        "components": components(&ctx)
    })
}
