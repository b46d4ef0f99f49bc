//! The plugin's revocation state and device-status cache: what the device feed said, what the
//! service said about each device, and when the service was last heard from. Persisted in
//! `state_dir` so a broker restarted while the service is down still knows every revocation it
//! saw.
//!
//! Files (written atomically: temp file, fsync, rename):
//! - `state.json`: [`RevocationState`] (feed position, revoked/held serials, revoked/suspended
//!   devices, cached device status and policy);
//! - `contact`: the unix time (seconds) of the last successful contact with the service, written
//!   often and kept apart so that it stays cheap;
//! - `sensors.json`: the highest accepted seq of each sensor whose readings this broker
//!   accepted (a JSON object, ClientID to seq), written with each report of sensor counts
//!   (about once a second while readings arrive), never per message.

#![deny(unsafe_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use devid_core::api::{
    DeviceState, DeviceStatus, FeedEntry, RevocationAction, RevocationScope, TopicPolicy,
};
use devid_core::{ConnectWith, MessageAuth};
use serde::{Deserialize, Serialize};

pub const STATE_FILE: &str = "state.json";
pub const CONTACT_FILE: &str = "contact";
pub const SENSORS_FILE: &str = "sensors.json";

/// A certificate the feed has taken out of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SerialState {
    /// certificateHold: the device is suspended; a resume lifts it.
    Hold,
    /// Final.
    Revoked,
}

/// What the service said about one device, kept for policy and allow-list checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedStatus {
    /// The device's model, so a model-wide settings change finds its devices.
    #[serde(default)]
    pub model: Option<String>,
    pub policy: TopicPolicy,
    pub allowed_cidrs: Vec<String>,
    pub message_auth: MessageAuth,
    /// Which certificates the device's model admits (`ldevid`: LDevIDs only).
    #[serde(default)]
    pub connect_with: ConnectWith,
    /// The answer's ETag, sent back as If-None-Match on the next fetch.
    #[serde(default)]
    pub etag: Option<String>,
}

impl From<&DeviceStatus> for CachedStatus {
    fn from(s: &DeviceStatus) -> Self {
        CachedStatus {
            model: s.model.clone(),
            policy: s.policy.clone().unwrap_or_default(),
            allowed_cidrs: s.allowed_cidrs.clone(),
            message_auth: s.message_auth,
            connect_with: s.connect_with,
            etag: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RevocationState {
    /// The seq of the last feed entry applied (0: none).
    pub seq: i64,
    /// Serials (lowercase hex) that are on hold or revoked.
    pub serials: BTreeMap<String, SerialState>,
    /// Devices that are revoked or suspended (active devices are absent).
    pub devices: BTreeMap<String, DeviceState>,
    /// Device status and policy as last fetched.
    pub statuses: BTreeMap<String, CachedStatus>,
    /// Revoked issuing CAs by id, with when this broker learned of it (unix seconds).
    #[serde(default)]
    pub issuers: BTreeMap<String, u64>,
}

/// Who must be re-checked after a change: connections of this ClientID or using one of these
/// serials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recheck {
    pub client_id: String,
    pub serials: Vec<String>,
    /// An issuing CA was revoked: every connection under it (and every resumed one, whose
    /// issuer is unknown) is checked.
    pub issuer: Option<String>,
}

/// Why a device is refused by the revocation state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    DeviceRevoked,
    DeviceSuspended,
    SerialRevoked,
    SerialOnHold,
    /// The certificate's issuing CA is revoked (or, for a resumption, the ticket predates an
    /// issuing CA's revocation: a full handshake shows which CA signed the certificate).
    IssuerRevoked,
}

impl Denial {
    pub fn as_str(&self) -> &'static str {
        match self {
            Denial::DeviceRevoked => "device revoked",
            Denial::DeviceSuspended => "device suspended",
            Denial::SerialRevoked => "certificate revoked",
            Denial::SerialOnHold => "certificate on hold",
            Denial::IssuerRevoked => "issuing CA revoked",
        }
    }
}

/// Serials are compared in core's canonical form ([`DeviceIdentity::serial_hex`]: lowercase
/// hex, leading zero bytes removed), which is also what the service stores and publishes.
/// Text that is not hexadecimal cannot match any certificate; it is kept lowercased so it is
/// still recorded.
///
/// [`DeviceIdentity::serial_hex`]: devid_core::protocol::DeviceIdentity::serial_hex
pub fn normalize_serial(s: &str) -> String {
    devid_core::protocol::normalize_serial_hex(s).unwrap_or_else(|| s.trim().to_ascii_lowercase())
}

