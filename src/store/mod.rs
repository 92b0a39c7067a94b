//! Storage: the durable event log and the tables beside it (impression index, feedback
//! idempotency keys, API keys, snapshots), behind one [`Store`] trait with one conformance
//! suite (`tests/store_conformance.rs`) that every backend passes.
//!
//! The log is the truth: every state change is an [`Event`] with a sequence number assigned
//! at commit and the wall-clock time of its append. Snapshots record the sequence number of
//! the last event they include, so a restart loads one and replays the tail.

pub mod codec;
pub mod oversight;
pub mod postgres;
pub mod sqlite;

use crate::events::{Event, EventBody, FeedbackIn, Impression, ModelActivation, Outcome, Scope};
use crate::features::wire;
use async_trait::async_trait;
use std::collections::{HashMap, HashSet};
use std::fmt;

pub use oversight::{
    AuditEntry, Decision, NewAudit, NewReviewItem, ReviewFilter, ReviewItem, ReviewReason, ReviewStatus, ReviewUpkeep,
    VerdictIn,
};

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

/// One commit: impressions to append (idempotent on `request_id`), groups of feedback, each
/// group all or nothing, and review items of the rank path. Everything is committed in one
/// transaction, in this order: impressions first, then each group, so feedback may refer to an
/// impression of the same batch, then the review items (queued as
/// [`Store::add_review_items`] would).
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    /// Append time of every event of the batch, milliseconds since the epoch.
    pub at_ms: i64,
    pub impressions: Vec<Impression>,
    pub feedback: Vec<Vec<FeedbackIn>>,
    pub review: Vec<NewReviewItem>,
}

