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
//! Checkpoints (copying the WAL into the database file, with a flush of each) run beside the
//! writes, not in them: SQLite's automatic checkpoint would run inside the `COMMIT` that
//! crosses its threshold, and at a few MiB per group commit that is nearly every commit. A
//! task of its own ([`checkpointer`]), on a connection of its own, backfills the WAL after
//! commits while the next ones run; now and then it takes the write lock for a moment, so the
//! next commit finds the WAL fully backfilled and starts it over instead of growing it. The
//! write connection keeps an automatic checkpoint as a backstop, far above that size.
//!
//! A group commit reads before it writes: the stored impressions its feedback joins and which
//! of its idempotency keys are stored. It makes those reads before it takes the write lock, on
//! the read pool and side by side ([`SqliteStore::prefetch`]), so the one writer spends its
//! time writing (issue 5: the reads were most of a commit). That is sound because commits run
//! one at a time (`commit_lock`) and the only other writes that could change what the reads saw
//! are deletions of events, which end with [`SqliteStore::finish_deleting`] and so bump
//! `deletions`: a commit that finds it moved reads again inside its transaction. Ids the reads
//! did not find are looked up again inside it too, in case another process wrote the file.
//!
//! Bodies of events are [`codec`] blobs. Schema: `migrations/sqlite/`.

use super::{
    Appends, AuditEntry, CommitPlan, Compacted, Decision, Durability, GroupOutcome, Key, KeyRecord, ModelRecord,
    NewAudit, NewReviewItem, ReviewFilter, ReviewItem, ReviewStatus, ReviewUpkeep, SnapshotInfo, Store, StoreError,
    VerdictIn, WriteBatch, codec, cpu_bound, decode_stored_impression,
};
use crate::events::{Event, EventBody, Impression, ModelActivation, Scope};
use async_trait::async_trait;
use futures_util::stream::{FuturesUnordered, StreamExt};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::query_builder::Separated;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, SqlSafeStr, Sqlite, SqliteConnection, Transaction};
use std::collections::HashSet;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Mutex, MutexGuard, mpsc};

#[path = "sqlite_oversight.rs"]
mod oversight;

/// The migrations, in version order: `(version, description, sql)`, one per file of
/// `migrations/sqlite/` (a unit test checks that the list and the directory agree). Embedded
/// with `include_str!` rather than `sqlx::migrate!`, which needs sqlx's `macros` feature and
/// with it a second, host-side build of sqlx and the bundled SQLite; the migrations table and
/// checksums are the same as `migrate!` would write.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../../migrations/sqlite/0001_init.sql")),
    (2, "models", include_str!("../../migrations/sqlite/0002_models.sql")),
    (3, "oversight", include_str!("../../migrations/sqlite/0003_oversight.sql")),
    (4, "anomaly_review", include_str!("../../migrations/sqlite/0004_anomaly_review.sql")),
    (5, "feedback_writes", include_str!("../../migrations/sqlite/0005_feedback_writes.sql")),
];

/// Connections for readers.
const READ_CONNECTIONS: u32 = 4;

/// Page cache of the write connection, in KiB (SQLite's default is 2 MiB): a commit of a few
/// thousand events dirties several MiB of pages, and a smaller cache spills them to the WAL
/// before the commit and reads the same index pages again and again.
const WRITE_CACHE_KIB: u32 = 64 * 1024;

/// Rows the connection's worker thread may queue for the task reading them (sqlx's default is
/// 50): loading a batch's impressions returns thousands, each hand-over a thread wake-up.
const ROW_BUFFER: usize = 4096;

/// Rows deleted per transaction by [`Store::compact`], so a large compaction never holds the
/// write lock for long and commits interleave with it.
const COMPACT_CHUNK: i64 = 5_000;

/// One chunk of the impressions compaction has not examined yet (`?1` cut, `?2` max seq, `?3`
/// chunk), each with whether it got feedback (has an idempotency key). A commit does not mark the
/// impressions its feedback joins (migration 5): compaction marks or deletes each one it examines.
const UNEXAMINED_IMPRESSIONS: &str = "SELECT i.seq, EXISTS (SELECT 1 FROM feedback_keys k \
     WHERE k.request_id = i.request_id) FROM impressions i \
     WHERE i.has_feedback = 0 AND i.at_ms < ?1 AND i.seq <= ?2 LIMIT ?3";

