//! The I/O around the sans-IO [`Endpoint`]: a UDP socket and a TCP listener on the same address, TLS
//! connections the caller accepts (`serve_tls`), and the media socket (`serve_media`). Each message
//! goes through the endpoint under its lock with the engine's clock, so virtual time drives SIP
//! signalling as it drives everything else (comfort audio is paced in real time).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use switchboard_engine::Clock;
use switchboard_engine::metrics::Metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use crate::endpoint::{Endpoint, Event, Outcome, Reply, Transport};
use crate::message::{Frame, MAX_MESSAGE, frame};

/// A TCP connection that sends nothing for this long is closed, unless a call is with its phone.
const TCP_IDLE: Duration = Duration::from_secs(120);
/// Messages queued for a connection's writer; a peer that does not read is cut off past this.
const TCP_QUEUE: usize = 256;
/// A write that takes longer than this ends the connection.
const TCP_WRITE: Duration = Duration::from_secs(10);
/// Opening a connection of our own gives up after this.
const TCP_CONNECT: Duration = Duration::from_secs(5);
/// An address no connection could be opened to is not tried again for this long (64·T1): what is
/// sent there meanwhile is dropped, and calls being placed there fail at once.
const TCP_RETRY: Duration = Duration::from_secs(32);

/// Who learns what the endpoint has to say ([`Event`]s), under the endpoint's lock, so that it can
/// answer at once (ring, refuse) in order with everything else.
pub trait Owner: Send + Sync + 'static {
    fn on_events(&self, endpoint: &mut Endpoint, events: Vec<Event>, now_ms: u64);
}

/// The endpoint, shared by the transports and its owner.
#[derive(Clone)]
pub struct Shared {
    pub endpoint: Arc<Mutex<Endpoint>>,
    pub clock: Clock,
    pub metrics: Arc<Metrics>,
    owner: Arc<OnceLock<Arc<dyn Owner>>>,
    udp: Arc<OnceLock<Arc<UdpSocket>>>,
    /// Open TCP connections by the peer's address: what is addressed there goes on the connection.
    tcp: Arc<Mutex<HashMap<SocketAddr, (u64, mpsc::Sender<Vec<u8>>)>>>,
    /// Connections of our own being opened, and what waits for each. Taken before `tcp`.
    opening: Arc<Mutex<HashMap<SocketAddr, Vec<Vec<u8>>>>>,
    /// Addresses no connection could be opened to, and when that was learnt.
    unreachable: Arc<Mutex<HashMap<SocketAddr, std::time::Instant>>>,
    /// Hosts whose phones' audio is wanted (a call recording, or a conference mixing): only their
    /// audio packets are handed to the endpoint, each under its lock.
    pub audio_from: Arc<std::sync::RwLock<std::collections::HashSet<std::net::IpAddr>>>,
    connections: Arc<std::sync::atomic::AtomicU64>,
}

impl Shared {
    pub fn new(endpoint: Endpoint, clock: Clock, metrics: Arc<Metrics>) -> Shared {
        Shared {
            endpoint: Arc::new(Mutex::new(endpoint)),
            clock,
            metrics,
            owner: Arc::default(),
            udp: Arc::default(),
            tcp: Arc::default(),
            opening: Arc::default(),
            unreachable: Arc::default(),
            audio_from: Arc::default(),
            connections: Arc::default(),
        }
    }

    /// Who hears the endpoint's events (set once, before traffic).
    pub fn set_owner(&self, owner: Arc<dyn Owner>) {
        let _ = self.owner.set(owner);
    }

