//! The sim as a media server: prompts played to the party, keys it presses, recordings it speaks into.

use serde_json::json;
use switchboard_core::call::Input;
use switchboard_core::media::{MediaRequest, RecordSettings, Tone};
use switchboard_engine::recordings::Recordings;
use switchboard_sim::{BEEP_MS, Behaviour, PROMPT_MS};

use super::world;

fn answer(press: Option<&str>, press_after_ms: Option<u64>, speak_ms: Option<u64>) -> Behaviour {
    Behaviour::Answer {
        after_ms: 200,
        hang_up_after_ms: None,
        transfer_delay_ms: None,
        press: press.map(str::to_owned),
        press_after_ms,
        speak_ms,
    }
}

fn media(id: &str, request: MediaRequest) -> Input {
    Input::Media { operation_id: id.into(), client_context: None, request }
}

fn play(prompts: &[&str]) -> MediaRequest {
    MediaRequest::Play { prompts: prompts.iter().map(|p| (*p).to_owned()).collect(), looped: false }
}

fn record(speech_limit_ms: u64, stop_tones: &[Tone]) -> MediaRequest {
    MediaRequest::Record(RecordSettings {
        prompts: vec!["https://cdn/after-the-beep.wav".into()],
        barge_in: false,
        initial_silence_ms: 3_000,
        max_silence_ms: 1_000,
        max_duration_ms: speech_limit_ms,
        beep: true,
        stop_tones: stop_tones.to_vec(),
    })
}

#[tokio::test]
async fn the_caller_presses_one_during_the_greeting() {
    let w = world();
    w.behave("alex", answer(Some("1"), Some(500), None));
    w.answered("c1", "alex").await;
    w.engine.apply("c1", media("sub", MediaRequest::SubscribeToTone)).await.unwrap();
    w.engine.apply("c1", media("greet", play(&["https://cdn/greeting.wav", "https://cdn/menu.wav"]))).await.unwrap();
    w.advance(0).await;
    assert_eq!(w.take(), Vec::<serde_json::Value>::new(), "nothing yet: the greeting plays");
    w.advance(500).await;
    assert_eq!(w.take(), [json!({"call": "c1", "change": "updated", "state": "established", "result": null, "tone": "1:tone1"})]);
    w.advance(2 * PROMPT_MS - 500).await;
    assert_eq!(
        w.take(),
        [
            json!({"call": "c1", "op": "greet", "status": "completed", "reason": "completedSuccessfully", "result": "200/0", "recordedMs": null})
        ]
    );
    let leg = w.sim.legs().into_iter().find(|l| l.party.key() == "alex").unwrap();
    let heard: Vec<(String, u64, bool)> = leg.heard.iter().map(|h| (h.uri.clone(), h.ms, h.complete)).collect();
    assert_eq!(heard, [("https://cdn/greeting.wav".to_owned(), PROMPT_MS, true), ("https://cdn/menu.wav".to_owned(), PROMPT_MS, true)]);
    assert_eq!(leg.pressed, "1");
    // The party presses once per call: the next prompt hears nothing more.
    w.engine.apply("c1", media("again", play(&["https://cdn/menu.wav"]))).await.unwrap();
    w.advance(PROMPT_MS).await;
    assert_eq!(w.take().len(), 1, "only the prompt's end");
}

#[tokio::test]
async fn a_recording_ends_after_the_silence_and_is_kept_as_audio() {
    let w = world();
    let recordings = Recordings::new();
    w.sim.set_recordings(recordings.clone());
    w.behave("alex", answer(None, None, Some(1_500)));
    w.answered("c1", "alex").await;
    w.engine.apply("c1", media("rec", record(60_000, &[]))).await.unwrap();
    // The prompt, the beep, 1.5 s of speech and 1 s of silence.
    w.advance(PROMPT_MS + BEEP_MS + 2_499).await;
    assert_eq!(w.take(), Vec::<serde_json::Value>::new());
    w.advance(1).await;
    assert_eq!(
        w.take(),
        [json!({"call": "c1", "op": "rec", "status": "completed", "reason": "maxSilenceTimeout", "result": "200/0", "recordedMs": 2_500})]
    );
    let wav = recordings.get("rec", w.engine.clock().now_ms()).expect("kept").wav;
    assert_eq!(wav.len(), 44 + 2_500 * 16, "8 kHz, 16-bit: 2.5 s");
    let leg = w.sim.legs().into_iter().find(|l| l.party.key() == "alex").unwrap();
    assert_eq!(leg.heard.iter().map(|h| h.uri.as_str()).collect::<Vec<_>>(), ["https://cdn/after-the-beep.wav", "beep"]);

    // Silent, the recording ends after the initial silence; with a longer speech, at its longest.
    w.behave("alex", answer(None, None, None));
    w.engine.apply("c1", media("silent", record(60_000, &[]))).await.unwrap();
    w.advance(PROMPT_MS + BEEP_MS + 3_000).await;
    assert_eq!(w.take()[0]["reason"], "initialSilenceTimeout");
    w.behave("alex", answer(None, None, Some(10_000)));
    w.engine.apply("c1", media("long", record(4_000, &[]))).await.unwrap();
    w.advance(PROMPT_MS + BEEP_MS + 4_000).await;
    let end = w.take();
    assert_eq!(
        (end[0]["reason"].clone(), end[0]["result"].clone(), end[0]["recordedMs"].clone()),
        (json!("maxRecordDurationReached"), json!("200/8515"), json!(4_000))
    );
}

