//! MQTT v5 properties (section 2.2.2): a typed list that keeps every property in order, so a
//! packet decoded and re-encoded carries the same properties.

use super::codec::{put_binary, put_u16, put_u32, put_utf8, put_vbi, EncodeError, Reader};
use super::{DecodeError, PacketType};

/// One property, typed by its identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Property {
    PayloadFormatIndicator(u8),
    MessageExpiryInterval(u32),
    ContentType(String),
    ResponseTopic(String),
    CorrelationData(Vec<u8>),
    SubscriptionIdentifier(u32),
    SessionExpiryInterval(u32),
    AssignedClientIdentifier(String),
    ServerKeepAlive(u16),
    AuthenticationMethod(String),
    AuthenticationData(Vec<u8>),
    RequestProblemInformation(u8),
    WillDelayInterval(u32),
    RequestResponseInformation(u8),
    ResponseInformation(String),
    ServerReference(String),
    ReasonString(String),
    ReceiveMaximum(u16),
    TopicAliasMaximum(u16),
    TopicAlias(u16),
    MaximumQos(u8),
    RetainAvailable(u8),
    UserProperty(String, String),
    MaximumPacketSize(u32),
    WildcardSubscriptionAvailable(u8),
    SubscriptionIdentifierAvailable(u8),
    SharedSubscriptionAvailable(u8),
}

/// Where a property list appears; each place allows its own set of properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyContext {
    Packet(PacketType),
    Will,
}

impl Property {
    pub fn id(&self) -> u8 {
        use Property::*;
        match self {
            PayloadFormatIndicator(_) => 0x01,
            MessageExpiryInterval(_) => 0x02,
            ContentType(_) => 0x03,
            ResponseTopic(_) => 0x08,
            CorrelationData(_) => 0x09,
            SubscriptionIdentifier(_) => 0x0B,
            SessionExpiryInterval(_) => 0x11,
            AssignedClientIdentifier(_) => 0x12,
            ServerKeepAlive(_) => 0x13,
            AuthenticationMethod(_) => 0x15,
            AuthenticationData(_) => 0x16,
            RequestProblemInformation(_) => 0x17,
            WillDelayInterval(_) => 0x18,
            RequestResponseInformation(_) => 0x19,
            ResponseInformation(_) => 0x1A,
            ServerReference(_) => 0x1C,
            ReasonString(_) => 0x1F,
            ReceiveMaximum(_) => 0x21,
            TopicAliasMaximum(_) => 0x22,
            TopicAlias(_) => 0x23,
            MaximumQos(_) => 0x24,
            RetainAvailable(_) => 0x25,
            UserProperty(..) => 0x26,
            MaximumPacketSize(_) => 0x27,
            WildcardSubscriptionAvailable(_) => 0x28,
            SubscriptionIdentifierAvailable(_) => 0x29,
            SharedSubscriptionAvailable(_) => 0x2A,
        }
    }

