//! The REST API's request and response types: one definition shared by the server, the CLI, the
//! broker plugin and the tests.
//!
//! Conventions:
//! - Times are RFC 3339 strings in UTC (`2026-11-25T13:00:00Z`).
//! - Certificate serial numbers are lowercase hex without separators; fingerprints are the
//!   lowercase hex SHA-256 of the certificate's DER.
//! - Errors are RFC 9457 problem documents ([`Problem`], media type `application/problem+json`).
//! - Authentication: `Authorization: Bearer <token>`.
//!
//! Routes (see `/openapi.json` on a running server for the full document):
//!
//! | method and path | roles | body -> response |
//! |---|---|---|
//! | `GET /healthz`, `GET /readyz`, `GET /metrics`, `GET /openapi.json` | public | |
//! | `GET /v1/ca` | public | PEM chain, issuing CA first, root last |
//! | `GET /v1/crl` | public | DER CRL (`application/pkix-crl`) |
//! | `POST /v1/devices` | admin, factory | [`RegisterRequest`] -> [`Registered`] (201 new, 200 existing) |
//! | `POST /v1/devices/batch` | admin, factory | [`BatchRequest`] -> [`BatchResponse`] |
//! | `GET /v1/devices` | admin, auditor | query [`DeviceListQuery`] -> [`DeviceList`] |
//! | `GET /v1/devices/{client_id}` | admin, auditor | [`Device`] |
//! | `GET /v1/devices/{client_id}/status` | admin, auditor, broker | [`DeviceStatus`] with ETag |
//! | `POST /v1/devices/{client_id}/revoke` | admin | [`RevokeRequest`] -> [`Device`] |
//! | `POST /v1/devices/{client_id}/suspend` | admin | optional [`ReasonRequest`] -> [`Device`] |
//! | `POST /v1/devices/{client_id}/resume` | admin | -> [`Device`] |
//! | `POST /v1/certificates/{serial}/revoke` | admin | [`RevokeRequest`] -> [`CertificateInfo`] |
//! | `GET /v1/certificates/{serial}` | admin, auditor, broker | [`CertificateInfo`] |
//! | `GET /v1/revocations?since=N&limit=L` | admin, auditor, broker | [`FeedPage`] |
//! | `GET /v1/revocations/stream` | admin, auditor, broker | SSE: `id: <seq>`, `event: revocation`, `data:` [`FeedEntry`]; honours `Last-Event-ID` |
//! | `POST /v1/tokens` | admin | [`CreateTokenRequest`] -> [`CreatedToken`] (secret shown once) |
//! | `GET /v1/tokens` | admin, auditor | [`TokenList`] |
//! | `DELETE /v1/tokens/{id}` | admin | -> [`TokenInfo`] (revoked) |
//! | `GET /v1/audit?since=&actor=&limit=&cursor=` | admin, auditor | [`AuditPage`] |
//! | `PUT /v1/devices/{client_id}/allowlist` | admin | [`AllowList`] -> [`DeviceStatus`] |
//! | `PUT /v1/devices/{client_id}/policy` | admin | [`PolicyUpdate`] -> [`DeviceStatus`] |
//! | `GET /v1/models`, `GET /v1/models/{model}` | admin, auditor, broker | [`ModelList`], [`ModelSettings`] |
//! | `PUT /v1/models/{model}` | admin | [`ModelSettings`] -> [`ModelSettings`] |
//! | `POST /v1/events` | admin, broker | [`EventBatch`] -> 202 |
//! | `POST /v1/brokers` | admin | [`BrokerEnrollRequest`] -> [`Registered`]-like [`BrokerCertificate`] |

use serde::{Deserialize, Serialize};

/// Most items one `POST /v1/devices/batch` may carry.
pub const MAX_BATCH_ITEMS: usize = 10_000;

/// An RFC 9457 problem document. `type` is a `urn:devid:problem:<slug>` URN.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// For batch registration: the index of the first failing item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
}

