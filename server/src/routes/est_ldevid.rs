//! EST enrollment and re-enrollment authenticated by a device's certificate: the request goes
//! to the one LDevID issuance function, which applies every rule and audits.

use std::time::SystemTime;

use axum::response::Response;

use super::est::{base64_answer, EstError, Kind, Presented, PKCS7_CERTS_ONLY};
use crate::app::AppState;
use crate::domain::renewal::{KeyProof, RequestKind};
use crate::error::ApiError;
use crate::est::certs_only;
use crate::ldevid::{issue_ldevid, LdevidRequest};
use crate::store::Actor;

/// Issues an LDevID for the device whose certificate was presented.
pub async fn issue(
    state: &AppState,
    presented: &Presented,
    csr_der: Vec<u8>,
    kind: Kind,
) -> Result<Response, EstError> {
    let req = LdevidRequest {
        client_id: presented.client_id.clone(),
        presented_serial: presented.serial_hex.clone(),
        csr_der,
        kind: match kind {
            Kind::Enroll => RequestKind::Enroll,
            Kind::Reenroll => RequestKind::Reenroll,
        },
        // The TLS handshake proved possession of the presented certificate's key.
        proof: KeyProof::TlsHandshake,
        actor: Actor {
            id: format!("cert:{}", presented.serial_hex),
            name: presented.client_id.clone(),
        },
    };
    let issued = issue_ldevid(state, req, SystemTime::now())
        .await
        .map_err(|e| EstError(ApiError::from(e.error)))?;
    Ok(base64_answer(PKCS7_CERTS_ONLY, &certs_only(&[&issued.der])))
}
