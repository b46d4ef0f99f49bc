//! Harness for the end-to-end tests: a real devid-server (temp data dir, free port), a real
//! Mosquitto 2.0 with the devid plugin (generated config, free port), and DEVID-1 devices driven
//! through the devid_device MQTT client with core's device-side handshake.
//!
//! The binaries come from the workspace target directory (`cargo build --workspace` first):
//! `env!("CARGO_BIN_EXE_..")` only works inside the package that defines them. [`artifact`]
//! refuses one that is older than its sources. Every process is
//! stopped by its PID when its guard is dropped, which also happens while a failing test
//! unwinds.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use devid_core::api::{BrokerCertificate, CreatedToken, Registered};
use devid_core::protocol::{
    ClientConfig, ClientHandshake, ClientSession, EcdsaSigner, ExpectServerFinish,
    ExpectServerHello,
};
use devid_device::connection::{AuthError, Authenticator, ClientError, ConnectOptions};
use devid_device::mqtt::{QoS, ReasonCode, SubscriptionOptions};
use devid_device::{Client, Event, OutgoingMessage, Transport};
use ring::rand::SystemRandom;
use serde_json::{json, Value};
use tempfile::TempDir;

pub use devid_device;

/// The Mosquitto binary under test.
pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// Installs the ring provider for rustls (reqwest is built without one). Idempotent.
pub fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// `<workspace>/target/debug`, or `$CARGO_TARGET_DIR/debug`.
pub fn target_dir() -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    base.join("debug")
}

