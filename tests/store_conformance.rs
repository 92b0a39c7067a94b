//! The `Store` conformance suite: every behaviour of the trait, written once against
//! `Arc<dyn Store>` and run against every backend by `conformance_suite!` (SQLite on a real
//! temporary file; PostgreSQL in a fresh schema of the database named by
//! `GUARDRANK_TEST_DATABASE_URL`, each of its tests skipping itself with a note when the variable
//! is unset).
//!
//! Nothing backend-specific belongs in a test body: no SQL, no file paths, no assumption that
//! sequence numbers are contiguous (a backend may skip numbers, e.g. after a rollback). The one
//! PostgreSQL-only test, at the end, is about replicas sharing one log.

use guardrank::events::{
    ActivationReason, CandidateRecord, Event, EventBody, FeedbackEvent, FeedbackIn, Impression, ModelActivation,
    Outcome, Scope,
};
use guardrank::features::Features;
use guardrank::store::postgres::PostgresStore;
use guardrank::store::sqlite::SqliteStore;
use guardrank::store::{Durability, GroupOutcome, KeyRecord, ModelRecord, SnapshotInfo, Store, StoreError, WriteBatch};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[path = "conformance/oversight.rs"]
mod oversight;
use oversight::{
    anomaly_items_without_candidate_or_features_are_stored_and_judged,
    audit_entries_list_newest_first_and_rule_events_are_found_by_kind,
    reports_mark_existing_items_and_name_the_candidates_without_one,
    review_items_are_queued_once_filtered_paged_and_judged_once,
    review_items_of_a_batch_commit_with_its_impressions_in_order,
    review_upkeep_expires_bounds_uncertain_items_and_purges,
};

/// Opens the backend's store under test; every call opens the same database anew.
type Opener = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Arc<dyn Store>> + Send>> + Send + Sync>;

/// One backend's fresh, empty database for one test, and whatever keeps it alive.
struct Backend {
    open: Opener,
    _guard: Box<dyn Any + Send>,
}

async fn sqlite_backend() -> Option<Backend> {
    let dir = tempfile::tempdir().expect("temp dir");
    // A directory that does not exist yet: opening creates it.
    let path = dir.path().join("data").join("guardrank.db");
    let open: Opener = Arc::new(move || {
        let path = path.clone();
        Box::pin(async move {
            let store = SqliteStore::open(&path, Durability::Process).await.expect("open sqlite store");
            Arc::new(store) as Arc<dyn Store>
        })
    });
    Some(Backend { open, _guard: Box::new(dir) })
}

/// The database PostgreSQL tests use, e.g. `postgres://postgres@127.0.0.1:5432/test`.
const DATABASE_URL_VAR: &str = "GUARDRANK_TEST_DATABASE_URL";

/// A fresh schema with a random name in the test database, and a store URL naming it; `None`
/// (after saying so on stderr) when `GUARDRANK_TEST_DATABASE_URL` is unset.
async fn postgres_schema() -> Option<(String, SchemaGuard)> {
    let Ok(base) = std::env::var(DATABASE_URL_VAR) else {
        eprintln!("skipped: {DATABASE_URL_VAR} not set");
        return None;
    };
    let schema = format!("gr_test_{:016x}", rand::random::<u64>());
    let mut conn = PgConnection::connect(&base).await.expect("connect to the test database");
    sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {schema}"))).execute(&mut conn).await.expect("create schema");
    conn.close().await.expect("close");
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}schema={schema}");
    Some((url, SchemaGuard { base, schema }))
}

/// Drops its schema (and everything in it) when dropped, even when the test panicked.
struct SchemaGuard {
    base: String,
    schema: String,
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let (base, schema) = (self.base.clone(), self.schema.clone());
        // Drop runs inside the test's runtime, which cannot be blocked on: a thread of its own
        // with a runtime of its own. Best effort: a failure leaves a stray schema, no more.
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&base).await {
                    let drop = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
                    if let Err(e) = sqlx::query(AssertSqlSafe(drop)).execute(&mut conn).await {
                        eprintln!("cannot drop test schema {schema}: {e}");
                    }
                    let _ = conn.close().await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

async fn postgres_backend() -> Option<Backend> {
    let (url, guard) = postgres_schema().await?;
    let open: Opener = Arc::new(move || {
        let url = url.clone();
        Box::pin(async move {
            let store = PostgresStore::open(&url, Durability::Process).await.expect("open postgres store");
            Arc::new(store) as Arc<dyn Store>
        })
    });
    Some(Backend { open, _guard: Box::new(guard) })
}

/// One `#[tokio::test]` per suite function: `store` ones get a fresh store, `reopen` ones the
/// opener. A backend that is not available (`None`) has said so; its tests pass without running.
macro_rules! suite_case {
    ($make:expr, store, $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some(backend) = $make.await else { return };
            super::$name((backend.open)().await).await;
        }
    };
    ($make:expr, reopen, $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some(backend) = $make.await else { return };
            super::$name(backend.open.clone()).await;
        }
    };
}

