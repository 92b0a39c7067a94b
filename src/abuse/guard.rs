//! Poisoning defence: any plugin key can send labels, so no single source may steer the model.
//!
//! Three bounds, applied by the learner to every label from user feedback:
//! 1. **Trust.** A label's weight is multiplied by the sender's trust at the event's time;
//!    below `min_trust` it is 0 (a user under an anomaly contributes nothing).
//! 2. **Budget.** A user's label weight is capped per window of event time (`budget` per
//!    `window_hours`), *per user*, not per feature: a per-(user, feature) ledger would grow with
//!    every distinct feature a user touches, which a million users cannot afford. Since each
//!    label moves each of its features once, the per-user cap also bounds what one user can do to
//!    any one feature in a window.
//! 3. **Floors.** High and critical rules' coordinates (rule id and severity) never fall below
//!    `rule_floor` (log-odds added to the severity prior the features carry as an offset, so a
//!    floor of 0 means "never below the prior"), and a label saying *safe* is refused outright
//!    when it would bring an example that such a rule flagged below `floor_risk` (by moving the
//!    other features: n-grams, API calls). Only reviewer verdicts ([`Source::Reviewer`]) pass
//!    these floors.
//!
//! A coordinated group of N users can still move a protected pattern's risk down to
//! `floor_risk`, never under it: at the default (the default block threshold) it stays blocked.

use crate::features::{Extractor, Features};
use crate::model::Model;
use crate::rules::{CompiledRule, Severity};
use serde::{Deserialize, Serialize};

/// Constants of the poisoning defence (settings `label_*`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GuardConfig {
    /// Labels from users with a lower trust count nothing.
    pub min_trust: f64,
    /// Label weight one user may contribute per window.
    pub budget: f32,
    pub window_hours: f64,
    /// Floor of the learned weight of high and critical rules' coordinates (log-odds).
    pub rule_floor: f32,
    /// User labels never bring an example flagged by a high or critical rule below this risk.
    pub floor_risk: f64,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig { min_trust: 0.5, budget: 50.0, window_hours: 24.0, rule_floor: 0.0, floor_risk: 0.9 }
    }
}

impl GuardConfig {
    /// The factor a label's weight gets from its sender's trust.
    #[must_use]
    pub fn trust_factor(&self, trust: f64) -> f32 {
        if !trust.is_finite() || trust < self.min_trust { 0.0 } else { trust.min(1.0) as f32 }
    }

    /// The margin (log-odds) of `floor_risk`, a hair above so rounding keeps it blocked.
    #[must_use]
    pub fn floor_margin(&self) -> f64 {
        let p = self.floor_risk.clamp(1e-6, 1.0 - 1e-6);
        (p / (1.0 - p)).ln() + 1e-3
    }
}

/// A user's label weight spent in the current window (8 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LabelBudget {
    /// Index of the window (event time / window length).
    pub window: u32,
    pub spent: f32,
}

impl LabelBudget {
    /// Grants up to `want` of the budget at event time `at_ms`; returns what was granted.
    pub fn grant(&mut self, cfg: &GuardConfig, at_ms: i64, want: f32) -> f32 {
        let len_ms = (cfg.window_hours * 3_600_000.0).max(1.0);
        let window = u32::try_from((at_ms.max(0) as f64 / len_ms) as i64).unwrap_or(u32::MAX);
        if window != self.window {
            *self = LabelBudget { window, spent: 0.0 };
        }
        let granted = want.clamp(0.0, (cfg.budget - self.spent).max(0.0));
        self.spent += granted;
        granted
    }
}

/// The weight a sender's label keeps: `want` times the factor of the sender's trust (from
/// `usage` against the population at event time `at_ms`), within the sender's budget, which
/// it spends. The online learner and the offline retraining job both weigh labels with this.
pub fn sender_weight(
    abuse: &crate::abuse::AbuseConfig,
    cfg: &GuardConfig,
    pop: &crate::abuse::Population,
    usage: &crate::abuse::Usage,
    budget: &mut LabelBudget,
    at_ms: i64,
    want: f32,
) -> f32 {
    let trust = crate::abuse::trust(abuse, pop, usage, at_ms);
    budget.grant(cfg, at_ms, want * cfg.trust_factor(trust))
}

/// Who a label comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Plugin feedback: floors apply.
    User,
    /// A reviewer's verdict (admin): the strongest label, floors do not apply. The review
    /// queue's verdict events should learn through this.
    Reviewer,
}

/// The coordinates of high and critical rules, sorted, with their floor.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Protected {
    idx: Vec<u32>,
    floor: f32,
    bits: u8,
}

impl Protected {
    /// The rule-id coordinates of the enforced high and critical rules of `rules` and the two
    /// severity coordinates, in a weight space of `2^bits`.
    #[must_use]
    pub fn from_rules(rules: &[CompiledRule], bits: u8, floor: f32) -> Protected {
        let x = Extractor::new(bits);
        let mut idx: Vec<u32> = rules
            .iter()
            .filter(|r| matches!(r.spec.severity, Severity::High | Severity::Critical))
            .map(|r| x.rule_index(&r.spec.id))
            .chain([x.severity_index(Severity::High), x.severity_index(Severity::Critical)])
            .collect();
        idx.sort_unstable();
        idx.dedup();
        Protected { idx, floor, bits }
    }

