//! An async MQTT v5 client over a [`Connection`]: a background task owns the socket, answers
//! keep-alive and acknowledgements, and hands messages and disconnects to the application as
//! typed [`Event`]s.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::connection::{AuthError, ClientError, Connected, Connection};
use crate::mqtt::{
    Packet, Properties, Property, PubResponse, Publish, QoS, ReasonCode, ReasonOnly, SubAck,
    Subscribe, SubscriptionOptions, Unsubscribe,
};

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

enum Command {
    Publish(
        OutgoingMessage,
        oneshot::Sender<Result<Option<Ack>, ClientError>>,
    ),
    Subscribe(
        Vec<(String, SubscriptionOptions)>,
        oneshot::Sender<Result<Vec<ReasonCode>, ClientError>>,
    ),
    Unsubscribe(
        Vec<String>,
        oneshot::Sender<Result<Vec<ReasonCode>, ClientError>>,
    ),
    Ping(oneshot::Sender<Result<Duration, ClientError>>),
    Reauthenticate(oneshot::Sender<Result<(), ClientError>>),
    Disconnect(ReasonCode, oneshot::Sender<Result<(), ClientError>>),
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
        let ClientSettings {
            keep_alive,
            receive_maximum,
            rotation,
        } = settings;
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let task = Task {
            conn,
            cmd_rx,
            events: ev_tx,
            keep_alive: Duration::from_secs(u64::from(keep_alive)),
            hook,
            next_id: 0,
            pending_pub: HashMap::new(),
            pending_sub: HashMap::new(),
            pings: VecDeque::new(),
            last_sent: Instant::now(),
            reauth: None,
            reauth_running: false,
            reauth_started: Instant::now(),
            rotation,
            receive_maximum: usize::from(receive_maximum.max(1)),
            since_rotation: 0,
            rotated_at: Instant::now(),
        };
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

/// After a failed send: an encoding error goes to the caller (nothing was written); anything
/// else breaks the connection.
fn reply_or_fail<T>(tx: Reply<T>, e: ClientError) -> Result<(), ClientError> {
    match e {
        ClientError::Encode(_) => {
            let _ = tx.send(Err(e));
            Ok(())
        }
        other => Err(other),
    }
}

enum Pending {
    Publish(oneshot::Sender<Result<Option<Ack>, ClientError>>),
    /// A QoS 2 PUBLISH: waiting for PUBREC (`released` false), then for PUBCOMP.
    Publish2 {
        tx: oneshot::Sender<Result<Option<Ack>, ClientError>>,
        released: bool,
    },
    Sub(oneshot::Sender<Result<Vec<ReasonCode>, ClientError>>),
}

struct Task {
    conn: Connection,
    cmd_rx: mpsc::Receiver<Command>,
    events: mpsc::UnboundedSender<Event>,
    keep_alive: Duration,
    hook: Option<Box<dyn SessionHook>>,
    next_id: u16,
    pending_pub: HashMap<u16, Pending>,
    pending_sub: HashMap<u16, Pending>,
    /// Outstanding PINGREQs in order: when sent, and who asked (None: keep-alive).
    pings: VecDeque<(Instant, Option<Reply<Duration>>)>,
    last_sent: Instant,
    /// Who waits for the running re-authentication (None: the rotation policy started it).
    reauth: Option<Reply<()>>,
    reauth_running: bool,
    reauth_started: Instant,
    rotation: Rotation,
    /// QoS 1 PUBLISHes the broker accepts in flight (its Receive Maximum).
    receive_maximum: usize,
    /// Protected PUBLISHes since the last (re-)authentication.
    since_rotation: u64,
    rotated_at: Instant,
}

/// How the task loop ends.
enum End {
    /// The application asked; reply after the DISCONNECT went out.
    Requested(ReasonCode, Option<Reply<()>>),
    Event(Event),
}

impl Task {
    async fn run(mut self) {
        let end = self.run_loop().await;
        let event = match end {
            End::Requested(reason, reply) => {
                let r = self.conn.disconnect(reason).await;
                if let Some(tx) = reply {
                    let _ = tx.send(r);
                }
                None
            }
            End::Event(ev) => Some(ev),
        };
        // Fail whatever is still waiting.
        for (_, p) in self.pending_pub.drain().chain(self.pending_sub.drain()) {
            match p {
                Pending::Publish(tx) | Pending::Publish2 { tx, .. } => {
                    drop(tx.send(Err(ClientError::Closed)))
                }
                Pending::Sub(tx) => drop(tx.send(Err(ClientError::Closed))),
            }
        }
        if let Some(ev) = event {
            if let (true, Some(tx)) = (self.reauth_running, self.reauth.take()) {
                let err = match &ev {
                    Event::Disconnected {
                        reason,
                        reason_string,
                    } => ClientError::Disconnected {
                        reason: *reason,
                        reason_string: reason_string.clone(),
                    },
                    _ => ClientError::Closed,
                };
                let _ = tx.send(Err(err));
            }
            let _ = self.events.send(ev);
        }
    }

