//! Sensors behind gateways (DEVID-S1): a gateway authenticated by the plugin relays a sensor's
//! reading as a PUBLISH carrying `devid-sensor` (the sensor's ClientID), `devid-sensor-seq` and
//! either `devid-sensor-mac` or `devid-sensor-seal` = `1`. The plugin accepts it only when the
//! sensor is attached to that gateway, neither revoked nor suspended, the topic is in the
//! sensor's own publish filters, the seq passes the sensor's replay window and the MAC or seal
//! verifies with the sensor's keys; then the subscriber sees `devid-verified` = sensor and
//! `devid-via` = gateway, and, for a sealed reading, the decrypted payload.
//!
//! Keys: when a device authenticates, the service thread fetches the sensors attached to it
//! (`GET /v1/devices/{gateway}/sensors/keys`: K_mac, K_enc, publish filters, status, seq_floor)
//! and TICK hands the answer over; until then the gateway's readings are refused with
//! `sensor_keys_pending`. A feed `updated` entry about a gateway or a sensor refetches; a
//! revoked or suspended sensor is dropped from every gateway at once.
//!
//! Counters: the highest accepted seq of each sensor is reported with the broker's event batches
//! about once a second (with the per-sensor accepted and refused counts), and the service
//! thread writes it to `state_dir` with each report. A sensor's window starts at the larger of
//! that persisted counter and the service's `seq_floor` (the highest any broker reported).

#![deny(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use devid_core::api::DeviceState;
use devid_core::TopicFilter;
use devid_sensor::ReplayWindow;

use crate::policy::covers;
use crate::refusal::SensorRefusal;

/// The user properties of DEVID-S1.
pub const SENSOR: &str = "devid-sensor";
pub const SENSOR_SEQ: &str = "devid-sensor-seq";
pub const SENSOR_MAC: &str = "devid-sensor-mac";
pub const SENSOR_SEAL: &str = "devid-sensor-seal";
/// Added to an accepted reading: the gateway that relayed it.
pub const VIA: &str = "devid-via";

/// Gateways' sensor keys are refetched at most this often (per gateway).
const FETCH_REFRESH: Duration = Duration::from_secs(1);
/// Reports (and so the persisted counters) leave the broker thread at most this often.
pub(super) const REPORT_EVERY: Duration = Duration::from_secs(1);
/// A refused reading is logged and reported as an event at most this often per gateway and
/// claimed sensor (the counts stay exact).
const REFUSAL_NOTICE_EVERY: Duration = Duration::from_secs(1);

/// One sensor's material as the service sent it, checked and with `%c` expanded.
#[derive(Clone, PartialEq, Eq)]
pub struct SensorMaterial {
    pub client_id: String,
    pub state: DeviceState,
    k_mac: [u8; 32],
    k_enc: [u8; 32],
    /// The sensor's publish filters, `%c` expanded with its ClientID (invalid ones dropped).
    publish: Vec<String>,
    /// The highest seq any broker reported for this sensor.
    pub seq_floor: u64,
}

impl std::fmt::Debug for SensorMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SensorMaterial")
            .field("client_id", &self.client_id)
            .field("state", &self.state)
            .field("publish", &self.publish)
            .field("seq_floor", &self.seq_floor)
            .finish_non_exhaustive()
    }
}

/// Decodes a 32-byte key sent as base64url without padding (43 characters).
fn key32(text: &str, what: &str) -> Result<[u8; 32], String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(text.as_bytes())
        .map_err(|_| format!("{what} is not base64url"))?;
    bytes
        .try_into()
        .map_err(|_| format!("{what} is not 32 bytes"))
}

impl SensorMaterial {
    /// Checks one entry of the service's answer. A publish filter that is not a valid MQTT
    /// filter, before or after `%c` is expanded (core's [`TopicFilter::expand`]), grants
    /// nothing and is dropped.
    pub fn new(
        client_id: &str,
        state: DeviceState,
        k_mac: &str,
        k_enc: &str,
        publish: &[String],
        seq_floor: u64,
    ) -> Result<SensorMaterial, String> {
        devid_core::clientid::validate(client_id)
            .map_err(|e| format!("sensor {client_id:?}: {e}"))?;
        let publish = publish
            .iter()
            .filter_map(|f| TopicFilter::parse(f).and_then(|f| f.expand(client_id)).ok())
            .map(TopicFilter::into_string)
            .collect();
        Ok(SensorMaterial {
            client_id: client_id.to_string(),
            state,
            k_mac: key32(k_mac, "k_mac")?,
            k_enc: key32(k_enc, "k_enc")?,
            publish,
            seq_floor,
        })
    }

