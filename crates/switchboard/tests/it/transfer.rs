//! Call transfer: the documented v1.0 examples with their exact bodies and notification sequences,
//! failures, refusals and races.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::*;
use crate::lifecycle::answer_body;

/// An incoming call from `from` to `to`, answered; its `establishing`/`established` are consumed.
pub(crate) async fn answered(server: &Server, bot: &mut Bot, token: &str, from: &str, to: &str) -> String {
    let id = server.inbound(from, to).await;
    bot.next().await;
    let (status, _) =
        server.graph(Method::POST, &format!("/v1.0/communications/calls/{id}/answer"), token, Some(answer_body(&bot.callback(&id)))).await;
    assert_eq!(status, 202);
    bot.take(2).await;
    id
}

/// An outgoing call, established; its notifications are consumed.
pub(crate) async fn placed(server: &Server, bot: &mut Bot, token: &str, body: Value) -> String {
    let (status, call) = server.graph(Method::POST, "/v1.0/communications/calls", token, Some(body)).await;
    assert_eq!(status, 201, "{call}");
    let id = call["id"].as_str().unwrap().to_owned();
    assert_eq!(redact(bot.take(2).await.pop().unwrap(), &id), established_note());
    id
}

pub(crate) async fn transfer(server: &Server, token: &str, id: &str, body: Value) -> (u16, Value) {
    server.graph(Method::POST, &format!("/v1.0/communications/calls/{id}/transfer"), token, Some(body)).await
}

pub(crate) fn accepted_media_note() -> Value {
    let mut n = state_note("updated", "transferAccepted");
    n["resourceData"]["mediaState"] = json!({"@odata.type": "#microsoft.graph.callMediaState", "audio": "inactive"});
    n
}

/// The transcript of a successful transfer, up to and including the call's `deleted`.
pub(crate) async fn expect_transferred(bot: &mut Bot, id: &str, last: Value) {
    assert_eq!(redact(bot.next().await.1, id), state_note("updated", "transferring"));
    assert_eq!(redact(bot.next().await.1, id), state_note("updated", "transferAccepted"));
    assert_eq!(redact(bot.next().await.1, id), accepted_media_note());
    assert_eq!(redact(bot.next().await.1, id), last);
}

pub(crate) fn completed_blind() -> Value {
    terminated_note(0, 7015, "GracefulTransferCompleted")
}

pub(crate) fn completed_consultative() -> Value {
    let mut n = state_note("deleted", "terminated");
    n["resourceData"]["terminationReason"] = json!("AppTransferred");
    n
}

fn failed(subcode: i64, kind: &str, why: &str, replaces_context: Option<&str>) -> Value {
    let mut n = state_note("updated", "established");
    n["resourceData"]["resultInfo"] = json!({
        "@odata.type": "#microsoft.graph.resultInfo", "code": 500, "subcode": subcode,
        "message": format!("The {kind} transfer failed: {why}. DiagCode: 500#{subcode}.@")
    });
    if let Some(c) = replaces_context {
        n["resourceData"]["replacesContext"] = json!(c);
    }
    n
}

/// Collects notifications until call `a` has `n_a` of them and call `b` has `n_b` (they may arrive on
/// different callbacks, interleaved); each call's come back redacted and in order.
pub(crate) async fn by_call(bot: &mut Bot, a: &str, n_a: usize, b: &str, n_b: usize) -> (Vec<Value>, Vec<Value>) {
    let (mut for_a, mut for_b) = (Vec::new(), Vec::new());
    while for_a.len() < n_a || for_b.len() < n_b {
        let (_, item) = bot.next().await;
        let url = item["resourceUrl"].as_str().unwrap_or_default().to_owned();
        if url.ends_with(a) {
            for_a.push(redact(item, a));
        } else if url.ends_with(b) {
            for_b.push(redact(item, b));
        }
    }
    (for_a, for_b)
}

/// Who each party's leg is connected to, by party id.
async fn connected_pairs(server: &Server) -> Vec<(String, String)> {
    let (_, world) = server.sim(Method::GET, "/world", None).await;
    let legs = world["legs"].as_array().cloned().unwrap_or_default();
    let mut pairs = Vec::new();
    for l in &legs {
        if l["state"] == "connected" && l["peer"]["kind"] == "leg" {
            let other = legs.iter().find(|o| o["id"] == l["peer"]["legId"]).expect("peer leg");
            let key = |p: &Value| p["id"].as_str().or(p["number"].as_str()).unwrap_or_default().to_owned();
            pairs.push((key(&l["party"]), key(&other["party"])));
        }
    }
    pairs.sort();
    pairs
}

