//! DEVID-1 on the device: an [`Authenticator`] driving the sans-IO state machines of
//! `devid_core::protocol`, the ticket file, and the [`SessionHook`] that MACs or seals PUBLISHes
//! and rotates keys by re-authentication. [`Devid1::alter_outgoing`] lets a test make the
//! device misbehave on the wire while the real state machines run.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use devid_core::protocol::{
    ClientConfig, ClientHandshake, ClientResume, ClientSession, ExpectResumeChallenge,
    ExpectResumeFinish, ExpectServerFinish, ExpectServerHello, PublishSigner, ResumptionTicket,
    AUTH_METHOD,
};
use ring::rand::SystemRandom;
use rustls::pki_types::UnixTime;

use crate::client::{Protection, SessionHook};
use crate::connection::{AuthError, Authenticator};
use crate::mqtt::{Property, Publish};

/// Where the handshake is.
enum State {
    Idle,
    ServerHello(ExpectServerHello),
    ServerFinish(ExpectServerFinish),
    ResumeChallenge(ExpectResumeChallenge),
    ResumeFinish(ExpectResumeFinish),
}

/// A DEVID-1 message on its way from the device to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outgoing {
    /// CONNECT (or AUTH 0x19) data of a full handshake.
    ClientHello,
    /// The answer to the ServerHello (AUTH 0x18).
    ClientFinish,
    /// CONNECT (or AUTH 0x19) data of a resumption.
    ResumeHello,
    /// The answer to the ResumeChallenge (AUTH 0x18).
    ResumeProof,
}

/// See [`Devid1::alter_outgoing`].
type Alter = Box<dyn FnMut(Outgoing, &mut Vec<u8>) + Send>;

/// The device half of DEVID-1 as an MQTT enhanced-authentication method. With a ticket it
/// sends a ResumeHello (symmetric only), otherwise a ClientHello (full handshake).
pub struct Devid1 {
    config: Arc<ClientConfig>,
    rng: SystemRandom,
    ticket: Option<ResumptionTicket>,
    state: State,
    alter: Option<Alter>,
}

fn auth_err(e: impl std::fmt::Display) -> AuthError {
    AuthError(format!("DEVID-1: {e}"))
}

impl Devid1 {
    /// A full handshake.
    pub fn new(config: Arc<ClientConfig>) -> Self {
        Self {
            config,
            rng: SystemRandom::new(),
            ticket: None,
            state: State::Idle,
            alter: None,
        }
    }

    /// A resumption with `ticket` (used only while it is unexpired by our clock).
    pub fn resume(config: Arc<ClientConfig>, ticket: ResumptionTicket) -> Self {
        Self {
            ticket: Some(ticket),
            ..Self::new(config)
        }
    }

    /// True if `start` will send a ResumeHello.
    pub fn is_resumption(&self) -> bool {
        self.ticket
            .as_ref()
            .is_some_and(|t| t.is_usable(UnixTime::now()))
    }

    pub fn config(&self) -> &Arc<ClientConfig> {
        &self.config
    }

    /// Hands every message to `alter` before it is sent; `alter` may rewrite, truncate or
    /// replace it, or take its time (the state machine has already moved on with the true
    /// message). This is the tamper hook of the end-to-end tests, in the manner of
    /// rustls-test's `transfer_altered`: a flipped signature bit, a foreign ClientHello or a
    /// late ClientFinish comes from the real device code, and the test checks the broker
    /// refuses it.
    pub fn alter_outgoing(
        mut self,
        alter: impl FnMut(Outgoing, &mut Vec<u8>) + Send + 'static,
    ) -> Self {
        self.alter = Some(Box::new(alter));
        self
    }

    /// `data` as it leaves: through the alter hook when one is set.
    fn outgoing(&mut self, what: Outgoing, mut data: Vec<u8>) -> Vec<u8> {
        if let Some(alter) = self.alter.as_mut() {
            alter(what, &mut data);
        }
        data
    }
}

impl Authenticator for Devid1 {
    type Outcome = ClientSession;

    fn method(&self) -> &str {
        AUTH_METHOD
    }

    fn start(&mut self) -> Result<Vec<u8>, AuthError> {
        if self.is_resumption() {
            if let Some(t) = self.ticket.as_ref() {
                let (s, hello) = ClientResume::start(t, &self.rng).map_err(auth_err)?;
                self.state = State::ResumeChallenge(s);
                return Ok(self.outgoing(Outgoing::ResumeHello, hello));
            }
        }
        let (s, hello) = ClientHandshake::start(&self.config, &self.rng).map_err(auth_err)?;
        self.state = State::ServerHello(s);
        Ok(self.outgoing(Outgoing::ClientHello, hello))
    }

