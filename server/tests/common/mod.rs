//! Test harness: runs the real `devid-server` binary on a free port over a temporary data
//! directory, on SQLite or on a fresh PostgreSQL database.
#![allow(dead_code, clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

pub mod sse;

pub const BIN: &str = env!("CARGO_BIN_EXE_devid-server");

/// Which database a test runs on.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    /// URL of a fresh database made for this test.
    Postgres(String),
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }
}

pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// SQLite always; PostgreSQL too when DEVID_TEST_POSTGRES_URL is set (each gets a fresh
/// database).
pub async fn backends() -> Vec<Backend> {
    let mut v = vec![Backend::Sqlite];
    if let Some(url) = postgres_url() {
        v.push(Backend::Postgres(fresh_pg_database(&url).await));
    }
    v
}

/// Only PostgreSQL (for scale-out tests); None when DEVID_TEST_POSTGRES_URL is unset.
pub async fn postgres() -> Option<Backend> {
    let url = postgres_url()?;
    Some(Backend::Postgres(fresh_pg_database(&url).await))
}

/// The PostgreSQL admin URL from DEVID_TEST_POSTGRES_URL. Unset, the PostgreSQL half of a test
/// is left out, which is only allowed off CI: under `CI=true` or `DEVID_TEST_REQUIRE_POSTGRES=1`
/// (scripts/test.sh sets it) this panics, so a missing PostgreSQL fails the run instead of
/// passing as skipped.
pub fn postgres_url() -> Option<String> {
    let var = |k: &str| std::env::var(k).ok();
    postgres_url_from(
        var("DEVID_TEST_POSTGRES_URL"),
        var("CI"),
        var("DEVID_TEST_REQUIRE_POSTGRES"),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// [`postgres_url`] on given values of DEVID_TEST_POSTGRES_URL, CI and
/// DEVID_TEST_REQUIRE_POSTGRES.
pub fn postgres_url_from(
    url: Option<String>,
    ci: Option<String>,
    require: Option<String>,
) -> Result<Option<String>, String> {
    if let Some(url) = url.filter(|u| !u.is_empty()) {
        return Ok(Some(url));
    }
    let ci = ci.is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    let required = require.is_some_and(|v| !v.is_empty() && v != "0");
    if ci || required {
        return Err(
            "DEVID_TEST_POSTGRES_URL is not set, and this run requires PostgreSQL \
                    (CI=true or DEVID_TEST_REQUIRE_POSTGRES=1): set it, e.g. \
                    postgres://postgres@127.0.0.1:5432/postgres"
                .to_owned(),
        );
    }
    Ok(None)
}

pub async fn fresh_pg_database(admin_url: &str) -> String {
    use sqlx::Connection;
    // `devid_test_p<pid>_`: scripts/test.sh drops the databases of processes that have ended.
    let name = format!(
        "devid_test_p{}_{}",
        std::process::id(),
        hex::encode(random_bytes::<6>())
    );
    let mut conn = sqlx::PgConnection::connect(admin_url).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let base = admin_url.rsplit_once('/').map_or(admin_url, |(b, _)| b);
    format!("{base}/{name}")
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom;
    let mut b = [0u8; N];
    ring::rand::SystemRandom::new().fill(&mut b).unwrap();
    b
}

/// A running devid-server process.
pub struct Server {
    pub child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    pub backend: Backend,
    pub token: String,
    pub client: reqwest::Client,
    /// Everything the process printed (stdout and stderr), line by line.
    pub output: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _tmp: Option<tempfile::TempDir>,
}

pub struct Options {
    pub extra_args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub data_dir: Option<PathBuf>,
    pub listen: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            extra_args: vec![],
            env: vec![],
            data_dir: None,
            listen: "127.0.0.1:0".into(),
        }
    }
}

impl Server {
    pub async fn start(backend: &Backend) -> Server {
        Server::start_with(backend, Options::default()).await
    }

    pub async fn start_with(backend: &Backend, opts: Options) -> Server {
        install_crypto();
        let (tmp, data_dir) = match opts.data_dir.clone() {
            Some(d) => (None, d),
            None => {
                let t = tempfile::tempdir().unwrap();
                let d = t.path().join("data");
                (Some(t), d)
            }
        };
        let (child, url, output) = spawn(backend, &data_dir, &opts);
        let token = read_admin_token(&data_dir);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        Server {
            child,
            url,
            data_dir,
            backend: backend.clone(),
            token,
            client,
            output,
            _tmp: tmp,
        }
    }

    /// A second process over this one's data directory and database, with its admin token.
    pub async fn another_process(&self) -> Server {
        let opts = Options {
            data_dir: Some(self.data_dir.clone()),
            ..Options::default()
        };
        let mut b = Server::start_with(&self.backend, opts).await;
        b.token = self.token.clone();
        b
    }

    /// Stops the process with SIGTERM and waits for it; returns its exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        signal(&self.child, "TERM");
        wait_exit(&mut self.child, Duration::from_secs(20))
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the process again over the same data directory and database.
    pub fn restart(&mut self) {
        let opts = Options {
            data_dir: Some(self.data_dir.clone()),
            ..Options::default()
        };
        let (child, url, output) = spawn(&self.backend, &self.data_dir, &opts);
        self.child = child;
        self.url = url;
        self.output = output;
    }

    pub fn printed(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        json_of(req.send().await.unwrap()).await
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        json_of(req.send().await.unwrap()).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    pub async fn admin_get(&self, path: &str) -> (StatusCode, Value) {
        self.get(path, Some(&self.token.clone())).await
    }

    pub async fn admin_post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.post(path, Some(&self.token.clone()), body).await
    }

    /// Makes a token of `role` and returns its secret.
    pub async fn token(&self, role: &str, models: Option<Vec<&str>>) -> String {
        let mut body = serde_json::json!({"role": role, "name": format!("test {role}")});
        if let Some(m) = models {
            body["models"] = serde_json::json!(m);
        }
        let (status, v) = self.admin_post("/v1/tokens", &body).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        v["token"].as_str().unwrap().to_string()
    }

    pub fn root_pem(&self) -> PathBuf {
        self.data_dir.join("ca/root.crt")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn json_of(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let bytes = resp.bytes().await.unwrap();
    let v = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    (status, v)
}

// The child goes back to the caller, whose Server waits for it (stop, kill, or Drop).
#[allow(clippy::zombie_processes)]
fn spawn(
    backend: &Backend,
    data_dir: &Path,
    opts: &Options,
) -> (Child, String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let mut cmd = Command::new(BIN);
    cmd.arg("--listen")
        .arg(&opts.listen)
        .arg("--data-dir")
        .arg(data_dir)
        .args(&opts.extra_args)
        .env_remove("DEVID_DATABASE_URL")
        .env_remove("DEVID_LISTEN")
        .env_remove("DEVID_DATA_DIR")
        .env_remove("DEVID_CA_PASSPHRASE")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Backend::Postgres(url) = backend {
        cmd.arg("--database-url").arg(url);
    }
    for (k, v) in &opts.env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel::<String>();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        let output = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                output.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    if line.starts_with("devid-server:") {
                        return (child, rest.trim().to_string(), output);
                    }
                }
            }
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "devid-server did not start:\n{}",
                    output.lock().unwrap().join("\n")
                );
            }
        }
    }
}

fn read_admin_token(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("admin.token"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

pub fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit in {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A P-256 key and a CSR for it (PEM), made with rcgen.
pub fn csr(cn: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let csr = params.serialize_request(&key).unwrap();
    (key.serialize_pem(), csr.pem().unwrap())
}

/// Runs a command, asserting it succeeds; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}
