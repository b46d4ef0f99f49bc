//! Every command against a real devid-server (SQLite, temporary data directory), in table and
//! JSON output, with its exit code. Needs `cargo build --workspace` first (see common/mod.rs).

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn wait_exit(child: &mut std::process::Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("child did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

use common::{make_csr, mode, openssl_verify, Server};

fn filters() -> Vec<(&'static str, &'static str)> {
    vec![
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "[TIME]"),
        (r"\b[0-9a-f]{64}\b", "[SHA256]"),
        (r"\b[0-9a-f]{40}\b", "[SHA1]"),
        (r"\b[0-9a-f]{30,34}\b", "[SERIAL]"),
        (r"\bthermo[0-9A-Za-z]{17}\b", "[CLIENT_ID]"),
        (r"\b[0-9a-f]{12}\b", "[TOKEN_ID]"),
    ]
}

#[test]
fn ca_show_and_export() {
    let s = Server::start();
    let r = s.devid(&["ca", "show"]).ok();
    assert!(r.stdout.contains("role:       issuing"), "{}", r.stdout);
    assert!(r.stdout.contains("role:       root"), "{}", r.stdout);
    insta::with_settings!({filters => filters()}, {
        insta::assert_snapshot!("ca_show_table", r.stdout);
    });

    let j = s.devid(&["-o", "json", "ca", "show"]).ok().json();
    let certs = j["certificates"].as_array().expect("certificates");
    assert_eq!(certs.len(), 2);
    assert_eq!(certs[0]["role"], "issuing");
    assert_eq!(certs[1]["role"], "root");
    assert_eq!(certs[1]["subject"], certs[1]["issuer"]);
    assert_eq!(certs[0]["issuer"], certs[1]["subject"]);
    assert_eq!(
        certs[0]["fingerprint_sha256"].as_str().expect("fp").len(),
        64
    );

    let out = s.work().join("chain.pem");
    s.devid(&["ca", "export", "--out", out.to_str().expect("utf8")])
        .ok();
    let text = std::fs::read_to_string(&out).expect("chain written");
    assert_eq!(text.matches("BEGIN CERTIFICATE").count(), 2);
    let stdout = s.devid(&["ca", "export", "--out", "-"]).ok().stdout;
    assert_eq!(stdout, text);
}

#[test]
fn device_lifecycle_in_table_and_json() {
    let s = Server::start();
    let w = s.work();
    let out = w.join("flash");
    let out_s = out.to_str().expect("utf8");

    // register --generate-key: prints the ClientID, writes crt, chain, key (0600).
    let r = s
        .devid(&[
            "device",
            "register",
            "--serial",
            "SN-0001",
            "--model",
            "thermo-v2",
            "--meta",
            "line=3",
            "--generate-key",
            "--out",
            out_s,
        ])
        .ok();
    let id = r.stdout.trim().to_string();
    devid_core::clientid::verify_check(&id).expect("a generated ClientID");
    let crt = out.join(format!("{id}.crt"));
    let key = out.join(format!("{id}.key"));
    assert_eq!(mode(&key), 0o600);
    openssl_verify(&out.join("chain.pem"), &crt).expect("openssl verify");
    // <ClientID>.chain.pem: the certificate then the issuing CA, enough for a peer that trusts
    // only the root.
    let device_chain =
        std::fs::read_to_string(out.join(format!("{id}.chain.pem"))).expect("<ClientID>.chain.pem");
    let ca_chain = std::fs::read_to_string(out.join("chain.pem")).expect("chain.pem");
    let issuing_end = ca_chain.find("-----END CERTIFICATE-----").expect("issuing") + 26;
    assert_eq!(
        device_chain,
        format!(
            "{}{}",
            std::fs::read_to_string(&crt).expect("crt"),
            &ca_chain[..issuing_end]
        )
    );
    let root = w.join("root.pem");
    std::fs::write(&root, &ca_chain[issuing_end..]).expect("root");
    let o = std::process::Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&root)
        .arg("-untrusted")
        .arg(out.join(format!("{id}.chain.pem")))
        .arg(&crt)
        .output()
        .expect("openssl");
    assert!(o.status.success(), "{o:?}");

    // register --csr, JSON: the Registered object.
    let (_k, csr) = make_csr("SN-0002");
    let csr_path = w.join("sn2.csr");
    std::fs::write(&csr_path, &csr).expect("write csr");
    let csr_s = csr_path.to_str().expect("utf8");
    let j = s
        .devid(&[
            "-o",
            "json",
            "device",
            "register",
            "--serial",
            "SN-0002",
            "--model",
            "thermo-v2",
            "--csr",
            csr_s,
            "--out",
            out_s,
        ])
        .ok()
        .json();
    assert_eq!(j["created"], true);
    let id2 = j["client_id"].as_str().expect("client_id").to_string();
    assert!(out.join(format!("{id2}.crt")).is_file());
    assert!(!out.join(format!("{id2}.key")).exists());
    // The same request again: the existing device, not a new certificate.
    let again = s
        .devid(&[
            "-o",
            "json",
            "device",
            "register",
            "--serial",
            "SN-0002",
            "--model",
            "thermo-v2",
            "--csr",
            csr_s,
            "--out",
            out_s,
        ])
        .ok()
        .json();
    assert_eq!(again["created"], false);
    assert_eq!(again["serial"], j["serial"]);
    // A different CSR for the same serial: conflict, exit 5.
    let (_k, other) = make_csr("SN-0002");
    std::fs::write(&csr_path, &other).expect("write csr");
    let r = s
        .devid(&[
            "device", "register", "--serial", "SN-0002", "--csr", csr_s, "--out", out_s,
        ])
        .code(5);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.starts_with("error: "), "{}", r.stderr);
    // A garbage CSR is refused before anything is sent.
    std::fs::write(&csr_path, "not a csr").expect("write");
    s.devid(&[
        "device", "register", "--serial", "SN-9", "--csr", csr_s, "--out", out_s,
    ])
    .code(1);

    // list: table and JSON, filters.
    let r = s.devid(&["device", "list"]).ok();
    assert!(r.stdout.starts_with("CLIENT_ID"), "{}", r.stdout);
    assert!(r.stdout.contains(&id) && r.stdout.contains(&id2));
    let j = s
        .devid(&[
            "-o", "json", "device", "list", "--status", "active", "--since", "1h",
        ])
        .ok()
        .json();
    assert_eq!(j["items"].as_array().expect("items").len(), 2);
    let j = s
        .devid(&["-o", "json", "device", "list", "--limit", "1"])
        .ok()
        .json();
    assert_eq!(j["items"].as_array().expect("items").len(), 1);
    assert!(j["next_cursor"].is_string());
    let j = s
        .devid(&["-o", "json", "device", "list", "--model", "nope"])
        .ok()
        .json();
    assert_eq!(j["items"].as_array().expect("items").len(), 0);
    s.devid(&["device", "list", "--status", "gone"]).code(2);
    // By the serial on the box's label.
    let j = s
        .devid(&["-o", "json", "device", "list", "--serial", "SN-0002"])
        .ok()
        .json();
    assert_eq!(j["items"].as_array().expect("items").len(), 1);
    assert_eq!(j["items"][0]["client_id"], id2.as_str());

    // show: table snapshot and JSON.
    let r = s.devid(&["device", "show", &id]).ok();
    insta::with_settings!({filters => filters()}, {
        insta::assert_snapshot!("device_show_table", r.stdout);
    });
    let j = s.devid(&["-o", "json", "device", "show", &id]).ok().json();
    assert_eq!(j["status"], "active");
    assert_eq!(j["metadata"]["line"], "3");
    let cert_serial = j["certificates"][0]["serial"]
        .as_str()
        .expect("serial")
        .to_string();
    // Not found: exit 4 (a well-formed ClientID that does not exist).
    let missing = devid_core::clientid::generate("thermo", &[7; 10]).expect("id");
    s.devid(&["device", "show", &missing]).code(4);

    // suspend / resume.
    let j = s
        .devid(&[
            "-o",
            "json",
            "device",
            "suspend",
            &id,
            "--comment",
            "repair",
        ])
        .ok()
        .json();
    assert_eq!(j["status"], "suspended");
    assert_eq!(j["certificates"][0]["status"], "hold");
    let r = s.devid(&["device", "resume", &id]).ok();
    assert!(
        r.stdout.contains("status:            active"),
        "{}",
        r.stdout
    );

    // cert show / revoke.
    let r = s.devid(&["cert", "show", &cert_serial]).ok();
    assert!(r.stdout.contains("BEGIN CERTIFICATE"), "{}", r.stdout);
    let j = s
        .devid(&[
            "-o",
            "json",
            "cert",
            "revoke",
            &cert_serial,
            "--reason",
            "superseded",
        ])
        .ok()
        .json();
    assert_eq!(j["status"], "revoked");
    assert_eq!(j["revocation_reason"], "superseded");
    s.devid(&["cert", "revoke", "00ff", "--reason", "superseded"])
        .code(4);

    // device revoke: --yes, or no terminal (tests run without one).
    let r = s
        .devid(&["device", "revoke", &id2, "--reason", "keyCompromise"])
        .ok();
    assert!(
        r.stdout.contains("status:            revoked"),
        "{}",
        r.stdout
    );
    let j = s.devid(&["-o", "json", "device", "show", &id2]).ok().json();
    assert_eq!(j["revocation_reason"], "keyCompromise");

    // revocations list: suspend, resume, cert revoke, device revoke.
    let j = s.devid(&["-o", "json", "revocations", "list"]).ok().json();
    let entries = j["entries"].as_array().expect("entries");
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().expect("action"))
        .collect();
    assert_eq!(actions, ["suspended", "resumed", "revoked", "revoked"]);
    assert_eq!(j["head"], 4);
    let j = s
        .devid(&["-o", "json", "revocations", "list", "--since", "3"])
        .ok()
        .json();
    assert_eq!(j["entries"].as_array().expect("entries").len(), 1);
    let r = s.devid(&["revocations", "list"]).ok();
    assert!(r.stdout.starts_with("SEQ"), "{}", r.stdout);
    assert!(r.stdout.ends_with("head: 4\n"), "{}", r.stdout);

    // crl fetch --verify: both revoked serials listed; openssl agrees.
    let crl = w.join("crl.der");
    let crl_s = crl.to_str().expect("utf8");
    let j = s
        .devid(&["-o", "json", "crl", "fetch", "--out", crl_s, "--verify"])
        .ok()
        .json();
    assert_eq!(j["verified"], true);
    assert_eq!(j["revoked_serials"].as_array().expect("serials").len(), 2);
    assert!(j["revoked_serials"]
        .as_array()
        .expect("serials")
        .iter()
        .any(|v| v == &serde_json::json!(cert_serial)));
    let r = s.devid(&["crl", "fetch", "--out", crl_s]).ok();
    assert!(r.stdout.contains("not checked"), "{}", r.stdout);
    let o = std::process::Command::new("openssl")
        .args(["crl", "-inform", "DER", "-noout", "-in", crl_s])
        .output()
        .expect("openssl");
    assert!(o.status.success());

    // audit: the registrations and revocations are there.
    let j = s.devid(&["-o", "json", "audit"]).ok().json();
    let actions: Vec<&str> = j["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["action"].as_str().expect("action"))
        .collect();
    assert!(actions.contains(&"device.register"), "{actions:?}");
    assert!(actions.contains(&"device.revoke"), "{actions:?}");
    // The suspension's --comment is kept with it.
    let suspended: Vec<&serde_json::Value> = j["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["action"] == "device.suspend")
        .collect();
    assert_eq!(suspended.len(), 1, "{j}");
    assert_eq!(suspended[0]["detail"], "repair");
    let r = s.devid(&["audit", "--since", "1h"]).ok();
    assert!(r.stdout.starts_with("ID"), "{}", r.stdout);
    assert!(r.stdout.contains("DETAIL"), "{}", r.stdout);
    assert!(r.stdout.contains("repair"), "{}", r.stdout);
}

#[test]
fn tokens_roles_and_exit_codes() {
    let s = Server::start();
    // list: table (a fresh server has the bootstrap admin token only, so the order is fixed).
    let r = s.devid(&["token", "list"]).ok();
    insta::with_settings!({filters => filters()}, {
        insta::assert_snapshot!("token_list_table", r.stdout);
    });
    // create: table shows the secret once; JSON carries it.
    let r = s
        .devid(&[
            "token",
            "create",
            "--role",
            "factory",
            "--name",
            "line-3",
            "--models",
            "thermo-v2",
            "--expires",
            "30d",
        ])
        .ok();
    assert!(r.stdout.contains("token:"), "{}", r.stdout);
    assert!(r.stderr.contains("shown once"), "{}", r.stderr);
    let factory = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("token:"))
        .expect("token line")
        .trim()
        .to_string();
    let auditor = s.token("auditor", "audit-1");

    // list: JSON.
    let j = s.devid(&["-o", "json", "token", "list"]).ok().json();
    let items = j["items"].as_array().expect("items");
    assert_eq!(items.len(), 3);
    let line3 = items
        .iter()
        .find(|t| t["name"] == "line-3")
        .expect("line-3");
    assert_eq!(line3["models"], serde_json::json!(["thermo-v2"]));
    assert!(line3["expires_at"].is_string());
    assert!(items.iter().all(|t| t.get("token").is_none()));

    // The factory token registers its model, not another (403: exit 3), and cannot list.
    let out = s.work().join("f");
    let out_s = out.to_str().expect("utf8");
    s.devid_as(
        &factory,
        &[
            "device",
            "register",
            "--serial",
            "F1",
            "--model",
            "thermo-v2",
            "--generate-key",
            "--out",
            out_s,
        ],
    )
    .ok();
    s.devid_as(
        &factory,
        &[
            "device",
            "register",
            "--serial",
            "F2",
            "--model",
            "other",
            "--generate-key",
            "--out",
            out_s,
        ],
    )
    .code(3);
    s.devid_as(&factory, &["device", "list"]).code(3);
    // The auditor reads but does not change.
    s.devid_as(&auditor, &["device", "list"]).ok();
    s.devid_as(&auditor, &["token", "list"]).ok();
    let r = s
        .devid_as(
            &auditor,
            &["token", "create", "--role", "admin", "--name", "x"],
        )
        .code(3);
    assert!(r.stderr.contains("403"), "{}", r.stderr);
    // A bad token: 401, exit 3; no token at all: the hint says how to give one.
    s.devid_as("devid_nope_nope", &["device", "list"]).code(3);
    let r = common::run_in(
        &s.work(),
        &[("DEVID_SERVER", s.url.as_str())],
        &["device", "list"],
    )
    .code(3);
    assert!(r.stderr.contains("--token-file"), "{}", r.stderr);

    // audit --actor.
    let j = s
        .devid(&["-o", "json", "audit", "--actor", "line-3"])
        .ok()
        .json();
    let items = j["items"].as_array().expect("items");
    assert!(!items.is_empty());
    assert!(
        items.iter().all(|e| e["actor_name"] == "line-3"),
        "{items:?}"
    );

    // revoke: the token stops working.
    let id = line3["id"].as_str().expect("id");
    let j = s.devid(&["-o", "json", "token", "revoke", id]).ok().json();
    assert!(j["revoked_at"].is_string());
    s.devid_as(
        &factory,
        &[
            "device",
            "register",
            "--serial",
            "F3",
            "--model",
            "thermo-v2",
            "--generate-key",
            "--out",
            out_s,
        ],
    )
    .code(3);
    s.devid(&["token", "revoke", "ffffffffffff"]).code(4);
}

