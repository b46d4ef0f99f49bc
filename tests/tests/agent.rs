//! The devid-agent binary against Mosquitto with the plugin.

use std::path::Path;
use std::process::{Command, Output};

use devid_e2e::*;

const NAME: &str = "mqtt.test.local";

fn agent(dir: &Path, broker: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(artifact("devid-agent"));
    cmd.args(&args[..1])
        .arg("--broker")
        .arg(broker)
        .arg("--cert")
        .arg(dir.join("dev.crt"))
        .arg("--key")
        .arg(dir.join("dev.key"))
        .arg("--root")
        .arg(dir.join("root.pem"))
        .arg("--broker-name")
        .arg(NAME)
        .args(&args[1..]);
    cmd.output().expect("run devid-agent")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
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
    assert!(o.status.success(), "{}", text(&o));
    let own = format!("devices/{}/temp", dev.client_id);
    let o = agent(
        dir.path(),
        &addr,
        &["publish", "--topic", &own, "--message", "21", "--qos", "1"],
    );
    assert!(o.status.success(), "{}", text(&o));
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
        text(&o)
    );
    // The mutual-TLS path with the same certificate.
    let o = agent(dir.path(), &tls_addr, &["connect", "--mtls"]);
    assert!(o.status.success(), "{}", text(&o));

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
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}
