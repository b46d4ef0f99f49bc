//! Per-message authentication through Mosquitto: `devid-mac` and `devid-seal` checked
//! by the plugin with the DEVID-1 session keys when the device's policy says `required`.

use std::time::Duration;

use devid_core::protocol::{PublishSigner, PublishTag};
use devid_e2e::devid_device::mqtt::{QoS, ReasonCode};
use devid_e2e::devid_device::{Event, OutgoingMessage};
use devid_e2e::*;
use serde_json::json;

const NAME: &str = "mqtt.test.local";

async fn publish(
    d: &Device,
    topic: &str,
    payload: Vec<u8>,
    props: Vec<(String, String)>,
) -> ReasonCode {
    publish_at(d, topic, payload, props, QoS::AtLeastOnce).await
}

/// The reason code of the PUBACK (QoS 1), or of the refusing PUBREC or the PUBCOMP (QoS 2).
async fn publish_at(
    d: &Device,
    topic: &str,
    payload: Vec<u8>,
    props: Vec<(String, String)>,
    qos: QoS,
) -> ReasonCode {
    let mut msg = OutgoingMessage::new(topic, payload, qos);
    msg.user_properties = props;
    d.client
        .publish(msg)
        .await
        .expect("publish")
        .expect("puback")
        .reason
}

