//! A framed MQTT v5 connection over any byte stream (TCP, TLS), and the CONNECT exchange
//! including enhanced authentication (CONNECT / AUTH 0x18 ... / CONNACK).

use devid_core::SwVersion;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::mqtt::{
    decode, ConnAck, Connect, DecodeError, EncodeError, Packet, Properties, Property, ReasonCode,
    ReasonOnly,
};

/// A byte stream the client can run over.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// Errors of an authentication method (the device side of DEVID-1, typically).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AuthError(pub String);

/// The client half of an MQTT v5 enhanced-authentication method, driven by the connection:
/// `start` gives the CONNECT's Authentication Data, `challenge` answers each AUTH 0x18 and
/// `finish` checks the Authentication Data of the final CONNACK 0x00 (or AUTH 0x00 after a
/// re-authentication).
pub trait Authenticator: Send {
    type Outcome: Send + 'static;
    /// The Authentication Method, e.g. `DEVID-1`.
    fn method(&self) -> &str;
    /// Authentication Data for CONNECT (or AUTH 0x19).
    fn start(&mut self) -> Result<Vec<u8>, AuthError>;
    /// The reply to the Authentication Data of an AUTH 0x18.
    fn challenge(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError>;
    /// Checks the Authentication Data of the success packet and yields the session.
    fn finish(&mut self, data: &[u8]) -> Result<Self::Outcome, AuthError>;
}

/// Everything that can go wrong on a connection.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("the broker sent a bad packet: {0}")]
    Decode(#[from] DecodeError),
    #[error("cannot encode the packet: {0}")]
    Encode(#[from] EncodeError),
    #[error("the broker refused the connection: CONNACK {reason}{}", fmt_reason_string(.reason_string))]
    Refused {
        reason: ReasonCode,
        reason_string: Option<String>,
    },
    #[error("the broker disconnected us: DISCONNECT {reason}{}", fmt_reason_string(.reason_string))]
    Disconnected {
        reason: ReasonCode,
        reason_string: Option<String>,
    },
    #[error("authentication failed on our side: {0}")]
    Auth(#[from] AuthError),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("the connection is closed")]
    Closed,
}

fn fmt_reason_string(s: &Option<String>) -> String {
    match s {
        Some(s) => format!(" ({s})"),
        None => String::new(),
    }
}

impl ClientError {
    /// The MQTT reason code behind this error, when the broker gave one.
    pub fn reason_code(&self) -> Option<ReasonCode> {
        match self {
            ClientError::Refused { reason, .. } | ClientError::Disconnected { reason, .. } => {
                Some(*reason)
            }
            _ => None,
        }
    }
}

/// Our largest accepted incoming packet unless configured otherwise (1 MiB).
pub const DEFAULT_MAX_PACKET_SIZE: u32 = 1 << 20;

/// A framed MQTT connection: packets in, packets out.
pub struct Connection {
    io: Box<dyn Io>,
    rbuf: Vec<u8>,
    /// Start of unread bytes in `rbuf`.
    rpos: usize,
    wbuf: Vec<u8>,
    /// Largest packet we accept.
    pub max_incoming: u32,
    /// Largest packet the broker accepts (its Maximum Packet Size).
    pub max_outgoing: u32,
}

impl Connection {
    pub fn new(io: impl Io) -> Self {
        Self {
            io: Box::new(io),
            rbuf: Vec::with_capacity(4096),
            rpos: 0,
            wbuf: Vec::with_capacity(1024),
            max_incoming: DEFAULT_MAX_PACKET_SIZE,
            max_outgoing: crate::mqtt::VBI_MAX + 5,
        }
    }

    /// Encodes and sends one packet (flushed).
    pub async fn send(&mut self, p: &Packet) -> Result<(), ClientError> {
        self.wbuf.clear();
        p.encode_limited(&mut self.wbuf, self.max_outgoing)?;
        self.io.write_all(&self.wbuf).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// Receives the next packet; `Ok(None)` at a clean end of stream between packets.
    ///
    /// Cancel safety: only the socket read awaits, and bytes read are kept in the buffer, so
    /// dropping this future (in a `select!`) loses nothing.
    pub async fn recv(&mut self) -> Result<Option<Packet>, ClientError> {
        loop {
            if let Some(d) = decode(&self.rbuf[self.rpos..], self.max_incoming)? {
                self.rpos += d.len;
                if self.rpos == self.rbuf.len() {
                    self.rbuf.clear();
                    self.rpos = 0;
                }
                return Ok(Some(d.packet));
            }
            if self.rpos > 0 {
                self.rbuf.drain(..self.rpos);
                self.rpos = 0;
            }
            let n = self.io.read_buf(&mut self.rbuf).await?;
            if n == 0 {
                if self.rbuf.is_empty() {
                    return Ok(None);
                }
                return Err(ClientError::Protocol(
                    "the connection closed in the middle of a packet".into(),
                ));
            }
        }
    }

    /// Sends DISCONNECT with `reason` and shuts the stream down.
    pub async fn disconnect(&mut self, reason: ReasonCode) -> Result<(), ClientError> {
        self.send(&Packet::Disconnect(ReasonOnly {
            reason,
            properties: Properties::new(),
        }))
        .await?;
        self.io.shutdown().await?;
        Ok(())
    }
}

/// The CONNECT user property that carries the device's software version.
pub const SW_VERSION_PROPERTY: &str = "devid-sw";

/// What the CONNECT carries besides authentication.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub client_id: String,
    pub keep_alive: u16,
    pub clean_start: bool,
    pub session_expiry: u32,
    pub username: Option<String>,
    /// The device's software version, reported in CONNECT (`docs/protocol.md`, "Software
    /// version"): the user property `devid-sw`, and the User Name `devid-sw=<version>` when no
    /// `username` is set (Mosquitto 2.0 shows its plugins the User Name, not the properties).
    pub sw_version: Option<SwVersion>,
    /// Advertised as our Maximum Packet Size and enforced on incoming packets.
    pub max_packet_size: u32,
    /// Bound on the whole CONNECT ... CONNACK exchange.
    pub connect_timeout: Duration,
}

impl ConnectOptions {
    pub fn new(client_id: impl Into<String>) -> Self {
        Self {
            client_id: client_id.into(),
            keep_alive: 60,
            clean_start: true,
            session_expiry: 0,
            username: None,
            sw_version: None,
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// What the broker told us in its CONNACK.
#[derive(Debug, Clone)]
pub struct Connected<O> {
    pub connack: ConnAck,
    /// The authentication outcome (the DEVID-1 session), when a method was used.
    pub auth: Option<O>,
    /// The keep-alive in force (the broker may override ours).
    pub keep_alive: u16,
    /// The client id in force (the broker may assign one).
    pub client_id: String,
}

/// Runs CONNECT ... CONNACK on a fresh connection, driving `auth` through the AUTH exchange.
/// A CONNACK with a failure reason becomes [`ClientError::Refused`].
pub async fn handshake<A: Authenticator>(
    conn: &mut Connection,
    opts: &ConnectOptions,
    mut auth: Option<&mut A>,
) -> Result<Connected<A::Outcome>, ClientError> {
    conn.max_incoming = opts.max_packet_size;
    let fut = async {
        let mut properties = Properties::new();
        if opts.session_expiry != 0 {
            properties.push(Property::SessionExpiryInterval(opts.session_expiry));
        }
        if opts.max_packet_size != DEFAULT_MAX_PACKET_SIZE {
            properties.push(Property::MaximumPacketSize(opts.max_packet_size));
        }
        let mut username = opts.username.clone();
        if let Some(v) = &opts.sw_version {
            properties.push(Property::UserProperty(
                SW_VERSION_PROPERTY.into(),
                v.as_str().into(),
            ));
            username.get_or_insert_with(|| format!("{SW_VERSION_PROPERTY}={v}"));
        }
        if let Some(a) = auth.as_deref_mut() {
            let data = a.start()?;
            properties.push(Property::AuthenticationMethod(a.method().to_owned()));
            properties.push(Property::AuthenticationData(data));
        }
        conn.send(&Packet::Connect(Connect {
            client_id: opts.client_id.clone(),
            clean_start: opts.clean_start,
            keep_alive: opts.keep_alive,
            properties,
            will: None,
            username,
            password: None,
        }))
        .await?;
        loop {
            match conn.recv().await?.ok_or(ClientError::Closed)? {
                Packet::Auth(a) if a.reason == ReasonCode::CONTINUE_AUTHENTICATION => {
                    let Some(au) = auth.as_deref_mut() else {
                        return Err(ClientError::Protocol(
                            "AUTH from the broker without an authentication method".into(),
                        ));
                    };
                    check_method(au.method(), &a.properties)?;
                    let reply = au.challenge(a.properties.authentication_data().unwrap_or(&[]))?;
                    conn.send(&Packet::Auth(ReasonOnly {
                        reason: ReasonCode::CONTINUE_AUTHENTICATION,
                        properties: Properties::new()
                            .with(Property::AuthenticationMethod(au.method().to_owned()))
                            .with(Property::AuthenticationData(reply)),
                    }))
                    .await?;
                }
                Packet::ConnAck(c) if !c.reason.is_success() => {
                    return Err(ClientError::Refused {
                        reason: c.reason,
                        reason_string: c.properties.reason_string().map(str::to_owned),
                    })
                }
                Packet::ConnAck(c) => {
                    let outcome = match auth.as_deref_mut() {
                        Some(au) => {
                            check_method(au.method(), &c.properties)?;
                            Some(au.finish(c.properties.authentication_data().unwrap_or(&[]))?)
                        }
                        None => None,
                    };
                    if let Some(max) = c.properties.maximum_packet_size() {
                        conn.max_outgoing = max;
                    }
                    return Ok(Connected {
                        keep_alive: c.properties.server_keep_alive().unwrap_or(opts.keep_alive),
                        client_id: c
                            .properties
                            .assigned_client_identifier()
                            .unwrap_or(&opts.client_id)
                            .to_owned(),
                        auth: outcome,
                        connack: c,
                    });
                }
                Packet::Disconnect(d) => {
                    return Err(ClientError::Disconnected {
                        reason: d.reason,
                        reason_string: d.properties.reason_string().map(str::to_owned),
                    })
                }
                other => {
                    return Err(ClientError::Protocol(format!(
                        "expected AUTH or CONNACK, got {:?}",
                        other.packet_type()
                    )))
                }
            }
        }
    };
    tokio::time::timeout(opts.connect_timeout, fut)
        .await
        .map_err(|_| ClientError::Timeout("CONNACK"))?
}

fn check_method(ours: &str, props: &Properties) -> Result<(), ClientError> {
    match props.authentication_method() {
        Some(m) if m == ours => Ok(()),
        Some(m) => Err(ClientError::Protocol(format!(
            "the broker switched the authentication method to {m:?}"
        ))),
        None => Err(ClientError::Protocol(
            "the broker's packet lacks the Authentication Method".into(),
        )),
    }
}

/// An authenticator type for connections without enhanced authentication.
pub enum NoAuth {}

impl Authenticator for NoAuth {
    type Outcome = ();
    fn method(&self) -> &str {
        match *self {}
    }
    fn start(&mut self) -> Result<Vec<u8>, AuthError> {
        match *self {}
    }
    fn challenge(&mut self, _: &[u8]) -> Result<Vec<u8>, AuthError> {
        match *self {}
    }
    fn finish(&mut self, _: &[u8]) -> Result<(), AuthError> {
        match *self {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the CONNECT of `opts` looks like to a broker.
    async fn connect_packet(opts: ConnectOptions) -> Connect {
        let (a, b) = tokio::io::duplex(4096);
        let mut device = Connection::new(a);
        let mut broker = Connection::new(b);
        let client = tokio::spawn(async move {
            handshake::<NoAuth>(&mut device, &opts, None)
                .await
                .map(|_| ())
        });
        let Ok(Some(Packet::Connect(c))) = broker.recv().await else {
            panic!("no CONNECT");
        };
        broker
            .send(&Packet::ConnAck(ConnAck {
                session_present: false,
                reason: ReasonCode::SUCCESS,
                properties: Properties::new(),
            }))
            .await
            .expect("CONNACK");
        client.await.expect("task").expect("connected");
        c
    }

    #[tokio::test]
    async fn the_software_version_goes_in_a_user_property_and_the_user_name() {
        let mut opts = ConnectOptions::new("dev1");
        opts.sw_version = Some(SwVersion::parse("fw 1.2.3").expect("version"));
        let c = connect_packet(opts.clone()).await;
        assert_eq!(
            c.properties.user_properties().collect::<Vec<_>>(),
            vec![("devid-sw", "fw 1.2.3")]
        );
        assert_eq!(c.username.as_deref(), Some("devid-sw=fw 1.2.3"));
        // A User Name of the application's own is kept; the property still says the version.
        opts.username = Some("app".into());
        let c = connect_packet(opts.clone()).await;
        assert_eq!(c.username.as_deref(), Some("app"));
        assert_eq!(c.properties.user_properties().count(), 1);
        // Without a version: neither.
        let c = connect_packet(ConnectOptions::new("dev1")).await;
        assert_eq!(c.username, None);
        assert_eq!(c.properties.user_properties().count(), 0);
    }
}
