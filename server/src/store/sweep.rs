//! The periodic sweep of the fleet checks: the time-driven ones (revoked_connected,
//! stale_broker, silent, never_seen, cert_expiring, ca_expiring) open and close, and the
//! event-driven ones (auth_failures, duplicate_client_id, shared_certificate) close when their
//! windows no longer hold them. Candidates come through indexes (time columns, open findings,
//! open connections), a bounded number per sweep, never a scan of every device.

use std::collections::{HashMap, HashSet};

use devid_core::api::{AppEventKind, CheckName, DeviceState};
use sqlx::FromRow;

use super::app_events::append_app_events;
use super::findings::{close_findings, open_findings, open_subjects, NewFinding};
use super::fleet::{json_texts, thresholds_on};
use super::sql::{Stmt, Tx};
use super::{NewAppEvent, Store, StoreError};
use crate::domain::fleet::checks::{self, Thresholds};
use crate::domain::fleet::{auth_address_subject, auth_client_subject, takeover_subject};

/// Opens what is true and closes what is open and no longer true, for a check whose true set
/// is known whole.
async fn reconcile(
    tx: &mut Tx,
    check: CheckName,
    truth: Vec<NewFinding>,
    now: i64,
    events: &mut Vec<NewAppEvent>,
) -> Result<(), StoreError> {
    let open = open_subjects(tx, check).await?;
    let true_now: HashSet<&str> = truth.iter().map(|f| f.subject.as_str()).collect();
    let gone: Vec<String> = open
        .iter()
        .filter(|s| !true_now.contains(s.as_str()))
        .cloned()
        .collect();
    events.extend(close_findings(tx, check, &gone, now).await?);
    let new: Vec<NewFinding> = truth
        .into_iter()
        .filter(|f| !open.contains(&f.subject))
        .collect();
    events.extend(open_findings(tx, &new, now).await?);
    Ok(())
}

/// Most candidates a time-driven check opens per sweep (the next sweep takes the rest).
const SWEEP_BATCH: i64 = 1000;

#[derive(FromRow)]
struct Candidate {
    client_id: String,
    model: Option<String>,
    t: Option<i64>,
}

/// The findings of `check` for the candidates whose time `t` lies more than their model's
/// `limit` before `now`; `detail` says the time (RFC 3339).
fn overdue(
    cands: Vec<Candidate>,
    check: CheckName,
    now: i64,
    limit: impl Fn(&Candidate) -> i64,
    detail: impl Fn(&str) -> String,
) -> Vec<NewFinding> {
    cands
        .into_iter()
        .filter(|c| c.t.is_some_and(|at| now - at > limit(c)))
        .map(|c| {
            let detail = detail(&crate::timefmt::rfc3339(c.t.unwrap_or(0)));
            NewFinding::new(
                check,
                &c.client_id,
                Some(c.client_id.clone()),
                c.model,
                detail,
            )
        })
        .collect()
}

/// An open `silent` finding with what closes it.
#[derive(FromRow)]
struct SilentOpen {
    subject: String,
    model: Option<String>,
    last_seen: Option<i64>,
    disconnect_at: Option<i64>,
    status: String,
    conns: i64,
}

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    pub opened: usize,
    pub closed: usize,
}

