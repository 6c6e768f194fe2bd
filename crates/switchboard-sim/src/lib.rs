//! The simulated telephony network: a world of legs, each a party with a scripted behaviour.
//!
//! Every peer-to-peer bot call has one remote leg (the party at the far end); a group call has a leg
//! per member, each connected to the group, which lives on without the bot while two members remain.
//! The sim plays each party's behaviour (answer after N ms, busy, decline, never answer, hang up N ms
//! after answering) and reports what happens to the engine as network events. A redirected caller gets connected straight to the
//! redirect target, party to party, without a bot. The world is rebuilt from the live calls after a
//! restart.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use switchboard_core::call::{Call, CallState, Failure, IncomingCall, Member, NetCommand, NetEvent, OperationStatus};
use switchboard_core::media::{CompletionReason, OperationKind};
use switchboard_core::party::Party;
use switchboard_engine::Clock;
use switchboard_engine::directory::Directory;
use switchboard_engine::network::{Network, NetworkEvent, NetworkEvents};

pub mod behaviour;
mod media;
pub mod wav;

pub use behaviour::{Behaviour, Behaviours, MAX_BEHAVIOUR_MS};
pub use media::{BEEP_MS, Heard, PROMPT_MS, PressError, TONE_MS};

/// How long a busy or declining party takes to say so.
const REFUSAL_DELAY_MS: u64 = 50;
/// How long a transferee takes to act on a consultative transfer (RFC 5589: REFER, then INVITE with
/// Replaces), during which the consultation call can still end; a behaviour's `transfer_delay_ms`
/// overrides it.
pub const CONSULTATIVE_DELAY_MS: u64 = 100;

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum LegState {
    Ringing,
    Connected,
}

/// What a leg is connected (or ringing) to.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase", tag = "kind")]
pub enum Peer {
    /// The remote end of a bot's call.
    Bot { call_id: String, app_id: String },
    /// Another leg, party to party (after a redirect or a transfer).
    Leg { leg_id: String },
    /// A transfer target ringing on behalf of the transferee of a bot's call.
    Transfer {
        call_id: String,
        transferee_leg: String,
        #[serde(skip)]
        transfer_id: String,
    },
    /// A member of the group call that the bot's call `call_id` placed.
    Group { call_id: String, participant_id: String },
    /// A party on another network: a SIP phone the leg was transferred to, or one that this leg rings
    /// for (a SIP phone's transfer to a sim party). `id` is that network's name for its side.
    External { network: String, id: String },
}

/// What a leg connected to another network ([`Peer::External`]) does, for that network to hear.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExternalEvent {
    /// A leg ringing for the other network answered.
    Answered,
    /// A leg ringing for the other network refused (busy, declined).
    Refused(Failure),
    /// The leg hung up.
    HungUp,
}

/// Who hears what legs connected to another network do: `(id, event)`.
pub type ExternalEvents = Box<dyn Fn(&str, ExternalEvent) + Send + Sync>;

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Leg {
    pub id: String,
    pub party: Party,
    pub state: LegState,
    pub peer: Peer,
    /// Prompts the party heard, in order, and for how long.
    pub heard: Vec<media::Heard>,
    /// Keys the party pressed.
    pub pressed: String,
    /// DTMF tones the bot sent the party.
    pub received: String,
}

impl Leg {
    fn new(id: String, party: Party, state: LegState, peer: Peer) -> Leg {
        Leg { id, party, state, peer, heard: Vec::new(), pressed: String::new(), received: String::new() }
    }
}

#[derive(Default)]
struct World {
    legs: BTreeMap<String, Leg>,
    /// Bot call id → its remote leg.
    by_call: HashMap<String, String>,
    /// Behaviours changed at run time, by party key (user id or number).
    overrides: HashMap<String, Behaviour>,
    /// Bot call id → its blind transfer (id, and the target while it rings).
    transfers: HashMap<String, (String, Ringing)>,
    /// Bot call id → its consultative transfer whose takeover is pending (the transferee's delay).
    takeovers: HashMap<String, String>,
    /// A call offered to a bot that is a transfer target → (the transferring call, the transferee's
    /// leg, the transfer's id).
    offers: HashMap<String, (String, String, String)>,
    /// Transfers whose outcome the sim has reported lately: a cancel that comes after it changes nothing.
    finished: Recent,
    /// The latest bot calls that had a remote leg, so that hanging up an ended one is told apart from
    /// hanging up a call that never was.
    known_calls: Recent,
    /// Group calls by the bot call that placed them.
    groups: HashMap<String, Group>,
    /// The prompt or recording playing in each bot call.
    media: HashMap<String, media::Playing>,
    /// The last media step numbered (across every call, so a stale timer never matches).
    media_steps: u64,
    /// Bot calls whose parties have pressed their behaviour's keys (they do so once), lately.
    pressed: Recent,
    /// Where what the parties heard is told (`GET /sim/v1/calls/{id}/history`).
    history: Option<Arc<switchboard_engine::history::History>>,
}

/// The latest ids noted, up to [`KNOWN_CALLS_MAX`]: enough to answer about what just ended, bounded
/// however long the sim runs.
#[derive(Default)]
struct Recent {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl Recent {
    fn note(&mut self, id: &str) {
        if self.ids.insert(id.to_owned()) {
            self.order.push_back(id.to_owned());
        }
        while self.order.len() > KNOWN_CALLS_MAX {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }

    fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }
}

/// A group call in the world: its members' legs, and whether the bot is still in it.
#[derive(Default)]
pub(crate) struct Group {
    bot: bool,
    /// Participant id → leg id.
    members: BTreeMap<String, String>,
}

/// How many ended calls (and finished transfers) the sim remembers.
const KNOWN_CALLS_MAX: usize = 10_000;

impl World {
    /// The leg of the party that a transfer of `call_id` moves: the group member `transferee`, or
    /// the call's one remote leg.
    fn transferee_leg(&self, call_id: &str, transferee: Option<&str>) -> Option<String> {
        match transferee {
            Some(pid) => self.groups.get(call_id).and_then(|g| g.members.get(pid)).cloned(),
            None => self.by_call.get(call_id).cloned(),
        }
    }

