//! The load patterns: closed loops (N connections, each sending as soon as its answer came) and an
//! open loop (a fixed offered rate; latency counted from when a request was released to be sent, so a server that
//! falls behind is charged for the queue it builds).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::graph::{Bot, PATIENCE};
use crate::http::Conn;
use crate::stats::{Samples, round};

/// What a closed loop measured.
#[derive(Default)]
pub struct Load {
    pub requests: usize,
    pub errors: usize,
    pub elapsed: Duration,
    pub latency: Samples,
    /// The first error seen, to say what went wrong.
    pub first_error: Option<String>,
}

impl Load {
    pub fn rps(&self) -> f64 {
        if self.elapsed.is_zero() {
            return 0.0;
        }
        round(self.requests as f64 / self.elapsed.as_secs_f64(), 0)
    }

    /// Adds another slice of the same load.
    pub fn absorb(&mut self, other: Load) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.elapsed += other.elapsed;
        self.latency.extend(other.latency);
        self.first_error = self.first_error.take().or(other.first_error);
    }

    pub fn json(&mut self, concurrency: usize) -> Value {
        let mut v = json!({"concurrency": concurrency, "rps": self.rps(), "requests": self.requests, "errors": self.errors});
        if let (Value::Object(m), Value::Object(l)) = (&mut v, self.latency.summary()) {
            m.extend(l);
        }
        if let Some(e) = &self.first_error {
            v["first_error"] = json!(e);
        }
        v
    }
}

/// What one connection of a closed loop counted: answers as expected, errors, their latencies, the
/// first error.
type Part = (usize, usize, Samples, Option<String>);

/// Waits for a closed loop's connections and adds up what they counted.
async fn gather(tasks: Vec<tokio::task::JoinHandle<Part>>, start: Instant) -> Load {
    let mut parts = Vec::new();
    for t in tasks {
        if let Ok(p) = t.await {
            parts.push(p);
        }
    }
    merge(parts, start.elapsed())
}

fn merge(parts: Vec<Part>, elapsed: Duration) -> Load {
    let mut load = Load { requests: 0, errors: 0, elapsed, latency: Samples::default(), first_error: None };
    for (ok, errors, samples, first) in parts {
        load.requests += ok;
        load.errors += errors;
        load.latency.extend(samples);
        load.first_error = load.first_error.or(first);
    }
    load
}

/// One request, sent again and again; an answer other than `expect` counts as an error.
pub struct Req {
    pub method: &'static str,
    pub path: String,
    pub headers: String,
    pub body: Vec<u8>,
    pub expect: u16,
}

/// `concurrency` connections send `req` for `duration`, each as soon as its last answer came.
pub async fn closed(addr: SocketAddr, req: Req, concurrency: usize, duration: Duration) -> Load {
    let Req { method, path, headers, body, expect } = req;
    let (path, headers, body) = (Arc::new(path), Arc::new(headers), Arc::new(body));
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (path, headers, body) = (Arc::clone(&path), Arc::clone(&headers), Arc::clone(&body));
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(addr);
            let (mut ok, mut errors, mut samples, mut first) = (0, 0, Samples::default(), None);
            while Instant::now() < deadline {
                let t0 = Instant::now();
                match conn.send(method, &path, &headers, &body).await {
                    Ok(r) if r.status == expect => {
                        ok += 1;
                        samples.push(t0.elapsed());
                    }
                    Ok(r) => {
                        errors += 1;
                        first.get_or_insert_with(|| format!("{} {}", r.status, String::from_utf8_lossy(&r.body)));
                    }
                    Err(e) => {
                        errors += 1;
                        first.get_or_insert_with(|| e.to_string());
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (ok, errors, samples, first)
        }));
    }
    gather(tasks, start).await
}

