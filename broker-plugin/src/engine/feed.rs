//! What TICK applies from the service thread: its log lines, re-checks of live connections after
//! a feed entry or a status answer (a connection that no longer passes is denied everything and
//! kicked), and settings updates, which refetch the statuses of the connected devices they
//! concern. Status fetches are throttled per device. Sensor keys fetched for a gateway are
//! installed here; a feed entry about a sensor or a gateway refetches or drops them, and the
//! per-sensor counts leave for the service thread about once a second.

#![deny(unsafe_code)]

use std::time::{Duration, Instant};

use devid_core::api::ConnectionEventKind;
use devid_core::api::DeviceState;

use super::{Conn, Engine, ServerSide};
use crate::refusal::Refusal;
use crate::service::{lock, FromService, LogLevel, ToService, Updated};
use crate::state::{self, Recheck};

/// A device's status is refetched at most this often.
const STATUS_REFRESH: Duration = Duration::from_secs(1);

impl<S: ServerSide> Engine<S> {
    /// MOSQ_EVT_TICK: applies what the service thread sent. Returns the ClientIDs to kick; the
    /// caller kicks them after releasing every borrow of the engine (a kick re-enters
    /// DISCONNECT).
    pub fn tick(&mut self, inbox: impl IntoIterator<Item = FromService>) -> Vec<String> {
        self.last_tick = Some(Instant::now());
        let mut kicks = Vec::new();
        for msg in inbox {
            match msg {
                FromService::Log(level, line) => self.log(level, line),
                FromService::Recheck(r) => {
                    self.recheck_sensor(&r.client_id);
                    self.recheck(&r, &mut kicks);
                }
                FromService::Updated(u) => self.updated(&u),
                FromService::SensorKeys { gateway, sensors } => {
                    // Only for a gateway still connected: its keys go with its last connection.
                    if !self.authenticated_keys(&gateway).is_empty() {
                        self.log(
                            LogLevel::Info,
                            format!("devid: sensor keys of {gateway}: {} sensors", sensors.len()),
                        );
                        self.sensors.install(&gateway, sensors);
                    }
                }
                FromService::Renewed { key, reply } => self.renewal_answered(key, reply),
                FromService::CaSet(set) => {
                    self.log(
                        LogLevel::Info,
                        format!(
                            "devid: CA set from the service: {} CAs ({})",
                            set.len(),
                            set.ids().join(", ")
                        ),
                    );
                    self.server.use_ca_set(set);
                }
            }
        }
        self.report_sensors(false);
        self.report_counters(false);
        self.handshakes.forget_full_buckets();
        // Forget fetch times once they no longer throttle anything (bounded memory).
        self.status_requested
            .retain(|_, t| t.elapsed() < STATUS_REFRESH);
        kicks.sort();
        kicks.dedup();
        kicks
    }

    pub(super) fn request_status(&mut self, client_id: &str) {
        let due = self
            .status_requested
            .get(client_id)
            .is_none_or(|t| t.elapsed() >= STATUS_REFRESH);
        if due {
            self.status_requested
                .insert(client_id.to_string(), Instant::now());
            self.send(ToService::FetchStatus(client_id.to_string()));
        }
    }

    /// Asks the service thread for the sensor keys of a gateway (throttled per gateway).
    pub(super) fn request_sensors(&mut self, gateway: &str) {
        if self.sensors.fetch_due(gateway) {
            self.send(ToService::FetchSensors(gateway.to_string()));
        }
    }

    /// Hands the per-sensor counts to the service thread (which reports and persists them)
    /// once [`sensor::REPORT_EVERY`](super::sensor) has passed, or at once with `force`.
    pub fn report_sensors(&mut self, force: bool) {
        let report = self.sensors.take_report(force);
        if !report.is_empty() && !self.try_send(ToService::Sensors(report)) {
            self.log(
                LogLevel::Warning,
                "devid: service queue full; sensor counts of the last second not reported".into(),
            );
        }
    }