    /// Whether the specification allows this property in `ctx` (table 2-4).
    fn allowed_in(id: u8, ctx: PropertyContext) -> bool {
        use PacketType as P;
        use PropertyContext::{Packet, Will};
        match id {
            0x01 | 0x02 | 0x03 | 0x08 | 0x09 => matches!(ctx, Packet(P::Publish) | Will),
            0x0B => matches!(ctx, Packet(P::Publish | P::Subscribe)),
            0x11 => matches!(ctx, Packet(P::Connect | P::ConnAck | P::Disconnect)),
            0x12 | 0x13 | 0x1A | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => {
                matches!(ctx, Packet(P::ConnAck))
            }
            0x15 | 0x16 => matches!(ctx, Packet(P::Connect | P::ConnAck | P::Auth)),
            0x17 | 0x19 => matches!(ctx, Packet(P::Connect)),
            0x18 => matches!(ctx, Will),
            0x1C => matches!(ctx, Packet(P::ConnAck | P::Disconnect)),
            0x1F => matches!(
                ctx,
                Packet(
                    P::ConnAck
                        | P::PubAck
                        | P::PubRec
                        | P::PubRel
                        | P::PubComp
                        | P::SubAck
                        | P::UnsubAck
                        | P::Disconnect
                        | P::Auth
                )
            ),
            0x21 | 0x22 | 0x27 => matches!(ctx, Packet(P::Connect | P::ConnAck)),
            0x23 => matches!(ctx, Packet(P::Publish)),
            0x26 => true,
            _ => false,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        use Property::*;
        out.push(self.id());
        match self {
            PayloadFormatIndicator(v)
            | RequestProblemInformation(v)
            | RequestResponseInformation(v)
            | MaximumQos(v)
            | RetainAvailable(v)
            | WildcardSubscriptionAvailable(v)
            | SubscriptionIdentifierAvailable(v)
            | SharedSubscriptionAvailable(v) => out.push(*v),
            ServerKeepAlive(v) | ReceiveMaximum(v) | TopicAliasMaximum(v) | TopicAlias(v) => {
                put_u16(out, *v)
            }
            MessageExpiryInterval(v)
            | SessionExpiryInterval(v)
            | WillDelayInterval(v)
            | MaximumPacketSize(v) => put_u32(out, *v),
            SubscriptionIdentifier(v) => put_vbi(out, *v as usize)?,
            ContentType(s)
            | ResponseTopic(s)
            | AssignedClientIdentifier(s)
            | AuthenticationMethod(s)
            | ResponseInformation(s)
            | ServerReference(s)
            | ReasonString(s) => put_utf8(out, s, "string property")?,
            CorrelationData(b) | AuthenticationData(b) => put_binary(out, b, "binary property")?,
            UserProperty(k, v) => {
                put_utf8(out, k, "user property name")?;
                put_utf8(out, v, "user property value")?;
            }
        }
        Ok(())
    }

    fn decode(id: u8, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        use Property::*;
        let byte01 = |r: &mut Reader<'_>| -> Result<u8, DecodeError> {
            let v = r.u8()?;
            if v > 1 {
                return Err(DecodeError::InvalidProperty {
                    id,
                    reason: "value must be 0 or 1",
                });
            }
            Ok(v)
        };
        Ok(match id {
            0x01 => PayloadFormatIndicator(byte01(r)?),
            0x02 => MessageExpiryInterval(r.u32()?),
            0x03 => ContentType(r.utf8()?.to_owned()),
            0x08 => ResponseTopic(r.utf8()?.to_owned()),
            0x09 => CorrelationData(r.binary()?.to_vec()),
            0x0B => {
                let v = r.vbi()?;
                if v == 0 {
                    return Err(DecodeError::InvalidProperty {
                        id,
                        reason: "subscription identifier 0",
                    });
                }
                SubscriptionIdentifier(v)
            }
            0x11 => SessionExpiryInterval(r.u32()?),
            0x12 => AssignedClientIdentifier(r.utf8()?.to_owned()),
            0x13 => ServerKeepAlive(r.u16()?),
            0x15 => AuthenticationMethod(r.utf8()?.to_owned()),
            0x16 => AuthenticationData(r.binary()?.to_vec()),
            0x17 => RequestProblemInformation(byte01(r)?),
            0x18 => WillDelayInterval(r.u32()?),
            0x19 => RequestResponseInformation(byte01(r)?),
            0x1A => ResponseInformation(r.utf8()?.to_owned()),
            0x1C => ServerReference(r.utf8()?.to_owned()),
            0x1F => ReasonString(r.utf8()?.to_owned()),
            0x21..=0x23 => {
                let v = r.u16()?;
                match id {
                    0x21 if v == 0 => {
                        return Err(DecodeError::InvalidProperty {
                            id,
                            reason: "receive maximum 0",
                        })
                    }
                    0x23 if v == 0 => {
                        return Err(DecodeError::InvalidProperty {
                            id,
                            reason: "topic alias 0",
                        })
                    }
                    0x21 => ReceiveMaximum(v),
                    0x22 => TopicAliasMaximum(v),
                    _ => TopicAlias(v),
                }
            }
            0x24 => MaximumQos(byte01(r)?),
            0x25 => RetainAvailable(byte01(r)?),
            0x26 => {
                let k = r.utf8()?.to_owned();
                let v = r.utf8()?.to_owned();
                UserProperty(k, v)
            }
            0x27 => {
                let v = r.u32()?;
                if v == 0 {
                    return Err(DecodeError::InvalidProperty {
                        id,
                        reason: "maximum packet size 0",
                    });
                }
                MaximumPacketSize(v)
            }
            0x28 => WildcardSubscriptionAvailable(byte01(r)?),
            0x29 => SubscriptionIdentifierAvailable(byte01(r)?),
            0x2A => SharedSubscriptionAvailable(byte01(r)?),
            _ => {
                return Err(DecodeError::InvalidProperty {
                    id,
                    reason: "unknown property identifier",
                })
            }
        })
    }
}

