//! One SIP call, sans-IO, from the INVITE to the BYE, in either role (RFC 3261 §12-§15):
//! - from a phone, with Switchboard as the UAS: it builds the responses, and sends again a 2xx until
//!   its ACK (§13.3.1.4) and a non-2xx final until its ACK (Timer G, H);
//! - to a phone or a trunk, with Switchboard as the UAC: it sends the INVITE again until a response
//!   (Timer A, B), ACKs every final answer, and CANCELs a call that is given up while ringing (§9.1).
//!
//! In both roles it sends our in-dialog requests (BYE, REFER) again until answered (Timer E, F).

use std::net::SocketAddr;

use switchboard_core::media::CompletionReason;

use crate::header::cseq::CSeq;
use crate::message::{Headers, Message, StartLine};
use crate::sdp::{self, Offer};
use crate::transaction::T1_MS;

/// T2: retransmission intervals stop doubling here.
pub const T2_MS: u64 = 4_000;

/// How long a phone's BYE during its transfer waits for the transfer's final NOTIFY.
pub const BYE_GRACE_MS: u64 = 5_000;

/// How many times a failed resume (taking the transferee off hold) is tried.
pub const RESUME_ATTEMPTS: u32 = 3;

/// CSeq offset of the BYE we send an unwanted fork's dialog.
const STRAY_CSEQ: u32 = 1_000_000;

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

/// Who sent the INVITE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The phone called us.
    Uas,
    /// We called the phone (an outgoing Graph call).
    Uac,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// UAC: our INVITE is out and nothing has come back yet.
    Calling,
    /// UAS: the INVITE is being answered (ringing at the bot). UAC: the phone rings (a 1xx came).
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
    /// UAC: the phone rings (the first 1xx other than 100).
    Ringing,
    /// UAS: the ACK to our 2xx arrived. UAC: the phone answered (2xx, which we ACKed).
    Connected,
    /// UAC: the phone or trunk refused the call with this final status (408: nothing came back).
    Refused(u16),
    /// The phone hung up (BYE), or gave up before the bot answered (CANCEL).
    HungUp,
    /// The phone never acknowledged our 2xx: the call is over (a BYE was sent).
    Lost,
    /// The target of a consultative transfer took this call's place for the transferee of Graph call
    /// `by` (RFC 3891): its BYE on this dialog, after the INVITE with Replaces.
    Replaced { by: String },
    /// The phone pressed a key (`0`–`9`, `*`, `#`, `A`–`D`): an RFC 4733 event, or SIP INFO.
    Dtmf(char),
    /// The phone put the call on hold (`true`: its re-INVITE said `sendonly`, `inactive`, port 0 or
    /// `c=0.0.0.0`), or took it off hold (`false`).
    Hold(bool),
    /// The prompt of media operation `operation_id` played to its end.
    Played { operation_id: String },
    /// The tones of media operation `operation_id` have all been sent.
    TonesSent { operation_id: String },
    /// The recording of media operation `operation_id` ended: why, and its audio (8 kHz).
    Recorded { operation_id: String, reason: CompletionReason, samples: Vec<i16> },
    /// How the blind transfer `transfer_id` ends (RFC 3515, RFC 5589): the phone reached the target
    /// (`Accepted` then `Completed`, on the 2xx sipfrag), or did not (`Failed` with the SIP status that
    /// says why: the REFER's answer, or the target's in the NOTIFY). The phone taking the REFER (202)
    /// is no news for Graph: `transferAccepted` means the target took the call, and it cannot be undone.
    Transfer { transfer_id: String, progress: Progress },
}

/// One media tick of sending tones: a packet of an event (key 0–15, its tick within the event), or a
/// pause between keys.
#[derive(Clone, Debug)]
enum ToneFrame {
    Event {
        event: u8,
        tick: u16,
    },
    Pause,
    /// The tones of this operation have all gone.
    Done(String),
}

/// Each key is sent for 100 ms (5 ticks), its end packet twice more (RFC 4733 §2.5.1.4).
const TONE_TICKS: u16 = 5;

/// When a recording ends (from `recordResponse`), in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordLimits {
    pub initial_silence_ms: u64,
    pub max_silence_ms: u64,
    pub max_duration_ms: u64,
    pub stop_keys: Vec<char>,
}

/// What a packet's audio must reach to count as the caller speaking (about -30 dBFS).
const VOICE_RMS: f64 = 1_000.0;
/// 20 ms frames of a phone's audio kept for its conference (60 ms).
const MIX_FRAMES: usize = 3;

/// A recording under way.
#[derive(Clone, Debug)]
struct Capture {
    operation_id: String,
    limits: RecordLimits,
    started: u64,
    /// When the caller was last heard.
    voice: Option<u64>,
    samples: Vec<i16>,
}

impl Capture {
    /// A packet of G.711 audio: kept, and heard as speech if loud enough.
    fn audio(&mut self, bytes: &[u8], now: u64) {
        let Some(decoded) = crate::rtp::g711_samples(bytes) else { return };
        // Never more than the longest recording allows.
        let room = (self.limits.max_duration_ms * 8) as usize;
        let samples: Vec<i16> = decoded.take(room.saturating_sub(self.samples.len())).collect();
        let energy = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>() / samples.len().max(1) as f64;
        if energy.sqrt() >= VOICE_RMS {
            self.voice = Some(now);
        }
        self.samples.extend(samples);
    }
}

