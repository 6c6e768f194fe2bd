//! Tests of the call state machine: a few exact transcripts, then properties over random input
//! sequences (one final outcome, nothing after termination, only documented edges).

use proptest::prelude::*;

use super::*;
use crate::media::{RecordSettings, Tone};

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
            // An operation's own notification names the operation, not the call's state.
            Effect::Notify(n) if n.on_operation => n.operation.as_ref().map(|o| format!("op:{}:{:?}", o.id, o.status).to_lowercase()),
            Effect::Notify(n) if n.tone.is_some() => n.tone.as_ref().map(|t| format!("tone:{}:{}", t.sequence_id, t.tone.as_str())),
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

/// The peer holds the call: `mediaState` inactive, once; taken off hold, active again. Not while
/// establishing, and not in a group call (its media goes on with the others).
#[test]
fn a_peer_holding_the_call_turns_its_audio_inactive_until_it_resumes() {
    let hold = |held| Input::Net(NetEvent::RemoteHold { held });
    let media_states = |fx: &[Effect]| -> Vec<Option<MediaState>> {
        fx.iter().filter_map(|e| if let Effect::Notify(n) = e { Some(n.media_state) } else { None }).collect()
    };
    let (mut call, _) = outgoing(0);
    assert!(call.handle(hold(true), 1).unwrap().is_empty(), "not established yet");
    call.handle(Input::Net(NetEvent::Connected), 2).unwrap();
    let fx = call.handle(hold(true), 3).unwrap();
    assert_eq!((notes(&fx), media_states(&fx)), (vec!["updated:established".to_owned()], vec![Some(MediaState::Inactive)]));
    assert_eq!(call.media_state, MediaState::Inactive);
    assert!(call.handle(hold(true), 4).unwrap().is_empty(), "held again (sendonly, then inactive): no news");
    let fx = call.handle(hold(false), 5).unwrap();
    assert_eq!(media_states(&fx), [Some(MediaState::Active)]);
    assert_eq!(call.media_state, MediaState::Active);
    let (mut call, _) = group(0);
    call.handle(Input::Net(NetEvent::MemberJoined { participant_id: "m1".into() }), 1).unwrap();
    assert!(call.handle(hold(true), 2).unwrap().is_empty(), "a group call");
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
        // Media actions (ids filled in by the test) and the network's media events.
        Just(media(MediaRequest::Play { prompts: vec!["https://p/1.wav".into()], looped: false })),
        Just(media(MediaRequest::Record(record_settings()))),
        Just(media(MediaRequest::SendDtmfTones { tones: vec![Tone::Tone1], delay_between_ms: 0 })),
        Just(media(MediaRequest::SubscribeToTone)),
        Just(media(MediaRequest::CancelMediaProcessing)),
        Just(media(MediaRequest::Mute)),
        prop::sample::select(vec!["head", "other"]).prop_map(|t| Input::Net(NetEvent::MediaCompleted {
            operation_id: t.into(),
            reason: CompletionReason::CompletedSuccessfully,
            recording: None
        })),
        Just(Input::Net(NetEvent::ToneReceived { tone: Tone::Pound })),
        Just(Input::Net(NetEvent::RemoteHold { held: true })),
        Just(Input::Net(NetEvent::RemoteHold { held: false })),
        // Invitations (Alex as m3, into peer-to-peer and group calls alike) and participant actions.
        Just(invite("m3", alex(), None)),
        Just(joined("m3")),
        Just(left("m3", Some(Failure::Declined))),
        Just(participant("m1", ParticipantAction::Remove)),
        Just(participant("m3", ParticipantAction::Mute)),
        Just(participant("m2", ParticipantAction::StartHoldMusic { prompt: None })),
        Just(participant("m2", ParticipantAction::StopHoldMusic)),
    ]
}

fn invite(pid: &str, party: Party, replaces: Option<&str>) -> Input {
    let invitee = Invitee { participant_id: pid.into(), party, replaces_call_id: replaces.map(str::to_owned) };
    Input::Invite { operation_id: "media".into(), client_context: None, invitees: vec![invitee], ring_timeout_ms: 1_000 }
}

fn participant(pid: &str, action: ParticipantAction) -> Input {
    Input::Participant { operation_id: "media".into(), client_context: None, participant_id: pid.into(), action }
}

fn media(request: MediaRequest) -> Input {
    Input::Media { operation_id: "media".into(), client_context: None, request }
}

