//! The events for applications: appended inside the transaction of the change they report
//! (one statement per call, whatever the number of events), read in pages by the event stream,
//! the event pages, device timelines and webhook delivery.

use devid_core::api::AppEventKind;
use sqlx::FromRow;

use super::sql::{Lock, Pools, Stmt, Tx};
use super::stored::Stored;
use super::{clamp_limit, postgres, Store, StoreError};

/// PostgreSQL NOTIFY channel carrying the newest seq after each append.
pub const APP_EVENTS_CHANNEL: &str = "devid_app_events";

/// "The head is now at least N": what readers of the events wait on. Set in process after
/// each local commit that appended events, and on PostgreSQL from other processes' NOTIFYs
/// too (a listener started by the first subscriber). Readers then read the events from the
/// store, so a missed signal can delay an event but never lose it.
#[derive(Debug)]
pub(super) struct AppEventsHead {
    head: tokio::sync::watch::Sender<i64>,
    listening: tokio::sync::OnceCell<()>,
}

impl Default for AppEventsHead {
    fn default() -> Self {
        AppEventsHead {
            head: tokio::sync::watch::Sender::new(0),
            listening: tokio::sync::OnceCell::new(),
        }
    }
}

impl AppEventsHead {
    fn advance(&self, seq: i64) {
        self.head.send_if_modified(|h| {
            if seq > *h {
                *h = seq;
                true
            } else {
                false
            }
        });
    }
}

/// An event to append.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NewAppEvent {
    pub kind: AppEventKind,
    /// Unix seconds.
    pub at: i64,
    pub client_id: Option<String>,
    pub model: Option<String>,
    /// A JSON object: the kind's own fields.
    pub data: serde_json::Value,
}

/// A stored event.
#[derive(Debug, Clone, FromRow)]
pub struct AppEventRow {
    pub seq: i64,
    pub at: i64,
    #[sqlx(try_from = "Stored")]
    pub kind: AppEventKind,
    pub client_id: Option<String>,
    pub model: Option<String>,
    /// JSON object text.
    pub data: String,
}

/// Which events a reader wants; empty `kinds` means every kind.
#[derive(Debug, Clone, Default)]
pub struct AppEventFilter {
    pub kinds: Vec<AppEventKind>,
    pub model: Option<String>,
    pub client_id: Option<String>,
}

/// SQLite's wire form of `events` for the one INSERT: a JSON array of objects with the table's
/// columns (`NewAppEvent`'s own serde form, written straight out without a tree in between).
fn rows_json(events: &[NewAppEvent]) -> Result<String, StoreError> {
    // Strings, integers and JSON values only: this cannot fail, and if it ever did the change
    // fails with it rather than losing its events.
    serde_json::to_string(events)
        .map_err(|e| StoreError::Database(sqlx::Error::Encode(Box::new(e))))
}