/// Compaction of feedback (`?1` cut, `?2` max seq, `?3` chunk). Their idempotency keys go with
/// them (ON DELETE CASCADE): a duplicate arriving after its original was compacted is recorded
/// again, if its impression is still there.
const COMPACT_FEEDBACK: &str = "DELETE FROM events WHERE seq IN (SELECT seq FROM events \
     WHERE kind = 'feedback' AND at_ms < ?1 AND seq <= ?2 LIMIT ?3)";

/// A user's feedback events whose user id is still set (`?1` the user): through the user's
/// impressions and the idempotency keys of their feedback. Every feedback event has a key, and
/// its impression stays while the event has a user id (compaction keeps impressions with keys,
/// erasure unsets the user id where it deletes the impression). `kind = 'impression'` is the
/// condition of the user index, spelt as it is there, so the planner uses the index.
const USER_FEEDBACK: &str = "SELECT e.seq, e.body FROM events ie \
     JOIN impressions i ON i.seq = ie.seq \
     JOIN feedback_keys k ON k.request_id = i.request_id \
     JOIN events e ON e.seq = k.seq \
     WHERE ie.kind = 'impression' AND ie.user_id = ?1 AND e.user_id IS NOT NULL";

/// Deletes a user's impression events (`?1` the user); their index rows go with them.
const USER_IMPRESSIONS_DELETE: &str = "DELETE FROM events WHERE kind = 'impression' AND user_id = ?1";

/// WAL size, in pages, past which the checkpointer makes the next commit start the WAL over
/// (64 MiB of 4 KiB pages: a few seconds of feedback at full speed).
const WAL_RESTART_PAGES: i64 = 16_384;

/// WAL size, in pages, past which the write connection checkpoints by itself after a commit,
/// should the checkpointer fall behind.
const WAL_BACKSTOP_PAGES: i64 = 4 * WAL_RESTART_PAGES;