fn record_settings() -> RecordSettings {
    RecordSettings {
        prompts: vec![],
        barge_in: true,
        initial_silence_ms: 5_000,
        max_silence_ms: 5_000,
        max_duration_ms: 60_000,
        beep: true,
        stop_tones: vec![Tone::Pound],
    }
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
        // Media operations begun (running once taken), and their ends reported.
        let (mut media_started, mut media_ended) = (0usize, 0usize);
        let mut media_ids = 0usize;
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
                Input::Media { operation_id, .. } | Input::Invite { operation_id, .. } | Input::Participant { operation_id, .. } => {
                    media_ids += 1;
                    *operation_id = format!("op-m{media_ids}");
                }
                Input::Net(NetEvent::MediaCompleted { operation_id, .. }) => {
                    *operation_id = match operation_id.as_str() {
                        "head" => before.media.queue.first().map(|j| j.operation_id.clone()).unwrap_or_default(),
                        _ => before.operations.iter().rev().find(|o| matches!(o.kind, OperationKind::SendDtmfTones | OperationKind::StartHoldMusic | OperationKind::StopHoldMusic)).map(|o| o.id.clone()).unwrap_or_default(),
                    }
                }
                _ => {}
            }
            let media_id = match &input {
                Input::Media { operation_id, .. } | Input::Invite { operation_id, .. } | Input::Participant { operation_id, .. } => Some(operation_id.clone()),
                _ => None,
            };
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
                        .filter(|e| matches!(e, Effect::Notify(n) if n.operation.as_ref().is_some_and(|o| o.status != OperationStatus::Running && o.kind == OperationKind::Transfer)))
                        .count();
                    // A media operation ends exactly once: one notification on it (never a running
                    // one), or none for one that completed in its response.
                    let media_reported: Vec<&Operation> = fx
                        .iter()
                        .filter_map(|e| match e { Effect::Notify(n) if n.on_operation => n.operation.as_ref(), _ => None })
                        .collect();
                    for op in &media_reported {
                        prop_assert!(op.status != OperationStatus::Running && op.kind != OperationKind::Transfer, "{op:?}");
                        let was = before.operations.iter().chain(call.operations.iter()).find(|o| o.id == op.id);
                        prop_assert!(was.is_some(), "an unknown operation ended: {op:?}");
                        prop_assert!(before.operations.iter().any(|o| o.id == op.id && o.status == OperationStatus::Running) || media_id.as_deref() == Some(op.id.as_str()), "an operation ended twice: {op:?}");
                    }
                    media_ended += media_reported.len();
                    if let Some(id) = &media_id
                        && (call.operations.iter().any(|o| &o.id == id && o.status == OperationStatus::Running) || media_reported.iter().any(|o| &o.id == id)) {
                            media_started += 1;
                        }
                    // Exactly the queue's head is being played; nothing plays once the call has ended.
                    let queued_running = call.media.queue.iter().all(|j| call.operations.iter().any(|o| o.id == j.operation_id && o.status == OperationStatus::Running));
                    prop_assert!(queued_running, "a queued job whose operation is over: {:?} {:?}", call.media.queue, call.operations);
                    if call.is_terminated() {
                        prop_assert!(call.media.queue.is_empty());
                        prop_assert!(call.operations.iter().all(|o| o.status != OperationStatus::Running), "{:?}", call.operations);
                    }
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
                    let running = call.operations.iter().filter(|o| o.status == OperationStatus::Running && o.kind == OperationKind::Transfer).count();
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
        let media_running = call.operations.iter().filter(|o| o.status == OperationStatus::Running && o.kind != OperationKind::Transfer).count();
        prop_assert_eq!(media_started, media_ended + media_running, "{:?}", transcript);
        // One final outcome: at most one deleted notification, and it is the last one.
        let deleted = transcript.iter().filter(|n| n.starts_with("deleted")).count();
        prop_assert!(deleted <= 1, "{transcript:?}");
        prop_assert_eq!(deleted == 1, call.is_terminated());
        if deleted == 1 {
            prop_assert!(transcript.last().is_some_and(|n| n.starts_with("deleted")));
        }
    }
}

fn play(id: &str) -> Input {
    Input::Media {
        operation_id: id.into(),
        client_context: Some(format!("ctx-{id}")),
        request: MediaRequest::Play { prompts: vec![format!("https://p/{id}.wav")], looped: false },
    }
}

fn op<'a>(call: &'a Call, id: &str) -> &'a Operation {
    call.operations.iter().find(|o| o.id == id).expect("operation")
}

