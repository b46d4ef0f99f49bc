//! The fleet's health record: what a broker's event batch means for each device, its
//! connections and the event-driven checks, decided here, pure; `store::fleet` reads what it
//! needs inside the batch's transaction, asks [`fold`], and writes the plan with a bounded
//! number of statements.

pub mod activity;
pub mod checks;

use std::collections::{HashMap, HashSet};

use devid_core::api::{
    AppEventKind, AuthMethod, CheckName, ConnectionEventKind, DeviceState, EventBatch,
};
use serde_json::json;

use super::DomainError;
use crate::metrics::{FleetGauges, Metrics};
use crate::store::{NewAppEvent, NewFinding, Store};
use crate::timefmt;
use checks::Thresholds;

/// One connection event with its time parsed and its broker resolved.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: ConnectionEventKind,
    pub client_id: String,
    pub at: i64,
    pub address: Option<String>,
    pub refusal: Option<String>,
    pub reason: Option<String>,
    /// The event's broker, else the batch's, else empty.
    pub broker: String,
    pub auth: Option<AuthMethod>,
    pub serial: Option<String>,
    pub sw_version: Option<String>,
}

/// The sending broker as its heartbeat describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerSeen {
    pub name: String,
    pub started_at: i64,
    pub max_staleness: i64,
    pub feed_seq: i64,
    pub connected: i64,
}

/// A batch, checked: times parsed, every event with its broker.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub events: Vec<Event>,
    pub counters: Vec<(String, i64, i64)>,
    pub broker: Option<BrokerSeen>,
}

/// Longest `sw_version` kept.
const MAX_SW_VERSION: usize = 64;

/// Checks a batch's times and fields; the error names the failing item.
pub fn parse(batch: &EventBatch) -> Result<Batch, DomainError> {
    let broker = match &batch.broker {
        Some(b) => Some(BrokerSeen {
            name: b.name.clone(),
            started_at: timefmt::parse_rfc3339(&b.started_at).ok_or_else(|| {
                DomainError::invalid_field(
                    "broker",
                    format!(
                        "broker.started_at {:?} is not an RFC 3339 time",
                        b.started_at
                    ),
                )
            })?,
            max_staleness: i64::try_from(b.max_staleness).unwrap_or(i64::MAX),
            feed_seq: b.feed_seq,
            connected: i64::try_from(b.connected).unwrap_or(i64::MAX),
        }),
        None => None,
    };
    let default_broker = broker.as_ref().map(|b| b.name.clone()).unwrap_or_default();
    let mut events = Vec::with_capacity(batch.events.len());
    for (i, e) in batch.events.iter().enumerate() {
        let at = timefmt::parse_rfc3339(&e.at).ok_or_else(|| {
            DomainError::invalid_field("at", format!("at {:?} is not an RFC 3339 time", e.at))
                .at_index(i)
        })?;
        let sw_version = e.sw_version.as_ref().filter(|v| {
            !v.is_empty()
                && v.len() <= MAX_SW_VERSION
                && v.bytes().all(|b| (0x20..0x7f).contains(&b))
        });
        events.push(Event {
            kind: e.kind,
            client_id: e.client_id.clone(),
            at,
            address: e.address.clone(),
            refusal: e.refusal.clone(),
            reason: e.reason.clone(),
            broker: e.broker.clone().unwrap_or_else(|| default_broker.clone()),
            auth: e.auth,
            serial: e.serial.clone(),
            sw_version: sw_version.cloned(),
        });
    }
    let mut seen = HashSet::new();
    let mut counters = Vec::with_capacity(batch.counters.len());
    for (i, c) in batch.counters.iter().enumerate() {
        if !seen.insert(c.client_id.as_str()) {
            return Err(DomainError::invalid_field(
                "counters",
                format!("counters name {:?} twice", c.client_id),
            )
            .at_index(i));
        }
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        counters.push((c.client_id.clone(), n(c.published), n(c.refused)));
    }
    Ok(Batch {
        events,
        counters,
        broker,
    })
}

/// What the store knows of a device the batch names.
#[derive(Debug, Clone)]
pub struct Known {
    pub model: Option<String>,
    pub status: DeviceState,
}

