//! The broker thread's cost per sensor reading (DEVID-S1) in the plugin's engine, without
//! Mosquitto: for one gateway with many sensors, the ACL check and the MESSAGE check of each
//! PUBLISH, as the broker asks them, for the gateway's own message without sensor properties,
//! a reading with `devid-sensor-mac`, and a sealed one (which also allocates its plaintext).
//! Messages are made beforehand; only the engine's calls are timed, on one thread.
//!
//! `cargo run --release -p devid-mosquitto --example sensor_engine_bench [-- SENSORS MESSAGES]`
//! (default 1,000 sensors, 400,000 messages per row).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use devid_core::api::DeviceState;
use devid_core::protocol::PkOps;
use devid_mosquitto::config::{Config, HandshakeGuard};
use devid_mosquitto::engine::{
    AuthOutcome, Engine, MessageCheck, MessageRefusal, MessageVerdict, Refusal, SensorMaterial,
    ServerSide, Verified,
};
use devid_mosquitto::policy::Access;
use devid_mosquitto::service::{FromService, Shared};
use devid_mosquitto::state;

const GATEWAY: &str = "gw0bench";
const PAYLOAD: usize = 64;

/// A server side that admits the mutual-TLS path only (the bench needs one gateway connected;
/// DEVID-1 is not measured here).
struct TlsOnly;

impl ServerSide for TlsOnly {
    type Hello = ();
    type Pending = ();
    type Keys = ();
    type Verifier = ();
    fn is_full_hello(&self, _data: &[u8]) -> bool {
        false
    }
    fn hello(&self, _d: &[u8], _c: &str, _n: u64) -> Result<(Verified, ()), Refusal> {
        Err(Refusal::NoCredentials)
    }
    fn accept(&self, _h: (), _n: u64) -> Result<((), Vec<u8>), Refusal> {
        Err(Refusal::NoCredentials)
    }
    fn finish(&self, _p: (), _d: &[u8], _n: u64) -> Result<((), Vec<u8>, PkOps), Refusal> {
        Err(Refusal::NoCredentials)
    }
    fn verifier(&self, _k: &()) {}
    fn verify_message(
        &self,
        _v: &mut (),
        _p: &[(&str, &str)],
        _t: &str,
        _b: &[u8],
    ) -> Result<MessageCheck, MessageRefusal> {
        Ok(MessageCheck::Unclaimed)
    }
    fn verify_tls_client(&self, _der: &[u8], cid: &str, _now: u64) -> Result<Verified, Refusal> {
        Ok(Verified {
            client_id: cid.to_string(),
            serial: "01".into(),
            fingerprint: String::new(),
            not_after: u64::MAX,
            resumed: false,
            ldevid: Some(false),
            issuer: None,
            verified_at: 0,
        })
    }
    fn use_ca_set(&mut self, _set: devid_mosquitto::ca_set::CaSet) {}
}

struct Msg {
    topic: String,
    props: Vec<(String, String)>,
    payload: Vec<u8>,
}

fn engine(sensors: &[(String, [u8; 32], [u8; 32])]) -> Engine<TlsOnly> {
    let config = Config {
        service_url: "http://127.0.0.1:1".into(),
        token: "t".into(),
        trust_anchor_der: vec![],
        broker_chain_der: vec![],
        broker_key_der: vec![],
        state_dir: std::env::temp_dir(),
        max_staleness: Duration::from_secs(600),
        auth_timeout: Duration::from_secs(10),
        broker_name: None,
        ticket_keys: None,
        ticket_lifetime: 0,
        max_refused_messages: 3,
        guard: HandshakeGuard {
            max_pending: 10,
            max_pending_per_address: 10,
            hello_rate: 10,
            hello_burst: 10,
        },
    };
    let shared = Arc::new(Mutex::new(Shared {
        last_contact: Some(state::unix_now()),
        ..Shared::default()
    }));
    let mut e = Engine::new(config, TlsOnly, shared, None);
    e.tick(Vec::new());
    let ok = e.basic_auth(1, Some(b"cert"), Some(GATEWAY), Some("127.0.0.1"));
    assert!(
        matches!(ok, AuthOutcome::Success(_)),
        "gateway not admitted"
    );
    let material = sensors
        .iter()
        .map(|(id, mac, enc)| {
            SensorMaterial::new(
                id,
                DeviceState::Active,
                &URL_SAFE_NO_PAD.encode(mac),
                &URL_SAFE_NO_PAD.encode(enc),
                &["devices/%c/#".to_string()],
                0,
            )
            .expect("material")
        })
        .collect();
    e.tick(vec![FromService::SensorKeys {
        gateway: GATEWAY.into(),
        sensors: material,
    }]);
    e
}

