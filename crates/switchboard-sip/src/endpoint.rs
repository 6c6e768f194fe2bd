//! Switchboard as a SIP endpoint for its domain, sans-IO: bytes from an address in, at most one
//! response out ([`Endpoint::receive`]). The transports (`transport.rs`) move the bytes; this decides.
//!
//! Today it is a registrar (REGISTER with Digest) that also answers OPTIONS. Calls (INVITE, REFER,
//! NOTIFY, BYE) come next (issue 11); until then an INVITE gets a clean 501 and its ACK is absorbed.

use std::net::{IpAddr, SocketAddr};

use crate::header::cseq::CSeq;
use crate::header::name_addr::NameAddr;
use crate::header::via::Via;
use crate::message::{Headers, Message, ParseError, StartLine, shorten};
use crate::registrar::{Account, Answer, Registrar};
use crate::transaction::{Lookup, Transactions};

/// How a message arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Bytes to send, and where (over TCP: back on the connection the request came on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

/// What happened to one incoming message, for metrics and logs.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered with this status.
    Answered(u16),
    /// A retransmission, answered again from the transaction.
    Retransmitted,
    /// Nothing to answer (a response, an ACK, a keep-alive).
    Absorbed,
    /// Too broken to answer at all: dropped.
    Dropped(ParseError),
}

pub struct Settings {
    /// The SIP domain (registrations are for `sip:user@domain`).
    pub domain: String,
    /// Other names the domain goes by (the listen address).
    pub aliases: Vec<String>,
    pub accounts: Vec<Account>,
    /// The key nonces are made with.
    pub nonce_secret: String,
}

pub struct Endpoint {
    domain: String,
    aliases: Vec<String>,
    pub registrar: Registrar,
    transactions: Transactions,
}

const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, REFER, NOTIFY";
const SERVER: &str = concat!("Switchboard/", env!("CARGO_PKG_VERSION"));

impl Endpoint {
    pub fn new(settings: Settings) -> Endpoint {
        Endpoint {
            registrar: Registrar::new(&settings.domain, &settings.accounts, &settings.nonce_secret),
            domain: settings.domain,
            aliases: settings.aliases,
            transactions: Transactions::default(),
        }
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    fn ours(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case(&self.domain) || self.aliases.iter().any(|a| a.eq_ignore_ascii_case(host))
    }

    /// Takes one message; returns what to send back, if anything, and what happened.
    pub fn receive(&mut self, bytes: &[u8], from: SocketAddr, transport: Transport, now_ms: u64) -> (Option<Reply>, Outcome) {
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return (None, Outcome::Absorbed); // CRLF keep-alive (RFC 5626 §3.5.1)
        }
        let msg = match Message::parse(bytes, transport == Transport::Udp) {
            Ok(m) => m,
            Err(e) => return self.bad_request(bytes, from, transport, e),
        };
        let StartLine::Request { method, .. } = &msg.start else {
            return (None, Outcome::Absorbed); // no client transactions yet: a stray response
        };
        let method = method.clone();
        let parsed = (|| {
            let via = Via::parse(msg.headers.get("Via").unwrap_or_default())?;
            let cseq = CSeq::parse(msg.headers.get("CSeq").unwrap_or_default())?;
            let to = NameAddr::parse(msg.headers.get("To").unwrap_or_default()).map_err(|e| ParseError(format!("To {}", e.0)))?;
            NameAddr::parse(msg.headers.get("From").unwrap_or_default()).map_err(|e| ParseError(format!("From {}", e.0)))?;
            if cseq.method != method && method != "ACK" && method != "CANCEL" {
                return Err(ParseError(format!("CSeq method {} is not the request's method {method}", shorten(&cseq.method))));
            }
            Ok((via, cseq, to))
        })();
        let (via, cseq, to) = match parsed {
            Ok(p) => p,
            Err(e) => return self.bad_request(bytes, from, transport, e),
        };
        let reply_to = response_address(&via, from, transport);
        // The transaction: the branch (RFC 3261), the method (an ACK or CANCEL belongs to its INVITE's
        // branch but CANCEL is a transaction of its own).
        let branch = via.branch().unwrap_or_default();
        let key = match method.as_str() {
            "ACK" => format!("{branch} INVITE"),
            m => format!("{branch} {m}"),
        };
        if method == "ACK" {
            // An ACK to our non-2xx answer ends that transaction (its retransmissions stop when the
            // client stops sending the INVITE); there are no dialogs yet whose 2xx it could confirm.
            return (None, Outcome::Absorbed);
        }
        if transport == Transport::Udp
            && let Lookup::Retransmit(to, bytes) = self.transactions.lookup(&key, now_ms)
        {
            return (Some(Reply { to, bytes }), Outcome::Retransmitted);
        }
        let answer = match msg.headers.get("Max-Forwards").map(|m| m.trim().parse::<u32>()) {
            Some(Err(_)) => Answer { code: 400, reason: "Bad Request (Max-Forwards is not a number)".into(), headers: vec![] },
            Some(Ok(0)) if method != "OPTIONS" => Answer { code: 483, reason: "Too Many Hops".into(), headers: vec![] },
            _ => self.answer(&msg, &method, &to, &cseq, now_ms),
        };
        let code = answer.code;
        let bytes = response(&msg.headers, answer, &key, from).to_bytes();
        if transport == Transport::Udp {
            self.transactions.answered(key, reply_to, bytes.clone(), now_ms);
        }
        (Some(Reply { to: reply_to, bytes }), Outcome::Answered(code))
    }