impl Store {
    /// Runs the time-driven checks as of `now` (the server runs this every 30 s): opens the
    /// findings that became true, closes those no longer true, forgets window rows older than
    /// an hour. Every query reads candidates through an index (time columns, open findings,
    /// open connections), never the whole device table.
    pub async fn sweep_fleet(&self, now: i64) -> Result<Swept, StoreError> {
        let mut tx = self.pools.begin_write().await?;
        let t = thresholds_on(&mut tx).await?;
        let mut events = Vec::new();

        // revoked_connected: a connection still open 10 s after the device's status change.
        let rows: Vec<(String, Option<String>, Option<i64>)> = Stmt::new(
            "SELECT c.client_id, d.model, COALESCE(d.revoked_at, \
             (SELECT MAX(f.at) FROM feed f WHERE f.client_id = d.client_id)) AS changed \
             FROM fleet_connections c JOIN devices d ON d.client_id = c.client_id \
             WHERE d.status <> 'active'",
        )
        .fetch_all(&mut tx)
        .await?;
        let truth = rows
            .into_iter()
            .filter(|(_, _, at)| at.is_none_or(|at| now - at >= checks::REVOKED_GRACE_SECS))
            .map(|(cid, model, _)| {
                NewFinding::new(
                    CheckName::RevokedConnected,
                    &cid,
                    Some(cid.clone()),
                    model,
                    "still connected after its revocation or suspension".into(),
                )
            })
            .collect();
        reconcile(
            &mut tx,
            CheckName::RevokedConnected,
            truth,
            now,
            &mut events,
        )
        .await?;

        // stale_broker: no batch for longer than its max staleness.
        let rows: Vec<(String, i64, i64)> =
            Stmt::new("SELECT name, last_batch, max_staleness FROM fleet_brokers")
                .fetch_all(&mut tx)
                .await?;
        let truth = rows
            .into_iter()
            .filter(|(_, last, max)| now - last > *max)
            .map(|(name, last, _)| {
                NewFinding::new(
                    CheckName::StaleBroker,
                    &name,
                    None,
                    None,
                    format!("no batch for {} s", now - last),
                )
            })
            .collect();
        reconcile(&mut tx, CheckName::StaleBroker, truth, now, &mut events).await?;

        // silent and never_seen: new candidates by time, open ones re-checked.
        let silent_min = t.min_of(|l| l.silent_after);
        let cands: Vec<Candidate> = Stmt::new(
            "SELECT d.client_id, d.model, d.last_seen AS t FROM devices d \
             LEFT JOIN device_health h ON h.client_id = d.client_id \
             WHERE d.last_seen IS NOT NULL AND d.last_seen < $1 AND d.status = 'active' \
             AND COALESCE(h.disconnect_at, 0) < $1 \
             AND NOT EXISTS (SELECT 1 FROM fleet_connections c WHERE c.client_id = d.client_id) \
             AND NOT EXISTS (SELECT 1 FROM findings f WHERE f.check_name = 'silent' \
               AND f.subject = d.client_id AND f.closed_at IS NULL) \
             ORDER BY d.last_seen DESC LIMIT $2",
        )
        .bind(now - silent_min)
        .bind(SWEEP_BATCH)
        .fetch_all(&mut tx)
        .await?;
        let new = overdue(
            cands,
            CheckName::Silent,
            now,
            |c| t.for_model(c.model.as_deref()).silent_after,
            |at| format!("not seen since {at}"),
        );
        events.extend(open_findings(&mut tx, &new, now).await?);
        let open: Vec<SilentOpen> = Stmt::new(
            "SELECT f.subject, d.model, d.last_seen, h.disconnect_at, \
             COALESCE(d.status, 'revoked') AS status, \
             (SELECT COUNT(*) FROM fleet_connections c WHERE c.client_id = f.subject) AS conns \
             FROM findings f LEFT JOIN devices d ON d.client_id = f.subject \
             LEFT JOIN device_health h ON h.client_id = f.subject \
             WHERE f.check_name = 'silent' AND f.closed_at IS NULL",
        )
        .fetch_all(&mut tx)
        .await?;
        let gone: Vec<String> = open
            .into_iter()
            .filter(|o| {
                let latest = o.last_seen.unwrap_or(0).max(o.disconnect_at.unwrap_or(0));
                o.conns > 0
                    || o.status != DeviceState::Active.as_str()
                    || now - latest <= t.for_model(o.model.as_deref()).silent_after
            })
            .map(|o| o.subject)
            .collect();
        events.extend(close_findings(&mut tx, CheckName::Silent, &gone, now).await?);

        let never_min = t.min_of(|l| l.never_seen);
        let cands: Vec<Candidate> = Stmt::new(
            "SELECT d.client_id, d.model, d.created_at AS t FROM devices d \
             WHERE d.last_seen IS NULL AND d.created_at < $1 AND d.status = 'active' \
             AND NOT EXISTS (SELECT 1 FROM findings f WHERE f.check_name = 'never_seen' \
               AND f.subject = d.client_id AND f.closed_at IS NULL) \
             ORDER BY d.created_at LIMIT $2",
        )
        .bind(now - never_min)
        .bind(SWEEP_BATCH)
        .fetch_all(&mut tx)
        .await?;
        let new = overdue(
            cands,
            CheckName::NeverSeen,
            now,
            |c| t.for_model(c.model.as_deref()).never_seen,
            |at| format!("registered {at} and never connected"),
        );
        events.extend(open_findings(&mut tx, &new, now).await?);
        let gone: Vec<(String,)> = Stmt::new(
            "SELECT f.subject FROM findings f LEFT JOIN devices d ON d.client_id = f.subject \
             WHERE f.check_name = 'never_seen' AND f.closed_at IS NULL \
             AND (d.client_id IS NULL OR d.last_seen IS NOT NULL OR d.status <> 'active')",
        )
        .fetch_all(&mut tx)
        .await?;
        let gone: Vec<String> = gone.into_iter().map(|g| g.0).collect();
        events.extend(close_findings(&mut tx, CheckName::NeverSeen, &gone, now).await?);

        expiries(&mut tx, &t, now, &mut events).await?;

        // The event-driven checks close when their window no longer holds them.
        close_windows(&mut tx, &t, now, &mut events).await?;
        Stmt::new("DELETE FROM fleet_window WHERE at <= $1")
            .bind(now - checks::HOUR_SECS)
            .execute(&mut tx)
            .await?;
        let swept = Swept {
            opened: events
                .iter()
                .filter(|e| e.kind == AppEventKind::FindingOpened)
                .count(),
            closed: events
                .iter()
                .filter(|e| e.kind == AppEventKind::FindingClosed)
                .count(),
        };
        append_app_events(&mut tx, &events).await?;
        tx.commit().await?;
        Ok(swept)
    }
}

