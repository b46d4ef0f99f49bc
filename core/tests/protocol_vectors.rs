//! The DEVID-1 test vectors in `tests/vectors/devid1.json`: fixed certificates, keys, nonces,
//! ephemeral scalars and signatures; every message and derived key.
//!
//! `vectors_reproduce` drives both halves of the crate with those inputs and checks every byte,
//! and recomputes the key schedule independently (HMAC-SHA256 written out from the RFCs, ring's
//! ECDH), so a mistake shared by both halves of the crate still shows.
//!
//! ECDSA signatures in ring are randomized: the vector stores them, and the test's signer hands
//! them out after checking that each one verifies over exactly the message the crate asks to
//! sign. Regenerate (new certificates, keys, signatures) with
//! `DEVID_WRITE_VECTORS=1 cargo test -p devid-core --test protocol_vectors -- --ignored`.
#![allow(clippy::unwrap_used, deprecated)]

mod protocol_support;

use std::cell::UnsafeCell;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use devid_core::protocol::*;
use protocol_support::*;
use ring::rand::SecureRandom;
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
use ring::test::rand::{FixedSliceRandom, FixedSliceSequenceRandom};
use serde_json::{json, Value};

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/devid1.json");

// ---- independent primitives -------------------------------------------------------------

fn sha256(parts: &[&[u8]]) -> Vec<u8> {
    let mut c = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        c.update(p);
    }
    c.finish().as_ref().to_vec()
}

/// HMAC-SHA256 from RFC 2104, on top of plain SHA-256.
fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&sha256(&[key]));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let mut inner = vec![&ipad[..]];
    inner.extend_from_slice(parts);
    let ih = sha256(&inner);
    sha256(&[&opad, &ih])
}

/// HKDF-Expand from RFC 5869, for L <= 32.
fn expand(prk: &[u8], info: &[&[u8]], len: usize) -> Vec<u8> {
    let mut parts = info.to_vec();
    parts.push(&[1]);
    hmac(prk, &parts)[..len].to_vec()
}

fn ecdh(scalar: &[u8], peer: &[u8]) -> Vec<u8> {
    let rng = FixedSliceRandom { bytes: scalar };
    let k =
        ring::agreement::EphemeralPrivateKey::generate(&ring::agreement::ECDH_P256, &rng).unwrap();
    ring::agreement::agree_ephemeral(
        k,
        &ring::agreement::UnparsedPublicKey::new(&ring::agreement::ECDH_P256, peer),
        |z| z.to_vec(),
    )
    .unwrap()
}

fn public_of(scalar: &[u8]) -> Vec<u8> {
    let rng = FixedSliceRandom { bytes: scalar };
    let k =
        ring::agreement::EphemeralPrivateKey::generate(&ring::agreement::ECDH_P256, &rng).unwrap();
    k.compute_public_key().unwrap().as_ref().to_vec()
}

// ---- signers ------------------------------------------------------------------------------

/// Hands out the stored signatures, in order, after checking each verifies over the message.
struct FixedSigner {
    public: Vec<u8>,
    sigs: Mutex<Vec<[u8; 64]>>,
}

impl HandshakeSigner for FixedSigner {
    fn public_key(&self) -> &[u8] {
        &self.public
    }
    fn sign(&self, m: &[u8], _: &dyn SecureRandom) -> Result<[u8; 64], Error> {
        let sig = self.sigs.lock().unwrap().remove(0);
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.public)
            .verify(m, &sig)
            .map_err(|_| Error::Internal("vector signature does not cover this message"))?;
        Ok(sig)
    }
}

/// Signs for real and records the signatures (generation only).
struct RecordingSigner {
    inner: EcdsaSigner,
    sigs: Mutex<Vec<[u8; 64]>>,
}

impl HandshakeSigner for RecordingSigner {
    fn public_key(&self) -> &[u8] {
        self.inner.public_key()
    }
    fn sign(&self, m: &[u8], rng: &dyn SecureRandom) -> Result<[u8; 64], Error> {
        let s = self.inner.sign(m, &ring::rand::SystemRandom::new())?;
        let _ = rng;
        self.sigs.lock().unwrap().push(s);
        Ok(s)
    }
}