/// Outcome of applying one feed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Already seen (seq not above ours): nothing changed.
    Duplicate,
    /// Applied; these connections need a re-check. `gap` is true when entries were skipped
    /// (the caller should catch up from the API).
    Changed { recheck: Recheck, gap: bool },
}

impl RevocationState {
    /// Applies one feed entry. Revocation is final: a later `resumed` never lifts it.
    pub fn apply(&mut self, e: &FeedEntry) -> Applied {
        if e.seq <= self.seq {
            return Applied::Duplicate;
        }
        let gap = e.seq > self.seq + 1;
        self.seq = e.seq;
        let serials: Vec<String> = e.serials.iter().map(|s| normalize_serial(s)).collect();
        if e.scope == RevocationScope::IssuingCa {
            if e.action == RevocationAction::Revoked {
                self.issuers.insert(e.client_id.clone(), unix_now());
            }
            return Applied::Changed {
                recheck: Recheck {
                    client_id: String::new(),
                    serials: Vec::new(),
                    issuer: Some(e.client_id.clone()),
                },
                gap,
            };
        }
        match (e.action, e.scope) {
            (RevocationAction::Revoked, scope) => {
                for s in &serials {
                    self.serials.insert(s.clone(), SerialState::Revoked);
                }
                if scope == RevocationScope::Device {
                    self.devices
                        .insert(e.client_id.clone(), DeviceState::Revoked);
                }
            }
            (RevocationAction::Suspended, _) => {
                for s in &serials {
                    self.serials.entry(s.clone()).or_insert(SerialState::Hold);
                }
                if self.devices.get(&e.client_id) != Some(&DeviceState::Revoked) {
                    self.devices
                        .insert(e.client_id.clone(), DeviceState::Suspended);
                }
            }
            (RevocationAction::Resumed, _) => {
                for s in &serials {
                    if self.serials.get(s) == Some(&SerialState::Hold) {
                        self.serials.remove(s);
                    }
                }
                if self.devices.get(&e.client_id) == Some(&DeviceState::Suspended) {
                    self.devices.remove(&e.client_id);
                }
            }
            // Settings changed, not revocation state: the re-check that follows fetches them.
            // A rotation (scope issuing_ca) was handled above.
            (RevocationAction::Updated | RevocationAction::Rotated, _) => {}
        }
        Applied::Changed {
            recheck: Recheck {
                client_id: e.client_id.clone(),
                serials,
                issuer: None,
            },
            gap,
        }
    }

    /// Records a fetched device status: its policy and allow-list, and a final revocation (the
    /// feed remains the source for suspension and resumption, so an older answer cannot undo a
    /// newer feed entry).
    pub fn apply_status(&mut self, s: &DeviceStatus) -> Recheck {
        self.apply_status_tagged(s, None)
    }

    /// [`apply_status`](Self::apply_status), remembering the answer's ETag.
    pub fn apply_status_tagged(&mut self, s: &DeviceStatus, etag: Option<String>) -> Recheck {
        let serials: Vec<String> = s
            .revoked_serials
            .iter()
            .map(|x| normalize_serial(x))
            .collect();
        if s.status == DeviceState::Revoked {
            self.devices
                .insert(s.client_id.clone(), DeviceState::Revoked);
            for x in &serials {
                self.serials.insert(x.clone(), SerialState::Revoked);
            }
        }
        let mut cached = CachedStatus::from(s);
        cached.etag = etag;
        self.statuses.insert(s.client_id.clone(), cached);
        Recheck {
            client_id: s.client_id.clone(),
            serials,
            issuer: None,
        }
    }

    /// The issuing CA rule: a certificate under a revoked issuing CA is refused; so is a
    /// resumption (`issuer` None) whose chain was verified before an issuing CA's revocation.
    pub fn check_issuer(&self, issuer: Option<&str>, verified_at: u64) -> Result<(), Denial> {
        match issuer {
            Some(id) if self.issuers.contains_key(id) => Err(Denial::IssuerRevoked),
            None if self.issuers.values().any(|at| *at >= verified_at) => {
                Err(Denial::IssuerRevoked)
            }
            _ => Ok(()),
        }
    }

    /// Whether the revocation state refuses this device/certificate.
    pub fn check(&self, client_id: &str, serial: &str) -> Result<(), Denial> {
        match self.devices.get(client_id) {
            Some(DeviceState::Revoked) => return Err(Denial::DeviceRevoked),
            Some(DeviceState::Suspended) => return Err(Denial::DeviceSuspended),
            _ => {}
        }
        match self.serials.get(&normalize_serial(serial)) {
            Some(SerialState::Revoked) => Err(Denial::SerialRevoked),
            Some(SerialState::Hold) => Err(Denial::SerialOnHold),
            None => Ok(()),
        }
    }

