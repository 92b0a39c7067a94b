//! Conformance cases of the oversight tables (review queue, audit log, rule events), run by
//! `conformance_suite!` in `store_conformance.rs` against every backend.

use super::{batch, commit, fb, impression};
use guardrank::events::{EventBody, Outcome, Verdict};
use guardrank::features::Features;
use guardrank::store::{
    Decision, NewAudit, NewReviewItem, ReviewFilter, ReviewReason, ReviewStatus, ReviewUpkeep, Store, VerdictIn,
};
use std::sync::Arc;

fn item(request_id: &str, candidate_id: &str, user: &str, reason: ReviewReason, at_ms: i64) -> NewReviewItem {
    NewReviewItem {
        request_id: request_id.into(),
        candidate_id: candidate_id.into(),
        user_id: user.into(),
        reason,
        risk: 0.5,
        rules: vec!["python.eval".into(), "python.sql.concat".into()],
        findings_json: "[{\"rule_id\":\"python.eval\"}]".into(),
        text: Some("eval(x)".into()),
        features: Features { idx: vec![3, 9], val: vec![1.0, 0.5], offset: 3.25 },
        created_at_ms: at_ms,
    }
}

fn filter(limit: u32) -> ReviewFilter {
    ReviewFilter { limit, ..ReviewFilter::default() }
}

pub async fn review_items_are_queued_once_filtered_paged_and_judged_once(store: Arc<dyn Store>) {
    // The candidate "b" was accepted before it was judged: an incident.
    let imp = impression("r-1", "u-1", &["a", "b"]);
    commit(&store, batch(1_000, vec![imp], vec![vec![fb("r-1", "b", Outcome::Accepted)]])).await;
    let items = vec![
        item("r-1", "a", "u-1", ReviewReason::Uncertain, 1_000),
        item("r-1", "b", "u-1", ReviewReason::Blocked, 1_001),
        item("r-2", "a", "u-2", ReviewReason::Uncertain, 2_000),
    ];
    assert_eq!(store.add_review_items(&items).await.expect("add"), 3);
    // The same candidates again: kept once; an uncertain item reported becomes a reported one.
    store.add_review_items(&items).await.expect("add again");
    store.add_review_items(&[item("r-2", "a", "u-2", ReviewReason::Reported, 2_500)]).await.expect("report");
    let all = store.list_review(&filter(10)).await.expect("list");
    assert_eq!(all.len(), 3);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    assert_eq!(all[0].reason, ReviewReason::Reported);
    assert_eq!(all[0].text.as_deref(), Some("eval(x)"));
    assert_eq!(all[0].rules, ["python.eval", "python.sql.concat"]);

    let by_user = store.list_review(&ReviewFilter { user_id: Some("u-1".into()), ..filter(10) }).await.expect("user");
    assert_eq!(by_user.len(), 2);
    let by_rule = store.list_review(&ReviewFilter { rule: Some("python.sql.concat".into()), ..filter(10) }).await;
    assert_eq!(by_rule.expect("rule").len(), 3);
    let none = store.list_review(&ReviewFilter { rule: Some("python.sql".into()), ..filter(10) }).await;
    assert!(none.expect("rule prefix").is_empty(), "a rule filter matches whole ids only");
    let since = store.list_review(&ReviewFilter { since_ms: Some(1_001), ..filter(10) }).await.expect("since");
    assert_eq!(since.len(), 2);
    let page1 = store.list_review(&filter(2)).await.expect("page 1");
    let page2 = store.list_review(&ReviewFilter { before: page1.last().map(|i| i.id), ..filter(2) }).await;
    let page2 = page2.expect("page 2");
    assert_eq!(page1.len() + page2.len(), 3);
    assert!(page2.iter().all(|i| i.id < page1[1].id));

    let blocked = all.iter().find(|i| i.candidate_id == "b").expect("blocked item");
    let v = VerdictIn {
        item_id: blocked.id,
        verdict: Verdict::Insecure,
        note: "shell".into(),
        key_id: "k-admin".into(),
        at_ms: 3_000,
    };
    let Decision::Decided { seq } = store.decide_review(&v).await.expect("decide") else { panic!("not decided") };
    assert_eq!(store.decide_review(&v).await.expect("again"), Decision::NotPending(ReviewStatus::Insecure));
    let missing = VerdictIn { item_id: 999_999, ..v.clone() };
    assert_eq!(store.decide_review(&missing).await.expect("missing"), Decision::NotFound);
    let events = store.read_events(seq - 1, 1).await.expect("read");
    let Some(EventBody::ReviewVerdict(ev)) = events.first().map(|e| &e.body) else { panic!("no verdict event") };
    assert_eq!((ev.item_id, ev.verdict, ev.accepted), (blocked.id, Verdict::Insecure, true));
    assert_eq!(ev.features.offset, 3.25);
    let judged = store.review_item(blocked.id).await.expect("get").expect("exists");
    assert_eq!(
        (judged.status, judged.decided_by.as_deref(), judged.note.as_deref()),
        (ReviewStatus::Insecure, Some("k-admin"), Some("shell"))
    );
    let audit = store.list_audit(None, 10).await.expect("audit");
    assert_eq!(audit.first().map(|a| a.action.as_str()), Some("review.verdict"));
    assert_eq!(store.incident_counts(0).await.expect("incidents"), (1, 1));
    let pending = store.list_review(&ReviewFilter { status: Some(ReviewStatus::Pending), ..filter(10) }).await;
    assert_eq!(pending.expect("pending").len(), 2);
}

