//! The one function that issues an LDevID (operational certificate), whoever asks: EST
//! simpleenroll with a client certificate, EST simplereenroll, renewal over MQTT (through a
//! broker). The rules are `domain::renewal`'s; the store writes the certificate, its key's
//! binding and the audit row, issuances that arrive together sharing one transaction
//! ([`LdevidQueue`]); every refusal is audited too.

use std::sync::Arc;
use std::time::SystemTime;

use devid_core::csr;
use devid_core::ldevid::Refusal;
use devid_core::profile::{DeviceIdentity, Profile};
use ring::rand::SystemRandom;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use crate::app::AppState;
use crate::domain::audit::{Audit, AuditOutcome};
use crate::domain::renewal::{self, Checked, KeyProof, LdevidError, Outcome, RequestKind};
use crate::domain::DomainError;
use crate::error::ApiError;
use crate::store::{
    Actor, AuditRecord, CertRow, LdevidAsk, LdevidFacts, LdevidPlan, NewCert, Store,
};

/// The audit action of every issuance and refusal (the detail says enrolled, renewed or
/// rekeyed).
pub const AUDIT_ACTION: &str = "ldevid.issue";

/// A request for an LDevID, as the caller authenticated it.
#[derive(Debug, Clone)]
pub struct LdevidRequest {
    /// The device the caller authenticated as (EST: its TLS client certificate's; MQTT: the
    /// broker's connection).
    pub client_id: String,
    /// Serial (lowercase hex) of the certificate that authenticated the caller: the device's
    /// IDevID or one of its LDevIDs.
    pub presented_serial: String,
    /// The PKCS#10 request, DER.
    pub csr_der: Vec<u8>,
    pub kind: RequestKind,
    /// How possession of the presented certificate's key was proven.
    pub proof: KeyProof,
    /// Who asks, for the audit rows (the device, or the broker relaying its request).
    pub actor: Actor,
}

/// An LDevID just issued.
#[derive(Debug, Clone)]
pub struct IssuedLdevid {
    pub der: Vec<u8>,
    pub pem: String,
    /// The issuer's chain, DER: issuing CA first, root last.
    pub chain_der: Vec<Vec<u8>>,
    pub chain_pem: String,
    /// Lowercase hex.
    pub serial: String,
    /// Unix seconds.
    pub not_after: i64,
    pub outcome: Outcome,
}

/// Issues an LDevID for `req` at `now`, or refuses it (the refusal's reason and a domain
/// error naming the rule). Every issuance and refusal is audited (action `ldevid.issue`,
/// target the ClientID).
pub async fn issue_ldevid(
    state: &AppState,
    req: LdevidRequest,
    now: SystemTime,
) -> Result<IssuedLdevid, LdevidError> {
    let audit = Audit::new(req.actor.clone(), AUDIT_ACTION, &req.client_id);
    let result = issue(state, &req, now).await;
    match &result {
        Ok(issued) => tracing::info!(
            client_id = %req.client_id, serial = %issued.serial,
            outcome = issued.outcome.as_str(), "LDevID issued"
        ),
        Err(e) => {
            tracing::info!(client_id = %req.client_id, refusal = %e.refusal, error = %e, "LDevID refused");
            audit.failed(&state.store, e).await;
        }
    }
    result
}

impl AuditOutcome for LdevidError {
    fn audit_outcome(&self) -> String {
        ApiError::from(self.error.clone()).audit_outcome()
    }
}

