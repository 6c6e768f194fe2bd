//! A call from a phone, with Switchboard as the UAS (RFC 3261 §13.3, §12.1.1, §15): from the INVITE to
//! the BYE, sans-IO. It builds the responses and the BYE, and knows what must be sent again when:
//! a 2xx until its ACK (§13.3.1.4), a non-2xx final until its ACK (Timer G, H), our BYE until its
//! answer (Timer E, F).

use std::net::SocketAddr;

use crate::message::{Headers, Message, StartLine};
use crate::sdp::{self, Offer};
use crate::transaction::T1_MS;

/// T2: retransmission intervals stop doubling here.
pub const T2_MS: u64 = 4_000;

/// Something to send again until answered.
#[derive(Clone, Debug)]
struct Retransmit {
    bytes: Vec<u8>,
    next_at: u64,
    interval: u64,
    give_up_at: u64,
}

impl Retransmit {
    fn new(bytes: Vec<u8>, now: u64) -> Retransmit {
        Retransmit { bytes, next_at: now + T1_MS, interval: T1_MS, give_up_at: now + 64 * T1_MS }
    }

    /// The bytes, if they are due now; the next time doubles up to T2.
    fn due(&mut self, now: u64) -> Option<Vec<u8>> {
        if now < self.next_at {
            return None;
        }
        self.interval = (self.interval * 2).min(T2_MS);
        self.next_at = now + self.interval;
        Some(self.bytes.clone())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The INVITE is being answered: ringing at the bot.
    Ringing,
    /// We answered 2xx and wait for the ACK.
    Answered,
    /// The ACK came: media flows.
    Confirmed,
    /// We answered with an error and wait for the ACK.
    Refused,
    /// Over: BYE sent or received, or the INVITE failed.
    Ended,
}

/// What the call has to tell the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallEvent {
    /// The ACK to our 2xx arrived.
    Connected,
    /// The phone hung up (BYE), or gave up before the bot answered (CANCEL).
    HungUp,
    /// The phone never acknowledged our 2xx: the call is over (a BYE was sent).
    Lost,
    /// How the blind transfer `transfer_id` ends (RFC 3515, RFC 5589): the phone reached the target
    /// (`Accepted` then `Completed`, on the 2xx sipfrag), or did not (`Failed` with the SIP status that
    /// says why: the REFER's answer, or the target's in the NOTIFY). The phone taking the REFER (202)
    /// is no news for Graph: `transferAccepted` means the target took the call, and it cannot be undone.
    Transfer { transfer_id: String, progress: Progress },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    Accepted,
    Completed,
    Failed(u16),
}

/// A blind transfer in flight: the REFER we sent and what the phone reported.
#[derive(Clone, Debug)]
struct Refer {
    transfer_id: String,
    cseq: u32,
    /// Given up by the engine (its deadline): later news changes nothing.
    abandoned: bool,
}

#[derive(Debug)]
pub struct InboundCall {
    pub graph_id: String,
    pub phase: Phase,
    /// Where the phone is (responses and our requests go there).
    pub peer: SocketAddr,
    invite: Headers,
    call_id: String,
    local_tag: String,
    remote_target: String,
    route_set: Vec<String>,
    invite_cseq: u32,
    local_cseq: u32,
    pub offer: Option<Offer>,
    /// The final response, for the INVITE's retransmissions.
    final_response: Option<Vec<u8>>,
    pending: Option<Retransmit>,
    bye: Option<Retransmit>,
    /// A REFER being sent (until answered), and the transfer it carries.
    refer_tx: Option<Retransmit>,
    refer: Option<Refer>,
    /// Our SDP session id and version (bumped on every change).
    session: (u64, u64),
}

fn header(headers: &Headers, name: &str) -> String {
    headers.get(name).unwrap_or_default().to_owned()
}

