//! The CA chain and the CRL: public, no token needed.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use std::borrow::Cow;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};
use utoipa_axum::routes;

use crate::app::AppState;
use crate::error::ApiError;
use crate::routes::{Access, Routes};

/// Media type of the chain.
const PEM_CHAIN: &str = "application/pem-certificate-chain";
/// Media type of the CRL.
const PKIX_CRL: &str = "application/pkix-crl";

pub fn router() -> Routes {
    Routes::new()
        .add(Access::Public, routes!(ca_chain))
        .add(Access::Public, routes!(crl))
}

/// The CA chain, PEM: issuing CA first, root last.
#[utoipa::path(
    get,
    path = "/v1/ca",
    responses((status = 200, description = "The chain", content_type = PEM_CHAIN, body = String))
)]
async fn ca_chain(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, PEM_CHAIN)],
        state.ca.chain_pem().to_string(),
    )
}

/// The CRL, DER, signed by the issuing CA: every revoked certificate, and those on hold with
/// reason certificateHold.
#[utoipa::path(
    get,
    path = "/v1/crl",
    responses((status = 200, description = "The CRL", content_type = PKIX_CRL, body = CrlDer))
)]
async fn crl(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let der = state.feed.crl().await?;
    Ok((
        [
            (header::CONTENT_TYPE, PKIX_CRL),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        der,
    ))
}

/// The CRL's body: DER bytes (`format: binary` for generators that predate OpenAPI 3.1's
/// `contentMediaType`).
struct CrlDer;

impl PartialSchema for CrlDer {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .content_media_type(PKIX_CRL)
            .description(Some("A DER-encoded X.509 CRL (RFC 5280)."))
            .into()
    }
}

impl ToSchema for CrlDer {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("CrlDer")
    }
}
