//! devid-core: everything devid knows that needs no I/O.
//!
//! Always present:
//! - [`clientid`]: the ClientID rules (charset, length, per-model prefix, check character).
//! - [`ldevid`]: the LDevID settings of a model and the mark of an LDevID.
//! - [`hwserial`], [`model`], [`cidr`], [`duration`], [`topic`], [`dnsname`], [`message_auth`],
//!   [`swversion`]: the value types with rules ([`HardwareSerial`], [`ModelName`], [`Cidr`],
//!   [`HumanDuration`], [`TopicName`], [`TopicFilter`], [`DnsName`], [`MessageAuth`],
//!   [`SwVersion`]), parsed once and used by
//!   server, plugin, CLI and device alike.
//!
//! Behind features, so that each dependent links only what it uses (all three are default):
//! - `protocol`: [`protocol`], the DEVID-1 MQTT v5 enhanced-authentication protocol, sans-IO
//!   (device, broker plugin, fuzz targets).
//! - `ca`: [`csr`] and [`profile`], the CSR checks and the certificate profiles (IDevID,
//!   LDevID) built with rcgen (the server's CA).
//! - `api`: [`api`], the REST API's request and response types, and [`sse`], an incremental
//!   Server-Sent Events parser for clients of the device feed (server, CLI, broker plugin).
//! - `openapi` (the server's): the value types' OpenAPI schemas; the API
//!   types derive theirs.
//!
//! Architecture invariant: this crate does no I/O and knows nothing of tokio, sqlx or sockets;
//! time and randomness come in as arguments.

#[macro_use]
mod value;

#[cfg(feature = "api")]
pub mod api;
pub mod cidr;
pub mod clientid;
#[cfg(feature = "ca")]
pub mod csr;
pub mod dnsname;
pub mod duration;
pub mod hwserial;
pub mod ldevid;
pub mod message_auth;
pub mod model;
#[cfg(feature = "openapi")]
pub mod openapi;
#[cfg(feature = "ca")]
pub mod profile;
#[cfg(feature = "protocol")]
pub mod protocol;
pub mod search;
#[cfg(feature = "api")]
pub mod sse;
pub mod swversion;
pub mod topic;

pub use cidr::Cidr;
pub use clientid::ClientId;
pub use dnsname::DnsName;
pub use duration::HumanDuration;
pub use hwserial::HardwareSerial;
pub use ldevid::{ConnectWith, LdevidValidity, RenewalGrace};
pub use message_auth::MessageAuth;
pub use model::ModelName;
pub use search::SearchPrefix;
pub use swversion::SwVersion;
pub use topic::{TopicFilter, TopicName};
pub use value::UnknownName;
