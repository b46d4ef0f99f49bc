use super::*;

const MAX: u32 = 1 << 20;

fn user(k: &str, v: &str) -> Property {
    Property::UserProperty(k.into(), v.into())
}

/// One of every packet, with properties where they are allowed.
fn samples() -> Vec<Packet> {
    vec![
        Packet::Connect(Connect {
            client_id: "dev-0001".into(),
            clean_start: true,
            keep_alive: 30,
            properties: Properties::new()
                .with(Property::SessionExpiryInterval(0))
                .with(Property::AuthenticationMethod("DEVID-1".into()))
                .with(Property::AuthenticationData(vec![1, 1, 0xaa, 0xbb]))
                .with(Property::MaximumPacketSize(65_536))
                .with(user("a", "b")),
            will: None,
            username: None,
            password: None,
        }),
        Packet::Connect(Connect {
            client_id: String::new(),
            clean_start: false,
            keep_alive: 0,
            properties: Properties::new(),
            will: Some(Will {
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: Properties::new().with(Property::WillDelayInterval(5)),
                topic: "devices/x/status".into(),
                payload: b"offline".to_vec(),
            }),
            username: Some("user".into()),
            password: Some(b"secret".to_vec()),
        }),
        Packet::ConnAck(ConnAck {
            session_present: false,
            reason: ReasonCode::SUCCESS,
            properties: Properties::new()
                .with(Property::AuthenticationMethod("DEVID-1".into()))
                .with(Property::AuthenticationData(vec![4; 40]))
                .with(Property::AssignedClientIdentifier("auto-1".into()))
                .with(Property::ServerKeepAlive(60))
                .with(Property::MaximumQos(1)),
        }),
        Packet::ConnAck(ConnAck {
            session_present: false,
            reason: ReasonCode::NOT_AUTHORIZED,
            properties: Properties::new().with(Property::ReasonString("no".into())),
        }),
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "devices/dev-0001/t".into(),
            packet_id: None,
            properties: Properties::new(),
            payload: b"hello".to_vec(),
        }),
        Packet::Publish(Publish {
            dup: true,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: "devices/dev-0001/t".into(),
            packet_id: Some(7),
            properties: Properties::new()
                .with(user("devid-seq", "1"))
                .with(Property::ContentType("text/plain".into()))
                .with(user("devid-seq", "2"))
                .with(Property::SubscriptionIdentifier(3))
                .with(Property::SubscriptionIdentifier(300)),
            payload: vec![0; 300],
        }),
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::ExactlyOnce,
            retain: false,
            topic: String::new(),
            packet_id: Some(65_535),
            properties: Properties::new().with(Property::TopicAlias(2)),
            payload: Vec::new(),
        }),
        Packet::PubAck(PubResponse {
            packet_id: 1,
            reason: ReasonCode::SUCCESS,
            properties: Properties::new(),
        }),
        Packet::PubAck(PubResponse {
            packet_id: 2,
            reason: ReasonCode::NOT_AUTHORIZED,
            properties: Properties::new(),
        }),
        Packet::PubRec(PubResponse {
            packet_id: 3,
            reason: ReasonCode::NO_MATCHING_SUBSCRIBERS,
            properties: Properties::new().with(Property::ReasonString("none".into())),
        }),
        Packet::PubRel(PubResponse {
            packet_id: 4,
            reason: ReasonCode::SUCCESS,
            properties: Properties::new(),
        }),
        Packet::PubComp(PubResponse {
            packet_id: 5,
            reason: ReasonCode(0x92),
            properties: Properties::new(),
        }),
        Packet::Subscribe(Subscribe {
            packet_id: 9,
            properties: Properties::new().with(Property::SubscriptionIdentifier(1)),
            filters: vec![
                (
                    "devices/+/t".into(),
                    SubscriptionOptions::qos(QoS::AtLeastOnce),
                ),
                (
                    "broadcast/#".into(),
                    SubscriptionOptions {
                        qos: QoS::ExactlyOnce,
                        no_local: true,
                        retain_as_published: true,
                        retain_handling: 2,
                    },
                ),
            ],
        }),
        Packet::SubAck(SubAck {
            packet_id: 9,
            properties: Properties::new(),
            reasons: vec![ReasonCode::GRANTED_QOS_1, ReasonCode::NOT_AUTHORIZED],
        }),
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 10,
            properties: Properties::new().with(user("k", "v")),
            filters: vec!["a/b".into(), "#".into()],
        }),
        Packet::UnsubAck(SubAck {
            packet_id: 10,
            properties: Properties::new(),
            reasons: vec![ReasonCode::SUCCESS, ReasonCode(0x11)],
        }),
        Packet::PingReq,
        Packet::PingResp,
        Packet::Disconnect(ReasonOnly {
            reason: ReasonCode::SUCCESS,
            properties: Properties::new(),
        }),
        Packet::Disconnect(ReasonOnly {
            reason: ReasonCode::ADMINISTRATIVE_ACTION,
            properties: Properties::new()
                .with(Property::ReasonString("revoked".into()))
                .with(Property::SessionExpiryInterval(0)),
        }),
        Packet::Auth(ReasonOnly {
            reason: ReasonCode::CONTINUE_AUTHENTICATION,
            properties: Properties::new()
                .with(Property::AuthenticationMethod("DEVID-1".into()))
                .with(Property::AuthenticationData(vec![2; 300])),
        }),
        Packet::Auth(ReasonOnly {
            reason: ReasonCode::RE_AUTHENTICATE,
            properties: Properties::new().with(Property::AuthenticationMethod("DEVID-1".into())),
        }),
        Packet::Auth(ReasonOnly {
            reason: ReasonCode::SUCCESS,
            properties: Properties::new(),
        }),
    ]
}

