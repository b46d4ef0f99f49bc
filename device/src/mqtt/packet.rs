//! The MQTT v5 control packets a client needs, each with one encoder and one decoder.

use super::codec::{
    put_binary, put_u16, put_utf8, put_vbi, read_vbi, EncodeError, Reader, VbiRead,
};
use super::properties::{Properties, PropertyContext};
use super::{DecodeError, ReasonCode};

/// Control packet types (section 2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    Connect = 1,
    ConnAck = 2,
    Publish = 3,
    PubAck = 4,
    PubRec = 5,
    PubRel = 6,
    PubComp = 7,
    Subscribe = 8,
    SubAck = 9,
    Unsubscribe = 10,
    UnsubAck = 11,
    PingReq = 12,
    PingResp = 13,
    Disconnect = 14,
    Auth = 15,
}

impl PacketType {
    fn from_nibble(n: u8) -> Option<Self> {
        use PacketType::*;
        Some(match n {
            1 => Connect,
            2 => ConnAck,
            3 => Publish,
            4 => PubAck,
            5 => PubRec,
            6 => PubRel,
            7 => PubComp,
            8 => Subscribe,
            9 => SubAck,
            10 => Unsubscribe,
            11 => UnsubAck,
            12 => PingReq,
            13 => PingResp,
            14 => Disconnect,
            15 => Auth,
            _ => return None,
        })
    }

    /// The fixed-header flags every packet but PUBLISH must carry.
    fn required_flags(self) -> u8 {
        match self {
            PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => 0b0010,
            _ => 0,
        }
    }
}

/// Quality of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum QoS {
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// CONNECT (3.1). Will messages are supported for completeness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub client_id: String,
    pub clean_start: bool,
    pub keep_alive: u16,
    pub properties: Properties,
    pub will: Option<Will>,
    pub username: Option<String>,
    pub password: Option<Vec<u8>>,
}

/// The will message of a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    pub qos: QoS,
    pub retain: bool,
    pub properties: Properties,
    pub topic: String,
    pub payload: Vec<u8>,
}

/// CONNACK (3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    pub session_present: bool,
    pub reason: ReasonCode,
    pub properties: Properties,
}

/// PUBLISH (3.3). `packet_id` is present exactly when `qos` is above 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    pub topic: String,
    pub packet_id: Option<u16>,
    pub properties: Properties,
    pub payload: Vec<u8>,
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP (3.4-3.7) share one layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubResponse {
    pub packet_id: u16,
    pub reason: ReasonCode,
    pub properties: Properties,
}

/// Subscription options byte (3.8.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionOptions {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    /// 0, 1 or 2.
    pub retain_handling: u8,
}

impl SubscriptionOptions {
    pub fn qos(qos: QoS) -> Self {
        Self {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
        }
    }
}

/// SUBSCRIBE (3.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub packet_id: u16,
    pub properties: Properties,
    pub filters: Vec<(String, SubscriptionOptions)>,
}

/// SUBACK (3.9), and UNSUBACK (3.11) which has the same layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    pub packet_id: u16,
    pub properties: Properties,
    pub reasons: Vec<ReasonCode>,
}

/// UNSUBSCRIBE (3.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub packet_id: u16,
    pub properties: Properties,
    pub filters: Vec<String>,
}

/// DISCONNECT (3.14) and AUTH (3.15) share a layout: a reason code and properties, both
/// omitted on the wire when the reason is 0x00 and there are no properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReasonOnly {
    pub reason: ReasonCode,
    pub properties: Properties,
}

/// Any control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect(Connect),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(PubResponse),
    PubRec(PubResponse),
    PubRel(PubResponse),
    PubComp(PubResponse),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(SubAck),
    PingReq,
    PingResp,
    Disconnect(ReasonOnly),
    Auth(ReasonOnly),
}

/// Result of [`decode`] when a whole packet was available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub packet: Packet,
    /// Bytes consumed from the start of the buffer.
    pub len: usize,
}

/// Topic name check for PUBLISH (4.7): no wildcards.
pub fn valid_topic_name(t: &str) -> bool {
    !t.contains(['+', '#'])
}

