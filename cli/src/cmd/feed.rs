//! `devid revocations list` and `devid revocations watch` (Server-Sent Events, resumed with
//! Last-Event-ID after any disconnection).

use std::process::ExitCode;
use std::time::Duration;

use devid_core::api::{FeedEntry, FeedPage};
use devid_core::sse::SseParser;
use futures::StreamExt;
use reqwest::Method;

use crate::cli::{OutputFormat, RevocationsCommand};
use crate::client::Api;
use crate::error::{CliError, Exit, Result};
use crate::table::Table;

const HEADERS: [&str; 7] = [
    "seq",
    "at",
    "action",
    "scope",
    "client_id",
    "reason",
    "serials",
];

fn cells(e: &FeedEntry) -> Vec<String> {
    vec![
        e.seq.to_string(),
        e.at.clone(),
        format!("{:?}", e.action).to_lowercase(),
        format!("{:?}", e.scope).to_lowercase(),
        match (&e.model, e.client_id.is_empty()) {
            // A model-wide settings change names the model where device entries name a device.
            (Some(model), _) => format!("model:{model}"),
            (None, true) => "-".into(),
            (None, false) => e.client_id.clone(),
        },
        e.reason
            .map(|r| r.as_str().to_string())
            .unwrap_or("-".into()),
        if e.serials.is_empty() {
            "-".into()
        } else {
            e.serials.join(",")
        },
    ]
}

pub async fn run(api: &Api, out: OutputFormat, c: RevocationsCommand) -> Result<ExitCode> {
    match c {
        RevocationsCommand::List { since } => list(api, out, since).await,
        RevocationsCommand::Watch { since, count } => watch(api, out, since, count).await,
    }
}

async fn list(api: &Api, out: OutputFormat, since: i64) -> Result<ExitCode> {
    let mut entries = Vec::new();
    let mut after = since;
    let head = loop {
        let page: FeedPage = api
            .get_query(
                "/v1/revocations",
                &[("since", after.to_string()), ("limit", "1000".to_string())],
            )
            .await?;
        let last = page.entries.last().map(|e| e.seq);
        entries.extend(page.entries);
        match last {
            Some(seq) if seq < page.head && seq > after => after = seq,
            _ => break page.head,
        }
    };
    let page = FeedPage { entries, head };
    match out {
        OutputFormat::Json => super::print_json(&page),
        OutputFormat::Table => {
            let mut t = Table::new(&HEADERS);
            for e in &page.entries {
                t.row(cells(e));
            }
            let mut s = t.render();
            s.push_str(&format!("head: {}\n", page.head));
            super::print_text(&s)
        }
    }
}

/// The feed's head now: the sequence number of its newest entry (0 for an empty feed).
async fn feed_head(api: &Api) -> Result<i64> {
    let page: FeedPage = api
        .get_query(
            "/v1/revocations",
            &[("since", "0".to_string()), ("limit", "1".to_string())],
        )
        .await?;
    Ok(page.head)
}

async fn watch(
    api: &Api,
    out: OutputFormat,
    since: Option<i64>,
    count: Option<u64>,
) -> Result<ExitCode> {
    let since = match since {
        Some(s) => s,
        None => {
            // Start at the head as it is now, and say so: without it the command shows only a
            // header until the next revocation, which looks like a hang.
            let head = feed_head(api).await?;
            eprintln!(
                "following the feed after its head, sequence {head}: waiting for new entries \
                 (--since 0 replays it from the start)"
            );
            head
        }
    };
    let mut last_id: Option<String> = Some(since.to_string());
    let mut printed: u64 = 0;
    let mut backoff = Duration::from_millis(500);
    if out == OutputFormat::Table {
        super::emit(format!("{}\n", Table::new(&HEADERS).render().trim_end()).as_bytes())?;
    }
    if count == Some(0) {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        let mut rb = api
            .request(Method::GET, "/v1/revocations/stream")
            .header("Accept", "text/event-stream");
        if let Some(id) = &last_id {
            rb = rb.header("Last-Event-ID", id.as_str());
        }
        let resp = match rb.send().await {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                let err = api.error_from_response(r).await;
                if err.exit != Exit::Failed || err.status().is_some_and(|s| s < 500) {
                    return Err(err);
                }
                eprintln!("{}; reconnecting in {:?}", err.message, backoff);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
            Err(e) => {
                eprintln!(
                    "{}; reconnecting in {:?}",
                    api.transport_error(&e).message,
                    backoff
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        backoff = Duration::from_millis(500);
        let mut parser = SseParser::default();
        let mut stream = resp.bytes_stream();
        let reason = loop {
            match stream.next().await {
                Some(Ok(bytes)) => {
                    for ev in parser.push(&bytes) {
                        if ev.event.as_deref().is_some_and(|e| e != "revocation") {
                            if let Some(id) = ev.id {
                                last_id = Some(id);
                            }
                            continue;
                        }
                        let entry: FeedEntry = serde_json::from_str(&ev.data).map_err(|e| {
                            CliError::failed(format!("unexpected event from {}: {e}", api.base()))
                        })?;
                        last_id = Some(ev.id.unwrap_or_else(|| entry.seq.to_string()));
                        match out {
                            OutputFormat::Json => super::emit(
                                format!(
                                    "{}\n",
                                    serde_json::to_string(&entry).map_err(|e| {
                                        CliError::failed(format!("cannot encode JSON: {e}"))
                                    })?
                                )
                                .as_bytes(),
                            )?,
                            OutputFormat::Table => {
                                // Fixed-width columns would need the whole stream; print the row
                                // with two spaces between fields.
                                super::emit(format!("{}\n", cells(&entry).join("  ")).as_bytes())?;
                            }
                        }
                        printed += 1;
                        if count.is_some_and(|c| printed >= c) {
                            return Ok(ExitCode::SUCCESS);
                        }
                    }
                }
                Some(Err(e)) => {
                    break format!(
                        "lost the stream from {} ({})",
                        api.base(),
                        crate::client::transport_reason(&e)
                    )
                }
                None => break format!("{} closed the stream", api.base()),
            }
        };
        eprintln!("{reason}; reconnecting");
        tokio::time::sleep(backoff).await;
    }
}
