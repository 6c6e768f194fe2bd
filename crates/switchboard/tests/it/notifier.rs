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
    // One id per item, in order.
    let ids: Vec<i64> = post.notification_ids.as_deref().unwrap_or_default().split(',').map(|i| i.parse().unwrap()).collect();
    assert!(ids.len() == 2 && ids[0] < ids[1], "{:?}", post.notification_ids);
    assert_eq!(redact(first, &id), state_note("updated", "terminating"));
    assert_eq!(redact(second, &id)["changeType"], "deleted");
}

#[tokio::test]
async fn undeliverable_notifications_are_kept_visible_and_can_be_retried() {
    let mut bot = Bot::start().await;
    let server =
        Server::start_with(Options { demo_webhook: Some(bot.webhook()), extra: vec!["--retry-max-attempts".into(), "2".into()] }).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    // An incoming call whose `created` is answered 500 twice, and so given up on. The call's later
    // notifications go to another URL (its callback), so they never share a POST with it: whenever
    // the bot answers, the two 500s are spent on `created` alone.
    bot.fail_next(&[500, 500]);
    let id = server.inbound(ALEX, DEMO_BOT).await;
    // Answer once the first attempt failed: `establishing` and `established` are (usually) queued
    // behind `created` while it is retried, and still arrive after it is given up on.
    server.wait_metric("switchboard_notifications_retried_total 1").await;
    let (status, _) = server
        .graph(
            Method::POST,
            &format!("/v1.0/communications/calls/{id}/answer"),
            &token,
            Some(crate::lifecycle::answer_body(&bot.callback("d"))),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "establishing"));
    assert_eq!(redact(bot.next().await.1, &id), established_note());
    let paths: Vec<&str> = bot.posts.iter().map(|p| p.path.as_str()).collect();
    assert!(paths.iter().all(|p| *p == "/callback/d"), "`created` must not have been delivered: {paths:?}");
    server.wait_metric("switchboard_notifications_failed_total 1").await;
    let (status, failed) = server.sim(Method::GET, "/outbox?status=failed", None).await;
    assert_eq!(status, 200);
    let rows = failed["value"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{failed}");
    assert_eq!(rows[0]["attempts"], 2);
    assert_eq!(rows[0]["lastError"], "the callback answered 500 Internal Server Error");
    let created = rows[0]["notification"].clone();
    assert_eq!(created["changeType"], "created", "{created}");
    assert_eq!(created["resourceData"]["id"], id.as_str(), "{created}");
    assert_eq!(created["resourceData"]["state"], "incoming", "{created}");
    let (status, body) = server.sim(Method::POST, "/outbox/retry", None).await;
    assert_eq!((status, body), (200, json!({"requeued": 1})));
    // The retry delivers exactly the notification that had failed, to the bot's calling webhook, under
    // the id it had from the start (the outbox's seq), so that a bot can tell a resend.
    let (post, item) = bot.next().await;
    assert_eq!(post.path, "/api/calls");
    assert_eq!(item, created);
    assert_eq!(post.notification_ids, Some(rows[0]["seq"].to_string()));
    let (_, failed) = server.sim(Method::GET, "/outbox?status=failed", None).await;
    assert_eq!(failed["value"], json!([]));
    bot.expect_silence(Duration::from_millis(300)).await;
}
