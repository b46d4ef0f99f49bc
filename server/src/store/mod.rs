//! Storage: one `Store` over SQLite (embedded default) or PostgreSQL (scale-out).
//!
//! The HTTP layer and the registration pipeline call only the methods below; the SQL lives in the
//! backend modules. Times are i64 unix seconds (UTC). Serials and fingerprints are lowercase hex.
//! Every mutating method writes its audit record(s) in the same transaction as the change, so an
//! acknowledged change always has its audit entry and vice versa.
//!
//!
//! Layout: this file holds the types, the `Store` handle and the backend-independent logic (how a
//! registration batch is classified). `sqlite.rs` and `postgres.rs` hold connection setup and the
//! few statements that differ (locks, NOTIFY); `common.rs` holds the SQL both share and is
//! compiled once per backend (see the note at its top).
//!
//! Performance: registration does a constant number of statements per call (chunked multi-row
//! `IN (...)` look-ups and multi-row `VALUES` inserts), because sqlx's SQLite driver costs tens of
//! microseconds per statement.

mod postgres;
mod sqlite;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use devid_core::api::{
    CertState, DeviceState, RevocationAction, RevocationReason, RevocationScope, Role,
};

use crate::domain::lifecycle::{self, Action, CertScope, Current, Plan as LifecyclePlan};

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
    /// What the caller said about it, if anything (e.g. a suspension's comment).
    pub detail: Option<String>,
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

/// An extra setting stored with a device for the broker. Absent fields fall back to the
/// model's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DevicePolicyRow {
    /// CIDRs the device may connect from; None: anywhere (or the model's setting).
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

/// Per-model settings: ClientID prefix, topic policy, message authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRow {
    pub name: String,
    pub client_id_prefix: Option<String>,
    /// Serialized `TopicPolicy` JSON.
    pub topic_policy: Option<String>,
    pub message_auth: Option<String>,
    pub updated_at: i64,
}

/// A connection event (connect, disconnect, auth failure) as the store records it.
#[derive(Debug, Clone)]
pub struct DeviceEvent {
    pub client_id: String,
    pub at: i64,
    pub address: Option<String>,
    /// True for an authentication failure, false for a successful connect.
    pub auth_failure: bool,
}

/// Counters kept per device from connection events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceActivity {
    pub last_seen: Option<i64>,
    pub last_address: Option<String>,
    pub connect_count: i64,
    pub auth_failure_count: i64,
    pub last_auth_failure: Option<i64>,
}

/// What [`Store::apply_device_transition`] changes: a device, or one certificate (and so its
/// device's row is locked too).
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

fn nothing_changed() -> StoreError {
    StoreError::InvalidTransition("nothing changed".into())
}

/// PostgreSQL NOTIFY channel carrying the seq of each new feed entry.
pub const FEED_CHANNEL: &str = "devid_feed";

/// How often `register` retries a transaction that lost a uniqueness race (PostgreSQL, several
/// processes) before giving up with the database error.
const REGISTER_ATTEMPTS: usize = 6;

/// The storage handle. Cheap to clone (an `Arc` inside); all methods take `&self`.
#[derive(Clone)]
pub struct Store {
    backend: Arc<Backend>,
}

enum Backend {
    Sqlite(sqlite::Backend),
    Postgres(postgres::Backend),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.is_postgres() {
            "postgres"
        } else {
            "sqlite"
        };
        f.debug_struct("Store").field("backend", &kind).finish()
    }
}

/// Runs the same expression on whichever backend this store has; both backend types have
/// methods of the same names and signatures (most of them come from `common.rs`).
macro_rules! on_backend {
    ($self:ident, $b:ident => $e:expr) => {
        match &*$self.backend {
            Backend::Sqlite($b) => $e,
            Backend::Postgres($b) => $e,
        }
    };
}

impl Store {
    /// Opens (creating if missing) a SQLite database in WAL mode: one writer connection, which
    /// serializes writes the way SQLite does anyway, plus a small read pool.
    /// `durable`: synchronous=FULL (every commit reaches the disk) instead of NORMAL.
    pub async fn connect_sqlite(path: &Path, durable: bool) -> Result<Store, StoreError> {
        let b = sqlite::Backend::connect(path, durable).await?;
        Ok(Store {
            backend: Arc::new(Backend::Sqlite(b)),
        })
    }

