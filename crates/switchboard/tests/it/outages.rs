//! Webhook outages (issue 15): a bot that is down, slow past the delivery timeout, answering 429 with
//! `Retry-After`, resetting connections, or gone past the retry horizon. Nothing is lost, order holds,
//! and one bot's trouble never holds up another bot's notifications.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::*;

/// The example configuration with notification POSTs timed out after `timeout_ms`.
fn config_with_delivery_timeout(timeout_ms: u64) -> std::path::PathBuf {
    let toml = switchboard::config::EXAMPLE_TOML.replace("\ntimeout_ms = 10000 ", &format!("\ntimeout_ms = {timeout_ms} "));
    assert_ne!(toml, switchboard::config::EXAMPLE_TOML, "the example sets [notifications] timeout_ms = 10000");
    config_file(&toml)
}

/// Places a call from the Demo Bot to Heidi (who answers) with `callback`; returns its id.
async fn call_heidi(server: &Server, token: &str, callback: &str) -> String {
    let (status, call) = server.graph(Method::POST, "/v1.0/communications/calls", token, Some(call_to_user(callback, HEIDI))).await;
    assert_eq!(status, 201, "{call}");
    call["id"].as_str().unwrap().to_owned()
}

fn state_of(item: &Value) -> String {
    item["resourceData"]["state"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn retry_after_is_honoured() {
    for status in [429, 503] {
        let mut bot = Bot::start().await;
        let server = virtual_server(&bot, &[]).await;
        // The backoff alone would try again after 100 ms; the bot asks for 30 s.
        bot.fail_next_retry_after(status, 30);
        let id = server.inbound(HEIDI, DEMO_BOT).await;
        // The refusal is in before the clock moves.
        server.wait_counter("switchboard_notifications_retried_total", 1).await;
        server.advance(10_000).await;
        bot.expect_silence(Duration::from_millis(300)).await;
        server.advance(20_500).await;
        let (_, item) = bot.next().await;
        assert_eq!(state_of(&item), "incoming", "{status}");
        assert!(item["resourceUrl"].as_str().unwrap().ends_with(&id), "{status}: {item}");
    }
}

/// A bot that answers in its own way: the first `resets` connections are closed without an answer,
/// the next `stalls` hang past the delivery timeout, then every POST gets 202 and its body is kept.
struct Flaky {
    url: String,
    received: Arc<Mutex<Vec<Value>>>,
}

async fn read_request(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize =
                head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return Some(buf[end + 4..end + 4 + length].to_vec());
            }
        }
    }
}

impl Flaky {
    async fn start(resets: usize, stalls: usize) -> Flaky {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&received);
        tokio::spawn(async move {
            let mut n = 0;
            loop {
                let Ok((mut s, _)) = listener.accept().await else { return };
                n += 1;
                let kept = Arc::clone(&kept);
                let stall = n > resets && n <= resets + stalls;
                let reset = n <= resets;
                tokio::spawn(async move {
                    while let Some(body) = read_request(&mut s).await {
                        if reset {
                            return; // closed without a word
                        }
                        if stall {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            return;
                        }
                        let item: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        kept.lock().unwrap().push(item);
                        let _ = s.write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n").await;
                    }
                });
            }
        });
        Flaky { url, received }
    }

    /// The states of every notification item received so far, in order of arrival.
    fn states(&self) -> Vec<String> {
        let posts = self.received.lock().unwrap();
        posts.iter().flat_map(|p| p["value"].as_array().cloned().unwrap_or_default()).map(|i| state_of(&i)).collect()
    }
}

