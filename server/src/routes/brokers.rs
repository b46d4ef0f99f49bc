//! What brokers need besides device status: their own certificate, per-model settings, and a
//! place to report connection events.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use devid_core::api::{
    BrokerCertificate, BrokerEnrollRequest, EventBatch, ModelList, ModelSettings,
};
use devid_core::ModelName;
use utoipa_axum::routes;

use crate::app::{ApiJson, ApiQuery, AppState, NoQuery};
use crate::domain::{brokers, models};
use crate::error::ApiError;
use crate::openapi::{BadRequest, JsonBodyProblems, NotFound};
use crate::routes::{ctx, Guard, Routes, ADMIN, FOLLOWERS, REPORTERS};
use crate::timefmt;
use devid_core::api::ConnectionEventKind;

/// Most events one `POST /v1/events` may carry.
pub const MAX_EVENTS: usize = 1000;

pub fn router() -> Routes {
    Routes::new()
        .add(ADMIN, routes!(enroll_broker))
        .add(REPORTERS, routes!(report_events))
        .add(FOLLOWERS, routes!(list_models))
        .add(FOLLOWERS, routes!(show_model))
        .add(ADMIN, routes!(put_model))
}

/// Enrol a broker: a serverAuth certificate for its CSR (the key stays with the broker).
#[utoipa::path(
    post,
    path = "/v1/brokers",
    request_body = BrokerEnrollRequest,
    responses(
        (status = 201, description = "The broker's certificate", body = BrokerCertificate),
        JsonBodyProblems,
    )
)]
async fn enroll_broker(
    State(state): State<AppState>,
    guard: Guard,
    ApiJson(req): ApiJson<BrokerEnrollRequest>,
) -> Result<(StatusCode, Json<BrokerCertificate>), ApiError> {
    let caller = guard.check()?;
    let audit = caller.audit("broker.enroll", &req.name);
    let work = brokers::enroll(&state.store, &state.ca, &state.profile, &audit, &req);
    let cert = audit.run(&state.store, work).await?;
    Ok((StatusCode::CREATED, Json(cert)))
}

/// Report connection events, at most 1,000 a call, and what the broker saw of sensors'
/// readings since its previous call.
///
/// Connection events are kept as each device's last_seen and last_address, and as counts of
/// refusals by kind. Per sensor, the service keeps the highest seq reported (the `seq_floor`
/// brokers get with its keys), counts of accepted and refused readings (by reason), and as its
/// last_seen its newest accepted reading. Reports for ClientIDs that are not sensors are
/// ignored.
#[utoipa::path(
    post,
    path = "/v1/events",
    request_body = EventBatch,
    responses((status = 202, description = "Recorded"), JsonBodyProblems)
)]
async fn report_events(
    State(state): State<AppState>,
    guard: Guard,
    ApiJson(batch): ApiJson<EventBatch>,
) -> Result<StatusCode, ApiError> {
    guard.check()?;
    let readings = crate::domain::sensors::fold_reports(&batch.sensors)?;
    if batch.events.len() > MAX_EVENTS {
        return Err(ApiError::PayloadTooLarge(format!(
            "at most {MAX_EVENTS} events per call"
        )));
    }
    let parsed = crate::domain::fleet::parse(&batch)?;
    state.store.ingest_batch(&parsed, timefmt::now()).await?;
    state
        .store
        .record_sensor_readings(&readings, timefmt::now())
        .await?;
    let failures = parsed
        .events
        .iter()
        .filter(|e| e.kind == ConnectionEventKind::AuthFailure);
    for e in failures {
        state.metrics.auth_failure(e.refusal.as_deref());
    }
    Ok(StatusCode::ACCEPTED)
}

/// Every model's settings.
#[utoipa::path(
    get,
    path = "/v1/models",
    responses((status = 200, description = "Every model with settings", body = ModelList), (status = 400, response = BadRequest))
)]
async fn list_models(
    State(state): State<AppState>,
    guard: Guard,
    _: ApiQuery<NoQuery>,
) -> Result<Json<ModelList>, ApiError> {
    guard.check()?;
    let rows = state.store.list_models().await?;
    Ok(Json(ModelList {
        items: rows
            .iter()
            .map(models::settings)
            .collect::<Result<_, _>>()?,
    }))
}

/// One model's settings.
#[utoipa::path(
    get,
    path = "/v1/models/{model}",
    params(("model" = ModelName, Path)),
    responses((status = 200, description = "The model's settings", body = ModelSettings), (status = 404, response = NotFound))
)]
async fn show_model(
    State(state): State<AppState>,
    guard: Guard,
    Path(model): Path<String>,
) -> Result<Json<ModelSettings>, ApiError> {
    guard.check()?;
    state
        .store
        .get_model(&model)
        .await?
        .map(|m| models::settings(&m).map(Json))
        .transpose()?
        .ok_or_else(|| ApiError::NotFound(format!("model {model:?} has no settings")))
}

/// Set a model's ClientID prefix, topic templates and message authentication.
///
/// Brokers apply the change to the model's live connections through the feed.
#[utoipa::path(
    put,
    path = "/v1/models/{model}",
    params(("model" = ModelName, Path)),
    request_body = ModelSettings,
    responses((status = 200, description = "The model's settings now", body = ModelSettings), JsonBodyProblems)
)]
async fn put_model(
    State(state): State<AppState>,
    guard: Guard,
    Path(model): Path<String>,
    ApiJson(settings): ApiJson<ModelSettings>,
) -> Result<Json<ModelSettings>, ApiError> {
    let caller = guard.check()?;
    let audit = caller.audit("model.update", &model);
    let work = models::put(ctx(&state), &audit, &model, settings);
    Ok(Json(audit.run(&state.store, work).await?))
}