/// Closes the open auth_failures, duplicate_client_id and shared_certificate findings whose
/// windows fell below their limits.
async fn close_windows(
    tx: &mut Tx,
    t: &Thresholds,
    now: i64,
    events: &mut Vec<NewAppEvent>,
) -> Result<(), StoreError> {
    let open: Vec<(String, String, Option<String>, Option<String>)> = Stmt::new(
        "SELECT check_name, subject, client_id, model FROM findings WHERE closed_at IS NULL \
         AND check_name IN ('auth_failures', 'duplicate_client_id', 'shared_certificate')",
    )
    .fetch_all(&mut *tx)
    .await?;
    if open.is_empty() {
        return Ok(());
    }
    let window_of = |check: &str, subject: &str, cid: &Option<String>| match check {
        "auth_failures" if cid.is_some() => auth_client_subject(subject),
        "auth_failures" => auth_address_subject(subject),
        "duplicate_client_id" => takeover_subject(subject),
        _ => crate::domain::fleet::serial_subject(subject),
    };
    let subjects: Vec<String> = open
        .iter()
        .map(|(c, s, cid, _)| window_of(c, s, cid))
        .collect();
    let counts: Vec<(String, i64, i64, i64)> = Stmt::new(format!(
        "SELECT subject, COALESCE(SUM(CASE WHEN at > $2 THEN 1 ELSE 0 END), 0), COUNT(*), \
         COUNT(DISTINCT detail) FROM fleet_window WHERE subject IN ({}) AND at > $3 \
         GROUP BY subject",
        json_texts(tx.dialect(), 1)
    ))
    .bind(
        serde_json::to_string(&subjects)
            .unwrap_or_default()
            .as_str(),
    )
    .bind(now - checks::AUTH_WINDOW_SECS)
    .bind(now - checks::HOUR_SECS)
    .fetch_all(&mut *tx)
    .await?;
    let counts: HashMap<String, (i64, i64, i64)> = counts
        .into_iter()
        .map(|(s, a, b, c)| (s, (a, b, c)))
        .collect();
    let cids: Vec<&str> = open
        .iter()
        .filter(|o| o.0 == "duplicate_client_id")
        .map(|o| o.1.as_str())
        .collect();
    let brokers: Vec<(String, i64)> = Stmt::new(format!(
        "SELECT client_id, COUNT(*) FROM fleet_connections WHERE client_id IN ({}) \
         GROUP BY client_id",
        json_texts(tx.dialect(), 1)
    ))
    .bind(serde_json::to_string(&cids).unwrap_or_default().as_str())
    .fetch_all(&mut *tx)
    .await?;
    let brokers: HashMap<String, i64> = brokers.into_iter().collect();
    let mut gone: HashMap<CheckName, Vec<String>> = HashMap::new();
    for (check, subject, cid, model) in &open {
        let (recent, hour, nets) = counts
            .get(&window_of(check, subject, cid))
            .copied()
            .unwrap_or_default();
        let l = t.for_model(model.as_deref());
        let (name, holds) = match check.as_str() {
            "auth_failures" => (
                CheckName::AuthFailures,
                checks::reached(recent, l.auth_failures),
            ),
            "duplicate_client_id" => (
                CheckName::DuplicateClientId,
                checks::reached(hour, l.takeovers_per_hour)
                    || brokers.get(subject).copied().unwrap_or(0) > 1,
            ),
            _ => (
                CheckName::SharedCertificate,
                checks::reached(nets, l.networks_per_hour),
            ),
        };
        if !holds {
            gone.entry(name).or_default().push(subject.clone());
        }
    }
    for (check, subjects) in gone {
        events.extend(close_findings(tx, check, &subjects, now).await?);
    }
    Ok(())
}