fn tag_props(tag: &PublishTag) -> Vec<(String, String)> {
    tag.properties
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_message_auth_refuses_bad_messages_and_marks_good_ones() {
    let service = Service::start().await;
    let identity = service.enroll_broker(NAME).await;
    let mut settings = BrokerSettings::new(&service, identity);
    settings
        .extra
        .push("plugin_opt_max_refused_messages 50".into());
    let broker = Broker::start(settings);
    let root = service.root_der();
    let dev = service.register_device("hw-mac").await;
    let cid = dev.client_id.clone();
    let (s, v) = service
        .call(
            "PUT",
            &format!("/v1/devices/{cid}/policy"),
            Some(json!({"message_auth": "required"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");

    let mut d = connect(&broker.addr(), &dev, &root, None, Tamper::None)
        .await
        .expect("admitted");
    let topic = format!("devices/{cid}/data");
    assert_eq!(d.subscribe(&topic).await, ReasonCode::GRANTED_QOS_1);
    // The policy arrives with the status fetch: wait until unprotected messages are refused.
    let mut required = false;
    for _ in 0..40 {
        if publish(&d, &topic, b"plain".to_vec(), vec![]).await == ReasonCode::NOT_AUTHORIZED {
            required = true;
            break;
        }
        // Accepted while the policy was not known yet: drain the delivery, and give the
        // status fetch time (the delivery arrives at once, so without the pause the 40 tries
        // could all pass in well under a second).
        let _ = d.event(Duration::from_millis(50)).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(required, "message_auth required never applied");

    let keys = &d.session.as_ref().expect("session").keys;
    let mut signer = PublishSigner::new(keys);

    // A good MAC: delivered with devid-verified, without devid-seq / devid-mac.
    let tag = signer.mac(&topic, b"21.5").expect("mac");
    assert!(publish(&d, &topic, b"21.5".to_vec(), tag_props(&tag))
        .await
        .is_success());
    match d.event(Duration::from_secs(5)).await {
        Some(Event::Message(m)) => {
            assert_eq!(m.payload, b"21.5");
            assert_eq!(
                m.user_properties,
                vec![("devid-verified".to_string(), cid.clone())]
            );
        }
        other => panic!("verified message not delivered: {other:?}"),
    }
    // Replayed seq.
    assert_eq!(
        publish(&d, &topic, b"21.5".to_vec(), tag_props(&tag)).await,
        ReasonCode::NOT_AUTHORIZED
    );
    // Wrong MAC (payload changed after MACing).
    let tag = signer.mac(&topic, b"10").expect("mac");
    assert_eq!(
        publish(&d, &topic, b"99".to_vec(), tag_props(&tag)).await,
        ReasonCode::NOT_AUTHORIZED
    );
    // MAC made for another topic (re-targeted).
    let tag = signer
        .mac(&format!("devices/{cid}/other"), b"1")
        .expect("mac");
    assert_eq!(
        publish(&d, &topic, b"1".to_vec(), tag_props(&tag)).await,
        ReasonCode::NOT_AUTHORIZED
    );
    // Sealed with a flipped bit.
    let mut sealed = b"secret".to_vec();
    let tag = signer.seal(&topic, &mut sealed).expect("seal");
    sealed[0] ^= 1;
    assert_eq!(
        publish(&d, &topic, sealed, tag_props(&tag)).await,
        ReasonCode::NOT_AUTHORIZED
    );
    // A good seal: the subscriber gets the plaintext.
    let mut sealed = b"secret".to_vec();
    let tag = signer.seal(&topic, &mut sealed).expect("seal");
    assert!(publish(&d, &topic, sealed, tag_props(&tag))
        .await
        .is_success());
    match d.event(Duration::from_secs(5)).await {
        Some(Event::Message(m)) => {
            assert_eq!(m.payload, b"secret");
            assert_eq!(
                m.user_properties,
                vec![("devid-verified".to_string(), cid.clone())]
            );
        }
        other => panic!("sealed message not delivered: {other:?}"),
    }
    // A forged devid-verified alone is refused (no MAC) and never delivered.
    assert_eq!(
        publish(
            &d,
            &topic,
            b"x".to_vec(),
            vec![("devid-verified".into(), "admin".into())]
        )
        .await,
        ReasonCode::NOT_AUTHORIZED
    );
    assert!(d.event(Duration::from_millis(300)).await.is_none());

    // QoS 2: an unprotected PUBLISH is refused in the PUBREC (0x87) and never delivered; a
    // MAC'd one completes (PUBREC, PUBREL, PUBCOMP) and is delivered verified.
    assert_eq!(
        publish_at(&d, &topic, b"q2".to_vec(), vec![], QoS::ExactlyOnce).await,
        ReasonCode::NOT_AUTHORIZED
    );
    assert!(d.event(Duration::from_millis(300)).await.is_none());
    let tag = signer.mac(&topic, b"q2").expect("mac");
    assert_eq!(
        publish_at(
            &d,
            &topic,
            b"q2".to_vec(),
            tag_props(&tag),
            QoS::ExactlyOnce
        )
        .await,
        ReasonCode::SUCCESS
    );
    match d.event(Duration::from_secs(5)).await {
        Some(Event::Message(m)) => {
            assert_eq!(m.payload, b"q2");
            assert_eq!(
                m.user_properties,
                vec![("devid-verified".to_string(), cid.clone())]
            );
        }
        other => panic!("QoS 2 message not delivered: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_refused_messages_in_a_row_disconnect() {
    let service = Service::start().await;
    let identity = service.enroll_broker(NAME).await;
    let mut settings = BrokerSettings::new(&service, identity);
    settings
        .extra
        .push("plugin_opt_max_refused_messages 3".into());
    let broker = Broker::start(settings);
    let root = service.root_der();
    let dev = service.register_device("hw-mac2").await;
    let mut d = connect(&broker.addr(), &dev, &root, None, Tamper::None)
        .await
        .expect("admitted");
    let topic = format!("devices/{}/data", dev.client_id);
    // Bad MACs are refused whatever the policy.
    let bad = vec![
        ("devid-seq".to_string(), "1".to_string()),
        (
            "devid-mac".to_string(),
            "AAAAAAAAAAAAAAAAAAAAAA".to_string(),
        ),
    ];
    for _ in 0..2 {
        assert_eq!(
            publish(&d, &topic, b"x".to_vec(), bad.clone()).await,
            ReasonCode::NOT_AUTHORIZED
        );
    }
    let mut msg = OutgoingMessage::new(topic.clone(), b"x".to_vec(), QoS::AtLeastOnce);
    msg.user_properties = bad;
    let third = d.client.publish(msg).await;
    assert!(
        !matches!(&third, Ok(Some(a)) if a.reason.is_success()),
        "third refused message accepted: {third:?}"
    );
    match d.event(Duration::from_secs(2)).await {
        Some(Event::Disconnected { .. }) | Some(Event::Closed(_)) => {}
        other => panic!("not disconnected: {other:?}"),
    }
    assert!(broker.log().contains("refused PUBLISHes in a row"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_reauthentication_old_keys_are_refused() {
    let service = Service::start().await;
    let identity = service.enroll_broker(NAME).await;
    let broker = Broker::start(BrokerSettings::new(&service, identity));
    let root = service.root_der();
    let dev = service.register_device("hw-reauth").await;
    let (d, mut old) = connect_with_session(&broker.addr(), &dev, &root)
        .await
        .expect("admitted");
    let topic = format!("devices/{}/data", dev.client_id);
    let mac = |payload: &[u8]| {
        let mut m = OutgoingMessage::new(topic.clone(), payload.to_vec(), QoS::AtLeastOnce);
        m.protection = devid_e2e::devid_device::Protection::Mac;
        m
    };
    // seq 1 under the first keys (the hook MACs it).
    let a = d
        .client
        .publish(mac(b"1"))
        .await
        .expect("publish")
        .expect("puback");
    assert!(a.reason.is_success(), "{a:?}");
    let _ = old.mac(&topic, b"skip").expect("seq 1 used by the hook");

    // AUTH 0x19: a full DEVID-1 handshake on the live connection, new keys.
    d.client.reauthenticate().await.expect("re-authentication");
    assert!(
        broker.log().contains("re-authenticated client"),
        "{}",
        broker.log()
    );

    // A MAC made with the old keys (next seq 2) is refused now.
    let tag = old.mac(&topic, b"old").expect("mac");
    assert_eq!(
        publish(&d, &topic, b"old".to_vec(), tag_props(&tag)).await,
        ReasonCode::NOT_AUTHORIZED
    );
    // The new keys, seq restarting at 1, are accepted.
    let a = d
        .client
        .publish(mac(b"new"))
        .await
        .expect("publish")
        .expect("puback");
    assert!(a.reason.is_success(), "{a:?}");
}
