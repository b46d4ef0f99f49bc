//! Findings of the fleet checks: opened (at most one open per check and subject, the unique
//! partial index `findings_open`) and closed with their `finding_opened`/`finding_closed` app
//! events in the same transaction; the periodic sweep of the time-driven checks; reads.

use std::collections::{HashMap, HashSet};

use devid_core::api::{AppEventKind, CheckName, DeviceState, Severity};
use sqlx::FromRow;

use super::app_events::append_app_events;
use super::fleet::{json_rows, json_texts, thresholds_on, Col};
use super::sql::{Stmt, Tx};
use super::stored::Stored;
use super::{clamp_limit, NewAppEvent, Store, StoreError};
use crate::domain::fleet::checks::{self, severity};
use crate::domain::fleet::{auth_address_subject, auth_client_subject, takeover_subject};

/// A finding to open.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NewFinding {
    #[serde(rename = "check_name", serialize_with = "as_str")]
    pub check: CheckName,
    #[serde(serialize_with = "severity_str")]
    pub severity: Severity,
    pub subject: String,
    pub client_id: Option<String>,
    pub model: Option<String>,
    pub detail: String,
}

fn as_str<S: serde::Serializer>(c: &CheckName, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(c.as_str())
}

fn severity_str<S: serde::Serializer>(v: &Severity, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.as_str())
}

impl NewFinding {
    /// A finding of `check` with the check's severity.
    pub fn new(
        check: CheckName,
        subject: &str,
        client_id: Option<String>,
        model: Option<String>,
        detail: String,
    ) -> Self {
        NewFinding {
            check,
            severity: severity(check),
            subject: subject.to_string(),
            client_id,
            model,
            detail,
        }
    }
}

/// A stored finding.
#[derive(Debug, Clone, FromRow)]
pub struct FindingRow {
    pub id: i64,
    #[sqlx(try_from = "Stored")]
    pub check_name: CheckName,
    #[sqlx(try_from = "Stored")]
    pub severity: Severity,
    pub subject: String,
    pub client_id: Option<String>,
    pub model: Option<String>,
    pub opened_at: i64,
    pub closed_at: Option<i64>,
    pub detail: String,
}

const FINDING_COLS: &str =
    "id, check_name, severity, subject, client_id, model, opened_at, closed_at, detail";

fn finding_event(kind: AppEventKind, f: &FindingRow, at: i64) -> NewAppEvent {
    NewAppEvent {
        kind,
        at,
        client_id: f.client_id.clone(),
        model: f.model.clone(),
        data: serde_json::json!({"finding_id": f.id, "check": f.check_name.as_str(),
            "severity": f.severity.as_str(), "subject": f.subject, "detail": f.detail}),
    }
}

/// Opens `found` at `at` (one statement; those already open stay as they are) and returns the
/// `finding_opened` events of the new ones.
pub(crate) async fn open_findings(
    tx: &mut Tx,
    found: &[NewFinding],
    at: i64,
) -> Result<Vec<NewAppEvent>, StoreError> {
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let mut seen = HashSet::new();
    let found: Vec<&NewFinding> = found
        .iter()
        .filter(|f| seen.insert((f.check, f.subject.clone())))
        .collect();
    let rows: Vec<FindingRow> = Stmt::new(format!(
        "INSERT INTO findings (check_name, severity, subject, client_id, model, detail, opened_at) \
         SELECT check_name, severity, subject, client_id, model, detail, $2 FROM ({}) AS n \
         WHERE true ON CONFLICT DO NOTHING RETURNING {FINDING_COLS}",
        json_rows(
            tx.dialect(),
            1,
            &[
                Col::Text("check_name"),
                Col::Text("severity"),
                Col::Text("subject"),
                Col::Text("client_id"),
                Col::Text("model"),
                Col::Text("detail"),
            ]
        )
    ))
    .bind(serde_json::to_string(&found).unwrap_or_default().as_str())
    .bind(at)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .iter()
        .map(|f| finding_event(AppEventKind::FindingOpened, f, at))
        .collect())
}

