//! The key schedule, session keys and the signing-key abstraction.

use std::fmt;

use ring::rand::SecureRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use ring::{digest, hkdf, hmac};
use zeroize::Zeroize;

use super::error::{ConfigError, Error};

pub(crate) const LABEL_BROKER_MAC: &[u8] = b"DEVID-1 broker mac";
pub(crate) const LABEL_DEVICE_MAC: &[u8] = b"DEVID-1 device mac";
pub(crate) const LABEL_BROKER_SIG: &[u8] = b"DEVID-1 broker signature";
pub(crate) const LABEL_DEVICE_SIG: &[u8] = b"DEVID-1 device signature";
pub(crate) const LABEL_C2S: &[u8] = b"DEVID-1 c2s";
pub(crate) const LABEL_S2C: &[u8] = b"DEVID-1 s2c";
pub(crate) const LABEL_RESUMPTION: &[u8] = b"DEVID-1 resumption";
pub(crate) const LABEL_SESSION_ID: &[u8] = b"DEVID-1 session id";
pub(crate) const LABEL_RESUME_DEVICE_MAC: &[u8] = b"DEVID-1 resume device mac";
pub(crate) const LABEL_RESUME_BROKER_MAC: &[u8] = b"DEVID-1 resume broker mac";

/// A SHA-256 transcript hash value.
pub(crate) type Th = [u8; 32];

pub(crate) fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    to32(ctx.finish().as_ref())
}

/// The first 32 bytes of a SHA-256 or HMAC-SHA256 output (always exactly 32 bytes long).
pub(crate) fn to32(s: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let n = s.len().min(32);
    out[..n].copy_from_slice(&s[..n]);
    out
}

/// HKDF-Extract(salt = nonce_c || nonce_s, IKM): HMAC-SHA256 keyed with the salt (RFC 5869).
pub(crate) fn extract(nonce_c: &[u8; 32], nonce_s: &[u8; 32], ikm: &[u8]) -> Secret {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(nonce_c);
    salt[32..].copy_from_slice(nonce_s);
    let key = hmac::Key::new(hmac::HMAC_SHA256, &salt);
    Secret(to32(hmac::sign(&key, ikm).as_ref()))
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// The handshake secret (an HKDF PRK). Zeroized on drop.
#[derive(Clone)]
pub(crate) struct Secret(pub(crate) [u8; 32]);

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl Secret {
    /// HKDF-Expand(secret, label || th, N).
    pub(crate) fn expand<const N: usize>(&self, label: &[u8], th: &[u8]) -> [u8; N] {
        let prk = hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, &self.0);
        let mut out = [0u8; N];
        let info = [label, th];
        // N <= 32 here, far below HKDF-SHA256's limit of 255 * 32 bytes, so expand/fill succeed.
        if let Ok(okm) = prk.expand(&info, Len(N)) {
            let _ = okm.fill(&mut out);
        }
        out
    }

    pub(crate) fn mac_key(&self, label: &[u8], th: &[u8]) -> MacKey {
        MacKey::new(self.expand::<32>(label, th))
    }

    /// The four session values after a completed handshake or resumption.
    pub(crate) fn session_keys(&self, th3: &Th) -> SessionKeys {
        SessionKeys {
            k_c2s: self.expand(LABEL_C2S, th3),
            k_s2c: self.expand(LABEL_S2C, th3),
            resumption_secret: self.expand(LABEL_RESUMPTION, th3),
            session_id: self.expand(LABEL_SESSION_ID, th3),
        }
    }
}

/// An HMAC-SHA256 key that remembers its bytes (for test vectors and zeroization).
pub(crate) struct MacKey {
    pub(crate) bytes: [u8; 32],
    key: hmac::Key,
}

impl Drop for MacKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl MacKey {
    pub(crate) fn new(bytes: [u8; 32]) -> Self {
        MacKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
            bytes,
        }
    }

    pub(crate) fn sign(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.key);
        for p in parts {
            ctx.update(p);
        }
        to32(ctx.sign().as_ref())
    }

    /// Constant-time check of a full 32-byte tag.
    pub(crate) fn verify(&self, parts: &[&[u8]], tag: &[u8; 32]) -> Result<(), Error> {
        ct_eq(&self.sign(parts), tag)
    }
}

