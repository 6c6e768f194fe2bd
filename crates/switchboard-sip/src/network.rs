//! SIP as a network backend behind the engine's `Network` seam, beside the simulator.
//!
//! - Calls from registered users' phones (and from trunks) to an application instance's number or an
//!   application id become incoming Graph calls; answer, reject, redirect and hang-up act on the dialog.
//! - The bot's outgoing calls to a registered user INVITE the user's phone; to a PSTN number, a trunk.
//! - Transfers: blind (REFER), consultative (REFER with Replaces), bridged when REFER is refused, and
//!   across to the sim both ways (`HandOver`: a sim call to a phone, a phone to a sim party).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use switchboard_core::call::{Call, Failure, IncomingCall, NetCommand, NetEvent};
use switchboard_core::media::{CompletionReason, MediaAction};
use switchboard_core::party::Party;
use switchboard_engine::directory::Directory;
use switchboard_engine::network::{Network, NetworkEvent, NetworkEvents};

use crate::call::{CallEvent, Progress};
use crate::endpoint::{Destination, Endpoint, Event, is_sip_call};
use crate::transport::{Owner, Shared};

mod group;

/// An outbound proxy for PSTN numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trunk {
    pub name: String,
    pub address: SocketAddr,
    /// The E.164 prefixes it takes; empty: every number.
    pub prefixes: Vec<String>,
}

/// The trunk a call to `number` goes out on: the first whose prefixes take it (no prefixes: every
/// number). None for the instances' own numbers, and for the sim's scripted numbers unless
/// `trunk_sim_numbers`.
fn trunk_for<'r>(routing: &'r Routing, directory: &Directory, number: &str) -> Option<&'r Trunk> {
    if directory.instance_by_phone(number).is_some() || (directory.number(number).is_some() && !routing.trunk_sim_numbers) {
        return None;
    }
    routing.trunks.iter().find(|t| t.prefixes.is_empty() || t.prefixes.iter().any(|p| number.starts_with(p.as_str())))
}

/// Who is reached over SIP rather than on the sim.
#[derive(Clone, Debug, Default)]
pub struct Routing {
    /// SIP user name → directory user id.
    pub users: HashMap<String, String>,
    pub trunks: Vec<Trunk>,
    /// The sim's scripted numbers go to a trunk too.
    pub trunk_sim_numbers: bool,
}

/// The network of a call transferred to a SIP phone when the call is not a SIP call (the simulator):
/// it connects its side to the phone's leg, and hears when the phone hangs up.
pub trait HandOver: Send + Sync {
    /// The phone on `leg` answered the transfer of `call_id`: connect the transferee (the group
    /// member `member`, or the remote party) to it. `false` if the transferee is gone.
    fn hand_over(&self, call_id: &str, member: Option<&str>, leg: &str) -> bool;
    /// The phone on `leg` hung up (or, for a party ringing for a phone, the phone gave up).
    fn hung_up(&self, leg: &str);
    /// A SIP phone (its call `id`) is being transferred to `target`, a party of that network: ring
    /// it, and report with [`SipNetwork::other_side`]. `false` if that network has no such party.
    fn ring(&self, target: &Party, id: &str) -> bool;
}

/// What the other network's party does for a SIP phone transferred to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OtherSide {
    Answered,
    Refused(Failure),
    HungUp,
}

pub struct SipNetwork {
    pub shared: Shared,
    hand_over: std::sync::OnceLock<Arc<dyn HandOver>>,
    admission: std::sync::OnceLock<switchboard_engine::network::Admission>,
    /// SIP calls being transferred to a party of the other network, which rings: Graph id → transfer.
    ringing_elsewhere: std::sync::Mutex<HashMap<String, String>>,
    events: NetworkEvents,
    directory: Arc<Directory>,
    routing: Routing,
    /// Where our media is (a socket that takes RTP; comfort audio comes later).
    media: SocketAddr,
    /// Who fetches prompts (set once, at start); without it prompts fail.
    prompts: std::sync::OnceLock<Arc<dyn Prompts>>,
    /// The prompt being fetched for each call (Graph id → operation id): one stopped meanwhile is
    /// not played when it arrives.
    loading: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The hold music being fetched for each call (Graph id → its start operation): stopped
    /// meanwhile, it is not played when it arrives.
    holding: std::sync::Mutex<HashMap<String, String>>,
    /// Itself, for the tasks that fetch prompts.
    me: std::sync::Weak<SipNetwork>,
    /// Recordings waiting for their prompt and beep to play (operation id → when they end).
    records: std::sync::Mutex<HashMap<String, crate::call::RecordLimits>>,
    /// Where finished recordings go (set once, at start).
    recordings: std::sync::OnceLock<Arc<switchboard_engine::recordings::Recordings>>,
    /// Dialogs that are members of group calls: the endpoint's id → the group call and participant.
    members: std::sync::Mutex<HashMap<String, group::Membership>>,
}

/// Fetches a prompt's audio: 8 kHz samples, or why not (the adapter reads files and URLs under its
/// own rules).
pub trait Prompts: Send + Sync {
    fn load(&self, uri: String) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<i16>, String>> + Send>>;
}