/// Places `n` calls from `workers` connections, each waiting for its call to be established before
/// the next. Returns the ids and the calls set up per second. Prints progress every few seconds.
pub async fn establish(bot: &Arc<Bot>, n: usize, workers: usize, label: &str) -> anyhow::Result<(Vec<String>, f64)> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers.min(n.max(1)) {
        let (bot, next) = (Arc::clone(bot), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(bot.server);
            let mut ids = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                ids.push(bot.established(&mut conn).await?);
            }
            anyhow::Ok(ids)
        }));
    }
    let progress = {
        let (next, label) = (Arc::clone(&next), label.to_owned());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let done = next.load(Ordering::Relaxed).min(n);
                eprintln!("  {label}: {done} of {n} calls placed ({:.0}/s)", done as f64 / start.elapsed().as_secs_f64());
            }
        })
    };
    let mut ids = Vec::with_capacity(n);
    let mut failure = None;
    for t in tasks {
        match t.await {
            Ok(Ok(mut part)) => ids.append(&mut part),
            Ok(Err(e)) => failure = Some(e),
            Err(e) => failure = Some(e.into()),
        }
    }
    progress.abort();
    if let Some(e) = failure {
        return Err(e.context(format!("setting up {n} calls")));
    }
    Ok((ids, round(n as f64 / start.elapsed().as_secs_f64(), 0)))
}

/// Transfers every call in `ids` (each once) from `concurrency` connections; only the POST is timed.
pub async fn transfers_closed(bot: &Arc<Bot>, ids: Vec<String>, concurrency: usize) -> Load {
    let ids = Arc::new(ids);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (bot, ids, next) = (Arc::clone(bot), Arc::clone(&ids), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(bot.server);
            let (mut ok, mut errors, mut samples, mut first) = (0, 0, Samples::default(), None);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(i) else { break };
                let t0 = Instant::now();
                match bot.transfer(&mut conn, id).await {
                    Ok(202) => {
                        ok += 1;
                        samples.push(t0.elapsed());
                    }
                    Ok(s) => {
                        errors += 1;
                        first.get_or_insert_with(|| format!("transfer answered {s}"));
                    }
                    Err(e) => {
                        errors += 1;
                        first.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            (ok, errors, samples, first)
        }));
    }
    gather(tasks, start).await
}

/// What an open loop of transfers measured.
pub struct OpenLoop {
    pub rate: f64,
    /// The POST, from when it was released to be sent to its 202. Released is when the scheduler
    /// woke for it (its due time rounded up to the driver's 1 ms timer): a server that falls behind
    /// keeps the pool busy and is charged for the queue, but the timer's own lateness is not charged
    /// to the server.
    pub post: Samples,
    /// The POST's sending to the `transferring` notification's arrival: the state changed, durably,
    /// in between, so this is an upper bound of the notification latency.
    pub notify: Samples,
    /// The 202's arrival to the `transferring` notification's (0 when the notification came first):
    /// a lower bound.
    pub notify_after_202: Samples,
    /// When the POST was released to the `terminated` notification: the whole transfer.
    pub done: Samples,
    pub errors: usize,
    pub first_error: Option<String>,
    pub achieved: f64,
    /// How late the one-threaded driver released each request after its due time: its own lag,
    /// which the latencies above leave out, shown so that a driver falling behind is seen.
    pub lag: Samples,
}

impl OpenLoop {
    pub fn json(&mut self) -> Value {
        json!({
            "offered_per_s": self.rate,
            "achieved_per_s": self.achieved,
            "errors": self.errors,
            "first_error": self.first_error,
            "transfer_post": self.post.summary(),
            "notify_transferring": self.notify.summary(),
            "notify_after_202": self.notify_after_202.summary(),
            "transfer_done": self.done.summary(),
            "driver_lag": self.lag.summary(),
        })
    }
}

