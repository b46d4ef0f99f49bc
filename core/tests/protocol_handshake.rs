//! DEVID-1 full handshake, both halves in memory: the good case, every byte tampered, and one
//! failing case per check.
#![allow(clippy::unwrap_used)]

mod protocol_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use devid_core::protocol::*;
use protocol_support::*;
use rcgen::{ExtendedKeyUsagePurpose, KeyUsagePurpose};
use ring::rand::SystemRandom;

fn chain_err(r: Result<(ClientSession, ServerSession), Refusal>) -> Refusal {
    match r {
        Ok(_) => panic!("handshake succeeded but should have failed"),
        Err(e) => e,
    }
}

fn assert_broker_refuses(r: Result<(ClientSession, ServerSession), Refusal>, want: &Error) {
    let e = chain_err(r);
    assert_eq!(e, Refusal::Broker(want.clone()), "got {e:?}");
    assert_eq!(want.reason_code(), 0x87);
}

fn is_chain(e: &Refusal, want: webpki::Error) -> bool {
    matches!(e.error(), Error::CertificateChain(got) if *got == want)
}

/// A missing EKU is found either by webpki (EKU present without the purpose) or by the leaf
/// check (no EKU extension at all).
fn is_eku_missing(e: &Refusal) -> bool {
    matches!(
        e.error(),
        Error::CertificateChain(webpki::Error::RequiredEkuNotFoundContext(_))
            | Error::BadCertificate("leaf lacks the required extendedKeyUsage")
    )
}

#[test]
fn ok_full_handshake_agrees_on_keys_and_issues_a_ticket() {
    let env = Env::new();
    let (c, s) = Run::new(&env).go().unwrap();
    assert_eq!(c.keys, s.keys);
    assert_ne!(c.keys.k_c2s, c.keys.k_s2c);
    assert_eq!(s.client_id, CLIENT_ID);
    assert_eq!(s.cert_serial, "8a010203040506");
    assert!(!s.resumed && !c.resumed);
    let t = c.ticket.expect("a ticket");
    assert_eq!(t.lifetime, DEFAULT_TICKET_LIFETIME);
    assert_eq!(t.resumption_secret, c.keys.resumption_secret);
    // Two handshakes never share keys.
    let (c2, _) = Run::new(&env).go().unwrap();
    assert_ne!(c2.keys, c.keys);
}

#[test]
fn ok_identity_is_exposed_before_any_public_key_operation() {
    let env = Env::new();
    let (_, ch) = ClientHandshake::start(&env.client, &SystemRandom::new()).unwrap();
    let pending = ServerHandshake::read_client_hello(&env.server, CLIENT_ID, &ch, now()).unwrap();
    let id = pending.identity();
    assert_eq!(id.client_id, CLIENT_ID);
    assert_eq!(id.serial_hex, "8a010203040506");
    let leaf = &env.client_chain_leaf();
    assert_eq!(&*id.leaf_der, leaf.as_slice());
    assert_eq!(
        id.fingerprint.as_slice(),
        ring::digest::digest(&ring::digest::SHA256, leaf).as_ref()
    );
    assert_eq!(id.not_after, NOW + 86_400 * 365);
}

trait LeafOf {
    fn client_chain_leaf(&self) -> Vec<u8>;
}

impl LeafOf for Env {
    fn client_chain_leaf(&self) -> Vec<u8> {
        let (_, ch) = ClientHandshake::start(&self.client, &SystemRandom::new()).unwrap();
        // ClientHello: type, version, nonce, share, count, len(u16), leaf
        let at = 2 + 32 + 65 + 1;
        let len = u16::from_be_bytes([ch[at], ch[at + 1]]) as usize;
        ch[at + 2..at + 2 + len].to_vec()
    }
}

#[test]
fn ok_without_ticket_keys_finish_carries_no_ticket() {
    let env = Env::new();
    let (chain, key) = env.pki.issue(&Leaf::broker(BROKER_NAME));
    let server = Arc::new(ServerConfig::new(&env.pki.root_der(), chain, signer(&key)).unwrap());
    let (c, s) = Run::with(&env.client, &server).go().unwrap();
    assert!(c.ticket.is_none());
    assert_eq!(c.keys, s.keys);
}

