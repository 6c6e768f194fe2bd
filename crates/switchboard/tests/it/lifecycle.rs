//! Token → incoming call → answer → established → hang-up, with the exact notifications and a
//! validated notification JWT.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::*;

/// The incoming-call notification, exactly; random ids are checked for shape and then masked.
fn expected_incoming(caller: Value, target: Value) -> Value {
    json!({
        "@odata.type": "#microsoft.graph.commsNotification",
        "changeType": "created",
        "resourceUrl": "/communications/calls/{callId}",
        "resourceData": {
            "@odata.type": "#microsoft.graph.call",
            "@odata.id": "/communications/calls/{callId}",
            "id": "{callId}",
            "state": "incoming",
            "direction": "incoming",
            "callChainId": "{guid}",
            "myParticipantId": "{guid}",
            "tenantId": CONTOSO,
            "subject": null,
            "source": {"@odata.type": "#microsoft.graph.participantInfo", "identity": caller},
            "targets": [{"@odata.type": "#microsoft.graph.invitationParticipantInfo", "identity": target}],
            "requestedModalities": ["audio"],
            "mediaConfig": {"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"},
            "mediaState": {"@odata.type": "#microsoft.graph.callMediaState", "audio": "inactive"},
            "resultInfo": null,
            "callRoutes": [],
            "chatInfo": null,
            "meetingInfo": null,
            "callOptions": null,
            "incomingContext": null,
            "toneInfo": null,
            "transcription": null
        }
    })
}

fn mask_guids(mut item: Value) -> Value {
    for key in ["callChainId", "myParticipantId"] {
        let v = &mut item["resourceData"][key];
        let s = v.as_str().unwrap_or_default();
        assert!(uuid::Uuid::parse_str(s).is_ok(), "{key} is a GUID: {s}");
        *v = json!("{guid}");
    }
    item
}

pub fn heidi_identity() -> Value {
    json!({"@odata.type": "#microsoft.graph.identitySet", "user": {"@odata.type": "#microsoft.graph.identity", "id": HEIDI, "displayName": "Heidi Steen", "tenantId": CONTOSO}})
}

pub fn answer_body(callback: &str) -> Value {
    json!({"callbackUri": callback, "mediaConfig": service_hosted(), "acceptedModalities": ["audio"]})
}

#[tokio::test]
async fn incoming_call_answered_then_hung_up_by_the_bot() {
    let mut bot = Bot::start().await;
    let server = Server::start(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;

    let id = server.inbound(HEIDI, DEMO_BOT).await;
    let (post, item) = bot.next().await;
    assert_eq!(post.path, "/api/calls", "the first notification goes to the calling webhook");
    let app = json!({"@odata.type": "#microsoft.graph.identitySet", "application": {"@odata.type": "#microsoft.graph.identity", "id": DEMO_BOT, "displayName": "Demo Bot"}});
    assert_eq!(mask_guids(redact(item, &id)), expected_incoming(heidi_identity(), app));

    // The notification's JWT validates the way a bot validates Graph's.
    let auth = post.authorization.expect("Authorization header");
    let jwt = auth.strip_prefix("Bearer ").expect("a bearer token");
    let config: Value =
        server.http.get(server.url("/notifications/v1/.well-known/openid-configuration")).send().await.unwrap().json().await.unwrap();
    assert_eq!(config["issuer"], "https://api.botframework.com");
    let jwks: Value = server.http.get(config["jwks_uri"].as_str().unwrap()).send().await.unwrap().json().await.unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = switchboard::identity::validate_notification_token(&jwks, "https://api.botframework.com", DEMO_BOT, jwt, now)
        .expect("valid notification JWT");
    assert_eq!((claims.aud.as_str(), claims.tid.as_str()), (DEMO_BOT, CONTOSO));
    assert!(
        switchboard::identity::validate_notification_token(&jwks, "https://api.botframework.com", UNPRIVILEGED_BOT, jwt, now).is_err(),
        "audience is checked"
    );
    let mut tampered = jwt.to_owned();
    tampered.insert(jwt.find('.').unwrap() + 5, 'x');
    assert!(
        switchboard::identity::validate_notification_token(&jwks, "https://api.botframework.com", DEMO_BOT, &tampered, now).is_err(),
        "signature is checked"
    );

    let (status, body) = server.graph(Method::GET, &format!("/v1.0/communications/calls/{id}"), &token, None).await;
    assert_eq!((status, body["state"].as_str()), (200, Some("incoming")));

    let (status, _) = server
        .graph(Method::POST, &format!("/v1.0/communications/calls/{id}/answer"), &token, Some(answer_body(&bot.callback("c1"))))
        .await;
    assert_eq!(status, 202);
    let (post, item) = bot.next().await;
    assert_eq!(post.path, "/callback/c1", "after answer, notifications go to the answer's callbackUri");
    assert_eq!(redact(item, &id), state_note("updated", "establishing"));
    assert_eq!(redact(bot.next().await.1, &id), established_note());

    let (status, body) = server.graph(Method::GET, &format!("/v1.0/communications/calls/{id}"), &token, None).await;
    assert_eq!(status, 200);
    assert_eq!(body["state"], "established");
    assert_eq!(body["callbackUri"], bot.callback("c1"));
    assert_eq!(body["@odata.context"], format!("{}/v1.0/$metadata#communications/calls/$entity", server.base));

    let (status, _) = server.graph(Method::DELETE, &format!("/v1.0/communications/calls/{id}"), &token, None).await;
    assert_eq!(status, 204);
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "terminating"));
    assert_eq!(redact(bot.next().await.1, &id), terminated_note(200, 7000, "The call was ended by the application."));

    let (status, body) = server.graph(Method::GET, &format!("/v1.0/communications/calls/{id}"), &token, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("8522")));
    bot.expect_silence(std::time::Duration::from_millis(300)).await;
}