impl WriteBatch {
    /// Nothing to write.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.impressions.is_empty() && self.feedback.is_empty() && self.review.is_empty()
    }
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

    /// Adds candidates to the review queue, one item per (request, candidate): an item that
    /// exists is kept, except that a pending uncertain-band item given again for a stronger
    /// reason (blocked, reported) takes that reason. Returns how many rows were added or
    /// changed.
    async fn add_review_items(&self, items: &[NewReviewItem]) -> Result<u64, StoreError>;

    /// Candidates reported insecure, as (request id, candidate id): where an item exists, a
    /// pending uncertain-band one takes the reason `reported` (as [`Store::add_review_items`]
    /// would do) and any other is kept. Returns the indices into `keys` of the candidates that
    /// have no item, for the caller to build from their impressions. One transaction.
    async fn report_review_items(&self, keys: &[(String, String)]) -> Result<Vec<usize>, StoreError>;

    /// One review item by id.
    async fn review_item(&self, id: i64) -> Result<Option<ReviewItem>, StoreError>;

    /// Review items matching `filter`, newest (highest id) first.
    async fn list_review(&self, filter: &ReviewFilter) -> Result<Vec<ReviewItem>, StoreError>;

    /// Records a verdict on a pending item and, in the same transaction, appends its
    /// `ReviewVerdict` event (with the item's features, and whether the user had accepted the
    /// candidate) and an audit entry.
    async fn decide_review(&self, verdict: &VerdictIn) -> Result<Decision, StoreError>;

    /// Expires pending items created before `expire_before_ms`, deletes pending uncertain-band
    /// items beyond the newest `max_uncertain`, and purges judged or expired items older than
    /// `purge_before_ms`.
    async fn review_upkeep(
        &self,
        expire_before_ms: i64,
        purge_before_ms: i64,
        max_uncertain: u64,
    ) -> Result<ReviewUpkeep, StoreError>;

    /// How many review items there are in each status (statuses with none left out).
    async fn review_counts(&self) -> Result<Vec<(ReviewStatus, u64)>, StoreError>;

    /// Since `since_ms`: candidates judged insecure that the user had accepted, and rank
    /// requests logged (impressions).
    async fn incident_counts(&self, since_ms: i64) -> Result<(u64, u64), StoreError>;

    /// Records an admin action; returns its id.
    async fn add_audit(&self, entry: &NewAudit) -> Result<i64, StoreError>;

    /// Admin actions, newest first, `limit` of them, with `id < before` when given.
    async fn list_audit(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditEntry>, StoreError>;

    /// Every `RulePatched` and `RuleDisabled` event with `seq <= through_seq`, in seq order
    /// (a restart restores the rule patches a snapshot does not hold from these).
    async fn rule_events(&self, through_seq: i64) -> Result<Vec<Event>, StoreError>;
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

// ---------------------------------------------------------------------------------------------
// The backend-independent half of `Store::commit`

/// One [`Store::commit`] worked out in memory, so that a backend writes a batch of any size with
/// a handful of statements instead of several per event (issue 5). Inside its write transaction
/// a backend:
///
/// 1. loads every stored impression the batch names ([`CommitPlan::lookup_ids`]: its own
///    impressions and the requests its feedback refers to) with one query, or one per chunk of
///    ids, handing each row to [`CommitPlan::load`], which decodes it (once, as rows arrive);
/// 2. calls [`CommitPlan::validate`], which finds the impressions new to the store and checks
///    every group against the impressions;
/// 3. looks up which idempotency keys of the valid groups ([`CommitPlan::keys`]) are stored,
///    with one query or one per chunk, handing each hit to [`CommitPlan::mark_stored`], and
///    meanwhile (the query runs on the database's side) has [`CommitPlan::encode`] encode
///    the events;
/// 4. writes the [`Appends`] of [`CommitPlan::settle`] with multi-row statements, the events
///    in the order given (new impressions, then new feedback), so that seqs follow batch order.
///
/// A backend may make the reads of steps 1 and 3 before its write transaction, if it knows that
/// nothing they saw changed before the transaction began (SQLite does, see
/// `SqliteStore::prefetch`): it then looks up every key of the batch ([`CommitPlan::batch_keys`])
/// beside the impressions, and hands the stored ones to [`CommitPlan::mark_stored_keys`] after
/// step 2.
///
/// The outcome is the one of checking and writing the batch event by event, in order, as
/// [`WriteBatch`] and [`GroupOutcome`] state it: an impression whose request id is stored (or
/// comes earlier in the batch) is skipped, and feedback joins the stored (or earlier) one; a
/// group is rejected at its first event that names an unknown request or candidate, and none
/// of its events count; an event whose key is stored, or was recorded earlier in the batch, is
/// a duplicate. Loading up front sees what loading event by event would have: nothing is
/// deleted while the backend holds its write lock, and a batch only appends impressions.
struct CommitPlan<'a> {
    batch: &'a WriteBatch,
    /// Every request id the batch names, once, and what is known of its impression.
    ids: HashMap<&'a str, Slot>,
    /// The stored impressions the batch names, with their seqs.
    decoded: Vec<(i64, StoredImpression)>,
    /// Indices into `batch.impressions` of the impressions new to the store, in batch order.
    fresh: Vec<usize>,
    /// The events of the valid groups, in batch order.
    joined: Vec<Joined<'a>>,
    /// One per group: why it was rejected, or `None` if it is valid.
    rejected: Vec<Option<GroupOutcome>>,
    /// The distinct idempotency keys of `joined`, each once, with whether the store has it.
    keys: Vec<Key<'a>>,
    stored: Vec<bool>,
}

/// An idempotency key: request id, candidate id, outcome.
type Key<'a> = (&'a str, &'a str, Outcome);

/// What a commit knows of the impression of a request id.
enum Slot {
    /// Neither stored nor (so far) in the batch.
    Missing,
    /// New, from the batch: `batch.impressions[i]`.
    Batch(usize),
    /// Stored: `decoded[i]`, or why it does not decode (an error only if an event needs it).
    Stored(Result<usize, String>),
}

/// The impression a valid feedback event joins.
#[derive(Debug, Clone, Copy)]
enum ImpressionRef {
    Batch(usize),
    Decoded(usize),
}

/// A feedback event of a valid group, joined with what was served.
struct Joined<'a> {
    group: usize,
    event: &'a FeedbackIn,
    impression: ImpressionRef,
    /// Index of the candidate in the impression.
    candidate: usize,
    /// Index of its idempotency key in `CommitPlan::keys`.
    key: usize,
}

