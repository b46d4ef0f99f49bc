//! What the store takes and returns. Rows are read with `#[derive(sqlx::FromRow)]`, by column
//! name: a field is a column. Text columns holding a value with rules (a state, a reason, a JSON
//! list) are parsed as the row is read (`stored::Stored`, `stored::StoredOpt`), so a value edited into
//! something invalid by hand fails the read instead of travelling on.

use devid_core::api::{
    CertState, DeviceKind, DeviceState, RevocationAction, RevocationReason, RevocationScope, Role,
};
use devid_core::{ConnectWith, LdevidValidity, RenewalGrace};
use sqlx::FromRow;

use super::stored::{Stored, StoredOpt};

/// Who did something: a token, or the service itself.
#[derive(Debug, Clone, FromRow)]
pub struct Actor {
    /// Token id, or `system`.
    #[sqlx(rename = "actor_id")]
    pub id: String,
    #[sqlx(rename = "actor_name")]
    pub name: String,
}

/// One audit record to write.
#[derive(Debug, Clone, FromRow)]
pub struct AuditRecord {
    pub at: i64,
    #[sqlx(flatten)]
    pub actor: Actor,
    /// e.g. `device.register`, `device.revoke`, `certificate.revoke`, `token.create`.
    pub action: String,
    pub target: String,
    /// `ok` or `error: <public message>`.
    pub outcome: String,
    /// What the caller said about it, if anything (e.g. a suspension's comment).
    pub detail: Option<String>,
}

#[derive(Debug, Clone, FromRow)]
pub struct AuditRow {
    pub id: i64,
    #[sqlx(flatten)]
    pub record: AuditRecord,
}

#[derive(Debug, Clone, FromRow)]
pub struct TokenRow {
    pub id: String,
    pub name: String,
    #[sqlx(try_from = "Stored")]
    pub role: Role,
    /// Factory tokens: models allowed (None: any).
    #[sqlx(try_from = "StoredOpt")]
    pub models: Option<Vec<String>>,
    /// SHA-256 of the whole secret token string.
    pub hash: Vec<u8>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// A certificate to store with a new device.
#[derive(Debug, Clone)]
pub struct NewCert {
    pub serial: String,
    pub fingerprint: String,
    pub der: Vec<u8>,
    pub not_before: i64,
    pub not_after: i64,
    /// SHA-256 (hex) of the CSR DER; None when devid generated the key.
    pub csr_sha256: Option<String>,
    /// The certified key's identity (`devid_core::csr::spki_sha256`): one key, one device.
    pub spki_sha256: [u8; 32],
    /// `idevid` today.
    pub profile: String,
}

#[derive(Debug, Clone)]
pub struct NewDevice {
    pub client_id: String,
    /// True when devid made the ClientID (so a collision may be retried with a fresh one).
    pub client_id_generated: bool,
    pub hardware_serial: String,
    pub model: Option<String>,
    /// A JSON object, serialized.
    pub metadata: Option<String>,
    pub created_at: i64,
    /// A device's certificate, or a sensor's sealed key.
    pub credential: Credential,
}

/// What a new device is registered with, which also says its kind.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A device: its first certificate.
    Certificate(NewCert),
    /// A sensor: its key K sealed under the sensor KEK (`crate::sensorkeys`), never K itself.
    SensorKey { sealed: Vec<u8> },
}

impl NewDevice {
    pub fn kind(&self) -> DeviceKind {
        match self.credential {
            Credential::Certificate(_) => DeviceKind::Device,
            Credential::SensorKey { .. } => DeviceKind::Sensor,
        }
    }

    /// A device's certificate (None for a sensor).
    pub fn cert(&self) -> Option<&NewCert> {
        match &self.credential {
            Credential::Certificate(c) => Some(c),
            Credential::SensorKey { .. } => None,
        }
    }

    pub fn cert_mut(&mut self) -> Option<&mut NewCert> {
        match &mut self.credential {
            Credential::Certificate(c) => Some(c),
            Credential::SensorKey { .. } => None,
        }
    }

    /// A sensor's sealed key (None for a device).
    pub fn sealed_key(&self) -> Option<&[u8]> {
        match &self.credential {
            Credential::Certificate(_) => None,
            Credential::SensorKey { sealed } => Some(sealed),
        }
    }
}

