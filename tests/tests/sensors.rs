//! Sensors behind a gateway (DEVID-S1) end to end: a real devid-server, Mosquitto with the
//! plugin, one `devid-agent gateway` reading a pseudo-terminal, two `devid-agent sensor`
//! simulators writing frames to it, and a subscriber. Readings arrive with `devid-verified` and
//! `devid-via`; a forged reading, a replayed one, one of a sensor attached to another gateway
//! (counted for that sensor as `not_attached`) and one of a revoked sensor are refused, and the
//! gateway stays connected throughout.
//!
//! Sensors are registered with `"kind": "sensor"` (their `sensor_key` becomes the simulator's
//! key file) and attached through `PUT /v1/devices/{gateway}/sensors`; the broker fetches their
//! derived keys from devid-server.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use devid_device::link::{LinkSpec, LinkWriter};
use devid_device::mqtt::ReasonCode;
use devid_device::Event;
use devid_e2e::*;
use serde_json::{json, Value};

const NAME: &str = "mqtt.test.local";

/// `devid-agent gateway` as a child process, its JSON lines read on a thread; killed (by its
/// PID) when dropped.
struct Gateway {
    child: Child,
    lines: mpsc::Receiver<Value>,
}

impl Gateway {
    fn start(dir: &Path, broker: &str, pty: &Path) -> Gateway {
        let mut child = Command::new(artifact("devid-agent"))
            .arg("gateway")
            .args([
                "--broker",
                broker,
                "--broker-name",
                NAME,
                "--json",
                "--qos",
                "1",
            ])
            .arg("--cert")
            .arg(dir.join("gw.crt"))
            .arg("--key")
            .arg(dir.join("gw.key"))
            .arg("--root")
            .arg(dir.join("root.pem"))
            .arg("--pty")
            .arg(pty)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn devid-agent gateway");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let v = serde_json::from_str(&line).unwrap_or_else(|_| json!({"text": line}));
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        Gateway { child, lines }
    }

