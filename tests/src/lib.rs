//! Harness for the end-to-end tests: a real devid-server (temp data dir, free port), a real
//! Mosquitto 2.0 with the devid plugin (generated config, free port), and DEVID-1 devices driven
//! through devid_device's own authenticator and MQTT client.
//!
//! The binaries come from the workspace target directory (`cargo build --workspace` first):
//! `env!("CARGO_BIN_EXE_..")` only works inside the package that defines them. [`artifact`]
//! refuses one that is older than its sources. Every process is
//! stopped by its PID when its guard is dropped, which also happens while a failing test
//! unwinds.
//!
//! - `artifact`: the built binaries and plugin, checked against their sources.
//! - `bins`: the `devid` CLI and `devid-agent` as the tests run them ([`devid_cli`],
//!   [`agent_command`]).
//! - `backend`: SQLite or a fresh PostgreSQL database ([`Backend`], [`backends`]).
//! - `process`: child processes stopped by PID ([`Proc`]), free ports.
//! - `service`: devid-server ([`Service`]) and the admin calls the tests make.
//! - `broker`: Mosquitto with the plugin ([`Broker`], [`BrokerSettings`]).
//! - `creds`, `ca`: device credentials ([`DeviceCreds`]) from the service or from a [`TestCa`].
//! - `device`: connected devices ([`Device`]); [`Tamper`] makes the real device code misbehave
//!   on the wire through `Devid1::alter_outgoing`.
//! - `poll`: waiting for a condition instead of a fixed sleep.
//! - `webdriver`: headless Chromium through Debian's chromedriver ([`Chromedriver`],
//!   [`Session`]), a small W3C WebDriver client over reqwest (the console test).
//! - `proxy`: the service as the plugin sees it, with the sensor keys and the event batches
//!   played by the test ([`ServiceProxy`]).

mod artifact;
mod backend;
mod bins;
mod broker;
mod ca;
mod creds;
mod device;
mod poll;
mod process;
mod proxy;
mod service;
mod webdriver;

pub use artifact::{artifact, artifact_of, stale, target_dir};
pub use backend::{backends, fresh_pg_database, Backend};
pub use bins::{agent_command, agent_command_in, devid_cli, devid_cli_ok, output_text, AgentFiles};
pub use broker::{Broker, BrokerSettings, MOSQUITTO};
pub use ca::{issue_device, issue_with_service_ca, TestCa};
pub use creds::DeviceCreds;
pub use device::{
    authenticator, connect, connect_tls, connect_with_session, refused_with, resume,
    ticket_key_file, Device, Tamper,
};
pub use poll::{eventually, wait_until};
pub use process::{free_port, Proc};
pub use proxy::{SensorEntry, ServiceProxy};
pub use service::{BrokerIdentity, Service};
pub use webdriver::{Chromedriver, Session, ESCAPE};

pub use devid_device;

/// Installs the ring provider for rustls (reqwest is built without one). Idempotent.
pub fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub(crate) fn rand_bytes<const N: usize>() -> [u8; N] {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut b = [0u8; N];
    SystemRandom::new().fill(&mut b).expect("rng");
    b
}

/// A fresh ClientID that follows devid's rules.
pub fn new_client_id(prefix: &str) -> String {
    devid_core::clientid::generate(prefix, &rand_bytes()).expect("client id")
}
