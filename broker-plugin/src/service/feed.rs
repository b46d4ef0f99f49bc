//! The device feed: catch up with `GET /v1/revocations?since=N`, then follow
//! `/v1/revocations/stream` (SSE, resumed with `Last-Event-ID`); on any error, back off and
//! catch up again. The CA set is fetched after each catch-up and after each `issuing_ca` entry
//! (a rotation or a revocation), before the entries that follow are applied.

#![deny(unsafe_code)]

use super::*;
use crate::ca_set::CA_SET_FILE;

pub(super) async fn feed_loop(ctx: Arc<Ctx>) {
    let mut backoff = Duration::from_millis(200);
    let mut was_up = true;
    let mut caught_up_once = false;
    loop {
        match follow_feed(&ctx, &mut caught_up_once).await {
            Ok(()) => {
                backoff = Duration::from_millis(200);
            }
            Err(e) => {
                if was_up {
                    ctx.log(
                        LogLevel::Warning,
                        format!("devid: revocation feed unavailable: {e}; retrying"),
                    );
                }
                was_up = false;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        }
        if !was_up {
            ctx.log(
                LogLevel::Info,
                "devid: revocation feed reachable again".into(),
            );
            was_up = true;
        }
    }
}

/// One round: catch up, then follow the stream until it ends or fails. The first catch-up
/// since the plugin started is logged: from then on the revocation state is current.
async fn follow_feed(ctx: &Ctx, caught_up_once: &mut bool) -> Result<(), String> {
    catch_up(ctx).await?;
    refresh_ca_set(ctx).await?;
    let since = lock(&ctx.shared).revocations.seq;
    if !*caught_up_once {
        *caught_up_once = true;
        ctx.log(
            LogLevel::Info,
            format!("devid: caught up with the revocation feed at sequence {since}"),
        );
    }
    let resp = ctx
        .http
        .get(ctx.url("/v1/revocations/stream"))
        .header("Last-Event-ID", since.to_string())
        .header("Accept", "text/event-stream")
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("stream: HTTP {}", resp.status()));
    }
    ctx.mark_contact();
    let mut body = resp.bytes_stream();
    let mut parser = SseParser::default();
    let mut alive = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            chunk = body.next() => {
                let chunk = match chunk {
                    None => return Err("stream closed by the service".into()),
                    Some(Err(e)) => return Err(format!("stream: {e}")),
                    Some(Ok(c)) => c,
                };
                for ev in parser.push(&chunk) {
                    if ev.event.as_deref().unwrap_or("message") != "revocation" {
                        continue;
                    }
                    let entry: FeedEntry = serde_json::from_str(&ev.data)
                        .map_err(|e| format!("stream: bad entry: {e}"))?;
                    if ctx.apply_entries(std::slice::from_ref(&entry)) {
                        // Entries were skipped: fetch them with a catch-up.
                        return Err("stream skipped entries; catching up".into());
                    }
                    if entry.scope == RevocationScope::IssuingCa {
                        refresh_ca_set(ctx).await?;
                    }
                }
            }
            _ = alive.tick() => ctx.mark_contact(),
        }
    }
}

async fn catch_up(ctx: &Ctx) -> Result<(), String> {
    loop {
        let since = lock(&ctx.shared).revocations.seq;
        let resp = ctx
            .http
            .get(ctx.url(&format!("/v1/revocations?since={since}&limit=1000")))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("catch-up: HTTP {}", resp.status()));
        }
        let page: FeedPage = resp.json().await.map_err(|e| format!("catch-up: {e}"))?;
        ctx.apply_entries(&page.entries);
        let now = lock(&ctx.shared).revocations.seq;
        if page.entries.is_empty() || now >= page.head {
            if now < page.head {
                return Err(format!(
                    "catch-up: service head is {} but it returned nothing after {now}",
                    page.head
                ));
            }
            ctx.mark_contact();
            return Ok(());
        }
    }
}

/// Fetches the CA set (`GET /v1/ca`); when it changed, persists it in `state_dir` and hands it
/// to the broker thread.
async fn refresh_ca_set(ctx: &Ctx) -> Result<(), String> {
    let resp = ctx
        .http
        .get(ctx.url("/v1/ca"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| format!("CA set: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("CA set: HTTP {}", resp.status()));
    }
    let text = resp.text().await.map_err(|e| format!("CA set: {e}"))?;
    if lock_ca(ctx).as_deref() == Some(text.as_str()) {
        return Ok(());
    }
    let set = CaSet::from_pem(&text, &ctx.config.trust_anchor_der)?;
    if let Err(e) = state::write_atomic(&ctx.config.state_dir, CA_SET_FILE, text.as_bytes()) {
        ctx.log(
            LogLevel::Warning,
            format!("devid: cannot persist the CA set: {e}"),
        );
    }
    *lock_ca(ctx) = Some(text);
    let _ = ctx.out.send(FromService::CaSet(set));
    Ok(())
}

fn lock_ca(ctx: &Ctx) -> MutexGuard<'_, Option<String>> {
    // Only this task writes it, one whole value at a time.
    ctx.ca_set.lock().unwrap_or_else(|p| p.into_inner())
}
