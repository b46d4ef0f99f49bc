//! Renewal over MQTT, the broker thread's side (`docs/protocol.md`, "MQTT renewal"): a device's
//! PUBLISH to `$CONTROL/devid/renew/v1` reaches the plugin as `MOSQ_EVT_CONTROL` (Mosquitto
//! never queues `$CONTROL/` messages for subscribers). The request is checked here without any
//! waiting (the connection is devid-admitted, Correlation Data present, CSR and proof sizes),
//! handed to the service thread with the connection's own ClientID and certificate serial, and
//! the answer comes back through TICK as a reply for `mosquitto_broker_publish` to that client
//! alone.

#![deny(unsafe_code)]

use std::collections::HashMap;

use devid_core::ldevid::Refusal;
use devid_core::protocol::renewal::{decode_proof, Reply, MAX_CORRELATION_LEN};

use super::{Conn, ConnKey, Engine, ServerSide};
use crate::service::{LogLevel, RenewJob, ToService};

/// Largest CSR accepted (DER bytes).
const MAX_CSR_LEN: usize = 16 * 1024;
/// Requests in flight on this broker at most (beyond: `unavailable`).
const MAX_IN_FLIGHT: usize = 1024;

/// A reply to publish on `$CONTROL/devid/renew/v1/response` to `client_id` alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewReply {
    pub client_id: String,
    pub correlation: Vec<u8>,
    pub payload: Vec<u8>,
}

/// Requests in flight (one per connection) and replies waiting for the broker.
#[derive(Debug, Default)]
pub(super) struct Renewals {
    in_flight: HashMap<ConnKey, String>,
    replies: Vec<RenewReply>,
}

impl Renewals {
    pub(super) fn forget(&mut self, key: ConnKey) {
        self.in_flight.remove(&key);
    }
}

impl<S: ServerSide> Engine<S> {
    /// MOSQ_EVT_CONTROL on the renewal topic. `client_id` is the connection's, `correlation`
    /// the request's Correlation Data, `proof` the `devid-rekey-proof` property. Returns the
    /// reply to publish at once when the request is refused here (None: handed to the service
    /// thread, or unanswerable without Correlation Data).
    pub fn renewal_request(
        &mut self,
        key: ConnKey,
        client_id: Option<&str>,
        correlation: Option<&[u8]>,
        csr: &[u8],
        proof: Option<&str>,
    ) -> Option<RenewReply> {
        let cid = client_id.unwrap_or("").to_string();
        let Some(correlation) =
            correlation.filter(|c| !c.is_empty() && c.len() <= MAX_CORRELATION_LEN)
        else {
            self.log(
                LogLevel::Notice,
                format!("devid: renewal request from {cid:?} without usable Correlation Data; not answered [malformed]"),
            );
            return None;
        };
        let refuse = |this: &mut Self, refusal: Refusal, detail: &str| {
            this.log(
                LogLevel::Notice,
                format!("devid: renewal request from {cid:?} refused: {detail} [{refusal}]"),
            );
            Some(RenewReply {
                client_id: cid.clone(),
                correlation: correlation.to_vec(),
                payload: Reply::refused(refusal, detail).encode(),
            })
        };
        let serial = match self.conns.get(&key) {
            Some(Conn::Authenticated(a)) if !a.denied && a.identity.client_id == cid => {
                a.identity.serial.clone()
            }
            _ => {
                return refuse(
                    self,
                    Refusal::NotAuthorized,
                    "the connection is not admitted by devid",
                )
            }
        };
        if csr.is_empty() || csr.len() > MAX_CSR_LEN {
            return refuse(self, Refusal::Malformed, "the payload is not a CSR");
        }
        let proof = match proof.map(decode_proof) {
            None => None,
            Some(Some(p)) => Some(p),
            Some(None) => {
                return refuse(
                    self,
                    Refusal::Malformed,
                    "devid-rekey-proof is not base64 of a signature",
                )
            }
        };
        if self.renewals.in_flight.contains_key(&key) {
            return refuse(
                self,
                Refusal::RateLimited,
                "a renewal of this connection is already in flight",
            );
        }
        if self.renewals.in_flight.len() >= MAX_IN_FLIGHT {
            return refuse(self, Refusal::Unavailable, "too many renewals in flight");
        }
        let job = RenewJob {
            key,
            client_id: cid.clone(),
            serial,
            csr: csr.to_vec(),
            proof,
            correlation: correlation.to_vec(),
        };
        let queued = match &self.to_service {
            Some(tx) => tx.try_send(ToService::Renew(job)).is_ok(),
            None => false,
        };
        if !queued {
            return refuse(self, Refusal::Unavailable, "the broker is busy");
        }
        self.renewals.in_flight.insert(key, cid);
        None
    }

