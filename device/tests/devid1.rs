//! The device side of DEVID-1 end to end over real TCP and our MQTT codec, against an
//! in-process broker running devid-core's broker half (see common/fake_broker.rs).
#![allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use common::fake_broker::{BrokerEvent, FakeBroker};
use common::pki::{client_id, Pki};
use devid_core::protocol::{
    ClientConfig, EcdsaSigner, MemoryCertCache, ServerConfig, TicketKey, TicketKeys,
};
use devid_device::devid1::{load_ticket, ticket_path_for_key, Outgoing};
use devid_device::mqtt::{QoS, ReasonCode};
use devid_device::{
    connect_devid1, handshake, open, ClientError, DeviceOptions, Devid1, Event, OutgoingMessage,
    Protection, Rotation, Transport,
};

struct World {
    pki: Pki,
    dir: tempfile::TempDir,
    broker_chain: Vec<Vec<u8>>,
    broker_key: Vec<u8>,
}

impl World {
    fn new() -> Self {
        common::install_ring();
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new("devid test root");
        let b = pki.broker(dir.path(), "mqtt.test");
        World {
            pki,
            dir,
            broker_chain: b.chain_der,
            broker_key: b.key_pkcs8,
        }
    }

    fn server_config(&self, ticket_secret: u8) -> Arc<ServerConfig> {
        let key = Arc::new(
            EcdsaSigner::from_pkcs8_der(&self.broker_key, &ring::rand::SystemRandom::new())
                .unwrap(),
        );
        Arc::new(
            ServerConfig::new(&self.pki.root_der(), self.broker_chain.clone(), key)
                .unwrap()
                .with_ticket_keys(
                    TicketKeys::new(TicketKey::new(1, &[ticket_secret; 32])),
                    3600,
                )
                .with_cert_cache(Arc::new(MemoryCertCache::new(100))),
        )
    }

    /// A registered device and its DEVID-1 options against `broker`.
    fn device(&self, broker: &FakeBroker, broker_name: Option<&str>) -> DeviceOptions {
        let d = self.pki.device(self.dir.path(), &client_id("dev"));
        let key = Arc::new(
            EcdsaSigner::from_pkcs8_der(&d.key_pkcs8, &ring::rand::SystemRandom::new()).unwrap(),
        );
        let mut config = ClientConfig::new(&self.pki.root_der(), d.chain_der, key).unwrap();
        if let Some(n) = broker_name {
            config = config.with_broker_name(n).unwrap();
        }
        let mut o = DeviceOptions::new(broker.addr.clone(), Transport::Tcp, Arc::new(config));
        o.ticket_file = Some(ticket_path_for_key(&d.key));
        o
    }
}