/// What a device's health row gets from one batch.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct HealthUpdate {
    pub client_id: String,
    /// The batch's earliest connect.
    pub first_seen: Option<i64>,
    pub connect_at: Option<i64>,
    pub connect_address: Option<String>,
    pub connect_broker: Option<String>,
    pub connect_auth: Option<&'static str>,
    pub disconnect_at: Option<i64>,
    pub disconnect_address: Option<String>,
    pub disconnect_broker: Option<String>,
    pub sw_version: Option<String>,
    pub published: i64,
    pub refused: i64,
}

/// What a device's registry row gets from one batch: its newest connect (`last_seen`,
/// `last_address`; never moved back by an older one) and counts of connects and failed
/// authentications.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeviceSeen {
    pub client_id: String,
    pub last_seen: Option<i64>,
    pub last_address: Option<String>,
    pub connects: i64,
    pub failures: i64,
    pub last_failure: Option<i64>,
}

/// A connection the batch leaves open.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Opened {
    pub broker: String,
    pub client_id: String,
    pub opened_at: i64,
    pub address: Option<String>,
    pub serial: Option<String>,
}

/// A row of the windows the event-driven checks count over.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WindowRow {
    pub subject: String,
    pub at: i64,
    pub detail: String,
}

/// What a batch changes.
#[derive(Debug, Default)]
pub struct Plan {
    pub health: Vec<HealthUpdate>,
    /// Per known device the batch names: last seen and counts, by ClientID.
    pub seen: Vec<DeviceSeen>,
    pub opened: Vec<Opened>,
    /// (broker, ClientID) the batch closes.
    pub closed: Vec<(String, String)>,
    pub app_events: Vec<NewAppEvent>,
    pub window: Vec<WindowRow>,
    /// ClientIDs connected on two brokers at once after the batch.
    pub on_two_brokers: Vec<String>,
    /// Certificate serial -> the ClientID that connected with it.
    pub serial_owner: HashMap<String, String>,
}

/// Window subjects.
pub fn auth_client_subject(client_id: &str) -> String {
    format!("auth_client:{client_id}")
}
pub fn auth_address_subject(ip: &str) -> String {
    format!("auth_address:{ip}")
}
pub fn takeover_subject(client_id: &str) -> String {
    format!("takeover:{client_id}")
}
pub fn serial_subject(serial: &str) -> String {
    format!("serial:{serial}")
}

