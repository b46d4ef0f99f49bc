//! The codec and client against a real Mosquitto 2.0.11 (no devid plugin): plain MQTT v5.
#![allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

mod common;

use std::time::Duration;

use common::Mosquitto;
use devid_device::mqtt::{
    Packet, Properties, Property, Publish, QoS, ReasonCode, SubscriptionOptions,
};
use devid_device::{
    handshake, open, AuthError, Authenticator, Client, ClientError, ConnectOptions, Event, NoAuth,
    OutgoingMessage, Transport,
};

async fn connect(m: &Mosquitto, id: &str, keep_alive: u16) -> Client {
    let mut conn = open(&m.addr(), &Transport::Tcp).await.unwrap();
    let mut opts = ConnectOptions::new(id);
    opts.keep_alive = keep_alive;
    let c = handshake::<NoAuth>(&mut conn, &opts, None).await.unwrap();
    assert_eq!(c.connack.reason, ReasonCode::SUCCESS);
    assert_eq!(c.client_id, id);
    Client::start(conn, c.keep_alive, None)
}

async fn next_message(c: &mut Client) -> devid_device::Message {
    match tokio::time::timeout(Duration::from_secs(5), c.next_event()).await {
        Ok(Some(Event::Message(m))) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

#[tokio::test]
async fn publish_subscribe_roundtrip_with_user_properties_qos0_and_qos1() {
    let m = Mosquitto::start("");
    let mut sub = connect(&m, "sub-1", 30).await;
    let granted = sub
        .subscribe(vec![
            (
                "devices/dev-1/#".into(),
                SubscriptionOptions::qos(QoS::AtLeastOnce),
            ),
            (
                "broadcast/+".into(),
                SubscriptionOptions::qos(QoS::AtMostOnce),
            ),
        ])
        .await
        .unwrap();
    assert_eq!(granted, [ReasonCode::GRANTED_QOS_1, ReasonCode::SUCCESS]);

    let publisher = connect(&m, "dev-1", 30).await;
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        let mut msg =
            OutgoingMessage::new("devices/dev-1/telemetry", format!("hello {qos:?}"), qos);
        msg.user_properties = vec![
            ("devid-seq".into(), "1".into()),
            ("k".into(), "v1".into()),
            ("k".into(), "v2".into()),
        ];
        let ack = publisher.publish(msg.clone()).await.unwrap();
        match qos {
            QoS::AtMostOnce => assert_eq!(ack, None),
            _ => assert_eq!(ack.unwrap().reason, ReasonCode::SUCCESS),
        }
        let got = next_message(&mut sub).await;
        assert_eq!(got.topic, msg.topic);
        assert_eq!(got.payload, msg.payload);
        assert_eq!(got.qos, qos);
        assert_eq!(got.user_properties, msg.user_properties);
    }

    // No subscriber on this topic: Mosquitto says so with 0x10 on QoS 1.
    let ack = publisher
        .publish(OutgoingMessage::new(
            "devices/dev-1x/none",
            "x",
            QoS::AtLeastOnce,
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ack.reason, ReasonCode::NO_MATCHING_SUBSCRIBERS);

    assert_eq!(
        sub.unsubscribe(vec!["broadcast/+".into()]).await.unwrap(),
        [ReasonCode::SUCCESS]
    );
    assert_eq!(
        sub.unsubscribe(vec!["never/subscribed".into()])
            .await
            .unwrap(),
        [ReasonCode(0x11)]
    );
    publisher.disconnect().await.unwrap();
    sub.disconnect().await.unwrap();
}

#[tokio::test]
async fn explicit_ping_and_keepalive_pings() {
    let m = Mosquitto::start("");
    let c = connect(&m, "pinger", 1).await;
    let rtt = c.ping().await.unwrap();
    assert!(rtt < Duration::from_secs(5));
    // With a 1 s keep-alive the client must ping by itself or Mosquitto drops it after 1.5 s:
    // two more pings (about 2 s) with the connection still up.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while m.log_text().matches("Received PINGREQ from pinger").count() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "expected keep-alive pings, log:\n{}",
            m.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.ping().await.unwrap();
    c.disconnect().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !m.log_text().contains("Received DISCONNECT from pinger") {
        assert!(std::time::Instant::now() < deadline, "{}", m.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn broker_disconnect_is_a_typed_event() {
    let m = Mosquitto::start("");
    let mut conn = open(&m.addr(), &Transport::Tcp).await.unwrap();
    let c = handshake::<NoAuth>(&mut conn, &ConnectOptions::new("alias"), None)
        .await
        .unwrap();
    // A topic alias above the broker's maximum (10): Mosquitto answers DISCONNECT 0x94.
    conn.send(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "t".into(),
        packet_id: None,
        properties: Properties::new().with(Property::TopicAlias(200)),
        payload: b"x".to_vec(),
    }))
    .await
    .unwrap();
    let mut client = Client::start(conn, c.keep_alive, None);
    match tokio::time::timeout(Duration::from_secs(5), client.next_event()).await {
        Ok(Some(Event::Disconnected { reason, .. })) => assert_eq!(reason, ReasonCode(0x94)),
        other => panic!("expected DISCONNECT 0x94, got {other:?}"),
    }
    // The dead client's calls fail cleanly.
    assert!(matches!(client.ping().await, Err(ClientError::Closed)));
}

#[tokio::test]
async fn session_takeover_closes_the_old_connection() {
    // Mosquitto 2.0.11 closes the old connection without DISCONNECT 0x8E.
    let m = Mosquitto::start("");
    let mut first = connect(&m, "same-id", 30).await;
    let _second = connect(&m, "same-id", 30).await;
    match tokio::time::timeout(Duration::from_secs(5), first.next_event()).await {
        Ok(Some(Event::Closed(_) | Event::Disconnected { .. })) => {}
        other => panic!("expected the connection to end, got {other:?}"),
    }
}

/// A stand-in method: Mosquitto without a plugin knows no authentication method.
struct Dummy;
impl Authenticator for Dummy {
    type Outcome = ();
    fn method(&self) -> &str {
        "DEVID-1"
    }
    fn start(&mut self) -> Result<Vec<u8>, AuthError> {
        Ok(vec![1, 1, 0])
    }
    fn challenge(&mut self, _: &[u8]) -> Result<Vec<u8>, AuthError> {
        Err(AuthError("unexpected".into()))
    }
    fn finish(&mut self, _: &[u8]) -> Result<(), AuthError> {
        Err(AuthError("unexpected".into()))
    }
}

#[tokio::test]
async fn unknown_auth_method_is_refused_with_0x8c() {
    let m = Mosquitto::start("");
    let mut conn = open(&m.addr(), &Transport::Tcp).await.unwrap();
    let err = handshake(&mut conn, &ConnectOptions::new("dev-x"), Some(&mut Dummy))
        .await
        .unwrap_err();
    assert_eq!(
        err.reason_code(),
        Some(ReasonCode::BAD_AUTHENTICATION_METHOD),
        "{err}"
    );
}

#[tokio::test]
async fn puback_refusal_surfaces_as_reason_code() {
    // Anonymous clients may only use devices/allowed/#.
    let (m, _acl) = start_with_acl();
    let c = connect(&m, "acl-dev", 30).await;
    // Mosquitto's acl_file grants every SUBSCRIBE (it filters at delivery), so only the
    // PUBACK side can be refused here; SUBACK 0x87 comes with the devid plugin (e2e tests).
    let ack = c
        .publish(OutgoingMessage::new(
            "devices/other/x",
            "no",
            QoS::AtLeastOnce,
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ack.reason, ReasonCode::NOT_AUTHORIZED);
    let ack = c
        .publish(OutgoingMessage::new(
            "devices/allowed/x",
            "yes",
            QoS::AtLeastOnce,
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ack.reason, ReasonCode::NO_MATCHING_SUBSCRIBERS);
}

fn start_with_acl() -> (Mosquitto, tempfile::NamedTempFile) {
    let acl = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(acl.path(), "topic readwrite devices/allowed/#\n").unwrap();
    let m = Mosquitto::start(&format!("acl_file {}\n", acl.path().display()));
    (m, acl)
}

#[tokio::test]
async fn broker_maximum_packet_size_is_enforced_locally() {
    let m = Mosquitto::start("max_packet_size 1000\n");
    let c = connect(&m, "big", 30).await;
    let err = c
        .publish(OutgoingMessage::new("t", vec![0u8; 2000], QoS::AtLeastOnce))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Encode(_)), "{err}");
    // The connection is still usable.
    let ack = c
        .publish(OutgoingMessage::new("t", vec![0u8; 100], QoS::AtLeastOnce))
        .await
        .unwrap()
        .unwrap();
    assert!(ack.reason.is_success());
}

#[tokio::test]
async fn many_concurrent_qos1_publishes_all_get_their_puback() {
    // Mosquitto announces Receive Maximum 20 (the client's window is tested in flow.rs).
    let m = Mosquitto::start("");
    let (client, connected) =
        devid_device::connect_plain(&m.addr(), &Transport::Tcp, &ConnectOptions::new("flow"))
            .await
            .unwrap();
    assert_eq!(connected.connack.properties.receive_maximum(), Some(20));
    let client = std::sync::Arc::new(client);
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let c = client.clone();
            tokio::spawn(async move {
                c.publish(OutgoingMessage::new(
                    "flow/t",
                    format!("{i}"),
                    QoS::AtLeastOnce,
                ))
                .await
            })
        })
        .collect();
    for t in tasks {
        let ack = t.await.unwrap().unwrap().unwrap();
        assert!(ack.reason.is_success(), "{ack:?}");
    }
    client.ping().await.unwrap();
}
