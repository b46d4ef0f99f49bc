//! Adapter from the engine to `devid_core::protocol`'s broker half (DEVID-1), plus the
//! certificate check of the mutual-TLS path.

use std::sync::Arc;
use std::time::Duration;

use devid_core::protocol::{
    EcdsaSigner, ExpectClientFinish, ExpectResumeProof, MemoryCertCache, PendingClientHello,
    PendingResume, PublishAuth, PublishVerifier, ServerConfig, ServerHandshake, ServerStart,
    SessionKeys, TicketKeys,
};
use ring::rand::SystemRandom;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::config::Config;
use crate::engine::{Refusal, ServerSide, Verified};

/// How many verified device certificates are cached (by fingerprint).
const CERT_CACHE: usize = 100_000;

/// The user properties of per-message authentication.
const PROTOCOL_PROPERTIES: &[&str] = &["devid-seq", "devid-mac", "devid-seal"];

/// id-kp-clientAuth.
const EKU_CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];

pub struct Devid1Server {
    config: Arc<ServerConfig>,
    rng: SystemRandom,
    anchor: TrustAnchor<'static>,
    /// Intermediates for the mutual-TLS path: Mosquitto hands over only the leaf, so the
    /// issuing CA is taken from the broker's own chain (devid issues brokers and devices from
    /// the same CA).
    intermediates: Vec<CertificateDer<'static>>,
}

impl Devid1Server {
    pub fn new(c: &Config) -> Result<Self, String> {
        let signer = EcdsaSigner::from_pkcs8_der(&c.broker_key_der)
            .map_err(|e| format!("plugin_opt_broker_key: {e}"))?;
        let mut config = ServerConfig::new(
            &c.trust_anchor_der,
            c.broker_chain_der.clone(),
            Arc::new(signer),
        )
        .map_err(|e| format!("plugin_opt_broker_cert/broker_key: {e}"))?
        .with_cert_cache(Arc::new(MemoryCertCache::new(CERT_CACHE)))
        .with_timeout(c.auth_timeout.as_secs());
        if let Some(text) = &c.ticket_keys {
            let keys =
                TicketKeys::parse(text).map_err(|e| format!("plugin_opt_ticket_key_file: {e}"))?;
            config = config.with_ticket_keys(keys, c.ticket_lifetime);
        }
        let anchor =
            webpki::anchor_from_trusted_cert(&CertificateDer::from(c.trust_anchor_der.as_slice()))
                .map_err(|e| format!("plugin_opt_trust_anchor: {e}"))?
                .to_owned();
        Ok(Devid1Server {
            config: Arc::new(config),
            rng: SystemRandom::new(),
            anchor,
            intermediates: c
                .broker_chain_der
                .iter()
                .skip(1)
                .map(|d| CertificateDer::from(d.clone()))
                .collect(),
        })
    }
}

fn unix(now: u64) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(now))
}

fn refusal(e: devid_core::protocol::Error) -> Refusal {
    Refusal {
        bad_method: e.reason_code() == devid_core::protocol::REASON_BAD_AUTH_METHOD,
        reason: e.to_string(),
    }
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
    ) -> Result<(SessionKeys, Vec<u8>), Refusal> {
        let (session, finish) = match pending {
            Pending::Full(p) => p.handle(data, unix(now), &self.rng),
            Pending::Resume(p) => p.handle(data, unix(now), &self.rng),
        }
        .map_err(refusal)?;
        Ok((session.keys, finish))
    }

    type Verifier = PublishVerifier;

    fn verifier(&self, keys: &SessionKeys) -> PublishVerifier {
        PublishVerifier::new(keys)
    }

    fn verify_message(
        &self,
        verifier: &mut PublishVerifier,
        user_properties: &[(String, String)],
        topic: &str,
        payload: &mut Vec<u8>,
    ) -> Result<bool, String> {
        // Only the protocol's own properties are a claim to check; any other `devid-*` one
        // (e.g. a forged `devid-verified`) is simply stripped by the caller.
        let props = user_properties
            .iter()
            .filter(|(k, _)| PROTOCOL_PROPERTIES.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v.as_str()));
        match PublishAuth::from_properties(props).map_err(|e| e.to_string())? {
            None => Ok(false),
            Some(auth) => verifier
                .verify(&auth, topic, payload)
                .map(|()| true)
                .map_err(|e| e.to_string()),
        }
    }

    fn verify_tls_client(
        &self,
        leaf_der: &[u8],
        client_id: &str,
        now: u64,
    ) -> Result<Verified, Refusal> {
        verify_tls_client(&self.anchor, &self.intermediates, leaf_der, client_id, now).map_err(
            |reason| Refusal {
                bad_method: false,
                reason,
            },
        )
    }
}

/// The mutual-TLS device check: chain to the devid root (P-256/SHA-256 only), valid now,
/// EKU clientAuth required, keyUsage digitalSignature, CN and SAN URI `urn:devid:<ClientID>`
/// both equal to the CONNECT's ClientID.
pub fn verify_tls_client(
    anchor: &TrustAnchor<'static>,
    intermediates: &[CertificateDer<'static>],
    leaf_der: &[u8],
    client_id: &str,
    now: u64,
) -> Result<Verified, String> {
    let der = CertificateDer::from(leaf_der);
    let ee = webpki::EndEntityCert::try_from(&der).map_err(|e| format!("certificate: {e}"))?;
    ee.verify_for_usage(
        &[webpki::ring::ECDSA_P256_SHA256],
        std::slice::from_ref(anchor),
        intermediates,
        unix(now),
        // webpki applies the EKU rule to intermediates as well, and devid's CAs carry no EKU:
        // require clientAuth where present here and insist on it at the leaf below.
        webpki::KeyUsage::required_if_present(EKU_CLIENT_AUTH),
        None,
        None,
    )
    .map_err(|e| format!("certificate chain: {e}"))?;
    let cert = match X509Certificate::from_der(leaf_der) {
        Ok((&[], c)) => c,
        _ => return Err("unparsable certificate".into()),
    };
    let ku = cert
        .key_usage()
        .map_err(|_| "bad keyUsage".to_string())?
        .ok_or("no keyUsage")?;
    if !ku.value.digital_signature() {
        return Err("keyUsage lacks digitalSignature".into());
    }
    let eku = cert
        .extended_key_usage()
        .map_err(|_| "bad extendedKeyUsage".to_string())?
        .ok_or("no extendedKeyUsage (clientAuth required)")?;
    if !eku.value.client_auth {
        return Err("extendedKeyUsage lacks clientAuth".into());
    }
    let mut cns = cert.subject().iter_common_name();
    let cn = cns
        .next()
        .and_then(|a| a.as_str().ok())
        .ok_or("certificate has no CN")?
        .to_string();
    if cns.next().is_some() {
        return Err("certificate has several CNs".into());
    }
    let urns: Vec<&str> = cert
        .subject_alternative_name()
        .map_err(|_| "bad subjectAltName".to_string())?
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => u.strip_prefix(devid_core::protocol::DEVID_URN_PREFIX),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if urns.len() != 1 || urns[0] != cn {
        return Err("certificate CN and SAN URI do not agree".into());
    }
    if cn != client_id {
        return Err("ClientID differs from the certificate".into());
    }
    let not_after = u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0);
    let serial = hex::encode(cert.tbs_certificate.raw_serial());
    Ok(Verified {
        client_id: cn,
        serial: crate::state::normalize_serial(&serial),
        fingerprint: hex::encode(ring::digest::digest(&ring::digest::SHA256, leaf_der)),
        not_after,
        resumed: false,
    })
}
