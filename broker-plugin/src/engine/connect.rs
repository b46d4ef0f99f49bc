//! How a connection authenticates: DEVID-1 (a full exchange or a resumption from a ticket; a
//! re-authentication of a live connection keeps its identity or ends it) and mutual TLS; and the
//! checks every path shares: the gate (TICK works, the revocation state is fresh) and
//! admissibility (revocation state, allow-list), both before the device is admitted.

#![deny(unsafe_code)]

use std::time::Duration;

use devid_core::protocol::PkOps;
use devid_core::{ConnectWith, SwVersion};

use super::counters::ConnCounts;
use super::guard::source_group;
use super::{AuthOutcome, Authenticated, Conn, ConnKey, Engine, ServerSide, Verified, Via, METHOD};
use crate::cidr;
use crate::refusal::Refusal;
use crate::service::{lock, LogLevel};
use crate::state;

/// Most certificate kinds remembered for resumptions (forgotten all at once beyond: a resumed
/// LDevID whose kind is forgotten is refused where `connect_with ldevid` applies, and the
/// device's next full exchange teaches it again).
const MAX_CERT_KINDS: usize = 100_000;

/// Within this long after start, no TICK yet is normal.
const TICK_GRACE: Duration = Duration::from_secs(3);

/// A first or re-authentication exchange awaiting its ClientFinish: when it started, who, the
/// server half's state, and the software version its CONNECT reported.
type Handshake<S> = (
    std::time::Instant,
    Verified,
    <S as ServerSide>::Pending,
    Option<SwVersion>,
);

/// How a connection is admitted beyond its identity.
struct Admission {
    /// For a re-authentication: what the connection counted so far (no new connect event).
    reauth: Option<ConnCounts>,
    /// The software version its CONNECT reported.
    sw_version: Option<SwVersion>,
}

impl<S: ServerSide> Engine<S> {
    /// Checks that must hold before any device is admitted: TICK works, state is fresh.
    fn gate(&mut self) -> Result<(), Refusal> {
        if self.last_tick.is_none() && self.started.elapsed() > TICK_GRACE {
            self.log(
                LogLevel::Error,
                "devid: no TICK event received; set `per_listener_settings false` (revocations cannot be applied). Refusing every device.".into(),
            );
            return Err(Refusal::NoTick);
        }
        let last = lock(&self.shared).last_contact;
        if !state::is_fresh(last, state::unix_now(), self.config.max_staleness) {
            if !self.stale_logged {
                self.stale_logged = true;
                self.log(
                    LogLevel::Error,
                    format!(
                        "devid: REVOCATION STATE STALE: the service has not been reached for more than {} s (last contact: {}). FAILING CLOSED: refusing every device until the feed catches up.",
                        self.config.max_staleness.as_secs(),
                        last.map(|t| t.to_string()).unwrap_or_else(|| "never".into())
                    ),
                );
            }
            return Err(Refusal::StateStale);
        }
        if self.stale_logged {
            self.stale_logged = false;
            self.log(
                LogLevel::Info,
                "devid: revocation state fresh again; admitting devices".into(),
            );
        }
        Ok(())
    }

    /// Revocation state and allow-list for an identity.
    pub(super) fn admissible(&self, id: &Verified, address: Option<&str>) -> Result<(), Refusal> {
        let g = lock(&self.shared);
        g.revocations.check(&id.client_id, &id.serial)?;
        g.revocations
            .check_issuer(id.issuer.as_deref(), id.verified_at)?;
        if let Some(st) = g.revocations.statuses.get(&id.client_id) {
            if !cidr::allowed(&st.allowed_cidrs, address) {
                return Err(Refusal::AddressNotAllowed {
                    address: address.unwrap_or("?").to_string(),
                });
            }
            if st.connect_with == ConnectWith::Ldevid && id.ldevid != Some(true) {
                return Err(Refusal::LdevidRequired {
                    serial: id.serial.clone(),
                    known: id.ldevid.is_some(),
                });
            }
        }
        Ok(())
    }

    /// Remembers whether a certificate is an LDevID (from a full exchange or mutual TLS), and
    /// fills it in for a resumption, whose ticket names only the serial.
    fn certificate_kind(&mut self, id: &mut Verified) {
        let serial = state::normalize_serial(&id.serial);
        match id.ldevid {
            Some(kind) => {
                if self.cert_kinds.len() >= MAX_CERT_KINDS && !self.cert_kinds.contains_key(&serial)
                {
                    self.cert_kinds.clear();
                }
                self.cert_kinds.insert(serial, kind);
            }
            None => id.ldevid = self.cert_kinds.get(&serial).copied(),
        }
    }

