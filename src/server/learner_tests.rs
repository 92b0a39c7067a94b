//! The learner's abuse monitor and poisoning guard, driven by events with chosen times.

use super::apply;
use crate::abuse::guard::{GuardConfig, Protected};
use crate::abuse::{AbuseConfig, Population};
use crate::events::{CandidateRecord, Event, EventBody, FeedbackEvent, Impression, Outcome};
use crate::features::Features;
use crate::model::{Hyper, Model};
use crate::policy::{LabelWeights, PolicyConfig, PolicyState, user_key};
use crate::server::auth::KeyRing;
use crate::server::ratelimit::{Tier, Tiers};
use crate::server::state::Shared;
use std::collections::BTreeMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

const T0: i64 = 1_795_305_600_000;
const SEC: i64 = 1000;
const HOUR: i64 = 3_600_000;

fn shared(guard: GuardConfig) -> Shared {
    Shared {
        model: RwLock::new(Model::new(Hyper { bits: 12, ..Hyper::default() }, "t")),
        policies: RwLock::new(BTreeMap::new()),
        applied_seq: AtomicI64::new(0),
        replay_target: AtomicI64::new(0),
        ready: AtomicBool::new(true),
        policy_cfg: PolicyConfig::default(),
        label_weights: LabelWeights::default(),
        keys: KeyRing::new(None, None).expect("key ring"),
        snapshot_every: 0,
        snapshots_kept: 1,
        tail_interval: Duration::from_millis(100),
        abuse_cfg: AbuseConfig::default(),
        guard_cfg: guard,
        tiers: Tiers { reduced_below: 0.8, minimal_below: 0.4, reduced_factor: 0.25, minimal_factor: 0.05 },
        protected: arc_swap::ArcSwap::from_pointee(Protected::default()),
        key_usage: RwLock::new(BTreeMap::new()),
        population: RwLock::new(Population::reference()),
        log_ms: AtomicI64::new(0),
        rules: arc_swap::ArcSwap::from_pointee(crate::rules::RulePack::builtin().expect("built-in rules")),
        rule_set: RwLock::new(crate::server::patches::RuleSet::new(
            crate::rules::builtin_specs().expect("built-in rule specs"),
        )),
        figures: crate::server::figures::Figures::default(),
    }
}

fn features(seed: u32) -> Features {
    let idx: Vec<u32> =
        (0..8).map(|k| (seed * 31 + k * 7) % 4096).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    Features { val: vec![1.0; idx.len()], idx, offset: 0.0 }
}

fn impression(user: &str, n: u32, prompt_risk: f32, risk: f32, seed: u32) -> EventBody {
    EventBody::Impression(Impression {
        request_id: format!("r{user}{n}"),
        user_id: user.into(),
        key_id: "k1".into(),
        model_version: "t".into(),
        language: Some("python".into()),
        prompt_risk,
        candidates: vec![CandidateRecord {
            id: "0".into(),
            risk,
            flagged: risk > 0.5,
            features: features(seed),
            rules: Vec::new(),
            text: None,
        }],
    })
}

fn feedback(user: &str, seed: u32, outcome: Outcome) -> EventBody {
    EventBody::Feedback(FeedbackEvent {
        request_id: "r".into(),
        candidate_id: "0".into(),
        outcome,
        user_id: Some(user.into()),
        risk: 0.2,
        flagged: false,
        features: features(seed),
        model_version: "t".into(),
    })
}

struct Log {
    events: Vec<Event>,
}

impl Log {
    fn push(&mut self, at_ms: i64, body: EventBody) {
        let seq = self.events.len() as i64 + 1;
        self.events.push(Event { seq, at_ms, body });
    }
}

fn state(s: &Shared, user: &str) -> PolicyState {
    s.policies.read().expect("lock").get(&user_key(user)).cloned().unwrap_or_default()
}

/// An exploit-seeking flood (rephrased: the same shape) and a security developer's day.
fn flood_and_work() -> Log {
    let mut log = Log { events: Vec::new() };
    for n in 0..150 {
        log.push(T0 + i64::from(n) * 5 * 60 * SEC, impression("dev", n, 0.0, if n % 5 == 0 { 0.95 } else { 0.1 }, n));
        log.push(T0 + i64::from(n) * SEC, impression("mallory", n, 0.95, 0.97, if n % 4 == 0 { 1000 + n } else { 7 }));
    }
    log.events.sort_by_key(|e| e.at_ms);
    for (k, e) in log.events.iter_mut().enumerate() {
        e.seq = k as i64 + 1;
    }
    log
}

