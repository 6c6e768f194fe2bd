//! Switchboard as a SIP endpoint for its domain, sans-IO: bytes from an address in, at most one
//! response out ([`Endpoint::receive`]). The transports (`transport.rs`) move the bytes; this decides.
//!
//! It is a registrar (REGISTER with Digest), answers OPTIONS, takes calls from phones (INVITE, BYE,
//! CANCEL), places calls to phones and trunks, and transfers calls by REFER (the NOTIFYs tell how it
//! went). Between registered phones it is a stateless proxy.

use std::net::{IpAddr, SocketAddr};

use std::collections::HashMap;

use crate::call::{CallEvent, Dial, Phase, Progress, Role, SipCall};
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
    /// TCP under TLS (RFC 3261 §26.2): a stream like TCP.
    Tls,
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
    /// Trunks' addresses: their INVITEs are taken without Digest, from the number in From.
    pub trunks: Vec<SocketAddr>,
    /// Put the transferee on hold (re-INVITE `sendonly`) before the REFER, and take it off hold if
    /// the transfer fails (RFC 5589 §6.1).
    pub hold_before_refer: bool,
    /// When the transferee refuses REFER (405, 420, 501) or never answers it, call the target
    /// ourselves and bridge the two (third-party call control, RFC 3725).
    pub bridge_when_refer_refused: bool,
    /// When the transferee (or the target) refuses a REFER with Replaces (420, 481, 501), REFER it
    /// again to the target without Replaces: a basic transfer (RFC 5589 §6.5).
    pub blind_when_replaces_refused: bool,
    /// What the bot plays to a phone while nothing else does.
    pub comfort_audio: crate::rtp::ComfortAudio,
}

/// A transfer by bridging: the leg we placed to the target, for the transferee's call.
#[derive(Clone, Debug)]
struct Bridge {
    transferee: String,
    transfer_id: String,
    /// The transferee is not a SIP call of ours but a call of another network (the sim): once the
    /// target answers, that network connects its side (`member`: the group member transferred).
    foreign: Option<Option<String>>,
}

/// Where a transfer would be bridged to, should the REFER be refused.
#[derive(Clone, Debug)]
struct BridgePlan {
    transfer_id: String,
    destination: Destination,
    referred_by: String,
}

/// Where an outgoing call goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// The INVITE's Request-URI: a registered contact, or the number at a trunk.
    pub request_uri: String,
    /// The To header, e.g. `<sip:alex@sb.test>`.
    pub to: String,
    /// The address the INVITE is sent to.
    pub peer: SocketAddr,
    /// Headers for the INVITE besides the usual ones.
    pub headers: Vec<(String, String)>,
    /// How it travels (`UDP`, or `TCP`/`TLS` on the connection a phone registered on): the Via says so.
    pub transport: &'static str,
    /// A contact that asked for TCP: we open a connection to `peer` if none is there.
    pub connect: bool,
}

/// What the endpoint has to tell its owner (the engine's network adapter).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// An authenticated user (or, with `trunk`, the number in From at a trunk) calls `to_user` (the
    /// Request-URI's user part): the owner decides, with [`Endpoint::ringing`] or [`Endpoint::refuse`].
    Invite { graph_id: String, from_user: String, to_user: String, trunk: bool },
    /// Something happened to a call.
    Call { graph_id: String, event: CallEvent },
    /// The SIP target of transfer `transfer_id` of another network's call `graph_id` answered on
    /// `leg`: that network connects its transferee (`member` of a group call, or the remote party) to
    /// it, and the transfer is done; or, if it cannot, hangs `leg` up and fails the transfer.
    HandOver { graph_id: String, transfer_id: String, member: Option<String>, leg: String },
    /// The SIP side of a handed-over leg hung up.
    LegHungUp { leg: String },
}

pub struct Endpoint {
    /// Prompt packets made since the transport last counted them.
    prompt_packets: u64,
    domain: String,
    aliases: Vec<String>,
    pub registrar: Registrar,
    transactions: Transactions,
    /// Our own address (for Contact and Via), once bound.
    local: Option<SocketAddr>,
    /// Calls by SIP Call-ID, and the Call-ID of each Graph call.
    calls: HashMap<String, SipCall>,
    by_graph: HashMap<String, String>,
    /// Sent after the answer to the message in hand, or on their own (answers, BYEs, retransmissions).
    outbox: Vec<Reply>,
    events: Vec<Event>,
    secret: String,
    trunks: Vec<SocketAddr>,
    hold_before_refer: bool,
    bridge_when_refer_refused: bool,
    /// By the transferee's Graph id.
    bridge_plans: HashMap<String, BridgePlan>,
    /// By the bridge leg's (internal) Graph id.
    bridges: HashMap<String, Bridge>,
    /// Consultative transfers in flight: the consultation call's Graph id → the transferee's call and
    /// the transfer.
    replacing: HashMap<String, (String, String)>,
    blind_when_replaces_refused: bool,
    /// Legs handed over to another network (the sim's transferee talks to them).
    foreign_legs: std::collections::HashSet<String>,
    /// Conferences: a group call's member dialogs (their Graph ids) by the group call's id; each
    /// member's phone hears the others'. Ended and detached dialogs leave at the next media tick.
    conferences: HashMap<String, Vec<String>>,
    /// Packets of mixed audio made since the transport last counted them.
    mixed_packets: u64,
    /// Contacts that asked for TCP, which we call on connections of our own (while calls are there).
    tcp_contacts: std::collections::HashSet<SocketAddr>,
    comfort_audio: crate::rtp::ComfortAudio,
}

const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, REFER, NOTIFY, INFO";
const SERVER: &str = concat!("Switchboard/", env!("CARGO_PKG_VERSION"));

impl Endpoint {
    pub fn new(settings: Settings) -> Endpoint {
        Endpoint {
            prompt_packets: 0,
            registrar: Registrar::new(&settings.domain, &settings.accounts, &settings.nonce_secret),
            domain: settings.domain,
            aliases: settings.aliases,
            transactions: Transactions::default(),
            local: None,
            calls: HashMap::new(),
            by_graph: HashMap::new(),
            outbox: Vec::new(),
            events: Vec::new(),
            secret: settings.nonce_secret,
            trunks: settings.trunks,
            hold_before_refer: settings.hold_before_refer,
            bridge_when_refer_refused: settings.bridge_when_refer_refused,
            bridge_plans: HashMap::new(),
            bridges: HashMap::new(),
            replacing: HashMap::new(),
            blind_when_replaces_refused: settings.blind_when_replaces_refused,
            foreign_legs: std::collections::HashSet::new(),
            conferences: HashMap::new(),
            mixed_packets: 0,
            tcp_contacts: std::collections::HashSet::new(),
            comfort_audio: settings.comfort_audio,
        }
    }

    /// Where we are, once the transport is bound.
    pub fn set_local(&mut self, local: SocketAddr) {
        self.local = Some(local);
    }

