//! The fleet's health record as brokers' batches build it: per-device health rows, the
//! connections open now, the brokers, and the windows the event-driven checks count over. A
//! batch costs a bounded number of statements whatever its size (JSON-array binds), all in one
//! transaction with the app events and findings it makes.

use std::collections::HashMap;

use devid_core::api::{AppEventKind, CheckThresholds, DeviceState};
use sqlx::FromRow;

use super::app_events::append_app_events;
use super::findings::open_findings;
use super::json_binds::{json_rows, json_texts, to_json, Col};
use super::sql::{Dialect, Stmt, Tx};
use super::stored::Stored;
use super::{NewAppEvent, Store, StoreError};
use crate::domain::fleet::activity::ActivityCounts;
use crate::domain::fleet::checks::{self, Limits, Thresholds};
use crate::domain::fleet::{self as rules, Batch, Known, WindowCount};

#[derive(FromRow)]
struct KnownRow {
    client_id: String,
    model: Option<String>,
    #[sqlx(try_from = "Stored")]
    status: DeviceState,
}

#[derive(FromRow)]
struct ThresholdRow {
    model: String,
    thresholds: String,
}

#[derive(FromRow)]
struct CountRow {
    subject: String,
    recent: i64,
    hour: i64,
    nets: i64,
}

/// What one batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ingested {
    pub app_events: usize,
    pub findings_opened: usize,
}

/// Every model's thresholds, read on `tx`'s connection.
pub(crate) async fn thresholds_on(tx: &mut Tx) -> Result<Thresholds, StoreError> {
    let rows: Vec<ThresholdRow> = Stmt::new("SELECT model, thresholds FROM fleet_checks")
        .fetch_all(&mut *tx)
        .await?;
    let mut t = Thresholds::default();
    for r in rows {
        let parsed: CheckThresholds = serde_json::from_str(&r.thresholds)
            .map_err(|e| StoreError::Database(sqlx::Error::Decode(Box::new(e))))?;
        t.per_model.insert(r.model, Limits::of(&parsed));
    }
    Ok(t)
}

