//! The media side of a call (service-hosted media, the IVR): prompts, recordings, DTMF tones, mute and
//! the recording status, as Graph's media actions describe them (`graph-api.md` §2.9–2.12).
//!
//! `playPrompt` and `recordResponse` are *queued*: they run one after another, in the order the bot
//! asked for them, and `cancelMediaProcessing` ends the one running and every one waiting.
//! `subscribeToTone` is independent of the queue: once subscribed, every key the caller presses is a
//! `toneInfo` notification. The network plays, records and hears keys; the core decides what the bot
//! is told ([`crate::call::Call::handle`] with [`crate::call::Input::Media`]).

use serde::{Deserialize, Serialize};

use crate::result::ResultInfo;

/// A DTMF key (Graph's `tone`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Tone {
    Tone0,
    Tone1,
    Tone2,
    Tone3,
    Tone4,
    Tone5,
    Tone6,
    Tone7,
    Tone8,
    Tone9,
    Star,
    Pound,
    A,
    B,
    C,
    D,
    Flash,
}

impl Tone {
    pub const ALL: [Tone; 17] = [
        Tone::Tone0,
        Tone::Tone1,
        Tone::Tone2,
        Tone::Tone3,
        Tone::Tone4,
        Tone::Tone5,
        Tone::Tone6,
        Tone::Tone7,
        Tone::Tone8,
        Tone::Tone9,
        Tone::Star,
        Tone::Pound,
        Tone::A,
        Tone::B,
        Tone::C,
        Tone::D,
        Tone::Flash,
    ];

    /// Graph's name (`tone1`, `pound`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Tone::Tone0 => "tone0",
            Tone::Tone1 => "tone1",
            Tone::Tone2 => "tone2",
            Tone::Tone3 => "tone3",
            Tone::Tone4 => "tone4",
            Tone::Tone5 => "tone5",
            Tone::Tone6 => "tone6",
            Tone::Tone7 => "tone7",
            Tone::Tone8 => "tone8",
            Tone::Tone9 => "tone9",
            Tone::Star => "star",
            Tone::Pound => "pound",
            Tone::A => "a",
            Tone::B => "b",
            Tone::C => "c",
            Tone::D => "d",
            Tone::Flash => "flash",
        }
    }

    pub fn from_name(name: &str) -> Option<Tone> {
        Tone::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// The key as a phone shows it: `0`–`9`, `*`, `#`, `A`–`D`, and `!` for flash (RFC 4733 event 16).
    pub fn as_char(self) -> char {
        match self {
            Tone::Star => '*',
            Tone::Pound => '#',
            Tone::A => 'A',
            Tone::B => 'B',
            Tone::C => 'C',
            Tone::D => 'D',
            Tone::Flash => '!',
            digit => char::from(b'0' + digit as u8),
        }
    }

    pub fn from_char(c: char) -> Option<Tone> {
        Tone::ALL.into_iter().find(|t| t.as_char() == c.to_ascii_uppercase())
    }

    /// Keys as a string of characters (`"12#"`), for the sim's API and behaviours.
    pub fn parse_keys(keys: &str) -> Result<Vec<Tone>, char> {
        keys.chars().map(|c| Tone::from_char(c).ok_or(c)).collect()
    }

    pub fn keys(tones: &[Tone]) -> String {
        tones.iter().map(|t| t.as_char()).collect()
    }
}

/// What a media operation is; Graph names its `commsOperation` subtype after it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OperationKind {
    /// A transfer (tracked by an operation for the 2018 beta's sake).
    #[default]
    Transfer,
    PlayPrompt,
    Record,
    SubscribeToTone,
    SendDtmfTones,
    CancelMediaProcessing,
    Mute,
    Unmute,
    UpdateRecordingStatus,
    /// `participants/invite`.
    Invite,
    /// `participants/{id}/mute`.
    MuteParticipant,
    StartHoldMusic,
    StopHoldMusic,
}

/// Why a media operation ended (Graph's `completionReason`, the union of the record, prompt and DTMF
/// enums; each kind uses its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CompletionReason {
    /// A prompt played to its end, or the tones were sent.
    CompletedSuccessfully,
    /// A prompt or tones cancelled (`cancelMediaProcessing`, or the call ended).
    MediaOperationCanceled,
    /// A recording cancelled.
    OperationCanceled,
    StopToneDetected,
    MaxRecordDurationReached,
    InitialSilenceTimeout,
    MaxSilenceTimeout,
    PlayPromptFailed,
    MediaReceiveTimeout,
    UnspecifiedError,
}

