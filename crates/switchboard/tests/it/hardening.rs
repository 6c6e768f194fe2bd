//! Issue 15's weaknesses, each with its regression test: server-side request forgery through
//! `callbackUri`, slow and idle clients, log amplification, ambiguous credentials, files others can
//! read, and refusals made before routing that `/metrics` did not count.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

fn host_port(server: &Server) -> String {
    server.base.trim_start_matches("http://").to_owned()
}

/// Creates a call to Heidi with `callback`: the status and the error message, if any.
async fn create_with(server: &Server, token: &str, callback: &str) -> (u16, String, usize) {
    let body = call_to_user(callback, HEIDI).to_string();
    let resp = server
        .http
        .post(server.url("/v1.0/communications/calls"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, json["error"]["message"].as_str().unwrap_or_default().to_owned(), text.len())
}

#[tokio::test]
async fn callbacks_the_policy_refuses_are_400s_naming_callback_uri() {
    let bot = Bot::start().await;
    let server = Server::start(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let port = host_port(&server).rsplit(':').next().unwrap().to_owned();
    let long = format!("https://bot.example.com/{}", "a".repeat(900_000));
    // The addresses the attack used, on the demo's policy (http to 127.0.0.1 and localhost only).
    let cases: Vec<(String, String)> = vec![
        ("https://169.254.169.254/latest/meta-data/".into(), "169.254.169.254, a link-local address".into()),
        ("https://10.0.0.1/".into(), "10.0.0.1, a private address".into()),
        ("https://192.168.1.1/".into(), "192.168.1.1, a private address".into()),
        ("https://[fd00::1]/".into(), "fd00::1, a private address".into()),
        ("https://[::ffff:169.254.169.254]/".into(), "a link-local address".into()),
        ("https://0/".into(), "0.0.0.0, a reserved address".into()),
        ("https://2130706433/".into(), "writes the address 127.0.0.1 as '2130706433'; write it in the standard form".into()),
        ("http://127.0.0.2:3978/cb".into(), "127.0.0.2, a loopback address".into()),
        ("http://[::1]:3978/cb".into(), "::1, a loopback address".into()),
        ("http://127.1:3978/cb".into(), "writes the address 127.0.0.1 as '127.1'".into()),
        ("http://0x7f000001:3978/cb".into(), "writes the address 127.0.0.1 as '0x7f000001'".into()),
        (format!("{}/v1.0/communications/calls", server.base), format!("127.0.0.1:{port} is this server's own address")),
        (format!("http://localhost:{port}/sim/v1/calls"), format!("127.0.0.1:{port} is this server's own address")),
        ("https://bot.example.com/c\r\nb".into(), "contains a carriage return (CR) at position 25; a URL has none".into()),
        (long, "is 900024 characters long; at most 2048 are allowed".into()),
    ];
    for (callback, words) in &cases {
        let (status, message, length) = create_with(&server, &token, callback).await;
        let shown = &callback[..callback.len().min(60)];
        assert_eq!(status, 400, "{shown}: {message}");
        assert!(message.starts_with("Invalid request body: callbackUri: "), "{shown}: {message}");
        assert!(message.contains(words.as_str()), "{shown}: {message:?} lacks {words:?}");
        assert!(length < 1_000, "{shown}: the refusal echoes the URL ({length} bytes)");
    }
    // The demo's own webhooks still work.
    let (status, message, _) = create_with(&server, &token, &bot.callback("ok")).await;
    assert_eq!(status, 201, "{message}");
    let page = server.metrics().await;
    assert!(!page.contains("status=\"5"), "no 5xx: {page}");
}

/// The example configuration without the demo's loopback allowance: https only, nothing local.
fn strict_config() -> std::path::PathBuf {
    let toml = switchboard::config::EXAMPLE_TOML
        .replace("allow_http_loopback_callbacks = true", "allow_http_loopback_callbacks = false")
        .replace("calling_webhook = \"http://127.0.0.1:", "calling_webhook = \"https://bots.example.com:");
    config_file(&toml)
}

#[tokio::test]
async fn a_name_that_resolves_to_a_refused_address_gets_no_notification() {
    // This machine's own name resolves to one of its addresses (containers list it in /etc/hosts):
    // a public-looking name that DNS points inside, as in DNS rebinding.
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_owned();
    let found: Vec<_> = tokio::net::lookup_host((name.as_str(), 443)).await.map(|a| a.collect()).unwrap_or_default();
    assert!(
        !found.is_empty() && found.iter().all(|a: &std::net::SocketAddr| !a.ip().is_global_ish()),
        "this test needs the host name '{name}' to resolve to an address of this machine; it resolves to {found:?}"
    );
    let config = strict_config();
    let server = Server::start_with(Options { demo_webhook: None, extra: vec!["--config".into(), config.display().to_string()] }).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let callback = format!("https://{name}:9/cb");
    let (status, message, _) = create_with(&server, &token, &callback).await;
    assert_eq!(status, 201, "a name passes at request time: {message}");
    // Refused for good on the first attempt, with the reason, and counted.
    server.wait_counter("switchboard_callbacks_refused_total", 1).await;
    let (status, failed) = server.sim(Method::GET, "/outbox?status=failed", None).await;
    assert_eq!(status, 200);
    let row = &failed["value"][0];
    assert_eq!(row["callback"], callback.as_str());
    assert_eq!(row["attempts"], 1, "{row}");
    let error = row["lastError"].as_str().unwrap_or_default();
    assert!(error.starts_with(&format!("refused by the callback policy: '{name}' resolves to ")), "{error}");
    assert!(error.contains("which the callback policy refuses"), "{error}");
    let _ = std::fs::remove_file(config);
}

trait GlobalIsh {
    fn is_global_ish(&self) -> bool;
}

impl GlobalIsh for std::net::IpAddr {
    fn is_global_ish(&self) -> bool {
        switchboard::callback::classify(*self) == switchboard::callback::Class::Public
    }
}

/// Reads what the server sends until it closes (or `limit` passes): the text and when it closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Option<Duration>) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(started.elapsed()), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), Some(started.elapsed())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), None),
        }
    }
}