    /// Connects a pool of 16 connections to PostgreSQL. Gives up after the URL's
    /// `connect_timeout` (seconds), else 10 s, when the server cannot be reached.
    pub async fn connect_postgres(url: &str) -> Result<Store, StoreError> {
        let b = postgres::Backend::connect(url).await?;
        Ok(Store {
            backend: Arc::new(Backend::Postgres(b)),
        })
    }

    /// Where a PostgreSQL URL points: `host:port/database`, without the password.
    pub fn postgres_address(url: &str) -> String {
        postgres::address(url)
    }

    /// Applies the embedded migrations of this backend (safe to run from several processes),
    /// then binds the keys of certificates issued before keys were tracked (see
    /// `backfill_keys`).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        on_backend!(self, b => b.migrate().await)?;
        let n = on_backend!(self, b => b.backfill_keys().await)?;
        if n > 0 {
            tracing::info!(
                certificates = n,
                "bound the keys of earlier certificates to their devices"
            );
        }
        Ok(())
    }

    pub fn is_postgres(&self) -> bool {
        matches!(&*self.backend, Backend::Postgres(_))
    }

    /// A trivial query: the database is reachable.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_backend!(self, b => b.ping().await)
    }

    /// Closes the pools (waits for connections in use to come back).
    pub async fn close(&self) {
        on_backend!(self, b => b.close().await)
    }

    // ---- tokens ------------------------------------------------------------------------------

    /// Inserts `t` only if there is no token at all (first start). Atomic across processes on
    /// PostgreSQL (an advisory lock) and on SQLite (`BEGIN IMMEDIATE`). True if inserted.
    pub async fn bootstrap_admin(
        &self,
        t: &TokenRow,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        on_backend!(self, b => b.bootstrap_admin(t, audit).await)
    }

    pub async fn insert_token(&self, t: &TokenRow, audit: &AuditRecord) -> Result<(), StoreError> {
        on_backend!(self, b => b.insert_token(t, audit).await)
    }

    pub async fn find_token_by_hash(&self, hash: &[u8]) -> Result<Option<TokenRow>, StoreError> {
        on_backend!(self, b => b.find_token_by_hash(hash).await)
    }

    /// All tokens, oldest first.
    pub async fn list_tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        on_backend!(self, b => b.list_tokens().await)
    }

    /// Sets `revoked_at` (a second revocation keeps the first time). NotFound if no such id.
    pub async fn revoke_token(
        &self,
        id: &str,
        at: i64,
        audit: &AuditRecord,
    ) -> Result<TokenRow, StoreError> {
        on_backend!(self, b => b.revoke_token(id, at, audit).await)
    }

    // ---- registration ------------------------------------------------------------------------

    /// Stores new devices with their first certificate, in one transaction, with a constant
    /// number of statements per call (chunked by the backend's bind limit).
    ///
    /// Per item, in order: a hardware_serial already stored (or created by an earlier item of
    /// this call) whose current certificate has the same `csr_sha256` (Some), with the same
    /// model, the same ClientID (when the item names one, i.e. not generated) and the same
    /// metadata (when the item has some), is `Existing`; otherwise that serial is `SerialTaken`
    /// naming the first difference; a ClientID owned by another device is `ClientIdTaken`; a
    /// key bound to another device is `KeyCompromised` if it was revoked for keyCompromise, else
    /// `KeyTaken`; else the device is created, its key bound to it, with one `device.register`
    /// audit row.
    /// `AllOrNothing`: the first conflict stores nothing and returns `BatchConflict`.
    /// A uniqueness race (or deadlock) with another process is retried with a fresh
    /// classification, so callers see `Existing`/`SerialTaken` rather than a database error.
    /// New devices are inserted in hardware_serial order, so that concurrent batches take their
    /// unique-index locks in the same order.
    pub async fn register(
        &self,
        items: &[NewDevice],
        mode: RegMode,
        actor: &Actor,
        at: i64,
    ) -> Result<Vec<Result<RegOutcome, RegConflict>>, StoreError> {
        // First try storing every item as new in one statement (the common case on a
        // manufacturing line). If any of them is a replay or a conflict, that statement wrote
        // nothing, and the classifying path below sorts them out.
        match on_backend!(self, b => b.register_new(items, actor, at).await) {
            Ok(()) => return Ok(items.iter().map(|_| Ok(RegOutcome::Created)).collect()),
            Err(StoreError::Database(e)) if is_retryable(&e) => {
                tracing::debug!("not every registration is new; classifying them");
            }
            Err(e) => return Err(e),
        }
        let mut attempt = 1;
        loop {
            let r = on_backend!(self, b => b.register_once(items, mode, actor, at).await);
            match r {
                Err(StoreError::Database(e)) if is_retryable(&e) && attempt < REGISTER_ATTEMPTS => {
                    attempt += 1;
                    tracing::debug!(attempt, "registration lost a uniqueness race; retrying");
                }
                other => return other,
            }
        }
    }

    // ---- queries -----------------------------------------------------------------------------

    /// A device and its certificates, newest first.
    pub async fn get_device(&self, client_id: &str) -> Result<Option<DeviceWithCerts>, StoreError> {
        on_backend!(self, b => b.get_device(client_id).await)
    }

    /// The device registered under a hardware serial.
    pub async fn get_device_by_serial(
        &self,
        hardware_serial: &str,
    ) -> Result<Option<DeviceWithCerts>, StoreError> {
        on_backend!(self, b => b.get_device_by_serial(hardware_serial).await)
    }

    pub async fn hardware_serial_exists(&self, hardware_serial: &str) -> Result<bool, StoreError> {
        on_backend!(self, b => b.hardware_serial_exists(hardware_serial).await)
    }

    pub async fn client_id_exists(&self, client_id: &str) -> Result<bool, StoreError> {
        on_backend!(self, b => b.client_id_exists(client_id).await)
    }

    /// Devices with id > `after_id`, ordered by id, at most `limit` (0 means 100; capped at
    /// 10,000). `created_after` is exclusive.
    pub async fn list_devices(&self, f: &DeviceFilter) -> Result<Vec<DeviceRow>, StoreError> {
        on_backend!(self, b => b.list_devices(f).await)
    }

    pub async fn count_devices(&self) -> Result<i64, StoreError> {
        on_backend!(self, b => b.count_devices().await)
    }

    pub async fn get_certificate(&self, serial: &str) -> Result<Option<CertRow>, StoreError> {
        on_backend!(self, b => b.get_certificate(serial).await)
    }

    // ---- device transitions -----------------------------------------------------------------

    /// The one way a device's or certificate's state changes. In one transaction: locks the
    /// device row (for a certificate subject: its device's row), reads its state (and the
    /// certificate's), asks `decide` what to do (`domain::lifecycle::plan`), and writes exactly
    /// that: the certificates' and the device's new states, the keys' compromise mark, one feed
    /// entry with the serials that changed, the success audit row (target: the subject; detail:
    /// the plan's); then returns the device (and certificate) as committed. `Plan::Unchanged`
    /// writes nothing and returns the device as it is, without an entry. An error of `decide`
    /// rolls back and is returned as it is; NotFound when the subject does not exist.
    pub async fn apply_device_transition<E, F>(
        &self,
        subject: TransitionSubject<'_>,
        at: i64,
        actor: &Actor,
        decide: F,
    ) -> Result<Transition, E>
    where
        E: From<StoreError>,
        F: FnOnce(&Current) -> Result<LifecyclePlan, E>,
    {
        let r = on_backend!(self, b => b.apply_device_transition(subject, at, actor, decide).await);
        r.map_err(E::from)?
    }

    /// Revokes the device and all its certificates not yet revoked (hold ones included), with
    /// one feed entry and an audit row (the lifecycle's rules applied by
    /// [`Store::apply_device_transition`]).
    pub async fn revoke_device(
        &self,
        client_id: &str,
        reason: RevocationReason,
        at: i64,
        actor: &Actor,
    ) -> Result<(DeviceWithCerts, FeedEntryRow), StoreError> {
        let t = self
            .transition(
                TransitionSubject::Device(client_id),
                at,
                actor,
                Action::Revoke { reason },
            )
            .await?;
        Ok((t.device, t.entry.ok_or_else(nothing_changed)?))
    }

    /// Puts an active device's good certificates on hold. Already suspended: no change, None.
    pub async fn suspend_device(
        &self,
        client_id: &str,
        at: i64,
        actor: &Actor,
        comment: Option<&str>,
    ) -> Result<(DeviceWithCerts, Option<FeedEntryRow>), StoreError> {
        let action = Action::Suspend {
            comment: comment.map(str::to_string),
        };
        let t = self
            .transition(TransitionSubject::Device(client_id), at, actor, action)
            .await?;
        Ok((t.device, t.entry))
    }

    /// Lifts a suspension (hold certificates back to good). Already active: no change, None.
    pub async fn resume_device(
        &self,
        client_id: &str,
        at: i64,
        actor: &Actor,
    ) -> Result<(DeviceWithCerts, Option<FeedEntryRow>), StoreError> {
        let t = self
            .transition(
                TransitionSubject::Device(client_id),
                at,
                actor,
                Action::Resume,
            )
            .await?;
        Ok((t.device, t.entry))
    }

    /// Revokes one certificate (good or on hold). The device's state is unchanged.
    pub async fn revoke_certificate(
        &self,
        serial: &str,
        reason: RevocationReason,
        at: i64,
        actor: &Actor,
    ) -> Result<(CertRow, FeedEntryRow), StoreError> {
        let action = Action::RevokeCertificate { reason };
        let t = self
            .transition(TransitionSubject::Certificate(serial), at, actor, action)
            .await?;
        let entry = t.entry.ok_or_else(nothing_changed)?;
        Ok((t.certificate.ok_or(StoreError::NotFound)?, entry))
    }

    /// [`Store::apply_device_transition`] with the lifecycle's plan, its refusals as
    /// `InvalidTransition`.
    async fn transition(
        &self,
        subject: TransitionSubject<'_>,
        at: i64,
        actor: &Actor,
        action: Action,
    ) -> Result<Transition, StoreError> {
        self.apply_device_transition(subject, at, actor, |current| {
            lifecycle::plan(current, action)
                .map_err(|e| StoreError::InvalidTransition(e.to_string()))
        })
        .await
    }

    // ---- feed --------------------------------------------------------------------------------

    /// Entries with seq > `since`, oldest first, at most `limit` (0 means 100; capped at
    /// 10,000), and the head (0 when the feed is empty). Entries and head are read in one
    /// statement, so they come from one snapshot: head >= every entry returned, and a page
    /// shorter than `limit` ends at the head.
    pub async fn feed_since(
        &self,
        since: i64,
        limit: u32,
    ) -> Result<(Vec<FeedEntryRow>, i64), StoreError> {
        on_backend!(self, b => b.feed_since(since, limit).await)
    }

    pub async fn feed_head(&self) -> Result<i64, StoreError> {
        on_backend!(self, b => b.feed_head().await)
    }

    /// PostgreSQL: LISTENs on [`FEED_CHANNEL`] on a dedicated connection and spawns a task that
    /// sends the seq of every feed entry committed by ANY process (this one included) into
    /// `sink`. After a lost connection it reconnects and sends the current head, since
    /// notifications in the gap are lost: treat every value as "the head is at least N" and
    /// read `feed_since(last_delivered)`. The task ends at the first notification (or reconnect)
    /// after every receiver of `sink` is gone; the caller may also abort it with the handle.
    /// SQLite: returns Ok(None) and does nothing (one process; broadcast in-process).
    pub async fn spawn_feed_listener(
        &self,
        sink: tokio::sync::broadcast::Sender<i64>,
    ) -> Result<Option<tokio::task::JoinHandle<()>>, StoreError> {
        match &*self.backend {
            Backend::Sqlite(_) => Ok(None),
            Backend::Postgres(b) => b.spawn_feed_listener(sink).await.map(Some),
        }
    }

    // ---- CRL ---------------------------------------------------------------------------------

    /// Every certificate on hold or revoked, by serial.
    pub async fn crl_listing(&self) -> Result<Vec<CrlListing>, StoreError> {
        on_backend!(self, b => b.crl_listing().await)
    }

    pub async fn crl_get(&self) -> Result<Option<CrlRow>, StoreError> {
        on_backend!(self, b => b.crl_get().await)
    }

    /// Compare-and-set: stores `row` only if the stored CRL's number is
    /// `expected_previous_number` (None: no CRL stored yet) and `row.number` is greater than it.
    /// False when another writer got there first (re-read and decide again).
    pub async fn crl_put(
        &self,
        row: &CrlRow,
        expected_previous_number: Option<i64>,
    ) -> Result<bool, StoreError> {
        if let Some(prev) = expected_previous_number {
            if row.number <= prev {
                return Ok(false);
            }
        }
        on_backend!(self, b => b.crl_put(row, expected_previous_number).await)
    }

    // ---- audit -------------------------------------------------------------------------------

    pub async fn insert_audit(&self, rec: &AuditRecord) -> Result<(), StoreError> {
        on_backend!(self, b => b.insert_audit(rec).await)
    }

    /// Audit rows oldest first: `at >= since`, actor matching a token id or a token name,
    /// `id > after_id` (cursor), at most `limit` (0 means 100; capped at 10,000).
    pub async fn list_audit(
        &self,
        since: Option<i64>,
        actor: Option<&str>,
        after_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditRow>, StoreError> {
        on_backend!(self, b => b.list_audit(since, actor, after_id, limit).await)
    }

    // ---- connection events, per-device and per-model policy --------------------------------

    /// Applies connection events: connects set last_seen/last_address and count up; auth
    /// failures count up. Events for unknown ClientIDs are skipped. Returns how many applied.
    pub async fn record_events(&self, events: &[DeviceEvent]) -> Result<usize, StoreError> {
        on_backend!(self, b => b.record_events(events).await)
    }

    pub async fn device_activity(
        &self,
        client_id: &str,
    ) -> Result<Option<DeviceActivity>, StoreError> {
        on_backend!(self, b => b.device_activity(client_id).await)
    }

    pub async fn get_device_policy(
        &self,
        client_id: &str,
    ) -> Result<Option<DevicePolicyRow>, StoreError> {
        on_backend!(self, b => b.get_device_policy(client_id).await)
    }

    /// Changes the fields of a device's policy that `change` names, and only those, in one
    /// statement (so concurrent changes of different fields never undo each other); writes
    /// `audit` and appends an `updated` feed entry (scope device) so brokers apply it to a live
    /// connection. NotFound if no device.
    pub async fn change_device_policy(
        &self,
        client_id: &str,
        change: &DevicePolicyChange,
        audit: &AuditRecord,
    ) -> Result<FeedEntryRow, StoreError> {
        on_backend!(self, b => b.change_device_policy(client_id, change, audit).await)
    }

    pub async fn get_model(&self, name: &str) -> Result<Option<ModelRow>, StoreError> {
        on_backend!(self, b => b.get_model(name).await)
    }

    pub async fn list_models(&self) -> Result<Vec<ModelRow>, StoreError> {
        on_backend!(self, b => b.list_models().await)
    }

    /// Inserts or replaces a model's settings, writes `audit` and appends an `updated` feed entry
    /// (scope model; the entry's client_id column holds the model name).
    pub async fn put_model(
        &self,
        m: &ModelRow,
        audit: &AuditRecord,
    ) -> Result<FeedEntryRow, StoreError> {
        on_backend!(self, b => b.put_model(m, audit).await)
    }
}

