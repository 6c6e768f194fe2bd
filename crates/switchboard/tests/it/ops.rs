//! Health, readiness, metrics and the OpenAPI document, which must describe exactly what is served.

use reqwest::Method;
use serde_json::Value;
use switchboard::api::spec::{Auth, ROUTES};

use crate::harness::*;

#[tokio::test]
async fn health_readiness_and_metrics() {
    let server = Server::start_with(Options { demo_webhook: None, extra: vec![] }).await;
    for path in ["/healthz", "/readyz"] {
        assert_eq!(server.http.get(server.url(path)).send().await.unwrap().status(), 200, "{path}");
    }
    let metrics = server.metrics().await;
    for name in [
        "switchboard_http_requests_total{family=\"ops\",status=\"200\"}",
        "switchboard_calls{state=\"established\"} 0",
        "switchboard_notifications_delivered_total 0",
        "switchboard_notifications_failed_total 0",
    ] {
        assert!(metrics.contains(name), "{name} in {metrics}");
    }
}

/// Every route of the OpenAPI table is served: a request shaped like the table's answers with one of
/// the statuses the table lists, never the router's fallback. The same table dispatches, so a row
/// whose handler is missing answers 501 `NotServed` and fails here.
#[tokio::test]
async fn every_documented_route_is_served() {
    let bot = Bot::start().await;
    let server = Server::start(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let doc: Value = server.http.get(server.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for route in ROUTES {
        assert!(doc["paths"][route.path][route.method].is_object(), "{} {} is in the document", route.method, route.path);
        // A live call of its own for every route, so that no route finds it hung up by an earlier one.
        let id = server.inbound(HEIDI, DEMO_BOT).await;
        let path = route
            .path
            .replace("{version}", "v1.0")
            .replace("{tenant}", CONTOSO)
            .replace("{id}", &id)
            .replace("{callId}", &id)
            .replace("{opId}", "no-such-op")
            .replace("{participantId}", "no-such-participant")
            .replace("{legId}", "no-such-leg")
            .replace("{key}", HEIDI);
        let method = Method::from_bytes(route.method.to_uppercase().as_bytes()).unwrap();
        let mut req = server.http.request(method, server.url(&path));
        req = match route.auth {
            Auth::Bearer => req.bearer_auth(&token),
            Auth::AdminKey => req.header("X-Sim-Admin-Key", ADMIN_KEY),
            Auth::None => req,
        };
        if route.method != "get" && route.method != "delete" {
            req = match route.body.map(|b| b.0) {
                Some("application/x-www-form-urlencoded") => req.form(&[("grant_type", "client_credentials")]),
                Some(_) => req.json(&serde_json::json!({})),
                None => req,
            };
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(
            route.responses.iter().any(|r| r.status == status) || [400, 401, 403].contains(&status),
            "{} {path} answered {status}, which the document does not list: {body}",
            route.method
        );
        // A listed 404 must be the route's own (no such call, leg, …), not the router's.
        let (code, message) = (body["error"]["code"].as_str().unwrap_or_default(), body["error"]["message"].as_str().unwrap_or_default());
        assert!(
            code != "UnknownSegment" && code != "NotServed" && !message.starts_with("No such endpoint"),
            "{} {path} is documented but not served: {body}",
            route.method
        );
    }
}

#[tokio::test]
async fn https_with_a_generated_certificate() {
    let server = Server::start_with(Options { demo_webhook: None, extra: vec!["--tls".into()] }).await;
    assert!(server.base.starts_with("https://127.0.0.1:"), "{}", server.base);
    let pem = std::fs::read(server.data_dir.join("tls/cert.pem")).expect("the generated certificate");
    let cert = reqwest::Certificate::from_pem(&pem).expect("PEM");
    let client = reqwest::Client::builder().tls_certs_only([cert]).build().expect("client");
    let resp = client
        .post(server.url(&format!("/{CONTOSO}/oauth2/v2.0/token")))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", DEMO_BOT),
            ("client_secret", SECRET),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .expect("token over https");
    assert_eq!(resp.status(), 200);
    let config: Value =
        client.get(server.url(&format!("/{CONTOSO}/v2.0/.well-known/openid-configuration"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(config["token_endpoint"], format!("{}/{CONTOSO}/oauth2/v2.0/token", server.base));
}

#[test]
fn a_bad_config_file_is_refused_with_file_field_and_problem() {
    let dir = std::env::temp_dir().join(format!("switchboard-cfg-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad_guid = switchboard::config::EXAMPLE_TOML.replacen("id = \"aaaaaaaa-0000-4000-8000-000000000001\"", "id = \"not-a-guid\"", 1);
    let cases = [("colour = \"blue\"\n".to_owned(), "line 1, column 1"), (bad_guid, "tenants[0].id")];
    for (i, (toml, field)) in cases.iter().enumerate() {
        let path = dir.join(format!("bad{i}.toml"));
        std::fs::write(&path, toml).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.join("data"))
            .arg("--config")
            .arg(&path)
            .output()
            .expect("runs");
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&path.display().to_string()) && stderr.contains(field), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The OpenAPI document is checked in (`docs/openapi.json`), so that every API change shows in review.
/// `SWITCHBOARD_UPDATE_SNAPSHOTS=1` rewrites it.
#[tokio::test]
async fn the_openapi_document_matches_its_checked_in_snapshot() {
    let server = Server::start_with(Options { demo_webhook: None, extra: vec![] }).await;
    let mut doc: Value = server.http.get(server.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    doc["servers"] = serde_json::json!([{"url": "http://127.0.0.1:8080"}]);
    let got = serde_json::to_string_pretty(&doc).unwrap() + "\n";
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    if std::env::var_os("SWITCHBOARD_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        got == want,
        "/openapi.json differs from docs/openapi.json; review the change and run with SWITCHBOARD_UPDATE_SNAPSHOTS=1 to accept it"
    );
}

#[tokio::test]
async fn the_node_is_named_in_metrics_and_a_bad_name_is_refused() {
    let server = Server::start_with(Options { demo_webhook: None, extra: vec!["--node-id".into(), "node-7".into()] }).await;
    assert!(server.metrics().await.contains("switchboard_node{node=\"node-7\"} 1"));
    let server = Server::start_with(Options { demo_webhook: None, extra: vec![] }).await;
    let port = server.base.rsplit(':').next().unwrap().to_owned();
    let metrics = server.metrics().await;
    assert!(
        metrics.lines().any(|l| l.starts_with("switchboard_node{node=\"") && l.ends_with(&format!(":{port}\"}} 1"))),
        "host name and port by default: {metrics}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--listen", "127.0.0.1:0", "--node-id", "two words"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("node_id: 'two words' must be 1 to 64 letters"), "{stderr}");
}

/// Every demo app's webhook has its flag; the flag's value is checked like the config file's.
#[test]
fn each_demo_apps_webhook_has_a_flag() {
    for (flag, app) in [("--demo-webhook", 0), ("--unprivileged-webhook", 1), ("--legacy-webhook", 2)] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["serve", "--listen", "127.0.0.1:0", flag, "ftp://example.com/cb"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&format!("applications[{app}].calling_webhook: 'ftp://example.com/cb'")), "{flag}: {stderr}");
    }
}

/// `/metrics` counts transfers by kind and outcome (a failure by its code) and how long bots take to
/// answer.
#[tokio::test]
async fn metrics_count_transfers_and_bot_answer_latency() {
    let mut bot = Bot::start().await;
    let server = virtual_server(&bot, &[]).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    // Answered 700 ms after the offer.
    let id = server.inbound(ALEX, DEMO_BOT).await;
    bot.next().await;
    server.advance(700).await;
    let body = crate::lifecycle::answer_body(&bot.callback(&id));
    assert_eq!(server.graph(reqwest::Method::POST, &format!("/v1.0/communications/calls/{id}/answer"), &token, Some(body)).await.0, 202);
    bot.take(2).await;
    // A blind transfer to a busy target fails (500/7000), then one to Heidi completes.
    let to = |who: &str| serde_json::json!({"transferTarget": {"identity": {"user": {"id": who}}}});
    assert_eq!(crate::transfer::transfer(&server, &token, &id, to(BUSY_BOB)).await.0, 202);
    server.advance(100).await;
    bot.take(2).await;
    assert_eq!(crate::transfer::transfer(&server, &token, &id, to(HEIDI)).await.0, 202);
    server.advance(300).await;
    bot.take(4).await;
    let page = server.metrics().await;
    let line = |l: &str| page.lines().any(|x| x == l);
    assert!(line(r#"switchboard_transfers_total{kind="blind",outcome="started",reason=""} 2"#), "{page}");
    assert!(line(r#"switchboard_transfers_total{kind="blind",outcome="failed",reason="500/7000"} 1"#), "{page}");
    assert!(line(r#"switchboard_transfers_total{kind="blind",outcome="completed",reason=""} 1"#), "{page}");
    assert!(line(r#"switchboard_bot_answer_latency_ms_bucket{le="500"} 0"#), "{page}");
    assert!(line(r#"switchboard_bot_answer_latency_ms_bucket{le="1000"} 1"#), "{page}");
    assert!(line("switchboard_bot_answer_latency_ms_sum 700"), "{page}");
    assert!(line("switchboard_bot_answer_latency_ms_count 1"), "{page}");
    // The call's story names the failed transfer's code where the call went back to established.
    let (_, story) = server.sim(reqwest::Method::GET, &format!("/calls/{id}/history"), None).await;
    let back: Vec<&Value> =
        story["entries"].as_array().unwrap().iter().filter(|e| e["kind"] == "state" && e["from"] == "transferring").collect();
    assert_eq!(back[0]["to"], "established", "{story:#}");
    assert_eq!(back[0]["result"], "500/7000", "{story:#}");
}

/// `switchboard directory` prints whom a bot can call and how each answers; a bad config file is
/// named, with every problem in it.
#[test]
fn the_directory_command_lists_users_and_numbers() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard")).arg("directory").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l.starts_with("user \"Busy Bob\":") && l.contains(BUSY_BOB) && l.contains("busy (486)")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("PSTN +12345678901:") && l.contains("answers after 200 ms")), "{text}");
    let bad = config_file("node_id = \"has spaces\"\nnode_url = \"ftp://x\"\n[sim]\nadmin_key = \"\"\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard")).args(["directory", "--config"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for field in ["node_id", "node_url", "sim.admin_key"] {
        assert!(err.contains(&format!(": {field}: ")), "{field} named in:\n{err}");
    }
}
