//! The store conformance suite: every [`Store`] implementation runs it in its own tests (memory here,
//! SQLite in `switchboard-sqlite`, PostgreSQL next), so that they keep the same promises.
//!
//! Covered: commit of a new call, `Exists`, version conflicts (a stale write changes nothing), deletion
//! of terminated calls, outbox order, delivered, failed attempts, failed for good, requeue, calls and
//! outbox after reopening, and a rich call (group, transfer in progress) read back unchanged.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use switchboard_core::call::{Call, IncomingCall, Input, MediaConfig, NetEvent, OutgoingCall};
use switchboard_core::party::Party;

use crate::store::{NewNotification, OutboxStatus, Store, StoreError};

/// How the suite gets stores to test.
#[allow(async_fn_in_trait)]
pub trait Opener {
    type Store: Store;
    /// A new, empty store.
    async fn fresh(&mut self) -> Self::Store;
    /// What `store` wrote, opened again as after a restart; `None` for a store that keeps nothing.
    async fn reopen(&mut self, store: Self::Store) -> Option<Self::Store>;
}

fn user(id: &str) -> Party {
    Party::User { id: id.into(), display_name: format!("User {id}"), tenant_id: "tenant".into() }
}

/// A call offered to a bot, as the network hands it over.
pub fn offered(id: &str) -> Call {
    let req = IncomingCall {
        id: id.into(),
        app_id: "app".into(),
        tenant_id: "tenant".into(),
        source: user("caller"),
        target: Party::Application { id: "app".into(), display_name: "Bot".into() },
        application_instance: None,
        my_participant_id: format!("{id}-me"),
        peer_participant_id: format!("{id}-peer"),
        call_chain_id: format!("{id}-chain"),
        transferor: None,
    };
    Call::offer(req, 1_000).0
}

/// A group call with one member joined and a transfer of that member in progress.
pub fn rich(id: &str) -> Call {
    let req = OutgoingCall {
        id: id.into(),
        app_id: "app".into(),
        tenant_id: "tenant".into(),
        callback_uri: "https://bot.example/cb".into(),
        source: Party::ApplicationInstance { id: "inst".into(), display_name: "Reception".into(), tenant_id: "tenant".into() },
        target: user("a"),
        application_instance: Some("inst".into()),
        requested_modalities: vec!["audio".into()],
        media_config: MediaConfig::ServiceHosted,
        subject: Some("Standup".into()),
        my_participant_id: "me".into(),
        peer_participant_id: "p-a".into(),
        call_chain_id: "chain".into(),
        ring_timeout_ms: 60_000,
        members: vec![("p-a".into(), user("a")), ("p-b".into(), user("b"))],
    };
    let (mut call, _) = Call::place(req, 1_000);
    call.handle(Input::Net(NetEvent::MemberJoined { participant_id: "p-a".into() }), 1_100).unwrap();
    let transfer = Input::Transfer {
        target: Party::Phone { number: "+12345678901".into() },
        replaces_call_id: None,
        timeout_ms: 60_000,
        operation_id: "op-1".into(),
        client_context: Some("ctx".into()),
        transferee: Some("p-a".into()),
        // Every store keeps the custom headers with the transfer.
        sip_headers: vec![("X-Ticket".into(), "4711".into())],
    };
    call.handle(transfer, 1_200).unwrap();
    call
}

fn note(body: &str) -> NewNotification {
    NewNotification { callback: "https://bot.example/cb".into(), body: body.into() }
}

async fn live<S: Store>(store: &S) -> Vec<(String, u64)> {
    let mut calls: Vec<(String, u64)> = store.live_calls().await.unwrap().into_iter().map(|s| (s.call.id, s.version)).collect();
    calls.sort();
    calls
}

async fn bodies<S: Store>(store: &S, status: OutboxStatus) -> Vec<String> {
    store.outbox(status).await.unwrap().into_iter().map(|r| r.body).collect()
}

