//! The OpenAPI document of everything Switchboard serves, built from [`ROUTES`].
//!
//! The table is the single description of the surface; an integration test walks it and checks that
//! every listed route answers as listed, so the document cannot drift from the router.

use serde_json::{Map, Value, json};

/// A request body: its content type and a function building its JSON schema.
pub type Body = (&'static str, fn() -> Value);

/// One operation of the surface.
pub struct Route {
    pub method: &'static str,
    /// OpenAPI path, with `{version}` standing for `v1.0` and `beta`.
    pub path: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    /// Request body: (content type, schema).
    pub body: Option<Body>,
    /// Status codes and what they mean.
    pub responses: &'static [(u16, &'static str)],
    pub auth: Auth,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    None,
    Bearer,
    AdminKey,
}

fn obj() -> Value {
    json!({"type": "object", "additionalProperties": true})
}

fn create_call() -> Value {
    json!({"type": "object", "required": ["callbackUri", "mediaConfig", "targets"], "additionalProperties": true, "properties": {
        "callbackUri": {"type": "string", "format": "uri"},
        "mediaConfig": {"$ref": "#/components/schemas/mediaConfig"},
        "requestedModalities": {"type": "array", "items": {"type": "string", "enum": ["audio", "video", "videoBasedScreenSharing", "data"]}},
        "targets": {"type": "array", "minItems": 1, "maxItems": 1, "items": {"$ref": "#/components/schemas/invitationParticipantInfo"}},
        "source": {"type": "object"},
        "tenantId": {"type": "string"},
        "subject": {"type": "string"},
        "ringingTimeoutInSeconds": {"type": "integer", "minimum": 1, "maximum": 115}
    }})
}

fn answer() -> Value {
    json!({"type": "object", "required": ["mediaConfig", "acceptedModalities"], "additionalProperties": true, "properties": {
        "callbackUri": {"type": "string", "format": "uri"},
        "mediaConfig": {"$ref": "#/components/schemas/mediaConfig"},
        "acceptedModalities": {"type": "array", "minItems": 1, "items": {"type": "string", "enum": ["audio", "video", "videoBasedScreenSharing", "data"]}},
        "participantCapacity": {"type": "integer", "minimum": 0}
    }})
}

fn reject() -> Value {
    json!({"type": "object", "additionalProperties": true, "properties": {
        "reason": {"type": "string", "enum": ["none", "busy", "forbidden"]},
        "callbackUri": {"type": "string", "format": "uri"}
    }})
}

fn redirect() -> Value {
    json!({"type": "object", "required": ["targets"], "additionalProperties": true, "properties": {
        "targets": {"type": "array", "minItems": 1, "maxItems": 25, "items": {"$ref": "#/components/schemas/invitationParticipantInfo"}},
        "timeout": {"type": "integer", "minimum": 15, "maximum": 90},
        "callbackUri": {"type": "string", "format": "uri"}
    }})
}

fn transfer() -> Value {
    json!({"type": "object", "additionalProperties": true, "properties": {
        "transferTarget": {"$ref": "#/components/schemas/invitationParticipantInfo"},
        "transferee": {"type": "object", "properties": {"identity": {"type": "object"}, "participantId": {"type": "string"}}},
        "clientContext": {"type": "string", "maxLength": 256},
        "target": {"type": "object", "description": "2018 beta: the target as an identitySet"},
        "replacesCallId": {"type": "string", "description": "2018 beta: top-level replacesCallId"}
    }})
}

fn token_form() -> Value {
    json!({"type": "object", "required": ["grant_type", "client_id", "client_secret", "scope"], "properties": {
        "grant_type": {"type": "string", "enum": ["client_credentials"]},
        "client_id": {"type": "string"}, "client_secret": {"type": "string"},
        "scope": {"type": "string", "example": "https://graph.microsoft.com/.default"}
    }})
}

fn sim_call() -> Value {
    json!({"type": "object", "required": ["from", "to"], "properties": {
        "from": {"type": "string", "description": "a user id of the directory or an E.164 number"},
        "to": {"type": "string", "description": "an application id, application instance id or instance phone number"},
        "callId": {"type": "string", "pattern": "^[A-Za-z0-9-]{1,64}$", "description": "the bot's call id (default: a new GUID); lets tests replay documented examples with their ids"}
    }})
}

