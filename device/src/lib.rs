//! devid-device: the device side of DEVID-1 over a real MQTT v5 connection.
//!
//! - [`mqtt`]: a small, strict, sans-IO MQTT v5 codec.

pub mod mqtt;