pub async fn review_upkeep_expires_bounds_uncertain_items_and_purges(store: Arc<dyn Store>) {
    let items: Vec<NewReviewItem> = (0..5)
        .map(|i| item(&format!("r-{i}"), "a", "u", ReviewReason::Uncertain, 10_000 + i))
        .chain([
            item("r-old", "a", "u", ReviewReason::Blocked, 1),
            item("r-b", "a", "u", ReviewReason::Blocked, 10_100),
        ])
        .collect();
    store.add_review_items(&items).await.expect("add");
    // Expire before 5,000; keep 2 uncertain; purge nothing yet.
    let u = store.review_upkeep(5_000, 0, 2).await.expect("upkeep");
    assert_eq!(u, ReviewUpkeep { expired: 1, dropped: 3, purged: 0 });
    let left = store.list_review(&filter(50)).await.expect("list");
    let mut ids: Vec<&str> = left.iter().map(|i| i.request_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["r-3", "r-4", "r-b", "r-old"], "the newest uncertain items and every blocked one stay");
    let old = left.iter().find(|i| i.request_id == "r-old").expect("expired item");
    assert_eq!((old.status, old.text.as_deref()), (ReviewStatus::Expired, None));
    let counts = store.review_counts().await.expect("counts");
    assert!(counts.contains(&(ReviewStatus::Expired, 1)) && counts.contains(&(ReviewStatus::Pending, 3)), "{counts:?}");
    let u = store.review_upkeep(5_000, 5_000, 2).await.expect("purge");
    assert_eq!(u.purged, 1);
    // An expired item cannot be judged any more.
    let v = VerdictIn { item_id: old.id, verdict: Verdict::Safe, note: String::new(), key_id: "k".into(), at_ms: 1 };
    assert_eq!(store.decide_review(&v).await.expect("decide"), Decision::NotFound);
}

pub async fn audit_entries_list_newest_first_and_rule_events_are_found_by_kind(store: Arc<dyn Store>) {
    for i in 0..3 {
        let e = NewAudit {
            at_ms: 100 + i,
            key_id: format!("k-{i}"),
            action: "rule.patch".into(),
            target: format!("t.{i}"),
            details_json: "{}".into(),
        };
        store.add_audit(&e).await.expect("audit");
    }
    let all = store.list_audit(None, 10).await.expect("list");
    let keys: Vec<&str> = all.iter().map(|a| a.key_id.as_str()).collect();
    assert_eq!(keys, ["k-2", "k-1", "k-0"]);
    let page = store.list_audit(Some(all[0].id), 1).await.expect("page");
    assert_eq!(page.first().map(|a| a.key_id.as_str()), Some("k-1"));

    let seqs = store
        .append(
            5,
            vec![
                EventBody::RulePatched { spec_json: "{}".into(), key_id: "k".into() },
                EventBody::PolicyReset { user_id: "u".into() },
                EventBody::RuleDisabled { rule_id: "x.y".into(), key_id: "k".into() },
            ],
        )
        .await
        .expect("append");
    let found = store.rule_events(seqs[2]).await.expect("rule events");
    assert_eq!(found.iter().map(|e| e.seq).collect::<Vec<_>>(), [seqs[0], seqs[2]]);
    let upto = store.rule_events(seqs[1]).await.expect("rule events");
    assert_eq!(upto.len(), 1);
}

/// A usage-anomaly item (schema version 4): no candidate, no features; stored, listed and
/// judged like any other, and its verdict event carries empty features.
pub async fn anomaly_items_without_candidate_or_features_are_stored_and_judged(store: Arc<dyn Store>) {
    let anomaly = NewReviewItem {
        candidate_id: String::new(),
        rules: vec!["abuse.usage-anomaly".into()],
        features: Features::default(),
        text: None,
        ..item("r-9", "", "u-9", ReviewReason::Anomaly, 9_000)
    };
    assert_eq!(store.add_review_items(std::slice::from_ref(&anomaly)).await.expect("add"), 1);
    let listed = store.list_review(&ReviewFilter { user_id: Some("u-9".into()), ..filter(10) }).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].reason, listed[0].candidate_id.as_str()), (ReviewReason::Anomaly, ""));
    let v = VerdictIn {
        item_id: listed[0].id,
        verdict: Verdict::Safe,
        note: String::new(),
        key_id: "k".into(),
        at_ms: 9_500,
    };
    let Decision::Decided { seq } = store.decide_review(&v).await.expect("decide") else { panic!("not decided") };
    let events = store.read_events(seq - 1, 1).await.expect("read");
    let Some(EventBody::ReviewVerdict(ev)) = events.first().map(|e| &e.body) else { panic!("no verdict event") };
    assert!(ev.features.is_empty(), "{:?}", ev.features);
}

