//! The review queue: candidates that were blocked, reported insecure by their user, or scored
//! in the uncertain band wait here for a human verdict, which is logged as a strong label.
//!
//! Handlers never wait for the queue. The rank path's items (blocked, uncertain, anomaly) go
//! to the writer with their impression and are committed in its transaction
//! ([`super::writer`]). Reports go to a channel ([`ReviewSink`]) that one task resolves
//! against the stored items and impressions and writes in batches. The queue is best effort
//! where the log is not: an item lost in a crash (or dropped because a channel is full,
//! counted in `guardrank_review_items_dropped_total`) costs a review, never an acknowledged
//! event.

use super::admin::rfc3339;
use super::audit::{paging, query_params};
use super::error::{ApiError, ApiJson};
use super::extract::Admin;
use super::state::{AppState, Shared};
use crate::events::Verdict;
use crate::store::{Decision, NewReviewItem, ReviewFilter, ReviewItem, ReviewReason, ReviewStatus, Store, VerdictIn};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Reports waiting for the task at most; beyond, new ones are dropped (and counted).
const QUEUE: usize = 4096;
/// Reports handled per round at most.
const BATCH: usize = 2048;
/// How long the task gathers reports before it handles them.
const LINGER: std::time::Duration = std::time::Duration::from_millis(250);
/// Longest reviewer note, in characters.
const MAX_NOTE_CHARS: usize = 2000;

/// What the sink is handed: a candidate a user reported insecure, resolved against its stored
/// item or impression.
#[derive(Debug)]
pub struct Report {
    pub request_id: String,
    pub candidate_id: String,
    pub at_ms: i64,
}

/// A cheap handle to the queue's writer task.
#[derive(Debug, Clone)]
pub struct ReviewSink {
    tx: mpsc::Sender<Report>,
}

impl ReviewSink {
    /// Hands an item over without waiting; drops it (counted) if the queue is full.
    pub fn offer(&self, report: Report) {
        if self.tx.try_send(report).is_err() {
            metrics::counter!("guardrank_review_items_dropped_total").increment(1);
        }
    }
}

/// Starts the writer task; it stops when every sink is dropped, after writing what it holds.
pub fn spawn(store: Arc<dyn Store>, shared: Arc<Shared>) -> (ReviewSink, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    (ReviewSink { tx }, tokio::spawn(run(rx, store, shared)))
}

async fn run(mut rx: mpsc::Receiver<Report>, store: Arc<dyn Store>, shared: Arc<Shared>) {
    while let Some(first) = rx.recv().await {
        // Gather for a while: each write is a transaction that competes with the group
        // commit of impressions and feedback for the store's write lock, and queued items are
        // best effort, so a quarter of a second of delay costs nothing.
        let mut cmds = vec![first];
        let deadline = tokio::time::Instant::now() + LINGER;
        while cmds.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(c)) => cmds.push(c),
                Ok(None) | Err(_) => break,
            }
        }
        let mut items = Vec::new();
        let mut reports: Vec<(String, String)> = Vec::with_capacity(cmds.len());
        let mut reported_at: Vec<i64> = Vec::with_capacity(cmds.len());
        for Report { request_id, candidate_id, at_ms } in cmds {
            reports.push((request_id, candidate_id));
            reported_at.push(at_ms);
        }
        // Reports: one statement marks the candidates that have an item already (most: a
        // reported candidate was usually blocked or uncertain when it was served); only the
        // rest need their impression, loaded once per request.
        if !reports.is_empty() {
            match store.report_review_items(&reports).await {
                Ok(missing) => {
                    let mut by_request: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
                    for i in missing {
                        by_request.entry(reports[i].0.as_str()).or_default().push(i);
                    }
                    for (request_id, which) in by_request {
                        let imp = match store.impression(request_id).await {
                            Ok(Some(imp)) => imp,
                            Ok(None) => continue,
                            Err(e) => {
                                tracing::warn!(error = %e, request_id = %request_id, "reported candidates not queued for review");
                                continue;
                            }
                        };
                        for i in which {
                            items.extend(reported_item(&shared, &imp, &reports[i].1, reported_at[i]));
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, reports = reports.len(), "reported candidates not queued for review");
                    metrics::counter!("guardrank_review_items_dropped_total").increment(reports.len() as u64);
                }
            }
        }
        match store.add_review_items(&items).await {
            Ok(_) => count_queued(&items),
            Err(e) => {
                tracing::warn!(error = %e, items = items.len(), "review items not written");
                metrics::counter!("guardrank_review_items_dropped_total").increment(items.len() as u64);
            }
        }
    }
}

