//! The CA chain and the CRL: public, no token needed.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use std::borrow::Cow;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};
use utoipa_axum::routes;

use crate::app::AppState;
use crate::domain::{issuers, DomainError};
use crate::error::ApiError;
use crate::feed::CrlOf;
use crate::openapi::NotFound;
use crate::registry::der_to_pem;
use crate::routes::{Access, Routes};
use crate::timefmt;

/// Media type of the chain.
const PEM_CHAIN: &str = "application/pem-certificate-chain";
/// Media type of the CRL.
const PKIX_CRL: &str = "application/pkix-crl";

pub fn router() -> Routes {
    Routes::new()
        .add(Access::Public, routes!(ca_chain))
        .add(Access::Public, routes!(crl))
        .add(Access::Public, routes!(crl_root))
        .add(Access::Public, routes!(crl_issuing))
}

/// The CA certificates, PEM: the active issuing CA first (the one new certificates come from),
/// then every other issuing CA still in use (retired after a rotation, while certificates it
/// signed may still be valid; never a revoked one), root last.
#[utoipa::path(
    get,
    path = "/v1/ca",
    responses((status = 200, description = "The chain", content_type = PEM_CHAIN, body = String))
)]
async fn ca_chain(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let set = issuers::ca_set_der(&state.store, &state.ca, timefmt::now()).await?;
    let body: String = set.iter().map(|d| der_to_pem(d)).collect();
    Ok(([(header::CONTENT_TYPE, PEM_CHAIN)], body))
}

/// The root's CRL (ARL), DER, signed by the root key: every revoked issuing CA. 404 when this
/// service does not keep the root's key (an imported CA).
#[utoipa::path(
    get,
    path = "/v1/crl/root",
    responses(
        (status = 200, description = "The root's CRL", content_type = PKIX_CRL, body = CrlDer),
        (status = 404, response = NotFound)
    )
)]
async fn crl_root(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let der = state.feed.crl_of(CrlOf::Root).await?;
    Ok(crl_answer(der))
}

/// One issuing CA's CRL, DER, signed by it: every certificate it signed that is revoked, and
/// those on hold with reason certificateHold. Each certificate's CRL distribution point names
/// this URL for its own issuer. 404 for an unknown or revoked issuing CA.
#[utoipa::path(
    get,
    path = "/v1/crl/issuing/{id}",
    params(("id" = String, Path, description = "The issuing CA's id (first 8 bytes of its key identifier, hex)")),
    responses(
        (status = 200, description = "The CRL", content_type = PKIX_CRL, body = CrlDer),
        (status = 404, response = NotFound)
    )
)]
async fn crl_issuing(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let issuer = state
        .ca
        .issuer(&id)
        .ok_or_else(|| DomainError::NotFound(format!("no issuing CA {id:?} in use")))?;
    let der = state.feed.crl_of(CrlOf::Issuer(issuer)).await?;
    Ok(crl_answer(der))
}

fn crl_answer(der: Vec<u8>) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, PKIX_CRL),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        der,
    )
}

/// The active issuing CA's CRL (the same as `/v1/crl/issuing/{id}` for its id), DER: every
/// certificate it signed that is revoked, and those on hold with reason certificateHold.
#[utoipa::path(
    get,
    path = "/v1/crl",
    responses((status = 200, description = "The CRL", content_type = PKIX_CRL, body = CrlDer))
)]
async fn crl(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let der = state.feed.crl().await?;
    Ok(crl_answer(der))
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
