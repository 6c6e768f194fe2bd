//! The registrar (RFC 3261 §10.3) with Digest authentication: which contacts each user is reached at.
//! Sans-IO: it takes a parsed REGISTER and the time, and says what to answer.

use std::collections::HashMap;

use crate::digest::{self, Nonce, Nonces};
use crate::header::authorization::{Challenge, Credentials};
use crate::header::contact::Contact;
use crate::message::Message;

/// A user's SIP account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub username: String,
    pub password: String,
}

/// Registrations last an hour unless the client asks for less (or more, up to a day).
pub const DEFAULT_EXPIRES_S: u32 = 3600;
pub const MAX_EXPIRES_S: u32 = 86_400;
/// Shorter registrations are refused with 423 (RFC 3261 §10.3 step 7).
pub const MIN_EXPIRES_S: u32 = 60;

/// Where a registered user is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub uri: String,
    pub expires_at_ms: u64,
    pub call_id: String,
    pub cseq: u32,
    /// A registration made over TCP or TLS: the connection it came on (the peer's address) and its
    /// transport. Requests to the phone go on that connection while it is open, as a phone behind it
    /// expects (the flow of RFC 5626); after that, to the contact, as for any other.
    pub flow: Option<(std::net::SocketAddr, &'static str)>,
}

/// What to answer a REGISTER with.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub code: u16,
    pub reason: String,
    pub headers: Vec<(&'static str, String)>,
}

impl Answer {
    fn new(code: u16, reason: impl Into<String>) -> Answer {
        Answer { code, reason: reason.into(), headers: Vec::new() }
    }
    fn with(mut self, name: &'static str, value: String) -> Answer {
        self.headers.push((name, value));
        self
    }
}

pub struct Registrar {
    realm: String,
    accounts: HashMap<String, String>,
    nonces: Nonces,
    bindings: HashMap<String, Vec<Binding>>,
}

impl Registrar {
    pub fn new(realm: &str, accounts: &[Account], nonce_secret: &str) -> Registrar {
        Registrar {
            realm: realm.to_owned(),
            accounts: accounts.iter().map(|a| (a.username.clone(), a.password.clone())).collect(),
            nonces: Nonces::new(nonce_secret),
            bindings: HashMap::new(),
        }
    }

    fn challenge(&self, client: &str, now_ms: u64, stale: bool) -> Answer {
        let nonce = self.nonces.mint(now_ms, client);
        Answer::new(401, "Unauthorized").with("WWW-Authenticate", Challenge { realm: &self.realm, nonce: &nonce, stale }.to_string())
    }

    /// Answers a REGISTER whose To names `user` (the endpoint checked the domain).
    /// `stream`: the transport of a connection (`"TCP"`, `"TLS"`), `None` over UDP.
    #[allow(clippy::too_many_arguments)]
    pub fn register(
        &mut self,
        req: &Message,
        from: std::net::SocketAddr,
        stream: Option<&'static str>,
        user: &str,
        call_id: &str,
        cseq: u32,
        now_ms: u64,
    ) -> Answer {
        match self.authenticate(req, from, now_ms) {
            Ok(name) if name == user => self.update(req, from, stream, user, call_id, cseq, now_ms),
            Ok(name) => Answer::new(403, format!("Forbidden ('{name}' may not register '{user}')")),
            Err(answer) => answer,
        }
    }

    /// Checks a request's Digest credentials: the user name they prove, or the answer to send (a
    /// challenge, 400 or 403).
    pub fn authenticate(&self, req: &Message, from: std::net::SocketAddr, now_ms: u64) -> Result<String, Answer> {
        let client = from.ip().to_string();
        let Some(auth) = req.headers.get("Authorization") else {
            return Err(self.challenge(&client, now_ms, false));
        };
        let creds = Credentials::parse(auth).map_err(|e| Answer::new(400, format!("Bad Request ({e})")))?;
        if creds.realm != self.realm {
            return Err(self.challenge(&client, now_ms, false));
        }
        match self.nonces.check(&creds.nonce, &client, now_ms) {
            Nonce::Fresh => {}
            Nonce::Stale => return Err(self.challenge(&client, now_ms, true)),
            Nonce::Forged => return Err(self.challenge(&client, now_ms, false)),
        }
        // The credentials are for this server (RFC 2617 §3.2.2.5: the same resource as the
        // Request-URI), not replayed from another. Host and port are compared: agents disagree on the
        // user part (SIPp leaves it out); the nonce is bound to the client's address besides.
        let same_place = |a: &str, b: &str| match (crate::uri::SipUri::parse(a), crate::uri::SipUri::parse(b)) {
            (Ok(a), Ok(b)) => a.host == b.host && a.port.unwrap_or(5060) == b.port.unwrap_or(5060),
            _ => false,
        };
        if let crate::message::StartLine::Request { uri, .. } = &req.start
            && !same_place(&creds.uri, uri)
        {
            return Err(Answer::new(
                400,
                format!("Bad Request (the Authorization uri '{}' is not the Request-URI)", crate::message::shorten(&creds.uri)),
            ));
        }
        if let Some(a) = creds.algorithm.as_deref().filter(|a| !a.eq_ignore_ascii_case("MD5")) {
            return Err(Answer::new(400, format!("Bad Request (algorithm {a} is not supported; use MD5)")));
        }
        let method = req.method().unwrap_or("REGISTER");
        // One answer for an unknown user and a wrong password: which user names exist is no one's business.
        let good = self.accounts.get(&creds.username).is_some_and(|pw| {
            digest::constant_time_eq(digest::expected_response(&creds, pw, method).as_bytes(), creds.response.as_bytes())
        });
        if !good {
            return Err(Answer::new(403, "Forbidden (wrong user name or password)"));
        }
        Ok(creds.username)
    }