    /// Runs `f` on the endpoint, then hands its events to the owner and sends what it queued (over
    /// UDP or TCP, without waiting: this may run on the engine's task).
    pub fn with_endpoint<T>(&self, f: impl FnOnce(&mut Endpoint, u64) -> T) -> T {
        let now = self.clock.now_ms();
        let (out, queued) = {
            let mut endpoint = self.lock();
            let out = f(&mut endpoint, now);
            (out, self.settle(&mut endpoint, now))
        };
        self.send_queued(queued);
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Endpoint> {
        self.endpoint.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Events to the owner (which may queue answers), then what is queued, each with whether it
    /// goes on a connection we open (a contact that asked for TCP).
    fn settle(&self, endpoint: &mut Endpoint, now: u64) -> Vec<(Reply, bool)> {
        let events = endpoint.drain_events();
        if !events.is_empty()
            && let Some(owner) = self.owner.get()
        {
            owner.on_events(endpoint, events, now);
        }
        let outbox = endpoint.drain_outbox();
        outbox
            .into_iter()
            .map(|r| {
                let connect = endpoint.dials_tcp(r.to) && first_via_is_tcp(&r.bytes);
                (r, connect)
            })
            .collect()
    }

    /// Sends each message on the TCP connection to its address if there is one (one we open, for a
    /// contact that asked for TCP); anything else over UDP.
    fn send_queued(&self, queued: Vec<(Reply, bool)>) {
        let Some(udp) = self.udp.get() else { return };
        for (r, connect) in queued {
            let connection = match connect {
                true => match self.open_for(r.to, &r.bytes) {
                    Some(connection) => Some(connection),
                    None => continue,
                },
                false => self.tcp.lock().unwrap_or_else(|e| e.into_inner()).get(&r.to).cloned(),
            };
            if let Some((id, connection)) = connection {
                match connection.try_send(r.bytes) {
                    Ok(()) => {}
                    // A peer that does not read its answers is cut off (its writer ends with the sender,
                    // and the connection with its writer).
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::debug!(to = %r.to, "a SIP TCP peer does not read; closing its connection");
                        let mut map = self.tcp.lock().unwrap_or_else(|e| e.into_inner());
                        if map.get(&r.to).is_some_and(|(mine, _)| *mine == id) {
                            map.remove(&r.to);
                        }
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                }
                continue;
            }
            if let Err(e) = udp.try_send_to(&r.bytes, r.to) {
                tracing::debug!(to = %r.to, error = %e, "SIP UDP send failed");
            }
        }
    }

    /// A request for a contact that asked for TCP: the connection there to send it on, or `None` if
    /// it waits while one is opened (one attempt at a time per address), or is dropped because none
    /// could be opened lately (then the calls being placed there fail).
    fn open_for(&self, to: SocketAddr, bytes: &[u8]) -> Option<(u64, mpsc::Sender<Vec<u8>>)> {
        let mut opening = self.opening.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(connection) = self.tcp.lock().unwrap_or_else(|e| e.into_inner()).get(&to) {
            return Some(connection.clone());
        }
        if let Some(waiting) = opening.get_mut(&to) {
            if waiting.len() < TCP_QUEUE {
                waiting.push(bytes.to_vec());
            }
            return None;
        }
        let failed = self.unreachable.lock().unwrap_or_else(|e| e.into_inner()).get(&to).is_some_and(|at| at.elapsed() < TCP_RETRY);
        if failed {
            drop(opening);
            tracing::debug!(%to, "no SIP TCP connection could be opened there lately; a message is dropped");
            self.with_endpoint(|endpoint, now| endpoint.unreachable(to, now));
            return None;
        }
        opening.insert(to, vec![bytes.to_vec()]);
        drop(opening);
        let shared = self.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(TCP_CONNECT, TcpStream::connect(to)).await {
                Ok(Ok(stream)) => connection(stream, to, shared, Transport::Tcp).await,
                Ok(Err(e)) => shared.not_opened(to, &e.to_string()),
                Err(_) => shared.not_opened(to, "timed out"),
            }
        });
        None
    }

    /// A connection of our own could not be opened: what waited for it is dropped, and the calls
    /// being placed there fail (503); a request in a call is sent again on its timers.
    fn not_opened(&self, to: SocketAddr, why: &str) {
        let dropped = self.opening.lock().unwrap_or_else(|e| e.into_inner()).remove(&to).map_or(0, |w| w.len());
        {
            let mut unreachable = self.unreachable.lock().unwrap_or_else(|e| e.into_inner());
            unreachable.retain(|_, at| at.elapsed() < TCP_RETRY);
            unreachable.insert(to, std::time::Instant::now());
        }
        self.metrics.sip_tcp_connect_failed.inc();
        tracing::warn!(%to, why, dropped, "cannot open a SIP TCP connection to a phone; calls being placed there fail");
        self.with_endpoint(|endpoint, now| endpoint.unreachable(to, now));
    }

    fn handle(&self, bytes: &[u8], from: SocketAddr, transport: Transport) {
        let now = self.clock.now_ms();
        let mut endpoint = self.lock();
        let (reply, outcome) = endpoint.receive(bytes, from, transport, now);
        self.metrics.sip_registered.store(endpoint.registrar.registered(now) as i64, std::sync::atomic::Ordering::Relaxed);
        let queued = self.settle(&mut endpoint, now);
        drop(endpoint);
        // The answer to this message first, then what it caused (a 180 after the 100). Over TCP the
        // answer goes back on the connection it came on; anything addressed elsewhere (a proxied
        // request or response) goes where it is addressed.
        self.send_queued(reply.map(|r| (r, false)).into_iter().chain(queued).collect());
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
    }
}

