//! A small W3C WebDriver client (JSON over HTTP, reqwest) and Debian's chromedriver driving a
//! headless Chromium: enough to sign in, click, type, read text and take screenshots.

use std::io::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::process::{free_port, wait_for_port, Proc};

/// The key W3C WebDriver names for an element reference in JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// The Escape key in `send_keys` text (W3C WebDriver, "keyboard actions").
pub const ESCAPE: &str = "\u{E00C}";

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]) {
        for n in names {
            let p = dir.join(n);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// chromedriver on a free port; stopped by PID on drop.
pub struct Chromedriver {
    pub port: u16,
    _proc: Proc,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Chromedriver {
    /// Starts Debian's chromedriver. Without it (or without chromium) the test fails: the
    /// packages come from `scripts/setup.sh`.
    pub fn start() -> Chromedriver {
        let driver = find_program(&["chromedriver"]).unwrap_or_else(|| {
            panic!("chromedriver is not installed (apt-get install chromium chromium-driver; scripts/setup.sh)")
        });
        assert!(
            chromium().is_some(),
            "chromium is not installed (apt-get install chromium; scripts/setup.sh)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("chromedriver.log");
        let port = free_port();
        let mut child = Command::new(driver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        wait_for_port(port, &mut child, "chromedriver", Some(&log));
        Chromedriver {
            port,
            _proc: Proc::new(child, "chromedriver"),
            log,
            _dir: dir,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn chromium() -> Option<PathBuf> {
    find_program(&["chromium", "chromium-browser"])
}

/// One browser session. Ended (and the browser closed) on drop, also while a test unwinds.
pub struct Session {
    http: reqwest::Client,
    base: String,
    port: u16,
    id: String,
    _profile: tempfile::TempDir,
}

impl Session {
    /// A new headless Chromium, `width` x `height`. `--no-sandbox`: the tests may run as root,
    /// where Chromium's sandbox refuses to start.
    pub async fn new(driver: &Chromedriver, width: u32, height: u32) -> Session {
        let profile = tempfile::tempdir().expect("tempdir");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client");
        let base = format!("http://127.0.0.1:{}", driver.port);
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium().expect("chromium").display().to_string(),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--disable-extensions", "--hide-scrollbars",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }}});
        let resp = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("new session");
        let v: Value = resp.json().await.expect("new session answer");
        let id = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver made no session: {v}\nlog:\n{}", driver.log()))
            .to_string();
        Session {
            http,
            base,
            port: driver.port,
            id,
            _profile: profile,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.id);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(b) = body {
            req = req.json(&b);
        } else if method == reqwest::Method::POST {
            req = req.json(&json!({}));
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{method} {path}: {status}: {v}");
        v["value"].clone()
    }

    /// Like [`Session::call`], but a WebDriver error is returned rather than a panic.
    async fn try_call(&self, method: reqwest::Method, path: &str, body: Value) -> Option<Value> {
        let url = format!("{}/session/{}{path}", self.base, self.id);
        let mut req = self.http.request(method, &url);
        if !body.is_null() {
            req = req.json(&body);
        }
        let resp = req.send().await.ok()?;
        let ok = resp.status().is_success();
        let v: Value = resp.json().await.ok()?;
        ok.then(|| v["value"].clone())
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// Elements matching a CSS selector now (possibly none).
    pub async fn find_all(&self, css: &str) -> Vec<String> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The first element matching `css`, waiting for it to appear (up to 20 s).
    pub async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(e) = self.find_all(css).await.into_iter().next() {
                return e;
            }
            if Instant::now() > deadline {
                let page = self.page_text().await;
                panic!("no element {css:?} within 20 s; the page reads:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (up to 20 s) until the text of the first element matching `css` satisfies
    /// `pred`; returns that text.
    pub async fn wait_text(&self, css: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = String::new();
        loop {
            if let Some(e) = self.find_all(css).await.into_iter().next() {
                // The element may be replaced between finding and reading it.
                if let Some(v) = self
                    .try_call(
                        reqwest::Method::GET,
                        &format!("/element/{e}/text"),
                        Value::Null,
                    )
                    .await
                {
                    last = v.as_str().unwrap_or_default().to_string();
                    if pred(&last) {
                        return last;
                    }
                }
            }
            if Instant::now() > deadline {
                panic!("{css:?} never showed {what} within 20 s; last text {last:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn text(&self, element: &str) -> String {
        self.call(
            reqwest::Method::GET,
            &format!("/element/{element}/text"),
            None,
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    pub async fn click(&self, element: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            None,
        )
        .await;
    }

    pub async fn send_keys(&self, element: &str, text: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Types into whatever has the focus (the keyboard user's view).
    pub async fn type_into_focus(&self, text: &str) {
        let v = self
            .call(reqwest::Method::GET, "/element/active", None)
            .await;
        let e = v[ELEMENT].as_str().expect("an active element").to_string();
        self.send_keys(&e, text).await;
    }

    /// Runs `script` (a function body) in the page; its return value.
    pub async fn execute(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    pub async fn set_window_size(&self, width: u32, height: u32) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    pub async fn page_text(&self) -> String {
        self.try_call(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": "return document.body.innerText", "args": []}),
        )
        .await
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
    }

    /// Writes a PNG of the viewport to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("screenshot base64"))
            .expect("screenshot base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot directory");
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

impl Drop for Session {
    /// Ends the session (chromedriver closes the browser) with a plain blocking request: drop
    /// may run outside the runtime, e.g. while a failing test unwinds.
    fn drop(&mut self) {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                s,
                "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
                self.id, self.port
            );
            let _ = std::io::Read::read(&mut s, &mut [0u8; 256]);
        }
    }
}
