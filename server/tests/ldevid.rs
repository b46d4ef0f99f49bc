//! LDevIDs: the per-model settings, and the one issuance function through the route brokers
//! use for renewal over MQTT (enroll with the IDevID, renew, re-key with its proof, and every
//! refusal), on SQLite and, with DEVID_TEST_POSTGRES_URL, on PostgreSQL.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use base64::Engine as _;
use common::*;
use devid_core::protocol::renewal::{rekey_proof, renewal_csr};
use reqwest::{Method, StatusCode};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use serde_json::{json, Value};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A device as the tests hold it: ClientID, current certificate and key.
struct Dev {
    id: String,
    cert: Vec<u8>,
    serial: String,
    key: EcdsaKeyPair,
}

fn key_from_pem(pem_text: &str) -> EcdsaKeyPair {
    let block = pem::parse(pem_text).unwrap();
    EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        block.contents(),
        &SystemRandom::new(),
    )
    .unwrap()
}

fn new_key() -> EcdsaKeyPair {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap()
}

async fn register(server: &Server, serial: &str, model: &str) -> Dev {
    let (status, reg) = server
        .admin_post(
            "/v1/devices",
            &json!({"hardware_serial": serial, "model": model, "generate_key": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{reg}");
    Dev {
        id: reg["client_id"].as_str().unwrap().into(),
        cert: pem::parse(reg["certificate"].as_str().unwrap())
            .unwrap()
            .into_contents(),
        serial: reg["serial"].as_str().unwrap().into(),
        key: key_from_pem(reg["private_key"].as_str().unwrap()),
    }
}

/// Asks for an LDevID as a broker relaying `dev`'s request: a CSR for `new` (or the current
/// key) with the current certificate's names, and the proof when asked.
async fn ask(
    server: &Server,
    broker: &str,
    dev: &Dev,
    new: Option<&EcdsaKeyPair>,
    proof: bool,
) -> Value {
    let rng = SystemRandom::new();
    let csr = renewal_csr(&dev.cert, new.unwrap_or(&dev.key), &rng).unwrap();
    let mut body = json!({"client_id": dev.id, "serial": dev.serial, "csr": B64.encode(&csr)});
    if proof {
        body["rekey_proof"] = json!(B64.encode(rekey_proof(&dev.key, &csr, &rng).unwrap()));
    }
    let (status, v) = server
        .post("/v1/brokers/renewals", Some(broker), &body)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

/// Takes the issued certificate as the device's current one.
fn adopt(dev: &mut Dev, answer: &Value, key: Option<EcdsaKeyPair>) {
    assert!(answer["refusal"].is_null(), "{answer}");
    dev.cert = B64.decode(answer["chain"][0].as_str().unwrap()).unwrap();
    dev.serial = answer["serial"].as_str().unwrap().into();
    if let Some(k) = key {
        dev.key = k;
    }
}

fn refusal(answer: &Value) -> &str {
    answer["refusal"].as_str().unwrap_or("(issued)")
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
            .admin_get(&format!("/v1/devices/{}/status", dev.id))
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
            .admin_get(&format!("/v1/devices/{}/status", dev.id))
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

#[tokio::test]
async fn enroll_renew_and_rekey_through_the_one_issuance_function() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let broker = server.token("broker", None).await;
        let (status, _) = put_model(&server, "valve", json!({"ldevid_validity": "7d"})).await;
        assert_eq!(status, StatusCode::OK);
        let mut dev = register(&server, "LD-1", "valve").await;
        let idevid_serial = dev.serial.clone();
        assert_eq!(devid_core::ldevid::is_ldevid(&dev.cert), Some(false));

        // Enroll on the strength of the IDevID (same key here).
        let a = ask(&server, &broker, &dev, None, false).await;
        assert_eq!(a["outcome"], "enrolled", "{a}");
        let chain = a["chain"].as_array().unwrap();
        assert_eq!(chain.len(), 3, "certificate, issuing CA, root: {a}");
        adopt(&mut dev, &a, None);
        assert_eq!(devid_core::ldevid::is_ldevid(&dev.cert), Some(true));
        let (_, info) = server
            .admin_get(&format!("/v1/certificates/{}", dev.serial))
            .await;
        assert_eq!(info["profile"], "ldevid", "{info}");
        let (_, parsed) = x509_parser::parse_x509_certificate(&dev.cert).unwrap();
        let life =
            parsed.validity().not_after.timestamp() - parsed.validity().not_before.timestamp();
        assert!((7 * 86_400..=7 * 86_400 + 120).contains(&life), "{life}");

        // Renew with the LDevID, same key.
        let a = ask(&server, &broker, &dev, None, false).await;
        assert_eq!(a["outcome"], "renewed", "{a}");
        adopt(&mut dev, &a, None);

        // Re-key: a new key without the proof is refused, with a wrong proof too.
        let k2 = new_key();
        let a = ask(&server, &broker, &dev, Some(&k2), false).await;
        assert_eq!(refusal(&a), "proof_invalid", "{a}");
        let rng = SystemRandom::new();
        let csr = renewal_csr(&dev.cert, &k2, &rng).unwrap();
        let forged = rekey_proof(&k2, &csr, &rng).unwrap();
        let (status, a) = server
            .post(
                "/v1/brokers/renewals",
                Some(&broker),
                &json!({"client_id": dev.id, "serial": dev.serial, "csr": B64.encode(&csr),
                        "rekey_proof": B64.encode(forged)}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            refusal(&a),
            "proof_invalid",
            "signed by the new key itself: {a}"
        );
        let a = ask(&server, &broker, &dev, Some(&k2), true).await;
        assert_eq!(a["outcome"], "rekeyed", "{a}");
        adopt(&mut dev, &a, Some(k2));

        // The device holds several valid certificates; the IDevID stays.
        let (_, d) = server.admin_get(&format!("/v1/devices/{}", dev.id)).await;
        let certs = d["certificates"].as_array().unwrap();
        assert_eq!(certs.len(), 4, "{d}");
        assert!(certs.iter().all(|c| c["status"] == "good"), "{d}");

        // Every issuance and refusal is audited.
        let (_, audit) = server.admin_get("/v1/audit?limit=100").await;
        let rows: Vec<&Value> = audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "ldevid.issue" && r["target"] == dev.id.as_str())
            .collect();
        let ok: Vec<&str> = rows
            .iter()
            .filter(|r| r["outcome"] == "ok")
            .map(|r| r["detail"].as_str().unwrap())
            .collect();
        assert_eq!(ok.len(), 3, "{audit}");
        assert!(ok.iter().any(|d| d.starts_with("rekeyed ")), "{ok:?}");
        assert!(ok.iter().any(|d| d.contains(&idevid_serial)), "{ok:?}");
        assert_eq!(
            rows.iter().filter(|r| r["outcome"] != "ok").count(),
            2,
            "two refusals: {audit}"
        );

        // Every issuance is an event for applications: the IDevID, then three LDevIDs.
        let (_, events) = server
            .admin_get("/v1/events?kind=certificate_issued&model=valve")
            .await;
        let issued: Vec<(&str, &str)> = events["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["data"]["kind"].as_str().unwrap(),
                    e["data"]["serial"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(issued.len(), 4, "{events}");
        assert_eq!(issued[0], ("idevid", idevid_serial.as_str()));
        assert!(issued[1..].iter().all(|(k, _)| *k == "ldevid"), "{events}");
        assert_eq!(
            issued[3].1, dev.serial,
            "the newest is the device's current one"
        );
    }
}

#[tokio::test]
async fn refusals_name_their_rule() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let broker = server.token("broker", None).await;
        let a = register(&server, "RF-A", "m").await;
        let b = register(&server, "RF-B", "m").await;

        // A certificate of another device, an unknown serial.
        let mut stolen = Dev {
            id: a.id.clone(),
            cert: b.cert.clone(),
            serial: b.serial.clone(),
            key: new_key(),
        };
        let r = ask(&server, &broker, &stolen, None, false).await;
        assert_eq!(refusal(&r), "not_authorized", "{r}");
        stolen.serial = "4aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into();
        let r = ask(&server, &broker, &stolen, None, false).await;
        assert_eq!(refusal(&r), "not_authorized", "{r}");

        // Re-enroll with B's names in A's request: 400-class mismatch naming the subject.
        let rng = SystemRandom::new();
        let csr = renewal_csr(&b.cert, &a.key, &rng).unwrap();
        let (_, r) = server
            .post(
                "/v1/brokers/renewals",
                Some(&broker),
                &json!({"client_id": a.id, "serial": a.serial, "csr": B64.encode(&csr)}),
            )
            .await;
        assert_eq!(refusal(&r), "subject_mismatch", "{r}");
        let detail = r["detail"].as_str().unwrap();
        assert!(
            detail.contains("subject") && detail.contains(&b.id) && detail.contains(&a.id),
            "{detail}"
        );

        // B's key in A's request (with A's valid proof): one key, one device.
        let r = ask(&server, &broker, &a, Some(&b.key), true).await;
        assert_eq!(refusal(&r), "key_refused", "{r}");

        // A CSR that is not one.
        let (status, r) = server
            .post(
                "/v1/brokers/renewals",
                Some(&broker),
                &json!({"client_id": a.id, "serial": a.serial, "csr": B64.encode(b"junk")}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(refusal(&r), "malformed", "{r}");

        // Only brokers (and admins) relay renewals.
        let factory = server.token("factory", None).await;
        let (status, _) = server
            .post(
                "/v1/brokers/renewals",
                Some(&factory),
                &json!({"client_id": a.id, "serial": a.serial, "csr": B64.encode(&csr)}),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);

        // Suspended: refused while it is; resumed: issued again.
        let (status, _) = server
            .admin_post(&format!("/v1/devices/{}/suspend", a.id), &json!({}))
            .await;
        assert_eq!(status, StatusCode::OK);
        let r = ask(&server, &broker, &a, None, false).await;
        assert_eq!(refusal(&r), "device_suspended", "{r}");
        let (status, _) = server
            .admin_post(&format!("/v1/devices/{}/resume", a.id), &json!({}))
            .await;
        assert_eq!(status, StatusCode::OK);
        let r = ask(&server, &broker, &a, None, false).await;
        assert_eq!(r["outcome"], "enrolled", "{r}");
        let mut a = a;
        adopt(&mut a, &r, None);

        // Revoked: every certificate revoked, and never another one.
        let (status, d) = server
            .admin_post(
                &format!("/v1/devices/{}/revoke", a.id),
                &json!({"reason": "cessationOfOperation"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{d}");
        let certs = d["certificates"].as_array().unwrap();
        assert_eq!(certs.len(), 2, "{d}");
        assert!(certs.iter().all(|c| c["status"] == "revoked"), "{d}");
        let r = ask(&server, &broker, &a, None, false).await;
        assert_eq!(refusal(&r), "device_revoked", "{r}");
    }
}

#[tokio::test]
async fn a_device_asking_in_a_loop_is_rate_limited() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let broker = server.token("broker", None).await;
        let mut dev = register(&server, "RL-1", "m").await;
        let mut outcomes = Vec::new();
        for _ in 0..8 {
            let r = ask(&server, &broker, &dev, None, false).await;
            if r["refusal"].is_null() {
                adopt(&mut dev, &r, None);
                outcomes.push("issued".to_string());
            } else {
                outcomes.push(refusal(&r).to_string());
            }
        }
        let issued = outcomes.iter().filter(|o| *o == "issued").count();
        assert_eq!(issued, 5, "{outcomes:?}");
        assert!(
            outcomes[5..].iter().all(|o| o == "rate_limited"),
            "{outcomes:?}"
        );
        // Another device is not affected.
        let other = register(&server, "RL-2", "m").await;
        let r = ask(&server, &broker, &other, None, false).await;
        assert_eq!(r["outcome"], "enrolled", "{r}");
    }
}

#[tokio::test]
async fn an_expired_ldevid_renews_only_within_the_grace() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let broker = server.token("broker", None).await;
        let (status, _) = put_model(
            &server,
            "short",
            json!({"ldevid_validity": "1s", "renewal_grace": "0"}),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let mut dev = register(&server, "EX-1", "short").await;
        let r = ask(&server, &broker, &dev, None, false).await;
        adopt(&mut dev, &r, None);
        tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
        let r = ask(&server, &broker, &dev, None, false).await;
        assert_eq!(refusal(&r), "certificate_not_accepted", "{r}");
        assert!(r["detail"].as_str().unwrap().contains("expired"), "{r}");
        // With a grace, the same expired LDevID renews.
        let (status, _) = put_model(
            &server,
            "short",
            json!({"ldevid_validity": "1s", "renewal_grace": "1h"}),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let r = ask(&server, &broker, &dev, None, false).await;
        assert_eq!(r["outcome"], "renewed", "{r}");
    }
}

/// Issuances that arrive together share a transaction; each keeps its own rules and result:
/// one device asking eight times at once gets exactly the rate limit's five, a revoked device's
/// request in the same burst is refused, and every other device gets its own certificate.
#[tokio::test]
async fn requests_at_once_keep_their_own_rules_and_results() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let broker = server.token("broker", None).await;
        let busy = register(&server, "AT-ONCE-BUSY", "m").await;
        let revoked = register(&server, "AT-ONCE-REVOKED", "m").await;
        let (status, v) = server
            .admin_post(
                &format!("/v1/devices/{}/revoke", revoked.id),
                &json!({"reason": "keyCompromise"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let mut others = Vec::new();
        for i in 0..12 {
            others.push(register(&server, &format!("AT-ONCE-{i}"), "m").await);
        }
        let busy_answers =
            futures::future::join_all((0..8).map(|_| ask(&server, &broker, &busy, None, false)));
        let other_answers =
            futures::future::join_all(others.iter().map(|d| ask(&server, &broker, d, None, false)));
        let (busy_answers, other_answers, revoked_answer): (Vec<Value>, Vec<Value>, Value) = tokio::join!(
            busy_answers,
            other_answers,
            ask(&server, &broker, &revoked, None, false)
        );
        let seen: Vec<&str> = busy_answers.iter().map(refusal).collect();
        assert_eq!(
            seen.iter().filter(|r| **r == "(issued)").count(),
            5,
            "{seen:?}"
        );
        assert!(
            seen.iter()
                .all(|r| *r == "(issued)" || *r == "rate_limited"),
            "{seen:?}"
        );
        assert_eq!(
            refusal(&revoked_answer),
            "device_revoked",
            "{revoked_answer}"
        );
        let mut serials = std::collections::HashSet::new();
        for (d, r) in others.iter().zip(&other_answers) {
            assert_eq!(r["outcome"], "enrolled", "{}: {r}", d.id);
            assert!(
                serials.insert(r["serial"].as_str().unwrap().to_string()),
                "{r}"
            );
        }
        // What was answered is what was stored: the busy device has its five LDevIDs.
        let (status, v) = server.admin_get(&format!("/v1/devices/{}", busy.id)).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let stored = v["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["profile"] == "ldevid")
            .count();
        assert_eq!(stored, 5, "{v}");
    }
}
