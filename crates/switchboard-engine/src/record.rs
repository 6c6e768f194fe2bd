//! The stored form of a call: an explicit, versioned record, independent of the core's Rust types.
//!
//! A database written by this release is read by the next one, so what a `calls` row holds must not
//! change because someone renamed a field or a variant in `switchboard-core`. The DTOs here spell out
//! every JSON name by hand and are converted to and from [`Call`] field by field; nothing goes through
//! the core's own serde derives.
//!
//! Schema 1 is exactly the JSON that earlier releases wrote with `serde_json::to_string(&Call)`, plus
//! `"schema": 1`. Rows from before versioning have no `schema` field and are read as schema 1.
//! `tests/fixtures/call-v1.json` is such a row; every future release must keep decoding it.
//!
//! To change the shape: bump [`SCHEMA`], add a `CallV2` (and whatever changes under it), make
//! [`encode`] write it, and teach [`decode`] to read schema 1 rows and migrate them to `CallV2`. Never
//! edit the V1 types or the fixture.

use serde::{Deserialize, Serialize};
use switchboard_core::call::{Call, CallState, Direction, Invitee, MediaConfig, MediaState, Member, Operation, OperationStatus, Transfer};
use switchboard_core::media::{
    CompletionReason, Media, MediaAction, MediaJob, OperationKind, RecordSettings, Recording, RecordingStatus, Tone,
};
use switchboard_core::party::Party;
use switchboard_core::result::ResultInfo;

/// The record schema this release writes, and the newest it reads.
pub const SCHEMA: u32 = 1;

/// Why a stored call cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("stored call is not a valid call record: {0}")]
    Json(#[from] serde_json::Error),
    #[error("stored call has schema {found}, this release reads up to {max}; it was written by a newer release", max = SCHEMA)]
    TooNew { found: u32 },
    #[error("stored call has schema {found}, which no release writes (schemas start at 1)")]
    Unknown { found: u32 },
}

/// The stored JSON of `call`, in the current schema.
pub fn encode(call: &Call) -> String {
    // Only strings, numbers, booleans, options and sequences: serialising to a string cannot fail.
    serde_json::to_string(&CallV1::from(call)).expect("a call record always serialises")
}

/// The call a stored row holds, whichever schema up to [`SCHEMA`] wrote it.
///
/// # Errors
///
/// [`RecordError::TooNew`] for a row written by a newer release, [`RecordError::Json`] for one that is
/// not a call record.
pub fn decode(json: &str) -> Result<Call, RecordError> {
    /// Just the version, so that a newer row is refused as such rather than as malformed.
    #[derive(Deserialize)]
    struct Header {
        #[serde(rename = "schema", default)]
        schema: Option<u32>,
    }
    let header: Header = serde_json::from_str(json)?;
    match header.schema.unwrap_or(LEGACY_SCHEMA) {
        1 => Ok(serde_json::from_str::<CallV1>(json)?.into()),
        found if found > SCHEMA => Err(RecordError::TooNew { found }),
        found => Err(RecordError::Unknown { found }),
    }
}

/// What a row without a `schema` field is: written before versioning, in the shape of schema 1.
const LEGACY_SCHEMA: u32 = 1;

fn legacy_schema() -> u32 {
    LEGACY_SCHEMA
}

// ---------------------------------------------------------------------------------------------------
// Schema 1. Frozen: these names are what is on disk.
// ---------------------------------------------------------------------------------------------------

