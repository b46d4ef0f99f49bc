//! Renewal over MQTT, the service's side: a broker relays a device's LDevID request (its CSR,
//! the serial of the certificate the connection authenticated with, the re-key proof) and
//! passes the answer on. Issuance is `crate::ldevid::issue_ldevid`, as for every other path.

use std::time::SystemTime;

use axum::extract::State;
use axum::Json;
use base64::Engine as _;
use devid_core::api::{RenewalAnswer, RenewalRequest};
use utoipa_axum::routes;

use crate::app::{ApiJson, AppState};
use crate::domain::renewal::{KeyProof, RequestKind};
use crate::domain::DomainError;
use crate::error::ApiError;
use crate::ldevid::{issue_ldevid, LdevidRequest};
use crate::openapi::JsonBodyProblems;
use crate::routes::{Guard, Routes, REPORTERS};
use crate::timefmt;

pub fn router() -> Routes {
    Routes::new().add(REPORTERS, routes!(relay_renewal))
}

/// Issue an LDevID for a device that asked over MQTT (renewal, re-key, or enrollment with its
/// IDevID).
///
/// The service checks the request as it would an EST re-enrollment by the device itself: the
/// certificate named must be the device's and acceptable, the CSR's subject and SAN must be
/// that certificate's, and a new key needs the re-key proof by that certificate's key (see
/// `docs/protocol.md`, "MQTT renewal"). A refusal is an answer (200 with `refusal`), which the
/// broker passes on to the device; a request the broker itself got wrong is a 4xx.
#[utoipa::path(
    post,
    path = "/v1/brokers/renewals",
    request_body = RenewalRequest,
    responses(
        (status = 200, description = "Issued, or refused with the reason", body = RenewalAnswer),
        JsonBodyProblems,
    )
)]
async fn relay_renewal(
    State(state): State<AppState>,
    guard: Guard,
    ApiJson(req): ApiJson<RenewalRequest>,
) -> Result<Json<RenewalAnswer>, ApiError> {
    let caller = guard.check()?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let csr_der = b64
        .decode(&req.csr)
        .map_err(|_| ApiError::unprocessable("csr: not base64"))?;
    let proof = req
        .rekey_proof
        .as_deref()
        .map(|p| b64.decode(p))
        .transpose()
        .map_err(|_| ApiError::unprocessable("rekey_proof: not base64"))?;
    let request = LdevidRequest {
        client_id: req.client_id,
        presented_serial: req.serial,
        csr_der,
        kind: RequestKind::Reenroll,
        proof: KeyProof::Signature(proof),
        actor: caller.actor(),
    };
    let answer = match issue_ldevid(&state, request, SystemTime::now()).await {
        Ok(issued) => RenewalAnswer {
            refusal: None,
            detail: None,
            chain: std::iter::once(&issued.der)
                .chain(issued.chain_der.iter())
                .map(|d| b64.encode(d))
                .collect(),
            serial: Some(issued.serial),
            not_after: Some(timefmt::rfc3339(issued.not_after)),
            outcome: Some(issued.outcome.as_str().to_string()),
        },
        Err(e) => {
            let detail = match &e.error {
                // The cause is logged by the issuance, never sent.
                DomainError::Internal(_) => "internal error".to_string(),
                other => other.to_string(),
            };
            RenewalAnswer {
                refusal: Some(e.refusal),
                detail: Some(detail),
                chain: Vec::new(),
                serial: None,
                not_after: None,
                outcome: None,
            }
        }
    };
    Ok(Json(answer))
}