    fn challenge(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::ServerHello(s) => {
                let (s, finish) = s
                    .handle(data, UnixTime::now(), &self.rng)
                    .map_err(auth_err)?;
                self.state = State::ServerFinish(s);
                Ok(self.outgoing(Outgoing::ClientFinish, finish))
            }
            State::ResumeChallenge(s) => {
                let (s, proof) = s.handle(data).map_err(auth_err)?;
                self.state = State::ResumeFinish(s);
                Ok(self.outgoing(Outgoing::ResumeProof, proof))
            }
            _ => Err(AuthError(
                "DEVID-1: unexpected AUTH 0x18 from the broker".into(),
            )),
        }
    }

    fn finish(&mut self, data: &[u8]) -> Result<ClientSession, AuthError> {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::ServerFinish(s) => s.handle(data, UnixTime::now()).map_err(auth_err),
            State::ResumeFinish(s) => s.handle(data, UnixTime::now()).map_err(auth_err),
            _ => Err(AuthError(
                "DEVID-1: the broker reported success before the exchange ended".into(),
            )),
        }
    }
}

/// The ticket file next to the key: `dev.key` -> `dev.ticket`.
pub fn ticket_path_for_key(key: &Path) -> PathBuf {
    key.with_extension("ticket")
}

/// Reads a stored ticket; `None` when there is none or it cannot be used (a corrupt or expired
/// file is ignored: a full handshake follows).
pub fn load_ticket(path: &Path) -> Option<ResumptionTicket> {
    let bytes = std::fs::read(path).ok()?;
    let t = ResumptionTicket::from_bytes(&bytes).ok()?;
    t.is_usable(UnixTime::now()).then_some(t)
}

/// Stores a ticket with mode 0600 (it holds the resumption secret), atomically.
pub fn store_ticket(path: &Path, ticket: &ResumptionTicket) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("ticket.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&ticket.to_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Removes a ticket the broker refused.
pub fn forget_ticket(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// The live session on a connected client: numbers and MACs or seals PUBLISHes, and runs
/// re-authentications (resumption when a ticket is at hand, else a full handshake).
pub struct Devid1Session {
    config: Arc<ClientConfig>,
    signer: PublishSigner,
    session_id: String,
    ticket: Option<ResumptionTicket>,
    ticket_file: Option<PathBuf>,
    reauth: Option<Devid1>,
    /// Re-authenticate with a full handshake even when a ticket is at hand.
    pub full_reauth: bool,
}

impl Devid1Session {
    pub fn new(
        config: Arc<ClientConfig>,
        session: ClientSession,
        ticket_file: Option<PathBuf>,
    ) -> Self {
        let mut s = Self {
            config,
            signer: PublishSigner::new(&session.keys),
            session_id: session.keys.session_id_hex(),
            ticket: None,
            ticket_file,
            reauth: None,
            full_reauth: false,
        };
        s.keep_ticket(session.ticket);
        s
    }

    /// The current session id (hex).
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    fn keep_ticket(&mut self, ticket: Option<ResumptionTicket>) {
        if let Some(t) = ticket {
            if let Some(p) = &self.ticket_file {
                // Losing the ticket only costs a full handshake next time.
                let _ = store_ticket(p, &t);
            }
            self.ticket = Some(t);
        }
    }
}

impl SessionHook for Devid1Session {
    fn protect(&mut self, p: &mut Publish, protection: Protection) -> Result<(), AuthError> {
        let tag = match protection {
            Protection::None => return Ok(()),
            Protection::Mac => self.signer.mac(&p.topic, &p.payload).map_err(auth_err)?,
            Protection::Seal => self
                .signer
                .seal(&p.topic, &mut p.payload)
                .map_err(auth_err)?,
        };
        for (k, v) in tag.properties {
            p.properties.push(Property::UserProperty(k.to_owned(), v));
        }
        Ok(())
    }

    fn reauth_start(&mut self) -> Result<(String, Vec<u8>), AuthError> {
        let mut a = match (&self.ticket, self.full_reauth) {
            (Some(t), false) => Devid1::resume(self.config.clone(), t.clone()),
            _ => Devid1::new(self.config.clone()),
        };
        let data = a.start()?;
        self.reauth = Some(a);
        Ok((AUTH_METHOD.to_owned(), data))
    }

    fn reauth_challenge(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        match self.reauth.as_mut() {
            Some(a) => a.challenge(data),
            None => Err(AuthError("DEVID-1: no re-authentication running".into())),
        }
    }

    fn reauth_finish(&mut self, data: &[u8]) -> Result<String, AuthError> {
        let mut a = self
            .reauth
            .take()
            .ok_or_else(|| AuthError("DEVID-1: no re-authentication running".into()))?;
        let session = a.finish(data)?;
        self.signer = PublishSigner::new(&session.keys);
        self.session_id = session.keys.session_id_hex();
        self.keep_ticket(session.ticket);
        Ok(self.session_id.clone())
    }
}