// ---- the run ------------------------------------------------------------------------------

fn h(v: &Value) -> Vec<u8> {
    hex::decode(
        v.as_str()
            .unwrap_or_else(|| panic!("not a hex string: {v}")),
    )
    .unwrap()
}

fn seq<'a>(parts: &'a [&'a [u8]]) -> FixedSliceSequenceRandom<'a> {
    FixedSliceSequenceRandom {
        bytes: parts,
        current: UnsafeCell::new(0),
    }
}

struct Inputs {
    now: u64,
    root: Vec<u8>,
    device_chain: Vec<Vec<u8>>,
    broker_chain: Vec<Vec<u8>>,
    broker_name: String,
    ticket_key_id: u32,
    ticket_key: [u8; 32],
    ticket_lifetime: u32,
    nonce_c: Vec<u8>,
    eph_c: Vec<u8>,
    nonce_s: Vec<u8>,
    eph_s: Vec<u8>,
    ticket_nonce: Vec<u8>,
    r_nonce_c: Vec<u8>,
    r_nonce_s: Vec<u8>,
    r_ticket_nonce: Vec<u8>,
}

struct Outputs {
    client_hello: Vec<u8>,
    server_hello: Vec<u8>,
    client_finish: Vec<u8>,
    server_finish: Vec<u8>,
    full: ClientSession,
    resume_hello: Vec<u8>,
    resume_challenge: Vec<u8>,
    resume_proof: Vec<u8>,
    resume_finish: Vec<u8>,
    resumed: ClientSession,
    mac_tag: PublishTag,
    sealed: Vec<u8>,
}

const TOPIC: &str = "devices/DEV0123456789ABCDEFGH/temp";
const MAC_PAYLOAD: &[u8] = b"{\"t\":21.5}";
const SEAL_PAYLOAD: &[u8] = b"{\"secret\":42}";

fn run(
    i: &Inputs,
    device_key: Arc<dyn HandshakeSigner>,
    broker_key: Arc<dyn HandshakeSigner>,
) -> Outputs {
    let now = at(i.now);
    let client = Arc::new(
        ClientConfig::new(&i.root, i.device_chain.clone(), device_key)
            .unwrap()
            .with_broker_name(&i.broker_name)
            .unwrap(),
    );
    let server = Arc::new(
        ServerConfig::new(&i.root, i.broker_chain.clone(), broker_key)
            .unwrap()
            .with_ticket_keys(
                TicketKeys::new(TicketKey::new(i.ticket_key_id, &i.ticket_key)),
                i.ticket_lifetime,
            ),
    );
    let dev_rng_parts = [&i.nonce_c[..], &i.eph_c[..]];
    let brk_rng_parts = [&i.nonce_s[..], &i.eph_s[..], &i.ticket_nonce[..]];
    let (full, client_hello, server_hello, client_finish, server_finish, server_keys) = {
        let dev_rng = seq(&dev_rng_parts);
        let brk_rng = seq(&brk_rng_parts);
        let (d, ch) = ClientHandshake::start(&client, &dev_rng).unwrap();
        let p = ServerHandshake::read_client_hello(&server, client.client_id(), &ch, now).unwrap();
        let (b, sh) = p.accept(&brk_rng).unwrap();
        let (d, cf) = d.handle(&sh, now, &dev_rng).unwrap();
        let (ss, sf) = b.handle(&cf, now, &brk_rng).unwrap();
        let cs = d.handle(&sf, now).unwrap();
        (cs, ch, sh, cf, sf, ss.keys)
    };
    assert_eq!(full.keys, server_keys);

    let ticket = full.ticket.clone().unwrap();
    let dev_rng_parts = [&i.r_nonce_c[..]];
    let brk_rng_parts = [&i.r_nonce_s[..], &i.r_ticket_nonce[..]];
    let (resumed, resume_hello, resume_challenge, resume_proof, resume_finish) = {
        let dev_rng = seq(&dev_rng_parts);
        let brk_rng = seq(&brk_rng_parts);
        let (d, rh) = ClientResume::start(&ticket, &dev_rng).unwrap();
        let p = ServerHandshake::read_resume_hello(&server, client.client_id(), &rh, now).unwrap();
        let (b, rc) = p.accept(&brk_rng).unwrap();
        let (d, rp) = d.handle(&rc).unwrap();
        let (ss, rf) = b.handle(&rp, now, &brk_rng).unwrap();
        let cs = d.handle(&rf, now).unwrap();
        assert_eq!(cs.keys, ss.keys);
        (cs, rh, rc, rp, rf)
    };

    let mut signer = PublishSigner::new(&full.keys);
    let mac_tag = signer.mac(TOPIC, MAC_PAYLOAD).unwrap();
    let mut sealed = SEAL_PAYLOAD.to_vec();
    signer.seal(TOPIC, &mut sealed).unwrap();
    Outputs {
        client_hello,
        server_hello,
        client_finish,
        server_finish,
        full,
        resume_hello,
        resume_challenge,
        resume_proof,
        resume_finish,
        resumed,
        mac_tag,
        sealed,
    }
}

/// Everything derived, computed independently of the crate from the message bytes.
fn derived(i: &Inputs, o: &Outputs) -> Value {
    let share_s = &o.server_hello[33..98];
    let z = ecdh(&i.eph_c, share_s);
    assert_eq!(z, ecdh(&i.eph_s, &o.client_hello[34..99]), "ECDH disagrees");
    let secret = hmac(&[&i.nonce_c[..], &i.nonce_s[..]].concat(), &[&z]);
    let sh_signed = &o.server_hello[..o.server_hello.len() - 96];
    let th1 = sha256(&[&o.client_hello, sh_signed]);
    let th2 = sha256(&[&o.client_hello, &o.server_hello]);
    let th3 = sha256(&[&o.client_hello, &o.server_hello, &o.client_finish]);
    let k_bmac = expand(&secret, &[b"DEVID-1 broker mac", &th1], 32);
    let k_dmac = expand(&secret, &[b"DEVID-1 device mac", &th1], 32);
    let n = o.server_hello.len();
    let sig_s = &o.server_hello[n - 96..n - 32];
    let mac_s = hmac(&k_bmac, &[&th1, sig_s]);
    assert_eq!(&o.server_hello[n - 32..], &mac_s[..], "mac_s");
    let sig_c = &o.client_finish[1..65];
    let mac_c = hmac(&k_dmac, &[&th2, sig_c]);
    assert_eq!(&o.client_finish[65..], &mac_c[..], "mac_c");
    let m = o.server_finish.len();
    let mac_f = hmac(&k_bmac, &[&th3, &o.server_finish[..m - 32]]);
    assert_eq!(&o.server_finish[m - 32..], &mac_f[..], "mac_f");
    let keys = |s: &[u8], th: &[u8]| {
        json!({
            "k_c2s": hex::encode(expand(s, &[b"DEVID-1 c2s", th], 32)),
            "k_s2c": hex::encode(expand(s, &[b"DEVID-1 s2c", th], 32)),
            "resumption_secret": hex::encode(expand(s, &[b"DEVID-1 resumption", th], 32)),
            "session_id": hex::encode(expand(s, &[b"DEVID-1 session id", th], 16)),
        })
    };
    let full_keys = keys(&secret, &th3);
    let ticket = &o.server_finish[7..m - 32];

    // Resumption.
    let rs = h(&full_keys["resumption_secret"]);
    let secret_r = hmac(&[&i.r_nonce_c[..], &i.r_nonce_s[..]].concat(), &[&rs]);
    let thr = sha256(&[&o.resume_hello, &o.resume_challenge]);
    let thr3 = sha256(&[&o.resume_hello, &o.resume_challenge, &o.resume_proof]);
    let rk_dmac = expand(&secret_r, &[b"DEVID-1 resume device mac", &thr], 32);
    let rk_bmac = expand(&secret_r, &[b"DEVID-1 resume broker mac", &thr], 32);
    let r_mac_c = hmac(&rk_dmac, &[&thr]);
    assert_eq!(&o.resume_proof[1..], &r_mac_c[..], "resume mac_c");
    let rm = o.resume_finish.len();
    let r_mac_f = hmac(&rk_bmac, &[&thr3, &o.resume_finish[..rm - 32]]);
    assert_eq!(&o.resume_finish[rm - 32..], &r_mac_f[..], "resume mac_f");
    let resumed_keys = keys(&secret_r, &thr3);

    // Messages.
    let k_c2s = h(&full_keys["k_c2s"]);
    let k_mac = expand(&k_c2s, &[b"DEVID-1 mac key"], 32);
    let k_seal = expand(&k_c2s, &[b"DEVID-1 seal key"], 32);
    let topic = TOPIC.as_bytes();
    let mac_full = hmac(
        &k_mac,
        &[
            b"DEVID-1 publish",
            &1u64.to_be_bytes(),
            &(topic.len() as u16).to_be_bytes(),
            topic,
            &(MAC_PAYLOAD.len() as u32).to_be_bytes(),
            MAC_PAYLOAD,
        ],
    );
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&2u64.to_be_bytes());
    let aad = [
        b"DEVID-1 seal" as &[u8],
        &(topic.len() as u16).to_be_bytes(),
        topic,
    ]
    .concat();
    let key = ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &k_seal).unwrap(),
    );
    let mut sealed = SEAL_PAYLOAD.to_vec();
    key.seal_in_place_append_tag(
        ring::aead::Nonce::assume_unique_for_key(nonce),
        ring::aead::Aad::from(&aad),
        &mut sealed,
    )
    .unwrap();

    json!({
        "full": {
            "z": hex::encode(&z),
            "secret": hex::encode(&secret),
            "th1": hex::encode(&th1),
            "th2": hex::encode(&th2),
            "th3": hex::encode(&th3),
            "k_bmac": hex::encode(&k_bmac),
            "k_dmac": hex::encode(&k_dmac),
            "sig_s": hex::encode(sig_s),
            "mac_s": hex::encode(&mac_s),
            "sig_c": hex::encode(sig_c),
            "mac_c": hex::encode(&mac_c),
            "mac_f": hex::encode(&mac_f),
            "ticket": hex::encode(ticket),
            "keys": full_keys,
        },
        "resume": {
            "secret_r": hex::encode(&secret_r),
            "thr": hex::encode(&thr),
            "thr3": hex::encode(&thr3),
            "k_dmac": hex::encode(&rk_dmac),
            "k_bmac": hex::encode(&rk_bmac),
            "mac_c": hex::encode(&r_mac_c),
            "mac_f": hex::encode(&r_mac_f),
            "ticket": hex::encode(&o.resume_finish[7..rm - 32]),
            "keys": resumed_keys,
        },
        "publish": {
            "k_c2s": hex::encode(&k_c2s),
            "k_mac": hex::encode(&k_mac),
            "k_seal": hex::encode(&k_seal),
            "topic": TOPIC,
            "mac": {
                "seq": 1,
                "payload": hex::encode(MAC_PAYLOAD),
                "hmac": hex::encode(&mac_full),
                "devid_mac": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&mac_full[..16]),
            },
            "seal": {
                "seq": 2,
                "nonce": hex::encode(nonce),
                "aad": hex::encode(&aad),
                "plaintext": hex::encode(SEAL_PAYLOAD),
                "sealed": hex::encode(&sealed),
            },
        },
    })
}

