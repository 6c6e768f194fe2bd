//! Deterministic engine tests: the real engine and simulator, an in-memory store and a virtual clock.
//! No sockets and no sleeps: time moves only when a test advances it, and every timer due fires in
//! order, with what it causes settled, before `advance` returns. Each run is the same run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod media;
mod model;

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use switchboard_core::call::{CallState, IncomingCall, Input, MediaConfig, Notification, OutgoingCall, Timer};
use switchboard_core::party::Party;
use switchboard_engine::directory::{Application, Directory, Tenant, User};
use switchboard_engine::engine::{OutboxSink, Parts, Render};
use switchboard_engine::memory::MemoryStore;
use switchboard_engine::metrics::Metrics;
use switchboard_engine::store::{NewNotification, OutboxRow};
use switchboard_engine::{Clock, Engine, network};
use switchboard_sim::{Behaviour, Behaviours, Peer, Sim, SimNetwork};

const TENANT: &str = "tenant";
const BOT: &str = "bot";
/// A second bot, as a transfer target.
const OTHER_BOT: &str = "other-bot";
const START: u64 = 1_000_000;

/// Renders each notification as the few facts the tests compare: call, change, state, result. It
/// also notes every transfer outcome (an operation that completed or failed), by transfer id.
struct Facts {
    outcomes: Arc<Mutex<Vec<String>>>,
}

impl Render for Facts {
    fn render(&self, call: &switchboard_core::call::Call, notes: &[&Notification], _: u64) -> Vec<NewNotification> {
        for op in notes.iter().filter_map(|n| n.operation.as_ref()) {
            if op.status != switchboard_core::call::OperationStatus::Running && op.kind.is_transfer() {
                self.outcomes.lock().unwrap().push(op.id.clone());
            }
        }
        notes
            .iter()
            .map(|n| {
                let result = n.result_info.as_ref().map(|r| format!("{}/{}", r.code, r.subcode));
                let mut body = json!({"call": call.id, "change": n.change, "state": n.state, "result": result});
                // A media operation's end, and a key pressed.
                if let Some(op) = n.operation.as_ref().filter(|_| n.on_operation) {
                    let reason = op.completion_reason.map(|r| r.as_str());
                    body = json!({"call": call.id, "op": op.id, "status": op.status, "reason": reason, "result": result.clone()
                        .or(op.result_info.as_ref().map(|r| format!("{}/{}", r.code, r.subcode))), "recordedMs": op.recording.as_ref().map(|r| r.duration_ms)});
                }
                if let Some(t) = &n.tone {
                    body["tone"] = json!(format!("{}:{}", t.sequence_id, t.tone.as_str()));
                }
                if let Some(media) = n.media_state {
                    body["media"] = json!(media);
                }
                NewNotification { callback: "bot".into(), body: body.to_string() }
            })
            .collect()
    }
}

/// Everything the engine committed for delivery, in order.
#[derive(Default)]
struct Delivered(Mutex<Vec<OutboxRow>>);

impl OutboxSink for Delivered {
    fn enqueue(&self, rows: Vec<OutboxRow>) {
        self.0.lock().unwrap().extend(rows);
    }
}

struct World {
    engine: Arc<Engine>,
    sim: Arc<Sim>,
    delivered: Arc<Delivered>,
    /// Transfer ids, once for each outcome reported.
    outcomes: Arc<Mutex<Vec<String>>>,
}

fn user(id: &str) -> Party {
    Party::User { id: id.into(), display_name: id.into(), tenant_id: TENANT.into() }
}

