//! The reviewer console: its page and assets over HTTP, its figures endpoint, and the page
//! itself driven in a real headless Chromium over WebDriver.
//!
//! The browser tests print "skipped: ..." and return when chromium or chromedriver is missing
//! (`.ci/run` installs both). The verdict and rules tests also skip while the server lacks
//! their routes (`GET /admin/review`, `GET /admin/rules` answering 404).

mod common;
#[path = "common/webdriver.rs"]
mod webdriver;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};
use webdriver::Browser;

/// One browser at a time: the machine is small and each test starts its own.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A shell injection through `os.system`, blocked at the default threshold.
const OS_SYSTEM: &str = "    os.system(\"ping -c 1 \" + request.args[\"host\"])";

async fn browser_or_skip(test: &str) -> Option<Browser> {
    match Browser::start().await {
        Ok(b) => Some(b),
        Err(why) => {
            println!("skipped: {test}: {why}");
            None
        }
    }
}

#[tokio::test]
async fn console_page_and_assets_are_served_under_a_strict_csp() {
    let d = tempfile::tempdir().expect("tempdir");
    let app = TestApp::start(test_settings(d.path())).await;
    for (path, ctype) in
        [("/console", "text/html"), ("/console/app.js", "text/javascript"), ("/console/app.css", "text/css")]
    {
        let r = app.client.get(app.url(path)).send().await.expect("send");
        assert_eq!(r.status(), 200, "{path} loads without a key");
        let h = |name: &str| r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        assert!(h("content-type").starts_with(ctype), "{path}: {}", h("content-type"));
        let csp = h("content-security-policy");
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
        assert_eq!(h("x-content-type-options"), "nosniff");
        let body = r.text().await.expect("body");
        if path == "/console" {
            // No inline script: every script element has a src from this origin.
            assert_eq!(body.matches("<script").count(), body.matches("<script src=\"/console/").count(), "{body}");
            assert!(!body.contains("http://") && !body.contains("https://"), "no CDN or remote asset");
        }
    }
    let (_, doc) = app.call(Method::GET, "/openapi.json", None, None).await;
    assert!(doc["paths"]["/console"]["get"].is_object() && doc["paths"]["/admin/figures"]["get"].is_object());
    app.stop().await;
}

