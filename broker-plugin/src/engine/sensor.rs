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
//! `keys_pending`. A feed `updated` entry about a gateway or a sensor refetches; a
//! revoked or suspended sensor is dropped from every gateway at once.
//!
//! Counters: the highest accepted seq of each sensor is reported with the broker's event batches
//! about once a second (with the per-sensor accepted and refused counts), and the service
//! thread writes it to `state_dir` with each report. A sensor's window starts at the larger of
//! that persisted counter and the service's `seq_floor` (the highest any broker reported).

#![deny(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use devid_core::api::DeviceState;
use devid_core::TopicFilter;
use devid_sensor::{ReplayWindow, SensorKeys};
use zeroize::Zeroizing;

mod claim;

pub(super) use claim::{parse_claim, Claim, Proof};

use crate::policy::covers;
use crate::refusal::SensorRefusal;
use crate::state::unix_now;

/// Gateways' sensor keys are refetched at most this often (per gateway).
const FETCH_REFRESH: Duration = Duration::from_secs(1);
/// Reports (and so the persisted counters) leave the broker thread at most this often.
pub(super) const REPORT_EVERY: Duration = Duration::from_secs(1);
/// A refused reading is logged and reported as an event at most this often per gateway,
/// claimed sensor and reason (the counts stay exact).
const REFUSAL_NOTICE_EVERY: Duration = Duration::from_secs(1);
/// Most sensors not known here whose `not_attached` readings one report counts.
const MAX_UNKNOWN_COUNTED: usize = 1_000;

/// One sensor's material as the service sent it, checked and with `%c` expanded. Its keys are
/// kept with their key schedules done once ([`devid_sensor::SensorKeys`]: HMAC pads, AES round
/// keys, GHASH table), not redone per reading; the decoded key bytes are wiped once those are
/// made. (ring keeps its key schedules without wiping them when dropped; no safe code can.)
#[derive(Clone)]
pub struct SensorMaterial {
    pub client_id: String,
    pub state: DeviceState,
    keys: SensorKeys,
    /// SHA-256 of K_mac || K_enc, first 16 bytes: whether two materials hold the same keys,
    /// without keeping or comparing the keys themselves.
    key_digest: [u8; 16],
    /// The sensor's publish filters, `%c` expanded with its ClientID (invalid ones dropped).
    publish: Vec<String>,
    /// The highest seq any broker reported for this sensor.
    pub seq_floor: u64,
}

impl PartialEq for SensorMaterial {
    fn eq(&self, other: &Self) -> bool {
        self.client_id == other.client_id
            && self.state == other.state
            && self.key_digest == other.key_digest
            && self.publish == other.publish
            && self.seq_floor == other.seq_floor
    }
}

impl Eq for SensorMaterial {}

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

/// Decodes a 32-byte key sent as base64url without padding (43 characters); the decoded bytes
/// are wiped when the answer is dropped.
fn key32(text: &str, what: &str) -> Result<Zeroizing<[u8; 32]>, String> {
    let bytes = Zeroizing::new(
        URL_SAFE_NO_PAD
            .decode(text.as_bytes())
            .map_err(|_| format!("{what} is not base64url"))?,
    );
    let mut key = Zeroizing::new([0u8; 32]);
    if bytes.len() != key.len() {
        return Err(format!("{what} is not 32 bytes"));
    }
    key.copy_from_slice(&bytes);
    Ok(key)
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
        let (k_mac, k_enc) = (key32(k_mac, "k_mac")?, key32(k_enc, "k_enc")?);
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        digest.update(k_mac.as_slice());
        digest.update(k_enc.as_slice());
        let mut key_digest = [0u8; 16];
        key_digest.copy_from_slice(&digest.finish().as_ref()[..16]);
        Ok(SensorMaterial {
            client_id: client_id.to_string(),
            state,
            keys: SensorKeys::new(&k_mac, &k_enc),
            key_digest,
            publish,
            seq_floor,
        })
    }

    fn allows(&self, topic: &str) -> bool {
        devid_core::TopicName::check(topic).is_ok() && self.publish.iter().any(|f| covers(f, topic))
    }
}

/// One gateway's sensors, with their publish filters indexed for the ACL, which asks about
/// every PUBLISH of the gateway: a filter whose first two levels are literal (`devices/%c/#`
/// and the like) is found by the topic's first two levels; the others are tried one by one.
#[derive(Default)]
struct GatewaySet {
    sensors: HashMap<String, SensorMaterial>,
    by_prefix: HashMap<String, Vec<String>>,
    unindexed: Vec<String>,
}

/// The first two levels of a topic or filter, when both are literal.
fn prefix2(t: &str) -> Option<&str> {
    let first = t.find('/')?;
    let end = t[first + 1..].find('/').map_or(t.len(), |i| first + 1 + i);
    let p = &t[..end];
    (!p.contains(['+', '#'])).then_some(p)
}