/// The rows one commit appends, column by column (as PostgreSQL binds them to `UNNEST`).
#[derive(Debug, Default)]
struct Appends<'p> {
    impressions: NewImpressions<'p>,
    feedback: NewFeedback<'p>,
    /// One per group, in order.
    outcomes: Vec<GroupOutcome>,
}

/// New impressions, in batch order; `bodies` are the encoded `EventBody::Impression` events.
#[derive(Debug, Default)]
struct NewImpressions<'p> {
    request_ids: Vec<&'p str>,
    user_ids: Vec<&'p str>,
    bodies: Vec<Vec<u8>>,
}

/// New feedback events, in batch order; `bodies` are the encoded `EventBody::Feedback` events
/// (whose user is `user_ids[i]`), the other columns their idempotency keys.
#[derive(Debug, Default)]
struct NewFeedback<'p> {
    request_ids: Vec<&'p str>,
    candidate_ids: Vec<&'p str>,
    outcomes: Vec<&'static str>,
    user_ids: Vec<&'p str>,
    bodies: Vec<Vec<u8>>,
}

impl<'a> CommitPlan<'a> {
    fn new(batch: &'a WriteBatch) -> CommitPlan<'a> {
        let mut ids =
            HashMap::with_capacity(batch.impressions.len() + batch.feedback.iter().map(Vec::len).sum::<usize>());
        let named = batch
            .impressions
            .iter()
            .map(|i| &i.request_id)
            .chain(batch.feedback.iter().flatten().map(|f| &f.request_id));
        for id in named {
            ids.entry(id.as_str()).or_insert(Slot::Missing);
        }
        CommitPlan {
            batch,
            ids,
            decoded: Vec::new(),
            fresh: Vec::new(),
            joined: Vec::new(),
            rejected: Vec::new(),
            keys: Vec::new(),
            stored: Vec::new(),
        }
    }

    /// Every request id the batch names, each once, in no particular order.
    fn lookup_ids(&self) -> Vec<&'a str> {
        self.ids.keys().copied().collect()
    }