#[tokio::test]
async fn example_1_blind_transfer_to_a_teams_user() {
    let mut bot = Bot::start().await;
    let server = Server::start(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let id = answered(&server, &mut bot, &token, ALEX, DEMO_BOT).await;
    let body = json!({"transferTarget": {"endpointType": "default", "identity": {"user": {"id": HEIDI, "displayName": "Heidi Steen"}}}});
    assert_eq!(transfer(&server, &token, &id, body).await.0, 202);
    expect_transferred(&mut bot, &id, completed_blind()).await;
    assert_eq!(connected_pairs(&server).await, [(HEIDI.to_owned(), ALEX.to_owned()), (ALEX.to_owned(), HEIDI.to_owned())]);
    let (status, _) = server.graph(Method::GET, &format!("/v1.0/communications/calls/{id}"), &token, None).await;
    assert_eq!(status, 404);
    bot.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn example_2_consultative_transfer() {
    let mut bot = Bot::start().await;
    let server = Server::start(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let a = answered(&server, &mut bot, &token, ALEX, DEMO_BOT).await;
    let consult = call_to_user(&bot.callback("consult"), HEIDI);
    let b = placed(&server, &mut bot, &token, consult).await;
    let body = json!({"transferTarget": {
        "@odata.type": "#microsoft.graph.invitationParticipantInfo", "endpointType": "default",
        "identity": {"@odata.type": "#microsoft.graph.identitySet", "user": {"@odata.type": "#microsoft.graph.identity", "id": HEIDI, "displayName": "Heidi Steen"}},
        "replacesCallId": b
    }});
    assert_eq!(transfer(&server, &token, &a, body).await.0, 202);
    let (for_a, for_b) = by_call(&mut bot, &a, 4, &b, 1).await;
    assert_eq!(
        for_a,
        [state_note("updated", "transferring"), state_note("updated", "transferAccepted"), accepted_media_note(), completed_consultative()]
    );
    let mut replaced = terminated_note(200, 7015, &format!("The call was handed over to call {a} by a consultative transfer."));
    replaced["resourceData"]["terminationReason"] = json!("AppTransferred");
    assert_eq!(for_b, [replaced]);
    assert_eq!(connected_pairs(&server).await, [(HEIDI.to_owned(), ALEX.to_owned()), (ALEX.to_owned(), HEIDI.to_owned())]);
    bot.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn example_3_transfer_to_a_pstn_number() {
    let mut bot = Bot::start().await;
    let server = Server::start(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let id = answered(&server, &mut bot, &token, HEIDI, RECEPTION_PHONE).await;
    let body = json!({
        "transferTarget": {"endpointType": "default", "identity": {"phone": {"@odata.type": "#microsoft.graph.identity", "id": "+12345678901"}}, "languageId": "languageId-value", "region": "region-value"},
        "clientContext": "9e90d1c1-f61e-43e7-9f75-d420159aae08"
    });
    assert_eq!(transfer(&server, &token, &id, body).await.0, 202);
    expect_transferred(&mut bot, &id, completed_blind()).await;
    assert_eq!(
        connected_pairs(&server).await,
        [("+12345678901".to_owned(), HEIDI.to_owned()), (HEIDI.to_owned(), "+12345678901".to_owned())]
    );
}

#[tokio::test]
async fn example_4_consultative_transfer_to_a_pstn_number() {
    let mut bot = Bot::start().await;
    let server = Server::start(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let a = answered(&server, &mut bot, &token, HEIDI, RECEPTION).await;
    let consult = call_to_phone(&bot.callback("consult"), "+12345678901");
    let b = placed(&server, &mut bot, &token, consult).await;
    let body = json!({
        "transferTarget": {
            "@odata.type": "#microsoft.graph.invitationParticipantInfo", "endpointType": "default",
            "identity": {"@odata.type": "#microsoft.graph.identitySet", "phone": {"@odata.type": "#microsoft.graph.identity", "id": "+12345678901"}},
            "replacesCallId": b, "languageId": "en-us", "region": "amer"
        },
        "clientContext": "9e90d1c1-f61e-43e7-9f75-d420159aae08"
    });
    assert_eq!(transfer(&server, &token, &a, body).await.0, 202);
    let (for_a, _) = by_call(&mut bot, &a, 4, &b, 0).await;
    assert_eq!(
        for_a,
        [state_note("updated", "transferring"), state_note("updated", "transferAccepted"), accepted_media_note(), completed_consultative()]
    );
}

#[tokio::test]
async fn blind_failures_return_to_established_and_the_call_can_be_transferred_again() {
    let mut bot = Bot::start().await;
    // On virtual time: Silent Sam's ring timeout passes at once.
    let server = virtual_server(&bot, &[]).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let id = answered(&server, &mut bot, &token, ALEX, DEMO_BOT).await;
    let cases = [
        (BUSY_BOB, "the transfer target is busy"),
        (DECLINING_DANA, "the transfer target declined"),
        (SILENT_SAM, "the transfer target did not answer"),
    ];
    for (target, why) in cases {
        let body = json!({"transferTarget": {"identity": {"user": {"id": target}}}});
        assert_eq!(transfer(&server, &token, &id, body).await.0, 202);
        assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "transferring"));
        server.advance(RING_TIMEOUT_MS).await;
        assert_eq!(redact(bot.next().await.1, &id), failed(7000, "blind", why, None), "transfer to {target}");
        let (_, call) = server.graph(Method::GET, &format!("/v1.0/communications/calls/{id}"), &token, None).await;
        assert_eq!(call["state"], "established");
    }
    // Nothing of the failed attempts is left ringing.
    let (_, world) = server.sim(Method::GET, "/world", None).await;
    assert_eq!(world["legs"].as_array().map(Vec::len), Some(1), "{world}");
    let body = json!({"transferTarget": {"identity": {"user": {"id": HEIDI}}}});
    assert_eq!(transfer(&server, &token, &id, body).await.0, 202);
    server.advance(200).await;
    expect_transferred(&mut bot, &id, completed_blind()).await;
}

#[tokio::test]
async fn consultative_failure_when_the_consultation_call_ends_first() {
    let mut bot = Bot::start().await;
    // The transfer must still be in progress when the consultation call ends, whatever the load.
    let server = patient_server(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let a = answered(&server, &mut bot, &token, ALEX, DEMO_BOT).await;
    let consult = call_to_user(&bot.callback("consult"), HEIDI);
    let b = placed(&server, &mut bot, &token, consult).await;
    // Alex, the transferee, takes five seconds to act on the transfer: time for the race.
    let slow = json!({"kind": "answer", "after_ms": 200, "transfer_delay_ms": 5000});
    assert_eq!(server.sim(Method::PUT, &format!("/parties/{ALEX}/behaviour"), Some(slow)).await.0, 200);
    let body = json!({"transferTarget": {"identity": {"user": {"id": HEIDI}}, "replacesCallId": b}});
    assert_eq!(transfer(&server, &token, &a, body).await.0, 202);
    // Heidi hangs up the consultation call before the transferee takes it over.
    assert_eq!(server.sim(Method::POST, &format!("/calls/{b}/hangup"), None).await.0, 204);
    let (for_a, for_b) = by_call(&mut bot, &a, 2, &b, 1).await;
    assert_eq!(for_b, [terminated_note(200, 4521, "The other participant ended the call.")]);
    let context = b.clone();
    assert_eq!(
        for_a,
        [state_note("updated", "transferring"), failed(7700, "consultative", "the transfer target could not be reached", Some(&context))]
    );
    let (_, call) = server.graph(Method::GET, &format!("/v1.0/communications/calls/{a}"), &token, None).await;
    assert_eq!(call["state"], "established");
}

#[tokio::test]
async fn transfer_refusals_are_precise() {
    let mut bot = Bot::start().await;
    // The transfer at the end must still be in progress when the second one is asked for.
    let server = patient_server(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let id = answered(&server, &mut bot, &token, ALEX, DEMO_BOT).await;
    let ringing = server.inbound(HEIDI, DEMO_BOT).await;
    bot.next().await;
    // Rings for as long as Graph allows: the cases below need it still establishing.
    let mut to_sam = call_to_user(&bot.callback("sam"), SILENT_SAM);
    to_sam["ringingTimeoutInSeconds"] = json!(115);
    let (_, other) = server.graph(Method::POST, "/v1.0/communications/calls", &token, Some(to_sam)).await;
    let establishing = other["id"].as_str().unwrap().to_owned();
    bot.next().await;
    let legacy = server.token(LEGACY_BOT, CONTOSO).await;
    let (_, foreign) = server
        .graph(
            Method::POST,
            "/v1.0/communications/calls",
            &legacy,
            Some(json!({
                "callbackUri": bot.callback("legacy"), "mediaConfig": service_hosted(),
                "targets": [{"identity": {"user": {"id": HEIDI}}}]
            })),
        )
        .await;
    let foreign = foreign["id"].as_str().unwrap().to_owned();
    let heidi = json!({"user": {"id": HEIDI}});
    let cases: Vec<(String, Value, u16, &str)> = vec![
        (id.clone(), json!({}), 400, "transferTarget: is required"),
        (id.clone(), json!({"transferTarget": {}}), 400, "transferTarget.identity: is required"),
        (id.clone(), json!({"transferTarget": {"identity": {"user": {"id": "nobody"}}}}), 400, "user 'nobody' does not exist"),
        (id.clone(), json!({"transferTarget": {"identity": {"user": {"id": FIONA}}}}), 403, "calls across tenants are not allowed"),
        (
            id.clone(),
            json!({"transferTarget": {"identity": {"user": {"id": HEIDI, "tenantId": FABRIKAM}}}}),
            400,
            "is not the tenant of user",
        ),
        (id.clone(), json!({"transferTarget": {"identity": {"user": {"id": ALEX}}}}), 409, "the transfer target is the transferee itself"),
        (
            id.clone(),
            json!({"transferTarget": {"identity": {"application": {"id": DEMO_BOT}}}}),
            403,
            "the transfer target is this bot itself",
        ),
        (
            id.clone(),
            json!({"transferTarget": {"identity": {"applicationInstance": {"id": RECEPTION}}}}),
            403,
            "the transfer target is this bot itself",
        ),
        (
            id.clone(),
            json!({"transferTarget": {"identity": {"phone": {"id": "+12345678901"}}}}),
            403,
            "reached the bot through its application id",
        ),
        (
            id.clone(),
            json!({"transferTarget": {"identity": heidi}, "clientContext": "x".repeat(257)}),
            400,
            "clientContext: is 257 characters long",
        ),
        (
            id.clone(),
            json!({"transferTarget": {"identity": heidi, "replacesCallId": "nope"}}),
            409,
            "'nope' is not a live call of this application",
        ),
        (id.clone(), json!({"transferTarget": {"identity": heidi, "replacesCallId": id}}), 409, "a call cannot replace itself"),
        (
            id.clone(),
            json!({"transferTarget": {"identity": heidi, "replacesCallId": foreign}}),
            409,
            "is not a live call of this application",
        ),
        (
            id.clone(),
            json!({"transferTarget": {"identity": {"user": {"id": SILENT_SAM}}, "replacesCallId": establishing}}),
            409,
            "the consultation call must be established",
        ),
        (
            id.clone(),
            json!({"transferTarget": {"identity": heidi}, "transferee": {"identity": {"user": {"id": HEIDI}}}}),
            409,
            "transferee.identity: names a party that is not in this call",
        ),
        // A transferee that names nobody is refused on a peer-to-peer call too, as the schema says.
        (
            id.clone(),
            json!({"transferTarget": {"identity": heidi}, "transferee": {"participantId": null}}),
            400,
            "transferee: must name the participant by participantId or identity",
        ),
        (
            ringing.clone(),
            json!({"transferTarget": {"identity": {"user": {"id": ALEX}}}}),
            409,
            "Cannot transfer a call in state 'incoming'",
        ),
        (establishing.clone(), json!({"transferTarget": {"identity": heidi}}), 409, "Cannot transfer a call in state 'establishing'"),
        ("nope".to_owned(), json!({"transferTarget": {"identity": heidi}}), 404, "Call not found"),
    ];
    for (call, body, status, fragment) in cases {
        let (got, resp) = transfer(&server, &token, &call, body.clone()).await;
        assert_eq!(got, status, "{body}: {resp}");
        assert!(resp["error"]["message"].as_str().unwrap_or_default().contains(fragment), "{body}: {resp}");
    }
    // A second transfer while one is in progress.
    let body = json!({"transferTarget": {"identity": {"user": {"id": SILENT_SAM}}}});
    assert_eq!(transfer(&server, &token, &id, body.clone()).await.0, 202);
    let (status, resp) = transfer(&server, &token, &id, body).await;
    assert_eq!(
        (status, resp["error"]["message"].as_str()),
        (409, Some("Cannot transfer a call in state 'transferring'; transfer needs state 'established'."))
    );
    // Of all that, only the one accepted transfer reached the bot about this call.
    let first = loop {
        let (_, item) = bot.next().await;
        if item["resourceUrl"].as_str().unwrap_or_default().ends_with(&id) {
            break item;
        }
    };
    assert_eq!(redact(first, &id), state_note("updated", "transferring"));
}

#[tokio::test]
async fn lenient_input_forms_are_accepted() {
    let mut bot = Bot::start().await;
    let server = Server::start(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let bodies = [
        // Namespace-qualified action, tenantId inside the identity, transferee of the right party.
        (
            "microsoft.graph.transfer",
            json!({"transferTarget": {"identity": {"user": {"id": HEIDI, "tenantId": CONTOSO}}}, "transferee": {"identity": {"user": {"id": ALEX}}}}),
        ),
        // Upper-case action and property names; an unknown property.
        ("Transfer", json!({"TransferTarget": {"Identity": {"User": {"Id": HEIDI}}, "somethingNew": 1}})),
        // The 2018 beta shape: a bare `target` identitySet and top-level clientContext.
        ("transfer", json!({"target": {"user": {"id": HEIDI}}, "clientContext": "ctx"})),
    ];
    for (action, body) in bodies {
        let id = answered(&server, &mut bot, &token, ALEX, DEMO_BOT).await;
        let (status, resp) =
            server.graph(Method::POST, &format!("/beta/communications/calls/{id}/{action}"), &token, Some(body.clone())).await;
        assert_eq!(status, 202, "{body}: {resp}");
        expect_transferred(&mut bot, &id, completed_blind()).await;
    }
}

#[tokio::test]
async fn races_end_in_exactly_one_outcome() {
    let mut bot = Bot::start().await;
    // Each hang-up must come while the target still rings: the transfer deadline is far off.
    let server = patient_server(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let to_sam = json!({"transferTarget": {"identity": {"user": {"id": SILENT_SAM}}}});

    // The transferee hangs up while the target rings.
    let id = answered(&server, &mut bot, &token, ALEX, DEMO_BOT).await;
    assert_eq!(transfer(&server, &token, &id, to_sam.clone()).await.0, 202);
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "transferring"));
    assert_eq!(server.sim(Method::POST, &format!("/calls/{id}/hangup"), None).await.0, 204);
    assert_eq!(redact(bot.next().await.1, &id), terminated_note(200, 4521, "The other participant ended the call."));

    // The bot hangs up while the target rings.
    let id = answered(&server, &mut bot, &token, ALEX, DEMO_BOT).await;
    assert_eq!(transfer(&server, &token, &id, to_sam).await.0, 202);
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "transferring"));
    assert_eq!(server.graph(Method::DELETE, &format!("/v1.0/communications/calls/{id}"), &token, None).await.0, 204);
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "terminating"));
    assert_eq!(redact(bot.next().await.1, &id), terminated_note(200, 7000, "The call was ended by the application."));

    // The target answers and hangs up at once: the transfer completed; the rest is between them.
    server
        .sim(Method::PUT, &format!("/parties/{HEIDI}/behaviour"), Some(json!({"kind": "answer", "after_ms": 50, "hang_up_after_ms": 0})))
        .await;
    let id = answered(&server, &mut bot, &token, ALEX, DEMO_BOT).await;
    assert_eq!(transfer(&server, &token, &id, json!({"transferTarget": {"identity": {"user": {"id": HEIDI}}}})).await.0, 202);
    expect_transferred(&mut bot, &id, completed_blind()).await;

    // No leg left behind: the hang-ups cancelled the ringing target, whose deadline is still far off
    // (only Heidi's hang-up, scheduled when she answered, may still be on its way).
    let mut world = Value::Null;
    for _ in 0..50 {
        world = server.sim(Method::GET, "/world", None).await.1;
        if world["legs"] == json!([]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(world["legs"], json!([]), "{world}");
    // And nothing after any call's `deleted`.
    bot.expect_silence(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn a_transfer_survives_kill_9() {
    let mut bot = Bot::start().await;
    // The transfer's deadline survives the restart: kill, start, recovery and Heidi's answer must fit in it.
    let mut server = patient_server(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    // Before the restart Heidi would answer only after 10 s, so the target still rings at the kill
    // (run-time overrides are not kept across a restart).
    let slow = json!({"kind": "answer", "after_ms": 10_000});
    assert_eq!(server.sim(Method::PUT, &format!("/parties/{HEIDI}/behaviour"), Some(slow)).await.0, 200);
    let id = answered(&server, &mut bot, &token, ALEX, DEMO_BOT).await;
    assert_eq!(transfer(&server, &token, &id, json!({"transferTarget": {"identity": {"user": {"id": HEIDI}}}})).await.0, 202);
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "transferring"));
    server.settled().await;
    server.restart().await;
    // After the restart Heidi rings again (her directory behaviour: answer after 200 ms) and the
    // transfer reaches its one outcome.
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "transferAccepted"));
    assert_eq!(redact(bot.next().await.1, &id), accepted_media_note());
    assert_eq!(redact(bot.next().await.1, &id), completed_blind());
    bot.expect_silence(Duration::from_millis(300)).await;
}

/// The identity set of the Demo Bot or one of its instances, as `incomingContext.transferor` carries it.
fn transferor(kind: &str, id: &str, name: &str, tenant: Option<&str>) -> Value {
    let mut identity = json!({"@odata.type": "#microsoft.graph.identity", "id": id, "displayName": name});
    if let Some(t) = tenant {
        identity["tenantId"] = json!(t);
    }
    let set = if kind == "applicationInstance" { "#microsoft.graph.communicationsIdentitySet" } else { "#microsoft.graph.identitySet" };
    json!({"@odata.type": set, kind: identity})
}

/// The call the target bot is offered: its id and `resourceData`, after checking it is an ordinary
/// incoming call from `from` that names the transferor.
async fn offered(target: &mut Bot, from: &str, transferor: Value, source_participant: &str) -> (String, Value) {
    let (_, created) = target.next().await;
    assert_eq!(created["changeType"], "created", "{created}");
    let data = created["resourceData"].clone();
    assert_eq!(data["state"], "incoming");
    assert_eq!(data["direction"], "incoming");
    assert_eq!(data["source"]["identity"]["user"]["id"], from);
    assert_eq!(
        data["incomingContext"],
        json!({
            "@odata.type": "#microsoft.graph.incomingContext",
            "sourceParticipantId": source_participant,
            "transferor": transferor
        })
    );
    (data["id"].as_str().expect("offered call id").to_owned(), data)
}

/// The participant id of the bot's peer in `call` (the transferee).
async fn peer_participant(server: &Server, token: &str, call: &str) -> String {
    let (_, list) = server.graph(Method::GET, &format!("/v1.0/communications/calls/{call}/participants"), token, None).await;
    let peers: Vec<&Value> = list["value"]
        .as_array()
        .expect("participants")
        .iter()
        .filter(|p| p["info"]["identity"].get("user").is_some() || p["info"]["identity"].get("phone").is_some())
        .collect();
    assert_eq!(peers.len(), 1, "{list}");
    peers[0]["id"].as_str().expect("participant id").to_owned()
}

#[tokio::test]
async fn a_bot_as_target_gets_an_ordinary_incoming_call_that_names_the_transferor() {
    let mut bot = Bot::start().await;
    let mut target = Bot::start().await;
    // The target bot answers or rejects while the transfer is in progress: its deadline is far off.
    let mut extra = vec!["--legacy-webhook".into(), target.webhook()];
    extra.extend(long_ring_timeout());
    let server = Server::start_with(Options { demo_webhook: Some(bot.webhook()), extra }).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let legacy = server.token(LEGACY_BOT, CONTOSO).await;

    // Alex called the Demo Bot on its app id; the Legacy Bot answers the call transferred to it.
    let a = answered(&server, &mut bot, &token, ALEX, DEMO_BOT).await;
    let alex = peer_participant(&server, &token, &a).await;
    let body = json!({"transferTarget": {"identity": {"application": {"id": LEGACY_BOT, "displayName": "Legacy Bot"}}}});
    assert_eq!(transfer(&server, &token, &a, body).await.0, 202);
    assert_eq!(redact(bot.next().await.1, &a), state_note("updated", "transferring"));
    let demo_bot = transferor("application", DEMO_BOT, "Demo Bot", None);
    let (c, data) = offered(&mut target, ALEX, demo_bot, &alex).await;
    assert_eq!(data["targets"][0]["identity"]["application"]["id"], LEGACY_BOT);
    let (status, _) =
        server.graph(Method::POST, &format!("/beta/app/calls/{c}/answer"), &legacy, Some(answer_body(&target.callback(&c)))).await;
    assert_eq!(status, 202);
    let states: Vec<Value> = target.take(2).await.into_iter().map(|i| i["resourceData"]["state"].clone()).collect();
    assert_eq!(states, [json!("establishing"), json!("established")]);
    assert_eq!(redact(bot.next().await.1, &a), state_note("updated", "transferAccepted"));
    assert_eq!(redact(bot.next().await.1, &a), accepted_media_note());
    assert_eq!(redact(bot.next().await.1, &a), completed_blind());
    // Alex's leg now belongs to the Legacy Bot's call.
    let (_, world) = server.sim(Method::GET, "/world", None).await;
    let legs = world["legs"].as_array().expect("legs");
    assert_eq!(legs.len(), 1, "{world}");
    assert_eq!(legs[0]["party"]["id"], ALEX);
    assert_eq!(legs[0]["peer"], json!({"kind": "bot", "callId": c, "appId": LEGACY_BOT}));
    assert_eq!(server.graph(Method::DELETE, &format!("/beta/app/calls/{c}"), &legacy, None).await.0, 204);
    target.take(2).await;

    // Heidi called the Reception instance; the Legacy Bot's instance is busy and rejects: the transfer fails.
    let b = answered(&server, &mut bot, &token, HEIDI, RECEPTION).await;
    let heidi = peer_participant(&server, &token, &b).await;
    let body = json!({"transferTarget": {"identity": {"applicationInstance": {"id": "dddddddd-0000-4000-8000-000000000007"}}}});
    assert_eq!(transfer(&server, &token, &b, body).await.0, 202);
    assert_eq!(redact(bot.next().await.1, &b), state_note("updated", "transferring"));
    let reception = transferor("applicationInstance", RECEPTION, "Contoso Reception", Some(CONTOSO));
    let (c, data) = offered(&mut target, HEIDI, reception, &heidi).await;
    assert_eq!(data["targets"][0]["identity"]["applicationInstance"]["id"], "dddddddd-0000-4000-8000-000000000007");
    let (status, _) = server.graph(Method::POST, &format!("/beta/app/calls/{c}/reject"), &legacy, Some(json!({"reason": "busy"}))).await;
    assert_eq!(status, 202);
    assert_eq!(target.next().await.1["resourceData"]["state"], "terminated");
    assert_eq!(redact(bot.next().await.1, &b), failed(7000, "blind", "the transfer target is busy", None));
    let (_, call) = server.graph(Method::GET, &format!("/v1.0/communications/calls/{b}"), &token, None).await;
    assert_eq!(call["state"], "established");
    bot.expect_silence(Duration::from_millis(300)).await;
    target.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn a_target_bot_that_never_answers_times_the_transfer_out() {
    let mut bot = Bot::start().await;
    let mut target = Bot::start().await;
    // The deadline is what this tests: the usual 3 s ring timeout, in virtual time.
    let server = virtual_server(&bot, &["--legacy-webhook", &target.webhook()]).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    // Heidi called the Reception instance.
    let b = answered(&server, &mut bot, &token, HEIDI, RECEPTION).await;
    let heidi = peer_participant(&server, &token, &b).await;
    let reception = transferor("applicationInstance", RECEPTION, "Contoso Reception", Some(CONTOSO));

    // The target bot never answers: the transfer times out, and the call offered to it ends too.
    let body = json!({"transferTarget": {"identity": {"application": {"id": LEGACY_BOT}}}});
    assert_eq!(transfer(&server, &token, &b, body).await.0, 202);
    assert_eq!(redact(bot.next().await.1, &b), state_note("updated", "transferring"));
    let (c, _) = offered(&mut target, HEIDI, reception, &heidi).await;
    server.advance(RING_TIMEOUT_MS - 1).await;
    bot.expect_silence(Duration::from_millis(100)).await;
    server.advance(1).await;
    assert_eq!(redact(bot.next().await.1, &b), failed(7000, "blind", "the transfer target did not answer", None));
    let (_, ended) = target.next().await;
    assert_eq!(ended["changeType"], "deleted");
    assert_eq!(ended["resource"], format!("/app/calls/{c}"));
    assert_eq!(ended["resourceData"]["resultInfo"]["subCode"], "4521");
    // Heidi is still with the Demo Bot, and nothing else happens to either bot.
    let (_, call) = server.graph(Method::GET, &format!("/v1.0/communications/calls/{b}"), &token, None).await;
    assert_eq!(call["state"], "established");
    bot.expect_silence(Duration::from_millis(300)).await;
    target.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn a_transfer_to_a_bot_survives_kill_9() {
    let mut bot = Bot::start().await;
    let mut target = Bot::start().await;
    // The transfer's deadline survives the restart; a loaded machine must not reach it by accident.
    let mut extra = vec!["--legacy-webhook".into(), target.webhook()];
    extra.extend(long_ring_timeout());
    let mut server = Server::start_with(Options { demo_webhook: Some(bot.webhook()), extra }).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let a = answered(&server, &mut bot, &token, ALEX, DEMO_BOT).await;
    let alex = peer_participant(&server, &token, &a).await;
    let body = json!({"transferTarget": {"identity": {"application": {"id": LEGACY_BOT}}}});
    assert_eq!(transfer(&server, &token, &a, body).await.0, 202);
    assert_eq!(redact(bot.next().await.1, &a), state_note("updated", "transferring"));
    let demo_bot = transferor("application", DEMO_BOT, "Demo Bot", None);
    let (first, _) = offered(&mut target, ALEX, demo_bot.clone(), &alex).await;
    server.settled().await;
    server.restart().await;
    // The offer that was not answered is withdrawn (the caller left it), and the transfer offers the
    // call again; the Legacy Bot answers that one.
    let mut withdrawn = None;
    let mut again = None;
    while withdrawn.is_none() || again.is_none() {
        let (_, item) = target.next().await;
        match item["changeType"].as_str() {
            Some("deleted") => withdrawn = Some(item),
            Some("created") => again = Some(item),
            other => panic!("unexpected {other:?}: {item}"),
        }
    }
    let withdrawn = withdrawn.unwrap();
    assert_eq!(withdrawn["resource"], format!("/app/calls/{first}"));
    assert_eq!(withdrawn["resourceData"]["resultInfo"]["subCode"], "4521");
    let again = again.unwrap()["resourceData"].clone();
    assert_eq!(again["incomingContext"]["transferor"], demo_bot);
    let c = again["id"].as_str().unwrap().to_owned();
    assert_ne!(c, first);
    let legacy = server.token(LEGACY_BOT, CONTOSO).await;
    let (status, _) =
        server.graph(Method::POST, &format!("/beta/app/calls/{c}/answer"), &legacy, Some(answer_body(&target.callback(&c)))).await;
    assert_eq!(status, 202);
    assert_eq!(redact(bot.next().await.1, &a), state_note("updated", "transferAccepted"));
    assert_eq!(redact(bot.next().await.1, &a), accepted_media_note());
    assert_eq!(redact(bot.next().await.1, &a), completed_blind());
    bot.expect_silence(Duration::from_millis(300)).await;
}

/// Invariant 2 under real concurrency: the transfer request, the transferee hanging up, the bot hanging
/// up and the target answering are sent at once, with the target's answer and the hang-ups shifted a
/// few milliseconds each round. Whatever wins, every request gets a 2xx or a 4xx (never a conflict the
/// engine failed to serialise), every call ends exactly once, its transfer has at most one outcome,
/// nothing follows `deleted`, and the sim's world holds no leg paired with a missing one.
#[tokio::test]
async fn concurrent_commands_and_network_events_end_each_transfer_once() {
    let mut bot = Bot::start().await;
    let server = patient_server(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    for round in 0..18u64 {
        // Every third round sends everything in the same instant; the others spread it out.
        let spread = u64::from(round % 3 != 0);
        let answer_after = spread * ((round * 7) % 40);
        let (hang_up_at, delete_at) = (spread * ((round * 11) % 45), spread * ((round * 13) % 50));
        let behaviour = json!({"kind": "answer", "after_ms": answer_after});
        assert_eq!(server.sim(Method::PUT, &format!("/parties/{HEIDI}/behaviour"), Some(behaviour)).await.0, 200);
        let id = answered(&server, &mut bot, &token, ALEX, DEMO_BOT).await;
        let to_heidi = json!({"transferTarget": {"identity": {"user": {"id": HEIDI}}}});
        let after = |ms: u64| tokio::time::sleep(Duration::from_millis(ms));
        let (transferred, hung_up, deleted) = tokio::join!(
            transfer(&server, &token, &id, to_heidi),
            async {
                after(hang_up_at).await;
                server.sim(Method::POST, &format!("/calls/{id}/hangup"), None).await.0
            },
            async {
                after(delete_at).await;
                server.graph(Method::DELETE, &format!("/v1.0/communications/calls/{id}"), &token, None).await.0
            },
        );
        // Each request either acted or found the call already past it.
        assert!([202, 404, 409].contains(&transferred.0), "round {round}: transfer {transferred:?}");
        assert!([204, 404, 409].contains(&hung_up), "round {round}: sim hang-up {hung_up}");
        assert!([204, 404].contains(&deleted), "round {round}: DELETE {deleted}");

        let mut transcript = Vec::new();
        loop {
            let (_, item) = bot.next().await;
            assert_eq!(item["resourceUrl"], format!("/communications/calls/{id}"), "round {round}: another call's notification");
            let ended = item["changeType"] == "deleted";
            transcript.push(redact(item, &id));
            if ended {
                break;
            }
        }
        let states: Vec<&str> = transcript.iter().map(|n| n["resourceData"]["state"].as_str().unwrap_or_default()).collect();
        let accepted = transcript.iter().filter(|n| **n == state_note("updated", "transferAccepted")).count();
        let completed = transcript.last().is_some_and(|n| *n == completed_blind());
        let failed = transcript.iter().filter(|n| n["resourceData"]["resultInfo"]["code"] == 500).count();
        // Heidi always answers, and a transferee who leaves ends a peer-to-peer call: no transfer fails
        // here. The bot may still hang up between the acceptance and the completion.
        assert!(accepted <= 1 && failed == 0, "round {round}: {states:?}");
        assert!(!completed || accepted == 1, "round {round}: completed without being accepted: {transcript:?}");
        if transferred.0 != 202 {
            assert!(!states.contains(&"transferring"), "round {round}: {states:?}");
        }
    }
    // Nothing after any call's `deleted`, and the world is consistent: every leg paired with a leg
    // points at one that points back.
    bot.expect_silence(Duration::from_millis(300)).await;
    let (_, world) = server.sim(Method::GET, "/world", None).await;
    let legs = world["legs"].as_array().cloned().unwrap_or_default();
    for leg in &legs {
        assert_ne!(leg["peer"]["kind"], "bot", "a leg of a call that ended: {world}");
        assert_ne!(leg["peer"]["kind"], "transfer", "a target ringing for a transfer that is over: {world}");
        if leg["peer"]["kind"] == "leg" {
            let other = legs.iter().find(|l| l["id"] == leg["peer"]["legId"]);
            assert!(other.is_some_and(|o| o["peer"]["legId"] == leg["id"]), "unpaired leg {leg}: {world}");
        }
    }
}

/// Issue 16, V1 through a restart: the transferee takes 1.5 s to act on a consultative transfer whose
/// deadline is 1 s, and the server is killed in between. After the restart the deadline stops the
/// takeover: the transfer fails once (500/7700), and the consultation call keeps its party.
#[tokio::test]
async fn a_takeover_after_its_deadline_stays_stopped_across_kill_9() {
    let mut bot = Bot::start().await;
    // Alex's slowness is configured, so that it survives the restart (run-time overrides do not).
    let alex = "id = \"751f6800-3180-414d-bd94-333364659951\"\ndisplay_name = \"Alex Wilber\"\ntenant_id = \"aaaaaaaa-0000-4000-8000-000000000001\"\n";
    let config = switchboard::config::EXAMPLE_TOML.replacen(
        alex,
        &format!("{alex}behaviour = {{ kind = \"answer\", after_ms = 200, transfer_delay_ms = 1500 }}\n"),
        1,
    );
    assert_ne!(config, switchboard::config::EXAMPLE_TOML, "Alex is in the example");
    let file = std::env::temp_dir().join(format!("switchboard-slow-alex-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&file, config).unwrap();
    let file = file.display().to_string();
    let mut server = virtual_server(&bot, &["--ring-timeout-ms", "1000", "--config", &file]).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let a = answered(&server, &mut bot, &token, ALEX, DEMO_BOT).await;
    let (status, call) =
        server.graph(Method::POST, "/v1.0/communications/calls", &token, Some(call_to_user(&bot.callback("b"), HEIDI))).await;
    assert_eq!(status, 201, "{call}");
    let b = call["id"].as_str().unwrap().to_owned();
    server.advance(200).await;
    bot.take(2).await;
    let body = json!({"transferTarget": {"identity": {"user": {"id": HEIDI}}, "replacesCallId": b}});
    assert_eq!(transfer(&server, &token, &a, body).await.0, 202);
    let deadline = server.advance(0).await["nowMs"].as_u64().unwrap() + 1_000;
    assert_eq!(redact(bot.next().await.1, &a), state_note("updated", "transferring"));
    server.advance(500).await;
    server.settled().await;
    server.kill9();
    server.restart().await;
    // Virtual time starts again from the wall clock, and the transferee's delay starts over (1.5 s from
    // now). The deadline, at most 1 s from now, comes first.
    let now = server.advance(0).await["nowMs"].as_u64().unwrap();
    server.advance(deadline.saturating_sub(now)).await;
    assert_eq!(redact(bot.next().await.1, &a), failed(7700, "consultative", "the transfer target did not answer", Some(&b)));
    server.advance(5_000).await;
    bot.expect_silence(Duration::from_millis(300)).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    for id in [&a, &b] {
        let (_, call) = server.graph(Method::GET, &format!("/v1.0/communications/calls/{id}"), &token, None).await;
        assert_eq!(call["state"], "established", "{id}: {call}");
    }
    let (_, world) = server.sim(Method::GET, "/world", None).await;
    let peers: Vec<(String, String)> = world["legs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| (l["party"]["id"].as_str().unwrap_or_default().to_owned(), l["peer"]["callId"].as_str().unwrap_or_default().to_owned()))
        .collect();
    assert!(peers.contains(&(ALEX.to_owned(), a.clone())) && peers.contains(&(HEIDI.to_owned(), b.clone())), "{world}");
    let _ = std::fs::remove_file(&file);
}

/// Issue 16, V3: several inbound calls posted at once with one `callId`: one is placed, the others are
/// refused with 409, and the one placed lives on with its leg.
#[tokio::test]
async fn racing_sim_calls_with_one_id_place_exactly_one() {
    let mut bot = Bot::start().await;
    let server = patient_server(&bot).await;
    for round in 0..5 {
        let id = format!("racing-{round}");
        let body = json!({"from": ALEX, "to": DEMO_BOT, "callId": id});
        let posts = (0..8).map(|_| server.sim(Method::POST, "/calls", Some(body.clone())));
        let statuses: Vec<u16> = futures_join_all(posts).await.into_iter().map(|(s, _)| s).collect();
        assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
        assert!(statuses.iter().all(|s| [201, 409].contains(s)), "{statuses:?}");
        assert_eq!(bot.next().await.1["changeType"], "created");
        bot.expect_silence(Duration::from_millis(100)).await;
        let (_, world) = server.sim(Method::GET, "/world", None).await;
        let legs = world["legs"].as_array().cloned().unwrap_or_default();
        assert_eq!(legs.iter().filter(|l| l["peer"]["callId"] == id.as_str()).count(), 1, "{world}");
        assert_eq!(server.sim(Method::POST, &format!("/calls/{id}/hangup"), None).await.0, 204);
        assert_eq!(bot.next().await.1["changeType"], "deleted");
    }
}

/// Runs futures concurrently on this task and collects their outputs in order.
async fn futures_join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = futures.map(Box::pin).collect();
    let mut out = Vec::with_capacity(handles.len());
    let mut pending: Vec<_> = handles.into_iter().map(Some).collect();
    let mut results: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (i, slot) in pending.iter_mut().enumerate() {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        results[i] = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
    })
    .await;
    out.extend(results.into_iter().flatten());
    out
}
