//! Bulk changes: `domain::lifecycle::plan` applied to every device a filter selects, in one
//! transaction and a fixed number of statements whatever the number of devices.
//!
//! The plan depends only on the device's state, so the devices are grouped by state, the plan
//! is asked once per group, and each group's change is written as set-based statements over
//! the group's ids: the same writes `Store::apply_device_transition` makes for one device
//! (device row, certificates, keys marked compromised, one feed entry per device), plus an
//! application event per device and one audit row for the whole call. PostgreSQL's writes are
//! in `bulk_postgres` (arrays bound in the binary protocol instead of JSON text).

use std::collections::BTreeMap;

use devid_core::api::{AppEventKind, DeviceState, RevocationAction};
use sqlx::FromRow;

use super::app_events::{append_app_events, NewAppEvent};
use super::sql::{Dialect, Lock, Stmt, Tx};
use super::stored::{json_list, Stored};
use super::tokens::{audit_ok, insert_audit_on};
use super::{Actor, AuditRecord, Store, StoreError, FEED_CHANNEL};
use crate::domain::lifecycle::{Change, Current};

/// Which devices a bulk change selects: those meeting every criterion given.
#[derive(Debug, Clone, Default)]
pub struct DeviceSelection {
    pub model: Option<String>,
    /// Each key's metadata value must be this JSON string.
    pub metadata: BTreeMap<String, String>,
    /// Unix seconds, exclusive.
    pub created_after: Option<i64>,
    /// Unix seconds, exclusive.
    pub created_before: Option<i64>,
    pub client_ids: Option<Vec<String>>,
}

/// The one audit row of a bulk change.
#[derive(Debug, Clone)]
pub struct BulkAudit {
    pub action: &'static str,
    /// What was selected (the filter, described).
    pub target: String,
}

/// What a bulk change did (or would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BulkOutcome {
    pub matched: u64,
    /// ClientIDs of the devices that changed (would change), in id order.
    pub changed: Vec<String>,
    /// The feed actions written, one per changed device (empty on a dry run).
    pub actions: Vec<RevocationAction>,
    /// The seq of the last feed entry written; None when nothing was written.
    pub last_seq: Option<i64>,
}

#[derive(Debug, FromRow)]
struct Selected {
    id: i64,
    client_id: String,
    #[sqlx(try_from = "Stored")]
    status: DeviceState,
}

/// `(SELECT ...)` of the values of the JSON array text bound at `$n`: integers when `ints`.
fn json_values(dialect: Dialect, n: usize, ints: bool) -> String {
    match (dialect, ints) {
        (Dialect::Sqlite, _) => format!("(SELECT value FROM json_each(${n}))"),
        (Dialect::Postgres, false) => format!("(SELECT jsonb_array_elements_text(${n}::jsonb))"),
        (Dialect::Postgres, true) => {
            format!("(SELECT jsonb_array_elements_text(${n}::jsonb)::bigint)")
        }
    }
}

/// The SELECT of the devices `sel` picks, oldest first; its JSON arguments are `json`.
fn select_statement<'a>(dialect: Dialect, sel: &'a DeviceSelection, json: &'a SelJson) -> Stmt<'a> {
    let mut q = Stmt::new("SELECT d.id, d.client_id, d.status FROM devices d WHERE 1 = 1");
    if let Some(m) = &sel.model {
        q = q.push(" AND d.model = ").push_bind(m.as_str());
    }
    if let Some(t) = sel.created_after {
        q = q.push(" AND d.created_at > ").push_bind(t);
    }
    if let Some(t) = sel.created_before {
        q = q.push(" AND d.created_at < ").push_bind(t);
    }
    if let Some(ids) = &json.client_ids {
        q = q.push(" AND d.client_id IN ").bind(ids.as_str());
        let n = q.arg_count();
        q = q.push(&json_values(dialect, n, false));
    }
    if let Some(meta) = &json.metadata {
        q = q.bind(meta.as_str());
        let n = q.arg_count();
        // Every pair of the filter is in the metadata object, as a JSON string.
        q = q.push(&match dialect {
            Dialect::Sqlite => format!(
                " AND NOT EXISTS (SELECT 1 FROM json_each(${n}) f WHERE NOT EXISTS \
                 (SELECT 1 FROM json_each(d.metadata) m WHERE m.key = f.key \
                 AND m.type = 'text' AND m.value = f.value))"
            ),
            // Containment of an object of strings: each key's value is that string (an array
            // holding it does not match below the top level). One parse per row and no
            // subquery: 4-12 s became ~1 s over 1,000,000 devices of one model.
            Dialect::Postgres => format!(" AND d.metadata::jsonb @> ${n}::jsonb"),
        });
    }
    q.push(" ORDER BY d.id")
}

