//! PostgreSQL backend: one pool of 16 connections; several server processes may share the
//! database. Feed appends and the admin bootstrap are serialized across processes with
//! transaction-scoped advisory locks; each feed append NOTIFYs [`FEED_CHANNEL`] in the same
//! transaction (delivered on commit).

use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};

use super::*;

type Db = sqlx::Postgres;

/// PostgreSQL's protocol allows at most 65,535 bind parameters per statement.
const MAX_BINDS: usize = 65_000;
/// Generated lists use `$N`.
const NUMBERED_PARAMS: bool = true;
const FOR_UPDATE: &str = " FOR UPDATE";

/// Advisory lock keys (arbitrary constants, "devid" + purpose).
const LOCK_FEED: i64 = 0x6465_7669_6401;
const LOCK_BOOTSTRAP: i64 = 0x6465_7669_6402;

pub(super) struct Backend {
    write: PgPool,
    /// The same pool: PostgreSQL needs no reader/writer split.
    read: PgPool,
    url: String,
}

impl Backend {
    pub(super) async fn connect(url: &str) -> Result<Backend, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(30))
            .connect(url)
            .await?;
        Ok(Backend {
            write: pool.clone(),
            read: pool,
            url: url.to_string(),
        })
    }

    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
        // sqlx takes an advisory lock, so concurrent starts of several processes are safe.
        sqlx::migrate!("../migrations/postgres")
            .run(&self.write)
            .await?;
        Ok(())
    }

    pub(super) async fn close(&self) {
        self.write.close().await;
    }

    async fn begin_write(&self) -> Result<Tx, StoreError> {
        Ok(self.write.begin().await?)
    }

    /// Held until commit: appends from all processes are serialized, so max(seq)+1 is
    /// gap-free and seq order is commit order.
    async fn lock_feed(tx: &mut Tx) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LOCK_FEED)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn notify_feed(tx: &mut Tx, seq: i64) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(FEED_CHANNEL)
            .bind(seq.to_string())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn lock_bootstrap(tx: &mut Tx) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LOCK_BOOTSTRAP)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    pub(super) async fn spawn_feed_listener(
        &self,
        sink: tokio::sync::broadcast::Sender<i64>,
    ) -> Result<tokio::task::JoinHandle<()>, StoreError> {
        let mut listener = PgListener::connect(&self.url).await?;
        listener.listen(FEED_CHANNEL).await?;
        let pool = self.read.clone();
        Ok(tokio::spawn(async move {
            loop {
                match listener.try_recv().await {
                    Ok(Some(n)) => match n.payload().parse::<i64>() {
                        Ok(seq) => {
                            // No receivers right now is fine: the server may have none.
                            let _ = sink.send(seq);
                        }
                        Err(_) => {
                            tracing::warn!(payload = n.payload(), "ignoring bad feed notification")
                        }
                    },
                    Ok(None) => {
                        // The connection was lost and will be re-established by the next
                        // try_recv; notifications in between are gone, so announce the head.
                        tracing::warn!("feed listener lost its connection; reconnecting");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        let head: Result<i64, sqlx::Error> =
                            sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM feed")
                                .fetch_one(&pool)
                                .await;
                        if let Ok(head) = head {
                            let _ = sink.send(head);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "feed listener error; retrying in 1 s");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }))
    }
}

include!("common.rs");