impl InboundCall {
    /// A call for the INVITE `req` from `peer`, with our `local_tag` for To.
    pub fn new(graph_id: &str, req: &Message, peer: SocketAddr, local_tag: &str, invite_cseq: u32, session_id: u64) -> InboundCall {
        let remote_target = req
            .headers
            .get("Contact")
            .and_then(|c| crate::header::name_addr::NameAddr::parse(c).ok())
            .map_or_else(|| format!("sip:{peer}"), |a| a.uri);
        let offer = (!req.body.is_empty()).then(|| sdp::parse(&req.body).ok()).flatten();
        InboundCall {
            graph_id: graph_id.to_owned(),
            phase: Phase::Ringing,
            peer,
            invite: req.headers.clone(),
            call_id: header(&req.headers, "Call-ID"),
            local_tag: local_tag.to_owned(),
            remote_target,
            // UAS: the Record-Route set as received (§12.1.1).
            route_set: req.headers.all("Record-Route").into_iter().map(str::to_owned).collect(),
            invite_cseq,
            local_cseq: 0,
            offer,
            final_response: None,
            pending: None,
            bye: None,
            refer_tx: None,
            refer: None,
            session: (session_id, 1),
        }
    }

    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// A response to the INVITE (§8.2.6, §12.1.1: our tag on To, our Contact on 1xx-2xx).
    fn response(&self, code: u16, reason: &str, contact: Option<&str>, body: Option<String>) -> Vec<u8> {
        let mut h = Headers::default();
        for via in self.invite.all("Via") {
            h.push("Via", via);
        }
        for rr in self.invite.all("Record-Route") {
            h.push("Record-Route", rr);
        }
        h.push("From", header(&self.invite, "From"));
        h.push("To", format!("{};tag={}", header(&self.invite, "To"), self.local_tag));
        h.push("Call-ID", self.call_id.clone());
        h.push("CSeq", format!("{} INVITE", self.invite_cseq));
        if let Some(c) = contact {
            h.push("Contact", format!("<{c}>"));
        }
        h.push("Server", concat!("Switchboard/", env!("CARGO_PKG_VERSION")));
        let body = match body {
            Some(b) => {
                h.push("Content-Type", "application/sdp");
                b.into_bytes()
            }
            None => Vec::new(),
        };
        Message { start: StartLine::Response { code, reason: reason.to_owned() }, headers: h, body }.to_bytes()
    }

    pub fn ringing(&self, contact: &str) -> Vec<u8> {
        self.response(180, "Ringing", Some(contact), None)
    }

    /// Answers 200 with our SDP (media at `address:port`). `Err`: the offer has nothing we can take;
    /// the call is then refused with 488.
    pub fn answer(&mut self, contact: &str, address: &str, port: u16, now: u64) -> Result<Vec<u8>, Vec<u8>> {
        let offer = self.offer.clone().unwrap_or(Offer { media: Vec::new() });
        match sdp::answer(&offer, address, port, self.session) {
            Ok((body, _agreed)) => {
                let bytes = self.response(200, "OK", Some(contact), Some(body));
                self.phase = Phase::Answered;
                self.final_response = Some(bytes.clone());
                self.pending = Some(Retransmit::new(bytes.clone(), now));
                Ok(bytes)
            }
            Err(e) => Err(self.refuse(488, &format!("Not Acceptable Here ({e})"), now)),
        }
    }

    /// Refuses the INVITE with a final error; it is sent again until the ACK (Timer G/H).
    pub fn refuse(&mut self, code: u16, reason: &str, now: u64) -> Vec<u8> {
        let bytes = self.response(code, reason, None, None);
        self.phase = Phase::Refused;
        self.final_response = Some(bytes.clone());
        self.pending = Some(Retransmit::new(bytes.clone(), now));
        bytes
    }

    /// The INVITE came again: the last response again (none while still ringing: the 180 was sent).
    pub fn invite_again(&self) -> Option<Vec<u8>> {
        self.final_response.clone()
    }

    /// The ACK: an answered call is confirmed; a refused one is over.
    pub fn ack(&mut self) -> Option<CallEvent> {
        self.pending = None;
        match self.phase {
            Phase::Answered => {
                self.phase = Phase::Confirmed;
                Some(CallEvent::Connected)
            }
            Phase::Refused => {
                self.phase = Phase::Ended;
                None
            }
            _ => None,
        }
    }

    /// A request of ours in the dialog (§12.2.1.1): the next CSeq, the route set, the roles swapped
    /// (our To-with-tag is From, their From is To).
    fn request(&mut self, method: &str, contact: &str, local: SocketAddr, extra: &[(&str, String)]) -> (u32, Vec<u8>) {
        self.local_cseq += 1;
        let mut h = Headers::default();
        h.push("Via", format!("SIP/2.0/UDP {local};branch=z9hG4bK{}-{};rport", self.local_tag, self.local_cseq));
        h.push("Max-Forwards", "70");
        for route in &self.route_set {
            h.push("Route", route.clone());
        }
        h.push("From", format!("{};tag={}", header(&self.invite, "To"), self.local_tag));
        h.push("To", header(&self.invite, "From"));
        h.push("Call-ID", self.call_id.clone());
        h.push("CSeq", format!("{} {method}", self.local_cseq));
        h.push("Contact", format!("<{contact}>"));
        for (name, value) in extra {
            h.push(name, value.clone());
        }
        let msg =
            Message { start: StartLine::Request { method: method.into(), uri: self.remote_target.clone() }, headers: h, body: Vec::new() };
        (self.local_cseq, msg.to_bytes())
    }

    /// We hang up: a BYE in the dialog (§15.1.1), sent again until answered.
    pub fn bye(&mut self, contact: &str, local: SocketAddr, now: u64) -> Vec<u8> {
        let (_, bytes) = self.request("BYE", contact, local, &[]);
        self.phase = Phase::Ended;
        self.pending = None;
        self.refer_tx = None;
        self.bye = Some(Retransmit::new(bytes.clone(), now));
        bytes
    }

