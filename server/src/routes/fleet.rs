//! Fleet health: the summary, the findings of the fleet checks, a device's health and
//! timeline, and per-model check thresholds.

use axum::extract::{Path, State};
use axum::Json;
use devid_core::api::{
    AppEvent, AppEventPage, CertState, CheckName, CheckThresholds, ConnectionSeen, DeviceHealth,
    Finding, FindingCount, FindingPage, FleetActivity, FleetSummary, ReasonCount, Severity,
};
use devid_core::ModelName;
use serde::Deserialize;
use utoipa_axum::routes;

use crate::app::{ApiJson, ApiQuery, AppState, NoQuery};
use crate::error::ApiError;
use crate::openapi::{BadRequest, JsonBodyProblems, NotFound};
use crate::routes::{Guard, Routes, ADMIN, APP_READERS};
use crate::store::{AppEventRow, FindingFilter, FindingRow};
use crate::timefmt::{self, rfc3339, rfc3339_opt};

pub fn router() -> Routes {
    Routes::new()
        .add(APP_READERS, routes!(summary))
        .add(APP_READERS, routes!(activity))
        .add(APP_READERS, routes!(findings))
        .add(APP_READERS, routes!(device_health))
        .add(APP_READERS, routes!(device_timeline))
        .add(APP_READERS, routes!(get_checks))
        .add(ADMIN, routes!(put_checks))
}

fn finding(f: FindingRow) -> Finding {
    Finding {
        id: f.id,
        check: f.check_name,
        severity: f.severity,
        subject: f.subject,
        client_id: f.client_id,
        model: f.model,
        opened_at: rfc3339(f.opened_at),
        closed_at: rfc3339_opt(f.closed_at),
        detail: f.detail,
    }
}

fn app_event(e: AppEventRow) -> AppEvent {
    AppEvent {
        id: e.seq,
        kind: e.kind,
        at: rfc3339(e.at),
        client_id: e.client_id,
        model: e.model,
        data: serde_json::from_str(&e.data).unwrap_or(serde_json::Value::Null),
    }
}

fn cursor(c: Option<&str>) -> Result<Option<i64>, ApiError> {
    c.map(|c| {
        c.parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| ApiError::BadRequest(format!("cursor {c:?} is not one this API gave")))
    })
    .transpose()
}

/// The fleet at a glance: devices by status, connected now, never seen, open findings by
/// check and severity, brokers live and known.
///
/// Counts by status and never seen come from counters the database keeps as devices change
/// (no device row is read), connections and brokers from their own tables.
#[utoipa::path(
    get,
    path = "/v1/fleet/summary",
    responses((status = 200, description = "The counts", body = FleetSummary), (status = 400, response = BadRequest))
)]
async fn summary(
    State(state): State<AppState>,
    guard: Guard,
    _: ApiQuery<NoQuery>,
) -> Result<Json<FleetSummary>, ApiError> {
    guard.check()?;
    let now = timefmt::now();
    let c = state.store.fleet_counts(now).await?;
    let findings = state
        .store
        .open_finding_counts()
        .await?
        .into_iter()
        .map(|(check, severity, n)| FindingCount {
            check,
            severity,
            open: n.unsigned_abs(),
        })
        .collect();
    let u = |n: i64| n.unsigned_abs();
    Ok(Json(FleetSummary {
        total: u(c.active + c.suspended + c.revoked),
        active: u(c.active),
        suspended: u(c.suspended),
        revoked: u(c.revoked),
        connected_now: u(c.connected_now),
        never_seen: u(c.never_seen),
        findings,
        brokers_live: u(c.brokers_live),
        brokers_known: u(c.brokers_known),
        at: rfc3339(now),
    }))
}

/// What the console plots: connections and failed authentications per hour over the last 24
/// hours, registrations per day over the last 30 days, valid certificates by the month of their
/// notAfter over the next 12 months (this month first). Every period is listed, zeros included.
#[utoipa::path(
    get,
    path = "/v1/fleet/activity",
    responses((status = 200, description = "Counts per period", body = FleetActivity), (status = 400, response = BadRequest))
)]
async fn activity(
    State(state): State<AppState>,
    guard: Guard,
    _: ApiQuery<NoQuery>,
) -> Result<Json<FleetActivity>, ApiError> {
    guard.check()?;
    let now = timefmt::now();
    let counts = state.store.fleet_activity(now).await?;
    Ok(Json(crate::domain::fleet::activity::activity(now, &counts)))
}