/// Lines of a child's stdout, read on a thread so a test can wait with a timeout.
struct Lines(std::sync::mpsc::Receiver<String>);

impl Lines {
    fn new(stdout: std::process::ChildStdout) -> Lines {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines(rx)
    }

    #[track_caller]
    fn json(&self, timeout: Duration) -> serde_json::Value {
        let line = self
            .0
            .recv_timeout(timeout)
            .unwrap_or_else(|e| panic!("no line from watch within {timeout:?}: {e}"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }
}

#[test]
fn watch_follows_the_feed_and_resumes_after_a_server_restart() {
    let mut s = Server::start();
    let out = s.work().join("w");
    let out_s = out.to_str().expect("utf8");
    let mut ids = Vec::new();
    for serial in ["W1", "W2", "W3"] {
        let r = s
            .devid(&[
                "device",
                "register",
                "--serial",
                serial,
                "--model",
                "thermo-v2",
                "--generate-key",
                "--out",
                out_s,
            ])
            .ok();
        ids.push(r.stdout.trim().to_string());
    }
    s.devid(&["device", "suspend", &ids[0]]).ok();
    s.devid(&["device", "resume", &ids[0]]).ok();

    // --since 1 sends Last-Event-ID: 1, so entry 2 (made before the watch started) comes first.
    let mut child = s
        .devid_cmd()
        .args([
            "-o",
            "json",
            "revocations",
            "watch",
            "--since",
            "1",
            "--count",
            "3",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn watch");
    let lines = Lines::new(child.stdout.take().expect("stdout"));
    let first = lines.json(Duration::from_secs(30));
    assert_eq!(first["seq"], 2);
    assert_eq!(first["action"], "resumed");

    s.devid(&["device", "suspend", &ids[1]]).ok();
    let live = lines.json(Duration::from_secs(30));
    assert_eq!(live["seq"], 3);
    assert_eq!(live["client_id"], ids[1].as_str());

    // The server goes away and comes back; the watch reconnects on its own and continues
    // after the last entry it printed.
    s.restart();
    s.devid(&[
        "device",
        "revoke",
        &ids[2],
        "--reason",
        "keyCompromise",
        "--yes",
    ])
    .ok();
    let after = lines.json(Duration::from_secs(60));
    assert_eq!(after["seq"], 4);
    assert_eq!(after["reason"], "keyCompromise");
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert!(status.success(), "watch exited with {status}");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
        .expect("stderr");
    assert!(err.contains("reconnecting"), "{err}");

    // Table form prints a header and one line per entry.
    let r = s
        .devid(&["revocations", "watch", "--since", "0", "--count", "2"])
        .ok();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", r.stdout);
    assert!(lines[0].starts_with("SEQ"));
    assert!(lines[1].starts_with("1  "));
}

#[test]
fn default_token_file_is_used_for_the_default_local_server_only() {
    // The default server is 127.0.0.1:8080, which a test cannot count on owning; check instead
    // that a token file in ./devid-data is NOT used for another server.
    let s = Server::start();
    let w = s.work();
    std::fs::create_dir_all(w.join("devid-data")).expect("mkdir");
    std::fs::copy(s.token_file(), w.join("devid-data/admin.token")).expect("copy");
    common::run_in(&w, &[("DEVID_SERVER", s.url.as_str())], &["token", "list"]).code(3);
}

#[test]
fn broker_model_and_device_policy_commands() {
    let s = Server::start();
    let w = s.work();

    // broker enroll: key made here (0600), certificate verifies against the chain.
    let dir = w.join("broker");
    let dir_s = dir.to_str().expect("utf8");
    let j = s
        .devid(&[
            "-o",
            "json",
            "broker",
            "enroll",
            "--name",
            "mqtt.example.com",
            "--out",
            dir_s,
        ])
        .ok()
        .json();
    assert_eq!(j["name"], "mqtt.example.com");
    assert_eq!(mode(&dir.join("mqtt.example.com.key")), 0o600);
    openssl_verify(&dir.join("chain.pem"), &dir.join("mqtt.example.com.crt"))
        .expect("broker cert verifies");
    s.devid(&["broker", "enroll", "--name", "bad name", "--out", dir_s])
        .code(2);

    // model set / show / list.
    let j = s
        .devid(&[
            "-o",
            "json",
            "model",
            "set",
            "thermo-v2",
            "--prefix",
            "THERMO",
            "--message-auth",
            "required",
        ])
        .ok()
        .json();
    assert_eq!(j["client_id_prefix"], "THERMO");
    assert_eq!(j["message_auth"], "required");
    // Unnamed settings keep their values.
    let j = s
        .devid(&[
            "-o",
            "json",
            "model",
            "set",
            "thermo-v2",
            "--publish",
            "t/%c/up",
        ])
        .ok()
        .json();
    assert_eq!(j["client_id_prefix"], "THERMO");
    assert_eq!(j["topics"]["publish"], serde_json::json!(["t/%c/up"]));
    let r = s.devid(&["model", "show", "thermo-v2"]).ok();
    assert!(
        r.stdout.contains("client_id_prefix: THERMO"),
        "{}",
        r.stdout
    );
    // LDevID settings: shown with their defaults, set, checked by their rules.
    let shown = |key: &str, value: &str| {
        r.stdout.lines().any(|l| {
            l.split_once(':')
                .is_some_and(|(k, v)| k.trim() == key && v.trim() == value)
        })
    };
    assert!(
        shown("ldevid_validity", "90d")
            && shown("renewal_grace", "30d")
            && shown("connect_with", "any"),
        "{}",
        r.stdout
    );
    let j = s
        .devid(&[
            "-o",
            "json",
            "model",
            "set",
            "thermo-v2",
            "--ldevid-validity",
            "30d",
            "--renewal-grace",
            "0",
            "--connect-with",
            "ldevid",
        ])
        .ok()
        .json();
    assert_eq!(
        (
            &j["ldevid_validity"],
            &j["renewal_grace"],
            &j["connect_with"]
        ),
        (
            &serde_json::json!("30d"),
            &serde_json::json!("0"),
            &serde_json::json!("ldevid")
        )
    );
    assert_eq!(
        j["client_id_prefix"], "THERMO",
        "unnamed settings keep their values"
    );
    s.devid(&["model", "set", "thermo-v2", "--ldevid-validity", "91d"])
        .code(2);
    s.devid(&["model", "set", "thermo-v2", "--connect-with", "idevid"])
        .code(2);
    let j = s
        .devid(&[
            "-o",
            "json",
            "model",
            "set",
            "thermo-v2",
            "--connect-with",
            "any",
        ])
        .ok()
        .json();
    assert_eq!(j["connect_with"], "any");
    assert_eq!(j["ldevid_validity"], "30d");
    let r = s.devid(&["model", "list"]).ok();
    assert!(r.stdout.contains("thermo-v2"), "{}", r.stdout);
    s.devid(&["model", "set", "thermo-v2", "--prefix", "TOOLONGPREFIX"])
        .code(2);

    // A new device takes the model's prefix; status, policy, allowlist.
    let out = w.join("flash");
    let id = s
        .devid(&[
            "device",
            "register",
            "--serial",
            "P1",
            "--model",
            "thermo-v2",
            "--generate-key",
            "--out",
            out.to_str().expect("utf8"),
        ])
        .ok()
        .stdout
        .trim()
        .to_string();
    assert!(id.starts_with("THERMO"), "{id}");
    let j = s
        .devid(&["-o", "json", "device", "status", &id])
        .ok()
        .json();
    assert_eq!(j["status"], "active");
    let j = s
        .devid(&[
            "-o",
            "json",
            "device",
            "policy",
            &id,
            "--subscribe",
            "a/#,b/#",
        ])
        .ok()
        .json();
    assert_eq!(j["policy"]["subscribe"], serde_json::json!(["a/#", "b/#"]));
    let j = s
        .devid(&[
            "-o",
            "json",
            "device",
            "allowlist",
            &id,
            "10.20.0.0/16",
            "192.0.2.7",
        ])
        .ok()
        .json();
    assert_eq!(j["allowed_cidrs"].as_array().expect("cidrs").len(), 2);
    let r = s.devid(&["device", "allowlist", &id, "--clear"]).ok();
    assert!(r.stdout.contains("allowed_cidrs:   any"), "{}", r.stdout);
    // Refused by core's CIDR rule before anything is sent: a usage error.
    s.devid(&["device", "allowlist", &id, "not-a-cidr"]).code(2);
    s.devid(&["device", "policy", &id]).code(2);
}

/// Runs devid under `script` so it has a terminal, typing `input`.
fn on_terminal(s: &Server, args: &str, input: &str) -> (i32, String) {
    use std::io::Write as _;
    let cmd = format!("{} {args}", env!("CARGO_BIN_EXE_devid"));
    let mut child = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("DEVID_SERVER", &s.url)
        .env("DEVID_TOKEN_FILE", s.token_file())
        .env("XDG_CONFIG_HOME", s.work().join("xdg"))
        .current_dir(s.work())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("type");
    let status = wait_exit(&mut child, Duration::from_secs(30));
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut out)
        .expect("read");
    (status.code().unwrap_or(-1), out)
}

#[test]
fn revoke_asks_for_confirmation_on_a_terminal() {
    let s = Server::start();
    let out = s.work().join("t");
    let id = s
        .devid(&[
            "device",
            "register",
            "--serial",
            "T1",
            "--generate-key",
            "--out",
            out.to_str().expect("utf8"),
        ])
        .ok()
        .stdout
        .trim()
        .to_string();
    let args = format!("device revoke {id} --reason keyCompromise");
    let (code, text) = on_terminal(&s, &args, "n\n");
    assert!(text.contains("[y/N]"), "{text}");
    assert_eq!(code, 1, "{text}");
    let j = s.devid(&["-o", "json", "device", "show", &id]).ok().json();
    assert_eq!(j["status"], "active");

    let (code, text) = on_terminal(&s, &args, "y\n");
    assert_eq!(code, 0, "{text}");
    let j = s.devid(&["-o", "json", "device", "show", &id]).ok().json();
    assert_eq!(j["status"], "revoked");
}

#[test]
fn register_keeps_its_key_when_the_answer_is_lost_and_reuses_it() {
    let s = Server::start();
    let w = s.work();
    let out = w.join("one");
    let out_s = out.to_str().expect("utf8");
    let args = [
        "device",
        "register",
        "--serial",
        "LOST-1",
        "--model",
        "thermo-v2",
        "--generate-key",
        "--out",
        out_s,
    ];
    // The server cannot be reached: the key and CSR wait in a pending file (0600).
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    let r = common::run_in(
        &w,
        &[("DEVID_SERVER", dead.as_str()), ("DEVID_TOKEN", "x")],
        &args,
    )
    .code(1);
    assert!(r.stderr.contains("could not reach"), "{}", r.stderr);
    let pending = out.join(".pending-LOST-1.pem");
    assert_eq!(mode(&pending), 0o600);
    let pending_text = std::fs::read_to_string(&pending).expect("pending");

    // Re-run against the server: the pending CSR is sent, its key becomes <ClientID>.key.
    let id = s.devid(&args).ok().stdout.trim().to_string();
    assert!(!pending.exists());
    let key = std::fs::read_to_string(out.join(format!("{id}.key"))).expect("key");
    assert!(
        pending_text.starts_with(&key),
        "the key is not the pending one"
    );
    openssl_verify(&out.join("chain.pem"), &out.join(format!("{id}.crt"))).expect("verify");
}

#[test]
fn register_fails_when_the_device_it_gets_back_is_revoked_or_suspended() {
    let s = Server::start();
    let w = s.work();
    let (_k, csr) = make_csr("RS-1");
    let csr_path = w.join("rs1.csr");
    std::fs::write(&csr_path, &csr).expect("write csr");
    let register = |out: &str| {
        s.devid(&[
            "device",
            "register",
            "--serial",
            "RS-1",
            "--csr",
            csr_path.to_str().expect("utf8"),
            "--out",
            out,
        ])
    };
    let id = register("first").ok().stdout.trim().to_string();

    s.devid(&["device", "suspend", &id]).ok();
    let r = register("second").code(1);
    assert_eq!(
        r.stderr.trim_end(),
        format!(
            "error: hardware_serial \"RS-1\" is registered as device {id}, which is suspended: its \
             files were not written; resume it, then run this again to write its files"
        )
    );
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    assert!(!w.join("second").join(format!("{id}.crt")).exists());

    s.devid(&[
        "device",
        "revoke",
        &id,
        "--reason",
        "keyCompromise",
        "--yes",
    ])
    .ok();
    let r = register("second").code(1);
    assert!(r.stderr.contains("which is revoked"), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(!w.join("second").join(format!("{id}.crt")).exists());
}

/// The pending file of `--generate-key` for `serial` in `out`: (path, key PEM, CSR PEM).
fn pending(out: &std::path::Path, serial: &str) -> (std::path::PathBuf, String, String) {
    let path = out.join(format!(".pending-{serial}.pem"));
    let text = std::fs::read_to_string(&path).expect("pending file");
    let at = text
        .find("-----BEGIN CERTIFICATE REQUEST-----")
        .expect("csr");
    (path, text[..at].to_string(), text[at..].to_string())
}

#[test]
fn generate_key_pending_file_is_removed_on_refusal_and_kept_while_it_may_be_registered() {
    let s = Server::start();
    let w = s.work();
    let out = w.join("flash");
    let out_s = out.to_str().expect("utf8");
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    let args = |serial: &'static str| {
        [
            "device",
            "register",
            "--serial",
            serial,
            "--generate-key",
            "--out",
            out_s,
        ]
    };
    let register_csr = |serial: &str, csr: &str| {
        let p = w.join(format!("{serial}.csr"));
        std::fs::write(&p, csr).expect("csr");
        s.devid(&[
            "device",
            "register",
            "--serial",
            serial,
            "--csr",
            p.to_str().expect("utf8"),
            "--out",
            w.join("elsewhere").to_str().expect("utf8"),
        ])
        .ok()
        .stdout
        .trim()
        .to_string()
    };

    // The serial is taken by another CSR: 409, the new key was never registered, so it goes.
    register_csr("TAKEN-1", &make_csr("TAKEN-1").1);
    let r = s.devid(&args("TAKEN-1")).code(5);
    let path = out.join(".pending-TAKEN-1.pem");
    assert!(!path.exists(), "the refused key was left behind");
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "removed the key made for it ({}): nothing was registered with it",
            path.display()
        )),
        "{}",
        r.stderr
    );

