//! HTTP routes, one module per area; each exposes `router()`.

pub mod audit;
pub mod brokers;
pub mod ca;
pub mod devices;
pub mod ops;
pub mod revocations;
pub mod tokens;
