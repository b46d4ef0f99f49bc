//! The MQTT renewal test vectors of `docs/protocol.md` ("MQTT renewal", the block after
//! `<!-- renewal-vectors -->`), read from the document itself so that it cannot drift from the
//! code: the re-key proof's message is the label and the CSR's SHA-256, the signature verifies
//! under the current certificate's key (and not over another CSR), the CSR carries the current
//! certificate's names and the new key, and the reply bytes decode as documented.
//!
//! Regenerate (new keys, CSR, signature) with
//! `cargo test -p devid-core --test renewal_vectors -- --ignored --nocapture` and paste.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use devid_core::csr::parse_csr_der;
use devid_core::ldevid::{rekey_proof_message, verify_rekey_proof, Names, REKEY_PROOF_LABEL};
use devid_core::protocol::renewal::{decode_proof, encode_proof, Reply};
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1};

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");

/// `name: value` lines of the vector block.
fn vectors() -> HashMap<String, String> {
    let doc = std::fs::read_to_string(DOC).unwrap();
    let after = doc
        .split("<!-- renewal-vectors -->")
        .nth(1)
        .expect("the renewal vectors marker");
    let block = after
        .split("```text\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a text block after the marker");
    block
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn hex_of(v: &HashMap<String, String>, k: &str) -> Vec<u8> {
    hex::decode(v.get(k).unwrap_or_else(|| panic!("vector {k}"))).unwrap()
}

#[test]
fn the_documented_proof_verifies_and_binds_the_csr() {
    let v = vectors();
    let cert = hex_of(&v, "current_certificate");
    let csr = hex_of(&v, "csr");
    let sig = hex_of(&v, "signature");
    // The message, written out from the document's definition.
    assert_eq!(hex_of(&v, "label"), REKEY_PROOF_LABEL);
    let digest = ring::digest::digest(&ring::digest::SHA256, &csr);
    assert_eq!(hex_of(&v, "csr_sha256"), digest.as_ref());
    let message = [REKEY_PROOF_LABEL, digest.as_ref()].concat();
    assert_eq!(hex_of(&v, "message"), message);
    assert_eq!(rekey_proof_message(&csr), message);
    // It verifies under the current key, with ring directly and with the service's check.
    let point = hex_of(&v, "current_public_key");
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &point)
        .verify(&message, &sig)
        .expect("the documented signature verifies");
    assert!(verify_rekey_proof(&cert, &csr, &sig));
    // Not over another CSR, not under another key.
    let mut other = csr.clone();
    let last = other.len() - 1;
    other[last] ^= 1;
    assert!(!verify_rekey_proof(&cert, &other, &sig));
    let mut bad = sig.clone();
    bad[10] ^= 1;
    assert!(!verify_rekey_proof(&cert, &csr, &bad));
    // The property carries it as base64.
    assert_eq!(v["property"], encode_proof(&sig));
    assert_eq!(decode_proof(&v["property"]), Some(sig));
}

#[test]
fn the_documented_csr_has_the_new_key_and_the_current_names() {
    let v = vectors();
    let cert = hex_of(&v, "current_certificate");
    let csr = hex_of(&v, "csr");
    let checked = parse_csr_der(&csr).expect("a valid CSR");
    assert_eq!(
        checked.public_key().as_bytes().as_slice(),
        hex_of(&v, "new_public_key")
    );
    assert_ne!(
        Some(checked.spki_sha256()),
        devid_core::csr::certificate_spki_sha256(&cert),
        "a re-key: the CSR's key is not the certificate's"
    );
    assert_eq!(Names::of_csr(&csr), Names::of_certificate(&cert));
}

#[test]
fn the_documented_replies_decode() {
    let v = vectors();
    let refused = Reply::decode(&hex_of(&v, "reply_refused")).unwrap();
    assert_eq!(
        refused,
        Reply::Refused {
            code: 0x09,
            detail: "slow down".into()
        }
    );
    let issued = Reply::decode(&hex_of(&v, "reply_issued")).unwrap();
    assert_eq!(
        issued,
        Reply::Issued(vec![vec![0x30, 0x03, 0x02, 0x01, 0x01], vec![0x30, 0x00]])
    );
}

/// Prints a fresh set of vectors for the document.
#[test]
#[ignore]
fn print_vectors() {
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_ASN1_SIGNING};
    let rng = SystemRandom::new();
    let make = || {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        (pkcs8.as_ref().to_vec(), pair)
    };
    let (cur_pkcs8, current) = make();
    let (_, new) = make();
    let rc_key = rcgen::KeyPair::try_from(cur_pkcs8.as_slice()).unwrap();
    let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "thermoK7Q2M9XW4D8R6T1VZ");
    params.subject_alt_names = vec![rcgen::SanType::URI(
        "urn:devid:thermoK7Q2M9XW4D8R6T1VZ".try_into().unwrap(),
    )];
    let cert = params.self_signed(&rc_key).unwrap().der().to_vec();
    let csr = devid_core::protocol::renewal::renewal_csr(&cert, &new, &rng).unwrap();
    let sig = devid_core::protocol::renewal::rekey_proof(&current, &csr, &rng).unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, &csr);
    println!("label: {}", hex::encode(REKEY_PROOF_LABEL));
    println!("current_certificate: {}", hex::encode(&cert));
    println!("current_public_key: {}", hex::encode(current.public_key()));
    println!("new_public_key: {}", hex::encode(new.public_key()));
    println!("csr: {}", hex::encode(&csr));
    println!("csr_sha256: {}", hex::encode(digest));
    println!("message: {}", hex::encode(rekey_proof_message(&csr)));
    println!("signature: {}", hex::encode(&sig));
    println!("property: {}", encode_proof(&sig));
    println!(
        "reply_refused: {}",
        hex::encode(
            Reply::Refused {
                code: 9,
                detail: "slow down".into()
            }
            .encode()
        )
    );
    println!(
        "reply_issued: {}",
        hex::encode(Reply::Issued(vec![vec![0x30, 3, 2, 1, 1], vec![0x30, 0]]).encode())
    );
}