impl SipNetwork {
    pub fn new(shared: Shared, events: NetworkEvents, directory: Arc<Directory>, routing: Routing, media: SocketAddr) -> Arc<Self> {
        let network = Arc::new_cyclic(|me| SipNetwork {
            shared,
            hand_over: std::sync::OnceLock::new(),
            admission: std::sync::OnceLock::new(),
            ringing_elsewhere: std::sync::Mutex::default(),
            events,
            directory,
            routing,
            media,
            prompts: std::sync::OnceLock::new(),
            loading: std::sync::Mutex::default(),
            holding: std::sync::Mutex::default(),
            me: me.clone(),
            records: std::sync::Mutex::default(),
            recordings: std::sync::OnceLock::new(),
            members: std::sync::Mutex::default(),
        });
        network.shared.set_owner(Arc::clone(&network) as Arc<dyn Owner>);
        network
    }

    /// Who says whether an app may be offered one more call (set once, at start).
    pub fn set_admission(&self, admission: switchboard_engine::network::Admission) {
        let _ = self.admission.set(admission);
    }

    /// Who fetches prompts (set once, at start).
    pub fn set_prompts(&self, prompts: Arc<dyn Prompts>) {
        let _ = self.prompts.set(prompts);
    }

    /// Where finished recordings go (set once, at start).
    pub fn set_recordings(&self, recordings: Arc<switchboard_engine::recordings::Recordings>) {
        let _ = self.recordings.set(recordings);
    }

    /// A recording as a WAV file, kept where the bot fetches it with its token.
    fn keep_recording(&self, call_id: &str, operation_id: &str, samples: &[i16], now: u64) -> switchboard_core::media::Recording {
        // 244 random bits: only the bot that is told may fetch it.
        let access_token = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        if let Some(store) = self.recordings.get() {
            store.put(switchboard_engine::recordings::Stored {
                id: operation_id.to_owned(),
                call_id: call_id.to_owned(),
                access_token: access_token.clone(),
                wav: Arc::new(crate::wav::encode(samples)),
                made_at: now,
            });
        }
        switchboard_core::media::Recording { id: operation_id.to_owned(), duration_ms: samples.len() as u64 / 8, access_token }
    }

    /// Hold music: the prompt given (or a soft tone, two notes a second apart) plays to the phone on
    /// `leg` (the call's own dialog, or a group member's), again and again, until it is stopped; the
    /// operation completes once it plays (or, stopping it, at once).
    fn hold_music_on(&self, call_id: &str, leg: &str, operation_id: &str, start: bool, prompt: Option<String>) {
        if !start {
            self.holding.lock().unwrap_or_else(|e| e.into_inner()).remove(leg);
            self.shared.with_endpoint(|ep, _| ep.hold_music(leg, None));
            let reason = CompletionReason::CompletedSuccessfully;
            self.events.call(call_id, NetEvent::MediaCompleted { operation_id: operation_id.to_owned(), reason, recording: None });
            return;
        }
        let (call_id, leg, operation_id) = (call_id.to_owned(), leg.to_owned(), operation_id.to_owned());
        let (prompts, network) = (self.prompts.get().cloned(), self.me.upgrade());
        let Some(network) = network else { return };
        self.holding.lock().unwrap_or_else(|e| e.into_inner()).insert(leg.clone(), operation_id.clone());
        tokio::spawn(async move {
            let samples = match (prompt, prompts) {
                (Some(uri), Some(p)) => p.load(uri).await,
                (Some(_), None) => Err("no prompt loader".to_owned()),
                (None, _) => Ok(crate::wav::hold_music()),
            };
            // Stopped while it was being fetched: nothing to play, and the start is over all the same.
            let current = network.holding.lock().unwrap_or_else(|e| e.into_inner()).remove(&leg);
            let stopped = current.as_deref() != Some(operation_id.as_str());
            let started = match samples {
                Ok(_) if stopped => true,
                Ok(s) => network.shared.with_endpoint(|ep, _| ep.hold_music(&leg, Some(Arc::new(s)))),
                Err(why) => {
                    tracing::warn!(call_id, operation_id, why, "hold music cannot be played; the operation fails");
                    false
                }
            };
            let reason = if started { CompletionReason::CompletedSuccessfully } else { CompletionReason::UnspecifiedError };
            network.events.call(&call_id, NetEvent::MediaCompleted { operation_id, reason, recording: None });
        });
    }

