//! The device side of DEVID-1: one state per awaited message.

use std::sync::Arc;

use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, ECDH_P256};
use ring::rand::SecureRandom;
use rustls_pki_types::UnixTime;

use super::certs::verify_broker_chain;
use super::keys::{
    extract, sha256, signed_message, verify_sig, Secret, SessionKeys, LABEL_BROKER_MAC,
    LABEL_BROKER_SIG, LABEL_DEVICE_MAC, LABEL_DEVICE_SIG, LABEL_RESUME_BROKER_MAC,
    LABEL_RESUME_DEVICE_MAC,
};
use super::messages::{
    encode_resume_proof, read_resume_challenge, ClientFinish, ClientHello, Finish, ResumeHello,
    ServerHello, RESUME_FINISH, SERVER_FINISH,
};
use super::pk::{record, Meter, Op, PkOps};
use super::ticket::ResumptionTicket;
use super::{random_nonce, unix_secs, ClientConfig, Error};

/// Proof, carried into the next state, that the broker chain, sig_s and mac_s verified.
struct ServerHelloVerified(());

/// What a completed device-side handshake or resumption yields.
#[derive(Debug)]
pub struct ClientSession {
    /// The session keys.
    pub keys: SessionKeys,
    /// The resumption ticket the broker issued, if any: store it (mode 0600) for the next
    /// connection.
    pub ticket: Option<ResumptionTicket>,
    /// True when this session came from a resumption.
    pub resumed: bool,
    /// The public-key operations this side did for this session (none for a resumption).
    pub pk_ops: PkOps,
}

/// Entry point of the device side of a full handshake.
pub struct ClientHandshake;

impl ClientHandshake {
    /// Makes the ClientHello (the CONNECT's Authentication Data, or an AUTH 0x19's for a
    /// re-authentication) and the state awaiting the ServerHello.
    pub fn start(
        config: &Arc<ClientConfig>,
        rng: &dyn SecureRandom,
    ) -> Result<(ExpectServerHello, Vec<u8>), Error> {
        let meter = Meter::start();
        let nonce_c = random_nonce(rng)?;
        record(Op::Keygen);
        let eph = EphemeralPrivateKey::generate(&ECDH_P256, rng)
            .map_err(|_| Error::Internal("ephemeral key generation failed"))?;
        let share = eph
            .compute_public_key()
            .map_err(|_| Error::Internal("ephemeral public key failed"))?;
        let hello = ClientHello::encode(&nonce_c, share.as_ref(), &config.certs)?;
        Ok((
            ExpectServerHello {
                config: config.clone(),
                eph,
                nonce_c,
                client_hello: hello.clone(),
                pk: meter.finish(),
            },
            hello,
        ))
    }
}

/// Awaits the ServerHello (AUTH 0x18).
pub struct ExpectServerHello {
    config: Arc<ClientConfig>,
    eph: EphemeralPrivateKey,
    nonce_c: [u8; 32],
    client_hello: Vec<u8>,
    pk: PkOps,
}

impl ExpectServerHello {
    /// Checks the broker certificate (chain, serverAuth, name) at `now`, then sig_s and mac_s;
    /// returns the ClientFinish to send in AUTH 0x18 and the state awaiting the ServerFinish.
    pub fn handle(
        self,
        server_hello: &[u8],
        now: UnixTime,
        rng: &dyn SecureRandom,
    ) -> Result<(ExpectServerFinish, Vec<u8>), Error> {
        let meter = Meter::start();
        let sh = ServerHello::read(server_hello)?;
        let broker_key = verify_broker_chain(
            &self.config.anchor,
            self.config.broker_name.as_ref(),
            self.config.broker_cache.as_deref(),
            &sh.certs,
            unix_secs(now),
        )?;
        record(Op::Agree);
        let z = agreement::agree_ephemeral(
            self.eph,
            &UnparsedPublicKey::new(&ECDH_P256, sh.share),
            |z| {
                let mut out = [0u8; 32];
                out.copy_from_slice(z);
                out
            },
        )
        .map_err(|_| Error::BadKeyShare)?;
        let secret = extract(&self.nonce_c, sh.nonce, &z);
        let th1 = sha256(&[&self.client_hello, sh.signed_part]);
        verify_sig(&broker_key, LABEL_BROKER_SIG, &th1, sh.sig)?;
        let k_bmac = secret.mac_key(LABEL_BROKER_MAC, &th1);
        k_bmac.verify(&[&th1, sh.sig], sh.mac)?;
        let hello_ok = ServerHelloVerified(());

        let th2 = sha256(&[&self.client_hello, server_hello]);
        record(Op::Sign);
        let sig_c = self
            .config
            .key
            .sign(&signed_message(LABEL_DEVICE_SIG, &th2), rng)?;
        let k_dmac = secret.mac_key(LABEL_DEVICE_MAC, &th1);
        let mac_c = k_dmac.sign(&[&th2, &sig_c]);
        let finish = ClientFinish::encode(&sig_c, &mac_c);
        let mut transcript = self.client_hello;
        transcript.extend_from_slice(server_hello);
        transcript.extend_from_slice(&finish);
        Ok((
            ExpectServerFinish {
                secret,
                k_bmac_bytes: k_bmac.bytes,
                transcript,
                pk: self.pk + meter.finish(),
                _verified: hello_ok,
            },
            finish,
        ))
    }
}

