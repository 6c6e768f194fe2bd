//! `POST /communications/calls`: an outgoing call, peer-to-peer (one target) or group (several).

use super::{Media, Named, Policy, callback, media, modalities, root, targets};
use crate::graph::parse::{BodyError, Obj, err};

/// A create-call body, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateCall {
    pub callback_uri: String,
    pub media: Media,
    pub requested_modalities: Vec<String>,
    /// The tenant the body names, if any; it must be the token's.
    pub tenant_id: Option<String>,
    pub subject: Option<String>,
    /// `ringingTimeoutInSeconds`, 1 to 115.
    pub ringing_timeout_s: Option<u64>,
    /// `source.identity.applicationInstance.id`: place the call from one of the app's instances.
    pub source_instance: Option<String>,
    /// In the order given; one makes a peer-to-peer call, several a group call.
    pub targets: Vec<Named>,
}

pub fn create_call(bytes: &[u8], policy: &Policy) -> Result<CreateCall, BodyError> {
    let root = root(bytes)?;
    let obj = Obj::root(&root).ok_or_else(|| err("(body)", "expected a JSON object"))?;
    let callback_uri = callback(obj, policy, true)?.unwrap_or_default();
    let media = media(obj)?;
    let requested_modalities = modalities(obj, "requestedModalities", false)?;
    if obj.get("meetingInfo").is_some() || obj.get("chatInfo").is_some() {
        return Err(err(
            if obj.get("meetingInfo").is_some() { "meetingInfo" } else { "chatInfo" },
            "Joining meetings (meetingInfo, chatInfo) is not supported by Switchboard; place a peer-to-peer call with one target, or a group call with several",
        ));
    }
    let tenant_id = obj.str_opt("tenantId")?.map(str::to_owned);
    let subject = obj.str_opt("subject")?.map(str::to_owned);
    let ringing_timeout_s = match obj.int_opt("ringingTimeoutInSeconds")? {
        None => None,
        Some(s) if (1..=115).contains(&s) => Some(s as u64),
        Some(s) => return Err(err("ringingTimeoutInSeconds", format!("{s} is out of range; use 1 to 115 seconds"))),
    };
    let mut source_instance = None;
    let (mut h, mut h2, mut h3) = (String::new(), String::new(), String::new());
    if let Some(src) = obj.obj_opt("source", &mut h)?
        && let Some(set) = src.obj_opt("identity", &mut h2)?
        && let Some(inst) = set.obj_opt("applicationInstance", &mut h3)?
    {
        source_instance = Some(inst.str_req("id")?.to_owned());
    }
    let targets = targets(obj, "parties to call")?;
    Ok(CreateCall { callback_uri, media, requested_modalities, tenant_id, subject, ringing_timeout_s, source_instance, targets })
}
