//! The PostgreSQL side of the oversight tables (review queue, audit log): see
//! [`super::super::oversight`]. A child module of `postgres`, so it shares its pools and locks.

use super::super::oversight::{DecidedRow, REVIEW_ROWS, review_runs, review_upsert, rules_from_column, verdict_event};
use super::super::{
    AuditEntry, Decision, NewAudit, NewReviewItem, ReviewFilter, ReviewItem, ReviewStatus, ReviewUpkeep, StoreError,
    VerdictIn,
};
use super::{PostgresStore, decode_body};
use crate::events::Event;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Postgres, Row};

const ITEM_COLUMNS: &str = "id, request_id, candidate_id, user_id, reason, status, risk, rules, findings, text, \
                            created_at_ms, decided_at_ms, decided_by, note";

pub(super) fn item_from_row(row: &PgRow) -> Result<ReviewItem, StoreError> {
    let id: i64 = row.try_get("id")?;
    let corrupt = |e: String| StoreError::Corrupt(format!("review item {id}: {e}"));
    let reason: String = row.try_get("reason")?;
    let status: String = row.try_get("status")?;
    let rules: String = row.try_get("rules")?;
    Ok(ReviewItem {
        id,
        request_id: row.try_get("request_id")?,
        candidate_id: row.try_get("candidate_id")?,
        user_id: row.try_get("user_id")?,
        reason: reason.parse().map_err(corrupt)?,
        status: status.parse().map_err(corrupt)?,
        risk: row.try_get("risk")?,
        rules: rules_from_column(&rules),
        findings_json: row.try_get("findings")?,
        text: row.try_get("text")?,
        created_at_ms: row.try_get("created_at_ms")?,
        decided_at_ms: row.try_get("decided_at_ms")?,
        decided_by: row.try_get("decided_by")?,
        note: row.try_get("note")?,
    })
}

pub(super) async fn add_review_items(store: &PostgresStore, items: &[NewReviewItem]) -> Result<u64, StoreError> {
    if items.is_empty() {
        return Ok(0);
    }
    let mut tx = store.pool.begin().await?;
    let n = insert_review_items(&mut tx, items).await?;
    tx.commit().await?;
    Ok(n)
}

/// Queues review items inside the caller's transaction (multi-row upserts, see
/// [`review_runs`]); returns the rows inserted or upgraded.
pub(super) async fn insert_review_items(conn: &mut PgConnection, items: &[NewReviewItem]) -> Result<u64, StoreError> {
    let mut n = 0;
    for run in review_runs(items) {
        let mut q = review_upsert::<Postgres>(run)?;
        n += q.build().persistent(run.len() == REVIEW_ROWS).execute(&mut *conn).await?.rows_affected();
    }
    Ok(n)
}

pub(super) async fn report_review_items(
    store: &PostgresStore,
    keys: &[(String, String)],
) -> Result<Vec<usize>, StoreError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut requests: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
    requests.sort_unstable();
    requests.dedup();
    let wanted: std::collections::HashSet<(&str, &str)> = keys.iter().map(|(r, c)| (r.as_str(), c.as_str())).collect();
    let mut tx = store.pool.begin().await?;
    // By request id (the unique index's prefix), then the candidates picked out here.
    let rows: Vec<(i64, String, String, bool)> = sqlx::query_as(
        "SELECT id, request_id, candidate_id, reason = 'uncertain' AND status = 'pending' FROM review_items \
         WHERE request_id = ANY($1) FOR UPDATE",
    )
    .bind(&requests)
    .fetch_all(&mut *tx)
    .await?;
    let mut found: std::collections::HashSet<(String, String)> = std::collections::HashSet::new();
    let mut upgrade: Vec<i64> = Vec::new();
    for (id, r, c, uncertain) in rows {
        if wanted.contains(&(r.as_str(), c.as_str())) {
            if uncertain {
                upgrade.push(id);
            }
            found.insert((r, c));
        }
    }
    if !upgrade.is_empty() {
        sqlx::query("UPDATE review_items SET reason = 'reported' WHERE id = ANY($1)")
            .bind(&upgrade)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(keys.iter().enumerate().filter(|(_, k)| !found.contains(*k)).map(|(i, _)| i).collect())
}

pub(super) async fn review_item(store: &PostgresStore, id: i64) -> Result<Option<ReviewItem>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT {ITEM_COLUMNS} FROM review_items WHERE id = $1"));
    let row = sqlx::query(sql).bind(id).fetch_optional(&store.pool).await?;
    row.as_ref().map(item_from_row).transpose()
}

pub(super) async fn list_review(store: &PostgresStore, f: &ReviewFilter) -> Result<Vec<ReviewItem>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {ITEM_COLUMNS} FROM review_items \
         WHERE ($1::TEXT IS NULL OR status = $1) AND ($2::TEXT IS NULL OR user_id = $2) \
         AND ($3::TEXT IS NULL OR strpos(rules, ',' || $3 || ',') > 0) \
         AND ($4::BIGINT IS NULL OR created_at_ms >= $4) \
         AND ($5::BIGINT IS NULL OR id < $5) ORDER BY id DESC LIMIT $6"
    ));
    let rows = sqlx::query(sql)
        .bind(f.status.map(ReviewStatus::name))
        .bind(&f.user_id)
        .bind(&f.rule)
        .bind(f.since_ms)
        .bind(f.before)
        .bind(i64::from(f.limit))
        .fetch_all(&store.pool)
        .await?;
    rows.iter().map(item_from_row).collect()
}