#[tokio::test]
async fn a_stop_tone_ends_the_recording_and_keys_pressed_on_demand_reach_the_bot() {
    let w = world();
    w.behave("alex", answer(None, None, Some(30_000)));
    w.answered("c1", "alex").await;
    w.engine.apply("c1", media("sub", MediaRequest::SubscribeToTone)).await.unwrap();
    w.engine.apply("c1", media("rec", record(60_000, &[Tone::Pound]))).await.unwrap();
    w.advance(PROMPT_MS + BEEP_MS + 1_000).await;
    let leg = w.sim.legs().into_iter().find(|l| l.party.key() == "alex").unwrap();
    // A key that is not a stop tone is reported and changes nothing; '#' stops the recording.
    w.sim.press_keys(&leg.id, "5#").unwrap();
    w.advance(100).await;
    assert_eq!(
        w.take(),
        [
            json!({"call": "c1", "change": "updated", "state": "established", "result": null, "tone": "1:tone5"}),
            json!({"call": "c1", "change": "updated", "state": "established", "result": null, "tone": "2:pound"}),
            json!({"call": "c1", "op": "rec", "status": "completed", "reason": "stopToneDetected", "result": "200/0", "recordedMs": 1_100}),
        ]
    );
    assert_eq!(
        w.sim.press_keys(&leg.id, "x"),
        Err(switchboard_sim::PressError::BadKeys("keys may be 0-9, *, #, A-D; 'x' is not a key".into()))
    );
    assert_eq!(w.sim.press_keys("leg-none", "1"), Err(switchboard_sim::PressError::NoSuchLeg));
}

#[tokio::test]
async fn cancelling_and_hanging_up_mid_prompt_end_it_once() {
    let w = world();
    w.answered("c1", "alex").await;
    w.engine.apply("c1", media("p1", play(&["https://cdn/long.wav"]))).await.unwrap();
    w.engine.apply("c1", media("p2", play(&["https://cdn/next.wav"]))).await.unwrap();
    w.advance(700).await;
    w.engine.apply("c1", media("cancel", MediaRequest::CancelMediaProcessing)).await.unwrap();
    let ends = w.take();
    assert_eq!(
        ends.iter().map(|e| (e["op"].clone(), e["status"].clone(), e["reason"].clone(), e["result"].clone())).collect::<Vec<_>>(),
        [
            (json!("p1"), json!("failed"), json!("mediaOperationCanceled"), json!("400/8508")),
            (json!("p2"), json!("failed"), json!("mediaOperationCanceled"), json!("400/8508")),
        ]
    );
    let leg = w.sim.legs().into_iter().find(|l| l.party.key() == "alex").unwrap();
    assert_eq!(leg.heard.iter().map(|h| (h.ms, h.complete)).collect::<Vec<_>>(), [(700, false)], "heard 0.7 s of it");
    // The cancelled prompt's timer finds nothing to end.
    w.advance(PROMPT_MS).await;
    assert_eq!(w.take(), Vec::<serde_json::Value>::new());

    // The caller hangs up mid-prompt: the prompt fails, then the call ends; nothing after.
    w.engine.apply("c1", media("p3", play(&["https://cdn/long.wav"]))).await.unwrap();
    w.advance(300).await;
    assert!(w.sim.hang_up_remote("c1"));
    w.advance(0).await;
    let ends = w.take();
    assert_eq!(ends.len(), 2, "{ends:?}");
    assert_eq!(
        (ends[0]["op"].clone(), ends[0]["status"].clone(), ends[0]["result"].clone()),
        (json!("p3"), json!("failed"), json!("400/8508"))
    );
    assert_eq!((ends[1]["change"].clone(), ends[1]["state"].clone()), (json!("deleted"), json!("terminated")));
    w.advance(PROMPT_MS).await;
    assert_eq!(w.take(), Vec::<serde_json::Value>::new());
}

#[tokio::test]
async fn tones_the_bot_sends_reach_the_party() {
    let w = world();
    w.answered("c1", "alex").await;
    let send = MediaRequest::SendDtmfTones { tones: vec![Tone::Tone1, Tone::Tone2, Tone::Pound], delay_between_ms: 200 };
    w.engine.apply("c1", media("dtmf", send)).await.unwrap();
    w.advance(899).await;
    assert_eq!(w.take(), Vec::<serde_json::Value>::new());
    w.advance(1).await;
    assert_eq!(
        w.take(),
        [json!({"call": "c1", "op": "dtmf", "status": "completed", "reason": "completedSuccessfully", "result": null, "recordedMs": null})]
    );
    let leg = w.sim.legs().into_iter().find(|l| l.party.key() == "alex").unwrap();
    assert_eq!(leg.received, "12#");
}

#[tokio::test]
async fn a_cancelled_prompts_timer_never_ends_the_next_one() {
    let w = world();
    w.answered("c1", "alex").await;
    w.engine.apply("c1", media("a", play(&["https://cdn/a.wav"]))).await.unwrap();
    w.advance(1_000).await;
    w.engine.apply("c1", media("cancel", MediaRequest::CancelMediaProcessing)).await.unwrap();
    w.engine.apply("c1", media("b", play(&["https://cdn/b.wav"]))).await.unwrap();
    w.take();
    // A's timer falls due at 2 s; B started at 1 s and plays until 3 s.
    w.advance(1_999).await;
    assert_eq!(w.take(), Vec::<serde_json::Value>::new(), "B still plays");
    w.advance(1).await;
    assert_eq!(w.take()[0]["op"], "b");
    let leg = w.sim.legs().into_iter().find(|l| l.party.key() == "alex").unwrap();
    assert_eq!(leg.heard.iter().map(|h| (h.ms, h.complete)).collect::<Vec<_>>(), [(1_000, false), (PROMPT_MS, true)]);
}
