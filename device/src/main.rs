//! devid-agent: a device's side of devid on the command line. Thin: it parses arguments and
//! calls the devid-device library.
//!
//! Exit codes: 0 ok, 1 refused or failed (the reason code and its name are printed), 2 usage.

mod bench;
mod gateway_cmd;
mod renew_cli;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use devid_core::protocol::{pk_operations, ClientConfig, EcdsaSigner, MemoryBrokerCertCache};
use devid_device::credentials::{load_certs, DeviceCredentials};
use devid_device::devid1::ticket_path_for_key;
use devid_device::mqtt::{QoS, ReasonCode, SubscriptionOptions};
use devid_device::{
    connect_devid1, connect_plain, server_name, tls_config, Client, ClientError, ConnectOptions,
    DeviceOptions, Event, Message, OutgoingMessage, Protection, Rotation, TlsOptions, Transport,
};

#[derive(Parser)]
#[command(
    name = "devid-agent",
    version,
    about = "devid device agent: DEVID-1 over MQTT v5"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Authenticate, print the session id; stay connected with --stay.
    Connect {
        #[command(flatten)]
        common: Common,
        /// Stay connected and print events until the broker disconnects (or Ctrl-C); with
        /// --renew, keep the LDevID fresh and reconnect after each renewal.
        #[arg(long)]
        stay: bool,
        #[command(flatten)]
        renew: renew_cli::RenewArgs,
    },
    /// Enroll or renew the LDevID now if it is due (or --force), then exit; --status only shows.
    Renew(renew_cli::RenewCmd),
    /// Publish a message.
    Publish {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        message: String,
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
        qos: u8,
        /// Authenticate the message with devid-seq and devid-mac.
        #[arg(long, conflicts_with = "seal")]
        mac: bool,
        /// Encrypt the payload (devid-seq, devid-seal).
        #[arg(long)]
        seal: bool,
        /// A user property NAME=VALUE (repeatable).
        #[arg(long = "user-property", value_parser = parse_kv)]
        user_properties: Vec<(String, String)>,
        /// Publish the message this many times.
        #[arg(long, default_value_t = 1)]
        count: u64,
    },
    /// Subscribe and print messages.
    Subscribe {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
        qos: u8,
        /// Exit after this many messages.
        #[arg(long)]
        count: Option<u64>,
        /// Give up after this many seconds (exit 1 if --count was not reached).
        #[arg(long)]
        timeout: Option<f64>,
    },
    /// Relay sensor readings (DEVID-S1) from a serial line, pty or Unix socket, as this device.
    Gateway(gateway_cmd::GatewayArgs),
    /// A simulated sensor: MACed or sealed readings framed onto a gateway's link.
    Sensor(gateway_cmd::SensorArgs),
    /// Load tools for benchmarks.
    Bench {
        #[command(subcommand)]
        cmd: bench::BenchCmd,
    },
}

/// How to reach the broker and who we are.
#[derive(Args, Clone)]
pub(crate) struct Common {
    /// HOST:PORT of the MQTT broker.
    #[arg(long)]
    broker: String,
    /// Device certificate chain (PEM, leaf first).
    #[arg(long)]
    cert: PathBuf,
    /// Device private key (PKCS#8 or SEC1 PEM).
    #[arg(long)]
    key: PathBuf,
    /// The devid root certificate (trust anchor for the broker's DEVID-1 certificate).
    #[arg(long)]
    root: PathBuf,
    /// Require this SAN DNS name in the broker certificate (and use it for TLS).
    #[arg(long)]
    broker_name: Option<String>,
    /// ClientID for CONNECT (default: the certificate's CN).
    #[arg(long)]
    client_id: Option<String>,
    /// Connect over TLS.
    #[arg(long)]
    tls: bool,
    /// Trust anchors for the TLS server certificate (default: --root).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Mutual TLS instead of DEVID-1: present the device certificate in TLS, no AUTH.
    #[arg(long)]
    mtls: bool,
    /// Keep-alive in seconds.
    #[arg(long, default_value_t = 60)]
    keep_alive: u16,
    /// The device's software version, reported in CONNECT (`devid-sw`) for fleet health: 1 to
    /// 64 printable ASCII characters.
    #[arg(long)]
    sw_version: Option<devid_core::SwVersion>,
    /// Never resume with a stored ticket (always a full handshake).
    #[arg(long)]
    no_resume: bool,
    /// Machine-readable output (one JSON object per line).
    #[arg(long)]
    json: bool,
    /// Rotate keys (AUTH 0x19) after this many MACed or sealed messages (DEVID-1 only).
    #[arg(long)]
    rotate_messages: Option<u64>,
    /// Rotate keys after this many minutes (DEVID-1 only).
    #[arg(long)]
    rotate_minutes: Option<u64>,
}

