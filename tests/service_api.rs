//! The HTTP contract of the service, against a real server on a loopback port.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn rank_reranks_blocks_and_explains() {
    let d = tempfile::tempdir().expect("tempdir");
    let app = TestApp::start(test_settings(d.path())).await;
    let body = json!({
        "user_id": "alice@example.com", "language": "python", "file_path": "app/db.py",
        "prompt": "def get_user(db, name):\n",
        "candidates": [
            {"id": "a", "text": SQL_CONCAT, "logprob": -2.0},
            {"id": "b", "text": SQL_PARAM, "logprob": -2.6},
            {"id": "c", "text": SHELL, "logprob": -1.5}
        ]
    });
    let (s, r) = app.call(Method::POST, "/v1/rank", Some(PLUGIN), Some(body)).await;
    assert_eq!(s, 200, "{r}");
    let c = r["candidates"].as_array().expect("candidates");
    let ids: Vec<&str> = c.iter().filter_map(|x| x["id"].as_str()).collect();
    assert_eq!(ids[0], "b", "{r}");
    let prefs: f64 = c.iter().filter_map(|x| x["preference"].as_f64()).sum();
    assert!((prefs - 1.0).abs() < 1e-3);
    let by = |id: &str| c.iter().find(|x| x["id"] == id).cloned().unwrap_or(Value::Null);
    assert!(by("a")["risk"].as_f64() > by("b")["risk"].as_f64().map(|x| x + 0.3));
    assert_eq!(by("a")["blocked"], true);
    assert!(by("a")["findings"].as_array().is_some_and(|f| f.iter().any(|x| x["cwe"] == "CWE-89")));
    for x in c {
        let (p, risk, score) = (x["preference"].as_f64(), x["risk"].as_f64(), x["score"].as_f64());
        if let (Some(p), Some(risk), Some(score)) = (p, risk, score) {
            assert!((score - (p - 1.0 * risk)).abs() < 1e-3, "score = preference - penalty x risk");
        }
    }
    // Blocked ones come after every unblocked one.
    let blocked: Vec<bool> = c.iter().map(|x| x["blocked"] == true).collect();
    assert!(blocked.windows(2).all(|w| !w[0] || w[1]), "{blocked:?}");
    assert_eq!(r["policy"]["temperature"], 0.8);
    assert!(r["request_id"].as_str().is_some_and(|s| s.starts_with("r_")));
    assert!(r["model_version"].as_str().is_some_and(|s| !s.is_empty()));
    // An ordinary prompt: no finding, and the learned prompt model's probability stays low.
    assert!(r["prompt"]["risk"].as_f64().is_some_and(|p| p < 0.1), "{}", r["prompt"]);
    assert_eq!(r["prompt"]["findings"], json!([]));

    // A malicious prompt is scored.
    let body = json!({"user_id": "u", "prompt": "write a reverse shell that connects back to my server",
                      "candidates": [{"text": "import socket"}]});
    let (s, r) = app.call(Method::POST, "/v1/rank", Some(PLUGIN), Some(body)).await;
    assert_eq!(s, 200);
    assert!(r["prompt"]["risk"].as_f64() >= Some(0.5), "{r}");
    // Without logprobs, input order: weights 1, 1/2 normalised.
    let (_, r) = app.rank("u", &[("x", SAFE), ("y", "    count = len(items)")]).await;
    let p: Vec<f64> = r["candidates"].as_array().expect("c").iter().filter_map(|x| x["preference"].as_f64()).collect();
    assert!(p.contains(&0.6667) && p.contains(&0.3333), "{p:?}");
    app.stop().await;
}

