//! Device settings written concurrently: `PUT .../allowlist` and `PUT .../policy` each change
//! only their own fields, so neither undoes the other. Runs on SQLite and, with
//! DEVID_TEST_POSTGRES_URL, on PostgreSQL.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn concurrent_allowlist_and_policy_writes_both_survive() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let (status, reg) = server
            .admin_post(
                "/v1/devices",
                &json!({"hardware_serial": "POL-1", "model": "thermo", "generate_key": true}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{reg}");
        let id = reg["client_id"].as_str().unwrap();
        let admin = server.token.clone();
        let allowlist = format!("/v1/devices/{id}/allowlist");
        let policy = format!("/v1/devices/{id}/policy");
        let mut lost = Vec::new();
        for round in 0..50 {
            let cidrs = json!({"cidrs": [format!("10.0.{round}.0/24")]});
            let auth = if round % 2 == 0 { "required" } else { "off" };
            let topics = json!({"topics": {"publish": [format!("t/{round}/#")], "subscribe": []},
                                "message_auth": auth});
            let ((s1, v1), (s2, v2)) = tokio::join!(
                server.send(Method::PUT, &allowlist, Some(&admin), Some(&cidrs)),
                server.send(Method::PUT, &policy, Some(&admin), Some(&topics))
            );
            assert_eq!(s1, StatusCode::OK, "{v1}");
            assert_eq!(s2, StatusCode::OK, "{v2}");
            let (status, st) = server.admin_get(&format!("/v1/devices/{id}/status")).await;
            assert_eq!(status, StatusCode::OK, "{st}");
            if st["allowed_cidrs"] != cidrs["cidrs"]
                || st["policy"]["publish"] != json!([format!("t/{round}/#")])
                || st["message_auth"] != auth
            {
                lost.push((round, st));
            }
        }
        assert!(
            lost.is_empty(),
            "{}: {} of 50 rounds lost a write, e.g. {:?}",
            backend.name(),
            lost.len(),
            lost.first()
        );
    }
}
