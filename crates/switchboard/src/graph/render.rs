//! Graph JSON out: the `call` resource and `commsNotification`s, exactly as Graph shows them.

use serde_json::{Map, Value, json};
use switchboard_core::call::{Call, CallState, ChangeType, MediaConfig, MediaState, Notification, Operation, OperationStatus};
use switchboard_core::media::OperationKind;
use switchboard_core::party::Party;
use switchboard_core::result::ResultInfo;

/// The path of a call relative to the version root, as notifications' `resourceUrl` carries it.
pub fn call_path(id: &str) -> String {
    format!("/communications/calls/{id}")
}

/// An `identitySet` naming one party.
pub fn identity_set(party: &Party) -> Value {
    let (key, identity) = match party {
        Party::User { id, display_name, tenant_id } => {
            ("user", json!({"@odata.type": "#microsoft.graph.identity", "id": id, "displayName": display_name, "tenantId": tenant_id}))
        }
        Party::Phone { number } => ("phone", json!({"@odata.type": "#microsoft.graph.identity", "id": number})),
        Party::Application { id, display_name } => {
            ("application", json!({"@odata.type": "#microsoft.graph.identity", "id": id, "displayName": display_name}))
        }
        Party::ApplicationInstance { id, display_name, tenant_id } => (
            "applicationInstance",
            json!({"@odata.type": "#microsoft.graph.identity", "id": id, "displayName": display_name, "tenantId": tenant_id}),
        ),
    };
    // `phone` and `applicationInstance` are declared on communicationsIdentitySet only; labelled so,
    // the SDKs read them as typed properties.
    let set_type = match party {
        Party::Phone { .. } | Party::ApplicationInstance { .. } => "#microsoft.graph.communicationsIdentitySet",
        _ => "#microsoft.graph.identitySet",
    };
    let mut set = Map::new();
    set.insert("@odata.type".into(), json!(set_type));
    set.insert(key.into(), identity);
    Value::Object(set)
}

/// The participants of a call, with their ids: the bot (`me`, when the directory still knows it), then
/// the party at the far end of a peer-to-peer call or the members of a group call that have joined.
pub fn participants(call: &Call, me: Option<&Party>) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    if let Some(me) = me {
        let mut bot = participant(&call.my_participant_id, me);
        // The bot's own mute and recording status (`mute`, `updateRecordingStatus`).
        bot["isMuted"] = json!(call.media.muted);
        if let Some(status) = call.media.recording_status {
            bot["recordingInfo"] = json!({
                "@odata.type": "#microsoft.graph.recordingInfo",
                "initiator": identity_set(me),
                "recordingStatus": status.as_str(),
            });
        }
        out.push((call.my_participant_id.clone(), bot));
    }
    if call.group {
        for m in call.members.iter().filter(|m| m.joined) {
            let mut p = participant(&m.participant_id, &m.party);
            p["isMuted"] = json!(m.muted);
            out.push((m.participant_id.clone(), p));
        }
    } else {
        out.push((call.peer_participant_id.clone(), participant(&call.peer_participant_id, call.remote())));
    }
    out
}

/// A `participant` resource.
pub fn participant(id: &str, party: &Party) -> Value {
    json!({
        "@odata.type": "#microsoft.graph.participant",
        "id": id,
        "info": participant_info(party),
        "isInLobby": false,
        "isMuted": false,
        "mediaStreams": [{
            "@odata.type": "#microsoft.graph.mediaStream",
            "mediaType": "audio",
            "label": null,
            "sourceId": "1",
            "direction": "sendReceive",
            "serverMuted": false
        }],
        "metadata": null,
        "recordingInfo": null,
        "removedState": null,
        "restrictedExperience": null,
        "rosterSequenceNumber": 0
    })
}

pub fn participant_info(party: &Party) -> Value {
    json!({"@odata.type": "#microsoft.graph.participantInfo", "identity": identity_set(party)})
}

pub fn invitation_participant_info(party: &Party) -> Value {
    json!({"@odata.type": "#microsoft.graph.invitationParticipantInfo", "identity": identity_set(party)})
}

pub fn result_info(info: &ResultInfo) -> Value {
    json!({"@odata.type": "#microsoft.graph.resultInfo", "code": info.code, "subcode": info.subcode, "message": info.message})
}

