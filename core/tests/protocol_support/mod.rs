//! Shared helpers for the protocol tests: an rcgen PKI with the devid profiles, configs, and an
//! in-memory driver of both halves with a tamper hook.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use devid_core::protocol::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::SystemRandom;
use rustls_pki_types::UnixTime;
use time::OffsetDateTime;

/// The time the tests run at: 2027-01-15T08:00:00Z.
pub const NOW: u64 = 1_800_000_000;
pub const BROKER_NAME: &str = "mqtt.example.com";
pub const CLIENT_ID: &str = "DEV0123456789ABCDEFGH";

pub fn at(secs: u64) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(secs))
}

pub fn now() -> UnixTime {
    at(NOW)
}

fn ts(secs: u64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(secs as i64).unwrap()
}

pub fn p256() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
}

/// A root CA and an intermediate CA.
pub struct Pki {
    pub root: CertifiedIssuer<'static, KeyPair>,
    pub inter: CertifiedIssuer<'static, KeyPair>,
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = ts(NOW - 86_400 * 365);
    p.not_after = ts(NOW + 86_400 * 3650);
    p
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let root =
            CertifiedIssuer::self_signed(ca_params(&format!("{name} root")), p256()).unwrap();
        let inter =
            CertifiedIssuer::signed_by(ca_params(&format!("{name} issuing")), p256(), &root)
                .unwrap();
        Pki { root, inter }
    }

    pub fn root_der(&self) -> Vec<u8> {
        self.root.der().to_vec()
    }

    /// Issues a leaf under the intermediate; returns (chain leaf+intermediate, key PKCS#8 DER).
    pub fn issue(&self, leaf: &Leaf) -> (Vec<Vec<u8>>, Vec<u8>) {
        let key = match &leaf.key {
            Some(k) => KeyPair::try_from(k.as_slice()).unwrap(),
            None => p256(),
        };
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = DistinguishedName::new();
        if let Some(cn) = &leaf.cn {
            p.distinguished_name.push(DnType::CommonName, cn.as_str());
        }
        p.subject_alt_names = leaf
            .uris
            .iter()
            .map(|u| SanType::URI(u.as_str().try_into().unwrap()))
            .chain(
                leaf.dns
                    .iter()
                    .map(|d| SanType::DnsName(d.as_str().try_into().unwrap())),
            )
            .collect();
        p.key_usages = leaf.key_usages.clone();
        p.extended_key_usages = leaf.ekus.clone();
        p.not_before = ts(leaf.not_before);
        p.not_after = ts(leaf.not_after);
        p.serial_number = Some(SerialNumber::from_slice(&leaf.serial));
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&key, &self.inter).unwrap();
        (
            vec![cert.der().to_vec(), self.inter.der().to_vec()],
            key.serialize_der(),
        )
    }
}

/// What a leaf certificate should contain.
#[derive(Clone)]
pub struct Leaf {
    pub cn: Option<String>,
    pub uris: Vec<String>,
    pub dns: Vec<String>,
    pub key_usages: Vec<KeyUsagePurpose>,
    pub ekus: Vec<ExtendedKeyUsagePurpose>,
    pub not_before: u64,
    pub not_after: u64,
    pub serial: Vec<u8>,
    /// PKCS#8 of a fixed key, else a fresh one.
    pub key: Option<Vec<u8>>,
}

impl Leaf {
    /// The devid device profile for `id`.
    pub fn device(id: &str) -> Leaf {
        Leaf {
            cn: Some(id.to_string()),
            uris: vec![format!("urn:devid:{id}")],
            dns: vec![],
            key_usages: vec![KeyUsagePurpose::DigitalSignature],
            ekus: vec![ExtendedKeyUsagePurpose::ClientAuth],
            not_before: NOW - 86_400,
            not_after: NOW + 86_400 * 365,
            serial: vec![0x00, 0x8a, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06],
            key: None,
        }
    }

    /// The devid broker profile for `name`.
    pub fn broker(name: &str) -> Leaf {
        Leaf {
            cn: Some(name.to_string()),
            uris: vec![],
            dns: vec![name.to_string()],
            key_usages: vec![KeyUsagePurpose::DigitalSignature],
            ekus: vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            not_before: NOW - 86_400,
            not_after: NOW + 86_400 * 365,
            serial: vec![0x42],
            key: None,
        }
    }
}

pub fn signer(pkcs8: &[u8]) -> Arc<EcdsaSigner> {
    Arc::new(EcdsaSigner::from_pkcs8_der(pkcs8, &SystemRandom::new()).unwrap())
}

pub fn client_config(pki: &Pki, root: &[u8], leaf: &Leaf, name: Option<&str>) -> ClientConfig {
    let (chain, key) = pki.issue(leaf);
    let c = ClientConfig::new(root, chain, signer(&key)).unwrap();
    match name {
        Some(n) => c.with_broker_name(n).unwrap(),
        None => c,
    }
}

pub fn ticket_keys() -> TicketKeys {
    TicketKeys::new(TicketKey::new(7, &[0x5a; 32]))
}

pub fn server_config(pki: &Pki, root: &[u8], leaf: &Leaf) -> ServerConfig {
    let (chain, key) = pki.issue(leaf);
    ServerConfig::new(root, chain, signer(&key))
        .unwrap()
        .with_ticket_keys(ticket_keys(), DEFAULT_TICKET_LIFETIME)
}

/// A standard setup: one PKI, a device and a broker that should get along.
pub struct Env {
    pub pki: Pki,
    pub client: Arc<ClientConfig>,
    pub server: Arc<ServerConfig>,
}

