//! Mutual TLS with stock clients, set up as the READMEs show: Mosquitto's TLS listener with
//! `cafile` = the devid root (`broker-plugin/README.md`), devices registered with the `devid`
//! CLI, and Debian's `mosquitto_pub` / `mosquitto_sub` given the files `devid` writes:
//! `--cafile root.pem --cert <ClientID>.chain.pem --key <ClientID>.key` (`README.md`).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use devid_e2e::*;

/// The broker's name, in its certificate: what the clients connect to and check.
const NAME: &str = "localhost";

fn devid(service: &Service, args: &[&str]) -> Output {
    devid_cli_ok(service, args)
}

/// `mosquitto_pub`/`mosquitto_sub` arguments for a device, as the README shows them.
fn tls_args(port: u16, root: &Path, flash: &Path, id: &str, cert: &str) -> Vec<String> {
    [
        "-V",
        "mqttv5",
        "-h",
        NAME,
        "-p",
        &port.to_string(),
        "--cafile",
        &root.display().to_string(),
        "--cert",
        &flash.join(cert).display().to_string(),
        "--key",
        &flash.join(format!("{id}.key")).display().to_string(),
        "-i",
        id,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn mosquitto_pub(args: &[String], topic: &str, message: &str) -> Output {
    Command::new("mosquitto_pub")
        .args(args)
        .args(["-q", "1", "-t", topic, "-m", message])
        .output()
        .expect("mosquitto_pub (Debian package mosquitto-clients; scripts/setup.sh installs it)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_pub_and_sub_connect_with_the_chain_file_devid_writes() {
    let service = Service::start().await;
    let identity = service.enroll_broker(NAME).await;
    let mut settings = BrokerSettings::new(&service, identity);
    settings.tls = true;
    let broker = Broker::start(settings);
    // The broker's `cafile`: the devid root alone.
    let root = broker.dir.path().join("root.pem");
    let work = tempfile::tempdir().expect("tempdir");
    let flash = work.path().join("flash");
    let flash_s = flash.to_str().expect("utf8");

    // One device from a batch (the subscriber), one registered alone (the publisher).
    let csv = work.path().join("lot.csv");
    std::fs::write(&csv, "hardware_serial,model\nSTOCK-1,thermo\n").expect("csv");
    devid(
        &service,
        &[
            "device",
            "register-batch",
            "--csv",
            csv.to_str().expect("utf8"),
            "--generate-keys",
            "--out",
            flash_s,
        ],
    );
    let manifest = std::fs::read_to_string(flash.join("manifest.csv")).expect("manifest");
    let mut lines = manifest.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let row: Vec<&str> = lines.next().expect("row").split(',').collect();
    let col = |name: &str| {
        row[header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no {name} column: {manifest}"))]
    };
    let sub_id = col("client_id").to_string();
    assert_eq!(col("chain_file"), format!("{sub_id}.chain.pem"));
    let o = devid(
        &service,
        &[
            "device",
            "register",
            "--serial",
            "STOCK-2",
            "--model",
            "thermo",
            "--generate-key",
            "--out",
            flash_s,
        ],
    );
    let pub_id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    // The subscriber may also read the publisher's topics.
    devid(
        &service,
        &[
            "device",
            "policy",
            &sub_id,
            "--subscribe",
            &format!("devices/%c/#,devices/{pub_id}/#"),
        ],
    );

    let port = broker.tls_port;
    let topic = format!("devices/{pub_id}/telemetry");
    let sub_args = tls_args(port, &root, &flash, &sub_id, &format!("{sub_id}.chain.pem"));
    // The plugin applies a device's fetched policy from the first fetch on; a device it has
    // never seen gets the default policy meanwhile, so the first subscription may be denied
    // (mosquitto_sub then says so and ends): subscribe again until it is granted.
    let suback = format!("Sending SUBACK to {sub_id}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let sub =
        loop {
            let acks = broker.log().matches(&suback).count();
            let mut sub = Command::new("mosquitto_sub")
            .args(&sub_args)
            .args(["-q", "1", "-t", &format!("devices/{pub_id}/#"), "-v", "-C", "1"])
            .args(["-W", "30"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect(
                "mosquitto_sub (Debian package mosquitto-clients; scripts/setup.sh installs it)",
            );
            while broker.log().matches(&suback).count() == acks {
                if let Ok(Some(_)) = sub.try_wait() {
                    let o = sub.wait_with_output().expect("mosquitto_sub");
                    panic!("mosquitto_sub ended: {}\n{}", output_text(&o), broker.log());
                }
                assert!(
                    Instant::now() < deadline,
                    "mosquitto_sub did not subscribe\n{}",
                    broker.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            // A denied subscription ends mosquitto_sub at once.
            std::thread::sleep(Duration::from_millis(300));
            match sub.try_wait() {
                Ok(None) => break sub,
                _ => {
                    let o = sub.wait_with_output().expect("mosquitto_sub");
                    assert!(
                        output_text(&o).contains("denied") && Instant::now() < deadline,
                        "mosquitto_sub: {}\n{}",
                        output_text(&o),
                        broker.log()
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        };
    assert!(
        broker
            .log()
            .contains(&format!("admitted client {sub_id} (serial")),
        "{}",
        broker.log()
    );

    let pub_args = tls_args(port, &root, &flash, &pub_id, &format!("{pub_id}.chain.pem"));
    let o = mosquitto_pub(&pub_args, &topic, "21.5");
    assert!(o.stderr.is_empty(), "mosquitto_pub: {}", output_text(&o));
    assert!(
        o.status.success(),
        "mosquitto_pub: {}\n{}",
        output_text(&o),
        broker.log()
    );
    let o = sub.wait_with_output().expect("mosquitto_sub");
    assert!(
        o.status.success(),
        "mosquitto_sub: {}\n{}",
        output_text(&o),
        broker.log()
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!("{topic} 21.5\n")
    );

    // The certificate file alone is what stock clients cannot use against a broker that trusts
    // only the root: the broker cannot build the path to the root and ends the handshake (the
    // client sees TLS alert unknown_ca or just "Protocol error").
    let leaf_args = tls_args(port, &root, &flash, &pub_id, &format!("{pub_id}.crt"));
    let o = mosquitto_pub(&leaf_args, &topic, "leaf");
    assert!(
        !o.status.success(),
        "the leaf alone was accepted: {}",
        output_text(&o)
    );
    // The broker may log its refusal after the client has already gone: wait for the line.
    assert!(
        eventually(Duration::from_secs(10), || broker
            .log()
            .contains("certificate verify failed"))
        .await,
        "{}",
        broker.log()
    );

    // A topic outside the publisher's policy is refused (the plugin's checks apply).
    let o = mosquitto_pub(&pub_args, &format!("devices/{sub_id}/telemetry"), "x");
    // (mosquitto_pub reports a refused PUBLISH as a warning and exits 0.)
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Publish 1 failed: Not authorized"),
        "foreign topic accepted: {}",
        output_text(&o)
    );
}
