//! The LDevID on disk, written so that a crash at any point leaves a usable pair and never
//! loses a key.
//!
//! In the LDevID directory:
//! - `ldevid.crt` / `ldevid.key`: the current pair (chain leaf first; PKCS#8, 0600);
//! - `ldevid.next.key`: a key made for a renewal, written (and synced) before its CSR leaves the
//!   device, and reused by every retry until a certificate for it is installed;
//! - `ldevid.next.crt`: the certificate issued for it, written before the switch;
//! - `ldevid.prev.crt` / `ldevid.prev.key`: the pair before the last switch, kept until the new
//!   one has been used to connect once;
//! - `renew.state`: the schedule, the retry state and the phase of a switch (JSON).
//!
//! Every file is written by [`write_atomic`]: a temporary file in the same directory, fsync,
//! rename over the target, fsync of the directory. The switch ([`Store::install`]) copies the
//! current pair to `prev` first, then records `installing` in the state file, then overwrites
//! the current pair from `next`; a restart in the middle finds `installing` and finishes the
//! copy from `next`, which is still there ([`Store::recover`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};

use super::csr::{pem, public_key};
use super::engine::{Retry, Validity};
use crate::credentials::{load_certs, load_key};

/// A file operation that failed, with the path.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    Bad { path: PathBuf, msg: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `bytes` to `path` so that a reader (or a restart) sees the old content or the new,
/// never a mix: temp file, fsync, rename, fsync of the directory. `mode` is the file's mode.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.unwrap_or_default(),
        std::process::id()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io(path))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Where a switch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// No switch under way.
    #[default]
    Idle,
    /// `prev` holds the old pair; the current pair is being overwritten from `next`.
    Installing,
    /// The new pair is current; `prev` is kept until it has connected once.
    Unconfirmed,
}

/// The contents of `renew.state`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct State {
    /// The serial (hex) of the LDevID `due` was drawn for.
    #[serde(default)]
    pub serial: Option<String>,
    /// When that LDevID is due for renewal (Unix seconds), drawn once per certificate so a
    /// restart does not draw again.
    #[serde(default)]
    pub due: Option<u64>,
    /// When the first enrollment is due (Unix seconds), drawn once at the first start without
    /// an LDevID so a restart neither draws again nor starts the wait over.
    #[serde(default)]
    pub enroll_at: Option<u64>,
    #[serde(default)]
    pub retry: Retry,
    #[serde(default)]
    pub phase: Phase,
    /// The `--exec` hook has not run yet for the installed pair.
    #[serde(default)]
    pub hook_pending: bool,
    /// When the current pair was installed (Unix seconds): its lifetime on this device starts
    /// there, not at a notBefore the CA backdated.
    #[serde(default)]
    pub installed_at: Option<u64>,
}

/// A certificate chain and its key.
pub struct Pair {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivatePkcs8KeyDer<'static>,
}

impl Clone for Pair {
    fn clone(&self) -> Self {
        Pair {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Pair {
    /// The leaf's serial (lowercase hex) and validity.
    pub fn leaf_info(&self) -> Result<(String, Validity), String> {
        cert_info(&self.chain[0])
    }
}

/// Serial (lowercase hex, no leading zero bytes) and validity of a certificate.
pub fn cert_info(cert: &CertificateDer<'_>) -> Result<(String, Validity), String> {
    let (_, c) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| format!("cannot parse the certificate: {e}"))?;
    let v = c.validity();
    let secs = |t: &x509_parser::time::ASN1Time| t.timestamp().max(0) as u64;
    Ok((
        hex::encode(c.raw_serial())
            .trim_start_matches("00")
            .to_owned(),
        Validity {
            not_before: secs(&v.not_before),
            not_after: secs(&v.not_after),
        },
    ))
}

/// The LDevID directory.
pub struct Store {
    dir: PathBuf,
}

const CERT: &str = "ldevid.crt";
const KEY: &str = "ldevid.key";
const NEXT_CERT: &str = "ldevid.next.crt";
const NEXT_KEY: &str = "ldevid.next.key";
const PREV_CERT: &str = "ldevid.prev.crt";
const PREV_KEY: &str = "ldevid.prev.key";
const STATE: &str = "renew.state";

impl Store {
    /// Opens (and creates, 0700) the directory.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        use std::os::unix::fs::DirBuilderExt;
        if !dir.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io(dir))?;
        }
        Ok(Store {
            dir: dir.to_owned(),
        })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    pub fn cert_path(&self) -> PathBuf {
        self.path(CERT)
    }
    pub fn key_path(&self) -> PathBuf {
        self.path(KEY)
    }

    pub fn load_state(&self) -> Result<State, StoreError> {
        let p = self.path(STATE);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| StoreError::Bad {
                path: p,
                msg: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(io(&p)(e)),
        }
    }

    pub fn save_state(&self, s: &State) -> Result<(), StoreError> {
        let p = self.path(STATE);
        let bytes = serde_json::to_vec_pretty(s).map_err(|e| StoreError::Bad {
            path: p.clone(),
            msg: e.to_string(),
        })?;
        write_atomic(&p, &bytes, 0o600)
    }

    fn load_pair(&self, cert: &str, key: &str) -> Result<Option<Pair>, StoreError> {
        let (c, k) = (self.path(cert), self.path(key));
        if !c.exists() || !k.exists() {
            return Ok(None);
        }
        let chain = load_certs(&c).map_err(|e| bad(&c, e))?;
        let key = load_key(&k).map_err(|e| bad(&k, e))?;
        Ok(Some(Pair { chain, key }))
    }

