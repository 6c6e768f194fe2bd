//! The HTTP front door: accepts connections (plain or TLS), caps how many are open at once, and times
//! out clients that are slow to send a request's head or its body, or that sit idle too long between
//! requests. Slow clients cost a timer each, never a request slot for ever (issue 15: slowloris).
//!
//! Each connection goes through three stages, kept in its [`Watch`]:
//! - **head**: from the first byte of a request (or from the accept) until its head is parsed;
//!   `header_timeout_ms`. When it fires, a plain connection gets `408` and is closed.
//! - **body**: the body is read in full before routing, at most [`api::MAX_BODY`] bytes, within
//!   `body_timeout_ms`: `408` otherwise, `413` when it is too large.
//! - **idle**: from the response until the next request's first byte; `idle_timeout_ms`, then closed.
//!
//! While a handler runs there is no deadline: that time is ours. Over `max_connections`, a new
//! connection gets `503` with `Retry-After` and is closed (shed, not queued behind the slow ones).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use crate::api::{self, GraphError};
use crate::config::HttpSettings;
use crate::metrics::Metrics;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Head,
    Body,
    Handling,
    Idle,
}

/// A connection's stage and the deadline that goes with it; shared by its reader ([`Guarded`]) and
/// its request handler.
struct Watch {
    state: Mutex<(Stage, Option<Instant>)>,
    limits: HttpSettings,
    /// The server's budget for request bodies held in memory, in KiB ([`BODY_BUDGET_KIB`]).
    bodies: Arc<Semaphore>,
}

/// Request bodies are read before routing (so before authentication): at most this much of them
/// (KiB) is held at once, server-wide, so that many connections each sending a large body cannot
/// fill the memory. Beyond it, 503 with `Retry-After`.
const BODY_BUDGET_KIB: usize = 256 * 1024;

impl Watch {
    fn new(limits: HttpSettings, bodies: Arc<Semaphore>) -> Self {
        let first = Instant::now() + ms(limits.header_timeout_ms);
        Watch { state: Mutex::new((Stage::Head, Some(first))), limits, bodies }
    }

    fn set(&self, stage: Stage) {
        let deadline = match stage {
            Stage::Head => Some(ms(self.limits.header_timeout_ms)),
            Stage::Body => Some(ms(self.limits.body_timeout_ms)),
            Stage::Handling => None,
            Stage::Idle => Some(ms(self.limits.idle_timeout_ms)),
        };
        *self.lock() = (stage, deadline.map(|d| Instant::now() + d));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Stage, Option<Instant>)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes came in: an idle connection has begun its next request.
    fn bytes_arrived(&self) {
        let idle = self.lock().0 == Stage::Idle;
        if idle {
            self.set(Stage::Head);
        }
    }

