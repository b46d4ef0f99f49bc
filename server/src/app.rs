//! Shared state and the router.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
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
    pub settings: Arc<Settings>,
    pub profile: Arc<ProfileSettings>,
    pub registry: Registry,
    pub feed: Arc<Feed>,
    pub metrics: Arc<Metrics>,
    pub tokens: Arc<TokenCache>,
    /// Turns true when the server starts shutting down (ends SSE streams).
    pub shutdown: watch::Receiver<bool>,
}

impl AppState {
    /// Records a refused or failed mutating call in the audit log (successes are recorded by the
    /// store in the transaction that makes the change). Best effort: a failure to write it is
    /// logged, and the caller still gets the original error.
    pub async fn audit_failure(&self, caller: &Caller, action: &str, target: &str, err: &ApiError) {
        let rec = caller.audit_record(action, target, err.audit_outcome());
        if let Err(e) = self.store.insert_audit(&rec).await {
            tracing::error!(error = %e, action, target, "could not write audit record");
        }
    }

    /// Passes `result` on, recording it in the audit log first when it is a failure.
    pub async fn audited<T>(
        &self,
        caller: &Caller,
        action: &str,
        target: &str,
        result: Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        if let Err(e) = &result {
            self.audit_failure(caller, action, target, e).await;
        }
        result
    }
}

/// JSON body extractor whose rejections are problem documents.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// Query extractor whose rejections are problem documents.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

pub fn app(state: AppState) -> Router {
    let limit = state.settings.max_body_bytes;
    Router::new()
        .merge(routes::ops::router())
        .merge(routes::ca::router())
        .merge(routes::devices::router())
        .merge(routes::revocations::router())
        .merge(routes::tokens::router())
        .merge(routes::audit::router())
        .merge(routes::brokers::router())
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn count_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(req).await;
    state
        .metrics
        .request(&method, &route, response.status().as_u16());
    response
}