/// The whole suite against one backend, as a module named after it.
macro_rules! conformance_suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;
            suite_case!($make, store, empty_store_has_no_events_and_last_seq_zero);
            suite_case!($make, store, feedback_may_refer_to_an_impression_of_the_same_batch);
            suite_case!($make, store, duplicate_feedback_is_counted_and_not_appended_again);
            suite_case!($make, store, duplicate_impressions_are_stored_once);
            suite_case!($make, store, unknown_request_rejects_its_whole_group_only);
            suite_case!($make, store, unknown_candidate_rejects_its_whole_group_only);
            suite_case!($make, store, feedback_joins_the_stored_impression_when_a_batch_sends_it_again);
            suite_case!($make, store, a_rejected_group_leaves_its_keys_to_later_groups_of_the_batch);
            suite_case!($make, store, a_batch_past_every_statement_limit_commits_as_event_by_event_would);
            suite_case!($make, store, seqs_increase_and_read_events_pages_by_after_and_limit);
            suite_case!($make, store, events_carry_the_time_of_their_batch);
            suite_case!($make, store, append_refuses_impressions_and_feedback);
            suite_case!($make, store, impression_lookup_returns_what_was_committed);
            suite_case!($make, reopen, committed_data_survives_reopen);
            suite_case!($make, store, snapshots_keep_only_the_newest);
            suite_case!($make, store, compaction_removes_old_impressions_without_feedback_up_to_max_seq);
            suite_case!($make, store, compaction_of_feedback_respects_its_cut_and_forgets_its_keys);
            suite_case!($make, store, compaction_never_moves_last_seq_back);
            suite_case!($make, store, erase_user_deletes_impressions_unlinks_feedback_and_logs_a_tombstone);
            suite_case!($make, store, erasure_after_compaction_still_unlinks_the_feedback_of_kept_impressions);
            suite_case!($make, store, keys_are_stored_listed_revoked_once_and_touched);
            suite_case!($make, store, concurrent_commits_all_land_with_unique_increasing_seqs);
            suite_case!($make, store, model_registry_stores_versions_and_the_log_names_the_live_one);
            suite_case!($make, store, review_items_are_queued_once_filtered_paged_and_judged_once);
            suite_case!($make, store, review_upkeep_expires_bounds_uncertain_items_and_purges);
            suite_case!($make, store, anomaly_items_without_candidate_or_features_are_stored_and_judged);
            suite_case!($make, store, reports_mark_existing_items_and_name_the_candidates_without_one);
            suite_case!($make, store, review_items_of_a_batch_commit_with_its_impressions_in_order);
            suite_case!($make, store, audit_entries_list_newest_first_and_rule_events_are_found_by_kind);
        }
    };
}

conformance_suite!(sqlite, sqlite_backend());
conformance_suite!(postgres, postgres_backend());

// ---------------------------------------------------------------------------------------------
// Fixtures

/// A small realistic feature vector: sorted unique hashed indices, a rule-prior offset.
fn features(seed: u32) -> Features {
    Features {
        idx: vec![17 + seed, 40_961 + 3 * seed, 1_048_576 + seed, 4_194_000 - seed],
        val: vec![1.0, 0.5, 0.5, 0.25],
        offset: if seed % 2 == 1 { 1.75 } else { 0.0 },
    }
}

/// An impression of `request_id` for `user_id` with the given candidates; the second
/// candidate is flagged by a rule.
fn impression(request_id: &str, user_id: &str, candidates: &[&str]) -> Impression {
    Impression {
        request_id: request_id.into(),
        user_id: user_id.into(),
        key_id: "key-plugin-1".into(),
        model_version: "baseline-2024-06".into(),
        language: Some("python".into()),
        prompt_risk: 0.125,
        candidates: candidates
            .iter()
            .zip(0u32..)
            .map(|(id, i)| CandidateRecord {
                id: (*id).into(),
                risk: 0.1 + 0.3 * i as f32,
                flagged: i == 1,
                features: features(i),
                rules: if i == 1 { vec!["python.subprocess-shell-true".into()] } else { vec![] },
                text: None,
            })
            .collect(),
    }
}

fn fb(request_id: &str, candidate_id: &str, outcome: Outcome) -> FeedbackIn {
    FeedbackIn { request_id: request_id.into(), candidate_id: candidate_id.into(), outcome }
}

fn batch(at_ms: i64, impressions: Vec<Impression>, feedback: Vec<Vec<FeedbackIn>>) -> WriteBatch {
    WriteBatch { at_ms, impressions, feedback, review: Vec::new() }
}

fn recorded(recorded: u32, duplicates: u32) -> GroupOutcome {
    GroupOutcome::Recorded { recorded, duplicates }
}

/// The feedback event the store must log for `f` given the impression it refers to.
fn joined(imp: &Impression, f: &FeedbackIn) -> FeedbackEvent {
    let c = imp.candidate(&f.candidate_id).expect("candidate in fixture");
    FeedbackEvent {
        request_id: f.request_id.clone(),
        candidate_id: f.candidate_id.clone(),
        outcome: f.outcome,
        user_id: Some(imp.user_id.clone()),
        risk: c.risk,
        flagged: c.flagged,
        features: c.features.clone(),
        model_version: imp.model_version.clone(),
    }
}

async fn commit(store: &Arc<dyn Store>, b: WriteBatch) -> Vec<GroupOutcome> {
    store.commit(&b).await.expect("commit")
}

async fn all_events(store: &Arc<dyn Store>) -> Vec<Event> {
    store.read_events(0, u32::MAX).await.expect("read events")
}

fn feedback_of(events: &[Event]) -> Vec<&FeedbackEvent> {
    events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Feedback(f) => Some(f),
            _ => None,
        })
        .collect()
}

fn impressions_of(events: &[Event]) -> Vec<&Impression> {
    events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Impression(i) => Some(i),
            _ => None,
        })
        .collect()
}

fn key(id: &str, scope: Scope, created_at_ms: i64) -> KeyRecord {
    let mut hash = [0u8; 32];
    for (i, b) in hash.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31) ^ id.len() as u8;
    }
    KeyRecord { id: id.into(), scope, hash, created_at_ms, revoked_at_ms: None, last_used_at_ms: None }
}

// ---------------------------------------------------------------------------------------------
// The suite

async fn empty_store_has_no_events_and_last_seq_zero(store: Arc<dyn Store>) {
    assert!(!store.backend().is_empty());
    store.ping().await.expect("ping");
    assert_eq!(store.last_seq().await.expect("last seq"), 0);
    assert!(store.read_events(0, 100).await.expect("read").is_empty());
    assert_eq!(store.impression("r-none").await.expect("impression"), None);
    assert!(store.list_snapshots().await.expect("snapshots").is_empty());
    assert_eq!(store.load_snapshot(1).await.expect("load"), None);
    assert!(store.list_keys().await.expect("keys").is_empty());
    assert_eq!(store.find_key("k-none").await.expect("find"), None);
}

async fn feedback_may_refer_to_an_impression_of_the_same_batch(store: Arc<dyn Store>) {
    let imp = impression("r-1", "u-1", &["c-1", "c-2", "c-3"]);
    let f = fb("r-1", "c-2", Outcome::Rejected);
    let out = commit(&store, batch(1_000, vec![imp.clone()], vec![vec![f.clone()]])).await;
    assert_eq!(out, vec![recorded(1, 0)]);

    let events = all_events(&store).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].body, EventBody::Impression(imp.clone()));
    assert_eq!(events[1].body, EventBody::Feedback(joined(&imp, &f)));
    assert!(events[0].seq < events[1].seq);
    assert_eq!(store.last_seq().await.expect("last seq"), events[1].seq);
}