#[test]
fn fail_every_flipped_byte_of_every_message() {
    let env = Env::new();
    for step in STEPS {
        let mut len = 0;
        Run::new(&env)
            .tampered(&mut |s, m| {
                if s == step {
                    len = m.len()
                }
            })
            .unwrap();
        assert!(len > 0);
        for i in 0..len {
            for flip in [0x01u8, 0x80] {
                let r = Run::new(&env).tampered(&mut |s, m| {
                    if s == step {
                        m[i] ^= flip;
                    }
                });
                assert!(r.is_err(), "{step:?} byte {i} ^ {flip:#x} was accepted");
            }
        }
    }
}

#[test]
fn fail_every_truncation_and_trailing_byte() {
    let env = Env::new();
    for step in STEPS {
        let mut len = 0;
        Run::new(&env)
            .tampered(&mut |s, m| {
                if s == step {
                    len = m.len()
                }
            })
            .unwrap();
        for cut in 0..len {
            let r = Run::new(&env).tampered(&mut |s, m| {
                if s == step {
                    m.truncate(cut);
                }
            });
            let e = chain_err(r);
            assert!(
                matches!(e.error(), Error::Decode(_)),
                "{step:?} cut at {cut}: {e:?}"
            );
        }
        let r = Run::new(&env).tampered(&mut |s, m| {
            if s == step {
                m.push(0);
            }
        });
        let e = chain_err(r);
        assert!(
            matches!(e.error(), Error::Decode(DecodeError::TrailingBytes)),
            "{step:?} + trailing byte: {e:?}"
        );
    }
}

#[test]
fn fail_wrong_client_id() {
    let env = Env::new();
    let mut run = Run::new(&env);
    run.client_id = "OTHER0123456789".into();
    assert_broker_refuses(run.go(), &Error::ClientIdMismatch);
}

#[test]
fn fail_empty_client_id() {
    let env = Env::new();
    let mut run = Run::new(&env);
    run.client_id = String::new();
    assert_broker_refuses(run.go(), &Error::EmptyClientId);
}

#[test]
fn fail_client_id_with_mqtt_wildcards() {
    let env = Env::new();
    let mut run = Run::new(&env);
    run.client_id = "DEV+#".into();
    assert_broker_refuses(run.go(), &Error::BadClientId);
}

#[test]
fn fail_cn_and_san_disagree() {
    let env = Env::new();
    let mut leaf = Leaf::device(CLIENT_ID);
    leaf.uris = vec!["urn:devid:SOMEONEELSE".into()];
    // The device config itself refuses such a certificate; build the broker side by hand.
    let (chain, key) = env.pki.issue(&leaf);
    assert!(ClientConfig::new(&env.pki.root_der(), chain.clone(), signer(&key)).is_err());
    let r = raw_client_hello_to_broker(&env, &chain, CLIENT_ID);
    assert_eq!(r.unwrap_err(), Error::CertificateNotBound);
}

#[test]
fn fail_san_uri_missing() {
    let env = Env::new();
    let mut leaf = Leaf::device(CLIENT_ID);
    leaf.uris = vec![];
    leaf.dns = vec!["device.example".into()];
    let (chain, _) = env.pki.issue(&leaf);
    let r = raw_client_hello_to_broker(&env, &chain, CLIENT_ID);
    assert_eq!(r.unwrap_err(), Error::CertificateNotBound);
}

#[test]
fn fail_cn_missing() {
    let env = Env::new();
    let mut leaf = Leaf::device(CLIENT_ID);
    leaf.cn = None;
    let (chain, _) = env.pki.issue(&leaf);
    let r = raw_client_hello_to_broker(&env, &chain, CLIENT_ID);
    assert_eq!(r.unwrap_err(), Error::CertificateNotBound);
}

/// Sends a ClientHello with an arbitrary chain straight to the broker.
fn raw_client_hello_to_broker(
    env: &Env,
    chain: &[Vec<u8>],
    client_id: &str,
) -> Result<DeviceIdentity, Error> {
    let mut ch = vec![0x01, 0x01];
    ch.extend_from_slice(&[7u8; 32]);
    // a valid point: the broker's own ephemeral-like share is not checked before accept
    ch.push(0x04);
    ch.extend_from_slice(&[1u8; 64]);
    ch.push(chain.len() as u8);
    for c in chain {
        ch.extend_from_slice(&(c.len() as u16).to_be_bytes());
        ch.extend_from_slice(c);
    }
    ServerHandshake::read_client_hello(&env.server, client_id, &ch, now())
        .map(|p| p.identity().clone())
}