    fn allows(&self, topic: &str) -> bool {
        devid_core::TopicName::check(topic).is_ok() && self.publish.iter().any(|f| covers(f, topic))
    }
}

/// What a PUBLISH's `devid-sensor*` properties claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Claim<'a> {
    pub sensor: &'a str,
    pub seq: u64,
    pub proof: Proof,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Proof {
    Mac([u8; 16]),
    Seal,
}

/// Reads the sensor claim of a PUBLISH from its `devid-*` properties. None: no `devid-sensor*`
/// property at all (not a sensor reading). A claim that is present but malformed is refused,
/// and names the sensor when its ClientID could be read.
pub(super) fn parse_claim<'a>(
    props: &[(&'a str, &'a str)],
) -> Option<Result<Claim<'a>, (Option<&'a str>, SensorRefusal)>> {
    let mut sensor = None;
    let mut seq = None;
    let mut mac = None;
    let mut seal = None;
    let mut own_claim = false;
    let mut any = false;
    let mut repeated = None;
    let mut unknown = false;
    for &(k, v) in props {
        let slot = match k {
            SENSOR => &mut sensor,
            SENSOR_SEQ => &mut seq,
            SENSOR_MAC => &mut mac,
            SENSOR_SEAL => &mut seal,
            "devid-seq" | "devid-mac" | "devid-seal" => {
                own_claim = true;
                continue;
            }
            _ => {
                if k.starts_with(SENSOR) {
                    any = true;
                    unknown = true;
                }
                continue;
            }
        };
        any = true;
        if slot.replace(v).is_some() {
            repeated = Some(k);
        }
    }
    if !any {
        return None;
    }
    let named = sensor.filter(|s| devid_core::clientid::validate(s).is_ok());
    let fail = |what: &'static str| Some(Err((named, SensorRefusal::Malformed(what))));
    if repeated.is_some() {
        return fail("a devid-sensor property is repeated");
    }
    if unknown {
        return fail("unknown devid-sensor property");
    }
    if own_claim {
        return fail("devid-seq, devid-mac or devid-seal with devid-sensor");
    }
    let Some(sensor) = named else {
        return fail("devid-sensor is not a ClientID");
    };
    let Some(Ok(seq)) = seq.map(|s| devid_sensor::parse_seq(s.as_bytes())) else {
        return fail("devid-sensor-seq is not a decimal 1..2^64");
    };
    let proof = match (mac, seal) {
        (Some(tag), None) => match devid_sensor::decode_b64url_16(tag.as_bytes()) {
            Ok(t) => Proof::Mac(t),
            Err(_) => return fail("devid-sensor-mac is not 16 bytes of base64url"),
        },
        (None, Some("1")) => Proof::Seal,
        (None, Some(_)) => return fail("devid-sensor-seal is not 1"),
        _ => return fail("exactly one of devid-sensor-mac and devid-sensor-seal"),
    };
    Some(Ok(Claim { sensor, seq, proof }))
}

/// What this broker knows of one sensor: its replay window and what is not reported yet.
struct Counter {
    window: ReplayWindow,
}

/// Counts of one (sensor, gateway) since the last report.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Delta {
    pub accepted: u64,
    pub refused: BTreeMap<&'static str, u64>,
    /// Unix seconds of the last accepted reading in the period.
    pub last_accepted_at: Option<u64>,
}

/// One line of a report: (sensor, gateway) with its highest accepted seq and the period's
/// counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SensorTally {
    pub sensor: String,
    pub gateway: String,
    pub highest_seq: u64,
    pub delta: Delta,
}

/// The sensor state of the engine (broker thread only).
#[derive(Default)]
pub(super) struct SensorBook {
    /// Fetched material by gateway ClientID; a gateway without an entry has not been answered.
    gateways: HashMap<String, HashMap<String, SensorMaterial>>,
    /// Replay windows by sensor ClientID, whatever gateway relays it.
    counters: HashMap<String, Counter>,
    /// Highest accepted seqs read from `state_dir` at start: the floor of a window made later.
    persisted: HashMap<String, u64>,
    /// Counts not reported yet, by sensor, then gateway.
    deltas: HashMap<String, HashMap<String, Delta>>,
    /// When each gateway's keys were last asked for.
    requested: HashMap<String, Instant>,
    /// When a refusal for (gateway, claimed sensor) was last logged and reported.
    noticed: HashMap<(String, String), Instant>,
    last_report: Option<Instant>,
}

