//! The certificate authority: CA keys on disk, certificate issuance and CRL signing.
//!
//! [`Ca`] is the handle the server holds: the root (with its key when devid made it), and the
//! issuing CAs ([`IssuingCa`]: key in memory or in a PKCS#11 token behind `signer::CaSigner`,
//! the one place that signs with it; chain; key identifier), all parsed once when the CA is
//! made, imported or loaded. One issuing CA is active: new certificates come from it. Every
//! issuing CA passes `IssuingCa::new`, which checks the rules in `rules` first (the list is at
//! [`Ca::import`]).
//!
//! - `layout`: the files under `<data_dir>/ca/`, their atomic installation, loading.
//! - `init`: first start, devid's own root and issuing CA.
//! - `import`: a company's issuing CA brought in.
//! - `keys` and [`keystore`]: key files at rest, optionally encrypted with a passphrase;
//!   `passphrase` re-encrypts them.
//! - `token` and `token_key`: keys in a PKCS#11 token instead ([`CaKeys::Token`]).
//! - [`sensor_kek`]: the key that seals sensors' keys in the database, kept beside the CA keys.
//! - `issue`: device and broker certificates; `crl`: the CRL.

use std::fmt;
use std::sync::{Arc, RwLock};

use time::OffsetDateTime;

mod crl;
mod error;
mod import;
mod init;
mod issue;
mod keys;
pub mod keystore;
mod layout;
mod passphrase;
mod rotate;
mod rules;
pub mod sensor_kek;
mod signer;
mod token;
mod token_key;

pub use crl::CrlEntry;
pub use error::CaError;
pub use init::CaOptions;
pub use issue::{issuer_crl_url, IssuedCert};
pub use layout::{CaKeys, CA_DIR};
pub use rotate::{IssuerRef, FIRST_KEY_REF};
pub use rules::authority_key_id;
pub use sensor_kek::SensorKek;
pub use token::TokenConfig;

use layout::{pem_cert, pem_chain};
use signer::{CaKey, CaSigner};

/// The certificate authority: the root, and the issuing CAs this process has loaded, one of
/// them active (the one that signs new certificates).
pub struct Ca {
    root: Root,
    /// The data directory's CA folder and how its keys are kept (for loading and making
    /// issuing CAs after start).
    home: Option<rotate::Home>,
    active: RwLock<Arc<IssuingCa>>,
    /// Every issuing CA loaded, the active one included, oldest first.
    issuers: RwLock<Vec<Arc<IssuingCa>>>,
}

/// The root certificate, and its key when this data directory keeps it (devid made the root);
/// the key signs the root's CRL (the ARL) and new issuing CAs.
struct Root {
    der: Vec<u8>,
    not_after: OffsetDateTime,
    key_id: Vec<u8>,
    signer: Option<CaSigner>,
}

/// One issuing CA: its certificate, chain and signer, parsed once.
pub struct IssuingCa {
    id: String,
    signer: CaSigner,
    /// The key identifier written as AKI into certificates and CRLs (the issuing CA's SKI).
    key_id: Vec<u8>,
    der: Vec<u8>,
    serial_hex: String,
    not_after: OffsetDateTime,
    chain_der: Vec<Vec<u8>>,
    chain_pem: String,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("active", &self.active().id)
            .field("issuers", &self.issuers().len())
            .field("root_key", &self.root.signer.is_some())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for IssuingCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuingCa")
            .field("id", &self.id)
            .field("serial", &self.serial_hex)
            .finish_non_exhaustive()
    }
}

impl IssuingCa {
    /// Its id: the first 8 bytes of its key identifier, lowercase hex. Names its CRL
    /// (`/v1/crl/issuing/<id>`) and its row in the store.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its certificate (DER).
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// Its certificate's serial, lowercase hex without leading zeros.
    pub fn serial_hex(&self) -> &str {
        &self.serial_hex
    }

    /// Its notAfter: nothing it signs outlives it.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Its key identifier (SKI; the AKI of everything it signs).
    pub fn key_id(&self) -> &[u8] {
        &self.key_id
    }

    /// Its chain as DER: itself first, root last.
    pub fn chain_der(&self) -> &[Vec<u8>] {
        &self.chain_der
    }

    /// Its chain as PEM: itself first, root last.
    pub fn chain_pem(&self) -> &str {
        &self.chain_pem
    }

