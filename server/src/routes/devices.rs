//! Devices: registration, queries, status for brokers, revocation and suspension.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine as _;
use devid_core::api::{
    AllowList, BatchResponse, CertificateInfo, Device, DeviceList, DeviceListQuery, DeviceStatus,
    DeviceSummary, PolicyUpdate, ReasonRequest, RegisterRequest, RevocationReason, RevokeRequest,
    Role, TopicPolicy, MAX_BATCH_ITEMS,
};
use devid_core::clientid;
use devid_core::Cidr;

use crate::app::{ApiJson, ApiQuery, AppState};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::registry::der_to_pem;
use crate::store::{
    CertRow, DeviceFilter, DevicePolicyChange, DeviceRow, DeviceWithCerts, FeedEntryRow,
};
use crate::timefmt::{self, rfc3339, rfc3339_opt};

const READERS: &[Role] = &[Role::Admin, Role::Auditor];
/// Longest comment kept with a suspension.
const MAX_COMMENT_CHARS: usize = 500;
const REGISTRARS: &[Role] = &[Role::Admin, Role::Factory];
const STATUS_READERS: &[Role] = &[Role::Admin, Role::Auditor, Role::Broker];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/devices", post(register).get(list))
        .route("/v1/devices/batch", post(register_batch))
        .route("/v1/devices/{client_id}", get(show))
        .route("/v1/devices/{client_id}/status", get(status))
        .route("/v1/devices/{client_id}/revoke", post(revoke))
        .route("/v1/devices/{client_id}/suspend", post(suspend))
        .route("/v1/devices/{client_id}/resume", post(resume))
        .route("/v1/devices/{client_id}/allowlist", put(set_allowlist))
        .route("/v1/devices/{client_id}/policy", put(set_policy))
        .route("/v1/certificates/{serial}", get(show_certificate))
        .route("/v1/certificates/{serial}/revoke", post(revoke_certificate))
}

