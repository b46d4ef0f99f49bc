//! DEVID-1 through real Mosquitto with the plugin and a real devid-server.

use std::time::Duration;

use devid_e2e::devid_device::mqtt::ReasonCode;
use devid_e2e::devid_device::Event;
use devid_e2e::*;

const NAME: &str = "mqtt.test.local";

async fn setup() -> (Service, Broker) {
    let service = Service::start().await;
    let identity = service.enroll_broker(NAME).await;
    let broker = Broker::start(BrokerSettings::new(&service, identity));
    (service, broker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_device_connects_publishes_own_topic_and_is_refused_foreign_ones() {
    let (service, broker) = setup().await;
    let root = service.root_der();
    let a = service.register_device("hw-a").await;
    let b = service.register_device("hw-b").await;

    let mut dev_a = connect(&broker.addr(), &a, &root, None, Tamper::None)
        .await
        .expect("device a admitted");
    let session = dev_a.session.as_ref().expect("DEVID-1 session");
    assert_eq!(session.keys.session_id.len(), 16);
    let dev_b = connect(&broker.addr(), &b, &root, None, Tamper::None)
        .await
        .expect("device b admitted");

    let own = format!("devices/{}/cmd", a.client_id);
    assert_eq!(dev_a.subscribe(&own).await, ReasonCode::GRANTED_QOS_1);
    assert_eq!(
        dev_a.subscribe("broadcast/#").await,
        ReasonCode::GRANTED_QOS_1
    );
    // Foreign and wider filters: SUBACK 0x87.
    assert_eq!(
        dev_a.subscribe(&format!("devices/{}/#", b.client_id)).await,
        ReasonCode::NOT_AUTHORIZED
    );
    assert_eq!(dev_a.subscribe("#").await, ReasonCode::NOT_AUTHORIZED);
    assert_eq!(
        dev_a.subscribe("devices/+/cmd").await,
        ReasonCode::NOT_AUTHORIZED
    );

    // Own topic: PUBACK 0x00. Foreign topic: PUBACK 0x87.
    // 0x00, or 0x10 "no matching subscribers": both accepted.
    let r = dev_a
        .publish(&format!("devices/{}/temp", a.client_id), b"21.5")
        .await;
    assert!(r.is_success(), "{r:?}");
    assert_eq!(
        dev_b
            .publish(&format!("devices/{}/cmd", a.client_id), b"reboot")
            .await,
        ReasonCode::NOT_AUTHORIZED
    );
    assert_eq!(
        dev_b.publish("broadcast/all", b"x").await,
        ReasonCode::NOT_AUTHORIZED
    );
    let r = dev_b
        .publish(&format!("devices/{}/temp", b.client_id), b"1")
        .await;
    assert!(r.is_success(), "{r:?}");

    // Delivery: a's own publish comes back on its subscription; b's refused one never does.
    assert_eq!(dev_a.publish(&own, b"hello").await, ReasonCode::SUCCESS);
    match dev_a.event(Duration::from_secs(5)).await {
        Some(Event::Message(m)) => {
            assert_eq!(m.topic, own);
            assert_eq!(m.payload, b"hello");
        }
        other => panic!("expected the message, got {other:?}"),
    }
    assert!(dev_a.event(Duration::from_millis(500)).await.is_none());
    assert!(broker
        .log()
        .contains(&format!("admitted client {}", a.client_id)));
}
