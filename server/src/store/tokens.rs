//! API tokens and the audit log.

use super::sql::{Conn, Lock, Stmt};
use super::stored::json_list;
use super::{clamp_limit, Actor, AuditRecord, AuditRow, Store, StoreError, TokenRow};

/// The audit row of a success.
pub(super) fn audit_ok(actor: &Actor, action: &str, target: &str, at: i64) -> AuditRecord {
    AuditRecord {
        at,
        actor: actor.clone(),
        action: action.to_string(),
        target: target.to_string(),
        outcome: "ok".to_string(),
        detail: None,
    }
}

pub(super) async fn insert_audit_on(conn: Conn<'_>, rec: &AuditRecord) -> Result<(), StoreError> {
    Stmt::new(
        "INSERT INTO audit (at, actor_id, actor_name, action, target, outcome, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(rec.at)
    .bind(&rec.actor.id)
    .bind(&rec.actor.name)
    .bind(&rec.action)
    .bind(&rec.target)
    .bind(&rec.outcome)
    .bind(&rec.detail)
    .execute(conn)
    .await?;
    Ok(())
}

async fn insert_token_on(conn: Conn<'_>, t: &TokenRow) -> Result<(), StoreError> {
    let models = t.models.as_deref().map(json_list);
    Stmt::new(
        "INSERT INTO tokens (id, name, role, models, hash, created_at, expires_at, revoked_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&t.id)
    .bind(&t.name)
    .bind(t.role.as_str())
    .bind(&models)
    .bind(&t.hash)
    .bind(t.created_at)
    .bind(t.expires_at)
    .bind(t.revoked_at)
    .execute(conn)
    .await?;
    Ok(())
}

impl Store {
    /// Inserts `t` only if there is no token at all (first start). Atomic across processes on
    /// PostgreSQL (an advisory lock) and on SQLite (`BEGIN IMMEDIATE`). True if inserted.
    pub async fn bootstrap_admin(
        &self,
        t: &TokenRow,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pools.begin_write().await?;
        tx.lock(Lock::Bootstrap).await?;
        let (n,): (i64,) = Stmt::new("SELECT COUNT(*) FROM tokens")
            .fetch_one(&mut tx)
            .await?;
        if n > 0 {
            return Ok(false);
        }
        insert_token_on(Conn::from(&mut tx), t).await?;
        insert_audit_on(Conn::from(&mut tx), audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn insert_token(&self, t: &TokenRow, audit: &AuditRecord) -> Result<(), StoreError> {
        let mut tx = self.pools.begin_write().await?;
        insert_token_on(Conn::from(&mut tx), t).await?;
        insert_audit_on(Conn::from(&mut tx), audit).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn find_token_by_hash(&self, hash: &[u8]) -> Result<Option<TokenRow>, StoreError> {
        Ok(Stmt::new("SELECT * FROM tokens WHERE hash = $1")
            .bind(hash)
            .fetch_optional(&mut self.pools.read().await?)
            .await?)
    }

    /// All tokens, oldest first.
    pub async fn list_tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        Ok(Stmt::new("SELECT * FROM tokens ORDER BY created_at, id")
            .fetch_all(&mut self.pools.read().await?)
            .await?)
    }

    /// Sets `revoked_at` (a second revocation keeps the first time). NotFound if no such id.
    pub async fn revoke_token(
        &self,
        id: &str,
        at: i64,
        audit: &AuditRecord,
    ) -> Result<TokenRow, StoreError> {
        let mut tx = self.pools.begin_write().await?;
        let t = Stmt::new(
            "UPDATE tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 RETURNING *",
        )
        .bind(at)
        .bind(id)
        .fetch_optional(&mut tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        insert_audit_on(Conn::from(&mut tx), audit).await?;
        tx.commit().await?;
        Ok(t)
    }

    // ---- audit -------------------------------------------------------------------------------

    pub async fn insert_audit(&self, rec: &AuditRecord) -> Result<(), StoreError> {
        insert_audit_on(Conn::from(&mut self.pools.write().await?), rec).await
    }

    /// Audit rows oldest first: `at >= since`, actor matching a token id or a token name,
    /// `id > after_id` (cursor), at most `limit` (0 means 100; capped at 10,000).
    pub async fn list_audit(
        &self,
        since: Option<i64>,
        actor: Option<&str>,
        after_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let mut q = Stmt::new("SELECT * FROM audit WHERE id > ").push_bind(after_id.unwrap_or(0));
        if let Some(t) = since {
            q = q.push(" AND at >= ").push_bind(t);
        }
        if let Some(a) = actor {
            q = q
                .push(" AND (actor_id = ")
                .push_bind(a)
                .push(" OR actor_name = ")
                .push_bind(a)
                .push(")");
        }
        Ok(q.push(" ORDER BY id LIMIT ")
            .push_bind(clamp_limit(limit))
            .fetch_all(&mut self.pools.read().await?)
            .await?)
    }
}
