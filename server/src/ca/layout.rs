//! The CA on disk. Files under `<data_dir>/ca/` (directory mode 0700, files 0600):
//!
//! | file          | content                                                          |
//! |---------------|------------------------------------------------------------------|
//! | `root.crt`    | the root CA certificate (PEM)                                    |
//! | `root.key`    | the root key (only when devid made the root; see [`keystore`])   |
//! | `issuing.crt` | the online issuing CA certificate (PEM)                          |
//! | `issuing.key` | the issuing key, PKCS#8 PEM or devid's encrypted format          |
//! | `chain.pem`   | issuing CA first, then any intermediates, root last              |
//!
//! When the keys live in a PKCS#11 token, `root.key` and `issuing.key` are replaced by
//! `root.pkcs11` and `issuing.pkcs11`: RFC 7512 URIs naming the key objects in the token
//! (`pkcs11:token=...;object=...;id=...;type=private`), no key material.
//!
//! Creation is atomic and safe for concurrent first starts: everything is written and synced
//! into a private temporary directory, which is then renamed to `ca/`. `rename(2)` onto an
//! existing non-empty directory fails, so when two processes race exactly one CA wins and the
//! loser discards its own and loads the winner's. No lock file, so nothing goes stale after a
//! crash: `ca/` is either absent or complete. A single file is replaced the same way: written
//! to a private temporary file beside it, synced, renamed over it.
//!
//! [`keystore`]: super::keystore

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use ring::rand::SecureRandom;

use super::error::{io_err, CaError};
use super::keys::{check_passphrase, decode_key_file, read_key_file};
use super::rules::public_key_point;
use super::signer::CaKey;
use super::token::{Token, TokenConfig};
use super::token_key::TokenKey;
use super::Ca;

/// Name of the CA directory under the data directory.
pub const CA_DIR: &str = "ca";
pub(super) const ROOT_CRT: &str = "root.crt";
pub(super) const ROOT_KEY: &str = "root.key";
pub(super) const ISSUING_CRT: &str = "issuing.crt";
pub(super) const ISSUING_KEY: &str = "issuing.key";
pub(super) const ROOT_REF: &str = "root.pkcs11";
pub(super) const ISSUING_REF: &str = "issuing.pkcs11";
const CHAIN_PEM: &str = "chain.pem";
const TMP_PREFIX: &str = ".ca-tmp-";
/// Temporary CA directories older than this are leftovers of a crash and are removed.
const STALE_TMP_AGE: Duration = Duration::from_secs(3600);

/// Where the CA keys are: files under `ca/` (encrypted when a passphrase is given), or a
/// PKCS#11 token.
#[derive(Debug, Clone)]
pub enum CaKeys {
    Files { passphrase: Option<String> },
    Token(TokenConfig),
}

/// Everything a new or imported CA writes to disk.
pub(super) struct CaFiles {
    pub root_der: Vec<u8>,
    pub issuing_der: Vec<u8>,
    /// The key files (or token key references) by name: the issuing key's, and the root's
    /// when devid made the root.
    pub key_files: Vec<(&'static str, String)>,
    pub chain_der: Vec<Vec<u8>>,
}

pub(super) enum Installed {
    Ours,
    SomeoneElses,
}

impl Ca {
    /// Loads the CA from `<data_dir>/ca/` without creating one.
    pub fn load_from(data_dir: &Path, passphrase: Option<&str>) -> Result<Ca, CaError> {
        check_passphrase(passphrase)?;
        Ca::load(
            &data_dir.join(CA_DIR),
            &CaKeys::Files {
                passphrase: passphrase.map(str::to_string),
            },
        )
    }

