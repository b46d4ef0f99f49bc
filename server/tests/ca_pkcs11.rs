//! CA keys in a PKCS#11 token (SoftHSM2): made in the token, never on disk, used for every
//! signature, and found again after a restart. Each test gets its own SoftHSM token directory
//! through `SOFTHSM2_CONF`. Without SoftHSM2 the tests are skipped, except under CI
//! (`CI=true` or `DEVID_TEST_REQUIRE_POSTGRES=1`), where that is a failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

const PIN: &str = "4711-devid-pin";
const LABEL: &str = "devid test";

/// A fresh SoftHSM2 token in its own directory.
struct Hsm {
    dir: tempfile::TempDir,
    module: PathBuf,
}

impl Hsm {
    /// None (the test is skipped) when SoftHSM2 is not installed, outside CI.
    fn new() -> Option<Hsm> {
        let module = std::env::var_os("DEVID_TEST_SOFTHSM_MODULE")
            .map(PathBuf::from)
            .into_iter()
            .chain(
                [
                    "/usr/lib/softhsm/libsofthsm2.so",
                    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
                    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
                    "/usr/local/lib/softhsm/libsofthsm2.so",
                ]
                .map(PathBuf::from),
            )
            .find(|p| p.exists());
        let tools = Command::new("softhsm2-util")
            .arg("--version")
            .output()
            .is_ok()
            && Command::new("pkcs11-tool").arg("--help").output().is_ok();
        let (Some(module), true) = (module, tools) else {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true")
                || std::env::var("DEVID_TEST_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
            assert!(
                !ci,
                "SoftHSM2 (softhsm2-util, libsofthsm2.so) and pkcs11-tool are required under CI; \
                 run scripts/setup.sh"
            );
            eprintln!("skipped: SoftHSM2 or pkcs11-tool is not installed");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        );
        write(dir.path(), "softhsm2.conf", &conf);
        write(dir.path(), "pin", &format!("{PIN}\n"));
        write(dir.path(), "wrong-pin", "0000-wrong\n");
        let hsm = Hsm { dir, module };
        run_ok(hsm.command("softhsm2-util").args([
            "--init-token",
            "--free",
            "--label",
            LABEL,
            "--pin",
            PIN,
            "--so-pin",
            "so-secret",
        ]));
        Some(hsm)
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("softhsm2.conf")
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("SOFTHSM2_CONF", self.conf());
        cmd
    }

    /// The server's options for this token, with the PIN file `pin_file`.
    fn args(&self, pin_file: &str) -> Vec<String> {
        vec![
            "--pkcs11-module".into(),
            self.module.display().to_string(),
            "--pkcs11-token".into(),
            LABEL.into(),
            "--pkcs11-pin-file".into(),
            self.dir.path().join(pin_file).display().to_string(),
        ]
    }

    fn options(&self, data_dir: &Path) -> Options {
        Options {
            extra_args: self.args("pin"),
            env: vec![("SOFTHSM2_CONF".into(), self.conf().display().to_string())],
            data_dir: Some(data_dir.to_path_buf()),
            ..Options::default()
        }
    }

    /// Runs `devid-server <subcommand> --data-dir <data> <args>` with this token's SoftHSM
    /// configuration; returns whether it succeeded and all it printed, which must not hold the
    /// PIN.
    fn devid_server(&self, subcommand: &str, data: &Path, args: &[String]) -> (bool, String) {
        let out = self
            .command(BIN)
            .arg(subcommand)
            .arg("--data-dir")
            .arg(data)
            .args(args)
            .env_remove("DEVID_PKCS11_PIN")
            .env_remove("DEVID_CA_PASSPHRASE")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!text.contains(PIN), "the PIN reached the output: {text}");
        (out.status.success(), text)
    }

