//! Issuance: device and broker certificates. Each builds its parameters from core's profiles
//! with a fresh random serial and has [`CaSigner`](super::signer::CaSigner) sign them.

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
use super::Ca;

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
        let serial = profile::random_serial(rng)?;
        let params = device_params(profile, id, settings, &serial, now)?;
        self.sign(&params, key)
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
        let serial = profile::random_serial(rng)?;
        let params = broker_params(&[dns_name], settings, &serial, now)?;
        self.sign(&params, csr.public_key())
    }

    fn sign(
        &self,
        params: &CertificateParams,
        key: &impl PublicKeyData,
    ) -> Result<IssuedCert, CaError> {
        let der = self.signer.certificate(params, key)?;
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
            der,
        })
    }
}
