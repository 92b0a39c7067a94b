//! The learner: the single writer of weights and policies.
//!
//! It runs on its own OS thread (learning is CPU work, kept off the async workers), tails the
//! event log by sequence number and applies every event in log order: feedback updates the
//! model (label semantics of `policy::label`) and the user's policy; resets and erasures
//! drop a policy; key events update the key ring. Handlers read weights and policies under
//! read locks that the learner takes for writing only briefly, once per batch of events.
//! Snapshots record the state with the sequence number of the last event applied.
//!
//! Impressions feed the abuse monitor (`crate::abuse`): each one updates its user's and its
//! key's usage counts at the event's time, and every `abuse_population_every_s` of event time
//! the population statistics are recomputed from the users' counts. All of it is a function of
//! the log, so replicas and replays agree. Feedback teaches the model through the poisoning
//! guard (`crate::abuse::guard`): weighted by the sender's trust, within their label budget,
//! above the floors of high and critical rules.

use super::ratelimit::Tier;
use super::snapshot::take_snapshot;
use super::state::Shared;
use crate::abuse::guard::{self, Learned, Source};
use crate::abuse::{Population, RequestSignal, Usage};
use crate::events::{Event, EventBody, FeedbackEvent, ModelActivation, Outcome};
use crate::model::Model;
use crate::policy::{PolicyState, label, user_key, verdict_label};
use crate::store::Store;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::Notify;

/// Events read and applied per batch.
const BATCH: u32 = 2000;
/// Events applied per write-lock acquisition.
const LOCK_CHUNK: usize = 64;

/// Applies a batch of events to the shared state. Pure with respect to I/O: returns the ids
/// of keys created in the batch, which the caller loads from the store (their hashes are not
/// in the log).
pub fn apply(shared: &Shared, events: &[Event]) -> Vec<String> {
    let mut created = Vec::new();
    // Locks are taken per chunk, so a reader never waits for more than a few dozen updates.
    for chunk in events.chunks(LOCK_CHUNK) {
        apply_chunk(shared, chunk, &mut created);
    }
    apply_rules(shared, events);
    if let Some(last) = events.last() {
        shared.applied_seq.store(last.seq, Ordering::Release);
    }
    created
}

