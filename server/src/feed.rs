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
//! The CRLs (each issuing CA's, and the root's) are regenerated when the feed head moves past
//! the head they reflect (or when they age), never per request; each one's number increases by
//! one each time, across processes (compare-and-set in the store).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use devid_core::api::RevocationReason;

use tokio::sync::{watch, Mutex};

use crate::ca::{authority_key_id, Ca, CaError, CrlEntry, IssuingCa};
use crate::domain::DomainError;
use crate::metrics::Metrics;
use crate::store::{CrlRow, Store};
use crate::timefmt;

/// How long a CRL is valid (nextUpdate - thisUpdate).
pub const CRL_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);
/// A CRL older than this is re-signed even without changes.
pub const CRL_REFRESH: Duration = Duration::from_secs(24 * 3600);

/// SQLite: how often the feed head is read for entries other processes appended.
pub const SQLITE_FEED_POLL: Duration = Duration::from_millis(500);

pub struct Feed {
    head: watch::Sender<i64>,
    store: Store,
    ca: Arc<Ca>,
    metrics: Arc<Metrics>,
    /// The CRLs last read or made, by their store key.
    crl: Mutex<HashMap<String, CrlRow>>,
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
            crl: Mutex::new(HashMap::new()),
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
        } else {
            // SQLite: one serving process, but one-shot commands (`devid-server ca rotate`)
            // append entries from another process; a cheap poll brings them in.
            let weak = Arc::downgrade(&feed);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(SQLITE_FEED_POLL);
                loop {
                    tick.tick().await;
                    let Some(feed) = weak.upgrade() else { break };
                    if let Ok(head) = feed.store.feed_head().await {
                        feed.notify(head);
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

    /// The active issuing CA's CRL (DER), regenerated only when the feed moved or it aged.
    pub async fn crl(&self) -> Result<Vec<u8>, DomainError> {
        self.crl_of(CrlOf::Issuer(self.ca.active())).await
    }

    /// A CRL (DER): an issuing CA's, or the root's (the ARL); regenerated only when the feed
    /// moved or it aged, never per request.
    pub async fn crl_of(&self, which: CrlOf) -> Result<Vec<u8>, DomainError> {
        let head = self.head().max(self.store.feed_head().await?);
        let now = timefmt::now();
        let key = which.key();
        let mut cached = self.crl.lock().await;
        if let Some(row) = cached.get(&key) {
            if fresh(row, head, now) {
                return Ok(row.der.clone());
            }
        }
        // Another process may already have published a newer one.
        let stored = self.store.crl_of(&key).await?;
        if let Some(row) = stored.as_ref() {
            if fresh(row, head, now) {
                cached.insert(key, row.clone());
                return Ok(row.der.clone());
            }
        }
        let row = self.regenerate(&which, stored, now).await?;
        let der = row.der.clone();
        cached.insert(key, row);
        Ok(der)
    }

    async fn regenerate(
        &self,
        which: &CrlOf,
        mut previous: Option<CrlRow>,
        now: i64,
    ) -> Result<CrlRow, DomainError> {
        let key = which.key();
        for _ in 0..5 {
            // Read the head before the listing: the listing then covers at least that head.
            let head = self.store.feed_head().await?;
            let entries = self.entries(which).await?;
            let count = entries.len();
            let number = previous.as_ref().map_or(1, |p| p.number + 1);
            let this_update =
                time::OffsetDateTime::from_unix_timestamp(now).map_err(DomainError::internal)?;
            let next_update = this_update + CRL_VALIDITY;
            let (ca, which2) = (self.ca.clone(), which.clone());
            let der = tokio::task::spawn_blocking(move || match which2 {
                CrlOf::Issuer(issuer) => {
                    issuer.sign_crl(&entries, number as u64, this_update, next_update)
                }
                CrlOf::Root => ca.sign_arl(&entries, number as u64, this_update, next_update),
            })
            .await
            .map_err(DomainError::internal)?
            .map_err(|e| match e {
                CaError::NoRootKey => DomainError::NotFound(e.to_string()),
                e => DomainError::internal(e),
            })?;
            let row = CrlRow {
                number,
                feed_head: head,
                der,
                this_update: now,
                next_update: next_update.unix_timestamp(),
            };
            if self
                .store
                .crl_of_put(&key, &row, previous.as_ref().map(|p| p.number))
                .await?
            {
                tracing::info!(
                    crl = %key,
                    crl_number = number,
                    feed_head = head,
                    revoked = count,
                    "CRL regenerated"
                );
                return Ok(row);
            }
            // Lost the race to another process: take its CRL if it is fresh enough.
            previous = self.store.crl_of(&key).await?;
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

    /// What a CRL lists: an issuing CA's revoked and held certificates (those whose AKI is its
    /// key identifier), or the root's revoked issuing CAs.
    async fn entries(&self, which: &CrlOf) -> Result<Vec<CrlEntry>, DomainError> {
        let at =
            |t: i64| time::OffsetDateTime::from_unix_timestamp(t).map_err(DomainError::internal);
        match which {
            CrlOf::Root => {
                let rows = self.store.issuers().await?;
                rows.iter()
                    .filter(|r| r.status == crate::store::REVOKED)
                    .map(|r| {
                        Ok(CrlEntry {
                            serial: hex::decode(pad_even(&r.serial))
                                .map_err(DomainError::internal)?,
                            revoked_at: at(r.revoked_at.unwrap_or(r.created_at))?,
                            reason_code: r
                                .reason
                                .as_deref()
                                .and_then(RevocationReason::parse)
                                .map_or(0, RevocationReason::code),
                        })
                    })
                    .collect()
            }
            CrlOf::Issuer(issuer) => {
                let listing = self.store.crl_listing().await?;
                let ders = self.store.crl_listing_der().await?;
                let ours: std::collections::HashSet<&str> = ders
                    .iter()
                    .filter(|(_, der)| authority_key_id(der).as_deref() == Some(issuer.key_id()))
                    .map(|(serial, _)| serial.as_str())
                    .collect();
                listing
                    .iter()
                    .filter(|l| ours.contains(l.serial.as_str()))
                    .map(|l| {
                        Ok(CrlEntry {
                            serial: hex::decode(&l.serial).map_err(DomainError::internal)?,
                            revoked_at: at(l.revoked_at)?,
                            reason_code: l.reason_code,
                        })
                    })
                    .collect()
            }
        }
    }

    /// Regenerates the CRL in the background after a change (so requests find it ready).
    pub fn refresh_crl_soon(self: &Arc<Self>) {
        let feed = self.clone();
        tokio::spawn(async move {
            if let Err(e) = feed.crl().await {
                tracing::warn!(error = %e, "CRL regeneration after a change failed");
            }
            if feed.ca.has_root_key() {
                if let Err(e) = feed.crl_of(CrlOf::Root).await {
                    tracing::warn!(error = %e, "root CRL regeneration after a change failed");
                }
            }
        });
    }
}

/// Which CRL: an issuing CA's, or the root's.
#[derive(Debug, Clone)]
pub enum CrlOf {
    Issuer(Arc<IssuingCa>),
    Root,
}

impl CrlOf {
    /// Its key in the store: the issuing CA's id, or `root`.
    fn key(&self) -> String {
        match self {
            CrlOf::Issuer(i) => i.id().to_string(),
            CrlOf::Root => "root".to_string(),
        }
    }
}

/// Hex with an even number of digits (serials are stored without leading zeros).
fn pad_even(hex: &str) -> String {
    if hex.len() % 2 == 1 {
        format!("0{hex}")
    } else {
        hex.to_string()
    }
}

fn fresh(row: &CrlRow, head: i64, now: i64) -> bool {
    row.feed_head >= head && now < row.this_update + CRL_REFRESH.as_secs() as i64
}