/// The SQLite store. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct SqliteStore {
    read: SqlitePool,
    write: SqlitePool,
    write_lock: Arc<Mutex<()>>,
    /// Held by [`Store::commit`] from its first read to its end: commits run one at a time, so
    /// what one reads before taking the write lock only a deletion can have changed.
    commit_lock: Mutex<()>,
    /// Bumped by every transaction that deletes events (and with them impressions' rows and
    /// idempotency keys), in [`SqliteStore::finish_deleting`], while it still holds the write
    /// lock; a commit whose reads were made under another value reads again. Other writes (keys,
    /// snapshots, review items) cannot change what a commit reads and do not bump it: bumping it
    /// in every transaction made commits read again after the review worker's few writes a
    /// second, and cost 8% of durable feedback (measured, 2026-11-23).
    deletions: AtomicU64,
    /// Wakes the [`checkpointer`] after a commit; dropping it stops the checkpointer.
    checkpoint: mpsc::Sender<()>,
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
            .connect_with(
                options
                    .clone()
                    .pragma("cache_size", format!("-{}", WRITE_CACHE_KIB))
                    .pragma("temp_store", "memory")
                    .pragma("wal_autocheckpoint", WAL_BACKSTOP_PAGES.to_string())
                    .row_buffer_size(ROW_BUFFER),
            )
            .await
            .map_err(|e| unavailable(&e))?;
        migrator().run(&write).await.map_err(|e| StoreError::Migration(format!("{}: {e}", path.display())))?;
        let checkpoints = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(|e| unavailable(&e))?;
        let read = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .connect_with(options.row_buffer_size(ROW_BUFFER))
            .await
            .map_err(|e| unavailable(&e))?;
        let write_lock = Arc::new(Mutex::new(()));
        let (checkpoint, wake) = mpsc::channel(1);
        tokio::spawn(checkpointer(checkpoints, Arc::clone(&write_lock), wake));
        Ok(SqliteStore {
            read,
            write,
            write_lock,
            commit_lock: Mutex::new(()),
            deletions: AtomicU64::new(0),
            checkpoint,
        })
    }

    /// Starts a write transaction: waits for the write lock, then `BEGIN IMMEDIATE`. Drop the
    /// transaction before the guard (declare the guard first).
    async fn begin_write(&self) -> Result<(MutexGuard<'_, ()>, Transaction<'static, Sqlite>), StoreError> {
        let guard = self.write_lock.lock().await;
        let tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        Ok((guard, tx))
    }

    /// Commits a write transaction and wakes the checkpointer.
    async fn finish(&self, tx: Transaction<'static, Sqlite>) -> Result<(), StoreError> {
        tx.commit().await?;
        // Full: a wake-up is pending already.
        let _ = self.checkpoint.try_send(());
        Ok(())
    }

    /// [`SqliteStore::finish`] for a transaction that deleted events: every such transaction
    /// ends with this, while its caller still holds the write lock, so that a commit whose reads
    /// came before it reads again (see `deletions`).
    async fn finish_deleting(&self, tx: Transaction<'static, Sqlite>) -> Result<(), StoreError> {
        self.finish(tx).await?;
        self.deletions.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Examines the impressions older than `before_ms` (up to `max_seq`) that compaction has not
    /// examined yet, one transaction per `chunk` of them: deletes those without feedback, marks
    /// the others. Returns how many it deleted.
    async fn compact_impressions(&self, before_ms: i64, max_seq: i64, chunk: i64) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let (_guard, mut tx) = self.begin_write().await?;
            let rows: Vec<(i64, bool)> = sqlx::query_as(UNEXAMINED_IMPRESSIONS)
                .bind(before_ms)
                .bind(max_seq)
                .bind(chunk)
                .fetch_all(&mut *tx)
                .await?;
            let (fed, unfed): (Vec<_>, Vec<_>) = rows.iter().partition(|(_, fed)| *fed);
            let unfed: Vec<i64> = unfed.into_iter().map(|&(seq, _)| seq).collect();
            let fed: Vec<i64> = fed.into_iter().map(|&(seq, _)| seq).collect();
            // The index rows of deleted impressions go with their events (ON DELETE CASCADE).
            for seqs in unfed.chunks(MAX_PARAMS) {
                in_list("DELETE FROM events WHERE seq IN ", seqs).build().execute(&mut *tx).await?;
            }
            for seqs in fed.chunks(MAX_PARAMS) {
                in_list("UPDATE impressions SET has_feedback = 1 WHERE seq IN ", seqs)
                    .build()
                    .execute(&mut *tx)
                    .await?;
            }
            self.finish_deleting(tx).await?;
            total += unfed.len() as u64;
            if (rows.len() as i64) < chunk {
                return Ok(total);
            }
        }
    }

    /// Runs `delete` (a `DELETE FROM events` of at most `?3` rows, filtered by `?1` and `?2`)
    /// in one transaction after another until it deletes fewer than `chunk`.
    async fn delete_chunked(&self, delete: &'static str, a: i64, b: i64, chunk: i64) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let (_guard, mut tx) = self.begin_write().await?;
            let n = sqlx::query(delete).bind(a).bind(b).bind(chunk).execute(&mut *tx).await?.rows_affected();
            self.finish_deleting(tx).await?;
            total += n;
            if n < chunk.unsigned_abs() {
                return Ok(total);
            }
        }
    }
}

/// Backfills the WAL into the database file after commits, beside them (see the module docs),
/// until `wake` closes. Failures are logged and retried on the next wake-up: the write
/// connection's automatic checkpoint stays as a backstop.
async fn checkpointer(pool: SqlitePool, write_lock: Arc<Mutex<()>>, mut wake: mpsc::Receiver<()>) {
    while wake.recv().await.is_some() {
        // `(busy, WAL pages, pages backfilled)`; the copies and flushes happen here, while
        // commits go on.
        let pages = match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&pool).await
        {
            Ok((_, pages, _)) => pages,
            Err(e) => {
                tracing::warn!(error = %e, "wal checkpoint failed");
                continue;
            }
        };
        if pages >= WAL_RESTART_PAGES {
            // Between two commits, backfill what was committed meanwhile: the next commit then
            // finds nothing left to copy and starts the WAL over (unless a reader still reads
            // an older snapshot; then a later round does).
            let _guard = write_lock.lock().await;
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
                tracing::warn!(error = %e, "wal checkpoint failed");
            }
        }
    }
    pool.close().await;
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
    row.map(|(seq, bytes)| decode_stored_impression(seq, &bytes, request_id).map_err(StoreError::Corrupt)).transpose()
}