// ---- backend-independent helpers ----------------------------------------------------------

/// A transaction that lost a race with another process and is worth running again: a unique
/// violation (the other side inserted the same serial or ClientID first), or, on PostgreSQL, a
/// detected deadlock (40P01) or serialization failure (40001).
fn is_retryable(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| {
        d.is_unique_violation() || matches!(d.code().as_deref(), Some("40P01") | Some("40001"))
    })
}

/// A stored value that does not parse (only possible if someone edited the database by hand).
fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Database(sqlx::Error::Decode(
        format!("stored {what} {value:?} is not valid").into(),
    ))
}

fn parse_device_state(s: &str) -> Result<DeviceState, StoreError> {
    DeviceState::parse(s).ok_or_else(|| corrupt("device status", s))
}

fn parse_cert_state(s: &str) -> Result<CertState, StoreError> {
    CertState::parse(s).ok_or_else(|| corrupt("certificate status", s))
}

fn parse_reason(s: Option<String>) -> Result<Option<RevocationReason>, StoreError> {
    s.map(|s| RevocationReason::parse(&s).ok_or_else(|| corrupt("revocation reason", &s)))
        .transpose()
}

fn parse_role(s: &str) -> Result<Role, StoreError> {
    Role::parse(s).ok_or_else(|| corrupt("role", s))
}

