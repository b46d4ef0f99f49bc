//! CA creation, loading, passphrases and concurrent first starts.

mod ca_common;

use std::path::Path;
use std::sync::{Arc, Barrier};

use ca_common::{mode, openssl, write, write_ca_pems};
use devid_server::ca::{Ca, CaError};

const FILES: [&str; 5] = [
    "root.crt",
    "root.key",
    "issuing.crt",
    "issuing.key",
    "chain.pem",
];

fn snapshot(ca_dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(ca_dir)
        .expect("ca dir")
        .map(|e| {
            let e = e.expect("entry");
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).expect("read"),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn init_creates_private_files_and_second_start_loads_the_same_ca() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let (ca, created) = Ca::init_or_load(&data, None, Some("Acme")).expect("init");
    assert!(created);
    let ca_dir = data.join("ca");
    assert_eq!(mode(&ca_dir), 0o700);
    for f in FILES {
        assert_eq!(mode(&ca_dir.join(f)), 0o600, "{f}");
    }
    let keys = std::fs::read_to_string(ca_dir.join("issuing.key")).expect("key");
    assert!(keys.starts_with("-----BEGIN PRIVATE KEY-----"));
    // No temporary directories are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&data)
        .expect("data")
        .map(|e| e.expect("e").file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("ca")]);

    // Chain: issuing first, root last; the files agree with the in-memory CA.
    let chain = pem::parse_many(ca.chain_pem()).expect("chain");
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[0].contents(), ca.issuing_der());
    assert_eq!(chain[1].contents(), ca.root_der());
    assert_eq!(
        std::fs::read_to_string(ca_dir.join("chain.pem")).expect("chain"),
        ca.chain_pem()
    );

    let before = snapshot(&ca_dir);
    let (again, created) = Ca::init_or_load(&data, None, Some("Acme")).expect("load");
    assert!(!created);
    assert_eq!(again.root_der(), ca.root_der());
    assert_eq!(again.issuing_der(), ca.issuing_der());
    assert_eq!(again.chain_pem(), ca.chain_pem());
    assert_eq!(again.issuing_key_id(), ca.issuing_key_id());
    assert_eq!(snapshot(&ca_dir), before, "loading changes nothing");

    // openssl: the issuing CA chains to the root; the profiles are what we asked for.
    let dir = tmp.path();
    write_ca_pems(dir, &ca);
    let out = openssl(dir, &["verify", "-CAfile", "root.pem", "issuing.pem"]);
    assert!(out.contains("issuing.pem: OK"), "{out}");
    let root = openssl(dir, &["x509", "-in", "root.pem", "-noout", "-text"]);
    assert!(
        root.contains("X509v3 Basic Constraints: critical\n                CA:TRUE\n"),
        "{root}"
    );
    assert!(
        root.contains("X509v3 Key Usage: critical\n                Certificate Sign, CRL Sign\n"),
        "{root}"
    );
    assert!(
        root.contains("Subject: CN = devid Root CA, O = Acme"),
        "{root}"
    );
    assert!(!root.contains("9999 GMT"), "{root}");
    assert!(root.contains("ASN1 OID: prime256v1"), "{root}");
    let issuing = openssl(dir, &["x509", "-in", "issuing.pem", "-noout", "-text"]);
    assert!(issuing.contains("CA:TRUE, pathlen:0"), "{issuing}");
    assert!(issuing.contains("X509v3 Key Usage: critical\n                Digital Signature, Certificate Sign, CRL Sign\n"), "{issuing}");
    assert!(
        issuing.contains("X509v3 Authority Key Identifier"),
        "{issuing}"
    );
    assert!(
        issuing.contains("X509v3 Subject Key Identifier"),
        "{issuing}"
    );
    assert!(
        issuing.contains("Signature Algorithm: ecdsa-with-SHA256"),
        "{issuing}"
    );
}

