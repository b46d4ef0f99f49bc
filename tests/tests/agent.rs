//! The devid-agent binary against Mosquitto with the plugin.

use std::path::Path;
use std::process::Output;

use devid_e2e::*;

const NAME: &str = "mqtt.test.local";

fn agent(dir: &Path, broker: &str, args: &[&str]) -> Output {
    agent_command_in(args[0], broker, dir, NAME)
        .args(&args[1..])
        .output()
        .expect("run devid-agent")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devid_agent_connects_publishes_and_is_refused_when_revoked() {
    let service = Service::start().await;
    let identity = service.enroll_broker(NAME).await;
    let mut settings = BrokerSettings::new(&service, identity);
    settings.tls = true;
    let broker = Broker::start(settings);
    let dev = service.register_device("hw-agent").await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("dev.crt"), dev.cert_pem()).expect("w");
    std::fs::write(dir.path().join("dev.key"), dev.key_pem()).expect("w");
    std::fs::write(dir.path().join("root.pem"), service.root_pem()).expect("w");
    let addr = broker.addr();
    let tls_addr = format!("127.0.0.1:{}", broker.tls_port);

    let o = agent(dir.path(), &addr, &["connect"]);
    assert!(o.status.success(), "{}", output_text(&o));
    let own = format!("devices/{}/temp", dev.client_id);
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
    // QoS 2: the whole exchange on its own topic; refused (in the PUBREC) on another's.
    let o = agent(
        dir.path(),
        &addr,
        &["publish", "--topic", &own, "--message", "22", "--qos", "2"],
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
            "2",
            "--qos",
            "2",
        ],
    );
    assert!(
        !o.status.success(),
        "foreign QoS 2 publish accepted: {}",
        output_text(&o)
    );
    // The mutual-TLS path with the same certificate.
    let o = agent(dir.path(), &tls_addr, &["connect", "--mtls"]);
    assert!(o.status.success(), "{}", output_text(&o));

    service.revoke(&dev.client_id).await;
    // The broker learns it from the feed within a moment.
    let mut refused = false;
    for _ in 0..40 {
        let o = agent(dir.path(), &addr, &["connect", "--no-resume"]);
        if o.status.code() == Some(1) {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(refused, "revoked device still admitted");
    let o = agent(dir.path(), &tls_addr, &["connect", "--mtls"]);
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
}

/// The `connected` JSON line of `connect --json`.
fn connected_line(o: &Output) -> serde_json::Value {
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out
        .lines()
        .find(|l| l.contains("\"connected\""))
        .unwrap_or_else(|| panic!("no connected line: {}", output_text(o)));
    serde_json::from_str(line).expect("JSON line")
}

/// The `pk_ops=` of the broker's admission log lines, in order.
fn broker_pk_ops(log: &str, client_id: &str) -> Vec<(bool, u64)> {
    log.lines()
        .filter(|l| l.contains(&format!("admitted client {client_id} ")))
        .filter_map(|l| {
            let resumed = l.contains("via DEVID-1 resumption");
            let n = l.split("pk_ops=").nth(1)?.split(' ').next()?.parse().ok()?;
            Some((resumed, n))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumption_uses_no_public_key_operation_on_either_side() {
    let service = Service::start().await;
    let identity = service.enroll_broker(NAME).await;
    let mut settings = BrokerSettings::new(&service, identity);
    settings.ticket_keys = Some(ticket_key_file(1));
    let broker = Broker::start(settings);
    let dev = service.register_device("hw-agent-pk").await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("dev.crt"), dev.cert_pem()).expect("w");
    std::fs::write(dir.path().join("dev.key"), dev.key_pem()).expect("w");
    std::fs::write(dir.path().join("root.pem"), service.root_pem()).expect("w");
    let addr = broker.addr();

    // First connection: a full handshake, which stores a ticket next to the key.
    let o = agent(dir.path(), &addr, &["connect", "--json"]);
    assert!(o.status.success(), "{}", output_text(&o));
    let full = connected_line(&o);
    assert_eq!(full["resumed"], false, "{}", output_text(&o));
    let ops = &full["pk_ops"];
    assert!(
        ops["total"].as_u64().unwrap_or(0) > 0,
        "{}",
        output_text(&o)
    );
    assert_eq!(ops["ecdh_agree"], 1, "{}", output_text(&o));
    assert_eq!(ops["ecdsa_sign"], 1, "{}", output_text(&o));
    // sig_s plus the broker chain's certificate signatures.
    assert!(
        ops["ecdsa_verify"].as_u64().unwrap_or(0) >= 2,
        "{}",
        output_text(&o)
    );

    // Second connection: resumed from the ticket, and the whole process did no public-key
    // operation at all.
    let o = agent(dir.path(), &addr, &["connect", "--json"]);
    assert!(o.status.success(), "{}", output_text(&o));
    let resumed = connected_line(&o);
    assert_eq!(resumed["resumed"], true, "{}", output_text(&o));
    assert_eq!(resumed["pk_ops"]["total"], 0, "{}", output_text(&o));
    assert_eq!(resumed["pk_ops_process"]["total"], 0, "{}", output_text(&o));

    // The broker side, from its per-connection log lines.
    let mut seen = Vec::new();
    let ok = eventually(std::time::Duration::from_secs(5), || {
        seen = broker_pk_ops(&broker.log(), &dev.client_id);
        seen.len() >= 2
    })
    .await;
    assert!(ok, "admission lines: {seen:?}\n{}", broker.log());
    let (full_resumed, full_ops) = seen[0];
    assert!(!full_resumed && full_ops > 0, "{seen:?}");
    assert_eq!(seen[1], (true, 0), "{seen:?}");
}
