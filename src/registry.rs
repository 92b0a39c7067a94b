//! The model registry: versioned model files with what the retraining job measured, kept in
//! the store (so every replica can load any of them), and which version is live, decided by
//! `ModelActivated` events in the log (so every replica and every restart agrees).
//!
//! Publishing, activating and rolling back are the same act: append an activation event naming
//! a stored version. Pruning keeps the newest few versions and never the live one.

use crate::events::{ActivationReason, EventBody, ModelActivation};
use crate::model::{Model, read_model, write_model};
use crate::store::{ModelRecord, Store, StoreError};

/// How many versions the registry keeps besides the live one.
pub const KEEP_DEFAULT: usize = 5;

/// A registry failure.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("no model version {0:?} in the registry")]
    NotFound(String),
    #[error("model version {0:?} does not load: {1}")]
    Unusable(String, String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One version as listed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Entry {
    pub version: String,
    pub created_at_ms: i64,
    pub trained_through_seq: i64,
    pub bytes: u64,
    pub live: bool,
    /// What the retraining job measured (JSON; `null` if unreadable).
    pub metrics: serde_json::Value,
}

/// The registry's versions (newest first) and the live activation, if any.
///
/// # Errors
/// The store fails.
pub async fn list(store: &dyn Store) -> Result<(Vec<Entry>, Option<(i64, ModelActivation)>), RegistryError> {
    let live = store.last_activation().await?;
    let live_version = live.as_ref().map(|(_, a)| a.version.as_str());
    let entries = store
        .list_models()
        .await?
        .into_iter()
        .map(|r| Entry {
            live: Some(r.version.as_str()) == live_version,
            metrics: serde_json::from_str(&r.metrics_json).unwrap_or(serde_json::Value::Null),
            version: r.version,
            created_at_ms: r.created_at_ms,
            trained_through_seq: r.trained_through_seq,
            bytes: r.bytes,
        })
        .collect();
    Ok((entries, live))
}

/// Loads and decodes a stored version.
///
/// # Errors
/// No such version, or its file does not decode (corrupt, other extractor version).
pub async fn load(store: &dyn Store, version: &str) -> Result<Model, RegistryError> {
    let bytes = store.load_model(version).await?.ok_or_else(|| RegistryError::NotFound(version.into()))?;
    let v = version.to_string();
    tokio::task::spawn_blocking(move || read_model(&bytes[..]).map_err(|e| RegistryError::Unusable(v, e.to_string())))
        .await
        .map_err(|e| RegistryError::Store(StoreError::Unavailable(format!("model decoding task failed: {e}"))))?
}

/// Makes a stored version live: appends its activation event. Returns the event's seq.
///
/// # Errors
/// No such version, or the store fails.
pub async fn activate(
    store: &dyn Store,
    version: &str,
    reason: ActivationReason,
    actor: &str,
    at_ms: i64,
) -> Result<i64, RegistryError> {
    let record = store
        .list_models()
        .await?
        .into_iter()
        .find(|r| r.version == version)
        .ok_or_else(|| RegistryError::NotFound(version.into()))?;
    let event = EventBody::ModelActivated(ModelActivation {
        version: version.into(),
        trained_through_seq: record.trained_through_seq,
        reason,
        actor: actor.into(),
    });
    let seqs = store.append(at_ms, vec![event]).await?;
    let seq = seqs
        .first()
        .copied()
        .ok_or_else(|| RegistryError::Store(StoreError::Invalid("the append returned no seq".into())))?;
    // The audit trail of who made a version live; best effort, the activation stands.
    let entry = crate::store::NewAudit {
        at_ms,
        key_id: actor.into(),
        action: format!("model.{}", reason.name()),
        target: version.into(),
        details_json: serde_json::json!({ "seq": seq }).to_string(),
    };
    if let Err(e) = store.add_audit(&entry).await {
        tracing::warn!(error = %e, "audit entry of a model activation not recorded");
    }
    Ok(seq)
}

/// Stores a new version and its metrics (the version must be new).
///
/// # Errors
/// Encoding fails, the version exists, or the store fails.
pub async fn store_version(
    store: &dyn Store,
    model: &Model,
    trained_through_seq: i64,
    metrics: &serde_json::Value,
    at_ms: i64,
) -> Result<(), RegistryError> {
    let mut file = Vec::new();
    write_model(model, &mut file).map_err(|e| RegistryError::Unusable(model.version.clone(), e.to_string()))?;
    let record = ModelRecord {
        version: model.version.clone(),
        created_at_ms: at_ms,
        trained_through_seq,
        metrics_json: metrics.to_string(),
        bytes: file.len() as u64,
    };
    store.put_model(&record, file).await?;
    Ok(())
}

/// Deletes all but the newest `keep` versions; the live one always stays. Returns the
/// versions deleted.
///
/// # Errors
/// The store fails.
pub async fn prune(store: &dyn Store, keep: usize) -> Result<Vec<String>, RegistryError> {
    let (entries, _) = list(store).await?;
    let mut deleted = Vec::new();
    for e in entries.iter().filter(|e| !e.live).skip(keep) {
        if store.delete_model(&e.version).await? {
            deleted.push(e.version.clone());
        }
    }
    Ok(deleted)
}
