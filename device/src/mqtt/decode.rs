//! Decoding: one reader per packet layout, strict about everything MQTT v5 leaves no choice
//! in.

use devid_core::{TopicFilter, TopicName};

use super::codec::{read_vbi, Reader, VbiRead};
use super::packet::{
    publish_topic_ok, reason_allowed, ConnAck, Connect, Decoded, Packet, PacketType, PubResponse,
    Publish, QoS, ReasonOnly, SubAck, Subscribe, SubscriptionOptions, Unsubscribe, Will,
};
use super::properties::{Properties, PropertyContext};
use super::{DecodeError, ReasonCode};

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
                if TopicName::check(&topic).is_err() {
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
            // utf8() refused U+0000 and the length prefix bounds the length: a non-empty name
            // can only break the rule with a wildcard.
            if !topic.is_empty() && TopicName::check(&topic).is_err() {
                return Err(DecodeError::Protocol("wildcard in a PUBLISH topic name"));
            }
            let packet_id = match qos {
                QoS::AtMostOnce => None,
                _ => Some(check_packet_id(r.u16()?)?),
            };
            let properties = props(r)?;
            if !publish_topic_ok(&topic, &properties) {
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
            let (reason, properties) = read_reason_and_properties(r, ty)?;
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
                let f = read_filter(r)?;
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
                let f = read_filter(r)?;
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
            let (reason, properties) = read_reason_and_properties(r, ty)?;
            let p = ReasonOnly { reason, properties };
            if ty == PacketType::Disconnect {
                Packet::Disconnect(p)
            } else {
                Packet::Auth(p)
            }
        }
    })
}

fn check_packet_id(id: u16) -> Result<u16, DecodeError> {
    if id == 0 {
        return Err(DecodeError::Protocol("packet identifier 0"));
    }
    Ok(id)
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

/// A topic filter of a SUBSCRIBE or UNSUBSCRIBE, by core's rule ([`TopicFilter`]).
fn read_filter(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    let f = r.utf8()?;
    TopicFilter::check(f).map_err(|_| DecodeError::Protocol("invalid topic filter"))?;
    Ok(f.to_owned())
}

/// A reason code and properties in their shortest form (see `put_reason_and_properties`):
/// absent bytes mean success and no properties.
fn read_reason_and_properties(
    r: &mut Reader<'_>,
    ty: PacketType,
) -> Result<(ReasonCode, Properties), DecodeError> {
    if r.is_empty() {
        return Ok((ReasonCode::SUCCESS, Properties::new()));
    }
    let reason = read_reason(r, ty)?;
    let properties = if r.is_empty() {
        Properties::new()
    } else {
        Properties::decode(r, PropertyContext::Packet(ty))?
    };
    Ok((reason, properties))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::EncodeError;

    #[test]
    fn topic_filter_rules() {
        // Both directions apply core's TopicFilter rule.
        let subscribe = |f: &str| {
            Packet::Subscribe(Subscribe {
                packet_id: 1,
                properties: Properties::new(),
                filters: vec![(f.to_string(), SubscriptionOptions::qos(QoS::AtMostOnce))],
            })
        };
        for ok in ["a", "#", "+", "a/#", "a/+/b", "+/+", "/"] {
            let bytes = subscribe(ok)
                .to_bytes()
                .unwrap_or_else(|e| panic!("{ok}: {e}"));
            let d = decode(&bytes, u32::MAX).expect("decodes").expect("whole");
            assert_eq!(d.packet, subscribe(ok), "{ok}");
        }
        for bad in ["", "a#", "a/#/b", "a+", "a/b+/c", "#/"] {
            assert_eq!(
                subscribe(bad).to_bytes(),
                Err(EncodeError::Invalid("topic filter")),
                "{bad}"
            );
            if bad.is_empty() {
                continue;
            }
            // The same bytes from a peer: a filter of the same length, then swapped in.
            let mut bytes = subscribe(&"x".repeat(bad.len()))
                .to_bytes()
                .expect("encodes");
            let at = bytes.len() - 1 - bad.len();
            bytes[at..at + bad.len()].copy_from_slice(bad.as_bytes());
            assert_eq!(
                decode(&bytes, u32::MAX),
                Err(DecodeError::Protocol("invalid topic filter")),
                "{bad}"
            );
        }
    }
}
