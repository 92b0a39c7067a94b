//! The per-user policy: temperature, risk penalty, block threshold and trust, learned from
//! what the user does with risky and safe candidates.
//!
//! Sensitivity compares how often the user rejects *risky* candidates (served risk at or above
//! `risky_at`, or reported insecure) with how often they reject *safe* ones, each a Beta
//! posterior mean with a symmetric prior of `prior_strength` pseudo-events per side:
//! `s = max(0, P(reject | risky) − P(reject | safe))`. A few events move `s` a little, many move
//! it a lot; a user who accepts risky code has `s = 0`, which is the defaults: feedback never
//! loosens protection. Counts decay with a half-life measured in event time (the time each
//! event was appended), so replaying a log gives the same policy on any machine.

use crate::abuse::Usage;
use crate::abuse::guard::LabelBudget;
use crate::events::Outcome;
use serde::{Deserialize, Serialize};

/// Defaults, bounds and learning constants of the policy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PolicyConfig {
    pub default_temperature: f64,
    pub min_temperature: f64,
    pub default_risk_penalty: f64,
    pub max_risk_penalty: f64,
    pub default_block_threshold: f64,
    pub min_block_threshold: f64,
    /// How far full sensitivity lowers the block threshold.
    pub sensitive_threshold_drop: f64,
    pub half_life_days: f64,
    pub prior_strength: f64,
    /// Served risk at or above which a candidate counts as risky.
    pub risky_at: f64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            default_temperature: 0.8,
            min_temperature: 0.2,
            default_risk_penalty: 1.0,
            max_risk_penalty: 4.0,
            default_block_threshold: 0.9,
            min_block_threshold: 0.5,
            sensitive_threshold_drop: 0.2,
            half_life_days: 14.0,
            prior_strength: 2.0,
            risky_at: 0.5,
        }
    }
}

/// The key of a user's policy: the first 8 bytes of the SHA-256 of the user id, the same on
/// every machine and release. A million users' policies are kept in memory, and a key of 8 bytes
/// instead of the id string halves their footprint. Two ids collide with a probability of about
/// 3e-8 at a million users. (A pair of 32-bit murmur3 hashes with different seeds is not a
/// 64-bit hash: a million synthetic ids gave 8 collisions.)
#[must_use]
pub fn user_key(user_id: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(user_id.as_bytes());
    u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// What the user did, decayed, plus plain counts for display, usage signals and the label
/// budget. Compact (about 96 bytes): a million of them are kept in memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyState {
    pub rejected_risky: f32,
    pub accepted_risky: f32,
    pub rejected_safe: f32,
    pub accepted_safe: f32,
    /// Time of the last event applied (ms since the epoch); decay runs from it.
    pub last_ms: i64,
    pub counts: Counts,
    /// Trust in [0, 1]; 1 unless the abuse monitor lowers it. The learner stores the trust of
    /// the user's last request; readers recompute it at the log's clock (see `crate::abuse`).
    pub trust: f32,
    /// Decayed usage counts (requests, risky prompts, blocked, repeats) for the abuse monitor.
    pub usage: Usage,
    /// Label weight spent in the current window (poisoning defence).
    pub labels: LabelBudget,
}

/// Plain (undecayed) feedback counts, as the policy endpoint shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub accepted: u32,
    pub rejected: u32,
    pub rejected_risky: u32,
    pub accepted_risky: u32,
    pub reported_insecure: u32,
    pub reported_safe: u32,
}

/// The policy a user gets.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Policy {
    pub temperature: f64,
    pub risk_penalty: f64,
    pub block_threshold: f64,
    pub trust: f64,
    /// Security sensitivity in [0, 1) behind the values.
    pub sensitivity: f64,
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

impl Default for PolicyState {
    /// A fresh state: no evidence, full trust, so the defaults apply.
    fn default() -> Self {
        PolicyState {
            rejected_risky: 0.0,
            accepted_risky: 0.0,
            rejected_safe: 0.0,
            accepted_safe: 0.0,
            last_ms: 0,
            counts: Counts::default(),
            trust: 1.0,
            usage: Usage::default(),
            labels: LabelBudget::default(),
        }
    }
}

impl PolicyState {
    /// A fresh state (defaults, full trust).
    #[must_use]
    pub fn new() -> PolicyState {
        PolicyState::default()
    }

    fn decay_to(&mut self, cfg: &PolicyConfig, at_ms: i64) {
        if self.last_ms != 0 && at_ms > self.last_ms && cfg.half_life_days > 0.0 {
            let days = (at_ms - self.last_ms) as f64 / 86_400_000.0;
            let f = 0.5f64.powf(days / cfg.half_life_days) as f32;
            self.rejected_risky *= f;
            self.accepted_risky *= f;
            self.rejected_safe *= f;
            self.accepted_safe *= f;
        }
        self.last_ms = self.last_ms.max(at_ms);
    }

