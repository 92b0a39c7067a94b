//! PostgreSQL backend: one schema of one database, shared by every replica.
//!
//! Replicas append to one log and each tails it with [`Store::read_events`]`(after, limit)`,
//! advancing `after` to the last sequence number it saw. That is only correct if no event can
//! become visible with a sequence number at or below one a reader has already seen.
//!
//! # The order of the log, and why no tailer can skip an event
//!
//! A PostgreSQL sequence would not give that: it hands out numbers when rows are inserted,
//! while transactions commit in another order. If T1 takes seq 7 and T2 takes seq 8, and T2
//! commits first, a tailer can read 8, advance to `after = 8`, and never read 7 once T1 commits.
//!
//! So there is no sequence. The one row of `log_head` holds the highest committed sequence
//! number, and its row lock is the log's append lock. Every transaction that writes the log or
//! the tables beside it ([`LogTx`]) runs at READ COMMITTED and starts with
//! `SELECT last_seq FROM log_head FOR UPDATE`; it numbers its events `last_seq + 1, + 2, ...`,
//! stores the new `last_seq` in the same row and commits, which releases the lock. Hence:
//!
//! 1. *Numbers follow lock order.* Holders of the lock are mutually exclusive, and each reads the
//!    `last_seq` stored by the previous committed holder (at READ COMMITTED a `FOR UPDATE` that
//!    waited returns the newest committed version of the row). A holder that aborts leaves
//!    nothing behind: its numbers were never visible and are handed out again.
//! 2. *A holder is visible before the next one can start.* PostgreSQL makes a committing
//!    transaction visible to new snapshots (`ProcArrayEndTransaction`) before it releases its
//!    locks (`xact.c`: "this must be done _before_ releasing locks we hold"), so by the time the
//!    next holder gets the row lock, the previous holder's events are in every new snapshot.
//!
//! Now suppose a reader's snapshot contains event `n`, committed by Tn, and some event `m < n`
//! commits, by Tm. If Tm = Tn, the commit is atomic and the snapshot has both. Otherwise, by (1),
//! Tm held the lock before Tn (had it come after, it would have read `last_seq >= n`), so by (2)
//! Tm was visible before Tn got the lock, before Tn committed, before the snapshot was taken:
//! the snapshot contains `m` too. Therefore every snapshot holds a *prefix* of the log (up to
//! deletions by compaction and erasure), and `seq > after` never skips: an event the tailer has
//! not seen has a seq above everything it has seen. It also holds across replicas, processes and
//! connections: the lock and the numbers are in the database. (It holds on a streaming standby
//! too: commit records replay in WAL order, which is lock order.)
//!
//! `last_seq` reads the same row, so it is the highest *committed* number (never an
//! in-flight one, as a sequence's `last_value` would be), and it never goes back: only lock
//! holders change it, only upwards, and compaction or erasure of the newest events leaves it be.
//!
//! Cost: appends are serialised across all replicas, as they are in SQLite; a transaction holds
//! the lock for its statements and its commit flush. The service's writer batches many requests
//! into one [`Store::commit`] (group commit), so commits, not requests, are serialised. Within
//! one process, log transactions also queue on a FIFO tokio mutex first, so a burst of local
//! writers waits without holding pool connections (readers keep theirs) and never hits the
//! pool's acquire timeout. Compaction and erasure take the lock too (compaction in small
//! chunks), which keeps "validate, then write" in [`Store::commit`] atomic as in SQLite: an
//! impression cannot be compacted between the check that it exists and the feedback that
//! refers to it. Keys touched and snapshots saved do not write the log and do not take it.
//!
//! # Schema, durability
//!
//! The URL may carry a `schema=NAME` parameter (lowercase letters, digits and `_`): the store
//! then creates that schema if it is missing and sets it as the connections' `search_path`, so
//! its tables (`migrations/postgres/`) and sqlx's `_sqlx_migrations` live there. Without it the
//! server's default search path applies. Every other parameter is sqlx's.
//!
//! [`Durability::Power`] and [`Durability::Process`] both run with `synchronous_commit = on`
//! (set on every connection, whatever the server's default): a commit returns once its WAL is
//! flushed. `off` would let a crash of the database server lose acknowledged commits, and the
//! server is one of the processes a [`Durability::Process`] store must survive; group commit
//! makes the flush cheap. Whether power loss is survived then depends on the server's own
//! `fsync` and storage, as it does for any PostgreSQL client.
//!
//! Bodies of events are [`codec`] blobs (BYTEA); times and sequence numbers are BIGINT.

use super::{
    Appends, AuditEntry, CommitPlan, Compacted, Decision, Durability, GroupOutcome, Key, KeyRecord, ModelRecord,
    NewAudit, NewReviewItem, ReviewFilter, ReviewItem, ReviewStatus, ReviewUpkeep, SnapshotInfo, Store, StoreError,
    VerdictIn, WriteBatch, codec, cpu_bound, decode_stored_impression,
};
use crate::events::{Event, EventBody, Impression, ModelActivation, Scope};
use async_trait::async_trait;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, PgConnection, Postgres, Row, SqlSafeStr, Transaction};
use std::collections::BTreeMap;
use std::str::FromStr;
use tokio::sync::{Mutex, MutexGuard};

#[path = "postgres_oversight.rs"]
mod oversight;

