//! The device keeps its operational certificate (LDevID) fresh by itself.
//!
//! - [`engine`]: the decisions, sans-IO (when to renew, with which certificate, how long to
//!   back off), table-tested.
//! - [`files`]: the LDevID directory, written atomically and recoverable after a crash.
//! - [`csr`] and [`der`]: new keys and PKCS#10 requests with ring alone.
//! - [`pkcs7`]: the certificates of an EST certs-only answer.
//! - [`est`]: the EST client.
//! - [`mqtt`]: renewal over an open MQTT connection (`docs/protocol.md`, "MQTT renewal").
//! - [`Renewer`]: one attempt end to end over any [`RenewTransport`] (EST, or MQTT in band),
//!   step by step so that a restart between any two steps resumes where it stopped.

pub mod csr;
pub mod der;
pub mod engine;
pub mod est;
pub mod files;
pub mod mqtt;
pub mod pkcs7;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::rand::SecureRandom;
use rustls::pki_types::CertificateDer;

use engine::{Call, Credential, Decision, Inputs, Outcome, Policy, Unit};
use files::{cert_info, Pair, State, Store, StoreError};

/// Why a request to the server did not give a certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No answer, or a failure on the server's side: try again later.
    #[error("server unreachable: {0}")]
    Unreachable(String),
    /// The server asked to come back after this many seconds.
    #[error("server busy, retry after {0} s: {1}")]
    RetryAfter(u64, String),
    /// The server refused the request.
    #[error("refused: {0}")]
    Refused(String),
    /// The answer could not be used.
    #[error("bad answer: {0}")]
    Invalid(String),
}

/// How a CSR reaches the server: EST, or the MQTT connection.
pub trait RenewTransport {
    /// Sends `csr` (DER), authenticated by `auth`; the issued certificate and whatever chain
    /// came with it.
    fn request(
        &self,
        auth: &Pair,
        call: Call,
        csr: &[u8],
    ) -> impl Future<Output = Result<Vec<CertificateDer<'static>>, TransportError>> + Send;
    /// CA certificates to complete a chain the answer did not carry (none by default).
    fn ca_certs(
        &self,
    ) -> impl Future<Output = Result<Vec<CertificateDer<'static>>, TransportError>> + Send {
        async { Ok(Vec::new()) }
    }
}

/// The agent's renewal settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub policy: Policy,
    /// A new key for every renewal (default); `false` renews the current key (a first
    /// enrollment always makes one: the IDevID's key stays the birth key).
    pub rekey: bool,
    /// A shell command run after a new pair is installed (`sh -c`), with `DEVID_CERT`,
    /// `DEVID_KEY`, `DEVID_SERIAL`, `DEVID_NOT_AFTER` in its environment.
    pub exec: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            policy: Policy::default(),
            rekey: true,
            exec: None,
        }
    }
}

/// Why an attempt could not even be made or recorded (files), as opposed to a server's
/// answer, which is an [`Outcome`].
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Local(String),
}

/// What one attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub with: Credential,
    pub call: Call,
    pub outcome: Outcome,
    /// The installed certificate's serial (hex), on success.
    pub serial: Option<String>,
    /// The server's or the transport's words, on failure.
    pub error: Option<String>,
}

