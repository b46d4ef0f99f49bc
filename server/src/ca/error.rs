//! The CA's one error type.

use std::io;
use std::path::{Path, PathBuf};

use devid_core::profile::ProfileError;

/// Why a CA operation failed. Only [`CaError::Profile`] is caused by a client's input (a
/// hardware serial or DNS name that cannot go into a certificate); see
/// [`CaError::is_client_error`].
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("CA key {} is encrypted: set DEVID_CA_PASSPHRASE", path.display())]
    PassphraseRequired { path: PathBuf },
    #[error("wrong CA passphrase for {} (or the key file is corrupted)", path.display())]
    WrongPassphrase { path: PathBuf },
    #[error(
        "CA key {} is not encrypted but a passphrase was given; unset DEVID_CA_PASSPHRASE \
         (`devid-server change-passphrase` encrypts existing keys)",
        path.display()
    )]
    UnexpectedPassphrase { path: PathBuf },
    #[error("CA key {}: {reason}", path.display())]
    KeyFile { path: PathBuf, reason: String },
    #[error(
        "CA key {} has mode {mode:04o}; it must not be readable by group or others (chmod 600)",
        path.display()
    )]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("a CA already exists in {}; refusing to overwrite it", path.display())]
    AlreadyExists { path: PathBuf },
    #[error("CA files in {} are incomplete or unreadable: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// An imported CA (or a stored one) does not meet devid's rules.
    #[error("invalid CA: {0}")]
    InvalidCa(String),
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error("invalid CRL request: {0}")]
    InvalidCrl(String),
    #[error("signing failed: {0}")]
    Signing(String),
    #[error("the CA passphrase is empty")]
    EmptyPassphrase,
    #[error("the random number generator failed")]
    Rng,
    /// The PKCS#11 token holding the CA keys refused, is missing, or did not answer.
    #[error("PKCS#11 token: {0}")]
    Token(String),
    /// The root's key is not kept here (an imported CA): no root CRL, no new issuing CA.
    #[error("the root CA's key is not in this data directory (the CA was imported)")]
    NoRootKey,
}

impl CaError {
    /// True when the error comes from the request's content (show it to the client, 422);
    /// everything else is an internal error.
    pub fn is_client_error(&self) -> bool {
        matches!(self, CaError::Profile(e) if !matches!(e, ProfileError::Rng))
    }

    /// True when the CA's key is unreachable for now (its token is away): a retry may work
    /// (503), and the server keeps running.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, CaError::Token(_))
    }
}

/// `map_err` adapter: an I/O error on `path`.
pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `map_err` adapter: rcgen could not build or sign a certificate or CRL. A key in a token
/// that could not sign is [`CaError::Token`] (its signer logged why).
pub(super) fn signing(e: rcgen::Error) -> CaError {
    match e {
        rcgen::Error::RemoteKeyError => {
            CaError::Token("the token holding the CA key cannot sign now".into())
        }
        e => CaError::Signing(e.to_string()),
    }
}
