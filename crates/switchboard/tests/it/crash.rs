//! Crash safety under load (issue 15): calls and transfers, some failing and some racing hang-ups,
//! while the server is killed with `kill -9` at seeded random moments (every fifth stop is a SIGTERM
//! instead). At the end: every 2xx took effect, every transfer reached exactly one outcome, every
//! notification owed reached the bot at least once and in per-call order, and no call is left
//! half-way. `SWITCHBOARD_CRASH_SEED` replays a run; `SWITCHBOARD_CRASH_KILLS` (default 20) sets its
//! length (the soak mode is a large one).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

use crate::harness::*;

/// What the driver was told about one call.
#[derive(Default, Debug)]
struct Tracked {
    /// A 202 for a transfer, and to whom.
    transferred: Option<&'static str>,
    /// A 2xx for a hang-up.
    hung_up: bool,
}

/// What the bot received about one call: each item's stable id and state, in order of arrival.
type Received = Vec<(i64, String)>;

/// The states a call may go to next, as the bot sees them (consecutive repeats removed).
fn may_follow(from: &str, to: &str) -> bool {
    matches!(
        (from, to),
        ("establishing", "established" | "terminating" | "terminated")
            | ("established", "transferring" | "terminating" | "terminated")
            | ("transferring", "transferAccepted" | "established" | "terminating" | "terminated")
            | ("transferAccepted", "terminating" | "terminated")
            | ("terminating", "terminated")
    )
}

async fn drain(bot: &mut Bot, seen: &mut HashMap<String, Received>, wait: Duration) -> usize {
    let mut n = 0;
    while let Some(post) = bot.next_post_within(wait).await {
        let items = post.body["value"].as_array().cloned().unwrap_or_default();
        let ids: Vec<i64> = post.notification_ids.as_deref().unwrap_or_default().split(',').filter_map(|s| s.trim().parse().ok()).collect();
        assert_eq!(ids.len(), items.len(), "one id per item: {:?}", post.notification_ids);
        for (id, item) in ids.into_iter().zip(items) {
            let call = item["resourceUrl"].as_str().unwrap_or_default().rsplit('/').next().unwrap_or_default().to_owned();
            let state = item["resourceData"]["state"].as_str().unwrap_or_default().to_owned();
            seen.entry(call).or_default().push((id, state));
            n += 1;
        }
    }
    n
}

