//! Deterministic engine tests: the real engine and simulator, an in-memory store and a virtual clock.
//! No sockets and no sleeps: time moves only when a test advances it, and every timer due fires in
//! order, with what it causes settled, before `advance` returns. Each run is the same run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use switchboard_core::call::{CallState, IncomingCall, Input, MediaConfig, Notification, OutgoingCall};
use switchboard_core::party::Party;
use switchboard_engine::directory::{Application, Directory, Tenant, User};
use switchboard_engine::engine::{OutboxSink, Parts, Render};
use switchboard_engine::memory::MemoryStore;
use switchboard_engine::metrics::Metrics;
use switchboard_engine::store::{NewNotification, OutboxRow};
use switchboard_engine::{Clock, Engine, network};
use switchboard_sim::{Behaviour, Behaviours, Sim, SimNetwork};

const TENANT: &str = "tenant";
const BOT: &str = "bot";
const START: u64 = 1_000_000;

/// Renders each notification as the few facts the tests compare: call, change, state, result.
struct Facts;

impl Render for Facts {
    fn render(&self, call: &switchboard_core::call::Call, notes: &[&Notification], _: u64) -> Vec<NewNotification> {
        notes
            .iter()
            .map(|n| {
                let result = n.result_info.as_ref().map(|r| format!("{}/{}", r.code, r.subcode));
                let mut body = json!({"call": call.id, "change": n.change, "state": n.state, "result": result});
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
}

fn user(id: &str) -> Party {
    Party::User { id: id.into(), display_name: id.into(), tenant_id: TENANT.into() }
}

fn world() -> World {
    let directory = Directory {
        tenants: vec![Tenant { id: TENANT.into(), name: "T".into() }],
        applications: vec![Application {
            client_id: BOT.into(),
            name: "Bot".into(),
            secret: "s".into(),
            tenants: vec![TENANT.into()],
            roles: vec![],
            calling_webhook: Some("http://127.0.0.1/cb".into()),
            notification_format: Default::default(),
            instances: vec![],
        }],
        users: ["alex", "heidi", "sam"]
            .iter()
            .map(|id| User { id: (*id).into(), display_name: (*id).into(), tenant_id: TENANT.into() })
            .collect(),
        numbers: vec![],
    };
    let mut behaviours = Behaviours::default();
    behaviours.insert("heidi", Behaviour::Answer { after_ms: 200, hang_up_after_ms: None, transfer_delay_ms: None });
    behaviours.insert("sam", Behaviour::NoAnswer);
    let clock = Clock::virtual_at(START);
    let delivered = Arc::new(Delivered::default());
    let engine = Engine::new(Parts {
        store: Arc::new(MemoryStore::new()),
        clock: clock.clone(),
        render: Arc::new(Facts),
        outbox: Arc::clone(&delivered) as Arc<dyn OutboxSink>,
        metrics: Arc::new(Metrics::default()),
    });
    let (events, rx) = network::channel();
    let sim = Sim::new(Arc::new(directory), behaviours, clock, events);
    engine.attach_network(Arc::new(SimNetwork(Arc::clone(&sim))), rx);
    World { engine, sim, delivered }
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
        assert_eq!(self.state(id).await, Some(CallState::Established));
        self.take();
    }

    async fn transfer(&self, id: &str, to: &str, timeout_ms: u64) {
        let input = Input::Transfer {
            target: user(to),
            replaces_call_id: None,
            timeout_ms,
            operation_id: format!("{id}-op"),
            client_context: None,
            transferee: None,
        };
        self.engine.apply(id, input).await.unwrap();
    }
}

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
