//! `devid device register-batch` against a real devid-server: resume after the CLI is killed,
//! a server restart in the middle of a run, and bad input rows.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{make_csr, mode, openssl_verify, Server};
use x509_parser::prelude::*;

fn write_csv(path: &Path, n: usize, prefix: &str) {
    let mut s = String::from("hardware_serial,model,client_id,lot\n");
    for i in 0..n {
        s.push_str(&format!("{prefix}{i:06},thermo-v2,,L7\n"));
    }
    std::fs::write(path, s).expect("write csv");
}

fn manifest(out: &Path) -> Vec<HashMap<String, String>> {
    let mut rdr = csv::Reader::from_path(out.join("manifest.csv")).expect("manifest");
    rdr.deserialize()
        .map(|r| r.expect("manifest row"))
        .collect()
}

fn data_lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count().saturating_sub(1))
        .unwrap_or(0)
}

/// Every manifest row's certificate exists, is signed by the issuing CA, names the ClientID and
/// the serial, and its key file (0600) holds the certificate's key.
fn check_outputs(out: &Path, expect: usize, with_keys: bool) -> Vec<HashMap<String, String>> {
    let rows = manifest(out);
    assert_eq!(rows.len(), expect, "manifest rows");
    let serials: HashSet<&str> = rows.iter().map(|r| r["hardware_serial"].as_str()).collect();
    assert_eq!(
        serials.len(),
        expect,
        "a serial appears twice in the manifest"
    );
    let chain = std::fs::read_to_string(out.join("chain.pem")).expect("chain.pem");
    let issuing_der = ::pem::parse_many(&chain).expect("pem")[0]
        .contents()
        .to_vec();
    let (_, issuing) = parse_x509_certificate(&issuing_der).expect("issuing CA");
    for r in &rows {
        let id = &r["client_id"];
        let pem_text = std::fs::read_to_string(out.join(format!("{id}.crt")))
            .unwrap_or_else(|e| panic!("{id}.crt: {e}"));
        // <ClientID>.chain.pem: the certificate, then the issuing CA (no root), for TLS clients.
        assert_eq!(r["chain_file"], format!("{id}.chain.pem"));
        let chain_file = std::fs::read_to_string(out.join(&r["chain_file"]))
            .unwrap_or_else(|e| panic!("{id}.chain.pem: {e}"));
        let blocks = ::pem::parse_many(&chain_file).expect("chain file pem");
        assert_eq!(blocks.len(), 2, "{id}.chain.pem");
        assert_eq!(
            blocks[0].contents(),
            ::pem::parse(&pem_text).expect("crt pem").contents()
        );
        assert_eq!(blocks[1].contents(), &issuing_der[..]);
        let der = ::pem::parse(&pem_text)
            .expect("crt pem")
            .contents()
            .to_vec();
        let (_, cert) = parse_x509_certificate(&der).expect("crt");
        cert.verify_signature(Some(issuing.public_key()))
            .unwrap_or_else(|e| panic!("{id}.crt is not signed by the issuing CA: {e}"));
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .expect("CN");
        assert_eq!(cn, id);
        let serial_hex: String = cert
            .raw_serial()
            .iter()
            .skip_while(|b| **b == 0)
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            serial_hex.trim_start_matches('0'),
            r["serial"].trim_start_matches('0')
        );
        if with_keys {
            let key_path = out.join(format!("{id}.key"));
            assert_eq!(mode(&key_path), 0o600, "{id}.key mode");
            let key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(&key_path).expect("key"))
                .expect("key parses");
            assert_eq!(
                key.public_key_raw(),
                &cert.public_key().subject_public_key.data[..],
                "{id}.key does not match {id}.crt"
            );
        }
    }
    rows
}

