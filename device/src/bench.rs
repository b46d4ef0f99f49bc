//! `devid-agent bench connect`: N concurrent devices connecting in a loop (full DEVID-1
//! handshakes, DEVID-1 resumptions, or TLS 1.3 mutual-TLS MQTT connects as the baseline), with
//! throughput, latency percentiles, and the CPU time of this process (and of the broker when its
//! PID is given).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use devid_core::protocol::{
    BrokerCertCache, ClientConfig, EcdsaSigner, MemoryBrokerCertCache, ResumptionTicket,
};
use devid_device::credentials::{load_certs, DeviceCredentials};
use devid_device::mqtt::ReasonCode;
use devid_device::{
    handshake, open, server_name, tls_config, ClientError, ConnectOptions, Devid1, NoAuth,
    TlsOptions, Transport,
};

use crate::Failure;

#[derive(Subcommand)]
pub(crate) enum BenchCmd {
    /// Connect, CONNACK, DISCONNECT, repeat, from N concurrent devices.
    Connect(ConnectBench),
    /// Publish throughput of one device: N messages in flight, optionally MACed or sealed.
    Publish(PublishBench),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Protect {
    None,
    Mac,
    Seal,
}

#[derive(Args)]
pub(crate) struct PublishBench {
    #[command(flatten)]
    common: crate::Common,
    /// Topic (default `devices/<ClientID>/bench`).
    #[arg(long)]
    topic: Option<String>,
    /// Payload bytes.
    #[arg(long, default_value_t = 256)]
    size: usize,
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
    /// Publishes in flight at once.
    #[arg(long, default_value_t = 64)]
    inflight: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    #[arg(long, value_enum, default_value_t = Protect::None)]
    protect: Protect,
    /// The broker's PID, to report its CPU time over the run.
    #[arg(long)]
    broker_pid: Option<u32>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    /// Full DEVID-1 handshakes over plain TCP.
    Devid1,
    /// DEVID-1 resumptions (one full handshake per device first, then tickets).
    Resume,
    /// TLS 1.3 mutual-TLS MQTT connects, no AUTH (the baseline).
    Mtls,
    /// Anonymous MQTT connects over plain TCP, no AUTH: the broker's ceiling (point it at a
    /// listener that admits anonymous clients, i.e. a Mosquitto without the devid plugin).
    Plain,
}

#[derive(Args)]
pub(crate) struct ConnectBench {
    /// HOST:PORT of the broker (for --mode mtls: its TLS listener).
    #[arg(long)]
    broker: String,
    /// A directory of devices: NAME.crt (chain, leaf first) with NAME.key beside it, directly
    /// or one level down.
    #[arg(long)]
    devices: PathBuf,
    /// The devid root certificate.
    #[arg(long)]
    root: PathBuf,
    /// Trust anchors for the broker's TLS certificate (default: --root).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// The broker certificate's SAN DNS name (checked, and the TLS server name).
    #[arg(long)]
    broker_name: Option<String>,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    #[arg(long, value_enum, default_value_t = Mode::Devid1)]
    mode: Mode,
    /// The broker's PID, to report its CPU time over the run.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Verify the broker's certificate chain on every handshake instead of caching it by
    /// fingerprint (shared by all simulated devices, as one root).
    #[arg(long)]
    no_broker_cert_cache: bool,
    #[arg(long)]
    json: bool,
}

/// One device, ready to connect.
struct Device {
    client_id: String,
    config: Option<Arc<ClientConfig>>,
    transport: Transport,
}

fn find_devices(dir: &Path) -> Result<Vec<(PathBuf, PathBuf)>, Failure> {
    let mut out = Vec::new();
    let scan = |d: &Path, out: &mut Vec<(PathBuf, PathBuf)>| -> Result<Vec<PathBuf>, Failure> {
        let mut subdirs = Vec::new();
        let rd =
            std::fs::read_dir(d).map_err(|e| Failure::usage(format!("{}: {e}", d.display())))?;
        for entry in rd.flatten() {
            let p = entry.path();
            if p.is_dir() {
                subdirs.push(p);
            } else if p.extension().is_some_and(|e| e == "crt") {
                let key = p.with_extension("key");
                if key.exists() {
                    out.push((p, key));
                }
            }
        }
        Ok(subdirs)
    };
    for sub in scan(dir, &mut out)? {
        scan(&sub, &mut out)?;
    }
    out.sort();
    if out.is_empty() {
        return Err(Failure::usage(format!(
            "{}: no NAME.crt with NAME.key found",
            dir.display()
        )));
    }
    Ok(out)
}

fn load_devices(b: &ConnectBench) -> Result<Vec<Device>, Failure> {
    let root = load_certs(&b.root).map_err(|e| Failure::usage(e.to_string()))?;
    let tls_roots = match &b.ca_file {
        Some(p) => load_certs(p).map_err(|e| Failure::usage(e.to_string()))?,
        None => root.clone(),
    };
    let broker_cache: Option<Arc<dyn BrokerCertCache>> = if b.no_broker_cert_cache {
        None
    } else {
        Some(Arc::new(MemoryBrokerCertCache::new(16)))
    };
    let mut devices = Vec::new();
    for (crt, key) in find_devices(&b.devices)? {
        let creds =
            DeviceCredentials::load(&crt, &key).map_err(|e| Failure::usage(e.to_string()))?;
        let (config, transport) = match b.mode {
            Mode::Devid1 | Mode::Resume => {
                let rng = ring::rand::SystemRandom::new();
                let signer = EcdsaSigner::from_pkcs8_der(creds.key_pkcs8.secret_pkcs8_der(), &rng)
                    .map_err(|e| Failure::usage(e.to_string()))?;
                let chain = creds.chain.iter().map(|c| c.to_vec()).collect();
                // load_certs returns at least one certificate: root[0] exists.
                let mut c = ClientConfig::new(&root[0], chain, Arc::new(signer))
                    .map_err(|e| Failure::usage(format!("{}: {e}", crt.display())))?;
                if let Some(n) = &b.broker_name {
                    c = c
                        .with_broker_name(n)
                        .map_err(|e| Failure::usage(e.to_string()))?;
                }
                if let Some(cache) = &broker_cache {
                    c = c.with_broker_cert_cache(cache.clone());
                }
                (Some(Arc::new(c)), Transport::Tcp)
            }
            Mode::Plain => (None, Transport::Tcp),
            Mode::Mtls => {
                // TLS 1.3 only and no session resumption: every connect is a full handshake.
                let config = tls_config(TlsOptions {
                    roots: tls_roots.clone(),
                    client_auth: Some((creds.chain.clone(), creds.tls_key())),
                    tls13_only: true,
                    resumption: false,
                })
                .map_err(|e| Failure::usage(e.to_string()))?;
                let server_name = server_name(&b.broker, b.broker_name.as_deref())
                    .map_err(|e| Failure::usage(e.to_string()))?;
                (
                    None,
                    Transport::Tls {
                        config,
                        server_name,
                    },
                )
            }
        };
        devices.push(Device {
            client_id: creds.client_id,
            config,
            transport,
        });
    }
    Ok(devices)
}

/// CPU time used by this process and, when its PID is known, the broker, since `start`.
struct CpuMeter {
    own: Option<f64>,
    broker: Option<(u32, f64)>,
}

impl CpuMeter {
    fn start(broker_pid: Option<u32>) -> CpuMeter {
        CpuMeter {
            own: cpu_seconds(None),
            broker: broker_pid.and_then(|p| Some((p, cpu_seconds(Some(p))?))),
        }
    }