    /// The deadline the reader enforces: the head's and the idle one (the body's is the handler's).
    fn reader_deadline(&self) -> Option<(Stage, Instant)> {
        match *self.lock() {
            (stage @ (Stage::Head | Stage::Idle), Some(at)) => Some((stage, at)),
            _ => None,
        }
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The TCP stream under HTTP (and under TLS, so that a stalled handshake is timed too), failing its
/// reads and writes once the connection's head or idle deadline has passed.
struct Guarded {
    inner: TcpStream,
    watch: Arc<Watch>,
    metrics: Arc<Metrics>,
    sleep: Pin<Box<Sleep>>,
    armed: Option<Instant>,
    /// A plain connection can be told `408` on the raw socket; under TLS that would break the stream.
    plain: bool,
}

impl Guarded {
    /// Whether the deadline has passed; registers the waker for it otherwise.
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<Stage> {
        let (stage, at) = self.watch.reader_deadline()?;
        if self.armed != Some(at) {
            self.sleep.as_mut().reset(at);
            self.armed = Some(at);
        }
        self.sleep.as_mut().poll(cx).is_ready().then_some(stage)
    }

    fn timed_out(&mut self, stage: Stage, reading: bool) -> io::Error {
        let what = match stage {
            Stage::Head => {
                self.metrics.http_header_timeouts.inc();
                // Not while a response is being written: the 408 would land inside it.
                if self.plain && reading {
                    // Best effort, never waiting: the client is the slow party.
                    let _ = self.inner.try_write(REQUEST_TIMEOUT);
                    self.metrics.request("other", 408);
                }
                "the request head did not arrive in time"
            }
            _ => {
                self.metrics.http_idle_closed.inc();
                "the connection was idle too long"
            }
        };
        io::Error::new(io::ErrorKind::TimedOut, what)
    }
}

const REQUEST_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

impl AsyncRead for Guarded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.watch.bytes_arrived();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match self.expired(cx) {
                Some(stage) => Poll::Ready(Err(self.timed_out(stage, true))),
                None => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            // A client that stops reading its responses is as idle as one that stops writing.
            Poll::Pending => match self.expired(cx) {
                Some(stage) => Poll::Ready(Err(self.timed_out(stage, false))),
                None => Poll::Pending,
            },
            done => done,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves `app` on `listener` until `shutdown`; then lets each open connection finish the request in
/// flight (idle ones close at once) and waits for them, at most 10 s.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: axum::Router,
    limits: HttpSettings,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let bodies = Arc::new(Semaphore::new(BODY_BUDGET_KIB));
    let (closing, closed) = tokio::sync::watch::channel(false);
    let mut accept_failures = 0u32;
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => {
                let _ = closing.send(true);
                break;
            }
            r = listener.accept() => match r {
                Ok(s) => { accept_failures = 0; s }
                Err(e) => {
                    // Out of file descriptors, say: back off instead of spinning, and say so once.
                    if accept_failures == 0 {
                        tracing::warn!(error = %e, "accepting a connection failed; backing off");
                    }
                    accept_failures = accept_failures.saturating_add(1);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            metrics.http_connections_shed.inc();
            metrics.request("other", 503);
            if tls.is_none() {
                tokio::spawn(shed(stream));
            }
            continue;
        };
        let watch = Arc::new(Watch::new(limits.clone(), Arc::clone(&bodies)));
        let io = Guarded {
            inner: stream,
            watch: Arc::clone(&watch),
            metrics: Arc::clone(&metrics),
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed: None,
            plain: tls.is_none(),
        };
        let (tls, app, metrics, closed) = (tls.clone(), app.clone(), Arc::clone(&metrics), closed.clone());
        tokio::spawn(async move {
            let _slot = slot;
            metrics.http_connections_open.fetch_add(1, Ordering::Relaxed);
            let _open = Decrement(&metrics.http_connections_open);
            match tls {
                None => connection(io, watch, app, Arc::clone(&metrics), closed).await,
                Some(acceptor) => match acceptor.accept(io).await {
                    Ok(tls) => connection(tls, watch, app, Arc::clone(&metrics), closed).await,
                    Err(e) => tracing::debug!(error = %e, "TLS handshake failed"),
                },
            }
        });
    }
    // Every connection holds a slot until it ends.
    let all = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(Duration::from_secs(10), slots.acquire_many(all)).await;
}

struct Decrement<'a>(&'a AtomicI64);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Tells a connection over the cap to come back later, without waiting on it for long.
async fn shed(mut stream: TcpStream) {
    let body = r#"{"error":{"code":"ServiceUnavailable","message":"Too many open connections; retry shortly."}}"#;
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_millis(500), stream.write_all(resp.as_bytes())).await;
}

