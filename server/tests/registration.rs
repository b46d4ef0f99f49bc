//! Registration rules beyond the happy path: one key pair belongs to one device, a key revoked
//! for keyCompromise is never certified again, a replay must be the same request, conflicts
//! name the device that holds what was asked for. Every test runs on SQLite and, with
//! DEVID_TEST_POSTGRES_URL, on PostgreSQL.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A P-256 key pair (rcgen) and a CSR for it; several CSRs can be made from one key.
struct Key(rcgen::KeyPair);

impl Key {
    fn new() -> Key {
        Key(rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap())
    }

    /// A fresh CSR for this key (ECDSA signatures are randomized: every call differs).
    fn csr(&self) -> String {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "device");
        params.serialize_request(&self.0).unwrap().pem().unwrap()
    }
}

fn body(serial: &str, csr: &str) -> Value {
    json!({"hardware_serial": serial, "model": "thermo", "csr": csr, "metadata": {"line": 1}})
}

fn detail(problem: &Value) -> &str {
    problem["detail"].as_str().unwrap_or_default()
}

async fn register(server: &Server, body: &Value) -> (StatusCode, Value) {
    server.admin_post("/v1/devices", body).await
}

/// The audit rows of failed `action` calls on `target`.
async fn failed_audits(server: &Server, action: &str, target: &str) -> Vec<String> {
    let (status, rows) = server.admin_get("/v1/audit?limit=1000").await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    rows["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == action && r["target"] == target)
        .filter_map(|r| r["outcome"].as_str())
        .filter(|o| o.starts_with("error"))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn one_key_pair_registers_one_device() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let key = Key::new();
        let csr_a = key.csr();
        let (status, a) = register(&server, &body("KEY-A", &csr_a)).await;
        assert_eq!(status, StatusCode::CREATED, "{a}");
        let a_id = a["client_id"].as_str().unwrap().to_string();

        // The same CSR, and another CSR for the same key, for another serial: 409 naming A.
        for csr in [csr_a.clone(), key.csr()] {
            let (status, problem) = register(&server, &body("KEY-B", &csr)).await;
            assert_eq!(
                status,
                StatusCode::CONFLICT,
                "{}: {problem}",
                backend.name()
            );
            assert!(detail(&problem).contains(&a_id), "{problem}");
        }
        let (_, list) = server.admin_get("/v1/devices?hardware_serial=KEY-B").await;
        assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");
        assert_eq!(
            failed_audits(&server, "device.register", "KEY-B")
                .await
                .len(),
            2
        );

        // The same serial and CSR is still a replay.
        let (status, again) = register(&server, &body("KEY-A", &csr_a)).await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert_eq!(again["client_id"], a["client_id"]);

        // A batch with two items sharing a key names the second; one colliding with a stored
        // device names its index and the holder. Nothing is stored either way.
        let shared = Key::new();
        let (status, problem) = server
            .admin_post(
                "/v1/devices/batch",
                &json!({"items": [body("KEY-C", &Key::new().csr()), body("KEY-D", &shared.csr()),
                                  body("KEY-E", &shared.csr())]}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert_eq!(problem["index"], 2, "{problem}");
        let (status, problem) = server
            .admin_post(
                "/v1/devices/batch",
                &json!({"items": [body("KEY-C", &Key::new().csr()), body("KEY-D", &key.csr())]}),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{problem}");
        assert_eq!(problem["index"], 1, "{problem}");
        assert!(detail(&problem).contains(&a_id), "{problem}");
        let (_, list) = server.admin_get("/v1/devices?limit=1000").await;
        assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");

        // A revoked device keeps its key: another serial still cannot have it, and once the
        // key was revoked as compromised the answer is 422 (it is never certified again).
        let (status, revoked) = server
            .admin_post(
                &format!("/v1/devices/{a_id}/revoke"),
                &json!({"reason": "keyCompromise"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{revoked}");
        let (status, problem) = register(&server, &body("KEY-F", &key.csr())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert!(detail(&problem).contains("keyCompromise"), "{problem}");
        assert_eq!(
            failed_audits(&server, "device.register", "KEY-F")
                .await
                .len(),
            1
        );
        let (status, problem) = server
            .admin_post(
                "/v1/devices/batch",
                &json!({"items": [body("KEY-G", &Key::new().csr()), body("KEY-H", &key.csr())]}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert_eq!(problem["index"], 1, "{problem}");

        // A single certificate revoked for keyCompromise marks its key too.
        let key2 = Key::new();
        let (status, b) = register(&server, &body("KEY-I", &key2.csr())).await;
        assert_eq!(status, StatusCode::CREATED, "{b}");
        let serial = b["serial"].as_str().unwrap();
        let (status, cert) = server
            .admin_post(
                &format!("/v1/certificates/{serial}/revoke"),
                &json!({"reason": "keyCompromise"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{cert}");
        let (status, problem) = register(&server, &body("KEY-J", &key2.csr())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");

        // Another reason does not mark the key compromised, but the key stays its device's.
        let key3 = Key::new();
        let (status, c) = register(&server, &body("KEY-K", &key3.csr())).await;
        assert_eq!(status, StatusCode::CREATED, "{c}");
        let c_id = c["client_id"].as_str().unwrap();
        let (status, _) = server
            .admin_post(
                &format!("/v1/devices/{c_id}/revoke"),
                &json!({"reason": "superseded"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, problem) = register(&server, &body("KEY-L", &key3.csr())).await;
        assert_eq!(status, StatusCode::CONFLICT, "{problem}");
        assert!(detail(&problem).contains(c_id), "{problem}");
    }
}

/// The key rule holds across processes: two servers on one PostgreSQL database race to register
/// the same key under different serials; exactly one wins.
#[tokio::test]
async fn one_key_pair_one_device_across_processes() {
    let Some(backend) = postgres().await else {
        // The SQLite flavour of this rule is covered above; across processes needs PostgreSQL.
        assert!(std::env::var("DEVID_TEST_POSTGRES_URL").is_err());
        return;
    };
    let one = Server::start(&backend).await;
    let two = Server::start(&backend).await;
    for round in 0..10 {
        let key = Key::new();
        let (b1, b2) = (
            body(&format!("X-{round}-1"), &key.csr()),
            body(&format!("X-{round}-2"), &key.csr()),
        );
        let ((s1, v1), (s2, v2)) = tokio::join!(
            one.post("/v1/devices", Some(&one.token), &b1),
            two.post("/v1/devices", Some(&one.token), &b2)
        );
        let mut statuses = [s1, s2];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::CREATED, StatusCode::CONFLICT],
            "round {round}: {v1} {v2}"
        );
    }
}

#[tokio::test]
async fn a_replay_must_be_the_same_request() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let key = Key::new();
        let csr = key.csr();
        let (status, first) = register(&server, &body("RP-1", &csr)).await;
        assert_eq!(status, StatusCode::CREATED, "{first}");
        assert_eq!(first["status"], "active");
        let id = first["client_id"].as_str().unwrap().to_string();

        let mut other_model = body("RP-1", &csr);
        other_model["model"] = json!("thermo-v2");
        let mut other_id = body("RP-1", &csr);
        other_id["client_id"] = json!(devid_core::clientid::generate("ZZ", &[7u8; 10]).unwrap());
        let mut other_metadata = body("RP-1", &csr);
        other_metadata["metadata"] = json!({"line": 2});
        let keyless = json!({"hardware_serial": "RP-1", "model": "thermo", "generate_key": true});
        for (field, req) in [
            ("model", &other_model),
            ("client_id", &other_id),
            ("metadata", &other_metadata),
            ("generate_key", &keyless),
        ] {
            let (status, problem) = register(&server, req).await;
            assert_eq!(status, StatusCode::CONFLICT, "{field}: {problem}");
            assert!(detail(&problem).contains(field), "{field}: {problem}");
            assert!(detail(&problem).contains(&id), "{field}: {problem}");
        }
        assert_eq!(
            failed_audits(&server, "device.register", "RP-1")
                .await
                .len(),
            4
        );

        // Naming the stored ClientID, or leaving metadata out, is still the same request.
        let mut same_id = body("RP-1", &csr);
        same_id["client_id"] = json!(id);
        let mut no_metadata = body("RP-1", &csr);
        no_metadata.as_object_mut().unwrap().remove("metadata");
        for req in [&same_id, &no_metadata] {
            let (status, again) = register(&server, req).await;
            assert_eq!(status, StatusCode::OK, "{again}");
            assert_eq!(again["client_id"], json!(id));
        }

        // A factory token for thermo-v2 gets nothing of model thermo by replaying it.
        let v2 = server.token("factory", Some(vec!["thermo-v2"])).await;
        let (status, problem) = server.post("/v1/devices", Some(&v2), &other_model).await;
        assert_eq!(status, StatusCode::CONFLICT, "{problem}");
        assert!(problem.get("certificate").is_none());
        let (status, problem) = server
            .post("/v1/devices", Some(&v2), &body("RP-1", &csr))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
        // A batch replay is held to the same rule, with the item's index.
        let (status, problem) = server
            .admin_post(
                "/v1/devices/batch",
                &json!({"items": [body("RP-2", &Key::new().csr()), other_model]}),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{problem}");
        assert_eq!(problem["index"], 1, "{problem}");

        // A line that gets back a revoked device can tell.
        let (status, _) = server
            .admin_post(
                &format!("/v1/devices/{id}/revoke"),
                &json!({"reason": "superseded"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, again) = register(&server, &body("RP-1", &csr)).await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert_eq!(again["status"], "revoked", "{again}");
        let (status, batch) = server
            .admin_post("/v1/devices/batch", &json!({"items": [body("RP-1", &csr)]}))
            .await;
        assert_eq!(status, StatusCode::OK, "{batch}");
        assert_eq!(batch["items"][0]["status"], "revoked", "{batch}");
    }
}

#[tokio::test]
async fn a_taken_serial_names_the_device_that_has_it() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let (status, first) = register(&server, &body("TS-1", &Key::new().csr())).await;
        assert_eq!(status, StatusCode::CREATED, "{first}");
        let id = first["client_id"].as_str().unwrap();
        let (status, problem) = register(&server, &body("TS-1", &Key::new().csr())).await;
        assert_eq!(status, StatusCode::CONFLICT, "{problem}");
        assert!(detail(&problem).contains(id), "{problem}");
        // The ClientID the losing request was given names no device: it is not mentioned.
        let (_, list) = server.admin_get("/v1/devices?limit=1000").await;
        assert_eq!(list["items"].as_array().unwrap().len(), 1);
        let (status, problem) = server
            .admin_post(
                "/v1/devices/batch",
                &json!({"items": [body("TS-1", &Key::new().csr())]}),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{problem}");
        assert!(detail(&problem).contains(id), "{problem}");
    }
}