    pub fn load(dir: &Path) -> Result<Option<RevocationState>, String> {
        let path = dir.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<RevocationState>(&bytes)
                .map(|mut st| {
                    // Files written before serials took core's canonical form stripped leading
                    // zero digits rather than bytes: re-key them.
                    st.serials = std::mem::take(&mut st.serials)
                        .into_iter()
                        .map(|(k, v)| (normalize_serial(&k), v))
                        .collect();
                    Some(st)
                })
                .map_err(|e| format!("{} is corrupt: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        write_atomic(dir, STATE_FILE, &bytes)
    }
}

/// Writes `dir/name` so that a reader sees the old or the new contents, never a torn file.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn load_contact(dir: &Path) -> Option<u64> {
    std::fs::read_to_string(dir.join(CONTACT_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

pub fn save_contact(dir: &Path, at: u64) -> std::io::Result<()> {
    write_atomic(dir, CONTACT_FILE, at.to_string().as_bytes())
}

/// The persisted highest accepted seq per sensor (empty when the file does not exist yet).
pub fn load_sensor_counters(dir: &Path) -> Result<BTreeMap<String, u64>, String> {
    let path = dir.join(SENSORS_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("{} is corrupt: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

pub fn save_sensor_counters(dir: &Path, counters: &BTreeMap<String, u64>) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(counters).map_err(std::io::Error::other)?;
    write_atomic(dir, SENSORS_FILE, &bytes)
}

/// Whether the state is fresh enough to admit devices: the service was heard from within
/// `max_staleness`. Never heard from (no cache, service down): not fresh, fail closed.
pub fn is_fresh(last_contact: Option<u64>, now: u64, max_staleness: Duration) -> bool {
    match last_contact {
        Some(t) => now.saturating_sub(t) <= max_staleness.as_secs(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devid_core::api::RevocationReason;

    fn entry(
        seq: i64,
        scope: RevocationScope,
        action: RevocationAction,
        cid: &str,
        serials: &[&str],
    ) -> FeedEntry {
        FeedEntry {
            seq,
            scope,
            action,
            client_id: cid.into(),
            serials: serials.iter().map(|s| s.to_string()).collect(),
            reason: Some(RevocationReason::KeyCompromise),
            at: "2026-11-25T13:00:00Z".into(),
            model: None,
        }
    }

    #[test]
    fn feed_revoke_suspend_resume() {
        let mut s = RevocationState::default();
        assert_eq!(s.check("a", "01"), Ok(()));
        let r = s.apply(&entry(
            1,
            RevocationScope::Device,
            RevocationAction::Suspended,
            "a",
            &["0A1b"],
        ));
        assert_eq!(
            r,
            Applied::Changed {
                recheck: Recheck {
                    client_id: "a".into(),
                    serials: vec!["0a1b".into()],
                    issuer: None,
                },
                gap: false
            }
        );
        assert_eq!(s.check("a", "zz"), Err(Denial::DeviceSuspended));
        assert_eq!(s.check("b", "a1b"), Err(Denial::SerialOnHold));
        s.apply(&entry(
            2,
            RevocationScope::Device,
            RevocationAction::Resumed,
            "a",
            &["a1b"],
        ));
        assert_eq!(s.check("a", "a1b"), Ok(()));
        s.apply(&entry(
            3,
            RevocationScope::Certificate,
            RevocationAction::Revoked,
            "a",
            &["a1b"],
        ));
        assert_eq!(s.check("a", "a1b"), Err(Denial::SerialRevoked));
        assert_eq!(
            s.check("a", "ff"),
            Ok(()),
            "certificate scope leaves the device"
        );
        s.apply(&entry(
            4,
            RevocationScope::Device,
            RevocationAction::Revoked,
            "a",
            &["ff"],
        ));
        assert_eq!(s.check("a", "99"), Err(Denial::DeviceRevoked));
        // Revocation is final.
        s.apply(&entry(
            5,
            RevocationScope::Device,
            RevocationAction::Resumed,
            "a",
            &["ff"],
        ));
        assert_eq!(s.check("a", "99"), Err(Denial::DeviceRevoked));
        assert_eq!(s.serials.get("ff"), Some(&SerialState::Revoked));
        assert_eq!(s.seq, 5);
    }

    #[test]
    fn feed_duplicates_and_gaps() {
        let mut s = RevocationState::default();
        let e = entry(
            1,
            RevocationScope::Device,
            RevocationAction::Revoked,
            "a",
            &[],
        );
        assert!(matches!(s.apply(&e), Applied::Changed { gap: false, .. }));
        assert_eq!(s.apply(&e), Applied::Duplicate);
        let e = entry(
            5,
            RevocationScope::Device,
            RevocationAction::Revoked,
            "b",
            &[],
        );
        assert!(matches!(s.apply(&e), Applied::Changed { gap: true, .. }));
        assert_eq!(s.seq, 5);
    }

    #[test]
    fn status_adds_revocation_never_lifts_suspension() {
        let mut s = RevocationState::default();
        s.apply(&entry(
            1,
            RevocationScope::Device,
            RevocationAction::Suspended,
            "a",
            &[],
        ));
        let st = DeviceStatus {
            client_id: "a".into(),
            status: DeviceState::Active,
            model: None,
            revoked_serials: vec![],
            policy: None,
            allowed_cidrs: vec!["10.0.0.0/8".into()],
            message_auth: MessageAuth::Off,
            connect_with: devid_core::ConnectWith::Any,
        };
        s.apply_status_tagged(&st, Some("\"abc\"".into()));
        assert_eq!(s.statuses["a"].etag.as_deref(), Some("\"abc\""));
        assert_eq!(s.check("a", "1"), Err(Denial::DeviceSuspended));
        assert_eq!(s.statuses["a"].policy, TopicPolicy::default());
        assert_eq!(
            s.statuses["a"].allowed_cidrs,
            vec!["10.0.0.0/8".to_string()]
        );
        let st = DeviceStatus {
            client_id: "b".into(),
            status: DeviceState::Revoked,
            revoked_serials: vec!["0B".into()],
            ..st
        };
        s.apply_status(&st);
        assert_eq!(s.check("b", "1"), Err(Denial::DeviceRevoked));
        assert_eq!(s.check("c", "b"), Err(Denial::SerialRevoked));
    }

    #[test]
    fn persists_and_reloads() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(RevocationState::load(dir.path()), Ok(None));
        let mut s = RevocationState::default();
        s.apply(&entry(
            7,
            RevocationScope::Device,
            RevocationAction::Revoked,
            "a",
            &["1"],
        ));
        s.save(dir.path()).expect("save");
        assert_eq!(RevocationState::load(dir.path()), Ok(Some(s)));
        assert!(!dir.path().join(".state.json.tmp").exists());
        std::fs::write(dir.path().join(STATE_FILE), b"{garbage").expect("w");
        assert!(RevocationState::load(dir.path()).is_err());
        save_contact(dir.path(), 1234).expect("contact");
        assert_eq!(load_contact(dir.path()), Some(1234));
    }

    #[test]
    fn sensor_counters_persist_and_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load_sensor_counters(dir.path()), Ok(BTreeMap::new()));
        let c: BTreeMap<String, u64> = [("s1".to_string(), 7), ("s2".to_string(), u64::MAX - 1)]
            .into_iter()
            .collect();
        save_sensor_counters(dir.path(), &c).expect("save");
        assert_eq!(load_sensor_counters(dir.path()), Ok(c));
        std::fs::write(dir.path().join(SENSORS_FILE), b"{\"s1\": -1}").expect("w");
        assert!(load_sensor_counters(dir.path()).is_err());
    }

    #[test]
    fn freshness_fails_closed() {
        let m = Duration::from_secs(10);
        assert!(!is_fresh(None, 100, m));
        assert!(is_fresh(Some(95), 100, m));
        assert!(is_fresh(Some(90), 100, m));
        assert!(!is_fresh(Some(89), 100, m));
        // A clock that went backwards still counts as fresh contact.
        assert!(is_fresh(Some(105), 100, m));
    }

    #[test]
    fn serials_normalize_like_core_and_the_service() {
        // Leading zero bytes go, a leading zero digit of a non-zero byte stays (as in
        // DeviceIdentity::serial_hex and devid-server's normalize_serial).
        assert_eq!(normalize_serial("00:0A:ff"), "0aff");
        assert_eq!(normalize_serial("aff"), "0aff");
        assert_eq!(normalize_serial(" 4F3A "), "4f3a");
        assert_eq!(normalize_serial("0"), "00");
        assert_eq!(normalize_serial("000"), "00");
        assert_eq!(normalize_serial("xyz"), "xyz");
    }
}
