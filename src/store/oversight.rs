//! The oversight tables beside the log (migration 0003): the review queue and the audit log.
//! Types and the backend-independent parts; each backend implements the queries.

use crate::events::{EventBody, ReviewVerdictEvent, Verdict};
use crate::features::Features;
use std::fmt;
use std::str::FromStr;

/// Why a candidate became a review item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReviewReason {
    /// Its risk reached the user's block threshold.
    Blocked,
    /// The user reported it insecure.
    Reported,
    /// Its risk fell in the uncertain band. Only these items are dropped when the queue is full.
    Uncertain,
    /// The user's usage crossed the anomaly threshold (trust below 1) on this request. The
    /// item names the request with an empty `candidate_id`; its risk is the prompt's, its
    /// findings the prompt's plus the monitor's explanation, and it has no features, so a
    /// verdict on it is a human's record, not a label.
    Anomaly,
}

impl ReviewReason {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            ReviewReason::Blocked => "blocked",
            ReviewReason::Reported => "reported",
            ReviewReason::Uncertain => "uncertain",
            ReviewReason::Anomaly => "anomaly",
        }
    }
}

impl FromStr for ReviewReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [ReviewReason::Blocked, ReviewReason::Reported, ReviewReason::Uncertain, ReviewReason::Anomaly]
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| format!("unknown review reason {s:?}"))
    }
}

/// Where a review item stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReviewStatus {
    Pending,
    /// Judged insecure.
    Insecure,
    /// Judged safe.
    Safe,
    /// Not judged within the retention; its text and features are gone.
    Expired,
}

impl ReviewStatus {
    pub const ALL: [ReviewStatus; 4] =
        [ReviewStatus::Pending, ReviewStatus::Insecure, ReviewStatus::Safe, ReviewStatus::Expired];

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            ReviewStatus::Pending => "pending",
            ReviewStatus::Insecure => "insecure",
            ReviewStatus::Safe => "safe",
            ReviewStatus::Expired => "expired",
        }
    }

    /// The status a verdict leads to.
    #[must_use]
    pub fn of_verdict(v: Verdict) -> ReviewStatus {
        match v {
            Verdict::Insecure => ReviewStatus::Insecure,
            Verdict::Safe => ReviewStatus::Safe,
        }
    }
}

impl fmt::Display for ReviewStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ReviewStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ReviewStatus::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| format!("unknown status {s:?}; expected one of pending, insecure, safe, expired"))
    }
}

/// A candidate to put in the queue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewReviewItem {
    pub request_id: String,
    pub candidate_id: String,
    pub user_id: String,
    pub reason: ReviewReason,
    pub risk: f64,
    pub rules: Vec<String>,
    /// The findings as served, as a JSON array.
    pub findings_json: String,
    /// Raw text, only when the server retains text.
    pub text: Option<String>,
    pub features: Features,
    pub created_at_ms: i64,
}

/// A review item as stored (without its features).
#[derive(Debug, Clone, PartialEq)]
pub struct ReviewItem {
    pub id: i64,
    pub request_id: String,
    pub candidate_id: String,
    pub user_id: String,
    pub reason: ReviewReason,
    pub status: ReviewStatus,
    pub risk: f64,
    pub rules: Vec<String>,
    pub findings_json: String,
    pub text: Option<String>,
    pub created_at_ms: i64,
    pub decided_at_ms: Option<i64>,
    pub decided_by: Option<String>,
    pub note: Option<String>,
}

/// Which items to list: newest first, `limit` of them, with `id < before` when given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReviewFilter {
    pub status: Option<ReviewStatus>,
    pub user_id: Option<String>,
    /// A rule id that hit.
    pub rule: Option<String>,
    /// Created at or after.
    pub since_ms: Option<i64>,
    pub before: Option<i64>,
    pub limit: u32,
}

/// A verdict to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictIn {
    pub item_id: i64,
    pub verdict: Verdict,
    pub note: String,
    pub key_id: String,
    pub at_ms: i64,
}

/// What became of a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Recorded, and logged as the `ReviewVerdict` event `seq`.
    Decided {
        seq: i64,
    },
    NotFound,
    /// The item was judged (or expired) already.
    NotPending(ReviewStatus),
}

/// What one upkeep of the queue did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReviewUpkeep {
    /// Pending items past the retention, now `expired` (text and features dropped).
    pub expired: u64,
    /// Pending uncertain-band items beyond the cap, deleted oldest first.
    pub dropped: u64,
    /// Expired or judged items past twice the retention, deleted.
    pub purged: u64,
}

/// An admin action to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAudit {
    pub at_ms: i64,
    /// The admin key's id (never the key).
    pub key_id: String,
    pub action: String,
    pub target: String,
    /// A JSON object.
    pub details_json: String,
}

/// An admin action as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: i64,
    pub at_ms: i64,
    pub key_id: String,
    pub action: String,
    pub target: String,
    pub details_json: String,
}

/// What a verdict's `UPDATE .. RETURNING` gives: request id, candidate id, risk served,
/// encoded features, whether the user had accepted the candidate.
pub type DecidedRow = (String, String, f64, Option<Vec<u8>>, bool);

/// Rule ids as stored: `",a,b,"` (empty: `","`).
#[must_use]
pub fn rules_column(rules: &[String]) -> String {
    let mut s = String::from(",");
    for r in rules {
        s.push_str(r);
        s.push(',');
    }
    s
}

/// Rule ids from their stored form.
#[must_use]
pub fn rules_from_column(s: &str) -> Vec<String> {
    s.split(',').filter(|r| !r.is_empty()).map(str::to_string).collect()
}

