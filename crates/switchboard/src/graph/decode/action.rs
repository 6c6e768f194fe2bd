//! The actions on an incoming call: `answer`, `reject`, `redirect`. (`keepAlive` takes no body.)

use super::{Media, Named, Policy, callback, media, modalities, root, targets};
use crate::graph::parse::{BodyError, Obj, err};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub callback_uri: Option<String>,
    pub media: Media,
    pub accepted_modalities: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    pub targets: Vec<Named>,
}

fn object(root: &serde_json::Value) -> Result<Obj<'_>, BodyError> {
    Obj::root(root).ok_or_else(|| err("(body)", "expected a JSON object"))
}

pub fn answer(bytes: &[u8], policy: &Policy) -> Result<Answer, BodyError> {
    let root = root(bytes)?;
    let obj = object(&root)?;
    let callback_uri = callback(obj, policy, false)?;
    let media = media(obj)?;
    let accepted_modalities = modalities(obj, "acceptedModalities", true)?;
    match obj.int_opt("participantCapacity")? {
        Some(n) if n < 0 => return Err(err("participantCapacity", "must not be negative")),
        // Graph's Int32; larger numbers saturate in JSON readers, so they are refused, not clamped.
        Some(n) if n > i64::from(i32::MAX) => return Err(err("participantCapacity", format!("must be at most {} (an Int32)", i32::MAX))),
        _ => {}
    }
    Ok(Answer { callback_uri, media, accepted_modalities })
}

/// `reject`: the reason, `none`, `busy` or `forbidden`.
pub fn reject(bytes: &[u8], policy: &Policy) -> Result<String, BodyError> {
    let root = root(bytes)?;
    let obj = object(&root)?;
    let reason = match obj.str_opt("reason")? {
        None => "none".to_owned(),
        Some(r) => ["none", "busy", "forbidden"]
            .iter()
            .find(|k| k.eq_ignore_ascii_case(r))
            .map(|k| (*k).to_owned())
            .ok_or_else(|| err("reason", format!("'{r}' is not a rejectReason; use none, busy or forbidden")))?,
    };
    callback(obj, policy, false)?;
    Ok(reason)
}

pub fn redirect(bytes: &[u8], policy: &Policy) -> Result<Redirect, BodyError> {
    let root = root(bytes)?;
    let obj = object(&root)?;
    callback(obj, policy, false)?;
    if let Some(t) = obj.int_opt("timeout")?
        && !(15..=90).contains(&t)
    {
        return Err(err("timeout", format!("{t} is out of range; use 15 to 90 seconds")));
    }
    Ok(Redirect { targets: targets(obj, "targets")? })
}
