//! Three nodes on one PostgreSQL database: any node serves any request about any call, the bot's
//! notifications are exactly those of one node, and a node killed with `kill -9` loses nothing: its
//! calls are adopted by the others within 10 s and carry on.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use switchboard_postgres::testing::Cluster;

use crate::group::{joined, participant_of, roster, s};
use crate::harness::*;
use crate::lifecycle::answer_body;
use crate::transfer::{by_call, completed_blind, completed_consultative, expect_transferred, placed, transfer};

/// HAProxy in front of the nodes, with the configuration the README documents (docs/haproxy.cfg),
/// its ports replaced by the test's.
struct Balancer {
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl Balancer {
    fn start(port: u16, nodes: &[u16]) -> Balancer {
        let documented = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/haproxy.cfg")).unwrap();
        let errorfile = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/haproxy-503.http");
        let mut cfg = documented.replace("127.0.0.1:8080", &format!("127.0.0.1:{port}")).replace("docs/haproxy-503.http", errorfile);
        for (i, p) in nodes.iter().enumerate() {
            cfg = cfg.replace(&format!("127.0.0.1:{}", 8081 + i), &format!("127.0.0.1:{p}"));
        }
        let dir = std::env::temp_dir().join(format!("switchboard-haproxy-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("haproxy.cfg"), cfg).unwrap();
        let child = std::process::Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(dir.join("haproxy.cfg"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("haproxy (Debian's haproxy package; scripts/test.sh installs it)");
        Balancer { child, dir }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Three nodes on the database `url`, and HAProxy in front of them: the nodes, then the balancer as
/// a server handle. Every node gives the balancer's address as its public URL, as in production.
async fn three_nodes(bot: &Bot, url: &str) -> (Vec<Server>, Server, Balancer) {
    let lb = free_port();
    let public = format!("http://127.0.0.1:{lb}");
    let mut nodes = Vec::new();
    let mut ports = Vec::new();
    for name in ["node-1", "node-2", "node-3"] {
        let port = free_port();
        let mut extra = vec!["--store", url, "--node-id", name, "--public-url", &public].into_iter().map(str::to_owned).collect::<Vec<_>>();
        extra.extend(long_ring_timeout());
        nodes.push(Server::start_at(Options { demo_webhook: Some(bot.webhook()), extra }, &format!("127.0.0.1:{port}")).await);
        ports.push(port);
    }
    let balancer = Balancer::start(lb, &ports);
    let front = Server::at(&public);
    // Up once every node passed its health checks: round robin then spreads requests over all three.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut answered = std::collections::HashSet::new();
        for _ in 0..6 {
            if let Ok(r) = client().get(front.url("/metrics")).send().await
                && let Ok(page) = r.text().await
                && let Some(line) = page.lines().find(|l| l.starts_with("switchboard_node{"))
            {
                answered.insert(line.to_owned());
            }
        }
        if answered.len() == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "HAProxy never had all three nodes up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (nodes, front, balancer)
}

/// A counter's value on one node now (0 if absent).
async fn counter(server: &Server, name: &str) -> u64 {
    metric(&server.metrics().await, name)
}

/// An inbound call that arrives on `arrives` and is answered through `answers`.
async fn answered_on(arrives: &Server, answers: &Server, bot: &mut Bot, token: &str, from: &str, to: &str) -> String {
    let id = arrives.inbound(from, to).await;
    assert_eq!(bot.next().await.1["changeType"], "created");
    let answer = Some(answer_body(&bot.callback(&id)));
    let (status, body) = answers.graph(Method::POST, &format!("/v1.0/communications/calls/{id}/answer"), token, answer).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "establishing"));
    assert_eq!(redact(bot.next().await.1, &id), established_note());
    id
}

#[tokio::test]
async fn three_nodes_serve_every_transfer_whichever_node_a_request_reaches() {
    let db = Cluster::start().await;
    let url = db.database("it_three_nodes").await;
    let mut bot = Bot::start().await;
    let (nodes, lb, _balancer) = three_nodes(&bot, &url).await;
    let [n1, n2, n3] = [&nodes[0], &nodes[1], &nodes[2]];

    // One signing key for all: a token from one node is good on the others, and they publish one JWKS.
    let token = n1.token(DEMO_BOT, CONTOSO).await;
    assert_eq!(n3.graph(Method::GET, "/v1.0/communications/calls", &token, None).await.0, 200);
    let keys = |s: &Server| {
        let url = s.url(&format!("/{CONTOSO}/discovery/v2.0/keys"));
        async move { client().get(url).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let jwks = keys(n1).await;
    assert_eq!(keys(n2).await, jwks);
    assert_eq!(keys(n3).await, jwks);
    let notification_keys = |s: &Server| {
        let url = s.url("/notifications/v1/.well-known/keys");
        async move { client().get(url).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let notification_jwks = notification_keys(n1).await;
    assert_ne!(notification_jwks, jwks, "notification tokens have a key of their own");
    assert_eq!(notification_keys(n2).await, notification_jwks);
    assert_eq!(notification_keys(n3).await, notification_jwks);

    // Blind: the call arrives on node 1, is answered through node 2, read through node 3 and
    // transferred through the balancer.
    let id = answered_on(n1, n2, &mut bot, &token, ALEX, DEMO_BOT).await;
    let (status, call) = n3.graph(Method::GET, &format!("/v1.0/communications/calls/{id}"), &token, None).await;
    assert_eq!((status, call["state"].clone()), (200, json!("established")));
    let body = json!({"transferTarget": {"endpointType": "default", "identity": {"user": {"id": HEIDI, "displayName": "Heidi Steen"}}}});
    assert_eq!(transfer(&lb, &token, &id, body).await.0, 202);
    expect_transferred(&mut bot, &id, completed_blind()).await;
    assert_eq!(n2.graph(Method::GET, &format!("/v1.0/communications/calls/{id}"), &token, None).await.0, 404);

    // Consultative, with the two calls on different nodes: the call with the caller on node 1, the
    // bot's call with the target placed through node 2, the transfer asked of node 3.
    let a = answered_on(n1, &lb, &mut bot, &token, ALEX, DEMO_BOT).await;
    let consult = call_to_user(&bot.callback("consult"), HEIDI);
    let b = placed(n2, &mut bot, &token, consult).await;
    let (_, listed) = lb.graph(Method::GET, "/v1.0/communications/calls", &token, None).await;
    let mut ids: Vec<&str> = listed["value"].as_array().unwrap().iter().filter_map(|c| c["id"].as_str()).collect();
    ids.sort();
    let mut want = [a.as_str(), b.as_str()];
    want.sort();
    assert_eq!(ids, want, "every node lists the calls of all");
    let body = json!({"transferTarget": {"endpointType": "default", "identity": {"user": {"id": HEIDI}}, "replacesCallId": b}});
    assert_eq!(transfer(n3, &token, &a, body).await.0, 202);
    let (for_a, for_b) = by_call(&mut bot, &a, 4, &b, 1).await;
    assert_eq!(
        for_a,
        [
            state_note("updated", "transferring"),
            state_note("updated", "transferAccepted"),
            crate::transfer::accepted_media_note(),
            completed_consultative()
        ]
    );
    let mut replaced = terminated_note(200, 7015, &format!("The call was handed over to call {a} by a consultative transfer."));
    replaced["resourceData"]["terminationReason"] = json!("AppTransferred");
    assert_eq!(for_b, [replaced]);
    // Node 1 owned the call with the caller, so node 2 handed the consultation call over to it.
    assert_eq!(counter(n1, "switchboard_calls_handed_over_total").await, 1);

    // PSTN: a call to the reception's number arrives on node 2, is answered through node 1 and
    // transferred through the balancer.
    let p = answered_on(n2, n1, &mut bot, &token, HEIDI, RECEPTION_PHONE).await;
    let body = json!({"transferTarget": {"endpointType": "default", "identity": {"phone": {"id": "+12345678901"}}}});
    assert_eq!(transfer(&lb, &token, &p, body).await.0, 202);
    expect_transferred(&mut bot, &p, completed_blind()).await;
    bot.expect_silence(Duration::from_millis(300)).await;

    // Group: placed through node 2 (which owns it), a member transferred through the balancer.
    let sam = json!({"kind": "answer", "after_ms": 100});
    assert_eq!(lb.sim(Method::PUT, &format!("/parties/{SILENT_SAM}/behaviour"), Some(sam)).await.0, 200);
    let g = joined(n2, &mut bot, &token, &[ALEX, SILENT_SAM]).await;
    let alex = participant_of(n3, &token, &g, ALEX).await;
    let body = json!({"transferTarget": {"identity": {"user": {"id": HEIDI}}}, "transferee": {"participantId": alex}});
    assert_eq!(transfer(&lb, &token, &g, body).await.0, 202);
    assert_eq!(redact(bot.next().await.1, &g), state_note("updated", "transferring"));
    assert_eq!(redact(bot.next().await.1, &g), state_note("updated", "transferAccepted"));
    let mut back = state_note("updated", "established");
    back["resourceData"]["resultInfo"] =
        json!({"@odata.type": "#microsoft.graph.resultInfo", "code": 0, "subcode": 7015, "message": "GracefulTransferCompleted"});
    assert_eq!(redact(bot.next().await.1, &g), back);
    assert_eq!(roster(&bot.next().await.1, &g), s(&[DEMO_BOT, SILENT_SAM]));
    assert_eq!(n1.graph(Method::DELETE, &format!("/v1.0/communications/calls/{g}"), &token, None).await.0, 204);
    assert_eq!(redact(bot.next().await.1, &g), state_note("updated", "terminating"));
    assert_eq!(bot.next().await.1["changeType"], "deleted");
    bot.expect_silence(Duration::from_millis(300)).await;

    // Nodes hand calls over only to each other: without the cluster key, a hand-over is refused.
    let refused =
        client().post(n1.url(&format!("/cluster/v1/calls/{id}/release"))).header("switchboard-release-to", "node-2").send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 403);

    let mut total = 0;
    for n in [n1, n2, n3] {
        total += counter(n, "switchboard_requests_forwarded_total").await;
        assert!(n.metrics().await.contains("switchboard_calls_owned 0"), "no call is left behind");
    }
    assert!(total >= 4, "requests were carried out by the calls' owners: {total} forwarded");
}

/// Every item the bot received, by call id, in arrival order, each notification once (by its id).
fn by_call_id(posts: &[Received]) -> HashMap<String, Vec<Value>> {
    let mut seen = std::collections::HashSet::new();
    let mut calls: HashMap<String, Vec<Value>> = HashMap::new();
    for post in posts {
        let ids: Vec<&str> = post.notification_ids.as_deref().unwrap_or_default().split(',').collect();
        for (i, item) in post.body["value"].as_array().cloned().unwrap_or_default().into_iter().enumerate() {
            if !seen.insert(ids.get(i).copied().unwrap_or_default().to_owned()) {
                continue; // a resend: at least once
            }
            let url = item["resourceUrl"].as_str().unwrap_or_default();
            let id = url.rsplit('/').next().unwrap_or_default().to_owned();
            calls.entry(id).or_default().push(item);
        }
    }
    calls
}

fn states(items: &[Value]) -> Vec<String> {
    items.iter().map(|i| i["resourceData"]["state"].as_str().unwrap_or_default().to_owned()).collect()
}

/// How many of `ids` are still live calls.
async fn alive(node: &Server, token: &str, ids: &[String]) -> usize {
    let mut alive = 0;
    for id in ids {
        alive += usize::from(node.graph(Method::GET, &format!("/v1.0/communications/calls/{id}"), token, None).await.0 == 200);
    }
    alive
}

#[tokio::test]
async fn kill_9_under_load_loses_nothing_and_the_calls_are_adopted_within_10_s() {
    const ROUNDS: usize = 3;
    const CALLS: usize = 8;
    let db = Cluster::start().await;
    let url = db.database("it_kill_nodes").await;
    let mut bot = Bot::start().await;
    let (mut nodes, lb, _balancer) = three_nodes(&bot, &url).await;
    let token = lb.token(DEMO_BOT, CONTOSO).await;
    // The transfer target answers after a second, so that transfers are in flight at the kill; every
    // node's sim learns it.
    let slow = json!({"kind": "answer", "after_ms": 1000});
    assert_eq!(lb.sim(Method::PUT, &format!("/parties/{HEIDI}/behaviour"), Some(slow)).await.0, 200);

    let (mut kills, mut calls, mut adopted_total, mut slowest) = (0, 0, 0u64, Duration::ZERO);
    let mut all: Vec<String> = Vec::new();
    for round in 0..ROUNDS {
        let victim = round % 3;
        let others: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
        // Calls arrive on the victim and are answered through the balancer.
        let mut ids = Vec::new();
        for _ in 0..CALLS {
            let id = nodes[victim].inbound(ALEX, DEMO_BOT).await;
            let answer = Some(answer_body(&bot.callback(&id)));
            let (status, body) = lb.graph(Method::POST, &format!("/v1.0/communications/calls/{id}/answer"), &token, answer).await;
            assert_eq!(status, 202, "{body}");
            ids.push(id);
        }
        // Wait until every call is established, then transfer half of them and kill the owner at once.
        for id in &ids {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let (_, call) = lb.graph(Method::GET, &format!("/v1.0/communications/calls/{id}"), &token, None).await;
                if call["state"] == "established" {
                    break;
                }
                assert!(Instant::now() < deadline, "call {id} never got established: {call}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let target = json!({"transferTarget": {"identity": {"user": {"id": HEIDI}}}});
        for id in ids.iter().step_by(2) {
            assert_eq!(transfer(&lb, &token, id, target.clone()).await.0, 202);
        }
        let before: u64 = counter(&nodes[others[0]], "switchboard_leases_taken_over_total").await
            + counter(&nodes[others[1]], "switchboard_leases_taken_over_total").await;
        let killed_at = Instant::now();
        nodes[victim].kill9();
        kills += 1;
        // The others adopt every call that was still alive (the in-flight transfers may have ended some).
        loop {
            let adopted = counter(&nodes[others[0]], "switchboard_leases_taken_over_total").await
                + counter(&nodes[others[1]], "switchboard_leases_taken_over_total").await
                - before;
            if adopted > 0 {
                adopted_total += adopted;
                break;
            }
            assert!(killed_at.elapsed() < Duration::from_secs(10), "the dead node's calls were not adopted within 10 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        slowest = slowest.max(killed_at.elapsed());
        // The other half is transferred after the kill, through the balancer.
        for id in ids.iter().skip(1).step_by(2) {
            let (status, body) = transfer(&lb, &token, id, target.clone()).await;
            assert_eq!(status, 202, "transfer of {id} after the kill: {body}");
        }
        // Every call ends, transferred.
        let deadline = Instant::now() + Duration::from_secs(20);
        while alive(&lb, &token, &ids).await > 0 {
            assert!(Instant::now() < deadline, "calls still alive 20 s after the kill");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        calls += ids.len();
        all.extend(ids);
        nodes[victim].restart().await;
    }
    // Every call's notifications arrived once each, in order: created, establishing, established,
    // transferring, transferAccepted (twice), terminated; the transfer reached exactly one outcome.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Some(item) = bot.next_within(Duration::from_millis(300)).await {
        let _ = item;
    }
    let received = by_call_id(&bot.posts);
    let mut lost = 0;
    for id in &all {
        let items = received.get(id).cloned().unwrap_or_default();
        let want = ["incoming", "establishing", "established", "transferring", "transferAccepted", "transferAccepted", "terminated"];
        if states(&items) != want {
            lost += 1;
            eprintln!("call {id}: {:?}", states(&items));
        }
        assert_eq!(items.last().map(|i| i["changeType"].clone()), Some(json!("deleted")), "call {id}");
        assert_eq!(items.last().map(|i| i["resourceData"]["resultInfo"]["subcode"].clone()), Some(json!(7015)), "call {id}");
    }
    println!(
        "cluster kill -9: kills={kills} calls={calls} adopted={adopted_total} lost={lost} slowest_adoption_ms={}",
        slowest.as_millis()
    );
    assert_eq!(lost, 0);
}

/// The database goes away for longer than a lease under three nodes: requests fail fast with a Graph
/// 503 (from a node, or from HAProxy once no node is ready), nothing committed is lost, and no call
/// changes hands for it: every node's lease ran out in the database's time, but nobody adopts until
/// the others had a chance to renew.
#[tokio::test]
async fn a_database_restart_under_three_nodes_costs_503s_and_moves_no_call() {
    let db = Cluster::start().await;
    let url = db.database("it_cluster_db_restart").await;
    let mut bot = Bot::start().await;
    let (nodes, lb, _balancer) = three_nodes(&bot, &url).await;
    let token = lb.token(DEMO_BOT, CONTOSO).await;
    let mut ids = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        ids.push(answered_on(n, &nodes[(i + 1) % 3], &mut bot, &token, ALEX, DEMO_BOT).await);
    }

    db.down();
    let started = Instant::now();
    let body = json!({"transferTarget": {"identity": {"user": {"id": HEIDI}}}});
    let (status, err) = transfer(&lb, &token, &ids[0], body.clone()).await;
    assert_eq!((status, err["error"]["code"].as_str()), (503, Some("ServiceUnavailable")), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "it failed fast: {:?}", started.elapsed());
    // Longer than a lease.
    tokio::time::sleep(Duration::from_millis(switchboard_engine::cluster::LEASE_MS + 1_000)).await;
    db.up();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _) = lb.graph(Method::GET, &format!("/v1.0/communications/calls/{}", ids[0]), &token, None).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "not serving again 15 s after the database came back: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Past the adoption grace: still nobody took anybody's calls.
    tokio::time::sleep(Duration::from_millis(switchboard_engine::cluster::LEASE_MS + 2_000)).await;
    for n in &nodes {
        assert_eq!(counter(n, "switchboard_leases_taken_over_total").await, 0, "no call moved for a database restart");
        assert!(n.metrics().await.contains("switchboard_calls_owned 1"), "each node still owns its call");
    }
    for id in &ids {
        assert_eq!(transfer(&lb, &token, id, body.clone()).await.0, 202);
    }
    // Every call is transferred as on one node, and nothing else arrives.
    let mut per_call: HashMap<String, Vec<Value>> = HashMap::new();
    while per_call.values().filter(|v| v.len() >= 4).count() < ids.len() {
        let (_, item) = bot.next().await;
        let id = item["resourceUrl"].as_str().unwrap_or_default().rsplit('/').next().unwrap_or_default().to_owned();
        per_call.entry(id.clone()).or_default().push(redact(item, &id));
    }
    let want = [
        state_note("updated", "transferring"),
        state_note("updated", "transferAccepted"),
        crate::transfer::accepted_media_note(),
        completed_blind(),
    ];
    for id in &ids {
        assert_eq!(per_call[id], want, "call {id}");
    }
    bot.expect_silence(Duration::from_millis(300)).await;
}