    // No answer: the key waits, and the message says where and why.
    let no_answer = |serial| {
        common::run_in(
            &w,
            &[("DEVID_SERVER", dead.as_str()), ("DEVID_TOKEN", "x")],
            &args(serial),
        )
        .code(1)
    };
    let r = no_answer("LOST-2");
    let (path, _, _) = pending(&out, "LOST-2");
    assert!(
        r.stderr.contains(&format!(
            "the key waits in {}: run the same command again",
            path.display()
        )),
        "{}",
        r.stderr
    );
    // A refusal after an attempt without an answer keeps the key: that attempt may have
    // registered its CSR (and a repeated request that differs from it is refused too). Here
    // another CSR took the serial in between.
    register_csr("LOST-2", &make_csr("LOST-2").1);
    let r = s.devid(&args("LOST-2")).code(5);
    assert!(path.exists(), "a key that may be registered was removed");
    assert!(
        r.stderr
            .contains(&format!("kept the key in {}", path.display())),
        "{}",
        r.stderr
    );

    // A lost answer whose device was then revoked: the key is of no use and goes; suspended:
    // it waits until the device is resumed.
    for (serial, revoke) in [("LOST-3", true), ("LOST-4", false)] {
        no_answer(serial);
        let (path, key, csr) = pending(&out, serial);
        let id = register_csr(serial, &csr);
        if revoke {
            s.devid(&["device", "revoke", &id, "--reason", "superseded", "--yes"])
                .ok();
        } else {
            s.devid(&["device", "suspend", &id]).ok();
        }
        let r = s.devid(&args(serial)).code(1);
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
        if revoke {
            assert!(!path.exists());
            assert!(
                r.stderr
                    .contains(&format!("; removed its key ({})", path.display())),
                "{}",
                r.stderr
            );
        } else {
            assert!(path.exists());
            assert!(
                r.stderr
                    .contains(&format!("(its key waits in {})", path.display())),
                "{}",
                r.stderr
            );
            s.devid(&["device", "resume", &id]).ok();
            let again = s.devid(&args(serial)).ok().stdout.trim().to_string();
            assert_eq!(again, id);
            assert!(!path.exists());
            assert_eq!(
                std::fs::read_to_string(out.join(format!("{id}.key"))).expect("key"),
                key
            );
        }
        if revoke {
            assert!(!out.join(format!("{id}.crt")).exists());
        }
    }
}