impl GatewaySet {
    fn new(sensors: HashMap<String, SensorMaterial>) -> GatewaySet {
        let mut set = GatewaySet {
            sensors,
            ..GatewaySet::default()
        };
        for m in set.sensors.values() {
            for f in &m.publish {
                match prefix2(f) {
                    Some(p) => set
                        .by_prefix
                        .entry(p.to_string())
                        .or_default()
                        .push(m.client_id.clone()),
                    None => set.unindexed.push(m.client_id.clone()),
                }
            }
        }
        set
    }

    fn allows(&self, topic: &str) -> bool {
        let indexed = prefix2(topic).and_then(|p| self.by_prefix.get(p));
        indexed
            .into_iter()
            .flatten()
            .chain(&self.unindexed)
            .filter_map(|id| self.sensors.get(id))
            .any(|m| m.state == DeviceState::Active && m.allows(topic))
    }
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
    gateways: HashMap<String, GatewaySet>,
    /// Replay windows by sensor ClientID, whatever gateway relays it.
    counters: HashMap<String, Counter>,
    /// Highest accepted seqs read from `state_dir` at start: the floor of a window made later.
    persisted: HashMap<String, u64>,
    /// Counts not reported yet, by sensor, then gateway.
    deltas: HashMap<String, HashMap<String, Delta>>,
    /// When each gateway's keys were last asked for.
    requested: HashMap<String, Instant>,
    /// When a refusal for (gateway, claimed sensor, reason) was last logged and reported.
    noticed: HashMap<(String, String, &'static str), Instant>,
    last_report: Option<Instant>,
    /// Sensors not known here counted in this report period.
    unknown_counted: usize,
}

/// An accepted reading: what the broker forwards.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Accepted {
    /// The decrypted reading of a sealed one.
    pub plaintext: Option<Vec<u8>>,
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
        self.gateways
            .insert(gateway.to_string(), GatewaySet::new(set));
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
                held |= set.sensors.remove(sensor).is_some();
            } else if let Some(m) = set.sensors.get_mut(sensor) {
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
            .filter(|(_, set)| set.sensors.contains_key(sensor))
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
            .filter(|(_, set)| !set.sensors.is_empty())
            .map(|(g, _)| g.clone())
            .collect();
        v.sort();
        v
    }

    /// Whether the service's answer about `gateway`'s sensors is here (possibly none).
    pub(super) fn knows_gateway(&self, gateway: &str) -> bool {
        self.gateways.contains_key(gateway)
    }

    /// The ACL's question for a gateway's PUBLISH: does an attached, active sensor's policy
    /// allow this topic? (The MESSAGE check then requires that sensor's valid claim.)
    pub(super) fn any_sensor_allows(&self, gateway: &str, topic: &str) -> bool {
        self.gateways
            .get(gateway)
            .is_some_and(|set| set.allows(topic))
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
        let m = set
            .sensors
            .get(claim.sensor)
            .ok_or(SensorRefusal::NotAttached)?;
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
                m.keys
                    .verify_mac(id, claim.seq, topic.as_bytes(), payload, &tag)
                    .map_err(|_| SensorRefusal::BadMac)?;
                None
            }
            Proof::Seal => {
                let mut buf = payload.to_vec();
                let t = topic.as_bytes();
                let mut stack = [0u8; devid_sensor::AAD_STACK_LEN];
                let mut heap = Vec::new();
                let n = devid_sensor::seal_aad_len(id, t);
                let scratch = if n <= stack.len() {
                    &mut stack[..]
                } else {
                    // A long topic: the associated data does not fit the stack buffer.
                    heap.resize(n, 0);
                    &mut heap[..]
                };
                let opened = m.keys.open_in_place(id, claim.seq, t, &mut buf, scratch);
                let n = opened.map_err(|_| SensorRefusal::BadSeal)?;
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

    /// Counts a refused reading under the sensor it names, when that sensor is known here, or,
    /// refused as `not_attached`, for up to [`MAX_UNKNOWN_COUNTED`] sensors a report (a sensor
    /// of a gateway on another broker; the service skips ClientIDs that are not sensors).
    /// Returns whether the refusal is due to be logged and reported (at most once a second per
    /// gateway, claimed sensor and reason).
    pub(super) fn count_refused(
        &mut self,
        sensor: Option<&str>,
        gateway: &str,
        reason: SensorRefusal,
    ) -> bool {
        let counted = sensor.filter(|s| {
            if self.counters.contains_key(*s) || self.deltas.contains_key(*s) {
                return true;
            }
            let room =
                reason == SensorRefusal::NotAttached && self.unknown_counted < MAX_UNKNOWN_COUNTED;
            self.unknown_counted += usize::from(room);
            room
        });
        if let Some(s) = counted {
            *self
                .delta(s, gateway)
                .refused
                .entry(reason.name())
                .or_default() += 1;
        }
        let key = (
            gateway.to_string(),
            sensor.unwrap_or("").to_string(),
            reason.name(),
        );
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
        // Keys are allocated only the first time a (sensor, gateway) is counted in a period.
        if !self
            .deltas
            .get(sensor)
            .is_some_and(|g| g.contains_key(gateway))
        {
            self.deltas
                .entry(sensor.to_string())
                .or_default()
                .insert(gateway.to_string(), Delta::default());
        }
        self.deltas
            .get_mut(sensor)
            .and_then(|g| g.get_mut(gateway))
            .expect("inserted above")
    }

    /// The counts since the last report, with each sensor's highest accepted seq, once
    /// [`REPORT_EVERY`] has passed (or at once with `force`); empty when nothing happened.
    pub(super) fn take_report(&mut self, force: bool) -> Vec<SensorTally> {
        let due = force || self.last_report.is_none_or(|t| t.elapsed() >= REPORT_EVERY);
        if !due || self.deltas.is_empty() {
            return Vec::new();
        }
        self.last_report = Some(Instant::now());
        self.unknown_counted = 0;
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

#[cfg(test)]
mod tests {
    use devid_core::api::{
        ConnectionEventKind, DeviceState, FeedEntry, RevocationAction, RevocationScope,
    };

    use super::super::testing::*;
    use super::super::{AuthOutcome, ConnKey, Engine, MessageVerdict};
    use super::*;
    use crate::policy::Access;
    use crate::service::{lock, FromService, ToService, Updated};
    use crate::state::Applied;
    use devid_sensor::PROP_SEQ as SENSOR_SEQ;
    use devid_sensor::{PROP_MAC as SENSOR_MAC, PROP_SEAL as SENSOR_SEAL, PROP_SENSOR as SENSOR};

    type Props = Vec<(String, String)>;

    const K_MAC: [u8; 32] = [0x11; 32];
    const K_ENC: [u8; 32] = [0x22; 32];

    fn b64(k: &[u8; 32]) -> String {
        URL_SAFE_NO_PAD.encode(k)
    }

    fn material(cid: &str, state: DeviceState, floor: u64) -> SensorMaterial {
        SensorMaterial::new(
            cid,
            state,
            &b64(&K_MAC),
            &b64(&K_ENC),
            &["devices/%c/#".to_string(), "bad/#/x".to_string()],
            floor,
        )
        .expect("material")
    }

    /// An engine with gateway `gw1` (key 1) and `gw2` (key 2) connected; `gw1` holds sensors
    /// `s1` and `s2`, `gw2` holds `s3`.
    fn setup() -> (
        Engine<Fake>,
        std::sync::Arc<std::sync::Mutex<crate::service::Shared>>,
        tokio::sync::mpsc::Receiver<ToService>,
    ) {
        let (mut e, shared, rx) = engine();
        assert!(matches!(
            connect(&mut e, 1, "gw1", "0a"),
            AuthOutcome::Success(_)
        ));
        assert!(matches!(
            connect(&mut e, 2, "gw2", "0b"),
            AuthOutcome::Success(_)
        ));
        e.tick(vec![
            FromService::SensorKeys {
                gateway: "gw1".into(),
                sensors: vec![
                    material("s1", DeviceState::Active, 0),
                    material("s2", DeviceState::Active, 0),
                ],
            },
            FromService::SensorKeys {
                gateway: "gw2".into(),
                sensors: vec![material("s3", DeviceState::Active, 0)],
            },
        ]);
        (e, shared, rx)
    }

    fn mac_props(sensor: &str, seq: u64, topic: &str, payload: &[u8]) -> Vec<(String, String)> {
        let tag =
            devid_sensor::publish_mac(&K_MAC, sensor.as_bytes(), seq, topic.as_bytes(), payload)
                .expect("mac");
        let tag = devid_sensor::encode_b64url(&tag);
        vec![
            (SENSOR.into(), sensor.into()),
            (SENSOR_SEQ.into(), seq.to_string()),
            (
                SENSOR_MAC.into(),
                String::from_utf8(tag.to_vec()).expect("ascii"),
            ),
        ]
    }

    fn sealed(
        sensor: &str,
        seq: u64,
        topic: &str,
        reading: &[u8],
    ) -> (Vec<u8>, Vec<(String, String)>) {
        let mut buf = reading.to_vec();
        buf.resize(reading.len() + devid_sensor::TAG_LEN, 0);
        let n = devid_sensor::seal_in_place(
            &K_ENC,
            sensor.as_bytes(),
            seq,
            topic.as_bytes(),
            &mut buf,
            reading.len(),
        )
        .expect("seal");
        buf.truncate(n);
        let props = vec![
            (SENSOR.into(), sensor.into()),
            (SENSOR_SEQ.into(), seq.to_string()),
            (SENSOR_SEAL.into(), "1".into()),
        ];
        (buf, props)
    }

    fn send(
        e: &mut Engine<Fake>,
        key: ConnKey,
        topic: &str,
        props: &[(String, String)],
        payload: &[u8],
    ) -> MessageVerdict {
        let p: Vec<(&str, &str)> = props
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        e.message(key, topic, &p, payload)
    }

    fn accepted(sensor: &str, gateway: &str, payload: Option<&[u8]>) -> MessageVerdict {
        MessageVerdict::Accept {
            verified: Some(sensor.into()),
            via: Some(gateway.into()),
            payload: payload.map(<[u8]>::to_vec),
        }
    }

    /// The refusal names reported in events since the last call.
    fn refusals(rx: &mut tokio::sync::mpsc::Receiver<ToService>) -> Vec<String> {
        drain(rx)
            .into_iter()
            .filter_map(|m| match m {
                ToService::Event(ev) if ev.kind == ConnectionEventKind::AuthFailure => ev.refusal,
                _ => None,
            })
            .collect()
    }

    #[test]
    fn ok_mac_reading_is_verified_and_names_the_gateway() {
        let (mut e, _s, _rx) = setup();
        let t = "devices/s1/temp";
        assert_eq!(
            send(&mut e, 1, t, &mac_props("s1", 1, t, b"21.5"), b"21.5"),
            accepted("s1", "gw1", None)
        );
        assert_eq!(e.sensors.highest("s1"), Some(1));
    }

    #[test]
    fn ok_sealed_reading_is_delivered_decrypted() {
        let (mut e, _s, _rx) = setup();
        let t = "devices/s2/secret";
        let (payload, props) = sealed("s2", 7, t, b"reading");
        assert_ne!(payload[..7], b"reading"[..]);
        assert_eq!(
            send(&mut e, 1, t, &props, &payload),
            accepted("s2", "gw1", Some(b"reading"))
        );
        // An empty reading seals to the tag alone.
        let (payload, props) = sealed("s2", 8, t, b"");
        assert_eq!(
            send(&mut e, 1, t, &props, &payload),
            accepted("s2", "gw1", Some(b""))
        );
    }

    #[test]
    fn fail_every_refusal_has_its_reason_and_never_disconnects_the_gateway() {
        let (mut e, shared, mut rx) = setup();
        drain(&mut rx);
        let t = "devices/s1/temp";
        let good = mac_props("s1", 1, t, b"x");
        let with = |props: &[(String, String)], k: &str, v: &str| -> Vec<(String, String)> {
            let mut p: Vec<(String, String)> =
                props.iter().filter(|(n, _)| n != k).cloned().collect();
            p.push((k.into(), v.into()));
            p
        };
        let without = |props: &[(String, String)], k: &str| -> Vec<(String, String)> {
            props.iter().filter(|(n, _)| n != k).cloned().collect()
        };
        let mut dup = good.clone();
        dup.push((SENSOR_SEQ.into(), "2".into()));
        let mut mixed = good.clone();
        mixed.push(("devid-seq".into(), "1".into()));
        let mut both = good.clone();
        both.push((SENSOR_SEAL.into(), "1".into()));
        let mut unknown = good.clone();
        unknown.push(("devid-sensor-x".into(), "1".into()));
        let cases: Vec<(&str, Props, &str)> = vec![
            ("repeated", dup, "malformed"),
            ("mixed with the gateway's own claim", mixed, "malformed"),
            ("mac and seal", both, "malformed"),
            ("unknown property", unknown, "malformed"),
            ("no sensor", without(&good, SENSOR), "malformed"),
            ("bad id", with(&good, SENSOR, "s/1"), "malformed"),
            ("no seq", without(&good, SENSOR_SEQ), "malformed"),
            ("seq 0", with(&good, SENSOR_SEQ, "0"), "malformed"),
            ("seq sign", with(&good, SENSOR_SEQ, "+1"), "malformed"),
            (
                "seq 2^64",
                with(&good, SENSOR_SEQ, "18446744073709551616"),
                "malformed",
            ),
            ("no proof", without(&good, SENSOR_MAC), "malformed"),
            ("short tag", with(&good, SENSOR_MAC, "AAAA"), "malformed"),
            (
                "seal 2",
                with(&without(&good, SENSOR_MAC), SENSOR_SEAL, "2"),
                "malformed",
            ),
            (
                "other gateway's sensor",
                mac_props("s3", 1, t, b"x"),
                "not_attached",
            ),
            (
                "unknown sensor",
                mac_props("s9", 1, t, b"x"),
                "not_attached",
            ),
            ("bad mac", mac_props("s1", 1, t, b"y"), "bad_mac"),
            (
                "mac for another topic",
                mac_props("s1", 1, "devices/s1/other", b"x"),
                "bad_mac",
            ),
            (
                "mac for another sensor",
                with(&mac_props("s2", 1, t, b"x"), SENSOR, "s1"),
                "bad_mac",
            ),
        ];
        for (what, props, reason) in &cases {
            assert_eq!(
                send(&mut e, 1, t, props, b"x"),
                MessageVerdict::Refuse,
                "{what}"
            );
            // One notice per second per (gateway, sensor): the next call would be throttled.
            e.sensors.noticed.clear();
            assert_eq!(refusals(&mut rx), [reason.to_string()], "{what}");
        }
        // Topic outside the sensor's filters (even one the gateway's own policy allows).
        let own = "devices/gw1/x";
        assert_eq!(
            send(&mut e, 1, own, &mac_props("s1", 1, own, b"x"), b"x"),
            MessageVerdict::Refuse
        );
        e.sensors.noticed.clear();
        assert_eq!(refusals(&mut rx), ["topic_not_allowed"]);
        // Seal that does not open.
        let (mut payload, props) = sealed("s1", 1, t, b"r");
        payload[0] ^= 1;
        assert_eq!(send(&mut e, 1, t, &props, &payload), MessageVerdict::Refuse);
        e.sensors.noticed.clear();
        assert_eq!(refusals(&mut rx), ["bad_seal"]);
        // Replayed and too old.
        assert_eq!(send(&mut e, 1, t, &good, b"x"), accepted("s1", "gw1", None));
        assert_eq!(send(&mut e, 1, t, &good, b"x"), MessageVerdict::Refuse);
        e.sensors.noticed.clear();
        assert_eq!(refusals(&mut rx), ["replayed"]);
        assert_eq!(
            send(&mut e, 1, t, &mac_props("s1", 100, t, b"x"), b"x"),
            accepted("s1", "gw1", None)
        );
        assert_eq!(
            send(&mut e, 1, t, &mac_props("s1", 35, t, b"x"), b"x"),
            MessageVerdict::Refuse
        );
        e.sensors.noticed.clear();
        assert_eq!(refusals(&mut rx), ["too_old"]);
        // Suspended, then revoked, by the revocation state (the feed), before any TICK.
        for (seq, action, reason) in [
            (1, RevocationAction::Suspended, "suspended"),
            (2, RevocationAction::Revoked, "revoked"),
        ] {
            lock(&shared).revocations.apply(&FeedEntry {
                seq,
                scope: RevocationScope::Device,
                action,
                client_id: "s2".into(),
                serials: vec![],
                reason: None,
                at: "x".into(),
                model: None,
            });
            let t2 = "devices/s2/t";
            assert_eq!(
                send(
                    &mut e,
                    1,
                    t2,
                    &mac_props("s2", 10 + seq as u64, t2, b"x"),
                    b"x"
                ),
                MessageVerdict::Refuse
            );
            e.sensors.noticed.clear();
            assert_eq!(refusals(&mut rx), [reason.to_string()]);
        }
        // Keys not fetched yet for a gateway that just connected: refused, and fetched.
        assert!(matches!(
            connect(&mut e, 3, "gw3", "0c"),
            AuthOutcome::Success(_)
        ));
        drain(&mut rx);
        e.sensors.requested.clear();
        assert_eq!(send(&mut e, 3, t, &good, b"x"), MessageVerdict::Refuse);
        let msgs = drain(&mut rx);
        assert!(
            msgs.iter()
                .any(|m| matches!(m, ToService::FetchSensors(g) if g == "gw3")),
            "{msgs:?}"
        );
        assert!(msgs.iter().any(
            |m| matches!(m, ToService::Event(ev) if ev.refusal.as_deref() == Some("keys_pending"))
        ));
        // After all of that (far more than max_refused_messages), the gateway is still in.
        assert!(e.acl(1, Access::Publish, "devices/gw1/x"));
        assert_eq!(
            send(&mut e, 1, t, &mac_props("s1", 101, t, b"x"), b"x"),
            accepted("s1", "gw1", None)
        );
        // A connection that is not authenticated gets nothing.
        assert_eq!(
            send(&mut e, 9, t, &mac_props("s1", 102, t, b"x"), b"x"),
            MessageVerdict::Refuse
        );
    }

    #[test]
    fn replay_window_edges() {
        let (mut e, _s, _rx) = setup();
        let t = "devices/s1/t";
        let ok = |e: &mut Engine<Fake>, seq: u64| {
            send(e, 1, t, &mac_props("s1", seq, t, b"v"), b"v") != MessageVerdict::Refuse
        };
        assert!(ok(&mut e, 1));
        assert!(ok(&mut e, 200));
        assert!(ok(&mut e, 199), "just below the highest, not yet accepted");
        assert!(!ok(&mut e, 199), "accepted once");
        assert!(ok(&mut e, 136), "64 below the highest");
        assert!(!ok(&mut e, 135), "65 below the highest");
        assert!(!ok(&mut e, 200), "the highest itself");
        assert!(
            ok(&mut e, 264),
            "64 above: 200 is now at the window's far end"
        );
        assert!(!ok(&mut e, 200));
        assert!(ok(&mut e, u64::MAX - 1));
        assert!(ok(&mut e, u64::MAX), "the largest seq");
        assert!(!ok(&mut e, u64::MAX));
        assert_eq!(e.sensors.highest("s1"), Some(u64::MAX));
    }

    #[test]
    fn window_starts_at_the_larger_of_persisted_and_service_floor() {
        let (e, _shared, _rx) = engine();
        let mut e = e.with_sensor_counters(
            [("s1".to_string(), 50), ("s2".to_string(), 5)]
                .into_iter()
                .collect(),
        );
        assert!(matches!(
            connect(&mut e, 1, "gw1", "0a"),
            AuthOutcome::Success(_)
        ));
        e.tick(vec![FromService::SensorKeys {
            gateway: "gw1".into(),
            sensors: vec![
                material("s1", DeviceState::Active, 10),
                material("s2", DeviceState::Active, 30),
            ],
        }]);
        assert_eq!(e.sensors.highest("s1"), Some(50), "persisted here");
        assert_eq!(
            e.sensors.highest("s2"),
            Some(30),
            "reported by another broker"
        );
        let t1 = "devices/s1/t";
        for seq in [50, 20, 49] {
            assert_eq!(
                send(&mut e, 1, t1, &mac_props("s1", seq, t1, b"v"), b"v"),
                MessageVerdict::Refuse,
                "{seq}"
            );
        }
        assert_eq!(
            send(&mut e, 1, t1, &mac_props("s1", 51, t1, b"v"), b"v"),
            accepted("s1", "gw1", None)
        );
        // A refetch with a higher floor (the sensor was accepted elsewhere meanwhile) moves the
        // window up; a lower one leaves it.
        e.tick(vec![FromService::SensorKeys {
            gateway: "gw1".into(),
            sensors: vec![
                material("s1", DeviceState::Active, 40),
                material("s2", DeviceState::Active, 90),
            ],
        }]);
        assert_eq!(e.sensors.highest("s1"), Some(51));
        assert_eq!(e.sensors.highest("s2"), Some(90));
    }

    #[test]
    fn gateway_acl_is_widened_to_its_sensors_topics_for_sensor_readings_only() {
        let (mut e, _s, _rx) = setup();
        // The ACL sees no properties: it admits a PUBLISH on an active attached sensor's topic.
        assert!(e.acl(1, Access::Publish, "devices/s1/temp"));
        assert!(e.sensors.any_sensor_allows("gw1", "devices/s1/temp"));
        assert!(
            !e.sensors.any_sensor_allows("gw1", "devices/s3/temp"),
            "gw2's sensor"
        );
        assert!(
            !e.acl(1, Access::Subscribe, "devices/s1/temp"),
            "publish only"
        );
        assert!(!e.acl(1, Access::Subscribe, "devices/s3/temp"));
        assert!(
            !e.acl(1, Access::Publish, "$CONTROL/x/devices/s3"),
            "never a $ topic"
        );
        // A topic nobody allows passes the ACL once the gateway's set is known (so that another
        // gateway's sensor's reading is counted), and MESSAGE refuses whatever is not a reading
        // of its own sensors, without counting it against the connection.
        assert!(e.acl(1, Access::Publish, "devices/s3/temp"));
        for _ in 0..5 {
            assert_eq!(
                e.message(1, "devices/s3/temp", &[], b"x"),
                MessageVerdict::Refuse
            );
        }
        assert_eq!(
            send(
                &mut e,
                1,
                "devices/s3/temp",
                &mac_props("s3", 1, "devices/s3/temp", b"v"),
                b"v"
            ),
            MessageVerdict::Refuse,
            "gw2's sensor via gw1: not attached"
        );
        assert!(
            e.acl(1, Access::Publish, "devices/gw1/x"),
            "still connected"
        );
        let (mut fresh, _s2, _rx2) = engine();
        assert!(matches!(
            connect(&mut fresh, 1, "gw1", "0a"),
            AuthOutcome::Success(_)
        ));
        assert!(
            !fresh.acl(1, Access::Publish, "devices/s3/temp"),
            "the set not known yet: the ACL refuses"
        );
        // The gateway's own message there (no sensor claim) is refused; on its own topic it
        // passes as before.
        assert_eq!(
            e.message(1, "devices/s1/temp", &[], b"forged"),
            MessageVerdict::Refuse
        );
        assert_eq!(
            e.message(1, "devices/gw1/x", &[], b"x"),
            MessageVerdict::Accept {
                verified: None,
                via: None,
                payload: None
            }
        );
        // A forged devid-via or devid-verified is no sensor claim: the gateway's own message,
        // whose devid-* properties the broker strips.
        assert_eq!(
            e.message(
                1,
                "devices/gw1/x",
                &[("devid-via", "x"), ("devid-verified", "s1")],
                b"x"
            ),
            MessageVerdict::Accept {
                verified: None,
                via: None,
                payload: None
            }
        );
    }

    #[test]
    fn feed_drops_revoked_marks_suspended_and_refetches_on_updates() {
        let (mut e, shared, mut rx) = setup();
        drain(&mut rx);
        let t = "devices/s1/t";
        let entry = |seq: i64, action, cid: &str| FeedEntry {
            seq,
            scope: RevocationScope::Device,
            action,
            client_id: cid.into(),
            serials: vec![],
            reason: None,
            at: "x".into(),
            model: None,
        };
        let apply = |shared: &std::sync::Arc<std::sync::Mutex<crate::service::Shared>>,
                     en: FeedEntry| {
            match lock(shared).revocations.apply(&en) {
                Applied::Changed { recheck, .. } => recheck,
                Applied::Duplicate => panic!("duplicate"),
            }
        };
        let r = apply(&shared, entry(1, RevocationAction::Suspended, "s1"));
        assert!(
            e.tick(vec![FromService::Recheck(r)]).is_empty(),
            "a sensor is not kicked"
        );
        assert!(
            !e.sensors.any_sensor_allows("gw1", t),
            "a suspended sensor widens nothing"
        );
        assert_eq!(e.message(1, t, &[], b"x"), MessageVerdict::Refuse);
        let r = apply(&shared, entry(2, RevocationAction::Resumed, "s1"));
        e.sensors.requested.clear();
        e.tick(vec![FromService::Recheck(r)]);
        assert!(
            drain(&mut rx)
                .iter()
                .any(|m| matches!(m, ToService::FetchSensors(g) if g == "gw1")),
            "resumed: refetched"
        );
        e.tick(vec![FromService::SensorKeys {
            gateway: "gw1".into(),
            sensors: vec![material("s1", DeviceState::Active, 0)],
        }]);
        assert_eq!(
            send(&mut e, 1, t, &mac_props("s1", 1, t, b"v"), b"v"),
            accepted("s1", "gw1", None)
        );
        let r = apply(&shared, entry(3, RevocationAction::Revoked, "s1"));
        e.tick(vec![FromService::Recheck(r)]);
        assert_eq!(
            e.sensors.gateways_of("s1"),
            Vec::<String>::new(),
            "keys dropped everywhere"
        );
        // Updated: the gateway's set changed, or a sensor it holds changed.
        e.sensors.requested.clear();
        drain(&mut rx);
        e.tick(vec![FromService::Updated(Updated::Device("gw2".into()))]);
        e.tick(vec![FromService::Updated(Updated::Device("s3".into()))]);
        let fetches: Vec<String> = drain(&mut rx)
            .into_iter()
            .filter_map(|m| match m {
                ToService::FetchSensors(g) => Some(g),
                _ => None,
            })
            .collect();
        assert_eq!(fetches, ["gw2", "gw2"], "not throttled after a feed entry");
        // Keys for a gateway that has gone are not installed; a disconnect drops them.
        e.disconnect(2);
        e.tick(vec![FromService::SensorKeys {
            gateway: "gw2".into(),
            sensors: vec![material("s3", DeviceState::Active, 0)],
        }]);
        assert!(e.sensors.gateways_of("s3").is_empty());
    }

    #[test]
    fn counts_per_sensor_are_reported_with_the_highest_seq() {
        let (mut e, _s, mut rx) = setup();
        let t = "devices/s1/t";
        for seq in [3, 4] {
            assert_eq!(
                send(&mut e, 1, t, &mac_props("s1", seq, t, b"v"), b"v"),
                accepted("s1", "gw1", None)
            );
        }
        assert_eq!(
            send(&mut e, 1, t, &mac_props("s1", 4, t, b"v"), b"v"),
            MessageVerdict::Refuse
        );
        assert_eq!(
            send(&mut e, 1, t, &mac_props("s1", 5, t, b"w"), b"v"),
            MessageVerdict::Refuse
        );
        // gw2 relaying s1 (not attached there): counted for s1 via gw2.
        assert_eq!(
            send(&mut e, 2, t, &mac_props("s1", 6, t, b"v"), b"v"),
            MessageVerdict::Refuse
        );
        // A sensor not known here (another broker's gateway relays it) gets no counter, but its
        // `not_attached` readings are counted for the service.
        assert_eq!(
            send(&mut e, 1, t, &mac_props("zz9", 1, t, b"v"), b"v"),
            MessageVerdict::Refuse
        );
        drain(&mut rx);
        e.report_sensors(true);
        let report = drain(&mut rx)
            .into_iter()
            .find_map(|m| match m {
                ToService::Sensors(r) => Some(r),
                _ => None,
            })
            .expect("a report");
        assert_eq!(report.len(), 3, "{report:?}");
        let (a, b, z) = (&report[0], &report[1], &report[2]);
        assert_eq!(
            (z.sensor.as_str(), z.gateway.as_str(), z.highest_seq),
            ("zz9", "gw1", 0)
        );
        assert_eq!(z.delta.refused, [("not_attached", 1)].into_iter().collect());
        assert_eq!(e.sensors.highest("zz9"), None, "no counter");
        assert_eq!(
            (a.sensor.as_str(), a.gateway.as_str(), a.highest_seq),
            ("s1", "gw1", 4)
        );
        assert_eq!(a.delta.accepted, 2);
        assert!(a.delta.last_accepted_at.is_some());
        assert_eq!(
            a.delta.refused,
            [("bad_mac", 1), ("replayed", 1)].into_iter().collect()
        );
        assert_eq!(
            (b.sensor.as_str(), b.gateway.as_str(), b.highest_seq),
            ("s1", "gw2", 4)
        );
        assert_eq!(b.delta.accepted, 0);
        assert_eq!(b.delta.last_accepted_at, None);
        assert_eq!(b.delta.refused, [("not_attached", 1)].into_iter().collect());
        // Nothing new: no report.
        e.report_sensors(true);
        assert!(!drain(&mut rx)
            .iter()
            .any(|m| matches!(m, ToService::Sensors(_))));
    }

    #[test]
    fn refusals_are_logged_and_reported_at_most_once_a_second_per_sensor_and_reason() {
        let (mut e, _s, mut rx) = setup();
        drain(&mut rx);
        e.take_logs();
        let t = "devices/s1/t";
        for _ in 0..100 {
            assert_eq!(
                send(&mut e, 1, t, &mac_props("s1", 1, t, b"w"), b"v"),
                MessageVerdict::Refuse
            );
        }
        let other = "devices/s2/t";
        assert_eq!(
            send(&mut e, 1, other, &mac_props("s1", 1, other, b"v"), b"v"),
            MessageVerdict::Refuse
        );
        assert_eq!(
            refusals(&mut rx),
            ["bad_mac", "topic_not_allowed"],
            "another reason is noticed"
        );
        let logs = e.take_logs();
        assert_eq!(logs.len(), 2, "{logs:?}");
        assert!(
            logs[0].1.contains("refused reading of sensor s1 via gw1"),
            "{logs:?}"
        );
        e.report_sensors(true);
        let n: u64 = drain(&mut rx)
            .into_iter()
            .filter_map(|m| match m {
                ToService::Sensors(r) => Some(
                    r.iter()
                        .map(|t| t.delta.refused.values().sum::<u64>())
                        .sum::<u64>(),
                ),
                _ => None,
            })
            .sum();
        assert_eq!(n, 101, "every refusal counted");
    }

    #[test]
    fn acl_index_finds_filters_by_their_first_two_literal_levels() {
        assert_eq!(prefix2("devices/s1/#"), Some("devices/s1"));
        assert_eq!(prefix2("devices/s1"), Some("devices/s1"));
        assert_eq!(prefix2("devices/s1/a/b"), Some("devices/s1"));
        assert_eq!(prefix2("devices/+/x"), None);
        assert_eq!(prefix2("#"), None);
        assert_eq!(prefix2("a"), None);
        let mut m = material("s1", DeviceState::Active, 0);
        m.publish = vec!["devices/s1/#".into(), "+/s1/up".into(), "x".into()];
        let set = GatewaySet::new([("s1".to_string(), m)].into_iter().collect());
        for ok in ["devices/s1", "devices/s1/t", "any/s1/up", "x"] {
            assert!(set.allows(ok), "{ok}");
        }
        for no in ["devices/s2/t", "devices", "any/s1/down", "y"] {
            assert!(!set.allows(no), "{no}");
        }
    }

    #[test]
    fn material_is_checked() {
        assert!(SensorMaterial::new(
            "s/1",
            DeviceState::Active,
            &b64(&K_MAC),
            &b64(&K_ENC),
            &[],
            0
        )
        .is_err());
        assert!(
            SensorMaterial::new("s1", DeviceState::Active, "short", &b64(&K_ENC), &[], 0).is_err()
        );
        assert!(SensorMaterial::new(
            "s1",
            DeviceState::Active,
            &b64(&K_MAC),
            &URL_SAFE_NO_PAD.encode([0u8; 31]),
            &[],
            0
        )
        .is_err());
        let m = material("s1", DeviceState::Active, 0);
        assert_eq!(
            m.publish,
            ["devices/s1/#"],
            "%c expanded, the invalid filter dropped"
        );
        assert!(!format!("{m:?}").contains("17"), "no key bytes in Debug");
    }
}