/// cert_expiring (the device's current certificate within its model's threshold of notAfter;
/// the partial index `certificates_expiry`) and ca_expiring (the active issuing CA within 180
/// days).
async fn expiries(
    tx: &mut Tx,
    t: &Thresholds,
    now: i64,
    events: &mut Vec<NewAppEvent>,
) -> Result<(), StoreError> {
    let widest = t.max_of(|l| l.cert_expiring);
    let cands: Vec<Candidate> = Stmt::new(
        "SELECT d.client_id, d.model, c.not_after AS t FROM certificates c \
         JOIN devices d ON d.id = c.device_id AND d.current_serial = c.serial \
         WHERE c.status = 'good' AND c.not_after < $1 AND d.status = 'active' \
         AND NOT EXISTS (SELECT 1 FROM findings f WHERE f.check_name = 'cert_expiring' \
           AND f.subject = d.client_id AND f.closed_at IS NULL) \
         ORDER BY c.not_after LIMIT $2",
    )
    .bind(now.saturating_add(widest))
    .bind(SWEEP_BATCH)
    .fetch_all(&mut *tx)
    .await?;
    let new: Vec<NewFinding> = cands
        .into_iter()
        .filter(|c| {
            c.t.is_some_and(|at| at - now < t.for_model(c.model.as_deref()).cert_expiring)
        })
        .map(|c| {
            let detail = format!(
                "certificate expires {}",
                crate::timefmt::rfc3339(c.t.unwrap_or(0))
            );
            NewFinding::new(
                CheckName::CertExpiring,
                &c.client_id,
                Some(c.client_id.clone()),
                c.model,
                detail,
            )
        })
        .collect();
    events.extend(open_findings(tx, &new, now).await?);
    let open: Vec<Candidate> = Stmt::new(
        "SELECT f.subject AS client_id, d.model, \
         (SELECT c.not_after FROM certificates c WHERE c.serial = d.current_serial \
           AND c.status = 'good' AND d.status = 'active') AS t \
         FROM findings f LEFT JOIN devices d ON d.client_id = f.subject \
         WHERE f.check_name = 'cert_expiring' AND f.closed_at IS NULL",
    )
    .fetch_all(&mut *tx)
    .await?;
    let gone: Vec<String> = open
        .into_iter()
        .filter(|c| {
            c.t.is_none_or(|at| at - now >= t.for_model(c.model.as_deref()).cert_expiring)
        })
        .map(|c| c.client_id)
        .collect();
    events.extend(close_findings(tx, CheckName::CertExpiring, &gone, now).await?);

    let cas: Vec<(String, i64)> =
        Stmt::new("SELECT id, not_after FROM issuing_cas WHERE status = 'active'")
            .fetch_all(&mut *tx)
            .await?;
    let truth = cas
        .into_iter()
        .filter(|(_, not_after)| not_after - now < checks::CA_EXPIRING_SECS)
        .map(|(id, not_after)| {
            NewFinding::new(
                CheckName::CaExpiring,
                &id,
                None,
                None,
                format!(
                    "issuing CA {id} expires {}",
                    crate::timefmt::rfc3339(not_after)
                ),
            )
        })
        .collect();
    reconcile(tx, CheckName::CaExpiring, truth, now, events).await
}
