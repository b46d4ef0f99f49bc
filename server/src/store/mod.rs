//! Storage: one `Store` over SQLite (embedded default) or PostgreSQL (scale-out).
//!
//! The HTTP layer and the registration pipeline call only the methods below; the SQL lives in the
//! backend modules. Times are i64 unix seconds (UTC). Serials and fingerprints are lowercase hex.
//! Every mutating method writes its audit record(s) in the same transaction as the change, so an
//! acknowledged change always has its audit entry and vice versa.
//!
//! SKELETON written by the lead to fix the interface; the store engineer owns this file and fills
//! in the bodies (signatures may gain fields; tell the lead about any change).

use devid_core::api::{CertState, DeviceState, RevocationAction, RevocationReason, RevocationScope, Role};

/// Who did something: a token, or the service itself.
#[derive(Debug, Clone)]
pub struct Actor {
    /// Token id, or `system`.
    pub id: String,
    pub name: String,
}

/// One audit record to write.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub at: i64,
    pub actor: Actor,
    /// e.g. `device.register`, `device.revoke`, `certificate.revoke`, `token.create`.
    pub action: String,
    pub target: String,
    /// `ok` or `error: <public message>`.
    pub outcome: String,
}

#[derive(Debug, Clone)]
pub struct AuditRow {
    pub id: i64,
    pub record: AuditRecord,
}

#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// Factory tokens: models allowed (None: any).
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
    pub cert: NewCert,
}

#[derive(Debug, Clone)]
pub struct CertRow {
    pub serial: String,
    pub client_id: String,
    pub fingerprint: String,
    pub der: Vec<u8>,
    pub not_before: i64,
    pub not_after: i64,
    pub status: CertState,
    pub profile: String,
    pub csr_sha256: Option<String>,
    pub revoked_at: Option<i64>,
    pub reason: Option<RevocationReason>,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct DeviceRow {
    /// Internal, monotonically increasing; used for cursors.
    pub id: i64,
    pub client_id: String,
    pub hardware_serial: String,
    pub model: Option<String>,
    pub metadata: Option<String>,
    pub status: DeviceState,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    pub reason: Option<RevocationReason>,
    pub last_seen: Option<i64>,
    pub last_address: Option<String>,
}

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
    /// The hardware_serial is registered with a different CSR (or with a generated key).
    SerialTaken,
    /// The ClientID belongs to another device.
    ClientIdTaken,
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
    pub model: Option<String>,
    pub created_after: Option<i64>,
    /// Return devices with id > after_id (cursor).
    pub after_id: Option<i64>,
    pub limit: u32,
}

#[derive(Debug, Clone)]
pub struct FeedEntryRow {
    pub seq: i64,
    pub scope: RevocationScope,
    pub action: RevocationAction,
    pub client_id: String,
    pub serials: Vec<String>,
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

#[derive(Debug, Clone)]
pub struct CrlRow {
    pub number: i64,
    /// Feed head this CRL reflects.
    pub feed_head: i64,
    pub der: Vec<u8>,
    pub this_update: i64,
    pub next_update: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// An AllOrNothing registration failed at item `index`.
    #[error("item {index}: {conflict:?}")]
    BatchConflict { index: usize, conflict: RegConflict },
    /// A state change that is not allowed (e.g. resuming a revoked device); message is public.
    #[error("{0}")]
    InvalidTransition(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}
