//! Revocation, suspension and resumption of devices; certificates one by one.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use devid_core::api::{
    CertificateInfo, Device, ReasonRequest, RevocationReason, RevokeRequest, Role,
};

use super::devices::{cert_json, device_json, STATUS_READERS};
use crate::app::{ApiJson, AppState};
use crate::auth::Caller;
use crate::domain::lifecycle::{self, Action};
use crate::error::ApiError;
use crate::registry::der_to_pem;
use crate::routes::ctx;

/// Longest comment kept with a suspension.
const MAX_COMMENT_CHARS: usize = 500;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/devices/{client_id}/revoke", post(revoke))
        .route("/v1/devices/{client_id}/suspend", post(suspend))
        .route("/v1/devices/{client_id}/resume", post(resume))
        .route("/v1/certificates/{serial}", get(show_certificate))
        .route("/v1/certificates/{serial}/revoke", post(revoke_certificate))
}

async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(client_id): Path<String>,
    ApiJson(req): ApiJson<RevokeRequest>,
) -> Result<Json<Device>, ApiError> {
    caller.require(&[Role::Admin])?;
    let work = async {
        if req.reason == RevocationReason::CertificateHold {
            return Err(ApiError::unprocessable(
                "certificateHold is what suspend does; use POST .../suspend",
            ));
        }
        let action = Action::Revoke { reason: req.reason };
        Ok(lifecycle::change_device(ctx(&state), &caller.actor(), &client_id, action).await?)
    };
    let d = caller
        .audit("device.revoke", &client_id)
        .run(&state.store, work)
        .await?;
    Ok(Json(device_json(&d)))
}

async fn suspend(
    State(state): State<AppState>,
    caller: Caller,
    Path(client_id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Device>, ApiError> {
    caller.require(&[Role::Admin])?;
    let work = async {
        // The body is optional; when present it must be a ReasonRequest. Its comment is kept
        // in the suspension's audit row.
        let comment = if body.is_empty() {
            None
        } else {
            serde_json::from_slice::<ReasonRequest>(&body)
                .map_err(|e| ApiError::BadRequest(format!("body: {e}")))?
                .comment
        };
        if let Some(c) = &comment {
            if c.chars().count() > MAX_COMMENT_CHARS || c.chars().any(char::is_control) {
                return Err(ApiError::unprocessable(format!(
                    "comment must be at most {MAX_COMMENT_CHARS} characters, none of them control characters"
                )));
            }
        }
        let action = Action::Suspend { comment };
        Ok(lifecycle::change_device(ctx(&state), &caller.actor(), &client_id, action).await?)
    };
    let d = caller
        .audit("device.suspend", &client_id)
        .run(&state.store, work)
        .await?;
    Ok(Json(device_json(&d)))
}

async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(client_id): Path<String>,
) -> Result<Json<Device>, ApiError> {
    caller.require(&[Role::Admin])?;
    let actor = caller.actor();
    let work = lifecycle::change_device(ctx(&state), &actor, &client_id, Action::Resume);
    let d = caller
        .audit("device.resume", &client_id)
        .run(&state.store, work)
        .await?;
    Ok(Json(device_json(&d)))
}

/// Normalizes a serial as given by people or openssl (case, colons, leading zero bytes) to the
/// form the store and the brokers use.
pub fn normalize_serial(s: &str) -> Result<String, ApiError> {
    let hex = devid_core::protocol::normalize_serial_hex(s)
        .ok_or_else(|| ApiError::BadRequest(format!("serial {s:?} is not hexadecimal")))?;
    // A certificate serial is a positive integer of at most 20 bytes (RFC 5280 section 4.1.2.2).
    if hex == "00" || hex.len() > 40 {
        return Err(ApiError::BadRequest(format!(
            "serial {s:?} is not a certificate serial number"
        )));
    }
    Ok(hex)
}

async fn show_certificate(
    State(state): State<AppState>,
    caller: Caller,
    Path(serial): Path<String>,
) -> Result<Json<CertificateInfo>, ApiError> {
    caller.require(STATUS_READERS)?;
    let serial = normalize_serial(&serial)?;
    let cert = state
        .store
        .get_certificate(&serial)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no certificate has serial {serial}")))?;
    let mut info = cert_json(&cert);
    info.certificate = Some(der_to_pem(&cert.der));
    Ok(Json(info))
}

async fn revoke_certificate(
    State(state): State<AppState>,
    caller: Caller,
    Path(serial): Path<String>,
    ApiJson(req): ApiJson<RevokeRequest>,
) -> Result<Json<CertificateInfo>, ApiError> {
    caller.require(&[Role::Admin])?;
    let work = async {
        let serial = normalize_serial(&serial)?;
        if req.reason == RevocationReason::CertificateHold {
            return Err(ApiError::unprocessable(
                "certificateHold applies to devices: use POST /v1/devices/{client_id}/suspend",
            ));
        }
        let actor = caller.actor();
        Ok(lifecycle::revoke_certificate(ctx(&state), &actor, &serial, req.reason).await?)
    };
    let cert = caller
        .audit("certificate.revoke", &serial)
        .run(&state.store, work)
        .await?;
    Ok(Json(cert_json(&cert)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_normalize() {
        assert_eq!(normalize_serial("0A:FF").ok().as_deref(), Some("0aff"));
        assert_eq!(normalize_serial("00aF").ok().as_deref(), Some("af"));
        assert_eq!(normalize_serial("abc").ok().as_deref(), Some("0abc"));
        assert!(normalize_serial("xyz").is_err());
        assert!(normalize_serial("00").is_err());
    }
}
