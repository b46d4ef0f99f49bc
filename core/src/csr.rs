//! Certificate signing requests: parse, check the key type, verify the signature.
//!
//! devid accepts ECDSA P-256 keys only. Everything a CSR asks for besides its public key
//! (subject, requested extensions such as CA:TRUE or keyCertSign) is ignored: the certificate
//! is built from a [`crate::profile`] alone. A [`CheckedCsr`] can only be made by
//! [`parse_csr_pem`] or [`parse_csr_der`], so holding one proves that the signature verified.

use ring::digest;
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA384_ASN1};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{
    Oid, OID_EC_P256, OID_KEY_TYPE_DSA, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384,
    OID_NIST_EC_P521, OID_PKCS1_RSAENCRYPTION, OID_SIG_ECDSA_WITH_SHA256,
    OID_SIG_ECDSA_WITH_SHA384, OID_SIG_ED25519, OID_SIG_ED448,
};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

/// Largest CSR accepted, in DER bytes. A P-256 CSR is a few hundred bytes.
pub const MAX_CSR_DER_LEN: usize = 16 * 1024;

/// Why a CSR was refused. The `Display` text is safe to show to a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    /// The text is not a PEM `CERTIFICATE REQUEST` block.
    #[error("CSR is not PEM: {0}")]
    NotPem(String),
    /// The bytes are not a well-formed PKCS#10 request.
    #[error("CSR is malformed: {0}")]
    Malformed(String),
    /// The request's key is not ECDSA P-256; the payload names what it is.
    #[error("CSR key is {0}; devid accepts ECDSA P-256 only")]
    UnsupportedKey(String),
    /// The request's self-signature does not verify under its own public key.
    #[error("CSR signature does not verify")]
    BadSignature,
}

/// An uncompressed SEC1 P-256 public key (65 bytes, `0x04 || x || y`).
///
/// It implements [`rcgen::PublicKeyData`] so that rcgen can put it in a certificate.
#[derive(Clone, PartialEq, Eq)]
pub struct P256PublicKey {
    point: [u8; 65],
}

impl P256PublicKey {
    /// Takes an uncompressed SEC1 point. The point is only checked for length and form here;
    /// it is validated on the curve when a signature is verified with it.
    pub fn from_uncompressed(point: &[u8]) -> Option<Self> {
        let point: [u8; 65] = point.try_into().ok()?;
        (point[0] == 0x04).then_some(P256PublicKey { point })
    }

    /// The 65-byte uncompressed point.
    pub fn as_bytes(&self) -> &[u8; 65] {
        &self.point
    }
}

impl std::fmt::Debug for P256PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "P256PublicKey({})", hex::encode(self.point))
    }
}

impl rcgen::PublicKeyData for P256PublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

/// A CSR whose P-256 key was checked and whose signature verified.
#[derive(Clone, Debug)]
pub struct CheckedCsr {
    key: P256PublicKey,
    spki_der: Vec<u8>,
    csr_sha256: [u8; 32],
}

impl CheckedCsr {
    /// The SubjectPublicKeyInfo DER, exactly as it will appear in the issued certificate.
    pub fn public_key_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// SHA-256 of the CSR's DER encoding (for idempotent registration: same device, same CSR).
    pub fn csr_sha256(&self) -> [u8; 32] {
        self.csr_sha256
    }

    /// The public key, ready for `rcgen::CertificateParams::signed_by`.
    pub fn public_key(&self) -> &P256PublicKey {
        &self.key
    }

    /// The key's identity: see [`spki_sha256`].
    pub fn spki_sha256(&self) -> [u8; 32] {
        spki_sha256(&self.spki_der)
    }
}

/// A public key's identity as the registry keeps it (one key pair belongs to one device; a key
/// revoked for keyCompromise is never certified again): SHA-256 of its SubjectPublicKeyInfo DER.
pub fn spki_sha256(spki_der: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, spki_der).as_ref());
    out
}

/// [`spki_sha256`] of the key a DER certificate certifies; None if the DER is not a certificate.
pub fn certificate_spki_sha256(cert_der: &[u8]) -> Option<[u8; 32]> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    Some(spki_sha256(cert.tbs_certificate.subject_pki.raw))
}

/// Parses a PEM CSR (`CERTIFICATE REQUEST` or the older `NEW CERTIFICATE REQUEST` label) and
/// checks it like [`parse_csr_der`].
pub fn parse_csr_pem(pem_text: &str) -> Result<CheckedCsr, CsrError> {
    if pem_text.len() > MAX_CSR_DER_LEN * 2 {
        return Err(CsrError::NotPem(format!(
            "text is longer than {} bytes",
            MAX_CSR_DER_LEN * 2
        )));
    }
    let block = pem::parse(pem_text).map_err(|e| CsrError::NotPem(pem_error_text(&e)))?;
    match block.tag() {
        "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST" => parse_csr_der(block.contents()),
        other => Err(CsrError::NotPem(format!(
            "expected a CERTIFICATE REQUEST block, found {other}"
        ))),
    }
}

