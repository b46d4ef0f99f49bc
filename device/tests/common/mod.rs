//! Test support: a real Mosquitto on a free port with a generated config, stopped by PID.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

pub struct Mosquitto {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Mosquitto {
    /// Starts Mosquitto with a plain anonymous listener, plus `extra` config lines (which may
    /// use `{dir}` for the temp directory).
    pub fn start(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = dir.path().join("mosquitto.log");
        let conf = dir.path().join("mosquitto.conf");
        let mut f = std::fs::File::create(&conf).unwrap();
        writeln!(
            f,
            "user root\nper_listener_settings false\nlistener {port} 127.0.0.1\nallow_anonymous true\n\
             persistence false\nlog_dest file {}\nlog_type all\nconnection_messages true\n{}",
            log.display(),
            extra.replace("{dir}", &dir.path().display().to_string())
        )
        .unwrap();
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        let m = Mosquitto {
            child,
            port,
            dir,
            log,
        };
        m.wait_listening(port);
        m
    }

    pub fn wait_listening(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {port}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        // Stop exactly the process we started.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn install_ring() {
    // Tolerate another test having installed it already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub mod fake_broker;
pub mod pki;