    /// Takes a leg out of the bot call it belongs to (its remote leg, or its group).
    fn detach(&mut self, leg_id: &str) {
        let Some(leg) = self.legs.get(leg_id) else { return };
        match &leg.peer {
            Peer::Bot { call_id, .. } => {
                let call_id = call_id.clone();
                self.by_call.remove(&call_id);
            }
            Peer::Group { call_id, participant_id } => {
                let (call_id, pid) = (call_id.clone(), participant_id.clone());
                if let Some(g) = self.groups.get_mut(&call_id) {
                    g.members.remove(&pid);
                }
            }
            _ => {}
        }
    }

    /// A group that the bot has left ends when fewer than two members remain.
    fn collapse_group(&mut self, call_id: &str) {
        let Some(g) = self.groups.get(call_id) else { return };
        if g.bot || g.members.len() >= 2 {
            return;
        }
        if let Some(g) = self.groups.remove(call_id) {
            for leg in g.members.values() {
                self.legs.remove(leg);
            }
        }
    }

    /// Stops the transfer of `call_id` in flight: the ringing target leg goes, an offer to a target bot
    /// is withdrawn (its call id is returned, to hang up), a pending takeover is dropped.
    fn stop_transfer(&mut self, call_id: &str) -> Option<(String, Option<String>)> {
        if let Some(id) = self.takeovers.remove(call_id) {
            return Some((id, None));
        }
        let (id, ringing) = self.transfers.remove(call_id)?;
        match ringing {
            Ringing::Leg(t) => {
                self.legs.remove(&t);
                Some((id, None))
            }
            Ringing::Bot { offered_call_id } => {
                self.offers.remove(&offered_call_id);
                Some((id, Some(offered_call_id)))
            }
        }
    }

    /// The remote leg `id` of the bot call `call_id`.
    fn bot_leg(&mut self, id: &str, call_id: &str, party: Party, state: LegState, app_id: &str) {
        let peer = Peer::Bot { call_id: call_id.to_owned(), app_id: app_id.to_owned() };
        self.legs.insert(id.to_owned(), Leg::new(id.to_owned(), party, state, peer));
        self.by_call.insert(call_id.to_owned(), id.to_owned());
        self.remember_call(call_id);
    }

    /// Notes that the outcome of transfer `id` has been reported.
    fn finish(&mut self, id: &str) {
        self.finished.note(id);
    }

    fn remember_call(&mut self, call_id: &str) {
        self.known_calls.note(call_id);
    }
}

/// The world, locked. In debug builds (every test run) it checks itself when let go, so that a change
/// that leaves it inconsistent fails where it happens rather than as a confusing symptom later.
struct WorldGuard<'a>(std::sync::MutexGuard<'a, World>);

impl std::ops::Deref for WorldGuard<'_> {
    type Target = World;
    fn deref(&self) -> &World {
        &self.0
    }
}

impl std::ops::DerefMut for WorldGuard<'_> {
    fn deref_mut(&mut self) -> &mut World {
        &mut self.0
    }
}

impl Drop for WorldGuard<'_> {
    fn drop(&mut self) {
        #[cfg(debug_assertions)]
        if let Err(problem) = self.0.check()
            && !std::thread::panicking()
        {
            panic!("the sim's world is inconsistent: {problem}");
        }
    }
}

impl World {
    /// The world's own rules: a leg paired with a leg is paired back; a bot call's remote leg says so,
    /// and so does the call; a ringing transfer target is its call's transfer; a group's member legs
    /// belong to it.
    #[cfg_attr(not(debug_assertions), allow(dead_code))]
    fn check(&self) -> Result<(), String> {
        for leg in self.legs.values() {
            let ok = match &leg.peer {
                Peer::Leg { leg_id } => self.legs.get(leg_id).is_some_and(|o| matches!(&o.peer, Peer::Leg { leg_id } if *leg_id == leg.id)),
                Peer::Bot { call_id, .. } => self.by_call.get(call_id) == Some(&leg.id),
                Peer::Transfer { call_id, .. } => matches!(self.transfers.get(call_id), Some((_, Ringing::Leg(l))) if *l == leg.id),
                Peer::Group { call_id, participant_id } => {
                    self.groups.get(call_id).and_then(|g| g.members.get(participant_id)) == Some(&leg.id)
                }
                Peer::External { .. } => true,
            };
            if !ok {
                return Err(format!("leg {} ({:?}) is not what its peer says", leg.id, leg.peer));
            }
        }
        for (call_id, leg_id) in &self.by_call {
            if !self.legs.get(leg_id).is_some_and(|l| matches!(&l.peer, Peer::Bot { call_id: c, .. } if c == call_id)) {
                return Err(format!("call {call_id}'s remote leg {leg_id} is missing or elsewhere"));
            }
        }
        for (call_id, (id, ringing)) in &self.transfers {
            if let Ringing::Leg(l) = ringing
                && !self.legs.contains_key(l)
            {
                return Err(format!("transfer {id} of call {call_id} rings a leg {l} that is gone"));
            }
        }
        for (call_id, g) in &self.groups {
            for (pid, leg) in &g.members {
                if !self
                    .legs
                    .get(leg)
                    .is_some_and(|l| matches!(&l.peer, Peer::Group { call_id: c, participant_id: p } if c == call_id && p == pid))
                {
                    return Err(format!("member {pid} of group {call_id} has no leg {leg}"));
                }
            }
        }
        Ok(())
    }
}

/// A blind transfer's target while it rings: a party's leg, or a call offered to another bot.
#[derive(Clone, Debug)]
enum Ringing {
    Leg(String),
    Bot { offered_call_id: String },
}