/// The migrations, in version order: `(version, description, sql)`, one per file of
/// `migrations/postgres/` (a unit test checks that the list and the directory agree). Embedded
/// with `include_str!` rather than `sqlx::migrate!`, which needs sqlx's `macros` feature; the
/// migrations table and checksums are the same as `migrate!` would write.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../../migrations/postgres/0001_init.sql")),
    (2, "models", include_str!("../../migrations/postgres/0002_models.sql")),
    (3, "oversight", include_str!("../../migrations/postgres/0003_oversight.sql")),
    (4, "anomaly_review", include_str!("../../migrations/postgres/0004_anomaly_review.sql")),
    (5, "feedback_writes", include_str!("../../migrations/postgres/0005_feedback_writes.sql")),
];

/// Connections per store (per replica). Log transactions use at most one at a time (they queue
/// on `write_lock` first); the rest serve readers, snapshots and key touches.
const MAX_CONNECTIONS: u32 = 6;

/// Rows deleted per transaction by [`Store::compact`], so a large compaction never holds the
/// log lock for long and commits interleave with it.
const COMPACT_CHUNK: i64 = 5_000;

/// A session idle inside a transaction for this long is ended by the server, so a client that
/// hangs mid-transaction (not one that dies: its connection closes) cannot hold the log lock of
/// every replica for long. Far above any pause of a healthy log transaction.
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "60s";

/// One chunk of the impressions compaction has not examined yet (`$1` cut, `$2` max seq, `$3`
/// chunk), each with whether it got feedback (has an idempotency key). A commit does not mark the
/// impressions its feedback joins (migration 5): compaction marks or deletes each one it examines.
const UNEXAMINED_IMPRESSIONS: &str = "SELECT i.seq, EXISTS (SELECT 1 FROM feedback_keys k \
     WHERE k.request_id = i.request_id) FROM impressions i \
     WHERE NOT i.has_feedback AND i.at_ms < $1 AND i.seq <= $2 LIMIT $3";

/// A user's feedback events whose user id is still set (`$1` the user): through the user's
/// impressions and the idempotency keys of their feedback, as in SQLite (`USER_FEEDBACK` there).
/// `kind = 'impression'` is the condition of the user index, spelt as it is there.
const USER_FEEDBACK: &str = "SELECT e.seq, e.body FROM events ie \
     JOIN impressions i ON i.seq = ie.seq \
     JOIN feedback_keys k ON k.request_id = i.request_id \
     JOIN events e ON e.seq = k.seq \
     WHERE ie.kind = 'impression' AND ie.user_id = $1 AND e.user_id IS NOT NULL ORDER BY e.seq";

/// Compaction of feedback (`$1` cut, `$2` max seq, `$3` chunk). Their idempotency keys go with
/// them (ON DELETE CASCADE): a duplicate arriving after its original was compacted is recorded
/// again, if its impression is still there.
const COMPACT_FEEDBACK: &str = "DELETE FROM events WHERE seq IN (SELECT seq FROM events \
     WHERE kind = 'feedback' AND at_ms < $1 AND seq <= $2 LIMIT $3)";

/// The PostgreSQL store. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct PostgresStore {
    pool: PgPool,
    /// Local queue of log transactions (see the module docs); the database's log lock is what
    /// orders them across replicas.
    write_lock: Mutex<()>,
}

/// A PostgreSQL URL with guardrank's own `schema` parameter taken off.
#[derive(Debug, PartialEq, Eq)]
struct ParsedUrl {
    /// The URL as sqlx reads it.
    sqlx_url: String,
    schema: Option<String>,
}

/// Splits the `schema=NAME` parameter off `url`; every other part is left to sqlx.
fn parse_url(url: &str) -> Result<ParsedUrl, StoreError> {
    let (body, fragment) = match url.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (url, None),
    };
    let Some((base, query)) = body.split_once('?') else {
        return Ok(ParsedUrl { sqlx_url: url.to_owned(), schema: None });
    };
    let mut schema = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("schema", value)) => {
                if !valid_schema(value) {
                    return Err(StoreError::Invalid(format!(
                        "invalid schema {value:?} in the PostgreSQL URL: use 1 to 63 lowercase letters, \
                         digits and '_', not starting with a digit"
                    )));
                }
                if schema.replace(value.to_owned()).is_some() {
                    return Err(StoreError::Invalid("the PostgreSQL URL names a schema twice".into()));
                }
            }
            _ => kept.push(pair),
        }
    }
    let mut sqlx_url = base.to_owned();
    if !kept.is_empty() {
        sqlx_url.push('?');
        sqlx_url.push_str(&kept.join("&"));
    }
    if let Some(f) = fragment {
        sqlx_url.push('#');
        sqlx_url.push_str(f);
    }
    Ok(ParsedUrl { sqlx_url, schema })
}

