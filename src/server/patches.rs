//! Hot rule patches: the built-in rules plus the `RulePatched` and `RuleDisabled` events of the
//! log, in log order, make the active rule pack. The learner applies rule events like any
//! other (so every replica, and every replay, builds the same pack) and swaps the pack in; a
//! restart first restores the rule events a snapshot does not hold ([`RuleSet::restore`]).

use crate::events::{Event, EventBody};
use crate::rules::{CompiledRule, RuleError, RulePack, RuleSpec};
use std::collections::BTreeMap;

/// A rule id's run-time override.
#[derive(Debug, Clone, PartialEq)]
pub struct Patch {
    /// The rule that replaces (or adds to) the built-in ones; `None`: the id is disabled.
    pub spec: Option<RuleSpec>,
    pub seq: i64,
    pub at_ms: i64,
    pub key_id: String,
}

/// The built-in rules and the run-time patches over them.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    builtin: Vec<RuleSpec>,
    patches: BTreeMap<String, Patch>,
}

impl RuleSet {
    #[must_use]
    pub fn new(builtin: Vec<RuleSpec>) -> RuleSet {
        RuleSet { builtin, patches: BTreeMap::new() }
    }

    /// Applies a rule event; `true` when the event was one (the pack must be rebuilt).
    pub fn apply(&mut self, e: &Event) -> bool {
        match &e.body {
            EventBody::RulePatched { spec_json, key_id } => match serde_json::from_str::<RuleSpec>(spec_json) {
                Ok(spec) => {
                    let patch = Patch { spec: Some(spec.clone()), seq: e.seq, at_ms: e.at_ms, key_id: key_id.clone() };
                    self.patches.insert(spec.id, patch);
                    true
                }
                Err(err) => {
                    tracing::error!(seq = e.seq, error = %err, "rule patch does not parse; ignored");
                    false
                }
            },
            EventBody::RuleDisabled { rule_id, key_id } => {
                let patch = Patch { spec: None, seq: e.seq, at_ms: e.at_ms, key_id: key_id.clone() };
                self.patches.insert(rule_id.clone(), patch);
                true
            }
            _ => false,
        }
    }

    /// The patch of a rule id, if any.
    #[must_use]
    pub fn patch(&self, id: &str) -> Option<&Patch> {
        self.patches.get(id)
    }

    /// Every patch, by rule id.
    #[must_use]
    pub fn patches(&self) -> &BTreeMap<String, Patch> {
        &self.patches
    }

    /// Whether a rule id is built in.
    #[must_use]
    pub fn is_builtin(&self, id: &str) -> bool {
        self.builtin.iter().any(|r| r.id == id)
    }

    /// The active rules: built-in ones not overridden, in file order, then the patched ones in
    /// the order of their patches.
    #[must_use]
    pub fn active_specs(&self) -> Vec<RuleSpec> {
        let mut out: Vec<RuleSpec> =
            self.builtin.iter().filter(|r| !self.patches.contains_key(&r.id)).cloned().collect();
        let mut patched: Vec<&Patch> = self.patches.values().filter(|p| p.spec.is_some()).collect();
        patched.sort_by_key(|p| p.seq);
        out.extend(patched.into_iter().filter_map(|p| p.spec.clone()));
        out
    }

    /// Builds the active pack. A patched rule that no longer compiles (it was checked when it
    /// was posted, so only a changed engine could do that) is left out with an error logged.
    ///
    /// # Errors
    /// A built-in rule does not compile (ruled out by the tests).
    pub fn pack(&self) -> Result<RulePack, RuleError> {
        let mut rules = Vec::new();
        for spec in self.active_specs() {
            let id = spec.id.clone();
            let builtin = self.is_builtin(&id) && !self.patches.contains_key(&id);
            match CompiledRule::compile(spec) {
                Ok(r) => rules.push(r),
                Err(e) if builtin => return Err(e),
                Err(e) => tracing::error!(rule = %id, error = %e, "patched rule does not compile; left out"),
            }
        }
        RulePack::new(rules)
    }

    /// Restores the rule events up to a snapshot (read with `Store::rule_events`).
    pub fn restore(&mut self, events: &[Event]) {
        for e in events {
            self.apply(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Examples, Mode, Severity, Target};

    fn spec(id: &str, pattern: &str) -> RuleSpec {
        RuleSpec {
            id: id.into(),
            languages: vec!["python".into()],
            cwe: "CWE-327".into(),
            severity: Severity::High,
            message: "m".into(),
            patterns: vec![pattern.into()],
            unless: vec![],
            target: Target::Masked,
            mode: Mode::Enforce,
            examples: Examples::default(),
        }
    }

    fn ev(seq: i64, body: EventBody) -> Event {
        Event { seq, at_ms: seq * 10, body }
    }

    #[test]
    fn patches_replace_add_and_disable_in_log_order() {
        let mut set = RuleSet::new(vec![spec("b.one", "one\\("), spec("b.two", "two\\(")]);
        let patched = |s: &RuleSpec| EventBody::RulePatched {
            spec_json: serde_json::to_string(s).expect("json"),
            key_id: "k".into(),
        };
        assert!(set.apply(&ev(1, patched(&spec("b.one", "uno\\(")))));
        assert!(set.apply(&ev(2, patched(&spec("p.new", "nuevo\\(")))));
        assert!(set.apply(&ev(3, EventBody::RuleDisabled { rule_id: "b.two".into(), key_id: "k".into() })));
        assert!(!set.apply(&ev(4, EventBody::PolicyReset { user_id: "u".into() })));
        let ids: Vec<String> = set.active_specs().into_iter().map(|s| s.id).collect();
        assert_eq!(ids, ["b.one", "p.new"]);
        assert_eq!(set.active_specs()[0].patterns, ["uno\\("]);
        assert_eq!(set.pack().expect("pack").rules().len(), 2);
        // Re-enabled by a later patch.
        assert!(set.apply(&ev(5, patched(&spec("b.two", "dos\\(")))));
        assert_eq!(set.active_specs().len(), 3);
        assert_eq!(set.patch("b.two").map(|p| p.seq), Some(5));
    }
}