fn apply_chunk(shared: &Shared, events: &[Event], created: &mut Vec<String>) {
    let cfg = shared.policy_cfg;
    let mut model = shared.model.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut policies = shared.policies.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut pop = shared.population();
    for e in events {
        shared.log_ms.fetch_max(e.at_ms, Ordering::AcqRel);
        if pop.is_due(&shared.abuse_cfg, e.at_ms) {
            pop = population(shared, &policies, e.at_ms);
            if let Ok(mut p) = shared.population.write() {
                *p = pop;
            }
        }
        match &e.body {
            EventBody::Feedback(f) => {
                let budget = f.user_id.as_ref().map(|u| policies.entry(user_key(u)).or_default());
                learn_online(shared, &mut model, f, budget, &pop, e.at_ms);
                if let Some(user) = &f.user_id {
                    let p = policies.entry(user_key(user)).or_default();
                    p.observe(&cfg, f.outcome, f64::from(f.risk), e.at_ms);
                    let t = p.policy(&cfg).temperature;
                    shared.figures.temperature(user, t, cfg.default_temperature, e.at_ms);
                }
                match f.outcome {
                    Outcome::Accepted => shared.figures.decided(true, f64::from(f.risk) >= cfg.risky_at),
                    Outcome::Rejected => shared.figures.decided(false, f64::from(f.risk) >= cfg.risky_at),
                    Outcome::ReportedInsecure | Outcome::ReportedSafe => {}
                }
                metrics::counter!("guardrank_feedback_applied_total", "outcome" => f.outcome.name()).increment(1);
            }
            EventBody::Impression(i) => {
                let signal = RequestSignal::of(i);
                let acfg = &shared.abuse_cfg;
                let st = policies.entry(user_key(&i.user_id)).or_default();
                st.usage.observe(acfg, &signal, e.at_ms);
                st.trust = crate::abuse::trust(acfg, &pop, &st.usage, e.at_ms) as f32;
                // A key's usage counts only the requests of users in the full tier: a plugin
                // backend's key serves many users, and one whose own trust has fallen is
                // already limited by its user tier; counting its flood against the key would
                // throttle every other user of that backend.
                if shared.tiers.of(f64::from(st.trust)) == Tier::Full
                    && let Ok(mut keys) = shared.key_usage.write()
                {
                    keys.entry(i.key_id.clone()).or_default().observe(acfg, &signal, e.at_ms);
                }
            }
            // A reset also clears trust, usage counts and the label budget: a wrongly flagged
            // user starts afresh.
            EventBody::PolicyReset { user_id } | EventBody::UserErased { user_id } => {
                policies.remove(&user_key(user_id));
                shared.figures.forget(user_id);
            }
            EventBody::KeyRevoked { key_id } => shared.keys.revoke(key_id),
            EventBody::KeyCreated { key_id, .. } => created.push(key_id.clone()),
            // A reviewer's verdict: the strongest label after the corpus, applied as it stands
            // (no trust weighting, budget or rule floor: those guard against plugin users).
            EventBody::ReviewVerdict(v) => {
                if let Some((insecure, w)) = verdict_label(v, &shared.label_weights) {
                    model.update(&v.features, insecure, w);
                }
                metrics::counter!("guardrank_verdicts_applied_total", "verdict" => v.verdict.name()).increment(1);
            }
            // Switched by the caller (`apply_log`), which needs the store; rule events by
            // `apply_rules`, once per batch.
            EventBody::ModelActivated(_) | EventBody::RulePatched { .. } | EventBody::RuleDisabled { .. } => {}
        }
    }
}

/// Applies the rule events of a batch to the rule set and, if there were any, builds the new
/// pack once and swaps it in (requests in flight keep the pack they loaded).
fn apply_rules(shared: &Shared, events: &[Event]) {
    let rule_events: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e.body, EventBody::RulePatched { .. } | EventBody::RuleDisabled { .. }))
        .collect();
    if rule_events.is_empty() {
        return;
    }
    let set = {
        let mut set = shared.rule_set.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        for e in &rule_events {
            set.apply(e);
        }
        set.clone()
    };
    match set.pack() {
        Ok(pack) => {
            shared.protected.store(Arc::new(shared.protected.load().for_rules(pack.rules())));
            shared.rules.store(Arc::new(pack));
            let seq = rule_events.last().map_or(0, |e| e.seq);
            tracing::info!(seq, patches = set.patches().len(), "rule pack rebuilt");
        }
        Err(e) => tracing::error!(error = %e, "rule pack not rebuilt; the previous one stays"),
    }
}

/// Recomputes the population statistics at event time `at_ms`, and the trust gauges.
fn population(shared: &Shared, policies: &BTreeMap<u64, PolicyState>, at_ms: i64) -> Population {
    let stride = crate::abuse::sample_stride(policies.len());
    let cfg = &shared.abuse_cfg;
    let pop = Population::compute(cfg, policies.values().step_by(stride).map(|p| &p.usage), at_ms);
    // Trust gauges, estimated from the same sample (each sampled user stands for `stride`).
    let mut by_tier = [0u64; 3];
    let mut reduced = 0u64;
    let weight = stride as u64;
    for p in policies.values().step_by(stride).filter(|p| p.usage.requests > 0.0) {
        let t = crate::abuse::trust(cfg, &pop, &p.usage, at_ms);
        reduced += weight * u64::from(t < 1.0);
        by_tier[shared.tiers.of(t) as usize] += weight;
    }
    metrics::gauge!("guardrank_users_reduced_trust").set(reduced as f64);
    for (tier, n) in [Tier::Full, Tier::Reduced, Tier::Minimal].into_iter().zip(by_tier) {
        metrics::gauge!("guardrank_users_by_trust_tier", "tier" => tier.name()).set(n as f64);
    }
    metrics::gauge!("guardrank_abuse_population_users").set(f64::from(pop.users));
    pop
}