#[tokio::test]
async fn full_handshake_then_resumption_then_fallback_when_refused() {
    let w = World::new();
    let mut broker = FakeBroker::start(w.server_config(1)).await;
    let opts = w.device(&broker, Some("mqtt.test"));

    // 1. Full handshake; the ticket lands next to the key with mode 0600.
    let (client, info) = connect_devid1(&opts).await.unwrap();
    assert!(!info.resumed);
    assert!(info.ticket_received);
    assert_eq!(info.session_id.len(), 32);
    match broker.next_event().await {
        BrokerEvent::Connected {
            session_id,
            resumed,
            client_id,
        } => {
            assert_eq!(
                session_id, info.session_id,
                "both sides derive the same session"
            );
            assert!(!resumed);
            assert_eq!(client_id, opts.connect.client_id);
        }
        e => panic!("{e:?}"),
    }
    client.disconnect().await.unwrap();
    let tf = opts.ticket_file.clone().unwrap();
    assert_eq!(
        std::fs::metadata(&tf).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(load_ticket(&tf).is_some());

    // 2. Resumption with the stored ticket.
    let (client, info2) = connect_devid1(&opts).await.unwrap();
    assert!(info2.resumed);
    assert_eq!(info2.resume_refused, None);
    assert_ne!(info2.session_id, info.session_id);
    assert!(matches!(
        broker.next_event().await,
        BrokerEvent::Connected { resumed: true, .. }
    ));
    client.disconnect().await.unwrap();

    // 3. A broker with another ticket key refuses the ticket (0x87): full handshake follows.
    drop(broker);
    let mut broker2 = FakeBroker::start(w.server_config(2)).await;
    let mut opts2 = opts.clone();
    opts2.broker = broker2.addr.clone();
    let (client, info3) = connect_devid1(&opts2).await.unwrap();
    assert_eq!(info3.resume_refused, Some(Some(ReasonCode::NOT_AUTHORIZED)));
    assert!(!info3.resumed);
    assert!(matches!(
        broker2.next_event().await,
        BrokerEvent::Refused { reason: 0x87, .. }
    ));
    assert!(matches!(
        broker2.next_event().await,
        BrokerEvent::Connected { resumed: false, .. }
    ));
    client.disconnect().await.unwrap();
    // The new ticket (from broker2) replaced the refused one.
    assert!(load_ticket(&tf).is_some());
}

#[tokio::test]
async fn mac_and_seal_are_verified_by_the_broker_and_tampering_is_not() {
    let w = World::new();
    let mut broker = FakeBroker::start(w.server_config(1)).await;
    let mut opts = w.device(&broker, None);
    opts.resume = false;
    let (client, _) = connect_devid1(&opts).await.unwrap();
    broker.next_event().await;

    let topic = format!("devices/{}/t", opts.connect.client_id);
    for (i, protection) in [Protection::Mac, Protection::Seal, Protection::Mac]
        .into_iter()
        .enumerate()
    {
        let mut m = OutgoingMessage::new(topic.clone(), format!("reading {i}"), QoS::AtLeastOnce);
        m.protection = protection;
        let ack = client.publish(m).await.unwrap().unwrap();
        assert_eq!(ack.reason, ReasonCode::SUCCESS);
        match broker.next_event().await {
            BrokerEvent::Published {
                payload,
                seq,
                verified,
                ..
            } => {
                assert!(verified);
                assert_eq!(seq, Some(i as u64 + 1), "seq starts at 1 and increases");
                assert_eq!(
                    payload,
                    format!("reading {i}").into_bytes(),
                    "sealed payload opens"
                );
            }
            e => panic!("{e:?}"),
        }
    }
    // A forged devid-mac is refused by the broker: PUBACK 0x87 surfaces.
    let mut m = OutgoingMessage::new(topic.clone(), "x", QoS::AtLeastOnce);
    m.user_properties = vec![
        ("devid-seq".into(), "99".into()),
        ("devid-mac".into(), "AAAAAAAAAAAAAAAAAAAAAA".into()),
    ];
    let ack = client.publish(m).await.unwrap().unwrap();
    assert_eq!(ack.reason, ReasonCode::NOT_AUTHORIZED);
    client.disconnect().await.unwrap();
}

#[tokio::test]
async fn reauthentication_rotates_keys_on_request_and_by_policy() {
    let w = World::new();
    let mut broker = FakeBroker::start(w.server_config(1)).await;
    let mut opts = w.device(&broker, Some("mqtt.test"));
    opts.resume = false;
    opts.rotation = Rotation {
        after_messages: Some(2),
        after: None,
    };
    let (mut client, info) = connect_devid1(&opts).await.unwrap();
    broker.next_event().await;

    // Explicit AUTH 0x19 (a resumption with the ticket from the handshake).
    client.reauthenticate().await.unwrap();
    let new_id = match client.next_event().await {
        Some(Event::Reauthenticated { session_id }) => session_id,
        e => panic!("{e:?}"),
    };
    assert_ne!(new_id, info.session_id);
    match broker.next_event().await {
        BrokerEvent::Reauthenticated {
            session_id,
            resumed,
        } => {
            assert_eq!(session_id, new_id);
            assert!(resumed);
        }
        e => panic!("{e:?}"),
    }

    // Messages under the new keys verify; seq restarted at 1. After two, the policy rotates.
    let topic = format!("devices/{}/t", opts.connect.client_id);
    for i in 1..=2u64 {
        let mut m = OutgoingMessage::new(topic.clone(), "m", QoS::AtLeastOnce);
        m.protection = Protection::Mac;
        assert_eq!(
            client.publish(m).await.unwrap().unwrap().reason,
            ReasonCode::SUCCESS
        );
        match broker.next_event().await {
            BrokerEvent::Published { seq, verified, .. } => {
                assert!(verified);
                assert_eq!(seq, Some(i));
            }
            e => panic!("{e:?}"),
        }
    }
    let rotated = match tokio::time::timeout(Duration::from_secs(5), client.next_event()).await {
        Ok(Some(Event::Reauthenticated { session_id })) => session_id,
        e => panic!("expected a rotation by policy, got {e:?}"),
    };
    assert_ne!(rotated, new_id);
    assert!(matches!(
        broker.next_event().await,
        BrokerEvent::Reauthenticated { .. }
    ));
    let mut m = OutgoingMessage::new(topic.clone(), "after", QoS::AtLeastOnce);
    m.protection = Protection::Seal;
    assert_eq!(
        client.publish(m).await.unwrap().unwrap().reason,
        ReasonCode::SUCCESS
    );
    assert!(matches!(
        broker.next_event().await,
        BrokerEvent::Published {
            seq: Some(1),
            verified: true,
            ..
        }
    ));
    client.disconnect().await.unwrap();
}

#[tokio::test]
async fn device_refuses_a_broker_with_the_wrong_name_or_another_ca() {
    let w = World::new();
    let broker = FakeBroker::start(w.server_config(1)).await;
    let mut opts = w.device(&broker, Some("other.example.com"));
    opts.resume = false;
    let err = connect_devid1(&opts).await.err().unwrap();
    assert!(matches!(err, ClientError::Auth(_)), "{err}");

    // A broker that accepts our devices but whose own certificate comes from another CA.
    let other = World::new();
    let key = Arc::new(
        EcdsaSigner::from_pkcs8_der(&other.broker_key, &ring::rand::SystemRandom::new()).unwrap(),
    );
    let rogue_config =
        Arc::new(ServerConfig::new(&w.pki.root_der(), other.broker_chain.clone(), key).unwrap());
    let rogue = FakeBroker::start(rogue_config).await;
    let mut opts = w.device(&rogue, None);
    opts.resume = false;
    let err = connect_devid1(&opts).await.err().unwrap();
    assert!(matches!(err, ClientError::Auth(_)), "{err}");
}

#[tokio::test]
async fn broker_refusal_of_a_wrong_client_id_is_a_typed_refusal() {
    let w = World::new();
    let mut broker = FakeBroker::start(w.server_config(1)).await;
    let mut opts = w.device(&broker, None);
    opts.resume = false;
    opts.connect.client_id = client_id("oth");
    let err = connect_devid1(&opts).await.err().unwrap();
    assert_eq!(err.reason_code(), Some(ReasonCode::NOT_AUTHORIZED), "{err}");
    assert!(matches!(
        broker.next_event().await,
        BrokerEvent::Refused { reason: 0x87, .. }
    ));
}

#[tokio::test]
async fn a_kick_is_a_typed_disconnect_event_with_0x98() {
    let w = World::new();
    let mut broker = FakeBroker::start(w.server_config(1)).await;
    let mut opts = w.device(&broker, None);
    opts.resume = false;
    let (mut client, _) = connect_devid1(&opts).await.unwrap();
    broker.next_event().await;
    client
        .publish(OutgoingMessage::new("kick/me", "", QoS::AtMostOnce))
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), client.next_event()).await {
        Ok(Some(Event::Disconnected { reason, .. })) => {
            assert_eq!(reason, ReasonCode::ADMINISTRATIVE_ACTION);
            assert_eq!(reason.to_string(), "0x98 Administrative action");
        }
        e => panic!("{e:?}"),
    }
    assert!(
        client.next_event().await.is_none(),
        "nothing after the disconnect"
    );
    assert!(matches!(
        client
            .publish(OutgoingMessage::new("t", "", QoS::AtMostOnce))
            .await,
        Err(ClientError::Closed)
    ));
}

