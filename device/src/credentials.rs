//! The device's files: certificate chain (PEM, leaf first), private key (PKCS#8 PEM, or SEC1
//! "EC PRIVATE KEY" for P-256), trust anchor.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Why a credential file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
}

fn err(path: &Path, msg: impl Into<String>) -> CredentialError {
    CredentialError::File {
        path: path.to_owned(),
        msg: msg.into(),
    }
}

/// The device identity loaded from disk.
pub struct DeviceCredentials {
    /// Certificate chain, leaf first, DER.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key as PKCS#8 DER (SEC1 input is converted).
    pub key_pkcs8: PrivatePkcs8KeyDer<'static>,
    /// The ClientID from the leaf certificate's CN.
    pub client_id: String,
}

impl DeviceCredentials {
    pub fn load(cert: &Path, key: &Path) -> Result<Self, CredentialError> {
        // load_certs returns at least one certificate, so chain[0] (the leaf) exists.
        let chain = load_certs(cert)?;
        let key_pkcs8 = load_key(key)?;
        let client_id = common_name(&chain[0]).map_err(|m| err(cert, m))?;
        // The key must belong to the leaf: sign and verify would fail later in a confusing way.
        let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            key_pkcs8.secret_pkcs8_der(),
            &ring::rand::SystemRandom::new(),
        )
        .map_err(|e| err(key, format!("not a P-256 private key: {e}")))?;
        let spki_key = leaf_public_key(&chain[0]).map_err(|m| err(cert, m))?;
        if ring::signature::KeyPair::public_key(&pair).as_ref() != spki_key.as_slice() {
            return Err(err(key, "the key does not match the certificate"));
        }
        Ok(Self {
            chain,
            key_pkcs8,
            client_id,
        })
    }

    /// The key in the form rustls wants for a TLS client certificate.
    pub fn tls_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key_pkcs8.clone_key())
    }
}

/// Every CERTIFICATE block of a PEM file, in order; at least one.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CredentialError> {
    let data = std::fs::read(path).map_err(|e| err(path, e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(path, format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(err(path, "no CERTIFICATE found"));
    }
    Ok(certs)
}

/// A P-256 private key, PKCS#8 ("PRIVATE KEY") or SEC1 ("EC PRIVATE KEY"), as PKCS#8.
pub fn load_key(path: &Path) -> Result<PrivatePkcs8KeyDer<'static>, CredentialError> {
    let data = std::fs::read(path).map_err(|e| err(path, e.to_string()))?;
    match PrivateKeyDer::from_pem_slice(&data)
        .map_err(|e| err(path, format!("no private key: {e}")))?
    {
        PrivateKeyDer::Pkcs8(k) => Ok(k),
        PrivateKeyDer::Sec1(k) => Ok(PrivatePkcs8KeyDer::from(sec1_to_pkcs8(k.secret_sec1_der()))),
        _ => Err(err(path, "unsupported key type (want a P-256 key)")),
    }
}

/// Wraps a SEC1 ECPrivateKey for P-256 in a PKCS#8 PrivateKeyInfo (RFC 5208 / RFC 5915).
fn sec1_to_pkcs8(sec1: &[u8]) -> Vec<u8> {
    // AlgorithmIdentifier { id-ecPublicKey, prime256v1 }
    const ALG: &[u8] = &[
        0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86,
        0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
    ];
    let mut inner = vec![0x02, 0x01, 0x00];
    inner.extend_from_slice(ALG);
    inner.push(0x04);
    der_len(&mut inner, sec1.len());
    inner.extend_from_slice(sec1);
    let mut out = vec![0x30];
    der_len(&mut out, inner.len());
    out.extend_from_slice(&inner);
    out
}

fn der_len(out: &mut Vec<u8>, n: usize) {
    if n < 0x80 {
        out.push(n as u8);
    } else if n < 0x100 {
        out.extend_from_slice(&[0x81, n as u8]);
    } else {
        out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]);
    }
}

/// The subject CN of a certificate.
pub fn common_name(cert: &CertificateDer<'_>) -> Result<String, String> {
    let (_, c) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| format!("cannot parse the certificate: {e}"))?;
    let cn = c
        .subject()
        .iter_common_name()
        .next()
        .ok_or("the certificate has no CN")?;
    cn.as_str()
        .map(str::to_owned)
        .map_err(|e| format!("bad CN: {e}"))
}

fn leaf_public_key(cert: &CertificateDer<'_>) -> Result<Vec<u8>, String> {
    let (_, c) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| format!("cannot parse the certificate: {e}"))?;
    Ok(c.public_key().subject_public_key.data.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sec1_and_pkcs8_keys_both_load_as_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let sec1 = dir.path().join("sec1.pem");
        let pkcs8 = dir.path().join("pkcs8.pem");
        // openssl (as an independent tool) writes the SEC1 "EC PRIVATE KEY" form, then PKCS#8.
        let ok = std::process::Command::new("openssl")
            .args([
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
            ])
            .arg(&sec1)
            .status()
            .unwrap()
            .success();
        assert!(ok);
        assert!(std::fs::read_to_string(&sec1)
            .unwrap()
            .contains("BEGIN EC PRIVATE KEY"));
        let ok = std::process::Command::new("openssl")
            .args(["pkcs8", "-topk8", "-nocrypt", "-in"])
            .arg(&sec1)
            .arg("-out")
            .arg(&pkcs8)
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let rng = ring::rand::SystemRandom::new();
        let public = |p: &Path| {
            let k = load_key(p).unwrap();
            let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
                &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                k.secret_pkcs8_der(),
                &rng,
            )
            .unwrap();
            ring::signature::KeyPair::public_key(&pair)
                .as_ref()
                .to_vec()
        };
        assert_eq!(public(&sec1), public(&pkcs8));
    }

    #[test]
    fn rejects_files_without_a_key_or_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.pem");
        std::fs::write(&f, "not pem").unwrap();
        assert!(load_key(&f).is_err());
        assert!(load_certs(&f).is_err());
        assert!(load_key(&dir.path().join("missing")).is_err());
    }
}