fn decode_all(bytes: &[u8]) -> Result<Option<Decoded>, DecodeError> {
    decode(bytes, MAX)
}

#[test]
fn every_packet_roundtrips_and_uses_all_its_bytes() {
    for p in samples() {
        let bytes = p.to_bytes().unwrap();
        let d = decode_all(&bytes).unwrap().unwrap();
        assert_eq!(d.packet, p);
        assert_eq!(d.len, bytes.len());
        // Re-encoding gives the same bytes: one encoding per packet.
        assert_eq!(d.packet.to_bytes().unwrap(), bytes);
    }
}

#[test]
fn every_strict_prefix_needs_more_bytes() {
    for p in samples() {
        let bytes = p.to_bytes().unwrap();
        for cut in 0..bytes.len() {
            assert_eq!(
                decode_all(&bytes[..cut]).unwrap(),
                None,
                "{p:?} cut at {cut}"
            );
        }
    }
}

#[test]
fn decodes_back_to_back_packets_one_at_a_time() {
    let mut buf = Vec::new();
    for p in samples() {
        p.encode(&mut buf).unwrap();
    }
    let mut got = Vec::new();
    let mut pos = 0;
    while let Some(d) = decode_all(&buf[pos..]).unwrap() {
        pos += d.len;
        got.push(d.packet);
    }
    assert_eq!(pos, buf.len());
    assert_eq!(got, samples());
}

#[test]
fn matches_known_wire_bytes() {
    assert_eq!(Packet::PingReq.to_bytes().unwrap(), [0xC0, 0x00]);
    assert_eq!(Packet::PingResp.to_bytes().unwrap(), [0xD0, 0x00]);
    let connect = Packet::Connect(Connect {
        client_id: "a".into(),
        clean_start: true,
        keep_alive: 60,
        properties: Properties::new(),
        will: None,
        username: None,
        password: None,
    });
    assert_eq!(
        connect.to_bytes().unwrap(),
        [0x10, 0x0E, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0, 0, 1, b'a']
    );
    // Short forms that brokers send.
    let puback = decode_all(&[0x40, 0x02, 0x00, 0x01])
        .unwrap()
        .unwrap()
        .packet;
    assert_eq!(
        puback,
        Packet::PubAck(PubResponse {
            packet_id: 1,
            reason: ReasonCode::SUCCESS,
            properties: Properties::new()
        })
    );
    let puback = decode_all(&[0x40, 0x03, 0x00, 0x01, 0x87])
        .unwrap()
        .unwrap()
        .packet;
    assert!(matches!(
        puback,
        Packet::PubAck(PubResponse {
            reason: ReasonCode::NOT_AUTHORIZED,
            ..
        })
    ));
    let kicked = decode_all(&[0xE0, 0x02, 0x98, 0x00])
        .unwrap()
        .unwrap()
        .packet;
    assert_eq!(
        kicked,
        Packet::Disconnect(ReasonOnly {
            reason: ReasonCode::ADMINISTRATIVE_ACTION,
            properties: Properties::new()
        })
    );
    let bare = decode_all(&[0xE0, 0x00]).unwrap().unwrap().packet;
    assert!(matches!(
        bare,
        Packet::Disconnect(ReasonOnly {
            reason: ReasonCode::SUCCESS,
            ..
        })
    ));
}

