//! `transfer`, in today's shape (`transferTarget`, `transferee`) or the 2018 beta's (a top-level
//! `target`, `replacesCallId` and `clientContext`).

use super::{Named, identity, root};
use crate::graph::parse::{self, BodyError, Obj, err};

/// The maximum length of `clientContext` (Graph: "Max limit is 256 chars").
pub const CLIENT_CONTEXT_MAX: usize = 256;

/// `customCallingContext.sipHeaders` (our extension, after ACS's): at most this many headers, ...
pub const SIP_HEADERS_MAX: usize = 5;
/// ... names `X-…` of at most this many characters, ...
pub const SIP_HEADER_NAME_MAX: usize = 64;
/// ... and values of at most this many.
pub const SIP_HEADER_VALUE_MAX: usize = 256;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// The transfer target, with the path it was named at (`transferTarget.identity` or `target`).
    pub target: Named,
    /// Consultative: the bot's call with the target, and the field that named it.
    pub replaces_call_id: Option<(String, &'static str)>,
    pub client_context: Option<String>,
    /// Who to transfer (a group call must say; a peer-to-peer call may).
    pub transferee: Option<Transferee>,
    /// Custom SIP headers for the target: `customCallingContext.sipHeaders`.
    pub sip_headers: Vec<(String, String)>,
}

/// The `transferee` as named: by participant id, identity, or both (then they must agree).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transferee {
    pub participant_id: Option<String>,
    pub identity: Option<Named>,
}

pub fn transfer(bytes: &[u8]) -> Result<Transfer, BodyError> {
    let root = root(bytes)?;
    let obj = Obj::root(&root).ok_or_else(|| err("(body)", "expected a JSON object"))?;
    let client_context = obj.str_opt("clientContext")?.map(str::to_owned);
    if let Some(n) = client_context.as_ref().map(|c| c.chars().count()).filter(|n| *n > CLIENT_CONTEXT_MAX) {
        return Err(err("clientContext", format!("is {n} characters long; at most {CLIENT_CONTEXT_MAX} are allowed")));
    }
    let mut h = String::new();
    let transfer_target = obj.obj_opt("transferTarget", &mut h)?;
    let mut h2 = String::new();
    let target = match (transfer_target, obj.obj_opt("target", &mut h2)?) {
        (Some(tt), _) => {
            let mut h3 = String::new();
            let set = tt.obj_opt("identity", &mut h3)?.ok_or_else(|| err("transferTarget.identity", "is required"))?;
            identity(set, "transferTarget.identity".to_owned())?
        }
        // 2018 beta: the target as a bare identitySet.
        (None, Some(target)) => identity(target, "target".to_owned())?,
        (None, None) => return Err(err("transferTarget", "is required")),
    };
    let replaces_call_id = match transfer_target.map(|tt| tt.str_opt("replacesCallId")).transpose()?.flatten() {
        Some(r) => Some((r.to_owned(), "transferTarget.replacesCallId")),
        None => obj.str_opt("replacesCallId")?.map(|r| (r.to_owned(), "replacesCallId")),
    };
    let transferee = match obj.get("transferee") {
        None => None,
        Some(t) => {
            let p = parse::element(t.value, "transferee")?;
            let mut h = String::new();
            let identity = match p.obj_opt("identity", &mut h)? {
                Some(set) => Some(identity(set, "transferee.identity".to_owned())?),
                None => None,
            };
            Some(Transferee { participant_id: p.str_opt("participantId")?.map(str::to_owned), identity })
        }
    };
    let mut h4 = String::new();
    let sip_headers = match obj.obj_opt("customCallingContext", &mut h4)? {
        Some(context) => sip_headers(&context)?,
        None => Vec::new(),
    };
    Ok(Transfer { target, replaces_call_id, client_context, transferee, sip_headers })
}

/// `customCallingContext.sipHeaders`: an object of `X-` header names to string values, checked so
/// that nothing in it can break the SIP message it goes into.
fn sip_headers(context: &Obj<'_>) -> Result<Vec<(String, String)>, BodyError> {
    let mut holder = String::new();
    let Some(headers) = context.obj_opt("sipHeaders", &mut holder)? else { return Ok(Vec::new()) };
    let mut out: Vec<(String, String)> = Vec::new();
    for (name, value) in headers.entries() {
        let path = format!("customCallingContext.sipHeaders.{name}");
        if out.len() == SIP_HEADERS_MAX {
            return Err(err("customCallingContext.sipHeaders", format!("has more than {SIP_HEADERS_MAX} headers")));
        }
        // Bytes, not characters: a name is ASCII or it is refused (no slicing inside a character).
        let b = name.as_bytes();
        let ok = b.len() > 2
            && b.len() <= SIP_HEADER_NAME_MAX
            && b[..2].eq_ignore_ascii_case(b"x-")
            && b[2..].iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-');
        if !ok {
            return Err(err(
                &path,
                format!(
                    "is not a custom header name: it must start with 'X-', then letters, digits and '-', {SIP_HEADER_NAME_MAX} characters at most"
                ),
            ));
        }
        let value = value.as_str().ok_or_else(|| err(&path, "expected a string"))?;
        if value.chars().count() > SIP_HEADER_VALUE_MAX {
            return Err(err(&path, format!("is longer than {SIP_HEADER_VALUE_MAX} characters")));
        }
        if value.chars().any(|c| c.is_control()) {
            return Err(err(&path, "contains a control character (a line break, a tab…)"));
        }
        out.push((name.to_owned(), value.to_owned()));
    }
    Ok(out)
}
