//! The device feed's fan-out, and the CRL that follows it.
//!
//! The device feed (served at `/v1/revocations`) carries status changes and settings changes.
//! Every revocation, suspension or resumption, and every settings change brokers must apply
//! (`updated`), appends an entry with the next sequence number in
//! the same transaction as the change (the store guarantees gap-free, strictly increasing numbers
//! in commit order, across processes). This module only spreads the news "the head is now N":
//! in-process after a local commit, and from other processes through PostgreSQL LISTEN/NOTIFY.
//! Subscribers (the SSE stream) then read the entries themselves from the store, so a missed
//! signal can delay an entry but never lose it.
//!
//! The CRL is regenerated when the feed head moves past the head it reflects (or when it ages),
//! never per request; its number increases by one each time, across processes (compare-and-set
//! in the store).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Mutex};

use crate::ca::{Ca, CrlEntry};
use crate::domain::DomainError;
use crate::metrics::Metrics;
use crate::store::{CrlRow, Store};
use crate::timefmt;

/// How long a CRL is valid (nextUpdate - thisUpdate).
pub const CRL_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);
/// A CRL older than this is re-signed even without changes.
pub const CRL_REFRESH: Duration = Duration::from_secs(24 * 3600);

pub struct Feed {
    head: watch::Sender<i64>,
    store: Store,
    ca: Arc<Ca>,
    metrics: Arc<Metrics>,
    crl: Mutex<Option<CrlRow>>,
}

impl Feed {
    /// Reads the current head and, on PostgreSQL, starts following other processes' changes.
    pub async fn start(
        store: Store,
        ca: Arc<Ca>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Feed>, DomainError> {
        let head = store.feed_head().await?;
        metrics.set_feed_head(head);
        let (tx, _) = watch::channel(head);
        let feed = Arc::new(Feed {
            head: tx,
            store: store.clone(),
            ca,
            metrics,
            crl: Mutex::new(None),
        });
        // PostgreSQL: other processes' entries arrive as NOTIFY payloads.
        let (tx, mut rx) = tokio::sync::broadcast::channel::<i64>(1024);
        if store.spawn_feed_listener(tx).await?.is_some() {
            let weak = Arc::downgrade(&feed);
            tokio::spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok(seq) => match weak.upgrade() {
                            Some(feed) => feed.notify(seq),
                            None => break,
                        },
                        // Missed some: the next value still says "at least N".
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    }
                }
            });
        }
        Ok(feed)
    }

    /// A local change committed entry `seq`.
    pub fn notify(&self, seq: i64) {
        self.head.send_if_modified(|h| {
            if seq > *h {
                *h = seq;
                true
            } else {
                false
            }
        });
        self.metrics.set_feed_head(seq);
    }

    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.head.subscribe()
    }

    pub fn head(&self) -> i64 {
        *self.head.borrow()
    }

    /// The current CRL (DER), regenerated only when the feed moved or it aged.
    pub async fn crl(&self) -> Result<Vec<u8>, DomainError> {
        let head = self.head().max(self.store.feed_head().await?);
        let now = timefmt::now();
        let mut cached = self.crl.lock().await;
        if let Some(row) = cached.as_ref() {
            if fresh(row, head, now) {
                return Ok(row.der.clone());
            }
        }
        // Another process may already have published a newer one.
        let stored = self.store.crl_get().await?;
        if let Some(row) = stored.as_ref() {
            if fresh(row, head, now) {
                *cached = stored.clone();
                return Ok(row.der.clone());
            }
        }
        let row = self.regenerate(stored, now).await?;
        let der = row.der.clone();
        *cached = Some(row);
        Ok(der)
    }

    async fn regenerate(
        &self,
        mut previous: Option<CrlRow>,
        now: i64,
    ) -> Result<CrlRow, DomainError> {
        for _ in 0..5 {
            // Read the head before the listing: the listing then covers at least that head.
            let head = self.store.feed_head().await?;
            let listing = self.store.crl_listing().await?;
            let entries: Vec<CrlEntry> = listing
                .iter()
                .map(|l| {
                    Ok(CrlEntry {
                        serial: hex::decode(&l.serial).map_err(DomainError::internal)?,
                        revoked_at: time::OffsetDateTime::from_unix_timestamp(l.revoked_at)
                            .map_err(DomainError::internal)?,
                        reason_code: l.reason_code,
                    })
                })
                .collect::<Result<_, DomainError>>()?;
            let number = previous.as_ref().map_or(1, |p| p.number + 1);
            let this_update =
                time::OffsetDateTime::from_unix_timestamp(now).map_err(DomainError::internal)?;
            let next_update = this_update + CRL_VALIDITY;
            let ca = self.ca.clone();
            let der = tokio::task::spawn_blocking(move || {
                ca.sign_crl(&entries, number as u64, this_update, next_update)
            })
            .await
            .map_err(DomainError::internal)?
            .map_err(DomainError::internal)?;
            let row = CrlRow {
                number,
                feed_head: head,
                der,
                this_update: now,
                next_update: next_update.unix_timestamp(),
            };
            if self
                .store
                .crl_put(&row, previous.as_ref().map(|p| p.number))
                .await?
            {
                tracing::info!(
                    crl_number = number,
                    feed_head = head,
                    revoked = listing.len(),
                    "CRL regenerated"
                );
                return Ok(row);
            }
            // Lost the race to another process: take its CRL if it is fresh enough.
            previous = self.store.crl_get().await?;
            if let Some(row) = previous.as_ref() {
                if fresh(row, head, now) {
                    return Ok(row.clone());
                }
            }
        }
        Err(DomainError::Unavailable(
            "CRL is being regenerated; try again".into(),
        ))
    }

    /// Regenerates the CRL in the background after a change (so requests find it ready).
    pub fn refresh_crl_soon(self: &Arc<Self>) {
        let feed = self.clone();
        tokio::spawn(async move {
            if let Err(e) = feed.crl().await {
                tracing::warn!(error = %e, "CRL regeneration after a change failed");
            }
        });
    }
}

fn fresh(row: &CrlRow, head: i64, now: i64) -> bool {
    row.feed_head >= head && now < row.this_update + CRL_REFRESH.as_secs() as i64
}
