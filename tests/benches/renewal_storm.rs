//! A renewal storm over MQTT: N connected devices ask for a new LDevID at once through one
//! Mosquitto with the plugin, while one device keeps ordinary QoS 1 traffic going through the
//! same broker (publish to its own topic, receive it on its subscription).
//!
//! `cargo build --workspace && cargo bench [--profile dev] -p devid-e2e --bench renewal_storm [-- N]`
//! (default 200). Uses the devid-server and plugin in target/debug, as every e2e run does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use devid_e2e::devid_device::mqtt::{QoS, SubscriptionOptions};
use devid_e2e::devid_device::{renew_over_mqtt, renewal_request, Event, OutgoingMessage};
use devid_e2e::*;

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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);
    let service = Service::start().await;
    let identity = service.enroll_broker("mqtt.bench.local").await;
    let broker = Broker::start(BrokerSettings::new(&service, identity));
    let root = service.root_der();
    let t = Instant::now();
    let mut devices = Vec::with_capacity(n);
    for i in 0..n {
        let creds = service.register_device(&format!("hw-storm-{i}")).await;
        let d = connect(&broker.addr(), &creds, &root, None, Tamper::None)
            .await
            .expect("connect");
        devices.push((creds, d));
    }
    eprintln!("{n} devices registered and connected in {:?}", t.elapsed());

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

    // The storm: every device renews (same key) at once.
    storm_on.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for (creds, d) in devices {
        tasks.push(tokio::spawn(async move {
            let key = ring::signature::EcdsaKeyPair::from_pkcs8(
                &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                &creds.key_pkcs8_der,
                &ring::rand::SystemRandom::new(),
            )
            .expect("key");
            let (csr, _) = renewal_request(&creds.chain_der[0], &key, None).expect("csr");
            let t = Instant::now();
            let r = renew_over_mqtt(&d.client, csr, None, Duration::from_secs(120)).await;
            (t.elapsed(), r.map(|_| ()).map_err(|e| e.to_string()), d)
        }));
    }
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    let mut keep = Vec::new();
    for t in tasks {
        let (lat, r, d) = t.await.expect("task");
        match r {
            Ok(()) => ok.push(lat),
            Err(e) => failed.push(e),
        }
        keep.push(d);
    }
    let wall = t0.elapsed();
    storm_on.store(false, Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    let (before, during) = traffic_task.await.expect("traffic");
    println!(
        "renewal storm: {n} devices over MQTT through one Mosquitto; {} issued, {} failed in {:.2} s ({:.0} renewals/s)",
        ok.len(),
        failed.len(),
        wall.as_secs_f64(),
        ok.len() as f64 / wall.as_secs_f64()
    );
    println!("{}", summary("renewal latency", ok));
    println!("{}", summary("ordinary QoS 1 round trip before", before));
    println!("{}", summary("ordinary QoS 1 round trip during", during));
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
