//! The server on PostgreSQL (`--store postgres://…`), against a throwaway cluster of its own: the
//! same calls, transfers and notifications, and the same durability across `kill -9`.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use switchboard_postgres::testing::Cluster;

use crate::harness::*;
use crate::lifecycle::answer_body;

#[tokio::test]
async fn a_transfer_on_postgres_survives_kill_9() {
    let cluster = Cluster::start().await;
    let url = cluster.database("it_transfer").await;
    let mut bot = Bot::start().await;
    let mut extra = vec!["--store".to_owned(), url.clone()];
    extra.extend(long_ring_timeout());
    let mut server = Server::start_with(Options { demo_webhook: Some(bot.webhook()), extra }).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    // Heidi would answer only after 10 s before the restart, so the target still rings at the kill.
    let slow = json!({"kind": "answer", "after_ms": 10_000});
    assert_eq!(server.sim(Method::PUT, &format!("/parties/{HEIDI}/behaviour"), Some(slow)).await.0, 200);
    let id = server.inbound(ALEX, DEMO_BOT).await;
    assert_eq!(bot.next().await.1["changeType"], "created");
    let answer = Some(answer_body(&bot.callback(&id)));
    assert_eq!(server.graph(Method::POST, &format!("/v1.0/communications/calls/{id}/answer"), &token, answer).await.0, 202);
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "establishing"));
    assert_eq!(redact(bot.next().await.1, &id), established_note());
    let body = json!({"transferTarget": {"identity": {"user": {"id": HEIDI}}}});
    let (status, _) = server.graph(Method::POST, &format!("/v1.0/communications/calls/{id}/transfer"), &token, Some(body)).await;
    assert_eq!(status, 202);
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "transferring"));
    server.settled().await;
    server.kill9();
    server.restart().await;
    // The call came back from PostgreSQL, and the transfer reaches its one outcome.
    let mut accepted = state_note("updated", "transferAccepted");
    assert_eq!(redact(bot.next().await.1, &id), accepted.clone());
    accepted["resourceData"]["mediaState"] = json!({"@odata.type": "#microsoft.graph.callMediaState", "audio": "inactive"});
    assert_eq!(redact(bot.next().await.1, &id), accepted);
    assert_eq!(redact(bot.next().await.1, &id), terminated_note(0, 7015, "GracefulTransferCompleted"));
    bot.expect_silence(Duration::from_millis(300)).await;

    // `switchboard migrate` finds nothing left to do on a database the server migrated.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard")).args(["migrate", "--store", &url]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "schema up to date; applied now: []");
}

#[tokio::test]
async fn a_store_that_cannot_be_reached_is_named_and_the_server_does_not_start() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("postgres://switchboard:secret@127.0.0.1:{port}/nowhere");
    let dir = std::env::temp_dir().join(format!("switchboard-pg-down-{}", uuid::Uuid::new_v4()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--listen", "127.0.0.1:0", "--store", &url, "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("postgres://switchboard@127.0.0.1:{port}/nowhere")) && !stderr.contains("secret"), "{stderr}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--listen", "127.0.0.1:0", "--store", "mysql://x", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("store: 'mysql://x' is not a postgres:// URL"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The database goes away and comes back: meanwhile `/readyz` says not ready and a command that must
/// be stored fails at once with a Graph 503, changing nothing; afterwards the server reconnects by
/// itself, and what was committed before is all there.
#[tokio::test]
async fn a_database_restart_costs_503s_while_it_lasts_and_nothing_committed() {
    let cluster = Cluster::start().await;
    let url = cluster.database("it_restart").await;
    let mut bot = Bot::start().await;
    let mut extra = vec!["--store".to_owned(), url];
    extra.extend(long_ring_timeout());
    let server = Server::start_with(Options { demo_webhook: Some(bot.webhook()), extra }).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let id = server.inbound(ALEX, DEMO_BOT).await;
    assert_eq!(bot.next().await.1["changeType"], "created");
    server.settled().await;
    let ready = || async { server.http.get(server.url("/readyz")).send().await.unwrap().status().as_u16() };
    assert_eq!(ready().await, 200);

    cluster.down();
    assert_eq!(ready().await, 503);
    let started = std::time::Instant::now();
    let answer = || answer_body(&bot.callback(&id));
    let (status, err) = server.graph(Method::POST, &format!("/v1.0/communications/calls/{id}/answer"), &token, Some(answer())).await;
    assert_eq!((status, err["error"]["code"].as_str()), (503, Some("ServiceUnavailable")), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "it failed fast: {:?}", started.elapsed());
    let (_, call) = server.graph(Method::GET, &format!("/v1.0/communications/calls/{id}"), &token, None).await;
    assert_eq!(call["state"], "incoming", "the refused answer changed nothing");

    cluster.up();
    for _ in 0..100 {
        if ready().await == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ready().await, 200, "ready again once the database is back");
    assert_eq!(server.graph(Method::POST, &format!("/v1.0/communications/calls/{id}/answer"), &token, Some(answer())).await.0, 202);
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "establishing"));
    assert_eq!(redact(bot.next().await.1, &id), established_note());
    let metrics = server.metrics().await;
    assert!(!metrics.contains("status=\"500\""), "{metrics}");
}