    fn next_packet_id(&mut self) -> u16 {
        loop {
            self.next_id = self.next_id.wrapping_add(1);
            if self.next_id != 0
                && !self.pending_pub.contains_key(&self.next_id)
                && !self.pending_sub.contains_key(&self.next_id)
            {
                return self.next_id;
            }
        }
    }

    async fn send(&mut self, p: &Packet) -> Result<(), ClientError> {
        self.conn.send(p).await?;
        self.last_sent = Instant::now();
        Ok(())
    }

    async fn run_loop(&mut self) -> End {
        loop {
            let ka = self.keep_alive;
            let ping_due = if let Some((sent, _)) = self.pings.front() {
                // A PINGRESP is overdue after one keep-alive period (at least 5 s).
                *sent + ka.max(Duration::from_secs(5))
            } else {
                self.last_sent + ka
            };
            let ka_active = !ka.is_zero() || !self.pings.is_empty();
            let rotate_at = self.rotation.after.map(|d| self.rotated_at + d);
            let rotate_active = rotate_at.is_some() && self.hook.is_some() && !self.reauth_running;
            let rotate_at = rotate_at.unwrap_or_else(Instant::now);
            tokio::select! {
                _ = tokio::time::sleep_until(rotate_at), if rotate_active => {
                    if let Err(e) = self.start_reauth(None).await {
                        return End::Event(Event::Closed(e.to_string()));
                    }
                }
                r = self.conn.recv() => {
                    match r {
                        Ok(Some(p)) => {
                            if let Err(e) = self.incoming(p).await {
                                return End::Event(e);
                            }
                        }
                        Ok(None) => return End::Event(Event::Closed("the broker closed the connection".into())),
                        Err(e) => return End::Event(Event::Closed(e.to_string())),
                    }
                }
                // At the broker's Receive Maximum, take no command until a PUBACK frees a slot.
                // During a re-authentication take no command either: a PUBLISH protected with
                // the old keys could reach the broker after it switched to the new ones.
                _ = tokio::time::sleep_until(self.reauth_started + REAUTH_TIMEOUT), if self.reauth_running => {
                    return End::Event(Event::Closed("re-authentication timed out".into()));
                }
                c = self.cmd_rx.recv(), if self.pending_pub.len() < self.receive_maximum && !self.reauth_running => {
                    match c {
                        None => return End::Requested(ReasonCode::SUCCESS, None),
                        Some(Command::Disconnect(reason, tx)) => return End::Requested(reason, Some(tx)),
                        Some(c) => {
                            if let Err(e) = self.command(c).await {
                                return End::Event(Event::Closed(e.to_string()));
                            }
                        }
                    }
                }
                _ = tokio::time::sleep_until(ping_due), if ka_active => {
                    if !self.pings.is_empty() {
                        return End::Event(Event::Closed("keep-alive timeout: no PINGRESP".into()));
                    }
                    if let Err(e) = self.send(&Packet::PingReq).await {
                        return End::Event(Event::Closed(e.to_string()));
                    }
                    self.pings.push_back((Instant::now(), None));
                }
            }
        }
    }

    /// Sends AUTH 0x19. Local refusals go to `reply`; an `Err` is a broken connection.
    async fn start_reauth(&mut self, reply: Option<Reply<()>>) -> Result<(), ClientError> {
        let refuse = |reply: Option<Reply<()>>, e: ClientError| {
            if let Some(tx) = reply {
                let _ = tx.send(Err(e));
            }
            Ok(())
        };
        if self.reauth_running {
            return refuse(
                reply,
                ClientError::Protocol("a re-authentication is already running".into()),
            );
        }
        let Some(h) = self.hook.as_mut() else {
            return refuse(
                reply,
                ClientError::Protocol("re-authentication needs an authenticated session".into()),
            );
        };
        let (method, data) = match h.reauth_start() {
            Ok(x) => x,
            Err(e) => return refuse(reply, e.into()),
        };
        self.send(&Packet::Auth(ReasonOnly {
            reason: ReasonCode::RE_AUTHENTICATE,
            properties: Properties::new()
                .with(Property::AuthenticationMethod(method))
                .with(Property::AuthenticationData(data)),
        }))
        .await?;
        self.reauth = reply;
        self.reauth_running = true;
        self.reauth_started = Instant::now();
        Ok(())
    }

