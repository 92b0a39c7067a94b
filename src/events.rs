//! The events of the log. Every state change is one of these, appended to the store with a
//! sequence number and the wall-clock time of its append; weights, policies and keys are views
//! computed from them in sequence order.

use crate::features::Features;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What a user did with a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Accepted,
    Rejected,
    ReportedInsecure,
    ReportedSafe,
}

impl Outcome {
    pub const ALL: [Outcome; 4] =
        [Outcome::Accepted, Outcome::Rejected, Outcome::ReportedInsecure, Outcome::ReportedSafe];

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Rejected => "rejected",
            Outcome::ReportedInsecure => "reported_insecure",
            Outcome::ReportedSafe => "reported_safe",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Outcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Outcome::ALL.into_iter().find(|o| o.name() == s).ok_or_else(|| {
            format!("unknown outcome {s:?}; expected one of accepted, rejected, reported_insecure, reported_safe")
        })
    }
}

/// One candidate as served: what learning and review need later, never the raw code unless
/// `retain_text` asked for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateRecord {
    pub id: String,
    /// The risk served.
    pub risk: f32,
    /// Whether enforced rules had findings on it.
    pub flagged: bool,
    pub features: Features,
    /// Rule ids that hit (for review and explanation).
    pub rules: Vec<String>,
    /// Raw text, only when retention is configured.
    pub text: Option<String>,
}

/// A rank request as served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Impression {
    pub request_id: String,
    pub user_id: String,
    /// The API key that made the request.
    pub key_id: String,
    pub model_version: String,
    pub language: Option<String>,
    pub prompt_risk: f32,
    pub candidates: Vec<CandidateRecord>,
}

impl Impression {
    #[must_use]
    pub fn candidate(&self, id: &str) -> Option<&CandidateRecord> {
        self.candidates.iter().find(|c| c.id == id)
    }
}

/// Feedback as a client sends it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FeedbackIn {
    pub request_id: String,
    pub candidate_id: String,
    pub outcome: Outcome,
}

/// Feedback as logged: the client's event joined with what was served, so the log alone
/// replays learning (even after the impression is compacted away).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackEvent {
    pub request_id: String,
    pub candidate_id: String,
    pub outcome: Outcome,
    /// `None` once the user was erased.
    pub user_id: Option<String>,
    pub risk: f32,
    pub flagged: bool,
    pub features: Features,
    pub model_version: String,
}

/// Scope of an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Plugin,
    Admin,
}

impl Scope {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Scope::Plugin => "plugin",
            Scope::Admin => "admin",
        }
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "plugin" => Ok(Scope::Plugin),
            "admin" => Ok(Scope::Admin),
            _ => Err(format!("unknown scope {s:?}; expected plugin or admin")),
        }
    }
}

/// The body of one logged event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EventBody {
    Impression(Impression),
    Feedback(FeedbackEvent),
    /// An admin put the user's policy back to the defaults.
    PolicyReset {
        user_id: String,
    },
    /// Tombstone: the user's impressions were deleted and their feedback unlinked.
    UserErased {
        user_id: String,
    },
    KeyCreated {
        key_id: String,
        scope: Scope,
    },
    KeyRevoked {
        key_id: String,
    },
    /// A model version of the registry became live (published by the retraining job, or
    /// activated or rolled back by an operator). Every replica switches when it applies this.
    ModelActivated(ModelActivation),
    /// A reviewer judged a review item: a strong label the model learns from (online here,
    /// and in the next batch job). Carries the features, so no join is needed.
    ReviewVerdict(ReviewVerdictEvent),
    /// An operator added or replaced a rule at run time (`POST /admin/rules`). The spec is
    /// kept as JSON text, so later fields of the rule schema never change this event's
    /// encoding.
    RulePatched {
        spec_json: String,
        key_id: String,
    },
    /// An operator disabled a rule at run time (`DELETE /admin/rules/{rule_id}`).
    RuleDisabled {
        rule_id: String,
        key_id: String,
    },
}

/// A reviewer's judgement of a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Insecure,
    Safe,
}

impl Verdict {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Insecure => "insecure",
            Verdict::Safe => "safe",
        }
    }
}

impl FromStr for Verdict {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "insecure" => Ok(Verdict::Insecure),
            "safe" => Ok(Verdict::Safe),
            _ => Err(format!("unknown verdict {s:?}; expected insecure or safe")),
        }
    }
}

/// The body of a [`EventBody::ReviewVerdict`] event. It names no user: a verdict is about
/// code, not about who was shown it, so erasing a user never has to rewrite it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewVerdictEvent {
    pub item_id: i64,
    pub request_id: String,
    pub candidate_id: String,
    pub verdict: Verdict,
    pub note: String,
    /// The admin key that gave it.
    pub key_id: String,
    /// The risk served.
    pub risk: f32,
    /// Whether the user had accepted the candidate (an insecure verdict on it is an incident).
    pub accepted: bool,
    pub features: Features,
}

/// Why a model version became live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivationReason {
    /// The retraining job published it after its holdout check.
    Publish,
    /// The retraining job published it with `--force`, past a failed holdout check.
    ForcedPublish,
    /// An operator made it live (`POST /admin/models/{version}/activate`).
    Activate,
    /// An operator rolled back to it (`guardrank models rollback`).
    Rollback,
}

impl ActivationReason {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            ActivationReason::Publish => "publish",
            ActivationReason::ForcedPublish => "forced_publish",
            ActivationReason::Activate => "activate",
            ActivationReason::Rollback => "rollback",
        }
    }
}

/// The body of a [`EventBody::ModelActivated`] event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelActivation {
    pub version: String,
    /// The newest log event the version was trained on: after switching, a replica re-applies
    /// the feedback logged after it, so nothing learned online is lost.
    pub trained_through_seq: i64,
    pub reason: ActivationReason,
    /// Who did it: an admin key id, or `cli` for the command line.
    pub actor: String,
}

impl EventBody {
    /// A short name of the kind, as stored in the `kind` column.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::Impression(_) => "impression",
            EventBody::Feedback(_) => "feedback",
            EventBody::PolicyReset { .. } => "policy_reset",
            EventBody::UserErased { .. } => "user_erased",
            EventBody::KeyCreated { .. } => "key_created",
            EventBody::KeyRevoked { .. } => "key_revoked",
            EventBody::ModelActivated(_) => "model_activated",
            EventBody::ReviewVerdict(_) => "review_verdict",
            EventBody::RulePatched { .. } => "rule_patched",
            EventBody::RuleDisabled { .. } => "rule_disabled",
        }
    }

    /// The user an event concerns, when it concerns one.
    #[must_use]
    pub fn user_id(&self) -> Option<&str> {
        match self {
            EventBody::Impression(i) => Some(&i.user_id),
            EventBody::Feedback(f) => f.user_id.as_deref(),
            EventBody::PolicyReset { user_id } | EventBody::UserErased { user_id } => Some(user_id),
            _ => None,
        }
    }
}

/// An event as stored: its sequence number and append time (milliseconds since the epoch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: i64,
    pub at_ms: i64,
    pub body: EventBody,
}
