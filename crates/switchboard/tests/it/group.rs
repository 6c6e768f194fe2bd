//! Group calls: a call placed to several targets, its roster, and transfers from it (today's v1.0
//! example 5, with `transferee`).

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::*;
use crate::lifecycle::answer_body;

/// The body of a call to several users: a new group call.
pub(crate) fn group_body(callback: &str, users: &[&str]) -> Value {
    let targets: Vec<Value> = users
        .iter()
        .map(|u| json!({"@odata.type": "#microsoft.graph.invitationParticipantInfo", "identity": {"@odata.type": "#microsoft.graph.identitySet", "user": {"@odata.type": "#microsoft.graph.identity", "id": u}}}))
        .collect();
    json!({
        "@odata.type": "#microsoft.graph.call",
        "callbackUri": callback,
        "targets": targets,
        "requestedModalities": ["audio"],
        "mediaConfig": service_hosted()
    })
}

/// Places a group call and returns its id and the created call.
async fn group_call(server: &Server, bot: &Bot, token: &str, users: &[&str]) -> (String, Value) {
    let (status, call) = server.graph(Method::POST, "/v1.0/communications/calls", token, Some(group_body(&bot.callback("g"), users))).await;
    assert_eq!(status, 201, "{call}");
    (call["id"].as_str().unwrap().to_owned(), call)
}

/// The user ids (or the app id for the bot) in a roster notification, in roster order.
pub(crate) fn roster(item: &Value, call: &str) -> Vec<String> {
    assert_eq!(item["changeType"], "updated", "{item}");
    assert_eq!(item["resourceUrl"], format!("/communications/calls/{call}/participants"), "{item}");
    let list = item["resourceData"].as_array().unwrap_or_else(|| panic!("a roster is an array: {item}"));
    list.iter()
        .map(|p| {
            let identity = &p["info"]["identity"];
            identity["user"]["id"].as_str().or(identity["application"]["id"].as_str()).unwrap_or_default().to_owned()
        })
        .collect()
}

/// A group call to `users` (all answer), established, with every roster update consumed; returns its id.
pub(crate) async fn joined(server: &Server, bot: &mut Bot, token: &str, users: &[&str]) -> String {
    let (id, _) = group_call(server, bot, token, users).await;
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "establishing"));
    assert_eq!(redact(bot.next().await.1, &id), established_note());
    for _ in users {
        bot.next().await;
    }
    id
}

/// The participant id of `user` in call `id`.
pub(crate) async fn participant_of(server: &Server, token: &str, id: &str, user: &str) -> String {
    let (_, list) = server.graph(Method::GET, &format!("/v1.0/communications/calls/{id}/participants"), token, None).await;
    let found = list["value"].as_array().into_iter().flatten().find(|p| p["info"]["identity"]["user"]["id"] == user);
    found.and_then(|p| p["id"].as_str()).unwrap_or_else(|| panic!("{user} in {list}")).to_owned()
}

