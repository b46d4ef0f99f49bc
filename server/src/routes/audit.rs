//! The audit log (admin and auditor).

use axum::extract::State;
use axum::Json;
use devid_core::api::{AuditEntry, AuditPage, AuditQuery};
use utoipa_axum::routes;

use crate::app::{ApiQuery, AppState};
use crate::error::ApiError;
use crate::openapi::BadRequest;
use crate::routes::devices::{decode_cursor, encode_cursor};
use crate::routes::{Guard, Routes, READERS};
use crate::timefmt::{self, rfc3339};

pub fn router() -> Routes {
    Routes::new().add(READERS, routes!(list_audit))
}

/// The audit log, oldest first, a page at a time: every change, and every refused call.
#[utoipa::path(
    get,
    path = "/v1/audit",
    params(AuditQuery),
    responses((status = 200, description = "A page of entries", body = AuditPage), (status = 400, response = BadRequest))
)]
async fn list_audit(
    State(state): State<AppState>,
    guard: Guard,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    guard.check()?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest("limit must be 1 to 1000".into()));
    }
    let since = q
        .since
        .as_deref()
        .map(|s| {
            timefmt::parse_rfc3339(s)
                .ok_or_else(|| ApiError::BadRequest(format!("since {s:?} is not an RFC 3339 time")))
        })
        .transpose()?;
    let after_id = q.cursor.as_deref().map(decode_cursor).transpose()?;
    let rows = state
        .store
        .list_audit(since, q.actor.as_deref(), after_id, limit + 1)
        .await?;
    let more = rows.len() > limit as usize;
    let rows = &rows[..rows.len().min(limit as usize)];
    Ok(Json(AuditPage {
        items: rows
            .iter()
            .map(|r| AuditEntry {
                id: r.id,
                at: rfc3339(r.record.at),
                actor_id: r.record.actor.id.clone(),
                actor_name: r.record.actor.name.clone(),
                action: r.record.action.clone(),
                target: r.record.target.clone(),
                outcome: r.record.outcome.clone(),
                detail: r.record.detail.clone(),
            })
            .collect(),
        next_cursor: if more {
            rows.last().map(|r| encode_cursor(r.id))
        } else {
            None
        },
    }))
}