/// Runs every case against stores from `opener`.
pub async fn run<O: Opener>(mut opener: O) {
    new_calls_and_exists(&opener.fresh().await).await;
    versions_and_conflicts(&opener.fresh().await).await;
    outbox_order_delivery_and_failures(&opener.fresh().await).await;
    let store = opener.fresh().await;
    let seq_before = written_before_reopen(&store).await;
    if let Some(store) = opener.reopen(store).await {
        read_after_reopen(&store, seq_before).await;
    }
}

async fn new_calls_and_exists<S: Store>(store: &S) {
    let call = offered("a");
    let (version, rows) = store.commit(&call, None, &[note("1"), note("2")], 5_000).await.unwrap();
    assert_eq!(version, 1, "a new call starts at version 1");
    assert_eq!(rows.len(), 2);
    assert!(rows[0].seq < rows[1].seq, "rows are numbered in commit order");
    let r = &rows[0];
    assert_eq!(
        (r.call_id.as_str(), r.app_id.as_str(), r.tenant_id.as_str(), r.callback.as_str(), r.body.as_str()),
        ("a", "app", "tenant", "https://bot.example/cb", "1")
    );
    assert_eq!((r.attempts, r.next_attempt_at, r.status, r.last_error.clone()), (0, 5_000, OutboxStatus::Pending, None));
    let refused = store.commit(&call, None, &[note("3")], 6_000).await;
    assert!(matches!(refused, Err(StoreError::Exists { ref id }) if id == "a"), "{refused:?}");
    assert_eq!(live(store).await, vec![("a".to_owned(), 1)]);
    assert_eq!(bodies(store, OutboxStatus::Pending).await, ["1", "2"], "the refused commit left no notification behind");
}

async fn versions_and_conflicts<S: Store>(store: &S) {
    let mut call = offered("b");
    store.commit(&call, None, &[], 1).await.unwrap();
    call.handle(Input::Answer { callback_uri: None, modalities: vec!["audio".into()], media_config: MediaConfig::ServiceHosted }, 2)
        .unwrap();
    let (v2, _) = store.commit(&call, Some(1), &[note("answered")], 2).await.unwrap();
    assert_eq!(v2, 2);
    // A writer that still believes in version 1 loses, and leaves nothing behind.
    let stale = store.commit(&offered("b"), Some(1), &[note("stale")], 3).await;
    assert!(matches!(stale, Err(StoreError::Conflict { ref id, expected: 1 }) if id == "b"), "{stale:?}");
    assert_eq!(bodies(store, OutboxStatus::Pending).await, ["answered"]);
    let stored = store.live_calls().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!((stored[0].version, &stored[0].call), (2, &call), "the stale write did not replace the call");
    // A version from the future is a conflict too.
    assert!(matches!(store.commit(&call, Some(7), &[], 4).await, Err(StoreError::Conflict { .. })));
    // A terminated call leaves the live calls; writing it again is a conflict.
    let mut ended = call.clone();
    ended.state = switchboard_core::call::CallState::Terminated;
    let (v3, rows) = store.commit(&ended, Some(2), &[note("deleted")], 7).await.unwrap();
    assert_eq!((v3, rows.len()), (3, 1));
    assert!(live(store).await.is_empty(), "a terminated call is not live");
    assert_eq!(bodies(store, OutboxStatus::Pending).await, ["answered", "deleted"], "its last notification is owed still");
    assert!(matches!(store.commit(&ended, Some(3), &[], 8).await, Err(StoreError::Conflict { .. })));
}