    /// A feed entry about `client_id`: when it is a sensor held here, a revocation drops its
    /// keys from every gateway and a suspension marks it; anything else (a resumption, a
    /// settings change) refetches the keys of the gateways that hold it.
    fn recheck_sensor(&mut self, client_id: &str) {
        let holders = self.sensors.gateways_of(client_id);
        if holders.is_empty() {
            return;
        }
        let denied = lock(&self.shared)
            .revocations
            .devices
            .get(client_id)
            .copied();
        match denied {
            Some(state @ (DeviceState::Revoked | DeviceState::Suspended)) => {
                self.sensors.set_denied(client_id, state);
                self.log(
                    LogLevel::Notice,
                    format!(
                        "devid: sensor {client_id} {}: its readings are refused",
                        state.as_str()
                    ),
                );
            }
            _ => {
                for g in holders {
                    self.sensors.unthrottle(&g);
                    self.request_sensors(&g);
                }
            }
        }
    }

    /// Settings changed in the service: forget when the affected devices' statuses were
    /// fetched (so a reconnect fetches again) and fetch them now for the connected ones; the
    /// fresh status applies at once (ACL, message authentication) and its re-check kicks a
    /// connection that fails the new allow-list.
    fn updated(&mut self, u: &Updated) {
        let affected: Vec<String> = match u {
            Updated::Device(cid) => vec![cid.clone()],
            Updated::Model(model) => lock(&self.shared)
                .revocations
                .statuses
                .iter()
                .filter(|(_, s)| s.model.as_deref() == Some(model.as_str()))
                .map(|(cid, _)| cid.clone())
                .collect(),
        };
        let mut connected: Vec<String> = self
            .conns
            .values()
            .filter_map(|c| match c {
                Conn::Authenticated(a) if affected.contains(&a.identity.client_id) => {
                    Some(a.identity.client_id.clone())
                }
                _ => None,
            })
            .collect();
        connected.sort();
        connected.dedup();
        for cid in &affected {
            self.status_requested.remove(cid);
        }
        // Sensor keys: a connected gateway whose set changed, the gateways holding a sensor whose
        // settings changed, and for a model's change every gateway with sensors (the model may
        // be a sensor's, whose topic template changed).
        let mut gateways: Vec<String> = match u {
            Updated::Device(cid) => self.sensors.gateways_of(cid),
            Updated::Model(_) => self.sensors.gateways_with_sensors(),
        };
        if let Updated::Device(cid) = u {
            if !self.authenticated_keys(cid).is_empty() {
                gateways.push(cid.clone());
            }
        }
        gateways.sort();
        gateways.dedup();
        for g in gateways {
            self.sensors.unthrottle(&g);
            self.request_sensors(&g);
        }
        for cid in connected {
            self.request_status(&cid);
        }
    }

    fn recheck(&mut self, r: &Recheck, kicks: &mut Vec<String>) {
        let serials: Vec<String> = r
            .serials
            .iter()
            .map(|s| state::normalize_serial(s))
            .collect();
        let mut denied = Vec::new();
        for (key, conn) in &self.conns {
            let Conn::Authenticated(a) = conn else {
                continue;
            };
            let concerned = match &r.issuer {
                Some(issuer) => a.identity.issuer.as_ref().is_none_or(|i| i == issuer),
                None => {
                    a.identity.client_id == r.client_id
                        || serials.contains(&state::normalize_serial(&a.identity.serial))
                }
            };
            if !concerned {
                continue;
            }
            if let Err(reason) = self.admissible(&a.identity, a.address.as_deref()) {
                denied.push((
                    *key,
                    a.identity.client_id.clone(),
                    a.address.clone(),
                    reason,
                ));
            }
        }
        for (key, cid, address, reason) in denied {
            self.mark_denied(key);
            self.log(
                LogLevel::Notice,
                format!("devid: disconnecting {cid}: {reason} [{}]", reason.name()),
            );
            // A connection admitted before its status said `connect_with ldevid` is refused
            // now: reported like a refusal at connect time.
            if matches!(reason, Refusal::LdevidRequired { .. }) {
                self.event(
                    ConnectionEventKind::AuthFailure,
                    &cid,
                    address.as_deref(),
                    Some(&reason),
                );
            }
            kicks.push(cid);
        }
    }
}

