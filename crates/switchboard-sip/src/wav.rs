//! Prompts as a phone hears them: a WAV file read into 8 kHz 16-bit samples. Taken: mono, 8000 Hz,
//! PCM 16-bit or G.711 (μ-law, A-law), the formats telephony prompts come in; anything else is
//! refused with the reason, never resampled.

use crate::rtp::{alaw_decode, ulaw_decode};

/// The most audio one prompt may hold (10 minutes at 8 kHz).
pub const MAX_SAMPLES: usize = 8_000 * 600;

/// The beep before a recording: half a second of 1 kHz.
pub fn beep() -> Vec<i16> {
    (0..4_000).map(|i| ((f64::from(i) * 2.0 * std::f64::consts::PI / 8.0).sin() * 8_000.0) as i16).collect()
}

/// Hold music when the bot gives none: two soft notes (440 Hz, 554 Hz), a second each.
pub fn hold_music() -> Vec<i16> {
    let note = |hz: f64| (0..8_000).map(move |i| ((f64::from(i) * 2.0 * std::f64::consts::PI * hz / 8_000.0).sin() * 3_000.0) as i16);
    note(440.0).chain(note(554.37)).collect()
}

/// A WAV file of 8 kHz 16-bit mono samples (a recording).
pub fn encode(samples: &[i16]) -> Vec<u8> {
    let data = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&8_000u32.to_le_bytes());
    out.extend_from_slice(&16_000u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// The samples of a WAV file, or what is wrong with it.
pub fn decode(bytes: &[u8]) -> Result<Vec<i16>, String> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err("not a WAV file (no RIFF/WAVE header)".into());
    }
    let u16_at = |b: &[u8], i: usize| b.get(i..i + 2).map(|s| u16::from_le_bytes([s[0], s[1]]));
    let u32_at = |b: &[u8], i: usize| b.get(i..i + 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]));
    let (mut at, mut format) = (12usize, None);
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let size = u32_at(bytes, at + 4).unwrap_or(0) as usize;
        let body = bytes.get(at + 8..(at + 8).saturating_add(size).min(bytes.len())).unwrap_or_default();
        match id {
            b"fmt " => {
                let (tag, channels, rate, bits) = (
                    u16_at(body, 0).unwrap_or(0),
                    u16_at(body, 2).unwrap_or(0),
                    u32_at(body, 4).unwrap_or(0),
                    u16_at(body, 14).unwrap_or(0),
                );
                if channels != 1 || rate != 8_000 {
                    return Err(format!("{channels} channel(s) at {rate} Hz; prompts must be mono at 8000 Hz"));
                }
                format = Some(match (tag, bits) {
                    (1, 16) => Format::Pcm16,
                    (6, 8) => Format::Alaw,
                    (7, 8) => Format::Ulaw,
                    _ => return Err(format!("format {tag} with {bits} bits; prompts must be 16-bit PCM, μ-law or A-law")),
                });
            }
            b"data" => {
                let format = format.ok_or("the data chunk comes before the fmt chunk")?;
                let samples: Vec<i16> = match format {
                    Format::Pcm16 => body.chunks_exact(2).map(|s| i16::from_le_bytes([s[0], s[1]])).collect(),
                    Format::Ulaw => body.iter().map(|&b| ulaw_decode(b)).collect(),
                    Format::Alaw => body.iter().map(|&b| alaw_decode(b)).collect(),
                };
                if samples.len() > MAX_SAMPLES {
                    return Err(format!("{} s long; prompts may be at most {} s", samples.len() / 8_000, MAX_SAMPLES / 8_000));
                }
                return Ok(samples);
            }
            _ => {}
        }
        // Chunks are padded to an even size.
        at = at.saturating_add(8).saturating_add(size).saturating_add(size & 1);
    }
    Err("no data chunk".into())
}

#[derive(Clone, Copy)]
enum Format {
    Pcm16,
    Ulaw,
    Alaw,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(tag: u16, bits: u16, rate: u32, channels: u16, data: &[u8]) -> Vec<u8> {
        let mut w = b"RIFF\0\0\0\0WAVEfmt ".to_vec();
        w.extend_from_slice(&16u32.to_le_bytes());
        w.extend_from_slice(&tag.to_le_bytes());
        w.extend_from_slice(&channels.to_le_bytes());
        w.extend_from_slice(&rate.to_le_bytes());
        w.extend_from_slice(&(rate * u32::from(bits / 8)).to_le_bytes());
        w.extend_from_slice(&(bits / 8).to_le_bytes());
        w.extend_from_slice(&bits.to_le_bytes());
        w.extend_from_slice(b"LIST\x03\0\0\0abc\0"); // a chunk to skip, odd-sized and padded
        w.extend_from_slice(b"data");
        w.extend_from_slice(&(data.len() as u32).to_le_bytes());
        w.extend_from_slice(data);
        w
    }

    #[test]
    fn prompts_in_telephony_formats_decode_and_others_are_named() {
        assert_eq!(decode(&wav(1, 16, 8_000, 1, &[1, 0, 0xff, 0xff])), Ok(vec![1, -1]));
        assert_eq!(decode(&wav(7, 8, 8_000, 1, &[0xff, 0x7f])), Ok(vec![0, 0]));
        assert_eq!(decode(&wav(6, 8, 8_000, 1, &[0xd5])).map(|s| s.len()), Ok(1));
        assert_eq!(decode(&wav(1, 16, 44_100, 1, &[])), Err("1 channel(s) at 44100 Hz; prompts must be mono at 8000 Hz".into()));
        assert_eq!(decode(&wav(3, 32, 8_000, 1, &[])), Err("format 3 with 32 bits; prompts must be 16-bit PCM, μ-law or A-law".into()));
        assert_eq!(decode(b"<html>"), Err("not a WAV file (no RIFF/WAVE header)".into()));
        // Recordings play back.
        let own = decode(&wav(1, 16, 8_000, 1, &[0u8; 320])).unwrap();
        assert_eq!(own.len(), 160);
        assert_eq!(decode(&encode(&[1, -2, 300])), Ok(vec![1, -2, 300]));
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_decode_or_say_why(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let mut b = b"RIFF\0\0\0\0WAVE".to_vec();
            b.extend(bytes);
            let _ = decode(&b);
        }
    }
}