    /// The request ids the batch's feedback names and its impressions do not, each once: the
    /// ones whose impression is most likely stored.
    fn joined_ids(&self) -> Vec<&'a str> {
        // A batch of the rank path only: nothing to build.
        if self.batch.feedback.is_empty() {
            return Vec::new();
        }
        let own: HashSet<&str> = self.batch.impressions.iter().map(|i| i.request_id.as_str()).collect();
        let mut ids: Vec<&'a str> = self
            .batch
            .feedback
            .iter()
            .flatten()
            .map(|e| e.request_id.as_str())
            .filter(|id| !own.contains(id))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The request ids whose impression was not loaded (so far), each once.
    fn missing_ids(&self) -> Vec<&'a str> {
        self.ids.iter().filter(|(_, slot)| matches!(slot, Slot::Missing)).map(|(id, _)| *id).collect()
    }

    /// The idempotency key of every feedback event of the batch, each once: a superset of
    /// [`CommitPlan::keys`], known before [`CommitPlan::validate`], so a backend may look them up
    /// beside the impressions.
    fn batch_keys(&self) -> Vec<Key<'a>> {
        let keys: HashSet<Key<'a>> = self
            .batch
            .feedback
            .iter()
            .flatten()
            .map(|e| (e.request_id.as_str(), e.candidate_id.as_str(), e.outcome))
            .collect();
        keys.into_iter().collect()
    }

    /// Records (and decodes) the stored impression of a request id: its event's seq and body.
    fn load(&mut self, request_id: &str, seq: i64, body: &[u8]) {
        let Some(slot) = self.ids.get_mut(request_id) else {
            return;
        };
        *slot = Slot::Stored(decode_served(seq, body, request_id).map(|imp| {
            self.decoded.push((seq, imp));
            self.decoded.len() - 1
        }));
    }

    /// Finds the new impressions and checks every group (see the type's docs).
    ///
    /// # Errors
    /// A stored impression an event needs does not decode, or is not an impression
    /// ([`StoreError::Corrupt`]).
    fn validate(&mut self) -> Result<(), StoreError> {
        let batch = self.batch;
        for (i, imp) in batch.impressions.iter().enumerate() {
            if let Some(slot @ Slot::Missing) = self.ids.get_mut(imp.request_id.as_str()) {
                *slot = Slot::Batch(i);
                self.fresh.push(i);
            }
        }
        self.rejected = Vec::with_capacity(batch.feedback.len());
        for (group, events) in batch.feedback.iter().enumerate() {
            let start = self.joined.len();
            let mut rejected = None;
            for (index, event) in events.iter().enumerate() {
                let Some(impression) = self.resolve(&event.request_id)? else {
                    rejected = Some(GroupOutcome::UnknownRequest { index, request_id: event.request_id.clone() });
                    break;
                };
                let Some(candidate) = self.served(impression).position(&event.candidate_id) else {
                    rejected = Some(GroupOutcome::UnknownCandidate {
                        index,
                        request_id: event.request_id.clone(),
                        candidate_id: event.candidate_id.clone(),
                    });
                    break;
                };
                self.joined.push(Joined { group, event, impression, candidate, key: 0 });
            }
            if rejected.is_some() {
                self.joined.truncate(start);
            }
            self.rejected.push(rejected);
        }
        let mut index: HashMap<Key<'a>, usize> = HashMap::with_capacity(self.joined.len());
        for j in &mut self.joined {
            let key = (j.event.request_id.as_str(), j.event.candidate_id.as_str(), j.event.outcome);
            j.key = *index.entry(key).or_insert_with(|| {
                self.keys.push(key);
                self.keys.len() - 1
            });
        }
        self.stored = vec![false; self.keys.len()];
        Ok(())
    }

    /// The impression of a request id.
    fn resolve(&self, request_id: &str) -> Result<Option<ImpressionRef>, StoreError> {
        match self.ids.get(request_id) {
            None | Some(Slot::Missing) => Ok(None),
            Some(Slot::Batch(i)) => Ok(Some(ImpressionRef::Batch(*i))),
            Some(Slot::Stored(Ok(i))) => Ok(Some(ImpressionRef::Decoded(*i))),
            Some(Slot::Stored(Err(why))) => Err(StoreError::Corrupt(why.clone())),
        }
    }

    fn served(&self, r: ImpressionRef) -> Served<'_> {
        match r {
            ImpressionRef::Batch(i) => Served::Fresh(&self.batch.impressions[i]),
            ImpressionRef::Decoded(i) => Served::Stored(&self.decoded[i].1),
        }
    }

    /// The idempotency keys to look up (after [`CommitPlan::validate`]); a hit is reported by
    /// its index in this slice.
    fn keys(&self) -> &[Key<'a>] {
        &self.keys
    }

    /// Records which keys of [`CommitPlan::keys`] the store has, given the stored ones among
    /// (at least) them.
    fn mark_stored_keys(&mut self, stored: &HashSet<Key<'a>>) {
        for (key, is) in self.keys.iter().zip(&mut self.stored) {
            *is = stored.contains(key);
        }
    }

    /// Records that the store has key `index` of [`CommitPlan::keys`].
    fn mark_stored(&mut self, index: i64) {
        if let Some(stored) = usize::try_from(index).ok().and_then(|i| self.stored.get_mut(i)) {
            *stored = true;
        }
    }

    /// The encoded events of the new impressions and of the valid groups (duplicates too: a
    /// backend may run this while it looks up the keys, before they are known).
    ///
    /// # Errors
    /// A stored vector an event copies does not decode ([`StoreError::Corrupt`]), or an event
    /// does not encode ([`StoreError::Invalid`]; not expected for these types).
    fn encode(&self) -> Result<Bodies, StoreError> {
        let batch = self.batch;
        let mut impressions = Vec::with_capacity(self.fresh.len());
        for &i in &self.fresh {
            impressions.push(encode_body("impression", &ImpressionBody(&batch.impressions[i]))?);
        }
        let mut feedback = Vec::with_capacity(self.joined.len());
        for j in &self.joined {
            // A stored vector is copied as it is stored, undecoded, so it is checked here.
            if let ImpressionRef::Decoded(i) = j.impression {
                let (seq, imp) = &self.decoded[i];
                imp.candidates[j.candidate]
                    .features
                    .check()
                    .map_err(|e| StoreError::Corrupt(format!("event {seq} does not decode: {e}")))?;
            }
            let body = FeedbackBody { event: j.event, served: self.served(j.impression), candidate: j.candidate };
            feedback.push(encode_body("feedback", &body)?);
        }
        Ok(Bodies { impressions, feedback })
    }

    /// What the commit appends, given what [`CommitPlan::encode`] made, with one outcome per
    /// group.
    fn settle(&mut self, bodies: Bodies) -> Appends<'_> {
        let rejected = std::mem::take(&mut self.rejected);
        let this = &*self;
        let batch = this.batch;
        let mut out = Appends::default();
        let imps = &mut out.impressions;
        for &i in &this.fresh {
            let imp = &batch.impressions[i];
            imps.request_ids.push(imp.request_id.as_str());
            imps.user_ids.push(imp.user_id.as_str());
        }
        imps.bodies = bodies.impressions;
        let mut counts = vec![(0u32, 0u32); batch.feedback.len()];
        let mut recorded = vec![false; this.keys.len()];
        let fb = &mut out.feedback;
        for (j, body) in this.joined.iter().zip(bodies.feedback) {
            let (new, duplicates) = &mut counts[j.group];
            if this.stored[j.key] || recorded[j.key] {
                *duplicates += 1;
                continue;
            }
            recorded[j.key] = true;
            *new += 1;
            fb.bodies.push(body);
            fb.request_ids.push(j.event.request_id.as_str());
            fb.candidate_ids.push(j.event.candidate_id.as_str());
            fb.outcomes.push(j.event.outcome.name());
            fb.user_ids.push(this.served(j.impression).user_id());
        }
        out.outcomes = rejected
            .into_iter()
            .zip(counts)
            .map(|(rejected, (recorded, duplicates))| {
                rejected.unwrap_or(GroupOutcome::Recorded { recorded, duplicates })
            })
            .collect();
        out
    }
}