async fn duplicate_feedback_is_counted_and_not_appended_again(store: Arc<dyn Store>) {
    let imp = impression("r-1", "u-1", &["c-1", "c-2"]);
    let a = fb("r-1", "c-1", Outcome::Accepted);
    let b = fb("r-1", "c-2", Outcome::Rejected);
    // Within one group, and across groups of one batch.
    let out =
        commit(&store, batch(1_000, vec![imp], vec![vec![a.clone(), a.clone(), b.clone()], vec![b.clone()]])).await;
    assert_eq!(out, vec![recorded(2, 1), recorded(0, 1)]);
    // Across commits.
    let out = commit(&store, batch(2_000, vec![], vec![vec![b.clone(), a.clone()]])).await;
    assert_eq!(out, vec![recorded(0, 2)]);
    // The outcome is part of the key: a different outcome for the same candidate is new.
    let out = commit(&store, batch(3_000, vec![], vec![vec![fb("r-1", "c-1", Outcome::ReportedInsecure)]])).await;
    assert_eq!(out, vec![recorded(1, 0)]);

    let events = all_events(&store).await;
    let logged: Vec<(&str, Outcome)> =
        feedback_of(&events).iter().map(|f| (f.candidate_id.as_str(), f.outcome)).collect();
    assert_eq!(
        logged,
        vec![("c-1", Outcome::Accepted), ("c-2", Outcome::Rejected), ("c-1", Outcome::ReportedInsecure)]
    );
}

async fn duplicate_impressions_are_stored_once(store: Arc<dyn Store>) {
    let first = impression("r-1", "u-1", &["c-1", "c-2"]);
    let mut again = first.clone();
    again.model_version = "other".into();
    commit(&store, batch(1_000, vec![first.clone(), again.clone()], vec![])).await;
    commit(&store, batch(2_000, vec![again], vec![])).await;

    let events = all_events(&store).await;
    assert_eq!(impressions_of(&events), vec![&first]);
    assert_eq!(store.impression("r-1").await.expect("impression"), Some(first));
}

async fn unknown_request_rejects_its_whole_group_only(store: Arc<dyn Store>) {
    let imp = impression("r-1", "u-1", &["c-1", "c-2", "c-3"]);
    let groups = vec![
        vec![fb("r-1", "c-1", Outcome::Accepted)],
        vec![
            fb("r-1", "c-2", Outcome::Accepted),
            fb("r-ghost", "c-1", Outcome::Accepted),
            fb("r-1", "c-3", Outcome::Rejected),
        ],
        vec![fb("r-1", "c-3", Outcome::Accepted)],
    ];
    let out = commit(&store, batch(1_000, vec![imp], groups)).await;
    assert_eq!(
        out,
        vec![recorded(1, 0), GroupOutcome::UnknownRequest { index: 1, request_id: "r-ghost".into() }, recorded(1, 0)]
    );

    let events = all_events(&store).await;
    let logged: Vec<(&str, Outcome)> =
        feedback_of(&events).iter().map(|f| (f.candidate_id.as_str(), f.outcome)).collect();
    assert_eq!(logged, vec![("c-1", Outcome::Accepted), ("c-3", Outcome::Accepted)]);
    // Not even its idempotency keys: the valid events of the rejected group are new later.
    let out = commit(
        &store,
        batch(2_000, vec![], vec![vec![fb("r-1", "c-2", Outcome::Accepted), fb("r-1", "c-3", Outcome::Rejected)]]),
    )
    .await;
    assert_eq!(out, vec![recorded(2, 0)]);
}

async fn unknown_candidate_rejects_its_whole_group_only(store: Arc<dyn Store>) {
    commit(&store, batch(500, vec![impression("r-0", "u-1", &["c-1", "c-2"])], vec![])).await;
    let imp = impression("r-1", "u-1", &["c-1", "c-2"]);
    let groups = vec![
        vec![fb("r-0", "c-1", Outcome::Accepted), fb("r-1", "c-9", Outcome::Accepted)],
        vec![fb("r-0", "c-2", Outcome::Rejected), fb("r-1", "c-1", Outcome::Accepted)],
    ];
    let out = commit(&store, batch(1_000, vec![imp], groups)).await;
    assert_eq!(
        out,
        vec![
            GroupOutcome::UnknownCandidate { index: 1, request_id: "r-1".into(), candidate_id: "c-9".into() },
            recorded(2, 0),
        ]
    );
    let events = all_events(&store).await;
    let logged: Vec<(&str, &str)> =
        feedback_of(&events).iter().map(|f| (f.request_id.as_str(), f.candidate_id.as_str())).collect();
    assert_eq!(logged, vec![("r-0", "c-2"), ("r-1", "c-1")]);
}

async fn feedback_joins_the_stored_impression_when_a_batch_sends_it_again(store: Arc<dyn Store>) {
    let stored = impression("r-1", "u-1", &["c-1", "c-2"]);
    commit(&store, batch(1_000, vec![stored.clone()], vec![])).await;
    // Sent again (a retry) with other contents, in a batch whose feedback refers to it: the stored
    // one stays and is the one joined. Likewise for a request sent twice within one batch.
    let mut again = impression("r-1", "u-2", &["c-1", "c-2"]);
    again.model_version = "other".into();
    again.candidates[1].risk = 0.99;
    let first = impression("r-2", "u-1", &["c-1"]);
    let mut second = first.clone();
    second.model_version = "other".into();
    let (f1, f2) = (fb("r-1", "c-2", Outcome::Rejected), fb("r-2", "c-1", Outcome::Accepted));
    let out =
        commit(&store, batch(2_000, vec![again, first.clone(), second], vec![vec![f1.clone(), f2.clone()]])).await;
    assert_eq!(out, vec![recorded(2, 0)]);

    let events = all_events(&store).await;
    assert_eq!(impressions_of(&events), vec![&stored, &first]);
    assert_eq!(feedback_of(&events), vec![&joined(&stored, &f1), &joined(&first, &f2)]);
}