fn parse_scope(s: &str) -> Result<RevocationScope, StoreError> {
    match s {
        "device" => Ok(RevocationScope::Device),
        "certificate" => Ok(RevocationScope::Certificate),
        "model" => Ok(RevocationScope::Model),
        _ => Err(corrupt("feed scope", s)),
    }
}

fn scope_str(s: RevocationScope) -> &'static str {
    match s {
        RevocationScope::Device => "device",
        RevocationScope::Certificate => "certificate",
        RevocationScope::Model => "model",
    }
}

fn parse_action(s: &str) -> Result<RevocationAction, StoreError> {
    match s {
        "revoked" => Ok(RevocationAction::Revoked),
        "suspended" => Ok(RevocationAction::Suspended),
        "resumed" => Ok(RevocationAction::Resumed),
        "updated" => Ok(RevocationAction::Updated),
        _ => Err(corrupt("feed action", s)),
    }
}

fn action_str(a: RevocationAction) -> &'static str {
    match a {
        RevocationAction::Revoked => "revoked",
        RevocationAction::Suspended => "suspended",
        RevocationAction::Resumed => "resumed",
        RevocationAction::Updated => "updated",
    }
}

fn json_list(v: &[String]) -> String {
    serde_json::Value::from(v.to_vec()).to_string()
}

