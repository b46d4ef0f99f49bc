//! Micro-benchmark of DEVID-1's cryptographic work, single thread, no I/O.
//!
//! ```text
//! cargo run --release -p devid-core --example protocol_bench [-- SECONDS_PER_CASE]
//! ```
//!
//! Reports, per case, operations per second of the timed side only:
//! - broker side of full handshakes (ClientHello read + certificate check, ServerHello with
//!   ECDH and signature, ClientFinish check), without and with the verified-certificate cache;
//! - device side of full handshakes, without and with the broker-certificate cache;
//! - both sides of resumptions;
//! - PublishVerifier on 256-byte payloads: MAC verify (with property parsing) and seal open.
//!
//! The other side of each exchange runs in the same loop but is not timed. Numbers are for
//! comparing changes on one machine, not targets (those are in BENCHMARKS.md).
#![allow(clippy::unwrap_used)] // a benchmark over in-memory fixtures: a failure is a bug to see

#[path = "../tests/protocol_support/mod.rs"]
mod protocol_support;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use devid_core::protocol::*;
use protocol_support::*;
use ring::rand::SystemRandom;

const PAYLOAD: usize = 256;
const TOPIC: &str = "devices/DEV0123456789ABCDEFGH/telemetry";

/// Time spent by each side over a run of handshakes.
#[derive(Default)]
struct Split {
    n: u64,
    broker: Duration,
    device: Duration,
    broker_pk: PkOps,
    device_pk: PkOps,
}

fn timed<T>(acc: &mut Duration, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let out = f();
    *acc += t.elapsed();
    out
}

fn full_handshakes(client: &Arc<ClientConfig>, server: &Arc<ServerConfig>, secs: f64) -> Split {
    let rng = SystemRandom::new();
    let mut s = Split::default();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        let (dev, ch) = timed(&mut s.device, || ClientHandshake::start(client, &rng)).unwrap();
        let (brk, sh) = timed(&mut s.broker, || {
            match ServerHandshake::start(server, client.client_id(), &ch, now()).unwrap() {
                ServerStart::Full(p) => p.accept(&rng),
                ServerStart::Resume(_) => unreachable!("a ClientHello"),
            }
        })
        .unwrap();
        let (dev, cf) = timed(&mut s.device, || dev.handle(&sh, now(), &rng)).unwrap();
        let (ss, sf) = timed(&mut s.broker, || brk.handle(&cf, now(), &rng)).unwrap();
        let cs = timed(&mut s.device, || dev.handle(&sf, now())).unwrap();
        s.broker_pk += ss.pk_ops;
        s.device_pk += cs.pk_ops;
        black_box((cs, ss));
        s.n += 1;
    }
    s
}

fn resumptions(client: &Arc<ClientConfig>, server: &Arc<ServerConfig>, secs: f64) -> Split {
    let rng = SystemRandom::new();
    let (first, _) = Run::with(client, server).go().unwrap();
    let mut ticket = first.ticket.unwrap();
    let cid = client.client_id();
    let mut s = Split::default();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        let (dev, rh) = timed(&mut s.device, || ClientResume::start(&ticket, &rng)).unwrap();
        let (brk, challenge) = timed(&mut s.broker, || {
            match ServerHandshake::start(server, cid, &rh, now()).unwrap() {
                ServerStart::Resume(p) => p.accept(&rng),
                ServerStart::Full(_) => unreachable!("a ResumeHello"),
            }
        })
        .unwrap();
        let (dev, proof) = timed(&mut s.device, || dev.handle(&challenge)).unwrap();
        let (ss, rf) = timed(&mut s.broker, || brk.handle(&proof, now(), &rng)).unwrap();
        let cs = timed(&mut s.device, || dev.handle(&rf, now())).unwrap();
        s.broker_pk += ss.pk_ops;
        s.device_pk += cs.pk_ops;
        ticket = cs.ticket.unwrap();
        s.n += 1;
    }
    s
}