/// The world's legs, as (party id, state, peer kind).
async fn legs(server: &Server) -> Vec<(String, String, String)> {
    let (_, world) = server.sim(Method::GET, "/world", None).await;
    let mut out: Vec<(String, String, String)> = world["legs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            let party = l["party"]["id"].as_str().or(l["party"]["number"].as_str()).unwrap_or_default().to_owned();
            (party, l["state"].as_str().unwrap_or_default().to_owned(), l["peer"]["kind"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    out.sort();
    out
}

async fn leg_of(server: &Server, party: &str) -> String {
    let (_, world) = server.sim(Method::GET, "/world", None).await;
    let leg = world["legs"].as_array().into_iter().flatten().find(|l| l["party"]["id"] == party);
    leg.and_then(|l| l["id"].as_str()).unwrap_or_else(|| panic!("a leg of {party} in {world}")).to_owned()
}

pub(crate) fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_owned()).collect()
}

/// A user participant exactly as a roster shows it.
fn user_participant(id: &str, user: &str, name: &str) -> Value {
    json!({
        "@odata.type": "#microsoft.graph.participant",
        "id": id,
        "info": {"@odata.type": "#microsoft.graph.participantInfo", "identity": {"@odata.type": "#microsoft.graph.identitySet",
            "user": {"@odata.type": "#microsoft.graph.identity", "id": user, "displayName": name, "tenantId": CONTOSO}}},
        "isInLobby": false,
        "isMuted": false,
        "mediaStreams": [{"@odata.type": "#microsoft.graph.mediaStream", "mediaType": "audio", "label": null, "sourceId": "1", "direction": "sendReceive", "serverMuted": false}],
        "metadata": null,
        "recordingInfo": null,
        "removedState": null,
        "restrictedExperience": null,
        "rosterSequenceNumber": 0
    })
}

#[tokio::test]
async fn a_group_call_rings_every_target_and_sends_the_roster_as_they_join() {
    let mut bot = Bot::start().await;
    let server = Server::start(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    // A party named twice is invited once.
    let (id, call) = group_call(&server, &bot, &token, &[ALEX, HEIDI, ALEX, BUSY_BOB]).await;
    let targets: Vec<&str> = call["targets"].as_array().unwrap().iter().map(|t| t["identity"]["user"]["id"].as_str().unwrap()).collect();
    assert_eq!(targets, [ALEX, HEIDI, BUSY_BOB]);
    assert_eq!(call["state"], "establishing");
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "establishing"));
    // Bob is busy: nobody joined, nothing to tell. The first to answer establishes the call.
    assert_eq!(redact(bot.next().await.1, &id), established_note());
    let first = roster(&bot.next().await.1, &id);
    assert!(first == s(&[DEMO_BOT, ALEX]) || first == s(&[DEMO_BOT, HEIDI]), "{first:?}");
    let (_, both) = bot.next().await;
    assert_eq!(roster(&both, &id), s(&[DEMO_BOT, ALEX, HEIDI]), "the bot first, then in invitation order");
    // The exact roster item, and GET participants agrees with it.
    let alex = participant_of(&server, &token, &id, ALEX).await;
    let heidi = participant_of(&server, &token, &id, HEIDI).await;
    let (_, list) = server.graph(Method::GET, &format!("/v1.0/communications/calls/{id}/participants"), &token, None).await;
    assert_eq!(both["resourceData"], list["value"]);
    assert_eq!(both["resourceData"][1], user_participant(&alex, ALEX, "Alex Wilber"));
    assert_eq!(both["resourceData"][2], user_participant(&heidi, HEIDI, "Heidi Steen"));
    assert_eq!(both["resourceData"][0]["id"], call["myParticipantId"]);
    assert_eq!(both["@odata.type"], "#microsoft.graph.commsNotification");
    let (status, p) = server.graph(Method::GET, &format!("/v1.0/communications/calls/{id}/participants/{alex}"), &token, None).await;
    assert_eq!((status, p["info"]["identity"]["user"]["id"].as_str()), (200, Some(ALEX)));
    // Members leave one by one; the last one ends the call.
    assert_eq!(server.sim(Method::DELETE, &format!("/legs/{}", leg_of(&server, ALEX).await), None).await.0, 204);
    assert_eq!(roster(&bot.next().await.1, &id), s(&[DEMO_BOT, HEIDI]));
    assert_eq!(server.sim(Method::DELETE, &format!("/legs/{}", leg_of(&server, HEIDI).await), None).await.0, 204);
    assert_eq!(redact(bot.next().await.1, &id), terminated_note(200, 5002, "All other participants left the group call."));
    bot.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(legs(&server).await, []);
}

#[tokio::test]
async fn a_group_call_nobody_joins_ends_with_5013() {
    let mut bot = Bot::start().await;
    let server = virtual_server(&bot, &[]).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let (id, _) = group_call(&server, &bot, &token, &[BUSY_BOB, DECLINING_DANA]).await;
    server.advance(50).await;
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "establishing"));
    assert_eq!(redact(bot.next().await.1, &id), terminated_note(200, 5013, "Nobody else joined the group call."));
    // One who never answers: the ring timeout ends the invitation, and with it the call.
    let (id, _) = group_call(&server, &bot, &token, &[BUSY_BOB, SILENT_SAM]).await;
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "establishing"));
    server.advance(RING_TIMEOUT_MS - 1).await;
    let ringing = (SILENT_SAM.to_owned(), "ringing".to_owned(), "group".to_owned());
    assert_eq!(legs(&server).await, [ringing], "Sam still rings; Bob refused long ago");
    server.advance(1).await;
    assert_eq!(redact(bot.next().await.1, &id), terminated_note(200, 5013, "Nobody else joined the group call."));
    assert_eq!(legs(&server).await, []);
}

