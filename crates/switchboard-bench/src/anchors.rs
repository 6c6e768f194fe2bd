//! The anchors, measured in the same run as Switchboard so that ratios hold on a noisy machine:
//! (a) a bare handler on Switchboard's HTTP stack, (b) the store's raw durable commit rate with
//! Switchboard's own settings, (c) the sink's own receive rate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_engine::store::{NewNotification, Store};
use switchboard_sqlite::SqliteStore;

use crate::stats::{Samples, round};

/// (a) axum on hyper's HTTP/1 on tokio's multi-threaded runtime, as `switchboard serve` runs, with one
/// handler that answers 202 and does nothing else.
pub fn serve_bare(listen: SocketAddr) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let app = axum::Router::new().fallback(|| async { axum::http::StatusCode::ACCEPTED });
        let listener = tokio::net::TcpListener::bind(listen).await?;
        axum::serve(listener, app).await?;
        anyhow::Ok(())
    })
}

/// A notification body the size of a real one (a `call` resource with its state).
pub const NOTIFICATION: &str = r##"{"value":[{"@odata.type":"#microsoft.graph.commsNotification","changeType":"updated","resource":"/app/calls/4e1f0a00-1f3b-4a6f-9c4d-0123456789ab","resourceUrl":"/communications/calls/4e1f0a00-1f3b-4a6f-9c4d-0123456789ab","resourceData":{"@odata.type":"#microsoft.graph.call","state":"established","direction":"outgoing","callbackUri":"http://127.0.0.1:9/cb","callChainId":"a8b2c4d6-0000-4000-8000-000000000001","mediaState":{"@odata.type":"#microsoft.graph.callMediaState","audio":"active"},"tenantId":"aaaaaaaa-0000-4000-8000-000000000001","myParticipantId":"b1c2d3e4-0000-4000-8000-000000000002"}}]}"##;

/// (b) Commits per second into a fresh SQLite store opened exactly as `serve` opens it (WAL,
/// synchronous=NORMAL), from `concurrency` tasks: each commits a new call, then a transition of it,
/// each with one notification, the write pattern of a call's life.
pub async fn store_commits(concurrency: usize, duration: Duration) -> anyhow::Result<Value> {
    let dir = std::env::temp_dir().join(format!("switchboard-bench-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let store = Arc::new(SqliteStore::open(&dir)?);
    let note = vec![NewNotification { callback: "http://127.0.0.1:9/cb".into(), body: NOTIFICATION.into() }];
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let (store, note) = (Arc::clone(&store), note.clone());
        tasks.push(tokio::spawn(async move {
            let (mut commits, mut latency) = (0usize, Samples::default());
            let mut i = 0;
            while Instant::now() < deadline {
                let call = switchboard_engine::conformance::offered(&format!("anchor-{t}-{i}"));
                i += 1;
                let t0 = Instant::now();
                let (version, _) = store.commit(&call, None, &note, 1).await?;
                latency.push(t0.elapsed());
                let t0 = Instant::now();
                store.commit(&call, Some(version), &note, 2).await?;
                latency.push(t0.elapsed());
                commits += 2;
            }
            anyhow::Ok((commits, latency))
        }));
    }
    let (mut commits, mut latency) = (0, Samples::default());
    for t in tasks {
        let (c, l) = t.await??;
        commits += c;
        latency.extend(l);
    }
    let elapsed = start.elapsed();
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(json!({
        "concurrency": concurrency,
        "commits_per_s": round(commits as f64 / elapsed.as_secs_f64(), 0),
        "commit": latency.summary(),
    }))
}
