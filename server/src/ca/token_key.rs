//! A CA key that lives in a PKCS#11 token: made inside it (P-256, sensitive, never
//! extractable), found again by its `CKA_ID`, and used through rcgen's `SigningKey` trait.
//!
//! Signing hashes the message with ring (SHA-256), has the token sign the digest with
//! `CKM_ECDSA`, turns the token's raw `r || s` into the DER `ECDSA-Sig-Value` X.509 needs, and
//! checks the signature with ring against the key's public key before anyone uses it.
//!
//! Concurrency: each key keeps a pool of logged-in sessions with the key's object handle;
//! a signing thread takes one (or opens one when the pool is empty) and puts it back. A failed
//! signature empties the pool (the token may have gone away, closing every session) and is
//! tried again on a fresh session, then once more after re-initializing the module
//! ([`Token::reset`]), so a token that comes back is used again without a restart; a token
//! that stays away fails the signature, which the server answers with 503.

use std::sync::{Arc, Mutex};

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use rcgen::{PublicKeyData, SignatureAlgorithm, SigningKey};
use ring::digest;
use ring::rand::SecureRandom;
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1};

use super::error::CaError;
use super::token::{p11, percent_decode, percent_encode, Token};

/// DER of the P-256 curve OID (1.2.840.10045.3.1.7): the `CKA_EC_PARAMS` of devid's keys.
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// Idle sessions kept per key; more signing threads than this open and close their own.
const POOL_MAX: usize = 16;

/// A P-256 private key in a token, with its public key (the uncompressed point).
pub(super) struct TokenKey {
    token: Arc<Token>,
    id: Vec<u8>,
    label: String,
    public_raw: Vec<u8>,
    pool: Mutex<Vec<Pooled>>,
}

/// An idle session (opened by [`Token::pool_session`]) with the key's handle in it.
struct Pooled {
    session: Session,
    handle: ObjectHandle,
    /// The [`Token::generation`] it was opened in.
    generation: u64,
}

