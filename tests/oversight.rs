//! Human oversight over HTTP (issue 7): the review queue and verdicts, hot rule patches, the
//! audit log and the oversight metrics, against a real server on a loopback port.

mod common;

use common::*;
use guardrank::events::{EventBody, Verdict};
use reqwest::Method;
use serde_json::{Value, json};

/// The rule of API.md's rule schema example.
fn vault_rule(mode: &str) -> Value {
    json!({"id": "python.crypto.legacy-vault-ecb", "languages": ["python"], "cwe": "CWE-327",
           "severity": "critical", "message": "legacy_vault.seal_ecb uses ECB mode",
           "patterns": ["legacy_vault\\.seal_ecb\\("], "unless": [], "mode": mode,
           "examples": {"insecure": ["blob = legacy_vault.seal_ecb(key, data)"],
                        "secure": ["blob = vault.seal_gcm(key, data)"]}})
}

const VAULT: &str = "    blob = legacy_vault.seal_ecb(key, data)\n    return blob";

/// Every candidate is a review item: unblocked ones fall in the uncertain band.
fn wide_band(d: &std::path::Path) -> guardrank::server::settings::Settings {
    let mut s = test_settings(d);
    s.retain_text = true;
    s.review_band_low = 0.0;
    s.review_band_high = 1.0;
    s
}

async fn review(app: &TestApp, query: &str) -> Vec<Value> {
    let (s, v) = app.admin(Method::GET, &format!("/admin/review{query}"), None).await;
    assert_eq!(s, 200, "{v}");
    v["items"].as_array().cloned().unwrap_or_default()
}

fn candidate<'a>(r: &'a Value, id: &str) -> &'a Value {
    r["candidates"].as_array().and_then(|c| c.iter().find(|x| x["id"] == id)).expect("candidate")
}

async fn risk_of(app: &TestApp, text: &str) -> f64 {
    let (s, r) = app.rank("probe", &[("p", text)]).await;
    assert_eq!(s, 200, "{r}");
    candidate(&r, "p")["risk"].as_f64().expect("risk")
}

#[tokio::test]
async fn blocked_candidates_are_queued_and_an_insecure_verdict_teaches_the_model() {
    let d = tempfile::tempdir().expect("tempdir");
    let app = TestApp::start(wide_band(d.path())).await;
    let (s, r) = app.rank("alice", &[("shell", SHELL), ("safe", SAFE)]).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(candidate(&r, "shell")["blocked"], true, "{r}");
    let before = candidate(&r, "safe")["risk"].as_f64().expect("risk");
    eventually("both candidates queued", || async { review(&app, "?user=alice").await.len() == 2 }).await;

    let pending = review(&app, "?status=pending&user=alice").await;
    let shell = pending.iter().find(|i| i["candidate_id"] == "shell").expect("blocked item");
    assert_eq!(shell["reason"], "blocked");
    assert_eq!(shell["request_id"], r["request_id"]);
    assert_eq!(shell["text"], SHELL, "text is kept when retain_text is on");
    assert!(shell["findings"].as_array().is_some_and(|f| !f.is_empty()), "{shell}");
    let safe = pending.iter().find(|i| i["candidate_id"] == "safe").expect("uncertain item");
    assert_eq!(safe["reason"], "uncertain");

    // Filters and paging.
    let rule = shell["findings"][0]["rule_id"].as_str().expect("rule id").to_string();
    let by_rule = review(&app, &format!("?rule={rule}")).await;
    assert_eq!(by_rule.len(), 1);
    assert!(review(&app, "?user=bob").await.is_empty());
    assert!(review(&app, "?since=2999-01-01T00:00:00Z").await.is_empty());
    assert_eq!(review(&app, "?since=2000-01-01T00:00:00Z").await.len(), 2);
    let page = review(&app, "?limit=1").await;
    let first = page[0]["id"].as_i64().expect("id");
    let next = review(&app, &format!("?limit=1&before={first}")).await;
    assert!(next[0]["id"].as_i64() < Some(first));
    for bad in ["?limit=0", "?limit=501", "?status=maybe", "?since=yesterday", "?colour=red"] {
        let (s, v) = app.admin(Method::GET, &format!("/admin/review{bad}"), None).await;
        assert_eq!(s, 422, "{bad}: {v}");
    }

    // A verdict: insecure on the candidate the model thought safe.
    let id = safe["id"].as_i64().expect("id");
    let path = format!("/admin/review/{id}");
    let (s, v) = app.admin(Method::POST, &path, Some(json!({"verdict": "maybe"}))).await;
    assert_eq!(s, 422, "{v}");
    let (s, v) = app.admin(Method::POST, &path, Some(json!({"verdict": "insecure", "note": "leaks prices"}))).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "insecure");
    let (s, v) = app.admin(Method::POST, &path, Some(json!({"verdict": "safe"}))).await;
    assert_eq!(s, 409, "a second verdict: {v}");
    let (s, _) = app.admin(Method::POST, "/admin/review/999999", Some(json!({"verdict": "safe"}))).await;
    assert_eq!(s, 404);
    let (s, _) = app.call(Method::POST, &path, Some(PLUGIN), Some(json!({"verdict": "safe"}))).await;
    assert_eq!(s, 403, "verdicts need an admin key");
    let after = risk_of(&app, SAFE).await;
    assert!(after > before, "risk {before} -> {after} after an insecure verdict");
    let judged = review(&app, "?status=insecure").await;
    assert_eq!(judged.len(), 1);
    assert_eq!(judged[0]["note"], "leaks prices");
    app.stop().await;

    // The verdict is in the log, with the features to train on.
    let store =
        guardrank::store::open(&format!("sqlite://{}", d.path().join("guardrank.db").display()), Default::default())
            .await
            .expect("store");
    let events = store.read_events(0, 100_000).await.expect("events");
    let verdicts: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::ReviewVerdict(v) => Some(v),
            _ => None,
        })
        .collect();
    assert_eq!(verdicts.len(), 1);
    assert_eq!((verdicts[0].item_id, verdicts[0].verdict), (id, Verdict::Insecure));
    assert!(!verdicts[0].features.is_empty());
}

