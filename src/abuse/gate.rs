//! The label gate of the offline retraining job: the same trust weighting and label budgets
//! the online learner applies to feedback, replayed from the event log.
//!
//! Trust is a function of the log alone (usage counts decayed in event time, compared with the
//! population at the log's clock), so the job rebuilds it by walking the log in order as the
//! learner does: impressions update the sender's usage, resets and erasures forget the user,
//! the population is recomputed every `population_every_s` of event time over the same sample,
//! and each label is weighed by [`sender_weight`] at its own event time. A label the server
//! refused to learn from (a distrusted or over-budget sender) therefore does not come back
//! through the batch fit.
//!
//! Not replayed: the rule floors (a batch fit has no per-label step to hold them at), and keys'
//! usage (it sets rate-limit tiers, never label weights).

use super::guard::{GuardConfig, LabelBudget, sender_weight};
use super::{AbuseConfig, Population, RequestSignal, Usage, sample_stride};
use crate::events::{Event, EventBody};
use crate::policy::user_key;
use std::collections::BTreeMap;

#[derive(Debug, Default, Clone)]
struct Sender {
    usage: Usage,
    labels: LabelBudget,
}

/// Replays usage and budgets over the log; weighs each label as the learner did.
#[derive(Debug)]
pub struct LabelGate {
    abuse: AbuseConfig,
    guard: GuardConfig,
    users: BTreeMap<u64, Sender>,
    pop: Population,
    /// Label weight asked for and granted, in all.
    pub wanted: f64,
    pub granted: f64,
}

impl LabelGate {
    #[must_use]
    pub fn new(abuse: AbuseConfig, guard: GuardConfig) -> LabelGate {
        LabelGate { abuse, guard, users: BTreeMap::new(), pop: Population::reference(), wanted: 0.0, granted: 0.0 }
    }

    /// Takes in one event of the log, in sequence order, before its label (if any) is weighed.
    pub fn observe(&mut self, e: &Event) {
        if self.pop.is_due(&self.abuse, e.at_ms) {
            let stride = sample_stride(self.users.len());
            self.pop = Population::compute(&self.abuse, self.users.values().step_by(stride).map(|s| &s.usage), e.at_ms);
        }
        match &e.body {
            EventBody::Impression(i) => {
                let signal = RequestSignal::of(i);
                self.users.entry(user_key(&i.user_id)).or_default().usage.observe(&self.abuse, &signal, e.at_ms);
            }
            EventBody::PolicyReset { user_id } | EventBody::UserErased { user_id } => {
                self.users.remove(&user_key(user_id));
            }
            _ => {}
        }
    }

    /// The weight a label of `want` from `user` keeps at event time `at_ms` (the budget is
    /// spent). Labels without a sender (erased users) keep their weight, as online.
    pub fn weigh(&mut self, user: Option<&str>, want: f32, at_ms: i64) -> f32 {
        let w = match user {
            Some(u) => {
                let s = self.users.entry(user_key(u)).or_default();
                sender_weight(&self.abuse, &self.guard, &self.pop, &s.usage, &mut s.labels, at_ms, want)
            }
            None => want,
        };
        self.wanted += f64::from(want);
        self.granted += f64::from(w);
        w
    }

    /// A sender's budget state now (default for a sender never seen).
    #[must_use]
    pub fn budget_of(&self, user: &str) -> LabelBudget {
        self.users.get(&user_key(user)).map(|s| s.labels).unwrap_or_default()
    }
}
