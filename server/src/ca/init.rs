//! First start: devid makes its own root CA and issuing CA, with their keys in files or in a
//! PKCS#11 token.

use std::fs;
use std::path::Path;

use devid_core::profile::{self, CaCertSettings, Validity};
use rcgen::Issuer;
use ring::rand::SystemRandom;
use time::OffsetDateTime;

use super::error::{io_err, signing, CaError};
use super::keys::{check_passphrase, encode_key_file, new_p256_pkcs8, p256_key_pair};
use super::layout::{
    ca_exists, install, remove_stale_tmp_dirs, CaFiles, CaKeys, Installed, CA_DIR, ISSUING_KEY,
    ISSUING_REF, ROOT_KEY, ROOT_REF,
};
use super::signer::CaKey;
use super::token::Token;
use super::token_key::TokenKey;
use super::Ca;

/// What a new CA is made with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaOptions {
    /// Subject O of both CA certificates.
    pub organization: Option<String>,
    /// Default [`profile::DEFAULT_ROOT_YEARS`].
    pub root_validity: Validity,
    /// Default [`profile::DEFAULT_ISSUING_YEARS`], never past the root's notAfter.
    pub issuing_validity: Validity,
    /// The root's CRL (e.g. `http://host:8080/v1/crl/root`), written into every issuing CA
    /// certificate as its CRL distribution point.
    pub root_crl_url: Option<String>,
}

impl Default for CaOptions {
    fn default() -> Self {
        CaOptions {
            organization: None,
            root_validity: Validity::Years(profile::DEFAULT_ROOT_YEARS),
            issuing_validity: Validity::Years(profile::DEFAULT_ISSUING_YEARS),
            root_crl_url: None,
        }
    }
}

/// Labels of the key objects devid makes in a token.
const ROOT_LABEL: &str = "devid root CA";
const ISSUING_LABEL: &str = "devid issuing CA";

impl Ca {
    /// First start: create a root CA and an issuing CA under `<data_dir>/ca/`. Later starts:
    /// load it. Returns the CA and whether it was created now.
    ///
    /// With a passphrase, new keys are written encrypted and existing keys must be encrypted.
    pub fn init_or_load(
        data_dir: &Path,
        passphrase: Option<&str>,
        organization: Option<&str>,
    ) -> Result<(Ca, bool), CaError> {
        let keys = CaKeys::Files {
            passphrase: passphrase.map(str::to_string),
        };
        Ca::init_or_load_keys(data_dir, &keys, organization)
    }

    /// [`Ca::init_or_load`] with the keys kept as `keys` says: in files, or made inside a
    /// PKCS#11 token (P-256, sensitive, not extractable), the data directory then holding
    /// only references to them.
    pub fn init_or_load_keys(
        data_dir: &Path,
        keys: &CaKeys,
        organization: Option<&str>,
    ) -> Result<(Ca, bool), CaError> {
        let options = CaOptions {
            organization: organization.map(str::to_string),
            ..CaOptions::default()
        };
        Ca::init_or_load_with(data_dir, keys, &options)
    }

    /// [`Ca::init_or_load_keys`] with every option of a new CA (`options` matter only when
    /// the CA is created now).
    pub fn init_or_load_with(
        data_dir: &Path,
        keys: &CaKeys,
        options: &CaOptions,
    ) -> Result<(Ca, bool), CaError> {
        if let CaKeys::Files { passphrase } = keys {
            check_passphrase(passphrase.as_deref())?;
        }
        let ca_dir = data_dir.join(CA_DIR);
        if ca_exists(&ca_dir) {
            return Ok((Ca::load(&ca_dir, keys)?, false));
        }
        fs::create_dir_all(data_dir).map_err(io_err(data_dir))?;
        remove_stale_tmp_dirs(data_dir);

        let rng = SystemRandom::new();
        let now = OffsetDateTime::now_utc();
        let files = new_ca_files(options, keys, now, &rng)?;
        match install(data_dir, &ca_dir, &files, &rng)? {
            // Loaded from what was written, so a first start runs exactly like every later one.
            Installed::Ours => Ok((Ca::load(&ca_dir, keys)?, true)),
            // Another process created the CA first: use theirs.
            Installed::SomeoneElses => Ok((Ca::load(&ca_dir, keys)?, false)),
        }
    }
}

