//! The CA chain and the CRL: public, no token needed.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::error::ApiError;
use crate::openapi::CrlDer;
use crate::routes::{Access, Routes};

pub fn router() -> Routes {
    Routes::new()
        .add(Access::Public, routes!(ca_chain))
        .add(Access::Public, routes!(crl))
}

/// The CA chain, PEM: issuing CA first, root last.
#[utoipa::path(
    get,
    path = "/v1/ca",
    responses((status = 200, description = "The chain", content_type = "application/pem-certificate-chain", body = String))
)]
async fn ca_chain(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/pem-certificate-chain")],
        state.ca.chain_pem().to_string(),
    )
}

/// The CRL, DER, signed by the issuing CA: every revoked certificate, and those on hold with
/// reason certificateHold.
#[utoipa::path(
    get,
    path = "/v1/crl",
    responses((status = 200, description = "The CRL", content_type = "application/pkix-crl", body = CrlDer))
)]
async fn crl(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let der = state.feed.crl().await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/pkix-crl"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        der,
    ))
}
