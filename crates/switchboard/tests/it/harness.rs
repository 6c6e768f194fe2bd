//! The test harness: a real `switchboard` process on loopback, and a bot that receives its webhooks.
//!
//! Everything goes over real sockets: the server is the built binary, started per test with its own
//! data folder, so that `kill -9` and restart are the real thing.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::mpsc;

pub const CONTOSO: &str = "aaaaaaaa-0000-4000-8000-000000000001";
pub const FABRIKAM: &str = "bbbbbbbb-0000-4000-8000-000000000002";
pub const DEMO_BOT: &str = "cccccccc-0000-4000-8000-000000000003";
pub const UNPRIVILEGED_BOT: &str = "cccccccc-0000-4000-8000-000000000005";
pub const LEGACY_BOT: &str = "cccccccc-0000-4000-8000-000000000006";
pub const SECRET: &str = "switchboard-demo-secret";
pub const RECEPTION: &str = "dddddddd-0000-4000-8000-000000000004";
pub const RECEPTION_PHONE: &str = "+14255550100";
pub const HEIDI: &str = "550fae72-d251-43ec-868c-373732c2704f";
pub const ALEX: &str = "751f6800-3180-414d-bd94-333364659951";
pub const BUSY_BOB: &str = "eeeeeeee-0000-4000-8000-000000000486";
pub const DECLINING_DANA: &str = "eeeeeeee-0000-4000-8000-000000000603";
pub const SILENT_SAM: &str = "eeeeeeee-0000-4000-8000-000000000408";
pub const FIONA: &str = "ffffffff-0000-4000-8000-000000000001";
pub const ADMIN_KEY: &str = "switchboard-demo-admin";
/// The ring timeout (and transfer deadline) the test servers run with, short enough for the tests of
/// that timeout to wait for it. A test that must act before a deadline it does not test runs with
/// [`long_ring_timeout`] instead: on a loaded 2-core CI machine, 3 s is not a safe margin.
pub const RING_TIMEOUT_MS: u64 = 3000;

/// `serve` flags for a ring (and transfer) timeout no test reaches by accident, for tests that must act
/// before the deadline but do not test it. Deadlines survive a restart, so kill tests need it too.
pub fn long_ring_timeout() -> Vec<String> {
    vec!["--ring-timeout-ms".to_owned(), "20000".to_owned()]
}

/// A server whose ring timeout (and transfer deadline) is far off, for tests that must act while a
/// call rings or a transfer is in progress but do not test that deadline.
pub async fn patient_server(bot: &Bot) -> Server {
    Server::start_with(Options { demo_webhook: Some(bot.webhook()), extra: long_ring_timeout() }).await
}

/// A server on virtual time (`--virtual-clock`): nothing that waits happens until [`Server::advance`].
/// Tests of a deadline run on it, so they never sleep for one.
pub async fn virtual_server(bot: &Bot, extra: &[&str]) -> Server {
    let mut args = vec!["--virtual-clock".to_owned()];
    args.extend(extra.iter().map(|s| s.to_string()));
    Server::start_with(Options { demo_webhook: Some(bot.webhook()), extra: args }).await
}

/// One webhook POST as the bot received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub authorization: Option<String>,
    /// `Switchboard-Notification-Ids`: the items' stable ids.
    pub notification_ids: Option<String>,
    pub body: Value,
}

#[derive(Clone, Default)]
struct BotState {
    tx: Option<mpsc::UnboundedSender<Received>>,
    /// Status codes to answer with (and a `Retry-After`, in seconds), in order; 202 once empty.
    script: Arc<Mutex<VecDeque<(u16, Option<u64>)>>>,
}

/// A bot's HTTP endpoint: records every POST and answers as scripted.
pub struct Bot {
    pub url: String,
    rx: mpsc::UnboundedReceiver<Received>,
    script: Arc<Mutex<VecDeque<(u16, Option<u64>)>>>,
    /// Notification items already received but not yet taken.
    buffered: VecDeque<(Received, Value)>,
    pub posts: Vec<Received>,
}

