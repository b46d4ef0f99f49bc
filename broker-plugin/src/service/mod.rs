//! The background thread: everything that talks to devid-server. It never calls into Mosquitto;
//! it updates the shared state and hands work to the broker thread through a channel that the
//! TICK event drains.
//!
//! Inside the thread a current-thread tokio runtime runs three jobs:
//! - the device feed (revocations and `updated` settings entries): catch up with `GET /v1/revocations?since=N`, then follow
//!   `/v1/revocations/stream` (SSE, resumed with `Last-Event-ID`); on any error, back off and
//!   start again from the persisted seq. While the stream is open the service counts as reachable.
//! - the CA set: `GET /v1/ca` at each catch-up and after each `issuing_ca` feed entry, persisted
//!   in `state_dir` and handed to the broker thread when it changed (`crate::ca_set`).
//! - device status: fetch `GET /v1/devices/{id}/status` when the broker thread asks.
//! - sensor keys: fetch `GET /v1/devices/{gateway}/sensors/keys` when the broker thread asks
//!   (a device authenticated, or the feed changed its sensors).
//! - events: batch connection events, per-sensor counts and per-device PUBLISH counters and
//!   `POST /v1/events` them about once a second, each batch with the broker's heartbeat, and at
//!   least every 10 s even when nothing happened; each sensor report also updates the persisted highest accepted seqs
//!   (`sensors.json` in `state_dir`, one atomic write per report, never per message).

#![deny(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use devid_core::api::{
    BrokerHeartbeat, ConnectionEvent, DeviceCounters, DeviceStatus, EventBatch, FeedEntry,
    FeedPage, RevocationAction, RevocationScope,
};
use devid_core::sse::SseParser;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};

use crate::ca_set::CaSet;
use crate::config::{Config, ConfigError};
use crate::engine::{SensorMaterial, SensorTally};
use crate::state::{self, Applied, Recheck, RevocationState};

mod feed;
mod sensors;
use sensors::{fetch_sensors, rfc3339, sensor_report, Pending};

/// Broker thread -> service thread.
#[derive(Debug)]
pub enum ToService {
    FetchStatus(String),
    /// Fetch the keys of the sensors attached to this gateway.
    FetchSensors(String),
    Event(ConnectionEvent),
    /// Per-sensor counts since the last report, with each sensor's highest accepted seq.
    Sensors(Vec<SensorTally>),
    /// A device's renewal request, to relay to the service.
    Renew(RenewJob),
    /// PUBLISHes accepted and refused per ClientID since the previous handoff.
    Counters(Vec<DeviceCounters>),
}

/// A renewal request as the broker thread checked it: the connection's own ClientID and
/// certificate serial, the CSR, the re-key proof, the Correlation Data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewJob {
    pub key: crate::engine::ConnKey,
    pub client_id: String,
    pub serial: String,
    pub csr: Vec<u8>,
    pub proof: Option<Vec<u8>>,
    pub correlation: Vec<u8>,
}

/// Service thread -> broker thread (drained in TICK).
#[derive(Debug, PartialEq, Eq)]
pub enum FromService {
    /// Re-check the connections of this device/these serials against the state; kick the ones
    /// that no longer pass.
    Recheck(Recheck),
    /// A device's settings (topic policy, allow-list, message authentication) changed: fetch
    /// the status again of the connections it concerns.
    Updated(Updated),
    /// The answer to a renewal request, to publish to that client.
    Renewed {
        key: crate::engine::ConnKey,
        reply: crate::engine::RenewReply,
    },
    /// A line for the broker log (the background thread may not call mosquitto_log_printf).
    Log(LogLevel, String),
    /// The sensors attached to a gateway, with their keys (the service's whole answer).
    SensorKeys {
        gateway: String,
        sensors: Vec<SensorMaterial>,
    },
    /// The service's CA set changed (or was read for the first time): the mutual-TLS path
    /// chains client certificates through it from now on.
    CaSet(CaSet),
}

/// What an `updated` feed entry is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Updated {
    /// One device (scope device).
    Device(String),
    /// Every device of a model (scope model).
    Model(String),
}