/// A new root (self-signed) and issuing CA (signed by the root), with fresh keys.
fn new_ca_files(
    options: &CaOptions,
    keys: &CaKeys,
    now: OffsetDateTime,
    rng: &SystemRandom,
) -> Result<CaFiles, CaError> {
    let (root_key, issuing_key, key_files) = new_keys(keys, rng)?;

    let organization = options.organization.as_deref();
    let root_settings = CaCertSettings {
        common_name: profile::ROOT_CN,
        organization,
        validity: options.root_validity,
        crl_url: None,
    };
    let root_params = profile::root_ca_params(
        &root_settings,
        &profile::new_serial(now.unix_timestamp(), rng)?,
        now,
    )?;
    let root_not_after = root_params.not_after;
    let root_cert = root_params.self_signed(&root_key).map_err(signing)?;
    let root_issuer = Issuer::new(root_params, root_key);
    let issuing_settings = CaCertSettings {
        common_name: profile::ISSUING_CN,
        organization,
        validity: options.issuing_validity,
        crl_url: options.root_crl_url.as_deref(),
    };
    let issuing_params = profile::issuing_ca_params(
        &issuing_settings,
        &profile::new_serial(now.unix_timestamp(), rng)?,
        now,
        root_not_after,
    )?;
    let issuing_cert = issuing_params
        .signed_by(&issuing_key, &root_issuer)
        .map_err(signing)?;

    let root_der = root_cert.der().to_vec();
    let issuing_der = issuing_cert.der().to_vec();
    let files = CaFiles {
        key_files,
        chain_der: vec![issuing_der.clone(), root_der.clone()],
        root_der,
        issuing_der,
    };
    Ok(files)
}

/// The root and issuing keys, and what the data directory keeps of them: the key files, or
/// references to the keys in the token.
type NewKeys = (CaKey, CaKey, Vec<(&'static str, String)>);

fn new_keys(keys: &CaKeys, rng: &SystemRandom) -> Result<NewKeys, CaError> {
    match keys {
        CaKeys::Files { passphrase } => {
            let passphrase = passphrase.as_deref();
            let root_pkcs8 = new_p256_pkcs8(rng)?;
            let issuing_pkcs8 = new_p256_pkcs8(rng)?;
            let files = vec![
                (
                    ROOT_KEY,
                    encode_key_file(&root_pkcs8, passphrase, rng, Path::new(ROOT_KEY))?,
                ),
                (
                    ISSUING_KEY,
                    encode_key_file(&issuing_pkcs8, passphrase, rng, Path::new(ISSUING_KEY))?,
                ),
            ];
            let root = p256_key_pair(&root_pkcs8).map_err(CaError::Signing)?;
            let issuing = p256_key_pair(&issuing_pkcs8).map_err(CaError::Signing)?;
            Ok((CaKey::File(root), CaKey::File(issuing), files))
        }
        CaKeys::Token(config) => {
            let token = Token::open(config)?;
            let root = TokenKey::generate(&token, ROOT_LABEL, rng)?;
            let issuing = TokenKey::generate(&token, ISSUING_LABEL, rng)?;
            let files = vec![
                (ROOT_REF, root.reference()),
                (ISSUING_REF, issuing.reference()),
            ];
            Ok((CaKey::Token(root), CaKey::Token(issuing), files))
        }
    }
}

/// A new issuing key for a rotation: the key, what the data directory keeps of it (the key
/// file's text, or the reference to the token key) and that file's extension.
pub(super) fn new_issuing_key(
    keys: &CaKeys,
    label: &str,
    rng: &SystemRandom,
) -> Result<(CaKey, String, &'static str), CaError> {
    match keys {
        CaKeys::Files { passphrase } => {
            let pkcs8 = new_p256_pkcs8(rng)?;
            let text = encode_key_file(&pkcs8, passphrase.as_deref(), rng, Path::new(label))?;
            let key = p256_key_pair(&pkcs8).map_err(CaError::Signing)?;
            Ok((CaKey::File(key), text, "key"))
        }
        CaKeys::Token(config) => {
            let token = Token::open(config)?;
            let key = TokenKey::generate(&token, label, rng)?;
            let reference = key.reference();
            Ok((CaKey::Token(key), reference, "pkcs11"))
        }
    }
}
