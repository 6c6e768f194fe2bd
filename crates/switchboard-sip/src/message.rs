//! A SIP message (RFC 3261 §7): start line, headers, body. Parsing takes untrusted bytes and either
//! gives a message or a [`ParseError`] that names the problem; it never panics. Printing gives the
//! canonical form (long header names, CRLF, a correct `Content-Length`).

use std::fmt::{self, Write};

/// A request's method, as written (methods are case-sensitive, §7.1).
pub type Method = String;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartLine {
    Request { method: Method, uri: String },
    Response { code: u16, reason: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub start: StartLine,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// What is wrong with a message, named for the sender (it goes into a 400's reason phrase).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

fn fail<T>(problem: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(problem.into()))
}

/// Headers in the order received, under their long names. A header that was sent several times, or
/// as a comma-separated list, keeps each line as it was.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

/// The compact forms (RFC 3261 §7.3.3, and the extensions' own).
const COMPACT: [(&str, &str); 16] = [
    ("v", "Via"),
    ("f", "From"),
    ("t", "To"),
    ("i", "Call-ID"),
    ("m", "Contact"),
    ("l", "Content-Length"),
    ("c", "Content-Type"),
    ("e", "Content-Encoding"),
    ("k", "Supported"),
    ("s", "Subject"),
    ("o", "Event"),
    ("r", "Refer-To"),
    ("b", "Referred-By"),
    ("x", "Session-Expires"),
    ("u", "Allow-Events"),
    ("a", "Accept-Contact"),
];

/// Long names spelled as RFC 3261 does, so that printed messages look as peers expect.
const CANONICAL: [&str; 24] = [
    "Via",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Contact",
    "Content-Length",
    "Content-Type",
    "Max-Forwards",
    "Expires",
    "Min-Expires",
    "Authorization",
    "WWW-Authenticate",
    "Proxy-Authorization",
    "Proxy-Authenticate",
    "Allow",
    "Accept",
    "Supported",
    "User-Agent",
    "Server",
    "Record-Route",
    "Route",
    "Event",
    "Refer-To",
];

/// The name a header is stored under: its long form, canonically spelled when known.
pub fn canonical(name: &str) -> String {
    if let Some((_, long)) = COMPACT.iter().find(|(c, _)| c.eq_ignore_ascii_case(name)) {
        return (*long).to_owned();
    }
    CANONICAL.iter().find(|c| c.eq_ignore_ascii_case(name)).map_or_else(|| name.to_owned(), |c| (*c).to_owned())
}

impl Headers {
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.0.push((canonical(name), value.into()));
    }

    /// The first value of `name` (any spelling), trimmed.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, each comma-separated list split into its elements (commas inside quotes
    /// or angle brackets do not split).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).flat_map(|(_, v)| split_list(v)).collect()
    }

    /// The header lines as stored (name, value).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }
}

/// Splits a header value at the commas between list elements.
pub fn split_list(value: &str) -> Vec<&str> {
    let (mut out, mut start, mut quoted, mut angle, mut escaped) = (Vec::new(), 0, false, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                out.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value[start..].trim());
    out.retain(|s| !s.is_empty());
    out
}

/// The longest message we take (a UDP datagram cannot be longer; over TCP it bounds a peer's claim).
pub const MAX_MESSAGE: usize = 65_535;

