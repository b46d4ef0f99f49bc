//! Devices: registration, queries and the status brokers poll. Their router also serves
//! [`super::lifecycle`] (revocation, suspension) and [`super::device_settings`] (a device's own
//! policy and allow-list).

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use devid_core::api::{
    BatchResponse, CertificateInfo, Device, DeviceList, DeviceListQuery, DeviceSummary,
    RegisterRequest, Role, MAX_BATCH_ITEMS,
};

use crate::app::{ApiJson, ApiQuery, AppState};
use crate::auth::Caller;
use crate::domain::devices::{self as domain, find};
use crate::error::ApiError;
use crate::store::{CertRow, DeviceFilter, DeviceRow, DeviceWithCerts};
use crate::timefmt::{self, rfc3339, rfc3339_opt};

pub(crate) const READERS: &[Role] = &[Role::Admin, Role::Auditor];
pub(crate) const REGISTRARS: &[Role] = &[Role::Admin, Role::Factory];
pub(crate) const STATUS_READERS: &[Role] = &[Role::Admin, Role::Auditor, Role::Broker];

pub use super::lifecycle::normalize_serial;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/devices", post(register).get(list))
        .route("/v1/devices/batch", post(register_batch))
        .route("/v1/devices/{client_id}", get(show))
        .route("/v1/devices/{client_id}/status", get(status))
        .merge(super::lifecycle::router())
        .merge(super::device_settings::router())
}

async fn register(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<Response, ApiError> {
    caller.require(REGISTRARS)?;
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

async fn register_batch(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(raw): ApiJson<RawBatch>,
) -> Result<Response, ApiError> {
    caller.require(REGISTRARS)?;
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

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<DeviceListQuery>,
) -> Result<Json<DeviceList>, ApiError> {
    caller.require(READERS)?;
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
    let rows = match &q.hardware_serial {
        // The serial is unique: one lookup, then the other filters.
        Some(serial) => state
            .store
            .get_device_by_serial(serial)
            .await?
            .map(|d| d.device)
            .filter(|d| {
                q.status.is_none_or(|s| s == d.status)
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
                    model: q.model,
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

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(client_id): Path<String>,
) -> Result<Json<Device>, ApiError> {
    caller.require(READERS)?;
    Ok(Json(device_json(&find(&state.store, &client_id).await?)))
}

/// Small and cacheable: brokers poll it. ETag is a hash of the body.
async fn status(
    State(state): State<AppState>,
    caller: Caller,
    Path(client_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require(STATUS_READERS)?;
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
