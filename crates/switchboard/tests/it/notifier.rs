//! The notifier: at least once, in order, retried with backoff, batched, and kept when undeliverable.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn failed_deliveries_are_retried_in_order() {
    let mut bot = Bot::start().await;
    let server = Server::start(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    // The bot answers 500, then 503, then takes everything.
    bot.fail_next(&[500, 503]);
    let (_, call) = server.graph(Method::POST, "/v1.0/communications/calls", &token, Some(call_to_user(&bot.callback("r"), HEIDI))).await;
    let id = call["id"].as_str().unwrap().to_owned();
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "establishing"));
    assert_eq!(redact(bot.next().await.1, &id), established_note());
    let metrics = server.wait_metric("switchboard_notifications_delivered_total 2").await;
    let retried: u64 = metrics
        .lines()
        .find(|l| l.starts_with("switchboard_notifications_retried_total "))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(retried >= 2, "{metrics}");
    assert!(metrics.contains("switchboard_calls{state=\"established\"} 1"), "{metrics}");
}

#[tokio::test]
async fn notifications_queued_for_one_callback_travel_in_one_post() {
    let mut bot = Bot::start().await;
    let server = Server::start(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let (_, call) = server.graph(Method::POST, "/v1.0/communications/calls", &token, Some(call_to_user(&bot.callback("b"), HEIDI))).await;
    let id = call["id"].as_str().unwrap().to_owned();
    bot.take(2).await;
    // Hold deliveries back (the bot fails), then hang up: terminating and terminated queue together.
    bot.fail_next(&[503]);
    assert_eq!(server.graph(Method::DELETE, &format!("/v1.0/communications/calls/{id}"), &token, None).await.0, 204);
    let (post, first) = bot.next().await;
    let (post2, second) = bot.next().await;
    assert_eq!(post.body, post2.body, "both came in one POST");
    assert_eq!(post.body["value"].as_array().map(Vec::len), Some(2));
    assert_eq!(redact(first, &id), state_note("updated", "terminating"));
    assert_eq!(redact(second, &id)["changeType"], "deleted");
}

#[tokio::test]
async fn undeliverable_notifications_are_kept_visible_and_can_be_retried() {
    let mut bot = Bot::start().await;
    let server =
        Server::start_with(Options { demo_webhook: Some(bot.webhook()), extra: vec!["--retry-max-attempts".into(), "2".into()] }).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    bot.fail_next(&[500, 500]);
    let (_, call) = server.graph(Method::POST, "/v1.0/communications/calls", &token, Some(call_to_user(&bot.callback("d"), HEIDI))).await;
    let id = call["id"].as_str().unwrap().to_owned();
    // The establishing notification is given up on after two attempts; established still arrives.
    assert_eq!(redact(bot.next().await.1, &id), established_note());
    let (status, failed) = server.sim(Method::GET, "/outbox?status=failed", None).await;
    assert_eq!(status, 200);
    let rows = failed["value"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{failed}");
    assert_eq!(rows[0]["attempts"], 2);
    assert_eq!(rows[0]["lastError"], "the callback answered 500 Internal Server Error");
    assert_eq!(redact(rows[0]["notification"].clone(), &id), state_note("updated", "establishing"));
    server.wait_metric("switchboard_notifications_failed_total 1").await;
    let (status, body) = server.sim(Method::POST, "/outbox/retry", None).await;
    assert_eq!((status, body), (200, json!({"requeued": 1})));
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "establishing"));
    let (_, failed) = server.sim(Method::GET, "/outbox?status=failed", None).await;
    assert_eq!(failed["value"], json!([]));
    bot.expect_silence(Duration::from_millis(300)).await;
}