/// An accepted reading: what the broker forwards.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Accepted {
    /// The decrypted reading of a sealed one.
    pub plaintext: Option<Vec<u8>>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl SensorBook {
    pub(super) fn with_persisted(persisted: HashMap<String, u64>) -> SensorBook {
        SensorBook {
            persisted,
            ..SensorBook::default()
        }
    }

    /// Whether a fetch of `gateway`'s keys is due (and records it as asked for).
    pub(super) fn fetch_due(&mut self, gateway: &str) -> bool {
        let due = self
            .requested
            .get(gateway)
            .is_none_or(|t| t.elapsed() >= FETCH_REFRESH);
        if due {
            self.requested.insert(gateway.to_string(), Instant::now());
        }
        due
    }

    /// Forget the throttle for `gateway` (a feed entry says its set changed).
    pub(super) fn unthrottle(&mut self, gateway: &str) {
        self.requested.remove(gateway);
    }

    /// The service's answer for a gateway: replaces its material. A sensor's window starts at
    /// the larger of what this broker persisted and the service's `seq_floor`; a window that
    /// exists already only moves up to a higher floor (the sensor was accepted elsewhere since).
    pub(super) fn install(&mut self, gateway: &str, sensors: Vec<SensorMaterial>) {
        let mut set = HashMap::with_capacity(sensors.len());
        for m in sensors {
            let floor = m
                .seq_floor
                .max(self.persisted.get(&m.client_id).copied().unwrap_or(0));
            match self.counters.get_mut(&m.client_id) {
                Some(c) if c.window.highest() >= floor => {}
                Some(c) => c.window = ReplayWindow::new(floor),
                None => {
                    self.counters.insert(
                        m.client_id.clone(),
                        Counter {
                            window: ReplayWindow::new(floor),
                        },
                    );
                }
            }
            set.insert(m.client_id.clone(), m);
        }
        self.gateways.insert(gateway.to_string(), set);
    }

    /// The gateway is gone (its last connection ended): its material goes, its sensors'
    /// counters stay.
    pub(super) fn forget_gateway(&mut self, gateway: &str) {
        self.gateways.remove(gateway);
        self.requested.remove(gateway);
    }

    /// The feed says a sensor is revoked or suspended: its keys go from every gateway at once
    /// (a revocation is final), or it is marked suspended everywhere (a resumption refetches).
    /// Returns whether any gateway here held it.
    pub(super) fn set_denied(&mut self, sensor: &str, state: DeviceState) -> bool {
        let mut held = false;
        for set in self.gateways.values_mut() {
            if state == DeviceState::Revoked {
                held |= set.remove(sensor).is_some();
            } else if let Some(m) = set.get_mut(sensor) {
                m.state = state;
                held = true;
            }
        }
        held
    }

    /// Gateways (known here) whose material names `sensor`.
    pub(super) fn gateways_of(&self, sensor: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .gateways
            .iter()
            .filter(|(_, set)| set.contains_key(sensor))
            .map(|(g, _)| g.clone())
            .collect();
        v.sort();
        v
    }

    /// Gateways known here that have at least one sensor.
    pub(super) fn gateways_with_sensors(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .gateways
            .iter()
            .filter(|(_, set)| !set.is_empty())
            .map(|(g, _)| g.clone())
            .collect();
        v.sort();
        v
    }

    /// Whether `gateway` has sensors whose filters widen what it may publish.
    pub(super) fn has_sensors(&self, gateway: &str) -> bool {
        self.gateways.get(gateway).is_some_and(|s| !s.is_empty())
    }

    /// The ACL's question for a gateway's PUBLISH: does an attached, active sensor's policy
    /// allow this topic? (The MESSAGE check then requires that sensor's valid claim.)
    pub(super) fn any_sensor_allows(&self, gateway: &str, topic: &str) -> bool {
        self.gateways.get(gateway).is_some_and(|set| {
            set.values()
                .any(|m| m.state == DeviceState::Active && m.allows(topic))
        })
    }

    /// Checks one reading relayed by `gateway`. `sensor_denied` is what the revocation state
    /// says of the sensor (the feed may be ahead of the fetched material).
    pub(super) fn check(
        &mut self,
        gateway: &str,
        claim: &Claim<'_>,
        sensor_denied: Option<DeviceState>,
        topic: &str,
        payload: &[u8],
    ) -> Result<Accepted, SensorRefusal> {
        let set = self
            .gateways
            .get(gateway)
            .ok_or(SensorRefusal::KeysPending)?;
        let m = set.get(claim.sensor).ok_or(SensorRefusal::NotAttached)?;
        let state = sensor_denied.unwrap_or(m.state);
        match state {
            DeviceState::Revoked => return Err(SensorRefusal::Revoked),
            DeviceState::Suspended => return Err(SensorRefusal::Suspended),
            DeviceState::Active => {}
        }
        if !m.allows(topic) {
            return Err(SensorRefusal::TopicNotAllowed);
        }
        let counter = self
            .counters
            .get_mut(claim.sensor)
            .ok_or(SensorRefusal::KeysPending)?;
        counter.window.check(claim.seq).map_err(|e| match e {
            devid_sensor::Error::TooOld => SensorRefusal::TooOld,
            _ => SensorRefusal::Replayed,
        })?;
        let id = claim.sensor.as_bytes();
        let plaintext = match claim.proof {
            Proof::Mac(tag) => {
                devid_sensor::verify_mac(&m.k_mac, id, claim.seq, topic.as_bytes(), payload, &tag)
                    .map_err(|_| SensorRefusal::BadMac)?;
                None
            }
            Proof::Seal => {
                let mut buf = payload.to_vec();
                let n = devid_sensor::open_in_place(
                    &m.k_enc,
                    id,
                    claim.seq,
                    topic.as_bytes(),
                    &mut buf,
                )
                .map_err(|_| SensorRefusal::BadSeal)?;
                buf.truncate(n);
                Some(buf)
            }
        };
        counter.window.accept(claim.seq);
        Ok(Accepted { plaintext })
    }

    /// Counts an accepted reading.
    pub(super) fn count_accepted(&mut self, sensor: &str, gateway: &str) {
        let d = self.delta(sensor, gateway);
        d.accepted += 1;
        d.last_accepted_at = Some(unix_now());
    }

    /// Counts a refused reading under the sensor it names, when that sensor is known here (a
    /// made-up ClientID is not given a counter). Returns whether the refusal is due to be
    /// logged and reported (at most once a second per gateway and claimed sensor).
    pub(super) fn count_refused(
        &mut self,
        sensor: Option<&str>,
        gateway: &str,
        reason: SensorRefusal,
    ) -> bool {
        if let Some(s) = sensor.filter(|s| self.counters.contains_key(*s)) {
            *self.delta(s, gateway).refused.entry(reason.name()).or_default() += 1;
        }
        let key = (gateway.to_string(), sensor.unwrap_or("").to_string());
        let due = self
            .noticed
            .get(&key)
            .is_none_or(|t| t.elapsed() >= REFUSAL_NOTICE_EVERY);
        if due {
            self.noticed.insert(key, Instant::now());
        }
        due
    }

    fn delta(&mut self, sensor: &str, gateway: &str) -> &mut Delta {
        // Looked up by reference first, so that the common case does not allocate keys.
        if !self.deltas.contains_key(sensor) {
            self.deltas.insert(sensor.to_string(), HashMap::new());
        }
        let per_gateway = self.deltas.entry(sensor.to_string()).or_default();
        if !per_gateway.contains_key(gateway) {
            per_gateway.insert(gateway.to_string(), Delta::default());
        }
        per_gateway.entry(gateway.to_string()).or_default()
    }

    /// The counts since the last report, with each sensor's highest accepted seq, once
    /// [`REPORT_EVERY`] has passed (or at once with `force`); empty when nothing happened.
    pub(super) fn take_report(&mut self, force: bool) -> Vec<SensorTally> {
        let due = force
            || self
                .last_report
                .is_none_or(|t| t.elapsed() >= REPORT_EVERY);
        if !due || self.deltas.is_empty() {
            return Vec::new();
        }
        self.last_report = Some(Instant::now());
        self.noticed
            .retain(|_, t| t.elapsed() < REFUSAL_NOTICE_EVERY);
        self.requested.retain(|_, t| t.elapsed() < FETCH_REFRESH);
        let mut out = Vec::new();
        for (sensor, per_gateway) in std::mem::take(&mut self.deltas) {
            let highest_seq = self
                .counters
                .get(&sensor)
                .map(|c| c.window.highest())
                .unwrap_or(0);
            for (gateway, delta) in per_gateway {
                out.push(SensorTally {
                    sensor: sensor.clone(),
                    gateway,
                    highest_seq,
                    delta,
                });
            }
        }
        out.sort_by(|a, b| (&a.sensor, &a.gateway).cmp(&(&b.sensor, &b.gateway)));
        out
    }

    #[cfg(test)]
    pub(super) fn highest(&self, sensor: &str) -> Option<u64> {
        self.counters.get(sensor).map(|c| c.window.highest())
    }
}
