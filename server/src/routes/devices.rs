//! Devices: registration, queries and the status brokers poll. Their router also serves
//! [`super::lifecycle`] (revocation, suspension) and [`super::device_settings`] (a device's own
//! policy and allow-list).

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use devid_core::api::{
    BatchRequest, BatchResponse, CertificateInfo, Device, DeviceList, DeviceListQuery,
    DeviceStatus, DeviceSummary, RegisterRequest, Registered, MAX_BATCH_ITEMS,
};
use devid_core::ClientId;
use utoipa_axum::routes;

use crate::app::{ApiJson, ApiQuery, AppState};
use crate::domain::devices::{self as domain, find};
use crate::error::ApiError;
use crate::openapi::{BadRequest, Conflict, JsonBodyProblems, NotFound};
use crate::routes::{Guard, Routes, APP_READERS, FOLLOWERS, REGISTRARS};
use crate::store::{CertRow, DeviceFilter, DeviceRow, DeviceWithCerts};
use crate::timefmt::{self, rfc3339, rfc3339_opt};

pub use super::lifecycle::normalize_serial;

pub fn router() -> Routes {
    Routes::new()
        .add(REGISTRARS, routes!(register))
        .add(APP_READERS, routes!(list_devices))
        .add(REGISTRARS, routes!(register_batch))
        .add(APP_READERS, routes!(show_device))
        .add(FOLLOWERS, routes!(device_status))
        .merge(super::lifecycle::router())
        .merge(super::device_settings::router())
        .merge(super::sensors::router())
}

/// Register one device.
///
/// With a CSR, or with `generate_key` (the private key is then in the first answer only). A
/// sensor (`"kind": "sensor"`) takes neither: the service makes its key and returns it once as
/// `sensor_key`, with no certificate. Idempotent per hardware serial and CSR (a sensor: per
/// hardware serial, kind, model, ClientID and metadata): the same request again answers 200
/// with the stored device, without any key. A factory token limited to some models may
/// register only those.
#[utoipa::path(
    post,
    path = "/v1/devices",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered", body = Registered),
        (status = 200, description = "Already registered with this CSR: the stored device", body = Registered),
        (status = 409, response = Conflict),
        JsonBodyProblems,
    )
)]
async fn register(
    State(state): State<AppState>,
    guard: Guard,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<Response, ApiError> {
    let caller = guard.check()?;
    let answer = caller
        .audit("device.register", &req.hardware_serial)
        .run(&state.store, state.registry.register_one(&caller, req))
        .await?;
    let status = if answer.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(answer)).into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch {
    items: Vec<serde_json::Value>,
}

/// Register up to 10,000 devices, all or nothing.
///
/// Either every item is registered (or was already), or none is and the problem's `index`
/// names the failing item.
#[utoipa::path(
    post,
    path = "/v1/devices/batch",
    request_body = BatchRequest,
    responses(
        (status = 201, description = "Registered; `created` items are new", body = BatchResponse),
        (status = 200, description = "Every item was already registered", body = BatchResponse),
        (status = 409, response = Conflict),
        JsonBodyProblems,
    )
)]
async fn register_batch(
    State(state): State<AppState>,
    guard: Guard,
    ApiJson(raw): ApiJson<RawBatch>,
) -> Result<Response, ApiError> {
    let caller = guard.check()?;
    let n = raw.items.len();
    let work = async {
        if n == 0 {
            return Err(ApiError::unprocessable("items is empty"));
        }
        if n > MAX_BATCH_ITEMS {
            return Err(ApiError::PayloadTooLarge(format!(
                "a batch holds at most {MAX_BATCH_ITEMS} items; this one has {n}"
            )));
        }
        // Items are parsed one by one so that an error names its index.
        let items = raw
            .items
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                serde_json::from_value::<RegisterRequest>(v)
                    .map_err(|e| ApiError::unprocessable(e.to_string()).at_index(i))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(state.registry.register_batch(&caller, items).await?)
    };
    let (items, created) = caller
        .audit("device.register_batch", &format!("{n} items"))
        .run(&state.store, work)
        .await?;
    let status = if created > 0 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(BatchResponse { items, created })).into_response())
}

