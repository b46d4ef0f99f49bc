//! EST enrollment, re-enrollment and server-side key generation authenticated by a device's
//! certificate: each request goes to the one LDevID issuance function ([`issue_ldevid`]),
//! which applies every rule (device state, presented certificate, renewal grace, subject and
//! SAN equality, key rules, rate) and audits issuances and refusals alike.

use std::time::SystemTime;

use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::est::{base64_answer, EstAnswer, EstError, Kind, Presented, PKCS7_CERTS_ONLY};
use crate::app::AppState;
use crate::domain::renewal::{KeyProof, RequestKind};
use crate::error::ApiError;
use crate::est::{certs_only, serverkeygen_body};
use crate::ldevid::{issue_ldevid, IssuedLdevid, LdevidRequest};
use crate::store::Actor;

async fn issue_for(
    state: &AppState,
    presented: &Presented,
    csr_der: Vec<u8>,
    kind: Kind,
) -> Result<IssuedLdevid, EstError> {
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
    issue_ldevid(state, req, SystemTime::now())
        .await
        .map_err(|e| EstError(ApiError::from(e.error)))
}

/// `simpleenroll` / `simplereenroll` with the device's certificate: the new LDevID, certs-only.
pub async fn issue(
    state: &AppState,
    presented: &Presented,
    csr_der: Vec<u8>,
    kind: Kind,
) -> Result<Response, EstError> {
    let issued = issue_for(state, presented, csr_der, kind).await?;
    Ok(base64_answer(PKCS7_CERTS_ONLY, &certs_only(&[&issued.der])))
}

/// `serverkeygen` with the device's certificate: a key made here (returned once, never kept)
/// and an LDevID for it.
pub async fn serverkeygen(state: &AppState, presented: &Presented) -> Result<Response, EstError> {
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(ApiError::internal)?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .map_err(ApiError::internal)?;
    let issued = issue_for(state, presented, csr.der().to_vec(), Kind::Enroll).await?;
    let boundary = format!("devid-est-{}", issued.serial);
    let body = serverkeygen_body(&key.serialize_der(), &certs_only(&[&issued.der]), &boundary);
    let mut response = (
        [(
            header::CONTENT_TYPE,
            format!("multipart/mixed; boundary={boundary}"),
        )],
        body,
    )
        .into_response();
    response.extensions_mut().insert(EstAnswer);
    Ok(response)
}