/// Folds a batch over what was open before it (`open`: (broker, ClientID) pairs, after a
/// restarted broker's were closed). Connects and disconnects of devices the registry does not
/// know change no health row and open no connection; their failures still count.
pub fn fold(batch: &Batch, known: &HashMap<String, Known>, open: &[(String, String)]) -> Plan {
    let mut plan = Plan::default();
    let mut state: HashMap<(String, String), Option<Opened>> = HashMap::new();
    let mut now_open: HashSet<(String, String)> = open.iter().cloned().collect();
    let mut health: HashMap<String, HealthUpdate> = HashMap::new();
    let mut seen: HashMap<String, DeviceSeen> = HashMap::new();
    let event = |kind, client_id: &str, at, data: serde_json::Value| NewAppEvent {
        kind,
        at,
        client_id: (!client_id.is_empty()).then(|| client_id.to_string()),
        model: known.get(client_id).and_then(|k| k.model.clone()),
        data,
    };
    for e in &batch.events {
        let key = (e.broker.clone(), e.client_id.clone());
        let is_known = known.contains_key(&e.client_id);
        match e.kind {
            ConnectionEventKind::Connect if is_known => {
                if now_open.contains(&key) {
                    plan.window.push(WindowRow {
                        subject: takeover_subject(&e.client_id),
                        at: e.at,
                        detail: e.broker.clone(),
                    });
                }
                now_open.insert(key.clone());
                state.insert(
                    key,
                    Some(Opened {
                        broker: e.broker.clone(),
                        client_id: e.client_id.clone(),
                        opened_at: e.at,
                        address: e.address.clone(),
                        serial: e.serial.clone(),
                    }),
                );
                let s = seen.entry(e.client_id.clone()).or_default();
                s.connects += 1;
                if s.last_seen.is_none_or(|t| e.at >= t) {
                    s.last_seen = Some(e.at);
                    s.last_address = e.address.clone();
                }
                let h = health.entry(e.client_id.clone()).or_default();
                h.first_seen = Some(h.first_seen.map_or(e.at, |t| t.min(e.at)));
                if h.connect_at.is_none_or(|t| e.at >= t) {
                    h.connect_at = Some(e.at);
                    h.connect_address = e.address.clone();
                    h.connect_broker = Some(e.broker.clone()).filter(|b| !b.is_empty());
                    h.connect_auth = e.auth.map(|a| a.as_str());
                    if e.sw_version.is_some() {
                        h.sw_version = e.sw_version.clone();
                    }
                }
                if let (Some(serial), Some(net)) = (
                    e.serial.as_deref(),
                    e.address.as_deref().and_then(checks::network),
                ) {
                    plan.serial_owner
                        .insert(serial.to_string(), e.client_id.clone());
                    plan.window.push(WindowRow {
                        subject: serial_subject(serial),
                        at: e.at,
                        detail: net,
                    });
                }
                plan.app_events.push(event(
                    AppEventKind::Connected,
                    &e.client_id,
                    e.at,
                    json!({"broker": e.broker, "address": e.address, "auth": e.auth,
                           "serial": e.serial, "sw_version": e.sw_version}),
                ));
            }
            ConnectionEventKind::Disconnect if is_known => {
                now_open.remove(&key);
                state.insert(key, None);
                let h = health.entry(e.client_id.clone()).or_default();
                if h.disconnect_at.is_none_or(|t| e.at >= t) {
                    h.disconnect_at = Some(e.at);
                    h.disconnect_address = e.address.clone();
                    h.disconnect_broker = Some(e.broker.clone()).filter(|b| !b.is_empty());
                }
                plan.app_events.push(event(
                    AppEventKind::Disconnected,
                    &e.client_id,
                    e.at,
                    json!({"broker": e.broker, "address": e.address}),
                ));
            }
            ConnectionEventKind::AuthFailure => {
                if is_known {
                    let s = seen.entry(e.client_id.clone()).or_default();
                    s.failures += 1;
                    s.last_failure = Some(s.last_failure.map_or(e.at, |t| t.max(e.at)));
                }
                if !e.client_id.is_empty() {
                    plan.window.push(WindowRow {
                        subject: auth_client_subject(&e.client_id),
                        at: e.at,
                        detail: String::new(),
                    });
                }
                if let Some(ip) = e.address.as_deref().and_then(checks::source_ip) {
                    plan.window.push(WindowRow {
                        subject: auth_address_subject(&ip),
                        at: e.at,
                        detail: String::new(),
                    });
                }
                plan.app_events.push(event(
                    AppEventKind::AuthFailed,
                    &e.client_id,
                    e.at,
                    json!({"broker": e.broker, "address": e.address,
                           "refusal": e.refusal, "reason": e.reason}),
                ));
            }
            // Connects and disconnects of ClientIDs the registry does not know.
            _ => {}
        }
    }
    for (client_id, published, refused) in &batch.counters {
        if known.contains_key(client_id) {
            let h = health.entry(client_id.clone()).or_default();
            h.published += published;
            h.refused += refused;
        }
    }
    for ((broker, client_id), s) in state {
        match s {
            Some(o) => plan.opened.push(o),
            None => plan.closed.push((broker, client_id)),
        }
    }
    let mut brokers_of: HashMap<&str, HashSet<&str>> = HashMap::new();
    for (broker, client_id) in &now_open {
        brokers_of.entry(client_id).or_default().insert(broker);
    }
    plan.on_two_brokers = health
        .keys()
        .filter(|c| brokers_of.get(c.as_str()).is_some_and(|b| b.len() > 1))
        .cloned()
        .collect();
    plan.on_two_brokers.sort();
    plan.health = health
        .into_iter()
        .map(|(client_id, mut h)| {
            h.client_id = client_id;
            h
        })
        .collect();
    plan.health.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    plan.seen = seen
        .into_iter()
        .map(|(client_id, mut s)| {
            s.client_id = client_id;
            s
        })
        .collect();
    plan.seen.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    plan
}

