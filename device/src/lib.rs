//! devid-device: the device side of DEVID-1 over a real MQTT v5 connection.
//!
//! - [`mqtt`]: a small, strict, sans-IO MQTT v5 codec.
//! - [`connection`]: a framed connection over any stream and the CONNECT / AUTH / CONNACK
//!   exchange, driving an [`connection::Authenticator`].
//! - [`client`]: the async client (background task, keep-alive, typed events, key rotation).
//! - [`devid1`]: DEVID-1 as an authenticator (full handshake and resumption), the ticket file,
//!   and the session hook that MACs or seals PUBLISHes.
//! - [`connect`]: one call to connect a device (resume, fall back), or a plain/mTLS client.
//! - [`transport`]: TCP and TLS (rustls on ring).
//! - [`credentials`]: certificate chain and key files.
//! - [`gateway`]: relaying sensor readings (DEVID-S1) as PUBLISHes with the sensor properties;
//!   [`link`]: the sensor link (serial device, pty, Unix socket) and its frame decoding;
//!   [`sensor_sim`]: a simulated sensor (key file, persisted counter, frames).
//! - [`renew`]: the LDevID kept fresh: when to renew, EST, over the open MQTT connection
//!   (`renew::mqtt`: CSR, re-key proof, the correlated reply), files written atomically.
//!
//! Architecture invariant: the protocol logic lives in `devid_core::protocol` (sans-IO); this
//! crate only moves its bytes through MQTT packets.

pub mod client;
pub mod connect;
pub mod connection;
pub mod credentials;
pub mod devid1;
pub mod gateway;
pub mod link;
pub mod mqtt;
pub mod renew;
pub mod sensor_sim;
pub mod transport;

pub use client::{
    Ack, Client, ClientSettings, Event, Message, OutgoingMessage, Protection, Rotation, SessionHook,
};
pub use connect::{connect_devid1, connect_plain, DeviceOptions, SessionInfo};
pub use connection::{
    handshake, AuthError, Authenticator, ClientError, ConnectOptions, Connected, Connection, NoAuth,
};
pub use devid1::{Devid1, Devid1Session};
pub use renew::mqtt::{renew_over_mqtt, renewal_request, RenewError};
pub use transport::{open, server_name, tls_config, TlsOptions, Transport};
