//! The whole product, as people use it: the operator enrols the broker and makes its token with
//! the `devid` CLI, the manufacturing line registers a batch with the CLI, the flashing step
//! puts each device's files on it, the device connects through real Mosquitto with DEVID-1 using
//! `devid-agent`, publishes, and is refused once the operator revokes it with the CLI.

use std::path::Path;
use std::process::Output;

use devid_e2e::*;

const NAME: &str = "mqtt.golden.test";

fn devid(service: &Service, args: &[&str]) -> Output {
    devid_cli(service, args)
}

fn agent(device: &Path, root: &Path, broker: &str, args: &[&str]) -> Output {
    let (cert, key) = (device.join("device.crt"), device.join("device.key"));
    let files = AgentFiles {
        cert: &cert,
        key: &key,
        root,
        broker_name: NAME,
    };
    agent_command(args[0], broker, &files)
        .arg("--no-resume")
        .args(&args[1..])
        .output()
        .expect("run devid-agent")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_registered_by_the_cli_connects_with_devid1_and_is_dropped_after_revocation() {
    let service = Service::start().await;
    let work = tempfile::tempdir().expect("tempdir");
    let w = work.path();

    // Operator: the broker's certificate (key made locally) and its token.
    let broker_dir = w.join("broker");
    let o = devid(
        &service,
        &[
            "broker",
            "enroll",
            "--name",
            NAME,
            "--out",
            broker_dir.to_str().expect("utf8"),
        ],
    );
    assert!(o.status.success(), "broker enroll: {}", output_text(&o));
    let o = devid(
        &service,
        &[
            "-o", "json", "token", "create", "--role", "broker", "--name", "golden",
        ],
    );
    assert!(o.status.success(), "token create: {}", output_text(&o));
    let token: serde_json::Value = serde_json::from_slice(&o.stdout).expect("token JSON");
    let read =
        |p: &Path| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let identity = BrokerIdentity {
        chain_pem: format!(
            "{}{}",
            read(&broker_dir.join(format!("{NAME}.crt"))),
            read(&broker_dir.join("chain.pem"))
        ),
        key_pem: read(&broker_dir.join(format!("{NAME}.key"))),
        token: token["token"].as_str().expect("token").to_string(),
        root_pem: service.root_pem(),
    };
    let broker = Broker::start(BrokerSettings::new(&service, identity));

    // Manufacturing line: a batch from CSV, keys made on the station.
    let csv = w.join("lot.csv");
    std::fs::write(
        &csv,
        "hardware_serial,model\nGP-1,thermo\nGP-2,thermo\nGP-3,thermo\n",
    )
    .expect("csv");
    let flash = w.join("flash");
    let o = devid(
        &service,
        &[
            "device",
            "register-batch",
            "--csv",
            csv.to_str().expect("utf8"),
            "--generate-keys",
            "--out",
            flash.to_str().expect("utf8"),
        ],
    );
    assert!(o.status.success(), "register-batch: {}", output_text(&o));
    let manifest = read(&flash.join("manifest.csv"));
    let header: Vec<&str> = manifest
        .lines()
        .next()
        .expect("header")
        .split(',')
        .collect();
    let col = header
        .iter()
        .position(|h| *h == "client_id")
        .expect("client_id column");
    let ids: Vec<String> = manifest
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(col).expect("client_id").to_string())
        .collect();
    assert_eq!(ids.len(), 3, "{manifest}");

    // Flashing: the device gets its certificate with the chain, its key, and the root.
    let id = &ids[0];
    let device = w.join("device");
    std::fs::create_dir_all(&device).expect("device dir");
    std::fs::write(
        device.join("device.crt"),
        format!(
            "{}{}",
            read(&flash.join(format!("{id}.crt"))),
            read(&flash.join("chain.pem"))
        ),
    )
    .expect("device.crt");
    std::fs::copy(flash.join(format!("{id}.key")), device.join("device.key")).expect("key");
    let root = w.join("root.pem");
    std::fs::write(&root, service.root_pem()).expect("root");

    // The device connects through Mosquitto with DEVID-1 and publishes on its own topic.
    let addr = broker.addr();
    let o = agent(&device, &root, &addr, &["connect"]);
    assert!(
        o.status.success(),
        "connect: {}\nbroker log:\n{}",
        output_text(&o),
        broker.log()
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("session_id=") && out.contains(&format!("client_id={id}")),
        "{out}"
    );
    let topic = format!("devices/{id}/telemetry");
    let o = agent(
        &device,
        &root,
        &addr,
        &[
            "publish",
            "--topic",
            &topic,
            "--message",
            "21.5",
            "--qos",
            "1",
        ],
    );
    assert!(o.status.success(), "publish: {}", output_text(&o));
    // Another device's topic is refused.
    let other = format!("devices/{}/telemetry", ids[1]);
    let o = agent(
        &device,
        &root,
        &addr,
        &["publish", "--topic", &other, "--message", "x", "--qos", "1"],
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "foreign topic: {}",
        output_text(&o)
    );

    // Operator: revoke it with the CLI; the next connect is refused.
    let o = devid(
        &service,
        &["device", "revoke", id, "--reason", "keyCompromise", "--yes"],
    );
    assert!(o.status.success(), "revoke: {}", output_text(&o));
    let mut refused = false;
    for _ in 0..50 {
        let o = agent(&device, &root, &addr, &["connect"]);
        if o.status.code() == Some(1) {
            assert!(output_text(&o).contains("0x87"), "{}", output_text(&o));
            refused = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        refused,
        "a revoked device still connects\nbroker log:\n{}",
        broker.log()
    );
    // The others still connect.
    let second = w.join("second");
    std::fs::create_dir_all(&second).expect("dir");
    std::fs::write(
        second.join("device.crt"),
        format!(
            "{}{}",
            read(&flash.join(format!("{}.crt", ids[1]))),
            read(&flash.join("chain.pem"))
        ),
    )
    .expect("crt");
    std::fs::copy(
        flash.join(format!("{}.key", ids[1])),
        second.join("device.key"),
    )
    .expect("key");
    let o = agent(&second, &root, &addr, &["connect"]);
    assert!(o.status.success(), "second device: {}", output_text(&o));
}