    /// The current LDevID, if any (the key must match the certificate).
    pub fn current(&self) -> Result<Option<Pair>, StoreError> {
        let pair = self.load_pair(CERT, KEY)?;
        if let Some(p) = &pair {
            check_match(&p.chain[0], &p.key, &self.path(KEY))?;
        }
        Ok(pair)
    }

    /// The pair before the last switch, while it is kept.
    pub fn previous(&self) -> Result<Option<Pair>, StoreError> {
        self.load_pair(PREV_CERT, PREV_KEY)
    }

    /// The key for the renewal under way: the one a crashed attempt left, else a new one made
    /// by `make` and synced to disk before it is returned.
    pub fn next_key(
        &self,
        make: impl FnOnce() -> Result<PrivatePkcs8KeyDer<'static>, String>,
    ) -> Result<PrivatePkcs8KeyDer<'static>, StoreError> {
        let p = self.path(NEXT_KEY);
        if p.exists() {
            return load_key(&p).map_err(|e| bad(&p, e));
        }
        let key = make().map_err(|msg| StoreError::Bad {
            path: p.clone(),
            msg,
        })?;
        write_atomic(
            &p,
            pem("PRIVATE KEY", key.secret_pkcs8_der()).as_bytes(),
            0o600,
        )?;
        Ok(key)
    }

    /// Keeps the issued chain beside its key (`ldevid.next.crt`); the chain's leaf must
    /// certify the pending key.
    pub fn stage(&self, chain: &[CertificateDer<'static>]) -> Result<(), StoreError> {
        let kp = self.path(NEXT_KEY);
        let key = load_key(&kp).map_err(|e| bad(&kp, e))?;
        let leaf = chain.first().ok_or_else(|| StoreError::Bad {
            path: self.path(NEXT_CERT),
            msg: "no certificate was issued".into(),
        })?;
        check_match(leaf, &key, &self.path(NEXT_CERT))?;
        write_atomic(&self.path(NEXT_CERT), chain_pem(chain).as_bytes(), 0o644)
    }

    /// Makes the staged pair current, keeping the old one as `prev`; `state` is updated and
    /// saved (phase `unconfirmed`, the hook pending, the retry state cleared).
    pub fn install(&self, state: &mut State) -> Result<(), StoreError> {
        if state.phase != Phase::Installing {
            // Both halves of the old pair to prev before anything current is touched.
            if let Some(old) = self.load_pair(CERT, KEY)? {
                write_atomic(&self.path(PREV_KEY), &pem_key(&old.key), 0o600)?;
                write_atomic(
                    &self.path(PREV_CERT),
                    chain_pem(&old.chain).as_bytes(),
                    0o644,
                )?;
            }
            state.phase = Phase::Installing;
            self.save_state(state)?;
        }
        self.finish_install(state)
    }

    /// The second half of [`Store::install`], which a restart repeats.
    fn finish_install(&self, state: &mut State) -> Result<(), StoreError> {
        let (nc, nk) = (self.path(NEXT_CERT), self.path(NEXT_KEY));
        if nc.exists() && nk.exists() {
            let key = std::fs::read(&nk).map_err(io(&nk))?;
            let cert = std::fs::read(&nc).map_err(io(&nc))?;
            write_atomic(&self.path(KEY), &key, 0o600)?;
            write_atomic(&self.path(CERT), &cert, 0o644)?;
        }
        // `next` goes before the phase moves on: a restart that still reads `installing` finds
        // no `next` and only moves the phase; one that reads `unconfirmed` finds nothing to redo.
        remove(&nc)?;
        remove(&nk)?;
        sync_dir(&self.dir)?;
        state.phase = Phase::Unconfirmed;
        state.hook_pending = true;
        state.retry = Retry::default();
        state.serial = None;
        state.due = None;
        state.installed_at = Some(super::unix_now());
        self.save_state(state)
    }

    /// Puts an interrupted switch right: finishes an install that was under way, and installs a
    /// staged certificate whose switch had not begun.
    pub fn recover(&self, state: &mut State) -> Result<bool, StoreError> {
        match state.phase {
            Phase::Installing => {
                self.finish_install(state)?;
                Ok(true)
            }
            _ if self.path(NEXT_CERT).exists() && self.path(NEXT_KEY).exists() => {
                self.install(state)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The new pair has connected: the old one goes.
    pub fn confirm(&self, state: &mut State) -> Result<(), StoreError> {
        if state.phase == Phase::Unconfirmed {
            remove(&self.path(PREV_CERT))?;
            remove(&self.path(PREV_KEY))?;
            sync_dir(&self.dir)?;
            state.phase = Phase::Idle;
            self.save_state(state)?;
        }
        Ok(())
    }
}

fn remove(p: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(p)(e)),
    }
}

fn bad(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Bad {
        path: path.to_owned(),
        msg: e.to_string(),
    }
}

fn check_match(
    leaf: &CertificateDer<'_>,
    key: &PrivatePkcs8KeyDer<'_>,
    path: &Path,
) -> Result<(), StoreError> {
    let (_, c) = x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| bad(path, e))?;
    let public = public_key(key).map_err(|e| bad(path, e))?;
    if c.public_key().subject_public_key.data.as_ref() != public.as_slice() {
        return Err(bad(path, "the certificate does not certify the key"));
    }
    Ok(())
}

/// PEM of a chain, leaf first.
pub fn chain_pem(chain: &[CertificateDer<'_>]) -> String {
    chain
        .iter()
        .map(|c| pem("CERTIFICATE", c.as_ref()))
        .collect()
}

fn pem_key(key: &PrivatePkcs8KeyDer<'_>) -> Vec<u8> {
    pem("PRIVATE KEY", key.secret_pkcs8_der()).into_bytes()
}
