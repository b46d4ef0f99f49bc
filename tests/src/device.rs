//! DEVID-1 devices driven through devid_device's real authenticator and client, with a tamper
//! hook for the refusal tests.

use std::time::Duration;

use devid_core::protocol::{ClientSession, PublishSigner, ResumptionTicket};
use devid_device::devid1::Outgoing;
use devid_device::mqtt::{QoS, ReasonCode, SubscriptionOptions};
use devid_device::{
    Client, ClientError, ConnectOptions, Connected, Connection, Devid1, Devid1Session, Event,
    OutgoingMessage, Transport,
};

use crate::creds::DeviceCreds;
use crate::rand_bytes;

/// How the device side misbehaves, for refusal tests.
#[derive(Clone, Debug, Default)]
pub enum Tamper {
    #[default]
    None,
    /// Send these bytes as the ClientHello.
    Hello(Vec<u8>),
    /// Flip one bit of the ClientFinish at this byte index (1..=64 is sig_c, 65.. is mac_c).
    FlipFinish(usize),
    /// Send these bytes as the ClientFinish.
    Finish(Vec<u8>),
    /// Wait this long before answering the ServerHello (blocks the calling worker thread).
    DelayFinish(Duration),
}

impl Tamper {
    /// What the tampering does to one outgoing message (the hook of [`Devid1::alter_outgoing`]).
    fn alter(&self, what: Outgoing, data: &mut Vec<u8>) {
        match (self, what) {
            (Tamper::Hello(b), Outgoing::ClientHello) => *data = b.clone(),
            (Tamper::FlipFinish(i), Outgoing::ClientFinish) => {
                if let Some(b) = data.get_mut(*i) {
                    *b ^= 0x01;
                }
            }
            (Tamper::Finish(b), Outgoing::ClientFinish) => *data = b.clone(),
            (Tamper::DelayFinish(d), Outgoing::ClientFinish) => std::thread::sleep(*d),
            _ => {}
        }
    }
}

/// devid_device's DEVID-1 authenticator for this device (a full handshake), sending what
/// `tamper` makes of its messages.
pub fn authenticator(creds: &DeviceCreds, root_der: &[u8], tamper: Tamper) -> Devid1 {
    let auth = Devid1::new(creds.config(root_der));
    match tamper {
        Tamper::None => auth,
        t => auth.alter_outgoing(move |what, data| t.alter(what, data)),
    }
}

/// A connected device.
pub struct Device {
    pub client: Client,
    pub session: Option<ClientSession>,
    pub client_id: String,
}

/// Runs the CONNECT exchange over TCP with `auth` as `client_id`.
async fn handshake_tcp(
    addr: &str,
    client_id: &str,
    auth: &mut Devid1,
) -> Result<(Connection, Connected<ClientSession>), ClientError> {
    let mut conn = devid_device::open(addr, &Transport::Tcp).await?;
    let opts = ConnectOptions::new(client_id.to_string());
    let connected = devid_device::handshake(&mut conn, &opts, Some(auth)).await?;
    Ok((conn, connected))
}

/// [`handshake_tcp`], then the client without a session hook; the device keeps the session.
async fn connect_with(
    addr: &str,
    client_id: &str,
    auth: &mut Devid1,
) -> Result<Device, ClientError> {
    let (conn, connected) = handshake_tcp(addr, client_id, auth).await?;
    Ok(Device {
        client: Client::start(conn, connected.keep_alive, None),
        session: connected.auth,
        client_id: client_id.to_string(),
    })
}

/// Connects a device over TCP with DEVID-1. `client_id` overrides the CONNECT's ClientID.
pub async fn connect(
    addr: &str,
    creds: &DeviceCreds,
    root_der: &[u8],
    client_id: Option<&str>,
    tamper: Tamper,
) -> Result<Device, ClientError> {
    let mut auth = authenticator(creds, root_der, tamper);
    connect_with(addr, client_id.unwrap_or(&creds.client_id), &mut auth).await
}