fn plays(fx: &[Effect]) -> Vec<String> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Net(NetCommand::PlayMedia { job }) => Some(format!("play:{}", job.operation_id)),
            Effect::Net(NetCommand::StopMedia { operation_id }) => Some(format!("stop:{operation_id}")),
            _ => None,
        })
        .collect()
}

#[test]
fn prompts_queue_and_tones_are_numbered() {
    let mut call = established();
    let fx = call.handle(play("m1"), 10).unwrap();
    assert_eq!((notes(&fx), plays(&fx)), (vec![], vec!["play:m1".to_owned()]));
    assert_eq!(op(&call, "m1").status, OperationStatus::Running);
    assert_eq!(op(&call, "m1").kind, OperationKind::PlayPrompt);
    // The second waits for the first.
    let fx = call.handle(play("m2"), 20).unwrap();
    assert!(fx.is_empty(), "{fx:?}");
    let done = |id: &str| {
        Input::Net(NetEvent::MediaCompleted { operation_id: id.into(), reason: CompletionReason::CompletedSuccessfully, recording: None })
    };
    // A completion of the one waiting is not believed.
    assert!(call.handle(done("m2"), 25).unwrap().is_empty());
    let fx = call.handle(done("m1"), 30).unwrap();
    assert_eq!((notes(&fx), plays(&fx)), (vec!["op:m1:completed".to_owned()], vec!["play:m2".to_owned()]));
    assert_eq!(op(&call, "m1").completion_reason, Some(CompletionReason::CompletedSuccessfully));
    assert_eq!(op(&call, "m1").result_info.as_ref().map(|r| r.code), Some(200));
    // A repeat of it changes nothing.
    assert!(call.handle(done("m1"), 31).unwrap().is_empty());

    // Keys before the subscription are not reported; after it, numbered from 1.
    let key = |t| Input::Net(NetEvent::ToneReceived { tone: t });
    assert!(call.handle(key(Tone::Tone5), 40).unwrap().is_empty());
    let sub = Input::Media { operation_id: "s".into(), client_context: None, request: MediaRequest::SubscribeToTone };
    assert!(call.handle(sub, 41).unwrap().is_empty());
    assert_eq!(op(&call, "s").status, OperationStatus::Completed, "completed in its response: no notification follows");
    assert_eq!(notes(&call.handle(key(Tone::Tone1), 50).unwrap()), ["tone:1:tone1"]);
    assert_eq!(notes(&call.handle(key(Tone::Pound), 60).unwrap()), ["tone:2:pound"]);

    // Cancelling stops the one playing and reports it; the tone subscription stays.
    let cancel = Input::Media { operation_id: "c".into(), client_context: None, request: MediaRequest::CancelMediaProcessing };
    let fx = call.handle(cancel, 70).unwrap();
    assert_eq!((notes(&fx), plays(&fx)), (vec!["op:m2:failed".to_owned()], vec!["stop:m2".to_owned()]));
    let m2 = op(&call, "m2");
    assert_eq!(
        (m2.completion_reason, m2.result_info.as_ref().map(|r| (r.code, r.subcode))),
        (Some(CompletionReason::MediaOperationCanceled), Some((400, 8508)))
    );
    assert_eq!(op(&call, "c").status, OperationStatus::Completed);
    assert!(call.media.queue.is_empty());
    assert_eq!(notes(&call.handle(key(Tone::Star), 80).unwrap()), ["tone:3:star"]);
}

#[test]
fn a_hang_up_mid_prompt_ends_the_prompt_once_then_the_call() {
    let mut call = established();
    call.handle(play("m1"), 10).unwrap();
    call.handle(play("m2"), 11).unwrap();
    let fx = call.handle(Input::Net(NetEvent::RemoteHangUp), 20).unwrap();
    assert_eq!(notes(&fx), ["op:m1:failed", "op:m2:failed", "deleted:terminated"]);
    assert_eq!(plays(&fx), ["stop:m1"], "the network stops what it plays");
    assert_eq!(op(&call, "m1").result_info.as_ref().map(|r| (r.code, r.subcode)), Some((400, 8508)), "cancelled with the call");
    // The network's late word on it changes nothing.
    let late = Input::Net(NetEvent::MediaCompleted {
        operation_id: "m1".into(),
        reason: CompletionReason::CompletedSuccessfully,
        recording: None,
    });
    assert!(call.handle(late, 30).unwrap().is_empty());
}