impl TokenKey {
    /// Makes a new key pair in the token, labelled `label`, with a random `CKA_ID`.
    pub fn generate(
        token: &Arc<Token>,
        label: &str,
        rng: &dyn SecureRandom,
    ) -> Result<TokenKey, CaError> {
        let mut id = vec![0u8; 16];
        rng.fill(&mut id).map_err(|_| CaError::Rng)?;
        let common = [
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.clone()),
        ];
        let mut public = common.to_vec();
        public.extend([
            Attribute::Verify(true),
            Attribute::Encrypt(false),
            Attribute::Wrap(false),
            Attribute::EcParams(P256_PARAMS.to_vec()),
        ]);
        let mut private = common.to_vec();
        private.extend([
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
        ]);
        let session = token.session(true)?;
        let (public, _) = session
            .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
            .map_err(p11("generate a P-256 key pair in the token"))?;
        let public_raw = ec_point(&session, public)?;
        Ok(TokenKey {
            token: token.clone(),
            id,
            label: label.to_string(),
            public_raw,
            pool: Mutex::default(),
        })
    }

    /// Finds the key a [`TokenKey::reference`] names; `public` is its public key (the
    /// issuing certificate's), which every signature is checked against.
    pub fn open(token: &Arc<Token>, reference: &str, public: Vec<u8>) -> Result<TokenKey, CaError> {
        let id = reference_id(reference)?;
        TokenKey::find_by(token, Attribute::Id(id), reference, public)
    }

    /// Finds an existing private key by its label, or by `id:<hex>` (its `CKA_ID`).
    pub fn find(token: &Arc<Token>, key: &str, public: Vec<u8>) -> Result<TokenKey, CaError> {
        let attr =
            match key.strip_prefix("id:") {
                Some(h) => Attribute::Id(hex::decode(h).map_err(|_| {
                    CaError::Token(format!("{key:?}: the id after `id:` must be hex"))
                })?),
                None => Attribute::Label(key.as_bytes().to_vec()),
            };
        TokenKey::find_by(token, attr, key, public)
    }

    /// The one EC private key with `attr`, refused when the token would let it out
    /// (`CKA_SENSITIVE` false or `CKA_EXTRACTABLE` true) or when it has no `CKA_ID` to name it
    /// by.
    fn find_by(
        token: &Arc<Token>,
        attr: Attribute,
        what: &str,
        public: Vec<u8>,
    ) -> Result<TokenKey, CaError> {
        let session = token.session(false)?;
        let private = find_private(&session, attr, what)?;
        let attrs = session
            .get_attributes(
                private,
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::Label,
                    AttributeType::Id,
                ],
            )
            .map_err(p11("read the key's attributes"))?;
        let (mut label, mut id) = (String::new(), Vec::new());
        for a in attrs {
            match a {
                Attribute::Sensitive(false) | Attribute::Extractable(true) => {
                    return Err(CaError::Token(format!(
                        "the key {what} can leave the token (CKA_SENSITIVE false or \
                         CKA_EXTRACTABLE true); devid uses only keys that cannot"
                    )))
                }
                Attribute::Label(l) => label = String::from_utf8_lossy(&l).into_owned(),
                Attribute::Id(i) => id = i,
                _ => {}
            }
        }
        if id.is_empty() {
            return Err(CaError::Token(format!(
                "the key {what} has no CKA_ID to name it by; give it one (pkcs11-tool --id)"
            )));
        }
        Ok(TokenKey {
            token: token.clone(),
            id,
            label,
            public_raw: public,
            pool: Mutex::default(),
        })
    }

    /// Signs a test message: the key signs, and under the public key devid expects.
    pub fn check_signs(&self) -> Result<(), CaError> {
        let msg = b"devid: the token key signs under the certificate's public key";
        let digest = digest::digest(&digest::SHA256, msg);
        self.sign_once(msg, digest.as_ref()).map(|_| ())
    }

    /// The key as an RFC 7512 URI: what the data directory keeps instead of the key.
    pub fn reference(&self) -> String {
        format!(
            "pkcs11:token={};object={};id={};type=private\n",
            percent_encode(self.token.label.as_bytes(), false),
            percent_encode(self.label.as_bytes(), false),
            percent_encode(&self.id, true)
        )
    }

    /// The uncompressed P-256 public key.
    pub fn public_key_raw(&self) -> &[u8] {
        &self.public_raw
    }

    /// A session of the current generation from the pool, or a new one. Call under
    /// [`Token::calls`]. Sessions of older generations are dropped without closing them.
    fn take(&self, generation: u64) -> Result<Pooled, CaError> {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(pooled) = pool.pop() {
            if pooled.generation == generation {
                return Ok(pooled);
            }
        }
        drop(pool);
        let session = self.token.pool_session()?;
        let id = Attribute::Id(self.id.clone());
        match find_private(&session, id, &self.label) {
            Ok(handle) => Ok(Pooled {
                session,
                handle,
                generation,
            }),
            Err(e) => {
                let _ = session.close();
                Err(e)
            }
        }
    }

    /// Returns a session to the pool, or closes it when the pool is full. Call under
    /// [`Token::calls`], in the session's generation.
    fn put_back(&self, pooled: Pooled) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOL_MAX {
            pool.push(pooled);
        } else {
            drop(pool);
            let _ = pooled.session.close();
        }
    }

    /// Closes every pooled session of the current generation (after a failure: they may all
    /// be dead).
    fn drain(&self) {
        let _calls = self.token.calls();
        let generation = self.token.generation();
        let idle = std::mem::take(&mut *self.pool.lock().unwrap_or_else(|p| p.into_inner()));
        for pooled in idle {
            if pooled.generation == generation {
                let _ = pooled.session.close();
            }
        }
    }

    /// One signature over the SHA-256 digest, as DER, checked against the public key.
    fn sign_once(&self, msg: &[u8], digest: &[u8]) -> Result<Vec<u8>, CaError> {
        let raw = {
            let _calls = self.token.calls();
            let pooled = self.take(self.token.generation())?;
            match pooled
                .session
                .sign(&Mechanism::Ecdsa, pooled.handle, digest)
            {
                Ok(raw) => {
                    self.put_back(pooled);
                    raw
                }
                Err(e) => {
                    let _ = pooled.session.close();
                    return Err(p11("sign")(e));
                }
            }
        };
        let der = ecdsa_raw_to_der(&raw).ok_or_else(|| {
            CaError::Token(format!(
                "the token returned a {}-byte signature (a P-256 signature is 64 bytes)",
                raw.len()
            ))
        })?;
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &self.public_raw)
            .verify(msg, &der)
            .map_err(|_| {
                CaError::Token(format!(
                    "the signature of the key {:?} does not verify under the public key devid \
                     expects (the certificate's): the token holds a different key",
                    self.label
                ))
            })?;
        Ok(der)
    }
}

impl Drop for TokenKey {
    /// Closes the idle sessions (dropping them would not: they are opened "no close on drop").
    fn drop(&mut self) {
        self.drain();
    }
}

