//! A renewal storm over MQTT: N connected devices ask for a new LDevID at once through one
//! Mosquitto with the plugin, while one device keeps ordinary QoS 1 traffic going through the
//! same broker (publish to its own topic, receive it on its subscription).
//!
//! `cargo bench [--profile dev] -p devid-e2e --bench renewal_storm [-- N] [--artifacts PROFILE]`
//! (default 200 devices). Runs the devid-server and the plugin of the cargo profile PROFILE
//! (`debug`, the default, as every e2e run; `release` for figures worth recording): build them
//! first (`cargo build --workspace`, or `cargo build --release -p devid-server --bin
//! devid-server -p devid-mosquitto`). The setup registers the devices with
//! `POST /v1/devices/batch` and connects them [`CONNECTING`] at a time; each device's renewal
//! request (CSR) is made before the storm's clock starts, as a device makes it on its own CPU.
//! A device told `unavailable` (the plugin keeps at most 1,024 renewals in flight) backs off
//! and asks again, as a device's renewal engine does; its latency counts from its first ask.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use devid_e2e::devid_device::mqtt::{QoS, SubscriptionOptions};
use devid_e2e::devid_device::{renew_over_mqtt, renewal_request, Event, OutgoingMessage};
use devid_e2e::*;

/// Devices connecting at once during the setup.
const CONNECTING: usize = 64;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(name: &str, mut v: Vec<Duration>) -> String {
    v.sort();
    format!(
        "{name}: n {} p50 {:.1} ms p99 {:.1} ms max {:.1} ms",
        v.len(),
        percentile(&v, 0.5).as_secs_f64() * 1e3,
        percentile(&v, 0.99).as_secs_f64() * 1e3,
        v.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    )
}

/// The device count (the first number among the arguments) and the artifacts' profile.
fn parse_args() -> (usize, String) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n = args.iter().find_map(|a| a.parse().ok()).unwrap_or(200);
    let profile = args
        .iter()
        .position(|a| a == "--artifacts")
        .map(|i| {
            args.get(i + 1)
                .expect("--artifacts takes a profile")
                .clone()
        })
        .unwrap_or_else(|| "debug".to_string());
    (n, profile)
}

/// Connects every device with DEVID-1, [`CONNECTING`] at a time; in the order of `creds`.
async fn connect_all(
    addr: &str,
    creds: Vec<DeviceCreds>,
    root: &[u8],
) -> Vec<(DeviceCreds, Device)> {
    let gate = Arc::new(tokio::sync::Semaphore::new(CONNECTING));
    let root = Arc::new(root.to_vec());
    let mut tasks = Vec::with_capacity(creds.len());
    for c in creds {
        let (gate, root, addr) = (gate.clone(), root.clone(), addr.to_string());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.expect("semaphore");
            let d = connect(&addr, &c, &root, None, Tamper::None)
                .await
                .unwrap_or_else(|e| panic!("connect {}: {e}", c.client_id));
            (c, d)
        }));
    }
    let mut devices = Vec::with_capacity(tasks.len());
    for t in tasks {
        devices.push(t.await.expect("connect task"));
    }
    devices
}

/// First wait after an `unavailable` refusal; it doubles up to [`RETRY_MAX`], each drawn
/// uniformly in [d/2, d), as a device's renewal engine backs off (`devid_device::renew`).
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(8);

/// Renews over `client` until issued, refused for another reason, or `deadline` passes: a
/// device told `unavailable` (the broker's or the service's word for "busy, come back") waits
/// its backoff and asks again. The result and the number of retries.
async fn renew_until_served(
    client: &devid_device::Client,
    csr: Vec<u8>,
    deadline: Duration,
) -> (Result<(), String>, u32) {
    use devid_e2e::devid_device::RenewError;
    let started = Instant::now();
    let mut retries = 0u32;
    loop {
        let left = deadline.saturating_sub(started.elapsed());
        match renew_over_mqtt(client, csr.clone(), None, left).await {
            Ok(_) => return (Ok(()), retries),
            Err(RenewError::Refused {
                refusal: Some(devid_core::ldevid::Refusal::Unavailable),
                ..
            }) if started.elapsed() < deadline => {
                let d = RETRY_MIN.saturating_mul(1 << retries.min(8)).min(RETRY_MAX);
                let u = f64::from(u16::from_le_bytes(jitter())) / 65536.0;
                tokio::time::sleep(d.mul_f64(0.5 + u / 2.0)).await;
                retries += 1;
            }
            Err(e) => return (Err(e.to_string()), retries),
        }
    }
}