async fn receive(
    State(state): State<BotState>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, [(String, String); 1]) {
    let (status, retry_after) = state.script.lock().map(|mut s| s.pop_front()).ok().flatten().unwrap_or((202, None));
    let retry_after = match retry_after {
        Some(secs) => ("retry-after".to_owned(), secs.to_string()),
        None => ("x-retry-after".to_owned(), "none".to_owned()),
    };
    if status < 300 {
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let notification_ids = headers.get("switchboard-notification-ids").and_then(|v| v.to_str().ok()).map(str::to_owned);
        if let Some(tx) = &state.tx {
            let _ = tx.send(Received { path: uri.path().to_owned(), authorization, notification_ids, body });
        }
    }
    (StatusCode::from_u16(status).unwrap_or(StatusCode::ACCEPTED), [retry_after])
}

impl Bot {
    pub async fn start() -> Bot {
        Self::start_on("127.0.0.1:0").await
    }

    /// A bot listening on `addr` (one that comes back where it was before an outage, say).
    pub async fn start_on(addr: &str) -> Bot {
        let (tx, rx) = mpsc::unbounded_channel();
        let script = Arc::new(Mutex::new(VecDeque::new()));
        let state = BotState { tx: Some(tx), script: Arc::clone(&script) };
        let app = axum::Router::new().route("/{*path}", post(receive)).with_state(state);
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bot listens");
        let addr = listener.local_addr().expect("bot address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Bot { url: format!("http://{addr}"), rx, script, buffered: VecDeque::new(), posts: Vec::new() }
    }

    /// The bot's calling webhook (where incoming calls are offered).
    pub fn webhook(&self) -> String {
        format!("{}/api/calls", self.url)
    }

    /// A per-call callback URL.
    pub fn callback(&self, name: &str) -> String {
        format!("{}/callback/{name}", self.url)
    }

    /// Answer the next POSTs with these statuses (then 202 again).
    pub fn fail_next(&self, statuses: &[u16]) {
        self.script.lock().expect("script").extend(statuses.iter().map(|s| (*s, None)));
    }

    /// Answer the next POST with `status` and `Retry-After: secs`.
    pub fn fail_next_retry_after(&self, status: u16, secs: u64) {
        self.script.lock().expect("script").push_back((status, Some(secs)));
    }

    pub fn clear_failures(&self) {
        self.script.lock().expect("script").clear();
    }

    /// The next notification item (one element of a commsNotifications `value`), with the POST it came in.
    pub async fn next(&mut self) -> (Received, Value) {
        self.next_within(Duration::from_secs(10)).await.expect("a notification within 10 s")
    }

    pub async fn next_within(&mut self, wait: Duration) -> Option<(Received, Value)> {
        if let Some(item) = self.buffered.pop_front() {
            return Some(item);
        }
        let post = tokio::time::timeout(wait, self.rx.recv()).await.ok().flatten()?;
        self.posts.push(post.clone());
        let items = post.body["value"].as_array().cloned().unwrap_or_default();
        assert!(!items.is_empty(), "an empty batch: {}", post.body);
        // Today's envelope is typed; the 2018 one (items with `resource`) was not.
        let expected = if items[0].get("resource").is_some() { Value::Null } else { json!("#microsoft.graph.commsNotifications") };
        assert_eq!(post.body["@odata.type"], expected, "envelope: {}", post.body);
        for item in items {
            self.buffered.push_back((post.clone(), item));
        }
        self.buffered.pop_front()
    }

    /// The next POST as it came, whole (for tests that read its items' ids themselves).
    pub async fn next_post_within(&mut self, wait: Duration) -> Option<Received> {
        assert!(self.buffered.is_empty(), "items were taken one by one before; take whole POSTs only");
        let post = tokio::time::timeout(wait, self.rx.recv()).await.ok().flatten()?;
        self.posts.push(post.clone());
        Some(post)
    }

    /// The next `n` notification items, as (changeType, state) pairs plus the items themselves.
    pub async fn take(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(self.next().await.1);
        }
        out
    }

    /// Asserts that nothing more arrives for `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some((_, item)) = self.next_within(wait).await {
            panic!("unexpected notification: {item}");
        }
    }
}

/// A loopback TCP port free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Writes `toml` to a configuration file of its own (for `serve --config`); returns its path.
pub fn config_file(toml: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("switchboard-config-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&path, toml).expect("write the configuration");
    path
}

/// A running `switchboard serve`.
pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub data_dir: PathBuf,
    args: Vec<String>,
    pub http: reqwest::Client,
}

pub struct Options {
    pub demo_webhook: Option<String>,
    pub extra: Vec<String>,
}

impl Server {
    /// Starts the server on the demo directory with the Demo Bot's webhook pointed at `bot`.
    pub async fn start(bot: &Bot) -> Server {
        Self::start_with(Options { demo_webhook: Some(bot.webhook()), extra: vec![] }).await
    }