pub(super) async fn decide_review(store: &PostgresStore, v: &VerdictIn) -> Result<Decision, StoreError> {
    let mut log = store.begin_log().await?;
    let row: Option<DecidedRow> = sqlx::query_as(
        "UPDATE review_items SET status = $1, decided_at_ms = $2, decided_by = $3, note = $4, \
         accepted = EXISTS (SELECT 1 FROM feedback_keys k WHERE k.request_id = review_items.request_id \
         AND k.candidate_id = review_items.candidate_id AND k.outcome = 'accepted') \
         WHERE id = $5 AND status = 'pending' RETURNING request_id, candidate_id, risk, features, accepted",
    )
    .bind(ReviewStatus::of_verdict(v.verdict).name())
    .bind(v.at_ms)
    .bind(&v.key_id)
    .bind(&v.note)
    .bind(v.item_id)
    .fetch_optional(log.conn())
    .await?;
    let Some((request_id, candidate_id, risk, features, accepted)) = row else {
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM review_items WHERE id = $1")
            .bind(v.item_id)
            .fetch_optional(log.conn())
            .await?;
        return match status {
            None => Ok(Decision::NotFound),
            Some(s) => Ok(Decision::NotPending(s.parse().map_err(StoreError::Corrupt)?)),
        };
    };
    let body = verdict_event(v, request_id, candidate_id, risk, features.as_deref(), accepted)?;
    let seq = log.insert_event(v.at_ms, &body).await?;
    let details = serde_json::json!({"verdict": v.verdict.name(), "note": v.note, "seq": seq}).to_string();
    sqlx::query(
        "INSERT INTO audit_log (at_ms, key_id, action, target, details) VALUES ($1, $2, 'review.verdict', $3, $4)",
    )
    .bind(v.at_ms)
    .bind(&v.key_id)
    .bind(v.item_id.to_string())
    .bind(details)
    .execute(log.conn())
    .await?;
    log.commit().await?;
    Ok(Decision::Decided { seq })
}

pub(super) async fn review_upkeep(
    store: &PostgresStore,
    expire_before_ms: i64,
    purge_before_ms: i64,
    max_uncertain: u64,
) -> Result<ReviewUpkeep, StoreError> {
    let mut tx = store.pool.begin().await?;
    let expired = sqlx::query(
        "UPDATE review_items SET status = 'expired', text = NULL, features = NULL \
         WHERE status = 'pending' AND created_at_ms < $1",
    )
    .bind(expire_before_ms)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let dropped = sqlx::query(
        "DELETE FROM review_items WHERE id IN (SELECT id FROM review_items \
         WHERE status = 'pending' AND reason = 'uncertain' ORDER BY id DESC OFFSET $1)",
    )
    .bind(i64::try_from(max_uncertain).unwrap_or(i64::MAX))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let purged = sqlx::query(
        "DELETE FROM review_items WHERE status <> 'pending' AND COALESCE(decided_at_ms, created_at_ms) < $1",
    )
    .bind(purge_before_ms)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(ReviewUpkeep { expired, dropped, purged })
}

pub(super) async fn review_counts(store: &PostgresStore) -> Result<Vec<(ReviewStatus, u64)>, StoreError> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, COUNT(*) FROM review_items GROUP BY status").fetch_all(&store.pool).await?;
    rows.into_iter().map(|(s, n)| Ok((s.parse().map_err(StoreError::Corrupt)?, n.unsigned_abs()))).collect()
}

pub(super) async fn incident_counts(store: &PostgresStore, since_ms: i64) -> Result<(u64, u64), StoreError> {
    let incidents: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM review_items WHERE status = 'insecure' AND accepted AND decided_at_ms >= $1",
    )
    .bind(since_ms)
    .fetch_one(&store.pool)
    .await?;
    let interactions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE kind = 'impression' AND at_ms >= $1")
        .bind(since_ms)
        .fetch_one(&store.pool)
        .await?;
    Ok((incidents.unsigned_abs(), interactions.unsigned_abs()))
}

pub(super) async fn add_audit(store: &PostgresStore, e: &NewAudit) -> Result<i64, StoreError> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO audit_log (at_ms, key_id, action, target, details) VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(e.at_ms)
    .bind(&e.key_id)
    .bind(&e.action)
    .bind(&e.target)
    .bind(&e.details_json)
    .fetch_one(&store.pool)
    .await?;
    Ok(id)
}

pub(super) async fn list_audit(
    store: &PostgresStore,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<AuditEntry>, StoreError> {
    let rows: Vec<(i64, i64, String, String, String, String)> = sqlx::query_as(
        "SELECT id, at_ms, key_id, action, target, details FROM audit_log \
         WHERE ($1::BIGINT IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
    )
    .bind(before)
    .bind(i64::from(limit))
    .fetch_all(&store.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, at_ms, key_id, action, target, details_json)| AuditEntry {
            id,
            at_ms,
            key_id,
            action,
            target,
            details_json,
        })
        .collect())
}

pub(super) async fn rule_events(store: &PostgresStore, through_seq: i64) -> Result<Vec<Event>, StoreError> {
    let rows: Vec<(i64, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT seq, at_ms, body FROM events WHERE kind IN ('rule_patched', 'rule_disabled') AND seq <= $1 \
         ORDER BY seq",
    )
    .bind(through_seq)
    .fetch_all(&store.pool)
    .await?;
    rows.into_iter().map(|(seq, at_ms, bytes)| Ok(Event { seq, at_ms, body: decode_body(seq, &bytes)? })).collect()
}
