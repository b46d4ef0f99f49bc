//! The device feed (revocations, suspensions, resumptions and `updated` settings entries;
//! the path keeps its historical name): paged (`GET /v1/revocations?since=N`) and live (Server-Sent Events).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use devid_core::api::{FeedEntry, FeedPage, RevocationScope};
use futures::Stream;
use serde::Deserialize;
use std::borrow::Cow;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{IntoParams, PartialSchema, ToSchema};
use utoipa_axum::routes;

use crate::app::{ApiQuery, AppState};
use crate::error::ApiError;
use crate::openapi::BadRequest;
use crate::routes::{Guard, Routes, FOLLOWERS};
use crate::store::FeedEntryRow;
use crate::timefmt::rfc3339;

/// Even without a signal, a stream looks at the store this often (belt and braces for a lost
/// NOTIFY).
const POLL_EVERY: Duration = Duration::from_secs(5);
/// A stream sends a keep-alive comment this often.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
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

struct Cursor {
    state: AppState,
    after: i64,
    buffer: VecDeque<FeedEntryRow>,
    head: tokio::sync::watch::Receiver<i64>,
    shutdown: tokio::sync::watch::Receiver<bool>,
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
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim()
                .parse::<i64>()
                .map_err(|_| ApiError::BadRequest("Last-Event-ID must be a sequence number".into()))
        })
        .transpose()?;
    let after = match last_event_id.or(q.since) {
        Some(n) => n,
        None => state.store.feed_head().await?,
    };
    let cursor = Cursor {
        head: state.feed.subscribe(),
        shutdown: state.shutdown.clone(),
        state: state.clone(),
        after,
        buffer: VecDeque::new(),
    };
    let events = futures::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(e) = c.buffer.pop_front() {
                c.after = e.seq;
                let data = serde_json::to_string(&entry_json(&e)).unwrap_or_default();
                let event = Event::default()
                    .id(e.seq.to_string())
                    .event(EVENT)
                    .data(data);
                return Some((Ok(event), c));
            }
            if *c.shutdown.borrow() {
                return None;
            }
            match c.state.store.feed_since(c.after, 500).await {
                Ok((entries, _)) if !entries.is_empty() => {
                    c.buffer.extend(entries);
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "revocation stream: store read failed"),
            }
            tokio::select! {
                _ = c.head.changed() => {}
                _ = c.shutdown.changed() => {}
                _ = tokio::time::sleep(POLL_EVERY) => {}
            }
        }
    });
    // The stream ends when the caller's token is revoked or expires.
    let events = caller.guard_stream(&state, events);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// The live feed's events, as the `text/event-stream` response's schema: each event is
/// `id: <seq>`, `event: revocation` ([`EVENT`]), `data: <FeedEntry as JSON>`.
struct FeedEvents;

impl PartialSchema for FeedEvents {
    fn schema() -> RefOr<Schema> {
        let event = ObjectBuilder::new()
            .description(Some("One Server-Sent Event: a feed entry."))
            .property(
                "id",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^[0-9]+$"))
                    .description(Some(
                        "The entry's seq. Reconnect with `Last-Event-ID` set to the last one seen.",
                    )),
            )
            .property(
                "event",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some([EVENT])),
            )
            .property(
                "data",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .content_media_type("application/json")
                    .content_schema(Some(Ref::from_schema_name(FeedEntry::name())))
                    .description(Some("The entry, a FeedEntry as one line of JSON.")),
            )
            .required("id")
            .required("event")
            .required("data");
        ArrayBuilder::new()
            .items(event)
            .description(Some(format!(
                "Server-Sent Events, one per feed entry in seq order, for as long as the \
                 connection lasts; a comment line every {} s keeps it alive. The stream ends \
                 when the server shuts down or the token is revoked or expires.",
                KEEP_ALIVE.as_secs()
            )))
            .into()
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