/// The selection's list-valued criteria as the JSON text the statement binds.
struct SelJson {
    client_ids: Option<String>,
    metadata: Option<String>,
}

impl SelJson {
    fn of(sel: &DeviceSelection) -> SelJson {
        SelJson {
            client_ids: sel.client_ids.as_deref().map(json_list),
            metadata: (!sel.metadata.is_empty())
                .then(|| serde_json::to_string(&sel.metadata).unwrap_or_else(|_| "{}".into())),
        }
    }
}

/// One changed device, for the feed and the events.
pub(super) struct Changed {
    pub(super) id: i64,
    pub(super) client_id: String,
    pub(super) model: Option<String>,
    pub(super) serials: Vec<String>,
    /// Index of its group.
    pub(super) change: usize,
}

/// The feed rows of a bulk change, a vector per column.
pub(super) struct FeedColumns {
    pub(super) scope: Vec<&'static str>,
    pub(super) action: Vec<&'static str>,
    pub(super) client_id: Vec<String>,
    /// JSON arrays of serials.
    pub(super) serials: Vec<String>,
    pub(super) reason: Vec<Option<&'static str>>,
}

impl Store {
    /// Applies `decide` (the lifecycle's plan for a device in a given state; None: that state
    /// does not change) to every device `sel` selects, in one transaction: device rows,
    /// certificates, keys marked compromised, one feed entry per changed device (gap-free, in
    /// device order), one application event per changed device, and one audit row (`audit`,
    /// detail: the counts) when anything changed. `dry_run`: only reads and counts.
    pub async fn apply_bulk_transition<F>(
        &self,
        sel: &DeviceSelection,
        at: i64,
        actor: &Actor,
        audit: BulkAudit,
        dry_run: bool,
        decide: F,
    ) -> Result<BulkOutcome, StoreError>
    where
        F: Fn(&Current) -> Option<Change>,
    {
        let json = SelJson::of(sel);
        if dry_run {
            let rows: Vec<Selected> = select_statement(self.dialect(), sel, &json)
                .fetch_all(&mut self.pools.read().await?)
                .await?;
            let mut plans: Vec<(DeviceState, bool)> = Vec::new();
            let mut changed = Vec::new();
            for r in &rows {
                let changes = match plans.iter().find(|p| p.0 == r.status) {
                    Some(p) => p.1,
                    None => {
                        let c = decide(&current(r.status)).is_some();
                        plans.push((r.status, c));
                        c
                    }
                };
                if changes {
                    changed.push(r.client_id.clone());
                }
            }
            return Ok(BulkOutcome {
                matched: rows.len() as u64,
                changed,
                ..BulkOutcome::default()
            });
        }
        let mut tx = self.pools.begin_write().await?;
        let dialect = tx.dialect();
        if dialect == Dialect::Postgres {
            // The statements touch many rows once each: compiling them costs more than it
            // saves (measured: ~0.6 s of a 100,000-device revoke).
            Stmt::new("SET LOCAL jit = off").execute(&mut tx).await?;
        }
        let rows: Vec<Selected> = select_statement(dialect, sel, &json)
            .fetch_all(&mut tx)
            .await?;
        let matched = rows.len() as u64;
        // The plan per state (asked once), and the ids of the devices in each state.
        let mut plans: Vec<(DeviceState, Option<Change>, Vec<i64>)> = Vec::new();
        for r in &rows {
            match plans.iter_mut().find(|g| g.0 == r.status) {
                Some(g) => g.2.push(r.id),
                None => plans.push((r.status, decide(&current(r.status)), vec![r.id])),
            }
        }
        let groups: Vec<(DeviceState, Change, Vec<i64>)> = plans
            .into_iter()
            .filter_map(|(state, change, ids)| Some((state, change?, ids)))
            .collect();
        let mut changed: Vec<Changed> = Vec::new();
        for (i, (state, change, ids)) in groups.iter().enumerate() {
            changed.extend(write_group(&mut tx, *state, change, ids, at, i).await?);
        }
        changed.sort_by_key(|c| c.id);
        if changed.is_empty() {
            tx.commit().await?;
            return Ok(BulkOutcome {
                matched,
                ..BulkOutcome::default()
            });
        }
        let last_seq = append_feed_entries(&mut tx, &groups, &changed, at).await?;
        let events: Vec<NewAppEvent> = changed
            .iter()
            .map(|c| app_event(&groups[c.change].1, c, at))
            .collect();
        append_app_events(&mut tx, &events).await?;
        let record = AuditRecord {
            detail: Some(format!("changed {} of {matched} matched", changed.len())),
            ..audit_ok(actor, audit.action, &audit.target, at)
        };
        insert_audit_on((&mut tx).into(), &record).await?;
        tx.commit().await?;
        Ok(BulkOutcome {
            matched,
            actions: changed
                .iter()
                .map(|c| groups[c.change].1.feed.action)
                .collect(),
            changed: changed.into_iter().map(|c| c.client_id).collect(),
            last_seq: Some(last_seq),
        })
    }
}