    /// MOSQ_EVT_EXT_AUTH_START: a CONNECT (or a re-authentication) with an auth method.
    pub fn auth_start(
        &mut self,
        key: ConnKey,
        method: Option<&str>,
        data: &[u8],
        client_id: Option<&str>,
        address: Option<&str>,
    ) -> AuthOutcome {
        let sw_version = self.connecting.take();
        if method != Some(METHOD) {
            return AuthOutcome::Defer;
        }
        // A re-authentication keeps the live identity aside; a failed one ends the connection.
        let mut previous = match self.take(key) {
            Some(Conn::Authenticated(a)) => Some(a),
            _ => None,
        };
        let outcome = self.start_exchange(
            key,
            data,
            client_id.unwrap_or(""),
            address,
            &mut previous,
            sw_version,
        );
        // Still here: the re-authentication failed, and the connection it had ends.
        if let Some(p) = previous {
            self.ended(*p);
        }
        outcome
    }

    /// [`Self::auth_start`] for DEVID-1: the first message of a full exchange or a
    /// resumption. `previous` is taken into the handshake when it goes on.
    fn start_exchange(
        &mut self,
        key: ConnKey,
        data: &[u8],
        cid: &str,
        address: Option<&str>,
        previous: &mut Option<Box<Authenticated<S>>>,
        sw_version: Option<SwVersion>,
    ) -> AuthOutcome {
        if let Err(reason) = self.gate() {
            return self.refuse(cid, address, reason);
        }
        if cid.is_empty() {
            return self.refuse(cid, address, Refusal::EmptyClientId);
        }
        if let Err(e) = devid_core::clientid::validate(cid) {
            return self.refuse(cid, address, Refusal::BadClientId(e));
        }
        let source = source_group(address);
        let full = self.server.is_full_hello(data);
        if let Err(reason) = self.handshakes.admit(&source, full) {
            return self.refuse(cid, address, reason);
        }
        let now = state::unix_now();
        let (mut identity, hello) = match self.server.hello(data, cid, now) {
            Ok(v) => v,
            Err(e) => {
                let bad_method = e.is_bad_method();
                self.refuse(cid, address, e);
                return if bad_method {
                    AuthOutcome::Defer
                } else {
                    AuthOutcome::Deny
                };
            }
        };
        if identity.client_id != cid {
            return self.refuse(cid, address, Refusal::ClientIdMismatch);
        }
        self.certificate_kind(&mut identity);
        if let Some(p) = previous {
            if p.identity.client_id != identity.client_id {
                return self.refuse(cid, address, Refusal::ReauthOtherIdentity);
            }
        }
        if let Err(reason) = self.admissible(&identity, address) {
            return self.refuse(cid, address, reason);
        }
        match self.server.accept(hello, now) {
            Ok((pending, server_hello)) => {
                let started = self.handshakes.start(source, key);
                self.conns.insert(
                    key,
                    Conn::Handshaking {
                        started,
                        address: address.map(str::to_string),
                        identity,
                        pending,
                        previous: previous.take(),
                        sw_version,
                    },
                );
                AuthOutcome::Continue(server_hello)
            }
            Err(e) => self.refuse(cid, address, e),
        }
    }

    /// MOSQ_EVT_EXT_AUTH_CONTINUE: the ClientFinish.
    pub fn auth_continue(
        &mut self,
        key: ConnKey,
        data: &[u8],
        client_id: Option<&str>,
        address: Option<&str>,
    ) -> AuthOutcome {
        let cid = client_id.unwrap_or("").to_string();
        let Some(conn) = self.take(key) else {
            return self.refuse(&cid, address, Refusal::NoExchange);
        };
        let (started, identity, pending, mut previous, sw_version) = match conn {
            Conn::Handshaking {
                started,
                identity,
                pending,
                previous,
                sw_version,
                ..
            } => (started, identity, pending, previous, sw_version),
            Conn::Authenticated(_) => {
                return self.refuse(&cid, address, Refusal::AuthAfterSuccess);
            }
        };
        let outcome = self.finish_exchange(
            key,
            (started, identity, pending, sw_version),
            data,
            &cid,
            address,
            &mut previous,
        );
        // Still here: the re-authentication failed, and the connection it had ends.
        if let Some(p) = previous {
            self.ended(*p);
        }
        outcome
    }