    /// An answer from the service thread (drained in TICK): the reply to publish.
    pub(super) fn renewal_answered(&mut self, key: ConnKey, reply: RenewReply) {
        if self.renewals.in_flight.get(&key) == Some(&reply.client_id) {
            self.renewals.in_flight.remove(&key);
        }
        let code = reply.payload.first().copied().unwrap_or(0xff);
        self.log(
            LogLevel::Info,
            format!(
                "devid: renewal for {}: {}",
                reply.client_id,
                match Refusal::from_code(code) {
                    None => "issued".to_string(),
                    Some(r) => format!("refused [{r}]"),
                }
            ),
        );
        self.renewals.replies.push(reply);
    }

    /// The replies to publish now (after TICK, with no borrow held).
    pub fn take_replies(&mut self) -> Vec<RenewReply> {
        std::mem::take(&mut self.renewals.replies)
    }
}

#[cfg(test)]
mod tests {
    use devid_core::protocol::renewal::Reply;

    use super::super::testing::*;
    use super::super::AuthOutcome;
    use crate::service::{FromService, ToService};

    fn refusal_of(r: &super::RenewReply) -> Option<devid_core::ldevid::Refusal> {
        Reply::decode(&r.payload).ok().and_then(|r| r.refusal())
    }

    #[test]
    fn a_request_goes_to_the_service_and_its_answer_to_the_client() {
        let (mut e, _s, mut rx) = engine();
        assert!(matches!(
            connect(&mut e, 1, "dev1", "0a:ldevid"),
            AuthOutcome::Success(_)
        ));
        drain(&mut rx);
        assert_eq!(
            e.renewal_request(1, Some("dev1"), Some(b"c1"), b"csr", Some("AQID")),
            None
        );
        let job = match drain(&mut rx).pop() {
            Some(ToService::Renew(j)) => j,
            other => panic!("no job: {other:?}"),
        };
        assert_eq!(
            (
                job.client_id.as_str(),
                job.serial.as_str(),
                job.proof.as_deref()
            ),
            ("dev1", "0a", Some(&[1u8, 2, 3][..]))
        );
        // One at a time per connection.
        let busy = e
            .renewal_request(1, Some("dev1"), Some(b"c2"), b"csr", None)
            .expect("reply");
        assert_eq!(
            refusal_of(&busy),
            Some(devid_core::ldevid::Refusal::RateLimited)
        );
        assert_eq!(busy.correlation, b"c2");
        let answer = super::RenewReply {
            client_id: "dev1".into(),
            correlation: b"c1".to_vec(),
            payload: Reply::Issued(vec![vec![0x30, 0]]).encode(),
        };
        e.tick(vec![FromService::Renewed {
            key: 1,
            reply: answer.clone(),
        }]);
        assert_eq!(e.take_replies(), vec![answer]);
        assert!(e.take_replies().is_empty());
        assert_eq!(
            e.renewal_request(1, Some("dev1"), Some(b"c3"), b"csr", None),
            None
        );
    }

    #[test]
    fn refused_here_without_reaching_the_service() {
        let (mut e, _s, mut rx) = engine();
        // Not admitted: not authorized.
        let r = e
            .renewal_request(9, Some("dev9"), Some(b"c"), b"csr", None)
            .expect("reply");
        assert_eq!(
            refusal_of(&r),
            Some(devid_core::ldevid::Refusal::NotAuthorized)
        );
        assert!(matches!(
            connect(&mut e, 1, "dev1", "0a"),
            AuthOutcome::Success(_)
        ));
        drain(&mut rx);
        // Another ClientID than the connection's.
        let r = e
            .renewal_request(1, Some("dev2"), Some(b"c"), b"csr", None)
            .expect("reply");
        assert_eq!(
            refusal_of(&r),
            Some(devid_core::ldevid::Refusal::NotAuthorized)
        );
        // No Correlation Data: nothing to answer with.
        assert_eq!(e.renewal_request(1, Some("dev1"), None, b"csr", None), None);
        assert_eq!(
            e.renewal_request(1, Some("dev1"), Some(&[0; 65]), b"csr", None),
            None
        );
        let r = e
            .renewal_request(1, Some("dev1"), Some(b"c"), b"", None)
            .expect("reply");
        assert_eq!(refusal_of(&r), Some(devid_core::ldevid::Refusal::Malformed));
        let r = e
            .renewal_request(1, Some("dev1"), Some(b"c"), b"csr", Some("not base64!"))
            .expect("reply");
        assert_eq!(refusal_of(&r), Some(devid_core::ldevid::Refusal::Malformed));
        assert!(drain(&mut rx)
            .iter()
            .all(|m| !matches!(m, ToService::Renew(_))));
    }
}