#[tokio::test]
async fn a_report_queues_the_candidate_without_its_text_unless_retained() {
    let d = tempfile::tempdir().expect("tempdir");
    let mut settings = test_settings(d.path());
    settings.review_band_low = 0.99;
    settings.review_band_high = 0.99;
    let app = TestApp::start(settings).await;
    let (_, r) = app.rank("carol", &[("a", SAFE), ("b", SQL_PARAM)]).await;
    let rid = r["request_id"].as_str().expect("request id");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(review(&app, "").await.is_empty(), "nothing blocked, nothing uncertain: {r}");
    let (s, v) = app.feedback(json!({"request_id": rid, "candidate_id": "a", "outcome": "reported_insecure"})).await;
    assert_eq!(s, 200, "{v}");
    eventually("the reported candidate queued", || async { review(&app, "").await.len() == 1 }).await;
    let items = review(&app, "").await;
    assert_eq!((items[0]["reason"].as_str(), items[0]["candidate_id"].as_str()), (Some("reported"), Some("a")));
    assert!(items[0].get("text").is_none(), "no text without retain_text: {}", items[0]);
    app.stop().await;
}

#[tokio::test]
async fn rule_patches_are_checked_block_at_once_monitor_disable_and_survive_restarts() {
    let d = tempfile::tempdir().expect("tempdir");
    let app = TestApp::start(test_settings(d.path())).await;
    let unpatched = risk_of(&app, VAULT).await;

    // Refused unless its own examples pass, naming the example.
    let mut broken = vault_rule("enforce");
    broken["examples"]["secure"] = json!(["blob = legacy_vault.seal_ecb(k, d)"]);
    let (s, v) = app.admin(Method::POST, "/admin/rules", Some(broken)).await;
    assert_eq!(s, 422, "{v}");
    assert!(v["detail"].as_str().is_some_and(|d| d.contains("legacy_vault.seal_ecb(k, d)")), "{v}");
    let mut bad_pattern = vault_rule("enforce");
    bad_pattern["patterns"] = json!(["(unclosed"]);
    let (s, v) = app.admin(Method::POST, "/admin/rules", Some(bad_pattern)).await;
    assert_eq!(s, 422, "{v}");
    let (s, _) = app.call(Method::POST, "/admin/rules", Some(PLUGIN), Some(vault_rule("enforce"))).await;
    assert_eq!(s, 403);

    // Monitor mode: findings, no effect on risk.
    let (s, v) = app.admin(Method::POST, "/admin/rules", Some(vault_rule("monitor"))).await;
    assert_eq!(s, 200, "{v}");
    let (_, r) = app.rank("dave", &[("v", VAULT)]).await;
    let c = candidate(&r, "v");
    assert_eq!(c["findings"][0]["rule_id"], "python.crypto.legacy-vault-ecb", "{r}");
    assert_eq!(c["findings"][0]["mode"], "monitor");
    assert_eq!(c["risk"].as_f64(), Some(unpatched), "monitor rules do not raise the risk");

    // Enforced: a new critical rule blocks the next request, without training.
    let (s, v) = app.admin(Method::POST, "/admin/rules", Some(vault_rule("enforce"))).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["replaced"], true);
    let (_, r) = app.rank("dave", &[("v", VAULT)]).await;
    assert_eq!(candidate(&r, "v")["blocked"], true, "{r}");
    let (_, rules) = app.admin(Method::GET, "/admin/rules", None).await;
    let listed = rules["rules"].as_array().expect("rules");
    assert!(listed.len() > 100, "built-in rules are listed too");
    let patched = listed.iter().find(|x| x["id"] == "python.crypto.legacy-vault-ecb").expect("patched rule");
    assert_eq!(patched["source"], "patched");
    assert!(listed.iter().any(|x| x["source"] == "builtin"));
    app.stop().await;

    // A restart on the same data keeps the patch (replayed or restored from the log).
    let app = TestApp::start(test_settings(d.path())).await;
    let (_, r) = app.rank("dave", &[("v", VAULT)]).await;
    assert_eq!(candidate(&r, "v")["blocked"], true, "after a restart: {r}");

    // Disabled: no finding, the old risk.
    let (s, v) = app.admin(Method::DELETE, "/admin/rules/python.crypto.legacy-vault-ecb", None).await;
    assert_eq!(s, 200, "{v}");
    let (_, r) = app.rank("dave", &[("v", VAULT)]).await;
    assert_eq!(candidate(&r, "v")["findings"], json!([]), "{r}");
    assert_eq!(candidate(&r, "v")["risk"].as_f64(), Some(unpatched));
    let (s, _) = app.admin(Method::DELETE, "/admin/rules/python.crypto.legacy-vault-ecb", None).await;
    assert_eq!(s, 404, "disabled already");
    let (_, rules) = app.admin(Method::GET, "/admin/rules", None).await;
    assert_eq!(rules["disabled"][0]["rule_id"], "python.crypto.legacy-vault-ecb", "{}", rules["disabled"]);
    app.stop().await;
    let app = TestApp::start(test_settings(d.path())).await;
    let (_, r) = app.rank("dave", &[("v", VAULT)]).await;
    assert_eq!(candidate(&r, "v")["findings"], json!([]), "still disabled after a restart: {r}");
    app.stop().await;
}