fn messages(o: &Outputs) -> Value {
    json!({
        "client_hello": hex::encode(&o.client_hello),
        "server_hello": hex::encode(&o.server_hello),
        "client_finish": hex::encode(&o.client_finish),
        "server_finish": hex::encode(&o.server_finish),
        "resume_hello": hex::encode(&o.resume_hello),
        "resume_challenge": hex::encode(&o.resume_challenge),
        "resume_proof": hex::encode(&o.resume_proof),
        "resume_finish": hex::encode(&o.resume_finish),
    })
}

fn inputs_from(v: &Value) -> Inputs {
    let i = &v["inputs"];
    Inputs {
        now: i["now"].as_u64().unwrap(),
        root: h(&i["root_der"]),
        device_chain: i["device_chain_der"]
            .as_array()
            .unwrap()
            .iter()
            .map(h)
            .collect(),
        broker_chain: i["broker_chain_der"]
            .as_array()
            .unwrap()
            .iter()
            .map(h)
            .collect(),
        broker_name: i["broker_name"].as_str().unwrap().to_string(),
        ticket_key_id: i["ticket_key_id"].as_u64().unwrap() as u32,
        ticket_key: h(&i["ticket_key"]).try_into().unwrap(),
        ticket_lifetime: i["ticket_lifetime"].as_u64().unwrap() as u32,
        nonce_c: h(&i["nonce_c"]),
        eph_c: h(&i["eph_c"]),
        nonce_s: h(&i["nonce_s"]),
        eph_s: h(&i["eph_s"]),
        ticket_nonce: h(&i["ticket_nonce"]),
        r_nonce_c: h(&i["resume_nonce_c"]),
        r_nonce_s: h(&i["resume_nonce_s"]),
        r_ticket_nonce: h(&i["resume_ticket_nonce"]),
    }
}

