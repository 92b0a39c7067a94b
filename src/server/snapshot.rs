//! Snapshots: the learner's state (model, policies with their usage counts, API keys' usage,
//! the population statistics and the log clock) with the sequence number of the last event
//! applied.
//!
//! Format 2 starts with a marker (`GRSNAP02` as a u64) that no format-1 snapshot can start
//! with (format 1 starts with its sequence number, far below it), so a blob decodes as format 2
//! when the marker is there and as format 1 otherwise. Format-1 snapshots (before the abuse
//! monitor) still load: their policies get empty usage counts and label budgets, which fill up
//! again from the impressions logged after them.

use super::state::Shared;
use crate::abuse::{Population, Usage};
use crate::model::{Model, read_model, write_model};
use crate::policy::{Counts, PolicyState};
use crate::store::{Store, codec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

const MARKER_V2: u64 = u64::from_le_bytes(*b"GRSNAP02");

/// What a snapshot holds (format 2).
#[derive(Serialize, Deserialize)]
pub struct Snapshot {
    pub marker: u64,
    pub seq: i64,
    /// The model in the model file format (magic, versions, checksum).
    pub model: Vec<u8>,
    /// By user key, in key order.
    pub policies: Vec<(u64, PolicyState)>,
    /// Usage of API keys, by key id.
    pub keys: Vec<(String, Usage)>,
    pub population: Population,
    /// Event time of the last event applied.
    pub log_ms: i64,
}

/// Format 1, before usage monitoring.
#[derive(Deserialize)]
struct SnapshotV1 {
    seq: i64,
    model: Vec<u8>,
    policies: Vec<(u64, PolicyStateV1)>,
}

#[derive(Deserialize)]
struct PolicyStateV1 {
    rejected_risky: f32,
    accepted_risky: f32,
    rejected_safe: f32,
    accepted_safe: f32,
    last_ms: i64,
    counts: Counts,
    trust: f32,
}

impl From<PolicyStateV1> for PolicyState {
    fn from(p: PolicyStateV1) -> PolicyState {
        PolicyState {
            rejected_risky: p.rejected_risky,
            accepted_risky: p.accepted_risky,
            rejected_safe: p.rejected_safe,
            accepted_safe: p.accepted_safe,
            last_ms: p.last_ms,
            counts: p.counts,
            trust: p.trust,
            ..PolicyState::default()
        }
    }
}

/// A decoded snapshot.
#[derive(Debug)]
pub struct Restored {
    pub seq: i64,
    pub model: Model,
    pub policies: BTreeMap<u64, PolicyState>,
    pub keys: BTreeMap<String, Usage>,
    pub population: Population,
    pub log_ms: i64,
}

/// Encodes the current state as a snapshot blob.
///
/// # Errors
/// Encoding failed.
pub fn snapshot_blob(shared: &Shared) -> Result<(i64, Vec<u8>), String> {
    let model = shared.model.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    let policies = shared.policies.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    let keys = shared.key_usage.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    let seq = shared.applied_seq.load(Ordering::Acquire);
    let mut m = Vec::new();
    write_model(&model, &mut m).map_err(|e| e.to_string())?;
    let snap = Snapshot {
        marker: MARKER_V2,
        seq,
        model: m,
        policies: policies.iter().map(|(k, v)| (*k, v.clone())).collect(),
        keys: keys.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        population: shared.population(),
        log_ms: shared.log_ms.load(Ordering::Acquire),
    };
    Ok((seq, codec::encode(&snap)?))
}

/// Decodes a snapshot blob of either format.
///
/// # Errors
/// The blob or its model does not decode (wrong extractor version included).
pub fn decode_snapshot(blob: &[u8]) -> Result<Restored, String> {
    match codec::decode::<Snapshot>(blob) {
        Ok(s) if s.marker == MARKER_V2 => Ok(Restored {
            seq: s.seq,
            model: read_model(&s.model[..]).map_err(|e| e.to_string())?,
            policies: s.policies.into_iter().collect(),
            keys: s.keys.into_iter().collect(),
            population: s.population,
            log_ms: s.log_ms,
        }),
        _ => {
            let s: SnapshotV1 = codec::decode(blob)?;
            Ok(Restored {
                seq: s.seq,
                model: read_model(&s.model[..]).map_err(|e| e.to_string())?,
                policies: s.policies.into_iter().map(|(k, p)| (k, p.into())).collect(),
                keys: BTreeMap::new(),
                population: Population::reference(),
                log_ms: 0,
            })
        }
    }
}

/// Loads the newest snapshot that decodes; `None` when there is none.
pub async fn load_newest_snapshot(store: &dyn Store) -> Option<Restored> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Hyper;

    #[derive(Serialize)]
    struct OldSnapshot {
        seq: i64,
        model: Vec<u8>,
        policies: Vec<(u64, OldPolicy)>,
    }

    #[derive(Serialize)]
    struct OldPolicy {
        rejected_risky: f32,
        accepted_risky: f32,
        rejected_safe: f32,
        accepted_safe: f32,
        last_ms: i64,
        counts: Counts,
        trust: f32,
    }

    #[test]
    fn format_1_snapshots_still_load() {
        let mut m = Vec::new();
        write_model(&Model::new(Hyper { bits: 10, ..Hyper::default() }, "v1"), &mut m).expect("model");
        let counts = Counts { rejected: 3, rejected_risky: 2, ..Counts::default() };
        let old = OldSnapshot {
            seq: 1_234_567,
            model: m,
            policies: vec![(
                7,
                OldPolicy {
                    rejected_risky: 2.0,
                    accepted_risky: 0.0,
                    rejected_safe: 1.0,
                    accepted_safe: 0.0,
                    last_ms: 99,
                    counts,
                    trust: 1.0,
                },
            )],
        };
        let r = decode_snapshot(&codec::encode(&old).expect("encode")).expect("decodes as format 1");
        assert_eq!(r.seq, 1_234_567);
        assert_eq!(r.model.version, "v1");
        let p = &r.policies[&7];
        assert_eq!((p.rejected_risky, p.last_ms, p.counts), (2.0, 99, counts));
        assert_eq!(p.usage, Usage::default());
        assert!(r.keys.is_empty());
    }
}
