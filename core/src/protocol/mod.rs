//! DEVID-1: the MQTT v5 enhanced-authentication protocol of devid, sans-IO.
//!
//! Both halves are chains of states, one per awaited message, each consumed by its `handle`.
//! Inputs are bytes, the time ([`UnixTime`]) and randomness (`&dyn SecureRandom`); outputs are
//! the bytes to send and the session. The wire format, checks and key schedule are in
//! `docs/protocol.md`; every message is the Authentication Data of one MQTT packet with
//! Authentication Method [`AUTH_METHOD`].
//!
//! # Device side
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use devid_core::protocol::*;
//! # fn send_connect(_: &str, _: &[u8]) {} fn recv_auth() -> Vec<u8> { vec![] }
//! # fn send_auth(_: &[u8]) {} fn recv_connack() -> Vec<u8> { vec![] }
//! # fn main() {}
//! # fn device(root_der: Vec<u8>, chain_der: Vec<Vec<u8>>, key_pem: String)
//! #     -> Result<(), Box<dyn std::error::Error>> {
//! let rng = ring::rand::SystemRandom::new();
//! let key = Arc::new(EcdsaSigner::from_pkcs8_pem(&key_pem, &rng)?);
//! let config = Arc::new(
//!     ClientConfig::new(&root_der, chain_der, key)?.with_broker_name("mqtt.example.com")?,
//! );
//! let now = || rustls_pki_types::UnixTime::now();
//!
//! // CONNECT: ClientID = config.client_id(), Authentication Method "DEVID-1", data = hello.
//! let (state, hello) = ClientHandshake::start(&config, &rng)?;
//! send_connect(config.client_id(), &hello);
//! // AUTH 0x18 from the broker carries the ServerHello; answer with AUTH 0x18 ClientFinish.
//! let (state, client_finish) = state.handle(&recv_auth(), now(), &rng)?;
//! send_auth(&client_finish);
//! // CONNACK 0x00 carries the ServerFinish.
//! let session: ClientSession = state.handle(&recv_connack(), now())?;
//! let mut signer = PublishSigner::new(&session.keys);
//! let tag = signer.mac("devices/ID/temp", b"21.5")?; // add tag.properties as user properties
//!
//! // Next connection: resume with the stored ticket, fall back to a full handshake on refusal.
//! if let Some(ticket) = session.ticket {
//!     let stored = ticket.to_bytes(); // keep next to the key, mode 0600
//!     let ticket = ResumptionTicket::from_bytes(&stored)?;
//!     let (state, resume_hello) = ClientResume::start(&ticket, &rng)?; // CONNECT data
//!     let (state, proof) = state.handle(&recv_auth())?; // AUTH 0x18 ResumeChallenge -> proof
//!     let session = state.handle(&recv_connack(), now())?; // CONNACK 0x00 ResumeFinish
//! #   let _ = (resume_hello, proof, session);
//! }
//! # Ok(()) }
//! ```
//!
//! # Broker side
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use devid_core::protocol::*;
//! # fn main() {}
//! # fn broker(root_der: Vec<u8>, chain_der: Vec<Vec<u8>>, key: Arc<EcdsaSigner>, client_id: String,
//! #     connect_data: Vec<u8>, finish_data: Vec<u8>, tk: [u8; 32]) -> Result<(), Error> {
//! # let revoked = |_: &str| false;
//! let rng = ring::rand::SystemRandom::new();
//! let config = Arc::new(
//!     ServerConfig::new(&root_der, chain_der, key)
//!         .expect("config")
//!         .with_ticket_keys(TicketKeys::new(TicketKey::new(1, &tk)), 86_400)
//!         .with_cert_cache(Arc::new(MemoryCertCache::new(100_000))),
//! );
//! let now = rustls_pki_types::UnixTime::now();
//! // EXT_AUTH_START (CONNECT, or AUTH 0x19 re-authentication on a live connection):
//! match ServerHandshake::start(&config, &client_id, &connect_data, now) {
//!     Err(e) => { /* answer e.reason_code() (0x8C or 0x87), log e.log_str() */ }
//!     Ok(ServerStart::Full(pending)) => {
//!         // Certificate verified and bound to client_id; no ECDH or signature done yet.
//!         let id: &DeviceIdentity = pending.identity();
//!         if revoked(&id.serial_hex) { /* 0x87 */ }
//!         let (state, server_hello) = pending.accept(&rng)?; // AUTH 0x18 data
//!         // EXT_AUTH_CONTINUE with the ClientFinish:
//!         let (session, server_finish) = state.handle(&finish_data, now, &rng)?;
//!         // CONNACK 0x00 (or AUTH 0x00 after a re-authentication) with server_finish.
//!         let mut verifier = PublishVerifier::new(&session.keys);
//!         // per PUBLISH: if let Some(auth) = PublishAuth::from_properties(props)? {
//!         //     verifier.verify(&auth, topic, &mut payload)? }
//! #       let _ = (server_hello, server_finish, &mut verifier);
//!     }
//!     Ok(ServerStart::Resume(pending)) => {
//!         let t: &TicketContents = pending.ticket();
//!         if revoked(&t.cert_serial) { /* 0x87 */ }
//!         let (state, challenge) = pending.accept(&rng)?; // AUTH 0x18 data
//!         let (session, resume_finish) = state.handle(&finish_data, now, &rng)?; // CONNACK data
//! #       let _ = (challenge, session, resume_finish);
//!     }
//! }
//! # Ok(()) }
//! ```

