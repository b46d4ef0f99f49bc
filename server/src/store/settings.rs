//! A device's activity as brokers' batches left it (written by `fleet::ingest_batch`), and
//! what brokers apply: a device's own policy and its model's settings. Settings changes append an `updated` feed entry so that brokers apply them
//! to live connections.

use devid_core::api::{RevocationAction, RevocationScope};

use super::feed::append_feed;
use super::sql::{Conn, Record, Stmt, Tx};
use super::stored::json_list;
use super::tokens::insert_audit_on;
use super::{
    AuditRecord, DeviceActivity, DevicePolicyChange, DevicePolicyRow, FeedEntryRow, ModelRow,
    Store, StoreError,
};

impl Store {
    pub async fn device_activity(
        &self,
        client_id: &str,
    ) -> Result<Option<DeviceActivity>, StoreError> {
        self.device_columns(client_id).await
    }

    pub async fn get_device_policy(
        &self,
        client_id: &str,
    ) -> Result<Option<DevicePolicyRow>, StoreError> {
        self.device_columns(client_id).await
    }

    /// The columns of the device with this ClientID that `T` reads.
    async fn device_columns<T: Record>(&self, client_id: &str) -> Result<Option<T>, StoreError> {
        Ok(Stmt::new("SELECT * FROM devices WHERE client_id = $1")
            .bind(client_id)
            .fetch_optional(&mut self.pools.read().await?)
            .await?)
    }

    /// Changes the fields of a device's policy that `change` names, and only those, in one
    /// statement (so concurrent changes of different fields never undo each other); writes
    /// `audit` and appends an `updated` feed entry (scope device) so brokers apply it to a live
    /// connection. NotFound if no device.
    pub async fn change_device_policy(
        &self,
        client_id: &str,
        change: &DevicePolicyChange,
        audit: &AuditRecord,
    ) -> Result<FeedEntryRow, StoreError> {
        let cidrs = change
            .allowed_cidrs
            .clone()
            .flatten()
            .as_deref()
            .map(json_list);
        let mut tx = self.pools.begin_write().await?;
        // One statement: each field not named keeps the value the row has when the statement
        // runs (PostgreSQL re-reads a row changed meanwhile after waiting for its lock).
        let n = Stmt::new(
            "UPDATE devices SET \
             allowed_cidrs = CASE WHEN $1 THEN $2 ELSE allowed_cidrs END, \
             topic_policy = CASE WHEN $3 THEN $4 ELSE topic_policy END, \
             message_auth = CASE WHEN $5 THEN $6 ELSE message_auth END \
             WHERE client_id = $7",
        )
        .bind(change.allowed_cidrs.is_some())
        .bind(&cidrs)
        .bind(change.topic_policy.is_some())
        .bind(change.topic_policy.as_ref().and_then(Option::as_deref))
        .bind(change.message_auth.is_some())
        .bind(change.message_auth.as_ref().and_then(Option::as_deref))
        .bind(client_id)
        .execute(&mut tx)
        .await?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        updated(tx, RevocationScope::Device, client_id, audit).await
    }

    pub async fn get_model(&self, name: &str) -> Result<Option<ModelRow>, StoreError> {
        Ok(Stmt::new("SELECT * FROM models WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut self.pools.read().await?)
            .await?)
    }

    pub async fn list_models(&self) -> Result<Vec<ModelRow>, StoreError> {
        Ok(Stmt::new("SELECT * FROM models ORDER BY name")
            .fetch_all(&mut self.pools.read().await?)
            .await?)
    }

    /// Inserts or replaces a model's settings, writes `audit` and appends an `updated` feed entry
    /// (scope model; the entry's client_id column holds the model name).
    pub async fn put_model(
        &self,
        m: &ModelRow,
        audit: &AuditRecord,
    ) -> Result<FeedEntryRow, StoreError> {
        let validity = m.ldevid_validity.map(|v| v.to_string());
        let grace = m.renewal_grace.map(|v| v.to_string());
        let mut tx = self.pools.begin_write().await?;
        Stmt::new(
            "INSERT INTO models (name, client_id_prefix, topic_policy, message_auth, \
             ldevid_validity, renewal_grace, connect_with, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (name) DO UPDATE SET \
             client_id_prefix = excluded.client_id_prefix, topic_policy = excluded.topic_policy, \
             message_auth = excluded.message_auth, ldevid_validity = excluded.ldevid_validity, \
             renewal_grace = excluded.renewal_grace, connect_with = excluded.connect_with, \
             updated_at = excluded.updated_at",
        )
        .bind(&m.name)
        .bind(&m.client_id_prefix)
        .bind(&m.topic_policy)
        .bind(&m.message_auth)
        .bind(&validity)
        .bind(&grace)
        .bind(m.connect_with.map(|v| v.as_str()))
        .bind(m.updated_at)
        .execute(&mut tx)
        .await?;
        updated(tx, RevocationScope::Model, &m.name, audit).await
    }
}

/// Finishes a settings change: its audit row, an `updated` feed entry for `subject` (a ClientID
/// or a model name), commit.
async fn updated(
    mut tx: Tx,
    scope: RevocationScope,
    subject: &str,
    audit: &AuditRecord,
) -> Result<FeedEntryRow, StoreError> {
    insert_audit_on(Conn::from(&mut tx), audit).await?;
    let entry = append_feed(
        &mut tx,
        scope,
        RevocationAction::Updated,
        subject,
        Vec::new(),
        None,
        audit.at,
    )
    .await?;
    tx.commit().await?;
    Ok(entry)
}
