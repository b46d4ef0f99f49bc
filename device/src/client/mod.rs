//! An async MQTT v5 client over a [`Connection`]: a background task owns the socket, answers
//! keep-alive and acknowledgements, and hands messages and disconnects to the application as
//! typed [`Event`]s.

//!
//! The handle and the types the application sees are here; the task is in `task` (its loop
//! and the application's commands), `incoming` (the broker's packets) and `reauth` (AUTH 0x19
//! and what follows).

mod incoming;
mod reauth;
mod task;

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::connection::{AuthError, ClientError, Connected, Connection};
use crate::mqtt::{Properties, PubResponse, Publish, QoS, ReasonCode, SubscriptionOptions};
use task::Task;

/// A message received on a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: QoS,
    pub retain: bool,
    /// User properties, in order.
    pub user_properties: Vec<(String, String)>,
    /// Every property as received (user properties included).
    pub properties: Properties,
}

/// How an outgoing PUBLISH is protected with the session keys (`devid-mac` or `devid-seal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protection {
    #[default]
    None,
    /// `devid-seq` and `devid-mac` user properties.
    Mac,
    /// `devid-seq`, `devid-seal` = 1 and an AES-256-GCM payload.
    Seal,
}

/// A message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: QoS,
    pub retain: bool,
    pub user_properties: Vec<(String, String)>,
    pub protection: Protection,
    /// MQTT v5 Correlation Data (a request's, which its response carries back).
    pub correlation_data: Option<Vec<u8>>,
}

impl OutgoingMessage {
    pub fn new(topic: impl Into<String>, payload: impl Into<Vec<u8>>, qos: QoS) -> Self {
        Self {
            topic: topic.into(),
            payload: payload.into(),
            qos,
            retain: false,
            user_properties: Vec::new(),
            protection: Protection::None,
            correlation_data: None,
        }
    }
}

/// The broker's answer to a QoS 1 PUBLISH, SUBSCRIBE or UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub reason: ReasonCode,
    pub reason_string: Option<String>,
}

impl From<&PubResponse> for Ack {
    /// The answer a PUBACK, a refusing PUBREC or a PUBCOMP gives.
    fn from(r: &PubResponse) -> Ack {
        Ack {
            reason: r.reason,
            reason_string: r.properties.reason_string().map(str::to_owned),
        }
    }
}

/// What happens on the connection that the application did not ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Message(Message),
    /// The broker sent DISCONNECT (e.g. 0x98 Administrative action when the device is revoked,
    /// 0x8E Session taken over). The connection is closed after this event.
    Disconnected {
        reason: ReasonCode,
        reason_string: Option<String>,
    },
    /// A re-authentication (asked for, or by the [`Rotation`] policy) succeeded: the new
    /// keys are in force from the next PUBLISH.
    Reauthenticated {
        session_id: String,
    },
    /// The connection ended without a DISCONNECT from the broker (end of stream, I/O error,
    /// keep-alive timeout, a bad packet). The text says why.
    Closed(String),
}

/// Session hooks: protection of outgoing PUBLISHes and re-authentication (AUTH 0x19), both of
/// which need the session keys the authentication produced.
pub trait SessionHook: Send + 'static {
    /// Adds `devid-seq` / `devid-mac` or seals the payload, as `protection` asks.
    fn protect(&mut self, publish: &mut Publish, protection: Protection) -> Result<(), AuthError>;
    /// The Authentication Method and Data of an AUTH 0x19.
    fn reauth_start(&mut self) -> Result<(String, Vec<u8>), AuthError>;
    /// Answers an AUTH 0x18 during re-authentication.
    fn reauth_challenge(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError>;
    /// Checks the AUTH 0x00 data and switches to the new keys (sequence restarts at 1);
    /// returns the new session id for the [`Event::Reauthenticated`] event.
    fn reauth_finish(&mut self, data: &[u8]) -> Result<String, AuthError>;
}

/// When the client rotates the session keys on its own (AUTH 0x19).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rotation {
    /// After this many protected PUBLISHes.
    pub after_messages: Option<u64>,
    /// After this long.
    pub after: Option<Duration>,
}

/// How the client task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSettings {
    /// Seconds; 0 disables keep-alive pings.
    pub keep_alive: u16,
    /// QoS 1 PUBLISHes in flight at most.
    pub receive_maximum: u16,
    pub rotation: Rotation,
}

impl ClientSettings {
    /// The keep-alive and Receive Maximum the broker's CONNACK put in force.
    pub fn from_connected<O>(c: &Connected<O>) -> Self {
        Self {
            keep_alive: c.keep_alive,
            receive_maximum: c.connack.properties.receive_maximum().unwrap_or(u16::MAX),
            rotation: Rotation::default(),
        }
    }
}

/// How long a re-authentication may take before the connection is given up.
const REAUTH_TIMEOUT: Duration = Duration::from_secs(10);

type Reply<T> = oneshot::Sender<Result<T, ClientError>>;

