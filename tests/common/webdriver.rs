//! A minimal W3C WebDriver client over reqwest, driving Debian's `chromium` headless through
//! `chromedriver`. Enough for the console tests: navigate, find, click, type, press keys,
//! run a script.
#![allow(dead_code)]

use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The key under which WebDriver returns element references.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Finds an executable on `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// A browser session; the browser and the driver go away on drop.
pub struct Browser {
    http: reqwest::Client,
    base: String,
    session: String,
    driver: Child,
    profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless chromium session, or says why it cannot (so the
    /// caller can skip).
    pub async fn start() -> Result<Browser, String> {
        let driver_bin =
            which("chromedriver").ok_or("chromedriver is not installed (apt-get install chromium-driver)")?;
        let chromium = ["chromium", "chromium-browser", "google-chrome"]
            .into_iter()
            .find_map(which)
            .ok_or("chromium is not installed (apt-get install chromium)")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("chromedriver did not start: {e}"))?;
        let profile = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut b = Browser {
            http: reqwest::Client::new(),
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            driver,
            profile,
        };
        let mut ready = false;
        for _ in 0..100 {
            if let Ok(r) = b.http.get(format!("{}/status", b.base)).send().await
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !ready {
            return Err("chromedriver never became ready".into());
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.to_string_lossy(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,1000", format!("--user-data-dir={}", b.profile.path().display())]
            }
        }}});
        let r = b.http.post(format!("{}/session", b.base)).json(&caps).send().await.map_err(|e| e.to_string())?;
        let v: Value = r.json().await.map_err(|e| e.to_string())?;
        let id = v["value"]["sessionId"].as_str().ok_or_else(|| format!("no session: {v}"))?;
        b.session = id.to_string();
        Ok(b)
    }

    /// One WebDriver command; panics (failing the test) on a WebDriver error.
    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{}", self.base, self.session, path);
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("webdriver answers");
        let v: Value = resp.json().await.expect("webdriver json");
        assert!(v["value"]["error"].is_null(), "webdriver {path}: {v}");
        v["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns its value.
    pub async fn script(&self, script: &str, args: Value) -> Value {
        self.cmd(reqwest::Method::POST, "/execute/sync", Some(json!({"script": script, "args": args}))).await
    }

    /// Polls `script` until it returns true; panics with `what` after 10 s.
    pub async fn wait_until(&self, what: &str, script: &str, args: Value) {
        for _ in 0..100 {
            if self.script(script, args.clone()).await == true {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let body = self.script("return document.body.innerText", json!([])).await;
        panic!("timed out waiting for: {what}\npage text:\n{}", body.as_str().unwrap_or_default());
    }

    /// The element matching a CSS selector.
    pub async fn find(&self, css: &str) -> String {
        let v = self.cmd(reqwest::Method::POST, "/element", Some(json!({"using": "css selector", "value": css}))).await;
        v[ELEMENT].as_str().expect("element reference").to_string()
    }

    /// An element reference returned by a script (`return someElement`).
    pub fn element_of(v: &Value) -> Option<String> {
        v[ELEMENT].as_str().map(str::to_string)
    }

    pub async fn click(&self, element: &str) {
        self.cmd(reqwest::Method::POST, &format!("/element/{element}/click"), Some(json!({}))).await;
    }

    pub async fn clear(&self, element: &str) {
        self.cmd(reqwest::Method::POST, &format!("/element/{element}/clear"), Some(json!({}))).await;
    }

    pub async fn type_into(&self, element: &str, text: &str) {
        self.cmd(reqwest::Method::POST, &format!("/element/{element}/value"), Some(json!({ "text": text }))).await;
    }

    pub async fn text(&self, element: &str) -> String {
        let v = self.cmd(reqwest::Method::GET, &format!("/element/{element}/text"), None).await;
        v.as_str().unwrap_or_default().to_string()
    }

    /// Presses and releases one key on whatever has the focus, as a user would.
    pub async fn press(&self, key: &str) {
        let actions = json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
            {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}]}]});
        self.cmd(reqwest::Method::POST, "/actions", Some(actions)).await;
    }

    /// Accepts the open `confirm()` dialog.
    pub async fn accept_alert(&self) {
        self.cmd(reqwest::Method::POST, "/alert/accept", Some(json!({}))).await;
    }

    /// Ends the session (closes the browser).
    pub async fn quit(mut self) {
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = self.http.delete(url).send().await;
        self.session.clear();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            // A failed test: close the browser with a plain blocking request before the driver goes.
            use std::io::{Read, Write};
            let addr = self.base.trim_start_matches("http://").to_string();
            if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let req =
                    format!("DELETE /session/{} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n", self.session);
                let _ = s.write_all(req.as_bytes());
                let _ = s.read_to_end(&mut Vec::new());
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