/// Constant-time equality of two byte strings of public length.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> Result<(), Error> {
    use subtle::ConstantTimeEq;
    if a.len() == b.len() && bool::from(a.ct_eq(b)) {
        Ok(())
    } else {
        Err(Error::BadMac)
    }
}

/// `label || 0x00 || th`: the bytes a DEVID-1 signature covers.
pub(crate) fn signed_message(label: &[u8], th: &Th) -> Vec<u8> {
    let mut m = Vec::with_capacity(label.len() + 1 + th.len());
    m.extend_from_slice(label);
    m.push(0);
    m.extend_from_slice(th);
    m
}

pub(crate) fn verify_sig(
    public_key: &[u8],
    label: &[u8],
    th: &Th,
    sig: &[u8; 64],
) -> Result<(), Error> {
    super::pk::record(super::pk::Op::Verify);
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, public_key)
        .verify(&signed_message(label, th), sig)
        .map_err(|_| Error::BadSignature)
}

/// The keys a completed DEVID-1 handshake or resumption yields, identical on both sides.
/// Zeroized on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKeys {
    /// Device-to-broker key: the root of the per-message MAC and seal keys.
    pub k_c2s: [u8; 32],
    /// Broker-to-device key.
    pub k_s2c: [u8; 32],
    /// The secret a later resumption starts from (it also goes, sealed, into the ticket).
    pub resumption_secret: [u8; 32],
    /// A public identifier of this session (safe to log).
    pub session_id: [u8; 16],
}

impl SessionKeys {
    /// The session id as lowercase hex.
    pub fn session_id_hex(&self) -> String {
        hex::encode(self.session_id)
    }
}

impl Drop for SessionKeys {
    fn drop(&mut self) {
        self.k_c2s.zeroize();
        self.k_s2c.zeroize();
        self.resumption_secret.zeroize();
    }
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKeys")
            .field("session_id", &self.session_id_hex())
            .finish_non_exhaustive()
    }
}

/// An ECDSA P-256 signing key for the handshake: a software key ([`EcdsaSigner`]) or one held
/// in a secure element.
pub trait HandshakeSigner: Send + Sync {
    /// The SEC1 uncompressed public point (65 bytes).
    fn public_key(&self) -> &[u8];
    /// ECDSA P-256 with SHA-256 over `message`, as 64 bytes r||s.
    fn sign(&self, message: &[u8], rng: &dyn SecureRandom) -> Result<[u8; 64], Error>;
}

/// A software P-256 key (ring, fixed-length r||s signatures).
pub struct EcdsaSigner {
    key: EcdsaKeyPair,
}

impl EcdsaSigner {
    /// From a PKCS#8 DER private key (what rcgen and `openssl genpkey` write). ring draws from
    /// `rng` once here, for the secret it mixes into every signature's nonce.
    pub fn from_pkcs8_der(der: &[u8], rng: &dyn SecureRandom) -> Result<Self, ConfigError> {
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, rng)
            .map(|key| EcdsaSigner { key })
            .map_err(|e| ConfigError(format!("not a PKCS#8 P-256 private key: {e}")))
    }

    /// From a PEM `PRIVATE KEY` (PKCS#8) block.
    pub fn from_pkcs8_pem(pem_text: &str, rng: &dyn SecureRandom) -> Result<Self, ConfigError> {
        let block =
            pem::parse(pem_text).map_err(|e| ConfigError(format!("private key PEM: {e}")))?;
        if block.tag() != "PRIVATE KEY" {
            return Err(ConfigError(format!(
                "private key PEM is {:?}; a PKCS#8 \"PRIVATE KEY\" is required",
                block.tag()
            )));
        }
        Self::from_pkcs8_der(block.contents(), rng)
    }
}

impl HandshakeSigner for EcdsaSigner {
    fn public_key(&self) -> &[u8] {
        self.key.public_key().as_ref()
    }

    fn sign(&self, message: &[u8], rng: &dyn SecureRandom) -> Result<[u8; 64], Error> {
        let sig = self
            .key
            .sign(rng, message)
            .map_err(|_| Error::Internal("ecdsa signing failed"))?;
        sig.as_ref()
            .try_into()
            .map_err(|_| Error::Internal("ecdsa signature is not 64 bytes"))
    }
}
