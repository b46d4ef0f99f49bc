//! The broker-thread logic, free of FFI: per-connection state keyed by the connection pointer,
//! authentication decisions, topic checks, and what TICK does. lib.rs only marshals between
//! Mosquitto and this.
//!
//! Device status and policy (design choice): the broker thread never waits on the network, and
//! DEVID-1 cannot be held open waiting for an HTTP answer without blocking. So when a device
//! authenticates, the engine admits it on the revocation state (which comes from the feed, not
//! from a per-device fetch), asks the service thread to fetch its status, and meanwhile applies
//! the cached policy and allow-list from the last fetch (persisted across restarts) or, for a
//! device never seen, the default policy (`devices/%c/#`, subscribe `broadcast/#`). When the
//! answer arrives (drained in TICK) the new policy applies to the next ACL check, and a
//! connection that now fails its allow-list, or whose device turns out revoked, is kicked.

#![deny(unsafe_code)]

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use devid_core::api::{ConnectionEvent, ConnectionEventKind, TopicPolicy};
use devid_core::protocol::PkOps;
use tokio::sync::mpsc;

use crate::cidr;
use crate::config::Config;
use crate::policy::{Access, Expanded};
pub use crate::refusal::{MessageRefusal, Refusal};
use crate::service::{lock, FromService, LogLevel, Shared, ToService, Updated};
use crate::state::{self, Recheck};

/// The authentication method this plugin answers.
pub const METHOD: &str = "DEVID-1";

/// The connection key: the `struct mosquitto *` as an integer.
pub type ConnKey = usize;

/// A device identity as the plugin keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub client_id: String,
    pub serial: String,
    pub fingerprint: String,
    pub not_after: u64,
    /// True for a DEVID-1 resumption (symmetric only, from a ticket).
    pub resumed: bool,
}

/// The server half of DEVID-1 as the engine needs it. The real one wraps
/// `devid_core::protocol`; tests use a fake.
pub trait ServerSide {
    /// Verified ClientHello, waiting for the engine's decision.
    type Hello;
    /// ServerHello sent, waiting for ClientFinish.
    type Pending;
    /// Session keys kept for the connection.
    type Keys;
    /// True when this first message costs public-key work (a ClientHello, not a resumption):
    /// such messages are rate-limited per source address before `hello` runs.
    fn is_full_hello(&self, data: &[u8]) -> bool;
    /// Parses and verifies a ClientHello for a CONNECT with this ClientID.
    fn hello(
        &self,
        data: &[u8],
        client_id: &str,
        now: u64,
    ) -> Result<(Verified, Self::Hello), Refusal>;
    /// Accepts the device: returns the ServerHello.
    fn accept(&self, hello: Self::Hello, now: u64) -> Result<(Self::Pending, Vec<u8>), Refusal>;
    /// Checks the ClientFinish: returns the keys, the ServerFinish and the public-key
    /// operations the whole exchange took on this side.
    fn finish(
        &self,
        pending: Self::Pending,
        data: &[u8],
        now: u64,
    ) -> Result<(Self::Keys, Vec<u8>, PkOps), Refusal>;
    /// Per-session PUBLISH verifier (message MAC / seal, replay window).
    type Verifier;
    fn verifier(&self, keys: &Self::Keys) -> Self::Verifier;
    /// Checks a PUBLISH's `devid-*` user properties (the caller passes those only, name and
    /// value). Err: malformed, replayed or not authentic.
    fn verify_message(
        &self,
        verifier: &mut Self::Verifier,
        devid_properties: &[(&str, &str)],
        topic: &str,
        payload: &[u8],
    ) -> Result<MessageCheck, MessageRefusal>;
    /// Checks a TLS client certificate (leaf DER) with the same rules for this ClientID.
    fn verify_tls_client(
        &self,
        leaf_der: &[u8],
        client_id: &str,
        now: u64,
    ) -> Result<Verified, Refusal>;
}

/// What the broker should answer to an authentication event.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthOutcome {
    /// AUTH 0x18 with these bytes.
    Continue(Vec<u8>),
    /// CONNACK 0x00 (with these bytes as Authentication Data, if any).
    Success(Vec<u8>),
    /// CONNACK 0x87.
    Deny,
    /// Not ours: CONNACK 0x8C (unknown method) or let another plugin decide.
    Defer,
}

/// What a PUBLISH's `devid-*` properties prove.
#[derive(Debug, PartialEq, Eq)]
pub enum MessageCheck {
    /// No claim: the message carries no `devid-seq`.
    Unclaimed,
    /// Authentic and fresh. For a sealed message, the decrypted payload.
    Verified { plaintext: Option<Vec<u8>> },
}

