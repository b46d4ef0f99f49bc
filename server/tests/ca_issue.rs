//! Issuance, checked with the real `openssl` binary: chain verification and every profile
//! field; CSR refusals.

mod ca_common;

use std::collections::HashSet;
use std::path::Path;

use ca_common::{openssl, openssl_csr, openssl_raw, read, settings, write, write_ca_pems};
use devid_core::csr::{parse_csr_der, parse_csr_pem, CsrError};
use devid_core::profile::{DeviceIdentity, ProfileError, ProfileSettings, Validity};
use devid_server::ca::{Ca, CaError, CaKeys, CaOptions, IssuedCert};
use ring::rand::SystemRandom;
use time::macros::datetime;

fn new_ca(dir: &Path) -> Ca {
    let (ca, _) = Ca::init_or_load(&dir.join("data"), None, Some("Acme")).expect("CA");
    write_ca_pems(dir, &ca);
    ca
}

fn verify_ok(dir: &Path, files: &[&str], purpose: &str) {
    let mut args = vec![
        "verify",
        "-CAfile",
        "root.pem",
        "-untrusted",
        "issuing.pem",
        "-purpose",
        purpose,
    ];
    args.extend_from_slice(files);
    let out = openssl(dir, &args);
    for f in files {
        assert!(out.contains(&format!("{f}: OK")), "{f} must verify: {out}");
    }
}

fn id<'a>(client_id: &'a str, serial: &'a str) -> DeviceIdentity<'a> {
    DeviceIdentity {
        client_id,
        hardware_serial: serial,
    }
}

#[test]
fn device_cert_from_a_greedy_csr_gets_the_profile_and_verifies() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let ca = new_ca(dir);
    // The device asks to be a CA that signs certificates, with its own names.
    let csr_pem = openssl_csr(
        dir,
        "greedy",
        "ec:p256",
        &[
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-addext",
            "extendedKeyUsage=serverAuth,codeSigning",
            "-addext",
            "subjectAltName=DNS:evil.example.com",
        ],
    );
    let csr = parse_csr_pem(&csr_pem).expect("CSR verifies");
    let now = time::OffsetDateTime::now_utc();
    let issued = ca
        .issue_device(
            &csr,
            &id("thermo7K3M9Q2XW4HZTB8R5", "SN-0042"),
            &settings(),
            now,
            &SystemRandom::new(),
        )
        .expect("issued");
    write(dir, "dev.pem", &issued.pem);
    verify_ok(dir, &["dev.pem"], "sslclient");

    let text = openssl(dir, &["x509", "-in", "dev.pem", "-noout", "-text"]);
    let has = |s: &str| assert!(text.contains(s), "missing {s:?} in:\n{text}");
    let lacks = |s: &str| assert!(!text.contains(s), "unexpected {s:?} in:\n{text}");
    has("Subject: CN = thermo7K3M9Q2XW4HZTB8R5, serialNumber = SN-0042, O = Acme Devices\n");
    has("Issuer: CN = devid Issuing CA, O = Acme\n");
    has("X509v3 Subject Alternative Name: \n                URI:urn:devid:thermo7K3M9Q2XW4HZTB8R5\n");
    has("X509v3 Key Usage: critical\n                Digital Signature\n");
    has("X509v3 Extended Key Usage: \n                TLS Web Client Authentication\n");
    has("X509v3 Basic Constraints: critical\n                CA:FALSE\n");
    has("X509v3 Authority Key Identifier");
    has("X509v3 Subject Key Identifier");
    has("X509v3 CRL Distribution Points");
    has("URI:http://127.0.0.1:8080/v1/crl");
    has("Signature Algorithm: ecdsa-with-SHA256");
    has("ASN1 OID: prime256v1");
    lacks("CA:TRUE");
    lacks("Certificate Sign");
    lacks("evil.example.com");
    lacks("requested-by-device");
    lacks("Code Signing");
    lacks("Server Authentication");

    // The key is the CSR's.
    let cert_pub = openssl(dir, &["x509", "-in", "dev.pem", "-noout", "-pubkey"]);
    let csr_pub = openssl(dir, &["req", "-in", "greedy.csr", "-noout", "-pubkey"]);
    assert_eq!(cert_pub, csr_pub);

    // Serial: 16 bytes, positive; openssl prints it as our serial_hex in upper case.
    let serial = openssl(dir, &["x509", "-in", "dev.pem", "-noout", "-serial"]);
    assert_eq!(
        serial.trim(),
        format!("serial={}", issued.serial_hex.to_uppercase())
    );
    assert_eq!(issued.serial_hex.len(), 32);
    let asn1 = openssl(dir, &["asn1parse", "-in", "dev.pem"]);
    let serial_line = asn1
        .lines()
        .find(|l| l.contains("INTEGER") && l.contains(&issued.serial_hex.to_uppercase()))
        .expect("serial INTEGER");
    // "hl=2 l=  16": a 16-byte INTEGER with no leading 00 (so positive, top bit clear).
    assert!(serial_line.contains("l=  16"), "{serial_line}");

    // Fingerprint and validity as reported.
    let fp = openssl(
        dir,
        &[
            "x509",
            "-in",
            "dev.pem",
            "-noout",
            "-fingerprint",
            "-sha256",
        ],
    );
    assert_eq!(
        fp.trim()
            .split('=')
            .nth(1)
            .expect("fp")
            .replace(':', "")
            .to_lowercase(),
        issued.fingerprint_sha256
    );
    let now_s = now.replace_nanosecond(0).expect("ns");
    assert_eq!(issued.not_before, now_s - time::Duration::seconds(60));
    // 20 years asked, but no certificate outlives its issuing CA (10 years).
    assert_eq!(issued.not_after, ca.active().not_after());
    assert!(issued.not_after_capped);
    assert_eq!(issued.not_after.year(), now.year() + 10);
    let fmt = time::format_description::parse_borrowed::<2>(
        "[month repr:short] [day padding:space] [hour]:[minute]:[second] [year] GMT",
    )
    .expect("format");
    let dates = openssl(dir, &["x509", "-in", "dev.pem", "-noout", "-dates"]);
    assert!(
        dates.contains(&format!(
            "notBefore={}",
            issued.not_before.format(&fmt).expect("f")
        )),
        "{dates}"
    );
    assert!(
        dates.contains(&format!(
            "notAfter={}",
            issued.not_after.format(&fmt).expect("f")
        )),
        "{dates}"
    );
}