    fn answer(&mut self, msg: &Message, method: &str, to: &NameAddr, cseq: &CSeq, now_ms: u64) -> Answer {
        let plain = |code: u16, reason: &str| Answer { code, reason: reason.to_owned(), headers: vec![] };
        match method {
            "REGISTER" => {
                let aor = match to.sip_uri() {
                    Ok(u) => u,
                    Err(e) => return plain(400, &format!("Bad Request (To {e})")),
                };
                if !self.ours(&aor.host) {
                    return plain(404, &format!("Not Found ({} is not this registrar's domain {})", shorten(&aor.host), self.domain));
                }
                let Some(user) = aor.user else {
                    return plain(400, "Bad Request (To names no user to register)");
                };
                let call_id = msg.headers.get("Call-ID").unwrap_or_default().to_owned();
                self.registrar.register(msg, &user, &call_id, cseq.seq, now_ms)
            }
            "OPTIONS" => Answer {
                code: 200,
                reason: "OK".into(),
                headers: vec![("Allow", ALLOW.into()), ("Accept", "application/sdp".into()), ("Supported", "replaces".into())],
            },
            "INVITE" => plain(501, "Not Implemented (calls over SIP are not served yet)"),
            "BYE" | "CANCEL" | "NOTIFY" | "REFER" => plain(481, "Call/Transaction Does Not Exist"),
            _ => Answer { code: 405, reason: "Method Not Allowed".into(), headers: vec![("Allow", ALLOW.into())] },
        }
    }

    /// A message that could not be understood gets a 400 naming the problem, if enough of it can be
    /// read to address an answer; otherwise it is dropped.
    fn bad_request(&mut self, bytes: &[u8], from: SocketAddr, transport: Transport, problem: ParseError) -> (Option<Reply>, Outcome) {
        let Some(headers) = salvage(bytes) else {
            return (None, Outcome::Dropped(problem));
        };
        let Ok(via) = Via::parse(headers.get("Via").unwrap_or_default()) else {
            return (None, Outcome::Dropped(problem));
        };
        let answer = Answer { code: 400, reason: format!("Bad Request ({problem})"), headers: vec![] };
        let key = via.branch().unwrap_or_default().to_owned();
        let bytes = response(&headers, answer, &key, from).to_bytes();
        (Some(Reply { to: response_address(&via, from, transport), bytes }), Outcome::Answered(400))
    }
}

/// The headers of a request too broken to parse, if it has what a response must copy.
fn salvage(bytes: &[u8]) -> Option<Headers> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.lines();
    let first = lines.next()?;
    if first.starts_with("SIP/2.0") {
        return None; // never answer a response
    }
    let mut headers = Headers::default();
    for line in lines.take_while(|l| !l.trim().is_empty()) {
        if let Some((n, v)) = line.split_once(':')
            && !n.trim().is_empty()
            && !n.contains(' ')
        {
            headers.push(n.trim(), v.trim());
        }
    }
    ["Via", "From", "To", "Call-ID", "CSeq"].iter().all(|h| headers.get(h).is_some()).then_some(headers)
}

/// Where a response goes (RFC 3261 §18.2.2, RFC 3581): over TCP, back on the connection; over UDP,
/// to the source address, at the source port if the client asked with `rport`, else at the Via's port.
fn response_address(via: &Via, from: SocketAddr, transport: Transport) -> SocketAddr {
    if transport == Transport::Tcp || via.params.get("rport").is_some() {
        return from;
    }
    SocketAddr::new(from.ip(), via.port.unwrap_or(5060))
}

/// A response to a request with `headers`: Via, From, To (tagged), Call-ID and CSeq copied (§8.2.6).
fn response(headers: &Headers, answer: Answer, key: &str, from: SocketAddr) -> Message {
    let mut out = Headers::default();
    for (i, via) in headers.all("Via").into_iter().enumerate() {
        // The top Via records where the request really came from (RFC 3261 §18.2.1, RFC 3581).
        match Via::parse(via) {
            Ok(mut top) if i == 0 => {
                stamp_via(&mut top, from);
                out.push("Via", top.to_string());
            }
            _ => out.push("Via", via),
        }
    }
    for name in ["From", "To", "Call-ID", "CSeq"] {
        let value = headers.get(name).unwrap_or_default();
        if name == "To" && answer.code > 100 && !value.contains(";tag=") {
            out.push(name, format!("{value};tag={}", &crate::digest::md5_hex(key)[..10]));
        } else {
            out.push(name, value);
        }
    }
    out.push("Server", SERVER);
    for (name, value) in answer.headers {
        out.push(name, value);
    }
    Message { start: StartLine::Response { code: answer.code, reason: answer.reason }, headers: out, body: Vec::new() }
}

/// Adds `received` and `rport` to the top Via of a request from `from` (RFC 3581 §4).
fn stamp_via(via: &mut Via, from: SocketAddr) {
    let ip = from.ip();
    if via.host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() != Ok(ip) {
        via.params.set("received", Some(ip.to_string()));
    }
    if via.params.get("rport").is_some() {
        via.params.set("rport", Some(from.port().to_string()));
    }
}