/// Counts over the windows for one subject, as the store read them after the batch.
#[derive(Debug, Clone, Default)]
pub struct WindowCount {
    /// Rows within the last 10 minutes.
    pub recent: i64,
    /// Rows within the last hour.
    pub hour: i64,
    /// Distinct details within the last hour.
    pub distinct: i64,
}

/// The findings the batch's rows make true: auth failures per ClientID and per address,
/// takeovers and two brokers per ClientID, networks per certificate serial. (Already open ones
/// are kept by the store; closing is the sweeper's.)
pub fn event_findings(
    plan: &Plan,
    counts: &HashMap<String, WindowCount>,
    known: &HashMap<String, Known>,
    thresholds: &Thresholds,
) -> Vec<NewFinding> {
    let model_of = |cid: &str| known.get(cid).and_then(|k| k.model.clone());
    let mut out = Vec::new();
    let mut done = HashSet::new();
    for row in &plan.window {
        if !done.insert(row.subject.clone()) {
            continue;
        }
        let c = counts.get(&row.subject).cloned().unwrap_or_default();
        let (what, value) = row.subject.split_once(':').unwrap_or(("", ""));
        match what {
            "auth_client" => {
                let limit = thresholds
                    .for_model(model_of(value).as_deref())
                    .auth_failures;
                if checks::reached(c.recent, limit) {
                    out.push(NewFinding::new(
                        CheckName::AuthFailures,
                        value,
                        Some(value.to_string()),
                        model_of(value),
                        format!("{} failed authentications in 10 minutes", c.recent),
                    ));
                }
            }
            "auth_address"
                if checks::reached(c.recent, checks::Limits::default().auth_failures) =>
            {
                out.push(NewFinding::new(
                    CheckName::AuthFailures,
                    value,
                    None,
                    None,
                    format!(
                        "{} failed authentications from {value} in 10 minutes",
                        c.recent
                    ),
                ));
            }
            "takeover" => {
                let limit = thresholds
                    .for_model(model_of(value).as_deref())
                    .takeovers_per_hour;
                if checks::reached(c.hour, limit) {
                    out.push(NewFinding::new(
                        CheckName::DuplicateClientId,
                        value,
                        Some(value.to_string()),
                        model_of(value),
                        format!("session taken over {} times in an hour", c.hour),
                    ));
                }
            }
            "serial" => {
                let owner = plan.serial_owner.get(value).cloned();
                let model = owner.as_deref().and_then(model_of);
                let limit = thresholds.for_model(model.as_deref()).networks_per_hour;
                if checks::reached(c.distinct, limit) {
                    out.push(NewFinding::new(
                        CheckName::SharedCertificate,
                        value,
                        owner,
                        model,
                        format!(
                            "certificate {value} used from {} networks in an hour",
                            c.distinct
                        ),
                    ));
                }
            }
            _ => {}
        }
    }
    for cid in &plan.on_two_brokers {
        out.push(NewFinding::new(
            CheckName::DuplicateClientId,
            cid,
            Some(cid.clone()),
            model_of(cid),
            "connected on two brokers at once".to_string(),
        ));
    }
    out
}

/// Reads the fleet's gauges again when the ones `metrics` holds are older than
/// [`crate::metrics::FLEET_GAUGES_MAX_AGE`]. A store error leaves the old ones (logged).
pub async fn refresh_gauges(store: &Store, metrics: &Metrics) {
    let now = timefmt::now();
    if !metrics.fleet_stale(now) {
        return;
    }
    let read = async {
        let c = store.fleet_counts(now).await?;
        let findings = store.open_finding_counts().await?;
        Ok::<_, crate::store::StoreError>(FleetGauges {
            active: c.active,
            suspended: c.suspended,
            revoked: c.revoked,
            connected_now: c.connected_now,
            open_findings: findings.into_iter().map(|(c, _, n)| (c, n)).collect(),
        })
    };
    match read.await {
        Ok(g) => metrics.set_fleet(now, g),
        Err(e) => tracing::warn!(error = %e, "cannot read the fleet gauges"),
    }
}