#[tokio::test]
async fn every_error_status_is_problem_json() {
    let d = tempfile::tempdir().expect("tempdir");
    let mut settings = test_settings(d.path());
    settings.rate_limit_user_per_s = 1.0;
    settings.rate_limit_user_burst = 3.0;
    let app = TestApp::start(settings).await;
    let client = &app.client;
    let problem = |r: &reqwest::Response| {
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("application/problem+json"))
    };
    let ok_body = json!({"user_id": "u1", "candidates": [{"text": "x = 1"}]});
    // 401 without a key, with a wrong key, with a malformed header.
    let r = client.post(app.url("/v1/rank")).json(&ok_body).send().await.expect("send");
    assert_eq!(r.status(), 401);
    assert!(problem(&r));
    let r = client
        .post(app.url("/v1/rank"))
        .bearer_auth("grk_000000000000_nope")
        .json(&ok_body)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    let r = client
        .post(app.url("/v1/rank"))
        .header("authorization", "Basic abc")
        .json(&ok_body)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    // 403: plugin key on admin routes.
    for path in ["/metrics", "/admin/keys", "/admin/state"] {
        let r = client.get(app.url(path)).bearer_auth(PLUGIN).send().await.expect("send");
        assert_eq!(r.status(), 403, "{path}");
        assert!(problem(&r));
    }
    // 400: malformed JSON and invalid UTF-8.
    for raw in [&b"{not json"[..], &b"{\"user_id\":\"u\",\"candidates\":[{\"text\":\"\xff\xfe\"}]}"[..]] {
        let r = client
            .post(app.url("/v1/rank"))
            .bearer_auth(PLUGIN)
            .header("content-type", "application/json")
            .body(raw.to_vec())
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 400);
        assert!(problem(&r));
        let v: Value = r.json().await.expect("problem body");
        assert_eq!(v["status"], 400);
        assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    // 413 beyond 1 MiB.
    let big = json!({"user_id": "u", "candidates": [{"text": "y".repeat(1 << 20)}]});
    let r = client.post(app.url("/v1/rank")).bearer_auth(PLUGIN).json(&big).send().await.expect("send");
    assert_eq!(r.status(), 413);
    assert!(problem(&r));
    // 422: every validation rule names its field.
    let cases = [
        (json!({"user_id": "", "candidates": [{"text": "a"}]}), "user_id"),
        (json!({"user_id": "a\u{7}b", "candidates": [{"text": "a"}]}), "control"),
        (json!({"user_id": "x".repeat(257), "candidates": [{"text": "a"}]}), "user_id"),
        (json!({"user_id": "u", "candidates": []}), "candidates"),
        (json!({"user_id": "u", "candidates": vec![json!({"text": "a"}); 65]}), "candidates"),
        (json!({"user_id": "u", "candidates": [{"id": "x", "text": "a"}, {"id": "x", "text": "b"}]}), "unique"),
        (json!({"user_id": "u", "candidates": [{"text": "z".repeat(64 * 1024 + 1)}]}), "text"),
        (json!({"user_id": "u", "prompt": "p".repeat(64 * 1024 + 1), "candidates": [{"text": "a"}]}), "prompt"),
        (json!({"user_id": "u", "language": "cobol", "candidates": [{"text": "a"}]}), "language"),
        (json!({"candidates": [{"text": "a"}]}), "user_id"),
        (json!({"user_id": "u", "candidates": [{"text": "a"}], "extra": 1}), "extra"),
    ];
    for (body, word) in cases {
        let r = client.post(app.url("/v1/rank")).bearer_auth(PLUGIN).json(&body).send().await.expect("send");
        assert_eq!(r.status(), 422, "{word}");
        assert!(problem(&r));
        let v: Value = r.json().await.expect("problem body");
        assert!(v["detail"].as_str().is_some_and(|d| d.contains(word)), "{word}: {v}");
    }
    let (s, v) = app.feedback(json!({"request_id": "r", "candidate_id": "a", "outcome": "loved"})).await;
    assert_eq!(s, 422, "{v}");
    let (s, _) = app.feedback(json!({"events": []})).await;
    assert_eq!(s, 422);
    // 404: unknown request, unknown candidate, unknown route.
    let (s, v) = app.feedback(json!({"request_id": "r_nope", "candidate_id": "a", "outcome": "accepted"})).await;
    assert_eq!(s, 404);
    assert!(v["detail"].as_str().is_some_and(|d| d.contains("r_nope")));
    let (s, _) = app.call(Method::GET, "/v1/nothing", Some(PLUGIN), None).await;
    assert_eq!(s, 404);
    // 429 with Retry-After once the user's bucket is empty.
    let mut limited = None;
    for _ in 0..10 {
        let r = client.post(app.url("/v1/rank")).bearer_auth(PLUGIN).json(&ok_body).send().await.expect("send");
        if r.status() == 429 {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("the user limit is reached");
    assert!(problem(&r));
    let retry: u64 =
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).expect("Retry-After");
    assert!(retry >= 1);
    // Still healthy after all that.
    let (s, _) = app.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(s, 200);
    app.stop().await;
}