fn jitter() -> [u8; 2] {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 2];
    ring::rand::SystemRandom::new().fill(&mut b).expect("rng");
    b
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (n, profile) = parse_args();
    let service = Service::start_in(&profile, &Backend::Sqlite, &[]).await;
    let identity = service.enroll_broker("mqtt.bench.local").await;
    let mut settings = BrokerSettings::new(&service, identity);
    settings.plugin_profile = profile.clone();
    // The setup's handshakes all come from 127.0.0.1, where a fleet's come from many
    // addresses: neither the hello rate nor the unfinished handshakes per address (default 32)
    // are what is measured here.
    settings.hello_rate = (100_000, 100_000);
    settings.extra.push(format!(
        "plugin_opt_max_pending_per_address {}",
        CONNECTING * 2
    ));
    let broker = Broker::start(settings);
    let root = service.root_der();
    let t = Instant::now();
    let serials: Vec<String> = (0..n).map(|i| format!("hw-storm-{i}")).collect();
    let creds = service.register_devices(&serials).await;
    eprintln!(
        "{n} devices registered in {:?} ({profile} builds)",
        t.elapsed()
    );
    let t = Instant::now();
    let devices = connect_all(&broker.addr(), creds, &root).await;
    eprintln!("{n} devices connected in {:?}", t.elapsed());

    // Ordinary traffic: one device publishes QoS 1 to its own topic and receives it.
    let creds = service.register_device("hw-storm-traffic").await;
    let mut traffic = connect(&broker.addr(), &creds, &root, None, Tamper::None)
        .await
        .expect("connect");
    let topic = format!("devices/{}/ping", creds.client_id);
    traffic
        .client
        .subscribe(vec![(
            topic.clone(),
            SubscriptionOptions::qos(QoS::AtLeastOnce),
        )])
        .await
        .expect("subscribe");
    let stop = Arc::new(AtomicBool::new(false));
    let storm_on = Arc::new(AtomicBool::new(false));
    let traffic_task = {
        let (stop, storm_on) = (stop.clone(), storm_on.clone());
        tokio::spawn(async move {
            let (mut before, mut during) = (Vec::new(), Vec::new());
            while !stop.load(Ordering::SeqCst) {
                let t0 = Instant::now();
                let in_storm = storm_on.load(Ordering::SeqCst);
                traffic
                    .client
                    .publish(OutgoingMessage::new(
                        topic.clone(),
                        b"21.5".to_vec(),
                        QoS::AtLeastOnce,
                    ))
                    .await
                    .expect("publish");
                loop {
                    match tokio::time::timeout(Duration::from_secs(10), traffic.client.next_event())
                        .await
                    {
                        Ok(Some(Event::Message(_))) => break,
                        Ok(Some(_)) => continue,
                        other => panic!("ordinary traffic stopped: {other:?}"),
                    }
                }
                if in_storm {
                    during.push(t0.elapsed());
                } else {
                    before.push(t0.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (before, during)
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Each device's renewal request (same key), made before the clock starts.
    let requests: Vec<_> = devices
        .into_iter()
        .map(|(creds, d)| {
            let key = ring::signature::EcdsaKeyPair::from_pkcs8(
                &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                &creds.key_pkcs8_der,
                &ring::rand::SystemRandom::new(),
            )
            .expect("key");
            let (csr, _) = renewal_request(&creds.chain_der[0], &key, None).expect("csr");
            (csr, d)
        })
        .collect();
    // A renewal's deadline: at the slowest rate on record (~80/s, debug builds), with room.
    let deadline = Duration::from_secs(120 + n as u64 / 40);

    // The storm: every device renews at once.
    storm_on.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for (csr, d) in requests {
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let (r, retries) = renew_until_served(&d.client, csr, deadline).await;
            (t.elapsed(), r, retries, d)
        }));
    }
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    let mut keep = Vec::new();
    let mut retried = 0usize;
    let mut retries_total = 0u32;
    for t in tasks {
        let (lat, r, retries, d) = t.await.expect("task");
        match r {
            Ok(()) => ok.push(lat),
            Err(e) => failed.push(e),
        }
        if retries > 0 {
            retried += 1;
            retries_total += retries;
        }
        keep.push(d);
    }
    let wall = t0.elapsed();
    storm_on.store(false, Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    let (before, during) = traffic_task.await.expect("traffic");
    println!(
        "renewal storm: {n} devices over MQTT through one Mosquitto ({profile} builds); {} issued, {} failed in {:.2} s ({:.0} renewals/s)",
        ok.len(),
        failed.len(),
        wall.as_secs_f64(),
        ok.len() as f64 / wall.as_secs_f64()
    );
    println!("{}", summary("renewal latency", ok));
    println!("{}", summary("ordinary QoS 1 round trip before", before));
    println!("{}", summary("ordinary QoS 1 round trip during", during));
    println!(
        "devices told `unavailable` at least once (the plugin's bound on renewals in flight) \
         and retried: {retried}, {retries_total} retries in all"
    );
    let mut reasons = failed.clone();
    reasons.sort();
    reasons.dedup();
    for r in reasons.iter().take(5) {
        println!(
            "failure: {r} (x{})",
            failed.iter().filter(|f| *f == r).count()
        );
    }
    drop(keep);
}
