//! The broker's packets as the task receives them: messages to the application (acknowledged),
//! acknowledgements to whoever waits for them, DISCONNECT as an event.

use super::task::{Pending, Task};
use super::{Ack, Event, Message};
use crate::connection::ClientError;
use crate::mqtt::{Packet, Properties, Property, PubResponse, QoS, ReasonCode, SubAck};

impl Task {
    /// Handles one incoming packet; `Err` ends the connection with that event.
    pub(super) async fn incoming(&mut self, p: Packet) -> Result<(), Event> {
        let closed = |e: ClientError| Event::Closed(e.to_string());
        match p {
            Packet::Publish(p) => {
                let ack = match (p.qos, p.packet_id) {
                    (QoS::AtLeastOnce, Some(id)) => Some(Packet::PubAck(success(id))),
                    (QoS::ExactlyOnce, Some(id)) => Some(Packet::PubRec(success(id))),
                    _ => None,
                };
                let user_properties = p
                    .properties
                    .user_properties()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                let message = Message {
                    topic: p.topic,
                    payload: p.payload,
                    qos: p.qos,
                    retain: p.retain,
                    user_properties,
                    properties: p.properties,
                };
                match self.take_waiter(&message) {
                    Some(w) => drop(w.send(message)),
                    None => drop(self.events.send(Event::Message(message))),
                }
                if let Some(a) = ack {
                    self.send(&a).await.map_err(closed)?;
                }
            }
            Packet::PubRel(r) => {
                self.send(&Packet::PubComp(success(r.packet_id)))
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
                        self.send(&Packet::PubRel(success(r.packet_id)))
                            .await
                            .map_err(closed)?;
                    } else {
                        let _ = tx.send(Ok(Some(Ack::from(&r))));
                    }
                }
                _ => return Err(unknown_id("PUBREC", r.packet_id)),
            },
            Packet::PubComp(r) => match self.pending_pub.remove(&r.packet_id) {
                Some(Pending::Publish2 { tx, released: true }) => {
                    let _ = tx.send(Ok(Some(Ack::from(&r))));
                }
                _ => return Err(unknown_id("PUBCOMP", r.packet_id)),
            },
            Packet::PubAck(r) => match self.pending_pub.remove(&r.packet_id) {
                Some(Pending::Publish(tx)) => {
                    let _ = tx.send(Ok(Some(Ack::from(&r))));
                }
                _ => return Err(unknown_id("PUBACK", r.packet_id)),
            },
            Packet::SubAck(s) | Packet::UnsubAck(s) => {
                let SubAck {
                    packet_id, reasons, ..
                } = s;
                match self.pending_sub.remove(&packet_id) {
                    Some(Pending::Sub(tx)) => drop(tx.send(Ok(reasons))),
                    _ => return Err(unknown_id("acknowledgement", packet_id)),
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
            Packet::Disconnect(d) => return Err(disconnected(d.reason, &d.properties)),
            Packet::Auth(a) => self.incoming_auth(a).await?,
            // Mosquitto 2.0.11 answers a failed re-authentication with CONNACK 0x87.
            Packet::ConnAck(c) if self.reauth_running => {
                return Err(disconnected(c.reason, &c.properties))
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
}

impl Task {
    /// The request waiting for this message (same response topic and Correlation Data), if any.
    fn take_waiter(&mut self, m: &Message) -> Option<tokio::sync::oneshot::Sender<Message>> {
        let correlation = m.properties.iter().find_map(|p| match p {
            Property::CorrelationData(c) => Some(c.as_slice()),
            _ => None,
        })?;
        let i = self
            .waiters
            .iter()
            .position(|(t, c, _)| *t == m.topic && c.as_slice() == correlation)?;
        Some(self.waiters.swap_remove(i).2)
    }
}

/// The positive answer to a PUBLISH, PUBREC or PUBREL.
fn success(packet_id: u16) -> PubResponse {
    PubResponse {
        packet_id,
        reason: ReasonCode::SUCCESS,
        properties: Properties::new(),
    }
}

/// An acknowledgement nobody waits for: the broker and we disagree, the connection ends.
fn unknown_id(what: &str, packet_id: u16) -> Event {
    Event::Closed(format!("{what} for unknown packet id {packet_id}"))
}

/// The broker ended the connection with this reason.
fn disconnected(reason: ReasonCode, properties: &Properties) -> Event {
    Event::Disconnected {
        reason,
        reason_string: properties.reason_string().map(str::to_owned),
    }
}
