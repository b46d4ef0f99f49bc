//! The broker-thread logic, free of FFI: per-connection state keyed by the connection pointer,
//! authentication decisions, topic checks, and what TICK does. `ffi` only marshals between
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
//!
//! Layout: this file holds the connection table and the types that `ffi` and devid1.rs use;
//! the engine's methods live beside the concern they serve:
//! - `connect`: how a connection authenticates (DEVID-1 full exchange, resumption and
//!   re-authentication; mutual TLS) and the checks every path shares (TICK and fresh state,
//!   revocation and allow-list);
//! - `guard`: the bounds on unfinished handshakes and ClientHello rates per source address,
//!   checked before any public-key work, and the closing of handshakes that outlive
//!   `auth_timeout`;
//! - `access`: the topic ACL and per-message authentication of PUBLISHes;
//! - `feed`: what TICK applies from the service thread (re-checks, kicks, settings updates,
//!   throttled status fetches);
//! - `sensor`: readings of sensors relayed by a gateway (DEVID-S1): the keys fetched per
//!   gateway, the checks, per-sensor replay windows and counts;
//! - `renewal`: renewal over MQTT (`$CONTROL/devid/renew/v1`): requests handed to the service
//!   thread, replies addressed to the requesting client;
//! - `report`: log lines for the broker and connection events for the service;
//! - `counters`: per-device PUBLISH counts (accepted, refused), kept in each connection's
//!   state and handed to the service thread at most once a second.

#![deny(unsafe_code)]

mod access;
mod connect;
mod counters;
mod feed;
mod guard;
mod renewal;
mod report;
mod sensor;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use devid_core::api::ConnectionEventKind;
use devid_core::protocol::PkOps;
use devid_core::SwVersion;
use tokio::sync::mpsc;

use crate::config::Config;
pub use crate::refusal::{MessageRefusal, Refusal};
use crate::service::{LogLevel, Shared, ToService};
use counters::{ConnCounts, CounterBook};
pub use guard::source_group;
use guard::HandshakeLimiter;
pub use renewal::RenewReply;
use sensor::SensorBook;
pub use sensor::{Delta, SensorMaterial, SensorTally};

/// The authentication method this plugin answers.
pub const METHOD: &str = "DEVID-1";

/// How a CONNECT's User Name carries the device's software version (Mosquitto 2.0 gives
/// plugins no CONNECT property, so the `devid-sw` user property cannot be read here).
pub const SW_VERSION_PREFIX: &str = "devid-sw=";

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
    /// Whether the certificate is an LDevID (it carries the LDevID policy mark, which the CA
    /// signed); None when unknown: a resumption whose certificate this broker has not seen in
    /// a full exchange since it started.
    pub ldevid: Option<bool>,
    /// The id of the issuing CA that signed the certificate (from its AKI); None for a
    /// resumption, which carries no certificate.
    pub issuer: Option<String>,
    /// When the certificate chain was last verified (unix seconds): now, or for a
    /// resumption when its ticket was issued.
    pub verified_at: u64,
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
    /// The CA certificates `verify_tls_client` chains a leaf through from now on.
    fn use_ca_set(&mut self, set: crate::ca_set::CaSet);
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
    /// Forward it. `verified`: add `devid-verified` = this ClientID. `via`: add `devid-via` =
    /// this ClientID (the gateway that relayed a sensor's reading). `payload`: replace the
    /// payload (a sealed message, decrypted).
    Accept {
        verified: Option<String>,
        via: Option<String>,
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
        /// The software version the CONNECT reported (a first exchange).
        sw_version: Option<SwVersion>,
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
    /// PUBLISHes accepted and refused since the last handoff to the service thread.
    counts: ConnCounts,
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
    /// Unfinished handshakes and ClientHello rates per source address group.
    handshakes: HandshakeLimiter,
    /// Sensors relayed by gateways: keys per gateway, replay windows and counts per sensor.
    sensors: SensorBook,
    /// Whether each certificate seen in a full exchange or mutual TLS is an LDevID, by serial
    /// (for resumptions, whose ticket names only the serial). Bounded.
    cert_kinds: HashMap<String, bool>,
    /// Renewal requests in flight and replies to publish.
    renewals: renewal::Renewals,
    /// PUBLISH counts per ClientID waiting for the service thread.
    counters: CounterBook,
    /// What the CONNECT being authenticated reported (see [`Engine::connecting_with`]).
    connecting: Option<SwVersion>,
}

