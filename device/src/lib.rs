//! devid-device: the device side of DEVID-1 over a real MQTT v5 connection.
//!
//! - [`mqtt`]: a small, strict, sans-IO MQTT v5 codec.
//! - [`connection`]: a framed connection over any stream and the CONNECT / AUTH / CONNACK
//!   exchange, driving an [`connection::Authenticator`].
//! - [`client`]: the async client (background task, typed events).
//! - [`transport`]: TCP and TLS (rustls on ring).
//! - [`credentials`]: certificate chain and key files.

pub mod client;
pub mod connection;
pub mod credentials;
pub mod mqtt;
pub mod transport;

pub use client::{Ack, Client, Event, Message, OutgoingMessage, Protection, SessionHook};
pub use connection::{
    handshake, AuthError, Authenticator, ClientError, ConnectOptions, Connected, Connection, NoAuth,
};
pub use transport::{open, server_name, tls_config, TlsOptions, Transport};
