//! Server-Sent Event streams as the tests read them: the device feed's and the app events'.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use reqwest::StatusCode;
use serde_json::Value;

use super::Server;

/// One event of a stream: its `id`, its `event` line if it has one, and its JSON `data`.
#[derive(Debug)]
pub struct SseEvent {
    pub id: i64,
    pub event: Option<String>,
    pub data: Value,
}

/// Opens the stream at `path` (with its query) as `token`, resuming after `last_event_id` if
/// given; returns the response once its headers arrived, after checking they are a stream's.
pub async fn open_sse(
    server: &Server,
    path: &str,
    token: &str,
    last_event_id: Option<i64>,
) -> reqwest::Response {
    let mut req = server.client.get(server.url(path)).bearer_auth(token);
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id.to_string());
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    resp
}

/// Reads events from `resp` until `n` arrived or `timeout` passed. An event without an id or
/// without JSON data (a keep-alive comment) is skipped.
pub async fn read_sse(resp: reqwest::Response, n: usize, timeout: Duration) -> Vec<SseEvent> {
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut stream = resp.bytes_stream();
    let deadline = Instant::now() + timeout;
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = match tokio::time::timeout(left, stream.next()).await {
            Ok(Some(Ok(c))) => c,
            _ => break,
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (None, None, None);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                }
                if let Some(v) = line.strip_prefix("event:") {
                    event = Some(v.trim().to_string());
                }
                if let Some(v) = line.strip_prefix("data:") {
                    data = serde_json::from_str(v.trim()).ok();
                }
            }
            if let (Some(id), Some(data)) = (id, data) {
                out.push(SseEvent { id, event, data });
            }
        }
    }
    out
}