#[test]
fn fail_certificate_from_another_ca() {
    let env = Env::new();
    let other = Pki::new("other");
    let client = Arc::new(client_config(
        &other,
        &env.pki.root_der(),
        &Leaf::device(CLIENT_ID),
        Some(BROKER_NAME),
    ));
    let e = chain_err(Run::with(&client, &env.server).go());
    assert!(
        matches!(e, Refusal::Broker(_)) && is_chain(&e, webpki::Error::UnknownIssuer),
        "{e:?}"
    );
}

#[test]
fn fail_device_without_intermediate() {
    let env = Env::new();
    let (mut chain, _) = env.pki.issue(&Leaf::device(CLIENT_ID));
    chain.truncate(1);
    let r = raw_client_hello_to_broker(&env, &chain, CLIENT_ID);
    assert_eq!(
        r.unwrap_err(),
        Error::CertificateChain(webpki::Error::UnknownIssuer)
    );
}

#[test]
fn fail_expired_and_not_yet_valid_device_certificate() {
    let env = Env::new();
    let mut run = Run::new(&env);
    run.broker_now = at(NOW + 86_400 * 366);
    let e = chain_err(run.go());
    assert!(
        matches!(
            e,
            Refusal::Broker(Error::CertificateChain(webpki::Error::CertExpired { .. }))
        ),
        "{e:?}"
    );
    let mut run = Run::new(&env);
    run.broker_now = at(NOW - 86_400 * 2);
    let e = chain_err(run.go());
    assert!(
        matches!(
            e,
            Refusal::Broker(Error::CertificateChain(
                webpki::Error::CertNotValidYet { .. }
            ))
        ),
        "{e:?}"
    );
}

#[test]
fn fail_device_certificate_without_eku() {
    let env = Env::new();
    let mut leaf = Leaf::device(CLIENT_ID);
    leaf.ekus = vec![];
    let e = chain_err(Run::with(&env.device(&leaf), &env.server).go());
    assert!(
        matches!(e, Refusal::Broker(_)) && is_eku_missing(&e),
        "{e:?}"
    );
}

#[test]
fn fail_device_certificate_with_server_auth_only() {
    let env = Env::new();
    let mut leaf = Leaf::device(CLIENT_ID);
    leaf.ekus = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let e = chain_err(Run::with(&env.device(&leaf), &env.server).go());
    assert!(
        matches!(e, Refusal::Broker(_)) && is_eku_missing(&e),
        "{e:?}"
    );
}

#[test]
fn fail_device_certificate_without_digital_signature() {
    let env = Env::new();
    let mut leaf = Leaf::device(CLIENT_ID);
    leaf.key_usages = vec![KeyUsagePurpose::KeyAgreement];
    assert_broker_refuses(
        Run::with(&env.device(&leaf), &env.server).go(),
        &Error::BadCertificate("keyUsage lacks digitalSignature"),
    );
    leaf.key_usages = vec![];
    assert_broker_refuses(
        Run::with(&env.device(&leaf), &env.server).go(),
        &Error::BadCertificate("no keyUsage"),
    );
}

#[test]
fn fail_device_certificate_with_p384_signature() {
    // An intermediate with a P-384 key signs the device: not P-256/SHA-256.
    let env = Env::new();
    let root = &env.pki.root;
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "p384 issuing");
    let k384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let inter = rcgen::CertifiedIssuer::signed_by(p, k384, root).unwrap();
    let leaf = Leaf::device(CLIENT_ID);
    let (chain, _) = env.pki.issue(&leaf);
    // Re-issue the same leaf params under the P-384 intermediate.
    let key = p256();
    let mut lp = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    lp.distinguished_name
        .push(rcgen::DnType::CommonName, CLIENT_ID);
    lp.subject_alt_names = vec![rcgen::SanType::URI(
        format!("urn:devid:{CLIENT_ID}")
            .as_str()
            .try_into()
            .unwrap(),
    )];
    lp.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    lp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = lp.signed_by(&key, &inter).unwrap();
    let bad_chain = vec![cert.der().to_vec(), inter.der().to_vec()];
    assert!(raw_client_hello_to_broker(&env, &chain, CLIENT_ID).is_ok());
    let e = raw_client_hello_to_broker(&env, &bad_chain, CLIENT_ID).unwrap_err();
    assert!(matches!(e, Error::CertificateChain(_)), "{e:?}");
}

#[test]
fn fail_broker_without_server_auth() {
    let env = Env::new();
    let mut leaf = Leaf::broker(BROKER_NAME);
    leaf.ekus = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let e = chain_err(Run::with(&env.client, &env.broker(&leaf)).go());
    assert!(
        matches!(e, Refusal::Device(_)) && is_eku_missing(&e),
        "{e:?}"
    );
}

