//! The fleet summary's device counts are kept as devices change (`device_counts`, written by
//! triggers on devices) instead of counted at each read: every path that registers devices,
//! changes their status or sees them first must leave the summary equal to a count of the
//! devices themselves. Runs on SQLite and, with DEVID_TEST_POSTGRES_URL, on PostgreSQL.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// One query on the server's own database.
async fn query_i64(server: &Server, sql: &str) -> i64 {
    use sqlx::Connection as _;
    match &server.backend {
        Backend::Sqlite => {
            let url = format!("sqlite://{}", server.data_dir.join("devid.db").display());
            let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
        }
        Backend::Postgres(url) => {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
        }
    }
}

/// The summary's device counts, and the same counted from the devices table.
async fn counts(server: &Server) -> (Value, Value) {
    let (status, s) = server.admin_get("/v1/fleet/summary").await;
    assert_eq!(status, StatusCode::OK, "{s}");
    let got = json!({"total": s["total"], "active": s["active"], "suspended": s["suspended"],
                     "revoked": s["revoked"], "never_seen": s["never_seen"]});
    let mut want = serde_json::Map::new();
    for (k, sql) in [
        ("total", "SELECT COUNT(*) FROM devices"),
        (
            "active",
            "SELECT COUNT(*) FROM devices WHERE status = 'active'",
        ),
        (
            "suspended",
            "SELECT COUNT(*) FROM devices WHERE status = 'suspended'",
        ),
        (
            "revoked",
            "SELECT COUNT(*) FROM devices WHERE status = 'revoked'",
        ),
        (
            "never_seen",
            "SELECT COUNT(*) FROM devices WHERE last_seen IS NULL",
        ),
    ] {
        want.insert(k.into(), json!(query_i64(server, sql).await));
    }
    (got, Value::Object(want))
}

async fn register(server: &Server, hw: &str) -> String {
    let (status, reg) = server
        .admin_post(
            "/v1/devices",
            &json!({"hardware_serial": hw, "model": "counted", "metadata": {"lot": "A"},
                    "generate_key": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{reg}");
    reg["client_id"].as_str().unwrap().to_string()
}

fn rfc(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

#[tokio::test]
async fn the_summary_counts_every_change_of_the_devices() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let name = backend.name();
        let (got, want) = counts(&server).await;
        assert_eq!(got, want, "{name}: empty");
        assert_eq!(got["total"], 0, "{name}");

        // One by one and in a batch.
        let a = register(&server, "CNT-A").await;
        let b = register(&server, "CNT-B").await;
        let c = register(&server, "CNT-C").await;
        let items: Vec<Value> = (0..5)
            .map(|i| {
                json!({"hardware_serial": format!("CNT-BATCH-{i}"), "model": "counted",
                            "metadata": {"lot": "B"}, "generate_key": true})
            })
            .collect();
        let (status, r) = server
            .admin_post("/v1/devices/batch", &json!({ "items": items }))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{name}: {}", r["detail"]);
        assert_eq!(r["created"], 5, "{name}");
        // A batch repeated is refused whole: nothing written, nothing counted.
        let (status, r) = server
            .admin_post("/v1/devices/batch", &json!({ "items": items }))
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{name}: {}", r["detail"]);
        let (got, want) = counts(&server).await;
        assert_eq!(got, want, "{name}: registered");
        assert_eq!(got["total"], 8, "{name}");

        // Single changes, a bulk change, a first connection.
        for (path, body) in [
            (format!("/v1/devices/{a}/suspend"), json!({})),
            (
                format!("/v1/devices/{b}/revoke"),
                json!({"reason": "superseded"}),
            ),
            (
                "/v1/devices/revoke".to_string(),
                json!({"filter": {"model": "counted", "metadata": {"lot": "B"}},
                       "reason": "keyCompromise"}),
            ),
        ] {
            let (status, r) = server.admin_post(&path, &body).await;
            assert!(status.is_success(), "{name}: {path}: {status} {r}");
        }
        let broker = server.token("broker", None).await;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let (status, r) = server
            .post(
                "/v1/events",
                Some(&broker),
                &json!({"events": [{"kind": "connect", "client_id": c, "at": rfc(now - 5),
                                    "address": "10.0.0.1:1", "auth": "devid1"}]}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{name}: {r}");
        let (got, want) = counts(&server).await;
        assert_eq!(got, want, "{name}: changed");
        assert_eq!(
            got,
            json!({"total": 8, "active": 1, "suspended": 1, "revoked": 6, "never_seen": 7}),
            "{name}"
        );

        // Many small changes (each its own statement), then the summary folds what it reads
        // into a handful of rows and still counts right.
        for _ in 0..150 {
            for verb in ["suspend", "resume"] {
                let (status, r) = server
                    .admin_post(&format!("/v1/devices/{c}/{verb}"), &json!({}))
                    .await;
                assert!(status.is_success(), "{name}: {verb}: {status} {r}");
            }
        }
        let (got, want) = counts(&server).await;
        assert_eq!(got, want, "{name}: after many changes");
        let rows = query_i64(&server, "SELECT COUNT(*) FROM device_counts").await;
        assert!(
            rows <= 6,
            "{name}: {rows} rows of device_counts after a read"
        );
        let (got, want) = counts(&server).await;
        assert_eq!(got, want, "{name}: after the fold");
    }
}
