//! The one place that signs with the issuing CA's key. Issuance and CRL generation build their
//! parameters elsewhere and hand them to [`CaSigner`]; nothing else in the server reaches the
//! key. The key is a [`CaKey`]: a [`KeyPair`] in memory, decoded from `issuing.key`, or a key
//! in a PKCS#11 token ([`TokenKey`]), both behind rcgen's `SigningKey` trait.

use rcgen::{
    CertificateParams, CertificateRevocationListParams, Issuer, KeyPair, PublicKeyData,
    SignatureAlgorithm, SigningKey,
};

use super::error::{signing, CaError};
use super::token_key::TokenKey;

/// A CA private key: in memory, or in a token.
pub(super) enum CaKey {
    File(KeyPair),
    Token(TokenKey),
}

impl CaKey {
    /// The uncompressed P-256 public key.
    pub fn public_key_raw(&self) -> &[u8] {
        match self {
            CaKey::File(k) => k.public_key_raw(),
            CaKey::Token(k) => k.public_key_raw(),
        }
    }
}

impl PublicKeyData for CaKey {
    fn der_bytes(&self) -> &[u8] {
        self.public_key_raw()
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        match self {
            CaKey::File(k) => k.algorithm(),
            CaKey::Token(k) => k.algorithm(),
        }
    }
}

impl SigningKey for CaKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        match self {
            CaKey::File(k) => k.sign(msg),
            CaKey::Token(k) => k.sign(msg),
        }
    }
}

/// The issuing CA as a signer: its key with the issuer name and key identifier rcgen writes
/// into what it signs, parsed once from the issuing certificate.
pub(super) struct CaSigner {
    issuer: Issuer<'static, CaKey>,
}

impl CaSigner {
    /// Pairs the issuing certificate (DER) with its private key. The caller has checked that
    /// they match.
    pub(super) fn new(issuing_der: &[u8], key: CaKey) -> Result<CaSigner, CaError> {
        let issuer = Issuer::from_ca_cert_der(&issuing_der.into(), key).map_err(|e| {
            CaError::InvalidCa(format!("cannot use the issuing certificate's name: {e}"))
        })?;
        Ok(CaSigner { issuer })
    }

    /// The issuing key's public key: the uncompressed P-256 point.
    pub(super) fn public_key_raw(&self) -> &[u8] {
        self.issuer.key().public_key_raw()
    }

    /// Signs a certificate for `subject_key`; returns its DER.
    pub(super) fn certificate(
        &self,
        params: &CertificateParams,
        subject_key: &impl PublicKeyData,
    ) -> Result<Vec<u8>, CaError> {
        let cert = params
            .signed_by(subject_key, &self.issuer)
            .map_err(signing)?;
        Ok(cert.der().to_vec())
    }

    /// Signs a CRL; returns its DER.
    pub(super) fn crl(&self, params: &CertificateRevocationListParams) -> Result<Vec<u8>, CaError> {
        let crl = params.signed_by(&self.issuer).map_err(signing)?;
        Ok(crl.der().to_vec())
    }
}
