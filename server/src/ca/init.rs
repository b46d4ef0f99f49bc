//! First start: devid makes its own root CA and issuing CA.

use std::fs;
use std::path::Path;

use devid_core::profile;
use rcgen::Issuer;
use ring::rand::SystemRandom;
use time::OffsetDateTime;

use super::error::{io_err, signing, CaError};
use super::keys::{check_passphrase, encode_key_file, new_p256_pkcs8, p256_key_pair};
use super::layout::{
    ca_exists, install, remove_stale_tmp_dirs, CaFiles, Installed, CA_DIR, ISSUING_KEY, ROOT_KEY,
};
use super::Ca;

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
        check_passphrase(passphrase)?;
        let ca_dir = data_dir.join(CA_DIR);
        if ca_exists(&ca_dir) {
            return Ok((Ca::load(&ca_dir, passphrase)?, false));
        }
        fs::create_dir_all(data_dir).map_err(io_err(data_dir))?;
        remove_stale_tmp_dirs(data_dir);

        let rng = SystemRandom::new();
        let now = OffsetDateTime::now_utc();
        let files = new_ca_files(organization, passphrase, now, &rng)?;
        match install(data_dir, &ca_dir, &files, &rng)? {
            Installed::Ours => {
                let ca = Ca::from_parts(files.issuing_der, files.issuing_key, files.chain_der)?;
                Ok((ca, true))
            }
            // Another process created the CA first: use theirs.
            Installed::SomeoneElses => Ok((Ca::load(&ca_dir, passphrase)?, false)),
        }
    }
}

/// A new root (self-signed) and issuing CA (signed by the root), with fresh keys.
fn new_ca_files(
    organization: Option<&str>,
    passphrase: Option<&str>,
    now: OffsetDateTime,
    rng: &SystemRandom,
) -> Result<CaFiles, CaError> {
    let root_pkcs8 = new_p256_pkcs8(rng)?;
    let issuing_pkcs8 = new_p256_pkcs8(rng)?;
    let root_key = p256_key_pair(&root_pkcs8).map_err(CaError::Signing)?;
    let issuing_key = p256_key_pair(&issuing_pkcs8).map_err(CaError::Signing)?;

    let root_params = profile::root_ca_params(organization, &profile::random_serial(rng)?, now)?;
    let root_cert = root_params.self_signed(&root_key).map_err(signing)?;
    let root_issuer = Issuer::new(root_params, root_key);
    let issuing_params =
        profile::issuing_ca_params(organization, &profile::random_serial(rng)?, now)?;
    let issuing_cert = issuing_params
        .signed_by(&issuing_key, &root_issuer)
        .map_err(signing)?;

    let root_der = root_cert.der().to_vec();
    let issuing_der = issuing_cert.der().to_vec();
    Ok(CaFiles {
        root_key_text: Some(encode_key_file(
            &root_pkcs8,
            passphrase,
            rng,
            Path::new(ROOT_KEY),
        )?),
        issuing_key_text: encode_key_file(&issuing_pkcs8, passphrase, rng, Path::new(ISSUING_KEY))?,
        chain_der: vec![issuing_der.clone(), root_der.clone()],
        root_der,
        issuing_der,
        issuing_key,
    })
}