async fn a_rejected_group_leaves_its_keys_to_later_groups_of_the_batch(store: Arc<dyn Store>) {
    let imp = impression("r-1", "u-1", &["c-1", "c-2"]);
    let a = fb("r-1", "c-1", Outcome::Accepted);
    let b = fb("r-1", "c-2", Outcome::Rejected);
    let groups = vec![
        vec![a.clone(), fb("r-1", "c-9", Outcome::Accepted)],
        vec![],
        vec![a.clone()],
        vec![a.clone(), b.clone(), b.clone()],
        vec![b.clone(), fb("r-ghost", "c-1", Outcome::Accepted)],
    ];
    let out = commit(&store, batch(1_000, vec![imp.clone()], groups)).await;
    assert_eq!(
        out,
        vec![
            GroupOutcome::UnknownCandidate { index: 1, request_id: "r-1".into(), candidate_id: "c-9".into() },
            recorded(0, 0),
            recorded(1, 0),
            recorded(1, 2),
            GroupOutcome::UnknownRequest { index: 1, request_id: "r-ghost".into() },
        ]
    );
    let events = all_events(&store).await;
    assert_eq!(feedback_of(&events), vec![&joined(&imp, &a), &joined(&imp, &b)]);
}

/// One batch larger than any statement a backend may use for it (tens of thousands of
/// impressions and request ids, thousands of feedback events and keys, with stored and
/// repeated keys and a rejected group among them) gets the outcomes, log and seqs of a plain
/// model that checks and writes it event by event.
async fn a_batch_past_every_statement_limit_commits_as_event_by_event_would(store: Arc<dyn Store>) {
    const STORED: usize = 2_100;
    const NEW: usize = 30_050;
    const GROUPS: usize = 170;
    const OUTCOMES: [Outcome; 4] =
        [Outcome::Accepted, Outcome::Rejected, Outcome::ReportedInsecure, Outcome::ReportedSafe];
    let cands = ["c-1", "c-2", "c-3", "c-4"];
    let stored: Vec<Impression> =
        (0..STORED).map(|i| impression(&format!("s-{i}"), &format!("u-{}", i % 97), &cands)).collect();
    let early: Vec<FeedbackIn> =
        (0..STORED).step_by(21).map(|i| fb(&format!("s-{i}"), "c-1", Outcome::Accepted)).collect();
    let out = commit(&store, batch(1_000, stored.clone(), vec![early.clone()])).await;
    assert_eq!(out, vec![recorded(early.len() as u32, 0)]);
    let before = store.last_seq().await.expect("last seq");

    // New impressions (one sent twice, one a stored request again), then groups of 50 events on
    // stored and new impressions: some keys stored, some repeated, one group rejected midway.
    let mut impressions: Vec<Impression> =
        (0..NEW).map(|i| impression(&format!("n-{i}"), &format!("u-{}", i % 89), &cands[..1])).collect();
    impressions.push(impressions[7].clone());
    let mut resent = stored[5].clone();
    resent.model_version = "other".into();
    impressions.push(resent);
    let mut groups: Vec<Vec<FeedbackIn>> = (0..GROUPS)
        .map(|g| {
            (0..50)
                .map(|k| {
                    let e = (g * 50 + k) * 7_919 % (STORED * 4);
                    fb(&format!("s-{}", e % STORED), cands[e / STORED], OUTCOMES[(g + k) % 4 / 2 * 3 % 4])
                })
                .collect()
        })
        .collect();
    groups[60][17] = fb("s-3", "c-9", Outcome::Accepted);
    groups[61] = groups[40].clone();
    groups.push((0..50).map(|i| fb(&format!("n-{}", NEW - 1 - i), "c-1", Outcome::Rejected)).collect());
    groups.push(vec![fb("n-7", "c-1", Outcome::ReportedSafe), fb("s-5", "c-4", Outcome::ReportedSafe)]);

    // The model.
    let mut known: HashMap<&str, &Impression> = HashMap::new();
    for imp in stored.iter().chain(&impressions) {
        known.entry(imp.request_id.as_str()).or_insert(imp);
    }
    let mut keys: HashSet<(String, String, Outcome)> =
        early.iter().map(|f| (f.request_id.clone(), f.candidate_id.clone(), f.outcome)).collect();
    let (mut expected_out, mut expected_log) = (Vec::new(), Vec::new());
    for group in &groups {
        let rejected = group.iter().enumerate().find_map(|(index, f)| match known.get(f.request_id.as_str()) {
            None => Some(GroupOutcome::UnknownRequest { index, request_id: f.request_id.clone() }),
            Some(imp) if imp.candidate(&f.candidate_id).is_none() => Some(GroupOutcome::UnknownCandidate {
                index,
                request_id: f.request_id.clone(),
                candidate_id: f.candidate_id.clone(),
            }),
            Some(_) => None,
        });
        if let Some(r) = rejected {
            expected_out.push(r);
            continue;
        }
        let (mut new, mut dup) = (0, 0);
        for f in group {
            if keys.insert((f.request_id.clone(), f.candidate_id.clone(), f.outcome)) {
                new += 1;
                expected_log.push(joined(known[f.request_id.as_str()], f));
            } else {
                dup += 1;
            }
        }
        expected_out.push(recorded(new, dup));
    }
    assert!(expected_log.len() > 7_600, "enough new keys to need several statements: {}", expected_log.len());
    assert!(expected_out.iter().any(|o| matches!(o, GroupOutcome::Recorded { duplicates, .. } if *duplicates > 0)));

    let out = commit(&store, batch(2_000, impressions.clone(), groups)).await;
    assert_eq!(out, expected_out);
    let events = store.read_events(before, u32::MAX).await.expect("read");
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(events.iter().all(|e| e.at_ms == 2_000));
    assert_eq!(store.last_seq().await.expect("last seq"), events[events.len() - 1].seq);
    let expected_imps: Vec<&Impression> = impressions[..NEW].iter().collect();
    assert_eq!(events.len(), NEW + expected_log.len());
    assert_eq!(impressions_of(&events[..NEW]), expected_imps);
    assert_eq!(feedback_of(&events[NEW..]), expected_log.iter().collect::<Vec<_>>());
    // Everything is indexed: lookups, and keys that dedupe the next commit.
    assert_eq!(store.impression(&format!("n-{}", NEW - 1)).await.expect("lookup"), Some(impressions[NEW - 1].clone()));
    assert_eq!(store.impression("s-5").await.expect("lookup"), Some(stored[5].clone()));
    let again: Vec<Vec<FeedbackIn>> =
        vec![vec![fb("n-7", "c-1", Outcome::ReportedSafe), fb("s-5", "c-4", Outcome::ReportedSafe)]];
    assert_eq!(commit(&store, batch(3_000, vec![], again)).await, vec![recorded(0, 2)]);
}