fn parse_json_list(what: &str, s: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(s).map_err(|_| corrupt(what, s))
}

/// 0 means the default of 100; at most 10,000.
fn clamp_limit(limit: u32) -> i64 {
    match limit {
        0 => 100,
        n => i64::from(n.min(10_000)),
    }
}

/// Placeholders for generated lists: `$start, ..., $start+n-1` when `numbered` (PostgreSQL),
/// else `?, ?, ...` (SQLite: `sqlite3_bind_parameter_name`, which sqlx calls for every
/// parameter, scans a list of the statement's named/numbered parameters, which is quadratic for
/// thousands of them; anonymous `?` are not in that list).
fn placeholders(numbered: bool, n: usize, start: usize) -> String {
    let mut s = String::with_capacity(n * 7);
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        if numbered {
            s.push('$');
            s.push_str(&(start + i).to_string());
        } else {
            s.push('?');
        }
    }
    s
}

/// `($1,...,$cols),($cols+1,...)` (or all `?`) for `rows` rows, numbering from 1.
fn values_rows(numbered: bool, rows: usize, cols: usize) -> String {
    let mut s = String::with_capacity(rows * (cols * 7 + 3));
    for r in 0..rows {
        if r > 0 {
            s.push(',');
        }
        s.push('(');
        s.push_str(&placeholders(numbered, cols, 1 + r * cols));
        s.push(')');
    }
    s
}