    /// `playPrompt` over SIP: the prompts are fetched, one after another, then played as RTP; the
    /// operation completes when the last sample has gone (or fails if one cannot be had).
    fn play(&self, call_id: &str, operation_id: &str, uris: Vec<String>, looped: bool, beep: bool) {
        let failed = |network: &SipNetwork, why: &str| {
            tracing::warn!(call_id, operation_id, why, "a prompt cannot be played; the operation fails");
            let reason = CompletionReason::PlayPromptFailed;
            network.events.call(call_id, NetEvent::MediaCompleted { operation_id: operation_id.to_owned(), reason, recording: None });
        };
        let (Some(prompts), Some(network)) = (self.prompts.get().cloned(), self.me.upgrade()) else {
            return failed(self, "no prompt loader");
        };
        self.loading.lock().unwrap_or_else(|e| e.into_inner()).insert(operation_id.to_owned());
        let (call_id, operation_id) = (call_id.to_owned(), operation_id.to_owned());
        tokio::spawn(async move {
            let mut samples = Vec::new();
            for uri in uris {
                match prompts.load(uri.clone()).await {
                    // All the prompts of one operation together within one prompt's limit.
                    Ok(s) if samples.len() + s.len() > crate::wav::MAX_SAMPLES => {
                        network.loading.lock().unwrap_or_else(|e| e.into_inner()).remove(&operation_id);
                        network.records.lock().unwrap_or_else(|e| e.into_inner()).remove(&operation_id);
                        tracing::warn!(call_id, operation_id, "the prompts are longer than 10 minutes together; the operation fails");
                        let reason = CompletionReason::PlayPromptFailed;
                        network.events.call(&call_id, NetEvent::MediaCompleted { operation_id, reason, recording: None });
                        return;
                    }
                    Ok(s) => samples.extend(s),
                    Err(why) => {
                        network.loading.lock().unwrap_or_else(|e| e.into_inner()).remove(&operation_id);
                        network.records.lock().unwrap_or_else(|e| e.into_inner()).remove(&operation_id);
                        let why = format!("{}: {why}", uri.chars().take(120).collect::<String>());
                        tracing::warn!(call_id, operation_id, why, "a prompt cannot be played; the operation fails");
                        let reason = CompletionReason::PlayPromptFailed;
                        network.events.call(&call_id, NetEvent::MediaCompleted { operation_id, reason, recording: None });
                        return;
                    }
                }
            }
            if beep {
                samples.extend(crate::wav::beep());
            }
            // Stopped (cancelled, or the call ended) while it was being fetched: nothing to play.
            if !network.loading.lock().unwrap_or_else(|e| e.into_inner()).remove(&operation_id) {
                return;
            }
            let samples = Arc::new(samples);
            let playing = network.shared.with_endpoint(|ep, _| ep.play(&call_id, operation_id.clone(), samples, looped));
            if !playing {
                let reason = CompletionReason::PlayPromptFailed;
                network.events.call(&call_id, NetEvent::MediaCompleted { operation_id, reason, recording: None });
            }
        });
    }

    /// Starts transfer `transfer_id` of the phone on `leg` (a call's own dialog, or a group member's):
    /// REFER to `target` when SIP reaches it, else the other network's party (the sim's) rings for
    /// the phone, which Switchboard then keeps talking to; with `consultation`, REFER with Replaces
    /// naming that SIP call. A transfer that cannot start fails at once.
    fn transfer_leg(&self, call: &Call, leg: &str, transfer_id: &str, target: &Party, consultation: Option<&str>) {
        let headers = custom_headers(call);
        // `None`: SIP does not reach the target; `Some(sent)`: it does, and the REFER went or not (a
        // re-INVITE or another transfer under way, or a consultation call not on SIP here).
        let over_sip = self.shared.with_endpoint(|ep, now| {
            let referred_by = format!("sip:{}@{}", call.app_id, ep.domain());
            match consultation {
                Some(b) => Some(ep.transfer_replacing(leg, transfer_id, b, &headers, &referred_by, now)),
                None => {
                    let mut destination = self.destination(ep, target, now)?;
                    destination.headers.extend(headers);
                    Some(ep.transfer(leg, transfer_id, &destination, &referred_by, now))
                }
            }
        });
        let started = match over_sip {
            Some(sent) => sent,
            None => self.ring_elsewhere(leg, transfer_id, target),
        };
        if !started {
            tracing::warn!(
                call_id = call.id,
                leg,
                consultation,
                ?target,
                "the transfer cannot start (nobody to reach, the call busy with another, or a consultation call not on SIP here); it fails"
            );
            self.events.call(&call.id, NetEvent::TransferFailed { transfer_id: transfer_id.to_owned(), failure: Failure::Unreachable });
        }
    }

    /// Who connects other networks' transferees to SIP phones (set once, at start).
    pub fn set_hand_over(&self, hand_over: Arc<dyn HandOver>) {
        let _ = self.hand_over.set(hand_over);
    }

    /// A transfer of another network's call (the sim's) to `target`, which SIP reaches: Switchboard
    /// calls the target as the transferee. `false` if SIP does not reach it.
    pub fn transfer_foreign(&self, call: &Call, transfer_id: &str, target: &Party, member: Option<&str>) -> bool {
        let transferee = member.and_then(|pid| call.members.iter().find(|m| m.participant_id == pid)).map_or(call.remote(), |m| &m.party);
        self.shared.with_endpoint(|ep, now| {
            let Some(mut destination) = self.destination(ep, target, now) else { return false };
            destination.headers.extend(custom_headers(call));
            let from = self.identity(transferee, ep.domain());
            let referred_by = format!("sip:{}@{}", call.app_id, ep.domain());
            ep.transfer_foreign(&call.id, transfer_id, member.map(str::to_owned), destination, &from, &referred_by, self.media, now);
            true
        })
    }

