//! New devices. Each backend writes them with one statement of its own ([`NEW_DEVICE`] is its
//! input): on SQLite an INSERT into the `register_new` view, whose INSTEAD OF trigger writes
//! device, certificate, key binding and audit rows; on PostgreSQL data-modifying CTEs. That
//! statement is the only way a device is created, whether every item is new (the first try, in
//! a transaction of its own) or some are replays or conflicts (inside the classifying
//! transaction, for the items `domain::registration::classify` says to create).

use std::collections::{HashMap, HashSet};

use devid_core::api::AppEventKind;
use sqlx::FromRow;

use super::app_events::{append_app_events, NewAppEvent};
use super::devices::assemble;
use super::sql::{Arg, Conn, Stmt, Tx};
use super::{is_retryable, postgres, sqlite, Actor, NewDevice, RegConflict, RegMode, RegOutcome};
use super::{Store, StoreError};
use crate::domain::registration::{classify, KnownKey, KnownSerial, Plan};

/// How often `register` retries a transaction that lost a uniqueness race (PostgreSQL, several
/// processes) before giving up with the database error.
const REGISTER_ATTEMPTS: usize = 6;

/// One new device as the registration statement takes it.
#[derive(Debug, Clone, Copy)]
pub(super) struct NewRow<'a> {
    pub device: &'a NewDevice,
    /// Who registers it and when, for its audit row.
    pub actor: &'a Actor,
    pub at: i64,
}

/// How one input column of the registration statement is read from a [`NewRow`]. A device's
/// certificate columns are NULL for a sensor, and a sensor's key column NULL for a device.
#[derive(Clone, Copy)]
pub(super) enum Get {
    Text(for<'a> fn(&NewRow<'a>) -> Option<&'a str>),
    Int(for<'a> fn(&NewRow<'a>) -> Option<i64>),
    Bool(for<'a> fn(&NewRow<'a>) -> bool),
    Bytes(for<'a> fn(&NewRow<'a>) -> Option<&'a [u8]>),
}

impl Get {
    pub fn arg<'a>(self, r: &NewRow<'a>) -> Arg<'a> {
        match self {
            Get::Text(f) => Arg::Text(f(r)),
            Get::Int(f) => Arg::Int(f(r)),
            Get::Bool(f) => Arg::Bool(f(r)),
            Get::Bytes(f) => Arg::Bytes(f(r)),
        }
    }
}

/// The input of the registration statement, one row per new device: the columns of the
/// `register_new` view (SQLite, migration 0005; its trigger says where each goes) and of the
/// UNNEST in PostgreSQL's statement (`postgres::insert_new`, which says the same), in this
/// order. Both statements take their column names, count and values from here. A new device
/// column written at registration is: a field of `NewDevice`, an entry here, the column in a
/// migration per backend (on SQLite with the view and trigger made again), its place in the
/// CTE of `postgres::INSERT_NEW`, and, to read it back, a field of `DeviceRow`.
pub(super) const NEW_DEVICE: &[(&str, Get)] = &[
    (
        "client_id",
        Get::Text(|r| Some(r.device.client_id.as_str())),
    ),
    (
        "hardware_serial",
        Get::Text(|r| Some(r.device.hardware_serial.as_str())),
    ),
    (
        "client_id_generated",
        Get::Bool(|r| r.device.client_id_generated),
    ),
    ("model", Get::Text(|r| r.device.model.as_deref())),
    ("metadata", Get::Text(|r| r.device.metadata.as_deref())),
    ("created_at", Get::Int(|r| Some(r.device.created_at))),
    ("kind", Get::Text(|r| Some(r.device.kind().as_str()))),
    (
        "serial",
        Get::Text(|r| r.device.cert().map(|c| c.serial.as_str())),
    ),
    (
        "fingerprint",
        Get::Text(|r| r.device.cert().map(|c| c.fingerprint.as_str())),
    ),
    (
        "der",
        Get::Bytes(|r| r.device.cert().map(|c| c.der.as_slice())),
    ),
    (
        "not_before",
        Get::Int(|r| r.device.cert().map(|c| c.not_before)),
    ),
    (
        "not_after",
        Get::Int(|r| r.device.cert().map(|c| c.not_after)),
    ),
    (
        "profile",
        Get::Text(|r| r.device.cert().map(|c| c.profile.as_str())),
    ),
    (
        "csr_sha256",
        Get::Text(|r| r.device.cert().and_then(|c| c.csr_sha256.as_deref())),
    ),
    (
        "spki_sha256",
        Get::Bytes(|r| r.device.cert().map(|c| c.spki_sha256.as_slice())),
    ),
    ("sealed_key", Get::Bytes(|r| r.device.sealed_key())),
    ("at", Get::Int(|r| Some(r.at))),
    ("actor_id", Get::Text(|r| Some(r.actor.id.as_str()))),
    ("actor_name", Get::Text(|r| Some(r.actor.name.as_str()))),
];

