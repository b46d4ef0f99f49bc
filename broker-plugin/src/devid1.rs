//! Adapter from the engine to `devid_core::protocol`'s broker half (DEVID-1), plus the
//! certificate check of the mutual-TLS path.

#![deny(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use devid_core::protocol::{
    EcdsaSigner, ExpectClientFinish, ExpectResumeProof, MemoryCertCache, PendingClientHello,
    PendingResume, PkOps, PublishAuth, PublishVerifier, ServerConfig, ServerHandshake, ServerStart,
    SessionKeys, TicketKeys,
};
use ring::rand::SystemRandom;
use rustls_pki_types::UnixTime;

use crate::ca_set::CaSet;
use crate::config::{Config, ConfigError};
use crate::engine::{MessageCheck, MessageRefusal, Refusal, ServerSide, Verified};

/// How many verified device certificates are cached (by fingerprint).
const CERT_CACHE: usize = 100_000;

/// The user properties of per-message authentication.
const PROTOCOL_PROPERTIES: &[&str] = &["devid-seq", "devid-mac", "devid-seal"];

pub struct Devid1Server {
    config: Arc<ServerConfig>,
    rng: SystemRandom,
    /// Intermediates for the mutual-TLS path (Mosquitto hands over only the leaf): the
    /// broker's own chain until the service's CA set arrives (see `crate::ca_set`).
    cas: CaSet,
}

impl Devid1Server {
    pub fn new(c: &Config) -> Result<Self, ConfigError> {
        let rng = SystemRandom::new();
        let signer = EcdsaSigner::from_pkcs8_der(&c.broker_key_der, &rng)
            .map_err(|e| ConfigError(format!("plugin_opt_broker_key: {e}")))?;
        let mut config = ServerConfig::new(
            &c.trust_anchor_der,
            c.broker_chain_der.clone(),
            Arc::new(signer),
        )
        .map_err(|e| ConfigError(format!("plugin_opt_broker_cert/broker_key: {e}")))?
        .with_cert_cache(Arc::new(MemoryCertCache::new(CERT_CACHE)))
        .with_timeout(c.auth_timeout.as_secs());
        if let Some(text) = &c.ticket_keys {
            let keys = TicketKeys::parse(text)
                .map_err(|e| ConfigError(format!("plugin_opt_ticket_key_file: {e}")))?;
            config = config.with_ticket_keys(keys, c.ticket_lifetime);
        }
        Ok(Devid1Server {
            config: Arc::new(config),
            rng,
            cas: CaSet::new(
                c.broker_chain_der.iter().skip(1).cloned(),
                &c.trust_anchor_der,
            ),
        })
    }
}

fn unix(now: u64) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(now))
}

fn refusal(e: devid_core::protocol::Error) -> Refusal {
    Refusal::Protocol(e)
}

/// A first message read and checked: a full handshake or a resumption.
pub enum Hello {
    Full(PendingClientHello),
    Resume(PendingResume),
}

/// Waiting for the ClientFinish or the ResumeProof.
pub enum Pending {
    Full(ExpectClientFinish),
    Resume(ExpectResumeProof),
}

impl ServerSide for Devid1Server {
    type Hello = Hello;
    type Pending = Pending;
    type Keys = SessionKeys;

    fn is_full_hello(&self, data: &[u8]) -> bool {
        ServerHandshake::is_full_hello(data)
    }

    fn hello(&self, data: &[u8], client_id: &str, now: u64) -> Result<(Verified, Hello), Refusal> {
        // Without plugin_opt_ticket_key_file core refuses a ResumeHello (no ticket keys).
        match ServerHandshake::start(&self.config, client_id, data, unix(now)).map_err(refusal)? {
            ServerStart::Full(pending) => {
                let id = pending.identity();
                let v = Verified {
                    client_id: id.client_id.clone(),
                    serial: id.serial_hex.clone(),
                    fingerprint: id.fingerprint_hex(),
                    not_after: id.not_after,
                    resumed: false,
                    ldevid: devid_core::ldevid::is_ldevid(&id.leaf_der),
                    issuer: id.issuer_id(),
                    verified_at: now,
                };
                Ok((v, Hello::Full(pending)))
            }
            ServerStart::Resume(pending) => {
                let t = pending.ticket();
                let v = Verified {
                    client_id: t.client_id.clone(),
                    serial: t.cert_serial.clone(),
                    // The ticket does not carry the fingerprint; the serial identifies the
                    // certificate for revocation.
                    fingerprint: String::new(),
                    not_after: t.cert_not_after,
                    resumed: true,
                    // The ticket does not say; the engine remembers it from the full exchange.
                    ldevid: None,
                    issuer: None,
                    verified_at: t.issued,
                };
                Ok((v, Hello::Resume(pending)))
            }
        }
    }

    fn accept(&self, hello: Hello, _now: u64) -> Result<(Pending, Vec<u8>), Refusal> {
        match hello {
            Hello::Full(h) => h
                .accept(&self.rng)
                .map(|(p, out)| (Pending::Full(p), out))
                .map_err(refusal),
            Hello::Resume(h) => h
                .accept(&self.rng)
                .map(|(p, out)| (Pending::Resume(p), out))
                .map_err(refusal),
        }
    }

    fn finish(
        &self,
        pending: Pending,
        data: &[u8],
        now: u64,
    ) -> Result<(SessionKeys, Vec<u8>, PkOps), Refusal> {
        let (session, finish) = match pending {
            Pending::Full(p) => p.handle(data, unix(now), &self.rng),
            Pending::Resume(p) => p.handle(data, unix(now), &self.rng),
        }
        .map_err(refusal)?;
        Ok((session.keys, finish, session.pk_ops))
    }

    type Verifier = PublishVerifier;

    fn verifier(&self, keys: &SessionKeys) -> PublishVerifier {
        PublishVerifier::new(keys)
    }

    fn verify_message(
        &self,
        verifier: &mut PublishVerifier,
        devid_properties: &[(&str, &str)],
        topic: &str,
        payload: &[u8],
    ) -> Result<MessageCheck, MessageRefusal> {
        // Only the protocol's own properties are a claim to check; any other `devid-*` one
        // (e.g. a forged `devid-verified`) is simply stripped by the caller.
        let props = devid_properties
            .iter()
            .filter(|(k, _)| PROTOCOL_PROPERTIES.contains(k))
            .copied();
        match PublishAuth::from_properties(props).map_err(MessageRefusal::Invalid)? {
            None => Ok(MessageCheck::Unclaimed),
            Some(auth) => verifier
                .check(&auth, topic, payload)
                .map(|plaintext| MessageCheck::Verified { plaintext })
                .map_err(MessageRefusal::Invalid),
        }
    }

    fn verify_tls_client(
        &self,
        leaf_der: &[u8],
        client_id: &str,
        now: u64,
    ) -> Result<Verified, Refusal> {
        // Mosquitto hands over only the leaf: its issuing CA comes from the CA set.
        let certs = self.cas.path(leaf_der);
        let id = self
            .config
            .verify_device_certificate(client_id, &certs, unix(now))
            .map_err(refusal)?;
        Ok(Verified {
            fingerprint: id.fingerprint_hex(),
            ldevid: devid_core::ldevid::is_ldevid(&id.leaf_der),
            issuer: id.issuer_id(),
            client_id: id.client_id,
            serial: id.serial_hex,
            not_after: id.not_after,
            resumed: false,
            verified_at: now,
        })
    }

    fn use_ca_set(&mut self, set: CaSet) {
        self.cas = set;
    }
}