    /// The other network's party rung for SIP call `id`'s transfer answered, refused or hung up; or, once
    /// connected, the other network's side of a handed-over leg hung up.
    pub fn other_side(&self, id: &str, event: OtherSide) {
        let ringing = self.ringing_elsewhere.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        match (ringing, event) {
            (Some(transfer_id), OtherSide::Answered) => {
                // Reported under the endpoint's lock, so that no command for the call comes in between.
                let joined = self.shared.with_endpoint(|ep, now| {
                    let joined = ep.join_elsewhere(id, now);
                    if joined {
                        self.report(id, NetEvent::TransferAccepted { transfer_id: transfer_id.clone() });
                        self.report(id, NetEvent::TransferCompleted { transfer_id: transfer_id.clone() });
                    }
                    joined
                });
                if !joined {
                    // The phone left meanwhile: the party that just answered is hung up.
                    if let Some(h) = self.hand_over.get() {
                        h.hung_up(id);
                    }
                    self.report(id, NetEvent::TransferFailed { transfer_id, failure: Failure::TransfereeLeft });
                }
            }
            (Some(transfer_id), OtherSide::Refused(failure)) => {
                self.shared.with_endpoint(|ep, now| ep.not_joined_elsewhere(id, now));
                self.report(id, NetEvent::TransferFailed { transfer_id, failure });
            }
            (Some(transfer_id), OtherSide::HungUp) => {
                self.shared.with_endpoint(|ep, now| ep.not_joined_elsewhere(id, now));
                self.report(id, NetEvent::TransferFailed { transfer_id, failure: Failure::Declined });
            }
            (None, OtherSide::HungUp) => self.hang_up_leg(id),
            (None, _) => {}
        }
    }

    /// Whether SIP is placing transfer `transfer_id` of `call_id` (so that cancelling it is SIP's).
    pub fn places_transfer(&self, call_id: &str, transfer_id: &str) -> bool {
        self.shared.with_endpoint(|ep, _| ep.places_transfer(call_id, transfer_id))
    }

    /// Rings `target` on the other network for SIP call `id`'s transfer.
    fn ring_elsewhere(&self, id: &str, transfer_id: &str, target: &Party) -> bool {
        let Some(h) = self.hand_over.get() else { return false };
        if !self.shared.with_endpoint(|ep, _| ep.await_elsewhere(id, transfer_id)) {
            return false;
        }
        self.ringing_elsewhere.lock().unwrap_or_else(|e| e.into_inner()).insert(id.to_owned(), transfer_id.to_owned());
        if h.ring(target, id) {
            return true;
        }
        self.ringing_elsewhere.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        self.shared.with_endpoint(|ep, now| ep.not_joined_elsewhere(id, now));
        false
    }

    /// Stops the other network's party ringing for SIP call `id`; `true` if one was.
    fn stop_ringing_elsewhere(&self, id: &str) -> bool {
        let was = self.ringing_elsewhere.lock().unwrap_or_else(|e| e.into_inner()).remove(id).is_some();
        if was && let Some(h) = self.hand_over.get() {
            h.hung_up(id);
        }
        was
    }

    /// The other network's side of handed-over `leg` hung up: so does the phone. For another
    /// network's call, a phone still ringing for its transfer stops.
    pub fn hang_up_leg(&self, leg: &str) {
        self.shared.with_endpoint(|ep, now| ep.hang_up(leg, now));
    }

    /// A party as a SIP From: a user's SIP account (or id) at our domain, a number as a phone URI.
    fn identity(&self, party: &Party, domain: &str) -> String {
        match party {
            Party::Phone { number } => format!("<sip:{number}@{domain};user=phone>"),
            Party::User { display_name, id, .. } => {
                let user = self.username_of(party).unwrap_or_else(|| id.clone());
                format!("\"{}\" <sip:{user}@{domain}>", display_name.replace('"', ""))
            }
            Party::Application { id, display_name } | Party::ApplicationInstance { id, display_name, .. } => {
                format!("\"{}\" <sip:{id}@{domain}>", display_name.replace('"', ""))
            }
        }
    }

    /// Whether a call placed to `party` now goes over SIP: a user whose phone is registered, or a PSTN
    /// number a trunk takes (the sim's scripted numbers and the instances' numbers stay on the sim
    /// unless `trunk_sim_numbers`).
    pub fn reaches(&self, party: &Party) -> bool {
        match party {
            Party::User { .. } => {
                self.username_of(party).is_some_and(|u| self.shared.with_endpoint(|ep, now| ep.contact_of(&u, now).is_some()))
            }
            Party::Phone { number } => self.trunk_for(number).is_some(),
            _ => false,
        }
    }

    fn trunk_for(&self, number: &str) -> Option<&Trunk> {
        trunk_for(&self.routing, &self.directory, number)
    }