fn behaviour() -> Value {
    json!({"type": "object", "required": ["kind"], "properties": {
        "kind": {"type": "string", "enum": ["answer", "busy", "decline", "no-answer"]},
        "after_ms": {"type": "integer", "minimum": 0, "maximum": 3600000},
        "hang_up_after_ms": {"type": ["integer", "null"], "minimum": 0, "maximum": 3600000},
        "transfer_delay_ms": {"type": ["integer", "null"], "minimum": 0, "maximum": 3600000}
    }})
}

const JSON: &str = "application/json";
const GRAPH_ERRORS: [(u16, &str); 3] =
    [(400, "invalid request"), (401, "missing or invalid token"), (403, "missing permission or wrong tenant")];

pub const ROUTES: &[Route] = &[
    Route {
        method: "post",
        path: "/{tenant}/oauth2/v2.0/token",
        tag: "identity",
        summary: "Client-credentials token",
        body: Some(("application/x-www-form-urlencoded", token_form)),
        responses: &[(200, "token"), (400, "invalid request"), (401, "invalid client")],
        auth: Auth::None,
    },
    Route {
        method: "get",
        path: "/{tenant}/v2.0/.well-known/openid-configuration",
        tag: "identity",
        summary: "OpenID configuration of a tenant",
        body: None,
        responses: &[(200, "configuration"), (400, "unknown tenant")],
        auth: Auth::None,
    },
    Route {
        method: "get",
        path: "/{tenant}/discovery/v2.0/keys",
        tag: "identity",
        summary: "Signing keys (JWKS) for access and notification tokens",
        body: None,
        responses: &[(200, "JWKS")],
        auth: Auth::None,
    },
    Route {
        method: "get",
        path: "/notifications/v1/.well-known/openid-configuration",
        tag: "identity",
        summary: "OpenID configuration for validating notification tokens",
        body: None,
        responses: &[(200, "configuration")],
        auth: Auth::None,
    },
    Route {
        method: "post",
        path: "/{version}/communications/calls",
        tag: "calls",
        summary: "Create an outgoing peer-to-peer call",
        body: Some((JSON, create_call)),
        responses: &[
            (201, "the call, with Location"),
            (400, "invalid request"),
            (401, "missing or invalid token"),
            (403, "missing permission or wrong tenant"),
        ],
        auth: Auth::Bearer,
    },
    Route {
        method: "get",
        path: "/{version}/communications/calls",
        tag: "calls",
        summary: "List the app's live calls",
        body: None,
        responses: &[(200, "calls"), (401, "missing or invalid token"), (403, "missing permission or wrong tenant")],
        auth: Auth::Bearer,
    },
    Route {
        method: "get",
        path: "/{version}/communications/calls/{id}",
        tag: "calls",
        summary: "Get a call",
        body: None,
        responses: &[(200, "the call"), (401, "missing or invalid token"), (403, "wrong tenant"), (404, "8522 call not found")],
        auth: Auth::Bearer,
    },
    Route {
        method: "delete",
        path: "/{version}/communications/calls/{id}",
        tag: "calls",
        summary: "Hang up",
        body: None,
        responses: &[(204, "hanging up"), (404, "8522 call not found"), (409, "already terminating")],
        auth: Auth::Bearer,
    },
    Route {
        method: "post",
        path: "/{version}/communications/calls/{id}/answer",
        tag: "calls",
        summary: "Answer an incoming call",
        body: Some((JSON, answer)),
        responses: &[(202, "answering"), (400, "invalid request"), (404, "8522 call not found"), (409, "not incoming")],
        auth: Auth::Bearer,
    },
    Route {
        method: "post",
        path: "/{version}/communications/calls/{id}/reject",
        tag: "calls",
        summary: "Reject an incoming call",
        body: Some((JSON, reject)),
        responses: &[(202, "rejected"), (400, "invalid request"), (404, "8522 call not found"), (409, "not incoming")],
        auth: Auth::Bearer,
    },
    Route {
        method: "post",
        path: "/{version}/communications/calls/{id}/redirect",
        tag: "calls",
        summary: "Redirect an incoming call",
        body: Some((JSON, redirect)),
        responses: &[
            (202, "redirected"),
            (400, "invalid request"),
            (403, "PSTN without an application instance"),
            (404, "8522 call not found"),
            (409, "not incoming"),
        ],
        auth: Auth::Bearer,
    },
    Route {
        method: "post",
        path: "/{version}/communications/calls/{id}/transfer",
        tag: "calls",
        summary: "Transfer the call: blind, consultative (replacesCallId), to PSTN",
        body: Some((JSON, transfer)),
        responses: &[
            (202, "transferring"),
            (400, "invalid request"),
            (403, "PSTN without an application instance, or across tenants"),
            (404, "8522 call not found"),
            (409, "not established"),
        ],
        auth: Auth::Bearer,
    },
    Route {
        method: "post",
        path: "/{version}/communications/calls/{id}/keepAlive",
        tag: "calls",
        summary: "Keep the call alive for another 45 minutes",
        body: None,
        responses: &[(200, "kept alive"), (404, "8522 call not found")],
        auth: Auth::Bearer,
    },
    Route {
        method: "get",
        path: "/{version}/communications/calls/{id}/operations",
        tag: "calls",
        summary: "List the call's recent operations (transfers)",
        body: None,
        responses: &[(200, "operations"), (404, "8522 call not found")],
        auth: Auth::Bearer,
    },
    Route {
        method: "get",
        path: "/{version}/communications/calls/{id}/operations/{opId}",
        tag: "calls",
        summary: "Get an operation (a transfer), with its clientContext",
        body: None,
        responses: &[(200, "the operation"), (404, "no such operation")],
        auth: Auth::Bearer,
    },
    Route {
        method: "get",
        path: "/{version}/communications/calls/{id}/participants",
        tag: "calls",
        summary: "List participants",
        body: None,
        responses: &[(200, "participants"), (404, "8522 call not found")],
        auth: Auth::Bearer,
    },
    Route {
        method: "get",
        path: "/{version}/communications/calls/{id}/participants/{participantId}",
        tag: "calls",
        summary: "Get a participant",
        body: None,
        responses: &[(200, "the participant"), (404, "not found")],
        auth: Auth::Bearer,
    },
    Route {
        method: "post",
        path: "/sim/v1/calls",
        tag: "sim",
        summary: "Place an inbound call from a party to a bot",
        body: Some((JSON, sim_call)),
        responses: &[
            (201, "callId and legId"),
            (400, "invalid request"),
            (401, "no admin key"),
            (403, "wrong admin key"),
            (409, "the call id is taken"),
        ],
        auth: Auth::AdminKey,
    },
    Route {
        method: "post",
        path: "/sim/v1/calls/{callId}/hangup",
        tag: "sim",
        summary: "The far end of a bot's call hangs up",
        body: None,
        responses: &[(204, "hung up"), (404, "no such call")],
        auth: Auth::AdminKey,
    },
    Route {
        method: "delete",
        path: "/sim/v1/legs/{legId}",
        tag: "sim",
        summary: "Hang up any leg",
        body: None,
        responses: &[(204, "hung up"), (404, "no such leg")],
        auth: Auth::AdminKey,
    },
    Route {
        method: "put",
        path: "/sim/v1/parties/{key}/behaviour",
        tag: "sim",
        summary: "Change a user's or number's behaviour",
        body: Some((JSON, behaviour)),
        responses: &[(200, "changed"), (400, "invalid behaviour"), (404, "unknown party")],
        auth: Auth::AdminKey,
    },
    Route {
        method: "get",
        path: "/sim/v1/world",
        tag: "sim",
        summary: "Every leg and live call",
        body: None,
        responses: &[(200, "the world")],
        auth: Auth::AdminKey,
    },
    Route {
        method: "get",
        path: "/sim/v1/outbox",
        tag: "sim",
        summary: "Notifications that failed for good (or pending ones, ?status=pending)",
        body: None,
        responses: &[(200, "outbox rows")],
        auth: Auth::AdminKey,
    },
    Route {
        method: "post",
        path: "/sim/v1/outbox/retry",
        tag: "sim",
        summary: "Requeue failed notifications",
        body: None,
        responses: &[(200, "how many were requeued")],
        auth: Auth::AdminKey,
    },
    Route { method: "get", path: "/healthz", tag: "ops", summary: "Liveness", body: None, responses: &[(200, "alive")], auth: Auth::None },
    Route {
        method: "get",
        path: "/readyz",
        tag: "ops",
        summary: "Readiness",
        body: None,
        responses: &[(200, "ready"), (503, "starting or draining")],
        auth: Auth::None,
    },
    Route {
        method: "get",
        path: "/metrics",
        tag: "ops",
        summary: "Prometheus metrics",
        body: None,
        responses: &[(200, "metrics")],
        auth: Auth::None,
    },
    Route {
        method: "get",
        path: "/openapi.json",
        tag: "ops",
        summary: "This document",
        body: None,
        responses: &[(200, "OpenAPI 3.1")],
        auth: Auth::None,
    },
];

