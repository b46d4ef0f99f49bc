//! The issuing CAs (one active, retired ones, revoked ones) and the CRLs, one per issuing CA
//! and one for the root. A change of the CA set appends a feed entry (scope `issuing_ca`) in
//! its transaction, so every process and every broker learns of it through the feed.

use devid_core::api::{RevocationAction, RevocationReason, RevocationScope};
use sqlx::FromRow;

use super::feed::append_feed;
use super::sql::{Conn, Stmt};
use super::tokens::insert_audit_on;
use super::{AuditRecord, CrlRow, FeedEntryRow, Store, StoreError};

/// One issuing CA as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct IssuerRow {
    pub id: String,
    pub serial: String,
    pub der: Vec<u8>,
    /// Its files under `ca/`: `issuing` (the first) or `issuers/<id>`.
    pub key_ref: String,
    /// `active`, `retired` or `revoked`.
    pub status: String,
    pub not_after: i64,
    pub created_at: i64,
    pub retired_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub reason: Option<String>,
}

pub const ACTIVE: &str = "active";
pub const RETIRED: &str = "retired";
pub const REVOKED: &str = "revoked";

impl Store {
    /// Every issuing CA, oldest first.
    pub async fn issuers(&self) -> Result<Vec<IssuerRow>, StoreError> {
        Ok(
            Stmt::new("SELECT * FROM issuing_cas ORDER BY created_at, id")
                .fetch_all(&mut self.pools.read().await?)
                .await?,
        )
    }

    /// Records the issuing CA a data directory already holds as the active one, when the store
    /// has none yet (first start after this table appeared, or a new database). Safe when
    /// several processes start at once. Returns whether it inserted.
    pub async fn issuer_adopt(&self, row: &IssuerRow) -> Result<bool, StoreError> {
        let n = Stmt::new(
            "INSERT INTO issuing_cas (id, serial, der, key_ref, status, not_after, created_at) \
             SELECT $1, $2, $3, $4, 'active', $5, $6 \
             WHERE NOT EXISTS (SELECT 1 FROM issuing_cas) ON CONFLICT DO NOTHING",
        )
        .bind(row.id.as_str())
        .bind(row.serial.as_str())
        .bind(&row.der)
        .bind(row.key_ref.as_str())
        .bind(row.not_after)
        .bind(row.created_at)
        .execute(&mut self.pools.write().await?)
        .await?;
        Ok(n == 1)
    }

    /// Makes `row` the active issuing CA; the active one becomes retired. One feed entry
    /// (`issuing_ca`/`rotated`) and the audit row, in one transaction.
    pub async fn issuer_rotate(
        &self,
        row: &IssuerRow,
        audit: &AuditRecord,
    ) -> Result<FeedEntryRow, StoreError> {
        let mut tx = self.pools.begin_write().await?;
        Stmt::new(
            "UPDATE issuing_cas SET status = 'retired', retired_at = $1 WHERE status = 'active'",
        )
        .bind(row.created_at)
        .execute(&mut tx)
        .await?;
        Stmt::new(
            "INSERT INTO issuing_cas (id, serial, der, key_ref, status, not_after, created_at) \
             VALUES ($1, $2, $3, $4, 'active', $5, $6)",
        )
        .bind(row.id.as_str())
        .bind(row.serial.as_str())
        .bind(&row.der)
        .bind(row.key_ref.as_str())
        .bind(row.not_after)
        .bind(row.created_at)
        .execute(&mut tx)
        .await?;
        let entry = append_feed(
            &mut tx,
            RevocationScope::IssuingCa,
            RevocationAction::Rotated,
            &row.id,
            vec![row.serial.clone()],
            None,
            row.created_at,
        )
        .await?;
        insert_audit_on(Conn::from(&mut tx), audit).await?;
        tx.commit().await?;
        Ok(entry)
    }

