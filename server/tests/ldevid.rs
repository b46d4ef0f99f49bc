//! LDevIDs: the per-model settings, on SQLite and, with DEVID_TEST_POSTGRES_URL, on
//! PostgreSQL.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Registers a device of `model`; returns its ClientID.
async fn register(server: &Server, serial: &str, model: &str) -> String {
    let (status, reg) = server
        .admin_post(
            "/v1/devices",
            &json!({"hardware_serial": serial, "model": model, "generate_key": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{reg}");
    reg["client_id"].as_str().unwrap().into()
}

async fn put_model(server: &Server, model: &str, body: Value) -> (StatusCode, Value) {
    server
        .send(
            Method::PUT,
            &format!("/v1/models/{model}"),
            Some(&server.token.clone()),
            Some(&body),
        )
        .await
}

#[tokio::test]
async fn model_settings_are_stored_checked_and_reach_the_status() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let dev = register(&server, "MS-1", "thermo").await;
        let (status, st) = server
            .admin_get(&format!("/v1/devices/{}/status", dev))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(st["connect_with"], "any", "the default");
        let (status, m) = put_model(
            &server,
            "thermo",
            json!({"ldevid_validity": "30d", "renewal_grace": "0", "connect_with": "ldevid"}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{m}");
        assert_eq!(
            (
                &m["ldevid_validity"],
                &m["renewal_grace"],
                &m["connect_with"]
            ),
            (&json!("30d"), &json!("0"), &json!("ldevid"))
        );
        let (_, m) = server.admin_get("/v1/models/thermo").await;
        assert_eq!(m["renewal_grace"], "0", "{m}");
        let (_, st) = server
            .admin_get(&format!("/v1/devices/{}/status", dev))
            .await;
        assert_eq!(st["connect_with"], "ldevid", "{st}");
        // Brokers learn of it from the feed: a model-scope `updated` entry.
        let (_, feed) = server.admin_get("/v1/revocations?since=0").await;
        let entries = feed["entries"].as_array().unwrap();
        assert!(
            entries.iter().any(|e| e["scope"] == "model"
                && e["action"] == "updated"
                && e["model"] == "thermo"),
            "{feed}"
        );
        // Bad values: refused, nothing changed.
        for bad in [
            json!({"ldevid_validity": "91d"}),
            json!({"ldevid_validity": "0"}),
            json!({"renewal_grace": "never"}),
            json!({"connect_with": "idevid"}),
        ] {
            let (status, p) = put_model(&server, "thermo", bad.clone()).await;
            assert!(status.is_client_error(), "{bad}: {status} {p}");
        }
        let (_, m) = server.admin_get("/v1/models/thermo").await;
        assert_eq!(m["connect_with"], "ldevid", "unchanged: {m}");
    }
}
