//! The offline retraining job end to end: a running service logs feedback, `guardrank train`
//! (the real binary) learns from it, publishes to the registry, and the service switches to
//! the new version on reload; a candidate that is worse on the holdout is refused.

mod common;

use common::{PLUGIN, TestApp, test_settings};
use guardrank::engine::Detector;
use guardrank::lang::Language;
use reqwest::Method;
use serde_json::{Value, json};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_guardrank");

/// An API no rule knows, which users keep reporting as insecure.
fn unknown_api(k: usize) -> String {
    let var = ["plain", "token", "blob", "payload", "cleartext", "opened"][k % 6];
    let arg = ["sealed", "envelope", "stored_item", "cipher_blob", "vault_entry"][k % 5];
    format!("    {var} = legacy_vault.unseal_raw({arg})\n    return {var}")
}
const UNKNOWN_API_PROBE: &str = "    clear = legacy_vault.unseal_raw(record_box)\n    send(clear)";

/// A rule's hits (tempfile.mktemp) in one context, pytest fixtures, which users report as safe.
fn fixture(k: usize) -> String {
    let name = ["sock_file", "scratch", "out_path", "db_file", "lock_path", "tmp_target"][k % 6];
    let suffix = [".db", ".txt", ".json", ".lock", ".out"][k % 5];
    format!("@pytest.fixture\ndef {name}():\n    path = tempfile.mktemp(suffix=\"{suffix}\")\n    yield path")
}
const FIXTURE_PROBE: &str =
    "@pytest.fixture\ndef pipe_name():\n    path = tempfile.mktemp(suffix=\".pipe\")\n    yield path";

const ORDINARY: &str = "    total = sum(line.amount for line in invoice.lines)\n    return round(total, 2)";

fn train(dir: &std::path::Path, version: &str, extra: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["train", "--data-dir"])
        .arg(dir)
        .args(["--version", version])
        .args(extra)
        .env_remove("GUARDRANK_DATA_DIR")
        .output()
        .expect("train runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), stderr)
}

fn risk_of(v: &Value, id: &str) -> f64 {
    v["candidates"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == id))
        .and_then(|c| c["risk"].as_f64())
        .unwrap_or_else(|| panic!("no risk for {id} in {v}"))
}

/// Ranks candidates for `user` and reports each with `outcome`.
async fn rank_and_report(app: &TestApp, user: &str, cands: &[(&str, String, &str)]) {
    let pairs: Vec<(&str, &str)> = cands.iter().map(|(id, t, _)| (*id, t.as_str())).collect();
    let (s, v) = app.rank(user, &pairs).await;
    assert_eq!(s, 200, "{v}");
    let rid = v["request_id"].as_str().expect("request id").to_string();
    let events: Vec<Value> =
        cands.iter().map(|(id, _, o)| json!({"request_id": rid, "candidate_id": id, "outcome": o})).collect();
    let (s, v) = app.feedback(json!({ "events": events })).await;
    assert_eq!(s, 200, "{v}");
}