    /// Applies one feedback event: `risk` is what was served, at event time `at_ms`.
    pub fn observe(&mut self, cfg: &PolicyConfig, outcome: Outcome, risk: f64, at_ms: i64) {
        self.decay_to(cfg, at_ms);
        let risky = risk >= cfg.risky_at;
        match outcome {
            Outcome::Accepted => {
                self.counts.accepted = self.counts.accepted.saturating_add(1);
                if risky {
                    self.counts.accepted_risky = self.counts.accepted_risky.saturating_add(1);
                    self.accepted_risky += 1.0;
                } else {
                    self.accepted_safe += 1.0;
                }
            }
            Outcome::Rejected => {
                self.counts.rejected = self.counts.rejected.saturating_add(1);
                if risky {
                    self.counts.rejected_risky = self.counts.rejected_risky.saturating_add(1);
                    self.rejected_risky += 1.0;
                } else {
                    self.rejected_safe += 1.0;
                }
            }
            // Reporting a candidate insecure is the strongest rejection of risky code.
            Outcome::ReportedInsecure => {
                self.counts.reported_insecure = self.counts.reported_insecure.saturating_add(1);
                self.rejected_risky += 1.0;
            }
            Outcome::ReportedSafe => self.counts.reported_safe += 1,
        }
    }

    /// Security sensitivity in [0, 1).
    #[must_use]
    pub fn sensitivity(&self, cfg: &PolicyConfig) -> f64 {
        let a = cfg.prior_strength.max(0.0);
        let (rr, ar) = (f64::from(self.rejected_risky), f64::from(self.accepted_risky));
        let (rs, as_) = (f64::from(self.rejected_safe), f64::from(self.accepted_safe));
        let p_risky = (rr + a) / (rr + ar + 2.0 * a).max(f64::MIN_POSITIVE);
        let p_safe = (rs + a) / (rs + as_ + 2.0 * a).max(f64::MIN_POSITIVE);
        let s = p_risky - p_safe;
        if s.is_finite() { s.clamp(0.0, 1.0) } else { 0.0 }
    }

    /// The policy of this state; every value within its bounds.
    #[must_use]
    pub fn policy(&self, cfg: &PolicyConfig) -> Policy {
        let s = self.sensitivity(cfg);
        let trust = if self.trust.is_finite() { f64::from(self.trust).clamp(0.0, 1.0) } else { 1.0 };
        let temperature = cfg.default_temperature - (cfg.default_temperature - cfg.min_temperature) * s;
        let risk_penalty = cfg.default_risk_penalty + (cfg.max_risk_penalty - cfg.default_risk_penalty) * s;
        let by_sensitivity = cfg.default_block_threshold - cfg.sensitive_threshold_drop * s;
        let by_trust = cfg.min_block_threshold + (cfg.default_block_threshold - cfg.min_block_threshold) * trust;
        let block_threshold = by_sensitivity.min(by_trust).clamp(cfg.min_block_threshold, cfg.default_block_threshold);
        Policy {
            temperature: round(temperature.clamp(cfg.min_temperature, cfg.default_temperature), 3),
            risk_penalty: round(risk_penalty.clamp(cfg.default_risk_penalty, cfg.max_risk_penalty), 3),
            block_threshold: round(block_threshold, 3),
            trust: round(trust, 3),
            sensitivity: round(s, 3),
        }
    }

    /// The policy in words.
    #[must_use]
    pub fn explain(&self, cfg: &PolicyConfig) -> String {
        let p = self.policy(cfg);
        let c = self.counts;
        let risky_seen = c.rejected_risky + c.accepted_risky;
        let mut parts = Vec::new();
        if risky_seen == 0 && c.reported_insecure == 0 {
            parts.push("no feedback on risky candidates yet".to_string());
        } else {
            parts.push(format!("rejects risky candidates {} of {} times", c.rejected_risky, risky_seen));
            if c.reported_insecure > 0 {
                parts.push(format!("reported {} insecure", c.reported_insecure));
            }
            let safe_seen = (c.accepted + c.rejected).saturating_sub(risky_seen);
            parts.push(format!("rejects safe ones {} of {} times", c.rejected - c.rejected_risky, safe_seen));
        }
        if p.temperature < cfg.default_temperature {
            parts.push(format!(
                "temperature lowered from {:.2} to {:.2} and risk penalty raised to {:.2}",
                cfg.default_temperature, p.temperature, p.risk_penalty
            ));
        } else {
            parts.push("defaults apply (feedback never loosens them)".to_string());
        }
        if p.trust < 1.0 {
            parts.push(format!("trust {:.2}: block threshold tightened to {:.2}", p.trust, p.block_threshold));
        }
        parts.join("; ")
    }
}

/// Label weights for learning from feedback (see the README's label semantics).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LabelWeights {
    /// A reviewer's verdict: the strongest label after the shipped corpus.
    pub verdict: f32,
    pub reported: f32,
    pub accepted: f32,
    pub rejected_flagged: f32,
}

impl Default for LabelWeights {
    fn default() -> Self {
        LabelWeights { verdict: 3.0, reported: 1.0, accepted: 0.05, rejected_flagged: 0.2 }
    }
}

