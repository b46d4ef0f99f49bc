//! SQLite: WAL, one writer connection (SQLite allows one writer at a time anyway; one
//! connection avoids SQLITE_BUSY between our own connections) and a small read pool; and the
//! statements of registration, as multi-row VALUES and `IN` lists of anonymous `?`.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

use super::devices::Joined;
use super::registration::{KnownKeyRow, KnownSerialRow, NewRow, NEW_DEVICE};
use super::sql::{Arg, Conn, Dialect, Pools, Record, Stmt};
use super::{NewDevice, StoreError};

const DIALECT: Dialect = Dialect::Sqlite;

pub(super) async fn connect(path: &Path, durable: bool) -> Result<Pools, StoreError> {
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(if durable {
            SqliteSynchronous::Full
        } else {
            SqliteSynchronous::Normal
        })
        // Another process on the same file (a second server, an admin command) waits for the
        // write lock this long. SQLite's busy handler retries with sleeps and does not queue
        // waiters, so on a loaded machine a writer can lose the race several times in a row:
        // 5 s was seen to run out with two processes revoking at once.
        .busy_timeout(Duration::from_secs(30))
        .foreign_keys(true)
        // Statement journals of multi-row inserts stay in memory instead of temp files.
        .pragma("temp_store", "memory")
        // Checkpoints are mostly the checkpointer's job (`spawn_checkpointer`). A connection
        // still checkpoints at commit once the WAL passes 64k pages (256 MiB): under a steady
        // stream of commits the background checkpoint is never quite complete when the next
        // write begins, and only a complete one lets that write start the WAL over. That
        // commit's checkpoint copies what the checkpointer has not yet (the last moments'
        // commits). At 16k pages (64 MiB) it ran every other batch of 10,000 and registration at
        // 1,000,000 devices fell to 0.77 of the empty rate (measured). So the WAL file may stay
        // at up to 256 MiB, reused from its start each time the WAL starts over. SQLite's
        // default 2 MiB page cache is kept: 64 MiB for the writer cost more CPU per
        // registration at 30k devices, and gave no better rate at 1,000,000 (measured).
        .pragma("wal_autocheckpoint", "65536");
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
    spawn_checkpointer(read.clone());
    Ok(Pools::Sqlite { write, read })
}

/// How often the checkpointer looks at the WAL.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Copies committed WAL pages into the database file from a read connection, so that the
/// writer does not. With the writer's automatic checkpoint, every commit that took the WAL past
/// its threshold copied the WAL's pages and synced the file before the next commit could start.
/// A registration writes a leaf page of the key-hash index chosen at random, so in a large
/// fleet nearly every page of that index is copied at each checkpoint: measured at 1,000,000
/// devices, that made the writer slower as the fleet grew. A passive checkpoint takes no lock
/// that stops the writer, which goes on committing to the WAL meanwhile. Stops when the pools
/// are closed.
fn spawn_checkpointer(read: SqlitePool) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !read.is_closed() {
            tick.tick().await;
            let done = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&read)
                .await;
            if let Err(e) = done {
                if !read.is_closed() {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
            }
        }
    });
}

pub(super) async fn migrate(write: &SqlitePool) -> Result<(), StoreError> {
    sqlx::migrate!("../migrations/sqlite").run(write).await?;
    Ok(())
}

/// How many new devices one registration statement takes.
pub(super) fn rows_per_statement() -> usize {
    DIALECT.max_binds() / NEW_DEVICE.len()
}

/// Stores `rows` as new devices through the `register_new` view (migration 0005): its
/// INSTEAD OF trigger writes each row's device, certificate and key binding (a device) or
/// sealed key (a sensor), and `device.register` audit row. A uniqueness violation aborts the statement with nothing of it written.
pub(super) async fn insert_new(
    conn: &mut SqliteConnection,
    rows: &[NewRow<'_>],
) -> Result<(), sqlx::Error> {
    let names = NEW_DEVICE
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ");
    for chunk in rows.chunks(rows_per_statement()) {
        let values: Vec<[Arg<'_>; NEW_DEVICE.len()]> = chunk
            .iter()
            .map(|r| std::array::from_fn(|c| NEW_DEVICE[c].1.arg(r)))
            .collect();
        Stmt::new(format!("INSERT INTO register_new ({names}) VALUES "))
            .values(DIALECT, &values)
            .execute(Conn::Sqlite(&mut *conn))
            .await?;
    }
    Ok(())
}

/// The devices the keys named by `items` are bound to: one statement per chunk.
pub(super) async fn lookup_keys(
    conn: &mut SqliteConnection,
    items: &[NewDevice],
) -> Result<Vec<KnownKeyRow>, sqlx::Error> {
    let keys: Vec<&[u8]> = items
        .iter()
        .filter_map(|i| i.cert().map(|c| c.spki_sha256.as_slice()))
        .collect();
    fetch_chunked(conn, &keys, DIALECT.max_binds(), |chunk| {
        let keys: Vec<Arg<'_>> = chunk.iter().map(|k| Arg::from(*k)).collect();
        Stmt::new(
            "SELECT k.spki_sha256, k.compromised_at, d.client_id FROM device_keys k \
             JOIN devices d ON d.id = k.device_id WHERE k.spki_sha256 IN (",
        )
        .list(DIALECT, &keys)
        .push(")")
    })
    .await
}

/// What is stored for the serials and ClientIDs named by `items`: one statement per chunk.
pub(super) async fn lookup_serials(
    conn: &mut SqliteConnection,
    items: &[NewDevice],
) -> Result<Vec<KnownSerialRow>, sqlx::Error> {
    fetch_chunked(conn, items, DIALECT.max_binds() / 2, |chunk| {
        let serials: Vec<Arg<'_>> = chunk
            .iter()
            .map(|it| (&it.hardware_serial).into())
            .collect();
        let client_ids: Vec<Arg<'_>> = chunk.iter().map(|it| (&it.client_id).into()).collect();
        Stmt::new(
            "SELECT d.id, d.hardware_serial, d.client_id, d.model, d.metadata, d.kind, \
             c.csr_sha256 \
             FROM devices d LEFT JOIN certificates c ON c.serial = d.current_serial \
             WHERE d.hardware_serial IN (",
        )
        .list(DIALECT, &serials)
        .push(") OR d.client_id IN (")
        .list(DIALECT, &client_ids)
        .push(")")
    })
    .await
}

/// Devices (with certificates) by hardware serial: one statement per chunk.
pub(super) async fn load_devices_by_serial(
    conn: &mut SqliteConnection,
    serials: &[&str],
) -> Result<Vec<Joined>, sqlx::Error> {
    fetch_chunked(conn, serials, DIALECT.max_binds(), |chunk| {
        let args: Vec<Arg<'_>> = chunk.iter().map(|s| Arg::from(*s)).collect();
        Stmt::new(Joined::select())
            .push(" WHERE d.hardware_serial IN (")
            .list(DIALECT, &args)
            .push(") ORDER BY d.id, c.id DESC")
    })
    .await
}

/// Runs the statement `stmt` makes for each chunk of `per` items (what the bind limit allows)
/// and gathers the rows.
async fn fetch_chunked<'a, I, T: Record>(
    conn: &mut SqliteConnection,
    items: &'a [I],
    per: usize,
    stmt: impl Fn(&'a [I]) -> Stmt<'a>,
) -> Result<Vec<T>, sqlx::Error> {
    let mut out = Vec::new();
    for chunk in items.chunks(per) {
        out.extend(stmt(chunk).fetch_all::<T>(Conn::Sqlite(&mut *conn)).await?);
    }
    Ok(out)
}
