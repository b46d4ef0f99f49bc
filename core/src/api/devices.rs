//! Devices: registration (one or a batch), queries, and the status brokers poll.

use super::{DeviceKind, RevocationReason, TopicPolicy};
use serde::{Deserialize, Serialize};

/// Most items one `POST /v1/devices/batch` may carry.
pub const MAX_BATCH_ITEMS: usize = 10_000;

named_enum! {
    /// A device's lifecycle state.
    pub enum DeviceState {
        Active = "active",
        /// On hold: its certificates are listed on the CRL with reason certificateHold.
        Suspended = "suspended",
        /// Final.
        Revoked = "revoked",
    }
}

named_enum! {
    /// A certificate's state.
    pub enum CertState {
        Good = "good",
        /// certificateHold (the device is suspended).
        Hold = "hold",
        Revoked = "revoked",
    }
}

/// One device to register (`POST /v1/devices`, or an item of a batch).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Checked by [`crate::HardwareSerial`] (kept a `String` here so that a bad value gets the
    /// rule's own 422 rather than a JSON error).
    #[cfg_attr(feature = "openapi", schema(value_type = crate::HardwareSerial))]
    pub hardware_serial: String,
    /// Checked by [`crate::ModelName`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::ModelName>))]
    pub model: Option<String>,
    /// A ClientID burned into firmware. Without it devid makes one (per-model prefix, check
    /// character).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::ClientId>))]
    pub client_id: Option<String>,
    /// A JSON object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<serde_json::Value>,
    /// PEM PKCS#10 request; exclusive with `generate_key`. A sensor takes neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csr: Option<String>,
    /// The service makes the key pair and returns the PKCS#8 key once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub generate_key: bool,
    /// `device` (default) or `sensor`: a sensor gets no certificate but a sensor key, returned
    /// once as `sensor_key`.
    #[serde(default, skip_serializing_if = "DeviceKind::is_device")]
    pub kind: DeviceKind,
}

/// The answer to a registration. A device's carries its certificate; a sensor's has no
/// certificate fields and carries `sensor_key` in the first answer only.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Registered {
    #[cfg_attr(feature = "openapi", schema(value_type = crate::ClientId))]
    pub client_id: String,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::HardwareSerial))]
    pub hardware_serial: String,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::ModelName>))]
    pub model: Option<String>,
    /// `device` or `sensor`.
    #[serde(default)]
    pub kind: DeviceKind,
    /// The device certificate, PEM (absent for a sensor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// The CA chain, PEM: issuing CA first, root last (absent for a sensor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    /// Certificate serial number, lowercase hex (absent for a sensor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// SHA-256 of the certificate DER, lowercase hex (absent for a sensor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub not_before: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub not_after: Option<String>,
    /// True when `not_after` is the issuing CA's own notAfter: no certificate outlives its
    /// issuer, so this one is shorter-lived than the configured validity asked. False for a
    /// sensor, which has no certificate.
    #[serde(default)]
    pub not_after_capped: bool,
    /// PKCS#8 PEM private key, only with `generate_key` and only in the first answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// A sensor's 32-byte key `K`, base64url without padding (43 characters), only in the
    /// first answer: a replay answers without it, and the service never shows it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensor_key: Option<String>,
    /// False when the device was already registered with the same CSR (idempotent replay).
    pub created: bool,
    /// The device's state now: `active` for a new device; a replay may find it suspended or
    /// revoked, and a caller must not treat such a device as ready to ship.
    pub status: DeviceState,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub items: Vec<RegisterRequest>,
}

/// All or nothing: either every item is registered (or was already), or none is and the error
/// names the failing item's index.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchResponse {
    pub items: Vec<Registered>,
    /// How many items were new.
    pub created: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
pub struct DeviceListQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DeviceState>,
    /// Devices whose ClientID or hardware serial starts with this text (case-sensitive;
    /// 1 to 64 characters of a hardware serial's set). Excludes `hardware_serial`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<String>))]
    pub q: Option<crate::SearchPrefix>,
    /// Exact hardware serial (the label on the box): at most one device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<crate::HardwareSerial>))]
    pub hardware_serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<crate::ModelName>))]
    pub model: Option<String>,
    /// Only devices or only sensors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<DeviceKind>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(format = DateTime))]
    pub created_after: Option<String>,
    /// 1..=1000, default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceList {
    pub items: Vec<DeviceSummary>,
    /// Absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceSummary {
    #[cfg_attr(feature = "openapi", schema(value_type = crate::ClientId))]
    pub client_id: String,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::HardwareSerial))]
    pub hardware_serial: String,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::ModelName>))]
    pub model: Option<String>,
    #[serde(default)]
    pub kind: DeviceKind,
    /// A sensor's gateway, when it is attached to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::ClientId>))]
    pub gateway: Option<String>,
    pub status: DeviceState,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created_at: String,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub last_seen: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CertificateInfo {
    pub serial: String,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::ClientId))]
    pub client_id: String,
    pub fingerprint_sha256: String,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub not_before: String,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub not_after: String,
    pub status: CertState,
    /// `idevid` (birth certificate) or `ldevid` (short-lived operational identity).
    pub profile: String,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub revoked_at: Option<String>,
    #[serde(default)]
    pub revocation_reason: Option<RevocationReason>,
    /// PEM; present on single-certificate lookups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Device {
    #[cfg_attr(feature = "openapi", schema(value_type = crate::ClientId))]
    pub client_id: String,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::HardwareSerial))]
    pub hardware_serial: String,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::ModelName>))]
    pub model: Option<String>,
    #[serde(default)]
    pub kind: DeviceKind,
    /// A sensor's gateway, when it is attached to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::ClientId>))]
    pub gateway: Option<String>,
    pub status: DeviceState,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<serde_json::Value>,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created_at: String,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub revoked_at: Option<String>,
    #[serde(default)]
    pub revocation_reason: Option<RevocationReason>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub last_seen: Option<String>,
    #[serde(default)]
    pub last_address: Option<String>,
    /// Current first, then past ones, newest first.
    pub certificates: Vec<CertificateInfo>,
}

/// The small answer brokers poll: `GET /v1/devices/{client_id}/status` (with an ETag).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceStatus {
    #[cfg_attr(feature = "openapi", schema(value_type = crate::ClientId))]
    pub client_id: String,
    pub status: DeviceState,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::ModelName>))]
    pub model: Option<String>,
    /// Serials of this device's certificates that are revoked or on hold.
    #[serde(default)]
    pub revoked_serials: Vec<String>,
    /// Topic policy (what the broker plugin enforces; empty lists mean the defaults).
    #[serde(default)]
    pub policy: Option<TopicPolicy>,
    /// CIDRs the device may connect from; empty means anywhere.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::Cidr>))]
    pub allowed_cidrs: Vec<String>,
    /// `off` or `required`: whether the broker requires per-message authentication.
    #[serde(default)]
    pub message_auth: crate::MessageAuth,
    /// `any` or `ldevid`: which certificates the broker admits (the model's setting).
    #[serde(default)]
    pub connect_with: crate::ConnectWith,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_request_rejects_unknown_fields() {
        let err = serde_json::from_str::<RegisterRequest>(r#"{"hardware_serial":"x","csrr":"y"}"#);
        assert!(err.is_err());
    }
}
