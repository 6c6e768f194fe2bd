//! Tests of the call state machine: a few exact transcripts, then properties over random input
//! sequences (one final outcome, nothing after termination, only documented edges).

use proptest::prelude::*;

use super::*;

fn heidi() -> Party {
    Party::User { id: "heidi".into(), display_name: "Heidi Steen".into(), tenant_id: "t".into() }
}
fn alex() -> Party {
    Party::User { id: "alex".into(), display_name: "Alex Wilber".into(), tenant_id: "t".into() }
}
fn bot() -> Party {
    Party::Application { id: "app".into(), display_name: "Bot".into() }
}

fn outgoing(now: Millis) -> (Call, Vec<Effect>) {
    place(now, Vec::new())
}

/// A group call to Heidi (m1) and Alex (m2).
fn group(now: Millis) -> (Call, Vec<Effect>) {
    place(now, vec![("m1".into(), heidi()), ("m2".into(), alex())])
}

fn place(now: Millis, members: Vec<(String, Party)>) -> (Call, Vec<Effect>) {
    Call::place(
        OutgoingCall {
            id: "c1".into(),
            app_id: "app".into(),
            tenant_id: "t".into(),
            callback_uri: "https://bot/cb".into(),
            source: bot(),
            target: heidi(),
            application_instance: None,
            requested_modalities: vec!["audio".into()],
            media_config: MediaConfig::ServiceHosted,
            subject: None,
            my_participant_id: "p".into(),
            peer_participant_id: "q".into(),
            call_chain_id: "chain".into(),
            ring_timeout_ms: 1000,
            members,
        },
        now,
    )
}

fn incoming(now: Millis) -> (Call, Vec<Effect>) {
    Call::offer(
        IncomingCall {
            id: "c2".into(),
            app_id: "app".into(),
            tenant_id: "t".into(),
            source: heidi(),
            target: bot(),
            application_instance: None,
            my_participant_id: "p".into(),
            peer_participant_id: "q".into(),
            call_chain_id: "chain".into(),
            transferor: None,
        },
        now,
    )
}

/// The notifications among effects, as "changeType:state" strings: the transcript a bot would see.
fn notes(fx: &[Effect]) -> Vec<String> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Notify(n) => Some(format!("{:?}:{}", n.change, n.state.as_str()).to_lowercase()),
            _ => None,
        })
        .collect()
}

#[test]
fn outgoing_call_connects_then_bot_hangs_up() {
    let (mut call, fx) = outgoing(0);
    assert_eq!(notes(&fx), ["updated:establishing"]);
    assert!(fx.contains(&Effect::Net(NetCommand::Place)));
    let fx = call.handle(Input::Net(NetEvent::Connected), 10).unwrap();
    assert_eq!(notes(&fx), ["updated:established"]);
    assert_eq!(call.media_state, MediaState::Active);
    let fx = call.handle(Input::HangUp, 20).unwrap();
    assert_eq!(notes(&fx), ["updated:terminating", "deleted:terminated"]);
    assert_eq!(call.result_info, Some(ResultInfo::ended_by_bot()));
    assert!(fx.contains(&Effect::Net(NetCommand::HangUp)));
}

#[test]
fn outgoing_call_failures_end_with_their_result_info() {
    for (failure, code) in [(Failure::Busy, 486), (Failure::Declined, 603), (Failure::NoAnswer, 408)] {
        let (mut call, _) = outgoing(0);
        let fx = call.handle(Input::Net(NetEvent::Failed(failure)), 5).unwrap();
        assert_eq!(notes(&fx), ["deleted:terminated"]);
        assert_eq!(call.result_info.as_ref().map(|r| r.code), Some(code));
    }
}

#[test]
fn ring_timeout_ends_an_unanswered_outgoing_call_but_not_early() {
    let (mut call, _) = outgoing(0);
    assert!(call.handle(Input::Timer(Timer::Setup), 999).unwrap().is_empty());
    let fx = call.handle(Input::Timer(Timer::Setup), 1000).unwrap();
    assert_eq!(notes(&fx), ["deleted:terminated"]);
    assert_eq!(call.result_info, Some(ResultInfo::no_answer()));
    assert!(fx.contains(&Effect::Net(NetCommand::HangUp)));
}

