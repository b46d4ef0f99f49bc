//! The client task: owns the connection, runs the loop (commands, incoming packets,
//! keep-alive, rotation timers) and carries out the application's commands.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{
    Ack, ClientSettings, Command, Event, Message, OutgoingMessage, Protection, Reply, Rotation,
    SessionHook, REAUTH_TIMEOUT,
};
use crate::connection::{ClientError, Connection};
use crate::mqtt::{Packet, Properties, Property, Publish, QoS, ReasonCode, Subscribe, Unsubscribe};

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

/// Who waits for the broker's answer to a packet id.
pub(super) enum Pending {
    Publish(Reply<Option<Ack>>),
    /// A QoS 2 PUBLISH: waiting for PUBREC (`released` false), then for PUBCOMP.
    Publish2 {
        tx: Reply<Option<Ack>>,
        released: bool,
    },
    Sub(Reply<Vec<ReasonCode>>),
}

/// The state of the task that owns the connection.
pub(super) struct Task {
    conn: Connection,
    cmd_rx: mpsc::Receiver<Command>,
    pub(super) events: mpsc::UnboundedSender<Event>,
    keep_alive: Duration,
    pub(super) hook: Option<Box<dyn SessionHook>>,
    next_id: u16,
    pub(super) pending_pub: HashMap<u16, Pending>,
    pub(super) pending_sub: HashMap<u16, Pending>,
    /// Outstanding PINGREQs in order: when sent, and who asked (None: keep-alive).
    pub(super) pings: VecDeque<(Instant, Option<Reply<Duration>>)>,
    last_sent: Instant,
    /// Who waits for the running re-authentication (None: the rotation policy started it).
    pub(super) reauth: Option<Reply<()>>,
    pub(super) reauth_running: bool,
    pub(super) reauth_started: Instant,
    rotation: Rotation,
    /// QoS 1 PUBLISHes the broker accepts in flight (its Receive Maximum).
    receive_maximum: usize,
    /// Protected PUBLISHes since the last (re-)authentication.
    pub(super) since_rotation: u64,
    pub(super) rotated_at: Instant,
    /// Requests waiting for their response: (response topic, Correlation Data).
    pub(super) waiters: Vec<(String, Vec<u8>, oneshot::Sender<Message>)>,
}

/// How the task loop ends.
enum End {
    /// The application asked; reply after the DISCONNECT went out.
    Requested(ReasonCode, Option<Reply<()>>),
    Event(Event),
}

impl Task {
    pub(super) fn new(
        conn: Connection,
        settings: ClientSettings,
        hook: Option<Box<dyn SessionHook>>,
        cmd_rx: mpsc::Receiver<Command>,
        events: mpsc::UnboundedSender<Event>,
    ) -> Self {
        let ClientSettings {
            keep_alive,
            receive_maximum,
            rotation,
        } = settings;
        Task {
            conn,
            cmd_rx,
            events,
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
            waiters: Vec::new(),
        }
    }

    pub(super) async fn run(mut self) {
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

    pub(super) async fn send(&mut self, p: &Packet) -> Result<(), ClientError> {
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

    /// Handles one command; an error here is a broken connection.
    async fn command(&mut self, c: Command) -> Result<(), ClientError> {
        match c {
            Command::Publish(m, tx) => self.publish(m, tx).await?,
            Command::Subscribe(filters, tx) => {
                self.request(tx, |packet_id| {
                    Packet::Subscribe(Subscribe {
                        packet_id,
                        properties: Properties::new(),
                        filters,
                    })
                })
                .await?
            }
            Command::Unsubscribe(filters, tx) => {
                self.request(tx, |packet_id| {
                    Packet::Unsubscribe(Unsubscribe {
                        packet_id,
                        properties: Properties::new(),
                        filters,
                    })
                })
                .await?
            }
            Command::Ping(tx) => {
                self.send(&Packet::PingReq).await?;
                self.pings.push_back((Instant::now(), Some(tx)));
            }
            Command::Reauthenticate(tx) => self.start_reauth(Some(tx)).await?,
            Command::Request {
                msg,
                response_topic,
                published,
                response,
            } => {
                // Waiters whose caller gave up are forgotten here.
                self.waiters.retain(|(_, _, w)| !w.is_closed());
                let correlation = msg.correlation_data.clone().unwrap_or_default();
                self.waiters.push((response_topic, correlation, response));
                self.publish(msg, published).await?
            }
            Command::Disconnect(..) => {
                // Handled by the loop.
            }
        }
        Ok(())
    }

    /// Sends a SUBSCRIBE or UNSUBSCRIBE under a fresh packet id; `tx` waits for its SUBACK or
    /// UNSUBACK.
    async fn request(
        &mut self,
        tx: Reply<Vec<ReasonCode>>,
        packet: impl FnOnce(u16) -> Packet,
    ) -> Result<(), ClientError> {
        let id = self.next_packet_id();
        if let Err(e) = self.send(&packet(id)).await {
            return reply_or_fail(tx, e);
        }
        self.pending_sub.insert(id, Pending::Sub(tx));
        Ok(())
    }

    /// Sends an application's PUBLISH (protected by the session hook when asked), and starts a
    /// rotation when the policy says so.
    async fn publish(
        &mut self,
        m: OutgoingMessage,
        tx: Reply<Option<Ack>>,
    ) -> Result<(), ClientError> {
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
                .correlation_data
                .map(Property::CorrelationData)
                .into_iter()
                .chain(
                    m.user_properties
                        .into_iter()
                        .map(|(k, v)| Property::UserProperty(k, v)),
                )
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
        Ok(())
    }
}
