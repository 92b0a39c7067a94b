//! Handlers of the plugin and public routes.

use super::api::{
    CandidateOut, FeedbackCounts, FeedbackRequest, FeedbackResponse, PolicyBrief, PolicyResponse, PromptOut, RankInput,
    RankRequest, RankResponse, UsageOut, check_user_id, validate_feedback,
};
use super::error::{ApiError, ApiJson};
use super::extract::Plugin;
use super::review::Report;
use super::state::AppState;
use crate::engine::{Assessment, assess, resolve_language};
use crate::events::{CandidateRecord, Impression, Outcome};
use crate::lang::Language;
use crate::policy::Policy;
use crate::rank::{preferences, rank as rank_candidates};
use crate::rules::Mode;
use crate::store::{GroupOutcome, NewReviewItem, ReviewReason};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rand::RngCore;
use std::sync::Arc;

/// Requests whose texts add up to more than this are scored on the blocking pool.
const INLINE_SCORING_BYTES: usize = 16 * 1024;

fn request_id(now_ms: i64) -> String {
    format!("r_{:012x}{:016x}", now_ms.max(0), rand::rng().next_u64())
}

struct Scored {
    assessments: Vec<Assessment>,
    prompt_risk: f64,
    prompt_findings: Vec<crate::engine::Finding>,
    model_version: String,
}

fn score_request(state: &AppState, input: &RankInput) -> Scored {
    let rules = state.shared.rules.load();
    let first = input.texts.first().map_or("", String::as_str);
    // Only guess from the text when neither the request nor the path names the language.
    let lang = input.language.or_else(|| input.file_path.as_deref().and_then(Language::from_path)).or_else(|| {
        match &input.prompt {
            Some(p) => resolve_language(None, None, &format!("{p}\n{first}")),
            None => resolve_language(None, None, first),
        }
    });
    let model = state.shared.model.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    let assessments: Vec<Assessment> = input.texts.iter().map(|t| assess(&rules, &model, t, lang)).collect();
    let model_version = model.version.clone();
    drop(model);
    let (prompt_risk, prompt_findings) = match &input.prompt {
        Some(p) if !p.is_empty() => {
            let a = state.prompt.assess(p);
            (a.risk, a.findings)
        }
        _ => (0.0, Vec::new()),
    };
    Scored { assessments, prompt_risk, prompt_findings, model_version }
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// `POST /v1/rank`: score, rerank and filter the candidates of one completion request.
#[utoipa::path(post, path = "/v1/rank", request_body = RankRequest,
    responses((status = 200, body = RankResponse), (status = 400), (status = 401), (status = 413), (status = 422), (status = 429)),
    security(("bearer" = [])))]
