//! A real Mosquitto 2.0 with the devid plugin: generated config, free ports, its log.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::artifact::artifact_of;
use crate::process::{free_port, Proc};
use crate::service::{BrokerIdentity, Service};

/// The Mosquitto binary under test.
pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

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
    /// The cargo profile whose plugin build is loaded (`debug`; benchmarks use `release`).
    pub plugin_profile: String,
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
            plugin_profile: "debug".into(),
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
            format!(
                "plugin {}",
                artifact_of(&s.plugin_profile, "libdevid_mosquitto.so").display()
            ),
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