#[test]
fn fail_broker_from_another_ca() {
    let env = Env::new();
    let other = Pki::new("other");
    let server = Arc::new(server_config(
        &other,
        &other.root_der(),
        &Leaf::broker(BROKER_NAME),
    ));
    // The broker trusts the devid root for devices but presents a foreign certificate.
    let (chain, key) = other.issue(&Leaf::broker(BROKER_NAME));
    let server2 = Arc::new(
        ServerConfig::new(&env.pki.root_der(), chain, signer(&key))
            .unwrap()
            .with_ticket_keys(ticket_keys(), 60),
    );
    let _ = server;
    let e = chain_err(Run::with(&env.client, &server2).go());
    assert!(
        matches!(e, Refusal::Device(_)) && is_chain(&e, webpki::Error::UnknownIssuer),
        "{e:?}"
    );
}

#[test]
fn fail_wrong_broker_name_and_ok_without_configured_name() {
    let env = Env::new();
    let server = env.broker(&Leaf::broker("other.example.com"));
    let e = chain_err(Run::with(&env.client, &server).go());
    assert_eq!(e, Refusal::Device(Error::BrokerNameMismatch));
    let (chain, key) = env.pki.issue(&Leaf::device(CLIENT_ID));
    let unnamed = Arc::new(ClientConfig::new(&env.pki.root_der(), chain, signer(&key)).unwrap());
    assert!(Run::with(&unnamed, &server).go().is_ok());
}

#[test]
fn fail_expired_broker_certificate() {
    let env = Env::new();
    let mut run = Run::new(&env);
    run.device_now = at(NOW + 86_400 * 400);
    let e = chain_err(run.go());
    assert!(
        matches!(
            e,
            Refusal::Device(Error::CertificateChain(webpki::Error::CertExpired { .. }))
        ),
        "{e:?}"
    );
}

/// Reports the certificate's public key but signs with another key.
struct WrongKeySigner {
    claimed: Vec<u8>,
    real: EcdsaSigner,
}

impl HandshakeSigner for WrongKeySigner {
    fn public_key(&self) -> &[u8] {
        &self.claimed
    }
    fn sign(&self, m: &[u8], rng: &dyn ring::rand::SecureRandom) -> Result<[u8; 64], Error> {
        self.real.sign(m, rng)
    }
}

fn wrong_signer(pkcs8: &[u8]) -> Arc<WrongKeySigner> {
    let other = p256().serialize_der();
    Arc::new(WrongKeySigner {
        claimed: EcdsaSigner::from_pkcs8_der(pkcs8, &SystemRandom::new())
            .unwrap()
            .public_key()
            .to_vec(),
        real: EcdsaSigner::from_pkcs8_der(&other, &SystemRandom::new()).unwrap(),
    })
}

#[test]
fn fail_bad_device_signature() {
    let env = Env::new();
    let (chain, key) = env.pki.issue(&Leaf::device(CLIENT_ID));
    let client = Arc::new(
        ClientConfig::new(&env.pki.root_der(), chain, wrong_signer(&key))
            .unwrap()
            .with_broker_name(BROKER_NAME)
            .unwrap(),
    );
    assert_broker_refuses(Run::with(&client, &env.server).go(), &Error::BadSignature);
}

#[test]
fn fail_bad_broker_signature() {
    let env = Env::new();
    let (chain, key) = env.pki.issue(&Leaf::broker(BROKER_NAME));
    let server =
        Arc::new(ServerConfig::new(&env.pki.root_der(), chain, wrong_signer(&key)).unwrap());
    let e = chain_err(Run::with(&env.client, &server).go());
    assert_eq!(e, Refusal::Device(Error::BadSignature));
}

#[test]
fn fail_bad_macs() {
    let env = Env::new();
    // mac_s: the last 32 bytes of ServerHello.
    let e = chain_err(Run::new(&env).tampered(&mut |s, m| {
        if s == Step::ServerHello {
            let n = m.len();
            m[n - 1] ^= 1;
        }
    }));
    assert_eq!(e, Refusal::Device(Error::BadMac));
    // mac_c: the last 32 bytes of ClientFinish.
    let e = chain_err(Run::new(&env).tampered(&mut |s, m| {
        if s == Step::ClientFinish {
            m[70] ^= 1;
        }
    }));
    assert_eq!(e, Refusal::Broker(Error::BadMac));
    // mac_f, and the ticket it covers.
    for at in [2usize, 10, usize::MAX] {
        let e = chain_err(Run::new(&env).tampered(&mut |s, m| {
            if s == Step::ServerFinish {
                let i = at.min(m.len() - 1);
                m[i] ^= 1;
            }
        }));
        assert_eq!(e, Refusal::Device(Error::BadMac));
    }
}