impl Updated {
    /// The update an entry announces, if it is an `updated` entry.
    pub fn of(e: &FeedEntry) -> Option<Updated> {
        if e.action != RevocationAction::Updated {
            return None;
        }
        match e.scope {
            RevocationScope::Model => e.model.clone().map(Updated::Model),
            RevocationScope::Device | RevocationScope::Certificate => {
                (!e.client_id.is_empty()).then(|| Updated::Device(e.client_id.clone()))
            }
            RevocationScope::IssuingCa => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Info,
    Notice,
    Warning,
    Error,
}

/// State shared by both threads. Locked briefly, never across a network call or a broker call.
#[derive(Debug, Default)]
pub struct Shared {
    pub revocations: RevocationState,
    /// Unix seconds of the last successful contact with the service.
    pub last_contact: Option<u64>,
    /// Open authenticated connections, as the broker thread last counted them (heartbeat).
    pub connected: u64,
}

pub fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panic while holding the lock leaves consistent data (each update is a single apply);
    // keep going rather than take the broker down.
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// Most events kept while the service is unreachable; the oldest are dropped beyond this.
const MAX_PENDING_EVENTS: usize = 10_000;
/// Most events per POST (the API's limit is 1,000), and most PUBLISH counter entries.
const BATCH: usize = 1_000;
/// A batch (empty if need be) leaves at least this often: the service's sign of life.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);

pub struct Handle {
    pub to_service: mpsc::Sender<ToService>,
    pub from_service: std::sync::mpsc::Receiver<FromService>,
    shutdown: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Handle {
    /// Stops the thread and waits for it (called from plugin cleanup).
    pub fn stop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Ctx {
    config: Config,
    http: reqwest::Client,
    shared: Arc<Mutex<Shared>>,
    out: std::sync::mpsc::Sender<FromService>,
    /// Highest accepted seq per sensor, as persisted in `state_dir` (only grows).
    sensor_counters: Mutex<BTreeMap<String, u64>>,
    /// When the plugin started (RFC 3339), for the heartbeat.
    started_at: String,
    /// The CA set as last handed to the broker thread (PEM), to hand over changes only.
    ca_set: Mutex<Option<String>>,
}

impl Ctx {
    fn log(&self, level: LogLevel, msg: String) {
        let _ = self.out.send(FromService::Log(level, msg));
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.config.service_url, path)
    }

    fn mark_contact(&self) {
        let now = state::unix_now();
        lock(&self.shared).last_contact = Some(now);
        if let Err(e) = state::save_contact(&self.config.state_dir, now) {
            self.log(
                LogLevel::Warning,
                format!("devid: cannot persist contact time: {e}"),
            );
        }
    }

    fn persist(&self) {
        let snapshot = lock(&self.shared).revocations.clone();
        if let Err(e) = snapshot.save(&self.config.state_dir) {
            self.log(
                LogLevel::Error,
                format!("devid: cannot persist revocation state: {e}"),
            );
        }
    }

    /// Applies feed entries; returns whether a gap was seen.
    fn apply_entries(&self, entries: &[FeedEntry]) -> bool {
        let mut gap = false;
        let mut rechecks = Vec::new();
        let mut updates = Vec::new();
        {
            let mut g = lock(&self.shared);
            for e in entries {
                if let Applied::Changed { recheck, gap: g2 } = g.revocations.apply(e) {
                    gap |= g2;
                    match Updated::of(e) {
                        // Not a revocation: the broker thread re-fetches the statuses, and the
                        // re-check follows each fresh status.
                        Some(u) => updates.push(u),
                        None => rechecks.push(recheck),
                    }
                }
            }
        }
        if !rechecks.is_empty() || !updates.is_empty() {
            self.persist();
            for r in rechecks {
                let _ = self.out.send(FromService::Recheck(r));
            }
            for u in updates {
                let _ = self.out.send(FromService::Updated(u));
            }
        }
        gap
    }
}

fn http_client(config: &Config) -> Result<reqwest::Client, StartError> {
    // The plugin never touches the process-wide rustls provider: Mosquitto is not our process.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(
            config.trust_anchor_der.clone(),
        ))
        .map_err(|e| {
            StartError::Config(ConfigError(format!(
                "trust anchor unusable for TLS to the service: {e}"
            )))
        })?;
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut headers = reqwest::header::HeaderMap::new();
    let mut auth = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", config.token))
        .map_err(|_| {
            StartError::Config(ConfigError(
                "the token holds characters not allowed in an HTTP header".into(),
            ))
        })?;
    auth.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, auth);
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .default_headers(headers)
        .connect_timeout(Duration::from_secs(3))
        .no_proxy()
        .build()
        .map_err(|e| StartError::Tls(e.to_string()))
}

/// Why the background thread could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("HTTP client (TLS) setup: {0}")]
    Tls(String),
    #[error("cannot start the service runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot start the service thread: {0}")]
    Thread(std::io::Error),
}