    /// Where a call to `party` goes: its phone's registered contact, or a trunk for a number.
    fn destination(&self, ep: &Endpoint, party: &Party, now: u64) -> Option<Destination> {
        match party {
            Party::Phone { number } => {
                let trunk = self.trunk_for(number)?;
                let host = match trunk.address.ip() {
                    std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                    ip => ip.to_string(),
                };
                Some(Destination {
                    request_uri: format!("sip:{number}@{host}:{};user=phone", trunk.address.port()),
                    to: format!("<sip:{number}@{host};user=phone>"),
                    peer: trunk.address,
                    headers: Vec::new(),
                    transport: "UDP",
                    connect: false,
                })
            }
            target => ep.destination_of(&self.username_of(target)?, now),
        }
    }

    /// Who the bot is to the phone: its instance's number (caller id for the PSTN), or its app id.
    fn caller_id(&self, call: &Call, domain: &str) -> String {
        let number = call.application_instance.as_deref().and_then(|i| self.directory.instance(i)).and_then(|(_, inst)| inst.phone.clone());
        let name = match &call.source {
            Party::ApplicationInstance { display_name, .. } | Party::Application { display_name, .. } => display_name.replace('"', ""),
            _ => String::new(),
        };
        match number {
            Some(n) => format!("\"{name}\" <sip:{n}@{domain};user=phone>"),
            None => format!("\"{name}\" <sip:{}@{domain}>", call.app_id),
        }
    }

    /// The SIP user name of a directory user.
    fn username_of(&self, party: &Party) -> Option<String> {
        let Party::User { id, .. } = party else { return None };
        self.routing.users.iter().find(|(_, uid)| uid.eq_ignore_ascii_case(id)).map(|(name, _)| name.clone())
    }

    /// The Graph side of a phone's INVITE: who calls whom. `Err`: the SIP answer to refuse with.
    fn incoming(&self, graph_id: &str, from_user: &str, to_user: &str, trunk: bool) -> Result<IncomingCall, (u16, String)> {
        let dir = &self.directory;
        let number = if to_user.starts_with('+') { to_user.to_owned() } else { format!("+{to_user}") };
        let caller = if trunk {
            let from = if from_user.starts_with('+') { from_user.to_owned() } else { format!("+{from_user}") };
            if from.len() < 3 || !from[1..].chars().all(|c| c.is_ascii_digit()) {
                return Err((403, format!("Forbidden (a trunk's caller must be an E.164 number, not '{from_user}')")));
            }
            // From a trunk, only the instances' numbers are reachable.
            if dir.instance_by_phone(&number).is_none() {
                return Err((404, format!("Not Found ('{to_user}' is no application instance's number)")));
            }
            Party::Phone { number: from }
        } else {
            self.routing
                .users
                .get(from_user)
                .and_then(|id| dir.user(id))
                .map(|u| Party::User { id: u.id.clone(), display_name: u.display_name.clone(), tenant_id: u.tenant_id.clone() })
                .ok_or_else(|| (403, format!("Forbidden ('{from_user}' is no directory user)")))?
        };
        let (app, target, instance, tenant) = if let Some((app, inst)) = dir.instance_by_phone(&number).or_else(|| dir.instance(to_user)) {
            let target = Party::ApplicationInstance {
                id: inst.id.clone(),
                display_name: inst.display_name.clone(),
                tenant_id: inst.tenant_id.clone(),
            };
            (app, target, Some(inst.id.clone()), inst.tenant_id.clone())
        } else if let Some(app) = dir.app(to_user) {
            let tenant = match &caller {
                Party::User { tenant_id, .. } => tenant_id.clone(),
                _ => String::new(),
            };
            if !app.tenants.iter().any(|t| t.eq_ignore_ascii_case(&tenant)) {
                return Err((403, format!("Forbidden (application '{}' is not consented in the caller's tenant)", app.name)));
            }
            (app, Party::Application { id: app.client_id.clone(), display_name: app.name.clone() }, None, tenant)
        } else {
            return Err((404, format!("Not Found ('{to_user}' is no application instance number or application id)")));
        };
        if let Some(why) = app.why_not_callable() {
            return Err((403, format!("Forbidden ({why})")));
        }
        if self.admission.get().is_some_and(|admit| !admit(&app.client_id)) {
            return Err((486, format!("Busy Here (application '{}' has as many live calls as it may)", app.name)));
        }
        if app.calling_webhook.is_none() {
            return Err((480, format!("Temporarily Unavailable (application '{}' has no calling webhook)", app.name)));
        }
        let id = || uuid::Uuid::new_v4().to_string();
        Ok(IncomingCall {
            id: graph_id.to_owned(),
            app_id: app.client_id.clone(),
            tenant_id: tenant,
            source: caller,
            target,
            application_instance: instance,
            my_participant_id: id(),
            peer_participant_id: id(),
            call_chain_id: id(),
            transferor: None,
        })
    }
}

