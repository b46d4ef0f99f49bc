//! Micro-benchmark of one registration's CPU work outside HTTP and the database, single thread:
//! ring's ECDSA P-256 verify and sign on their own, then devid's CSR check (PEM, DER, key and
//! signature), and issuance (profile, certificate encoding, signature, PEM, fingerprint).
//!
//! ```text
//! cargo run --release -p devid-server --example issue_bench [-- SECONDS_PER_CASE]
//! ```
//!
//! The cases run in alternating rounds (three by default) so that a slow spell of a shared host
//! shows up as disagreement between rounds rather than as one skewed figure. The last line is
//! the ceiling that this work alone puts on registrations per second with every core signing
//! (from the median rounds, and from the fastest rounds).
#![allow(clippy::unwrap_used)] // a benchmark over in-memory fixtures: a failure is a bug to see

use std::hint::black_box;
use std::time::{Duration, Instant};

use devid_core::csr::parse_csr_pem;
use devid_core::profile::{DeviceIdentity, ProfileSettings};
use devid_server::ca::Ca;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1,
    ECDSA_P256_SHA256_ASN1_SIGNING,
};

const ROUNDS: usize = 3;
const CSRS: usize = 256;

/// Runs `op` for about `secs` and returns microseconds per call.
fn time_per_op(secs: f64, mut op: impl FnMut(usize)) -> f64 {
    let budget = Duration::from_secs_f64(secs);
    let started = Instant::now();
    let mut n = 0usize;
    while started.elapsed() < budget {
        for _ in 0..16 {
            op(n);
            n += 1;
        }
    }
    started.elapsed().as_secs_f64() * 1e6 / n as f64
}

fn main() {
    let secs: f64 = std::env::args().nth(1).map_or(1.0, |s| {
        s.parse().expect("SECONDS_PER_CASE must be a number")
    });
    let rng = SystemRandom::new();
    let dir = tempfile::tempdir().unwrap();
    let (ca, _) = Ca::init_or_load(dir.path(), None, Some("bench")).unwrap();
    let settings = ProfileSettings::default();

    let csrs: Vec<String> = (0..CSRS)
        .map(|_| {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.serialize_request(&key).unwrap().pem().unwrap()
        })
        .collect();
    let checked: Vec<_> = csrs.iter().map(|p| parse_csr_pem(p).unwrap()).collect();

    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let message = [7u8; 300];
    let signature = pair.sign(&rng, &message).unwrap();
    let public = UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, pair.public_key().as_ref());

    let cases = [
        "ring P-256 verify",
        "ring P-256 sign",
        "CSR check (PEM, DER, verify)",
        "issue (profile, DER, sign, PEM)",
    ];
    let mut results = vec![Vec::new(); cases.len()];
    for _ in 0..ROUNDS {
        results[0].push(time_per_op(secs, |_| {
            public
                .verify(black_box(&message), signature.as_ref())
                .unwrap();
        }));
        results[1].push(time_per_op(secs, |_| {
            black_box(pair.sign(&rng, black_box(&message)).unwrap());
        }));
        results[2].push(time_per_op(secs, |i| {
            black_box(parse_csr_pem(&csrs[i % CSRS]).unwrap());
        }));
        results[3].push(time_per_op(secs, |i| {
            let id = DeviceIdentity {
                client_id: "BENCH0123456789ABCDEFG",
                hardware_serial: "SN-0001",
            };
            let now = time::OffsetDateTime::now_utc();
            black_box(
                ca.issue_device(&checked[i % CSRS], &id, &settings, now, &rng)
                    .unwrap(),
            );
        }));
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    for (name, r) in cases.iter().zip(&results) {
        let rounds: Vec<String> = r.iter().map(|us| format!("{us:.1}")).collect();
        println!(
            "{name:34} median {:6.1} µs/op, best {:6.1} (rounds: {})",
            median(r),
            best(r),
            rounds.join(", ")
        );
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    for (label, pick) in [
        ("median", &median as &dyn Fn(&[f64]) -> f64),
        ("best", &best),
    ] {
        let per_device = pick(&results[2]) + pick(&results[3]);
        println!(
            "CSR check + issuance ({label} rounds): {per_device:.1} µs per device; {cores} cores \
             doing nothing else: at most {:.0} registrations/s",
            cores as f64 * 1e6 / per_device
        );
    }
}