/// Encoded events, as [`CommitPlan::encode`] makes them.
#[derive(Debug)]
struct Bodies {
    /// One per new impression.
    impressions: Vec<Vec<u8>>,
    /// One per event of a valid group.
    feedback: Vec<Vec<u8>>,
}

/// Decodes the body of the event indexed as the impression of `request_id`.
///
/// # Errors
/// The body does not decode, or is not an impression: what is wrong, for a
/// [`StoreError::Corrupt`].
fn decode_stored_impression(seq: i64, body: &[u8], request_id: &str) -> Result<Impression, String> {
    match codec::decode_event(body).map_err(|e| format!("event {seq} does not decode: {e}"))? {
        EventBody::Impression(imp) => Ok(imp),
        other => Err(format!(
            "event {seq}, indexed as the impression of request {request_id:?}, is a {} event",
            other.kind()
        )),
    }
}

/// Runs `f`, CPU-bound work (encoding thousands of events), without holding up the other
/// tasks of the async worker it is called on: through [`tokio::task::block_in_place`] on a
/// multi-thread runtime, inline on any other (where it cannot be used).
fn cpu_bound<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread) {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

fn encode_body(kind: &str, body: &impl serde::Serialize) -> Result<Vec<u8>, StoreError> {
    codec::encode(body).map_err(|e| StoreError::Invalid(format!("cannot encode a {kind} event: {e}")))
}

/// Serialises as `EventBody::Impression(impression.clone())` does, without the clone.
struct ImpressionBody<'a>(&'a Impression);

impl serde::Serialize for ImpressionBody<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Variant 0 of `EventBody`, as `#[derive(Serialize)]` writes it.
        s.serialize_newtype_variant("EventBody", 0, "Impression", self.0)
    }
}

/// Serialises as `EventBody::Feedback` of the [`crate::events::FeedbackEvent`] that joins
/// `event` with candidate `candidate` of what was served, without building it (no copy of the
/// features; a stored vector is copied in its packed bytes). A unit test checks that both give
/// the same bytes.
#[derive(Clone, Copy)]
struct FeedbackBody<'a> {
    event: &'a FeedbackIn,
    served: Served<'a>,
    candidate: usize,
}

impl serde::Serialize for FeedbackBody<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Variant 1 of `EventBody`, as `#[derive(Serialize)]` writes it.
        s.serialize_newtype_variant("EventBody", 1, "Feedback", &FeedbackFields(*self))
    }
}

