//! PostgreSQL's statements of a bulk change (`bulk`): the same writes as SQLite's, with the
//! ids and per-device columns bound as arrays (binary protocol, `= ANY($n)` and `UNNEST`)
//! instead of JSON text the server would parse, and the keys marked by an UPDATE of the rows
//! that exist rather than an upsert of every key.

use devid_core::api::DeviceState;
use sqlx::PgConnection;

use super::bulk::Changed;
use super::StoreError;
use crate::domain::lifecycle::{Change, DeviceChange};

/// Writes one group's change (see `bulk::write_group`): devices still in `state`, their
/// certificates, their keys. Returns the devices changed, with the serials that changed.
pub(super) async fn write_group(
    c: &mut PgConnection,
    state: DeviceState,
    d: DeviceChange,
    change: &Change,
    ids: &[i64],
    at: i64,
    index: usize,
) -> Result<Vec<Changed>, StoreError> {
    // Device rows first (lock order), and only those still in the group's state. Without a
    // revocation the device keeps its revocation time and reason.
    let rows: Vec<(i64, String, Option<String>)> = sqlx::query_as(
        "UPDATE devices SET status = $1, revoked_at = COALESCE($2, revoked_at), \
         reason = COALESCE($3, reason) WHERE status = $4 AND id = ANY($5) \
         RETURNING id, client_id, model",
    )
    .bind(d.status.as_str())
    .bind(d.revocation.map(|_| at))
    .bind(d.revocation.map(|r| r.as_str()))
    .bind(state.as_str())
    .bind(ids)
    .fetch_all(&mut *c)
    .await?;
    let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
    let certs = &change.certificates;
    let from: Vec<&str> = certs.from.iter().map(|s| s.as_str()).collect();
    let serials: Vec<(i64, String)> = sqlx::query_as(
        "UPDATE certificates SET status = $1, revoked_at = $2, reason = $3 \
         WHERE status = ANY($4) AND device_id = ANY($5) RETURNING device_id, serial",
    )
    .bind(certs.to.as_str())
    .bind(certs.reason.map(|_| at))
    .bind(certs.reason.map(|r| r.as_str()))
    .bind(&from)
    .bind(&ids)
    .fetch_all(&mut *c)
    .await?;
    if change.compromise_keys {
        // The keys of every certificate of the devices: those bound already are marked (once:
        // a mark is never moved), any not bound yet are bound and marked.
        sqlx::query(
            "WITH k AS (SELECT DISTINCT spki_sha256, device_id FROM certificates \
             WHERE spki_sha256 IS NOT NULL AND device_id = ANY($2)), \
             marked AS (UPDATE device_keys SET compromised_at = $1 FROM k \
             WHERE device_keys.spki_sha256 = k.spki_sha256 AND device_keys.compromised_at IS NULL) \
             INSERT INTO device_keys (spki_sha256, device_id, compromised_at) \
             SELECT k.spki_sha256, k.device_id, $1 FROM k WHERE NOT EXISTS \
             (SELECT 1 FROM device_keys b WHERE b.spki_sha256 = k.spki_sha256) \
             ON CONFLICT (spki_sha256) DO UPDATE SET \
             compromised_at = COALESCE(device_keys.compromised_at, excluded.compromised_at)",
        )
        .bind(at)
        .bind(&ids)
        .execute(&mut *c)
        .await?;
    }
    Ok(super::bulk::changed(rows, serials, index))
}

/// One feed row per element of the arrays: seq = head + 1, + 2, ... in their order. The caller
/// holds the feed lock.
pub(super) async fn insert_feed(
    c: &mut PgConnection,
    cols: &super::bulk::FeedColumns,
    at: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO feed (seq, scope, action, client_id, serials, reason, at) \
         SELECT (SELECT COALESCE(MAX(seq), 0) FROM feed) + u.ord, u.scope, u.action, \
         u.client_id, u.serials, u.reason, $6 \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) \
         WITH ORDINALITY AS u(scope, action, client_id, serials, reason, ord)",
    )
    .bind(&cols.scope)
    .bind(&cols.action)
    .bind(&cols.client_id)
    .bind(&cols.serials)
    .bind(&cols.reason)
    .bind(at)
    .execute(&mut *c)
    .await?;
    Ok(())
}
