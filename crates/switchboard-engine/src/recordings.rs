//! Finished recordings (`recordResponse`), kept for the bot to fetch from `recordingLocation`.
//!
//! The network that recorded puts the audio here under the recording's id; the adapter serves it.
//! They are kept in memory, newest first, within a count and a byte budget, and for at most an hour:
//! a bot fetches its recording right after the `recordOperation` completes. They do not survive a
//! restart (the store keeps calls, not audio).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use switchboard_core::Millis;

/// How many recordings are kept.
pub const RECORDINGS_KEPT: usize = 256;
/// How many bytes of audio are kept at most (about 70 minutes of 8 kHz 16-bit audio).
pub const RECORDINGS_BYTES: usize = 64 * 1024 * 1024;
/// How long a recording is kept.
pub const RECORDING_TTL_MS: Millis = 60 * 60 * 1000;

/// One recording: its audio (a WAV file) and when it was made.
#[derive(Clone, Debug)]
pub struct Stored {
    pub id: String,
    /// The call it was made in (its owner may fetch it).
    pub call_id: String,
    /// The bearer token that fetches it.
    pub access_token: String,
    pub wav: Arc<Vec<u8>>,
    pub made_at: Millis,
}

#[derive(Default)]
pub struct Recordings {
    kept: Mutex<VecDeque<Stored>>,
}

impl Recordings {
    pub fn new() -> Arc<Self> {
        Arc::new(Recordings::default())
    }

    /// Keeps a recording; the oldest go first when the count or the byte budget is exceeded.
    pub fn put(&self, recording: Stored) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.retain(|r| r.id != recording.id);
        kept.push_back(recording);
        let mut bytes: usize = kept.iter().map(|r| r.wav.len()).sum();
        while kept.len() > RECORDINGS_KEPT || (bytes > RECORDINGS_BYTES && kept.len() > 1) {
            if let Some(old) = kept.pop_front() {
                bytes -= old.wav.len();
            }
        }
    }

    /// The recording `id`, unless it has expired by `now`.
    pub fn get(&self, id: &str, now: Millis) -> Option<Stored> {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.retain(|r| now.saturating_sub(r.made_at) <= RECORDING_TTL_MS);
        kept.iter().find(|r| r.id == id).cloned()
    }

    /// Forgets every recording (the sim's reset).
    pub fn clear(&self) {
        self.kept.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, bytes: usize, at: Millis) -> Stored {
        Stored { id: id.into(), call_id: "c".into(), access_token: "t".into(), wav: Arc::new(vec![0; bytes]), made_at: at }
    }

    #[test]
    fn kept_within_count_budget_and_age() {
        let r = Recordings::default();
        for i in 0..RECORDINGS_KEPT + 5 {
            r.put(rec(&format!("r{i}"), 10, 0));
        }
        assert!(r.get("r0", 0).is_none(), "the oldest went first");
        assert!(r.get(&format!("r{}", RECORDINGS_KEPT + 4), 0).is_some());
        r.put(rec("big", RECORDINGS_BYTES, 0));
        assert!(r.get("r10", 0).is_none(), "the budget pushed the others out");
        assert!(r.get("big", RECORDING_TTL_MS).is_some());
        assert!(r.get("big", RECORDING_TTL_MS + 1).is_none(), "expired");
    }
}
