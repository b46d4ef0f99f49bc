//! The CA chain and the CRL: public, no token needed.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::app::AppState;
use crate::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/ca", get(chain))
        .route("/v1/crl", get(crl))
}

/// PEM chain: issuing CA first, root last.
async fn chain(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/pem-certificate-chain")],
        state.ca.chain_pem().to_string(),
    )
}

/// DER CRL signed by the issuing CA.
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