#[test]
fn fail_messages_out_of_order() {
    let env = Env::new();
    let rng = SystemRandom::new();
    let (dev, ch) = ClientHandshake::start(&env.client, &rng).unwrap();
    // The broker awaits a first message; a ClientFinish is refused.
    let e = ServerHandshake::start(&env.server, CLIENT_ID, &[0x03; 97], now())
        .err()
        .unwrap();
    assert_eq!(
        e,
        Error::UnexpectedMessage {
            expected: "ClientHello or ResumeHello",
            got: 0x03
        }
    );
    assert_eq!(e.reason_code(), 0x87);
    let ServerStart::Full(p) = ServerHandshake::start(&env.server, CLIENT_ID, &ch, now()).unwrap()
    else {
        panic!("not a full handshake")
    };
    let (brk, sh) = p.accept(&rng).unwrap();
    // The broker awaits ClientFinish; a ClientHello (replayed) is refused.
    let e = brk.handle(&ch, now(), &rng).err().unwrap();
    assert!(
        matches!(e, Error::UnexpectedMessage { got: 0x01, .. }),
        "{e:?}"
    );
    // The device awaits ServerHello; a ServerFinish is refused.
    let e = dev
        .handle(&[0x04, 0, 0, 0, 0, 0, 0], now(), &rng)
        .err()
        .unwrap();
    assert!(
        matches!(e, Error::UnexpectedMessage { got: 0x04, .. }),
        "{e:?}"
    );
    let _ = sh;
}

#[test]
fn fail_wrong_version_and_method_answer_0x8c() {
    let env = Env::new();
    let e = chain_err(Run::new(&env).tampered(&mut |s, m| {
        if s == Step::ClientHello {
            m[1] = 0x02;
        }
    }));
    assert_eq!(e, Refusal::Broker(Error::UnsupportedVersion(2)));
    assert_eq!(e.error().reason_code(), 0x8C);
    assert_eq!(check_method("DEVID-2").unwrap_err().reason_code(), 0x8C);
    assert_eq!(
        check_method("devid-1").unwrap_err(),
        Error::UnsupportedMethod
    );
    assert!(check_method(AUTH_METHOD).is_ok());
}

#[test]
fn fail_after_timeout() {
    let env = Env::new();
    let mut run = Run::new(&env);
    run.finish_now = at(NOW + DEFAULT_TIMEOUT_SECS + 1);
    assert_broker_refuses(run.go(), &Error::Timeout);
    let mut run = Run::new(&env);
    run.finish_now = at(NOW + DEFAULT_TIMEOUT_SECS);
    assert!(run.go().is_ok());
}

#[test]
fn fail_config_with_key_not_matching_certificate() {
    let env = Env::new();
    let (chain, _) = env.pki.issue(&Leaf::device(CLIENT_ID));
    let other = p256().serialize_der();
    assert!(ClientConfig::new(&env.pki.root_der(), chain.clone(), signer(&other)).is_err());
    assert!(ServerConfig::new(&env.pki.root_der(), chain, signer(&other)).is_err());
}

/// Counts lookups and inserts around a MemoryCertCache.
struct CountingCache {
    inner: MemoryCertCache,
    hits: AtomicUsize,
    inserts: AtomicUsize,
}

impl CertCache for CountingCache {
    fn get(&self, fp: &[u8; 32]) -> Option<Arc<VerifiedDeviceCert>> {
        let r = self.inner.get(fp);
        if r.is_some() {
            self.hits.fetch_add(1, Ordering::SeqCst);
        }
        r
    }
    fn insert(&self, cert: Arc<VerifiedDeviceCert>) {
        self.inserts.fetch_add(1, Ordering::SeqCst);
        self.inner.insert(cert)
    }
}