    /// Builds it after checking every rule (see [`Ca::import`]) and issuing a probe
    /// certificate to prove that rcgen reproduces the issuer name and key identifier exactly.
    fn new(issuing_der: Vec<u8>, key: CaKey, chain_der: Vec<Vec<u8>>) -> Result<Self, CaError> {
        let issuing = rules::check_ca(&issuing_der, key.public_key_raw(), &chain_der)?;
        let signer = CaSigner::new(&issuing_der, key)?;
        let parsed = rules::parse_cert(&issuing_der).map_err(CaError::InvalidCa)?;
        let serial_hex = hex::encode(parsed.raw_serial())
            .trim_start_matches('0')
            .to_string();
        let not_after = parsed.validity().not_after.to_datetime();
        let ca = IssuingCa {
            id: devid_core::protocol::issuing_ca_id(&issuing.key_id),
            signer,
            key_id: issuing.key_id.clone(),
            serial_hex,
            not_after,
            chain_pem: pem_chain(&chain_der),
            chain_der,
            der: issuing_der,
        };
        ca.probe(&issuing)?;
        Ok(ca)
    }
}

impl Ca {
    /// The issuing CA that signs new certificates.
    pub fn active(&self) -> Arc<IssuingCa> {
        match self.active.read() {
            Ok(a) => a.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Every issuing CA this process has loaded, the active one included, oldest first.
    pub fn issuers(&self) -> Vec<Arc<IssuingCa>> {
        match self.issuers.read() {
            Ok(a) => a.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The loaded issuing CA with this id.
    pub fn issuer(&self, id: &str) -> Option<Arc<IssuingCa>> {
        self.issuers().into_iter().find(|i| i.id == id)
    }

    /// The active issuing CA's chain as PEM: issuing CA first, root last.
    pub fn chain_pem(&self) -> String {
        self.active().chain_pem.clone()
    }

    /// The active issuing CA's chain as DER: issuing CA first, root last.
    pub fn chain_der(&self) -> Vec<Vec<u8>> {
        self.active().chain_der.clone()
    }

    /// Whether a certificate with this notAfter (unix seconds) ends exactly with a loaded
    /// issuing CA: it was capped so as not to outlive its issuer.
    pub fn ends_with_its_issuer(&self, not_after: i64) -> bool {
        self.issuers()
            .iter()
            .any(|i| i.not_after.unix_timestamp() == not_after)
    }

    /// The root certificate (DER).
    pub fn root_der(&self) -> &[u8] {
        &self.root.der
    }

    /// The root certificate (PEM).
    pub fn root_pem(&self) -> String {
        pem_cert(&self.root.der)
    }

    /// The root's notAfter.
    pub fn root_not_after(&self) -> OffsetDateTime {
        self.root.not_after
    }

    /// The root's id, as an issuing CA's: the first 8 bytes of its key identifier, hex.
    pub fn root_id(&self) -> String {
        devid_core::protocol::issuing_ca_id(&self.root.key_id)
    }

    /// Whether this data directory keeps the root's key (so the root's CRL can be signed).
    pub fn has_root_key(&self) -> bool {
        self.root.signer.is_some()
    }

    /// The active issuing CA certificate (DER).
    pub fn issuing_der(&self) -> Vec<u8> {
        self.active().der.clone()
    }

    /// The active issuing CA's key identifier (its SKI; the AKI of everything it signs).
    pub fn issuing_key_id(&self) -> Vec<u8> {
        self.active().key_id.clone()
    }

    /// Builds the CA from its parts after checking every rule (see [`Ca::import`]); the root's
    /// key, when given, must match the root certificate.
    fn from_parts(
        issuing_der: Vec<u8>,
        key: CaKey,
        chain_der: Vec<Vec<u8>>,
        root_key: Option<CaKey>,
    ) -> Result<Ca, CaError> {
        let issuing = IssuingCa::new(issuing_der, key, chain_der)?;
        let root_der = issuing
            .chain_der
            .last()
            .cloned()
            .ok_or_else(|| CaError::InvalidCa("empty chain".into()))?;
        let parsed = rules::parse_cert(&root_der).map_err(CaError::InvalidCa)?;
        let not_after = parsed.validity().not_after.to_datetime();
        let key_id = rules::key_id(&parsed);
        let signer = match root_key {
            Some(key) => {
                if key.public_key_raw() != parsed.public_key().subject_public_key.data.as_ref() {
                    return Err(CaError::InvalidCa(
                        "the root key does not match the root certificate".into(),
                    ));
                }
                Some(CaSigner::new(&root_der, key)?)
            }
            None => None,
        };
        let issuing = Arc::new(issuing);
        Ok(Ca {
            home: None,
            root: Root {
                der: root_der,
                not_after,
                key_id,
                signer,
            },
            active: RwLock::new(issuing.clone()),
            issuers: RwLock::new(vec![issuing]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Ca>();
    }
}