fn check_against_crate(v: &Value, o: &Outputs) {
    assert_eq!(
        messages(o),
        v["messages"],
        "messages differ from the vector"
    );
    let d = derived(&inputs_from(v), o);
    assert_eq!(d, v["derived"], "derived values differ from the vector");
    // The crate's session keys equal the independently derived ones.
    let k = |s: &SessionKeys| {
        json!({
            "k_c2s": hex::encode(s.k_c2s),
            "k_s2c": hex::encode(s.k_s2c),
            "resumption_secret": hex::encode(s.resumption_secret),
            "session_id": hex::encode(s.session_id),
        })
    };
    assert_eq!(k(&o.full.keys), v["derived"]["full"]["keys"]);
    assert_eq!(k(&o.resumed.keys), v["derived"]["resume"]["keys"]);
    let p = &v["derived"]["publish"];
    assert_eq!(
        o.mac_tag.properties[1].1,
        p["mac"]["devid_mac"].as_str().unwrap()
    );
    assert_eq!(
        hex::encode(&o.sealed),
        p["seal"]["sealed"].as_str().unwrap()
    );
    let t = o.full.ticket.as_ref().unwrap();
    assert_eq!(
        hex::encode(&t.ticket),
        v["derived"]["full"]["ticket"].as_str().unwrap()
    );
    assert_eq!(
        u64::from(t.lifetime),
        v["inputs"]["ticket_lifetime"].as_u64().unwrap()
    );
}