pub struct Sim {
    directory: Arc<Directory>,
    behaviours: Behaviours,
    clock: Clock,
    events: NetworkEvents,
    world: Mutex<World>,
    next_leg: AtomicU64,
    external: std::sync::OnceLock<ExternalEvents>,
    admission: std::sync::OnceLock<switchboard_engine::network::Admission>,
    recordings: std::sync::OnceLock<Arc<switchboard_engine::recordings::Recordings>>,
}

impl Sim {
    /// A sim of the parties of `directory`, each acting as `behaviours` says; its delays run on `clock`.
    pub fn new(directory: Arc<Directory>, behaviours: Behaviours, clock: Clock, events: NetworkEvents) -> Arc<Self> {
        Arc::new(Sim {
            directory,
            behaviours,
            clock,
            events,
            world: Mutex::new(World::default()),
            next_leg: AtomicU64::new(1),
            external: std::sync::OnceLock::new(),
            admission: std::sync::OnceLock::new(),
            recordings: std::sync::OnceLock::new(),
        })
    }

    /// Who says whether an app may be offered one more call (set once, at start).
    pub fn set_admission(&self, admission: switchboard_engine::network::Admission) {
        let _ = self.admission.set(admission);
    }

    /// Where what parties heard is told, in their calls' stories (set at start).
    pub fn set_history(&self, history: Arc<switchboard_engine::history::History>) {
        self.world().history = Some(history);
    }

    /// Where finished recordings go (set once, at start); without it recordings have no audio.
    pub fn set_recordings(&self, recordings: Arc<switchboard_engine::recordings::Recordings>) {
        let _ = self.recordings.set(recordings);
    }

    /// Runs `f` on the sim `after_ms` from now, on the sim's clock.
    fn later(self: &Arc<Self>, after_ms: u64, f: impl FnOnce(&Arc<Sim>) + Send + 'static) {
        let sim = Arc::clone(self);
        // `f` runs in the job's own future, never on the clock's runner.
        self.clock.schedule_in(after_ms, Box::new(move || Box::pin(async move { f(&sim) })));
    }