#[test]
fn no_expiry_gives_generalized_time_99991231235959z() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    // A CA without expiry, as data directories made before CAs expired have.
    let options = CaOptions {
        root_validity: Validity::NoExpiry,
        issuing_validity: Validity::NoExpiry,
        ..CaOptions::default()
    };
    let keys = CaKeys::Files { passphrase: None };
    let (ca, _) = Ca::init_or_load_with(&dir.join("data"), &keys, &options).expect("CA");
    write_ca_pems(dir, &ca);
    let csr = parse_csr_pem(&ca_common::rcgen_csr()).expect("csr");
    let s = ProfileSettings {
        validity: Validity::NoExpiry,
        ..settings()
    };
    let issued = ca
        .issue_device(
            &csr,
            &id("dev1", "HW1"),
            &s,
            time::OffsetDateTime::now_utc(),
            &SystemRandom::new(),
        )
        .expect("issued");
    assert_eq!(issued.not_after, datetime!(9999-12-31 23:59:59 UTC));
    write(dir, "dev.pem", &issued.pem);
    verify_ok(dir, &["dev.pem"], "sslclient");
    let end = openssl(dir, &["x509", "-in", "dev.pem", "-noout", "-enddate"]);
    assert_eq!(end.trim(), "notAfter=Dec 31 23:59:59 9999 GMT");
    let asn1 = openssl(dir, &["asn1parse", "-in", "dev.pem"]);
    assert!(
        asn1.contains("GENERALIZEDTIME   :99991231235959Z"),
        "{asn1}"
    );
}