#[test]
fn flooding_exploit_prompts_lowers_trust_and_the_threshold_and_recovers_in_event_time() {
    let s = shared(GuardConfig::default());
    let mut log = flood_and_work();
    apply(&s, &log.events);
    let cfg = PolicyConfig::default();
    let mallory = state(&s, "mallory");
    assert_eq!(s.trust(&mallory.usage), 0.0);
    let lowered = PolicyState { trust: s.trust(&mallory.usage) as f32, ..mallory.clone() };
    assert_eq!(lowered.policy(&cfg).block_threshold, 0.5);
    assert_eq!(s.tiers.of(s.trust(&mallory.usage)), Tier::Minimal);
    let dev = state(&s, "dev");
    assert_eq!(s.trust(&dev.usage), 1.0);
    assert_eq!(PolicyState { trust: 1.0, ..dev }.policy(&cfg).block_threshold, 0.9);
    // Mallory stops. Two days later (the log's clock moves with anyone's events) trust is back.
    let later = T0 + 60 * HOUR;
    log.push(later, impression("dev", 999, 0.0, 0.1, 5));
    apply(&s, &log.events[log.events.len() - 1..]);
    assert_eq!(s.log_ms.load(Ordering::Acquire), later);
    assert_eq!(s.trust(&state(&s, "mallory").usage), 1.0);
}

#[test]
fn replaying_the_same_log_in_other_batches_gives_the_same_state() {
    let log = flood_and_work();
    let a = shared(GuardConfig::default());
    apply(&a, &log.events);
    let b = shared(GuardConfig::default());
    for part in log.events.chunks(37) {
        apply(&b, part);
    }
    assert_eq!(*a.policies.read().expect("lock"), *b.policies.read().expect("lock"));
    assert_eq!(a.population(), b.population());
    assert_eq!(*a.key_usage.read().expect("lock"), *b.key_usage.read().expect("lock"));
}

#[test]
fn labels_are_weighted_by_trust_and_capped_per_user_and_window() {
    let s = shared(GuardConfig { budget: 5.0, ..GuardConfig::default() });
    let mut log = flood_and_work();
    let t = T0 + 13 * HOUR;
    for k in 0..20 {
        log.push(t + k, feedback("mallory", 3000 + k as u32, Outcome::ReportedSafe));
    }
    for k in 0..20 {
        log.push(t + 100 + k, feedback("dev", 4000, Outcome::ReportedSafe));
    }
    apply(&s, &log.events[..300]);
    let examples = |s: &Shared| s.model.read().expect("lock").examples;
    assert_eq!(examples(&s), 0);
    apply(&s, &log.events[300..320]);
    assert_eq!(examples(&s), 0, "a user without trust teaches nothing");
    apply(&s, &log.events[320..]);
    assert_eq!(examples(&s), 5, "the budget of 5 reports per window");
    // A new window renews the budget.
    log.push(t + 25 * HOUR, feedback("dev", 4000, Outcome::ReportedSafe));
    apply(&s, &log.events[log.events.len() - 1..]);
    assert_eq!(examples(&s), 6);
}

/// The offline retraining job's label gate weighs every label of a log exactly as the online
/// learner did: the same senders lose their labels (no trust), the same budgets run out.
#[test]
fn the_offline_label_gate_weighs_labels_as_the_learner_did() {
    let guard = GuardConfig { budget: 5.0, ..GuardConfig::default() };
    let s = shared(guard);
    let mut log = flood_and_work();
    let t = T0 + 13 * HOUR;
    for k in 0..20 {
        log.push(t + 2 * k, feedback("mallory", 3000 + k as u32, Outcome::ReportedSafe));
        log.push(t + 2 * k + 1, feedback("dev", 4000, Outcome::ReportedInsecure));
    }
    log.push(t + 100, EventBody::PolicyReset { user_id: "dev".into() });
    log.push(t + 101, feedback("dev", 4001, Outcome::ReportedSafe));
    log.push(t + 30 * HOUR, feedback("dev", 4002, Outcome::ReportedSafe));
    apply(&s, &log.events);

    let mut gate = crate::abuse::gate::LabelGate::new(AbuseConfig::default(), guard);
    let weights = LabelWeights::default();
    let mut granted: BTreeMap<&str, f32> = BTreeMap::new();
    let mut kept = 0;
    for e in &log.events {
        gate.observe(e);
        if let EventBody::Feedback(f) = &e.body
            && let Some((_, w)) = crate::policy::label(f.outcome, f.flagged, &weights)
        {
            let user = f.user_id.as_deref().expect("user");
            let g = gate.weigh(Some(user), w, e.at_ms);
            kept += u64::from(g > 0.0);
            *granted.entry(user).or_default() += g;
        }
    }
    assert_eq!(granted.get("mallory"), Some(&0.0), "no trust, no weight: {granted:?}");
    // Online, the model learned one example per label that kept weight.
    assert_eq!(s.model.read().expect("lock").examples, kept);
    // dev: twenty reports against a budget of 5, then the reset renews it, then a new window.
    let w = |o| crate::policy::label(o, false, &weights).expect("a label").1;
    let want = (20.0 * w(Outcome::ReportedInsecure)).min(5.0) + 2.0 * w(Outcome::ReportedSafe);
    let dev = granted.get("dev").copied().unwrap_or_default();
    assert!((dev - want).abs() < 1e-4, "dev kept {dev}, expected {want}");
    assert_eq!(state(&s, "dev").labels, gate.budget_of("dev"), "the same budget state online and offline");
}