fn per_sec(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn report_split(name: &str, s: &Split) {
    println!(
        "{name:<44} broker {:>8.0}/s ({:>6.1} us)   device {:>8.0}/s ({:>6.1} us)   pk ops/handshake broker {:.1} device {:.1}   (n={})",
        per_sec(s.n, s.broker),
        s.broker.as_secs_f64() * 1e6 / s.n as f64,
        per_sec(s.n, s.device),
        s.device.as_secs_f64() * 1e6 / s.n as f64,
        s.broker_pk.total() as f64 / s.n as f64,
        s.device_pk.total() as f64 / s.n as f64,
        s.n
    );
}

/// Messages from the signer, then the verifier timed over all of them.
fn publish_verify(keys: &SessionKeys, seal: bool, secs: f64) -> (u64, Duration) {
    let mut signer = PublishSigner::new(keys);
    let mut msgs = Vec::new();
    let start = Instant::now();
    // Make messages for about a tenth of the time (the verify side is the one timed).
    while start.elapsed().as_secs_f64() < secs / 10.0 || msgs.len() < 1000 {
        let mut payload = vec![0x5au8; PAYLOAD];
        let tag = if seal {
            signer.seal(TOPIC, &mut payload).unwrap()
        } else {
            signer.mac(TOPIC, &payload).unwrap()
        };
        let props: Vec<(String, String)> = tag
            .properties
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        msgs.push((props, payload));
    }
    let mut verifier = PublishVerifier::new(keys);
    let t = Instant::now();
    for (props, payload) in &mut msgs {
        let auth =
            PublishAuth::from_properties(props.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .unwrap()
                .unwrap();
        verifier.verify(&auth, TOPIC, payload).unwrap();
        black_box(&payload);
    }
    (msgs.len() as u64, t.elapsed())
}

/// Baseline for the MAC row: ring's HMAC-SHA256 over as many bytes as a MACed PUBLISH covers.
fn raw_hmac(secs: f64) -> (u64, Duration) {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[7u8; 32]);
    let msg = vec![0x5au8; "DEVID-1 publish".len() + 8 + 2 + TOPIC.len() + 4 + PAYLOAD];
    let mut n = 0u64;
    let t = Instant::now();
    while t.elapsed().as_secs_f64() < secs / 2.0 {
        for _ in 0..1000 {
            black_box(ring::hmac::sign(&key, black_box(&msg)));
        }
        n += 1000;
    }
    (n, t.elapsed())
}

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("SECONDS_PER_CASE must be a number"))
        .unwrap_or(2.0);
    if cfg!(debug_assertions) {
        eprintln!("warning: debug build; use --release for meaningful numbers");
    }
    let env = Env::new();
    let root = env.pki.root_der();
    let (chain, key) = env.pki.issue(&Leaf::broker(BROKER_NAME));
    let cached_server = Arc::new(
        ServerConfig::new(&root, chain, signer(&key))
            .unwrap()
            .with_ticket_keys(ticket_keys(), DEFAULT_TICKET_LIFETIME)
            .with_cert_cache(Arc::new(MemoryCertCache::new(1024))),
    );
    let (dchain, dkey) = env.pki.issue(&Leaf::device(CLIENT_ID));
    let device = |cache: bool| {
        let c = ClientConfig::new(&root, dchain.clone(), signer(&dkey))
            .unwrap()
            .with_broker_name(BROKER_NAME)
            .unwrap();
        Arc::new(if cache {
            c.with_broker_cert_cache(Arc::new(MemoryBrokerCertCache::new(4)))
        } else {
            c
        })
    };
    let plain_device = device(false);
    let cached_device = device(true);

    println!("DEVID-1 micro-benchmark, one thread, {secs} s per case");
    report_split(
        "full handshake, no caches",
        &full_handshakes(&plain_device, &env.server, secs),
    );
    report_split(
        "full handshake, broker cert cache (device)",
        &full_handshakes(&cached_device, &env.server, secs),
    );
    report_split(
        "full handshake, device cert cache (broker)",
        &full_handshakes(&plain_device, &cached_server, secs),
    );
    report_split(
        "full handshake, both caches",
        &full_handshakes(&cached_device, &cached_server, secs),
    );
    report_split("resumption", &resumptions(&plain_device, &env.server, secs));

    let (session, _) = Run::with(&plain_device, &env.server).go().unwrap();
    for (name, seal) in [("MAC verify", false), ("seal open", true)] {
        let (n, d) = publish_verify(&session.keys, seal, secs);
        println!(
            "{:<44} broker {:>8.0}/s ({:>6.2} us)   {PAYLOAD}-byte payloads (n={n})",
            format!("{name} (PublishAuth parse + verify)"),
            per_sec(n, d),
            d.as_secs_f64() * 1e6 / n as f64,
        );
    }
    let (n, d) = raw_hmac(secs);
    println!(
        "{:<44} broker {:>8.0}/s ({:>6.2} us)   the bytes a {PAYLOAD}-byte PUBLISH MAC covers",
        "baseline: ring HMAC-SHA256 alone",
        per_sec(n, d),
        d.as_secs_f64() * 1e6 / n as f64,
    );
}