/// List devices, oldest first, a page at a time.
///
/// `q` finds devices by the start of their ClientID or hardware serial (the console's search).
#[utoipa::path(
    get,
    path = "/v1/devices",
    params(DeviceListQuery),
    responses((status = 200, description = "A page of devices", body = DeviceList), (status = 400, response = BadRequest))
)]
async fn list_devices(
    State(state): State<AppState>,
    guard: Guard,
    ApiQuery(q): ApiQuery<DeviceListQuery>,
) -> Result<Json<DeviceList>, ApiError> {
    guard.check()?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest("limit must be 1 to 1000".into()));
    }
    let created_after = q
        .created_after
        .as_deref()
        .map(|s| {
            timefmt::parse_rfc3339(s).ok_or_else(|| {
                ApiError::BadRequest(format!("created_after {s:?} is not an RFC 3339 time"))
            })
        })
        .transpose()?;
    let after_id = q.cursor.as_deref().map(decode_cursor).transpose()?;
    if q.q.is_some() && q.hardware_serial.is_some() {
        return Err(ApiError::BadRequest(
            "q and hardware_serial exclude each other".into(),
        ));
    }
    let rows = match &q.hardware_serial {
        // The serial is unique: one lookup, then the other filters.
        Some(serial) => state
            .store
            .get_device_by_serial(serial)
            .await?
            .map(|d| d.device)
            .filter(|d| {
                q.status.is_none_or(|s| s == d.status)
                    && q.kind.is_none_or(|k| k == d.kind)
                    && q.model.as_ref().is_none_or(|m| d.model.as_ref() == Some(m))
                    && created_after.is_none_or(|t| d.created_at > t)
                    && after_id.is_none_or(|a| d.id > a)
            })
            .into_iter()
            .collect(),
        None => {
            state
                .store
                .list_devices(&DeviceFilter {
                    status: q.status,
                    kind: q.kind,
                    model: q.model,
                    prefix: q.q,
                    created_after,
                    after_id,
                    limit: limit + 1,
                })
                .await?
        }
    };
    let more = rows.len() > limit as usize;
    let rows = &rows[..rows.len().min(limit as usize)];
    let next_cursor = if more {
        rows.last().map(|r| encode_cursor(r.id))
    } else {
        None
    };
    Ok(Json(DeviceList {
        items: rows.iter().map(summary).collect(),
        next_cursor,
    }))
}

pub fn encode_cursor(id: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.to_be_bytes())
}

pub fn decode_cursor(s: &str) -> Result<i64, ApiError> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .ok_or_else(|| ApiError::BadRequest("cursor is not one this server gave".into()))?;
    Ok(i64::from_be_bytes(bytes))
}

/// One device with its certificates.
#[utoipa::path(
    get,
    path = "/v1/devices/{client_id}",
    params(("client_id" = ClientId, Path)),
    responses((status = 200, description = "The device", body = Device), (status = 404, response = NotFound))
)]
async fn show_device(
    State(state): State<AppState>,
    guard: Guard,
    Path(client_id): Path<String>,
) -> Result<Json<Device>, ApiError> {
    guard.check()?;
    Ok(Json(device_json(&find(&state.store, &client_id).await?)))
}

/// A device's status and policy, small and cacheable: what brokers poll.
///
/// The ETag is a hash of the body; with a matching `If-None-Match` the answer is 304.
#[utoipa::path(
    get,
    path = "/v1/devices/{client_id}/status",
    params(
        ("client_id" = ClientId, Path),
        ("If-None-Match" = Option<String>, Header, description = "ETags of bodies the caller holds, or `*`"),
    ),
    responses(
        (status = 200, description = "The status", body = DeviceStatus, headers(("ETag" = String, description = "A hash of the body"))),
        (status = 304, description = "Unchanged: the body would carry one of the ETags of `If-None-Match`", headers(("ETag" = String))),
        (status = 404, response = NotFound),
    )
)]
async fn device_status(
    State(state): State<AppState>,
    guard: Guard,
    Path(client_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    guard.check()?;
    let d = find(&state.store, &client_id).await?;
    let body = domain::status(&state.store, &d).await?;
    let bytes = serde_json::to_vec(&body).map_err(ApiError::internal)?;
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    let etag = format!("\"{}\"", hex::encode(&digest.as_ref()[..12]));
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if matches {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    Ok((
        [
            (header::ETAG, etag),
            (header::CONTENT_TYPE, "application/json".to_string()),
        ],
        bytes,
    )
        .into_response())
}

fn summary(d: &DeviceRow) -> DeviceSummary {
    DeviceSummary {
        client_id: d.client_id.clone(),
        hardware_serial: d.hardware_serial.clone(),
        model: d.model.clone(),
        kind: d.kind,
        gateway: d.gateway.clone(),
        status: d.status,
        created_at: rfc3339(d.created_at),
        last_seen: rfc3339_opt(d.last_seen),
    }
}

pub fn cert_json(c: &CertRow) -> CertificateInfo {
    CertificateInfo {
        serial: c.serial.clone(),
        client_id: c.client_id.clone(),
        fingerprint_sha256: c.fingerprint.clone(),
        not_before: rfc3339(c.not_before),
        not_after: rfc3339(c.not_after),
        status: c.status,
        profile: c.profile.clone(),
        revoked_at: rfc3339_opt(c.revoked_at),
        revocation_reason: c.reason,
        certificate: None,
    }
}

pub fn device_json(d: &DeviceWithCerts) -> Device {
    let r = &d.device;
    Device {
        client_id: r.client_id.clone(),
        hardware_serial: r.hardware_serial.clone(),
        model: r.model.clone(),
        kind: r.kind,
        gateway: r.gateway.clone(),
        status: r.status,
        metadata: r
            .metadata
            .as_deref()
            .and_then(|m| serde_json::from_str(m).ok()),
        created_at: rfc3339(r.created_at),
        revoked_at: rfc3339_opt(r.revoked_at),
        revocation_reason: r.reason,
        last_seen: rfc3339_opt(r.last_seen),
        last_address: r.last_address.clone(),
        certificates: d.certs.iter().map(cert_json).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        assert_eq!(decode_cursor(&encode_cursor(42)).ok(), Some(42));
        assert!(decode_cursor("!!").is_err());
        assert!(decode_cursor("AAAA").is_err());
    }
}