/// The fields of [`crate::events::FeedbackEvent`], in its order.
struct FeedbackFields<'a>(FeedbackBody<'a>);

impl serde::Serialize for FeedbackFields<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let FeedbackBody { event, served, candidate } = self.0;
        match served {
            Served::Fresh(imp) => {
                let c = &imp.candidates[candidate];
                feedback_fields(s, event, served, c.risk, c.flagged, &c.features)
            }
            Served::Stored(imp) => {
                let c = &imp.candidates[candidate];
                feedback_fields(s, event, served, c.risk, c.flagged, &c.features)
            }
        }
    }
}

fn feedback_fields<S: serde::Serializer>(
    s: S,
    event: &FeedbackIn,
    served: Served<'_>,
    risk: f32,
    flagged: bool,
    features: &impl serde::Serialize,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    let mut st = s.serialize_struct("FeedbackEvent", 8)?;
    st.serialize_field("request_id", &event.request_id)?;
    st.serialize_field("candidate_id", &event.candidate_id)?;
    st.serialize_field("outcome", &event.outcome)?;
    st.serialize_field("user_id", &Some(served.user_id()))?;
    st.serialize_field("risk", &risk)?;
    st.serialize_field("flagged", &flagged)?;
    st.serialize_field("features", features)?;
    st.serialize_field("model_version", &served.model_version())?;
    st.end()
}

/// The impression a feedback event joins, as a commit has it: new in the batch, or read back
/// from the store.
#[derive(Clone, Copy)]
enum Served<'a> {
    Fresh(&'a Impression),
    Stored(&'a StoredImpression),
}

impl<'a> Served<'a> {
    fn user_id(self) -> &'a str {
        match self {
            Served::Fresh(imp) => &imp.user_id,
            Served::Stored(imp) => &imp.user_id,
        }
    }

    fn model_version(self) -> &'a str {
        match self {
            Served::Fresh(imp) => &imp.model_version,
            Served::Stored(imp) => &imp.model_version,
        }
    }

    /// Where the candidate `id` is among the impression's.
    fn position(self, id: &str) -> Option<usize> {
        match self {
            Served::Fresh(imp) => imp.candidates.iter().position(|c| c.id == id),
            Served::Stored(imp) => imp.candidates.iter().position(|c| c.id == id),
        }
    }
}

/// What a commit reads of a stored impression: the fields of [`Impression`] in its order, so it
/// decodes from the same blob, with each candidate's vector left as stored ([`wire::Stored`]).
/// A feedback event copies one vector of its impression; unpacking all of them, only to pack one
/// again, was the largest part of a commit's own CPU (issue 5). A unit test checks that this
/// type and [`Impression`] read the same blobs.
#[derive(serde::Deserialize)]
struct StoredImpression {
    _request_id: String,
    user_id: String,
    _key_id: String,
    model_version: String,
    _language: Option<String>,
    _prompt_risk: f32,
    candidates: Vec<StoredCandidate>,
}

/// A candidate of a [`StoredImpression`], [`crate::events::CandidateRecord`]'s fields in its
/// order.
#[derive(serde::Deserialize)]
struct StoredCandidate {
    id: String,
    risk: f32,
    flagged: bool,
    features: wire::Stored,
    _rules: Vec<String>,
    _text: Option<String>,
}

/// [`EventBody`] as far as its first variant, the impression; any other event does not decode.
#[derive(serde::Deserialize)]
enum StoredEvent {
    Impression(StoredImpression),
}

