//! The SDP offer/answer a phone needs (RFC 3264, RFC 4566): one audio stream, PCMU (0) or PCMA (8),
//! and telephone-event (RFC 4733) when offered; the direction mirrored. Anything else in the offer is
//! declined politely (port 0) or, with no audio codec in common, refused (488).

use crate::message::{ParseError, shorten};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The answer's direction for an offer's (RFC 3264 §6.1).
    pub fn mirrored(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }
}

/// One `m=` line of an offer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Media {
    pub kind: String,
    pub port: u16,
    pub protocol: String,
    pub formats: Vec<String>,
    /// Payload type → encoding name (from `a=rtpmap`), lower-cased.
    pub rtpmap: Vec<(String, String)>,
    pub direction: Direction,
    /// The media's own `c=` address, or the session's.
    pub address: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    pub media: Vec<Media>,
}

pub fn parse(body: &[u8]) -> Result<Offer, ParseError> {
    let text = std::str::from_utf8(body).map_err(|_| ParseError("the SDP body is not UTF-8".into()))?;
    let mut media: Vec<Media> = Vec::new();
    let mut session_address = None;
    let mut session_direction = Direction::SendRecv;
    let mut seen_version = false;
    for raw in text.lines() {
        let line = raw.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let Some((kind, value)) = line.split_once('=') else {
            return Err(ParseError(format!("SDP line '{}' is not <type>=<value>", shorten(line))));
        };
        match kind {
            "v" => seen_version = value == "0",
            "c" => {
                let addr = value.split_whitespace().nth(2).map(str::to_owned);
                match media.last_mut() {
                    Some(m) => m.address = addr,
                    None => session_address = addr,
                }
            }
            "m" => {
                let mut parts = value.split_whitespace();
                let (Some(kind), Some(port), Some(protocol)) = (parts.next(), parts.next(), parts.next()) else {
                    return Err(ParseError(format!("SDP m= line '{}' is incomplete", shorten(value))));
                };
                let port: u16 = port
                    .split('/')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| ParseError(format!("SDP m= port '{}' is not a number", shorten(port))))?;
                media.push(Media {
                    kind: kind.to_owned(),
                    port,
                    protocol: protocol.to_owned(),
                    formats: parts.map(str::to_owned).collect(),
                    rtpmap: Vec::new(),
                    direction: session_direction,
                    address: session_address.clone(),
                });
            }
            "a" => {
                let direction = match value {
                    "sendrecv" => Some(Direction::SendRecv),
                    "sendonly" => Some(Direction::SendOnly),
                    "recvonly" => Some(Direction::RecvOnly),
                    "inactive" => Some(Direction::Inactive),
                    _ => None,
                };
                match (media.last_mut(), direction) {
                    (Some(m), Some(d)) => m.direction = d,
                    (None, Some(d)) => session_direction = d,
                    (Some(m), None) => {
                        if let Some(map) = value.strip_prefix("rtpmap:")
                            && let Some((pt, enc)) = map.split_once(' ')
                        {
                            m.rtpmap.push((pt.to_owned(), enc.split('/').next().unwrap_or_default().to_ascii_lowercase()));
                        }
                    }
                    (None, None) => {}
                }
            }
            _ => {}
        }
    }
    if !seen_version {
        return Err(ParseError("the SDP body does not start with v=0".into()));
    }
    Ok(Offer { media })
}

impl Media {
    /// The encoding of payload type `pt`: its rtpmap, or the static assignment (RFC 3551).
    fn encoding(&self, pt: &str) -> Option<String> {
        if let Some((_, e)) = self.rtpmap.iter().find(|(p, _)| p == pt) {
            return Some(e.clone());
        }
        match pt {
            "0" => Some("pcmu".into()),
            "8" => Some("pcma".into()),
            _ => None,
        }
    }
}

/// What was agreed, for the media endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agreed {
    /// The peer's RTP address and port.
    pub remote: Option<(String, u16)>,
    /// The audio payload type (0 PCMU or 8 PCMA).
    pub payload: u8,
    pub telephone_event: Option<String>,
    pub direction: Direction,
}

/// Where the first usable audio stream of an offer or answer is.
pub fn media_address(offer: &Offer) -> Option<std::net::SocketAddr> {
    let m = offer.media.iter().find(|m| m.kind == "audio" && m.port != 0)?;
    let ip: std::net::IpAddr = m.address.as_deref()?.parse().ok()?;
    (!ip.is_unspecified()).then(|| std::net::SocketAddr::new(ip, m.port))
}