/// What the application asks of the task, with where the answer goes.
enum Command {
    Publish(OutgoingMessage, Reply<Option<Ack>>),
    Subscribe(Vec<(String, SubscriptionOptions)>, Reply<Vec<ReasonCode>>),
    Unsubscribe(Vec<String>, Reply<Vec<ReasonCode>>),
    Ping(Reply<Duration>),
    /// Publish a request, then hand the PUBLISH on the response topic that carries the same
    /// Correlation Data to the waiter instead of the event stream.
    Request {
        msg: OutgoingMessage,
        response_topic: String,
        published: Reply<Option<Ack>>,
        response: oneshot::Sender<Message>,
    },
    Reauthenticate(Reply<()>),
    Disconnect(ReasonCode, Reply<()>),
}

/// A connected client. Dropping it closes the command channel; the task then sends
/// DISCONNECT 0x00 and closes the connection.
pub struct Client {
    cmd: mpsc::Sender<Command>,
    events: mpsc::UnboundedReceiver<Event>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Client {
    /// Starts the background task on an already connected (CONNACK received) connection.
    /// `keep_alive` is the one in force (seconds, 0 = none). Without the CONNACK at hand this
    /// keeps at most 20 QoS 1 PUBLISHes in flight (Mosquitto's default Receive Maximum); use
    /// [`Client::start_with`] to honour what the broker announced.
    pub fn start(conn: Connection, keep_alive: u16, hook: Option<Box<dyn SessionHook>>) -> Self {
        Self::start_with(
            conn,
            ClientSettings {
                keep_alive,
                receive_maximum: 20,
                rotation: Rotation::default(),
            },
            hook,
        )
    }

    /// Starts the background task with explicit settings (see
    /// [`ClientSettings::from_connected`]).
    pub fn start_with(
        conn: Connection,
        settings: ClientSettings,
        hook: Option<Box<dyn SessionHook>>,
    ) -> Self {
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let task = Task::new(conn, settings, hook, cmd_rx, ev_tx);
        Self {
            cmd: cmd_tx,
            events: ev_rx,
            task: Some(tokio::spawn(task.run())),
        }
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, ClientError>>) -> Command,
    ) -> Result<T, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(make(tx))
            .await
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)?
    }

    /// Publishes; for QoS 1 waits for the PUBACK, for QoS 2 for the PUBREC and (unless the
    /// PUBREC refused it) the PUBCOMP, and returns the reason code (a refusal such as 0x87 Not
    /// authorized is an `Ack`, not an error). QoS 0 returns `None` once written.
    pub async fn publish(&self, msg: OutgoingMessage) -> Result<Option<Ack>, ClientError> {
        self.call(|tx| Command::Publish(msg, tx)).await
    }

    /// MQTT v5 request/response: publishes `msg` (which must carry Correlation Data) and waits
    /// for the PUBLISH on `response_topic` carrying the same Correlation Data (no subscription
    /// is made: the answer is addressed to this client, as `mosquitto_broker_publish` with a
    /// ClientID does). Other messages keep going to [`Client::next_event`]. Fails with the
    /// PUBLISH's own error, or `Closed` when the connection ends first; bound the wait with a
    /// timeout (`tokio::time::timeout`).
    pub async fn request(
        &self,
        msg: OutgoingMessage,
        response_topic: &str,
    ) -> Result<(Option<Ack>, Message), ClientError> {
        if msg.correlation_data.is_none() {
            return Err(ClientError::Protocol(
                "a request needs Correlation Data".into(),
            ));
        }
        let (resp_tx, resp_rx) = oneshot::channel();
        let response_topic = response_topic.to_string();
        let ack = self
            .call(|tx| Command::Request {
                msg,
                response_topic,
                published: tx,
                response: resp_tx,
            })
            .await?;
        let message = resp_rx.await.map_err(|_| ClientError::Closed)?;
        Ok((ack, message))
    }

    /// Subscribes and returns the SUBACK reason codes, one per filter.
    pub async fn subscribe(
        &self,
        filters: Vec<(String, SubscriptionOptions)>,
    ) -> Result<Vec<ReasonCode>, ClientError> {
        self.call(|tx| Command::Subscribe(filters, tx)).await
    }

    /// Unsubscribes and returns the UNSUBACK reason codes.
    pub async fn unsubscribe(&self, filters: Vec<String>) -> Result<Vec<ReasonCode>, ClientError> {
        self.call(|tx| Command::Unsubscribe(filters, tx)).await
    }

    /// Sends PINGREQ and returns the round-trip time to PINGRESP.
    pub async fn ping(&self) -> Result<Duration, ClientError> {
        self.call(Command::Ping).await
    }

    /// Re-authenticates on the live connection (AUTH 0x19), rotating the session keys. A
    /// refusal ends the connection (Mosquitto answers CONNACK 0x87 and closes). While it runs,
    /// other requests wait, so no PUBLISH protected with the old keys can cross the switch; it
    /// must finish within 10 s or the connection is closed.
    pub async fn reauthenticate(&self) -> Result<(), ClientError> {
        self.call(Command::Reauthenticate).await
    }

    /// The next event, or `None` once the connection is gone and every event was read.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// Sends DISCONNECT 0x00 and waits for the connection to close.
    pub async fn disconnect(mut self) -> Result<(), ClientError> {
        let r = self
            .call(|tx| Command::Disconnect(ReasonCode::SUCCESS, tx))
            .await;
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        r
    }
}
