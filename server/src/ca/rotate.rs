//! More than one issuing CA: `devid-server ca rotate` makes a new one under the root, and every
//! process loads the issuing CAs the store names and signs with the active one.
//!
//! Files: the first issuing CA is `ca/issuing.*`; each later one is `ca/issuers/<id>.crt` with
//! `ca/issuers/<id>.key` (or `.pkcs11`, a reference to its key in the token). The store row's
//! `key_ref` is the file stem (`issuing`, `issuers/<id>`).

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;

use devid_core::profile::{self, CaCertSettings};
use ring::rand::SystemRandom;
use time::OffsetDateTime;

use super::error::{io_err, CaError};
use super::init::{new_issuing_key, CaOptions};
use super::layout::{load_key, pem_cert, sync_dir, write_private, CaKeys};
use super::{Ca, IssuingCa};

/// The file stem of the first issuing CA.
pub const FIRST_KEY_REF: &str = "issuing";
const ISSUERS_DIR: &str = "issuers";

/// What the store names of an issuing CA, for [`Ca::sync_issuers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerRef {
    pub id: String,
    pub key_ref: String,
    pub active: bool,
    /// Revoked: not loaded, and dropped when loaded.
    pub revoked: bool,
}

impl Ca {
    /// Makes a new issuing CA under the root (new key: a file, or in the token when the CA's
    /// keys are there), signed by the root key, valid `options.issuing_validity` capped at the
    /// root's notAfter, naming the root's CRL. Writes its files and loads it, not active: the
    /// caller records it in the store, which makes it active everywhere.
    pub fn new_issuing(
        &self,
        options: &CaOptions,
        now: OffsetDateTime,
    ) -> Result<Arc<IssuingCa>, CaError> {
        let root = self.root.signer.as_ref().ok_or(CaError::NoRootKey)?;
        let home = self.home.as_ref().ok_or_else(|| {
            CaError::InvalidCa("this CA was not loaded from a data directory".into())
        })?;
        let rng = SystemRandom::new();
        let label = format!("devid issuing CA {}", now.unix_timestamp());
        let (key, key_text, key_ext) = new_issuing_key(&home.keys, &label, &rng)?;
        let stamp = format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second()
        );
        let common_name = format!("{} {stamp}", profile::ISSUING_CN);
        let settings = CaCertSettings {
            common_name: &common_name,
            organization: options.organization.as_deref(),
            validity: options.issuing_validity,
            crl_url: options.root_crl_url.as_deref(),
        };
        let params = profile::issuing_ca_params(
            &settings,
            &profile::new_serial(now.unix_timestamp(), &rng)?,
            now,
            self.root.not_after,
        )?;
        let der = root.certificate(&params, &key)?;
        let chain = vec![der.clone(), self.root.der.clone()];
        let issuing = IssuingCa::new(der, key, chain)?;

        let dir = home.dir.join(ISSUERS_DIR);
        fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&dir)
            .map_err(io_err(&dir))?;
        write_private(
            &dir.join(format!("{}.{key_ext}", issuing.id)),
            key_text.as_bytes(),
        )?;
        write_private(
            &dir.join(format!("{}.crt", issuing.id)),
            pem_cert(&issuing.der).as_bytes(),
        )?;
        sync_dir(&dir)?;
        let issuing = Arc::new(issuing);
        self.write_issuers().push(issuing.clone());
        Ok(issuing)
    }

    /// Loads the issuing CAs the store names that this process has not loaded yet, drops
    /// revoked ones, and makes the active one active (when it could be loaded). Returns whether
    /// the active one changed.
    pub fn sync_issuers(&self, refs: &[IssuerRef]) -> Result<bool, CaError> {
        let mut loaded = self.issuers();
        for r in refs {
            if r.revoked || loaded.iter().any(|i| i.id == r.id) {
                continue;
            }
            // One that cannot be loaded here (a data directory of another CA on the same
            // database) is left out: this process keeps signing with what it has.
            match self.load_issuer(&r.key_ref) {
                Ok(issuer) if issuer.id == r.id => loaded.push(Arc::new(issuer)),
                Ok(issuer) => tracing::warn!(
                    id = %r.id,
                    found = %issuer.id,
                    key_ref = %r.key_ref,
                    "the database names an issuing CA this data directory holds differently"
                ),
                Err(e) => tracing::warn!(
                    id = %r.id,
                    error = %e,
                    "cannot load an issuing CA the database names"
                ),
            }
        }
        loaded.retain(|i| !refs.iter().any(|r| r.revoked && r.id == i.id));
        let active = refs
            .iter()
            .find(|r| r.active)
            .and_then(|r| loaded.iter().find(|i| i.id == r.id).cloned());
        *self.write_issuers() = loaded;
        let Some(active) = active else {
            return Ok(false);
        };
        let mut current = self.active.write().unwrap_or_else(|p| p.into_inner());
        if current.id == active.id {
            return Ok(false);
        }
        *current = active;
        Ok(true)
    }

    fn load_issuer(&self, key_ref: &str) -> Result<IssuingCa, CaError> {
        let home = self.home.as_ref().ok_or_else(|| {
            CaError::InvalidCa("this CA was not loaded from a data directory".into())
        })?;
        let stem = match key_ref.strip_prefix("issuers/") {
            Some(id) if !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()) => id,
            _ => {
                return Err(CaError::Corrupt {
                    path: home.dir.clone(),
                    reason: format!(
                        "the database names an issuing CA at {key_ref:?} that this data \
                         directory does not hold (is this the data directory of another CA?)"
                    ),
                })
            }
        };
        let dir = home.dir.join(ISSUERS_DIR);
        let crt = dir.join(format!("{stem}.crt"));
        let text = fs::read_to_string(&crt).map_err(io_err(&crt))?;
        let der = super::layout::pem_certificates(&text, "issuing CA certificate")?
            .into_iter()
            .next()
            .ok_or_else(|| CaError::InvalidCa(format!("{} is empty", crt.display())))?;
        let key = load_key(
            &dir,
            &home.keys,
            (&format!("{stem}.key"), &format!("{stem}.pkcs11")),
            &der,
        )?;
        IssuingCa::new(der.clone(), key, vec![der, self.root.der.clone()])
    }

    fn write_issuers(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Arc<IssuingCa>>> {
        self.issuers.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where a CA loaded from a data directory lives, and how its keys are kept.
pub(super) struct Home {
    pub dir: std::path::PathBuf,
    pub keys: CaKeys,
}
