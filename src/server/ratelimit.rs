//! Token-bucket rate limits, per key and per user, in memory on each replica, by trust tier.
//!
//! Across replicas: each replica enforces `1/rate_limit_replicas` of every configured rate and
//! burst, so behind a load balancer that spreads a caller's requests over N replicas the
//! aggregate stays at the configured limit (and at most N times stricter for a caller pinned to
//! one replica). Trust, and so the tier, is the same on every replica: it is materialised from
//! the shared log.

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

/// A trust tier, ordered from the loosest to the strictest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    Full,
    Reduced,
    Minimal,
}

impl Tier {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Tier::Full => "full",
            Tier::Reduced => "reduced",
            Tier::Minimal => "minimal",
        }
    }
}

/// Tier boundaries and rate factors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tiers {
    /// Trust below this is the reduced tier.
    pub reduced_below: f64,
    /// Trust below this is the minimal tier.
    pub minimal_below: f64,
    /// Fractions of the full rate and burst of the reduced and minimal tiers.
    pub reduced_factor: f64,
    pub minimal_factor: f64,
}

impl Tiers {
    /// The tier of a trust.
    #[must_use]
    pub fn of(&self, trust: f64) -> Tier {
        if trust < self.minimal_below {
            Tier::Minimal
        } else if trust < self.reduced_below {
            Tier::Reduced
        } else {
            Tier::Full
        }
    }
}

/// One limiter per trust tier.
#[derive(Debug)]
pub struct TieredLimiter {
    tiers: Tiers,
    /// The strictest tier this limiter applies, whatever the trust.
    strictest: Tier,
    full: Limiter,
    reduced: Limiter,
    minimal: Limiter,
}

impl TieredLimiter {
    /// Limiters of `rate_per_s` and `burst` in the full tier, scaled by the tiers' factors,
    /// each divided by `replicas`.
    #[must_use]
    pub fn new(rate_per_s: f64, burst: f64, tiers: Tiers, replicas: u32) -> TieredLimiter {
        let n = f64::from(replicas.max(1));
        let lim = |f: f64| Limiter::new(rate_per_s * f / n, (burst * f / n).max(1.0));
        TieredLimiter {
            tiers,
            strictest: Tier::Minimal,
            full: lim(1.0),
            reduced: lim(tiers.reduced_factor),
            minimal: lim(tiers.minimal_factor),
        }
    }

    /// The same, never stricter than `tier` (for API keys: a plugin backend's key serves many
    /// users, and stopping them all for one user's abuse is the per-user tiers' job).
    #[must_use]
    pub fn at_most(self, tier: Tier) -> TieredLimiter {
        TieredLimiter { strictest: tier, ..self }
    }

    /// Takes a token for `key` in the tier of `trust`; `Err((wait_s, tier))` when empty.
    pub fn check(&self, key: &str, trust: f64, now_s: f64) -> Result<(), (f64, Tier)> {
        let tier = self.tiers.of(trust).min(self.strictest);
        let l = match tier {
            Tier::Full => &self.full,
            Tier::Reduced => &self.reduced,
            Tier::Minimal => &self.minimal,
        };
        l.check(key, now_s).map_err(|w| (w, tier))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_trust_gets_a_smaller_bucket_and_replicas_share_the_rate() {
        let tiers = Tiers { reduced_below: 0.8, minimal_below: 0.4, reduced_factor: 0.5, minimal_factor: 0.1 };
        let l = TieredLimiter::new(100.0, 100.0, tiers, 2);
        let count = |key: &str, trust: f64| (0..200).take_while(|_| l.check(key, trust, 0.0).is_ok()).count();
        assert_eq!(count("a", 1.0), 50);
        assert_eq!(count("b", 0.6), 25);
        assert_eq!(count("c", 0.1), 5);
        let (wait, tier) = l.check("c", 0.1, 0.0).expect_err("empty");
        assert_eq!(tier, Tier::Minimal);
        assert!((wait - 0.2).abs() < 1e-9, "1 token at 5/s: {wait}");
    }

    #[test]
    fn a_limiter_capped_at_a_tier_never_goes_stricter() {
        let tiers = Tiers { reduced_below: 0.8, minimal_below: 0.4, reduced_factor: 0.5, minimal_factor: 0.1 };
        let l = TieredLimiter::new(100.0, 100.0, tiers, 1).at_most(Tier::Reduced);
        let count = |key: &str, trust: f64| (0..200).take_while(|_| l.check(key, trust, 0.0).is_ok()).count();
        assert_eq!(count("a", 1.0), 100);
        assert_eq!(count("b", 0.6), 50);
        assert_eq!(count("c", 0.0), 50, "trust 0 stays in the reduced tier");
        assert_eq!(l.check("c", 0.0, 0.0).expect_err("empty").1, Tier::Reduced);
    }

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