/// A prompt being played to the phone.
#[derive(Clone, Debug)]
struct Playback {
    operation_id: String,
    samples: std::sync::Arc<Vec<i16>>,
    /// The next sample to send.
    at: usize,
    looped: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    Accepted,
    Completed,
    /// The target could not be reached (the sipfrag's status, or the bridged target's answer).
    Failed(u16),
    /// The phone would not take the REFER: its answer (405, 420, 501…), or none (408, Timer F).
    Refused(u16),
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
pub struct SipCall {
    pub graph_id: String,
    pub role: Role,
    pub phase: Phase,
    /// Where the phone is (responses and our requests go there).
    pub peer: SocketAddr,
    /// UAS: the INVITE's headers (responses copy them). UAC: our INVITE (CANCEL and ACK copy it).
    invite: Headers,
    /// UAC: our INVITE as sent, for its retransmissions, its CANCEL and the ACK to an error.
    invite_request: Option<Message>,
    /// Our From (UAC) or To (UAS), with our tag: the From of our in-dialog requests.
    local_party: String,
    /// The other side's, with its tag once known: the To of our in-dialog requests.
    remote_party: String,
    call_id: String,
    local_tag: String,
    /// UAC: the ACK to the 2xx, sent again for every 2xx that comes again (§13.2.2.4).
    ack: Option<Vec<u8>>,
    /// UAC: given up while ringing; the CANCEL is out (or waits for a 1xx, §9.1).
    cancelled: bool,
    cancel_tx: Option<Retransmit>,
    /// UAC: a 180 or 183 came (Graph hears `ringing` once).
    rang: bool,
    /// UAC: kept this long after an error answer, to ACK it again if it comes again (Timer D).
    linger: Option<u64>,
    remote_target: String,
    route_set: Vec<String>,
    invite_cseq: u32,
    local_cseq: u32,
    pub offer: Option<Offer>,
    /// The final response, for the INVITE's retransmissions; until then the last provisional one
    /// (§17.2.1: a retransmitted INVITE gets the 180 again, in case it was lost).
    final_response: Option<Vec<u8>>,
    provisional: Option<Vec<u8>>,
    pending: Option<Retransmit>,
    /// UAC: our INVITE, until a response comes (Timer A, B).
    invite_tx: Option<Retransmit>,
    bye: Option<Retransmit>,
    /// A REFER being sent (until answered), and the transfer it carries.
    refer_tx: Option<Retransmit>,
    refer: Option<Refer>,
    /// Our SDP session id and version (bumped on every change).
    session: (u64, u64),
    /// Where our media is, once offered or answered (re-INVITEs offer it again).
    media: Option<SocketAddr>,
    /// Our re-INVITE (hold or resume) until its final answer.
    reinvite: Option<Reinvite>,
    /// The ACK to the last 2xx to our re-INVITE, for that 2xx coming again.
    reinvite_ack: Option<(u32, Vec<u8>)>,
    /// The phone is on hold (our sendonly re-INVITE was answered).
    held: bool,
    /// A REFER waiting for the hold to be answered: its Refer-To and Referred-By.
    queued_refer: Option<(String, String)>,
    /// The phone's last re-INVITE and our 2xx to it, for its retransmissions.
    their_reinvite: Option<(u32, Vec<u8>)>,
    /// The ACK to the last error answer to our re-INVITE, for that answer coming again.
    reinvite_error_ack: Option<(u32, Vec<u8>)>,
    /// A resume that failed is tried again from then (RFC 3261 §14.1's wait after a 491), a few times.
    resume_at: Option<u64>,
    resume_attempts: u32,
    /// UAC: our CANCEL went out (one CANCEL per INVITE).
    cancel_sent: bool,
    /// The transfer under way by bridging (we call the target ourselves, RFC 3725).
    pub bridging: Option<String>,
    /// Bridged: the SIP Call-ID of the other leg. The call is no Graph call any more; a BYE on one
    /// leg ends the other.
    pub partner: Option<String>,
    /// Where the phone's media is, from its SDP.
    pub remote_media: Option<SocketAddr>,
    /// The telephone-event payload type agreed (RFC 4733), and the press last reported (its RTP
    /// timestamp: every packet of one key press carries the same).
    dtmf: Option<u8>,
    last_press: Option<u32>,
    /// A prompt the bot plays (instead of comfort audio), and how far it has got.
    playing: Option<Playback>,
    /// Hold music: it loops under prompts (which play over it) until it is stopped.
    hold: Option<Playback>,
    /// A prompt that played to its end since the last look (its operation id).
    pub played: Option<String>,
    /// A recording of what the phone sends (`recordResponse`).
    capture: Option<Capture>,
    /// DTMF tones being sent (RFC 4733), a frame per media tick, and their operation.
    tones: std::collections::VecDeque<ToneFrame>,
    /// Tone operations all sent since the last look.
    pub tones_sent: Vec<String>,
    /// Our comfort audio to the phone, once the media is agreed; `quiet` while the phone has us on
    /// hold (it offered `sendonly` or `inactive`).
    pub rtp: Option<crate::rtp::Stream>,
    quiet: bool,
    /// In a group call's conference: what the phone sends is kept for the others in it to hear, 20
    /// ms taken each media tick whatever the phone's packet size (60 ms at most are kept: a phone
    /// that sends faster loses its oldest).
    pub mixing: bool,
    heard: std::collections::VecDeque<i16>,
    /// The transport our requests in this dialog say in their Via: the one the phone called us on.
    pub via_transport: &'static str,
    /// Our BYE's CSeq, so that only its answer stops its retransmissions.
    bye_cseq: u32,
    /// Whether we play comfort audio on this call (not on legs we place for a transfer: there the
    /// phone is to hear the other party).
    pub plays: bool,
    /// When the call stopped being a Graph call (bridged, handed over, joined elsewhere), for the
    /// longest such a call may last.
    pub detached_at: Option<u64>,
    /// The phone's BYE came while its REFER was under way: until then, its final NOTIFY decides.
    bye_grace: Option<u64>,
}

/// A re-INVITE of ours in flight.
#[derive(Debug)]
struct Reinvite {
    cseq: u32,
    request: Message,
    tx: Option<Retransmit>,
    give_up_at: u64,
    hold: bool,
}

fn header(headers: &Headers, name: &str) -> String {
    headers.get(name).unwrap_or_default().to_owned()
}

/// What an outgoing call is: who calls whom, and where the INVITE goes.
#[derive(Clone, Debug)]
pub struct Dial {
    pub graph_id: String,
    /// The Request-URI: a registered contact, or `sip:+number@trunk`.
    pub request_uri: String,
    /// To, e.g. `<sip:alex@sb.test>`.
    pub to: String,
    /// From, without our tag, e.g. `"Bot" <sip:app@sb.test>`.
    pub from: String,
    /// Where the INVITE is sent.
    pub peer: SocketAddr,
    pub call_id: String,
    pub local_tag: String,
    /// Our SDP offer.
    pub offer: String,
    /// Extra headers for the INVITE (e.g. `Referred-By`, `X-` headers).
    pub headers: Vec<(String, String)>,
    /// `UDP`, `TCP` or `TLS`, for the Via of this dialog's requests.
    pub transport: &'static str,
}

impl SipCall {
    /// An outgoing call: the INVITE to send (sent again until a response: Timer A).
    pub fn outbound(dial: Dial, media: SocketAddr, contact: &str, local: SocketAddr, session_id: u64, now: u64) -> (SipCall, Vec<u8>) {
        let mut h = Headers::default();
        h.push("Via", format!("SIP/2.0/{} {local};branch=z9hG4bK{}-1;rport", dial.transport, dial.local_tag));
        h.push("Max-Forwards", "70");
        h.push("From", format!("{};tag={}", dial.from, dial.local_tag));
        h.push("To", dial.to.clone());
        h.push("Call-ID", dial.call_id.clone());
        h.push("CSeq", "1 INVITE");
        h.push("Contact", format!("<{contact}>"));
        h.push("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, REFER, NOTIFY");
        h.push("User-Agent", concat!("Switchboard/", env!("CARGO_PKG_VERSION")));
        for (name, value) in &dial.headers {
            h.push(name, value.clone());
        }
        h.push("Content-Type", "application/sdp");
        let invite = Message {
            start: StartLine::Request { method: "INVITE".into(), uri: dial.request_uri.clone() },
            headers: h,
            body: dial.offer.into_bytes(),
        };
        let bytes = invite.to_bytes();
        let call = SipCall {
            role: Role::Uac,
            phase: Phase::Calling,
            invite: invite.headers.clone(),
            local_party: format!("{};tag={}", dial.from, dial.local_tag),
            remote_party: dial.to,
            remote_target: dial.request_uri,
            invite_request: Some(invite),
            invite_cseq: 1,
            local_cseq: 1,
            invite_tx: Some(Retransmit::new(bytes.clone(), now)),
            media: Some(media),
            via_transport: dial.transport,
            ..SipCall::blank(dial.graph_id, dial.peer, dial.call_id, dial.local_tag, session_id)
        };
        (call, bytes)
    }

    /// A request that shares our INVITE's transaction (CANCEL, the ACK to an error, §9.1, §17.1.1.3):
    /// its Request-URI, Via, From, Call-ID and Route; `to` as given.
    fn in_invite_transaction(&self, method: &str, to: &str) -> Option<Vec<u8>> {
        let invite = self.invite_request.as_ref()?;
        let mut h = Headers::default();
        for name in ["Via", "Max-Forwards", "From"] {
            h.push(name, header(&invite.headers, name));
        }
        h.push("To", to);
        h.push("Call-ID", self.call_id.clone());
        h.push("CSeq", format!("{} {method}", self.invite_cseq));
        let StartLine::Request { uri, .. } = &invite.start else { return None };
        Some(Message { start: StartLine::Request { method: method.to_owned(), uri: uri.clone() }, headers: h, body: Vec::new() }.to_bytes())
    }