#[test]
fn many_concurrent_issuances_all_verify_with_unique_serials() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let ca = std::sync::Arc::new(new_ca(dir));
    let threads = 4;
    let per_thread = 25;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let ca = ca.clone();
            std::thread::spawn(move || {
                let rng = SystemRandom::new();
                (0..per_thread)
                    .map(|i| {
                        let csr = parse_csr_pem(&ca_common::rcgen_csr()).expect("csr");
                        let client = format!("dev{t}x{i}");
                        let serial = format!("HW-{t}-{i}");
                        ca.issue_device(
                            &csr,
                            &id(&client, &serial),
                            &settings(),
                            time::OffsetDateTime::now_utc(),
                            &rng,
                        )
                        .expect("issued")
                    })
                    .collect::<Vec<IssuedCert>>()
            })
        })
        .collect();
    let all: Vec<IssuedCert> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("thread"))
        .collect();
    assert_eq!(all.len(), threads * per_thread);
    let serials: HashSet<_> = all.iter().map(|c| c.serial_hex.clone()).collect();
    assert_eq!(serials.len(), all.len(), "serials are unique");
    let names: Vec<String> = (0..all.len()).map(|i| format!("c{i}.pem")).collect();
    for (c, n) in all.iter().zip(&names) {
        write(dir, n, &c.pem);
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    verify_ok(dir, &refs, "sslclient");
}

#[test]
fn generated_key_matches_its_certificate() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let ca = new_ca(dir);
    let (issued, key_pem) = ca
        .issue_device_with_new_key(
            &id("gen1", "HWG"),
            &settings(),
            time::OffsetDateTime::now_utc(),
            &SystemRandom::new(),
        )
        .expect("issued");
    assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    write(dir, "gen.pem", &issued.pem);
    write(dir, "gen.key", &key_pem);
    verify_ok(dir, &["gen.pem"], "sslclient");
    let from_key = openssl(dir, &["pkey", "-in", "gen.key", "-pubout"]);
    let from_cert = openssl(dir, &["x509", "-in", "gen.pem", "-noout", "-pubkey"]);
    assert_eq!(from_key, from_cert);
    let text = openssl(dir, &["pkey", "-in", "gen.key", "-noout", "-text"]);
    assert!(text.contains("ASN1 OID: prime256v1"), "{text}");
    // The key signs, and the signature verifies under the certificate's key.
    write(dir, "msg", "hello");
    openssl(
        dir,
        &[
            "dgst", "-sha256", "-sign", "gen.key", "-out", "msg.sig", "msg",
        ],
    );
    write(dir, "gen.pub", &from_cert);
    let v = openssl(
        dir,
        &[
            "dgst",
            "-sha256",
            "-verify",
            "gen.pub",
            "-signature",
            "msg.sig",
            "msg",
        ],
    );
    assert!(v.contains("Verified OK"), "{v}");
}

#[test]
fn broker_cert_has_server_and_client_auth_and_dns_name() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let ca = new_ca(dir);
    let csr = parse_csr_pem(&openssl_csr(dir, "broker", "ec:p256", &[])).expect("csr");
    let issued = ca
        .issue_broker(
            &csr,
            "mqtt.example.com",
            &ProfileSettings::broker_default(),
            time::OffsetDateTime::now_utc(),
            &SystemRandom::new(),
        )
        .expect("issued");
    write(dir, "broker.pem", &issued.pem);
    verify_ok(dir, &["broker.pem"], "sslserver");
    verify_ok(dir, &["broker.pem"], "sslclient");
    let out = openssl(
        dir,
        &[
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "issuing.pem",
            "-verify_hostname",
            "mqtt.example.com",
            "broker.pem",
        ],
    );
    assert!(out.contains("broker.pem: OK"), "{out}");
    let bad = openssl_raw(
        dir,
        &[
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "issuing.pem",
            "-verify_hostname",
            "other.example.com",
            "broker.pem",
        ],
        None,
    );
    assert!(!bad.status.success(), "a different host name must fail");
    let text = openssl(dir, &["x509", "-in", "broker.pem", "-noout", "-text"]);
    assert!(text.contains("Subject: CN = mqtt.example.com\n"), "{text}");
    assert!(
        text.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{text}"
    );
    assert!(text.contains("DNS:mqtt.example.com"), "{text}");
    assert!(
        text.contains("X509v3 Key Usage: critical\n                Digital Signature\n"),
        "{text}"
    );
    assert!(issued.not_after.year() == time::OffsetDateTime::now_utc().year() + 2);

    let err = ca
        .issue_broker(
            &csr,
            "not a name",
            &ProfileSettings::broker_default(),
            time::OffsetDateTime::now_utc(),
            &SystemRandom::new(),
        )
        .expect_err("refused");
    assert!(
        matches!(err, CaError::Profile(ProfileError::DnsName { .. })),
        "{err:?}"
    );
    assert!(err.is_client_error());
}