    #[allow(clippy::too_many_arguments)]
    fn update(
        &mut self,
        req: &Message,
        from: std::net::SocketAddr,
        stream: Option<&'static str>,
        user: &str,
        call_id: &str,
        cseq: u32,
        now_ms: u64,
    ) -> Answer {
        let mut contacts = Vec::new();
        for value in req.headers.all("Contact") {
            match Contact::parse(value) {
                Ok(c) => contacts.push(c),
                Err(e) => return Answer::new(400, format!("Bad Request ({e})")),
            }
        }
        let default_expires = match req.headers.get("Expires").map(|e| e.trim().parse::<u32>()) {
            None => DEFAULT_EXPIRES_S,
            Some(Ok(e)) => e,
            Some(Err(_)) => return Answer::new(400, "Bad Request (Expires is not a number of seconds)"),
        };
        let bindings = self.bindings.entry(user.to_owned()).or_default();
        bindings.retain(|b| b.expires_at_ms > now_ms);
        if contacts.contains(&Contact::All) {
            if contacts.len() != 1 || default_expires != 0 {
                return Answer::new(400, "Bad Request (Contact: * must be alone, with Expires: 0)");
            }
            bindings.clear();
        }
        for c in &contacts {
            let Contact::Addr(addr) = c else { continue };
            let expires = c.expires().unwrap_or(default_expires).min(MAX_EXPIRES_S);
            if expires > 0 && expires < MIN_EXPIRES_S {
                return Answer::new(423, "Interval Too Brief").with("Min-Expires", MIN_EXPIRES_S.to_string());
            }
            // A phone registers itself, not someone else: Switchboard sends calls and proxied requests
            // to contacts, so a contact elsewhere would make it a relay (no NAT traversal yet).
            let at = crate::uri::SipUri::parse(&addr.uri).map(|u| u.host.trim_start_matches('[').trim_end_matches(']').to_owned());
            if expires > 0 && at.as_deref().ok() != Some(from.ip().to_string().as_str()) {
                return Answer::new(
                    403,
                    format!(
                        "Forbidden (contact {} is not at {}, where the REGISTER came from)",
                        crate::message::shorten(&addr.uri),
                        from.ip()
                    ),
                );
            }
            if let Some(b) = bindings.iter().find(|b| b.uri == addr.uri)
                && b.call_id == call_id
                && b.cseq >= cseq
            {
                return Answer::new(500, "Server Internal Error (a REGISTER arrived out of order; retry)").with("Retry-After", "1".into());
            }
            bindings.retain(|b| b.uri != addr.uri);
            if expires > 0 {
                bindings.push(Binding {
                    uri: addr.uri.clone(),
                    expires_at_ms: now_ms + u64::from(expires) * 1000,
                    call_id: call_id.to_owned(),
                    cseq,
                    flow: stream.map(|t| (from, t)),
                });
            }
        }
        let mut answer = Answer::new(200, "OK");
        for b in bindings.iter() {
            answer.headers.push(("Contact", format!("<{}>;expires={}", b.uri, (b.expires_at_ms - now_ms).div_ceil(1000))));
        }
        if bindings.is_empty() {
            self.bindings.remove(user);
        }
        answer
    }

    /// Where `user` is registered now.
    pub fn contacts(&self, user: &str, now_ms: u64) -> Vec<String> {
        self.bindings_of(user, now_ms).map(|b| b.uri.clone()).collect()
    }

    /// `user`'s live bindings.
    pub fn bindings_of(&self, user: &str, now_ms: u64) -> impl Iterator<Item = &Binding> {
        self.bindings.get(user).into_iter().flatten().filter(move |b| b.expires_at_ms > now_ms)
    }

    /// The connection at `peer` closed: the registrations made on it are reached at their contacts
    /// from now on (a phone that registers with a flow registers again when it loses it). Returns how
    /// many there were.
    pub fn flow_closed(&mut self, peer: std::net::SocketAddr) -> usize {
        let mut n = 0;
        for b in self.bindings.values_mut().flatten().filter(|b| b.flow.is_some_and(|(at, _)| at == peer)) {
            b.flow = None;
            n += 1;
        }
        n
    }

    /// Whether `addr` is where some registered phone is (only those may send through the proxy).
    pub fn is_registered_source(&self, addr: std::net::SocketAddr, now_ms: u64) -> bool {
        self.bindings.values().flatten().filter(|b| b.expires_at_ms > now_ms).any(|b| {
            // A phone registered on a connection sends from that connection.
            b.flow.is_some_and(|(at, _)| at == addr)
                || crate::uri::SipUri::parse(&b.uri).is_ok_and(|c| {
                    c.host.trim_start_matches('[').trim_end_matches(']') == addr.ip().to_string() && c.port.unwrap_or(5060) == addr.port()
                })
        })
    }

    /// Whether `uri` is a contact some user is registered at now (only those are proxied to).
    pub fn is_registered_contact(&self, uri: &crate::uri::SipUri, now_ms: u64) -> bool {
        self.bindings.values().flatten().filter(|b| b.expires_at_ms > now_ms).any(|b| {
            crate::uri::SipUri::parse(&b.uri).is_ok_and(|c| c.host == uri.host && c.port.unwrap_or(5060) == uri.port.unwrap_or(5060))
        })
    }

    /// How many contacts are registered now.
    pub fn registered(&self, now_ms: u64) -> usize {
        self.bindings.values().flatten().filter(|b| b.expires_at_ms > now_ms).count()
    }
}