#[tokio::test]
async fn audit_lists_admin_actions_newest_first_and_metrics_show_oversight() {
    let d = tempfile::tempdir().expect("tempdir");
    let mut settings = wide_band(d.path());
    // The upkeep that sets the gauges runs with compaction; only this test's server runs it
    // often (the metrics recorder is shared by every server of the process).
    settings.compaction_interval_s = 0.2;
    let app = TestApp::start(settings).await;
    let (s, _) = app.admin(Method::POST, "/admin/keys", Some(json!({"scope": "plugin"}))).await;
    assert_eq!(s, 201);
    let (s, _) = app.admin(Method::POST, "/admin/rules", Some(vault_rule("monitor"))).await;
    assert_eq!(s, 200);
    // An accepted candidate later judged insecure: an incident.
    let (_, r) = app.rank("erin", &[("ok", SAFE)]).await;
    let rid = r["request_id"].as_str().expect("request id");
    let (s, _) = app.feedback(json!({"request_id": rid, "candidate_id": "ok", "outcome": "accepted"})).await;
    assert_eq!(s, 200);
    eventually("queued", || async { review(&app, "?user=erin").await.len() == 1 }).await;
    let id = review(&app, "?user=erin").await[0]["id"].as_i64().expect("id");
    let (s, _) = app.admin(Method::POST, &format!("/admin/review/{id}"), Some(json!({"verdict": "insecure"}))).await;
    assert_eq!(s, 200);
    let (s, _) = app.admin(Method::DELETE, "/admin/rules/python.crypto.legacy-vault-ecb", None).await;
    assert_eq!(s, 200);

    let (s, v) = app.admin(Method::GET, "/admin/audit?limit=100", None).await;
    assert_eq!(s, 200, "{v}");
    let actions: Vec<&str> =
        v["items"].as_array().expect("items").iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(actions, ["rule.disable", "review.verdict", "rule.patch", "key.create"], "newest first");
    assert!(v["items"].as_array().expect("items").iter().all(|e| e["key_id"].as_str().is_some_and(|k| !k.is_empty())));
    assert!(!v.to_string().contains(ADMIN), "never the key");
    let (_, page) = app.admin(Method::GET, "/admin/audit?limit=1", None).await;
    assert_eq!(page["items"][0]["action"], "rule.disable");
    let (s, _) = app.admin(Method::GET, "/admin/audit?limit=9999", None).await;
    assert_eq!(s, 422);

    let (_, doc) = app.call(Method::GET, "/openapi.json", None, None).await;
    for path in ["/admin/review", "/admin/review/{id}", "/admin/rules", "/admin/rules/{rule_id}", "/admin/audit"] {
        assert!(doc["paths"].get(path).is_some(), "{path} is in the OpenAPI document");
    }

    let (s, m) = app.admin(Method::GET, "/metrics", None).await;
    assert_eq!(s, 200);
    let m = m.as_str().unwrap_or_default().to_string();
    for name in ["guardrank_rule_patches_total", "guardrank_review_verdicts_total", "guardrank_review_items_total"] {
        assert!(m.contains(name), "{name} missing");
    }
    eventually("the oversight gauges", || async {
        let (_, m) = app.admin(Method::GET, "/metrics", None).await;
        let m = m.as_str().unwrap_or_default().to_string();
        let rate = m
            .lines()
            .find(|l| l.starts_with("guardrank_incident_rate_per_10k"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|x| x.parse::<f64>().ok());
        m.contains("guardrank_review_items{status=\"insecure\"}") && rate.is_some_and(|r| r > 0.0)
    })
    .await;
    app.stop().await;
}
