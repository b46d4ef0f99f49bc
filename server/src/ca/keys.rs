//! CA private keys: made here, encoded for disk through [`keystore`], read back with their
//! permissions checked, and insisted on being ECDSA P-256.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rcgen::KeyPair;
use ring::rand::SecureRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};

use super::error::{io_err, CaError};
use super::keystore::{self, KeystoreError};

/// Refuses an empty passphrase (it would encrypt under nothing).
pub(super) fn check_passphrase(passphrase: Option<&str>) -> Result<(), CaError> {
    if passphrase == Some("") {
        return Err(CaError::EmptyPassphrase);
    }
    Ok(())
}

/// A new P-256 private key, PKCS#8 DER.
pub(super) fn new_p256_pkcs8(rng: &dyn SecureRandom) -> Result<Vec<u8>, CaError> {
    EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, rng)
        .map(|d| d.as_ref().to_vec())
        .map_err(|_| CaError::Rng)
}

/// Reads a PKCS#8 key and insists on ECDSA P-256, naming what it found otherwise.
pub(super) fn p256_key_pair(pkcs8_der: &[u8]) -> Result<KeyPair, String> {
    let key = KeyPair::try_from(pkcs8_der)
        .map_err(|_| "the key is not an unencrypted PKCS#8 ECDSA P-256 private key".to_string())?;
    let alg = key.algorithm();
    if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
        return Ok(key);
    }
    let found = if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
        "ECDSA P-384"
    } else if alg == &rcgen::PKCS_ED25519 {
        "Ed25519"
    } else {
        "RSA"
    };
    Err(format!(
        "the key is {found}; devid accepts ECDSA P-256 only"
    ))
}

/// The text of the key file `path` will hold: encrypted under `passphrase`, or plain PKCS#8.
pub(super) fn encode_key_file(
    pkcs8_der: &[u8],
    passphrase: Option<&str>,
    rng: &dyn SecureRandom,
    path: &Path,
) -> Result<String, CaError> {
    keystore::encode_key(pkcs8_der, passphrase, rng).map_err(|e| keystore_err(e, path))
}

/// A CA key file's text, after checking that only its owner can read it.
pub(super) fn read_key_file(path: &Path) -> Result<String, CaError> {
    check_key_permissions(path)?;
    fs::read_to_string(path).map_err(io_err(path))
}

/// Decrypts a CA key file's text with `passphrase` (refused for an unencrypted key, so a
/// passphrase never silently protects nothing) and insists on ECDSA P-256. Returns the PKCS#8
/// DER and the key.
pub(super) fn decode_key_file(
    path: &Path,
    text: &str,
    passphrase: Option<&str>,
) -> Result<(Vec<u8>, KeyPair), CaError> {
    let decoded = keystore::decode_key(text, passphrase).map_err(|e| keystore_err(e, path))?;
    if passphrase.is_some() && !decoded.encrypted {
        return Err(CaError::UnexpectedPassphrase {
            path: path.to_path_buf(),
        });
    }
    let key = p256_key_pair(&decoded.pkcs8_der).map_err(|reason| CaError::KeyFile {
        path: path.to_path_buf(),
        reason,
    })?;
    Ok((decoded.pkcs8_der, key))
}

/// Whether a key file's text already decodes as intended for `passphrase` (encrypted under it,
/// or unencrypted when it is None).
pub(super) fn opens_with(text: &str, passphrase: Option<&str>) -> bool {
    keystore::decode_key(text, passphrase).is_ok_and(|d| d.encrypted == passphrase.is_some())
}

fn check_key_permissions(path: &Path) -> Result<(), CaError> {
    let meta = fs::metadata(path).map_err(io_err(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CaError::KeyPermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

fn keystore_err(e: KeystoreError, path: &Path) -> CaError {
    let path = path.to_path_buf();
    match e {
        KeystoreError::PassphraseRequired => CaError::PassphraseRequired { path },
        KeystoreError::WrongPassphrase => CaError::WrongPassphrase { path },
        KeystoreError::EmptyPassphrase => CaError::EmptyPassphrase,
        KeystoreError::Rng => CaError::Rng,
        KeystoreError::Malformed(reason) => CaError::KeyFile { path, reason },
    }
}