impl Common {
    fn rotation(&self) -> Rotation {
        Rotation {
            after_messages: self.rotate_messages,
            after: self
                .rotate_minutes
                .map(|m| Duration::from_secs(m.saturating_mul(60))),
        }
    }
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))
}

/// A failure to report: message and exit code.
pub(crate) struct Failure {
    msg: String,
    code: u8,
}

impl Failure {
    pub(crate) fn usage(msg: impl Into<String>) -> Self {
        Self {
            msg: msg.into(),
            code: 2,
        }
    }
    pub(crate) fn failed(msg: impl Into<String>) -> Self {
        Self {
            msg: msg.into(),
            code: 1,
        }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::failed(e.to_string())
    }
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("devid-agent: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("devid-agent: {}", f.msg);
            ExitCode::from(f.code)
        }
    }
}

/// Everything a command needs to connect.
pub(crate) struct Setup {
    pub(crate) common: Common,
    pub(crate) creds: DeviceCredentials,
    pub(crate) transport: Transport,
    pub(crate) config: Option<Arc<ClientConfig>>,
}

pub(crate) fn setup(common: &Common) -> Result<Setup, Failure> {
    let creds = DeviceCredentials::load(&common.cert, &common.key)
        .map_err(|e| Failure::usage(e.to_string()))?;
    let root = load_certs(&common.root).map_err(|e| Failure::usage(e.to_string()))?;
    let tls = common.tls || common.mtls;
    let transport = if tls {
        let roots = match &common.ca_file {
            Some(p) => load_certs(p).map_err(|e| Failure::usage(e.to_string()))?,
            None => root.clone(),
        };
        let config = tls_config(TlsOptions {
            roots,
            client_auth: common.mtls.then(|| (creds.chain.clone(), creds.tls_key())),
            tls13_only: false,
            resumption: true,
        })
        .map_err(|e| Failure::usage(e.to_string()))?;
        Transport::Tls {
            config,
            server_name: server_name(&common.broker, common.broker_name.as_deref())
                .map_err(|e| Failure::usage(e.to_string()))?,
        }
    } else {
        Transport::Tcp
    };
    let config = if common.mtls {
        None
    } else {
        let rng = ring::rand::SystemRandom::new();
        let signer = EcdsaSigner::from_pkcs8_der(creds.key_pkcs8.secret_pkcs8_der(), &rng)
            .map_err(|e| Failure::usage(e.to_string()))?;
        // A certificate file written as "leaf + chain.pem" also holds the root; DEVID-1 never
        // sends it (the broker has it).
        let chain = creds
            .chain
            .iter()
            .filter(|c| c.as_ref() != root[0].as_ref())
            .map(|c| c.to_vec())
            .collect();
        // load_certs returns at least one certificate: root[0] exists.
        // Re-authentications (key rotation by full handshake) and reconnects of this process
        // skip the broker chain's signature checks; the name and sig_s/mac_s/mac_f still are.
        let mut config = ClientConfig::new(&root[0], chain, Arc::new(signer))
            .map_err(|e| Failure::usage(e.to_string()))?
            .with_broker_cert_cache(Arc::new(MemoryBrokerCertCache::new(4)));
        if let Some(n) = &common.broker_name {
            config = config
                .with_broker_name(n)
                .map_err(|e| Failure::usage(e.to_string()))?;
        }
        Some(Arc::new(config))
    };
    Ok(Setup {
        common: common.clone(),
        creds,
        transport,
        config,
    })
}