async fn outbox_order_delivery_and_failures<S: Store>(store: &S) {
    let (x, y) = (offered("x"), offered("y"));
    let (_, r1) = store.commit(&x, None, &[note("x1")], 10).await.unwrap();
    let (_, r2) = store.commit(&y, None, &[note("y1"), note("y2")], 11).await.unwrap();
    let (_, r3) = store.commit(&x, Some(1), &[note("x2")], 12).await.unwrap();
    let seqs: Vec<i64> = [&r1, &r2, &r3].iter().flat_map(|r| r.iter().map(|r| r.seq)).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seqs follow commit order: {seqs:?}");
    assert_eq!(bodies(store, OutboxStatus::Pending).await, ["x1", "y1", "y2", "x2"]);

    store.delivered(&[r2[0].seq]).await.unwrap();
    assert_eq!(bodies(store, OutboxStatus::Pending).await, ["x1", "y2", "x2"]);

    store.attempt_failed(&[r1[0].seq], Some(500), "the callback answered 503").await.unwrap();
    let pending = store.outbox(OutboxStatus::Pending).await.unwrap();
    let x1 = pending.iter().find(|r| r.body == "x1").unwrap();
    assert_eq!((x1.attempts, x1.next_attempt_at, x1.last_error.as_deref()), (1, 500, Some("the callback answered 503")));
    store.attempt_failed(&[r1[0].seq, r3[0].seq], None, "gave up").await.unwrap();
    assert_eq!(bodies(store, OutboxStatus::Pending).await, ["y2"]);
    let failed = store.outbox(OutboxStatus::Failed).await.unwrap();
    assert_eq!(failed.iter().map(|r| (r.body.as_str(), r.attempts)).collect::<Vec<_>>(), [("x1", 2), ("x2", 1)]);
    assert!(failed.iter().all(|r| r.status == OutboxStatus::Failed && r.last_error.as_deref() == Some("gave up")));

    assert_eq!(store.requeue_failed(900).await.unwrap(), 2);
    let pending = store.outbox(OutboxStatus::Pending).await.unwrap();
    assert_eq!(pending.iter().map(|r| r.body.as_str()).collect::<Vec<_>>(), ["x1", "y2", "x2"], "requeued rows keep their order");
    let x1 = pending.iter().find(|r| r.body == "x1").unwrap();
    assert_eq!((x1.attempts, x1.next_attempt_at, x1.status), (0, 900, OutboxStatus::Pending));
    assert!(store.outbox(OutboxStatus::Failed).await.unwrap().is_empty());
    assert_eq!(store.requeue_failed(901).await.unwrap(), 0);
}

/// Writes what the reopened store must show; returns the last seq written.
async fn written_before_reopen<S: Store>(store: &S) -> i64 {
    store.commit(&rich("group"), None, &[note("g1")], 20).await.unwrap();
    let mut p2p = offered("p2p");
    store.commit(&p2p, None, &[], 21).await.unwrap();
    p2p.handle(Input::Answer { callback_uri: None, modalities: vec!["audio".into()], media_config: MediaConfig::ServiceHosted }, 22)
        .unwrap();
    let (_, rows) = store.commit(&p2p, Some(1), &[note("p1")], 22).await.unwrap();
    store.attempt_failed(&[rows[0].seq], None, "gave up").await.unwrap();
    rows[0].seq
}

async fn read_after_reopen<S: Store>(store: &S, seq_before: i64) {
    let mut calls = store.live_calls().await.unwrap();
    calls.sort_by(|a, b| a.call.id.cmp(&b.call.id));
    assert_eq!(calls.iter().map(|s| (s.call.id.as_str(), s.version)).collect::<Vec<_>>(), [("group", 1), ("p2p", 2)]);
    assert_eq!(calls[0].call, rich("group"), "a group call with a transfer in progress reads back unchanged");
    assert_eq!(bodies(store, OutboxStatus::Pending).await, ["g1"]);
    assert_eq!(bodies(store, OutboxStatus::Failed).await, ["p1"]);
    // Numbering goes on after the restart: a new row never reuses a seq (the notifier orders by it).
    let (_, rows) = store.commit(&offered("after"), None, &[note("a1")], 30).await.unwrap();
    assert!(rows[0].seq > seq_before, "seq {} after a restart, {seq_before} before", rows[0].seq);
}

/// Opens fresh [`crate::memory::MemoryStore`]s; they keep nothing across a reopen.
pub struct Memory;

impl Opener for Memory {
    type Store = crate::memory::MemoryStore;
    async fn fresh(&mut self) -> Self::Store {
        crate::memory::MemoryStore::new()
    }
    async fn reopen(&mut self, _: Self::Store) -> Option<Self::Store> {
        None
    }
}
