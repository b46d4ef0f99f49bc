//! The devid-agent binary: DEVID-1 against the in-process broker, mutual TLS against a real
//! Mosquitto, exit codes, and the bench tool in short runs.
#![allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

mod common;

use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use common::fake_broker::{BrokerEvent, FakeBroker};
use common::pki::{client_id, Pki};
use common::Mosquitto;
use devid_core::protocol::{EcdsaSigner, ServerConfig, TicketKey, TicketKeys};

const AGENT: &str = env!("CARGO_BIN_EXE_devid-agent");

async fn agent(args: &[&str]) -> Output {
    tokio::process::Command::new(AGENT)
        .args(args)
        .output()
        .await
        .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_publish_and_refusals_with_devid1() {
    common::install_ring();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("root");
    let root = pki.write_root(dir.path());
    let b = pki.broker(dir.path(), "mqtt.test");
    let key = Arc::new(
        EcdsaSigner::from_pkcs8_der(&b.key_pkcs8, &ring::rand::SystemRandom::new()).unwrap(),
    );
    let config = Arc::new(
        ServerConfig::new(&pki.root_der(), b.chain_der, key)
            .unwrap()
            .with_ticket_keys(TicketKeys::new(TicketKey::new(7, &[7; 32])), 600),
    );
    let mut broker = FakeBroker::start(config).await;
    let d = pki.device(dir.path(), &client_id("agt"));
    let addr = broker.addr.clone();
    let base = [
        "--broker",
        &addr,
        "--cert",
        p(&d.cert),
        "--key",
        p(&d.key),
        "--root",
        p(&root),
        "--broker-name",
        "mqtt.test",
    ];

    // connect: full handshake, session id printed, ticket stored next to the key.
    let o = agent(&[&["connect"], &base[..]].concat()).await;
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    let sid = out
        .split_whitespace()
        .find_map(|w| w.strip_prefix("session_id="))
        .unwrap()
        .to_owned();
    assert_eq!(sid.len(), 32);
    assert!(out.contains("resumed=false"), "{out}");
    match broker.next_event().await {
        BrokerEvent::Connected { session_id, .. } => assert_eq!(session_id, sid),
        e => panic!("{e:?}"),
    }
    assert!(d.key.with_extension("ticket").exists());

    // publish --seal --qos 1, resuming with the ticket.
    let topic = format!("devices/{}/t", d.client_id);
    let o = agent(
        &[
            &["publish"],
            &base[..],
            &[
                "--topic",
                &topic,
                "--message",
                "21.5",
                "--qos",
                "1",
                "--seal",
                "--json",
            ],
        ]
        .concat(),
    )
    .await;
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("\"resumed\":true"), "{out}");
    assert!(
        out.contains("\"event\":\"puback\",\"name\":\"Success\",\"reason\":0"),
        "{out}"
    );
    assert!(matches!(
        broker.next_event().await,
        BrokerEvent::Connected { resumed: true, .. }
    ));
    match broker.next_event().await {
        BrokerEvent::Published {
            payload, verified, ..
        } => {
            assert!(verified);
            assert_eq!(payload, b"21.5");
        }
        e => panic!("{e:?}"),
    }

    // A ClientID that is not the certificate's: refused, exit 1, reason code named.
    let o = agent(
        &[
            &["connect"],
            &base[..],
            &["--client-id", &client_id("zzz"), "--no-resume"],
        ]
        .concat(),
    )
    .await;
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(err.contains("0x87 Not authorized"), "{err}");

    // A refused SUBSCRIBE and a refused PUBLISH: exit 1 with the reason code named.
    let o = agent(
        &[
            &["subscribe"],
            &base[..],
            &["--topic", "forbidden/x", "--timeout", "1"],
        ]
        .concat(),
    )
    .await;
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(out.contains("SUBACK 0x87 Not authorized"), "{out}");
    assert!(err.contains("refused: SUBACK 0x87 Not authorized"), "{err}");
    let o = agent(
        &[
            &["publish"],
            &base[..],
            &["--topic", "forbidden/x", "--message", "m", "--qos", "1"],
        ]
        .concat(),
    )
    .await;
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(err.contains("refused: PUBACK 0x87 Not authorized"), "{err}");
    while broker.events.try_recv().is_ok() {}

    // Rotation by policy from the command line: every message verifies, seq restarts after
    // each AUTH 0x19, and no PUBLISH is sent with old keys while a rotation runs.
    let o = agent(
        &[
            &["publish"],
            &base[..],
            &[
                "--topic",
                &topic,
                "--message",
                "m",
                "--qos",
                "0",
                "--mac",
                "--count",
                "6",
                "--rotate-messages",
                "2",
            ],
        ]
        .concat(),
    )
    .await;
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    let mut seqs = Vec::new();
    let mut rotations = 0;
    while let Ok(e) = broker.events.try_recv() {
        match e {
            BrokerEvent::Published { seq, verified, .. } => {
                assert!(verified, "{out}");
                seqs.push(seq.unwrap());
            }
            BrokerEvent::Reauthenticated { .. } => rotations += 1,
            BrokerEvent::Refused { why, .. } => panic!("refused: {why}"),
            BrokerEvent::Connected { .. } => {}
        }
    }
    assert_eq!(seqs, [1, 2, 1, 2, 1, 2], "{out}");
    assert!(rotations >= 2, "{rotations}");

    // Usage errors: exit 2.
    let o = agent(&["connect", "--broker", &addr]).await;
    assert_eq!(o.status.code(), Some(2));
    let o = agent(
        &[
            &["connect"],
            &base[..4],
            &["--key", p(&root), "--root", p(&root)],
        ]
        .concat(),
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));

    // bench: full handshakes and resumptions for a short while.
    let devs = dir.path().join("fleet");
    std::fs::create_dir(&devs).unwrap();
    for _ in 0..3 {
        pki.device(&devs, &client_id("bch"));
    }
    for (mode, resumed) in [("devid1", false), ("resume", true)] {
        let o = agent(&[
            "bench",
            "connect",
            "--broker",
            &addr,
            "--devices",
            p(&devs),
            "--root",
            p(&root),
            "--concurrency",
            "3",
            "--duration",
            "0.5",
            "--mode",
            mode,
            "--json",
        ])
        .await;
        let (out, err) = text(&o);
        assert!(o.status.success(), "{out}{err}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert!(v["connects"].as_u64().unwrap() > 0, "{out}");
        assert_eq!(v["errors"], serde_json::json!({}), "{out}");
        assert_eq!(v["resumed"].as_u64().unwrap() > 0, resumed, "{out}");
        assert!(v["client_cpu_seconds"].as_f64().is_some(), "{out}");
    }

    // bench publish: MACed QoS 1 and sealed QoS 0, every message verified by the broker.
    let mut verified_before = 0;
    while let Ok(e) = broker.events.try_recv() {
        verified_before += usize::from(matches!(e, BrokerEvent::Published { verified: true, .. }));
    }
    assert_eq!(verified_before, 0);
    let mut total = 0;
    for (qos, protect) in [("1", "mac"), ("0", "seal")] {
        let o = agent(
            &[
                &["bench", "publish"],
                &base[..],
                &[
                    "--qos",
                    qos,
                    "--protect",
                    protect,
                    "--duration",
                    "0.3",
                    "--inflight",
                    "8",
                    "--json",
                ],
            ]
            .concat(),
        )
        .await;
        let (out, err) = text(&o);
        assert!(o.status.success(), "{out}{err}");
        let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        let n = v["messages"].as_u64().unwrap();
        assert!(n > 0, "{out}");
        total += n;
    }
    let mut verified = 0u64;
    let mut unverified = 0u64;
    while let Ok(e) = broker.events.try_recv() {
        match e {
            BrokerEvent::Published { verified: true, .. } => verified += 1,
            BrokerEvent::Published { .. } => unverified += 1,
            _ => {}
        }
    }
    assert_eq!(unverified, 0);
    assert_eq!(
        verified, total,
        "every message the bench counted reached the broker verified"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_publish_subscribe_through_real_mosquitto() {
    common::install_ring();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("root");
    let root = pki.write_root(dir.path());
    let b = pki.broker(dir.path(), "mqtt.test");
    let tls_port = common::free_port();
    let m = Mosquitto::start(&format!(
        "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n\
         use_identity_as_username true\nset_tcp_nodelay true\n",
        root.display(),
        b.cert.display(),
        b.key.display()
    ));
    m.wait_listening(tls_port);
    let addr = format!("127.0.0.1:{tls_port}");
    let sub_dev = pki.device(dir.path(), &client_id("sub"));
    let pub_dev = pki.device(dir.path(), &client_id("pub"));
    let args = |d: &common::pki::DeviceFiles| {
        vec![
            "--broker".to_owned(),
            addr.clone(),
            "--cert".into(),
            p(&d.cert).into(),
            "--key".into(),
            p(&d.key).into(),
            "--root".into(),
            p(&root).into(),
            "--broker-name".into(),
            "mqtt.test".into(),
            "--mtls".into(),
        ]
    };
    let mut sub_args = vec!["subscribe".to_owned()];
    sub_args.extend(args(&sub_dev));
    sub_args.extend(
        [
            "--topic",
            "fleet/#",
            "--count",
            "1",
            "--timeout",
            "10",
            "--json",
        ]
        .map(String::from),
    );
    let sub = tokio::process::Command::new(AGENT)
        .args(&sub_args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until Mosquitto has the subscription.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !m.log_text().contains("fleet/#") {
        assert!(std::time::Instant::now() < deadline, "{}", m.log_text());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut pub_args = vec!["publish".to_owned()];
    pub_args.extend(args(&pub_dev));
    pub_args.extend(
        [
            "--topic",
            "fleet/a",
            "--message",
            "hello",
            "--qos",
            "1",
            "--user-property",
            "k=v",
        ]
        .map(String::from),
    );
    let pub_args: Vec<&str> = pub_args.iter().map(String::as_str).collect();
    let o = agent(&pub_args).await;
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("PUBACK 0x00 Success"), "{out}");

    let o = sub.wait_with_output().await.unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    let msg: serde_json::Value = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["event"] == "message")
        .unwrap();
    assert_eq!(msg["topic"], "fleet/a");
    assert_eq!(msg["payload"], "hello");
    assert_eq!(msg["user_properties"], serde_json::json!([["k", "v"]]));
    // Mosquitto saw the certificate identity as the username.
    assert!(m.log_text().contains(&pub_dev.client_id));

    // bench --mode mtls: TLS 1.3 mutual-TLS connects.
    let devs = dir.path().join("fleet");
    std::fs::create_dir(&devs).unwrap();
    for _ in 0..2 {
        pki.device(&devs, &client_id("mtl"));
    }
    let o = agent(&[
        "bench",
        "connect",
        "--broker",
        &addr,
        "--devices",
        p(&devs),
        "--root",
        p(&root),
        "--broker-name",
        "mqtt.test",
        "--concurrency",
        "2",
        "--duration",
        "0.5",
        "--mode",
        "mtls",
        "--broker-pid",
        &m.pid().to_string(),
        "--json",
    ])
    .await;
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["connects"].as_u64().unwrap() > 0, "{out}");
    assert_eq!(v["errors"], serde_json::json!({}), "{out}");
    assert!(v["broker_cpu_seconds"].as_f64().is_some(), "{out}");
}