    /// The same floor over another rule pack (after a rule is patched or disabled at run
    /// time, so a rule added as high or critical is protected at once).
    #[must_use]
    pub fn for_rules(&self, rules: &[CompiledRule]) -> Protected {
        Protected::from_rules(rules, self.bits, self.floor)
    }

    /// Whether `x` carries a protected coordinate (a high or critical rule hit).
    #[must_use]
    pub fn touches(&self, x: &Features) -> bool {
        x.idx.iter().any(|i| self.idx.binary_search(i).is_ok())
    }

    /// Number of protected coordinates.
    #[must_use]
    pub fn len(&self) -> usize {
        self.idx.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.idx.is_empty()
    }
}

/// What [`learn`] did with a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    Applied,
    /// Zero weight (no trust, no budget left).
    Skipped,
    /// Refused: it would have brought a protected example under the floor.
    Refused,
}

/// Applies one label to the model within the floors of `source`.
pub fn learn(
    model: &mut Model,
    x: &Features,
    insecure: bool,
    weight: f32,
    protected: &Protected,
    cfg: &GuardConfig,
    source: Source,
) -> Learned {
    if !(weight.is_finite() && weight > 0.0) {
        return Learned::Skipped;
    }
    let guarded = source == Source::User && protected.touches(x);
    if !guarded {
        model.update(x, insecure, weight);
        return Learned::Applied;
    }
    let saved = if insecure { Vec::new() } else { model.save(&x.idx) };
    let before = model.margin(x);
    model.update(x, insecure, weight);
    for &i in &x.idx {
        if protected.idx.binary_search(&i).is_ok() {
            model.raise_to(i, protected.floor);
        }
    }
    let after = model.margin(x);
    if !insecure && after < before && after < cfg.floor_margin() {
        model.restore(&x.idx, &saved);
        return Learned::Refused;
    }
    Learned::Applied
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Hyper;

    fn x(idx: &[u32], offset: f32) -> Features {
        Features { idx: idx.to_vec(), val: vec![1.0; idx.len()], offset }
    }

    #[test]
    fn budget_caps_each_window_and_renews() {
        let cfg = GuardConfig { budget: 3.0, window_hours: 1.0, ..GuardConfig::default() };
        let mut b = LabelBudget::default();
        let hour = 3_600_000;
        let got: f32 = (0..10).map(|k| b.grant(&cfg, 5 * hour + k, 1.0)).sum();
        assert_eq!(got, 3.0);
        assert_eq!(b.grant(&cfg, 6 * hour, 2.5), 2.5);
        assert_eq!(b.grant(&cfg, 6 * hour + 1, 2.5), 0.5);
    }

    #[test]
    fn low_trust_contributes_nothing_and_trust_scales_the_rest() {
        let cfg = GuardConfig::default();
        assert_eq!(cfg.trust_factor(0.2), 0.0);
        assert_eq!(cfg.trust_factor(0.75), 0.75);
        assert_eq!(cfg.trust_factor(f64::NAN), 0.0);
    }

    #[test]
    fn safe_labels_never_take_a_protected_example_under_the_floor_but_reviewers_can() {
        let hyper = Hyper { bits: 10, ..Hyper::default() };
        let prot = Protected { idx: vec![7], floor: 0.0, bits: 10 };
        let cfg = GuardConfig::default();
        // A high rule's prior (3.25) plus a little learned weight: risk about 0.97.
        let ex = x(&[3, 7, 9], 3.25);
        let mut m = Model::new(hyper, "t");
        let mut refused = 0;
        for _ in 0..2000 {
            if learn(&mut m, &ex, false, 1.0, &prot, &cfg, Source::User) == Learned::Refused {
                refused += 1;
            }
        }
        assert!(refused > 0);
        assert!(m.score(&ex) >= 0.9, "{}", m.score(&ex));
        assert!(m.weight(7) >= 0.0);
        for _ in 0..200 {
            learn(&mut m, &ex, false, 1.0, &prot, &cfg, Source::Reviewer);
        }
        assert!(m.score(&ex) < 0.9, "reviewers pass the floor: {}", m.score(&ex));
    }

    #[test]
    fn unprotected_examples_learn_freely() {
        let hyper = Hyper { bits: 10, ..Hyper::default() };
        let prot = Protected { idx: vec![7], floor: 0.0, bits: 10 };
        let mut m = Model::new(hyper, "t");
        let ex = x(&[3, 9], 3.25);
        for _ in 0..500 {
            assert_eq!(learn(&mut m, &ex, false, 1.0, &prot, &GuardConfig::default(), Source::User), Learned::Applied);
        }
        assert!(m.score(&ex) < 0.5);
    }
}
