//! What an authenticated connection may do: the topic ACL (the device's fetched policy, or the
//! default one for a device never fetched) and the per-message authentication of its
//! PUBLISHes. A connection that is not authenticated, or has been denied, gets nothing.
//!
//! A gateway may also publish on the topics of its attached, active sensors: the ACL (which
//! never sees a PUBLISH's properties) lets such a PUBLISH through, and the MESSAGE check then
//! accepts it only as a sensor reading that verifies (see `sensor`), never as the gateway's own.
//! Once its set is known, a gateway's PUBLISH on a topic nobody allows passes the ACL too, so
//! that a reading of a sensor it does not relay is counted for that sensor (`not_attached`).

#![deny(unsafe_code)]

use devid_core::api::{ConnectionEventKind, TopicPolicy};
use devid_core::protocol::renewal::{RENEW_RESPONSE_TOPIC, RENEW_TOPIC};

use super::sensor::{parse_claim, Claim};
use super::{Authenticated, Conn, ConnKey, Engine, MessageCheck, MessageVerdict, ServerSide, Via};
use crate::policy::{Access, Expanded};
use crate::refusal::{MessageRefusal, Refusal, SensorRefusal};
use crate::service::{lock, LogLevel};

impl<S: ServerSide> Engine<S> {
    /// MOSQ_EVT_ACL_CHECK. Only devid-authenticated connections get anything.
    pub fn acl(&self, key: ConnKey, access: Access, topic: &str) -> bool {
        let Some(Conn::Authenticated(a)) = self.conns.get(&key) else {
            return false;
        };
        let allowed = self.authenticated_acl(a, access, topic);
        // A PUBLISH refused here never reaches MESSAGE: count it now.
        if access == Access::Publish && !allowed {
            a.counts.refused();
        }
        allowed
    }

    fn authenticated_acl(&self, a: &Authenticated<S>, access: Access, topic: &str) -> bool {
        if a.denied {
            return false;
        }
        // Renewal over MQTT: a devid-admitted device may publish its request, and its reply
        // may be delivered to it (a resumed session re-checks queued messages); nobody may
        // subscribe to either (the reply is addressed to the client, not routed).
        match (access, topic) {
            (Access::Publish, RENEW_TOPIC) | (Access::Deliver, RENEW_RESPONSE_TOPIC) => {
                return true
            }
            _ => {}
        }
        let cid = &a.identity.client_id;
        // The sensors' filters first: an indexed lookup, cheaper than expanding the policy.
        if access == Access::Publish && self.sensors.any_sensor_allows(cid, topic) {
            return true;
        }
        if self.own_policy_allows(cid, access, topic) {
            return true;
        }
        // A reading of a sensor this gateway does not relay, on a topic none of its sensors
        // has: the ACL never sees the claim, so it lets the PUBLISH on to the MESSAGE check,
        // which counts it against the sensor it names (`not_attached`) and refuses it, and
        // refuses a PUBLISH without a claim as this check would have. Only once the gateway's
        // set is known, and never on a `$` topic (`$CONTROL/..` never reaches MESSAGE). A
        // Will is checked after the connection's DISCONNECT, when nothing is allowed.
        access == Access::Publish && !topic.starts_with('$') && self.sensors.knows_gateway(cid)
    }

    /// The device's own policy (fetched, or the default one).
    fn own_policy_allows(&self, client_id: &str, access: Access, topic: &str) -> bool {
        let g = lock(&self.shared);
        let default_policy;
        let policy = match g.revocations.statuses.get(client_id) {
            Some(s) => &s.policy,
            None => {
                default_policy = TopicPolicy::default();
                &default_policy
            }
        };
        Expanded::new(policy, client_id).allows(access, topic)
    }