/// The role a token carries.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Registers devices, optionally limited to some models.
    Factory,
    /// Reads device status and policies, follows revocations, posts connection events.
    Broker,
    /// Reads everything, changes nothing.
    Auditor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Factory => "factory",
            Role::Broker => "broker",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "factory" => Some(Role::Factory),
            "broker" => Some(Role::Broker),
            "auditor" => Some(Role::Auditor),
            _ => None,
        }
    }
}

/// A device's lifecycle state.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum DeviceState {
    Active,
    /// On hold: its certificates are listed on the CRL with reason certificateHold.
    Suspended,
    /// Final.
    Revoked,
}

impl DeviceState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Active => "active",
            DeviceState::Suspended => "suspended",
            DeviceState::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<DeviceState> {
        match s {
            "active" => Some(DeviceState::Active),
            "suspended" => Some(DeviceState::Suspended),
            "revoked" => Some(DeviceState::Revoked),
            _ => None,
        }
    }
}

/// A certificate's state.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum CertState {
    Good,
    /// certificateHold (the device is suspended).
    Hold,
    Revoked,
}

impl CertState {
    pub fn as_str(self) -> &'static str {
        match self {
            CertState::Good => "good",
            CertState::Hold => "hold",
            CertState::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<CertState> {
        match s {
            "good" => Some(CertState::Good),
            "hold" => Some(CertState::Hold),
            "revoked" => Some(CertState::Revoked),
            _ => None,
        }
    }
}

/// RFC 5280 CRLReason, by its ASN.1 name. `certificateHold` is set by suspension only.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum RevocationReason {
    Unspecified,
    KeyCompromise,
    AffiliationChanged,
    Superseded,
    CessationOfOperation,
    CertificateHold,
    PrivilegeWithdrawn,
}

impl RevocationReason {
    pub const ALL: [RevocationReason; 7] = [
        RevocationReason::Unspecified,
        RevocationReason::KeyCompromise,
        RevocationReason::AffiliationChanged,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
        RevocationReason::CertificateHold,
        RevocationReason::PrivilegeWithdrawn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "keyCompromise",
            RevocationReason::AffiliationChanged => "affiliationChanged",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessationOfOperation",
            RevocationReason::CertificateHold => "certificateHold",
            RevocationReason::PrivilegeWithdrawn => "privilegeWithdrawn",
        }
    }

    pub fn parse(s: &str) -> Option<RevocationReason> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The CRLReason code (RFC 5280 section 5.3.1).
    pub fn code(self) -> u8 {
        match self {
            RevocationReason::Unspecified => 0,
            RevocationReason::KeyCompromise => 1,
            RevocationReason::AffiliationChanged => 3,
            RevocationReason::Superseded => 4,
            RevocationReason::CessationOfOperation => 5,
            RevocationReason::CertificateHold => 6,
            RevocationReason::PrivilegeWithdrawn => 9,
        }
    }
}

/// One device to register (`POST /v1/devices`, or an item of a batch).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Checked by [`crate::HardwareSerial`] (kept a `String` here so that a bad value gets the
    /// rule's own 422 rather than a JSON error).
    pub hardware_serial: String,
    /// Checked by [`crate::ModelName`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// A ClientID burned into firmware. Without it devid makes one (per-model prefix, check
    /// character).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// A JSON object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    /// PEM PKCS#10 request; exclusive with `generate_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csr: Option<String>,
    /// The service makes the key pair and returns the PKCS#8 key once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub generate_key: bool,
}

/// The answer to a registration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Registered {
    pub client_id: String,
    pub hardware_serial: String,
    #[serde(default)]
    pub model: Option<String>,
    /// The device certificate, PEM.
    pub certificate: String,
    /// The CA chain, PEM: issuing CA first, root last.
    pub chain: String,
    /// Certificate serial number, lowercase hex.
    pub serial: String,
    /// SHA-256 of the certificate DER, lowercase hex.
    pub fingerprint_sha256: String,
    pub not_before: String,
    pub not_after: String,
    /// PKCS#8 PEM private key, only with `generate_key` and only in the first answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// False when the device was already registered with the same CSR (idempotent replay).
    pub created: bool,
    /// The device's state now: `active` for a new device; a replay may find it suspended or
    /// revoked, and a caller must not treat such a device as ready to ship.
    pub status: DeviceState,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub items: Vec<RegisterRequest>,
}

