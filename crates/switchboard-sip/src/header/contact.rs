//! `Contact` (RFC 3261 §20.10): where a registered user is reached, or `*` (every binding, to remove).

use super::name_addr::NameAddr;
use crate::message::ParseError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Contact {
    /// `Contact: *`, only with `Expires: 0` in a REGISTER.
    All,
    Addr(NameAddr),
}

impl Contact {
    pub fn parse(value: &str) -> Result<Contact, ParseError> {
        if value.trim() == "*" {
            return Ok(Contact::All);
        }
        NameAddr::parse(value).map(Contact::Addr).map_err(|e| ParseError(format!("Contact {}", e.0)))
    }

    /// The `expires` parameter, if given and a number.
    pub fn expires(&self) -> Option<u32> {
        match self {
            Contact::All => None,
            Contact::Addr(a) => a.params.value("expires").and_then(|e| e.parse().ok()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Contact;

    #[test]
    fn star_addresses_and_expiry() {
        assert_eq!(Contact::parse(" * ").unwrap(), Contact::All);
        let c = Contact::parse("<sip:heidi@127.0.0.1:5071>;expires=60").unwrap();
        assert_eq!(c.expires(), Some(60));
        assert_eq!(Contact::parse("<sip:h@x>").unwrap().expires(), None);
        assert_eq!(Contact::parse("nonsense").unwrap_err().0, "Contact 'nonsense': the URI has no scheme");
    }
}