#[cfg(test)]
mod tests {
    use devid_core::api::{
        DeviceState, DeviceStatus, FeedEntry, RevocationAction, RevocationScope, TopicPolicy,
    };
    use tokio::sync::mpsc;

    use super::super::testing::*;
    use super::super::AuthOutcome;
    use crate::policy::Access;
    use crate::service::{lock, FromService, ToService, Updated};
    use crate::state;

    #[test]
    fn fail_revoked_and_suspended_and_kick_on_feed() {
        let (mut e, shared, _rx) = engine();
        assert!(matches!(
            connect(&mut e, 1, "dev1", "0a"),
            AuthOutcome::Success(_)
        ));
        assert!(matches!(
            connect(&mut e, 2, "dev2", "0b"),
            AuthOutcome::Success(_)
        ));
        let entry = FeedEntry {
            seq: 1,
            scope: RevocationScope::Device,
            action: RevocationAction::Suspended,
            client_id: "dev1".into(),
            serials: vec!["0a".into()],
            reason: None,
            at: "x".into(),
            model: None,
        };
        let recheck = match lock(&shared).revocations.apply(&entry) {
            state::Applied::Changed { recheck, .. } => recheck,
            state::Applied::Duplicate => panic!("duplicate"),
        };
        let kicks = e.tick(vec![FromService::Recheck(recheck)]);
        assert_eq!(kicks, vec!["dev1".to_string()]);
        assert!(
            !e.acl(1, Access::Publish, "devices/dev1/x"),
            "denied until the kick lands"
        );
        assert!(e.acl(2, Access::Publish, "devices/dev2/x"));
        e.disconnect(1);
        assert_eq!(connect(&mut e, 3, "dev1", "0a"), AuthOutcome::Deny);
        // A revoked certificate serial, whatever the device.
        lock(&shared).revocations.apply(&FeedEntry {
            seq: 2,
            scope: RevocationScope::Certificate,
            action: RevocationAction::Revoked,
            client_id: "dev3".into(),
            serials: vec!["0c".into()],
            reason: None,
            at: "x".into(),
            model: None,
        });
        assert_eq!(connect(&mut e, 4, "dev3", "0C"), AuthOutcome::Deny);
        assert!(matches!(
            connect(&mut e, 5, "dev3", "0d"),
            AuthOutcome::Success(_)
        ));
    }

    fn issuing_ca_entry(seq: i64, action: RevocationAction, id: &str) -> FeedEntry {
        FeedEntry {
            seq,
            scope: RevocationScope::IssuingCa,
            action,
            client_id: id.into(),
            serials: vec!["7f01".into()],
            reason: None,
            at: "x".into(),
            model: None,
        }
    }

    #[test]
    fn a_revoked_issuing_ca_kicks_and_refuses_what_it_signed() {
        let (mut e, shared, _rx) = engine();
        // "serial:issuer"; without an issuer the connection stands for a resumption.
        for (key, cid, serial) in [
            (1, "dev1", "0a:aa"),
            (2, "dev2", "0b:bb"),
            (3, "dev3", "0c"),
        ] {
            assert!(matches!(
                connect(&mut e, key, cid, serial),
                AuthOutcome::Success(_)
            ));
        }
        // A rotation changes nothing for live connections.
        let rotated = issuing_ca_entry(1, RevocationAction::Rotated, "bb");
        let recheck = match lock(&shared).revocations.apply(&rotated) {
            state::Applied::Changed { recheck, .. } => recheck,
            state::Applied::Duplicate => panic!("duplicate"),
        };
        assert!(e.tick(vec![FromService::Recheck(recheck)]).is_empty());

        let revoked = issuing_ca_entry(2, RevocationAction::Revoked, "aa");
        let recheck = match lock(&shared).revocations.apply(&revoked) {
            state::Applied::Changed { recheck, .. } => recheck,
            state::Applied::Duplicate => panic!("duplicate"),
        };
        let kicks = e.tick(vec![FromService::Recheck(recheck)]);
        assert_eq!(kicks, vec!["dev1".to_string(), "dev3".to_string()]);
        assert!(e.acl(2, Access::Publish, "devices/dev2/x"));
        assert_eq!(connect(&mut e, 4, "dev4", "0d:aa"), AuthOutcome::Deny);
        assert!(matches!(
            connect(&mut e, 5, "dev5", "0e:bb"),
            AuthOutcome::Success(_)
        ));
    }