/// The audio codec an answer chose: its first PCMU (0) or PCMA (8) format.
pub fn first_payload(answer: &Offer) -> Option<u8> {
    let m = answer.media.iter().find(|m| m.kind == "audio" && m.port != 0)?;
    m.formats.iter().find_map(|pt| match m.encoding(pt).as_deref() {
        Some("pcmu") => Some(0),
        Some("pcma") => Some(8),
        _ => None,
    })
}

/// The payload type of telephone-event (RFC 4733) in an offer or answer's audio stream, if any.
pub fn telephone_event(sdp: &Offer) -> Option<u8> {
    let m = sdp.media.iter().find(|m| m.kind == "audio" && m.port != 0)?;
    m.formats.iter().find(|pt| m.encoding(pt).as_deref() == Some("telephone-event")).and_then(|pt| pt.parse().ok())
}

/// Our offer for a call we place: PCMU, PCMA and telephone-event, with our media at `address:port`.
pub fn offer(address: &str, port: u16, session: (u64, u64), direction: Direction) -> String {
    let ip = if address.contains(':') { "IP6" } else { "IP4" };
    format!(
        "v=0\r\no=switchboard {} {} IN {ip} {address}\r\ns=-\r\nc=IN {ip} {address}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na={}\r\n",
        session.0,
        session.1,
        direction.attribute()
    )
}

/// Our offer again, in a re-INVITE (hold, resume, media moved): the same m-lines as the session so far
/// (RFC 3264 §8: a re-offer may not drop any), so the phone's other streams (video it offered and we
/// declined) stay there, declined with port 0; the first usable audio line carries ours.
pub fn reoffer(original: Option<&Offer>, address: &str, port: u16, session: (u64, u64), direction: Direction) -> String {
    let ours = offer(address, port, session, direction);
    let Some(original) = original.filter(|o| o.media.len() > 1) else { return ours };
    let (head, audio) = ours.split_at(ours.find("m=audio").unwrap_or(ours.len()));
    let mut sdp = head.to_owned();
    let mut placed = false;
    for m in &original.media {
        if !placed && m.kind == "audio" && m.port != 0 {
            sdp.push_str(audio);
            placed = true;
        } else {
            sdp.push_str(&format!("m={} 0 {} {}\r\n", m.kind, m.protocol, m.formats.first().map_or("0", String::as_str)));
        }
    }
    if !placed {
        sdp.push_str(audio);
    }
    sdp
}

