//! Malformed and refused requests: each gets a precise Graph error, never a 5xx.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::*;

/// One refused request: method, path, body (raw text with a content type), the expected status, code
/// and a fragment of the message.
struct Case {
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    body: Option<String>,
    status: u16,
    code: &'static str,
    message: &'static str,
}

fn case(method: Method, path: &str, body: Option<Value>, status: u16, code: &'static str, message: &'static str) -> Case {
    Case {
        method,
        path: path.to_owned(),
        content_type: body.as_ref().map(|_| "application/json"),
        body: body.map(|b| b.to_string()),
        status,
        code,
        message,
    }
}

/// Sends `c` with `token` and checks the status, the envelope and the ids.
async fn check(server: &Server, token: &str, c: Case) {
    let mut req =
        server.http.request(c.method.clone(), server.url(&c.path)).bearer_auth(token).header("client-request-id", "test-client-id");
    if let Some(ct) = c.content_type {
        req = req.header("content-type", ct);
    }
    if let Some(b) = c.body.clone() {
        req = req.body(b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let request_id = resp.headers().get("request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let client_request_id = resp.headers().get("client-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    let what = format!("{} {} {:?}", c.method, c.path, c.body);
    assert_eq!(status, c.status, "{what}: {body}");
    assert_eq!(body["error"]["code"], c.code, "{what}: {body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(c.message), "{what}: message {message:?} lacks {:?}", c.message);
    assert_eq!(body["error"]["innerError"]["request-id"].as_str(), request_id.as_deref(), "{what}");
    assert_eq!(client_request_id.as_deref(), Some("test-client-id"), "{what}");
    assert_eq!(body["error"]["innerError"]["client-request-id"], "test-client-id", "{what}");
    assert!(body["error"]["innerError"]["date"].is_string(), "{what}");
}

#[tokio::test]
async fn malformed_requests_get_precise_graph_errors() {
    let mut bot = Bot::start().await;
    let server = Server::start(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let (_, call) = server.graph(Method::POST, "/v1.0/communications/calls", &token, Some(call_to_user(&bot.callback("e"), HEIDI))).await;
    let id = call["id"].as_str().unwrap().to_owned();
    bot.take(2).await;
    let calls = "/v1.0/communications/calls";
    let this = format!("{calls}/{id}");
    let valid = call_to_user(&bot.callback("e"), HEIDI);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = valid.clone();
        f(&mut v);
        Some(v)
    };
    let cases = vec![
        Case {
            method: Method::POST,
            path: calls.into(),
            content_type: Some("application/json"),
            body: Some("{not json".into()),
            status: 400,
            code: "BadRequest",
            message: "(body): invalid JSON",
        },
        Case {
            method: Method::POST,
            path: calls.into(),
            content_type: Some("application/json"),
            body: Some("[1,2]".into()),
            status: 400,
            code: "BadRequest",
            message: "expected a JSON object, found an array",
        },
        Case {
            method: Method::POST,
            path: calls.into(),
            content_type: Some("application/json"),
            body: Some("".into()),
            status: 400,
            code: "BadRequest",
            message: "the body is empty",
        },
        Case {
            method: Method::POST,
            path: calls.into(),
            content_type: Some("text/plain"),
            body: Some("{}".into()),
            status: 415,
            code: "UnsupportedMediaType",
            message: "Content-Type must be application/json",
        },
        Case {
            method: Method::POST,
            path: calls.into(),
            content_type: Some("application/json"),
            body: Some(format!("{{\"x\":\"{}\"}}", "a".repeat(1_100_000))),
            status: 413,
            code: "RequestEntityTooLarge",
            message: "exceeds the limit",
        },
        case(
            Method::POST,
            calls,
            with(&|v| v.as_object_mut().unwrap().remove("callbackUri").map(drop).unwrap_or(())),
            400,
            "BadRequest",
            "callbackUri: is required",
        ),
        case(
            Method::POST,
            calls,
            with(&|v| v["callbackUri"] = json!(42)),
            400,
            "BadRequest",
            "callbackUri: expected a string, found a number",
        ),
        case(
            Method::POST,
            calls,
            with(&|v| v["callbackUri"] = json!("http://bot.example.com/cb")),
            400,
            "BadRequest",
            "callbackUri: 'http://bot.example.com/cb' uses http, which goes only to hosts named in [callbacks] allow; use https",
        ),
        case(Method::POST, calls, with(&|v| v["callbackUri"] = json!("ftp://x")), 400, "BadRequest", "'ftp://x' must use https or http"),
        case(
            Method::POST,
            calls,
            with(&|v| v.as_object_mut().unwrap().remove("mediaConfig").map(drop).unwrap_or(())),
            400,
            "BadRequest",
            "mediaConfig: is required",
        ),
        case(Method::POST, calls, with(&|v| v["mediaConfig"] = json!({})), 400, "BadRequest", "mediaConfig.@odata.type: is required"),
        case(
            Method::POST,
            calls,
            with(&|v| v["mediaConfig"] = json!({"@odata.type": "#microsoft.graph.fooConfig"})),
            400,
            "BadRequest",
            "'fooconfig' is not a media configuration",
        ),
        case(
            Method::POST,
            calls,
            with(&|v| v["requestedModalities"] = json!(["smell"])),
            400,
            "BadRequest",
            "requestedModalities[0]: 'smell' is not a modality",
        ),
        case(Method::POST, calls, with(&|v| v["requestedModalities"] = json!([])), 400, "BadRequest", "must name at least one modality"),
        case(
            Method::POST,
            calls,
            with(&|v| v.as_object_mut().unwrap().remove("targets").map(drop).unwrap_or(())),
            400,
            "BadRequest",
            "targets: is required",
        ),
        case(
            Method::POST,
            calls,
            with(&|v| v["targets"] = json!([])),
            400,
            "BadRequest",
            "targets: must name 1 to 25 parties to call, not 0",
        ),
        case(
            Method::POST,
            calls,
            with(&|v| v["targets"] = json!("heidi")),
            400,
            "BadRequest",
            "targets: expected an array, found a string",
        ),
        case(
            Method::POST,
            calls,
            with(&|v| v["targets"] = json!([1])),
            400,
            "BadRequest",
            "targets[0]: expected an object, found a number",
        ),
        case(Method::POST, calls, with(&|v| v["targets"] = json!([{}])), 400, "BadRequest", "targets[0].identity: is required"),
        case(
            Method::POST,
            calls,
            with(&|v| v["targets"] = json!([{"identity": {}}])),
            400,
            "BadRequest",
            "targets[0].identity: must name a user",
        ),
        case(
            Method::POST,
            calls,
            with(&|v| v["targets"] = json!([{"identity": {"user": {}}}])),
            400,
            "BadRequest",
            "targets[0].identity.user.id: is required",
        ),
        case(
            Method::POST,
            calls,
            with(&|v| v["targets"] = json!([{"identity": {"user": {"id": "nobody"}}}])),
            400,
            "BadRequest",
            "targets[0].identity.user.id: user 'nobody' does not exist",
        ),
        case(
            Method::POST,
            calls,
            with(&|v| v["targets"] = json!([{"identity": {"user": {"id": HEIDI, "tenantId": FABRIKAM}}}])),
            400,
            "BadRequest",
            "is not the tenant of user",
        ),
        case(
            Method::POST,
            calls,
            with(&|v| v["targets"] = json!([{"identity": {"guest": {"id": "g"}}}])),
            400,
            "BadRequest",
            "guest identities are not supported",
        ),
        case(
            Method::POST,
            calls,
            with(&|v| v["targets"] = json!([{"identity": {"phone": {"id": "12345"}}}])),
            400,
            "BadRequest",
            "is not an E.164 phone number",
        ),
        case(
            Method::POST,
            calls,
            with(&|v| v["targets"] = json!(vec![json!({"identity": {"user": {"id": HEIDI}}}); 26])),
            400,
            "BadRequest",
            "targets: must name 1 to 25 parties to call, not 26",
        ),
        case(
            Method::POST,
            calls,
            with(&|v| v["targets"] = json!([{"identity": {"user": {"id": FIONA}}}])),
            403,
            "Forbidden",
            "calls across tenants are not allowed",
        ),
        case(
            Method::POST,
            calls,
            with(&|v| v["targets"] = json!([{"identity": {"phone": {"id": "+12345678901"}}}])),
            403,
            "Forbidden",
            "must be placed from an application instance",
        ),
        case(
            Method::POST,
            calls,
            with(&|v| v["targets"] = json!([{"identity": {"application": {"id": DEMO_BOT}}}])),
            403,
            "Forbidden",
            "a bot cannot call itself",
        ),
        case(
            Method::POST,
            calls,
            with(&|v| v["source"] = json!({"identity": {"applicationInstance": {"id": "dddddddd-0000-4000-8000-000000000007"}}})),
            403,
            "Forbidden",
            "does not belong to application",
        ),
        case(Method::POST, calls, with(&|v| v["tenantId"] = json!(FABRIKAM)), 403, "Forbidden", "calls across tenants are not allowed"),
        case(Method::POST, calls, with(&|v| v["tenantId"] = json!("nowhere")), 400, "BadRequest", "tenantId: 'nowhere' is not the tenant"),
        case(
            Method::POST,
            calls,
            with(&|v| v["ringingTimeoutInSeconds"] = json!(1.5)),
            400,
            "BadRequest",
            "ringingTimeoutInSeconds: expected an integer",
        ),
        case(
            Method::POST,
            calls,
            with(&|v| v["meetingInfo"] = json!({"@odata.type": "#microsoft.graph.organizerMeetingInfo"})),
            400,
            "BadRequest",
            "Joining meetings",
        ),
        case(
            Method::POST,
            calls,
            with(&|v| v["ringingTimeoutInSeconds"] = json!(500)),
            400,
            "BadRequest",
            "ringingTimeoutInSeconds: 500 is out of range",
        ),
        case(Method::GET, &format!("{calls}/00000000-0000-0000-0000-000000000000"), None, 404, "8522", "Call not found"),
        case(Method::DELETE, &format!("{calls}/nope"), None, 404, "8522", "Call not found"),
        case(Method::POST, &format!("{calls}/nope/answer"), Some(json!({})), 404, "8522", "Call not found"),
        case(Method::POST, &format!("{calls}/nope/keepAlive"), None, 404, "8522", "Call not found"),
        case(Method::PUT, &this, Some(json!({})), 405, "MethodNotAllowed", "PUT is not allowed"),
        case(Method::GET, &format!("{this}/answer"), None, 405, "MethodNotAllowed", "GET is not allowed"),
        case(Method::POST, &format!("{this}/dance"), Some(json!({})), 404, "UnknownSegment", "'dance'"),
        case(Method::GET, "/v1.0/communications/meetings", None, 404, "UnknownSegment", "'meetings'"),
        case(Method::GET, "/v1.0/app/calls", None, 404, "UnknownSegment", "'app'"),
        case(Method::GET, "/v1.0/me", None, 404, "UnknownSegment", "'me'"),
        case(Method::GET, &format!("/beta/applications/{UNPRIVILEGED_BOT}/calls"), None, 403, "Forbidden", "the token is for application"),
        case(
            Method::POST,
            &format!("{this}/answer"),
            Some(json!({"mediaConfig": {"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"}, "acceptedModalities": ["audio"]})),
            409,
            "InvalidCallState",
            "Cannot answer a call in state 'established'",
        ),
        case(
            Method::POST,
            &format!("{this}/answer"),
            Some(json!({"mediaConfig": {"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"}})),
            400,
            "BadRequest",
            "acceptedModalities: is required",
        ),
        case(
            Method::POST,
            &format!("{this}/reject"),
            Some(json!({"reason": "grumpy"})),
            400,
            "BadRequest",
            "reason: 'grumpy' is not a rejectReason",
        ),
        case(
            Method::POST,
            &format!("{this}/redirect"),
            Some(json!({"targets": []})),
            400,
            "BadRequest",
            "targets: must name 1 to 25 targets",
        ),
        case(
            Method::POST,
            &format!("{this}/redirect"),
            Some(json!({"targets": [{"identity": {"user": {"id": ALEX}}}], "timeout": 5})),
            400,
            "BadRequest",
            "timeout: 5 is out of range",
        ),
        case(
            Method::POST,
            &format!("{this}/redirect"),
            Some(json!({"targets": [{"identity": {"phone": {"id": "+12345678901"}}}]})),
            403,
            "Forbidden",
            "needs a call that belongs to an application instance",
        ),
        case(Method::POST, &format!("{this}/transfer"), Some(json!({})), 400, "BadRequest", "transferTarget: is required"),
    ];
    for c in cases {
        check(&server, &token, c).await;
    }
    // After all that, the call is still up and usable.
    let (status, body) = server.graph(Method::GET, &this, &token, None).await;
    assert_eq!((status, body["state"].as_str()), (200, Some("established")));
    assert!(!server.metrics().await.contains("status=\"5"), "no 5xx was ever served");
}

#[tokio::test]
async fn tokens_permissions_tenants_and_ownership() {
    let mut bot = Bot::start().await;
    let server = Server::start(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let (_, call) = server.graph(Method::POST, "/v1.0/communications/calls", &token, Some(call_to_user(&bot.callback("o"), HEIDI))).await;
    let id = call["id"].as_str().unwrap().to_owned();
    bot.take(2).await;
    let this = format!("/v1.0/communications/calls/{id}");

    // No token, a malformed one, a forged one.
    let resp = server.http.get(server.url(&this)).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()), Some("Bearer"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
    check(&server, "garbage", case(Method::GET, &this, None, 401, "InvalidAuthenticationToken", "Access token validation failure")).await;
    let mut forged: Vec<&str> = token.split('.').collect();
    let other = server.token(DEMO_BOT, FABRIKAM).await;
    let other_payload = other.split('.').nth(1).unwrap().to_owned();
    forged[1] = &other_payload;
    check(&server, &forged.join("."), case(Method::GET, &this, None, 401, "InvalidAuthenticationToken", "Access token validation failure"))
        .await;

    // The same app in another tenant: 403 on this tenant's call.
    check(&server, &other, case(Method::GET, &this, None, 403, "Forbidden", "belongs to tenant")).await;
    // An app without calling permissions: 403 everywhere.
    let unprivileged = server.token(UNPRIVILEGED_BOT, CONTOSO).await;
    check(&server, &unprivileged, case(Method::GET, &this, None, 403, "7504", "holds none of the calling permissions")).await;
    check(
        &server,
        &unprivileged,
        case(Method::POST, "/v1.0/communications/calls", Some(call_to_user(&bot.callback("u"), HEIDI)), 403, "7504", "calling permissions"),
    )
    .await;
    // Another app never sees the call: 404, exactly as for a call that does not exist.
    let legacy = server.token(LEGACY_BOT, CONTOSO).await;
    check(&server, &legacy, case(Method::GET, &this, None, 404, "8522", "Call not found")).await;
    check(&server, &legacy, case(Method::DELETE, &this, None, 404, "8522", "Call not found")).await;
    let (_, list) = server.graph(Method::GET, "/v1.0/communications/calls", &legacy, None).await;
    assert_eq!(list["value"], json!([]));
    // The owner still can.
    assert_eq!(server.graph(Method::GET, &this, &token, None).await.0, 200);
}

/// A wrong method is a 405 whose `Allow` header names the methods the resource takes (RFC 9110), on
/// the hand-routed Graph paths and on the router's fixed ones alike, always in Graph's envelope.
#[tokio::test]
async fn method_not_allowed_names_the_allowed_methods() {
    let mut bot = Bot::start().await;
    let server = Server::start(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let (_, call) = server.graph(Method::POST, "/v1.0/communications/calls", &token, Some(call_to_user(&bot.callback("m"), HEIDI))).await;
    let id = call["id"].as_str().unwrap().to_owned();
    bot.take(2).await;
    let trace = Method::from_bytes(b"TRACE").unwrap();
    let this = format!("/v1.0/communications/calls/{id}");
    let cases = [
        (trace.clone(), "/v1.0/communications/calls".to_owned(), "GET, POST"),
        (Method::PUT, this.clone(), "GET, DELETE"),
        (trace.clone(), format!("{this}/answer"), "POST"),
        (Method::GET, format!("/beta/communications/calls/{id}/microsoft.graph.transfer"), "POST"),
        (Method::POST, format!("{this}/participants"), "GET"),
        (trace.clone(), "/sim/v1/calls".to_owned(), "POST,GET,HEAD"),
        (Method::POST, "/healthz".to_owned(), "GET,HEAD"),
        (Method::GET, format!("/{CONTOSO}/oauth2/v2.0/token"), "POST"),
    ];
    for (method, path, allow) in cases {
        let resp = server
            .http
            .request(method.clone(), server.url(&path))
            .bearer_auth(&token)
            .header("X-Sim-Admin-Key", ADMIN_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405, "{method} {path}");
        assert_eq!(resp.headers().get("allow").and_then(|v| v.to_str().ok()), Some(allow), "{method} {path}");
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(body["error"]["code"], "MethodNotAllowed", "{method} {path}: {body}");
    }
}

/// Whole-number floats are integers, as JSON Schema says (and Graph takes them): `30.0` seconds is 30.
#[tokio::test]
async fn whole_number_floats_are_accepted_as_integers() {
    let mut bot = Bot::start().await;
    let server = Server::start(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let mut body = call_to_user(&bot.callback("f"), HEIDI);
    body["ringingTimeoutInSeconds"] = json!(30.0);
    let (status, call) = server.graph(Method::POST, "/v1.0/communications/calls", &token, Some(body)).await;
    assert_eq!(status, 201, "{call}");
    bot.take(2).await;
    let incoming = server.inbound(ALEX, DEMO_BOT).await;
    bot.next().await;
    let answer = json!({"mediaConfig": service_hosted(), "acceptedModalities": ["audio"], "participantCapacity": 2.0});
    let (status, resp) = server.graph(Method::POST, &format!("/v1.0/communications/calls/{incoming}/answer"), &token, Some(answer)).await;
    assert_eq!(status, 202, "{resp}");
    let ringing = server.inbound(HEIDI, DEMO_BOT).await;
    bot.next().await;
    let redirect = json!({"targets": [{"identity": {"user": {"id": ALEX}}}], "timeout": 20.0});
    let (status, resp) =
        server.graph(Method::POST, &format!("/v1.0/communications/calls/{ringing}/redirect"), &token, Some(redirect)).await;
    assert_eq!(status, 202, "{resp}");
}