fn current(device: DeviceState) -> Current {
    Current {
        device,
        certificate: None,
    }
}

/// Writes one group's change: devices (those still in `state`), their certificates, their
/// keys. Returns the devices changed, with the serials that changed.
async fn write_group(
    tx: &mut Tx,
    state: DeviceState,
    change: &Change,
    ids: &[i64],
    at: i64,
    index: usize,
) -> Result<Vec<Changed>, StoreError> {
    let Some(d) = change.device else {
        return Err(StoreError::InvalidTransition(
            "a bulk change changes devices".into(),
        ));
    };
    let dialect = tx.dialect();
    if let Tx::Postgres(c) = tx {
        return super::bulk_postgres::write_group(c, state, d, change, ids, at, index).await;
    }
    let ids_json = serde_json::Value::from(ids.to_vec()).to_string();
    // Device rows first (lock order), and only those still in the group's state.
    // Without a revocation the device keeps its revocation time and reason.
    let rows: Vec<(i64, String, Option<String>)> = Stmt::new(format!(
        "UPDATE devices SET status = $1, revoked_at = COALESCE($2, revoked_at), \
         reason = COALESCE($3, reason) WHERE status = $4 AND id IN {} \
         RETURNING id, client_id, model",
        json_values(dialect, 5, true)
    ))
    .bind(d.status.as_str())
    .bind(d.revocation.map(|_| at))
    .bind(d.revocation.map(|r| r.as_str()))
    .bind(state.as_str())
    .bind(ids_json.as_str())
    .fetch_all(&mut *tx)
    .await?;
    let ids_json =
        serde_json::Value::from(rows.iter().map(|r| r.0).collect::<Vec<_>>()).to_string();
    let certs = &change.certificates;
    let from = json_list(
        &certs
            .from
            .iter()
            .map(|s| s.as_str().to_string())
            .collect::<Vec<_>>(),
    );
    let serials: Vec<(i64, String)> = Stmt::new(format!(
        "UPDATE certificates SET status = $1, revoked_at = $2, reason = $3 \
         WHERE status IN {} AND device_id IN {} RETURNING device_id, serial",
        json_values(dialect, 4, false),
        json_values(dialect, 5, true)
    ))
    .bind(certs.to.as_str())
    .bind(certs.reason.map(|_| at))
    .bind(certs.reason.map(|r| r.as_str()))
    .bind(from.as_str())
    .bind(ids_json.as_str())
    .fetch_all(&mut *tx)
    .await?;
    if change.compromise_keys {
        Stmt::new(format!(
            "INSERT INTO device_keys (spki_sha256, device_id, compromised_at) \
             SELECT DISTINCT c.spki_sha256, c.device_id, $1 FROM certificates c \
             WHERE c.spki_sha256 IS NOT NULL AND c.device_id IN {} \
             ON CONFLICT (spki_sha256) DO UPDATE SET \
             compromised_at = COALESCE(device_keys.compromised_at, excluded.compromised_at)",
            json_values(dialect, 2, true)
        ))
        .bind(at)
        .bind(ids_json.as_str())
        .execute(&mut *tx)
        .await?;
    }
    Ok(changed(rows, serials, index))
}