/// Connects as the setup says; prints the session line.
pub(crate) async fn connect(s: &Setup, rotation: Rotation) -> Result<Client, Failure> {
    let c = &s.common;
    let client_id = c
        .client_id
        .clone()
        .unwrap_or_else(|| s.creds.client_id.clone());
    let mut opts = ConnectOptions::new(client_id);
    opts.keep_alive = c.keep_alive;
    opts.sw_version = c.sw_version.clone();
    match &s.config {
        None => {
            let (client, connected) = connect_plain(&c.broker, &s.transport, &opts)
                .await
                .map_err(refusal)?;
            if c.json {
                println!(
                    "{}",
                    serde_json::json!({"event": "connected", "client_id": connected.client_id, "auth": "mtls"})
                );
            } else {
                println!("connected client_id={} (mutual TLS)", connected.client_id);
            }
            Ok(client)
        }
        Some(config) => {
            let mut d = DeviceOptions::new(c.broker.clone(), s.transport.clone(), config.clone());
            d.connect = opts;
            d.ticket_file = Some(ticket_path_for_key(&c.key));
            d.resume = !c.no_resume;
            d.rotation = rotation;
            let (client, info) = connect_devid1(&d).await.map_err(refusal)?;
            if c.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "event": "connected",
                        "session_id": info.session_id,
                        "client_id": info.client_id,
                        "resumed": info.resumed,
                        "resume_refused": info.resume_refused.map(|r| r.map(|r| r.0)),
                        "ticket": info.ticket_received,
                        // This session's handshake, and everything this process did so far
                        // (including a refused resumption's fallback).
                        "pk_ops": pk_ops_json(info.pk_ops),
                        "pk_ops_process": pk_ops_json(pk_operations()),
                    })
                );
            } else {
                println!(
                    "session_id={} client_id={} resumed={} pk_ops={}{}",
                    info.session_id,
                    info.client_id,
                    info.resumed,
                    info.pk_ops.total(),
                    match info.resume_refused {
                        Some(Some(r)) => format!(" (resumption refused: {r}; full handshake)"),
                        Some(None) => " (resumption failed; full handshake)".into(),
                        None => String::new(),
                    }
                );
            }
            Ok(client)
        }
    }
}

/// A connect failure, with the CONNACK reason code when there is one.
fn refusal(e: ClientError) -> Failure {
    match e.reason_code() {
        Some(r) => Failure::failed(format!("refused: {r} ({e})")),
        None => Failure::failed(e.to_string()),
    }
}

fn pk_ops_json(ops: devid_core::protocol::PkOps) -> serde_json::Value {
    serde_json::json!({
        "total": ops.total(),
        "ecdh_keygen": ops.ecdh_keygen,
        "ecdh_agree": ops.ecdh_agree,
        "ecdsa_sign": ops.ecdsa_sign,
        "ecdsa_verify": ops.ecdsa_verify,
    })
}

pub(crate) fn print_event(ev: &Event, json: bool) {
    match ev {
        Event::Message(m) => print_message(m, json),
        Event::Disconnected {
            reason,
            reason_string,
        } => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"event": "disconnected", "reason": reason.0, "name": reason.name(), "reason_string": reason_string})
                );
            } else {
                println!("disconnected by the broker: {reason}");
            }
        }
        Event::Reauthenticated { session_id } => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"event": "reauthenticated", "session_id": session_id})
                );
            } else {
                println!("reauthenticated session_id={session_id}");
            }
        }
        Event::Closed(why) => {
            if json {
                println!("{}", serde_json::json!({"event": "closed", "why": why}));
            } else {
                println!("connection closed: {why}");
            }
        }
    }
}

