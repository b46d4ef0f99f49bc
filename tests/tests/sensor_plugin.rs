//! Sensors behind a gateway (DEVID-S1) through the real broker and plugin: a gateway
//! (devid-device's client) publishes readings with the properties the `devid-sensor` crate
//! computes, a subscriber sees what the plugin let through. The plugin talks to the real
//! devid-server (devices, feed, statuses) through [`ServiceProxy`], which plays the sensor keys
//! route and records the event batches, so the plugin's side is tested on its own: refusals,
//! revocation through the feed, refetch on `updated`, reports, persisted counters, and the
//! window a second broker starts from.

use std::time::{Duration, Instant};

use devid_e2e::devid_device::mqtt::{QoS, ReasonCode};
use devid_e2e::devid_device::{Event, Message, OutgoingMessage};
use devid_e2e::*;
use serde_json::json;

const NAME: &str = "mqtt.test.local";

/// A sensor: its ClientID (a device registered in the service, so the feed can revoke it) and
/// the keys derived from a K made here.
struct Sensor {
    id: String,
    k_mac: [u8; 32],
    k_enc: [u8; 32],
}

impl Sensor {
    async fn register(service: &Service, serial: &str) -> Sensor {
        let id = service.register_device(serial).await.client_id;
        let k: [u8; 32] = ring_random();
        let d = devid_sensor::derive(&k, id.as_bytes()).expect("derive");
        Sensor {
            id,
            k_mac: d.mac,
            k_enc: d.enc,
        }
    }

    fn entry(&self) -> SensorEntry {
        SensorEntry {
            client_id: self.id.clone(),
            status: "active".into(),
            k_mac: self.k_mac,
            k_enc: self.k_enc,
            publish: vec!["devices/%c/#".into()],
        }
    }
    fn topic(&self, channel: &str) -> String {
        format!("devices/{}/{channel}", self.id)
    }

    /// The user properties of a MACed reading.
    fn mac(&self, seq: u64, topic: &str, payload: &[u8]) -> Vec<(String, String)> {
        let tag = devid_sensor::publish_mac(
            &self.k_mac,
            self.id.as_bytes(),
            seq,
            topic.as_bytes(),
            payload,
        )
        .expect("mac");
        let text = devid_sensor::encode_b64url(&tag);
        vec![
            ("devid-sensor".into(), self.id.clone()),
            ("devid-sensor-seq".into(), seq.to_string()),
            (
                "devid-sensor-mac".into(),
                String::from_utf8(text.to_vec()).expect("ascii"),
            ),
        ]
    }

    /// A sealed reading and its user properties.
    fn seal(&self, seq: u64, topic: &str, reading: &[u8]) -> (Vec<u8>, Vec<(String, String)>) {
        let mut buf = reading.to_vec();
        buf.resize(reading.len() + devid_sensor::TAG_LEN, 0);
        let n = devid_sensor::seal_in_place(
            &self.k_enc,
            self.id.as_bytes(),
            seq,
            topic.as_bytes(),
            &mut buf,
            reading.len(),
        )
        .expect("seal");
        buf.truncate(n);
        let props = vec![
            ("devid-sensor".into(), self.id.clone()),
            ("devid-sensor-seq".into(), seq.to_string()),
            ("devid-sensor-seal".into(), "1".into()),
        ];
        (buf, props)
    }
}

/// Publishes with these user properties: SUCCESS for any success code (0x10 "no matching
/// subscribers" included) or for QoS 0, else the refusal's reason code.
async fn publish(
    d: &Device,
    topic: &str,
    payload: &[u8],
    props: Vec<(String, String)>,
    qos: QoS,
) -> ReasonCode {
    let mut msg = OutgoingMessage::new(topic, payload.to_vec(), qos);
    msg.user_properties = props;
    match d.client.publish(msg).await.expect("publish") {
        Some(ack) if !ack.reason.is_success() => ack.reason,
        _ => ReasonCode::SUCCESS,
    }
}