/// A certificate, read with `CERT_COLUMNS`: the columns `devices` also has are renamed
/// (`cert_*`), so that one row can carry a device and one of its certificates.
#[derive(Debug, Clone, FromRow)]
pub struct CertRow {
    pub serial: String,
    /// Its device's.
    pub client_id: String,
    pub fingerprint: String,
    pub der: Vec<u8>,
    pub not_before: i64,
    pub not_after: i64,
    #[sqlx(rename = "cert_status", try_from = "Stored")]
    pub status: CertState,
    pub profile: String,
    pub csr_sha256: Option<String>,
    #[sqlx(rename = "cert_revoked_at")]
    pub revoked_at: Option<i64>,
    #[sqlx(rename = "cert_reason", try_from = "StoredOpt")]
    pub reason: Option<RevocationReason>,
    #[sqlx(rename = "cert_created_at")]
    pub created_at: i64,
}

/// The select list [`CertRow`] reads, `c` being `certificates` and `d` its device.
pub(super) const CERT_COLUMNS: &str = "c.serial, d.client_id, c.fingerprint, c.der, \
     c.not_before, c.not_after, c.status AS cert_status, c.profile, c.csr_sha256, \
     c.revoked_at AS cert_revoked_at, c.reason AS cert_reason, c.created_at AS cert_created_at";

/// A device, read from `devices` (`SELECT *` or `d.*`: the columns it does not name, such as
/// the connection counters, are not read).
#[derive(Debug, Clone, FromRow)]
pub struct DeviceRow {
    /// Internal, monotonically increasing; used for cursors.
    pub id: i64,
    pub client_id: String,
    pub hardware_serial: String,
    pub model: Option<String>,
    pub metadata: Option<String>,
    #[sqlx(try_from = "Stored")]
    pub status: DeviceState,
    #[sqlx(try_from = "Stored")]
    pub kind: DeviceKind,
    /// A sensor's gateway (ClientID), where the statement reads it ([`GATEWAY_COLUMN`]);
    /// None otherwise.
    #[sqlx(default)]
    pub gateway: Option<String>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    #[sqlx(try_from = "StoredOpt")]
    pub reason: Option<RevocationReason>,
    pub last_seen: Option<i64>,
    pub last_address: Option<String>,
}

/// The select-list entry that gives [`DeviceRow::gateway`], `d` being the device.
pub(super) const GATEWAY_COLUMN: &str = "(SELECT g.client_id FROM sensors s \
     JOIN devices g ON g.id = s.gateway_id WHERE s.device_id = d.id) AS gateway";

/// A device with its certificates, newest first.
#[derive(Debug, Clone)]
pub struct DeviceWithCerts {
    pub device: DeviceRow,
    pub certs: Vec<CertRow>,
}

/// How one registration item came out.
#[derive(Debug, Clone)]
pub enum RegOutcome {
    /// Inserted now.
    Created,
    /// The same hardware_serial was already registered with the same CSR: the stored device and
    /// its current certificate (idempotent replay; the freshly signed certificate is discarded).
    Existing(Box<DeviceWithCerts>),
}

/// Why one registration item was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegConflict {
    /// The hardware_serial is registered to device `holder` (stored, or created by an earlier
    /// item of the call), and this request is not a replay of that registration: it differs in
    /// `differs` (`csr`, `generate_key`, `model`, `client_id` or `metadata`).
    SerialTaken {
        holder: String,
        differs: &'static str,
    },
    /// The ClientID belongs to another device.
    ClientIdTaken,
    /// The certificate's public key belongs to device `holder` (stored, or created by an
    /// earlier item of the call): one key pair, one device.
    KeyTaken { holder: String },
    /// The public key was revoked for keyCompromise: it is never certified again.
    KeyCompromised,
}

/// How `register` treats conflicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegMode {
    /// A batch: one conflict rolls everything back (`StoreError::BatchConflict`).
    AllOrNothing,
    /// Independent requests grouped into one transaction (group commit): each item succeeds or
    /// fails on its own; the successes commit together.
    Independent,
}

#[derive(Debug, Clone, Default)]
pub struct DeviceFilter {
    pub status: Option<DeviceState>,
    pub kind: Option<DeviceKind>,
    pub model: Option<String>,
    /// ClientID or hardware serial starts with this.
    pub prefix: Option<devid_core::SearchPrefix>,
    pub created_after: Option<i64>,
    /// Return devices with id > after_id (cursor).
    pub after_id: Option<i64>,
    pub limit: u32,
}

#[derive(Debug, Clone, FromRow)]
pub struct FeedEntryRow {
    pub seq: i64,
    #[sqlx(try_from = "Stored")]
    pub scope: RevocationScope,
    #[sqlx(try_from = "Stored")]
    pub action: RevocationAction,
    pub client_id: String,
    #[sqlx(try_from = "Stored")]
    pub serials: Vec<String>,
    #[sqlx(try_from = "StoredOpt")]
    pub reason: Option<RevocationReason>,
    pub at: i64,
}

