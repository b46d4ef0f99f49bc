//! LDevIDs at the broker: `connect_with ldevid` refuses the IDevID on DEVID-1 and on mutual
//! TLS with its own refusal reason (log, event), and renewal over MQTT
//! (`$CONTROL/devid/renew/v1`) through the real plugin and service: renew, re-key with its
//! proof, refusals, the rate limit, and requests never reaching subscribers. Each on SQLite and
//! PostgreSQL.

use std::time::Duration;

use base64::Engine as _;
use devid_core::api::Registered;
use devid_core::ldevid::{is_ldevid, Refusal};
use devid_e2e::devid_device::mqtt::{QoS, ReasonCode, SubscriptionOptions};
use devid_e2e::devid_device::{renew_over_mqtt, renewal_request, Event, RenewError};
use devid_e2e::*;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use serde_json::json;

const NAME: &str = "mqtt.test.local";
const WAIT: Duration = Duration::from_secs(10);

async fn register(service: &Service, serial: &str, model: &str) -> DeviceCreds {
    let (s, v) = service
        .call(
            "POST",
            "/v1/devices",
            Some(json!({"hardware_serial": serial, "model": model, "generate_key": true})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let r: Registered = serde_json::from_value(v).expect("registered");
    DeviceCreds::from_registered(&r)
}

fn key_pair(pkcs8: &[u8]) -> EcdsaKeyPair {
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8, &SystemRandom::new())
        .expect("key")
}

fn new_pkcs8() -> Vec<u8> {
    EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
        .expect("key")
        .as_ref()
        .to_vec()
}

/// The device's credentials with a new certificate chain (leaf, issuing CA; the root left out)
/// and key.
fn with_chain(creds: &DeviceCreds, chain: &[Vec<u8>], key: Vec<u8>) -> DeviceCreds {
    DeviceCreds {
        client_id: creds.client_id.clone(),
        serial: String::new(),
        chain_der: chain[..chain.len() - 1].to_vec(),
        key_pkcs8_der: key,
    }
}

async fn auth_failures(service: &Service, kind: &str) -> u64 {
    let text = reqwest::get(format!("{}/metrics", service.url()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let needle = format!("devid_auth_failures_total{{refusal=\"{kind}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .map_or(0, |n| n.trim().parse().expect("count"))
}

async fn refuses_the_idevid(backend: Backend) {
    let service = Service::start_with(&backend, &[]).await;
    let identity = service.enroll_broker(NAME).await;
    let mut settings = BrokerSettings::new(&service, identity);
    settings.tls = true;
    let broker = Broker::start(settings);
    let root = service.root_der();
    let idevid = register(&service, "hw-cw-1", "cw").await;
    let other = register(&service, "hw-cw-2", "any-model").await;
    // Connected with its IDevID while the model admits any certificate.
    let mut live = connect(&broker.addr(), &idevid, &root, None, Tamper::None)
        .await
        .expect("admitted under connect_with any");
    assert!(live.event(Duration::from_millis(1200)).await.is_none());

    // The model now admits LDevIDs only: the change reaches the broker through the feed's
    // model-scope `updated` entry, and the live IDevID connection is ended.
    let (s, v) = service
        .call(
            "PUT",
            "/v1/models/cw",
            Some(json!({"connect_with": "ldevid"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    match live.event(WAIT).await {
        Some(Event::Disconnected { reason, .. }) => {
            assert_eq!(reason, ReasonCode::ADMINISTRATIVE_ACTION)
        }
        other => panic!("the IDevID connection was not ended: {other:?}"),
    }
    // Now the status is cached: refused at CONNECT.
    let again = connect(&broker.addr(), &idevid, &root, None, Tamper::None).await;
    assert_eq!(refused_with(again), ReasonCode::NOT_AUTHORIZED);
    // Mutual TLS with the IDevID: refused too.
    let tls = connect_tls(
        &format!("127.0.0.1:{}", broker.tls_port),
        NAME,
        &idevid,
        &root,
        None,
    )
    .await;
    assert_eq!(refused_with(tls), ReasonCode::NOT_AUTHORIZED);
    // Its own reason in the log and in the events the service counts.
    let (b, svc) = (&broker, &service);
    wait_until("the refusal in the broker log", WAIT, || async move {
        b.log()
            .contains("is an IDevID, not an LDevID [ldevid_required]")
    })
    .await;
    wait_until(
        "ldevid_required events at the service",
        WAIT,
        || async move { auth_failures(svc, "ldevid_required").await >= 2 },
    )
    .await;
    // A device of another model keeps connecting with its IDevID.
    let d = connect(&broker.addr(), &other, &root, None, Tamper::None)
        .await
        .expect("other model admitted");
    d.client.disconnect().await.expect("disconnect");

    // With an LDevID (enrolled on the strength of the IDevID): admitted on both paths.
    let key = key_pair(&idevid.key_pkcs8_der);
    let (csr, _) = renewal_request(&idevid.chain_der[0], &key, None).expect("csr");
    let (s, a) = service
        .call(
            "POST",
            "/v1/brokers/renewals",
            Some(
                json!({"client_id": idevid.client_id, "serial": idevid.serial,
                        "csr": base64_of(&csr)}),
            ),
        )
        .await;
    assert_eq!(s, 200, "{a}");
    let chain: Vec<Vec<u8>> = a["chain"]
        .as_array()
        .expect("chain")
        .iter()
        .map(|c| from_base64(c.as_str().expect("text")))
        .collect();
    assert_eq!(is_ldevid(&chain[0]), Some(true));
    let ldevid = with_chain(&idevid, &chain, idevid.key_pkcs8_der.clone());
    let mut d = connect(&broker.addr(), &ldevid, &root, None, Tamper::None)
        .await
        .expect("LDevID admitted");
    assert!(
        d.event(Duration::from_millis(1500)).await.is_none(),
        "kicked"
    );
    let published = d
        .publish(&format!("devices/{}/t", ldevid.client_id), b"1")
        .await;
    assert!(published.is_success(), "{published:?}");
    d.client.disconnect().await.expect("disconnect");
    let mut t = connect_tls(
        &format!("127.0.0.1:{}", broker.tls_port),
        NAME,
        &ldevid,
        &root,
        None,
    )
    .await
    .expect("LDevID admitted over mutual TLS");
    assert!(
        t.event(Duration::from_millis(1500)).await.is_none(),
        "kicked"
    );
}

fn base64_of(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn from_base64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64")
}

fn refusal_of(e: &RenewError) -> Option<Refusal> {
    match e {
        RenewError::Refused { refusal, .. } => *refusal,
        _ => None,
    }
}

async fn renewal_over_mqtt(backend: Backend) {
    let service = Service::start_with(&backend, &[]).await;
    let identity = service.enroll_broker(NAME).await;
    let broker = Broker::start(BrokerSettings::new(&service, identity));
    let root = service.root_der();
    let idevid = register(&service, "hw-rn-1", "rn").await;

    // A plain subscriber to '#' (and, if the broker let it, '$CONTROL/#').
    let watcher = register(&service, "hw-rn-w", "rn").await;
    let (s, v) = service
        .call(
            "PUT",
            &format!("/v1/devices/{}/policy", watcher.client_id),
            Some(json!({"topics": {"publish": [], "subscribe": ["#"]}})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let mut w = connect(&broker.addr(), &watcher, &root, None, Tamper::None)
        .await
        .expect("watcher");
    let wr = &w;
    wait_until("the watcher's policy", WAIT, || async move {
        wr.subscribe("#").await == ReasonCode::GRANTED_QOS_1
    })
    .await;
    let dollar = w
        .client
        .subscribe(vec![(
            "$CONTROL/#".to_string(),
            SubscriptionOptions::qos(QoS::AtLeastOnce),
        )])
        .await
        .expect("subscribe");
    assert!(!dollar[0].is_success(), "$CONTROL/# granted: {dollar:?}");

    // Enroll with the IDevID over MQTT (same key): an LDevID comes back.
    let d = connect(&broker.addr(), &idevid, &root, None, Tamper::None)
        .await
        .expect("device");
    let key = key_pair(&idevid.key_pkcs8_der);
    let (csr, proof) = renewal_request(&idevid.chain_der[0], &key, None).expect("request");
    assert!(proof.is_none());
    let chain = renew_over_mqtt(&d.client, csr, None, WAIT)
        .await
        .expect("enrolled over MQTT");
    assert_eq!(chain.len(), 3, "certificate, issuing CA, root");
    assert_eq!(is_ldevid(&chain[0]), Some(true));
    // Ordinary traffic does reach the subscriber (so what it does not see is meaningful).
    let control = format!("devices/{}/hello", idevid.client_id);
    assert!(d.publish(&control, b"1").await.is_success());
    d.client.disconnect().await.expect("disconnect");

    // Connected with the LDevID: renew (same key).
    let ldevid = with_chain(&idevid, &chain, idevid.key_pkcs8_der.clone());
    let d = connect(&broker.addr(), &ldevid, &root, None, Tamper::None)
        .await
        .expect("LDevID");
    let (csr, _) = renewal_request(&chain[0], &key, None).expect("request");
    let renewed = renew_over_mqtt(&d.client, csr, None, WAIT)
        .await
        .expect("renewed over MQTT");
    assert_ne!(renewed[0], chain[0]);

    // A new key without a proof, or with a proof by the new key itself: refused.
    let new_pkcs8 = new_pkcs8();
    let new_key = key_pair(&new_pkcs8);
    let (csr, proof) = renewal_request(&chain[0], &key, Some(&new_key)).expect("request");
    let e = renew_over_mqtt(&d.client, csr.clone(), None, WAIT)
        .await
        .expect_err("no proof");
    assert_eq!(refusal_of(&e), Some(Refusal::ProofInvalid), "{e}");
    let forged = devid_core::protocol::renewal::rekey_proof(&new_key, &csr, &SystemRandom::new())
        .expect("sig");
    let e = renew_over_mqtt(&d.client, csr.clone(), Some(forged), WAIT)
        .await
        .expect_err("proof by the new key");
    assert_eq!(refusal_of(&e), Some(Refusal::ProofInvalid), "{e}");
    // With the proof by the current key: re-keyed.
    let rekeyed = renew_over_mqtt(&d.client, csr, proof, WAIT)
        .await
        .expect("re-keyed over MQTT");
    let rekeyed_creds = with_chain(&idevid, &rekeyed, new_pkcs8);
    d.client.disconnect().await.expect("disconnect");
    let d = connect(&broker.addr(), &rekeyed_creds, &root, None, Tamper::None)
        .await
        .expect("the re-keyed LDevID connects");

    // Asking in a loop: refused once the device had its share.
    let mut outcomes = Vec::new();
    for _ in 0..6 {
        let (csr, _) = renewal_request(&rekeyed[0], &new_key, None).expect("request");
        match renew_over_mqtt(&d.client, csr, None, WAIT).await {
            Ok(_) => outcomes.push("issued".to_string()),
            Err(e) => outcomes.push(
                refusal_of(&e)
                    .map(|r| r.as_str().to_string())
                    .unwrap_or_else(|| e.to_string()),
            ),
        }
    }
    // Four issued before the loop (enroll, renew, re-key... and the rate counts them all).
    assert_eq!(
        outcomes.last().map(String::as_str),
        Some("rate_limited"),
        "{outcomes:?}"
    );
    assert!(
        outcomes.iter().filter(|o| *o == "issued").count() >= 1,
        "{outcomes:?}"
    );
    d.client.disconnect().await.expect("disconnect");

    // Suspended: no certificate (refused over MQTT, or the connection is ended first).
    let other = register(&service, "hw-rn-2", "rn").await;
    let d = connect(&broker.addr(), &other, &root, None, Tamper::None)
        .await
        .expect("device 2");
    service.suspend(&other.client_id).await;
    let okey = key_pair(&other.key_pkcs8_der);
    let (csr, _) = renewal_request(&other.chain_der[0], &okey, None).expect("request");
    match renew_over_mqtt(&d.client, csr, None, Duration::from_secs(3)).await {
        Ok(_) => panic!("a suspended device got a certificate"),
        Err(e) => assert!(
            matches!(
                refusal_of(&e),
                Some(Refusal::DeviceSuspended) | Some(Refusal::NotAuthorized)
            ) || matches!(e, RenewError::Client(_) | RenewError::Timeout(_)),
            "{e}"
        ),
    }
    assert_eq!(
        refused_with(connect(&broker.addr(), &other, &root, None, Tamper::None).await),
        ReasonCode::NOT_AUTHORIZED
    );
    // Revoked: never again (the service's answer, asked directly as a broker would).
    service.resume(&other.client_id).await;
    service.revoke(&other.client_id).await;
    let (csr, _) = renewal_request(&other.chain_der[0], &okey, None).expect("request");
    let (s, a) = service
        .call(
            "POST",
            "/v1/brokers/renewals",
            Some(json!({"client_id": other.client_id, "serial": other.serial,
                        "csr": base64_of(&csr)})),
        )
        .await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["refusal"], "device_revoked", "{a}");

    // The subscriber to '#' never saw a request or a reply.
    let mut seen = Vec::new();
    while let Some(ev) = w.event(Duration::from_millis(300)).await {
        if let Event::Message(m) = ev {
            seen.push(m.topic);
        }
    }
    assert!(
        seen.contains(&control),
        "the subscriber saw nothing: {seen:?}"
    );
    assert!(
        seen.iter().all(|t| !t.starts_with("$CONTROL")),
        "the subscriber saw {seen:?}"
    );
    assert!(
        broker.log().contains("devid: renewal for"),
        "{}",
        broker.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_with_ldevid_refuses_the_idevid_on_devid1_and_mutual_tls() {
    for backend in backends() {
        refuses_the_idevid(backend).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_over_mqtt_renews_rekeys_refuses_and_never_reaches_subscribers() {
    for backend in backends() {
        renewal_over_mqtt(backend).await;
    }
}
