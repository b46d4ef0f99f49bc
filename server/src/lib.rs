//! devid-server: the certificate authority and device registry behind devid's REST API.
//!
//! Code map:
//! - [`config`]: settings from flags, environment and `devid.toml` (in that order of precedence).
//! - [`app`]: the shared state and `fn app(state) -> Router`; each module in [`routes`] exposes
//!   its own `router()`.
//! - [`domain`]: the rules (device lifecycle, policy resolution, audit, authorization beyond
//!   roles), with their own error type [`domain::DomainError`].
//! - [`error`]: the one HTTP error type, rendered as RFC 9457 problem+json.
//! - [`edge`]: what every request and response passes: control characters refused, every error
//!   a problem document.
//! - [`auth`]: bearer tokens and roles.
//! - [`registry`]: the registration pipeline (validate, sign in parallel, group-commit).
//! - [`ldevid`]: the one function that issues an LDevID (EST enroll/re-enroll, MQTT renewal).
//! - [`feed`]: device feed fan-out (revocations and settings changes) (in-process, and PostgreSQL LISTEN/NOTIFY) and the CRL.
//! - [`ca`]: the certificate authority (keys on disk, issuance, CRL signing).
//! - [`store`]: SQLite and PostgreSQL storage.
//! - [`metrics`], [`openapi`]: operations.

pub mod app;
pub mod auth;
pub mod ca;
pub mod ca_command;
pub mod config;
pub mod domain;
pub mod edge;
pub mod error;
pub mod est;
pub mod feed;
pub mod ldevid;
pub mod metrics;
pub mod openapi;
pub mod registry;
pub mod routes;
pub mod serve;
pub mod store;
pub mod timefmt;
pub mod tls;
pub mod webhooks;