#[test]
fn vectors_reproduce() {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    let i = inputs_from(&v);
    let d = &v["derived"]["full"];
    let dev_pub = h(&v["inputs"]["device_public_key"]);
    let brk_pub = h(&v["inputs"]["broker_public_key"]);
    // The stored private keys match the stored public keys and certificates.
    let rng = ring::rand::SystemRandom::new();
    let dk = EcdsaSigner::from_pkcs8_der(&h(&v["inputs"]["device_key_pkcs8"]), &rng).unwrap();
    let bk = EcdsaSigner::from_pkcs8_der(&h(&v["inputs"]["broker_key_pkcs8"]), &rng).unwrap();
    assert_eq!(dk.public_key(), dev_pub.as_slice());
    assert_eq!(bk.public_key(), brk_pub.as_slice());
    assert_eq!(public_of(&i.eph_c), h(&v["inputs"]["share_c"]));
    assert_eq!(public_of(&i.eph_s), h(&v["inputs"]["share_s"]));
    let device = Arc::new(FixedSigner {
        public: dev_pub,
        sigs: Mutex::new(vec![h(&d["sig_c"]).try_into().unwrap()]),
    });
    let broker = Arc::new(FixedSigner {
        public: brk_pub,
        sigs: Mutex::new(vec![h(&d["sig_s"]).try_into().unwrap()]),
    });
    let o = run(&i, device, broker);
    check_against_crate(&v, &o);
    check_ticket_layout(&v, &i);
}