/// The changed devices of group `index`: the rows (id, ClientID, model) the devices' UPDATE
/// returned, each with its certificates' serials, sorted, from the (device id, serial) pairs
/// the certificates' UPDATE returned.
pub(super) fn changed(
    rows: Vec<(i64, String, Option<String>)>,
    serials: Vec<(i64, String)>,
    index: usize,
) -> Vec<Changed> {
    let mut by_device: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for (device, serial) in serials {
        by_device.entry(device).or_default().push(serial);
    }
    rows.into_iter()
        .map(|(id, client_id, model)| {
            let mut serials = by_device.remove(&id).unwrap_or_default();
            serials.sort();
            Changed {
                id,
                client_id,
                model,
                serials,
                change: index,
            }
        })
        .collect()
}

/// One feed entry per changed device, in `changed`'s order, seq = head + 1, + 2, ... under the
/// feed lock, in one statement (PostgreSQL: `bulk_postgres::insert_feed`); NOTIFY of the last
/// seq. Returns the last seq.
async fn append_feed_entries(
    tx: &mut Tx,
    groups: &[(DeviceState, Change, Vec<i64>)],
    changed: &[Changed],
    at: i64,
) -> Result<i64, StoreError> {
    tx.lock(Lock::Feed).await?;
    let mut cols = FeedColumns {
        scope: Vec::with_capacity(changed.len()),
        action: Vec::with_capacity(changed.len()),
        client_id: Vec::with_capacity(changed.len()),
        serials: Vec::with_capacity(changed.len()),
        reason: Vec::with_capacity(changed.len()),
    };
    for c in changed {
        let feed = &groups[c.change].1.feed;
        cols.scope.push(feed.scope.as_str());
        cols.action.push(feed.action.as_str());
        cols.client_id.push(c.client_id.clone());
        cols.serials.push(json_list(&c.serials));
        cols.reason.push(feed.reason.map(|r| r.as_str()));
    }
    match tx {
        Tx::Postgres(c) => super::bulk_postgres::insert_feed(c, &cols, at).await?,
        Tx::Sqlite(_) => {
            let rows = serde_json::Value::Array(
                (0..cols.scope.len())
                    .map(|i| {
                        serde_json::json!({
                            "scope": cols.scope[i],
                            "action": cols.action[i],
                            "client_id": cols.client_id[i],
                            "serials": cols.serials[i],
                            "reason": cols.reason[i],
                        })
                    })
                    .collect(),
            )
            .to_string();
            Stmt::new(
                "INSERT INTO feed (seq, scope, action, client_id, serials, reason, at) \
                 SELECT (SELECT COALESCE(MAX(seq), 0) FROM feed) + j.key + 1, \
                 json_extract(j.value, '$.scope'), json_extract(j.value, '$.action'), \
                 json_extract(j.value, '$.client_id'), json_extract(j.value, '$.serials'), \
                 json_extract(j.value, '$.reason'), $2 FROM json_each($1) AS j",
            )
            .bind(rows.as_str())
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
    }
    let (last,): (i64,) = Stmt::new("SELECT COALESCE(MAX(seq), 0) FROM feed")
        .fetch_one(&mut *tx)
        .await?;
    tx.notify(FEED_CHANNEL, &last.to_string()).await?;
    Ok(last)
}

/// The application event of one changed device: `revoked`, `suspended` or `resumed`, with the
/// reason (when the feed entry has one) and the serials that changed.
fn app_event(change: &Change, c: &Changed, at: i64) -> NewAppEvent {
    let kind = match change.feed.action {
        RevocationAction::Suspended => AppEventKind::Suspended,
        RevocationAction::Resumed => AppEventKind::Resumed,
        _ => AppEventKind::Revoked,
    };
    let mut data = serde_json::json!({ "serials": c.serials });
    if let Some(r) = change.feed.reason {
        data["reason"] = r.as_str().into();
    }
    NewAppEvent {
        kind,
        at,
        client_id: Some(c.client_id.clone()),
        model: c.model.clone(),
        data,
    }
}