/// Decodes, for a commit, the body of the event indexed as the impression of `request_id`.
///
/// # Errors
/// As [`decode_stored_impression`].
fn decode_served(seq: i64, body: &[u8], request_id: &str) -> Result<StoredImpression, String> {
    match codec::decode::<StoredEvent>(body) {
        Ok(StoredEvent::Impression(imp)) => Ok(imp),
        // The full decoder says what is wrong (another kind of event, say).
        Err(e) => Err(decode_stored_impression(seq, body, request_id)
            .err()
            .unwrap_or_else(|| format!("event {seq} does not decode as an impression: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{CandidateRecord, FeedbackEvent};
    use crate::features::Features;

    fn impression() -> Impression {
        let candidate = |id: &str, flagged: bool, seed: u32| CandidateRecord {
            id: id.into(),
            risk: 0.25 + seed as f32 / 8.0,
            flagged,
            features: Features {
                idx: vec![3 + seed, 70_000, 4_000_000 + seed],
                val: vec![1.0, 0.5, -2.0],
                offset: 1.5,
            },
            rules: if flagged { vec!["python.eval".into()] } else { vec![] },
            text: flagged.then(|| "eval(x)".into()),
        };
        Impression {
            request_id: "r_01a2".into(),
            user_id: "u-7".into(),
            key_id: "k-1".into(),
            model_version: "risk-2".into(),
            language: Some("python".into()),
            prompt_risk: 0.125,
            candidates: vec![candidate("c-1", false, 1), candidate("c-2", true, 2)],
        }
    }

    #[test]
    fn blobs_of_the_first_format_still_decode_and_new_ones_are_compact() {
        let mut imp = impression();
        // A realistic size: a hundred coordinates per candidate, spread over 2^22.
        for (k, c) in imp.candidates.iter_mut().enumerate() {
            c.features.idx = (0..100u32).map(|i| i * 41_000 + 17 + k as u32).collect();
            c.features.val = (0..100).map(|i| if i % 3 == 0 { 1.0 } else { 0.125 }).collect();
        }
        let body = EventBody::Impression(imp);
        // What the codec wrote before the compact form: tag 1 and bincode's plain struct form
        // (the form every serializer outside the codec still sees).
        let mut legacy = vec![1u8];
        legacy.extend(bincode::serde::encode_to_vec(&body, bincode::config::standard()).expect("encode"));
        assert_eq!(codec::decode_event(&legacy).expect("a format-1 blob decodes"), body);
        let now = codec::encode_event(&body).expect("encode");
        assert_eq!(now[0], 2, "written in format 2");
        assert_eq!(codec::decode_event(&now).expect("decodes"), body);
        assert!(now.len() * 2 < legacy.len(), "format 2 is {} bytes, format 1 {}", now.len(), legacy.len());
        assert!(codec::decode_event(&[3, 0]).unwrap_err().contains("unknown blob format tag 3"));
        assert!(codec::decode_event(&[]).is_err());
    }

    /// `imp` as the codec writes it now (format 2), and in the first format.
    fn blobs(imp: &Impression) -> [Vec<u8>; 2] {
        let body = EventBody::Impression(imp.clone());
        let mut legacy = vec![1u8];
        legacy.extend(bincode::serde::encode_to_vec(&body, bincode::config::standard()).expect("encode"));
        [codec::encode_event(&body).expect("encode"), legacy]
    }

    #[test]
    fn borrowed_bodies_encode_as_the_events_they_stand_for() {
        let imp = impression();
        let [owned, legacy] = blobs(&imp);
        assert_eq!(codec::encode(&ImpressionBody(&imp)).expect("encode"), owned);
        // The stored impression as a commit reads it back, from either format.
        let stored = [&owned, &legacy].map(|blob| decode_served(4, blob, &imp.request_id).expect("decodes"));
        assert!(matches!(stored[0].candidates[1].features, wire::Stored::Packed { .. }));
        assert!(matches!(stored[1].candidates[1].features, wire::Stored::Decoded(_)));
        for s in &stored {
            assert_eq!((s.user_id.as_str(), s.model_version.as_str()), ("u-7", "risk-2"));
            let ids: Vec<&str> = s.candidates.iter().map(|c| c.id.as_str()).collect();
            assert_eq!(ids, ["c-1", "c-2"]);
            for (s, c) in s.candidates.iter().zip(&imp.candidates) {
                assert_eq!(s.features.decode().expect("decodes"), c.features);
            }
        }
        for (outcome, candidate) in Outcome::ALL.into_iter().zip([0, 1, 1, 0]) {
            let cand = &imp.candidates[candidate];
            let event = FeedbackIn { request_id: imp.request_id.clone(), candidate_id: cand.id.clone(), outcome };
            let joined = EventBody::Feedback(FeedbackEvent {
                request_id: event.request_id.clone(),
                candidate_id: event.candidate_id.clone(),
                outcome,
                user_id: Some(imp.user_id.clone()),
                risk: cand.risk,
                flagged: cand.flagged,
                features: cand.features.clone(),
                model_version: imp.model_version.clone(),
            });
            let expected = codec::encode_event(&joined).expect("encode");
            for served in [Served::Fresh(&imp), Served::Stored(&stored[0]), Served::Stored(&stored[1])] {
                let bytes = codec::encode(&FeedbackBody { event: &event, served, candidate }).expect("encode");
                assert_eq!(bytes, expected, "{outcome}");
            }
            assert_eq!(codec::decode_event(&expected).expect("decode"), joined);
        }
        // Any other event is refused, saying what it is.
        let other = codec::encode_event(&EventBody::PolicyReset { user_id: "u-7".into() }).expect("encode");
        let err = decode_served(5, &other, "r_01a2").err().expect("not an impression");
        assert!(err.contains("is a policy_reset event"), "{err}");
    }

    #[test]
    fn a_corrupt_stored_vector_fails_only_the_events_on_its_candidate() {
        let imp = impression();
        let [mut blob, _] = blobs(&imp);
        // Candidate c-2's vector as the blob holds it (a length, the packed bytes, the offset);
        // its coordinate count, the first packed byte, is made larger than the bytes.
        let packed = codec::encode(&imp.candidates[1].features).expect("encode");
        let at = blob.windows(packed.len() - 1).position(|w| w == &packed[1..]).expect("the vector is in the blob");
        blob[at + 1] = 0x7f;
        let on = |candidate: &str| WriteBatch {
            at_ms: 1,
            impressions: vec![],
            feedback: vec![vec![FeedbackIn {
                request_id: imp.request_id.clone(),
                candidate_id: candidate.into(),
                outcome: Outcome::Rejected,
            }]],
            review: Vec::new(),
        };
        let batch = on("c-1");
        let mut plan = CommitPlan::new(&batch);
        plan.load(&imp.request_id, 9, &blob);
        plan.validate().expect("c-1's vector is sound");
        let bodies = plan.encode().expect("encode");
        assert_eq!(plan.settle(bodies).feedback.bodies.len(), 1);
        let batch = on("c-2");
        let mut plan = CommitPlan::new(&batch);
        plan.load(&imp.request_id, 9, &blob);
        plan.validate().expect("c-2 is a candidate of the impression");
        let err = plan.encode().expect_err("c-2's vector does not decode");
        assert!(matches!(&err, StoreError::Corrupt(m) if m.starts_with("event 9 does not decode")), "{err}");
    }

    #[test]
    fn a_stored_impression_that_does_not_decode_fails_only_the_commit_that_needs_it() {
        let imp = impression();
        let batch = WriteBatch {
            at_ms: 1,
            impressions: vec![],
            feedback: vec![
                vec![FeedbackIn {
                    request_id: "r-ghost".into(),
                    candidate_id: "c-1".into(),
                    outcome: Outcome::Accepted,
                }],
                vec![FeedbackIn {
                    request_id: imp.request_id.clone(),
                    candidate_id: "c-1".into(),
                    outcome: Outcome::Accepted,
                }],
            ],
            review: Vec::new(),
        };
        let mut plan = CommitPlan::new(&batch);
        plan.load(&imp.request_id, 9, &[1, 2, 3]);
        let err = plan.validate().expect_err("the second group needs it");
        assert!(matches!(&err, StoreError::Corrupt(m) if m.starts_with("event 9 does not decode")), "{err}");

        // Not needed (its group is rejected first): no error.
        let mut batch = batch;
        let ghost = batch.feedback[0][0].clone();
        batch.feedback[1].insert(0, ghost);
        let mut plan = CommitPlan::new(&batch);
        plan.load(&imp.request_id, 9, &[1, 2, 3]);
        plan.validate().expect("nothing needs the corrupt impression");
        let bodies = plan.encode().expect("encode");
        let appends = plan.settle(bodies);
        assert!(appends.feedback.bodies.is_empty());
        assert!(matches!(appends.outcomes[1], GroupOutcome::UnknownRequest { index: 0, .. }));
    }
}
