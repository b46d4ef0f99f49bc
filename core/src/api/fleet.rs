//! Fleet health: what devid knows of each device from brokers' event batches and the registry,
//! the named checks and their findings, and the counts an operator reads every morning.

use serde::{Deserialize, Serialize};

named_enum! {
    /// A named fleet check. Each produces findings that open, stay open while true and close
    /// by themselves.
    pub enum CheckName {
        /// A device's newest valid certificate expires within the model's threshold.
        CertExpiring = "cert_expiring",
        /// An issuing or root CA expires within 180 days.
        CaExpiring = "ca_expiring",
        /// Registered longer ago than the threshold and never connected.
        NeverSeen = "never_seen",
        /// Connected before, nothing for longer than the model's inactivity timeout.
        Silent = "silent",
        /// One ClientID connected on two brokers at once, or taken over too often.
        DuplicateClientId = "duplicate_client_id",
        /// One certificate used from too many source networks within an hour.
        SharedCertificate = "shared_certificate",
        /// Too many failed authentications for one ClientID or from one address in 10 minutes.
        AuthFailures = "auth_failures",
        /// A revoked or suspended device still connected 10 s after the change.
        RevokedConnected = "revoked_connected",
        /// A broker that stopped reporting and following the feed.
        StaleBroker = "stale_broker",
    }
}

named_enum! {
    /// How urgent a finding is.
    pub enum Severity {
        Info = "info",
        Warning = "warning",
        Critical = "critical",
    }
}

/// One finding: a check that is (or was) true of one subject.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Finding {
    pub id: i64,
    pub check: CheckName,
    pub severity: Severity,
    /// What the finding is about: a ClientID, a source address, a certificate serial, a
    /// broker name or a CA id, as the check says.
    pub subject: String,
    /// The device's ClientID, when the subject is a device or one of its certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// RFC 3339.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub opened_at: String,
    /// RFC 3339; absent while the finding is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub closed_at: Option<String>,
    /// One line for a person.
    pub detail: String,
}

/// `GET /v1/fleet/findings?check=&severity=&model=&state=open|closed|all&cursor=&limit=`:
/// newest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FindingPage {
    pub items: Vec<Finding>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Open findings of one check and severity.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FindingCount {
    pub check: CheckName,
    pub severity: Severity,
    pub open: u64,
}

/// `GET /v1/fleet/summary`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FleetSummary {
    /// Devices and sensors registered, every status.
    pub total: u64,
    pub active: u64,
    pub suspended: u64,
    pub revoked: u64,
    /// Devices with at least one open connection on a live broker.
    pub connected_now: u64,
    /// Registered and never connected.
    pub never_seen: u64,
    /// Open findings by check and severity (only non-zero counts).
    pub findings: Vec<FindingCount>,
    /// Brokers that reported within their max staleness, and all brokers known.
    pub brokers_live: u64,
    pub brokers_known: u64,
    /// RFC 3339: when these counts were read.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub at: String,
}

/// One connect or disconnect as the device's health shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConnectionSeen {
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<super::AuthMethod>,
}

/// Failed authentications of one reason.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReasonCount {
    pub reason: String,
    pub count: u64,
}

/// `GET /v1/devices/{client_id}/health`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceHealth {
    #[cfg_attr(feature = "openapi", schema(value_type = crate::ClientId))]
    pub client_id: String,
    pub status: super::DeviceState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub first_seen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub last_seen: Option<String>,
    /// Brokers the device is connected to now (more than one is a finding).
    pub connected_on: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_connect: Option<ConnectionSeen>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_disconnect: Option<ConnectionSeen>,
    /// Failed authentications by reason, over the timeline's retention.
    pub auth_failures: Vec<ReasonCount>,
    /// PUBLISHes accepted and refused, as brokers counted them.
    pub published: u64,
    pub refused: u64,
    /// What the device last reported in `devid-sw`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sw_version: Option<String>,
    /// notAfter of the newest valid certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub cert_not_after: Option<String>,
    /// Open findings about this device.
    pub findings: Vec<Finding>,
}

/// One hour of connections and failed authentications.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HourCount {
    /// RFC 3339, the start of the hour.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub hour: String,
    pub connects: u64,
    pub auth_failures: u64,
}

/// A count per day (`YYYY-MM-DD`) or month (`YYYY-MM`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PeriodCount {
    pub period: String,
    pub count: u64,
}

/// `GET /v1/fleet/activity`: what the console plots.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FleetActivity {
    /// The last 24 hours, oldest first, 24 entries.
    pub hours: Vec<HourCount>,
    /// Registrations per day over the last 30 days, oldest first, 30 entries.
    pub registrations: Vec<PeriodCount>,
    /// Valid certificates by the month of their notAfter, the next 12 months, 12 entries.
    pub expiries: Vec<PeriodCount>,
}

/// `GET/PUT /v1/fleet/checks/{model}`: a model's check thresholds. Every field is optional;
/// an absent one is the default (given on each field).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CheckThresholds {
    /// `cert_expiring` when the newest valid certificate expires within this (default 30d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::HumanDuration>))]
    pub cert_expiring: Option<crate::HumanDuration>,
    /// `never_seen` when registered longer ago than this without a connect (default 30d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::HumanDuration>))]
    pub never_seen: Option<crate::HumanDuration>,
    /// `silent` when not connected and nothing seen for longer than this (default 24h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::HumanDuration>))]
    pub silent_after: Option<crate::HumanDuration>,
    /// `duplicate_client_id` at this many takeovers within an hour (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub takeovers_per_hour: Option<u32>,
    /// `shared_certificate` at this many source networks within an hour (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks_per_hour: Option<u32>,
    /// `auth_failures` at this many failures within 10 minutes (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_failures: Option<u32>,
}