/// The event a verdict on a stored item logs.
///
/// # Errors
/// The item's features do not decode (or are gone).
pub fn verdict_event(
    v: &VerdictIn,
    request_id: String,
    candidate_id: String,
    risk: f64,
    features: Option<&[u8]>,
    accepted: bool,
) -> Result<EventBody, super::StoreError> {
    let features: Features = match features {
        Some(bytes) => super::codec::decode(bytes)
            .map_err(|e| super::StoreError::Corrupt(format!("review item {}: features: {e}", v.item_id)))?,
        None => return Err(super::StoreError::Corrupt(format!("review item {} has no features", v.item_id))),
    };
    Ok(EventBody::ReviewVerdict(ReviewVerdictEvent {
        item_id: v.item_id,
        request_id,
        candidate_id,
        verdict: v.verdict,
        note: v.note.clone(),
        key_id: v.key_id.clone(),
        risk: risk as f32,
        accepted,
        features,
    }))
}

/// Encodes an item's features for its column.
///
/// # Errors
/// Encoding failed (not expected).
pub fn encode_features(f: &Features) -> Result<Vec<u8>, super::StoreError> {
    super::codec::encode(f).map_err(|e| super::StoreError::Invalid(format!("cannot encode features: {e}")))
}

/// Review items per multi-row `INSERT` at most: 10 parameters a row, far under both backends'
/// limits on bound parameters.
pub const REVIEW_ROWS: usize = 256;

/// The multi-row upsert that queues one run of [`review_runs`], in either backend's dialect
/// (the placeholders are the backend's). A candidate is queued once; an uncertain-band item
/// still pending takes a stronger reason.
///
/// # Errors
/// A feature vector that does not encode.
pub fn review_upsert<DB>(run: &[NewReviewItem]) -> Result<sqlx::QueryBuilder<DB>, super::StoreError>
where
    DB: sqlx::Database,
    for<'t> &'t str: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> Option<&'t str>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> Vec<u8>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> f64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    let features = run.iter().map(|it| encode_features(&it.features)).collect::<Result<Vec<_>, _>>()?;
    let mut q = sqlx::QueryBuilder::<DB>::new(
        "INSERT INTO review_items (request_id, candidate_id, user_id, reason, status, risk, rules, findings, text, \
         features, created_at_ms) ",
    );
    q.push_values(run.iter().zip(features), |mut row, (it, features)| {
        row.push_bind(it.request_id.as_str())
            .push_bind(it.candidate_id.as_str())
            .push_bind(it.user_id.as_str())
            .push_bind(it.reason.name())
            .push("'pending'")
            .push_bind(it.risk)
            .push_bind(rules_column(&it.rules))
            .push_bind(it.findings_json.as_str())
            .push_bind(it.text.as_deref())
            .push_bind(features)
            .push_bind(it.created_at_ms);
    });
    q.push(
        " ON CONFLICT (request_id, candidate_id) DO UPDATE SET reason = excluded.reason \
         WHERE review_items.reason = 'uncertain' AND excluded.reason <> 'uncertain' \
         AND review_items.status = 'pending'",
    );
    Ok(q)
}

/// `items` cut into runs for multi-row upserts: at most [`REVIEW_ROWS`] each, and no candidate
/// twice in a run. PostgreSQL refuses an upsert that touches a row twice; a new run per repeat
/// applies the items in order, as one statement each would.
pub fn review_runs(items: &[NewReviewItem]) -> Vec<&[NewReviewItem]> {
    let mut runs = Vec::new();
    let mut start = 0;
    let mut seen: std::collections::HashSet<(&str, &str)> = std::collections::HashSet::new();
    for (i, it) in items.iter().enumerate() {
        let key = (it.request_id.as_str(), it.candidate_id.as_str());
        if i - start == REVIEW_ROWS || seen.contains(&key) {
            runs.push(&items[start..i]);
            start = i;
            seen.clear();
        }
        seen.insert(key);
    }
    if start < items.len() {
        runs.push(&items[start..]);
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(request_id: &str, candidate_id: &str) -> NewReviewItem {
        NewReviewItem {
            request_id: request_id.into(),
            candidate_id: candidate_id.into(),
            user_id: "u".into(),
            reason: ReviewReason::Uncertain,
            risk: 0.5,
            rules: Vec::new(),
            findings_json: "[]".into(),
            text: None,
            features: Features::default(),
            created_at_ms: 0,
        }
    }

    #[test]
    fn review_runs_keep_order_and_never_hold_a_candidate_twice() {
        let ids = |runs: Vec<&[NewReviewItem]>| -> Vec<Vec<String>> {
            runs.iter().map(|r| r.iter().map(|i| format!("{}/{}", i.request_id, i.candidate_id)).collect()).collect()
        };
        assert!(review_runs(&[]).is_empty());
        let items = [item("r1", "a"), item("r1", "b"), item("r2", "a"), item("r1", "a"), item("r1", "b")];
        assert_eq!(ids(review_runs(&items)), [vec!["r1/a", "r1/b", "r2/a"], vec!["r1/a", "r1/b"]]);
        let many: Vec<NewReviewItem> = (0..REVIEW_ROWS * 2 + 1).map(|k| item("r", &k.to_string())).collect();
        let runs = review_runs(&many);
        assert_eq!(runs.iter().map(|r| r.len()).collect::<Vec<_>>(), [REVIEW_ROWS, REVIEW_ROWS, 1]);
        assert_eq!(runs.concat(), many);
    }

    #[test]
    fn rule_ids_round_trip_through_their_column() {
        let rules = vec!["python.sql.concat".to_string(), "python.eval".to_string()];
        assert_eq!(rules_column(&rules), ",python.sql.concat,python.eval,");
        assert_eq!(rules_from_column(&rules_column(&rules)), rules);
        assert!(rules_from_column(&rules_column(&[])).is_empty());
    }
}
