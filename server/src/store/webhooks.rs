//! Webhooks and their deliveries. The worker (`crate::webhooks`) turns the events after a
//! webhook's `scanned_seq` into deliveries, then delivers each webhook's oldest pending one;
//! the `webhooks` lease (`store::Lease`) makes one process the worker.

use devid_core::api::DeliveryState;
use sqlx::FromRow;

use super::sql::{Conn, Stmt};
use super::stored::Stored;
use super::tokens::{audit_ok, insert_audit_on};
use super::{Actor, AppEventFilter, AppEventRow, Store, StoreError};

/// A stored webhook.
#[derive(Debug, Clone, FromRow)]
pub struct WebhookRow {
    pub id: String,
    pub url: String,
    /// JSON array of event kinds.
    #[sqlx(try_from = "Stored")]
    pub kinds: Vec<String>,
    /// JSON array of model names; None: every device.
    pub models: Option<String>,
    pub sealed_secret: Vec<u8>,
    pub scanned_seq: i64,
    pub created_at: i64,
}

/// A stored delivery.
#[derive(Debug, Clone, FromRow)]
pub struct DeliveryRow {
    pub id: i64,
    pub webhook_id: String,
    pub event_seq: i64,
    #[sqlx(try_from = "Stored")]
    pub state: DeliveryState,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub first_attempt_at: Option<i64>,
    pub last_attempt_at: Option<i64>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
}

/// What an attempt came to, as the worker decided it.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub at: i64,
    pub state: DeliveryState,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: i64,
    pub status: Option<u16>,
    pub error: Option<String>,
}

const DELIVERY_COLUMNS: &str = "id, webhook_id, event_seq, state, attempts, next_attempt_at, \
     first_attempt_at, last_attempt_at, last_status, last_error";