impl Message {
    /// Parses one whole message. `framed` says whether the transport delimited it (UDP: the body is the
    /// rest of the datagram when `Content-Length` is absent; TCP needs `Content-Length`).
    pub fn parse(bytes: &[u8], framed: bool) -> Result<Message, ParseError> {
        if bytes.len() > MAX_MESSAGE {
            return fail(format!("message of {} bytes; the limit is {MAX_MESSAGE}", bytes.len()));
        }
        let Some(head_end) = find_head_end(bytes) else {
            return fail("no empty line after the headers");
        };
        let head = std::str::from_utf8(&bytes[..head_end.0]).or_else(|_| fail("the start line and headers are not UTF-8"))?;
        let mut lines = unfold(head).into_iter();
        let first = lines.next().unwrap_or_default();
        let start = start_line(&first)?;
        let mut headers = Headers::default();
        for (n, line) in lines.enumerate() {
            let Some((name, value)) = line.split_once(':') else {
                return fail(format!("header line {} has no colon: '{}'", n + 1, shorten(&line)));
            };
            let name = name.trim_end();
            if name.is_empty() || !name.bytes().all(is_token) {
                return fail(format!("header line {} has a malformed name: '{}'", n + 1, shorten(name)));
            }
            headers.push(name, value.trim());
        }
        let rest = &bytes[head_end.1..];
        let body = match headers.get("Content-Length") {
            Some(l) => {
                let len: usize = l.parse().or_else(|_| fail(format!("Content-Length: '{}' is not a number", shorten(l))))?;
                if len > rest.len() {
                    return fail(format!("Content-Length says {len} bytes, but the body has {}", rest.len()));
                }
                rest[..len].to_vec()
            }
            None if framed => rest.to_vec(),
            None => return fail("Content-Length is required over a stream transport"),
        };
        for required in ["Via", "From", "To", "Call-ID", "CSeq"] {
            if headers.get(required).is_none() {
                return fail(format!("the {required} header is missing"));
            }
        }
        Ok(Message { start, headers, body })
    }

    /// The message as sent: CRLF line ends, `Content-Length` always present and right.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = String::with_capacity(256 + self.body.len());
        let _ = match &self.start {
            StartLine::Request { method, uri } => write!(s, "{method} {uri} SIP/2.0\r\n"),
            StartLine::Response { code, reason } => write!(s, "SIP/2.0 {code} {reason}\r\n"),
        };
        for (name, value) in self.headers.iter().filter(|(n, _)| !n.eq_ignore_ascii_case("Content-Length")) {
            let _ = write!(s, "{name}: {value}\r\n");
        }
        let _ = write!(s, "Content-Length: {}\r\n\r\n", self.body.len());
        let mut out = s.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }

    pub fn method(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

/// Where the headers end: (end of the last header line, start of the body). CRLF or bare LF.
fn find_head_end(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    // Leading empty lines are keep-alives (RFC 5626) or noise before a message (§7.5).
    while bytes.get(i..i + 2) == Some(b"\r\n") {
        i += 2;
    }
    while i < bytes.len() {
        if bytes[i..].starts_with(b"\r\n\r\n") {
            return Some((i, i + 4));
        }
        if bytes[i..].starts_with(b"\n\n") {
            return Some((i, i + 2));
        }
        i += 1;
    }
    None
}

/// Header lines with continuation lines (leading space or tab) joined to the line before (§7.3.1).
fn unfold(head: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for raw in head.trim_start_matches(['\r', '\n']).split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if (line.starts_with(' ') || line.starts_with('\t')) && !lines.is_empty() {
            if let Some(last) = lines.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
            }
        } else {
            lines.push(line.to_owned());
        }
    }
    lines
}

fn start_line(line: &str) -> Result<StartLine, ParseError> {
    if let Some(rest) = line.strip_prefix("SIP/2.0 ") {
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let code: u16 = code.parse().or_else(|_| fail(format!("status code '{}' is not a number", shorten(code))))?;
        if !(100..=699).contains(&code) {
            return fail(format!("status code {code} is outside 100-699"));
        }
        return Ok(StartLine::Response { code, reason: reason.to_owned() });
    }
    let mut parts = line.split(' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(method), Some(uri), Some("SIP/2.0"), None) if !method.is_empty() && method.bytes().all(is_token) && !uri.is_empty() => {
            if !uri.contains(':') {
                return fail(format!("Request-URI '{}' has no scheme", shorten(uri)));
            }
            Ok(StartLine::Request { method: method.to_owned(), uri: uri.to_owned() })
        }
        (_, _, Some(v), None) if v != "SIP/2.0" => fail(format!("version '{}' is not SIP/2.0", shorten(v))),
        _ => fail(format!("start line '{}' is neither a request nor a response", shorten(line))),
    }
}