fn media_state(state: MediaState) -> Value {
    let audio = match state {
        MediaState::Active => "active",
        MediaState::Inactive => "inactive",
    };
    json!({"@odata.type": "#microsoft.graph.callMediaState", "audio": audio})
}

/// `GET call`'s answer as bytes: exactly `call()` with `@odata.context`, serialised in its key
/// order, but written straight out: building the `Value` tree cost a tenth of a GET's CPU.
/// `direct_rendering_is_byte_for_byte_the_tree` keeps the two the same.
pub fn call_with_context(c: &Call, context: &str) -> Vec<u8> {
    // Fields in the order a `serde_json::Map` (a BTreeMap) sorts them.
    #[derive(serde::Serialize)]
    struct Out<'a> {
        #[serde(rename = "@odata.context")]
        context: &'a str,
        #[serde(rename = "@odata.type")]
        odata_type: &'static str,
        #[serde(rename = "callChainId")]
        call_chain_id: &'a str,
        #[serde(rename = "callOptions")]
        call_options: (),
        #[serde(rename = "callRoutes")]
        call_routes: [(); 0],
        #[serde(rename = "callbackUri", skip_serializing_if = "Option::is_none")]
        callback_uri: Option<&'a str>,
        #[serde(rename = "chatInfo")]
        chat_info: (),
        direction: &'static str,
        id: &'a str,
        #[serde(rename = "incomingContext")]
        incoming_context: Option<Value>,
        #[serde(rename = "mediaConfig")]
        media_config: MediaConfigOut,
        #[serde(rename = "mediaState")]
        media_state: MediaStateOut,
        #[serde(rename = "meetingInfo")]
        meeting_info: (),
        #[serde(rename = "myParticipantId")]
        my_participant_id: &'a str,
        #[serde(rename = "requestedModalities")]
        requested_modalities: &'a [String],
        #[serde(rename = "resultInfo")]
        result_info: Option<Value>,
        source: Value,
        state: &'static str,
        subject: Option<&'a str>,
        targets: Value,
        #[serde(rename = "tenantId")]
        tenant_id: &'a str,
        #[serde(rename = "terminationReason", skip_serializing_if = "Option::is_none")]
        termination_reason: Option<&'a str>,
        #[serde(rename = "toneInfo")]
        tone_info: (),
        transcription: (),
    }
    #[derive(serde::Serialize)]
    struct MediaConfigOut {
        #[serde(rename = "@odata.type")]
        odata_type: &'static str,
    }
    #[derive(serde::Serialize)]
    struct MediaStateOut {
        #[serde(rename = "@odata.type")]
        odata_type: &'static str,
        audio: &'static str,
    }
    let out = Out {
        context,
        odata_type: "#microsoft.graph.call",
        call_chain_id: &c.call_chain_id,
        call_options: (),
        call_routes: [],
        callback_uri: c.callback_uri.as_deref(),
        chat_info: (),
        direction: match c.direction {
            switchboard_core::call::Direction::Incoming => "incoming",
            switchboard_core::call::Direction::Outgoing => "outgoing",
        },
        id: &c.id,
        incoming_context: c.transferor.as_ref().map(|t| {
            json!({
                "@odata.type": "#microsoft.graph.incomingContext",
                "sourceParticipantId": c.peer_participant_id,
                "transferor": identity_set(t),
            })
        }),
        media_config: MediaConfigOut {
            odata_type: match c.media_config {
                MediaConfig::ServiceHosted => "#microsoft.graph.serviceHostedMediaConfig",
                MediaConfig::AppHosted => "#microsoft.graph.appHostedMediaConfig",
            },
        },
        media_state: MediaStateOut {
            odata_type: "#microsoft.graph.callMediaState",
            audio: match c.media_state {
                MediaState::Active => "active",
                MediaState::Inactive => "inactive",
            },
        },
        meeting_info: (),
        my_participant_id: &c.my_participant_id,
        requested_modalities: &c.requested_modalities,
        result_info: c.result_info.as_ref().map(result_info),
        source: participant_info(&c.source),
        state: c.state.as_str(),
        subject: c.subject.as_deref(),
        targets: targets(c),
        tenant_id: &c.tenant_id,
        termination_reason: c.termination_reason.as_deref(),
        tone_info: (),
        transcription: (),
    };
    serde_json::to_vec(&out).unwrap_or_default()
}