#[tokio::test]
async fn devid1_over_tls() {
    let w = World::new();
    let mut broker = FakeBroker::start_tls(
        w.server_config(1),
        w.broker_chain.clone(),
        w.broker_key.clone(),
    )
    .await;
    let mut opts = w.device(&broker, Some("mqtt.test"));
    opts.resume = false;
    let roots = vec![w.pki.root_der().into()];
    let addr = broker.addr.clone();
    let tls = |name: &str| Transport::Tls {
        config: devid_device::tls_config(devid_device::TlsOptions {
            roots: roots.clone(),
            client_auth: None,
            tls13_only: false,
            resumption: true,
        })
        .unwrap(),
        server_name: devid_device::server_name(&addr, Some(name)).unwrap(),
    };
    opts.transport = tls("mqtt.test");
    let (client, info) = connect_devid1(&opts).await.unwrap();
    assert!(matches!(
        broker.next_event().await,
        BrokerEvent::Connected { session_id, .. } if session_id == info.session_id
    ));
    client.disconnect().await.unwrap();
    // The TLS name check is enforced too.
    opts.transport = tls("wrong.test");
    let err = connect_devid1(&opts).await.err().unwrap();
    assert!(matches!(err, ClientError::Tls(_)), "{err}");
    // Plain TCP to a TLS port fails cleanly (no CONNACK).
    opts.transport = Transport::Tcp;
    opts.connect.connect_timeout = Duration::from_secs(2);
    assert!(connect_devid1(&opts).await.is_err());
}