/// RFC 3261's `token` characters.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// A piece of hostile input, short enough for a reason phrase or a log line.
pub fn shorten(s: &str) -> String {
    let clean: String = s.chars().filter(|c| !c.is_control()).take(60).collect();
    if s.chars().count() > 60 { format!("{clean}…") } else { clean }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTER: &str = "REGISTER sip:127.0.0.1 SIP/2.0\r\n\
        v: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK-1\r\n\
        Max-Forwards: 70\r\n\
        f: <sip:heidi@127.0.0.1>;tag=1\r\n\
        t: <sip:heidi@127.0.0.1>\r\n\
        i: abc\r\n\
        CSeq: 1 REGISTER\r\n\
        m: <sip:heidi@127.0.0.1:5071>,\r\n <sip:heidi@10.0.0.1:5071>;expires=60\r\n\
        l: 0\r\n\r\n";

    /// One check per boundary: the input, and what the parser makes of it.
    fn check(input: &str, want: Result<&str, &str>) {
        match (Message::parse(input.as_bytes(), true), want) {
            (Ok(m), Ok(first_header)) => {
                assert_eq!(m.headers.iter().next().map(|(n, v)| format!("{n}: {v}")).as_deref(), Some(first_header))
            }
            (Err(e), Err(problem)) => assert_eq!(e.0, problem),
            (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn compact_forms_folding_and_lists() {
        let m = Message::parse(REGISTER.as_bytes(), true).unwrap();
        assert_eq!(m.start, StartLine::Request { method: "REGISTER".into(), uri: "sip:127.0.0.1".into() });
        assert_eq!(m.headers.get("via"), Some("SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK-1"));
        assert_eq!(m.headers.all("Contact"), ["<sip:heidi@127.0.0.1:5071>", "<sip:heidi@10.0.0.1:5071>;expires=60"]);
        let printed = String::from_utf8(m.to_bytes()).unwrap();
        assert!(printed.starts_with("REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP"), "{printed}");
        assert_eq!(Message::parse(printed.as_bytes(), false).unwrap(), m, "printing then parsing gives the same message");
    }

    #[test]
    fn malformed_messages_are_named() {
        let ok = "Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n";
        check(&format!("OPTIONS sip:h SIP/2.0\r\n{ok}\r\n"), Ok("Via: SIP/2.0/UDP h;branch=z9hG4bK1"));
        check(&format!("OPTIONS sip:h SIP/2.0\n{}\n", ok.replace("\r\n", "\n")), Ok("Via: SIP/2.0/UDP h;branch=z9hG4bK1"));
        check("", Err("no empty line after the headers"));
        check(&format!("OPTIONS sip:h SIP/3.0\r\n{ok}\r\n"), Err("version 'SIP/3.0' is not SIP/2.0"));
        check(&format!("OPTIONS h SIP/2.0\r\n{ok}\r\n"), Err("Request-URI 'h' has no scheme"));
        check(&format!("HELLO\r\n{ok}\r\n"), Err("start line 'HELLO' is neither a request nor a response"));
        check(&format!("SIP/2.0 99 Odd\r\n{ok}\r\n"), Err("status code 99 is outside 100-699"));
        check(&format!("OPTIONS sip:h SIP/2.0\r\n{ok}Bogus\r\n\r\n"), Err("header line 6 has no colon: 'Bogus'"));
        check(&format!("OPTIONS sip:h SIP/2.0\r\n{ok}Content-Length: x\r\n\r\n"), Err("Content-Length: 'x' is not a number"));
        check(
            &format!("OPTIONS sip:h SIP/2.0\r\n{ok}Content-Length: 10\r\n\r\nabc"),
            Err("Content-Length says 10 bytes, but the body has 3"),
        );
        check(&format!("OPTIONS sip:h SIP/2.0\r\n{}\r\n", ok.replace("CSeq: 1 OPTIONS\r\n", "")), Err("the CSeq header is missing"));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = Message::parse(&bytes, true);
            let _ = Message::parse(&bytes, false);
        }

        #[test]
        fn mangled_registers_never_panic(cut in 0usize..400, flip in 0usize..400, byte in proptest::num::u8::ANY) {
            let mut bytes = REGISTER.as_bytes().to_vec();
            if flip < bytes.len() { bytes[flip] = byte; }
            bytes.truncate(cut.max(1));
            let _ = Message::parse(&bytes, true);
        }
    }
}

/// How much of a stream buffer is one message (RFC 3261 §18.3: over a stream, `Content-Length` says
/// where a message ends). Checked before parsing, so that a partial message is never parsed.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// Not all of it is here yet.
    Incomplete,
    /// The first `n` bytes are one message (leading keep-alive CRLFs included).
    Complete(usize),
    /// It can never become a message: the connection should be closed.
    Invalid(ParseError),
}

pub fn frame(buf: &[u8]) -> Frame {
    let Some((head_end, body_start)) = find_head_end(buf) else {
        if buf.len() > MAX_MESSAGE {
            return Frame::Invalid(ParseError(format!("no end of headers within {MAX_MESSAGE} bytes")));
        }
        // Keep-alives alone (RFC 5626 §3.5.1: CRLFCRLF is a ping) are a message of their own.
        if buf.len() >= 4 && buf.iter().all(|b| *b == b'\r' || *b == b'\n') {
            return Frame::Complete(buf.len());
        }
        return Frame::Incomplete;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let length = unfold(&head).into_iter().skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (canonical(name.trim()) == "Content-Length").then(|| value.trim().to_owned())
    });
    let Some(length) = length else {
        return Frame::Invalid(ParseError("Content-Length is required over a stream transport".into()));
    };
    let Ok(length) = length.parse::<usize>() else {
        return Frame::Invalid(ParseError(format!("Content-Length: '{}' is not a number", shorten(&length))));
    };
    // Checked: a hostile Content-Length must not wrap around to a small message.
    let total = match body_start.checked_add(length) {
        Some(t) if t <= MAX_MESSAGE => t,
        _ => return Frame::Invalid(ParseError(format!("Content-Length {length} makes a message over the limit of {MAX_MESSAGE} bytes"))),
    };
    if buf.len() < total { Frame::Incomplete } else { Frame::Complete(total) }
}

#[cfg(test)]
mod frame_tests {
    use super::{Frame, frame};

    #[test]
    fn stream_framing() {
        let msg = b"OPTIONS sip:h SIP/2.0\r\nContent-Length: 3\r\n\r\nabcNEXT";
        assert_eq!(frame(&msg[..20]), Frame::Incomplete);
        assert_eq!(frame(&msg[..44]), Frame::Incomplete);
        assert_eq!(frame(msg), Frame::Complete(47));
        assert_eq!(frame(b"\r\n\r\n"), Frame::Complete(4));
        assert!(matches!(frame(b"OPTIONS sip:h SIP/2.0\r\nl: x\r\n\r\n"), Frame::Invalid(_)));
        assert!(matches!(frame(b"OPTIONS sip:h SIP/2.0\r\nVia: x\r\n\r\n"), Frame::Invalid(_)));
        assert!(matches!(frame(&vec![b'a'; 70_000]), Frame::Invalid(_)));
        // A length that would wrap around past usize::MAX is refused, not read as a tiny message.
        let huge = format!("OPTIONS sip:x SIP/2.0\r\nContent-Length: {}\r\n\r\n", usize::MAX - 10);
        assert!(matches!(frame(huge.as_bytes()), Frame::Invalid(_)));
    }
}