/// The whole `call` resource, as GET returns it and the `incoming` notification carries it.
pub fn call(call: &Call) -> Value {
    let media_config = match call.media_config {
        MediaConfig::ServiceHosted => {
            json!({"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"})
        }
        MediaConfig::AppHosted => json!({"@odata.type": "#microsoft.graph.appHostedMediaConfig"}),
    };
    let mut v = json!({
        "@odata.type": "#microsoft.graph.call",
        "id": call.id,
        "state": call.state.as_str(),
        "direction": match call.direction {
            switchboard_core::call::Direction::Incoming => "incoming",
            switchboard_core::call::Direction::Outgoing => "outgoing",
        },
        "callChainId": call.call_chain_id,
        "myParticipantId": call.my_participant_id,
        "tenantId": call.tenant_id,
        "subject": call.subject,
        "source": participant_info(&call.source),
        "targets": targets(call),
        "requestedModalities": call.requested_modalities,
        "mediaConfig": media_config,
        "mediaState": media_state(call.media_state),
        "resultInfo": call.result_info.as_ref().map(result_info),
        "callRoutes": [],
        "chatInfo": null,
        "meetingInfo": null,
        "callOptions": null,
        "incomingContext": call.transferor.as_ref().map(|t| json!({
            "@odata.type": "#microsoft.graph.incomingContext",
            "sourceParticipantId": call.peer_participant_id,
            "transferor": identity_set(t),
        })),
        "toneInfo": null,
        "transcription": null,
    });
    if let Some(obj) = v.as_object_mut() {
        // Not nullable in Graph's schema: an incoming call has no callbackUri until it is answered.
        if let Some(cb) = &call.callback_uri {
            obj.insert("callbackUri".into(), json!(cb));
        }
        if let Some(reason) = &call.termination_reason {
            obj.insert("terminationReason".into(), json!(reason));
        }
    }
    v
}

/// Whom the call was placed to (or, incoming, the bot that was called): a group call's every invitee.
fn targets(call: &Call) -> Value {
    if call.group {
        call.members.iter().map(|m| invitation_participant_info(&m.party)).collect()
    } else {
        json!([invitation_participant_info(&call.target)])
    }
}

/// A roster update: `updated` on the call's participants, with all of them as they are now (Graph
/// sends the whole roster unless the bot asked for deltas).
fn roster(c: &Call, me: Option<&Party>, resource: &str) -> Value {
    let value: Vec<Value> = participants(c, me).into_iter().map(|(_, p)| p).collect();
    json!({
        "@odata.type": "#microsoft.graph.commsNotification",
        "changeType": "updated",
        "resourceUrl": format!("{resource}/participants"),
        "resourceData": value,
    })
}

/// One `commsNotification` about a call, in today's Graph format. `me` is the bot's own party, for
/// roster updates.
pub fn notification(c: &Call, n: &Notification, me: Option<&Party>, base_url: &str) -> Value {
    if n.roster {
        return roster(c, me, &call_path(&c.id));
    }
    if let Some(op) = n.operation.as_ref().filter(|_| n.on_operation) {
        let path = format!("{}/operations/{}", call_path(&c.id), op.id);
        let mut data = operation(op, base_url);
        data["@odata.id"] = json!(path);
        return json!({
            "@odata.type": "#microsoft.graph.commsNotification",
            "changeType": "deleted",
            "resourceUrl": path,
            "resourceData": data,
        });
    }
    let resource_data = if n.full {
        let mut full = call(c);
        if let Some(obj) = full.as_object_mut() {
            obj.insert("@odata.id".into(), json!(call_path(&c.id)));
        }
        full
    } else {
        let mut data = Map::new();
        data.insert("@odata.type".into(), json!("#microsoft.graph.call"));
        data.insert("state".into(), json!(n.state.as_str()));
        if let Some(m) = n.media_state {
            data.insert("mediaState".into(), media_state(m));
        }
        if let Some(info) = &n.result_info {
            data.insert("resultInfo".into(), result_info(info));
        }
        if let Some(reason) = &n.termination_reason {
            data.insert("terminationReason".into(), json!(reason));
        }
        if let Some(context) = &n.replaces_context {
            data.insert("replacesContext".into(), json!(context));
        }
        if let Some(t) = &n.tone {
            data.insert(
                "toneInfo".into(),
                json!({"@odata.type": "#microsoft.graph.toneInfo", "sequenceId": t.sequence_id, "tone": t.tone.as_str()}),
            );
        }
        Value::Object(data)
    };
    json!({
        "@odata.type": "#microsoft.graph.commsNotification",
        "changeType": n.change,
        "resourceUrl": call_path(&c.id),
        "resourceData": resource_data,
    })
}

