//! devid-core: everything devid knows that needs no I/O.
//!
//! - [`clientid`]: the ClientID rules (charset, length, per-model prefix, check character).
//! - [`csr`] and [`profile`]: CSR checks and the certificate profiles (IDevID, LDevID).
//! - [`api`]: the REST API's request and response types, shared by server, CLI and broker plugin.
//! - [`protocol`]: the DEVID-1 MQTT v5 enhanced-authentication protocol, sans-IO.
//! - [`sse`]: an incremental Server-Sent Events parser for clients of the device feed
//!   (revocations and settings changes).
//! - [`hwserial`], [`model`], [`cidr`], [`duration`]: the value types with rules
//!   ([`HardwareSerial`], [`ModelName`], [`Cidr`], [`HumanDuration`]), parsed once and used by
//!   server, plugin and CLI alike.
//! - `openapi` (feature `openapi`, the server's): the value types' OpenAPI schemas; the API
//!   types derive theirs.
//!
//! Architecture invariant: this crate does no I/O and knows nothing of tokio, sqlx or sockets;
//! time and randomness come in as arguments.

pub mod api;
pub mod cidr;
pub mod clientid;
pub mod csr;
pub mod duration;
pub mod hwserial;
pub mod model;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod profile;
pub mod protocol;
pub mod sse;

pub use cidr::Cidr;
pub use duration::HumanDuration;
pub use hwserial::HardwareSerial;
pub use model::ModelName;