    /// Our address for Via (loopback until bound).
    fn local(&self) -> SocketAddr {
        self.local.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5060)))
    }

    /// Sends what a call owes after its transfer moved on: taking the phone off hold once no transfer
    /// is under way (a failed one brings the call back).
    fn resume_if_idle(&mut self, sip_call_id: &str, now_ms: u64) {
        let (contact, local) = (self.contact(), self.local());
        if let Some(call) = self.calls.get_mut(sip_call_id)
            && let Some(bytes) = call.resume_if_idle(&contact, local, now_ms)
        {
            self.outbox.push(Reply { to: call.peer, bytes });
        }
    }

    fn contact(&self) -> String {
        match self.local {
            Some(a) => format!("sip:switchboard@{a}"),
            None => format!("sip:switchboard@{}", self.domain),
        }
    }

    /// What to send besides the answer to the message in hand.
    pub fn drain_outbox(&mut self) -> Vec<Reply> {
        std::mem::take(&mut self.outbox)
    }

    pub fn drain_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// The audio packets due now (every `rtp::PTIME_MS`): a prompt where one plays, else comfort
    /// audio. A prompt that played to its end is an event of its call.
    pub fn media_due(&mut self, now: u64) -> Vec<(SocketAddr, Vec<u8>)> {
        let audio = self.comfort_audio;
        let mut mixes = self.mix();
        let mut due = Vec::new();
        for call in self.calls.values_mut() {
            let prompt = call.is_playing();
            let mix = mixes.remove(call.call_id());
            if let Some(packet) = call.comfort(audio, mix.as_deref()) {
                self.prompt_packets += u64::from(prompt);
                self.mixed_packets += u64::from(mix.is_some() && !prompt);
                due.push(packet);
            }
            if let Some(operation_id) = call.played.take() {
                self.events.push(Event::Call { graph_id: call.graph_id.clone(), event: CallEvent::Played { operation_id } });
            }
            for operation_id in std::mem::take(&mut call.tones_sent) {
                self.events.push(Event::Call { graph_id: call.graph_id.clone(), event: CallEvent::TonesSent { operation_id } });
            }
            if let Some(event) = call.capture_due(now) {
                self.events.push(Event::Call { graph_id: call.graph_id.clone(), event });
            }
        }
        due
    }

    /// How many prompt packets `media_due` has made since the last look.
    pub fn take_prompt_packets(&mut self) -> u64 {
        std::mem::take(&mut self.prompt_packets)
    }

    /// How many packets of mixed audio (a conference's) `media_due` has made since the last look.
    pub fn take_mixed_packets(&mut self) -> u64 {
        std::mem::take(&mut self.mixed_packets)
    }

    /// The dialog of Graph call `leg` is a member of group call `group`'s conference: its phone hears
    /// the others there, and they hear it.
    pub fn join_conference(&mut self, group: &str, leg: &str) {
        let Some(call) = self.call_mut(leg) else { return };
        call.mixing = true;
        let legs = self.conferences.entry(group.to_owned()).or_default();
        if !legs.iter().any(|l| l == leg) {
            legs.push(leg.to_owned());
        }
    }

    /// One frame of each conference member's phone, summed for every other member: what each hears
    /// this tick, by SIP Call-ID (none for a member when nobody else sent anything).
    fn mix(&mut self) -> HashMap<String, Vec<i16>> {
        let mut out = HashMap::new();
        if self.conferences.is_empty() {
            return out;
        }
        let Endpoint { conferences, calls, by_graph, .. } = self;
        conferences.retain(|_, legs| {
            legs.retain(|l| by_graph.get(l).and_then(|s| calls.get(s)).is_some_and(|c| c.phase != Phase::Ended && c.partner.is_none()));
            !legs.is_empty()
        });
        for legs in conferences.values() {
            let frames: Vec<(&String, Option<Vec<i16>>)> =
                legs.iter().filter_map(|l| by_graph.get(l)).map(|sip| (sip, calls.get_mut(sip).and_then(SipCall::take_heard))).collect();
            for (sip, _) in &frames {
                let mut sum = [0i32; crate::rtp::SAMPLES];
                let mut anyone = false;
                for (_, frame) in frames.iter().filter(|(other, _)| other != sip) {
                    for (s, &x) in sum.iter_mut().zip(frame.iter().flatten()) {
                        *s += i32::from(x);
                        anyone = true;
                    }
                }
                if anyone {
                    // Loud voices together are clipped, not wrapped.
                    out.insert((*sip).clone(), sum.iter().map(|&s| s.clamp(i16::MIN.into(), i16::MAX.into()) as i16).collect());
                }
            }
        }
        out
    }

    /// The hosts whose phones' audio is wanted: those of calls recording, and of conferences' members
    /// while two or more are there to hear each other.
    pub fn audio_sources(&self) -> std::collections::HashSet<std::net::IpAddr> {
        let call = |leg: &String| self.by_graph.get(leg).and_then(|s| self.calls.get(s));
        let mixing = self.conferences.values().filter(|legs| legs.len() >= 2).flatten().filter_map(call);
        let recording = self.calls.values().filter(|c| c.is_recording());
        mixing.chain(recording).filter(|c| c.phase != Phase::Ended).map(|c| c.peer.ip()).collect()
    }

    /// Hold music for the phone of Graph call `graph_id` (looping under prompts), or none.
    pub fn hold_music(&mut self, graph_id: &str, samples: Option<std::sync::Arc<Vec<i16>>>) -> bool {
        match self.call_mut(graph_id) {
            Some(call) if call.rtp.is_some() && call.phase != Phase::Ended => {
                match samples {
                    Some(s) => call.hold(s),
                    None => call.stop_hold(),
                }
                true
            }
            _ => false,
        }
    }

    /// Plays a prompt to the phone of Graph call `graph_id`; false if there is no such call (or no
    /// media agreed with its phone yet).
    pub fn play(&mut self, graph_id: &str, operation_id: String, samples: std::sync::Arc<Vec<i16>>, looped: bool) -> bool {
        match self.call_mut(graph_id) {
            Some(call) if call.rtp.is_some() && call.phase != Phase::Ended => {
                call.play(operation_id, samples, looped);
                true
            }
            _ => false,
        }
    }

    /// Stops the prompt or recording of `operation_id` on Graph call `graph_id`.
    pub fn stop_playing(&mut self, graph_id: &str, operation_id: &str) {
        if let Some(call) = self.call_mut(graph_id) {
            call.stop_playing(operation_id);
            call.stop_recording(operation_id);
        }
    }

    /// Sends DTMF `keys` (RFC 4733 events 0–15) to the phone of Graph call `graph_id`; false if there
    /// is no such call or its phone did not agree to telephone-event.
    pub fn send_tones(&mut self, graph_id: &str, operation_id: String, keys: &[u8], delay_ms: u64) -> bool {
        self.call_mut(graph_id).filter(|c| c.phase != Phase::Ended).is_some_and(|c| c.send_tones(operation_id, keys, delay_ms))
    }

    /// Starts recording what the phone of Graph call `graph_id` sends; false if there is no such call.
    pub fn record(&mut self, graph_id: &str, operation_id: String, limits: crate::call::RecordLimits, now: u64) -> bool {
        match self.call_mut(graph_id) {
            Some(call) if call.phase != Phase::Ended => {
                call.record(operation_id, limits, now);
                true
            }
            _ => false,
        }
    }

    /// An RTP packet that reached our media socket from `from`: a key a phone pressed (RFC 4733) is
    /// an event of its call. The call is the one whose phone sends from there; failing that, the one
    /// phone on that host (some send from another port than their SDP says).
    pub fn media_received(&mut self, from: SocketAddr, bytes: &[u8], now: u64) {
        // Only calls whose phone signals from that host; one that names another host's address in its
        // SDP gets nothing in (nor out).
        let on_host =
            |c: &&SipCall| c.phase != Phase::Ended && c.peer.ip() == from.ip() && c.remote_media.is_some_and(|m| m.ip() == from.ip());
        let unique = |mut it: Box<dyn Iterator<Item = &SipCall> + '_>| match (it.next(), it.next()) {
            (Some(only), None) => Some(only.call_id().to_owned()),
            _ => None,
        };
        let exact = unique(Box::new(self.calls.values().filter(on_host).filter(|c| c.remote_media == Some(from))));
        let sip_id = exact.or_else(|| unique(Box::new(self.calls.values().filter(on_host))));
        let Some(call) = sip_id.and_then(|id| self.calls.get_mut(&id)) else { return };
        for event in call.rtp_in(bytes, now) {
            self.events.push(Event::Call { graph_id: call.graph_id.clone(), event });
        }
    }

    /// Whether a call of ours is with the phone at `peer` (its TCP connection must stay open).
    pub fn serves(&self, peer: SocketAddr) -> bool {
        self.calls.values().any(|c| c.peer == peer && c.phase != Phase::Ended)
    }

    /// Whether the Graph call `graph_id` is a SIP call of this endpoint.
    pub fn holds(&self, graph_id: &str) -> bool {
        self.by_graph.get(graph_id).and_then(|sip_id| self.calls.get(sip_id)).is_some_and(|c| c.partner.is_none())
    }

    /// Whether the Graph call `graph_id` is a SIP call of this endpoint, answered, confirmed, talking
    /// to us (not joined to another leg) and not being handed to another network's party.
    pub fn is_established(&self, graph_id: &str) -> bool {
        let call = self.by_graph.get(graph_id).and_then(|sip_id| self.calls.get(sip_id));
        call.is_some_and(|c| c.phase == Phase::Confirmed && c.partner.is_none() && c.bridging.is_none())
    }

    fn call_mut(&mut self, graph_id: &str) -> Option<&mut SipCall> {
        let sip_id = self.by_graph.get(graph_id)?;
        self.calls.get_mut(sip_id)
    }

    /// The phone hears ringing while the bot is offered the call.
    pub fn ringing(&mut self, graph_id: &str) {
        let contact = self.contact();
        if let Some(call) = self.call_mut(graph_id) {
            let (to, bytes) = (call.peer, call.ringing(&contact));
            self.outbox.push(Reply { to, bytes });
        }
    }

    /// Refuses a call that has not been answered (the bot rejected it, or no bot takes it).
    pub fn refuse(&mut self, graph_id: &str, code: u16, reason: &str, now_ms: u64) {
        if let Some(call) = self.call_mut(graph_id)
            && call.role == Role::Uas
            && call.phase == Phase::Ringing
        {
            let (to, bytes) = (call.peer, call.refuse(code, reason, now_ms));
            self.outbox.push(Reply { to, bytes });
        }
    }

    /// The bot answered: 200 with our SDP, media at `media`.
    pub fn answer_call(&mut self, graph_id: &str, media: SocketAddr, now_ms: u64) {
        let contact = self.contact();
        let Some(call) = self.call_mut(graph_id) else { return };
        if call.role != Role::Uas || call.phase != Phase::Ringing {
            return;
        }
        let (to, result) = (call.peer, call.answer(&contact, &media.ip().to_string(), media.port(), now_ms));
        match result {
            Ok(bytes) => self.outbox.push(Reply { to, bytes }),
            Err(bytes) => {
                self.outbox.push(Reply { to, bytes });
                self.events.push(Event::Call { graph_id: graph_id.to_owned(), event: CallEvent::HungUp });
            }
        }
    }

    /// The bot transfers the call (blind): REFER the phone to the target at `destination`. `false` if
    /// the call cannot be transferred now (not established, or already transferring).
    /// The destination's extra headers (custom `X-` headers) ride in the Refer-To URI, so that the
    /// phone puts them in its INVITE to the target (RFC 3261 §19.1.1), and in our own INVITE if the
    /// transfer is bridged.
    pub fn transfer(&mut self, graph_id: &str, transfer_id: &str, destination: &Destination, referred_by: &str, now_ms: u64) -> bool {
        let refer_to = with_uri_headers(&destination.request_uri, &destination.headers);
        let sent = self.refer(graph_id, transfer_id, &refer_to, referred_by, now_ms);
        if sent && self.bridge_when_refer_refused {
            let plan =
                BridgePlan { transfer_id: transfer_id.to_owned(), destination: destination.clone(), referred_by: referred_by.to_owned() };
            self.bridge_plans.insert(graph_id.to_owned(), plan);
        }
        sent
    }

    /// A consultative transfer (RFC 5589 §7): REFER the phone of `graph_id` to the phone of the
    /// consultation call `replaces`, with `Replaces` naming that dialog, so that the target swaps it
    /// for the transferee. `false` if either call is not established here.
    pub fn transfer_replacing(
        &mut self,
        graph_id: &str,
        transfer_id: &str,
        replaces: &str,
        headers: &[(String, String)],
        referred_by: &str,
        now_ms: u64,
    ) -> bool {
        let Some(consultation) = self.by_graph.get(replaces).and_then(|id| self.calls.get(id)) else { return false };
        let (Some(dialog), target) = (consultation.replaces(), consultation.remote_target().to_owned()) else { return false };
        let mut all = vec![("Replaces".to_owned(), dialog)];
        all.extend(headers.iter().cloned());
        let refer_to = with_uri_headers(&target, &all);
        if !self.refer(graph_id, transfer_id, &refer_to, referred_by, now_ms) {
            return false;
        }
        self.replacing.insert(replaces.to_owned(), (graph_id.to_owned(), transfer_id.to_owned()));
        true
    }

    /// REFER the phone to `refer_to` (see [`Endpoint::transfer`]).
    pub fn refer(&mut self, graph_id: &str, transfer_id: &str, refer_to: &str, referred_by: &str, now_ms: u64) -> bool {
        let contact = self.contact();
        let local = self.local();
        let hold = self.hold_before_refer;
        let Some(call) = self.call_mut(graph_id) else { return false };
        let to = call.peer;
        match call.refer(transfer_id, refer_to, referred_by, hold, &contact, local, now_ms) {
            Some(bytes) => {
                self.outbox.push(Reply { to, bytes });
                true
            }
            None => false,
        }
    }

    /// Places an outgoing call (the bot calls a phone or a trunk): the INVITE, with our offer for media
    /// at `media`. What happens next comes back as [`Event::Call`] (`Ringing`, `Connected`, `Refused`).
    pub fn place(&mut self, graph_id: &str, from: &str, destination: Destination, media: SocketAddr, now_ms: u64) {
        if destination.connect {
            self.tcp_contacts.insert(destination.peer);
        }
        let contact = self.contact();
        let local = self.local();
        let key = crate::digest::md5_hex(&format!("{graph_id}|{}", self.secret));
        let session_id = u64::from_str_radix(&key[..8], 16).unwrap_or(1);
        let dial = Dial {
            graph_id: graph_id.to_owned(),
            request_uri: destination.request_uri,
            to: destination.to,
            from: from.to_owned(),
            peer: destination.peer,
            call_id: format!("{}@{}", &key[..20], self.domain),
            local_tag: key[20..30].to_owned(),
            offer: crate::sdp::offer(&media.ip().to_string(), media.port(), (session_id, 1), crate::sdp::Direction::SendRecv),
            headers: destination.headers,
            transport: destination.transport,
        };
        let (call, bytes) = SipCall::outbound(dial, media, &contact, local, session_id, now_ms);
        self.outbox.push(Reply { to: call.peer, bytes });
        self.by_graph.insert(graph_id.to_owned(), call.call_id().to_owned());
        self.calls.insert(call.call_id().to_owned(), call);
    }

    /// Where `user`'s phone is: its first registered contact and the address it is reached at (the
    /// connection it registered on, if it did over TCP or TLS).
    pub fn destination_of(&self, user: &str, now_ms: u64) -> Option<Destination> {
        let binding = self.registrar.bindings_of(user, now_ms).next()?;
        let uri = crate::uri::SipUri::parse(&binding.uri).ok()?;
        let (peer, transport) = match binding.flow {
            Some(flow) => flow,
            None => {
                // A contact that asks for TCP is called on a connection we open (RFC 3263 §4.1).
                let tcp = uri.rest.split(['?', ';']).any(|p| p.eq_ignore_ascii_case("transport=tcp"));
                let host = uri.host.trim_start_matches('[').trim_end_matches(']').parse().ok()?;
                (SocketAddr::new(host, uri.port.unwrap_or(5060)), if tcp { "TCP" } else { "UDP" })
            }
        };
        let connect = binding.flow.is_none() && transport == "TCP";
        Some(Destination {
            request_uri: binding.uri.clone(),
            to: format!("<sip:{user}@{}>", self.domain),
            peer,
            headers: Vec::new(),
            transport,
            connect,
        })
    }

    /// No connection could be opened to `peer`: the calls we are placing there fail (503), as the
    /// phone's refusal would (a transfer's leg fails its transfer).
    pub fn unreachable(&mut self, peer: SocketAddr, now_ms: u64) {
        for call in self.calls.values_mut().filter(|c| c.peer == peer) {
            if let Some(event) = call.transport_failed() {
                self.events.push(Event::Call { graph_id: call.graph_id.clone(), event });
            }
        }
        self.route(now_ms);
    }

    /// Whether what goes to `to` goes on a connection we open, if none is there: a contact that asked
    /// for TCP (`;transport=tcp`), while a call of ours is with it.
    pub fn dials_tcp(&self, to: SocketAddr) -> bool {
        self.tcp_contacts.contains(&to)
    }

    /// A TCP or TLS connection closed: the registrations made on it are reached at their contacts.
    pub fn flow_closed(&mut self, peer: SocketAddr) {
        let n = self.registrar.flow_closed(peer);
        if n > 0 {
            tracing::info!(%peer, registrations = n, "a SIP connection closed: its phones are reached at their contacts now");
        }
    }

    /// The engine gave transfer `transfer_id` up: `true` if it was still in flight (then it failed).
    pub fn abandon_transfer(&mut self, graph_id: &str, transfer_id: &str, now_ms: u64) -> bool {
        self.bridge_plans.remove(graph_id);
        if let Some(call) = self.call_mut(graph_id)
            && call.end_bye_grace()
        {
            // The phone left already (its BYE waited for the NOTIFY): that is the outcome now.
            self.events.push(Event::Call { graph_id: graph_id.to_owned(), event: CallEvent::HungUp });
            return false;
        }
        self.replacing.retain(|_, (by, id)| !(by == graph_id && id == transfer_id));
        let mut abandoned = self.call_mut(graph_id).is_some_and(|c| c.abandon_transfer(transfer_id));
        if let Some(leg) =
            self.bridges.iter().find(|(_, b)| b.transferee == graph_id && b.transfer_id == transfer_id).map(|(leg, _)| leg.clone())
        {
            // The target still rings: CANCEL it; the transferee comes back.
            self.bridges.remove(&leg);
            self.hang_up(&leg, now_ms);
            if let Some(call) = self.call_mut(graph_id) {
                call.bridging = None;
            }
            abandoned = true;
        }
        if let Some(sip_id) = self.by_graph.get(graph_id).cloned() {
            self.resume_if_idle(&sip_id, now_ms);
        }
        abandoned
    }

    /// Where `user` is registered, for a Refer-To.
    pub fn contact_of(&self, user: &str, now_ms: u64) -> Option<String> {
        self.registrar.contacts(user, now_ms).into_iter().next()
    }

    /// The bot hangs up: BYE once answered, 480 while still ringing; a target being called for the
    /// call's transfer is given up too.
    pub fn hang_up(&mut self, graph_id: &str, now_ms: u64) {
        self.hang_up_keeping(graph_id, false, now_ms);
    }

    /// A group member's dialog leaves (`graph_id`: a member leg, or a phone's call become a group
    /// call): as [`Endpoint::hang_up`], but a target being called for another member of that call
    /// (one on the other network, handed over under the call's id) rings on.
    pub fn hang_up_member(&mut self, graph_id: &str, now_ms: u64) {
        self.hang_up_keeping(graph_id, true, now_ms);
    }

    /// A target being called for a transfer of `graph_id` stops ringing (its dialog stays).
    pub fn stop_bridging(&mut self, graph_id: &str, keep_foreign: bool, now_ms: u64) {
        let bridged = self.bridges.iter().find(|(_, b)| b.transferee == graph_id && !(keep_foreign && b.foreign.is_some()));
        if let Some(leg) = bridged.map(|(leg, _)| leg.clone()) {
            self.bridges.remove(&leg);
            self.hang_up(&leg, now_ms);
        }
    }

    fn hang_up_keeping(&mut self, graph_id: &str, keep_foreign: bool, now_ms: u64) {
        self.stop_bridging(graph_id, keep_foreign, now_ms);
        let contact = self.contact();
        let local = self.local();
        let elsewhere = self.foreign_legs.remove(graph_id);
        let Some(call) = self.call_mut(graph_id) else { return };
        let to = call.peer;
        if elsewhere || call.partner.as_deref() == Some(ELSEWHERE) {
            // The other network's side of this call goes with it.
            self.events.push(Event::LegHungUp { leg: graph_id.to_owned() });
        }
        let Some(call) = self.call_mut(graph_id) else { return };
        let bytes = match call.phase {
            Phase::Ringing if call.role == Role::Uas => call.refuse(480, "Temporarily Unavailable", now_ms),
            // Ours, not answered yet: CANCEL (once the phone has said it has the INVITE).
            Phase::Calling | Phase::Ringing => match call.cancel(now_ms) {
                Some(bytes) => bytes,
                None => return,
            },
            Phase::Answered | Phase::Confirmed => call.bye(&contact, local, now_ms),
            Phase::Refused | Phase::Ended => return,
        };
        self.outbox.push(Reply { to, bytes });
    }

    /// Sends again what is due, gives up on what is overdue; call it at [`Endpoint::next_due`].
    pub fn poll(&mut self, now_ms: u64) {
        let contact = self.contact();
        let local = self.local();
        let mut done = Vec::new();
        for (sip_id, call) in &mut self.calls {
            let (again, events) = call.poll(now_ms);
            for bytes in again {
                self.outbox.push(Reply { to: call.peer, bytes });
            }
            // A failed resume is tried again when its wait is over.
            if let Some(bytes) = call.resume_if_idle(&contact, local, now_ms) {
                self.outbox.push(Reply { to: call.peer, bytes });
            }
            // No Graph call watches a bridged or handed-over call (no keep-alive ends it): it ends
            // after `DETACHED_MAX_MS` whatever happens, so that a phone that vanished holds nothing.
            if call.detached_at.is_some_and(|at| now_ms >= at + DETACHED_MAX_MS) && call.phase == Phase::Confirmed {
                tracing::info!(call_id = call.graph_id, "a bridged or handed-over SIP call reached its longest; hanging up");
                let bytes = call.bye(&contact, local, now_ms);
                self.outbox.push(Reply { to: call.peer, bytes });
                if call.partner.as_deref() == Some(ELSEWHERE) || self.foreign_legs.contains(&call.graph_id) {
                    self.events.push(Event::LegHungUp { leg: call.graph_id.clone() });
                }
            }
            for event in events {
                if event == CallEvent::Lost {
                    let bytes = call.bye(&contact, local, now_ms);
                    self.outbox.push(Reply { to: call.peer, bytes });
                }
                self.events.push(Event::Call { graph_id: call.graph_id.clone(), event });
            }
            if call.finished() {
                done.push(sip_id.clone());
            }
        }
        for sip_id in done {
            if let Some(call) = self.calls.remove(&sip_id) {
                let gone = call.graph_id;
                self.by_graph.remove(&gone);
                self.bridge_plans.remove(&gone);
                // A consultation call's entry goes with it (not with its transferee's call, which ends
                // first when the transfer succeeds, before the target's BYE on the consultation).
                self.replacing.remove(&gone);
                self.foreign_legs.remove(&gone);
                // A bridge whose leg is gone is over; one whose transferee is gone stops ringing.
                self.bridges.remove(&gone);
                let orphans: Vec<String> =
                    self.bridges.iter().filter(|(_, b)| b.transferee == gone && b.foreign.is_none()).map(|(l, _)| l.clone()).collect();
                for leg in orphans {
                    self.bridges.remove(&leg);
                    self.hang_up(&leg, now_ms);
                }
                // A contact we dialled over TCP is forgotten with its last call.
                if !self.calls.values().any(|c| c.peer == call.peer) {
                    self.tcp_contacts.remove(&call.peer);
                }
            }
        }
        self.route(now_ms);
    }

    /// What the calls' events mean once bridges are taken into account, before the owner hears them:
    /// - a refused REFER with a bridge plan starts the bridge (the owner hears nothing yet);
    /// - a bridge leg's answer completes the transfer of its transferee, and its refusal fails it;
    /// - a bridged leg that hangs up ends the other (no Graph call is left to tell);
    /// - a transferee whose transfer failed is taken off hold.
    fn route(&mut self, now_ms: u64) {
        let (contact, local) = (self.contact(), self.local());
        let mut out = Vec::new();
        let mut failed = Vec::new();
        for event in std::mem::take(&mut self.events) {
            let Event::Call { graph_id, event } = event else {
                out.push(event);
                continue;
            };
            if let Some(bridge) = self.bridges.get(&graph_id).cloned() {
                let transferee = bridge.transferee.clone();
                let transfer = |progress| Event::Call {
                    graph_id: transferee.clone(),
                    event: CallEvent::Transfer { transfer_id: bridge.transfer_id.clone(), progress },
                };
                match event {
                    CallEvent::Connected if bridge.foreign.is_some() => {
                        self.bridges.remove(&graph_id);
                        if let Some(call) = self.call_mut(&graph_id) {
                            call.detached_at = Some(now_ms);
                        }
                        self.foreign_legs.insert(graph_id.clone());
                        let member = bridge.foreign.clone().flatten();
                        out.push(Event::HandOver {
                            graph_id: transferee.clone(),
                            transfer_id: bridge.transfer_id.clone(),
                            member,
                            leg: graph_id,
                        });
                    }
                    CallEvent::Connected => {
                        self.bridges.remove(&graph_id);
                        if self.join(&graph_id, &bridge.transferee, &contact, local, now_ms) {
                            out.push(transfer(Progress::Accepted));
                            out.push(transfer(Progress::Completed));
                        } else {
                            // The transferee is gone or not in a state to be joined: hang the target up.
                            self.hang_up(&graph_id, now_ms);
                            out.push(transfer(Progress::Failed(487)));
                        }
                    }
                    CallEvent::Refused(code) => {
                        self.bridges.remove(&graph_id);
                        if let Some(call) = self.call_mut(&bridge.transferee) {
                            call.bridging = None;
                        }
                        out.push(transfer(Progress::Failed(code)));
                        failed.push(bridge.transferee.clone());
                    }
                    _ => {}
                }
                continue;
            }
            if self.foreign_legs.contains(&graph_id) {
                if matches!(event, CallEvent::HungUp | CallEvent::Lost) {
                    self.foreign_legs.remove(&graph_id);
                    out.push(Event::LegHungUp { leg: graph_id });
                }
                continue;
            }
            // (A bridge handed over under this id is another network's member's: not this phone's.)
            if matches!(event, CallEvent::HungUp | CallEvent::Lost)
                && let Some(leg) =
                    self.bridges.iter().find(|(_, b)| b.transferee == graph_id && b.foreign.is_none()).map(|(l, _)| l.clone())
            {
                // The transferee left while its target was being called: the target stops ringing.
                self.bridges.remove(&leg);
                self.hang_up(&leg, now_ms);
            }
            if matches!(event, CallEvent::HungUp)
                && let Some((by, _)) = self.replacing.remove(&graph_id)
            {
                // The consultation call's BYE from the target that the transferee reached with Replaces.
                out.push(Event::Call { graph_id, event: CallEvent::Replaced { by } });
                continue;
            }
            let partner = self.by_graph.get(&graph_id).and_then(|id| self.calls.get(id)).and_then(|c| c.partner.clone());
            if partner.as_deref() == Some(ELSEWHERE) {
                // Joined to another network's party: that network hears the phone hang up.
                if matches!(event, CallEvent::HungUp | CallEvent::Lost) {
                    out.push(Event::LegHungUp { leg: graph_id });
                }
                continue;
            }
            if let Some(partner) = partner {
                if matches!(event, CallEvent::HungUp | CallEvent::Lost)
                    && let Some(other) = self.calls.get_mut(&partner)
                    && other.phase == Phase::Confirmed
                {
                    let bytes = other.bye(&contact, local, now_ms);
                    self.outbox.push(Reply { to: other.peer, bytes });
                }
                continue;
            }
            match &event {
                CallEvent::Transfer { transfer_id, progress: Progress::Refused(code) }
                    if matches!(code, 405 | 408 | 420 | 501)
                        && self.bridge_plans.get(&graph_id).is_some_and(|p| &p.transfer_id == transfer_id) =>
                {
                    if self.start_bridge(&graph_id, now_ms) {
                        continue;
                    }
                    failed.push(graph_id.clone());
                }
                CallEvent::Transfer { transfer_id, progress: Progress::Failed(code) | Progress::Refused(code) } => {
                    let consultation =
                        self.replacing.iter().find(|(_, (by, id))| by == &graph_id && id == transfer_id).map(|(b, _)| b.clone());
                    if let Some(b) = consultation {
                        self.replacing.remove(&b);
                        // Replaces was not understood or the dialog not found: a basic transfer instead.
                        if self.blind_when_replaces_refused
                            && matches!(code, 420 | 481 | 501)
                            && self.refer_blind_instead(&graph_id, transfer_id, &b, now_ms)
                        {
                            continue;
                        }
                    }
                    failed.push(graph_id.clone());
                }
                _ => {}
            }
            out.push(Event::Call { graph_id, event });
        }
        self.events = out;
        for graph_id in failed {
            self.bridge_plans.remove(&graph_id);
            if let Some(sip_id) = self.by_graph.get(&graph_id).cloned() {
                self.resume_if_idle(&sip_id, now_ms);
            }
        }
    }

    /// The fallback of a consultative transfer whose Replaces was refused: REFER to the consultation
    /// call's phone, without Replaces.
    fn refer_blind_instead(&mut self, graph_id: &str, transfer_id: &str, consultation: &str, now_ms: u64) -> bool {
        let Some(target) = self.by_graph.get(consultation).and_then(|id| self.calls.get(id)).map(|c| c.remote_target().to_owned()) else {
            return false;
        };
        let referred_by = format!("sip:switchboard@{}", self.domain);
        tracing::info!(call_id = graph_id, "Replaces was refused; transferring without it (RFC 5589 §6.5)");
        self.refer(graph_id, transfer_id, &target, &referred_by, now_ms)
    }

    /// Calls the target of `transferee`'s refused REFER ourselves, offering the transferee's media.
    fn start_bridge(&mut self, transferee: &str, now_ms: u64) -> bool {
        let Some(plan) = self.bridge_plans.remove(transferee) else { return false };
        let Some(call) = self.call_mut(transferee) else { return false };
        if call.phase != Phase::Confirmed {
            return false;
        }
        call.bridging = Some(plan.transfer_id.clone());
        let from = call.remote_identity();
        let media = call.remote_media.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9)));
        let leg = format!("bridge-{}", plan.transfer_id);
        let mut destination = plan.destination;
        destination.headers.push(("Referred-By".into(), format!("<{}>", plan.referred_by)));
        tracing::info!(call_id = transferee, "the transferee refused REFER; calling the target and bridging (RFC 3725)");
        self.place(&leg, &from, destination, media, now_ms);
        self.quiet_leg(&leg);
        self.bridges.insert(leg, Bridge { transferee: transferee.to_owned(), transfer_id: plan.transfer_id, foreign: None });
        true
    }

    /// Transfers another network's call (the sim's) to a SIP phone: calls the target as `from`, the
    /// transferee, offering our media; [`Event::HandOver`] follows when it answers, or the transfer
    /// fails with its status.
    #[allow(clippy::too_many_arguments)]
    pub fn transfer_foreign(
        &mut self,
        graph_id: &str,
        transfer_id: &str,
        member: Option<String>,
        mut destination: Destination,
        from: &str,
        referred_by: &str,
        media: SocketAddr,
        now_ms: u64,
    ) {
        let leg = format!("handover-{transfer_id}");
        destination.headers.push(("Referred-By".into(), format!("<{referred_by}>")));
        self.place(&leg, from, destination, media, now_ms);
        self.quiet_leg(&leg);
        self.bridges.insert(leg, Bridge { transferee: graph_id.to_owned(), transfer_id: transfer_id.to_owned(), foreign: Some(member) });
    }

    /// A transfer of SIP call `graph_id` to a party of another network begins: the transfer is under
    /// way (no resume meanwhile). `false` if the call is not established.
    pub fn await_elsewhere(&mut self, graph_id: &str, transfer_id: &str) -> bool {
        match self.call_mut(graph_id) {
            Some(call) if call.phase == Phase::Confirmed => {
                call.bridging = Some(transfer_id.to_owned());
                true
            }
            _ => false,
        }
    }

    /// The other network's party answered: the call is joined to it (no Graph call any more; its
    /// BYE becomes [`Event::LegHungUp`]). `false` if the phone left meanwhile.
    pub fn join_elsewhere(&mut self, graph_id: &str, now_ms: u64) -> bool {
        match self.call_mut(graph_id) {
            Some(call) if call.phase == Phase::Confirmed => {
                call.bridging = None;
                call.partner = Some(ELSEWHERE.to_owned());
                call.detached_at = Some(now_ms);
                true
            }
            _ => false,
        }
    }

    /// The other network's party did not answer: the phone comes back (off hold if held).
    pub fn not_joined_elsewhere(&mut self, graph_id: &str, now_ms: u64) {
        if let Some(call) = self.call_mut(graph_id) {
            call.bridging = None;
        }
        if let Some(sip_id) = self.by_graph.get(graph_id).cloned() {
            self.resume_if_idle(&sip_id, now_ms);
        }
    }

    /// A leg placed for a transfer plays no comfort audio: its phone is to hear the other party.
    fn quiet_leg(&mut self, leg: &str) {
        if let Some(call) = self.call_mut(leg) {
            call.plays = false;
        }
    }

    /// Whether transfer `transfer_id` of `graph_id` is a SIP call we placed (a bridge or a hand-over).
    pub fn places_transfer(&self, graph_id: &str, transfer_id: &str) -> bool {
        self.bridges.values().any(|b| b.transferee == graph_id && b.transfer_id == transfer_id)
    }

    /// The target answered a bridge leg: the two calls are joined, and the transferee's media is sent
    /// to the target's by re-INVITE.
    fn join(&mut self, leg: &str, transferee: &str, contact: &str, local: SocketAddr, now_ms: u64) -> bool {
        let (Some(leg_id), Some(transferee_id)) = (self.by_graph.get(leg).cloned(), self.by_graph.get(transferee).cloned()) else {
            return false;
        };
        if self.calls.get(&transferee_id).is_none_or(|c| c.phase != Phase::Confirmed) {
            return false;
        }
        let target_media = self.calls.get(&leg_id).and_then(|c| c.remote_media);
        if let Some(leg) = self.calls.get_mut(&leg_id) {
            leg.partner = Some(transferee_id.clone());
            leg.detached_at = Some(now_ms);
        }
        if let Some(call) = self.calls.get_mut(&transferee_id) {
            call.partner = Some(leg_id);
            call.detached_at = Some(now_ms);
            call.bridging = None;
            if let Some(bytes) = target_media.and_then(|m| call.connect_media(m, contact, local, now_ms)) {
                self.outbox.push(Reply { to: call.peer, bytes });
            }
        }
        true
    }

    /// When [`Endpoint::poll`] has something to do next.
    pub fn next_due(&self) -> Option<u64> {
        self.calls.values().filter_map(SipCall::next_due).min()
    }

    /// A Graph call id for a new SIP call: a name-based (MD5, version 3) UUID of its Call-ID and tag,
    /// so that a retransmitted INVITE names the same call, and the id says it is a SIP call
    /// ([`is_sip_call`]).
    fn graph_id(&self, call_id: &str, from_tag: &str) -> String {
        let h = crate::digest::md5_hex(&format!("{call_id}|{from_tag}|{}", self.secret));
        format!("{}-{}-3{}-8{}-{}", &h[..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32])
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
        let out = self.receive_one(bytes, from, transport, now_ms);
        self.route(now_ms);
        out
    }

    fn receive_one(&mut self, bytes: &[u8], from: SocketAddr, transport: Transport, now_ms: u64) -> (Option<Reply>, Outcome) {
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return (None, Outcome::Absorbed); // CRLF keep-alive (RFC 5626 §3.5.1)
        }
        let msg = match Message::parse(bytes, transport == Transport::Udp) {
            Ok(m) => m,
            Err(e) => return self.bad_request(bytes, from, transport, e),
        };
        if let Some(forwarded) = self.proxy(&msg, from, now_ms) {
            return forwarded;
        }
        let StartLine::Request { method, .. } = &msg.start else {
            // Answers to our BYEs and REFERs; anything else is stray.
            let call_id = msg.headers.get("Call-ID").unwrap_or_default();
            let StartLine::Response { code, .. } = msg.start else { return (None, Outcome::Absorbed) };
            let contact = self.contact();
            let local = self.local();
            let mut resume = false;
            if let (Ok(cseq), Some(call)) = (CSeq::parse(msg.headers.get("CSeq").unwrap_or_default()), self.calls.get_mut(call_id)) {
                match cseq.method.as_str() {
                    "INVITE" if call.is_reinvite(cseq.seq) => {
                        for bytes in call.reinvite_answered(&msg, &contact, local, now_ms) {
                            self.outbox.push(Reply { to: call.peer, bytes });
                        }
                        resume = true;
                    }
                    "INVITE" => {
                        let (out, events) = call.invite_answered(&msg, &contact, local, now_ms);
                        for bytes in out {
                            self.outbox.push(Reply { to: call.peer, bytes });
                        }
                        for event in events {
                            self.events.push(Event::Call { graph_id: call.graph_id.clone(), event });
                        }
                    }
                    "CANCEL" => call.cancel_answered(now_ms),
                    "BYE" if code >= 200 => call.bye_answered(cseq.seq),
                    "REFER" => {
                        if let Some(event) = call.refer_answered(cseq.seq, code) {
                            self.events.push(Event::Call { graph_id: call.graph_id.clone(), event });
                        }
                    }
                    _ => {}
                }
            }
            if resume {
                // The hold was answered after its transfer was given up.
                self.resume_if_idle(call_id, now_ms);
            }
            return (None, Outcome::Absorbed);
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
        let call_id = msg.headers.get("Call-ID").unwrap_or_default().to_owned();
        if method == "ACK" {
            // The ACK to our 2xx confirms the call; to a non-2xx it ends the INVITE transaction.
            if let Some(call) = self.calls.get_mut(&call_id)
                && let Some(event) = call.ack()
            {
                self.events.push(Event::Call { graph_id: call.graph_id.clone(), event });
            }
            return (None, Outcome::Absorbed);
        }
        if method == "INVITE" && to.tag().is_none() {
            if let Some(call) = self.calls.get(&call_id) {
                // A retransmitted INVITE: the last answer again (the 180 while ringing, then the final).
                return match call.invite_again() {
                    Some(bytes) => (Some(Reply { to: call.peer, bytes }), Outcome::Retransmitted),
                    None => (None, Outcome::Absorbed),
                };
            }
            if let Some(started) = self.invite(&msg, &via, &cseq, reply_to, from, transport, now_ms) {
                return started;
            }
        }
        if transport == Transport::Udp
            && let Lookup::Retransmit(to, bytes) = self.transactions.lookup(&key, now_ms)
        {
            return (Some(Reply { to, bytes }), Outcome::Retransmitted);
        }
        let mut refused_reinvite = None;
        if method == "INVITE" && to.tag().is_some() {
            let contact = self.contact();
            if let Some(call) = self.calls.get_mut(&call_id) {
                match call.their_reinvite(&msg, &contact, now_ms) {
                    Ok((bytes, news)) => {
                        if let Some(event) = news {
                            self.events.push(Event::Call { graph_id: call.graph_id.clone(), event });
                        }
                        return (Some(Reply { to: reply_to, bytes }), Outcome::Answered(200));
                    }
                    Err((code, reason)) => refused_reinvite = Some(Answer { code, reason, headers: vec![] }),
                }
            }
        }
        let in_call = refused_reinvite.or_else(|| self.in_call(&msg, &method, &call_id, &to, now_ms));
        let answer = match msg.headers.get("Max-Forwards").map(|m| m.trim().parse::<u32>()) {
            _ if let Some(a) = in_call => a,
            Some(Err(_)) => Answer { code: 400, reason: "Bad Request (Max-Forwards is not a number)".into(), headers: vec![] },
            Some(Ok(0)) if method != "OPTIONS" => Answer { code: 483, reason: "Too Many Hops".into(), headers: vec![] },
            _ => self.answer(&msg, from, transport, &method, &to, &cseq, now_ms),
        };
        let code = answer.code;
        let bytes = response(&msg.headers, answer, &key, from).to_bytes();
        if transport == Transport::Udp {
            self.transactions.answered(key, reply_to, bytes.clone(), now_ms);
        }
        (Some(Reply { to: reply_to, bytes }), Outcome::Answered(code))
    }

    /// Stateless proxying (RFC 3261 §16.11) between registered phones: a request whose Request-URI
    /// is a registered contact (not us) goes there with our Via on top; a response whose top Via is
    /// ours goes back to the Via below. This is how a phone that uses Switchboard as its outbound
    /// proxy reaches the target of a REFER. Nothing is relayed anywhere else.
    fn proxy(&mut self, msg: &Message, from: SocketAddr, now_ms: u64) -> Option<(Option<Reply>, Outcome)> {
        let local = self.local?;
        match &msg.start {
            StartLine::Request { uri, .. } => {
                let target = crate::uri::SipUri::parse(uri).ok()?;
                let to_us =
                    target.port.unwrap_or(5060) == local.port() && (self.ours(&target.host) || target.host == local.ip().to_string());
                // Only between registered phones: from one, to another.
                if to_us || !self.registrar.is_registered_contact(&target, now_ms) || !self.registrar.is_registered_source(from, now_ms) {
                    return None;
                }
                let to =
                    SocketAddr::new(target.host.trim_start_matches('[').trim_end_matches(']').parse().ok()?, target.port.unwrap_or(5060));
                let mut headers = Headers::default();
                let top = msg.headers.get("Via").unwrap_or_default();
                // Derived from the incoming branch alone, so that a CANCEL or the ACK to an error gets
                // the branch of its INVITE, as the target expects (RFC 3261 §16.11); keyed, so that only
                // responses to what we forwarded come back through us.
                let branch = self.proxy_branch(top);
                headers.push("Via", format!("SIP/2.0/UDP {local};branch={branch}"));
                let mut vias = msg.headers.all("Via").into_iter();
                if let Some(first) = vias.next() {
                    // Where it really came from, so the response finds its way back (RFC 3581).
                    let first = Via::parse(first).map_or_else(
                        |_| first.to_owned(),
                        |mut v| {
                            stamp_via(&mut v, from);
                            v.params.set("rport", Some(from.port().to_string()));
                            v.to_string()
                        },
                    );
                    headers.push("Via", first);
                }
                for v in vias {
                    headers.push("Via", v);
                }
                for (name, value) in msg.headers.iter().filter(|(n, _)| !n.eq_ignore_ascii_case("Via")) {
                    if name.eq_ignore_ascii_case("Max-Forwards") {
                        match value.trim().parse::<u32>() {
                            Ok(0) => return None, // answered 483 by the usual path
                            Ok(n) => headers.push(name, (n - 1).to_string()),
                            Err(_) => return None,
                        }
                    } else {
                        headers.push(name, value);
                    }
                }
                if headers.get("Max-Forwards").is_none() {
                    headers.push("Max-Forwards", "69");
                }
                let out = Message { start: msg.start.clone(), headers, body: msg.body.clone() };
                Some((Some(Reply { to, bytes: out.to_bytes() }), Outcome::Absorbed))
            }
            StartLine::Response { .. } => {
                let vias = msg.headers.all("Via");
                let top = Via::parse(vias.first()?).ok()?;
                let ours = top.port == Some(local.port()) && (top.host == local.ip().to_string() || self.ours(&top.host));
                if !ours || vias.len() < 2 {
                    return None;
                }
                let next = Via::parse(vias[1]).ok()?;
                // Only answers to requests we forwarded: the branch is keyed on the Via below it.
                if top.branch() != Some(self.proxy_branch(vias[1]).as_str()) {
                    return Some((None, Outcome::Dropped(ParseError("a response to a request this proxy did not forward".into()))));
                }
                let host = next
                    .params
                    .value("received")
                    .map_or(next.host.as_str(), |r| r)
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned();
                let port = next.params.value("rport").and_then(|p| p.parse().ok()).or(next.port).unwrap_or(5060);
                let to = SocketAddr::new(host.parse().ok()?, port);
                let mut headers = Headers::default();
                for v in vias.iter().skip(1) {
                    headers.push("Via", *v);
                }
                for (name, value) in msg.headers.iter().filter(|(n, _)| !n.eq_ignore_ascii_case("Via")) {
                    headers.push(name, value);
                }
                let out = Message { start: msg.start.clone(), headers, body: msg.body.clone() };
                Some((Some(Reply { to, bytes: out.to_bytes() }), Outcome::Absorbed))
            }
        }
    }

    /// Our branch for a request forwarded with `via` on top: keyed, and the same for its CANCEL and its
    /// retransmissions (only the Via's branch and sent-by count, not what we stamp on it).
    fn proxy_branch(&self, via: &str) -> String {
        let (branch, host, port) = Via::parse(via)
            .map_or_else(|_| (String::new(), String::new(), None), |v| (v.branch().unwrap_or_default().to_owned(), v.host, v.port));
        format!("z9hG4bK{}", &crate::digest::md5_hex(&format!("{branch}|{host}|{port:?}|{}", self.secret))[..20])
    }

    /// A new INVITE from a phone: authenticated, then handed to the owner as [`Event::Invite`] with
    /// `100 Trying`. `None`: it is answered like any other request (a challenge, 403, 404…).
    #[allow(clippy::too_many_arguments)]
    fn invite(
        &mut self,
        msg: &Message,
        via: &Via,
        cseq: &CSeq,
        peer: SocketAddr,
        from: SocketAddr,
        transport: Transport,
        now_ms: u64,
    ) -> Option<(Option<Reply>, Outcome)> {
        let to_user = crate::uri::SipUri::parse(match &msg.start {
            StartLine::Request { uri, .. } => uri,
            StartLine::Response { .. } => return None,
        })
        .ok()?
        .user?;
        // A trunk is known by where its packets really come from (not by what its Via says): its
        // address over UDP, its IP over TCP (a connection's port is the client's choice).
        let trunk = self.trunks.iter().any(|t| t.ip() == from.ip() && (transport != Transport::Udp || t.port() == from.port()));
        let from_user = if trunk {
            // A trunk is trusted by its address; the caller is the number it names.
            NameAddr::parse(msg.headers.get("From").unwrap_or_default()).ok()?.sip_uri().ok()?.user?
        } else {
            self.registrar.authenticate(msg, peer, now_ms).ok()?
        };
        let call_id = msg.headers.get("Call-ID").unwrap_or_default().to_owned();
        let from_tag = NameAddr::parse(msg.headers.get("From").unwrap_or_default()).ok()?.tag().unwrap_or_default().to_owned();
        let graph_id = self.graph_id(&call_id, &from_tag);
        let local_tag = crate::digest::md5_hex(&format!("{graph_id}|tag"))[..10].to_owned();
        let session_id = u64::from_str_radix(&graph_id[..8], 16).unwrap_or(1);
        let mut call = SipCall::inbound(&graph_id, msg, peer, &local_tag, cseq.seq, session_id);
        call.via_transport = match transport {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        };
        self.calls.insert(call_id, call);
        self.by_graph.insert(graph_id.clone(), msg.headers.get("Call-ID").unwrap_or_default().to_owned());
        self.events.push(Event::Invite { graph_id, from_user, to_user, trunk });
        let trying =
            response(&msg.headers, Answer { code: 100, reason: "Trying".into(), headers: vec![] }, via.branch().unwrap_or_default(), peer);
        Some((Some(Reply { to: peer, bytes: trying.to_bytes() }), Outcome::Answered(100)))
    }

    /// BYE and CANCEL for a call of ours: the answer, having told the call. `None`: not ours.
    fn in_call(&mut self, msg: &Message, method: &str, call_id: &str, to: &NameAddr, now_ms: u64) -> Option<Answer> {
        let ok = || Answer { code: 200, reason: "OK".into(), headers: vec![] };
        let contact = self.contact();
        let local = self.local();
        let call = self.calls.get_mut(call_id)?;
        if matches!(method, "BYE" | "NOTIFY" | "REFER" | "INFO") && !call.in_dialog(msg.headers.get("From").unwrap_or_default()) {
            return Some(Answer {
                code: 481,
                reason: "Call/Transaction Does Not Exist (the tags name another dialog)".into(),
                headers: vec![],
            });
        }
        match method {
            // DTMF as SIP INFO (`application/dtmf-relay`, `Signal=5`): the fallback for phones that do
            // not send RFC 4733 events. Other INFO packages are taken and ignored.
            "INFO" if to.tag().is_some() => {
                let relay =
                    msg.headers.get("Content-Type").is_some_and(|t| t.trim().to_ascii_lowercase().starts_with("application/dtmf-relay"));
                let body = String::from_utf8_lossy(&msg.body);
                let signal = body.lines().find_map(|l| {
                    let (name, value) = l.split_once('=')?;
                    name.trim().eq_ignore_ascii_case("signal").then(|| value.trim().to_owned())
                });
                match signal.filter(|_| relay) {
                    Some(s) => {
                        let key = s
                            .chars()
                            .next()
                            .filter(|c| s.chars().count() == 1 && matches!(c.to_ascii_uppercase(), '0'..='9' | '*' | '#' | 'A'..='D'));
                        let Some(key) = key else {
                            return Some(Answer {
                                code: 400,
                                reason: format!("Bad Request (Signal={} is not a key)", shorten(&s)),
                                headers: vec![],
                            });
                        };
                        let key = key.to_ascii_uppercase();
                        self.events.push(Event::Call { graph_id: call.graph_id.clone(), event: CallEvent::Dtmf(key) });
                        if let Some(event) = call.key_pressed(key, now_ms) {
                            self.events.push(Event::Call { graph_id: call.graph_id.clone(), event });
                        }
                        Some(ok())
                    }
                    None => Some(ok()),
                }
            }
            // The progress of our REFER (RFC 3515 §2.4.4): a sipfrag status line in the body.
            "NOTIFY" if to.tag().is_some() => {
                let event = msg.headers.get("Event").unwrap_or_default();
                if !event.trim().to_ascii_lowercase().starts_with("refer") {
                    return Some(Answer { code: 489, reason: "Bad Event".into(), headers: vec![("Allow-Events", "refer".into())] });
                }
                let frag = String::from_utf8_lossy(&msg.body);
                let status =
                    frag.lines().next().and_then(|l| l.strip_prefix("SIP/2.0 ")).and_then(|r| r.get(..3)).and_then(|c| c.parse().ok());
                let Some(status) = status else {
                    return Some(Answer {
                        code: 400,
                        reason: "Bad Request (the NOTIFY's body is not a message/sipfrag status line)".into(),
                        headers: vec![],
                    });
                };
                // `Event: refer;id=N` names the REFER by its CSeq (RFC 3515 §2.4.6): a NOTIFY for an
                // earlier REFER (before a fallback REFER) changes nothing now.
                let id = event.split(';').skip(1).find_map(|p| p.trim().strip_prefix("id=")).and_then(|n| n.trim().parse::<u32>().ok());
                let events = call.refer_notified(status, id);
                let completed =
                    events.iter().any(|e| matches!(e, CallEvent::Transfer { progress: Progress::Completed, .. } | CallEvent::HungUp));
                for event in events {
                    self.events.push(Event::Call { graph_id: call.graph_id.clone(), event });
                }
                if completed && call.phase != Phase::Ended {
                    // The phone reached the target: our leg of the call is done (RFC 5589 §6.1).
                    let bytes = call.bye(&contact, local, now_ms);
                    self.outbox.push(Reply { to: call.peer, bytes });
                }
                Some(ok())
            }
            "BYE" if to.tag().is_some() && call.phase != Phase::Ended => {
                // A BYE before the ACK to our 2xx (the ACK was lost) still says the phone had the
                // 2xx: the call was connected, then hung up (and our 2xx need not go again).
                if call.role == Role::Uas && call.phase == Phase::Ringing {
                    // A BYE on the early dialog (§15.1.2): the INVITE gets its final answer, 487.
                    let bytes = call.refuse(487, "Request Terminated", now_ms);
                    self.outbox.push(Reply { to: call.peer, bytes });
                }
                if let Some(CallEvent::Connected) = call.ack() {
                    self.events.push(Event::Call { graph_id: call.graph_id.clone(), event: CallEvent::Connected });
                }
                for event in call.their_bye(now_ms) {
                    self.events.push(Event::Call { graph_id: call.graph_id.clone(), event });
                }
                Some(ok())
            }
            "CANCEL" if call.role == Role::Uas && call.phase == Phase::Ringing => {
                // §9.2: 200 to the CANCEL, 487 to the INVITE.
                let bytes = call.refuse(487, "Request Terminated", now_ms);
                self.outbox.push(Reply { to: call.peer, bytes });
                self.events.push(Event::Call { graph_id: call.graph_id.clone(), event: CallEvent::HungUp });
                Some(ok())
            }
            "CANCEL" => Some(ok()), // too late to cancel: the final answer stands
            // A phone that tries to transfer the bot (RFC 3515): refused, cleanly; the call goes on.
            // Transfers are the bot's to make, through Graph.
            "REFER" if to.tag().is_some() => Some(Answer {
                code: 403,
                reason: "Forbidden (the bot transfers its calls through Graph; a REFER from the phone is refused)".into(),
                headers: vec![],
            }),
            _ => None,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn answer(
        &mut self,
        msg: &Message,
        from: SocketAddr,
        transport: Transport,
        method: &str,
        to: &NameAddr,
        cseq: &CSeq,
        now_ms: u64,
    ) -> Answer {
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
                let stream = match transport {
                    Transport::Udp => None,
                    Transport::Tcp => Some("TCP"),
                    Transport::Tls => Some("TLS"),
                };
                self.registrar.register(msg, from, stream, &user, &call_id, cseq.seq, now_ms)
            }
            "OPTIONS" => Answer {
                code: 200,
                reason: "OK".into(),
                headers: vec![("Allow", ALLOW.into()), ("Accept", "application/sdp".into()), ("Supported", "replaces".into())],
            },
            "INVITE" if to.tag().is_some() => plain(481, "Call/Transaction Does Not Exist"),
            "INVITE" => match self.registrar.authenticate(msg, from, now_ms) {
                Err(answer) => answer,
                // Authenticated, but the call could not start (no user in the Request-URI).
                Ok(_) => plain(404, "Not Found (the Request-URI names no number or application to call)"),
            },
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

/// The longest a SIP call may last once no Graph call watches it (bridged, handed over): 4 hours.
pub const DETACHED_MAX_MS: u64 = 4 * 3600 * 1000;

/// The partner of a SIP call joined to a party of another network (the sim) rather than to a SIP leg.
const ELSEWHERE: &str = "(another network)";

/// A new id for a Graph call placed over SIP: random, but a version 3 UUID, so that [`is_sip_call`]
/// knows it after a restart.
pub fn new_call_id() -> String {
    let mut id = uuid::Uuid::new_v4().to_string();
    id.replace_range(14..15, "3");
    id
}

/// Whether a Graph call id is one [`Endpoint`] gave a SIP call (a version 3 UUID; the API and the sim
/// give version 4). After a restart such a call's dialog is gone, and the call must end.
pub fn is_sip_call(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 36 && b[8] == b'-' && b[13] == b'-' && b[14] == b'3' && b[18] == b'-' && b[23] == b'-'
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
    if transport != Transport::Udp || via.params.get("rport").is_some() {
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

/// `uri` with `headers` in its headers part (`?name=value&…`), for a Refer-To.
fn with_uri_headers(uri: &str, headers: &[(String, String)]) -> String {
    if headers.is_empty() {
        return uri.to_owned();
    }
    let query: Vec<String> = headers.iter().map(|(n, v)| format!("{n}={}", escape_header_value(v))).collect();
    format!("{uri}?{}", query.join("&"))
}

/// Escapes a header value for a SIP URI's headers part (RFC 3261 §19.1.1, RFC 3891 §3: `;` `=` `@`
/// and anything else not unreserved become `%XX`).
fn escape_header_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 16);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