/// The POST body that carries a batch of notifications, each already rendered as the outbox holds it
/// (JSON text, written as is: no parse and serialise again per POST); the 2018 format had no
/// `@odata.type` on it.
pub fn notifications_envelope<'a>(items: impl IntoIterator<Item = &'a str>, format: super::Format) -> String {
    let mut out = String::from(if format == super::Format::Beta2018 {
        r#"{"value":["#
    } else {
        r##"{"@odata.type":"#microsoft.graph.commsNotifications","value":["##
    });
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(item);
    }
    out.push_str("]}");
    out
}

fn operation_status(status: OperationStatus) -> &'static str {
    match status {
        OperationStatus::Running => "running",
        OperationStatus::Completed => "completed",
        OperationStatus::Failed => "failed",
    }
}

/// The `commsOperation` subtype Graph names each kind of operation by.
pub fn operation_type(kind: OperationKind) -> &'static str {
    match kind {
        OperationKind::Transfer => "#microsoft.graph.commsOperation",
        OperationKind::PlayPrompt => "#microsoft.graph.playPromptOperation",
        OperationKind::Record => "#microsoft.graph.recordOperation",
        OperationKind::SubscribeToTone => "#microsoft.graph.subscribeToToneOperation",
        OperationKind::SendDtmfTones => "#microsoft.graph.sendDtmfTonesOperation",
        OperationKind::CancelMediaProcessing => "#microsoft.graph.cancelMediaProcessingOperation",
        OperationKind::Mute | OperationKind::MuteParticipant => "#microsoft.graph.muteParticipantOperation",
        OperationKind::Invite => "#microsoft.graph.inviteParticipantsOperation",
        OperationKind::StartHoldMusic => "#microsoft.graph.startHoldMusicOperation",
        OperationKind::StopHoldMusic => "#microsoft.graph.stopHoldMusicOperation",
        OperationKind::Unmute => "#microsoft.graph.unmuteParticipantOperation",
        OperationKind::UpdateRecordingStatus => "#microsoft.graph.updateRecordingStatusOperation",
    }
}

/// Where a recording is fetched from (with its `recordingAccessToken` as a bearer token).
pub fn recording_location(base_url: &str, id: &str) -> String {
    format!("{base_url}/recordings/{id}")
}

/// A `commsOperation` as GET, an action's response and its notification show it today. A prompt, a
/// recording and tones say how they ended (`completionReason`, null while running); a recording says
/// where it is (null while running, empty if it failed, as Graph shows a cancelled one).
pub fn operation(op: &Operation, base_url: &str) -> Value {
    let mut v = json!({
        "@odata.type": operation_type(op.kind),
        "id": op.id,
        "clientContext": op.client_context,
        "status": operation_status(op.status),
        "resultInfo": op.result_info.as_ref().map(result_info),
    });
    if matches!(op.kind, OperationKind::PlayPrompt | OperationKind::Record | OperationKind::SendDtmfTones) {
        v["completionReason"] = json!(op.completion_reason.map(|r| r.as_str()));
    }
    if op.kind == OperationKind::Invite {
        let invited: Vec<Value> = op
            .invitees
            .iter()
            .map(|i| {
                let mut info = invitation_participant_info(&i.party);
                // The invitee's id in this call, so the bot can remove it while it rings.
                info["participantId"] = json!(i.participant_id);
                info["replacesCallId"] = json!(i.replaces_call_id);
                info
            })
            .collect();
        v["participants"] = json!(invited);
    }
    if op.kind == OperationKind::Record {
        let (location, token) = match (&op.recording, op.status) {
            (Some(r), _) => (json!(recording_location(base_url, &r.id)), json!(r.access_token)),
            (None, OperationStatus::Running) => (Value::Null, Value::Null),
            (None, _) => (json!(""), json!("")),
        };
        v["recordingLocation"] = location;
        v["recordingAccessToken"] = token;
    }
    v
}