/// Starts the background thread. The caller has loaded the cached state into `shared` and the
/// persisted sensor counters into `sensor_counters`.
pub fn start(
    config: Config,
    shared: Arc<Mutex<Shared>>,
    sensor_counters: BTreeMap<String, u64>,
) -> Result<Handle, StartError> {
    let http = http_client(&config)?;
    let (to_service, rx) = mpsc::channel(MAX_PENDING_EVENTS);
    let (out, from_service) = std::sync::mpsc::channel();
    let (shutdown, shutdown_rx) = watch::channel(false);
    let ctx = Arc::new(Ctx {
        config,
        http,
        shared,
        out,
        sensor_counters: Mutex::new(sensor_counters),
        started_at: rfc3339(state::unix_now()),
        ca_set: Mutex::new(None),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    let thread = std::thread::Builder::new()
        .name("devid-service".into())
        .spawn(move || {
            runtime.block_on(run(ctx, rx, shutdown_rx));
            // Do not let a stuck DNS lookup (a blocking task) hold up the broker's shutdown.
            runtime.shutdown_timeout(Duration::from_secs(1));
        })
        .map_err(StartError::Thread)?;
    Ok(Handle {
        to_service,
        from_service,
        shutdown,
        thread: Some(thread),
    })
}

async fn run(
    ctx: Arc<Ctx>,
    mut rx: mpsc::Receiver<ToService>,
    mut shutdown: watch::Receiver<bool>,
) {
    let feed = tokio::spawn(feed::feed_loop(ctx.clone()));
    let mut pending = Pending::default();
    let mut flush = tokio::time::interval(Duration::from_millis(1000));
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first batch (the heartbeat alone if nothing happened) leaves at start.
    let mut last_post: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            msg = rx.recv() => match msg {
                None => break,
                Some(m) => handle(&ctx, &mut pending, m),
            },
            _ = flush.tick() => {
                let heartbeat_due = last_post.is_none_or(|t| t.elapsed() >= HEARTBEAT_EVERY);
                if !pending.is_empty() || heartbeat_due {
                    last_post = Some(tokio::time::Instant::now());
                    post_events(&ctx, &mut pending).await;
                }
            }
        }
    }
    // What the broker thread queued before cleanup (its last sensor counts among it).
    while let Ok(m) = rx.try_recv() {
        handle(&ctx, &mut pending, m);
    }
    // Last chance for events seen just before shutdown; bounded so cleanup cannot hang.
    if !pending.is_empty() {
        let _ = tokio::time::timeout(Duration::from_secs(2), post_events(&ctx, &mut pending)).await;
    }
    feed.abort();
}

fn handle(ctx: &Arc<Ctx>, pending: &mut Pending, msg: ToService) {
    match msg {
        ToService::FetchStatus(id) => {
            tokio::spawn(fetch_status(ctx.clone(), id));
        }
        ToService::FetchSensors(gateway) => {
            tokio::spawn(fetch_sensors(ctx.clone(), gateway));
        }
        ToService::Renew(job) => {
            tokio::spawn(relay_renewal(ctx.clone(), job));
        }
        ToService::Event(e) => {
            if pending.events.len() >= MAX_PENDING_EVENTS {
                pending.events.remove(0);
            }
            pending.events.push(e);
        }
        ToService::Sensors(report) => {
            ctx.persist_sensor_counters(&report);
            for t in report {
                pending.merge(t);
            }
        }
        ToService::Counters(counters) => {
            let dropped = pending.merge_counters(counters);
            if dropped > 0 {
                ctx.log(
                    LogLevel::Warning,
                    format!("devid: {dropped} PUBLISH counts dropped: counts of {} devices wait for the service", sensors::MAX_PENDING_COUNTERS),
                );
            }
        }
    }
}

/// Who sends the batch, as of now.
fn heartbeat(ctx: &Ctx) -> BrokerHeartbeat {
    let (feed_seq, connected) = {
        let g = lock(&ctx.shared);
        (g.revocations.seq, g.connected)
    };
    BrokerHeartbeat {
        name: ctx
            .config
            .broker_name
            .clone()
            .unwrap_or_else(|| "unknown".into()),
        started_at: ctx.started_at.clone(),
        max_staleness: ctx.config.max_staleness.as_secs(),
        feed_seq,
        connected,
    }
}