/// A stored device whose hardware serial or ClientID a registration call names.
#[derive(Debug, FromRow)]
pub(super) struct KnownSerialRow {
    id: i64,
    hardware_serial: String,
    client_id: String,
    model: Option<String>,
    metadata: Option<String>,
    #[sqlx(try_from = "super::stored::Stored")]
    kind: devid_core::api::DeviceKind,
    /// Of the device's current certificate.
    csr_sha256: Option<String>,
}

/// A bound key a registration call names, and the device it is bound to.
#[derive(Debug, FromRow)]
pub(super) struct KnownKeyRow {
    #[sqlx(try_from = "Vec<u8>")]
    spki_sha256: [u8; 32],
    compromised_at: Option<i64>,
    client_id: String,
}

impl Store {
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
    /// audit row (`domain::registration::classify`).
    /// `AllOrNothing`: the first conflict stores nothing and returns `BatchConflict`.
    /// A uniqueness race (or deadlock) with another process is retried with a fresh
    /// classification, so callers see `Existing`/`SerialTaken` rather than a database error.
    /// New devices are inserted in hardware_serial order on PostgreSQL, so that concurrent
    /// batches take their unique-index locks in the same order.
    pub async fn register(
        &self,
        items: &[NewDevice],
        mode: RegMode,
        actor: &Actor,
        at: i64,
    ) -> Result<Vec<Result<RegOutcome, RegConflict>>, StoreError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        // First try storing every item as new in one statement (the common case on a
        // manufacturing line). If any of them is a replay or a conflict, that statement wrote
        // nothing, and the classifying transaction below sorts them out.
        let rows: Vec<NewRow<'_>> = items
            .iter()
            .map(|device| NewRow { device, actor, at })
            .collect();
        let first = self.insert_new_alone(&rows).await;
        match first {
            Ok(()) => return Ok(items.iter().map(|_| Ok(RegOutcome::Created)).collect()),
            Err(StoreError::Database(e)) if is_retryable(&e) => {
                tracing::debug!("not every registration is new; classifying them");
            }
            Err(e) => return Err(e),
        }
        let mut attempt = 1;
        loop {
            match self.register_once(items, mode, actor, at).await {
                Err(StoreError::Database(e)) if is_retryable(&e) && attempt < REGISTER_ATTEMPTS => {
                    attempt += 1;
                    tracing::debug!(attempt, "registration lost a uniqueness race; retrying");
                }
                other => return other,
            }
        }
    }

    /// Stores `rows` as new devices in a transaction of their own, with their events: one
    /// statement (SQLite: one per chunk of its bind limit), then the one statement that
    /// appends every row's events.
    async fn insert_new_alone(&self, rows: &[NewRow<'_>]) -> Result<(), StoreError> {
        let mut tx = self.pools.begin_write().await?;
        insert_new(Conn::from(&mut tx), rows).await?;
        let appended = append_app_events(&mut tx, &registration_events(rows)).await?;
        tx.commit().await?;
        self.app_events_committed(appended);
        Ok(())
    }

    /// One attempt of the classifying path: look up what the items name, classify, create the
    /// new ones with the backend's one statement, load the replayed ones.
    async fn register_once(
        &self,
        items: &[NewDevice],
        mode: RegMode,
        actor: &Actor,
        at: i64,
    ) -> Result<Vec<Result<RegOutcome, RegConflict>>, StoreError> {
        let mut tx = self.pools.begin_write().await?;
        // Keys first: on PostgreSQL each statement sees the commits made before it started, and
        // a device's key is committed with the device, so a key seen here has its device seen by
        // the look-up after it (a replay racing its own first registration in another process
        // is then a replay, not a key conflict). A key committed in between is missed, and the
        // insert's unique violation sends the call round again.
        let keys: HashMap<[u8; 32], KnownKey> = lookup_keys(&mut tx, items)
            .await?
            .into_iter()
            .map(|k| {
                let known = KnownKey {
                    holder: k.client_id,
                    compromised: k.compromised_at.is_some(),
                };
                (k.spki_sha256, known)
            })
            .collect();
        let mut client_ids = HashSet::new();
        let mut serials = HashMap::new();
        for s in lookup_serials(&mut tx, items).await? {
            client_ids.insert(s.client_id.clone());
            let known = KnownSerial {
                device_id: s.id,
                client_id: s.client_id,
                model: s.model,
                metadata: s.metadata,
                kind: s.kind,
                csr_sha256: s.csr_sha256,
            };
            serials.insert(s.hardware_serial, known);
        }
        // An AllOrNothing conflict returns here, before anything was written; dropping `tx`
        // rolls back.
        let plans = classify(items, &serials, &client_ids, &keys, mode)
            .map_err(|(index, conflict)| StoreError::BatchConflict { index, conflict })?;
        let mut created: Vec<NewRow<'_>> = items
            .iter()
            .zip(&plans)
            .filter(|(_, p)| **p == Plan::Create)
            .map(|(device, _)| NewRow { device, actor, at })
            .collect();
        created.sort_unstable_by(|a, b| a.device.hardware_serial.cmp(&b.device.hardware_serial));
        let mut appended = 0;
        if !created.is_empty() {
            insert_new(Conn::from(&mut tx), &created).await?;
            appended = append_app_events(&mut tx, &registration_events(&created)).await?;
        }
        // A replay's device is the one holding its hardware serial, stored before this call or
        // created just now by an earlier item.
        let replayed: Vec<&str> = items
            .iter()
            .zip(&plans)
            .filter(|(_, p)| matches!(p, Plan::Existing(_)))
            .map(|(it, _)| it.hardware_serial.as_str())
            .collect();
        let loaded: HashMap<String, _> = if replayed.is_empty() {
            HashMap::new()
        } else {
            let rows = match Conn::from(&mut tx) {
                Conn::Sqlite(c) => sqlite::load_devices_by_serial(c, &replayed).await?,
                Conn::Postgres(c) => postgres::load_devices_by_serial(c, &replayed).await?,
            };
            assemble(rows)
                .into_iter()
                .map(|d| (d.device.hardware_serial.clone(), d))
                .collect()
        };
        tx.commit().await?;
        self.app_events_committed(appended);
        items
            .iter()
            .zip(plans)
            .map(|(item, p)| match p {
                Plan::Create => Ok(Ok(RegOutcome::Created)),
                Plan::Conflict(c) => Ok(Err(c)),
                Plan::Existing(_) => {
                    let d = loaded
                        .get(&item.hardware_serial)
                        .cloned()
                        .ok_or(StoreError::NotFound)?;
                    Ok(Ok(RegOutcome::Existing(Box::new(d))))
                }
            })
            .collect()
    }

    /// Certificates stored before keys were tracked carry no `spki_sha256`: reads each one's
    /// key out of its DER (SQL cannot), stores the hash and binds the key to the device, oldest
    /// certificate first (a key two such devices share stays with the earlier one), marked
    /// compromised if the certificate or its device was revoked for keyCompromise. Runs when
    /// the store opens; with nothing to do it is one look-up in an empty partial index. Safe
    /// to run from several processes at once (every write is conditional or an upsert).
    /// Returns how many certificates it filled.
    pub(super) async fn backfill_keys(&self) -> Result<usize, StoreError> {
        #[derive(FromRow)]
        struct Unbound {
            id: i64,
            device_id: i64,
            der: Vec<u8>,
            reason: Option<String>,
            revoked_at: Option<i64>,
            d_reason: Option<String>,
            d_revoked_at: Option<i64>,
        }
        let mut done = 0;
        loop {
            let rows: Vec<Unbound> = Stmt::new(
                "SELECT c.id, c.device_id, c.der, c.reason, c.revoked_at, \
                 d.reason AS d_reason, d.revoked_at AS d_revoked_at \
                 FROM certificates c JOIN devices d ON d.id = c.device_id \
                 WHERE c.spki_sha256 IS NULL ORDER BY c.id LIMIT 500",
            )
            .fetch_all(&mut self.pools.read().await?)
            .await?;
            if rows.is_empty() {
                return Ok(done);
            }
            let mut tx = self.pools.begin_write().await?;
            for r in &rows {
                let compromised = |reason: &Option<String>, at: Option<i64>| match reason.as_deref()
                {
                    Some("keyCompromise") => at,
                    _ => None,
                };
                let compromised_at = compromised(&r.reason, r.revoked_at)
                    .or(compromised(&r.d_reason, r.d_revoked_at));
                // A DER that is not a certificate (only if edited by hand) is marked with an
                // empty hash, so that it is not read again; no key is bound for it.
                let hash = devid_core::csr::certificate_spki_sha256(&r.der);
                if hash.is_none() {
                    tracing::warn!(
                        certificate = r.id,
                        "stored certificate does not parse; its key is not bound"
                    );
                }
                let stored: Vec<u8> = hash.map(|h| h.to_vec()).unwrap_or_default();
                Stmt::new(
                    "UPDATE certificates SET spki_sha256 = $1 WHERE id = $2 AND spki_sha256 IS NULL",
                )
                .bind(&stored)
                .bind(r.id)
                .execute(&mut tx)
                .await?;
                if hash.is_some() {
                    Stmt::new(
                        "INSERT INTO device_keys (spki_sha256, device_id, compromised_at) \
                         VALUES ($1, $2, $3) ON CONFLICT (spki_sha256) DO UPDATE SET \
                         compromised_at = COALESCE(device_keys.compromised_at, excluded.compromised_at)",
                    )
                    .bind(&stored)
                    .bind(r.device_id)
                    .bind(compromised_at)
                    .execute(&mut tx)
                    .await?;
                }
            }
            tx.commit().await?;
            done += rows.len();
        }
    }
}

