//! The one function that issues an LDevID (operational certificate), whoever asks: EST
//! simpleenroll with a client certificate, EST simplereenroll, renewal over MQTT (through a
//! broker). The rules are `domain::renewal`'s; the store writes the certificate, its key's
//! binding and the audit row in one transaction; every refusal is audited too.

use std::time::SystemTime;

use devid_core::csr;
use devid_core::ldevid::Refusal;
use devid_core::profile::{DeviceIdentity, Profile};
use ring::rand::SystemRandom;
use time::OffsetDateTime;

use crate::app::AppState;
use crate::domain::audit::{Audit, AuditOutcome};
use crate::domain::renewal::{self, Checked, KeyProof, LdevidError, Outcome, RequestKind};
use crate::domain::DomainError;
use crate::error::ApiError;
use crate::store::{Actor, AuditRecord, LdevidPlan, NewCert};

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
    let checked = Checked {
        client_id: &req.client_id,
        kind: req.kind,
        proof: &req.proof,
        csr_der: &req.csr_der,
        csr_spki_sha256: spki,
        now: at,
    };
    let presented = req.presented_serial.to_ascii_lowercase();
    let rng = SystemRandom::new();
    let mut outcome = Outcome::Renewed;
    let row = state
        .store
        .issue_ldevid(&presented, &spki, at - 3600, |facts| {
            let decision = renewal::decide(&checked, facts)?;
            outcome = decision.outcome;
            let id = DeviceIdentity {
                client_id: &facts.device.client_id,
                hardware_serial: &facts.device.hardware_serial,
            };
            let profile = Profile::LDevId {
                lifetime: decision.settings.validity.to_std(),
            };
            let issued = state
                .ca
                .issue_device_profile(
                    profile,
                    checked_csr.public_key(),
                    &id,
                    &state.profile,
                    now,
                    &rng,
                )
                .map_err(DomainError::from)?;
            let detail = format!(
                "{} {} (presented {})",
                decision.outcome.as_str(),
                issued.serial_hex,
                facts.presented.serial
            );
            Ok::<_, LdevidError>(LdevidPlan {
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
            })
        })
        .await
        .map_err(|e: LdevidError| match e.error {
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

fn pem_cert(der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}
