//! `Authorization` with Digest credentials, and the `WWW-Authenticate` challenge (RFC 3261 §22.4,
//! RFC 2617 / RFC 7616 with MD5).

use std::fmt;

use crate::message::{ParseError, shorten, split_list};

/// What a client sent in `Authorization: Digest …`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Option<String>,
    pub cnonce: Option<String>,
    pub qop: Option<String>,
    pub nc: Option<String>,
    pub opaque: Option<String>,
}

impl Credentials {
    pub fn parse(value: &str) -> Result<Credentials, ParseError> {
        let bad = |why: String| ParseError(format!("Authorization '{}': {why}", shorten(value)));
        let v = value.trim();
        let rest = match v.split_once(char::is_whitespace) {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("Digest") => rest,
            _ => return Err(bad("not Digest credentials".into())),
        };
        let mut c = Credentials::default();
        for param in split_list(rest) {
            let Some((name, value)) = param.split_once('=') else {
                return Err(bad(format!("'{}' is not name=value", shorten(param))));
            };
            let value = value.trim().trim_matches('"').to_owned();
            match name.trim().to_ascii_lowercase().as_str() {
                "username" => c.username = value,
                "realm" => c.realm = value,
                "nonce" => c.nonce = value,
                "uri" => c.uri = value,
                "response" => c.response = value,
                "algorithm" => c.algorithm = Some(value),
                "cnonce" => c.cnonce = Some(value),
                "qop" => c.qop = Some(value),
                "nc" => c.nc = Some(value),
                "opaque" => c.opaque = Some(value),
                _ => {} // extensions are ignored (RFC 7616 §3.4)
            }
        }
        for (name, v) in [("username", &c.username), ("realm", &c.realm), ("nonce", &c.nonce), ("uri", &c.uri), ("response", &c.response)] {
            if v.is_empty() {
                return Err(bad(format!("{name} is missing")));
            }
        }
        Ok(c)
    }
}

/// `WWW-Authenticate: Digest realm="…", nonce="…", algorithm=MD5, qop="auth"[, stale=true]`.
pub struct Challenge<'a> {
    pub realm: &'a str,
    pub nonce: &'a str,
    pub stale: bool,
}

impl fmt::Display for Challenge<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest realm=\"{}\", nonce=\"{}\", algorithm=MD5, qop=\"auth\"", self.realm, self.nonce)?;
        if self.stale {
            f.write_str(", stale=true")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{Challenge, Credentials};

    #[test]
    fn credentials_and_challenge() {
        let c = Credentials::parse(
            "Digest username=\"heidi\",realm=\"sb\", nonce=\"n, with comma\", uri=\"sip:sb\", response=\"abc\", algorithm=MD5, cnonce=\"x\", qop=auth, nc=00000001",
        )
        .unwrap();
        assert_eq!(
            (c.username.as_str(), c.nonce.as_str(), c.qop.as_deref(), c.nc.as_deref()),
            ("heidi", "n, with comma", Some("auth"), Some("00000001"))
        );
        assert_eq!(Credentials::parse("Basic aGk6aGk=").unwrap_err().0, "Authorization 'Basic aGk6aGk=': not Digest credentials");
        assert_eq!(
            Credentials::parse("Digest username=\"h\", realm=\"r\", nonce=\"n\", uri=\"u\"").unwrap_err().0,
            "Authorization 'Digest username=\"h\", realm=\"r\", nonce=\"n\", uri=\"u\"': response is missing"
        );
        let ch = Challenge { realm: "sb", nonce: "n1", stale: true }.to_string();
        assert_eq!(ch, "Digest realm=\"sb\", nonce=\"n1\", algorithm=MD5, qop=\"auth\", stale=true");
    }
}