#[derive(Debug, Serialize, Deserialize)]
struct CallV1 {
    #[serde(rename = "schema", default = "legacy_schema")]
    schema: u32,
    #[serde(rename = "id")]
    id: String,
    #[serde(rename = "appId")]
    app_id: String,
    #[serde(rename = "tenantId")]
    tenant_id: String,
    #[serde(rename = "direction")]
    direction: DirectionV1,
    #[serde(rename = "state")]
    state: CallStateV1,
    #[serde(rename = "callbackUri")]
    callback_uri: Option<String>,
    #[serde(rename = "source")]
    source: PartyV1,
    #[serde(rename = "target")]
    target: PartyV1,
    #[serde(rename = "applicationInstance")]
    application_instance: Option<String>,
    #[serde(rename = "requestedModalities")]
    requested_modalities: Vec<String>,
    #[serde(rename = "mediaConfig")]
    media_config: MediaConfigV1,
    #[serde(rename = "mediaState")]
    media_state: MediaStateV1,
    #[serde(rename = "subject")]
    subject: Option<String>,
    #[serde(rename = "resultInfo")]
    result_info: Option<ResultInfoV1>,
    #[serde(rename = "terminationReason")]
    termination_reason: Option<String>,
    #[serde(rename = "myParticipantId")]
    my_participant_id: String,
    #[serde(rename = "peerParticipantId")]
    peer_participant_id: String,
    #[serde(rename = "callChainId")]
    call_chain_id: String,
    #[serde(rename = "createdAt")]
    created_at: u64,
    #[serde(rename = "setupDeadline")]
    setup_deadline: Option<u64>,
    #[serde(rename = "keepAliveDeadline")]
    keep_alive_deadline: u64,
    #[serde(rename = "transfer", default)]
    transfer: Option<TransferV1>,
    #[serde(rename = "operations", default)]
    operations: Vec<OperationV1>,
    #[serde(rename = "transferor", default)]
    transferor: Option<PartyV1>,
    #[serde(rename = "members", default)]
    members: Vec<MemberV1>,
    #[serde(rename = "group", default)]
    group: bool,
    /// Written only when there is something to say, so rows from before media read as before.
    #[serde(rename = "media", default, skip_serializing_if = "MediaV1::is_idle")]
    media: MediaV1,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct MediaV1 {
    #[serde(rename = "queue", default, skip_serializing_if = "Vec::is_empty")]
    queue: Vec<MediaJobV1>,
    #[serde(rename = "tonesSubscribed", default, skip_serializing_if = "is_false")]
    tones_subscribed: bool,
    #[serde(rename = "toneSequence", default, skip_serializing_if = "is_zero")]
    tone_sequence: u64,
    #[serde(rename = "muted", default, skip_serializing_if = "is_false")]
    muted: bool,
    #[serde(rename = "recordingStatus", default, skip_serializing_if = "Option::is_none")]
    recording_status: Option<RecordingStatusV1>,
    #[serde(rename = "held", default, skip_serializing_if = "Option::is_none")]
    held: Option<String>,
}

impl MediaV1 {
    fn is_idle(&self) -> bool {
        self.queue.is_empty()
            && !self.tones_subscribed
            && self.tone_sequence == 0
            && !self.muted
            && self.recording_status.is_none()
            && self.held.is_none()
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Serialize, Deserialize)]
struct MediaJobV1 {
    #[serde(rename = "operationId")]
    operation_id: String,
    #[serde(rename = "action")]
    action: MediaActionV1,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind")]
enum MediaActionV1 {
    #[serde(rename = "play")]
    Play {
        #[serde(rename = "prompts")]
        prompts: Vec<String>,
        #[serde(rename = "looped", default)]
        looped: bool,
    },
    #[serde(rename = "record")]
    Record {
        #[serde(rename = "prompts")]
        prompts: Vec<String>,
        #[serde(rename = "bargeIn")]
        barge_in: bool,
        #[serde(rename = "initialSilenceMs")]
        initial_silence_ms: u64,
        #[serde(rename = "maxSilenceMs")]
        max_silence_ms: u64,
        #[serde(rename = "maxDurationMs")]
        max_duration_ms: u64,
        #[serde(rename = "beep")]
        beep: bool,
        /// Keys as characters (`"#*"`).
        #[serde(rename = "stopTones", default)]
        stop_tones: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind")]
enum PartyV1 {
    #[serde(rename = "user")]
    User {
        #[serde(rename = "id")]
        id: String,
        #[serde(rename = "displayName")]
        display_name: String,
        #[serde(rename = "tenantId")]
        tenant_id: String,
    },
    #[serde(rename = "phone")]
    Phone {
        #[serde(rename = "number")]
        number: String,
    },
    #[serde(rename = "application")]
    Application {
        #[serde(rename = "id")]
        id: String,
        #[serde(rename = "displayName")]
        display_name: String,
    },
    #[serde(rename = "applicationInstance")]
    ApplicationInstance {
        #[serde(rename = "id")]
        id: String,
        #[serde(rename = "displayName")]
        display_name: String,
        #[serde(rename = "tenantId")]
        tenant_id: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct MemberV1 {
    #[serde(rename = "participantId")]
    participant_id: String,
    #[serde(rename = "party")]
    party: PartyV1,
    #[serde(rename = "joined")]
    joined: bool,
    #[serde(rename = "muted", default, skip_serializing_if = "is_false")]
    muted: bool,
    #[serde(rename = "invitation", default, skip_serializing_if = "Option::is_none")]
    invitation: Option<String>,
    #[serde(rename = "ringUntil", default, skip_serializing_if = "Option::is_none")]
    ring_until: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct InviteeV1 {
    #[serde(rename = "participantId")]
    participant_id: String,
    #[serde(rename = "party")]
    party: PartyV1,
    #[serde(rename = "replacesCallId", default, skip_serializing_if = "Option::is_none")]
    replaces_call_id: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct TransferV1 {
    #[serde(rename = "target")]
    target: PartyV1,
    #[serde(rename = "replacesCallId")]
    replaces_call_id: Option<String>,
    #[serde(rename = "deadline")]
    deadline: u64,
    #[serde(rename = "operationId", default)]
    operation_id: String,
    #[serde(rename = "transferee", default)]
    transferee: Option<String>,
    /// Written only while true, so rows without a cancel in progress read as before it existed.
    #[serde(rename = "cancelling", default, skip_serializing_if = "is_false")]
    cancelling: bool,
    /// Written only when there are some, likewise.
    #[serde(rename = "sipHeaders", default, skip_serializing_if = "Vec::is_empty")]
    sip_headers: Vec<(String, String)>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Serialize, Deserialize)]
struct OperationV1 {
    #[serde(rename = "id")]
    id: String,
    #[serde(rename = "status")]
    status: OperationStatusV1,
    #[serde(rename = "clientContext")]
    client_context: Option<String>,
    #[serde(rename = "resultInfo")]
    result_info: Option<ResultInfoV1>,
    /// A transfer's operation (rows from before media) when absent.
    #[serde(rename = "kind", default, skip_serializing_if = "OperationKindV1::is_transfer")]
    kind: OperationKindV1,
    #[serde(rename = "completionReason", default, skip_serializing_if = "Option::is_none")]
    completion_reason: Option<CompletionReasonV1>,
    #[serde(rename = "recording", default, skip_serializing_if = "Option::is_none")]
    recording: Option<RecordingV1>,
    #[serde(rename = "invitees", default, skip_serializing_if = "Vec::is_empty")]
    invitees: Vec<InviteeV1>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RecordingV1 {
    #[serde(rename = "id")]
    id: String,
    #[serde(rename = "durationMs")]
    duration_ms: u64,
    #[serde(rename = "accessToken")]
    access_token: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
enum OperationKindV1 {
    #[default]
    #[serde(rename = "transfer")]
    Transfer,
    #[serde(rename = "playPrompt")]
    PlayPrompt,
    #[serde(rename = "record")]
    Record,
    #[serde(rename = "subscribeToTone")]
    SubscribeToTone,
    #[serde(rename = "sendDtmfTones")]
    SendDtmfTones,
    #[serde(rename = "cancelMediaProcessing")]
    CancelMediaProcessing,
    #[serde(rename = "mute")]
    Mute,
    #[serde(rename = "unmute")]
    Unmute,
    #[serde(rename = "updateRecordingStatus")]
    UpdateRecordingStatus,
    #[serde(rename = "invite")]
    Invite,
    #[serde(rename = "muteParticipant")]
    MuteParticipant,
    #[serde(rename = "startHoldMusic")]
    StartHoldMusic,
    #[serde(rename = "stopHoldMusic")]
    StopHoldMusic,
}

impl OperationKindV1 {
    fn is_transfer(&self) -> bool {
        *self == OperationKindV1::Transfer
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
enum CompletionReasonV1 {
    #[serde(rename = "completedSuccessfully")]
    CompletedSuccessfully,
    #[serde(rename = "mediaOperationCanceled")]
    MediaOperationCanceled,
    #[serde(rename = "operationCanceled")]
    OperationCanceled,
    #[serde(rename = "stopToneDetected")]
    StopToneDetected,
    #[serde(rename = "maxRecordDurationReached")]
    MaxRecordDurationReached,
    #[serde(rename = "initialSilenceTimeout")]
    InitialSilenceTimeout,
    #[serde(rename = "maxSilenceTimeout")]
    MaxSilenceTimeout,
    #[serde(rename = "playPromptFailed")]
    PlayPromptFailed,
    #[serde(rename = "mediaReceiveTimeout")]
    MediaReceiveTimeout,
    #[serde(rename = "unspecifiedError")]
    UnspecifiedError,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
enum RecordingStatusV1 {
    #[serde(rename = "unknown")]
    Unknown,
    #[serde(rename = "notRecording")]
    NotRecording,
    #[serde(rename = "recording")]
    Recording,
    #[serde(rename = "failed")]
    Failed,
}

#[derive(Debug, Serialize, Deserialize)]
struct ResultInfoV1 {
    #[serde(rename = "code")]
    code: i32,
    #[serde(rename = "subcode")]
    subcode: i32,
    #[serde(rename = "message")]
    message: String,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
enum DirectionV1 {
    #[serde(rename = "incoming")]
    Incoming,
    #[serde(rename = "outgoing")]
    Outgoing,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
enum CallStateV1 {
    #[serde(rename = "incoming")]
    Incoming,
    #[serde(rename = "establishing")]
    Establishing,
    #[serde(rename = "established")]
    Established,
    #[serde(rename = "hold")]
    Hold,
    #[serde(rename = "transferring")]
    Transferring,
    #[serde(rename = "transferAccepted")]
    TransferAccepted,
    #[serde(rename = "redirecting")]
    Redirecting,
    #[serde(rename = "terminating")]
    Terminating,
    #[serde(rename = "terminated")]
    Terminated,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
enum MediaConfigV1 {
    #[serde(rename = "serviceHosted")]
    ServiceHosted,
    #[serde(rename = "appHosted")]
    AppHosted,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
enum MediaStateV1 {
    #[serde(rename = "active")]
    Active,
    #[serde(rename = "inactive")]
    Inactive,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
enum OperationStatusV1 {
    #[serde(rename = "running")]
    Running,
    #[serde(rename = "completed")]
    Completed,
    #[serde(rename = "failed")]
    Failed,
}

// ---------------------------------------------------------------------------------------------------
// Schema 1 <-> core, field by field.
// ---------------------------------------------------------------------------------------------------

impl From<&Call> for CallV1 {
    fn from(c: &Call) -> Self {
        CallV1 {
            schema: SCHEMA,
            id: c.id.clone(),
            app_id: c.app_id.clone(),
            tenant_id: c.tenant_id.clone(),
            direction: c.direction.into(),
            state: c.state.into(),
            callback_uri: c.callback_uri.clone(),
            source: (&c.source).into(),
            target: (&c.target).into(),
            application_instance: c.application_instance.clone(),
            requested_modalities: c.requested_modalities.clone(),
            media_config: c.media_config.into(),
            media_state: c.media_state.into(),
            subject: c.subject.clone(),
            result_info: c.result_info.as_ref().map(ResultInfoV1::from),
            termination_reason: c.termination_reason.clone(),
            my_participant_id: c.my_participant_id.clone(),
            peer_participant_id: c.peer_participant_id.clone(),
            call_chain_id: c.call_chain_id.clone(),
            created_at: c.created_at,
            setup_deadline: c.setup_deadline,
            keep_alive_deadline: c.keep_alive_deadline,
            transfer: c.transfer.as_ref().map(TransferV1::from),
            operations: c.operations.iter().map(OperationV1::from).collect(),
            transferor: c.transferor.as_ref().map(PartyV1::from),
            members: c.members.iter().map(MemberV1::from).collect(),
            group: c.group,
            media: (&c.media).into(),
        }
    }
}

impl From<CallV1> for Call {
    fn from(c: CallV1) -> Self {
        Call {
            id: c.id,
            app_id: c.app_id,
            tenant_id: c.tenant_id,
            direction: c.direction.into(),
            state: c.state.into(),
            callback_uri: c.callback_uri,
            source: c.source.into(),
            target: c.target.into(),
            application_instance: c.application_instance,
            requested_modalities: c.requested_modalities,
            media_config: c.media_config.into(),
            media_state: c.media_state.into(),
            subject: c.subject,
            result_info: c.result_info.map(ResultInfo::from),
            termination_reason: c.termination_reason,
            my_participant_id: c.my_participant_id,
            peer_participant_id: c.peer_participant_id,
            call_chain_id: c.call_chain_id,
            created_at: c.created_at,
            setup_deadline: c.setup_deadline,
            keep_alive_deadline: c.keep_alive_deadline,
            transfer: c.transfer.map(Transfer::from),
            operations: c.operations.into_iter().map(Operation::from).collect(),
            transferor: c.transferor.map(Party::from),
            members: c.members.into_iter().map(Member::from).collect(),
            group: c.group,
            media: c.media.into(),
        }
    }
}

impl From<&Party> for PartyV1 {
    fn from(p: &Party) -> Self {
        match p {
            Party::User { id, display_name, tenant_id } => {
                PartyV1::User { id: id.clone(), display_name: display_name.clone(), tenant_id: tenant_id.clone() }
            }
            Party::Phone { number } => PartyV1::Phone { number: number.clone() },
            Party::Application { id, display_name } => PartyV1::Application { id: id.clone(), display_name: display_name.clone() },
            Party::ApplicationInstance { id, display_name, tenant_id } => {
                PartyV1::ApplicationInstance { id: id.clone(), display_name: display_name.clone(), tenant_id: tenant_id.clone() }
            }
        }
    }
}

impl From<PartyV1> for Party {
    fn from(p: PartyV1) -> Self {
        match p {
            PartyV1::User { id, display_name, tenant_id } => Party::User { id, display_name, tenant_id },
            PartyV1::Phone { number } => Party::Phone { number },
            PartyV1::Application { id, display_name } => Party::Application { id, display_name },
            PartyV1::ApplicationInstance { id, display_name, tenant_id } => Party::ApplicationInstance { id, display_name, tenant_id },
        }
    }
}

impl From<&Member> for MemberV1 {
    fn from(m: &Member) -> Self {
        MemberV1 {
            participant_id: m.participant_id.clone(),
            party: (&m.party).into(),
            joined: m.joined,
            muted: m.muted,
            invitation: m.invitation.clone(),
            ring_until: m.ring_until,
        }
    }
}

impl From<MemberV1> for Member {
    fn from(m: MemberV1) -> Self {
        Member {
            participant_id: m.participant_id,
            party: m.party.into(),
            joined: m.joined,
            muted: m.muted,
            invitation: m.invitation,
            ring_until: m.ring_until,
        }
    }
}

impl From<&Transfer> for TransferV1 {
    fn from(t: &Transfer) -> Self {
        TransferV1 {
            target: (&t.target).into(),
            replaces_call_id: t.replaces_call_id.clone(),
            deadline: t.deadline,
            operation_id: t.operation_id.clone(),
            transferee: t.transferee.clone(),
            cancelling: t.cancelling,
            sip_headers: t.sip_headers.clone(),
        }
    }
}

impl From<TransferV1> for Transfer {
    fn from(t: TransferV1) -> Self {
        Transfer {
            target: t.target.into(),
            replaces_call_id: t.replaces_call_id,
            deadline: t.deadline,
            operation_id: t.operation_id,
            transferee: t.transferee,
            cancelling: t.cancelling,
            sip_headers: t.sip_headers,
        }
    }
}

impl From<&Operation> for OperationV1 {
    fn from(o: &Operation) -> Self {
        OperationV1 {
            id: o.id.clone(),
            status: o.status.into(),
            client_context: o.client_context.clone(),
            result_info: o.result_info.as_ref().map(ResultInfoV1::from),
            kind: o.kind.into(),
            completion_reason: o.completion_reason.map(Into::into),
            recording: o.recording.as_ref().map(|r| RecordingV1 {
                id: r.id.clone(),
                duration_ms: r.duration_ms,
                access_token: r.access_token.clone(),
            }),
            invitees: o
                .invitees
                .iter()
                .map(|i| InviteeV1 {
                    participant_id: i.participant_id.clone(),
                    party: (&i.party).into(),
                    replaces_call_id: i.replaces_call_id.clone(),
                })
                .collect(),
        }
    }
}

impl From<OperationV1> for Operation {
    fn from(o: OperationV1) -> Self {
        Operation {
            id: o.id,
            status: o.status.into(),
            client_context: o.client_context,
            result_info: o.result_info.map(ResultInfo::from),
            kind: o.kind.into(),
            completion_reason: o.completion_reason.map(Into::into),
            recording: o.recording.map(|r| Recording { id: r.id, duration_ms: r.duration_ms, access_token: r.access_token }),
            invitees: o
                .invitees
                .into_iter()
                .map(|i| Invitee { participant_id: i.participant_id, party: i.party.into(), replaces_call_id: i.replaces_call_id })
                .collect(),
        }
    }
}

impl From<&Media> for MediaV1 {
    fn from(m: &Media) -> Self {
        MediaV1 {
            queue: m
                .queue
                .iter()
                .map(|j| MediaJobV1 {
                    operation_id: j.operation_id.clone(),
                    action: match &j.action {
                        MediaAction::Play { prompts, looped } => MediaActionV1::Play { prompts: prompts.clone(), looped: *looped },
                        MediaAction::Record(r) => MediaActionV1::Record {
                            prompts: r.prompts.clone(),
                            barge_in: r.barge_in,
                            initial_silence_ms: r.initial_silence_ms,
                            max_silence_ms: r.max_silence_ms,
                            max_duration_ms: r.max_duration_ms,
                            beep: r.beep,
                            stop_tones: Tone::keys(&r.stop_tones),
                        },
                    },
                })
                .collect(),
            tones_subscribed: m.tones_subscribed,
            tone_sequence: m.tone_sequence,
            muted: m.muted,
            recording_status: m.recording_status.map(Into::into),
            held: m.held.clone(),
        }
    }
}

impl From<MediaV1> for Media {
    fn from(m: MediaV1) -> Self {
        Media {
            queue: m
                .queue
                .into_iter()
                .map(|j| MediaJob {
                    operation_id: j.operation_id,
                    action: match j.action {
                        MediaActionV1::Play { prompts, looped } => MediaAction::Play { prompts, looped },
                        MediaActionV1::Record {
                            prompts,
                            barge_in,
                            initial_silence_ms,
                            max_silence_ms,
                            max_duration_ms,
                            beep,
                            stop_tones,
                        } => {
                            MediaAction::Record(RecordSettings {
                                prompts,
                                barge_in,
                                initial_silence_ms,
                                max_silence_ms,
                                max_duration_ms,
                                beep,
                                // Written by `Tone::keys`; a key this release does not know is dropped.
                                stop_tones: stop_tones.chars().filter_map(Tone::from_char).collect(),
                            })
                        }
                    },
                })
                .collect(),
            tones_subscribed: m.tones_subscribed,
            tone_sequence: m.tone_sequence,
            muted: m.muted,
            recording_status: m.recording_status.map(Into::into),
            held: m.held,
        }
    }
}

impl From<&ResultInfo> for ResultInfoV1 {
    fn from(r: &ResultInfo) -> Self {
        ResultInfoV1 { code: r.code, subcode: r.subcode, message: r.message.clone() }
    }
}

impl From<ResultInfoV1> for ResultInfo {
    fn from(r: ResultInfoV1) -> Self {
        ResultInfo { code: r.code, subcode: r.subcode, message: r.message }
    }
}

/// Both conversions between a core enum and its frozen twin, variant by variant of the same name
/// (the twin's serde names are what is frozen).
macro_rules! mirror {
    ($core:ident <=> $stored:ident { $($variant:ident),+ $(,)? }) => {
        impl From<$core> for $stored {
            fn from(v: $core) -> Self {
                match v {
                    $($core::$variant => $stored::$variant,)+
                }
            }
        }

        impl From<$stored> for $core {
            fn from(v: $stored) -> Self {
                match v {
                    $($stored::$variant => $core::$variant,)+
                }
            }
        }
    };
}

mirror!(Direction <=> DirectionV1 { Incoming, Outgoing });
mirror!(CallState <=> CallStateV1 {
    Incoming,
    Establishing,
    Established,
    Hold,
    Transferring,
    TransferAccepted,
    Redirecting,
    Terminating,
    Terminated,
});
mirror!(MediaConfig <=> MediaConfigV1 { ServiceHosted, AppHosted });
mirror!(MediaState <=> MediaStateV1 { Active, Inactive });
mirror!(OperationStatus <=> OperationStatusV1 { Running, Completed, Failed });
mirror!(OperationKind <=> OperationKindV1 {
    Transfer,
    PlayPrompt,
    Record,
    SubscribeToTone,
    SendDtmfTones,
    CancelMediaProcessing,
    Mute,
    Unmute,
    UpdateRecordingStatus,
    Invite,
    MuteParticipant,
    StartHoldMusic,
    StopHoldMusic,
});
mirror!(CompletionReason <=> CompletionReasonV1 {
    CompletedSuccessfully,
    MediaOperationCanceled,
    OperationCanceled,
    StopToneDetected,
    MaxRecordDurationReached,
    InitialSilenceTimeout,
    MaxSilenceTimeout,
    PlayPromptFailed,
    MediaReceiveTimeout,
    UnspecifiedError,
});
mirror!(RecordingStatus <=> RecordingStatusV1 { Unknown, NotRecording, Recording, Failed });

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    /// A row as this release writes it. Committed, hand-written, never regenerated: every future
    /// release must decode it.
    const FIXTURE: &str = include_str!("../tests/fixtures/call-v1.json");

    const TENANT: &str = "b1e0c4d2-5a7f-4c3e-8d9b-0f2a6e4c1b37";
    const INSTANCE: &str = "e3a19c40-7b2d-4f85-a6e1-3d0c9b7f2a58";

    fn user(id: &str, name: &str) -> Party {
        Party::User { id: id.into(), display_name: name.into(), tenant_id: TENANT.into() }
    }

    fn heidi() -> Party {
        user("8c2e5f17-4a9b-4d3c-b0e6-1f7a2d9c5e84", "Heidi Steen")
    }

    /// The call in the fixture: a group call placed from an application instance to Heidi, Alex and a
    /// phone number (still ringing), after a failed blind transfer, now transferring Alex to Megan
    /// consultatively. It also names a transferor, which the core only sets on incoming calls, so that
    /// the fixture pins every field of the format down.
    fn rich() -> Call {
        Call {
            id: "5a0f2c71-3e84-4d6b-9b1e-c2d7a8f43e19".into(),
            app_id: "7d6f3a2e-1c4b-4e8a-9f0d-2b5c8e1a4f60".into(),
            tenant_id: TENANT.into(),
            direction: Direction::Outgoing,
            state: CallState::Transferring,
            callback_uri: Some("https://bot.contoso.com/api/calling".into()),
            source: Party::ApplicationInstance { id: INSTANCE.into(), display_name: "Contoso Reception".into(), tenant_id: TENANT.into() },
            target: heidi(),
            application_instance: Some(INSTANCE.into()),
            requested_modalities: vec!["audio".into()],
            media_config: MediaConfig::ServiceHosted,
            media_state: MediaState::Active,
            subject: Some("Front desk hand-over".into()),
            result_info: None,
            termination_reason: None,
            my_participant_id: "0b7d3e92-6f1a-4c58-8e2d-a94c1f6b3d07".into(),
            peer_participant_id: "1d5a9e3c-7f2b-4c68-a4e0-b8c3f6d2a971".into(),
            call_chain_id: "c91e4b2a-8d3f-47e6-a0b5-3f2d7c9e1a86".into(),
            created_at: 1_767_268_800_000,
            setup_deadline: Some(1_767_268_915_000),
            keep_alive_deadline: 1_767_271_500_000,
            transfer: Some(Transfer {
                target: user("2f9b6d3a-1c8e-4b7f-9a2d-5e0c4f8b1a63", "Megan Bowen"),
                replaces_call_id: Some("a6d2f8c3-0e5b-4a91-8f7c-2b4e9d1a6c35".into()),
                deadline: 1_767_268_901_500,
                operation_id: "3e7c1a9f-5b2d-4e86-a0f4-8c6b2d9e7a15".into(),
                transferee: Some("f4c8a1d6-2e7b-4930-b5f1-6d8e3a0c7b42".into()),
                cancelling: false,
                // The checked-in row predates custom headers; the round trip below has some.
                sip_headers: Vec::new(),
            }),
            operations: vec![
                Operation {
                    id: "d8a4f2b6-9c1e-4375-b2a8-0e6f3c5d9b21".into(),
                    status: OperationStatus::Failed,
                    client_context: Some("front-desk-transfer-1".into()),
                    result_info: Some(ResultInfo {
                        code: 500,
                        subcode: 7000,
                        message: "The blind transfer failed: the transfer target is busy. DiagCode: 500#7000.@".into(),
                    }),
                    kind: OperationKind::Transfer,
                    completion_reason: None,
                    recording: None,
                    invitees: Vec::new(),
                },
                Operation {
                    id: "3e7c1a9f-5b2d-4e86-a0f4-8c6b2d9e7a15".into(),
                    status: OperationStatus::Running,
                    client_context: Some("front-desk-transfer-2".into()),
                    result_info: None,
                    kind: OperationKind::Transfer,
                    completion_reason: None,
                    recording: None,
                    invitees: Vec::new(),
                },
            ],
            transferor: Some(Party::Application {
                id: "41b7e9c2-6d0a-4f38-9e5b-c7a2f1d8e064".into(),
                display_name: "Contoso Switchboard Bot".into(),
            }),
            members: vec![
                Member::joined("1d5a9e3c-7f2b-4c68-a4e0-b8c3f6d2a971".into(), heidi()),
                Member::joined("f4c8a1d6-2e7b-4930-b5f1-6d8e3a0c7b42".into(), user("6b3f0d8e-2a5c-4e19-8d7b-9c1e4a6f3b20", "Alex Wilber")),
                Member::invited("9e2c6a4f-0b8d-4173-a5c9-e3f1b7d4a268".into(), Party::Phone { number: "+14255550123".into() }),
            ],
            group: true,
            media: Media::default(),
        }
    }

    /// A peer-to-peer incoming call from a phone that the bot ended: the other side of every option.
    fn ended_incoming() -> Call {
        Call {
            id: "0c4e8a2f-6b1d-4f93-8e7a-5d2c9b3f1e60".into(),
            direction: Direction::Incoming,
            state: CallState::Terminated,
            callback_uri: None,
            source: Party::Phone { number: "+442071234567".into() },
            target: Party::ApplicationInstance { id: INSTANCE.into(), display_name: "Contoso Reception".into(), tenant_id: TENANT.into() },
            application_instance: Some(INSTANCE.into()),
            requested_modalities: vec!["audio".into(), "video".into()],
            media_config: MediaConfig::AppHosted,
            media_state: MediaState::Inactive,
            subject: None,
            result_info: Some(ResultInfo { code: 200, subcode: 7000, message: "The call was ended by the application.".into() }),
            termination_reason: Some("AppHungUp".into()),
            setup_deadline: None,
            transfer: None,
            operations: Vec::new(),
            transferor: None,
            members: Vec::new(),
            group: false,
            media: Media::default(),
            ..rich()
        }
    }

    fn fixture() -> Value {
        serde_json::from_str(FIXTURE).unwrap()
    }

    fn decode_value(v: &Value) -> Result<Call, RecordError> {
        decode(&serde_json::to_string(v).unwrap())
    }

    #[test]
    fn a_rich_call_round_trips() {
        let c = rich();
        assert_eq!(decode(&encode(&c)).unwrap(), c);

        let c = ended_incoming();
        assert_eq!(decode(&encode(&c)).unwrap(), c);

        // Every value of every enum, and a transfer without the optional parts.
        let states = CallState::ALL;
        for state in states {
            let mut c = rich();
            c.state = state;
            c.transfer = Some(Transfer {
                target: Party::Phone { number: "+14255550199".into() },
                replaces_call_id: None,
                deadline: 1_767_268_901_500,
                operation_id: String::new(),
                transferee: None,
                cancelling: state == CallState::Transferring,
                sip_headers: if state == CallState::Transferring { vec![("X-Ticket".into(), "4711".into())] } else { Vec::new() },
            });
            for (i, status) in [OperationStatus::Running, OperationStatus::Completed, OperationStatus::Failed].into_iter().enumerate() {
                c.operations[i % 2].status = status;
                assert_eq!(decode(&encode(&c)).unwrap(), c);
            }
        }
    }

    #[test]
    fn media_state_round_trips() {
        let settings = RecordSettings {
            prompts: vec!["https://cdn.contoso.com/beep.wav".into()],
            barge_in: true,
            initial_silence_ms: 5_000,
            max_silence_ms: 2_000,
            max_duration_ms: 60_000,
            beep: false,
            stop_tones: vec![Tone::Pound, Tone::Star, Tone::A],
        };
        let mut c = rich();
        c.media = Media {
            queue: vec![
                MediaJob {
                    operation_id: "op-play".into(),
                    action: MediaAction::Play { prompts: vec!["file:///greeting.wav".into()], looped: true },
                },
                MediaJob { operation_id: "op-record".into(), action: MediaAction::Record(settings) },
            ],
            tones_subscribed: true,
            tone_sequence: 7,
            muted: true,
            recording_status: Some(RecordingStatus::Recording),
            held: Some("f4c8a1d6-2e7b-4930-b5f1-6d8e3a0c7b42".into()),
        };
        c.members[0].muted = true;
        c.members[2].invitation = Some("op-invite".into());
        c.members[2].ring_until = Some(1_767_268_960_000);
        for (i, kind) in [
            OperationKind::PlayPrompt,
            OperationKind::Record,
            OperationKind::SubscribeToTone,
            OperationKind::SendDtmfTones,
            OperationKind::CancelMediaProcessing,
            OperationKind::Mute,
            OperationKind::Unmute,
            OperationKind::UpdateRecordingStatus,
            OperationKind::Invite,
            OperationKind::MuteParticipant,
            OperationKind::StartHoldMusic,
            OperationKind::StopHoldMusic,
        ]
        .into_iter()
        .enumerate()
        {
            let mut op = Operation::new(format!("op-{i}"), kind, None);
            op.completion_reason = Some([CompletionReason::StopToneDetected, CompletionReason::MediaOperationCanceled][i % 2]);
            if kind == OperationKind::Invite {
                op.invitees = vec![Invitee { participant_id: "p-9".into(), party: heidi(), replaces_call_id: Some("call-b".into()) }];
            }
            op.recording =
                (kind == OperationKind::Record).then(|| Recording { id: "rec-1".into(), duration_ms: 3_250, access_token: "t0k3n".into() });
            c.operations.push(op);
        }
        assert_eq!(decode(&encode(&c)).unwrap(), c);
        for status in [RecordingStatus::Unknown, RecordingStatus::NotRecording, RecordingStatus::Failed] {
            c.media.recording_status = Some(status);
            assert_eq!(decode(&encode(&c)).unwrap(), c);
        }
        // An idle call writes no media at all: rows stay as they were.
        assert!(!encode(&rich()).contains("\"media\""));
    }

    #[test]
    fn the_schema_1_fixture_decodes() {
        let fixture = fixture();
        assert_eq!(fixture["schema"], json!(1));

        let c = decode(FIXTURE).unwrap();
        assert_eq!(c.state, CallState::Transferring);
        assert_eq!(c.direction, Direction::Outgoing);
        assert!(c.group);
        let t = c.transfer.as_ref().unwrap();
        assert_eq!(t.target, user("2f9b6d3a-1c8e-4b7f-9a2d-5e0c4f8b1a63", "Megan Bowen"));
        assert_eq!(t.replaces_call_id.as_deref(), Some("a6d2f8c3-0e5b-4a91-8f7c-2b4e9d1a6c35"));
        assert_eq!(t.transferee.as_deref(), Some("f4c8a1d6-2e7b-4930-b5f1-6d8e3a0c7b42"));
        assert_eq!(t.operation_id, c.operations[1].id);
        let members: Vec<(&str, bool)> = c.members.iter().map(|m| (m.party.key(), m.joined)).collect();
        assert_eq!(
            members,
            [("8c2e5f17-4a9b-4d3c-b0e6-1f7a2d9c5e84", true), ("6b3f0d8e-2a5c-4e19-8d7b-9c1e4a6f3b20", true), ("+14255550123", false)]
        );
        assert_eq!(c.operations[0].status, OperationStatus::Failed);
        assert_eq!(c.operations[0].result_info.as_ref().map(|r| (r.code, r.subcode)), Some((500, 7000)));
        assert!(matches!(c.source, Party::ApplicationInstance { .. }));
        assert!(matches!(c.transferor, Some(Party::Application { .. })));
        // And all the rest, field by field.
        assert_eq!(c, rich());
    }

    #[test]
    fn a_legacy_row_without_schema_decodes() {
        // Exactly what the previous release stored: the same JSON without "schema".
        let mut row = fixture();
        row.as_object_mut().unwrap().remove("schema");
        assert_eq!(decode_value(&row).unwrap(), rich());

        // A row from before transfers, operations, transferors and group calls: those default.
        for field in ["transfer", "operations", "transferor", "members", "group"] {
            row.as_object_mut().unwrap().remove(field);
        }
        let c = decode_value(&row).unwrap();
        assert_eq!(c.transfer, None);
        assert!(c.operations.is_empty());
        assert_eq!(c.transferor, None);
        assert!(c.members.is_empty());
        assert!(!c.group);
        assert_eq!(c.state, CallState::Transferring);

        // A transfer from before operation ids and transferees.
        let mut row = fixture();
        row.as_object_mut().unwrap().remove("schema");
        let transfer = row["transfer"].as_object_mut().unwrap();
        transfer.remove("operationId");
        transfer.remove("transferee");
        let t = decode_value(&row).unwrap().transfer.unwrap();
        assert_eq!(t.operation_id, "");
        assert_eq!(t.transferee, None);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let mut row = fixture();
        row["schema"] = json!(2);
        let err = decode_value(&row).unwrap_err();
        assert!(matches!(err, RecordError::TooNew { found: 2 }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("schema 2") && msg.contains("up to 1"), "{msg}");

        // Refused as too new even when the rest is nothing schema 1 would understand.
        let err = decode(r#"{"schema": 7, "call": {"id": "x"}}"#).unwrap_err();
        assert!(matches!(err, RecordError::TooNew { found: 7 }), "{err:?}");

        row["schema"] = json!(0);
        assert!(matches!(decode_value(&row), Err(RecordError::Unknown { found: 0 })));
    }

    #[test]
    fn malformed_rows_are_json_errors() {
        assert!(matches!(decode("not json"), Err(RecordError::Json(_))));
        assert!(matches!(decode(r#"{"schema": "one"}"#), Err(RecordError::Json(_))));
        let mut row = fixture();
        row["state"] = json!("Transferring");
        assert!(matches!(decode_value(&row), Err(RecordError::Json(_))));
    }

    #[test]
    fn encoding_matches_the_fixture() {
        let encoded: Value = serde_json::from_str(&encode(&decode(FIXTURE).unwrap())).unwrap();
        assert_eq!(encoded, fixture());
        let encoded: Value = serde_json::from_str(&encode(&rich())).unwrap();
        assert_eq!(encoded, fixture());
    }

    /// The stored name of every enum value, spelt out: the fixture shows only some of them.
    #[test]
    fn every_enum_value_has_its_frozen_name() {
        let stored = |c: &Call| -> Value { serde_json::from_str(&encode(c)).unwrap() };
        let states = [
            (CallState::Incoming, "incoming"),
            (CallState::Establishing, "establishing"),
            (CallState::Established, "established"),
            (CallState::Hold, "hold"),
            (CallState::Transferring, "transferring"),
            (CallState::TransferAccepted, "transferAccepted"),
            (CallState::Redirecting, "redirecting"),
            (CallState::Terminating, "terminating"),
            (CallState::Terminated, "terminated"),
        ];
        for (state, name) in states {
            let c = Call { state, ..rich() };
            assert_eq!(stored(&c)["state"], json!(name));
        }
        for (direction, name) in [(Direction::Incoming, "incoming"), (Direction::Outgoing, "outgoing")] {
            assert_eq!(stored(&Call { direction, ..rich() })["direction"], json!(name));
        }
        for (media_config, name) in [(MediaConfig::ServiceHosted, "serviceHosted"), (MediaConfig::AppHosted, "appHosted")] {
            assert_eq!(stored(&Call { media_config, ..rich() })["mediaConfig"], json!(name));
        }
        for (media_state, name) in [(MediaState::Active, "active"), (MediaState::Inactive, "inactive")] {
            assert_eq!(stored(&Call { media_state, ..rich() })["mediaState"], json!(name));
        }
        for (status, name) in
            [(OperationStatus::Running, "running"), (OperationStatus::Completed, "completed"), (OperationStatus::Failed, "failed")]
        {
            let mut c = rich();
            c.operations[0].status = status;
            assert_eq!(stored(&c)["operations"][0]["status"], json!(name));
        }
        let kinds: Vec<Value> = [&rich().source, &rich().target, &rich().members[2].party, &rich().transferor.unwrap()]
            .into_iter()
            .map(|p| stored(&Call { source: p.clone(), ..rich() })["source"]["kind"].clone())
            .collect();
        assert_eq!(kinds, [json!("applicationInstance"), json!("user"), json!("phone"), json!("application")]);
    }

    /// Schema 1 is what the previous release wrote with the core's own serde derives, plus "schema".
    /// Transitional: delete this test if the core drops its serde derives.
    #[test]
    fn schema_1_is_the_core_serde_shape() {
        for c in [rich(), ended_incoming()] {
            let mut legacy = serde_json::to_value(&c).unwrap();
            legacy.as_object_mut().unwrap().insert("schema".into(), json!(SCHEMA));
            let encoded: Value = serde_json::from_str(&encode(&c)).unwrap();
            assert_eq!(encoded, legacy);
        }
    }
}
