//! The media actions on a call: `playPrompt`, `recordResponse`, `subscribeToTone`, `sendDtmfTones`,
//! `cancelMediaProcessing`, `mute`, `unmute` and `updateRecordingStatus`.

use switchboard_core::media::{MediaRequest, PROMPTS_MAX, RecordSettings, RecordingStatus, Tone};

use super::root;
use super::transfer::CLIENT_CONTEXT_MAX;
use crate::graph::parse::{BodyError, Obj, element, err};

/// The longest media URI taken.
pub const URI_MAX: usize = 2048;
/// Graph's limits on a recording's timeouts, in seconds (each defaults to 5).
pub const RECORD_SECONDS: std::ops::RangeInclusive<i64> = 1..=120;
/// The most tones one `sendDtmfTones` sends.
pub const TONES_MAX: usize = 64;
/// The longest `delayBetweenTonesMs`.
pub const TONE_DELAY_MAX_MS: i64 = 10_000;

/// A decoded media action: what to do, and the bot's `clientContext`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaCommand {
    pub client_context: Option<String>,
    pub request: MediaRequest,
}

/// The media actions, by their lower-cased names (as `api::graph` matches them).
pub const ACTIONS: [&str; 8] = [
    "playprompt",
    "recordresponse",
    "subscribetotone",
    "senddtmftones",
    "cancelmediaprocessing",
    "mute",
    "unmute",
    "updaterecordingstatus",
];

/// Decodes the body of media action `action` (lower-cased, without namespace).
pub fn media(action: &str, bytes: &[u8]) -> Result<MediaCommand, BodyError> {
    // The actions that take only `clientContext` may come without a body.
    let empty = bytes.iter().all(u8::is_ascii_whitespace);
    let root = if empty && !matches!(action, "playprompt" | "senddtmftones" | "updaterecordingstatus") {
        serde_json::json!({})
    } else {
        root(bytes)?
    };
    let obj = Obj::root(&root).ok_or_else(|| err("(body)", "expected a JSON object"))?;
    let client_context = obj.str_opt("clientContext")?.map(str::to_owned);
    if let Some(n) = client_context.as_ref().map(|c| c.chars().count()).filter(|n| *n > CLIENT_CONTEXT_MAX) {
        return Err(err("clientContext", format!("is {n} characters long; at most {CLIENT_CONTEXT_MAX} are allowed")));
    }
    let request = match action {
        "playprompt" => {
            let prompts = prompts(obj, true, PROMPTS_MAX)?;
            MediaRequest::Play { prompts, looped: obj.bool_opt("loop")?.unwrap_or(false) }
        }
        "recordresponse" => MediaRequest::Record(record(obj)?),
        "subscribetotone" => MediaRequest::SubscribeToTone,
        "senddtmftones" => send_dtmf(obj)?,
        "cancelmediaprocessing" => MediaRequest::CancelMediaProcessing,
        "mute" => MediaRequest::Mute,
        "unmute" => MediaRequest::Unmute,
        "updaterecordingstatus" => {
            let status = obj.str_req("status")?;
            let known = [RecordingStatus::NotRecording, RecordingStatus::Recording, RecordingStatus::Failed, RecordingStatus::Unknown];
            let status = known.into_iter().find(|s| s.as_str().eq_ignore_ascii_case(status)).ok_or_else(|| {
                err("status", format!("'{status}' is not a recordingStatus; use notRecording, recording, failed or unknown"))
            })?;
            MediaRequest::UpdateRecordingStatus(status)
        }
        other => return Err(err("(action)", format!("'{other}' is not a media action"))),
    };
    Ok(MediaCommand { client_context, request })
}

/// `prompts`: `mediaPrompt`s, each naming its media by `mediaInfo.uri`.
fn prompts(obj: Obj<'_>, required: bool, max: usize) -> Result<Vec<String>, BodyError> {
    let Some((list, path)) = obj.array_opt("prompts")? else {
        return if required { Err(err("prompts", "is required: at least one mediaPrompt")) } else { Ok(Vec::new()) };
    };
    if required && list.is_empty() {
        return Err(err(path, "must hold at least one mediaPrompt"));
    }
    if list.len() > max {
        return Err(err(path, format!("holds {} prompts; at most {max} are allowed", list.len())));
    }
    let mut uris = Vec::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        let at = format!("{path}[{i}]");
        uris.push(prompt(&element(v, &at)?)?);
    }
    Ok(uris)
}

