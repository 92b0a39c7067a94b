//! Usage-pattern monitoring and trust: who is probing for exploit code.
//!
//! Per user (and per API key) the learner keeps a few decayed counts computed from the
//! impressions of the log, in event time: requests, requests with a risky prompt, requests
//! with a candidate at or above the block threshold, and *repeats* (a request with a risky
//! prompt whose shape is near-identical to the previous one: probing by rephrasing). Counts halve every
//! `half_life_hours`, so they are rates over a sliding, exponentially weighted window.
//!
//! The detector compares each user with the population using robust statistics: for each
//! signal, the median and the MAD (median absolute deviation, scaled by 1.4826 to estimate a
//! standard deviation) over the users with enough activity, recomputed at fixed steps of event
//! time. A user's signal becomes a robust z-score `(x − median) / max(1.4826·MAD, floor)`; the
//! floor keeps a homogeneous population (MAD 0) from turning every small deviation into an
//! outlier, and below `min_population` active users fixed reference statistics stand in.
//! Medians and MADs resist the outliers they are meant to find: up to half the users can
//! misbehave before the statistics move, whereas means and standard deviations are dragged
//! along by one heavy abuser.
//!
//! Shares are smoothed towards the population median with `prior_strength` pseudo-requests,
//! so a user with three requests is never an outlier, and so trust *recovers*: when the
//! behaviour stops, the counts decay, the evidence shrinks, the shares return to the median and
//! the z-scores to zero; when the behaviour turns normal, normal requests dilute the shares.
//!
//! The anomaly score adds the positive z-scores with weights: risky prompts and repeats count
//! fully (the user writes the prompt); blocked candidates a quarter (the code model writes them,
//! and honest work on SQL or shell code meets many: even a user whose every request has one
//! scores 2.4, under the default tolerance); the request rate half (volume alone is what rate
//! limits are for). Trust falls linearly from 1 at `tolerance` to 0 at `tolerance + span`.

pub mod gate;
pub mod guard;

use serde::{Deserialize, Serialize};

/// Constants of the detector (settings `abuse_*`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AbuseConfig {
    /// Usage counts halve every this many hours of event time.
    pub half_life_hours: f64,
    /// A prompt risk at or above this makes a request risky.
    pub risky_prompt_at: f64,
    /// A served candidate risk at or above this counts as a blocked candidate.
    pub blocked_at: f64,
    /// Pseudo-requests at the population median that every user's shares start from.
    pub prior_strength: f64,
    /// Users with at least this many (decayed) requests make up the population.
    pub min_active_requests: f64,
    /// Below this many active users, the reference statistics are used.
    pub min_population: u32,
    /// Anomaly score up to which trust stays 1.
    pub tolerance: f64,
    /// Trust reaches 0 at `tolerance + span`.
    pub span: f64,
    /// Seconds of event time between recomputations of the population statistics.
    pub population_every_s: f64,
}

impl Default for AbuseConfig {
    fn default() -> Self {
        AbuseConfig {
            half_life_hours: 6.0,
            risky_prompt_at: 0.5,
            blocked_at: 0.9,
            prior_strength: 5.0,
            min_active_requests: 5.0,
            min_population: 30,
            tolerance: 3.0,
            span: 6.0,
            population_every_s: 300.0,
        }
    }
}

/// Signal weights in the anomaly score (see the module docs for why).
const W_RISKY: f64 = 1.0;
const W_BLOCKED: f64 = 0.25;
const W_REPEATS: f64 = 1.0;
const W_RATE: f64 = 0.5;
/// Scale floors: a share's z-score counts in tenths, the log-rate's in e-folds.
const FLOOR_SHARE: f64 = 0.1;
const FLOOR_LOG_RATE: f64 = 1.0;

/// What one request says about usage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestSignal {
    pub prompt_risk: f64,
    /// The highest candidate risk served.
    pub max_risk: f64,
    /// The request's shape ([`shape`]).
    pub shape: u32,
}

