//! LDevID issuance: the one write path of an operational certificate. The rules are
//! `domain::renewal`'s; this reads what they need under the device's lock and writes what they
//! decided, in one transaction.

use devid_core::api::AppEventKind;

use super::app_events::{append_app_events, NewAppEvent};
use super::devices::{load_cert, lock_device, DeviceKey};
use super::sql::{Conn, Stmt};
use super::tokens::insert_audit_on;
use super::{AuditRecord, CertRow, DeviceRow, ModelRow, NewCert, Store, StoreError};

/// What the issuance rules read, as of the transaction (the device's row is locked).
#[derive(Debug, Clone)]
pub struct LdevidFacts {
    pub device: DeviceRow,
    /// The certificate that authenticated the request.
    pub presented: CertRow,
    /// The device's model settings (None: no model, or a model never configured).
    pub model: Option<ModelRow>,
    /// created_at of the device's LDevIDs issued at or after `since` (the caller's window).
    pub recent: Vec<i64>,
    /// The CSR key's binding, if the key is known: its device's id and whether it was revoked
    /// for keyCompromise.
    pub key: Option<KeyBinding>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyBinding {
    pub device_id: i64,
    pub compromised: bool,
}

/// What to write: the new certificate, its audit row, and whether its key is new to the device.
#[derive(Debug, Clone)]
pub struct LdevidPlan {
    pub cert: NewCert,
    pub audit: AuditRecord,
    pub bind_key: bool,
}

impl Store {
    /// Issues an LDevID in one transaction: finds the device of the certificate `presented`
    /// (NotFound if none), locks its row, reads the facts (LDevIDs issued since `since`, the
    /// binding of the key `spki_sha256`), asks `decide` (the rules, then the CA's signature),
    /// and writes the certificate, the key's binding (when new) and the audit row. An error of
    /// `decide` rolls back and is returned as it is. Under the device's row lock the count of
    /// recent LDevIDs holds across PostgreSQL processes.
    pub async fn issue_ldevid<E, F>(
        &self,
        presented: &str,
        spki_sha256: &[u8; 32],
        since: i64,
        decide: F,
    ) -> Result<CertRow, E>
    where
        E: From<StoreError>,
        F: FnOnce(&LdevidFacts) -> Result<LdevidPlan, E>,
    {
        let mut tx = self.pools.begin_write().await.map_err(StoreError::from)?;
        let (device_id,): (i64,) =
            Stmt::new("SELECT device_id FROM certificates WHERE serial = $1")
                .bind(presented)
                .fetch_optional(&mut tx)
                .await
                .map_err(StoreError::from)?
                .ok_or(StoreError::NotFound)?;
        let device = lock_device(&mut tx, DeviceKey::Id(device_id)).await?;
        let presented_row = load_cert(Conn::from(&mut tx), presented)
            .await?
            .ok_or(StoreError::NotFound)?;
        let model: Option<ModelRow> = match &device.model {
            Some(m) => Stmt::new("SELECT * FROM models WHERE name = $1")
                .bind(m.as_str())
                .fetch_optional(&mut tx)
                .await
                .map_err(StoreError::from)?,
            None => None,
        };
        let recent: Vec<(i64,)> = Stmt::new(
            "SELECT created_at FROM certificates \
             WHERE device_id = $1 AND profile = 'ldevid' AND created_at >= $2",
        )
        .bind(device.id)
        .bind(since)
        .fetch_all(&mut tx)
        .await
        .map_err(StoreError::from)?;
        let key: Option<(i64, Option<i64>)> =
            Stmt::new("SELECT device_id, compromised_at FROM device_keys WHERE spki_sha256 = $1")
                .bind(spki_sha256.as_slice())
                .fetch_optional(&mut tx)
                .await
                .map_err(StoreError::from)?;
        let facts = LdevidFacts {
            device,
            presented: presented_row,
            model,
            recent: recent.into_iter().map(|(t,)| t).collect(),
            key: key.map(|(device_id, c)| KeyBinding {
                device_id,
                compromised: c.is_some(),
            }),
        };
        let plan = decide(&facts)?;
        let c = &plan.cert;
        Stmt::new(
            "INSERT INTO certificates (serial, device_id, fingerprint, der, not_before, \
             not_after, profile, csr_sha256, spki_sha256, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&c.serial)
        .bind(facts.device.id)
        .bind(&c.fingerprint)
        .bind(&c.der)
        .bind(c.not_before)
        .bind(c.not_after)
        .bind(&c.profile)
        .bind(&c.csr_sha256)
        .bind(c.spki_sha256.as_slice())
        .bind(plan.audit.at)
        .execute(&mut tx)
        .await
        .map_err(StoreError::from)?;
        if plan.bind_key {
            // A key bound to another device meanwhile (another process) makes this fail on the
            // primary key: nothing is issued.
            Stmt::new("INSERT INTO device_keys (spki_sha256, device_id) VALUES ($1, $2)")
                .bind(c.spki_sha256.as_slice())
                .bind(facts.device.id)
                .execute(&mut tx)
                .await
                .map_err(StoreError::from)?;
        }
        insert_audit_on(Conn::from(&mut tx), &plan.audit).await?;
        let event = NewAppEvent {
            kind: AppEventKind::CertificateIssued,
            at: plan.audit.at,
            client_id: Some(facts.device.client_id.clone()),
            model: facts.device.model.clone(),
            data: serde_json::json!({
                "serial": c.serial,
                "not_after": crate::timefmt::rfc3339(c.not_after),
                "kind": "ldevid",
            }),
        };
        let appended = append_app_events(&mut tx, &[event]).await?;
        let row = load_cert(Conn::from(&mut tx), &c.serial)
            .await?
            .ok_or(StoreError::NotFound)?;
        tx.commit().await.map_err(StoreError::from)?;
        self.app_events_committed(appended);
        Ok(row)
    }
}
