//! Storage: the durable event log and the tables beside it (impression index, feedback
//! idempotency keys, API keys, snapshots), behind one [`Store`] trait with one conformance
//! suite (`tests/store_conformance.rs`) that every backend passes.
//!
//! The log is the truth: every state change is an [`Event`] with a sequence number assigned
//! at commit and the wall-clock time of its append. Snapshots record the sequence number of
//! the last event they include, so a restart loads one and replays the tail.

pub mod codec;
pub mod postgres;
pub mod sqlite;

use crate::events::{Event, EventBody, FeedbackIn, Impression, ModelActivation, Scope};
use async_trait::async_trait;
use std::fmt;

/// How hard a commit tries to survive failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Committed data survives a crash of the process (SIGKILL) at any instant
    /// (SQLite: WAL with synchronous=NORMAL).
    #[default]
    Process,
    /// Committed data also survives power loss (SQLite: synchronous=FULL), at a cost.
    Power,
}

/// One commit: impressions to append (idempotent on `request_id`) and groups of feedback,
/// each group all or nothing. Everything is committed in one transaction, in this order:
/// impressions first, then each group, so feedback may refer to an impression of the same
/// batch.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    /// Append time of every event of the batch, milliseconds since the epoch.
    pub at_ms: i64,
    pub impressions: Vec<Impression>,
    pub feedback: Vec<Vec<FeedbackIn>>,
}

/// What became of one feedback group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupOutcome {
    /// Every event was new or a duplicate; the new ones are logged.
    Recorded { recorded: u32, duplicates: u32 },
    /// Event `index` names a request with no (remaining) impression; nothing was recorded.
    UnknownRequest { index: usize, request_id: String },
    /// Event `index` names a candidate the request did not have; nothing was recorded.
    UnknownCandidate { index: usize, request_id: String, candidate_id: String },
}

/// An API key as stored: never the key itself, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub id: String,
    pub scope: Scope,
    pub hash: [u8; 32],
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
    pub last_used_at_ms: Option<i64>,
}

/// A stored snapshot's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Sequence number of the last event the snapshot includes.
    pub seq: i64,
    pub at_ms: i64,
    pub bytes: u64,
}

/// A model version in the registry (its file is stored beside it, loaded on demand).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRecord {
    pub version: String,
    pub created_at_ms: i64,
    /// The newest log event the version was trained on (0 for none).
    pub trained_through_seq: i64,
    /// What the retraining job measured, as JSON (holdout figures, data sizes, decision).
    pub metrics_json: String,
    /// Size of the model file in bytes.
    pub bytes: u64,
}

/// What a compaction removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Compacted {
    pub impressions: u64,
    pub feedback: u64,
}

/// A storage failure. Callers turn these into 503s; the cause goes to the log.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
    #[error("store migration failed: {0}")]
    Migration(String),
    #[error("{0}")]
    Invalid(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// The durable store. Implementations are safe to share between tasks.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// A short name of the backend ("sqlite", "postgres").
    fn backend(&self) -> &'static str;

    /// Commits a batch in one transaction (see [`WriteBatch`]); returns one outcome per
    /// feedback group, in order. When it returns `Ok`, everything recorded is durable at the
    /// store's [`Durability`].
    async fn commit(&self, batch: &WriteBatch) -> Result<Vec<GroupOutcome>, StoreError>;

    /// Appends events (admin actions, tombstones) in one transaction; returns their
    /// sequence numbers.
    async fn append(&self, at_ms: i64, events: Vec<EventBody>) -> Result<Vec<i64>, StoreError>;

    /// Up to `limit` events with `seq > after`, in sequence order.
    async fn read_events(&self, after: i64, limit: u32) -> Result<Vec<Event>, StoreError>;

    /// The highest sequence number committed (0 for an empty log).
    async fn last_seq(&self) -> Result<i64, StoreError>;

    /// The impression of a request, if it is stored.
    async fn impression(&self, request_id: &str) -> Result<Option<Impression>, StoreError>;

    /// Stores a snapshot taken after event `seq`; keeps the newest `keep` snapshots.
    async fn save_snapshot(&self, seq: i64, at_ms: i64, blob: Vec<u8>, keep: u32) -> Result<(), StoreError>;

    /// Stored snapshots, newest (highest seq) first.
    async fn list_snapshots(&self) -> Result<Vec<SnapshotInfo>, StoreError>;

    /// The blob of the snapshot taken after event `seq`.
    async fn load_snapshot(&self, seq: i64) -> Result<Option<Vec<u8>>, StoreError>;

    /// Deletes impressions older than `impressions_before_ms` that got no feedback, and
    /// feedback events older than `feedback_before_ms` (when given). Only events with
    /// `seq <= max_seq` are touched (the caller passes its newest snapshot's seq, so replay
    /// never needs a deleted event).
    async fn compact(
        &self,
        impressions_before_ms: i64,
        feedback_before_ms: Option<i64>,
        max_seq: i64,
    ) -> Result<Compacted, StoreError>;

    /// Erases a user: deletes their impressions, unlinks their feedback events from them
    /// (user id removed; the hashed features and labels stay, so aggregated weights replay
    /// the same), and appends a `UserErased` tombstone, all in one transaction. Returns the
    /// tombstone's seq and how many impressions and feedback events were affected.
    async fn erase_user(&self, user_id: &str, at_ms: i64) -> Result<(i64, u64, u64), StoreError>;

    /// Stores a new key and logs `KeyCreated`, in one transaction.
    async fn insert_key(&self, key: &KeyRecord) -> Result<(), StoreError>;

    /// Every key, newest first.
    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError>;

    /// One key by id.
    async fn find_key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError>;

    /// Marks a key revoked and logs `KeyRevoked`, in one transaction. `false` if no such
    /// key or already revoked.
    async fn revoke_key(&self, id: &str, at_ms: i64) -> Result<bool, StoreError>;

    /// Records when keys were last used (best effort, batched by the caller).
    async fn touch_keys(&self, used: &[(String, i64)]) -> Result<(), StoreError>;

    /// Stores a model version of the registry and its file. A version that exists already is
    /// an [`StoreError::Invalid`] (versions are immutable).
    async fn put_model(&self, record: &ModelRecord, file: Vec<u8>) -> Result<(), StoreError>;

    /// The registry's versions, newest first (`bytes` filled in, files not loaded).
    async fn list_models(&self) -> Result<Vec<ModelRecord>, StoreError>;

    /// The model file of a version.
    async fn load_model(&self, version: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Deletes a version from the registry; `false` if there was none.
    async fn delete_model(&self, version: &str) -> Result<bool, StoreError>;

    /// The newest `ModelActivated` event: its seq and body. The version it names is live.
    async fn last_activation(&self) -> Result<Option<(i64, ModelActivation)>, StoreError>;

    /// Cheap liveness check of the connection.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Opens the store named by a URL: `sqlite://PATH` or a plain path is SQLite;
/// `postgres://...` (or `postgresql://...`, optionally with `schema=NAME`) is PostgreSQL.
///
/// # Errors
/// An unknown scheme, or the backend fails to open or migrate.
pub async fn open(url: &str, durability: Durability) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
        let s = sqlite::SqliteStore::open(std::path::Path::new(path), durability).await?;
        return Ok(std::sync::Arc::new(s));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let s = postgres::PostgresStore::open(url, durability).await?;
        return Ok(std::sync::Arc::new(s));
    }
    let s = sqlite::SqliteStore::open(std::path::Path::new(url), durability).await?;
    Ok(std::sync::Arc::new(s))
}
