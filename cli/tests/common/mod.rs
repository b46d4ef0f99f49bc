//! Test harness: a real devid-server on a free port over a temporary SQLite data directory, and
//! the real `devid` binary run against it.
//!
//! The server binary is taken from `<workspace>/target/debug/devid-server`
//! (`$DEVID_SERVER_BIN` overrides): run `cargo build --workspace` (or
//! `cargo build -p devid-server`) before these tests; they refuse a server binary older than its
//! sources.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ has a parent")
        .to_path_buf()
}

pub fn server_bin() -> PathBuf {
    if let Ok(p) = std::env::var("DEVID_SERVER_BIN") {
        return PathBuf::from(p);
    }
    devid_e2e::artifact("devid-server")
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// What a `devid` run gave.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "devid failed: {self:#?}");
        self
    }

    #[track_caller]
    pub fn code(self, code: i32) -> Run {
        assert_eq!(self.code, code, "unexpected exit code: {self:#?}");
        self
    }

    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }
}

/// A `devid` command with a clean environment: no config file, no DEVID_* variables from the
/// caller, working directory `cwd`.
pub fn devid_cmd(cwd: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_devid"));
    c.current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", cwd)
        .env("XDG_CONFIG_HOME", cwd.join("xdg"))
        .stdin(Stdio::null());
    c
}

pub fn run_in(cwd: &Path, envs: &[(&str, &str)], args: &[&str]) -> Run {
    let mut c = devid_cmd(cwd);
    c.envs(envs.iter().copied()).args(args);
    Run::from(c.output().expect("run devid"))
}

/// Makes a new database on the PostgreSQL server of `admin_url` (with psql, the client the
/// PostgreSQL installation brings) and returns its URL.
pub fn fresh_pg_database(admin_url: &str) -> String {
    let name = format!(
        "devid_test_p{}_cli{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos()
    );
    let out = Command::new("psql")
        .arg(admin_url)
        .arg("-c")
        .arg(format!("CREATE DATABASE {name}"))
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let base = admin_url
        .rsplit_once('/')
        .map_or(admin_url, |(base, _)| base);
    format!("{base}/{name}")
}

pub struct Server {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub port: u16,
    child: Option<Child>,
    /// A fresh PostgreSQL database, or None for SQLite in the data directory.
    pub database_url: Option<String>,
}

impl Server {
    pub fn start() -> Server {
        Server::start_on(None)
    }

    /// A server on SQLite, and one on a fresh PostgreSQL database when DEVID_TEST_POSTGRES_URL
    /// is set (required under `CI=true` or `DEVID_TEST_REQUIRE_POSTGRES=1`, so that a missing
    /// PostgreSQL fails the run instead of passing as skipped).
    pub fn each_backend() -> Vec<Server> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let mut v = vec![Server::start()];
        match var("DEVID_TEST_POSTGRES_URL") {
            Some(admin) => v.push(Server::start_on(Some(fresh_pg_database(&admin)))),
            None => {
                let ci = var("CI").is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
                let required = var("DEVID_TEST_REQUIRE_POSTGRES").is_some_and(|v| v != "0");
                assert!(
                    !(ci || required),
                    "DEVID_TEST_POSTGRES_URL is not set and this run requires PostgreSQL"
                );
            }
        }
        v
    }

    fn start_on(database_url: Option<String>) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut s = Server {
            url: format!("http://127.0.0.1:{port}"),
            port,
            dir,
            child: None,
            database_url,
        };
        s.spawn();
        s
    }

    /// `sqlite` or `postgres`, for messages.
    pub fn backend(&self) -> &'static str {
        if self.database_url.is_some() {
            "postgres"
        } else {
            "sqlite"
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn token_file(&self) -> PathBuf {
        self.data_dir().join("admin.token")
    }

    /// A directory for the CLI's files.
    pub fn work(&self) -> PathBuf {
        let p = self.dir.path().join("work");
        std::fs::create_dir_all(&p).expect("mkdir work");
        p
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("log");
        let mut cmd = Command::new(server_bin());
        if let Some(url) = &self.database_url {
            cmd.arg("--database-url").arg(url);
        }
        let child = cmd
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data-dir")
            .arg(self.data_dir())
            .env_remove("DEVID_DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start devid-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.token_file().is_file()
                && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                let r = self.devid(&["ca", "show"]);
                if r.code == 0 {
                    return;
                }
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("devid-server exited early ({status}); log:\n{}", self.log());
                }
            }
            assert!(
                Instant::now() < deadline,
                "devid-server did not come up; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Stops the server (SIGKILL by its PID) and starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs devid as admin against this server.
    pub fn devid(&self, args: &[&str]) -> Run {
        self.devid_env(&[], args)
    }

    /// Runs devid against this server with the admin token file plus extra environment.
    pub fn devid_env(&self, envs: &[(&str, &str)], args: &[&str]) -> Run {
        let token = self.token_file().display().to_string();
        let mut all: Vec<(&str, &str)> = vec![
            ("DEVID_SERVER", self.url.as_str()),
            ("DEVID_TOKEN_FILE", token.as_str()),
        ];
        all.extend_from_slice(envs);
        run_in(&self.work(), &all, args)
    }

    /// Runs devid with the given token instead of the admin one.
    pub fn devid_as(&self, token: &str, args: &[&str]) -> Run {
        run_in(
            &self.work(),
            &[("DEVID_SERVER", self.url.as_str()), ("DEVID_TOKEN", token)],
            args,
        )
    }

    pub fn devid_cmd(&self) -> Command {
        let mut c = devid_cmd(&self.work());
        c.env("DEVID_SERVER", &self.url)
            .env("DEVID_TOKEN_FILE", self.token_file());
        c
    }

    /// Creates a token with the given role and returns its secret.
    pub fn token(&self, role: &str, name: &str) -> String {
        let r = self
            .devid(&[
                "-o", "json", "token", "create", "--role", role, "--name", name,
            ])
            .ok();
        r.json()["token"]
            .as_str()
            .expect("token in answer")
            .to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `openssl verify` of a certificate against the chain file (issuing CA first, root last).
pub fn openssl_verify(chain: &Path, cert: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(chain).map_err(|e| e.to_string())?;
    let blocks: Vec<&str> = text
        .split_inclusive("-----END CERTIFICATE-----")
        .filter(|b| b.contains("BEGIN CERTIFICATE"))
        .collect();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root = dir.path().join("root.pem");
    let untrusted = dir.path().join("untrusted.pem");
    let (last, rest) = blocks.split_last().ok_or("empty chain")?;
    std::fs::write(&root, last.trim_start()).map_err(|e| e.to_string())?;
    std::fs::write(&untrusted, rest.concat()).map_err(|e| e.to_string())?;
    let mut c = Command::new("openssl");
    c.arg("verify").arg("-CAfile").arg(&root);
    if !rest.is_empty() {
        c.arg("-untrusted").arg(&untrusted);
    }
    let o = c.arg(cert).output().map_err(|e| e.to_string())?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ))
    }
}

/// A P-256 key and CSR made with rcgen (PEM key, PEM CSR).
pub fn make_csr(cn: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let csr = params.serialize_request(&key).expect("csr");
    (key.serialize_pem(), csr.pem().expect("pem"))
}

#[cfg(unix)]
pub fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}
