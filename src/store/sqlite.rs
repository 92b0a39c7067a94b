//! SQLite backend: one database file in WAL mode.
//!
//! SQLite has one writer at a time, so writes are serialised here rather than left to fail
//! with `SQLITE_BUSY`: every write transaction first takes `write_lock` (a fair, FIFO tokio
//! mutex, so waiting writers queue in order and never hit the pool's acquire timeout), then
//! runs on the one connection of the write pool (which reconnects if that connection dies) and
//! opens with `BEGIN IMMEDIATE`, so it holds the database's write lock from its first statement
//! and never has to upgrade a read lock mid-transaction. Readers use their own pool; in WAL
//! mode they see the last committed state and neither block nor are blocked by the writer. The
//! 5 s busy timeout only matters when another process (the CLI, a backup) holds the file.
//!
//! Bodies of events are [`codec`] blobs. Schema: `migrations/sqlite/`.

use super::{
    Compacted, Durability, GroupOutcome, KeyRecord, ModelRecord, SnapshotInfo, Store, StoreError, WriteBatch, codec,
};
use crate::events::{Event, EventBody, FeedbackEvent, FeedbackIn, Impression, ModelActivation, Scope};
use async_trait::async_trait;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{SqlSafeStr, Sqlite, SqliteConnection, Transaction};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;
use tokio::sync::{Mutex, MutexGuard};

/// The migrations, in version order: `(version, description, sql)`, one per file of
/// `migrations/sqlite/` (a unit test checks that the list and the directory agree). Embedded
/// with `include_str!` rather than `sqlx::migrate!`, which needs sqlx's `macros` feature and
/// with it a second, host-side build of sqlx and the bundled SQLite; the migrations table and
/// checksums are the same as `migrate!` would write.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../../migrations/sqlite/0001_init.sql")),
    (2, "models", include_str!("../../migrations/sqlite/0002_models.sql")),
];

/// Connections for readers.
const READ_CONNECTIONS: u32 = 4;

/// Rows deleted per transaction by [`Store::compact`], so a large compaction never holds the
/// write lock for long and commits interleave with it.
const COMPACT_CHUNK: i64 = 5_000;

/// Compaction of impressions without feedback (`?1` cut, `?2` max seq, `?3` chunk). Their index
/// rows go with them (ON DELETE CASCADE).
const COMPACT_IMPRESSIONS: &str = "DELETE FROM events WHERE seq IN (SELECT seq FROM impressions \
     WHERE has_feedback = 0 AND at_ms < ?1 AND seq <= ?2 LIMIT ?3)";

/// Compaction of feedback (`?1` cut, `?2` max seq, `?3` chunk). Their idempotency keys go with
/// them (ON DELETE CASCADE): a duplicate arriving after its original was compacted is recorded
/// again, if its impression is still there.
const COMPACT_FEEDBACK: &str = "DELETE FROM events WHERE seq IN (SELECT seq FROM events \
     WHERE kind = 'feedback' AND at_ms < ?1 AND seq <= ?2 LIMIT ?3)";

/// The SQLite store. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct SqliteStore {
    read: SqlitePool,
    write: SqlitePool,
    write_lock: Mutex<()>,
}

