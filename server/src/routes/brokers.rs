//! What brokers need besides device status: their own certificate, per-model settings, and a
//! place to report connection events.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use devid_core::api::{
    BrokerCertificate, BrokerEnrollRequest, EventBatch, ModelList, ModelSettings, Role,
};

use crate::app::{ApiJson, ApiQuery, AppState, NoQuery};
use crate::auth::Caller;
use crate::domain::{brokers, models};
use crate::error::ApiError;
use crate::routes::ctx;
use crate::store::DeviceEvent;
use crate::timefmt;
use devid_core::api::ConnectionEventKind;

/// Most events one `POST /v1/events` may carry.
pub const MAX_EVENTS: usize = 1000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/brokers", post(enroll))
        .route("/v1/events", post(events))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{model}", get(show_model).put(put_model))
}

async fn enroll(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<BrokerEnrollRequest>,
) -> Result<(StatusCode, Json<BrokerCertificate>), ApiError> {
    caller.require(&[Role::Admin])?;
    let audit = caller.audit("broker.enroll", &req.name);
    let work = brokers::enroll(&state.store, &state.ca, &state.profile, &audit, &req);
    let cert = audit.run(&state.store, work).await?;
    Ok((StatusCode::CREATED, Json(cert)))
}

/// Connection events from brokers: kept as last_seen / last_address and counts per device.
async fn events(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(batch): ApiJson<EventBatch>,
) -> Result<StatusCode, ApiError> {
    caller.require(&[Role::Admin, Role::Broker])?;
    if batch.events.len() > MAX_EVENTS {
        return Err(ApiError::PayloadTooLarge(format!(
            "at most {MAX_EVENTS} events per call"
        )));
    }
    let mut rows = Vec::with_capacity(batch.events.len());
    let mut failures = Vec::new();
    for (i, e) in batch.events.into_iter().enumerate() {
        let at = timefmt::parse_rfc3339(&e.at).ok_or_else(|| {
            ApiError::unprocessable(format!("at {:?} is not an RFC 3339 time", e.at)).at_index(i)
        })?;
        if e.kind == ConnectionEventKind::AuthFailure {
            failures.push(e.refusal.clone());
        }
        // A disconnect changes no counter; connects and failures do.
        if e.kind == ConnectionEventKind::Disconnect || e.client_id.is_empty() {
            continue;
        }
        rows.push(DeviceEvent {
            client_id: e.client_id,
            at,
            address: e.address,
            auth_failure: e.kind == ConnectionEventKind::AuthFailure,
        });
    }
    state.store.record_events(&rows).await?;
    for refusal in &failures {
        state.metrics.auth_failure(refusal.as_deref());
    }
    Ok(StatusCode::ACCEPTED)
}

async fn list_models(
    State(state): State<AppState>,
    caller: Caller,
    _: ApiQuery<NoQuery>,
) -> Result<Json<ModelList>, ApiError> {
    caller.require(&[Role::Admin, Role::Auditor, Role::Broker])?;
    let rows = state.store.list_models().await?;
    Ok(Json(ModelList {
        items: rows
            .iter()
            .map(models::settings)
            .collect::<Result<_, _>>()?,
    }))
}

async fn show_model(
    State(state): State<AppState>,
    caller: Caller,
    Path(model): Path<String>,
) -> Result<Json<ModelSettings>, ApiError> {
    caller.require(&[Role::Admin, Role::Auditor, Role::Broker])?;
    state
        .store
        .get_model(&model)
        .await?
        .map(|m| models::settings(&m).map(Json))
        .transpose()?
        .ok_or_else(|| ApiError::NotFound(format!("model {model:?} has no settings")))
}

async fn put_model(
    State(state): State<AppState>,
    caller: Caller,
    Path(model): Path<String>,
    ApiJson(settings): ApiJson<ModelSettings>,
) -> Result<Json<ModelSettings>, ApiError> {
    caller.require(&[Role::Admin])?;
    let audit = caller.audit("model.update", &model);
    let work = models::put(ctx(&state), &audit, &model, settings);
    Ok(Json(audit.run(&state.store, work).await?))
}