/// A `mediaPrompt`: the URI of its media.
pub(super) fn prompt(prompt: &Obj<'_>) -> Result<String, BodyError> {
    if let Some(t) = prompt.odata_type()?
        && t != "mediaprompt"
    {
        return Err(err(
            prompt.path_of("@odata.type"),
            format!("'{t}' is not a prompt Switchboard plays; use #microsoft.graph.mediaPrompt"),
        ));
    }
    let mut h = String::new();
    let info = prompt.obj_opt("mediaInfo", &mut h)?.ok_or_else(|| err(prompt.path_of("mediaInfo"), "is required"))?;
    let uri = info.str_req("uri")?;
    if uri.trim().is_empty() {
        return Err(err(info.path_of("uri"), "must not be empty"));
    }
    if uri.chars().count() > URI_MAX {
        return Err(err(info.path_of("uri"), format!("is longer than {URI_MAX} characters")));
    }
    if uri.chars().any(char::is_control) {
        return Err(err(info.path_of("uri"), "must not contain control characters"));
    }
    info.str_opt("resourceId")?;
    Ok(uri.to_owned())
}

fn seconds(obj: Obj<'_>, name: &str) -> Result<u64, BodyError> {
    match obj.int_opt(name)? {
        None => Ok(5_000),
        Some(s) if RECORD_SECONDS.contains(&s) => Ok(s.unsigned_abs() * 1000),
        Some(s) => Err(err(name, format!("{s} is out of range; use {} to {} seconds", RECORD_SECONDS.start(), RECORD_SECONDS.end()))),
    }
}

fn record(obj: Obj<'_>) -> Result<RecordSettings, BodyError> {
    // Graph plays at most one prompt before a recording.
    let prompts = prompts(obj, false, 1)?;
    let mut stop_tones = Vec::new();
    for (i, t) in obj.strings_opt("stopTones")?.unwrap_or_default().iter().enumerate() {
        let tone =
            tone_of(t).ok_or_else(|| err(format!("stopTones[{i}]"), format!("'{t}' is not a key; use 0-9, *, #, A-D (or a tone name)")))?;
        stop_tones.push(tone);
    }
    Ok(RecordSettings {
        prompts,
        barge_in: obj.bool_opt("bargeInAllowed")?.unwrap_or(false),
        initial_silence_ms: seconds(obj, "initialSilenceTimeoutInSeconds")?,
        max_silence_ms: seconds(obj, "maxSilenceTimeoutInSeconds")?,
        max_duration_ms: seconds(obj, "maxRecordDurationInSeconds")?,
        beep: obj.bool_opt("playBeep")?.unwrap_or(true),
        stop_tones,
    })
}

/// A key as Graph's examples write stop tones (`"#"`, `"1"`), or a tone's name (`"pound"`).
fn tone_of(s: &str) -> Option<Tone> {
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Tone::from_char(c),
        _ => Tone::from_name(s),
    }
}