impl SqliteStore {
    /// Opens (creating the file and its directory if needed) and migrates the database at
    /// `path`.
    ///
    /// # Errors
    /// The directory or file cannot be created or opened ([`StoreError::Unavailable`]), or a
    /// migration fails ([`StoreError::Migration`]).
    pub async fn open(path: &Path, durability: Durability) -> Result<SqliteStore, StoreError> {
        let unavailable =
            |e: &dyn std::fmt::Display| StoreError::Unavailable(format!("cannot open {}: {e}", path.display()));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir).await.map_err(|e| unavailable(&e))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match durability {
                Durability::Process => SqliteSynchronous::Normal,
                Durability::Power => SqliteSynchronous::Full,
            })
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(|e| unavailable(&e))?;
        migrator().run(&write).await.map_err(|e| StoreError::Migration(format!("{}: {e}", path.display())))?;
        let read = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .connect_with(options)
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(SqliteStore { read, write, write_lock: Mutex::new(()) })
    }

    /// Starts a write transaction: waits for the write lock, then `BEGIN IMMEDIATE`. Drop the
    /// transaction before the guard (declare the guard first).
    async fn begin_write(&self) -> Result<(MutexGuard<'_, ()>, Transaction<'static, Sqlite>), StoreError> {
        let guard = self.write_lock.lock().await;
        let tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        Ok((guard, tx))
    }

    /// Runs `delete` (a `DELETE FROM events` of at most `?3` rows, filtered by `?1` and `?2`)
    /// in one transaction after another until it deletes fewer than `chunk`.
    async fn delete_chunked(&self, delete: &'static str, a: i64, b: i64, chunk: i64) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let (_guard, mut tx) = self.begin_write().await?;
            let n = sqlx::query(delete).bind(a).bind(b).bind(chunk).execute(&mut *tx).await?.rows_affected();
            tx.commit().await?;
            total += n;
            if n < chunk.unsigned_abs() {
                return Ok(total);
            }
        }
    }
}

fn migrator() -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(version, description.into(), MigrationType::Simple, sql.into_sql_str(), false)
            })
            .collect(),
    )
}

fn decode_body(seq: i64, bytes: &[u8]) -> Result<EventBody, StoreError> {
    codec::decode_event(bytes).map_err(|e| StoreError::Corrupt(format!("event {seq} does not decode: {e}")))
}

/// Appends one event inside the caller's transaction; returns its seq.
async fn insert_event(conn: &mut SqliteConnection, at_ms: i64, body: &EventBody) -> Result<i64, StoreError> {
    let bytes = codec::encode_event(body)
        .map_err(|e| StoreError::Invalid(format!("cannot encode a {} event: {e}", body.kind())))?;
    let seq =
        sqlx::query_scalar("INSERT INTO events (at_ms, kind, user_id, body) VALUES (?1, ?2, ?3, ?4) RETURNING seq")
            .bind(at_ms)
            .bind(body.kind())
            .bind(body.user_id())
            .bind(bytes)
            .fetch_one(&mut *conn)
            .await?;
    Ok(seq)
}

/// The stored impression of a request, decoded from its event.
async fn load_impression(conn: &mut SqliteConnection, request_id: &str) -> Result<Option<Impression>, StoreError> {
    let row: Option<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT e.seq, e.body FROM impressions i JOIN events e ON e.seq = i.seq WHERE i.request_id = ?1",
    )
    .bind(request_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((seq, bytes)) = row else {
        return Ok(None);
    };
    match decode_body(seq, &bytes)? {
        EventBody::Impression(imp) => Ok(Some(imp)),
        other => Err(StoreError::Corrupt(format!(
            "event {seq}, indexed as the impression of request {request_id:?}, is a {} event",
            other.kind()
        ))),
    }
}