/// The 2018 beta's stringly-typed `resultInfo` of a transfer operation.
fn operation_result_2018(op: &Operation) -> Value {
    match (op.status, &op.result_info) {
        (OperationStatus::Running, _) => json!({"code": "200", "subCode": "transferring"}),
        (OperationStatus::Completed, _) => json!({"code": "200", "subCode": "transferAccepted"}),
        (OperationStatus::Failed, Some(i)) => json!({"code": i.code.to_string(), "subCode": i.subcode.to_string(), "message": i.message}),
        (OperationStatus::Failed, None) => json!({"code": "500", "subCode": "failed"}),
    }
}

/// The path of a call as the 2018 beta named it.
pub fn call_path_2018(id: &str) -> String {
    format!("/app/calls/{id}")
}

/// A `commsOperation` in the 2018 beta's shape (GET and notifications).
pub fn operation_2018(call_id: &str, op: &Operation, etag: u64) -> Value {
    let path = format!("{}/operations/{}", call_path_2018(call_id), op.id);
    json!({
        "@odata.type": "#microsoft.graph.commsOperation",
        "@odata.id": path,
        "@odata.etag": format!("W/\"{etag}\""),
        "id": op.id,
        "clientContext": op.client_context,
        "resultInfo": operation_result_2018(op),
        "status": operation_status(op.status),
    })
}

