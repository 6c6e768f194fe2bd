//! Graph JSON out: the `call` resource and `commsNotification`s, exactly as Graph shows them.

use serde_json::{Map, Value, json};
use switchboard_core::call::{Call, MediaConfig, MediaState, Notification};
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
    let mut set = Map::new();
    set.insert("@odata.type".into(), json!("#microsoft.graph.identitySet"));
    set.insert(key.into(), identity);
    Value::Object(set)
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
        "callbackUri": call.callback_uri,
        "callChainId": call.call_chain_id,
        "myParticipantId": call.my_participant_id,
        "tenantId": call.tenant_id,
        "subject": call.subject,
        "source": participant_info(&call.source),
        "targets": [invitation_participant_info(&call.target)],
        "requestedModalities": call.requested_modalities,
        "mediaConfig": media_config,
        "mediaState": media_state(call.media_state),
        "resultInfo": call.result_info.as_ref().map(result_info),
        "callRoutes": [],
        "chatInfo": null,
        "meetingInfo": null,
        "callOptions": null,
        "incomingContext": null,
        "toneInfo": null,
        "transcription": null,
    });
    if let (Some(reason), Some(obj)) = (&call.termination_reason, v.as_object_mut()) {
        obj.insert("terminationReason".into(), json!(reason));
    }
    v
}

/// One `commsNotification` about a call.
pub fn notification(c: &Call, n: &Notification) -> Value {
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
        Value::Object(data)
    };
    json!({
        "@odata.type": "#microsoft.graph.commsNotification",
        "changeType": n.change,
        "resourceUrl": call_path(&c.id),
        "resourceData": resource_data,
    })
}

/// The POST body that carries a batch of notifications.
pub fn notifications_envelope(items: Vec<Value>) -> Value {
    json!({"@odata.type": "#microsoft.graph.commsNotifications", "value": items})
}
