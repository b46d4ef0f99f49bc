//! The events for applications: paged (`GET /v1/events?since=N`) and live (Server-Sent Events,
//! `GET /v1/events/stream`). Both read the store's `app_events`, which every change appends to
//! in its own transaction; the stream wakes on the store's head signal (in process, and on
//! PostgreSQL every process's NOTIFY), so a missed signal delays an event but never loses it.

use std::borrow::Cow;
use std::convert::Infallible;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use axum::Json;
use devid_core::api::{AppEvent, AppEventKind, AppEventPage};
use devid_core::ModelName;
use futures::Stream;
use serde::Deserialize;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, PartialSchema, ToSchema};
use utoipa_axum::routes;

use crate::app::{ApiQuery, AppState};
use crate::error::ApiError;
use crate::openapi::BadRequest;
use crate::routes::{sse, Guard, Routes, APP_READERS};
use crate::store::{AppEventFilter, AppEventRow, StoreError};
use crate::timefmt::rfc3339;

pub fn router() -> Routes {
    Routes::new()
        .add(APP_READERS, routes!(events_page))
        .add(APP_READERS, routes!(events_stream))
}

/// A stored event as the API shows it.
pub fn event_json(e: &AppEventRow) -> AppEvent {
    AppEvent {
        id: e.seq,
        kind: e.kind,
        at: rfc3339(e.at),
        client_id: e.client_id.clone(),
        model: e.model.clone(),
        data: serde_json::from_str(&e.data).unwrap_or(serde_json::Value::Null),
    }
}

/// `kind=a,b` and `model=m` as a store filter; a clear error for an unknown kind or a model
/// name that breaks its rules.
fn filter(kind: Option<&str>, model: Option<&str>) -> Result<AppEventFilter, ApiError> {
    let mut kinds = Vec::new();
    for k in kind.unwrap_or("").split(',').filter(|k| !k.is_empty()) {
        kinds.push(AppEventKind::parse(k).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "unknown event kind {k:?}; kinds: {}",
                AppEventKind::ALL
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?);
    }
    let model = model
        .map(|m| ModelName::parse(m).map(ModelName::into_string))
        .transpose()
        .map_err(|e| ApiError::BadRequest(format!("model: {e}")))?;
    Ok(AppEventFilter {
        kinds,
        model,
        client_id: None,
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct PageQuery {
    /// Events after this id (default 0: from the oldest kept).
    #[serde(default)]
    since: i64,
    /// At most this many events, 1 to 10,000 (default 1,000).
    limit: Option<u32>,
    /// Only these kinds (comma-separated).
    kind: Option<String>,
    /// Only events about devices of this model.
    model: Option<String>,
}

/// Events after `since`, oldest first, filtered by kind and model.
#[utoipa::path(
    get,
    path = "/v1/events",
    params(PageQuery),
    responses((status = 200, description = "Events, oldest first", body = AppEventPage), (status = 400, response = BadRequest))
)]
async fn events_page(
    State(state): State<AppState>,
    guard: Guard,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<AppEventPage>, ApiError> {
    guard.check()?;
    let limit = q.limit.unwrap_or(1000);
    if !(1..=10_000).contains(&limit) || q.since < 0 {
        return Err(ApiError::BadRequest(
            "since must be >= 0 and limit 1 to 10000".into(),
        ));
    }
    let filter = filter(q.kind.as_deref(), q.model.as_deref())?;
    let rows = state
        .store
        .app_events_since(q.since, limit, &filter)
        .await?;
    let next_cursor = match rows.last() {
        Some(last) if rows.len() == limit as usize => Some(last.seq.to_string()),
        _ => None,
    };
    Ok(Json(AppEventPage {
        items: rows.iter().map(event_json).collect(),
        next_cursor,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct StreamQuery {
    /// Start after this id (`Last-Event-ID` wins); absent: only new events.
    since: Option<i64>,
    /// Only these kinds (comma-separated).
    kind: Option<String>,
    /// Only events about devices of this model.
    model: Option<String>,
}

/// The events the stream's filter takes.
struct Events {
    state: AppState,
    filter: AppEventFilter,
}

impl sse::Source for Events {
    type Row = AppEventRow;

    async fn page(&self, after: i64, limit: u32) -> Result<Vec<AppEventRow>, StoreError> {
        self.state
            .store
            .app_events_since(after, limit, &self.filter)
            .await
    }

    fn event(&self, e: &AppEventRow) -> (i64, Event) {
        let data = serde_json::to_string(&event_json(e)).unwrap_or_default();
        (e.seq, Event::default().event(e.kind.as_str()).data(data))
    }
}

/// The live events, as Server-Sent Events.
///
/// Starts after `Last-Event-ID` (a reconnect), else after `?since=N`, else at the current
/// head (only new events). Each event: `id: <id>`, `event: <kind>`, `data: <AppEvent>`.
#[utoipa::path(
    get,
    path = "/v1/events/stream",
    params(
        StreamQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "The id of the last event seen (decimal): the stream resumes after it"),
    ),
    responses(
        (status = 200, description = "The stream", content_type = "text/event-stream", body = AppEvents),
        (status = 400, response = BadRequest),
    )
)]
async fn events_stream(
    State(state): State<AppState>,
    guard: Guard,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let caller = guard.check()?;
    let last_event_id = sse::last_event_id(&headers)?;
    let filter = filter(q.kind.as_deref(), q.model.as_deref())?;
    // Subscribe before reading the head: an event committed in between still wakes us.
    let head = state.store.subscribe_app_events().await?;
    let after = match last_event_id.or(q.since) {
        Some(n) => n,
        None => state.store.app_events_head().await?,
    };
    let source = Events {
        state: state.clone(),
        filter,
    };
    Ok(sse::stream(&state, &caller, source, after, head))
}

/// The live events, as the `text/event-stream` response's schema.
struct AppEvents;

impl PartialSchema for AppEvents {
    fn schema() -> RefOr<Schema> {
        sse::schema(&sse::Described {
            one: "an event for applications",
            id: "The event's id.",
            names: AppEventKind::NAMES,
            data: &AppEvent::name(),
            data_is: "The event, an AppEvent",
            each: "event in id order",
        })
    }
}

impl ToSchema for AppEvents {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("AppEvents")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((AppEvent::name().into_owned(), AppEvent::schema()));
        AppEvent::schemas(schemas);
    }
}
