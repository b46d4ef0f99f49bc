//! The broker side of DEVID-1: one state per awaited message, with a pause after the first
//! message so the caller can check revocation and allow-lists before any public-key operation.

use std::sync::Arc;

use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, ECDH_P256};
use ring::rand::SecureRandom;
use rustls_pki_types::UnixTime;

use super::certs::{verify_device, DeviceIdentity, VerifiedDeviceCert};
use super::keys::{
    extract, sha256, signed_message, verify_sig, MacKey, Secret, SessionKeys, LABEL_BROKER_MAC,
    LABEL_BROKER_SIG, LABEL_DEVICE_MAC, LABEL_DEVICE_SIG, LABEL_RESUME_BROKER_MAC,
    LABEL_RESUME_DEVICE_MAC,
};
use super::messages::{
    encode_resume_challenge, read_resume_proof, ClientFinish, ClientHello, Finish, ResumeHello,
    ServerHello, CLIENT_HELLO, RESUME_FINISH, RESUME_HELLO, SERVER_FINISH,
};
use super::pk::{record, Meter, Op, PkOps};
use super::ticket::TicketContents;
use super::{random_nonce, unix_secs, Error, ServerConfig};

/// Proof that the device's certificate was verified and bound to the CONNECT's ClientID.
struct DeviceCertVerified(());

/// What a completed broker-side handshake or resumption yields.
#[derive(Debug)]
pub struct ServerSession {
    /// The authenticated ClientID.
    pub client_id: String,
    /// The device certificate's serial (lowercase hex, as in [`DeviceIdentity::serial_hex`]).
    pub cert_serial: String,
    /// The session keys.
    pub keys: SessionKeys,
    /// True when this session came from a resumption.
    pub resumed: bool,
    /// The public-key operations this side did for this session (none for a resumption).
    pub pk_ops: PkOps,
}

/// The first message of an exchange, read and checked; the caller decides whether to go on.
pub enum ServerStart {
    /// A ClientHello: full handshake.
    Full(PendingClientHello),
    /// A ResumeHello: resumption.
    Resume(PendingResume),
}

/// Entry points of the broker side.
pub struct ServerHandshake;

impl ServerHandshake {
    /// True when a first message would cost the broker public-key work (a ClientHello: the
    /// certificate path, then an ECDH and a signature), false for a ResumeHello or anything
    /// else. Only the message type is looked at, so a caller can rate-limit before `start`.
    pub fn is_full_hello(auth_data: &[u8]) -> bool {
        auth_data.first() == Some(&CLIENT_HELLO)
    }

    /// Reads the first message (CONNECT or AUTH 0x19 Authentication Data), whichever kind it is.
    /// `client_id` is the connection's ClientID.
    pub fn start(
        config: &Arc<ServerConfig>,
        client_id: &str,
        auth_data: &[u8],
        now: UnixTime,
    ) -> Result<ServerStart, Error> {
        match auth_data.first() {
            Some(&CLIENT_HELLO) => {
                Self::read_client_hello(config, client_id, auth_data, now).map(ServerStart::Full)
            }
            Some(&RESUME_HELLO) => {
                Self::read_resume_hello(config, client_id, auth_data, now).map(ServerStart::Resume)
            }
            Some(&got) => Err(Error::UnexpectedMessage {
                expected: "ClientHello or ResumeHello",
                got,
            }),
            None => Err(Error::Decode(super::DecodeError::Truncated)),
        }
    }

    /// Reads a ClientHello and verifies the device certificate at `now` (chain, EKU
    /// clientAuth, keyUsage, CN/SAN binding, equality with `client_id`), through the config's
    /// certificate cache when it has one. No ECDH or signature yet.
    pub fn read_client_hello(
        config: &Arc<ServerConfig>,
        client_id: &str,
        client_hello: &[u8],
        now: UnixTime,
    ) -> Result<PendingClientHello, Error> {
        let ch = ClientHello::read(client_hello)?;
        check_client_id(client_id)?;
        let now = unix_secs(now);
        let meter = Meter::start();
        let device = verify_device(&config.anchor, config.cache.as_deref(), &ch.certs, now)?;
        let pk = meter.finish();
        if device.identity().client_id != client_id {
            return Err(Error::ClientIdMismatch);
        }
        Ok(PendingClientHello {
            config: config.clone(),
            started: now,
            nonce_c: *ch.nonce,
            share_c: *ch.share,
            client_hello: client_hello.to_vec(),
            device,
            pk,
            _verified: DeviceCertVerified(()),
        })
    }

