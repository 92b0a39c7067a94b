//! The audit log: every admin action with its time, the admin key's id (never the key) and
//! details, in a store table; `GET /admin/audit` lists it newest first.

use super::admin::rfc3339;
use super::error::ApiError;
use super::extract::Admin;
use super::state::AppState;
use crate::store::NewAudit;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Default and largest page of `GET /admin/audit` and `GET /admin/review`.
pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;

/// Records an admin action. Best effort: the action has happened, so a store failure here is
/// logged (and counted) rather than turned into an error for the caller.
pub async fn record(state: &AppState, key_id: &str, action: &str, target: &str, details: serde_json::Value) {
    let entry = NewAudit {
        at_ms: super::now_ms(),
        key_id: key_id.to_string(),
        action: action.to_string(),
        target: target.to_string(),
        details_json: details.to_string(),
    };
    if let Err(e) = state.store.add_audit(&entry).await {
        tracing::error!(error = %e, action, "audit entry not recorded");
        metrics::counter!("guardrank_audit_failures_total").increment(1);
    }
}

/// Query parameters as given, checked against the names a route knows.
///
/// # Errors
/// A malformed query string (400) or an unknown parameter (422).
pub fn query_params(
    q: Result<Query<BTreeMap<String, String>>, QueryRejection>,
    known: &[&str],
) -> Result<BTreeMap<String, String>, ApiError> {
    let Query(params) = q.map_err(|e| ApiError::bad_request(format!("query string: {e}")))?;
    if let Some(k) = params.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ApiError::unprocessable(format!("unknown query parameter {k:?}; known: {}", known.join(", "))));
    }
    Ok(params)
}

/// `limit` (default [`DEFAULT_LIMIT`], 1 to [`MAX_LIMIT`]) and `before` (an id cursor).
///
/// # Errors
/// Either is not a number, or `limit` is out of range (422).
pub fn paging(params: &BTreeMap<String, String>) -> Result<(u32, Option<i64>), ApiError> {
    let limit = match params.get("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| ApiError::unprocessable(format!("limit must be 1 to {MAX_LIMIT}, got {v:?}")))?,
    };
    let before = params
        .get("before")
        .map(|v| v.parse::<i64>().map_err(|_| ApiError::unprocessable(format!("before must be an id, got {v:?}"))))
        .transpose()?;
    Ok((limit, before))
}

/// `GET /admin/audit?limit=100&before=ID`: admin actions, newest first, with the key id that
/// did each (never the key). `next_before` pages on.
#[utoipa::path(get, path = "/admin/audit",
    params(("limit" = Option<u32>, Query, description = "1 to 500, default 50"),
           ("before" = Option<i64>, Query, description = "only entries with a smaller id (the previous page's next_before)")),
    responses((status = 200), (status = 422)), security(("bearer" = [])))]
pub async fn list_audit(
    State(state): State<Arc<AppState>>,
    Admin(_c): Admin,
    q: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let params = query_params(q, &["limit", "before"])?;
    let (limit, before) = paging(&params)?;
    let entries = state.store.list_audit(before, limit).await.map_err(|e| ApiError::store(&e))?;
    let next = (entries.len() == limit as usize).then(|| entries.last().map(|e| e.id)).flatten();
    let items: Vec<serde_json::Value> = entries
        .into_iter()
        .map(|e| {
            let details: serde_json::Value =
                serde_json::from_str(&e.details_json).unwrap_or(serde_json::Value::String(e.details_json));
            serde_json::json!({
                "id": e.id, "at": rfc3339(e.at_ms), "key_id": e.key_id, "action": e.action,
                "target": e.target, "details": details,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "items": items, "next_before": next })))
}
