//! Import of an existing issuing CA (`devid-server import-ca`), so devid chains under a
//! company root.

use std::fs;
use std::path::Path;

use ring::rand::SystemRandom;
use time::OffsetDateTime;

use super::error::{io_err, CaError};
use super::keys::{check_passphrase, encode_key_file, p256_key_pair};
use super::layout::{
    ca_exists, install, pem_certificates, CaFiles, Installed, CA_DIR, ISSUING_KEY, ISSUING_REF,
};
use super::rules::{parse_cert, public_key_point};
use super::signer::CaKey;
use super::token::{Token, TokenConfig};
use super::token_key::TokenKey;
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
        let (issuing_der, chain_der) = import_chain(data_dir, cert_pem, chain_pem)?;
        let key_pkcs8 = import_key_pkcs8(key_pem)?;
        let key = p256_key_pair(&key_pkcs8).map_err(CaError::InvalidCa)?;
        check_not_expired(&issuing_der, OffsetDateTime::now_utc())?;
        let rng = SystemRandom::new();
        let key_file = encode_key_file(&key_pkcs8, passphrase, &rng, Path::new(ISSUING_KEY))?;
        install_imported(
            data_dir,
            issuing_der,
            CaKey::File(key),
            chain_der,
            (ISSUING_KEY, key_file),
        )
    }

    /// [`Ca::import`] for an issuing key already in a PKCS#11 token, named by its label or by
    /// `id:<hex>` (its `CKA_ID`). The key must be ECDSA P-256, sensitive and not extractable,
    /// and sign under the certificate's public key; `ca/issuing.pkcs11` then names it.
    pub fn import_token_key(
        data_dir: &Path,
        cert_pem: &str,
        chain_pem: &str,
        config: &TokenConfig,
        key: &str,
    ) -> Result<Ca, CaError> {
        let (issuing_der, chain_der) = import_chain(data_dir, cert_pem, chain_pem)?;
        let token = Token::open(config)?;
        let key = TokenKey::find(&token, key, public_key_point(&issuing_der)?)?;
        key.check_signs()?;
        check_not_expired(&issuing_der, OffsetDateTime::now_utc())?;
        let reference = key.reference();
        install_imported(
            data_dir,
            issuing_der,
            CaKey::Token(key),
            chain_der,
            (ISSUING_REF, reference),
        )
    }
}

/// The issuing certificate and the chain from it to the root (DER), refusing an existing CA.
fn import_chain(
    data_dir: &Path,
    cert_pem: &str,
    chain_pem: &str,
) -> Result<(Vec<u8>, Vec<Vec<u8>>), CaError> {
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
    Ok((issuing_der, chain_der))
}

/// Checks every rule (before anything is written), then installs the certificates and the
/// issuing key's file (the key, or its reference in a token).
fn install_imported(
    data_dir: &Path,
    issuing_der: Vec<u8>,
    key: CaKey,
    chain_der: Vec<Vec<u8>>,
    key_file: (&'static str, String),
) -> Result<Ca, CaError> {
    let ca = Ca::from_parts(issuing_der.clone(), key, chain_der.clone(), None)?;
    let files = CaFiles {
        root_der: ca.root_der().to_vec(),
        issuing_der,
        key_files: vec![key_file],
        chain_der,
    };
    let ca_dir = data_dir.join(CA_DIR);
    fs::create_dir_all(data_dir).map_err(io_err(data_dir))?;
    match install(data_dir, &ca_dir, &files, &SystemRandom::new())? {
        Installed::Ours => Ok(ca),
        Installed::SomeoneElses => Err(CaError::AlreadyExists { path: ca_dir }),
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
