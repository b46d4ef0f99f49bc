//! A device's own settings: its topic policy, message authentication and allow-list.

use axum::extract::{Path, State};
use axum::Json;
use devid_core::api::{AllowList, DeviceStatus, PolicyUpdate};
use devid_core::ClientId;
use utoipa_axum::routes;

use crate::app::{ApiJson, AppState};
use crate::domain::{devices, policy};
use crate::error::ApiError;
use crate::openapi::{JsonBodyProblems, NotFound};
use crate::routes::{ctx, Guard, Routes, ADMIN};

pub(crate) fn router() -> Routes {
    Routes::new()
        .add(ADMIN, routes!(set_allowlist))
        .add(ADMIN, routes!(set_policy))
}

/// Set the networks a device may connect from (empty: anywhere).
///
/// Brokers apply it to live connections through the feed's `updated` entry.
#[utoipa::path(
    put,
    path = "/v1/devices/{client_id}/allowlist",
    params(("client_id" = ClientId, Path)),
    request_body = AllowList,
    responses(
        (status = 200, description = "The device's status with the new allow-list", body = DeviceStatus),
        (status = 404, response = NotFound),
        JsonBodyProblems,
    )
)]
async fn set_allowlist(
    State(state): State<AppState>,
    guard: Guard,
    Path(client_id): Path<String>,
    ApiJson(req): ApiJson<AllowList>,
) -> Result<Json<DeviceStatus>, ApiError> {
    let caller = guard.check()?;
    let audit = caller.audit("device.allowlist", &client_id);
    let work = policy::set_allowlist(ctx(&state), &audit, &client_id, &req.cidrs);
    let d = audit.run(&state.store, work).await?;
    Ok(Json(devices::status(&state.store, &d).await?))
}

/// Set a device's own topic policy and message authentication.
///
/// Absent fields fall back to the model's settings, then to the defaults.
#[utoipa::path(
    put,
    path = "/v1/devices/{client_id}/policy",
    params(("client_id" = ClientId, Path)),
    request_body = PolicyUpdate,
    responses(
        (status = 200, description = "The device's status with the new policy", body = DeviceStatus),
        (status = 404, response = NotFound),
        JsonBodyProblems,
    )
)]
async fn set_policy(
    State(state): State<AppState>,
    guard: Guard,
    Path(client_id): Path<String>,
    ApiJson(req): ApiJson<PolicyUpdate>,
) -> Result<Json<DeviceStatus>, ApiError> {
    let caller = guard.check()?;
    let audit = caller.audit("device.policy", &client_id);
    let work = policy::set_policy(ctx(&state), &audit, &client_id, &req);
    let d = audit.run(&state.store, work).await?;
    Ok(Json(devices::status(&state.store, &d).await?))
}
