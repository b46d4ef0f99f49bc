//! Operations: liveness, readiness, metrics, the OpenAPI document.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::error::ApiError;
use crate::openapi::Unavailable;
use crate::routes::{Access, Routes};

/// Media type of the metrics: Prometheus's text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4";

pub fn router() -> Routes {
    Routes::new()
        .add(Access::Public, routes!(healthz))
        .add(Access::Public, routes!(readyz))
        .add(Access::Public, routes!(metrics))
        .add(Access::Public, routes!(openapi))
}

/// The answer of `/healthz`.
#[derive(Serialize, ToSchema)]
struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    status: &'static str,
}

/// The answer of `/readyz`.
#[derive(Serialize, ToSchema)]
struct Readiness {
    /// Always `ready`.
    #[schema(example = "ready")]
    status: &'static str,
    /// `sqlite` or `postgres`.
    #[schema(example = "sqlite")]
    database: &'static str,
    /// The device feed's newest seq (0 when empty).
    feed_head: i64,
}

/// Liveness: the process is up.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "Up", body = Health)))]
async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, Json(Health { status: "ok" }))
}

/// Readiness: the database answers and the CA is loaded.
#[utoipa::path(
    get,
    path = "/readyz",
    responses((status = 200, description = "Ready", body = Readiness), (status = 503, response = Unavailable))
)]
async fn readyz(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    state.store.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness: database unreachable");
        ApiError::Unavailable("database unreachable".into())
    })?;
    if state.ca.chain_pem().is_empty() {
        return Err(ApiError::Unavailable("CA not loaded".into()));
    }
    Ok(Json(Readiness {
        status: "ready",
        database: if state.store.is_postgres() {
            "postgres"
        } else {
            "sqlite"
        },
        feed_head: state.feed.head(),
    }))
}

/// Prometheus metrics, in the text exposition format.
#[utoipa::path(
    get,
    path = "/metrics",
    responses((status = 200, description = "The metrics", content_type = PROMETHEUS_TEXT, body = String))
)]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    crate::domain::fleet::refresh_gauges(&state.store, &state.metrics).await;
    (
        [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
        state.metrics.render(),
    )
}

/// This document: OpenAPI 3.1, derived from the route table.
#[utoipa::path(
    get,
    path = "/openapi.json",
    responses((status = 200, description = "An OpenAPI 3.1 document", body = Object))
)]
async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::document_text(),
    )
}
