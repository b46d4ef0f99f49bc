//! A small, strict, sans-IO MQTT v5 codec: the packets a device needs, nothing else.
//!
//! - [`decode`] reads one packet from the start of a buffer and says how many bytes it used, or
//!   that it needs more bytes (`Ok(None)`). It enforces a maximum packet size as soon as the
//!   fixed header is complete, rejects trailing bytes inside a packet, non-minimal variable byte
//!   integers, wrong fixed-header flags, properties not allowed in a packet, duplicate
//!   properties, packet identifier 0 and reason codes a packet cannot carry.
//! - [`Packet::encode`] writes a packet; every length prefix is derived from the bytes written.
//!
//! Why our own: most Rust MQTT clients cannot continue an enhanced-authentication (AUTH)
//! exchange, which DEVID-1 needs: rumqttc 0.25 fails on an incoming AUTH packet, paho-mqtt 2.2
//! and libmosquitto 2.0 clients cannot do a multi-step AUTH.

mod codec;
mod decode;
mod encode;
mod packet;
mod properties;
mod reason;

pub use codec::{EncodeError, VBI_MAX};
pub use decode::decode;
pub use packet::{
    ConnAck, Connect, Decoded, Packet, PacketType, PubResponse, Publish, QoS, ReasonOnly, SubAck,
    Subscribe, SubscriptionOptions, Unsubscribe, Will,
};
pub use properties::{Properties, Property, PropertyContext};
pub use reason::ReasonCode;

/// Why bytes could not be decoded as a packet. Any of these means the connection must be
/// closed (the peer is broken or hostile).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed packet: {0} is truncated")]
    Truncated(&'static str),
    #[error("malformed packet: {count} trailing byte(s) after {what}")]
    TrailingBytes { what: &'static str, count: usize },
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("malformed packet: invalid UTF-8 string in {0}")]
    InvalidUtf8(&'static str),
    #[error("unknown packet type {0}")]
    UnknownPacketType(u8),
    #[error("malformed packet: {packet:?} with fixed-header flags {flags:#06b}")]
    InvalidFlags { packet: PacketType, flags: u8 },
    #[error("packet of {size} bytes exceeds the maximum packet size {max}")]
    PacketTooLarge { size: usize, max: u32 },
    #[error("property {id:#04x}: {reason}")]
    InvalidProperty { id: u8, reason: &'static str },
    #[error("reason code {code:#04x} is not allowed in {packet:?}")]
    InvalidReasonCode { packet: PacketType, code: u8 },
    #[error("unsupported protocol version {0}")]
    UnsupportedProtocolVersion(u8),
}

#[cfg(test)]
mod tests;
