//! devid-agent keeps its LDevID fresh against the real devid-server (EST on its TLS listener)
//! and the real Mosquitto with the plugin, on SQLite and PostgreSQL: a device with only its
//! IDevID enrolls its LDevID, connects with it, renews when due (a model with LDevIDs valid for
//! seconds), writes its files atomically, runs its hook, and connects with each new LDevID.

use std::path::Path;
use std::time::Duration;

use devid_e2e::*;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

const NAME: &str = "mqtt.renewal.test";
const MODEL: &str = "renewing";
/// The model's LDevID validity: renewal falls 8 to 10 s after issuance.
const VALIDITY: &str = "12s";

fn p(path: &Path) -> String {
    path.display().to_string()
}

async fn next_json<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
    what: &str,
) -> Value {
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("no agent output within 60 s while waiting for {what}"))
        .expect("agent stdout")
        .unwrap_or_else(|| panic!("the agent exited while waiting for {what}"));
    serde_json::from_str(&line).unwrap_or(Value::String(line))
}

/// The serial (lowercase hex, no leading zeros) of the first certificate in a PEM file, read
/// by openssl (an independent parser).
fn file_serial(path: &Path) -> String {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(path)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl x509 {}", path.display());
    norm(&String::from_utf8_lossy(&out.stdout))
}

/// `serial=00AB..` or `ab..` as `ab..`.
fn norm(s: &str) -> String {
    s.trim()
        .to_lowercase()
        .trim_start_matches("serial=")
        .trim_start_matches('0')
        .to_string()
}

