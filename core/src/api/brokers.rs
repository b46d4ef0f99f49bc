//! Brokers: their enrolment and the connection events they report.

use serde::{Deserialize, Serialize};

named_enum! {
    /// What a broker saw.
    pub enum ConnectionEventKind {
        Connect = "connect",
        Disconnect = "disconnect",
        AuthFailure = "auth_failure",
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConnectionEvent {
    pub kind: ConnectionEventKind,
    /// Empty when the client never said one.
    pub client_id: String,
    /// RFC 3339.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub at: String,
    /// Source address, `ip:port` or `ip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// For failures: the logged reason (never sent to the device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For failures: the refusal's kind, a stable snake_case name (`device_revoked`,
    /// `hello_rate`, `bad_signature`, ...) to count refusals by; `reason` is the prose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// Broker name, when the broker knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
}

/// `POST /v1/events` (broker role), at most 1,000 events.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EventBatch {
    pub events: Vec<ConnectionEvent>,
}

/// `POST /v1/brokers` (admin): enrol a broker. The key is made where the broker runs; the CSR
/// comes here.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BrokerEnrollRequest {
    /// DNS name (SAN DNS and CN), e.g. `mqtt.example.com`.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::DnsName))]
    pub name: String,
    pub csr: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BrokerCertificate {
    pub name: String,
    pub certificate: String,
    pub chain: String,
    pub serial: String,
    pub fingerprint_sha256: String,
    pub not_before: String,
    pub not_after: String,
    /// True when `not_after` is the issuing CA's own notAfter: no certificate outlives its
    /// issuer, so this one is shorter-lived than its profile's validity.
    #[serde(default)]
    pub not_after_capped: bool,
}
