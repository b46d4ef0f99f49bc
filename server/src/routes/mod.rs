//! HTTP routes, one module per area; each exposes `router()`.

pub mod audit;
pub mod brokers;
pub mod ca;
pub mod device_settings;
pub mod devices;
pub mod lifecycle;
pub mod ops;
pub mod revocations;
pub mod tokens;

use crate::app::AppState;
use crate::domain::Ctx;

/// The domain's view of the shared state.
pub(crate) fn ctx(state: &AppState) -> Ctx<'_> {
    Ctx {
        store: &state.store,
        feed: &state.feed,
        metrics: &state.metrics,
        registry: &state.registry,
    }
}