#[test]
fn passphrase_encrypts_keys_and_is_required_to_load() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path();
    let (ca, created) = Ca::init_or_load(data, Some("s3cret pass"), None).expect("init");
    assert!(created);
    let ca_dir = data.join("ca");
    for f in ["root.key", "issuing.key"] {
        let text = std::fs::read_to_string(ca_dir.join(f)).expect("key");
        assert!(
            text.starts_with("-----BEGIN DEVID ENCRYPTED PRIVATE KEY-----\n"),
            "{f}: {text}"
        );
        // openssl cannot read it as a key: it is not plaintext PKCS#8.
        let out = ca_common::openssl_raw(&ca_dir, &["pkey", "-in", f, "-noout"], None);
        assert!(!out.status.success());
    }
    let before = snapshot(&ca_dir);

    let (again, created) = Ca::init_or_load(data, Some("s3cret pass"), None).expect("reload");
    assert!(!created);
    assert_eq!(again.issuing_der(), ca.issuing_der());

    let err = Ca::init_or_load(data, Some("wrong"), None).expect_err("wrong passphrase");
    assert!(matches!(err, CaError::WrongPassphrase { .. }), "{err:?}");
    assert!(err.to_string().contains("wrong CA passphrase"), "{err}");

    let err = Ca::init_or_load(data, None, None).expect_err("no passphrase");
    assert!(matches!(err, CaError::PassphraseRequired { .. }), "{err:?}");
    assert!(err.to_string().contains("DEVID_CA_PASSPHRASE"), "{err}");

    let err = Ca::init_or_load(data, Some(""), None).expect_err("empty passphrase");
    assert!(matches!(err, CaError::EmptyPassphrase), "{err:?}");
    assert_eq!(snapshot(&ca_dir), before, "failed loads change nothing");
}

#[test]
fn change_passphrase_reencrypts_both_keys_and_can_be_repeated() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path();
    let (ca, _) = Ca::init_or_load(data, None, None).expect("init unencrypted");
    let ca_dir = data.join("ca");
    let certs_before: Vec<_> = snapshot(&ca_dir)
        .into_iter()
        .filter(|(n, _)| !n.ends_with(".key"))
        .collect();

    // A wrong current passphrase (here: one given for unencrypted keys) changes nothing.
    let before = snapshot(&ca_dir);
    let err = Ca::change_passphrase(data, Some("not set"), Some("new one")).expect_err("refused");
    assert!(
        matches!(err, CaError::UnexpectedPassphrase { .. }),
        "{err:?}"
    );
    assert_eq!(snapshot(&ca_dir), before);

    // Unencrypted -> encrypted: both keys, still private, and the CA loads only with it.
    let changed = Ca::change_passphrase(data, None, Some("first pass")).expect("encrypt");
    assert_eq!(changed.len(), 2, "{changed:?}");
    for f in ["root.key", "issuing.key"] {
        let text = std::fs::read_to_string(ca_dir.join(f)).expect("key");
        assert!(
            text.starts_with("-----BEGIN DEVID ENCRYPTED PRIVATE KEY-----\n"),
            "{f}"
        );
        assert_eq!(mode(&ca_dir.join(f)), 0o600, "{f}");
    }
    let loaded = Ca::load_from(data, Some("first pass")).expect("load with it");
    assert_eq!(loaded.issuing_der(), ca.issuing_der());
    assert!(matches!(
        Ca::load_from(data, None),
        Err(CaError::PassphraseRequired { .. })
    ));

    // Rotation: the old passphrase no longer opens the keys, the new one does.
    let before = snapshot(&ca_dir);
    let err = Ca::change_passphrase(data, Some("wrong"), Some("second pass")).expect_err("wrong");
    assert!(matches!(err, CaError::WrongPassphrase { .. }), "{err:?}");
    assert_eq!(
        snapshot(&ca_dir),
        before,
        "a wrong passphrase changes nothing"
    );
    Ca::change_passphrase(data, Some("first pass"), Some("second pass")).expect("rotate");
    assert!(matches!(
        Ca::load_from(data, Some("first pass")),
        Err(CaError::WrongPassphrase { .. })
    ));
    Ca::load_from(data, Some("second pass")).expect("load with the new one");
    // Repeating the run (as after a crash between the two files) rewrites nothing.
    let again =
        Ca::change_passphrase(data, Some("first pass"), Some("second pass")).expect("repeat");
    assert!(again.is_empty(), "{again:?}");

    // Back to unencrypted keys that openssl reads; the certificates never changed.
    Ca::change_passphrase(data, Some("second pass"), None).expect("remove");
    Ca::load_from(data, None).expect("load unencrypted");
    let out = ca_common::openssl_raw(&ca_dir, &["pkey", "-in", "issuing.key", "-noout"], None);
    assert!(out.status.success());
    let certs_after: Vec<_> = snapshot(&ca_dir)
        .into_iter()
        .filter(|(n, _)| !n.ends_with(".key"))
        .collect();
    assert_eq!(certs_after, certs_before, "only key files change");
}