    #[test]
    fn fetched_policy_and_allow_list_apply() {
        let (mut e, shared, _rx) = engine();
        assert!(matches!(
            connect(&mut e, 1, "dev1", "0a"),
            AuthOutcome::Success(_)
        ));
        let status = DeviceStatus {
            client_id: "dev1".into(),
            status: DeviceState::Active,
            model: None,
            revoked_serials: vec![],
            policy: Some(TopicPolicy {
                publish: vec!["t/%c".into()],
                subscribe: vec![],
            }),
            allowed_cidrs: vec!["10.0.0.0/8".into()],
            message_auth: devid_core::MessageAuth::Off,
            connect_with: devid_core::ConnectWith::Any,
        };
        let r = lock(&shared).revocations.apply_status(&status);
        assert!(e.acl(1, Access::Publish, "t/dev1"));
        assert!(!e.acl(1, Access::Publish, "devices/dev1/x"));
        let kicks = e.tick(vec![FromService::Recheck(r)]);
        assert_eq!(kicks, vec!["dev1".to_string()], "127.0.0.1 is not in 10/8");
        e.disconnect(1);
        assert_eq!(connect(&mut e, 2, "dev1", "0a"), AuthOutcome::Deny);
    }

    fn status_of(cid: &str, model: &str) -> DeviceStatus {
        DeviceStatus {
            client_id: cid.into(),
            status: DeviceState::Active,
            model: Some(model.into()),
            revoked_serials: vec![],
            policy: None,
            allowed_cidrs: vec![],
            message_auth: devid_core::MessageAuth::Off,
            connect_with: devid_core::ConnectWith::Any,
        }
    }

    fn fetches(rx: &mut mpsc::Receiver<ToService>) -> Vec<String> {
        let mut v: Vec<String> = drain(rx)
            .into_iter()
            .filter_map(|m| match m {
                ToService::FetchStatus(id) => Some(id),
                _ => None,
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn updated_settings_refetch_the_connected_devices_they_concern() {
        let (mut e, shared, mut rx) = engine();
        for (key, cid) in [(1, "dev1"), (2, "dev2"), (3, "dev3")] {
            assert!(matches!(
                connect(&mut e, key, cid, "0a"),
                AuthOutcome::Success(_)
            ));
        }
        {
            let mut g = lock(&shared);
            g.revocations.apply_status(&status_of("dev1", "sensor"));
            g.revocations.apply_status(&status_of("dev2", "sensor"));
            g.revocations.apply_status(&status_of("dev3", "gateway"));
            // Cached but not connected here.
            g.revocations.apply_status(&status_of("dev4", "sensor"));
        }
        // The connects just fetched: without an update nothing is fetched again yet.
        assert_eq!(fetches(&mut rx), ["dev1", "dev2", "dev3"]);
        e.tick(vec![FromService::Updated(Updated::Device("dev2".into()))]);
        assert_eq!(
            fetches(&mut rx),
            ["dev2"],
            "fetched again despite the throttle"
        );
        e.tick(vec![FromService::Updated(Updated::Model("sensor".into()))]);
        assert_eq!(fetches(&mut rx), ["dev1", "dev2"], "connected sensors only");
        e.tick(vec![FromService::Updated(Updated::Device("nobody".into()))]);
        assert!(fetches(&mut rx).is_empty());
    }
}