    /// Seconds of CPU (this process, the broker) since `start`.
    fn used(&self) -> (Option<f64>, Option<f64>) {
        let own = cpu_seconds(None).zip(self.own).map(|(a, b)| a - b);
        let broker = self
            .broker
            .and_then(|(p, b)| Some(cpu_seconds(Some(p))? - b));
        (own, broker)
    }
}

/// Process CPU time (user + system) from /proc/PID/stat, in seconds. /proc counts it in clock
/// ticks (USER_HZ, see [`clock_ticks_per_second`]).
fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks_per_second()?)
}

/// The clock ticks per second /proc counts CPU time in (what `sysconf(_SC_CLK_TCK)` returns):
/// the kernel hands it to every process in its auxiliary vector as `AT_CLKTCK`, which
/// /proc/self/auxv lists as pairs of native words. None when it cannot be read.
fn clock_ticks_per_second() -> Option<f64> {
    static TICKS: std::sync::OnceLock<Option<f64>> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        const AT_CLKTCK: usize = 17;
        let auxv = std::fs::read("/proc/self/auxv").ok()?;
        let word = std::mem::size_of::<usize>();
        auxv.chunks_exact(2 * word).find_map(|pair| {
            let key = usize::from_ne_bytes(pair[..word].try_into().ok()?);
            let value = usize::from_ne_bytes(pair[word..].try_into().ok()?);
            (key == AT_CLKTCK && value > 0).then_some(value as f64)
        })
    })
}