use std::sync::Arc;

use ring::rand::SecureRandom;
use rustls_pki_types::{ServerName, UnixTime};

mod certs;
mod client;
mod codec;
mod error;
mod issuers;
mod keys;
mod messages;
mod pk;
mod publish;
pub mod renewal;
mod server;
mod ticket;

pub use certs::{
    normalize_serial_hex, BrokerCertCache, CertCache, DeviceIdentity, MemoryBrokerCertCache,
    MemoryCache, MemoryCertCache, VerifiedBrokerCert, VerifiedDeviceCert, DEVID_URN_PREFIX,
};
pub use client::{
    ClientHandshake, ClientResume, ClientSession, ExpectResumeChallenge, ExpectResumeFinish,
    ExpectServerFinish, ExpectServerHello,
};
pub use error::{ConfigError, DecodeError, Error, REASON_BAD_AUTH_METHOD, REASON_NOT_AUTHORIZED};
pub use issuers::{ca_id_of, issuer_id_of, issuing_ca_id};
pub use keys::{EcdsaSigner, HandshakeSigner, SessionKeys};
pub use pk::{pk_operations, PkOps};
pub use publish::{
    is_devid_property, Protection, PublishAuth, PublishSigner, PublishTag, PublishVerifier,
    MESSAGE_MAC_LEN, PROP_MAC, PROP_PREFIX, PROP_SEAL, PROP_SEQ, PROP_VERIFIED, SEAL_TAG_LEN,
};
pub use server::{
    ExpectClientFinish, ExpectResumeProof, PendingClientHello, PendingResume, ServerHandshake,
    ServerSession, ServerStart,
};
pub use ticket::{ResumptionTicket, TicketContents, TicketKey, TicketKeys};

/// Entry points for the fuzz targets in `fuzz/`: parsers that the public API only reaches
/// behind authentication. Not part of the stable API.
#[doc(hidden)]
pub mod fuzzing {
    /// The strict parser of an opened ticket's plaintext.
    pub fn parse_ticket_plaintext(plain: &[u8]) -> Result<super::TicketContents, super::Error> {
        super::ticket::parse_plaintext(plain).map_err(|_| super::Error::BadTicket)
    }
}

/// The MQTT v5 Authentication Method of DEVID-1.
pub const AUTH_METHOD: &str = "DEVID-1";
/// The protocol version byte in ClientHello and ResumeHello.
pub const VERSION: u8 = 0x01;
/// Most certificates a `certs` list may carry (leaf plus intermediates).
pub const MAX_CERTS: usize = 4;
/// Default time a broker allows for a whole exchange, in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;
/// Default ticket lifetime, in seconds.
pub const DEFAULT_TICKET_LIFETIME: u32 = 86_400;

/// Checks an MQTT Authentication Method: `Ok` for `DEVID-1`, otherwise
/// [`Error::UnsupportedMethod`] (reason 0x8C).
pub fn check_method(method: &str) -> Result<(), Error> {
    if method == AUTH_METHOD {
        Ok(())
    } else {
        Err(Error::UnsupportedMethod)
    }
}

/// Every DER certificate in a PEM text, in order.
pub fn certs_from_pem(text: &str) -> Result<Vec<Vec<u8>>, ConfigError> {
    let blocks = pem::parse_many(text).map_err(|e| ConfigError(format!("PEM: {e}")))?;
    let certs: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.into_contents())
        .collect();
    if certs.is_empty() {
        return Err(ConfigError("no CERTIFICATE in PEM".into()));
    }
    Ok(certs)
}

pub(crate) fn unix_secs(now: UnixTime) -> u64 {
    now.as_secs()
}

pub(crate) fn random_nonce(rng: &dyn SecureRandom) -> Result<[u8; 32], Error> {
    let mut n = [0u8; 32];
    rng.fill(&mut n)
        .map_err(|_| Error::Internal("random number generator failed"))?;
    Ok(n)
}

fn check_chain(chain: &[Vec<u8>]) -> Result<(), ConfigError> {
    if chain.is_empty() || chain.len() > MAX_CERTS {
        return Err(ConfigError(format!(
            "certificate chain must hold 1 to {MAX_CERTS} certificates (leaf first, no root)"
        )));
    }
    if chain
        .iter()
        .any(|c| c.is_empty() || c.len() > usize::from(u16::MAX))
    {
        return Err(ConfigError("certificate empty or over 65535 bytes".into()));
    }
    Ok(())
}

fn check_key_matches(leaf_key: &[u8; 65], signer: &dyn HandshakeSigner) -> Result<(), ConfigError> {
    if signer.public_key() != leaf_key.as_slice() {
        return Err(ConfigError(
            "private key does not match the certificate's public key".into(),
        ));
    }
    Ok(())
}