/// Entries a CRL must list: certificates revoked or on hold.
#[derive(Debug, Clone)]
pub struct CrlListing {
    pub serial: String,
    pub revoked_at: i64,
    /// RFC 5280 code; 6 = certificateHold.
    pub reason_code: u8,
}

#[derive(Debug, Clone, FromRow)]
pub struct CrlRow {
    pub number: i64,
    /// Feed head this CRL reflects.
    pub feed_head: i64,
    pub der: Vec<u8>,
    pub this_update: i64,
    pub next_update: i64,
}

/// An extra setting stored with a device for the broker. Absent fields fall back to the
/// model's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, FromRow)]
pub struct DevicePolicyRow {
    /// CIDRs the device may connect from; None: anywhere (or the model's setting).
    #[sqlx(try_from = "StoredOpt")]
    pub allowed_cidrs: Option<Vec<String>>,
    /// Serialized `TopicPolicy` JSON; None: the model's.
    pub topic_policy: Option<String>,
    /// `off` or `required`; None: the model's.
    pub message_auth: Option<String>,
}

/// A change to some of a device's own settings: `None` leaves that field as stored,
/// `Some(value)` sets it (`Some(None)` clears it, back to the model's setting).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DevicePolicyChange {
    pub allowed_cidrs: Option<Option<Vec<String>>>,
    pub topic_policy: Option<Option<String>>,
    pub message_auth: Option<Option<String>>,
}

/// Per-model settings: ClientID prefix, topic policy, message authentication, LDevIDs.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct ModelRow {
    pub name: String,
    pub client_id_prefix: Option<String>,
    /// Serialized `TopicPolicy` JSON.
    pub topic_policy: Option<String>,
    pub message_auth: Option<String>,
    /// None: the default (`90d`).
    #[sqlx(try_from = "StoredOpt")]
    pub ldevid_validity: Option<LdevidValidity>,
    /// None: the default (`30d`).
    #[sqlx(try_from = "StoredOpt")]
    pub renewal_grace: Option<RenewalGrace>,
    /// None: the default (`any`).
    #[sqlx(try_from = "StoredOpt")]
    pub connect_with: Option<ConnectWith>,
    pub updated_at: i64,
}

/// Counters kept per device from connection events.
#[derive(Debug, Clone, Default, PartialEq, Eq, FromRow)]
pub struct DeviceActivity {
    pub last_seen: Option<i64>,
    pub last_address: Option<String>,
    pub connect_count: i64,
    pub auth_failure_count: i64,
    pub last_auth_failure: Option<i64>,
}

/// What [`Store::apply_device_transition`](super::Store::apply_device_transition) changes: a
/// device, or one certificate (and so its device's row is locked too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransitionSubject<'a> {
    /// By ClientID.
    Device(&'a str),
    /// By serial (normalized lowercase hex).
    Certificate(&'a str),
}

/// The state after a transition, as committed.
#[derive(Debug, Clone)]
pub struct Transition {
    pub device: DeviceWithCerts,
    /// The certificate, when the subject was one.
    pub certificate: Option<CertRow>,
    /// The feed entry written; None when the plan changed nothing.
    pub entry: Option<FeedEntryRow>,
}

/// A sensor attached to a gateway, with what the broker's key endpoint needs.
#[derive(Debug, Clone)]
pub struct SensorRow {
    pub client_id: String,
    pub status: DeviceState,
    pub model: Option<String>,
    pub last_seen: Option<i64>,
    /// Its own topic policy (JSON), if any.
    pub topic_policy: Option<String>,
    /// Its model's topic policy (JSON), if any.
    pub model_topic_policy: Option<String>,
    /// K sealed under the sensor KEK.
    pub sealed_key: Vec<u8>,
    /// The highest seq brokers reported accepting (0: none).
    pub seq_floor: u64,
    /// Readings brokers accepted.
    pub accepted: i64,
    /// Readings brokers refused, by reason.
    pub refused: std::collections::BTreeMap<String, i64>,
}

/// What brokers reported of one sensor's readings in one batch (summed per sensor).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SensorReading {
    pub client_id: String,
    /// The highest seq accepted (0: none).
    pub highest_seq: u64,
    pub accepted: i64,
    /// Refused readings by reason.
    pub refused: std::collections::BTreeMap<String, i64>,
    /// The newest accepted reading.
    pub last_accepted_at: Option<i64>,
}
