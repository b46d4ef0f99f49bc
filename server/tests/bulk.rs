//! Revoking, suspending and resuming by filter: the filter's rules, dry runs, the one
//! transaction's writes (devices, certificates, feed entries, application events, one audit
//! row), and agreement with the single-device path. Every test runs on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Registers a device of `model` with `metadata`; returns (client_id, serial).
async fn register(server: &Server, hw: &str, model: &str, metadata: Value) -> (String, String) {
    let (status, reg) = server
        .admin_post(
            "/v1/devices",
            &json!({"hardware_serial": hw, "model": model, "metadata": metadata,
                    "generate_key": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{reg}");
    (
        reg["client_id"].as_str().unwrap().to_string(),
        reg["serial"].as_str().unwrap().to_string(),
    )
}

async fn device(server: &Server, id: &str) -> Value {
    let (status, d) = server.admin_get(&format!("/v1/devices/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{d}");
    d
}

async fn feed_after(server: &Server, since: i64) -> (Vec<Value>, i64) {
    let (status, page) = server
        .admin_get(&format!("/v1/revocations?since={since}&limit=10000"))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    (
        page["entries"].as_array().unwrap().clone(),
        page["head"].as_i64().unwrap(),
    )
}

/// Audit rows of `action`.
async fn audits(server: &Server, action: &str) -> Vec<Value> {
    let (status, page) = server.admin_get("/v1/audit?limit=1000").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == action)
        .cloned()
        .collect()
}

/// The application events (kind, client_id, data), oldest first, read from the database.
async fn app_events(server: &Server) -> Vec<(String, String, Value)> {
    use sqlx::Connection as _;
    let sql = "SELECT kind, client_id, data FROM app_events ORDER BY seq";
    let rows: Vec<(String, Option<String>, String)> = match &server.backend {
        Backend::Sqlite => {
            let url = format!("sqlite://{}", server.data_dir.join("devid.db").display());
            let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query_as(sql).fetch_all(&mut c).await.unwrap()
        }
        Backend::Postgres(url) => {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query_as(sql).fetch_all(&mut c).await.unwrap()
        }
    };
    rows.into_iter()
        .map(|(k, c, d)| (k, c.unwrap_or_default(), serde_json::from_str(&d).unwrap()))
        .collect()
}

async fn bulk(server: &Server, verb: &str, body: &Value) -> (StatusCode, Value) {
    server
        .admin_post(&format!("/v1/devices/{verb}"), body)
        .await
}

#[tokio::test]
async fn bad_filters_are_refused_and_change_nothing() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let (id, _) = register(&server, "BF-1", "thermo", json!({"lot": "L7"})).await;
        let (_, head) = feed_after(&server, 0).await;
        for (verb, body, says) in [
            (
                "revoke",
                json!({"filter": {}, "reason": "superseded"}),
                "at least one",
            ),
            ("revoke", json!({"filter": {"model": "thermo"}}), "reason"),
            (
                "revoke",
                json!({"filter": {"model": "thermo"}, "reason": "certificateHold"}),
                "certificateHold",
            ),
            (
                "suspend",
                json!({"filter": {"model": "thermo"}, "reason": "superseded"}),
                "reason",
            ),
            (
                "suspend",
                json!({"filter": {"model": "thermo"}, "colour": "red"}),
                "colour",
            ),
            ("suspend", json!({"filter": {"modle": "thermo"}}), "modle"),
            ("resume", json!({"filter": {"model": "a/b"}}), "model"),
            (
                "resume",
                json!({"filter": {"client_ids": ["not an id"]}}),
                "ClientID",
            ),
            (
                "resume",
                json!({"filter": {"metadata": {"lot": 7}}}),
                "string",
            ),
            (
                "suspend",
                json!({"filter": {"created_after": "last tuesday"}}),
                "created_after",
            ),
        ] {
            let (status, p) = bulk(&server, verb, &body).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {p}");
            assert!(
                p["detail"].as_str().unwrap().contains(says),
                "{body}: {p} does not say {says}"
            );
        }
        // An auditor may not.
        let auditor = server.token("auditor", None).await;
        let (status, _) = server
            .post(
                "/v1/devices/suspend",
                Some(&auditor),
                &json!({"filter": {"model": "thermo"}}),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(device(&server, &id).await["status"], "active");
        assert_eq!(feed_after(&server, 0).await.1, head, "{}", backend.name());
    }
}

#[tokio::test]
async fn a_list_holds_at_most_100000_client_ids() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let (id, _) = register(&server, "LIM-1", "thermo", json!({})).await;
        let mut ids: Vec<String> = (0..99_999).map(|i| format!("X{i}")).collect();
        ids.push(id.clone());
        let (status, r) = bulk(
            &server,
            "suspend",
            &json!({"filter": {"client_ids": ids}, "dry_run": true}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{}", backend.name());
        assert_eq!(r["matched"], 1);
        assert_eq!(r["changed"], 1);
        assert_eq!(r["sample"], json!([id]));
        ids.push("Y1".into());
        let (status, p) = bulk(
            &server,
            "suspend",
            &json!({"filter": {"client_ids": ids}, "dry_run": true}),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
        assert!(p["detail"].as_str().unwrap().contains("100000"), "{p}");
    }
}

#[tokio::test]
async fn a_dry_run_counts_and_samples_and_changes_nothing() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let mut lot = Vec::new();
        for i in 0..25 {
            lot.push(register(&server, &format!("DR-{i}"), "thermo", json!({"lot": "L7"})).await);
        }
        register(&server, "DR-other", "thermo", json!({"lot": "L8"})).await;
        let (_, head) = feed_after(&server, 0).await;
        let events = app_events(&server).await.len();
        let (status, r) = bulk(
            &server,
            "revoke",
            &json!({"filter": {"model": "thermo", "metadata": {"lot": "L7"}},
                    "reason": "keyCompromise", "dry_run": true}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{r}");
        assert_eq!(r["matched"], 25);
        assert_eq!(r["changed"], 25);
        assert_eq!(r["dry_run"], true);
        let sample: Vec<&str> = r["sample"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let first: Vec<&str> = lot.iter().take(20).map(|(id, _)| id.as_str()).collect();
        assert_eq!(sample, first, "the first 20, oldest first");
        for (id, _) in &lot {
            assert_eq!(device(&server, id).await["status"], "active");
        }
        assert_eq!(feed_after(&server, 0).await.1, head);
        assert_eq!(app_events(&server).await.len(), events);
        assert!(audits(&server, "devices.revoke").await.is_empty());
    }
}

#[tokio::test]
async fn revoking_a_lot_writes_every_device_once_with_one_audit_row() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let mut lot = Vec::new();
        for i in 0..3 {
            lot.push(register(&server, &format!("RL-{i}"), "thermo", json!({"lot": "L7"})).await);
        }
        let other_lot = register(&server, "RL-L8", "thermo", json!({"lot": "L8"})).await;
        let other_model = register(&server, "RL-M", "lamp", json!({"lot": "L7"})).await;
        // One of the lot is suspended first: revoking takes its held certificate too.
        let (status, _) = server
            .admin_post(&format!("/v1/devices/{}/suspend", lot[1].0), &json!({}))
            .await;
        assert_eq!(status, StatusCode::OK);
        let (_, head) = feed_after(&server, 0).await;
        let events_before = app_events(&server).await.len();

        let body = json!({"filter": {"model": "thermo", "metadata": {"lot": "L7"}},
                          "reason": "keyCompromise"});
        let (status, r) = bulk(&server, "revoke", &body).await;
        assert_eq!(status, StatusCode::OK, "{r}");
        assert_eq!(
            (r["matched"].as_u64(), r["changed"].as_u64(), &r["dry_run"]),
            (Some(3), Some(3), &json!(false))
        );
        for (id, serial) in &lot {
            let d = device(&server, id).await;
            assert_eq!(d["status"], "revoked", "{d}");
            assert_eq!(d["revocation_reason"], "keyCompromise");
            assert_eq!(d["certificates"][0]["serial"], serial.as_str());
            assert_eq!(d["certificates"][0]["status"], "revoked");
        }
        for (id, _) in [&other_lot, &other_model] {
            assert_eq!(device(&server, id).await["status"], "active");
        }
        // One feed entry per device, gap-free after the head, in registration order.
        let (entries, new_head) = feed_after(&server, head).await;
        assert_eq!(entries.len(), 3, "{entries:?}");
        assert_eq!(new_head, head + 3);
        for (i, (e, (id, serial))) in entries.iter().zip(&lot).enumerate() {
            assert_eq!(e["seq"], head + 1 + i as i64);
            assert_eq!(e["client_id"], id.as_str());
            assert_eq!(e["scope"], "device");
            assert_eq!(e["action"], "revoked");
            assert_eq!(e["reason"], "keyCompromise");
            assert_eq!(e["serials"], json!([serial]));
        }
        // One application event per device.
        let events = app_events(&server).await;
        let new: Vec<_> = events[events_before..].to_vec();
        assert_eq!(new.len(), 3, "{new:?}");
        for ((kind, client_id, data), (id, serial)) in new.iter().zip(&lot) {
            assert_eq!(kind, "revoked");
            assert_eq!(client_id, id);
            assert_eq!(data["reason"], "keyCompromise");
            assert_eq!(data["serials"], json!([serial]));
        }
        // One audit row naming the filter and the count.
        let rows = audits(&server, "devices.revoke").await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0]["target"], "model=thermo metadata.lot=L7");
        assert_eq!(rows[0]["detail"], "changed 3 of 3 matched");
        assert_eq!(rows[0]["outcome"], "ok");
        // The CRL lists them.
        let der = server
            .client
            .get(server.url("/v1/crl"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let (_, crl) = x509_parser::parse_x509_crl(&der).unwrap();
        let listed: Vec<String> = crl
            .iter_revoked_certificates()
            .map(|c| {
                hex::encode(c.raw_serial())
                    .trim_start_matches("00")
                    .to_string()
            })
            .collect();
        for (_, serial) in &lot {
            assert!(
                listed
                    .iter()
                    .any(|s| s.trim_start_matches('0') == serial.trim_start_matches('0')),
                "{serial} not in the CRL {listed:?}"
            );
        }

        // Again: matched, nothing changed, nothing written.
        let (status, r) = bulk(&server, "revoke", &body).await;
        assert_eq!(status, StatusCode::OK, "{r}");
        assert_eq!(
            (r["matched"].as_u64(), r["changed"].as_u64()),
            (Some(3), Some(0))
        );
        assert_eq!(feed_after(&server, 0).await.1, new_head);
        assert_eq!(audits(&server, "devices.revoke").await.len(), 1);
    }
}

#[tokio::test]
async fn suspend_and_resume_by_filter() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let a = register(&server, "SR-A", "thermo", json!({"lot": "L1"})).await;
        let b = register(&server, "SR-B", "thermo", json!({"lot": "L1"})).await;
        let c = register(&server, "SR-C", "thermo", json!({"lot": "L2"})).await;
        let (_, head) = feed_after(&server, 0).await;
        let (status, r) = bulk(
            &server,
            "suspend",
            &json!({"filter": {"client_ids": [a.0, c.0]}}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{r}");
        assert_eq!(
            (r["matched"].as_u64(), r["changed"].as_u64()),
            (Some(2), Some(2))
        );
        assert_eq!(device(&server, &a.0).await["status"], "suspended");
        assert_eq!(
            device(&server, &a.0).await["certificates"][0]["status"],
            "hold"
        );
        assert_eq!(device(&server, &b.0).await["status"], "active");
        let (entries, _) = feed_after(&server, head).await;
        let actions: Vec<(&str, &str)> = entries
            .iter()
            .map(|e| {
                (
                    e["client_id"].as_str().unwrap(),
                    e["action"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            actions,
            [(a.0.as_str(), "suspended"), (c.0.as_str(), "suspended")]
        );
        assert_eq!(entries[0]["reason"], "certificateHold");

        // Resume the whole model: only the suspended ones change.
        let (status, r) = bulk(&server, "resume", &json!({"filter": {"model": "thermo"}})).await;
        assert_eq!(status, StatusCode::OK, "{r}");
        assert_eq!(
            (r["matched"].as_u64(), r["changed"].as_u64()),
            (Some(3), Some(2))
        );
        assert_eq!(r["sample"], json!([a.0, c.0]));
        for id in [&a.0, &b.0, &c.0] {
            let d = device(&server, id).await;
            assert_eq!(d["status"], "active");
            assert_eq!(d["certificates"][0]["status"], "good");
        }
        let kinds: Vec<String> = app_events(&server)
            .await
            .into_iter()
            .filter(|(k, _, _)| k == "suspended" || k == "resumed")
            .map(|(k, c, _)| format!("{k} {c}"))
            .collect();
        assert_eq!(
            kinds,
            [
                format!("suspended {}", a.0),
                format!("suspended {}", c.0),
                format!("resumed {}", a.0),
                format!("resumed {}", c.0)
            ]
        );
        assert_eq!(audits(&server, "devices.suspend").await.len(), 1);
        assert_eq!(audits(&server, "devices.resume").await.len(), 1);
        // By creation time: nothing was registered before 2000.
        let (status, r) = bulk(
            &server,
            "suspend",
            &json!({"filter": {"created_before": "2000-01-01T00:00:00Z"}}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{r}");
        assert_eq!(r["matched"], 0);
    }
}

/// What a device looks like after an action: its status, its certificates' states, and the feed
/// entry the action wrote (action, reason), or none.
async fn observe(
    server: &Server,
    id: &str,
    since: i64,
) -> (Value, Vec<Value>, Vec<(Value, Value)>) {
    let d = device(server, id).await;
    let certs = d["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].clone())
        .collect();
    let (entries, _) = feed_after(server, since).await;
    let feed = entries
        .iter()
        .filter(|e| e["client_id"] == id)
        .map(|e| (e["action"].clone(), e["reason"].clone()))
        .collect();
    (d["status"].clone(), certs, feed)
}

/// The bulk path applies the lifecycle's plan: for every state and action, a device changed by
/// filter ends as its twin changed by the single-device route (status, certificates, feed entry).
#[tokio::test]
async fn the_bulk_path_agrees_with_the_single_device_path() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let actions: [(&str, Value); 3] = [
            ("revoke", json!({"reason": "superseded"})),
            ("suspend", json!({})),
            ("resume", json!({})),
        ];
        for state in ["active", "suspended", "revoked"] {
            for (verb, body) in &actions {
                let mut twins = Vec::new();
                for who in ["single", "bulk"] {
                    let (id, _) = register(
                        &server,
                        &format!("AG-{state}-{verb}-{who}"),
                        "ag",
                        json!({}),
                    )
                    .await;
                    match state {
                        "suspended" => {
                            server
                                .admin_post(&format!("/v1/devices/{id}/suspend"), &json!({}))
                                .await;
                        }
                        "revoked" => {
                            server
                                .admin_post(
                                    &format!("/v1/devices/{id}/revoke"),
                                    &json!({"reason": "unspecified"}),
                                )
                                .await;
                        }
                        _ => {}
                    }
                    twins.push(id);
                }
                let (_, head) = feed_after(&server, 0).await;
                server
                    .admin_post(&format!("/v1/devices/{}/{verb}", twins[0]), body)
                    .await;
                let mut req = json!({"filter": {"client_ids": [twins[1]]}});
                if let Some(r) = body.get("reason") {
                    req["reason"] = r.clone();
                }
                let (status, r) = bulk(&server, verb, &req).await;
                assert_eq!(status, StatusCode::OK, "{r}");
                let single = observe(&server, &twins[0], head).await;
                let by_filter = observe(&server, &twins[1], head).await;
                assert_eq!(single, by_filter, "{} {state} {verb}", backend.name());
                assert_eq!(r["changed"], single.2.len(), "{state} {verb}");
            }
        }
    }
}