    /// Reads a ResumeHello: opens the ticket with the config's ticket keys, checks its expiry
    /// at `now` and that it belongs to `client_id`. No MAC checked yet.
    pub fn read_resume_hello(
        config: &Arc<ServerConfig>,
        client_id: &str,
        resume_hello: &[u8],
        now: UnixTime,
    ) -> Result<PendingResume, Error> {
        let meter = Meter::start();
        let rh = ResumeHello::read(resume_hello)?;
        check_client_id(client_id)?;
        let keys = config.tickets.as_ref().ok_or(Error::BadTicket)?;
        let contents = keys.open(rh.ticket)?;
        let now = unix_secs(now);
        if now < contents.issued || now >= contents.expires {
            return Err(Error::TicketExpired);
        }
        if contents.client_id != client_id {
            return Err(Error::ClientIdMismatch);
        }
        Ok(PendingResume {
            config: config.clone(),
            started: now,
            nonce_c: *rh.nonce,
            resume_hello: resume_hello.to_vec(),
            contents,
            pk: meter.finish(),
        })
    }
}

pub(crate) fn check_client_id(client_id: &str) -> Result<(), Error> {
    if client_id.is_empty() {
        return Err(Error::EmptyClientId);
    }
    crate::clientid::validate(client_id).map_err(|_| Error::BadClientId)
}

fn check_timeout(config: &ServerConfig, started: u64, now: UnixTime) -> Result<(), Error> {
    if unix_secs(now).saturating_sub(started) > config.timeout_secs {
        return Err(Error::Timeout);
    }
    Ok(())
}

/// A ClientHello whose certificate verified; the caller checks revocation, suspension and the
/// allow-list on [`identity`](Self::identity), then calls [`accept`](Self::accept).
pub struct PendingClientHello {
    config: Arc<ServerConfig>,
    started: u64,
    nonce_c: [u8; 32],
    share_c: [u8; 65],
    client_hello: Vec<u8>,
    device: Arc<VerifiedDeviceCert>,
    /// Public-key operations so far (chain checks; none on a cache hit).
    pk: PkOps,
    _verified: DeviceCertVerified,
}

impl PendingClientHello {
    /// The verified device identity.
    pub fn identity(&self) -> &DeviceIdentity {
        self.device.identity()
    }

    /// Does the ECDH and signs: returns the ServerHello (AUTH 0x18 data) and the state
    /// awaiting the ClientFinish.
    pub fn accept(self, rng: &dyn SecureRandom) -> Result<(ExpectClientFinish, Vec<u8>), Error> {
        let meter = Meter::start();
        let nonce_s = random_nonce(rng)?;
        record(Op::Keygen);
        let eph = EphemeralPrivateKey::generate(&ECDH_P256, rng)
            .map_err(|_| Error::Internal("ephemeral key generation failed"))?;
        let share_s = eph
            .compute_public_key()
            .map_err(|_| Error::Internal("ephemeral public key failed"))?;
        record(Op::Agree);
        let z = agreement::agree_ephemeral(
            eph,
            &UnparsedPublicKey::new(&ECDH_P256, &self.share_c),
            |z| {
                let mut out = [0u8; 32];
                out.copy_from_slice(z);
                out
            },
        )
        .map_err(|_| Error::BadKeyShare)?;
        let secret = extract(&self.nonce_c, &nonce_s, &z);

        let mut server_hello =
            ServerHello::encode_signed_part(&nonce_s, share_s.as_ref(), &self.config.certs)?;
        let th1 = sha256(&[&self.client_hello, &server_hello]);
        record(Op::Sign);
        let sig_s = self
            .config
            .key
            .sign(&signed_message(LABEL_BROKER_SIG, &th1), rng)?;
        let k_bmac = secret.mac_key(LABEL_BROKER_MAC, &th1);
        let mac_s = k_bmac.sign(&[&th1, &sig_s]);
        server_hello.extend_from_slice(&sig_s);
        server_hello.extend_from_slice(&mac_s);
        let k_dmac = secret.mac_key(LABEL_DEVICE_MAC, &th1);

        let mut transcript = self.client_hello;
        transcript.extend_from_slice(&server_hello);
        Ok((
            ExpectClientFinish {
                config: self.config,
                started: self.started,
                secret,
                k_bmac,
                k_dmac,
                transcript,
                device: self.device,
                pk: self.pk + meter.finish(),
                _verified: self._verified,
            },
            server_hello,
        ))
    }
}

