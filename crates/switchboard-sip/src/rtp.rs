//! Comfort audio: what a phone hears from the bot, as RTP (RFC 3550) packets of G.711 (RFC 3551):
//! 20 ms of silence, or of a quiet 440 Hz tone, every 20 ms. Sans-IO: the transport paces and sends.

use std::net::SocketAddr;

/// One packet carries this much audio.
pub const PTIME_MS: u64 = 20;
/// 8 kHz × 20 ms.
pub const SAMPLES: usize = 160;

/// What the bot plays to a phone while nothing else does (`[sip] comfort_audio`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComfortAudio {
    Silence,
    Tone,
    Off,
}

/// Our RTP stream to one phone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stream {
    /// Where the phone wants its audio (its SDP `c=` and `m=` port).
    pub remote: SocketAddr,
    /// 0 PCMU or 8 PCMA, as agreed.
    pub payload: u8,
    ssrc: u32,
    seq: u16,
    timestamp: u32,
}

impl Stream {
    pub fn new(remote: SocketAddr, payload: u8, ssrc: u32) -> Stream {
        // Random-looking starting points, as RFC 3550 §5.1 asks, from the SSRC (no RNG needed).
        Stream { remote, payload, ssrc, seq: (ssrc >> 16) as u16, timestamp: ssrc.rotate_left(7) }
    }

    /// The next packet of a prompt: up to 160 of its samples (the rest silence), encoded as agreed.
    pub fn packet_of(&mut self, samples: &[i16]) -> Vec<u8> {
        let mut p = self.header();
        let encode = if self.payload == 8 { alaw } else { ulaw };
        p.extend((0..SAMPLES).map(|i| encode(samples.get(i).copied().unwrap_or(0))));
        self.advance();
        p
    }

    /// An RFC 4733 telephone-event packet: `event` (0–15) begun at `start` (an RTP timestamp), lasting
    /// `duration` samples so far; `end` on its last packets, the marker on its first.
    pub fn event_packet(&mut self, payload_type: u8, event: u8, start: u32, duration: u16, end: bool, first: bool) -> Vec<u8> {
        let mut p = Vec::with_capacity(16);
        p.push(0x80);
        p.push((payload_type & 0x7f) | if first { 0x80 } else { 0 });
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.extend_from_slice(&start.to_be_bytes());
        p.extend_from_slice(&self.ssrc.to_be_bytes());
        p.extend_from_slice(&[event, if end { 0x80 } else { 0 } | 10, (duration >> 8) as u8, duration as u8]);
        self.seq = self.seq.wrapping_add(1);
        p
    }

    /// The RTP timestamp the next packet carries.
    pub fn timestamp(&self) -> u32 {
        self.timestamp
    }

    /// Moves the timestamp on by one packet's worth, as if audio had gone (during an event).
    pub fn skip(&mut self) {
        self.timestamp = self.timestamp.wrapping_add(SAMPLES as u32);
    }

    fn header(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(12 + SAMPLES);
        p.push(0x80);
        p.push(self.payload & 0x7f);
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.extend_from_slice(&self.timestamp.to_be_bytes());
        p.extend_from_slice(&self.ssrc.to_be_bytes());
        p
    }

    fn advance(&mut self) {
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(SAMPLES as u32);
    }

    /// The next packet: the 12-byte header, then 160 samples.
    pub fn packet(&mut self, audio: ComfortAudio) -> Vec<u8> {
        let mut p = Vec::with_capacity(12 + SAMPLES);
        p.push(0x80); // version 2, no padding, no extension, no CSRC
        p.push(self.payload & 0x7f);
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.extend_from_slice(&self.timestamp.to_be_bytes());
        p.extend_from_slice(&self.ssrc.to_be_bytes());
        match audio {
            ComfortAudio::Tone => {
                // The tone's cycle, encoded once: 440 Hz repeats every 200 samples at 8 kHz.
                let cycle = if self.payload == 8 { &tone().1 } else { &tone().0 };
                let start = (self.timestamp % TONE_CYCLE as u32) as usize;
                p.extend((0..SAMPLES).map(|i| cycle[(start + i) % TONE_CYCLE]));
            }
            _ => p.resize(12 + SAMPLES, if self.payload == 8 { alaw(0) } else { ulaw(0) }),
        }
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(SAMPLES as u32);
        p
    }
}

