//! Revocation propagation: from the revoke call returning to the DISCONNECT reaching the
//! device, through a real devid-server and Mosquitto with the plugin.
//!
//! `cargo build --workspace && cargo bench -p devid-e2e --bench revocation [-- N]` (default 100).

use std::time::{Duration, Instant};

use devid_e2e::devid_device::Event;
use devid_e2e::*;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100);
    let service = Service::start().await;
    let identity = service.enroll_broker("mqtt.bench.local").await;
    let broker = Broker::start(BrokerSettings::new(&service, identity));
    let root = service.root_der();
    let mut devices = Vec::with_capacity(n);
    for i in 0..n {
        let creds = service.register_device(&format!("hw-bench-{i}")).await;
        let d = connect(&broker.addr(), &creds, &root, None, Tamper::None)
            .await
            .expect("connect");
        devices.push((creds, d));
    }
    let mut samples = Vec::with_capacity(n);
    for (creds, mut d) in devices {
        service.revoke(&creds.client_id).await;
        let t0 = Instant::now();
        match d.event(Duration::from_secs(10)).await {
            Some(Event::Disconnected { .. }) => samples.push(t0.elapsed()),
            other => panic!("{}: not disconnected: {other:?}", creds.client_id),
        }
    }
    samples.sort();
    println!(
        "revocation propagation over {n} revocations: p50 {:?}, p99 {:?}, max {:?}",
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        samples[samples.len() - 1]
    );
}
