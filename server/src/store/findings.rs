//! Findings of the fleet checks: opened (at most one open per check and subject, the unique
//! partial index `findings_open`) and closed with their `finding_opened`/`finding_closed` app
//! events in the same transaction; reads. The sweep of the time-driven checks is `sweep`.

use std::collections::HashSet;

use devid_core::api::{AppEventKind, CheckName, Severity};
use sqlx::FromRow;

use super::json_binds::{json_rows, json_texts, Col};
use super::sql::{Stmt, Tx};
use super::stored::Stored;
use super::{clamp_limit, NewAppEvent, Store, StoreError};
use crate::domain::fleet::checks::severity;

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

pub(crate) const FINDING_COLS: &str =
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
pub(crate) async fn open_subjects(
    tx: &mut Tx,
    check: CheckName,
) -> Result<HashSet<String>, StoreError> {
    let rows: Vec<(String,)> =
        Stmt::new("SELECT subject FROM findings WHERE check_name = $1 AND closed_at IS NULL")
            .bind(check.as_str())
            .fetch_all(&mut *tx)
            .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

impl Store {
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
