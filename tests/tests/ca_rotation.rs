//! The issuing CA's rotation and revocation through the real binaries and a real Mosquitto:
//! devices under the old and the new issuing CA connect to the same broker without a restart;
//! revoking the old issuing CA drops and refuses its devices and leaves the others. The same over
//! mutual TLS, where Mosquitto hands the plugin only the leaf and the plugin finds its issuing CA
//! in the service's CA set (both backends).

use std::time::{Duration, Instant};

use devid_e2e::devid_device::mqtt::ReasonCode;
use devid_e2e::devid_device::Event;
use devid_e2e::*;

const NAME: &str = "mqtt.test.local";

fn issuer(creds: &DeviceCreds) -> String {
    devid_core::protocol::issuer_id_of(&creds.chain_der[0]).expect("AKI")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_of_the_old_and_new_issuing_ca_share_a_broker_until_the_old_one_is_revoked() {
    let service = Service::start().await;
    let identity = service.enroll_broker(NAME).await;
    let broker = Broker::start(BrokerSettings::new(&service, identity));
    let root = service.root_der();

    let a = service.register_device("hw-rot-a").await;
    let old = issuer(&a);
    let mut da = connect(&broker.addr(), &a, &root, None, Tamper::None)
        .await
        .expect("device A (old issuing CA) admitted");

    service.command(&["ca", "rotate"]);
    // The service switches through its feed (a poll on SQLite): B is the first device it
    // registers from the new issuing CA.
    let b = register_under_new_ca(&service, &old, "hw-rot-b").await;
    assert_ne!(issuer(&b), old);
    let mut db = connect(&broker.addr(), &b, &root, None, Tamper::None)
        .await
        .expect("device B (new issuing CA) admitted, broker not restarted");
    assert!(da
        .publish(&format!("devices/{}/x", a.client_id), b"1")
        .await
        .is_success());
    assert!(db
        .publish(&format!("devices/{}/x", b.client_id), b"1")
        .await
        .is_success());

    // Revoke the old issuing CA: A is dropped within a second and refused; B stays.
    service.command(&["ca", "revoke-issuing", &old]);
    let t0 = Instant::now();
    match da.event(Duration::from_secs(2)).await {
        Some(Event::Disconnected { reason, .. }) => {
            assert_eq!(reason, ReasonCode::ADMINISTRATIVE_ACTION)
        }
        other => panic!("device A not disconnected: {other:?}"),
    }
    let took = t0.elapsed();
    eprintln!("issuing CA revocation to DISCONNECT: {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    let r = connect(&broker.addr(), &a, &root, None, Tamper::None).await;
    assert_eq!(
        refused_with(r),
        ReasonCode::NOT_AUTHORIZED,
        "A reconnecting"
    );
    assert!(db
        .publish(&format!("devices/{}/x", b.client_id), b"2")
        .await
        .is_success());
    assert!(
        db.event(Duration::from_millis(300)).await.is_none(),
        "B keeps its connection"
    );
    drop(db);
    connect(&broker.addr(), &b, &root, None, Tamper::None)
        .await
        .expect("B reconnects");
    assert!(
        broker.log().contains("issuing CA revoked"),
        "{}",
        broker.log()
    );
}

/// The first device the service registers from an issuing CA other than `old` (the serving
/// process switches through its feed after `ca rotate`).
async fn register_under_new_ca(service: &Service, old: &str, prefix: &str) -> DeviceCreds {
    let started = Instant::now();
    for n in 1.. {
        let creds = service.register_device(&format!("{prefix}{n}")).await;
        if issuer(&creds) != old {
            return creds;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the service still issues from the old CA"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    unreachable!("the loop returns or panics")
}

/// The ids of each CA set the plugin logged, in order.
fn logged_ca_sets(log: &str) -> Vec<Vec<String>> {
    const MARK: &str = "CA set from the service: ";
    log.lines()
        .filter_map(|l| l.split_once(MARK))
        .filter_map(|(_, rest)| rest.split_once('(')?.1.strip_suffix(')'))
        .map(|ids| {
            let mut v: Vec<String> = ids.split(", ").map(str::to_string).collect();
            v.sort();
            v
        })
        .collect()
}

/// Waits until the last CA set the plugin took from the service holds exactly `ids`.
async fn wait_for_ca_set(broker: &Broker, ids: &[&str]) {
    let mut want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    want.sort();
    wait_until(
        &format!("the broker takes the CA set {want:?}"),
        Duration::from_secs(10),
        || {
            let last = logged_ca_sets(&broker.log()).pop();
            let ok = last.as_ref() == Some(&want);
            async move { ok }
        },
    )
    .await;
}

async fn mutual_tls_follows_the_ca_set(backend: Backend) {
    let service = Service::start_with(&backend, &[]).await;
    let identity = service.enroll_broker(NAME).await;
    let mut settings = BrokerSettings::new(&service, identity);
    settings.tls = true;
    let broker = Broker::start(settings);
    let tls = format!("127.0.0.1:{}", broker.tls_port);
    let root = service.root_der();

    let a = service
        .register_device(&format!("hw-mtls-a-{}", backend.name()))
        .await;
    let old = issuer(&a);
    wait_for_ca_set(&broker, &[&old]).await;
    drop(
        connect_tls(&tls, NAME, &a, &root, None)
            .await
            .expect("device A (old issuing CA) admitted over mutual TLS"),
    );

    service.command(&["ca", "rotate"]);
    let b = register_under_new_ca(&service, &old, &format!("hw-mtls-b-{}-", backend.name())).await;
    let new = issuer(&b);
    // The feed's rotation entry makes the plugin fetch the set again.
    wait_for_ca_set(&broker, &[&new, &old]).await;
    let db = connect_tls(&tls, NAME, &b, &root, None)
        .await
        .expect("device B (new issuing CA) admitted over mutual TLS, broker not restarted");
    assert!(db
        .publish(&format!("devices/{}/x", b.client_id), b"1")
        .await
        .is_success());
    drop(db);
    drop(
        connect_tls(&tls, NAME, &a, &root, None)
            .await
            .expect("device A (retired issuing CA) still admitted"),
    );

    service.command(&["ca", "revoke-issuing", &old]);
    wait_for_ca_set(&broker, &[&new]).await;
    let r = connect_tls(&tls, NAME, &a, &root, None).await;
    assert_eq!(
        refused_with(r),
        ReasonCode::NOT_AUTHORIZED,
        "A (revoked issuing CA) over mutual TLS"
    );
    connect_tls(&tls, NAME, &b, &root, None)
        .await
        .expect("B reconnects over mutual TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_devices_of_a_rotated_issuing_ca_and_refuses_those_of_a_revoked_one() {
    for backend in backends() {
        mutual_tls_follows_the_ca_set(backend).await;
    }
}