    /// The next line with this `event`, skipping others (which are printed).
    fn next(&self, event: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {event:?} line from the gateway within 20 s"));
            if v["event"] == event {
                return v;
            }
            eprintln!("gateway: {v}");
        }
    }

    /// The PUBACK reason of the relayed reading `seq` of `sensor`.
    fn relayed(&self, sensor: &str, seq: u64) -> u8 {
        loop {
            let v = self.next("relayed");
            if v["sensor"] == sensor && v["seq"] == seq {
                return v["reason"].as_u64().expect("QoS 1 has a reason") as u8;
            }
            eprintln!("gateway: {v}");
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A sensor registered with the service (`"kind": "sensor"`): its ClientID, the key file
/// holding the `sensor_key` it was given once, and its counter file.
struct Sensor {
    id: String,
    key_file: PathBuf,
    counter: PathBuf,
}

async fn register_sensor(service: &Service, dir: &Path, serial: &str) -> Sensor {
    let (s, v) = service
        .call(
            "POST",
            "/v1/devices",
            Some(json!({"hardware_serial": serial, "kind": "sensor"})),
        )
        .await;
    assert!(s == 200 || s == 201, "register sensor: HTTP {s}: {v}");
    assert_eq!(v["kind"], "sensor", "{v}");
    let id = v["client_id"].as_str().expect("client_id").to_string();
    let key = v["sensor_key"].as_str().expect("sensor_key once");
    assert_eq!(key.len(), 43, "{v}");
    let key_file = dir.join(format!("{id}.key"));
    std::fs::write(&key_file, key).expect("key file");
    Sensor {
        counter: dir.join(format!("{id}.counter")),
        id,
        key_file,
    }
}

async fn attach(service: &Service, gateway: &str, sensors: &[&Sensor]) {
    let ids: Vec<&str> = sensors.iter().map(|s| s.id.as_str()).collect();
    let (s, v) = service
        .call(
            "PUT",
            &format!("/v1/devices/{gateway}/sensors"),
            Some(json!({ "sensors": ids })),
        )
        .await;
    assert_eq!(s, 200, "attach to {gateway}: {v}");
}

/// Runs `devid-agent sensor` once; returns (seq, frame bytes).
fn send(sensor: &Sensor, key_file: &Path, pty: &Path, message: &str, seal: bool) -> (u64, Vec<u8>) {
    let mut cmd = Command::new(artifact("devid-agent"));
    cmd.arg("sensor")
        .args([
            "--id",
            &sensor.id,
            "--channel",
            "temp",
            "--message",
            message,
            "--json",
            // One seq per counter write: consecutive seqs, so the replay below is inside the
            // window.
            "--block",
            "1",
        ])
        .arg("--key")
        .arg(key_file)
        .arg("--counter")
        .arg(&sensor.counter)
        .arg("--serial")
        .arg(pty);
    if seal {
        cmd.arg("--seal");
    }
    let o = cmd.output().expect("run devid-agent sensor");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "devid-agent sensor: {stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Value =
        serde_json::from_str(stdout.lines().last().expect("a frame line")).expect("json");
    let frame = hex::decode(v["frame"].as_str().expect("frame")).expect("hex");
    (v["seq"].as_u64().expect("seq"), frame)
}

/// The next message the subscriber gets: topic, payload, user properties sorted.
async fn received(sub: &mut Device) -> (String, Vec<u8>, Vec<(String, String)>) {
    match sub.event(Duration::from_secs(10)).await {
        Some(Event::Message(m)) => {
            let mut props = m.user_properties.clone();
            props.sort();
            (m.topic, m.payload, props)
        }
        other => panic!("no reading delivered: {other:?}"),
    }
}

fn verified(sensor: &str, gateway: &str) -> Vec<(String, String)> {
    vec![
        ("devid-verified".to_string(), sensor.to_string()),
        ("devid-via".to_string(), gateway.to_string()),
    ]
}

/// Waits for the broker's log to name this refusal of `sensor`'s reading (`[reason]`).
async fn logged(broker: &Broker, sensor: &str, reason: &str) {
    let tag = format!("[{reason}]");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = broker.log();
        if log.lines().any(|l| l.contains(&tag) && l.contains(sensor)) {
            return;
        }
        if Instant::now() > deadline {
            let about: Vec<&str> = log.lines().filter(|l| l.contains(sensor)).collect();
            panic!(
                "no {tag} for {sensor} in the broker log; its lines:\n{}",
                about.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_relayed_by_a_gateway_are_verified_per_sensor_and_forgeries_are_refused() {
    for backend in backends() {
        run(backend).await;
    }
}

async fn run(backend: Backend) {
    let service = Service::start_with(&backend, &[]).await;
    let identity = service.enroll_broker(NAME).await;
    let broker = Broker::start(BrokerSettings::new(&service, identity));
    let root = service.root_der();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();

    let gw = service.register_device("hw-gateway-1").await;
    let other_gw = service.register_device("hw-gateway-2").await;
    let a = register_sensor(&service, d, "hw-sensor-a").await;
    let b = register_sensor(&service, d, "hw-sensor-b").await;
    let elsewhere = register_sensor(&service, d, "hw-sensor-c").await;
    attach(&service, &gw.client_id, &[&a, &b]).await;
    attach(&service, &other_gw.client_id, &[&elsewhere]).await;

    // A subscriber allowed to read every device's topics.
    let sub_creds = service.register_device("hw-subscriber").await;
    let (s, v) = service
        .call(
            "PUT",
            &format!("/v1/devices/{}/policy", sub_creds.client_id),
            Some(json!({"topics": {"publish": [], "subscribe": ["devices/#"]}})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let mut sub = connect(&broker.addr(), &sub_creds, &root, None, Tamper::None)
        .await
        .expect("subscriber admitted");
    let mut granted = false;
    for _ in 0..50 {
        if sub.subscribe("devices/#").await.is_success() {
            granted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(granted, "the subscriber's policy never applied");

    std::fs::write(d.join("gw.crt"), gw.cert_pem()).expect("w");
    std::fs::write(d.join("gw.key"), gw.key_pem()).expect("w");
    std::fs::write(d.join("root.pem"), service.root_pem()).expect("w");
    let pty = d.join("ttyGW");
    let gateway = Gateway::start(d, &broker.addr(), &pty);
    let listening = gateway.next("listening");
    assert!(
        listening["pty"]
            .as_str()
            .is_some_and(|p| p.starts_with("/dev/pts/")),
        "{listening}"
    );

    // Two sensors on the one pty: a MACed reading and a sealed one, delivered verified. The
    // broker fetches the gateway's sensor keys when it authenticates; until they arrive a
    // reading is refused (and not delivered), so the first is sent until it is accepted.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (seq_a, frame_a) = loop {
        let (seq, frame) = send(&a, &a.key_file, &pty, r#"{"t":21.5}"#, false);
        match gateway.relayed(&a.id, seq) {
            0 => break (seq, frame),
            r => assert!(
                r == ReasonCode::NOT_AUTHORIZED.0 && Instant::now() < deadline,
                "sensor A's first reading: reason {r}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (topic, payload, props) = received(&mut sub).await;
    assert_eq!(topic, format!("devices/{}/temp", a.id));
    assert_eq!(payload, br#"{"t":21.5}"#);
    assert_eq!(
        props,
        verified(&a.id, &gw.client_id),
        "properties stripped and set"
    );

    let (seq_b, _) = send(&b, &b.key_file, &pty, r#"{"h":40}"#, true);
    assert_eq!(
        gateway.relayed(&b.id, seq_b),
        0,
        "sensor B's sealed reading"
    );
    let (topic, payload, props) = received(&mut sub).await;
    assert_eq!(topic, format!("devices/{}/temp", b.id));
    assert_eq!(payload, br#"{"h":40}"#, "delivered decrypted");
    assert_eq!(props, verified(&b.id, &gw.client_id));

    // A forged reading: made without A's key.
    let forged_key = d.join("forged.key");
    std::fs::write(&forged_key, "A".repeat(43)).expect("w");
    let (seq, _) = send(&a, &forged_key, &pty, r#"{"t":99}"#, false);
    assert_eq!(
        gateway.relayed(&a.id, seq),
        ReasonCode::NOT_AUTHORIZED.0,
        "forged reading"
    );
    logged(&broker, &a.id, "bad_mac").await;

    // A replayed reading: A's first frame again, byte for byte.
    let mut line = LinkWriter::open(&LinkSpec::Serial {
        path: pty.clone(),
        baud: None,
    })
    .expect("open the pty");
    line.write_frame(&frame_a).expect("replay");
    assert_eq!(
        gateway.relayed(&a.id, seq_a),
        ReasonCode::NOT_AUTHORIZED.0,
        "replayed reading"
    );
    logged(&broker, &a.id, "replayed").await;

    // A genuine reading of a sensor attached to another gateway.
    let (seq, _) = send(&elsewhere, &elsewhere.key_file, &pty, "1", false);
    assert_eq!(
        gateway.relayed(&elsewhere.id, seq),
        ReasonCode::NOT_AUTHORIZED.0,
        "a sensor attached to another gateway"
    );
    // The topic is neither the gateway's nor one of its sensors': the ACL lets it on to the
    // reading's check, which counts it for that sensor, and the service learns of it with the
    // broker's next report (about a second), under the gateway the sensor is attached to.
    logged(&broker, &elsewhere.id, "not_attached").await;
    wait_until(
        "the not_attached refusal counted by the service",
        Duration::from_secs(10),
        || {
            let service = &service;
            let path = format!("/v1/devices/{}/sensors", other_gw.client_id);
            let id = elsewhere.id.clone();
            async move {
                let (s, v) = service.call("GET", &path, None).await;
                assert_eq!(s, 200, "{v}");
                v["sensors"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|x| x["client_id"] == id.as_str() && x["refused"]["not_attached"] == 1)
            }
        },
    )
    .await;

    // None of the refused readings reached the subscriber: the next message is A's next
    // genuine reading, and the gateway is still connected.
    let (seq, _) = send(&a, &a.key_file, &pty, r#"{"t":21.6}"#, false);
    assert_eq!(gateway.relayed(&a.id, seq), 0);
    let (_, payload, props) = received(&mut sub).await;
    assert_eq!(payload, br#"{"t":21.6}"#, "a refused reading was delivered");
    assert_eq!(props, verified(&a.id, &gw.client_id));

    // A revoked sensor: its readings stop within a second or two (the feed), A's go on.
    service.revoke(&b.id).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (seq, _) = send(&b, &b.key_file, &pty, r#"{"h":41}"#, true);
        let reason = gateway.relayed(&b.id, seq);
        if reason == ReasonCode::NOT_AUTHORIZED.0 {
            logged(&broker, &b.id, "revoked").await;
            break;
        }
        assert_eq!(reason, 0);
        // Accepted before the revocation arrived: drain the delivery.
        let _ = received(&mut sub).await;
        assert!(
            Instant::now() < deadline,
            "revoked sensor's readings still accepted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (seq, _) = send(&a, &a.key_file, &pty, r#"{"t":21.7}"#, false);
    assert_eq!(
        gateway.relayed(&a.id, seq),
        0,
        "the gateway was not dropped"
    );
    let (_, payload, _) = received(&mut sub).await;
    assert_eq!(payload, br#"{"t":21.7}"#);
}