#[tokio::test]
async fn the_bot_leaving_a_group_call_leaves_the_others_talking() {
    let mut bot = Bot::start().await;
    let server = Server::start(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let id = joined(&server, &mut bot, &token, &[ALEX, HEIDI]).await;
    assert_eq!(server.graph(Method::DELETE, &format!("/v1.0/communications/calls/{id}"), &token, None).await.0, 204);
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "terminating"));
    assert_eq!(redact(bot.next().await.1, &id), terminated_note(200, 7000, "The call was ended by the application."));
    let group = |p: &str| (p.to_owned(), "connected".to_owned(), "group".to_owned());
    assert_eq!(legs(&server).await, [group(HEIDI), group(ALEX)]);
    // With one of them gone the group is over: the other is dropped too.
    assert_eq!(server.sim(Method::DELETE, &format!("/legs/{}", leg_of(&server, ALEX).await), None).await.0, 204);
    assert_eq!(legs(&server).await, []);
    bot.expect_silence(Duration::from_millis(300)).await;
}

/// The seed pages' tenant, where today's example 5 names Alex.
const SEED_TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

#[tokio::test]
async fn example_5_transfer_from_a_group_call() {
    let mut bot = Bot::start().await;
    let server = crate::seeds::seed_server_with(&bot, long_ring_timeout()).await;
    let token = server.token(DEMO_BOT, SEED_TENANT).await;
    server.sim(Method::PUT, &format!("/parties/{SILENT_SAM}/behaviour"), Some(json!({"kind": "answer", "after_ms": 100}))).await;
    let id = joined(&server, &mut bot, &token, &[ALEX, SILENT_SAM]).await;
    let alex = participant_of(&server, &token, &id, ALEX).await;
    // Today's v1.0 example 5, verbatim but for the participant id, which is Alex's in this call.
    let body = json!({
        "transferTarget": {"endpointType": "default", "identity": {"user": {"id": "550fae72-d251-43ec-868c-373732c2704f", "displayName": "Heidi Steen"}}},
        "transferee": {
            "identity": {"user": {"id": "751f6800-3180-414d-bd94-333364659951", "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47"}},
            "participantId": "909c6581-5130-43e9-88f3-fcb3582cde37"
        }
    });
    let body = replace_in_strings(body, "909c6581-5130-43e9-88f3-fcb3582cde37", &alex);
    let (status, reply) = server.graph(Method::POST, &format!("/v1.0/communications/calls/{id}/transfer"), &token, Some(body)).await;
    assert_eq!(status, 202, "{reply}");
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "transferring"));
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "transferAccepted"));
    // Sam stays with the bot: no media change; the call is established again and says why.
    let mut back = state_note("updated", "established");
    back["resourceData"]["resultInfo"] =
        json!({"@odata.type": "#microsoft.graph.resultInfo", "code": 0, "subcode": 7015, "message": "GracefulTransferCompleted"});
    assert_eq!(redact(bot.next().await.1, &id), back);
    assert_eq!(roster(&bot.next().await.1, &id), s(&[DEMO_BOT, SILENT_SAM]));
    bot.expect_silence(Duration::from_millis(300)).await;
    let (_, call) = server.graph(Method::GET, &format!("/v1.0/communications/calls/{id}"), &token, None).await;
    assert_eq!((call["state"].as_str(), call["mediaState"]["audio"].as_str()), (Some("established"), Some("active")));
    let leg = |p: &str, kind: &str| (p.to_owned(), "connected".to_owned(), kind.to_owned());
    assert_eq!(legs(&server).await, [leg(HEIDI, "leg"), leg(ALEX, "leg"), leg(SILENT_SAM, "group")]);
    // Sam is the last one: transferring him ends the call, as a peer-to-peer transfer does.
    let sam = participant_of(&server, &token, &id, SILENT_SAM).await;
    let body = json!({"transferTarget": {"identity": {"phone": {"id": "+12345678901"}}}, "transferee": {"participantId": sam}});
    let (status, reply) = server.graph(Method::POST, &format!("/v1.0/communications/calls/{id}/transfer"), &token, Some(body)).await;
    assert_eq!(status, 403, "PSTN needs an application instance: {reply}");
    let body = json!({"transferTarget": {"identity": {"user": {"id": BUSY_BOB}}}, "transferee": {"participantId": sam}});
    assert_eq!(server.graph(Method::POST, &format!("/v1.0/communications/calls/{id}/transfer"), &token, Some(body)).await.0, 202);
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "transferring"));
    assert_eq!(redact(bot.next().await.1, &id)["resourceData"]["resultInfo"]["subcode"], 7000, "Bob is busy");
    server.sim(Method::PUT, &format!("/parties/{BUSY_BOB}/behaviour"), Some(json!({"kind": "answer", "after_ms": 50}))).await;
    let body = json!({"transferTarget": {"identity": {"user": {"id": BUSY_BOB}}}, "transferee": {"participantId": sam}});
    assert_eq!(server.graph(Method::POST, &format!("/v1.0/communications/calls/{id}/transfer"), &token, Some(body)).await.0, 202);
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "transferring"));
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "transferAccepted"));
    let mut inactive = state_note("updated", "transferAccepted");
    inactive["resourceData"]["mediaState"] = json!({"@odata.type": "#microsoft.graph.callMediaState", "audio": "inactive"});
    assert_eq!(redact(bot.next().await.1, &id), inactive);
    assert_eq!(redact(bot.next().await.1, &id), terminated_note(0, 7015, "GracefulTransferCompleted"));
    bot.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn group_transfer_refusals_and_failures_are_precise() {
    let mut bot = Bot::start().await;
    let server = patient_server(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let id = joined(&server, &mut bot, &token, &[ALEX, HEIDI]).await;
    let alex = participant_of(&server, &token, &id, ALEX).await;
    let path = format!("/v1.0/communications/calls/{id}/transfer");
    let target = json!({"identity": {"user": {"id": SILENT_SAM}}});
    let cases = [
        // 409, not 400: the same body transfers a peer-to-peer call (the schema cannot tell them apart).
        (json!({"transferTarget": target}), 409, "transferee: is required to transfer from a group call"),
        (json!({"transferTarget": target, "transferee": {}}), 400, "transferee: must name the participant by participantId or identity"),
        (json!({"transferTarget": target, "transferee": {"participantId": "nobody"}}), 409, "'nobody' is not a joined participant"),
        (
            json!({"transferTarget": target, "transferee": {"participantId": alex, "identity": {"user": {"id": HEIDI}}}}),
            409,
            "transferee.identity: is not participant",
        ),
        (
            json!({"transferTarget": target, "transferee": {"identity": {"user": {"id": SILENT_SAM}}}}),
            409,
            "transferee.identity: names a party that has not joined this group call",
        ),
        (
            json!({"transferTarget": {"identity": {"user": {"id": HEIDI}}}, "transferee": {"participantId": alex}}),
            409,
            "the transfer target is already in this call",
        ),
    ];
    for (body, status, message) in cases {
        let (got, reply) = server.graph(Method::POST, &path, &token, Some(body.clone())).await;
        assert_eq!(got, status, "{body} → {reply}");
        let text = reply["error"]["message"].as_str().unwrap_or_default();
        assert!(text.contains(message), "{body}: {text:?} should say {message:?}");
    }
    // A group call cannot be the consultation call of another transfer.
    let b = server.inbound(SILENT_SAM, DEMO_BOT).await;
    bot.next().await;
    let answer = answer_body(&bot.callback(&b));
    assert_eq!(server.graph(Method::POST, &format!("/v1.0/communications/calls/{b}/answer"), &token, Some(answer)).await.0, 202);
    bot.take(2).await;
    let body = json!({"transferTarget": {"identity": {"user": {"id": HEIDI}}, "replacesCallId": id}});
    let (status, reply) = server.graph(Method::POST, &format!("/v1.0/communications/calls/{b}/transfer"), &token, Some(body)).await;
    assert_eq!(status, 409, "{reply}");
    assert!(reply["error"]["message"].as_str().unwrap_or_default().contains("is a group call"), "{reply}");
    // A failed group transfer leaves the transferee in the call.
    let body = json!({"transferTarget": {"identity": {"user": {"id": DECLINING_DANA}}}, "transferee": {"participantId": alex}});
    assert_eq!(server.graph(Method::POST, &path, &token, Some(body)).await.0, 202);
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "transferring"));
    let (_, failed) = bot.next().await;
    assert_eq!(failed["resourceData"]["state"], "established");
    assert_eq!(failed["resourceData"]["resultInfo"]["subcode"], 7000);
    assert_eq!(participant_of(&server, &token, &id, ALEX).await, alex);
    // The transferee hangs up while the target rings: the transfer fails, the roster follows.
    server.sim(Method::PUT, &format!("/parties/{DECLINING_DANA}/behaviour"), Some(json!({"kind": "no-answer"}))).await;
    let body = json!({"transferTarget": {"identity": {"user": {"id": DECLINING_DANA}}}, "transferee": {"participantId": alex}});
    assert_eq!(server.graph(Method::POST, &path, &token, Some(body)).await.0, 202);
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "transferring"));
    assert_eq!(server.sim(Method::DELETE, &format!("/legs/{}", leg_of(&server, ALEX).await), None).await.0, 204);
    let (_, failed) = bot.next().await;
    assert_eq!(
        failed["resourceData"]["resultInfo"]["message"],
        "The blind transfer failed: the transferee left the call. DiagCode: 500#7000.@"
    );
    assert_eq!(roster(&bot.next().await.1, &id), s(&[DEMO_BOT, HEIDI]));
    bot.expect_silence(Duration::from_millis(300)).await;
    assert!(!legs(&server).await.iter().any(|(p, _, _)| p == DECLINING_DANA), "Dana stopped ringing");
}

