//! Pure decoders: a Graph operation's body bytes → a typed command, or a [`BodyError`] that names the
//! field by its JSON path. They read nothing but the bytes and the [`Policy`]: no directory, no calls,
//! no token. Who may do it, whom the ids name and whether the calls allow it are checked after
//! decoding, in `api::graph`, each in one place; the call's state is the core's to judge. So every
//! decoder can be fuzzed on its own.
//!
//! One file per operation family: [`call`] (create a call), [`action`] (answer, reject, redirect),
//! [`transfer`], [`media`] (prompts, recordings, tones, mute).

pub mod action;
pub mod call;
pub mod media;
pub mod participants;
pub mod transfer;

use super::parse::{self, BodyError, IdentityRef, Obj, err};
use crate::callback::CallbackPolicy;
use crate::config::is_e164;

/// What decoding may depend on besides the bytes: settings, never state.
#[derive(Clone, Copy, Debug)]
pub struct Policy<'a> {
    /// Where notifications may go.
    pub callbacks: &'a CallbackPolicy,
}

/// Which kind of `mediaConfig` a body asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Media {
    ServiceHosted,
    /// Needs `Calls.AccessMedia.All`, checked after decoding.
    AppHosted,
}

/// An identity a body names, with the JSON path of its `identitySet` for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Named {
    pub path: String,
    pub who: IdentityRef,
}

/// The most parties one request may name (a group call's invitees, a redirect's targets).
pub const TARGETS_MAX: usize = 25;

pub const MODALITIES: [&str; 4] = ["audio", "video", "videoBasedScreenSharing", "data"];

/// The body as a JSON object.
fn root(bytes: &[u8]) -> Result<serde_json::Value, BodyError> {
    parse::object(bytes)
}

fn media(obj: Obj<'_>) -> Result<Media, BodyError> {
    let mut h = String::new();
    let mc = obj.obj_opt("mediaConfig", &mut h)?.ok_or_else(|| err("mediaConfig", "is required"))?;
    let kind = mc.odata_type()?.ok_or_else(|| {
        err(
            "mediaConfig.@odata.type",
            "is required to choose #microsoft.graph.serviceHostedMediaConfig or #microsoft.graph.appHostedMediaConfig",
        )
    })?;
    match kind.as_str() {
        "servicehostedmediaconfig" => Ok(Media::ServiceHosted),
        "apphostedmediaconfig" => Ok(Media::AppHosted),
        other => Err(err(
            "mediaConfig.@odata.type",
            format!("'{other}' is not a media configuration; use serviceHostedMediaConfig or appHostedMediaConfig"),
        )),
    }
}

fn modalities(obj: Obj<'_>, name: &str, required: bool) -> Result<Vec<String>, BodyError> {
    let Some(list) = obj.strings_opt(name)? else {
        return if required { Err(err(obj.path_of(name), "is required")) } else { Ok(vec!["audio".to_owned()]) };
    };
    if list.is_empty() {
        return Err(err(obj.path_of(name), "must name at least one modality"));
    }
    list.into_iter()
        .enumerate()
        .map(|(i, m)| {
            MODALITIES.iter().find(|k| k.eq_ignore_ascii_case(&m)).map(|k| (*k).to_owned()).ok_or_else(|| {
                err(format!("{}[{i}]", obj.path_of(name)), format!("'{m}' is not a modality; use one of {}", MODALITIES.join(", ")))
            })
        })
        .collect()
}

fn callback(obj: Obj<'_>, policy: &Policy, required: bool) -> Result<Option<String>, BodyError> {
    match obj.str_opt("callbackUri")? {
        Some(v) => match policy.callbacks.check(v) {
            Ok(_) => Ok(Some(v.to_owned())),
            Err(problem) => Err(err("callbackUri", problem)),
        },
        None if required => Err(err("callbackUri", "is required")),
        None => Ok(None),
    }
}

/// An `identitySet` at `path`, phone numbers checked for E.164 form.
fn identity(set: Obj<'_>, path: String) -> Result<Named, BodyError> {
    let who = parse::identity_set(set)?;
    if let IdentityRef::Phone { number } = &who
        && !is_e164(number)
    {
        return Err(err(format!("{path}.phone.id"), format!("'{number}' is not an E.164 phone number (like +12345678901)")));
    }
    Ok(Named { path, who })
}

/// `targets`: 1 to [`TARGETS_MAX`] `invitationParticipantInfo`s, each with an `identity`.
fn targets(obj: Obj<'_>, what: &str) -> Result<Vec<Named>, BodyError> {
    let (targets, tpath) = obj.array_opt("targets")?.ok_or_else(|| err("targets", "is required"))?;
    if targets.is_empty() || targets.len() > TARGETS_MAX {
        return Err(err("targets", format!("must name 1 to {TARGETS_MAX} {what}, not {}", targets.len())));
    }
    targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let p = format!("{tpath}[{i}]");
            let t = parse::element(t, &p)?;
            let mut h = String::new();
            let set = t.obj_opt("identity", &mut h)?.ok_or_else(|| err(t.path_of("identity"), "is required"))?;
            identity(set, format!("{p}.identity"))
        })
        .collect()
}

#[cfg(test)]
mod tests;
