//! HTTP routes, one module per area; each exposes `router()`, its part of the route table.
//!
//! The route table is the one place that says what is served: each entry is a handler's
//! `#[utoipa::path]` (method, path, parameters, bodies, responses) and the [`Access`] of the
//! route. The router serves exactly its entries, the OpenAPI document (`crate::openapi`)
//! describes exactly its entries, and a handler's role check ([`Guard::check`]) reads the
//! roles of the entry it was reached through.

pub mod audit;
pub mod brokers;
pub mod ca;
pub mod console;
pub mod device_settings;
pub mod devices;
pub mod est;
pub mod est_answer;
pub mod est_ldevid;
pub mod events;
pub mod fleet;
pub mod lifecycle;
pub mod ops;
pub mod renewals;
pub mod revocations;
pub mod sensors;
pub mod sse;
pub mod tokens;
pub mod webhooks;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::{Extension, Router};
use devid_core::api::Role;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};

use crate::app::AppState;
use crate::auth::Caller;
use crate::domain::Ctx;
use crate::error::ApiError;

/// The domain's view of the shared state.
pub(crate) fn ctx(state: &AppState) -> Ctx<'_> {
    Ctx {
        store: &state.store,
        feed: &state.feed,
        metrics: &state.metrics,
        registry: &state.registry,
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a token.
    Public,
    /// A bearer token of one of these roles.
    Roles(&'static [Role]),
}

pub const ADMIN: Access = Access::Roles(&[Role::Admin]);
pub const READERS: Access = Access::Roles(&[Role::Admin, Role::Auditor]);
/// Readers and applications (the `app` role): devices, the events for applications and fleet
/// health.
pub const APP_READERS: Access = Access::Roles(&[Role::Admin, Role::Auditor, Role::App]);
pub const REGISTRARS: Access = Access::Roles(&[Role::Admin, Role::Factory]);
/// Brokers read device status, certificates, model settings and the feed.
pub const FOLLOWERS: Access = Access::Roles(&[Role::Admin, Role::Auditor, Role::Broker]);
pub const REPORTERS: Access = Access::Roles(&[Role::Admin, Role::Broker]);
/// Every token, whatever its role (`whoami`).
pub const ANY_TOKEN: Access = Access::Roles(&[
    Role::Admin,
    Role::Factory,
    Role::Broker,
    Role::Auditor,
    Role::App,
]);
/// Brokers alone: sensors' derived keys.
pub const BROKERS: Access = Access::Roles(&[Role::Broker]);

/// The route table: what the server serves and the OpenAPI document describes.
pub struct Routes(OpenApiRouter<AppState>);

impl Routes {
    pub fn new() -> Self {
        Routes(OpenApiRouter::default())
    }

    /// Serves the operation of `route` (`utoipa_axum::routes!(handler)`, one handler) to the
    /// callers `access` admits, and documents it with that access. The handler's
    /// [`Guard`] reads `access` back from the request.
    pub fn add(self, access: Access, route: UtoipaMethodRouter<AppState>) -> Self {
        let (schemas, mut paths, method_router) = route;
        crate::openapi::document_access(&mut paths, access);
        let method_router = method_router.layer(Extension(access));
        Routes(self.0.routes((schemas, paths, method_router)))
    }

    pub fn merge(self, other: Routes) -> Self {
        Routes(self.0.merge(other.0))
    }

    /// The router and the document's paths and schemas.
    pub fn split(self) -> (Router<AppState>, utoipa::openapi::OpenApi) {
        self.0.split_for_parts()
    }
}

impl Default for Routes {
    fn default() -> Self {
        Self::new()
    }
}

/// Every route the server serves.
pub fn table() -> Routes {
    Routes::new()
        .merge(ops::router())
        .merge(console::router())
        .merge(ca::router())
        .merge(devices::router())
        .merge(revocations::router())
        .merge(events::router())
        .merge(webhooks::router())
        .merge(tokens::router())
        .merge(audit::router())
        .merge(brokers::router())
        .merge(est::router())
        .merge(renewals::router())
        .merge(fleet::router())
}

/// The caller of a route that needs a token, with the roles its route-table entry admits.
/// Extracting it authenticates (401); [`Guard::check`] authorizes (403), which handlers do
/// after their other extractors so that a malformed request is refused as such first.
pub struct Guard {
    caller: Caller,
    access: Option<Access>,
}

impl FromRequestParts<AppState> for Guard {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let access = parts.extensions.get::<Access>().copied();
        Ok(Guard { caller, access })
    }
}

impl Guard {
    /// The caller, if its role is one the route admits. A route reached without a table
    /// entry admits nobody.
    pub fn check(self) -> Result<Caller, ApiError> {
        match self.access {
            Some(Access::Roles(roles)) => {
                self.caller.require(roles)?;
                Ok(self.caller)
            }
            Some(Access::Public) | None => Err(ApiError::internal(
                "a handler that checks roles is served without roles in the route table",
            )),
        }
    }
}