fn print_message(m: &Message, json: bool) {
    let payload = String::from_utf8_lossy(&m.payload);
    if json {
        println!(
            "{}",
            serde_json::json!({
                "event": "message",
                "topic": m.topic,
                "payload": payload,
                "payload_hex": hex::encode(&m.payload),
                "qos": m.qos as u8,
                "retain": m.retain,
                "user_properties": m.user_properties,
            })
        );
    } else {
        let props: Vec<String> = m
            .user_properties
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("{} {} [{}]", m.topic, payload, props.join(" "));
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.cmd {
        Cmd::Connect {
            common,
            stay,
            renew,
        } => {
            if renew.enabled() {
                if !stay {
                    return Err(Failure::usage(
                        "--renew needs --stay (or: devid-agent renew)",
                    ));
                }
                return renew_cli::stay(common, renew).await;
            }
            let s = setup(&common)?;
            let mut client = connect(&s, common.rotation()).await?;
            if !stay {
                client.disconnect().await?;
                return Ok(());
            }
            loop {
                tokio::select! {
                    ev = client.next_event() => match ev {
                        Some(ev @ (Event::Disconnected { .. } | Event::Closed(_))) => {
                            print_event(&ev, common.json);
                            return Err(Failure::failed("disconnected"));
                        }
                        Some(ev) => print_event(&ev, common.json),
                        None => return Err(Failure::failed("disconnected")),
                    },
                    _ = tokio::signal::ctrl_c() => {
                        client.disconnect().await?;
                        return Ok(());
                    }
                }
            }
        }
        Cmd::Publish {
            common,
            topic,
            message,
            qos,
            mac,
            seal,
            user_properties,
            count,
        } => {
            let s = setup(&common)?;
            if (mac || seal) && s.config.is_none() {
                return Err(Failure::usage("--mac and --seal need DEVID-1 (not --mtls)"));
            }
            let mut client = connect(&s, common.rotation()).await?;
            let qos = QoS::from_u8(qos).ok_or_else(|| Failure::usage("--qos 0, 1 or 2"))?;
            let mut msg = OutgoingMessage::new(topic, message.into_bytes(), qos);
            msg.user_properties = user_properties;
            msg.protection = if seal {
                Protection::Seal
            } else if mac {
                Protection::Mac
            } else {
                Protection::None
            };
            let mut refused = None;
            for _ in 0..count {
                // Print rotations and the like as they come.
                while let Ok(Some(ev)) =
                    tokio::time::timeout(Duration::ZERO, client.next_event()).await
                {
                    print_event(&ev, common.json);
                }
                match client.publish(msg.clone()).await? {
                    None => {
                        if !common.json {
                            println!("published (QoS 0)");
                        }
                    }
                    Some(ack) => {
                        if common.json {
                            println!(
                                "{}",
                                serde_json::json!({"event": "puback", "reason": ack.reason.0, "name": ack.reason.name()})
                            );
                        } else {
                            println!("PUBACK {}", ack.reason);
                        }
                        if !ack.reason.is_success() {
                            refused = Some(ack.reason);
                        }
                    }
                }
            }
            client.disconnect().await?;
            match refused {
                Some(r) => Err(Failure::failed(format!("refused: PUBACK {r}"))),
                None => Ok(()),
            }
        }
        Cmd::Subscribe {
            common,
            topic,
            qos,
            count,
            timeout,
        } => {
            let s = setup(&common)?;
            let mut client = connect(&s, common.rotation()).await?;
            let qos = QoS::from_u8(qos).ok_or_else(|| Failure::usage("--qos 0, 1 or 2"))?;
            let codes = client
                .subscribe(vec![(topic, SubscriptionOptions::qos(qos))])
                .await?;
            let code = codes
                .first()
                .copied()
                .unwrap_or(ReasonCode::UNSPECIFIED_ERROR);
            if common.json {
                println!(
                    "{}",
                    serde_json::json!({"event": "suback", "reason": code.0, "name": code.name()})
                );
            } else {
                println!("SUBACK {code}");
            }
            if !code.is_success() {
                return Err(Failure::failed(format!("refused: SUBACK {code}")));
            }
            let deadline =
                timeout.map(|t| tokio::time::Instant::now() + Duration::from_secs_f64(t));
            let mut got = 0u64;
            loop {
                if count.is_some_and(|c| got >= c) {
                    client.disconnect().await?;
                    return Ok(());
                }
                let ev = match deadline {
                    Some(d) => match tokio::time::timeout_at(d, client.next_event()).await {
                        Ok(ev) => ev,
                        Err(_) => {
                            client.disconnect().await?;
                            return match count {
                                Some(c) => Err(Failure::failed(format!(
                                    "timed out after {got} of {c} messages"
                                ))),
                                None => Ok(()),
                            };
                        }
                    },
                    None => client.next_event().await,
                };
                match ev {
                    Some(ev @ Event::Message(_)) => {
                        print_event(&ev, common.json);
                        got += 1;
                    }
                    Some(ev @ (Event::Disconnected { .. } | Event::Closed(_))) => {
                        print_event(&ev, common.json);
                        return Err(Failure::failed("disconnected"));
                    }
                    Some(ev) => print_event(&ev, common.json),
                    None => return Err(Failure::failed("disconnected")),
                }
            }
        }
        Cmd::Gateway(a) => gateway_cmd::gateway(a).await,
        Cmd::Sensor(a) => gateway_cmd::sensor(a),
        Cmd::Renew(cmd) => renew_cli::renew_once(cmd).await,
        Cmd::Bench { cmd } => bench::run(cmd).await,
    }
}