#[tokio::test]
async fn incoming_call_on_an_application_instance_number_and_remote_hang_up() {
    let mut bot = Bot::start().await;
    let server = Server::start(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let id = server.inbound("+12345678901", RECEPTION_PHONE).await;
    let item = bot.next().await.1;
    let instance = json!({"@odata.type": "#microsoft.graph.communicationsIdentitySet", "applicationInstance": {"@odata.type": "#microsoft.graph.identity", "id": RECEPTION, "displayName": "Contoso Reception", "tenantId": CONTOSO}});
    let phone = json!({"@odata.type": "#microsoft.graph.communicationsIdentitySet", "phone": {"@odata.type": "#microsoft.graph.identity", "id": "+12345678901"}});
    assert_eq!(mask_guids(redact(item, &id)), expected_incoming(phone, instance));
    // Without a callbackUri in answer, notifications keep going to the webhook.
    let body = json!({"mediaConfig": service_hosted(), "acceptedModalities": ["audio"]});
    assert_eq!(server.graph(Method::POST, &format!("/beta/communications/calls/{id}/answer"), &token, Some(body)).await.0, 202);
    let (post, _) = bot.next().await;
    assert_eq!(post.path, "/api/calls");
    assert_eq!(redact(bot.next().await.1, &id), established_note());
    assert_eq!(server.sim(Method::POST, &format!("/calls/{id}/hangup"), None).await.0, 204);
    assert_eq!(redact(bot.next().await.1, &id), terminated_note(200, 540000, "The call was ended by the PSTN user."));
}

#[tokio::test]
async fn reject_redirect_and_unanswered_incoming_calls() {
    let mut bot = Bot::start().await;
    let server = Server::start(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;

    let id = server.inbound(HEIDI, DEMO_BOT).await;
    bot.next().await;
    let (status, _) =
        server.graph(Method::POST, &format!("/v1.0/communications/calls/{id}/reject"), &token, Some(json!({"reason": "busy"}))).await;
    assert_eq!(status, 202);
    assert_eq!(redact(bot.next().await.1, &id), terminated_note(486, 0, "The application rejected the call as busy."));

    // Redirect: the caller ends up connected to the redirect target, without the bot.
    let id = server.inbound(HEIDI, DEMO_BOT).await;
    bot.next().await;
    let body = json!({"targets": [{"identity": {"user": {"id": ALEX}}}], "callbackUri": bot.callback("r")});
    assert_eq!(
        server.graph(Method::POST, &format!("/v1.0/communications/calls/{id}/microsoft.graph.redirect"), &token, Some(body)).await.0,
        202
    );
    assert_eq!(redact(bot.next().await.1, &id), terminated_note(200, 0, "The call was redirected by the application."));
    // Alex answers after 200 ms; give a loaded machine up to 5 s.
    let mut world = Value::Null;
    for _ in 0..50 {
        world = server.sim(Method::GET, "/world", None).await.1;
        if world["legs"].as_array().is_some_and(|l| l.len() == 2 && l.iter().all(|l| l["state"] == "connected")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let legs = world["legs"].as_array().unwrap();
    let heidi = legs.iter().find(|l| l["party"]["id"] == HEIDI).expect("Heidi's leg");
    let alex = legs.iter().find(|l| l["party"]["id"] == ALEX).expect("Alex's leg");
    assert_eq!((heidi["state"].as_str(), alex["state"].as_str()), (Some("connected"), Some("connected")));
    assert_eq!(heidi["peer"], json!({"kind": "leg", "legId": alex["id"]}));

    // A call that is already answered cannot be rejected.
    let id = server.inbound(ALEX, DEMO_BOT).await;
    bot.next().await;
    assert_eq!(
        server
            .graph(Method::POST, &format!("/v1.0/communications/calls/{id}/answer"), &token, Some(answer_body(&bot.callback("x"))))
            .await
            .0,
        202
    );
    bot.take(2).await;
    let (status, body) = server.graph(Method::POST, &format!("/v1.0/communications/calls/{id}/reject"), &token, Some(json!({}))).await;
    assert_eq!(status, 409);
    assert_eq!(body["error"]["code"], "InvalidCallState");
    assert_eq!(body["error"]["message"], "Cannot reject a call in state 'established'; reject needs state 'incoming'.");
}

#[tokio::test]
async fn keep_alive_participants_and_the_deprecated_paths() {
    let mut bot = Bot::start().await;
    let server = Server::start(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let (status, call) = server.graph(Method::POST, "/beta/app/calls", &token, Some(call_to_user(&bot.callback("k"), HEIDI))).await;
    assert_eq!(status, 201, "{call}");
    let id = call["id"].as_str().unwrap().to_owned();
    bot.take(2).await;
    for path in [
        format!("/v1.0/communications/calls/{id}/keepAlive"),
        format!("/beta/app/calls/{id}/KEEPALIVE"),
        format!("/beta/applications/{DEMO_BOT}/calls/{id}/microsoft.graph.keepAlive"),
    ] {
        assert_eq!(server.graph(Method::POST, &path, &token, None).await.0, 200, "{path}");
    }
    let (status, list) = server.graph(Method::GET, &format!("/v1.0/communications/calls/{id}/participants"), &token, None).await;
    assert_eq!(status, 200);
    let parts = list["value"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0]["id"], call["myParticipantId"]);
    assert_eq!(parts[1]["info"]["identity"], heidi_identity());
    let pid = parts[1]["id"].as_str().unwrap();
    let (status, p) = server.graph(Method::GET, &format!("/v1.0/communications/calls/{id}/participants/{pid}"), &token, None).await;
    assert_eq!((status, &p["info"]), (200, &parts[1]["info"]));
    let (status, _) = server.graph(Method::GET, &format!("/v1.0/communications/calls/{id}/participants/nope"), &token, None).await;
    assert_eq!(status, 404);
    let (status, ops) = server.graph(Method::GET, &format!("/v1.0/communications/calls/{id}/operations"), &token, None).await;
    assert_eq!((status, &ops["value"]), (200, &json!([])));
    let (status, list) = server.graph(Method::GET, "/v1.0/communications/calls", &token, None).await;
    assert_eq!((status, list["value"].as_array().map(Vec::len)), (200, Some(1)));
    assert_eq!(server.graph(Method::DELETE, &format!("/beta/applications/{DEMO_BOT}/calls/{id}"), &token, None).await.0, 204);
}