pub async fn rank(
    State(state): State<Arc<AppState>>,
    Plugin(caller): Plugin,
    ApiJson(req): ApiJson<RankRequest>,
) -> Result<Json<RankResponse>, ApiError> {
    let input = req.validate()?;
    let pstate = state.policy_state(&input.user_id);
    if let Err((wait, tier)) = state.user_limiter.check(&input.user_id, f64::from(pstate.trust), state.clock_s()) {
        metrics::counter!("guardrank_rate_limited_total", "scope" => "user", "tier" => tier.name()).increment(1);
        return Err(ApiError::rate_limited(
            wait.ceil() as u64,
            format!("too many requests for this user (rate-limit tier {})", tier.name()),
        ));
    }
    let policy: Policy = pstate.policy(&state.shared.policy_cfg);
    let total: usize =
        input.texts.iter().map(String::len).sum::<usize>() + input.prompt.as_ref().map_or(0, String::len);
    let (input, scored) = if total > INLINE_SCORING_BYTES {
        let st = Arc::clone(&state);
        tokio::task::spawn_blocking(move || {
            let s = score_request(&st, &input);
            (input, s)
        })
        .await
        .map_err(|e| ApiError::internal(&e))?
    } else {
        let s = score_request(&state, &input);
        (input, s)
    };
    let risks: Vec<f64> = scored.assessments.iter().map(|a| a.risk).collect();
    let prefs = preferences(&input.logprobs);
    let ranked = rank_candidates(&risks, &prefs, policy.risk_penalty, policy.block_threshold);
    let now = super::now_ms();
    let rid = request_id(now);

    let mut records = Vec::with_capacity(ranked.len());
    let mut out = Vec::with_capacity(ranked.len());
    let mut blocked = 0u64;
    let RankInput { user_id, language, ids, texts, prompt: prompt_text, .. } = input;
    // Kept only for an anomaly review item (the impression takes the id).
    let anomalous_user = (pstate.trust < 1.0).then(|| user_id.clone());
    let mut assessments: Vec<Option<Assessment>> = scored.assessments.into_iter().map(Some).collect();
    let band = (state.settings.review_band_low, state.settings.review_band_high);
    let mut review = Vec::new();
    for r in &ranked {
        let Some(a) = assessments.get_mut(r.index).and_then(Option::take) else { continue };
        let id = ids.get(r.index).cloned().unwrap_or_default();
        blocked += u64::from(r.blocked);
        metrics::histogram!("guardrank_candidate_risk").record(a.risk);
        let flagged = a.findings.iter().any(|f| f.mode == Mode::Enforce);
        let mut rule_ids: Vec<String> = a.findings.iter().map(|f| f.rule_id.to_string()).collect();
        rule_ids.sort_unstable();
        rule_ids.dedup();
        let reason = if r.blocked {
            Some(ReviewReason::Blocked)
        } else {
            (band.0..band.1).contains(&a.risk).then_some(ReviewReason::Uncertain)
        };
        if let Some(reason) = reason {
            review.push(NewReviewItem {
                request_id: rid.clone(),
                candidate_id: id.clone(),
                user_id: user_id.clone(),
                reason,
                risk: a.risk,
                rules: rule_ids.clone(),
                findings_json: serde_json::to_string(&a.findings).unwrap_or_else(|_| "[]".into()),
                text: if state.settings.retain_text { texts.get(r.index).cloned() } else { None },
                features: a.features.clone(),
                created_at_ms: now,
            });
        }
        records.push(CandidateRecord {
            id: id.clone(),
            risk: a.risk as f32,
            flagged,
            features: a.features,
            rules: rule_ids,
            text: if state.settings.retain_text { texts.get(r.index).cloned() } else { None },
        });
        out.push(CandidateOut {
            id,
            risk: round4(a.risk),
            preference: round4(r.preference),
            score: round4(r.score),
            blocked: r.blocked,
            findings: a.findings,
        });
    }
    metrics::counter!("guardrank_candidates_scored_total").increment(out.len() as u64);
    metrics::histogram!("guardrank_prompt_risk").record(scored.prompt_risk);
    metrics::counter!("guardrank_candidates_blocked_total").increment(blocked);
    state.shared.figures.ranked(out.len() as u64, blocked);
    let imp = Impression {
        request_id: rid.clone(),
        user_id,
        key_id: caller.key_id,
        model_version: scored.model_version.clone(),
        language: language.map(|l| l.name().to_string()),
        prompt_risk: scored.prompt_risk as f32,
        candidates: records,
    };
    if let Some(user) = &anomalous_user
        && let Some(item) = anomaly_item(
            &state,
            &pstate,
            &rid,
            user,
            prompt_text.as_deref(),
            (scored.prompt_risk, &scored.prompt_findings),
            now,
        )
    {
        review.push(item);
    }
    // The review items ride with the impression, in its transaction.
    state.writer.impression(imp, review).await;
    Ok(Json(RankResponse {
        request_id: rid,
        model_version: scored.model_version,
        policy: PolicyBrief {
            temperature: policy.temperature,
            risk_penalty: policy.risk_penalty,
            block_threshold: policy.block_threshold,
        },
        prompt: PromptOut { risk: round4(scored.prompt_risk), findings: scored.prompt_findings },
        candidates: out,
    }))
}

/// The rule id of the finding that explains an anomaly review item.
const ANOMALY_RULE: &str = "abuse.usage-anomaly";