#[tokio::test]
async fn resets_and_stalls_lose_nothing_and_keep_the_order() {
    let config = config_with_delivery_timeout(1000);
    let server = Server::start_with(Options { demo_webhook: None, extra: vec!["--config".into(), config.display().to_string()] }).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let flaky = Flaky::start(3, 2).await;
    let id = call_heidi(&server, &token, &format!("{}/cb", flaky.url)).await;
    // Heidi answers at once; the bot hangs up once the call is established.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !flaky.states().iter().any(|s| s == "established") {
        assert!(Instant::now() < deadline, "never established: {:?}", flaky.states());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = server.graph(Method::DELETE, &format!("/v1.0/communications/calls/{id}"), &token, None).await;
    assert_eq!(status, 204);
    while !flaky.states().iter().any(|s| s == "terminated") {
        assert!(Instant::now() < deadline, "never terminated: {:?}", flaky.states());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // At least once: a stalled POST may have been read before it timed out, but nothing is missing
    // and nothing comes back out of order.
    let mut states = flaky.states();
    states.dedup();
    assert_eq!(states, ["establishing", "established", "terminating", "terminated"]);
    let page = server.metrics().await;
    assert!(metric(&page, "switchboard_notifications_retried_total") >= 5, "3 resets and 2 stalls: {page}");
    let _ = std::fs::remove_file(config);
}

#[tokio::test]
async fn a_bot_down_past_the_horizon_is_parked_counted_and_sent_again() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let server = Server::start_with(Options { demo_webhook: None, extra: ["--retry-max-attempts", "3"].map(String::from).to_vec() }).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let id = call_heidi(&server, &token, &format!("http://{addr}/cb")).await;
    // Three attempts (100 ms, then about 200 ms apart), then parked.
    server.wait_counter("switchboard_notifications_failed_total", 2).await;
    let (_, parked) = server.sim(Method::GET, "/outbox?status=failed", None).await;
    let parked = parked["value"].as_array().unwrap().clone();
    assert_eq!(parked.len(), 2, "establishing and established: {parked:?}");
    assert!(parked.iter().all(|r| r["callId"] == id.as_str()), "{parked:?}");
    assert_eq!(parked[0]["attempts"], 3, "the first was tried three times; the second joined it: {parked:?}");
    // The bot comes back where it was; the operator sends the parked ones again, in order.
    let mut bot = Bot::start_on(&addr.to_string()).await;
    let (status, body) = server.sim(Method::POST, "/outbox/retry", None).await;
    assert_eq!((status, body["requeued"].as_u64()), (200, Some(2)));
    let states: Vec<String> = bot.take(2).await.iter().map(state_of).collect();
    assert_eq!(states, ["establishing", "established"]);
    let (_, parked) = server.sim(Method::GET, "/outbox?status=failed", None).await;
    assert_eq!(parked["value"], serde_json::json!([]));
}

#[tokio::test]
async fn a_bot_that_stopped_answering_never_holds_up_another() {
    // A blackhole: takes connections and requests, never answers. Each POST to it waits the whole
    // delivery timeout.
    let hole = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_url = format!("http://{}", hole.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hole.accept().await {
            held.push(s);
        }
    });
    let config = config_with_delivery_timeout(5000);
    let server = Server::start_with(Options { demo_webhook: None, extra: vec!["--config".into(), config.display().to_string()] }).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    // 100 calls whose bot is gone: more POSTs than the notifier sends at once.
    for i in 0..100 {
        call_heidi(&server, &token, &format!("{hole_url}/cb/{i}")).await;
    }
    // Meanwhile, a healthy bot's calls: each one's first notification, timed from the request.
    let mut bot = Bot::start().await;
    let mut latencies = Vec::new();
    for i in 0..20 {
        let started = Instant::now();
        call_heidi(&server, &token, &bot.callback(&format!("ok{i}"))).await;
        let (_, item) = bot.next_within(Duration::from_secs(10)).await.expect("the healthy bot is notified");
        latencies.push(started.elapsed());
        assert_eq!(state_of(&item), "establishing");
        bot.take(1).await; // established
    }
    latencies.sort();
    let (median, worst) = (latencies[latencies.len() / 2], latencies[latencies.len() - 1]);
    eprintln!("healthy bot beside a dead one: first notification after {median:?} (median), {worst:?} (worst)");
    assert!(worst < Duration::from_millis(2000), "the dead bot held the healthy one up for {worst:?}");
    let _ = std::fs::remove_file(config);
}