    /// [`Self::auth_continue`] for a handshake in progress.
    fn finish_exchange(
        &mut self,
        key: ConnKey,
        (started, identity, pending, sw_version): Handshake<S>,
        data: &[u8],
        cid: &str,
        address: Option<&str>,
        previous: &mut Option<Box<Authenticated<S>>>,
    ) -> AuthOutcome {
        let cid = cid.to_string();
        if started.elapsed() > self.config.auth_timeout {
            return self.refuse(&cid, address, Refusal::TimedOut);
        }
        // The state may have changed while the device was signing.
        if let Err(reason) = self.admissible(&identity, address) {
            return self.refuse(&cid, address, reason);
        }
        let now = state::unix_now();
        match self.server.finish(pending, data, now) {
            Ok((keys, server_finish, pk_ops)) => {
                // A re-authentication goes on counting where the connection was.
                let reauth = previous.take().map(|p| p.counts);
                self.admit(
                    key,
                    identity,
                    Some((keys, pk_ops)),
                    Via::Devid1,
                    address,
                    Admission { reauth, sw_version },
                );
                AuthOutcome::Success(server_finish)
            }
            Err(e) => self.refuse(&cid, address, e),
        }
    }

    fn admit(
        &mut self,
        key: ConnKey,
        identity: Verified,
        keys: Option<(S::Keys, PkOps)>,
        via: Via,
        address: Option<&str>,
        admission: Admission,
    ) {
        let Admission { reauth, sw_version } = admission;
        let cid = identity.client_id.clone();
        let (keys, pk_ops) = match keys {
            Some((k, ops)) => (Some(k), format!("; pk_ops={ops}")),
            None => (None, String::new()),
        };
        self.log(
            LogLevel::Info,
            format!(
                "devid: {} client {cid} (serial {}) from {} via {}{pk_ops}",
                if reauth.is_some() {
                    "re-authenticated"
                } else {
                    "admitted"
                },
                identity.serial,
                address.unwrap_or("?"),
                match via {
                    Via::Devid1 if identity.resumed => "DEVID-1 resumption",
                    Via::Devid1 => "DEVID-1",
                    Via::MutualTls => "mutual TLS",
                },
            ),
        );
        if reauth.is_none() {
            self.connected(&identity, via, address, sw_version.as_ref());
        }
        self.conns.insert(
            key,
            Conn::Authenticated(Box::new(Authenticated {
                identity,
                verifier: keys.as_ref().map(|k| self.server.verifier(k)),
                refused_in_row: 0,
                via,
                address: address.map(str::to_string),
                denied: false,
                counts: reauth.unwrap_or_default(),
            })),
        );
        self.request_status(&cid);
        // Any authenticated device may relay sensors: fetch the keys of those attached to it.
        self.request_sensors(&cid);
    }

