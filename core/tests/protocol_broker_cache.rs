//! The device-side cache of verified broker certificates: a hit skips the chain's signature
//! checks and nothing else.
#![allow(clippy::unwrap_used)]

mod protocol_support;

use std::sync::Arc;

use devid_core::protocol::*;
use protocol_support::*;

struct Setup {
    env: Env,
    cache: Arc<MemoryBrokerCertCache>,
    chain: Vec<Vec<u8>>,
    key: Vec<u8>,
}

impl Setup {
    fn new() -> Setup {
        let env = Env::new();
        let (chain, key) = env.pki.issue(&Leaf::device(CLIENT_ID));
        Setup {
            env,
            cache: Arc::new(MemoryBrokerCertCache::new(8)),
            chain,
            key,
        }
    }

    /// A device config using the shared cache and expecting `name`.
    fn device(&self, name: &str) -> Arc<ClientConfig> {
        Arc::new(
            ClientConfig::new(
                &self.env.pki.root_der(),
                self.chain.clone(),
                signer(&self.key),
            )
            .unwrap()
            .with_broker_name(name)
            .unwrap()
            .with_broker_cert_cache(self.cache.clone()),
        )
    }

    /// A first handshake that fills the cache.
    fn warm(&self) -> Arc<ClientConfig> {
        let client = self.device(BROKER_NAME);
        let (c, _) = Run::with(&client, &self.env.server).go().unwrap();
        assert_eq!(c.pk_ops.ecdsa_verify, 3, "sig_s and two chain signatures");
        assert_eq!(self.cache.len(), 1);
        client
    }
}

fn flip(at_from_end: usize) -> impl FnMut(Step, &mut Vec<u8>) {
    move |step, m| {
        if step == Step::ServerHello {
            let n = m.len();
            m[n - at_from_end] ^= 0x01;
        }
    }
}

#[test]
fn ok_cache_hit_skips_only_the_chain_signatures() {
    let s = Setup::new();
    let client = s.warm();
    let (c, srv) = Run::with(&client, &s.env.server).go().unwrap();
    assert_eq!(c.keys, srv.keys);
    assert_eq!(
        c.pk_ops,
        PkOps {
            ecdh_keygen: 1,
            ecdh_agree: 1,
            ecdsa_sign: 1,
            ecdsa_verify: 1
        },
        "only sig_s is verified on a hit"
    );
}

#[test]
fn fail_cache_hit_still_refuses_a_bad_sig_s() {
    let s = Setup::new();
    let client = s.warm();
    // ServerHello ends with sig_s[64] || mac_s[32].
    let e = Run::with(&client, &s.env.server)
        .tampered(&mut flip(32 + 10))
        .unwrap_err();
    assert_eq!(e, Refusal::Device(Error::BadSignature));
}

#[test]
fn fail_cache_hit_still_refuses_a_bad_mac_s_and_mac_f() {
    let s = Setup::new();
    let client = s.warm();
    let e = Run::with(&client, &s.env.server)
        .tampered(&mut flip(1))
        .unwrap_err();
    assert_eq!(e, Refusal::Device(Error::BadMac));
    let e = Run::with(&client, &s.env.server)
        .tampered(&mut |step, m: &mut Vec<u8>| {
            if step == Step::ServerFinish {
                let n = m.len();
                m[n - 1] ^= 0x80;
            }
        })
        .unwrap_err();
    assert_eq!(e, Refusal::Device(Error::BadMac));
}

#[test]
fn fail_cache_hit_still_refuses_a_wrong_broker_name() {
    let s = Setup::new();
    s.warm();
    let other = s.device("other.example.com");
    let e = Run::with(&other, &s.env.server).go().unwrap_err();
    assert_eq!(e, Refusal::Device(Error::BrokerNameMismatch));
}

#[test]
fn fail_cache_hit_still_refuses_an_expired_broker_certificate() {
    let s = Setup::new();
    let client = s.warm();
    let mut run = Run::with(&client, &s.env.server);
    run.device_now = at(NOW + 86_400 * 400);
    let e = run.go().unwrap_err();
    assert!(
        matches!(e, Refusal::Device(Error::CertificateChain(_))),
        "{e:?}"
    );
}

#[test]
fn ok_a_different_broker_certificate_is_verified_in_full() {
    let s = Setup::new();
    let client = s.warm();
    let root = s.env.pki.root_der();
    let other_broker = Arc::new(server_config(&s.env.pki, &root, &Leaf::broker(BROKER_NAME)));
    let (c, _) = Run::with(&client, &other_broker).go().unwrap();
    assert_eq!(c.pk_ops.ecdsa_verify, 3);
    assert_eq!(s.cache.len(), 2);
}
