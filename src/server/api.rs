//! Request and response bodies of the HTTP API (contract: ../shared/API.md), with their
//! validation. Past `validate`, handlers trust what they hold.

use crate::engine::Finding;
use crate::events::Outcome;
use crate::lang::Language;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ApiError;

pub const MAX_CANDIDATES: usize = 64;
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
pub const MAX_USER_ID_CHARS: usize = 256;
pub const MAX_BATCH: usize = 1000;

/// One completion candidate.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CandidateIn {
    /// Unique within the request; defaults to the index as a string.
    pub id: Option<String>,
    /// The completion text (at most 64 KiB).
    pub text: String,
    /// The generator's log-probability of the candidate.
    pub logprob: Option<f64>,
}

/// `POST /v1/rank`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RankRequest {
    pub user_id: String,
    pub language: Option<String>,
    pub file_path: Option<String>,
    pub prompt: Option<String>,
    pub candidates: Vec<CandidateIn>,
}

/// A validated rank request.
#[derive(Debug, Clone)]
pub struct RankInput {
    pub user_id: String,
    pub language: Option<Language>,
    pub file_path: Option<String>,
    pub prompt: Option<String>,
    pub ids: Vec<String>,
    pub texts: Vec<String>,
    pub logprobs: Vec<Option<f64>>,
}

/// Checks a user id: 1 to 256 characters, no control characters.
///
/// # Errors
/// 422 naming what is wrong.
pub fn check_user_id(user_id: &str) -> Result<(), ApiError> {
    let n = user_id.chars().count();
    if n == 0 || n > MAX_USER_ID_CHARS {
        return Err(ApiError::unprocessable(format!("user_id must be 1 to {MAX_USER_ID_CHARS} characters, got {n}")));
    }
    if user_id.chars().any(char::is_control) {
        return Err(ApiError::unprocessable("user_id must not contain control characters"));
    }
    Ok(())
}

impl RankRequest {
    /// Validates the request.
    ///
    /// # Errors
    /// 422 with the field and the problem.
    pub fn validate(self) -> Result<RankInput, ApiError> {
        check_user_id(&self.user_id)?;
        let n = self.candidates.len();
        if n == 0 || n > MAX_CANDIDATES {
            return Err(ApiError::unprocessable(format!("candidates must hold 1 to {MAX_CANDIDATES} items, got {n}")));
        }
        let language = match self.language.as_deref() {
            None | Some("") => None,
            Some(l) => Some(l.parse::<Language>().map_err(|e| ApiError::unprocessable(format!("language: {e}")))?),
        };
        if let Some(p) = &self.prompt
            && p.len() > MAX_TEXT_BYTES
        {
            return Err(ApiError::unprocessable(format!("prompt is {} bytes; at most {MAX_TEXT_BYTES}", p.len())));
        }
        if self.file_path.as_ref().is_some_and(|p| p.len() > 4096) {
            return Err(ApiError::unprocessable("file_path is longer than 4096 bytes"));
        }
        let mut ids = Vec::with_capacity(n);
        let mut texts = Vec::with_capacity(n);
        let mut logprobs = Vec::with_capacity(n);
        for (i, c) in self.candidates.into_iter().enumerate() {
            let id = c.id.unwrap_or_else(|| i.to_string());
            if id.is_empty() || id.len() > 256 {
                return Err(ApiError::unprocessable(format!("candidates[{i}].id must be 1 to 256 bytes")));
            }
            if ids.contains(&id) {
                return Err(ApiError::unprocessable(format!(
                    "candidates[{i}].id {id:?} is not unique within the request"
                )));
            }
            if c.text.len() > MAX_TEXT_BYTES {
                return Err(ApiError::unprocessable(format!(
                    "candidates[{i}].text is {} bytes; at most {MAX_TEXT_BYTES}",
                    c.text.len()
                )));
            }
            if c.logprob.is_some_and(|l| !l.is_finite()) {
                return Err(ApiError::unprocessable(format!("candidates[{i}].logprob must be a finite number")));
            }
            ids.push(id);
            texts.push(c.text);
            logprobs.push(c.logprob);
        }
        Ok(RankInput {
            user_id: self.user_id,
            language,
            file_path: self.file_path,
            prompt: self.prompt,
            ids,
            texts,
            logprobs,
        })
    }
}

