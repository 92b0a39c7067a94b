//! Live figures for the reviewer console: `GET /admin/figures`.
//!
//! Counters are process-local atomics (like the Prometheus counters): rank requests,
//! candidates and blocked candidates counted by the rank handler; accepted and rejected
//! candidates, risky and safe, counted by the learner as it applies feedback (risky = served
//! risk at or above `risky_at`). A sampler task records them every [`SAMPLE_EVERY`] into a
//! ring of [`SAMPLES_KEPT`], which the console draws as sparklines.
//!
//! Users are keyed by a hash in the policy map, so the users whose temperature moved furthest
//! from the default are tracked by the learner as it applies their feedback: a top-k of
//! [`MOVERS_KEPT`] by user id, updated in O(k) per event, cleared of a user on policy reset
//! or erasure. Scanning a million policies per poll would be needless work for a list of ten.

use super::admin::rfc3339;
use super::error::ApiError;
use super::extract::Admin;
use super::state::AppState;
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How often the sampler records the counters.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Samples kept: one hour at [`SAMPLE_EVERY`].
pub const SAMPLES_KEPT: usize = 720;
/// Users kept in the temperature top-k.
pub const MOVERS_KEPT: usize = 10;

/// The counters at one instant (cumulative since the process started).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Sample {
    /// Milliseconds since the epoch.
    pub t_ms: i64,
    pub rank_requests: u64,
    pub candidates: u64,
    pub blocked: u64,
    pub accepted_risky: u64,
    pub rejected_risky: u64,
    pub accepted_safe: u64,
    pub rejected_safe: u64,
}

/// A user whose temperature moved away from the default.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Mover {
    pub user_id: String,
    pub temperature: f64,
    /// `temperature − default_temperature` (negative: feedback only lowers it).
    pub change: f64,
    /// Event time of the feedback that set it (RFC 3339).
    pub at: String,
}

#[derive(Debug, Clone)]
struct MoverEntry {
    user_id: String,
    temperature: f64,
    at_ms: i64,
}

/// The figures' state, shared by the rank handler, the learner and the sampler.
#[derive(Debug, Default)]
pub struct Figures {
    rank_requests: AtomicU64,
    candidates: AtomicU64,
    blocked: AtomicU64,
    accepted_risky: AtomicU64,
    rejected_risky: AtomicU64,
    accepted_safe: AtomicU64,
    rejected_safe: AtomicU64,
    movers: Mutex<Vec<MoverEntry>>,
    samples: Mutex<VecDeque<Sample>>,
}

impl Figures {
    /// Counts one rank request.
    pub fn ranked(&self, candidates: u64, blocked: u64) {
        self.rank_requests.fetch_add(1, Ordering::Relaxed);
        self.candidates.fetch_add(candidates, Ordering::Relaxed);
        self.blocked.fetch_add(blocked, Ordering::Relaxed);
    }

    /// Counts one accepted or rejected candidate (other outcomes are not decisions).
    pub fn decided(&self, accepted: bool, risky: bool) {
        let c = match (accepted, risky) {
            (true, true) => &self.accepted_risky,
            (false, true) => &self.rejected_risky,
            (true, false) => &self.accepted_safe,
            (false, false) => &self.rejected_safe,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a user's temperature after an event at `at_ms`; keeps the [`MOVERS_KEPT`]
    /// users furthest from `default`.
    pub fn temperature(&self, user_id: &str, temperature: f64, default: f64, at_ms: i64) {
        let mut m = self.movers.lock().unwrap_or_else(PoisonError::into_inner);
        let dist = (default - temperature).abs();
        let moved = dist > 1e-9;
        if let Some(i) = m.iter().position(|e| e.user_id == user_id) {
            if moved {
                m[i].temperature = temperature;
                m[i].at_ms = at_ms;
            } else {
                m.swap_remove(i);
            }
            return;
        }
        if !moved {
            return;
        }
        let entry = MoverEntry { user_id: user_id.to_string(), temperature, at_ms };
        if m.len() < MOVERS_KEPT {
            m.push(entry);
            return;
        }
        let nearest = m
            .iter()
            .enumerate()
            .min_by(|a, b| (default - a.1.temperature).abs().total_cmp(&(default - b.1.temperature).abs()))
            .map(|(i, e)| (i, (default - e.temperature).abs()));
        if let Some((i, d)) = nearest
            && dist > d
        {
            m[i] = entry;
        }
    }

    /// Forgets a user (policy reset or erasure).
    pub fn forget(&self, user_id: &str) {
        self.movers.lock().unwrap_or_else(PoisonError::into_inner).retain(|e| e.user_id != user_id);
    }

    /// The tracked users, furthest from `default` first.
    #[must_use]
    pub fn movers(&self, default: f64) -> Vec<Mover> {
        let mut v: Vec<Mover> = self
            .movers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|e| Mover {
                user_id: e.user_id.clone(),
                temperature: e.temperature,
                change: e.temperature - default,
                at: rfc3339(e.at_ms),
            })
            .collect();
        v.sort_by(|a, b| a.change.total_cmp(&b.change).then_with(|| a.user_id.cmp(&b.user_id)));
        v
    }

    /// The counters now.
    #[must_use]
    pub fn now(&self, t_ms: i64) -> Sample {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Sample {
            t_ms,
            rank_requests: get(&self.rank_requests),
            candidates: get(&self.candidates),
            blocked: get(&self.blocked),
            accepted_risky: get(&self.accepted_risky),
            rejected_risky: get(&self.rejected_risky),
            accepted_safe: get(&self.accepted_safe),
            rejected_safe: get(&self.rejected_safe),
        }
    }

    /// Records the counters now into the ring.
    pub fn sample(&self, t_ms: i64) {
        let s = self.now(t_ms);
        let mut ring = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        if ring.len() == SAMPLES_KEPT {
            ring.pop_front();
        }
        ring.push_back(s);
    }

    /// The recorded samples, oldest first.
    #[must_use]
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap_or_else(PoisonError::into_inner).iter().copied().collect()
    }
}