/// What to do with an incoming PUBLISH.
#[derive(Debug, PartialEq, Eq)]
pub enum MessageVerdict {
    /// Forward it. `verified`: add `devid-verified` = this ClientID. `payload`: replace the
    /// payload (a sealed message, decrypted).
    Accept {
        verified: Option<String>,
        payload: Option<Vec<u8>>,
    },
    /// PUBACK/PUBREC 0x87 (QoS 1/2) or dropped (QoS 0).
    Refuse,
    /// Too many refusals in a row: drop the connection.
    Disconnect,
}

/// A handshake that outlived `auth_timeout`: the connection to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    pub key: ConnKey,
    /// A re-authentication of a live (authenticated) connection rather than a first exchange.
    pub reauth: bool,
}

/// How a connection authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Devid1,
    MutualTls,
}

enum Conn<S: ServerSide> {
    Handshaking {
        started: Instant,
        /// The source address (its group is what the pending bounds count).
        address: Option<String>,
        identity: Verified,
        pending: S::Pending,
        /// Set when this is a re-authentication of a live connection.
        previous: Option<Box<Authenticated<S>>>,
    },
    Authenticated(Box<Authenticated<S>>),
}

struct Authenticated<S: ServerSide> {
    identity: Verified,
    /// Checks this session's PUBLISHes (DEVID-1 only; new keys after a re-authentication).
    verifier: Option<S::Verifier>,
    /// PUBLISHes refused in a row.
    refused_in_row: u32,
    via: Via,
    address: Option<String>,
    /// Set when the revocation state or allow-list turned against the connection: everything is
    /// denied while the kick goes through.
    denied: bool,
}

pub struct Engine<S: ServerSide> {
    config: Config,
    server: S,
    shared: Arc<Mutex<Shared>>,
    to_service: Option<mpsc::Sender<ToService>>,
    conns: HashMap<ConnKey, Conn<S>>,
    started: Instant,
    last_tick: Option<Instant>,
    stale_logged: bool,
    status_requested: HashMap<String, Instant>,
    logs: Vec<(LogLevel, String)>,
    /// Unfinished handshakes per source address group.
    pending_by_source: HashMap<String, usize>,
    /// Handshakes in the order they started (stale entries are skipped when popped).
    pending_order: VecDeque<(Instant, ConnKey)>,
    /// ClientHello token buckets per source address group.
    hello_buckets: HashMap<String, Bucket>,
}

/// A token bucket: `tokens` as of `at`.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The group a source address counts in for the handshake bounds: an IPv4 address, an IPv6
/// /64 (one subscriber's usual allocation), or the text itself when it does not parse.
pub fn source_group(address: Option<&str>) -> String {
    let Some(a) = address else {
        return "?".into();
    };
    match a.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        Ok(ip) => ip.to_string(),
        Err(_) => a.to_string(),
    }
}

/// Within this long after start, no TICK yet is normal.
const TICK_GRACE: Duration = Duration::from_secs(3);
/// A device's status is refetched at most this often.
const STATUS_REFRESH: Duration = Duration::from_secs(1);

impl<S: ServerSide> Engine<S> {
    pub fn new(
        config: Config,
        server: S,
        shared: Arc<Mutex<Shared>>,
        to_service: Option<mpsc::Sender<ToService>>,
    ) -> Self {
        Engine {
            config,
            server,
            shared,
            to_service,
            conns: HashMap::new(),
            started: Instant::now(),
            last_tick: None,
            stale_logged: false,
            status_requested: HashMap::new(),
            logs: Vec::new(),
            pending_by_source: HashMap::new(),
            pending_order: VecDeque::new(),
            hello_buckets: HashMap::new(),
        }
    }

    /// Log lines produced since the last call (lib.rs writes them to the broker log).
    pub fn take_logs(&mut self) -> Vec<(LogLevel, String)> {
        std::mem::take(&mut self.logs)
    }

    fn log(&mut self, level: LogLevel, msg: String) {
        self.logs.push((level, msg));
    }

    fn send(&self, msg: ToService) {
        if let Some(tx) = &self.to_service {
            // Never block the broker: when the queue is full the event is dropped.
            let _ = tx.try_send(msg);
        }
    }

    fn event(
        &self,
        kind: ConnectionEventKind,
        client_id: &str,
        address: Option<&str>,
        refusal: Option<&Refusal>,
    ) {
        self.send(ToService::Event(ConnectionEvent {
            kind,
            client_id: client_id.to_string(),
            at: rfc3339_now(),
            address: address.map(str::to_string),
            reason: refusal.map(Refusal::to_string),
            refusal: refusal.map(|r| r.name().to_string()),
            broker: self.config.broker_name.clone(),
        }));
    }