/// Opens the vector's ticket with plain AES-256-GCM and checks the documented layout.
fn check_ticket_layout(v: &Value, i: &Inputs) {
    let t = h(&v["derived"]["full"]["ticket"]);
    assert_eq!(&t[..4], &i.ticket_key_id.to_be_bytes());
    assert_eq!(&t[4..16], &i.ticket_nonce[..]);
    let key = ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &i.ticket_key).unwrap(),
    );
    let aad = [b"DEVID-1 ticket" as &[u8], &i.ticket_key_id.to_be_bytes()].concat();
    let mut buf = t[16..].to_vec();
    let plain = key
        .open_in_place(
            ring::aead::Nonce::try_assume_unique_for_key(&t[4..16]).unwrap(),
            ring::aead::Aad::from(&aad),
            &mut buf,
        )
        .unwrap()
        .to_vec();
    let id = v["inputs"]["client_id"].as_str().unwrap().as_bytes();
    let serial = b"8a010203040506";
    let mut want = vec![0x01, id.len() as u8];
    want.extend_from_slice(id);
    want.push(serial.len() as u8);
    want.extend_from_slice(serial);
    want.extend_from_slice(&h(&v["derived"]["full"]["keys"]["resumption_secret"]));
    want.extend_from_slice(&i.now.to_be_bytes());
    want.extend_from_slice(&(i.now + u64::from(i.ticket_lifetime)).to_be_bytes());
    want.extend_from_slice(&(NOW + 86_400 * 3650).to_be_bytes());
    assert_eq!(plain, want, "ticket plaintext layout");
}

#[test]
fn vectors_are_refused_when_one_input_changes() {
    // The vector test can fail: a ticket key that differs changes the ticket bytes.
    let v: Value = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    let mut i = inputs_from(&v);
    i.ticket_nonce[0] ^= 1;
    let d = &v["derived"]["full"];
    let device = Arc::new(FixedSigner {
        public: h(&v["inputs"]["device_public_key"]),
        sigs: Mutex::new(vec![h(&d["sig_c"]).try_into().unwrap()]),
    });
    let broker = Arc::new(FixedSigner {
        public: h(&v["inputs"]["broker_public_key"]),
        sigs: Mutex::new(vec![h(&d["sig_s"]).try_into().unwrap()]),
    });
    let o = run(&i, device, broker);
    assert_ne!(messages(&o), v["messages"]);
}