/// A schema name that needs no quoting anywhere: it is spliced into `CREATE SCHEMA` and sent as
/// the `search_path` startup option.
fn valid_schema(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The server and database of `options`, for messages (never the password).
fn describe(options: &PgConnectOptions) -> String {
    format!("{}:{}/{}", options.get_host(), options.get_port(), options.get_database().unwrap_or("(default database)"))
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://...`, optionally with `schema=NAME`; see
    /// the module docs), creates the schema if it is named and missing, and migrates it.
    ///
    /// # Errors
    /// A malformed URL or schema name ([`StoreError::Invalid`]), the server cannot be reached
    /// or refuses ([`StoreError::Unavailable`]), or a migration fails
    /// ([`StoreError::Migration`]).
    pub async fn open(url: &str, durability: Durability) -> Result<PostgresStore, StoreError> {
        let ParsedUrl { sqlx_url, schema } = parse_url(url)?;
        let options = PgConnectOptions::from_str(&sqlx_url)
            .map_err(|e| StoreError::Invalid(format!("invalid PostgreSQL URL: {e}")))?;
        let target = describe(&options);
        let unavailable = |e: &dyn std::fmt::Display| StoreError::Unavailable(format!("cannot open {target}: {e}"));
        let synchronous_commit = match durability {
            // Both: see the module docs.
            Durability::Power | Durability::Process => "on",
        };
        let mut options = options.options([
            ("synchronous_commit", synchronous_commit),
            ("idle_in_transaction_session_timeout", IDLE_IN_TRANSACTION_TIMEOUT),
        ]);
        if let Some(schema) = &schema {
            options = options.options([("search_path", schema.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await
            .map_err(|e| unavailable(&e))?;
        if let Some(schema) = &schema {
            create_schema(&pool, schema).await.map_err(|e| unavailable(&e))?;
        }
        migrator().run(&pool).await.map_err(|e| StoreError::Migration(format!("{target}: {e}")))?;
        Ok(PostgresStore { pool, write_lock: Mutex::new(()) })
    }

    /// Starts a log transaction: waits for the local queue, then for the log lock.
    async fn begin_log(&self) -> Result<LogTx<'_>, StoreError> {
        let local = self.write_lock.lock().await;
        let mut tx = self.pool.begin_with("BEGIN ISOLATION LEVEL READ COMMITTED").await?;
        let head: Option<i64> =
            sqlx::query_scalar("SELECT last_seq FROM log_head FOR UPDATE").fetch_optional(&mut *tx).await?;
        let head = head.ok_or_else(|| StoreError::Corrupt("the log_head row is missing".into()))?;
        Ok(LogTx { tx, head, last: head, _local: local })
    }

    /// Compaction of impressions older than `before_ms` (and at most `max_seq`) that it has not
    /// examined yet, one log transaction per `chunk` of them: deletes those without feedback,
    /// marks the others. Returns how many it deleted.
    async fn compact_impressions(&self, before_ms: i64, max_seq: i64, chunk: i64) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let mut log = self.begin_log().await?;
            let rows: Vec<(i64, bool)> = sqlx::query_as(UNEXAMINED_IMPRESSIONS)
                .bind(before_ms)
                .bind(max_seq)
                .bind(chunk)
                .fetch_all(log.conn())
                .await?;
            let (fed, unfed): (Vec<_>, Vec<_>) = rows.iter().partition(|(_, fed)| *fed);
            let unfed: Vec<i64> = unfed.into_iter().map(|&(seq, _)| seq).collect();
            let fed: Vec<i64> = fed.into_iter().map(|&(seq, _)| seq).collect();
            // The index rows of deleted impressions go with their events (ON DELETE CASCADE).
            sqlx::query("DELETE FROM events WHERE seq = ANY($1::BIGINT[])").bind(&unfed).execute(log.conn()).await?;
            sqlx::query("UPDATE impressions SET has_feedback = TRUE WHERE seq = ANY($1::BIGINT[])")
                .bind(&fed)
                .execute(log.conn())
                .await?;
            log.commit().await?;
            total += unfed.len() as u64;
            if (rows.len() as i64) < chunk {
                return Ok(total);
            }
        }
    }

    /// Runs `delete` (a `DELETE FROM events` of at most `$3` rows, filtered by `$1` and `$2`)
    /// in one log transaction after another until it deletes fewer than `chunk`.
    async fn delete_chunked(&self, delete: &'static str, a: i64, b: i64, chunk: i64) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let mut log = self.begin_log().await?;
            let n = sqlx::query(delete).bind(a).bind(b).bind(chunk).execute(log.conn()).await?.rows_affected();
            log.commit().await?;
            total += n;
            if n < chunk.unsigned_abs() {
                return Ok(total);
            }
        }
    }
}

/// Creates `schema` unless it exists (checked first: `CREATE SCHEMA IF NOT EXISTS` needs the
/// CREATE privilege on the database even when the schema is there).
async fn create_schema(pool: &PgPool, schema: &str) -> Result<(), sqlx::Error> {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(schema)
        .fetch_one(pool)
        .await?;
    if exists {
        return Ok(());
    }
    // `schema` passed `valid_schema`: no quoting needed.
    match sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA IF NOT EXISTS {schema}"))).execute(pool).await {
        // Another replica created it at the same instant.
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(()),
        other => other.map(|_| ()),
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

/// A transaction holding the log lock (the `log_head` row): the only way events are numbered.
/// Dropping it without [`LogTx::commit`] rolls back, and the numbers it used are free again.
struct LogTx<'a> {
    // Declared before `_local`: the transaction goes first.
    tx: Transaction<'static, Postgres>,
    /// `last_seq` when the lock was taken.
    head: i64,
    /// The last number this transaction handed out (`head` if none).
    last: i64,
    _local: MutexGuard<'a, ()>,
}

impl LogTx<'_> {
    fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Appends one event; returns its seq.
    async fn insert_event(&mut self, at_ms: i64, body: &EventBody) -> Result<i64, StoreError> {
        let bytes = codec::encode_event(body)
            .map_err(|e| StoreError::Invalid(format!("cannot encode a {} event: {e}", body.kind())))?;
        let seq = self.last + 1;
        sqlx::query("INSERT INTO events (seq, at_ms, kind, user_id, body) VALUES ($1, $2, $3, $4, $5)")
            .bind(seq)
            .bind(at_ms)
            .bind(body.kind())
            .bind(body.user_id())
            .bind(bytes)
            .execute(&mut *self.tx)
            .await?;
        self.last = seq;
        Ok(seq)
    }

    /// Appends events of one kind from `(user_ids[i], bodies[i])` with one statement; returns
    /// their seqs, in the order given.
    async fn insert_events(
        &mut self,
        at_ms: i64,
        kind: &'static str,
        user_ids: &[&str],
        bodies: Vec<Vec<u8>>,
    ) -> Result<Vec<i64>, StoreError> {
        if bodies.is_empty() {
            return Ok(Vec::new());
        }
        let n = i64::try_from(bodies.len()).map_err(|_| StoreError::Invalid("too many events".into()))?;
        let seqs: Vec<i64> = (self.last + 1..=self.last + n).collect();
        sqlx::query(
            "INSERT INTO events (seq, at_ms, kind, user_id, body) \
             SELECT s, $2, $3, u, b FROM UNNEST($1::BIGINT[], $4::TEXT[], $5::BYTEA[]) AS t (s, u, b)",
        )
        .bind(&seqs)
        .bind(at_ms)
        .bind(kind)
        .bind(user_ids)
        .bind(bodies)
        .execute(&mut *self.tx)
        .await?;
        self.last += n;
        Ok(seqs)
    }

    /// Stores the new head (if events were appended) and commits, releasing the lock.
    async fn commit(self) -> Result<(), StoreError> {
        let LogTx { mut tx, head, last, _local } = self;
        if last != head {
            sqlx::query("UPDATE log_head SET last_seq = $1").bind(last).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

fn decode_body(seq: i64, bytes: &[u8]) -> Result<EventBody, StoreError> {
    codec::decode_event(bytes).map_err(|e| StoreError::Corrupt(format!("event {seq} does not decode: {e}")))
}

/// The stored impression of a request, decoded from its event.
async fn load_impression(conn: &mut PgConnection, request_id: &str) -> Result<Option<Impression>, StoreError> {
    let row: Option<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT e.seq, e.body FROM impressions i JOIN events e ON e.seq = i.seq WHERE i.request_id = $1",
    )
    .bind(request_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|(seq, bytes)| decode_stored_impression(seq, &bytes, request_id).map_err(StoreError::Corrupt)).transpose()
}

/// The indices of the stored ones among `keys`.
async fn stored_keys(conn: &mut PgConnection, keys: &[Key<'_>]) -> Result<Vec<i64>, StoreError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut columns = (Vec::with_capacity(keys.len()), Vec::with_capacity(keys.len()), Vec::with_capacity(keys.len()));
    for &(request_id, candidate_id, outcome) in keys {
        columns.0.push(request_id);
        columns.1.push(candidate_id);
        columns.2.push(outcome.name());
    }
    let hits = sqlx::query_scalar(
        "SELECT v.n - 1 FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[]) WITH ORDINALITY AS v (r, c, o, n) \
         JOIN feedback_keys k ON k.request_id = v.r AND k.candidate_id = v.c AND k.outcome = v.o",
    )
    .bind(&columns.0)
    .bind(&columns.1)
    .bind(&columns.2)
    .fetch_all(&mut *conn)
    .await?;
    Ok(hits)
}

/// Runs the queries of a [`CommitPlan`] and writes its [`Appends`] inside the log transaction:
/// at most seven statements, each with one array per column, however large the batch.
async fn commit_plan(
    log: &mut LogTx<'_>,
    plan: &mut CommitPlan<'_>,
    at_ms: i64,
) -> Result<Vec<GroupOutcome>, StoreError> {
    let ids = plan.lookup_ids();
    let rows: Vec<PgRow> = sqlx::query(
        "SELECT i.request_id, e.seq, e.body FROM impressions i JOIN events e ON e.seq = i.seq \
         WHERE i.request_id = ANY($1::TEXT[])",
    )
    .bind(&ids)
    .fetch_all(log.conn())
    .await?;
    for row in &rows {
        plan.load(row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    }
    drop(rows);
    plan.validate()?;
    // The events are encoded while the server looks up their keys.
    let (hits, bodies) =
        tokio::join!(biased; stored_keys(log.conn(), plan.keys()), async { cpu_bound(|| plan.encode()) });
    for index in hits? {
        plan.mark_stored(index);
    }
    let Appends { impressions: imps, feedback: fb, outcomes } = plan.settle(bodies?);

    let seqs = log.insert_events(at_ms, "impression", &imps.user_ids, imps.bodies).await?;
    if !seqs.is_empty() {
        sqlx::query(
            "INSERT INTO impressions (request_id, seq, user_id, at_ms, has_feedback) \
             SELECT r, s, u, $4, FALSE FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::TEXT[]) AS t (r, s, u)",
        )
        .bind(&imps.request_ids)
        .bind(&seqs)
        .bind(&imps.user_ids)
        .bind(at_ms)
        .execute(log.conn())
        .await?;
    }
    let seqs = log.insert_events(at_ms, "feedback", &fb.user_ids, fb.bodies).await?;
    if !seqs.is_empty() {
        sqlx::query(
            "INSERT INTO feedback_keys (request_id, candidate_id, outcome, seq) \
             SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[])",
        )
        .bind(&fb.request_ids)
        .bind(&fb.candidate_ids)
        .bind(&fb.outcomes)
        .bind(&seqs)
        .execute(log.conn())
        .await?;
        // The impressions the feedback joins are not marked here: compaction finds their
        // feedback through the keys (see UNEXAMINED_IMPRESSIONS).
    }
    Ok(outcomes)
}

type KeyRow = (String, String, Vec<u8>, i64, Option<i64>, Option<i64>);

// `COLLATE "C"`: ties on the creation time are broken by the bytes of the id, as in SQLite,
// whatever the database's collation.
const LIST_KEYS: &str = "SELECT id, scope, hash, created_at_ms, revoked_at_ms, last_used_at_ms \
                         FROM api_keys ORDER BY created_at_ms DESC, id COLLATE \"C\" DESC";
const FIND_KEY: &str = "SELECT id, scope, hash, created_at_ms, revoked_at_ms, last_used_at_ms \
                        FROM api_keys WHERE id = $1";

fn key_from_row(
    (id, scope, hash, created_at_ms, revoked_at_ms, last_used_at_ms): KeyRow,
) -> Result<KeyRecord, StoreError> {
    let scope = scope.parse::<Scope>().map_err(|e| StoreError::Corrupt(format!("key {id}: {e}")))?;
    let hash = <[u8; 32]>::try_from(hash.as_slice())
        .map_err(|_| StoreError::Corrupt(format!("key {id}: hash is {} bytes, not 32", hash.len())))?;
    Ok(KeyRecord { id, scope, hash, created_at_ms, revoked_at_ms, last_used_at_ms })
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn commit(&self, batch: &WriteBatch) -> Result<Vec<GroupOutcome>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut plan = CommitPlan::new(batch);
        let mut log = self.begin_log().await?;
        let outcomes = commit_plan(&mut log, &mut plan, batch.at_ms).await?;
        oversight::insert_review_items(log.conn(), &batch.review).await?;
        log.commit().await?;
        Ok(outcomes)
    }

    async fn append(&self, at_ms: i64, events: Vec<EventBody>) -> Result<Vec<i64>, StoreError> {
        if let Some(b) = events.iter().find(|b| matches!(b, EventBody::Impression(_) | EventBody::Feedback(_))) {
            return Err(StoreError::Invalid(format!("{} events are written by commit, not append", b.kind())));
        }
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut log = self.begin_log().await?;
        let mut seqs = Vec::with_capacity(events.len());
        for body in &events {
            seqs.push(log.insert_event(at_ms, body).await?);
        }
        log.commit().await?;
        Ok(seqs)
    }

    async fn read_events(&self, after: i64, limit: u32) -> Result<Vec<Event>, StoreError> {
        // One statement, one snapshot: a prefix of the log (see the module docs).
        let rows: Vec<(i64, i64, Vec<u8>)> =
            sqlx::query_as("SELECT seq, at_ms, body FROM events WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter().map(|(seq, at_ms, bytes)| Ok(Event { seq, at_ms, body: decode_body(seq, &bytes)? })).collect()
    }

    async fn last_seq(&self) -> Result<i64, StoreError> {
        // The head row, not MAX(seq): it is the highest committed number and stays put when
        // compaction or erasure deletes the newest events.
        let seq: Option<i64> = sqlx::query_scalar("SELECT last_seq FROM log_head").fetch_optional(&self.pool).await?;
        seq.ok_or_else(|| StoreError::Corrupt("the log_head row is missing".into()))
    }

    async fn impression(&self, request_id: &str) -> Result<Option<Impression>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        load_impression(&mut conn, request_id).await
    }

    async fn save_snapshot(&self, seq: i64, at_ms: i64, blob: Vec<u8>, keep: u32) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        // Replicas save snapshots into the same table: one at a time, so two pruning DELETEs
        // never lock the same rows in different orders. Readers (ACCESS SHARE) are not blocked,
        // and neither is the log.
        sqlx::query("LOCK TABLE snapshots IN SHARE ROW EXCLUSIVE MODE").execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO snapshots (seq, at_ms, blob) VALUES ($1, $2, $3) \
             ON CONFLICT (seq) DO UPDATE SET at_ms = excluded.at_ms, blob = excluded.blob",
        )
        .bind(seq)
        .bind(at_ms)
        .bind(blob)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM snapshots WHERE seq NOT IN (SELECT seq FROM snapshots ORDER BY seq DESC LIMIT $1)")
            .bind(i64::from(keep))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_snapshots(&self) -> Result<Vec<SnapshotInfo>, StoreError> {
        let rows: Vec<(i64, i64, i64)> =
            sqlx::query_as("SELECT seq, at_ms, octet_length(blob)::BIGINT FROM snapshots ORDER BY seq DESC")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(seq, at_ms, bytes)| SnapshotInfo { seq, at_ms, bytes: bytes.unsigned_abs() })
            .collect())
    }

    async fn load_snapshot(&self, seq: i64) -> Result<Option<Vec<u8>>, StoreError> {
        let blob = sqlx::query_scalar("SELECT blob FROM snapshots WHERE seq = $1")
            .bind(seq)
            .fetch_optional(&self.pool)
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
        let mut log = self.begin_log().await?;
        // Feedback is found through the user's impressions (only those are indexed by user,
        // migration 5), so before they are deleted.
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(USER_FEEDBACK).bind(user_id).fetch_all(log.conn()).await?;
        let impressions = sqlx::query("DELETE FROM events WHERE kind = 'impression' AND user_id = $1")
            .bind(user_id)
            .execute(log.conn())
            .await?
            .rows_affected();
        let mut feedback = 0;
        for (seq, bytes) in rows {
            let EventBody::Feedback(mut ev) = decode_body(seq, &bytes)? else {
                return Err(StoreError::Corrupt(format!("event {seq} is stored as feedback but is not")));
            };
            ev.user_id = None;
            let bytes = codec::encode_event(&EventBody::Feedback(ev))
                .map_err(|e| StoreError::Invalid(format!("cannot encode event {seq}: {e}")))?;
            sqlx::query("UPDATE events SET body = $1, user_id = NULL WHERE seq = $2")
                .bind(bytes)
                .bind(seq)
                .execute(log.conn())
                .await?;
            feedback += 1;
        }
        sqlx::query("DELETE FROM review_items WHERE user_id = $1").bind(user_id).execute(log.conn()).await?;
        let tombstone = log.insert_event(at_ms, &EventBody::UserErased { user_id: user_id.to_owned() }).await?;
        log.commit().await?;
        Ok((tombstone, impressions, feedback))
    }

    async fn insert_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        let mut log = self.begin_log().await?;
        // ON CONFLICT rather than a caught unique violation, which would abort the transaction
        // and log an error on the server.
        let inserted = sqlx::query(
            "INSERT INTO api_keys (id, scope, hash, created_at_ms, revoked_at_ms, last_used_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&key.id)
        .bind(key.scope.name())
        .bind(key.hash.as_slice())
        .bind(key.created_at_ms)
        .bind(key.revoked_at_ms)
        .bind(key.last_used_at_ms)
        .execute(log.conn())
        .await?
        .rows_affected();
        if inserted == 0 {
            return Err(StoreError::Invalid(format!("a key with id {:?} already exists", key.id)));
        }
        let body = EventBody::KeyCreated { key_id: key.id.clone(), scope: key.scope };
        log.insert_event(key.created_at_ms, &body).await?;
        log.commit().await?;
        Ok(())
    }

    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let rows: Vec<KeyRow> = sqlx::query_as(LIST_KEYS).fetch_all(&self.pool).await?;
        rows.into_iter().map(key_from_row).collect()
    }

    async fn find_key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let row: Option<KeyRow> = sqlx::query_as(FIND_KEY).bind(id).fetch_optional(&self.pool).await?;
        row.map(key_from_row).transpose()
    }

    async fn revoke_key(&self, id: &str, at_ms: i64) -> Result<bool, StoreError> {
        let mut log = self.begin_log().await?;
        let changed = sqlx::query("UPDATE api_keys SET revoked_at_ms = $1 WHERE id = $2 AND revoked_at_ms IS NULL")
            .bind(at_ms)
            .bind(id)
            .execute(log.conn())
            .await?
            .rows_affected();
        if changed == 0 {
            return Ok(false);
        }
        log.insert_event(at_ms, &EventBody::KeyRevoked { key_id: id.to_owned() }).await?;
        log.commit().await?;
        Ok(true)
    }

    async fn touch_keys(&self, used: &[(String, i64)]) -> Result<(), StoreError> {
        // The newest use of each key, in id order: concurrent touches (other replicas) lock
        // rows in the same order and so cannot deadlock. No log lock: the log is not written.
        let mut newest: BTreeMap<&str, i64> = BTreeMap::new();
        for (id, at_ms) in used {
            let t = newest.entry(id.as_str()).or_insert(*at_ms);
            *t = (*t).max(*at_ms);
        }
        if newest.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for (id, at_ms) in newest {
            sqlx::query(
                "UPDATE api_keys SET last_used_at_ms = GREATEST(COALESCE(last_used_at_ms, $1), $1) WHERE id = $2",
            )
            .bind(at_ms)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn put_model(&self, record: &ModelRecord, file: Vec<u8>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "INSERT INTO models (version, created_at_ms, trained_through_seq, metrics, file) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (version) DO NOTHING",
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
            "SELECT version, created_at_ms, trained_through_seq, metrics, octet_length(file)::BIGINT FROM models \
             ORDER BY created_at_ms DESC, version DESC",
        )
        .fetch_all(&self.pool)
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
        let file = sqlx::query_scalar("SELECT file FROM models WHERE version = $1")
            .bind(version)
            .fetch_optional(&self.pool)
            .await?;
        Ok(file)
    }

    async fn delete_model(&self, version: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM models WHERE version = $1").bind(version).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    async fn last_activation(&self) -> Result<Option<(i64, ModelActivation)>, StoreError> {
        let row: Option<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT seq, body FROM events WHERE kind = 'model_activated' ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&self.pool)
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
        sqlx::query("SELECT 1").execute(&self.pool).await?;
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
    use sqlx::Connection;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn every_migration_file_is_registered_in_order() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
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

    #[test]
    fn the_schema_parameter_is_taken_off_the_url() {
        let p = parse_url("postgres://u:p@h:5432/db?sslmode=disable&schema=gr_1&application_name=x").expect("parse");
        assert_eq!(p.sqlx_url, "postgres://u:p@h:5432/db?sslmode=disable&application_name=x");
        assert_eq!(p.schema.as_deref(), Some("gr_1"));
        let p = parse_url("postgres://h/db?schema=_a").expect("parse");
        assert_eq!((p.sqlx_url.as_str(), p.schema.as_deref()), ("postgres://h/db", Some("_a")));
        let p = parse_url("postgresql://h/db").expect("parse");
        assert_eq!((p.sqlx_url.as_str(), p.schema), ("postgresql://h/db", None));
        let p = parse_url("postgres://h/db?options=-c%20search_path%3Dx").expect("parse");
        assert_eq!((p.sqlx_url.as_str(), p.schema), ("postgres://h/db?options=-c%20search_path%3Dx", None));
        for bad in ["Upper", "1abc", "a-b", "a b", "a\"b", "", &"a".repeat(64)] {
            let err = parse_url(&format!("postgres://h/db?schema={bad}")).expect_err(bad);
            assert!(matches!(err, StoreError::Invalid(_)), "{bad}: {err}");
        }
        assert!(parse_url("postgres://h/db?schema=a&schema=b").is_err());
    }

    /// A fresh schema in the test database, or `None` (with a note) without one.
    async fn scratch() -> Option<(String, String)> {
        let Ok(base) = std::env::var("GUARDRANK_TEST_DATABASE_URL") else {
            eprintln!("skipped: GUARDRANK_TEST_DATABASE_URL not set");
            return None;
        };
        let schema = format!("gr_unit_{:016x}", rand::random::<u64>());
        let sep = if base.contains('?') { '&' } else { '?' };
        Some((format!("{base}{sep}schema={schema}"), schema))
    }

    async fn drop_schema(store: PostgresStore, schema: &str) {
        let pool = store.pool.clone();
        drop(store);
        sqlx::query(AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE"))).execute(&pool).await.expect("drop schema");
        pool.close().await;
    }

    #[tokio::test]
    async fn a_body_that_does_not_decode_is_corrupt_naming_its_seq() {
        let Some((url, schema)) = scratch().await else { return };
        let store = PostgresStore::open(&url, Durability::Process).await.expect("open");
        let seqs = store.append(1, vec![EventBody::PolicyReset { user_id: "u".into() }]).await.expect("append");
        sqlx::query("UPDATE events SET body = '\\x0102ff'::bytea WHERE seq = $1")
            .bind(seqs[0])
            .execute(&store.pool)
            .await
            .expect("update");
        let err = store.read_events(0, 10).await.expect_err("corrupt");
        assert!(matches!(&err, StoreError::Corrupt(m) if m.contains(&format!("event {}", seqs[0]))), "{err}");
        drop_schema(store, &schema).await;
    }

    /// The log lock at work: while another transaction holds the `log_head` row, an append
    /// waits; once that transaction commits, the append numbers its event after the holder's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_wait_for_the_log_lock_and_number_after_its_holder() {
        let Some((url, schema)) = scratch().await else { return };
        let store = Arc::new(PostgresStore::open(&url, Durability::Power).await.expect("open"));
        // A "replica" holding the lock, numbering by hand as a LogTx does.
        let mut other = store.pool.acquire().await.expect("conn").detach();
        let mut tx = other.begin().await.expect("begin");
        let head: i64 =
            sqlx::query_scalar("SELECT last_seq FROM log_head FOR UPDATE").fetch_one(&mut *tx).await.expect("lock");
        let body = codec::encode_event(&EventBody::PolicyReset { user_id: "first".into() }).expect("encode");
        sqlx::query("INSERT INTO events (seq, at_ms, kind, user_id, body) VALUES ($1, 1, 'policy_reset', NULL, $2)")
            .bind(head + 1)
            .bind(body)
            .execute(&mut *tx)
            .await
            .expect("insert");
        sqlx::query("UPDATE log_head SET last_seq = $1").bind(head + 1).execute(&mut *tx).await.expect("head");

        let s = Arc::clone(&store);
        let mut waiting = tokio::spawn(async move {
            s.append(2, vec![EventBody::PolicyReset { user_id: "second".into() }]).await.expect("append")
        });
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut waiting).await.is_err(),
            "an append must wait while another transaction holds the log lock"
        );
        // Nothing is visible yet: the holder has not committed, and the waiter has no number.
        assert!(store.read_events(0, 10).await.expect("read").is_empty());
        assert_eq!(store.last_seq().await.expect("last seq"), head);
        tx.commit().await.expect("commit");
        let seqs = waiting.await.expect("task");
        assert_eq!(seqs, vec![head + 2]);
        let seen: Vec<i64> = store.read_events(0, 10).await.expect("read").iter().map(|e| e.seq).collect();
        assert_eq!(seen, vec![head + 1, head + 2]);
        assert_eq!(store.last_seq().await.expect("last seq"), head + 2);
        other.close().await.expect("close");
        let store = Arc::into_inner(store).expect("last reference");
        drop_schema(store, &schema).await;
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

    async fn count(store: &PostgresStore, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&store.pool).await.expect("count")
    }

    #[tokio::test]
    async fn index_rows_and_keys_go_with_their_events() {
        let Some((url, schema)) = scratch().await else { return };
        let store = PostgresStore::open(&url, Durability::Power).await.expect("open");
        let batch = WriteBatch {
            at_ms: 10,
            impressions: vec![impression("a", "u1"), impression("b", "u1"), impression("c", "u2")],
            feedback: vec![accepted("b"), accepted("c")],
            review: Vec::new(),
        };
        store.commit(&batch).await.expect("commit");
        assert_eq!(count(&store, "SELECT COUNT(*) FROM impressions WHERE has_feedback").await, 0);
        store.compact(100, Some(100), 1_000).await.expect("compact");
        assert_eq!(count(&store, "SELECT COUNT(*) FROM impressions WHERE has_feedback").await, 2);
        store.erase_user("u1", 20).await.expect("erase");
        assert_eq!(count(&store, "SELECT COUNT(*) FROM impressions").await, 1);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM events WHERE kind = 'impression'").await, 1);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM feedback_keys").await, 0);
        // The head stays at the tombstone, the highest number handed out.
        assert_eq!(count(&store, "SELECT last_seq FROM log_head").await, 6);
        drop_schema(store, &schema).await;
    }

    #[tokio::test]
    async fn compaction_examines_each_impression_once_in_chunks_and_marks_those_with_feedback() {
        let Some((url, schema)) = scratch().await else { return };
        let store = PostgresStore::open(&url, Durability::Process).await.expect("open");
        let impressions = (0..7).map(|i| impression(&format!("r{i}"), if i < 5 { "u1" } else { "u2" })).collect();
        // r0, r3 and r6 get feedback; r3's comes in a later commit.
        let batch =
            WriteBatch { at_ms: 10, impressions, feedback: vec![accepted("r0"), accepted("r6")], review: vec![] };
        store.commit(&batch).await.expect("commit");
        let later = WriteBatch { at_ms: 20, impressions: vec![], feedback: vec![accepted("r3")], review: vec![] };
        store.commit(&later).await.expect("commit");
        let unexamined = "SELECT COUNT(*) FROM impressions WHERE NOT has_feedback";
        assert_eq!(count(&store, unexamined).await, 7, "a commit does not mark impressions");

        // Chunks of 2: every impression is examined once, the ones without feedback deleted.
        let max = store.last_seq().await.expect("last seq");
        assert_eq!(store.compact_impressions(100, max, 2).await.expect("compact"), 4);
        assert_eq!(count(&store, unexamined).await, 0);
        let kept: Vec<String> = sqlx::query_scalar("SELECT request_id FROM impressions ORDER BY request_id")
            .fetch_all(&store.pool)
            .await
            .expect("kept");
        assert_eq!(kept, ["r0", "r3", "r6"]);
        assert_eq!(store.compact(100, None, max).await.expect("again").impressions, 0);
        // Erasure afterwards: the conformance suite
        // (erasure_after_compaction_still_unlinks_the_feedback_of_kept_impressions).
        drop_schema(store, &schema).await;
    }

    #[tokio::test]
    async fn compaction_deletes_in_chunks_until_done() {
        let Some((url, schema)) = scratch().await else { return };
        let store = PostgresStore::open(&url, Durability::Process).await.expect("open");
        let impressions = (0..12).map(|i| impression(&format!("r{i}"), "u")).collect();
        let feedback = (0..12).map(|i| accepted(&format!("r{i}"))).collect();
        let batch = WriteBatch { at_ms: 10, impressions, feedback, review: Vec::new() };
        store.commit(&batch).await.expect("commit");
        let max = store.last_seq().await.expect("last seq");
        assert_eq!(max, 24, "numbers are contiguous without rollbacks");
        let deleted = store.delete_chunked(COMPACT_FEEDBACK, 100, max, 5).await.expect("delete");
        assert_eq!(deleted, 12);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM events WHERE kind = 'feedback'").await, 0);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM feedback_keys").await, 0);
        assert_eq!(store.last_seq().await.expect("last seq"), max);
        drop_schema(store, &schema).await;
    }

    #[tokio::test]
    async fn the_schema_is_created_and_holds_the_tables() {
        let Some((url, schema)) = scratch().await else { return };
        let store = PostgresStore::open(&url, Durability::Process).await.expect("open");
        // Opening again finds the schema and the migrations in place.
        let again = PostgresStore::open(&url, Durability::Process).await.expect("reopen");
        drop(again);
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::TEXT FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1",
        )
        .bind(&schema)
        .fetch_all(&store.pool)
        .await
        .expect("tables");
        assert_eq!(
            tables,
            [
                "_sqlx_migrations",
                "api_keys",
                "audit_log",
                "events",
                "feedback_keys",
                "impressions",
                "log_head",
                "models",
                "review_items",
                "snapshots"
            ]
        );
        drop_schema(store, &schema).await;
    }
}
