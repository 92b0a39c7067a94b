//! Hot rule patches over HTTP: `GET /admin/rules`, `POST /admin/rules`,
//! `DELETE /admin/rules/{rule_id}`. A patch is checked here (patterns compile, its own examples
//! behave), then logged; the learner of every replica applies it (see [`super::patches`]).

use super::admin::{rfc3339, wait_applied};
use super::audit::record;
use super::error::{ApiError, ApiJson};
use super::extract::Admin;
use super::state::AppState;
use crate::events::EventBody;
use crate::rules::{CompiledRule, RuleSpec};
use axum::Json;
use axum::extract::{Path, State};
use std::sync::Arc;

/// `GET /admin/rules`: the active pack (each rule with its source, `builtin` or `patched`)
/// and the disabled rule ids.
#[utoipa::path(get, path = "/admin/rules", responses((status = 200)), security(("bearer" = [])))]
pub async fn list_rules(
    State(state): State<Arc<AppState>>,
    Admin(_c): Admin,
) -> Result<Json<serde_json::Value>, ApiError> {
    let set = state.shared.rule_set.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let pack = state.shared.rules.load();
    let rules: Vec<serde_json::Value> = pack
        .rules()
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r.spec.as_ref()).unwrap_or_default();
            if let Some(obj) = v.as_object_mut() {
                match set.patch(&r.spec.id) {
                    Some(p) => {
                        obj.insert("source".into(), "patched".into());
                        obj.insert("patched_at".into(), rfc3339(p.at_ms).into());
                        obj.insert("patched_by".into(), p.key_id.clone().into());
                        obj.insert("seq".into(), p.seq.into());
                    }
                    None => {
                        obj.insert("source".into(), "builtin".into());
                    }
                }
            }
            v
        })
        .collect();
    let disabled: Vec<serde_json::Value> = set
        .patches()
        .iter()
        .filter(|(_, p)| p.spec.is_none())
        .map(|(id, p)| {
            serde_json::json!({"rule_id": id, "builtin": set.is_builtin(id), "disabled_at": rfc3339(p.at_ms),
                               "disabled_by": p.key_id, "seq": p.seq})
        })
        .collect();
    Ok(Json(serde_json::json!({ "rules": rules, "disabled": disabled })))
}

/// `POST /admin/rules`: adds or replaces a rule (the rule file schema, as JSON). 422 unless
/// every pattern compiles, each insecure example matches and no secure example does. Live for
/// the next request here, on other replicas within the tail interval, and after restarts.
#[utoipa::path(post, path = "/admin/rules", request_body(content = Object, description = "a rule: the rule file schema as JSON (API.md)"),
    responses((status = 200), (status = 422)), security(("bearer" = [])))]
pub async fn patch_rule(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
    ApiJson(spec): ApiJson<RuleSpec>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let checked = spec.clone();
    // Compiling patterns and running examples is CPU work: off the async workers.
    tokio::task::spawn_blocking(move || CompiledRule::compile_checked(checked).map(|_| ()))
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(|e| ApiError::unprocessable(e.to_string()))?;
    let spec_json = serde_json::to_string(&spec).map_err(|e| ApiError::internal(&e))?;
    let replaced = state.shared.rules.load().rules().iter().any(|r| r.spec.id == spec.id);
    let seqs = state
        .store
        .append(super::now_ms(), vec![EventBody::RulePatched { spec_json, key_id: caller.key_id.clone() }])
        .await
        .map_err(|e| ApiError::store(&e))?;
    let seq = seqs.first().copied().unwrap_or(0);
    wait_applied(&state, seq).await;
    metrics::counter!("guardrank_rule_patches_total", "action" => "patch").increment(1);
    let details = serde_json::json!({"seq": seq, "replaced": replaced, "severity": spec.severity, "mode": spec.mode});
    record(&state, &caller.key_id, "rule.patch", &spec.id, details).await;
    tracing::info!(by = %caller.key_id, rule = %spec.id, seq, "rule patched");
    Ok(Json(serde_json::json!({ "rule_id": spec.id, "replaced": replaced, "mode": spec.mode, "seq": seq })))
}

/// `DELETE /admin/rules/{rule_id}`: disables an active rule (built-in or patched); a later
/// `POST` with the same id enables it again.
#[utoipa::path(delete, path = "/admin/rules/{rule_id}", params(("rule_id" = String, Path)),
    responses((status = 200), (status = 404)), security(("bearer" = [])))]
pub async fn disable_rule(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
    Path(rule_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !state.shared.rules.load().rules().iter().any(|r| r.spec.id == rule_id) {
        return Err(ApiError::not_found(format!("no active rule {rule_id:?}")));
    }
    let seqs = state
        .store
        .append(
            super::now_ms(),
            vec![EventBody::RuleDisabled { rule_id: rule_id.clone(), key_id: caller.key_id.clone() }],
        )
        .await
        .map_err(|e| ApiError::store(&e))?;
    let seq = seqs.first().copied().unwrap_or(0);
    wait_applied(&state, seq).await;
    metrics::counter!("guardrank_rule_patches_total", "action" => "disable").increment(1);
    record(&state, &caller.key_id, "rule.disable", &rule_id, serde_json::json!({ "seq": seq })).await;
    tracing::info!(by = %caller.key_id, rule = %rule_id, seq, "rule disabled");
    Ok(Json(serde_json::json!({ "rule_id": rule_id, "disabled": true, "seq": seq })))
}