/// Awaits the ClientFinish (AUTH 0x18).
pub struct ExpectClientFinish {
    config: Arc<ServerConfig>,
    started: u64,
    secret: Secret,
    k_bmac: MacKey,
    k_dmac: MacKey,
    /// ClientHello || ServerHello.
    transcript: Vec<u8>,
    device: Arc<VerifiedDeviceCert>,
    pk: PkOps,
    _verified: DeviceCertVerified,
}

impl ExpectClientFinish {
    /// The device identity verified at the start of this handshake.
    pub fn identity(&self) -> &DeviceIdentity {
        self.device.identity()
    }

    /// Verifies sig_c and mac_c; returns the session and the ServerFinish (CONNACK 0x00 data,
    /// or AUTH 0x00 data after a re-authentication), with a ticket when the config has ticket
    /// keys.
    pub fn handle(
        self,
        client_finish: &[u8],
        now: UnixTime,
        rng: &dyn SecureRandom,
    ) -> Result<(ServerSession, Vec<u8>), Error> {
        check_timeout(&self.config, self.started, now)?;
        let meter = Meter::start();
        let cf = ClientFinish::read(client_finish)?;
        let th2 = sha256(&[&self.transcript]);
        verify_sig(self.device.public_key(), LABEL_DEVICE_SIG, &th2, cf.sig)?;
        self.k_dmac.verify(&[&th2, cf.sig], cf.mac)?;
        let th3 = sha256(&[&self.transcript, client_finish]);
        let identity = self.device.identity();
        let keys = self.secret.session_keys(&th3);
        let finish = server_finish(
            &self.config,
            &self.k_bmac,
            &th3,
            SERVER_FINISH,
            &identity.client_id,
            &identity.serial_hex,
            identity.not_after,
            &keys,
            unix_secs(now),
            rng,
        )?;
        Ok((
            ServerSession {
                client_id: identity.client_id.clone(),
                cert_serial: identity.serial_hex.clone(),
                keys,
                resumed: false,
                pk_ops: self.pk + meter.finish(),
            },
            finish,
        ))
    }
}

/// Builds ServerFinish or ResumeFinish: a sealed ticket when configured, then mac_f.
#[allow(clippy::too_many_arguments)] // one private helper shared by the two finishing states
fn server_finish(
    config: &ServerConfig,
    k_bmac: &MacKey,
    th3: &[u8; 32],
    ty: u8,
    client_id: &str,
    cert_serial: &str,
    cert_not_after: u64,
    keys: &SessionKeys,
    now: u64,
    rng: &dyn SecureRandom,
) -> Result<Vec<u8>, Error> {
    let expires = now
        .saturating_add(u64::from(config.ticket_lifetime))
        .min(cert_not_after);
    let (lifetime, ticket) = match &config.tickets {
        Some(keys_) if expires > now => {
            let contents = TicketContents {
                client_id: client_id.to_string(),
                cert_serial: cert_serial.to_string(),
                resumption_secret: keys.resumption_secret,
                issued: now,
                expires,
                cert_not_after,
            };
            // expires - now <= ticket_lifetime, a u32.
            let lifetime = u32::try_from(expires - now).unwrap_or(u32::MAX);
            (lifetime, keys_.seal(&contents, rng)?)
        }
        _ => (0, Vec::new()),
    };
    let mut out = Finish::encode_maced_part(ty, lifetime, &ticket)?;
    let mac_f = k_bmac.sign(&[th3, &out]);
    out.extend_from_slice(&mac_f);
    Ok(out)
}