    /// MOSQ_EVT_MESSAGE: per-message authentication. With the device's policy
    /// `message_auth = required`, a DEVID-1 device's PUBLISH must carry a valid `devid-mac` or
    /// `devid-seal` with a `devid-seq` above the last accepted one. A PUBLISH that carries devid
    /// properties is checked whatever the policy (a claim that fails is refused). Messages of
    /// mutual-TLS devices are marked verified (the TLS channel authenticates them).
    pub fn message(
        &mut self,
        key: ConnKey,
        topic: &str,
        devid_properties: &[(&str, &str)],
        payload: &[u8],
    ) -> MessageVerdict {
        if let Some(claim) = parse_claim(devid_properties) {
            return self.sensor_message(key, topic, claim, payload);
        }
        let required = {
            let Some(Conn::Authenticated(a)) = self.conns.get(&key) else {
                return MessageVerdict::Refuse;
            };
            if a.denied {
                a.counts.refused();
                return MessageVerdict::Refuse;
            }
            // The ACL let this through for the sensors' sake only: not the gateway's own topic.
            let cid = &a.identity.client_id;
            if self.sensors.knows_gateway(cid)
                && !self.own_policy_allows(cid, Access::Publish, topic)
            {
                if self.sensors.any_sensor_allows(cid, topic) {
                    return self.refuse_message(key, topic, MessageRefusal::TopicNotAllowed);
                }
                // Nobody's topic, let through only for a sensor's claim: refused as the ACL
                // would have refused it (and counted as the ACL counts it), not held against
                // the connection's run of refusals.
                a.counts.refused();
                return MessageVerdict::Refuse;
            }
            lock(&self.shared)
                .revocations
                .statuses
                .get(&a.identity.client_id)
                .is_some_and(|s| s.message_auth.is_required())
        };
        let Some(Conn::Authenticated(a)) = self.conns.get_mut(&key) else {
            return MessageVerdict::Refuse;
        };
        let cid = a.identity.client_id.clone();
        let outcome: Result<MessageVerdict, MessageRefusal> = match (a.via, a.verifier.as_mut()) {
            (Via::MutualTls, _) => Ok(MessageVerdict::Accept {
                verified: Some(cid.clone()),
                via: None,
                payload: None,
            }),
            (Via::Devid1, None) => Err(MessageRefusal::NoSessionKeys),
            (Via::Devid1, Some(v)) => {
                match self
                    .server
                    .verify_message(v, devid_properties, topic, payload)
                {
                    Ok(MessageCheck::Verified { plaintext }) => Ok(MessageVerdict::Accept {
                        verified: Some(cid.clone()),
                        via: None,
                        payload: plaintext,
                    }),
                    Ok(MessageCheck::Unclaimed) if required => Err(MessageRefusal::AuthRequired),
                    Ok(MessageCheck::Unclaimed) => Ok(MessageVerdict::Accept {
                        verified: None,
                        via: None,
                        payload: None,
                    }),
                    Err(e) => Err(e),
                }
            }
        };
        match outcome {
            Ok(v) => {
                a.refused_in_row = 0;
                a.counts.published();
                v
            }
            Err(reason) => self.refuse_message(key, topic, reason),
        }
    }

    /// Logs a refused PUBLISH of the connection's own; after `max_refused_messages` in a row the
    /// connection is dropped.
    fn refuse_message(
        &mut self,
        key: ConnKey,
        topic: &str,
        reason: MessageRefusal,
    ) -> MessageVerdict {
        let max = self.config.max_refused_messages;
        let Some(Conn::Authenticated(a)) = self.conns.get_mut(&key) else {
            return MessageVerdict::Refuse;
        };
        a.refused_in_row += 1;
        a.counts.refused();
        let n = a.refused_in_row;
        let address = a.address.clone();
        let cid = a.identity.client_id.clone();
        self.log(
            LogLevel::Notice,
            format!(
                "devid: refused PUBLISH from {cid} on {topic:?}: {reason} ({n} in a row) [{}]",
                reason.name()
            ),
        );
        if n >= max {
            self.mark_denied(key);
            self.log(
                LogLevel::Notice,
                format!("devid: disconnecting {cid}: {n} refused PUBLISHes in a row"),
            );
            self.event(
                ConnectionEventKind::AuthFailure,
                &cid,
                address.as_deref(),
                Some(&Refusal::TooManyRefusedMessages),
            );
            MessageVerdict::Disconnect
        } else {
            MessageVerdict::Refuse
        }
    }

