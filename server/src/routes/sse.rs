//! What the live streams share (the device feed's and the events for applications'): where a
//! stream starts (`Last-Event-ID`, else `?since=N`, else the head), a cursor that reads pages
//! after the last id it sent and waits on the store's head signal (with a poll in case a signal
//! is lost) or shutdown, the end of the stream when the caller's token goes, and the schema of
//! a `text/event-stream` response.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use tokio::sync::watch;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};

use crate::app::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::store::StoreError;

/// Even without a signal, a stream looks at the store this often.
const POLL_EVERY: Duration = Duration::from_secs(5);
/// A stream sends a keep-alive comment this often.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How many rows a stream reads from the store at a time.
const PAGE: u32 = 500;

/// What a stream reads: rows in id order, each sent as one event.
pub trait Source: Send + 'static {
    type Row: Send + 'static;

    /// At most `limit` rows after id `after`, oldest first.
    fn page(
        &self,
        after: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Self::Row>, StoreError>> + Send;

    /// The row's id and the event that carries it (the id is set by the stream).
    fn event(&self, row: &Self::Row) -> (i64, Event);
}

/// A reconnecting client's `Last-Event-ID` (decimal); a clear error when it is not one.
pub fn last_event_id(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim().parse::<i64>().map_err(|_| {
                ApiError::BadRequest("Last-Event-ID must be the id of an event (decimal)".into())
            })
        })
        .transpose()
}

struct Cursor<S: Source> {
    source: S,
    after: i64,
    buffer: VecDeque<S::Row>,
    head: watch::Receiver<i64>,
    shutdown: watch::Receiver<bool>,
}

/// The rows of `source` after `after` and every later one, as Server-Sent Events, until the
/// server shuts down or `caller`'s token is revoked or expires. `head` changes when rows may
/// have been added (subscribe to it before reading the head `after` comes from, so a row
/// committed in between still wakes the stream).
pub fn stream<S: Source>(
    state: &AppState,
    caller: &Caller,
    source: S,
    after: i64,
    head: watch::Receiver<i64>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let cursor = Cursor {
        source,
        after,
        buffer: VecDeque::new(),
        head,
        shutdown: state.shutdown.clone(),
    };
    let events = futures::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(row) = c.buffer.pop_front() {
                let (id, event) = c.source.event(&row);
                c.after = id;
                return Some((Ok(event.id(id.to_string())), c));
            }
            if *c.shutdown.borrow() {
                return None;
            }
            // Mark the signal seen before reading, so a commit after the read wakes us.
            c.head.borrow_and_update();
            match c.source.page(c.after, PAGE).await {
                Ok(rows) if !rows.is_empty() => {
                    c.buffer.extend(rows);
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "event stream: store read failed"),
            }
            tokio::select! {
                _ = c.head.changed() => {}
                _ = c.shutdown.changed() => {}
                _ = tokio::time::sleep(POLL_EVERY) => {}
            }
        }
    });
    let events = caller.guard_stream(state, events);
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// How a stream's events look, for its schema.
pub struct Described<'a> {
    /// What one event is (`"a feed entry"`).
    pub one: &'a str,
    /// What the id is (`"The entry's seq."`).
    pub id: &'a str,
    /// The event names it sends.
    pub names: &'a [&'a str],
    /// The schema its data holds (as one line of JSON).
    pub data: &'a str,
    /// What the data is (`"The entry, a FeedEntry"`).
    pub data_is: &'a str,
    /// What its events are, plural, in id order (`"feed entry in seq order"`).
    pub each: &'a str,
}

/// The schema of a stream's `text/event-stream` response.
pub fn schema(d: &Described<'_>) -> RefOr<Schema> {
    let event = ObjectBuilder::new()
        .description(Some(format!("One Server-Sent Event: {}.", d.one)))
        .property(
            "id",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[0-9]+$"))
                .description(Some(format!(
                    "{} Reconnect with `Last-Event-ID` set to the last one seen.",
                    d.id
                ))),
        )
        .property(
            "event",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(d.names.iter().copied())),
        )
        .property(
            "data",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .content_media_type("application/json")
                .content_schema(Some(Ref::from_schema_name(d.data)))
                .description(Some(format!("{} as one line of JSON.", d.data_is))),
        )
        .required("id")
        .required("event")
        .required("data");
    ArrayBuilder::new()
        .items(event)
        .description(Some(format!(
            "Server-Sent Events, one per {}, for as long as the connection lasts; a comment \
             line every {} s keeps it alive. The stream ends when the server shuts down or the \
             token is revoked or expires.",
            d.each,
            KEEP_ALIVE.as_secs()
        )))
        .into()
}