fn params(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            let schema = if name == "version" { json!({"type": "string", "enum": ["v1.0", "beta"]}) } else { json!({"type": "string"}) };
            json!({"name": name, "in": "path", "required": true, "schema": schema})
        })
        .collect()
}

pub fn document(base_url: &str) -> Value {
    let mut paths = Map::new();
    for r in ROUTES {
        let mut responses = Map::new();
        let extra: &[(u16, &str)] = if r.auth == Auth::Bearer { &GRAPH_ERRORS } else { &[] };
        for (code, desc) in r.responses.iter().chain(extra) {
            let schema = if *code >= 400 && r.tag != "identity" { json!({"$ref": "#/components/schemas/error"}) } else { obj() };
            let content = if *code == 204 { json!(null) } else { json!({"application/json": {"schema": schema}}) };
            let mut resp = json!({"description": desc});
            if !content.is_null() {
                resp["content"] = content;
            }
            responses.entry(code.to_string()).or_insert(resp);
        }
        let mut op = json!({
            "tags": [r.tag],
            "summary": r.summary,
            "operationId": format!("{}{}", r.method, r.path.replace(['/', '{', '}', '.', '-'], "_")),
            "parameters": params(r.path),
            "responses": responses,
        });
        match r.auth {
            Auth::Bearer => op["security"] = json!([{"bearer": []}]),
            Auth::AdminKey => op["security"] = json!([{"adminKey": []}]),
            Auth::None => op["security"] = json!([]),
        }
        if let Some((ct, schema)) = r.body {
            op["requestBody"] = json!({"required": true, "content": {ct: {"schema": schema()}}});
        }
        let entry = paths.entry(r.path.to_owned()).or_insert_with(|| json!({}));
        entry[r.method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Switchboard", "version": env!("CARGO_PKG_VERSION"), "description": "Microsoft Graph calling API on a simulated telephony network. Graph routes also answer under /beta/app/calls and /beta/applications/{appId}/calls, and accept microsoft.graph.-qualified action names."},
        "servers": [{"url": base_url}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "adminKey": {"type": "apiKey", "in": "header", "name": "X-Sim-Admin-Key"}
            },
            "schemas": {
                "error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message", "innerError"], "properties": {
                    "code": {"type": "string"}, "message": {"type": "string"},
                    "innerError": {"type": "object", "properties": {"date": {"type": "string"}, "request-id": {"type": "string"}, "client-request-id": {"type": "string"}}}
                }}}},
                "mediaConfig": {"type": "object", "required": ["@odata.type"], "properties": {"@odata.type": {"type": "string", "enum": ["#microsoft.graph.serviceHostedMediaConfig", "#microsoft.graph.appHostedMediaConfig"]}}},
                "invitationParticipantInfo": {"type": "object", "required": ["identity"], "additionalProperties": true, "properties": {"identity": {"type": "object"}, "replacesCallId": {"type": "string"}}}
            }
        }
    })
}