impl RequestSignal {
    /// What a logged impression says about usage.
    #[must_use]
    pub fn of(i: &crate::events::Impression) -> RequestSignal {
        RequestSignal {
            prompt_risk: f64::from(i.prompt_risk),
            max_risk: i.candidates.iter().map(|c| f64::from(c.risk)).fold(0.0, f64::max),
            shape: shape(f64::from(i.prompt_risk), i.candidates.iter().map(|c| &c.features.idx[..])),
        }
    }
}

/// Decayed usage counts of one user or key: 28 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub requests: f32,
    pub risky: f32,
    pub blocked: f32,
    pub repeats: f32,
    /// Shape of the last request.
    pub shape: u32,
    /// Event time of the last request (ms since the epoch); decay runs from it.
    pub at_ms: i64,
}

impl Usage {
    /// The counts decayed to event time `at_ms` (unchanged for an earlier time).
    #[must_use]
    pub fn decayed(&self, cfg: &AbuseConfig, at_ms: i64) -> Usage {
        let mut u = *self;
        if u.at_ms != 0 && at_ms > u.at_ms && cfg.half_life_hours > 0.0 {
            let hours = (at_ms - u.at_ms) as f64 / 3_600_000.0;
            let f = 0.5f64.powf(hours / cfg.half_life_hours) as f32;
            u.requests *= f;
            u.risky *= f;
            u.blocked *= f;
            u.repeats *= f;
        }
        u.at_ms = u.at_ms.max(at_ms);
        u
    }

    /// Counts one request made at event time `at_ms`.
    pub fn observe(&mut self, cfg: &AbuseConfig, r: &RequestSignal, at_ms: i64) {
        *self = self.decayed(cfg, at_ms);
        let risky = r.prompt_risk >= cfg.risky_prompt_at;
        let blocked = r.max_risk >= cfg.blocked_at;
        self.requests += 1.0;
        self.risky += f32::from(u8::from(risky));
        self.blocked += f32::from(u8::from(blocked));
        if risky && self.shape == r.shape && self.requests > 1.0 {
            self.repeats += 1.0;
        }
        self.shape = r.shape;
    }

    /// The four signals, shares smoothed towards the population medians.
    #[must_use]
    pub fn signals(&self, cfg: &AbuseConfig, pop: &Population) -> Signals {
        let n = f64::from(self.requests.max(0.0));
        let a = cfg.prior_strength.max(0.0);
        let share = |c: f32, med: f64| (f64::from(c.max(0.0)) + a * med) / (n + a).max(f64::MIN_POSITIVE);
        Signals {
            log_rate: n.ln_1p(),
            risky: share(self.risky, pop.risky.median),
            blocked: share(self.blocked, pop.blocked.median),
            repeats: share(self.repeats, pop.repeats.median),
        }
    }
}

/// The signals of one user: log(1 + decayed requests) and three shares in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Signals {
    pub log_rate: f64,
    pub risky: f64,
    pub blocked: f64,
    pub repeats: f64,
}

/// A robust location and scale.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Robust {
    pub median: f64,
    /// 1.4826 × MAD, at least the signal's floor.
    pub scale: f64,
}

impl Robust {
    fn z(&self, x: f64) -> f64 {
        let z = (x - self.median) / self.scale.max(f64::MIN_POSITIVE);
        if z.is_finite() { z } else { 0.0 }
    }

    /// Median and scaled MAD of `xs` (reordered), the scale at least `floor`.
    fn of(xs: &mut [f64], floor: f64) -> Robust {
        let median = median(xs);
        for x in xs.iter_mut() {
            *x = (*x - median).abs();
        }
        Robust { median, scale: (1.4826 * self::median(xs)).max(floor) }
    }
}