/// Resumes a session with `ticket` over TCP (ResumeHello / ResumeProof). `client_id` overrides
/// the CONNECT's ClientID. Panics when the device would not offer the ticket by its own clock
/// (it would fall back to a full handshake, which is not what the caller tests).
pub async fn resume(
    addr: &str,
    creds: &DeviceCreds,
    root_der: &[u8],
    client_id: Option<&str>,
    ticket: &ResumptionTicket,
) -> Result<Device, ClientError> {
    let mut auth = Devid1::resume(creds.config(root_der), ticket.clone());
    assert!(
        auth.is_resumption(),
        "the device does not offer an expired ticket ({ticket:?})"
    );
    connect_with(addr, client_id.unwrap_or(&creds.client_id), &mut auth).await
}

/// A random ticket key file with one key.
pub fn ticket_key_file(id: u32) -> String {
    format!("{id} {}\n", hex::encode(rand_bytes::<32>()))
}

/// Connects with DEVID-1 and runs the client with devid_device's session hook (MAC/seal of
/// outgoing PUBLISHes, re-authentication with AUTH 0x19). Returns the device and a signer on
/// the first session's keys (to forge "old key" messages).
pub async fn connect_with_session(
    addr: &str,
    creds: &DeviceCreds,
    root_der: &[u8],
) -> Result<(Device, PublishSigner), ClientError> {
    let mut auth = authenticator(creds, root_der, Tamper::None);
    let config = auth.config().clone();
    let (conn, connected) = handshake_tcp(addr, &creds.client_id, &mut auth).await?;
    let session = connected
        .auth
        .ok_or_else(|| ClientError::Protocol("no DEVID-1 session".into()))?;
    let old = PublishSigner::new(&session.keys);
    let hook = Devid1Session::new(config, session, None);
    Ok((
        Device {
            client: Client::start(conn, connected.keep_alive, Some(Box::new(hook))),
            session: None,
            client_id: creds.client_id.clone(),
        },
        old,
    ))
}

/// Connects over TLS with a client certificate and no auth method (the mutual-TLS path).
pub async fn connect_tls(
    addr: &str,
    broker_name: &str,
    creds: &DeviceCreds,
    root_der: &[u8],
    client_id: Option<&str>,
) -> Result<Device, ClientError> {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let chain: Vec<CertificateDer<'static>> = creds
        .chain_der
        .iter()
        .map(|d| CertificateDer::from(d.clone()))
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(creds.key_pkcs8_der.clone()));
    let config = devid_device::tls_config(devid_device::TlsOptions {
        roots: vec![CertificateDer::from(root_der.to_vec())],
        client_auth: Some((chain, key)),
        tls13_only: false,
        resumption: false,
    })?;
    let transport = Transport::Tls {
        config,
        server_name: devid_device::server_name(addr, Some(broker_name))?,
    };
    let cid = client_id.unwrap_or(&creds.client_id).to_string();
    let mut conn = devid_device::open(addr, &transport).await?;
    let opts = ConnectOptions::new(cid.clone());
    let connected = devid_device::handshake::<devid_device::NoAuth>(&mut conn, &opts, None).await?;
    Ok(Device {
        client: Client::start(conn, connected.keep_alive, None),
        session: None,
        client_id: cid,
    })
}

impl Device {
    /// QoS 1 publish; returns the PUBACK reason.
    pub async fn publish(&self, topic: &str, payload: &[u8]) -> ReasonCode {
        let ack = self
            .client
            .publish(OutgoingMessage::new(
                topic,
                payload.to_vec(),
                QoS::AtLeastOnce,
            ))
            .await
            .expect("publish");
        ack.expect("QoS 1 has a PUBACK").reason
    }

    /// Subscribes to one filter at QoS 1; returns the SUBACK reason.
    pub async fn subscribe(&self, filter: &str) -> ReasonCode {
        let codes = self
            .client
            .subscribe(vec![(
                filter.to_string(),
                SubscriptionOptions::qos(QoS::AtLeastOnce),
            )])
            .await
            .expect("subscribe");
        codes[0]
    }

    /// The next event within `timeout`.
    pub async fn event(&mut self, timeout: Duration) -> Option<Event> {
        tokio::time::timeout(timeout, self.client.next_event())
            .await
            .ok()
            .flatten()
    }
}

/// The CONNACK reason of a refused connection (panics when it was accepted or failed otherwise).
pub fn refused_with(r: Result<Device, ClientError>) -> ReasonCode {
    match r {
        Ok(d) => panic!("{} was admitted", d.client_id),
        Err(e) => e
            .reason_code()
            .unwrap_or_else(|| panic!("expected a CONNACK refusal, got: {e}")),
    }
}