/// One feedback event's lesson for the model, online: label semantics of `policy::label`,
/// weighted by the sender's trust at the event's time, within their label budget, through
/// the poisoning guard. Feedback of an erased user (no user id) keeps its weight.
fn learn_online(
    shared: &Shared,
    model: &mut Model,
    f: &FeedbackEvent,
    sender: Option<&mut PolicyState>,
    pop: &Population,
    at_ms: i64,
) {
    let Some((insecure, w)) = label(f.outcome, f.flagged, &shared.label_weights) else { return };
    let g = &shared.guard_cfg;
    let w = match sender {
        Some(st) => {
            let granted = guard::sender_weight(&shared.abuse_cfg, g, pop, &st.usage, &mut st.labels, at_ms, w);
            if granted < w {
                metrics::counter!("guardrank_label_weight_withheld_total").increment(1);
            }
            granted
        }
        None => w,
    };
    guarded(shared, model, f, insecure, w);
}

fn guarded(shared: &Shared, model: &mut Model, f: &FeedbackEvent, insecure: bool, w: f32) {
    // Reviewer verdicts (the review queue) should call `guard::learn` with `Source::Reviewer`.
    let r = guard::learn(model, &f.features, insecure, w, &shared.protected.load(), &shared.guard_cfg, Source::User);
    if r == Learned::Refused {
        metrics::counter!("guardrank_labels_refused_total").increment(1);
    }
}

/// A feedback event re-applied to a newly activated model: weighted by the sender's trust as
/// the learner knows it now (budgets are not re-spent), through the guard.
fn relearn(shared: &Shared, model: &mut Model, f: &FeedbackEvent, usage: Option<Usage>) {
    let Some((insecure, w)) = label(f.outcome, f.flagged, &shared.label_weights) else { return };
    let trust = usage.map_or(1.0, |u| shared.trust(&u));
    guarded(shared, model, f, insecure, w * shared.guard_cfg.trust_factor(trust));
}

/// Applies events like [`apply`], and at each `ModelActivated` event switches to the version
/// it names (see [`switch_model`]). Returns the ids of keys created.
pub async fn apply_log(shared: &Shared, store: &dyn Store, events: &[Event]) -> Vec<String> {
    let mut created = Vec::new();
    let mut start = 0;
    for (k, e) in events.iter().enumerate() {
        if let EventBody::ModelActivated(a) = &e.body {
            created.extend(apply(shared, &events[start..k]));
            switch_model(shared, store, a, e.seq).await;
            shared.applied_seq.store(e.seq, Ordering::Release);
            start = k + 1;
        }
    }
    created.extend(apply(shared, &events[start..]));
    created
}