fn pem_error_text(e: &pem::PemError) -> String {
    match e {
        pem::PemError::MalformedFraming | pem::PemError::MissingBeginTag => {
            "no -----BEGIN CERTIFICATE REQUEST----- block found".to_string()
        }
        pem::PemError::MissingEndTag => "the PEM block has no END line".to_string(),
        pem::PemError::MissingData => "the PEM block is empty".to_string(),
        pem::PemError::InvalidData(_) => "the PEM block's base64 is invalid".to_string(),
        pem::PemError::MismatchedTags(_, _) => "the PEM BEGIN and END labels differ".to_string(),
        other => other.to_string(),
    }
}

/// Parses a DER PKCS#10 CSR, requires an ECDSA P-256 key and verifies the signature
/// (ecdsa-with-SHA256, or ecdsa-with-SHA384 which some P-256 signers use).
pub fn parse_csr_der(der: &[u8]) -> Result<CheckedCsr, CsrError> {
    if der.len() > MAX_CSR_DER_LEN {
        return Err(CsrError::Malformed(format!(
            "CSR is longer than {MAX_CSR_DER_LEN} bytes"
        )));
    }
    let (rest, csr) = X509CertificationRequest::from_der(der)
        .map_err(|_| CsrError::Malformed("not a DER PKCS#10 certification request".into()))?;
    if !rest.is_empty() {
        return Err(CsrError::Malformed(format!(
            "{} trailing bytes after the request",
            rest.len()
        )));
    }
    let info = &csr.certification_request_info;
    if info.version.0 != 0 {
        return Err(CsrError::Malformed(format!(
            "unsupported request version {}",
            info.version.0
        )));
    }
    let spki = &info.subject_pki;
    check_p256_key(spki)?;
    let point = spki.subject_public_key.data.as_ref();
    let key = P256PublicKey::from_uncompressed(point).ok_or_else(|| {
        CsrError::Malformed("P-256 public key is not an uncompressed 65-byte point".into())
    })?;

    let sig_alg = &csr.signature_algorithm.algorithm;
    let verify_alg = if *sig_alg == OID_SIG_ECDSA_WITH_SHA256 {
        &ECDSA_P256_SHA256_ASN1
    } else if *sig_alg == OID_SIG_ECDSA_WITH_SHA384 {
        &ECDSA_P256_SHA384_ASN1
    } else {
        return Err(CsrError::Malformed(format!(
            "signature algorithm {} does not fit a P-256 key (expected ecdsa-with-SHA256)",
            oid_name(sig_alg)
        )));
    };
    if csr.signature_value.unused_bits != 0 {
        return Err(CsrError::BadSignature);
    }
    UnparsedPublicKey::new(verify_alg, point)
        .verify(info.raw, csr.signature_value.data.as_ref())
        .map_err(|_| CsrError::BadSignature)?;

    let spki_der = rcgen::PublicKeyData::subject_public_key_info(&key);
    let mut csr_sha256 = [0u8; 32];
    csr_sha256.copy_from_slice(digest::digest(&digest::SHA256, der).as_ref());
    Ok(CheckedCsr {
        key,
        spki_der,
        csr_sha256,
    })
}

/// Refuses every key but ECDSA P-256, naming what was found.
fn check_p256_key(spki: &SubjectPublicKeyInfo<'_>) -> Result<(), CsrError> {
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        return match curve {
            Some(c) if c == OID_EC_P256 => Ok(()),
            Some(c) if c == OID_NIST_EC_P384 => Err(CsrError::UnsupportedKey("ECDSA P-384".into())),
            Some(c) if c == OID_NIST_EC_P521 => Err(CsrError::UnsupportedKey("ECDSA P-521".into())),
            Some(c) if c.to_id_string() == "1.3.132.0.10" => {
                Err(CsrError::UnsupportedKey("ECDSA secp256k1".into()))
            }
            Some(c) => Err(CsrError::UnsupportedKey(format!(
                "ECDSA on curve {}",
                c.to_id_string()
            ))),
            None => Err(CsrError::UnsupportedKey(
                "ECDSA with explicit or missing curve parameters".into(),
            )),
        };
    }
    if *alg == OID_PKCS1_RSAENCRYPTION {
        return Err(CsrError::UnsupportedKey(match rsa_modulus_bits(spki) {
            Some(bits) => format!("RSA {bits}"),
            None => "RSA".into(),
        }));
    }
    let name = if *alg == OID_SIG_ED25519 {
        "Ed25519".to_string()
    } else if *alg == OID_SIG_ED448 {
        "Ed448".to_string()
    } else if *alg == OID_KEY_TYPE_DSA {
        "DSA".to_string()
    } else {
        format!("an unknown key type ({})", alg.to_id_string())
    };
    Err(CsrError::UnsupportedKey(name))
}

