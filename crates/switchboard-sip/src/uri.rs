//! SIP URIs (RFC 3261 §19.1), as much as routing and registration need: scheme, user, host, port.

use std::fmt;

use crate::header::via::split_host_port;
use crate::message::{ParseError, shorten};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipUri {
    /// `sip` or `sips`.
    pub scheme: String,
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    /// `;params?headers` as written.
    pub rest: String,
}

impl SipUri {
    pub fn parse(s: &str) -> Result<SipUri, ParseError> {
        let bad = |why: &str| ParseError(format!("URI '{}': {why}", shorten(s)));
        let (scheme, rest) = s.trim().split_once(':').ok_or_else(|| bad("no scheme"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "sip" && scheme != "sips" {
            return Err(bad("not a sip: or sips: URI"));
        }
        let end = rest.find([';', '?']).unwrap_or(rest.len());
        let (userhost, tail) = rest.split_at(end);
        let (user, hostport) = match userhost.rsplit_once('@') {
            Some((u, h)) if !u.is_empty() => (Some(u.split(':').next().unwrap_or(u).to_owned()), h),
            Some(_) => return Err(bad("an empty user part")),
            None => (None, userhost),
        };
        let (host, port) = split_host_port(hostport).ok_or_else(|| bad("the host is not host[:port]"))?;
        Ok(SipUri { scheme, user, host: host.to_ascii_lowercase(), port, rest: tail.to_owned() })
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.scheme)?;
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "{}", self.rest)
    }
}

#[cfg(test)]
mod tests {
    use super::SipUri;

    #[test]
    fn parts() {
        let u = SipUri::parse("sip:heidi@Example.COM:5070;transport=tcp").unwrap();
        assert_eq!(
            (u.user.as_deref(), u.host.as_str(), u.port, u.rest.as_str()),
            (Some("heidi"), "example.com", Some(5070), ";transport=tcp")
        );
        assert_eq!(u.to_string(), "sip:heidi@example.com:5070;transport=tcp");
        assert_eq!(SipUri::parse("sip:127.0.0.1").unwrap().user, None);
        assert_eq!(SipUri::parse("tel:+1234").unwrap_err().0, "URI 'tel:+1234': not a sip: or sips: URI");
        assert_eq!(SipUri::parse("sip:@h").unwrap_err().0, "URI 'sip:@h': an empty user part");
    }
}
