//! CA private keys at rest: PKCS#8, optionally encrypted with a passphrase.
//!
//! An unencrypted key is an ordinary PEM `PRIVATE KEY` (PKCS#8) block. An encrypted key is a
//! PEM block labelled `DEVID ENCRYPTED PRIVATE KEY` whose contents are:
//!
//! ```text
//! offset  size  field
//!      0     8  magic "DEVIDKEY"
//!      8     1  format version = 1
//!      9     1  KDF = 1: PBKDF2-HMAC-SHA256
//!     10     4  KDF iterations, u32 big-endian (600,000 when written by devid)
//!     14    16  KDF salt (random)
//!     30     1  AEAD = 1: AES-256-GCM
//!     31    12  AEAD nonce (random)
//!     43     n  AES-256-GCM ciphertext of the PKCS#8 DER, followed by the 16-byte tag
//! ```
//!
//! The 256-bit AES key is PBKDF2-HMAC-SHA256(passphrase as UTF-8, salt, iterations). The
//! first 43 bytes (the header) are the AEAD's additional authenticated data, so any change to
//! the header or the ciphertext makes decryption fail. A wrong passphrase and a corrupted file
//! therefore give the same error. 600,000 iterations follow OWASP's 2023 advice for
//! PBKDF2-HMAC-SHA256; it costs about half a second per key at start-up.

use std::num::NonZeroU32;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::pbkdf2;
use ring::rand::SecureRandom;

use super::layout::pem_block;

/// PEM label of an encrypted key file.
pub const ENCRYPTED_LABEL: &str = "DEVID ENCRYPTED PRIVATE KEY";
/// PEM label of an unencrypted PKCS#8 key.
pub const PLAIN_LABEL: &str = "PRIVATE KEY";
/// PBKDF2 iterations used when devid encrypts a key.
pub const PBKDF2_ITERATIONS: u32 = 600_000;
/// Largest iteration count accepted when reading (a corrupt count must not hang the start).
const MAX_ITERATIONS: u32 = 10_000_000;

const MAGIC: &[u8; 8] = b"DEVIDKEY";
const VERSION: u8 = 1;
const KDF_PBKDF2_SHA256: u8 = 1;
const AEAD_AES_256_GCM: u8 = 1;
const SALT_LEN: usize = 16;
const HEADER_LEN: usize = 8 + 1 + 1 + 4 + SALT_LEN + 1 + NONCE_LEN;
const TAG_LEN: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeystoreError {
    #[error("the key is encrypted and no passphrase was given (set DEVID_CA_PASSPHRASE)")]
    PassphraseRequired,
    #[error("wrong passphrase (or the encrypted key file is corrupted)")]
    WrongPassphrase,
    #[error("the passphrase is empty")]
    EmptyPassphrase,
    #[error("the key file is malformed: {0}")]
    Malformed(String),
    #[error("the random number generator failed")]
    Rng,
}

/// What a key file holds.
pub struct DecodedKey {
    /// The PKCS#8 DER.
    pub pkcs8_der: Vec<u8>,
    /// Whether the file was encrypted.
    pub encrypted: bool,
}

/// Encodes a PKCS#8 key for disk: encrypted when a passphrase is given, plain otherwise.
pub fn encode_key(
    pkcs8_der: &[u8],
    passphrase: Option<&str>,
    rng: &dyn SecureRandom,
) -> Result<String, KeystoreError> {
    match passphrase {
        None => Ok(pem_block(PLAIN_LABEL, pkcs8_der)),
        Some(p) => encrypt(pkcs8_der, p, PBKDF2_ITERATIONS, rng),
    }
}

/// Encrypts a PKCS#8 key with the given iteration count (see the module docs for the format).
pub fn encrypt(
    pkcs8_der: &[u8],
    passphrase: &str,
    iterations: u32,
    rng: &dyn SecureRandom,
) -> Result<String, KeystoreError> {
    if passphrase.is_empty() {
        return Err(KeystoreError::EmptyPassphrase);
    }
    let iterations_nz = NonZeroU32::new(iterations)
        .ok_or_else(|| KeystoreError::Malformed("zero iterations".into()))?;
    let mut salt = [0u8; SALT_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut salt).map_err(|_| KeystoreError::Rng)?;
    rng.fill(&mut nonce).map_err(|_| KeystoreError::Rng)?;

    let mut out = Vec::with_capacity(HEADER_LEN + pkcs8_der.len() + TAG_LEN);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(KDF_PBKDF2_SHA256);
    out.extend_from_slice(&iterations.to_be_bytes());
    out.extend_from_slice(&salt);
    out.push(AEAD_AES_256_GCM);
    out.extend_from_slice(&nonce);
    debug_assert_eq!(out.len(), HEADER_LEN);

    let key = derive_key(passphrase, &salt, iterations_nz)?;
    let mut body = pkcs8_der.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(&out[..HEADER_LEN]),
        &mut body,
    )
    .map_err(|_| KeystoreError::Malformed("encryption failed".into()))?;
    out.extend_from_slice(&body);
    Ok(pem_block(ENCRYPTED_LABEL, &out))
}

