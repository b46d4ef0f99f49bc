//! Webhooks (admin): create (the secret is shown once), list, delete, their deliveries and a
//! redelivery. The worker that sends them is `crate::webhooks`; the rules are
//! `domain::webhooks`; `docs/webhooks.md` tells a receiver how to check the signature.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use devid_core::api::{
    CreateWebhookRequest, CreatedWebhook, Webhook, WebhookDeliveries, WebhookDelivery, WebhookList,
};
use utoipa_axum::routes;

use crate::app::{ApiJson, ApiQuery, AppState, NoQuery};
use crate::domain::webhooks::{self, delivery_json, webhook_json};
use crate::error::ApiError;
use crate::openapi::{BadRequest, JsonBodyProblems, NotFound};
use crate::routes::{Guard, Routes, ADMIN};

/// A delivery listing shows at most this many, newest first.
const DELIVERIES_SHOWN: i64 = 1000;

pub fn router() -> Routes {
    Routes::new()
        .add(ADMIN, routes!(create_webhook))
        .add(ADMIN, routes!(list_webhooks))
        .add(ADMIN, routes!(delete_webhook))
        .add(ADMIN, routes!(list_deliveries))
        .add(ADMIN, routes!(redeliver))
}

/// Create a webhook: the events of `kinds` (about devices of `models`, if given) are POSTed to
/// `url`, signed with the secret in this answer (shown this once).
#[utoipa::path(
    post,
    path = "/v1/webhooks",
    request_body = CreateWebhookRequest,
    responses(
        (status = 201, description = "Created; `secret` signs every delivery", body = CreatedWebhook),
        JsonBodyProblems,
    )
)]
async fn create_webhook(
    State(state): State<AppState>,
    guard: Guard,
    ApiJson(req): ApiJson<CreateWebhookRequest>,
) -> Result<(StatusCode, Json<CreatedWebhook>), ApiError> {
    let caller = guard.check()?;
    let audit = caller.audit("webhook.create", &req.url);
    let (row, secret) = audit
        .run(
            &state.store,
            webhooks::create(&state.store, &state.kek, &audit, &req),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedWebhook {
            webhook: webhook_json(&row),
            secret,
        }),
    ))
}

/// List webhooks (never their secrets).
#[utoipa::path(
    get,
    path = "/v1/webhooks",
    responses((status = 200, description = "Every webhook", body = WebhookList), (status = 400, response = BadRequest))
)]
async fn list_webhooks(
    State(state): State<AppState>,
    guard: Guard,
    _: ApiQuery<NoQuery>,
) -> Result<Json<WebhookList>, ApiError> {
    guard.check()?;
    let rows = state.store.webhooks().await?;
    Ok(Json(WebhookList {
        items: rows.iter().map(webhook_json).collect(),
    }))
}

/// Delete a webhook and its deliveries: nothing more is sent to it.
#[utoipa::path(
    delete,
    path = "/v1/webhooks/{id}",
    params(("id" = String, Path, description = "The webhook's id")),
    responses(
        (status = 200, description = "The webhook, deleted", body = Webhook),
        (status = 404, response = NotFound),
    )
)]
async fn delete_webhook(
    State(state): State<AppState>,
    guard: Guard,
    Path(id): Path<String>,
) -> Result<Json<Webhook>, ApiError> {
    let caller = guard.check()?;
    let audit = caller.audit("webhook.delete", &id);
    let row = audit
        .run(&state.store, webhooks::delete(&state.store, &audit, &id))
        .await?;
    Ok(Json(webhook_json(&row)))
}

/// A webhook's deliveries, newest event first (at most 1,000).
#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}/deliveries",
    params(("id" = String, Path, description = "The webhook's id")),
    responses(
        (status = 200, description = "Deliveries, newest first", body = WebhookDeliveries),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    )
)]
async fn list_deliveries(
    State(state): State<AppState>,
    guard: Guard,
    Path(id): Path<String>,
    _: ApiQuery<NoQuery>,
) -> Result<Json<WebhookDeliveries>, ApiError> {
    guard.check()?;
    webhooks::get(&state.store, &id).await?;
    let rows = state
        .store
        .webhook_deliveries(&id, DELIVERIES_SHOWN)
        .await?;
    Ok(Json(WebhookDeliveries {
        items: rows.iter().map(|(d, e)| delivery_json(d, e)).collect(),
    }))
}

/// Deliver an event again: the delivery is pending again, due now, with a fresh 24 h of
/// attempts (it goes before the webhook's later pending deliveries).
#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/deliveries/{delivery}/redeliver",
    params(
        ("id" = String, Path, description = "The webhook's id"),
        ("delivery" = i64, Path, description = "The delivery's id"),
    ),
    responses(
        (status = 200, description = "The delivery, pending again", body = WebhookDelivery),
        (status = 404, response = NotFound),
    )
)]
async fn redeliver(
    State(state): State<AppState>,
    guard: Guard,
    Path((id, delivery)): Path<(String, String)>,
) -> Result<Json<WebhookDelivery>, ApiError> {
    let caller = guard.check()?;
    // Parsed after the role check, so that a caller without the role learns nothing more.
    let delivery: i64 = delivery
        .parse()
        .map_err(|_| ApiError::BadRequest("the delivery is a number (its id)".into()))?;
    let audit = caller.audit("webhook.redeliver", &format!("{id}/{delivery}"));
    let (row, event) = audit
        .run(
            &state.store,
            webhooks::redeliver(&state.store, &audit, &id, delivery),
        )
        .await?;
    Ok(Json(delivery_json(&row, &event)))
}
