//! The IVR around transfer, over HTTP on virtual time: prompts, keys, recordings, mute, refusals.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::*;
use crate::transfer::{answered, completed_blind, expect_transferred, transfer};

const GREETING: &str = "https://cdn.contoso.com/greeting.wav";

/// A media action: its status, its `Location` header and its body.
async fn act(server: &Server, token: &str, id: &str, action: &str, body: Value) -> (u16, String, Value) {
    let resp = client()
        .post(server.url(&format!("/v1.0/communications/calls/{id}/{action}")))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let location = resp.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    (status, location, resp.json().await.unwrap_or(Value::Null))
}

fn prompt(uri: &str) -> Value {
    json!({"@odata.type": "#microsoft.graph.mediaPrompt", "mediaInfo": {"@odata.type": "#microsoft.graph.mediaInfo", "uri": uri, "resourceId": "1D6DE2D4-CD51-4309-8DAA-70768651088E"}})
}

async fn behave(server: &Server, who: &str, behaviour: Value) {
    let (status, body) = server.sim(Method::PUT, &format!("/parties/{who}/behaviour"), Some(behaviour)).await;
    assert_eq!(status, 200, "{body}");
}

/// An operation's `deleted` notification, as the bot receives it (`{callId}` and `{opId}` redacted).
fn operation_note(data: Value) -> Value {
    let mut data = data;
    data["@odata.id"] = json!("/communications/calls/{callId}/operations/{opId}");
    json!({
        "@odata.type": "#microsoft.graph.commsNotification",
        "changeType": "deleted",
        "resourceUrl": "/communications/calls/{callId}/operations/{opId}",
        "resourceData": data
    })
}

fn redact_op(v: Value, call: &str, op: &str) -> Value {
    replace_in_strings(redact(v, call), op, "{opId}")
}

/// The world's leg of a party.
async fn leg_of(server: &Server, party: &str) -> Value {
    let (_, world) = server.sim(Method::GET, "/world", None).await;
    world["legs"].as_array().unwrap().iter().find(|l| l["party"]["id"] == party).cloned().unwrap_or(Value::Null)
}