/// 8000 / gcd(8000, 440) samples: the 440 Hz tone's period in whole samples.
const TONE_CYCLE: usize = 200;

/// The tone's cycle in μ-law and A-law, computed once.
fn tone() -> &'static ([u8; TONE_CYCLE], [u8; TONE_CYCLE]) {
    static TONE: std::sync::OnceLock<([u8; TONE_CYCLE], [u8; TONE_CYCLE])> = std::sync::OnceLock::new();
    TONE.get_or_init(|| {
        let (mut u, mut a) = ([0u8; TONE_CYCLE], [0u8; TONE_CYCLE]);
        for i in 0..TONE_CYCLE {
            // A quiet 440 Hz (about -16 dBFS).
            let sample = (f64::sin(2.0 * std::f64::consts::PI * 440.0 * i as f64 / 8000.0) * 5000.0) as i16;
            (u[i], a[i]) = (ulaw(sample), alaw(sample));
        }
        (u, a)
    })
}

/// An RTP header's payload type, sequence number, timestamp and SSRC, if `bytes` is RTP version 2.
pub fn header(bytes: &[u8]) -> Option<(u8, u16, u32, u32)> {
    if bytes.len() < 12 || bytes[0] >> 6 != 2 {
        return None;
    }
    let word = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    Some((bytes[1] & 0x7f, u16::from_be_bytes([bytes[2], bytes[3]]), word(4), word(8)))
}

/// Where an RTP packet's payload starts and ends: after the CSRCs and any header extension, before
/// any padding.
pub fn payload(bytes: &[u8]) -> Option<&[u8]> {
    header(bytes)?;
    let mut at = 12 + usize::from(bytes[0] & 0x0f) * 4;
    if bytes[0] & 0x10 != 0 {
        let words = u16::from_be_bytes([*bytes.get(at + 2)?, *bytes.get(at + 3)?]);
        at += 4 + usize::from(words) * 4;
    }
    let mut end = bytes.len();
    if bytes[0] & 0x20 != 0 {
        end = end.checked_sub(usize::from(*bytes.last()?))?;
    }
    bytes.get(at..end)
}

/// An RFC 4733 telephone-event packet's key (events 0–15: `0`–`9`, `*`, `#`, `A`–`D`) and the
/// timestamp that names the key press (every packet of one press carries the same).
pub fn telephone_event(bytes: &[u8], payload_type: u8) -> Option<(char, u32)> {
    let (pt, _, timestamp, _) = header(bytes)?;
    let body = payload(bytes)?;
    let event = *body.get(..4)?.first()?;
    if pt != payload_type {
        return None;
    }
    let key = match event {
        0..=9 => char::from(b'0' + event),
        10 => '*',
        11 => '#',
        12..=15 => char::from(b'A' + event - 12),
        _ => return None,
    };
    Some((key, timestamp))
}

/// The samples of a G.711 packet (PCMU or PCMA), decoded; `None` for anything else.
pub fn g711_samples(bytes: &[u8]) -> Option<impl Iterator<Item = i16> + '_> {
    let (pt, ..) = header(bytes)?;
    let decode: fn(u8) -> i16 = match pt {
        0 => ulaw_decode,
        8 => alaw_decode,
        _ => return None,
    };
    Some(payload(bytes)?.iter().map(move |&b| decode(b)))
}

/// G.711 μ-law decoded to a 16-bit sample.
pub fn ulaw_decode(byte: u8) -> i16 {
    let b = !byte;
    let exponent = i32::from((b >> 4) & 0x07);
    let mantissa = i32::from(b & 0x0f);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    (if b & 0x80 != 0 { -magnitude } else { magnitude }) as i16
}

/// G.711 A-law decoded to a 16-bit sample.
pub fn alaw_decode(byte: u8) -> i16 {
    let b = byte ^ 0x55;
    let exponent = i32::from((b >> 4) & 0x07);
    let mantissa = i32::from(b & 0x0f);
    let magnitude = if exponent == 0 { (mantissa << 4) + 8 } else { ((mantissa << 4) + 0x108) << (exponent - 1) };
    (if b & 0x80 != 0 { magnitude } else { -magnitude }) as i16
}