impl Store {
    /// Stores a new webhook (its deliveries start with the events after the current head) and
    /// its audit row, in one transaction.
    pub async fn create_webhook(
        &self,
        row: &WebhookRow,
        actor: &Actor,
    ) -> Result<WebhookRow, StoreError> {
        let mut tx = self.pools.begin_write().await?;
        let (head,): (i64,) = Stmt::new("SELECT COALESCE(MAX(seq), 0) FROM app_events")
            .fetch_one(&mut tx)
            .await?;
        let kinds = serde_json::to_string(&row.kinds).unwrap_or_else(|_| "[]".into());
        Stmt::new(
            "INSERT INTO webhooks (id, url, kinds, models, sealed_secret, scanned_seq, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(row.id.as_str())
        .bind(row.url.as_str())
        .bind(kinds.as_str())
        .bind(row.models.as_deref())
        .bind(row.sealed_secret.as_slice())
        .bind(head)
        .bind(row.created_at)
        .execute(&mut tx)
        .await?;
        let audit = audit_ok(actor, "webhook.create", &row.id, row.created_at);
        insert_audit_on(Conn::from(&mut tx), &audit).await?;
        tx.commit().await?;
        Ok(WebhookRow {
            scanned_seq: head,
            ..row.clone()
        })
    }

    pub async fn webhooks(&self) -> Result<Vec<WebhookRow>, StoreError> {
        Ok(Stmt::new("SELECT * FROM webhooks ORDER BY created_at, id")
            .fetch_all(&mut self.pools.read().await?)
            .await?)
    }

    pub async fn webhook(&self, id: &str) -> Result<Option<WebhookRow>, StoreError> {
        Ok(Stmt::new("SELECT * FROM webhooks WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut self.pools.read().await?)
            .await?)
    }

    /// Deletes a webhook and its deliveries, with an audit row; NotFound when there is none.
    pub async fn delete_webhook(&self, id: &str, actor: &Actor, at: i64) -> Result<(), StoreError> {
        let mut tx = self.pools.begin_write().await?;
        Stmt::new("DELETE FROM webhook_deliveries WHERE webhook_id = $1")
            .bind(id)
            .execute(&mut tx)
            .await?;
        let gone = Stmt::new("DELETE FROM webhooks WHERE id = $1")
            .bind(id)
            .execute(&mut tx)
            .await?;
        if gone == 0 {
            return Err(StoreError::NotFound);
        }
        insert_audit_on(
            Conn::from(&mut tx),
            &audit_ok(actor, "webhook.delete", id, at),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A webhook's deliveries, newest event first, at most `limit`.
    pub async fn webhook_deliveries(
        &self,
        webhook_id: &str,
        limit: i64,
    ) -> Result<Vec<(DeliveryRow, AppEventRow)>, StoreError> {
        let rows: Vec<DeliveryRow> = Stmt::new(format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1 \
             ORDER BY event_seq DESC LIMIT $2"
        ))
        .bind(webhook_id)
        .bind(limit)
        .fetch_all(&mut self.pools.read().await?)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for d in rows {
            if let Some(e) = self.app_event(d.event_seq).await? {
                out.push((d, e));
            }
        }
        Ok(out)
    }

    /// One event by its seq.
    pub async fn app_event(&self, seq: i64) -> Result<Option<AppEventRow>, StoreError> {
        Ok(
            Stmt::new(
                "SELECT seq, at, kind, client_id, model, data FROM app_events WHERE seq = $1",
            )
            .bind(seq)
            .fetch_optional(&mut self.pools.read().await?)
            .await?,
        )
    }

    /// Makes a delivery pending again, due now, with a fresh 24 h of attempts, and writes the
    /// audit row; NotFound when the webhook has no such delivery.
    pub async fn redeliver(
        &self,
        webhook_id: &str,
        delivery_id: i64,
        actor: &Actor,
        at: i64,
    ) -> Result<DeliveryRow, StoreError> {
        let mut tx = self.pools.begin_write().await?;
        let row: DeliveryRow = Stmt::new(format!(
            "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, \
             next_attempt_at = $1, first_attempt_at = NULL \
             WHERE id = $2 AND webhook_id = $3 RETURNING {DELIVERY_COLUMNS}"
        ))
        .bind(at)
        .bind(delivery_id)
        .bind(webhook_id)
        .fetch_optional(&mut tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let target = format!("{webhook_id}/{delivery_id}");
        insert_audit_on(
            Conn::from(&mut tx),
            &audit_ok(actor, "webhook.redeliver", &target, at),
        )
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Turns the events after the webhook's `scanned_seq` that `wanted` accepts into pending
    /// deliveries due at `at` (at most `limit` events looked at), and moves `scanned_seq` past
    /// them, in one transaction. Returns how many deliveries were made.
    pub async fn enqueue_deliveries(
        &self,
        hook: &WebhookRow,
        at: i64,
        limit: u32,
        wanted: impl Fn(&AppEventRow) -> bool,
    ) -> Result<usize, StoreError> {
        let events = self
            .app_events_since(hook.scanned_seq, limit, &AppEventFilter::default())
            .await?;
        let Some(last) = events.last().map(|e| e.seq) else {
            return Ok(0);
        };
        let mut tx = self.pools.begin_write().await?;
        // Only the lease holder moves a cursor; the compare-and-set keeps a late one honest.
        let moved =
            Stmt::new("UPDATE webhooks SET scanned_seq = $1 WHERE id = $2 AND scanned_seq = $3")
                .bind(last)
                .bind(hook.id.as_str())
                .bind(hook.scanned_seq)
                .execute(&mut tx)
                .await?;
        if moved == 0 {
            return Ok(0);
        }
        let mut made = 0;
        for e in events.iter().filter(|e| wanted(e)) {
            Stmt::new(
                "INSERT INTO webhook_deliveries (webhook_id, event_seq, state, next_attempt_at) \
                 VALUES ($1, $2, 'pending', $3)",
            )
            .bind(hook.id.as_str())
            .bind(e.seq)
            .bind(at)
            .execute(&mut tx)
            .await?;
            made += 1;
        }
        tx.commit().await?;
        Ok(made)
    }

    /// The webhook's oldest pending delivery and its event: the one whose turn it is.
    pub async fn next_delivery(
        &self,
        webhook_id: &str,
    ) -> Result<Option<(DeliveryRow, AppEventRow)>, StoreError> {
        let row: Option<DeliveryRow> = Stmt::new(format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries \
             WHERE webhook_id = $1 AND state = 'pending' ORDER BY event_seq LIMIT 1"
        ))
        .bind(webhook_id)
        .fetch_optional(&mut self.pools.read().await?)
        .await?;
        match row {
            Some(d) => Ok(self.app_event(d.event_seq).await?.map(|e| (d, e))),
            None => Ok(None),
        }
    }

    /// Records an attempt of delivery `id`.
    pub async fn record_attempt(&self, id: i64, a: &Attempt) -> Result<(), StoreError> {
        Stmt::new(
            "UPDATE webhook_deliveries SET state = $1, attempts = attempts + 1, \
             next_attempt_at = $2, first_attempt_at = COALESCE(first_attempt_at, $3), \
             last_attempt_at = $3, last_status = $4, last_error = $5 WHERE id = $6",
        )
        .bind(a.state.as_str())
        .bind(a.next_attempt_at)
        .bind(a.at)
        .bind(a.status.map(i64::from))
        .bind(a.error.as_deref())
        .bind(id)
        .execute(&mut self.pools.write().await?)
        .await?;
        Ok(())
    }
}