/// Where an `Existing` outcome's device comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExistingRef {
    /// Stored before this call: its device id.
    Stored(i64),
    /// Created by an earlier item of this call: that item's index.
    InBatch(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Plan {
    Create,
    Existing(ExistingRef),
    Conflict(RegConflict),
}

/// What the database holds for a hardware serial named in a registration call.
#[derive(Debug, Clone)]
struct KnownSerial {
    device_id: i64,
    client_id: String,
    model: Option<String>,
    metadata: Option<String>,
    /// csr_sha256 of the device's current certificate.
    csr_sha256: Option<String>,
}

/// What the database holds for a public key named in a registration call.
#[derive(Debug, Clone)]
struct KnownKey {
    /// ClientID of the device the key is bound to.
    holder: String,
    compromised: bool,
}

/// Why `item` is not a replay of the registration of a device with this CSR, ClientID, model
/// and metadata: the first field that differs, or None for a replay. A generated key is never
/// a replay (the key was returned once); a ClientID or metadata the item does not give is not
/// compared; metadata is compared as JSON values.
fn replay_differs(
    item: &NewDevice,
    csr_sha256: Option<&str>,
    client_id: &str,
    model: Option<&str>,
    metadata: Option<&str>,
) -> Option<&'static str> {
    let Some(csr) = item.cert.csr_sha256.as_deref() else {
        return Some("generate_key");
    };
    if csr_sha256 != Some(csr) {
        return Some("csr");
    }
    if item.model.as_deref() != model {
        return Some("model");
    }
    if !item.client_id_generated && item.client_id != client_id {
        return Some("client_id");
    }
    if let Some(given) = item.metadata.as_deref() {
        let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).ok();
        if metadata.is_none_or(|stored| parse(stored) != parse(given)) {
            return Some("metadata");
        }
    }
    None
}