/// The median (the mean of the middle two for an even count); 0 for none.
fn median(xs: &mut [f64]) -> f64 {
    let n = xs.len();
    if n == 0 {
        return 0.0;
    }
    let mid = n / 2;
    let (_, m, _) = xs.select_nth_unstable_by(mid, f64::total_cmp);
    let hi = *m;
    if n % 2 == 1 {
        return hi;
    }
    let lo = xs[..mid].iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lo + hi) / 2.0
}

/// Statistics of the population the users are compared with.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Population {
    pub log_rate: Robust,
    pub risky: Robust,
    pub blocked: Robust,
    pub repeats: Robust,
    /// Active users they were computed from (0: the reference statistics).
    pub users: u32,
    /// Event time they were computed at.
    pub at_ms: i64,
}

/// Users sampled for the population statistics at most (a deterministic stride over the key
/// order beyond it, so a million users cost a few milliseconds, not a sort of a million).
pub const POPULATION_SAMPLE: usize = 100_000;

/// The stride over `users` (in key order) that samples at most [`POPULATION_SAMPLE`].
#[must_use]
pub fn sample_stride(users: usize) -> usize {
    users.div_ceil(POPULATION_SAMPLE).max(1)
}

impl Population {
    /// Whether these statistics are due to be recomputed at event time `at_ms` (every
    /// `population_every_s` of event time; the learner and the retraining job's label gate
    /// must agree on when).
    #[must_use]
    pub fn is_due(&self, cfg: &AbuseConfig, at_ms: i64) -> bool {
        (at_ms - self.at_ms) as f64 >= cfg.population_every_s * 1000.0
    }

    /// The reference statistics, used until enough users are active: about 50 requests per
    /// half-life, 2 % risky prompts, 5 % requests with a blocked candidate, 1 % repeats.
    #[must_use]
    pub fn reference() -> Population {
        Population {
            log_rate: Robust { median: 50f64.ln_1p(), scale: FLOOR_LOG_RATE },
            risky: Robust { median: 0.02, scale: FLOOR_SHARE },
            blocked: Robust { median: 0.05, scale: FLOOR_SHARE },
            repeats: Robust { median: 0.01, scale: FLOOR_SHARE },
            users: 0,
            at_ms: 0,
        }
    }

    /// Robust statistics over the active users of `usages`, decayed to event time `at_ms`;
    /// the reference when fewer than `min_population` are active. Deterministic: the result
    /// does not depend on the order of `usages`.
    pub fn compute<'a>(cfg: &AbuseConfig, usages: impl Iterator<Item = &'a Usage>, at_ms: i64) -> Population {
        let (mut rate, mut risky, mut blocked, mut repeats) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for u in usages {
            let u = u.decayed(cfg, at_ms);
            let n = f64::from(u.requests);
            if !(n >= cfg.min_active_requests && n.is_finite()) {
                continue;
            }
            rate.push(n.ln_1p());
            risky.push(f64::from(u.risky) / n);
            blocked.push(f64::from(u.blocked) / n);
            repeats.push(f64::from(u.repeats) / n);
        }
        let users = u32::try_from(rate.len()).unwrap_or(u32::MAX);
        if users < cfg.min_population.max(1) {
            return Population { at_ms, ..Population::reference() };
        }
        Population {
            log_rate: Robust::of(&mut rate, FLOOR_LOG_RATE),
            risky: Robust::of(&mut risky, FLOOR_SHARE),
            blocked: Robust::of(&mut blocked, FLOOR_SHARE),
            repeats: Robust::of(&mut repeats, FLOOR_SHARE),
            users,
            at_ms,
        }
    }
}

impl Default for Population {
    fn default() -> Self {
        Population::reference()
    }
}

/// The detector's view of one user at one time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Assessment {
    pub signals: Signals,
    /// Robust z-scores of the signals.
    pub z: Signals,
    /// Weighted sum of the positive z-scores.
    pub score: f64,
    /// In [0, 1].
    pub trust: f64,
}