/// The renewal side of an agent: its LDevID directory and birth certificate.
pub struct Renewer {
    pub store: Store,
    pub idevid: Pair,
    pub settings: Settings,
    pub state: State,
    rng: ring::rand::SystemRandom,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Renewer {
    /// Opens the directory and puts right a switch a crash interrupted.
    pub fn open(
        dir: &std::path::Path,
        idevid: Pair,
        settings: Settings,
    ) -> Result<Self, RenewError> {
        let store = Store::open(dir)?;
        let mut state = store.load_state()?;
        if store.recover(&mut state)? {
            forget_session(&store);
        }
        Ok(Renewer {
            store,
            idevid,
            settings,
            state,
            rng: ring::rand::SystemRandom::new(),
        })
    }

    fn unit(&self) -> Unit {
        let mut b = [0u8; 8];
        // SystemRandom fails only without an OS source; the draw is then the middle.
        match self.rng.fill(&mut b) {
            Ok(()) => Unit::from_bits(u64::from_be_bytes(b)),
            Err(_) => Unit::new(0.5),
        }
    }

    /// The current LDevID, with its serial and validity.
    pub fn ldevid(&self) -> Result<Option<(Pair, String, engine::Validity)>, RenewError> {
        match self.store.current()? {
            Some(p) => {
                let (serial, v) = p.leaf_info().map_err(RenewError::Local)?;
                Ok(Some((p, serial, v)))
            }
            None => Ok(None),
        }
    }

    /// What to do at `now`. The due time of a new LDevID, and the first enrollment's time, are
    /// drawn here once and kept.
    pub fn plan(&mut self, now: u64) -> Result<Decision, RenewError> {
        let ldevid = self.ldevid()?;
        if ldevid.is_none() && self.state.enroll_at.is_none() {
            let jitter = self.settings.policy.enroll_jitter;
            self.state.enroll_at = Some(engine::enroll_at(now, jitter, self.unit()));
            self.store.save_state(&self.state)?;
        }
        if let Some((_, serial, v)) = &ldevid {
            if self.state.serial.as_deref() != Some(serial) || self.state.due.is_none() {
                // CAs backdate notBefore (devid by a minute): the lifetime that counts starts
                // when this device installed the certificate, if it did.
                let held = engine::Validity {
                    not_before: v
                        .not_before
                        .max(self.state.installed_at.unwrap_or(0))
                        .min(v.not_after),
                    not_after: v.not_after,
                };
                self.state.serial = Some(serial.clone());
                self.state.due = Some(engine::renew_at(held, self.unit()));
                self.store.save_state(&self.state)?;
            }
        }
        Ok(engine::decide(
            &self.settings.policy,
            &Inputs {
                now,
                ldevid: ldevid.map(|(_, _, v)| v),
                due: self.state.due,
                enroll_at: self.state.enroll_at,
                retry: self.state.retry,
            },
        ))
    }

    /// The pair to connect to the broker with, and which it is.
    pub fn connect_pair(&self, now: u64) -> Result<(Credential, Pair), RenewError> {
        match self.ldevid()? {
            Some((p, _, v)) if engine::connect_with(now, Some(v)) == Credential::Ldevid => {
                Ok((Credential::Ldevid, p))
            }
            _ => Ok((Credential::Idevid, self.idevid.clone())),
        }
    }

    /// One attempt, step by step: key (reused if a crash left one), CSR, request, stage,
    /// install, hook. A server's refusal or silence is an `Ok` report; the retry state is
    /// saved either way.
    pub async fn attempt<T: RenewTransport>(
        &mut self,
        transport: &T,
        with: Credential,
        call: Call,
    ) -> Result<Report, RenewError> {
        let current = self.store.current()?;
        let auth = match (with, &current) {
            (Credential::Ldevid, Some(p)) => p.clone(),
            _ => self.idevid.clone(),
        };
        let call = if matches!((with, &current), (Credential::Ldevid, Some(_))) {
            call
        } else {
            Call::Enroll
        };
        // Renewing the current key: only when asked, and never for a first enrollment.
        let key = match (&current, self.settings.rekey, with) {
            (Some(p), false, Credential::Ldevid) => p.key.clone_key(),
            _ => {
                let rng = &self.rng;
                self.store
                    .next_key(|| csr::generate_key(rng).map_err(|e| e.to_string()))?
            }
        };
        let csr = csr::build_csr(&key, &auth.chain[0], &self.rng)
            .map_err(|e| RenewError::Local(e.to_string()))?;
        let result = transport.request(&auth, call, &csr).await;
        let now = unix_now();
        let (outcome, error) = match result {
            Ok(certs) => match self.complete_chain(transport, &key, certs).await {
                Ok(chain) => {
                    if !self.settings.rekey && with == Credential::Ldevid {
                        // Same key: stage it as the next key so the switch is the same.
                        files::write_atomic(
                            &self.store.path("ldevid.next.key"),
                            csr::pem("PRIVATE KEY", key.secret_pkcs8_der()).as_bytes(),
                            0o600,
                        )?;
                    }
                    self.store.stage(&chain)?;
                    self.store.install(&mut self.state)?;
                    forget_session(&self.store);
                    self.run_hook().await;
                    let serial = cert_info(&chain[0]).ok().map(|(s, _)| s);
                    return Ok(Report {
                        with,
                        call,
                        outcome: Outcome::Issued,
                        serial,
                        error: None,
                    });
                }
                Err(e) => (Outcome::Unreachable, Some(e.to_string())),
            },
            Err(e @ TransportError::Refused(_)) => (Outcome::Refused(with), Some(e.to_string())),
            Err(e @ TransportError::RetryAfter(s, _)) => {
                (Outcome::RetryAfter(s), Some(e.to_string()))
            }
            Err(e) => (Outcome::Unreachable, Some(e.to_string())),
        };
        let u = self.unit();
        self.state.retry = engine::after(&self.settings.policy, self.state.retry, now, outcome, u);
        self.store.save_state(&self.state)?;
        Ok(Report {
            with,
            call,
            outcome,
            serial: None,
            error,
        })
    }

    /// The issued leaf (the certificate for `key`) followed by its issuers up to, not
    /// including, the root, from the answer, the transport's CA certificates if needed, and
    /// the chains at hand.
    async fn complete_chain<T: RenewTransport>(
        &self,
        transport: &T,
        key: &rustls::pki_types::PrivatePkcs8KeyDer<'_>,
        certs: Vec<CertificateDer<'static>>,
    ) -> Result<Vec<CertificateDer<'static>>, TransportError> {
        let public = csr::public_key(key).map_err(|e| TransportError::Invalid(e.to_string()))?;
        let leaf = certs
            .iter()
            .find(|c| spki_of(c).as_deref() == Some(public.as_slice()))
            .cloned()
            .ok_or_else(|| {
                TransportError::Invalid("no certificate in the answer is for our key".into())
            })?;
        let mut pool: Vec<CertificateDer<'static>> = certs;
        pool.extend(self.idevid.chain.iter().cloned());
        if let Ok(Some(p)) = self.store.current() {
            pool.extend(p.chain);
        }
        let mut chain = vec![leaf];
        if build_up(&mut chain, &pool) {
            return Ok(chain);
        }
        pool.extend(transport.ca_certs().await?);
        chain.truncate(1);
        build_up(&mut chain, &pool);
        Ok(chain)
    }

