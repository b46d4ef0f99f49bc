//! Revocation, suspension, the feed (paged and live), and the CRL cross-checked with openssl.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::sse::{open_sse, read_sse};
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn register(server: &Server, serial: &str) -> Value {
    let (status, reg) = server
        .admin_post(
            "/v1/devices",
            &json!({"hardware_serial": serial, "generate_key": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{reg}");
    reg
}

/// Fetches the CRL, verifies it with `openssl crl -verify` against the issuing CA, and returns
/// openssl's text rendering.
async fn crl_text(server: &Server, dir: &std::path::Path) -> String {
    let resp = server
        .client
        .get(server.url("/v1/crl"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/pkix-crl");
    let der = resp.bytes().await.unwrap();
    let crl = dir.join("crl.der");
    std::fs::write(&crl, &der).unwrap();
    let chain = server
        .client
        .get(server.url("/v1/ca"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let chain = write(dir, "chain.pem", &chain);
    let out = Command::new("openssl")
        .args([
            "crl", "-inform", "DER", "-noout", "-text", "-verify", "-CAfile",
        ])
        .arg(&chain)
        .arg("-in")
        .arg(&crl)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains("verify OK"),
        "openssl: {stderr}"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn crl_number(text: &str) -> u64 {
    let after = text.split("X509v3 CRL Number:").nth(1).expect("CRL number");
    after.split_whitespace().next().unwrap().parse().unwrap()
}

fn openssl_serial(hex: &str) -> String {
    let s = hex.to_ascii_uppercase();
    if s.len() % 2 == 1 {
        format!("0{s}")
    } else {
        s
    }
}

#[tokio::test]
async fn revocations_reach_the_feed_and_the_crl() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let dir = tempfile::tempdir().unwrap();
        let a = register(&server, "RV-A").await;
        let b = register(&server, "RV-B").await;
        let c = register(&server, "RV-C").await;
        let id = |v: &Value| v["client_id"].as_str().unwrap().to_string();
        let serial = |v: &Value| v["serial"].as_str().unwrap().to_string();

        let text = crl_text(&server, dir.path()).await;
        let n0 = crl_number(&text);
        assert!(!text.contains(&openssl_serial(&serial(&a))));
        // No change, no new CRL.
        assert_eq!(crl_number(&crl_text(&server, dir.path()).await), n0);

        let (status, dev) = server
            .admin_post(
                &format!("/v1/devices/{}/revoke", id(&a)),
                &json!({"reason": "keyCompromise"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{dev}");
        assert_eq!(dev["status"], "revoked");
        assert_eq!(dev["revocation_reason"], "keyCompromise");
        assert_eq!(dev["certificates"][0]["status"], "revoked");
        let (status, _) = server
            .admin_post(&format!("/v1/devices/{}/suspend", id(&b)), &json!({}))
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, cert) = server
            .admin_post(
                &format!("/v1/certificates/{}/revoke", serial(&c)),
                &json!({"reason": "superseded"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{cert}");
        assert_eq!(cert["status"], "revoked");

        let text = crl_text(&server, dir.path()).await;
        let n1 = crl_number(&text);
        assert!(n1 > n0, "CRL number did not increase: {n0} -> {n1}");
        for (reg, reason) in [
            (&a, "Key Compromise"),
            (&b, "Certificate Hold"),
            (&c, "Superseded"),
        ] {
            let s = openssl_serial(&serial(reg));
            let entry = text
                .split("Serial Number: ")
                .find(|e| e.starts_with(&s))
                .unwrap_or_else(|| panic!("{s} not in CRL:\n{text}"));
            let entry_end = entry.find("Serial Number").unwrap_or(entry.len());
            assert!(
                entry[..entry_end].contains(reason),
                "{s} lacks {reason}:\n{entry}"
            );
        }

        // The feed: strictly increasing, one entry per change, paged by `since`.
        let (_, page) = server.admin_get("/v1/revocations?since=0").await;
        let entries = page["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 3, "{page}");
        assert_eq!(page["head"], entries[2]["seq"]);
        assert!(entries
            .windows(2)
            .all(|w| w[0]["seq"].as_i64() < w[1]["seq"].as_i64()));
        assert_eq!(entries[0]["action"], "revoked");
        assert_eq!(entries[0]["scope"], "device");
        assert_eq!(entries[0]["serials"][0], serial(&a));
        assert_eq!(entries[1]["action"], "suspended");
        assert_eq!(entries[2]["scope"], "certificate");
        let first = entries[0]["seq"].as_i64().unwrap();
        let (_, rest) = server
            .admin_get(&format!("/v1/revocations?since={first}"))
            .await;
        assert_eq!(rest["entries"].as_array().unwrap().len(), 2);

        // Resume lifts the hold: off the CRL; invalid transitions are 409 and change nothing.
        let (status, dev) = server
            .admin_post(&format!("/v1/devices/{}/resume", id(&b)), &json!({}))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(dev["status"], "active");
        let text = crl_text(&server, dir.path()).await;
        assert!(
            !text.contains(&openssl_serial(&serial(&b))),
            "resumed cert still listed"
        );
        assert!(crl_number(&text) > n1);
        let (status, _) = server
            .admin_post(&format!("/v1/devices/{}/resume", id(&a)), &json!({}))
            .await;
        assert_eq!(status, StatusCode::CONFLICT);
        let (status, _) = server
            .admin_post(
                &format!("/v1/devices/{}/revoke", id(&a)),
                &json!({"reason": "keyCompromise"}),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT);
        let (status, _) = server
            .admin_post(
                &format!("/v1/devices/{}/revoke", id(&b)),
                &json!({"reason": "certificateHold"}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let (status, _) = server
            .admin_post(
                &format!("/v1/devices/{}/revoke", id(&b)),
                &json!({"reason": "bogus"}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let (status, _) = server
            .admin_post(
                "/v1/certificates/abcdef/revoke",
                &json!({"reason": "keyCompromise"}),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (_, page) = server.admin_get("/v1/revocations").await;
        assert_eq!(page["entries"].as_array().unwrap().len(), 4);
    }
}

/// `(id, data)` of each event read, until `n` arrived or the timeout passed.
async fn read_events(resp: reqwest::Response, n: usize, timeout: Duration) -> Vec<(i64, Value)> {
    read_sse(resp, n, timeout)
        .await
        .into_iter()
        .map(|e| (e.id, e.data))
        .collect()
}

async fn open_stream(
    server: &Server,
    token: &str,
    last_event_id: Option<i64>,
) -> reqwest::Response {
    open_sse(server, "/v1/revocations/stream", token, last_event_id).await
}

#[tokio::test]
async fn the_live_stream_pushes_entries_and_resumes_from_last_event_id() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let broker = server.token("broker", None).await;
        let a = register(&server, "S-A").await;
        let b = register(&server, "S-B").await;
        let stream = open_stream(&server, &broker, None).await;
        let started = Instant::now();
        server
            .admin_post(
                &format!("/v1/devices/{}/revoke", a["client_id"].as_str().unwrap()),
                &json!({"reason": "keyCompromise"}),
            )
            .await;
        let events = read_events(stream, 1, Duration::from_secs(5)).await;
        assert_eq!(events.len(), 1, "no event within 5 s");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(events[0].1["client_id"], a["client_id"]);
        let seen = events[0].0;
        // While nobody listens, two more changes.
        server
            .admin_post(
                &format!("/v1/devices/{}/suspend", b["client_id"].as_str().unwrap()),
                &json!({}),
            )
            .await;
        server
            .admin_post(
                &format!("/v1/devices/{}/resume", b["client_id"].as_str().unwrap()),
                &json!({}),
            )
            .await;
        let stream = open_stream(&server, &broker, Some(seen)).await;
        let events = read_events(stream, 2, Duration::from_secs(5)).await;
        let actions: Vec<_> = events
            .iter()
            .map(|(_, e)| e["action"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(actions, ["suspended", "resumed"], "{}", backend.name());
        assert!(events[0].0 > seen && events[1].0 > events[0].0);
        let resp = server
            .client
            .get(server.url("/v1/revocations/stream"))
            .bearer_auth(&broker)
            .header("last-event-id", "abc")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    }
}

/// SIGKILL in the middle of a 10,000-device batch: afterwards all of it or none of it is there,
/// and the service goes on.
#[tokio::test]
async fn a_crash_during_a_batch_leaves_all_or_nothing() {
    for backend in backends().await {
        let mut server = Server::start(&backend).await;
        let batch = |prefix: &str| -> Value {
            let items: Vec<Value> = (0..10_000)
                .map(|i| json!({"hardware_serial": format!("{prefix}-{i:05}"), "generate_key": true}))
                .collect();
            json!({"items": items})
        };
        // How long a whole batch takes here, so the kill can land late in the next one, when
        // it is being stored rather than signed.
        let started = Instant::now();
        let (status, _) = server.admin_post("/v1/devices/batch", &batch("WARM")).await;
        assert_eq!(status, StatusCode::CREATED);
        let full = started.elapsed();
        let client = server.client.clone();
        let url = server.url("/v1/devices/batch");
        let token = server.token.clone();
        let body = batch("K");
        let request =
            tokio::spawn(
                async move { client.post(url).bearer_auth(token).json(&body).send().await },
            );
        // Kill once the batch is signed and its transaction under way (a few ms into it).
        let deadline = Instant::now() + full * 3;
        let seen_before = server.printed().matches("batch signed; storing").count();
        while server.printed().matches("batch signed; storing").count() == seen_before {
            assert!(
                Instant::now() < deadline,
                "the batch never reached the store"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(u64::from(
            random_bytes::<1>()[0] % 20,
        )))
        .await;
        server.kill();
        let answered = request.await.unwrap().map(|r| r.status());
        server.restart();
        let mut total = 0;
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/devices?limit=1000&cursor={c}"),
                None => "/v1/devices?limit=1000".into(),
            };
            let (status, page) = server.admin_get(&path).await;
            assert_eq!(status, StatusCode::OK);
            total += page["items"].as_array().unwrap().len();
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        let total = total - 10_000; // the warm-up batch
        eprintln!(
            "{}: {total} of the killed batch's devices present",
            backend.name()
        );
        assert!(
            total == 0 || total == 10_000,
            "{}: {total} devices after the crash",
            backend.name()
        );
        if let Ok(status) = answered {
            // An acknowledged batch must be there whole.
            if status.is_success() {
                assert_eq!(total, 10_000);
            }
        }
        let (status, _) = server
            .admin_post(
                "/v1/devices",
                &json!({"hardware_serial": "after-crash", "generate_key": true}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        // The audit log holds exactly one registration row per stored device.
        let mut audit_registers = 0;
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/audit?limit=1000&cursor={c}"),
                None => "/v1/audit?limit=1000".into(),
            };
            let (_, page) = server.admin_get(&path).await;
            audit_registers += page["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["action"] == "device.register")
                .count();
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        assert_eq!(
            audit_registers,
            10_000 + total + 1,
            "audit and devices disagree"
        );
    }
}