/// Applies the registration rules to every item, in order, given what is stored.
/// `AllOrNothing` stops at the first conflict.
fn classify(
    items: &[NewDevice],
    serials: &HashMap<String, KnownSerial>,
    client_ids: &std::collections::HashSet<String>,
    keys: &HashMap<[u8; 32], KnownKey>,
    mode: RegMode,
) -> Result<Vec<Plan>, StoreError> {
    let mut plans = Vec::with_capacity(items.len());
    // Serial (key) -> index of the item of this call that creates it; ClientIDs taken by it.
    let mut new_serials: HashMap<&str, usize> = HashMap::new();
    let mut new_keys: HashMap<[u8; 32], usize> = HashMap::new();
    let mut new_client_ids: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for (index, item) in items.iter().enumerate() {
        let plan = if let Some(known) = serials.get(&item.hardware_serial) {
            match replay_differs(
                item,
                known.csr_sha256.as_deref(),
                &known.client_id,
                known.model.as_deref(),
                known.metadata.as_deref(),
            ) {
                None => Plan::Existing(ExistingRef::Stored(known.device_id)),
                Some(differs) => Plan::Conflict(RegConflict::SerialTaken {
                    holder: known.client_id.clone(),
                    differs,
                }),
            }
        } else if let Some(&first) = new_serials.get(item.hardware_serial.as_str()) {
            let f = &items[first];
            match replay_differs(
                item,
                f.cert.csr_sha256.as_deref(),
                &f.client_id,
                f.model.as_deref(),
                f.metadata.as_deref(),
            ) {
                None => Plan::Existing(ExistingRef::InBatch(first)),
                Some(differs) => Plan::Conflict(RegConflict::SerialTaken {
                    holder: f.client_id.clone(),
                    differs,
                }),
            }
        } else if client_ids.contains(&item.client_id)
            || new_client_ids.contains(item.client_id.as_str())
        {
            Plan::Conflict(RegConflict::ClientIdTaken)
        } else if let Some(known) = keys.get(&item.cert.spki_sha256) {
            Plan::Conflict(if known.compromised {
                RegConflict::KeyCompromised
            } else {
                RegConflict::KeyTaken {
                    holder: known.holder.clone(),
                }
            })
        } else if let Some(&first) = new_keys.get(&item.cert.spki_sha256) {
            Plan::Conflict(RegConflict::KeyTaken {
                holder: items[first].client_id.clone(),
            })
        } else {
            new_serials.insert(&item.hardware_serial, index);
            new_keys.insert(item.cert.spki_sha256, index);
            new_client_ids.insert(&item.client_id);
            Plan::Create
        };
        if let (Plan::Conflict(conflict), RegMode::AllOrNothing) = (&plan, mode) {
            return Err(StoreError::BatchConflict {
                index,
                conflict: conflict.clone(),
            });
        }
        plans.push(plan);
    }
    Ok(plans)
}

