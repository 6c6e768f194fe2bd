//! Recordings as real audio files: RIFF/WAVE, 8 kHz, 16-bit PCM, mono (what a telephone call carries).

/// Samples per second.
pub const RATE: u32 = 8_000;

/// A WAV file of `speech_ms` of a 440 Hz tone (standing in for the caller's voice) followed by silence,
/// `total_ms` long in all.
pub fn recording(speech_ms: u64, total_ms: u64) -> Vec<u8> {
    let samples = (total_ms * u64::from(RATE) / 1000) as usize;
    let speech = (speech_ms.min(total_ms) * u64::from(RATE) / 1000) as usize;
    let data_len = samples * 2;
    let mut out = Vec::with_capacity(44 + data_len);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes()); // fmt chunk size
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&RATE.to_le_bytes());
    out.extend_from_slice(&(RATE * 2).to_le_bytes()); // bytes per second
    out.extend_from_slice(&2u16.to_le_bytes()); // block align
    out.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data_len as u32).to_le_bytes());
    for i in 0..samples {
        let v = if i < speech {
            let t = i as f64 / f64::from(RATE);
            (8_000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16
        } else {
            0
        };
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_recording_is_a_wav_of_its_length() {
        let wav = super::recording(500, 1_500);
        assert_eq!(&wav[0..4], b"RIFF");
        assert_eq!(&wav[8..16], b"WAVEfmt ");
        assert_eq!(wav.len(), 44 + 1_500 * 8 * 2);
        let sample = |i: usize| i16::from_le_bytes([wav[44 + 2 * i], wav[45 + 2 * i]]);
        assert!((0..400).any(|i| sample(i).abs() > 7_000), "speech is heard");
        assert!((4_000..12_000).all(|i| sample(i) == 0), "then silence");
    }
}
