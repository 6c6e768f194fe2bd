//! The I/O around the sans-IO [`Endpoint`]: a UDP socket and a TCP listener on the same address. Each
//! message goes through the endpoint under its lock with the engine's clock, so virtual time drives
//! SIP as it drives everything else.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_engine::Clock;
use switchboard_engine::metrics::Metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::endpoint::{Endpoint, Outcome, Transport};
use crate::message::{Frame, MAX_MESSAGE, frame};

/// A TCP connection that sends nothing for this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(120);

/// The endpoint, shared by the transports.
#[derive(Clone)]
pub struct Shared {
    pub endpoint: Arc<Mutex<Endpoint>>,
    pub clock: Clock,
    pub metrics: Arc<Metrics>,
}

impl Shared {
    fn handle(&self, bytes: &[u8], from: SocketAddr, transport: Transport) -> Option<crate::endpoint::Reply> {
        let now = self.clock.now_ms();
        let mut endpoint = self.endpoint.lock().unwrap_or_else(|e| e.into_inner());
        let (reply, outcome) = endpoint.receive(bytes, from, transport, now);
        self.metrics.sip_registered.store(endpoint.registrar.registered(now) as i64, std::sync::atomic::Ordering::Relaxed);
        drop(endpoint);
        match outcome {
            Outcome::Answered(code) => self.metrics.sip_answered(code),
            Outcome::Retransmitted => self.metrics.sip_retransmitted.inc(),
            Outcome::Absorbed => {}
            Outcome::Dropped(problem) => {
                self.metrics.sip_dropped.inc();
                // Hostile input can come fast: one line each, at debug; the counter shows the rate.
                tracing::debug!(%from, ?transport, %problem, "dropped a SIP message too broken to answer");
            }
        }
        reply
    }
}

/// Binds UDP and TCP on `addr` (port 0: UDP picks one, TCP takes the same) and serves them until the
/// process ends. Returns the address bound.
pub async fn serve(addr: SocketAddr, shared: Shared) -> std::io::Result<SocketAddr> {
    let udp = UdpSocket::bind(addr).await?;
    let bound = udp.local_addr()?;
    let tcp = TcpListener::bind(bound).await?;
    let s = shared.clone();
    tokio::spawn(async move { serve_udp(udp, s).await });
    tokio::spawn(async move { serve_tcp(tcp, shared).await });
    Ok(bound)
}

async fn serve_udp(socket: UdpSocket, shared: Shared) {
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            // ICMP port unreachable from an earlier send shows up here on some systems: not fatal.
            Err(e) => {
                tracing::debug!(error = %e, "SIP UDP receive failed");
                continue;
            }
        };
        if let Some(reply) = shared.handle(&buf[..n], from, Transport::Udp)
            && let Err(e) = socket.send_to(&reply.bytes, reply.to).await
        {
            tracing::debug!(to = %reply.to, error = %e, "SIP UDP send failed");
        }
    }
}

async fn serve_tcp(listener: TcpListener, shared: Shared) {
    loop {
        match listener.accept().await {
            Ok((stream, from)) => {
                let s = shared.clone();
                tokio::spawn(async move { connection(stream, from, s).await });
            }
            Err(e) => {
                tracing::warn!(error = %e, "SIP TCP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(mut stream: TcpStream, from: SocketAddr, shared: Shared) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        match frame(&buf) {
            Frame::Complete(n) => {
                let msg: Vec<u8> = buf.drain(..n).collect();
                if let Some(reply) = shared.handle(&msg, from, Transport::Tcp)
                    && stream.write_all(&reply.bytes).await.is_err()
                {
                    return;
                }
                continue;
            }
            Frame::Invalid(problem) => {
                // The stream cannot be resynchronised: answer if the endpoint can, then close.
                if let Some(reply) = shared.handle(&buf, from, Transport::Tcp) {
                    let _ = stream.write_all(&reply.bytes).await;
                }
                tracing::debug!(%from, %problem, "closing a SIP TCP connection that sent an unframeable message");
                return;
            }
            Frame::Incomplete => {}
        }
        let n = match tokio::time::timeout(TCP_IDLE, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
    }
}