async fn connect(server: &Server) -> TcpStream {
    TcpStream::connect(host_port(server)).await.unwrap()
}

#[tokio::test]
async fn slow_and_idle_clients_are_cut_off_while_others_are_served() {
    let server = Server::start_with(Options {
        demo_webhook: None,
        extra: ["--header-timeout-ms", "1000", "--body-timeout-ms", "1500", "--idle-timeout-ms", "2000"].map(String::from).to_vec(),
    })
    .await;
    let limit = Duration::from_secs(6);

    // A head that never ends: 408, then closed, after the header timeout.
    let mut partial = connect(&server).await;
    partial.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let (text, closed) = read_until_closed(&mut partial, limit).await;
    let closed = closed.expect("closed");
    assert!(text.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{text:?}");
    assert!(closed >= Duration::from_millis(900), "closed after {closed:?}");

    // A connection that sends nothing at all is timed the same way.
    let mut silent = connect(&server).await;
    let (text, closed) = read_until_closed(&mut silent, limit).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    assert!(closed.is_some());

    // The original attack: a token request announcing 50 MB and sending 2 bytes. Refused at once.
    let token_path = format!("/{CONTOSO}/oauth2/v2.0/token");
    let mut huge = connect(&server).await;
    let head = format!(
        "POST {token_path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 52428800\r\n\r\nab"
    );
    huge.write_all(head.as_bytes()).await.unwrap();
    let (text, closed) = read_until_closed(&mut huge, limit).await;
    assert!(text.starts_with("HTTP/1.1 413 Payload Too Large\r\n"), "{text:?}");
    assert!(text.contains("\"code\":\"RequestEntityTooLarge\""), "{text:?}");
    assert!(closed.expect("closed") < Duration::from_millis(900));

    // A body that stops halfway: 408 in the Graph envelope after the body timeout, then closed.
    let mut slow = connect(&server).await;
    let head = format!(
        "POST {token_path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nab"
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let (text, closed) = read_until_closed(&mut slow, limit).await;
    assert!(text.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{text:?}");
    assert!(text.contains("\"code\":\"RequestTimeout\""), "{text:?}");
    assert!(text.contains("The request body did not arrive within 1500 ms."), "{text:?}");
    assert!(closed.expect("closed") >= Duration::from_millis(1400));

    // Idle after a response: closed after the idle timeout, with no 408.
    let mut idle = connect(&server).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let (text, closed) = read_until_closed(&mut idle, limit).await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text:?}");
    assert!(!text.contains("408"), "{text:?}");
    let closed = closed.expect("closed");
    assert!(closed >= Duration::from_millis(1900) && closed < Duration::from_millis(5000), "closed after {closed:?}");

    // Slowloris: 100 connections trickling a head one byte at a time. Normal requests go on.
    let mut trickles = Vec::new();
    for _ in 0..100 {
        let mut s = connect(&server).await;
        trickles.push(tokio::spawn(async move {
            for b in b"GET /healthz HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
                if s.write_all(&[*b]).await.is_err() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        }));
    }
    let mut worst = Duration::ZERO;
    for _ in 0..40 {
        let started = Instant::now();
        let resp = server.http.get(server.url("/healthz")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        worst = worst.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut cut = 0;
    for t in trickles {
        cut += usize::from(t.await.unwrap());
    }
    eprintln!("slowloris: {cut} of 100 trickling connections cut off; the slowest of 40 normal requests took {worst:?}");
    assert_eq!(cut, 100, "every trickling connection is cut off at the header timeout");
    assert!(worst < Duration::from_millis(500), "normal requests waited {worst:?} behind slow clients");

    let page = server.metrics().await;
    assert!(metric(&page, "switchboard_http_header_timeouts_total") >= 102, "{page}");
    assert!(metric(&page, "switchboard_http_idle_closed_total") >= 1, "{page}");
    assert!(page.contains("switchboard_http_requests_total{family=\"identity\",status=\"408\"} 1"), "{page}");
    assert!(page.contains("switchboard_http_requests_total{family=\"identity\",status=\"413\"} 1"), "{page}");
    assert!(!page.contains("status=\"5"), "{page}");
}

#[tokio::test]
async fn connections_over_the_cap_get_503_and_the_cap_frees_up() {
    let server = Server::start_with(Options {
        demo_webhook: None,
        extra: ["--max-connections", "8", "--header-timeout-ms", "1000"].map(String::from).to_vec(),
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(connect(&server).await);
    }
    // Let the server accept them all before the ninth.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut ninth = connect(&server).await;
    let (text, closed) = read_until_closed(&mut ninth, Duration::from_secs(3)).await;
    assert!(text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{text:?}");
    assert!(text.contains("retry-after: 1\r\n"), "{text:?}");
    assert!(text.contains("\"code\":\"ServiceUnavailable\""), "{text:?}");
    assert!(closed.expect("closed") < Duration::from_millis(900), "shed at once, not after a timeout");
    // The held ones time out; a new client is served again.
    for mut h in held {
        let (text, _) = read_until_closed(&mut h, Duration::from_secs(5)).await;
        assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    }
    let mut fresh = connect(&server).await;
    fresh.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let (text, _) = read_until_closed(&mut fresh, Duration::from_secs(3)).await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text:?}");
    let page = server.metrics().await;
    assert_eq!(metric(&page, "switchboard_http_connections_shed_total"), 1, "{page}");
    assert!(page.contains("switchboard_http_requests_total{family=\"other\",status=\"503\"} 1"), "{page}");
}

#[tokio::test]
async fn refusals_made_before_routing_are_counted() {
    let server = Server::start_with(Options { demo_webhook: None, extra: vec![] }).await;
    let mut big = connect(&server).await;
    let head = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(70_000));
    big.write_all(head.as_bytes()).await.unwrap();
    let (text, _) = read_until_closed(&mut big, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{text:?}");
    let mut garbage = connect(&server).await;
    garbage.write_all(b"NOT HTTP AT ALL\r\n\r\n").await.unwrap();
    let (text, _) = read_until_closed(&mut garbage, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text:?}");
    let page = server.wait_metric("switchboard_http_requests_total{family=\"other\",status=\"431\"} 1").await;
    assert!(page.contains("switchboard_http_requests_total{family=\"other\",status=\"400\"} 1"), "{page}");
}

async fn token_request(server: &Server, basic: Option<(&str, &str)>, form: &[(&str, &str)]) -> (u16, Value) {
    let mut req = server.http.post(server.url(&format!("/{CONTOSO}/oauth2/v2.0/token"))).form(form);
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn ambiguous_credentials_are_refused() {
    let server = Server::start_with(Options { demo_webhook: None, extra: vec![] }).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;

    // Two Authorization headers on Graph, even both valid.
    let mut headers = reqwest::header::HeaderMap::new();
    for _ in 0..2 {
        headers.append("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let resp = server.http.get(server.url("/v1.0/communications/calls/x")).headers(headers).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "BadRequest");
    assert_eq!(body["error"]["message"], "The request carries 2 Authorization headers; send exactly one.");

    // Two admin keys on the sim API, and the admin key as a bearer token.
    let mut headers = reqwest::header::HeaderMap::new();
    headers.append("x-sim-admin-key", "wrong".parse().unwrap());
    headers.append("x-sim-admin-key", ADMIN_KEY.parse().unwrap());
    let resp = server.http.get(server.url("/sim/v1/world")).headers(headers).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["message"], "The request carries 2 X-Sim-Admin-Key headers; send exactly one.");
    let resp = server.http.get(server.url("/sim/v1/world")).bearer_auth(ADMIN_KEY).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["error"]["message"],
        "The sim control API takes the admin key in the X-Sim-Admin-Key header only, not in Authorization."
    );

    // The token endpoint: a wrong secret in Basic and the right one in the body.
    let scope = ("scope", "https://graph.microsoft.com/.default");
    let grant = ("grant_type", "client_credentials");
    let (status, body) =
        token_request(&server, Some((DEMO_BOT, "wrong")), &[grant, ("client_id", DEMO_BOT), ("client_secret", SECRET), scope]).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_request");
    assert!(body["error_description"].as_str().unwrap().starts_with(
        "AADSTS9002313: Invalid request. Client credentials were given both in the Authorization header and in the body; use one."
    ));
    // A parameter given twice, whichever comes first.
    for secrets in [["wrong", SECRET], [SECRET, "wrong"]] {
        let form = [grant, ("client_id", DEMO_BOT), ("client_secret", secrets[0]), ("client_secret", secrets[1]), scope];
        let (status, body) = token_request(&server, None, &form).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .starts_with("AADSTS9002313: Invalid request. The parameter 'client_secret' appears more than once."),
            "{body}"
        );
    }
    // One method at a time still works.
    let (status, body) = token_request(&server, Some((DEMO_BOT, SECRET)), &[grant, scope]).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = token_request(&server, Some((DEMO_BOT, SECRET)), &[grant, ("client_id", DEMO_BOT), scope]).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_failing_callback_is_logged_once_a_minute_not_on_every_retry() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let bot = Bot::start().await;
    let server =
        Server::start_with(Options { demo_webhook: Some(bot.webhook()), extra: ["--retry-max-attempts", "5"].map(String::from).to_vec() })
            .await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let (status, message, _) = create_with(&server, &token, &format!("http://{closed}/cb")).await;
    assert_eq!(status, 201, "{message}");
    // Five attempts (100 ms, doubling): the first failure is logged, the four after it are not.
    server.wait_counter("switchboard_notifications_failed_total", 1).await;
    let page = server.metrics().await;
    assert!(metric(&page, "switchboard_notification_logs_left_out_total") >= 4, "{page}");
    let (_, failed) = server.sim(Method::GET, "/outbox?status=failed", None).await;
    let error = failed["value"][0]["lastError"].as_str().unwrap_or_default().to_owned();
    assert!(error.starts_with("the callback could not be reached: "), "{error}");
    assert!(!error.contains(&closed.to_string()), "the URL is logged beside the error, not inside it again: {error}");
}

#[cfg(unix)]
#[tokio::test]
async fn the_data_folder_and_database_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let bot = Bot::start().await;
    let server = Server::start(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let (status, _, _) = create_with(&server, &token, &bot.callback("p")).await;
    assert_eq!(status, 201);
    let mode = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
    assert_eq!(mode(&server.data_dir), 0o700, "{}", server.data_dir.display());
    for file in ["switchboard.db", "switchboard.db-wal", "switchboard.db-shm"] {
        assert_eq!(mode(&server.data_dir.join(file)), 0o600, "{file}");
    }
}

#[tokio::test]
async fn access_and_notification_tokens_have_keys_of_their_own() {
    let mut bot = Bot::start().await;
    let mut server = Server::start(&bot).await;
    let get = |url: String| async move { client().get(url).send().await.unwrap().json::<Value>().await.unwrap() };
    let access = get(server.url(&format!("/{CONTOSO}/discovery/v2.0/keys"))).await;
    let discovery = get(server.url("/notifications/v1/.well-known/openid-configuration")).await;
    assert_eq!(discovery["jwks_uri"], server.url("/notifications/v1/.well-known/keys"));
    let notification = get(server.url("/notifications/v1/.well-known/keys")).await;
    assert_ne!(access["keys"][0]["kid"], notification["keys"][0]["kid"]);
    assert_ne!(access["keys"][0]["n"], notification["keys"][0]["n"]);

    // A notification's token verifies with the notification keys only, and opens no Graph door.
    server.inbound(HEIDI, DEMO_BOT).await;
    let (post, _) = bot.next().await;
    let jwt = post.authorization.unwrap().strip_prefix("Bearer ").unwrap().to_owned();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let issuer = "https://api.botframework.com";
    assert!(switchboard::identity::validate_notification_token(&notification, issuer, DEMO_BOT, &jwt, now).is_ok());
    assert!(switchboard::identity::validate_notification_token(&access, issuer, DEMO_BOT, &jwt, now).is_err());
    let (status, body) = server.graph(Method::GET, "/v1.0/communications/calls", &jwt, None).await;
    assert_eq!(status, 401, "{body}");

    // Both keys are kept across a restart.
    server.restart().await;
    assert_eq!(get(server.url(&format!("/{CONTOSO}/discovery/v2.0/keys"))).await, access);
    assert_eq!(get(server.url("/notifications/v1/.well-known/keys")).await, notification);
}

#[tokio::test]
async fn an_app_without_calling_permissions_is_never_offered_a_call() {
    let bot = Bot::start().await;
    let server = Server::start(&bot).await;
    let (status, body) = server.sim(Method::POST, "/calls", Some(serde_json::json!({"from": HEIDI, "to": UNPRIVILEGED_BOT}))).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"]["message"],
        "Invalid request body: to: application 'Unprivileged Bot' holds none of the calling permissions, so it cannot be called"
    );
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let mut call = call_to_user(&bot.callback("u"), HEIDI);
    call["targets"] = serde_json::json!([{"identity": {"application": {"id": UNPRIVILEGED_BOT}}}]);
    let (status, body) = server.graph(Method::POST, "/v1.0/communications/calls", &token, Some(call)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"]["message"],
        "Invalid request body: targets[0].identity.application.id: application 'Unprivileged Bot' holds none of the calling permissions, so it cannot be called"
    );
}

/// One raw request and the status it must get (0: closed without an answer); `code` is the Graph
/// error code when the request reaches routing (the envelope), `None` when hyper refuses it first.
struct Raw {
    what: &'static str,
    request: Vec<u8>,
    status: u16,
    code: Option<&'static str>,
}

fn raw(what: &'static str, request: impl Into<Vec<u8>>, status: u16, code: Option<&'static str>) -> Raw {
    Raw { what, request: request.into(), status, code }
}

fn post_json(path: &str, token: &str, body: &[u8], extra: &str) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

#[tokio::test]
async fn hostile_http_gets_a_precise_4xx_and_never_a_5xx() {
    let bot = Bot::start().await;
    let server = Server::start(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let calls = "/v1.0/communications/calls";
    let valid = call_to_user(&bot.callback("h"), HEIDI).to_string();
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let chunked_huge = {
        let mut r = format!(
            "POST {calls} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        .into_bytes();
        for _ in 0..40 {
            r.extend_from_slice(format!("{:x}\r\n{}\r\n", 65_536, "a".repeat(65_536)).as_bytes());
        }
        r.extend_from_slice(b"0\r\n\r\n");
        r
    };
    let many_headers: String = (0..150).map(|i| format!("X-Flood-{i}: {i}\r\n")).collect();
    let cases = vec![
        raw("bad JSON", post_json(calls, &token, b"{not json", ""), 400, Some("BadRequest")),
        raw("a wrong type", post_json(calls, &token, br#"{"callbackUri": 42}"#, ""), 400, Some("BadRequest")),
        raw("invalid UTF-8 in the body", post_json(calls, &token, b"{\"subject\": \"\xff\xfe\"}", ""), 400, Some("BadRequest")),
        raw("100,000 levels of nesting", post_json(calls, &token, deep.as_bytes(), ""), 400, Some("BadRequest")),
        raw("a 2 MiB body", post_json(calls, &token, &vec![b' '; 2 << 20], ""), 413, Some("RequestEntityTooLarge")),
        raw("a 2.5 MiB chunked body", chunked_huge, 413, Some("RequestEntityTooLarge")),
        raw(
            "text/plain",
            format!(
                "POST {calls} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{valid}",
                valid.len()
            ),
            415,
            Some("UnsupportedMediaType"),
        ),
        raw(
            "a 10,000-character call id",
            format!("GET {calls}/{} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n", "a".repeat(10_000)),
            404,
            Some("8522"),
        ),
        raw(
            "two Authorization headers",
            format!(
                "GET {calls} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
            ),
            400,
            Some("BadRequest"),
        ),
        raw(
            "Content-Length and Transfer-Encoding both (smuggling)",
            post_json(calls, &token, b"0\r\n\r\n", "Transfer-Encoding: chunked\r\n"),
            400,
            None,
        ),
        raw(
            "two different Content-Lengths",
            format!("POST {calls} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\nConnection: close\r\n\r\n{{}}"),
            400,
            None,
        ),
        raw(
            "a bad chunk size",
            format!(
                "POST {calls} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n"
            ),
            400,
            Some("BadRequest"),
        ),
        raw("150 headers", format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many_headers}Connection: close\r\n\r\n"), 431, None),
        raw("a folded header", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\nConnection: close\r\n\r\n", 400, None),
        raw("a NUL in a header", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\nConnection: close\r\n\r\n", 400, None),
        // Over the 64 KiB head limit before the URI is even parsed.
        raw("a 100 KB URI", format!("GET /{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "a".repeat(100_000)), 431, None),
        raw(
            "an unknown method",
            format!("BREW {calls} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"),
            405,
            Some("MethodNotAllowed"),
        ),
        // Another protocol altogether: closed without an answer (status 0 here), as hyper does.
        raw("HTTP/2 preface on HTTP/1.1", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 0, None),
        raw("a request line of garbage (a TLS hello)", &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"[..], 400, None),
    ];
    for case in &cases {
        let mut stream = TcpStream::connect(host_port(&server)).await.unwrap();
        // A server may answer (and close) before the whole request is written: that is fine.
        let _ = stream.write_all(&case.request).await;
        let (text, _) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
        let status: u16 = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        assert_eq!(status, case.status, "{}: {}", case.what, &text[..text.len().min(300)]);
        if let Some(code) = case.code {
            assert!(text.contains(&format!("\"code\":\"{code}\"")), "{}: {}", case.what, &text[..text.len().min(400)]);
        }
    }
    let page = server.metrics().await;
    assert!(!page.contains("status=\"5"), "no 5xx: {page}");
    eprintln!("hostile HTTP: {} requests, each a precise 4xx, no 5xx", cases.len());
}

#[tokio::test]
async fn a_rotated_secret_works_beside_the_old_one_until_the_rollover_ends() {
    // The Demo Bot's secret was rotated; the old one is good for another hour of (virtual) time.
    let ends = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let ends = ends.format(&time::format_description::well_known::Rfc3339).unwrap();
    let toml = switchboard::config::EXAMPLE_TOML.replacen(
        &format!("secret = \"{SECRET}\"\n"),
        &format!("secret = \"rotated-secret\"\nprevious_secret = \"{SECRET}\"\nprevious_secret_expires = \"{ends}\"\n"),
        1,
    );
    let config = config_file(&toml);
    let server = Server::start_with(Options {
        demo_webhook: None,
        extra: vec!["--config".into(), config.display().to_string(), "--virtual-clock".into()],
    })
    .await;
    let grant = [("grant_type", "client_credentials"), ("scope", "https://graph.microsoft.com/.default")];
    let with = |secret: &'static str| {
        let mut form = grant.to_vec();
        form.extend([("client_id", DEMO_BOT), ("client_secret", secret)]);
        form
    };
    assert_eq!(token_request(&server, None, &with("rotated-secret")).await.0, 200);
    assert_eq!(token_request(&server, None, &with(SECRET)).await.0, 200, "the old secret during the rollover");
    assert_eq!(token_request(&server, None, &with("neither")).await.0, 401);
    // Past the end of the rollover, a replayed old secret is refused, and says why.
    server.advance(3_600_000 + 1_000).await;
    let (status, body) = token_request(&server, None, &with(SECRET)).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{body}");
    assert!(body["error_description"].as_str().unwrap().starts_with(&format!(
        "AADSTS7000222: The provided client secret keys for app '{DEMO_BOT}' are expired (the rotation ended at {ends})."
    )));
    assert_eq!(token_request(&server, None, &with("rotated-secret")).await.0, 200);
    let _ = std::fs::remove_file(config);
}

#[tokio::test]
async fn an_app_over_its_limits_gets_429s_and_is_served_again_when_it_slows_down() {
    let toml = switchboard::config::EXAMPLE_TOML.replacen("# max_requests_per_second = 50 ", "max_requests_per_second = 20 ", 1).replacen(
        "# max_concurrent_calls = 100 ",
        "max_concurrent_calls = 3 ",
        1,
    );
    assert!(toml.contains("\nmax_requests_per_second = 20 ") && toml.contains("\nmax_concurrent_calls = 3 "));
    let config = config_file(&toml);
    let bot = Bot::start().await;
    let server =
        Server::start_with(Options { demo_webhook: Some(bot.webhook()), extra: vec!["--config".into(), config.display().to_string()] })
            .await;
    let token = server.token(DEMO_BOT, CONTOSO).await;

    // A burst of 60 requests at once: about a second's allowance is served, the rest shed with 429.
    let burst = (0..60).map(|_| {
        let (http, url, token) = (server.http.clone(), server.url("/v1.0/communications/calls"), token.clone());
        tokio::spawn(async move {
            let resp = http.get(url).bearer_auth(token).send().await.unwrap();
            let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            (status, retry_after, body)
        })
    });
    let mut served = 0;
    let mut shed = 0;
    for r in burst {
        let (status, retry_after, body) = r.await.unwrap();
        match status {
            200 => served += 1,
            429 => {
                shed += 1;
                assert_eq!(retry_after.as_deref(), Some("1"));
                assert_eq!(body["error"]["code"], "TooManyRequests");
                assert!(body["error"]["message"].as_str().unwrap().contains("over its limit of 20 requests per second"));
            }
            other => panic!("{other}: {body}"),
        }
    }
    eprintln!("limits: a burst of 60 at 20/s: {served} served, {shed} shed");
    assert!((20..=30).contains(&served) && served + shed == 60, "{served} served, {shed} shed");
    // Another app is not affected; this one is served again a second later.
    let legacy = server.token(LEGACY_BOT, CONTOSO).await;
    assert_eq!(server.graph(Method::GET, "/beta/communications/calls", &legacy, None).await.0, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(server.graph(Method::GET, "/v1.0/communications/calls", &token, None).await.0, 200);

    // Its token requests count too: a burst of 30 at 20/s.
    let tokens = (0..30).map(|_| {
        let http = server.http.clone();
        let url = server.url(&format!("/{CONTOSO}/oauth2/v2.0/token"));
        tokio::spawn(async move {
            let form = [
                ("grant_type", "client_credentials"),
                ("client_id", DEMO_BOT),
                ("client_secret", SECRET),
                ("scope", "https://graph.microsoft.com/.default"),
            ];
            let resp = http.post(url).form(&form).send().await.unwrap();
            let retry_after = resp.headers().get("retry-after").is_some();
            (resp.status().as_u16(), retry_after, resp.json::<Value>().await.unwrap_or(Value::Null))
        })
    });
    let mut throttled = 0;
    for t in tokens {
        match t.await.unwrap() {
            (200, _, _) => {}
            (429, true, body) if body["error"] == "temporarily_unavailable" => throttled += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(throttled >= 5, "{throttled} token requests throttled");
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // Three live calls at most, even when ten are asked for at once.
    let creates = (0..10).map(|i| {
        let (http, url, token, body) = (
            server.http.clone(),
            server.url("/v1.0/communications/calls"),
            token.clone(),
            call_to_user(&bot.callback(&format!("l{i}")), HEIDI),
        );
        tokio::spawn(async move {
            let resp = http.post(url).bearer_auth(token).json(&body).send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap_or(Value::Null))
        })
    });
    let mut ids = Vec::new();
    for c in creates {
        match c.await.unwrap() {
            (201, call) => ids.push(call["id"].as_str().unwrap().to_owned()),
            (429, _) => {}
            (status, body) => panic!("{status}: {body}"),
        }
    }
    assert_eq!(ids.len(), 3, "ten at once, three made");
    let (status, body) =
        server.graph(Method::POST, "/v1.0/communications/calls", &token, Some(call_to_user(&bot.callback("l3"), HEIDI))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("TooManyRequests")), "{body}");
    assert_eq!(body["error"]["message"], "Application 'Demo Bot' has 3 live calls, its limit (max_concurrent_calls); end one first.");
    let (status, body) = server.sim(Method::POST, "/calls", Some(serde_json::json!({"from": ALEX, "to": DEMO_BOT}))).await;
    assert_eq!(status, 429, "an inbound call over the limit too: {body}");
    // Another bot's transfer to it finds it busy.
    let legacy = server.token(LEGACY_BOT, CONTOSO).await;
    let (status, call) =
        server.graph(Method::POST, "/beta/communications/calls", &legacy, Some(call_to_user(&bot.callback("x"), HEIDI))).await;
    assert_eq!(status, 201, "{call}");
    let other = format!("/beta/communications/calls/{}", call["id"].as_str().unwrap());
    let wait_for = |state: &'static str| {
        let (server, legacy, other) = (&server, legacy.clone(), other.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let (_, call) = server.graph(Method::GET, &other, &legacy, None).await;
                if call["state"] == state {
                    return call;
                }
                assert!(Instant::now() < deadline, "never {state}: {call}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_for("established").await;
    // (The Legacy Bot speaks the 2018 dialect: its transfer is an operation to read back.)
    let to_demo_bot = serde_json::json!({"transferTarget": {"identity": {"application": {"id": DEMO_BOT}}}});
    let resp = server.http.post(server.url(&format!("{other}/transfer"))).bearer_auth(&legacy).json(&to_demo_bot).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    let operation = resp.headers()["location"].to_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    let operation = loop {
        let op: Value = server.http.get(&operation).bearer_auth(&legacy).send().await.unwrap().json().await.unwrap();
        if op["status"] != "running" && op["status"] != "notStarted" {
            break op;
        }
        assert!(Instant::now() < deadline, "the transfer never ended: {op}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(operation["status"], "failed", "{operation}");
    let message = operation["resultInfo"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("The blind transfer failed: the transfer target is busy."), "{operation}");
    wait_for("established").await;
    // One ends; there is room again.
    assert_eq!(server.graph(Method::DELETE, &format!("/v1.0/communications/calls/{}", ids[0]), &token, None).await.0, 204);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) =
            server.graph(Method::POST, "/v1.0/communications/calls", &token, Some(call_to_user(&bot.callback("l4"), HEIDI))).await;
        if status == 201 {
            break;
        }
        assert!(status == 429 && Instant::now() < deadline, "{status}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let page = server.metrics().await;
    assert!(!page.contains("status=\"5"), "{page}");
    let _ = std::fs::remove_file(config);
}