/// Per-worker results.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    resumed: u64,
    errors: BTreeMap<String, u64>,
}

async fn one_connect(
    d: &Device,
    broker: &str,
    mode: Mode,
    ticket: &mut Option<ResumptionTicket>,
) -> Result<bool, ClientError> {
    let mut conn = open(broker, &d.transport).await?;
    let opts = ConnectOptions::new(d.client_id.clone());
    let resumed = match (&d.config, mode) {
        (Some(config), Mode::Resume) => {
            let mut auth = match ticket.take() {
                Some(t) => Devid1::resume(config.clone(), t),
                None => Devid1::new(config.clone()),
            };
            let c = handshake(&mut conn, &opts, Some(&mut auth)).await?;
            let s = c.auth.ok_or(ClientError::Closed)?;
            *ticket = s.ticket.clone();
            s.resumed
        }
        (Some(config), _) => {
            let mut auth = Devid1::new(config.clone());
            handshake(&mut conn, &opts, Some(&mut auth)).await?;
            false
        }
        (None, _) => {
            handshake::<NoAuth>(&mut conn, &opts, None).await?;
            false
        }
    };
    conn.disconnect(ReasonCode::SUCCESS).await?;
    Ok(resumed)
}

async fn worker(
    devices: Arc<Vec<Device>>,
    index: usize,
    stride: usize,
    broker: Arc<str>,
    mode: Mode,
    deadline: Instant,
) -> Tally {
    let mut t = Tally::default();
    let mut tickets: Vec<Option<ResumptionTicket>> = Vec::new();
    // Worker i owns devices i, i+N, i+2N, ...: a ClientID is never used twice at once.
    let mine: Vec<usize> = (index..devices.len()).step_by(stride).collect();
    tickets.resize_with(mine.len(), || None);
    let mut k = 0;
    while Instant::now() < deadline {
        let slot = k % mine.len();
        k += 1;
        let d = &devices[mine[slot]];
        let start = Instant::now();
        match one_connect(d, &broker, mode, &mut tickets[slot]).await {
            Ok(resumed) => {
                let us = start.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                t.latencies_us.push(us);
                t.resumed += u64::from(resumed);
            }
            Err(e) => {
                let key = match e.reason_code() {
                    Some(r) => format!("refused {r}"),
                    None => e.to_string(),
                };
                *t.errors.entry(key).or_default() += 1;
                // Do not spin on a dead broker.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    t
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i.min(sorted.len() - 1)]) / 1000.0
}

pub(crate) async fn run(cmd: BenchCmd) -> Result<(), Failure> {
    match cmd {
        BenchCmd::Connect(b) => run_connect(b).await,
        BenchCmd::Publish(b) => run_publish(b).await,
    }
}

async fn run_publish(b: PublishBench) -> Result<(), Failure> {
    if b.inflight == 0 || b.duration.is_nan() || b.duration <= 0.0 {
        return Err(Failure::usage("--inflight and --duration must be positive"));
    }
    if b.protect != Protect::None && b.common.mtls {
        return Err(Failure::usage("--protect needs DEVID-1 (not --mtls)"));
    }
    let s = crate::setup(&b.common)?;
    let client = Arc::new(crate::connect(&s, b.common.rotation()).await?);
    let topic = b
        .topic
        .clone()
        .unwrap_or_else(|| format!("devices/{}/bench", s.creds.client_id));
    let qos = if b.qos == 1 {
        devid_device::mqtt::QoS::AtLeastOnce
    } else {
        devid_device::mqtt::QoS::AtMostOnce
    };
    let mut msg = devid_device::OutgoingMessage::new(topic, vec![0x5a; b.size], qos);
    msg.protection = match b.protect {
        Protect::None => devid_device::Protection::None,
        Protect::Mac => devid_device::Protection::Mac,
        Protect::Seal => devid_device::Protection::Seal,
    };
    let meter = CpuMeter::start(b.broker_pid);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(b.duration);
    let handles: Vec<_> = (0..b.inflight)
        .map(|_| {
            let (client, msg) = (client.clone(), msg.clone());
            tokio::spawn(async move {
                let mut t = Tally::default();
                while Instant::now() < deadline {
                    match client.publish(msg.clone()).await {
                        Ok(None) => t.latencies_us.push(0),
                        Ok(Some(a)) if a.reason.is_success() => t.latencies_us.push(0),
                        Ok(Some(a)) => {
                            *t.errors.entry(format!("PUBACK {}", a.reason)).or_default() += 1
                        }
                        Err(e) => {
                            *t.errors.entry(e.to_string()).or_default() += 1;
                            break;
                        }
                    }
                }
                t
            })
        })
        .collect();
    let mut sent = 0usize;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for h in handles {
        let t = h
            .await
            .map_err(|e| Failure::failed(format!("worker failed: {e}")))?;
        sent += t.latencies_us.len();
        for (k, v) in t.errors {
            *errors.entry(k).or_default() += v;
        }
    }
    // PINGRESP comes after the broker has read every PUBLISH before it.
    client.ping().await?;
    let elapsed = started.elapsed().as_secs_f64();
    let (cpu, bcpu) = meter.used();
    if let Ok(c) = Arc::try_unwrap(client) {
        c.disconnect().await?;
    }
    let rate = sent as f64 / elapsed;
    let protect = match b.protect {
        Protect::None => "none",
        Protect::Mac => "mac",
        Protect::Seal => "seal",
    };
    if b.common.json {
        println!(
            "{}",
            serde_json::json!({
                "bench": "publish",
                "qos": b.qos,
                "size": b.size,
                "protect": protect,
                "inflight": b.inflight,
                "seconds": elapsed,
                "messages": sent,
                "per_second": rate,
                "errors": errors,
                "client_cpu_seconds": cpu,
                "broker_cpu_seconds": bcpu,
            })
        );
    } else {
        println!(
            "publish qos={} size={} protect={protect} inflight={} seconds={elapsed:.2}",
            b.qos, b.size, b.inflight
        );
        println!("messages={sent} ({rate:.0}/s)");
        if let Some(c) = cpu {
            println!(
                "client CPU {c:.2} s ({:.0}% of one core)",
                100.0 * c / elapsed
            );
        }
        if let Some(c) = bcpu {
            println!(
                "broker CPU {c:.2} s ({:.0}% of one core)",
                100.0 * c / elapsed
            );
        }
        for (k, v) in &errors {
            println!("error x{v}: {k}");
        }
    }
    if sent == 0 || !errors.is_empty() {
        return Err(Failure::failed("publishes failed"));
    }
    Ok(())
}

async fn run_connect(b: ConnectBench) -> Result<(), Failure> {
    if b.concurrency == 0 || b.duration.is_nan() || b.duration <= 0.0 {
        return Err(Failure::usage(
            "--concurrency and --duration must be positive",
        ));
    }
    let devices = Arc::new(load_devices(&b)?);
    let concurrency = b.concurrency.min(devices.len());
    if concurrency < b.concurrency {
        eprintln!(
            "devid-agent: only {} devices: concurrency lowered to {concurrency} (one connection per ClientID)",
            devices.len()
        );
    }
    let broker: Arc<str> = Arc::from(b.broker.as_str());
    let meter = CpuMeter::start(b.broker_pid);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(b.duration);
    let handles: Vec<_> = (0..concurrency)
        .map(|i| {
            tokio::spawn(worker(
                devices.clone(),
                i,
                concurrency,
                broker.clone(),
                b.mode,
                deadline,
            ))
        })
        .collect();
    let mut all = Tally::default();
    for h in handles {
        let t = h
            .await
            .map_err(|e| Failure::failed(format!("worker failed: {e}")))?;
        all.latencies_us.extend(t.latencies_us);
        all.resumed += t.resumed;
        for (k, v) in t.errors {
            *all.errors.entry(k).or_default() += v;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (cpu, bcpu) = meter.used();
    all.latencies_us.sort_unstable();
    let ok = all.latencies_us.len();
    let rate = ok as f64 / elapsed;
    let p50 = percentile(&all.latencies_us, 0.50);
    let p99 = percentile(&all.latencies_us, 0.99);
    let errors: u64 = all.errors.values().sum();
    let mode = match b.mode {
        Mode::Devid1 => "devid1",
        Mode::Resume => "resume",
        Mode::Mtls => "mtls",
        Mode::Plain => "plain",
    };
    if b.json {
        println!(
            "{}",
            serde_json::json!({
                "mode": mode,
                "concurrency": concurrency,
                "devices": devices.len(),
                "seconds": elapsed,
                "connects": ok,
                "resumed": all.resumed,
                "per_second": rate,
                "p50_ms": p50,
                "p99_ms": p99,
                "errors": all.errors,
                "client_cpu_seconds": cpu,
                "client_cpu_per_connect_us": cpu.map(|c| if ok > 0 { c * 1e6 / ok as f64 } else { 0.0 }),
                "broker_cpu_seconds": bcpu,
            })
        );
    } else {
        println!(
            "mode={mode} concurrency={concurrency} devices={} seconds={elapsed:.2}",
            devices.len()
        );
        println!(
            "connects={ok} ({rate:.0}/s) resumed={} errors={errors}",
            all.resumed
        );
        println!("latency p50={p50:.2} ms p99={p99:.2} ms");
        if let Some(c) = cpu {
            println!(
                "client CPU {c:.2} s ({:.0}% of one core, {:.0} us per connect)",
                100.0 * c / elapsed,
                if ok > 0 { c * 1e6 / ok as f64 } else { 0.0 }
            );
        }
        if let Some(c) = bcpu {
            println!(
                "broker CPU {c:.2} s ({:.0}% of one core)",
                100.0 * c / elapsed
            );
        }
        for (k, v) in &all.errors {
            println!("error x{v}: {k}");
        }
    }
    if ok == 0 {
        return Err(Failure::failed("no connect succeeded"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_ticks_are_the_systems() {
        // getconf asks sysconf(_SC_CLK_TCK): an independent reading of the same value.
        let out = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .expect("getconf runs");
        let expected: f64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("getconf prints a number");
        assert_eq!(clock_ticks_per_second(), Some(expected));
        let cpu = cpu_seconds(None).expect("this process's CPU time");
        assert!(cpu >= 0.0, "{cpu}");
    }
}
