//! Fleet health with a real Mosquitto and the plugin: a connected device shows as connected in
//! its health and the fleet summary; revoked, it is dropped and shows as disconnected, with
//! both on its timeline. On SQLite and, with DEVID_TEST_POSTGRES_URL, PostgreSQL.

use std::time::Duration;

use devid_e2e::*;
use serde_json::Value;

const NAME: &str = "mqtt.test.local";

async fn health(service: &Service, cid: &str) -> Value {
    let (s, v) = service
        .call("GET", &format!("/v1/devices/{cid}/health"), None)
        .await;
    assert_eq!(s, 200, "{v}");
    v
}

async fn run(backend: Backend) {
    let service = Service::start_with(&backend, &[]).await;
    let identity = service.enroll_broker(NAME).await;
    let broker = Broker::start(BrokerSettings::new(&service, identity));
    let root = service.root_der();
    let dev = service.register_device("hw-fleet").await;
    let cid = dev.client_id.clone();

    let _d = connect(&broker.addr(), &dev, &root, None, Tamper::None)
        .await
        .expect("connect");
    wait_until(
        "the device shows as connected",
        Duration::from_secs(30),
        || async {
            !health(&service, &cid).await["connected_on"]
                .as_array()
                .is_none_or(Vec::is_empty)
        },
    )
    .await;
    let h = health(&service, &cid).await;
    assert!(h["first_seen"].is_string(), "{h}");
    assert!(h["last_connect"]["address"].is_string(), "{h}");
    let (_, s) = service.call("GET", "/v1/fleet/summary", None).await;
    assert_eq!(s["connected_now"], 1, "{s}");

    service.revoke(&cid).await;
    wait_until(
        "the revoked device shows as gone",
        Duration::from_secs(30),
        || async { health(&service, &cid).await["connected_on"] == serde_json::json!([]) },
    )
    .await;
    let (s, tl) = service
        .call("GET", &format!("/v1/devices/{cid}/timeline"), None)
        .await;
    assert_eq!(s, 200, "{tl}");
    let kinds: Vec<&str> = tl["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"connected") && kinds.contains(&"disconnected"),
        "{}: {tl}",
        backend.name()
    );
    let (_, s) = service.call("GET", "/v1/fleet/summary", None).await;
    assert_eq!(s["connected_now"], 0, "{s}");
    assert_eq!(s["revoked"], 1, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_device_shows_in_its_health_and_drops_out_when_revoked() {
    for backend in backends() {
        run(backend).await;
    }
}
