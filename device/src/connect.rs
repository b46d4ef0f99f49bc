//! One call to get a connected [`Client`]: DEVID-1 (resume when a ticket is stored, fall back to
//! a full handshake when the broker refuses it), or plain MQTT (mutual-TLS devices).

use std::path::PathBuf;
use std::sync::Arc;

use devid_core::protocol::{ClientConfig, PkOps};

use crate::client::{Client, ClientSettings, Rotation};
use crate::connection::{handshake, ClientError, ConnectOptions, Connected, NoAuth};
use crate::devid1::{forget_ticket, load_ticket, Devid1, Devid1Session};
use crate::mqtt::ReasonCode;
use crate::transport::{open, Transport};

/// How a device connects with DEVID-1.
#[derive(Clone)]
pub struct DeviceOptions {
    /// `HOST:PORT`.
    pub broker: String,
    pub transport: Transport,
    pub config: Arc<ClientConfig>,
    /// Where the resumption ticket lives (next to the key); `None`: never resume or store.
    pub ticket_file: Option<PathBuf>,
    /// Try a resumption when a usable ticket is stored.
    pub resume: bool,
    pub connect: ConnectOptions,
    pub rotation: Rotation,
}

impl DeviceOptions {
    /// Defaults: resume when possible, the certificate's ClientID, keep-alive 60 s.
    pub fn new(broker: impl Into<String>, transport: Transport, config: Arc<ClientConfig>) -> Self {
        let connect = ConnectOptions::new(config.client_id());
        Self {
            broker: broker.into(),
            transport,
            config,
            ticket_file: None,
            resume: true,
            connect,
            rotation: Rotation::default(),
        }
    }
}

/// How the session came about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The DEVID-1 session id (hex).
    pub session_id: String,
    pub client_id: String,
    /// True when the session came from a resumption (no public-key operation).
    pub resumed: bool,
    /// Set when a resumption was tried and refused (reason code, or `None` when our side gave
    /// up), and a full handshake followed.
    pub resume_refused: Option<Option<ReasonCode>>,
    /// A ticket for the next connection was received.
    pub ticket_received: bool,
    /// The public-key operations the handshake of this session took on the device (zero for
    /// a resumption; a refused resumption that fell back is not included).
    pub pk_ops: PkOps,
}

/// Connects with DEVID-1 and starts the client with the session hook (MAC/seal, rotation).
pub async fn connect_devid1(opts: &DeviceOptions) -> Result<(Client, SessionInfo), ClientError> {
    let ticket = if opts.resume {
        opts.ticket_file.as_deref().and_then(load_ticket)
    } else {
        None
    };
    let mut resume_refused = None;
    if let Some(t) = ticket {
        let mut auth = Devid1::resume(opts.config.clone(), t);
        match attempt(opts, &mut auth).await {
            Ok(r) => return Ok(r),
            Err(e @ (ClientError::Refused { .. } | ClientError::Auth(_))) => {
                resume_refused = Some(e.reason_code());
                if let Some(p) = &opts.ticket_file {
                    forget_ticket(p);
                }
            }
            Err(e) => return Err(e),
        }
    }
    let mut auth = Devid1::new(opts.config.clone());
    let (client, mut info) = attempt(opts, &mut auth).await?;
    info.resume_refused = resume_refused;
    Ok((client, info))
}

async fn attempt(
    opts: &DeviceOptions,
    auth: &mut Devid1,
) -> Result<(Client, SessionInfo), ClientError> {
    let mut conn = open(&opts.broker, &opts.transport).await?;
    let mut c = handshake(&mut conn, &opts.connect, Some(auth)).await?;
    let settings = ClientSettings {
        rotation: opts.rotation,
        ..ClientSettings::from_connected(&c)
    };
    let session = c
        .auth
        .take()
        .ok_or_else(|| ClientError::Protocol("no DEVID-1 session".into()))?;
    let info = SessionInfo {
        session_id: session.keys.session_id_hex(),
        client_id: c.client_id,
        resumed: session.resumed,
        resume_refused: None,
        ticket_received: session.ticket.is_some(),
        pk_ops: session.pk_ops,
    };
    let hook = Devid1Session::new(opts.config.clone(), session, opts.ticket_file.clone());
    let client = Client::start_with(conn, settings, Some(Box::new(hook)));
    Ok((client, info))
}

/// Connects without enhanced authentication: a mutual-TLS device (client certificate in
/// `transport`) or an anonymous test client.
pub async fn connect_plain(
    broker: &str,
    transport: &Transport,
    opts: &ConnectOptions,
) -> Result<(Client, Connected<()>), ClientError> {
    let mut conn = open(broker, transport).await?;
    let c = handshake::<NoAuth>(&mut conn, opts, None).await?;
    let client = Client::start_with(conn, ClientSettings::from_connected(&c), None);
    Ok((client, c))
}