#[test]
fn rejects_malformed_input() {
    let cases: &[(&str, &[u8])] = &[
        ("fail/packet type 0", &[0x00, 0x00]),
        ("fail/pingreq with flags", &[0xC1, 0x00]),
        (
            "fail/subscribe without flag 0b0010",
            &[0x80, 0x06, 0, 1, 0, 0, 1, b'a'],
        ),
        ("fail/pingreq with body", &[0xC0, 0x01, 0x00]),
        ("fail/non-minimal remaining length", &[0xC0, 0x80, 0x00]),
        (
            "fail/remaining length of 5 bytes",
            &[0xC0, 0xff, 0xff, 0xff, 0xff, 0x7f],
        ),
        ("fail/publish qos 3", &[0x36, 0x05, 0, 1, b'a', 0, 1]),
        ("fail/publish qos 0 with dup", &[0x38, 0x04, 0, 1, b'a', 0]),
        (
            "fail/publish packet id 0",
            &[0x32, 0x06, 0, 1, b'a', 0, 0, 0],
        ),
        ("fail/publish wildcard topic", &[0x30, 0x04, 0, 1, b'#', 0]),
        (
            "fail/publish empty topic without alias",
            &[0x30, 0x03, 0, 0, 0],
        ),
        (
            "fail/publish topic not utf-8",
            &[0x30, 0x05, 0, 2, 0xc3, 0x28, 0],
        ),
        (
            "fail/publish properties longer than packet",
            &[0x30, 0x04, 0, 1, b'a', 5],
        ),
        ("fail/puback packet id 0", &[0x40, 0x02, 0, 0]),
        ("fail/puback truncated id", &[0x40, 0x01, 0]),
        ("fail/puback reason not allowed", &[0x40, 0x03, 0, 1, 0x18]),
        (
            "fail/puback trailing after properties",
            &[0x40, 0x05, 0, 1, 0, 0, 9],
        ),
        (
            "fail/connack reserved flag",
            &[0x20, 0x03, 0x02, 0x00, 0x00],
        ),
        ("fail/connack reason 0x18", &[0x20, 0x03, 0x00, 0x18, 0x00]),
        (
            "fail/connack trailing byte",
            &[0x20, 0x04, 0x00, 0x00, 0x00, 0x00],
        ),
        ("fail/connack without properties", &[0x20, 0x02, 0x00, 0x00]),
        // Topic alias is a PUBLISH-only property.
        (
            "fail/connack property not allowed",
            &[0x20, 0x06, 0, 0, 3, 0x23, 0, 1],
        ),
        (
            "fail/connack unknown property",
            &[0x20, 0x05, 0, 0, 2, 0x7f, 0],
        ),
        (
            "fail/connack duplicate property",
            &[0x20, 0x09, 0, 0, 6, 0x13, 0, 1, 0x13, 0, 2],
        ),
        (
            "fail/connack maximum qos 2",
            &[0x20, 0x05, 0, 0, 2, 0x24, 2],
        ),
        (
            "fail/connack property value truncated",
            &[0x20, 0x05, 0, 0, 2, 0x13, 0],
        ),
        ("fail/auth reason 0x87", &[0xF0, 0x02, 0x87, 0x00]),
        (
            "fail/auth data truncated",
            &[0xF0, 0x06, 0x18, 0x04, 0x16, 0x00, 0x05, 1],
        ),
        ("fail/disconnect reason 0x18", &[0xE0, 0x01, 0x18]),
        ("fail/suback without reasons", &[0x90, 0x03, 0, 1, 0]),
        ("fail/suback reason 0x03", &[0x90, 0x04, 0, 1, 0, 3]),
        ("fail/subscribe without filter", &[0x82, 0x03, 0, 1, 0]),
        (
            "fail/subscribe options reserved bits",
            &[0x82, 0x07, 0, 1, 0, 0, 1, b'a', 0x40],
        ),
        (
            "fail/subscribe retain handling 3",
            &[0x82, 0x07, 0, 1, 0, 0, 1, b'a', 0x30],
        ),
        (
            "fail/subscribe bad filter",
            &[0x82, 0x08, 0, 1, 0, 0, 2, b'#', b'/', 0],
        ),
        (
            "fail/connect wrong protocol name",
            &[
                0x10, 0x0D, 0, 4, b'M', b'Q', b'T', b'X', 5, 2, 0, 0, 0, 0, 0,
            ],
        ),
        (
            "fail/connect version 4",
            &[
                0x10, 0x0C, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 0, 0, 0, 0,
            ],
        ),
        (
            "fail/connect reserved flag",
            &[
                0x10, 0x0D, 0, 4, b'M', b'Q', b'T', b'T', 5, 3, 0, 0, 0, 0, 0,
            ],
        ),
        (
            "fail/connect will qos without will",
            &[
                0x10, 0x0D, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x0A, 0, 0, 0, 0, 0,
            ],
        ),
        (
            "fail/connect username flag without username",
            &[
                0x10, 0x0D, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x82, 0, 0, 0, 0, 0,
            ],
        ),
    ];
    for (name, bytes) in cases {
        assert!(
            decode_all(bytes).is_err(),
            "{name}: {:?}",
            decode_all(bytes)
        );
    }
    // The well-formed neighbours of some cases decode, so the cases fail for the reason named.
    let ok: &[(&str, &[u8])] = &[
        ("ok/publish", &[0x30, 0x04, 0, 1, b'a', 0]),
        ("ok/puback with reason", &[0x40, 0x03, 0, 1, 0x87]),
        ("ok/connack", &[0x20, 0x03, 0, 0, 0]),
        (
            "ok/connack server keep alive",
            &[0x20, 0x06, 0, 0, 3, 0x13, 0, 1],
        ),
        ("ok/subscribe", &[0x82, 0x07, 0, 1, 0, 0, 1, b'a', 0x02]),
        (
            "ok/connect",
            &[
                0x10, 0x0D, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 0, 0, 0, 0,
            ],
        ),
    ];
    for (name, bytes) in ok {
        assert!(decode_all(bytes).unwrap().is_some(), "{name}");
    }
}