/// Offers transfers of `ids` at `rate` per second, one per call, from a pool of connections, and
/// follows each call's notifications to `terminated`.
pub async fn transfers_open(bot: &Arc<Bot>, ids: Vec<String>, rate: f64) -> OpenLoop {
    const POOL: usize = 128;
    let n = ids.len();
    let (tx, rx) = tokio::sync::mpsc::channel::<(String, Instant)>(n.max(1));
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..POOL {
        let (bot, rx) = (Arc::clone(bot), Arc::clone(&rx));
        workers.push(tokio::spawn(async move {
            let mut conn = Conn::new(bot.server);
            let mut out = Vec::new();
            loop {
                let job = rx.lock().await.recv().await;
                let Some((id, due)) = job else { break };
                let sent = Instant::now();
                let result = bot.transfer(&mut conn, &id).await;
                let answered = Instant::now();
                let follow = match result {
                    Ok(202) => {
                        let bot = Arc::clone(&bot);
                        Ok(tokio::spawn(async move {
                            let sink = &bot.sink;
                            let transferring = sink.wait(&id, "transferring", PATIENCE).await?;
                            let terminated = sink.wait(&id, "terminated", PATIENCE).await?;
                            let states = sink.states(&id);
                            sink.forget(&id);
                            if !states.iter().any(|s| s == "transferAccepted") {
                                anyhow::bail!("call {id} ended without transferAccepted: {states:?}");
                            }
                            Ok((
                                transferring.saturating_duration_since(sent),
                                transferring.saturating_duration_since(answered),
                                terminated.saturating_duration_since(due),
                            ))
                        }))
                    }
                    Ok(s) => Err(format!("transfer answered {s}")),
                    Err(e) => Err(e.to_string()),
                };
                out.push((answered.saturating_duration_since(due), follow));
            }
            out
        }));
    }
    let mut lag = Samples::default();
    for (i, id) in ids.into_iter().enumerate() {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let released = Instant::now().max(due);
        lag.push(released - due);
        if tx.send((id, released)).await.is_err() {
            break;
        }
    }
    drop(tx);
    let mut result = OpenLoop {
        rate,
        post: Samples::default(),
        notify: Samples::default(),
        notify_after_202: Samples::default(),
        done: Samples::default(),
        errors: 0,
        first_error: None,
        achieved: 0.0,
        lag: Samples::default(),
    };
    let mut follows = Vec::new();
    for w in workers {
        for (post, follow) in w.await.unwrap_or_default() {
            match follow {
                Ok(f) => {
                    result.post.push(post);
                    follows.push(f);
                }
                Err(e) => {
                    result.errors += 1;
                    result.first_error.get_or_insert(e);
                }
            }
        }
    }
    result.achieved = round(result.post.len() as f64 / start.elapsed().as_secs_f64(), 0);
    result.lag = lag;
    for f in follows {
        match f.await {
            Ok(Ok((notify, after_202, done))) => {
                result.notify.push(notify);
                result.notify_after_202.push(after_202);
                result.done.push(done);
            }
            Ok(Err(e)) => {
                result.errors += 1;
                result.first_error.get_or_insert(e.to_string());
            }
            Err(e) => {
                result.errors += 1;
                result.first_error.get_or_insert(e.to_string());
            }
        }
    }
    result
}

/// Complete transfers, closed loop: each of `workers` places a call, waits until it is established,
/// transfers it and waits for `terminated` (with `transferring` and `transferAccepted` before it), then
/// starts over. Counts the transfers completed within `duration`.
pub async fn e2e(bot: &Arc<Bot>, workers: usize, duration: Duration) -> Value {
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let bot = Arc::clone(bot);
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(bot.server);
            let (mut done, mut errors, mut latency, mut first) = (0usize, 0usize, Samples::default(), None::<String>);
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let one = async {
                    let id = bot.established(&mut conn).await?;
                    let t1 = Instant::now();
                    match bot.transfer(&mut conn, &id).await? {
                        202 => {}
                        s => anyhow::bail!("transfer answered {s}"),
                    }
                    bot.sink.wait(&id, "terminated", PATIENCE).await?;
                    let states = bot.sink.states(&id);
                    bot.sink.forget(&id);
                    for want in ["transferring", "transferAccepted", "terminated"] {
                        if !states.iter().any(|s| s == want) {
                            anyhow::bail!("call {id} had no {want} notification: {states:?}");
                        }
                    }
                    Ok(t1)
                };
                match one.await {
                    Ok(t1) if Instant::now() <= deadline => {
                        done += 1;
                        latency.push(t1.elapsed());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        errors += 1;
                        first.get_or_insert(e.to_string());
                    }
                }
                let _ = t0;
            }
            (done, errors, latency, first)
        }));
    }
    let mut load = Load { requests: 0, errors: 0, elapsed: duration, latency: Samples::default(), first_error: None };
    for t in tasks {
        if let Ok((done, errors, latency, first)) = t.await {
            load.requests += done;
            load.errors += errors;
            load.latency.extend(latency);
            load.first_error = load.first_error.or(first);
        }
    }
    json!({
        "workers": workers,
        "seconds": duration.as_secs_f64(),
        "transfers_per_s": load.rps(),
        "completed": load.requests,
        "errors": load.errors,
        "first_error": load.first_error,
        "transfer_to_terminated": load.latency.summary(),
    })
}