/// `GET /v1/fleet/findings` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FindingQuery {
    pub check: Option<CheckName>,
    pub severity: Option<Severity>,
    pub model: Option<String>,
    /// `open` (default), `closed` or `all`.
    pub state: Option<String>,
    pub cursor: Option<String>,
    /// At most 1,000 (default 100).
    pub limit: Option<u32>,
}

/// Findings of the fleet checks, newest first.
#[utoipa::path(
    get,
    path = "/v1/fleet/findings",
    params(FindingQuery),
    responses((status = 200, description = "A page of findings", body = FindingPage), (status = 400, response = BadRequest))
)]
async fn findings(
    State(state): State<AppState>,
    guard: Guard,
    ApiQuery(q): ApiQuery<FindingQuery>,
) -> Result<Json<FindingPage>, ApiError> {
    guard.check()?;
    let which = match q.state.as_deref().unwrap_or("open") {
        "open" => "open",
        "closed" => "closed",
        "all" => "all",
        other => {
            return Err(ApiError::BadRequest(format!(
                "state {other:?} is not open, closed or all"
            )))
        }
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let filter = FindingFilter {
        check: q.check,
        severity: q.severity,
        model: q.model,
        client_id: None,
        state: which,
    };
    let rows = state
        .store
        .list_findings(&filter, cursor(q.cursor.as_deref())?, limit + 1)
        .await?;
    Ok(Json(page(
        rows,
        limit,
        |f| f.id,
        finding,
        |items, next| FindingPage {
            items,
            next_cursor: next,
        },
    )))
}

/// The first `limit` rows as items, and a cursor when there were more.
fn page<R, T, P>(
    mut rows: Vec<R>,
    limit: u32,
    id: impl Fn(&R) -> i64,
    item: impl Fn(R) -> T,
    make: impl Fn(Vec<T>, Option<String>) -> P,
) -> P {
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next = if more {
        rows.last().map(|r| id(r).to_string())
    } else {
        None
    };
    make(rows.into_iter().map(item).collect(), next)
}

/// What devid knows of a device's health: when it was first and last seen, where it is
/// connected now, its last connect and disconnect, failed authentications by reason, PUBLISH
/// counters, software version, certificate expiry and open findings.
#[utoipa::path(
    get,
    path = "/v1/devices/{client_id}/health",
    params(("client_id" = devid_core::ClientId, Path)),
    responses((status = 200, description = "The device's health", body = DeviceHealth), (status = 404, response = NotFound))
)]
async fn device_health(
    State(state): State<AppState>,
    guard: Guard,
    Path(client_id): Path<String>,
    _: ApiQuery<NoQuery>,
) -> Result<Json<DeviceHealth>, ApiError> {
    guard.check()?;
    let device = state
        .store
        .get_device(&client_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no device {client_id:?}")))?;
    let rows = state.store.device_health_rows(&client_id).await?;
    let findings = state
        .store
        .list_findings(
            &FindingFilter {
                check: None,
                severity: None,
                model: None,
                client_id: Some(client_id.clone()),
                state: "open",
            },
            None,
            1000,
        )
        .await?;
    let now = timefmt::now();
    let cert_not_after = device
        .certs
        .iter()
        .filter(|c| c.status == CertState::Good && c.not_after > now)
        .map(|c| c.not_after)
        .max();
    let h = rows.health;
    let seen = |at: Option<i64>, address, broker, auth: Option<&str>| {
        at.map(|at| ConnectionSeen {
            at: rfc3339(at),
            address,
            broker,
            auth: auth.and_then(devid_core::api::AuthMethod::parse),
        })
    };
    Ok(Json(DeviceHealth {
        client_id: device.device.client_id.clone(),
        status: device.device.status,
        model: device.device.model.clone(),
        first_seen: rfc3339_opt(h.as_ref().and_then(|h| h.first_seen)),
        last_seen: rfc3339_opt(device.device.last_seen),
        connected_on: rows.connected_on,
        last_connect: h.as_ref().and_then(|h| {
            seen(
                h.connect_at,
                h.connect_address.clone(),
                h.connect_broker.clone(),
                h.connect_auth.as_deref(),
            )
        }),
        last_disconnect: h.as_ref().and_then(|h| {
            seen(
                h.disconnect_at,
                h.disconnect_address.clone(),
                h.disconnect_broker.clone(),
                None,
            )
        }),
        auth_failures: rows
            .auth_failures
            .into_iter()
            .map(|(reason, n)| ReasonCount {
                reason,
                count: n.unsigned_abs(),
            })
            .collect(),
        published: h.as_ref().map_or(0, |h| h.published.unsigned_abs()),
        refused: h.as_ref().map_or(0, |h| h.refused.unsigned_abs()),
        sw_version: h.as_ref().and_then(|h| h.sw_version.clone()),
        cert_not_after: rfc3339_opt(cert_not_after),
        findings: findings.into_iter().map(finding).collect(),
    }))
}

/// `GET /v1/devices/{client_id}/timeline` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TimelineQuery {
    pub cursor: Option<String>,
    /// At most 1,000 (default 100).
    pub limit: Option<u32>,
}