#[test]
fn ok_cert_cache_skips_path_validation_but_keeps_every_other_check() {
    let env = Env::new();
    let cache = Arc::new(CountingCache {
        inner: MemoryCertCache::new(10),
        hits: AtomicUsize::new(0),
        inserts: AtomicUsize::new(0),
    });
    let (chain, key) = env.pki.issue(&Leaf::broker(BROKER_NAME));
    let server = Arc::new(
        ServerConfig::new(&env.pki.root_der(), chain, signer(&key))
            .unwrap()
            .with_cert_cache(cache.clone()),
    );
    Run::with(&env.client, &server).go().unwrap();
    Run::with(&env.client, &server).go().unwrap();
    assert_eq!(cache.inserts.load(Ordering::SeqCst), 1);
    assert_eq!(cache.hits.load(Ordering::SeqCst), 1);
    // A cached certificate is still refused after it expires ...
    let mut run = Run::with(&env.client, &server);
    run.broker_now = at(NOW + 86_400 * 366);
    let e = chain_err(run.go());
    assert!(
        matches!(e, Refusal::Broker(Error::CertificateChain(_))),
        "{e:?}"
    );
    // ... or under another ClientID ...
    let mut run = Run::with(&env.client, &server);
    run.client_id = "SOMEONEELSE".into();
    assert_eq!(
        chain_err(run.go()),
        Refusal::Broker(Error::ClientIdMismatch)
    );
    // ... and its signature is still checked.
    let e = chain_err(Run::with(&env.client, &server).tampered(&mut |s, m| {
        if s == Step::ClientFinish {
            m[1] ^= 1;
        }
    }));
    assert_eq!(e, Refusal::Broker(Error::BadSignature));
}

#[test]
fn ok_reauthentication_yields_fresh_keys() {
    // AUTH 0x19 on a live connection carries a new ClientHello: the same states apply, and the
    // ServerFinish goes into AUTH 0x00.
    let env = Env::new();
    let (c1, s1) = Run::new(&env).go().unwrap();
    let (c2, s2) = Run::new(&env).go().unwrap();
    assert_eq!(c2.keys, s2.keys);
    assert_ne!(c1.keys.k_c2s, c2.keys.k_c2s);
    assert_ne!(s1.keys.session_id, s2.keys.session_id);
}

#[test]
fn all_refusals_but_method_and_version_are_0x87() {
    let cases = [
        Error::Timeout,
        Error::BadMac,
        Error::BadSignature,
        Error::ClientIdMismatch,
        Error::Decode(DecodeError::Truncated),
        Error::BadTicket,
        Error::TicketExpired,
        Error::CertificateChain(webpki::Error::UnknownIssuer),
    ];
    for e in cases {
        assert_eq!(e.reason_code(), 0x87, "{e:?}");
        assert!(!e.log_str().is_empty());
    }
    assert_eq!(Error::UnsupportedVersion(9).reason_code(), 0x8C);
}

#[test]
fn mutual_tls_path_runs_the_same_certificate_checks() {
    let env = Env::new();
    let (chain, _) = env.pki.issue(&Leaf::device(CLIENT_ID));
    let certs: Vec<&[u8]> = chain.iter().map(|c| c.as_slice()).collect();
    let id = env
        .server
        .verify_device_certificate(CLIENT_ID, &certs, now())
        .unwrap();
    assert_eq!(id.client_id, CLIENT_ID);
    assert_eq!(id.serial_hex, "8a010203040506");
    assert_eq!(
        env.server.verify_device_certificate("OTHER", &certs, now()),
        Err(Error::ClientIdMismatch)
    );
    assert!(matches!(
        env.server
            .verify_device_certificate(CLIENT_ID, &certs, at(NOW + 86_400 * 400)),
        Err(Error::CertificateChain(_))
    ));
    assert!(env
        .server
        .verify_device_certificate(CLIENT_ID, &certs[..1], now())
        .is_err());
    let mut leaf = Leaf::device(CLIENT_ID);
    leaf.ekus = vec![];
    let (chain, _) = env.pki.issue(&leaf);
    let certs: Vec<&[u8]> = chain.iter().map(|c| c.as_slice()).collect();
    assert!(env
        .server
        .verify_device_certificate(CLIENT_ID, &certs, now())
        .is_err());
}

#[test]
fn ok_a_certificate_names_its_issuing_ca_by_that_cas_own_key_id() {
    let pki = Pki::new("ids");
    let (chain, _) = pki.issue(&Leaf::device(CLIENT_ID));
    let issuer = issuer_id_of(&chain[0]).expect("the leaf's AKI");
    assert_eq!(ca_id_of(&chain[1]).as_deref(), Some(issuer.as_str()));
    assert_ne!(ca_id_of(&pki.root_der()), Some(issuer));
    assert_eq!(ca_id_of(b"not a certificate"), None);
}
