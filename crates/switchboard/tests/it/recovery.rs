//! Durability: after `kill -9` and a restart, live calls and owed notifications carry on.

use std::time::Duration;

use reqwest::Method;

use crate::harness::*;

#[tokio::test]
async fn kill_9_loses_no_call_and_no_notification() {
    let mut bot = Bot::start().await;
    let mut server = Server::start(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    // An established call.
    let (_, call) = server.graph(Method::POST, "/v1.0/communications/calls", &token, Some(call_to_user(&bot.callback("a"), HEIDI))).await;
    let established = call["id"].as_str().unwrap().to_owned();
    bot.take(2).await;
    // Its deliveries recorded, so that the failures below are spent on the incoming call alone.
    server.settled().await;
    // An incoming call whose notifications cannot be delivered yet: the bot is failing.
    bot.fail_next(&[503; 50]);
    let incoming = server.inbound(ALEX, DEMO_BOT).await;
    // Killed once its `created` is owed and a delivery of it has failed.
    server.wait_counter("switchboard_notifications_retried_total", 1).await;
    server.kill9();
    bot.clear_failures();
    server.restart().await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    for id in [&established, &incoming] {
        let (status, body) = server.graph(Method::GET, &format!("/v1.0/communications/calls/{id}"), &token, None).await;
        assert_eq!(status, 200, "call {id} survived: {body}");
    }
    // The owed incoming notification arrives after the restart.
    let (post, item) = bot.next_within(Duration::from_secs(30)).await.expect("the owed notification");
    assert_eq!(post.path, "/api/calls");
    assert_eq!(item["changeType"], "created");
    assert_eq!(item["resourceData"]["id"], incoming.as_str());
    // And the recovered calls carry on.
    assert_eq!(
        server
            .graph(
                Method::POST,
                &format!("/v1.0/communications/calls/{incoming}/answer"),
                &token,
                Some(crate::lifecycle::answer_body(&bot.callback("b")))
            )
            .await
            .0,
        202
    );
    assert_eq!(redact(bot.next().await.1, &incoming), state_note("updated", "establishing"));
    assert_eq!(redact(bot.next().await.1, &incoming), established_note());
    assert_eq!(server.graph(Method::DELETE, &format!("/v1.0/communications/calls/{established}"), &token, None).await.0, 204);
    assert_eq!(redact(bot.next().await.1, &established), state_note("updated", "terminating"));
    assert_eq!(redact(bot.next().await.1, &established)["resourceData"]["state"], "terminated");
    let (_, world) = server.sim(Method::GET, "/world", None).await;
    assert_eq!(world["legs"].as_array().map(Vec::len), Some(1), "{world}");
}

#[tokio::test]
async fn a_ringing_call_keeps_ringing_across_a_restart() {
    let mut bot = Bot::start().await;
    // The ring timeout survives the restart: kill, start, recovery and Alex's answer must all fit in it.
    let mut server = Server::start_with(Options { demo_webhook: Some(bot.webhook()), extra: long_ring_timeout() }).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    // Before the restart Alex would answer only after 10 s, so the call is still ringing at the kill
    // (run-time overrides are not kept across a restart).
    let slow = serde_json::json!({"kind": "answer", "after_ms": 10_000});
    assert_eq!(server.sim(Method::PUT, &format!("/parties/{ALEX}/behaviour"), Some(slow)).await.0, 200);
    let (_, call) = server.graph(Method::POST, "/v1.0/communications/calls", &token, Some(call_to_user(&bot.callback("r"), ALEX))).await;
    let id = call["id"].as_str().unwrap().to_owned();
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "establishing"));
    server.settled().await;
    server.restart().await;
    // Alex's directory behaviour (answer after 200 ms) applies again after the restart.
    assert_eq!(redact(bot.next().await.1, &id), established_note());
}

#[tokio::test]
async fn graceful_shutdown_exits_cleanly() {
    let bot = Bot::start().await;
    let mut server = Server::start(&bot).await;
    assert!(server.terminate(), "SIGTERM ends the process with success");
}

/// Invariant 1, with no slack: each command's 2xx is followed at once by `kill -9`, while the bot refuses
/// every delivery, so nothing has settled. What the 2xx promised must be there after the restart, and
/// every notification it owed must arrive, in order, once the bot takes them.
#[tokio::test]
async fn every_2xx_is_durable_though_the_server_dies_right_after_it() {
    let mut bot = Bot::start().await;
    let mut server = patient_server(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    bot.fail_next(&[503; 1000]);
    let state = |server: &Server, token: String, id: String| {
        let http = server.http.clone();
        let url = server.url(&format!("/v1.0/communications/calls/{id}"));
        async move {
            let resp = http.get(url).bearer_auth(token).send().await.unwrap();
            let status = resp.status().as_u16();
            let body: serde_json::Value = resp.json().await.unwrap();
            (status, body["state"].as_str().unwrap_or_default().to_owned())
        }
    };

    // 201 for a new call, then the kill.
    let (status, call) =
        server.graph(Method::POST, "/v1.0/communications/calls", &token, Some(call_to_user(&bot.callback("d"), HEIDI))).await;
    assert_eq!(status, 201, "{call}");
    server.kill9();
    let id = call["id"].as_str().unwrap().to_owned();
    server.restart().await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    assert_eq!(state(&server, token.clone(), id.clone()).await.0, 200, "the created call survived");
    // Heidi rings again after the restart and answers.
    for _ in 0..100 {
        if state(&server, token.clone(), id.clone()).await.1 == "established" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 202 for a transfer (to Silent Sam, who rings on), then the kill.
    let body = serde_json::json!({"transferTarget": {"identity": {"user": {"id": SILENT_SAM}}}});
    let (status, _) = server.graph(Method::POST, &format!("/v1.0/communications/calls/{id}/transfer"), &token, Some(body)).await;
    assert_eq!(status, 202);
    server.kill9();
    server.restart().await;
    assert_eq!(state(&server, token.clone(), id.clone()).await, (200, "transferring".to_owned()), "the transfer survived");

    // 204 for a hang-up, then the kill.
    assert_eq!(server.graph(Method::DELETE, &format!("/v1.0/communications/calls/{id}"), &token, None).await.0, 204);
    server.kill9();
    server.restart().await;
    assert_eq!(state(&server, token.clone(), id.clone()).await.0, 404, "the hang-up survived");

    // Everything owed arrives, once and in order, when the bot takes it.
    bot.clear_failures();
    let mut got = Vec::new();
    for _ in 0..5 {
        let (_, item) = bot.next_within(Duration::from_secs(30)).await.expect("an owed notification");
        got.push(redact(item, &id));
    }
    assert_eq!(
        got,
        [
            state_note("updated", "establishing"),
            established_note(),
            state_note("updated", "transferring"),
            state_note("updated", "terminating"),
            terminated_note(200, 7000, "The call was ended by the application.")
        ]
    );
    bot.expect_silence(Duration::from_millis(300)).await;
}