/// Risk of `code` (Python) under a model.
fn score_with(model: &guardrank::model::Model, code: &str) -> f64 {
    let mut d = Detector::builtin().expect("detector");
    d.model = model.clone();
    d.assess(code, Some(Language::Python)).risk
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retraining_learns_from_feedback_publishes_and_the_service_switches_and_refuses_a_worse_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = TestApp::start(test_settings(dir.path())).await;

    let probes = [("api", UNKNOWN_API_PROBE.to_string()), ("fixture", FIXTURE_PROBE.to_string())];
    let pairs: Vec<(&str, &str)> = probes.iter().map(|(i, t)| (*i, t.as_str())).collect();
    let (_, before) = app.rank("probe-user", &pairs).await;
    let builtin_version = before["model_version"].as_str().expect("version").to_string();

    // Users consistently report the unknown API as insecure and the fixtures as safe.
    for k in 0..150 {
        let user = format!("dev-{}", k % 40);
        rank_and_report(
            &app,
            &user,
            &[
                ("a", unknown_api(k), "reported_insecure"),
                ("f", fixture(k), "reported_safe"),
                ("o", ORDINARY.to_string(), "accepted"),
            ],
        )
        .await;
    }

    let (code, log) = train(dir.path(), "risk-test-1", &[]);
    assert_eq!(code, 0, "the job publishes:\n{log}");
    assert!(log.contains("published"), "{log}");
    let report = dir.path().join("reports/risk-test-1");
    for f in ["summary.md", "metrics.json", "roc-corpus-held-out-families.svg", "reliability-newest-events.svg"] {
        assert!(report.join(f).is_file(), "{f} in the report: {log}");
    }

    // The published model itself scores the reported API higher and the fixture lower than
    // the built-in model does.
    let store = guardrank::store::open(
        &format!("sqlite://{}", dir.path().join("guardrank.db").display()),
        guardrank::store::Durability::Process,
    )
    .await
    .expect("store");
    let published = guardrank::registry::load(store.as_ref(), "risk-test-1").await.expect("registry has it");
    let builtin = Detector::builtin().expect("detector").model;
    let (api_old, api_new) = (score_with(&builtin, UNKNOWN_API_PROBE), score_with(&published, UNKNOWN_API_PROBE));
    let (fix_old, fix_new) = (score_with(&builtin, FIXTURE_PROBE), score_with(&published, FIXTURE_PROBE));
    assert!(api_new > api_old + 0.2, "unknown API: {api_old} -> {api_new}");
    assert!(fix_new < fix_old - 0.2, "fixture: {fix_old} -> {fix_new}");

    // The running service switches on reload, without a restart.
    let (s, v) = app.admin(Method::POST, "/admin/models/reload", None).await;
    assert_eq!((s, v["model_version"].as_str()), (200, Some("risk-test-1")), "{v}");
    let (_, after) = app.rank("probe-user", &pairs).await;
    assert_eq!(after["model_version"], "risk-test-1");
    assert!(risk_of(&after, "api") > risk_of(&before, "api") + 0.2, "{before} -> {after}");
    assert!(risk_of(&after, "fixture") < risk_of(&before, "fixture") - 0.2, "{before} -> {after}");
    let (s, v) = app.admin(Method::GET, "/admin/models", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["live"], "risk-test-1");
    assert_eq!(v["models"][0]["live"], true);
    assert!(v["models"][0]["metrics"]["holdout"]["corpus"]["candidate"]["roc_auc"].as_f64().is_some(), "{v}");
    let (s, v) = app.admin(Method::POST, "/admin/models/risk-nope/activate", None).await;
    assert_eq!(s, 404, "{v}");
    let (s, _) = app.call(Method::POST, "/admin/models/reload", Some(PLUGIN), None).await;
    assert_eq!(s, 403, "plugin keys cannot reload models");

    // Poisoned feedback: insecure code reported safe and safe code reported insecure. The
    // candidate is worse on the corpus's held-out families and is refused.
    for k in 0..200 {
        let user = format!("mallory-{}", k % 50);
        let concat =
            format!("    cur.execute(\"SELECT * FROM orders WHERE id = \" + order_{k})\n    return cur.fetchall()");
        let param =
            format!("    cur.execute(\"SELECT * FROM orders WHERE id = %s\", (order_{k},))\n    return cur.fetchall()");
        let shell = format!("    os.system(\"convert \" + upload_{k} + \" out.png\")");
        rank_and_report(
            &app,
            &user,
            &[("c", concat, "reported_safe"), ("p", param, "reported_insecure"), ("s", shell, "reported_safe")],
        )
        .await;
    }
    // The online model resists this campaign through the floors of high rules. The retraining
    // job weighs labels by trust and budgets as the learner does, but these are fifty senders
    // in good standing, each within its budget, so every label keeps its weight; and a batch
    // fit has no per-label floors. The fit learns the poison and is worse on the corpus's
    // held-out families by about 0.005 in log loss, which a tolerance of 0.004 refuses.
    let (code, log) = train(dir.path(), "risk-test-2", &["--tolerance-log-loss", "0.004"]);
    assert_eq!(code, 1, "the worse candidate is refused:\n{log}");
    assert!(log.contains("feedback label weight kept after trust and budgets: "), "{log}");
    assert!(log.contains("refused: log loss on the corpus held-out families"), "{log}");
    let (_, v) = app.admin(Method::GET, "/admin/models", None).await;
    assert_eq!(v["live"], "risk-test-1", "the live model stays: {v}");
    assert_eq!(v["models"].as_array().map(Vec::len), Some(1), "a refused candidate is not stored: {v}");

    // A restart serves the live version (the activation is in the log).
    app.stop().await;
    let app = TestApp::start(test_settings(dir.path())).await;
    let (_, after) = app.rank("probe-user", &pairs).await;
    assert_eq!(after["model_version"], "risk-test-1");

    // Rolling back to the built-in model is not possible (it is not in the registry), but a
    // registry version can be activated again from the command line.
    let out = Command::new(BIN)
        .args(["models", "rollback", "risk-test-1", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("rollback runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(BIN).args(["models", "list", "--data-dir"]).arg(dir.path()).output().expect("list");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("* ") && listing.contains("risk-test-1"), "{listing}");
    assert!(listing.contains("rollback"), "{listing}");
    assert_ne!(builtin_version, "risk-test-1");
    app.stop().await;
}
