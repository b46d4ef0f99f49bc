//! devid-sensor: DEVID-S1, per-reading authentication for a sensor whose readings a gateway
//! relays to an MQTT broker. `no_std`, no allocation: the same code runs in sensor firmware
//! (through the C library as well), in the gateway's tools and in the broker.
//!
//! - [`derive`]: K_mac and K_enc from the sensor key K and the sensor's ClientID (HKDF-SHA256).
//! - [`publish_mac`] / [`verify_mac`]: `devid-sensor-mac`, a truncated HMAC-SHA256 over the id,
//!   seq, topic and payload; [`encode_b64url`] / [`decode_b64url_16`] its text form.
//! - [`seal_in_place`] / [`open_in_place`]: `devid-sensor-seal`, AES-256-GCM of the reading.
//! - [`SensorKeys`]: the same with the key schedules done once, for many readings.
//! - [`parse_seq`] / [`format_seq`]: `devid-sensor-seq`.
//! - [`ReplayWindow`]: the broker's acceptance rule for seq (highest + the 64 below it).
//! - [`Counter`]: the sensor's rule for seq (persisted before use).
//! - [`frame`]: the sensor-to-gateway link frames (COBS + CRC-32, resynchronising on 0x00).
//!
//! The normative description and test vectors are in `docs/protocol.md` ("DEVID-S1").
#![no_std]

mod error;
pub mod frame;
mod keys;
mod message;
mod replay;
mod text;

pub use error::Error;
pub use keys::{derive, DerivedKeys, LABEL_MAC, LABEL_SEAL};
pub use message::{
    open_in_place, open_in_place_with_scratch, publish_mac, seal_aad, seal_aad_len, seal_in_place,
    seal_in_place_with_scratch, seal_nonce, verify_mac, SensorKeys, AAD_STACK_LEN, LABEL_PUBLISH,
};
pub use replay::{Counter, ReplayWindow, WINDOW};
pub use text::{decode_b64url_16, encode_b64url, format_seq, parse_seq, B64_LEN, SEQ_TEXT_MAX};

/// Length of the sensor key K and of K_mac and K_enc.
pub const KEY_LEN: usize = 32;
/// Length of the truncated publish MAC.
pub const MAC_LEN: usize = 16;
/// Length of the AES-GCM tag after a sealed reading.
pub const TAG_LEN: usize = 16;
/// Longest sensor id (its length is one byte in every input).
pub const ID_MAX: usize = 255;

/// User property: the sensor's ClientID.
pub const PROP_SENSOR: &str = "devid-sensor";
/// User property: the sensor's seq in decimal.
pub const PROP_SEQ: &str = "devid-sensor-seq";
/// User property: base64url (no padding) of the 16-byte publish MAC.
pub const PROP_MAC: &str = "devid-sensor-mac";
/// User property: `1` when the payload is sealed.
pub const PROP_SEAL: &str = "devid-sensor-seal";
/// User property the broker sets on an accepted reading: the sensor's ClientID.
pub const PROP_VERIFIED: &str = "devid-verified";
/// User property the broker sets on an accepted reading: the gateway's ClientID.
pub const PROP_VIA: &str = "devid-via";

/// `u8(len(id))`, or [`Error::BadId`] for an empty id or one over 255 bytes.
fn id_len(id: &[u8]) -> Result<u8, Error> {
    match u8::try_from(id.len()) {
        Ok(0) | Err(_) => Err(Error::BadId),
        Ok(n) => Ok(n),
    }
}

#[cfg(test)]
mod tests;
