//! A sensor's key replaced (`devid sensor rekey`) and its gateway's set changed with the CLI's
//! attach, end to end on each backend: the real devid-server, Mosquitto with the plugin, a
//! gateway (devid-device's client) relaying readings MACed with the sensor's keys. After the
//! re-key the broker refuses readings made with the old key as soon as the feed reaches it and
//! accepts the new key's; the sensor's replay window goes on from where it was.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use base64::Engine as _;
use devid_e2e::devid_device::mqtt::{QoS, ReasonCode};
use devid_e2e::devid_device::OutgoingMessage;
use devid_e2e::*;
use serde_json::json;

const NAME: &str = "mqtt.test.local";

fn devid(service: &Service, args: &[&str]) -> Output {
    devid_cli_ok(service, args)
}

fn key_of(text: &str) -> [u8; 32] {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim())
        .expect("base64url")
        .try_into()
        .expect("32 bytes")
}

/// A reading of `sensor` MACed with the keys derived from `k`, published by the gateway at
/// QoS 1: the PUBACK's reason (0x10 "no matching subscribers" counts as success).
async fn reading(gw: &Device, sensor: &str, k: &[u8; 32], seq: u64) -> ReasonCode {
    let keys = devid_sensor::derive(k, sensor.as_bytes()).expect("derive");
    let topic = format!("devices/{sensor}/temp");
    let payload = format!("{{\"seq\":{seq}}}").into_bytes();
    let tag = devid_sensor::publish_mac(
        &keys.mac,
        sensor.as_bytes(),
        seq,
        topic.as_bytes(),
        &payload,
    )
    .expect("mac");
    let mut msg = OutgoingMessage::new(topic, payload, QoS::AtLeastOnce);
    msg.user_properties = vec![
        ("devid-sensor".into(), sensor.into()),
        ("devid-sensor-seq".into(), seq.to_string()),
        (
            "devid-sensor-mac".into(),
            String::from_utf8(devid_sensor::encode_b64url(&tag).to_vec()).expect("ascii"),
        ),
    ];
    match gw.client.publish(msg).await.expect("publish") {
        Some(ack) if !ack.reason.is_success() => ack.reason,
        _ => ReasonCode::SUCCESS,
    }
}

async fn run(backend: Backend) {
    let service = Service::start_with(&backend, &[]).await;
    let identity = service.enroll_broker(NAME).await;
    let broker = Broker::start(BrokerSettings::new(&service, identity));
    let root = service.root_der();
    let dir = tempfile::tempdir().expect("tempdir");

    let gw = service.register_device("hw-rekey-gw").await;
    let (s, v) = service
        .call(
            "POST",
            "/v1/devices",
            Some(json!({"hardware_serial": "hw-rekey-sensor", "kind": "sensor"})),
        )
        .await;
    assert!(s == 200 || s == 201, "register sensor: {s} {v}");
    let sensor = v["client_id"].as_str().expect("client_id").to_string();
    let k1 = key_of(v["sensor_key"].as_str().expect("sensor_key"));
    // Attached with the CLI (POST .../sensors/attach).
    devid(&service, &["gateway", "attach", &gw.client_id, &sensor]);

    let d = connect(&broker.addr(), &gw, &root, None, Tamper::None)
        .await
        .expect("gateway admitted");
    // Until the broker has the gateway's sensor keys, a reading is refused.
    let mut seq = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        seq += 1;
        if reading(&d, &sensor, &k1, seq).await == ReasonCode::SUCCESS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first reading was never accepted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let out = devid(
        &service,
        &[
            "sensor",
            "rekey",
            &sensor,
            "--out",
            &dir.path().to_string_lossy(),
            "-o",
            "json",
        ],
    );
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(shown["client_id"], sensor.as_str(), "{shown}");
    let file = Path::new(shown["key_file"].as_str().expect("key_file")).to_path_buf();
    let mode = std::fs::metadata(&file)
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    let k2 = key_of(&std::fs::read_to_string(&file).expect("read key"));
    assert_ne!(k1, k2);

    // The old key's readings stop being accepted once the feed reaches the broker (about a
    // second); the new key's are accepted, and the replay window went on from where it was.
    let started = Instant::now();
    loop {
        seq += 1;
        let r = reading(&d, &sensor, &k1, seq).await;
        if r == ReasonCode::NOT_AUTHORIZED {
            break;
        }
        assert_eq!(r, ReasonCode::SUCCESS);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the old key still accepted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let accepted_before = seq - 1;
    seq += 1;
    assert_eq!(
        reading(&d, &sensor, &k2, seq).await,
        ReasonCode::SUCCESS,
        "{}: the new key",
        backend.name()
    );
    assert_eq!(
        reading(&d, &sensor, &k1, seq + 1).await,
        ReasonCode::NOT_AUTHORIZED,
        "the old key, later"
    );
    assert_eq!(
        reading(&d, &sensor, &k2, accepted_before).await,
        ReasonCode::NOT_AUTHORIZED,
        "a seq accepted under the old key is a replay under the new one"
    );
    let denied = format!("refused reading of sensor {sensor} via {}", gw.client_id);
    wait_until(
        "the old key's reading refused as bad_mac",
        Duration::from_secs(5),
        || {
            let found = broker
                .log()
                .lines()
                .any(|l| l.contains(&denied) && l.contains("[bad_mac]"));
            async move { found }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rekeyed_sensor_is_accepted_with_its_new_key_only() {
    for backend in backends() {
        run(backend).await;
    }
}