/// One notification in the 2018 beta format (`resource`, `@odata.id`, `@odata.etag`, string codes),
/// where transfer progress is reported on the transfer's operation, not on the call's state.
/// Returns `None` for what that format did not send (the call-state side of a transfer).
pub fn notification_2018(c: &Call, n: &Notification, etag: u64, me: Option<&Party>, base_url: &str) -> Option<Value> {
    if n.roster {
        let mut item = roster(c, me, &call_path_2018(&c.id));
        let obj = item.as_object_mut()?;
        obj.remove("@odata.type");
        let url = obj.remove("resourceUrl")?;
        obj.insert("resource".into(), url);
        return Some(item);
    }
    if let Some(op) = n.operation.as_ref().filter(|o| n.on_operation && !o.kind.is_transfer()) {
        let path = format!("{}/operations/{}", call_path_2018(&c.id), op.id);
        let mut data = operation(op, base_url);
        data["@odata.id"] = json!(path);
        data["@odata.etag"] = json!(format!("W/\"{etag}\""));
        // That format's codes are strings.
        if let Some(i) = &op.result_info {
            data["resultInfo"] = json!({"code": i.code.to_string(), "subCode": i.subcode.to_string(), "message": i.message});
        }
        return Some(json!({"changeType": "deleted", "resource": path, "resourceData": data}));
    }
    if let Some(op) = &n.operation {
        let change = if op.status == OperationStatus::Running { "updated" } else { "deleted" };
        let mut data = operation_2018(&c.id, op, etag);
        // As the 2018 page shows it: the operation is named by `@odata.id` alone.
        data.as_object_mut().map(|d| d.remove("id"));
        return Some(json!({"changeType": change, "resource": data["@odata.id"].clone(), "resourceData": data}));
    }
    let transfer_side = matches!(n.state, CallState::Transferring | CallState::TransferAccepted);
    if transfer_side {
        return None;
    }
    let mut item = notification(c, n, me, base_url);
    let data = item["resourceData"].as_object_mut()?;
    data.insert("@odata.id".into(), json!(call_path_2018(&c.id)));
    data.insert("@odata.etag".into(), json!(format!("W/\"{etag}\"")));
    // A completed transfer ended the call as "AppTransferred", blind or consultative.
    let transferred = n.change == ChangeType::Deleted && n.result_info.as_ref().is_some_and(|r| r.subcode == 7015 && r.code == 0);
    if transferred {
        data.remove("resultInfo");
        data.insert("terminationReason".into(), json!("AppTransferred"));
    } else if let Some(info) = &n.result_info {
        data.insert(
            "resultInfo".into(),
            json!({"code": info.code.to_string(), "subCode": info.subcode.to_string(), "message": info.message}),
        );
    }
    Some(json!({"changeType": n.change, "resource": call_path_2018(&c.id), "resourceData": item["resourceData"].take()}))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use switchboard_core::call::{Call, IncomingCall, Input, MediaConfig, OutgoingCall};
    use switchboard_core::party::Party;

    fn user(id: &str) -> Party {
        Party::User { id: id.into(), display_name: format!("User \"{id}\""), tenant_id: "t".into() }
    }

    fn placed() -> Call {
        Call::place(placed_req(), 1_000).0
    }

    fn placed_req() -> OutgoingCall {
        OutgoingCall {
            id: "c1".into(),
            app_id: "app".into(),
            tenant_id: "t".into(),
            callback_uri: "https://bot.example/cb?a=1&b=é".into(),
            source: Party::ApplicationInstance { id: "inst".into(), display_name: "Reception".into(), tenant_id: "t".into() },
            target: user("a"),
            application_instance: Some("inst".into()),
            requested_modalities: vec!["audio".into(), "video".into()],
            media_config: MediaConfig::AppHosted,
            subject: Some("Stand\nup".into()),
            my_participant_id: "me".into(),
            peer_participant_id: "p-a".into(),
            call_chain_id: "chain".into(),
            ring_timeout_ms: 30_000,
            members: Vec::new(),
        }
    }

    fn group() -> Call {
        let mut req = placed_req();
        req.members = vec![("p-a".into(), user("a")), ("p-b".into(), user("b"))];
        Call::place(req, 1_000).0
    }

    fn offered(transferor: Option<Party>) -> Call {
        let req = IncomingCall {
            id: "c2".into(),
            app_id: "app".into(),
            tenant_id: "t".into(),
            source: user("caller"),
            target: Party::Application { id: "app".into(), display_name: "Bot".into() },
            application_instance: None,
            my_participant_id: "me2".into(),
            peer_participant_id: "peer2".into(),
            call_chain_id: "chain2".into(),
            transferor,
        };
        Call::offer(req, 1_000).0
    }

    #[test]
    fn the_envelope_is_the_tree_it_replaced() {
        use crate::graph::Format;
        let items = [r#"{"changeType":"updated","resourceData":{"state":"established"}}"#, r#"{"changeType":"deleted"}"#];
        let parsed: Vec<serde_json::Value> = items.iter().map(|i| serde_json::from_str(i).unwrap()).collect();
        assert_eq!(
            super::notifications_envelope(items, Format::Today),
            serde_json::json!({"@odata.type": "#microsoft.graph.commsNotifications", "value": parsed}).to_string()
        );
        assert_eq!(super::notifications_envelope(items, Format::Beta2018), serde_json::json!({"value": parsed}).to_string());
        assert_eq!(super::notifications_envelope([], Format::Beta2018), r#"{"value":[]}"#);
    }

    #[test]
    fn direct_rendering_is_byte_for_byte_the_tree() {
        let mut ended = offered(None);
        ended.handle(Input::Reject { reason: "busy".into() }, 2_000).unwrap();
        let mut answered = offered(Some(user("transferor")));
        answered
            .handle(
                Input::Answer {
                    callback_uri: Some("https://bot/cb".into()),
                    modalities: vec!["audio".into()],
                    media_config: MediaConfig::ServiceHosted,
                },
                2_000,
            )
            .unwrap();
        for c in [placed(), group(), offered(None), offered(Some(user("transferor"))), ended, answered] {
            let ctx = "https://x/v1.0/$metadata#communications/calls/$entity";
            let mut tree = super::call(&c);
            tree.as_object_mut().unwrap().insert("@odata.context".into(), serde_json::json!(ctx));
            assert_eq!(
                String::from_utf8(super::call_with_context(&c, ctx)).unwrap(),
                serde_json::to_string(&tree).unwrap(),
                "call in state {:?}",
                c.state
            );
        }
    }
}
