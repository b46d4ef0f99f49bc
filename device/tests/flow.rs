//! Flow control against a scripted broker: the client keeps no more QoS 1 PUBLISHes in flight
//! than the CONNACK's Receive Maximum.
#![allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

use std::sync::Arc;
use std::time::Duration;

use devid_device::mqtt::{ConnAck, Packet, Properties, Property, PubResponse, QoS, ReasonCode};
use devid_device::{connect_plain, ConnectOptions, Connection, OutgoingMessage, Transport};
use tokio::net::TcpListener;

#[tokio::test]
async fn client_honours_the_brokers_receive_maximum() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let broker = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut conn = Connection::new(tcp);
        assert!(matches!(
            conn.recv().await.unwrap(),
            Some(Packet::Connect(_))
        ));
        conn.send(&Packet::ConnAck(ConnAck {
            session_present: false,
            reason: ReasonCode::SUCCESS,
            properties: Properties::new().with(Property::ReceiveMaximum(3)),
        }))
        .await
        .unwrap();
        let mut acked = 0;
        while acked < 10 {
            // Read whatever arrives within a short quiet period: never more than 3 unacked.
            let mut ids = Vec::new();
            while let Ok(p) = tokio::time::timeout(Duration::from_millis(100), conn.recv()).await {
                match p.unwrap() {
                    Some(Packet::Publish(p)) => ids.push(p.packet_id.unwrap()),
                    other => panic!("{other:?}"),
                }
            }
            assert!(
                !ids.is_empty() && ids.len() <= 3,
                "in flight: {}",
                ids.len()
            );
            for id in ids {
                conn.send(&Packet::PubAck(PubResponse {
                    packet_id: id,
                    reason: ReasonCode::SUCCESS,
                    properties: Properties::new(),
                }))
                .await
                .unwrap();
                acked += 1;
            }
        }
        acked
    });
    let (client, _) = connect_plain(&addr, &Transport::Tcp, &ConnectOptions::new("flow"))
        .await
        .unwrap();
    let client = Arc::new(client);
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move {
                c.publish(OutgoingMessage::new("t", "x", QoS::AtLeastOnce))
                    .await
            })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap().unwrap().unwrap().reason.is_success());
    }
    assert_eq!(broker.await.unwrap(), 10);
}