    /// UAC: the bot gives up before the phone answered (the ring timeout, or a hang-up). The CANCEL,
    /// once a 1xx says the phone has the INVITE (§9.1); until then it waits.
    pub fn cancel(&mut self, now: u64) -> Option<Vec<u8>> {
        if self.role != Role::Uac || !matches!(self.phase, Phase::Calling | Phase::Ringing) {
            return None;
        }
        self.cancelled = true;
        if self.phase == Phase::Calling || self.cancel_sent {
            return None;
        }
        let bytes = self.in_invite_transaction("CANCEL", &self.remote_party.clone())?;
        self.cancel_sent = true;
        self.cancel_tx = Some(Retransmit::new(bytes.clone(), now));
        Some(bytes)
    }

    /// The phone hung up (BYE). Usually that is all; but with a REFER out it may be the transfer's own
    /// end racing its NOTIFY (research/sip.md §2, row 9): the hang-up waits `BYE_GRACE_MS` for the
    /// final NOTIFY, and a 2xx makes it a completed transfer; anything else (or nothing) a hang-up.
    pub fn their_bye(&mut self, now: u64) -> Vec<CallEvent> {
        self.phase = Phase::Ended;
        self.pending = None;
        self.reinvite = None;
        self.refer_tx = None;
        if self.refer.as_ref().is_some_and(|r| r.cseq != 0 && !r.abandoned) {
            self.bye_grace = Some(now + BYE_GRACE_MS);
            return Vec::new();
        }
        vec![CallEvent::HungUp]
    }

    /// Ends the wait of a BYE for its transfer's NOTIFY (the transfer was given up): `true` if one was
    /// waiting, and then the phone's hang-up is the news.
    pub fn end_bye_grace(&mut self) -> bool {
        let waiting = self.bye_grace.take().is_some();
        if waiting {
            self.refer = None;
        }
        waiting
    }

    /// Whether a request with this From belongs to this dialog: the phone's tag (if we know it yet),
    /// which tells the forks of one INVITE apart (§12.2.2; our own tag is the same in all of them).
    pub fn in_dialog(&self, from: &str) -> bool {
        let theirs = tag_of(&self.remote_party);
        theirs.is_none() || tag_of(from) == theirs
    }

    /// The answer to our CANCEL arrived: the INVITE's final answer (487) should follow; if it never
    /// does, the call is given up 64·T1 from now (§9.1).
    pub fn cancel_answered(&mut self, now: u64) {
        if self.cancel_tx.take().is_some() {
            self.linger = Some(now + 64 * T1_MS);
        }
    }

    /// ACK and BYE for a 2xx that made a dialog we do not want (another fork, or too late): built
    /// from the response alone, in that dialog.
    fn stray_dialog(&self, msg: &Message, contact: &str, local: SocketAddr) -> Vec<Vec<u8>> {
        let target = msg
            .headers
            .get("Contact")
            .and_then(|c| crate::header::name_addr::NameAddr::parse(c).ok())
            .map_or_else(|| self.remote_target.clone(), |a| a.uri);
        let routes: Vec<String> = msg.headers.all("Record-Route").into_iter().rev().map(str::to_owned).collect();
        let build = |method: &str, cseq: u32| {
            let mut h = Headers::default();
            h.push(
                "Via",
                format!(
                    "SIP/2.0/{} {local};branch=z9hG4bK{}-stray{cseq}-{};rport",
                    self.via_transport,
                    self.local_tag,
                    method.to_ascii_lowercase()
                ),
            );
            h.push("Max-Forwards", "70");
            for r in &routes {
                h.push("Route", r.clone());
            }
            h.push("From", self.local_party.clone());
            h.push("To", header(&msg.headers, "To"));
            h.push("Call-ID", self.call_id.clone());
            h.push("CSeq", format!("{cseq} {method}"));
            h.push("Contact", format!("<{contact}>"));
            Message { start: StartLine::Request { method: method.into(), uri: target.clone() }, headers: h, body: Vec::new() }.to_bytes()
        };
        // The BYE's CSeq is out of the way of ours, so that its answer is not taken for our BYE's.
        vec![build("ACK", self.invite_cseq), build("BYE", self.invite_cseq + STRAY_CSEQ)]
    }

    /// UAC: a response to our INVITE. Returns what to send (ACKs, a CANCEL, a BYE) and what it means.
    pub fn invite_answered(&mut self, msg: &Message, contact: &str, local: SocketAddr, now: u64) -> (Vec<Vec<u8>>, Vec<CallEvent>) {
        let mut out = Vec::new();
        let mut events = Vec::new();
        let StartLine::Response { code, .. } = msg.start else { return (out, events) };
        let cseq = CSeq::parse(msg.headers.get("CSeq").unwrap_or_default()).map_or(0, |c| c.seq);
        if self.role != Role::Uac || cseq != self.invite_cseq {
            return (out, events);
        }
        self.invite_tx = None; // any response stops Timer A (§17.1.1.2)
        let to = header(&msg.headers, "To");
        match code {
            100..=199 => {
                if self.phase == Phase::Calling {
                    self.phase = Phase::Ringing;
                    if self.cancelled {
                        out.extend(self.cancel(now));
                    } else if code != 100 {
                        events.push(CallEvent::Ringing);
                    }
                    self.rang |= code != 100;
                    return (out, events);
                } else if self.phase == Phase::Ringing && code != 100 && !self.cancelled && !self.rang {
                    events.push(CallEvent::Ringing);
                }
                self.rang |= code != 100;
            }
            200..=299 => {
                let same_dialog = tag_of(&to) == tag_of(&self.remote_party);
                if let Some(ack) = self.ack.clone().filter(|_| same_dialog) {
                    out.push(ack); // the 2xx again: the same ACK again
                    return (out, events);
                }
                if !matches!(self.phase, Phase::Calling | Phase::Ringing) {
                    // Another fork's 2xx, or one after we gave up: ACK it and hang it up (§13.2.2.4).
                    out.extend(self.stray_dialog(msg, contact, local));
                    return (out, events);
                }
                // The dialog (§12.1.2): their tag, their Contact, the Record-Route set reversed.
                self.remote_party = to;
                if let Some(target) = msg.headers.get("Contact").and_then(|c| crate::header::name_addr::NameAddr::parse(c).ok()) {
                    self.remote_target = target.uri;
                }
                self.route_set = msg.headers.all("Record-Route").into_iter().rev().map(str::to_owned).collect();
                let answer = sdp::parse(&msg.body).ok();
                self.remote_media = answer.as_ref().and_then(sdp::media_address);
                let payload = answer.as_ref().and_then(sdp::first_payload).unwrap_or(0);
                self.dtmf = answer.as_ref().and_then(sdp::telephone_event);
                self.rtp = self.remote_media.map(|remote| crate::rtp::Stream::new(remote, payload, self.session.0 as u32));
                let saved = self.local_cseq;
                self.local_cseq = self.invite_cseq - 1;
                let (_, ack) = self.request("ACK", contact, local, &[]);
                self.local_cseq = saved;
                self.ack = Some(ack.clone());
                self.cancel_tx = None;
                out.push(ack);
                if self.cancelled {
                    // It answered as we gave up: ACK, then hang up (§15).
                    self.phase = Phase::Confirmed;
                    out.push(self.bye(contact, local, now));
                } else {
                    self.phase = Phase::Confirmed;
                    events.push(CallEvent::Connected);
                }
            }
            _ => {
                out.extend(self.in_invite_transaction("ACK", &to));
                if matches!(self.phase, Phase::Calling | Phase::Ringing) {
                    self.phase = Phase::Ended;
                    self.linger = Some(now + 64 * T1_MS);
                    self.cancel_tx = None;
                    if !self.cancelled {
                        events.push(CallEvent::Refused(code));
                    }
                }
            }
        }
        (out, events)
    }
}

impl SipCall {
    /// A call with nothing under way yet: what both roles start from.
    fn blank(graph_id: String, peer: SocketAddr, call_id: String, local_tag: String, session_id: u64) -> SipCall {
        SipCall {
            graph_id,
            role: Role::Uas,
            phase: Phase::Ringing,
            peer,
            invite: Headers::default(),
            invite_request: None,
            local_party: String::new(),
            remote_party: String::new(),
            call_id,
            local_tag,
            ack: None,
            cancelled: false,
            cancel_tx: None,
            rang: false,
            linger: None,
            remote_target: String::new(),
            route_set: Vec::new(),
            invite_cseq: 1,
            local_cseq: 0,
            offer: None,
            final_response: None,
            provisional: None,
            pending: None,
            invite_tx: None,
            bye: None,
            refer_tx: None,
            refer: None,
            session: (session_id, 1),
            media: None,
            reinvite: None,
            reinvite_ack: None,
            held: false,
            queued_refer: None,
            their_reinvite: None,
            reinvite_error_ack: None,
            resume_at: None,
            resume_attempts: 0,
            cancel_sent: false,
            bridging: None,
            partner: None,
            remote_media: None,
            dtmf: None,
            last_press: None,
            playing: None,
            played: None,
            capture: None,
            tones: std::collections::VecDeque::new(),
            tones_sent: Vec::new(),
            hold: None,
            rtp: None,
            quiet: false,
            mixing: false,
            heard: std::collections::VecDeque::new(),
            via_transport: "UDP",
            bye_cseq: 0,
            plays: true,
            detached_at: None,
            bye_grace: None,
        }
    }