#[test]
fn incoming_call_is_offered_in_full_then_answered() {
    let (mut call, fx) = incoming(0);
    assert_eq!(notes(&fx), ["created:incoming"]);
    assert!(matches!(&fx[0], Effect::Notify(n) if n.full));
    let fx = call
        .handle(Input::Answer { callback_uri: Some("https://bot/c2".into()), modalities: vec![], media_config: MediaConfig::AppHosted }, 1)
        .unwrap();
    assert_eq!(notes(&fx), ["updated:establishing"]);
    assert_eq!(call.callback_uri.as_deref(), Some("https://bot/c2"));
    assert_eq!(call.handle(Input::Net(NetEvent::Connected), 2).map(|fx| notes(&fx)), Ok(vec!["updated:established".into()]));
    assert_eq!(
        call.handle(Input::Reject { reason: "busy".into() }, 3),
        Err(Refusal::WrongState { action: "reject", state: CallState::Established, needs: "'incoming'" })
    );
}

#[test]
fn unanswered_incoming_call_times_out() {
    let (mut call, _) = incoming(0);
    let fx = call.handle(Input::Timer(Timer::Setup), ANSWER_TIMEOUT_MS).unwrap();
    assert_eq!(notes(&fx), ["deleted:terminated"]);
    assert_eq!(call.result_info, Some(ResultInfo::not_answered_in_time()));
}

#[test]
fn keep_alive_postpones_the_keep_alive_timeout() {
    let (mut call, _) = outgoing(0);
    call.handle(Input::Net(NetEvent::Connected), 1).unwrap();
    call.handle(Input::KeepAlive, KEEP_ALIVE_TIMEOUT_MS - 1).unwrap();
    assert!(call.handle(Input::Timer(Timer::KeepAlive), KEEP_ALIVE_TIMEOUT_MS).unwrap().is_empty());
    let fx = call.handle(Input::Timer(Timer::KeepAlive), 2 * KEEP_ALIVE_TIMEOUT_MS).unwrap();
    assert_eq!(notes(&fx), ["deleted:terminated"]);
    assert_eq!(call.result_info, Some(ResultInfo::keep_alive_timeout()));
}

#[test]
fn remote_hang_up_of_a_phone_uses_the_pstn_code() {
    let (mut call, _) = incoming(0);
    call.source = Party::Phone { number: "+1".into() };
    call.handle(Input::Net(NetEvent::RemoteHangUp), 1).unwrap();
    assert_eq!(call.result_info, Some(ResultInfo::pstn_hang_up()));
}

fn established() -> Call {
    let (mut call, _) = outgoing(0);
    call.handle(Input::Net(NetEvent::Connected), 1).unwrap();
    call
}

fn transfer(replaces: Option<&str>) -> Input {
    Input::Transfer {
        target: alex(),
        replaces_call_id: replaces.map(str::to_owned),
        timeout_ms: 1000,
        operation_id: "op".into(),
        client_context: Some("ctx".into()),
        transferee: None,
        sip_headers: Vec::new(),
    }
}

fn group_transfer(transferee: &str) -> Input {
    let bob = Party::User { id: "bob".into(), display_name: "Bob".into(), tenant_id: "t".into() };
    let Input::Transfer { replaces_call_id, timeout_ms, operation_id, client_context, .. } = transfer(None) else { unreachable!() };
    Input::Transfer {
        target: bob,
        replaces_call_id,
        timeout_ms,
        operation_id,
        client_context,
        transferee: Some(transferee.into()),
        sip_headers: Vec::new(),
    }
}

fn joined(id: &str) -> Input {
    Input::Net(NetEvent::MemberJoined { participant_id: id.into() })
}

fn left(id: &str, failure: Option<Failure>) -> Input {
    Input::Net(NetEvent::MemberLeft { participant_id: id.into(), failure })
}

