//! Two real devid-server processes on one PostgreSQL database behave as one service.
//! Runs when DEVID_TEST_POSTGRES_URL is set (`.ci/run` sets it).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt as _;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn two_processes() -> Option<(Server, Server)> {
    let Some(backend) = postgres().await else {
        eprintln!("DEVID_TEST_POSTGRES_URL is not set: skipping the scale-out test");
        return None;
    };
    let a = Server::start(&backend).await;
    let b = a.another_process().await;
    Some((a, b))
}

#[tokio::test]
async fn concurrent_registration_through_two_processes_never_duplicates() {
    let Some((a, b)) = two_processes().await else {
        return;
    };
    // 300 serials, each sent to both processes at once with the same CSR.
    let csrs: Vec<(String, String)> = (0..300).map(|i| (format!("SO-{i}"), csr("x").1)).collect();
    let mut tasks = Vec::new();
    for (serial, csr_pem) in &csrs {
        for server in [&a, &b] {
            let client = server.client.clone();
            let url = server.url("/v1/devices");
            let token = server.token.clone();
            let body = json!({"hardware_serial": serial, "csr": csr_pem});
            tasks.push(tokio::spawn(async move {
                let resp = client
                    .post(url)
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = resp.status();
                (status, resp.json::<Value>().await.unwrap())
            }));
        }
    }
    let mut by_serial: std::collections::HashMap<String, Vec<Value>> = Default::default();
    let mut created = 0;
    for t in tasks {
        let (status, v) = t.await.unwrap();
        assert!(
            status == StatusCode::CREATED || status == StatusCode::OK,
            "{status} {v}"
        );
        if status == StatusCode::CREATED {
            created += 1;
        }
        by_serial
            .entry(v["hardware_serial"].as_str().unwrap().to_string())
            .or_default()
            .push(v);
    }
    assert_eq!(created, 300, "each serial must be created exactly once");
    for (serial, answers) in &by_serial {
        assert_eq!(answers.len(), 2);
        assert_eq!(answers[0]["client_id"], answers[1]["client_id"], "{serial}");
        assert_eq!(answers[0]["serial"], answers[1]["serial"], "{serial}");
    }
    // Also 400 fresh generated ClientIDs through both: all distinct, as are certificate serials.
    let mut ids = HashSet::new();
    let mut serials = HashSet::new();
    for (k, server) in [&a, &b].into_iter().enumerate() {
        let items: Vec<Value> = (0..200)
            .map(|i| json!({"hardware_serial": format!("G{k}-{i}"), "generate_key": true}))
            .collect();
        let (status, v) = server
            .admin_post("/v1/devices/batch", &json!({"items": items}))
            .await;
        assert_eq!(status, StatusCode::CREATED);
        for item in v["items"].as_array().unwrap() {
            assert!(ids.insert(item["client_id"].as_str().unwrap().to_string()));
            assert!(serials.insert(item["serial"].as_str().unwrap().to_string()));
        }
    }
    for answers in by_serial.values() {
        assert!(ids.insert(answers[0]["client_id"].as_str().unwrap().to_string()));
        assert!(serials.insert(answers[0]["serial"].as_str().unwrap().to_string()));
    }
    let (_, list) = a.admin_get("/v1/devices?limit=1000").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 700);
}

#[tokio::test]
async fn a_revocation_through_one_process_reaches_the_other_process_stream_within_a_second() {
    let Some((a, b)) = two_processes().await else {
        return;
    };
    let broker = a.token("broker", None).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        let (_, reg) = a
            .admin_post(
                "/v1/devices",
                &json!({"hardware_serial": format!("X{i}"), "generate_key": true}),
            )
            .await;
        ids.push(reg["client_id"].as_str().unwrap().to_string());
    }
    let resp = b
        .client
        .get(b.url("/v1/revocations/stream"))
        .bearer_auth(&broker)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut stream = resp.bytes_stream();
    for id in &ids[..3] {
        let started = Instant::now();
        let (status, _) = a
            .admin_post(
                &format!("/v1/devices/{id}/revoke"),
                &json!({"reason": "keyCompromise"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let mut buf = String::new();
        loop {
            let left = Duration::from_secs(1).saturating_sub(started.elapsed());
            match tokio::time::timeout(left, stream.next()).await {
                Ok(Some(Ok(chunk))) => {
                    buf.push_str(&String::from_utf8_lossy(&chunk));
                    if buf.contains(id.as_str()) {
                        break;
                    }
                }
                _ => panic!("revocation of {id} through A did not reach B's stream within 1 s"),
            }
        }
    }
    // Revocations through both processes at once: the feed stays gap-free and ordered.
    let mut tasks = Vec::new();
    for (k, id) in ids[3..].iter().enumerate() {
        let server = if k % 2 == 0 { &a } else { &b };
        let client = server.client.clone();
        let url = server.url(&format!("/v1/devices/{id}/suspend"));
        let token = a.token.clone();
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    let (_, page) = b.get("/v1/revocations?since=0", Some(&broker)).await;
    let seqs: Vec<i64> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=6).collect::<Vec<i64>>());
    // Both processes serve the same CRL number once caught up.
    let crl_a = a
        .client
        .get(a.url("/v1/crl"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let crl_b = b
        .client
        .get(b.url("/v1/crl"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        crl_a, crl_b,
        "the two processes serve different CRLs for the same feed head"
    );
}