async fn seqs_increase_and_read_events_pages_by_after_and_limit(store: Arc<dyn Store>) {
    for i in 0..4 {
        let r = format!("r-{i}");
        commit(
            &store,
            batch(
                1_000 + i,
                vec![impression(&r, "u-1", &["c-1", "c-2"])],
                vec![vec![fb(&r, "c-1", Outcome::Accepted)]],
            ),
        )
        .await;
    }
    let appended = store
        .append(
            5_000,
            vec![EventBody::PolicyReset { user_id: "u-1".into() }, EventBody::PolicyReset { user_id: "u-2".into() }],
        )
        .await
        .expect("append");

    let all = all_events(&store).await;
    assert_eq!(all.len(), 10);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq), "seqs strictly increasing");
    assert_eq!(appended, vec![all[8].seq, all[9].seq]);
    assert_eq!(all[9].body, EventBody::PolicyReset { user_id: "u-2".into() });
    assert_eq!(store.last_seq().await.expect("last seq"), all[9].seq);

    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = store.read_events(after, 3).await.expect("page");
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        after = last.seq;
        paged.extend(page);
    }
    assert_eq!(paged, all);
    assert_eq!(store.read_events(all[4].seq, 2).await.expect("read"), all[5..7].to_vec());
    assert!(store.read_events(all[9].seq, 10).await.expect("read").is_empty());
    assert!(store.read_events(0, 0).await.expect("read").is_empty());
}

async fn events_carry_the_time_of_their_batch(store: Arc<dyn Store>) {
    commit(&store, batch(1_111, vec![impression("r-1", "u-1", &["c-1", "c-2"])], vec![])).await;
    commit(
        &store,
        batch(2_222, vec![impression("r-2", "u-1", &["c-1"])], vec![vec![fb("r-1", "c-2", Outcome::Rejected)]]),
    )
    .await;
    store.append(3_333, vec![EventBody::PolicyReset { user_id: "u-1".into() }]).await.expect("append");

    let times: Vec<(&str, i64)> = all_events(&store).await.iter().map(|e| (e.body.kind(), e.at_ms)).collect();
    assert_eq!(times, vec![("impression", 1_111), ("impression", 2_222), ("feedback", 2_222), ("policy_reset", 3_333)]);
}

async fn append_refuses_impressions_and_feedback(store: Arc<dyn Store>) {
    let imp = impression("r-1", "u-1", &["c-1"]);
    let err = store.append(1, vec![EventBody::Impression(imp)]).await.expect_err("impression via append");
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    assert_eq!(store.last_seq().await.expect("last seq"), 0);
    assert_eq!(store.impression("r-1").await.expect("impression"), None);
}

async fn impression_lookup_returns_what_was_committed(store: Arc<dyn Store>) {
    let mut a = impression("r-a", "u-1", &["c-1", "c-2", "c-3"]);
    a.candidates[1].text = Some("subprocess.run(cmd, shell=True)".into());
    let b = impression("r-b", "u-2", &["c-1"]);
    commit(&store, batch(1_000, vec![a.clone(), b.clone()], vec![])).await;
    assert_eq!(store.impression("r-a").await.expect("impression"), Some(a));
    assert_eq!(store.impression("r-b").await.expect("impression"), Some(b));
    assert_eq!(store.impression("r-c").await.expect("impression"), None);
}

async fn committed_data_survives_reopen(open: Opener) {
    let imp = impression("r-1", "u-1", &["c-1", "c-2"]);
    let store = open().await;
    commit(&store, batch(1_000, vec![imp.clone()], vec![vec![fb("r-1", "c-1", Outcome::Accepted)]])).await;
    store.save_snapshot(2, 1_500, vec![7; 64], 3).await.expect("snapshot");
    store.insert_key(&key("k-1", Scope::Admin, 1_600)).await.expect("insert key");
    store.touch_keys(&[("k-1".into(), 1_700)]).await.expect("touch");
    let events = all_events(&store).await;
    let last = store.last_seq().await.expect("last seq");
    let keys = store.list_keys().await.expect("keys");
    drop(store);

    let store = open().await;
    assert_eq!(all_events(&store).await, events);
    assert_eq!(store.last_seq().await.expect("last seq"), last);
    assert_eq!(store.impression("r-1").await.expect("impression"), Some(imp));
    assert_eq!(
        store.list_snapshots().await.expect("snapshots"),
        vec![SnapshotInfo { seq: 2, at_ms: 1_500, bytes: 64 }]
    );
    assert_eq!(store.load_snapshot(2).await.expect("load"), Some(vec![7; 64]));
    assert_eq!(store.list_keys().await.expect("keys"), keys);
    assert_eq!(keys[0].last_used_at_ms, Some(1_700));
    // Idempotency keys survive too, and new events continue after the old ones.
    let out = commit(
        &store,
        batch(2_000, vec![], vec![vec![fb("r-1", "c-1", Outcome::Accepted), fb("r-1", "c-2", Outcome::Accepted)]]),
    )
    .await;
    assert_eq!(out, vec![recorded(1, 1)]);
    assert!(store.last_seq().await.expect("last seq") > last);
}

async fn snapshots_keep_only_the_newest(store: Arc<dyn Store>) {
    store.save_snapshot(10, 1_000, vec![1; 10], 2).await.expect("save");
    store.save_snapshot(20, 2_000, vec![2; 20], 2).await.expect("save");
    store.save_snapshot(30, 3_000, vec![3; 30], 2).await.expect("save");
    let newest_two =
        vec![SnapshotInfo { seq: 30, at_ms: 3_000, bytes: 30 }, SnapshotInfo { seq: 20, at_ms: 2_000, bytes: 20 }];
    assert_eq!(store.list_snapshots().await.expect("list"), newest_two);
    assert_eq!(store.load_snapshot(30).await.expect("load"), Some(vec![3; 30]));
    assert_eq!(store.load_snapshot(20).await.expect("load"), Some(vec![2; 20]));
    assert_eq!(store.load_snapshot(10).await.expect("load"), None);
    // "Newest" is by seq, not by order of saving.
    store.save_snapshot(15, 4_000, vec![4; 15], 2).await.expect("save");
    assert_eq!(store.list_snapshots().await.expect("list"), newest_two);
}

