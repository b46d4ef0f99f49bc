//! devid-core: everything devid knows that needs no I/O.
//!
//! - [`clientid`]: the ClientID rules (charset, length, per-model prefix, check character).
//! - [`csr`] and [`profile`]: CSR checks and the certificate profiles (IDevID, LDevID).
//! - [`api`]: the REST API's request and response types, shared by server, CLI and broker plugin.
//! - [`protocol`]: the DEVID-1 MQTT v5 enhanced-authentication protocol, sans-IO.
//! - [`sse`]: an incremental Server-Sent Events parser for clients of the device feed
//!   (revocations and settings changes).
//! - [`hwserial`], [`model`], [`cidr`], [`duration`], [`topic`], [`dnsname`], [`message_auth`]:
//!   the value types with rules ([`HardwareSerial`], [`ModelName`], [`Cidr`], [`HumanDuration`],
//!   [`TopicName`], [`TopicFilter`], [`DnsName`], [`MessageAuth`]), parsed once and used by
//!   server, plugin, CLI and device alike.
//!
//! Architecture invariant: this crate does no I/O and knows nothing of tokio, sqlx or sockets;
//! time and randomness come in as arguments.

#[macro_use]
mod value;

pub mod api;
pub mod cidr;
pub mod clientid;
pub mod csr;
pub mod dnsname;
pub mod duration;
pub mod hwserial;
pub mod message_auth;
pub mod model;
pub mod profile;
pub mod protocol;
pub mod sse;
pub mod topic;

pub use cidr::Cidr;
pub use dnsname::DnsName;
pub use duration::HumanDuration;
pub use hwserial::HardwareSerial;
pub use message_auth::MessageAuth;
pub use model::ModelName;
pub use topic::{TopicFilter, TopicName};