/// Serves SIP over TLS on `listener`: each connection is handshaken with `accept` (the caller's TLS
/// acceptor), then served like TCP. The address for Contact and Via stays the UDP/TCP one.
pub fn serve_tls<F, Fut, S>(listener: TcpListener, shared: Shared, accept: F)
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = std::io::Result<S>> + Send + 'static,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let accept = Arc::new(accept);
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, from)) => {
                    let (s, accept) = (shared.clone(), Arc::clone(&accept));
                    tokio::spawn(async move {
                        match tokio::time::timeout(Duration::from_secs(10), accept(stream)).await {
                            Ok(Ok(tls)) => connection(tls, from, s, Transport::Tls).await,
                            Ok(Err(e)) => tracing::debug!(%from, error = %e, "SIP TLS handshake failed"),
                            Err(_) => tracing::debug!(%from, "SIP TLS handshake timed out"),
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "SIP TLS accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
}

/// Binds UDP and TCP on `addr` (port 0: UDP picks one, TCP takes the same) and serves them until the
/// process ends. Returns the address bound.
pub async fn serve(addr: SocketAddr, shared: Shared) -> std::io::Result<SocketAddr> {
    let udp = Arc::new(UdpSocket::bind(addr).await?);
    let bound = udp.local_addr()?;
    let tcp = TcpListener::bind(bound).await?;
    shared.lock().set_local(bound);
    let _ = shared.udp.set(Arc::clone(&udp));
    let s = shared.clone();
    tokio::spawn(async move { serve_udp(udp, s).await });
    let s = shared.clone();
    tokio::spawn(async move { serve_tcp(tcp, s).await });
    tokio::spawn(async move { retransmit(shared).await });
    Ok(bound)
}

/// Sends again what is due (2xx until ACK, BYE until answered), on the engine's clock: in virtual time
/// SIP timers wait for the clock to be moved like every other timer.
async fn retransmit(shared: Shared) {
    loop {
        let now = shared.clock.now_ms();
        let due = shared.lock().next_due().unwrap_or(now + 200).clamp(now + 10, now + 200);
        shared.clock.sleep_until(due).await;
        shared.with_endpoint(|endpoint, now| endpoint.poll(now));
    }
}

/// Our media socket (the address our SDP names): comfort audio out every 20 ms of real time (the
/// phone's ear does not run on the virtual clock), and what the phones send counted and dropped.
pub fn serve_media(socket: UdpSocket, shared: Shared) {
    let socket = Arc::new(socket);
    let receiving = Arc::clone(&socket);
    let metrics = Arc::clone(&shared.metrics);
    let media_shared = shared.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = receiving.recv_from(&mut buf).await {
            if let Some((payload_type, ..)) = crate::rtp::header(&buf[..n]) {
                metrics.rtp_received.inc();
                // A key a phone pressed (RFC 4733, a dynamic payload type) becomes its call's event;
                // audio is wanted only from the hosts of calls recording or mixing. Anything else
                // costs no endpoint lock.
                if payload_type < 96 && !media_shared.audio_from.read().unwrap_or_else(|e| e.into_inner()).contains(&from.ip()) {
                    continue;
                }
                let now = media_shared.clock.now_ms();
                let mut endpoint = media_shared.lock();
                endpoint.media_received(from, &buf[..n], now);
                let queued = media_shared.settle(&mut endpoint, now);
                drop(endpoint);
                media_shared.send_queued(queued);
            }
        }
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(crate::rtp::PTIME_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            // A prompt that played out is an event of its call, settled as any other.
            let now = shared.clock.now_ms();
            let mut endpoint = shared.lock();
            let due = endpoint.media_due(now);
            let wanted = endpoint.audio_sources();
            if *shared.audio_from.read().unwrap_or_else(|e| e.into_inner()) != wanted {
                *shared.audio_from.write().unwrap_or_else(|e| e.into_inner()) = wanted;
            }
            shared.metrics.rtp_prompt_sent.add(endpoint.take_prompt_packets());
            shared.metrics.rtp_mixed_sent.add(endpoint.take_mixed_packets());
            let queued = shared.settle(&mut endpoint, now);
            drop(endpoint);
            shared.send_queued(queued);
            for (to, packet) in due {
                if socket.try_send_to(&packet, to).is_ok() {
                    shared.metrics.rtp_sent.inc();
                }
            }
        }
    });
}

async fn serve_udp(socket: Arc<UdpSocket>, shared: Shared) {
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
        shared.handle(&buf[..n], from, Transport::Udp);
    }
}