/// Topic filter check for SUBSCRIBE (4.7.1): non-empty, `#` only as the whole last level, `+`
/// only as a whole level.
pub fn valid_topic_filter(f: &str) -> bool {
    if f.is_empty() {
        return false;
    }
    let levels: Vec<&str> = f.split('/').collect();
    let last = levels.len() - 1;
    levels
        .iter()
        .enumerate()
        .all(|(i, l)| (*l == "#" && i == last) || *l == "+" || !l.contains(['+', '#']))
}

fn check_packet_id(id: u16) -> Result<u16, DecodeError> {
    if id == 0 {
        return Err(DecodeError::Protocol("packet identifier 0"));
    }
    Ok(id)
}

fn reason_allowed(ty: PacketType, r: u8) -> bool {
    match ty {
        PacketType::ConnAck => r == 0 || r >= 0x80,
        PacketType::PubAck | PacketType::PubRec => {
            matches!(
                r,
                0x00 | 0x10 | 0x80 | 0x83 | 0x87 | 0x90 | 0x91 | 0x97 | 0x99
            )
        }
        PacketType::PubRel | PacketType::PubComp => matches!(r, 0x00 | 0x92),
        PacketType::SubAck => r <= 2 || r >= 0x80,
        PacketType::UnsubAck => r == 0 || r == 0x11 || r >= 0x80,
        PacketType::Disconnect => r == 0 || r == 0x04 || r >= 0x80,
        PacketType::Auth => matches!(r, 0x00 | 0x18 | 0x19),
        _ => false,
    }
}

fn read_reason(r: &mut Reader<'_>, ty: PacketType) -> Result<ReasonCode, DecodeError> {
    let v = r.u8()?;
    if !reason_allowed(ty, v) {
        return Err(DecodeError::InvalidReasonCode {
            packet: ty,
            code: v,
        });
    }
    Ok(ReasonCode(v))
}