#[tokio::test]
async fn kill_9_at_random_moments_loses_no_outcome_and_no_notification() {
    let seed: u64 = std::env::var("SWITCHBOARD_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| fastrand::u64(..));
    let kills: usize = std::env::var("SWITCHBOARD_CRASH_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    eprintln!("crash test: seed {seed} (SWITCHBOARD_CRASH_SEED={seed} replays it), {kills} stops");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut bot = Bot::start().await;
    let mut server = patient_server(&bot).await;
    let mut token = server.token(DEMO_BOT, CONTOSO).await;
    let mut calls: BTreeMap<String, Tracked> = BTreeMap::new();
    let mut seen: HashMap<String, Received> = HashMap::new();
    let (mut sigterms, mut requests, mut unanswered) = (0, 0, 0);
    let targets = [("Heidi", HEIDI), ("Busy Bob", BUSY_BOB), ("Declining Dana", DECLINING_DANA)];

    for round in 0..kills {
        // Calls established by now may be transferred (some hung up at once, racing the transfer);
        // new calls are placed. All at once, and the server dies somewhere in the middle.
        let established: Vec<String> = calls
            .iter()
            .filter(|(id, t)| {
                t.transferred.is_none() && !t.hung_up && seen.get(*id).is_some_and(|r| r.iter().any(|(_, s)| s == "established"))
            })
            .map(|(id, _)| id.clone())
            .collect();
        let mut tasks = Vec::new();
        // Requests go out spread over 150 ms; the stop lands somewhere in them.
        for i in 0..6 {
            let (http, url, token) = (server.http.clone(), server.url("/v1.0/communications/calls"), token.clone());
            let body = call_to_user(&bot.callback(&format!("r{round}c{i}")), ALEX);
            let delay = Duration::from_millis(rng.u64(0..150));
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let resp = http.post(url).bearer_auth(token).json(&body).send().await.ok()?;
                let status = u32::from(resp.status().as_u16());
                let body: Value = resp.json().await.ok()?;
                Some(("create", body["id"].as_str().map(str::to_owned).unwrap_or_default(), status, ""))
            }));
        }
        for id in established.iter().take(6) {
            let (name, target) = targets[rng.usize(..targets.len())];
            let race = rng.bool();
            let (http, base, token, id) = (server.http.clone(), server.url("/v1.0/communications/calls"), token.clone(), id.clone());
            let delay = Duration::from_millis(rng.u64(0..150));
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let body = serde_json::json!({"transferTarget": {"identity": {"user": {"id": target}}}});
                let resp = http.post(format!("{base}/{id}/transfer")).bearer_auth(&token).json(&body).send().await.ok()?;
                let status = u32::from(resp.status().as_u16());
                if race {
                    let hang = http.delete(format!("{base}/{id}")).bearer_auth(&token).send().await.ok();
                    let hung = hang.map(|r| u32::from(r.status().as_u16())).unwrap_or(0);
                    // Both outcomes are reported; the hang-up's in the second slot.
                    return Some(("transfer+hangup", id, status * 1000 + hung, name));
                }
                Some(("transfer", id, status * 1000, name))
            }));
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(20..160))).await;
        let graceful = round % 5 == 4;
        if graceful {
            sigterms += 1;
            server.terminate();
        } else {
            server.kill9();
        }
        for t in tasks {
            requests += 1;
            let Some((what, id, status, name)) = t.await.unwrap() else {
                unanswered += 1;
                continue;
            };
            let tracked = calls.entry(id.clone()).or_default();
            match what {
                "create" if status == 201 => {}
                "create" => {
                    calls.remove(&id);
                }
                _ => {
                    let (transfer, hang_up) = (status / 1000, status % 1000);
                    if transfer == 202 {
                        tracked.transferred = Some(name);
                    }
                    if (200..300).contains(&hang_up) {
                        tracked.hung_up = true;
                    }
                }
            }
        }
        calls.remove("");
        server.restart().await;
        token = server.token(DEMO_BOT, CONTOSO).await;
        drain(&mut bot, &mut seen, Duration::from_millis(200)).await;
    }

    // Let everything owed arrive: the outbox empties and the bot hears nothing more for a second.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        drain(&mut bot, &mut seen, Duration::from_millis(1000)).await;
        let (_, pending) = server.sim(Method::GET, "/outbox?status=pending", None).await;
        let (_, failed) = server.sim(Method::GET, "/outbox?status=failed", None).await;
        let left = pending["value"].as_array().map_or(0, Vec::len) + failed["value"].as_array().map_or(0, Vec::len);
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{left} notifications never delivered: {pending} {failed}");
    }

    let (mut owed, mut delivered, mut duplicated, mut outcomes) = (0, 0, 0, [0usize; 3]);
    for (id, tracked) in &calls {
        let received = seen.get(id).cloned().unwrap_or_default();
        // In per-call order: each id's first arrival comes after the one before it.
        let mut firsts: Vec<i64> = Vec::new();
        let mut distinct = HashSet::new();
        for (n, _) in &received {
            if distinct.insert(*n) {
                firsts.push(*n);
            }
        }
        assert!(firsts.windows(2).all(|w| w[0] < w[1]), "call {id}: out of order {received:?} (seed {seed})");
        owed += distinct.len();
        delivered += distinct.len();
        duplicated += received.len() - distinct.len();
        // Every step there: the states, repeats removed, walk the call's edges from the first.
        let mut states: Vec<&str> = Vec::new();
        let mut by_id: BTreeMap<i64, &str> = BTreeMap::new();
        for (n, s) in &received {
            by_id.entry(*n).or_insert(s.as_str());
        }
        for s in by_id.values() {
            if states.last() != Some(s) {
                states.push(s);
            }
        }
        assert_eq!(states.first().copied(), Some("establishing"), "call {id}: {states:?} (seed {seed})");
        assert!(states.windows(2).all(|w| may_follow(w[0], w[1])), "call {id}: a step is missing in {states:?} (seed {seed})");
        // Nothing half-way: the call rests established, or it is over, as the server says too.
        let last = *states.last().unwrap_or(&"");
        assert!(["established", "terminated"].contains(&last), "call {id} left {last}: {states:?} (seed {seed})");
        let (status, body) = server.graph(Method::GET, &format!("/v1.0/communications/calls/{id}"), &token, None).await;
        match last {
            "terminated" => assert_eq!(status, 404, "call {id}: {body}"),
            _ => assert_eq!((status, body["state"].as_str()), (200, Some("established")), "call {id}"),
        }
        // A 2xx took effect: a transfer was started (and ended once), a hang-up ended the call.
        if let Some(target) = tracked.transferred {
            // A transfer cut off by a stop may have been made before it, without its 202 reaching
            // us; each one ended (the walk above), and the one we were told of is there.
            let last_transfer = states.iter().rposition(|s| *s == "transferring");
            let Some(at) = last_transfer else { panic!("call {id} (to {target}): no transfer in {states:?} (seed {seed})") };
            let after: Vec<&str> = states[at + 1..].to_vec();
            let outcome = match after.first().copied() {
                Some("transferAccepted") => 0,
                Some("established") => 1,
                Some("terminating" | "terminated") => 2,
                other => panic!("call {id} (to {target}): the transfer never ended ({other:?} in {states:?}, seed {seed})"),
            };
            outcomes[outcome] += 1;
            if target == "Heidi" && outcome == 1 {
                panic!("call {id}: a transfer to Heidi failed: {states:?} (seed {seed})");
            }
        }
        if tracked.hung_up {
            assert_eq!(last, "terminated", "call {id} was hung up with a 2xx: {states:?} (seed {seed})");
        }
    }
    eprintln!(
        "crash test: {kills} stops ({sigterms} SIGTERM), {requests} requests ({unanswered} cut off by a stop), {} calls, {} transfers \
         ({} accepted, {} failed, {} overtaken by a hang-up); notifications owed {owed}, delivered {delivered}, duplicated {duplicated}, lost 0",
        calls.len(),
        outcomes.iter().sum::<usize>(),
        outcomes[0],
        outcomes[1],
        outcomes[2],
    );
    assert!(calls.len() >= kills, "the load was too light to mean anything: {} calls", calls.len());
}