impl Env {
    pub fn new() -> Env {
        let pki = Pki::new("devid");
        let root = pki.root_der();
        let client = Arc::new(client_config(
            &pki,
            &root,
            &Leaf::device(CLIENT_ID),
            Some(BROKER_NAME),
        ));
        let server = Arc::new(server_config(&pki, &root, &Leaf::broker(BROKER_NAME)));
        Env {
            pki,
            client,
            server,
        }
    }

    /// A device config from the same PKI with a custom leaf.
    pub fn device(&self, leaf: &Leaf) -> Arc<ClientConfig> {
        Arc::new(client_config(
            &self.pki,
            &self.pki.root_der(),
            leaf,
            Some(BROKER_NAME),
        ))
    }

    /// A broker config from the same PKI with a custom leaf.
    pub fn broker(&self, leaf: &Leaf) -> Arc<ServerConfig> {
        Arc::new(server_config(&self.pki, &self.pki.root_der(), leaf))
    }
}

impl Default for Env {
    fn default() -> Self {
        Env::new()
    }
}

/// The four messages of a full handshake, for the tamper hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    ClientHello,
    ServerHello,
    ClientFinish,
    ServerFinish,
}

pub const STEPS: [Step; 4] = [
    Step::ClientHello,
    Step::ServerHello,
    Step::ClientFinish,
    Step::ServerFinish,
];

/// Which side refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Broker(Error),
    Device(Error),
}

impl Refusal {
    pub fn error(&self) -> &Error {
        match self {
            Refusal::Broker(e) | Refusal::Device(e) => e,
        }
    }
}

/// Options of one in-memory run.
pub struct Run<'a> {
    pub client: &'a Arc<ClientConfig>,
    pub server: &'a Arc<ServerConfig>,
    pub client_id: String,
    pub device_now: UnixTime,
    pub broker_now: UnixTime,
    pub finish_now: UnixTime,
}

impl<'a> Run<'a> {
    pub fn new(env: &'a Env) -> Run<'a> {
        Run::with(&env.client, &env.server)
    }

    pub fn with(client: &'a Arc<ClientConfig>, server: &'a Arc<ServerConfig>) -> Run<'a> {
        Run {
            client,
            server,
            client_id: client.client_id().to_string(),
            device_now: now(),
            broker_now: now(),
            finish_now: now(),
        }
    }

    pub fn go(&self) -> Result<(ClientSession, ServerSession), Refusal> {
        self.tampered(&mut |_, _| {})
    }

    /// Runs both halves; `tamper` may alter each message in flight.
    pub fn tampered(
        &self,
        tamper: &mut dyn FnMut(Step, &mut Vec<u8>),
    ) -> Result<(ClientSession, ServerSession), Refusal> {
        let rng = SystemRandom::new();
        let (dev, mut ch) = ClientHandshake::start(self.client, &rng).map_err(Refusal::Device)?;
        tamper(Step::ClientHello, &mut ch);
        let pending =
            match ServerHandshake::start(self.server, &self.client_id, &ch, self.broker_now)
                .map_err(Refusal::Broker)?
            {
                ServerStart::Full(p) => p,
                ServerStart::Resume(_) => panic!("a ClientHello started a resumption"),
            };
        assert_eq!(pending.identity().client_id, self.client_id);
        let (brk, mut sh) = pending.accept(&rng).map_err(Refusal::Broker)?;
        tamper(Step::ServerHello, &mut sh);
        let (dev, mut cf) = dev
            .handle(&sh, self.device_now, &rng)
            .map_err(Refusal::Device)?;
        tamper(Step::ClientFinish, &mut cf);
        let (server_session, mut sf) = brk
            .handle(&cf, self.finish_now, &rng)
            .map_err(Refusal::Broker)?;
        tamper(Step::ServerFinish, &mut sf);
        let client_session = dev.handle(&sf, self.device_now).map_err(Refusal::Device)?;
        Ok((client_session, server_session))
    }
}

/// Runs a resumption from `ticket`; `tamper` sees ResumeHello, ResumeChallenge, ResumeProof,
/// ResumeFinish as steps 0..4.
pub fn resume(
    server: &Arc<ServerConfig>,
    client_id: &str,
    ticket: &ResumptionTicket,
    broker_now: UnixTime,
    tamper: &mut dyn FnMut(usize, &mut Vec<u8>),
) -> Result<(ClientSession, ServerSession), Refusal> {
    let rng = SystemRandom::new();
    let (dev, mut rh) = ClientResume::start(ticket, &rng).map_err(Refusal::Device)?;
    tamper(0, &mut rh);
    let pending = match ServerHandshake::start(server, client_id, &rh, broker_now)
        .map_err(Refusal::Broker)?
    {
        ServerStart::Resume(p) => p,
        ServerStart::Full(_) => panic!("a ResumeHello started a full handshake"),
    };
    let (brk, mut chal) = pending.accept(&rng).map_err(Refusal::Broker)?;
    tamper(1, &mut chal);
    let (dev, mut proof) = dev.handle(&chal).map_err(Refusal::Device)?;
    tamper(2, &mut proof);
    let (ss, mut fin) = brk
        .handle(&proof, broker_now, &rng)
        .map_err(Refusal::Broker)?;
    tamper(3, &mut fin);
    let cs = dev.handle(&fin, broker_now).map_err(Refusal::Device)?;
    Ok((cs, ss))
}
