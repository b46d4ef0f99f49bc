//! New device keys and PKCS#10 requests, with ring alone (the device links no certificate
//! builder). A request copies the subject and the subjectAltName of the certificate that
//! authenticates it byte for byte, which is what a re-enrollment must present (RFC 7030 4.2.2);
//! core's `protocol::renewal::renewal_csr` builds it, for EST and MQTT alike.

use ring::rand::SecureRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};

/// Why a request could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("the key is not a P-256 key: {0}")]
    Key(String),
    #[error("the certificate cannot be read: {0}")]
    Certificate(String),
    #[error("signing failed")]
    Sign,
}

/// A new P-256 key, PKCS#8 DER.
pub fn generate_key(rng: &dyn SecureRandom) -> Result<PrivatePkcs8KeyDer<'static>, CsrError> {
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, rng)
        .map_err(|e| CsrError::Key(e.to_string()))?;
    Ok(PrivatePkcs8KeyDer::from(doc.as_ref().to_vec()))
}

/// The uncompressed public point of a PKCS#8 P-256 key.
pub fn public_key(key: &PrivatePkcs8KeyDer<'_>) -> Result<Vec<u8>, CsrError> {
    let rng = ring::rand::SystemRandom::new();
    let pair = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        key.secret_pkcs8_der(),
        &rng,
    )
    .map_err(|e| CsrError::Key(e.to_string()))?;
    Ok(pair.public_key().as_ref().to_vec())
}

/// A PKCS#10 request (DER) for `key` with the subject and subjectAltName of `like`, as every
/// renewal path builds it (`devid_core::protocol::renewal::renewal_csr`).
pub fn build_csr(
    key: &PrivatePkcs8KeyDer<'_>,
    like: &CertificateDer<'_>,
    rng: &dyn SecureRandom,
) -> Result<Vec<u8>, CsrError> {
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, key.secret_pkcs8_der(), rng)
            .map_err(|e| CsrError::Key(e.to_string()))?;
    devid_core::protocol::renewal::renewal_csr(like.as_ref(), &pair, rng).map_err(|e| match e {
        devid_core::protocol::Error::BadCertificate(m) => CsrError::Certificate(m.to_string()),
        _ => CsrError::Sign,
    })
}

/// PEM text of one DER object.
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::PublicKeyData;
    use x509_parser::prelude::FromDer;

    fn idevid_like(with_san: bool) -> (rcgen::KeyPair, CertificateDer<'static>) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "ab12CD34ef56GH78ij");
        p.distinguished_name
            .push(rcgen::DnType::CustomDnType(vec![2, 5, 4, 5]), "SN-0042");
        if with_san {
            p.subject_alt_names = vec![rcgen::SanType::URI(
                "urn:devid:ab12CD34ef56GH78ij".try_into().unwrap(),
            )];
        }
        let cert = p.self_signed(&key).unwrap();
        (key, cert.der().clone())
    }

    #[test]
    fn the_request_carries_the_certificates_subject_and_san_and_verifies() {
        let rng = ring::rand::SystemRandom::new();
        for with_san in [true, false] {
            let (_, cert) = idevid_like(with_san);
            let key = generate_key(&rng).unwrap();
            let csr = build_csr(&key, &cert, &rng).unwrap();
            // rcgen (x509-parser underneath) checks the signature and reads the request.
            let params = rcgen::CertificateSigningRequestParams::from_der(&csr.clone().into())
                .expect("a valid, signed PKCS#10 request");
            let (_, c) = x509_parser::parse_x509_certificate(cert.as_ref()).unwrap();
            let (_, req) =
                x509_parser::certification_request::X509CertificationRequest::from_der(&csr)
                    .unwrap();
            assert_eq!(
                req.certification_request_info.subject.as_raw(),
                c.subject().as_raw()
            );
            assert_eq!(params.params.subject_alt_names.len(), usize::from(with_san));
            assert_eq!(
                params.public_key.der_bytes(),
                public_key(&key).unwrap().as_slice()
            );
        }
    }

    #[test]
    fn openssl_accepts_the_request() {
        let rng = ring::rand::SystemRandom::new();
        let (_, cert) = idevid_like(true);
        let key = generate_key(&rng).unwrap();
        let csr = build_csr(&key, &cert, &rng).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("req.pem");
        std::fs::write(&f, pem("CERTIFICATE REQUEST", &csr)).unwrap();
        let out = std::process::Command::new("openssl")
            .args(["req", "-verify", "-noout", "-text", "-in"])
            .arg(&f)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(
            err.contains("verify OK") || text.contains("verify OK"),
            "{err}"
        );
        assert!(text.contains("URI:urn:devid:ab12CD34ef56GH78ij"), "{text}");
        assert!(
            text.contains("serialNumber") && text.contains("SN-0042"),
            "{text}"
        );
    }

    #[test]
    fn refuses_a_key_that_is_not_p256() {
        let rng = ring::rand::SystemRandom::new();
        let (_, cert) = idevid_like(false);
        let bad = PrivatePkcs8KeyDer::from(vec![0x30, 0x00]);
        assert!(matches!(
            build_csr(&bad, &cert, &rng),
            Err(CsrError::Key(_))
        ));
        let key = generate_key(&rng).unwrap();
        let junk = CertificateDer::from(vec![1, 2, 3]);
        assert!(matches!(
            build_csr(&key, &junk, &rng),
            Err(CsrError::Certificate(_))
        ));
    }
}