/// Counts items just committed to the queue in `guardrank_review_items_total`, by reason (the
/// writer's commits and this task's both).
pub(super) fn count_queued(items: &[NewReviewItem]) {
    let mut by_reason: Vec<(&'static str, u64)> = Vec::new();
    for item in items {
        match by_reason.iter_mut().find(|(r, _)| *r == item.reason.name()) {
            Some((_, n)) => *n += 1,
            None => by_reason.push((item.reason.name(), 1)),
        }
    }
    for (reason, n) in by_reason {
        metrics::counter!("guardrank_review_items_total", "reason" => reason).increment(n);
    }
}

/// The review item of a reported candidate, from its stored impression (findings without
/// positions: the impression keeps rule ids, not spans).
fn reported_item(
    shared: &Shared,
    imp: &crate::events::Impression,
    candidate_id: &str,
    at_ms: i64,
) -> Option<NewReviewItem> {
    let c = imp.candidate(candidate_id)?;
    let pack = shared.rules.load();
    let findings: Vec<serde_json::Value> = c
        .rules
        .iter()
        .map(|id| match pack.rules().iter().find(|r| r.spec.id == *id) {
            Some(r) => serde_json::json!({"rule_id": id, "cwe": r.spec.cwe, "severity": r.spec.severity,
                                         "message": r.spec.message}),
            None => serde_json::json!({ "rule_id": id }),
        })
        .collect();
    Some(NewReviewItem {
        request_id: imp.request_id.clone(),
        candidate_id: candidate_id.to_string(),
        user_id: imp.user_id.clone(),
        reason: ReviewReason::Reported,
        risk: f64::from(c.risk),
        rules: c.rules.clone(),
        findings_json: serde_json::Value::Array(findings).to_string(),
        text: c.text.clone(),
        features: c.features.clone(),
        created_at_ms: at_ms,
    })
}

/// Parses `since`: milliseconds since the epoch, or RFC 3339 in UTC (`2026-11-22T08:00:00Z`,
/// fractional seconds allowed).
fn parse_since(v: &str) -> Option<i64> {
    if let Ok(ms) = v.parse::<i64>() {
        return Some(ms);
    }
    let b = v.as_bytes();
    let num = |r: std::ops::Range<usize>| v.get(r).and_then(|s| s.parse::<i64>().ok());
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, m, d, hh, mm, ss) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    let rest = v.get(19..)?.strip_suffix('Z')?;
    let frac_ms = match rest.strip_prefix('.') {
        Some(f) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|c| c.is_ascii_digit()) => {
            format!("{f:0<3}").get(0..3)?.parse::<i64>().ok()?
        }
        Some(_) => return None,
        None if rest.is_empty() => 0,
        None => return None,
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm), the inverse of `rfc3339`.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000) + frac_ms)
}

fn item_json(i: ReviewItem) -> serde_json::Value {
    let findings: serde_json::Value = serde_json::from_str(&i.findings_json).unwrap_or(serde_json::json!([]));
    let mut v = serde_json::json!({
        "id": i.id, "request_id": i.request_id, "candidate_id": i.candidate_id, "user_id": i.user_id,
        "risk": (i.risk * 10_000.0).round() / 10_000.0, "findings": findings, "rules": i.rules,
        "reason": i.reason.name(), "status": i.status.name(), "created_at": rfc3339(i.created_at_ms),
        "decided_at": i.decided_at_ms.map(rfc3339), "decided_by": i.decided_by, "note": i.note,
    });
    if let (Some(text), Some(obj)) = (i.text, v.as_object_mut()) {
        obj.insert("text".into(), serde_json::Value::String(text));
    }
    v
}