impl Owner for SipNetwork {
    fn on_events(&self, endpoint: &mut Endpoint, events: Vec<Event>, now_ms: u64) {
        for event in events {
            match event {
                Event::Invite { graph_id, from_user, to_user, trunk } => match self.incoming(&graph_id, &from_user, &to_user, trunk) {
                    Ok(call) => {
                        endpoint.ringing(&graph_id);
                        self.events.send(NetworkEvent::Offer(Box::new(call)));
                    }
                    Err((code, reason)) => endpoint.refuse(&graph_id, code, &reason, now_ms),
                },
                Event::HandOver { graph_id, transfer_id, member, leg } => {
                    let handed = self.hand_over.get().is_some_and(|h| h.hand_over(&graph_id, member.as_deref(), &leg));
                    if handed {
                        self.events.call(&graph_id, NetEvent::TransferAccepted { transfer_id: transfer_id.clone() });
                        self.events.call(&graph_id, NetEvent::TransferCompleted { transfer_id });
                    } else {
                        // The transferee left meanwhile: the phone that just answered is hung up.
                        endpoint.hang_up(&leg, now_ms);
                        self.events.call(&graph_id, NetEvent::TransferFailed { transfer_id, failure: Failure::TransfereeLeft });
                    }
                }
                Event::LegHungUp { leg } => {
                    if let Some(h) = self.hand_over.get() {
                        h.hung_up(&leg);
                    }
                }
                Event::Call { graph_id, event } => {
                    let event = match event {
                        CallEvent::Ringing => NetEvent::Ringing,
                        CallEvent::Connected => NetEvent::Connected,
                        CallEvent::Refused(code) => {
                            tracing::info!(call_id = graph_id, code, "the phone refused the call");
                            NetEvent::Failed(failure_of(code))
                        }
                        CallEvent::HungUp | CallEvent::Lost => NetEvent::RemoteHangUp,
                        // The transferee may be a group's member leg: the Graph call is its group call.
                        CallEvent::Replaced { by } => NetEvent::Replaced { by_call_id: self.call_of(&by) },
                        CallEvent::Played { operation_id } => {
                            // A recording's prompt and beep are done: the recording starts.
                            let waiting = self.records.lock().unwrap_or_else(|e| e.into_inner()).remove(&operation_id);
                            match waiting {
                                Some(limits) => {
                                    if endpoint.record(&graph_id, operation_id.clone(), limits, now_ms) {
                                        continue;
                                    }
                                    let reason = CompletionReason::UnspecifiedError;
                                    NetEvent::MediaCompleted { operation_id, reason, recording: None }
                                }
                                None => {
                                    let reason = CompletionReason::CompletedSuccessfully;
                                    NetEvent::MediaCompleted { operation_id, reason, recording: None }
                                }
                            }
                        }
                        CallEvent::TonesSent { operation_id } => {
                            NetEvent::MediaCompleted { operation_id, reason: CompletionReason::CompletedSuccessfully, recording: None }
                        }
                        CallEvent::Recorded { operation_id, reason, samples } => {
                            let recording = self.keep_recording(&graph_id, &operation_id, &samples, now_ms);
                            NetEvent::MediaCompleted { operation_id, reason, recording: Some(recording) }
                        }
                        CallEvent::Hold(held) => NetEvent::RemoteHold { held },
                        CallEvent::Dtmf(key) => match switchboard_core::media::Tone::from_char(key) {
                            Some(tone) => NetEvent::ToneReceived { tone },
                            None => continue,
                        },
                        CallEvent::Transfer { transfer_id, progress: Progress::Accepted } => NetEvent::TransferAccepted { transfer_id },
                        CallEvent::Transfer { transfer_id, progress: Progress::Completed } => NetEvent::TransferCompleted { transfer_id },
                        CallEvent::Transfer { transfer_id, progress: Progress::Failed(code) | Progress::Refused(code) } => {
                            tracing::info!(call_id = graph_id, code, "the phone reports the transfer failed");
                            NetEvent::TransferFailed { transfer_id, failure: failure_of(code) }
                        }
                    };
                    if event == NetEvent::RemoteHangUp {
                        // A sim party ringing for this phone's transfer stops.
                        self.stop_ringing_elsewhere(&graph_id);
                    }
                    self.report(&graph_id, event);
                }
            }
        }
    }
}