/// Switches the served model to the version an activation names: loads it from the registry,
/// re-applies the feedback logged after its training cut-off and before the activation (the
/// online lessons it has not seen), then swaps it in under the write lock (a pointer move:
/// requests are not paused). A version that cannot be loaded leaves the current model in place.
async fn switch_model(shared: &Shared, store: &dyn Store, a: &ModelActivation, activation_seq: i64) {
    let mut model = match crate::registry::load(store, &a.version).await {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(version = %a.version, seq = activation_seq, error = %e, "model not switched");
            metrics::counter!("guardrank_model_switch_failures_total").increment(1);
            return;
        }
    };
    let bits = shared.model.read().unwrap_or_else(std::sync::PoisonError::into_inner).hyper().bits;
    if model.hyper().bits != bits {
        tracing::error!(version = %a.version, bits = model.hyper().bits, serving_bits = bits,
            "model not switched: its weight space differs from the served one");
        metrics::counter!("guardrank_model_switch_failures_total").increment(1);
        return;
    }
    let mut after = a.trained_through_seq;
    let mut relearned = 0u64;
    'tail: loop {
        let events = match store.read_events(after, BATCH).await {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the log to re-apply feedback; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let n = events.len();
        for e in events {
            if e.seq >= activation_seq {
                break 'tail;
            }
            let lesson = match &e.body {
                EventBody::Feedback(f) => {
                    let usage = f
                        .user_id
                        .as_ref()
                        .and_then(|u| shared.policies.read().ok().and_then(|p| p.get(&user_key(u)).map(|s| s.usage)));
                    relearn(shared, &mut model, f, usage);
                    true
                }
                EventBody::ReviewVerdict(v) => {
                    if let Some((insecure, w)) = verdict_label(v, &shared.label_weights) {
                        model.update(&v.features, insecure, w);
                    }
                    true
                }
                _ => false,
            };
            if lesson {
                relearned += 1;
            }
            after = e.seq;
        }
        if n < BATCH as usize {
            break;
        }
    }
    let version = model.version.clone();
    let old = {
        let mut guard = shared.model.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::replace(&mut *guard, model)
    };
    tracing::info!(from = %old.version, to = %version, reason = a.reason.name(), seq = activation_seq, relearned,
        "model switched");
    metrics::gauge!("guardrank_model_info", "version" => old.version.clone()).set(0.0);
    metrics::gauge!("guardrank_model_info", "version" => version).set(1.0);
    metrics::counter!("guardrank_model_switches_total").increment(1);
    drop(old);
}

/// Runs the learner until `stop` is notified and the log is drained. `caught_up_to` is the
/// log's last sequence number at start: readiness waits for it.
pub fn spawn(
    shared: Arc<Shared>,
    store: Arc<dyn Store>,
    committed: Arc<Notify>,
    stop: Arc<Notify>,
    rt: tokio::runtime::Handle,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("guardrank-learner".into())
        .spawn(move || rt.block_on(run(shared, store, committed, stop)))
}

async fn run(shared: Arc<Shared>, store: Arc<dyn Store>, committed: Arc<Notify>, stop: Arc<Notify>) {
    let mut since_snapshot = 0u64;
    let mut stopping = false;
    loop {
        let after = shared.applied_seq.load(Ordering::Acquire);
        let events = match store.read_events(after, BATCH).await {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(error = %e, "learner cannot read the log; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if !events.is_empty() {
            let n = events.len() as u64;
            let s = Arc::clone(&shared);
            // Apply on this dedicated thread: block_in_place is not needed, the runtime
            // driving this future is the learner's own.
            let created = apply_log(&s, store.as_ref(), &events).await;
            // Keys created elsewhere (the CLI, another replica) become usable here.
            for id in created {
                match store.find_key(&id).await {
                    Ok(Some(rec)) => shared.keys.upsert(&rec),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, key_id = %id, "cannot load a new key"),
                }
            }
            since_snapshot += n;
            if shared.snapshot_every > 0 && since_snapshot >= shared.snapshot_every {
                take_snapshot(&shared, store.as_ref(), super::now_ms()).await;
                since_snapshot = 0;
            }
            if let Ok(last) = store.last_seq().await {
                metrics::gauge!("guardrank_learner_lag_events")
                    .set((last - shared.applied_seq.load(Ordering::Acquire)) as f64);
            }
            if n == u64::from(BATCH) {
                continue;
            }
        }
        let caught_up = shared.applied_seq.load(Ordering::Acquire) >= shared.replay_target.load(Ordering::Acquire);
        if caught_up && !shared.ready.swap(true, Ordering::AcqRel) {
            tracing::info!(seq = shared.applied_seq.load(Ordering::Acquire), "replay finished; ready");
        }
        if stopping {
            if since_snapshot > 0 || shared.snapshot_every == 0 {
                take_snapshot(&shared, store.as_ref(), super::now_ms()).await;
            }
            return;
        }
        tokio::select! {
            () = committed.notified() => {}
            () = stop.notified() => stopping = true,
            () = tokio::time::sleep(shared.tail_interval) => {}
        }
    }
}

#[cfg(test)]
#[path = "learner_tests.rs"]
mod tests;
