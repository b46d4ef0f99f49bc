//! The webhook delivery worker: off the request path, one per database (the store's lease),
//! so a slow or down receiver never slows a request.
//!
//! Each round (every second, or when the events' head moves): keep the lease, turn new events
//! into deliveries for each webhook that takes them, then deliver each webhook's deliveries in
//! event order. A webhook's oldest pending delivery blocks its later ones until it succeeds or
//! is given up after 24 h (`domain::webhooks::after_failure`), so a receiver sees one
//! webhook's events in id order, at least once. Webhooks are served concurrently: one down
//! receiver never delays another's.

use std::sync::Arc;
use std::time::Duration;

use devid_core::api::DeliveryState;
use ring::rand::{SecureRandom as _, SystemRandom};

use crate::ca::SensorKek;
use crate::domain::webhooks::{after_failure, seal_name, signature, wants};
use crate::routes::events::event_json;
use crate::store::{Attempt, Lease, Store, WebhookRow};
use crate::timefmt;

/// A round at least this often.
const ROUND: Duration = Duration::from_secs(1);
/// Rounds are at least this far apart.
const MIN_GAP: Duration = Duration::from_millis(200);
/// The worker lease: renewed each round, taken over by another process once it expired.
const LEASE_SECS: i64 = 30;
/// One attempt waits this long for an answer.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Events looked at per webhook and round.
const SCAN_BATCH: u32 = 1000;
/// Deliveries per webhook and round (the rest wait for the next round).
const DELIVERIES_PER_ROUND: usize = 100;

/// Starts the worker; it stops when `shutdown` turns true (giving its lease up). None when it
/// cannot start (no HTTP client).
pub fn spawn(
    store: Store,
    kek: Arc<SensorKek>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = match reqwest::Client::builder()
        .timeout(ATTEMPT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("devid-server/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhooks: cannot set up the HTTP client; no deliveries");
            return None;
        }
    };
    Some(tokio::spawn(run(
        Worker {
            store,
            kek,
            http,
            rng: SystemRandom::new(),
        },
        shutdown,
    )))
}

struct Worker {
    store: Store,
    kek: Arc<SensorKek>,
    http: reqwest::Client,
    rng: SystemRandom,
}

async fn run(w: Worker, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let holder = Lease::new_holder();
    let mut head = match w.store.subscribe_app_events().await {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!(error = %e, "webhooks: no event signal; polling each second");
            None
        }
    };
    loop {
        if *shutdown.borrow() {
            // Another process takes the deliveries over at once, not after the lease lapses.
            if let Err(e) = w.store.release_lease(Lease::Webhooks, &holder).await {
                tracing::warn!(error = %e, "webhooks: cannot give the lease up");
            }
            break;
        }
        if let Err(e) = round(&w, &holder).await {
            tracing::warn!(error = %e, "webhooks: delivery round failed");
        }
        // Rounds at most this often, however fast events come (one round takes them all).
        tokio::time::sleep(MIN_GAP).await;
        tokio::select! {
            _ = tokio::time::sleep(ROUND) => {}
            _ = shutdown.changed() => {}
            _ = async { match head.as_mut() {
                Some(h) => { let _ = h.changed().await; }
                None => std::future::pending().await,
            } } => {}
        }
    }
}

async fn round(w: &Worker, holder: &str) -> Result<(), crate::store::StoreError> {
    let hooks = w.store.webhooks().await?;
    // No webhook: nothing to hold the lease for (and no write per round).
    if hooks.is_empty()
        || !w
            .store
            .take_lease(Lease::Webhooks, holder, timefmt::now(), LEASE_SECS)
            .await?
    {
        return Ok(());
    }
    for hook in &hooks {
        w.store
            .enqueue_deliveries(hook, timefmt::now(), SCAN_BATCH, |e| wants(hook, e))
            .await?;
    }
    let results = futures::future::join_all(hooks.iter().map(|h| deliver_due(w, h))).await;
    results.into_iter().collect()
}

/// Delivers the webhook's due deliveries in event order, stopping at the first that fails.
async fn deliver_due(w: &Worker, hook: &WebhookRow) -> Result<(), crate::store::StoreError> {
    let secret = match w.kek.open(&seal_name(&hook.id), &hook.sealed_secret) {
        Ok(s) => s,
        Err(_) => {
            tracing::error!(webhook = %hook.id, "webhooks: the secret does not open with this KEK");
            return Ok(());
        }
    };
    for _ in 0..DELIVERIES_PER_ROUND {
        let Some((delivery, event)) = w.store.next_delivery(&hook.id).await? else {
            return Ok(());
        };
        let now = timefmt::now();
        if delivery.next_attempt_at > now {
            return Ok(());
        }
        let body = serde_json::to_vec(&event_json(&event)).unwrap_or_default();
        let answer = w
            .http
            .post(&hook.url)
            .header("content-type", "application/json")
            .header("devid-event-id", event.seq.to_string())
            .header("devid-signature", signature(&secret, now, &body))
            .body(body)
            .send()
            .await;
        let (status, error) = match answer {
            Ok(resp) => (Some(resp.status().as_u16()), None),
            Err(e) => (None, Some(without_url(e).to_string())),
        };
        let ok = status.is_some_and(|s| (200..300).contains(&s));
        let attempts = u32::try_from(delivery.attempts + 1).unwrap_or(u32::MAX);
        let (state, next_attempt_at) = if ok {
            (DeliveryState::Delivered, now)
        } else {
            let mut b = [0u8; 4];
            let _ = w.rng.fill(&mut b);
            let jitter = f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0);
            after_failure(
                attempts,
                delivery.first_attempt_at.unwrap_or(now),
                now,
                jitter,
            )
        };
        let error = error.or_else(|| (!ok).then(|| format!("HTTP {}", status.unwrap_or(0))));
        w.store
            .record_attempt(
                delivery.id,
                &Attempt {
                    at: now,
                    state,
                    next_attempt_at,
                    status,
                    error: if ok { None } else { error },
                },
            )
            .await?;
        match state {
            DeliveryState::Delivered => {}
            DeliveryState::Failed => {
                tracing::warn!(webhook = %hook.id, event = event.seq, "webhooks: delivery given up after 24 h");
            }
            DeliveryState::Pending => return Ok(()),
        }
    }
    Ok(())
}

/// A reqwest error without the URL (which may carry a receiver's token in its query).
fn without_url(e: reqwest::Error) -> reqwest::Error {
    e.without_url()
}