#[test]
fn media_actions_are_refused_outside_an_established_call_and_beyond_the_queue() {
    let (mut call, _) = incoming(0);
    let err = call.handle(play("m1"), 1).unwrap_err();
    assert_eq!(err.to_string(), "cannot play a prompt to a call in state 'incoming'; play a prompt to needs state 'established'");
    let mut call = established();
    for i in 0..crate::media::MEDIA_QUEUE_MAX {
        call.handle(play(&format!("m{i}")), 10).unwrap();
    }
    let before = call.clone();
    assert_eq!(call.handle(play("one-too-many"), 11), Err(Refusal::MediaQueueFull));
    assert_eq!(call, before);
    // Running operations are never forgotten, however many there are.
    assert_eq!(call.operations.iter().filter(|o| o.status == OperationStatus::Running).count(), crate::media::MEDIA_QUEUE_MAX);
}

#[test]
fn mute_is_a_roster_change_completed_at_once_in_group_calls_only() {
    let mute = |id: &str, request| Input::Media { operation_id: id.into(), client_context: None, request };
    let mut p2p = established();
    assert_eq!(p2p.handle(mute("x", MediaRequest::Mute), 10), Err(Refusal::GroupCallOnly("mute")));
    let (mut call, _) = group(0);
    call.handle(joined("m1"), 1).unwrap();
    let fx = call.handle(mute("a", MediaRequest::Mute), 10).unwrap();
    assert!(matches!(fx.as_slice(), [Effect::Notify(n)] if n.roster));
    assert!(call.media.muted);
    // Muting a muted bot changes nothing to tell.
    assert!(call.handle(mute("b", MediaRequest::Mute), 11).unwrap().is_empty());
    assert_eq!(op(&call, "b").status, OperationStatus::Completed);
    call.handle(mute("c", MediaRequest::Unmute), 12).unwrap();
    assert!(!call.media.muted);
}

#[test]
fn a_barge_in_recording_cancels_the_queue_and_starts_now() {
    let mut call = established();
    call.handle(play("m1"), 10).unwrap();
    call.handle(play("m2"), 11).unwrap();
    let mut settings = record_settings();
    settings.barge_in = true;
    let fx =
        call.handle(Input::Media { operation_id: "r".into(), client_context: None, request: MediaRequest::Record(settings) }, 12).unwrap();
    assert_eq!(notes(&fx), ["op:m1:failed", "op:m2:failed"]);
    assert_eq!(plays(&fx), ["stop:m1", "play:r"]);
    assert_eq!(call.media.queue.len(), 1);
    // Without barge-in it waits its turn.
    let waits = RecordSettings { barge_in: false, ..record_settings() };
    let fx =
        call.handle(Input::Media { operation_id: "r2".into(), client_context: None, request: MediaRequest::Record(waits) }, 13).unwrap();
    assert!(fx.is_empty());
}

