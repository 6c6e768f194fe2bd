//! The sim as a media server: it plays a bot's prompts to the party at the far end, records what the
//! party says, hears the keys it presses and passes on the tones the bot sends.
//!
//! Each prompt lasts [`PROMPT_MS`] (the sim does not fetch the media), a beep [`BEEP_MS`], a tone
//! [`TONE_MS`]. Each step is a timer on the sim's clock that carries the step it belongs to (numbered
//! across the sim), so a step that was cut short (cancelled, barged into, hung up) does nothing when
//! its timer fires; whatever ends an operation takes its entry out under the world's lock first.

use std::sync::Arc;

use serde::Serialize;
use switchboard_core::Millis;
use switchboard_core::call::NetEvent;
use switchboard_core::media::{CompletionReason, MediaAction, MediaJob, RecordSettings, Recording, Tone};

use crate::behaviour::{DEFAULT_PRESS_AFTER_MS, KEY_GAP_MS};
use switchboard_core::call::{Failure, Invitee, Member};

use crate::{Behaviour, LegState, Peer, Sim, World};

/// How long each prompt plays.
pub const PROMPT_MS: u64 = 2_000;
/// How long the beep before a recording lasts.
pub const BEEP_MS: u64 = 500;
/// How long each DTMF tone the bot sends lasts (before its `delayBetweenTonesMs`).
pub const TONE_MS: u64 = 100;

/// What a party heard: a prompt (its URI) or the beep, when it started and for how long.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Heard {
    pub uri: String,
    pub started_at: Millis,
    pub ms: u64,
    /// Played to its end (not cancelled, barged into or hung up on).
    pub complete: bool,
}

/// The prompt or recording playing in a bot call.
pub(crate) struct Playing {
    operation_id: String,
    action: MediaAction,
    /// Bumped at each step; a timer of an earlier step finds it changed and does nothing.
    step: u64,
    phase: Phase,
}

#[derive(Clone, Copy)]
enum Phase {
    Prompt { index: usize },
    Beep,
    Recording { started: Millis, speech_ms: u64 },
}

/// Why keys cannot be pressed on a leg.
#[derive(Debug, PartialEq, Eq)]
pub enum PressError {
    NoSuchLeg,
    /// The leg is not connected to a bot's call (ringing, or party to party).
    NotWithABot,
    /// A character that is no key.
    BadKeys(String),
}

impl World {
    /// The legs that hear a bot call's media: its remote party, or a group call's joined members.
    fn media_legs(&self, call_id: &str) -> Vec<String> {
        let mut legs: Vec<String> = self.by_call.get(call_id).cloned().into_iter().collect();
        if let Some(g) = self.groups.get(call_id) {
            legs.extend(g.members.values().cloned());
        }
        legs.retain(|l| self.legs.get(l).is_some_and(|leg| leg.state == LegState::Connected));
        legs
    }

    /// Notes on every leg of the call that it started hearing `uri`.
    fn start_hearing(&mut self, call_id: &str, uri: &str, now: Millis) {
        for id in self.media_legs(call_id) {
            if let Some(leg) = self.legs.get_mut(&id) {
                leg.heard.push(Heard { uri: uri.to_owned(), started_at: now, ms: 0, complete: false });
            }
        }
    }

    /// Notes how long the legs heard what they were hearing.
    fn stop_hearing(&mut self, call_id: &str, now: Millis, complete: bool) {
        for id in self.media_legs(call_id) {
            let Some(leg) = self.legs.get_mut(&id) else { continue };
            let who = leg.party.key().to_owned();
            if let Some(h) = leg.heard.last_mut().filter(|h| h.ms == 0 && !h.complete) {
                h.ms = now.saturating_sub(h.started_at);
                h.complete = complete;
                // What the party heard is part of the call's story too.
                if let Some(history) = &self.history {
                    let how = if complete { "to its end" } else { "cut short" };
                    let event = format!("{who} heard {} for {} ms ({how})", h.uri, h.ms);
                    history.note(call_id, now, switchboard_engine::history::What::Network { event: event.into() });
                }
            }
        }
    }
}

/// What to do after a step, outside the world's lock.
enum Next {
    Nothing,
    Prompt(usize),
    Beep,
    Recording,
    /// The operation ended (its entry is already gone, so nothing else can end it too).
    Done(CompletionReason),
    /// The recording ended: make it (`speech_ms` of the caller in `total_ms`), then report it.
    Recorded {
        reason: CompletionReason,
        speech_ms: u64,
        total_ms: u64,
    },
}

