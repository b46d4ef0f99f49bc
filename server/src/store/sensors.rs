//! Sensors: which gateway relays which (the attachment's one transaction, whose rules
//! `domain::sensors::plan_attachment` decides), a gateway's sensors with their sealed keys, the
//! sensor KEK's check value, and what brokers report of readings (a fixed number of statements
//! per batch, whatever the number of sensors).

use sqlx::FromRow;

use devid_core::api::{DeviceKind, DeviceState, RevocationAction, RevocationScope};

use super::devices::{lock_device, DeviceKey};
use super::feed::append_feed;
use super::sql::{Arg, Conn, Lock, Stmt};
use super::stored::{seq_from_sql, seq_to_sql, Stored};
use super::tokens::insert_audit_on;
use super::{AuditRecord, FeedEntryRow, SensorReading, SensorRow, Store, StoreError};
use crate::domain::sensors::{check_rekey, plan_attachment, AttachmentChange, Named};

#[derive(FromRow)]
struct NamedRow {
    client_id: String,
    #[sqlx(try_from = "Stored")]
    kind: DeviceKind,
    #[sqlx(try_from = "Stored")]
    status: DeviceState,
    gateway: Option<String>,
}

#[derive(FromRow)]
struct GatewaySensorRow {
    client_id: String,
    #[sqlx(try_from = "Stored")]
    status: DeviceState,
    model: Option<String>,
    last_seen: Option<i64>,
    topic_policy: Option<String>,
    model_topic_policy: Option<String>,
    sealed_key: Vec<u8>,
    seq_floor: Option<i64>,
    accepted: i64,
}

