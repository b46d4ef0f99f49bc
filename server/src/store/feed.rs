//! The revocation feed (appended inside the changes' transactions, read in pages, followed
//! across processes on PostgreSQL) and the CRL's one row.

use devid_core::api::{CertState, RevocationAction, RevocationReason, RevocationScope};
use sqlx::FromRow;

use super::sql::{KeyColumn, Lock, Maybe, Pools, Stmt, Tx};
use super::stored::{json_list, Stored, StoredOpt};
use super::FEED_CHANNEL;
use super::{clamp_limit, postgres, CrlListing, CrlRow, FeedEntryRow, Store, StoreError};

/// Appends one feed entry: seq = max + 1 under the feed lock, NOTIFY in the same transaction.
pub(super) async fn append_feed(
    tx: &mut Tx,
    scope: RevocationScope,
    action: RevocationAction,
    client_id: &str,
    serials: Vec<String>,
    reason: Option<RevocationReason>,
    at: i64,
) -> Result<FeedEntryRow, StoreError> {
    tx.lock(Lock::Feed).await?;
    let listed = json_list(&serials);
    let (seq,): (i64,) = Stmt::new(
        "INSERT INTO feed (seq, scope, action, client_id, serials, reason, at) \
         SELECT COALESCE(MAX(seq), 0) + 1, $1, $2, $3, $4, $5, $6 FROM feed RETURNING seq",
    )
    .bind(scope.as_str())
    .bind(action.as_str())
    .bind(client_id)
    .bind(listed.as_str())
    .bind(reason.map(|r| r.as_str()))
    .bind(at)
    .fetch_one(&mut *tx)
    .await?;
    tx.notify(FEED_CHANNEL, &seq.to_string()).await?;
    Ok(FeedEntryRow {
        seq,
        scope,
        action,
        client_id: client_id.to_string(),
        serials,
        reason,
        at,
    })
}

/// In a page of [`Store::feed_since`], the head row without entries has NULL entry columns.
impl KeyColumn for FeedEntryRow {
    const KEY: &'static str = "seq";
}

impl Store {
    /// Entries with seq > `since`, oldest first, at most `limit` (0 means 100; capped at
    /// 10,000), and the head (0 when the feed is empty). Entries and head are read in one
    /// statement, so they come from one snapshot: head >= every entry returned, and a page
    /// shorter than `limit` ends at the head.
    pub async fn feed_since(
        &self,
        since: i64,
        limit: u32,
    ) -> Result<(Vec<FeedEntryRow>, i64), StoreError> {
        /// The head, and an entry unless there is none after `since`.
        #[derive(FromRow)]
        struct Page {
            head: i64,
            #[sqlx(flatten)]
            entry: Maybe<FeedEntryRow>,
        }
        // The head row is always there; with no entry after `since` its entry columns are NULL.
        let rows: Vec<Page> = Stmt::new(
            "SELECT h.head, f.* FROM (SELECT COALESCE(MAX(seq), 0) AS head FROM feed) AS h \
             LEFT JOIN (SELECT * FROM feed WHERE seq > $1 ORDER BY seq LIMIT $2) AS f \
             ON 1 = 1 ORDER BY f.seq",
        )
        .bind(since)
        .bind(clamp_limit(limit))
        .fetch_all(&mut self.pools.read().await?)
        .await?;
        let head = rows.first().map_or(0, |p| p.head);
        Ok((rows.into_iter().filter_map(|p| p.entry.0).collect(), head))
    }

    pub async fn feed_head(&self) -> Result<i64, StoreError> {
        let (head,): (i64,) = Stmt::new("SELECT COALESCE(MAX(seq), 0) FROM feed")
            .fetch_one(&mut self.pools.read().await?)
            .await?;
        Ok(head)
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
        match &*self.pools {
            Pools::Sqlite { .. } => Ok(None),
            Pools::Postgres { pool, url } => {
                postgres::spawn_listener(url, pool.clone(), postgres::FEED, sink)
                    .await
                    .map(Some)
            }
        }
    }

    // ---- CRL ---------------------------------------------------------------------------------

    /// Every certificate on hold or revoked, by serial. Read through the partial index
    /// `certificates_not_good` and sorted here: an ORDER BY serial made both backends walk the
    /// serial index over every certificate instead (12 s for 100,000 of 1,000,000 on
    /// PostgreSQL, against 0.14 s).
    pub async fn crl_listing(&self) -> Result<Vec<CrlListing>, StoreError> {
        #[derive(FromRow)]
        struct Listed {
            serial: String,
            #[sqlx(try_from = "Stored")]
            status: CertState,
            #[sqlx(try_from = "StoredOpt")]
            reason: Option<RevocationReason>,
            revoked_at: i64,
        }
        let mut rows: Vec<Listed> = Stmt::new(
            "SELECT serial, status, reason, COALESCE(revoked_at, created_at) AS revoked_at \
             FROM certificates WHERE status <> 'good'",
        )
        .fetch_all(&mut self.pools.read().await?)
        .await?;
        rows.sort_unstable_by(|a, b| a.serial.cmp(&b.serial));
        Ok(rows
            .into_iter()
            .map(|r| CrlListing {
                reason_code: match r.status {
                    CertState::Hold => RevocationReason::CertificateHold.code(),
                    _ => r.reason.map_or(0, |r| r.code()),
                },
                serial: r.serial,
                revoked_at: r.revoked_at,
            })
            .collect())
    }

    pub async fn crl_get(&self) -> Result<Option<CrlRow>, StoreError> {
        Ok(Stmt::new(
            "SELECT number, feed_head, der, this_update, next_update FROM crl WHERE id = 1",
        )
        .fetch_optional(&mut self.pools.read().await?)
        .await?)
    }

    /// Compare-and-set: stores `row` only if the stored CRL's number is
    /// `expected_previous_number` (None: no CRL stored yet) and `row.number` is greater than it.
    /// False when another writer got there first (re-read and decide again).
    pub async fn crl_put(
        &self,
        row: &CrlRow,
        expected_previous_number: Option<i64>,
    ) -> Result<bool, StoreError> {
        let q = match expected_previous_number {
            Some(prev) if row.number <= prev => return Ok(false),
            None => Stmt::new(
                "INSERT INTO crl (id, number, feed_head, der, this_update, next_update) \
                 VALUES (1, $1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
            ),
            Some(_) => Stmt::new(
                "UPDATE crl SET number = $1, feed_head = $2, der = $3, this_update = $4, \
                 next_update = $5 WHERE id = 1 AND number = $6 AND number < $1",
            ),
        };
        let mut q = q
            .bind(row.number)
            .bind(row.feed_head)
            .bind(&row.der)
            .bind(row.this_update)
            .bind(row.next_update);
        if let Some(prev) = expected_previous_number {
            q = q.bind(prev);
        }
        Ok(q.execute(&mut self.pools.write().await?).await? == 1)
    }
}