    /// Handles one command; an error here is a broken connection.
    async fn command(&mut self, c: Command) -> Result<(), ClientError> {
        match c {
            Command::Publish(m, tx) => {
                let packet_id = match m.qos {
                    QoS::AtMostOnce => None,
                    QoS::AtLeastOnce | QoS::ExactlyOnce => Some(self.next_packet_id()),
                };
                let mut p = Publish {
                    dup: false,
                    qos: m.qos,
                    retain: m.retain,
                    topic: m.topic,
                    packet_id,
                    properties: m
                        .user_properties
                        .into_iter()
                        .map(|(k, v)| Property::UserProperty(k, v))
                        .collect(),
                    payload: m.payload,
                };
                if m.protection != Protection::None {
                    let r = match self.hook.as_mut() {
                        Some(h) => h.protect(&mut p, m.protection).map_err(ClientError::Auth),
                        None => Err(ClientError::Protocol(
                            "message protection needs an authenticated session".into(),
                        )),
                    };
                    if let Err(e) = r {
                        let _ = tx.send(Err(e));
                        return Ok(());
                    }
                }
                // An encoding error (bad topic, too large) is the caller's, not the link's:
                // nothing was written, the connection goes on.
                if let Err(e) = self.send(&Packet::Publish(p)).await {
                    return reply_or_fail(tx, e);
                }
                if m.protection != Protection::None {
                    self.since_rotation += 1;
                    if self
                        .rotation
                        .after_messages
                        .is_some_and(|n| self.since_rotation >= n)
                        && !self.reauth_running
                    {
                        self.start_reauth(None).await?;
                    }
                }
                match (packet_id, m.qos) {
                    (None, _) => drop(tx.send(Ok(None))),
                    (Some(id), QoS::ExactlyOnce) => {
                        self.pending_pub.insert(
                            id,
                            Pending::Publish2 {
                                tx,
                                released: false,
                            },
                        );
                    }
                    (Some(id), _) => {
                        self.pending_pub.insert(id, Pending::Publish(tx));
                    }
                }
            }
            Command::Subscribe(filters, tx) => {
                let id = self.next_packet_id();
                let p = Packet::Subscribe(Subscribe {
                    packet_id: id,
                    properties: Properties::new(),
                    filters,
                });
                if let Err(e) = self.send(&p).await {
                    return reply_or_fail(tx, e);
                }
                self.pending_sub.insert(id, Pending::Sub(tx));
            }
            Command::Unsubscribe(filters, tx) => {
                let id = self.next_packet_id();
                let p = Packet::Unsubscribe(Unsubscribe {
                    packet_id: id,
                    properties: Properties::new(),
                    filters,
                });
                if let Err(e) = self.send(&p).await {
                    return reply_or_fail(tx, e);
                }
                self.pending_sub.insert(id, Pending::Sub(tx));
            }
            Command::Ping(tx) => {
                self.send(&Packet::PingReq).await?;
                self.pings.push_back((Instant::now(), Some(tx)));
            }
            Command::Reauthenticate(tx) => self.start_reauth(Some(tx)).await?,
            Command::Disconnect(..) => {
                // Handled by the loop.
            }
        }
        Ok(())
    }

