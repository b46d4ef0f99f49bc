//! The rules of LDevID issuance (enroll, renew, re-key), pure: [`decide`] takes what the store
//! read under the device's lock and says whether a certificate is issued and what kind.
//!
//! - A revoked device never gets a certificate again; a suspended one gets none while it is.
//! - The certificate presented must be the device's and good (not revoked, not on hold).
//! - An IDevID (birth certificate) may always enroll and renew. An LDevID must be within its
//!   validity, or, to re-enroll only, expired less than the model's `renewal_grace` ago.
//! - Re-enroll (RFC 7030 4.2.2): the CSR's subject and SAN must equal the presented
//!   certificate's; what differs is named.
//! - A key other than the presented certificate's is a re-key: outside TLS (MQTT renewal) it
//!   needs a signature by the presented certificate's key over the CSR
//!   (`devid_core::ldevid::rekey_proof_message`); it must not belong to another device nor
//!   have been revoked for keyCompromise (the `device_keys` rules).
//! - Rate limit: at most [`RATE_LIMIT`] LDevIDs per device within [`rate_window_secs`] (an
//!   hour, or a quarter of the model's LDevID validity when that is shorter), counted in the
//!   store under the device's row lock, so it holds across PostgreSQL processes.

use devid_core::api::{CertState, DeviceState};
use devid_core::ldevid::{self, Names, Refusal};
use devid_core::LdevidValidity;

use super::policy::LdevidSettings;
use super::DomainError;
use crate::store::LdevidFacts;

/// Most LDevIDs one device gets within [`rate_window_secs`].
pub const RATE_LIMIT: usize = 5;

/// The rate limit's window: one hour, or a quarter of the LDevID validity when shorter (a
/// device renewing on schedule asks once per about two thirds of the validity), at least 1 s.
pub fn rate_window_secs(validity: LdevidValidity) -> i64 {
    let quarter = i64::try_from(validity.as_secs() / 4).unwrap_or(i64::MAX);
    quarter.clamp(1, 3600)
}

/// Which EST operation (or its MQTT equivalent) is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// simpleenroll with a client certificate: the CSR's names are not compared.
    Enroll,
    /// simplereenroll: the CSR's subject and SAN must equal the presented certificate's, and an
    /// LDevID within the renewal grace is accepted.
    Reenroll,
}

/// How the caller proved possession of the presented certificate's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyProof {
    /// In its TLS handshake (EST with a client certificate): a new key needs nothing more.
    TlsHandshake,
    /// Through a broker (MQTT renewal): a new key needs this signature (DER ECDSA) by the
    /// presented certificate's key over `rekey_proof_message(csr)`.
    Signature(Option<Vec<u8>>),
}

/// What was issued, relative to the certificate presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The first LDevID on the strength of the IDevID (whatever the key).
    Enrolled,
    /// Same key as the presented LDevID.
    Renewed,
    /// A new key.
    Rekeyed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Enrolled => "enrolled",
            Outcome::Renewed => "renewed",
            Outcome::Rekeyed => "rekeyed",
        }
    }
}

/// A refused issuance: the reason (for MQTT reason codes and EST statuses) and the domain
/// error (its public message names the rule).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct LdevidError {
    pub refusal: Refusal,
    pub error: DomainError,
}

impl LdevidError {
    pub fn new(refusal: Refusal, error: DomainError) -> Self {
        LdevidError { refusal, error }
    }

    fn forbidden(refusal: Refusal, detail: String) -> Self {
        LdevidError::new(refusal, DomainError::forbidden(detail))
    }
}

impl From<LdevidError> for DomainError {
    fn from(e: LdevidError) -> Self {
        e.error
    }
}

impl From<DomainError> for LdevidError {
    fn from(error: DomainError) -> Self {
        let refusal = match &error {
            DomainError::Unavailable(_) => Refusal::Unavailable,
            DomainError::Invalid { .. } => Refusal::Malformed,
            DomainError::NotFound(_) | DomainError::Unauthenticated => Refusal::NotAuthorized,
            DomainError::Forbidden { .. } => Refusal::NotAuthorized,
            DomainError::Mismatch(_) => Refusal::SubjectMismatch,
            DomainError::RateLimited(_) => Refusal::RateLimited,
            _ => Refusal::Internal,
        };
        LdevidError { refusal, error }
    }
}

impl From<crate::store::StoreError> for LdevidError {
    fn from(e: crate::store::StoreError) -> Self {
        DomainError::from(e).into()
    }
}

/// The request as the rules see it (the CSR already parsed and its signature checked).
#[derive(Debug, Clone)]
pub struct Checked<'a> {
    /// The ClientID the caller authenticated as.
    pub client_id: &'a str,
    pub kind: RequestKind,
    pub proof: &'a KeyProof,
    pub csr_der: &'a [u8],
    /// SHA-256 of the CSR's SubjectPublicKeyInfo.
    pub csr_spki_sha256: [u8; 32],
    /// Unix seconds.
    pub now: i64,
}

/// The decision: what to issue, and whether the key is new to the device's `device_keys`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    pub settings: LdevidSettings,
    pub bind_key: bool,
}