/// Awaits the ServerFinish (CONNACK 0x00, or AUTH 0x00 after a re-authentication).
pub struct ExpectServerFinish {
    secret: Secret,
    k_bmac_bytes: [u8; 32],
    /// ClientHello || ServerHello || ClientFinish.
    transcript: Vec<u8>,
    pk: PkOps,
    _verified: ServerHelloVerified,
}

impl ExpectServerFinish {
    /// Verifies mac_f and yields the session keys and the ticket (stamped with `now`).
    pub fn handle(self, server_finish: &[u8], now: UnixTime) -> Result<ClientSession, Error> {
        let th3 = sha256(&[&self.transcript]);
        finish(
            &self.secret,
            &self.k_bmac_bytes,
            &th3,
            server_finish,
            SERVER_FINISH,
            "ServerFinish",
            now,
            false,
            self.pk,
        )
    }
}

#[allow(clippy::too_many_arguments)] // one private helper shared by the two finishing states
fn finish(
    secret: &Secret,
    k_bmac: &[u8; 32],
    th3: &[u8; 32],
    bytes: &[u8],
    ty: u8,
    name: &'static str,
    now: UnixTime,
    resumed: bool,
    pk: PkOps,
) -> Result<ClientSession, Error> {
    let meter = Meter::start();
    let f = Finish::read(bytes, ty, name)?;
    super::keys::MacKey::new(*k_bmac).verify(&[th3, f.maced_part], f.mac)?;
    let keys = secret.session_keys(th3);
    let ticket = (f.lifetime != 0).then(|| ResumptionTicket {
        ticket: f.ticket.to_vec(),
        resumption_secret: keys.resumption_secret,
        lifetime: f.lifetime,
        received_at: unix_secs(now),
    });
    Ok(ClientSession {
        keys,
        ticket,
        resumed,
        pk_ops: pk + meter.finish(),
    })
}

/// Entry point of the device side of a resumption.
pub struct ClientResume;

impl ClientResume {
    /// Makes the ResumeHello (CONNECT or AUTH 0x19 Authentication Data) from a stored ticket.
    pub fn start(
        ticket: &ResumptionTicket,
        rng: &dyn SecureRandom,
    ) -> Result<(ExpectResumeChallenge, Vec<u8>), Error> {
        let meter = Meter::start();
        let nonce_c = random_nonce(rng)?;
        let hello = ResumeHello::encode(&nonce_c, &ticket.ticket)?;
        Ok((
            ExpectResumeChallenge {
                nonce_c,
                resumption_secret: Secret(ticket.resumption_secret),
                resume_hello: hello.clone(),
                pk: meter.finish(),
            },
            hello,
        ))
    }
}

/// Awaits the ResumeChallenge (AUTH 0x18).
pub struct ExpectResumeChallenge {
    nonce_c: [u8; 32],
    resumption_secret: Secret,
    resume_hello: Vec<u8>,
    pk: PkOps,
}

impl ExpectResumeChallenge {
    /// Returns the ResumeProof to send in AUTH 0x18 and the state awaiting the ResumeFinish.
    pub fn handle(self, challenge: &[u8]) -> Result<(ExpectResumeFinish, Vec<u8>), Error> {
        let meter = Meter::start();
        let nonce_s = read_resume_challenge(challenge)?;
        let secret_r = extract(&self.nonce_c, nonce_s, &self.resumption_secret.0);
        let thr = sha256(&[&self.resume_hello, challenge]);
        let k_dmac = secret_r.mac_key(LABEL_RESUME_DEVICE_MAC, &thr);
        let k_bmac = secret_r.mac_key(LABEL_RESUME_BROKER_MAC, &thr);
        let proof = encode_resume_proof(&k_dmac.sign(&[&thr]));
        let th3 = sha256(&[&self.resume_hello, challenge, &proof]);
        Ok((
            ExpectResumeFinish {
                secret_r,
                k_bmac_bytes: k_bmac.bytes,
                th3,
                pk: self.pk + meter.finish(),
            },
            proof,
        ))
    }
}

/// Awaits the ResumeFinish (CONNACK 0x00, or AUTH 0x00 after a re-authentication).
pub struct ExpectResumeFinish {
    secret_r: Secret,
    k_bmac_bytes: [u8; 32],
    th3: [u8; 32],
    pk: PkOps,
}

impl ExpectResumeFinish {
    /// Verifies mac_f and yields the new session keys and the new ticket.
    pub fn handle(self, resume_finish: &[u8], now: UnixTime) -> Result<ClientSession, Error> {
        finish(
            &self.secret_r,
            &self.k_bmac_bytes,
            &self.th3,
            resume_finish,
            RESUME_FINISH,
            "ResumeFinish",
            now,
            true,
            self.pk,
        )
    }
}
