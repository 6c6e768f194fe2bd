//! The 2018 beta dialect: `/beta/app/calls` and `/beta/applications/{appId}/calls`, the 2018 body, and
//! for apps configured with `notification_format = "beta-2018"` (the demo's Legacy Bot) progress on a
//! `commsOperation`, with the 2018 envelope.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::*;

const LEGACY_PHONE: &str = "+14255550107";
const CONTEXT: &str = "d45324c1-fcb5-430a-902c-f20af696537c";

async fn legacy_server(bot: &Bot) -> Server {
    Server::start_with(Options { demo_webhook: None, extra: vec!["--legacy-webhook".into(), bot.webhook()] }).await
}

/// An incoming call to the Legacy Bot's number, answered; returns its id.
async fn answered(server: &Server, bot: &mut Bot, token: &str) -> String {
    let id = server.inbound(HEIDI, LEGACY_PHONE).await;
    let (post, created) = bot.next().await;
    // The 2018 envelope: no @odata.type, `resource`, `@odata.id`, `@odata.etag`.
    assert_eq!(post.body.get("@odata.type"), None, "{}", post.body);
    assert_eq!(created["resource"], format!("/app/calls/{id}"));
    assert_eq!(created["resourceData"]["@odata.id"], format!("/app/calls/{id}"));
    assert_eq!(created["resourceData"]["@odata.etag"], "W/\"1\"");
    assert_eq!(created["changeType"], "created");
    let body = json!({"callbackUri": bot.callback(&id), "mediaConfig": service_hosted(), "acceptedModalities": ["audio"]});
    assert_eq!(server.graph(Method::POST, &format!("/beta/app/calls/{id}/answer"), token, Some(body)).await.0, 202);
    let states: Vec<Value> = bot.take(2).await.into_iter().map(|i| i["resourceData"]["state"].clone()).collect();
    assert_eq!(states, [json!("establishing"), json!("established")]);
    id
}

/// The operation id at the end of a 2018 operation notification's `resource`.
fn op_id(item: &Value) -> String {
    item["resource"].as_str().and_then(|r| r.rsplit('/').next()).unwrap().to_owned()
}

fn op_note(change: &str, id: &str, op: &str, etag: u64, result: Value, status: &str) -> Value {
    let path = format!("/app/calls/{id}/operations/{op}");
    json!({
        "changeType": change,
        "resource": path,
        "resourceData": {
            "@odata.type": "#microsoft.graph.commsOperation",
            "@odata.id": path,
            "@odata.etag": format!("W/\"{etag}\""),
            "clientContext": CONTEXT,
            "resultInfo": result,
            "status": status
        }
    })
}

