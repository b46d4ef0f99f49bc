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

mod common;

use std::time::Instant;

use common::{recall, round, Args};
use serde_json::json;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse(&["count", "batch", "lot"]);
    let count = args.usize("count", 100_000);
    let lot = args.str("lot", &format!("L{}", std::process::id()));
    let api = args.client();

    let t = Instant::now();
    api.register_lot("recall", &lot, 0, count, args.usize("batch", 10_000))
        .await;
    let register_s = t.elapsed().as_secs_f64();

    let head0 = api.feed_head().await;
    api.crl().await;
    let mut out = json!({
        "devices": count,
        "register_s": round(register_s),
        "register_per_s": (count as f64 / register_s).round(),
    });
    let recalled = recall(&api, "recall", &lot, count, head0, 10_000).await;
    out.as_object_mut()
        .unwrap()
        .extend(recalled.as_object().unwrap().clone());
    println!("{out}");
}
