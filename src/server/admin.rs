//! Admin routes: metrics, keys, users, state.

use super::api::{KeyCreateRequest, KeyCreated, KeyInfo, check_user_id};
use super::auth::new_key;
use super::error::{ApiError, ApiJson};
use super::extract::Admin;
use super::state::AppState;
use crate::events::{EventBody, Scope};
use crate::features::hash::murmur3_32;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Formats milliseconds since the epoch as RFC 3339 UTC.
#[must_use]
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(get, path = "/metrics", responses((status = 200), (status = 401), (status = 403)), security(("bearer" = [])))]
pub async fn metrics(State(state): State<Arc<AppState>>, Admin(_c): Admin) -> Response {
    state.metrics.run_upkeep();
    let mut r = state.metrics.render().into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    r
}

fn key_info(k: &crate::store::KeyRecord) -> KeyInfo {
    KeyInfo {
        id: k.id.clone(),
        scope: k.scope.name().to_string(),
        created_at: rfc3339(k.created_at_ms),
        revoked_at: k.revoked_at_ms.map(rfc3339),
        last_used_at: k.last_used_at_ms.map(rfc3339),
    }
}

/// `GET /admin/keys`: ids, scopes and times; never the keys.
#[utoipa::path(get, path = "/admin/keys", responses((status = 200, body = Vec<KeyInfo>)), security(("bearer" = [])))]
pub async fn list_keys(
    State(state): State<Arc<AppState>>,
    Admin(_c): Admin,
) -> Result<Json<serde_json::Value>, ApiError> {
    let keys = state.store.list_keys().await.map_err(|e| ApiError::store(&e))?;
    let list: Vec<KeyInfo> = keys.iter().map(key_info).collect();
    Ok(Json(serde_json::json!({ "keys": list })))
}

/// `POST /admin/keys`: a new key, shown once.
#[utoipa::path(post, path = "/admin/keys", request_body = KeyCreateRequest,
    responses((status = 201, body = KeyCreated), (status = 422)), security(("bearer" = [])))]
pub async fn create_key(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
    ApiJson(req): ApiJson<KeyCreateRequest>,
) -> Result<Response, ApiError> {
    let scope: Scope = req.scope.parse().map_err(ApiError::unprocessable)?;
    let (rec, key) = new_key(scope, super::now_ms());
    state.store.insert_key(&rec).await.map_err(|e| ApiError::store(&e))?;
    state.shared.keys.upsert(&rec);
    state.committed.notify_one();
    tracing::info!(key_id = %rec.id, scope = scope.name(), by = %caller.key_id, "key created");
    let details = serde_json::json!({ "scope": scope.name() });
    super::audit::record(&state, &caller.key_id, "key.create", &rec.id, details).await;
    let body = KeyCreated { id: rec.id, scope: scope.name().to_string(), key };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `DELETE /admin/keys/{key_id}`: revoke a key.
#[utoipa::path(delete, path = "/admin/keys/{key_id}", params(("key_id" = String, Path)),
    responses((status = 200), (status = 404)), security(("bearer" = [])))]
pub async fn revoke_key(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
    Path(key_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let revoked = state.store.revoke_key(&key_id, super::now_ms()).await.map_err(|e| ApiError::store(&e))?;
    if !revoked {
        return Err(ApiError::not_found(format!("no active key with id {key_id:?}")));
    }
    state.shared.keys.revoke(&key_id);
    state.committed.notify_one();
    tracing::info!(key_id = %key_id, by = %caller.key_id, "key revoked");
    super::audit::record(&state, &caller.key_id, "key.revoke", &key_id, serde_json::json!({})).await;
    Ok(Json(serde_json::json!({ "id": key_id, "revoked": true })))
}

/// `POST /admin/users/{user_id}/policy/reset`: back to the defaults (logged).
#[utoipa::path(post, path = "/admin/users/{user_id}/policy/reset", params(("user_id" = String, Path)),
    responses((status = 200)), security(("bearer" = [])))]
