//! The REST API, driven over HTTP against the real server binary, on SQLite and (when
//! DEVID_TEST_POSTGRES_URL is set) on PostgreSQL.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test]
async fn first_start_writes_the_admin_token_privately_and_never_logs_it() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let path = server.data_dir.join("admin.token");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", backend.name());
        assert!(server.token.starts_with("devid_"));
        let printed = server.printed();
        assert!(printed.contains(&path.display().to_string()), "{printed}");
        assert!(!printed.contains(&server.token), "token leaked into output");
        for f in ["ca/root.key", "ca/issuing.key"] {
            let mode = std::fs::metadata(server.data_dir.join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{f} is readable by others");
        }
        let (status, _) = server.admin_get("/v1/tokens").await;
        assert_eq!(status, StatusCode::OK);
    }
}

#[tokio::test]
async fn ca_chain_is_public_issuing_first_root_last() {
    let server = Server::start(&Backend::Sqlite).await;
    let resp = server
        .client
        .get(server.url("/v1/ca"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let pem_text = resp.text().await.unwrap();
    let certs = pem::parse_many(&pem_text).unwrap();
    assert_eq!(certs.len(), 2);
    let root = std::fs::read_to_string(server.root_pem()).unwrap();
    assert_eq!(pem::parse(root).unwrap().contents(), certs[1].contents());
    // The first is signed by the second, which is self-signed: ask openssl.
    let dir = tempfile::tempdir().unwrap();
    let root = write(dir.path(), "root.pem", &pem::encode(&certs[1]));
    let issuing = write(dir.path(), "issuing.pem", &pem::encode(&certs[0]));
    let out = run_ok(
        Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(&root)
            .arg(&issuing),
    );
    assert!(out.contains(": OK"), "{out}");
}

fn register_body(serial: &str, csr: &str) -> Value {
    json!({"hardware_serial": serial, "model": "thermo", "csr": csr, "metadata": {"line": 3}})
}

#[tokio::test]
async fn registration_is_idempotent_and_conflicts_are_409() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let (_key, csr_pem) = csr("ignored");
        let (status, first) = server
            .admin_post("/v1/devices", &register_body("SN-1", &csr_pem))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{first}");
        let client_id = first["client_id"].as_str().unwrap();
        assert!(client_id.starts_with("thermo"), "{client_id}");
        assert!(devid_core::clientid::verify_check(client_id).is_ok());
        assert_eq!(first["created"], true);
        for field in [
            "certificate",
            "chain",
            "serial",
            "fingerprint_sha256",
            "not_before",
            "not_after",
        ] {
            assert!(
                first[field].as_str().is_some_and(|s| !s.is_empty()),
                "{field}"
            );
        }
        // Same serial, same CSR: the same device, 200.
        let (status, again) = server
            .admin_post("/v1/devices", &register_body("SN-1", &csr_pem))
            .await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert_eq!(again["created"], false);
        assert_eq!(again["serial"], first["serial"]);
        assert_eq!(again["client_id"], first["client_id"]);
        // Same serial, another CSR: 409, nothing changes.
        let (_k2, other_csr) = csr("other");
        let (status, problem) = server
            .admin_post("/v1/devices", &register_body("SN-1", &other_csr))
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{problem}");
        assert_eq!(problem["status"], 409);
        assert!(problem["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:devid:problem:"));
        let (_, device) = server.admin_get(&format!("/v1/devices/{client_id}")).await;
        assert_eq!(device["certificates"].as_array().unwrap().len(), 1);
        assert_eq!(device["metadata"], json!({"line": 3}));
    }
}