impl Store {
    /// Records the sensor KEK's check value when the database has none, else compares it:
    /// [`StoreError::KekMismatch`] when this process's KEK is not the one that sealed the
    /// database's sensor keys.
    pub async fn check_sensor_kek(&self, check: &[u8; 32], at: i64) -> Result<(), StoreError> {
        let mut conn = self.pools.write().await?;
        Stmt::new(
            "INSERT INTO sensor_kek (id, check_value, created_at) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(check.as_slice())
        .bind(at)
        .execute(&mut conn)
        .await?;
        let (stored,): (Vec<u8>,) = Stmt::new("SELECT check_value FROM sensor_kek WHERE id = 1")
            .fetch_one(&mut conn)
            .await?;
        if stored != check {
            return Err(StoreError::KekMismatch);
        }
        Ok(())
    }

    /// Changes the sensors of `gateway` in one transaction: the new set is `change` applied to
    /// the set read under the lock (the whole set, or sensors added or taken away); the rules are asked of
    /// `domain::sensors::plan_attachment` with the rows as they are under the lock (an error
    /// changes nothing); sensors attached elsewhere move here, the gateway's others are
    /// detached; one audit row (`audit` with what changed as its detail) and an `updated` feed
    /// entry (scope device) per device the plan names. Returns the entries.
    pub async fn set_gateway_sensors(
        &self,
        gateway: &str,
        change: AttachmentChange<'_>,
        audit: &AuditRecord,
        at: i64,
    ) -> Result<Vec<FeedEntryRow>, StoreError> {
        let mut tx = self.pools.begin_write().await?;
        let d = tx.dialect();
        // One attachment change at a time across processes: each reads the sets it changes,
        // so an attach or detach computed from the set read here loses no concurrent change.
        tx.lock(Lock::Attachments).await?;
        let gw = lock_device(&mut tx, DeviceKey::ClientId(gateway)).await?;
        let current: Vec<(String,)> = Stmt::new(
            "SELECT d.client_id FROM sensors s JOIN devices d ON d.id = s.device_id \
             WHERE s.gateway_id = $1",
        )
        .bind(gw.id)
        .fetch_all(&mut tx)
        .await?;
        let current: Vec<String> = current.into_iter().map(|(c,)| c).collect();
        let wanted = change
            .wanted(&current)
            .map_err(|e| StoreError::Refused(Box::new(e)))?;
        let wanted = wanted.as_slice();
        let found: Vec<NamedRow> = if wanted.is_empty() {
            Vec::new()
        } else {
            let ids: Vec<Arg<'_>> = wanted.iter().map(Arg::from).collect();
            Stmt::new(
                "SELECT d.client_id, d.kind, d.status, g.client_id AS gateway FROM devices d \
                 LEFT JOIN sensors s ON s.device_id = d.id \
                 LEFT JOIN devices g ON g.id = s.gateway_id WHERE d.client_id IN (",
            )
            .list(d, &ids)
            .push(")")
            .fetch_all(&mut tx)
            .await?
        };
        let found: Vec<Named> = found
            .into_iter()
            .map(|r| Named {
                client_id: r.client_id,
                kind: r.kind,
                status: r.status,
                gateway: r.gateway,
            })
            .collect();
        let plan = plan_attachment(&gw, wanted, &found, &current)
            .map_err(|e| StoreError::Refused(Box::new(e)))?;
        if !plan.attach.is_empty() {
            let ids: Vec<Arg<'_>> = plan.attach.iter().map(Arg::from).collect();
            Stmt::new("UPDATE sensors SET gateway_id = ")
                .list(d, &[Arg::from(gw.id)])
                .push(", attached_at = ")
                .list(d, &[Arg::from(at)])
                .push(" WHERE device_id IN (SELECT id FROM devices WHERE client_id IN (")
                .list(d, &ids)
                .push("))")
                .execute(&mut tx)
                .await?;
        }
        if !plan.detach.is_empty() {
            let ids: Vec<Arg<'_>> = plan.detach.iter().map(Arg::from).collect();
            Stmt::new(
                "UPDATE sensors SET gateway_id = NULL, attached_at = NULL \
                 WHERE device_id IN (SELECT id FROM devices WHERE client_id IN (",
            )
            .list(d, &ids)
            .push("))")
            .execute(&mut tx)
            .await?;
        }
        let mut record = audit.clone();
        record.detail = Some(format!(
            "attached: {}; detached: {}",
            list_or_none(&plan.attach),
            list_or_none(&plan.detach)
        ));
        insert_audit_on(Conn::from(&mut tx), &record).await?;
        let mut entries = Vec::with_capacity(plan.updated.len());
        for subject in &plan.updated {
            entries.push(
                append_feed(
                    &mut tx,
                    RevocationScope::Device,
                    RevocationAction::Updated,
                    subject,
                    Vec::new(),
                    None,
                    at,
                )
                .await?,
            );
        }
        tx.commit().await?;
        Ok(entries)
    }

    /// Replaces sensor `client_id`'s sealed key in one transaction, under the device's row lock
    /// where `domain::sensors::check_rekey` is asked (an error changes nothing): the audit row
    /// and an `updated` feed entry (scope device) for the sensor, which is returned. The seq
    /// floor and counts stay.
    pub async fn rekey_sensor(
        &self,
        client_id: &str,
        sealed: &[u8],
        audit: &AuditRecord,
        at: i64,
    ) -> Result<FeedEntryRow, StoreError> {
        let mut tx = self.pools.begin_write().await?;
        let device = lock_device(&mut tx, DeviceKey::ClientId(client_id)).await?;
        check_rekey(&device).map_err(|e| StoreError::Refused(Box::new(e)))?;
        let n = Stmt::new("UPDATE sensors SET sealed_key = $1 WHERE device_id = $2")
            .bind(sealed)
            .bind(device.id)
            .execute(&mut tx)
            .await?;
        if n != 1 {
            return Err(StoreError::NotFound);
        }
        insert_audit_on(Conn::from(&mut tx), audit).await?;
        let entry = append_feed(
            &mut tx,
            RevocationScope::Device,
            RevocationAction::Updated,
            client_id,
            Vec::new(),
            None,
            at,
        )
        .await?;
        tx.commit().await?;
        Ok(entry)
    }

    /// The sensors attached to `gateway` (a ClientID), by ClientID: two statements, whatever
    /// their number.
    pub async fn gateway_sensors(&self, gateway: &str) -> Result<Vec<SensorRow>, StoreError> {
        let mut conn = self.pools.read().await?;
        let rows: Vec<GatewaySensorRow> = Stmt::new(
            "SELECT d.client_id, d.status, d.model, d.last_seen, d.topic_policy, \
             m.topic_policy AS model_topic_policy, s.sealed_key, s.seq_floor, s.accepted \
             FROM devices g JOIN sensors s ON s.gateway_id = g.id \
             JOIN devices d ON d.id = s.device_id LEFT JOIN models m ON m.name = d.model \
             WHERE g.client_id = $1 ORDER BY d.client_id",
        )
        .bind(gateway)
        .fetch_all(&mut conn)
        .await?;
        let refusals: Vec<(String, String, i64)> = Stmt::new(
            "SELECT d.client_id, r.reason, r.count FROM devices g \
             JOIN sensors s ON s.gateway_id = g.id JOIN devices d ON d.id = s.device_id \
             JOIN sensor_refusals r ON r.device_id = d.id WHERE g.client_id = $1",
        )
        .bind(gateway)
        .fetch_all(&mut conn)
        .await?;
        let mut by_sensor: std::collections::HashMap<
            String,
            std::collections::BTreeMap<String, i64>,
        > = std::collections::HashMap::new();
        for (cid, reason, n) in refusals {
            by_sensor.entry(cid).or_default().insert(reason, n);
        }
        Ok(rows
            .into_iter()
            .map(|r| SensorRow {
                refused: by_sensor.remove(&r.client_id).unwrap_or_default(),
                accepted: r.accepted,
                client_id: r.client_id,
                status: r.status,
                model: r.model,
                last_seen: r.last_seen,
                topic_policy: r.topic_policy,
                model_topic_policy: r.model_topic_policy,
                sealed_key: r.sealed_key,
                seq_floor: r.seq_floor.map_or(0, seq_from_sql),
            })
            .collect())
    }

    /// Applies brokers' reports of sensors' readings (folded per sensor): each sensor keeps
    /// the highest seq reported (`seq_floor`), adds the counts, and its last seen becomes its
    /// newest accepted reading; refusals are counted by reason. Reports naming a ClientID that
    /// is not a sensor are skipped. Three statements per chunk of sensors, in one transaction.
    /// Returns how many sensors were updated.
    pub async fn record_sensor_readings(
        &self,
        readings: &[SensorReading],
        at: i64,
    ) -> Result<usize, StoreError> {
        if readings.is_empty() {
            return Ok(0);
        }
        let d = self.dialect();
        let counters: Vec<[Arg<'_>; 5]> = readings
            .iter()
            .map(|r| {
                let refused: i64 = r.refused.values().sum();
                [
                    Arg::from(&r.client_id),
                    Arg::from((r.highest_seq > 0).then(|| seq_to_sql(r.highest_seq))),
                    Arg::from(r.accepted),
                    Arg::from(refused),
                    Arg::from((refused > 0).then_some(at)),
                ]
            })
            .collect();
        let seen: Vec<[Arg<'_>; 2]> = readings
            .iter()
            .filter_map(|r| Some([Arg::from(&r.client_id), Arg::from(r.last_accepted_at?)]))
            .collect();
        let refusals: Vec<[Arg<'_>; 3]> = readings
            .iter()
            .flat_map(|r| {
                r.refused
                    .iter()
                    .map(|(reason, n)| [Arg::from(&r.client_id), Arg::from(reason), Arg::from(*n)])
            })
            .collect();
        let mut updated = 0;
        let mut tx = self.pools.begin_write().await?;
        for chunk in d.chunks(&counters) {
            updated += Stmt::new(
                "UPDATE sensors SET \
                 seq_floor = CASE WHEN v.column2 IS NOT NULL AND (sensors.seq_floor IS NULL \
                   OR v.column2 > sensors.seq_floor) THEN v.column2 ELSE sensors.seq_floor END, \
                 accepted = sensors.accepted + v.column3, \
                 refused = sensors.refused + v.column4, \
                 last_refused_at = COALESCE(v.column5, sensors.last_refused_at) \
                 FROM (VALUES ",
            )
            .values(d, chunk)
            .push(") AS v, devices d WHERE d.client_id = v.column1 AND sensors.device_id = d.id")
            .execute(&mut tx)
            .await? as usize;
        }
        for chunk in d.chunks(&seen) {
            Stmt::new(
                "UPDATE devices SET last_seen = CASE WHEN devices.last_seen IS NULL \
                   OR v.column2 > devices.last_seen THEN v.column2 ELSE devices.last_seen END \
                 FROM (VALUES ",
            )
            .values(d, chunk)
            .push(") AS v WHERE devices.client_id = v.column1 AND devices.kind = 'sensor'")
            .execute(&mut tx)
            .await?;
        }
        for chunk in d.chunks(&refusals) {
            Stmt::new("INSERT INTO sensor_refusals (device_id, reason, count) SELECT d.id, v.column2, v.column3 FROM (VALUES ")
                .values(d, chunk)
                .push(
                    ") AS v JOIN devices d ON d.client_id = v.column1 WHERE d.kind = 'sensor' \
                     ON CONFLICT (device_id, reason) DO UPDATE SET \
                     count = sensor_refusals.count + excluded.count",
                )
                .execute(&mut tx)
                .await?;
        }
        tx.commit().await?;
        Ok(updated)
    }
}

fn list_or_none(ids: &[String]) -> String {
    if ids.is_empty() {
        "none".to_string()
    } else {
        ids.join(" ")
    }
}