/// The backend's registration statement: stores `rows` as new devices. A uniqueness violation
/// aborts it with nothing of it written.
/// The events of new devices, in the rows' order: `registered` for each, and for a device
/// (not a sensor) `certificate_issued` of its IDevID.
fn registration_events(rows: &[NewRow<'_>]) -> Vec<NewAppEvent> {
    let mut events = Vec::with_capacity(rows.len() * 2);
    for r in rows {
        let d = r.device;
        events.push(NewAppEvent {
            kind: AppEventKind::Registered,
            at: r.at,
            client_id: Some(d.client_id.to_string()),
            model: d.model.clone(),
            data: serde_json::json!({
                "hardware_serial": d.hardware_serial,
                "kind": d.kind().as_str(),
            }),
        });
        if let Some(c) = d.cert() {
            events.push(NewAppEvent {
                kind: AppEventKind::CertificateIssued,
                at: r.at,
                client_id: Some(d.client_id.to_string()),
                model: d.model.clone(),
                data: serde_json::json!({
                    "serial": c.serial,
                    "not_after": crate::timefmt::rfc3339(c.not_after),
                    "kind": "idevid",
                }),
            });
        }
    }
    events
}

async fn insert_new(conn: Conn<'_>, rows: &[NewRow<'_>]) -> Result<(), sqlx::Error> {
    match conn {
        Conn::Sqlite(c) => sqlite::insert_new(c, rows).await,
        Conn::Postgres(c) => postgres::insert_new(c, rows).await,
    }
}

/// The keys `items` name that are bound already (see the backends' `lookup_keys`).
async fn lookup_keys(tx: &mut Tx, items: &[NewDevice]) -> Result<Vec<KnownKeyRow>, sqlx::Error> {
    match Conn::from(tx) {
        Conn::Sqlite(c) => sqlite::lookup_keys(c, items).await,
        Conn::Postgres(c) => postgres::lookup_keys(c, items).await,
    }
}

/// The stored devices holding a hardware serial or ClientID that `items` name.
async fn lookup_serials(
    tx: &mut Tx,
    items: &[NewDevice],
) -> Result<Vec<KnownSerialRow>, sqlx::Error> {
    match Conn::from(tx) {
        Conn::Sqlite(c) => sqlite::lookup_serials(c, items).await,
        Conn::Postgres(c) => postgres::lookup_serials(c, items).await,
    }
}