/// Assesses `usage` at event time `at_ms` against `pop`.
#[must_use]
pub fn assess(cfg: &AbuseConfig, pop: &Population, usage: &Usage, at_ms: i64) -> Assessment {
    assess_weighted(cfg, pop, usage, at_ms, W_RATE)
}

/// As [`assess`] without the rate term: for API keys, whose volume is many users'.
#[must_use]
pub fn assess_shares(cfg: &AbuseConfig, pop: &Population, usage: &Usage, at_ms: i64) -> Assessment {
    assess_weighted(cfg, pop, usage, at_ms, 0.0)
}

fn assess_weighted(cfg: &AbuseConfig, pop: &Population, usage: &Usage, at_ms: i64, w_rate: f64) -> Assessment {
    let s = usage.decayed(cfg, at_ms).signals(cfg, pop);
    let z = Signals {
        log_rate: pop.log_rate.z(s.log_rate),
        risky: pop.risky.z(s.risky),
        blocked: pop.blocked.z(s.blocked),
        repeats: pop.repeats.z(s.repeats),
    };
    let score = W_RISKY * z.risky.max(0.0)
        + W_BLOCKED * z.blocked.max(0.0)
        + W_REPEATS * z.repeats.max(0.0)
        + w_rate * z.log_rate.max(0.0);
    let trust = 1.0 - ((score - cfg.tolerance) / cfg.span.max(f64::MIN_POSITIVE)).clamp(0.0, 1.0);
    Assessment { signals: s, z, score, trust: if trust.is_finite() { trust } else { 1.0 } }
}

/// Trust of `usage` at event time `at_ms` (1 for no usage).
#[must_use]
pub fn trust(cfg: &AbuseConfig, pop: &Population, usage: &Usage, at_ms: i64) -> f64 {
    if usage.requests <= 0.0 {
        return 1.0;
    }
    assess(cfg, pop, usage, at_ms).trust
}

/// The explanation of an assessment, in words (empty when nothing stands out).
#[must_use]
pub fn explain(a: &Assessment) -> String {
    let mut why = Vec::new();
    let pct = |x: f64| (x * 100.0).round();
    if a.z.risky > 1.0 {
        why.push(format!("{}% of recent prompts ask for harmful code", pct(a.signals.risky)));
    }
    if a.z.repeats > 1.0 {
        why.push(format!("{}% of recent requests repeat a risky one near-identically", pct(a.signals.repeats)));
    }
    if a.z.blocked > 1.0 {
        why.push(format!("{}% of recent requests had a blocked candidate", pct(a.signals.blocked)));
    }
    if a.z.log_rate > 2.0 {
        why.push(format!("request rate {:.1} robust deviations above the population", a.z.log_rate));
    }
    if why.is_empty() {
        return String::new();
    }
    format!("usage anomaly score {:.1} (trust falls above the tolerance): {}", a.score, why.join(", "))
}

/// The shape of a request, for spotting near-identical repeats: a MinHash of the union of its
/// candidates' feature coordinates, mixed with the prompt risk in steps of 0.1. Two requests
/// whose feature sets have Jaccard similarity `J` get the same MinHash with probability `J`,
/// so rephrasing a prompt or resampling candidates of the same exploit still repeats the shape,
/// while unrelated code does not. Pure and platform-independent.
#[must_use]
pub fn shape<'a>(prompt_risk: f64, candidate_features: impl Iterator<Item = &'a [u32]>) -> u32 {
    let mut min = u64::MAX;
    for idx in candidate_features {
        for &i in idx {
            min = min.min(mix(u64::from(i)));
        }
    }
    let bucket = (prompt_risk.clamp(0.0, 1.0) * 10.0).round() as u64;
    (mix(min ^ (bucket << 56)) >> 32) as u32
}

/// SplitMix64's finaliser: a fixed bijective mix of 64 bits.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests;