async fn run(backend: Backend) {
    let tls_port = free_port();
    let service = Service::start_with(
        &backend,
        &[
            "--tls-listen",
            &format!("127.0.0.1:{tls_port}"),
            "--public-url",
            "https://localhost",
        ],
    )
    .await;
    let (s, v) = service
        .call(
            "PUT",
            &format!("/v1/models/{MODEL}"),
            Some(json!({"ldevid_validity": VALIDITY, "renewal_grace": "1h"})),
        )
        .await;
    assert!((200..300).contains(&s), "PUT model: {s} {v}");
    let (s, v) = service
        .call(
            "POST",
            "/v1/devices",
            Some(
                json!({"hardware_serial": format!("hw-renew-{}", backend.name()),
                        "model": MODEL, "generate_key": true}),
            ),
        )
        .await;
    assert_eq!(s, 201, "register: {v}");
    let dev = DeviceCreds::from_registered(&serde_json::from_value(v).expect("registered"));
    let identity = service.enroll_broker(NAME).await;
    let broker = Broker::start(BrokerSettings::new(&service, identity));

    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key, root) = (
        dir.path().join("idevid.crt"),
        dir.path().join("idevid.key"),
        dir.path().join("root.pem"),
    );
    std::fs::write(&cert, dev.cert_pem()).expect("w");
    std::fs::write(&key, dev.key_pem()).expect("w");
    std::fs::write(&root, service.root_pem()).expect("w");
    let idevid_before = std::fs::read(&cert).expect("r");
    let ldir = dir.path().join("ldevid");
    let hook_log = dir.path().join("hook.log");
    let mut agent = tokio::process::Command::new(artifact("devid-agent"))
        .args(["connect", "--stay", "--json", "--broker", &broker.addr()])
        .args(["--cert", &p(&cert), "--key", &p(&key), "--root", &p(&root)])
        .args(["--broker-name", NAME, "--renew", "est", "--est-url"])
        .arg(format!("https://localhost:{tls_port}"))
        .args(["--ldevid-dir", &p(&ldir), "--retry-min", "1s", "--retry-max", "2s"])
        .args(["--enroll-jitter", "1s"])
        .arg("--exec")
        .arg(format!(
            "openssl x509 -noout -serial -in \"$DEVID_CERT\" >> {0} && echo \"$DEVID_SERIAL\" >> {0}",
            hook_log.display()
        ))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn devid-agent");
    let mut lines = BufReader::new(agent.stdout.take().expect("stdout")).lines();

    // 1. Enrollment with the IDevID, before the first connection.
    let ev = next_json(&mut lines, "the enrollment").await;
    assert_eq!(ev["event"], "renewed", "{ev}");
    assert_eq!(ev["with"], "idevid", "{ev}");
    assert_eq!(ev["call"], "simpleenroll", "{ev}");
    let first = ev["serial"].as_str().expect("serial").to_owned();
    assert_ne!(first, norm(&dev.serial));
    // 2. Connected (DEVID-1 through the plugin) with it.
    let ev = next_json(&mut lines, "the first connection").await;
    assert_eq!(ev["event"], "connected", "{ev}");
    assert_eq!(ev["client_id"], dev.client_id.as_str());
    assert_eq!(file_serial(&ldir.join("ldevid.crt")), first);
    // 3. Renewed when due, with the LDevID, and connected again with the new one.
    let mut ev = next_json(&mut lines, "the renewal").await;
    while ev["event"] != "renewed" {
        assert_ne!(ev["event"], "renew_failed", "{ev}");
        ev = next_json(&mut lines, "the renewal").await;
    }
    assert_eq!(ev["with"], "ldevid", "{ev}");
    assert_eq!(ev["call"], "simplereenroll", "{ev}");
    let second = ev["serial"].as_str().expect("serial").to_owned();
    assert_ne!(second, first);
    let ev = next_json(&mut lines, "the connection with the renewed LDevID").await;
    assert_eq!(ev["event"], "connected", "{ev}");
    // A full handshake with the new certificate, not a resumption of the old one's session.
    assert_eq!(ev["resumed"], false, "{ev}");
    assert_eq!(file_serial(&ldir.join("ldevid.crt")), second);
    // The old pair goes once the new one has connected.
    assert!(
        eventually(Duration::from_secs(5), || !ldir
            .join("ldevid.prev.key")
            .exists())
        .await,
        "the old pair outlived the new one's first connection"
    );
    agent.start_kill().expect("kill agent");
    let _ = agent.wait().await;

    // The hook saw each new certificate in place.
    let hook = std::fs::read_to_string(&hook_log).expect("hook log");
    let lines: Vec<&str> = hook.lines().collect();
    assert_eq!(lines.len(), 4, "{hook}");
    for (i, serial) in [&first, &second].iter().enumerate() {
        assert_eq!(norm(lines[2 * i]), serial.as_str());
        assert_eq!(lines[2 * i + 1], serial.as_str());
    }
    // The IDevID files were never touched; the LDevID key is private.
    assert_eq!(std::fs::read(&cert).expect("r"), idevid_before);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(ldir.join("ldevid.key"))
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Offline past expiry, within the model's renewal_grace: the expired LDevID re-enrolls.
    let renew_once = || {
        let mut c = std::process::Command::new(artifact("devid-agent"));
        c.args(["renew", "--json", "--broker", &broker.addr()])
            .args(["--cert", &p(&cert), "--key", &p(&key), "--root", &p(&root)])
            .args(["--renew", "est", "--est-url"])
            .arg(format!("https://localhost:{tls_port}"))
            .args(["--ldevid-dir", &p(&ldir), "--retry-min", "1s"])
            .args(["--enroll-jitter", "1s"]);
        c
    };
    let wait_expired = |path: &Path| {
        let out = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-checkend", "0", "-in"])
            .arg(path)
            .output()
            .expect("openssl");
        !out.status.success()
    };
    assert!(
        eventually(Duration::from_secs(30), || wait_expired(
            &ldir.join("ldevid.crt")
        ))
        .await,
        "the LDevID did not expire"
    );
    // notAfter is inclusive, to the second.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let out = renew_once().output().expect("devid-agent renew");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev: Value = serde_json::from_str(text.lines().last().unwrap_or("")).expect("JSON");
    assert_eq!(
        (
            ev["event"].as_str(),
            ev["with"].as_str(),
            ev["call"].as_str()
        ),
        (Some("renewed"), Some("ldevid"), Some("simplereenroll")),
        "{text}"
    );
    let third = ev["serial"].as_str().expect("serial").to_owned();
    // Past the grace (the model now has none): refused, and the IDevID enrolls again.
    let (s, v) = service
        .call(
            "PUT",
            &format!("/v1/models/{MODEL}"),
            Some(json!({"ldevid_validity": VALIDITY, "renewal_grace": "0"})),
        )
        .await;
    assert!((200..300).contains(&s), "PUT model: {s} {v}");
    assert!(
        eventually(Duration::from_secs(30), || wait_expired(
            &ldir.join("ldevid.crt")
        ))
        .await,
        "the LDevID did not expire"
    );
    // notAfter is inclusive, to the second.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let out = renew_once().output().expect("devid-agent renew");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let evs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(evs.len(), 2, "{text}");
    assert_eq!(
        (evs[0]["event"].as_str(), evs[0]["with"].as_str()),
        (Some("renew_failed"), Some("ldevid")),
        "{text}"
    );
    assert_eq!(
        (
            evs[1]["event"].as_str(),
            evs[1]["with"].as_str(),
            evs[1]["call"].as_str()
        ),
        (Some("renewed"), Some("idevid"), Some("simpleenroll")),
        "{text}"
    );
    let fourth = evs[1]["serial"].as_str().expect("serial").to_owned();
    assert_eq!(file_serial(&ldir.join("ldevid.crt")), fourth);

    // The server knows every LDevID as this device's.
    for serial in [&first, &second, &third, &fourth] {
        let (s, v) = service
            .call("GET", &format!("/v1/devices/{}", dev.client_id), None)
            .await;
        assert_eq!(s, 200, "{v}");
        assert!(
            v.to_string().to_lowercase().contains(serial.as_str()),
            "{serial} not in {v}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_enrolls_renews_and_connects_with_each_ldevid_over_est() {
    for backend in backends() {
        run(backend).await;
    }
}

/// Over MQTT: the agent connects with its IDevID, enrolls its LDevID in band (a new key, with
/// the re-key proof), reconnects with it, renews in band when due and reconnects again.
async fn run_mqtt(backend: Backend) {
    let service = Service::start_with(&backend, &[]).await;
    let (s, v) = service
        .call(
            "PUT",
            &format!("/v1/models/{MODEL}"),
            Some(json!({"ldevid_validity": VALIDITY})),
        )
        .await;
    assert!((200..300).contains(&s), "PUT model: {s} {v}");
    let (s, v) = service
        .call(
            "POST",
            "/v1/devices",
            Some(
                json!({"hardware_serial": format!("hw-mqtt-{}", backend.name()),
                        "model": MODEL, "generate_key": true}),
            ),
        )
        .await;
    assert_eq!(s, 201, "register: {v}");
    let dev = DeviceCreds::from_registered(&serde_json::from_value(v).expect("registered"));
    let identity = service.enroll_broker(NAME).await;
    let broker = Broker::start(BrokerSettings::new(&service, identity));
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key, root) = (
        dir.path().join("idevid.crt"),
        dir.path().join("idevid.key"),
        dir.path().join("root.pem"),
    );
    std::fs::write(&cert, dev.cert_pem()).expect("w");
    std::fs::write(&key, dev.key_pem()).expect("w");
    std::fs::write(&root, service.root_pem()).expect("w");
    let ldir = dir.path().join("ldevid");
    let hook_log = dir.path().join("hook.log");
    let mut agent = tokio::process::Command::new(artifact("devid-agent"))
        .args(["connect", "--stay", "--json", "--broker", &broker.addr()])
        .args(["--cert", &p(&cert), "--key", &p(&key), "--root", &p(&root)])
        .args(["--broker-name", NAME, "--renew", "mqtt"])
        .args([
            "--ldevid-dir",
            &p(&ldir),
            "--retry-min",
            "1s",
            "--retry-max",
            "2s",
            "--enroll-jitter",
            "1s",
        ])
        .arg("--exec")
        .arg(format!("echo \"$DEVID_SERIAL\" >> {}", hook_log.display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn devid-agent");
    let mut lines = BufReader::new(agent.stdout.take().expect("stdout")).lines();
    let mut serials = Vec::new();
    let mut connects = 0;
    let expect = ["connected", "renewed", "connected", "renewed", "connected"];
    let mut with = ["idevid", "ldevid"].iter();
    for want in expect.iter() {
        let ev = next_json(&mut lines, want).await;
        assert_eq!(ev["event"], *want, "{ev}");
        match *want {
            "connected" => {
                connects += 1;
                assert_eq!(ev["client_id"], dev.client_id.as_str());
                if connects > 1 {
                    assert_eq!(ev["resumed"], false, "{ev}");
                    assert_eq!(
                        file_serial(&ldir.join("ldevid.crt")),
                        *serials.last().expect("a serial")
                    );
                }
            }
            _ => {
                assert_eq!(ev["with"], *with.next().expect("two renewals"), "{ev}");
                serials.push(ev["serial"].as_str().expect("serial").to_owned());
            }
        }
    }
    assert!(
        eventually(Duration::from_secs(5), || !ldir
            .join("ldevid.prev.key")
            .exists())
        .await
    );
    agent.start_kill().expect("kill");
    let _ = agent.wait().await;
    let hook = std::fs::read_to_string(&hook_log).expect("hook log");
    assert_eq!(hook.lines().collect::<Vec<_>>(), serials);
    // Both LDevIDs were issued by the service for this device.
    let (s, v) = service
        .call("GET", &format!("/v1/devices/{}", dev.client_id), None)
        .await;
    assert_eq!(s, 200, "{v}");
    for serial in &serials {
        assert!(
            v.to_string().to_lowercase().contains(serial.as_str()),
            "{serial} not in {v}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_enrolls_renews_and_connects_with_each_ldevid_over_mqtt() {
    for backend in backends() {
        run_mqtt(backend).await;
    }
}
