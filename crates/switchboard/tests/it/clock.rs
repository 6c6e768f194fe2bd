//! Virtual time (`serve --virtual-clock`, `/sim/v1/clock`): deadlines of seconds to an hour run in
//! milliseconds of real time. Time stands still until a test moves it, so nothing here sleeps for a
//! deadline; `expect_silence` only checks that nothing happens while time stands still.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::*;

/// A server on virtual time with Graph's default ring timeout (60 s).
async fn graph_timeouts(bot: &Bot) -> Server {
    virtual_server(bot, &["--ring-timeout-ms", "60000"]).await
}

async fn now(server: &Server) -> u64 {
    let (status, clock) = server.sim(Method::GET, "/clock", None).await;
    assert_eq!(status, 200, "{clock}");
    clock["nowMs"].as_u64().expect("nowMs")
}

/// Moves virtual time; checks the answer is exactly the new time.
async fn advance(server: &Server, ms: u64) -> Value {
    let before = now(server).await;
    let clock = server.advance(ms).await;
    assert_eq!(clock["virtual"], true);
    assert_eq!(clock["nowMs"].as_u64(), Some(before + ms), "{clock}");
    assert!(clock["now"].as_str().is_some_and(|s| s.ends_with('Z')), "{clock}");
    clock
}

async fn state_of(server: &Server, token: &str, id: &str) -> Value {
    let (status, call) = server.graph(Method::GET, &format!("/v1.0/communications/calls/{id}"), token, None).await;
    if status == 404 {
        return json!("gone");
    }
    call["state"].clone()
}

#[tokio::test]
async fn a_call_to_silent_sam_times_out_after_61_virtual_seconds() {
    let mut bot = Bot::start().await;
    let server = graph_timeouts(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let (status, call) =
        server.graph(Method::POST, "/v1.0/communications/calls", &token, Some(call_to_user(&bot.callback("sam"), SILENT_SAM))).await;
    assert_eq!(status, 201, "{call}");
    let id = call["id"].as_str().expect("id").to_owned();
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "establishing"));
    advance(&server, 59_000).await;
    assert_eq!(state_of(&server, &token, &id).await, "establishing", "one second before the ring timeout");
    bot.expect_silence(Duration::from_millis(200)).await;
    advance(&server, 2_000).await;
    assert_eq!(state_of(&server, &token, &id).await, "gone", "the timeout fired before the clock answered");
    assert_eq!(redact(bot.next().await.1, &id), terminated_note(408, 10057, "The callee did not answer before the ring timeout."));
}

#[tokio::test]
async fn sim_behaviours_wait_for_virtual_time_too() {
    let mut bot = Bot::start().await;
    let server = graph_timeouts(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let (_, call) = server.graph(Method::POST, "/v1.0/communications/calls", &token, Some(call_to_user(&bot.callback("h"), HEIDI))).await;
    let id = call["id"].as_str().expect("id").to_owned();
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "establishing"));
    // Heidi answers 200 ms after she starts ringing: not while time stands still.
    advance(&server, 199).await;
    assert_eq!(state_of(&server, &token, &id).await, "establishing");
    advance(&server, 1).await;
    assert_eq!(state_of(&server, &token, &id).await, "established");
    assert_eq!(redact(bot.next().await.1, &id), established_note());
}

