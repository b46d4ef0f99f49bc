//! Encoding: one writer per packet layout; every length prefix is derived from the bytes
//! written.

use devid_core::{TopicFilter, TopicName};

use super::codec::{put_binary, put_u16, put_utf8, put_vbi, EncodeError, VBI_MAX};
use super::packet::{publish_topic_ok, reason_allowed, Packet, PacketType, QoS};
use super::properties::Properties;
use super::ReasonCode;

impl Packet {
    /// Appends the encoded packet to `out`. On error nothing is appended.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.encode_limited(out, VBI_MAX + 5)
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
                    if TopicName::check(&w.topic).is_err() {
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
                if !publish_topic_ok(&p.topic, &p.properties) {
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
                put_reason_and_properties(out, r.reason, &r.properties)?;
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
                    if TopicFilter::check(f).is_err() {
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
                    if TopicFilter::check(f).is_err() {
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
                put_reason_and_properties(out, d.reason, &d.properties)?;
            }
        }
        Ok(())
    }
}

/// The shortest form of a reason code and properties (3.4.2.1, 3.14.2.1, 3.15.2.1): both are
/// left out when the reason is success and there are no properties, the properties alone when
/// there are none.
fn put_reason_and_properties(
    out: &mut Vec<u8>,
    reason: ReasonCode,
    properties: &Properties,
) -> Result<(), EncodeError> {
    if reason != ReasonCode::SUCCESS || !properties.is_empty() {
        out.push(reason.0);
        if !properties.is_empty() {
            properties.encode(out)?;
        }
    }
    Ok(())
}