/// The training label and weight of a feedback event: `Some((insecure, weight))`, or `None`
/// when the event says nothing about security (a rejected candidate no rule flagged).
#[must_use]
pub fn label(outcome: Outcome, flagged: bool, w: &LabelWeights) -> Option<(bool, f32)> {
    match outcome {
        Outcome::ReportedInsecure => Some((true, w.reported)),
        Outcome::ReportedSafe => Some((false, w.reported)),
        Outcome::Accepted => Some((false, w.accepted)),
        Outcome::Rejected if flagged => Some((true, w.rejected_flagged)),
        Outcome::Rejected => None,
    }
    .filter(|(_, weight)| *weight > 0.0)
}

/// The training label and weight of a reviewer's verdict. A verdict on an item without
/// features (a usage anomaly: no candidate) is a record, not a label: `None`.
#[must_use]
pub fn verdict_label(v: &crate::events::ReviewVerdictEvent, w: &LabelWeights) -> Option<(bool, f32)> {
    Some((v.verdict == crate::events::Verdict::Insecure, w.verdict))
        .filter(|(_, weight)| *weight > 0.0 && !v.features.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    #[test]
    fn user_keys_are_stable_and_distinct_for_a_million_ids() {
        assert_eq!(user_key("alice@example.com"), user_key("alice@example.com"));
        let keys: std::collections::HashSet<u64> =
            (0..1_000_000u32).map(|i| user_key(&format!("user-{i:07}@synth.example"))).collect();
        assert_eq!(keys.len(), 1_000_000);
    }

    #[test]
    fn a_policy_state_stays_compact_for_a_million_users() {
        assert!(std::mem::size_of::<PolicyState>() <= 96, "{}", std::mem::size_of::<PolicyState>());
    }

    #[test]
    fn an_unseen_user_gets_the_defaults() {
        let cfg = PolicyConfig::default();
        let p = PolicyState::new().policy(&cfg);
        assert_eq!((p.temperature, p.risk_penalty, p.block_threshold, p.trust), (0.8, 1.0, 0.9, 1.0));
    }

    #[test]
    fn rejecting_risky_candidates_lowers_temperature_more_with_more_evidence() {
        let cfg = PolicyConfig::default();
        let mut s = PolicyState::new();
        let mut temps = Vec::new();
        for k in 0..30 {
            s.observe(&cfg, Outcome::Rejected, 0.95, DAY + k);
            s.observe(&cfg, Outcome::Accepted, 0.05, DAY + k);
            temps.push(s.policy(&cfg).temperature);
        }
        assert!(temps[0] < 0.8 && temps[0] > 0.6, "one event moves a little: {}", temps[0]);
        assert!(temps[29] < 0.35, "many move a lot: {}", temps[29]);
        assert!(temps.windows(2).all(|w| w[1] <= w[0]));
        let p = s.policy(&cfg);
        assert!(p.risk_penalty > 3.0 && p.block_threshold < 0.9 && p.block_threshold >= 0.5);
        assert!(s.explain(&cfg).contains("rejects risky candidates 30 of 30 times"));
    }

    #[test]
    fn accepting_risky_code_never_loosens_the_defaults() {
        let cfg = PolicyConfig::default();
        let mut s = PolicyState::new();
        for k in 0..50 {
            s.observe(&cfg, Outcome::Accepted, 0.97, DAY + k);
            s.observe(&cfg, Outcome::Rejected, 0.02, DAY + k);
        }
        let p = s.policy(&cfg);
        assert_eq!((p.temperature, p.risk_penalty, p.block_threshold), (0.8, 1.0, 0.9));
    }

    #[test]
    fn old_behaviour_decays_by_event_time() {
        let cfg = PolicyConfig::default();
        let mut s = PolicyState::new();
        for k in 0..20 {
            s.observe(&cfg, Outcome::Rejected, 0.95, DAY + k);
        }
        let before = s.policy(&cfg).temperature;
        // Ten half-lives later, safe acceptances and a risky acceptance.
        s.observe(&cfg, Outcome::Accepted, 0.95, DAY + 140 * DAY);
        let after = s.policy(&cfg).temperature;
        assert!(after > before + 0.2, "{before} -> {after}");
    }

    #[test]
    fn low_trust_tightens_the_threshold_within_bounds() {
        let cfg = PolicyConfig::default();
        let s = PolicyState { trust: 0.0, ..PolicyState::new() };
        assert_eq!(s.policy(&cfg).block_threshold, 0.5);
        let s = PolicyState { trust: f32::NAN, ..PolicyState::new() };
        assert_eq!(s.policy(&cfg).trust, 1.0);
    }

    #[test]
    fn label_semantics() {
        let w = LabelWeights::default();
        assert_eq!(label(Outcome::ReportedInsecure, false, &w), Some((true, 1.0)));
        assert_eq!(label(Outcome::ReportedSafe, true, &w), Some((false, 1.0)));
        assert_eq!(label(Outcome::Accepted, true, &w), Some((false, 0.05)));
        assert_eq!(label(Outcome::Rejected, true, &w), Some((true, 0.2)));
        assert_eq!(label(Outcome::Rejected, false, &w), None);
        let none = LabelWeights { accepted: 0.0, ..w };
        assert_eq!(label(Outcome::Accepted, false, &none), None);
    }
}
