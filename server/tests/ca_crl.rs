//! CRL signing, checked with `openssl crl -verify` and `openssl verify -crl_check`.

mod ca_common;

use std::path::Path;

use ca_common::{openssl, openssl_raw, settings, write, write_ca_pems};
use devid_core::csr::parse_csr_pem;
use devid_core::profile::DeviceIdentity;
use devid_server::ca::{Ca, CaError, CrlEntry, IssuedCert};
use ring::rand::SystemRandom;
use time::macros::datetime;

fn issue(ca: &Ca, client: &str) -> IssuedCert {
    let csr = parse_csr_pem(&ca_common::rcgen_csr()).expect("csr");
    ca.issue_device(
        &csr,
        &DeviceIdentity {
            client_id: client,
            hardware_serial: "HW",
        },
        &settings(),
        time::OffsetDateTime::now_utc(),
        &SystemRandom::new(),
    )
    .expect("issue")
}

fn serial_bytes(c: &IssuedCert) -> Vec<u8> {
    hex::decode(&c.serial_hex).expect("hex")
}

fn crl_pem(dir: &Path, name: &str, der: &[u8]) {
    write(
        dir,
        name,
        pem::encode(&pem::Pem::new("X509 CRL", der.to_vec())),
    );
}

#[test]
fn crl_with_revoked_and_held_entries_verifies_and_lists_them() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let (ca, _) = Ca::init_or_load(&dir.join("data"), None, Some("Acme")).expect("CA");
    write_ca_pems(dir, &ca);
    let revoked = issue(&ca, "revoked1");
    let held = issue(&ca, "held1");
    let unspecified = issue(&ca, "unspec1");
    let good = issue(&ca, "good1");

    let this_update = time::OffsetDateTime::now_utc() - time::Duration::minutes(1);
    let next_update = this_update + time::Duration::hours(24);
    let der = ca
        .sign_crl(
            &[
                CrlEntry {
                    serial: serial_bytes(&revoked),
                    revoked_at: datetime!(2026-11-25 12:00:00 UTC),
                    reason_code: 1,
                },
                CrlEntry {
                    serial: serial_bytes(&held),
                    revoked_at: datetime!(2026-11-25 12:30:00 UTC),
                    reason_code: 6,
                },
                CrlEntry {
                    serial: serial_bytes(&unspecified),
                    revoked_at: datetime!(2026-11-25 12:45:00 UTC),
                    reason_code: 0,
                },
            ],
            42,
            this_update,
            next_update,
        )
        .expect("crl");
    write(dir, "crl.der", &der);

    let out = openssl(
        dir,
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            "crl.der",
            "-CAfile",
            "issuing.pem",
            "-verify",
            "-noout",
            "-text",
        ],
    );
    let has = |s: &str| assert!(out.contains(s), "missing {s:?} in:\n{out}");
    has("verify OK");
    has("Certificate Revocation List (CRL):");
    has("Version 2 (0x1)");
    has("Signature Algorithm: ecdsa-with-SHA256");
    has("Issuer: CN = devid Issuing CA, O = Acme");
    has("X509v3 CRL Number: \n                42\n");
    has("X509v3 Authority Key Identifier");
    has(&format!("Serial Number: {}\n        Revocation Date: Nov 25 12:00:00 2026 GMT\n        CRL entry extensions:\n            X509v3 CRL Reason Code: \n                Key Compromise", revoked.serial_hex.to_uppercase()));
    has(&format!("Serial Number: {}\n        Revocation Date: Nov 25 12:30:00 2026 GMT\n        CRL entry extensions:\n            X509v3 CRL Reason Code: \n                Certificate Hold", held.serial_hex.to_uppercase()));
    has(&format!(
        "Serial Number: {}\n        Revocation Date: Nov 25 12:45:00 2026 GMT\n",
        unspecified.serial_hex.to_uppercase()
    ));
    assert!(!out.contains(&good.serial_hex.to_uppercase()), "{out}");
    assert_eq!(out.matches("Serial Number:").count(), 3, "{out}");

    // The CRL's AKI is the issuing CA's SKI.
    let aki = openssl(
        dir,
        &["crl", "-inform", "DER", "-in", "crl.der", "-noout", "-text"],
    );
    let ski = openssl(
        dir,
        &[
            "x509",
            "-in",
            "issuing.pem",
            "-noout",
            "-ext",
            "subjectKeyIdentifier",
        ],
    );
    let ski_value = ski.lines().nth(1).expect("SKI").trim().to_string();
    assert!(aki.contains(&ski_value), "{aki} / {ski_value}");

    // Path validation with the CRL: revoked and held certificates fail, the good one passes.
    crl_pem(dir, "crl.pem", &der);
    for (cert, name) in [(&revoked, "revoked"), (&held, "held"), (&good, "good")] {
        write(dir, &format!("{name}.pem"), &cert.pem);
    }
    let verify = |name: &str| {
        openssl_raw(
            dir,
            &[
                "verify",
                "-crl_check",
                "-CAfile",
                "root.pem",
                "-untrusted",
                "issuing.pem",
                "-CRLfile",
                "crl.pem",
                &format!("{name}.pem"),
            ],
            None,
        )
    };
    let ok = verify("good");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    for name in ["revoked", "held"] {
        let out = verify(name);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{name} must be refused: {text}");
        assert!(text.contains("certificate revoked"), "{name}: {text}");
    }
}