fn world() -> World {
    let bot = |id: &str, name: &str| Application {
        client_id: id.into(),
        name: name.into(),
        secret: "s".into(),
        previous_secret: None,
        previous_secret_expires: None,
        tenants: vec![TENANT.into()],
        roles: vec![],
        calling_webhook: Some("http://127.0.0.1/cb".into()),
        notification_format: Default::default(),
        instances: vec![],
        max_requests_per_second: None,
        max_concurrent_calls: None,
    };
    let directory = Directory {
        tenants: vec![Tenant { id: TENANT.into(), name: "T".into() }],
        applications: vec![bot(BOT, "Bot"), bot(OTHER_BOT, "Other Bot")],
        users: ["alex", "heidi", "sam"]
            .iter()
            .map(|id| User { id: (*id).into(), display_name: (*id).into(), tenant_id: TENANT.into() })
            .collect(),
        numbers: vec![],
    };
    let mut behaviours = Behaviours::default();
    behaviours.insert(
        "heidi",
        Behaviour::Answer {
            after_ms: 200,
            hang_up_after_ms: None,
            transfer_delay_ms: None,
            press: None,
            press_after_ms: None,
            speak_ms: None,
        },
    );
    behaviours.insert("sam", Behaviour::NoAnswer);
    behaviours.insert(
        "dana",
        Behaviour::Answer {
            after_ms: 300,
            hang_up_after_ms: None,
            transfer_delay_ms: None,
            press: None,
            press_after_ms: None,
            speak_ms: None,
        },
    );
    let clock = Clock::virtual_at(START);
    let delivered = Arc::new(Delivered::default());
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let engine = Engine::new(Parts {
        store: Arc::new(MemoryStore::new()),
        clock: clock.clone(),
        render: Arc::new(Facts { outcomes: Arc::clone(&outcomes) }),
        outbox: Arc::clone(&delivered) as Arc<dyn OutboxSink>,
        metrics: Arc::new(Metrics::default()),
        history: Default::default(),
    });
    let (events, rx) = network::channel();
    let sim = Sim::new(Arc::new(directory), behaviours, clock, events);
    engine.attach_network(Arc::new(SimNetwork(Arc::clone(&sim))), rx);
    World { engine, sim, delivered, outcomes }
}

impl World {
    /// The notifications committed since the last look, as facts.
    fn take(&self) -> Vec<Value> {
        self.delivered.0.lock().unwrap().drain(..).map(|r| serde_json::from_str(&r.body).unwrap()).collect()
    }

    async fn advance(&self, ms: u64) {
        self.engine.advance_clock(ms).await.expect("virtual");
    }

    async fn state(&self, id: &str) -> Option<CallState> {
        self.engine.get(id).await.map(|c| c.state)
    }

    /// `from` calls the bot and the bot answers: an established call.
    async fn answered(&self, id: &str, from: &str) {
        self.answered_call(id, from).await;
        assert_eq!(self.state(id).await, Some(CallState::Established));
        self.take();
    }

    /// `from` calls the bot and the bot answers, if `from` is free to.
    async fn answered_call(&self, id: &str, from: &str) {
        self.sim.attach_caller(id, BOT, user(from));
        let offer = IncomingCall {
            id: id.into(),
            app_id: BOT.into(),
            tenant_id: TENANT.into(),
            source: user(from),
            target: Party::Application { id: BOT.into(), display_name: "Bot".into() },
            application_instance: None,
            my_participant_id: format!("{id}-bot"),
            peer_participant_id: format!("{id}-{from}"),
            call_chain_id: format!("{id}-chain"),
            transferor: None,
        };
        self.engine.offer(offer).await.unwrap();
        let answer = Input::Answer { callback_uri: None, modalities: vec!["audio".into()], media_config: MediaConfig::ServiceHosted };
        self.engine.apply(id, answer).await.unwrap();
        self.advance(0).await;
    }

    async fn transfer(&self, id: &str, to: &str, timeout_ms: u64) {
        self.transfer_to(id, user(to), None, timeout_ms).await;
    }

    /// A transfer of `id` to `target`, consultative if `replaces` is given; each gets a new id.
    async fn transfer_to(&self, id: &str, target: Party, replaces: Option<&str>, timeout_ms: u64) {
        self.try_transfer(id, target, replaces, timeout_ms).await.expect("the transfer is taken");
    }

    /// A transfer, if the call takes it; returns the transfer's id.
    async fn try_transfer(&self, id: &str, target: Party, replaces: Option<&str>, timeout_ms: u64) -> Option<String> {
        let n = TRANSFERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let operation_id = format!("{id}-op{n}");
        let input = Input::Transfer {
            target,
            replaces_call_id: replaces.map(str::to_owned),
            timeout_ms,
            operation_id: operation_id.clone(),
            client_context: None,
            transferee: None,
            sip_headers: Vec::new(),
        };
        self.engine.apply(id, input).await.ok().map(|_| operation_id)
    }

    /// The bot places a call to `to`, which answers: an established call (Heidi answers after 200 ms).
    async fn placed(&self, id: &str, to: &str) {
        self.place(id, to).await;
        self.advance(200).await;
        assert_eq!(self.state(id).await, Some(CallState::Established));
        self.take();
    }

