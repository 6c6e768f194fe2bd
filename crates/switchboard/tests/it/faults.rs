//! Notification faults for bots' robustness tests (issue 13): `PUT /sim/v1/apps/{appId}/faults`.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::*;

async fn set_faults(server: &Server, faults: Value) -> (u16, Value) {
    server.sim(Method::PUT, &format!("/apps/{DEMO_BOT}/faults"), Some(faults)).await
}

async fn call_heidi(server: &Server, token: &str, bot: &Bot, name: &str) -> String {
    let (status, call) =
        server.graph(Method::POST, "/v1.0/communications/calls", token, Some(call_to_user(&bot.callback(name), HEIDI))).await;
    assert_eq!(status, 201, "{call}");
    call["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn injected_faults_do_what_they_say_and_keep_the_order() {
    let mut bot = Bot::start().await;
    let server = Server::start(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;

    // Refusals: an unknown app, a bad value (named), an unknown field.
    let (status, _) = server.sim(Method::PUT, "/apps/nope/faults", Some(json!({}))).await;
    assert_eq!(status, 404);
    let (status, body) = set_faults(&server, json!({"duplicateRate": 1.5})).await;
    assert_eq!(
        (status, body["error"]["message"].as_str()),
        (400, Some("Invalid faults: duplicateRate: 1.5 is not a probability (0 to 1)."))
    );
    let (status, _) = set_faults(&server, json!({"dropEverything": true})).await;
    assert_eq!(status, 400);
    let (status, body) = set_faults(&server, json!({"dropFirst": 12})).await;
    assert_eq!(
        (status, body["error"]["message"].as_str()),
        (400, Some("Invalid faults: dropFirst: 12 would drop every one of the 12 delivery attempts; use at most 11."))
    );
    let (status, none) = server.sim(Method::GET, &format!("/apps/{DEMO_BOT}/faults"), None).await;
    assert_eq!(status, 200);
    assert_eq!(none["faults"], json!({"duplicateRate": 0.0, "dropFirst": 0, "invalidSignatureRate": 0.0}));

    // The first two attempts of each notification are dropped: retries follow, in order.
    let (status, set) = set_faults(&server, json!({"dropFirst": 2, "seed": 7})).await;
    assert_eq!((status, &set["faults"]["dropFirst"]), (200, &json!(2)), "{set}");
    let id = call_heidi(&server, &token, &bot, "drop").await;
    let states: Vec<String> =
        bot.take(2).await.iter().map(|i| redact(i.clone(), &id)["resourceData"]["state"].as_str().unwrap_or_default().to_owned()).collect();
    assert_eq!(states, ["establishing", "established"]);
    assert!(metric(&server.metrics().await, "switchboard_notifications_retried_total") >= 2);

    // Every delivered POST comes twice, with the same ids.
    set_faults(&server, json!({"duplicateRate": 1, "seed": 7})).await;
    call_heidi(&server, &token, &bot, "dup").await;
    let first = bot.next_post_within(Duration::from_secs(10)).await.expect("a POST");
    let again = bot.next_post_within(Duration::from_secs(10)).await.expect("its duplicate");
    assert_eq!(first.notification_ids, again.notification_ids);
    assert_eq!(first.body, again.body);
    // Drain the rest of that call's (duplicated) notifications.
    while bot.next_post_within(Duration::from_millis(500)).await.is_some() {}

    // A spoilt signature: the bot must refuse the token.
    set_faults(&server, json!({"invalidSignatureRate": 1})).await;
    call_heidi(&server, &token, &bot, "sig").await;
    let post = bot.next_post_within(Duration::from_secs(10)).await.expect("a POST");
    let jwt = post.authorization.unwrap().strip_prefix("Bearer ").unwrap().to_owned();
    let discovery: Value =
        client().get(server.url("/notifications/v1/.well-known/openid-configuration")).send().await.unwrap().json().await.unwrap();
    let jwks: Value = client().get(discovery["jwks_uri"].as_str().unwrap()).send().await.unwrap().json().await.unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(switchboard::identity::validate_notification_token(&jwks, "https://api.botframework.com", DEMO_BOT, &jwt, now).is_err());
    while bot.next_post_within(Duration::from_millis(500)).await.is_some() {}

    // A delay of 300 to 400 ms before each POST.
    set_faults(&server, json!({"delayMs": [400, 300]})).await;
    let started = Instant::now();
    call_heidi(&server, &token, &bot, "slow").await;
    bot.next_post_within(Duration::from_secs(10)).await.expect("a POST");
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    while bot.next_post_within(Duration::from_millis(800)).await.is_some() {}

    // Cleared: notifications come at once, once, signed well.
    assert_eq!(server.sim(Method::DELETE, &format!("/apps/{DEMO_BOT}/faults"), None).await.0, 204);
    assert_eq!(server.sim(Method::GET, &format!("/apps/{DEMO_BOT}/faults"), None).await.1["faults"], none["faults"]);
    let page = server.metrics().await;
    for kind in ["drop", "duplicate", "invalidSignature", "delay"] {
        let line = format!("switchboard_notification_faults_total{{kind=\"{kind}\"}}");
        assert!(page.lines().any(|l| l.starts_with(&line)), "{kind}: {page}");
    }
}
