//! Passphrase rotation of the CA's key files (`devid-server change-passphrase`).

use std::path::{Path, PathBuf};

use ring::rand::SystemRandom;

use super::error::CaError;
use super::keys::{check_passphrase, decode_key_file, encode_key_file, opens_with, read_key_file};
use super::layout::{
    ca_exists, replace_private, CaKeys, CA_DIR, ISSUING_CRT, ISSUING_KEY, ISSUING_REF, ROOT_KEY,
};
use super::Ca;

impl Ca {
    /// Re-encrypts the CA's private keys (issuing, root when present, and the issuing CAs of
    /// rotations under `issuers/`) and the sensor KEK under `new`
    /// (`None`: store them unencrypted), after decrypting them with `old`. Every key is decoded
    /// and re-encoded before any file is replaced; each file is then replaced atomically
    /// (a private temporary file, fsynced, renamed over it). A key that already opens with
    /// `new` is left as it is, so a run cut short can simply be repeated. Finally the CA is
    /// loaded with `new`. Returns the key files rewritten.
    pub fn change_passphrase(
        data_dir: &Path,
        old: Option<&str>,
        new: Option<&str>,
    ) -> Result<Vec<PathBuf>, CaError> {
        check_passphrase(old)?;
        check_passphrase(new)?;
        let ca_dir = data_dir.join(CA_DIR);
        if !ca_exists(&ca_dir) {
            return Err(CaError::Corrupt {
                path: ca_dir,
                reason: format!("no {ISSUING_CRT}: there is no CA to change"),
            });
        }
        if ca_dir.join(ISSUING_REF).exists() {
            return Err(CaError::Token(
                "the CA keys are in a PKCS#11 token, which guards them with its PIN; there is \
                 no passphrase to change"
                    .into(),
            ));
        }
        let rng = SystemRandom::new();
        let mut plan: Vec<(PathBuf, String)> = Vec::new();
        // The issuing CAs made by rotations have their keys under issuers/.
        let mut paths = vec![ca_dir.join(ISSUING_KEY), ca_dir.join(ROOT_KEY)];
        if let Ok(entries) = std::fs::read_dir(ca_dir.join("issuers")) {
            let mut rotated: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "key"))
                .collect();
            rotated.sort();
            paths.extend(rotated);
        }
        for path in paths {
            if path == ca_dir.join(ROOT_KEY) && !path.exists() {
                continue; // an imported CA has no root key here
            }
            let text = read_key_file(&path)?;
            if opens_with(&text, new) {
                continue;
            }
            let (pkcs8_der, _) = decode_key_file(&path, &text, old)?;
            let text = encode_key_file(&pkcs8_der, new, &rng, &path)?;
            plan.push((path, text));
        }
        // The sensor key-encryption key is kept like the CA keys.
        plan.extend(super::sensor_kek::reencode(&ca_dir, old, new, &rng)?);
        for (path, text) in &plan {
            replace_private(path, text.as_bytes(), &rng)?;
        }
        let keys = CaKeys::Files {
            passphrase: new.map(str::to_string),
        };
        Ca::load(&ca_dir, &keys)?;
        Ok(plan.into_iter().map(|(p, _)| p).collect())
    }
}