/// G.711 μ-law (ITU-T G.711, the classic segment encoder).
pub fn ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let mut s = i32::from(sample);
    let sign = if s < 0 { 0x80 } else { 0 };
    if s < 0 {
        s = -s;
    }
    s = s.min(CLIP) + BIAS;
    let exponent = (7 - (s.leading_zeros() as i32 - 17)).clamp(0, 7);
    let mantissa = (s >> (exponent + 3)) & 0x0f;
    !((sign | (exponent << 4) | mantissa) as u8)
}

/// G.711 A-law.
pub fn alaw(sample: i16) -> u8 {
    let mut s = i32::from(sample) >> 3; // 13-bit
    let sign = if s >= 0 { 0x80 } else { 0 };
    if s < 0 {
        s = -s - 1;
    }
    let s = s.min(0x0fff);
    let code = if s < 32 {
        s >> 1
    } else {
        let exponent = 31 - (s as u32).leading_zeros() as i32 - 4; // 1..=7
        (exponent << 4) | ((s >> exponent) & 0x0f)
    };
    ((sign | code) ^ 0x55) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g711_decodes_what_it_encodes_within_its_step() {
        for s in [-32_000i16, -5_000, -100, -1, 0, 1, 100, 5_000, 32_000] {
            for (enc, dec) in [(ulaw as fn(i16) -> u8, ulaw_decode as fn(u8) -> i16), (alaw, alaw_decode)] {
                let back = dec(enc(s));
                // G.711's step grows with the level: within 1/16 of it (and 16 near zero).
                assert!((i32::from(back) - i32::from(s)).abs() <= (i32::from(s).abs() / 16).max(16), "{s} came back as {back}");
            }
        }
    }

    #[test]
    fn g711_silence_and_extremes() {
        // The values every G.711 table agrees on.
        assert_eq!(ulaw(0), 0xff);
        assert_eq!(ulaw(-1), 0x7f);
        assert_eq!(ulaw(32767), 0x80);
        assert_eq!(ulaw(-32768), 0x00);
        assert_eq!(alaw(0), 0xd5);
        assert_eq!(alaw(-1), 0x55);
        assert_eq!(alaw(32767), 0xaa);
        assert_eq!(alaw(-32768), 0x2a);
    }

    #[test]
    fn telephone_events_name_their_key_and_press() {
        let event = |pt: u8, ts: u32, ev: u8| {
            let mut p = vec![0x80, pt, 0, 1];
            p.extend_from_slice(&ts.to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, 1, ev, 0x0a, 0, 160]);
            p
        };
        assert_eq!(telephone_event(&event(101, 7, 1), 101), Some(('1', 7)));
        assert_eq!(telephone_event(&event(101, 8, 11), 101), Some(('#', 8)));
        assert_eq!(telephone_event(&event(101, 8, 15), 101), Some(('D', 8)));
        assert_eq!(telephone_event(&event(0, 8, 1), 101), None, "audio, not an event");
        assert_eq!(telephone_event(&event(101, 8, 16), 101), None, "flash is no key");
        assert_eq!(telephone_event(&event(101, 8, 1)[..14], 101), None, "cut short");
    }

    #[test]
    fn packets_count_up_and_carry_the_audio() {
        let mut s = Stream::new("127.0.0.1:4000".parse().unwrap(), 0, 0x1234_5678);
        let a = s.packet(ComfortAudio::Silence);
        let b = s.packet(ComfortAudio::Tone);
        let (pt, seq_a, ts_a, ssrc) = header(&a).unwrap();
        let (_, seq_b, ts_b, _) = header(&b).unwrap();
        assert_eq!((pt, ssrc, a.len()), (0, 0x1234_5678, 172));
        assert_eq!((seq_b.wrapping_sub(seq_a), ts_b.wrapping_sub(ts_a)), (1, 160));
        assert!(a[12..].iter().all(|&x| x == 0xff), "silence");
        assert!(b[12..].iter().any(|&x| x != 0xff), "a tone");
        let mut pcma = Stream::new("127.0.0.1:4000".parse().unwrap(), 8, 1);
        assert!(pcma.packet(ComfortAudio::Silence)[12..].iter().all(|&x| x == 0xd5));
        assert_eq!(header(&[0u8; 12]), None, "not version 2");
    }
}