pub async fn reset_policy(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
    Path(user_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_user_id(&user_id)?;
    let seqs = state
        .store
        .append(super::now_ms(), vec![EventBody::PolicyReset { user_id: user_id.clone() }])
        .await
        .map_err(|e| ApiError::store(&e))?;
    let seq = seqs.first().copied().unwrap_or(0);
    wait_applied(&state, seq).await;
    tracing::info!(by = %caller.key_id, seq, "policy reset");
    super::audit::record(&state, &caller.key_id, "user.policy_reset", &user_id, serde_json::json!({ "seq": seq }))
        .await;
    // Trust, usage counts and the label budget live in the policy state: the reset clears them.
    let trust = f64::from(state.policy_state(&user_id).trust);
    Ok(Json(serde_json::json!({ "user_id": user_id, "reset": true, "seq": seq, "trust": trust })))
}

/// `DELETE /admin/users/{user_id}`: erase a user's impressions, feedback links and policy.
#[utoipa::path(delete, path = "/admin/users/{user_id}", params(("user_id" = String, Path)),
    responses((status = 200)), security(("bearer" = [])))]
pub async fn erase_user(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
    Path(user_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_user_id(&user_id)?;
    // Buffered impressions of the user must be in the store before they can be erased.
    state.writer.flush().await;
    let (seq, impressions, feedback) =
        state.store.erase_user(&user_id, super::now_ms()).await.map_err(|e| ApiError::store(&e))?;
    wait_applied(&state, seq).await;
    tracing::info!(by = %caller.key_id, seq, impressions, feedback, "user erased");
    let details = serde_json::json!({ "seq": seq, "impressions_deleted": impressions, "feedback_unlinked": feedback });
    super::audit::record(&state, &caller.key_id, "user.erase", &user_id, details).await;
    Ok(Json(serde_json::json!({
        "user_id": user_id, "erased": true, "impressions_deleted": impressions, "feedback_unlinked": feedback, "seq": seq
    })))
}

/// Waits (briefly) until the learner applied event `seq`, so the caller sees its effect.
pub(super) async fn wait_applied(state: &AppState, seq: i64) {
    wait_applied_for(state, seq, 200).await;
}

/// Waits up to `ticks` × 10 ms until the learner applied event `seq`.
async fn wait_applied_for(state: &AppState, seq: i64, ticks: u32) {
    state.committed.notify_one();
    for _ in 0..ticks {
        if state.shared.applied_seq.load(Ordering::Acquire) >= seq {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

fn served_version(state: &AppState) -> String {
    state.shared.model.read().map(|m| m.version.clone()).unwrap_or_default()
}

fn registry_error(e: &crate::registry::RegistryError) -> ApiError {
    match e {
        crate::registry::RegistryError::NotFound(_) => ApiError::not_found(e.to_string()),
        crate::registry::RegistryError::Unusable(..) => ApiError::unprocessable(e.to_string()),
        crate::registry::RegistryError::Store(s) => ApiError::store(s),
    }
}

/// `GET /admin/models`: the registry's versions with their holdout metrics, which one is live
/// (the newest activation in the log) and which one this replica serves.
#[utoipa::path(get, path = "/admin/models", responses((status = 200)), security(("bearer" = [])))]
pub async fn list_models(
    State(state): State<Arc<AppState>>,
    Admin(_c): Admin,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (entries, live) = crate::registry::list(state.store.as_ref()).await.map_err(|e| registry_error(&e))?;
    let models: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            serde_json::json!({
                "version": e.version,
                "created_at": rfc3339(e.created_at_ms),
                "trained_through_seq": e.trained_through_seq,
                "bytes": e.bytes,
                "live": e.live,
                "metrics": e.metrics,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({
        "live": live.as_ref().map(|(_, a)| a.version.clone()),
        "live_reason": live.as_ref().map(|(_, a)| a.reason.name()),
        "served": served_version(&state),
        "models": models,
    })))
}

/// Waits until the learner applied the activation at `seq` and checks that the version it
/// names is served.
async fn switched(state: &AppState, seq: i64, version: &str) -> Result<Json<serde_json::Value>, ApiError> {
    // Loading a version and re-applying the feedback after its cut-off takes a moment.
    wait_applied_for(state, seq, 3000).await;
    let served = served_version(state);
    if state.shared.applied_seq.load(Ordering::Acquire) < seq {
        return Err(ApiError::unavailable(format!("the switch to {version} is still in progress; serving {served}")));
    }
    if served != version {
        return Err(ApiError::unavailable(format!(
            "model version {version} is live but could not be loaded here (see the log); serving {served}"
        )));
    }
    Ok(Json(serde_json::json!({ "model_version": served, "seq": seq })))
}

/// `POST /admin/models/reload`: serve the version the registry marks live, without a restart.
#[utoipa::path(post, path = "/admin/models/reload", responses((status = 200), (status = 503)), security(("bearer" = [])))]
pub async fn reload_model(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
) -> Result<Json<serde_json::Value>, ApiError> {
    let live = state.store.last_activation().await.map_err(|e| ApiError::store(&e))?;
    tracing::info!(by = %caller.key_id, "model reload");
    let target = live.as_ref().map_or_else(|| served_version(&state), |(_, a)| a.version.clone());
    super::audit::record(&state, &caller.key_id, "model.reload", &target, serde_json::json!({})).await;
    match live {
        Some((seq, a)) => switched(&state, seq, &a.version).await,
        None => Ok(Json(serde_json::json!({ "model_version": served_version(&state), "seq": null }))),
    }
}

/// `POST /admin/models/{version}/activate`: make a version live (publish or roll back), as a
/// logged event every replica follows.
#[utoipa::path(post, path = "/admin/models/{version}/activate", params(("version" = String, Path)),
    responses((status = 200), (status = 404), (status = 503)), security(("bearer" = [])))]
pub async fn activate_model(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
    Path(version): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let seq = crate::registry::activate(
        state.store.as_ref(),
        &version,
        crate::events::ActivationReason::Activate,
        &caller.key_id,
        super::now_ms(),
    )
    .await
    .map_err(|e| registry_error(&e))?;
    tracing::info!(by = %caller.key_id, version = %version, seq, "model activated");
    switched(&state, seq, &version).await
}

/// A checksum of the learned state: every weight accumulator and every policy.
#[must_use]
pub fn state_checksum(state: &AppState) -> (String, usize, usize) {
    let model = state.shared.model.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut buf = Vec::new();
    let entries = model.sparse_state();
    for (i, z, n) in &entries {
        buf.extend_from_slice(&i.to_le_bytes());
        buf.extend_from_slice(&z.to_bits().to_le_bytes());
        buf.extend_from_slice(&n.to_bits().to_le_bytes());
    }
    drop(model);
    let policies = state.shared.policies.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    let users: Vec<(&u64, &crate::policy::PolicyState)> = policies.iter().collect();
    for (u, p) in &users {
        buf.extend_from_slice(&u.to_le_bytes());
        buf.extend_from_slice(&serde_json::to_vec(p).unwrap_or_default());
    }
    if let Ok(keys) = state.shared.key_usage.read() {
        buf.extend_from_slice(&serde_json::to_vec(&*keys).unwrap_or_default());
    }
    buf.extend_from_slice(&serde_json::to_vec(&state.shared.population()).unwrap_or_default());
    let sum = format!("{:08x}{:08x}", murmur3_32(&buf, 0x5eed_0001), murmur3_32(&buf, 0x5eed_0002));
    (sum, entries.len(), users.len())
}

/// `GET /admin/state`: what this replica has learned, as a checksum (equal on every replica
/// and after a replay of the same log).
#[utoipa::path(get, path = "/admin/state", responses((status = 200)), security(("bearer" = [])))]
pub async fn state_info(
    State(state): State<Arc<AppState>>,
    Admin(_c): Admin,
) -> Result<Json<serde_json::Value>, ApiError> {
    let st = Arc::clone(&state);
    let (sum, weights, users) =
        tokio::task::spawn_blocking(move || state_checksum(&st)).await.map_err(|e| ApiError::internal(&e))?;
    let version = served_version(&state);
    Ok(Json(serde_json::json!({
        "applied_seq": state.shared.applied_seq.load(Ordering::Acquire),
        "model_version": version,
        "state_checksum": sum,
        "weights": weights,
        "users": users,
    })))
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn formats_utc_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_305_600_123), "2026-11-22T00:00:00.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