/// The README's IVR: answer, greet, listen for a key; the caller presses 1; the bot transfers them to
/// Heidi, blind.
#[tokio::test]
async fn press_one_for_heidi() {
    let mut bot = Bot::start().await;
    let server = virtual_server(&bot, &[]).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    behave(&server, ALEX, json!({"kind": "answer", "press": "1", "press_after_ms": 500})).await;
    let id = answered(&server, &mut bot, &token, ALEX, DEMO_BOT).await;

    let (status, location, sub) = act(&server, &token, &id, "subscribeToTone", json!({"clientContext": "tones"})).await;
    assert_eq!(status, 200, "{sub}");
    let sub_id = sub["id"].as_str().unwrap().to_owned();
    assert_eq!(location, server.url(&format!("/v1.0/communications/calls/{id}/operations/{sub_id}")));
    assert_eq!(
        redact_op(sub, &id, &sub_id),
        json!({"@odata.type": "#microsoft.graph.subscribeToToneOperation", "id": "{opId}", "clientContext": "tones", "status": "completed", "resultInfo": null})
    );

    let (status, location, play) =
        act(&server, &token, &id, "playPrompt", json!({"clientContext": "greeting", "prompts": [prompt(GREETING)]})).await;
    assert_eq!(status, 200, "{play}");
    let op = play["id"].as_str().unwrap().to_owned();
    assert_eq!(location, server.url(&format!("/v1.0/communications/calls/{id}/operations/{op}")));
    let running = json!({"@odata.type": "#microsoft.graph.playPromptOperation", "id": "{opId}", "clientContext": "greeting", "status": "running", "resultInfo": null, "completionReason": null});
    assert_eq!(redact_op(play, &id, &op), running);

    // Half a second into the greeting, Alex presses 1.
    server.advance(500).await;
    let mut tone = state_note("updated", "established");
    tone["resourceData"]["toneInfo"] = json!({"@odata.type": "#microsoft.graph.toneInfo", "sequenceId": 1, "tone": "tone1"});
    assert_eq!(redact(bot.next().await.1, &id), tone);
    // The greeting plays to its end.
    server.advance(1_500).await;
    let done = operation_note(json!({
        "@odata.type": "#microsoft.graph.playPromptOperation", "id": "{opId}", "clientContext": "greeting", "status": "completed",
        "resultInfo": {"@odata.type": "#microsoft.graph.resultInfo", "code": 200, "subcode": 0, "message": "Action completed successfully."},
        "completionReason": "completedSuccessfully"
    }));
    assert_eq!(redact_op(bot.next().await.1, &id, &op), done);
    // GET reads the operation back as it ended.
    let (status, got) = server.graph(Method::GET, &format!("/v1.0/communications/calls/{id}/operations/{op}"), &token, None).await;
    assert_eq!(status, 200);
    let mut expected = done["resourceData"].clone();
    expected.as_object_mut().unwrap().remove("@odata.id");
    expected["@odata.context"] = json!(server.url("/v1.0/$metadata#communications/calls/operations/$entity"));
    assert_eq!(redact_op(got, &id, &op), expected);

    let leg = leg_of(&server, ALEX).await;
    assert_eq!(leg["heard"], json!([{"uri": GREETING, "startedAt": leg["heard"][0]["startedAt"], "ms": 2000, "complete": true}]));
    // And in the call's story.
    let (_, story) = server.sim(Method::GET, &format!("/calls/{id}/history"), None).await;
    let heard = format!("{ALEX} heard {GREETING} for 2000 ms (to its end)");
    assert!(story["entries"].as_array().unwrap().iter().any(|e| e["kind"] == "network" && e["event"] == json!(heard)), "{story:#}");
    assert_eq!(leg["pressed"], "1");

    // "1" is Heidi: a blind transfer, which completes as any other.
    let body = json!({"transferTarget": {"endpointType": "default", "identity": {"user": {"id": HEIDI, "displayName": "Heidi Steen"}}}});
    let (status, _) = transfer(&server, &token, &id, body).await;
    assert_eq!(status, 202);
    server.advance(200).await;
    expect_transferred(&mut bot, &id, completed_blind()).await;
}

#[tokio::test]
async fn a_reply_is_recorded_and_fetched_with_its_token() {
    let mut bot = Bot::start().await;
    let server = virtual_server(&bot, &[]).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    behave(&server, ALEX, json!({"kind": "answer", "speak_ms": 1500})).await;
    let id = answered(&server, &mut bot, &token, ALEX, DEMO_BOT).await;

    let body = json!({"clientContext": "rec", "prompts": [prompt(GREETING)], "bargeInAllowed": true, "initialSilenceTimeoutInSeconds": 5,
        "maxSilenceTimeoutInSeconds": 1, "maxRecordDurationInSeconds": 10, "playBeep": true, "stopTones": ["#", "1", "*"]});
    let (status, _, rec) = act(&server, &token, &id, "recordResponse", body).await;
    assert_eq!(status, 200, "{rec}");
    let op = rec["id"].as_str().unwrap().to_owned();
    assert_eq!(
        redact_op(rec, &id, &op),
        json!({"@odata.type": "#microsoft.graph.recordOperation", "id": "{opId}", "clientContext": "rec", "status": "running",
            "resultInfo": null, "completionReason": null, "recordingLocation": null, "recordingAccessToken": null})
    );
    // The greeting (2 s), the beep (0.5 s), 1.5 s of Alex, then 1 s of silence ends it.
    server.advance(5_000).await;
    let (_, note) = bot.next().await;
    let token_for_it = note["resourceData"]["recordingAccessToken"].as_str().unwrap().to_owned();
    assert_eq!(token_for_it.len(), 64, "two random UUIDs");
    let location = note["resourceData"]["recordingLocation"].as_str().unwrap().to_owned();
    assert_eq!(location, server.url(&format!("/recordings/{op}")));
    let mut expected = operation_note(json!({
        "@odata.type": "#microsoft.graph.recordOperation", "id": "{opId}", "clientContext": "rec", "status": "completed",
        "resultInfo": {"@odata.type": "#microsoft.graph.resultInfo", "code": 200, "subcode": 0, "message": "Action completed, max silence timeout."},
        "completionReason": "maxSilenceTimeout", "recordingLocation": "{location}", "recordingAccessToken": "{token}"
    }));
    expected = replace_in_strings(replace_in_strings(expected, "{location}", &location), "{token}", &token_for_it);
    assert_eq!(note, replace_in_strings(replace_in_strings(expected, "{callId}", &id), "{opId}", &op));

    // The recording: 2.5 s of 8 kHz 16-bit WAV, to the bearer of its token only.
    let get = |bearer: Option<String>| {
        let req = client().get(&location);
        let req = match bearer {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        async move { req.send().await.unwrap() }
    };
    let resp = get(Some(token_for_it.clone())).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "application/octet-stream");
    let wav = resp.bytes().await.unwrap();
    assert_eq!((&wav[0..4], &wav[8..12], wav.len()), (&b"RIFF"[..], &b"WAVE"[..], 44 + 2_500 * 16));
    for bearer in [None, Some(token.clone()), Some("x".repeat(64))] {
        let resp = get(bearer).await;
        assert_eq!(resp.status().as_u16(), 401);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "InvalidAuthenticationToken", "{body}");
    }
    let resp = client().get(server.url("/recordings/nope")).bearer_auth(&token_for_it).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 404);
}