    /// MOSQ_EVT_BASIC_AUTH, which 2.0.11 fires for every CONNECT without an auth method: the
    /// mutual-TLS path when a client certificate is present, refused otherwise.
    pub fn basic_auth(
        &mut self,
        key: ConnKey,
        cert_der: Option<&[u8]>,
        client_id: Option<&str>,
        address: Option<&str>,
    ) -> AuthOutcome {
        let sw_version = self.connecting.take();
        let cid = client_id.unwrap_or("");
        let Some(der) = cert_der else {
            return self.refuse(cid, address, Refusal::NoCredentials);
        };
        if let Err(reason) = self.gate() {
            return self.refuse(cid, address, reason);
        }
        if let Err(e) = devid_core::clientid::validate(cid) {
            return self.refuse(cid, address, Refusal::BadClientId(e));
        }
        let mut identity = match self.server.verify_tls_client(der, cid, state::unix_now()) {
            Ok(i) => i,
            Err(e) => return self.refuse(cid, address, e),
        };
        if identity.client_id != cid {
            return self.refuse(cid, address, Refusal::CertificateClientIdMismatch);
        }
        self.certificate_kind(&mut identity);
        if let Err(reason) = self.admissible(&identity, address) {
            return self.refuse(cid, address, reason);
        }
        self.admit(
            key,
            identity,
            None,
            Via::MutualTls,
            address,
            Admission {
                reauth: None,
                sw_version,
            },
        );
        AuthOutcome::Success(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use devid_core::api::ConnectionEventKind;

    use super::super::testing::*;
    use super::super::{AuthOutcome, METHOD};
    use crate::policy::Access;
    use crate::service::{lock, ToService};
    use crate::state;

    #[test]
    fn ok_full_exchange_then_default_policy() {
        let (mut e, _s, mut rx) = engine();
        assert_eq!(
            connect(&mut e, 1, "dev1", "0a"),
            AuthOutcome::Success(b"server-finish".to_vec())
        );
        assert!(e.acl(1, Access::Publish, "devices/dev1/x"));
        assert!(!e.acl(1, Access::Publish, "devices/dev2/x"));
        assert!(e.acl(1, Access::Subscribe, "broadcast/#"));
        let msgs = drain(&mut rx);
        assert!(msgs.iter().any(|m| matches!(m, ToService::Event(ev) if ev.kind == ConnectionEventKind::Connect && ev.client_id == "dev1")));
        assert!(msgs
            .iter()
            .any(|m| matches!(m, ToService::FetchStatus(id) if id == "dev1")));
    }

    #[test]
    fn fail_other_method_is_deferred() {
        let (mut e, _s, _rx) = engine();
        assert_eq!(
            e.auth_start(1, Some("SCRAM-SHA-1"), b"x", Some("dev1"), None),
            AuthOutcome::Defer
        );
        assert_eq!(
            e.auth_start(1, None, b"x", Some("dev1"), None),
            AuthOutcome::Defer
        );
        // An unknown DEVID-1 version: 0x8C as well, but logged and reported.
        assert_eq!(
            e.auth_start(1, Some(METHOD), &[1, 2, 3], Some("dev1"), None),
            AuthOutcome::Defer
        );
    }

    #[test]
    fn fail_wrong_client_id_empty_id_bad_id() {
        let (mut e, _s, mut rx) = engine();
        let out = e.auth_start(1, Some(METHOD), b"hello:dev2:1", Some("dev1"), None);
        assert_eq!(out, AuthOutcome::Deny);
        assert_eq!(
            e.auth_start(2, Some(METHOD), b"hello::1", Some(""), None),
            AuthOutcome::Deny
        );
        assert_eq!(
            e.auth_start(3, Some(METHOD), b"hello:a/#:1", Some("a/#"), None),
            AuthOutcome::Deny
        );
        assert_eq!(e.conns.len(), 0);
        let msgs = drain(&mut rx);
        assert_eq!(
            msgs.iter()
                .filter(|m| matches!(m, ToService::Event(ev) if ev.kind == ConnectionEventKind::AuthFailure))
                .count(),
            3
        );
    }

    #[test]
    fn fail_bad_finish_and_out_of_order() {
        let (mut e, _s, _rx) = engine();
        assert_eq!(
            e.auth_continue(1, b"finish", Some("dev1"), None),
            AuthOutcome::Deny
        );
        assert!(matches!(
            e.auth_start(1, Some(METHOD), b"hello:dev1:1", Some("dev1"), None),
            AuthOutcome::Continue(_)
        ));
        assert_eq!(
            e.auth_continue(1, b"wrong", Some("dev1"), None),
            AuthOutcome::Deny
        );
        assert!(!e.acl(1, Access::Publish, "devices/dev1/x"));
    }

    #[test]
    fn fail_closed_when_stale_or_never_contacted() {
        let (mut e, shared, _rx) = engine();
        lock(&shared).last_contact = Some(state::unix_now() - 61);
        assert_eq!(connect(&mut e, 1, "dev1", "0a"), AuthOutcome::Deny);
        assert!(e
            .take_logs()
            .iter()
            .any(|(_, l)| l.contains("FAILING CLOSED")));
        lock(&shared).last_contact = None;
        assert_eq!(connect(&mut e, 1, "dev1", "0a"), AuthOutcome::Deny);
        lock(&shared).last_contact = Some(state::unix_now() - 59);
        assert!(matches!(
            connect(&mut e, 1, "dev1", "0a"),
            AuthOutcome::Success(_)
        ));
    }

    #[test]
    fn mutual_tls_path() {
        let (mut e, _s, _rx) = engine();
        assert_eq!(e.basic_auth(1, None, Some("dev1"), None), AuthOutcome::Deny);
        assert_eq!(
            e.basic_auth(1, Some(b"hello:dev2:1"), Some("dev1"), None),
            AuthOutcome::Deny
        );
        assert_eq!(
            e.basic_auth(1, Some(b"hello:dev1:1"), Some("dev1"), None),
            AuthOutcome::Success(vec![])
        );
        assert!(e.acl(1, Access::Publish, "devices/dev1/x"));
    }

    #[test]
    fn reauth_keeps_identity_or_fails() {
        let (mut e, _s, _rx) = engine();
        assert!(matches!(
            connect(&mut e, 1, "dev1", "0a"),
            AuthOutcome::Success(_)
        ));
        assert!(matches!(
            connect(&mut e, 1, "dev1", "0a"),
            AuthOutcome::Success(_)
        ));
        assert!(e.acl(1, Access::Publish, "devices/dev1/x"));
        assert_eq!(
            e.auth_start(1, Some(METHOD), b"hello:dev9:1", Some("dev1"), None),
            AuthOutcome::Deny
        );
        assert!(!e.acl(1, Access::Publish, "devices/dev1/x"));
    }

    fn ldevid_only(cid: &str) -> devid_core::api::DeviceStatus {
        devid_core::api::DeviceStatus {
            client_id: cid.into(),
            status: devid_core::api::DeviceState::Active,
            model: Some("m".into()),
            revoked_serials: vec![],
            policy: None,
            allowed_cidrs: vec![],
            message_auth: devid_core::MessageAuth::Off,
            connect_with: devid_core::ConnectWith::Ldevid,
        }
    }

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
    fn connect_with_ldevid_refuses_the_idevid_on_every_path() {
        let (mut e, shared, mut rx) = engine();
        lock(&shared).revocations.apply_status(&ldevid_only("dev1"));
        // DEVID-1 with the IDevID: refused with its own reason, logged and reported.
        assert_eq!(connect(&mut e, 1, "dev1", "0a"), AuthOutcome::Deny);
        assert_eq!(refusals(&mut rx), vec!["ldevid_required".to_string()]);
        assert!(e
            .take_logs()
            .iter()
            .any(|(_, l)| l.contains("is an IDevID, not an LDevID [ldevid_required]")));
        // With an LDevID: admitted.
        assert!(matches!(
            connect(&mut e, 2, "dev1", "0b:ldevid"),
            AuthOutcome::Success(_)
        ));
        // A resumption of that LDevID (seen in a full exchange): admitted; of a certificate
        // never seen: refused, it cannot be told from an IDevID.
        assert!(matches!(
            e.auth_start(3, Some(METHOD), b"resume:dev1:0b", Some("dev1"), None),
            AuthOutcome::Continue(_)
        ));
        assert!(matches!(
            e.auth_continue(3, b"finish", Some("dev1"), None),
            AuthOutcome::Success(_)
        ));
        assert_eq!(
            e.auth_start(4, Some(METHOD), b"resume:dev1:0c", Some("dev1"), None),
            AuthOutcome::Deny
        );
        // Mutual TLS: the same rule.
        assert_eq!(
            e.basic_auth(5, Some(b"hello:dev1:0a"), Some("dev1"), None),
            AuthOutcome::Deny
        );
        assert_eq!(
            e.basic_auth(6, Some(b"hello:dev1:0d:ldevid"), Some("dev1"), None),
            AuthOutcome::Success(vec![])
        );
        // Other devices (no such setting) keep connecting with their IDevID.
        assert!(matches!(
            connect(&mut e, 7, "dev2", "0e"),
            AuthOutcome::Success(_)
        ));
    }

    #[test]
    fn a_status_that_says_ldevid_kicks_a_live_idevid_connection() {
        let (mut e, shared, mut rx) = engine();
        assert!(matches!(
            connect(&mut e, 1, "dev1", "0a"),
            AuthOutcome::Success(_)
        ));
        assert!(matches!(
            connect(&mut e, 2, "dev2", "0b:ldevid"),
            AuthOutcome::Success(_)
        ));
        drain(&mut rx);
        let r1 = lock(&shared).revocations.apply_status(&ldevid_only("dev1"));
        let r2 = lock(&shared).revocations.apply_status(&ldevid_only("dev2"));
        let kicks = e.tick(vec![
            crate::service::FromService::Recheck(r1),
            crate::service::FromService::Recheck(r2),
        ]);
        assert_eq!(kicks, vec!["dev1".to_string()]);
        assert_eq!(refusals(&mut rx), vec!["ldevid_required".to_string()]);
        assert!(!e.acl(1, Access::Publish, "devices/dev1/x"));
        assert!(e.acl(2, Access::Publish, "devices/dev2/x"));
    }
}