/// Bound parameters per statement at most (SQLite's limit is 32766).
const MAX_PARAMS: usize = 30_000;

/// Request ids per query that loads impressions: a batch's are loaded in a few chunks, each
/// decoded while the next is read.
const LOAD_IDS: usize = 1_024;

/// Rows per multi-row `INSERT` at most. Full statements are prepared once and cached by the
/// connection; the rest of a batch takes one more, prepared for the occasion.
const INSERT_ROWS: usize = 1_000;

/// Loads the stored impressions of `ids` into `plan` (on `conn`, the write transaction), each
/// chunk decoded while the database reads the next.
async fn load_impressions(
    conn: &mut SqliteConnection,
    plan: &mut CommitPlan<'_>,
    ids: &[&str],
) -> Result<(), StoreError> {
    let mut loaded = Vec::new();
    for ids in ids.chunks(LOAD_IDS) {
        let mut q = in_list(SELECT_IMPRESSIONS, ids);
        let previous = std::mem::take(&mut loaded);
        let (rows, decoded) = tokio::join!(
            biased;
            q.build().persistent(false).fetch_all(&mut *conn),
            async { load_rows(plan, previous) }
        );
        decoded?;
        loaded = rows?;
    }
    load_rows(plan, loaded)
}

/// The stored impressions of a list of request ids: `(request_id, seq, body)`.
const SELECT_IMPRESSIONS: &str =
    "SELECT i.request_id, e.seq, e.body FROM impressions i JOIN events e ON e.seq = i.seq WHERE i.request_id IN ";

/// What one read of [`SqliteStore::prefetch`] gives.
enum Read<'k> {
    Impressions(Vec<SqliteRow>),
    Keys(HashSet<Key<'k>>),
}

type ReadFuture<'f, 'k> = Pin<Box<dyn Future<Output = Result<Read<'k>, StoreError>> + Send + 'f>>;

impl SqliteStore {
    /// The reads of a commit, made before it takes the write lock, on the read pool and beside
    /// each other (a commit spent most of its time in the write lock reading): the stored
    /// impressions the batch's feedback joins, handed to `plan` as they arrive, and which of
    /// `keys` are stored, which it returns. The batch's own impressions are not read here: they
    /// are new, as a rule, and whether they are is asked inside the transaction anyway.
    async fn prefetch<'k>(&self, plan: &mut CommitPlan<'k>, keys: &[Key<'k>]) -> Result<HashSet<Key<'k>>, StoreError> {
        let ids = plan.joined_ids();
        // One read per connection: the keys, and the ids in equal parts.
        let parts = (READ_CONNECTIONS as usize).saturating_sub(1).max(1);
        let per = ids.len().div_ceil(parts).clamp(1, LOAD_IDS);
        let mut reads: FuturesUnordered<ReadFuture<'_, 'k>> = FuturesUnordered::new();
        if !keys.is_empty() {
            reads.push(Box::pin(async {
                let mut conn = self.read.acquire().await?;
                Ok(Read::Keys(stored_keys(&mut conn, keys).await?))
            }));
        }
        for ids in ids.chunks(per) {
            reads.push(Box::pin(async move {
                let mut conn = self.read.acquire().await?;
                Ok(Read::Impressions(
                    in_list(SELECT_IMPRESSIONS, ids).build().persistent(false).fetch_all(&mut *conn).await?,
                ))
            }));
        }
        let mut stored = HashSet::new();
        while let Some(read) = reads.next().await {
            match read? {
                Read::Impressions(rows) => load_rows(plan, rows)?,
                Read::Keys(keys) => stored = keys,
            }
        }
        Ok(stored)
    }
}

/// Checks a [`CommitPlan`], whose impressions are loaded, given its stored keys, and writes its
/// [`Appends`] inside the caller's transaction: for `n` new events that is
/// `2 + 4 * ceil(n / INSERT_ROWS)` statements at most, however many groups there are.
async fn commit_plan<'k>(
    conn: &mut SqliteConnection,
    plan: &mut CommitPlan<'k>,
    stored: &HashSet<Key<'k>>,
    at_ms: i64,
) -> Result<Vec<GroupOutcome>, StoreError> {
    plan.validate()?;
    plan.mark_stored_keys(stored);
    let bodies = cpu_bound(|| plan.encode());
    // The impressions the feedback joins are not marked here: compaction finds their feedback
    // through the keys (see UNEXAMINED_IMPRESSIONS).
    let Appends { impressions: imps, feedback: fb, outcomes } = plan.settle(bodies?);

    let seqs = insert_events(conn, at_ms, "impression", imps.user_ids.iter().zip(imps.bodies)).await?;
    let rows = imps.request_ids.iter().zip(&imps.user_ids).zip(seqs);
    let head = "INSERT INTO impressions (request_id, seq, user_id, at_ms, has_feedback) ";
    insert_rows(conn, head, rows, |mut row, ((request_id, user_id), seq)| {
        row.push_bind(*request_id).push_bind(seq).push_bind(*user_id).push_bind(at_ms).push("0");
    })
    .await?;
    let seqs = insert_events(conn, at_ms, "feedback", fb.user_ids.iter().zip(fb.bodies)).await?;
    let rows = fb.request_ids.iter().zip(&fb.candidate_ids).zip(&fb.outcomes).zip(seqs);
    let head = "INSERT INTO feedback_keys (request_id, candidate_id, outcome, seq) ";
    insert_rows(conn, head, rows, |mut row, (((request_id, candidate_id), outcome), seq)| {
        row.push_bind(*request_id).push_bind(*candidate_id).push_bind(*outcome).push_bind(seq);
    })
    .await?;
    Ok(outcomes)
}