#[test]
fn app_tokens_and_webhook_commands() {
    let s = Server::start();
    let app = s
        .devid(&[
            "-o", "json", "token", "create", "--role", "app", "--name", "dash",
        ])
        .ok()
        .json();
    assert_eq!(app["role"], "app");
    let app = app["token"].as_str().expect("token").to_string();
    s.devid_as(&app, &["device", "list"]).ok();
    let r = s.devid_as(&app, &["token", "list"]).code(3);
    assert!(r.stderr.contains("403"), "{}", r.stderr);

    let r = s
        .devid(&[
            "webhook",
            "create",
            "--url",
            "http://127.0.0.1:9/hook",
            "--kinds",
            "revoked,registered",
        ])
        .ok();
    assert!(r.stdout.contains("secret:"), "{}", r.stdout);
    assert!(r.stderr.contains("shown once"), "{}", r.stderr);
    let list = s.devid(&["-o", "json", "webhook", "list"]).ok().json();
    let id = list["items"][0]["id"].as_str().expect("id").to_string();
    assert_eq!(
        list["items"][0]["kinds"],
        serde_json::json!(["revoked", "registered"])
    );
    let d = s
        .devid(&["-o", "json", "webhook", "deliveries", &id])
        .ok()
        .json();
    assert!(d["items"].is_array(), "{d}");
    // An unknown kind is refused before any request.
    s.devid(&[
        "webhook",
        "create",
        "--url",
        "http://x/",
        "--kinds",
        "exploded",
    ])
    .code(2);
    s.devid(&["webhook", "redeliver", &id, "12345"]).code(4);
    s.devid(&["webhook", "delete", &id]).ok();
    let list = s.devid(&["-o", "json", "webhook", "list"]).ok().json();
    assert_eq!(list["items"], serde_json::json!([]));
}