/// How long this replica waits before it queues another anomaly item for the same user.
const ANOMALY_REQUEUE_MS: i64 = 24 * 3_600_000;

/// A review item for a user whose trust is below 1 (their usage crossed the anomaly threshold),
/// at most one per user per [`ANOMALY_REQUEUE_MS`] on this replica: the request that found it,
/// the prompt's risk and findings, and the monitor's explanation as a finding.
fn anomaly_item(
    state: &AppState,
    pstate: &crate::policy::PolicyState,
    request_id: &str,
    user_id: &str,
    prompt: Option<&str>,
    (prompt_risk, prompt_findings): (f64, &[crate::engine::Finding]),
    now: i64,
) -> Option<NewReviewItem> {
    let key = crate::policy::user_key(user_id);
    {
        let mut seen = state.anomalies.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.get(&key).is_some_and(|at| now - at < ANOMALY_REQUEUE_MS) {
            return None;
        }
        if seen.len() >= 100_000 {
            seen.retain(|_, at| now - *at < ANOMALY_REQUEUE_MS);
        }
        seen.insert(key, now);
    }
    let a = state.shared.assess(&pstate.usage);
    let why = crate::abuse::explain(&a);
    // The monitor's explanation first (at the first position of the prompt), then
    // the prompt's own: stored like a candidate's findings.
    let message = format!("trust {:.2}: {}", a.trust, if why.is_empty() { "usage anomaly" } else { &why });
    let anomaly = crate::engine::Finding {
        rule_id: std::sync::Arc::from(ANOMALY_RULE),
        cwe: std::sync::Arc::from(""),
        severity: crate::rules::Severity::Medium,
        message: std::sync::Arc::from(message),
        line: 1,
        column: 1,
        end_line: 1,
        end_column: 1,
        mode: Mode::Enforce,
    };
    let findings: Vec<&crate::engine::Finding> = std::iter::once(&anomaly).chain(prompt_findings).collect();
    let mut rules: Vec<String> = findings.iter().map(|f| f.rule_id.to_string()).collect();
    rules.sort_unstable();
    rules.dedup();
    metrics::counter!("guardrank_anomaly_review_items_total").increment(1);
    Some(NewReviewItem {
        request_id: request_id.to_string(),
        candidate_id: String::new(),
        user_id: user_id.to_string(),
        reason: ReviewReason::Anomaly,
        risk: prompt_risk,
        rules,
        findings_json: serde_json::to_string(&findings).unwrap_or_else(|_| "[]".into()),
        text: if state.settings.retain_text { prompt.map(str::to_string) } else { None },
        features: crate::features::Features::default(),
        created_at_ms: now,
    })
}

/// `POST /v1/feedback`: record outcomes; answered only once they are durable.
#[utoipa::path(post, path = "/v1/feedback", request_body = FeedbackRequest,
    responses((status = 200, body = FeedbackResponse), (status = 404), (status = 422), (status = 503)),
    security(("bearer" = [])))]
pub async fn feedback(
    State(state): State<Arc<AppState>>,
    Plugin(_caller): Plugin,
    ApiJson(req): ApiJson<FeedbackRequest>,
) -> Result<Json<FeedbackResponse>, ApiError> {
    let events = validate_feedback(req)?;
    let outcomes: Vec<&'static str> = events.iter().map(|e| e.outcome.name()).collect();
    let reported: Vec<(String, String)> = events
        .iter()
        .filter(|e| e.outcome == Outcome::ReportedInsecure)
        .map(|e| (e.request_id.clone(), e.candidate_id.clone()))
        .collect();
    match state.writer.feedback(events).await {
        Ok(GroupOutcome::Recorded { recorded, duplicates }) => {
            for o in outcomes {
                metrics::counter!("guardrank_feedback_events_total", "outcome" => o).increment(1);
            }
            let at_ms = super::now_ms();
            for (request_id, candidate_id) in reported {
                state.review.offer(Report { request_id, candidate_id, at_ms });
            }
            Ok(Json(FeedbackResponse { recorded, duplicates }))
        }
        Ok(GroupOutcome::UnknownRequest { index, request_id }) => Err(ApiError::not_found(format!(
            "events[{index}]: unknown request_id {request_id:?} (never ranked here, compacted after the impression TTL, \
             or lost in a crash before it was written); nothing was recorded"
        ))),
        Ok(GroupOutcome::UnknownCandidate { index, request_id, candidate_id }) => Err(ApiError::not_found(format!(
            "events[{index}]: request {request_id:?} has no candidate {candidate_id:?}; nothing was recorded"
        ))),
        Err(e) => Err(ApiError::store(&e)),
    }
}