    fn world(&self) -> WorldGuard<'_> {
        WorldGuard(self.world.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn new_leg_id(&self) -> String {
        format!("leg-{}", self.next_leg.fetch_add(1, Ordering::Relaxed))
    }

    /// The behaviour of a party now: a run-time override, else the configured one. Parties the
    /// directory does not know (other bots, for now) cannot be reached.
    pub fn behaviour(&self, party: &Party) -> Option<Behaviour> {
        if let Some(b) = self.world().overrides.get(&party.key().to_ascii_lowercase()) {
            return Some(b.clone());
        }
        match party {
            Party::User { id, .. } if self.directory.user(id).is_some() => {}
            Party::Phone { number } if self.directory.number(number).is_some() => {}
            _ => return None,
        }
        Some(self.behaviours.get(party.key()).cloned().unwrap_or_default())
    }

    /// Changes a party's behaviour from now on. Returns false if the party is unknown.
    pub fn set_behaviour(&self, key: &str, behaviour: Behaviour) -> bool {
        if self.directory.user(key).is_none() && self.directory.number(key).is_none() {
            return false;
        }
        // Ids are matched without regard to case, as the directory does.
        self.world().overrides.insert(key.to_ascii_lowercase(), behaviour);
        true
    }

    /// A party's behaviour now, by user id or number, and whether it was changed at run time (else it
    /// is the configured one). `None` if the directory has no such party.
    pub fn behaviour_of(&self, key: &str) -> Option<(Behaviour, bool)> {
        if self.directory.user(key).is_none() && self.directory.number(key).is_none() {
            return None;
        }
        if let Some(b) = self.world().overrides.get(&key.to_ascii_lowercase()) {
            return Some((b.clone(), true));
        }
        Some((self.behaviours.get(key).cloned().unwrap_or_default(), false))
    }

    /// Hangs up every leg (a bot's call hears it as its far end hanging up; another network, as its
    /// party's) and forgets the rest of the world: transfers, media, run-time behaviours (the
    /// configured ones are back). Returns how many legs it hung up.
    pub fn reset(&self) -> usize {
        let mut hung_up = 0;
        // A leg may appear while others hang up (a call placed, a transfer target rung): the world is
        // wiped only under the lock that saw no leg left, so no leg goes without its peer hearing.
        for _ in 0..100 {
            let legs: Vec<String> = {
                let mut w = self.world();
                if w.legs.is_empty() {
                    // Media steps go on counting, so that a timer set before the reset matches nothing after it.
                    let (history, media_steps) = (w.history.take(), w.media_steps);
                    *w = World { history, media_steps, ..World::default() };
                    return hung_up;
                }
                w.legs.keys().cloned().collect()
            };
            hung_up += legs.iter().filter(|leg| self.hang_up_leg(leg)).count();
        }
        hung_up
    }

    /// Every leg in the world.
    pub fn legs(&self) -> Vec<Leg> {
        self.world().legs.values().cloned().collect()
    }

    /// A caller's leg, ringing for a new bot call; used when the sim places an inbound call. `None` if
    /// a live call already has that id: the id is claimed here first, so that of two requests racing
    /// for one id the loser can never touch the winner's leg.
    pub fn attach_caller(&self, call_id: &str, app_id: &str, caller: Party) -> Option<String> {
        let id = self.new_leg_id();
        let mut w = self.world();
        if w.by_call.contains_key(call_id) {
            return None;
        }
        w.bot_leg(&id, call_id, caller, LegState::Ringing, app_id);
        Some(id)
    }

    /// Takes back a caller's leg that [`Sim::attach_caller`] made for a call the engine did not admit,
    /// telling nobody.
    pub fn detach_caller(&self, call_id: &str, leg_id: &str) {
        let mut w = self.world();
        if w.by_call.get(call_id).is_some_and(|l| l == leg_id) {
            w.by_call.remove(call_id);
        }
        w.legs.remove(leg_id);
    }

    /// Forgets a bot call's legs, telling nobody: another node owns the call now and rebuilds them in
    /// its own sim. A transfer in flight stops here; the new owner starts it over, as after a restart.
    pub fn release(&self, call_id: &str) {
        let mut w = self.world();
        let _ = w.stop_transfer(call_id);
        w.media.remove(call_id);
        if let Some(leg) = w.by_call.remove(call_id) {
            w.legs.remove(&leg);
        }
        if let Some(g) = w.groups.remove(call_id) {
            for leg in g.members.values() {
                w.legs.remove(leg);
            }
        }
    }

    /// Whether the bot call had a remote leg in this sim (lately), ended or not.
    pub fn knew_call(&self, call_id: &str) -> bool {
        self.world().known_calls.contains(call_id)
    }

    /// The far end of a bot's call hangs up. Returns false if the call has no remote leg.
    /// In a group call the bot is in, every member hangs up.
    pub fn hang_up_remote(&self, call_id: &str) -> bool {
        let members: Vec<String> =
            self.world().groups.get(call_id).filter(|g| g.bot).map(|g| g.members.values().cloned().collect()).unwrap_or_default();
        if !members.is_empty() {
            for leg in members {
                self.hang_up_leg(&leg);
            }
            return true;
        }
        let removed = {
            let mut w = self.world();
            match w.by_call.remove(call_id) {
                Some(leg) => w.legs.remove(&leg).is_some(),
                None => false,
            }
        };
        if removed {
            self.send(call_id, NetEvent::RemoteHangUp);
        }
        removed
    }

    /// Who to tell what legs connected to another network do (set once, by that network).
    pub fn on_external(&self, f: ExternalEvents) {
        let _ = self.external.set(f);
    }

    fn tell_external(&self, id: &str, event: ExternalEvent) {
        if let Some(tell) = self.external.get() {
            tell(id, event);
        }
    }

    /// Another network's caller (a SIP phone being transferred) calls `target`: its leg rings and plays
    /// its behaviour, and the other network hears [`ExternalEvent`]s for `id`. `false` if the sim
    /// has no such party.
    pub fn ring_for(self: &Arc<Self>, target: &Party, network: &str, id: &str) -> bool {
        let Some(behaviour) = self.behaviour(target) else { return false };
        let leg = self.new_leg_id();
        let peer = Peer::External { network: network.to_owned(), id: id.to_owned() };
        self.world().legs.insert(leg.clone(), Leg::new(leg.clone(), target.clone(), LegState::Ringing, peer));
        self.play(leg, behaviour);
        true
    }

    /// A transfer to a party on another network succeeded: the transferee of `call_id` (its remote
    /// party, or the group member `transferee`) leaves the bot and is connected to `external` there.
    /// `false` if it is gone meanwhile.
    pub fn hand_over(&self, call_id: &str, transferee: Option<&str>, network: &str, external: &str) -> bool {
        let mut w = self.world();
        let Some(leg_id) = w.transferee_leg(call_id, transferee) else { return false };
        if w.legs.get(&leg_id).is_none_or(|l| l.state != LegState::Connected) {
            return false; // only a party in the call can be handed over
        }
        w.detach(&leg_id);
        let Some(leg) = w.legs.get_mut(&leg_id) else { return false };
        leg.peer = Peer::External { network: network.to_owned(), id: external.to_owned() };
        leg.state = LegState::Connected;
        if transferee.is_some() {
            w.collapse_group(call_id);
        }
        true
    }

    /// The party on the other network hung up: the sim leg connected to it ends too.
    pub fn external_hung_up(&self, external: &str) {
        let mut w = self.world();
        w.legs.retain(|_, l| !matches!(&l.peer, Peer::External { id, .. } if id == external));
    }

    /// Hangs up a leg, whatever it is connected to; its peer learns of it.
    pub fn hang_up_leg(&self, leg_id: &str) -> bool {
        let mut w = self.world();
        let Some(leg) = w.legs.remove(leg_id) else { return false };
        match leg.peer {
            Peer::External { id, .. } => {
                drop(w);
                self.tell_external(&id, ExternalEvent::HungUp);
            }
            Peer::Bot { call_id, .. } => {
                w.by_call.remove(&call_id);
                drop(w);
                self.send(&call_id, NetEvent::RemoteHangUp);
            }
            Peer::Leg { leg_id } => {
                w.legs.remove(&leg_id);
            }
            // A ringing transfer target that goes away refuses the transfer.
            Peer::Transfer { call_id, .. } => {
                if let Some((id, _)) = w.transfers.remove(&call_id) {
                    w.finish(&id);
                    drop(w);
                    self.send(&call_id, NetEvent::TransferFailed { transfer_id: id, failure: Failure::Declined });
                }
            }
            Peer::Group { call_id, participant_id } => {
                let bot = w.groups.get_mut(&call_id).is_some_and(|g| {
                    g.members.remove(&participant_id);
                    g.bot
                });
                w.collapse_group(&call_id);
                drop(w);
                if bot {
                    self.send(&call_id, NetEvent::MemberLeft { participant_id, failure: None });
                }
            }
        }
        true
    }

    fn send(&self, call_id: &str, event: NetEvent) {
        self.events.call(call_id, event);
    }

    /// Reports that transfer `id` of `call_id` moved the transferee (the world has changed already).
    fn transferred(&self, call_id: &str, id: &str) {
        self.send(call_id, NetEvent::TransferAccepted { transfer_id: id.to_owned() });
        self.send(call_id, NetEvent::TransferCompleted { transfer_id: id.to_owned() });
    }

    /// Plays `behaviour` for the leg `leg_id` that is ringing.
    fn play(self: &Arc<Self>, leg_id: String, behaviour: Behaviour) {
        match behaviour {
            Behaviour::Answer { after_ms, hang_up_after_ms, .. } => self.later(after_ms, move |sim| {
                let Some(peer) = sim.connect(&leg_id) else { return };
                match &peer {
                    Peer::Bot { call_id, .. } => sim.send(call_id, NetEvent::Connected),
                    Peer::Transfer { call_id, transfer_id, .. } => sim.transferred(call_id, transfer_id),
                    Peer::Group { call_id, participant_id } => {
                        sim.send(call_id, NetEvent::MemberJoined { participant_id: participant_id.clone() })
                    }
                    Peer::External { id, .. } => sim.tell_external(id, ExternalEvent::Answered),
                    Peer::Leg { .. } => {}
                }
                if let Some(after) = hang_up_after_ms {
                    sim.hang_up_later(leg_id, after);
                }
            }),
            Behaviour::Busy | Behaviour::Decline => {
                let failure = if behaviour == Behaviour::Busy { Failure::Busy } else { Failure::Declined };
                self.later(REFUSAL_DELAY_MS, move |sim| sim.refuse(&leg_id, failure));
            }
            // Rings until the caller gives up (the core's ring or transfer timeout cancels it).
            Behaviour::NoAnswer => {}
        }
    }

    fn hang_up_later(self: &Arc<Self>, leg_id: String, after_ms: u64) {
        self.later(after_ms, move |sim| {
            sim.hang_up_leg(&leg_id);
        });
    }

    /// Marks a ringing leg connected; returns its peer as it was, or None if the leg is gone meanwhile.
    /// A transfer target that answers is connected to the transferee, who leaves the bot.
    fn connect(&self, leg_id: &str) -> Option<Peer> {
        let mut w = self.world();
        let leg = w.legs.get_mut(leg_id)?;
        if leg.state != LegState::Ringing {
            return None;
        }
        leg.state = LegState::Connected;
        let peer = leg.peer.clone();
        match &peer {
            Peer::Leg { leg_id: other } => {
                if let Some(o) = w.legs.get_mut(other) {
                    o.state = LegState::Connected;
                }
            }
            Peer::Transfer { call_id, transferee_leg, transfer_id } => {
                w.transfers.remove(call_id);
                w.finish(transfer_id);
                // The transferee was moved elsewhere meanwhile (taken over by another transfer): this
                // one cannot happen; its target stops ringing.
                let moved = w.legs.get(transferee_leg).is_some_and(|x| match &x.peer {
                    Peer::Bot { call_id: c, .. } | Peer::Group { call_id: c, .. } => c != call_id,
                    _ => true,
                });
                if moved {
                    w.legs.remove(leg_id);
                    let (call_id, transfer_id) = (call_id.clone(), transfer_id.clone());
                    drop(w);
                    self.send(&call_id, NetEvent::TransferFailed { transfer_id, failure: Failure::Unreachable });
                    return None;
                }
                w.detach(transferee_leg);
                if let Some(t) = w.legs.get_mut(leg_id) {
                    t.peer = Peer::Leg { leg_id: transferee_leg.clone() };
                }
                match w.legs.get_mut(transferee_leg) {
                    Some(x) => {
                        x.peer = Peer::Leg { leg_id: leg_id.to_owned() };
                        x.state = LegState::Connected;
                    }
                    None => {
                        w.legs.remove(leg_id);
                    }
                }
            }
            Peer::Bot { .. } | Peer::Group { .. } | Peer::External { .. } => {}
        }
        Some(peer)
    }

    fn refuse(&self, leg_id: &str, failure: Failure) {
        let mut w = self.world();
        let Some(leg) = w.legs.remove(leg_id) else { return };
        match leg.peer {
            Peer::Bot { call_id, .. } => {
                w.by_call.remove(&call_id);
                drop(w);
                self.send(&call_id, NetEvent::Failed(failure));
            }
            // A redirected caller whose target refuses is dropped.
            Peer::Leg { leg_id } => {
                w.legs.remove(&leg_id);
            }
            Peer::Transfer { call_id, transfer_id, .. } => {
                w.transfers.remove(&call_id);
                w.finish(&transfer_id);
                drop(w);
                self.send(&call_id, NetEvent::TransferFailed { transfer_id, failure });
            }
            Peer::Group { call_id, participant_id } => {
                if let Some(g) = w.groups.get_mut(&call_id) {
                    g.members.remove(&participant_id);
                }
                drop(w);
                self.send(&call_id, NetEvent::MemberLeft { participant_id, failure: Some(failure) });
            }
            Peer::External { id, .. } => {
                drop(w);
                self.tell_external(&id, ExternalEvent::Refused(failure));
            }
        }
    }

    /// Removes the remote leg of a bot call, and the target leg of its transfer if one rings. The bot
    /// leaves a group call: those still invited stop ringing, and the others talk on if two remain.
    fn remove_call_leg(&self, call_id: &str) -> Option<Leg> {
        self.stop_transfer(call_id);
        let mut w = self.world();
        if let Some(mut g) = w.groups.remove(call_id) {
            g.bot = false;
            let ringing: Vec<String> = g
                .members
                .iter()
                .filter(|(_, leg)| w.legs.get(*leg).is_none_or(|l| l.state == LegState::Ringing))
                .map(|(p, _)| p.clone())
                .collect();
            for pid in ringing {
                if let Some(leg) = g.members.remove(&pid) {
                    w.legs.remove(&leg);
                }
            }
            w.groups.insert(call_id.to_owned(), g);
            w.collapse_group(call_id);
            return None;
        }
        let leg = w.by_call.remove(call_id)?;
        w.legs.remove(&leg)
    }

    /// A group call's legs, when it is placed or resumed after a restart: members that joined are
    /// connected, the others are invited (ring) and play their behaviour.
    fn build_group(self: &Arc<Self>, call: &Call) {
        {
            let mut w = self.world();
            w.groups.insert(call.id.clone(), Group { bot: true, members: BTreeMap::new() });
            w.remember_call(&call.id);
        }
        for m in &call.members {
            if m.joined {
                self.member_leg(&call.id, m, LegState::Connected);
                continue;
            }
            match self.behaviour(&m.party) {
                Some(b) => {
                    let leg = self.member_leg(&call.id, m, LegState::Ringing);
                    self.play(leg, b);
                }
                None => {
                    let participant_id = m.participant_id.clone();
                    self.send(&call.id, NetEvent::MemberLeft { participant_id, failure: Some(Failure::Unreachable) })
                }
            }
        }
    }

    fn member_leg(&self, call_id: &str, member: &Member, state: LegState) -> String {
        let id = self.new_leg_id();
        let peer = Peer::Group { call_id: call_id.to_owned(), participant_id: member.participant_id.clone() };
        let mut w = self.world();
        w.legs.insert(id.clone(), Leg::new(id.clone(), member.party.clone(), state, peer));
        w.groups.entry(call_id.to_owned()).or_default().members.insert(member.participant_id.clone(), id.clone());
        id
    }

    /// The group call stops inviting a member that has not joined.
    fn drop_member(&self, call_id: &str, participant_id: &str) {
        let mut w = self.world();
        let Some(leg) = w.groups.get_mut(call_id).and_then(|g| g.members.remove(participant_id)) else { return };
        w.legs.remove(&leg);
    }

    /// Stops whatever transfer of `call_id` is still in flight: the target stops ringing, an offer to
    /// a target bot is withdrawn, a pending takeover is dropped. Returns the transfer's id if one was.
    fn stop_transfer(&self, call_id: &str) -> Option<String> {
        let mut w = self.world();
        let (id, withdrawn) = w.stop_transfer(call_id)?;
        drop(w);
        if let Some(offered) = withdrawn {
            self.send(&offered, NetEvent::RemoteHangUp);
        }
        Some(id)
    }

    /// The core asks to stop transfer `id`. It is stopped if still in flight, and then failed; one whose
    /// outcome was already reported stays as reported (a success cannot be undone); one the sim does
    /// not know (lost in a restart) moved nothing, so it failed.
    fn cancel_transfer(&self, call_id: &str, id: &str) {
        // One decision under one lock: a target answering meanwhile either came first (the outcome is
        // reported, and stays) or finds its transfer stopped.
        let mut w = self.world();
        if w.finished.contains(id) {
            return;
        }
        let in_flight = w.takeovers.get(call_id).or(w.transfers.get(call_id).map(|(t, _)| t)).is_some_and(|t| t == id);
        let withdrawn = if in_flight { w.stop_transfer(call_id).and_then(|(_, offered)| offered) } else { None };
        w.finish(id);
        drop(w);
        if let Some(offered) = withdrawn {
            self.send(&offered, NetEvent::RemoteHangUp);
        }
        self.send(call_id, NetEvent::TransferFailed { transfer_id: id.to_owned(), failure: Failure::NoAnswer });
    }

    /// A call offered to a target bot ends unanswered: the transfer it was for fails.
    fn refuse_offer(&self, offered_call_id: &str, failure: Failure) -> bool {
        let mut w = self.world();
        let Some((transferring, _, id)) = w.offers.remove(offered_call_id) else { return false };
        w.transfers.remove(&transferring);
        w.finish(&id);
        drop(w);
        self.send(&transferring, NetEvent::TransferFailed { transfer_id: id, failure });
        true
    }

    /// The target bot answers the call offered to it: the transferee's leg moves from the
    /// transferring call to the answered one. Returns false if `call_id` was not such an offer.
    fn answer_offer(&self, call_id: &str, app_id: &str) -> bool {
        let mut w = self.world();
        let Some((transferring, leg_id, id)) = w.offers.remove(call_id) else { return false };
        let still_there = w.legs.get(&leg_id).is_some_and(|l| match &l.peer {
            Peer::Bot { call_id, .. } | Peer::Group { call_id, .. } => *call_id == transferring,
            _ => false,
        });
        if !still_there {
            drop(w);
            self.send(call_id, NetEvent::RemoteHangUp);
            return true;
        }
        w.transfers.remove(&transferring);
        w.finish(&id);
        w.detach(&leg_id);
        w.by_call.insert(call_id.to_owned(), leg_id.clone());
        if let Some(l) = w.legs.get_mut(&leg_id) {
            l.peer = Peer::Bot { call_id: call_id.to_owned(), app_id: app_id.to_owned() };
        }
        drop(w);
        self.send(call_id, NetEvent::Connected);
        self.transferred(&transferring, &id);
        true
    }

    fn bot_leg(&self, call_id: &str, party: Party, state: LegState, app_id: &str) -> String {
        let id = self.new_leg_id();
        self.world().bot_leg(&id, call_id, party, state, app_id);
        id
    }

    /// Blind transfer: the target rings on behalf of the transferee and plays its behaviour; a
    /// target that is a bot is offered an incoming call that names the transferor.
    /// Reports that transfer `id` of `call_id` could not be carried out.
    fn transfer_failed(&self, call_id: &str, id: &str, failure: Failure) {
        self.world().finish(id);
        self.send(call_id, NetEvent::TransferFailed { transfer_id: id.to_owned(), failure });
    }

    /// Whether `call_id`'s remote party is being moved by a transfer (its own, blind or consultative):
    /// a second move of the same party must wait for the first to end.
    fn moving(w: &World, call_id: &str) -> bool {
        w.transfers.contains_key(call_id) || w.takeovers.contains_key(call_id)
    }

    fn transfer_blind(self: &Arc<Self>, call: &Call, id: &str, target: &Party, transferee: Option<&str>) {
        let call_id = call.id.as_str();
        if matches!(target, Party::Application { .. } | Party::ApplicationInstance { .. }) {
            return self.transfer_to_bot(call, id, target, transferee);
        }
        let Some(behaviour) = self.behaviour(target) else {
            return self.transfer_failed(call_id, id, Failure::Unreachable);
        };
        let leg = self.new_leg_id();
        {
            // The transferee is found and its target set ringing under one lock, so no other move of
            // the same party can come in between.
            let mut w = self.world();
            let Some(transferee_leg) = w.transferee_leg(call_id, transferee) else {
                drop(w);
                return self.transfer_failed(call_id, id, Failure::Unreachable);
            };
            let peer = Peer::Transfer { call_id: call_id.to_owned(), transferee_leg, transfer_id: id.to_owned() };
            w.legs.insert(leg.clone(), Leg::new(leg.clone(), target.clone(), LegState::Ringing, peer));
            w.transfers.insert(call_id.to_owned(), (id.to_owned(), Ringing::Leg(leg.clone())));
        }
        self.play(leg, behaviour);
    }

    fn transfer_to_bot(&self, call: &Call, id: &str, target: &Party, transferee: Option<&str>) {
        let app = self.directory.app_of(target);
        let transferee_leg = self.world().transferee_leg(&call.id, transferee);
        let (Some(app), Some(transferee_leg)) = (app, transferee_leg) else {
            return self.transfer_failed(&call.id, id, Failure::Unreachable);
        };
        // A bot at its limit of live calls is busy.
        if self.admission.get().is_some_and(|admit| !admit(&app.client_id)) {
            return self.transfer_failed(&call.id, id, Failure::Busy);
        }
        let offered = uuid::Uuid::new_v4().to_string();
        {
            let mut w = self.world();
            w.transfers.insert(call.id.clone(), (id.to_owned(), Ringing::Bot { offered_call_id: offered.clone() }));
            w.offers.insert(offered.clone(), (call.id.clone(), transferee_leg, id.to_owned()));
        }
        let application_instance = match target {
            Party::ApplicationInstance { id, .. } => Some(id.clone()),
            _ => None,
        };
        // The caller the target bot sees: the transferee, a member of a group call or the one peer.
        let member = transferee.and_then(|pid| call.members.iter().find(|m| m.participant_id == pid));
        let (source, peer_participant_id) = match member {
            Some(m) => (m.party.clone(), m.participant_id.clone()),
            None => (call.remote().clone(), call.peer_participant_id.clone()),
        };
        let offer = IncomingCall {
            id: offered,
            app_id: app.client_id.clone(),
            tenant_id: call.tenant_id.clone(),
            source,
            target: target.clone(),
            application_instance,
            my_participant_id: uuid::Uuid::new_v4().to_string(),
            peer_participant_id,
            call_chain_id: call.call_chain_id.clone(),
            transferor: Some(call.local().clone()),
        };
        self.events.send(NetworkEvent::Offer(Box::new(offer)));
    }

    /// Consultative transfer: after the transferee's delay, it takes over the remote leg
    /// of the consultation call `replaces`, if both are still connected, the transfer has not been
    /// cancelled meanwhile, and the consultation call's party is not being moved by a transfer of its own.
    fn transfer_consultative(self: &Arc<Self>, call_id: &str, id: &str, transferee: &Party, member: Option<&str>, replaces: &str) {
        let delay = match self.behaviour(transferee) {
            Some(Behaviour::Answer { transfer_delay_ms: Some(d), .. }) => d,
            _ => CONSULTATIVE_DELAY_MS,
        };
        self.world().takeovers.insert(call_id.to_owned(), id.to_owned());
        let (call_id, id, replaces, member) = (call_id.to_owned(), id.to_owned(), replaces.to_owned(), member.map(str::to_owned));
        self.later(delay, move |sim| {
            let mut w = sim.world();
            // Cancelled (the deadline passed, the call ended) or replaced by a later transfer: nothing moves.
            if w.takeovers.get(&call_id) != Some(&id) {
                return;
            }
            w.takeovers.remove(&call_id);
            if Sim::moving(&w, &replaces) {
                drop(w);
                return sim.transfer_failed(&call_id, &id, Failure::Unreachable);
            }
            let connected = |id: Option<String>, w: &World| {
                id.and_then(|id| w.legs.get(&id)).filter(|l| l.state == LegState::Connected).map(|l| l.id.clone())
            };
            let x = connected(w.transferee_leg(&call_id, member.as_deref()), &w);
            let y = connected(w.by_call.get(&replaces).cloned(), &w);
            match (x, y) {
                (Some(x), Some(y)) => {
                    w.detach(&x);
                    w.by_call.remove(&replaces);
                    if let Some(l) = w.legs.get_mut(&x) {
                        l.peer = Peer::Leg { leg_id: y.clone() };
                    }
                    if let Some(l) = w.legs.get_mut(&y) {
                        l.peer = Peer::Leg { leg_id: x };
                    }
                    w.finish(&id);
                    drop(w);
                    sim.transferred(&call_id, &id);
                    sim.send(&replaces, NetEvent::Replaced { by_call_id: call_id.clone() });
                }
                // The transferee is gone: its call ends on its own.
                (None, _) => w.finish(&id),
                (Some(_), None) => {
                    drop(w);
                    sim.transfer_failed(&call_id, &id, Failure::Unreachable);
                }
            }
        });
    }
}

/// Why a transfer fails when the target bot rejects the call offered to it (its `reason`).
fn offer_failure(reason: &str) -> Failure {
    match reason {
        "busy" => Failure::Busy,
        // The bot let the call time out (the core's own reason).
        "timeout" => Failure::NoAnswer,
        _ => Failure::Declined,
    }
}

/// The sim's side of the network trait; it keeps a handle on itself to schedule behaviours.
pub struct SimNetwork(pub Arc<Sim>);

impl Network for SimNetwork {
    fn execute(&self, call: &Call, command: &NetCommand) {
        let sim = &self.0;
        match command {
            NetCommand::Place if call.group => sim.build_group(call),
            NetCommand::Place => {
                let Some(behaviour) = sim.behaviour(&call.target) else {
                    sim.send(&call.id, NetEvent::Failed(Failure::Unreachable));
                    return;
                };
                let id = sim.bot_leg(&call.id, call.target.clone(), LegState::Ringing, &call.app_id);
                sim.play(id, behaviour);
            }
            NetCommand::Answer if sim.answer_offer(&call.id, &call.app_id) => {}
            NetCommand::Answer => {
                let leg = sim.world().by_call.get(&call.id).cloned();
                match leg {
                    Some(leg_id) if sim.connect(&leg_id).is_some() => {
                        sim.send(&call.id, NetEvent::Connected);
                        if let Some(Behaviour::Answer { hang_up_after_ms: Some(after), .. }) = sim.behaviour(&call.source) {
                            sim.hang_up_later(leg_id, after);
                        }
                    }
                    // The caller gave up before the bot answered.
                    _ => sim.send(&call.id, NetEvent::RemoteHangUp),
                }
            }
            // A target bot that rejects refuses the transfer; one that lets the call time out does not answer.
            NetCommand::Reject { reason } if sim.refuse_offer(&call.id, offer_failure(reason)) => {}
            // Redirecting or hanging up an offered transfer is refusing it (the caller stays with the transferor).
            NetCommand::HangUp | NetCommand::Redirect { .. } if sim.refuse_offer(&call.id, Failure::Declined) => {}
            NetCommand::Reject { .. } | NetCommand::HangUp => {
                sim.remove_call_leg(&call.id);
            }
            NetCommand::Redirect { targets } => {
                let Some(mut caller) = sim.remove_call_leg(&call.id) else { return };
                // Simultaneous ring is reduced to the first target the directory can reach.
                let Some((target, behaviour)) = targets.iter().find_map(|t| sim.behaviour(t).map(|b| (t.clone(), b))) else { return };
                let target_id = sim.new_leg_id();
                caller.peer = Peer::Leg { leg_id: target_id.clone() };
                caller.state = LegState::Ringing;
                let mut w = sim.world();
                let peer = Peer::Leg { leg_id: caller.id.clone() };
                w.legs.insert(target_id.clone(), Leg::new(target_id.clone(), target, LegState::Ringing, peer));
                w.legs.insert(caller.id.clone(), caller);
                drop(w);
                sim.play(target_id, behaviour);
            }
            NetCommand::Transfer { transfer_id, target, replaces_call_id: None, transferee } => {
                sim.transfer_blind(call, transfer_id, target, transferee.as_deref())
            }
            NetCommand::Transfer { transfer_id, replaces_call_id: Some(b), transferee, .. } => {
                let member = transferee.as_deref().and_then(|pid| call.members.iter().find(|m| m.participant_id == pid));
                let party = member.map_or(call.remote(), |m| &m.party);
                sim.transfer_consultative(&call.id, transfer_id, party, transferee.as_deref(), b)
            }
            NetCommand::CancelTransfer { transfer_id } => sim.cancel_transfer(&call.id, transfer_id),
            NetCommand::DropMember { participant_id } => sim.drop_member(&call.id, participant_id),
            NetCommand::PlayMedia { job } => sim.play_media(&call.id, job),
            NetCommand::StopMedia { operation_id } => sim.stop_media(&call.id, operation_id),
            NetCommand::SendTones { operation_id, tones, delay_between_ms } => {
                sim.send_tones(&call.id, operation_id, tones, *delay_between_ms)
            }
            NetCommand::Invite { invitee, .. } => sim.invite(call, invitee),
            NetCommand::HoldMusic { operation_id, participant_id, start, prompt } => {
                sim.hold_music(call, operation_id, participant_id, *start, prompt.as_deref())
            }
        }
    }