/// `GET /admin/review`: review items, newest first. Filters: `status` (pending, insecure,
/// safe, expired; default any), `user`, `rule` (a rule id that hit), `since` (ms since the
/// epoch or RFC 3339); paging: `limit` (default 50, at most 500) and `before` (an item id: the
/// previous page's `next_before`).
#[utoipa::path(get, path = "/admin/review",
    params(("status" = Option<String>, Query), ("user" = Option<String>, Query), ("rule" = Option<String>, Query),
           ("since" = Option<String>, Query), ("limit" = Option<u32>, Query), ("before" = Option<i64>, Query)),
    responses((status = 200), (status = 422)), security(("bearer" = [])))]
pub async fn list_review(
    State(state): State<Arc<AppState>>,
    Admin(_c): Admin,
    q: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let params = query_params(q, &["status", "user", "rule", "since", "limit", "before"])?;
    let (limit, before) = paging(&params)?;
    let status =
        params.get("status").map(|s| s.parse::<ReviewStatus>().map_err(ApiError::unprocessable)).transpose()?;
    let since_ms = params
        .get("since")
        .map(|s| {
            parse_since(s).ok_or_else(|| {
                ApiError::unprocessable(format!("since must be milliseconds or RFC 3339 UTC, got {s:?}"))
            })
        })
        .transpose()?;
    let filter = ReviewFilter {
        status,
        user_id: params.get("user").cloned(),
        rule: params.get("rule").cloned(),
        since_ms,
        before,
        limit,
    };
    let items = state.store.list_review(&filter).await.map_err(|e| ApiError::store(&e))?;
    let next = (items.len() == limit as usize).then(|| items.last().map(|i| i.id)).flatten();
    let items: Vec<serde_json::Value> = items.into_iter().map(item_json).collect();
    Ok(Json(serde_json::json!({ "items": items, "next_before": next })))
}

/// Body of `POST /admin/review/{id}`.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerdictRequest {
    /// `insecure` or `safe`.
    pub verdict: String,
    #[serde(default)]
    pub note: String,
}

/// `POST /admin/review/{id}`: records a verdict on a pending item; it is logged as a strong
/// label the model learns from (here at once, on other replicas within the tail interval, and
/// in the next batch job). 404: no such item; 409: judged or expired already.
#[utoipa::path(post, path = "/admin/review/{id}", params(("id" = i64, Path)), request_body = VerdictRequest,
    responses((status = 200), (status = 404), (status = 409), (status = 422)), security(("bearer" = [])))]
pub async fn decide(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<VerdictRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let item_id = id.parse::<i64>().map_err(|_| ApiError::not_found(format!("no review item {id:?}")))?;
    let verdict: Verdict = req.verdict.parse().map_err(ApiError::unprocessable)?;
    if req.note.chars().count() > MAX_NOTE_CHARS {
        return Err(ApiError::unprocessable(format!("note must be at most {MAX_NOTE_CHARS} characters")));
    }
    let v = VerdictIn { item_id, verdict, note: req.note, key_id: caller.key_id.clone(), at_ms: super::now_ms() };
    match state.store.decide_review(&v).await.map_err(|e| ApiError::store(&e))? {
        Decision::Decided { seq } => {
            super::admin::wait_applied(&state, seq).await;
            metrics::counter!("guardrank_review_verdicts_total", "verdict" => verdict.name()).increment(1);
            tracing::info!(by = %caller.key_id, item_id, verdict = verdict.name(), seq, "review verdict");
            Ok(Json(
                serde_json::json!({ "id": item_id, "status": ReviewStatus::of_verdict(verdict).name(), "seq": seq }),
            ))
        }
        Decision::NotFound => Err(ApiError::not_found(format!("no review item {item_id}"))),
        Decision::NotPending(s) => Err(ApiError::conflict(format!("review item {item_id} is {s} already"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_parses_milliseconds_and_rfc3339_as_rfc3339_writes_it() {
        for ms in [0, 951_782_400_000, 1_795_305_600_123] {
            assert_eq!(parse_since(&rfc3339(ms)), Some(ms));
        }
        assert_eq!(parse_since("1795305600123"), Some(1_795_305_600_123));
        assert_eq!(parse_since("2026-11-22T00:00:00Z"), Some(1_795_305_600_000));
        assert_eq!(parse_since("2026-11-22T00:00:00.5Z"), Some(1_795_305_600_500));
        assert_eq!(parse_since("2026-13-22T00:00:00Z"), None);
        assert_eq!(parse_since("2026-11-22 00:00:00"), None);
        assert_eq!(parse_since("yesterday"), None);
    }
}
