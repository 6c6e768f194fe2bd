//! Outgoing calls to every demo behaviour, with the documented `resultInfo`.

use reqwest::Method;
use serde_json::Value;

use crate::harness::*;

async fn place(server: &Server, token: &str, body: Value) -> String {
    let (status, call) = server.graph(Method::POST, "/v1.0/communications/calls", token, Some(body)).await;
    assert_eq!(status, 201, "{call}");
    assert_eq!(call["state"], "establishing");
    assert_eq!(call["direction"], "outgoing");
    call["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn outgoing_calls_to_every_demo_behaviour() {
    let mut bot = Bot::start().await;
    // On virtual time: each call gets a minute, past every behaviour and the ring timeout, at once.
    let server = virtual_server(&bot, &[]).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let cases: Vec<(Value, Vec<Value>)> = vec![
        (call_to_user(&bot.callback("heidi"), HEIDI), vec![state_note("updated", "establishing"), established_note()]),
        (
            call_to_user(&bot.callback("bob"), BUSY_BOB),
            vec![state_note("updated", "establishing"), terminated_note(486, 0, "The callee is busy.")],
        ),
        (
            call_to_user(&bot.callback("dana"), DECLINING_DANA),
            vec![state_note("updated", "establishing"), terminated_note(603, 0, "The callee declined the call.")],
        ),
        (
            call_to_user(&bot.callback("sam"), SILENT_SAM),
            vec![state_note("updated", "establishing"), terminated_note(408, 10057, "The callee did not answer before the ring timeout.")],
        ),
        (call_to_phone(&bot.callback("pstn"), "+12345678901"), vec![state_note("updated", "establishing"), established_note()]),
        (
            call_to_phone(&bot.callback("pstn-busy"), "+15555550486"),
            vec![state_note("updated", "establishing"), terminated_note(486, 0, "The callee is busy.")],
        ),
        (
            call_to_phone(&bot.callback("pstn-decline"), "+15555550603"),
            vec![state_note("updated", "establishing"), terminated_note(603, 0, "The callee declined the call.")],
        ),
        (
            call_to_phone(&bot.callback("pstn-silent"), "+15555550408"),
            vec![state_note("updated", "establishing"), terminated_note(408, 10057, "The callee did not answer before the ring timeout.")],
        ),
        (
            call_to_phone(&bot.callback("pstn-unknown"), "+19998887777"),
            vec![state_note("updated", "establishing"), terminated_note(480, 10076, "The callee could not be reached.")],
        ),
    ];
    for (body, expected) in cases {
        let callback = body["callbackUri"].as_str().unwrap().to_owned();
        let id = place(&server, &token, body).await;
        server.advance(61_000).await;
        for want in expected {
            let (post, item) = bot.next().await;
            assert_eq!(post.path, callback.trim_start_matches(&bot.url));
            assert_eq!(redact(item, &id), want, "call to {callback}");
        }
    }
    // The established calls are live; the failed ones are gone.
    let (_, list) = server.graph(Method::GET, "/v1.0/communications/calls", &token, None).await;
    assert_eq!(list["value"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn a_party_that_hangs_up_after_answering_ends_the_call() {
    let mut bot = Bot::start().await;
    let server = Server::start(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let (status, _) = server
        .sim(
            Method::PUT,
            &format!("/parties/{ALEX}/behaviour"),
            Some(serde_json::json!({"kind": "answer", "after_ms": 50, "hang_up_after_ms": 200})),
        )
        .await;
    assert_eq!(status, 200);
    let id = place(&server, &token, call_to_user(&bot.callback("a"), ALEX)).await;
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "establishing"));
    assert_eq!(redact(bot.next().await.1, &id), established_note());
    assert_eq!(redact(bot.next().await.1, &id), terminated_note(200, 4521, "The other participant ended the call."));
    bot.expect_silence(std::time::Duration::from_millis(300)).await;
}