/// Runs one DEVID-1 CONNECT exchange with `auth` against the options' broker.
async fn exchange_with(opts: &DeviceOptions, auth: &mut Devid1) -> Result<bool, ClientError> {
    let mut conn = open(&opts.broker, &opts.transport).await?;
    let c = handshake(&mut conn, &opts.connect, Some(auth)).await?;
    let resumed = c.auth.as_ref().unwrap().resumed;
    conn.disconnect(ReasonCode::SUCCESS).await?;
    Ok(resumed)
}

#[tokio::test]
async fn the_alter_hook_sees_every_outgoing_message_and_what_it_changes_is_sent() {
    let w = World::new();
    let mut broker = FakeBroker::start(w.server_config(1)).await;
    let opts = w.device(&broker, None);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = |seen: &Arc<std::sync::Mutex<Vec<Outgoing>>>| {
        let seen = seen.clone();
        move |what: Outgoing, _: &mut Vec<u8>| seen.lock().unwrap().push(what)
    };

    // Untouched, the messages go out as the state machine made them.
    let mut auth = Devid1::new(opts.config.clone()).alter_outgoing(record(&seen));
    assert!(!exchange_with(&opts, &mut auth).await.unwrap());
    assert_eq!(
        *seen.lock().unwrap(),
        [Outgoing::ClientHello, Outgoing::ClientFinish]
    );
    assert!(matches!(
        broker.next_event().await,
        BrokerEvent::Connected { resumed: false, .. }
    ));

    // The same with one bit of sig_c flipped: the broker sees the change and refuses.
    let mut auth = Devid1::new(opts.config.clone()).alter_outgoing(|what, data| {
        if what == Outgoing::ClientFinish {
            data[10] ^= 0x01;
        }
    });
    let err = exchange_with(&opts, &mut auth).await.err().unwrap();
    assert_eq!(err.reason_code(), Some(ReasonCode::NOT_AUTHORIZED), "{err}");
    assert!(matches!(
        broker.next_event().await,
        BrokerEvent::Refused { reason: 0x87, .. }
    ));

    // A replaced ClientHello is what the broker reads.
    let mut auth = Devid1::new(opts.config.clone())
        .alter_outgoing(|_, data: &mut Vec<u8>| *data = b"\x01\x01garbage".to_vec());
    assert!(exchange_with(&opts, &mut auth).await.is_err());
    assert!(matches!(
        broker.next_event().await,
        BrokerEvent::Refused { .. }
    ));

    // A resumption passes its two messages through the hook as well.
    let (client, _) = connect_devid1(&opts).await.unwrap();
    broker.next_event().await;
    client.disconnect().await.unwrap();
    let ticket = load_ticket(opts.ticket_file.as_deref().unwrap()).unwrap();
    seen.lock().unwrap().clear();
    let mut auth = Devid1::resume(opts.config.clone(), ticket).alter_outgoing(record(&seen));
    assert!(auth.is_resumption());
    assert!(exchange_with(&opts, &mut auth).await.unwrap());
    assert_eq!(
        *seen.lock().unwrap(),
        [Outgoing::ResumeHello, Outgoing::ResumeProof]
    );
    assert!(matches!(
        broker.next_event().await,
        BrokerEvent::Connected { resumed: true, .. }
    ));
}
