//! Registration benchmark: registers devices over HTTP against a running server, with CSRs made
//! beforehand, and reports devices/s and latency percentiles.
//!
//! ```text
//! cargo run --release -p devid-server --example bench_register -- \
//!     --url http://127.0.0.1:8080 --token-file devid-data/admin.token \
//!     --mode single --count 20000 --concurrency 16
//! cargo run --release -p devid-server --example bench_register -- ... --mode batch --count 100000 --batch 1000
//! ```
//! `scripts/bench.sh` starts release servers on SQLite and PostgreSQL and runs both modes.
#![allow(clippy::unwrap_used)] // a benchmark tool: failing loudly is the right behaviour

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

struct Args {
    url: String,
    token: String,
    mode: String,
    count: usize,
    concurrency: usize,
    batch: usize,
    prefix: String,
}

fn parse_args() -> Args {
    let mut a = Args {
        url: "http://127.0.0.1:8080".into(),
        token: String::new(),
        mode: "single".into(),
        count: 10_000,
        concurrency: 16,
        batch: 1000,
        prefix: format!("bench{}", std::process::id()),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--url" => a.url = v,
            "--token-file" => a.token = std::fs::read_to_string(v).unwrap().trim().to_string(),
            "--token" => a.token = v,
            "--mode" => a.mode = v,
            "--count" => a.count = v.parse().unwrap(),
            "--concurrency" => a.concurrency = v.parse().unwrap(),
            "--batch" => a.batch = v.parse().unwrap(),
            "--prefix" => a.prefix = v,
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    assert!(
        !a.token.is_empty() || a.mode == "cfssl",
        "--token or --token-file is required"
    );
    a
}

/// Makes `n` CSRs on every core.
fn make_csrs(n: usize) -> Vec<String> {
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let per = n.div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let start = t * per;
                    let end = ((t + 1) * per).min(n);
                    (start..end)
                        .map(|_| {
                            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                                .unwrap();
                            let params =
                                rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
                            params.serialize_request(&key).unwrap().pem().unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

/// One device of a registration request.
fn item(prefix: &str, i: usize, csr: &str) -> serde_json::Value {
    json!({"hardware_serial": format!("{prefix}-{i}"), "model": "bench", "csr": csr})
}

/// Sends `requests` over `workers` concurrent tasks, each taking the next request as it is
/// free; returns every request's latency and the devices registered.
async fn drive(
    client: &reqwest::Client,
    url: String,
    bearer: Option<String>,
    requests: Vec<(serde_json::Value, usize)>,
    workers: usize,
) -> (Vec<Duration>, usize) {
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (client, next, requests) = (client.clone(), next.clone(), requests.clone());
        let (url, bearer) = (url.clone(), bearer.clone());
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut devices) = (Vec::new(), 0);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((body, n)) = requests.get(i) else {
                    break;
                };
                let mut req = client.post(&url).json(body);
                if let Some(token) = &bearer {
                    req = req.bearer_auth(token);
                }
                let t = Instant::now();
                let resp = req.send().await.unwrap();
                let status = resp.status();
                let _ = resp.bytes().await.unwrap();
                assert!(status.is_success(), "HTTP {status}");
                lat.push(t.elapsed());
                devices += n;
            }
            (lat, devices)
        }));
    }
    let (mut latencies, mut devices) = (Vec::new(), 0);
    for t in tasks {
        let (lat, n) = t.await.unwrap();
        latencies.extend(lat);
        devices += n;
    }
    (latencies, devices)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn cpu_seconds_of(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = parse_args();
    eprintln!("making {} CSRs...", args.count);
    let csrs = Arc::new(make_csrs(args.count));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency * 2)
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap();
    let own_cpu_before = cpu_seconds_of(std::process::id());
    // Each mode is a list of requests (url, body, devices it registers); one driver sends them.
    let (url, bearer, requests, workers) = match args.mode.as_str() {
        "single" => (
            format!("{}/v1/devices", args.url),
            Some(args.token.clone()),
            (0..csrs.len())
                .map(|i| (item(&args.prefix, i, &csrs[i]), 1))
                .collect::<Vec<_>>(),
            args.concurrency,
        ),
        // At most four batches in flight: some being signed while others are stored.
        "batch" => (
            format!("{}/v1/devices/batch", args.url),
            Some(args.token.clone()),
            (0..csrs.len())
                .step_by(args.batch)
                .map(|start| {
                    let end = (start + args.batch).min(csrs.len());
                    let items: Vec<_> = (start..end)
                        .map(|i| item(&args.prefix, i, &csrs[i]))
                        .collect();
                    (json!({ "items": items }), end - start)
                })
                .collect(),
            args.concurrency.min(4),
        ),
        // The peer baseline: cfssl's HTTP signer (`cfssl serve`), same CSRs, same concurrency.
        "cfssl" => (
            format!("{}/api/v1/cfssl/sign", args.url),
            None,
            csrs.iter()
                .map(|c| (json!({ "certificate_request": c }), 1))
                .collect(),
            args.concurrency,
        ),
        other => panic!("--mode single|batch|cfssl, not {other}"),
    };
    let started = Instant::now();
    let (mut latencies, devices) = drive(&client, url, bearer, requests, workers).await;
    let elapsed = started.elapsed();
    latencies.sort();
    let own_cpu = own_cpu_before
        .zip(cpu_seconds_of(std::process::id()))
        .map(|(a, b)| b - a);
    let rate = devices as f64 / elapsed.as_secs_f64();
    println!(
        "{{\"mode\":\"{}\",\"devices\":{},\"seconds\":{:.3},\"devices_per_s\":{:.0},\"requests\":{},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"client_cpu_s\":{:.2}}}",
        args.mode,
        devices,
        elapsed.as_secs_f64(),
        rate,
        latencies.len(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        own_cpu.unwrap_or(f64::NAN),
    );
}
