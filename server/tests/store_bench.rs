//! A measurement, not a timed test (ignored by default): rows/s of a 10,000-item AllOrNothing
//! registration, and of groups of 1, 16 and 64 single registrations (Independent), on SQLite (durable)
//! and, when `DEVID_TEST_POSTGRES_URL` is set, on a fresh PostgreSQL database.
//!
//! Run: `DEVID_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres cargo test --release -p devid-server --test store_bench -- --ignored --nocapture`

use std::time::Instant;

use devid_server::store::*;
use sqlx::Connection as _;
use sqlx::Executor as _;

fn items(prefix: &str, n: usize) -> Vec<NewDevice> {
    (0..n)
        .map(|i| NewDevice {
            client_id: format!("{prefix}{i}"),
            client_id_generated: true,
            hardware_serial: format!("{prefix}-HW-{i:08}"),
            model: Some("sensor".into()),
            metadata: Some(r#"{"line":"A","shift":2}"#.into()),
            created_at: 1_764_000_000,
            credential: Credential::Certificate(NewCert {
                serial: format!("{prefix}{i:030x}"),
                fingerprint: format!("{prefix}{i:062x}"),
                // About the size of a real IDevID certificate.
                der: vec![0x5a; 560],
                not_before: 1_764_000_000,
                not_after: 253_402_300_799,
                csr_sha256: Some(format!("{i:064x}")),
                spki_sha256: devid_core::csr::spki_sha256(format!("{prefix}{i}").as_bytes()),
                profile: "idevid".into(),
            }),
        })
        .collect()
}

async fn measure(label: &str, store: &Store) {
    let actor = Actor {
        id: "bench".into(),
        name: "bench".into(),
    };
    // Warm up the connection and the statement cache.
    store
        .register(&items("W", 64), RegMode::Independent, &actor, 0)
        .await
        .expect("warm-up");
    for round in 0..3 {
        let batch = items(&format!("B{round}x"), 10_000);
        let t = Instant::now();
        let out = store
            .register(&batch, RegMode::AllOrNothing, &actor, 0)
            .await
            .expect("register");
        let dt = t.elapsed();
        assert!(out.iter().all(|o| matches!(o, Ok(RegOutcome::Created))));
        println!(
            "{label}: 10,000-item AllOrNothing batch in {:.1} ms = {:.0} rows/s",
            dt.as_secs_f64() * 1e3,
            10_000.0 / dt.as_secs_f64()
        );
    }
    for size in [1usize, 16, 64] {
        let groups = 200;
        let t = Instant::now();
        for g in 0..groups {
            let group = items(&format!("G{size}x{g}x"), size);
            store
                .register(&group, RegMode::Independent, &actor, 0)
                .await
                .expect("register");
        }
        let dt = t.elapsed();
        println!(
            "{label}: groups of {size} Independent registrations: {:.2} ms per group = {:.0} rows/s",
            dt.as_secs_f64() * 1e3 / groups as f64,
            (groups * size) as f64 / dt.as_secs_f64()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run with --ignored --nocapture, preferably --release"]
async fn register_throughput() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::connect_sqlite(&dir.path().join("devid.db"), true)
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    measure("sqlite (durable)", &store).await;
    store.close().await;

    let Ok(admin_url) = std::env::var("DEVID_TEST_POSTGRES_URL") else {
        println!("postgres: DEVID_TEST_POSTGRES_URL not set, skipped");
        return;
    };
    let name = format!("devid_bench_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("admin");
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create");
    let (prefix, _) = admin_url.rsplit_once('/').expect("url with a path");
    let store = Store::connect_postgres(&format!("{prefix}/{name}"))
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    measure("postgres", &store).await;
    store.close().await;
    admin
        .execute(format!("DROP DATABASE {name} WITH (FORCE)").as_str())
        .await
        .expect("drop");
}