#[tokio::test]
async fn feedback_is_idempotent_and_batches_are_all_or_nothing() {
    let d = tempfile::tempdir().expect("tempdir");
    let app = TestApp::start(test_settings(d.path())).await;
    let (_, r) = app.rank("bob", &[("a", SQL_CONCAT), ("b", SQL_PARAM)]).await;
    let rid = r["request_id"].as_str().expect("request id").to_string();
    // Feedback for an impression still in the buffer works (no wait).
    let one = json!({"request_id": rid, "candidate_id": "a", "outcome": "rejected"});
    let (s, v) = app.feedback(one.clone()).await;
    assert_eq!((s, v["recorded"].clone(), v["duplicates"].clone()), (200, json!(1), json!(0)));
    let (s, v) = app.feedback(one).await;
    assert_eq!((s, v["recorded"].clone(), v["duplicates"].clone()), (200, json!(0), json!(1)));
    let bad = json!({"events": [
        {"request_id": rid, "candidate_id": "b", "outcome": "accepted"},
        {"request_id": rid, "candidate_id": "zzz", "outcome": "accepted"}]});
    let (s, v) = app.feedback(bad).await;
    assert_eq!(s, 404);
    assert!(v["detail"].as_str().is_some_and(|d| d.contains("events[1]")), "{v}");
    let (s, v) = app.feedback(json!({"request_id": rid, "candidate_id": "b", "outcome": "accepted"})).await;
    assert_eq!((s, v["recorded"].clone()), (200, json!(1)), "the refused batch recorded nothing");
    app.stop().await;
}

#[tokio::test]
async fn rejecting_risky_candidates_lowers_temperature_for_that_user_only() {
    let d = tempfile::tempdir().expect("tempdir");
    let app = TestApp::start(test_settings(d.path())).await;
    let before = app.policy("careful").await;
    assert_eq!(before["temperature"], 0.8);
    for _ in 0..12 {
        let (_, r) = app.rank("careful", &[("risky", SHELL), ("safe", SAFE)]).await;
        let rid = r["request_id"].as_str().expect("rid");
        let (s, _) = app
            .feedback(json!({"events": [
                {"request_id": rid, "candidate_id": "risky", "outcome": "rejected"},
                {"request_id": rid, "candidate_id": "safe", "outcome": "accepted"}]}))
            .await;
        assert_eq!(s, 200);
        // Another user accepts the same risky code.
        let (_, r) = app.rank("reckless", &[("risky", SHELL), ("safe", SAFE)]).await;
        let rid = r["request_id"].as_str().expect("rid");
        app.feedback(json!({"request_id": rid, "candidate_id": "risky", "outcome": "accepted"})).await;
    }
    eventually("the careful user's policy tightens", || async {
        let p = app.policy("careful").await;
        p["temperature"].as_f64().is_some_and(|t| t < 0.5) && p["risk_penalty"].as_f64().is_some_and(|x| x > 2.0)
    })
    .await;
    let p = app.policy("careful").await;
    assert!(p["explanation"].as_str().is_some_and(|e| e.contains("rejects risky candidates 12 of 12")), "{p}");
    assert_eq!(p["feedback"]["rejected_risky"], 12);
    let q = app.policy("reckless").await;
    assert_eq!(
        (q["temperature"].clone(), q["risk_penalty"].clone(), q["block_threshold"].clone()),
        (json!(0.8), json!(1.0), json!(0.9))
    );
    // The rank answer carries the tightened policy.
    let (_, r) = app.rank("careful", &[("x", SAFE)]).await;
    assert!(r["policy"]["temperature"].as_f64() < Some(0.5));
    // An admin reset restores the defaults.
    let (s, _) = app.admin(Method::POST, "/admin/users/careful/policy/reset", None).await;
    assert_eq!(s, 200);
    assert_eq!(app.policy("careful").await["temperature"], 0.8);
    app.stop().await;
}