/// Hands rows of `(request_id, seq, body)` to [`CommitPlan::load`].
fn load_rows(plan: &mut CommitPlan<'_>, rows: Vec<SqliteRow>) -> Result<(), StoreError> {
    for row in &rows {
        plan.load(row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    }
    Ok(())
}

/// The stored ones among `keys`.
async fn stored_keys<'k>(conn: &mut SqliteConnection, keys: &[Key<'k>]) -> Result<HashSet<Key<'k>>, StoreError> {
    let mut hits = HashSet::new();
    for chunk in keys.chunks(MAX_PARAMS / 4) {
        // A join probes the primary key; `(request_id, candidate_id, outcome) IN (VALUES ..)`
        // would scan the table. Column 1 is the key's index in `chunk`.
        let mut q = QueryBuilder::<Sqlite>::new("SELECT v.column1 FROM (");
        q.push_values(chunk.iter().zip(0i64..), |mut row, (&(request_id, candidate_id, outcome), index)| {
            row.push_bind(index).push_bind(request_id).push_bind(candidate_id).push_bind(outcome.name());
        });
        q.push(
            ") AS v JOIN feedback_keys k \
             ON k.request_id = v.column2 AND k.candidate_id = v.column3 AND k.outcome = v.column4",
        );
        let found = q.build_query_scalar::<i64>().persistent(false).fetch_all(&mut *conn).await?;
        hits.extend(found.into_iter().filter_map(|i| usize::try_from(i).ok().and_then(|i| chunk.get(i)).copied()));
    }
    Ok(hits)
}

/// `head (?, ?, ...)` with one parameter per id.
fn in_list<'t, T>(head: &str, ids: &[T]) -> QueryBuilder<Sqlite>
where
    T: Copy + sqlx::Encode<'t, Sqlite> + sqlx::Type<Sqlite>,
{
    let mut q = QueryBuilder::new(head);
    q.push("(");
    let mut list = q.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    q.push(")");
    q
}

/// Appends events of one kind (`kind` is a constant, spliced into the SQL) from `(user_id,
/// body)` pairs; returns their seqs, in the order given.
async fn insert_events<'r>(
    conn: &mut SqliteConnection,
    at_ms: i64,
    kind: &'static str,
    rows: impl ExactSizeIterator<Item = (&'r &'r str, Vec<u8>)>,
) -> Result<Vec<i64>, StoreError> {
    let n = rows.len();
    let mut seqs = Vec::with_capacity(n);
    let mut rows = rows.peekable();
    while rows.peek().is_some() {
        let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO events (at_ms, kind, user_id, body) ");
        let mut count = 0;
        q.push_values(rows.by_ref().take(INSERT_ROWS), |mut row, (user_id, body)| {
            row.push_bind(at_ms).push(format_args!("'{kind}'")).push_bind(*user_id).push_bind(body);
            count += 1;
        });
        q.push(" RETURNING seq");
        let mut chunk: Vec<i64> = q.build_query_scalar().persistent(count == INSERT_ROWS).fetch_all(&mut *conn).await?;
        // Rows are inserted in the order given, and AUTOINCREMENT numbers them in that order; the
        // order RETURNING reports them in is unspecified.
        chunk.sort_unstable();
        seqs.append(&mut chunk);
    }
    if seqs.len() != n {
        return Err(StoreError::Unavailable(format!("inserted {n} events, got {} seqs back", seqs.len())));
    }
    Ok(seqs)
}

