//! RFC 5280 lints by pkilint (PyPI; scripts/setup.sh installs it into
//! `target/tools/pkilint-venv`, `DEVID_PKILINT_VENV` names another virtual environment): the
//! root, the first and a rotated issuing CA, an IDevID, an LDevID and a broker certificate go
//! through `lint_pkix_cert`, an issuing CA's CRL and the root's ARL through `lint_crl`. Any
//! ERROR or FATAL finding fails the test, except the ones listed in [`FALSE_POSITIVES`] with
//! why each is pkilint's own mistake.
#![allow(clippy::unwrap_used)]

mod ca_common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ca_common::{rcgen_csr, settings};
use devid_core::csr::parse_csr_pem;
use devid_core::profile::{DeviceIdentity, Profile};
use devid_server::ca::{Ca, CaKeys, CaOptions, CrlEntry};
use ring::rand::SystemRandom;
use time::OffsetDateTime;

/// Findings pkilint reports that are not faults, by the validation's code and why.
const FALSE_POSITIVES: &[(&str, &str)] = &[
    (
        // pkilint checks a URI with the `validators` package's `url()`, which accepts only
        // network URLs (scheme://host...). RFC 5280 4.2.1.6 asks for an RFC 3986 URI with a
        // scheme and a scheme-specific part, and a URN is exactly that: `urn:devid:<ClientID>`
        // (RFC 8141 syntax: NID `devid`, NSS the ClientID), the device name IEEE 802.1AR
        // places in the SAN.
        "pkix.invalid_uri_syntax",
        "urn:devid:",
    ),
    (
        // The LDevID's certificatePolicies names devid's LDevID policy, a UUID OID under 2.25
        // (ITU-T X.667): its last arc is a 128-bit integer by definition. X.690 8.19 places no
        // bound on an arc's size and RFC 5280 none on a policy identifier; pkilint's decoder
        // refuses arcs over 32 bits and stops there (so the LDevID's other extensions are linted
        // only through the IDevID, which has the same names and profile apart from the policy).
        "itu.invalid_asn1_syntax",
        "OID contains arc which is larger than 32-bits",
    ),
];

fn venv() -> Option<PathBuf> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let venv = var("DEVID_PKILINT_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/tools/pkilint-venv")
        });
    if venv.join("bin/lint_pkix_cert").exists() {
        return Some(venv);
    }
    let ci = var("CI").is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    let required = var("DEVID_TEST_REQUIRE_POSTGRES").is_some_and(|v| v != "0");
    assert!(
        !(ci || required),
        "pkilint is not installed in {} and this run requires it (CI=true or \
         DEVID_TEST_REQUIRE_POSTGRES=1): run scripts/setup.sh",
        venv.display()
    );
    eprintln!(
        "skipped: no pkilint in {} (scripts/setup.sh installs it)",
        venv.display()
    );
    None
}

/// Runs one pkilint command on `file` and returns the ERROR and FATAL findings that are not
/// known false positives (pkilint's JSON output), and how many known ones it saw.
fn lint(venv: &Path, tool: &str, extra: &[&str], file: &Path) -> (Vec<String>, usize) {
    let out = Command::new(venv.join("bin").join(tool))
        .arg("lint")
        .args(extra)
        .args(["-s", "WARNING", "-f", "JSON"])
        .arg(file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "{tool} {}: not JSON ({e}): {text}{}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let (mut bad, mut known_seen) = (Vec::new(), 0);
    for result in report["results"].as_array().unwrap() {
        for finding in result["finding_descriptions"].as_array().unwrap() {
            let severity = finding["severity"].as_str().unwrap();
            let code = finding["code"].as_str().unwrap();
            let message = finding["message"].as_str().unwrap_or_default();
            if !matches!(severity, "ERROR" | "FATAL") {
                continue;
            }
            let known = FALSE_POSITIVES
                .iter()
                .any(|(c, needle)| *c == code && message.contains(needle));
            if known {
                known_seen += 1;
            } else {
                bad.push(format!(
                    "{}: {severity} {code} {message} at {}",
                    file.display(),
                    result["node_path"]
                ));
            }
        }
    }
    (bad, known_seen)
}

fn pem(label: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(label, der.to_vec()))
}

#[test]
fn certificates_crl_and_arl_pass_pkilint() {
    let Some(venv) = venv() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let options = CaOptions {
        organization: Some("Acme".into()),
        root_crl_url: Some("http://ca.example.com/v1/crl/root".into()),
        ..CaOptions::default()
    };
    let keys = CaKeys::Files { passphrase: None };
    let (ca, _) = Ca::init_or_load_with(&dir.join("data"), &keys, &options).unwrap();
    let first = ca.active();
    let rotated = ca.new_issuing(&options, OffsetDateTime::now_utc()).unwrap();

    let rng = SystemRandom::new();
    let now = OffsetDateTime::now_utc();
    let id = DeviceIdentity {
        client_id: "AZH4Q592BV9DP32Dn",
        hardware_serial: "SN-0001",
    };
    let mut profile = settings();
    profile.crl_url = Some("http://ca.example.com/v1/crl".into());
    let csr = parse_csr_pem(&rcgen_csr()).unwrap();
    let idevid = ca.issue_device(&csr, &id, &profile, now, &rng).unwrap();
    let ldevid = ca
        .issue_device_profile(
            Profile::LDevId {
                lifetime: Duration::from_secs(90 * 24 * 3600),
            },
            csr.public_key(),
            &id,
            &profile,
            now,
            &rng,
        )
        .unwrap();
    let broker = ca
        .issue_broker(&csr, "broker.example.com", &profile, now, &rng)
        .unwrap();
    let revoked = CrlEntry {
        serial: hex::decode(&idevid.serial_hex).unwrap(),
        revoked_at: now,
        reason_code: 1,
    };
    let crl = first
        .sign_crl(&[revoked], 1, now, now + time::Duration::days(7))
        .unwrap();
    let ca_revoked = CrlEntry {
        serial: hex::decode(format!("{:0>32}", rotated.serial_hex())).unwrap(),
        revoked_at: now,
        reason_code: 2,
    };
    let arl = ca
        .sign_arl(&[ca_revoked], 1, now, now + time::Duration::days(7))
        .unwrap();

    let (mut findings, mut known) = (Vec::new(), 0);
    for (name, der) in [
        ("root", ca.root_der().to_vec()),
        ("issuing", first.der().to_vec()),
        ("issuing-rotated", rotated.der().to_vec()),
        ("idevid", idevid.der.clone()),
        ("ldevid", ldevid.der.clone()),
        ("broker", broker.der.clone()),
    ] {
        let file = dir.join(format!("{name}.pem"));
        std::fs::write(&file, pem("CERTIFICATE", &der)).unwrap();
        let (bad, seen) = lint(&venv, "lint_pkix_cert", &[], &file);
        findings.extend(bad);
        known += seen;
    }
    for (name, kind, der) in [("crl", "CRL", &crl), ("arl", "ARL", &arl)] {
        let file = dir.join(format!("{name}.pem"));
        std::fs::write(&file, pem("X509 CRL", der)).unwrap();
        let (bad, seen) = lint(&venv, "lint_crl", &["-t", kind, "-p", "PKIX"], &file);
        findings.extend(bad);
        known += seen;
    }
    assert!(findings.is_empty(), "pkilint:\n{}", findings.join("\n"));
    // The report was read: the URN false positive shows on the IDevID and the LDevID, the
    // policy OID's on the LDevID.
    assert_eq!(known, 3, "known false positives seen");
}