/// Validates a feedback group against the served impressions (loaded into `served` on first
/// use) and, if every event is valid, records the new ones.
async fn record_group(
    conn: &mut SqliteConnection,
    at_ms: i64,
    group: &[FeedbackIn],
    served: &mut HashMap<String, Option<Impression>>,
) -> Result<GroupOutcome, StoreError> {
    // Validate the whole group before writing any of it.
    let mut joined = Vec::with_capacity(group.len());
    for (index, fb) in group.iter().enumerate() {
        if !served.contains_key(&fb.request_id) {
            let imp = load_impression(conn, &fb.request_id).await?;
            served.insert(fb.request_id.clone(), imp);
        }
        let Some(Some(imp)) = served.get(&fb.request_id) else {
            return Ok(GroupOutcome::UnknownRequest { index, request_id: fb.request_id.clone() });
        };
        let Some(cand) = imp.candidate(&fb.candidate_id) else {
            return Ok(GroupOutcome::UnknownCandidate {
                index,
                request_id: fb.request_id.clone(),
                candidate_id: fb.candidate_id.clone(),
            });
        };
        joined.push(FeedbackEvent {
            request_id: fb.request_id.clone(),
            candidate_id: fb.candidate_id.clone(),
            outcome: fb.outcome,
            user_id: Some(imp.user_id.clone()),
            risk: cand.risk,
            flagged: cand.flagged,
            features: cand.features.clone(),
            model_version: imp.model_version.clone(),
        });
    }
    let (mut recorded, mut duplicates) = (0u32, 0u32);
    for ev in joined {
        let seen: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM feedback_keys WHERE request_id = ?1 AND candidate_id = ?2 AND outcome = ?3",
        )
        .bind(&ev.request_id)
        .bind(&ev.candidate_id)
        .bind(ev.outcome.name())
        .fetch_optional(&mut *conn)
        .await?;
        if seen.is_some() {
            duplicates += 1;
            continue;
        }
        let (request_id, candidate_id, outcome) = (ev.request_id.clone(), ev.candidate_id.clone(), ev.outcome);
        let seq = insert_event(conn, at_ms, &EventBody::Feedback(ev)).await?;
        sqlx::query("INSERT INTO feedback_keys (request_id, candidate_id, outcome, seq) VALUES (?1, ?2, ?3, ?4)")
            .bind(&request_id)
            .bind(&candidate_id)
            .bind(outcome.name())
            .bind(seq)
            .execute(&mut *conn)
            .await?;
        sqlx::query("UPDATE impressions SET has_feedback = 1 WHERE request_id = ?1 AND has_feedback = 0")
            .bind(&request_id)
            .execute(&mut *conn)
            .await?;
        recorded += 1;
    }
    Ok(GroupOutcome::Recorded { recorded, duplicates })
}

type KeyRow = (String, String, Vec<u8>, i64, Option<i64>, Option<i64>);

const LIST_KEYS: &str = "SELECT id, scope, hash, created_at_ms, revoked_at_ms, last_used_at_ms \
                         FROM api_keys ORDER BY created_at_ms DESC, id DESC";
const FIND_KEY: &str = "SELECT id, scope, hash, created_at_ms, revoked_at_ms, last_used_at_ms \
                        FROM api_keys WHERE id = ?1";