/// The device's configuration: trust anchor, own chain and key, expected broker name.
pub struct ClientConfig {
    anchor: certs::Anchor,
    certs: Vec<Vec<u8>>,
    key: Arc<dyn HandshakeSigner>,
    client_id: String,
    broker_name: Option<ServerName<'static>>,
    broker_cache: Option<Arc<dyn BrokerCertCache>>,
}

impl ClientConfig {
    /// `trust_anchor_der`: the devid root; `cert_chain_der`: the device certificate first, then
    /// intermediates, never the root; `key`: the device key (must match the certificate).
    pub fn new(
        trust_anchor_der: &[u8],
        cert_chain_der: Vec<Vec<u8>>,
        key: Arc<dyn HandshakeSigner>,
    ) -> Result<Self, ConfigError> {
        check_chain(&cert_chain_der)?;
        let (client_id, leaf_key) = certs::own_device_cert(&cert_chain_der[0])?;
        check_key_matches(&leaf_key, key.as_ref())?;
        Ok(ClientConfig {
            anchor: certs::Anchor::from_der(trust_anchor_der)?,
            certs: cert_chain_der,
            key,
            client_id,
            broker_name: None,
            broker_cache: None,
        })
    }

    /// Requires the broker certificate to carry `name` as a SAN DNS name.
    pub fn with_broker_name(mut self, name: &str) -> Result<Self, ConfigError> {
        let name = ServerName::try_from(name.to_string())
            .map_err(|_| ConfigError(format!("{name:?} is not a valid broker name")))?;
        self.broker_name = Some(name);
        Ok(self)
    }

    /// Cache verified broker certificates by leaf fingerprint until the path's notAfter, so a
    /// reconnect skips the chain's signature checks. A hit still checks the validity window and
    /// the broker name, and sig_s, mac_s and mac_f are verified as always. Share one cache
    /// between configs only when they have the same trust anchor.
    pub fn with_broker_cert_cache(mut self, cache: Arc<dyn BrokerCertCache>) -> Self {
        self.broker_cache = Some(cache);
        self
    }

    /// The ClientID the device certificate binds: use it as the CONNECT's ClientID.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }
}

/// The broker's configuration: trust anchor, own chain and key, ticket keys, certificate cache
/// and timeout.
pub struct ServerConfig {
    anchor: certs::Anchor,
    certs: Vec<Vec<u8>>,
    key: Arc<dyn HandshakeSigner>,
    tickets: Option<TicketKeys>,
    ticket_lifetime: u32,
    cache: Option<Arc<dyn CertCache>>,
    timeout_secs: u64,
}

impl ServerConfig {
    /// `trust_anchor_der`: the devid root; `cert_chain_der`: the broker certificate first, then
    /// intermediates; `key`: the broker key (must match the certificate). No tickets, no cache,
    /// a 10 s timeout until set otherwise.
    pub fn new(
        trust_anchor_der: &[u8],
        cert_chain_der: Vec<Vec<u8>>,
        key: Arc<dyn HandshakeSigner>,
    ) -> Result<Self, ConfigError> {
        check_chain(&cert_chain_der)?;
        let leaf_key = certs::own_public_key(&cert_chain_der[0])?;
        check_key_matches(&leaf_key, key.as_ref())?;
        Ok(ServerConfig {
            anchor: certs::Anchor::from_der(trust_anchor_der)?,
            certs: cert_chain_der,
            key,
            tickets: None,
            ticket_lifetime: 0,
            cache: None,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
        })
    }

    /// Issue tickets (lifetime in seconds, capped by the device certificate's notAfter) and
    /// accept resumptions sealed under these keys. A lifetime of 0 issues no tickets but still
    /// accepts them.
    pub fn with_ticket_keys(mut self, keys: TicketKeys, lifetime_secs: u32) -> Self {
        self.tickets = Some(keys);
        self.ticket_lifetime = lifetime_secs;
        self
    }

    /// Cache verified device certificates by leaf fingerprint.
    pub fn with_cert_cache(mut self, cache: Arc<dyn CertCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Runs the device-certificate checks of a ClientHello on a chain obtained another way (the
    /// mutual-TLS path): `certs` leaf first, then intermediates; chain to the trust anchor,
    /// validity at `now`, EKU clientAuth, keyUsage digitalSignature, P-256, CN/SAN binding and
    /// equality with `client_id`. Uses the certificate cache when configured.
    pub fn verify_device_certificate(
        &self,
        client_id: &str,
        certs: &[&[u8]],
        now: UnixTime,
    ) -> Result<DeviceIdentity, Error> {
        if certs.is_empty() || certs.len() > MAX_CERTS {
            return Err(Error::BadCertificate("1 to 4 certificates required"));
        }
        server::check_client_id(client_id)?;
        let v = certs::verify_device(&self.anchor, self.cache.as_deref(), certs, unix_secs(now))?;
        if v.identity().client_id != client_id {
            return Err(Error::ClientIdMismatch);
        }
        Ok(v.identity().clone())
    }

    /// The time allowed from the first message to the last, in seconds.
    pub fn with_timeout(mut self, secs: u64) -> Self {
        self.timeout_secs = secs;
        self
    }
}