#[tokio::test]
async fn media_actions_refuse_bad_bodies_and_wrong_states_and_end_once_on_hang_up() {
    let mut bot = Bot::start().await;
    let server = virtual_server(&bot, &[]).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;

    // Not answered yet: 409, naming the state.
    let id = server.inbound(ALEX, DEMO_BOT).await;
    bot.next().await;
    let (status, _, err) = act(&server, &token, &id, "playPrompt", json!({"prompts": [prompt(GREETING)]})).await;
    assert_eq!(status, 409);
    assert_eq!(err["error"]["code"], "InvalidCallState");
    assert_eq!(err["error"]["message"], "Cannot play a prompt to a call in state 'incoming'; play a prompt to needs state 'established'.");
    server.sim(Method::POST, &format!("/calls/{id}/hangup"), None).await;
    bot.next().await;

    let id = answered(&server, &mut bot, &token, ALEX, DEMO_BOT).await;
    let cases = [
        ("playPrompt", json!({}), "prompts: is required: at least one mediaPrompt"),
        ("playPrompt", json!({"prompts": [{"mediaInfo": {"uri": ""}}]}), "prompts[0].mediaInfo.uri: must not be empty"),
        ("recordResponse", json!({"maxRecordDurationInSeconds": 0}), "maxRecordDurationInSeconds: 0 is out of range; use 1 to 120 seconds"),
        (
            "sendDtmfTones",
            json!({"tones": ["tone1", "hash"]}),
            "tones[1]: 'hash' is not a tone; use tone0-tone9, star, pound, a-d or flash",
        ),
        (
            "updateRecordingStatus",
            json!({"status": "paused"}),
            "status: 'paused' is not a recordingStatus; use notRecording, recording, failed or unknown",
        ),
        ("unmute", json!({"clientContext": 7}), "clientContext: expected a string, found a number"),
    ];
    for (action, body, problem) in cases {
        let (status, _, err) = act(&server, &token, &id, action, body).await;
        assert_eq!(
            (status, err["error"]["message"].as_str().unwrap_or_default()),
            (400, format!("Invalid request body: {problem}").as_str())
        );
    }

    // Mute is for group calls (Graph: "only supported for group calls").
    let (status, _, err) = act(&server, &token, &id, "mute", json!({"clientContext": "m"})).await;
    assert_eq!(
        (status, err["error"]["message"].as_str().unwrap_or_default()),
        (409, "Cannot mute a peer-to-peer call; Graph supports it in group calls only.")
    );

    // Alex hangs up mid-prompt: the prompt fails once, then the call ends.
    let (_, _, play) = act(&server, &token, &id, "playPrompt", json!({"prompts": [prompt(GREETING)]})).await;
    let op = play["id"].as_str().unwrap().to_owned();
    server.advance(700).await;
    let (status, _) = server.sim(Method::POST, &format!("/calls/{id}/hangup"), None).await;
    assert_eq!(status, 204);
    let failed = redact_op(bot.next().await.1, &id, &op);
    assert_eq!(failed["resourceData"]["status"], "failed", "{failed}");
    assert_eq!(failed["resourceData"]["completionReason"], "mediaOperationCanceled");
    assert_eq!(
        (failed["resourceData"]["resultInfo"]["code"].clone(), failed["resourceData"]["resultInfo"]["subcode"].clone()),
        (json!(400), json!(8508))
    );
    assert_eq!(redact(bot.next().await.1, &id), terminated_note(200, 4521, "The other participant ended the call."));
    server.advance(5_000).await;
    bot.expect_silence(std::time::Duration::from_millis(300)).await;
    let leg = leg_of(&server, ALEX).await;
    assert_eq!(leg, Value::Null, "the leg is gone");
}