/// A device's events (connects, disconnects, failed authentications, status changes,
/// findings, certificates), newest first, kept for the server's `timeline_retention`.
#[utoipa::path(
    get,
    path = "/v1/devices/{client_id}/timeline",
    params(("client_id" = devid_core::ClientId, Path), TimelineQuery),
    responses((status = 200, description = "A page of events", body = AppEventPage), (status = 404, response = NotFound))
)]
async fn device_timeline(
    State(state): State<AppState>,
    guard: Guard,
    Path(client_id): Path<String>,
    ApiQuery(q): ApiQuery<TimelineQuery>,
) -> Result<Json<AppEventPage>, ApiError> {
    guard.check()?;
    if state.store.get_device(&client_id).await?.is_none() {
        return Err(ApiError::NotFound(format!("no device {client_id:?}")));
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows = state
        .store
        .device_timeline(&client_id, cursor(q.cursor.as_deref())?, limit + 1)
        .await?;
    Ok(Json(page(
        rows,
        limit,
        |e| e.seq,
        app_event,
        |items, next| AppEventPage {
            items,
            next_cursor: next,
        },
    )))
}

/// A model's fleet-check thresholds (absent fields are the defaults).
#[utoipa::path(
    get,
    path = "/v1/fleet/checks/{model}",
    params(("model" = ModelName, Path)),
    responses((status = 200, description = "The thresholds", body = CheckThresholds), (status = 400, response = BadRequest))
)]
async fn get_checks(
    State(state): State<AppState>,
    guard: Guard,
    Path(model): Path<ModelName>,
    _: ApiQuery<NoQuery>,
) -> Result<Json<CheckThresholds>, ApiError> {
    guard.check()?;
    Ok(Json(
        state
            .store
            .get_check_thresholds(model.as_str())
            .await?
            .unwrap_or_default(),
    ))
}

/// Set a model's fleet-check thresholds; absent fields take the defaults.
#[utoipa::path(
    put,
    path = "/v1/fleet/checks/{model}",
    params(("model" = ModelName, Path)),
    request_body = CheckThresholds,
    responses((status = 200, description = "The thresholds now", body = CheckThresholds), JsonBodyProblems)
)]
async fn put_checks(
    State(state): State<AppState>,
    guard: Guard,
    Path(model): Path<ModelName>,
    ApiJson(t): ApiJson<CheckThresholds>,
) -> Result<Json<CheckThresholds>, ApiError> {
    let caller = guard.check()?;
    let audit = caller.audit("fleet.checks", model.as_str());
    let work = async {
        state
            .store
            .put_check_thresholds(model.as_str(), &t, &audit.ok())
            .await
            .map_err(crate::domain::DomainError::from)
    };
    audit.run(&state.store, work).await?;
    Ok(Json(t))
}