fn key_from_row(
    (id, scope, hash, created_at_ms, revoked_at_ms, last_used_at_ms): KeyRow,
) -> Result<KeyRecord, StoreError> {
    let scope = scope.parse::<Scope>().map_err(|e| StoreError::Corrupt(format!("key {id}: {e}")))?;
    let hash = <[u8; 32]>::try_from(hash.as_slice())
        .map_err(|_| StoreError::Corrupt(format!("key {id}: hash is {} bytes, not 32", hash.len())))?;
    Ok(KeyRecord { id, scope, hash, created_at_ms, revoked_at_ms, last_used_at_ms })
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn commit(&self, batch: &WriteBatch) -> Result<Vec<GroupOutcome>, StoreError> {
        let WriteBatch { at_ms, impressions, feedback } = batch;
        let at_ms = *at_ms;
        let (_guard, mut tx) = self.begin_write().await?;
        // Impressions of this commit, by request id (`None`: known to be missing).
        let mut served: HashMap<String, Option<Impression>> = HashMap::new();
        for imp in impressions {
            let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM impressions WHERE request_id = ?1")
                .bind(&imp.request_id)
                .fetch_optional(&mut *tx)
                .await?;
            if exists.is_some() {
                continue;
            }
            let (request_id, user_id) = (imp.request_id.clone(), imp.user_id.clone());
            let body = EventBody::Impression(imp.clone());
            let seq = insert_event(&mut tx, at_ms, &body).await?;
            sqlx::query(
                "INSERT INTO impressions (request_id, seq, user_id, at_ms, has_feedback) VALUES (?1, ?2, ?3, ?4, 0)",
            )
            .bind(&request_id)
            .bind(seq)
            .bind(&user_id)
            .bind(at_ms)
            .execute(&mut *tx)
            .await?;
            if let EventBody::Impression(imp) = body {
                served.insert(request_id, Some(imp));
            }
        }
        let mut outcomes = Vec::with_capacity(feedback.len());
        for group in feedback {
            outcomes.push(record_group(&mut tx, at_ms, group, &mut served).await?);
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn append(&self, at_ms: i64, events: Vec<EventBody>) -> Result<Vec<i64>, StoreError> {
        if let Some(b) = events.iter().find(|b| matches!(b, EventBody::Impression(_) | EventBody::Feedback(_))) {
            return Err(StoreError::Invalid(format!("{} events are written by commit, not append", b.kind())));
        }
        let (_guard, mut tx) = self.begin_write().await?;
        let mut seqs = Vec::with_capacity(events.len());
        for body in &events {
            seqs.push(insert_event(&mut tx, at_ms, body).await?);
        }
        tx.commit().await?;
        Ok(seqs)
    }

    async fn read_events(&self, after: i64, limit: u32) -> Result<Vec<Event>, StoreError> {
        let rows: Vec<(i64, i64, Vec<u8>)> =
            sqlx::query_as("SELECT seq, at_ms, body FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2")
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.read)
                .await?;
        rows.into_iter().map(|(seq, at_ms, bytes)| Ok(Event { seq, at_ms, body: decode_body(seq, &bytes)? })).collect()
    }

    async fn last_seq(&self) -> Result<i64, StoreError> {
        // The AUTOINCREMENT counter, not MAX(seq): it stays put when compaction or erasure
        // deletes the newest events.
        let seq = sqlx::query_scalar("SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0)")
            .fetch_one(&self.read)
            .await?;
        Ok(seq)
    }

    async fn impression(&self, request_id: &str) -> Result<Option<Impression>, StoreError> {
        let mut conn = self.read.acquire().await?;
        load_impression(&mut conn, request_id).await
    }

    async fn save_snapshot(&self, seq: i64, at_ms: i64, blob: Vec<u8>, keep: u32) -> Result<(), StoreError> {
        let (_guard, mut tx) = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO snapshots (seq, at_ms, blob) VALUES (?1, ?2, ?3) \
             ON CONFLICT (seq) DO UPDATE SET at_ms = excluded.at_ms, blob = excluded.blob",
        )
        .bind(seq)
        .bind(at_ms)
        .bind(blob)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM snapshots WHERE seq NOT IN (SELECT seq FROM snapshots ORDER BY seq DESC LIMIT ?1)")
            .bind(i64::from(keep))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_snapshots(&self) -> Result<Vec<SnapshotInfo>, StoreError> {
        let rows: Vec<(i64, i64, i64)> =
            sqlx::query_as("SELECT seq, at_ms, length(blob) FROM snapshots ORDER BY seq DESC")
                .fetch_all(&self.read)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(seq, at_ms, bytes)| SnapshotInfo { seq, at_ms, bytes: bytes.unsigned_abs() })
            .collect())
    }

    async fn load_snapshot(&self, seq: i64) -> Result<Option<Vec<u8>>, StoreError> {
        let blob = sqlx::query_scalar("SELECT blob FROM snapshots WHERE seq = ?1")
            .bind(seq)
            .fetch_optional(&self.read)
            .await?;
        Ok(blob)
    }

    async fn compact(
        &self,
        impressions_before_ms: i64,
        feedback_before_ms: Option<i64>,
        max_seq: i64,
    ) -> Result<Compacted, StoreError> {
        let impressions =
            self.delete_chunked(COMPACT_IMPRESSIONS, impressions_before_ms, max_seq, COMPACT_CHUNK).await?;
        let feedback = match feedback_before_ms {
            Some(before) => self.delete_chunked(COMPACT_FEEDBACK, before, max_seq, COMPACT_CHUNK).await?,
            None => 0,
        };
        Ok(Compacted { impressions, feedback })
    }

    async fn erase_user(&self, user_id: &str, at_ms: i64) -> Result<(i64, u64, u64), StoreError> {
        let (_guard, mut tx) = self.begin_write().await?;
        let impressions = sqlx::query("DELETE FROM events WHERE kind = 'impression' AND user_id = ?1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let rows: Vec<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT seq, body FROM events WHERE kind = 'feedback' AND user_id = ?1")
                .bind(user_id)
                .fetch_all(&mut *tx)
                .await?;
        let mut feedback = 0;
        for (seq, bytes) in rows {
            let EventBody::Feedback(mut ev) = decode_body(seq, &bytes)? else {
                return Err(StoreError::Corrupt(format!("event {seq} is stored as feedback but is not")));
            };
            ev.user_id = None;
            let bytes = codec::encode_event(&EventBody::Feedback(ev))
                .map_err(|e| StoreError::Invalid(format!("cannot encode event {seq}: {e}")))?;
            sqlx::query("UPDATE events SET body = ?1, user_id = NULL WHERE seq = ?2")
                .bind(bytes)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
            feedback += 1;
        }
        let tombstone = insert_event(&mut tx, at_ms, &EventBody::UserErased { user_id: user_id.to_owned() }).await?;
        tx.commit().await?;
        Ok((tombstone, impressions, feedback))
    }

    async fn insert_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        let (_guard, mut tx) = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO api_keys (id, scope, hash, created_at_ms, revoked_at_ms, last_used_at_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(&key.id)
        .bind(key.scope.name())
        .bind(key.hash.as_slice())
        .bind(key.created_at_ms)
        .bind(key.revoked_at_ms)
        .bind(key.last_used_at_ms)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Invalid(format!("a key with id {:?} already exists", key.id)));
            }
            other => other?,
        };
        let body = EventBody::KeyCreated { key_id: key.id.clone(), scope: key.scope };
        insert_event(&mut tx, key.created_at_ms, &body).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let rows: Vec<KeyRow> = sqlx::query_as(LIST_KEYS).fetch_all(&self.read).await?;
        rows.into_iter().map(key_from_row).collect()
    }

    async fn find_key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let row: Option<KeyRow> = sqlx::query_as(FIND_KEY).bind(id).fetch_optional(&self.read).await?;
        row.map(key_from_row).transpose()
    }

    async fn revoke_key(&self, id: &str, at_ms: i64) -> Result<bool, StoreError> {
        let (_guard, mut tx) = self.begin_write().await?;
        let changed = sqlx::query("UPDATE api_keys SET revoked_at_ms = ?1 WHERE id = ?2 AND revoked_at_ms IS NULL")
            .bind(at_ms)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if changed == 0 {
            return Ok(false);
        }
        insert_event(&mut tx, at_ms, &EventBody::KeyRevoked { key_id: id.to_owned() }).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn touch_keys(&self, used: &[(String, i64)]) -> Result<(), StoreError> {
        if used.is_empty() {
            return Ok(());
        }
        let (_guard, mut tx) = self.begin_write().await?;
        for (id, at_ms) in used {
            sqlx::query("UPDATE api_keys SET last_used_at_ms = MAX(COALESCE(last_used_at_ms, ?1), ?1) WHERE id = ?2")
                .bind(at_ms)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn put_model(&self, record: &ModelRecord, file: Vec<u8>) -> Result<(), StoreError> {
        let (_guard, mut tx) = self.begin_write().await?;
        let done = sqlx::query(
            "INSERT INTO models (version, created_at_ms, trained_through_seq, metrics, file) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (version) DO NOTHING",
        )
        .bind(&record.version)
        .bind(record.created_at_ms)
        .bind(record.trained_through_seq)
        .bind(&record.metrics_json)
        .bind(file)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Invalid(format!("model version {} exists already", record.version)));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_models(&self) -> Result<Vec<ModelRecord>, StoreError> {
        let rows: Vec<(String, i64, i64, String, i64)> = sqlx::query_as(
            "SELECT version, created_at_ms, trained_through_seq, metrics, length(file) FROM models \
             ORDER BY created_at_ms DESC, version DESC",
        )
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(version, created_at_ms, trained_through_seq, metrics_json, bytes)| ModelRecord {
                version,
                created_at_ms,
                trained_through_seq,
                metrics_json,
                bytes: bytes.unsigned_abs(),
            })
            .collect())
    }

    async fn load_model(&self, version: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let file = sqlx::query_scalar("SELECT file FROM models WHERE version = ?1")
            .bind(version)
            .fetch_optional(&self.read)
            .await?;
        Ok(file)
    }

    async fn delete_model(&self, version: &str) -> Result<bool, StoreError> {
        let (_guard, mut tx) = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM models WHERE version = ?1").bind(version).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    async fn last_activation(&self) -> Result<Option<(i64, ModelActivation)>, StoreError> {
        let row: Option<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT seq, body FROM events WHERE kind = 'model_activated' ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&self.read)
                .await?;
        match row {
            None => Ok(None),
            Some((seq, bytes)) => match decode_body(seq, &bytes)? {
                EventBody::ModelActivated(a) => Ok(Some((seq, a))),
                other => Err(StoreError::Corrupt(format!(
                    "event {seq} is a {} event stored as model_activated",
                    other.kind()
                ))),
            },
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{CandidateRecord, Outcome};
    use crate::features::Features;

    #[test]
    fn every_migration_file_is_registered_in_order() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .expect("migrations dir")
            .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<String> = MIGRATIONS.iter().map(|(v, d, _)| format!("{v:04}_{d}.sql")).collect();
        assert_eq!(files, listed);
        for (name, (_, _, sql)) in files.iter().zip(MIGRATIONS) {
            assert_eq!(&std::fs::read_to_string(dir.join(name)).expect("migration file"), sql, "{name}");
        }
    }

    #[tokio::test]
    async fn a_body_that_does_not_decode_is_corrupt_naming_its_seq() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("g.db"), Durability::Process).await.expect("open");
        let seqs = store.append(1, vec![EventBody::PolicyReset { user_id: "u".into() }]).await.expect("append");
        sqlx::query("UPDATE events SET body = x'0102ff' WHERE seq = ?1")
            .bind(seqs[0])
            .execute(&store.write)
            .await
            .expect("update");
        let err = store.read_events(0, 10).await.expect_err("corrupt");
        assert!(matches!(&err, StoreError::Corrupt(m) if m.contains(&format!("event {}", seqs[0]))), "{err}");
    }

    fn impression(request_id: &str, user_id: &str) -> Impression {
        Impression {
            request_id: request_id.into(),
            user_id: user_id.into(),
            key_id: "k".into(),
            model_version: "m".into(),
            language: None,
            prompt_risk: 0.0,
            candidates: vec![CandidateRecord {
                id: "c".into(),
                risk: 0.5,
                flagged: false,
                features: Features { idx: vec![3, 17], val: vec![1.0, 0.5], offset: 0.0 },
                rules: vec![],
                text: None,
            }],
        }
    }

    fn accepted(request_id: &str) -> Vec<FeedbackIn> {
        vec![FeedbackIn { request_id: request_id.into(), candidate_id: "c".into(), outcome: Outcome::Accepted }]
    }

    async fn count(store: &SqliteStore, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&store.read).await.expect("count")
    }

    #[tokio::test]
    async fn index_rows_and_keys_go_with_their_events() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("g.db"), Durability::Power).await.expect("open");
        let batch = WriteBatch {
            at_ms: 10,
            impressions: vec![impression("a", "u1"), impression("b", "u1"), impression("c", "u2")],
            feedback: vec![accepted("b"), accepted("c")],
        };
        store.commit(&batch).await.expect("commit");
        store.compact(100, Some(100), 1_000).await.expect("compact");
        store.erase_user("u1", 20).await.expect("erase");
        assert_eq!(count(&store, "SELECT COUNT(*) FROM impressions").await, 1);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM events WHERE kind = 'impression'").await, 1);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM feedback_keys").await, 0);
        let violations: Vec<(String, Option<i64>, String, i64)> =
            sqlx::query_as("PRAGMA foreign_key_check").fetch_all(&store.read).await.expect("fk check");
        assert!(violations.is_empty(), "{violations:?}");
    }

    #[tokio::test]
    async fn compaction_deletes_in_chunks_until_done() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("g.db"), Durability::Process).await.expect("open");
        let impressions = (0..12).map(|i| impression(&format!("r{i}"), "u")).collect();
        let feedback = (0..12).map(|i| accepted(&format!("r{i}"))).collect();
        let batch = WriteBatch { at_ms: 10, impressions, feedback };
        store.commit(&batch).await.expect("commit");
        let max = store.last_seq().await.expect("last seq");
        let deleted = store.delete_chunked(COMPACT_FEEDBACK, 100, max, 5).await.expect("delete");
        assert_eq!(deleted, 12);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM events WHERE kind = 'feedback'").await, 0);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM feedback_keys").await, 0);
    }
}