    pub async fn start_with(opts: Options) -> Server {
        Self::start_at(opts, "127.0.0.1:0").await
    }

    /// Starts on `listen`, and is reached there even if `--public-url` names another address (a
    /// node behind a load balancer).
    pub async fn start_at(opts: Options, listen: &str) -> Server {
        let data_dir = std::env::temp_dir().join(format!("switchboard-it-{}", uuid::Uuid::new_v4()));
        let mut args = vec![
            "serve".to_owned(),
            "--data-dir".to_owned(),
            data_dir.display().to_string(),
            "--retry-first-ms".to_owned(),
            "100".to_owned(),
        ];
        // A test may set its own ring timeout in `extra`.
        if !opts.extra.iter().any(|a| a == "--ring-timeout-ms") {
            args.extend(["--ring-timeout-ms".to_owned(), RING_TIMEOUT_MS.to_string()]);
        }
        if let Some(w) = opts.demo_webhook {
            args.extend(["--demo-webhook".to_owned(), w]);
        }
        args.extend(opts.extra);
        let mut server = Server { child: None, base: String::new(), data_dir, args, http: client() };
        server.spawn(listen).await;
        if !listen.ends_with(":0") {
            server.base = format!("http://{listen}");
        }
        server
    }

    async fn spawn(&mut self, listen: &str) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(&self.args)
            .args(["--listen", listen])
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("switchboard starts");
        let stdout = child.stdout.take().expect("stdout");
        let first = tokio::task::spawn_blocking(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            // Keep draining so that the server never blocks on a full pipe.
            std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
            line
        })
        .await
        .expect("read stdout");
        let base = first.trim().rsplit(' ').next().unwrap_or_default().to_owned();
        assert!(base.starts_with("http"), "unexpected first line: {first:?}");
        self.base = base;
        self.child = Some(child);
    }

    /// A handle on something already serving at `base` (a load balancer in front of nodes).
    pub fn at(base: &str) -> Server {
        Server { child: None, base: base.to_owned(), data_dir: PathBuf::new(), args: Vec::new(), http: client() }
    }

    /// `kill -9`: no shutdown, no drain.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port and data folder.
    pub async fn restart(&mut self) {
        self.kill9();
        let listen = self.base.trim_start_matches("http://").trim_start_matches("https://").to_owned();
        let base = self.base.clone();
        self.spawn(&listen).await;
        self.base = base;
    }

    /// SIGTERM, then waits for the process to exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        c.wait().map(|s| s.success()).unwrap_or(false)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A Graph token for `app` in `tenant`.
    pub async fn token(&self, app: &str, tenant: &str) -> String {
        let resp = self
            .http
            .post(self.url(&format!("/{tenant}/oauth2/v2.0/token")))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", app),
                ("client_secret", SECRET),
                ("scope", "https://graph.microsoft.com/.default"),
            ])
            .send()
            .await
            .expect("token request");
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.expect("token json");
        body["access_token"].as_str().expect("access_token").to_owned()
    }

    /// A Graph request with a bearer token; returns status and JSON body (Null when empty).
    pub async fn graph(&self, method: reqwest::Method, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("graph request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A sim control API request with the admin key.
    pub async fn sim(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(&format!("/sim/v1{path}"))).header("X-Sim-Admin-Key", ADMIN_KEY);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("sim request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The sim places a call from `from` to `to`; returns the bot's call id.
    pub async fn inbound(&self, from: &str, to: &str) -> String {
        let (status, body) = self.sim(reqwest::Method::POST, "/calls", Some(json!({"from": from, "to": to}))).await;
        assert_eq!(status, 201, "{body}");
        body["callId"].as_str().expect("callId").to_owned()
    }

    /// Moves virtual time forward; every timer due by then has fired, and what it caused has settled.
    pub async fn advance(&self, ms: u64) -> Value {
        let (status, clock) = self.sim(reqwest::Method::POST, "/clock", Some(json!({"advance_ms": ms}))).await;
        assert_eq!(status, 200, "{clock}");
        clock
    }

    /// Waits until the outbox has recorded every delivery. Delivery is at least once: a notification
    /// the bot answered just before `kill -9`, but whose delivery was not yet written down, is rightly
    /// sent again after the restart (a fixed sleep here once lost that race in CI). Tests that kill a
    /// settled outbox can expect an exact sequence; `recovery.rs` covers notifications owed at the kill.
    pub async fn settled(&self) {
        self.wait_metric("switchboard_notifications_pending 0").await;
    }

    /// Waits (up to 5 s) until /metrics has a line starting with `line`; returns the whole page.
    pub async fn wait_metric(&self, line: &str) -> String {
        let mut page = String::new();
        for _ in 0..100 {
            page = self.metrics().await;
            if page.lines().any(|l| l.starts_with(line)) {
                return page;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no metric line {line:?} in {page}");
    }

    /// Waits (up to 5 s) until the counter `name` on /metrics is at least `at_least`; returns its value.
    pub async fn wait_counter(&self, name: &str, at_least: u64) -> u64 {
        let mut page = String::new();
        for _ in 0..100 {
            page = self.metrics().await;
            let value = metric(&page, name);
            if value >= at_least {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("counter {name} never reached {at_least}: {page}");
    }

    pub async fn metrics(&self) -> String {
        self.http.get(self.url("/metrics")).send().await.expect("metrics").text().await.unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        if !self.data_dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// The value of the metric line `name` (labels included) on a /metrics page; 0 if absent.
pub fn metric(page: &str, name: &str) -> u64 {
    page.lines().find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' '))).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
}

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client")
}

/// The media config every example sends.
pub fn service_hosted() -> Value {
    json!({"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"})
}

/// The body of a peer-to-peer call to a user.
pub fn call_to_user(callback: &str, user: &str) -> Value {
    json!({
        "@odata.type": "#microsoft.graph.call",
        "callbackUri": callback,
        "targets": [{"@odata.type": "#microsoft.graph.invitationParticipantInfo", "identity": {"@odata.type": "#microsoft.graph.identitySet", "user": {"@odata.type": "#microsoft.graph.identity", "id": user}}}],
        "requestedModalities": ["audio"],
        "mediaConfig": service_hosted()
    })
}

/// The body of a PSTN call placed from the Contoso Reception instance.
pub fn call_to_phone(callback: &str, number: &str) -> Value {
    json!({
        "@odata.type": "#microsoft.graph.call",
        "callbackUri": callback,
        "source": {"@odata.type": "#microsoft.graph.participantInfo", "identity": {"@odata.type": "#microsoft.graph.identitySet", "applicationInstance": {"@odata.type": "#microsoft.graph.identity", "id": RECEPTION, "displayName": "Contoso Reception"}}},
        "targets": [{"@odata.type": "#microsoft.graph.invitationParticipantInfo", "identity": {"@odata.type": "#microsoft.graph.identitySet", "phone": {"@odata.type": "#microsoft.graph.identity", "id": number}}}],
        "requestedModalities": ["audio"],
        "mediaConfig": service_hosted(),
        "tenantId": CONTOSO
    })
}

/// Replaces a call id in a notification item by `{callId}`, so that items compare exactly.
pub fn redact(item: Value, call_id: &str) -> Value {
    replace_in_strings(item, call_id, "{callId}")
}

/// Replaces `from` by `to` in every string of a JSON value.
pub fn replace_in_strings(mut v: Value, from: &str, to: &str) -> Value {
    fn walk(v: &mut Value, from: &str, to: &str) {
        match v {
            Value::String(s) if s.contains(from) => *s = s.replace(from, to),
            Value::Array(a) => a.iter_mut().for_each(|x| walk(x, from, to)),
            Value::Object(o) => o.values_mut().for_each(|x| walk(x, from, to)),
            _ => {}
        }
    }
    walk(&mut v, from, to);
    v
}

/// A state notification exactly as Graph sends it.
pub fn state_note(change: &str, state: &str) -> Value {
    json!({
        "@odata.type": "#microsoft.graph.commsNotification",
        "changeType": change,
        "resourceUrl": "/communications/calls/{callId}",
        "resourceData": {"@odata.type": "#microsoft.graph.call", "state": state}
    })
}

pub fn established_note() -> Value {
    let mut n = state_note("updated", "established");
    n["resourceData"]["mediaState"] = json!({"@odata.type": "#microsoft.graph.callMediaState", "audio": "active"});
    n
}

pub fn terminated_note(code: i64, subcode: i64, message: &str) -> Value {
    let mut n = state_note("deleted", "terminated");
    n["resourceData"]["resultInfo"] =
        json!({"@odata.type": "#microsoft.graph.resultInfo", "code": code, "subcode": subcode, "message": message});
    n
}