#[test]
fn bad_device_identity_is_a_client_error() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ca = new_ca(tmp.path());
    let csr = parse_csr_pem(&ca_common::rcgen_csr()).expect("csr");
    let long = "x".repeat(65);
    let err = ca
        .issue_device(
            &csr,
            &id("dev1", &long),
            &settings(),
            time::OffsetDateTime::now_utc(),
            &SystemRandom::new(),
        )
        .expect_err("refused");
    assert!(err.is_client_error(), "{err:?}");
    assert!(err.to_string().contains("hardware serial"), "{err}");
}

#[test]
fn csr_refusals_name_the_problem() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();

    let err = parse_csr_pem("garbage").expect_err("garbage");
    assert!(matches!(err, CsrError::NotPem(_)), "{err:?}");
    let err = parse_csr_der(b"\x30\x82garbage").expect_err("garbage DER");
    assert!(matches!(err, CsrError::Malformed(_)), "{err:?}");

    let rsa = openssl_csr(dir, "rsa", "rsa:2048", &[]);
    let err = parse_csr_pem(&rsa).expect_err("RSA");
    assert_eq!(err, CsrError::UnsupportedKey("RSA 2048".into()));
    assert_eq!(
        err.to_string(),
        "CSR key is RSA 2048; devid accepts ECDSA P-256 only"
    );

    let p384 = openssl_csr(dir, "p384", "ec:p384", &[]);
    let err = parse_csr_pem(&p384).expect_err("P-384");
    assert_eq!(err, CsrError::UnsupportedKey("ECDSA P-384".into()));

    let ed = openssl_csr(dir, "ed", "ed25519", &[]);
    let err = parse_csr_pem(&ed).expect_err("Ed25519");
    assert_eq!(err, CsrError::UnsupportedKey("Ed25519".into()));

    // A valid openssl P-256 CSR, then its signed content altered: the signature fails.
    let good = openssl_csr(dir, "good", "ec:p256", &[]);
    parse_csr_pem(&good).expect("the untampered CSR verifies");
    let mut der = pem::parse(&good).expect("pem").into_contents();
    let pos = der
        .windows(b"requested-by-device".len())
        .position(|w| w == b"requested-by-device")
        .expect("CN in CSR");
    der[pos] = b'R';
    let err = parse_csr_der(&der).expect_err("tampered");
    assert_eq!(err, CsrError::BadSignature);
    assert_eq!(err.to_string(), "CSR signature does not verify");
    // openssl agrees that it does not verify.
    write(dir, "tampered.der", &der);
    let out = openssl_raw(
        dir,
        &[
            "req",
            "-inform",
            "DER",
            "-in",
            "tampered.der",
            "-verify",
            "-noout",
        ],
        None,
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("verify OK"), "{all}");
    let _ = read(dir, "good.csr");
}

#[test]
fn ldevid_profile_is_short_lived_and_verifies() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let ca = new_ca(dir);
    let csr = parse_csr_pem(&ca_common::rcgen_csr()).expect("csr");
    let now = time::OffsetDateTime::now_utc();
    let issued = ca
        .issue_device_profile(
            devid_core::profile::Profile::LDevId {
                lifetime: std::time::Duration::from_secs(24 * 3600),
            },
            csr.public_key(),
            &id("dev1", "HW1"),
            &settings(),
            now,
            &SystemRandom::new(),
        )
        .expect("issued");
    assert_eq!(
        issued.not_after,
        now.replace_nanosecond(0).expect("ns") + time::Duration::hours(24)
    );
    write(dir, "ldev.pem", &issued.pem);
    verify_ok(dir, &["ldev.pem"], "sslclient");
    let text = openssl(dir, &["x509", "-in", "ldev.pem", "-noout", "-text"]);
    assert!(text.contains("URI:urn:devid:dev1"), "{text}");
}
