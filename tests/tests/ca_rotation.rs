//! The issuing CA's rotation and revocation through the real binaries and a real Mosquitto:
//! devices under the old and the new issuing CA connect to the same broker without a restart;
//! revoking the old issuing CA drops and refuses its devices and leaves the others.

use std::process::Command;
use std::time::{Duration, Instant};

use devid_e2e::devid_device::mqtt::ReasonCode;
use devid_e2e::devid_device::Event;
use devid_e2e::*;

const NAME: &str = "mqtt.test.local";

/// `devid-server <args>` on the service's data directory (SQLite): a one-shot command run
/// beside the serving process.
fn server_command(service: &Service, args: &[&str]) -> String {
    let out = Command::new(artifact("devid-server"))
        .arg("--data-dir")
        .arg(service.data_dir.path())
        .args(args)
        .env_remove("DEVID_DATABASE_URL")
        .output()
        .expect("run devid-server");
    assert!(
        out.status.success(),
        "devid-server {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

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

    server_command(&service, &["ca", "rotate"]);
    // The service switches through its feed (a poll on SQLite): B is the first device it
    // registers from the new issuing CA.
    let started = Instant::now();
    let mut n = 0;
    let b = loop {
        n += 1;
        let creds = service.register_device(&format!("hw-rot-b{n}")).await;
        if issuer(&creds) != old {
            break creds;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the service still issues from the old CA"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
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
    server_command(&service, &["ca", "revoke-issuing", &old]);
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
