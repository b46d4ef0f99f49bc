//! The device feed (revocations, suspensions, resumptions and `updated` settings entries;
//! the path keeps its historical name): paged (`GET /v1/revocations?since=N`) and live (Server-Sent Events).

use std::convert::Infallible;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use axum::Json;
use devid_core::api::{FeedEntry, FeedPage, RevocationScope};
use futures::Stream;
use serde::Deserialize;
use std::borrow::Cow;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, PartialSchema, ToSchema};
use utoipa_axum::routes;

use crate::app::{ApiQuery, AppState};
use crate::error::ApiError;
use crate::openapi::BadRequest;
use crate::routes::{sse, Guard, Routes, FOLLOWERS};
use crate::store::{FeedEntryRow, StoreError};
use crate::timefmt::rfc3339;

/// The event name of every feed entry on the stream.
const EVENT: &str = "revocation";

pub fn router() -> Routes {
    Routes::new()
        .add(FOLLOWERS, routes!(feed_page))
        .add(FOLLOWERS, routes!(feed_stream))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct PageQuery {
    /// Entries after this seq (default 0: from the start).
    #[serde(default)]
    since: i64,
    /// At most this many entries, 1 to 10,000 (default 1,000).
    limit: Option<u32>,
}

pub fn entry_json(e: &FeedEntryRow) -> FeedEntry {
    // A model-scoped entry keeps the model name where device entries keep the ClientID.
    let (client_id, model) = match e.scope {
        RevocationScope::Model => (String::new(), Some(e.client_id.clone())),
        _ => (e.client_id.clone(), None),
    };
    FeedEntry {
        seq: e.seq,
        scope: e.scope,
        action: e.action,
        client_id,
        serials: e.serials.clone(),
        reason: e.reason,
        at: rfc3339(e.at),
        model,
    }
}

/// Device feed entries (status and settings changes) after `since`, and the feed's head.
#[utoipa::path(
    get,
    path = "/v1/revocations",
    params(PageQuery),
    responses((status = 200, description = "Entries and the head", body = FeedPage), (status = 400, response = BadRequest))
)]
async fn feed_page(
    State(state): State<AppState>,
    guard: Guard,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<FeedPage>, ApiError> {
    guard.check()?;
    let limit = q.limit.unwrap_or(1000);
    if !(1..=10_000).contains(&limit) || q.since < 0 {
        return Err(ApiError::BadRequest(
            "since must be >= 0 and limit 1 to 10000".into(),
        ));
    }
    let (entries, head) = state.store.feed_since(q.since, limit).await?;
    Ok(Json(FeedPage {
        entries: entries.iter().map(entry_json).collect(),
        head,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct StreamQuery {
    /// Start after this seq (`Last-Event-ID` wins); absent: only new entries.
    since: Option<i64>,
}

/// The feed's entries.
struct Entries(AppState);

impl sse::Source for Entries {
    type Row = FeedEntryRow;

    async fn page(&self, after: i64, limit: u32) -> Result<Vec<FeedEntryRow>, StoreError> {
        Ok(self.0.store.feed_since(after, limit).await?.0)
    }

    fn event(&self, e: &FeedEntryRow) -> (i64, Event) {
        let data = serde_json::to_string(&entry_json(e)).unwrap_or_default();
        (e.seq, Event::default().event(EVENT).data(data))
    }
}

/// The live device feed, as Server-Sent Events.
///
/// Starts after `Last-Event-ID` (a reconnect), else after `?since=N`, else at the current
/// head (only new entries). Each event: `id: <seq>`, `event: revocation`, `data: <FeedEntry>`.
#[utoipa::path(
    get,
    path = "/v1/revocations/stream",
    params(
        StreamQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "The seq of the last event seen (decimal): the stream resumes after it"),
    ),
    responses(
        (status = 200, description = "The stream", content_type = "text/event-stream", body = FeedEvents),
        (status = 400, response = BadRequest),
    )
)]
async fn feed_stream(
    State(state): State<AppState>,
    guard: Guard,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let caller = guard.check()?;
    let last_event_id = sse::last_event_id(&headers)?;
    // Subscribe before reading the head: an entry committed in between still wakes us.
    let head = state.feed.subscribe();
    let after = match last_event_id.or(q.since) {
        Some(n) => n,
        None => state.store.feed_head().await?,
    };
    Ok(sse::stream(
        &state,
        &caller,
        Entries(state.clone()),
        after,
        head,
    ))
}

/// The live feed's events, as the `text/event-stream` response's schema: each event is
/// `id: <seq>`, `event: revocation` ([`EVENT`]), `data: <FeedEntry as JSON>`.
struct FeedEvents;

impl PartialSchema for FeedEvents {
    fn schema() -> RefOr<Schema> {
        sse::schema(&sse::Described {
            one: "a feed entry",
            id: "The entry's seq.",
            names: &[EVENT],
            data: &FeedEntry::name(),
            data_is: "The entry, a FeedEntry",
            each: "feed entry in seq order",
        })
    }
}

impl ToSchema for FeedEvents {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("FeedEvents")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((FeedEntry::name().into_owned(), FeedEntry::schema()));
        FeedEntry::schemas(schemas);
    }
}
