//! Fleet at scale, against a running server: registers `--count` devices (default 1,000,000)
//! in lots of `--lot-size` (default 100,000) over `POST /v1/devices/batch`, then recalls one
//! lot (revoke in one call, the CRL after it, a broker catching up with the feed from a cursor
//! taken before the recall, in pages of 1,000 as the plugin reads), then measures
//! `GET /v1/fleet/summary` and the console's device page (the device, then its health,
//! timeline and policy at once, as `console/device.js` asks) over random devices. Registration
//! is timed in two windows of `--window` devices (default 50,000): the first and the last.
//! Prints one JSON line.
//!
//! ```text
//! cargo run --release -p devid-server --example bench_scale -- \
//!     --url http://127.0.0.1:8080 --token-file devid-data/admin.token --count 1000000
//! ```
//! `scripts/bench-scale.sh` starts release servers on SQLite and PostgreSQL and runs it on both.
#![allow(clippy::unwrap_used)] // a benchmark tool: failing loudly is the right behaviour

mod common;

use std::time::Instant;

use common::{ms, percentile, recall, round, Api, Args};
use serde_json::{json, Value};

const MODEL: &str = "scale";

/// Devices per second over the pairs of requests that registered devices `from..to` (counted
/// from the first registered).
fn window_rate(spans: &[(usize, f64)], from: usize, to: usize) -> f64 {
    let (mut done, mut n, mut secs) = (0usize, 0usize, 0f64);
    for (count, s) in spans {
        if done >= from && done < to {
            n += count;
            secs += s;
        }
        done += count;
    }
    (n as f64 / secs).round()
}

/// `n` sequential calls of `f`; p50 and p99 in milliseconds.
async fn latencies<F, Fut>(n: usize, mut f: F) -> Value
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        f(i).await;
        times.push(t.elapsed().as_secs_f64());
    }
    json!({
        "p50_ms": ms(percentile(&mut times, 50.0)),
        "p99_ms": ms(percentile(&mut times, 99.0)),
        "max_ms": ms(percentile(&mut times, 100.0)),
        "n": n,
    })
}

/// What `console/device.js` fetches for one device: the device, then its health, timeline and
/// policy concurrently.
async fn device_page(api: &Api, client_id: &str) {
    let path = format!("/v1/devices/{client_id}");
    let d = api.get_json(&path).await;
    assert_eq!(d["client_id"], client_id);
    let health = format!("{path}/health");
    let timeline = format!("{path}/timeline?limit=20");
    let status = format!("{path}/status");
    let (h, t, s) = tokio::join!(
        api.get_json(&health),
        api.get_json(&timeline),
        api.get_json(&status)
    );
    assert!(h.is_object() && t["items"].is_array() && s.is_object());
}

/// A small deterministic generator (xorshift), so that runs pick the same devices.
fn picks(n: usize, of: usize) -> Vec<usize> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % of as u64) as usize
        })
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse(&["count", "lot-size", "batch", "window", "samples"]);
    let count = args.usize("count", 1_000_000);
    let lot_size = args.usize("lot-size", 100_000).min(count);
    let batch = args.usize("batch", 10_000);
    let window = args.usize("window", 50_000).min(count / 2);
    let samples = args.usize("samples", 200);
    let api = args.client();
    let run = format!("S{}", std::process::id());

    let t = Instant::now();
    let mut spans = Vec::new();
    let mut ids = Vec::with_capacity(count);
    let mut lots = Vec::new();
    let mut from = 0;
    while from < count {
        let to = (from + lot_size).min(count);
        let lot = format!("{run}-{}", lots.len());
        let (s, i) = api.register_lot(MODEL, &lot, from, to, batch).await;
        spans.extend(s);
        ids.extend(i);
        eprintln!("registered {to} in {:.1} s", t.elapsed().as_secs_f64());
        lots.push((lot, to - from));
        from = to;
    }
    let register_s = t.elapsed().as_secs_f64();
    let first = window_rate(&spans, 0, window);
    let last = window_rate(&spans, count - window, count);

    // A broker down since now: its cursor is the head before the recall.
    let head0 = api.feed_head().await;
    api.crl().await;
    // The middle lot: neither the oldest nor the newest rows.
    let (lot, size) = lots[lots.len() / 2].clone();
    let recalled = recall(&api, MODEL, &lot, size, head0, 1_000).await;
    eprintln!("recalled {size}: {recalled}");

    let summary = api.get_json("/v1/fleet/summary").await;
    assert_eq!(summary["total"].as_u64(), Some(count as u64), "{summary}");
    assert_eq!(summary["revoked"].as_u64(), Some(size as u64), "{summary}");
    let summary_ms = latencies(samples, |_| async {
        api.get_json("/v1/fleet/summary").await;
    })
    .await;
    let chosen = picks(samples, ids.len());
    let page_ms = latencies(samples, |i| {
        let id = ids[chosen[i]].clone();
        let api = api.clone();
        async move { device_page(&api, &id).await }
    })
    .await;

    println!(
        "{}",
        json!({
            "devices": count,
            "register_s": round(register_s),
            "register_per_s": (count as f64 / register_s).round(),
            "register_first_window_per_s": first,
            "register_last_window_per_s": last,
            "register_window": window,
            "register_last_to_first": (last / first * 1000.0).round() / 1000.0,
            "recall": recalled,
            "summary": summary_ms,
            "device_page": page_ms,
        })
    );
}