/// A ResumeHello whose ticket opened and is current; the caller checks revocation of
/// [`ticket`](Self::ticket)'s ClientID and serial and the allow-list, then calls
/// [`accept`](Self::accept).
pub struct PendingResume {
    config: Arc<ServerConfig>,
    started: u64,
    nonce_c: [u8; 32],
    resume_hello: Vec<u8>,
    contents: TicketContents,
    pk: PkOps,
}

impl PendingResume {
    /// What the ticket says (ClientID, certificate serial, issue and expiry times).
    pub fn ticket(&self) -> &TicketContents {
        &self.contents
    }

    /// Returns the ResumeChallenge (AUTH 0x18 data) and the state awaiting the ResumeProof.
    pub fn accept(self, rng: &dyn SecureRandom) -> Result<(ExpectResumeProof, Vec<u8>), Error> {
        let meter = Meter::start();
        let nonce_s = random_nonce(rng)?;
        let challenge = encode_resume_challenge(&nonce_s);
        let secret_r = extract(&self.nonce_c, &nonce_s, &self.contents.resumption_secret);
        let thr = sha256(&[&self.resume_hello, &challenge]);
        let mut transcript = self.resume_hello;
        transcript.extend_from_slice(&challenge);
        Ok((
            ExpectResumeProof {
                config: self.config,
                started: self.started,
                k_dmac: secret_r.mac_key(LABEL_RESUME_DEVICE_MAC, &thr),
                k_bmac: secret_r.mac_key(LABEL_RESUME_BROKER_MAC, &thr),
                secret_r,
                thr,
                transcript,
                contents: self.contents,
                pk: self.pk + meter.finish(),
            },
            challenge,
        ))
    }
}

/// Awaits the ResumeProof (AUTH 0x18).
pub struct ExpectResumeProof {
    config: Arc<ServerConfig>,
    started: u64,
    secret_r: Secret,
    k_dmac: MacKey,
    k_bmac: MacKey,
    thr: [u8; 32],
    /// ResumeHello || ResumeChallenge.
    transcript: Vec<u8>,
    contents: TicketContents,
    pk: PkOps,
}

impl ExpectResumeProof {
    /// What the ticket says.
    pub fn ticket(&self) -> &TicketContents {
        &self.contents
    }

    /// Verifies mac_c; returns the session and the ResumeFinish (CONNACK 0x00 or AUTH 0x00
    /// data) with a new ticket.
    pub fn handle(
        self,
        resume_proof: &[u8],
        now: UnixTime,
        rng: &dyn SecureRandom,
    ) -> Result<(ServerSession, Vec<u8>), Error> {
        check_timeout(&self.config, self.started, now)?;
        let meter = Meter::start();
        let mac_c = read_resume_proof(resume_proof)?;
        self.k_dmac.verify(&[&self.thr], mac_c)?;
        let th3 = sha256(&[&self.transcript, resume_proof]);
        let keys = self.secret_r.session_keys(&th3);
        let c = &self.contents;
        let finish = server_finish(
            &self.config,
            &self.k_bmac,
            &th3,
            RESUME_FINISH,
            &c.client_id,
            &c.cert_serial,
            c.cert_not_after,
            &keys,
            unix_secs(now),
            rng,
        )?;
        Ok((
            ServerSession {
                client_id: c.client_id.clone(),
                cert_serial: c.cert_serial.clone(),
                keys,
                resumed: true,
                pk_ops: self.pk + meter.finish(),
            },
            finish,
        ))
    }
}