    /// Runs the `--exec` hook if a newly installed pair has not had it yet.
    pub async fn run_hook(&mut self) {
        if !self.state.hook_pending {
            return;
        }
        if let Some(cmd) = self.settings.exec.clone() {
            let (serial, not_after) = match self.store.current() {
                Ok(Some(p)) => p
                    .leaf_info()
                    .map(|(s, v)| (s, v.not_after.to_string()))
                    .unwrap_or_default(),
                _ => Default::default(),
            };
            let status = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(&cmd)
                .env("DEVID_CERT", self.store.cert_path())
                .env("DEVID_KEY", self.store.key_path())
                .env("DEVID_SERIAL", serial)
                .env("DEVID_NOT_AFTER", not_after)
                .status()
                .await;
            match status {
                Ok(s) if s.success() => {}
                Ok(s) => eprintln!("devid-agent: --exec {cmd:?} exited with {s}"),
                Err(e) => eprintln!("devid-agent: --exec {cmd:?}: {e}"),
            }
        }
        self.state.hook_pending = false;
        if let Err(e) = self.store.save_state(&self.state) {
            eprintln!("devid-agent: {e}");
        }
    }

    /// The current LDevID has connected to the broker: the previous pair is deleted.
    pub fn confirm(&mut self) -> Result<(), RenewError> {
        Ok(self.store.confirm(&mut self.state)?)
    }

    /// How long until `until` (Unix seconds) from `now`.
    pub fn wait(now: u64, until: u64) -> Duration {
        Duration::from_secs(until.saturating_sub(now))
    }

    /// The LDevID directory's current pair's paths.
    pub fn paths(&self) -> (PathBuf, PathBuf) {
        (self.store.cert_path(), self.store.key_path())
    }
}

/// A DEVID-1 resumption ticket belongs to the session of the certificate that made it: after a
/// switch the next connection is a full handshake with the new certificate.
fn forget_session(store: &Store) {
    crate::devid1::forget_ticket(&crate::devid1::ticket_path_for_key(&store.key_path()));
}

fn spki_of(c: &CertificateDer<'_>) -> Option<Vec<u8>> {
    let (_, x) = x509_parser::parse_x509_certificate(c.as_ref()).ok()?;
    Some(x.public_key().subject_public_key.data.to_vec())
}

/// Appends issuers from `pool` until a self-signed one (left out) or none; true if the last
/// certificate's issuer was found (the chain is complete up to the root).
fn build_up(chain: &mut Vec<CertificateDer<'static>>, pool: &[CertificateDer<'static>]) -> bool {
    for _ in 0..8 {
        let Some(last) = chain.last() else {
            return false;
        };
        let Ok((_, l)) = x509_parser::parse_x509_certificate(last.as_ref()) else {
            return false;
        };
        let issuer = l.issuer().as_raw().to_vec();
        let found = pool.iter().find(|c| {
            x509_parser::parse_x509_certificate(c.as_ref()).is_ok_and(|(_, x)| {
                x.subject().as_raw() == issuer.as_slice()
                    && l.verify_signature(Some(x.public_key())).is_ok()
            })
        });
        match found {
            None => return false,
            Some(c) => {
                let self_signed = x509_parser::parse_x509_certificate(c.as_ref())
                    .is_ok_and(|(_, x)| x.subject().as_raw() == x.issuer().as_raw());
                if self_signed {
                    return true;
                }
                if chain.iter().any(|x| x.as_ref() == c.as_ref()) {
                    return false;
                }
                chain.push(c.clone());
            }
        }
    }
    false
}

#[cfg(test)]
mod tests;