fn invitation_ends(fx: &[Effect]) -> Vec<(String, OperationStatus, Option<(i32, i32)>)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Notify(n) if n.on_operation => {
                n.operation.as_ref().map(|o| (o.id.clone(), o.status, o.result_info.as_ref().map(|r| (r.code, r.subcode))))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn an_invite_turns_a_peer_to_peer_call_into_a_group_call() {
    let mut call = established();
    let fx = call.handle(invite("m3", alex(), None), 10).unwrap();
    assert!(call.group);
    assert_eq!(
        call.members.iter().map(|m| (m.participant_id.as_str(), m.joined)).collect::<Vec<_>>(),
        [("q", true), ("m3", false)],
        "the peer is the first member"
    );
    assert!(fx.iter().any(|e| matches!(e, Effect::Net(NetCommand::Invite { invitee, .. }) if invitee.participant_id == "m3")));
    assert!(fx.contains(&Effect::Timer { timer: Timer::Setup, at: 1_010 }));
    assert_eq!(call.operations.last().map(|o| (o.kind, o.status)), Some((OperationKind::Invite, OperationStatus::Running)));
    let fx = call.handle(joined("m3"), 20).unwrap();
    assert_eq!(notes(&fx), ["updated:established", "op:media:completed"], "the roster, then the invitation");
    assert!(matches!(&fx[0], Effect::Notify(n) if n.roster));
    // Two at once, or someone already in it, are refused; in a group call two at once are fine.
    let mut p2p = established();
    let two = Input::Invite {
        operation_id: "x".into(),
        client_context: None,
        invitees: ["+14255550001", "+14255550002"]
            .map(|n| Invitee { participant_id: n.into(), party: Party::Phone { number: n.into() }, replaces_call_id: None })
            .to_vec(),
        ring_timeout_ms: 1_000,
    };
    assert_eq!(p2p.handle(two.clone(), 10), Err(Refusal::GroupCallOnly("invite several participants at once into")));
    assert_eq!(
        p2p.handle(invite("h", heidi(), None), 10),
        Err(Refusal::Conflict("participants: 'heidi' is in this call already".to_owned()))
    );
    assert!(call.handle(two, 30).is_ok());
}

#[test]
fn an_invitee_that_cannot_be_reached_fails_its_invitation_and_the_call_goes_on() {
    let mut call = established();
    call.handle(invite("m3", alex(), None), 10).unwrap();
    let fx = call.handle(left("m3", Some(Failure::Busy)), 20).unwrap();
    assert_eq!(invitation_ends(&fx), [("media".to_owned(), OperationStatus::Failed, Some((486, 0)))]);
    assert_eq!(call.state, CallState::Established);
    // Nobody answers: the ring timeout fails it and stops the ringing.
    call.handle(invite("m4", alex(), None), 30).unwrap();
    let fx = call.handle(Input::Timer(Timer::Setup), 1_030).unwrap();
    assert_eq!(invitation_ends(&fx), [("media".to_owned(), OperationStatus::Failed, Some((408, 10057)))]);
    assert!(fx.contains(&Effect::Net(NetCommand::DropMember { participant_id: "m4".into() })));
    assert_eq!(call.members.len(), 1);
}

#[test]
fn participants_are_removed_muted_and_held_one_at_a_time() {
    let (mut call, _) = group(0);
    call.handle(joined("m1"), 1).unwrap();
    call.handle(joined("m2"), 2).unwrap();
    let fx = call.handle(participant("m1", ParticipantAction::Mute), 3).unwrap();
    assert!(matches!(fx.as_slice(), [Effect::Notify(n)] if n.roster));
    assert!(call.members[0].muted);
    let fx = call.handle(participant("m1", ParticipantAction::StartHoldMusic { prompt: Some("https://cdn/hold.wav".into()) }), 4).unwrap();
    assert!(matches!(fx.as_slice(), [Effect::Net(NetCommand::HoldMusic { start: true, .. })]));
    assert_eq!(
        call.handle(participant("m2", ParticipantAction::StartHoldMusic { prompt: None }), 5),
        Err(Refusal::Conflict("participant 'm1' is on hold already; only one participant can be on hold at a time".into()))
    );
    assert_eq!(
        call.handle(participant("m2", ParticipantAction::StopHoldMusic), 5),
        Err(Refusal::Conflict("participant 'm2' is not on hold".into()))
    );
    assert_eq!(call.handle(participant("zz", ParticipantAction::Mute), 5), Err(Refusal::NoSuchParticipant("zz".into())));
    // Removing the held one takes it off hold; removing the last one ends the call.
    let fx = call.handle(participant("m1", ParticipantAction::Remove), 6).unwrap();
    assert!(fx.contains(&Effect::Net(NetCommand::DropMember { participant_id: "m1".into() })));
    assert_eq!(call.media.held, None);
    let fx = call.handle(participant("m2", ParticipantAction::Remove), 7).unwrap();
    assert_eq!(notes(&fx).last().map(String::as_str), Some("deleted:terminated"));
}

#[test]
fn each_invitation_rings_for_its_own_timeout() {
    let mut call = established();
    call.handle(invite("m3", alex(), None), 0).unwrap();
    let later = Input::Invite {
        operation_id: "later".into(),
        client_context: None,
        invitees: vec![Invitee {
            participant_id: "m4".into(),
            party: Party::Phone { number: "+14255550001".into() },
            replaces_call_id: None,
        }],
        ring_timeout_ms: 1_000,
    };
    call.handle(later, 900).unwrap();
    // At 1 s the first stops ringing; the second rings on until 1.9 s.
    let fx = call.handle(Input::Timer(Timer::Setup), 1_000).unwrap();
    assert_eq!(invitation_ends(&fx), [("media".to_owned(), OperationStatus::Failed, Some((408, 10057)))]);
    assert!(fx.contains(&Effect::Timer { timer: Timer::Setup, at: 1_900 }));
    assert!(call.members.iter().any(|m| m.participant_id == "m4"));
    let fx = call.handle(Input::Timer(Timer::Setup), 1_900).unwrap();
    assert_eq!(invitation_ends(&fx), [("later".to_owned(), OperationStatus::Failed, Some((408, 10057)))]);
}
