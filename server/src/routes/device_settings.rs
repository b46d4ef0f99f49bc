//! A device's own settings: its topic policy, message authentication and allow-list.

use axum::extract::{Path, State};
use axum::routing::put;
use axum::{Json, Router};
use devid_core::api::{AllowList, DeviceStatus, PolicyUpdate, Role};

use crate::app::{ApiJson, AppState};
use crate::auth::Caller;
use crate::domain::{devices, policy};
use crate::error::ApiError;
use crate::routes::ctx;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/devices/{client_id}/allowlist", put(set_allowlist))
        .route("/v1/devices/{client_id}/policy", put(set_policy))
}

async fn set_allowlist(
    State(state): State<AppState>,
    caller: Caller,
    Path(client_id): Path<String>,
    ApiJson(req): ApiJson<AllowList>,
) -> Result<Json<DeviceStatus>, ApiError> {
    caller.require(&[Role::Admin])?;
    let audit = caller.audit("device.allowlist", &client_id);
    let work = policy::set_allowlist(ctx(&state), &audit, &client_id, &req.cidrs);
    let d = audit.run(&state.store, work).await?;
    Ok(Json(devices::status(&state.store, &d).await?))
}

async fn set_policy(
    State(state): State<AppState>,
    caller: Caller,
    Path(client_id): Path<String>,
    ApiJson(req): ApiJson<PolicyUpdate>,
) -> Result<Json<DeviceStatus>, ApiError> {
    caller.require(&[Role::Admin])?;
    let audit = caller.audit("device.policy", &client_id);
    let work = policy::set_policy(ctx(&state), &audit, &client_id, &req);
    let d = audit.run(&state.store, work).await?;
    Ok(Json(devices::status(&state.store, &d).await?))
}