fn messages(sensors: &[(String, [u8; 32], [u8; 32])], n: usize, mode: &str) -> Vec<Msg> {
    let reading = vec![0x5au8; PAYLOAD];
    (0..n)
        .map(|j| {
            let (id, k_mac, k_enc) = &sensors[j % sensors.len()];
            let seq = (j / sensors.len()) as u64 + 1;
            let topic = format!("devices/{id}/t");
            let base = |proof: (String, String)| {
                vec![
                    ("devid-sensor".to_string(), id.clone()),
                    ("devid-sensor-seq".to_string(), seq.to_string()),
                    proof,
                ]
            };
            match mode {
                "mac" => {
                    let tag = devid_sensor::publish_mac(
                        k_mac,
                        id.as_bytes(),
                        seq,
                        topic.as_bytes(),
                        &reading,
                    )
                    .expect("mac");
                    let text = String::from_utf8(devid_sensor::encode_b64url(&tag).to_vec())
                        .expect("ascii");
                    Msg {
                        topic,
                        props: base(("devid-sensor-mac".into(), text)),
                        payload: reading.clone(),
                    }
                }
                "seal" => {
                    let mut buf = reading.clone();
                    buf.resize(PAYLOAD + devid_sensor::TAG_LEN, 0);
                    devid_sensor::seal_in_place(
                        k_enc,
                        id.as_bytes(),
                        seq,
                        topic.as_bytes(),
                        &mut buf,
                        PAYLOAD,
                    )
                    .expect("seal");
                    Msg {
                        topic,
                        props: base(("devid-sensor-seal".into(), "1".into())),
                        payload: buf,
                    }
                }
                _ => Msg {
                    topic: format!("devices/{GATEWAY}/{id}"),
                    props: vec![],
                    payload: reading.clone(),
                },
            }
        })
        .collect()
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n_sensors = args.first().copied().unwrap_or(1_000);
    let n = args.get(1).copied().unwrap_or(400_000);
    let sensors: Vec<(String, [u8; 32], [u8; 32])> = (0..n_sensors)
        .map(|i| {
            let id = format!("sens{i:06}x");
            let k = [(i % 251) as u8; 32];
            let d = devid_sensor::derive(&k, id.as_bytes()).expect("derive");
            (id, d.mac, d.enc)
        })
        .collect();
    println!("# {n_sensors} sensors on one gateway, {PAYLOAD}-byte readings, {n} messages per row");
    for mode in ["none", "mac", "seal"] {
        let msgs = messages(&sensors, n, mode);
        let mut e = engine(&sensors);
        let started = Instant::now();
        let mut accepted = 0usize;
        for m in &msgs {
            let props: Vec<(&str, &str)> = m
                .props
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            if e.acl(1, Access::Publish, &m.topic)
                && matches!(
                    e.message(1, &m.topic, &props, &m.payload),
                    MessageVerdict::Accept { .. }
                )
            {
                accepted += 1;
            }
        }
        let elapsed = started.elapsed();
        assert_eq!(accepted, n, "{mode}: refused messages");
        println!(
            "{{\"mode\":\"{mode}\",\"ns_per_message\":{:.0},\"per_second\":{:.0}}}",
            elapsed.as_nanos() as f64 / n as f64,
            n as f64 / elapsed.as_secs_f64()
        );
    }
    // The crate's MAC check alone, for the share of the cryptography in the "mac" row.
    let msgs = messages(&sensors, n, "mac");
    let started = Instant::now();
    for (j, m) in msgs.iter().enumerate() {
        let (id, k_mac, _) = &sensors[j % sensors.len()];
        let seq = (j / sensors.len()) as u64 + 1;
        let tag = devid_sensor::decode_b64url_16(m.props[2].1.as_bytes()).expect("tag");
        devid_sensor::verify_mac(
            k_mac,
            id.as_bytes(),
            seq,
            m.topic.as_bytes(),
            &m.payload,
            &tag,
        )
        .expect("verifies");
    }
    println!(
        "{{\"mode\":\"verify_mac only\",\"ns_per_message\":{:.0}}}",
        started.elapsed().as_nanos() as f64 / n as f64
    );
}
