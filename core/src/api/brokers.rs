//! Brokers: their enrolment, the connection events they report, and the LDevID renewals they
//! relay for their devices (renewal over MQTT).

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
    /// For connects: how the connection authenticated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthMethod>,
    /// For connects: serial (lowercase hex) of the certificate the connection authenticated
    /// with (DEVID-1 full exchange or mutual TLS; for resumption, the certificate the ticket
    /// was issued for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// For connects: the software version the device reported in its CONNECT (user property
    /// `devid-sw`), at most 64 printable ASCII characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sw_version: Option<String>,
}

named_enum! {
    /// How a connection authenticated.
    pub enum AuthMethod {
        /// DEVID-1 full exchange (certificate, ECDH, signatures).
        Devid1 = "devid1",
        /// DEVID-1 resumption (ticket).
        Resumption = "resumption",
        /// Mutual TLS on the broker's listener.
        MutualTls = "mtls",
    }
}

/// What a device did on one broker since that broker's previous batch: counters, never one
/// report per message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DeviceCounters {
    #[cfg_attr(feature = "openapi", schema(value_type = crate::ClientId))]
    pub client_id: String,
    /// PUBLISHes accepted from the device since the previous batch.
    pub published: u64,
    /// PUBLISHes refused (ACL, message authentication) since the previous batch.
    pub refused: u64,
}

/// Who sent a batch, sent with every batch (a broker posts at least one batch every 10 s,
/// empty if need be, so the service knows it is alive).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BrokerHeartbeat {
    /// The broker's name (plugin option `broker_name`, else the host name).
    pub name: String,
    /// When this broker process started (RFC 3339): connections it reported before are gone.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub started_at: String,
    /// The plugin's `max_staleness` in seconds.
    pub max_staleness: u64,
    /// The newest feed seq the broker has applied.
    pub feed_seq: i64,
    /// Connections the plugin authenticated that are open now.
    pub connected: u64,
}

/// `POST /v1/events` (broker role), at most 1,000 events and
/// [`super::MAX_SENSOR_REPORTS`] sensor reports.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EventBatch {
    #[serde(default)]
    pub events: Vec<ConnectionEvent>,
    /// What the broker saw of sensors' readings since its previous batch: at most one report
    /// per sensor and gateway.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sensors: Vec<super::SensorReport>,
    /// Per-device PUBLISH counters since the previous batch, at most one entry per ClientID.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counters: Vec<DeviceCounters>,
    /// The sending broker (absent from brokers older than this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<BrokerHeartbeat>,
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

/// `POST /v1/brokers/renewals` (broker role): an LDevID request a device made over MQTT,
/// relayed by the broker it is connected to. The service checks everything itself: the
/// certificate the device authenticated with must be the device's, and a key other than that
/// certificate's needs the re-key proof (the broker cannot ask for a key of its choosing).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RenewalRequest {
    /// The ClientID the connection authenticated as.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::ClientId))]
    pub client_id: String,
    /// Serial (lowercase hex) of the certificate the connection authenticated with.
    pub serial: String,
    /// The PKCS#10 request, base64 of DER.
    pub csr: String,
    /// For a new key: base64 of the DER ECDSA signature by the current certificate's key over
    /// the re-key proof message (`docs/protocol.md`, "MQTT renewal").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rekey_proof: Option<String>,
}

/// The answer to a [`RenewalRequest`] (200 either way): the certificate and its chain, or the
/// refusal the broker passes on to the device.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RenewalAnswer {
    /// Why nothing was issued; absent when a certificate was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<crate::ldevid::Refusal>,
    /// The refusal's text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The new certificate then its issuer(s), root last, each base64 of DER.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<String>,
    /// The new certificate's serial (lowercase hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub not_after: Option<String>,
    /// `enrolled`, `renewed` or `rekeyed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}