async fn compaction_removes_old_impressions_without_feedback_up_to_max_seq(store: Arc<dyn Store>) {
    let old_unused = impression("r-old-unused", "u-1", &["c-1", "c-2"]);
    let old_used = impression("r-old-used", "u-1", &["c-1", "c-2"]);
    commit(
        &store,
        batch(1_000, vec![old_unused, old_used.clone()], vec![vec![fb("r-old-used", "c-2", Outcome::Rejected)]]),
    )
    .await;
    let fresh = impression("r-fresh", "u-1", &["c-1"]);
    commit(&store, batch(9_000, vec![fresh.clone()], vec![])).await;
    let max_seq = store.last_seq().await.expect("last seq");
    // Old by time, but after the snapshot the caller passes: must stay.
    let beyond = impression("r-beyond", "u-1", &["c-1"]);
    commit(&store, batch(1_000, vec![beyond.clone()], vec![])).await;

    let done = store.compact(5_000, None, max_seq).await.expect("compact");
    assert_eq!((done.impressions, done.feedback), (1, 0));
    assert_eq!(store.impression("r-old-unused").await.expect("lookup"), None);
    assert_eq!(store.impression("r-old-used").await.expect("lookup"), Some(old_used));
    assert_eq!(store.impression("r-fresh").await.expect("lookup"), Some(fresh));
    assert_eq!(store.impression("r-beyond").await.expect("lookup"), Some(beyond));
    let events = all_events(&store).await;
    let ids: Vec<&str> = impressions_of(&events).iter().map(|i| i.request_id.as_str()).collect();
    assert_eq!(ids, vec!["r-old-used", "r-fresh", "r-beyond"]);
    assert_eq!(feedback_of(&events).len(), 1);

    // Late feedback for a compacted impression is an unknown request.
    let out = commit(&store, batch(10_000, vec![], vec![vec![fb("r-old-unused", "c-1", Outcome::Accepted)]])).await;
    assert_eq!(out, vec![GroupOutcome::UnknownRequest { index: 0, request_id: "r-old-unused".into() }]);
    // Compacting again finds nothing more.
    assert_eq!(store.compact(5_000, None, max_seq).await.expect("compact").impressions, 0);
}

async fn compaction_of_feedback_respects_its_cut_and_forgets_its_keys(store: Arc<dyn Store>) {
    let imp = impression("r-1", "u-1", &["c-1", "c-2", "c-3"]);
    commit(&store, batch(1_000, vec![imp], vec![vec![fb("r-1", "c-1", Outcome::Accepted)]])).await;
    commit(&store, batch(2_000, vec![], vec![vec![fb("r-1", "c-2", Outcome::Accepted)]])).await;
    let max_seq = store.last_seq().await.expect("last seq");
    commit(&store, batch(1_500, vec![], vec![vec![fb("r-1", "c-3", Outcome::Accepted)]])).await;

    let done = store.compact(0, Some(1_800), max_seq).await.expect("compact");
    assert_eq!((done.impressions, done.feedback), (0, 1));
    let events = all_events(&store).await;
    let left: Vec<&str> = feedback_of(&events).iter().map(|f| f.candidate_id.as_str()).collect();
    assert_eq!(left, vec!["c-2", "c-3"]);
    // The impression got feedback, so it stays.
    assert!(store.impression("r-1").await.expect("lookup").is_some());
    // A compacted feedback event's idempotency key goes with it; kept ones still dedupe.
    let out = commit(
        &store,
        batch(3_000, vec![], vec![vec![fb("r-1", "c-1", Outcome::Accepted), fb("r-1", "c-2", Outcome::Accepted)]]),
    )
    .await;
    assert_eq!(out, vec![recorded(1, 1)]);
}

async fn compaction_never_moves_last_seq_back(store: Arc<dyn Store>) {
    commit(&store, batch(1_000, vec![impression("r-1", "u-1", &["c-1"]), impression("r-2", "u-1", &["c-1"])], vec![]))
        .await;
    let last = store.last_seq().await.expect("last seq");
    let done = store.compact(2_000, Some(2_000), last).await.expect("compact");
    assert_eq!(done.impressions, 2);
    assert!(all_events(&store).await.is_empty());
    assert_eq!(store.last_seq().await.expect("last seq"), last);
    let seqs = store.append(3_000, vec![EventBody::PolicyReset { user_id: "u-1".into() }]).await.expect("append");
    assert!(seqs[0] > last, "sequence numbers are never reused");
}

/// Compaction keeps the impressions with feedback, whichever commit brought it, and erasure
/// still finds that feedback afterwards: both backends find a user's feedback through the user's
/// impressions (migration 5).
async fn erasure_after_compaction_still_unlinks_the_feedback_of_kept_impressions(store: Arc<dyn Store>) {
    let impressions =
        (0..7).map(|i| impression(&format!("r{i}"), if i < 5 { "u-1" } else { "u-2" }, &["c-1"])).collect();
    // r0, r3 and r6 get feedback; r3's comes in a later commit.
    let first = vec![vec![fb("r0", "c-1", Outcome::Accepted)], vec![fb("r6", "c-1", Outcome::Rejected)]];
    commit(&store, batch(1_000, impressions, first)).await;
    commit(&store, batch(2_000, vec![], vec![vec![fb("r3", "c-1", Outcome::Accepted)]])).await;
    let max_seq = store.last_seq().await.expect("last seq");

    assert_eq!(store.compact(5_000, None, max_seq).await.expect("compact").impressions, 4);
    for (id, kept) in [("r0", true), ("r1", false), ("r2", false), ("r3", true), ("r4", false), ("r6", true)] {
        assert_eq!(store.impression(id).await.expect("lookup").is_some(), kept, "{id}");
    }

    let (_, impressions, feedback) = store.erase_user("u-1", 6_000).await.expect("erase");
    assert_eq!((impressions, feedback), (2, 2));
    let events = all_events(&store).await;
    let users: Vec<Option<&str>> = feedback_of(&events).iter().map(|f| f.user_id.as_deref()).collect();
    assert_eq!(users, vec![None, Some("u-2"), None]);
    assert!(impressions_of(&events).iter().all(|i| i.user_id == "u-2"));
    assert_eq!(store.erase_user("u-1", 7_000).await.expect("again").2, 0);
}