/// Mute in a group call: completed in the response, and the roster shows the bot muted.
#[tokio::test]
async fn the_bot_mutes_itself_in_a_group_call() {
    let mut bot = Bot::start().await;
    let server = Server::start(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let id = crate::group::joined(&server, &mut bot, &token, &[HEIDI, ALEX]).await;
    let (status, location, mute) = act(&server, &token, &id, "mute", json!({"clientContext": "m"})).await;
    assert_eq!(
        (status, mute["status"].clone(), mute["@odata.type"].clone()),
        (200, json!("completed"), json!("#microsoft.graph.muteParticipantOperation"))
    );
    assert!(location.ends_with(&format!("/operations/{}", mute["id"].as_str().unwrap())), "{location}");
    let (_, roster) = bot.next().await;
    assert_eq!(roster["resourceUrl"], format!("/communications/calls/{id}/participants"));
    let muted: Vec<bool> = roster["resourceData"].as_array().unwrap().iter().map(|p| p["isMuted"].as_bool().unwrap()).collect();
    assert_eq!(muted, [true, false, false], "the bot first, then Heidi and Alex");
    // Muting again changes nothing to tell; unmuting does.
    act(&server, &token, &id, "mute", json!({})).await;
    let (status, _, _) = act(&server, &token, &id, "unmute", json!({})).await;
    assert_eq!(status, 200);
    let (_, roster) = bot.next().await;
    assert_eq!(roster["resourceData"][0]["isMuted"], false);
}

/// `participants/invite`: into a peer-to-peer call it becomes a group call; an invitee who is busy fails
/// its invitation; with `replacesCallId` the peer of the bot's other call moves over and that call
/// ends; a transfer from the group call then works as any group transfer.
#[tokio::test]
async fn invite_escalates_to_a_group_call_and_replaces_another_call() {
    use crate::group::{participant_of, roster, s};
    let mut bot = Bot::start().await;
    let server = patient_server(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let a = crate::transfer::answered(&server, &mut bot, &token, ALEX, DEMO_BOT).await;
    let path = format!("/v1.0/communications/calls/{a}/participants/invite");
    let invite = |who: &str, replaces: Option<&str>| {
        json!({"clientContext": "invite", "participants": [{"@odata.type": "#microsoft.graph.invitationParticipantInfo",
            "identity": {"@odata.type": "#microsoft.graph.identitySet", "user": {"@odata.type": "#microsoft.graph.identity", "id": who}},
            "replacesCallId": replaces}]})
    };

    // Bob is busy: the invitation fails with his reason; the call goes on with Alex.
    let (status, op) = server.graph(Method::POST, &path, &token, Some(invite(BUSY_BOB, None))).await;
    assert_eq!(status, 200, "{op}");
    assert_eq!(
        (op["@odata.type"].as_str(), op["status"].as_str()),
        (Some("#microsoft.graph.inviteParticipantsOperation"), Some("running"))
    );
    assert_eq!(op["participants"][0]["identity"]["user"]["id"], BUSY_BOB);
    let op_id = op["id"].as_str().unwrap().to_owned();
    let failed = redact_op(bot.next().await.1, &a, &op_id);
    assert_eq!(failed["resourceUrl"], "/communications/calls/{callId}/operations/{opId}");
    assert_eq!(
        (failed["resourceData"]["status"].as_str(), failed["resourceData"]["resultInfo"]["code"].as_i64()),
        (Some("failed"), Some(486))
    );

    // Heidi is in a call of her own with the bot (b); inviting her with replacesCallId moves her over.
    let consult = call_to_user(&bot.callback("consult"), HEIDI);
    let b = crate::transfer::placed(&server, &mut bot, &token, consult).await;
    let (status, op) = server.graph(Method::POST, &path, &token, Some(invite(HEIDI, Some(&b)))).await;
    assert_eq!(status, 200, "{op}");
    assert_eq!(op["participants"][0]["replacesCallId"], json!(b));
    assert!(op["participants"][0]["participantId"].is_string(), "the invitee's id, to remove it while it rings");
    let op_id = op["id"].as_str().unwrap().to_owned();
    // Three notifications, two calls: each call's in order, the two calls' interleaved as they come.
    let (mut on_a, mut on_b) = (Vec::new(), Vec::new());
    for item in bot.take(3).await {
        let url = item["resourceUrl"].as_str().unwrap_or_default().to_owned();
        if url.contains(&a) { on_a.push(redact(item, &a)) } else { on_b.push(redact(item, &b)) }
    }
    assert_eq!((on_a.len(), on_b.len()), (2, 1), "{on_a:?} {on_b:?}");
    assert_eq!(roster(&on_a[0], "{callId}"), s(&[DEMO_BOT, ALEX, HEIDI]));
    let done = replace_in_strings(on_a[1].clone(), &op_id, "{opId}");
    assert_eq!(
        (done["resourceUrl"].as_str(), done["resourceData"]["status"].as_str()),
        (Some("/communications/calls/{callId}/operations/{opId}"), Some("completed"))
    );
    assert_eq!((on_b[0]["changeType"].as_str(), on_b[0]["resourceData"]["state"].as_str()), (Some("deleted"), Some("terminated")));
    let (status, _) = server.graph(Method::GET, &format!("/v1.0/communications/calls/{b}"), &token, None).await;
    assert_eq!(status, 404, "the replaced call is gone");
    let (_, got) = server.graph(Method::GET, &format!("/v1.0/communications/calls/{a}/operations/{op_id}"), &token, None).await;
    assert_eq!(got["status"], "completed");

    // Refusals: someone already in it, a replacesCallId that is not the bot's call, the bot itself.
    let cases = [
        (invite(HEIDI, None), 409, "participants: '550fae72-d251-43ec-868c-373732c2704f' is in this call already"),
        (invite(SILENT_SAM, Some("nope")), 409, "participants[0].replacesCallId: 'nope' is not a live call of this application"),
        (json!({"participants": []}), 400, "participants: must name 1 to 5 participants, not 0"),
    ];
    for (body, want_status, want) in cases {
        let (status, err) = server.graph(Method::POST, &path, &token, Some(body)).await;
        assert_eq!(status, want_status, "{err}");
        assert!(err["error"]["message"].as_str().unwrap_or_default().contains(want), "{err}");
    }

    // A transfer from the group call: Alex goes to Dana (who answers today); Heidi stays with the bot.
    server.sim(Method::PUT, &format!("/parties/{DECLINING_DANA}/behaviour"), Some(json!({"kind": "answer", "after_ms": 50}))).await;
    let alex = participant_of(&server, &token, &a, ALEX).await;
    let body = json!({"transferTarget": {"identity": {"user": {"id": DECLINING_DANA}}}, "transferee": {"participantId": alex}});
    let (status, _) = transfer(&server, &token, &a, body).await;
    assert_eq!(status, 202);
    assert_eq!(redact(bot.next().await.1, &a), state_note("updated", "transferring"));
    assert_eq!(redact(bot.next().await.1, &a), state_note("updated", "transferAccepted"));
    assert_eq!(redact(bot.next().await.1, &a)["resourceData"]["resultInfo"]["subcode"], 7015);
    assert_eq!(roster(&bot.next().await.1, &a), s(&[DEMO_BOT, HEIDI]));

    // Heidi, removed, leaves; the call ends with its last participant gone.
    let heidi = participant_of(&server, &token, &a, HEIDI).await;
    let (status, _) = server.graph(Method::DELETE, &format!("/v1.0/communications/calls/{a}/participants/{heidi}"), &token, None).await;
    assert_eq!(status, 204);
    assert_eq!(redact(bot.next().await.1, &a), terminated_note(200, 5002, "All other participants left the group call."));
}

/// Hold music: one participant at a time; the party hears it until it is taken off hold.
#[tokio::test]
async fn hold_music_one_participant_at_a_time() {
    use crate::group::participant_of;
    let mut bot = Bot::start().await;
    let server = Server::start(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let id = crate::group::joined(&server, &mut bot, &token, &[HEIDI, ALEX]).await;
    let (heidi, alex) = (participant_of(&server, &token, &id, HEIDI).await, participant_of(&server, &token, &id, ALEX).await);
    let hold = |who: &str, what: &str| format!("/v1.0/communications/calls/{id}/participants/{who}/{what}");
    let music = json!({"customPrompt": {"@odata.type": "#microsoft.graph.mediaPrompt", "mediaInfo": {"@odata.type": "#microsoft.graph.mediaInfo", "uri": "https://bot.contoso.com/onHold.wav"}}, "clientContext": "hold"});
    let (status, op) = server.graph(Method::POST, &hold(&heidi, "startHoldMusic"), &token, Some(music.clone())).await;
    assert_eq!(
        (status, op["@odata.type"].as_str(), op["status"].as_str()),
        (202, Some("#microsoft.graph.startHoldMusicOperation"), Some("running"))
    );
    let done = bot.next().await.1;
    assert_eq!((done["changeType"].as_str(), done["resourceData"]["status"].as_str()), (Some("deleted"), Some("completed")));
    let (status, err) = server.graph(Method::POST, &hold(&alex, "startHoldMusic"), &token, Some(music)).await;
    assert_eq!(status, 409);
    assert!(err["error"]["message"].as_str().unwrap_or_default().contains("only one participant can be on hold at a time"), "{err}");
    let (status, _) = server.graph(Method::POST, &hold(&heidi, "stopHoldMusic"), &token, Some(json!({}))).await;
    assert_eq!(status, 202);
    bot.next().await;
    let leg = leg_of(&server, HEIDI).await;
    assert_eq!(leg["heard"][0]["uri"], "holdMusic:https://bot.contoso.com/onHold.wav");
    assert_eq!(leg["heard"][0]["complete"], true);
    let (status, err) = server.graph(Method::POST, &hold("nobody", "stopHoldMusic"), &token, Some(json!({}))).await;
    assert_eq!((status, err["error"]["code"].as_str()), (404, Some("NotFound")));
    // Participant mute shows on the roster.
    let (status, op) =
        server.graph(Method::POST, &format!("/v1.0/communications/calls/{id}/participants/{alex}/mute"), &token, Some(json!({}))).await;
    assert_eq!((status, op["status"].as_str()), (200, Some("completed")));
    let roster = bot.next().await.1;
    let alex_muted = roster["resourceData"].as_array().unwrap().iter().find(|p| p["id"] == json!(alex)).map(|p| p["isMuted"].clone());
    assert_eq!(alex_muted, Some(json!(true)));
}