    /// Handles one incoming packet; `Err` ends the connection with that event.
    async fn incoming(&mut self, p: Packet) -> Result<(), Event> {
        let closed = |e: ClientError| Event::Closed(e.to_string());
        match p {
            Packet::Publish(p) => {
                let ack = match (p.qos, p.packet_id) {
                    (QoS::AtLeastOnce, Some(id)) => Some(Packet::PubAck(PubResponse {
                        packet_id: id,
                        reason: ReasonCode::SUCCESS,
                        properties: Properties::new(),
                    })),
                    (QoS::ExactlyOnce, Some(id)) => Some(Packet::PubRec(PubResponse {
                        packet_id: id,
                        reason: ReasonCode::SUCCESS,
                        properties: Properties::new(),
                    })),
                    _ => None,
                };
                let user_properties = p
                    .properties
                    .user_properties()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                let _ = self.events.send(Event::Message(Message {
                    topic: p.topic,
                    payload: p.payload,
                    qos: p.qos,
                    retain: p.retain,
                    user_properties,
                    properties: p.properties,
                }));
                if let Some(a) = ack {
                    self.send(&a).await.map_err(closed)?;
                }
            }
            Packet::PubRel(r) => {
                self.send(&Packet::PubComp(PubResponse {
                    packet_id: r.packet_id,
                    reason: ReasonCode::SUCCESS,
                    properties: Properties::new(),
                }))
                .await
                .map_err(closed)?;
            }
            // QoS 2, first half: a refusal (0x80 and above) ends the exchange; otherwise
            // release the message and wait for PUBCOMP.
            Packet::PubRec(r) => match self.pending_pub.remove(&r.packet_id) {
                Some(Pending::Publish2 {
                    tx,
                    released: false,
                }) => {
                    if r.reason.is_success() {
                        self.pending_pub
                            .insert(r.packet_id, Pending::Publish2 { tx, released: true });
                        self.send(&Packet::PubRel(PubResponse {
                            packet_id: r.packet_id,
                            reason: ReasonCode::SUCCESS,
                            properties: Properties::new(),
                        }))
                        .await
                        .map_err(closed)?;
                    } else {
                        let _ = tx.send(Ok(Some(Ack::from(&r))));
                    }
                }
                _ => {
                    return Err(Event::Closed(format!(
                        "PUBREC for unknown packet id {}",
                        r.packet_id
                    )))
                }
            },
            Packet::PubComp(r) => match self.pending_pub.remove(&r.packet_id) {
                Some(Pending::Publish2 { tx, released: true }) => {
                    let _ = tx.send(Ok(Some(Ack::from(&r))));
                }
                _ => {
                    return Err(Event::Closed(format!(
                        "PUBCOMP for unknown packet id {}",
                        r.packet_id
                    )))
                }
            },
            Packet::PubAck(r) => match self.pending_pub.remove(&r.packet_id) {
                Some(Pending::Publish(tx)) => {
                    let _ = tx.send(Ok(Some(Ack::from(&r))));
                }
                _ => {
                    return Err(Event::Closed(format!(
                        "PUBACK for unknown packet id {}",
                        r.packet_id
                    )))
                }
            },
            Packet::SubAck(s) | Packet::UnsubAck(s) => {
                let SubAck {
                    packet_id, reasons, ..
                } = s;
                match self.pending_sub.remove(&packet_id) {
                    Some(Pending::Sub(tx)) => drop(tx.send(Ok(reasons))),
                    _ => {
                        return Err(Event::Closed(format!(
                            "acknowledgement for unknown packet id {packet_id}"
                        )))
                    }
                }
            }
            Packet::PingResp => match self.pings.pop_front() {
                Some((sent, tx)) => {
                    if let Some(tx) = tx {
                        let _ = tx.send(Ok(sent.elapsed()));
                    }
                }
                None => return Err(Event::Closed("unexpected PINGRESP".into())),
            },
            Packet::Disconnect(d) => {
                return Err(Event::Disconnected {
                    reason: d.reason,
                    reason_string: d.properties.reason_string().map(str::to_owned),
                })
            }
            Packet::Auth(a) => self.incoming_auth(a).await?,
            // Mosquitto 2.0.11 answers a failed re-authentication with CONNACK 0x87.
            Packet::ConnAck(c) if self.reauth_running => {
                return Err(Event::Disconnected {
                    reason: c.reason,
                    reason_string: c.properties.reason_string().map(str::to_owned),
                })
            }
            other => {
                return Err(Event::Closed(format!(
                    "unexpected {:?} from the broker",
                    other.packet_type()
                )))
            }
        }
        Ok(())
    }

    async fn incoming_auth(&mut self, a: ReasonOnly) -> Result<(), Event> {
        let (true, Some(hook)) = (self.reauth_running, self.hook.as_mut()) else {
            return Err(Event::Closed("AUTH outside a re-authentication".into()));
        };
        let data = a.properties.authentication_data().unwrap_or(&[]).to_vec();
        let failed = |this: &mut Self, e: ClientError| {
            let msg = e.to_string();
            if let Some(tx) = this.reauth.take() {
                let _ = tx.send(Err(e));
            }
            this.reauth_running = false;
            Event::Closed(format!("re-authentication failed: {msg}"))
        };
        match a.reason {
            ReasonCode::CONTINUE_AUTHENTICATION => match hook.reauth_challenge(&data) {
                Ok(reply) => {
                    let method = a
                        .properties
                        .authentication_method()
                        .unwrap_or("")
                        .to_owned();
                    self.send(&Packet::Auth(ReasonOnly {
                        reason: ReasonCode::CONTINUE_AUTHENTICATION,
                        properties: Properties::new()
                            .with(Property::AuthenticationMethod(method))
                            .with(Property::AuthenticationData(reply)),
                    }))
                    .await
                    .map_err(|e| Event::Closed(e.to_string()))?;
                }
                Err(e) => return Err(failed(self, e.into())),
            },
            ReasonCode::SUCCESS => match hook.reauth_finish(&data) {
                Ok(session_id) => {
                    self.reauth_running = false;
                    self.since_rotation = 0;
                    self.rotated_at = Instant::now();
                    if let Some(tx) = self.reauth.take() {
                        let _ = tx.send(Ok(()));
                    }
                    let _ = self.events.send(Event::Reauthenticated { session_id });
                }
                Err(e) => return Err(failed(self, e.into())),
            },
            _ => {
                return Err(failed(
                    self,
                    ClientError::Protocol("AUTH 0x19 from the broker".into()),
                ))
            }
        }
        Ok(())
    }
}