/// Every serial with `prefix` is on the server exactly once, and the audit log has exactly one
/// registration per device.
fn check_server(s: &Server, prefix: &str, expect: usize) {
    let j = s
        .devid(&["-o", "json", "device", "list", "--limit", "100000"])
        .ok()
        .json();
    let serials: Vec<&str> = j["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| d["hardware_serial"].as_str().expect("serial"))
        .filter(|s| s.starts_with(prefix))
        .collect();
    let unique: HashSet<&str> = serials.iter().copied().collect();
    assert_eq!(serials.len(), expect);
    assert_eq!(unique.len(), expect);

    let j = s
        .devid(&["-o", "json", "audit", "--limit", "1000000"])
        .ok()
        .json();
    let mut per_target: HashMap<&str, usize> = HashMap::new();
    for e in j["items"].as_array().expect("items") {
        if e["action"] == "device.register" {
            *per_target
                .entry(e["target"].as_str().expect("target"))
                .or_default() += 1;
        }
    }
    let dup: Vec<_> = per_target.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dup.is_empty(), "issued more than once: {dup:?}");
}

#[test]
fn killed_batch_resumes_and_registers_every_serial_exactly_once() {
    const N: usize = 5000;
    let s = Server::start();
    let w = s.work();
    let csv = w.join("line.csv");
    write_csv(&csv, N, "K");
    let out = w.join("flash");
    let args = [
        "device",
        "register-batch",
        "--csv",
        csv.to_str().expect("utf8"),
        "--generate-keys",
        "--out",
        out.to_str().expect("utf8"),
        "--chunk",
        "250",
    ];

    // Interrupt it twice: Ctrl-C (SIGINT), then a kill (SIGKILL), each once more chunks are
    // recorded but not all.
    let mut before = 0;
    for (signal, at_least) in [("-INT", 500), ("-KILL", 1500)] {
        let mut child = s
            .devid_cmd()
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn batch");
        let deadline = Instant::now() + Duration::from_secs(120);
        while data_lines(&out.join("manifest.csv")) < at_least {
            assert!(Instant::now() < deadline, "batch made no progress");
            assert!(
                child.try_wait().expect("try_wait").is_none(),
                "batch ended before it could be interrupted"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let st = std::process::Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .expect("kill");
        assert!(st.success());
        let status = child.wait().expect("wait");
        assert!(!status.success(), "the interrupted run reported success");
        let now = data_lines(&out.join("manifest.csv"));
        assert!(now < N, "the batch finished before the {signal} ({now})");
        assert!(now >= before);
        before = now;
    }

    // Re-run: finishes, skipping what the first run recorded.
    let r = s
        .devid_cmd()
        .args(["-o", "json"])
        .args(args)
        .output()
        .expect("re-run");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&r.stdout).expect("summary JSON");
    assert_eq!(summary["rows"], N);
    assert_eq!(summary["failed"], 0);
    let skipped = summary["skipped"].as_u64().expect("skipped") as usize;
    let registered = summary["registered"].as_u64().expect("registered") as usize;
    let already = summary["already_registered"].as_u64().expect("already") as usize;
    assert!(skipped >= before, "{summary}");
    assert_eq!(skipped + registered + already, N, "{summary}");

    check_outputs(&out, N, true);
    check_server(&s, "K", N);
    // A sample goes through openssl too.
    let rows = manifest(&out);
    for r in rows.iter().step_by(1000) {
        openssl_verify(
            &out.join("chain.pem"),
            &out.join(format!("{}.crt", r["client_id"])),
        )
        .expect("openssl verify");
    }
    // The journal (a second copy of the keys) is gone once every row is done, and with it the
    // state directory.
    assert!(!out.join(".devid-batch").exists());

    // A third run has nothing to do.
    let r = s
        .devid_cmd()
        .args(["-o", "json"])
        .args(args)
        .output()
        .expect("third run");
    assert!(r.status.success());
    let summary: serde_json::Value = serde_json::from_slice(&r.stdout).expect("summary JSON");
    assert_eq!(summary["skipped"], N);
    assert_eq!(summary["registered"], 0);
}

#[test]
fn batch_rides_out_a_server_restart() {
    const N: usize = 1500;
    let mut s = Server::start();
    let w = s.work();
    let csv = w.join("line.csv");
    write_csv(&csv, N, "R");
    let out = w.join("flash");
    let mut child = s
        .devid_cmd()
        .args([
            "-o",
            "json",
            "device",
            "register-batch",
            "--csv",
            csv.to_str().expect("utf8"),
            "--generate-keys",
            "--out",
            out.to_str().expect("utf8"),
            "--chunk",
            "100",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn batch");
    let deadline = Instant::now() + Duration::from_secs(120);
    while data_lines(&out.join("manifest.csv")) < 200 {
        assert!(Instant::now() < deadline, "batch made no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "the batch ended before the server restart"
    );
    s.restart();
    let o = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    // It noticed the outage and retried rather than giving up.
    assert!(stderr.contains("retrying"), "{stderr}");
    // Without a terminal, progress comes as plain lines.
    assert!(stderr.contains("progress: "), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).expect("summary");
    assert_eq!(summary["failed"], 0, "{summary}");
    check_outputs(&out, N, true);
    check_server(&s, "R", N);
}

#[test]
fn bad_rows_are_reported_by_line_and_the_others_land() {
    let s = Server::start();
    let w = s.work();
    // A device that already holds ClientID FIXED0001: a CSV row claiming it fails on the
    // server, by index, and its chunk is sent again without it.
    let pre = w.join("pre");
    s.devid(&[
        "device",
        "register",
        "--serial",
        "PRE1",
        "--client-id",
        "FIXED0001",
        "--generate-key",
        "--out",
        pre.to_str().expect("utf8"),
    ])
    .ok();

    let csrs = w.join("csrs");
    std::fs::create_dir_all(&csrs).expect("mkdir");
    for serial in ["G1", "G2", "G3", "G4", "G5", "DUPX", "CONFL"] {
        let (_k, csr) = make_csr(serial);
        std::fs::write(csrs.join(format!("{serial}.csr")), csr).expect("write csr");
    }
    std::fs::write(
        csrs.join("BADCSR.csr"),
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    )
    .expect("write");
    let csv = w.join("line.csv");
    std::fs::write(
        &csv,
        "hardware_serial,model,client_id,colour\n\
         G1,thermo-v2,,red\n\
         MISSING,thermo-v2\n\
         G2,thermo-v2,,blue\n\
         DUPX,thermo-v2,,\n\
         DUPX,thermo-v2,,\n\
         G3,thermo-v2,bad+id,\n\
         BADCSR,thermo-v2,,\n\
         NOCSR,thermo-v2,,\n\
         CONFL,thermo-v2,FIXED0001,\n\
         G4,thermo-v2,,\n\
         G5,thermo-v2,,\n",
    )
    .expect("write csv");
    let out = w.join("flash");
    let args = [
        "device",
        "register-batch",
        "--csv",
        csv.to_str().expect("utf8"),
        "--csr-dir",
        csrs.to_str().expect("utf8"),
        "--out",
        out.to_str().expect("utf8"),
    ];
    let r = s.devid(&args).code(1);
    for needle in [
        "line 3: has 2 columns",
        "line 6: hardware_serial \"DUPX\" duplicates line 5",
        "line 7: client_id \"bad+id\"",
        "line 8: CSR",
        "line 9: no CSR file",
        "line 10: ",
    ] {
        assert!(
            r.stderr.contains(needle),
            "{needle:?} missing from:\n{}",
            r.stderr
        );
    }
    // Progress counts every row of the run by its outcome, the CSV's bad rows included.
    let last = r
        .stderr
        .lines()
        .rfind(|l| l.starts_with("progress: "))
        .expect("a progress line");
    assert!(
        last.starts_with("progress: 11/11 rows (5 registered, 0 already registered, 6 failed;"),
        "{last}"
    );
    insta::with_settings!({filters => vec![
        (r"(elapsed: +)[0-9.]+s", "${1}[ELAPSED]"),
        (r"(rate: +)[0-9.]+ devices/s", "${1}[RATE]"),
        (r"((output|failures): +)\S+", "${1}[PATH]"),
    ]}, {
        insta::assert_snapshot!("batch_summary_with_failures", r.stdout);
    });

    let mut rdr = csv::Reader::from_path(out.join("failures.csv")).expect("failures.csv");
    let failed: Vec<(u64, String)> = rdr
        .deserialize::<(u64, String, String)>()
        .map(|r| {
            let (line, serial, _) = r.expect("row");
            (line, serial)
        })
        .collect();
    assert_eq!(
        failed,
        [
            (3, "MISSING".to_string()),
            (6, "DUPX".to_string()),
            (7, "G3".to_string()),
            (8, "BADCSR".to_string()),
            (9, "NOCSR".to_string()),
            (10, "CONFL".to_string()),
        ]
    );
    let rows = check_outputs(&out, 5, false);
    let got: HashSet<&str> = rows.iter().map(|r| r["hardware_serial"].as_str()).collect();
    assert_eq!(got, HashSet::from(["G1", "G2", "G4", "G5", "DUPX"]));
    // Metadata columns arrive as strings.
    let g1 = rows
        .iter()
        .find(|r| r["hardware_serial"] == "G1")
        .expect("G1");
    let j = s
        .devid(&["-o", "json", "device", "show", &g1["client_id"]])
        .ok()
        .json();
    assert_eq!(j["metadata"], serde_json::json!({"colour": "red"}));
    // Nothing was registered for the bad rows.
    let j = s
        .devid(&["-o", "json", "device", "list", "--limit", "1000"])
        .ok()
        .json();
    let on_server: HashSet<&str> = j["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| d["hardware_serial"].as_str().expect("serial"))
        .collect();
    for bad in ["MISSING", "G3", "BADCSR", "NOCSR", "CONFL"] {
        assert!(!on_server.contains(bad), "{bad} was registered");
    }

    // Fix the CSV and re-run: only the fixed rows are sent; failures.csv goes away.
    std::fs::write(
        &csv,
        "hardware_serial,model,client_id,colour\n\
         G1,thermo-v2,,red\n\
         G2,thermo-v2,,blue\n\
         DUPX,thermo-v2,,\n\
         G4,thermo-v2,,\n\
         G5,thermo-v2,,\n",
    )
    .expect("write csv");
    let j = s
        .devid(&[&["-o", "json"][..], &args[..]].concat())
        .ok()
        .json();
    assert_eq!(j["skipped"], 5);
    assert_eq!(j["registered"], 0);
    assert!(!out.join("failures.csv").exists());
}

#[test]
fn csv_without_required_column_is_a_usage_error_and_sends_nothing() {
    let s = Server::start();
    let w = s.work();
    let csv = w.join("bad.csv");
    std::fs::write(&csv, "serial,model\nX1,thermo\n").expect("write");
    let out = w.join("flash");
    let r = s
        .devid(&[
            "device",
            "register-batch",
            "--csv",
            csv.to_str().expect("utf8"),
            "--generate-keys",
            "--out",
            out.to_str().expect("utf8"),
        ])
        .code(2);
    assert!(r.stderr.contains("hardware_serial"), "{}", r.stderr);
    assert!(!out.exists());
}

#[test]
fn factory_token_refused_for_a_model_names_the_csv_line() {
    let s = Server::start();
    let w = s.work();
    let factory = s
        .devid(&[
            "-o",
            "json",
            "token",
            "create",
            "--role",
            "factory",
            "--name",
            "line-9",
            "--models",
            "thermo-v2",
        ])
        .ok()
        .json()["token"]
        .as_str()
        .expect("token")
        .to_string();
    let csv = w.join("f.csv");
    std::fs::write(
        &csv,
        "hardware_serial,model\nFA1,thermo-v2\nFA2,other\nFA3,thermo-v2\n",
    )
    .expect("write");
    let out = w.join("flash");
    let r = s.devid_as(
        &factory,
        &[
            "device",
            "register-batch",
            "--csv",
            csv.to_str().expect("utf8"),
            "--generate-keys",
            "--out",
            out.to_str().expect("utf8"),
        ],
    );
    match r.code {
        // The server names the item only in the text of a 403: the run stops, naming the line.
        3 => {
            assert!(r.stderr.contains("CSV line 3"), "{}", r.stderr);
            assert!(r.stderr.contains("FA2"), "{}", r.stderr);
        }
        // The server gives the 403 an index: only that row fails.
        1 => {
            let f = std::fs::read_to_string(out.join("failures.csv")).expect("failures");
            assert!(f.contains("3,FA2,"), "{f}");
            assert_eq!(manifest(&out).len(), 2);
        }
        _ => panic!("unexpected: {r:#?}"),
    }
}

/// Runs register-batch with `--csr-dir` and JSON output.
fn batch_csr_dir(s: &Server, csv: &Path, csrs: &Path, out: &Path) -> common::Run {
    s.devid(&[
        "-o",
        "json",
        "device",
        "register-batch",
        "--csv",
        csv.to_str().expect("utf8"),
        "--csr-dir",
        csrs.to_str().expect("utf8"),
        "--out",
        out.to_str().expect("utf8"),
    ])
}

#[test]
fn rows_answered_with_a_revoked_or_suspended_device_fail() {
    let s = Server::start();
    let w = s.work();
    let csrs = w.join("csrs");
    std::fs::create_dir_all(&csrs).expect("mkdir");
    for serial in ["RV1", "SU1", "OK1"] {
        let (_k, csr) = make_csr(serial);
        std::fs::write(csrs.join(format!("{serial}.csr")), csr).expect("write csr");
    }
    let csv = w.join("line.csv");
    std::fs::write(
        &csv,
        "hardware_serial,model\nRV1,thermo-v2\nSU1,thermo-v2\nOK1,thermo-v2\n",
    )
    .expect("csv");
    let first = w.join("first");
    batch_csr_dir(&s, &csv, &csrs, &first).ok();
    let ids: HashMap<String, String> = manifest(&first)
        .into_iter()
        .map(|r| (r["hardware_serial"].clone(), r["client_id"].clone()))
        .collect();
    s.devid(&[
        "device",
        "revoke",
        &ids["RV1"],
        "--reason",
        "keyCompromise",
        "--yes",
    ])
    .ok();
    s.devid(&["device", "suspend", &ids["SU1"]]).ok();

    // The same rows again (their answers lost, say): the server answers each with the existing
    // device as it is now. Only the active one is done; the others fail and nothing of them is
    // written.
    let out = w.join("again");
    let r = batch_csr_dir(&s, &csv, &csrs, &out).code(1);
    let j = r.json();
    assert_eq!(j["rows"], 3, "{j}");
    assert_eq!(j["already_registered"], 1, "{j}");
    assert_eq!(j["registered"], 0, "{j}");
    assert_eq!(j["failed"], 2, "{j}");
    assert!(
        r.stderr.contains(&format!(
            "line 2: hardware_serial \"RV1\" is registered as device {}, which is revoked",
            ids["RV1"]
        )),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("which is suspended"), "{}", r.stderr);
    let rows = check_outputs(&out, 1, false);
    assert_eq!(rows[0]["hardware_serial"], "OK1");
    let failures = std::fs::read_to_string(out.join("failures.csv")).expect("failures.csv");
    assert!(
        failures.contains("2,RV1,") && failures.contains("3,SU1,"),
        "{failures}"
    );
    for serial in ["RV1", "SU1"] {
        let id = &ids[serial];
        assert!(!out.join(format!("{id}.crt")).exists(), "{id}.crt written");
        assert!(!out.join(format!("{id}.chain.pem")).exists());
    }
    // The last progress line agrees with the summary.
    let last = r
        .stderr
        .lines()
        .rfind(|l| l.starts_with("progress: "))
        .expect("a progress line");
    assert!(
        last.starts_with("progress: 3/3 rows (0 registered, 1 already registered, 2 failed;"),
        "{last}"
    );

    // Once the suspended device is resumed, a re-run writes its files; the revoked one still
    // fails.
    s.devid(&["device", "resume", &ids["SU1"]]).ok();
    let j = batch_csr_dir(&s, &csv, &csrs, &out).code(1).json();
    assert_eq!(
        (
            j["skipped"].as_u64(),
            j["already_registered"].as_u64(),
            j["failed"].as_u64()
        ),
        (Some(1), Some(1), Some(1)),
        "{j}"
    );
    check_outputs(&out, 2, false);
}

#[test]
fn two_runs_on_one_directory_exactly_one_proceeds() {
    const N: usize = 1000;
    let s = Server::start();
    let w = s.work();
    let csv = w.join("line.csv");
    write_csv(&csv, N, "L");
    let out = w.join("flash");
    // A lock file left by a killed run, naming a process that is alive (its PID reused by this
    // test): no obstacle.
    std::fs::create_dir_all(out.join(".devid-batch")).expect("mkdir");
    std::fs::write(
        out.join(".devid-batch/lock"),
        format!("{}\n", std::process::id()),
    )
    .expect("stale lock");
    let spawn = || {
        s.devid_cmd()
            .args([
                "-o",
                "json",
                "device",
                "register-batch",
                "--csv",
                csv.to_str().expect("utf8"),
                "--generate-keys",
                "--out",
                out.to_str().expect("utf8"),
                "--chunk",
                "200",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn batch")
    };
    let (a, b) = (spawn(), spawn());
    let outputs = [a, b].map(|c| c.wait_with_output().expect("wait"));
    let mut codes: Vec<i32> = outputs
        .iter()
        .map(|o| o.status.code().unwrap_or(-1))
        .collect();
    codes.sort();
    let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(
        codes,
        [0, 5],
        "{}\n----\n{}",
        text(&outputs[0]),
        text(&outputs[1])
    );
    let loser = outputs
        .iter()
        .find(|o| o.status.code() == Some(5))
        .expect("the refused run");
    let msg = text(loser);
    assert!(
        msg.starts_with("error: another register-batch (pid "),
        "{msg}"
    );
    assert!(msg.contains("is working on"), "{msg}");
    assert!(loser.stdout.is_empty());
    let winner = outputs
        .iter()
        .find(|o| o.status.success())
        .expect("the run that proceeded");
    let summary: serde_json::Value = serde_json::from_slice(&winner.stdout).expect("summary");
    assert_eq!(summary["registered"], N, "{summary}");
    check_outputs(&out, N, true);
    check_server(&s, "L", N);
    assert!(!out.join(".devid-batch").exists());
}

#[test]
fn an_old_manifest_is_refused_and_left_alone() {
    let s = Server::start();
    let w = s.work();
    let csv = w.join("line.csv");
    write_csv(&csv, 2, "M");
    let out = w.join("flash");
    std::fs::create_dir_all(&out).expect("mkdir");
    let old = "hardware_serial,model,client_id,serial,fingerprint_sha256,not_after\n";
    std::fs::write(out.join("manifest.csv"), old).expect("manifest");
    let r = s
        .devid(&[
            "device",
            "register-batch",
            "--csv",
            csv.to_str().expect("utf8"),
            "--generate-keys",
            "--out",
            out.to_str().expect("utf8"),
        ])
        .code(2);
    assert!(r.stderr.contains("chain_file"), "{}", r.stderr);
    assert_eq!(
        std::fs::read_to_string(out.join("manifest.csv")).expect("manifest"),
        old
    );
    assert!(!out.join(".devid-batch").exists());
}
