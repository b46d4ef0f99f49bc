//! An in-process MQTT v5 "broker" that speaks the broker half of DEVID-1 from devid-core, built
//! on the device crate's own codec. It stands in for Mosquitto with the devid plugin (another
//! crate) so the device side can be tested on its own: full handshakes, resumptions,
//! re-authentication, and MAC/seal verification with PublishVerifier.

use std::sync::Arc;

use devid_core::protocol::{
    PublishAuth, PublishVerifier, ServerConfig, ServerHandshake, ServerSession, ServerStart,
    AUTH_METHOD,
};
use devid_device::mqtt::{
    ConnAck, Packet, Properties, Property, PubResponse, ReasonCode, ReasonOnly, SubAck,
};
use devid_device::Connection;
use rustls::pki_types::UnixTime;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerEvent {
    Connected {
        client_id: String,
        session_id: String,
        resumed: bool,
    },
    Refused {
        reason: u8,
        why: String,
    },
    Published {
        topic: String,
        /// After verification (decrypted when sealed).
        payload: Vec<u8>,
        seq: Option<u64>,
        verified: bool,
    },
    Reauthenticated {
        session_id: String,
        resumed: bool,
    },
}

pub struct FakeBroker {
    pub addr: String,
    pub events: mpsc::UnboundedReceiver<BrokerEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeBroker {
    pub async fn start(config: Arc<ServerConfig>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (config, tx) = (config.clone(), tx.clone());
                tokio::spawn(async move {
                    let _ = serve(Connection::new(tcp), config, tx).await;
                });
            }
        });
        FakeBroker {
            addr,
            events: rx,
            task,
        }
    }

    /// The same over TLS with this server certificate chain and PKCS#8 key.
    pub async fn start_tls(config: Arc<ServerConfig>, chain: Vec<Vec<u8>>, key: Vec<u8>) -> Self {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            chain.into_iter().map(CertificateDer::from).collect(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (config, tx, acceptor) = (config.clone(), tx.clone(), acceptor.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = serve(Connection::new(tls), config, tx).await;
                    }
                });
            }
        });
        FakeBroker {
            addr,
            events: rx,
            task,
        }
    }

    pub async fn next_event(&mut self) -> BrokerEvent {
        tokio::time::timeout(std::time::Duration::from_secs(10), self.events.recv())
            .await
            .expect("broker event in time")
            .expect("broker running")
    }
}

fn auth_props(data: Vec<u8>) -> Properties {
    Properties::new()
        .with(Property::AuthenticationMethod(AUTH_METHOD.into()))
        .with(Property::AuthenticationData(data))
}

async fn reply(conn: &mut Connection, data: Vec<u8>) -> Result<(), devid_device::ClientError> {
    conn.send(&Packet::Auth(ReasonOnly {
        reason: ReasonCode::CONTINUE_AUTHENTICATION,
        properties: auth_props(data),
    }))
    .await
}

async fn next_auth(conn: &mut Connection) -> Result<Vec<u8>, (u8, String)> {
    match conn.recv().await {
        Ok(Some(Packet::Auth(a))) if a.reason == ReasonCode::CONTINUE_AUTHENTICATION => {
            Ok(a.properties.authentication_data().unwrap_or(&[]).to_vec())
        }
        other => Err((0x87, format!("expected AUTH 0x18, got {other:?}"))),
    }
}

/// Runs one DEVID-1 exchange after the first message; `Err` is the reason code to refuse with.
async fn exchange(
    conn: &mut Connection,
    config: &Arc<ServerConfig>,
    client_id: &str,
    first: &[u8],
) -> Result<(ServerSession, Vec<u8>), (u8, String)> {
    let rng = ring::rand::SystemRandom::new();
    let refuse = |e: devid_core::protocol::Error| (e.reason_code(), e.to_string());
    let start =
        ServerHandshake::start(config, client_id, first, UnixTime::now()).map_err(refuse)?;
    match start {
        ServerStart::Full(pending) => {
            let (state, hello) = pending.accept(&rng).map_err(refuse)?;
            reply(conn, hello)
                .await
                .map_err(|e| (0x80, e.to_string()))?;
            let finish = next_auth(conn).await?;
            state.handle(&finish, UnixTime::now(), &rng).map_err(refuse)
        }
        ServerStart::Resume(pending) => {
            let (state, challenge) = pending.accept(&rng).map_err(refuse)?;
            reply(conn, challenge)
                .await
                .map_err(|e| (0x80, e.to_string()))?;
            let proof = next_auth(conn).await?;
            state.handle(&proof, UnixTime::now(), &rng).map_err(refuse)
        }
    }
}