    /// The bot places a call to `to`.
    async fn place(&self, id: &str, to: &str) {
        let call = OutgoingCall {
            id: id.into(),
            app_id: BOT.into(),
            tenant_id: TENANT.into(),
            callback_uri: "http://127.0.0.1/cb".into(),
            source: Party::Application { id: BOT.into(), display_name: "Bot".into() },
            target: user(to),
            application_instance: None,
            requested_modalities: vec!["audio".into()],
            media_config: MediaConfig::ServiceHosted,
            subject: None,
            my_participant_id: format!("{id}-bot"),
            peer_participant_id: format!("{id}-{to}"),
            call_chain_id: format!("{id}-chain"),
            ring_timeout_ms: 60_000,
            members: vec![],
        };
        self.engine.place(call).await.unwrap();
    }

    fn behave(&self, who: &str, behaviour: Behaviour) {
        assert!(self.sim.set_behaviour(who, behaviour));
    }

    /// The world agrees with itself and with the engine: a leg paired with a leg is paired back; a
    /// leg of a bot call belongs to a live call that has it as its remote party; a ringing transfer
    /// target belongs to a call that is transferring.
    async fn assert_consistent(&self) {
        let legs = self.sim.legs();
        for leg in &legs {
            match &leg.peer {
                Peer::Leg { leg_id } => {
                    let other = legs.iter().find(|l| &l.id == leg_id);
                    assert!(
                        other.is_some_and(|o| matches!(&o.peer, Peer::Leg { leg_id } if *leg_id == leg.id)),
                        "leg {} is paired with {leg_id}, which is not paired back: {legs:?}",
                        leg.id
                    );
                }
                Peer::Bot { call_id, .. } => {
                    let call = self.engine.get(call_id).await;
                    assert!(call.is_some(), "leg {} belongs to call {call_id}, which is gone: {legs:?}", leg.id);
                }
                Peer::Transfer { call_id, .. } => {
                    let state = self.state(call_id).await;
                    assert_eq!(state, Some(CallState::Transferring), "leg {} rings for a transfer of {call_id}: {legs:?}", leg.id);
                }
                // Connected to a party on another network (SIP), which these tests do not run.
                Peer::Group { .. } | Peer::External { .. } => {}
            }
        }
        for call in self.engine.live_calls().await {
            if matches!(call.state, CallState::Established | CallState::Transferring) && !call.group {
                let has_leg = legs.iter().any(|l| matches!(&l.peer, Peer::Bot { call_id, .. } if *call_id == call.id));
                assert!(has_leg, "call {} is {:?} without its remote party: {legs:?}", call.id, call.state);
            }
        }
    }
}

static TRANSFERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn fact(call: &str, change: &str, state: &str, result: Option<&str>) -> Value {
    json!({"call": call, "change": change, "state": state, "result": result})
}

/// The update that tells the bot its media stopped once the transferee left.
fn media_inactive(call: &str) -> Value {
    let mut f = fact(call, "updated", "transferAccepted", None);
    f["media"] = json!("inactive");
    f
}

