//! What the fleet benchmarks (`bench_bulk`, `bench_scale`) share: the command line, an
//! authenticated HTTP client, batch registration of one lot, and a broker-style read of the
//! revocation feed.
#![allow(dead_code)] // each example uses its own part of this module

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// `--name value` pairs; `--token-file F` becomes `token` (the file's text, trimmed).
pub struct Args(HashMap<String, String>);

impl Args {
    /// Parses the process's arguments; any name not in `known` (or `url`, `token`,
    /// `token-file`) is refused.
    pub fn parse(known: &[&str]) -> Args {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut map = HashMap::new();
        for pair in args.chunks(2) {
            let name = pair[0].strip_prefix("--").unwrap_or(&pair[0]).to_string();
            let value = pair.get(1).cloned().unwrap_or_default();
            match name.as_str() {
                "url" | "token" => {}
                "token-file" => {
                    let t = std::fs::read_to_string(&value).unwrap().trim().to_string();
                    map.insert("token".to_string(), t);
                    continue;
                }
                n if known.contains(&n) => {}
                other => panic!("unknown argument --{other}"),
            }
            map.insert(name, value);
        }
        Args(map)
    }

    pub fn str(&self, name: &str, default: &str) -> String {
        self.0
            .get(name)
            .cloned()
            .unwrap_or_else(|| default.to_string())
    }

    pub fn usize(&self, name: &str, default: usize) -> usize {
        self.0
            .get(name)
            .map(|v| v.parse().unwrap())
            .unwrap_or(default)
    }

    /// The client for `--url` with `--token`/`--token-file`.
    pub fn client(&self) -> Api {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Api {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(600))
                .build()
                .unwrap(),
            url: self.str("url", "http://127.0.0.1:8080"),
            token: self
                .0
                .get("token")
                .cloned()
                .expect("--token or --token-file"),
        }
    }
}

/// The service's HTTP API with a bearer token.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Api {
    /// POST of JSON; panics on a status other than 2xx.
    pub async fn post(&self, path: &str, body: Value) -> Value {
        let resp = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let v: Value = resp.json().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {v}");
        v
    }

    /// GET; panics on a status other than 2xx.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        let resp = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp
    }

    pub async fn get_json(&self, path: &str) -> Value {
        self.get(path).await.json().await.unwrap()
    }

    /// The revocation feed's head now.
    pub async fn feed_head(&self) -> i64 {
        self.get_json("/v1/revocations?since=0&limit=1").await["head"]
            .as_i64()
            .unwrap()
    }

    /// Registers devices `from..to` of `lot` (hardware serial `<lot>-<i>`, model `model`,
    /// metadata `{"lot": lot}`, keys made by the service) in batches of `batch`, two requests
    /// in flight. Returns the seconds each pair of requests took, with the count it registered,
    /// and the ClientIDs given.
    pub async fn register_lot(
        &self,
        model: &str,
        lot: &str,
        from: usize,
        to: usize,
        batch: usize,
    ) -> (Vec<(usize, f64)>, Vec<String>) {
        let mut spans = Vec::new();
        let mut ids = Vec::with_capacity(to - from);
        let mut start = from;
        while start < to {
            let t = Instant::now();
            let mut calls = Vec::new();
            let first = start;
            for _ in 0..2 {
                if start >= to {
                    break;
                }
                let end = (start + batch).min(to);
                let items: Vec<Value> = (start..end)
                    .map(|i| {
                        json!({"hardware_serial": format!("{lot}-{i:07}"), "model": model,
                               "metadata": {"lot": lot}, "generate_key": true})
                    })
                    .collect();
                calls.push(self.post("/v1/devices/batch", json!({ "items": items })));
                start = end;
            }
            for r in futures::future::join_all(calls).await {
                let items = r["items"].as_array().unwrap();
                ids.extend(
                    items
                        .iter()
                        .map(|i| i["client_id"].as_str().unwrap().to_string()),
                );
            }
            spans.push((start - first, t.elapsed().as_secs_f64()));
        }
        (spans, ids)
    }

    /// A broker catching up: every feed entry after `since`, in pages of `page` as the plugin
    /// asks for them. Returns the number of entries read.
    pub async fn read_feed(&self, mut since: i64, page: usize) -> usize {
        let mut entries = 0usize;
        loop {
            let v = self
                .get_json(&format!("/v1/revocations?since={since}&limit={page}"))
                .await;
            let got = v["entries"].as_array().unwrap();
            if got.is_empty() {
                return entries;
            }
            entries += got.len();
            since = got.last().unwrap()["seq"].as_i64().unwrap();
        }
    }

    /// `/v1/crl`: the DER and the seconds the request took.
    pub async fn crl(&self) -> (Vec<u8>, f64) {
        let t = Instant::now();
        let der = self.get("/v1/crl").await.bytes().await.unwrap().to_vec();
        (der, t.elapsed().as_secs_f64())
    }
}

/// The recall of one lot: dry run, the revocation, the CRL after it, the feed read from `head0`
/// in pages of `feed_page`. Returns the measurements as JSON fields.
pub async fn recall(
    api: &Api,
    model: &str,
    lot: &str,
    expect: usize,
    head0: i64,
    feed_page: usize,
) -> Value {
    let filter = json!({"model": model, "metadata": {"lot": lot}});
    let t = Instant::now();
    let dry = api
        .post(
            "/v1/devices/revoke",
            json!({"filter": filter, "reason": "keyCompromise", "dry_run": true}),
        )
        .await;
    let dry_run_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let r = api
        .post(
            "/v1/devices/revoke",
            json!({"filter": filter, "reason": "keyCompromise"}),
        )
        .await;
    let revoke_s = t.elapsed().as_secs_f64();
    assert_eq!(r["changed"].as_u64(), Some(expect as u64), "{r}");
    assert_eq!(dry["changed"], r["changed"]);

    // The first CRL after the change waits for its regeneration.
    let (der, crl_s) = api.crl().await;
    let (_, crl) = x509_parser::parse_x509_crl(&der).unwrap();
    let listed = crl.iter_revoked_certificates().count();
    let (_, crl_cached_s) = api.crl().await;

    // A broker catching up: every entry after the head it had, in pages.
    let t = Instant::now();
    let entries = api.read_feed(head0, feed_page).await;
    let feed_s = t.elapsed().as_secs_f64();
    assert_eq!(entries, expect);
    json!({
        "dry_run_s": round(dry_run_s),
        "revoke_s": round(revoke_s),
        "crl_regenerate_s": round(crl_s),
        "crl_cached_s": round(crl_cached_s),
        "crl_bytes": der.len(),
        "crl_entries": listed,
        "feed_read_s": round(feed_s),
        "feed_entries": entries,
    })
}

/// Seconds, to the millisecond.
pub fn round(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

/// Milliseconds, to the hundredth.
pub fn ms(s: f64) -> f64 {
    (s * 100_000.0).round() / 100.0
}

/// The `p`th percentile (0-100) of `v`, sorted in place.
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((p / 100.0) * (v.len() as f64 - 1.0)).round() as usize;
    v[i.min(v.len() - 1)]
}