/// A built artifact of the workspace (a binary, or the plugin `libdevid_mosquitto.so`); panics
/// with the fix when it is missing or older than its sources, so a test never runs a binary of
/// older code (`cargo test -p devid-e2e` builds this crate, not the server or the plugin).
pub fn artifact(name: &str) -> PathBuf {
    let p = target_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace` first",
        p.display()
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent");
    if let Some(why) = stale(&p, root) {
        panic!("{} {why}: run `cargo build --workspace` first", p.display());
    }
    p
}

/// Why `artifact` is not the build of the sources under `root`, or None when it is: cargo's
/// dep-info file next to it (`X.d` for `X` and `libX.so`) lists every source file of the
/// workspace that went into it; each must exist under `root` and be no newer than the artifact.
pub fn stale(artifact: &Path, root: &Path) -> Option<String> {
    let dep_info = artifact.with_extension("d");
    let Ok(text) = std::fs::read_to_string(&dep_info) else {
        return Some(format!(
            "has no dep-info file {} to check its sources against",
            dep_info.display()
        ));
    };
    let built = match std::fs::metadata(artifact).and_then(|m| m.modified()) {
        Ok(t) => t,
        Err(e) => return Some(format!("cannot be read ({e})")),
    };
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    // `target: dep dep ...`, one rule per line; a space inside a path is escaped as `\ `.
    for line in text.lines() {
        let Some((_, deps)) = line.split_once(": ") else {
            continue;
        };
        for dep in split_dep_paths(deps) {
            let dep = Path::new(&dep);
            let Ok(canonical) = dep.canonicalize() else {
                return Some(format!("was built from {}, which is gone", dep.display()));
            };
            if !canonical.starts_with(&root) {
                return Some(format!(
                    "was built from another checkout ({})",
                    dep.display()
                ));
            }
            match std::fs::metadata(&canonical).and_then(|m| m.modified()) {
                Ok(t) if t > built => {
                    return Some(format!(
                        "is older than its sources ({} changed since)",
                        dep.display()
                    ))
                }
                Ok(_) => {}
                Err(e) => return Some(format!("source {} unreadable ({e})", dep.display())),
            }
        }
    }
    None
}

fn split_dep_paths(deps: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = deps.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => cur.push(n),
                None => cur.push('\\'),
            },
            ' ' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Polls the async `check` every 100 ms until it holds; panics naming `what` if it has not within
/// `within`. For conditions that come true after a timer of the code under test (a grace period,
/// a staleness limit, an expiry): the test waits as long as the condition takes, not a fixed
/// sleep sized to the timer.
pub async fn wait_until<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

fn wait_for_port(port: u16, child: &mut Child, what: &str, log: Option<&Path>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = log
                .and_then(|p| std::fs::read_to_string(p).ok())
                .unwrap_or_default();
            panic!("{what} exited early ({status}); log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not open port {port} within 20 s");
}

/// A child process stopped by PID on drop: SIGTERM, then SIGKILL after 5 s.
pub struct Proc {
    child: Option<Child>,
    name: String,
}

impl Proc {
    fn new(child: Child, name: &str) -> Proc {
        Proc {
            child: Some(child),
            name: name.into(),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the process (by its PID) and waits for it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not stop on SIGTERM; killing", self.name);
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running devid-server with its own data directory.
pub struct Service {
    pub port: u16,
    pub data_dir: TempDir,
    pub admin_token: String,
    proc: Proc,
    http: reqwest::Client,
}

impl Service {
    pub async fn start() -> Service {
        init();
        let data_dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let proc = Self::spawn(port, data_dir.path());
        let token_file = data_dir.path().join("admin.token");
        let admin_token = std::fs::read_to_string(&token_file)
            .unwrap_or_else(|e| panic!("{}: {e}", token_file.display()))
            .trim()
            .to_string();
        Service {
            port,
            data_dir,
            admin_token,
            proc,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
        }
    }

    fn spawn(port: u16, data_dir: &Path) -> Proc {
        let log = std::fs::File::create(data_dir.join("server.log")).expect("log file");
        let mut child = Command::new(artifact("devid-server"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn devid-server");
        wait_for_port(
            port,
            &mut child,
            "devid-server",
            Some(&data_dir.join("server.log")),
        );
        Proc::new(child, "devid-server")
    }

    /// Stops the server (by PID); the data directory stays.
    pub fn stop(&mut self) {
        self.proc.stop();
    }

    /// Starts it again on the same port and data directory.
    pub fn restart(&mut self) {
        self.proc.stop();
        self.proc = Self::spawn(self.port, self.data_dir.path());
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The devid root certificate (PEM).
    pub fn root_pem(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("ca/root.crt")).expect("root.crt")
    }

    pub fn root_der(&self) -> Vec<u8> {
        pem::parse(self.root_pem())
            .expect("root PEM")
            .into_contents()
    }

    /// A request as admin; returns status and JSON body (Null when empty or not JSON).
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url()))
            .bearer_auth(&self.admin_token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request to devid-server");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn call_ok<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Value,
    ) -> T {
        let (status, v) = self.call(method, path, Some(body)).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: HTTP {status}: {v}"
        );
        serde_json::from_value(v).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Registers a device with a key made by the service.
    pub async fn register_device(&self, hardware_serial: &str) -> DeviceCreds {
        let r: Registered = self
            .call_ok(
                "POST",
                "/v1/devices",
                json!({"hardware_serial": hardware_serial, "generate_key": true}),
            )
            .await;
        DeviceCreds::from_registered(&r)
    }

    /// Enrols a broker certificate (key made here, CSR sent) and makes a broker token.
    pub async fn enroll_broker(&self, name: &str) -> BrokerIdentity {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let csr = params
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem");
        let cert: BrokerCertificate = self
            .call_ok("POST", "/v1/brokers", json!({"name": name, "csr": csr}))
            .await;
        let token: CreatedToken = self
            .call_ok(
                "POST",
                "/v1/tokens",
                json!({"role": "broker", "name": name}),
            )
            .await;
        BrokerIdentity {
            chain_pem: format!("{}{}", ensure_nl(&cert.certificate), cert.chain),
            key_pem: key.serialize_pem(),
            token: token.token,
            root_pem: self.root_pem(),
        }
    }

    pub async fn revoke(&self, client_id: &str) {
        let (s, v) = self
            .call(
                "POST",
                &format!("/v1/devices/{client_id}/revoke"),
                Some(json!({"reason": "keyCompromise"})),
            )
            .await;
        assert_eq!(s, 200, "revoke {client_id}: {v}");
    }

    pub async fn suspend(&self, client_id: &str) {
        let (s, v) = self
            .call(
                "POST",
                &format!("/v1/devices/{client_id}/suspend"),
                Some(json!({})),
            )
            .await;
        assert_eq!(s, 200, "suspend {client_id}: {v}");
    }

    pub async fn resume(&self, client_id: &str) {
        let (s, v) = self
            .call("POST", &format!("/v1/devices/{client_id}/resume"), None)
            .await;
        assert_eq!(s, 200, "resume {client_id}: {v}");
    }
}

fn ensure_nl(s: &str) -> String {
    if s.ends_with('\n') {
        s.to_string()
    } else {
        format!("{s}\n")
    }
}

/// What a broker needs from the service.
#[derive(Clone)]
pub struct BrokerIdentity {
    pub chain_pem: String,
    pub key_pem: String,
    pub token: String,
    pub root_pem: String,
}

/// A device's credentials.
#[derive(Clone)]
pub struct DeviceCreds {
    pub client_id: String,
    pub serial: String,
    /// Leaf first, then intermediates, without the root.
    pub chain_der: Vec<Vec<u8>>,
    pub key_pkcs8_der: Vec<u8>,
}

impl DeviceCreds {
    pub fn from_registered(r: &Registered) -> DeviceCreds {
        let leaf = pem::parse(&r.certificate)
            .expect("cert PEM")
            .into_contents();
        let mut chain_der = vec![leaf];
        let blocks = pem::parse_many(&r.chain).expect("chain PEM");
        // Chain: issuing CA first, root last; the root is not sent.
        let n = blocks.len();
        for b in blocks.into_iter().take(n.saturating_sub(1)) {
            chain_der.push(b.into_contents());
        }
        let key = r
            .private_key
            .as_deref()
            .expect("generated key in the answer");
        DeviceCreds {
            client_id: r.client_id.clone(),
            serial: r.serial.clone(),
            chain_der,
            key_pkcs8_der: pem::parse(key).expect("key PEM").into_contents(),
        }
    }

    pub fn cert_pem(&self) -> String {
        self.chain_der
            .iter()
            .map(|d| pem::encode(&pem::Pem::new("CERTIFICATE", d.clone())))
            .collect()
    }

    pub fn key_pem(&self) -> String {
        pem::encode(&pem::Pem::new("PRIVATE KEY", self.key_pkcs8_der.clone()))
    }
}

/// Settings of a Mosquitto instance.
#[derive(Clone)]
pub struct BrokerSettings {
    pub service_url: String,
    pub identity: BrokerIdentity,
    pub max_staleness: u64,
    pub per_listener_settings: bool,
    /// Also open a TLS listener with `require_certificate true` (the mutual-TLS path).
    pub tls: bool,
    /// Extra raw lines for the config.
    pub extra: Vec<String>,
    /// Contents of a ticket key file (`<id> <64 hex>` lines): enables resumption.
    pub ticket_keys: Option<String>,
    /// `plugin_opt_hello_rate` and `plugin_opt_hello_burst`. Tests open many handshakes from
    /// 127.0.0.1 in quick succession, which the plugin's defaults (10 per second, 20 at once)
    /// would refuse, so the default here is (1000, 1000).
    pub hello_rate: (u32, u32),
}

impl BrokerSettings {
    pub fn new(service: &Service, identity: BrokerIdentity) -> Self {
        BrokerSettings {
            service_url: service.url(),
            identity,
            max_staleness: 300,
            per_listener_settings: false,
            tls: false,
            extra: Vec::new(),
            ticket_keys: None,
            hello_rate: (1000, 1000),
        }
    }
}

/// A running Mosquitto with the plugin. The directory (config, state, log) survives restarts.
pub struct Broker {
    pub port: u16,
    pub tls_port: u16,
    pub dir: Arc<TempDir>,
    pub settings: BrokerSettings,
    proc: Option<Proc>,
}

impl Broker {
    /// A broker with its directory and ports, not started yet (see [`Broker::launch`]).
    pub fn prepare(settings: BrokerSettings) -> Broker {
        Broker {
            port: free_port(),
            tls_port: free_port(),
            dir: Arc::new(tempfile::tempdir().expect("tempdir")),
            settings,
            proc: None,
        }
    }

    pub fn start(settings: BrokerSettings) -> Broker {
        let mut b = Broker::prepare(settings);
        b.launch()
            .unwrap_or_else(|log| panic!("mosquitto did not start; log:\n{log}"));
        b
    }

    /// Writes the config and starts Mosquitto; Err(log) if it exits instead of listening.
    pub fn launch(&mut self) -> Result<(), String> {
        let d = self.dir.path();
        let s = &self.settings;
        std::fs::write(d.join("token"), &s.identity.token).expect("token");
        std::fs::write(d.join("root.pem"), &s.identity.root_pem).expect("root");
        std::fs::write(d.join("broker-chain.pem"), &s.identity.chain_pem).expect("chain");
        std::fs::write(d.join("broker.key"), &s.identity.key_pem).expect("key");
        let mut conf = vec![
            format!("per_listener_settings {}", s.per_listener_settings),
            "allow_anonymous false".to_string(),
            // When the tests run as root, keep root: the temp directory is not readable by the
            // `mosquitto` user Mosquitto would otherwise switch to. Ignored when not root.
            "user root".to_string(),
            "persistence false".to_string(),
            format!("log_dest file {}", d.join("mosquitto.log").display()),
            "log_type all".to_string(),
            "log_timestamp_format %H:%M:%S".to_string(),
            format!("listener {} 127.0.0.1", self.port),
        ];
        if s.tls {
            std::fs::write(d.join("tls-server.pem"), &s.identity.chain_pem).expect("tls cert");
            conf.extend([
                format!("listener {} 127.0.0.1", self.tls_port),
                format!("cafile {}", d.join("root.pem").display()),
                format!("certfile {}", d.join("tls-server.pem").display()),
                format!("keyfile {}", d.join("broker.key").display()),
                "require_certificate true".to_string(),
                "use_identity_as_username false".to_string(),
                "set_tcp_nodelay true".to_string(),
            ]);
        }
        conf.extend([
            format!("plugin {}", artifact("libdevid_mosquitto.so").display()),
            format!("plugin_opt_service_url {}", s.service_url),
            format!("plugin_opt_token_file {}", d.join("token").display()),
            format!("plugin_opt_trust_anchor {}", d.join("root.pem").display()),
            format!(
                "plugin_opt_broker_cert {}",
                d.join("broker-chain.pem").display()
            ),
            format!("plugin_opt_broker_key {}", d.join("broker.key").display()),
            format!("plugin_opt_state_dir {}", d.join("state").display()),
            format!("plugin_opt_max_staleness {}", s.max_staleness),
            format!("plugin_opt_hello_rate {}", s.hello_rate.0),
            format!("plugin_opt_hello_burst {}", s.hello_rate.1),
        ]);
        if let Some(keys) = &s.ticket_keys {
            std::fs::write(d.join("tickets.keys"), keys).expect("ticket keys");
            conf.push(format!(
                "plugin_opt_ticket_key_file {}",
                d.join("tickets.keys").display()
            ));
        }
        conf.extend(s.extra.iter().cloned());
        conf.push(String::new());
        let conf_path = d.join("mosquitto.conf");
        std::fs::write(&conf_path, conf.join("\n")).expect("conf");
        let stderr = std::fs::File::create(d.join("mosquitto.stderr")).expect("stderr file");
        // Where this launch's lines will start: the log file is appended to across restarts.
        let log_start = self.mosquitto_log().len();
        let mut child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn mosquitto");
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                self.proc = Some(Proc::new(child, "mosquitto"));
                // With per_listener_settings true TICK never runs, so the plugin logs nothing
                // from its service thread: nothing to wait for.
                if !self.settings.per_listener_settings {
                    self.wait_for_feed(log_start, deadline)?;
                }
                return Ok(());
            }
            if let Ok(Some(_)) = child.try_wait() {
                return Err(self.log());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no listener after 20 s\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the plugin (after the log's first `from` bytes) has either caught up with
    /// the revocation feed or found the service unreachable, so that a test's first CONNECT
    /// meets a plugin whose revocation state is settled rather than racing its first catch-up
    /// (a device connecting before it is refused as "revocation state stale").
    fn wait_for_feed(&self, from: usize, deadline: Instant) -> Result<(), String> {
        loop {
            let log = self.mosquitto_log();
            let new = log.get(from..).unwrap_or(&log);
            if new.contains("caught up with the revocation feed")
                || new.contains("revocation feed unavailable")
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the plugin neither caught up with the revocation feed nor found it \
                     unavailable\n{log}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops Mosquitto by PID.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.launch()
            .unwrap_or_else(|log| panic!("mosquitto did not restart; log:\n{log}"));
    }

    pub fn running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(Proc::running)
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().and_then(Proc::pid)
    }

    /// The broker's log file followed by anything it wrote to stderr.
    pub fn log(&self) -> String {
        let stderr = std::fs::read_to_string(self.dir.path().join("mosquitto.stderr"));
        format!("{}{}", self.mosquitto_log(), stderr.unwrap_or_default())
    }

    /// Mosquitto's own log file (appended to across restarts).
    fn mosquitto_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("---- mosquitto log ----\n{}", self.log());
        }
    }
}

/// How the device side misbehaves, for refusal tests.
#[derive(Clone, Debug, Default)]
pub enum Tamper {
    #[default]
    None,
    /// Send these bytes as the ClientHello.
    Hello(Vec<u8>),
    /// Flip one bit of the ClientFinish at this byte index (1..=64 is sig_c, 65.. is mac_c).
    FlipFinish(usize),
    /// Send these bytes as the ClientFinish.
    Finish(Vec<u8>),
    /// Wait this long before answering the ServerHello (blocks the calling worker thread).
    DelayFinish(Duration),
}

enum St {
    Init,
    Hello(ExpectServerHello),
    Finish(ExpectServerFinish),
    Done,
}

/// The DEVID-1 device side as a devid_device `Authenticator`, with a tamper hook.
pub struct Devid1Auth {
    config: Arc<ClientConfig>,
    rng: SystemRandom,
    st: St,
    tamper: Tamper,
}

impl Devid1Auth {
    pub fn new(creds: &DeviceCreds, root_der: &[u8], tamper: Tamper) -> Devid1Auth {
        let rng = SystemRandom::new();
        let key = EcdsaSigner::from_pkcs8_der(&creds.key_pkcs8_der, &rng).expect("device key");
        let config = ClientConfig::new(root_der, creds.chain_der.clone(), Arc::new(key))
            .expect("device config");
        Devid1Auth {
            config: Arc::new(config),
            rng,
            st: St::Init,
            tamper,
        }
    }
}

fn aerr(e: impl std::fmt::Display) -> AuthError {
    AuthError(e.to_string())
}

impl Authenticator for Devid1Auth {
    type Outcome = ClientSession;

    fn method(&self) -> &str {
        devid_core::protocol::AUTH_METHOD
    }

    fn start(&mut self) -> Result<Vec<u8>, AuthError> {
        let (st, hello) = ClientHandshake::start(&self.config, &self.rng).map_err(aerr)?;
        self.st = St::Hello(st);
        match &self.tamper {
            Tamper::Hello(b) => Ok(b.clone()),
            _ => Ok(hello),
        }
    }

    fn challenge(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        let St::Hello(st) = std::mem::replace(&mut self.st, St::Done) else {
            return Err(AuthError("unexpected AUTH".into()));
        };
        let (next, mut finish) = st
            .handle(data, rustls_pki_types::UnixTime::now(), &self.rng)
            .map_err(aerr)?;
        self.st = St::Finish(next);
        match &self.tamper {
            Tamper::FlipFinish(i) => {
                if let Some(b) = finish.get_mut(*i) {
                    *b ^= 0x01;
                }
            }
            Tamper::Finish(b) => finish = b.clone(),
            Tamper::DelayFinish(d) => std::thread::sleep(*d),
            _ => {}
        }
        Ok(finish)
    }

    fn finish(&mut self, data: &[u8]) -> Result<ClientSession, AuthError> {
        let St::Finish(st) = std::mem::replace(&mut self.st, St::Done) else {
            return Err(AuthError("unexpected CONNACK".into()));
        };
        st.handle(data, rustls_pki_types::UnixTime::now())
            .map_err(aerr)
    }
}

enum RSt {
    Init,
    Challenge(devid_core::protocol::ExpectResumeChallenge),
    Finish(devid_core::protocol::ExpectResumeFinish),
    Done,
}

/// DEVID-1 resumption (ResumeHello / ResumeProof) as an `Authenticator`.
pub struct ResumeAuth {
    ticket: devid_core::protocol::ResumptionTicket,
    rng: SystemRandom,
    st: RSt,
}

impl ResumeAuth {
    pub fn new(ticket: &devid_core::protocol::ResumptionTicket) -> ResumeAuth {
        ResumeAuth {
            ticket: ticket.clone(),
            rng: SystemRandom::new(),
            st: RSt::Init,
        }
    }
}

impl Authenticator for ResumeAuth {
    type Outcome = ClientSession;

    fn method(&self) -> &str {
        devid_core::protocol::AUTH_METHOD
    }

    fn start(&mut self) -> Result<Vec<u8>, AuthError> {
        let (st, hello) =
            devid_core::protocol::ClientResume::start(&self.ticket, &self.rng).map_err(aerr)?;
        self.st = RSt::Challenge(st);
        Ok(hello)
    }

    fn challenge(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        let RSt::Challenge(st) = std::mem::replace(&mut self.st, RSt::Done) else {
            return Err(AuthError("unexpected AUTH".into()));
        };
        let (next, proof) = st.handle(data).map_err(aerr)?;
        self.st = RSt::Finish(next);
        Ok(proof)
    }

    fn finish(&mut self, data: &[u8]) -> Result<ClientSession, AuthError> {
        let RSt::Finish(st) = std::mem::replace(&mut self.st, RSt::Done) else {
            return Err(AuthError("unexpected CONNACK".into()));
        };
        st.handle(data, rustls_pki_types::UnixTime::now())
            .map_err(aerr)
    }
}

/// Resumes a session with a ticket over TCP.
pub async fn resume(
    addr: &str,
    client_id: &str,
    ticket: &devid_core::protocol::ResumptionTicket,
) -> Result<Device, ClientError> {
    let mut auth = ResumeAuth::new(ticket);
    let mut conn = devid_device::open(addr, &Transport::Tcp).await?;
    let opts = ConnectOptions::new(client_id.to_string());
    let connected = devid_device::handshake(&mut conn, &opts, Some(&mut auth)).await?;
    Ok(Device {
        client: Client::start(conn, connected.keep_alive, None),
        session: connected.auth,
        client_id: client_id.to_string(),
    })
}

/// A random ticket key file with one key.
pub fn ticket_key_file(id: u32) -> String {
    format!("{id} {}\n", hex::encode(rand_bytes::<32>()))
}

/// A connected device.
pub struct Device {
    pub client: Client,
    pub session: Option<ClientSession>,
    pub client_id: String,
}

/// Connects a device over TCP with DEVID-1. `client_id` overrides the CONNECT's ClientID.
pub async fn connect(
    addr: &str,
    creds: &DeviceCreds,
    root_der: &[u8],
    client_id: Option<&str>,
    tamper: Tamper,
) -> Result<Device, ClientError> {
    let mut auth = Devid1Auth::new(creds, root_der, tamper);
    let cid = client_id.unwrap_or(&creds.client_id).to_string();
    let mut conn = devid_device::open(addr, &Transport::Tcp).await?;
    let opts = ConnectOptions::new(cid.clone());
    let connected = devid_device::handshake(&mut conn, &opts, Some(&mut auth)).await?;
    Ok(Device {
        client: Client::start(conn, connected.keep_alive, None),
        session: connected.auth,
        client_id: cid,
    })
}

/// Connects with DEVID-1 and runs the client with devid_device's session hook (MAC/seal of
/// outgoing PUBLISHes, re-authentication with AUTH 0x19). Returns the device and a signer on
/// the first session's keys (to forge "old key" messages).
pub async fn connect_with_session(
    addr: &str,
    creds: &DeviceCreds,
    root_der: &[u8],
) -> Result<(Device, devid_core::protocol::PublishSigner), ClientError> {
    let mut auth = Devid1Auth::new(creds, root_der, Tamper::None);
    let config = auth.config.clone();
    let mut conn = devid_device::open(addr, &Transport::Tcp).await?;
    let opts = ConnectOptions::new(creds.client_id.clone());
    let connected = devid_device::handshake(&mut conn, &opts, Some(&mut auth)).await?;
    let session = connected
        .auth
        .ok_or_else(|| ClientError::Protocol("no DEVID-1 session".into()))?;
    let old = devid_core::protocol::PublishSigner::new(&session.keys);
    let hook = devid_device::Devid1Session::new(config, session, None);
    Ok((
        Device {
            client: Client::start(conn, connected.keep_alive, Some(Box::new(hook))),
            session: None,
            client_id: creds.client_id.clone(),
        },
        old,
    ))
}

/// Connects over TLS with a client certificate and no auth method (the mutual-TLS path).
pub async fn connect_tls(
    addr: &str,
    broker_name: &str,
    creds: &DeviceCreds,
    root_der: &[u8],
    client_id: Option<&str>,
) -> Result<Device, ClientError> {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let chain: Vec<CertificateDer<'static>> = creds
        .chain_der
        .iter()
        .map(|d| CertificateDer::from(d.clone()))
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(creds.key_pkcs8_der.clone()));
    let config = devid_device::tls_config(devid_device::TlsOptions {
        roots: vec![CertificateDer::from(root_der.to_vec())],
        client_auth: Some((chain, key)),
        tls13_only: false,
        resumption: false,
    })?;
    let transport = Transport::Tls {
        config,
        server_name: devid_device::server_name(addr, Some(broker_name))?,
    };
    let cid = client_id.unwrap_or(&creds.client_id).to_string();
    let mut conn = devid_device::open(addr, &transport).await?;
    let opts = ConnectOptions::new(cid.clone());
    let connected = devid_device::handshake::<devid_device::NoAuth>(&mut conn, &opts, None).await?;
    Ok(Device {
        client: Client::start(conn, connected.keep_alive, None),
        session: None,
        client_id: cid,
    })
}

impl Device {
    /// QoS 1 publish; returns the PUBACK reason.
    pub async fn publish(&self, topic: &str, payload: &[u8]) -> ReasonCode {
        let ack = self
            .client
            .publish(OutgoingMessage::new(
                topic,
                payload.to_vec(),
                QoS::AtLeastOnce,
            ))
            .await
            .expect("publish");
        ack.expect("QoS 1 has a PUBACK").reason
    }

    /// Subscribes to one filter at QoS 1; returns the SUBACK reason.
    pub async fn subscribe(&self, filter: &str) -> ReasonCode {
        let codes = self
            .client
            .subscribe(vec![(
                filter.to_string(),
                SubscriptionOptions::qos(QoS::AtLeastOnce),
            )])
            .await
            .expect("subscribe");
        codes[0]
    }

    /// The next event within `timeout`.
    pub async fn event(&mut self, timeout: Duration) -> Option<Event> {
        tokio::time::timeout(timeout, self.client.next_event())
            .await
            .ok()
            .flatten()
    }
}

/// The CONNACK reason of a refused connection (panics when it was accepted or failed otherwise).
pub fn refused_with(r: Result<Device, ClientError>) -> ReasonCode {
    match r {
        Ok(d) => panic!("{} was admitted", d.client_id),
        Err(e) => e
            .reason_code()
            .unwrap_or_else(|| panic!("expected a CONNACK refusal, got: {e}")),
    }
}

/// Polls `f` until it returns true or `timeout` passes.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}

/// A test CA that is not devid's: root + issuing CA, for "other CA" and expired certificates.
pub struct TestCa {
    pub root_der: Vec<u8>,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    issuing_der: Vec<u8>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let root_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut rp = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        rp.distinguished_name
            .push(rcgen::DnType::CommonName, "Other Root");
        rp.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        rp.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let root = rp.self_signed(&root_key).expect("root");
        let root_issuer = rcgen::Issuer::new(rp, root_key);
        let ik = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut ip = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ip.distinguished_name
            .push(rcgen::DnType::CommonName, "Other Issuing");
        ip.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        ip.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let issuing = ip.signed_by(&ik, &root_issuer).expect("issuing");
        TestCa {
            root_der: root.der().to_vec(),
            issuing_der: issuing.der().to_vec(),
            issuer: rcgen::Issuer::new(ip, ik),
        }
    }

    /// A device certificate in devid's profile (CN and SAN URI bound to `client_id`).
    pub fn device(
        &self,
        client_id: &str,
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    ) -> DeviceCreds {
        issue_device(
            &self.issuer,
            &self.issuing_der,
            client_id,
            not_before,
            not_after,
        )
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// Issues a device certificate in devid's profile under `issuer`.
pub fn issue_device(
    issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
    issuing_der: &[u8],
    client_id: &str,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
) -> DeviceCreds {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    p.distinguished_name
        .push(rcgen::DnType::CommonName, client_id);
    p.subject_alt_names = vec![rcgen::SanType::URI(
        format!("urn:devid:{client_id}").try_into().expect("uri"),
    )];
    p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    p.not_before = not_before;
    p.not_after = not_after;
    let serial: [u8; 8] = rand_bytes();
    p.serial_number = Some(rcgen::SerialNumber::from_slice(
        &[&[0x01u8][..], &serial[..]].concat(),
    ));
    let cert = p.signed_by(&key, issuer).expect("device cert");
    DeviceCreds {
        client_id: client_id.to_string(),
        serial: hex::encode(
            p.serial_number
                .as_ref()
                .map(|s| s.to_bytes())
                .unwrap_or_default(),
        ),
        chain_der: vec![cert.der().to_vec(), issuing_der.to_vec()],
        key_pkcs8_der: key.serialize_der(),
    }
}

/// Issues a device certificate with devid's own issuing CA (read from the service's data dir;
/// the key is stored unencrypted when no passphrase is set), for cases the API cannot make,
/// such as an expired certificate.
pub fn issue_with_service_ca(
    service: &Service,
    client_id: &str,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
) -> DeviceCreds {
    let ca = service.data_dir.path().join("ca");
    let cert_pem = std::fs::read_to_string(ca.join("issuing.crt")).expect("issuing.crt");
    let key_pem = std::fs::read_to_string(ca.join("issuing.key")).expect("issuing.key");
    let key = rcgen::KeyPair::from_pem(&key_pem).expect("issuing key (unencrypted)");
    let der = pem::parse(&cert_pem).expect("pem").into_contents();
    let issuer = rcgen::Issuer::from_ca_cert_der(&der.clone().into(), key).expect("issuer");
    issue_device(&issuer, &der, client_id, not_before, not_after)
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom;
    let mut b = [0u8; N];
    SystemRandom::new().fill(&mut b).expect("rng");
    b
}

/// A fresh ClientID that follows devid's rules.
pub fn new_client_id(prefix: &str) -> String {
    devid_core::clientid::generate(prefix, &rand_bytes()).expect("client id")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn set_mtime(p: &Path, t: SystemTime) {
        std::fs::File::options()
            .write(true)
            .open(p)
            .and_then(|f| f.set_modified(t))
            .expect("set mtime");
    }

    /// A workspace under a temp dir: `src/a b.rs` (a space, escaped in dep-info), `src/lib.rs`,
    /// and `target/debug/bin` built at `built` with its `bin.d`.
    fn tree(built: SystemTime, source: SystemTime) -> (TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("src")).expect("mkdir");
        std::fs::create_dir_all(root.join("target/debug")).expect("mkdir");
        let a = root.join("src/a b.rs");
        let lib = root.join("src/lib.rs");
        let bin = root.join("target/debug/bin");
        for p in [&a, &lib, &bin] {
            std::fs::write(p, "x").expect("write");
        }
        let esc = |p: &Path| p.display().to_string().replace(' ', "\\ ");
        std::fs::write(
            root.join("target/debug/bin.d"),
            format!("{}: {} {}\n", esc(&bin), esc(&a), esc(&lib)),
        )
        .expect("write dep-info");
        set_mtime(&a, source);
        set_mtime(&lib, source);
        set_mtime(&bin, built);
        (dir, bin)
    }

    #[test]
    fn an_artifact_newer_than_its_sources_is_fresh() {
        let now = SystemTime::now();
        let (dir, bin) = tree(now, now - Duration::from_secs(60));
        assert_eq!(stale(&bin, dir.path()), None);
    }

    #[test]
    fn an_artifact_older_than_a_source_is_stale() {
        let now = SystemTime::now();
        let (dir, bin) = tree(
            now - Duration::from_secs(60),
            now - Duration::from_secs(120),
        );
        assert_eq!(stale(&bin, dir.path()), None);
        set_mtime(&dir.path().join("src/a b.rs"), now);
        let why = stale(&bin, dir.path()).expect("stale");
        assert!(
            why.contains("older than its sources") && why.contains("a b.rs"),
            "{why}"
        );
    }

    #[test]
    fn an_artifact_of_another_checkout_or_without_dep_info_is_stale() {
        let now = SystemTime::now();
        let (dir, bin) = tree(now, now - Duration::from_secs(60));
        let other = tempfile::tempdir().expect("tempdir");
        let why = stale(&bin, other.path()).expect("stale");
        assert!(why.contains("another checkout"), "{why}");
        std::fs::remove_file(dir.path().join("target/debug/bin.d")).expect("rm");
        let why = stale(&bin, dir.path()).expect("stale");
        assert!(why.contains("no dep-info"), "{why}");
    }
}