async fn connection<I>(io: I, watch: Arc<Watch>, app: axum::Router, metrics: Arc<Metrics>, mut closed: tokio::sync::watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = {
        let (watch, metrics) = (Arc::clone(&watch), Arc::clone(&metrics));
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let (watch, app, metrics) = (Arc::clone(&watch), app.clone(), Arc::clone(&metrics));
            async move { Ok::<_, Infallible>(request(req, &watch, app, &metrics).await) }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        // Our own deadlines (above) replace hyper's header timeout, which also runs while idle.
        .header_read_timeout(None)
        .max_header_size(MAX_HEAD)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service);
    tokio::pin!(conn);
    let ended = tokio::select! {
        r = conn.as_mut() => Some(r),
        _ = closed.wait_for(|c| *c) => None,
    };
    let result = match ended {
        Some(r) => r,
        None => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // hyper answers an unparsable or oversized head itself; count it as the responses are.
        if e.is_parse_too_large() {
            metrics.request("other", if e.to_string().contains("URI") { 414 } else { 431 });
        } else if e.is_parse() && !e.is_parse_version_h2() {
            metrics.request("other", 400);
        }
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

/// The longest request head (start line and headers) read: 431 beyond it.
const MAX_HEAD: usize = 64 * 1024;

/// One request: its body read in full under the body deadline, then the router.
async fn request(req: Request<Incoming>, watch: &Watch, app: axum::Router, metrics: &Metrics) -> Response<Body> {
    use hyper::body::Body as _;
    let mut budget = None;
    let req = if req.body().is_end_stream() {
        watch.set(Stage::Handling);
        req.map(|_| Body::empty())
    } else {
        watch.set(Stage::Body);
        let family = api::family(req.uri().path());
        let client_request_id = req.headers().get("client-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
        // The most this body may hold (its Content-Length, else the limit), from the server's budget.
        let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
        let kib = declared.unwrap_or(api::MAX_BODY).min(api::MAX_BODY).div_ceil(1024).max(1);
        match Arc::clone(&watch.bodies).try_acquire_many_owned(u32::try_from(kib).unwrap_or(u32::MAX)) {
            Ok(permit) => budget = Some(permit),
            Err(_) => {
                watch.set(Stage::Idle);
                metrics.http_bodies_shed.inc();
                let busy = GraphError {
                    retry_after: Some(1),
                    ..GraphError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "ServiceUnavailable",
                        "The server is reading too many request bodies; retry shortly.",
                    )
                };
                let mut resp = api::refusal(&busy, family, client_request_id, metrics);
                resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                return resp;
            }
        }
        match read_body(req, watch.limits.body_timeout_ms).await {
            Ok(req) => req,
            Err(err) => {
                watch.set(Stage::Idle);
                let mut resp = api::refusal(&err, family, client_request_id, metrics);
                // The rest of the body may still be on its way: this connection is done.
                resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                return resp;
            }
        }
    };
    watch.set(Stage::Handling);
    let resp = match app.oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    };
    // The body is dropped with the request: its share of the budget goes back.
    drop(budget);
    watch.set(Stage::Idle);
    resp
}

async fn read_body(req: Request<Incoming>, timeout_ms: u64) -> Result<Request<Body>, GraphError> {
    let too_large = || {
        GraphError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("The request body exceeds the limit of {} bytes.", api::MAX_BODY),
        )
    };
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > api::MAX_BODY as u64) {
        return Err(too_large());
    }
    let (parts, body) = req.into_parts();
    let read = axum::body::to_bytes(Body::new(body), api::MAX_BODY);
    match tokio::time::timeout(ms(timeout_ms), read).await {
        Err(_) => Err(GraphError::new(
            StatusCode::REQUEST_TIMEOUT,
            "RequestTimeout",
            format!("The request body did not arrive within {timeout_ms} ms."),
        )),
        Ok(Err(e)) if is_length_limit(&e) => Err(too_large()),
        Ok(Err(e)) => Err(GraphError::bad_request(format!("The request body could not be read: {e}."))),
        Ok(Ok(bytes)) => Ok(Request::from_parts(parts, Body::from(bytes))),
    }
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.to_string().contains("length limit exceeded") {
            return true;
        }
        source = s.source();
    }
    false
}
