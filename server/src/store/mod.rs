//! Storage: one `Store` over SQLite (embedded default) or PostgreSQL (scale-out).
//!
//! The HTTP layer and the registration pipeline call only the methods of [`Store`]; the SQL
//! lives in this module and in `migrations/{sqlite,postgres}`. Times are i64 unix seconds (UTC).
//! Serials and fingerprints are lowercase hex. Every mutating method writes its audit record(s)
//! in the same transaction as the change, so an acknowledged change always has its audit entry
//! and vice versa. The rules live in `crate::domain`; the store persists what they decide.
//!
//! Layout, one concern a file, each an `impl Store` block over both backends:
//! - `types`: what the store takes and returns; rows are `#[derive(sqlx::FromRow)]`.
//! - `stored`: how states, reasons and lists are stored as text, and parsed when read.
//! - `sql`: the statements' door to the database: `Stmt` (SQL and arguments), the connections
//!   and transactions of either backend, and the `Dialect` value (placeholders, row locks,
//!   bind limits); advisory locks and NOTIFY, which only PostgreSQL needs.
//! - `registration`: new devices (the one write path per backend), the replay/conflict path.
//! - `sensors`: sensors' keys, their gateways, the KEK's check value and what brokers report
//!   of their readings.
//! - `bulk`: the lifecycle's plan applied to every device a filter selects, set-based.
//! - `app_events`: the events for applications (appended inside the changes' transactions).
//! - `fleet`: the fleet's health record from brokers' batches; `findings`: the fleet checks'
//!   findings; `sweep`: the periodic sweep of the checks.
//! - `devices`: device and certificate queries; `lifecycle`: the one executor of
//!   `domain::lifecycle` plans; `ldevid`: the one write path of an LDevID; `feed`: the revocation feed and the CRL; `tokens`: tokens and
//!   audit; `settings`: connection events, per-device policy, models.
//! - `sqlite`, `postgres`: connecting, migrating, and the statements that differ by more than a
//!   dialect value: registration's one statement and its bulk look-ups (multi-row VALUES and
//!   `IN` lists on SQLite, arrays on PostgreSQL), and PostgreSQL's listeners (feed, events).
//! - `webhooks`: webhooks, their deliveries and the delivery worker's lease.
//!
//! Lock order in every write transaction: device row, then its certificates, then the feed lock
//! (last, held only until commit).
//!
//! Performance: registration does a constant number of statements per call (chunked multi-row
//! look-ups and one write statement), because sqlx's SQLite driver costs tens of microseconds
//! per statement.

mod app_events;
mod bulk;
mod bulk_postgres;
mod devices;
mod feed;
mod findings;
mod fleet;
mod issuers;
mod json_binds;
mod ldevid;
mod leases;
mod lifecycle;
mod postgres;
mod registration;
mod sensors;
mod settings;
mod sql;
mod sqlite;
mod statistics;
mod stored;
mod sweep;
mod tokens;
mod types;
mod webhooks;

use std::path::Path;
use std::sync::Arc;

use devid_core::api::RevocationReason;

pub use app_events::{AppEventFilter, AppEventRow, NewAppEvent, APP_EVENTS_CHANNEL};
pub use bulk::{BulkAudit, BulkOutcome, DeviceSelection};
pub use findings::{FindingFilter, FindingRow, NewFinding};
pub use fleet::{DeviceHealthRows, FleetCounts, HealthRow, Ingested};
pub use issuers::{IssuerRow, ACTIVE, RETIRED, REVOKED};
pub use ldevid::{KeyBinding, LdevidAsk, LdevidFacts, LdevidPlan};
pub use leases::Lease;
pub use sweep::{Sweeper, Swept};
pub use types::*;
pub use webhooks::{Attempt, DeliveryRow, WebhookRow};

use sql::{Dialect, Pools};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// An AllOrNothing registration failed at item `index`.
    #[error("item {index}: {conflict:?}")]
    BatchConflict { index: usize, conflict: RegConflict },
    /// A rule of the domain refused the change (asked inside the transaction); nothing changed.
    #[error("{0}")]
    Refused(Box<crate::domain::DomainError>),
    /// The sensor KEK's check value differs from the one the database recorded.
    #[error("the sensor key-encryption key differs from the one the database recorded")]
    KekMismatch,
    /// A state change that is not allowed (e.g. resuming a revoked device); message is public.
    #[error("{0}")]
    InvalidTransition(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// PostgreSQL NOTIFY channel carrying the seq of each new feed entry.
pub const FEED_CHANNEL: &str = "devid_feed";

/// The storage handle. Cheap to clone (an `Arc` inside); all methods take `&self`.
#[derive(Clone)]
pub struct Store {
    pools: Arc<Pools>,
    /// "The app-events head is now N", in process (see `app_events`).
    app_head: Arc<app_events::AppEventsHead>,
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

impl Store {
    /// Opens (creating if missing) a SQLite database in WAL mode: one writer connection, which
    /// serializes writes the way SQLite does anyway, plus a small read pool.
    /// `durable`: synchronous=FULL (every commit reaches the disk) instead of NORMAL.
    pub async fn connect_sqlite(path: &Path, durable: bool) -> Result<Store, StoreError> {
        Ok(Store {
            pools: Arc::new(sqlite::connect(path, durable).await?),
            app_head: Arc::default(),
        })
    }

    /// Connects a pool of 16 connections to PostgreSQL. Gives up after the URL's
    /// `connect_timeout` (seconds), else 10 s, when the server cannot be reached.
    pub async fn connect_postgres(url: &str) -> Result<Store, StoreError> {
        Ok(Store {
            pools: Arc::new(postgres::connect(url).await?),
            app_head: Arc::default(),
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
        match &*self.pools {
            Pools::Sqlite { write, .. } => sqlite::migrate(write).await?,
            Pools::Postgres { pool, .. } => postgres::migrate(pool).await?,
        }
        let n = self.backfill_keys().await?;
        if n > 0 {
            tracing::info!(
                certificates = n,
                "bound the keys of earlier certificates to their devices"
            );
        }
        Ok(())
    }

    pub fn is_postgres(&self) -> bool {
        self.dialect() == Dialect::Postgres
    }

    fn dialect(&self) -> Dialect {
        self.pools.dialect()
    }

    /// A trivial query: the database is reachable.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sql::Stmt::new("SELECT 1")
            .execute(&mut self.pools.read().await?)
            .await?;
        Ok(())
    }

    /// Closes the pools (waits for connections in use to come back).
    pub async fn close(&self) {
        self.pools.close().await
    }
}

/// A transaction that lost a race with another process and is worth running again: a unique
/// violation (the other side inserted the same serial or ClientID first), or, on PostgreSQL, a
/// detected deadlock (40P01) or serialization failure (40001).
fn is_retryable(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| {
        d.is_unique_violation() || matches!(d.code().as_deref(), Some("40P01") | Some("40001"))
    })
}

/// 0 means the default of 100; at most 10,000.
fn clamp_limit(limit: u32) -> i64 {
    match limit {
        0 => 100,
        n => i64::from(n.min(10_000)),
    }
}

/// Compile-time check: the futures the HTTP handlers await are `Send` (axum needs it).
#[allow(dead_code)]
fn _futures_are_send(s: &Store, a: &Actor) {
    fn send<T: Send>(_: T) {}
    send(s.suspend_device("x", 0, a, None));
    send(s.revoke_device("x", RevocationReason::KeyCompromise, 0, a));
    send(s.register(&[], RegMode::Independent, a, 0));
    send(s.get_device("x"));
}
