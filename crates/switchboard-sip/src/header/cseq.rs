//! `CSeq` (RFC 3261 §20.16): a sequence number and the method it belongs to.

use std::fmt;

use crate::message::{ParseError, shorten};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: String,
}

impl CSeq {
    pub fn parse(value: &str) -> Result<CSeq, ParseError> {
        let bad = |why: &str| ParseError(format!("CSeq '{}': {why}", shorten(value)));
        let mut parts = value.split_whitespace();
        let (Some(seq), Some(method), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("not '<number> <method>'"));
        };
        // RFC 3261 §8.1.1.5: less than 2^31.
        let seq: u32 = seq.parse().ok().filter(|n| *n < 1 << 31).ok_or_else(|| bad("the number is not below 2^31"))?;
        Ok(CSeq { seq, method: method.to_owned() })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

#[cfg(test)]
mod tests {
    use super::CSeq;

    #[test]
    fn parse_print_and_refuse() {
        assert_eq!(CSeq::parse(" 7  REGISTER ").unwrap().to_string(), "7 REGISTER");
        assert_eq!(CSeq::parse("x REGISTER").unwrap_err().0, "CSeq 'x REGISTER': the number is not below 2^31");
        assert_eq!(CSeq::parse("2147483648 BYE").unwrap_err().0, "CSeq '2147483648 BYE': the number is not below 2^31");
        assert_eq!(CSeq::parse("1").unwrap_err().0, "CSeq '1': not '<number> <method>'");
    }
}
