//! The sim control API: admin key, inbound calls, behaviours, the world.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::*;

#[tokio::test]
async fn the_sim_api_needs_the_admin_key_and_validates_its_input() {
    let bot = Bot::start().await;
    let server = Server::start(&bot).await;
    let resp = server.http.get(server.url("/sim/v1/world")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = server.http.get(server.url("/sim/v1/world")).header("X-Sim-Admin-Key", "wrong").send().await.unwrap();
    assert_eq!(resp.status(), 403);
    // A call whose id a later request asks for again.
    let (status, _) = server.sim(Method::POST, "/calls", Some(json!({"from": ALEX, "to": DEMO_BOT, "callId": "taken-1"}))).await;
    assert_eq!(status, 201);
    let cases = vec![
        (Method::POST, "/calls".to_owned(), json!({"from": HEIDI}), 400, "to: is required"),
        (Method::POST, "/calls".to_owned(), json!({"from": "nobody", "to": DEMO_BOT}), 400, "'nobody' is neither a user id"),
        (Method::POST, "/calls".to_owned(), json!({"from": HEIDI, "to": "nowhere"}), 400, "'nowhere' is not an application id"),
        (
            Method::POST,
            "/calls".to_owned(),
            json!({"from": "+12345678901", "to": DEMO_BOT}),
            400,
            "a PSTN caller can only reach an application instance",
        ),
        (Method::POST, "/calls".to_owned(), json!({"from": FIONA, "to": LEGACY_BOT}), 403, "not consented in the caller's tenant"),
        (Method::POST, "/calls".to_owned(), json!({"from": HEIDI, "to": DEMO_BOT, "callId": ""}), 400, "callId: must be 1 to 64"),
        (Method::POST, "/calls".to_owned(), json!({"from": HEIDI, "to": DEMO_BOT, "callId": "a/b"}), 400, "callId: must be 1 to 64"),
        (
            Method::POST,
            "/calls".to_owned(),
            json!({"from": HEIDI, "to": DEMO_BOT, "callId": "x".repeat(65)}),
            400,
            "callId: must be 1 to 64",
        ),
        (Method::POST, "/calls".to_owned(), json!({"from": HEIDI, "to": DEMO_BOT, "callId": 7}), 400, "callId"),
        (
            Method::POST,
            "/calls".to_owned(),
            json!({"from": HEIDI, "to": DEMO_BOT, "callId": "taken-1"}),
            409,
            "a live call already has id 'taken-1'",
        ),
        (Method::PUT, format!("/parties/{HEIDI}/behaviour"), json!({"kind": "sing"}), 400, "Invalid behaviour"),
        (Method::PUT, format!("/parties/{HEIDI}/behaviour"), json!({"kind": "answer", "after_ms": 99999999}), 400, "Invalid behaviour"),
        (Method::PUT, "/parties/nobody/behaviour".to_owned(), json!({"kind": "busy"}), 404, "'nobody' is neither"),
        // Every kind refuses fields it does not take, even `null` ones.
        (Method::PUT, format!("/parties/{HEIDI}/behaviour"), json!({"kind": "busy", "after_ms": 5, "zzz": 1}), 400, "unknown field"),
        (Method::PUT, format!("/parties/{HEIDI}/behaviour"), json!({"kind": "busy", "after_ms": 5}), 400, "unknown field `after_ms`"),
        (Method::PUT, format!("/parties/{HEIDI}/behaviour"), json!({"kind": "decline", "hang_up_after_ms": null}), 400, "unknown field"),
        (Method::PUT, format!("/parties/{HEIDI}/behaviour"), json!({"kind": "no-answer", "zzz": 1}), 400, "unknown field `zzz`"),
        (
            Method::PUT,
            format!("/parties/{HEIDI}/behaviour"),
            json!({"kind": "answer", "after_ms": 5, "zzz": 1}),
            400,
            "unknown field `zzz`",
        ),
        (Method::PUT, format!("/parties/{HEIDI}/behaviour"), json!({"kind": "answer", "after_ms": 2.5}), 400, "Invalid behaviour"),
        (Method::GET, "/outbox?status=failed&status=pending".to_owned(), json!(null), 400, "more than once"),
        (Method::GET, "/outbox?status=all".to_owned(), json!(null), 400, "'all' is not one of"),
        (Method::POST, "/calls/nope/hangup".to_owned(), json!(null), 404, "has no remote leg"),
        (Method::DELETE, "/legs/nope".to_owned(), json!(null), 404, "does not exist"),
    ];
    for (method, path, body, status, fragment) in cases {
        let (got, resp) = server.sim(method.clone(), &path, (!body.is_null()).then_some(body.clone())).await;
        assert_eq!(got, status, "{method} {path} {body}: {resp}");
        assert!(resp["error"]["message"].as_str().unwrap_or_default().contains(fragment), "{method} {path}: {resp}");
    }
}

#[tokio::test]
async fn behaviours_change_at_run_time_and_the_world_shows_every_leg() {
    let mut bot = Bot::start().await;
    let server = Server::start(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let (status, _) = server.sim(Method::PUT, &format!("/parties/{HEIDI}/behaviour"), Some(json!({"kind": "busy"}))).await;
    assert_eq!(status, 200);
    let (_, call) = server.graph(Method::POST, "/v1.0/communications/calls", &token, Some(call_to_user(&bot.callback("b"), HEIDI))).await;
    let id = call["id"].as_str().unwrap().to_owned();
    bot.next().await;
    assert_eq!(redact(bot.next().await.1, &id), terminated_note(486, 0, "The callee is busy."));

    let (_, call) = server.graph(Method::POST, "/v1.0/communications/calls", &token, Some(call_to_user(&bot.callback("a"), ALEX))).await;
    let id = call["id"].as_str().unwrap().to_owned();
    bot.take(2).await;
    let (status, world) = server.sim(Method::GET, "/world", None).await;
    assert_eq!(status, 200);
    assert_eq!(world["legs"].as_array().map(Vec::len), Some(1));
    let leg = &world["legs"][0];
    assert_eq!(leg["party"], json!({"kind": "user", "id": ALEX, "displayName": "Alex Wilber", "tenantId": CONTOSO}));
    assert_eq!(leg["state"], "connected");
    assert_eq!(leg["peer"], json!({"kind": "bot", "callId": id, "appId": DEMO_BOT}));
    assert_eq!(world["calls"][0]["state"], "established");
    // Hanging up the leg is the far end hanging up.
    let (status, _) = server.sim(Method::DELETE, &format!("/legs/{}", leg["id"].as_str().unwrap()), None).await;
    assert_eq!(status, 204);
    assert_eq!(redact(bot.next().await.1, &id), terminated_note(200, 4521, "The other participant ended the call."));
}

#[tokio::test]
async fn behaviours_take_whole_floats_and_null_defaults() {
    let bot = Bot::start().await;
    let server = Server::start(&bot).await;
    let path = format!("/parties/{HEIDI}/behaviour");
    let body = json!({"kind": "answer", "after_ms": 200.0, "hang_up_after_ms": null, "transfer_delay_ms": 1e3});
    let (status, resp) = server.sim(Method::PUT, &path, Some(body)).await;
    assert_eq!((status, &resp["behaviour"]), (200, &json!({"kind": "answer", "after_ms": 200, "transfer_delay_ms": 1000})), "{resp}");
    let (status, resp) = server.sim(Method::PUT, &path, Some(json!({"kind": "answer", "after_ms": null}))).await;
    assert_eq!((status, &resp["behaviour"]), (200, &json!({"kind": "answer", "after_ms": 200})), "{resp}");
    for kind in ["busy", "decline", "no-answer"] {
        let (status, resp) = server.sim(Method::PUT, &path, Some(json!({"kind": kind}))).await;
        assert_eq!((status, &resp["behaviour"]), (200, &json!({"kind": kind})), "{resp}");
    }
}

/// A reset ends every call (the bots hear it), and forgets the world, the stories and the faults;
/// the configured behaviours are back.
#[tokio::test]
async fn reset_ends_every_call_and_restores_the_configured_world() {
    let mut bot = Bot::start().await;
    let server = Server::start(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let heidi = format!("/parties/{HEIDI}/behaviour");
    let (status, resp) = server.sim(Method::GET, &heidi, None).await;
    assert_eq!((status, resp), (200, json!({"party": HEIDI, "behaviour": {"kind": "answer", "after_ms": 200}, "source": "configured"})));
    let (status, resp) = server.sim(Method::GET, &format!("/parties/{BUSY_BOB}/behaviour"), None).await;
    assert_eq!((status, &resp["behaviour"]), (200, &json!({"kind": "busy"})), "{resp}");
    assert_eq!(server.sim(Method::PUT, &heidi, Some(json!({"kind": "decline"}))).await.0, 200);
    let (_, resp) = server.sim(Method::GET, &heidi, None).await;
    assert_eq!(resp, json!({"party": HEIDI, "behaviour": {"kind": "decline"}, "source": "set"}));
    let (status, resp) = server.sim(Method::GET, "/parties/nobody/behaviour", None).await;
    assert_eq!((status, resp["error"]["code"].as_str()), (404, Some("NotFound")), "{resp}");
    assert_eq!(server.sim(Method::PUT, &format!("/apps/{DEMO_BOT}/faults"), Some(json!({"delayMs": 10}))).await.0, 200);

    // One call still ringing the bot, one the bot placed and Alex answered.
    let ringing = server.inbound(HEIDI, DEMO_BOT).await;
    bot.next().await;
    let (_, call) = server.graph(Method::POST, "/v1.0/communications/calls", &token, Some(call_to_user(&bot.callback("a"), ALEX))).await;
    let placed = call["id"].as_str().unwrap().to_owned();
    bot.take(2).await;

    let (status, resp) = server.sim(Method::POST, "/reset", None).await;
    assert_eq!((status, resp), (200, json!({"legsHungUp": 2, "callsEnded": 2, "callsLive": 0})));
    let mut ended: Vec<(String, Value)> = Vec::new();
    for _ in 0..2 {
        let (_, item) = bot.next().await;
        let id = item["resourceUrl"].as_str().and_then(|u| u.rsplit('/').next()).unwrap_or_default().to_owned();
        ended.push((id, item["resourceData"]["state"].clone()));
    }
    ended.sort_by(|a, b| a.0.cmp(&b.0));
    let mut want = vec![(ringing.clone(), json!("terminated")), (placed.clone(), json!("terminated"))];
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(ended, want);

    let (_, world) = server.sim(Method::GET, "/world", None).await;
    assert_eq!(world, json!({"legs": [], "calls": []}));
    let (_, resp) = server.sim(Method::GET, &heidi, None).await;
    assert_eq!(resp["source"], "configured", "{resp}");
    let (_, faults) = server.sim(Method::GET, &format!("/apps/{DEMO_BOT}/faults"), None).await;
    let (_, none) = server.sim(Method::GET, &format!("/apps/{LEGACY_BOT}/faults"), None).await;
    assert_eq!(faults["faults"], none["faults"], "no faults: {faults}");
    let (_, calls) = server.sim(Method::GET, "/calls", None).await;
    assert_eq!(calls["value"], json!([]), "{calls}");
    assert_eq!(server.sim(Method::GET, &format!("/calls/{placed}/history"), None).await.0, 404);
    // Nothing to end the second time.
    let (_, resp) = server.sim(Method::POST, "/reset", None).await;
    assert_eq!(resp, json!({"legsHungUp": 0, "callsEnded": 0, "callsLive": 0}));
}

/// Hanging up a call whose far end is gone already is a conflict, not a missing call.
#[tokio::test]
async fn hanging_up_an_ended_call_again_is_a_conflict() {
    let mut bot = Bot::start().await;
    let server = Server::start(&bot).await;
    let id = server.inbound(HEIDI, DEMO_BOT).await;
    bot.next().await;
    let (status, _) = server.sim(Method::POST, &format!("/calls/{id}/hangup"), None).await;
    assert_eq!(status, 204);
    let (status, resp) = server.sim(Method::POST, &format!("/calls/{id}/hangup"), None).await;
    assert_eq!((status, resp["error"]["code"].as_str()), (409, Some("CallEnded")), "{resp}");
}

/// A call's story: the Graph requests about it, its states, each notification and every delivery
/// attempt (with the faults injected), and the network's commands and events; kept after it ends, and
/// listed by state and app.
#[tokio::test]
async fn a_calls_history_tells_its_story() {
    let mut bot = Bot::start().await;
    let server = virtual_server(&bot, &[]).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    // The first attempt of each notification is dropped, so retries show in the story.
    let faults = serde_json::json!({"dropFirst": 1});
    assert_eq!(server.sim(reqwest::Method::PUT, &format!("/apps/{DEMO_BOT}/faults"), Some(faults)).await.0, 200);
    // Virtual time moves until each notification has come (its first attempt dropped, then retried).
    async fn next(server: &Server, bot: &mut Bot) -> serde_json::Value {
        loop {
            if let Some((_, item)) = bot.next_within(std::time::Duration::from_millis(200)).await {
                return item;
            }
            server.advance(500).await;
        }
    }
    let id = server.inbound(ALEX, DEMO_BOT).await;
    next(&server, &mut bot).await;
    let body = crate::lifecycle::answer_body(&bot.callback(&id));
    assert_eq!(server.graph(reqwest::Method::POST, &format!("/v1.0/communications/calls/{id}/answer"), &token, Some(body)).await.0, 202);
    for _ in 0..2 {
        next(&server, &mut bot).await;
    }
    assert_eq!(server.graph(reqwest::Method::DELETE, &format!("/v1.0/communications/calls/{id}"), &token, None).await.0, 204);
    for _ in 0..2 {
        next(&server, &mut bot).await;
    }
    // A refused credential writes into nobody's story.
    assert_eq!(server.graph(reqwest::Method::GET, &format!("/v1.0/communications/calls/{id}"), "forged", None).await.0, 401);
    server.settled().await;

    let (status, story) = server.sim(reqwest::Method::GET, &format!("/calls/{id}/history"), None).await;
    assert_eq!(status, 200, "{story}");
    assert_eq!(
        (story["callId"].as_str(), story["state"].as_str(), story["direction"].as_str()),
        (Some(id.as_str()), Some("terminated"), Some("incoming"))
    );
    assert!(story["endedAt"].is_u64());
    let entries = story["entries"].as_array().unwrap();
    let find = |pred: &dyn Fn(&serde_json::Value) -> bool| entries.iter().position(pred).unwrap_or_else(|| panic!("not in {story:#}"));
    let created = find(&|e| e["kind"] == "state" && e["to"] == "incoming");
    let offered = find(&|e| e["kind"] == "notification" && e["changeType"] == "created" && e["summary"] == "incoming");
    let answered = find(&|e| {
        e["kind"] == "request" && e["method"] == "POST" && e["path"].as_str().is_some_and(|p| p.ends_with("/answer")) && e["status"] == 202
    });
    let connected = find(&|e| e["kind"] == "network" && e["event"] == "Connected");
    let established = find(&|e| e["kind"] == "state" && e["to"] == "established");
    let hung_up = find(&|e| e["kind"] == "request" && e["method"] == "DELETE" && e["status"] == 204);
    let ended = find(&|e| e["kind"] == "state" && e["to"] == "terminated" && e["result"] == "200/7000");
    assert!(
        created < offered
            && offered < answered
            && answered < connected
            && connected <= established
            && established < hung_up
            && hung_up < ended,
        "{story:#}"
    );
    // Every notification was dropped once (an injected fault), then delivered (202).
    let seq = entries[offered]["seq"].as_i64().unwrap();
    let tries: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|e| e["kind"] == "delivery" && e["seqs"].as_array().is_some_and(|s| s.contains(&serde_json::json!(seq))))
        .collect();
    assert_eq!(tries.len(), 2, "{tries:?}");
    assert_eq!((tries[0]["attempt"].as_u64(), tries[0]["faults"][0].as_str(), tries[0]["status"].is_null()), (Some(1), Some("drop"), true));
    assert_eq!((tries[1]["attempt"].as_u64(), tries[1]["status"].as_u64()), (Some(2), Some(202)));
    assert!(entries.iter().any(|e| e["kind"] == "command" && e["command"] == "HangUp"), "{story:#}");
    assert!(!entries.iter().any(|e| e["status"] == 401), "{story:#}");

    let (_, list) = server.sim(reqwest::Method::GET, &format!("/calls?state=terminated&app={DEMO_BOT}"), None).await;
    assert!(list["value"].as_array().unwrap().iter().any(|c| c["id"] == serde_json::json!(id)), "{list}");
    let (_, none) = server.sim(reqwest::Method::GET, "/calls?state=established", None).await;
    assert_eq!(none["value"], serde_json::json!([]));
    let (status, err) = server.sim(reqwest::Method::GET, "/calls?state=ringing", None).await;
    assert_eq!(status, 400, "{err}");
    let (status, err) = server.sim(reqwest::Method::GET, "/calls?app=nope", None).await;
    assert_eq!(
        (status, err["error"]["message"].as_str()),
        (400, Some("Invalid request body: app: 'nope' is not an application of the directory")),
        "{err}"
    );
    assert_eq!(server.sim(reqwest::Method::GET, "/calls/nope/history", None).await.0, 404);
}
