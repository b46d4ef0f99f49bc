//! Fleet health: brokers' batches build each device's health record, the fleet checks open and
//! close findings, and the fleet routes read them. Runs the real server on SQLite and, with
//! DEVID_TEST_POSTGRES_URL, on PostgreSQL; the time-driven checks are swept through the store
//! (on the server's own database) with a chosen "now".
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::*;
use devid_server::store::{Store, Sweeper};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Registers a device of `model`; its ClientID.
async fn register(server: &Server, serial: &str, model: &str) -> String {
    let (status, reg) = server
        .admin_post(
            "/v1/devices",
            &json!({"hardware_serial": serial, "model": model, "generate_key": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{reg}");
    reg["client_id"].as_str().unwrap().to_string()
}

/// Sets the thermo model's check thresholds.
async fn put_thermo_checks(server: &Server, body: Value) {
    let (status, v) = server
        .send(
            Method::PUT,
            "/v1/fleet/checks/thermo",
            Some(&server.token.clone()),
            Some(&body),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
}

/// A server started with these extra arguments.
async fn start_with_args(backend: &Backend, args: &[&str]) -> Server {
    let opts = Options {
        extra_args: args.iter().map(|a| a.to_string()).collect(),
        ..Options::default()
    };
    Server::start_with(backend, opts).await
}

/// The store of the server's database, as a second process would open it.
async fn store_of(server: &Server) -> Store {
    match &server.backend {
        Backend::Sqlite => Store::connect_sqlite(&server.data_dir.join("devid.db"), false)
            .await
            .unwrap(),
        Backend::Postgres(url) => Store::connect_postgres(url).await.unwrap(),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn rfc(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn heartbeat(name: &str, started: i64) -> Value {
    json!({"name": name, "started_at": rfc(started), "max_staleness": 60, "feed_seq": 0, "connected": 1})
}

async fn post_batch(server: &Server, broker: &str, batch: Value) {
    let (status, v) = server.post("/v1/events", Some(broker), &batch).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
}

async fn findings(server: &Server, query: &str) -> Vec<Value> {
    let (status, page) = server
        .admin_get(&format!("/v1/fleet/findings{query}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["items"].as_array().unwrap().clone()
}

fn checks_of(items: &[Value]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = items
        .iter()
        .map(|f| {
            (
                f["check"].as_str().unwrap().to_string(),
                f["subject"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn batches_build_health_connections_and_timeline() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let broker = server.token("broker", None).await;
        let app = server.token("app", None).await;
        let a = register(&server, "FH-1", "thermo").await;
        let b = register(&server, "FH-2", "thermo").await;
        let t = now() - 100;
        post_batch(
            &server,
            &broker,
            json!({
                "events": [
                    {"kind": "connect", "client_id": a, "at": rfc(t), "address": "10.0.0.5:4000",
                     "auth": "devid1", "serial": "0a", "sw_version": "1.2.3"},
                    {"kind": "connect", "client_id": b, "at": rfc(t + 1), "address": "10.0.0.6:4000",
                     "auth": "resumption"},
                    {"kind": "disconnect", "client_id": b, "at": rfc(t + 2), "address": "10.0.0.6:4000"},
                    {"kind": "auth_failure", "client_id": a, "at": rfc(t + 3), "address": "10.9.9.9:1",
                     "refusal": "bad_signature", "reason": "signature does not verify"},
                    {"kind": "connect", "client_id": "NotRegistered", "at": rfc(t + 4)}
                ],
                "counters": [{"client_id": a, "published": 7, "refused": 2}],
                "broker": heartbeat("b1", t - 1000)
            }),
        )
        .await;
        post_batch(
            &server,
            &broker,
            json!({"counters": [{"client_id": a, "published": 3, "refused": 0}],
                   "broker": heartbeat("b1", t - 1000)}),
        )
        .await;
        let (status, h) = server
            .get(&format!("/v1/devices/{a}/health"), Some(&app))
            .await;
        assert_eq!(status, StatusCode::OK, "{}: {h}", backend.name());
        assert_eq!(h["status"], "active");
        assert_eq!(h["model"], "thermo");
        assert_eq!(h["first_seen"], rfc(t));
        assert_eq!(h["connected_on"], json!(["b1"]));
        assert_eq!(
            h["last_connect"],
            json!({"at": rfc(t), "address": "10.0.0.5:4000", "broker": "b1", "auth": "devid1"})
        );
        assert_eq!(h["sw_version"], "1.2.3");
        assert_eq!(h["published"], 10);
        assert_eq!(h["refused"], 2);
        assert_eq!(
            h["auth_failures"],
            json!([{"reason": "bad_signature", "count": 1}])
        );
        assert!(h["cert_not_after"].is_string(), "{h}");
        let (_, hb) = server
            .get(&format!("/v1/devices/{b}/health"), Some(&app))
            .await;
        assert_eq!(hb["connected_on"], json!([]), "{hb}");
        assert_eq!(hb["last_disconnect"]["at"], rfc(t + 2));
        assert_eq!(hb["last_connect"]["auth"], "resumption");

        // The timeline, newest first, in pages.
        let (status, page) = server
            .get(&format!("/v1/devices/{a}/timeline?limit=1"), Some(&app))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["items"][0]["kind"], "auth_failed");
        assert_eq!(page["items"][0]["data"]["refusal"], "bad_signature");
        let cursor = page["next_cursor"].as_str().unwrap().to_string();
        let (_, page) = server
            .get(
                &format!("/v1/devices/{a}/timeline?limit=10&cursor={cursor}"),
                Some(&app),
            )
            .await;
        let kinds: Vec<&str> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        assert!(kinds.starts_with(&["connected"]), "{page}");
        assert_eq!(page["items"][0]["data"]["broker"], "b1");
        assert_eq!(page["items"][0]["data"]["sw_version"], "1.2.3");
        assert!(page.get("next_cursor").is_none(), "{page}");
        let (_, tb) = server
            .get(&format!("/v1/devices/{b}/timeline"), Some(&app))
            .await;
        let kinds: Vec<&str> = tb["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            vec![
                "disconnected",
                "connected",
                "certificate_issued",
                "registered"
            ],
            "{tb}"
        );

        // The summary.
        let (status, s) = server.get("/v1/fleet/summary", Some(&app)).await;
        assert_eq!(status, StatusCode::OK, "{s}");
        assert_eq!(s["total"], 2, "{s}");
        assert_eq!(s["active"], 2);
        assert_eq!(s["connected_now"], 1);
        assert_eq!(s["never_seen"], 0);
        assert_eq!(s["brokers_live"], 1);
        assert_eq!(s["brokers_known"], 1);
        // The same counts as gauges (read at the first scrape).
        let metrics = server
            .client
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for line in [
            "devid_fleet_devices{status=\"active\"} 2\n",
            "devid_fleet_connected_devices 1\n",
            "devid_fleet_open_findings{check=\"silent\",severity=\"info\"} 0\n",
        ] {
            assert!(metrics.contains(line), "{line}: {metrics}");
        }

        // A restarted broker: what it reported before is gone.
        post_batch(&server, &broker, json!({"broker": heartbeat("b1", t + 50)})).await;
        let (_, h) = server.admin_get(&format!("/v1/devices/{a}/health")).await;
        assert_eq!(h["connected_on"], json!([]), "{h}");
        let (_, s) = server.admin_get("/v1/fleet/summary").await;
        assert_eq!(s["connected_now"], 0, "{s}");

        // Bad input: a clear error, nothing recorded.
        let (status, _) = server
            .post(
                "/v1/events",
                Some(&broker),
                &json!({"broker": {"name": "b2", "started_at": "yesterday", "max_staleness": 60,
                                    "feed_seq": 0, "connected": 0}}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let (status, _) = server
            .post(
                "/v1/events",
                Some(&broker),
                &json!({"counters": [{"client_id": a, "published": 1, "refused": 0},
                                     {"client_id": a, "published": 1, "refused": 0}]}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let (_, s) = server.admin_get("/v1/fleet/summary").await;
        assert_eq!(s["brokers_known"], 1, "{s}");
        let (_, h) = server.admin_get(&format!("/v1/devices/{a}/health")).await;
        assert_eq!(h["published"], 10);
        let (status, _) = server.admin_get("/v1/devices/Nobody/health").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = server.admin_get("/v1/fleet/findings?state=maybe").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = server.admin_get("/v1/fleet/summary?x=1").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
}

#[tokio::test]
async fn app_tokens_read_fleet_health_and_change_nothing() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let app = server.token("app", None).await;
        let factory = server.token("factory", None).await;
        let id = register(&server, "FR-1", "thermo").await;
        for path in [
            "/v1/fleet/summary".to_string(),
            "/v1/fleet/findings".to_string(),
            "/v1/fleet/checks/thermo".to_string(),
            format!("/v1/devices/{id}/health"),
            format!("/v1/devices/{id}/timeline"),
        ] {
            let (status, v) = server.get(&path, Some(&app)).await;
            assert_eq!(status, StatusCode::OK, "{}: {path}: {v}", backend.name());
            let (status, _) = server.get(&path, Some(&factory)).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        }
        let body = json!({"silent_after": "2h"});
        let (status, _) = server
            .send(
                Method::PUT,
                "/v1/fleet/checks/thermo",
                Some(&app),
                Some(&body),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = server
            .post("/v1/events", Some(&app), &json!({"events": []}))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = server
            .post(
                &format!("/v1/devices/{id}/revoke"),
                Some(&app),
                &json!({"reason": "keyCompromise"}),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        put_thermo_checks(&server, body.clone()).await;
        let (_, v) = server.get("/v1/fleet/checks/thermo", Some(&app)).await;
        assert_eq!(v, body);
        let (status, _) = server
            .send(
                Method::PUT,
                "/v1/fleet/checks/thermo",
                Some(&server.token.clone()),
                Some(&json!({"silent_after": "2x"})),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let (status, _) = server
            .send(
                Method::PUT,
                "/v1/fleet/checks/thermo",
                Some(&server.token.clone()),
                Some(&json!({"silent": "2h"})),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    }
}

#[tokio::test]
async fn event_driven_checks_open_and_the_sweep_closes_them() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let broker = server.token("broker", None).await;
        let a = register(&server, "FE-1", "thermo").await;
        let b = register(&server, "FE-2", "thermo").await;
        let t = now();
        // auth_failures: 10 in 10 minutes for one ClientID, and from one address.
        let failures: Vec<Value> = (0..10)
            .map(|i| {
                json!({"kind": "auth_failure", "client_id": a, "at": rfc(t - 60 + i),
                       "address": format!("192.0.2.7:{}", 1000 + i), "refusal": "bad_signature"})
            })
            .collect();
        post_batch(&server, &broker, json!({"events": failures})).await;
        // duplicate_client_id: on two brokers at once. shared_certificate: three networks.
        let connects: Vec<Value> = ["198.51.100.1:1", "203.0.113.1:1", "192.0.2.200:1"]
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                json!({"kind": "connect", "client_id": b, "at": rfc(t - 30 + i as i64),
                       "address": addr, "serial": "beef", "broker": format!("b{}", i % 2)})
            })
            .collect();
        post_batch(&server, &broker, json!({"events": connects})).await;
        let open = findings(&server, "").await;
        assert_eq!(
            checks_of(&open),
            vec![
                ("auth_failures".to_string(), "192.0.2.7".to_string()),
                ("auth_failures".to_string(), a.clone()),
                ("duplicate_client_id".to_string(), b.clone()),
                ("shared_certificate".to_string(), "beef".to_string()),
            ],
            "{}: {open:?}",
            backend.name()
        );
        let dup = open
            .iter()
            .find(|f| f["check"] == "duplicate_client_id")
            .unwrap();
        assert_eq!(dup["severity"], "critical");
        assert_eq!(dup["client_id"], b.as_str());
        assert_eq!(dup["model"], "thermo");
        let (_, s) = server.admin_get("/v1/fleet/summary").await;
        assert!(
            s["findings"]
                .as_array()
                .unwrap()
                .contains(&json!({"check": "auth_failures", "severity": "warning", "open": 2})),
            "{s}"
        );
        let (_, h) = server.admin_get(&format!("/v1/devices/{b}/health")).await;
        assert_eq!(h["connected_on"], json!(["b0", "b1"]), "{h}");
        assert_eq!(h["findings"].as_array().unwrap().len(), 2, "{h}");
        // The same events again open nothing new: one open finding per check and subject.
        post_batch(
            &server,
            &broker,
            json!({"events": [{"kind": "auth_failure", "client_id": a, "at": rfc(t),
                               "refusal": "bad_signature"}]}),
        )
        .await;
        assert_eq!(findings(&server, "").await.len(), 4);

        // One broker lets go of b: the duplicate closes at the next sweep; the others hold
        // while their windows do, and an hour later the sweep closes them too.
        post_batch(
            &server,
            &broker,
            json!({"events": [{"kind": "disconnect", "client_id": b, "at": rfc(t), "broker": "b1"}]}),
        )
        .await;
        let store = store_of(&server).await;
        let swept = store
            .sweep_fleet(&mut Sweeper::default(), t + 5)
            .await
            .unwrap();
        assert_eq!(swept.closed, 1, "{swept:?}");
        let open = findings(&server, "").await;
        assert_eq!(
            checks_of(&open)
                .iter()
                .map(|c| c.0.as_str())
                .collect::<Vec<_>>(),
            vec!["auth_failures", "auth_failures", "shared_certificate"],
            "{open:?}"
        );
        let swept = store
            .sweep_fleet(&mut Sweeper::default(), t + 3700)
            .await
            .unwrap();
        let open = findings(&server, "").await;
        assert!(
            !open.iter().any(|f| f["check"] == "auth_failures"
                || f["check"] == "duplicate_client_id"
                || f["check"] == "shared_certificate"),
            "{swept:?} {open:?}"
        );
        let closed = findings(&server, "?state=closed&check=auth_failures").await;
        assert_eq!(closed.len(), 2, "{closed:?}");
        assert!(closed[0]["closed_at"].is_string());
        // Opening and closing are on the device's timeline.
        let (_, tl) = server.admin_get(&format!("/v1/devices/{a}/timeline")).await;
        let kinds: Vec<&str> = tl["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds[0], "finding_closed", "{tl}");
        assert!(kinds.contains(&"finding_opened"), "{tl}");
        assert_eq!(tl["items"][0]["data"]["check"], "auth_failures");
        store.close().await;
    }
}

#[tokio::test]
async fn time_driven_checks_open_and_close_by_themselves() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let broker = server.token("broker", None).await;
        let quiet = register(&server, "FT-1", "thermo").await;
        let never = register(&server, "FT-2", "valve").await;
        let revoked = register(&server, "FT-3", "thermo").await;
        let t = now();
        post_batch(
            &server,
            &broker,
            json!({"events": [
                {"kind": "connect", "client_id": quiet, "at": rfc(t)},
                {"kind": "disconnect", "client_id": quiet, "at": rfc(t + 1)},
                {"kind": "connect", "client_id": revoked, "at": rfc(t)}
            ], "broker": heartbeat("b1", t - 10)}),
        )
        .await;
        let (status, v) = server
            .admin_post(
                &format!("/v1/devices/{revoked}/revoke"),
                &json!({"reason": "keyCompromise"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let store = store_of(&server).await;
        // Within the grace: nothing yet.
        store
            .sweep_fleet(&mut Sweeper::default(), t + 2)
            .await
            .unwrap();
        assert!(findings(&server, "?check=revoked_connected")
            .await
            .is_empty());
        // A day and a bit later (thermo silent after 2h here; valve's never_seen 30 days):
        put_thermo_checks(&server, json!({"silent_after": "2h"})).await;
        store
            .sweep_fleet(&mut Sweeper::default(), t + 3 * 3600)
            .await
            .unwrap();
        let open = findings(&server, "").await;
        assert_eq!(
            checks_of(&open),
            vec![
                ("revoked_connected".to_string(), revoked.clone()),
                ("silent".to_string(), quiet.clone()),
                ("stale_broker".to_string(), "b1".to_string()),
            ],
            "{}: {open:?}",
            backend.name()
        );
        store
            .sweep_fleet(&mut Sweeper::default(), t + 31 * 86_400)
            .await
            .unwrap();
        let open = findings(&server, "?check=never_seen").await;
        assert_eq!(
            checks_of(&open),
            vec![("never_seen".to_string(), never.clone())]
        );
        // They close by themselves: the broker reports again, the revoked device's connection
        // and the quiet device come back, the never-seen device connects.
        post_batch(
            &server,
            &broker,
            json!({"events": [
                {"kind": "disconnect", "client_id": revoked, "at": rfc(t + 5)},
                {"kind": "connect", "client_id": quiet, "at": rfc(t + 6)},
                {"kind": "connect", "client_id": never, "at": rfc(t + 6)}
            ], "broker": heartbeat("b1", t - 10)}),
        )
        .await;
        store
            .sweep_fleet(&mut Sweeper::default(), t + 7)
            .await
            .unwrap();
        let open = findings(&server, "").await;
        assert!(open.is_empty(), "{open:?}");
        let all = findings(&server, "?state=all&limit=2").await;
        assert_eq!(all.len(), 2);
        let (_, page) = server
            .admin_get("/v1/fleet/findings?state=all&limit=2")
            .await;
        let cursor = page["next_cursor"].as_str().unwrap();
        let (_, rest) = server
            .admin_get(&format!("/v1/fleet/findings?state=all&cursor={cursor}"))
            .await;
        assert_eq!(rest["items"].as_array().unwrap().len(), 2, "{rest}");
        assert!(rest["items"][0]["id"].as_i64() < page["items"][1]["id"].as_i64());
        store.close().await;
    }
}

#[tokio::test]
async fn cert_expiring_opens_near_not_after_and_closes_after_renewal_or_revocation() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let id = register(&server, "FX-1", "thermo").await;
        let (_, h) = server.admin_get(&format!("/v1/devices/{id}/health")).await;
        let not_after = time::OffsetDateTime::parse(
            h["cert_not_after"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
        .unix_timestamp();
        let store = store_of(&server).await;
        // 31 days before notAfter: not yet; 29 days before: open.
        store
            .sweep_fleet(&mut Sweeper::default(), not_after - 31 * 86_400)
            .await
            .unwrap();
        assert!(findings(&server, "?check=cert_expiring").await.is_empty());
        store
            .sweep_fleet(&mut Sweeper::default(), not_after - 29 * 86_400)
            .await
            .unwrap();
        let open = findings(&server, "?check=cert_expiring").await;
        assert_eq!(
            checks_of(&open),
            vec![("cert_expiring".to_string(), id.clone())],
            "{}",
            backend.name()
        );
        assert_eq!(open[0]["severity"], "warning");
        // A longer threshold for the model keeps it open earlier; a revoked device's closes.
        store
            .sweep_fleet(&mut Sweeper::default(), not_after - 31 * 86_400)
            .await
            .unwrap();
        assert!(findings(&server, "?check=cert_expiring").await.is_empty());
        put_thermo_checks(&server, json!({"cert_expiring": "60d"})).await;
        store
            .sweep_fleet(&mut Sweeper::default(), not_after - 31 * 86_400)
            .await
            .unwrap();
        assert_eq!(findings(&server, "?check=cert_expiring").await.len(), 1);
        server
            .admin_post(
                &format!("/v1/devices/{id}/revoke"),
                &json!({"reason": "superseded"}),
            )
            .await;
        store
            .sweep_fleet(&mut Sweeper::default(), not_after - 31 * 86_400)
            .await
            .unwrap();
        assert!(findings(&server, "?check=cert_expiring").await.is_empty());
        assert_eq!(
            findings(&server, "?check=cert_expiring&state=closed&model=thermo")
                .await
                .len(),
            2
        );
        store.close().await;
    }
}

#[tokio::test]
async fn activity_counts_connects_failures_registrations_and_expiries_per_period() {
    for backend in backends().await {
        // Certificates of 45 days: both expire next month or the one after.
        let server = start_with_args(&backend, &["--cert-validity", "45d"]).await;
        let broker = server.token("broker", None).await;
        let app = server.token("app", None).await;
        let a = register(&server, "FA-1", "thermo").await;
        let b = register(&server, "FA-2", "thermo").await;
        let t = now();
        post_batch(
            &server,
            &broker,
            json!({
                "events": [
                    {"kind": "connect", "client_id": a, "at": rfc(t), "address": "10.0.0.5:4000", "auth": "devid1"},
                    {"kind": "connect", "client_id": b, "at": rfc(t), "address": "10.0.0.6:4000", "auth": "devid1"},
                    {"kind": "auth_failure", "client_id": a, "at": rfc(t), "address": "10.9.9.9:1",
                     "refusal": "bad_signature", "reason": "signature does not verify"}
                ],
                "broker": heartbeat("b1", t - 1000)
            }),
        )
        .await;
        let (status, act) = server.get("/v1/fleet/activity", Some(&app)).await;
        assert_eq!(status, StatusCode::OK, "{}: {act}", backend.name());
        let hours = act["hours"].as_array().unwrap();
        assert_eq!(hours.len(), 24);
        let sum = |items: &[Value], field: &str| -> u64 {
            items.iter().map(|h| h[field].as_u64().unwrap()).sum()
        };
        assert_eq!(sum(hours, "connects"), 2, "{act}");
        assert_eq!(sum(hours, "auth_failures"), 1, "{act}");
        // This hour is the last one.
        assert_eq!(hours[23]["connects"], 2, "{act}");
        let regs = act["registrations"].as_array().unwrap();
        assert_eq!(regs.len(), 30);
        assert_eq!(regs[29]["count"], 2, "{act}");
        assert_eq!(regs[29]["period"], rfc(t)[..10], "{act}");
        let exp = act["expiries"].as_array().unwrap();
        assert_eq!(exp.len(), 12);
        assert_eq!(sum(exp, "count"), 2, "{act}");
        let month = &rfc(t + 45 * 86_400)[..7];
        let at = exp.iter().position(|m| m["period"] == *month).unwrap();
        assert!(at == 1 || at == 2, "{act}");
        assert_eq!(exp[at]["count"], 2, "{act}");
        // Mutations are not the app's.
        let (status, _) = server
            .send(Method::POST, "/v1/fleet/activity", Some(&app), None)
            .await;
        assert!(status.is_client_error());
    }
}

#[tokio::test]
async fn more_open_findings_than_a_sweep_takes_close_over_successive_sweeps() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let broker = server.token("broker", None).await;
        put_thermo_checks(&server, json!({"silent_after": "2h"})).await;
        let mut ids = Vec::new();
        for i in 0..7 {
            ids.push(register(&server, &format!("FB-{i}"), "thermo").await);
        }
        let t = now();
        let seen = |at: i64, ids: &[String]| {
            let events: Vec<Value> = ids
                .iter()
                .flat_map(|id| {
                    [
                        json!({"kind": "connect", "client_id": id, "at": rfc(at)}),
                        json!({"kind": "disconnect", "client_id": id, "at": rfc(at + 1)}),
                    ]
                })
                .collect();
            json!({"events": events})
        };
        post_batch(&server, &broker, seen(t, &ids)).await;
        let store = store_of(&server).await;
        // Two candidates per check and pass: seven silent devices open over four sweeps.
        let mut sweeper = Sweeper::default().with_batch(2);
        let later = t + 3 * 3600;
        let mut opened = Vec::new();
        for _ in 0..4 {
            let swept = store.sweep_fleet(&mut sweeper, later).await.unwrap();
            assert!(swept.opened <= 2, "{}: {swept:?}", backend.name());
            opened.push(swept.opened);
        }
        assert_eq!(opened, vec![2, 2, 2, 1], "{}", backend.name());
        assert_eq!(findings(&server, "?check=silent").await.len(), 7);
        // Six come back (one stays silent, though seen within the default threshold, so it
        // is re-checked and stays): at most two are looked at per sweep, the resume point
        // moving past each page and wrapping at the end. The closing side paged during the
        // opening sweeps too, so it starts wherever that left it (findings opened behind the
        // resume point wait for the wrap): within two rounds of the seven (eight sweeps) all
        // six close.
        let (back, quiet) = ids.split_at(6);
        post_batch(&server, &broker, seen(later + 10, back)).await;
        let mut closed = Vec::new();
        for _ in 0..8 {
            let swept = store.sweep_fleet(&mut sweeper, later + 20).await.unwrap();
            assert!(swept.closed <= 2, "{}: {swept:?}", backend.name());
            closed.push(swept.closed);
        }
        assert_eq!(
            closed.iter().sum::<usize>(),
            6,
            "{}: {closed:?}",
            backend.name()
        );
        // The resume point wrapped: the next sweeps find nothing more to close.
        for _ in 0..2 {
            let swept = store.sweep_fleet(&mut sweeper, later + 20).await.unwrap();
            assert_eq!(swept.closed, 0, "{swept:?}");
        }
        let open = findings(&server, "?check=silent").await;
        assert_eq!(
            checks_of(&open),
            vec![("silent".to_string(), quiet[0].clone())],
            "{}",
            backend.name()
        );
        store.close().await;
    }
}

#[tokio::test]
async fn ca_expiring_covers_the_root() {
    for backend in backends().await {
        // A root valid 100 days (the issuing CA is cut to it): the server's own sweep, which
        // runs at start, opens ca_expiring for both.
        let server = start_with_args(&backend, &["--root-validity", "100d"]).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let open = loop {
            let open = findings(&server, "?check=ca_expiring").await;
            if open.len() >= 2 || std::time::Instant::now() > deadline {
                break open;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        };
        let mut details: Vec<&str> = open.iter().map(|f| f["detail"].as_str().unwrap()).collect();
        details.sort();
        assert_eq!(details.len(), 2, "{}: {open:?}", backend.name());
        assert!(details[0].starts_with("issuing CA "), "{details:?}");
        assert!(details[1].starts_with("root CA "), "{details:?}");
        // Both end when the root does, 100 days after the start.
        for d in &details {
            let at = time::OffsetDateTime::parse(
                &d[d.len() - 20..],
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap()
            .unix_timestamp();
            assert!((at - (now() + 100 * 86_400)).abs() < 600, "{d}");
        }
        assert!(open.iter().all(|f| f["severity"] == "warning"), "{open:?}");
    }
}
