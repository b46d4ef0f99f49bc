//! Sensors behind gateways: a gateway's set of sensors, and the keys brokers verify their
//! readings with (DEVID-S1).

use axum::extract::{Path, State};
use axum::Json;
use devid_core::api::{GatewaySensors, SensorAttachment, SensorKeys, SensorRekeyed};
use devid_core::ClientId;
use utoipa_axum::routes;

use crate::app::{ApiJson, AppState};
use crate::domain::sensors::{self, AttachmentChange};
use crate::error::ApiError;
use crate::openapi::{JsonBodyProblems, NotFound, Unprocessable};
use crate::routes::{ctx, Guard, Routes, ADMIN, BROKERS, READERS};

pub(crate) fn router() -> Routes {
    Routes::new()
        .add(ADMIN, routes!(set_sensors))
        .add(ADMIN, routes!(attach_sensors))
        .add(ADMIN, routes!(detach_sensors))
        .add(ADMIN, routes!(rekey_sensor))
        .add(READERS, routes!(list_sensors))
        .add(BROKERS, routes!(sensor_keys))
}

/// Set the sensors a gateway relays (the whole set).
///
/// A sensor attached to another gateway moves to this one; the gateway's sensors not in the
/// list are detached; an empty list detaches all. The gateway must be a device that is not
/// revoked, each entry a sensor that is not revoked; otherwise nothing changes. Brokers learn
/// of the change through the feed: an `updated` entry for each gateway whose set changed and
/// each sensor attached, moved or detached.
#[utoipa::path(
    put,
    path = "/v1/devices/{gateway}/sensors",
    params(("gateway" = ClientId, Path)),
    request_body = SensorAttachment,
    responses(
        (status = 200, description = "The gateway's sensors now", body = GatewaySensors),
        (status = 404, response = NotFound),
        JsonBodyProblems,
    )
)]
async fn set_sensors(
    State(state): State<AppState>,
    guard: Guard,
    Path(gateway): Path<String>,
    ApiJson(req): ApiJson<SensorAttachment>,
) -> Result<Json<GatewaySensors>, ApiError> {
    change_sensors(
        &state,
        guard,
        "gateway.sensors",
        &gateway,
        AttachmentChange::Set(&req.sensors),
    )
    .await
}

/// Attach sensors to a gateway, keeping the ones it has.
///
/// The listed sensors are added to the gateway's set as it is when the change is made (one
/// transaction under the attachments lock: two attaches at once both take effect); one
/// attached to another gateway moves here; one the gateway has already stays. The same rules
/// and feed entries as `PUT /v1/devices/{gateway}/sensors`; an error changes nothing.
#[utoipa::path(
    post,
    path = "/v1/devices/{gateway}/sensors/attach",
    params(("gateway" = ClientId, Path)),
    request_body = SensorAttachment,
    responses(
        (status = 200, description = "The gateway's sensors now", body = GatewaySensors),
        (status = 404, response = NotFound),
        JsonBodyProblems,
    )
)]
async fn attach_sensors(
    State(state): State<AppState>,
    guard: Guard,
    Path(gateway): Path<String>,
    ApiJson(req): ApiJson<SensorAttachment>,
) -> Result<Json<GatewaySensors>, ApiError> {
    change_sensors(
        &state,
        guard,
        "gateway.sensors.attach",
        &gateway,
        AttachmentChange::Attach(&req.sensors),
    )
    .await
}

/// Detach sensors from a gateway, keeping its others.
///
/// The listed sensors are taken out of the gateway's set as it is when the change is made
/// (one transaction under the attachments lock); a listed sensor the gateway does not have is
/// left as it is. Brokers learn of it through the feed as for `PUT`.
#[utoipa::path(
    post,
    path = "/v1/devices/{gateway}/sensors/detach",
    params(("gateway" = ClientId, Path)),
    request_body = SensorAttachment,
    responses(
        (status = 200, description = "The gateway's sensors now", body = GatewaySensors),
        (status = 404, response = NotFound),
        JsonBodyProblems,
    )
)]
async fn detach_sensors(
    State(state): State<AppState>,
    guard: Guard,
    Path(gateway): Path<String>,
    ApiJson(req): ApiJson<SensorAttachment>,
) -> Result<Json<GatewaySensors>, ApiError> {
    change_sensors(
        &state,
        guard,
        "gateway.sensors.detach",
        &gateway,
        AttachmentChange::Detach(&req.sensors),
    )
    .await
}

/// Makes one change to a gateway's sensors, audited as `action`: the body of the three routes
/// above, which differ only in the change and its name.
async fn change_sensors(
    state: &AppState,
    guard: Guard,
    action: &'static str,
    gateway: &str,
    change: AttachmentChange<'_>,
) -> Result<Json<GatewaySensors>, ApiError> {
    let caller = guard.check()?;
    let audit = caller.audit(action, gateway);
    let work = sensors::set_sensors(ctx(state), &audit, gateway, change);
    Ok(Json(audit.run(&state.store, work).await?))
}

/// The sensors a gateway relays.
#[utoipa::path(
    get,
    path = "/v1/devices/{gateway}/sensors",
    params(("gateway" = ClientId, Path)),
    responses(
        (status = 200, description = "The gateway's sensors", body = GatewaySensors),
        (status = 404, response = NotFound),
    )
)]
async fn list_sensors(
    State(state): State<AppState>,
    guard: Guard,
    Path(gateway): Path<String>,
) -> Result<Json<GatewaySensors>, ApiError> {
    guard.check()?;
    Ok(Json(sensors::list(&state.store, &gateway).await?))
}

/// The keys a broker verifies a gateway's sensors' readings with.
///
/// For each sensor attached to the gateway: `K_mac` and `K_enc` (DEVID-S1, derived from the
/// sensor's key, which never leaves the service), its status, the topic filters it may publish
/// to (`%c` not expanded) and its seq floor (the highest seq any broker reported accepting).
#[utoipa::path(
    get,
    path = "/v1/devices/{gateway}/sensors/keys",
    params(("gateway" = ClientId, Path)),
    responses(
        (status = 200, description = "The gateway's sensors' keys", body = SensorKeys),
        (status = 404, response = NotFound),
    )
)]
async fn sensor_keys(
    State(state): State<AppState>,
    guard: Guard,
    Path(gateway): Path<String>,
) -> Result<Json<SensorKeys>, ApiError> {
    guard.check()?;
    Ok(Json(
        sensors::keys(&state.store, &state.kek, &gateway).await?,
    ))
}

/// Give a sensor a new key.
///
/// A new key K is made, sealed in place of the old one and returned this once (as
/// registration's `sensor_key`). Brokers drop the old keys when the feed's `updated` entry for
/// the sensor reaches them (within about a second): readings made with the old key are refused
/// from then on. The sensor's seq floor stays, so its counter goes on. Only a sensor that is not
/// revoked.
#[utoipa::path(
    post,
    path = "/v1/devices/{sensor}/rekey",
    params(("sensor" = ClientId, Path)),
    responses(
        (status = 200, description = "The sensor's new key, shown once", body = SensorRekeyed),
        (status = 404, response = NotFound),
        (status = 422, response = Unprocessable),
    )
)]
async fn rekey_sensor(
    State(state): State<AppState>,
    guard: Guard,
    Path(sensor): Path<String>,
) -> Result<Json<SensorRekeyed>, ApiError> {
    let caller = guard.check()?;
    let audit = caller.audit("sensor.rekey", &sensor);
    let work = sensors::rekey(ctx(&state), &audit, &state.kek, &sensor);
    Ok(Json(audit.run(&state.store, work).await?))
}