impl Packet {
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }

    /// Appends the encoded packet to `out`. On error nothing is appended.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.encode_limited(out, super::codec::VBI_MAX + 5)
    }

    /// Appends the encoded packet to `out`, failing if it would exceed `max_packet_size`
    /// bytes in total (the peer's Maximum Packet Size). On error nothing is appended.
    pub fn encode_limited(
        &self,
        out: &mut Vec<u8>,
        max_packet_size: u32,
    ) -> Result<(), EncodeError> {
        let ty = self.packet_type();
        let mut flags = ty.required_flags();
        let mut body = Vec::new();
        self.encode_body(&mut body, &mut flags)?;
        let mut header = Vec::with_capacity(5);
        header.push(((ty as u8) << 4) | flags);
        put_vbi(&mut header, body.len())?;
        let size = header.len() + body.len();
        if size > max_packet_size as usize {
            return Err(EncodeError::PacketTooLarge {
                size,
                max: max_packet_size,
            });
        }
        out.reserve(size);
        out.extend_from_slice(&header);
        out.extend_from_slice(&body);
        Ok(())
    }

    /// Convenience: the encoded packet as a new vector.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }

    fn encode_body(&self, out: &mut Vec<u8>, flags: &mut u8) -> Result<(), EncodeError> {
        match self {
            Packet::Connect(c) => {
                put_utf8(out, "MQTT", "protocol name")?;
                out.push(5);
                let mut f = 0u8;
                if c.clean_start {
                    f |= 0x02;
                }
                if let Some(w) = &c.will {
                    f |= 0x04 | ((w.qos as u8) << 3);
                    if w.retain {
                        f |= 0x20;
                    }
                }
                if c.password.is_some() {
                    f |= 0x40;
                }
                if c.username.is_some() {
                    f |= 0x80;
                }
                out.push(f);
                put_u16(out, c.keep_alive);
                c.properties.encode(out)?;
                put_utf8(out, &c.client_id, "client id")?;
                if let Some(w) = &c.will {
                    w.properties.encode(out)?;
                    if !valid_topic_name(&w.topic) || w.topic.is_empty() {
                        return Err(EncodeError::Invalid("will topic"));
                    }
                    put_utf8(out, &w.topic, "will topic")?;
                    put_binary(out, &w.payload, "will payload")?;
                }
                if let Some(u) = &c.username {
                    put_utf8(out, u, "username")?;
                }
                if let Some(p) = &c.password {
                    put_binary(out, p, "password")?;
                }
            }
            Packet::ConnAck(c) => {
                out.push(u8::from(c.session_present));
                if !reason_allowed(PacketType::ConnAck, c.reason.0) {
                    return Err(EncodeError::Invalid("CONNACK reason code"));
                }
                out.push(c.reason.0);
                c.properties.encode(out)?;
            }
            Packet::Publish(p) => {
                *flags = ((p.qos as u8) << 1) | u8::from(p.retain) | (u8::from(p.dup) << 3);
                if p.dup && p.qos == QoS::AtMostOnce {
                    return Err(EncodeError::Invalid("DUP set on a QoS 0 PUBLISH"));
                }
                if !valid_topic_name(&p.topic)
                    || (p.topic.is_empty() && p.properties.topic_alias().is_none())
                {
                    return Err(EncodeError::Invalid("PUBLISH topic name"));
                }
                put_utf8(out, &p.topic, "topic")?;
                match (p.qos, p.packet_id) {
                    (QoS::AtMostOnce, None) => {}
                    (QoS::AtLeastOnce | QoS::ExactlyOnce, Some(id)) if id != 0 => put_u16(out, id),
                    _ => {
                        return Err(EncodeError::Invalid(
                            "PUBLISH packet id does not fit its QoS",
                        ))
                    }
                }
                p.properties.encode(out)?;
                out.extend_from_slice(&p.payload);
            }
            Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
                if r.packet_id == 0 {
                    return Err(EncodeError::Invalid("packet identifier 0"));
                }
                if !reason_allowed(self.packet_type(), r.reason.0) {
                    return Err(EncodeError::Invalid(
                        "reason code not allowed in this packet",
                    ));
                }
                put_u16(out, r.packet_id);
                // Shortest form: reason and properties may be omitted (3.4.2.1).
                if r.reason != ReasonCode::SUCCESS || !r.properties.is_empty() {
                    out.push(r.reason.0);
                    if !r.properties.is_empty() {
                        r.properties.encode(out)?;
                    }
                }
            }
            Packet::Subscribe(s) => {
                if s.packet_id == 0 || s.filters.is_empty() {
                    return Err(EncodeError::Invalid(
                        "SUBSCRIBE needs a packet id and a filter",
                    ));
                }
                put_u16(out, s.packet_id);
                s.properties.encode(out)?;
                for (f, o) in &s.filters {
                    if !valid_topic_filter(f) {
                        return Err(EncodeError::Invalid("topic filter"));
                    }
                    if o.retain_handling > 2 {
                        return Err(EncodeError::Invalid("retain handling above 2"));
                    }
                    put_utf8(out, f, "topic filter")?;
                    out.push(
                        o.qos as u8
                            | (u8::from(o.no_local) << 2)
                            | (u8::from(o.retain_as_published) << 3)
                            | (o.retain_handling << 4),
                    );
                }
            }
            Packet::SubAck(s) | Packet::UnsubAck(s) => {
                if s.packet_id == 0 || s.reasons.is_empty() {
                    return Err(EncodeError::Invalid(
                        "acknowledgement needs a packet id and reasons",
                    ));
                }
                put_u16(out, s.packet_id);
                s.properties.encode(out)?;
                for r in &s.reasons {
                    if !reason_allowed(self.packet_type(), r.0) {
                        return Err(EncodeError::Invalid(
                            "reason code not allowed in this packet",
                        ));
                    }
                    out.push(r.0);
                }
            }
            Packet::Unsubscribe(u) => {
                if u.packet_id == 0 || u.filters.is_empty() {
                    return Err(EncodeError::Invalid(
                        "UNSUBSCRIBE needs a packet id and a filter",
                    ));
                }
                put_u16(out, u.packet_id);
                u.properties.encode(out)?;
                for f in &u.filters {
                    if !valid_topic_filter(f) {
                        return Err(EncodeError::Invalid("topic filter"));
                    }
                    put_utf8(out, f, "topic filter")?;
                }
            }
            Packet::PingReq | Packet::PingResp => {}
            Packet::Disconnect(d) | Packet::Auth(d) => {
                if !reason_allowed(self.packet_type(), d.reason.0) {
                    return Err(EncodeError::Invalid(
                        "reason code not allowed in this packet",
                    ));
                }
                if d.reason != ReasonCode::SUCCESS || !d.properties.is_empty() {
                    out.push(d.reason.0);
                    if !d.properties.is_empty() {
                        d.properties.encode(out)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Decodes one packet from the start of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only part of a packet (read more and call again), or the
/// packet and the number of bytes it used. A packet whose total size exceeds
/// `max_packet_size` is refused as soon as its fixed header is complete, before its body
/// arrives.
pub fn decode(buf: &[u8], max_packet_size: u32) -> Result<Option<Decoded>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let ty =
        PacketType::from_nibble(first >> 4).ok_or(DecodeError::UnknownPacketType(first >> 4))?;
    let flags = first & 0x0f;
    if ty != PacketType::Publish && flags != ty.required_flags() {
        return Err(DecodeError::InvalidFlags { packet: ty, flags });
    }
    let (remaining, vbi_len) = match read_vbi(&buf[1..])? {
        VbiRead::Complete { value, len } => (value as usize, len),
        VbiRead::Incomplete => return Ok(None),
    };
    let total = 1 + vbi_len + remaining;
    if total > max_packet_size as usize {
        return Err(DecodeError::PacketTooLarge {
            size: total,
            max: max_packet_size,
        });
    }
    if buf.len() < total {
        return Ok(None);
    }
    let mut r = Reader::new(&buf[1 + vbi_len..total], "packet");
    let packet = decode_body(ty, flags, &mut r)?;
    r.finish()?;
    Ok(Some(Decoded { packet, len: total }))
}

fn decode_body(ty: PacketType, flags: u8, r: &mut Reader<'_>) -> Result<Packet, DecodeError> {
    let props = |r: &mut Reader<'_>| Properties::decode(r, PropertyContext::Packet(ty));
    Ok(match ty {
        PacketType::Connect => {
            if r.utf8()? != "MQTT" {
                return Err(DecodeError::Protocol("protocol name is not MQTT"));
            }
            let level = r.u8()?;
            if level != 5 {
                return Err(DecodeError::UnsupportedProtocolVersion(level));
            }
            let f = r.u8()?;
            if f & 0x01 != 0 {
                return Err(DecodeError::Malformed("CONNECT reserved flag set"));
            }
            let will_flag = f & 0x04 != 0;
            let will_qos = (f >> 3) & 0x03;
            let will_retain = f & 0x20 != 0;
            if !will_flag && (will_qos != 0 || will_retain) {
                return Err(DecodeError::Malformed("will QoS or retain without a will"));
            }
            let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::Malformed("will QoS 3"))?;
            let keep_alive = r.u16()?;
            let properties = props(r)?;
            let client_id = r.utf8()?.to_owned();
            let will = if will_flag {
                let properties = Properties::decode(r, PropertyContext::Will)?;
                let topic = r.utf8()?.to_owned();
                if topic.is_empty() || !valid_topic_name(&topic) {
                    return Err(DecodeError::Protocol("invalid will topic"));
                }
                Some(Will {
                    qos: will_qos,
                    retain: will_retain,
                    properties,
                    topic,
                    payload: r.binary()?.to_vec(),
                })
            } else {
                None
            };
            let username = if f & 0x80 != 0 {
                Some(r.utf8()?.to_owned())
            } else {
                None
            };
            let password = if f & 0x40 != 0 {
                Some(r.binary()?.to_vec())
            } else {
                None
            };
            Packet::Connect(Connect {
                client_id,
                clean_start: f & 0x02 != 0,
                keep_alive,
                properties,
                will,
                username,
                password,
            })
        }
        PacketType::ConnAck => {
            let ack = r.u8()?;
            if ack & 0xfe != 0 {
                return Err(DecodeError::Malformed("CONNACK reserved flags set"));
            }
            let reason = read_reason(r, ty)?;
            Packet::ConnAck(ConnAck {
                session_present: ack == 1,
                reason,
                properties: props(r)?,
            })
        }
        PacketType::Publish => {
            let qos =
                QoS::from_u8((flags >> 1) & 0x03).ok_or(DecodeError::Malformed("PUBLISH QoS 3"))?;
            let dup = flags & 0x08 != 0;
            if dup && qos == QoS::AtMostOnce {
                return Err(DecodeError::Malformed("DUP set on a QoS 0 PUBLISH"));
            }
            let topic = r.utf8()?.to_owned();
            if !valid_topic_name(&topic) {
                return Err(DecodeError::Protocol("wildcard in a PUBLISH topic name"));
            }
            let packet_id = match qos {
                QoS::AtMostOnce => None,
                _ => Some(check_packet_id(r.u16()?)?),
            };
            let properties = props(r)?;
            if topic.is_empty() && properties.topic_alias().is_none() {
                return Err(DecodeError::Protocol("empty topic without a topic alias"));
            }
            Packet::Publish(Publish {
                dup,
                qos,
                retain: flags & 0x01 != 0,
                topic,
                packet_id,
                properties,
                payload: r.rest().to_vec(),
            })
        }
        PacketType::PubAck | PacketType::PubRec | PacketType::PubRel | PacketType::PubComp => {
            let packet_id = check_packet_id(r.u16()?)?;
            let (reason, properties) = if r.is_empty() {
                (ReasonCode::SUCCESS, Properties::new())
            } else {
                let reason = read_reason(r, ty)?;
                let properties = if r.is_empty() {
                    Properties::new()
                } else {
                    props(r)?
                };
                (reason, properties)
            };
            let resp = PubResponse {
                packet_id,
                reason,
                properties,
            };
            match ty {
                PacketType::PubAck => Packet::PubAck(resp),
                PacketType::PubRec => Packet::PubRec(resp),
                PacketType::PubRel => Packet::PubRel(resp),
                _ => Packet::PubComp(resp),
            }
        }
        PacketType::Subscribe => {
            let packet_id = check_packet_id(r.u16()?)?;
            let properties = props(r)?;
            let mut filters = Vec::new();
            while !r.is_empty() {
                let f = r.utf8()?.to_owned();
                if !valid_topic_filter(&f) {
                    return Err(DecodeError::Protocol("invalid topic filter"));
                }
                let o = r.u8()?;
                let qos =
                    QoS::from_u8(o & 0x03).ok_or(DecodeError::Malformed("subscription QoS 3"))?;
                let retain_handling = (o >> 4) & 0x03;
                if o & 0xc0 != 0 || retain_handling == 3 {
                    return Err(DecodeError::Malformed("invalid subscription options"));
                }
                filters.push((
                    f,
                    SubscriptionOptions {
                        qos,
                        no_local: o & 0x04 != 0,
                        retain_as_published: o & 0x08 != 0,
                        retain_handling,
                    },
                ));
            }
            if filters.is_empty() {
                return Err(DecodeError::Protocol("SUBSCRIBE without a topic filter"));
            }
            Packet::Subscribe(Subscribe {
                packet_id,
                properties,
                filters,
            })
        }
        PacketType::SubAck | PacketType::UnsubAck => {
            let packet_id = check_packet_id(r.u16()?)?;
            let properties = props(r)?;
            let mut reasons = Vec::new();
            while !r.is_empty() {
                reasons.push(read_reason(r, ty)?);
            }
            if reasons.is_empty() {
                return Err(DecodeError::Protocol(
                    "acknowledgement without reason codes",
                ));
            }
            let ack = SubAck {
                packet_id,
                properties,
                reasons,
            };
            if ty == PacketType::SubAck {
                Packet::SubAck(ack)
            } else {
                Packet::UnsubAck(ack)
            }
        }
        PacketType::Unsubscribe => {
            let packet_id = check_packet_id(r.u16()?)?;
            let properties = props(r)?;
            let mut filters = Vec::new();
            while !r.is_empty() {
                let f = r.utf8()?.to_owned();
                if !valid_topic_filter(&f) {
                    return Err(DecodeError::Protocol("invalid topic filter"));
                }
                filters.push(f);
            }
            if filters.is_empty() {
                return Err(DecodeError::Protocol("UNSUBSCRIBE without a topic filter"));
            }
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                properties,
                filters,
            })
        }
        PacketType::PingReq => Packet::PingReq,
        PacketType::PingResp => Packet::PingResp,
        PacketType::Disconnect | PacketType::Auth => {
            let (reason, properties) = if r.is_empty() {
                (ReasonCode::SUCCESS, Properties::new())
            } else {
                let reason = read_reason(r, ty)?;
                let properties = if r.is_empty() {
                    Properties::new()
                } else {
                    props(r)?
                };
                (reason, properties)
            };
            let p = ReasonOnly { reason, properties };
            if ty == PacketType::Disconnect {
                Packet::Disconnect(p)
            } else {
                Packet::Auth(p)
            }
        }
    })
}
