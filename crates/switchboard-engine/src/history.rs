//! Each call's story, as the bot and the network lived it: the Graph requests about it (method, path,
//! status, latency), its state changes, the notifications owed and every delivery attempt (status,
//! latency, faults injected), the commands sent to the network and the events it reported. Kept in
//! memory for live calls and, after they end, within a count and an age (`[sim] history_calls`,
//! `history_max_age_ms`); served at `GET /sim/v1/calls/{id}/history`.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use switchboard_core::Millis;

/// How many ended calls' stories are kept, and for how long, unless configured.
pub const HISTORY_CALLS: usize = 1_000;
pub const HISTORY_MAX_AGE_MS: Millis = 60 * 60 * 1000;
/// The most entries one call keeps (a long call's oldest go first).
pub const ENTRIES_MAX: usize = 2_000;

/// One thing that happened to a call.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Which entry (to complete a request's once it is answered).
    #[serde(skip)]
    pub id: u64,
    /// When (ms since the epoch, on the server's clock).
    pub at: Millis,
    #[serde(flatten)]
    pub what: What,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum What {
    /// A Graph request about the call.
    Request { method: Cow<'static, str>, path: String, status: u16, latency_ms: u64 },
    /// The call's state changed (with the `code/subcode` it ended or failed a transfer with).
    State { from: Cow<'static, str>, to: Cow<'static, str>, result: Option<String> },
    /// A notification owed to the bot, by its outbox number. Kept small, since every live call holds
    /// its own: `resource_url` is `None` for the call itself (`/communications/calls/{id}`, filled in
    /// when the story is read).
    Notification { seq: i64, change_type: Cow<'static, str>, resource_url: Option<String>, summary: Cow<'static, str> },
    /// One attempt to deliver notifications: the bot's status (or why there was none), how long it
    /// took, and the faults injected into it.
    Delivery { seqs: Vec<i64>, attempt: u32, status: Option<u16>, error: Option<String>, latency_ms: u64, faults: Vec<String> },
    /// What Switchboard asked the network to do; `to`, a party other than the call's own remote one
    /// (a transfer target, a redirect's first target).
    Command { command: Cow<'static, str>, to: Option<String> },
    /// What the network reported (ringing, answered, busy, a key pressed, …).
    Network { event: Cow<'static, str> },
    /// Another node owns the call now (this one lost its lease): its story goes on there.
    Moved,
}

/// One call's story.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallHistory {
    pub call_id: String,
    pub app_id: String,
    pub tenant_id: String,
    pub direction: &'static str,
    /// The party at the other end (the caller, or who the bot called).
    pub remote: String,
    pub state: Cow<'static, str>,
    pub created_at: Millis,
    pub ended_at: Option<Millis>,
    pub entries: VecDeque<Entry>,
}

pub struct History {
    inner: Mutex<Inner>,
    calls_kept: usize,
    max_age_ms: Millis,
    /// Counts changes, for whoever watches the stories live (the console's server-sent events).
    changes: tokio::sync::watch::Sender<u64>,
    /// The last entry id given (outside the lock: every Graph request takes one).
    next_id: AtomicU64,
}

#[derive(Default)]
struct Inner {
    calls: HashMap<String, CallHistory>,
    /// Ended calls, oldest end first: the first to go.
    ended: VecDeque<String>,
}

impl Default for History {
    fn default() -> Self {
        History::new(HISTORY_CALLS, HISTORY_MAX_AGE_MS)
    }
}

impl History {
    pub fn new(calls_kept: usize, max_age_ms: Millis) -> History {
        History { inner: Mutex::default(), calls_kept, max_age_ms, changes: tokio::sync::watch::Sender::new(0), next_id: AtomicU64::new(0) }
    }

    /// Changes when any story does (the count of changes: a watcher sees the latest, not each one).
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        // Only counted while someone watches: nothing to pay for otherwise.
        if self.changes.receiver_count() > 0 {
            self.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A call's story begins (or goes on, after a restart or a hand-over).
    pub fn begin(&self, call: &switchboard_core::call::Call) {
        self.begin_story(call);
        self.changed();
    }

    fn begin_story(&self, call: &switchboard_core::call::Call) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let state: Cow<'static, str> = Cow::Borrowed(call.state.as_str());
        // A new call under an ended one's id (the sim lets a test pick ids) starts a story of its own.
        if inner.calls.get(&call.id).is_some_and(|h| h.created_at != call.created_at) {
            inner.calls.remove(&call.id);
            inner.ended.retain(|id| *id != call.id);
        }
        if let Some(h) = inner.calls.get_mut(&call.id) {
            // Back on this node: live again.
            h.state = state.clone();
            if h.ended_at.take().is_some() {
                inner.ended.retain(|id| *id != call.id);
            }
            return;
        }
        inner.calls.insert(
            call.id.clone(),
            CallHistory {
                call_id: call.id.clone(),
                app_id: call.app_id.clone(),
                tenant_id: call.tenant_id.clone(),
                direction: if call.direction == switchboard_core::call::Direction::Incoming { "incoming" } else { "outgoing" },
                remote: call.remote().label().to_owned(),
                state,
                created_at: call.created_at,
                ended_at: None,
                entries: VecDeque::new(),
            },
        );
    }

    /// Notes what happened to call `call_id` (nothing if its story is not kept).
    pub fn note(&self, call_id: &str, at: Millis, what: What) {
        self.note_all(at, [(call_id, what)]);
    }

    /// Notes several things at once, under one lock.
    pub fn note_all<'a>(&self, at: Millis, items: impl IntoIterator<Item = (&'a str, What)>) {
        let mut inner = self.lock();
        for (call_id, what) in items {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
            insert(&mut inner, call_id, Entry { id, at, what });
        }
        drop(inner);
        self.changed();
    }

    /// A place in the stories for a request that has just arrived: what it causes is noted after it,
    /// though the request itself is noted ([`History::request`]) only once it is answered.
    pub fn reserve(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A request answered, in the place [`History::reserve`] gave it when it arrived (first, for the
    /// request that created the call).
    pub fn request(&self, call_id: &str, place: u64, at: Millis, what: What) {
        insert(&mut self.lock(), call_id, Entry { id: place, at, what });
        self.changed();
    }

    /// The call ended: its story is kept within the count and age.
    pub fn ended(&self, call_id: &str, at: Millis) {
        let mut inner = self.lock();
        let Some(h) = inner.calls.get_mut(call_id) else { return };
        if h.ended_at.is_some() {
            return;
        }
        h.ended_at = Some(at);
        inner.ended.push_back(call_id.to_owned());
        self.trim(&mut inner, at);
        drop(inner);
        self.changed();
    }

    fn trim(&self, inner: &mut Inner, now: Millis) {
        while inner.ended.len() > self.calls_kept
            || inner
                .ended
                .front()
                .and_then(|id| inner.calls.get(id))
                .is_some_and(|h| now.saturating_sub(h.ended_at.unwrap_or(now)) > self.max_age_ms)
        {
            if let Some(id) = inner.ended.pop_front() {
                inner.calls.remove(&id);
            }
        }
    }

    /// A call's story, if kept.
    pub fn get(&self, call_id: &str, now: Millis) -> Option<CallHistory> {
        let mut story = {
            let mut inner = self.lock();
            self.trim(&mut inner, now);
            inner.calls.get(call_id).cloned()?
        };
        for e in &mut story.entries {
            if let What::Notification { resource_url: url @ None, .. } = &mut e.what {
                *url = Some(format!("/communications/calls/{call_id}"));
            }
        }
        Some(story)
    }

    /// Every call whose story is kept, newest first, without their entries.
    pub fn calls(&self, now: Millis) -> Vec<CallHistory> {
        let mut inner = self.lock();
        self.trim(&mut inner, now);
        let mut all: Vec<CallHistory> = inner
            .calls
            .values()
            .map(|h| CallHistory {
                call_id: h.call_id.clone(),
                app_id: h.app_id.clone(),
                tenant_id: h.tenant_id.clone(),
                direction: h.direction,
                remote: h.remote.clone(),
                state: h.state.clone(),
                created_at: h.created_at,
                ended_at: h.ended_at,
                entries: VecDeque::new(),
            })
            .collect();
        all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| a.call_id.cmp(&b.call_id)));
        all
    }

    /// Forgets the ended calls' stories (the sim's reset); a call still live keeps its own, and entry
    /// ids go on counting (a request in flight keeps its place).
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.calls.retain(|_, h| h.ended_at.is_none());
        inner.ended.clear();
        drop(inner);
        self.changed();
    }
}