    /// Logs and reports a refusal; the broker answers CONNACK 0x87.
    fn refuse(&mut self, client_id: &str, address: Option<&str>, refusal: Refusal) -> AuthOutcome {
        self.log(
            LogLevel::Notice,
            format!(
                "devid: refused client {client_id:?} from {}: {refusal} [{}]",
                address.unwrap_or("?"),
                refusal.name()
            ),
        );
        self.event(
            ConnectionEventKind::AuthFailure,
            client_id,
            address,
            Some(&refusal),
        );
        AuthOutcome::Deny
    }

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
    fn admissible(&self, id: &Verified, address: Option<&str>) -> Result<(), Refusal> {
        let g = lock(&self.shared);
        g.revocations.check(&id.client_id, &id.serial)?;
        if let Some(st) = g.revocations.statuses.get(&id.client_id) {
            if !cidr::allowed(&st.allowed_cidrs, address) {
                return Err(Refusal::AddressNotAllowed {
                    address: address.unwrap_or("?").to_string(),
                });
            }
        }
        Ok(())
    }

    fn request_status(&mut self, client_id: &str) {
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

    /// Removes a connection's state, keeping the pending counts right.
    fn take(&mut self, key: ConnKey) -> Option<Conn<S>> {
        let conn = self.conns.remove(&key)?;
        if let Conn::Handshaking { address, .. } = &conn {
            let source = source_group(address.as_deref());
            if let Some(n) = self.pending_by_source.get_mut(&source) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.pending_by_source.remove(&source);
                }
            }
        }
        Some(conn)
    }

    fn pending(&self) -> usize {
        self.pending_by_source.values().sum()
    }

    /// The bounds checked before any public-key work: unfinished handshakes in total and from
    /// this source, then the source's ClientHello rate (full handshakes only).
    fn admit_hello(&mut self, source: &str, full: bool) -> Result<(), Refusal> {
        let g = self.config.guard;
        let total = self.pending();
        if total >= g.max_pending {
            return Err(Refusal::TooManyPending { pending: total });
        }
        let here = self.pending_by_source.get(source).copied().unwrap_or(0);
        if here >= g.max_pending_per_address {
            return Err(Refusal::TooManyPendingFromSource {
                source_group: source.to_string(),
                pending: here,
            });
        }
        if !full {
            return Ok(());
        }
        let now = Instant::now();
        let burst = f64::from(g.hello_burst);
        let b = self
            .hello_buckets
            .entry(source.to_string())
            .or_insert(Bucket {
                tokens: burst,
                at: now,
            });
        let refill = now.duration_since(b.at).as_secs_f64() * f64::from(g.hello_rate);
        b.tokens = (b.tokens + refill).min(burst);
        b.at = now;
        if b.tokens < 1.0 {
            return Err(Refusal::HelloRate {
                source_group: source.to_string(),
                rate: g.hello_rate,
            });
        }
        b.tokens -= 1.0;
        Ok(())
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
        if method != Some(METHOD) {
            return AuthOutcome::Defer;
        }
        let cid = client_id.unwrap_or("");
        // A re-authentication keeps the live identity aside; a failed one ends the connection.
        let previous = match self.take(key) {
            Some(Conn::Authenticated(a)) => Some(a),
            _ => None,
        };
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
        if let Err(reason) = self.admit_hello(&source, full) {
            return self.refuse(cid, address, reason);
        }
        let now = state::unix_now();
        let (identity, hello) = match self.server.hello(data, cid, now) {
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
        if let Some(p) = &previous {
            if p.identity.client_id != identity.client_id {
                return self.refuse(cid, address, Refusal::ReauthOtherIdentity);
            }
        }
        if let Err(reason) = self.admissible(&identity, address) {
            return self.refuse(cid, address, reason);
        }
        match self.server.accept(hello, now) {
            Ok((pending, server_hello)) => {
                let started = Instant::now();
                *self.pending_by_source.entry(source).or_insert(0) += 1;
                self.pending_order.push_back((started, key));
                self.conns.insert(
                    key,
                    Conn::Handshaking {
                        started,
                        address: address.map(str::to_string),
                        identity,
                        pending,
                        previous,
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
        let (started, identity, pending, previous) = match conn {
            Conn::Handshaking {
                started,
                identity,
                pending,
                previous,
                ..
            } => (started, identity, pending, previous),
            Conn::Authenticated(_) => {
                return self.refuse(&cid, address, Refusal::AuthAfterSuccess);
            }
        };
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
                let reauth = previous.is_some();
                self.admit(
                    key,
                    identity,
                    Some((keys, pk_ops)),
                    Via::Devid1,
                    address,
                    reauth,
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
        reauth: bool,
    ) {
        let cid = identity.client_id.clone();
        let (keys, pk_ops) = match keys {
            Some((k, ops)) => (Some(k), format!("; pk_ops={ops}")),
            None => (None, String::new()),
        };
        self.log(
            LogLevel::Info,
            format!(
                "devid: {} client {cid} (serial {}) from {} via {}{pk_ops}",
                if reauth {
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
        self.conns.insert(
            key,
            Conn::Authenticated(Box::new(Authenticated {
                identity,
                verifier: keys.as_ref().map(|k| self.server.verifier(k)),
                refused_in_row: 0,
                via,
                address: address.map(str::to_string),
                denied: false,
            })),
        );
        if !reauth {
            self.event(ConnectionEventKind::Connect, &cid, address, None);
        }
        self.request_status(&cid);
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
        let identity = match self.server.verify_tls_client(der, cid, state::unix_now()) {
            Ok(i) => i,
            Err(e) => return self.refuse(cid, address, e),
        };
        if identity.client_id != cid {
            return self.refuse(cid, address, Refusal::CertificateClientIdMismatch);
        }
        if let Err(reason) = self.admissible(&identity, address) {
            return self.refuse(cid, address, reason);
        }
        self.admit(key, identity, None, Via::MutualTls, address, false);
        AuthOutcome::Success(Vec::new())
    }

    /// MOSQ_EVT_ACL_CHECK. Only devid-authenticated connections get anything.
    pub fn acl(&self, key: ConnKey, access: Access, topic: &str) -> bool {
        let Some(Conn::Authenticated(a)) = self.conns.get(&key) else {
            return false;
        };
        if a.denied {
            return false;
        }
        let g = lock(&self.shared);
        let default_policy;
        let policy = match g.revocations.statuses.get(&a.identity.client_id) {
            Some(s) => &s.policy,
            None => {
                default_policy = TopicPolicy::default();
                &default_policy
            }
        };
        Expanded::new(policy, &a.identity.client_id).allows(access, topic)
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
        let max = self.config.max_refused_messages;
        let required = {
            let Some(Conn::Authenticated(a)) = self.conns.get(&key) else {
                return MessageVerdict::Refuse;
            };
            if a.denied {
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
                        payload: plaintext,
                    }),
                    Ok(MessageCheck::Unclaimed) if required => Err(MessageRefusal::AuthRequired),
                    Ok(MessageCheck::Unclaimed) => Ok(MessageVerdict::Accept {
                        verified: None,
                        payload: None,
                    }),
                    Err(e) => Err(e),
                }
            }
        };
        match outcome {
            Ok(v) => {
                a.refused_in_row = 0;
                v
            }
            Err(reason) => {
                a.refused_in_row += 1;
                let n = a.refused_in_row;
                let address = a.address.clone();
                self.log(
                    LogLevel::Notice,
                    format!(
                        "devid: refused PUBLISH from {cid} on {topic:?}: {reason} ({n} in a row) [{}]",
                        reason.name()
                    ),
                );
                if n >= max {
                    mark_denied(&mut self.conns, key);
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
        }
    }

    /// MOSQ_EVT_DISCONNECT: forget the connection.
    pub fn disconnect(&mut self, key: ConnKey) {
        if let Some(Conn::Authenticated(a)) = self.take(key) {
            self.event(
                ConnectionEventKind::Disconnect,
                &a.identity.client_id,
                a.address.as_deref(),
                None,
            );
        }
    }

    /// MOSQ_EVT_TICK: applies what the service thread sent. Returns the ClientIDs to kick; the
    /// caller kicks them after releasing every borrow of the engine (a kick re-enters
    /// DISCONNECT).
    pub fn tick(&mut self, inbox: impl IntoIterator<Item = FromService>) -> Vec<String> {
        self.last_tick = Some(Instant::now());
        let mut kicks = Vec::new();
        for msg in inbox {
            match msg {
                FromService::Log(level, line) => self.log(level, line),
                FromService::Recheck(r) => self.recheck(&r, &mut kicks),
                FromService::Updated(u) => self.updated(&u),
            }
        }
        // Buckets that have refilled are the same as no bucket (bounded memory).
        let g = self.config.guard;
        let full_after = f64::from(g.hello_burst) / f64::from(g.hello_rate);
        self.hello_buckets
            .retain(|_, b| b.at.elapsed().as_secs_f64() < full_after);
        // Forget fetch times once they no longer throttle anything (bounded memory).
        self.status_requested
            .retain(|_, t| t.elapsed() < STATUS_REFRESH);
        kicks.sort();
        kicks.dedup();
        kicks
    }

    /// Handshakes that did not finish within `auth_timeout`: their state is dropped, the
    /// refusal logged and reported, and the connections returned for the caller to close
    /// (after releasing every borrow of the engine: closing re-enters DISCONNECT). A stalled
    /// re-authentication ends its live connection too.
    pub fn expired_handshakes(&mut self) -> Vec<Expired> {
        let timeout = self.config.auth_timeout;
        let mut expired = Vec::new();
        while let Some(&(started, key)) = self.pending_order.front() {
            if started.elapsed() <= timeout {
                break;
            }
            self.pending_order.pop_front();
            // Skip entries whose handshake finished, failed, or was replaced by a newer one.
            let current = matches!(
                self.conns.get(&key),
                Some(Conn::Handshaking { started: s, .. }) if *s == started
            );
            if !current {
                continue;
            }
            if let Some(Conn::Handshaking {
                identity,
                address,
                previous,
                ..
            }) = self.take(key)
            {
                self.refuse(
                    &identity.client_id,
                    address.as_deref(),
                    Refusal::Abandoned {
                        secs: timeout.as_secs(),
                    },
                );
                expired.push(Expired {
                    key,
                    reauth: previous.is_some(),
                });
            }
        }
        if !expired.is_empty() {
            self.log(
                LogLevel::Notice,
                format!(
                    "devid: closing {} connection(s) whose handshake did not finish within {} s; public-key operations since start: {}",
                    expired.len(),
                    timeout.as_secs(),
                    devid_core::protocol::pk_operations()
                ),
            );
        }
        expired
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
            if a.identity.client_id != r.client_id
                && !serials.contains(&state::normalize_serial(&a.identity.serial))
            {
                continue;
            }
            if let Err(reason) = self.admissible(&a.identity, a.address.as_deref()) {
                denied.push((*key, a.identity.client_id.clone(), reason));
            }
        }
        for (key, cid, reason) in denied {
            if let Some(Conn::Authenticated(a)) = self.conns.get_mut(&key) {
                a.denied = true;
            }
            self.log(
                LogLevel::Notice,
                format!("devid: disconnecting {cid}: {reason} [{}]", reason.name()),
            );
            kicks.push(cid);
        }
    }

    #[cfg(test)]
    fn connections(&self) -> usize {
        self.conns.len()
    }

    /// True while `key` is in its first DEVID-1 exchange (CONNECT sent, not authenticated yet):
    /// in Mosquitto 2.0.11 such a connection is not in the broker's ClientID index.
    pub fn in_first_handshake(&self, key: ConnKey) -> bool {
        matches!(
            self.conns.get(&key),
            Some(Conn::Handshaking { previous: None, .. })
        )
    }

    /// Unfinished handshakes (for tests).
    #[cfg(test)]
    fn pending_handshakes(&self) -> usize {
        self.pending()
    }
}

/// Marks an authenticated connection as refused from now on (ACL and PUBLISH), while the
/// disconnect or kick that ends it goes through.
fn mark_denied<S: ServerSide>(conns: &mut HashMap<ConnKey, Conn<S>>, key: ConnKey) {
    if let Some(Conn::Authenticated(a)) = conns.get_mut(&key) {
        a.denied = true;
    }
}

fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, HandshakeGuard};
    use devid_core::api::{
        DeviceState, DeviceStatus, FeedEntry, RevocationAction, RevocationScope,
    };
    use devid_core::protocol::{DecodeError, Error as ProtoError};
    use std::path::PathBuf;

    fn malformed() -> Refusal {
        ProtoError::Decode(DecodeError::BadValue).into()
    }

    thread_local! {
        /// How many first messages the fake read (stands for the public-key work).
        static HELLO_CALLS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }

    /// A fake DEVID-1: the ClientHello is `hello:<client_id>:<serial>` (`resume:...` stands for
    /// a ResumeHello), the ClientFinish must be `finish`.
    struct Fake;
    impl ServerSide for Fake {
        type Hello = Verified;
        type Pending = ();
        type Keys = [u8; 4];
        fn is_full_hello(&self, data: &[u8]) -> bool {
            data.starts_with(b"hello:")
        }
        fn hello(
            &self,
            data: &[u8],
            _cid: &str,
            _now: u64,
        ) -> Result<(Verified, Verified), Refusal> {
            if data.first() == Some(&0x01) && data.get(1) == Some(&0x02) {
                return Err(ProtoError::UnsupportedVersion(2).into());
            }
            HELLO_CALLS.with(|c| c.set(c.get() + 1));
            let s = std::str::from_utf8(data).map_err(|_| malformed())?;
            let mut parts = s.split(':');
            if !matches!(parts.next(), Some("hello" | "resume")) {
                return Err(malformed());
            }
            let v = Verified {
                client_id: parts.next().ok_or_else(malformed)?.into(),
                serial: parts.next().ok_or_else(malformed)?.into(),
                fingerprint: "ff".into(),
                not_after: u64::MAX,
                resumed: false,
            };
            Ok((v.clone(), v))
        }
        fn accept(&self, _h: Verified, _now: u64) -> Result<((), Vec<u8>), Refusal> {
            Ok(((), b"server-hello".to_vec()))
        }
        fn finish(
            &self,
            _p: (),
            data: &[u8],
            _now: u64,
        ) -> Result<([u8; 4], Vec<u8>, PkOps), Refusal> {
            if data == b"finish" {
                Ok(([1; 4], b"server-finish".to_vec(), PkOps::default()))
            } else {
                Err(ProtoError::BadMac.into())
            }
        }
        type Verifier = u64;
        fn verifier(&self, _k: &[u8; 4]) -> u64 {
            0
        }
        /// `devid-seq` = n and `devid-mac` = "good"; `devid-seal` = 1 reverses the payload.
        fn verify_message(
            &self,
            last: &mut u64,
            props: &[(&str, &str)],
            _topic: &str,
            payload: &[u8],
        ) -> Result<MessageCheck, MessageRefusal> {
            let get = |n: &str| props.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
            let Some(seq) = get("devid-seq") else {
                return Ok(MessageCheck::Unclaimed);
            };
            let seq: u64 = seq
                .parse()
                .map_err(|_| MessageRefusal::Invalid(ProtoError::BadProperty("devid-seq")))?;
            if seq <= *last {
                return Err(MessageRefusal::Invalid(ProtoError::Replay {
                    seq,
                    last: *last,
                }));
            }
            let plaintext = match (get("devid-mac"), get("devid-seal")) {
                (Some("good"), None) => None,
                (None, Some("1")) => Some(payload.iter().rev().copied().collect()),
                _ => return Err(MessageRefusal::Invalid(ProtoError::BadMac)),
            };
            *last = seq;
            Ok(MessageCheck::Verified { plaintext })
        }
        fn verify_tls_client(&self, der: &[u8], cid: &str, now: u64) -> Result<Verified, Refusal> {
            self.hello(der, cid, now).map(|(v, _)| v)
        }
    }

    fn engine() -> (Engine<Fake>, Arc<Mutex<Shared>>, mpsc::Receiver<ToService>) {
        engine_with(|_| {})
    }

    fn engine_with(
        adjust: impl FnOnce(&mut Config),
    ) -> (Engine<Fake>, Arc<Mutex<Shared>>, mpsc::Receiver<ToService>) {
        let mut config = Config {
            service_url: "http://127.0.0.1:1".into(),
            token: "t".into(),
            trust_anchor_der: vec![],
            broker_chain_der: vec![],
            broker_key_der: vec![],
            state_dir: PathBuf::from("/nonexistent"),
            max_staleness: Duration::from_secs(60),
            auth_timeout: Duration::from_secs(10),
            broker_name: None,
            ticket_keys: None,
            ticket_lifetime: 0,
            max_refused_messages: 3,
            guard: HandshakeGuard {
                max_pending: 1000,
                max_pending_per_address: 100,
                hello_rate: 1000,
                hello_burst: 1000,
            },
        };
        adjust(&mut config);
        let shared = Arc::new(Mutex::new(Shared {
            last_contact: Some(state::unix_now()),
            ..Shared::default()
        }));
        let (tx, rx) = mpsc::channel(1000);
        let mut e = Engine::new(config, Fake, shared.clone(), Some(tx));
        e.tick(Vec::new());
        (e, shared, rx)
    }

    fn connect(e: &mut Engine<Fake>, key: ConnKey, cid: &str, serial: &str) -> AuthOutcome {
        let hello = format!("hello:{cid}:{serial}");
        match e.auth_start(
            key,
            Some(METHOD),
            hello.as_bytes(),
            Some(cid),
            Some("127.0.0.1"),
        ) {
            AuthOutcome::Continue(sh) => {
                assert_eq!(sh, b"server-hello");
                e.auth_continue(key, b"finish", Some(cid), Some("127.0.0.1"))
            }
            other => other,
        }
    }

    fn drain(rx: &mut mpsc::Receiver<ToService>) -> Vec<ToService> {
        let mut v = Vec::new();
        while let Ok(m) = rx.try_recv() {
            v.push(m);
        }
        v
    }

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
        assert_eq!(e.connections(), 0);
        let msgs = drain(&mut rx);
        assert_eq!(
            msgs.iter()
                .filter(|m| matches!(m, ToService::Event(ev) if ev.kind == ConnectionEventKind::AuthFailure))
                .count(),
            3
        );
    }

    #[test]
    fn refusals_are_reported_and_logged_by_kind() {
        let (mut e, _s, mut rx) = engine();
        e.auth_start(
            1,
            Some(METHOD),
            b"hello:dev2:1",
            Some("dev1"),
            Some("10.0.0.9"),
        );
        e.auth_start(2, Some(METHOD), &[1, 2, 3], Some("dev1"), None);
        e.auth_continue(3, b"finish", Some("dev1"), None);
        let events: Vec<(Option<String>, Option<String>)> = drain(&mut rx)
            .into_iter()
            .filter_map(|m| match m {
                ToService::Event(ev) if ev.kind == ConnectionEventKind::AuthFailure => {
                    Some((ev.refusal, ev.reason))
                }
                _ => None,
            })
            .collect();
        let kinds: Vec<_> = events.iter().map(|(k, _)| k.as_deref()).collect();
        assert_eq!(
            kinds,
            [
                Some("client_id_mismatch"),
                Some("bad_auth_method"),
                Some("no_exchange")
            ]
        );
        // The reason text is what the service has always stored.
        assert_eq!(
            events[0].1.as_deref(),
            Some("ClientID differs from the certificate or ticket")
        );
        let logs = e.take_logs();
        assert!(
            logs.iter().any(|(_, l)| l
                == "devid: refused client \"dev1\" from 10.0.0.9: ClientID differs from the certificate or ticket [client_id_mismatch]"),
            "{logs:?}"
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
        }
    }

    fn fetches(rx: &mut mpsc::Receiver<ToService>) -> Vec<String> {
        let mut v: Vec<String> = drain(rx)
            .into_iter()
            .filter_map(|m| match m {
                ToService::FetchStatus(id) => Some(id),
                ToService::Event(_) => None,
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
    fn state_is_keyed_by_connection_not_client_id() {
        let (mut e, _s, _rx) = engine();
        // Takeover: a second connection with the same ClientID authenticates, then the old
        // connection's DISCONNECT arrives. The new one must keep its rights.
        assert!(matches!(
            connect(&mut e, 1, "dev1", "0a"),
            AuthOutcome::Success(_)
        ));
        assert!(matches!(
            connect(&mut e, 2, "dev1", "0a"),
            AuthOutcome::Success(_)
        ));
        e.disconnect(1);
        assert!(e.acl(2, Access::Publish, "devices/dev1/x"));
        assert!(!e.acl(1, Access::Publish, "devices/dev1/x"));
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
                payload: None
            }
        );
        let good = props(&[("devid-seq", "1"), ("devid-mac", "good")]);
        assert_eq!(
            e.message(1, "t", &good, b"x"),
            MessageVerdict::Accept {
                verified: Some("dev1".into()),
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
        };
        lock(&shared).revocations.apply_status(&st);
        let sealed = props(&[("devid-seq", "2"), ("devid-seal", "1")]);
        assert_eq!(
            e.message(1, "t", &sealed, b"abc"),
            MessageVerdict::Accept {
                verified: Some("dev1".into()),
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
                payload: None
            }
        );
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

    fn start(e: &mut Engine<Fake>, key: ConnKey, msg: &str, address: &str) -> AuthOutcome {
        let cid = msg.split(':').nth(1).unwrap_or("");
        e.auth_start(key, Some(METHOD), msg.as_bytes(), Some(cid), Some(address))
    }

    fn auth_failures(rx: &mut mpsc::Receiver<ToService>) -> Vec<String> {
        drain(rx)
            .into_iter()
            .filter_map(|m| match m {
                ToService::Event(ev) if ev.kind == ConnectionEventKind::AuthFailure => ev.reason,
                _ => None,
            })
            .collect()
    }

    #[test]
    fn stalled_handshakes_are_closed_after_auth_timeout() {
        let (mut e, _s, mut rx) = engine_with(|c| c.auth_timeout = Duration::from_millis(200));
        // Authenticated, then a re-authentication that stalls.
        assert!(matches!(
            connect(&mut e, 3, "dev3", "0c"),
            AuthOutcome::Success(_)
        ));
        assert!(matches!(
            start(&mut e, 3, "hello:dev3:0c", "10.0.0.3"),
            AuthOutcome::Continue(_)
        ));
        // A first exchange that stalls, one that finishes, one that the client abandons.
        for key in [1, 2, 4] {
            assert!(matches!(
                start(&mut e, key, "hello:dev1:0a", "10.0.0.1"),
                AuthOutcome::Continue(_)
            ));
        }
        assert!(e.in_first_handshake(1));
        assert!(!e.in_first_handshake(3), "a re-authentication");
        assert!(matches!(
            e.auth_continue(2, b"finish", Some("dev1"), None),
            AuthOutcome::Success(_)
        ));
        e.disconnect(4);
        assert_eq!(e.pending_handshakes(), 2);
        assert!(e.expired_handshakes().is_empty(), "not yet");
        let _ = auth_failures(&mut rx);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(
            e.expired_handshakes(),
            vec![
                Expired {
                    key: 3,
                    reauth: true
                },
                Expired {
                    key: 1,
                    reauth: false
                }
            ]
        );
        assert!(e.expired_handshakes().is_empty(), "closed once");
        assert_eq!(e.pending_handshakes(), 0);
        assert!(e.acl(2, Access::Publish, "devices/dev1/x"), "untouched");
        assert!(!e.acl(3, Access::Publish, "devices/dev3/x"));
        let reasons = auth_failures(&mut rx);
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(reasons
            .iter()
            .all(|r| r.starts_with("authentication timed out")));
        assert!(e
            .take_logs()
            .iter()
            .any(|(_, l)| l.contains("dev1") && l.contains("authentication timed out")));
        // The ClientFinish of a closed handshake finds nothing.
        assert_eq!(
            e.auth_continue(1, b"finish", Some("dev1"), None),
            AuthOutcome::Deny
        );
    }

    #[test]
    fn unfinished_handshakes_are_bounded_per_address_and_in_total() {
        let (mut e, _s, mut rx) = engine_with(|c| {
            c.guard.max_pending = 6;
            c.guard.max_pending_per_address = 2;
        });
        let mut key = 0;
        let mut try_from = |e: &mut Engine<Fake>, address: &str| {
            key += 1;
            start(e, key, "hello:dev1:0a", address)
        };
        for address in [
            "10.0.0.1",
            "10.0.0.1",
            "10.0.0.2",
            "2001:db8::1",
            "2001:db8::2",
        ] {
            assert!(matches!(
                try_from(&mut e, address),
                AuthOutcome::Continue(_)
            ));
        }
        let calls = HELLO_CALLS.with(|c| c.get());
        // Per address (an IPv6 /64 counts as one), then in total.
        assert_eq!(try_from(&mut e, "10.0.0.1"), AuthOutcome::Deny);
        assert_eq!(try_from(&mut e, "2001:db8::3"), AuthOutcome::Deny);
        assert_eq!(
            HELLO_CALLS.with(|c| c.get()),
            calls,
            "refused before any work"
        );
        assert!(matches!(
            try_from(&mut e, "10.0.0.3"),
            AuthOutcome::Continue(_)
        ));
        let calls = HELLO_CALLS.with(|c| c.get());
        assert_eq!(try_from(&mut e, "10.0.0.9"), AuthOutcome::Deny);
        assert_eq!(
            HELLO_CALLS.with(|c| c.get()),
            calls,
            "refused before any work"
        );
        let reasons = auth_failures(&mut rx);
        assert!(reasons[0].contains("from 10.0.0.1"), "{reasons:?}");
        assert!(reasons[1].contains("from 2001:db8:0:0::/64"), "{reasons:?}");
        assert!(
            reasons[2].contains("too many unfinished handshakes (6"),
            "{reasons:?}"
        );
        // An ended handshake frees its place.
        e.disconnect(1);
        assert!(matches!(
            try_from(&mut e, "10.0.0.1"),
            AuthOutcome::Continue(_)
        ));
        assert_eq!(e.pending_handshakes(), 6);
    }

    #[test]
    fn client_hellos_are_rate_limited_per_address_before_any_work() {
        let (mut e, _s, mut rx) = engine_with(|c| {
            c.guard.hello_rate = 4;
            c.guard.hello_burst = 3;
        });
        let calls = || HELLO_CALLS.with(|c| c.get());
        let before = calls();
        for key in 1..=3 {
            assert!(matches!(
                start(&mut e, key, "hello:dev1:0a", "10.0.0.1"),
                AuthOutcome::Continue(_)
            ));
            e.disconnect(key);
        }
        assert_eq!(
            start(&mut e, 4, "hello:dev1:0a", "10.0.0.1"),
            AuthOutcome::Deny
        );
        assert_eq!(calls() - before, 3, "the refused ClientHello was not read");
        assert!(auth_failures(&mut rx)
            .iter()
            .any(|r| r.contains("ClientHello rate from 10.0.0.1")));
        // Another address has its own bucket; a resumption costs no public-key work.
        assert!(matches!(
            start(&mut e, 5, "hello:dev1:0a", "10.0.0.2"),
            AuthOutcome::Continue(_)
        ));
        assert!(matches!(
            start(&mut e, 6, "resume:dev1:0a", "10.0.0.1"),
            AuthOutcome::Continue(_)
        ));
        // The bucket refills at the rate.
        std::thread::sleep(Duration::from_millis(300));
        assert!(matches!(
            start(&mut e, 7, "hello:dev1:0a", "10.0.0.1"),
            AuthOutcome::Continue(_)
        ));
    }

    #[test]
    fn source_groups() {
        assert_eq!(source_group(Some("192.0.2.1")), "192.0.2.1");
        assert_eq!(source_group(Some("::ffff:192.0.2.1")), "192.0.2.1");
        assert_eq!(
            source_group(Some("2001:db8:1:2:3:4:5:6")),
            "2001:db8:1:2::/64"
        );
        assert_eq!(source_group(None), "?");
    }
}