#[tokio::test]
async fn figures_count_requests_blocks_and_decisions_risky_versus_safe() {
    let d = tempfile::tempdir().expect("tempdir");
    let app = TestApp::start(test_settings(d.path())).await;
    let (s, _) = app.call(Method::GET, "/admin/figures", None, None).await;
    assert_eq!(s, 401);
    let (s, _) = app.call(Method::GET, "/admin/figures", Some(PLUGIN), None).await;
    assert_eq!(s, 403);

    let (s, r) = app.rank("carol", &[("bad", OS_SYSTEM), ("good", SAFE)]).await;
    assert_eq!(s, 200, "{r}");
    let blocked =
        |id: &str| r["candidates"].as_array().into_iter().flatten().any(|c| c["id"] == id && c["blocked"] == true);
    assert!(blocked("bad") && !blocked("good"), "{r}");
    let rid = r["request_id"].as_str().expect("request id");
    let events = json!({"events": [
        {"request_id": rid, "candidate_id": "bad", "outcome": "rejected"},
        {"request_id": rid, "candidate_id": "good", "outcome": "accepted"}]});
    let (s, v) = app.feedback(events).await;
    assert_eq!(s, 200, "{v}");

    let mut f = Value::Null;
    for _ in 0..300 {
        let (s, v) = app.admin(Method::GET, "/admin/figures", None).await;
        assert_eq!(s, 200, "{v}");
        f = v;
        if f["totals"]["accepted_safe"] == 1 && f["totals"]["rejected_risky"] == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The learner counted the decisions under the same lock as it updated the policy.
    let policy = app.policy("carol").await;
    let temperature = policy["temperature"].as_f64().expect("temperature");
    assert!(temperature < 0.8, "rejecting risky code lowers the temperature: {policy}");
    assert_eq!(f["totals"]["rank_requests"], 1, "{f}");
    assert_eq!(f["totals"]["candidates"], 2, "{f}");
    assert_eq!(f["totals"]["blocked"], 1, "{f}");
    assert_eq!(f["block_rate"], 0.5, "{f}");
    assert_eq!(f["acceptance_rate_risky"], 0.0, "{f}");
    assert_eq!(f["acceptance_rate_safe"], 1.0, "{f}");
    assert_eq!(f["users"], 1, "{f}");
    let movers = f["temperature_movers"].as_array().expect("movers");
    assert_eq!(movers.len(), 1, "{f}");
    assert_eq!(movers[0]["user_id"], "carol");
    assert!((movers[0]["temperature"].as_f64().unwrap_or(0.0) - temperature).abs() < 1e-9, "{f}");
    assert!(movers[0]["change"].as_f64().is_some_and(|c| c < 0.0), "{f}");
    let (_, models) = app.admin(Method::GET, "/admin/models", None).await;
    assert_eq!(f["model_version"], models["served"]);

    // A policy reset forgets the user.
    let (s, _) = app.admin(Method::POST, "/admin/users/carol/policy/reset", None).await;
    assert_eq!(s, 200);
    let (_, f) = app.admin(Method::GET, "/admin/figures", None).await;
    assert_eq!(f["temperature_movers"], json!([]), "{f}");
    app.stop().await;
}

/// Opens the console and submits `key` on the login form.
async fn sign_in(b: &Browser, key: &str) {
    b.wait_until("the login form", "return !!document.getElementById('admin-key')", json!([])).await;
    let input = b.find("#admin-key").await;
    b.clear(&input).await;
    b.type_into(&input, key).await;
    let button = b.find("#login-button").await;
    b.click(&button).await;
}

#[tokio::test]
async fn browser_login_refuses_a_wrong_key_and_shows_the_model_version() {
    let _one = BROWSER.lock().await;
    let Some(b) = browser_or_skip("browser_login_refuses_a_wrong_key_and_shows_the_model_version").await else {
        return;
    };
    let d = tempfile::tempdir().expect("tempdir");
    let app = TestApp::start(test_settings(d.path())).await;
    b.goto(&app.url("/console")).await;
    // The script ran under the CSP (served from /console/app.js, nothing inline).
    b.wait_until("the script to run", "return document.documentElement.dataset.console === 'ready'", json!([])).await;

    sign_in(&b, "not-the-admin-key-0123456789abcdef0123").await;
    b.wait_until("the login error", "return !document.getElementById('login-error').hidden", json!([])).await;
    let error = b.text(&b.find("#login-error").await).await;
    assert!(error.contains("401"), "{error}");
    let stored = b.script("return sessionStorage.getItem('guardrank.admin_key')", json!([])).await;
    assert_eq!(stored, Value::Null, "a refused key is not kept");
    // A plugin key is refused too: the console is for admins.
    sign_in(&b, PLUGIN).await;
    b.wait_until("the 403", "return document.getElementById('login-error').textContent.includes('403')", json!([]))
        .await;

    sign_in(&b, ADMIN).await;
    b.wait_until("the signed-in header", "return !document.getElementById('whoami').hidden", json!([])).await;
    let (_, models) = app.admin(Method::GET, "/admin/models", None).await;
    let served = models["served"].as_str().expect("served version");
    assert_eq!(b.text(&b.find("#model-version").await).await, served);
    assert!(b.script("return document.getElementById('login').hidden", json!([])).await == true);

    // The figures view draws from /admin/figures.
    app.rank("dave", &[("x", OS_SYSTEM)]).await;
    let tab = b.find("button[data-view='figures']").await;
    b.click(&tab).await;
    b.wait_until(
        "the figures",
        "return document.getElementById('fig-model').textContent === arguments[0] \
         && document.getElementById('fig-requests').textContent === '1' \
         && !!document.querySelector('#spark-requests svg path')",
        json!([served]),
    )
    .await;
    assert_eq!(b.text(&b.find("#fig-block-rate").await).await, "100.0 %");

    // The key survives a reload of the tab (sessionStorage) and is gone after logging out.
    b.goto(&app.url("/console")).await;
    b.wait_until("signed in after reload", "return !document.getElementById('whoami').hidden", json!([])).await;
    b.click(&b.find("#logout").await).await;
    let stored = b.script("return sessionStorage.getItem('guardrank.admin_key')", json!([])).await;
    assert_eq!(stored, Value::Null);
    b.quit().await;
    app.stop().await;
}

#[tokio::test]
async fn browser_reviewer_records_a_verdict_and_the_item_leaves_the_queue() {
    let test = "browser_reviewer_records_a_verdict_and_the_item_leaves_the_queue";
    let _one = BROWSER.lock().await;
    let d = tempfile::tempdir().expect("tempdir");
    let mut settings = test_settings(d.path());
    settings.retain_text = true;
    let app = TestApp::start(settings).await;
    let (s, v) = app.admin(Method::GET, "/admin/review?status=pending&limit=50", None).await;
    if s == 404 {
        println!("skipped: {test}: this server has no review queue yet (GET /admin/review answers 404: {v})");
        app.stop().await;
        return;
    }
    assert_eq!(s, 200, "{v}");
    let Some(b) = browser_or_skip(test).await else {
        app.stop().await;
        return;
    };

    let (s, r) = app.rank("mallory", &[("shell", OS_SYSTEM), ("ok", SAFE)]).await;
    assert_eq!(s, 200, "{r}");
    let rid = r["request_id"].as_str().expect("request id").to_string();
    assert!(
        r["candidates"].as_array().into_iter().flatten().any(|c| c["id"] == "shell" && c["blocked"] == true),
        "{r}"
    );
    let mut item_id = String::new();
    for _ in 0..300 {
        let (_, v) = app.admin(Method::GET, "/admin/review?status=pending&limit=50", None).await;
        if let Some(i) = v["items"].as_array().into_iter().flatten().find(|i| i["request_id"] == rid.as_str()) {
            item_id = match &i["id"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!item_id.is_empty(), "the blocked candidate never reached the review queue");

    b.goto(&app.url("/console")).await;
    sign_in(&b, ADMIN).await;
    let has_item = "return [...document.querySelectorAll('li.item')].some(e => e.dataset.id === arguments[0])";
    b.wait_until("the item in the queue", has_item, json!([item_id])).await;
    // The finding is highlighted in the code, on the os.system call.
    let marked = b
        .script(
            "const li = [...document.querySelectorAll('li.item')].find(e => e.dataset.id === arguments[0]); \
             return [...li.querySelectorAll('mark.finding')].map(m => m.textContent).join('|')",
            json!([item_id]),
        )
        .await;
    assert!(marked.as_str().is_some_and(|m| m.contains("os.system")), "highlighted: {marked}");
    // Select it with the mouse, then judge it with the keyboard.
    let item = Browser::element_of(
        &b.script(
            "return [...document.querySelectorAll('li.item')].find(e => e.dataset.id === arguments[0])",
            json!([item_id]),
        )
        .await,
    )
    .expect("item element");
    b.click(&item).await;
    b.press("i").await;
    b.wait_until(
        "the item to leave the queue",
        "return ![...document.querySelectorAll('li.item')].some(e => e.dataset.id === arguments[0])",
        json!([item_id]),
    )
    .await;
    let status = b.text(&b.find("#queue-status").await).await;
    assert!(status.contains("insecure"), "{status}");

    // The verdict is recorded: the item is no longer pending, and it is judged insecure.
    let (_, v) = app.admin(Method::GET, "/admin/review?status=pending&limit=50", None).await;
    let still = v["items"].as_array().into_iter().flatten().any(|i| i["request_id"] == rid.as_str());
    assert!(!still, "{v}");
    let (s, judged) = app.admin(Method::GET, "/admin/review?status=insecure&limit=50", None).await;
    let listed = s == 200 && judged["items"].as_array().into_iter().flatten().any(|i| i["request_id"] == rid.as_str());
    let (_, audit) = app.admin(Method::GET, "/admin/audit?limit=100", None).await;
    assert!(listed || audit.to_string().contains(&item_id), "verdict recorded: {judged} / {audit}");
    b.quit().await;
    app.stop().await;
}

#[tokio::test]
async fn browser_rules_view_shows_a_refusal_saves_a_rule_and_disables_it() {
    let test = "browser_rules_view_shows_a_refusal_saves_a_rule_and_disables_it";
    let _one = BROWSER.lock().await;
    let d = tempfile::tempdir().expect("tempdir");
    let app = TestApp::start(test_settings(d.path())).await;
    let (s, v) = app.admin(Method::GET, "/admin/rules", None).await;
    if s == 404 {
        println!("skipped: {test}: this server has no rule routes yet (GET /admin/rules answers 404: {v})");
        app.stop().await;
        return;
    }
    assert_eq!(s, 200, "{v}");
    let Some(b) = browser_or_skip(test).await else {
        app.stop().await;
        return;
    };
    b.goto(&app.url("/console")).await;
    sign_in(&b, ADMIN).await;
    b.wait_until("signed in", "return !document.getElementById('whoami').hidden", json!([])).await;
    b.click(&b.find("button[data-view='rules']").await).await;
    let has_row =
        "return [...document.querySelectorAll('#rules-table tbody tr')].some(e => e.dataset.id === arguments[0])";
    b.wait_until("the built-in rules", has_row, json!(["python.cmd.os-system-interpolated"])).await;

    // A rule whose insecure example does not match is refused; the 422's detail is shown.
    let id = "python.crypto.legacy-vault-ecb";
    let mut rule = json!({"id": id, "languages": ["python"], "cwe": "CWE-327", "severity": "high",
        "message": "legacy_vault.seal_ecb uses ECB mode", "patterns": ["legacy_vault\\.seal_ecb\\("], "unless": [],
        "examples": {"insecure": ["blob = legacy_vault.seal_gcm(key, data)"], "secure": ["blob = vault.seal_gcm(key, data)"]}});
    let editor = b.find("#rule-json").await;
    b.clear(&editor).await;
    b.type_into(&editor, &rule.to_string()).await;
    b.click(&b.find("#rule-save").await).await;
    b.wait_until("the refusal", "return !document.getElementById('rule-error').hidden", json!([])).await;
    let error = b.text(&b.find("#rule-error").await).await;
    assert!(error.contains("422") && error.contains("seal_gcm"), "{error}");
    let (_, v) = app.admin(Method::GET, "/admin/rules", None).await;
    assert!(!v.to_string().contains(id), "a refused rule is not active: {v}");

    // Fixed, it is saved, listed and active over the API.
    rule["examples"]["insecure"] = json!(["blob = legacy_vault.seal_ecb(key, data)"]);
    b.clear(&editor).await;
    b.type_into(&editor, &rule.to_string()).await;
    b.click(&b.find("#rule-save").await).await;
    b.wait_until("the new rule listed", has_row, json!([id])).await;
    let (_, v) = app.admin(Method::GET, "/admin/rules", None).await;
    assert!(v["rules"].as_array().into_iter().flatten().any(|r| r["id"] == id), "{v}");

    // Disabled from its row (after the confirmation), it leaves the active list.
    let button = Browser::element_of(
        &b.script(
            "return [...document.querySelectorAll('#rules-table tbody tr')].find(e => e.dataset.id === arguments[0]) \
             .querySelector('button.danger')",
            json!([id]),
        )
        .await,
    )
    .expect("disable button");
    b.click(&button).await;
    b.accept_alert().await;
    b.wait_until(
        "the rule to leave the list",
        "return ![...document.querySelectorAll('#rules-table tbody tr')].some(e => e.dataset.id === arguments[0])",
        json!([id]),
    )
    .await;
    let (_, v) = app.admin(Method::GET, "/admin/rules", None).await;
    assert!(!v["rules"].as_array().into_iter().flatten().any(|r| r["id"] == id), "{v}");
    b.quit().await;
    app.stop().await;
}
