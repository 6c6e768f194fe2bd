//! `name-addr` / `addr-spec` with header parameters (RFC 3261 §20.10, §20.20, §20.39): the shape of
//! `From`, `To` and `Contact`.

use std::fmt;

use super::Params;
use crate::message::{ParseError, shorten};
use crate::uri::SipUri;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameAddr {
    pub display: Option<String>,
    /// The URI as written.
    pub uri: String,
    /// Header parameters (`tag`, `expires`…), not the URI's own.
    pub params: Params,
}

impl NameAddr {
    pub fn parse(value: &str) -> Result<NameAddr, ParseError> {
        let bad = |why: &str| ParseError(format!("'{}': {why}", shorten(value)));
        let v = value.trim();
        let (display, uri, rest) = if let Some(open) = find_unquoted(v, '<') {
            let close = v[open..].find('>').map(|c| open + c).ok_or_else(|| bad("'<' without '>'"))?;
            let display = v[..open].trim().trim_matches('"').trim();
            (Some(display).filter(|d| !d.is_empty()).map(str::to_owned), v[open + 1..close].trim(), &v[close + 1..])
        } else {
            // addr-spec: the URI cannot carry parameters of its own here; they belong to the header.
            let at = v.find(';').unwrap_or(v.len());
            (None, v[..at].trim(), &v[at..])
        };
        if uri.is_empty() {
            return Err(bad("no URI"));
        }
        if !uri.contains(':') {
            return Err(bad("the URI has no scheme"));
        }
        let rest = rest.trim();
        if !rest.is_empty() && !rest.starts_with(';') {
            return Err(bad("text after the URI is not a parameter"));
        }
        Ok(NameAddr { display, uri: uri.to_owned(), params: Params::parse(rest) })
    }

    pub fn tag(&self) -> Option<&str> {
        self.params.value("tag")
    }

    pub fn sip_uri(&self) -> Result<SipUri, ParseError> {
        SipUri::parse(&self.uri)
    }
}

fn find_unquoted(s: &str, needle: char) -> Option<usize> {
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c == needle && !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display {
            write!(f, "\"{}\" ", d.replace('"', ""))?;
        }
        write!(f, "<{}>{}", self.uri, self.params)
    }
}

#[cfg(test)]
mod tests {
    use super::NameAddr;

    #[test]
    fn forms() {
        let a = NameAddr::parse("\"Heidi, Steen\" <sip:heidi@127.0.0.1;transport=udp>;tag=abc").unwrap();
        assert_eq!(
            (a.display.as_deref(), a.uri.as_str(), a.tag()),
            (Some("Heidi, Steen"), "sip:heidi@127.0.0.1;transport=udp", Some("abc"))
        );
        assert_eq!(a.to_string(), "\"Heidi, Steen\" <sip:heidi@127.0.0.1;transport=udp>;tag=abc");
        let b = NameAddr::parse("sip:alex@h;tag=1").unwrap();
        assert_eq!((b.uri.as_str(), b.tag()), ("sip:alex@h", Some("1")));
        assert_eq!(b.to_string(), "<sip:alex@h>;tag=1");
    }

    #[test]
    fn malformed() {
        assert_eq!(NameAddr::parse("<sip:a@h").unwrap_err().0, "'<sip:a@h': '<' without '>'");
        assert_eq!(NameAddr::parse("<>").unwrap_err().0, "'<>': no URI");
        assert_eq!(NameAddr::parse("heidi").unwrap_err().0, "'heidi': the URI has no scheme");
        assert_eq!(NameAddr::parse("<sip:a@h> x").unwrap_err().0, "'<sip:a@h> x': text after the URI is not a parameter");
    }
}
