//! The certificate authority: CA keys on disk, certificate issuance and CRL signing.
//!
//! [`Ca`] is the handle the server holds: the issuing key (in memory, or in a PKCS#11 token)
//! behind `signer::CaSigner` (the one place that signs with it), the chain, and the issuing CA's key identifier, all
//! parsed once when the CA is made, imported or loaded, so issuance works on `&self` without
//! locks. Every way to a `Ca` passes `Ca::from_parts`, which checks the rules in `rules` first
//! (the list is at [`Ca::import`]).
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

mod crl;
mod error;
mod import;
mod init;
mod issue;
mod keys;
pub mod keystore;
mod layout;
mod passphrase;
mod rules;
pub mod sensor_kek;
mod signer;
mod token;
mod token_key;

pub use crl::CrlEntry;
pub use error::CaError;
pub use issue::IssuedCert;
pub use layout::{CaKeys, CA_DIR};
pub use sensor_kek::SensorKek;
pub use token::TokenConfig;

use layout::{pem_cert, pem_chain};
use signer::{CaKey, CaSigner};

/// The certificate authority: the issuing key in memory, the chain, and the pre-parsed issuer.
pub struct Ca {
    signer: CaSigner,
    /// The key identifier written as AKI into certificates and CRLs (the issuing CA's SKI).
    issuing_key_id: Vec<u8>,
    issuing_der: Vec<u8>,
    root_der: Vec<u8>,
    chain_der: Vec<Vec<u8>>,
    chain_pem: String,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("issuing_key_id", &hex::encode(&self.issuing_key_id))
            .field("chain_len", &self.chain_der.len())
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// The chain as PEM: issuing CA first, root last.
    pub fn chain_pem(&self) -> &str {
        &self.chain_pem
    }

    /// The chain as DER: issuing CA first, root last.
    pub fn chain_der(&self) -> &[Vec<u8>] {
        &self.chain_der
    }

    /// The root certificate (DER).
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// The root certificate (PEM).
    pub fn root_pem(&self) -> String {
        pem_cert(&self.root_der)
    }

    /// The issuing CA certificate (DER).
    pub fn issuing_der(&self) -> &[u8] {
        &self.issuing_der
    }

    /// The issuing CA's key identifier (its SKI; the AKI of everything it signs).
    pub fn issuing_key_id(&self) -> &[u8] {
        &self.issuing_key_id
    }

    /// Builds the CA from its parts after checking every rule (see [`Ca::import`]) and issuing
    /// a probe certificate to prove that rcgen reproduces the issuer name and key identifier
    /// exactly.
    fn from_parts(
        issuing_der: Vec<u8>,
        key: CaKey,
        chain_der: Vec<Vec<u8>>,
    ) -> Result<Ca, CaError> {
        let issuing = rules::check_ca(&issuing_der, key.public_key_raw(), &chain_der)?;
        let signer = CaSigner::new(&issuing_der, key)?;
        let root_der = chain_der
            .last()
            .cloned()
            .ok_or_else(|| CaError::InvalidCa("empty chain".into()))?;
        let ca = Ca {
            signer,
            issuing_key_id: issuing.key_id.clone(),
            issuing_der,
            root_der,
            chain_pem: pem_chain(&chain_der),
            chain_der,
        };
        ca.probe(&issuing)?;
        Ok(ca)
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
