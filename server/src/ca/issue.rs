//! Issuance: device and broker certificates. Each builds its parameters from core's profiles
//! with a fresh serial (`profile::new_serial`: time of issue, then random bits) and has [`CaSigner`](super::signer::CaSigner) sign them.

use devid_core::csr::{CheckedCsr, P256PublicKey};
use devid_core::profile::{
    self, broker_params, device_params, DeviceIdentity, Profile, ProfileSettings,
};
use rcgen::{CertificateParams, PublicKeyData};
use ring::digest;
use ring::rand::SecureRandom;
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_ASN1_SIGNING};
use time::OffsetDateTime;

use super::error::CaError;
use super::layout::{pem_block, pem_cert};
use super::{Ca, IssuingCa};

/// A certificate devid issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCert {
    pub der: Vec<u8>,
    pub pem: String,
    /// Lowercase hex, no colons, no leading `00` (as `openssl x509 -serial` prints it, in
    /// lowercase). Always 32 characters for devid's serials.
    pub serial_hex: String,
    /// SHA-256 of the DER, lowercase hex, no colons.
    pub fingerprint_sha256: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// Whether notAfter was cut to the issuing CA's notAfter (no certificate outlives its
    /// issuer), so the certificate is shorter-lived than its profile asked.
    pub not_after_capped: bool,
    /// The id of the issuing CA that signed it.
    pub issuer_id: String,
}

impl Ca {
    /// Issues a device birth certificate (IDevID) for a checked CSR. Whatever the CSR asked
    /// for besides its key is ignored.
    pub fn issue_device(
        &self,
        csr: &CheckedCsr,
        id: &DeviceIdentity<'_>,
        settings: &ProfileSettings,
        now: OffsetDateTime,
        rng: &dyn SecureRandom,
    ) -> Result<IssuedCert, CaError> {
        self.issue_device_profile(Profile::IDevId, csr.public_key(), id, settings, now, rng)
    }

    /// Issues a device certificate of any device profile (IDevID, LDevID) for a public key.
    pub fn issue_device_profile(
        &self,
        profile: Profile,
        key: &P256PublicKey,
        id: &DeviceIdentity<'_>,
        settings: &ProfileSettings,
        now: OffsetDateTime,
        rng: &dyn SecureRandom,
    ) -> Result<IssuedCert, CaError> {
        let serial = profile::new_serial(now.unix_timestamp(), rng)?;
        let params = device_params(profile, id, settings, &serial, now)?;
        self.active().sign(params, key)
    }

    /// For devices that cannot make keys: makes a P-256 key pair here and issues an IDevID for
    /// it. Returns the certificate and the PKCS#8 private key as PEM (`PRIVATE KEY`).
    pub fn issue_device_with_new_key(
        &self,
        id: &DeviceIdentity<'_>,
        settings: &ProfileSettings,
        now: OffsetDateTime,
        rng: &dyn SecureRandom,
    ) -> Result<(IssuedCert, String), CaError> {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, rng)
            .map_err(|_| CaError::Rng)?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), rng)
            .map_err(|e| CaError::Signing(format!("generated key rejected: {e}")))?;
        let key = P256PublicKey::from_uncompressed(pair.public_key().as_ref())
            .ok_or_else(|| CaError::Signing("generated key is not an uncompressed point".into()))?;
        let issued = self.issue_device_profile(Profile::IDevId, &key, id, settings, now, rng)?;
        Ok((issued, pem_block("PRIVATE KEY", pkcs8.as_ref())))
    }

    /// Issues an MQTT broker certificate (EKU serverAuth + clientAuth, SAN DNS = `dns_name`).
    pub fn issue_broker(
        &self,
        csr: &CheckedCsr,
        dns_name: &str,
        settings: &ProfileSettings,
        now: OffsetDateTime,
        rng: &dyn SecureRandom,
    ) -> Result<IssuedCert, CaError> {
        let serial = profile::new_serial(now.unix_timestamp(), rng)?;
        let params = broker_params(&[dns_name], settings, &serial, now)?;
        self.active().sign(params, csr.public_key())
    }
}

/// The CRL of the issuing CA `id` under the CRL base URL the profile names (e.g.
/// `http://host:8080/v1/crl` -> `http://host:8080/v1/crl/issuing/<id>`): each certificate's CRL
/// distribution point names its own issuer's CRL.
pub fn issuer_crl_url(base: &str, id: &str) -> String {
    format!("{}/issuing/{id}", base.trim_end_matches('/'))
}

impl IssuingCa {
    /// Signs `params` for `key`, notAfter capped at this CA's own ([`profile::cap_to_issuer`]).
    /// The CRL distribution point, when the profile set one, is made to name this CA's CRL.
    pub(super) fn sign(
        &self,
        mut params: CertificateParams,
        key: &impl PublicKeyData,
    ) -> Result<IssuedCert, CaError> {
        let (not_after, capped) = profile::cap_to_issuer(params.not_after, self.not_after);
        params.not_after = not_after;
        for dp in &mut params.crl_distribution_points {
            for uri in &mut dp.uris {
                *uri = issuer_crl_url(uri, &self.id);
            }
        }
        let der = self.signer.certificate(&params, key)?;
        let serial = params
            .serial_number
            .as_ref()
            .map(|s| s.to_bytes())
            .unwrap_or_default();
        let first = serial.iter().position(|b| *b != 0).unwrap_or(serial.len());
        Ok(IssuedCert {
            pem: pem_cert(&der),
            serial_hex: hex::encode(&serial[first..]),
            fingerprint_sha256: hex::encode(digest::digest(&digest::SHA256, &der)),
            not_before: params.not_before,
            not_after: params.not_after,
            not_after_capped: capped,
            issuer_id: self.id.clone(),
            der,
        })
    }
}