async fn serve_tcp(listener: TcpListener, shared: Shared) {
    loop {
        match listener.accept().await {
            Ok((stream, from)) => {
                let s = shared.clone();
                tokio::spawn(async move { connection(stream, from, s, Transport::Tcp).await });
            }
            Err(e) => {
                tracing::warn!(error = %e, "SIP TCP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Serves one stream connection (TCP, or TLS that the caller has accepted) until it ends: messages in,
/// and everything addressed to the peer out through one writer.
pub async fn connection<S>(stream: S, from: SocketAddr, shared: Shared, transport: Transport)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    // Everything for this peer (answers, and our requests in its calls) goes through one writer, in
    // order, with a bounded queue and a bounded wait per write.
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(TCP_QUEUE);
    let id = shared.connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    {
        // What waited for this connection goes first, before anything sent on it from now on.
        let mut opening = shared.opening.lock().unwrap_or_else(|e| e.into_inner());
        for bytes in opening.remove(&from).into_iter().flatten() {
            let _ = tx.try_send(bytes);
        }
        shared.tcp.lock().unwrap_or_else(|e| e.into_inner()).insert(from, (id, tx));
    }
    let mut writing = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            // Flushed, so that TLS sends its records now, not with the next message.
            let write = async {
                writer.write_all(&bytes).await?;
                writer.flush().await
            };
            if !matches!(tokio::time::timeout(TCP_WRITE, write).await, Ok(Ok(()))) {
                return;
            }
        }
    });
    // Either side ending ends the connection: a writer that failed leaves no reader behind whose
    // answers would go nowhere.
    let writer_done = tokio::select! {
        () = read_messages(&mut reader, from, &shared, transport) => false,
        _ = &mut writing => true,
    };
    let mine = {
        // Only this connection's entry: the same peer may have connected again meanwhile.
        let mut map = shared.tcp.lock().unwrap_or_else(|e| e.into_inner());
        let mine = map.get(&from).is_some_and(|(mine, _)| *mine == id);
        if mine {
            map.remove(&from);
        }
        mine
    };
    // The phones registered on this connection are reached at their contacts from now on.
    if mine {
        shared.with_endpoint(|endpoint, _| endpoint.flow_closed(from));
    }
    // Let what is queued go out, then close (a finished writer is not polled again).
    if !writer_done && tokio::time::timeout(Duration::from_secs(1), &mut writing).await.is_err() {
        writing.abort();
    }
}

/// Whether `bytes` is a request whose top Via says TCP (ours name the transport there: a call to a
/// phone registered with `;transport=tcp`, or on its connection).
fn first_via_is_tcp(bytes: &[u8]) -> bool {
    if bytes.starts_with(b"SIP/2.0 ") {
        return false;
    }
    let head = &bytes[..bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(bytes.len())];
    let at = |name: &[u8]| head.windows(name.len()).position(|w| w.eq_ignore_ascii_case(name)).map(|i| i + name.len());
    let first = [at(b"\r\nVia: "), at(b"\r\nv: ")].into_iter().flatten().min();
    first.is_some_and(|i| head[i..].starts_with(b"SIP/2.0/TCP "))
}

async fn read_messages<R: tokio::io::AsyncRead + Unpin>(reader: &mut R, from: SocketAddr, shared: &Shared, transport: Transport) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        match frame(&buf) {
            Frame::Complete(0) => return, // never: a frame has at least its head; do not spin on it
            Frame::Complete(n) => {
                let msg: Vec<u8> = buf.drain(..n).collect();
                shared.handle(&msg, from, transport);
                continue;
            }
            Frame::Invalid(problem) => {
                // The stream cannot be resynchronised: answer if the endpoint can, then close.
                shared.handle(&buf, from, transport);
                tracing::debug!(%from, %problem, ?transport, "closing a SIP connection that sent an unframeable message");
                return;
            }
            Frame::Incomplete => {}
        }
        let n = match tokio::time::timeout(TCP_IDLE, reader.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            // Quiet, but a call is with this phone: its BYE or our requests will need the connection.
            Err(_) if shared.lock().serves(from) => continue,
            Err(_) => return,
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::first_via_is_tcp;

    #[test]
    fn only_a_request_whose_top_via_says_tcp_needs_a_connection_of_ours() {
        let cases = [
            ("INVITE sip:a@h SIP/2.0\r\nVia: SIP/2.0/TCP 1.2.3.4:5060;branch=z9hG4bK1\r\nTo: <sip:a@h>\r\n\r\n", true),
            ("BYE sip:a@h SIP/2.0\r\nv: SIP/2.0/TCP 1.2.3.4\r\n\r\n", true),
            ("INVITE sip:a@h SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4\r\n\r\n", false),
            // A proxied request: our UDP Via on top of the phone's TCP one.
            ("INVITE sip:a@h SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4\r\nVia: SIP/2.0/TCP 5.6.7.8\r\n\r\n", false),
            // Answers go back where their request came from.
            ("SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 1.2.3.4\r\n\r\n", false),
            // A Via in the body is no Via.
            ("MESSAGE sip:a@h SIP/2.0\r\nTo: <sip:a@h>\r\n\r\n\r\nVia: SIP/2.0/TCP x\r\n", false),
        ];
        for (message, want) in cases {
            assert_eq!(first_via_is_tcp(message.as_bytes()), want, "{message:?}");
        }
    }
}
