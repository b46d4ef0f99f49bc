//! The binary's life: CA passphrase, importing a company CA, certificate validity settings,
//! token expiry, JSON logs.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn a_passphrase_encrypts_the_ca_keys_and_is_needed_to_start() {
    let mut server = Server::start_with(
        &Backend::Sqlite,
        Options {
            env: vec![("DEVID_CA_PASSPHRASE".into(), "correct horse".into())],
            ..Options::default()
        },
    )
    .await;
    let key = std::fs::read_to_string(server.data_dir.join("ca/issuing.key")).unwrap();
    assert!(
        !key.contains("BEGIN PRIVATE KEY"),
        "issuing key stored in the clear:\n{key}"
    );
    let (_, reg) = server
        .admin_post(
            "/v1/devices",
            &json!({"hardware_serial": "PP1", "generate_key": true}),
        )
        .await;
    assert!(reg["certificate"].is_string());
    server.stop();
    // Without the passphrase the server refuses to start, saying why.
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&server.data_dir)
        .env_remove("DEVID_CA_PASSPHRASE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(stderr.contains("passphrase"), "{stderr}");
    // With a wrong one too.
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&server.data_dir)
        .env("DEVID_CA_PASSPHRASE", "wrong")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .to_lowercase()
        .contains("passphrase"));
}

#[tokio::test]
async fn an_imported_company_ca_issues_certificates_under_the_company_root() {
    install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A company root and an issuing CA below it, made with openssl.
    let sh = |script: &str| run_ok(Command::new("sh").arg("-c").arg(script).current_dir(d));
    sh("openssl ecparam -name prime256v1 -genkey -noout -out root.key \
        && openssl req -x509 -new -key root.key -subj '/O=Acme/CN=Acme Root' -days 3650 -out root.pem \
           -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
        && openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out issuing.key \
        && openssl req -new -key issuing.key -subj '/O=Acme/CN=Acme devid issuing' -out issuing.csr \
        && printf 'basicConstraints=critical,CA:TRUE,pathlen:0\\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\\nsubjectKeyIdentifier=hash\\nauthorityKeyIdentifier=keyid\\n' > ext.cnf \
        && openssl x509 -req -in issuing.csr -CA root.pem -CAkey root.key -CAcreateserial -days 1825 -extfile ext.cnf -out issuing.pem");
    let data = d.join("data");
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(&data)
        .arg("import-ca")
        .args([
            "--cert",
            "issuing.pem",
            "--key",
            "issuing.key",
            "--chain",
            "root.pem",
        ])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = Server::start_with(
        &Backend::Sqlite,
        Options {
            data_dir: Some(data.clone()),
            ..Options::default()
        },
    )
    .await;
    let (status, reg) = server
        .admin_post(
            "/v1/devices",
            &json!({"hardware_serial": "AC1", "generate_key": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{reg}");
    let cert = write(d, "dev.pem", reg["certificate"].as_str().unwrap());
    let chain = write(d, "chain.pem", reg["chain"].as_str().unwrap());
    let verified = run_ok(
        Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(d.join("root.pem"))
            .arg("-untrusted")
            .arg(&chain)
            .arg(&cert),
    );
    assert!(verified.contains(": OK"), "{verified}");
    // A second import over an existing CA is refused.
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(&data)
        .arg("import-ca")
        .args([
            "--cert",
            "issuing.pem",
            "--key",
            "issuing.key",
            "--chain",
            "root.pem",
        ])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[tokio::test]
async fn validity_none_gives_the_rfc5280_no_expiry_date() {
    let server = Server::start_with(
        &Backend::Sqlite,
        Options {
            extra_args: vec![
                "--cert-validity".into(),
                "none".into(),
                // A CA without expiry, as data directories made before CAs expired have.
                "--root-validity".into(),
                "none".into(),
                "--issuing-validity".into(),
                "none".into(),
                "--organization".into(),
                "Acme Devices".into(),
            ],
            ..Options::default()
        },
    )
    .await;
    let (_, reg) = server
        .admin_post(
            "/v1/devices",
            &json!({"hardware_serial": "NX1", "generate_key": true}),
        )
        .await;
    assert_eq!(reg["not_after"], "9999-12-31T23:59:59Z");
    let dir = tempfile::tempdir().unwrap();
    let cert = write(dir.path(), "c.pem", reg["certificate"].as_str().unwrap());
    let text = run_ok(
        Command::new("openssl")
            .args(["x509", "-noout", "-enddate", "-subject", "-in"])
            .arg(&cert),
    );
    assert!(text.contains("notAfter=Dec 31 23:59:59 9999 GMT"), "{text}");
    assert!(text.contains("O = Acme Devices"), "{text}");
    let der = pem::parse(reg["certificate"].as_str().unwrap()).unwrap();
    let needle = b"99991231235959Z";
    assert!(
        der.contents().windows(needle.len()).any(|w| w == needle),
        "not a GeneralizedTime 99991231235959Z"
    );
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let server = Server::start(&Backend::Sqlite).await;
    let (status, t) = server
        .admin_post(
            "/v1/tokens",
            &json!({"role": "auditor", "name": "short", "expires_in": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let token = t["token"].as_str().unwrap();
    let (status, _) = server.get("/v1/devices", Some(token)).await;
    assert_eq!(status, StatusCode::OK);
    // Refused once its second is over: poll rather than sleep past it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, problem) = server.get("/v1/devices", Some(token)).await;
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(status, StatusCode::OK, "{problem}");
        assert!(std::time::Instant::now() < deadline, "never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for bad in [
        json!({"role": "auditor", "name": "", "expires_in": 5}),
        json!({"role": "auditor", "name": "x", "models": ["m"]}),
        json!({"role": "root", "name": "x"}),
    ] {
        let (status, _) = server.admin_post("/v1/tokens", &bad).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
}

#[tokio::test]
async fn json_logs_on_request() {
    let mut server = Server::start_with(
        &Backend::Sqlite,
        Options {
            env: vec![("DEVID_LOG_FORMAT".into(), "json".into())],
            ..Options::default()
        },
    )
    .await;
    server.stop();
    let printed = server.printed();
    let logs: Vec<&str> = printed
        .lines()
        .filter(|l| !l.starts_with("devid-server:"))
        .collect();
    assert!(!logs.is_empty());
    for line in logs {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(v["level"].is_string(), "{line}");
    }
}