/// Posts what waits, in batches, each carrying the heartbeat; at least one batch, empty if
/// nothing waits. What a failed POST carried stays for the next one.
async fn post_events(ctx: &Ctx, pending: &mut Pending) {
    let mut first = true;
    while first || !pending.is_empty() {
        first = false;
        let n = pending.events.len().min(BATCH);
        let keys: Vec<(String, String)> = pending
            .sensors
            .keys()
            .take(devid_core::api::MAX_SENSOR_REPORTS)
            .cloned()
            .collect();
        let batch = EventBatch {
            events: pending.events[..n].to_vec(),
            sensors: keys
                .iter()
                .filter_map(|k| pending.sensors.get(k))
                .map(sensor_report)
                .collect(),
            counters: pending.counters_batch(BATCH),
            broker: Some(heartbeat(ctx)),
        };
        let res = ctx
            .http
            .post(ctx.url("/v1/events"))
            .timeout(Duration::from_secs(5))
            .json(&batch)
            .send()
            .await;
        match res {
            Ok(r) if r.status().is_success() => {
                pending.events.drain(..n);
                for k in &keys {
                    pending.sensors.remove(k);
                }
                pending.delivered_counters(&batch.counters);
            }
            Ok(r) if r.status().is_client_error() => {
                // The service refuses this batch for good (e.g. 400/403): retrying cannot help.
                ctx.log(
                    LogLevel::Warning,
                    format!(
                        "devid: service refused {n} events, {} sensor reports and {} PUBLISH counters: HTTP {}",
                        keys.len(),
                        batch.counters.len(),
                        r.status()
                    ),
                );
                pending.events.drain(..n);
                for k in &keys {
                    pending.sensors.remove(k);
                }
                pending.delivered_counters(&batch.counters);
            }
            Ok(r) => {
                ctx.log(
                    LogLevel::Warning,
                    format!("devid: posting events failed: HTTP {}", r.status()),
                );
                return;
            }
            Err(e) => {
                ctx.log(
                    LogLevel::Warning,
                    format!("devid: posting events failed: {e}"),
                );
                return;
            }
        }
    }
}

/// Relays a renewal request (see `crate::relay`) and sends the reply to the broker thread.
async fn relay_renewal(ctx: Arc<Ctx>, job: RenewJob) {
    let url = ctx.url("/v1/brokers/renewals");
    let (reply, problem) = crate::relay::renew(&ctx.http, &url, &job).await;
    if let Some(line) = problem {
        ctx.log(LogLevel::Warning, line);
    }
    let _ = ctx.out.send(FromService::Renewed {
        key: job.key,
        reply,
    });
}

async fn fetch_status(ctx: Arc<Ctx>, client_id: String) {
    let known = lock(&ctx.shared)
        .revocations
        .statuses
        .get(&client_id)
        .and_then(|c| c.etag.clone());
    let mut req = ctx
        .http
        .get(ctx.url(&format!("/v1/devices/{client_id}/status")))
        .timeout(Duration::from_secs(5));
    if let Some(tag) = &known {
        req = req.header(reqwest::header::IF_NONE_MATCH, tag);
    }
    let res = req.send().await;
    let (status, etag): (DeviceStatus, Option<String>) = match res {
        // Unchanged since the cached answer.
        Ok(r) if r.status() == reqwest::StatusCode::NOT_MODIFIED => return,
        Ok(r) if r.status().is_success() => {
            let etag = r
                .headers()
                .get(reqwest::header::ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            match r.json().await {
                Ok(s) => (s, etag),
                Err(e) => {
                    ctx.log(
                        LogLevel::Warning,
                        format!("devid: status of {client_id}: bad answer: {e}"),
                    );
                    return;
                }
            }
        }
        Ok(r) => {
            ctx.log(
                LogLevel::Warning,
                format!("devid: status of {client_id}: HTTP {}", r.status()),
            );
            return;
        }
        Err(e) => {
            ctx.log(
                LogLevel::Warning,
                format!("devid: status of {client_id}: {e}"),
            );
            return;
        }
    };
    if status.client_id != client_id {
        ctx.log(
            LogLevel::Warning,
            format!(
                "devid: status of {client_id}: answer is about {}",
                status.client_id
            ),
        );
        return;
    }
    let recheck = lock(&ctx.shared)
        .revocations
        .apply_status_tagged(&status, etag);
    ctx.persist();
    let _ = ctx.out.send(FromService::Recheck(recheck));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updated_entries_name_the_device_or_the_model() {
        let mut e = FeedEntry {
            seq: 1,
            scope: RevocationScope::Device,
            action: RevocationAction::Updated,
            client_id: "dev1".into(),
            serials: vec![],
            reason: None,
            at: "x".into(),
            model: None,
        };
        assert_eq!(Updated::of(&e), Some(Updated::Device("dev1".into())));
        e.scope = RevocationScope::Model;
        e.client_id = String::new();
        assert_eq!(Updated::of(&e), None, "scope model without a model");
        e.model = Some("sensor".into());
        assert_eq!(Updated::of(&e), Some(Updated::Model("sensor".into())));
        e.action = RevocationAction::Suspended;
        assert_eq!(Updated::of(&e), None);
    }
}
