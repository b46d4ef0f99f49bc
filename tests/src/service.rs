//! A real devid-server on a free port with its own data directory, and the admin calls the
//! tests make.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use devid_core::api::{BatchResponse, BrokerCertificate, CreatedToken, Registered};
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::artifact::artifact_of;
use crate::backend::Backend;
use crate::creds::DeviceCreds;
use crate::init;
use crate::process::{free_port, wait_for_port, Proc};

/// A running devid-server with its own data directory.
pub struct Service {
    pub port: u16,
    pub data_dir: TempDir,
    pub admin_token: String,
    proc: Proc,
    http: reqwest::Client,
    /// Arguments after --listen and --data-dir (database, TLS listener, ...).
    extra: Vec<String>,
    /// The cargo profile whose devid-server build runs (`debug`; benchmarks use `release`).
    profile: String,
}

/// Most items [`Service::register_devices`] sends in one `POST /v1/devices/batch`.
const REGISTER_CHUNK: usize = 500;

impl Service {
    pub async fn start() -> Service {
        Self::start_with(&Backend::Sqlite, &[]).await
    }

    /// On `backend`, with `extra` arguments (e.g. `--tls-listen`).
    pub async fn start_with(backend: &Backend, extra: &[&str]) -> Service {
        Self::start_in("debug", backend, extra).await
    }

    /// [`Service::start_with`], running the devid-server build of the cargo profile `profile`
    /// (`debug`, or `release` for benchmarks).
    pub async fn start_in(profile: &str, backend: &Backend, extra: &[&str]) -> Service {
        init();
        let data_dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if let Backend::Postgres(url) = backend {
            extra.extend(["--database-url".to_string(), url.clone()]);
        }
        let proc = Self::spawn(profile, port, data_dir.path(), &extra);
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
            extra,
            profile: profile.to_string(),
        }
    }

    fn spawn(profile: &str, port: u16, data_dir: &Path, extra: &[String]) -> Proc {
        let log = std::fs::File::create(data_dir.join("server.log")).expect("log file");
        let mut child = Command::new(artifact_of(profile, "devid-server"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
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
        self.proc = Self::spawn(&self.profile, self.port, self.data_dir.path(), &self.extra);
    }

    /// Runs `devid-server <args>` as a one-shot command on this service's data directory and
    /// database, beside the serving process; its standard output.
    pub fn command(&self, args: &[&str]) -> String {
        let database: Vec<&String> = self
            .extra
            .iter()
            .skip_while(|a| *a != "--database-url")
            .take(2)
            .collect();
        let out = Command::new(artifact_of(&self.profile, "devid-server"))
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .args(database)
            .args(args)
            .env_remove("DEVID_DATABASE_URL")
            .output()
            .expect("run devid-server");
        assert!(
            out.status.success(),
            "devid-server {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
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

    /// Registers one device per hardware serial, each with a key made by the service, with
    /// `POST /v1/devices/batch` ([`REGISTER_CHUNK`] items a call); their credentials in order.
    pub async fn register_devices(&self, hardware_serials: &[String]) -> Vec<DeviceCreds> {
        let mut creds = Vec::with_capacity(hardware_serials.len());
        for chunk in hardware_serials.chunks(REGISTER_CHUNK) {
            let items: Vec<Value> = chunk
                .iter()
                .map(|s| json!({"hardware_serial": s, "generate_key": true}))
                .collect();
            let batch: BatchResponse = self
                .call_ok("POST", "/v1/devices/batch", json!({ "items": items }))
                .await;
            assert_eq!(batch.items.len(), chunk.len(), "one answer per item");
            creds.extend(batch.items.iter().map(DeviceCreds::from_registered));
        }
        creds
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