/// Multi-row `INSERT`s (`head` names the table and columns, `push` binds one row), at most
/// [`INSERT_ROWS`] rows each.
async fn insert_rows<T>(
    conn: &mut SqliteConnection,
    head: &str,
    rows: impl Iterator<Item = T>,
    mut push: impl FnMut(Separated<'_, Sqlite, &'static str>, T),
) -> Result<(), StoreError> {
    let mut rows = rows.peekable();
    while rows.peek().is_some() {
        let mut q = QueryBuilder::<Sqlite>::new(head);
        let mut count = 0;
        q.push_values(rows.by_ref().take(INSERT_ROWS).inspect(|_| count += 1), &mut push);
        q.build().persistent(count == INSERT_ROWS).execute(&mut *conn).await?;
    }
    Ok(())
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
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let _commit = self.commit_lock.lock().await;
        let mut plan = CommitPlan::new(batch);
        let keys = plan.batch_keys();
        let epoch = self.deletions.load(Ordering::Acquire);
        let mut stored = self.prefetch(&mut plan, &keys).await?;
        let (_guard, mut tx) = self.begin_write().await?;
        if self.deletions.load(Ordering::Acquire) == epoch {
            // Nothing was deleted since the reads. Only ids they did not find are looked up
            // again: no commit ran meanwhile, but another process may have written the file.
            let missing = plan.missing_ids();
            load_impressions(&mut tx, &mut plan, &missing).await?;
        } else {
            plan = CommitPlan::new(batch);
            let ids = plan.lookup_ids();
            load_impressions(&mut tx, &mut plan, &ids).await?;
            stored = stored_keys(&mut tx, &keys).await?;
        }
        let outcomes = commit_plan(&mut tx, &mut plan, &stored, batch.at_ms).await?;
        oversight::insert_review_items(&mut tx, &batch.review).await?;
        self.finish(tx).await?;
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
        self.finish(tx).await?;
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
        self.finish(tx).await?;
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
        let impressions = self.compact_impressions(impressions_before_ms, max_seq, COMPACT_CHUNK).await?;
        let feedback = match feedback_before_ms {
            Some(before) => self.delete_chunked(COMPACT_FEEDBACK, before, max_seq, COMPACT_CHUNK).await?,
            None => 0,
        };
        Ok(Compacted { impressions, feedback })
    }

    async fn erase_user(&self, user_id: &str, at_ms: i64) -> Result<(i64, u64, u64), StoreError> {
        let (_guard, mut tx) = self.begin_write().await?;
        // Feedback is found through the user's impressions (only those are indexed by user,
        // migration 5), so before they are deleted.
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(USER_FEEDBACK).bind(user_id).fetch_all(&mut *tx).await?;
        let impressions = sqlx::query(USER_IMPRESSIONS_DELETE).bind(user_id).execute(&mut *tx).await?.rows_affected();
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
        sqlx::query("DELETE FROM review_items WHERE user_id = ?1").bind(user_id).execute(&mut *tx).await?;
        let tombstone = insert_event(&mut tx, at_ms, &EventBody::UserErased { user_id: user_id.to_owned() }).await?;
        self.finish_deleting(tx).await?;
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
        self.finish(tx).await?;
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
        self.finish(tx).await?;
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
        self.finish(tx).await?;
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
        self.finish(tx).await?;
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
        self.finish(tx).await?;
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

    async fn add_review_items(&self, items: &[NewReviewItem]) -> Result<u64, StoreError> {
        oversight::add_review_items(self, items).await
    }

    async fn report_review_items(&self, keys: &[(String, String)]) -> Result<Vec<usize>, StoreError> {
        oversight::report_review_items(self, keys).await
    }

    async fn review_item(&self, id: i64) -> Result<Option<ReviewItem>, StoreError> {
        oversight::review_item(self, id).await
    }

    async fn list_review(&self, filter: &ReviewFilter) -> Result<Vec<ReviewItem>, StoreError> {
        oversight::list_review(self, filter).await
    }

    async fn decide_review(&self, verdict: &VerdictIn) -> Result<Decision, StoreError> {
        oversight::decide_review(self, verdict).await
    }

    async fn review_upkeep(
        &self,
        expire_before_ms: i64,
        purge_before_ms: i64,
        max_uncertain: u64,
    ) -> Result<ReviewUpkeep, StoreError> {
        oversight::review_upkeep(self, expire_before_ms, purge_before_ms, max_uncertain).await
    }

    async fn review_counts(&self) -> Result<Vec<(ReviewStatus, u64)>, StoreError> {
        oversight::review_counts(self).await
    }

    async fn incident_counts(&self, since_ms: i64) -> Result<(u64, u64), StoreError> {
        oversight::incident_counts(self, since_ms).await
    }

    async fn add_audit(&self, entry: &NewAudit) -> Result<i64, StoreError> {
        oversight::add_audit(self, entry).await
    }

    async fn list_audit(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        oversight::list_audit(self, before, limit).await
    }

    async fn rule_events(&self, through_seq: i64) -> Result<Vec<Event>, StoreError> {
        oversight::rule_events(self, through_seq).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{CandidateRecord, FeedbackIn, Outcome};
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

    #[tokio::test]
    async fn sqlite_is_built_with_the_repository_s_compile_options() {
        // .cargo/config.toml sets them through LIBSQLITE3_FLAGS; a build that lost them (another
        // variable name in a new libsqlite3-sys, say) would still work, only slower.
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("g.db"), Durability::Process).await.expect("open");
        let options: Vec<String> =
            sqlx::query_scalar("PRAGMA compile_options").fetch_all(&store.read).await.expect("compile options");
        assert!(options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"), "{options:?}");
        assert!(!options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"), "{options:?}");
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
            review: Vec::new(),
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
    async fn compaction_examines_each_impression_once_in_chunks_and_marks_those_with_feedback() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("g.db"), Durability::Process).await.expect("open");
        let impressions = (0..7).map(|i| impression(&format!("r{i}"), if i < 5 { "u1" } else { "u2" })).collect();
        // r0, r3 and r6 get feedback; r3's comes in a later commit.
        let batch =
            WriteBatch { at_ms: 10, impressions, feedback: vec![accepted("r0"), accepted("r6")], review: vec![] };
        store.commit(&batch).await.expect("commit");
        let later = WriteBatch { at_ms: 20, impressions: vec![], feedback: vec![accepted("r3")], review: vec![] };
        store.commit(&later).await.expect("commit");
        let unexamined = "SELECT COUNT(*) FROM impressions WHERE has_feedback = 0";
        assert_eq!(count(&store, unexamined).await, 7, "a commit does not mark impressions");

        // Chunks of 2: every impression is examined once, the ones without feedback deleted.
        let max = store.last_seq().await.expect("last seq");
        assert_eq!(store.compact_impressions(100, max, 2).await.expect("compact"), 4);
        assert_eq!(count(&store, unexamined).await, 0);
        let kept: Vec<String> = sqlx::query_scalar("SELECT request_id FROM impressions ORDER BY request_id")
            .fetch_all(&store.read)
            .await
            .expect("kept");
        assert_eq!(kept, ["r0", "r3", "r6"]);
        assert_eq!(store.compact(100, None, max).await.expect("again").impressions, 0);
        // Erasure afterwards: the conformance suite
        // (erasure_after_compaction_still_unlinks_the_feedback_of_kept_impressions).
    }

    #[tokio::test]
    async fn erasure_and_compaction_search_indices_instead_of_scanning_tables() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("g.db"), Durability::Process).await.expect("open");
        for (sql, binds) in [(USER_FEEDBACK, 1), (USER_IMPRESSIONS_DELETE, 1), (UNEXAMINED_IMPRESSIONS, 3)] {
            let explain = format!("EXPLAIN QUERY PLAN {sql}");
            let mut q = sqlx::query_as::<_, (i64, i64, i64, String)>(sqlx::AssertSqlSafe(explain));
            for _ in 0..binds {
                q = q.bind(1i64);
            }
            let plan: Vec<String> =
                q.fetch_all(&store.read).await.expect("plan").into_iter().map(|(.., detail)| detail).collect();
            assert!(plan.iter().all(|step| !step.starts_with("SCAN")), "{sql}: {plan:?}");
            assert!(plan.iter().any(|step| step.starts_with("SEARCH")), "{sql}: {plan:?}");
        }
    }

    #[tokio::test]
    async fn keys_beyond_one_lookup_query_are_all_found() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("g.db"), Durability::Process).await.expect("open");
        // 2,000 impressions x 4 outcomes: 8,000 keys, more than one query's 7,500.
        let impressions: Vec<Impression> = (0..2_000).map(|i| impression(&format!("r{i}"), "u")).collect();
        let group = |i: usize| -> Vec<FeedbackIn> {
            let request_id = format!("r{i}");
            Outcome::ALL
                .into_iter()
                .map(|outcome| FeedbackIn { request_id: request_id.clone(), candidate_id: "c".into(), outcome })
                .collect()
        };
        let feedback: Vec<_> = (0..2_000).map(group).collect();
        let batch = WriteBatch { at_ms: 10, impressions, feedback: feedback.clone(), review: vec![] };
        let first = store.commit(&batch).await.expect("commit");
        assert!(first.iter().all(|o| *o == GroupOutcome::Recorded { recorded: 4, duplicates: 0 }));
        let again = WriteBatch { at_ms: 20, impressions: vec![], feedback, review: vec![] };
        let second = store.commit(&again).await.expect("commit");
        assert_eq!(second.len(), 2_000);
        assert!(second.iter().all(|o| *o == GroupOutcome::Recorded { recorded: 0, duplicates: 4 }), "{second:?}");
        assert_eq!(count(&store, "SELECT COUNT(*) FROM feedback_keys").await, 8_000);
    }

    #[tokio::test]
    async fn a_commit_reads_again_when_a_deletion_lands_between_its_reads_and_its_writes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(SqliteStore::open(&dir.path().join("g.db"), Durability::Process).await.expect("open"));
        let batch =
            WriteBatch { at_ms: 10, impressions: vec![impression("r1", "u")], feedback: vec![], review: vec![] };
        store.commit(&batch).await.expect("commit");

        // A write transaction is open here, so the commit below reads (and finds r1), then waits.
        let (guard, mut tx) = store.begin_write().await.expect("begin");
        let committing = tokio::spawn({
            let store = Arc::clone(&store);
            async move {
                let batch =
                    WriteBatch { at_ms: 20, impressions: vec![], feedback: vec![accepted("r1")], review: vec![] };
                store.commit(&batch).await
            }
        });
        while store.commit_lock.try_lock().is_ok() {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Meanwhile a deletion (as compaction makes them) removes r1.
        sqlx::query("DELETE FROM events WHERE kind = 'impression'").execute(&mut *tx).await.expect("delete");
        store.finish_deleting(tx).await.expect("finish");
        drop(guard);

        let outcomes = committing.await.expect("join").expect("commit");
        assert_eq!(outcomes, vec![GroupOutcome::UnknownRequest { index: 0, request_id: "r1".into() }]);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM events WHERE kind = 'feedback'").await, 0);
    }

    #[tokio::test]
    async fn compaction_deletes_in_chunks_until_done() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("g.db"), Durability::Process).await.expect("open");
        let impressions = (0..12).map(|i| impression(&format!("r{i}"), "u")).collect();
        let feedback = (0..12).map(|i| accepted(&format!("r{i}"))).collect();
        let batch = WriteBatch { at_ms: 10, impressions, feedback, review: Vec::new() };
        store.commit(&batch).await.expect("commit");
        let max = store.last_seq().await.expect("last seq");
        let deleted = store.delete_chunked(COMPACT_FEEDBACK, 100, max, 5).await.expect("delete");
        assert_eq!(deleted, 12);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM events WHERE kind = 'feedback'").await, 0);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM feedback_keys").await, 0);
    }
}
