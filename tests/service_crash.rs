//! Durability and replay, with the real binary: SIGKILL under feedback load loses no
//! acknowledged event, and state rebuilt from the log equals the live state.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_guardrank");
const ADMIN: &str = "crash-admin-key-0123456789abcdef0123456789";
const PLUGIN: &str = "crash-plugin-key-0123456789abcdef012345678";

struct Server {
    child: Child,
    base: String,
}

fn start(data: &Path, extra_env: &[(&str, &str)]) -> Server {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env("GUARDRANK_ADMIN_KEY", ADMIN)
        .env("GUARDRANK_PLUGIN_KEY", PLUGIN)
        .env("GUARDRANK_LOG_LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("server starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("listening line");
    let base = line.trim().strip_prefix("guardrank listening on ").expect("listening line format").to_string();
    Server { child, base }
}

async fn ready(client: &reqwest::Client, base: &str) {
    for _ in 0..500 {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("server never became ready");
}

async fn rank(client: &reqwest::Client, base: &str, user: &str) -> String {
    let body = json!({"user_id": user, "language": "python", "candidates": [
        {"id": "a", "text": "os.system('ping -c 1 ' + request.args['host'])"},
        {"id": "b", "text": "subprocess.run(['ping', '-c', '1', host], check=True)"}]});
    let r: Value = client
        .post(format!("{base}/v1/rank"))
        .bearer_auth(PLUGIN)
        .json(&body)
        .send()
        .await
        .expect("rank")
        .json()
        .await
        .expect("json");
    r["request_id"].as_str().expect("rid").to_string()
}

async fn state(client: &reqwest::Client, base: &str) -> Value {
    client
        .get(format!("{base}/admin/state"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("state")
        .json()
        .await
        .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_feedback_load_loses_no_acknowledged_event() {
    let d = tempfile::tempdir().expect("tempdir");
    let client = reqwest::Client::new();
    let mut server = start(d.path(), &[]);
    ready(&client, &server.base).await;
    let mut rids = Vec::new();
    for i in 0..200 {
        rids.push(rank(&client, &server.base, &format!("user-{}", i % 7)).await);
    }
    let acked: Arc<Mutex<Vec<Value>>> = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (client, base, acked) = (client.clone(), server.base.clone(), Arc::clone(&acked));
        let mine: Vec<String> = rids.iter().skip(w).step_by(8).cloned().collect();
        tasks.push(tokio::spawn(async move {
            for rid in mine {
                for (cand, outcome) in [("a", "rejected"), ("b", "accepted")] {
                    let ev = json!({"request_id": rid, "candidate_id": cand, "outcome": outcome});
                    match client.post(format!("{base}/v1/feedback")).bearer_auth(PLUGIN).json(&ev).send().await {
                        Ok(r) if r.status() == 200 => acked.lock().expect("lock").push(ev),
                        _ => return,
                    }
                }
            }
        }));
    }
    // Kill mid-load.
    tokio::time::sleep(Duration::from_millis(150)).await;
    server.child.kill().expect("SIGKILL");
    let _ = server.child.wait();
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() > 10, "some feedback was acknowledged before the kill ({})", acked.len());

    let mut again = start(d.path(), &[]);
    ready(&client, &again.base).await;
    let r: Value = client
        .post(format!("{}/v1/feedback", again.base))
        .bearer_auth(PLUGIN)
        .json(&json!({"events": acked}))
        .send()
        .await
        .expect("resend")
        .json()
        .await
        .expect("json");
    assert_eq!(r["recorded"], 0, "every acknowledged event survived: {r}");
    assert_eq!(r["duplicates"].as_u64(), Some(acked.len() as u64));
    again.child.kill().expect("kill");
    let _ = again.child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_rebuilt_from_the_log_equals_the_live_state() {
    let d = tempfile::tempdir().expect("tempdir");
    let client = reqwest::Client::new();
    // No periodic snapshots: a restart after SIGKILL replays the whole log.
    let env = [("GUARDRANK_SNAPSHOT_EVERY", "100000000")];
    let mut server = start(d.path(), &env);
    ready(&client, &server.base).await;
    for i in 0..60 {
        let rid = rank(&client, &server.base, &format!("u{}", i % 5)).await;
        let outcome = ["rejected", "reported_insecure", "accepted"][i % 3];
        let ev = json!({"events": [{"request_id": rid, "candidate_id": "a", "outcome": outcome},
                                   {"request_id": rid, "candidate_id": "b", "outcome": "accepted"}]});
        let r =
            client.post(format!("{}/v1/feedback", server.base)).bearer_auth(PLUGIN).json(&ev).send().await.expect("fb");
        assert_eq!(r.status(), 200);
    }
    // Quiesce: wait until the learner applied everything committed.
    let mut live = Value::Null;
    for _ in 0..200 {
        let a = state(&client, &server.base).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let b = state(&client, &server.base).await;
        if a == b && a["users"] == 5 {
            live = b;
            break;
        }
    }
    assert!(live["state_checksum"].is_string(), "state settled: {live}");
    server.child.kill().expect("SIGKILL");
    let _ = server.child.wait();

    let mut replayed = start(d.path(), &env);
    ready(&client, &replayed.base).await;
    let rebuilt = state(&client, &replayed.base).await;
    assert_eq!(rebuilt["state_checksum"], live["state_checksum"], "replay gives the same weights and policies");
    assert_eq!(rebuilt["applied_seq"], live["applied_seq"]);

    // A graceful stop snapshots; a restart from the snapshot gives the same state again.
    let pid = replayed.child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let _ = replayed.child.wait();
    let mut from_snapshot = start(d.path(), &env);
    ready(&client, &from_snapshot.base).await;
    let s = state(&client, &from_snapshot.base).await;
    assert_eq!(s["state_checksum"], live["state_checksum"]);
    from_snapshot.child.kill().expect("kill");
    let _ = from_snapshot.child.wait();
}