#[tokio::test]
async fn example_1_transfer_directly_reports_on_an_operation() {
    let mut bot = Bot::start().await;
    let server = legacy_server(&bot).await;
    let token = server.token(LEGACY_BOT, CONTOSO).await;
    let id = answered(&server, &mut bot, &token).await;
    // The 2018 example's body, with the demo directory's user (Alex) as target.
    let body = json!({
        "transferTarget": {"endpointType": "default", "identity": {"user": {"id": ALEX, "tenantId": CONTOSO, "displayName": "Alex Wilber"}}, "languageId": "languageId-value", "region": "region-value"},
        "clientContext": CONTEXT
    });
    let resp =
        server.http.post(server.url(&format!("/beta/app/calls/{id}/transfer"))).bearer_auth(&token).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    let location = resp.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let op = location.rsplit('/').next().unwrap_or_default().to_owned();
    assert_eq!(location, format!("{}/beta/app/calls/{id}/operations/{op}", server.base));

    assert_eq!(bot.next().await.1, op_note("updated", &id, &op, 4, json!({"code": "200", "subCode": "transferring"}), "running"));
    assert_eq!(bot.next().await.1, op_note("deleted", &id, &op, 5, json!({"code": "200", "subCode": "transferAccepted"}), "completed"));
    assert_eq!(
        bot.next().await.1,
        json!({
            "changeType": "deleted",
            "resource": format!("/app/calls/{id}"),
            "resourceData": {"@odata.type": "#microsoft.graph.call", "@odata.id": format!("/app/calls/{id}"), "@odata.etag": "W/\"6\"", "state": "terminated", "terminationReason": "AppTransferred"}
        })
    );
    bot.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_failed_2018_transfer_fails_its_operation_which_get_returns() {
    let mut bot = Bot::start().await;
    let server = legacy_server(&bot).await;
    let token = server.token(LEGACY_BOT, CONTOSO).await;
    let id = answered(&server, &mut bot, &token).await;
    let body = json!({"target": {"user": {"id": BUSY_BOB}}, "clientContext": CONTEXT});
    let path = format!("/beta/applications/{LEGACY_BOT}/calls/{id}/transfer");
    assert_eq!(server.graph(Method::POST, &path, &token, Some(body)).await.0, 202);
    let (_, running) = bot.next().await;
    let op = op_id(&running);
    let failed = json!({"code": "500", "subCode": "7000", "message": "The blind transfer failed: the transfer target is busy. DiagCode: 500#7000.@"});
    assert_eq!(bot.next().await.1, op_note("deleted", &id, &op, 5, failed.clone(), "failed"));
    let (status, got) = server.graph(Method::GET, &format!("/beta/app/calls/{id}/operations/{op}"), &token, None).await;
    assert_eq!(status, 200);
    assert_eq!(got["status"], "failed");
    assert_eq!(got["clientContext"], CONTEXT);
    assert_eq!(got["resultInfo"], failed);
    let (_, list) = server.graph(Method::GET, &format!("/beta/app/calls/{id}/operations"), &token, None).await;
    assert_eq!(list["value"].as_array().map(Vec::len), Some(1));
    // The call is still up, and a second transfer works.
    let body = json!({"transferTarget": {"identity": {"user": {"id": ALEX}}}, "clientContext": CONTEXT});
    assert_eq!(server.graph(Method::POST, &format!("/beta/app/calls/{id}/transfer"), &token, Some(body)).await.0, 202);
    let kinds: Vec<Value> = bot.take(3).await.into_iter().map(|i| i["resourceData"]["status"].clone()).collect();
    assert_eq!(kinds, [json!("running"), json!("completed"), Value::Null]);
}

#[tokio::test]
async fn a_running_operation_is_readable_and_modern_apps_keep_modern_notifications_on_old_paths() {
    let mut bot = Bot::start().await;
    // The Demo Bot has its own endpoint: nothing of the Legacy Bot's operation reaches it. And the
    // operation's deadline (the ring timeout) is far off, so that it is still running when read.
    let mut demo = Bot::start().await;
    let mut extra = vec!["--legacy-webhook".into(), bot.webhook()];
    extra.extend(long_ring_timeout());
    let server = Server::start_with(Options { demo_webhook: Some(demo.webhook()), extra }).await;
    // A running operation, for the Legacy Bot.
    let legacy = server.token(LEGACY_BOT, CONTOSO).await;
    let id = answered(&server, &mut bot, &legacy).await;
    let body = json!({"transferTarget": {"identity": {"user": {"id": SILENT_SAM}}}, "clientContext": CONTEXT});
    assert_eq!(server.graph(Method::POST, &format!("/beta/app/calls/{id}/transfer"), &legacy, Some(body)).await.0, 202);
    let op = op_id(&bot.next().await.1);
    let (status, got) = server.graph(Method::GET, &format!("/beta/app/calls/{id}/operations/{op}"), &legacy, None).await;
    assert_eq!((status, got["status"].as_str(), got["clientContext"].as_str()), (200, Some("running"), Some(CONTEXT)));

    // The Demo Bot transfers through the 2018 path and still gets today's notifications.
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let id = server.inbound(ALEX, DEMO_BOT).await;
    demo.next().await;
    let body = json!({"callbackUri": demo.callback("m"), "mediaConfig": service_hosted(), "acceptedModalities": ["audio"]});
    assert_eq!(server.graph(Method::POST, &format!("/beta/app/calls/{id}/answer"), &token, Some(body)).await.0, 202);
    demo.take(2).await;
    let body = json!({"transferTarget": {"identity": {"user": {"id": HEIDI}}}, "clientContext": CONTEXT});
    assert_eq!(server.graph(Method::POST, &format!("/beta/applications/{DEMO_BOT}/calls/{id}/transfer"), &token, Some(body)).await.0, 202);
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (post, item) = demo.next().await;
        assert_eq!(item["resourceUrl"], format!("/communications/calls/{id}"), "{item}");
        assert_eq!(post.body["@odata.type"], "#microsoft.graph.commsNotifications");
        seen.push(item["resourceData"]["state"].clone());
    }
    assert_eq!(seen, [json!("transferring"), json!("transferAccepted"), json!("transferAccepted"), json!("terminated")]);
    demo.expect_silence(Duration::from_millis(300)).await;
    bot.expect_silence(Duration::from_millis(100)).await;
}

/// A 2018 bot waits on its transfer's operation: when the call ends mid-transfer (the transferee hangs
/// up while the target rings), the operation ends `failed` first, then the call is `deleted`.
#[tokio::test]
async fn a_call_that_ends_mid_transfer_fails_its_operation_first() {
    let mut bot = Bot::start().await;
    let server = Server::start_with(Options {
        demo_webhook: None,
        extra: ["--legacy-webhook".into(), bot.webhook()].into_iter().chain(long_ring_timeout()).collect(),
    })
    .await;
    let token = server.token(LEGACY_BOT, CONTOSO).await;
    let id = answered(&server, &mut bot, &token).await;
    let body = json!({"transferTarget": {"identity": {"user": {"id": SILENT_SAM}}}, "clientContext": CONTEXT});
    assert_eq!(server.graph(Method::POST, &format!("/beta/app/calls/{id}/transfer"), &token, Some(body)).await.0, 202);
    let op = op_id(&bot.next().await.1);
    assert_eq!(server.sim(Method::POST, &format!("/calls/{id}/hangup"), None).await.0, 204);
    let ended = json!({"code": "200", "subCode": "4521", "message": "The other participant ended the call."});
    assert_eq!(bot.next().await.1, op_note("deleted", &id, &op, 5, ended.clone(), "failed"));
    let (_, call) = bot.next().await;
    assert_eq!((call["changeType"].as_str(), call["resource"].as_str()), (Some("deleted"), Some(format!("/app/calls/{id}").as_str())));
    assert_eq!(call["resourceData"]["resultInfo"], ended);
    bot.expect_silence(Duration::from_millis(300)).await;
}
