//! Revocation, suspension and resumption of devices; certificates one by one.

use axum::extract::{Path, State};
use axum::Json;
use devid_core::api::{
    BulkRequest, BulkResult, CertificateInfo, Device, ReasonRequest, RevokeRequest,
};
use devid_core::ClientId;
use utoipa_axum::routes;

use super::devices::{cert_json, device_json};
use crate::app::{ApiJson, AppState};
use crate::domain::bulk;
use crate::domain::lifecycle::{self, Action};
use crate::error::ApiError;
use crate::openapi::{BadRequest, Conflict, JsonBodyProblems, NotFound, Unprocessable};
use crate::registry::der_to_pem;
use crate::routes::{ctx, Guard, Routes, ADMIN, FOLLOWERS};

/// Longest comment kept with a suspension.
const MAX_COMMENT_CHARS: usize = 500;

pub(crate) fn router() -> Routes {
    Routes::new()
        .add(ADMIN, routes!(revoke_devices))
        .add(ADMIN, routes!(suspend_devices))
        .add(ADMIN, routes!(resume_devices))
        .add(ADMIN, routes!(revoke_device))
        .add(ADMIN, routes!(suspend_device))
        .add(ADMIN, routes!(resume_device))
        .add(FOLLOWERS, routes!(show_certificate))
        .add(ADMIN, routes!(revoke_certificate))
}

/// Revoke every device the filter selects, and their certificates (final), in one transaction.
///
/// `reason` is required. Devices already revoked are matched, not changed. With `dry_run`
/// nothing changes: the answer says how many devices would change, and which first.
#[utoipa::path(
    post,
    path = "/v1/devices/revoke",
    request_body = BulkRequest,
    responses(
        (status = 200, description = "What changed (or would)", body = BulkResult),
        JsonBodyProblems,
    )
)]
async fn revoke_devices(
    State(state): State<AppState>,
    guard: Guard,
    ApiJson(req): ApiJson<BulkRequest>,
) -> Result<Json<BulkResult>, ApiError> {
    let action = req
        .reason
        .map(|reason| Action::Revoke { reason })
        .ok_or_else(|| ApiError::unprocessable("reason: required to revoke"));
    change_devices(state, guard, req, action).await
}

/// Suspend every active device the filter selects (their certificates go on hold).
///
/// Devices already suspended, and revoked ones, are matched, not changed.
#[utoipa::path(
    post,
    path = "/v1/devices/suspend",
    request_body = BulkRequest,
    responses(
        (status = 200, description = "What changed (or would)", body = BulkResult),
        JsonBodyProblems,
    )
)]
async fn suspend_devices(
    State(state): State<AppState>,
    guard: Guard,
    ApiJson(req): ApiJson<BulkRequest>,
) -> Result<Json<BulkResult>, ApiError> {
    let action = no_reason(&req, Action::Suspend { comment: None });
    change_devices(state, guard, req, action).await
}

/// Resume every suspended device the filter selects.
///
/// Active devices, and revoked ones, are matched, not changed.
#[utoipa::path(
    post,
    path = "/v1/devices/resume",
    request_body = BulkRequest,
    responses(
        (status = 200, description = "What changed (or would)", body = BulkResult),
        JsonBodyProblems,
    )
)]
async fn resume_devices(
    State(state): State<AppState>,
    guard: Guard,
    ApiJson(req): ApiJson<BulkRequest>,
) -> Result<Json<BulkResult>, ApiError> {
    let action = no_reason(&req, Action::Resume);
    change_devices(state, guard, req, action).await
}

/// Suspension and resumption take no reason.
fn no_reason(req: &BulkRequest, action: Action) -> Result<Action, ApiError> {
    match req.reason {
        Some(_) => Err(ApiError::unprocessable(
            "reason: only a revocation takes a reason",
        )),
        None => Ok(action),
    }
}

/// The bulk routes' one path: role check, the change (audited when it fails), the answer.
async fn change_devices(
    state: AppState,
    guard: Guard,
    req: BulkRequest,
    action: Result<Action, ApiError>,
) -> Result<Json<BulkResult>, ApiError> {
    let caller = guard.check()?;
    let name = action.as_ref().map_or("devices.change", bulk::audit_action);
    let work = async {
        let action = action?;
        let actor = caller.actor();
        Ok::<_, ApiError>(
            bulk::change_devices(ctx(&state), &actor, &req.filter, action, req.dry_run).await?,
        )
    };
    let result = caller
        .audit(name, &bulk::describe(&req.filter))
        .run(&state.store, work)
        .await?;
    Ok(Json(result))
}