    /// A blind transfer: REFER the phone to `refer_to`, naming `referred_by` (RFC 3515, RFC 3892).
    /// `None` if the call is not confirmed or already transferring.
    pub fn refer(
        &mut self,
        transfer_id: &str,
        refer_to: &str,
        referred_by: &str,
        contact: &str,
        local: SocketAddr,
        now: u64,
    ) -> Option<Vec<u8>> {
        if self.phase != Phase::Confirmed || self.refer.as_ref().is_some_and(|r| !r.abandoned) {
            return None;
        }
        let extra = [("Refer-To", format!("<{refer_to}>")), ("Referred-By", format!("<{referred_by}>"))];
        let (cseq, bytes) = self.request("REFER", contact, local, &extra);
        self.refer = Some(Refer { transfer_id: transfer_id.to_owned(), cseq, abandoned: false });
        self.refer_tx = Some(Retransmit::new(bytes.clone(), now));
        Some(bytes)
    }

    /// The engine gave the transfer up (its deadline): what the phone reports from now on is ignored.
    /// Returns whether it was still in flight.
    pub fn abandon_transfer(&mut self, transfer_id: &str) -> bool {
        match &mut self.refer {
            Some(r) if r.transfer_id == transfer_id && !r.abandoned => {
                r.abandoned = true;
                self.refer_tx = None;
                true
            }
            _ => false,
        }
    }

    /// The phone answered our REFER (`cseq`) with `code`.
    pub fn refer_answered(&mut self, cseq: u32, code: u16) -> Option<CallEvent> {
        let refer = self.refer.as_mut().filter(|r| r.cseq == cseq && !r.abandoned)?;
        if code < 200 {
            return None;
        }
        self.refer_tx = None;
        let transfer_id = refer.transfer_id.clone();
        if code < 300 {
            return None; // taken; the NOTIFYs tell how it goes
        }
        self.refer = None;
        Some(CallEvent::Transfer { transfer_id, progress: Progress::Failed(code) })
    }

    /// A NOTIFY of the REFER's implicit subscription, with its sipfrag status (RFC 3515 §2.4.5): the
    /// events it means, in order.
    pub fn refer_notified(&mut self, sipfrag_status: u16) -> Vec<CallEvent> {
        let Some(refer) = self.refer.as_mut().filter(|r| !r.abandoned) else { return Vec::new() };
        // A NOTIFY before the 202 also means the REFER was taken (RFC 3515 §2.4.4).
        self.refer_tx = None;
        let transfer_id = refer.transfer_id.clone();
        let mut out = Vec::new();
        match sipfrag_status {
            100..=199 => {}
            200..=299 => {
                self.refer = None;
                out.push(CallEvent::Transfer { transfer_id: transfer_id.clone(), progress: Progress::Accepted });
                out.push(CallEvent::Transfer { transfer_id, progress: Progress::Completed });
            }
            code => {
                self.refer = None;
                out.push(CallEvent::Transfer { transfer_id, progress: Progress::Failed(code) });
            }
        }
        out
    }

    /// The answer to our BYE arrived.
    pub fn bye_answered(&mut self) {
        self.bye = None;
    }

    /// Whether nothing is left to send or wait for.
    pub fn finished(&self) -> bool {
        self.phase == Phase::Ended && self.bye.is_none() && self.pending.is_none()
    }

    /// What is due again at `now`, and what giving up means.
    pub fn poll(&mut self, now: u64) -> (Vec<Vec<u8>>, Option<CallEvent>) {
        let mut out = Vec::new();
        let mut event = None;
        if let Some(p) = &mut self.pending {
            if now >= p.give_up_at {
                self.pending = None;
                if self.phase == Phase::Answered {
                    // §13.3.1.4: no ACK to our 2xx within 64·T1: the dialog is confirmed, then ended by BYE.
                    event = Some(CallEvent::Lost);
                } else {
                    self.phase = Phase::Ended;
                }
            } else if let Some(bytes) = p.due(now) {
                out.push(bytes);
            }
        }
        if let Some(r) = &mut self.refer_tx {
            if now >= r.give_up_at {
                // Timer F: the phone never answered the REFER.
                self.refer_tx = None;
                if let Some(refer) = self.refer.take().filter(|r| !r.abandoned) {
                    event = Some(CallEvent::Transfer { transfer_id: refer.transfer_id, progress: Progress::Failed(408) });
                }
            } else if let Some(bytes) = r.due(now) {
                out.push(bytes);
            }
        }
        if let Some(b) = &mut self.bye {
            if now >= b.give_up_at {
                self.bye = None; // Timer F: the phone is gone
            } else if let Some(bytes) = b.due(now) {
                out.push(bytes);
            }
        }
        (out, event)
    }

    /// The earliest time something may be due.
    pub fn next_due(&self) -> Option<u64> {
        [self.pending.as_ref(), self.bye.as_ref(), self.refer_tx.as_ref()].into_iter().flatten().map(|r| r.next_at.min(r.give_up_at)).min()
    }
}