async fn next_message(d: &mut Device, within: Duration) -> Option<Message> {
    match d.event(within).await {
        Some(Event::Message(m)) => Some(m),
        None => None,
        Some(other) => panic!("unexpected event: {other:?}"),
    }
}

/// Waits until the broker log says the gateway's sensor keys arrived (`n` sensors).
async fn keys_installed(broker: &Broker, gateway: &str, n: usize, since: usize) {
    let line = format!("devid: sensor keys of {gateway}: {n} sensors");
    wait_until(
        &format!("sensor keys of {gateway}"),
        Duration::from_secs(10),
        || {
            let log = broker.log();
            let found = log.get(since..).unwrap_or(&log).contains(&line);
            async move { found }
        },
    )
    .await;
}

/// A subscriber to `devices/#` (its policy set through the API).
async fn subscriber(service: &Service, broker: &Broker, root: &[u8]) -> Device {
    let sub = service.register_device("hw-sub").await;
    let (s, v) = service
        .call(
            "PUT",
            &format!("/v1/devices/{}/policy", sub.client_id),
            Some(json!({"topics": {"publish": [], "subscribe": ["devices/#"]}})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let d = connect(&broker.addr(), &sub, root, None, Tamper::None)
        .await
        .expect("subscriber admitted");
    // Its policy arrives with the status fetch.
    let mut granted = false;
    for _ in 0..50 {
        if d.subscribe("devices/#").await == ReasonCode::GRANTED_QOS_1 {
            granted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(granted, "subscriber policy not applied");
    d
}

fn ring_random() -> [u8; 32] {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut b = [0u8; 32];
    SystemRandom::new().fill(&mut b).expect("rng");
    b
}

/// A service, the proxy in front of it, and a broker whose plugin talks to the proxy.
async fn setup() -> (Service, ServiceProxy, BrokerSettings, Vec<u8>) {
    let service = Service::start().await;
    let proxy = ServiceProxy::start(service.url()).await;
    let identity = service.enroll_broker(NAME).await;
    let mut settings = BrokerSettings::new(&service, identity);
    settings.service_url = proxy.url();
    let root = service.root_der();
    (service, proxy, settings, root)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_relays_verified_readings_and_bad_ones_are_refused() {
    let (service, proxy, settings, root) = setup().await;
    let broker = Broker::start(settings);
    let gw1 = service.register_device("hw-gw1").await;
    let gw2 = service.register_device("hw-gw2").await;
    let s1 = Sensor::register(&service, "hw-s1").await;
    let s2 = Sensor::register(&service, "hw-s2").await;
    let s3 = Sensor::register(&service, "hw-s3").await;
    proxy.set_sensors(&gw1.client_id, vec![s1.entry(), s2.entry()]);
    proxy.set_sensors(&gw2.client_id, vec![s3.entry()]);
    let mut sub = subscriber(&service, &broker, &root).await;

    let from = broker.log().len();
    let g = connect(&broker.addr(), &gw1, &root, None, Tamper::None)
        .await
        .expect("gateway admitted");
    keys_installed(&broker, &gw1.client_id, 2, from).await;

    // A MACed reading, QoS 1: delivered with devid-verified = sensor, devid-via = gateway, and
    // none of the devid-sensor* properties.
    let t1 = s1.topic("temp");
    assert_eq!(
        publish(&g, &t1, b"21.5", s1.mac(1, &t1, b"21.5"), QoS::AtLeastOnce).await,
        ReasonCode::SUCCESS
    );
    let m = next_message(&mut sub, Duration::from_secs(5))
        .await
        .expect("reading delivered");
    assert_eq!(
        (m.topic.as_str(), m.payload.as_slice()),
        (t1.as_str(), &b"21.5"[..])
    );
    assert_eq!(
        m.user_properties,
        vec![
            ("devid-verified".to_string(), s1.id.clone()),
            ("devid-via".to_string(), gw1.client_id.clone()),
        ]
    );
    // QoS 0 and QoS 2 as well.
    assert_eq!(
        publish(&g, &t1, b"22", s1.mac(2, &t1, b"22"), QoS::AtMostOnce).await,
        ReasonCode::SUCCESS
    );
    let m = next_message(&mut sub, Duration::from_secs(5))
        .await
        .expect("QoS 0 reading delivered");
    assert_eq!(m.payload, b"22");
    assert_eq!(
        publish(&g, &t1, b"23", s1.mac(3, &t1, b"23"), QoS::ExactlyOnce).await,
        ReasonCode::SUCCESS
    );
    let m = next_message(&mut sub, Duration::from_secs(5))
        .await
        .expect("QoS 2 reading delivered");
    assert_eq!(m.payload, b"23");
    // A sealed reading: the subscriber gets the plaintext.
    let t2 = s2.topic("secret");
    let (sealed, props) = s2.seal(1, &t2, b"open sesame");
    assert_ne!(sealed, b"open sesame");
    assert_eq!(
        publish(&g, &t2, &sealed, props, QoS::AtLeastOnce).await,
        ReasonCode::SUCCESS
    );
    let m = next_message(&mut sub, Duration::from_secs(5))
        .await
        .expect("sealed reading delivered");
    assert_eq!(m.payload, b"open sesame");
    assert_eq!(
        m.user_properties,
        vec![
            ("devid-verified".to_string(), s2.id.clone()),
            ("devid-via".to_string(), gw1.client_id.clone()),
        ]
    );

    // Refused, 0x87, never delivered: forged (the payload changed after the MAC), replayed, a
    // sensor attached to the other gateway, a topic outside the sensor's policy, a flipped bit
    // in a sealed reading. QoS 2 is refused in the PUBREC.
    let (mut bad_seal, seal_props) = s2.seal(2, &t2, b"x");
    bad_seal[0] ^= 1;
    let refused = [
        (
            "forged",
            t1.clone(),
            s1.mac(4, &t1, b"20"),
            b"99".to_vec(),
            QoS::AtLeastOnce,
        ),
        (
            "replayed",
            t1.clone(),
            s1.mac(1, &t1, b"21.5"),
            b"21.5".to_vec(),
            QoS::AtLeastOnce,
        ),
        // The ACL (which sees no properties) refuses this one: s3's topics are not among the
        // gateway's sensors'.
        (
            "other gateway's sensor",
            s3.topic("t"),
            s3.mac(1, &s3.topic("t"), b"1"),
            b"1".to_vec(),
            QoS::AtLeastOnce,
        ),
        // On an attached sensor's topic the ACL lets it through and the reading is refused.
        (
            "other gateway's sensor on s1's topic",
            t1.clone(),
            s3.mac(2, &t1, b"1"),
            b"1".to_vec(),
            QoS::AtLeastOnce,
        ),
        (
            "another sensor's topic",
            s2.topic("t"),
            s1.mac(5, &s2.topic("t"), b"1"),
            b"1".to_vec(),
            QoS::ExactlyOnce,
        ),
        (
            "bad seal",
            t2.clone(),
            seal_props,
            bad_seal,
            QoS::AtLeastOnce,
        ),
    ];
    for (what, topic, props, payload, qos) in refused {
        assert_eq!(
            publish(&g, &topic, &payload, props, qos).await,
            ReasonCode::NOT_AUTHORIZED,
            "{what}"
        );
    }
    // Forged at QoS 0: dropped.
    assert_eq!(
        publish(&g, &t1, b"99", s1.mac(6, &t1, b"20"), QoS::AtMostOnce).await,
        ReasonCode::SUCCESS
    );
    assert!(next_message(&mut sub, Duration::from_millis(300))
        .await
        .is_none());
    // The gateway's own message on a sensor's topic is refused; on its own topic a forged
    // devid-via / devid-verified is stripped.
    assert_eq!(
        publish(&g, &t1, b"mine", vec![], QoS::AtLeastOnce).await,
        ReasonCode::NOT_AUTHORIZED
    );
    let own = format!("devices/{}/status", gw1.client_id);
    assert_eq!(
        publish(
            &g,
            &own,
            b"ok",
            vec![
                ("devid-via".into(), "someone".into()),
                ("devid-verified".into(), s1.id.clone()),
                ("app".into(), "kept".into()),
            ],
            QoS::AtLeastOnce
        )
        .await,
        ReasonCode::SUCCESS
    );
    let m = next_message(&mut sub, Duration::from_secs(5))
        .await
        .expect("gateway's own message");
    assert_eq!(m.topic, own);
    assert_eq!(
        m.user_properties,
        vec![("app".to_string(), "kept".to_string())]
    );

    // Revoking a sensor in the service stops its readings within a second (the feed), at a
    // gateway that stays connected.
    service.revoke(&s2.id).await;
    let revoked_at = Instant::now();
    let t2b = s2.topic("t");
    let mut seq = 10;
    loop {
        seq += 1;
        let rc = publish(&g, &t2b, b"1", s2.mac(seq, &t2b, b"1"), QoS::AtLeastOnce).await;
        if rc == ReasonCode::NOT_AUTHORIZED {
            break;
        }
        let _ = next_message(&mut sub, Duration::from_millis(20)).await;
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "a revoked sensor's readings still accepted after 1 s"
        );
    }
    // s1 still passes through the same connection: no refusal disconnected the gateway.
    assert_eq!(
        publish(&g, &t1, b"24", s1.mac(7, &t1, b"24"), QoS::AtLeastOnce).await,
        ReasonCode::SUCCESS
    );
    assert!(next_message(&mut sub, Duration::from_secs(5))
        .await
        .is_some());
    let log = broker.log();
    for reason in [
        "bad_mac",
        "replayed",
        "not_attached",
        "topic_not_allowed",
        "bad_seal",
        "revoked",
    ] {
        assert!(
            log.contains(&format!("[{reason}]")),
            "no {reason} in the log:\n{log}"
        );
    }

    // The counts reach the service in the event batches, per sensor and gateway.
    let id = s1.id.clone();
    wait_until("s1's report", Duration::from_secs(5), || async {
        proxy
            .sensor_reports()
            .iter()
            .any(|r| r["client_id"] == id.as_str())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let reports = proxy.sensor_reports();
    let of = |sensor: &str, gateway: &str| {
        reports
            .iter()
            .filter(|r| r["client_id"] == sensor && r["gateway"] == gateway)
            .collect::<Vec<_>>()
    };
    let s1_reports = of(&s1.id, &gw1.client_id);
    let accepted: u64 = s1_reports
        .iter()
        .filter_map(|r| r["accepted"].as_u64())
        .sum();
    assert_eq!(accepted, 4, "{s1_reports:?}");
    let refused = |reason: &str| -> u64 {
        s1_reports
            .iter()
            .filter_map(|r| r["refused"][reason].as_u64())
            .sum()
    };
    assert_eq!(
        (
            refused("bad_mac"),
            refused("replayed"),
            refused("topic_not_allowed")
        ),
        (2, 1, 1)
    );
    assert_eq!(
        s1_reports
            .iter()
            .filter_map(|r| r["highest_seq"].as_u64())
            .max(),
        Some(7)
    );
    assert!(s1_reports.iter().any(|r| r["last_accepted_at"].is_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_persist_follow_the_sensor_to_another_broker_and_keys_follow_the_feed() {
    let (service, proxy, settings, root) = setup().await;
    let mut a = Broker::start(settings.clone());
    let b = Broker::start(settings);
    let gw = service.register_device("hw-gw").await;
    let gw2 = service.register_device("hw-gw2").await;
    let s1 = Sensor::register(&service, "hw-s1").await;
    proxy.set_sensors(&gw.client_id, vec![s1.entry()]);
    let t = s1.topic("t");

    let from = a.log().len();
    let g = connect(&a.addr(), &gw, &root, None, Tamper::None)
        .await
        .expect("gateway admitted at A");
    keys_installed(&a, &gw.client_id, 1, from).await;
    for seq in [5, 6] {
        assert_eq!(
            publish(&g, &t, b"v", s1.mac(seq, &t, b"v"), QoS::AtLeastOnce).await,
            ReasonCode::SUCCESS
        );
    }
    // Reported (so the service's seq_floor is 6) and persisted in A's state directory.
    wait_until("highest seq 6 reported", Duration::from_secs(5), || async {
        proxy
            .sensor_reports()
            .iter()
            .any(|r| r["client_id"] == s1.id.as_str() && r["highest_seq"] == 6)
    })
    .await;
    let file = a.state_dir().join("sensors.json");
    wait_until("counter persisted", Duration::from_secs(5), || async {
        std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|v| v[&s1.id] == 6)
    })
    .await;
    g.client.disconnect().await.expect("disconnect");

    // Broker B: the sensor's window starts at the service's seq_floor.
    let from = b.log().len();
    let g = connect(&b.addr(), &gw, &root, None, Tamper::None)
        .await
        .expect("gateway admitted at B");
    keys_installed(&b, &gw.client_id, 1, from).await;
    for seq in [6, 5] {
        assert_eq!(
            publish(&g, &t, b"v", s1.mac(seq, &t, b"v"), QoS::AtLeastOnce).await,
            ReasonCode::NOT_AUTHORIZED,
            "seq {seq} accepted at A replayed at B"
        );
    }
    assert_eq!(
        publish(&g, &t, b"v", s1.mac(7, &t, b"v"), QoS::AtLeastOnce).await,
        ReasonCode::SUCCESS
    );
    g.client.disconnect().await.expect("disconnect");

    // A restarted, with the service's floor back at 0: the window comes from A's own
    // persisted counter (6).
    let entry = s1.entry();
    wait_until("B's report", Duration::from_secs(5), || async {
        proxy
            .sensor_reports()
            .iter()
            .any(|r| r["client_id"] == s1.id.as_str() && r["highest_seq"] == 7)
    })
    .await;
    a.stop();
    proxy.forget_reports();
    a.restart();
    let from = a.log().len();
    let g = connect(&a.addr(), &gw, &root, None, Tamper::None)
        .await
        .expect("gateway admitted at A again");
    keys_installed(&a, &gw.client_id, 1, from).await;
    assert_eq!(
        publish(&g, &t, b"v", s1.mac(6, &t, b"v"), QoS::AtLeastOnce).await,
        ReasonCode::NOT_AUTHORIZED,
        "seq 6 accepted before the restart"
    );
    assert_eq!(
        publish(&g, &t, b"v", s1.mac(8, &t, b"v"), QoS::AtLeastOnce).await,
        ReasonCode::SUCCESS
    );

    // The sensor moves to gw2: an `updated` feed entry for gw (here: its policy changed) makes
    // the plugin fetch gw's keys again at once, and s1 is no longer attached to it.
    proxy.set_sensors(&gw.client_id, vec![]);
    proxy.set_sensors(&gw2.client_id, vec![entry]);
    let (s, v) = service
        .call(
            "PUT",
            &format!("/v1/devices/{}/policy", gw.client_id),
            Some(json!({"message_auth": "off"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let mut seq = 8;
    wait_until("s1 detached from gw", Duration::from_secs(3), || {
        seq += 1;
        let props = s1.mac(seq, &t, b"v");
        let g = &g;
        let t = t.clone();
        async move { publish(g, &t, b"v", props, QoS::AtLeastOnce).await == ReasonCode::NOT_AUTHORIZED }
    })
    .await;
    // Without sensors the gateway's ACL no longer extends to s1's topics.
    assert!(a.log().contains(&format!(
        "devid: sensor keys of {}: 0 sensors",
        gw.client_id
    )));
}
