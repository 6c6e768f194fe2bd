//! Per-app request rates (`max_requests_per_second`): a token bucket per app, refilled continuously,
//! holding a second's worth. Wall time, not the engine's clock: it meters load, which happens in
//! real time even when the calls' clock is virtual.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Default)]
pub struct RateLimits {
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimits {
    /// Takes one request of `app_id`'s allowance of `per_second`; when there is none left, the
    /// whole seconds until there is.
    pub fn take(&self, app_id: &str, per_second: u32, now: Instant) -> Result<(), u64> {
        let rate = f64::from(per_second.max(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets.entry(app_id.to_owned()).or_insert(Bucket { tokens: rate, at: now });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(rate);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - bucket.tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_bucket_holds_a_second_and_refills_at_the_rate() {
        let limits = RateLimits::default();
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(limits.take("a", 5, t0), Ok(()));
        }
        assert_eq!(limits.take("a", 5, t0), Err(1));
        assert_eq!(limits.take("b", 5, t0), Ok(()), "each app has its own");
        assert_eq!(limits.take("a", 5, t0 + Duration::from_millis(200)), Ok(()), "one more after a fifth of a second");
        assert_eq!(limits.take("a", 5, t0 + Duration::from_millis(200)), Err(1));
        // Idle for long, it holds no more than a second's worth.
        for _ in 0..5 {
            assert_eq!(limits.take("a", 5, t0 + Duration::from_secs(60)), Ok(()));
        }
        assert_eq!(limits.take("a", 5, t0 + Duration::from_secs(60)), Err(1));
    }
}
