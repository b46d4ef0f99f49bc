//! Shared state and the router.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts};
use axum::http::request::Parts;
use axum::Router;
use devid_core::profile::ProfileSettings;
use tokio::sync::watch;

use crate::auth::{Caller, TokenCache};
use crate::ca::Ca;
use crate::config::Settings;
use crate::error::ApiError;
use crate::feed::Feed;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::routes;
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub ca: Arc<Ca>,
    /// Opens sensors' sealed keys (the broker's key endpoint).
    pub kek: Arc<crate::ca::SensorKek>,
    pub settings: Arc<Settings>,
    pub profile: Arc<ProfileSettings>,
    pub registry: Registry,
    /// LDevID issuances waiting for a shared transaction.
    pub ldevids: crate::ldevid::LdevidQueue,
    pub feed: Arc<Feed>,
    pub metrics: Arc<Metrics>,
    pub tokens: Arc<TokenCache>,
    /// Turns true when the server starts shutting down (ends SSE streams).
    pub shutdown: watch::Receiver<bool>,
}

impl AppState {
    /// Records a refused call in the audit log (see [`crate::domain::audit::Audit::failed`]).
    pub async fn audit_failure(
        &self,
        caller: &Caller,
        action: &'static str,
        target: &str,
        err: &ApiError,
    ) {
        caller.audit(action, target).failed(&self.store, err).await;
    }
}

/// JSON body extractor whose rejections are problem documents.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// Query extractor whose rejections are problem documents. A parameter that `T` does not
/// take is refused (400, naming it) rather than ignored: a misspelled filter must not turn a
/// narrow query (or a bulk operation) into one over everything.
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        use axum::extract::Query;
        if let Some(known) = crate::edge::query_fields::<T>() {
            let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)?;
            let mut unknown: Vec<String> = Vec::new();
            for (name, _) in pairs {
                if !name.is_empty() && !known.contains(&name.as_str()) && !unknown.contains(&name) {
                    unknown.push(name);
                }
            }
            if !unknown.is_empty() {
                let names = unknown
                    .iter()
                    .map(|n| format!("{n:?}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let takes = if known.is_empty() {
                    "no query parameters".to_string()
                } else {
                    known.join(", ")
                };
                return Err(ApiError::BadRequest(format!(
                    "unknown query parameter{} {names}; this endpoint takes {takes}",
                    if unknown.len() == 1 { "" } else { "s" }
                )));
            }
        }
        let Query(value) = Query::<T>::try_from_uri(&parts.uri)?;
        Ok(ApiQuery(value))
    }
}

/// The query of an endpoint that takes no parameters (`ApiQuery<NoQuery>` refuses any).
#[derive(Debug, serde::Deserialize)]
pub struct NoQuery {}

pub fn app(state: AppState) -> Router {
    let limit = state.settings.max_body_bytes;
    let metrics = state.metrics.clone();
    // The route table is also the OpenAPI document (`crate::openapi`), built from it again
    // when it is first asked for.
    let (table, _) = routes::table().split();
    let routes = table
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::edge::refuse_control_characters,
        ))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state);
    crate::edge::layers(routes, metrics)
}