impl PublicKeyData for TokenKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public_raw
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl SigningKey for TokenKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let digest = digest::digest(&digest::SHA256, msg);
        let first = match self.sign_once(msg, digest.as_ref()) {
            Ok(sig) => return Ok(sig),
            Err(e) => e,
        };
        // The token may have closed every session: start over with a fresh one, then with
        // the module initialized again.
        self.drain();
        let last = match self.sign_once(msg, digest.as_ref()) {
            Ok(sig) => return Ok(sig),
            Err(e) => e,
        };
        let last = match self.token.reset() {
            Ok(true) => match self.sign_once(msg, digest.as_ref()) {
                Ok(sig) => {
                    tracing::info!(token = %self.token.label, "the PKCS#11 token answers again");
                    return Ok(sig);
                }
                Err(e) => e,
            },
            Ok(false) => last,
            Err(e) => e,
        };
        tracing::error!(
            token = %self.token.label,
            key = %self.label,
            error = %last,
            first_error = %first,
            "the PKCS#11 token cannot sign; issuance fails until it answers again"
        );
        Err(rcgen::Error::RemoteKeyError)
    }
}

/// The one EC private key with `attr`; `what` names it in errors.
fn find_private(session: &Session, attr: Attribute, what: &str) -> Result<ObjectHandle, CaError> {
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::EC),
            attr,
        ])
        .map_err(p11("find the key"))?;
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(CaError::Token(format!(
            "the token holds no EC private key {what:?}"
        ))),
        _ => Err(CaError::Token(format!(
            "the token holds {} EC private keys {what:?}",
            found.len()
        ))),
    }
}

/// The uncompressed point of a P-256 public key object (`CKA_EC_POINT` is a DER OCTET
/// STRING around it; some modules give the bare point).
fn ec_point(session: &Session, public: ObjectHandle) -> Result<Vec<u8>, CaError> {
    let attrs = session
        .get_attributes(public, &[AttributeType::EcPoint])
        .map_err(p11("read the public key"))?;
    let point = attrs.into_iter().find_map(|a| match a {
        Attribute::EcPoint(p) => Some(p),
        _ => None,
    });
    match point.as_deref() {
        Some([0x04, 0x41, rest @ ..]) if rest.len() == 65 && rest[0] == 0x04 => Ok(rest.to_vec()),
        Some(p) if p.len() == 65 && p[0] == 0x04 => Ok(p.to_vec()),
        _ => Err(CaError::Token(
            "the token's public key is not an uncompressed P-256 point".into(),
        )),
    }
}

/// The `CKA_ID` of a key reference (`pkcs11:...;id=%..;...`).
fn reference_id(reference: &str) -> Result<Vec<u8>, CaError> {
    let path = reference
        .trim()
        .strip_prefix("pkcs11:")
        .ok_or_else(|| CaError::Token(format!("{reference:?} is not a pkcs11: URI")))?;
    let path = path.split('?').next().unwrap_or(path);
    path.split(';')
        .find_map(|a| a.strip_prefix("id="))
        .map(percent_decode)
        .transpose()?
        .filter(|id| !id.is_empty())
        .ok_or_else(|| CaError::Token(format!("the key reference {reference:?} has no id")))
}

/// PKCS#11's ECDSA signature (`r || s`, 32 bytes each for P-256) as the DER
/// `ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }`.
fn ecdsa_raw_to_der(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.len() != 64 {
        return None;
    }
    let (r, s) = raw.split_at(32);
    let int = |v: &[u8]| {
        let start = v.iter().position(|&b| b != 0).unwrap_or(v.len() - 1);
        let v = &v[start..];
        let mut out = vec![0x02];
        if v[0] & 0x80 != 0 {
            out.push(u8::try_from(v.len() + 1).unwrap_or(0));
            out.push(0);
        } else {
            out.push(u8::try_from(v.len()).unwrap_or(0));
        }
        out.extend_from_slice(v);
        out
    };
    let (r, s) = (int(r), int(s));
    let mut der = vec![0x30, u8::try_from(r.len() + s.len()).ok()?];
    der.extend(r);
    der.extend(s);
    Some(der)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_signatures_become_der_integers() {
        let mut raw = [0u8; 64];
        raw[31] = 0x05; // r = 5
        raw[32] = 0x80; // s has its top bit set: a leading zero keeps it positive
        let der = ecdsa_raw_to_der(&raw).expect("der");
        assert_eq!(&der[..5], &[0x30, 3 + 35, 0x02, 0x01, 0x05]);
        assert_eq!(&der[5..8], &[0x02, 33, 0x00]);
        assert_eq!(der[8], 0x80);
        assert_eq!(der.len(), 2 + 3 + 35);
        assert!(ecdsa_raw_to_der(&raw[..63]).is_none());
    }

    #[test]
    fn references_name_the_id() {
        let id = reference_id("pkcs11:token=devid;object=devid-issuing;id=%01%ff;type=private\n")
            .expect("id");
        assert_eq!(id, vec![0x01, 0xff]);
        assert!(reference_id("pkcs11:token=devid").is_err());
        assert!(reference_id("file:x").is_err());
    }
}