    /// A sensor's reading relayed by this connection (DEVID-S1). A refusal never counts
    /// against the gateway: it is counted for the sensor, and logged and reported at most once
    /// a second per gateway and sensor.
    fn sensor_message(
        &mut self,
        key: ConnKey,
        topic: &str,
        claim: Result<Claim<'_>, (Option<&str>, SensorRefusal)>,
        payload: &[u8],
    ) -> MessageVerdict {
        let Some(Conn::Authenticated(a)) = self.conns.get(&key) else {
            return MessageVerdict::Refuse;
        };
        if a.denied {
            return MessageVerdict::Refuse;
        }
        let gateway = a.identity.client_id.as_str();
        let outcome = claim.and_then(|c| {
            let denied = lock(&self.shared)
                .revocations
                .devices
                .get(c.sensor)
                .copied();
            self.sensors
                .check(gateway, &c, denied, topic, payload)
                .map(|ok| (c.sensor, ok))
                .map_err(|r| (Some(c.sensor), r))
        });
        match outcome {
            Ok((sensor, ok)) => {
                self.sensors.count_accepted(sensor, gateway);
                MessageVerdict::Accept {
                    verified: Some(sensor.to_string()),
                    via: Some(gateway.to_string()),
                    payload: ok.plaintext,
                }
            }
            Err((sensor, reason)) => {
                let gateway = gateway.to_string();
                let address = a.address.clone();
                if reason == SensorRefusal::KeysPending {
                    self.request_sensors(&gateway);
                }
                if self.sensors.count_refused(sensor, &gateway, reason) {
                    self.sensor_refused(&gateway, address.as_deref(), sensor, topic, reason);
                }
                MessageVerdict::Refuse
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use devid_core::api::{DeviceState, DeviceStatus};

    use super::super::testing::*;
    use super::super::{AuthOutcome, MessageVerdict, METHOD};
    use crate::policy::Access;
    use crate::service::lock;

    #[test]
    fn fail_not_authenticated_gets_nothing() {
        let (mut e, _s, _rx) = engine();
        assert!(!e.acl(9, Access::Publish, "devices/dev1/x"));
        assert!(matches!(
            e.auth_start(1, Some(METHOD), b"hello:dev1:1", Some("dev1"), None),
            AuthOutcome::Continue(_)
        ));
        assert!(
            !e.acl(1, Access::Publish, "devices/dev1/x"),
            "handshake unfinished"
        );
    }

    fn props<'a>(list: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        list.to_vec()
    }

    #[test]
    fn message_auth_required_refuses_unprotected_replayed_and_bad_then_disconnects() {
        let (mut e, shared, _rx) = engine();
        assert!(matches!(
            connect(&mut e, 1, "dev1", "0a"),
            AuthOutcome::Success(_)
        ));
        // Policy off: unprotected passes unmarked; a protected one is verified and marked.
        assert_eq!(
            e.message(1, "t", &[], b"x"),
            MessageVerdict::Accept {
                verified: None,
                via: None,
                payload: None
            }
        );
        let good = props(&[("devid-seq", "1"), ("devid-mac", "good")]);
        assert_eq!(
            e.message(1, "t", &good, b"x"),
            MessageVerdict::Accept {
                verified: Some("dev1".into()),
                via: None,
                payload: None
            }
        );
        // A claim that fails is refused even with the policy off.
        assert_eq!(
            e.message(1, "t", &good, b"x"),
            MessageVerdict::Refuse,
            "replay"
        );
        let st = DeviceStatus {
            client_id: "dev1".into(),
            status: DeviceState::Active,
            model: None,
            revoked_serials: vec![],
            policy: None,
            allowed_cidrs: vec![],
            message_auth: devid_core::MessageAuth::Required,
            connect_with: devid_core::ConnectWith::Any,
        };
        lock(&shared).revocations.apply_status(&st);
        let sealed = props(&[("devid-seq", "2"), ("devid-seal", "1")]);
        assert_eq!(
            e.message(1, "t", &sealed, b"abc"),
            MessageVerdict::Accept {
                verified: Some("dev1".into()),
                via: None,
                payload: Some(b"cba".to_vec())
            }
        );
        assert_eq!(e.message(1, "t", &[], b"x"), MessageVerdict::Refuse);
        let bad = props(&[("devid-seq", "9"), ("devid-mac", "bad")]);
        assert_eq!(e.message(1, "t", &bad, b"x"), MessageVerdict::Refuse);
        assert_eq!(
            e.message(1, "t", &bad, b"x"),
            MessageVerdict::Disconnect,
            "3 in a row"
        );
        assert!(!e.acl(1, Access::Publish, "devices/dev1/x"));
        // Not authenticated: refused.
        assert_eq!(e.message(7, "t", &good, b"x"), MessageVerdict::Refuse);
    }

    #[test]
    fn reauth_resets_the_replay_window() {
        let (mut e, _s, _rx) = engine();
        assert!(matches!(
            connect(&mut e, 1, "dev1", "0a"),
            AuthOutcome::Success(_)
        ));
        let p5 = props(&[("devid-seq", "5"), ("devid-mac", "good")]);
        assert!(matches!(
            e.message(1, "t", &p5, b"x"),
            MessageVerdict::Accept { .. }
        ));
        assert!(matches!(
            connect(&mut e, 1, "dev1", "0a"),
            AuthOutcome::Success(_)
        ));
        let p1 = props(&[("devid-seq", "1"), ("devid-mac", "good")]);
        assert!(matches!(
            e.message(1, "t", &p1, b"x"),
            MessageVerdict::Accept { .. }
        ));
    }

    #[test]
    fn mutual_tls_messages_are_marked_verified() {
        let (mut e, _s, _rx) = engine();
        assert!(matches!(
            e.basic_auth(1, Some(b"hello:dev1:1"), Some("dev1"), None),
            AuthOutcome::Success(_)
        ));
        assert_eq!(
            e.message(1, "t", &[], b"x"),
            MessageVerdict::Accept {
                verified: Some("dev1".into()),
                via: None,
                payload: None
            }
        );
    }
}