/// The policy applied to a request.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct PolicyBrief {
    pub temperature: f64,
    pub risk_penalty: f64,
    pub block_threshold: f64,
}

/// The prompt's own assessment.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PromptOut {
    pub risk: f64,
    #[schema(value_type = Vec<Object>)]
    pub findings: Vec<Finding>,
}

/// One ranked candidate.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CandidateOut {
    pub id: String,
    pub risk: f64,
    pub preference: f64,
    pub score: f64,
    pub blocked: bool,
    #[schema(value_type = Vec<Object>)]
    pub findings: Vec<Finding>,
}

/// `POST /v1/rank` answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RankResponse {
    pub request_id: String,
    pub model_version: String,
    pub policy: PolicyBrief,
    pub prompt: PromptOut,
    pub candidates: Vec<CandidateOut>,
}

/// One feedback event.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackItem {
    pub request_id: String,
    pub candidate_id: String,
    /// accepted, rejected, reported_insecure or reported_safe.
    pub outcome: String,
}

/// `POST /v1/feedback`: one event, or `{"events": [...]}` of 1 to 1000.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum FeedbackRequest {
    Batch { events: Vec<FeedbackItem> },
    One(FeedbackItem),
}

/// `POST /v1/feedback` answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FeedbackResponse {
    pub recorded: u32,
    pub duplicates: u32,
}

/// Validated feedback events, with the outcome parsed.
///
/// # Errors
/// 422 for an empty or oversized batch, or an invalid outcome (naming the first).
pub fn validate_feedback(req: FeedbackRequest) -> Result<Vec<crate::events::FeedbackIn>, ApiError> {
    let items = match req {
        FeedbackRequest::Batch { events } => events,
        FeedbackRequest::One(e) => vec![e],
    };
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(ApiError::unprocessable(format!("events must hold 1 to {MAX_BATCH} items, got {}", items.len())));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let outcome: Outcome =
                e.outcome.parse().map_err(|m| ApiError::unprocessable(format!("events[{i}].outcome: {m}")))?;
            if e.request_id.is_empty()
                || e.request_id.len() > 256
                || e.candidate_id.is_empty()
                || e.candidate_id.len() > 256
            {
                return Err(ApiError::unprocessable(format!(
                    "events[{i}]: request_id and candidate_id must be 1 to 256 bytes"
                )));
            }
            Ok(crate::events::FeedbackIn { request_id: e.request_id, candidate_id: e.candidate_id, outcome })
        })
        .collect()
}

/// Feedback counts shown with a policy.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct FeedbackCounts {
    pub accepted: u64,
    pub rejected: u64,
    pub rejected_risky: u64,
    pub accepted_risky: u64,
    pub reported_insecure: u64,
    pub reported_safe: u64,
}

/// `GET /v1/users/{user_id}/policy` answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PolicyResponse {
    pub user_id: String,
    pub temperature: f64,
    pub risk_penalty: f64,
    pub block_threshold: f64,
    pub trust: f64,
    pub feedback: FeedbackCounts,
    pub explanation: String,
    /// What the abuse monitor sees (an extension of the v1 contract).
    pub usage: UsageOut,
}

/// The abuse monitor's view of a user: decayed signals, their robust z-scores against the
/// population, the anomaly score and the rate-limit tier it gives.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UsageOut {
    /// Requests in the decayed window (counts halve every `abuse_half_life_hours`).
    pub recent_requests: f64,
    /// Shares of recent requests, smoothed towards the population median.
    pub risky_prompt_share: f64,
    pub blocked_share: f64,
    pub repeat_share: f64,
    /// Weighted sum of the positive robust z-scores.
    pub anomaly_score: f64,
    /// `full`, `reduced` or `minimal`.
    pub rate_limit_tier: String,
}

/// `POST /admin/keys` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyCreateRequest {
    /// plugin or admin.
    pub scope: String,
}

/// A key as listed (never the key itself).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyInfo {
    pub id: String,
    pub scope: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
}

/// `POST /admin/keys` answer: the key is shown this once.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyCreated {
    pub id: String,
    pub scope: String,
    pub key: String,
}
