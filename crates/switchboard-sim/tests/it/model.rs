//! Random stories on the real engine and sim, in virtual time: calls come in and go out, transfers
//! (blind, consultative, to another bot) race their deadlines, the parties' answers and hang-ups from
//! either side. After every step the world must agree with itself and with the engine (no established
//! call without its remote party, no leg paired with a missing one), and by the end every transfer
//! that began has ended exactly once.

use proptest::prelude::*;

use super::*;

#[derive(Clone, Debug)]
enum Step {
    /// A party calls the bot, which answers.
    Inbound(&'static str),
    /// The bot calls a party.
    Outbound(&'static str),
    /// Blind transfer of call `n` (modulo the calls made) to a party or the other bot.
    Blind(usize, &'static str, u64),
    /// Consultative transfer of call `n`, replacing call `m` (its remote party is the target).
    Consultative(usize, usize, u64),
    /// The bot hangs up call `n`.
    HangUp(usize),
    /// The far end of call `n` hangs up.
    RemoteHangUp(usize),
    /// The other bot answers or rejects the calls offered to it.
    OtherBot(bool),
    /// Alex takes this long to act on a consultative transfer.
    AlexDelay(u64),
    Advance(u64),
}

fn step() -> impl Strategy<Value = Step> {
    let party = prop::sample::select(vec!["alex", "heidi", "sam", "dana", OTHER_BOT]);
    let caller = prop::sample::select(vec!["alex", "heidi", "dana"]);
    let timeout = prop::sample::select(vec![100u64, 199, 200, 250, 300, 1_000]);
    prop_oneof![
        caller.clone().prop_map(Step::Inbound),
        caller.prop_map(Step::Outbound),
        (0..6usize, party, timeout.clone()).prop_map(|(n, p, t)| Step::Blind(n, p, t)),
        (0..6usize, 0..6usize, timeout).prop_map(|(n, m, t)| Step::Consultative(n, m, t)),
        (0..6usize).prop_map(Step::HangUp),
        (0..6usize).prop_map(Step::RemoteHangUp),
        any::<bool>().prop_map(Step::OtherBot),
        prop::sample::select(vec![50u64, 150, 200, 300]).prop_map(Step::AlexDelay),
        prop::sample::select(vec![0u64, 1, 49, 50, 99, 100, 150, 199, 200, 250, 300, 1_000]).prop_map(Step::Advance),
    ]
}

async fn story(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let w = world();
    let mut calls: Vec<String> = Vec::new();
    let mut begun: Vec<String> = Vec::new();
    let pick = |calls: &[String], n: usize| (!calls.is_empty()).then(|| calls[n % calls.len()].clone());
    for (i, step) in steps.into_iter().enumerate() {
        match step {
            Step::Inbound(from) => {
                let id = format!("in{i}");
                w.answered_call(&id, from).await;
                calls.push(id);
            }
            Step::Outbound(to) => {
                let id = format!("out{i}");
                w.place(&id, to).await;
                calls.push(id);
            }
            Step::Blind(n, to, timeout) => {
                let Some(id) = pick(&calls, n) else { continue };
                let target =
                    if to == OTHER_BOT { Party::Application { id: OTHER_BOT.into(), display_name: "Other Bot".into() } } else { user(to) };
                begun.extend(w.try_transfer(&id, target, None, timeout).await);
            }
            Step::Consultative(n, m, timeout) => {
                let (Some(a), Some(b)) = (pick(&calls, n), pick(&calls, m)) else { continue };
                // The API checks the consultation call before it asks; the race is what happens after.
                let Some(other) = w.engine.get(&b).await.filter(|c| c.state == CallState::Established && a != b && !c.group) else {
                    continue;
                };
                begun.extend(w.try_transfer(&a, other.remote().clone(), Some(&b), timeout).await);
            }
            Step::HangUp(n) => {
                if let Some(id) = pick(&calls, n) {
                    let _ = w.engine.apply(&id, Input::HangUp).await;
                }
            }
            Step::RemoteHangUp(n) => {
                if let Some(id) = pick(&calls, n) {
                    w.sim.hang_up_remote(&id);
                }
            }
            Step::OtherBot(answers) => {
                for call in w.engine.live_calls().await.into_iter().filter(|c| c.transferor.is_some() && c.state == CallState::Incoming) {
                    let input = if answers { answer() } else { Input::Reject { reason: "busy".into() } };
                    let _ = w.engine.apply(&call.id, input).await;
                }
            }
            Step::AlexDelay(ms) => w.behave(
                "alex",
                Behaviour::Answer {
                    after_ms: 200,
                    hang_up_after_ms: None,
                    transfer_delay_ms: Some(ms),
                    press: None,
                    press_after_ms: None,
                    speak_ms: None,
                },
            ),
            Step::Advance(ms) => w.advance(ms).await,
        }
        w.advance(0).await;
        w.assert_consistent().await;
        let outcomes = w.outcomes.lock().unwrap().clone();
        for id in &outcomes {
            prop_assert_eq!(outcomes.iter().filter(|o| *o == id).count(), 1, "transfer {} ended twice: {:?}", id, outcomes);
        }
    }
    // Long enough for every deadline: each transfer that began has ended, once.
    w.advance(120_000).await;
    w.assert_consistent().await;
    let mut outcomes = w.outcomes.lock().unwrap().clone();
    outcomes.sort();
    begun.sort();
    prop_assert_eq!(outcomes, begun);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]
    #[test]
    fn every_transfer_ends_once_and_the_world_stays_whole(steps in prop::collection::vec(step(), 1..30)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(story(steps))?;
    }
}