/// All or nothing: either every item is registered (or was already), or none is and the error
/// names the failing item's index.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BatchResponse {
    pub items: Vec<Registered>,
    /// How many items were new.
    pub created: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct DeviceListQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DeviceState>,
    /// Exact hardware serial (the label on the box): at most one device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware_serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_after: Option<String>,
    /// 1..=1000, default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeviceList {
    pub items: Vec<DeviceSummary>,
    /// Absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeviceSummary {
    pub client_id: String,
    pub hardware_serial: String,
    #[serde(default)]
    pub model: Option<String>,
    pub status: DeviceState,
    pub created_at: String,
    #[serde(default)]
    pub last_seen: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CertificateInfo {
    pub serial: String,
    pub client_id: String,
    pub fingerprint_sha256: String,
    pub not_before: String,
    pub not_after: String,
    pub status: CertState,
    /// `idevid` (birth certificate) or `ldevid` (short-lived operational identity).
    pub profile: String,
    #[serde(default)]
    pub revoked_at: Option<String>,
    #[serde(default)]
    pub revocation_reason: Option<RevocationReason>,
    /// PEM; present on single-certificate lookups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Device {
    pub client_id: String,
    pub hardware_serial: String,
    #[serde(default)]
    pub model: Option<String>,
    pub status: DeviceState,
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    pub created_at: String,
    #[serde(default)]
    pub revoked_at: Option<String>,
    #[serde(default)]
    pub revocation_reason: Option<RevocationReason>,
    #[serde(default)]
    pub last_seen: Option<String>,
    #[serde(default)]
    pub last_address: Option<String>,
    /// Current first, then past ones, newest first.
    pub certificates: Vec<CertificateInfo>,
}

/// The small answer brokers poll: `GET /v1/devices/{client_id}/status` (with an ETag).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeviceStatus {
    pub client_id: String,
    pub status: DeviceState,
    #[serde(default)]
    pub model: Option<String>,
    /// Serials of this device's certificates that are revoked or on hold.
    #[serde(default)]
    pub revoked_serials: Vec<String>,
    /// Topic policy (what the broker plugin enforces; empty lists mean the defaults).
    #[serde(default)]
    pub policy: Option<TopicPolicy>,
    /// CIDRs the device may connect from; empty means anywhere.
    #[serde(default)]
    pub allowed_cidrs: Vec<String>,
    /// `off` or `required`: whether the broker requires per-message authentication.
    #[serde(default)]
    pub message_auth: crate::MessageAuth,
}

/// Topic filters a device may publish and subscribe to, `%c` standing for its ClientID.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TopicPolicy {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

