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
            .foreign_keys(true);
        // The writer connects first so that the file exists and is in WAL mode before readers.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(opts.clone())
            .await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
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
}

include!("common.rs");