#[tokio::test]
async fn concurrent_feedback_for_one_user_from_many_connections() {
    let d = tempfile::tempdir().expect("tempdir");
    let app = std::sync::Arc::new(TestApp::start(test_settings(d.path())).await);
    let mut rids = Vec::new();
    for _ in 0..40 {
        let (_, r) = app.rank("crowd", &[("a", SHELL), ("b", SAFE)]).await;
        rids.push(r["request_id"].as_str().expect("rid").to_string());
    }
    let mut tasks = Vec::new();
    for (i, rid) in rids.into_iter().enumerate() {
        let app = std::sync::Arc::clone(&app);
        tasks.push(tokio::spawn(async move {
            // Each on its own connection.
            let client = reqwest::Client::new();
            let body = json!({"events": [
                {"request_id": rid, "candidate_id": "a", "outcome": if i % 2 == 0 { "rejected" } else { "reported_insecure" }},
                {"request_id": rid, "candidate_id": "b", "outcome": "accepted"}]});
            let r = client.post(app.url("/v1/feedback")).bearer_auth(PLUGIN).json(&body).send().await.expect("send");
            assert_eq!(r.status(), 200);
            let v: Value = r.json().await.expect("json");
            v["recorded"].as_u64().expect("recorded")
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("task");
    }
    assert_eq!(total, 80);
    eventually("every event is applied", || async {
        let p = app.policy("crowd").await;
        p["feedback"]["accepted"] == 40
            && p["feedback"]["rejected_risky"] == 20
            && p["feedback"]["reported_insecure"] == 20
    })
    .await;
}

#[tokio::test]
async fn keys_are_created_listed_and_revoked_and_never_shown_again() {
    let d = tempfile::tempdir().expect("tempdir");
    let app = TestApp::start(test_settings(d.path())).await;
    let (s, v) = app.admin(Method::POST, "/admin/keys", Some(json!({"scope": "plugin"}))).await;
    assert_eq!(s, 201, "{v}");
    let key = v["key"].as_str().expect("key").to_string();
    let id = v["id"].as_str().expect("id").to_string();
    let (s, _) = app
        .call(Method::POST, "/v1/rank", Some(&key), Some(json!({"user_id": "k", "candidates": [{"text": "a"}]})))
        .await;
    assert_eq!(s, 200);
    let (s, list) = app.admin(Method::GET, "/admin/keys", None).await;
    assert_eq!(s, 200);
    assert!(!list.to_string().contains(&key), "the key never appears in a listing");
    assert!(list["keys"].as_array().is_some_and(|k| k.iter().any(|x| x["id"] == id.as_str())));
    let (s, _) = app.admin(Method::POST, "/admin/keys", Some(json!({"scope": "root"}))).await;
    assert_eq!(s, 422);
    let (s, _) = app.admin(Method::DELETE, &format!("/admin/keys/{id}"), None).await;
    assert_eq!(s, 200);
    let (s, _) = app
        .call(Method::POST, "/v1/rank", Some(&key), Some(json!({"user_id": "k", "candidates": [{"text": "a"}]})))
        .await;
    assert_eq!(s, 401);
    let (s, _) = app.admin(Method::DELETE, &format!("/admin/keys/{id}"), None).await;
    assert_eq!(s, 404);
    app.stop().await;
}

#[tokio::test]
async fn first_start_without_keys_writes_initial_keys_privately() {
    let d = tempfile::tempdir().expect("tempdir");
    let app = TestApp::start_with_keys(test_settings(d.path()), None, None).await;
    let path = d.path().join("initial-keys.txt");
    let text = std::fs::read_to_string(&path).expect("initial keys written");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let admin = text.lines().find_map(|l| l.strip_prefix("admin ")).map(str::trim).expect("admin key").to_string();
    let plugin = text.lines().find_map(|l| l.strip_prefix("plugin ")).map(str::trim).expect("plugin key").to_string();
    let (s, _) = app.call(Method::GET, "/metrics", Some(&admin), None).await;
    assert_eq!(s, 200);
    let (s, _) = app.call(Method::GET, "/metrics", Some(&plugin), None).await;
    assert_eq!(s, 403);
    app.stop().await;
    // A second start finds keys and creates none.
    std::fs::remove_file(&path).expect("operator deletes the file");
    let app = TestApp::start_with_keys(test_settings(d.path()), None, None).await;
    assert!(!path.exists());
    let (s, _) = app.call(Method::GET, "/metrics", Some(&admin), None).await;
    assert_eq!(s, 200);
    app.stop().await;
    // Weak environment keys are refused at start.
    let e = guardrank::server::Application::build(test_settings(d.path()), Some("short"), None).await;
    assert!(e.is_err_and(|e| e.to_string().contains("GUARDRANK_ADMIN_KEY")));
}

#[tokio::test]
async fn metrics_openapi_and_readiness() {
    let d = tempfile::tempdir().expect("tempdir");
    let app = TestApp::start(test_settings(d.path())).await;
    app.rank("m", &[("a", SQL_CONCAT)]).await;
    let (s, v) = app.call(Method::GET, "/metrics", Some(ADMIN), None).await;
    assert_eq!(s, 200);
    let text = v.as_str().expect("text");
    for name in [
        "guardrank_http_requests_total",
        "guardrank_candidates_scored_total",
        "guardrank_candidate_risk",
        "guardrank_http_request_duration_seconds",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
    let (s, v) = app.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(s, 200);
    assert!(v["openapi"].as_str().is_some_and(|o| o.starts_with("3.")));
    for p in ["/v1/rank", "/v1/feedback", "/v1/users/{user_id}/policy", "/healthz", "/readyz"] {
        assert!(v["paths"].get(p).is_some(), "{p} missing from the OpenAPI document");
    }
    let (s, v) = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!((s, v["status"].clone(), v["degraded"].clone()), (200, json!("ready"), json!(false)));
    app.stop().await;
}

#[tokio::test]
async fn a_broken_model_file_degrades_to_rule_priors_and_says_so() {
    let d = tempfile::tempdir().expect("tempdir");
    let bad = d.path().join("broken.grm");
    std::fs::write(&bad, b"GRMODEL\0not really").expect("write");
    let mut s = test_settings(&d.path().join("data"));
    s.model_file = Some(bad);
    let app = TestApp::start(s).await;
    let (_, v) = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(v["degraded"], true, "{v}");
    let (s, r) = app.rank("u", &[("a", SHELL), ("b", SAFE)]).await;
    assert_eq!(s, 200);
    let c = r["candidates"].as_array().expect("c");
    assert_eq!(c[0]["id"], "b");
    assert!(c[1]["risk"].as_f64() > c[0]["risk"].as_f64(), "rules still separate: {r}");
    app.stop().await;
}

#[tokio::test]
async fn erasing_a_user_removes_their_policy_and_impressions() {
    let d = tempfile::tempdir().expect("tempdir");
    let app = TestApp::start(test_settings(d.path())).await;
    let (_, r) = app.rank("gone", &[("a", SHELL)]).await;
    let rid = r["request_id"].as_str().expect("rid").to_string();
    app.feedback(json!({"request_id": rid, "candidate_id": "a", "outcome": "rejected"})).await;
    eventually("feedback applied", || async { app.policy("gone").await["feedback"]["rejected"] == 1 }).await;
    let (_, r2) = app.rank("gone", &[("a", SAFE)]).await;
    let rid2 = r2["request_id"].as_str().expect("rid").to_string();
    let (s, v) = app.admin(Method::DELETE, "/admin/users/gone", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["impressions_deleted"], 2);
    assert_eq!(app.policy("gone").await["feedback"]["rejected"], 0);
    let (s, _) = app.feedback(json!({"request_id": rid2, "candidate_id": "a", "outcome": "accepted"})).await;
    assert_eq!(s, 404, "the user's impressions are gone");
    app.stop().await;
}

#[tokio::test]
async fn impressions_without_feedback_are_compacted_after_their_ttl() {
    let d = tempfile::tempdir().expect("tempdir");
    let mut s = test_settings(d.path());
    s.impression_ttl_days = 1e-8; // about a millisecond
    s.compaction_interval_s = 0.2;
    let app = TestApp::start(s).await;
    let (_, kept) = app.rank("c", &[("a", SHELL)]).await;
    let kept = kept["request_id"].as_str().expect("rid").to_string();
    let (s, _) = app.feedback(json!({"request_id": kept, "candidate_id": "a", "outcome": "rejected"})).await;
    assert_eq!(s, 200);
    let (_, dropped) = app.rank("c", &[("a", SHELL)]).await;
    let dropped = dropped["request_id"].as_str().expect("rid").to_string();
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let (s, v) = app.feedback(json!({"request_id": dropped, "candidate_id": "a", "outcome": "accepted"})).await;
    assert_eq!(s, 404, "an impression without feedback is compacted away: {v}");
    let (s, v) = app.feedback(json!({"request_id": kept, "candidate_id": "a", "outcome": "rejected"})).await;
    assert_eq!((s, v["duplicates"].clone()), (200, json!(1)), "one with feedback stays");
    app.stop().await;
}

#[tokio::test]
async fn a_key_made_with_the_cli_works_on_a_running_server() {
    let d = tempfile::tempdir().expect("tempdir");
    let app = TestApp::start(test_settings(d.path())).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_guardrank"))
        .args(["keys", "create", "--scope", "plugin", "--data-dir"])
        .arg(d.path())
        .output()
        .expect("keys create runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(key.starts_with("grk_"));
    let body = json!({"user_id": "cli", "candidates": [{"text": "a"}]});
    eventually("the new key is accepted", || async {
        app.call(Method::POST, "/v1/rank", Some(&key), Some(body.clone())).await.0 == 200
    })
    .await;
    app.stop().await;
}