/// Compile-time check: the futures the HTTP handlers await are `Send` (axum needs it).
#[allow(dead_code)]
fn _futures_are_send(s: &Store, a: &Actor) {
    fn send<T: Send>(_: T) {}
    send(s.suspend_device("x", 0, a, None));
    send(s.revoke_device("x", RevocationReason::KeyCompromise, 0, a));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An item whose key is its own unless `key` names one.
    fn item_with_key(serial: &str, cid: &str, csr: Option<&str>, key: &str) -> NewDevice {
        NewDevice {
            client_id: cid.into(),
            client_id_generated: false,
            hardware_serial: serial.into(),
            model: None,
            metadata: None,
            created_at: 0,
            cert: NewCert {
                serial: format!("s-{serial}-{cid}"),
                fingerprint: format!("f-{serial}-{cid}"),
                der: vec![],
                not_before: 0,
                not_after: 0,
                csr_sha256: csr.map(str::to_string),
                spki_sha256: devid_core::csr::spki_sha256(key.as_bytes()),
                profile: "idevid".into(),
            },
        }
    }

    fn item(serial: &str, cid: &str, csr: Option<&str>) -> NewDevice {
        item_with_key(serial, cid, csr, &format!("key-{serial}-{cid}"))
    }

    fn taken(holder: &str, differs: &'static str) -> Plan {
        Plan::Conflict(RegConflict::SerialTaken {
            holder: holder.into(),
            differs,
        })
    }

    #[test]
    fn classify_applies_the_rules_in_order() {
        let mut stored = HashMap::new();
        stored.insert(
            "S1".to_string(),
            KnownSerial {
                device_id: 7,
                client_id: "C7".into(),
                model: None,
                metadata: Some(r#"{"a":1,"b":2}"#.into()),
                csr_sha256: Some("a".into()),
            },
        );
        let client_ids: std::collections::HashSet<String> =
            ["C1".to_string(), "C7".to_string()].into();
        let mut keys = HashMap::new();
        keys.insert(
            devid_core::csr::spki_sha256(b"K7"),
            KnownKey {
                holder: "C7".into(),
                compromised: false,
            },
        );
        keys.insert(
            devid_core::csr::spki_sha256(b"KX"),
            KnownKey {
                holder: "C8".into(),
                compromised: true,
            },
        );
        let mut generated = item("S1", "X", Some("a"));
        generated.client_id_generated = true;
        let mut other_model = item("S1", "C7", Some("a"));
        other_model.model = Some("m".into());
        let mut same_metadata = item("S1", "C7", Some("a"));
        same_metadata.metadata = Some(r#"{"b":2,"a":1}"#.into());
        let mut other_metadata = item("S1", "C7", Some("a"));
        other_metadata.metadata = Some(r#"{"a":2}"#.into());
        let items = vec![
            generated,                                   // 0: replay, ClientID generated
            item("S1", "X", Some("a")),                  // 1: names another ClientID
            item("S1", "X", Some("b")),                  // 2: other CSR
            item("S2", "C1", Some("c")),                 // 3: ClientID taken
            item("S3", "C3", None),                      // 4: created
            item("S3", "C4", None),                      // 5: same serial, generated key
            item("S4", "C3", Some("d")),                 // 6: ClientID taken by item 4
            item("S5", "C5", Some("e")),                 // 7: created
            item("S5", "C5", Some("e")),                 // 8: replay of item 7
            other_model,                                 // 9: another model
            same_metadata,                               // 10: the same metadata
            other_metadata,                              // 11: other metadata
            item_with_key("S6", "C6", Some("f"), "K7"),  // 12: key of a stored device
            item_with_key("S7", "C9", Some("g"), "KX"),  // 13: compromised key
            item_with_key("S8", "C10", Some("h"), "K8"), // 14: created
            item_with_key("S9", "C11", Some("i"), "K8"), // 15: key of item 14
        ];
        let plans = classify(&items, &stored, &client_ids, &keys, RegMode::Independent)
            .expect("independent");
        assert_eq!(
            plans,
            vec![
                Plan::Existing(ExistingRef::Stored(7)),
                taken("C7", "client_id"),
                taken("C7", "csr"),
                Plan::Conflict(RegConflict::ClientIdTaken),
                Plan::Create,
                taken("C3", "generate_key"),
                Plan::Conflict(RegConflict::ClientIdTaken),
                Plan::Create,
                Plan::Existing(ExistingRef::InBatch(7)),
                taken("C7", "model"),
                Plan::Existing(ExistingRef::Stored(7)),
                taken("C7", "metadata"),
                Plan::Conflict(RegConflict::KeyTaken {
                    holder: "C7".into()
                }),
                Plan::Conflict(RegConflict::KeyCompromised),
                Plan::Create,
                Plan::Conflict(RegConflict::KeyTaken {
                    holder: "C10".into()
                }),
            ]
        );
        match classify(&items, &stored, &client_ids, &keys, RegMode::AllOrNothing) {
            Err(StoreError::BatchConflict {
                index: 1,
                conflict: RegConflict::SerialTaken { .. },
            }) => {}
            other => panic!("expected BatchConflict at 1, got {other:?}"),
        }
    }

    #[test]
    fn placeholders_numbered_and_anonymous() {
        assert_eq!(placeholders(true, 3, 4), "$4,$5,$6");
        assert_eq!(placeholders(false, 3, 4), "?,?,?");
        assert_eq!(values_rows(true, 2, 2), "($1,$2),($3,$4)");
        assert_eq!(values_rows(false, 2, 2), "(?,?),(?,?)");
    }
}