    /// `pkcs11-tool --list-objects`, logged in: what the token itself says about its objects.
    fn list_objects(&self) -> String {
        run_ok(self.command("pkcs11-tool").args([
            "--module",
            &self.module.display().to_string(),
            "--token-label",
            LABEL,
            "--login",
            "--pin",
            PIN,
            "--list-objects",
        ]))
    }
}

/// Registers a device whose key the server makes; returns the answer.
async fn try_register(server: &Server, serial: &str) -> (StatusCode, Value) {
    server
        .admin_post(
            "/v1/devices",
            &json!({"hardware_serial": serial, "generate_key": true}),
        )
        .await
}

async fn register(server: &Server, serial: &str) -> Value {
    let (status, reg) = try_register(server, serial).await;
    assert_eq!(status, StatusCode::CREATED, "{reg}");
    reg
}

fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "openssl {args:?}: {text}");
    text
}

/// The device certificate chains to the root on disk (openssl).
fn check_certificate(server: &Server, reg: &Value, dir: &Path) {
    write(dir, "device.pem", reg["certificate"].as_str().unwrap());
    write(dir, "chain.pem", reg["chain"].as_str().unwrap());
    let root = server.root_pem().display().to_string();
    let out = openssl(
        dir,
        &[
            "verify",
            "-CAfile",
            &root,
            "-untrusted",
            "chain.pem",
            "device.pem",
        ],
    );
    assert!(out.contains("device.pem: OK"), "{out}");
}