impl<S: ServerSide> Engine<S> {
    pub fn new(
        config: Config,
        server: S,
        shared: Arc<Mutex<Shared>>,
        to_service: Option<mpsc::Sender<ToService>>,
    ) -> Self {
        Engine {
            handshakes: HandshakeLimiter::new(config.guard),
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
            sensors: SensorBook::default(),
            cert_kinds: HashMap::new(),
            renewals: renewal::Renewals::default(),
            counters: CounterBook::default(),
            connecting: None,
        }
    }

    /// Starts each sensor's replay window no lower than these highest accepted seqs (read from
    /// `state_dir` at start).
    pub fn with_sensor_counters(mut self, persisted: HashMap<String, u64>) -> Self {
        self.sensors = SensorBook::with_persisted(persisted);
        self
    }

    /// Removes a connection's state, keeping the pending counts right.
    fn take(&mut self, key: ConnKey) -> Option<Conn<S>> {
        let conn = self.conns.remove(&key)?;
        if let Conn::Handshaking { address, .. } = &conn {
            self.handshakes.end(address.as_deref());
        }
        Some(conn)
    }

    /// MOSQ_EVT_DISCONNECT: forget the connection.
    pub fn disconnect(&mut self, key: ConnKey) {
        self.renewals.forget(key);
        match self.take(key) {
            Some(Conn::Authenticated(a)) => self.ended(*a),
            // A re-authentication in progress: the connection it had ends.
            Some(Conn::Handshaking {
                previous: Some(p), ..
            }) => self.ended(*p),
            _ => {}
        }
    }

    /// An authenticated connection ended (closed, kicked, or its re-authentication failed):
    /// reported, its counts kept for the next handoff, a gateway's sensor keys dropped with
    /// its last connection.
    fn ended(&mut self, a: Authenticated<S>) {
        self.keep_counts(&a.identity.client_id, &a.counts);
        self.event(
            ConnectionEventKind::Disconnect,
            &a.identity.client_id,
            a.address.as_deref(),
            None,
        );
        // The gateway's sensor keys go with its last connection (a takeover keeps them).
        if self.authenticated_keys(&a.identity.client_id).is_empty() {
            self.sensors.forget_gateway(&a.identity.client_id);
        }
    }

    /// What the CONNECT being authenticated says besides its credentials: its User Name, which
    /// may carry the device's software version (`devid-sw=<version>`, see
    /// `docs/protocol.md`). Called right before [`Engine::auth_start`] or
    /// [`Engine::basic_auth`] for the same event, which take it. An invalid version is logged
    /// and ignored; the connection is not refused for it.
    pub fn connecting_with(&mut self, client_id: Option<&str>, username: Option<&str>) {
        self.connecting = None;
        let Some(text) = username.and_then(|u| u.strip_prefix(SW_VERSION_PREFIX)) else {
            return;
        };
        match SwVersion::parse(text) {
            Ok(v) => self.connecting = Some(v),
            Err(e) => self.log(
                LogLevel::Notice,
                format!(
                    "devid: client {:?} reported a software version that {e}; ignored",
                    client_id.unwrap_or("")
                ),
            ),
        }
    }

    /// The authenticated connections of a ClientID (more than one during a takeover).
    fn authenticated_keys(&self, client_id: &str) -> Vec<ConnKey> {
        self.conns
            .iter()
            .filter_map(|(k, c)| match c {
                Conn::Authenticated(a) if a.identity.client_id == client_id => Some(*k),
                _ => None,
            })
            .collect()
    }

    /// True while `key` is in its first DEVID-1 exchange (CONNECT sent, not authenticated yet):
    /// in Mosquitto 2.0.11 such a connection is not in the broker's ClientID index.
    pub fn in_first_handshake(&self, key: ConnKey) -> bool {
        matches!(
            self.conns.get(&key),
            Some(Conn::Handshaking { previous: None, .. })
        )
    }

    /// Marks an authenticated connection as refused from now on (ACL and PUBLISH), while the
    /// disconnect or kick that ends it goes through.
    fn mark_denied(&mut self, key: ConnKey) {
        if let Some(Conn::Authenticated(a)) = self.conns.get_mut(&key) {
            a.denied = true;
        }
    }
}

#[cfg(test)]
mod testing;

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::policy::Access;

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
}
