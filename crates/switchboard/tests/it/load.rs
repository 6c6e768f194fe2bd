//! `switchboard load`: synthetic callers into a bot, and the summary of what happened.

use serde_json::Value;

use crate::harness::*;

/// With the built-in bot standing in for the Demo Bot, every scenario of the mix happens, and the
/// summary adds up: each call offered is answered, refused or abandoned as its scenario says, every
/// transfer completes, every call ends, and nothing went wrong.
#[tokio::test]
async fn load_acts_out_the_mix_and_the_summary_adds_up() {
    let bot = format!("127.0.0.1:{}", free_port());
    let server = Server::start_with(Options { demo_webhook: Some(format!("http://{bot}/api/calls")), extra: vec![] }).await;
    let json = std::env::temp_dir().join(format!("switchboard-load-{}.json", uuid::Uuid::new_v4()));
    let args = [
        "load",
        "--url",
        &server.base,
        "--bot-listen",
        &bot,
        "--rate",
        "10",
        "--duration",
        "2",
        "--mix",
        "answer=1,busy=1,hangup=1,transfer=1",
        "--hold-ms",
        "300",
        "--abandon-ms",
        "100",
        "--json",
        json.to_str().unwrap(),
    ]
    .map(str::to_owned);
    let out = tokio::task::spawn_blocking(move || std::process::Command::new(env!("CARGO_BIN_EXE_switchboard")).args(args).output())
        .await
        .unwrap()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.starts_with("calls offered"), "{stdout}");
    assert!(stderr.contains("offered"), "progress lines: {stderr}");
    let s: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let sc = &s["scenarios"];
    let offered = n(&s["offered"]);
    assert!((15..=21).contains(&offered), "about 10 a second for 2 s: {s:#}");
    assert_eq!(n(&sc["answer"]) + n(&sc["busy"]) + n(&sc["hangup"]) + n(&sc["transfer"]), offered, "{s:#}");
    assert_eq!(n(&s["answered"]), n(&sc["answer"]) + n(&sc["transfer"]), "{s:#}");
    assert_eq!(n(&s["unanswered"]), n(&sc["busy"]), "{s:#}");
    assert_eq!(n(&s["abandoned"]), n(&sc["hangup"]), "{s:#}");
    assert_eq!((n(&s["transferred"]), n(&s["transfersFailed"])), (n(&sc["transfer"]), 0), "{s:#}");
    assert_eq!((n(&s["ended"]), n(&s["unfinished"])), (offered, 0), "{s:#}");
    assert_eq!(s["errors"], serde_json::json!({}), "{s:#}");
    assert_eq!(n(&s["botAnswerLatencyMs"]["count"]), n(&s["answered"]), "{s:#}");
    assert!(n(&s["notificationAckLatencyMs"]["count"]) >= offered, "{s:#}");
    // Every leg is gone at the end: transferred callers hung up with their targets.
    let (_, world) = server.sim(reqwest::Method::GET, "/world", None).await;
    assert_eq!(world, serde_json::json!({"legs": [], "calls": []}));
    let _ = std::fs::remove_file(&json);
}

/// Bad input is refused before a call is placed, naming the problem.
#[test]
fn load_refuses_bad_arguments_and_an_unreachable_server() {
    let run = |args: &[&str]| std::process::Command::new(env!("CARGO_BIN_EXE_switchboard")).arg("load").args(args).output().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["--mix", "answer=1,sing=2"], "'sing' is not a scenario"),
        (&["--rate", "5", "--concurrency", "3"], "cannot be used with"),
        (&["--duration", "0", "--url", "http://127.0.0.1:9"], "--duration must be"),
        (&["--url", "http://127.0.0.1:9", "--duration", "1"], "http://127.0.0.1:9 is unreachable"),
    ];
    for (args, says) in cases {
        let out = run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(says), "{args:?}: {stderr}");
    }
}