/// The rules, in the order a refusal is reported (see the module's documentation).
pub fn decide(req: &Checked<'_>, facts: &LdevidFacts) -> Result<Decision, LdevidError> {
    let dev = &facts.device;
    let cert = &facts.presented;
    let settings = LdevidSettings::of(facts.model.as_ref());
    if dev.client_id != req.client_id {
        return Err(LdevidError::forbidden(
            Refusal::NotAuthorized,
            format!(
                "certificate {} is not a certificate of device {}",
                cert.serial, req.client_id
            ),
        ));
    }
    match dev.status {
        DeviceState::Revoked => {
            return Err(LdevidError::forbidden(
                Refusal::DeviceRevoked,
                format!(
                    "device {} is revoked: it gets no certificate again",
                    dev.client_id
                ),
            ))
        }
        DeviceState::Suspended => {
            return Err(LdevidError::forbidden(
                Refusal::DeviceSuspended,
                format!(
                    "device {} is suspended: no certificate while it is",
                    dev.client_id
                ),
            ))
        }
        DeviceState::Active => {}
    }
    if cert.status != CertState::Good {
        return Err(LdevidError::forbidden(
            Refusal::CertificateNotAccepted,
            format!("certificate {} is {}", cert.serial, cert.status),
        ));
    }
    let is_ldevid = cert.profile == "ldevid";
    if is_ldevid {
        let admitted = match req.kind {
            RequestKind::Enroll => req.now <= cert.not_after,
            RequestKind::Reenroll => settings.renewal_grace.admits(cert.not_after, req.now),
        };
        if !admitted {
            return Err(LdevidError::forbidden(
                Refusal::CertificateNotAccepted,
                format!(
                    "LDevID {} expired at {} (unix time); the renewal grace of its model is {}",
                    cert.serial, cert.not_after, settings.renewal_grace
                ),
            ));
        }
    }
    let window = rate_window_secs(settings.validity);
    let recent = facts
        .recent
        .iter()
        .filter(|t| **t > req.now - window)
        .count();
    if recent >= RATE_LIMIT {
        return Err(LdevidError::new(
            Refusal::RateLimited,
            DomainError::RateLimited(format!(
                "device {} got {recent} certificates in the last {window} s; at most \
                 {RATE_LIMIT} are issued per device in that time",
                dev.client_id
            )),
        ));
    }
    if req.kind == RequestKind::Reenroll {
        same_names(req.csr_der, &cert.der)?;
    }
    let presented_spki = devid_core::csr::certificate_spki_sha256(&cert.der)
        .ok_or_else(|| DomainError::internal("a stored certificate does not parse"))?;
    let new_key = presented_spki != req.csr_spki_sha256;
    if new_key {
        if let KeyProof::Signature(sig) = req.proof {
            let ok = sig
                .as_deref()
                .is_some_and(|s| ldevid::verify_rekey_proof(&cert.der, req.csr_der, s));
            if !ok {
                let detail = match sig {
                    None => "the CSR's key is not the certificate's: a re-key proof is required",
                    Some(_) => "the re-key proof does not verify under the certificate's key",
                };
                return Err(LdevidError::forbidden(
                    Refusal::ProofInvalid,
                    detail.to_string(),
                ));
            }
        }
    }
    match facts.key {
        Some(k) if k.device_id != dev.id => {
            return Err(LdevidError::new(
                Refusal::KeyRefused,
                DomainError::conflict("the CSR's key belongs to another device"),
            ))
        }
        Some(k) if k.compromised => {
            return Err(LdevidError::new(
                Refusal::KeyRefused,
                DomainError::conflict(
                    "the CSR's key was revoked for keyCompromise: it is never certified again",
                ),
            ))
        }
        _ => {}
    }
    let outcome = match (is_ldevid, new_key) {
        (false, _) => Outcome::Enrolled,
        (true, false) => Outcome::Renewed,
        (true, true) => Outcome::Rekeyed,
    };
    Ok(Decision {
        outcome,
        settings,
        bind_key: facts.key.is_none(),
    })
}

/// RFC 7030 4.2.2: the CSR's subject and SAN equal the certificate's; a 400 names what differs.
fn same_names(csr_der: &[u8], cert_der: &[u8]) -> Result<(), LdevidError> {
    let csr = Names::of_csr(csr_der).ok_or_else(|| {
        LdevidError::new(
            Refusal::Malformed,
            DomainError::invalid_field("csr", "csr: not a DER PKCS#10 request"),
        )
    })?;
    let cert = Names::of_certificate(cert_der)
        .ok_or_else(|| DomainError::internal("a stored certificate does not parse"))?;
    let mismatch =
        |detail: String| LdevidError::new(Refusal::SubjectMismatch, DomainError::Mismatch(detail));
    if csr.subject != cert.subject {
        return Err(mismatch(format!(
            "the CSR's subject ({}) differs from the certificate's ({})",
            csr.subject_text(),
            cert.subject_text()
        )));
    }
    if csr.san != cert.san {
        return Err(mismatch(format!(
            "the CSR's subjectAltName ({}) differs from the certificate's ({})",
            csr.san_text(),
            cert.san_text()
        )));
    }
    Ok(())
}