#[tokio::test]
async fn the_answer_deadline_and_keep_alive_expiry_run_in_virtual_time() {
    let mut bot = Bot::start().await;
    let server = graph_timeouts(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;

    // An incoming call the bot never answers ends after Graph's 15 s.
    let unanswered = server.inbound(ALEX, DEMO_BOT).await;
    assert_eq!(bot.next().await.1["resourceData"]["state"], "incoming");
    advance(&server, 14_999).await;
    assert_eq!(state_of(&server, &token, &unanswered).await, "incoming");
    advance(&server, 1).await;
    assert_eq!(
        redact(bot.next().await.1, &unanswered),
        terminated_note(408, 1106, "The application did not answer the incoming call in time.")
    );

    // An answered call without keepAlive ends after 45 minutes; a keepAlive moves the deadline.
    let id = server.inbound(HEIDI, DEMO_BOT).await;
    assert_eq!(bot.next().await.1["resourceData"]["state"], "incoming");
    let answer = json!({"callbackUri": bot.callback("k"), "acceptedModalities": ["audio"], "mediaConfig": service_hosted()});
    let (status, body) = server.graph(Method::POST, &format!("/v1.0/communications/calls/{id}/answer"), &token, Some(answer)).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "establishing"));
    assert_eq!(redact(bot.next().await.1, &id), established_note());
    advance(&server, 30 * 60_000).await;
    let (status, _) = server.graph(Method::POST, &format!("/v1.0/communications/calls/{id}/keepAlive"), &token, None).await;
    assert_eq!(status, 200);
    advance(&server, 44 * 60_000).await;
    // Tokens go by the same clock: the one from 74 virtual minutes ago has expired.
    let (status, _) = server.graph(Method::GET, &format!("/v1.0/communications/calls/{id}"), &token, None).await;
    assert_eq!(status, 401);
    let token = server.token(DEMO_BOT, CONTOSO).await;
    assert_eq!(state_of(&server, &token, &id).await, "established", "the keepAlive moved the deadline");
    advance(&server, 60_000).await;
    assert_eq!(
        redact(bot.next().await.1, &id),
        terminated_note(408, 8537, "The call was ended because no keepAlive was received in time.")
    );
}

#[tokio::test]
async fn notification_retries_follow_virtual_time() {
    let mut bot = Bot::start().await;
    // The harness's first retry comes after 100 ms (±20 %).
    let server = graph_timeouts(&bot).await;
    bot.fail_next(&[503]);
    let id = server.inbound(ALEX, DEMO_BOT).await;
    server.wait_counter("switchboard_notifications_retried_total", 1).await;
    bot.expect_silence(Duration::from_millis(300)).await;
    advance(&server, 70).await;
    bot.expect_silence(Duration::from_millis(200)).await;
    advance(&server, 60).await;
    let (_, item) = bot.next().await;
    assert_eq!(item["resourceData"]["id"], id.as_str(), "the retry went out once virtual time reached it");
}

#[tokio::test]
async fn the_system_clock_cannot_be_moved_and_bad_bodies_are_named() {
    let bot = Bot::start().await;
    let server = Server::start(&bot).await;
    let (status, clock) = server.sim(Method::GET, "/clock", None).await;
    assert_eq!(status, 200);
    assert_eq!(clock["virtual"], false);
    let (status, err) = server.sim(Method::POST, "/clock", Some(json!({"advance_ms": 1000}))).await;
    assert_eq!((status, err["error"]["code"].as_str()), (409, Some("ClockNotVirtual")), "{err}");

    let server = graph_timeouts(&bot).await;
    for (body, names) in [
        (json!({}), "advance_ms: is required"),
        (json!({"advance_ms": -1}), "advance_ms: must be a whole number"),
        (json!({"advance_ms": 1.5}), "advance_ms: must be a whole number"),
        (json!({"advance_ms": "5"}), "advance_ms: must be a whole number"),
        (json!({"advance_ms": 400_000_000_000u64}), "advance_ms: must be a whole number"),
        (json!({"advance_ms": 5, "extra": 1}), "extra: unknown field"),
        (json!([1]), "expected a JSON object"),
    ] {
        let (status, err) = server.sim(Method::POST, "/clock", Some(body.clone())).await;
        let message = err["error"]["message"].as_str().unwrap_or_default().to_owned();
        assert_eq!(status, 400, "{body}: {err}");
        assert!(message.contains(names), "{body}: {message}");
    }
    let (status, _) = server.sim(Method::POST, "/clock", Some(json!({"advance_ms": 0}))).await;
    assert_eq!(status, 200);
}
