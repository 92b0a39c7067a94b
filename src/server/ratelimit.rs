//! Token-bucket rate limits, per key and per user, in memory on each replica.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: f64,
}

/// A set of token buckets of one rate and burst, keyed by name.
#[derive(Debug)]
pub struct Limiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Limiter {
    #[must_use]
    pub fn new(rate_per_s: f64, burst: f64) -> Limiter {
        Limiter { rate: rate_per_s.max(f64::MIN_POSITIVE), burst: burst.max(1.0), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `key` at time `now_s` (seconds, monotonic). `Err(wait_s)` when
    /// the bucket is empty: how long until a token is back.
    pub fn check(&self, key: &str, now_s: f64) -> Result<(), f64> {
        let Ok(mut m) = self.buckets.lock() else { return Ok(()) };
        if m.len() > 1_000_000 {
            // Bound memory: forget buckets that are full again (idle keys).
            let (rate, burst) = (self.rate, self.burst);
            m.retain(|_, b| b.tokens + (now_s - b.at) * rate < burst);
        }
        let b = m.entry(key.to_string()).or_insert(Bucket { tokens: self.burst, at: now_s });
        b.tokens = (b.tokens + (now_s - b.at).max(0.0) * self.rate).min(self.burst);
        b.at = now_s;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err((1.0 - b.tokens) / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let l = Limiter::new(10.0, 3.0);
        for _ in 0..3 {
            assert!(l.check("k", 0.0).is_ok());
        }
        let wait = l.check("k", 0.0).expect_err("empty");
        assert!((wait - 0.1).abs() < 1e-9);
        assert!(l.check("other", 0.0).is_ok());
        assert!(l.check("k", 0.1).is_ok());
        assert!(l.check("k", 0.1).is_err());
    }
}