#[test]
#[ignore = "writes tests/vectors/devid1.json; run with DEVID_WRITE_VECTORS=1"]
fn regenerate_vectors() {
    if std::env::var("DEVID_WRITE_VECTORS").as_deref() != Ok("1") {
        return;
    }
    let pki = Pki::new("devid vector");
    let mut dl = Leaf::device("DEV0123456789ABCDEFGH");
    dl.not_after = NOW + 86_400 * 3650;
    let mut bl = Leaf::broker(BROKER_NAME);
    bl.not_after = NOW + 86_400 * 3650;
    let (device_chain, device_pkcs8) = pki.issue(&dl);
    let (broker_chain, broker_pkcs8) = pki.issue(&bl);
    let fixed = |label: &str| sha256(&[b"devid vector ", label.as_bytes()]);
    let i = Inputs {
        now: NOW,
        root: pki.root_der(),
        device_chain: device_chain.clone(),
        broker_chain: broker_chain.clone(),
        broker_name: BROKER_NAME.into(),
        ticket_key_id: 7,
        ticket_key: fixed("ticket key").try_into().unwrap(),
        ticket_lifetime: 86_400,
        nonce_c: fixed("nonce_c"),
        eph_c: fixed("eph_c"),
        nonce_s: fixed("nonce_s"),
        eph_s: fixed("eph_s"),
        ticket_nonce: fixed("ticket nonce")[..12].to_vec(),
        r_nonce_c: fixed("resume nonce_c"),
        r_nonce_s: fixed("resume nonce_s"),
        r_ticket_nonce: fixed("resume ticket nonce")[..12].to_vec(),
    };
    let rng = ring::rand::SystemRandom::new();
    let device = Arc::new(RecordingSigner {
        inner: EcdsaSigner::from_pkcs8_der(&device_pkcs8, &rng).unwrap(),
        sigs: Mutex::new(vec![]),
    });
    let broker = Arc::new(RecordingSigner {
        inner: EcdsaSigner::from_pkcs8_der(&broker_pkcs8, &rng).unwrap(),
        sigs: Mutex::new(vec![]),
    });
    let o = run(&i, device.clone(), broker.clone());
    let v = json!({
        "description": "DEVID-1 test vector: full handshake, resumption, publish MAC and seal. \
            All byte strings are hex. Signatures are ECDSA P-256 SHA-256 r||s; ECDSA is randomized, \
            so they are inputs here. Random inputs were drawn in this order: device nonce_c, eph_c; \
            broker nonce_s, eph_s, ticket_nonce; then resume_nonce_c; resume_nonce_s, resume_ticket_nonce.",
        "inputs": {
            "now": i.now,
            "client_id": "DEV0123456789ABCDEFGH",
            "broker_name": BROKER_NAME,
            "root_der": hex::encode(&i.root),
            "device_chain_der": device_chain.iter().map(hex::encode).collect::<Vec<_>>(),
            "device_key_pkcs8": hex::encode(&device_pkcs8),
            "device_public_key": hex::encode(device.public_key()),
            "broker_chain_der": broker_chain.iter().map(hex::encode).collect::<Vec<_>>(),
            "broker_key_pkcs8": hex::encode(&broker_pkcs8),
            "broker_public_key": hex::encode(broker.public_key()),
            "ticket_key_id": i.ticket_key_id,
            "ticket_key": hex::encode(i.ticket_key),
            "ticket_lifetime": i.ticket_lifetime,
            "nonce_c": hex::encode(&i.nonce_c),
            "eph_c": hex::encode(&i.eph_c),
            "share_c": hex::encode(public_of(&i.eph_c)),
            "nonce_s": hex::encode(&i.nonce_s),
            "eph_s": hex::encode(&i.eph_s),
            "share_s": hex::encode(public_of(&i.eph_s)),
            "ticket_nonce": hex::encode(&i.ticket_nonce),
            "resume_nonce_c": hex::encode(&i.r_nonce_c),
            "resume_nonce_s": hex::encode(&i.r_nonce_s),
            "resume_ticket_nonce": hex::encode(&i.r_ticket_nonce),
        },
        "messages": messages(&o),
        "derived": derived(&i, &o),
    });
    assert_eq!(device.sigs.lock().unwrap().len(), 1);
    assert_eq!(broker.sigs.lock().unwrap().len(), 1);
    check_against_crate(&v, &o);
    std::fs::write(PATH, serde_json::to_string_pretty(&v).unwrap() + "\n").unwrap();
}

/// Every hex value of the vector appears in docs/protocol.md (rendered by
/// `tests/vectors/render_doc.py`).
#[test]
fn protocol_doc_carries_the_vector() {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    let doc_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");
    let doc: String = std::fs::read_to_string(doc_path)
        .unwrap()
        .split('\n')
        .collect();
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) if s.len() >= 24 && s.bytes().all(|b| b.is_ascii_hexdigit()) => {
                out.push(s.clone())
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Object(o) => o.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut hexes = Vec::new();
    walk(&v, &mut hexes);
    assert!(hexes.len() > 50);
    for hx in hexes {
        assert!(doc.contains(&hx), "docs/protocol.md lacks {hx}");
    }
}