/// Samples the counters every [`SAMPLE_EVERY`] until aborted.
pub async fn sample_loop(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tick.tick().await;
        state.shared.figures.sample(super::now_ms());
    }
}

/// `a / (a + b)`, or `None` without any decision.
fn rate(a: u64, b: u64) -> Option<f64> {
    let n = a.saturating_add(b);
    (n > 0).then(|| a as f64 / n as f64)
}

/// The answer of `GET /admin/figures`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FiguresResponse {
    /// The model version this replica serves.
    pub model_version: String,
    /// Seconds since this process started; counters count from then.
    pub uptime_s: f64,
    /// Users with a learned policy.
    pub users: usize,
    /// The counters now.
    pub totals: Sample,
    /// Blocked candidates / scored candidates (null before any).
    pub block_rate: Option<f64>,
    /// Accepted / (accepted + rejected) among risky candidates (served risk ≥ `risky_at`).
    pub acceptance_rate_risky: Option<f64>,
    /// The same among safe candidates.
    pub acceptance_rate_safe: Option<f64>,
    pub risky_at: f64,
    pub default_temperature: f64,
    /// Users whose temperature moved furthest from the default, furthest first.
    pub temperature_movers: Vec<Mover>,
    /// Seconds between samples.
    pub sample_every_s: u64,
    /// Cumulative counters over time, oldest first (the last hour at most).
    pub samples: Vec<Sample>,
}

/// `GET /admin/figures`: live counters and their recent history, as JSON.
#[utoipa::path(get, path = "/admin/figures", responses((status = 200, body = FiguresResponse), (status = 401), (status = 403)),
    security(("bearer" = [])))]
pub async fn figures(State(state): State<Arc<AppState>>, Admin(_c): Admin) -> Result<Json<FiguresResponse>, ApiError> {
    let f = &state.shared.figures;
    let cfg = &state.shared.policy_cfg;
    let totals = f.now(super::now_ms());
    let model_version = state.shared.model.read().map(|m| m.version.clone()).unwrap_or_default();
    let users = state.shared.policies.read().map(|p| p.len()).unwrap_or(0);
    Ok(Json(FiguresResponse {
        model_version,
        uptime_s: state.started.elapsed().as_secs_f64(),
        users,
        block_rate: rate(totals.blocked, totals.candidates.saturating_sub(totals.blocked)),
        acceptance_rate_risky: rate(totals.accepted_risky, totals.rejected_risky),
        acceptance_rate_safe: rate(totals.accepted_safe, totals.rejected_safe),
        totals,
        risky_at: cfg.risky_at,
        default_temperature: cfg.default_temperature,
        temperature_movers: f.movers(cfg.default_temperature),
        sample_every_s: SAMPLE_EVERY.as_secs(),
        samples: f.samples(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn movers_keep_the_users_furthest_from_the_default() {
        let f = Figures::default();
        for i in 0..(MOVERS_KEPT + 5) {
            // user i at 0.8 - 0.01 i: the last ones moved most.
            f.temperature(&format!("u{i}"), 0.8 - 0.01 * i as f64, 0.8, 1_000);
        }
        let m = f.movers(0.8);
        assert_eq!(m.len(), MOVERS_KEPT);
        assert_eq!(m[0].user_id, format!("u{}", MOVERS_KEPT + 4));
        assert!((m[0].change + 0.14).abs() < 1e-9);
        assert!(m.iter().all(|x| x.user_id != "u0" && x.user_id != "u4"), "{m:?}");
        // Back at the default: dropped; reset: forgotten.
        f.temperature("u14", 0.8, 0.8, 2_000);
        f.forget("u13");
        let m = f.movers(0.8);
        assert!(m.iter().all(|x| x.user_id != "u14" && x.user_id != "u13"), "{m:?}");
        assert_eq!(m.len(), MOVERS_KEPT - 2);
    }

    #[test]
    fn rates_and_the_sample_ring() {
        let f = Figures::default();
        f.ranked(3, 1);
        f.ranked(1, 0);
        f.decided(true, true);
        f.decided(false, true);
        f.decided(false, true);
        f.decided(true, false);
        let s = f.now(5);
        assert_eq!((s.rank_requests, s.candidates, s.blocked), (2, 4, 1));
        assert_eq!(rate(s.accepted_risky, s.rejected_risky), Some(1.0 / 3.0));
        assert_eq!(rate(s.accepted_safe, s.rejected_safe), Some(1.0));
        assert_eq!(rate(0, 0), None);
        for t in 0..(SAMPLES_KEPT as i64 + 3) {
            f.sample(t);
        }
        let ring = f.samples();
        assert_eq!(ring.len(), SAMPLES_KEPT);
        assert_eq!(ring[0].t_ms, 3);
    }
}