    pub(super) fn load(ca_dir: &Path, keys: &CaKeys) -> Result<Ca, CaError> {
        let corrupt = |reason: String| CaError::Corrupt {
            path: ca_dir.to_path_buf(),
            reason,
        };
        let read = |name: &str| -> Result<String, CaError> {
            let p = ca_dir.join(name);
            fs::read_to_string(&p).map_err(|e| corrupt(format!("{name}: {e}")))
        };
        let issuing = pem_certificates(&read(ISSUING_CRT)?, ISSUING_CRT)?;
        let [issuing_der] = <[Vec<u8>; 1]>::try_from(issuing)
            .map_err(|v| corrupt(format!("{ISSUING_CRT} holds {} certificates", v.len())))?;
        let chain_der = pem_certificates(&read(CHAIN_PEM)?, CHAIN_PEM)?;

        let key = load_key(ca_dir, keys, (ISSUING_KEY, ISSUING_REF), &issuing_der)?;
        if chain_der.first() != Some(&issuing_der) {
            return Err(corrupt(format!(
                "{CHAIN_PEM} does not start with {ISSUING_CRT}"
            )));
        }
        // The root's key is here only when devid made the root (not for an imported CA).
        let root_key = match chain_der.last() {
            Some(root) if ca_dir.join(ROOT_KEY).exists() || ca_dir.join(ROOT_REF).exists() => {
                Some(load_key(ca_dir, keys, (ROOT_KEY, ROOT_REF), root)?)
            }
            _ => None,
        };
        let mut ca = Ca::from_parts(issuing_der, key, chain_der, root_key)?;
        ca.home = Some(super::rotate::Home {
            dir: ca_dir.to_path_buf(),
            keys: keys.clone(),
        });
        Ok(ca)
    }
}

/// A CA key (`names`: its file, its token reference) as `keys` says it is kept, refusing a CA
/// kept the other way. A key in a token is known by its certificate's public key, which every
/// signature it makes is then checked against.
pub(super) fn load_key(
    ca_dir: &Path,
    keys: &CaKeys,
    names: (&str, &str),
    cert_der: &[u8],
) -> Result<CaKey, CaError> {
    let (key_name, ref_name) = names;
    let in_token = ca_dir.join(ref_name).exists();
    match keys {
        CaKeys::Files { .. } if in_token => Err(CaError::Token(format!(
            "the CA keys are in a token ({}): give --pkcs11-module, --pkcs11-token \
             and the PIN",
            ca_dir.join(ref_name).display()
        ))),
        CaKeys::Files { passphrase } => {
            let key_path = ca_dir.join(key_name);
            let text = read_key_file(&key_path)?;
            let (_, key) = decode_key_file(&key_path, &text, passphrase.as_deref())?;
            Ok(CaKey::File(key))
        }
        CaKeys::Token(_) if !in_token => Err(CaError::Token(format!(
            "the PKCS#11 options were given but the CA keys in {} are files, not token keys",
            ca_dir.display()
        ))),
        CaKeys::Token(config) => {
            let path = ca_dir.join(ref_name);
            let reference = fs::read_to_string(&path).map_err(io_err(&path))?;
            let token = Token::open(config)?;
            let public = public_key_point(cert_der)?;
            Ok(CaKey::Token(TokenKey::open(&token, &reference, public)?))
        }
    }
}

/// Whether `ca_dir` holds a CA (its issuing certificate is the mark).
pub(super) fn ca_exists(ca_dir: &Path) -> bool {
    ca_dir.join(ISSUING_CRT).exists()
}

/// Writes the files into a fresh private temporary directory and renames it to `ca_dir`.
pub(super) fn install(
    data_dir: &Path,
    ca_dir: &Path,
    files: &CaFiles,
    rng: &dyn SecureRandom,
) -> Result<Installed, CaError> {
    let tmp = data_dir.join(format!(
        "{TMP_PREFIX}{}-{}",
        std::process::id(),
        random_tag(rng)?
    ));
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&tmp)
        .map_err(io_err(&tmp))?;
    let result = (|| {
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o700)).map_err(io_err(&tmp))?;
        write_private(&tmp.join(ROOT_CRT), pem_cert(&files.root_der).as_bytes())?;
        for (name, text) in &files.key_files {
            write_private(&tmp.join(name), text.as_bytes())?;
        }
        write_private(
            &tmp.join(ISSUING_CRT),
            pem_cert(&files.issuing_der).as_bytes(),
        )?;
        write_private(&tmp.join(CHAIN_PEM), pem_chain(&files.chain_der).as_bytes())?;
        sync_dir(&tmp)
    })();
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    match fs::rename(&tmp, ca_dir) {
        Ok(()) => {
            sync_dir(data_dir)?;
            Ok(Installed::Ours)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            // ENOTEMPTY / EEXIST: another process (or an earlier run) got there first.
            if ca_exists(ca_dir) {
                Ok(Installed::SomeoneElses)
            } else if ca_dir.exists() {
                Err(CaError::Corrupt {
                    path: ca_dir.to_path_buf(),
                    reason: format!(
                        "the directory exists but holds no {ISSUING_CRT}; move it away to \
                         create a new CA"
                    ),
                })
            } else {
                Err(CaError::Io {
                    path: ca_dir.to_path_buf(),
                    source: e,
                })
            }
        }
    }
}

/// Replaces the private file `path` atomically with `data` (a private temporary file beside it,
/// synced, renamed over it, the directory synced).
pub(super) fn replace_private(
    path: &Path,
    data: &[u8],
    rng: &dyn SecureRandom,
) -> Result<(), CaError> {
    let tmp = path.with_extension(format!("key.{}.tmp", random_tag(rng)?));
    let written =
        write_private(&tmp, data).and_then(|()| fs::rename(&tmp, path).map_err(io_err(path)));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// Best effort: removes temporary CA directories left by a crash long ago.
pub(super) fn remove_stale_tmp_dirs(data_dir: &Path) {
    let Ok(entries) = fs::read_dir(data_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(TMP_PREFIX) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_TMP_AGE);
        if old {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// 8 random bytes as hex, to name a temporary file or directory.
fn random_tag(rng: &dyn SecureRandom) -> Result<String, CaError> {
    let mut tag = [0u8; 8];
    rng.fill(&mut tag).map_err(|_| CaError::Rng)?;
    Ok(hex::encode(tag))
}

pub(super) fn write_private(path: &Path, data: &[u8]) -> Result<(), CaError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io_err(path))?;
    f.write_all(data).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), CaError> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_err(dir))
}

/// The DER certificates of PEM text that must hold only CERTIFICATE blocks; `what` names the
/// text in errors.
pub(super) fn pem_certificates(text: &str, what: &str) -> Result<Vec<Vec<u8>>, CaError> {
    let blocks =
        pem::parse_many(text).map_err(|e| CaError::InvalidCa(format!("{what}: not PEM: {e}")))?;
    let mut out = Vec::with_capacity(blocks.len());
    for b in blocks {
        if b.tag() != "CERTIFICATE" {
            return Err(CaError::InvalidCa(format!(
                "{what}: expected CERTIFICATE blocks, found {}",
                b.tag()
            )));
        }
        out.push(b.into_contents());
    }
    Ok(out)
}

/// A PEM block as devid writes it (LF line endings).
pub(super) fn pem_block(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

pub(super) fn pem_cert(der: &[u8]) -> String {
    pem_block("CERTIFICATE", der)
}

/// Certificates as one PEM text, in the order given.
pub(super) fn pem_chain(chain_der: &[Vec<u8>]) -> String {
    chain_der.iter().map(|d| pem_cert(d)).collect()
}