async fn register(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<Response, ApiError> {
    caller.require(REGISTRARS)?;
    let target = req.hardware_serial.clone();
    let result = state.registry.register_one(&caller, req).await;
    let answer = state
        .audited(&caller, "device.register", &target, result)
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
    let result = async {
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
        state.registry.register_batch(&caller, items).await
    }
    .await;
    let (items, created) = state
        .audited(
            &caller,
            "device.register_batch",
            &format!("{n} items"),
            result,
        )
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

/// Looks a device up by ClientID, refusing malformed ids and explaining likely typos.
async fn find(state: &AppState, client_id: &str) -> Result<DeviceWithCerts, ApiError> {
    clientid::validate(client_id)
        .map_err(|e| ApiError::unprocessable(format!("client_id: {e}")))?;
    match state.store.get_device(client_id).await? {
        Some(d) => Ok(d),
        None => match clientid::verify_check(client_id) {
            Err(e) => Err(ApiError::unprocessable(format!("client_id: {e}"))),
            Ok(()) => Err(ApiError::NotFound(format!(
                "no device has ClientID {client_id}"
            ))),
        },
    }
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(client_id): Path<String>,
) -> Result<Json<Device>, ApiError> {
    caller.require(READERS)?;
    Ok(Json(device_json(&find(&state, &client_id).await?)))
}

/// Small and cacheable: brokers poll it. ETag is a hash of the body.
async fn status(
    State(state): State<AppState>,
    caller: Caller,
    Path(client_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require(STATUS_READERS)?;
    let d = find(&state, &client_id).await?;
    let body = status_json(&state, &d).await?;
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

/// The policy that applies to a device: its own settings, else its model's, else the defaults.
pub struct EffectivePolicy {
    pub topics: TopicPolicy,
    pub allowed_cidrs: Vec<String>,
    pub message_auth: String,
}

pub async fn effective_policy(
    state: &AppState,
    d: &DeviceRow,
) -> Result<EffectivePolicy, ApiError> {
    let own = state
        .store
        .get_device_policy(&d.client_id)
        .await?
        .unwrap_or_default();
    let model = match &d.model {
        Some(m) => state.store.get_model(m).await?,
        None => None,
    };
    let parse = |json: &str| -> Result<TopicPolicy, ApiError> {
        serde_json::from_str(json).map_err(ApiError::internal)
    };
    let topics = match (
        &own.topic_policy,
        model.as_ref().and_then(|m| m.topic_policy.as_ref()),
    ) {
        (Some(t), _) | (None, Some(t)) => parse(t)?,
        (None, None) => TopicPolicy::default(),
    };
    let message_auth = own
        .message_auth
        .or_else(|| model.and_then(|m| m.message_auth))
        .unwrap_or_else(|| "off".to_string());
    Ok(EffectivePolicy {
        topics,
        allowed_cidrs: own.allowed_cidrs.unwrap_or_default(),
        message_auth,
    })
}

async fn status_json(state: &AppState, d: &DeviceWithCerts) -> Result<DeviceStatus, ApiError> {
    let policy = effective_policy(state, &d.device).await?;
    let expand = |v: &[String]| -> Vec<String> {
        v.iter()
            .map(|t| t.replace("%c", &d.device.client_id))
            .collect()
    };
    Ok(DeviceStatus {
        client_id: d.device.client_id.clone(),
        status: d.device.status,
        model: d.device.model.clone(),
        revoked_serials: d
            .certs
            .iter()
            .filter(|c| c.status != devid_core::api::CertState::Good)
            .map(|c| c.serial.clone())
            .collect(),
        policy: Some(TopicPolicy {
            publish: expand(&policy.topics.publish),
            subscribe: expand(&policy.topics.subscribe),
        }),
        allowed_cidrs: policy.allowed_cidrs,
        message_auth: policy.message_auth,
    })
}

async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(client_id): Path<String>,
    ApiJson(req): ApiJson<RevokeRequest>,
) -> Result<Json<Device>, ApiError> {
    caller.require(&[Role::Admin])?;
    let result = async {
        if req.reason == RevocationReason::CertificateHold {
            return Err(ApiError::unprocessable(
                "certificateHold is what suspend does; use POST .../suspend",
            ));
        }
        find(&state, &client_id).await?;
        let (d, entry) = state
            .store
            .revoke_device(&client_id, req.reason, timefmt::now(), &caller.actor())
            .await?;
        changed(&state, Some(&entry));
        Ok(d)
    }
    .await;
    state
        .audited(&caller, "device.revoke", &client_id, result)
        .await
        .map(|d| Json(device_json(&d)))
}

async fn suspend(
    State(state): State<AppState>,
    caller: Caller,
    Path(client_id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Device>, ApiError> {
    caller.require(&[Role::Admin])?;
    let result = async {
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
        find(&state, &client_id).await?;
        let (d, entry) = state
            .store
            .suspend_device(
                &client_id,
                timefmt::now(),
                &caller.actor(),
                comment.as_deref(),
            )
            .await?;
        changed(&state, entry.as_ref());
        Ok(d)
    }
    .await;
    state
        .audited(&caller, "device.suspend", &client_id, result)
        .await
        .map(|d| Json(device_json(&d)))
}

async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(client_id): Path<String>,
) -> Result<Json<Device>, ApiError> {
    caller.require(&[Role::Admin])?;
    let result = async {
        find(&state, &client_id).await?;
        let (d, entry) = state
            .store
            .resume_device(&client_id, timefmt::now(), &caller.actor())
            .await?;
        changed(&state, entry.as_ref());
        Ok(d)
    }
    .await;
    state
        .audited(&caller, "device.resume", &client_id, result)
        .await
        .map(|d| Json(device_json(&d)))
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
    let result = async {
        let serial = normalize_serial(&serial)?;
        if req.reason == RevocationReason::CertificateHold {
            return Err(ApiError::unprocessable(
                "certificateHold applies to devices: use POST /v1/devices/{client_id}/suspend",
            ));
        }
        let (cert, entry) = state
            .store
            .revoke_certificate(&serial, req.reason, timefmt::now(), &caller.actor())
            .await
            .map_err(|e| match e {
                crate::store::StoreError::NotFound => {
                    ApiError::NotFound(format!("no certificate has serial {serial}"))
                }
                other => other.into(),
            })?;
        changed(&state, Some(&entry));
        Ok(cert)
    }
    .await;
    state
        .audited(&caller, "certificate.revoke", &serial, result)
        .await
        .map(|c| Json(cert_json(&c)))
}

async fn set_allowlist(
    State(state): State<AppState>,
    caller: Caller,
    Path(client_id): Path<String>,
    ApiJson(req): ApiJson<AllowList>,
) -> Result<Json<DeviceStatus>, ApiError> {
    caller.require(&[Role::Admin])?;
    let result = async {
        // Parsed by core's one CIDR rule and stored in its canonical text, which the broker
        // plugin reads with the same rule.
        let cidrs = req
            .cidrs
            .iter()
            .map(|c| {
                Cidr::parse(c)
                    .map(|c| c.to_string())
                    .map_err(|e| ApiError::unprocessable(e.to_string()))
            })
            .collect::<Result<Vec<String>, ApiError>>()?;
        find(&state, &client_id).await?;
        // Only the allow-list changes: a concurrent policy change keeps its fields.
        let change = DevicePolicyChange {
            allowed_cidrs: Some(Some(cidrs.clone()).filter(|c| !c.is_empty())),
            ..DevicePolicyChange::default()
        };
        let audit = caller.audit_ok(
            "device.allowlist",
            &format!("{client_id}: {}", cidrs.join(" ")),
        );
        let entry = state
            .store
            .change_device_policy(&client_id, &change, &audit)
            .await?;
        state.feed.notify(entry.seq);
        find(&state, &client_id).await
    }
    .await;
    let d = state
        .audited(&caller, "device.allowlist", &client_id, result)
        .await?;
    Ok(Json(status_json(&state, &d).await?))
}

async fn set_policy(
    State(state): State<AppState>,
    caller: Caller,
    Path(client_id): Path<String>,
    ApiJson(req): ApiJson<PolicyUpdate>,
) -> Result<Json<DeviceStatus>, ApiError> {
    caller.require(&[Role::Admin])?;
    let result = async {
        if let Some(m) = &req.message_auth {
            validate_message_auth(m)?;
        }
        if let Some(t) = &req.topics {
            validate_topics(t)?;
        }
        find(&state, &client_id).await?;
        // Only the fields given change: a concurrent allow-list change keeps its own.
        let change = DevicePolicyChange {
            topic_policy: match &req.topics {
                Some(t) => Some(Some(serde_json::to_string(t).map_err(ApiError::internal)?)),
                None => None,
            },
            message_auth: req.message_auth.clone().map(Some),
            ..DevicePolicyChange::default()
        };
        let audit = caller.audit_ok("device.policy", &client_id);
        let entry = state
            .store
            .change_device_policy(&client_id, &change, &audit)
            .await?;
        state.feed.notify(entry.seq);
        find(&state, &client_id).await
    }
    .await;
    let d = state
        .audited(&caller, "device.policy", &client_id, result)
        .await?;
    Ok(Json(status_json(&state, &d).await?))
}

pub fn validate_message_auth(m: &str) -> Result<(), ApiError> {
    match m {
        "off" | "required" => Ok(()),
        other => Err(ApiError::unprocessable(format!(
            "message_auth must be \"off\" or \"required\", not {other:?}"
        ))),
    }
}

/// Topic filters: non-empty, no NUL, `#` only as the last level, `+` only as a whole level.
pub fn validate_topics(t: &TopicPolicy) -> Result<(), ApiError> {
    for filter in t.publish.iter().chain(&t.subscribe) {
        let levels: Vec<&str> = filter.split('/').collect();
        let bad = filter.is_empty()
            || filter.len() > 1024
            || filter.contains('\0')
            || levels.iter().enumerate().any(|(i, l)| {
                (l.contains('#') && (*l != "#" || i != levels.len() - 1))
                    || (l.contains('+') && *l != "+")
            });
        if bad {
            return Err(ApiError::unprocessable(format!(
                "{filter:?} is not a valid MQTT topic filter"
            )));
        }
    }
    Ok(())
}

/// After a committed change: spread the news and refresh the CRL.
fn changed(state: &AppState, entry: Option<&FeedEntryRow>) {
    if let Some(e) = entry {
        state.feed.notify(e.seq);
        state.metrics.status_changed(e.action);
        state.feed.refresh_crl_soon();
    }
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
    fn serials_normalize() {
        assert_eq!(normalize_serial("0A:FF").ok().as_deref(), Some("0aff"));
        assert_eq!(normalize_serial("00aF").ok().as_deref(), Some("af"));
        assert_eq!(normalize_serial("abc").ok().as_deref(), Some("0abc"));
        assert!(normalize_serial("xyz").is_err());
        assert!(normalize_serial("00").is_err());
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        assert_eq!(decode_cursor(&encode_cursor(42)).ok(), Some(42));
        assert!(decode_cursor("!!").is_err());
        assert!(decode_cursor("AAAA").is_err());
    }

    #[test]
    fn topics_are_checked() {
        let ok = TopicPolicy {
            publish: vec!["devices/%c/#".into(), "a/+/b".into()],
            subscribe: vec!["#".into()],
        };
        assert!(validate_topics(&ok).is_ok());
        for bad in ["a/#/b", "a#", "a/b+", ""] {
            let t = TopicPolicy {
                publish: vec![bad.into()],
                subscribe: vec![],
            };
            assert!(validate_topics(&t).is_err(), "{bad}");
        }
    }
}
