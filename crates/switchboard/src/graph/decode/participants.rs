//! The actions on a call's participants: `participants/invite`, and on one participant `mute`,
//! `startHoldMusic` and `stopHoldMusic` (`DELETE` takes no body).

use switchboard_core::call::INVITEES_MAX;

use super::media::prompt;
use super::transfer::CLIENT_CONTEXT_MAX;
use super::{Named, identity, root};
use crate::graph::parse::{self, BodyError, Obj, err};

/// `participants/invite`: whom to invite, each maybe replacing another of the bot's calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invite {
    pub client_context: Option<String>,
    /// Each invitee, and the `replacesCallId` it came with.
    pub participants: Vec<(Named, Option<String>)>,
}

/// `startHoldMusic` / `stopHoldMusic` / participant `mute`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParticipantBody {
    pub client_context: Option<String>,
    /// `customPrompt.mediaInfo.uri` (startHoldMusic).
    pub prompt: Option<String>,
}

fn body(bytes: &[u8]) -> Result<serde_json::Value, BodyError> {
    if bytes.iter().all(u8::is_ascii_whitespace) { Ok(serde_json::json!({})) } else { root(bytes) }
}

fn client_context(obj: Obj<'_>) -> Result<Option<String>, BodyError> {
    let client_context = obj.str_opt("clientContext")?.map(str::to_owned);
    if let Some(n) = client_context.as_ref().map(|c| c.chars().count()).filter(|n| *n > CLIENT_CONTEXT_MAX) {
        return Err(err("clientContext", format!("is {n} characters long; at most {CLIENT_CONTEXT_MAX} are allowed")));
    }
    Ok(client_context)
}

pub fn invite(bytes: &[u8]) -> Result<Invite, BodyError> {
    let root = root(bytes)?;
    let obj = Obj::root(&root).ok_or_else(|| err("(body)", "expected a JSON object"))?;
    let client_context = client_context(obj)?;
    let (list, path) = obj.array_opt("participants")?.ok_or_else(|| err("participants", "is required: whom to invite"))?;
    if list.is_empty() || list.len() > INVITEES_MAX {
        return Err(err(path, format!("must name 1 to {INVITEES_MAX} participants, not {}", list.len())));
    }
    let mut participants = Vec::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let p = parse::element(v, &at)?;
        let mut h = String::new();
        let set = p.obj_opt("identity", &mut h)?.ok_or_else(|| err(p.path_of("identity"), "is required"))?;
        let named = identity(set, format!("{at}.identity"))?;
        let replaces = match p.str_opt("replacesCallId")? {
            Some(r) if r.trim().is_empty() => return Err(err(p.path_of("replacesCallId"), "must not be empty")),
            r => r.map(str::to_owned),
        };
        participants.push((named, replaces));
    }
    // Graph: with replacesCallId "only the first participant will be read and the rest of the
    // participants will be ignored".
    if participants.iter().any(|(_, r)| r.is_some()) {
        participants.truncate(1);
    }
    Ok(Invite { client_context, participants })
}

/// A participant action's body: `clientContext`, and for `startHoldMusic` a `customPrompt`.
pub fn participant(bytes: &[u8], hold_music: bool) -> Result<ParticipantBody, BodyError> {
    let root = body(bytes)?;
    let obj = Obj::root(&root).ok_or_else(|| err("(body)", "expected a JSON object"))?;
    let client_context = client_context(obj)?;
    let prompt = match obj.get("customPrompt").filter(|_| hold_music) {
        Some(f) => Some(prompt(&parse::element(f.value, &f.path)?)?),
        None => None,
    };
    Ok(ParticipantBody { client_context, prompt })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn participant_bodies_are_read_and_refused_by_field() {
        let heidi = json!({"user": {"id": "550fae72-d251-43ec-868c-373732c2704f"}});
        let ok = invite(json!({"participants": [{"identity": heidi, "replacesCallId": "b"}], "clientContext": "c"}).to_string().as_bytes())
            .unwrap();
        assert_eq!((ok.participants.len(), ok.participants[0].1.as_deref(), ok.client_context.as_deref()), (1, Some("b"), Some("c")));
        let refused = |b: serde_json::Value| invite(b.to_string().as_bytes()).unwrap_err().to_string();
        assert_eq!(refused(json!({})), "participants: is required: whom to invite");
        assert_eq!(refused(json!({"participants": []})), "participants: must name 1 to 5 participants, not 0");
        assert_eq!(refused(json!({"participants": [{}]})), "participants[0].identity: is required");
        let first = json!({"participants": [{"identity": heidi, "replacesCallId": "b"}, {"identity": {"user": {"id": "x"}}}]});
        assert_eq!(invite(first.to_string().as_bytes()).unwrap().participants.len(), 1, "with replacesCallId, the first only");
        assert_eq!(
            refused(json!({"participants": [{"identity": {"phone": {"id": "12"}}}]})),
            "participants[0].identity.phone.id: '12' is not an E.164 phone number (like +12345678901)"
        );
        let hold =
            participant(json!({"customPrompt": {"mediaInfo": {"uri": "https://bot.contoso.com/onHold.wav"}}}).to_string().as_bytes(), true)
                .unwrap();
        assert_eq!(hold.prompt.as_deref(), Some("https://bot.contoso.com/onHold.wav"));
        assert_eq!(participant(b"", false).unwrap(), ParticipantBody { client_context: None, prompt: None });
        assert_eq!(
            participant(json!({"customPrompt": {"mediaInfo": {}}}).to_string().as_bytes(), true).unwrap_err().to_string(),
            "customPrompt.mediaInfo.uri: is required"
        );
    }
}