/// The RSA modulus size in bits (x509-parser's own `key_size` miscounts).
fn rsa_modulus_bits(spki: &SubjectPublicKeyInfo<'_>) -> Option<usize> {
    match spki.parsed().ok()? {
        x509_parser::public_key::PublicKey::RSA(rsa) => {
            let m = rsa.modulus;
            let first = m.iter().position(|&b| b != 0)?;
            let m = &m[first..];
            Some((m.len() - 1) * 8 + (8 - m[0].leading_zeros() as usize))
        }
        _ => None,
    }
}

fn oid_name(oid: &Oid<'_>) -> String {
    match oid.to_id_string().as_str() {
        "1.2.840.113549.1.1.5" => "sha1WithRSAEncryption".into(),
        "1.2.840.113549.1.1.11" => "sha256WithRSAEncryption".into(),
        "1.2.840.10045.4.1" => "ecdsa-with-SHA1".into(),
        "1.2.840.10045.4.3.4" => "ecdsa-with-SHA512".into(),
        "1.3.101.112" => "Ed25519".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    fn csr_pem(alg: &'static rcgen::SignatureAlgorithm) -> String {
        let key = KeyPair::generate_for(alg).expect("keygen");
        let params = CertificateParams::new(vec!["x.example".to_string()]).expect("params");
        params
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem")
    }

    #[test]
    fn accepts_p256_csr() {
        let pem = csr_pem(&rcgen::PKCS_ECDSA_P256_SHA256);
        let csr = parse_csr_pem(&pem).expect("valid CSR");
        assert_eq!(csr.public_key().as_bytes()[0], 0x04);
        // SPKI: SEQUENCE { SEQUENCE { ecPublicKey, prime256v1 }, BIT STRING (66 bytes) }
        assert_eq!(csr.public_key_der().len(), 91);
        let der = pem::parse(&pem).expect("pem").into_contents();
        let again = parse_csr_der(&der).expect("der");
        assert_eq!(again.csr_sha256(), csr.csr_sha256());
        assert_eq!(
            csr.csr_sha256().as_slice(),
            digest::digest(&digest::SHA256, &der).as_ref()
        );
    }

    #[test]
    fn refuses_p384_and_ed25519_naming_them() {
        let err =
            parse_csr_pem(&csr_pem(&rcgen::PKCS_ECDSA_P384_SHA384)).expect_err("must be refused");
        assert_eq!(err, CsrError::UnsupportedKey("ECDSA P-384".into()));
        assert_eq!(
            err.to_string(),
            "CSR key is ECDSA P-384; devid accepts ECDSA P-256 only"
        );
        let err = parse_csr_pem(&csr_pem(&rcgen::PKCS_ED25519)).expect_err("must be refused");
        assert_eq!(err, CsrError::UnsupportedKey("Ed25519".into()));
    }

    #[test]
    fn refuses_tampered_signature() {
        let pem = csr_pem(&rcgen::PKCS_ECDSA_P256_SHA256);
        let mut der = pem::parse(&pem).expect("pem").into_contents();
        // The signature is the DER's tail; flip a bit inside s.
        let n = der.len();
        der[n - 3] ^= 0x01;
        assert_eq!(
            parse_csr_der(&der).expect_err("must be refused"),
            CsrError::BadSignature
        );
    }

    #[test]
    fn refuses_tampered_subject() {
        let pem = csr_pem(&rcgen::PKCS_ECDSA_P256_SHA256);
        let mut der = pem::parse(&pem).expect("pem").into_contents();
        let pos = der
            .windows(9)
            .position(|w| w == b"x.example")
            .expect("SAN in request");
        der[pos] = b'y';
        assert_eq!(
            parse_csr_der(&der).expect_err("must be refused"),
            CsrError::BadSignature
        );
    }

    #[test]
    fn refuses_garbage_and_wrong_pem_labels() {
        assert!(matches!(
            parse_csr_pem("hello").expect_err("must be refused"),
            CsrError::NotPem(_)
        ));
        let cert_block = pem::encode(&pem::Pem::new("CERTIFICATE", vec![1, 2, 3]));
        let err = parse_csr_pem(&cert_block).expect_err("must be refused");
        assert_eq!(
            err,
            CsrError::NotPem("expected a CERTIFICATE REQUEST block, found CERTIFICATE".into())
        );
        let junk = pem::encode(&pem::Pem::new(
            "CERTIFICATE REQUEST",
            vec![0x30, 0x03, 1, 2, 3],
        ));
        assert!(matches!(
            parse_csr_pem(&junk).expect_err("must be refused"),
            CsrError::Malformed(_)
        ));
        assert!(matches!(
            parse_csr_der(&[]).expect_err("must be refused"),
            CsrError::Malformed(_)
        ));
    }

    #[test]
    fn refuses_trailing_bytes() {
        let pem = csr_pem(&rcgen::PKCS_ECDSA_P256_SHA256);
        let mut der = pem::parse(&pem).expect("pem").into_contents();
        der.push(0);
        assert_eq!(
            parse_csr_der(&der).expect_err("must be refused"),
            CsrError::Malformed("1 trailing bytes after the request".into())
        );
    }
}
