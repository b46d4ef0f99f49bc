//! SQLite backend: WAL, one writer connection (SQLite allows one writer at a time anyway; one
//! connection avoids SQLITE_BUSY between our own connections) and a small read pool.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::*;

type Db = sqlx::Sqlite;

/// SQLite allows at most 32,766 host parameters per statement.
const MAX_BINDS: usize = 32_000;
/// Generated lists use anonymous `?` (see `placeholders`).
const NUMBERED_PARAMS: bool = false;
/// The single writer connection already serializes every write transaction.
const FOR_UPDATE: &str = "";
/// Statements with more rows than this are not kept in sqlx's per-connection statement cache
/// (each row count is a distinct statement; big ones would only evict the hot small ones).
const CACHE_MAX_ROWS: usize = 64;

pub(super) struct Backend {
    write: SqlitePool,
    read: SqlitePool,
}

impl Backend {
    pub(super) async fn connect(path: &Path, durable: bool) -> Result<Backend, StoreError> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if durable {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            })
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true)
            // Statement journals of multi-row inserts stay in memory instead of temp files.
            .pragma("temp_store", "memory")
            // Checkpoint every 4,000 WAL pages (16 MiB) instead of 1,000: a page written by
            // many commits (the tail of a sequential index) is copied to the database once per
            // checkpoint, so fewer checkpoints copy fewer pages (-17% commit time measured on
            // a standalone copy of the schema; no worse end to end). SQLite's default 2 MiB page
            // cache is kept: 64 MiB cost more CPU per registration at 30k devices (measured),
            // mostly in scanning the larger cache at each commit.
            .pragma("wal_autocheckpoint", "4000");
        // The writer connects first so that the file exists and is in WAL mode before readers.
        // An in-process SQLite connection cannot go stale: no ping round trip before each use.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(opts.clone())
            .await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(opts)
            .await?;
        Ok(Backend { write, read })
    }

    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("../migrations/sqlite")
            .run(&self.write)
            .await?;
        Ok(())
    }

    pub(super) async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }

    /// `BEGIN IMMEDIATE` takes the write lock up front, so another process sharing the file
    /// waits (busy_timeout) instead of failing when a read transaction tries to upgrade.
    async fn begin_write(&self) -> Result<Tx, StoreError> {
        Ok(self.write.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Feed appends are serialized by the write lock.
    async fn lock_feed(_tx: &mut Tx) -> Result<(), StoreError> {
        Ok(())
    }

    /// No cross-process notification on SQLite: the server broadcasts in-process.
    async fn notify_feed(_tx: &mut Tx, _seq: i64) -> Result<(), StoreError> {
        Ok(())
    }

    /// Token bootstrap is serialized by the write lock.
    async fn lock_bootstrap(_tx: &mut Tx) -> Result<(), StoreError> {
        Ok(())
    }

    /// Stores `items` as new devices through the `register_new` view (migrations 0002, 0004): one
    /// statement, hence one round trip to sqlx's worker thread and one implicit transaction,
    /// when they fit in one statement; otherwise one statement per chunk in a transaction.
    /// A uniqueness violation comes back as the database error and nothing is written.
    pub(super) async fn register_new(
        &self,
        items: &[NewDevice],
        actor: &Actor,
        at: i64,
    ) -> Result<(), StoreError> {
        let rows = MAX_BINDS / REGISTER_NEW_COLS;
        if items.len() <= rows {
            let mut conn = self.write.acquire().await?;
            return insert_register_new(&mut conn, items, actor, at).await;
        }
        let mut tx = self.begin_write().await?;
        for chunk in items.chunks(rows) {
            insert_register_new(&mut tx, chunk, actor, at).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Columns of the `register_new` view, bound per row by `insert_register_new`.
const REGISTER_NEW_COLS: usize = 17;

async fn insert_register_new(
    conn: &mut DbConn,
    items: &[NewDevice],
    actor: &Actor,
    at: i64,
) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO register_new (client_id, hardware_serial, client_id_generated, model, \
         metadata, created_at, serial, fingerprint, der, not_before, not_after, profile, \
         csr_sha256, spki_sha256, at, actor_id, actor_name) VALUES {}",
        values_rows(NUMBERED_PARAMS, items.len(), REGISTER_NEW_COLS)
    );
    let mut q = sqlx::query(&sql).persistent(items.len() <= CACHE_MAX_ROWS);
    for d in items {
        q = q
            .bind(&d.client_id)
            .bind(&d.hardware_serial)
            .bind(d.client_id_generated)
            .bind(&d.model)
            .bind(&d.metadata)
            .bind(d.created_at)
            .bind(&d.cert.serial)
            .bind(&d.cert.fingerprint)
            .bind(&d.cert.der)
            .bind(d.cert.not_before)
            .bind(d.cert.not_after)
            .bind(&d.cert.profile)
            .bind(&d.cert.csr_sha256)
            .bind(d.cert.spki_sha256.as_slice())
            .bind(at)
            .bind(&actor.id)
            .bind(&actor.name);
    }
    q.execute(&mut *conn).await?;
    Ok(())
}

// ---- bulk statements: multi-row VALUES and IN lists, chunked by MAX_BINDS ----

/// Devices (with certificates) by internal id, keyed by id.
async fn load_devices_by_id(
    conn: &mut DbConn,
    ids: &[i64],
) -> Result<HashMap<i64, DeviceWithCerts>, StoreError> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let mut out = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(MAX_BINDS) {
        let sql = format!(
            "SELECT {DEVICE_COLS}, {CERT_COLS} FROM devices d \
             LEFT JOIN certificates c ON c.device_id = d.id \
             WHERE d.id IN ({}) ORDER BY d.id, c.id DESC",
            placeholders(NUMBERED_PARAMS, chunk.len(), 1)
        );
        let mut q = sqlx::query(&sql).persistent(chunk.len() <= CACHE_MAX_ROWS);
        for id in chunk {
            q = q.bind(*id);
        }
        let rows = q.fetch_all(&mut *conn).await?;
        for d in assemble(&rows)? {
            out.insert(d.device.id, d);
        }
    }
    Ok(out)
}

/// What is stored for the serials and ClientIDs named by `items`: one statement per chunk.
async fn lookup_existing(
    tx: &mut Tx,
    items: &[NewDevice],
) -> Result<
    (
        HashMap<String, KnownSerial>,
        std::collections::HashSet<String>,
    ),
    StoreError,
> {
    let mut serials = HashMap::new();
    let mut client_ids = std::collections::HashSet::new();
    for chunk in items.chunks(MAX_BINDS / 2) {
        let n = chunk.len();
        let sql = format!(
            "SELECT d.id, d.hardware_serial, d.client_id, d.model, d.metadata, c.csr_sha256 \
             FROM devices d \
             LEFT JOIN certificates c ON c.serial = d.current_serial \
             WHERE d.hardware_serial IN ({}) OR d.client_id IN ({})",
            placeholders(NUMBERED_PARAMS, n, 1),
            placeholders(NUMBERED_PARAMS, n, n + 1)
        );
        let mut q = sqlx::query(&sql).persistent(n <= CACHE_MAX_ROWS);
        for it in chunk {
            q = q.bind(&it.hardware_serial);
        }
        for it in chunk {
            q = q.bind(&it.client_id);
        }
        for r in q.fetch_all(&mut **tx).await? {
            let client_id: String = r.try_get("client_id")?;
            client_ids.insert(client_id.clone());
            serials.insert(
                r.try_get::<String, _>("hardware_serial")?,
                KnownSerial {
                    device_id: r.try_get("id")?,
                    client_id,
                    model: r.try_get("model")?,
                    metadata: r.try_get("metadata")?,
                    csr_sha256: r.try_get("csr_sha256")?,
                },
            );
        }
    }
    Ok((serials, client_ids))
}

/// The devices the keys named by `items` are bound to: one statement per chunk.
async fn lookup_keys(
    tx: &mut Tx,
    items: &[NewDevice],
) -> Result<HashMap<[u8; 32], KnownKey>, StoreError> {
    let mut keys = HashMap::new();
    for chunk in items.chunks(MAX_BINDS) {
        let sql = format!(
            "SELECT k.spki_sha256, k.compromised_at, d.client_id FROM device_keys k \
             JOIN devices d ON d.id = k.device_id WHERE k.spki_sha256 IN ({})",
            placeholders(NUMBERED_PARAMS, chunk.len(), 1)
        );
        let mut q = sqlx::query(&sql).persistent(chunk.len() <= CACHE_MAX_ROWS);
        for it in chunk {
            q = q.bind(it.cert.spki_sha256.as_slice());
        }
        for r in q.fetch_all(&mut **tx).await? {
            insert_known_key(&mut keys, &r)?;
        }
    }
    Ok(keys)
}

/// Binds each new device's key to it.
async fn insert_device_keys(
    tx: &mut Tx,
    devs: &[&NewDevice],
    ids: &HashMap<String, i64>,
) -> Result<(), StoreError> {
    const COLS: usize = 2;
    for chunk in devs.chunks(MAX_BINDS / COLS) {
        let sql = format!(
            "INSERT INTO device_keys (spki_sha256, device_id) VALUES {}",
            values_rows(NUMBERED_PARAMS, chunk.len(), COLS)
        );
        let mut q = sqlx::query(&sql).persistent(chunk.len() <= CACHE_MAX_ROWS);
        for d in chunk {
            let id = inserted_id(ids, &d.hardware_serial)?;
            q = q.bind(d.cert.spki_sha256.as_slice()).bind(id);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Inserts devices with multi-row VALUES; returns hardware_serial -> new id.
async fn insert_devices(
    tx: &mut Tx,
    devs: &[&NewDevice],
) -> Result<HashMap<String, i64>, StoreError> {
    const COLS: usize = 7;
    let mut ids = HashMap::with_capacity(devs.len());
    for chunk in devs.chunks(MAX_BINDS / COLS) {
        let sql = format!(
            "INSERT INTO devices (client_id, hardware_serial, client_id_generated, model, metadata, \
             current_serial, created_at) VALUES {} RETURNING id, hardware_serial",
            values_rows(NUMBERED_PARAMS, chunk.len(), COLS)
        );
        let mut q = sqlx::query(&sql).persistent(chunk.len() <= CACHE_MAX_ROWS);
        for d in chunk {
            q = q
                .bind(&d.client_id)
                .bind(&d.hardware_serial)
                .bind(d.client_id_generated)
                .bind(&d.model)
                .bind(&d.metadata)
                .bind(&d.cert.serial)
                .bind(d.created_at);
        }
        for r in q.fetch_all(&mut **tx).await? {
            ids.insert(
                r.try_get::<String, _>("hardware_serial")?,
                r.try_get::<i64, _>("id")?,
            );
        }
    }
    Ok(ids)
}

async fn insert_certificates(
    tx: &mut Tx,
    devs: &[&NewDevice],
    ids: &HashMap<String, i64>,
) -> Result<(), StoreError> {
    const COLS: usize = 10;
    for chunk in devs.chunks(MAX_BINDS / COLS) {
        let sql = format!(
            "INSERT INTO certificates (serial, device_id, fingerprint, der, not_before, not_after, \
             profile, csr_sha256, spki_sha256, created_at) VALUES {}",
            values_rows(NUMBERED_PARAMS, chunk.len(), COLS)
        );
        let mut q = sqlx::query(&sql).persistent(chunk.len() <= CACHE_MAX_ROWS);
        for d in chunk {
            let id = inserted_id(ids, &d.hardware_serial)?;
            q = q
                .bind(&d.cert.serial)
                .bind(id)
                .bind(&d.cert.fingerprint)
                .bind(&d.cert.der)
                .bind(d.cert.not_before)
                .bind(d.cert.not_after)
                .bind(&d.cert.profile)
                .bind(&d.cert.csr_sha256)
                .bind(d.cert.spki_sha256.as_slice())
                .bind(d.created_at);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// One `device.register` audit row per created device.
async fn insert_register_audit(
    tx: &mut Tx,
    devs: &[&NewDevice],
    actor: &Actor,
    at: i64,
) -> Result<(), StoreError> {
    const COLS: usize = 6;
    for chunk in devs.chunks(MAX_BINDS / COLS) {
        let sql = format!(
            "INSERT INTO audit (at, actor_id, actor_name, action, target, outcome) VALUES {}",
            values_rows(NUMBERED_PARAMS, chunk.len(), COLS)
        );
        let mut q = sqlx::query(&sql).persistent(chunk.len() <= CACHE_MAX_ROWS);
        for d in chunk {
            q = q
                .bind(at)
                .bind(&actor.id)
                .bind(&actor.name)
                .bind("device.register")
                .bind(&d.client_id)
                .bind("ok");
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

include!("common.rs");