async fn issue(
    state: &AppState,
    req: &LdevidRequest,
    now: SystemTime,
) -> Result<IssuedLdevid, LdevidError> {
    let now = OffsetDateTime::from(now);
    let at = now.unix_timestamp();
    let checked_csr = csr::parse_csr_der(&req.csr_der).map_err(|e| {
        LdevidError::new(
            Refusal::Malformed,
            DomainError::invalid_field("csr", format!("csr: {e}")),
        )
    })?;
    let spki = checked_csr.spki_sha256();
    let presented = req.presented_serial.to_ascii_lowercase();
    let (ca, settings, req_owned) = (state.ca.clone(), state.profile.clone(), req.clone());
    let decide = move |facts: &LdevidFacts| {
        let req = req_owned;
        let checked = Checked {
            client_id: &req.client_id,
            kind: req.kind,
            proof: &req.proof,
            csr_der: &req.csr_der,
            csr_spki_sha256: spki,
            now: at,
        };
        let decision = renewal::decide(&checked, facts)?;
        let id = DeviceIdentity {
            client_id: &facts.device.client_id,
            hardware_serial: &facts.device.hardware_serial,
        };
        let profile = Profile::LDevId {
            lifetime: decision.settings.validity.to_std(),
        };
        let issued = ca
            .issue_device_profile(
                profile,
                checked_csr.public_key(),
                &id,
                &settings,
                now,
                &SystemRandom::new(),
            )
            .map_err(DomainError::from)?;
        let detail = format!(
            "{} {} (presented {})",
            decision.outcome.as_str(),
            issued.serial_hex,
            facts.presented.serial
        );
        let plan = LdevidPlan {
            cert: NewCert {
                serial: issued.serial_hex,
                fingerprint: issued.fingerprint_sha256,
                der: issued.der,
                not_before: issued.not_before.unix_timestamp(),
                not_after: issued.not_after.unix_timestamp(),
                csr_sha256: Some(hex::encode(checked_csr.csr_sha256())),
                spki_sha256: spki,
                profile: "ldevid".to_string(),
            },
            audit: AuditRecord {
                at,
                actor: req.actor.clone(),
                action: AUDIT_ACTION.to_string(),
                target: req.client_id.clone(),
                outcome: "ok".to_string(),
                detail: Some(detail),
            },
            bind_key: decision.bind_key,
        };
        Ok::<_, LdevidError>((plan, decision.outcome))
    };
    let ask = LdevidAsk {
        presented: presented.clone(),
        spki_sha256: spki,
        since: at - 3600,
        decide: Box::new(decide),
    };
    let (row, outcome) = state.ldevids.issue(ask).await.map_err(|e| match e.error {
        // The presented serial is unknown.
        DomainError::NotFound(_) => LdevidError::new(
            Refusal::NotAuthorized,
            DomainError::forbidden(format!("no certificate has serial {presented}")),
        ),
        _ => e,
    })?;
    let pem = pem_cert(&row.der);
    Ok(IssuedLdevid {
        pem,
        chain_der: state.ca.chain_der().to_vec(),
        chain_pem: state.ca.chain_pem().to_string(),
        serial: row.serial,
        not_after: row.not_after,
        der: row.der,
        outcome,
    })
}

/// Most issuances stored in one shared transaction.
const MAX_GROUP: usize = 128;
/// Committers sharing the queue on PostgreSQL (each locks its devices in the order of their
/// ids, so that they cannot wait on each other in a cycle).
const POSTGRES_COMMITTERS: usize = 2;

type Ask = LdevidAsk<LdevidError, Outcome>;
type Reply = Result<(CertRow, Outcome), LdevidError>;

struct Job {
    ask: Ask,
    reply: oneshot::Sender<Reply>,
}

/// LDevID issuances waiting to be stored: concurrent requests share one transaction and one
/// commit (`Store::issue_ldevids`), as single registrations do in the registry, instead of
/// paying a commit (and an fsync) each. Each keeps its own rules and its own result: a refusal
/// or a failed write of one leaves the others alone. Nothing is answered before its commit.
#[derive(Clone)]
pub struct LdevidQueue {
    jobs: mpsc::Sender<Job>,
}

impl LdevidQueue {
    /// Starts the committers: on SQLite one, on a thread of its own (see
    /// `registry::spawn_on_own_thread`); on PostgreSQL [`POSTGRES_COMMITTERS`] on the current
    /// runtime.
    pub fn start(store: Store) -> Self {
        let (jobs, rx) = mpsc::channel(4096);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        if store.is_postgres() {
            for _ in 0..POSTGRES_COMMITTERS {
                tokio::spawn(committer(store.clone(), rx.clone()));
            }
        } else {
            crate::registry::spawn_on_own_thread("devid-ldevids", move || {
                committer(store.clone(), rx.clone())
            });
        }
        LdevidQueue { jobs }
    }

    async fn issue(&self, ask: Ask) -> Reply {
        let gone = || {
            LdevidError::new(
                Refusal::Unavailable,
                DomainError::Unavailable("the LDevID committer has stopped".into()),
            )
        };
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { ask, reply })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// Stores whatever issuances are waiting, in one transaction per round.
async fn committer(store: Store, rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>) {
    loop {
        let jobs = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else { break };
            let mut jobs = vec![first];
            while jobs.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            jobs
        };
        let (asks, replies): (Vec<Ask>, Vec<_>) =
            jobs.into_iter().map(|j| (j.ask, j.reply)).unzip();
        match store.issue_ldevids(asks).await {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, items = replies.len(), "LDevID transaction failed");
                let error = LdevidError::from(e);
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}

fn pem_cert(der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}