impl Network for SipNetwork {
    fn execute(&self, call: &Call, command: &NetCommand) {
        let id = call.id.as_str();
        match command {
            NetCommand::Answer => self.shared.with_endpoint(|ep, now| ep.answer_call(id, self.media, now)),
            NetCommand::Reject { reason } => {
                let (code, phrase) = match reason.as_str() {
                    "busy" => (486, "Busy Here"),
                    "forbidden" => (403, "Forbidden"),
                    "timeout" => (480, "Temporarily Unavailable"),
                    _ => (603, "Decline"),
                };
                self.shared.with_endpoint(|ep, now| ep.refuse(id, code, phrase, now));
            }
            NetCommand::Redirect { .. } | NetCommand::HangUp => {
                self.stop_ringing_elsewhere(id);
                self.hang_up_members(id);
                // Its dialog, unless it is no longer the call's (moved into another call, or
                // transferred away); a target rung for one of its members stops all the same.
                match self.moved_away(id) {
                    false => self.shared.with_endpoint(|ep, now| ep.hang_up(id, now)),
                    true => self.shared.with_endpoint(|ep, now| ep.stop_bridging(id, false, now)),
                }
                self.forget_own(id);
            }
            NetCommand::Transfer { transfer_id, target, replaces_call_id, transferee: None } => {
                self.transfer_leg(call, id, transfer_id, target, replaces_call_id.as_deref());
            }
            NetCommand::Transfer { transfer_id, target, replaces_call_id, transferee: Some(pid) } => {
                // A group call's member: its own dialog here (the call's first member, or one rung).
                if !self.transfer_member(call, transfer_id, target, replaces_call_id.as_deref(), pid) {
                    tracing::warn!(call_id = id, participant_id = pid, "the transferee is no member on SIP here; the transfer fails");
                    self.events.call(id, NetEvent::TransferFailed { transfer_id: transfer_id.clone(), failure: Failure::Unreachable });
                }
            }
            NetCommand::CancelTransfer { transfer_id } if self.stop_ringing_elsewhere(id) => {
                self.shared.with_endpoint(|ep, now| ep.not_joined_elsewhere(id, now));
                self.events.call(id, NetEvent::TransferFailed { transfer_id: transfer_id.clone(), failure: Failure::NoAnswer });
            }
            NetCommand::CancelTransfer { transfer_id } => {
                // A REFER cannot be taken back; from now on the phone's reports are ignored. If the
                // outcome was already reported, it stands (the core applies only the first).
                if self.shared.with_endpoint(|ep, now| ep.abandon_transfer(id, transfer_id, now)) {
                    self.events.call(id, NetEvent::TransferFailed { transfer_id: transfer_id.clone(), failure: Failure::NoAnswer });
                }
            }
            NetCommand::Place if !call.group => {
                let placed = self.shared.with_endpoint(|ep, now| {
                    let destination = self.destination(ep, &call.target, now)?;
                    let from = self.caller_id(call, ep.domain());
                    ep.place(id, &from, destination, self.media, now);
                    Some(())
                });
                if placed.is_none() {
                    tracing::info!(call_id = id, target = ?call.target, "nobody to call over SIP (no registered phone, no trunk); the call fails");
                    self.events.call(id, NetEvent::Failed(Failure::Unreachable));
                }
            }
            NetCommand::Place => {}
            NetCommand::DropMember { participant_id } => {
                self.drop_member(id, participant_id);
            }
            // Prompts, recordings and DTMF over RTP are not served yet: the operation fails at once,
            // with a reason the bot can act on, rather than hang.
            NetCommand::PlayMedia { job } => match &job.action {
                MediaAction::Play { prompts, looped } => self.play(id, &job.operation_id, prompts.clone(), *looped, false),
                MediaAction::Record(r) => {
                    let limits = crate::call::RecordLimits {
                        initial_silence_ms: r.initial_silence_ms,
                        max_silence_ms: r.max_silence_ms,
                        max_duration_ms: r.max_duration_ms,
                        stop_keys: r.stop_tones.iter().map(|t| t.as_char()).collect(),
                    };
                    // The prompt and the beep first (the recording starts when they have played).
                    self.records.lock().unwrap_or_else(|e| e.into_inner()).insert(job.operation_id.clone(), limits);
                    self.play(id, &job.operation_id, r.prompts.clone(), false, r.beep);
                }
            },
            NetCommand::SendTones { operation_id, tones, delay_between_ms } => {
                // RFC 4733 events 0-15 (flash, event 16, is no key a phone shows).
                let keys: Vec<u8> = tones.iter().filter_map(|t| "0123456789*#ABCD".find(t.as_char()).map(|i| i as u8)).collect();
                if keys.is_empty() {
                    // Only flash: nothing a phone takes as a key, so nothing to send.
                    let reason = CompletionReason::CompletedSuccessfully;
                    self.events.call(id, NetEvent::MediaCompleted { operation_id: operation_id.clone(), reason, recording: None });
                    return;
                }
                let sent = self.shared.with_endpoint(|ep, _| ep.send_tones(id, operation_id.clone(), &keys, *delay_between_ms));
                if !sent {
                    tracing::warn!(call_id = id, operation_id, "the phone did not agree to telephone-event; the tones are not sent");
                    let reason = CompletionReason::UnspecifiedError;
                    self.events.call(id, NetEvent::MediaCompleted { operation_id: operation_id.clone(), reason, recording: None });
                }
            }
            NetCommand::StopMedia { operation_id } => {
                self.loading.lock().unwrap_or_else(|e| e.into_inner()).remove(operation_id);
                self.records.lock().unwrap_or_else(|e| e.into_inner()).remove(operation_id);
                self.shared.with_endpoint(|ep, _| ep.stop_playing(id, operation_id));
            }
            // The call becomes a group call; its invitee is rung over SIP (one for the sim is the
            // adapter's to send there).
            NetCommand::Invite { invitee, .. } => {
                self.host_group(call);
                self.invite_member(call, invitee);
            }
            NetCommand::HoldMusic { operation_id, start, prompt, .. } => self.hold_music_on(id, id, operation_id, *start, prompt.clone()),
        }
    }