impl Store {
    /// Applies one broker batch received at `now`: the broker's row (a new `started_at`
    /// closes every connection it reported before), connections, health rows, the check
    /// windows, each named device's last seen and counts, the findings the batch's rows make
    /// true, and the `connected`, `disconnected`,
    /// `auth_failed` and `finding_opened` app events, in one transaction.
    pub async fn ingest_batch(&self, batch: &Batch, now: i64) -> Result<Ingested, StoreError> {
        let d = self.dialect();
        let mut tx = self.pools.begin_write().await?;
        let mut events: Vec<NewAppEvent> = Vec::new();
        if let Some(b) = &batch.broker {
            let before: Option<(i64,)> =
                Stmt::new("SELECT started_at FROM fleet_brokers WHERE name = $1")
                    .bind(b.name.as_str())
                    .fetch_optional(&mut tx)
                    .await?;
            Stmt::new(
                "INSERT INTO fleet_brokers (name, last_batch, started_at, max_staleness, \
                 feed_seq, connected) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO \
                 UPDATE SET last_batch = excluded.last_batch, started_at = excluded.started_at, \
                 max_staleness = excluded.max_staleness, feed_seq = excluded.feed_seq, \
                 connected = excluded.connected",
            )
            .bind(b.name.as_str())
            .bind(now)
            .bind(b.started_at)
            .bind(b.max_staleness)
            .bind(b.feed_seq)
            .bind(b.connected)
            .execute(&mut tx)
            .await?;
            if before.is_some_and(|(s,)| s != b.started_at) {
                let gone: Vec<(String, Option<String>)> = Stmt::new(
                    "DELETE FROM fleet_connections WHERE broker = $1 RETURNING client_id, \
                     (SELECT model FROM devices WHERE devices.client_id = fleet_connections.client_id)",
                )
                .bind(b.name.as_str())
                .fetch_all(&mut tx)
                .await?;
                events.extend(gone.into_iter().map(|(client_id, model)| NewAppEvent {
                    kind: AppEventKind::Disconnected,
                    at: b.started_at,
                    client_id: Some(client_id),
                    model,
                    data: serde_json::json!({"broker": b.name, "reason": "broker restarted"}),
                }));
            }
        }
        let mut ids: Vec<&str> = batch
            .events
            .iter()
            .map(|e| e.client_id.as_str())
            .chain(batch.counters.iter().map(|c| c.0.as_str()))
            .filter(|c| !c.is_empty())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let ids = to_json(&ids);
        let known: Vec<KnownRow> = Stmt::new(format!(
            "SELECT client_id, model, status FROM devices WHERE client_id IN ({})",
            json_texts(d, 1)
        ))
        .bind(ids.as_str())
        .fetch_all(&mut tx)
        .await?;
        let known: HashMap<String, Known> = known
            .into_iter()
            .map(|k| {
                let v = Known {
                    model: k.model,
                    status: k.status,
                };
                (k.client_id, v)
            })
            .collect();
        let open: Vec<(String, String)> = Stmt::new(format!(
            "SELECT broker, client_id FROM fleet_connections WHERE client_id IN ({})",
            json_texts(d, 1)
        ))
        .bind(ids.as_str())
        .fetch_all(&mut tx)
        .await?;
        let plan = rules::fold(batch, &known, &open);
        if !plan.closed.is_empty() {
            let closed: Vec<serde_json::Value> = plan
                .closed
                .iter()
                .map(|(b, c)| serde_json::json!({"broker": b, "client_id": c}))
                .collect();
            Stmt::new(format!(
                "DELETE FROM fleet_connections WHERE (broker, client_id) IN ({})",
                json_rows(d, 1, &[Col::Text("broker"), Col::Text("client_id")])
            ))
            .bind(to_json(&closed).as_str())
            .execute(&mut tx)
            .await?;
        }
        if !plan.opened.is_empty() {
            Stmt::new(format!(
                "INSERT INTO fleet_connections (broker, client_id, opened_at, address, serial) \
                 {} WHERE true ON CONFLICT (broker, client_id) DO UPDATE SET \
                 opened_at = excluded.opened_at, address = excluded.address, \
                 serial = excluded.serial",
                json_rows(
                    d,
                    1,
                    &[
                        Col::Text("broker"),
                        Col::Text("client_id"),
                        Col::Int("opened_at"),
                        Col::Text("address"),
                        Col::Text("serial"),
                    ]
                )
            ))
            .bind(to_json(&plan.opened).as_str())
            .execute(&mut tx)
            .await?;
        }
        if !plan.health.is_empty() {
            upsert_health(&mut tx, d, &plan.health).await?;
        }
        if !plan.seen.is_empty() {
            update_seen(&mut tx, d, &plan.seen).await?;
        }
        let mut opened = 0;
        if !plan.window.is_empty() || !plan.on_two_brokers.is_empty() {
            Stmt::new(format!(
                "INSERT INTO fleet_window (subject, at, detail) {}",
                json_rows(
                    d,
                    1,
                    &[Col::Text("subject"), Col::Int("at"), Col::Text("detail")]
                )
            ))
            .bind(to_json(&plan.window).as_str())
            .execute(&mut tx)
            .await?;
            let mut subjects: Vec<&str> = plan.window.iter().map(|w| w.subject.as_str()).collect();
            subjects.sort_unstable();
            subjects.dedup();
            let counts: Vec<CountRow> = Stmt::new(format!(
                "SELECT subject, \
                 COALESCE(SUM(CASE WHEN at > $2 THEN 1 ELSE 0 END), 0) AS recent, \
                 COUNT(*) AS hour, COUNT(DISTINCT detail) AS nets \
                 FROM fleet_window WHERE subject IN ({}) AND at > $3 GROUP BY subject",
                json_texts(d, 1)
            ))
            .bind(to_json(&subjects).as_str())
            .bind(now - checks::AUTH_WINDOW_SECS)
            .bind(now - checks::HOUR_SECS)
            .fetch_all(&mut tx)
            .await?;
            let counts: HashMap<String, WindowCount> = counts
                .into_iter()
                .map(|c| {
                    let w = WindowCount {
                        recent: c.recent,
                        hour: c.hour,
                        distinct: c.nets,
                    };
                    (c.subject, w)
                })
                .collect();
            let thresholds = thresholds_on(&mut tx).await?;
            let found = rules::event_findings(&plan, &counts, &known, &thresholds);
            let news = open_findings(&mut tx, &found, now).await?;
            opened = news.len();
            events.extend(plan.app_events);
            events.extend(news);
        } else {
            events.extend(plan.app_events);
        }
        append_app_events(&mut tx, &events).await?;
        tx.commit().await?;
        Ok(Ingested {
            app_events: events.len(),
            findings_opened: opened,
        })
    }

