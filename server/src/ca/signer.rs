//! The one place that signs with the issuing CA's key. Issuance and CRL generation build their
//! parameters elsewhere and hand them to [`CaSigner`]; nothing else in the server reaches the
//! key. Today the key is a [`KeyPair`] in memory, decoded from `issuing.key`; a key held
//! outside the process (a hardware token) would take its place here, behind rcgen's
//! `SigningKey` trait, without changing the callers.

use rcgen::{CertificateParams, CertificateRevocationListParams, Issuer, KeyPair, PublicKeyData};

use super::error::{signing, CaError};

/// The issuing CA as a signer: its key with the issuer name and key identifier rcgen writes
/// into what it signs, parsed once from the issuing certificate.
pub(super) struct CaSigner {
    issuer: Issuer<'static, KeyPair>,
}

impl CaSigner {
    /// Pairs the issuing certificate (DER) with its private key. The caller has checked that
    /// they match.
    pub(super) fn new(issuing_der: &[u8], key: KeyPair) -> Result<CaSigner, CaError> {
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
