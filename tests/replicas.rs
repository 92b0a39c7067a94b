//! Scale-out: two server processes on one PostgreSQL share the log and converge.
//! Needs GUARDRANK_TEST_DATABASE_URL (set by .ci/run); without it the test says it was skipped.

use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_guardrank");
const ADMIN: &str = "replica-admin-key-0123456789abcdef01234567";
const PLUGIN: &str = "replica-plugin-key-0123456789abcdef0123456";

struct Replica {
    child: Child,
    base: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(store: &str, data: &std::path::Path) -> Replica {
    let mut child = Command::new(BIN)
        .args(["serve", "--addr", "127.0.0.1:0", "--store", store, "--data-dir"])
        .arg(data)
        .env("GUARDRANK_ADMIN_KEY", ADMIN)
        .env("GUARDRANK_PLUGIN_KEY", PLUGIN)
        .env("GUARDRANK_LOG_LEVEL", "warn")
        .env("GUARDRANK_IMPRESSION_FLUSH_MS", "10")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("replica starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("listening line");
    let base = line.trim().strip_prefix("guardrank listening on ").expect("listening line").to_string();
    Replica { child, base }
}

async fn get(client: &reqwest::Client, url: String, key: &str) -> (u16, Value) {
    let r = client.get(url).bearer_auth(key).send().await.expect("get");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn ready(client: &reqwest::Client, r: &Replica) {
    for _ in 0..500 {
        if get(client, format!("{}/readyz", r.base), ADMIN).await.0 == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("replica never became ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_log_and_converge() {
    let Ok(db) = std::env::var("GUARDRANK_TEST_DATABASE_URL") else {
        eprintln!("skipped: GUARDRANK_TEST_DATABASE_URL not set");
        return;
    };
    let schema = format!("gr_replicas_{:016x}", rand::random::<u64>());
    let sep = if db.contains('?') { '&' } else { '?' };
    let store = format!("{db}{sep}schema={schema}");
    let dirs = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let a = start(&store, dirs.0.path());
    let client = reqwest::Client::new();
    ready(&client, &a).await;
    let b = start(&store, dirs.1.path());
    ready(&client, &b).await;

    // Rank on A, give feedback through B: B finds A's impressions in the shared store.
    let mut rids = Vec::new();
    for _ in 0..10 {
        let body = json!({"user_id": "shared-user", "language": "python", "candidates": [
            {"id": "risky", "text": "os.system('convert ' + request.args['f'])"},
            {"id": "safe", "text": "total = sum(values)"}]});
        let r: Value = client
            .post(format!("{}/v1/rank", a.base))
            .bearer_auth(PLUGIN)
            .json(&body)
            .send()
            .await
            .expect("rank")
            .json()
            .await
            .expect("json");
        rids.push(r["request_id"].as_str().expect("rid").to_string());
    }
    tokio::time::sleep(Duration::from_millis(100)).await; // A's impression buffer is flushed
    let events: Vec<Value> = rids
        .iter()
        .flat_map(|rid| {
            [
                json!({"request_id": rid, "candidate_id": "risky", "outcome": "rejected"}),
                json!({"request_id": rid, "candidate_id": "safe", "outcome": "accepted"}),
            ]
        })
        .collect();
    let sent = Instant::now();
    let r = client
        .post(format!("{}/v1/feedback", b.base))
        .bearer_auth(PLUGIN)
        .json(&json!({"events": events}))
        .send()
        .await
        .expect("fb");
    assert_eq!(r.status(), 200, "feedback on B for A's requests");
    let mut changed = None;
    while sent.elapsed() < Duration::from_secs(2) {
        let (_, p) = get(&client, format!("{}/v1/users/shared-user/policy", a.base), PLUGIN).await;
        if p["temperature"].as_f64().is_some_and(|t| t < 0.8) {
            changed = Some(sent.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = changed.expect("A's policy changed within 2 s of B's commit");
    eprintln!("feedback through B reached A's policy in {took:?}");

    // A key revoked on A stops working on B.
    let (_, created) = {
        let r = client
            .post(format!("{}/admin/keys", a.base))
            .bearer_auth(ADMIN)
            .json(&json!({"scope": "plugin"}))
            .send()
            .await
            .expect("create");
        (r.status(), r.json::<Value>().await.expect("json"))
    };
    let key = created["key"].as_str().expect("key").to_string();
    let id = created["id"].as_str().expect("id").to_string();
    let rank_b = |k: String| {
        let (client, base) = (client.clone(), b.base.clone());
        async move {
            client
                .post(format!("{base}/v1/rank"))
                .bearer_auth(k)
                .json(&json!({"user_id": "k", "candidates": [{"text": "x = 1"}]}))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    let t = Instant::now();
    while rank_b(key.clone()).await != 200 && t.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rank_b(key.clone()).await, 200, "a key made on A works on B");
    client.delete(format!("{}/admin/keys/{id}", a.base)).bearer_auth(ADMIN).send().await.expect("revoke");
    let t = Instant::now();
    while rank_b(key.clone()).await != 401 && t.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rank_b(key.clone()).await, 401, "a key revoked on A is refused on B within the tail interval");

    // After quiescence both replicas have learned the same thing.
    let mut same = false;
    for _ in 0..100 {
        let (_, sa) = get(&client, format!("{}/admin/state", a.base), ADMIN).await;
        let (_, sb) = get(&client, format!("{}/admin/state", b.base), ADMIN).await;
        if sa["state_checksum"] == sb["state_checksum"] && sa["applied_seq"] == sb["applied_seq"] {
            same = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(same, "both replicas converge on the same weights and policies");
    drop(a);
    drop(b);
    if let Ok(mut conn) = PgConnection::connect(&db).await {
        let _ = sqlx::query(AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))).execute(&mut conn).await;
    }
}

async fn post(client: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    let r = client.post(url).bearer_auth(ADMIN).json(&body).send().await.expect("post");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// The first candidate's `(blocked, finding rule ids)` of a rank on `base`.
async fn vault_on(client: &reqwest::Client, base: &str) -> (bool, Vec<String>) {
    let body = json!({"user_id": "v", "language": "python",
                      "candidates": [{"id": "v", "text": "blob = legacy_vault.seal_ecb(key, data)"}]});
    let (_, r) = post(client, format!("{base}/v1/rank"), body).await;
    let c = &r["candidates"][0];
    let ids = c["findings"]
        .as_array()
        .map_or_else(Vec::new, |f| f.iter().filter_map(|x| x["rule_id"].as_str().map(str::to_string)).collect());
    (c["blocked"] == true, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_patched_on_one_replica_is_live_on_the_other_within_the_tail_interval() {
    let Ok(db) = std::env::var("GUARDRANK_TEST_DATABASE_URL") else {
        eprintln!("skipped: GUARDRANK_TEST_DATABASE_URL not set");
        return;
    };
    let schema = format!("gr_rules_{:016x}", rand::random::<u64>());
    let sep = if db.contains('?') { '&' } else { '?' };
    let store = format!("{db}{sep}schema={schema}");
    let dirs = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let a = start(&store, dirs.0.path());
    let client = reqwest::Client::new();
    ready(&client, &a).await;
    let b = start(&store, dirs.1.path());
    ready(&client, &b).await;
    let rule_id = "python.crypto.legacy-vault-ecb";
    assert!(!vault_on(&client, &b.base).await.1.contains(&rule_id.to_string()));

    let rule = json!({"id": rule_id, "languages": ["python"], "cwe": "CWE-327", "severity": "critical",
        "message": "legacy_vault.seal_ecb uses ECB mode", "patterns": ["legacy_vault\\.seal_ecb\\("],
        "examples": {"insecure": ["blob = legacy_vault.seal_ecb(key, data)"], "secure": ["blob = vault.seal_gcm(key, data)"]}});
    let (s, v) = post(&client, format!("{}/admin/rules", a.base), rule).await;
    assert_eq!(s, 200, "{v}");
    let t = Instant::now();
    while !vault_on(&client, &b.base).await.0 && t.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(vault_on(&client, &b.base).await.0, "a rule patched on A blocks on B within the tail interval");
    eprintln!("rule patched on A blocked on B after {:?}", t.elapsed());

    // The queue is shared: B's blocked candidate is on A's list.
    let queued = || async {
        let (_, q) = get(&client, format!("{}/admin/review?status=pending&rule={rule_id}", a.base), ADMIN).await;
        q["items"].as_array().is_some_and(|i| !i.is_empty())
    };
    let t = Instant::now();
    while !queued().await && t.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(queued().await, "a candidate blocked on B is in the queue A lists");

    let r = client.delete(format!("{}/admin/rules/{rule_id}", b.base)).bearer_auth(ADMIN).send().await;
    assert_eq!(r.expect("delete").status(), 200);
    let t = Instant::now();
    while vault_on(&client, &a.base).await.1.contains(&rule_id.to_string()) && t.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!vault_on(&client, &a.base).await.1.contains(&rule_id.to_string()), "disabled on B, gone on A");
    drop(a);
    drop(b);
    if let Ok(mut conn) = PgConnection::connect(&db).await {
        let _ = sqlx::query(AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))).execute(&mut conn).await;
    }
}
