//! HTTP Digest with MD5 for SIP (RFC 2617, RFC 7616, RFC 3261 §22.4): checking a client's response,
//! and nonces that need no state. A nonce is the time it was made and a keyed hash of that time and
//! of the client's address, so any node with the same secret can check it, a nonce sniffed off the wire
//! is no good from another address, and it goes stale after [`NONCE_LIFETIME_MS`].

use md5::{Digest, Md5};

use crate::header::authorization::Credentials;

/// How long a nonce stays good.
pub const NONCE_LIFETIME_MS: u64 = 5 * 60 * 1000;

pub fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// What a nonce turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Nonce {
    Fresh,
    /// Ours, but too old: the client may retry with a new one without asking its user (`stale=true`).
    Stale,
    /// Not one of ours.
    Forged,
}

pub struct Nonces {
    secret: String,
}

impl Nonces {
    pub fn new(secret: &str) -> Nonces {
        Nonces { secret: secret.to_owned() }
    }

    /// A nonce for a client at `client` (its IP address, as text).
    pub fn mint(&self, now_ms: u64, client: &str) -> String {
        format!("{now_ms:x}.{}", &md5_hex(&format!("{now_ms}:{client}:{}", self.secret))[..20])
    }

    pub fn check(&self, nonce: &str, client: &str, now_ms: u64) -> Nonce {
        let Some((time, _)) = nonce.split_once('.') else { return Nonce::Forged };
        let Ok(made) = u64::from_str_radix(time, 16) else { return Nonce::Forged };
        if !constant_time_eq(self.mint(made, client).as_bytes(), nonce.as_bytes()) {
            return Nonce::Forged;
        }
        if now_ms.saturating_sub(made) > NONCE_LIFETIME_MS { Nonce::Stale } else { Nonce::Fresh }
    }
}

/// The response a client that knows `password` would have sent for `method` (RFC 2617 §3.2.2.1).
pub fn expected_response(c: &Credentials, password: &str, method: &str) -> String {
    let ha1 = md5_hex(&format!("{}:{}:{password}", c.username, c.realm));
    let ha2 = md5_hex(&format!("{method}:{}", c.uri));
    match (c.qop.as_deref(), c.nc.as_deref(), c.cnonce.as_deref()) {
        (Some(qop), Some(nc), Some(cnonce)) => md5_hex(&format!("{ha1}:{}:{nc}:{cnonce}:{qop}:{ha2}", c.nonce)),
        _ => md5_hex(&format!("{ha1}:{}:{ha2}", c.nonce)),
    }
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_2617_example() {
        // RFC 2617 §3.5, with its qop=auth example values.
        let c = Credentials {
            username: "Mufasa".into(),
            realm: "testrealm@host.com".into(),
            nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093".into(),
            uri: "/dir/index.html".into(),
            qop: Some("auth".into()),
            nc: Some("00000001".into()),
            cnonce: Some("0a4f113b".into()),
            ..Credentials::default()
        };
        assert_eq!(expected_response(&c, "Circle Of Life", "GET"), "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn nonces_are_checked_and_age() {
        let n = Nonces::new("secret");
        let nonce = n.mint(1_000, "10.0.0.1");
        assert_eq!(n.check(&nonce, "10.0.0.1", 2_000), Nonce::Fresh);
        assert_eq!(n.check(&nonce, "10.0.0.1", 1_000 + NONCE_LIFETIME_MS + 1), Nonce::Stale);
        assert_eq!(n.check(&nonce, "10.0.0.2", 2_000), Nonce::Forged, "from another address");
        assert_eq!(Nonces::new("other").check(&nonce, "10.0.0.1", 2_000), Nonce::Forged);
        assert_eq!(n.check("3e8.0000", "10.0.0.1", 2_000), Nonce::Forged);
        assert_eq!(n.check("junk", "10.0.0.1", 2_000), Nonce::Forged);
    }
}