async fn erase_user_deletes_impressions_unlinks_feedback_and_logs_a_tombstone(store: Arc<dyn Store>) {
    let a1 = impression("r-a1", "u-a", &["c-1", "c-2"]);
    let a2 = impression("r-a2", "u-a", &["c-1", "c-2"]);
    let b1 = impression("r-b1", "u-b", &["c-1", "c-2"]);
    let groups = vec![
        vec![fb("r-a1", "c-1", Outcome::Accepted), fb("r-a1", "c-2", Outcome::ReportedInsecure)],
        vec![fb("r-b1", "c-2", Outcome::Rejected)],
    ];
    commit(&store, batch(1_000, vec![a1, a2, b1.clone()], groups)).await;
    let before = all_events(&store).await;

    let (tombstone, impressions, feedback) = store.erase_user("u-a", 2_000).await.expect("erase");
    assert_eq!((impressions, feedback), (2, 2));
    assert_eq!(store.last_seq().await.expect("last seq"), tombstone);
    assert_eq!(store.impression("r-a1").await.expect("lookup"), None);
    assert_eq!(store.impression("r-a2").await.expect("lookup"), None);
    assert_eq!(store.impression("r-b1").await.expect("lookup"), Some(b1));

    let after = all_events(&store).await;
    let last = after.last().expect("tombstone");
    assert_eq!((last.seq, last.at_ms), (tombstone, 2_000));
    assert_eq!(last.body, EventBody::UserErased { user_id: "u-a".into() });
    // Every other event is the one before, minus u-a's impressions and with u-a's feedback
    // unlinked: same seq, time, labels and features.
    let expected: Vec<Event> = before
        .into_iter()
        .filter(|e| !matches!(&e.body, EventBody::Impression(i) if i.user_id == "u-a"))
        .map(|mut e| {
            if let EventBody::Feedback(f) = &mut e.body
                && f.user_id.as_deref() == Some("u-a")
            {
                f.user_id = None;
            }
            e
        })
        .collect();
    assert_eq!(after[..after.len() - 1], expected[..]);
    let unlinked = feedback_of(&after).iter().filter(|f| f.user_id.is_none()).count();
    assert_eq!(unlinked, 2);
    assert!(feedback_of(&after).iter().any(|f| f.user_id.as_deref() == Some("u-b")));

    // Feedback for an erased impression is an unknown request.
    let out = commit(&store, batch(3_000, vec![], vec![vec![fb("r-a2", "c-1", Outcome::Accepted)]])).await;
    assert_eq!(out, vec![GroupOutcome::UnknownRequest { index: 0, request_id: "r-a2".into() }]);
}

async fn keys_are_stored_listed_revoked_once_and_touched(store: Arc<dyn Store>) {
    let plugin = key("k-plugin", Scope::Plugin, 100);
    let admin = key("k-admin", Scope::Admin, 200);
    store.insert_key(&plugin).await.expect("insert");
    store.insert_key(&admin).await.expect("insert");
    assert!(store.insert_key(&plugin).await.is_err(), "ids are unique");

    assert_eq!(store.find_key("k-plugin").await.expect("find"), Some(plugin.clone()));
    assert_eq!(store.find_key("k-none").await.expect("find"), None);
    assert_eq!(store.list_keys().await.expect("list"), vec![admin.clone(), plugin.clone()]);

    assert!(store.revoke_key("k-plugin", 300).await.expect("revoke"));
    assert!(!store.revoke_key("k-plugin", 400).await.expect("revoke again"));
    assert!(!store.revoke_key("k-none", 400).await.expect("revoke missing"));
    let revoked = store.find_key("k-plugin").await.expect("find").expect("present");
    assert_eq!(revoked.revoked_at_ms, Some(300));

    store.touch_keys(&[("k-admin".into(), 500), ("k-none".into(), 500)]).await.expect("touch");
    store.touch_keys(&[("k-admin".into(), 450)]).await.expect("touch older");
    store.touch_keys(&[]).await.expect("touch nothing");
    let touched = store.find_key("k-admin").await.expect("find").expect("present");
    assert_eq!(touched.last_used_at_ms, Some(500));
    assert_eq!(touched.hash, admin.hash);

    let logged: Vec<(i64, EventBody)> = all_events(&store).await.into_iter().map(|e| (e.at_ms, e.body)).collect();
    assert_eq!(
        logged,
        vec![
            (100, EventBody::KeyCreated { key_id: "k-plugin".into(), scope: Scope::Plugin }),
            (200, EventBody::KeyCreated { key_id: "k-admin".into(), scope: Scope::Admin }),
            (300, EventBody::KeyRevoked { key_id: "k-plugin".into() }),
        ]
    );
}