#[tokio::test]
async fn a_consultative_transfer_from_a_group_call_hands_the_transferee_to_the_consultation_call() {
    let mut bot = Bot::start().await;
    let server = patient_server(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    server.sim(Method::PUT, &format!("/parties/{SILENT_SAM}/behaviour"), Some(json!({"kind": "answer", "after_ms": 100}))).await;
    let id = joined(&server, &mut bot, &token, &[ALEX, SILENT_SAM]).await;
    let (status, call) =
        server.graph(Method::POST, "/v1.0/communications/calls", &token, Some(call_to_user(&bot.callback("b"), HEIDI))).await;
    assert_eq!(status, 201);
    let b = call["id"].as_str().unwrap().to_owned();
    bot.take(2).await;
    let alex = participant_of(&server, &token, &id, ALEX).await;
    let body = json!({"transferTarget": {"identity": {"user": {"id": HEIDI}}, "replacesCallId": b}, "transferee": {"participantId": alex}});
    assert_eq!(server.graph(Method::POST, &format!("/v1.0/communications/calls/{id}/transfer"), &token, Some(body)).await.0, 202);
    let (mut on_group, mut on_b) = (Vec::new(), Vec::new());
    while on_group.len() < 4 || on_b.is_empty() {
        let (_, item) = bot.next().await;
        if item["resourceUrl"].as_str().unwrap_or_default().contains(&b) { on_b.push(redact(item, &b)) } else { on_group.push(item) }
    }
    assert_eq!(redact(on_group[0].clone(), &id), state_note("updated", "transferring"));
    assert_eq!(redact(on_group[1].clone(), &id), state_note("updated", "transferAccepted"));
    assert_eq!(redact(on_group[2].clone(), &id)["resourceData"]["resultInfo"]["subcode"], 7015);
    assert_eq!(roster(&on_group[3], &id), s(&[DEMO_BOT, SILENT_SAM]));
    assert_eq!(on_b[0]["resourceData"]["terminationReason"], "AppTransferred");
    let leg = |p: &str, kind: &str| (p.to_owned(), "connected".to_owned(), kind.to_owned());
    assert_eq!(legs(&server).await, [leg(HEIDI, "leg"), leg(ALEX, "leg"), leg(SILENT_SAM, "group")]);
}

#[tokio::test]
async fn a_group_call_survives_kill_9() {
    let mut bot = Bot::start().await;
    let mut server = Server::start(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let id = joined(&server, &mut bot, &token, &[ALEX, HEIDI]).await;
    server.settled().await;
    server.restart().await;
    let group = |p: &str| (p.to_owned(), "connected".to_owned(), "group".to_owned());
    assert_eq!(legs(&server).await, [group(HEIDI), group(ALEX)]);
    assert_eq!(server.sim(Method::DELETE, &format!("/legs/{}", leg_of(&server, HEIDI).await), None).await.0, 204);
    assert_eq!(roster(&bot.next().await.1, &id), s(&[DEMO_BOT, ALEX]));
    // The sim's "far end hangs up" is every member of a group call.
    assert_eq!(server.sim(Method::POST, &format!("/calls/{id}/hangup"), None).await.0, 204);
    assert_eq!(redact(bot.next().await.1, &id), terminated_note(200, 5002, "All other participants left the group call."));
    bot.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(legs(&server).await, []);
}