async fn serve(
    mut conn: Connection,
    config: Arc<ServerConfig>,
    tx: mpsc::UnboundedSender<BrokerEvent>,
) -> Result<(), devid_device::ClientError> {
    let Some(Packet::Connect(c)) = conn.recv().await? else {
        return Ok(());
    };
    let mut verifier = None;
    if c.properties.authentication_method().is_some() {
        let data = c.properties.authentication_data().unwrap_or(&[]).to_vec();
        match exchange(&mut conn, &config, &c.client_id, &data).await {
            Ok((session, finish)) => {
                let _ = tx.send(BrokerEvent::Connected {
                    client_id: session.client_id.clone(),
                    session_id: session.keys.session_id_hex(),
                    resumed: session.resumed,
                });
                verifier = Some(PublishVerifier::new(&session.keys));
                conn.send(&Packet::ConnAck(ConnAck {
                    session_present: false,
                    reason: ReasonCode::SUCCESS,
                    properties: auth_props(finish),
                }))
                .await?;
            }
            Err((reason, why)) => {
                let _ = tx.send(BrokerEvent::Refused { reason, why });
                conn.send(&Packet::ConnAck(ConnAck {
                    session_present: false,
                    reason: ReasonCode(reason),
                    properties: Properties::new(),
                }))
                .await?;
                return Ok(());
            }
        }
    } else {
        conn.send(&Packet::ConnAck(ConnAck {
            session_present: false,
            reason: ReasonCode::SUCCESS,
            properties: Properties::new(),
        }))
        .await?;
    }
    while let Some(p) = conn.recv().await? {
        match p {
            // Stand-in for a revocation: the broker kicks the device (DISCONNECT 0x98).
            Packet::Publish(p) if p.topic == "kick/me" => {
                conn.send(&Packet::Disconnect(ReasonOnly {
                    reason: ReasonCode::ADMINISTRATIVE_ACTION,
                    properties: Properties::new(),
                }))
                .await?;
                return Ok(());
            }
            // Stand-in for the plugin's topic policy: nothing under forbidden/.
            Packet::Publish(p) if p.topic.starts_with("forbidden/") => {
                if let Some(id) = p.packet_id {
                    conn.send(&Packet::PubAck(PubResponse {
                        packet_id: id,
                        reason: ReasonCode::NOT_AUTHORIZED,
                        properties: Properties::new(),
                    }))
                    .await?;
                }
            }
            Packet::Publish(mut p) => {
                let auth = PublishAuth::from_properties(p.properties.user_properties());
                let (verified, seq) = match (auth, verifier.as_mut()) {
                    (Ok(Some(a)), Some(v)) => {
                        (v.verify(&a, &p.topic, &mut p.payload).is_ok(), Some(a.seq))
                    }
                    _ => (false, None),
                };
                let _ = tx.send(BrokerEvent::Published {
                    topic: p.topic.clone(),
                    payload: p.payload.clone(),
                    seq,
                    verified,
                });
                if let Some(id) = p.packet_id {
                    let reason = if verified || seq.is_none() {
                        ReasonCode::SUCCESS
                    } else {
                        ReasonCode::NOT_AUTHORIZED
                    };
                    conn.send(&Packet::PubAck(PubResponse {
                        packet_id: id,
                        reason,
                        properties: Properties::new(),
                    }))
                    .await?;
                }
            }
            Packet::Subscribe(s) => {
                let reasons = s
                    .filters
                    .iter()
                    .map(|(f, o)| {
                        if f.starts_with("forbidden/") {
                            ReasonCode::NOT_AUTHORIZED
                        } else {
                            ReasonCode(o.qos as u8)
                        }
                    })
                    .collect();
                conn.send(&Packet::SubAck(SubAck {
                    packet_id: s.packet_id,
                    properties: Properties::new(),
                    reasons,
                }))
                .await?;
            }
            Packet::PingReq => conn.send(&Packet::PingResp).await?,
            Packet::Auth(a) if a.reason == ReasonCode::RE_AUTHENTICATE => {
                let data = a.properties.authentication_data().unwrap_or(&[]).to_vec();
                match exchange(&mut conn, &config, &c.client_id, &data).await {
                    Ok((session, finish)) => {
                        let _ = tx.send(BrokerEvent::Reauthenticated {
                            session_id: session.keys.session_id_hex(),
                            resumed: session.resumed,
                        });
                        verifier = Some(PublishVerifier::new(&session.keys));
                        conn.send(&Packet::Auth(ReasonOnly {
                            reason: ReasonCode::SUCCESS,
                            properties: auth_props(finish),
                        }))
                        .await?;
                    }
                    Err((reason, why)) => {
                        // What Mosquitto 2.0.11 does: CONNACK 0x87 on the live connection.
                        let _ = tx.send(BrokerEvent::Refused { reason, why });
                        conn.send(&Packet::ConnAck(ConnAck {
                            session_present: false,
                            reason: ReasonCode(0x87),
                            properties: Properties::new(),
                        }))
                        .await?;
                        return Ok(());
                    }
                }
            }
            Packet::Disconnect(_) => return Ok(()),
            _ => return Ok(()),
        }
    }
    Ok(())
}