/// Closes the open findings of `check` about `subjects` at `at`; their `finding_closed` events.
pub(crate) async fn close_findings(
    tx: &mut Tx,
    check: CheckName,
    subjects: &[String],
    at: i64,
) -> Result<Vec<NewAppEvent>, StoreError> {
    if subjects.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<FindingRow> = Stmt::new(format!(
        "UPDATE findings SET closed_at = $2 WHERE closed_at IS NULL AND check_name = $3 \
         AND subject IN ({}) RETURNING {FINDING_COLS}",
        json_texts(tx.dialect(), 1)
    ))
    .bind(serde_json::to_string(subjects).unwrap_or_default().as_str())
    .bind(at)
    .bind(check.as_str())
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .iter()
        .map(|f| finding_event(AppEventKind::FindingClosed, f, at))
        .collect())
}

/// Subjects of the open findings of `check`.
async fn open_subjects(tx: &mut Tx, check: CheckName) -> Result<HashSet<String>, StoreError> {
    let rows: Vec<(String,)> =
        Stmt::new("SELECT subject FROM findings WHERE check_name = $1 AND closed_at IS NULL")
            .bind(check.as_str())
            .fetch_all(&mut *tx)
            .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

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
        let new: Vec<NewFinding> = cands
            .into_iter()
            .filter(|c| {
                c.t.is_some_and(|seen| now - seen > t.for_model(c.model.as_deref()).silent_after)
            })
            .map(|c| {
                let detail = format!(
                    "not seen since {}",
                    crate::timefmt::rfc3339(c.t.unwrap_or(0))
                );
                NewFinding::new(
                    CheckName::Silent,
                    &c.client_id,
                    Some(c.client_id.clone()),
                    c.model,
                    detail,
                )
            })
            .collect();
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
        let new: Vec<NewFinding> = cands
            .into_iter()
            .filter(|c| {
                c.t.is_some_and(|at| now - at > t.for_model(c.model.as_deref()).never_seen)
            })
            .map(|c| {
                let detail = format!(
                    "registered {} and never connected",
                    crate::timefmt::rfc3339(c.t.unwrap_or(0))
                );
                NewFinding::new(
                    CheckName::NeverSeen,
                    &c.client_id,
                    Some(c.client_id.clone()),
                    c.model,
                    detail,
                )
            })
            .collect();
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

    /// Findings newest first, after `cursor` (an id), filtered.
    pub async fn list_findings(
        &self,
        filter: &FindingFilter,
        cursor: Option<i64>,
        limit: u32,
    ) -> Result<Vec<FindingRow>, StoreError> {
        Ok(Stmt::new(format!(
            "SELECT {FINDING_COLS} FROM findings WHERE id < $1 \
             AND ($2 = '' OR check_name = $2) AND ($3 = '' OR severity = $3) \
             AND ($4 = '' OR model = $4) AND ($5 = '' OR client_id = $5) \
             AND ($6 = 'all' OR ($6 = 'open' AND closed_at IS NULL) \
                  OR ($6 = 'closed' AND closed_at IS NOT NULL)) \
             ORDER BY id DESC LIMIT $7"
        ))
        .bind(cursor.unwrap_or(i64::MAX))
        .bind(filter.check.map_or("", |c| c.as_str()))
        .bind(filter.severity.map_or("", |c| c.as_str()))
        .bind(filter.model.as_deref().unwrap_or(""))
        .bind(filter.client_id.as_deref().unwrap_or(""))
        .bind(filter.state)
        .bind(clamp_limit(limit))
        .fetch_all(&mut self.pools.read().await?)
        .await?)
    }

    /// Open findings by check and severity (the partial index `findings_open_by_check`).
    pub async fn open_finding_counts(&self) -> Result<Vec<(CheckName, Severity, i64)>, StoreError> {
        let rows: Vec<(String, String, i64)> = Stmt::new(
            "SELECT check_name, severity, COUNT(*) FROM findings WHERE closed_at IS NULL \
             GROUP BY check_name, severity ORDER BY check_name, severity",
        )
        .fetch_all(&mut self.pools.read().await?)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(c, s, n)| Some((CheckName::parse(&c)?, Severity::parse(&s)?, n)))
            .collect())
    }
}

/// Which findings a reader wants. `state` is `open`, `closed` or `all`.
#[derive(Debug, Clone)]
pub struct FindingFilter {
    pub check: Option<CheckName>,
    pub severity: Option<Severity>,
    pub model: Option<String>,
    pub client_id: Option<String>,
    pub state: &'static str,
}

/// Closes the open auth_failures, duplicate_client_id and shared_certificate findings whose
/// windows fell below their limits.
async fn close_windows(
    tx: &mut Tx,
    t: &checks::Thresholds,
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