#[test]
fn empty_crl_verifies_and_tampering_is_detected() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let (ca, _) = Ca::init_or_load(&dir.join("data"), None, None).expect("CA");
    write_ca_pems(dir, &ca);
    let now = time::OffsetDateTime::now_utc();
    let der = ca
        .sign_crl(&[], 1, now, now + time::Duration::hours(1))
        .expect("crl");
    write(dir, "crl.der", &der);
    let out = openssl(
        dir,
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            "crl.der",
            "-CAfile",
            "issuing.pem",
            "-verify",
            "-noout",
            "-text",
        ],
    );
    assert!(out.contains("verify OK"), "{out}");
    assert!(out.contains("No Revoked Certificates."), "{out}");

    // Flip a byte inside the CRL number: the signature no longer verifies.
    let mut bad = der.clone();
    let pos = bad.len() / 2;
    bad[pos] ^= 0x01;
    write(dir, "bad.der", &bad);
    let out = openssl_raw(
        dir,
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            "bad.der",
            "-CAfile",
            "issuing.pem",
            "-verify",
            "-noout",
        ],
        None,
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("verify OK"), "{text}");
}

#[test]
fn crl_numbers_are_encoded_as_given() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let (ca, _) = Ca::init_or_load(&dir.join("data"), None, None).expect("CA");
    let now = time::OffsetDateTime::now_utc();
    for n in [1u64, 255, 256, 1 << 40, u64::MAX] {
        let der = ca
            .sign_crl(&[], n, now, now + time::Duration::hours(1))
            .expect("crl");
        write(dir, "n.der", &der);
        let out = openssl(
            dir,
            &[
                "crl",
                "-inform",
                "DER",
                "-in",
                "n.der",
                "-noout",
                "-crlnumber",
            ],
        );
        let hex_digits = out
            .trim()
            .strip_prefix("crlNumber=0x")
            .unwrap_or_else(|| panic!("unexpected output {out}"));
        assert_eq!(
            u64::from_str_radix(hex_digits, 16).expect("hex"),
            n,
            "{out}"
        );
    }
}

#[test]
fn bad_crl_requests_are_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (ca, _) = Ca::init_or_load(tmp.path(), None, None).expect("CA");
    let now = time::OffsetDateTime::now_utc();
    let entry = |serial: Vec<u8>, reason_code| CrlEntry {
        serial,
        revoked_at: now,
        reason_code,
    };
    let cases: Vec<(Vec<CrlEntry>, time::OffsetDateTime, &str)> = vec![
        (vec![], now, "nextUpdate"),
        (
            vec![entry(vec![0x40; 16], 7)],
            now + time::Duration::hours(1),
            "reason code",
        ),
        (
            vec![entry(vec![0x40; 16], 11)],
            now + time::Duration::hours(1),
            "reason code",
        ),
        (
            vec![entry(vec![], 1)],
            now + time::Duration::hours(1),
            "serial",
        ),
        (
            vec![entry(vec![0, 0], 1)],
            now + time::Duration::hours(1),
            "serial",
        ),
        (
            vec![entry(vec![0x40; 21], 1)],
            now + time::Duration::hours(1),
            "serial",
        ),
    ];
    for (entries, next, needle) in cases {
        let err = ca.sign_crl(&entries, 1, now, next).expect_err("refused");
        assert!(matches!(err, CaError::InvalidCrl(_)), "{err:?}");
        assert!(err.to_string().contains(needle), "{needle:?} in {err}");
    }
}