/// The outcomes of transfers among `facts`: a completed transfer ends the call with 0/7015, a failed
/// one returns it to `established` with a 500 result.
fn transfer_outcomes(facts: &[Value]) -> Vec<&'static str> {
    facts
        .iter()
        .filter_map(|f| match (f["state"].as_str(), f["result"].as_str()) {
            (Some("terminated"), Some("0/7015")) => Some("completed"),
            (Some("established"), Some(r)) if r.starts_with("500/") => Some("failed"),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_silent_party_times_out_at_the_ring_timeout_to_the_millisecond() {
    let w = world();
    let call = OutgoingCall {
        id: "c".into(),
        app_id: BOT.into(),
        tenant_id: TENANT.into(),
        callback_uri: "http://127.0.0.1/cb".into(),
        source: Party::Application { id: BOT.into(), display_name: "Bot".into() },
        target: user("sam"),
        application_instance: None,
        requested_modalities: vec!["audio".into()],
        media_config: MediaConfig::ServiceHosted,
        subject: None,
        my_participant_id: "me".into(),
        peer_participant_id: "sam".into(),
        call_chain_id: "chain".into(),
        ring_timeout_ms: 60_000,
        members: vec![],
    };
    w.engine.place(call).await.unwrap();
    w.advance(59_999).await;
    assert_eq!(w.state("c").await, Some(CallState::Establishing));
    w.advance(1).await;
    assert_eq!(w.state("c").await, None, "ended at exactly 60 s");
    assert_eq!(w.take(), [fact("c", "updated", "establishing", None), fact("c", "deleted", "terminated", Some("408/10057"))]);
    assert_eq!(w.engine.clock().pending(), 0, "an ended call leaves no timer behind");
}

#[tokio::test]
async fn a_blind_transfer_ends_exactly_once() {
    let w = world();
    w.answered("a", "alex").await;
    w.transfer("a", "heidi", 60_000).await;
    w.advance(199).await;
    assert_eq!(w.state("a").await, Some(CallState::Transferring));
    w.advance(1).await;
    let facts = w.take();
    assert_eq!(
        facts,
        [
            fact("a", "updated", "transferring", None),
            fact("a", "updated", "transferAccepted", None),
            media_inactive("a"),
            fact("a", "deleted", "terminated", Some("0/7015"))
        ]
    );
    // Long past the transfer's deadline nothing else happens: its timer went with the call.
    w.advance(3_600_000).await;
    assert!(w.take().is_empty());
    assert_eq!(transfer_outcomes(&facts), ["completed"]);
}

#[tokio::test]
async fn a_target_answering_at_the_transfer_deadline_gives_one_outcome() {
    // Heidi answers 200 ms after she starts ringing; the transfer gives her exactly 200 ms. Both fall
    // due at the same virtual millisecond, and the transfer must still end exactly once. Timers of
    // the same millisecond fire in the order they were set: her answer (set as the transfer's network
    // command ran) before the deadline (set after it), so the transfer completes.
    let w = world();
    w.answered("a", "alex").await;
    w.transfer("a", "heidi", 200).await;
    w.advance(200).await;
    w.advance(60_000).await;
    let facts = w.take();
    assert_eq!(transfer_outcomes(&facts), ["completed"], "{facts:?}");
    assert_eq!(w.state("a").await, None);
    // Alex and Heidi talk, party to party; nothing of the bot's call is left.
    let legs = w.sim.legs();
    assert_eq!(legs.len(), 2, "{legs:?}");
    assert!(legs.iter().all(|l| matches!(l.peer, switchboard_sim::Peer::Leg { .. })), "{legs:?}");
}

#[tokio::test]
async fn an_unanswered_transfer_fails_at_its_deadline_and_the_call_stays() {
    let w = world();
    w.answered("a", "alex").await;
    w.transfer("a", "sam", 30_000).await;
    w.advance(29_999).await;
    assert_eq!(w.state("a").await, Some(CallState::Transferring));
    w.advance(1).await;
    let facts = w.take();
    assert_eq!(facts[0], fact("a", "updated", "transferring", None));
    assert_eq!(facts[1], fact("a", "updated", "established", Some("500/7000")));
    assert_eq!(facts.len(), 2, "{facts:?}");
    assert_eq!(w.state("a").await, Some(CallState::Established));
}

fn answer() -> Input {
    Input::Answer { callback_uri: None, modalities: vec!["audio".into()], media_config: MediaConfig::ServiceHosted }
}

/// V1 (issue 16): a consultative takeover that comes after its transfer's deadline. The deadline asks
/// the network to stop the takeover; it is stopped, the transfer fails, and nothing moves later.
#[tokio::test]
async fn a_takeover_after_the_deadline_is_stopped_and_moves_nothing() {
    let w = world();
    w.behave(
        "alex",
        Behaviour::Answer {
            after_ms: 200,
            hang_up_after_ms: None,
            transfer_delay_ms: Some(1_500),
            press: None,
            press_after_ms: None,
            speak_ms: None,
        },
    );
    w.answered("a", "alex").await;
    w.placed("b", "heidi").await;
    w.transfer_to("a", user("heidi"), Some("b"), 1_000).await;
    w.advance(1_000).await;
    let facts = w.take();
    assert_eq!(facts[0], fact("a", "updated", "transferring", None));
    assert_eq!(facts[1], fact("a", "updated", "established", Some("500/7700")));
    assert_eq!(facts.len(), 2, "{facts:?}");
    // Past the transferee's delay: the takeover that was stopped does not happen.
    w.advance(1_000).await;
    assert!(w.take().is_empty());
    assert_eq!((w.state("a").await, w.state("b").await), (Some(CallState::Established), Some(CallState::Established)));
    w.assert_consistent().await;

    // Retried blind to Silent Sam: the stopped takeover cannot complete the new transfer either.
    w.transfer_to("a", user("sam"), None, 60_000).await;
    w.advance(5_000).await;
    assert_eq!(w.take(), [fact("a", "updated", "transferring", None)]);
    assert_eq!(w.state("a").await, Some(CallState::Transferring));
    w.assert_consistent().await;
}

/// V2 (issue 16): the target bot answers in the very instant of the deadline, and the network moved
/// the transferee before the cancel reached it. The network's word wins: the transfer completed, once.
#[tokio::test]
async fn a_target_bot_answering_as_the_deadline_passes_completes_the_transfer_once() {
    let w = world();
    w.answered("a", "alex").await;
    let deadline = w.engine.clock().now_ms() + 1_000;
    // Set before the transfer, so that it runs before the transfer's own deadline timer in that
    // millisecond. In one step: the target bot's answer is carried out by the network, and the
    // deadline reaches the core before the network's report of that answer does.
    let engine = std::sync::Arc::clone(&w.engine);
    w.engine.clock().schedule(
        deadline,
        Box::new(move || {
            Box::pin(async move {
                let offered = engine.live_calls().await.into_iter().find(|c| c.transferor.is_some()).expect("the offer").id;
                engine.apply(&offered, answer()).await.unwrap();
                engine.apply("a", Input::Timer(Timer::Transfer)).await.unwrap();
            })
        }),
    );
    w.transfer_to("a", Party::Application { id: OTHER_BOT.into(), display_name: "Other Bot".into() }, None, 1_000).await;
    w.advance(0).await;
    let offered = w.engine.live_calls().await.into_iter().find(|c| c.transferor.is_some()).expect("the offer").id;
    w.advance(1_000).await;
    let facts = w.take();
    let for_a: Vec<&Value> = facts.iter().filter(|f| f["call"] == "a").collect();
    assert_eq!(transfer_outcomes(&facts), ["completed"], "{facts:?}");
    assert_eq!(for_a.last(), Some(&&fact("a", "deleted", "terminated", Some("0/7015"))));
    assert_eq!(w.state(&offered).await, Some(CallState::Established), "Alex is with the target bot");
    w.assert_consistent().await;
}

/// V3 (issue 16): two inbound calls with one id: the sim gives the id to the first, and the second,
/// refused, touches nothing of the first's.
#[tokio::test]
async fn a_call_id_is_claimed_once_and_a_refused_claim_touches_nothing() {
    let w = world();
    let first = w.sim.attach_caller("c", BOT, user("alex")).expect("the first claim");
    assert_eq!(w.sim.attach_caller("c", BOT, user("heidi")), None, "the id is taken");
    let offer = IncomingCall {
        id: "c".into(),
        app_id: BOT.into(),
        tenant_id: TENANT.into(),
        source: user("alex"),
        target: Party::Application { id: BOT.into(), display_name: "Bot".into() },
        application_instance: None,
        my_participant_id: "c-bot".into(),
        peer_participant_id: "c-alex".into(),
        call_chain_id: "c-chain".into(),
        transferor: None,
    };
    w.engine.offer(offer.clone()).await.unwrap();
    // A claim the engine refuses (the id is taken there) is taken back without news for anyone.
    assert!(w.engine.offer(offer).await.is_err());
    w.sim.detach_caller("c", "no-such-leg");
    w.advance(0).await;
    assert_eq!(w.state("c").await, Some(CallState::Incoming));
    assert_eq!(w.sim.legs().iter().map(|l| l.id.clone()).collect::<Vec<_>>(), [first]);
}

/// V4 (issue 16): a takeover of B and B's own blind transfer, both due in the same instant. Only one
/// of them may move B's party: here B's transfer, which began first in the network's eyes, completes,
/// and the takeover fails; the world stays paired.
#[tokio::test]
async fn a_takeover_racing_the_consultation_calls_own_transfer_moves_the_party_once() {
    let w = world();
    w.behave(
        "alex",
        Behaviour::Answer {
            after_ms: 200,
            hang_up_after_ms: None,
            transfer_delay_ms: Some(200),
            press: None,
            press_after_ms: None,
            speak_ms: None,
        },
    );
    w.answered("a", "alex").await;
    w.placed("b", "heidi").await;
    w.transfer_to("a", user("heidi"), Some("b"), 60_000).await;
    w.transfer_to("b", user("alex"), None, 60_000).await;
    w.advance(200).await;
    let facts = w.take();
    let outcomes = transfer_outcomes(&facts);
    assert_eq!(outcomes.len(), 2, "each transfer ends once: {facts:?}");
    assert!(facts.contains(&fact("a", "updated", "established", Some("500/7700"))), "{facts:?}");
    assert!(facts.contains(&fact("b", "deleted", "terminated", Some("0/7015"))), "{facts:?}");
    assert_eq!(w.state("a").await, Some(CallState::Established));
    w.assert_consistent().await;
}
