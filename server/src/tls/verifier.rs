//! Client certificates on the TLS listener: requested, never required, verified against
//! devid's root with the issuing CA(s) the [`Ca`] holds as intermediates (a client may send its
//! leaf alone).
//!
//! One exception to "verified": a certificate whose only fault is that it has expired passes
//! the TLS layer, so that `simplereenroll` can apply the model's renewal grace. Such a
//! certificate is still checked in full (chain, signatures, usage) at the instant it expired.
//! Every route but `simplereenroll` treats an expired certificate as no certificate (see
//! `routes::est`), and bearer-token routes never look at client certificates.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore};
use rustls::{Error, SignatureScheme};

use crate::ca::Ca;

/// Verifies client certificates against the CA (see the module documentation).
#[derive(Debug)]
pub struct DeviceCertVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    ca: Arc<Ca>,
}

impl DeviceCertVerifier {
    pub fn new(ca: Arc<Ca>, provider: Arc<CryptoProvider>) -> Result<Self, String> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(ca.root_der().to_vec()))
            .map_err(|e| format!("devid's root is not a usable trust anchor: {e}"))?;
        let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .allow_unauthenticated()
            .build()
            .map_err(|e| format!("cannot build the client certificate verifier: {e}"))?;
        Ok(DeviceCertVerifier { inner, ca })
    }

    /// The intermediates a client sent, then every issuing CA this process has loaded (the
    /// active one and those retired by a rotation; a revoked one is never loaded), read from
    /// the CA at each handshake so that a rotation counts at once.
    fn intermediates<'a>(&self, sent: &[CertificateDer<'a>]) -> Vec<CertificateDer<'a>> {
        // The active chain above the root too: an imported CA may have intermediates between
        // its root and its issuing CA.
        let chain = self.ca.chain_der();
        let above_root = &chain[..chain.len().saturating_sub(1)];
        let issuers = self.ca.issuers();
        sent.iter()
            .cloned()
            .chain(above_root.iter().map(|d| CertificateDer::from(d.clone())))
            .chain(
                issuers
                    .iter()
                    .map(|i| CertificateDer::from(i.der().to_vec())),
            )
            .collect()
    }
}

/// The leaf's notAfter, as a [`UnixTime`].
fn not_after(end_entity: &CertificateDer<'_>) -> Option<UnixTime> {
    let (_, cert) = x509_parser::parse_x509_certificate(end_entity.as_ref()).ok()?;
    let secs = u64::try_from(cert.validity().not_after.timestamp()).ok()?;
    Some(UnixTime::since_unix_epoch(Duration::from_secs(secs)))
}

impl ClientCertVerifier for DeviceCertVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let intermediates = self.intermediates(intermediates);
        match self
            .inner
            .verify_client_cert(end_entity, &intermediates, now)
        {
            Err(Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. },
            )) => {
                // Expired: the rest must hold at the instant it expired.
                let at = not_after(end_entity)
                    .ok_or(Error::InvalidCertificate(CertificateError::BadEncoding))?;
                self.inner
                    .verify_client_cert(end_entity, &intermediates, at)
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::CaKeys;
    use devid_core::profile::{DeviceIdentity, Profile, ProfileSettings, Validity};
    use time::OffsetDateTime;

    fn new_ca(dir: &std::path::Path) -> Arc<Ca> {
        let keys = CaKeys::Files { passphrase: None };
        let (ca, _) = Ca::init_or_load_keys(dir, &keys, None).expect("CA");
        Arc::new(ca)
    }

    /// A device certificate of `ca` issued at `issued`, valid for `secs`.
    fn device_cert(ca: &Ca, issued: OffsetDateTime, secs: u64) -> CertificateDer<'static> {
        let rng = ring::rand::SystemRandom::new();
        let id = devid_core::clientid::generate("T", &[7; 10]).expect("id");
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .expect("csr");
        let csr = devid_core::csr::parse_csr_der(csr.der()).expect("checked");
        let settings = ProfileSettings {
            organization: None,
            validity: Validity::Years(1),
            crl_url: None,
        };
        let identity = DeviceIdentity {
            client_id: &id,
            hardware_serial: "SN-1",
        };
        let profile = Profile::LDevId {
            lifetime: Duration::from_secs(secs),
        };
        let issued = ca
            .issue_device_profile(
                profile,
                csr.public_key(),
                &identity,
                &settings,
                issued,
                &rng,
            )
            .expect("issued");
        CertificateDer::from(issued.der)
    }

    fn verifier(ca: Arc<Ca>) -> DeviceCertVerifier {
        DeviceCertVerifier::new(ca, Arc::new(rustls::crypto::ring::default_provider()))
            .expect("verifier")
    }

    fn unix(t: OffsetDateTime) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(t.unix_timestamp() as u64))
    }

    #[test]
    fn valid_and_expired_device_certificates_pass_the_handshake_others_do_not() {
        let dir = tempfile::tempdir().expect("tmp");
        let ca = new_ca(dir.path());
        let v = verifier(ca.clone());
        let now = OffsetDateTime::now_utc();
        // Valid, sent alone: the issuing CA comes from the Ca.
        let fresh = device_cert(&ca, now, 3600);
        assert!(v.verify_client_cert(&fresh, &[], unix(now)).is_ok());
        // Expired (seconds ago, after the CA was made): let through, the route decides what it
        // is worth.
        let old = device_cert(&ca, now - time::Duration::seconds(10), 1);
        let r = v.verify_client_cert(&old, &[], unix(now));
        assert!(r.is_ok(), "{r:?}");
        // Not yet valid: refused.
        let future = device_cert(&ca, now + time::Duration::days(2), 3600);
        assert!(v.verify_client_cert(&future, &[], unix(now)).is_err());
        // Another CA's certificate, valid or expired: refused.
        let other_dir = tempfile::tempdir().expect("tmp");
        let other = new_ca(other_dir.path());
        for cert in [
            device_cert(&other, now, 3600),
            device_cert(&other, now - time::Duration::seconds(10), 1),
        ] {
            assert!(v.verify_client_cert(&cert, &[], unix(now)).is_err());
        }
        // A tampered certificate (one byte of its signature): refused, expired or not.
        for cert in [fresh, old] {
            let mut der = cert.as_ref().to_vec();
            let last = der.len() - 3;
            der[last] ^= 1;
            let der = CertificateDer::from(der);
            assert!(v.verify_client_cert(&der, &[], unix(now)).is_err());
        }
        assert!(!v.client_auth_mandatory() && v.offer_client_auth());
    }
}
