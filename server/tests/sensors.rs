//! Sensors behind gateways through the real server: registration with a key returned once and
//! kept only sealed, attachment to gateways, the broker's key endpoint, brokers' reports of
//! readings, revocation. Runs on SQLite and, with DEVID_TEST_POSTGRES_URL, on PostgreSQL.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use base64::Engine as _;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .unwrap()
}

/// Registers a sensor; returns its ClientID and its key K.
async fn sensor(server: &Server, serial: &str) -> (String, [u8; 32]) {
    let (status, v) = server
        .admin_post(
            "/v1/devices",
            &json!({"hardware_serial": serial, "kind": "sensor"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let key = v["sensor_key"].as_str().unwrap();
    (
        v["client_id"].as_str().unwrap().to_string(),
        unb64(key).try_into().unwrap(),
    )
}

async fn device(server: &Server, serial: &str) -> String {
    let (status, v) = server
        .admin_post(
            "/v1/devices",
            &json!({"hardware_serial": serial, "generate_key": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    v["client_id"].as_str().unwrap().to_string()
}

async fn put_sensors(server: &Server, gateway: &str, sensors: &[&str]) -> (StatusCode, Value) {
    let token = server.token.clone();
    server
        .send(
            Method::PUT,
            &format!("/v1/devices/{gateway}/sensors"),
            Some(&token),
            Some(&json!({ "sensors": sensors })),
        )
        .await
}

fn ids(v: &Value) -> Vec<String> {
    v["sensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["client_id"].as_str().unwrap().to_string())
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Feed entries after `since`: (action, client_id).
async fn feed_after(server: &Server, since: i64) -> Vec<(String, String)> {
    let (status, page) = server
        .admin_get(&format!("/v1/revocations?since={since}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["client_id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn feed_head(server: &Server) -> i64 {
    server.admin_get("/v1/revocations").await.1["head"]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn a_sensor_registers_without_a_certificate_and_its_key_is_shown_once() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let body = json!({"hardware_serial": "TS-1", "kind": "sensor", "model": "tempsense",
                          "metadata": {"line": "3"}});
        let (status, first) = server.admin_post("/v1/devices", &body).await;
        assert_eq!(status, StatusCode::CREATED, "{first}");
        assert_eq!(first["kind"], "sensor");
        assert_eq!(first["created"], true);
        let key = first["sensor_key"].as_str().unwrap();
        assert_eq!(key.len(), 43, "{key}");
        assert_eq!(unb64(key).len(), 32);
        for absent in ["certificate", "chain", "serial", "private_key", "not_after"] {
            assert!(first.get(absent).is_none(), "{absent}: {first}");
        }
        let id = first["client_id"].as_str().unwrap();
        assert!(id.starts_with(&devid_core::clientid::default_prefix("tempsense")));

        // A replay: the stored sensor, without its key.
        let (status, again) = server.admin_post("/v1/devices", &body).await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert_eq!(again["client_id"], id);
        assert_eq!(again["created"], false);
        assert!(again.get("sensor_key").is_none(), "{again}");
        // The same serial as something else is a conflict naming what differs.
        for (other, differs) in [
            (
                json!({"hardware_serial": "TS-1", "kind": "sensor", "model": "other"}),
                "model",
            ),
            (
                json!({"hardware_serial": "TS-1", "generate_key": true}),
                "generate_key",
            ),
        ] {
            let (status, v) = server.admin_post("/v1/devices", &other).await;
            assert_eq!(status, StatusCode::CONFLICT, "{v}");
            assert!(v["detail"].as_str().unwrap().contains(id), "{differs}: {v}");
        }
        // A sensor takes no CSR and no generated key.
        let (status, v) = server
            .admin_post(
                "/v1/devices",
                &json!({"hardware_serial": "TS-2", "kind": "sensor", "generate_key": true}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

        // A batch may mix devices and sensors, all or nothing.
        let (status, batch) = server
            .admin_post(
                "/v1/devices/batch",
                &json!({"items": [
                    {"hardware_serial": "TS-3", "kind": "sensor"},
                    {"hardware_serial": "DV-3", "generate_key": true},
                    {"hardware_serial": "TS-1", "kind": "sensor", "model": "tempsense"},
                ]}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{batch}");
        assert_eq!(batch["created"], 2);
        let items = batch["items"].as_array().unwrap();
        assert_eq!(items[0]["kind"], "sensor");
        assert_eq!(items[0]["sensor_key"].as_str().unwrap().len(), 43);
        assert_eq!(items[1]["kind"], "device");
        assert!(items[1]["certificate"].is_string() && items[1].get("sensor_key").is_none());
        assert_eq!(items[2]["client_id"], id);
        assert!(
            items[2].get("sensor_key").is_none(),
            "a replay item has no key"
        );
        let (status, v) = server
            .admin_post(
                "/v1/devices/batch",
                &json!({"items": [
                    {"hardware_serial": "TS-4", "kind": "sensor"},
                    {"hardware_serial": "TS-1", "kind": "sensor", "model": "x"},
                ]}),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{v}");
        assert_eq!(v["index"], 1);
        let (_, none) = server.admin_get("/v1/devices?hardware_serial=TS-4").await;
        assert_eq!(none["items"], json!([]), "a refused batch stores nothing");

        // Lists and the device answer say what each is.
        let (_, shown) = server.admin_get(&format!("/v1/devices/{id}")).await;
        assert_eq!(shown["kind"], "sensor");
        assert_eq!(shown["certificates"], json!([]));
        let (_, sensors) = server.admin_get("/v1/devices?kind=sensor").await;
        let kinds: Vec<&str> = sensors["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, vec!["sensor", "sensor"], "{sensors}");
        let (_, devices) = server.admin_get("/v1/devices?kind=device").await;
        assert_eq!(devices["items"].as_array().unwrap().len(), 1, "{devices}");
        let (status, _) = server.admin_get("/v1/devices?kind=gateway").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        // Each registration is audited.
        let (_, audit) = server.admin_get("/v1/audit?limit=1000").await;
        let registered = audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["action"] == "device.register" && a["target"] == id)
            .count();
        assert_eq!(registered, 1, "{}", backend.name());
    }
}

/// Every byte the database holds, as the backend stores it.
fn database_bytes(server: &Server) -> Vec<u8> {
    match &server.backend {
        Backend::Sqlite => {
            let mut all = Vec::new();
            for f in ["devid.db", "devid.db-wal"] {
                if let Ok(b) = std::fs::read(server.data_dir.join(f)) {
                    all.extend(b);
                }
            }
            all
        }
        Backend::Postgres(url) => {
            let out = std::process::Command::new("pg_dump")
                .args(["--data-only", "--inserts", url])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        }
    }
}

#[tokio::test]
async fn the_database_holds_no_sensor_key_in_clear() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let keys: Vec<[u8; 32]> = {
            let mut v = Vec::new();
            for i in 0..5 {
                v.push(sensor(&server, &format!("CK-{i}")).await.1);
            }
            v
        };
        let db = database_bytes(&server);
        assert!(db.len() > 1_000, "{}: the dump is real", backend.name());
        let text = String::from_utf8_lossy(&db).to_lowercase();
        for k in &keys {
            assert!(!db.windows(32).any(|w| w == k), "K in clear");
            assert!(!text.contains(&hex::encode(k)), "K in hex");
            assert!(!text.contains(&b64(k).to_lowercase()), "K in base64url");
        }
        // The check is awake: a sealed key is there, and so is a value known to be stored.
        assert!(text.contains("ck-0"), "{}", backend.name());
    }
}

#[tokio::test]
async fn gateways_take_sensors_and_a_move_is_one_call() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let gw1 = device(&server, "GW-1").await;
        let gw2 = device(&server, "GW-2").await;
        let (s1, _) = sensor(&server, "S-1").await;
        let (s2, _) = sensor(&server, "S-2").await;
        let (s3, _) = sensor(&server, "S-3").await;

        let head = feed_head(&server).await;
        let (status, v) = put_sensors(&server, &gw1, &[&s1, &s2]).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["gateway"], gw1.as_str());
        assert_eq!(sorted(ids(&v)), sorted(vec![s1.clone(), s2.clone()]));
        let entries = feed_after(&server, head).await;
        for who in [&gw1, &s1, &s2] {
            assert!(
                entries.contains(&("updated".into(), who.to_string())),
                "{who}: {entries:?}"
            );
        }
        let (_, listed) = server
            .admin_get(&format!("/v1/devices/{gw1}/sensors"))
            .await;
        assert_eq!(sorted(ids(&listed)), sorted(vec![s1.clone(), s2.clone()]));
        let (_, shown) = server.admin_get(&format!("/v1/devices/{s1}")).await;
        assert_eq!(shown["gateway"], gw1.as_str());
        let (_, list) = server.admin_get("/v1/devices?kind=sensor").await;
        let s1_row = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["client_id"] == s1.as_str())
            .unwrap()
            .clone();
        assert_eq!(s1_row["gateway"], gw1.as_str());

        // S2 moves to GW2 in one call; GW1 keeps S1.
        let head = feed_head(&server).await;
        let (status, v) = put_sensors(&server, &gw2, &[&s2, &s3]).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let (_, one) = server
            .admin_get(&format!("/v1/devices/{gw1}/sensors"))
            .await;
        assert_eq!(ids(&one), vec![s1.clone()]);
        let entries = feed_after(&server, head).await;
        for who in [&gw1, &gw2, &s2, &s3] {
            assert!(
                entries.contains(&("updated".into(), who.to_string())),
                "{who}: {entries:?}"
            );
        }
        assert!(!entries.iter().any(|(_, c)| c == &s1), "{entries:?}");

        // The same set again changes nothing and tells no broker.
        let head = feed_head(&server).await;
        let (status, _) = put_sensors(&server, &gw2, &[&s3, &s2]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(feed_head(&server).await, head);

        // Bad input: a clear 4xx, and nothing changed.
        let (_, before) = server
            .admin_get(&format!("/v1/devices/{gw2}/sensors"))
            .await;
        let unknown = devid_core::clientid::generate("", &random_bytes()).unwrap();
        let cases: Vec<(String, Vec<&str>, StatusCode)> = vec![
            (
                gw2.clone(),
                vec![&s1, &gw1],
                StatusCode::UNPROCESSABLE_ENTITY,
            ), // a device
            (
                gw2.clone(),
                vec![&s1, &unknown],
                StatusCode::UNPROCESSABLE_ENTITY,
            ), // nothing
            (
                gw2.clone(),
                vec![&s1, &s1],
                StatusCode::UNPROCESSABLE_ENTITY,
            ), // twice
            (
                gw2.clone(),
                vec!["not a client id"],
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (s3.clone(), vec![&s1], StatusCode::UNPROCESSABLE_ENTITY), // a sensor as gateway
            (unknown.clone(), vec![&s1], StatusCode::NOT_FOUND),
        ];
        for (gw, set, want) in cases {
            let (status, v) = put_sensors(&server, &gw, &set).await;
            assert_eq!(status, want, "{gw} {set:?}: {v}");
            assert!(v["detail"].is_string(), "{v}");
        }
        let (_, after) = server
            .admin_get(&format!("/v1/devices/{gw2}/sensors"))
            .await;
        assert_eq!(after, before);
        let (_, still) = server
            .admin_get(&format!("/v1/devices/{gw1}/sensors"))
            .await;
        assert_eq!(ids(&still), vec![s1.clone()]);

        // A revoked gateway takes no sensors; a revoked sensor is attached nowhere new.
        let (status, _) = server
            .admin_post(
                &format!("/v1/devices/{gw1}/revoke"),
                &json!({"reason": "superseded"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, v) = put_sensors(&server, &gw1, &[&s1]).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        let (status, _) = server
            .admin_post(
                &format!("/v1/devices/{s3}/revoke"),
                &json!({"reason": "keyCompromise"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, v) = put_sensors(&server, &gw2, &[&s2, &s3]).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        // Detaching every sensor is an empty set.
        let (status, v) = put_sensors(&server, &gw2, &[]).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["sensors"], json!([]));

        // Audited: one row per successful change, and the refused ones.
        let (_, audit) = server.admin_get("/v1/audit?limit=1000").await;
        let rows: Vec<&Value> = audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["action"] == "gateway.sensors")
            .collect();
        let ok = rows.iter().filter(|a| a["outcome"] == "ok").count();
        assert_eq!(ok, 4, "{}: {rows:?}", backend.name());
        assert!(rows.len() >= 11, "refusals are audited too: {rows:?}");
        assert!(rows.iter().any(|a| a["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&s2) && d.starts_with("attached"))));
        // Readers may list, only admins change.
        let auditor = server.token("auditor", None).await;
        let (status, _) = server
            .get(&format!("/v1/devices/{gw2}/sensors"), Some(&auditor))
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = server
            .send(
                Method::PUT,
                &format!("/v1/devices/{gw2}/sensors"),
                Some(&auditor),
                Some(&json!({"sensors": []})),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
}

#[tokio::test]
async fn brokers_get_derived_keys_and_reports_raise_the_seq_floor() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let gw = device(&server, "KG-1").await;
        let (s1, k1) = sensor(&server, "KS-1").await;
        let (s2, k2) = sensor(&server, "KS-2").await;
        let (other, _) = sensor(&server, "KS-3").await;
        // A sensor of a model with its own policy.
        let token = server.token.clone();
        let (status, _) = server
            .send(
                Method::PUT,
                &format!("/v1/devices/{s2}/policy"),
                Some(&token),
                Some(&json!({"topics": {"publish": ["plant/%c/+"], "subscribe": []}})),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = put_sensors(&server, &gw, &[&s1, &s2]).await;
        assert_eq!(status, StatusCode::OK);

        let broker = server.token("broker", None).await;
        let keys_path = format!("/v1/devices/{gw}/sensors/keys");
        let (status, keys) = server.get(&keys_path, Some(&broker)).await;
        assert_eq!(status, StatusCode::OK, "{keys}");
        assert_eq!(keys["gateway"], gw.as_str());
        let entries = keys["sensors"].as_array().unwrap();
        assert_eq!(entries.len(), 2, "only the gateway's own sensors: {keys}");
        assert!(!keys.to_string().contains(&other));
        for (id, k, publish) in [(&s1, k1, "devices/%c/#"), (&s2, k2, "plant/%c/+")] {
            let e = entries
                .iter()
                .find(|e| e["client_id"] == id.as_str())
                .unwrap();
            let derived = devid_sensor::derive(&k, id.as_bytes()).unwrap();
            assert_eq!(e["k_mac"], b64(&derived.mac), "{id}");
            assert_eq!(e["k_enc"], b64(&derived.enc), "{id}");
            assert_ne!(e["k_mac"], b64(&k), "K itself never leaves");
            assert_eq!(e["status"], "active");
            assert_eq!(e["publish"], json!([publish]));
            assert_eq!(e["seq_floor"], 0);
        }
        assert!(!keys.to_string().contains(&b64(&k1)));
        // Brokers only: not even an admin gets derived keys.
        for role in ["admin", "auditor", "factory"] {
            let t = server.token(role, None).await;
            let (status, _) = server.get(&keys_path, Some(&t)).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{role}");
        }

        // Reports: the floor is the highest seq reported, never lowered; counts add up; last
        // seen is the newest accepted reading.
        let report = |seq: u64, accepted: u64, refused: Value, at: Option<&str>| {
            let mut r = json!({"client_id": s1, "gateway": gw, "highest_seq": seq,
                               "accepted": accepted, "refused": refused});
            if let Some(at) = at {
                r["last_accepted_at"] = json!(at);
            }
            r
        };
        let batches = [
            json!({"events": [], "sensors": [
                report(1000, 5, json!({"bad_mac": 2}), Some("2026-12-07T10:00:00Z")),
                {"client_id": s2, "gateway": gw, "highest_seq": u64::MAX, "accepted": 1,
                 "last_accepted_at": "2026-12-07T09:00:00Z"},
                // Not a sensor, or nobody: ignored.
                {"client_id": gw, "gateway": gw, "highest_seq": 7, "accepted": 1},
            ]}),
            json!({"sensors": [
                report(400, 1, json!({"bad_mac": 1, "replayed": 3}), Some("2026-12-07T08:00:00Z")),
                report(900, 0, json!({}), None),
            ]}),
        ];
        for b in &batches {
            let (status, v) = server.post("/v1/events", Some(&broker), b).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{v}");
        }
        let (_, keys) = server.get(&keys_path, Some(&broker)).await;
        let floor = |id: &str| {
            keys["sensors"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["client_id"] == id)
                .unwrap()["seq_floor"]
                .as_u64()
                .unwrap()
        };
        assert_eq!(floor(&s1), 1000);
        assert_eq!(floor(&s2), u64::MAX);
        let (_, listed) = server.admin_get(&format!("/v1/devices/{gw}/sensors")).await;
        let row = listed["sensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["client_id"] == s1.as_str())
            .unwrap()
            .clone();
        assert_eq!(row["accepted"], 6, "{row}");
        assert_eq!(row["refused"], json!({"bad_mac": 3, "replayed": 3}));
        assert_eq!(row["last_seen"], "2026-12-07T10:00:00Z");
        assert_eq!(row["seq_floor"], 1000);
        let (_, shown) = server.admin_get(&format!("/v1/devices/{s1}")).await;
        assert_eq!(shown["last_seen"], "2026-12-07T10:00:00Z");
        let (_, gw_shown) = server.admin_get(&format!("/v1/devices/{gw}")).await;
        assert_eq!(
            gw_shown["last_seen"],
            Value::Null,
            "a device's is its connections'"
        );

        // A bad report refuses the batch and records none of it.
        let bad = json!({"sensors": [
            report(5000, 1, json!({}), None),
            report(6000, 1, json!({"Not A Reason": 1}), None),
        ]});
        let (status, v) = server.post("/v1/events", Some(&broker), &bad).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert_eq!(v["index"], 1, "{v}");
        let (_, keys) = server.get(&keys_path, Some(&broker)).await;
        assert_eq!(
            keys["sensors"][0]["seq_floor"]
                .as_u64()
                .unwrap()
                .max(keys["sensors"][1]["seq_floor"].as_u64().unwrap()),
            u64::MAX
        );
        let s1_floor = keys["sensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["client_id"] == s1.as_str())
            .unwrap()["seq_floor"]
            .clone();
        assert_eq!(s1_floor, 1000);

        // Revoking a sensor: the usual feed entry, and brokers see it revoked.
        let head = feed_head(&server).await;
        let (status, v) = server
            .admin_post(
                &format!("/v1/devices/{s1}/revoke"),
                &json!({"reason": "keyCompromise"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["kind"], "sensor");
        assert_eq!(
            feed_after(&server, head).await,
            vec![("revoked".to_string(), s1.clone())]
        );
        let (_, keys) = server.get(&keys_path, Some(&broker)).await;
        let e = keys["sensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["client_id"] == s1.as_str())
            .unwrap()
            .clone();
        assert_eq!(e["status"], "revoked");
        // Suspending and resuming likewise.
        let (status, _) = server
            .admin_post(&format!("/v1/devices/{s2}/suspend"), &json!({}))
            .await;
        assert_eq!(status, StatusCode::OK);
        let (_, keys) = server.get(&keys_path, Some(&broker)).await;
        assert!(keys.to_string().contains("suspended"), "{keys}");
    }
}

#[tokio::test]
async fn sensor_keys_work_under_the_ca_passphrase_and_survive_a_restart() {
    for backend in backends().await {
        let opts = || Options {
            env: vec![("DEVID_CA_PASSPHRASE".into(), "correct horse".into())],
            ..Options::default()
        };
        let mut server = Server::start_with(&backend, opts()).await;
        let kek = std::fs::read_to_string(server.data_dir.join("ca/sensor.kek")).unwrap();
        assert!(
            kek.starts_with("-----BEGIN DEVID ENCRYPTED PRIVATE KEY-----"),
            "{kek}"
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(server.data_dir.join("ca/sensor.kek"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let gw = device(&server, "PG-1").await;
        let (s, k) = sensor(&server, "PS-1").await;
        assert_eq!(put_sensors(&server, &gw, &[&s]).await.0, StatusCode::OK);
        let broker = server.token("broker", None).await;
        let path = format!("/v1/devices/{gw}/sensors/keys");
        let want = b64(&devid_sensor::derive(&k, s.as_bytes()).unwrap().mac);

        server.stop();
        let data_dir = server.data_dir.clone();
        // Without the passphrase the service does not start.
        let out = std::process::Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .args(match &backend {
                Backend::Postgres(url) => vec!["--database-url".to_string(), url.clone()],
                Backend::Sqlite => vec![],
            })
            .env_remove("DEVID_CA_PASSPHRASE")
            .env_remove("DEVID_DATABASE_URL")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let restarted = Server::start_with(
            &backend,
            Options {
                data_dir: Some(data_dir),
                ..opts()
            },
        )
        .await;
        let (status, keys) = restarted.get(&path, Some(&broker)).await;
        assert_eq!(status, StatusCode::OK, "{keys}");
        assert_eq!(keys["sensors"][0]["k_mac"], want);
        drop(server);
    }
}

#[tokio::test]
async fn a_process_with_another_kek_seals_and_opens_no_sensor_key() {
    let Some(backend) = postgres().await else {
        assert!(std::env::var("DEVID_TEST_POSTGRES_URL").is_err());
        return;
    };
    let one = Server::start(&backend).await;
    let gw = device(&one, "XK-G").await;
    let (s, k) = sensor(&one, "XK-1").await;
    assert_eq!(put_sensors(&one, &gw, &[&s]).await.0, StatusCode::OK);
    // A process sharing the CA files shares the KEK: it opens what the first sealed.
    let same = Server::start_with(
        &backend,
        Options {
            data_dir: Some(one.data_dir.clone()),
            ..Options::default()
        },
    )
    .await;
    let broker = one.token("broker", None).await;
    let path = format!("/v1/devices/{gw}/sensors/keys");
    let (status, keys) = same.get(&path, Some(&broker)).await;
    assert_eq!(status, StatusCode::OK, "{keys}");
    let want = b64(&devid_sensor::derive(&k, s.as_bytes()).unwrap().mac);
    assert_eq!(keys["sensors"][0]["k_mac"], want);
    // A process with a data directory of its own has another KEK: it serves devices, says
    // why at start, and neither seals nor opens sensor keys.
    let other = Server::start(&backend).await;
    assert!(
        other.printed().contains("sensor key-encryption key"),
        "{}",
        other.printed()
    );
    let (status, _) = other.get(&path, Some(&broker)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let (status, v) = other
        .post(
            "/v1/devices",
            Some(&one.token),
            &json!({"hardware_serial": "XK-2", "kind": "sensor"}),
        )
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
    let (status, v) = other
        .post(
            "/v1/devices",
            Some(&one.token),
            &json!({"hardware_serial": "XK-3", "generate_key": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "devices are unaffected: {v}");
    let (_, none) = one.admin_get("/v1/devices?hardware_serial=XK-2").await;
    assert_eq!(none["items"], json!([]));
}

/// `POST .../sensors/attach|detach` from many callers at once (each its own request, as two
/// operators' CLIs would send them): every change is kept, none undoes another.
#[tokio::test]
async fn concurrent_attaches_and_detaches_lose_nothing() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let gw = device(&server, "CA-GW").await;
        let mut all = Vec::new();
        for i in 0..12 {
            all.push(sensor(&server, &format!("CA-S{i}")).await.0);
        }
        let send_all = |verb: &'static str, ids: Vec<String>| {
            let (url, token, gw) = (server.url.clone(), server.token.clone(), gw.clone());
            async move {
                let client = reqwest::Client::new();
                let tasks: Vec<_> = ids
                    .into_iter()
                    .map(|id| {
                        let req = client
                            .post(format!("{url}/v1/devices/{gw}/sensors/{verb}"))
                            .bearer_auth(&token)
                            .json(&json!({ "sensors": [id] }));
                        tokio::spawn(async move {
                            let r = req.send().await.unwrap();
                            let status = r.status();
                            (status, r.text().await.unwrap())
                        })
                    })
                    .collect();
                for t in tasks {
                    let (status, body) = t.await.unwrap();
                    assert_eq!(status, StatusCode::OK, "{verb}: {body}");
                }
            }
        };
        let head = feed_head(&server).await;
        send_all("attach", all.clone()).await;
        let (_, listed) = server.admin_get(&format!("/v1/devices/{gw}/sensors")).await;
        assert_eq!(
            sorted(ids(&listed)),
            sorted(all.clone()),
            "{}",
            backend.name()
        );
        let entries = feed_after(&server, head).await;
        for s in &all {
            assert!(entries.contains(&("updated".into(), s.clone())), "{s}");
        }
        // Attaching one it has already changes nothing.
        let token = server.token.clone();
        let (status, v) = server
            .send(
                Method::POST,
                &format!("/v1/devices/{gw}/sensors/attach"),
                Some(&token),
                Some(&json!({ "sensors": [all[0]] })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(ids(&v).len(), all.len());

        let (gone, kept) = all.split_at(7);
        send_all("detach", gone.to_vec()).await;
        let (_, listed) = server.admin_get(&format!("/v1/devices/{gw}/sensors")).await;
        assert_eq!(
            sorted(ids(&listed)),
            sorted(kept.to_vec()),
            "{}",
            backend.name()
        );
        let (_, shown) = server.admin_get(&format!("/v1/devices/{}", gone[0])).await;
        assert!(shown["gateway"].is_null(), "{shown}");

        // Bad input changes nothing: a device where a sensor belongs, an unknown field.
        let (status, v) = server
            .send(
                Method::POST,
                &format!("/v1/devices/{gw}/sensors/attach"),
                Some(&token),
                Some(&json!({ "sensors": [gw] })),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        let (status, _) = server
            .send(
                Method::POST,
                &format!("/v1/devices/{gw}/sensors/detach"),
                Some(&token),
                Some(&json!({ "sensors": [], "all": true })),
            )
            .await;
        assert!(status.is_client_error(), "{status}");
        let (_, listed) = server.admin_get(&format!("/v1/devices/{gw}/sensors")).await;
        assert_eq!(sorted(ids(&listed)), sorted(kept.to_vec()));
        // Admin only.
        let reader = server.token("auditor", None).await;
        let (status, _) = server
            .send(
                Method::POST,
                &format!("/v1/devices/{gw}/sensors/detach"),
                Some(&reader),
                Some(&json!({ "sensors": [kept[0]] })),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
}

/// `POST /v1/devices/{sensor}/rekey`: a new K, shown once and sealed in place of the old one;
/// brokers get keys derived from it and an `updated` entry tells them; a device or a revoked
/// sensor has no key to re-key.
#[tokio::test]
async fn a_rekey_replaces_the_sealed_key_and_tells_brokers() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let gw = device(&server, "RK-GW").await;
        let (s1, k1) = sensor(&server, "RK-S1").await;
        let (status, _) = put_sensors(&server, &gw, &[&s1]).await;
        assert_eq!(status, StatusCode::OK);
        let before = database_bytes(&server);
        let head = feed_head(&server).await;
        let (status, v) = server
            .admin_post(&format!("/v1/devices/{s1}/rekey"), &json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["client_id"], s1.as_str());
        let k2: [u8; 32] = unb64(v["sensor_key"].as_str().unwrap()).try_into().unwrap();
        assert_ne!(k1, k2);
        assert!(
            feed_after(&server, head)
                .await
                .contains(&("updated".into(), s1.clone())),
            "brokers are told"
        );
        let broker = server.token("broker", None).await;
        let (status, keys) = server
            .get(&format!("/v1/devices/{gw}/sensors/keys"), Some(&broker))
            .await;
        assert_eq!(status, StatusCode::OK, "{keys}");
        let derived = devid_sensor::derive(&k2, s1.as_bytes()).unwrap();
        assert_eq!(keys["sensors"][0]["k_mac"], b64(&derived.mac));
        assert_eq!(keys["sensors"][0]["k_enc"], b64(&derived.enc));
        if matches!(backend, Backend::Sqlite) {
            let after = database_bytes(&server);
            assert!(
                !after.windows(32).any(|w| w == k2),
                "the new key is stored only sealed"
            );
            assert_ne!(before, after);
        }
        let (_, audit) = server.admin_get("/v1/audit?limit=1000").await;
        assert!(
            audit["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["action"] == "sensor.rekey" && e["target"] == s1.as_str()),
            "{audit}"
        );

        let (status, v) = server
            .admin_post(&format!("/v1/devices/{gw}/rekey"), &json!({}))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "a device: {v}");
        server
            .admin_post(
                &format!("/v1/devices/{s1}/revoke"),
                &json!({"reason": "keyCompromise"}),
            )
            .await;
        let (status, v) = server
            .admin_post(&format!("/v1/devices/{s1}/rekey"), &json!({}))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "revoked: {v}");
        let reader = server.token("auditor", None).await;
        let (status, _) = server
            .send(
                Method::POST,
                &format!("/v1/devices/{s1}/rekey"),
                Some(&reader),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
}