#[tokio::test]
async fn issued_certificates_pass_openssl_and_carry_the_profile() {
    let server = Server::start(&Backend::Sqlite).await;
    let (_key, csr_pem) = csr("whatever the device asks");
    let (status, reg) = server
        .admin_post(
            "/v1/devices",
            &json!({"hardware_serial": "HW-0042", "csr": csr_pem, "client_id": "FW0000042"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{reg}");
    let dir = tempfile::tempdir().unwrap();
    let cert = write(dir.path(), "dev.pem", reg["certificate"].as_str().unwrap());
    let chain = write(dir.path(), "chain.pem", reg["chain"].as_str().unwrap());
    let out = run_ok(
        Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(server.root_pem())
            .arg("-untrusted")
            .arg(&chain)
            .arg(&cert),
    );
    assert!(out.contains(": OK"), "{out}");
    let text = run_ok(
        Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(&cert),
    );
    assert!(text.contains("CN = FW0000042"), "{text}");
    assert!(text.contains("serialNumber = HW-0042"), "{text}");
    assert!(text.contains("URI:urn:devid:FW0000042"), "{text}");
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(
        text.contains(&format!("URI:{}/v1/crl", server.url)),
        "{text}"
    );
    let serial = run_ok(
        Command::new("openssl")
            .args(["x509", "-noout", "-serial", "-in"])
            .arg(&cert),
    );
    let serial = serial
        .trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase();
    assert_eq!(
        serial.trim_start_matches('0'),
        reg["serial"].as_str().unwrap().trim_start_matches('0')
    );
    let fp = run_ok(
        Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(&cert),
    );
    let fp = fp
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_ascii_lowercase();
    assert_eq!(fp, reg["fingerprint_sha256"].as_str().unwrap());
}

#[tokio::test]
async fn generate_key_returns_a_matching_key_once() {
    let server = Server::start(&Backend::Sqlite).await;
    let body = json!({"hardware_serial": "GK-1", "model": "valve", "generate_key": true});
    let (status, reg) = server.admin_post("/v1/devices", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{reg}");
    let key_pem = reg["private_key"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = write(dir.path(), "k.pem", key_pem);
    let cert = write(dir.path(), "c.pem", reg["certificate"].as_str().unwrap());
    let a = run_ok(
        Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&key),
    );
    let b = run_ok(
        Command::new("openssl")
            .args(["x509", "-noout", "-pubkey", "-in"])
            .arg(&cert),
    );
    assert_eq!(a, b);
    // The key is never given again: a replay of the same serial is a conflict.
    let (status, _) = server.admin_post("/v1/devices", &body).await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn bad_input_is_a_clear_error_and_changes_nothing() {
    let server = Server::start(&Backend::Sqlite).await;
    let (_k, good) = csr("x");
    let dir = tempfile::tempdir().unwrap();
    // An RSA CSR and a P-384 CSR, made by openssl.
    let rsa_key = dir.path().join("rsa.key");
    run_ok(
        Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&rsa_key)
            .arg("2048"),
    );
    let rsa_csr = run_ok(
        Command::new("openssl")
            .args(["req", "-new", "-subj", "/CN=r", "-key"])
            .arg(&rsa_key),
    );
    let p384_key = dir.path().join("p384.key");
    run_ok(
        Command::new("openssl")
            .args(["ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out"])
            .arg(&p384_key),
    );
    let p384_csr = run_ok(
        Command::new("openssl")
            .args(["req", "-new", "-subj", "/CN=p", "-key"])
            .arg(&p384_key),
    );
    // A CSR whose signature no longer matches (one byte of the signature flipped).
    let mut der = pem::parse(&good).unwrap().contents().to_vec();
    let n = der.len();
    der[n - 5] ^= 0x01;
    let tampered = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!({"hardware_serial": "", "csr": good}),
            422,
            "hardware_serial",
        ),
        (
            json!({"hardware_serial": "A", "csr": "not a csr"}),
            422,
            "csr",
        ),
        (json!({"hardware_serial": "A", "csr": rsa_csr}), 422, "RSA"),
        (
            json!({"hardware_serial": "A", "csr": p384_csr}),
            422,
            "P-384",
        ),
        (
            json!({"hardware_serial": "A", "csr": tampered}),
            422,
            "signature",
        ),
        (json!({"hardware_serial": "A"}), 422, "generate_key"),
        (
            json!({"hardware_serial": "A", "csr": good, "generate_key": true}),
            422,
            "not both",
        ),
        (
            json!({"hardware_serial": "A", "csr": good, "client_id": "a+b"}),
            422,
            "client_id",
        ),
        (
            json!({"hardware_serial": "A", "csr": good, "client_id": "a/b"}),
            422,
            "client_id",
        ),
        (
            json!({"hardware_serial": "A", "csr": good, "client_id": "a b"}),
            422,
            "client_id",
        ),
        (
            json!({"hardware_serial": "A", "csr": good, "client_id": ""}),
            422,
            "empty",
        ),
        (
            json!({"hardware_serial": "A", "csr": good, "client_id": "x".repeat(24)}),
            422,
            "24",
        ),
        (
            json!({"hardware_serial": "A", "csr": good, "metadata": [1]}),
            422,
            "object",
        ),
        (
            json!({"hardware_serial": "A", "csr": good, "model": "bad model"}),
            422,
            "model",
        ),
        (
            json!({"hardware_serial": "A", "csr": good, "surprise": 1}),
            422,
            "surprise",
        ),
    ];
    for (body, status, needle) in cases {
        let (got, problem) = server.admin_post("/v1/devices", &body).await;
        assert_eq!(got.as_u16(), status, "{body} -> {problem}");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(needle),
            "{body}: detail {detail:?} lacks {needle:?}"
        );
    }
    // Not JSON at all.
    let resp = server
        .client
        .post(server.url("/v1/devices"))
        .bearer_auth(&server.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let (_, list) = server.admin_get("/v1/devices").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let server = Server::start_with(
        &Backend::Sqlite,
        Options {
            extra_args: vec!["--max-body-bytes".into(), "2048".into()],
            ..Options::default()
        },
    )
    .await;
    let (_k, good) = csr("x");
    let body = json!({"hardware_serial": "A", "csr": good, "metadata": {"pad": "x".repeat(4096)}});
    let (status, problem) = server.admin_post("/v1/devices", &body).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{problem}");
    assert_eq!(problem["status"], 413);
}

#[tokio::test]
async fn batches_are_all_or_nothing_and_name_the_failing_index() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let items: Vec<Value> = (0..300)
            .map(|i| json!({"hardware_serial": format!("B-{i}"), "model": "thermo", "generate_key": true}))
            .collect();
        let mut bad = items.clone();
        bad[257] = json!({"hardware_serial": "B-257", "model": "thermo", "csr": "garbage"});
        let (status, problem) = server
            .admin_post("/v1/devices/batch", &json!({"items": bad}))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert_eq!(problem["index"], 257, "{problem}");
        let mut dup = items.clone();
        dup[10] = json!({"hardware_serial": "B-3", "generate_key": true});
        let (status, problem) = server
            .admin_post("/v1/devices/batch", &json!({"items": dup}))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert_eq!(problem["index"], 10);
        let (_, list) = server.admin_get("/v1/devices").await;
        assert_eq!(
            list["items"].as_array().unwrap().len(),
            0,
            "a failed batch left devices"
        );

        let (status, ok) = server
            .admin_post("/v1/devices/batch", &json!({"items": items}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{ok}");
        assert_eq!(ok["created"], 300);
        assert_eq!(ok["items"].as_array().unwrap().len(), 300);
        assert_eq!(ok["items"][299]["hardware_serial"], "B-299");

        // A batch whose item conflicts with a stored device: 409, index named, nothing stored.
        let (_k, c) = csr("x");
        let conflict = json!({"items": [
            {"hardware_serial": "NEW-1", "csr": c},
            {"hardware_serial": "B-5", "generate_key": true}
        ]});
        let (status, problem) = server.admin_post("/v1/devices/batch", &conflict).await;
        assert_eq!(status, StatusCode::CONFLICT, "{problem}");
        assert_eq!(problem["index"], 1);
        let (status, _) = server
            .admin_get("/v1/devices?model=thermo&limit=1000")
            .await;
        assert_eq!(status, StatusCode::OK);
        let (_, list) = server.admin_get("/v1/devices?limit=1000").await;
        assert_eq!(list["items"].as_array().unwrap().len(), 300);

        let too_many: Vec<Value> = (0..10_001)
            .map(|i| json!({"hardware_serial": format!("T{i}"), "generate_key": true}))
            .collect();
        let (status, _) = server
            .admin_post("/v1/devices/batch", &json!({"items": too_many}))
            .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}

#[tokio::test]
async fn queries_filter_paginate_and_catch_typos() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        for (i, model) in ["a", "b", "a", "a", "b"].iter().enumerate() {
            let (s, _) = server
                .admin_post("/v1/devices", &json!({"hardware_serial": format!("Q{i}"), "model": model, "generate_key": true}))
                .await;
            assert_eq!(s, StatusCode::CREATED);
        }
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/devices?model=a&limit=2&cursor={c}"),
                None => "/v1/devices?model=a&limit=2".to_string(),
            };
            let (status, page) = server.admin_get(&path).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            for item in page["items"].as_array().unwrap() {
                assert_eq!(item["model"], "a");
                seen.push(item["hardware_serial"].as_str().unwrap().to_string());
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        assert_eq!(seen, ["Q0", "Q2", "Q3"]);
        let (_, by_serial) = server.admin_get("/v1/devices?hardware_serial=Q4").await;
        assert_eq!(
            by_serial["items"].as_array().unwrap().len(),
            1,
            "{by_serial}"
        );
        assert_eq!(by_serial["items"][0]["model"], "b");
        let (_, wrong_model) = server
            .admin_get("/v1/devices?hardware_serial=Q4&model=a")
            .await;
        assert_eq!(wrong_model["items"].as_array().unwrap().len(), 0);
        let (_, none) = server.admin_get("/v1/devices?hardware_serial=nope").await;
        assert_eq!(none["items"].as_array().unwrap().len(), 0);
        let (_, none) = server
            .admin_get("/v1/devices?created_after=2999-01-01T00:00:00Z")
            .await;
        assert_eq!(none["items"].as_array().unwrap().len(), 0);
        let (status, _) = server
            .admin_get("/v1/devices?created_after=yesterday")
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (_, one) = server.admin_get("/v1/devices?limit=1").await;
        let id = one["items"][0]["client_id"].as_str().unwrap().to_string();
        let (status, dev) = server.admin_get(&format!("/v1/devices/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(dev["status"], "active");
        // One character changed: the check character says it is a typo.
        let mut typo = id.clone().into_bytes();
        typo[3] = if typo[3] == b'Z' { b'Y' } else { b'Z' };
        let typo = String::from_utf8(typo).unwrap();
        let (status, problem) = server.admin_get(&format!("/v1/devices/{typo}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert!(problem["detail"].as_str().unwrap().contains("mistyped"));
        let (status, _) = server.admin_get("/v1/devices/FW0000099").await;
        assert!(status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn status_for_brokers_has_an_etag() {
    let server = Server::start(&Backend::Sqlite).await;
    let (_, reg) = server
        .admin_post(
            "/v1/devices",
            &json!({"hardware_serial": "E1", "generate_key": true}),
        )
        .await;
    let id = reg["client_id"].as_str().unwrap();
    let broker = server.token("broker", None).await;
    let resp = server
        .client
        .get(server.url(&format!("/v1/devices/{id}/status")))
        .bearer_auth(&broker)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let etag = resp.headers()["etag"].to_str().unwrap().to_string();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "active");
    assert_eq!(body["policy"]["publish"][0], format!("devices/{id}/#"));
    let resp = server
        .client
        .get(server.url(&format!("/v1/devices/{id}/status")))
        .bearer_auth(&broker)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    server
        .admin_post(&format!("/v1/devices/{id}/suspend"), &json!({}))
        .await;
    let resp = server
        .client
        .get(server.url(&format!("/v1/devices/{id}/status")))
        .bearer_auth(&broker)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "a changed status must not match the old ETag"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "suspended");
    assert_eq!(body["revoked_serials"][0], reg["serial"]);
}

/// Roles: every pair that must be refused is refused.
#[tokio::test]
async fn roles_are_enforced() {
    let server = Server::start(&Backend::Sqlite).await;
    let (_, reg) = server
        .admin_post(
            "/v1/devices",
            &json!({"hardware_serial": "R1", "generate_key": true}),
        )
        .await;
    let id = reg["client_id"].as_str().unwrap().to_string();
    let serial = reg["serial"].as_str().unwrap().to_string();
    let factory = server.token("factory", None).await;
    let broker = server.token("broker", None).await;
    let auditor = server.token("auditor", None).await;
    let limited = server.token("factory", Some(vec!["thermo"])).await;
    let (_, k) = csr("x");
    let reg_body = json!({"hardware_serial": "R-new", "csr": k});
    let revoke = json!({"reason": "keyCompromise"});
    let token_body = json!({"role": "auditor", "name": "x"});
    let cases: Vec<(Method, String, Option<Value>, &[&str])> = vec![
        (
            Method::POST,
            "/v1/devices".into(),
            Some(reg_body.clone()),
            &["broker", "auditor"],
        ),
        (
            Method::POST,
            "/v1/devices/batch".into(),
            Some(json!({"items": [reg_body.clone()]})),
            &["broker", "auditor"],
        ),
        (
            Method::GET,
            "/v1/devices".into(),
            None,
            &["factory", "broker"],
        ),
        (
            Method::GET,
            format!("/v1/devices/{id}"),
            None,
            &["factory", "broker"],
        ),
        (
            Method::GET,
            format!("/v1/devices/{id}/status"),
            None,
            &["factory"],
        ),
        (
            Method::POST,
            format!("/v1/devices/{id}/revoke"),
            Some(revoke.clone()),
            &["factory", "broker", "auditor"],
        ),
        (
            Method::POST,
            format!("/v1/devices/{id}/suspend"),
            Some(json!({})),
            &["factory", "broker", "auditor"],
        ),
        (
            Method::POST,
            format!("/v1/devices/{id}/resume"),
            None,
            &["factory", "broker", "auditor"],
        ),
        (
            Method::PUT,
            format!("/v1/devices/{id}/allowlist"),
            Some(json!({"cidrs": []})),
            &["factory", "broker", "auditor"],
        ),
        (
            Method::PUT,
            format!("/v1/devices/{id}/policy"),
            Some(json!({})),
            &["factory", "broker", "auditor"],
        ),
        (
            Method::POST,
            format!("/v1/certificates/{serial}/revoke"),
            Some(revoke.clone()),
            &["factory", "broker", "auditor"],
        ),
        (
            Method::GET,
            format!("/v1/certificates/{serial}"),
            None,
            &["factory"],
        ),
        (Method::GET, "/v1/revocations".into(), None, &["factory"]),
        (
            Method::GET,
            "/v1/revocations/stream".into(),
            None,
            &["factory"],
        ),
        (
            Method::POST,
            "/v1/tokens".into(),
            Some(token_body.clone()),
            &["factory", "broker", "auditor"],
        ),
        (
            Method::GET,
            "/v1/tokens".into(),
            None,
            &["factory", "broker"],
        ),
        (
            Method::DELETE,
            "/v1/tokens/nope".into(),
            None,
            &["factory", "broker", "auditor"],
        ),
        (
            Method::GET,
            "/v1/audit".into(),
            None,
            &["factory", "broker"],
        ),
        (
            Method::POST,
            "/v1/brokers".into(),
            Some(json!({"name": "b.example", "csr": k})),
            &["factory", "broker", "auditor"],
        ),
        (
            Method::POST,
            "/v1/events".into(),
            Some(json!({"events": []})),
            &["factory", "auditor"],
        ),
        (Method::GET, "/v1/models".into(), None, &["factory"]),
        (
            Method::PUT,
            "/v1/models/thermo".into(),
            Some(json!({})),
            &["factory", "broker", "auditor"],
        ),
    ];
    let tokens = [
        ("factory", &factory),
        ("broker", &broker),
        ("auditor", &auditor),
    ];
    for (method, path, body, refused) in &cases {
        // No token: 401 everywhere.
        let (status, problem) = server.send(method.clone(), path, None, body.as_ref()).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} without token: {problem}"
        );
        let (status, _) = server
            .send(method.clone(), path, Some("devid_nope_nope"), body.as_ref())
            .await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} with a bad token"
        );
        for (role, token) in tokens {
            if refused.contains(&role) {
                let (status, problem) = server
                    .send(method.clone(), path, Some(token), body.as_ref())
                    .await;
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{role} {method} {path}: {problem}"
                );
            }
        }
    }
    // In a batch, the refused item is named by index.
    let (_, c0) = csr("x");
    let (status, problem) = server
        .post(
            "/v1/devices/batch",
            Some(&limited),
            &json!({"items": [{"hardware_serial": "LB0", "model": "thermo", "csr": c0}, {"hardware_serial": "LB1", "model": "valve", "generate_key": true}]}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(problem["index"], 1, "{problem}");
    // A factory token limited to a model may register only that model.
    let (_, c1) = csr("x");
    let (status, _) = server
        .post(
            "/v1/devices",
            Some(&limited),
            &json!({"hardware_serial": "L1", "model": "valve", "csr": c1}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = server
        .post(
            "/v1/devices",
            Some(&limited),
            &json!({"hardware_serial": "L1", "model": "thermo", "csr": c1}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // Public routes need nothing.
    for path in [
        "/v1/ca",
        "/v1/crl",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    ] {
        let (status, _) = server.get(path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    // A revoked token stops working at once; an expired one never works.
    let (_, tokens_list) = server.admin_get("/v1/tokens").await;
    let auditor_id = tokens_list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["role"] == "auditor")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = server
        .send(
            Method::DELETE,
            &format!("/v1/tokens/{auditor_id}"),
            Some(&server.token.clone()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server.get("/v1/devices", Some(&auditor)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn every_mutation_is_audited_with_actor_and_outcome() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let factory = server.token("factory", None).await;
        let (_, reg) = server
            .post(
                "/v1/devices",
                Some(&factory),
                &json!({"hardware_serial": "AU1", "generate_key": true}),
            )
            .await;
        let id = reg["client_id"].as_str().unwrap().to_string();
        server
            .admin_post(
                &format!("/v1/devices/{id}/revoke"),
                &json!({"reason": "keyCompromise"}),
            )
            .await;
        let (status, _) = server
            .admin_post(&format!("/v1/devices/{id}/resume"), &json!({}))
            .await;
        assert_eq!(status, StatusCode::CONFLICT);
        let (status, page) = server.admin_get("/v1/audit?limit=1000").await;
        assert_eq!(status, StatusCode::OK);
        let items = page["items"].as_array().unwrap();
        let find = |action: &str| items.iter().find(|e| e["action"] == action).cloned();
        let register = find("device.register").expect("register audited");
        assert_eq!(register["actor_name"], "test factory");
        assert_eq!(register["target"], id);
        assert_eq!(register["outcome"], "ok");
        assert_eq!(
            find("device.revoke").expect("revoke audited")["outcome"],
            "ok"
        );
        let failed = find("device.resume").expect("failed resume audited");
        assert!(
            failed["outcome"]
                .as_str()
                .unwrap()
                .starts_with("error: 409"),
            "{failed}"
        );
        assert!(find("token.create").is_some());
        let (_, by_actor) = server.admin_get("/v1/audit?actor=test%20factory").await;
        assert!(by_actor["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["actor_name"] == "test factory"));
        assert!(!by_actor["items"].as_array().unwrap().is_empty());
    }
}

#[tokio::test]
async fn operations_endpoints() {
    let server = Server::start(&Backend::Sqlite).await;
    let (status, ready) = server.get("/readyz", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ready["database"], "sqlite");
    server
        .admin_post(
            "/v1/devices",
            &json!({"hardware_serial": "M1", "generate_key": true}),
        )
        .await;
    let metrics = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("devid_certificates_issued_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("devid_issuance_seconds_count 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("route=\"/v1/devices\",status=\"201\""),
        "{metrics}"
    );
    let (_, doc) = server.get("/openapi.json", None).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/v1/devices/{client_id}/revoke"]["post"].is_object());
    let (status, problem) = server.get("/v1/nothing-here", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(problem["status"], 404);
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully_and_state_survives_a_restart() {
    for backend in backends().await {
        let mut server = Server::start(&backend).await;
        let (_, reg) = server
            .admin_post(
                "/v1/devices",
                &json!({"hardware_serial": "P1", "generate_key": true}),
            )
            .await;
        let id = reg["client_id"].as_str().unwrap().to_string();
        server
            .admin_post(&format!("/v1/devices/{id}/suspend"), &json!({}))
            .await;
        let (_, before) = server.admin_get("/v1/revocations").await;
        let (_, ca_before) = server.get("/v1/ca", None).await;
        let status = server.stop();
        assert!(status.success(), "{status:?}");
        server.restart();
        let (status, dev) = server.admin_get(&format!("/v1/devices/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(dev["status"], "suspended");
        assert_eq!(dev["certificates"][0]["serial"], reg["serial"]);
        let (_, after) = server.admin_get("/v1/revocations").await;
        assert_eq!(after["head"], before["head"]);
        assert!(after["head"].as_i64().unwrap() >= 1);
        let (_, ca_after) = server.get("/v1/ca", None).await;
        assert_eq!(ca_before, ca_after, "the CA changed across a restart");
        // The admin token made on the first start still works; no second one was made.
        let (_, tokens) = server.admin_get("/v1/tokens").await;
        assert_eq!(
            tokens["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["role"] == "admin")
                .count(),
            1
        );
    }
}

#[tokio::test]
async fn config_precedence_flag_over_env_over_file() {
    install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let toml_path = write(
        dir.path(),
        "devid.toml",
        &format!(
            "organization = \"FileOrg\"\ndata_dir = \"{}\"\n",
            data.display()
        ),
    );
    // env beats file for organization; the flag beats env for listen.
    let mut server = Server::start_with(
        &Backend::Sqlite,
        Options {
            data_dir: Some(data.clone()),
            extra_args: vec!["--config".into(), toml_path.display().to_string()],
            env: vec![
                ("DEVID_ORGANIZATION".into(), "EnvOrg".into()),
                ("DEVID_LISTEN".into(), "127.0.0.1:1".into()),
            ],
            ..Options::default()
        },
    )
    .await;
    assert!(
        !server.url.ends_with(":1"),
        "the --listen flag lost to DEVID_LISTEN"
    );
    let (_, reg) = server
        .admin_post(
            "/v1/devices",
            &json!({"hardware_serial": "C1", "generate_key": true}),
        )
        .await;
    let cert = write(dir.path(), "c.pem", reg["certificate"].as_str().unwrap());
    let subject = run_ok(
        Command::new("openssl")
            .args(["x509", "-noout", "-subject", "-in"])
            .arg(&cert),
    );
    assert!(subject.contains("O = EnvOrg"), "{subject}");
    server.kill();
    // A bad config file stops the server with a clear message.
    write(dir.path(), "devid.toml", "organisation = 1\n");
    let out = Command::new(BIN)
        .args(["--config"])
        .arg(&toml_path)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("organisation"));
}

#[tokio::test]
async fn models_policies_allowlists_and_events() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let admin = server.token.clone();
        let body = json!({"client_id_prefix": "TH", "topics": {"publish": ["t/%c/up"], "subscribe": ["t/%c/down", "all/#"]}, "message_auth": "required"});
        let (status, model) = server
            .send(Method::PUT, "/v1/models/thermo", Some(&admin), Some(&body))
            .await;
        assert_eq!(status, StatusCode::OK, "{model}");
        for bad in [
            json!({"client_id_prefix": "toolong"}),
            json!({"message_auth": "maybe"}),
            json!({"topics": {"publish": ["a/#/b"], "subscribe": []}}),
        ] {
            let (status, _) = server
                .send(Method::PUT, "/v1/models/thermo", Some(&admin), Some(&bad))
                .await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        }
        let (_, reg) = server
            .admin_post(
                "/v1/devices",
                &json!({"hardware_serial": "MP1", "model": "thermo", "generate_key": true}),
            )
            .await;
        let id = reg["client_id"].as_str().unwrap().to_string();
        assert!(id.starts_with("TH"), "{id}");
        let broker = server.token("broker", None).await;
        let (_, status) = server
            .get(&format!("/v1/devices/{id}/status"), Some(&broker))
            .await;
        assert_eq!(status["policy"]["publish"], json!([format!("t/{id}/up")]));
        assert_eq!(
            status["policy"]["subscribe"],
            json!([format!("t/{id}/down"), "all/#"])
        );
        assert_eq!(status["message_auth"], "required");
        // A per-device override beats the model; an allow-list is per device.
        let (status_code, st) = server
            .send(
                Method::PUT,
                &format!("/v1/devices/{id}/policy"),
                Some(&admin),
                Some(&json!({"message_auth": "off"})),
            )
            .await;
        assert_eq!(status_code, StatusCode::OK, "{st}");
        assert_eq!(st["message_auth"], "off");
        let (code, st) = server
            .send(
                Method::PUT,
                &format!("/v1/devices/{id}/allowlist"),
                Some(&admin),
                Some(&json!({"cidrs": ["10.1.0.0/16", "127.0.0.1"]})),
            )
            .await;
        assert_eq!(code, StatusCode::OK, "{st}");
        assert_eq!(st["allowed_cidrs"], json!(["10.1.0.0/16", "127.0.0.1"]));
        let (code, _) = server
            .send(
                Method::PUT,
                &format!("/v1/devices/{id}/allowlist"),
                Some(&admin),
                Some(&json!({"cidrs": ["10.1.0.0/99"]})),
            )
            .await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
        // Connection events from a broker set last_seen and last_address.
        let events = json!({"events": [
            {"kind": "connect", "client_id": id, "at": "2026-11-25T12:00:00Z", "address": "127.0.0.1:5555"},
            {"kind": "auth_failure", "client_id": id, "at": "2026-11-25T12:01:00Z", "reason": "bad signature", "refusal": "bad_signature"},
            {"kind": "disconnect", "client_id": id, "at": "2026-11-25T12:02:00Z"}
        ]});
        let (code, _) = server.post("/v1/events", Some(&broker), &events).await;
        assert_eq!(code, StatusCode::ACCEPTED);
        let (_, dev) = server.admin_get(&format!("/v1/devices/{id}")).await;
        assert_eq!(dev["last_seen"], "2026-11-25T12:00:00Z", "{dev}");
        assert_eq!(dev["last_address"], "127.0.0.1:5555");
        // Failures are counted by the plugin's refusal kind.
        let metrics = server
            .client
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("devid_auth_failures_total{refusal=\"bad_signature\"} 1\n"),
            "{metrics}"
        );
        let (code, _) = server
            .post(
                "/v1/events",
                Some(&broker),
                &json!({"events": [{"kind": "connect", "client_id": id, "at": "noon"}]}),
            )
            .await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
        let (_, models) = server.get("/v1/models", Some(&broker)).await;
        assert_eq!(models["items"][0]["name"], "thermo");
        // Settings changes are announced on the feed, so brokers apply them to live connections.
        let (_, feed) = server.get("/v1/revocations", Some(&broker)).await;
        let updates: Vec<(String, String, Value)> = feed["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "updated")
            .map(|e| {
                (
                    e["scope"].as_str().unwrap().to_string(),
                    e["client_id"].as_str().unwrap().to_string(),
                    e["model"].clone(),
                )
            })
            .collect();
        assert_eq!(
            updates,
            vec![
                ("model".to_string(), String::new(), json!("thermo")),
                ("device".to_string(), id.clone(), Value::Null),
                ("device".to_string(), id.clone(), Value::Null),
            ],
            "{feed}"
        );
    }
}

#[tokio::test]
async fn brokers_are_enrolled_with_a_server_certificate() {
    let server = Server::start(&Backend::Sqlite).await;
    let (_key, csr_pem) = csr("ignored");
    let (status, cert) = server
        .admin_post(
            "/v1/brokers",
            &json!({"name": "mqtt.example.com", "csr": csr_pem}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{cert}");
    let dir = tempfile::tempdir().unwrap();
    let c = write(dir.path(), "b.pem", cert["certificate"].as_str().unwrap());
    let chain = write(dir.path(), "chain.pem", cert["chain"].as_str().unwrap());
    let out = run_ok(
        Command::new("openssl")
            .args(["verify", "-purpose", "sslserver", "-CAfile"])
            .arg(server.root_pem())
            .arg("-untrusted")
            .arg(&chain)
            .arg(&c),
    );
    assert!(out.contains(": OK"), "{out}");
    let text = run_ok(
        Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(&c),
    );
    assert!(text.contains("DNS:mqtt.example.com"), "{text}");
    assert!(text.contains("TLS Web Server Authentication"), "{text}");
    let (status, _) = server
        .admin_post(
            "/v1/brokers",
            &json!({"name": "not a name", "csr": csr_pem}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn a_hardware_serial_the_profile_cannot_carry_is_422_not_500() {
    let server = Server::start(&Backend::Sqlite).await;
    let long = "S".repeat(100);
    let (status, problem) = server
        .admin_post(
            "/v1/devices",
            &json!({"hardware_serial": long, "generate_key": true}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let (_, list) = server.admin_get("/v1/devices").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
}

/// A suspension's comment is kept in its audit row (both backends); an over-long one is refused
/// and suspends nothing.
#[tokio::test]
async fn suspension_comment_is_kept_in_the_audit_log() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let (_, reg) = server
            .admin_post(
                "/v1/devices",
                &json!({"hardware_serial": "C1", "generate_key": true}),
            )
            .await;
        let id = reg["client_id"].as_str().unwrap().to_string();
        let (status, body) = server
            .admin_post(
                &format!("/v1/devices/{id}/suspend"),
                &json!({"comment": "x".repeat(501)}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let (_, dev) = server.admin_get(&format!("/v1/devices/{id}")).await;
        assert_eq!(
            dev["status"], "active",
            "a refused suspension changes nothing"
        );
        let (status, _) = server
            .admin_post(
                &format!("/v1/devices/{id}/suspend"),
                &json!({"comment": "returned for repair"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let (_, audit) = server.admin_get("/v1/audit?limit=1000").await;
        let rows: Vec<&Value> = audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["action"] == "device.suspend")
            .collect();
        assert_eq!(rows.len(), 2, "the refusal and the suspension: {audit}");
        assert!(rows[0]["outcome"].as_str().unwrap().starts_with("error"));
        assert!(rows[0].get("detail").is_none(), "{}", rows[0]);
        assert_eq!(rows[1]["outcome"], "ok");
        assert_eq!(rows[1]["target"], id.as_str());
        assert_eq!(rows[1]["detail"], "returned for repair");
    }
}

/// Without DEVID_TEST_POSTGRES_URL the PostgreSQL half of a test is left out only off CI: under
/// CI=true or DEVID_TEST_REQUIRE_POSTGRES=1 (scripts/test.sh) the run fails instead.
#[test]
fn a_missing_postgres_fails_the_run_under_ci() {
    let s = |v: &str| Some(v.to_owned());
    let url = "postgres://postgres@127.0.0.1:5432/postgres";
    assert_eq!(postgres_url_from(s(url), s("true"), None), Ok(s(url)));
    assert_eq!(postgres_url_from(None, None, None), Ok(None));
    assert_eq!(postgres_url_from(None, s("false"), s("0")), Ok(None));
    for (ci, require) in [(s("true"), None), (None, s("1")), (s("1"), None)] {
        let e = postgres_url_from(s(""), ci, require).expect_err("PostgreSQL is required");
        assert!(e.contains("DEVID_TEST_POSTGRES_URL is not set"), "{e}");
    }
}
