//! The webhook sink: the bot's side of the notifications. It answers 202 at once and records, for
//! each call, when each state arrived, so that the driver can wait for a state and measure how long it
//! took. Notifications are parsed with borrowed strings and only the fields the driver needs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::sync::oneshot;

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    value: Vec<Item<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Item<'a> {
    #[serde(borrow)]
    resource_url: &'a str,
    #[serde(borrow, default)]
    resource_data: Option<Data<'a>>,
}

#[derive(Deserialize)]
struct Data<'a> {
    #[serde(borrow, default)]
    state: Option<&'a str>,
}

#[derive(Default)]
struct Entry {
    seen: Vec<(String, Instant)>,
    waiter: Option<(String, oneshot::Sender<Instant>)>,
}

#[derive(Default)]
pub struct Sink {
    calls: Mutex<HashMap<String, Entry>>,
    pub posts: std::sync::atomic::AtomicU64,
    pub notifications: std::sync::atomic::AtomicU64,
}

impl Sink {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, body: &[u8], at: Instant) -> bool {
        let Ok(env) = serde_json::from_slice::<Envelope<'_>>(body) else {
            return false;
        };
        self.posts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.notifications.fetch_add(env.value.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let mut calls = self.lock();
        for item in env.value {
            let Some(state) = item.resource_data.and_then(|d| d.state) else { continue };
            let id = item.resource_url.rsplit('/').next().unwrap_or_default();
            let entry = calls.entry(id.to_owned()).or_default();
            if entry.waiter.as_ref().is_some_and(|(s, _)| s == state)
                && let Some((_, tx)) = entry.waiter.take()
            {
                let _ = tx.send(at);
            }
            entry.seen.push((state.to_owned(), at));
        }
        true
    }

    /// When the call's notification with `state` arrived, waiting for it if it has not yet.
    pub async fn wait(&self, call_id: &str, state: &str, limit: std::time::Duration) -> anyhow::Result<Instant> {
        let rx = {
            let mut calls = self.lock();
            let entry = calls.entry(call_id.to_owned()).or_default();
            if let Some((_, at)) = entry.seen.iter().find(|(s, _)| s == state) {
                return Ok(*at);
            }
            let (tx, rx) = oneshot::channel();
            entry.waiter = Some((state.to_owned(), tx));
            rx
        };
        match tokio::time::timeout(limit, rx).await {
            Ok(Ok(at)) => Ok(at),
            _ => anyhow::bail!("call {call_id} did not reach {state} within {limit:?}"),
        }
    }

    /// The states the call was notified of so far, in order.
    pub fn states(&self, call_id: &str) -> Vec<String> {
        self.lock().get(call_id).map(|e| e.seen.iter().map(|(s, _)| s.clone()).collect()).unwrap_or_default()
    }

    /// Forgets a call (the driver is done with it), so that a long run does not grow the sink.
    pub fn forget(&self, call_id: &str) {
        self.lock().remove(call_id);
    }
}

/// Serves the sink on `addr` (port 0 for any) until the process ends; returns where it listens.
pub async fn serve(sink: Arc<Sink>, addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let sink = Arc::clone(&sink);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let sink = Arc::clone(&sink);
                    async move {
                        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let ok = sink.record(&body, Instant::now());
                        let status = if ok { 202 } else { 400 };
                        Ok::<_, std::convert::Infallible>(
                            Response::builder().status(status).body(http_body_util::Empty::<hyper::body::Bytes>::new()).unwrap_or_default(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Ok(local)
}