/// Revoke a device and all its certificates (final).
///
/// `certificateHold` is refused: suspension is `POST .../suspend`.
#[utoipa::path(
    post,
    path = "/v1/devices/{client_id}/revoke",
    params(("client_id" = ClientId, Path)),
    request_body = RevokeRequest,
    responses(
        (status = 200, description = "The device, revoked", body = Device),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        JsonBodyProblems,
    )
)]
async fn revoke_device(
    State(state): State<AppState>,
    guard: Guard,
    Path(client_id): Path<String>,
    ApiJson(req): ApiJson<RevokeRequest>,
) -> Result<Json<Device>, ApiError> {
    let caller = guard.check()?;
    let work = async {
        let action = Action::Revoke { reason: req.reason };
        Ok::<_, ApiError>(
            lifecycle::change_device(ctx(&state), &caller.actor(), &client_id, action).await?,
        )
    };
    let d = caller
        .audit("device.revoke", &client_id)
        .run(&state.store, work)
        .await?;
    Ok(Json(device_json(&d)))
}

/// Put a device on hold: its certificates go on the CRL with reason certificateHold.
///
/// The body is optional; its comment is kept in the audit log.
#[utoipa::path(
    post,
    path = "/v1/devices/{client_id}/suspend",
    params(("client_id" = ClientId, Path)),
    request_body(content = Option<ReasonRequest>, description = "Optional"),
    responses(
        (status = 200, description = "The device, suspended", body = Device),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 422, response = Unprocessable),
    )
)]
async fn suspend_device(
    State(state): State<AppState>,
    guard: Guard,
    Path(client_id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Device>, ApiError> {
    let caller = guard.check()?;
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

/// Lift a device's hold.
#[utoipa::path(
    post,
    path = "/v1/devices/{client_id}/resume",
    params(("client_id" = ClientId, Path)),
    responses(
        (status = 200, description = "The device, active again", body = Device),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    )
)]
async fn resume_device(
    State(state): State<AppState>,
    guard: Guard,
    Path(client_id): Path<String>,
) -> Result<Json<Device>, ApiError> {
    let caller = guard.check()?;
    let actor = caller.actor();
    let work = lifecycle::change_device(ctx(&state), &actor, &client_id, Action::Resume);
    let d = caller
        .audit("device.resume", &client_id)
        .run(&state.store, work)
        .await?;
    Ok(Json(device_json(&d)))
}

/// How a certificate serial may be written in a path.
const SERIAL_PARAM: &str = "Certificate serial number in hex, in any case, with or without \
    colons and leading zero bytes (as openssl prints it)";

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

/// One certificate, with its PEM.
#[utoipa::path(
    get,
    path = "/v1/certificates/{serial}",
    params(("serial" = String, Path, description = SERIAL_PARAM)),
    responses(
        (status = 200, description = "The certificate", body = CertificateInfo),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    )
)]
async fn show_certificate(
    State(state): State<AppState>,
    guard: Guard,
    Path(serial): Path<String>,
) -> Result<Json<CertificateInfo>, ApiError> {
    guard.check()?;
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

/// Revoke one certificate (final); the device keeps its others.
#[utoipa::path(
    post,
    path = "/v1/certificates/{serial}/revoke",
    params(("serial" = String, Path, description = SERIAL_PARAM)),
    request_body = RevokeRequest,
    responses(
        (status = 200, description = "The certificate, revoked", body = CertificateInfo),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        JsonBodyProblems,
    )
)]
async fn revoke_certificate(
    State(state): State<AppState>,
    guard: Guard,
    Path(serial): Path<String>,
    ApiJson(req): ApiJson<RevokeRequest>,
) -> Result<Json<CertificateInfo>, ApiError> {
    let caller = guard.check()?;
    let work = async {
        let serial = normalize_serial(&serial)?;
        let actor = caller.actor();
        Ok::<_, ApiError>(
            lifecycle::revoke_certificate(ctx(&state), &actor, &serial, req.reason).await?,
        )
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
