//! Shared state of a running server.

use super::auth::KeyRing;
use super::figures::Figures;
use super::patches::RuleSet;
use super::ratelimit::TieredLimiter;
use super::review::ReviewSink;
use super::settings::Settings;
use super::writer::WriterHandle;
use crate::abuse::guard::{GuardConfig, Protected};
use crate::abuse::{AbuseConfig, Assessment, Population, Usage};
use crate::model::Model;
use crate::policy::{LabelWeights, PolicyConfig, PolicyState};
use crate::rules::RulePack;
use crate::store::Store;
use arc_swap::ArcSwap;
use metrics_exporter_prometheus::PrometheusHandle;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// What the learner writes and handlers read.
#[derive(Debug)]
pub struct Shared {
    pub model: RwLock<Model>,
    /// Policies by [`crate::policy::user_key`]; a B-tree: compact for a million users, and its
    /// order makes snapshots and checksums deterministic.
    pub policies: RwLock<BTreeMap<u64, PolicyState>>,
    /// Sequence number of the last event applied.
    pub applied_seq: AtomicI64,
    /// The log's last sequence number at start; ready once applied.
    pub replay_target: AtomicI64,
    pub ready: AtomicBool,
    pub policy_cfg: PolicyConfig,
    pub label_weights: LabelWeights,
    pub keys: KeyRing,
    pub snapshot_every: u64,
    pub snapshots_kept: u32,
    pub tail_interval: Duration,
    pub abuse_cfg: AbuseConfig,
    pub guard_cfg: GuardConfig,
    /// Rate-limit tiers by trust (for the metrics of users per tier).
    pub tiers: super::ratelimit::Tiers,
    /// Coordinates of high and critical rules (poisoning floors).
    pub protected: ArcSwap<Protected>,
    /// Usage of API keys, by key id (few: one per plugin backend).
    pub key_usage: RwLock<BTreeMap<String, Usage>>,
    /// Population statistics of the abuse monitor, recomputed by the learner in event time.
    pub population: RwLock<Population>,
    /// The log's clock: the event time of the last event applied. Trust is read at this time,
    /// never at the reader's wall clock, so replicas at the same sequence number agree.
    pub log_ms: AtomicI64,
    /// The active rule pack (built-in rules with the run-time patches), swapped by the learner.
    pub rules: ArcSwap<RulePack>,
    /// The patches the pack was built from (the learner writes it, `GET /admin/rules` reads).
    pub rule_set: RwLock<RuleSet>,
    /// Live figures for the console (counters, temperature movers, samples).
    pub figures: Figures,
}

impl Shared {
    /// The log's clock (ms since the epoch).
    #[must_use]
    pub fn log_ms(&self) -> i64 {
        self.log_ms.load(Ordering::Acquire)
    }

    /// The current population statistics.
    #[must_use]
    pub fn population(&self) -> Population {
        self.population.read().map_or_else(|_| Population::reference(), |p| *p)
    }

    /// The abuse monitor's assessment of a usage at the log's clock.
    #[must_use]
    pub fn assess(&self, usage: &Usage) -> Assessment {
        let at = self.log_ms.load(Ordering::Acquire).max(usage.at_ms);
        crate::abuse::assess(&self.abuse_cfg, &self.population(), usage, at)
    }

    /// Trust of a usage at the log's clock (1 for none).
    #[must_use]
    pub fn trust(&self, usage: &Usage) -> f64 {
        if usage.requests <= 0.0 { 1.0 } else { self.assess(usage).trust }
    }

    /// Trust of an API key at the log's clock.
    #[must_use]
    pub fn key_trust(&self, key_id: &str) -> f64 {
        let usage = self.key_usage.read().ok().and_then(|m| m.get(key_id).copied());
        usage.map_or(1.0, |u| self.key_assess(&u).trust)
    }

    /// A key's assessment: shares only, no rate term (a plugin backend serves many users, so
    /// its volume says nothing about abuse; its rate limit handles volume).
    #[must_use]
    pub fn key_assess(&self, usage: &Usage) -> Assessment {
        let at = self.log_ms.load(Ordering::Acquire).max(usage.at_ms);
        crate::abuse::assess_shares(&self.abuse_cfg, &self.population(), usage, at)
    }
}

/// Everything a handler needs.
#[derive(Debug)]
pub struct AppState {
    pub shared: Arc<Shared>,
    pub settings: Settings,
    pub store: Arc<dyn Store>,
    /// The prompt rules and the learned prompt model.
    pub prompt: crate::prompt::PromptScorer,
    /// Woken after appends, so the learner applies them at once.
    pub committed: Arc<tokio::sync::Notify>,
    pub writer: WriterHandle,
    /// Where rank and feedback hand review items, without waiting.
    pub review: ReviewSink,
    pub key_limiter: TieredLimiter,
    pub user_limiter: TieredLimiter,
    pub metrics: PrometheusHandle,
    /// No model file could be loaded: scoring with rule priors alone.
    pub degraded: bool,
    pub started: Instant,
    /// Users this replica queued an anomaly review item for, and when (user key → ms).
    pub anomalies: std::sync::Mutex<std::collections::HashMap<u64, i64>>,
}

impl AppState {
    /// The policy state of a user (defaults for one never seen), its trust as of the log's
    /// clock (so it recovers while the user is idle).
    #[must_use]
    pub fn policy_state(&self, user_id: &str) -> PolicyState {
        let key = crate::policy::user_key(user_id);
        let mut s: PolicyState =
            self.shared.policies.read().ok().and_then(|m| m.get(&key).cloned()).unwrap_or_default();
        s.trust = self.shared.trust(&s.usage) as f32;
        s
    }

    /// Seconds since start, as the rate limiters' clock.
    #[must_use]
    pub fn clock_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}
