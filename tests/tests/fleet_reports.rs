//! What a broker tells the service about its devices' health, seen on the wire: Mosquitto with
//! the plugin posts its event batches through [`ServiceProxy`], which records them (and answers
//! 202 itself), while the devid-agent binary connects with DEVID-1, resumes, connects with
//! mutual TLS, publishes allowed and refused messages and disconnects (and the tests' device
//! client reports a software version that breaks the rule). The service's side of
//! fleet health is not involved: the assertions are about the batches alone, so this runs on
//! SQLite only.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use devid_e2e::*;
use serde_json::Value;

const NAME: &str = "mqtt.test.local";
const BROKER: &str = "fleet-b1";
const SW: &str = "fw 1.2.3 (rc.1)";

fn agent(dir: &Path, broker: &str, args: &[&str]) -> Output {
    agent_command_in(args[0], broker, dir, NAME)
        .arg("--sw-version")
        .arg(SW)
        .args(&args[1..])
        .output()
        .expect("run devid-agent")
}

/// The events of every batch, in order.
fn events(batches: &[Value]) -> Vec<Value> {
    batches
        .iter()
        .filter_map(|b| b["events"].as_array())
        .flatten()
        .cloned()
        .collect()
}

/// The device's PUBLISH counters summed over every batch, and the most entries for it that one
/// batch carried.
fn counted(batches: &[Value], client_id: &str) -> (u64, u64, usize) {
    let (mut published, mut refused, mut most) = (0, 0, 0);
    for b in batches {
        let mine: Vec<&Value> = b["counters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["client_id"] == client_id)
            .collect();
        most = most.max(mine.len());
        for c in mine {
            published += c["published"].as_u64().expect("published");
            refused += c["refused"].as_u64().expect("refused");
        }
    }
    (published, refused, most)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_carry_connects_counters_disconnects_and_the_heartbeat() {
    let service = Service::start().await;
    let proxy = ServiceProxy::start(service.url()).await;
    let identity = service.enroll_broker(NAME).await;
    let mut settings = BrokerSettings::new(&service, identity);
    settings.service_url = proxy.url();
    settings.tls = true;
    settings.ticket_keys = Some(ticket_key_file(1));
    settings
        .extra
        .push(format!("plugin_opt_broker_name {BROKER}"));
    let broker = Broker::start(settings);
    let dev = service.register_device("hw-fleet-1").await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("dev.crt"), dev.cert_pem()).expect("w");
    std::fs::write(dir.path().join("dev.key"), dev.key_pem()).expect("w");
    std::fs::write(dir.path().join("root.pem"), service.root_pem()).expect("w");
    let addr = broker.addr();
    let tls_addr = format!("127.0.0.1:{}", broker.tls_port);
    let own = format!("devices/{}/temp", dev.client_id);

    // A full DEVID-1 exchange (it stores a ticket), then two resumptions that publish: one
    // allowed, one refused by the ACL; then mutual TLS.
    let o = agent(dir.path(), &addr, &["connect"]);
    assert!(o.status.success(), "{}", output_text(&o));
    let o = agent(
        dir.path(),
        &addr,
        &["publish", "--topic", &own, "--message", "21", "--qos", "1"],
    );
    assert!(o.status.success(), "{}", output_text(&o));
    let o = agent(
        dir.path(),
        &addr,
        &[
            "publish",
            "--topic",
            "devices/someoneelse/temp",
            "--message",
            "1",
            "--qos",
            "1",
        ],
    );
    assert!(
        !o.status.success(),
        "foreign publish accepted: {}",
        output_text(&o)
    );
    let o = agent(dir.path(), &tls_addr, &["connect", "--mtls"]);
    assert!(o.status.success(), "{}", output_text(&o));
    // A version that breaks the rule (not ASCII) is left out of the report, never refused.
    let mut auth = authenticator(&dev, &service.root_der(), Tamper::None);
    let mut conn = devid_device::open(&addr, &devid_device::Transport::Tcp)
        .await
        .expect("open");
    let mut opts = devid_device::ConnectOptions::new(dev.client_id.clone());
    opts.username = Some("devid-sw=caf\u{e9}".into());
    devid_device::handshake(&mut conn, &opts, Some(&mut auth))
        .await
        .expect("admitted");
    drop(conn);

    // Five connections, five disconnects; one accepted and one refused PUBLISH.
    let mut batches = Vec::new();
    let done = eventually(Duration::from_secs(20), || {
        batches = proxy.batches();
        let disconnects = events(&batches)
            .iter()
            .filter(|e| e["kind"] == "disconnect" && e["client_id"] == dev.client_id.as_str())
            .count();
        let (published, refused, _) = counted(&batches, &dev.client_id);
        disconnects >= 5 && published >= 1 && refused >= 1
    })
    .await;
    assert!(done, "batches: {batches:#?}\n{}", broker.log());

    let mine: Vec<Value> = events(&batches)
        .into_iter()
        .filter(|e| e["client_id"] == dev.client_id.as_str())
        .collect();
    let connects: Vec<&Value> = mine.iter().filter(|e| e["kind"] == "connect").collect();
    let how: Vec<&str> = connects
        .iter()
        .map(|e| e["auth"].as_str().unwrap_or("none"))
        .collect();
    assert_eq!(
        how,
        ["devid1", "resumption", "resumption", "mtls", "devid1"],
        "{mine:#?}"
    );
    assert!(connects[4].get("sw_version").is_none(), "{mine:#?}");
    assert!(
        broker.log().contains(
            "reported a software version that has U+00E9 at position 4; only printable ASCII"
        ),
        "{}",
        broker.log()
    );
    for (i, e) in connects.iter().enumerate() {
        let serial = devid_core::protocol::normalize_serial_hex(&dev.serial).expect("hex");
        assert_eq!(e["serial"], serial.as_str(), "{e}");
        if i < 4 {
            assert_eq!(e["sw_version"], SW, "{e}");
        }
        assert_eq!(e["broker"], BROKER, "{e}");
        assert!(
            e["address"]
                .as_str()
                .is_some_and(|a| a.starts_with("127.0.0.1")),
            "{e}"
        );
    }
    for e in mine.iter().filter(|e| e["kind"] == "disconnect") {
        assert_eq!(e["broker"], BROKER, "{e}");
        assert!(
            e["address"]
                .as_str()
                .is_some_and(|a| a.starts_with("127.0.0.1")),
            "{e}"
        );
    }
    // Deltas: summed over the batches they are exact; at most one entry per ClientID each.
    assert_eq!(counted(&batches, &dev.client_id), (1, 1, 1), "{batches:#?}");

    // Every batch names its broker; a batch leaves even when nothing happened (the first one
    // at start is such a batch too, so look only after the device's last).
    let seen = batches.len();
    let quiet = eventually(Duration::from_secs(25), || {
        batches = proxy.batches();
        batches.iter().skip(seen).any(|b| {
            b["events"].as_array().is_some_and(Vec::is_empty) && b.get("counters").is_none()
        })
    })
    .await;
    assert!(quiet, "no heartbeat-only batch: {batches:#?}");
    for b in &batches {
        let h = &b["broker"];
        assert_eq!(h["name"], BROKER, "{b}");
        assert_eq!(h["max_staleness"], 300, "{b}");
        assert!(
            h["started_at"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{b}"
        );
        assert!(h["feed_seq"].as_i64().is_some_and(|s| s >= 0), "{b}");
        assert!(h["connected"].as_u64().is_some(), "{b}");
    }
    // Nobody is connected any more, and the heartbeat says so.
    assert_eq!(batches.last().expect("a batch")["broker"]["connected"], 0);
}
