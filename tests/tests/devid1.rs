//! DEVID-1 through real Mosquitto with the plugin and a real devid-server.

use std::time::Duration;

use devid_e2e::devid_device::mqtt::ReasonCode;
use devid_e2e::devid_device::Event;
use devid_e2e::*;

const NAME: &str = "mqtt.test.local";

async fn setup() -> (Service, Broker) {
    let service = Service::start().await;
    let identity = service.enroll_broker(NAME).await;
    let broker = Broker::start(BrokerSettings::new(&service, identity));
    (service, broker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_device_connects_publishes_own_topic_and_is_refused_foreign_ones() {
    let (service, broker) = setup().await;
    let root = service.root_der();
    let a = service.register_device("hw-a").await;
    let b = service.register_device("hw-b").await;

    let mut dev_a = connect(&broker.addr(), &a, &root, None, Tamper::None)
        .await
        .expect("device a admitted");
    let session = dev_a.session.as_ref().expect("DEVID-1 session");
    assert_eq!(session.keys.session_id.len(), 16);
    let dev_b = connect(&broker.addr(), &b, &root, None, Tamper::None)
        .await
        .expect("device b admitted");

    let own = format!("devices/{}/cmd", a.client_id);
    assert_eq!(dev_a.subscribe(&own).await, ReasonCode::GRANTED_QOS_1);
    assert_eq!(
        dev_a.subscribe("broadcast/#").await,
        ReasonCode::GRANTED_QOS_1
    );
    // Foreign and wider filters: SUBACK 0x87.
    assert_eq!(
        dev_a.subscribe(&format!("devices/{}/#", b.client_id)).await,
        ReasonCode::NOT_AUTHORIZED
    );
    assert_eq!(dev_a.subscribe("#").await, ReasonCode::NOT_AUTHORIZED);
    assert_eq!(
        dev_a.subscribe("devices/+/cmd").await,
        ReasonCode::NOT_AUTHORIZED
    );

    // Own topic: PUBACK 0x00. Foreign topic: PUBACK 0x87.
    // 0x00, or 0x10 "no matching subscribers": both accepted.
    let r = dev_a
        .publish(&format!("devices/{}/temp", a.client_id), b"21.5")
        .await;
    assert!(r.is_success(), "{r:?}");
    assert_eq!(
        dev_b
            .publish(&format!("devices/{}/cmd", a.client_id), b"reboot")
            .await,
        ReasonCode::NOT_AUTHORIZED
    );
    assert_eq!(
        dev_b.publish("broadcast/all", b"x").await,
        ReasonCode::NOT_AUTHORIZED
    );
    let r = dev_b
        .publish(&format!("devices/{}/temp", b.client_id), b"1")
        .await;
    assert!(r.is_success(), "{r:?}");

    // Delivery: a's own publish comes back on its subscription; b's refused one never does.
    assert_eq!(dev_a.publish(&own, b"hello").await, ReasonCode::SUCCESS);
    match dev_a.event(Duration::from_secs(5)).await {
        Some(Event::Message(m)) => {
            assert_eq!(m.topic, own);
            assert_eq!(m.payload, b"hello");
        }
        other => panic!("expected the message, got {other:?}"),
    }
    assert!(dev_a.event(Duration::from_millis(500)).await.is_none());
    assert!(broker
        .log()
        .contains(&format!("admitted client {}", a.client_id)));
}

/// A device that must still be served after each refusal.
async fn still_serving(broker: &Broker, good: &DeviceCreds, root: &[u8], after: &str) {
    let dev = connect(&broker.addr(), good, root, None, Tamper::None)
        .await
        .unwrap_or_else(|e| panic!("good device refused after {after}: {e}"));
    let r = dev
        .publish(&format!("devices/{}/alive", good.client_id), b"1")
        .await;
    assert!(r.is_success(), "after {after}: {r:?}");
    dev.client.disconnect().await.expect("disconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_authentication_is_refused_and_the_broker_keeps_serving() {
    let (service, mut broker) = setup().await;
    let root = service.root_der();
    let good = service.register_device("hw-good").await;
    let other = service.register_device("hw-other").await;
    let now = time::OffsetDateTime::now_utc();
    let day = time::Duration::days(1);

    // (name, device, CONNECT ClientID, tamper)
    let foreign_ca = TestCa::new();
    let foreign = foreign_ca.device(&good.client_id, now - day, now + day);
    let expired = issue_with_service_ca(&service, &new_client_id("exp"), now - day * 10, now - day);
    let not_yet = issue_with_service_ca(&service, &new_client_id("nyv"), now + day, now + day * 10);
    let mut hello_truncated = Vec::new();
    {
        // A real ClientHello cut short by one byte.
        let mut a = authenticator(&good, &root, Tamper::None);
        use devid_e2e::devid_device::connection::Authenticator;
        let h = a.start().expect("hello");
        hello_truncated.extend_from_slice(&h[..h.len() - 1]);
    }
    let cases: Vec<(&str, DeviceCreds, Option<String>, Tamper)> = vec![
        (
            "wrong ClientID",
            good.clone(),
            Some(other.client_id.clone()),
            Tamper::None,
        ),
        (
            "ClientID with wildcard",
            good.clone(),
            Some("dev/#".into()),
            Tamper::None,
        ),
        ("certificate from another CA", foreign, None, Tamper::None),
        ("expired certificate", expired, None, Tamper::None),
        ("certificate not yet valid", not_yet, None, Tamper::None),
        (
            "wrong signature",
            good.clone(),
            None,
            Tamper::FlipFinish(10),
        ),
        ("wrong mac", good.clone(), None, Tamper::FlipFinish(80)),
        (
            "trailing byte in ClientFinish",
            good.clone(),
            None,
            Tamper::Finish(vec![3; 98]),
        ),
        (
            "garbage ClientHello",
            good.clone(),
            None,
            Tamper::Hello(b"\x01\x01garbage".to_vec()),
        ),
        (
            "empty ClientHello",
            good.clone(),
            None,
            Tamper::Hello(Vec::new()),
        ),
        (
            "truncated ClientHello",
            good.clone(),
            None,
            Tamper::Hello(hello_truncated),
        ),
        (
            "ServerHello type as ClientHello",
            good.clone(),
            None,
            Tamper::Hello(vec![2; 200]),
        ),
    ];
    for (name, creds, cid, tamper) in cases {
        let r = connect(&broker.addr(), &creds, &root, cid.as_deref(), tamper).await;
        assert_eq!(refused_with(r), ReasonCode::NOT_AUTHORIZED, "{name}");
        assert!(broker.running(), "broker died after {name}");
        still_serving(&broker, &good, &root, name).await;
    }
    // An unknown protocol version is answered 0x8C (bad authentication method).
    let r = connect(
        &broker.addr(),
        &good,
        &root,
        None,
        Tamper::Hello(vec![1, 2, 0, 0]),
    )
    .await;
    assert_eq!(refused_with(r), ReasonCode::BAD_AUTHENTICATION_METHOD);
    still_serving(&broker, &good, &root, "unknown version").await;
    let log = broker.log();
    let refusals = log
        .lines()
        .filter(|l| l.contains("devid: refused client"))
        .count();
    assert_eq!(refusals, 13, "{log}");
    eprintln!(
        "{}",
        log.lines()
            .filter(|l| l.contains("devid: refused"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    broker.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_and_suspended_devices_are_refused_and_kicked_within_a_second() {
    let (service, broker) = setup().await;
    let root = service.root_der();
    let victim = service.register_device("hw-victim").await;
    let held = service.register_device("hw-held").await;
    let bystander = service.register_device("hw-bystander").await;

    let mut v = connect(&broker.addr(), &victim, &root, None, Tamper::None)
        .await
        .expect("victim admitted before revocation");
    let mut h = connect(&broker.addr(), &held, &root, None, Tamper::None)
        .await
        .expect("held admitted before suspension");
    let mut by = connect(&broker.addr(), &bystander, &root, None, Tamper::None)
        .await
        .expect("bystander");

    // Revoke: DISCONNECT 0x98 within 1 s of the revoke call returning.
    service.revoke(&victim.client_id).await;
    let t0 = std::time::Instant::now();
    match v.event(Duration::from_secs(1)).await {
        Some(Event::Disconnected { reason, .. }) => {
            assert_eq!(reason, ReasonCode::ADMINISTRATIVE_ACTION)
        }
        other => panic!("revoked device not disconnected within 1 s: {other:?}"),
    }
    eprintln!("revocation to DISCONNECT: {:?}", t0.elapsed());
    let r = connect(&broker.addr(), &victim, &root, None, Tamper::None).await;
    assert_eq!(
        refused_with(r),
        ReasonCode::NOT_AUTHORIZED,
        "revoked reconnect"
    );

    // Suspend: kicked and refused; resume: admitted again.
    service.suspend(&held.client_id).await;
    match h.event(Duration::from_secs(1)).await {
        Some(Event::Disconnected { reason, .. }) => {
            assert_eq!(reason, ReasonCode::ADMINISTRATIVE_ACTION)
        }
        other => panic!("suspended device not disconnected within 1 s: {other:?}"),
    }
    let r = connect(&broker.addr(), &held, &root, None, Tamper::None).await;
    assert_eq!(
        refused_with(r),
        ReasonCode::NOT_AUTHORIZED,
        "suspended reconnect"
    );
    service.resume(&held.client_id).await;
    let mut ok = false;
    for _ in 0..40 {
        if connect(&broker.addr(), &held, &root, None, Tamper::None)
            .await
            .is_ok()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "resumed device still refused after 2 s");

    // The bystander was never touched.
    assert!(by.event(Duration::from_millis(200)).await.is_none());
    let r = by
        .publish(&format!("devices/{}/x", bystander.client_id), b"1")
        .await;
    assert!(r.is_success());
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_id_takeover_keeps_the_new_connection_authorized() {
    // State is keyed by connection: on a takeover the old connection's DISCONNECT fires after
    // the new one authenticated, and must not strip the new one's rights.
    let (service, mut broker) = setup().await;
    let root = service.root_der();
    let dev = service.register_device("hw-takeover").await;
    let topic = format!("devices/{}/t", dev.client_id);
    let mut old = connect(&broker.addr(), &dev, &root, None, Tamper::None)
        .await
        .expect("first connection");
    let new = connect(&broker.addr(), &dev, &root, None, Tamper::None)
        .await
        .expect("second connection");
    // Mosquitto 2.0.11 closes the old connection (DISCONNECT 0x8E or just the socket).
    match old.event(Duration::from_secs(2)).await {
        Some(Event::Disconnected { reason, .. }) => assert_eq!(reason, ReasonCode(0x8E)),
        Some(Event::Closed(_)) => {}
        other => panic!("old connection not taken over: {other:?}"),
    }
    let r = new.publish(&topic, b"1").await;
    assert!(r.is_success(), "new connection lost its rights: {r:?}");
    assert_eq!(new.subscribe(&topic).await, ReasonCode::GRANTED_QOS_1);
    // Revoking kicks the live connection (a kick re-enters DISCONNECT inside the call).
    let mut new = new;
    service.revoke(&dev.client_id).await;
    match new.event(Duration::from_secs(1)).await {
        Some(Event::Disconnected { reason, .. }) => {
            assert_eq!(reason, ReasonCode::ADMINISTRATIVE_ACTION)
        }
        other => panic!("not kicked: {other:?}"),
    }
    assert!(broker.running());
    // The plugin's cleanup stops and joins its thread: the broker exits promptly on SIGTERM.
    let t = std::time::Instant::now();
    broker.stop();
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "slow shutdown: {:?}",
        t.elapsed()
    );
    assert!(broker.log().contains("terminating"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_slower_than_auth_timeout_is_closed() {
    let service = Service::start().await;
    let identity = service.enroll_broker(NAME).await;
    let mut settings = BrokerSettings::new(&service, identity);
    settings.extra.push("plugin_opt_auth_timeout 1".into());
    let broker = Broker::start(settings);
    let root = service.root_der();
    let dev = service.register_device("hw-slow").await;
    let r = connect(
        &broker.addr(),
        &dev,
        &root,
        None,
        Tamper::DelayFinish(Duration::from_millis(2200)),
    )
    .await;
    // The broker closes the connection at the timeout (DISCONNECT 0x98), before the late
    // ClientFinish; depending on timing the device sees that DISCONNECT or a reset socket.
    match r {
        Ok(d) => panic!("{} was admitted", d.client_id),
        Err(e) => {
            if let Some(code) = e.reason_code() {
                assert_eq!(code, ReasonCode::ADMINISTRATIVE_ACTION, "{e}");
            }
        }
    }
    assert!(broker.log().contains("timed out"), "{}", broker.log());
    connect(&broker.addr(), &dev, &root, None, Tamper::None)
        .await
        .expect("a prompt handshake still works");
}

/// A tiny deterministic generator (xorshift64*), so a failure can be replayed.
struct Xs(u64);
impl Xs {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = (self.next() as usize) % (max + 1);
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_mutated_authentication_data_never_hurts_the_broker() {
    let (service, mut broker) = setup().await;
    let root = service.root_der();
    let good = service.register_device("hw-fuzz").await;
    // A real ClientHello to mutate.
    let real = {
        use devid_e2e::devid_device::connection::Authenticator;
        authenticator(&good, &root, Tamper::None)
            .start()
            .expect("hello")
    };
    let mut rng = Xs(0x5eed_1234_abcd_0001);
    for i in 0..150 {
        let tamper = match i % 3 {
            0 => Tamper::Hello(rng.bytes(700)),
            1 => {
                let mut h = real.clone();
                for _ in 0..1 + rng.next() % 4 {
                    let at = (rng.next() as usize) % h.len();
                    h[at] ^= 1 << (rng.next() % 8);
                }
                Tamper::Hello(h)
            }
            _ => Tamper::Finish(rng.bytes(200)),
        };
        let r = connect(&broker.addr(), &good, &root, None, tamper.clone()).await;
        match r {
            // A mutation inside the nonce or the key share may still be a valid hello; then
            // the device side itself fails on the transcript (or the handshake completes).
            Ok(_) => assert!(
                matches!(tamper, Tamper::Hello(_)),
                "case {i} admitted: {tamper:?}"
            ),
            Err(e) => assert!(
                e.reason_code().is_none_or(|c| !c.is_success()),
                "case {i}: {e}"
            ),
        }
    }
    assert!(broker.running(), "broker died");
    still_serving(&broker, &good, &root, "random input").await;
    broker.stop();
}
