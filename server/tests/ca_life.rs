//! The CA's own life, through the real binary: finite CA validity and capped certificates,
//! the root's CRL and each issuing CA's, checked with `openssl verify -crl_check_all`,
//! rotation (`devid-server ca rotate`) and revoking an issuing CA (`ca revoke-issuing`).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use x509_parser::prelude::{FromDer, ParsedExtension, X509Certificate};

async fn register(server: &Server, serial: &str) -> Value {
    let (status, v) = server
        .admin_post(
            "/v1/devices",
            &json!({"hardware_serial": serial, "csr": csr(serial).1}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    v
}

fn der_of(pem_text: &str) -> Vec<Vec<u8>> {
    pem::parse_many(pem_text)
        .unwrap()
        .into_iter()
        .map(|p| p.into_contents())
        .collect()
}

fn with_cert<T>(der: &[u8], f: impl FnOnce(&X509Certificate<'_>) -> T) -> T {
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    f(&cert)
}

fn crl_dp(der: &[u8]) -> Vec<String> {
    with_cert(der, |c| {
        c.iter_extensions()
            .filter_map(|e| match e.parsed_extension() {
                ParsedExtension::CRLDistributionPoints(dps) => Some(
                    dps.points
                        .iter()
                        .map(|p| format!("{:?}", p.distribution_point))
                        .collect::<Vec<_>>(),
                ),
                _ => None,
            })
            .flatten()
            .collect()
    })
}

fn not_after(der: &[u8]) -> i64 {
    with_cert(der, |c| c.validity().not_after.timestamp())
}

fn issuer_cn(der: &[u8]) -> String {
    with_cert(der, |c| c.issuer().to_string())
}

/// `devid-server <args>` over the server's data directory and database.
fn server_cmd(server: &Server, args: &[&str]) -> String {
    let mut cmd = Command::new(BIN);
    cmd.arg("--data-dir").arg(&server.data_dir).args(args);
    cmd.env_remove("DEVID_DATABASE_URL")
        .env_remove("DEVID_CA_PASSPHRASE");
    if let Backend::Postgres(url) = &server.backend {
        cmd.arg("--database-url").arg(url);
    }
    run_ok(&mut cmd)
}

async fn fetch(server: &Server, path: &str) -> (StatusCode, Vec<u8>) {
    let resp = server.client.get(server.url(path)).send().await.unwrap();
    (resp.status(), resp.bytes().await.unwrap().to_vec())
}

fn to_pem(label: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(label, der.to_vec()))
}

/// `openssl verify -crl_check_all` of `leaf` with the root as the only anchor, `untrusted` as
/// intermediates and the CRLs given. Returns (success, output).
fn openssl_verify(
    dir: &Path,
    root: &[u8],
    untrusted: &[Vec<u8>],
    crls: &[Vec<u8>],
    leaf: &[u8],
) -> (bool, String) {
    let root_p = dir.join("root.pem");
    std::fs::write(&root_p, to_pem("CERTIFICATE", root)).unwrap();
    let unt_p = dir.join("untrusted.pem");
    let unt: String = untrusted.iter().map(|d| to_pem("CERTIFICATE", d)).collect();
    std::fs::write(&unt_p, unt).unwrap();
    let leaf_p = dir.join("leaf.pem");
    std::fs::write(&leaf_p, to_pem("CERTIFICATE", leaf)).unwrap();
    let mut cmd = Command::new("openssl");
    cmd.args(["verify", "-crl_check_all", "-CAfile"])
        .arg(&root_p)
        .arg("-untrusted")
        .arg(&unt_p);
    for (i, crl) in crls.iter().enumerate() {
        let p = dir.join(format!("crl{i}.pem"));
        std::fs::write(&p, to_pem("X509 CRL", crl)).unwrap();
        cmd.arg("-CRLfile").arg(p);
    }
    let out = cmd.arg(&leaf_p).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn ca_validity_is_finite_and_no_certificate_outlives_its_issuer() {
    for backend in backends().await {
        // Defaults: root 30 years, issuing CA 10 years; a 20-year IDevID is capped.
        let server = Server::start(&backend).await;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let year = 365 * 24 * 3600;
        let chain = std::fs::read_to_string(server.data_dir.join("ca/chain.pem")).unwrap();
        let chain = der_of(&chain);
        let (issuing, root) = (&chain[0], &chain[1]);
        let root_years = (not_after(root) - now) / year;
        let issuing_years = (not_after(issuing) - now) / year;
        assert_eq!(root_years, 30, "{}", backend.name());
        assert_eq!(issuing_years, 10, "{}", backend.name());
        let dp = crl_dp(issuing);
        assert!(
            dp.iter().any(|d| d.contains("/v1/crl/root")),
            "the issuing CA names the root's CRL: {dp:?}"
        );
        let dev = register(&server, "LIFE-1").await;
        assert_eq!(dev["not_after_capped"], true, "{dev}");
        let leaf = &der_of(dev["certificate"].as_str().unwrap())[0];
        assert_eq!(not_after(leaf), not_after(issuing));
        drop(server);

        // Flags: short CAs, a device validity inside them is not capped.
        let backend = match backend {
            Backend::Sqlite => Backend::Sqlite,
            Backend::Postgres(_) => postgres().await.unwrap(),
        };
        let server = Server::start_with(
            &backend,
            Options {
                extra_args: vec![
                    "--root-validity".into(),
                    "3y".into(),
                    "--issuing-validity".into(),
                    "5y".into(),
                    "--cert-validity".into(),
                    "365d".into(),
                ],
                ..Options::default()
            },
        )
        .await;
        let chain = std::fs::read_to_string(server.data_dir.join("ca/chain.pem")).unwrap();
        let chain = der_of(&chain);
        assert_eq!((not_after(&chain[1]) - now) / year, 3);
        assert_eq!(
            not_after(&chain[0]),
            not_after(&chain[1]),
            "an issuing CA asked for 5 years under a 3-year root ends with the root"
        );
        let dev = register(&server, "LIFE-2").await;
        assert_eq!(dev["not_after_capped"], false, "{dev}");
        let leaf = &der_of(dev["certificate"].as_str().unwrap())[0];
        assert_eq!((not_after(leaf) - now + 60) / (24 * 3600), 365);
    }
}

#[tokio::test]
async fn a_strict_verifier_with_both_crls_accepts_a_good_device_and_refuses_a_revoked_one() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let dir = tempfile::tempdir().unwrap();
        let good = register(&server, "STRICT-GOOD").await;
        let bad = register(&server, "STRICT-BAD").await;
        let (status, v) = server
            .admin_post(
                &format!("/v1/devices/{}/revoke", bad["client_id"].as_str().unwrap()),
                &json!({"reason": "keyCompromise"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");

        let chain = der_of(good["chain"].as_str().unwrap());
        let (issuing, root) = (&chain[0], &chain[1]);
        let good_der = &der_of(good["certificate"].as_str().unwrap())[0];
        let bad_der = &der_of(bad["certificate"].as_str().unwrap())[0];
        // Each device certificate names its own issuer's CRL; that URL serves it.
        let dp = crl_dp(good_der);
        let id = dp
            .iter()
            .find_map(|d| d.split("/v1/crl/issuing/").nth(1))
            .map(|rest| {
                rest.chars()
                    .take_while(char::is_ascii_hexdigit)
                    .collect::<String>()
            })
            .unwrap_or_else(|| panic!("no issuing CRL in {dp:?}"));
        let (status, crl) = fetch(&server, &format!("/v1/crl/issuing/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        let (status, compat) = fetch(&server, "/v1/crl").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(compat, crl, "/v1/crl is the active issuing CA's CRL");
        let (status, arl) = fetch(&server, "/v1/crl/root").await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = fetch(&server, "/v1/crl/issuing/0000000000000000").await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        let crls = [crl.clone(), arl.clone()];
        let untrusted = [issuing.clone()];
        let (ok, out) = openssl_verify(dir.path(), root, &untrusted, &crls, good_der);
        assert!(ok && out.contains("OK"), "{}: {out}", backend.name());
        let (ok, out) = openssl_verify(dir.path(), root, &untrusted, &crls, bad_der);
        assert!(!ok && out.contains("certificate revoked"), "{out}");
        // Without the root's CRL a strict verifier cannot check the issuing CA: refused.
        let (ok, out) = openssl_verify(dir.path(), root, &untrusted, &[crl], good_der);
        assert!(
            !ok && out.contains("unable to get certificate CRL"),
            "{out}"
        );
    }
}

/// The CRLs of these issuing CAs, then the root's.
async fn crls(s: &Server, ids: Vec<String>) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for id in ids {
        let (status, c) = fetch(s, &format!("/v1/crl/issuing/{id}")).await;
        assert_eq!(status, StatusCode::OK, "CRL of {id}");
        v.push(c);
    }
    let (status, arl) = fetch(s, "/v1/crl/root").await;
    assert_eq!(status, StatusCode::OK);
    v.push(arl);
    v
}

/// Polls until `f` holds or `within` passes; returns how long it took.
async fn until<F, Fut>(within: Duration, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if f().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "not within {within:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn rotation_then_revoking_the_old_issuing_ca() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let dir = tempfile::tempdir().unwrap();
        let a = register(&server, "ROT-A").await;
        let a_der = der_of(a["certificate"].as_str().unwrap()).remove(0);
        let old_chain = der_of(a["chain"].as_str().unwrap());
        let old_issuer = issuer_cn(&a_der);

        let out = server_cmd(&server, &["ca", "rotate"]);
        let new_id = out
            .split("issuing CA ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap()
            .to_string();
        // The running server issues from the new CA without a restart.
        let mut n = 0;
        let took = until(Duration::from_secs(3), || {
            n += 1;
            let serial = format!("ROT-P{n}");
            let server = &server;
            let old_issuer = old_issuer.clone();
            async move {
                let v = register(server, &serial).await;
                let der = der_of(v["certificate"].as_str().unwrap()).remove(0);
                issuer_cn(&der) != old_issuer
            }
        })
        .await;
        eprintln!("{}: new issuer in use after {took:?}", backend.name());
        let b = register(&server, "ROT-B").await;
        let b_der = der_of(b["certificate"].as_str().unwrap()).remove(0);
        let new_chain = der_of(b["chain"].as_str().unwrap());
        assert_ne!(new_chain[0], old_chain[0]);
        assert_eq!(new_chain[1], old_chain[1], "same root");
        assert!(crl_dp(&b_der).iter().any(|d| d.contains(&new_id)));

        // /v1/ca: the new issuing CA first, the old one, the root last.
        let (_, ca) = fetch(&server, "/v1/ca").await;
        let ca = der_of(&String::from_utf8(ca).unwrap());
        assert_eq!(
            ca,
            vec![
                new_chain[0].clone(),
                old_chain[0].clone(),
                old_chain[1].clone()
            ]
        );

        // Revoking a device under the old CA still reaches the old CA's CRL.
        let old_id = crl_dp(&a_der)
            .iter()
            .find_map(|d| {
                d.split("/v1/crl/issuing/")
                    .nth(1)
                    .map(|r| r[..16].to_string())
            })
            .unwrap();
        let root = &old_chain[1];
        let both = [old_chain[0].clone(), new_chain[0].clone()];
        let all = crls(&server, vec![old_id.clone(), new_id.clone()]).await;
        assert!(openssl_verify(dir.path(), root, &both, &all, &a_der).0);
        assert!(openssl_verify(dir.path(), root, &both, &all, &b_der).0);

        // The active one cannot be revoked; the old one can, by id.
        let mut cmd = Command::new(BIN);
        cmd.arg("--data-dir")
            .arg(&server.data_dir)
            .args(["ca", "revoke-issuing", &new_id]);
        if let Backend::Postgres(url) = &server.backend {
            cmd.arg("--database-url").arg(url);
        }
        let refused = cmd.output().unwrap();
        assert!(!refused.status.success());
        assert!(String::from_utf8_lossy(&refused.stderr).contains("rotate"));
        server_cmd(&server, &["ca", "revoke-issuing", &old_id]);
        let (_, feed) = server.admin_get("/v1/revocations?since=0").await;
        let last = feed["entries"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["scope"], "issuing_ca", "{last}");
        assert_eq!(last["action"], "revoked", "{last}");
        assert_eq!(last["client_id"], old_id.as_str());

        // The root's CRL now lists the old issuing CA: A is refused (with the old CA's last
        // CRL at hand, the refusal is the revoked issuing CA), B still accepted.
        let (_, ca) = fetch(&server, "/v1/ca").await;
        assert_eq!(
            der_of(&String::from_utf8(ca).unwrap()).len(),
            2,
            "revoked: not in use"
        );
        // The running server learns of it through the feed.
        let path = format!("/v1/crl/issuing/{old_id}");
        until(Duration::from_secs(2), || async {
            fetch(&server, &path).await.0 == StatusCode::NOT_FOUND
        })
        .await;
        let now = crls(&server, vec![new_id.clone()]).await;
        let with_old = [all[0].clone(), now[0].clone(), now[1].clone()];
        let (ok, out) = openssl_verify(dir.path(), root, &both, &with_old, &a_der);
        assert!(!ok && out.contains("certificate revoked"), "{out}");
        let (ok, out) = openssl_verify(dir.path(), root, &both, &with_old, &b_der);
        assert!(ok, "{out}");
    }
}

#[tokio::test]
async fn every_process_of_a_scale_out_issues_from_the_new_ca_at_once() {
    let Some(backend) = postgres().await else {
        eprintln!("DEVID_TEST_POSTGRES_URL is not set: skipping the scale-out test");
        return;
    };
    let a = Server::start(&backend).await;
    let b = a.another_process().await;
    let first = register(&a, "SO-ROT-0").await;
    let old_issuer = issuer_cn(&der_of(first["certificate"].as_str().unwrap())[0]);

    server_cmd(&a, &["ca", "rotate"]);
    let rotated = Instant::now();
    for (name, server) in [("a", &a), ("b", &b)] {
        let mut n = 0;
        let took = until(Duration::from_secs(2), || {
            n += 1;
            let serial = format!("SO-ROT-{name}-{n}");
            let old_issuer = old_issuer.clone();
            async move {
                let v = register(server, &serial).await;
                issuer_cn(&der_of(v["certificate"].as_str().unwrap())[0]) != old_issuer
            }
        })
        .await;
        eprintln!("process {name}: new issuing CA after {took:?} ({n} registrations)");
    }
    eprintln!(
        "both processes on the new issuing CA {:?} after the command returned",
        rotated.elapsed()
    );
    // And both keep issuing from it.
    for (i, server) in [&a, &b].into_iter().enumerate() {
        let v = register(server, &format!("SO-ROT-after-{i}")).await;
        assert_ne!(
            issuer_cn(&der_of(v["certificate"].as_str().unwrap())[0]),
            old_issuer
        );
    }
}

/// `change-passphrase` re-encrypts the keys of rotated issuing CAs too.
#[test]
fn change_passphrase_covers_rotated_issuing_cas() {
    use devid_server::ca::{Ca, CaKeys, CaOptions};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let keys = CaKeys::Files { passphrase: None };
    let (ca, _) = Ca::init_or_load_with(&data, &keys, &CaOptions::default()).unwrap();
    let rotated = ca
        .new_issuing(&CaOptions::default(), time::OffsetDateTime::now_utc())
        .unwrap();
    let key = data.join(format!("ca/issuers/{}.key", rotated.id()));
    let before = std::fs::read_to_string(&key).unwrap();
    let changed = Ca::change_passphrase(&data, None, Some("a long passphrase")).unwrap();
    assert!(changed.contains(&key), "{changed:?}");
    assert_ne!(std::fs::read_to_string(&key).unwrap(), before);
    // Already under the new passphrase: nothing left to change.
    let again = Ca::change_passphrase(&data, None, Some("a long passphrase")).unwrap();
    assert!(again.is_empty(), "{again:?}");
}
