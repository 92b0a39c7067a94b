//! The learner: the single writer of weights and policies.
//!
//! It runs on its own OS thread (learning is CPU work, kept off the async workers), tails the
//! event log by sequence number and applies every event in log order: feedback updates the
//! model (label semantics of `policy::label`) and the user's policy; resets and erasures
//! drop a policy; key events update the key ring. Handlers read weights and policies under
//! read locks that the learner takes for writing only briefly, once per batch of events.
//! Snapshots record the state with the sequence number of the last event applied.

use super::state::Shared;
use crate::events::{Event, EventBody, FeedbackEvent, ModelActivation, Outcome};
use crate::model::{Model, read_model, write_model};
use crate::policy::{LabelWeights, PolicyState, label, user_key};
use crate::store::{Store, codec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::Notify;

/// Events read and applied per batch.
const BATCH: u32 = 2000;
/// Events applied per write-lock acquisition.
const LOCK_CHUNK: usize = 64;

/// What a snapshot holds.
#[derive(Serialize, Deserialize)]
pub struct Snapshot {
    pub seq: i64,
    /// The model in the model file format (magic, versions, checksum).
    pub model: Vec<u8>,
    /// By user key, in key order.
    pub policies: Vec<(u64, PolicyState)>,
}

/// Applies a batch of events to the shared state. Pure with respect to I/O: returns the ids
/// of keys created in the batch, which the caller loads from the store (their hashes are not
/// in the log).
pub fn apply(shared: &Shared, events: &[Event]) -> Vec<String> {
    let mut created = Vec::new();
    // Locks are taken per chunk, so a reader never waits for more than a few dozen updates.
    for chunk in events.chunks(LOCK_CHUNK) {
        apply_chunk(shared, chunk, &mut created);
    }
    if let Some(last) = events.last() {
        shared.applied_seq.store(last.seq, Ordering::Release);
    }
    created
}

fn apply_chunk(shared: &Shared, events: &[Event], created: &mut Vec<String>) {
    let cfg = shared.policy_cfg;
    let weights = shared.label_weights;
    let mut model = shared.model.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut policies = shared.policies.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    for e in events {
        match &e.body {
            EventBody::Feedback(f) => {
                learn(&mut model, f, &weights);
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
            EventBody::PolicyReset { user_id } | EventBody::UserErased { user_id } => {
                policies.remove(&user_key(user_id));
                shared.figures.forget(user_id);
            }
            EventBody::KeyRevoked { key_id } => shared.keys.revoke(key_id),
            EventBody::KeyCreated { key_id, .. } => created.push(key_id.clone()),
            // Switched by the caller (`apply_log`), which needs the store.
            EventBody::Impression(_) | EventBody::ModelActivated(_) => {}
        }
    }
}

/// One feedback event's lesson for the model (label semantics of `policy::label`).
fn learn(model: &mut Model, f: &FeedbackEvent, weights: &LabelWeights) {
    if let Some((insecure, w)) = label(f.outcome, f.flagged, weights) {
        model.update(&f.features, insecure, w);
    }
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
    let weights = shared.label_weights;
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
            if let EventBody::Feedback(f) = &e.body {
                learn(&mut model, f, &weights);
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

/// Encodes the current state as a snapshot blob.
///
/// # Errors
/// Encoding failed.
pub fn snapshot_blob(shared: &Shared) -> Result<(i64, Vec<u8>), String> {
    let model = shared.model.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    let policies = shared.policies.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    let seq = shared.applied_seq.load(Ordering::Acquire);
    let mut m = Vec::new();
    write_model(&model, &mut m).map_err(|e| e.to_string())?;
    let ps: Vec<(u64, PolicyState)> = policies.iter().map(|(k, v)| (*k, v.clone())).collect();
    let snap = Snapshot { seq, model: m, policies: ps };
    Ok((seq, codec::encode(&snap)?))
}

/// Decodes a snapshot blob into a model and policies.
///
/// # Errors
/// The blob or its model does not decode (wrong extractor version included).
pub fn decode_snapshot(blob: &[u8]) -> Result<(i64, Model, BTreeMap<u64, PolicyState>), String> {
    let snap: Snapshot = codec::decode(blob)?;
    let model = read_model(&snap.model[..]).map_err(|e| e.to_string())?;
    Ok((snap.seq, model, snap.policies.into_iter().collect()))
}

/// Loads the newest snapshot that decodes; `None` when there is none.
pub async fn load_newest_snapshot(store: &dyn Store) -> Option<(i64, Model, BTreeMap<u64, PolicyState>)> {
    let list = match store.list_snapshots().await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list snapshots; replaying the whole log");
            return None;
        }
    };
    for info in list {
        match store.load_snapshot(info.seq).await {
            Ok(Some(blob)) => match tokio::task::spawn_blocking(move || decode_snapshot(&blob)).await {
                Ok(Ok(s)) => return Some(s),
                Ok(Err(e)) => tracing::warn!(seq = info.seq, error = %e, "snapshot unusable; trying an older one"),
                Err(e) => tracing::warn!(error = %e, "snapshot decoding failed"),
            },
            Ok(None) => {}
            Err(e) => tracing::warn!(seq = info.seq, error = %e, "cannot load snapshot"),
        }
    }
    None
}

/// Writes a snapshot of the current state (off the async workers for the encoding).
pub async fn take_snapshot(shared: &Arc<Shared>, store: &dyn Store, now_ms: i64) {
    let s = Arc::clone(shared);
    match tokio::task::spawn_blocking(move || snapshot_blob(&s)).await {
        Ok(Ok((seq, blob))) => {
            let bytes = blob.len();
            match store.save_snapshot(seq, now_ms, blob, shared.snapshots_kept).await {
                Ok(()) => tracing::info!(seq, bytes, "snapshot saved"),
                Err(e) => tracing::warn!(error = %e, "snapshot not saved"),
            }
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "snapshot not encoded"),
        Err(e) => tracing::warn!(error = %e, "snapshot task failed"),
    }
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