#[test]
fn enforces_maximum_packet_size_before_the_body_arrives() {
    let p = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "t".into(),
        packet_id: None,
        properties: Properties::new(),
        payload: vec![0; 200],
    });
    let bytes = p.to_bytes().unwrap();
    let size = bytes.len() as u32;
    assert!(decode(&bytes, size).unwrap().is_some());
    // Only the fixed header: already refused.
    assert!(matches!(
        decode(&bytes[..3], size - 1),
        Err(DecodeError::PacketTooLarge { .. })
    ));
    let mut out = vec![9];
    assert!(matches!(
        p.encode_limited(&mut out, size - 1),
        Err(EncodeError::PacketTooLarge { .. })
    ));
    assert_eq!(out, [9], "a failed encode appends nothing");
}

#[test]
fn refuses_to_encode_invalid_packets() {
    let bad = [
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "t".into(),
            packet_id: None,
            properties: Properties::new(),
            payload: vec![],
        }),
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "a/+".into(),
            packet_id: None,
            properties: Properties::new(),
            payload: vec![],
        }),
        Packet::Subscribe(Subscribe {
            packet_id: 1,
            properties: Properties::new(),
            filters: vec![],
        }),
        Packet::Auth(ReasonOnly {
            reason: ReasonCode::NOT_AUTHORIZED,
            properties: Properties::new(),
        }),
        Packet::Connect(Connect {
            client_id: "x".repeat(70_000),
            clean_start: true,
            keep_alive: 0,
            properties: Properties::new(),
            will: None,
            username: None,
            password: None,
        }),
    ];
    for p in bad {
        assert!(p.to_bytes().is_err(), "{p:?}");
    }
}

#[test]
fn single_byte_corruption_never_panics() {
    for p in samples() {
        let bytes = p.to_bytes().unwrap();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                // Any outcome but a panic is acceptable; a decoded packet must re-encode.
                if let Ok(Some(d)) = decode_all(&b) {
                    assert!(d.len <= b.len());
                    let _ = d.packet.to_bytes();
                }
            }
        }
    }
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    fn arb_props() -> impl Strategy<Value = Properties> {
        proptest::collection::vec(("[a-z-]{0,8}", "\\PC{0,8}"), 0..4).prop_map(|kv| {
            kv.into_iter()
                .map(|(k, v)| Property::UserProperty(k, v))
                .collect()
        })
    }

    proptest! {
        #[test]
        fn publish_roundtrips(
            topic in "[a-z/]{1,20}",
            qos in 0u8..3,
            id in 1u16..,
            retain: bool,
            props in arb_props(),
            payload in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let qos = QoS::from_u8(qos).unwrap();
            let p = Packet::Publish(Publish {
                dup: false,
                qos,
                retain,
                topic,
                packet_id: (qos != QoS::AtMostOnce).then_some(id),
                properties: props,
                payload,
            });
            let bytes = p.to_bytes().unwrap();
            let d = decode(&bytes, MAX).unwrap().unwrap();
            prop_assert_eq!(d.len, bytes.len());
            prop_assert_eq!(d.packet, p);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(Some(d)) = decode(&bytes, MAX) {
                prop_assert!(d.len <= bytes.len());
                // Whatever decodes re-encodes to the same bytes, except for short forms.
                let again = d.packet.to_bytes().unwrap();
                let d2 = decode(&again, MAX).unwrap().unwrap();
                prop_assert_eq!(d2.packet, d.packet);
            }
        }
    }
}