    /// A call for the INVITE `req` from `peer`, with our `local_tag` for To.
    pub fn inbound(graph_id: &str, req: &Message, peer: SocketAddr, local_tag: &str, invite_cseq: u32, session_id: u64) -> SipCall {
        let remote_target = req
            .headers
            .get("Contact")
            .and_then(|c| crate::header::name_addr::NameAddr::parse(c).ok())
            .map_or_else(|| format!("sip:{peer}"), |a| a.uri);
        let offer = (!req.body.is_empty()).then(|| sdp::parse(&req.body).ok()).flatten();
        let remote_media = offer.as_ref().and_then(sdp::media_address);
        SipCall {
            role: Role::Uas,
            phase: Phase::Ringing,
            invite: req.headers.clone(),
            local_party: format!("{};tag={local_tag}", header(&req.headers, "To")),
            remote_party: header(&req.headers, "From"),
            remote_target,
            // UAS: the Record-Route set as received (§12.1.1).
            route_set: req.headers.all("Record-Route").into_iter().map(str::to_owned).collect(),
            invite_cseq,
            offer,
            remote_media,
            ..SipCall::blank(graph_id.to_owned(), peer, header(&req.headers, "Call-ID"), local_tag.to_owned(), session_id)
        }
    }

    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// A response to the INVITE (§8.2.6, §12.1.1: our tag on To, our Contact on 1xx-2xx).
    fn response(&self, code: u16, reason: &str, contact: Option<&str>, body: Option<String>) -> Vec<u8> {
        response_to(&self.invite, code, reason, contact, body, Some(&self.local_tag))
    }

    pub fn ringing(&mut self, contact: &str) -> Vec<u8> {
        let bytes = self.response(180, "Ringing", Some(contact), None);
        self.provisional = Some(bytes.clone());
        bytes
    }