impl Default for TopicPolicy {
    /// Publish and subscribe under `devices/%c/#`, subscribe to `broadcast/#`.
    fn default() -> Self {
        TopicPolicy {
            publish: vec!["devices/%c/#".to_string()],
            subscribe: vec!["devices/%c/#".to_string(), "broadcast/#".to_string()],
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    pub reason: RevocationReason,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// What a device-feed entry did (a status change, or `updated` settings).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum RevocationAction {
    /// Final: the certificates in `serials` (and, for scope device, the device) are revoked.
    Revoked,
    /// The device and its certificates are on hold.
    Suspended,
    /// The hold is lifted.
    Resumed,
    /// Settings changed (topic policy, allow-list, message authentication): brokers fetch the
    /// device's status again (scope device) or that of every connected device of the model
    /// (scope model) and apply it to live connections.
    Updated,
}

/// Whether an entry is about a whole device or one certificate.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum RevocationScope {
    Device,
    Certificate,
    /// Every device of `model` (only with [`RevocationAction::Updated`]).
    Model,
}

/// One entry of the device feed (served at `/v1/revocations`): a status change or an
/// `updated` settings change. `seq` is strictly increasing and gap-free in commit order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FeedEntry {
    pub seq: i64,
    pub scope: RevocationScope,
    pub action: RevocationAction,
    pub client_id: String,
    /// Certificate serials affected, lowercase hex.
    pub serials: Vec<String>,
    #[serde(default)]
    pub reason: Option<RevocationReason>,
    pub at: String,
    /// Scope model: the model whose settings changed (`client_id` is then empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FeedPage {
    pub entries: Vec<FeedEntry>,
    /// The newest seq in the feed (0 when empty). Keep calling with `since = last entry's seq`
    /// until it is reached.
    pub head: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    pub role: Role,
    pub name: String,
    /// Factory tokens only: models it may register. Absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// Lifetime in seconds. Absent: no expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub role: Role,
    #[serde(default)]
    pub models: Option<Vec<String>>,
    pub created_at: String,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub revoked_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub info: TokenInfo,
    /// The secret, shown once: `devid_<id>_<random>`.
    pub token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenList {
    pub items: Vec<TokenInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEntry {
    pub id: i64,
    pub at: String,
    /// Token id, or `system`.
    pub actor_id: String,
    pub actor_name: String,
    /// e.g. `device.register`, `device.revoke`, `token.create`.
    pub action: String,
    pub target: String,
    /// `ok`, or `error: <public message>`.
    pub outcome: String,
    /// What the caller said about it, e.g. a suspension's comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct AuditQuery {
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Token id or name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `PUT /v1/devices/{client_id}/allowlist`: CIDRs (`10.0.0.0/8`, `2001:db8::/32`, or a single
/// address) the device may connect from. Empty: anywhere. Each entry is checked by
/// [`crate::Cidr`] and stored in its canonical form.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AllowList {
    pub cidrs: Vec<String>,
}

/// `PUT /v1/devices/{client_id}/policy`: per-device overrides. Absent fields fall back to the
/// model's settings, then to the defaults.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct PolicyUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topics: Option<TopicPolicy>,
    /// `off` or `required`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_auth: Option<String>,
}

/// Per-model settings (`PUT /v1/models/{model}`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    #[serde(default)]
    pub name: String,
    /// 1 to 6 of `[0-9A-Za-z]`; absent: derived from the model name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id_prefix: Option<String>,
    /// Topic templates with `%c` for the ClientID; absent: [`TopicPolicy::default`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topics: Option<TopicPolicy>,
    /// `off` (default) or `required`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_auth: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ModelList {
    pub items: Vec<ModelSettings>,
}

/// What a broker saw.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionEventKind {
    Connect,
    Disconnect,
    AuthFailure,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConnectionEvent {
    pub kind: ConnectionEventKind,
    /// Empty when the client never said one.
    pub client_id: String,
    /// RFC 3339.
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
#[serde(deny_unknown_fields)]
pub struct EventBatch {
    pub events: Vec<ConnectionEvent>,
}

/// `POST /v1/brokers` (admin): enrol a broker. The key is made where the broker runs; the CSR
/// comes here.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BrokerEnrollRequest {
    /// DNS name (SAN DNS and CN), e.g. `mqtt.example.com`.
    pub name: String,
    pub csr: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BrokerCertificate {
    pub name: String,
    pub certificate: String,
    pub chain: String,
    pub serial: String,
    pub fingerprint_sha256: String,
    pub not_before: String,
    pub not_after: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_by_name_and_serde() {
        for r in RevocationReason::ALL {
            assert_eq!(RevocationReason::parse(r.as_str()), Some(r));
            let json = serde_json::to_string(&r).expect("serialize");
            assert_eq!(json, format!("\"{}\"", r.as_str()));
        }
        assert_eq!(RevocationReason::parse("keycompromise"), None);
    }

    #[test]
    fn register_request_rejects_unknown_fields() {
        let err = serde_json::from_str::<RegisterRequest>(r#"{"hardware_serial":"x","csrr":"y"}"#);
        assert!(err.is_err());
    }
}