fn send_dtmf(obj: Obj<'_>) -> Result<MediaRequest, BodyError> {
    let names = obj.strings_opt("tones")?.ok_or_else(|| err("tones", "is required: the tones to send"))?;
    if names.is_empty() || names.len() > TONES_MAX {
        return Err(err("tones", format!("holds {} tones; send 1 to {TONES_MAX}", names.len())));
    }
    let mut tones = Vec::with_capacity(names.len());
    for (i, n) in names.iter().enumerate() {
        let tone = Tone::from_name(n)
            .ok_or_else(|| err(format!("tones[{i}]"), format!("'{n}' is not a tone; use tone0-tone9, star, pound, a-d or flash")))?;
        tones.push(tone);
    }
    let delay = match obj.int_opt("delayBetweenTonesMs")? {
        None => 0,
        Some(d) if (0..=TONE_DELAY_MAX_MS).contains(&d) => d.unsigned_abs(),
        Some(d) => return Err(err("delayBetweenTonesMs", format!("{d} is out of range; use 0 to {TONE_DELAY_MAX_MS}"))),
    };
    Ok(MediaRequest::SendDtmfTones { tones, delay_between_ms: delay })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(action: &str, body: serde_json::Value) -> Result<MediaRequest, String> {
        media(action, body.to_string().as_bytes()).map(|c| c.request).map_err(|e| e.to_string())
    }

    #[test]
    fn media_bodies_are_read_and_refused_by_field() {
        let prompt = |uri: &str| json!({"@odata.type": "#microsoft.graph.mediaPrompt", "mediaInfo": {"uri": uri, "resourceId": "r"}});
        assert_eq!(
            check("playprompt", json!({"prompts": [prompt("https://cdn/a.wav"), prompt("https://cdn/b.wav")], "loop": true})),
            Ok(MediaRequest::Play { prompts: vec!["https://cdn/a.wav".into(), "https://cdn/b.wav".into()], looped: true })
        );
        let cases: Vec<(&str, serde_json::Value, &str)> = vec![
            ("playprompt", json!({}), "prompts: is required: at least one mediaPrompt"),
            ("playprompt", json!({"prompts": []}), "prompts: must hold at least one mediaPrompt"),
            ("playprompt", json!({"prompts": [{"mediaInfo": {}}]}), "prompts[0].mediaInfo.uri: is required"),
            ("playprompt", json!({"prompts": [{"mediaInfo": {"uri": " "}}]}), "prompts[0].mediaInfo.uri: must not be empty"),
            (
                "playprompt",
                json!({"prompts": [{"@odata.type": "#microsoft.graph.textPrompt"}]}),
                "prompts[0].@odata.type: 'textprompt' is not a prompt Switchboard plays; use #microsoft.graph.mediaPrompt",
            ),
            (
                "playprompt",
                json!({"prompts": [prompt("a")], "clientContext": "x".repeat(257)}),
                "clientContext: is 257 characters long; at most 256 are allowed",
            ),
            // A character across the 16th byte, where the namespace prefix is looked for (it panicked).
            (
                "playprompt",
                json!({"prompts": [{"@odata.type": "aaaaaaaaaaaaaaaé", "mediaInfo": {"uri": "x"}}]}),
                "prompts[0].@odata.type: 'aaaaaaaaaaaaaaaé' is not a prompt Switchboard plays; use #microsoft.graph.mediaPrompt",
            ),
            (
                "recordresponse",
                json!({"maxRecordDurationInSeconds": 121}),
                "maxRecordDurationInSeconds: 121 is out of range; use 1 to 120 seconds",
            ),
            ("recordresponse", json!({"stopTones": ["#", "11"]}), "stopTones[1]: '11' is not a key; use 0-9, *, #, A-D (or a tone name)"),
            ("recordresponse", json!({"prompts": [prompt("a"), prompt("b")]}), "prompts: holds 2 prompts; at most 1 are allowed"),
            (
                "senddtmftones",
                json!({"tones": ["tone1", "hash"]}),
                "tones[1]: 'hash' is not a tone; use tone0-tone9, star, pound, a-d or flash",
            ),
            (
                "senddtmftones",
                json!({"tones": ["tone1"], "delayBetweenTonesMs": -1}),
                "delayBetweenTonesMs: -1 is out of range; use 0 to 10000",
            ),
            ("senddtmftones", json!({}), "tones: is required: the tones to send"),
            (
                "updaterecordingstatus",
                json!({"status": "paused"}),
                "status: 'paused' is not a recordingStatus; use notRecording, recording, failed or unknown",
            ),
            ("updaterecordingstatus", json!({}), "status: is required"),
        ];
        for (action, body, want) in cases {
            assert_eq!(check(action, body.clone()), Err(want.to_owned()), "{action} {body}");
        }
        let r = check("recordresponse", json!({"stopTones": ["#", "pound", "1"], "maxSilenceTimeoutInSeconds": 2.0, "playBeep": false}));
        assert_eq!(
            r,
            Ok(MediaRequest::Record(RecordSettings {
                prompts: vec![],
                barge_in: false,
                initial_silence_ms: 5_000,
                max_silence_ms: 2_000,
                max_duration_ms: 5_000,
                beep: false,
                stop_tones: vec![Tone::Pound, Tone::Pound, Tone::Tone1],
            }))
        );
        // The clientContext-only actions take an empty body.
        assert_eq!(media("subscribetotone", b"").map(|c| c.request), Ok(MediaRequest::SubscribeToTone));
        assert!(media("playprompt", b"").is_err());
    }
}