    /// A SIP dialog does not survive a restart: the call ends, as if the phone had hung up.
    fn resume(&self, call: &Call) {
        end_lost_call(&self.events, call);
    }

    fn release(&self, call: &Call) {
        self.stop_ringing_elsewhere(&call.id);
        self.hang_up_members(&call.id);
        match self.moved_away(&call.id) {
            false => self.shared.with_endpoint(|ep, now| ep.hang_up(&call.id, now)),
            true => self.shared.with_endpoint(|ep, now| ep.stop_bridging(&call.id, false, now)),
        }
        self.forget_own(&call.id);
    }
}

/// The custom `X-` headers the bot gave with its transfer (`customCallingContext.sipHeaders`).
fn custom_headers(call: &Call) -> Vec<(String, String)> {
    call.transfer.as_ref().map(|t| t.sip_headers.clone()).unwrap_or_default()
}

/// What a SIP status says about why a transfer failed, in Graph's terms.
fn failure_of(code: u16) -> Failure {
    match code {
        486 | 600 => Failure::Busy,
        403 | 603 => Failure::Declined,
        408 | 480 | 487 => Failure::NoAnswer,
        _ => Failure::Unreachable,
    }
}

/// After a restart (or adoption from a dead node): a group call's members that were SIP dialogs are
/// gone with them (dialogs are not stored). Those that had joined left; those still ringing were
/// not reached.
pub fn lost_members(events: &NetworkEvents, call: &Call) {
    for m in call.members.iter().filter(|m| is_sip_call(&m.participant_id)) {
        let failure = if m.joined { None } else { Some(Failure::Unreachable) };
        tracing::warn!(call_id = call.id, participant_id = m.participant_id, "a group member's SIP dialog did not survive; it leaves");
        events.call(&call.id, NetEvent::MemberLeft { participant_id: m.participant_id.clone(), failure });
    }
}

/// Ends a call whose SIP dialog did not survive (a restart, or adoption from a dead node): nothing of a
/// dialog is stored, so the call ends as if the phone had hung up (resultInfo 200/4521).
pub fn end_lost_call(events: &NetworkEvents, call: &Call) {
    debug_assert!(is_sip_call(&call.id));
    tracing::warn!(call_id = call.id, "a SIP call's dialog did not survive; ending the call");
    events.call(&call.id, NetEvent::RemoteHangUp);
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_engine::directory::{AppInstance, Application, PstnNumber};

    fn trunk(name: &str, port: u16, prefixes: &[&str]) -> Trunk {
        Trunk {
            name: name.into(),
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            prefixes: prefixes.iter().map(|p| (*p).into()).collect(),
        }
    }

    fn directory() -> Directory {
        let bot = Application {
            client_id: "bot".into(),
            name: "Bot".into(),
            secret: "s".into(),
            previous_secret: None,
            previous_secret_expires: None,
            tenants: vec!["t".into()],
            roles: vec![],
            calling_webhook: None,
            notification_format: Default::default(),
            instances: vec![AppInstance {
                id: "i".into(),
                display_name: "Reception".into(),
                tenant_id: "t".into(),
                phone: Some("+14255550100".into()),
            }],
            max_requests_per_second: None,
            max_concurrent_calls: None,
        };
        Directory { tenants: vec![], applications: vec![bot], users: vec![], numbers: vec![PstnNumber { number: "+15555550486".into() }] }
    }

    /// Which trunk each number goes to (None: not a trunk's).
    fn check(routing: &Routing, cases: &[(&str, Option<&str>)]) {
        let dir = directory();
        for (number, want) in cases {
            assert_eq!(trunk_for(routing, &dir, number).map(|t| t.name.as_str()), *want, "{number}");
        }
    }

    #[test]
    fn numbers_go_to_the_first_trunk_whose_prefixes_take_them() {
        let routing = Routing {
            trunks: vec![trunk("uk", 5070, &["+44"]), trunk("us", 5071, &["+1", "+52"]), trunk("rest", 5072, &[])],
            ..Routing::default()
        };
        check(
            &routing,
            &[
                ("+442071234567", Some("uk")),
                ("+15550001111", Some("us")),
                ("+525512345678", Some("us")),
                ("+33123456789", Some("rest")),
                // The instances' own numbers, and the sim's scripted ones, stay home.
                ("+14255550100", None),
                ("+15555550486", None),
            ],
        );
        let only_uk = Routing { trunks: vec![trunk("uk", 5070, &["+44"])], ..Routing::default() };
        check(&only_uk, &[("+442071234567", Some("uk")), ("+15550001111", None)]);
        check(&Routing::default(), &[("+442071234567", None)]);
    }

    #[test]
    fn trunk_sim_numbers_sends_the_scripted_numbers_out_too_but_never_the_instances() {
        let routing = Routing { trunks: vec![trunk("all", 5070, &[])], trunk_sim_numbers: true, ..Routing::default() };
        check(&routing, &[("+15555550486", Some("all")), ("+14255550100", None)]);
    }
}