/// The notifications among effects, with roster updates shown as "roster".
fn group_notes(fx: &[Effect]) -> Vec<String> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Notify(n) if n.roster => Some("roster".to_owned()),
            Effect::Notify(n) => {
                let info = n.result_info.as_ref().map(|r| format!(" {}/{}", r.code, r.subcode)).unwrap_or_default();
                Some(format!("{:?}:{}{info}", n.change, n.state.as_str()).to_lowercase())
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_group_call_is_established_by_its_first_member_and_rosters_every_change() {
    let (mut call, fx) = group(0);
    assert_eq!(group_notes(&fx), ["updated:establishing"]);
    // Heidi declines: nobody has joined yet, nothing to tell.
    assert_eq!(group_notes(&call.handle(left("m1", Some(Failure::Declined)), 5).unwrap()), Vec::<String>::new());
    assert_eq!(group_notes(&call.handle(joined("m2"), 10).unwrap()), ["updated:established", "roster"]);
    assert_eq!(call.members.len(), 1);
    assert_eq!(call.setup_deadline, None, "everyone invited has answered or refused");
    // The last one leaves: the call ends.
    let fx = call.handle(left("m2", None), 20).unwrap();
    assert_eq!(group_notes(&fx), ["deleted:terminated 200/5002"]);
    assert!(fx.contains(&Effect::Net(NetCommand::HangUp)));
}

#[test]
fn a_group_call_nobody_joins_ends_at_the_ring_timeout() {
    let (mut call, _) = group(0);
    let fx = call.handle(Input::Timer(Timer::Setup), 1000).unwrap();
    assert_eq!(group_notes(&fx), ["deleted:terminated 200/5013"]);
    let (mut call, _) = group(0);
    call.handle(joined("m1"), 10).unwrap();
    // Alex still rings at the timeout: he is no longer invited, and the call goes on with Heidi.
    let fx = call.handle(Input::Timer(Timer::Setup), 1000).unwrap();
    assert_eq!(group_notes(&fx), Vec::<String>::new());
    assert!(fx.contains(&Effect::Net(NetCommand::DropMember { participant_id: "m2".into() })));
    assert_eq!(call.members.iter().map(|m| m.participant_id.as_str()).collect::<Vec<_>>(), ["m1"]);
}

#[test]
fn a_group_transfer_returns_to_established_with_the_others() {
    let (mut call, _) = group(0);
    call.handle(joined("m1"), 10).unwrap();
    call.handle(joined("m2"), 11).unwrap();
    assert_eq!(call.handle(transfer(None), 20), Err(Refusal::TransfereeRequired));
    assert_eq!(call.handle(group_transfer("m9"), 20), Err(Refusal::NotAMember("m9".into())));
    let fx = call.handle(group_transfer("m1"), 20).unwrap();
    assert!(fx.iter().any(|e| matches!(e, Effect::Net(NetCommand::Transfer { transferee: Some(t), .. }) if t == "m1")));
    let fx = call.handle(Input::Net(NetEvent::TransferCompleted { transfer_id: "op".into() }), 30).unwrap();
    // No media change: the bot still talks to Alex.
    assert_eq!(group_notes(&fx), ["updated:transferaccepted", "updated:established 0/7015", "roster"]);
    assert_eq!(call.media_state, MediaState::Active);
    assert_eq!(call.members.len(), 1);
    // Alex is the only one left: transferring him ends the call as a peer-to-peer transfer would.
    call.handle(group_transfer("m2"), 40).unwrap();
    let fx = call.handle(Input::Net(NetEvent::TransferCompleted { transfer_id: "op".into() }), 50).unwrap();
    assert_eq!(group_notes(&fx), ["updated:transferaccepted", "updated:transferaccepted", "deleted:terminated 0/7015"]);
}

#[test]
fn a_group_transferee_that_leaves_fails_the_transfer() {
    let (mut call, _) = group(0);
    call.handle(joined("m1"), 10).unwrap();
    call.handle(joined("m2"), 11).unwrap();
    call.handle(group_transfer("m1"), 20).unwrap();
    let fx = call.handle(left("m1", None), 30).unwrap();
    assert_eq!(group_notes(&fx), ["updated:established 500/7000", "roster"]);
    assert!(fx.contains(&Effect::Net(NetCommand::CancelTransfer { transfer_id: "op".into() })));
    assert_eq!(call.transfer, None);
}

#[test]
fn blind_transfer_success_transcript() {
    let mut call = established();
    let fx = call.handle(transfer(None), 10).unwrap();
    assert_eq!(notes(&fx), ["updated:transferring"]);
    assert!(fx.contains(&Effect::Net(NetCommand::Transfer {
        transfer_id: "op".into(),
        target: alex(),
        replaces_call_id: None,
        transferee: None
    })));
    assert!(call.handle(Input::Net(NetEvent::TransferAccepted { transfer_id: "op".into() }), 20).is_ok());
    assert_eq!(call.state, CallState::TransferAccepted);
    assert_eq!(call.media_state, MediaState::Inactive);
    let fx = call.handle(Input::Net(NetEvent::TransferCompleted { transfer_id: "op".into() }), 21).unwrap();
    assert_eq!(notes(&fx), ["deleted:terminated"]);
    assert_eq!(call.result_info, Some(ResultInfo::transfer_completed()));
    assert_eq!(call.termination_reason, None);
}

#[test]
fn transfer_accepted_is_followed_by_the_media_state_change() {
    let mut call = established();
    call.handle(transfer(None), 10).unwrap();
    let fx = call.handle(Input::Net(NetEvent::TransferCompleted { transfer_id: "op".into() }), 20).unwrap();
    assert_eq!(notes(&fx), ["updated:transferaccepted", "updated:transferaccepted", "deleted:terminated"]);
    let medias: Vec<_> = fx.iter().filter_map(|e| if let Effect::Notify(n) = e { Some(n.media_state) } else { None }).collect();
    assert_eq!(medias, [None, Some(MediaState::Inactive), None]);
}

#[test]
fn consultative_transfer_ends_with_app_transferred() {
    let mut call = established();
    call.handle(transfer(Some("c9")), 10).unwrap();
    let fx = call.handle(Input::Net(NetEvent::TransferCompleted { transfer_id: "op".into() }), 20).unwrap();
    assert_eq!(notes(&fx).last().map(String::as_str), Some("deleted:terminated"));
    assert_eq!((call.result_info.clone(), call.termination_reason.as_deref()), (None, Some("AppTransferred")));
}

#[test]
fn failed_transfers_return_to_established_and_can_be_retried() {
    for (replaces, subcode, context) in [(None, 7000, None), (Some("c9"), 7700, Some("c9".to_owned()))] {
        let mut call = established();
        call.handle(transfer(replaces), 10).unwrap();
        let fx = call.handle(Input::Net(NetEvent::TransferFailed { transfer_id: "op".into(), failure: Failure::Busy }), 20).unwrap();
        assert_eq!(notes(&fx), ["updated:established"]);
        let Some(Effect::Notify(n)) = fx.first() else { panic!("a notification") };
        assert_eq!(n.result_info.as_ref().map(|r| (r.code, r.subcode)), Some((500, subcode)));
        assert_eq!(n.replaces_context, context);
        assert_eq!(call.state, CallState::Established);
        assert_eq!(call.result_info, None, "the call itself carries no resultInfo while up");
        assert!(call.handle(transfer(None), 30).is_ok(), "a failed transfer can be tried again");
    }
}

#[test]
fn at_its_deadline_a_transfer_is_cancelled_and_fails_once_the_network_confirms() {
    let mut call = established();
    call.handle(transfer(None), 10).unwrap();
    assert!(call.handle(Input::Timer(Timer::Transfer), 1009).unwrap().is_empty());
    let fx = call.handle(Input::Timer(Timer::Transfer), 1010).unwrap();
    assert_eq!(fx, [Effect::Net(NetCommand::CancelTransfer { transfer_id: "op".into() })], "no outcome yet: only the network knows");
    assert_eq!(call.state, CallState::Transferring);
    assert!(call.handle(Input::Timer(Timer::Transfer), 1020).unwrap().is_empty(), "asked once");
    let fx = call.handle(Input::Net(NetEvent::TransferFailed { transfer_id: "op".into(), failure: Failure::NoAnswer }), 1011).unwrap();
    assert_eq!(notes(&fx), ["updated:established"]);
    assert_eq!(call.result_info, None);
}

#[test]
fn a_success_the_network_could_not_undo_completes_the_transfer_after_its_deadline() {
    // The target answered just as the deadline passed: the network had moved the transferee before
    // the cancel reached it, and says so. The transfer completed; it must not be reported failed too.
    let mut call = established();
    call.handle(transfer(None), 10).unwrap();
    call.handle(Input::Timer(Timer::Transfer), 1010).unwrap();
    let fx = call.handle(Input::Net(NetEvent::TransferAccepted { transfer_id: "op".into() }), 1011).unwrap();
    assert_eq!(notes(&fx), ["updated:transferaccepted", "updated:transferaccepted"]);
    let fx = call.handle(Input::Net(NetEvent::TransferCompleted { transfer_id: "op".into() }), 1011).unwrap();
    assert_eq!(notes(&fx), ["deleted:terminated"]);
    assert_eq!(call.result_info, Some(ResultInfo::transfer_completed()));
}

#[test]
fn events_of_an_earlier_transfer_change_nothing() {
    let mut call = established();
    call.handle(transfer(None), 10).unwrap();
    call.handle(Input::Net(NetEvent::TransferFailed { transfer_id: "op".into(), failure: Failure::Busy }), 20).unwrap();
    let mut second = transfer(None);
    if let Input::Transfer { operation_id, .. } = &mut second {
        *operation_id = "op2".into();
    }
    call.handle(second, 30).unwrap();
    // The first transfer's late success must not complete the second.
    for late in [
        NetEvent::TransferAccepted { transfer_id: "op".into() },
        NetEvent::TransferCompleted { transfer_id: "op".into() },
        NetEvent::TransferFailed { transfer_id: "op".into(), failure: Failure::Declined },
    ] {
        assert!(call.handle(Input::Net(late), 40).unwrap().is_empty());
    }
    assert_eq!((call.state, call.transfer.as_ref().map(|t| t.operation_id.as_str())), (CallState::Transferring, Some("op2")));
}

#[test]
fn transfer_needs_an_established_call_and_only_one_at_a_time() {
    let (mut incoming_call, _) = incoming(0);
    assert!(matches!(incoming_call.handle(transfer(None), 1), Err(Refusal::WrongState { state: CallState::Incoming, .. })));
    let mut call = established();
    call.handle(transfer(None), 10).unwrap();
    assert_eq!(
        call.handle(transfer(None), 11),
        Err(Refusal::WrongState { action: "transfer", state: CallState::Transferring, needs: "'established'" })
    );
}

#[test]
fn hang_ups_during_a_transfer_end_the_call_once_and_cancel_the_target() {
    let mut call = established();
    call.handle(transfer(None), 10).unwrap();
    let fx = call.handle(Input::Net(NetEvent::RemoteHangUp), 20).unwrap();
    assert_eq!(notes(&fx), ["deleted:terminated"]);
    assert!(fx.contains(&Effect::Net(NetCommand::CancelTransfer { transfer_id: "op".into() })));
    assert!(
        call.handle(Input::Net(NetEvent::TransferCompleted { transfer_id: "op".into() }), 30).unwrap().is_empty(),
        "nothing after deleted"
    );

    let mut call = established();
    call.handle(transfer(None), 10).unwrap();
    let fx = call.handle(Input::HangUp, 20).unwrap();
    assert_eq!(notes(&fx), ["updated:terminating", "deleted:terminated"]);
    assert_eq!(call.result_info, Some(ResultInfo::ended_by_bot()));
}

#[test]
fn a_replaced_consultation_call_ends_with_app_transferred() {
    let mut call = established();
    let fx = call.handle(Input::Net(NetEvent::Replaced { by_call_id: "c1".into() }), 5).unwrap();
    assert_eq!(notes(&fx), ["deleted:terminated"]);
    assert_eq!(call.termination_reason.as_deref(), Some("AppTransferred"));
    assert_eq!(call.result_info, Some(ResultInfo::replaced("c1")));
}

#[test]
fn a_transfer_is_tracked_by_its_operation() {
    let ops = |fx: &[Effect]| -> Vec<Option<OperationStatus>> {
        fx.iter().filter_map(|e| if let Effect::Notify(n) = e { Some(n.operation.as_ref().map(|o| o.status)) } else { None }).collect()
    };
    let mut call = established();
    let fx = call.handle(transfer(None), 10).unwrap();
    assert_eq!(ops(&fx), [Some(OperationStatus::Running)]);
    let fx = call.handle(Input::Net(NetEvent::TransferCompleted { transfer_id: "op".into() }), 20).unwrap();
    assert_eq!(ops(&fx), [Some(OperationStatus::Completed), None, None]);

    let mut call = established();
    call.handle(transfer(None), 10).unwrap();
    let fx = call.handle(Input::Net(NetEvent::TransferFailed { transfer_id: "op".into(), failure: Failure::Declined }), 20).unwrap();
    assert_eq!(ops(&fx), [Some(OperationStatus::Failed)]);
    assert_eq!(call.operations[0].client_context.as_deref(), Some("ctx"));
    assert_eq!(call.operations[0].result_info.as_ref().map(|r| r.subcode), Some(7000));

    let mut call = established();
    call.handle(transfer(None), 10).unwrap();
    call.handle(Input::Net(NetEvent::RemoteHangUp), 20).unwrap();
    assert_eq!(call.operations[0].status, OperationStatus::Failed, "a transfer cut short by the call's end fails");
}

fn any_input() -> impl Strategy<Value = Input> {
    prop_oneof![
        Just(Input::Answer { callback_uri: None, modalities: vec![], media_config: MediaConfig::ServiceHosted }),
        Just(Input::Reject { reason: "busy".into() }),
        Just(Input::Redirect { targets: vec![heidi()] }),
        Just(Input::HangUp),
        Just(Input::KeepAlive),
        Just(Input::Net(NetEvent::Ringing)),
        Just(Input::Net(NetEvent::Connected)),
        Just(Input::Net(NetEvent::Failed(Failure::Busy))),
        Just(Input::Net(NetEvent::RemoteHangUp)),
        Just(Input::Timer(Timer::Setup)),
        Just(Input::Timer(Timer::KeepAlive)),
        Just(Input::Timer(Timer::Transfer)),
        Just(transfer(None)),
        Just(transfer(Some("c9"))),
        // Transfer events of the transfer in progress ("current") or of an earlier one ("stale"); the
        // test fills in the real ids.
        prop::sample::select(vec!["current", "stale"]).prop_map(|t| Input::Net(NetEvent::TransferAccepted { transfer_id: t.into() })),
        prop::sample::select(vec!["current", "stale"]).prop_map(|t| Input::Net(NetEvent::TransferCompleted { transfer_id: t.into() })),
        prop::sample::select(vec!["current", "stale"])
            .prop_map(|t| Input::Net(NetEvent::TransferFailed { transfer_id: t.into(), failure: Failure::Busy })),
        Just(Input::Net(NetEvent::Replaced { by_call_id: "c8".into() })),
        Just(joined("m1")),
        Just(joined("m2")),
        Just(left("m1", None)),
        Just(left("m2", Some(Failure::Busy))),
        Just(group_transfer("m1")),
        Just(group_transfer("m2")),
    ]
}

proptest! {
    // Enough cases that short races of transfer events (a late failure after acceptance, say) come up
    // in every run, not one run in ten.
    #![proptest_config(ProptestConfig::with_cases(2_000))]
    #[test]
    fn random_interleavings_keep_the_invariants(
        kind in 0..4u8,
        steps in proptest::collection::vec((any_input(), 0u64..2_000_000), 0..40),
    ) {
        // Established calls too, so that transfers and their events fill more of the sequence.
        let (mut call, fx) = match kind { 0 => incoming(0), 1 => outgoing(0), 2 => group(0), _ => (established(), Vec::new()) };
        let mut transcript = notes(&fx);
        let mut now = 0;
        // Transfers begun, and outcomes reported (or the call's end cutting one short).
        let (mut started, mut outcomes) = (0usize, 0usize);
        // Transfer ids: each transfer gets a new one; events name the current or an earlier one.
        let mut ids: Vec<String> = Vec::new();
        for (mut input, dt) in steps {
            now += dt;
            let before = call.clone();
            let current = before.transfer.as_ref().map(|t| t.operation_id.clone());
            let real = |placeholder: &mut String| {
                *placeholder = match placeholder.as_str() {
                    "current" => current.clone().unwrap_or_else(|| "none".into()),
                    _ => ids.iter().rev().find(|i| Some(*i) != current.as_ref()).cloned().unwrap_or_else(|| "none".into()),
                };
            };
            match &mut input {
                Input::Transfer { operation_id, .. } => *operation_id = format!("op{}", ids.len()),
                Input::Net(NetEvent::TransferAccepted { transfer_id } | NetEvent::TransferCompleted { transfer_id } | NetEvent::TransferFailed { transfer_id, .. }) => real(transfer_id),
                _ => {}
            }
            if let Input::Transfer { operation_id, .. } = &input {
                ids.push(operation_id.clone());
            }
            let is_transfer = matches!(input, Input::Transfer { .. });
            let at_deadline = matches!(input, Input::Timer(Timer::Transfer));
            let stale = matches!(&input, Input::Net(NetEvent::TransferAccepted { transfer_id } | NetEvent::TransferCompleted { transfer_id } | NetEvent::TransferFailed { transfer_id, .. }) if Some(transfer_id) != current.as_ref());
            match call.handle(input, now) {
                Ok(fx) => {
                    // A transfer ends exactly once: one notification with its operation completed or
                    // failed, or the end of the call while it was in progress; nothing for a transfer
                    // that is over.
                    started += usize::from(is_transfer);
                    let reported = fx
                        .iter()
                        .filter(|e| matches!(e, Effect::Notify(n) if n.operation.as_ref().is_some_and(|o| o.status != OperationStatus::Running)))
                        .count();
                    prop_assert!(reported <= 1, "two transfer outcomes in one step: {fx:?}");
                    // Only the network's word ends a transfer: not its deadline (which asks the network
                    // to stop it), not an event of another transfer.
                    prop_assert!(!(at_deadline && reported > 0), "the deadline decided an outcome: {fx:?}");
                    if stale {
                        prop_assert!(fx.is_empty(), "a stale transfer event changed the call: {fx:?}");
                    }
                    outcomes += reported;
                    if before.state == CallState::Transferring && call.is_terminated() && reported == 0 {
                        outcomes += 1;
                    }
                    let running = call.operations.iter().filter(|o| o.status == OperationStatus::Running).count();
                    prop_assert_eq!(running, usize::from(call.state == CallState::Transferring), "operations {:?} in state {:?}", call.operations, call.state);
                    if before.is_terminated() {
                        prop_assert!(fx.is_empty(), "effects after termination: {fx:?}");
                    }
                    // Every notified state is reached along a documented edge.
                    let mut prev = before.state;
                    for e in &fx {
                        if let Effect::Notify(n) = e
                            && n.state != prev {
                                prop_assert!(prev.may_become(n.state), "{:?} -> {:?}", prev, n.state);
                                prev = n.state;
                            }
                    }
                    prop_assert!(before.state == call.state || before.state.may_become(call.state) || prev == call.state);
                    transcript.extend(notes(&fx));
                }
                Err(_) => prop_assert_eq!(&before, &call, "a refused input changed the call"),
            }
        }
        prop_assert_eq!(started, outcomes + usize::from(call.state == CallState::Transferring), "{:?}", transcript);
        // One final outcome: at most one deleted notification, and it is the last one.
        let deleted = transcript.iter().filter(|n| n.starts_with("deleted")).count();
        prop_assert!(deleted <= 1, "{transcript:?}");
        prop_assert_eq!(deleted == 1, call.is_terminated());
        if deleted == 1 {
            prop_assert!(transcript.last().is_some_and(|n| n.starts_with("deleted")));
        }
    }
}