/// Puts `entry` in call `call_id`'s story in order of id (nothing if the story is not kept); a long
/// story loses its oldest entry.
fn insert(inner: &mut Inner, call_id: &str, entry: Entry) {
    let Some(h) = inner.calls.get_mut(call_id) else { return };
    if h.entries.len() >= ENTRIES_MAX {
        if h.entries.front().is_some_and(|first| first.id > entry.id) {
            return;
        }
        h.entries.pop_front();
    }
    if let What::State { to, .. } = &entry.what {
        h.state = to.clone();
    }
    let at = h.entries.partition_point(|e| e.id < entry.id);
    h.entries.insert(at, entry);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: &str) -> switchboard_core::call::Call {
        let req = switchboard_core::call::IncomingCall {
            id: id.into(),
            app_id: "app".into(),
            tenant_id: "t".into(),
            source: switchboard_core::party::Party::Phone { number: "+1".into() },
            target: switchboard_core::party::Party::Application { id: "app".into(), display_name: "Bot".into() },
            application_instance: None,
            my_participant_id: "p".into(),
            peer_participant_id: "q".into(),
            call_chain_id: "c".into(),
            transferor: None,
        };
        switchboard_core::call::Call::offer(req, 0).0
    }

    #[test]
    fn ended_calls_are_kept_within_count_and_age() {
        let h = History::new(2, 1_000);
        for id in ["a", "b", "c"] {
            h.begin(&call(id));
            h.note(id, 10, What::Network { event: "ringing".into() });
        }
        h.note("a", 20, What::State { from: "incoming".into(), to: "terminated".into(), result: Some("200/7000".into()) });
        for id in ["a", "b", "c"] {
            h.ended(id, 100);
        }
        assert!(h.get("a", 100).is_none(), "the oldest of three went");
        let b = h.get("b", 100).unwrap();
        assert_eq!((b.entries.len(), b.ended_at), (1, Some(100)));
        assert_eq!(h.get("c", 1_100).map(|c| c.call_id), Some("c".into()));
        assert!(h.get("c", 1_101).is_none(), "too old");
        h.begin(&call("live"));
        assert_eq!(h.calls(2_000).len(), 1, "a live call stays however old");
    }

    fn kinds(h: &History, id: &str) -> Vec<String> {
        let story = h.get(id, 0).unwrap();
        story.entries.iter().map(|e| serde_json::to_value(&e.what).unwrap()["kind"].as_str().unwrap().to_owned()).collect()
    }

    #[test]
    fn a_request_goes_where_it_arrived_before_what_it_caused() {
        let h = History::default();
        h.begin(&call("a"));
        let place = h.reserve();
        h.note("a", 1, What::Network { event: "answered".into() });
        h.request("a", place, 0, What::Request { method: "POST".into(), path: "/answer".into(), status: 202, latency_ms: 1 });
        assert_eq!(kinds(&h, "a"), ["request", "network"]);
        // A notification about the call itself names it when the story is read.
        h.note("a", 1, What::Notification { seq: 1, change_type: "updated".into(), resource_url: None, summary: "established".into() });
        let story = serde_json::to_value(h.get("a", 1).unwrap()).unwrap();
        assert_eq!(story["entries"][2]["resourceUrl"], "/communications/calls/a");
        // A story at its limit keeps its newest entries: a request older than all of them is left out.
        for _ in 0..ENTRIES_MAX {
            h.note("a", 2, What::Command { command: "x".into(), to: None });
        }
        h.request("a", place, 0, What::Request { method: "GET".into(), path: "/".into(), status: 200, latency_ms: 1 });
        assert_eq!(kinds(&h, "a").len(), ENTRIES_MAX);
        assert!(!kinds(&h, "a").contains(&"request".to_owned()));
    }

    #[test]
    fn a_reset_keeps_live_stories_and_a_reused_id_starts_afresh() {
        let h = History::default();
        h.begin(&call("live"));
        h.begin(&call("over"));
        h.ended("over", 5);
        let place = h.reserve();
        h.clear();
        assert!(h.get("over", 5).is_none());
        // A request that arrived before the reset keeps its place before what comes after.
        h.note("live", 6, What::Network { event: "answered".into() });
        h.request("live", place, 4, What::Request { method: "POST".into(), path: "/answer".into(), status: 202, latency_ms: 1 });
        assert_eq!(kinds(&h, "live"), ["request", "network"]);
        // An id used again by a new call (created later) is a new story.
        h.begin(&call("again"));
        h.note("again", 1, What::Moved);
        h.ended("again", 2);
        let mut new = call("again");
        new.created_at = 10;
        h.begin(&new);
        let story = h.get("again", 10).expect("kept");
        assert_eq!((story.created_at, story.ended_at, story.entries.len()), (10, None, 0));
    }

    #[test]
    fn a_call_handed_back_lives_again() {
        let h = History::new(10, 1_000);
        h.begin(&call("a"));
        h.note("a", 1, What::Moved);
        h.ended("a", 1);
        assert_eq!(h.get("a", 1).unwrap().ended_at, Some(1));
        let mut back = call("a");
        back.state = switchboard_core::call::CallState::Established;
        h.begin(&back);
        let story = h.get("a", 5_000).expect("a live call is not trimmed");
        assert_eq!((story.ended_at, story.state.as_ref()), (None, "established"));
    }
}
