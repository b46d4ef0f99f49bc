//! Issuance micro-benchmark (not a timed test: it only prints figures).
//!
//! Run it in release mode:
//!
//! ```text
//! cargo test --release -p devid-server --test ca_bench -- --ignored --nocapture
//! ```
//!
//! It measures CSR check (parse + signature verify) plus issuance (profile, serial, sign, PEM,
//! fingerprint) on one thread and on every core, with CSRs made beforehand, and a CRL of
//! 10,000 entries.

use std::sync::Arc;
use std::time::Instant;

use devid_core::csr::parse_csr_pem;
use devid_core::profile::{DeviceIdentity, ProfileSettings, Validity};
use devid_server::ca::{Ca, CrlEntry};
use ring::rand::SystemRandom;

fn csrs(n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
            rcgen::CertificateParams::default()
                .serialize_request(&key)
                .expect("csr")
                .pem()
                .expect("pem")
        })
        .collect()
}

fn run(ca: &Ca, csrs: &[String], settings: &ProfileSettings) -> usize {
    let rng = SystemRandom::new();
    let now = time::OffsetDateTime::now_utc();
    let mut bytes = 0;
    for (i, pem) in csrs.iter().enumerate() {
        let csr = parse_csr_pem(pem).expect("csr");
        let client = format!("bench{i}");
        let issued = ca
            .issue_device(
                &csr,
                &DeviceIdentity {
                    client_id: &client,
                    hardware_serial: "HW-BENCH",
                },
                settings,
                now,
                &rng,
            )
            .expect("issue");
        bytes += issued.der.len();
    }
    bytes
}

#[test]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
fn bench_issuance() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (ca, _) = Ca::init_or_load(tmp.path(), None, Some("Bench")).expect("CA");
    let ca = Arc::new(ca);
    let settings = Arc::new(ProfileSettings {
        organization: Some("Bench".into()),
        validity: Validity::Years(20),
        crl_url: Some("http://127.0.0.1:8080/v1/crl".into()),
    });
    let n = 20_000;
    let pems = Arc::new(csrs(n));

    // Warm-up.
    run(&ca, &pems[..500], &settings);

    let t = Instant::now();
    let bytes = run(&ca, &pems, &settings);
    let one = t.elapsed();
    assert!(bytes > 0);
    println!(
        "1 thread: {n} CSR checks + issuances in {one:.2?}: {:.0}/s ({:.1} us each)",
        n as f64 / one.as_secs_f64(),
        one.as_secs_f64() * 1e6 / n as f64
    );

    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let per = n / threads;
    let t = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|k| {
            let (ca, pems, settings) = (ca.clone(), pems.clone(), settings.clone());
            std::thread::spawn(move || run(&ca, &pems[k * per..(k + 1) * per], &settings))
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    let all = t.elapsed();
    println!(
        "{threads} threads: {} CSR checks + issuances in {all:.2?}: {:.0}/s",
        per * threads,
        (per * threads) as f64 / all.as_secs_f64()
    );

    let t = Instant::now();
    for pem in pems.iter() {
        parse_csr_pem(pem).expect("csr");
    }
    let check_only = t.elapsed();
    println!(
        "1 thread, CSR check only (PEM, parse, verify): {:.0}/s",
        n as f64 / check_only.as_secs_f64()
    );
    let ders: Vec<Vec<u8>> = pems
        .iter()
        .map(|p| pem::parse(p).expect("pem").into_contents())
        .collect();
    let t = Instant::now();
    for der in &ders {
        devid_core::csr::parse_csr_der(der).expect("csr");
    }
    println!(
        "1 thread, CSR check only (DER, parse, verify): {:.0}/s",
        n as f64 / t.elapsed().as_secs_f64()
    );

    let csr = parse_csr_pem(&pems[0]).expect("csr");
    let rng = SystemRandom::new();
    let now = time::OffsetDateTime::now_utc();
    let t = Instant::now();
    for i in 0..n {
        let client = format!("bench{i}");
        ca.issue_device(
            &csr,
            &DeviceIdentity {
                client_id: &client,
                hardware_serial: "HW-BENCH",
            },
            &settings,
            now,
            &rng,
        )
        .expect("issue");
    }
    let sign_only = t.elapsed();
    println!(
        "1 thread, issuance only (CSR checked once): {:.0}/s",
        n as f64 / sign_only.as_secs_f64()
    );

    let entries: Vec<CrlEntry> = (0..10_000u32)
        .map(|i| {
            let mut serial = vec![0x40; 16];
            serial[12..].copy_from_slice(&i.to_be_bytes());
            CrlEntry {
                serial,
                revoked_at: now,
                reason_code: (i % 6) as u8,
            }
        })
        .collect();
    let t = Instant::now();
    let crl = ca
        .sign_crl(&entries, 1, now, now + time::Duration::hours(24))
        .expect("crl");
    println!(
        "CRL with {} entries: {} bytes in {:.2?}",
        entries.len(),
        crl.len(),
        t.elapsed()
    );
}
