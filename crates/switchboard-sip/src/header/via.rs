//! `Via` (RFC 3261 §20.42, RFC 3581 `rport`): where a response goes back to.

use std::fmt;

use super::Params;
use crate::message::{ParseError, shorten};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Via {
    /// `UDP`, `TCP`, `TLS`…
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    pub params: Params,
}

impl Via {
    pub fn parse(value: &str) -> Result<Via, ParseError> {
        let bad = |why: &str| ParseError(format!("Via '{}': {why}", shorten(value)));
        let (proto, rest) = value.trim().split_once(char::is_whitespace).ok_or_else(|| bad("no sent-by"))?;
        let mut proto = proto.split('/');
        let transport = match (proto.next(), proto.next(), proto.next(), proto.next()) {
            (Some(sip), Some("2.0"), Some(t), None) if sip.eq_ignore_ascii_case("SIP") && !t.is_empty() => t.to_ascii_uppercase(),
            _ => return Err(bad("the protocol is not SIP/2.0/<transport>")),
        };
        let rest = rest.trim();
        let (sent_by, params) = rest.split_once(';').map_or((rest, ""), |(a, b)| (a.trim(), b));
        let (host, port) = split_host_port(sent_by).ok_or_else(|| bad("the sent-by is not host[:port]"))?;
        Ok(Via { transport, host, port, params: Params::parse(params) })
    }

    pub fn branch(&self) -> Option<&str> {
        self.params.value("branch")
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
pub fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((format!("[{host}]"), port));
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !host.contains(':') => Some((host.to_owned(), Some(port.parse().ok()?))),
        Some(_) => None,
        None => Some((s.to_owned(), None)),
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport, self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "{}", self.params)
    }
}

#[cfg(test)]
mod tests {
    use super::Via;

    #[test]
    fn parse_and_print() {
        let v = Via::parse("SIP/2.0/udp 127.0.0.1:5071;branch=z9hG4bK-1;rport").unwrap();
        assert_eq!((v.transport.as_str(), v.host.as_str(), v.port, v.branch()), ("UDP", "127.0.0.1", Some(5071), Some("z9hG4bK-1")));
        assert_eq!(v.params.get("rport"), Some(None));
        assert_eq!(v.to_string(), "SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK-1;rport");
        let v6 = Via::parse("SIP/2.0/TCP [::1]:5060;branch=z9hG4bKx").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("[::1]", Some(5060)));
        assert_eq!(Via::parse("SIP/2.0/UDP host").unwrap().port, None);
    }

    #[test]
    fn malformed() {
        for (value, why) in [
            ("SIP/2.0/UDP", "no sent-by"),
            ("HTTP/1.1/UDP h", "the protocol is not SIP/2.0/<transport>"),
            ("SIP/2.0/UDP h:port", "the sent-by is not host[:port]"),
            ("SIP/2.0/UDP h:99999", "the sent-by is not host[:port]"),
        ] {
            assert_eq!(Via::parse(value).unwrap_err().0, format!("Via '{value}': {why}"));
        }
    }
}