    fn release(&self, call: &Call) {
        self.0.release(&call.id);
    }

    fn resume(&self, call: &Call) {
        let sim = &self.0;
        // A call offered to a transfer target bot that was not answered before the restart is withdrawn;
        // the transferring call, resumed on its own, offers it again.
        if call.transferor.is_some() && call.state == CallState::Incoming {
            sim.send(&call.id, NetEvent::RemoteHangUp);
            return;
        }
        if call.group {
            sim.build_group(call);
        } else {
            let connected = matches!(call.state, CallState::Established | CallState::Transferring | CallState::TransferAccepted);
            let state = if connected { LegState::Connected } else { LegState::Ringing };
            let id = sim.bot_leg(&call.id, call.remote().clone(), state, &call.app_id);
            if call.state == CallState::Establishing && call.direction == switchboard_core::call::Direction::Outgoing {
                // An outgoing call that was still ringing rings on: its party plays its behaviour again.
                if let Some(b) = sim.behaviour(call.remote()) {
                    sim.play(id, b);
                }
            } else if call.state == CallState::Establishing && sim.connect(&id).is_some() {
                // An answered incoming call whose connection was in progress completes it.
                sim.send(&call.id, NetEvent::Connected);
            }
        }
        // The prompt or recording that was playing starts over; tones being sent were lost with the
        // restart, so they end as cancelled.
        if let Some(job) = call.media.queue.first() {
            sim.play_media(&call.id, job);
        }
        let sending = call.operations.iter().filter(|o| o.kind == OperationKind::SendDtmfTones && o.status == OperationStatus::Running);
        for op in sending {
            let reason = CompletionReason::MediaOperationCanceled;
            sim.send(&call.id, NetEvent::MediaCompleted { operation_id: op.id.clone(), reason, recording: None });
        }
        // A transfer in progress starts over: the target rings again, or the takeover is tried again.
        // One whose deadline had passed is answered: nothing of it survived the restart, so it failed.
        match &call.transfer {
            Some(t) if t.cancelling => sim.cancel_transfer(&call.id, &t.operation_id),
            Some(t) => {
                let (target, replaces_call_id, transferee) = (t.target.clone(), t.replaces_call_id.clone(), t.transferee.clone());
                self.execute(call, &NetCommand::Transfer { transfer_id: t.operation_id.clone(), target, replaces_call_id, transferee });
            }
            None => {}
        }
    }
}