/// Our answer to `offer`, with our media at `address:port`. `session` is the `o=` id and version.
pub fn answer(offer: &Offer, address: &str, port: u16, session: (u64, u64)) -> Result<(String, Agreed), ParseError> {
    let ip = if address.contains(':') { "IP6" } else { "IP4" };
    let mut sdp = format!("v=0\r\no=switchboard {} {} IN {ip} {address}\r\ns=-\r\nc=IN {ip} {address}\r\nt=0 0\r\n", session.0, session.1);
    let mut agreed = None;
    for m in &offer.media {
        let usable = m.kind == "audio" && m.port != 0 && m.protocol == "RTP/AVP" && agreed.is_none();
        let codec = usable.then(|| m.formats.iter().find(|pt| matches!(m.encoding(pt).as_deref(), Some("pcmu" | "pcma")))).flatten();
        let Some(codec) = codec else {
            // Declined, in place (RFC 3264 §6).
            sdp.push_str(&format!("m={} 0 {} {}\r\n", m.kind, m.protocol, m.formats.first().map_or("0", String::as_str)));
            continue;
        };
        let event = m.formats.iter().find(|pt| m.encoding(pt).as_deref() == Some("telephone-event")).cloned();
        let payload: u8 = if m.encoding(codec).as_deref() == Some("pcmu") { 0 } else { 8 };
        let mut formats = codec.clone();
        if let Some(e) = &event {
            formats.push(' ');
            formats.push_str(e);
        }
        sdp.push_str(&format!("m=audio {port} RTP/AVP {formats}\r\n"));
        sdp.push_str(&format!("a=rtpmap:{codec} {}/8000\r\n", if payload == 0 { "PCMU" } else { "PCMA" }));
        if let Some(e) = &event {
            sdp.push_str(&format!("a=rtpmap:{e} telephone-event/8000\r\na=fmtp:{e} 0-16\r\n"));
        }
        sdp.push_str(&format!("a=ptime:20\r\na={}\r\n", m.direction.mirrored().attribute()));
        let remote = m.address.clone().filter(|a| a != "0.0.0.0").map(|a| (a, m.port));
        agreed = Some(Agreed { remote, payload, telephone_event: event, direction: m.direction.mirrored() });
    }
    let agreed = agreed.ok_or_else(|| ParseError("no audio stream with PCMU or PCMA in the offer".into()))?;
    Ok((sdp, agreed))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What baresip 1.0 offers (research/sip.md §1.9).
    const BARESIP: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\na=rtcp-rsize\r\na=ptime:20\r\n";

    #[test]
    fn answers_pcmu_and_telephone_events() {
        let offer = parse(BARESIP.as_bytes()).unwrap();
        let (sdp, agreed) = answer(&offer, "127.0.0.1", 20000, (7, 1)).unwrap();
        assert_eq!(
            sdp,
            "v=0\r\no=switchboard 7 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
        );
        assert_eq!(
            agreed,
            Agreed {
                remote: Some(("127.0.0.1".into(), 4000)),
                payload: 0,
                telephone_event: Some("101".into()),
                direction: Direction::SendRecv
            }
        );
    }

    #[test]
    fn our_offer_is_one_we_would_answer() {
        let ours = offer("127.0.0.1", 30000, (9, 1), Direction::SendRecv);
        let (_, agreed) = answer(&parse(ours.as_bytes()).unwrap(), "127.0.0.1", 1, (1, 1)).unwrap();
        assert_eq!(agreed.remote, Some(("127.0.0.1".into(), 30000)));
        assert_eq!((agreed.payload, agreed.telephone_event.as_deref()), (0, Some("101")));
        assert!(offer("::1", 1, (1, 2), Direction::SendOnly).contains("c=IN IP6 ::1\r\n"));
    }

    #[test]
    fn a_reoffer_keeps_every_m_line() {
        let video = format!("{BARESIP}m=video 5000 RTP/AVP 96\r\n");
        let original = parse(video.as_bytes()).unwrap();
        let again = reoffer(Some(&original), "127.0.0.1", 20000, (1, 3), Direction::SendOnly);
        let lines: Vec<&str> = again.lines().filter(|l| l.starts_with("m=")).collect();
        assert_eq!(lines, ["m=audio 20000 RTP/AVP 0 8 101", "m=video 0 RTP/AVP 96"]);
        assert!(again.contains("a=sendonly"));
        assert_eq!(reoffer(None, "127.0.0.1", 1, (1, 2), Direction::SendRecv), offer("127.0.0.1", 1, (1, 2), Direction::SendRecv));
    }

    #[test]
    fn hold_video_and_refusals() {
        let hold = BARESIP.replace("a=sendrecv", "a=sendonly").replace("RTP/AVP 0 8 101", "RTP/AVP 8");
        let (sdp, agreed) = answer(&parse(hold.as_bytes()).unwrap(), "127.0.0.1", 1, (1, 1)).unwrap();
        assert!(sdp.contains("a=recvonly") && sdp.contains("a=rtpmap:8 PCMA/8000"), "{sdp}");
        assert_eq!(agreed.payload, 8);
        let video = format!("{BARESIP}m=video 5000 RTP/AVP 96\r\n");
        assert!(answer(&parse(video.as_bytes()).unwrap(), "127.0.0.1", 1, (1, 1)).unwrap().0.ends_with("m=video 0 RTP/AVP 96\r\n"));
        let g729 = BARESIP.replace("RTP/AVP 0 8 101", "RTP/AVP 18");
        assert_eq!(
            answer(&parse(g729.as_bytes()).unwrap(), "h", 1, (1, 1)).unwrap_err().0,
            "no audio stream with PCMU or PCMA in the offer"
        );
        assert_eq!(parse(b"o=x\r\n").unwrap_err().0, "the SDP body does not start with v=0");
        assert_eq!(parse(b"v=0\r\nm=audio x RTP/AVP 0\r\n").unwrap_err().0, "SDP m= port 'x' is not a number");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            if let Ok(offer) = parse(&bytes) {
                let _ = answer(&offer, "127.0.0.1", 1, (1, 1));
            }
        }
    }
}