async fn model_registry_stores_versions_and_the_log_names_the_live_one(store: Arc<dyn Store>) {
    assert!(store.list_models().await.expect("list").is_empty());
    assert_eq!(store.last_activation().await.expect("none yet"), None);
    let rec = |version: &str, created_at_ms: i64| ModelRecord {
        version: version.into(),
        created_at_ms,
        trained_through_seq: 7,
        metrics_json: format!("{{\"v\":\"{version}\"}}"),
        bytes: 0,
    };
    store.put_model(&rec("risk-a", 100), vec![1, 2, 3]).await.expect("put a");
    store.put_model(&rec("risk-b", 200), vec![4; 1000]).await.expect("put b");
    let err = store.put_model(&rec("risk-a", 300), vec![9]).await.expect_err("versions are immutable");
    assert!(err.to_string().contains("risk-a"), "{err}");
    let listed = store.list_models().await.expect("list");
    assert_eq!(
        listed,
        vec![ModelRecord { bytes: 1000, ..rec("risk-b", 200) }, ModelRecord { bytes: 3, ..rec("risk-a", 100) }]
    );
    assert_eq!(store.load_model("risk-a").await.expect("load"), Some(vec![1, 2, 3]));
    assert_eq!(store.load_model("risk-z").await.expect("load"), None);

    let activation = |version: &str, reason| ModelActivation {
        version: version.into(),
        trained_through_seq: 7,
        reason,
        actor: "cli".into(),
    };
    let s1 = store
        .append(400, vec![EventBody::ModelActivated(activation("risk-b", ActivationReason::Publish))])
        .await
        .expect("publish");
    store.append(450, vec![EventBody::PolicyReset { user_id: "u".into() }]).await.expect("other event");
    assert_eq!(
        store.last_activation().await.expect("live"),
        Some((s1[0], activation("risk-b", ActivationReason::Publish)))
    );
    let s2 = store
        .append(500, vec![EventBody::ModelActivated(activation("risk-a", ActivationReason::Rollback))])
        .await
        .expect("rollback");
    assert_eq!(
        store.last_activation().await.expect("live"),
        Some((s2[0], activation("risk-a", ActivationReason::Rollback)))
    );

    assert!(store.delete_model("risk-b").await.expect("delete"));
    assert!(!store.delete_model("risk-b").await.expect("delete again"));
    assert_eq!(store.list_models().await.expect("list").len(), 1);
}

async fn concurrent_commits_all_land_with_unique_increasing_seqs(store: Arc<dyn Store>) {
    const TASKS: usize = 16;
    const COMMITS: usize = 3;
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..COMMITS {
                    let r = format!("r-{t}-{i}");
                    let groups = vec![
                        vec![fb(&r, "c-1", Outcome::Accepted)],
                        vec![fb(&r, "c-2", Outcome::Rejected), fb(&r, "c-1", Outcome::Accepted)],
                        vec![fb(&r, "c-3", Outcome::ReportedSafe)],
                    ];
                    let b = batch(
                        1_000 + i as i64,
                        vec![impression(&r, &format!("u-{t}"), &["c-1", "c-2", "c-3"])],
                        groups,
                    );
                    let out = store.commit(&b).await.expect("concurrent commit");
                    assert_eq!(out, vec![recorded(1, 0), recorded(1, 1), recorded(1, 0)]);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }

    let events = all_events(&store).await;
    assert_eq!(events.len(), TASKS * COMMITS * 4);
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(store.last_seq().await.expect("last seq"), events[events.len() - 1].seq);
    let requests: HashSet<&str> = impressions_of(&events).iter().map(|i| i.request_id.as_str()).collect();
    assert_eq!(requests.len(), TASKS * COMMITS);
    let keys: HashSet<(&str, &str)> =
        feedback_of(&events).iter().map(|f| (f.request_id.as_str(), f.candidate_id.as_str())).collect();
    assert_eq!(keys.len(), TASKS * COMMITS * 3);
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL only: replicas sharing one log

/// Replicas (separate stores, so separate pools and sessions) commit concurrently while another
/// tails the log by `read_events(after, 100)`, advancing `after` to the last seq it saw. A
/// backend that numbered events at insert time rather than in commit order would let the tailer
/// read a higher seq before a lower one commits, and skip it. The tailer must see every
/// committed event exactly once, in increasing seq order: exactly the final log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_tailer_sees_every_event_once_in_order_under_concurrent_replicas() {
    const WRITERS: usize = 8;
    const BATCHES: usize = 50;
    const PAGE: u32 = 100;
    let Some(backend) = postgres_backend().await else { return };

    let done = Arc::new(AtomicBool::new(false));
    let tailer = {
        let store = (backend.open)().await;
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let (mut seen, mut after, mut reads_while_writing) = (Vec::<Event>::new(), 0, 0usize);
            loop {
                // Read the flag first: when it is set, every commit has returned, so a page read
                // afterwards that comes back short has reached the end of the log.
                let finished = done.load(Ordering::Acquire);
                let page = store.read_events(after, PAGE).await.expect("tail");
                assert!(page.len() <= PAGE as usize);
                for e in &page {
                    assert!(e.seq > after, "seq {} after {after}: out of order or seen twice", e.seq);
                    after = e.seq;
                }
                if !finished && !page.is_empty() {
                    reads_while_writing += 1;
                }
                let short = page.len() < PAGE as usize;
                seen.extend(page);
                if finished && short {
                    return (seen, reads_while_writing);
                }
                tokio::task::yield_now().await;
            }
        })
    };

    let mut writers = Vec::with_capacity(WRITERS);
    for w in 0..WRITERS {
        let store = (backend.open)().await;
        writers.push(tokio::spawn(async move {
            for i in 0..BATCHES {
                let (r1, r2) = (format!("r-{w}-{i}-a"), format!("r-{w}-{i}-b"));
                let user = format!("u-{w}");
                let b = batch(
                    (w * 1_000 + i) as i64,
                    vec![impression(&r1, &user, &["c-1", "c-2"]), impression(&r2, &user, &["c-1"])],
                    vec![vec![fb(&r1, "c-2", Outcome::Rejected)]],
                );
                assert_eq!(store.commit(&b).await.expect("commit"), vec![recorded(1, 0)]);
                if i % 10 == 9 {
                    store.append(i as i64, vec![EventBody::PolicyReset { user_id: user }]).await.expect("append");
                }
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    done.store(true, Ordering::Release);
    let (seen, reads_while_writing) = tailer.await.expect("tailer");

    let store = (backend.open)().await;
    let all = all_events(&store).await;
    assert_eq!(all.len(), WRITERS * (BATCHES * 3 + BATCHES / 10));
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(store.last_seq().await.expect("last seq"), all[all.len() - 1].seq);
    let tailed: HashSet<i64> = seen.iter().map(|e| e.seq).collect();
    let skipped: Vec<i64> = all.iter().map(|e| e.seq).filter(|s| !tailed.contains(s)).collect();
    assert!(
        skipped.is_empty(),
        "the tailer skipped {} of {} events, e.g. seqs {:?}",
        skipped.len(),
        all.len(),
        &skipped[..skipped.len().min(10)]
    );
    // Seen once each (seqs strictly increased), nothing extra, same contents.
    assert_eq!(seen.len(), all.len());
    assert!(seen == all, "the tailed events differ from the final log");
    eprintln!("tailer: {} events, {reads_while_writing} non-empty reads while writers ran", seen.len());
}