/// The CRL verifies under the issuing CA (openssl); returns its text.
async fn crl_text(server: &Server, dir: &Path) -> String {
    let resp = server
        .client
        .get(server.url("/v1/crl"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    std::fs::write(dir.join("crl.der"), resp.bytes().await.unwrap()).unwrap();
    let chain = std::fs::read_to_string(server.data_dir.join("ca/chain.pem")).unwrap();
    write(dir, "ca-chain.pem", &chain);
    let out = openssl(
        dir,
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            "crl.der",
            "-noout",
            "-text",
            "-verify",
            "-CAfile",
            "ca-chain.pem",
        ],
    );
    assert!(out.contains("verify OK"), "{out}");
    out
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn a_token_ca_issues_revokes_signs_crls_and_survives_a_restart() {
    let Some(hsm) = Hsm::new() else { return };
    for backend in backends().await {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let mut server = Server::start_with(&backend, hsm.options(&data)).await;
        let printed = server.printed();
        assert!(printed.contains("PKCS#11 token"), "{printed}");
        assert!(
            !printed.contains(PIN),
            "the PIN reached the output: {printed}"
        );

        // The data directory keeps certificates and key references, no private key.
        let ca_dir = data.join("ca");
        for name in ["root.key", "issuing.key"] {
            assert!(!ca_dir.join(name).exists(), "{name}");
        }
        for name in ["root.pkcs11", "issuing.pkcs11"] {
            let reference = std::fs::read_to_string(ca_dir.join(name)).unwrap();
            assert!(
                reference.starts_with("pkcs11:token=devid%20test;"),
                "{reference}"
            );
        }
        for file in files_under(&data) {
            let bytes = std::fs::read(&file).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains("PRIVATE KEY"), "{}", file.display());
        }

        // The token made both keys and will not let them out.
        let objects = hsm.list_objects();
        let private: Vec<&str> = objects
            .split("Private Key Object")
            .skip(1)
            .filter(|o| o.contains("label:      devid "))
            .collect();
        assert_eq!(
            private.len(),
            2 * (1 + backend_index(&backend)),
            "{objects}"
        );
        for o in &private {
            assert!(o.contains("sensitive"), "{o}");
            assert!(o.contains("never extractable"), "{o}");
        }

        // Issuance and revocation; the CRL, signed in the token, verifies.
        let dir = tempfile::tempdir().unwrap();
        let a = register(&server, "P11-A").await;
        check_certificate(&server, &a, dir.path());
        let (status, batch) = server
            .admin_post(
                "/v1/devices/batch",
                &json!({"items": (0..8)
                    .map(|i| json!({"hardware_serial": format!("P11-B{i}"), "generate_key": true}))
                    .collect::<Vec<_>>()}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{}", batch["detail"]);
        assert_eq!(batch["created"], 8);
        check_certificate(&server, &batch["items"][7], dir.path());
        let (status, revoked) = server
            .admin_post(
                &format!("/v1/devices/{}/revoke", a["client_id"].as_str().unwrap()),
                &json!({"reason": "keyCompromise"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{revoked}");
        let serial = a["serial"].as_str().unwrap().to_ascii_uppercase();
        let text = crl_text(&server, dir.path()).await;
        assert!(text.contains(&serial), "{text}");

        // A restart uses the token again: same CA, still issuing.
        let root_before = std::fs::read(server.root_pem()).unwrap();
        assert!(server.stop().success());
        let server = Server::start_with(&backend, hsm.options(&data)).await;
        assert_eq!(std::fs::read(server.root_pem()).unwrap(), root_before);
        let b = register(&server, "P11-C").await;
        check_certificate(&server, &b, dir.path());
        assert!(crl_text(&server, dir.path()).await.contains(&serial));
    }
}

/// Each backend makes its own CA in the one token: SQLite first, then PostgreSQL.
fn backend_index(backend: &Backend) -> usize {
    match backend {
        Backend::Sqlite => 0,
        Backend::Postgres(_) => 1,
    }
}

#[test]
fn a_wrong_pin_or_missing_token_options_refuse_to_start_with_a_clear_message() {
    let Some(hsm) = Hsm::new() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let init = |args: Vec<String>| hsm.devid_server("init", &data, &args);

    // A wrong PIN on the first start: refused, and no CA is made.
    let (ok, text) = init(hsm.args("wrong-pin"));
    assert!(!ok, "{text}");
    assert!(text.contains("refused the PIN"), "{text}");
    assert!(!data.join("ca").exists());

    // A token that is not there.
    let mut args = hsm.args("pin");
    args[3] = "no such token".into();
    let (ok, text) = init(args);
    assert!(!ok, "{text}");
    assert!(text.contains("no initialized token matches"), "{text}");

    let (ok, text) = init(hsm.args("pin"));
    assert!(ok, "{text}");

    // Later starts: a wrong PIN, or no token options at all, are refused.
    let (ok, text) = init(hsm.args("wrong-pin"));
    assert!(!ok, "{text}");
    assert!(text.contains("refused the PIN"), "{text}");
    let (ok, text) = init(vec![]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("the CA keys are in a token") && text.contains("--pkcs11-module"),
        "{text}"
    );
    let (ok, text) = init(hsm.args("pin"));
    assert!(ok, "{text}");
    assert!(text.contains("already initialized"), "{text}");
}

#[tokio::test]
async fn a_token_that_goes_away_fails_issuance_with_503_and_is_used_again_when_back() {
    let Some(hsm) = Hsm::new() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_with(&Backend::Sqlite, hsm.options(&tmp.path().join("data"))).await;
    register(&server, "GONE-1").await;

    // SoftHSM keeps a token in a directory: moving it away is unplugging the token.
    let tokens = hsm.dir.path().join("tokens");
    let token_dir = std::fs::read_dir(&tokens)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let aside = hsm.dir.path().join("unplugged");
    std::fs::rename(&token_dir, &aside).unwrap();
    for serial in ["GONE-2", "GONE-3"] {
        let (status, problem) = try_register(&server, serial).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("PKCS#11 token"),
            "{problem}"
        );
    }
    assert!(
        server
            .printed()
            .contains("the PKCS#11 token cannot sign; issuance fails until it answers again"),
        "{}",
        server.printed()
    );

    // Plugged back in: the next request after the module's one-second back-off succeeds.
    std::fs::rename(&aside, &token_dir).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let again = register(&server, "GONE-4").await;
    let dir = tempfile::tempdir().unwrap();
    check_certificate(&server, &again, dir.path());
    assert!(
        server.printed().contains("the PKCS#11 token answers again"),
        "{}",
        server.printed()
    );
}

/// A company root (rcgen, in memory) and an issuing CA certificate for the public key `spki`.
fn company_chain(spki: &[u8]) -> (String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        SubjectPublicKeyInfo,
    };
    let ca_params = |cn: &str, constraints| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(constraints);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p
    };
    let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let root_params = ca_params("Acme Root", BasicConstraints::Unconstrained);
    let root = root_params.self_signed(&root_key).unwrap();
    let issuer = Issuer::new(root_params, root_key);
    let issuing = ca_params("Acme devid Issuing CA", BasicConstraints::Constrained(0))
        .signed_by(&SubjectPublicKeyInfo::from_der(spki).unwrap(), &issuer)
        .unwrap();
    (issuing.pem(), root.pem())
}

#[tokio::test]
async fn import_ca_takes_an_issuing_key_already_in_the_token() {
    let Some(hsm) = Hsm::new() else { return };
    let module = hsm.module.display().to_string();
    let tool = |args: &[&str]| {
        run_ok(
            hsm.command("pkcs11-tool")
                .args([
                    "--module",
                    &module,
                    "--token-label",
                    LABEL,
                    "--login",
                    "--pin",
                    PIN,
                ])
                .args(args),
        )
    };
    // Keys made in the token by another tool: the company's issuing key, a second key, and
    // one that may be extracted.
    for (label, id, extra) in [
        ("acme issuing", "0a0b0c", None),
        ("other", "0d0e0f", None),
        ("leaky", "101112", Some("--extractable")),
    ] {
        let mut args = vec![
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
            "--label",
            label,
            "--id",
            id,
        ];
        args.extend(extra);
        tool(&args);
    }
    let dir = hsm.dir.path();
    let public = dir.join("acme.spki");
    tool(&[
        "--read-object",
        "--type",
        "pubkey",
        "--id",
        "0a0b0c",
        "--output-file",
        &public.display().to_string(),
    ]);
    let (issuing, root) = company_chain(&std::fs::read(&public).unwrap());
    let cert = write(dir, "issuing.pem", &issuing);
    let chain = write(dir, "chain.pem", &root);
    let data = dir.join("data");
    let import = |key: &str| {
        let mut args = hsm.args("pin");
        for (flag, value) in [("--cert", &cert), ("--chain", &chain)] {
            args.extend([flag.to_string(), value.display().to_string()]);
        }
        args.extend(["--token-key".to_string(), key.to_string()]);
        hsm.devid_server("import-ca", &data, &args)
    };

    let (ok, text) = import("id:0d0e0f");
    assert!(
        !ok && text.contains("the token holds a different key"),
        "{text}"
    );
    let (ok, text) = import("leaky");
    assert!(!ok && text.contains("can leave the token"), "{text}");
    let (ok, text) = import("no such key");
    assert!(!ok && text.contains("holds no EC private key"), "{text}");
    assert!(!data.join("ca").exists());

    let (ok, text) = import("acme issuing");
    assert!(ok, "{text}");
    let reference = std::fs::read_to_string(data.join("ca/issuing.pkcs11")).unwrap();
    assert!(reference.contains(";id=%0a%0b%0c;"), "{reference}");
    assert!(!data.join("ca/issuing.key").exists());

    // The server issues with it, under the company root.
    let server = Server::start_with(&Backend::Sqlite, hsm.options(&data)).await;
    let reg = register(&server, "ACME-1").await;
    let out = tempfile::tempdir().unwrap();
    check_certificate(&server, &reg, out.path());
    assert_eq!(
        std::fs::read_to_string(server.root_pem()).unwrap(),
        root,
        "the company root"
    );
}

/// Two processes on one PostgreSQL database and one token: both sign through it at the same
/// time (each with its own session pool), and what one revokes the other's CRL lists.
#[tokio::test]
async fn two_processes_on_postgresql_share_one_token() {
    let Some(hsm) = Hsm::new() else { return };
    let Some(backend) = postgres().await else {
        eprintln!("DEVID_TEST_POSTGRES_URL is not set: skipping the scale-out half");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let a = Server::start_with(&backend, hsm.options(&data)).await;
    let mut b = Server::start_with(&backend, hsm.options(&data)).await;
    b.token = a.token.clone();

    // Both at once: a batch and singles through each process.
    let batch = |server: &Server, prefix: &'static str| {
        let body = json!({"items": (0..16)
            .map(|i| json!({"hardware_serial": format!("{prefix}{i}"), "generate_key": true}))
            .collect::<Vec<_>>()});
        let (client, url, token) = (
            server.client.clone(),
            server.url("/v1/devices/batch"),
            server.token.clone(),
        );
        async move {
            let resp = client
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            (resp.status(), resp.json::<Value>().await.unwrap())
        }
    };
    let ((sa, ba), (sb, bb), ra, rb) = tokio::join!(
        batch(&a, "P11-SA-"),
        batch(&b, "P11-SB-"),
        register(&a, "P11-S1"),
        register(&b, "P11-S2"),
    );
    assert_eq!(sa, StatusCode::CREATED, "{ba}");
    assert_eq!(sb, StatusCode::CREATED, "{bb}");
    let dir = tempfile::tempdir().unwrap();
    for reg in [&ba["items"][0], &ba["items"][15], &bb["items"][7], &ra, &rb] {
        check_certificate(&a, reg, dir.path());
    }

    // Revoked through one process, listed by the other's CRL (signed in the token).
    let (status, revoked) = a
        .admin_post(
            &format!("/v1/devices/{}/revoke", rb["client_id"].as_str().unwrap()),
            &json!({"reason": "keyCompromise"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    let serial = rb["serial"].as_str().unwrap().to_ascii_uppercase();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if crl_text(&b, dir.path()).await.contains(&serial) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the other process's CRL never listed {serial}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// `ca rotate` with the keys in a token: the new issuing key is made in the token (the data
/// directory keeps its reference), the running server issues from it, and the root's CRL is
/// signed by the root key in the token.
#[tokio::test]
async fn rotation_makes_the_new_issuing_key_in_the_token() {
    let Some(hsm) = Hsm::new() else { return };
    for backend in backends().await {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let server = Server::start_with(&backend, hsm.options(&data)).await;
        let name = backend.name();
        let a = register(&server, &format!("TOK-ROT-A-{name}")).await;
        let mut args = vec!["rotate".to_string()];
        args.extend(hsm.args("pin"));
        if let Backend::Postgres(url) = &backend {
            args.extend(["--database-url".to_string(), url.clone()]);
        }
        let (ok, out) = hsm.devid_server("ca", &data, &args);
        assert!(ok, "{out}");
        let id = out
            .split("issuing CA ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap()
            .to_string();
        let reference = std::fs::read_to_string(data.join(format!("ca/issuers/{id}.pkcs11")))
            .expect("the new key is a reference into the token");
        assert!(reference.starts_with("pkcs11:"), "{reference}");
        assert!(!data.join(format!("ca/issuers/{id}.key")).exists());
        let start = std::time::Instant::now();
        let mut n = 0;
        loop {
            n += 1;
            let b = register(&server, &format!("TOK-ROT-B{n}-{name}")).await;
            if b["chain"] != a["chain"] {
                break;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(3),
                "no switch"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let resp = server
            .client
            .get(server.url("/v1/crl/root"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let arl = resp.bytes().await.unwrap();
        let dir = tmp.path();
        std::fs::write(dir.join("arl.der"), &arl).unwrap();
        let root = server.root_pem().display().to_string();
        let text = openssl(
            dir,
            &[
                "crl", "-inform", "DER", "-in", "arl.der", "-noout", "-CAfile", &root,
            ],
        );
        assert!(text.contains("verify OK"), "{text}");
    }
}