impl Sim {
    fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    /// Starts the head of a call's media queue.
    pub(crate) fn play_media(self: &Arc<Self>, call_id: &str, job: &MediaJob) {
        let mut w = self.world();
        let legs = w.media_legs(call_id);
        if legs.is_empty() {
            // Nobody to play to: the operation fails at once rather than hold the queue.
            drop(w);
            let reason = match job.action {
                MediaAction::Play { .. } => CompletionReason::PlayPromptFailed,
                MediaAction::Record(_) => CompletionReason::UnspecifiedError,
            };
            return self.completed(call_id, &job.operation_id, reason, None);
        }
        w.media.insert(
            call_id.to_owned(),
            Playing { operation_id: job.operation_id.clone(), action: job.action.clone(), step: 0, phase: Phase::Beep },
        );
        // The parties press their keys once, after the call's first prompt or recording starts.
        let first_time = !w.pressed.contains(call_id);
        w.pressed.note(call_id);
        let presses: Vec<(String, Vec<Tone>, u64)> = if first_time {
            legs.iter()
                .filter_map(|id| {
                    let party = &w.legs.get(id)?.party;
                    match self.behaviour_in(&w, party)? {
                        Behaviour::Answer { press: Some(keys), press_after_ms, .. } => {
                            let tones = Tone::parse_keys(&keys).ok()?;
                            Some((id.clone(), tones, press_after_ms.unwrap_or(DEFAULT_PRESS_AFTER_MS)))
                        }
                        _ => None,
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        drop(w);
        for (leg, tones, after) in presses {
            self.press_later(leg, tones, after);
        }
        let first = match &job.action {
            MediaAction::Play { prompts, .. } if !prompts.is_empty() => Some(0),
            MediaAction::Record(r) if !r.prompts.is_empty() => Some(0),
            _ => None,
        };
        match (first, &job.action) {
            (Some(i), _) => self.start_prompt(call_id, i),
            (None, MediaAction::Record(_)) => self.start_beep(call_id),
            (None, MediaAction::Play { .. }) => {
                self.world().media.remove(call_id);
                self.completed(call_id, &job.operation_id, CompletionReason::CompletedSuccessfully, None)
            }
        }
    }

    /// The behaviour of a party, read under a world lock already held.
    fn behaviour_in(&self, w: &World, party: &switchboard_core::party::Party) -> Option<Behaviour> {
        if let Some(b) = w.overrides.get(party.key()) {
            return Some(b.clone());
        }
        Some(self.behaviours.get(party.key()).cloned().unwrap_or_default())
    }

    /// Moves the call's media to `phase` and returns its new step (numbered across the whole sim, so
    /// that no timer of an earlier job or step matches), or `None` if nothing plays there or nobody
    /// is left to hear it (the entry goes: the call's end reports the operation).
    fn enter(&self, w: &mut World, call_id: &str, phase: Phase) -> Option<u64> {
        if w.media_legs(call_id).is_empty() {
            w.media.remove(call_id);
            return None;
        }
        w.media_steps += 1;
        let step = w.media_steps;
        let p = w.media.get_mut(call_id)?;
        p.step = step;
        p.phase = phase;
        Some(step)
    }

    fn start_prompt(self: &Arc<Self>, call_id: &str, index: usize) {
        let now = self.now();
        let mut w = self.world();
        let Some(uri) = w.media.get(call_id).and_then(|p| prompts(&p.action).get(index).cloned()) else { return };
        let Some(step) = self.enter(&mut w, call_id, Phase::Prompt { index }) else { return };
        w.start_hearing(call_id, &uri, now);
        drop(w);
        self.step_later(call_id, step, PROMPT_MS);
    }

    fn start_beep(self: &Arc<Self>, call_id: &str) {
        let now = self.now();
        let mut w = self.world();
        let beep = matches!(w.media.get(call_id).map(|p| &p.action), Some(MediaAction::Record(r)) if r.beep);
        if !beep {
            drop(w);
            return self.start_recording(call_id);
        }
        let Some(step) = self.enter(&mut w, call_id, Phase::Beep) else { return };
        w.start_hearing(call_id, "beep", now);
        drop(w);
        self.step_later(call_id, step, BEEP_MS);
    }

    /// The recording starts; the party speaks for its behaviour's `speak_ms` (or stays silent), and the
    /// recording ends on the first limit it reaches.
    fn start_recording(self: &Arc<Self>, call_id: &str) {
        let now = self.now();
        let mut w = self.world();
        let Some(MediaAction::Record(r)) = w.media.get(call_id).map(|p| p.action.clone()) else { return };
        let speaker = w.media_legs(call_id).first().and_then(|l| w.legs.get(l)).map(|l| l.party.clone());
        let speech_ms = match speaker.and_then(|p| self.behaviour_in(&w, &p)) {
            Some(Behaviour::Answer { speak_ms: Some(ms), .. }) => ms,
            _ => 0,
        };
        let Some(step) = self.enter(&mut w, call_id, Phase::Recording { started: now, speech_ms }) else { return };
        drop(w);
        let (after, _) = recording_end(&r, speech_ms);
        self.step_later(call_id, step, after);
    }

    fn step_later(self: &Arc<Self>, call_id: &str, step: u64, after_ms: u64) {
        let call_id = call_id.to_owned();
        self.later(after_ms, move |sim| sim.step_done(&call_id, step));
    }

    /// A step's time is up: the next prompt, the beep, the recording, or the end. Whatever ends the
    /// operation takes its entry out under the lock, so nothing else (a stop tone) ends it too.
    fn step_done(self: &Arc<Self>, call_id: &str, step: u64) {
        let now = self.now();
        let mut w = self.world();
        let Some(p) = w.media.get(call_id).filter(|p| p.step == step) else { return };
        let (operation_id, action, phase) = (p.operation_id.clone(), p.action.clone(), p.phase);
        let next = match phase {
            Phase::Prompt { index } => {
                w.stop_hearing(call_id, now, true);
                let count = prompts(&action).len();
                match &action {
                    _ if index + 1 < count => Next::Prompt(index + 1),
                    MediaAction::Play { looped: true, .. } => Next::Prompt(0),
                    MediaAction::Play { .. } => Next::Done(CompletionReason::CompletedSuccessfully),
                    MediaAction::Record(_) => Next::Beep,
                }
            }
            Phase::Beep => {
                w.stop_hearing(call_id, now, true);
                Next::Recording
            }
            Phase::Recording { started, speech_ms } => match &action {
                MediaAction::Record(r) => {
                    let (_, reason) = recording_end(r, speech_ms);
                    let total_ms = now.saturating_sub(started);
                    Next::Recorded { reason, speech_ms: speech_ms.min(total_ms), total_ms }
                }
                MediaAction::Play { .. } => Next::Nothing,
            },
        };
        if matches!(next, Next::Done(_) | Next::Recorded { .. }) {
            w.media.remove(call_id);
        }
        drop(w);
        match next {
            Next::Prompt(index) => self.start_prompt(call_id, index),
            Next::Beep => self.start_beep(call_id),
            Next::Recording => self.start_recording(call_id),
            Next::Done(reason) => self.completed(call_id, &operation_id, reason, None),
            Next::Recorded { reason, speech_ms, total_ms } => {
                let recording = self.keep_recording(call_id, &operation_id, speech_ms, total_ms);
                self.completed(call_id, &operation_id, reason, Some(recording));
            }
            Next::Nothing => {}
        }
    }

    /// Makes the recording's audio and keeps it where the bot fetches it.
    fn keep_recording(&self, call_id: &str, operation_id: &str, speech_ms: u64, total_ms: u64) -> Recording {
        // 244 random bits: only the bot that is told may fetch it.
        let access_token = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        if let Some(store) = self.recordings.get() {
            store.put(switchboard_engine::recordings::Stored {
                id: operation_id.to_owned(),
                access_token: access_token.clone(),
                call_id: call_id.to_owned(),
                wav: Arc::new(crate::wav::recording(speech_ms, total_ms)),
                made_at: self.now(),
            });
        }
        Recording { id: operation_id.to_owned(), duration_ms: total_ms, access_token }
    }

    /// The engine hears how the operation ended.
    fn completed(&self, call_id: &str, operation_id: &str, reason: CompletionReason, recording: Option<Recording>) {
        self.send(call_id, NetEvent::MediaCompleted { operation_id: operation_id.to_owned(), reason, recording });
    }

    /// The bot cancelled, or the call ended: what plays stops where it is, without a word back.
    pub(crate) fn stop_media(&self, call_id: &str, operation_id: &str) {
        let now = self.now();
        let mut w = self.world();
        if w.media.get(call_id).is_some_and(|p| p.operation_id == operation_id) {
            w.stop_hearing(call_id, now, false);
            w.media.remove(call_id);
        }
    }

    /// Tones the bot sends reach the party, one every `TONE_MS + delay`.
    pub(crate) fn send_tones(self: &Arc<Self>, call_id: &str, operation_id: &str, tones: &[Tone], delay_between_ms: u64) {
        let mut w = self.world();
        for id in w.media_legs(call_id) {
            if let Some(leg) = w.legs.get_mut(&id) {
                leg.received.push_str(&Tone::keys(tones));
            }
        }
        drop(w);
        let took = (tones.len() as u64).saturating_mul(TONE_MS.saturating_add(delay_between_ms));
        let (call_id, operation_id) = (call_id.to_owned(), operation_id.to_owned());
        self.later(took, move |sim| sim.completed(&call_id, &operation_id, CompletionReason::CompletedSuccessfully, None));
    }

    /// `POST /sim/v1/legs/{legId}/dtmf`: the leg's party presses keys now, one every [`KEY_GAP_MS`].
    pub fn press_keys(self: &Arc<Self>, leg_id: &str, keys: &str) -> Result<(), PressError> {
        crate::behaviour::check_keys(keys).map_err(PressError::BadKeys)?;
        let tones = Tone::parse_keys(keys).map_err(|c| PressError::BadKeys(format!("'{c}' is not a key")))?;
        let w = self.world();
        let leg = w.legs.get(leg_id).ok_or(PressError::NoSuchLeg)?;
        if leg.state != LegState::Connected || bot_call(&leg.peer).is_none() {
            return Err(PressError::NotWithABot);
        }
        drop(w);
        self.press_later(leg_id.to_owned(), tones, 0);
        Ok(())
    }

    fn press_later(self: &Arc<Self>, leg_id: String, tones: Vec<Tone>, after_ms: u64) {
        for (i, tone) in tones.into_iter().enumerate() {
            let leg_id = leg_id.clone();
            let at = after_ms.saturating_add(i as u64 * KEY_GAP_MS);
            if at == 0 {
                self.key_pressed(&leg_id, tone);
            } else {
                self.later(at, move |sim| sim.key_pressed(&leg_id, tone));
            }
        }
    }

    /// A party pressed a key: the bot's call hears it, and a stop tone ends the recording. The
    /// recording is claimed (its entry taken out) under the lock, so its own timer cannot end it too.
    fn key_pressed(self: &Arc<Self>, leg_id: &str, tone: Tone) {
        let now = self.now();
        let mut w = self.world();
        let Some(leg) = w.legs.get_mut(leg_id).filter(|l| l.state == LegState::Connected) else { return };
        let Some(call_id) = bot_call(&leg.peer) else { return };
        leg.pressed.push(tone.as_char());
        let stops = w.media.get(&call_id).and_then(|p| match (&p.action, p.phase) {
            (MediaAction::Record(r), Phase::Recording { started, speech_ms }) if r.stop_tones.contains(&tone) => {
                Some((p.operation_id.clone(), started, speech_ms))
            }
            _ => None,
        });
        if stops.is_some() {
            w.media.remove(&call_id);
        }
        drop(w);
        self.send(&call_id, NetEvent::ToneReceived { tone });
        if let Some((operation_id, started, speech_ms)) = stops {
            let total = now.saturating_sub(started);
            let recording = self.keep_recording(&call_id, &operation_id, speech_ms.min(total), total);
            self.completed(&call_id, &operation_id, CompletionReason::StopToneDetected, Some(recording));
        }
    }
}

/// The bot call a leg is talking to, if any.
fn bot_call(peer: &Peer) -> Option<String> {
    match peer {
        Peer::Bot { call_id, .. } | Peer::Group { call_id, .. } => Some(call_id.clone()),
        _ => None,
    }
}

fn prompts(action: &MediaAction) -> &[String] {
    match action {
        MediaAction::Play { prompts, .. } => prompts,
        MediaAction::Record(r) => &r.prompts,
    }
}

/// When a recording in which the party speaks for `speech_ms` ends, and why: after the initial
/// silence if it says nothing, else after the trailing silence, or at the longest allowed.
fn recording_end(r: &RecordSettings, speech_ms: u64) -> (u64, CompletionReason) {
    if speech_ms == 0 {
        return (r.initial_silence_ms.min(r.max_duration_ms), CompletionReason::InitialSilenceTimeout);
    }
    let quiet = speech_ms.saturating_add(r.max_silence_ms);
    if quiet >= r.max_duration_ms {
        (r.max_duration_ms, CompletionReason::MaxRecordDurationReached)
    } else {
        (quiet, CompletionReason::MaxSilenceTimeout)
    }
}

impl crate::World {
    /// The call becomes a group call here if it was not one: its remote leg (if the sim has it) is its
    /// first member. A call of another network (SIP) gets a group here for the members the sim rings.
    pub(crate) fn become_group(&mut self, call: &switchboard_core::call::Call) {
        let call_id = call.id.as_str();
        if self.groups.contains_key(call_id) {
            return;
        }
        let mut group = crate::Group { bot: true, members: std::collections::BTreeMap::new() };
        if let Some(leg_id) = self.by_call.remove(call_id) {
            if let Some(leg) = self.legs.get_mut(&leg_id) {
                leg.peer = Peer::Group { call_id: call_id.to_owned(), participant_id: call.peer_participant_id.clone() };
            }
            group.members.insert(call.peer_participant_id.clone(), leg_id);
        }
        self.groups.insert(call_id.to_owned(), group);
    }
}

impl Sim {
    /// A call becomes a group call (its member invited on another network, SIP): its remote leg here,
    /// if any, is its first member.
    pub fn become_group(&self, call: &switchboard_core::call::Call) {
        self.world().become_group(call);
    }

    /// `participants/invite`: the call becomes a group call if it was peer-to-peer (its remote leg is
    /// its first member); the invitee rings and plays its behaviour, or, replacing another of the
    /// bot's calls, its peer moves over and that call ends.
    pub(crate) fn invite(self: &Arc<Self>, call: &switchboard_core::call::Call, invitee: &Invitee) {
        let (call_id, pid) = (call.id.as_str(), invitee.participant_id.as_str());
        let mut w = self.world();
        w.become_group(call);
        let Some(replaced) = &invitee.replaces_call_id else {
            drop(w);
            let member = Member::invited(pid.to_owned(), invitee.party.clone());
            match self.behaviour(&invitee.party) {
                Some(behaviour) => {
                    let leg = self.member_leg(call_id, &member, LegState::Ringing);
                    self.play(leg, behaviour);
                }
                None => self.send(call_id, NetEvent::MemberLeft { participant_id: pid.to_owned(), failure: Some(Failure::Unreachable) }),
            }
            return;
        };
        // The other call's peer moves into this one, connected at once.
        let moving = Sim::moving(&w, replaced);
        let moved = match w.by_call.get(replaced).cloned() {
            Some(leg_id) if !moving && w.legs.get(&leg_id).is_some_and(|l| l.state == LegState::Connected && l.party == invitee.party) => {
                w.by_call.remove(replaced);
                if let Some(leg) = w.legs.get_mut(&leg_id) {
                    leg.peer = Peer::Group { call_id: call_id.to_owned(), participant_id: pid.to_owned() };
                }
                if let Some(g) = w.groups.get_mut(call_id) {
                    g.members.insert(pid.to_owned(), leg_id);
                }
                true
            }
            _ => false,
        };
        drop(w);
        if moved {
            self.send(call_id, NetEvent::MemberJoined { participant_id: pid.to_owned() });
            self.send(replaced, NetEvent::Replaced { by_call_id: call_id.to_owned() });
        } else {
            self.send(call_id, NetEvent::MemberLeft { participant_id: pid.to_owned(), failure: Some(Failure::Unreachable) });
        }
    }

    /// Hold music for a participant: it hears the music (the prompt given, or `holdMusic`) until it is
    /// taken off hold.
    pub(crate) fn hold_music(
        &self,
        call: &switchboard_core::call::Call,
        operation_id: &str,
        participant_id: &str,
        start: bool,
        prompt: Option<&str>,
    ) {
        let now = self.now();
        let mut w = self.world();
        let leg_id = match w.groups.get(&call.id) {
            Some(g) => g.members.get(participant_id).cloned(),
            None => w.by_call.get(&call.id).cloned(),
        };
        if let Some(leg) = leg_id.and_then(|l| w.legs.get_mut(&l)) {
            if start {
                leg.heard.push(Heard {
                    uri: format!("holdMusic:{}", prompt.unwrap_or("default")),
                    started_at: now,
                    ms: 0,
                    complete: false,
                });
            } else if let Some(h) = leg.heard.iter_mut().rev().find(|h| h.uri.starts_with("holdMusic:") && h.ms == 0 && !h.complete) {
                h.ms = now.saturating_sub(h.started_at);
                h.complete = true;
            }
        }
        drop(w);
        self.completed(&call.id, operation_id, CompletionReason::CompletedSuccessfully, None);
    }
}
