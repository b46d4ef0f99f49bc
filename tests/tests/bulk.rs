//! A recall through a real broker: every connected device of a lot revoked in one call is
//! dropped by Mosquitto with the plugin, and the devices outside the lot stay connected.

use std::time::Duration;

use devid_core::api::Registered;
use devid_e2e::devid_device::Event;
use devid_e2e::*;
use serde_json::json;

const NAME: &str = "mqtt.test.local";

async fn register(service: &Service, hw: &str, lot: &str) -> DeviceCreds {
    let (s, v) = service
        .call(
            "POST",
            "/v1/devices",
            Some(
                json!({"hardware_serial": hw, "generate_key": true, "model": "thermo",
                        "metadata": {"lot": lot}}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let r: Registered = serde_json::from_value(v).expect("registered");
    DeviceCreds::from_registered(&r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connected_devices_of_a_revoked_lot_are_dropped() {
    for backend in backends() {
        let service = Service::start_with(&backend, &[]).await;
        let identity = service.enroll_broker(NAME).await;
        let broker = Broker::start(BrokerSettings::new(&service, identity));
        let root = service.root_der();
        let a = register(&service, "hw-lot-a", "L7").await;
        let b = register(&service, "hw-lot-b", "L7").await;
        let c = register(&service, "hw-lot-c", "L8").await;
        let mut connected = Vec::new();
        for d in [&a, &b, &c] {
            connected.push(
                connect(&broker.addr(), d, &root, None, Tamper::None)
                    .await
                    .expect("admitted"),
            );
        }
        let (s, v) = service
            .call(
                "POST",
                "/v1/devices/revoke",
                Some(
                    json!({"filter": {"model": "thermo", "metadata": {"lot": "L7"}},
                            "reason": "keyCompromise"}),
                ),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["changed"], 2, "{v}");
        let mut other = connected.pop().expect("device of L8");
        for (d, creds) in connected.iter_mut().zip([&a, &b]) {
            match d.event(Duration::from_secs(1)).await {
                Some(Event::Disconnected { .. }) | Some(Event::Closed(_)) => {}
                other => panic!(
                    "{}: {} not dropped within a second: {other:?}",
                    backend.name(),
                    creds.client_id
                ),
            }
            let again = connect(&broker.addr(), creds, &root, None, Tamper::None).await;
            assert!(
                again.is_err(),
                "{} admitted after the recall",
                creds.client_id
            );
        }
        // The device of the other lot is still connected and still admitted.
        assert!(
            other.event(Duration::from_millis(300)).await.is_none(),
            "{}: the other lot's device got an event",
            backend.name()
        );
        connect(&broker.addr(), &c, &root, None, Tamper::None)
            .await
            .expect("the other lot is admitted");
    }
}
