//! Counting public-key operations: a full handshake does them, a resumption does none.
#![allow(clippy::unwrap_used)]

mod protocol_support;

use std::sync::Arc;

use devid_core::protocol::*;
use protocol_support::*;

fn no_tamper() -> impl FnMut(usize, &mut Vec<u8>) {
    |_, _| {}
}

#[test]
fn full_handshake_counts_every_public_key_operation() {
    let env = Env::new();
    let before = pk_operations();
    let (c, s) = Run::new(&env).go().unwrap();
    // Device: one ephemeral key, one ECDH, its signature, the broker's signature and the two
    // chain signatures (leaf by intermediate, intermediate by root).
    assert_eq!(
        c.pk_ops,
        PkOps {
            ecdh_keygen: 1,
            ecdh_agree: 1,
            ecdsa_sign: 1,
            ecdsa_verify: 3
        }
    );
    // Broker: the same, mirrored.
    assert_eq!(
        s.pk_ops,
        PkOps {
            ecdh_keygen: 1,
            ecdh_agree: 1,
            ecdsa_sign: 1,
            ecdsa_verify: 3
        }
    );
    // The process-wide counters saw at least these (other tests run in parallel).
    let after = pk_operations();
    assert!(after.total() >= before.total() + c.pk_ops.total() + s.pk_ops.total());
    assert!(after.ecdsa_verify >= before.ecdsa_verify + 6);
}

#[test]
fn resumption_uses_no_public_key_operation() {
    let env = Env::new();
    let (c0, _) = Run::new(&env).go().unwrap();
    let (c1, s1) = resume(
        &env.server,
        CLIENT_ID,
        c0.ticket.as_ref().unwrap(),
        now(),
        &mut no_tamper(),
    )
    .unwrap();
    assert!(c1.resumed && s1.resumed);
    assert_eq!(c1.pk_ops, PkOps::default());
    assert_eq!(s1.pk_ops, PkOps::default());
}

#[test]
fn cached_device_certificate_skips_the_chain_signatures() {
    let env = Env::new();
    let root = env.pki.root_der();
    let (chain, key) = env.pki.issue(&Leaf::broker(BROKER_NAME));
    let server = Arc::new(
        ServerConfig::new(&root, chain, signer(&key))
            .unwrap()
            .with_cert_cache(Arc::new(MemoryCertCache::new(10))),
    );
    let (_, s0) = Run::with(&env.client, &server).go().unwrap();
    assert_eq!(s0.pk_ops.ecdsa_verify, 3);
    let (_, s1) = Run::with(&env.client, &server).go().unwrap();
    // Only sig_c is verified; the chain came from the cache.
    assert_eq!(
        s1.pk_ops,
        PkOps {
            ecdh_keygen: 1,
            ecdh_agree: 1,
            ecdsa_sign: 1,
            ecdsa_verify: 1
        }
    );
}
