//! Shared state of a running server.

use super::auth::KeyRing;
use super::figures::Figures;
use super::ratelimit::Limiter;
use super::settings::Settings;
use super::writer::WriterHandle;
use crate::model::Model;
use crate::policy::{LabelWeights, PolicyConfig, PolicyState};
use crate::rules::RulePack;
use crate::store::Store;
use arc_swap::ArcSwap;
use metrics_exporter_prometheus::PrometheusHandle;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64};
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
    /// Live figures for the console (counters, temperature movers, samples).
    pub figures: Figures,
}

/// Everything a handler needs.
#[derive(Debug)]
pub struct AppState {
    pub shared: Arc<Shared>,
    pub settings: Settings,
    pub store: Arc<dyn Store>,
    pub rules: ArcSwap<RulePack>,
    pub prompt_rules: Arc<RulePack>,
    /// Woken after appends, so the learner applies them at once.
    pub committed: Arc<tokio::sync::Notify>,
    pub writer: WriterHandle,
    pub key_limiter: Limiter,
    pub user_limiter: Limiter,
    pub metrics: PrometheusHandle,
    /// No model file could be loaded: scoring with rule priors alone.
    pub degraded: bool,
    pub started: Instant,
}

impl AppState {
    /// The policy state of a user (defaults for one never seen).
    #[must_use]
    pub fn policy_state(&self, user_id: &str) -> PolicyState {
        let key = crate::policy::user_key(user_id);
        self.shared.policies.read().ok().and_then(|m| m.get(&key).cloned()).unwrap_or_default()
    }

    /// Seconds since start, as the rate limiters' clock.
    #[must_use]
    pub fn clock_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}
