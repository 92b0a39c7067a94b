//! Helpers for the service tests: a real server on 127.0.0.1:0 with its own data directory,
//! talked to over HTTP.
#![allow(dead_code)]

use guardrank::server::settings::Settings;
use guardrank::server::{Application, flag_shutdown};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

pub const ADMIN: &str = "test-admin-key-0123456789abcdef0123456789";
pub const PLUGIN: &str = "test-plugin-key-0123456789abcdef012345678";

pub const SQL_CONCAT: &str = "    return db.execute(\"SELECT * FROM users WHERE name = '\" + name + \"'\")";
pub const SQL_PARAM: &str = "    return db.execute(\"SELECT * FROM users WHERE name = ?\", (name,))";
pub const SHELL: &str = "    subprocess.call('tar czf /tmp/out.tgz ' + request.args['dir'], shell=True)";
pub const SAFE: &str = "    total = sum(item.price for item in cart.items)\n    return total";

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub data_dir: PathBuf,
    stop: Arc<Notify>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Settings for a test server: its own data directory, port 0, fast flushes.
pub fn test_settings(data_dir: &Path) -> Settings {
    let mut s = Settings::load(None, &BTreeMap::new()).expect("default settings");
    s.addr = "127.0.0.1:0".parse().expect("addr");
    s.data_dir = data_dir.to_path_buf();
    s.impression_flush_ms = 10;
    // Many servers start in one test run; each builds only the matchers it uses.
    s.warm_rules = false;
    s
}

impl TestApp {
    pub async fn start(settings: Settings) -> TestApp {
        TestApp::start_with_keys(settings, Some(ADMIN), Some(PLUGIN)).await
    }

    pub async fn start_with_keys(settings: Settings, admin: Option<&str>, plugin: Option<&str>) -> TestApp {
        let data_dir = settings.data_dir.clone();
        let app = Application::build(settings, admin, plugin).await.expect("server builds");
        let addr = app.addr();
        let stop = Arc::new(Notify::new());
        let task = tokio::spawn({
            let stop = Arc::clone(&stop);
            async move {
                app.run(flag_shutdown(stop)).await.expect("server runs");
            }
        });
        let t = TestApp { addr, client: reqwest::Client::new(), data_dir, stop, task: Some(task) };
        t.wait_ready().await;
        t
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn wait_ready(&self) {
        for _ in 0..500 {
            if let Ok(r) = self.client.get(self.url("/readyz")).send().await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("server never became ready");
    }

    /// Graceful shutdown: drains, commits, snapshots.
    pub async fn stop(mut self) {
        self.stop.notify_one();
        if let Some(t) = self.task.take() {
            t.await.expect("server task");
        }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.client.request(method, self.url(path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn rank(&self, user: &str, candidates: &[(&str, &str)]) -> (u16, Value) {
        let cands: Vec<Value> = candidates.iter().map(|(id, text)| json!({"id": id, "text": text})).collect();
        let body = json!({"user_id": user, "language": "python", "candidates": cands});
        self.call(reqwest::Method::POST, "/v1/rank", Some(PLUGIN), Some(body)).await
    }

    pub async fn feedback(&self, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, "/v1/feedback", Some(PLUGIN), Some(body)).await
    }

    pub async fn policy(&self, user: &str) -> Value {
        let (s, v) = self.call(reqwest::Method::GET, &format!("/v1/users/{user}/policy"), Some(PLUGIN), None).await;
        assert_eq!(s, 200, "{v}");
        v
    }

    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(method, path, Some(ADMIN), body).await
    }

    pub async fn checksum(&self) -> Value {
        let (s, v) = self.admin(reqwest::Method::GET, "/admin/state", None).await;
        assert_eq!(s, 200, "{v}");
        v
    }
}

/// Polls `f` until it returns true or the time runs out.
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..300 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}