/// The policy answer of a user.
pub fn policy_response(state: &AppState, user_id: &str) -> PolicyResponse {
    let s = state.policy_state(user_id);
    let cfg = &state.shared.policy_cfg;
    let p = s.policy(cfg);
    let c = s.counts;
    let a = state.shared.assess(&s.usage);
    let mut explanation = s.explain(cfg);
    let why = crate::abuse::explain(&a);
    if s.usage.requests > 0.0 && !why.is_empty() {
        explanation.push_str("; ");
        explanation.push_str(&why);
    }
    let round3 = |x: f64| (x * 1000.0).round() / 1000.0;
    let usage = UsageOut {
        recent_requests: round3(f64::from(s.usage.decayed(&state.shared.abuse_cfg, state.shared.log_ms()).requests)),
        risky_prompt_share: round3(a.signals.risky),
        blocked_share: round3(a.signals.blocked),
        repeat_share: round3(a.signals.repeats),
        anomaly_score: round3(if s.usage.requests > 0.0 { a.score } else { 0.0 }),
        rate_limit_tier: state.shared.tiers.of(p.trust).name().to_string(),
    };
    PolicyResponse {
        user_id: user_id.to_string(),
        temperature: p.temperature,
        risk_penalty: p.risk_penalty,
        block_threshold: p.block_threshold,
        trust: p.trust,
        feedback: FeedbackCounts {
            accepted: u64::from(c.accepted),
            rejected: u64::from(c.rejected),
            rejected_risky: u64::from(c.rejected_risky),
            accepted_risky: u64::from(c.accepted_risky),
            reported_insecure: u64::from(c.reported_insecure),
            reported_safe: u64::from(c.reported_safe),
        },
        explanation,
        usage,
    }
}

/// `GET /v1/users/{user_id}/policy`: the user's current policy and why.
#[utoipa::path(get, path = "/v1/users/{user_id}/policy", params(("user_id" = String, Path)),
    responses((status = 200, body = PolicyResponse), (status = 401), (status = 422)), security(("bearer" = [])))]
pub async fn policy(
    State(state): State<Arc<AppState>>,
    Plugin(_caller): Plugin,
    Path(user_id): Path<String>,
) -> Result<Json<PolicyResponse>, ApiError> {
    check_user_id(&user_id)?;
    Ok(Json(policy_response(&state, &user_id)))
}

/// `GET /healthz`: the process answers.
#[utoipa::path(get, path = "/healthz", responses((status = 200)))]
pub async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

/// `GET /readyz`: model loaded, store reachable, replay finished.
#[utoipa::path(get, path = "/readyz", responses((status = 200), (status = 503)))]
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    use std::sync::atomic::Ordering;
    let store_ok = state.store.ping().await.is_ok();
    let replayed = state.shared.ready.load(Ordering::Acquire);
    let version = state.shared.model.read().map(|m| m.version.clone()).unwrap_or_default();
    let ready = store_ok && replayed;
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not ready" },
        "store": if store_ok { "reachable" } else { "unreachable" },
        "replay": if replayed { "finished" } else { "in progress" },
        "applied_seq": state.shared.applied_seq.load(Ordering::Acquire),
        "model_version": version,
        "degraded": state.degraded,
        "scoring": if state.degraded { "rule priors only: no model file could be loaded" } else { "model and rules" },
    });
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}