impl CompletionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CompletionReason::CompletedSuccessfully => "completedSuccessfully",
            CompletionReason::MediaOperationCanceled => "mediaOperationCanceled",
            CompletionReason::OperationCanceled => "operationCanceled",
            CompletionReason::StopToneDetected => "stopToneDetected",
            CompletionReason::MaxRecordDurationReached => "maxRecordDurationReached",
            CompletionReason::InitialSilenceTimeout => "initialSilenceTimeout",
            CompletionReason::MaxSilenceTimeout => "maxSilenceTimeout",
            CompletionReason::PlayPromptFailed => "playPromptFailed",
            CompletionReason::MediaReceiveTimeout => "mediaReceiveTimeout",
            CompletionReason::UnspecifiedError => "unspecifiedError",
        }
    }

    /// Whether the operation failed: it was cancelled, or the media could not be played or received.
    /// A recording that ends on a timeout or a stop tone completed: it has a recording.
    pub fn failed(self) -> bool {
        matches!(
            self,
            CompletionReason::MediaOperationCanceled
                | CompletionReason::OperationCanceled
                | CompletionReason::PlayPromptFailed
                | CompletionReason::MediaReceiveTimeout
                | CompletionReason::UnspecifiedError
        )
    }

    /// The `resultInfo` an operation that ended this way carries. Graph documents 200/0 for a prompt
    /// played, 200/8515 for a recording that reached its longest, and 400/8508 for a cancelled
    /// operation; the other reasons have no published code, so they carry 200/0 (or 500/9000 for a
    /// failure) and a message that names them.
    pub fn result_info(self) -> ResultInfo {
        match self {
            CompletionReason::MediaOperationCanceled | CompletionReason::OperationCanceled => ResultInfo::media_cancelled(),
            CompletionReason::PlayPromptFailed => ResultInfo::media_failed("the prompt could not be played"),
            CompletionReason::MediaReceiveTimeout => ResultInfo::media_failed("no media was received"),
            CompletionReason::UnspecifiedError => ResultInfo::media_failed("the media operation failed"),
            CompletionReason::CompletedSuccessfully => ResultInfo::media_completed(0, "Action completed successfully."),
            CompletionReason::MaxRecordDurationReached => {
                ResultInfo::media_completed(8515, "Action completed, max record duration reached.")
            }
            CompletionReason::StopToneDetected => ResultInfo::media_completed(0, "Action completed, stop tone detected."),
            CompletionReason::InitialSilenceTimeout => ResultInfo::media_completed(0, "Action completed, initial silence timeout."),
            CompletionReason::MaxSilenceTimeout => ResultInfo::media_completed(0, "Action completed, max silence timeout."),
        }
    }
}

/// Graph's `recordingStatus`, as the bot sets it with `updateRecordingStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RecordingStatus {
    Unknown,
    NotRecording,
    Recording,
    Failed,
}

impl RecordingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingStatus::Unknown => "unknown",
            RecordingStatus::NotRecording => "notRecording",
            RecordingStatus::Recording => "recording",
            RecordingStatus::Failed => "failed",
        }
    }
}

/// What `recordResponse` asked for. Times are milliseconds (Graph gives seconds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordSettings {
    /// Played before recording starts.
    pub prompts: Vec<String>,
    /// A key press stops the prompts and starts the recording at once.
    pub barge_in: bool,
    /// The recording ends if the caller says nothing for this long from its start.
    pub initial_silence_ms: u64,
    /// The recording ends after this much silence once the caller has spoken.
    pub max_silence_ms: u64,
    pub max_duration_ms: u64,
    pub beep: bool,
    /// Keys that end the recording.
    pub stop_tones: Vec<Tone>,
}

/// A queued media operation: what the network plays or records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum MediaAction {
    /// Prompts (media URIs) in order; with `looped`, again and again until cancelled.
    Play {
        prompts: Vec<String>,
        looped: bool,
    },
    Record(RecordSettings),
}

/// One media operation in the call's queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaJob {
    pub operation_id: String,
    pub action: MediaAction,
}