/// Reports of candidates: an existing pending uncertain item becomes `reported`, a blocked or
/// judged one is kept as it is, and the candidates without an item are named by index.
pub async fn reports_mark_existing_items_and_name_the_candidates_without_one(store: Arc<dyn Store>) {
    let items = vec![
        item("r-1", "a", "u-1", ReviewReason::Uncertain, 1_000),
        item("r-1", "b", "u-1", ReviewReason::Blocked, 1_001),
        item("r-3", "a", "u-3", ReviewReason::Uncertain, 1_002),
    ];
    store.add_review_items(&items).await.expect("add");
    let judged = store.list_review(&ReviewFilter { user_id: Some("u-3".into()), ..filter(10) }).await.expect("list");
    let v = VerdictIn {
        item_id: judged[0].id,
        verdict: Verdict::Safe,
        note: String::new(),
        key_id: "k".into(),
        at_ms: 1_500,
    };
    assert!(matches!(store.decide_review(&v).await.expect("decide"), Decision::Decided { .. }));

    let key = |r: &str, c: &str| (r.to_string(), c.to_string());
    let reports = [key("r-1", "a"), key("r-1", "b"), key("r-1", "c"), key("r-2", "a"), key("r-3", "a")];
    assert_eq!(store.report_review_items(&reports).await.expect("report"), vec![2, 3]);
    let reason = |all: &[guardrank::store::ReviewItem], r: &str, c: &str| {
        all.iter().find(|i| i.request_id == r && i.candidate_id == c).map(|i| (i.reason, i.status))
    };
    let all = store.list_review(&filter(10)).await.expect("list");
    assert_eq!(reason(&all, "r-1", "a"), Some((ReviewReason::Reported, ReviewStatus::Pending)));
    assert_eq!(reason(&all, "r-1", "b"), Some((ReviewReason::Blocked, ReviewStatus::Pending)));
    assert_eq!(reason(&all, "r-3", "a"), Some((ReviewReason::Uncertain, ReviewStatus::Safe)));
    assert_eq!(all.len(), 3, "reports add no item themselves");
    assert!(store.report_review_items(&[]).await.expect("nothing").is_empty());
}

pub async fn review_items_of_a_batch_commit_with_its_impressions_in_order(store: Arc<dyn Store>) {
    store.add_review_items(&[item("r-0", "a", "u-0", ReviewReason::Uncertain, 500)]).await.expect("add");
    let mut b =
        batch(1_000, vec![impression("r-1", "u-1", &["a", "b"])], vec![vec![fb("r-1", "a", Outcome::Accepted)]]);
    b.review = vec![
        // The same candidate twice in one batch, uncertain then blocked: one item, blocked.
        item("r-1", "a", "u-1", ReviewReason::Uncertain, 1_000),
        item("r-1", "b", "u-1", ReviewReason::Uncertain, 1_000),
        item("r-1", "a", "u-1", ReviewReason::Blocked, 1_000),
        // An item stored before: upgraded, not queued twice.
        item("r-0", "a", "u-0", ReviewReason::Reported, 1_000),
    ];
    // More than one statement's worth of items.
    b.review.extend((0..600).map(|k| item("r-2", &format!("c{k}"), "u-2", ReviewReason::Blocked, 1_000 + k)));
    commit(&store, b).await;
    let all = store.list_review(&filter(1_000)).await.expect("list");
    assert_eq!(all.len(), 603);
    let reason = |r: &str, c: &str| all.iter().find(|i| i.request_id == r && i.candidate_id == c).map(|i| i.reason);
    assert_eq!(reason("r-1", "a"), Some(ReviewReason::Blocked));
    assert_eq!(reason("r-1", "b"), Some(ReviewReason::Uncertain));
    assert_eq!(reason("r-0", "a"), Some(ReviewReason::Reported));
    assert_eq!(reason("r-2", "c599"), Some(ReviewReason::Blocked));
    let first = all.iter().find(|i| i.request_id == "r-1" && i.candidate_id == "a").expect("r-1/a");
    assert_eq!(first.rules, ["python.eval", "python.sql.concat"]);
    assert_eq!(first.text.as_deref(), Some("eval(x)"));
    // The impression and the feedback of the batch landed with them.
    assert!(store.impression("r-1").await.expect("impression").is_some());

    // A batch of review items alone commits too, and an empty batch is a no-op.
    let mut alone = batch(2_000, Vec::new(), Vec::new());
    alone.review = vec![item("r-3", "a", "u-3", ReviewReason::Uncertain, 2_000)];
    assert!(store.commit(&alone).await.expect("items alone").is_empty());
    assert_eq!(store.list_review(&filter(1_000)).await.expect("list").len(), 604);
    assert!(store.commit(&batch(3_000, Vec::new(), Vec::new())).await.expect("empty").is_empty());
}