/// Appends `events` in order under the app-events lock (seq = max + 1, + 2, ...: commit order
/// on both backends), with a NOTIFY of the new head in the same transaction. Returns the seq of
/// the last one (0 when `events` is empty: nothing is written).
pub(crate) async fn append_app_events(
    tx: &mut Tx,
    events: &[NewAppEvent],
) -> Result<i64, StoreError> {
    if events.is_empty() {
        return Ok(0);
    }
    tx.lock(Lock::AppEvents).await?;
    // PostgreSQL: one array per column, bound in the binary protocol (no JSON text to build
    // and parse); SQLite: one JSON array of rows.
    let last = match tx {
        Tx::Postgres(c) => {
            let data: Vec<String> = events.iter().map(|e| e.data.to_string()).collect();
            let (last,): (i64,) = sqlx::query_as(
                "WITH ins AS (INSERT INTO app_events (seq, at, kind, client_id, model, data) \
                 SELECT (SELECT COALESCE(MAX(seq), 0) FROM app_events) + u.ord, u.at, u.kind, \
                 u.client_id, u.model, u.data \
                 FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[]) \
                 WITH ORDINALITY AS u(at, kind, client_id, model, data, ord) RETURNING seq) \
                 SELECT COALESCE(MAX(seq), 0) FROM ins",
            )
            .bind(events.iter().map(|e| e.at).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>())
            .bind(
                events
                    .iter()
                    .map(|e| e.client_id.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(
                events
                    .iter()
                    .map(|e| e.model.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(data)
            .fetch_one(&mut **c)
            .await?;
            last
        }
        Tx::Sqlite(_) => {
            let rows = rows_json(events)?;
            let seqs: Vec<(i64,)> = Stmt::new(
                "INSERT INTO app_events (seq, at, kind, client_id, model, data) \
                 SELECT (SELECT COALESCE(MAX(seq), 0) FROM app_events) + j.key + 1, \
                 json_extract(j.value, '$.at'), json_extract(j.value, '$.kind'), \
                 json_extract(j.value, '$.client_id'), json_extract(j.value, '$.model'), \
                 json_extract(j.value, '$.data') FROM json_each($1) AS j \
                 RETURNING seq",
            )
            .bind(rows.as_str())
            .fetch_all(&mut *tx)
            .await?;
            seqs.iter().map(|s| s.0).max().unwrap_or(0)
        }
    };
    tx.notify(APP_EVENTS_CHANNEL, &last.to_string()).await?;
    Ok(last)
}

impl Store {
    /// Appends `events` in one transaction of their own (for events that report no change of
    /// the store's, such as a broker's connects).
    pub async fn append_app_events(&self, events: &[NewAppEvent]) -> Result<i64, StoreError> {
        if events.is_empty() {
            return Ok(0);
        }
        let mut tx = self.pools.begin_write().await?;
        let last = append_app_events(&mut tx, events).await?;
        tx.commit().await?;
        self.app_events_committed(last);
        Ok(last)
    }

    /// A local transaction that appended events up to `seq` committed: wakes this process's
    /// readers (0: nothing was appended).
    pub(super) fn app_events_committed(&self, seq: i64) {
        if seq > 0 {
            self.app_head.advance(seq);
        }
    }

    /// A receiver that changes when the events' head moves (this process's commits; on
    /// PostgreSQL every process's). The first call on PostgreSQL starts the listener.
    pub async fn subscribe_app_events(
        &self,
    ) -> Result<tokio::sync::watch::Receiver<i64>, StoreError> {
        if let Pools::Postgres { pool, url } = &*self.pools {
            self.app_head
                .listening
                .get_or_try_init(|| async {
                    let (tx, mut rx) = tokio::sync::broadcast::channel::<i64>(1024);
                    postgres::spawn_listener(url, pool.clone(), postgres::APP_EVENTS, tx).await?;
                    let weak = std::sync::Arc::downgrade(&self.app_head);
                    tokio::spawn(async move {
                        use tokio::sync::broadcast::error::RecvError;
                        loop {
                            match rx.recv().await {
                                Ok(seq) => match weak.upgrade() {
                                    Some(head) => head.advance(seq),
                                    None => break,
                                },
                                // Missed some: the next value still says "at least N".
                                Err(RecvError::Lagged(_)) => continue,
                                Err(RecvError::Closed) => break,
                            }
                        }
                    });
                    Ok::<(), StoreError>(())
                })
                .await?;
        }
        Ok(self.app_head.head.subscribe())
    }

    /// Events with seq > `since` that pass `filter`, oldest first, at most `limit` (0 means
    /// 100; capped at 10,000).
    pub async fn app_events_since(
        &self,
        since: i64,
        limit: u32,
        filter: &AppEventFilter,
    ) -> Result<Vec<AppEventRow>, StoreError> {
        let kinds: Vec<&str> = filter.kinds.iter().map(|k| k.as_str()).collect();
        let kinds = serde_json::to_string(&kinds).unwrap_or_else(|_| "[]".into());
        let in_kinds = if self.is_postgres() {
            "kind IN (SELECT jsonb_array_elements_text($2::jsonb))"
        } else {
            "kind IN (SELECT value FROM json_each($2))"
        };
        let sql = format!(
            "SELECT seq, at, kind, client_id, model, data FROM app_events \
             WHERE seq > $1 AND ($3 = 0 OR {in_kinds}) \
             AND ($4 = '' OR model = $4) AND ($5 = '' OR client_id = $5) \
             ORDER BY seq LIMIT $6"
        );
        Ok(Stmt::new(sql)
            .bind(since)
            .bind(kinds.as_str())
            .bind(filter.kinds.len() as i64)
            .bind(filter.model.as_deref().unwrap_or(""))
            .bind(filter.client_id.as_deref().unwrap_or(""))
            .bind(clamp_limit(limit))
            .fetch_all(&mut self.pools.read().await?)
            .await?)
    }

    /// The newest seq (0 when there is none).
    pub async fn app_events_head(&self) -> Result<i64, StoreError> {
        let (head,): (i64,) = Stmt::new("SELECT COALESCE(MAX(seq), 0) FROM app_events")
            .fetch_one(&mut self.pools.read().await?)
            .await?;
        Ok(head)
    }
}
