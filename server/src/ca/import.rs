//! Import of an existing issuing CA (`devid-server import-ca`), so devid chains under a
//! company root.

use std::fs;
use std::path::Path;

use ring::rand::SystemRandom;
use time::OffsetDateTime;

use super::error::{io_err, CaError};
use super::keys::{check_passphrase, encode_key_file, p256_key_pair};
use super::layout::{
    ca_exists, install, pem_certificates, CaFiles, Installed, CA_DIR, ISSUING_KEY,
};
use super::rules::parse_cert;
use super::signer::CaKey;
use super::Ca;

impl Ca {
    /// Imports an existing issuing CA so devid chains under a company root. `chain_pem` holds
    /// the certificates above the issuing CA up to and including the self-signed root (it may
    /// start with the issuing certificate itself). Refuses a key that does not match the
    /// certificate, a certificate that is not a CA (or may not sign certificates and CRLs),
    /// a non-P-256 key anywhere in the chain, a chain that does not link, an expired issuing
    /// certificate, and an existing CA.
    pub fn import(
        data_dir: &Path,
        cert_pem: &str,
        key_pem: &str,
        chain_pem: &str,
        passphrase: Option<&str>,
    ) -> Result<Ca, CaError> {
        check_passphrase(passphrase)?;
        let ca_dir = data_dir.join(CA_DIR);
        if ca_exists(&ca_dir) {
            return Err(CaError::AlreadyExists { path: ca_dir });
        }
        let mut certs = pem_certificates(cert_pem, "certificate")?;
        if certs.len() != 1 {
            return Err(CaError::InvalidCa(format!(
                "the certificate PEM must hold exactly one certificate, found {}",
                certs.len()
            )));
        }
        let issuing_der = certs.remove(0);
        let mut chain = pem_certificates(chain_pem, "chain")?;
        if chain.first() == Some(&issuing_der) {
            chain.remove(0);
        }
        let mut chain_der = vec![issuing_der.clone()];
        chain_der.extend(chain);

        let key_pkcs8 = import_key_pkcs8(key_pem)?;
        let key = p256_key_pair(&key_pkcs8).map_err(CaError::InvalidCa)?;
        check_not_expired(&issuing_der, OffsetDateTime::now_utc())?;
        // Validate everything before anything is written.
        let ca = Ca::from_parts(issuing_der.clone(), CaKey::File(key), chain_der.clone())?;

        let rng = SystemRandom::new();
        let files = CaFiles {
            root_der: ca.root_der.clone(),
            issuing_der,
            key_files: vec![(
                ISSUING_KEY,
                encode_key_file(&key_pkcs8, passphrase, &rng, Path::new(ISSUING_KEY))?,
            )],
            issuing_key: CaKey::File(p256_key_pair(&key_pkcs8).map_err(CaError::InvalidCa)?),
            chain_der,
        };
        fs::create_dir_all(data_dir).map_err(io_err(data_dir))?;
        match install(data_dir, &ca_dir, &files, &rng)? {
            Installed::Ours => Ok(ca),
            Installed::SomeoneElses => Err(CaError::AlreadyExists { path: ca_dir }),
        }
    }
}

/// The PKCS#8 DER of an imported key PEM, with clear errors for other encodings.
fn import_key_pkcs8(key_pem: &str) -> Result<Vec<u8>, CaError> {
    let block = pem::parse(key_pem).map_err(|_| CaError::InvalidCa("the key is not PEM".into()))?;
    match block.tag() {
        "PRIVATE KEY" => Ok(block.into_contents()),
        "EC PRIVATE KEY" => Err(CaError::InvalidCa(
            "the key is SEC1 (EC PRIVATE KEY); convert it to PKCS#8 with \
             `openssl pkcs8 -topk8 -nocrypt`"
                .into(),
        )),
        "ENCRYPTED PRIVATE KEY" => Err(CaError::InvalidCa(
            "the key is an encrypted PKCS#8 key; decrypt it first (devid encrypts it again \
             with DEVID_CA_PASSPHRASE)"
                .into(),
        )),
        other => Err(CaError::InvalidCa(format!(
            "expected a PRIVATE KEY (PKCS#8) PEM block, found {other}"
        ))),
    }
}

fn check_not_expired(der: &[u8], now: OffsetDateTime) -> Result<(), CaError> {
    let cert = parse_cert(der).map_err(CaError::InvalidCa)?;
    let v = cert.validity();
    if now < v.not_before.to_datetime() || now > v.not_after.to_datetime() {
        return Err(CaError::InvalidCa(format!(
            "the issuing certificate is not valid now (valid {} to {})",
            v.not_before, v.not_after
        )));
    }
    Ok(())
}