/// The command itself: the new passphrase comes from the environment, never a flag.
#[test]
fn change_passphrase_command_takes_the_new_passphrase_from_the_environment() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    Ca::init_or_load(&data, Some("old pass"), None).expect("init");
    let run = |envs: &[(&str, &str)], args: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_devid-server"));
        c.arg("--data-dir")
            .arg(&data)
            .arg("change-passphrase")
            .args(args);
        c.env_remove("DEVID_CA_PASSPHRASE")
            .env_remove("DEVID_CA_NEW_PASSPHRASE");
        for (k, v) in envs {
            c.env(k, v);
        }
        c.output().expect("run devid-server")
    };
    let out = run(&[("DEVID_CA_PASSPHRASE", "old pass")], &[]);
    assert!(!out.status.success(), "no new passphrase given");
    assert!(String::from_utf8_lossy(&out.stderr).contains("DEVID_CA_NEW_PASSPHRASE"));
    let out = run(
        &[
            ("DEVID_CA_PASSPHRASE", "old pass"),
            ("DEVID_CA_NEW_PASSPHRASE", "new pass"),
        ],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("re-encrypted"));
    Ca::load_from(&data, Some("new pass")).expect("load with the new passphrase");
}

#[test]
fn a_passphrase_for_plaintext_keys_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    Ca::init_or_load(tmp.path(), None, None).expect("init");
    let err = Ca::init_or_load(tmp.path(), Some("pw"), None).expect_err("refused");
    assert!(
        matches!(err, CaError::UnexpectedPassphrase { .. }),
        "{err:?}"
    );
}

#[test]
fn loading_refuses_a_group_readable_key_and_incomplete_files() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tmp");
    Ca::init_or_load(tmp.path(), None, None).expect("init");
    let key = tmp.path().join("ca/issuing.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let err = Ca::init_or_load(tmp.path(), None, None).expect_err("refused");
    assert!(
        matches!(err, CaError::KeyPermissions { mode: 0o640, .. }),
        "{err:?}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    Ca::init_or_load(tmp.path(), None, None).expect("loads again");

    std::fs::remove_file(tmp.path().join("ca/chain.pem")).expect("rm");
    let err = Ca::init_or_load(tmp.path(), None, None).expect_err("refused");
    assert!(matches!(err, CaError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("chain.pem"), "{err}");
    assert!(
        !tmp.path().join("ca/chain.pem").exists(),
        "nothing was recreated"
    );
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_refused_on_load() {
    let a = tempfile::tempdir().expect("tmp");
    let b = tempfile::tempdir().expect("tmp");
    Ca::init_or_load(a.path(), None, None).expect("init a");
    Ca::init_or_load(b.path(), None, None).expect("init b");
    let other_key = std::fs::read(b.path().join("ca/issuing.key")).expect("key");
    std::fs::write(a.path().join("ca/issuing.key"), other_key).expect("swap");
    let err = Ca::init_or_load(a.path(), None, None).expect_err("refused");
    assert!(err.to_string().contains("does not match"), "{err}");
}

#[test]
fn concurrent_first_starts_in_threads_make_one_ca() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = Arc::new(tmp.path().join("shared"));
    let n = 4;
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let data = data.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let (ca, created) = Ca::init_or_load(&data, None, None).expect("init");
                (ca.root_der().to_vec(), created)
            })
        })
        .collect();
    let results: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    assert_eq!(
        results.iter().filter(|(_, c)| *c).count(),
        1,
        "exactly one creator"
    );
    assert!(
        results.iter().all(|(r, _)| *r == results[0].0),
        "one root for all"
    );
    let on_disk = Ca::init_or_load(&data, None, None).expect("load").0;
    assert_eq!(on_disk.root_der(), results[0].0.as_slice());
}