/// An ordered property list. User properties and (in PUBLISH) subscription identifiers may
/// repeat; every other property appears at most once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties(pub Vec<Property>);

impl Properties {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds a property (builder style).
    pub fn with(mut self, p: Property) -> Self {
        self.0.push(p);
        self
    }

    pub fn push(&mut self, p: Property) {
        self.0.push(p);
    }

    pub fn iter(&self) -> impl Iterator<Item = &Property> {
        self.0.iter()
    }

    /// User properties in order, as (name, value).
    pub fn user_properties(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().filter_map(|p| match p {
            Property::UserProperty(k, v) => Some((k.as_str(), v.as_str())),
            _ => None,
        })
    }

    pub fn authentication_method(&self) -> Option<&str> {
        self.0.iter().find_map(|p| match p {
            Property::AuthenticationMethod(s) => Some(s.as_str()),
            _ => None,
        })
    }

    pub fn authentication_data(&self) -> Option<&[u8]> {
        self.0.iter().find_map(|p| match p {
            Property::AuthenticationData(b) => Some(b.as_slice()),
            _ => None,
        })
    }

    pub fn reason_string(&self) -> Option<&str> {
        self.0.iter().find_map(|p| match p {
            Property::ReasonString(s) => Some(s.as_str()),
            _ => None,
        })
    }

    pub fn assigned_client_identifier(&self) -> Option<&str> {
        self.0.iter().find_map(|p| match p {
            Property::AssignedClientIdentifier(s) => Some(s.as_str()),
            _ => None,
        })
    }

    pub fn server_keep_alive(&self) -> Option<u16> {
        self.0.iter().find_map(|p| match p {
            Property::ServerKeepAlive(v) => Some(*v),
            _ => None,
        })
    }

    pub fn maximum_packet_size(&self) -> Option<u32> {
        self.0.iter().find_map(|p| match p {
            Property::MaximumPacketSize(v) => Some(*v),
            _ => None,
        })
    }

    pub fn receive_maximum(&self) -> Option<u16> {
        self.0.iter().find_map(|p| match p {
            Property::ReceiveMaximum(v) => Some(*v),
            _ => None,
        })
    }

    pub fn maximum_qos(&self) -> Option<u8> {
        self.0.iter().find_map(|p| match p {
            Property::MaximumQos(v) => Some(*v),
            _ => None,
        })
    }

    pub fn topic_alias(&self) -> Option<u16> {
        self.0.iter().find_map(|p| match p {
            Property::TopicAlias(v) => Some(*v),
            _ => None,
        })
    }

    /// Writes the property length (Variable Byte Integer) and the properties.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        super::codec::put_vbi_prefixed(out, |body| {
            for p in &self.0 {
                p.encode(body)?;
            }
            Ok(())
        })
    }

    /// Reads a property length and exactly that many bytes of properties allowed in `ctx`.
    pub(crate) fn decode(r: &mut Reader<'_>, ctx: PropertyContext) -> Result<Self, DecodeError> {
        let len = r.vbi()? as usize;
        let mut sub = r.sub(len, "properties")?;
        let mut out = Vec::new();
        let mut seen = [false; 0x2B];
        while !sub.is_empty() {
            // Identifiers are Variable Byte Integers; all defined ones fit in one byte, so a
            // multi-byte identifier is simply unknown.
            let id = sub.vbi()?;
            let id = u8::try_from(id).map_err(|_| DecodeError::InvalidProperty {
                id: 0xff,
                reason: "unknown property identifier",
            })?;
            if !Property::allowed_in(id, ctx) {
                return Err(DecodeError::InvalidProperty {
                    id,
                    reason: "not allowed in this packet",
                });
            }
            let repeatable =
                id == 0x26 || (id == 0x0B && ctx == PropertyContext::Packet(PacketType::Publish));
            let slot = &mut seen[id as usize];
            if *slot && !repeatable {
                return Err(DecodeError::InvalidProperty {
                    id,
                    reason: "duplicate property",
                });
            }
            *slot = true;
            out.push(Property::decode(id, &mut sub)?);
        }
        Ok(Properties(out))
    }
}

impl FromIterator<Property> for Properties {
    fn from_iter<T: IntoIterator<Item = Property>>(iter: T) -> Self {
        Properties(iter.into_iter().collect())
    }
}