/// A finished recording, as the network made it: where the adapter serves it from (`id`), how long it
/// is, and the token that fetches it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recording {
    pub id: String,
    pub duration_ms: u64,
    /// The bearer token that fetches it (`recordingAccessToken`).
    pub access_token: String,
}

/// Without the token: events are logged and kept in call histories, which the token must not reach.
impl std::fmt::Debug for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recording").field("id", &self.id).field("duration_ms", &self.duration_ms).finish_non_exhaustive()
    }
}

/// The media state of a call.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Media {
    /// `playPrompt` and `recordResponse` operations: the first is running, the others wait.
    #[serde(default)]
    pub queue: Vec<MediaJob>,
    /// `subscribeToTone` was called: keys pressed are reported.
    #[serde(default)]
    pub tones_subscribed: bool,
    /// The last `toneInfo.sequenceId` sent (they count from 1).
    #[serde(default)]
    pub tone_sequence: u64,
    /// The bot muted itself.
    #[serde(default)]
    pub muted: bool,
    #[serde(default)]
    pub recording_status: Option<RecordingStatus>,
    /// The participant on hold (with music), if one is: only one can be at a time.
    #[serde(default)]
    pub held: Option<String>,
}

impl Media {
    /// Nothing playing, subscribed, muted or set: as a call starts.
    pub fn is_idle(&self) -> bool {
        *self == Media::default()
    }
}

impl OperationKind {
    pub fn is_transfer(&self) -> bool {
        *self == OperationKind::Transfer
    }
}

/// How many `playPrompt` and `recordResponse` operations may wait in a call's queue.
pub const MEDIA_QUEUE_MAX: usize = 10;
/// At most this many prompts in one request (Graph's documented limit).
pub const PROMPTS_MAX: usize = 20;

/// A media command from the bot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaRequest {
    Play { prompts: Vec<String>, looped: bool },
    Record(RecordSettings),
    SubscribeToTone,
    SendDtmfTones { tones: Vec<Tone>, delay_between_ms: u64 },
    CancelMediaProcessing,
    Mute,
    Unmute,
    UpdateRecordingStatus(RecordingStatus),
}

impl MediaRequest {
    pub fn kind(&self) -> OperationKind {
        match self {
            MediaRequest::Play { .. } => OperationKind::PlayPrompt,
            MediaRequest::Record(_) => OperationKind::Record,
            MediaRequest::SubscribeToTone => OperationKind::SubscribeToTone,
            MediaRequest::SendDtmfTones { .. } => OperationKind::SendDtmfTones,
            MediaRequest::CancelMediaProcessing => OperationKind::CancelMediaProcessing,
            MediaRequest::Mute => OperationKind::Mute,
            MediaRequest::Unmute => OperationKind::Unmute,
            MediaRequest::UpdateRecordingStatus(_) => OperationKind::UpdateRecordingStatus,
        }
    }

    /// The action's name, for refusals.
    pub fn action(&self) -> &'static str {
        match self {
            MediaRequest::Play { .. } => "play a prompt to",
            MediaRequest::Record(_) => "record a response in",
            MediaRequest::SubscribeToTone => "subscribe to the tones of",
            MediaRequest::SendDtmfTones { .. } => "send DTMF tones in",
            MediaRequest::CancelMediaProcessing => "cancel media processing in",
            MediaRequest::Mute => "mute",
            MediaRequest::Unmute => "unmute",
            MediaRequest::UpdateRecordingStatus(_) => "update the recording status of",
        }
    }
}

/// A `toneInfo`: the key the caller pressed, numbered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToneInfo {
    pub sequence_id: u64,
    pub tone: Tone,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_names_round_trip() {
        for t in Tone::ALL {
            assert_eq!(Tone::from_name(t.as_str()), Some(t));
            assert_eq!(Tone::from_char(t.as_char()), Some(t));
        }
        assert_eq!(Tone::parse_keys("1#*a"), Ok(vec![Tone::Tone1, Tone::Pound, Tone::Star, Tone::A]));
        assert_eq!(Tone::parse_keys("1x"), Err('x'));
        assert_eq!(Tone::keys(&[Tone::Tone0, Tone::Tone9, Tone::Pound]), "09#");
        assert_eq!(serde_json::to_string(&Tone::Tone7).ok().as_deref(), Some("\"tone7\""));
    }
}