/// Reads a key file's text: a plain PKCS#8 `PRIVATE KEY` block, or an encrypted one (which
/// needs the passphrase).
pub fn decode_key(text: &str, passphrase: Option<&str>) -> Result<DecodedKey, KeystoreError> {
    let block = pem::parse(text)
        .map_err(|_| KeystoreError::Malformed("no PEM private key block".into()))?;
    match block.tag() {
        PLAIN_LABEL => Ok(DecodedKey {
            pkcs8_der: block.into_contents(),
            encrypted: false,
        }),
        ENCRYPTED_LABEL => {
            let passphrase = passphrase.ok_or(KeystoreError::PassphraseRequired)?;
            Ok(DecodedKey {
                pkcs8_der: decrypt(block.contents(), passphrase)?,
                encrypted: true,
            })
        }
        other => Err(KeystoreError::Malformed(format!(
            "unexpected PEM label {other:?} (expected {PLAIN_LABEL:?} or {ENCRYPTED_LABEL:?})"
        ))),
    }
}

fn decrypt(data: &[u8], passphrase: &str) -> Result<Vec<u8>, KeystoreError> {
    if passphrase.is_empty() {
        return Err(KeystoreError::EmptyPassphrase);
    }
    if data.len() < HEADER_LEN + TAG_LEN {
        return Err(KeystoreError::Malformed("too short".into()));
    }
    let (header, body) = data.split_at(HEADER_LEN);
    if &header[..8] != MAGIC {
        return Err(KeystoreError::Malformed("bad magic".into()));
    }
    if header[8] != VERSION {
        return Err(KeystoreError::Malformed(format!(
            "unsupported format version {}",
            header[8]
        )));
    }
    if header[9] != KDF_PBKDF2_SHA256 || header[30] != AEAD_AES_256_GCM {
        return Err(KeystoreError::Malformed("unsupported KDF or cipher".into()));
    }
    let iterations = u32::from_be_bytes([header[10], header[11], header[12], header[13]]);
    if iterations > MAX_ITERATIONS {
        return Err(KeystoreError::Malformed(format!(
            "{iterations} KDF iterations is more than the {MAX_ITERATIONS} accepted"
        )));
    }
    let iterations = NonZeroU32::new(iterations)
        .ok_or_else(|| KeystoreError::Malformed("zero KDF iterations".into()))?;
    let salt = &header[14..14 + SALT_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&header[31..31 + NONCE_LEN]);

    let key = derive_key(passphrase, salt, iterations)?;
    let mut buf = body.to_vec();
    let plain = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(header),
            &mut buf,
        )
        .map_err(|_| KeystoreError::WrongPassphrase)?;
    Ok(plain.to_vec())
}

fn derive_key(
    passphrase: &str,
    salt: &[u8],
    iterations: NonZeroU32,
) -> Result<LessSafeKey, KeystoreError> {
    let mut key = [0u8; 32];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        passphrase.as_bytes(),
        &mut key,
    );
    let unbound = UnboundKey::new(&AES_256_GCM, &key)
        .map_err(|_| KeystoreError::Malformed("bad AES key length".into()))?;
    key.fill(0);
    Ok(LessSafeKey::new(unbound))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    #[test]
    fn round_trips_and_refuses_wrong_or_missing_passphrase() {
        let rng = SystemRandom::new();
        let secret = b"pkcs8 bytes stand-in".to_vec();
        let text = encrypt(&secret, "correct horse", 1000, &rng).expect("encrypt");
        assert!(text.starts_with("-----BEGIN DEVID ENCRYPTED PRIVATE KEY-----\n"));
        let back = decode_key(&text, Some("correct horse")).expect("decrypt");
        assert_eq!(back.pkcs8_der, secret);
        assert!(back.encrypted);
        assert_eq!(
            decode_key(&text, Some("wrong")).err(),
            Some(KeystoreError::WrongPassphrase)
        );
        assert_eq!(
            decode_key(&text, None).err(),
            Some(KeystoreError::PassphraseRequired)
        );
        assert_eq!(
            decode_key(&text, Some("")).err(),
            Some(KeystoreError::EmptyPassphrase)
        );
    }

    #[test]
    fn any_tampered_byte_fails() {
        let rng = SystemRandom::new();
        let text = encrypt(b"0123456789", "pw", 10, &rng).expect("encrypt");
        let raw = pem::parse(&text).expect("pem").into_contents();
        for i in 0..raw.len() {
            if (10..13).contains(&i) {
                // The high bytes of the iteration count: flipping them asks for millions of
                // PBKDF2 rounds (slow, and refused by the same AEAD check as byte 13).
                continue;
            }
            let mut t = raw.clone();
            t[i] ^= 0x01;
            let text = pem_block(ENCRYPTED_LABEL, &t);
            assert!(
                decode_key(&text, Some("pw")).is_err(),
                "byte {i} flipped must fail"
            );
        }
    }

    #[test]
    fn plain_keys_pass_through() {
        let rng = SystemRandom::new();
        let text = encode_key(b"abc", None, &rng).expect("encode");
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let back = decode_key(&text, None).expect("decode");
        assert_eq!(back.pkcs8_der, b"abc");
        assert!(!back.encrypted);
        let other = pem_block("EC PRIVATE KEY", &[1]);
        assert!(matches!(
            decode_key(&other, None),
            Err(KeystoreError::Malformed(_))
        ));
    }
}