    /// Revokes a retired issuing CA: it goes on the root's CRL and into the feed
    /// (`issuing_ca`/`revoked`, its serial), with the audit row, in one transaction.
    /// [`StoreError::NotFound`] for an unknown id; [`StoreError::InvalidTransition`] for the
    /// active one (rotate first) or one already revoked.
    pub async fn issuer_revoke(
        &self,
        id: &str,
        reason: RevocationReason,
        at: i64,
        audit: &AuditRecord,
    ) -> Result<(IssuerRow, FeedEntryRow), StoreError> {
        let mut tx = self.pools.begin_write().await?;
        let row: Option<IssuerRow> = Stmt::new("SELECT * FROM issuing_cas WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut tx)
            .await?;
        let row = row.ok_or(StoreError::NotFound)?;
        match row.status.as_str() {
            ACTIVE => {
                return Err(StoreError::InvalidTransition(format!(
                    "issuing CA {id} is the active one: run `devid-server ca rotate` first"
                )))
            }
            REVOKED => {
                return Err(StoreError::InvalidTransition(format!(
                    "issuing CA {id} is already revoked"
                )))
            }
            _ => {}
        }
        Stmt::new(
            "UPDATE issuing_cas SET status = 'revoked', revoked_at = $1, reason = $2 \
             WHERE id = $3",
        )
        .bind(at)
        .bind(reason.as_str())
        .bind(id)
        .execute(&mut tx)
        .await?;
        let entry = append_feed(
            &mut tx,
            RevocationScope::IssuingCa,
            RevocationAction::Revoked,
            id,
            vec![row.serial.clone()],
            Some(reason),
            at,
        )
        .await?;
        insert_audit_on(Conn::from(&mut tx), audit).await?;
        tx.commit().await?;
        Ok((
            IssuerRow {
                status: REVOKED.into(),
                revoked_at: Some(at),
                reason: Some(reason.as_str().into()),
                ..row
            },
            entry,
        ))
    }

    /// Every certificate on hold or revoked, with its DER (to tell which issuing CA signed
    /// it), by serial (sorted here, as [`Store::crl_listing`] does, so that the partial index
    /// `certificates_not_good` is the one read).
    pub async fn crl_listing_der(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        #[derive(FromRow)]
        struct Listed {
            serial: String,
            der: Vec<u8>,
        }
        let rows: Vec<Listed> =
            Stmt::new("SELECT serial, der FROM certificates WHERE status <> 'good'")
                .fetch_all(&mut self.pools.read().await?)
                .await?;
        let mut out: Vec<(String, Vec<u8>)> = rows.into_iter().map(|r| (r.serial, r.der)).collect();
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The stored CRL of `issuer` (an issuing CA's id, or `root`).
    pub async fn crl_of(&self, issuer: &str) -> Result<Option<CrlRow>, StoreError> {
        Ok(Stmt::new(
            "SELECT number, feed_head, der, this_update, next_update FROM crls WHERE issuer = $1",
        )
        .bind(issuer)
        .fetch_optional(&mut self.pools.read().await?)
        .await?)
    }

    /// Compare-and-set, as [`Store::crl_put`], for the CRL of `issuer`.
    pub async fn crl_of_put(
        &self,
        issuer: &str,
        row: &CrlRow,
        expected_previous_number: Option<i64>,
    ) -> Result<bool, StoreError> {
        let q = match expected_previous_number {
            Some(prev) if row.number <= prev => return Ok(false),
            None => Stmt::new(
                "INSERT INTO crls (number, feed_head, der, this_update, next_update, issuer) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (issuer) DO NOTHING",
            ),
            Some(_) => Stmt::new(
                "UPDATE crls SET number = $1, feed_head = $2, der = $3, this_update = $4, \
                 next_update = $5 WHERE issuer = $6 AND number = $7 AND number < $1",
            ),
        };
        let mut q = q
            .bind(row.number)
            .bind(row.feed_head)
            .bind(&row.der)
            .bind(row.this_update)
            .bind(row.next_update)
            .bind(issuer);
        if let Some(prev) = expected_previous_number {
            q = q.bind(prev);
        }
        Ok(q.execute(&mut self.pools.write().await?).await? == 1)
    }
}