/// Not a test on its own: the child process of
/// `concurrent_first_starts_in_processes_make_one_ca`. Run by hand it makes a CA in a temporary
/// directory and checks that it loads again.
#[test]
#[ignore = "child process helper; run by concurrent_first_starts_in_processes_make_one_ca"]
fn child_process_init() {
    let (dir, _keep) = match std::env::var_os("DEVID_CA_TEST_DATA_DIR") {
        Some(d) => (std::path::PathBuf::from(d), None),
        None => {
            let t = tempfile::tempdir().expect("tmp");
            (t.path().to_path_buf(), Some(t))
        }
    };
    if let Some(go) = std::env::var_os("DEVID_CA_TEST_START_AT") {
        // Wait until the shared start time so that the processes race.
        let start: u128 = go.to_string_lossy().parse().expect("start time");
        loop {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_millis();
            if now >= start {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    let (ca, created) = Ca::init_or_load(&dir, None, None).expect("init");
    let (again, _) = Ca::init_or_load(&dir, None, None).expect("load");
    assert_eq!(ca.root_der(), again.root_der());
    println!(
        "DEVID-CA-RESULT created={created} root={}",
        hex::encode(ring::digest::digest(&ring::digest::SHA256, ca.root_der()))
    );
}

#[test]
fn concurrent_first_starts_in_processes_make_one_ca() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("shared");
    let exe = std::env::current_exe().expect("test binary");
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        + 1500;
    let children: Vec<_> = (0..4)
        .map(|_| {
            std::process::Command::new(&exe)
                .args(["--exact", "child_process_init", "--ignored", "--nocapture"])
                .env("DEVID_CA_TEST_DATA_DIR", &data)
                .env("DEVID_CA_TEST_START_AT", start.to_string())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn child")
        })
        .collect();
    let mut created = 0;
    let mut roots = std::collections::HashSet::new();
    for child in children {
        let out = child.wait_with_output().expect("child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout
            .lines()
            .find(|l| l.starts_with("DEVID-CA-RESULT"))
            .unwrap_or_else(|| panic!("child printed its result: {stdout}"));
        if line.contains("created=true") {
            created += 1;
        }
        roots.insert(line.split("root=").nth(1).expect("root").to_string());
    }
    assert_eq!(created, 1, "exactly one process created the CA");
    assert_eq!(roots.len(), 1, "all processes use the same root");
    write(tmp.path(), "marker", "done");
}

#[test]
fn a_leftover_non_empty_ca_dir_without_certificates_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(tmp.path().join("ca")).expect("mkdir");
    write(&tmp.path().join("ca"), "notes.txt", "not a CA");
    let err = Ca::init_or_load(tmp.path(), None, None).expect_err("refused");
    assert!(matches!(err, CaError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("move it away"), "{err}");
    // Nothing else was written, and no temporary directory is left.
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("dir")
        .map(|e| e.expect("e").file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("ca")]);

    // An empty leftover directory is simply replaced.
    let tmp2 = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(tmp2.path().join("ca")).expect("mkdir");
    let (_, created) = Ca::init_or_load(tmp2.path(), None, None).expect("init");
    assert!(created);
    assert_eq!(mode(&tmp2.path().join("ca")), 0o700);
}
