//! A real browser for the console's tests: Debian's headless Chromium driven
//! through chromedriver's W3C WebDriver protocol (plain JSON over HTTP on
//! loopback), and a static file server (Python's `http.server`) for the page.
//! Every wait that times out first writes a screenshot of the page into the test's
//! screenshot folder and names it in the panic.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{free_port, tool, wait_port, Proc};

/// The W3C WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A folder served over HTTP on 127.0.0.1.
pub struct StaticServer {
    pub port: u16,
    pub proc: Proc,
}

impl StaticServer {
    pub fn start(root: &Path, log: &Path) -> Self {
        let port = free_port();
        let mut cmd = Command::new(tool("python3"));
        cmd.args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .arg("--directory")
            .arg(root);
        let proc = Proc::spawn(cmd, log.to_path_buf());
        wait_port(port, "the static file server");
        Self { port, proc }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }
}

/// One headless Chromium session.
pub struct Browser {
    http: reqwest::Client,
    base: String,
    session: String,
    /// Where screenshots go when a wait fails.
    pub shots: PathBuf,
    _driver: Proc,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a 1400x1000 headless window.
    pub async fn start(dir: &Path) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let port = free_port();
        let mut cmd = Command::new(tool("chromedriver"));
        // Its own process group, so that Chromium goes with it (see Drop).
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.arg(format!("--port={port}"));
        let driver = Proc::spawn(cmd, dir.join("chromedriver.log"));
        wait_port(port, "chromedriver");
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let profile = dir.join("chromium-profile");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": tool("chromium"),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1400,1000", "--no-first-run", "--no-default-browser-check",
                         format!("--user-data-dir={}", profile.display())],
            },
        }}});
        let answer = http
            .post(format!("{base}/session"))
            .header("content-type", "application/json")
            .body(caps.to_string())
            .send()
            .await
            .expect("chromedriver answers");
        let answer: Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromium did not start: {answer}"))
            .to_owned();
        let shots = dir.join("screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        Self {
            http,
            base,
            session,
            shots,
            _driver: driver,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let bytes = req.send().await.unwrap().bytes().await.unwrap();
        let answer: Value = serde_json::from_slice(&bytes).unwrap();
        if answer["value"].get("error").is_some() {
            panic!("webdriver {path}: {}", answer["value"]);
        }
        answer["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the page.
    pub async fn exec(&self, script: &str, args: Vec<Value>) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    async fn element(&self, css: &str) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("webdriver: no element {css}: {v}"))
            .to_owned()
    }

    /// Clicks the element `css` as a user would.
    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Empties the input `css` and types `text` into it, key by key.
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/clear"),
            Some(json!({})),
        )
        .await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Chooses the option `value` of the select `css` (and tells the page).
    pub async fn choose(&self, css: &str, value: &str) {
        self.exec(
            "const s = document.querySelector(arguments[0]); s.value = arguments[1]; \
             s.dispatchEvent(new Event('change', {bubbles: true}));",
            vec![json!(css), json!(value)],
        )
        .await;
    }

    /// The visible text of the first element matching `css` ("" when none).
    pub async fn text(&self, css: &str) -> String {
        self.exec(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';",
            vec![json!(css)],
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Saves a PNG of the page as `<shots>/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, base64_decode(v.as_str().unwrap_or_default())).unwrap();
        path
    }

    /// Waits until `script` (a function body) returns something truthy, and returns
    /// it; on timeout, saves a screenshot and panics naming `what` and the picture.
    pub async fn wait(&self, what: &str, timeout: Duration, script: &str) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.exec(script, vec![]).await;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let name: String = what
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                    .collect();
                let shot = self.screenshot(&name).await;
                let page = self
                    .exec("return document.body.innerText.slice(0, 4000);", vec![])
                    .await;
                panic!(
                    "timed out after {timeout:?} waiting for {what}; screenshot {}\npage text:\n{}",
                    shot.display(),
                    page.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn close(self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send()
            .await;
    }
}

/// chromedriver and every Chromium process it started (its process group) are
/// killed, also when a test panicked before `close`.
impl Drop for Browser {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's process group; no memory involved.
        unsafe {
            libc::kill(-self._driver.pid(), libc::SIGKILL);
        }
    }
}

/// Standard base64 (as WebDriver encodes screenshots) to bytes.
fn base64_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
