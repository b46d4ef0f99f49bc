//! Recall benchmark against a running server: registers `--count` devices of one lot in batches
//! (the service makes their keys), revokes the whole lot in one call, then measures the first
//! CRL fetched after it (the regeneration), its size, and a broker-style read of the whole feed
//! from before the recall (pages of 10,000). Prints one JSON line.
//!
//! ```text
//! cargo run --release -p devid-server --example bench_bulk -- \
//!     --url http://127.0.0.1:8080 --token-file devid-data/admin.token --count 100000
//! ```
//! `scripts/bench-bulk.sh` starts release servers on SQLite and PostgreSQL and runs it on both.
#![allow(clippy::unwrap_used)] // a benchmark tool: failing loudly is the right behaviour

use std::time::Instant;

use serde_json::{json, Value};

struct Args {
    url: String,
    token: String,
    count: usize,
    batch: usize,
    lot: String,
}

fn parse_args() -> Args {
    let mut a = Args {
        url: "http://127.0.0.1:8080".into(),
        token: String::new(),
        count: 100_000,
        batch: 10_000,
        lot: format!("L{}", std::process::id()),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < args.len() {
        let v = args[i + 1].clone();
        match args[i].as_str() {
            "--url" => a.url = v,
            "--token" => a.token = v,
            "--token-file" => a.token = std::fs::read_to_string(v).unwrap().trim().to_string(),
            "--count" => a.count = v.parse().unwrap(),
            "--batch" => a.batch = v.parse().unwrap(),
            "--lot" => a.lot = v,
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

async fn post(c: &reqwest::Client, a: &Args, path: &str, body: Value) -> Value {
    let resp = c
        .post(format!("{}{path}", a.url))
        .bearer_auth(&a.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let v: Value = resp.json().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {v}");
    v
}

async fn get(c: &reqwest::Client, a: &Args, path: &str) -> reqwest::Response {
    let resp = c
        .get(format!("{}{path}", a.url))
        .bearer_auth(&a.token)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = parse_args();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(600))
        .build()
        .unwrap();

    // Registration, two batches in flight.
    let t = Instant::now();
    let mut start = 0;
    while start < a.count {
        let mut calls = Vec::new();
        for _ in 0..2 {
            if start >= a.count {
                break;
            }
            let end = (start + a.batch).min(a.count);
            let items: Vec<Value> = (start..end)
                .map(|i| {
                    json!({"hardware_serial": format!("{}-{i:07}", a.lot), "model": "recall",
                           "metadata": {"lot": a.lot}, "generate_key": true})
                })
                .collect();
            calls.push(post(&c, &a, "/v1/devices/batch", json!({ "items": items })));
            start = end;
        }
        futures::future::join_all(calls).await;
    }
    let register_s = t.elapsed().as_secs_f64();

    let head0 = get(&c, &a, "/v1/revocations?since=0&limit=1")
        .await
        .json::<Value>()
        .await
        .unwrap()["head"]
        .as_i64()
        .unwrap();
    get(&c, &a, "/v1/crl").await.bytes().await.unwrap();

    let filter = json!({"model": "recall", "metadata": {"lot": a.lot}});
    let t = Instant::now();
    let dry = post(
        &c,
        &a,
        "/v1/devices/revoke",
        json!({"filter": filter, "reason": "keyCompromise", "dry_run": true}),
    )
    .await;
    let dry_run_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let r = post(
        &c,
        &a,
        "/v1/devices/revoke",
        json!({"filter": filter, "reason": "keyCompromise"}),
    )
    .await;
    let revoke_s = t.elapsed().as_secs_f64();
    assert_eq!(r["changed"].as_u64(), Some(a.count as u64), "{r}");
    assert_eq!(dry["changed"], r["changed"]);

    // The first CRL after the change waits for its regeneration.
    let t = Instant::now();
    let der = get(&c, &a, "/v1/crl").await.bytes().await.unwrap();
    let crl_s = t.elapsed().as_secs_f64();
    let (_, crl) = x509_parser::parse_x509_crl(&der).unwrap();
    let listed = crl.iter_revoked_certificates().count();
    let t = Instant::now();
    get(&c, &a, "/v1/crl").await.bytes().await.unwrap();
    let crl_cached_s = t.elapsed().as_secs_f64();

    // A broker catching up: every entry after the head it had, in pages.
    let t = Instant::now();
    let mut since = head0;
    let mut entries = 0usize;
    loop {
        let page: Value = get(
            &c,
            &a,
            &format!("/v1/revocations?since={since}&limit=10000"),
        )
        .await
        .json()
        .await
        .unwrap();
        let got = page["entries"].as_array().unwrap();
        if got.is_empty() {
            break;
        }
        entries += got.len();
        since = got.last().unwrap()["seq"].as_i64().unwrap();
    }
    let feed_s = t.elapsed().as_secs_f64();
    assert_eq!(entries, a.count);

    println!(
        "{}",
        json!({
            "devices": a.count,
            "register_s": round(register_s),
            "register_per_s": (a.count as f64 / register_s).round(),
            "dry_run_s": round(dry_run_s),
            "revoke_s": round(revoke_s),
            "crl_regenerate_s": round(crl_s),
            "crl_cached_s": round(crl_cached_s),
            "crl_bytes": der.len(),
            "crl_entries": listed,
            "feed_read_s": round(feed_s),
            "feed_entries": entries,
        })
    );
}

fn round(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}