    /// Answers 200 with our SDP (media at `address:port`). `Err`: the offer has nothing we can take;
    /// the call is then refused with 488.
    pub fn answer(&mut self, contact: &str, address: &str, port: u16, now: u64) -> Result<Vec<u8>, Vec<u8>> {
        let offer = self.offer.clone().unwrap_or(Offer { media: Vec::new() });
        match sdp::answer(&offer, address, port, self.session) {
            Ok((body, agreed)) => {
                self.media = format!("{address}:{port}").parse().ok().or_else(|| format!("[{address}]:{port}").parse().ok());
                self.rtp = self.remote_media.map(|remote| crate::rtp::Stream::new(remote, agreed.payload, self.session.0 as u32));
                self.dtmf = agreed.telephone_event.as_deref().and_then(|pt| pt.parse().ok());
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
        self.final_response.clone().or_else(|| self.provisional.clone())
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
        let (cseq, msg) = self.request_message(method, contact, local, extra, Vec::new());
        (cseq, msg.to_bytes())
    }

    fn request_message(
        &mut self,
        method: &str,
        contact: &str,
        local: SocketAddr,
        extra: &[(&str, String)],
        body: Vec<u8>,
    ) -> (u32, Message) {
        self.local_cseq += 1;
        let mut h = Headers::default();
        h.push(
            "Via",
            format!(
                "SIP/2.0/{} {local};branch=z9hG4bK{}-{}-{};rport",
                self.via_transport,
                self.local_tag,
                self.local_cseq,
                method.to_ascii_lowercase()
            ),
        );
        h.push("Max-Forwards", "70");
        for route in &self.route_set {
            h.push("Route", route.clone());
        }
        h.push("From", self.local_party.clone());
        h.push("To", self.remote_party.clone());
        h.push("Call-ID", self.call_id.clone());
        h.push("CSeq", format!("{} {method}", self.local_cseq));
        h.push("Contact", format!("<{contact}>"));
        for (name, value) in extra {
            h.push(name, value.clone());
        }
        let msg = Message { start: StartLine::Request { method: method.into(), uri: self.remote_target.clone() }, headers: h, body };
        (self.local_cseq, msg)
    }

    /// We hang up: a BYE in the dialog (§15.1.1), sent again until answered.
    pub fn bye(&mut self, contact: &str, local: SocketAddr, now: u64) -> Vec<u8> {
        let (cseq, bytes) = self.request("BYE", contact, local, &[]);
        self.bye_cseq = cseq;
        self.phase = Phase::Ended;
        self.pending = None;
        self.refer_tx = None;
        self.bye = Some(Retransmit::new(bytes.clone(), now));
        bytes
    }

    /// A blind transfer: REFER the phone to `refer_to`, naming `referred_by` (RFC 3515, RFC 3892); with
    /// `hold`, the phone is put on hold first (RFC 5589 §6.1) and the REFER goes once the hold is
    /// answered. `None` if the call is not confirmed or already transferring.
    #[allow(clippy::too_many_arguments)]
    pub fn refer(
        &mut self,
        transfer_id: &str,
        refer_to: &str,
        referred_by: &str,
        hold: bool,
        contact: &str,
        local: SocketAddr,
        now: u64,
    ) -> Option<Vec<u8>> {
        if self.phase != Phase::Confirmed || self.transferring() || self.reinvite.is_some() {
            return None;
        }
        self.refer = Some(Refer { transfer_id: transfer_id.to_owned(), cseq: 0, abandoned: false });
        if hold && !self.held && self.media.is_some() {
            self.queued_refer = Some((refer_to.to_owned(), referred_by.to_owned()));
            return self.reinvite(true, contact, local, now);
        }
        Some(self.send_refer(refer_to, referred_by, contact, local, now))
    }

    fn transferring(&self) -> bool {
        self.refer.as_ref().is_some_and(|r| !r.abandoned) || self.bridging.is_some()
    }

    /// The dialog as the phone knows it, for a `Replaces` header (RFC 3891 §3): the Call-ID, the
    /// phone's tag (`to-tag`) and ours (`from-tag`). `None` until the dialog is confirmed.
    pub fn replaces(&self) -> Option<String> {
        if self.phase != Phase::Confirmed {
            return None;
        }
        let theirs = self.remote_party.split(";tag=").nth(1)?.split(';').next()?;
        Some(format!("{};to-tag={theirs};from-tag={}", self.call_id, self.local_tag))
    }

    /// The phone's contact (the dialog's remote target).
    pub fn remote_target(&self) -> &str {
        &self.remote_target
    }

    /// An RTP packet from the phone: the key it pressed, once per press (RFC 4733), and, while a
    /// recording runs, its audio; what that causes (a key, the recording's end).
    pub fn rtp_in(&mut self, bytes: &[u8], now: u64) -> Vec<CallEvent> {
        let mut events = Vec::new();
        if !matches!(self.phase, Phase::Answered | Phase::Confirmed) {
            return events;
        }
        if let Some((key, press)) = self.dtmf.and_then(|pt| crate::rtp::telephone_event(bytes, pt))
            && self.last_press != Some(press)
        {
            self.last_press = Some(press);
            events.push(CallEvent::Dtmf(key));
            events.extend(self.key_pressed(key, now));
        } else {
            if let Some(capture) = self.capture.as_mut() {
                capture.audio(bytes, now);
            }
            // Not while it holds us (it sends its own hold music, if anything) or hears our hold
            // music: a member on hold is not in the conversation.
            if self.mixing && !self.quiet && self.hold.is_none() {
                self.hear(bytes);
            } else {
                self.heard.clear();
            }
        }
        events
    }

    /// Keeps a frame of the phone's G.711 audio for the others in its conference.
    fn hear(&mut self, bytes: &[u8]) {
        let Some(decoded) = crate::rtp::g711_samples(bytes) else { return };
        self.heard.extend(decoded);
        let excess = self.heard.len().saturating_sub(MIX_FRAMES * crate::rtp::SAMPLES);
        self.heard.drain(..excess);
    }

    /// The next 20 ms of what the phone sent that the others have not heard yet (less if less came).
    pub fn take_heard(&mut self) -> Option<Vec<i16>> {
        if self.heard.is_empty() {
            return None;
        }
        let n = self.heard.len().min(crate::rtp::SAMPLES);
        Some(self.heard.drain(..n).collect())
    }

    /// A key the phone pressed (RFC 4733 or INFO): a stop tone ends the recording running.
    pub fn key_pressed(&mut self, key: char, now: u64) -> Option<CallEvent> {
        let stops = self.capture.as_ref().is_some_and(|c| c.limits.stop_keys.contains(&key));
        stops.then(|| self.end_capture(CompletionReason::StopToneDetected, now)).flatten()
    }

    /// Starts recording what the phone sends (a recording of `operation_id` already running stops).
    pub fn record(&mut self, operation_id: String, limits: RecordLimits, now: u64) {
        self.capture = Some(Capture { operation_id, limits, started: now, voice: None, samples: Vec::new() });
    }

    /// Drops the recording of `operation_id`, if it is the one running.
    pub fn stop_recording(&mut self, operation_id: &str) {
        if self.capture.as_ref().is_some_and(|c| c.operation_id == operation_id) {
            self.capture = None;
        }
    }

    /// The recording's end, if one of its limits has come by `now`.
    pub fn capture_due(&mut self, now: u64) -> Option<CallEvent> {
        let c = self.capture.as_ref()?;
        let l = &c.limits;
        let reason = if now.saturating_sub(c.started) >= l.max_duration_ms {
            CompletionReason::MaxRecordDurationReached
        } else if let Some(voice) = c.voice {
            if now.saturating_sub(voice) < l.max_silence_ms {
                return None;
            }
            CompletionReason::MaxSilenceTimeout
        } else if now.saturating_sub(c.started) >= l.initial_silence_ms {
            CompletionReason::InitialSilenceTimeout
        } else {
            return None;
        };
        self.end_capture(reason, now)
    }

    fn end_capture(&mut self, reason: CompletionReason, now: u64) -> Option<CallEvent> {
        let mut c = self.capture.take()?;
        // As long as it ran: what did not come (no RTP) is silence.
        let wanted = (now.saturating_sub(c.started) * 8).min(c.limits.max_duration_ms * 8) as usize;
        c.samples.resize(c.samples.len().max(wanted), 0);
        Some(CallEvent::Recorded { operation_id: c.operation_id, reason, samples: c.samples })
    }

    /// Plays `samples` to the phone from the next packet on (again and again if `looped`), in place of
    /// comfort audio; a prompt already playing stops.
    pub fn play(&mut self, operation_id: String, samples: std::sync::Arc<Vec<i16>>, looped: bool) {
        self.playing = Some(Playback { operation_id, samples, at: 0, looped });
    }

    /// Hold music, looping under prompts until `stop_hold`.
    pub fn hold(&mut self, samples: std::sync::Arc<Vec<i16>>) {
        self.hold = Some(Playback { operation_id: String::new(), samples, at: 0, looped: true });
    }

    pub fn stop_hold(&mut self) {
        self.hold = None;
    }

    /// Stops the prompt of `operation_id`, if it is the one playing.
    pub fn stop_playing(&mut self, operation_id: &str) {
        if self.playing.as_ref().is_some_and(|p| p.operation_id == operation_id) {
            self.playing = None;
        }
    }

    /// The next packet of the prompt playing (or of the hold music); at a prompt's end, `played` says
    /// so. Time goes on even where nothing may be sent (bridged, or a media address off the phone's
    /// host), so the prompt ends all the same.
    fn prompt_packet(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        let send = self.may_send();
        let prompt = self.playing.is_some();
        let p = if prompt { self.playing.as_mut()? } else { self.hold.as_mut()? };
        let end = (p.at + crate::rtp::SAMPLES).min(p.samples.len());
        let packet = self.rtp.as_mut().map(|rtp| (rtp.remote, rtp.packet_of(&p.samples[p.at..end])));
        p.at = end;
        if p.at >= p.samples.len() {
            if p.looped && !p.samples.is_empty() {
                p.at = 0;
            } else if prompt {
                self.played = self.playing.take().map(|p| p.operation_id);
            } else {
                self.hold = None;
            }
        }
        packet.filter(|_| send)
    }

    pub fn is_playing(&self) -> bool {
        self.playing.is_some() || self.hold.is_some()
    }

    /// Whether a recording runs (the phone's audio is wanted).
    pub fn is_recording(&self) -> bool {
        self.capture.is_some()
    }

    /// Sends `keys` to the phone as RFC 4733 events, `delay_ms` apart; false if the phone did not
    /// agree to telephone-event.
    pub fn send_tones(&mut self, operation_id: String, keys: &[u8], delay_ms: u64) -> bool {
        if self.dtmf.is_none() || self.rtp.is_none() {
            return false;
        }
        // After any tones still going (each request's end marked by its operation).
        for (i, &event) in keys.iter().enumerate() {
            if i > 0 {
                self.tones.extend(std::iter::repeat_n(ToneFrame::Pause, (delay_ms / crate::rtp::PTIME_MS) as usize));
            }
            self.tones.extend((1..=TONE_TICKS + 2).map(|tick| ToneFrame::Event { event, tick }));
        }
        self.tones.push_back(ToneFrame::Done(operation_id));
        true
    }

    /// Whether our packets may go to the phone's media address: the call is answered and ours (not
    /// bridged), and the address is on the phone's own host (an SDP cannot aim them at a third party).
    fn may_send(&self) -> bool {
        self.partner.is_none()
            && matches!(self.phase, Phase::Answered | Phase::Confirmed)
            && self.rtp.as_ref().is_some_and(|r| r.remote.ip() == self.peer.ip())
    }

    /// The next packet of the tones being sent (an event, or during a pause nothing). Time goes on
    /// even where nothing may be sent, so the operation ends all the same.
    fn tone_packet(&mut self) -> Option<Option<(SocketAddr, Vec<u8>)>> {
        while let Some(ToneFrame::Done(_)) = self.tones.front() {
            if let Some(ToneFrame::Done(op)) = self.tones.pop_front() {
                self.tones_sent.push(op);
            }
        }
        let frame = self.tones.pop_front()?;
        while let Some(ToneFrame::Done(_)) = self.tones.front() {
            if let Some(ToneFrame::Done(op)) = self.tones.pop_front() {
                self.tones_sent.push(op);
            }
        }
        let send = self.may_send();
        let (pt, rtp) = (self.dtmf?, self.rtp.as_mut()?);
        let packet = match frame {
            ToneFrame::Event { event, tick } => {
                // Every packet of one key carries the timestamp of its start.
                let ticks = u32::from(tick.min(TONE_TICKS));
                let start = rtp.timestamp().wrapping_sub((ticks - 1) * crate::rtp::SAMPLES as u32);
                let duration = tick.min(TONE_TICKS) * crate::rtp::SAMPLES as u16;
                let packet = rtp.event_packet(pt, event, start, duration, tick >= TONE_TICKS, tick == 1);
                // Time moves on with the key, and past its end once the repeats are out.
                if tick < TONE_TICKS || tick == TONE_TICKS + 2 {
                    rtp.skip();
                }
                Some((rtp.remote, packet))
            }
            ToneFrame::Pause | ToneFrame::Done(_) => {
                rtp.skip();
                None
            }
        };
        Some(packet.filter(|_| send))
    }

    /// The next packet for the phone, and where it goes: tones, a prompt, what the others of its
    /// conference said (`mix`), or comfort audio; only while the call is answered and ours (not
    /// bridged: then the phones talk to each other), and the phone listens.
    ///
    /// Only to the phone's own host (the one its signalling comes from): an SDP cannot aim our packets
    /// at a third party.
    pub fn comfort(&mut self, audio: crate::rtp::ComfortAudio, mix: Option<&[i16]>) -> Option<(SocketAddr, Vec<u8>)> {
        if let Some(tone) = self.tone_packet() {
            return tone;
        }
        if self.playing.is_some() || self.hold.is_some() {
            return self.prompt_packet();
        }
        // In a conference, what the others said, in place of comfort audio.
        if let Some(samples) = mix
            && self.may_send()
            && !self.quiet
        {
            let rtp = self.rtp.as_mut()?;
            return Some((rtp.remote, rtp.packet_of(samples)));
        }
        if audio == crate::rtp::ComfortAudio::Off
            || !self.plays
            || self.quiet
            || self.partner.is_some()
            || !matches!(self.phase, Phase::Answered | Phase::Confirmed)
        {
            return None;
        }
        let peer_ip = self.peer.ip();
        let rtp = self.rtp.as_mut().filter(|r| r.remote.ip() == peer_ip)?;
        Some((rtp.remote, rtp.packet(audio)))
    }

    /// Who the phone is, for a call placed on its behalf: its From (or, for our own calls, our To),
    /// without the tag.
    pub fn remote_identity(&self) -> String {
        let party = self.remote_party.as_str();
        match party.find(";tag=") {
            Some(i) => party[..i].to_owned(),
            None => party.to_owned(),
        }
    }

    /// Bridged: the phone's media now goes to `media` (the other leg's), by re-INVITE (RFC 3725 §4).
    pub fn connect_media(&mut self, media: SocketAddr, contact: &str, local: SocketAddr, now: u64) -> Option<Vec<u8>> {
        self.media = Some(media);
        self.held = false;
        if self.reinvite.is_some() || self.phase != Phase::Confirmed {
            return None;
        }
        self.reinvite(false, contact, local, now)
    }

    fn send_refer(&mut self, refer_to: &str, referred_by: &str, contact: &str, local: SocketAddr, now: u64) -> Vec<u8> {
        let extra = [("Refer-To", format!("<{refer_to}>")), ("Referred-By", format!("<{referred_by}>"))];
        let (cseq, bytes) = self.request("REFER", contact, local, &extra);
        if let Some(refer) = &mut self.refer {
            refer.cseq = cseq;
        }
        self.refer_tx = Some(Retransmit::new(bytes.clone(), now));
        bytes
    }

    /// A re-INVITE offering our media again: `sendonly` to hold, `sendrecv` to resume (RFC 3264 §8.4).
    fn reinvite(&mut self, hold: bool, contact: &str, local: SocketAddr, now: u64) -> Option<Vec<u8>> {
        let media = self.media?;
        self.session.1 += 1;
        let direction = if hold { sdp::Direction::SendOnly } else { sdp::Direction::SendRecv };
        let body = sdp::reoffer(self.offer.as_ref(), &media.ip().to_string(), media.port(), self.session, direction);
        let extra = [("Content-Type", "application/sdp".to_owned())];
        let (cseq, request) = self.request_message("INVITE", contact, local, &extra, body.into_bytes());
        let bytes = request.to_bytes();
        let tx = Retransmit::new(bytes.clone(), now);
        self.reinvite = Some(Reinvite { cseq, request, give_up_at: tx.give_up_at, tx: Some(tx), hold });
        Some(bytes)
    }

    /// Whether `cseq` is one of our re-INVITEs (rather than the INVITE that made the call).
    pub fn is_reinvite(&self, cseq: u32) -> bool {
        self.reinvite.as_ref().is_some_and(|r| r.cseq == cseq)
            || [&self.reinvite_ack, &self.reinvite_error_ack].into_iter().flatten().any(|(c, _)| *c == cseq)
    }

    /// A response to our re-INVITE: ACK a final one; once the hold is answered, the queued REFER goes.
    pub fn reinvite_answered(&mut self, msg: &Message, contact: &str, local: SocketAddr, now: u64) -> Vec<Vec<u8>> {
        let StartLine::Response { code, .. } = msg.start else { return Vec::new() };
        let cseq = CSeq::parse(msg.headers.get("CSeq").unwrap_or_default()).map_or(0, |c| c.seq);
        if let Some((acked, ack)) = &self.reinvite_ack
            && *acked == cseq
            && (200..300).contains(&code)
        {
            return vec![ack.clone()]; // the 2xx again
        }
        if let Some((acked, ack)) = &self.reinvite_error_ack
            && *acked == cseq
            && code >= 300
        {
            return vec![ack.clone()]; // the error again: our ACK was lost
        }
        let Some(reinvite) = self.reinvite.as_mut().filter(|r| r.cseq == cseq) else { return Vec::new() };
        if code < 200 {
            reinvite.tx = None; // Timer A stops; Timer B still runs
            return Vec::new();
        }
        let Some(reinvite) = self.reinvite.take() else { return Vec::new() };
        let mut out = Vec::new();
        if !reinvite.hold && code >= 300 {
            self.retry_resume(now);
        }
        if code < 300 {
            let saved = self.local_cseq;
            self.local_cseq = reinvite.cseq - 1;
            let (_, ack) = self.request("ACK", contact, local, &[]);
            self.local_cseq = saved;
            self.reinvite_ack = Some((reinvite.cseq, ack.clone()));
            out.push(ack);
            self.held = reinvite.hold;
            if !reinvite.hold {
                self.resume_at = None;
                self.resume_attempts = 0;
            }
        } else {
            // The ACK to an error shares the re-INVITE's transaction (§17.1.1.3); the hold did not
            // happen, and the transfer goes on without it.
            let mut h = Headers::default();
            for name in ["Via", "Max-Forwards", "Route", "From"] {
                for value in reinvite.request.headers.all(name) {
                    h.push(name, value);
                }
            }
            h.push("To", header(&msg.headers, "To"));
            h.push("Call-ID", self.call_id.clone());
            h.push("CSeq", format!("{} ACK", reinvite.cseq));
            let uri = self.remote_target.clone();
            let ack = Message { start: StartLine::Request { method: "ACK".into(), uri }, headers: h, body: Vec::new() }.to_bytes();
            self.reinvite_error_ack = Some((reinvite.cseq, ack.clone()));
            out.push(ack);
        }
        if let Some((refer_to, referred_by)) = self.queued_refer.take()
            && self.transferring()
        {
            out.push(self.send_refer(&refer_to, &referred_by, contact, local, now));
        }
        out
    }

    /// Takes the phone off hold if it is held and no transfer is under way any more (a failed
    /// transfer brings the call back, RFC 5589 §5.2).
    pub fn resume_if_idle(&mut self, contact: &str, local: SocketAddr, now: u64) -> Option<Vec<u8>> {
        if !self.held || self.transferring() || self.reinvite.is_some() || self.phase != Phase::Confirmed {
            return None;
        }
        if self.resume_at.is_some_and(|at| now < at) || self.resume_attempts >= RESUME_ATTEMPTS {
            return None;
        }
        self.resume_at = None;
        // `held` stays until the phone's 2xx says it is resumed; a failure tries again.
        self.resume_attempts += 1;
        self.reinvite(false, contact, local, now)
    }

    /// The resume failed (an error, 491 glare, or no answer): again in a few seconds (§14.1 waits
    /// 2.1 to 4 s after a 491), until `RESUME_ATTEMPTS` have failed; then the phone stays held and the
    /// failure is logged by the caller.
    fn retry_resume(&mut self, now: u64) {
        if self.resume_attempts >= RESUME_ATTEMPTS {
            tracing::warn!(
                call_id = self.graph_id,
                attempts = self.resume_attempts,
                "the phone would not be taken off hold; it stays held"
            );
            self.resume_at = None;
            return;
        }
        self.resume_at = Some(now + 2_100 + (self.session.0 % 1_900));
    }

    /// The phone's own re-INVITE (a hold, a resume, a new address): answered with our media, the
    /// direction mirrored. `Err`: the error answer (491 while ours is out, 488 for an offer we cannot take).
    /// The phone's re-INVITE: our answer, and `Hold` if it put the call on hold or took it off.
    pub fn their_reinvite(&mut self, req: &Message, contact: &str, now: u64) -> Result<(Vec<u8>, Option<CallEvent>), (u16, String)> {
        let cseq = CSeq::parse(req.headers.get("CSeq").unwrap_or_default()).map_or(0, |c| c.seq);
        if let Some((seen, bytes)) = &self.their_reinvite
            && *seen == cseq
        {
            return Ok((bytes.clone(), None));
        }
        if self.phase == Phase::Answered {
            // Our 2xx is still waiting for its ACK: the phone may try again (a 491 asks it to).
            return Err((491, "Request Pending".into()));
        }
        if self.phase != Phase::Confirmed {
            return Err((481, "Call/Transaction Does Not Exist (the dialog is not established)".into()));
        }
        // Only the phone of this dialog (its tag in From) may change its media.
        let from = header(&req.headers, "From");
        if tag_of(&from) != tag_of(&self.remote_party) {
            return Err((481, "Call/Transaction Does Not Exist (the From tag names another dialog)".into()));
        }
        if self.reinvite.is_some() {
            return Err((491, "Request Pending".into()));
        }
        let media = self.media.ok_or((488, "Not Acceptable Here (no media of ours yet)".to_owned()))?;
        let offer = if req.body.is_empty() {
            Offer { media: Vec::new() }
        } else {
            sdp::parse(&req.body).map_err(|e| (488, format!("Not Acceptable Here ({e})")))?
        };
        if !offer.media.is_empty() {
            // The session's m-lines are now the phone's latest offer's (our later re-offers keep them).
            self.offer = Some(offer.clone());
        }
        if let Some(media) = sdp::media_address(&offer) {
            self.remote_media = Some(media);
            if let Some(rtp) = &mut self.rtp {
                rtp.remote = media;
            }
        }
        // The phone holds us (it will not listen): our comfort audio pauses until it resumes. (A
        // re-INVITE without SDP gets our sendrecv offer: a resume.)
        let was_quiet = self.quiet;
        self.quiet = offer.media.iter().any(|m| {
            m.kind == "audio"
                && (matches!(m.direction, sdp::Direction::SendOnly | sdp::Direction::Inactive)
                    || m.port == 0
                    // RFC 2543's hold, which older phones still send (RFC 3264 §8.4).
                    || m.address.as_deref() == Some("0.0.0.0"))
        });
        let news = (self.quiet != was_quiet).then_some(CallEvent::Hold(self.quiet));
        self.session.1 += 1;
        let body = if offer.media.is_empty() {
            sdp::offer(&media.ip().to_string(), media.port(), self.session, sdp::Direction::SendRecv)
        } else {
            sdp::answer(&offer, &media.ip().to_string(), media.port(), self.session)
                .map_err(|e| (488, format!("Not Acceptable Here ({e})")))?
                .0
        };
        let bytes = response_to(&req.headers, 200, "OK", Some(contact), Some(body), None);
        self.their_reinvite = Some((cseq, bytes.clone()));
        self.pending = Some(Retransmit::new(bytes.clone(), now));
        Ok((bytes, news))
    }

    /// The engine gave the transfer up (its deadline): what the phone reports from now on is ignored.
    /// Returns whether it was still in flight.
    pub fn abandon_transfer(&mut self, transfer_id: &str) -> bool {
        match &mut self.refer {
            Some(r) if r.transfer_id == transfer_id && !r.abandoned => {
                r.abandoned = true;
                self.refer_tx = None;
                self.queued_refer = None;
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
        Some(CallEvent::Transfer { transfer_id, progress: Progress::Refused(code) })
    }

    /// A NOTIFY of the REFER's implicit subscription, with its sipfrag status (RFC 3515 §2.4.5): the
    /// events it means, in order.
    /// `refer_id`: the `id` of `Event: refer;id=N`, the CSeq of the REFER it reports on, if given.
    pub fn refer_notified(&mut self, sipfrag_status: u16, refer_id: Option<u32>) -> Vec<CallEvent> {
        if refer_id.is_some_and(|id| self.refer.as_ref().is_some_and(|r| r.cseq != 0 && r.cseq != id)) {
            return Vec::new();
        }
        if let Some(refer) = self.refer.as_ref().filter(|r| r.abandoned)
            && (200..300).contains(&sipfrag_status)
        {
            // The transfer was given up (its deadline), but the phone reached the target after all:
            // it is with the target now, so the call is over for the bot (a BYE follows).
            let _ = refer;
            self.refer = None;
            self.bye_grace = None;
            return vec![CallEvent::HungUp];
        }
        let Some(refer) = self.refer.as_mut().filter(|r| !r.abandoned) else { return Vec::new() };
        // A NOTIFY before the 202 also means the REFER was taken (RFC 3515 §2.4.4).
        self.refer_tx = None;
        let transfer_id = refer.transfer_id.clone();
        let mut out = Vec::new();
        match sipfrag_status {
            100..=199 => {}
            200..=299 => {
                self.refer = None;
                self.bye_grace = None;
                out.push(CallEvent::Transfer { transfer_id: transfer_id.clone(), progress: Progress::Accepted });
                out.push(CallEvent::Transfer { transfer_id, progress: Progress::Completed });
            }
            code => {
                self.refer = None;
                out.push(CallEvent::Transfer { transfer_id, progress: Progress::Failed(code) });
                if self.bye_grace.take().is_some() {
                    out.push(CallEvent::HungUp); // the phone left already: the call cannot come back
                }
            }
        }
        out
    }

    /// An answer to a BYE of this dialog arrived (`cseq`): ours, or one we sent a stray fork.
    pub fn bye_answered(&mut self, cseq: u32) {
        if cseq == self.bye_cseq {
            self.bye = None;
        }
    }

    /// Whether nothing is left to send or wait for.
    pub fn finished(&self) -> bool {
        self.phase == Phase::Ended
            && self.bye.is_none()
            && self.pending.is_none()
            && self.cancel_tx.is_none()
            && self.linger.is_none()
            && self.bye_grace.is_none()
    }

    /// Our INVITE could not be sent (no connection could be opened to the phone): the call is
    /// refused as by a 503 (RFC 3261 §8.1.3.1), unless something already came back.
    pub fn transport_failed(&mut self) -> Option<CallEvent> {
        if self.role != Role::Uac || self.phase != Phase::Calling || self.invite_tx.is_none() {
            return None;
        }
        self.invite_tx = None;
        self.phase = Phase::Ended;
        (!self.cancelled).then_some(CallEvent::Refused(503))
    }

    /// What is due again at `now`, and what giving up means.
    pub fn poll(&mut self, now: u64) -> (Vec<Vec<u8>>, Vec<CallEvent>) {
        let mut out = Vec::new();
        let mut events = Vec::new();
        if let Some(p) = &mut self.pending {
            if now >= p.give_up_at {
                self.pending = None;
                match self.phase {
                    // §13.3.1.4: no ACK to our 2xx within 64·T1: the dialog is confirmed, then ended by BYE.
                    Phase::Answered => events.push(CallEvent::Lost),
                    // The ACK to our 2xx to their re-INVITE never came: the call goes on as it was.
                    Phase::Confirmed => {}
                    _ => self.phase = Phase::Ended,
                }
            } else if let Some(bytes) = p.due(now) {
                out.push(bytes);
            }
        }
        if self.bye_grace.is_some_and(|at| now >= at) {
            // No final NOTIFY after the phone's BYE: it hung up.
            self.bye_grace = None;
            self.refer = None;
            events.push(CallEvent::HungUp);
        }
        if self.linger.is_some_and(|at| now >= at) {
            self.linger = None;
            if self.cancelled && matches!(self.phase, Phase::Calling | Phase::Ringing) {
                // The CANCEL was answered but the INVITE never was (§9.1: give up after 64·T1).
                self.phase = Phase::Ended;
            }
        }
        if let Some(r) = &mut self.reinvite {
            if now >= r.give_up_at {
                // Timer B on our re-INVITE: the phone is not answering; a transfer waiting on it fails,
                // and a resume is tried again later.
                let resume = !r.hold;
                self.reinvite = None;
                self.queued_refer = None;
                if resume {
                    self.retry_resume(now);
                }
                if let Some(refer) = self.refer.take().filter(|r| !r.abandoned) {
                    events.push(CallEvent::Transfer { transfer_id: refer.transfer_id, progress: Progress::Failed(408) });
                }
            } else if let Some(bytes) = r.tx.as_mut().and_then(|tx| tx.due(now)) {
                out.push(bytes);
            }
        }
        if let Some(r) = &mut self.invite_tx {
            if now >= r.give_up_at {
                // Timer B: nothing ever came back.
                self.invite_tx = None;
                self.phase = Phase::Ended;
                if !self.cancelled {
                    events.push(CallEvent::Refused(408));
                }
            } else if let Some(bytes) = r.due(now) {
                out.push(bytes);
            }
        }
        if let Some(r) = &mut self.cancel_tx {
            if now >= r.give_up_at {
                // No answer to the CANCEL, and none to the INVITE: the phone is gone.
                self.cancel_tx = None;
                self.phase = Phase::Ended;
            } else if let Some(bytes) = r.due(now) {
                out.push(bytes);
            }
        }
        if let Some(r) = &mut self.refer_tx {
            if now >= r.give_up_at {
                // Timer F: the phone never answered the REFER.
                self.refer_tx = None;
                if let Some(refer) = self.refer.take().filter(|r| !r.abandoned) {
                    events.push(CallEvent::Transfer { transfer_id: refer.transfer_id, progress: Progress::Refused(408) });
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
        (out, events)
    }

    /// The earliest time something may be due.
    pub fn next_due(&self) -> Option<u64> {
        [self.pending.as_ref(), self.bye.as_ref(), self.refer_tx.as_ref(), self.invite_tx.as_ref(), self.cancel_tx.as_ref()]
            .into_iter()
            .flatten()
            .map(|r| r.next_at.min(r.give_up_at))
            .chain(self.linger)
            .chain(self.resume_at.filter(|_| self.held && self.resume_attempts < RESUME_ATTEMPTS))
            .chain(self.reinvite.as_ref().map(|r| r.tx.as_ref().map_or(r.give_up_at, |tx| tx.next_at.min(r.give_up_at))))
            .min()
    }
}

/// A response to a request with `headers` (§8.2.6): Via, Record-Route, From, To (with `tag` if given),
/// Call-ID and CSeq copied; our Contact and SDP if given.
fn response_to(headers: &Headers, code: u16, reason: &str, contact: Option<&str>, body: Option<String>, tag: Option<&str>) -> Vec<u8> {
    let mut h = Headers::default();
    for via in headers.all("Via") {
        h.push("Via", via);
    }
    for rr in headers.all("Record-Route") {
        h.push("Record-Route", rr);
    }
    h.push("From", header(headers, "From"));
    match tag {
        Some(tag) => h.push("To", format!("{};tag={tag}", header(headers, "To"))),
        None => h.push("To", header(headers, "To")),
    }
    h.push("Call-ID", header(headers, "Call-ID"));
    h.push("CSeq", header(headers, "CSeq"));
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

/// The tag of a From or To header value, if any.
fn tag_of(value: &str) -> Option<&str> {
    value.split(";tag=").nth(1).map(|t| t.split(';').next().unwrap_or(t))
}