    /// Deletes app events older than `before` (unix seconds); how many.
    pub async fn delete_app_events_before(&self, before: i64) -> Result<u64, StoreError> {
        Ok(Stmt::new("DELETE FROM app_events WHERE at < $1")
            .bind(before)
            .execute(&mut self.pools.write().await?)
            .await?)
    }
}

/// One statement for every device row a batch names: last seen (never moved back), last
/// address with it, and the connect and failure counts.
async fn update_seen(
    tx: &mut Tx,
    d: Dialect,
    rows: &[rules::DeviceSeen],
) -> Result<(), StoreError> {
    let newer = "v.last_seen IS NOT NULL AND (devices.last_seen IS NULL \
                 OR v.last_seen >= devices.last_seen)";
    Stmt::new(format!(
        "UPDATE devices SET \
         last_seen = CASE WHEN {newer} THEN v.last_seen ELSE devices.last_seen END, \
         last_address = CASE WHEN {newer} THEN v.last_address ELSE devices.last_address END, \
         connect_count = devices.connect_count + v.connects, \
         auth_failure_count = devices.auth_failure_count + v.failures, \
         last_auth_failure = CASE WHEN v.last_failure IS NOT NULL AND \
           (devices.last_auth_failure IS NULL OR v.last_failure > devices.last_auth_failure) \
           THEN v.last_failure ELSE devices.last_auth_failure END \
         FROM ({}) AS v WHERE devices.client_id = v.client_id",
        json_rows(
            d,
            1,
            &[
                Col::Text("client_id"),
                Col::Int("last_seen"),
                Col::Text("last_address"),
                Col::Int("connects"),
                Col::Int("failures"),
                Col::Int("last_failure"),
            ]
        )
    ))
    .bind(to_json(&rows).as_str())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// One statement for every health row of a batch.
async fn upsert_health(
    tx: &mut Tx,
    d: Dialect,
    rows: &[rules::HealthUpdate],
) -> Result<(), StoreError> {
    let newer = |col: &str| {
        format!(
            "{col} = CASE WHEN excluded.connect_at IS NOT NULL AND (device_health.connect_at IS NULL \
             OR excluded.connect_at >= device_health.connect_at) THEN excluded.{col} ELSE device_health.{col} END"
        )
    };
    let newer_dis = |col: &str| {
        format!(
            "{col} = CASE WHEN excluded.disconnect_at IS NOT NULL AND (device_health.disconnect_at IS NULL \
             OR excluded.disconnect_at >= device_health.disconnect_at) THEN excluded.{col} ELSE device_health.{col} END"
        )
    };
    let sets = [
        "first_seen = COALESCE(device_health.first_seen, excluded.first_seen)".to_string(),
        newer("connect_address"),
        newer("connect_broker"),
        newer("connect_auth"),
        newer("connect_at"),
        newer_dis("disconnect_address"),
        newer_dis("disconnect_broker"),
        newer_dis("disconnect_at"),
        "sw_version = COALESCE(excluded.sw_version, device_health.sw_version)".to_string(),
        "published = device_health.published + excluded.published".to_string(),
        "refused = device_health.refused + excluded.refused".to_string(),
    ];
    // Each CASE reads device_health's values before the update (both backends evaluate SET
    // against the old row), so connect_at's own CASE may come last or first.
    let cols = [
        Col::Text("client_id"),
        Col::Int("first_seen"),
        Col::Int("connect_at"),
        Col::Text("connect_address"),
        Col::Text("connect_broker"),
        Col::Text("connect_auth"),
        Col::Int("disconnect_at"),
        Col::Text("disconnect_address"),
        Col::Text("disconnect_broker"),
        Col::Text("sw_version"),
        Col::Int("published"),
        Col::Int("refused"),
    ];
    Stmt::new(format!(
        "INSERT INTO device_health (client_id, first_seen, connect_at, connect_address, \
         connect_broker, connect_auth, disconnect_at, disconnect_address, disconnect_broker, \
         sw_version, published, refused) {} WHERE true ON CONFLICT (client_id) DO UPDATE SET {}",
        json_rows(d, 1, &cols),
        sets.join(", ")
    ))
    .bind(to_json(&rows).as_str())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A device's health row.
#[derive(Debug, Clone, FromRow)]
pub struct HealthRow {
    pub first_seen: Option<i64>,
    pub connect_at: Option<i64>,
    pub connect_address: Option<String>,
    pub connect_broker: Option<String>,
    pub connect_auth: Option<String>,
    pub disconnect_at: Option<i64>,
    pub disconnect_address: Option<String>,
    pub disconnect_broker: Option<String>,
    pub sw_version: Option<String>,
    pub published: i64,
    pub refused: i64,
}

/// What a device's health page reads besides its device row.
#[derive(Debug, Clone)]
pub struct DeviceHealthRows {
    pub health: Option<HealthRow>,
    /// Brokers it is connected to now.
    pub connected_on: Vec<String>,
    /// Failed authentications by refusal kind, over the app events kept.
    pub auth_failures: Vec<(String, i64)>,
}

/// The fleet's counts (see [`Store::fleet_counts`]).
#[derive(Debug, Clone, Default)]
pub struct FleetCounts {
    pub active: i64,
    pub suspended: i64,
    pub revoked: i64,
    pub connected_now: i64,
    pub never_seen: i64,
    pub brokers_live: i64,
    pub brokers_known: i64,
}

/// How many `device_counts` rows the summary reads before it folds them into one per pair.
const MAX_COUNT_ROWS: i64 = 256;

impl Store {
    /// PostgreSQL: replaces `device_counts`' rows by their sums, one row per pair, in one
    /// statement. Rows another transaction adds meanwhile are not seen, so not deleted; two
    /// folds at once each delete (and sum) only rows the other did not. SQLite keeps one row
    /// per pair already.
    async fn fold_device_counts(&self) -> Result<(), StoreError> {
        if self.is_postgres() {
            Stmt::new(
                "WITH gone AS (DELETE FROM device_counts RETURNING status, never_seen, n) \
                 INSERT INTO device_counts (status, never_seen, n) \
                 SELECT status, never_seen, SUM(n) FROM gone GROUP BY status, never_seen",
            )
            .execute(&mut self.pools.write().await?)
            .await?;
        }
        Ok(())
    }

    pub async fn device_health_rows(
        &self,
        client_id: &str,
    ) -> Result<DeviceHealthRows, StoreError> {
        let mut c = self.pools.read().await?;
        let health: Option<HealthRow> =
            Stmt::new("SELECT * FROM device_health WHERE client_id = $1")
                .bind(client_id)
                .fetch_optional(&mut c)
                .await?;
        let brokers: Vec<(String,)> =
            Stmt::new("SELECT broker FROM fleet_connections WHERE client_id = $1 ORDER BY broker")
                .bind(client_id)
                .fetch_all(&mut c)
                .await?;
        let refusal = if self.is_postgres() {
            "COALESCE(data::jsonb->>'refusal', 'unknown')"
        } else {
            "COALESCE(json_extract(data, '$.refusal'), 'unknown')"
        };
        let auth_failures: Vec<(String, i64)> = Stmt::new(format!(
            "SELECT {refusal} AS r, COUNT(*) FROM app_events WHERE client_id = $1 \
             AND kind = 'auth_failed' GROUP BY r ORDER BY r"
        ))
        .bind(client_id)
        .fetch_all(&mut c)
        .await?;
        Ok(DeviceHealthRows {
            health,
            connected_on: brokers.into_iter().map(|b| b.0).collect(),
            auth_failures,
        })
    }

    /// The fleet's counts as of `now`. Devices by status and never seen come from
    /// `device_counts`, which triggers on devices keep (a handful of rows whatever the fleet's
    /// size), connections and brokers from their own small tables.
    pub async fn fleet_counts(&self, now: i64) -> Result<FleetCounts, StoreError> {
        let mut c = self.pools.read().await?;
        let counts: Vec<(String, bool, i64, i64)> = Stmt::new(
            "SELECT status, never_seen, CAST(SUM(n) AS BIGINT), COUNT(*) FROM device_counts \
             GROUP BY status, never_seen",
        )
        .fetch_all(&mut c)
        .await?;
        let mut out = FleetCounts::default();
        let mut rows = 0;
        for (status, never_seen, n, r) in counts {
            match status.as_str() {
                "active" => out.active += n,
                "suspended" => out.suspended += n,
                _ => out.revoked += n,
            }
            if never_seen {
                out.never_seen += n;
            }
            rows += r;
        }
        let (connected,): (i64,) = Stmt::new(
            "SELECT COUNT(DISTINCT c.client_id) FROM fleet_connections c \
             LEFT JOIN fleet_brokers b ON b.name = c.broker \
             WHERE b.name IS NULL OR $1 - b.last_batch <= b.max_staleness",
        )
        .bind(now)
        .fetch_one(&mut c)
        .await?;
        out.connected_now = connected;
        let (live, known): (i64, i64) = Stmt::new(
            "SELECT COALESCE(SUM(CASE WHEN $1 - last_batch <= max_staleness THEN 1 ELSE 0 END), 0), \
             COUNT(*) FROM fleet_brokers",
        )
        .bind(now)
        .fetch_one(&mut c)
        .await?;
        out.brokers_live = live;
        out.brokers_known = known;
        drop(c);
        if rows > MAX_COUNT_ROWS {
            self.fold_device_counts().await?;
        }
        Ok(out)
    }

    /// A device's app events, newest first, with seq < `before`.
    pub async fn device_timeline(
        &self,
        client_id: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<super::AppEventRow>, StoreError> {
        Ok(Stmt::new(
            "SELECT seq, at, kind, client_id, model, data FROM app_events \
             WHERE client_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
        )
        .bind(client_id)
        .bind(before.unwrap_or(i64::MAX))
        .bind(super::clamp_limit(limit))
        .fetch_all(&mut self.pools.read().await?)
        .await?)
    }

    /// A model's stored thresholds (None: every default).
    pub async fn get_check_thresholds(
        &self,
        model: &str,
    ) -> Result<Option<CheckThresholds>, StoreError> {
        let row: Option<ThresholdRow> =
            Stmt::new("SELECT model, thresholds FROM fleet_checks WHERE model = $1")
                .bind(model)
                .fetch_optional(&mut self.pools.read().await?)
                .await?;
        row.map(|r| {
            serde_json::from_str(&r.thresholds)
                .map_err(|e| StoreError::Database(sqlx::Error::Decode(Box::new(e))))
        })
        .transpose()
    }

    /// Sets a model's thresholds, with `audit` in the same transaction.
    pub async fn put_check_thresholds(
        &self,
        model: &str,
        t: &CheckThresholds,
        audit: &super::AuditRecord,
    ) -> Result<(), StoreError> {
        let mut tx = self.pools.begin_write().await?;
        Stmt::new(
            "INSERT INTO fleet_checks (model, thresholds) VALUES ($1, $2) \
             ON CONFLICT (model) DO UPDATE SET thresholds = excluded.thresholds",
        )
        .bind(model)
        .bind(to_json(t).as_str())
        .execute(&mut tx)
        .await?;
        super::tokens::insert_audit_on(super::sql::Conn::from(&mut tx), audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The counts behind the console's plots (`domain::fleet::activity`): connects and failed
    /// authentications per hour from the app events, registrations per day, valid certificates
    /// per day of notAfter. Each is a range on an index (`app_events_at`, `devices_created_at`,
    /// `certificates_expiry`), grouped in the database.
    pub async fn fleet_activity(&self, now: i64) -> Result<ActivityCounts, StoreError> {
        use crate::domain::fleet::activity::{windows, DAY, HOUR};
        let (hours_from, days_from, exp_from, exp_to) = windows(now);
        let mut c = self.pools.read().await?;
        let hours: Vec<(i64, i64, i64)> = Stmt::new(
            "SELECT (at / $2) * $2 AS h, \
             SUM(CASE WHEN kind = 'connected' THEN 1 ELSE 0 END), \
             SUM(CASE WHEN kind = 'auth_failed' THEN 1 ELSE 0 END) \
             FROM app_events WHERE at >= $1 AND kind IN ('connected', 'auth_failed') \
             GROUP BY 1",
        )
        .bind(hours_from)
        .bind(HOUR)
        .fetch_all(&mut c)
        .await?;
        let registrations: Vec<(i64, i64)> = Stmt::new(
            "SELECT (created_at / $2) * $2 AS d, COUNT(*) FROM devices WHERE created_at >= $1 \
             GROUP BY 1",
        )
        .bind(days_from)
        .bind(DAY)
        .fetch_all(&mut c)
        .await?;
        let expiries: Vec<(i64, i64)> = Stmt::new(
            "SELECT (not_after / $3) * $3 AS d, COUNT(*) FROM certificates \
             WHERE status = 'good' AND not_after >= $1 AND not_after < $2 \
             GROUP BY 1",
        )
        .bind(exp_from)
        .bind(exp_to)
        .bind(DAY)
        .fetch_all(&mut c)
        .await?;
        Ok(ActivityCounts {
            hours,
            registrations,
            expiries,
        })
    }
}
