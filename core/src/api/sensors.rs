//! Sensors behind gateways: what a sensor is, which gateway relays it, the keys brokers verify
//! its readings with (DEVID-S1, `docs/protocol.md`) and what brokers report about its readings.
//!
//! | method and path | body -> response |
//! |---|---|
//! | `POST /v1/devices` with `"kind": "sensor"` | [`crate::api::RegisterRequest`] -> [`crate::api::Registered`] with `sensor_key` |
//! | `PUT /v1/devices/{gateway}/sensors` | [`SensorAttachment`] -> [`GatewaySensors`] |
//! | `GET /v1/devices/{gateway}/sensors` | [`GatewaySensors`] |
//! | `GET /v1/devices/{gateway}/sensors/keys` (broker) | [`SensorKeys`] |
//! | `POST /v1/events` | [`crate::api::EventBatch`] with `sensors`: [`SensorReport`] |

use super::DeviceState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

named_enum! {
    /// What a registered identity is.
    #[derive(Default)]
    pub enum DeviceKind {
        /// Speaks MQTT itself with a certificate (DEVID-1 or mutual TLS); may be a gateway.
        #[default]
        Device = "device",
        /// Has no certificate: a 32-byte key `K` made at registration, its readings relayed by
        /// one gateway and verified by the broker (DEVID-S1).
        Sensor = "sensor",
    }
}

impl DeviceKind {
    /// For `skip_serializing_if`: `device` is the default and left out of requests.
    pub fn is_device(&self) -> bool {
        *self == DeviceKind::Device
    }
}

/// Most sensors one gateway may have.
pub const MAX_SENSORS_PER_GATEWAY: usize = 1_000;

/// Most sensor reports one `POST /v1/events` may carry.
pub const MAX_SENSOR_REPORTS: usize = 10_000;

/// `PUT /v1/devices/{gateway}/sensors` (admin): the gateway's whole set of sensors. A sensor
/// attached to another gateway moves to this one; a sensor of this gateway not in the list is
/// detached. An empty list detaches every sensor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SensorAttachment {
    /// ClientIDs of sensors (kind `sensor`), at most [`MAX_SENSORS_PER_GATEWAY`], no repeats.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::ClientId>))]
    pub sensors: Vec<String>,
}

/// A gateway's sensors (`GET` and the answer to `PUT /v1/devices/{gateway}/sensors`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GatewaySensors {
    #[cfg_attr(feature = "openapi", schema(value_type = crate::ClientId))]
    pub gateway: String,
    /// By ClientID.
    pub sensors: Vec<AttachedSensor>,
}

/// One sensor of a gateway.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttachedSensor {
    #[cfg_attr(feature = "openapi", schema(value_type = crate::ClientId))]
    pub client_id: String,
    pub status: DeviceState,
    /// Its last accepted reading, as brokers reported it.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub last_seen: Option<String>,
    /// Readings brokers accepted, in all.
    #[serde(default)]
    pub accepted: u64,
    /// Readings brokers refused, by refusal reason, in all.
    #[serde(default)]
    pub refused: BTreeMap<String, u64>,
    /// The highest seq any broker reported accepting (0: none).
    #[serde(default)]
    pub seq_floor: u64,
}

/// `GET /v1/devices/{gateway}/sensors/keys` (broker): what a broker needs to verify the
/// readings the gateway relays. `K` itself never leaves the service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SensorKeys {
    #[cfg_attr(feature = "openapi", schema(value_type = crate::ClientId))]
    pub gateway: String,
    /// The sensors attached to `gateway` now, by ClientID, whatever their status.
    pub sensors: Vec<SensorKeyEntry>,
}

/// One sensor's derived keys and the rules its readings pass.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SensorKeyEntry {
    #[cfg_attr(feature = "openapi", schema(value_type = crate::ClientId))]
    pub client_id: String,
    /// Only `active` sensors' readings are accepted.
    pub status: DeviceState,
    /// `K_mac` (DEVID-S1), base64url without padding (43 characters).
    pub k_mac: String,
    /// `K_enc` (DEVID-S1), base64url without padding (43 characters).
    pub k_enc: String,
    /// Topic filters the sensor may publish to (its own policy, else its model's, else the
    /// default), `%c` not yet expanded.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::TopicFilter>))]
    pub publish: Vec<String>,
    /// The highest seq any broker has reported accepting (0: none): readings at or below it are
    /// refused as replays where no window of accepted seqs is known.
    pub seq_floor: u64,
}

/// `POST /v1/devices/{sensor}/rekey` (admin): the sensor's new key K, shown this once (the
/// service keeps it only sealed). Brokers stop accepting readings made with the old key as soon
/// as the feed's `updated` entry reaches them; the sensor's seq floor stays.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SensorRekeyed {
    #[cfg_attr(feature = "openapi", schema(value_type = crate::ClientId))]
    pub client_id: String,
    /// K, 32 bytes as base64url without padding (43 characters), as at registration.
    pub sensor_key: String,
}

/// What one broker saw of one sensor's readings since its previous report (part of
/// `POST /v1/events`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SensorReport {
    #[cfg_attr(feature = "openapi", schema(value_type = crate::ClientId))]
    pub client_id: String,
    /// The gateway that relayed the readings.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::ClientId))]
    pub gateway: String,
    /// The highest seq this broker has accepted for the sensor (0: none). The service keeps the
    /// maximum reported as the sensor's `seq_floor`.
    pub highest_seq: u64,
    /// Readings accepted since the previous report (a count added to the service's total).
    #[serde(default)]
    pub accepted: u64,
    /// Readings refused since the previous report, by refusal reason (`bad_mac`, `replayed`,
    /// `not_attached`, ...: the plugin's stable snake_case names); added to the service's totals.
    #[serde(default)]
    pub refused: BTreeMap<String, u64>,
    /// When the newest accepted reading of this report arrived (absent when none was accepted):
    /// the sensor's last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub last_accepted_at: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_defaults_to_device_and_reads_its_names() {
        assert_eq!(DeviceKind::default(), DeviceKind::Device);
        let k: DeviceKind = serde_json::from_str("\"sensor\"").expect("sensor");
        assert_eq!(k, DeviceKind::Sensor);
        assert!(serde_json::from_str::<DeviceKind>("\"gateway\"").is_err());
    }

    #[test]
    fn a_sensor_report_takes_counts_by_reason_and_refuses_unknown_fields() {
        let r: SensorReport = serde_json::from_str(
            r#"{"client_id":"s1","gateway":"g1","highest_seq":18446744073709551615,
                "accepted":3,"refused":{"bad_mac":2},"last_accepted_at":"2026-12-07T13:00:00Z"}"#,
        )
        .expect("report");
        assert_eq!(r.highest_seq, u64::MAX);
        assert_eq!(r.refused.get("bad_mac"), Some(&2));
        assert!(serde_json::from_str::<SensorReport>(
            r#"{"client_id":"s1","gateway":"g1","highest_seq":1,"extra":1}"#
        )
        .is_err());
    }
}
