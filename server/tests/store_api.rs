//! Storage tests. Every test runs on SQLite (a temporary directory) and, when
//! `DEVID_TEST_POSTGRES_URL` is set (e.g. `postgres://postgres@127.0.0.1:5432/postgres`), on a
//! fresh PostgreSQL database created for the test and dropped afterwards.
//!
//! Run: `DEVID_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres cargo nextest run -p devid-server --test store_api`

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use devid_core::api::{
    CertState, ConnectionEventKind, DeviceState, RevocationAction, RevocationReason,
    RevocationScope, Role,
};
use devid_server::domain::fleet::{Batch, Event};
use devid_server::store::*;
use sqlx::Connection as _;
use sqlx::Executor as _;

// ---- harness ----------------------------------------------------------------------------------

struct PgDb {
    admin_url: String,
    name: String,
    url: String,
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let admin = self.admin_url.clone();
        let name = self.name.clone();
        // Runs even when the test panicked; its own runtime because Drop cannot await.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                    let _ = c
                        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                        .await;
                }
            });
        })
        .join();
    }
}

struct Env {
    store: Store,
    dir: Option<tempfile::TempDir>,
    pg: Option<PgDb>,
}

static COUNTER: AtomicU64 = AtomicU64::new(1);

fn unique() -> u64 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

impl Env {
    async fn sqlite() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::connect_sqlite(&dir.path().join("devid.db"), true)
            .await
            .expect("connect sqlite");
        store.migrate().await.expect("migrate");
        Env {
            store,
            dir: Some(dir),
            pg: None,
        }
    }

    async fn postgres() -> Option<Env> {
        let admin_url = common::postgres_url()?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .subsec_nanos();
        let name = format!("devid_test_p{}_{}_{}", std::process::id(), nanos, unique());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("connect admin");
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create database");
        let base = admin_url.split('?').next().unwrap_or(&admin_url);
        let (prefix, _) = base.rsplit_once('/').expect("url with a database path");
        let url = format!("{prefix}/{name}");
        let pg = PgDb {
            admin_url,
            name,
            url: url.clone(),
        };
        let store = Store::connect_postgres(&url)
            .await
            .expect("connect postgres");
        store.migrate().await.expect("migrate");
        Some(Env {
            store,
            dir: None,
            pg: Some(pg),
        })
    }

    /// Runs SQL on the database behind the store's back (to set up what an older server left).
    async fn raw_exec(&self, sql: &str) {
        match (&self.dir, &self.pg) {
            (Some(dir), _) => {
                let mut c = sqlx::SqliteConnection::connect(&format!(
                    "sqlite://{}",
                    dir.path().join("devid.db").display()
                ))
                .await
                .expect("connect sqlite");
                c.execute(sql).await.expect("raw sql");
            }
            (None, Some(pg)) => {
                let mut c = sqlx::PgConnection::connect(&pg.url)
                    .await
                    .expect("connect postgres");
                c.execute(sql).await.expect("raw sql");
            }
            _ => unreachable!("an Env has a directory or a database"),
        }
    }

    /// A second, independent Store on the same database ("another process").
    async fn another(&self) -> Store {
        let s = match (&self.dir, &self.pg) {
            (Some(dir), _) => Store::connect_sqlite(&dir.path().join("devid.db"), true).await,
            (None, Some(pg)) => Store::connect_postgres(&pg.url).await,
            _ => unreachable!("an Env has a directory or a database"),
        }
        .expect("connect another");
        s.migrate().await.expect("migrate again");
        s
    }
}

/// Declares `mod <name> { sqlite, postgres }` test pairs running `async fn <name>(Env)`.
macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::Env::sqlite().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                match super::Env::postgres().await {
                    Some(env) => super::$name(env).await,
                    None => eprintln!("DEVID_TEST_POSTGRES_URL not set: skipped"),
                }
            }
        }
    )*};
}

both!(
    migrate_twice_and_ping,
    tokens_bootstrap_find_list_revoke,
    register_stores_device_cert_and_audit,
    replay_same_csr_returns_existing_else_conflicts,
    duplicates_within_one_call_see_the_earlier_item,
    all_or_nothing_conflict_leaves_nothing_behind,
    independent_mode_commits_the_good_items,
    large_batch_spans_several_chunks,
    list_devices_filters_and_pages,
    revoke_device_revokes_all_certs_once,
    suspend_and_resume_toggle_hold,
    revoke_certificate_once,
    feed_seq_increases_by_one_and_pages,
    feed_page_and_head_come_from_one_snapshot,
    crl_compare_and_set,
    audit_filters_and_pages,
    concurrent_same_serial_from_two_stores_makes_one_device,
    concurrent_revocations_from_two_stores_keep_feed_gap_free,
    feed_listener_sees_other_store_commits,
    events_policy_and_models,
    bootstrap_admin_is_atomic_across_stores,
    racing_changes_to_one_device_apply_once,
    reopening_keeps_devices_feed_and_crl,
    overlapping_batches_from_two_stores_do_not_fail,
    conflict_in_a_later_chunk_leaves_nothing_behind,
    many_rows_in_one_call_keep_each_certificate_with_its_device,
    one_key_belongs_to_one_device,
    compromised_keys_are_refused_for_good,
    concurrent_same_key_from_two_stores_makes_one_device,
    keys_of_earlier_certificates_are_bound_on_open,
    a_lease_has_one_holder_until_released_or_lapsed,
    tables_grown_in_bulk_get_fresh_planner_statistics,
);

// ---- helpers ----------------------------------------------------------------------------------

const T0: i64 = 1_764_000_000;

fn actor() -> Actor {
    Actor {
        id: "tok1".into(),
        name: "line-1".into(),
    }
}

fn admin() -> Actor {
    Actor {
        id: "tok0".into(),
        name: "admin".into(),
    }
}

/// A device with a fresh, unique certificate serial and fingerprint.
fn dev(serial: &str, client_id: &str, csr: Option<&str>) -> NewDevice {
    let n = unique();
    NewDevice {
        client_id: client_id.to_string(),
        client_id_generated: false,
        hardware_serial: serial.to_string(),
        model: Some("sensor".into()),
        metadata: Some(r#"{"line":1}"#.into()),
        created_at: T0,
        credential: Credential::Certificate(NewCert {
            serial: format!("{:016x}{:016x}", std::process::id(), n),
            fingerprint: format!("{:064x}", n),
            der: vec![0x30, 0x03, (n & 0xff) as u8, 1, 2],
            not_before: T0,
            not_after: T0 + 20 * 365 * 86400,
            csr_sha256: csr.map(str::to_string),
            // Every fixture has a key of its own (a replay is recognized before keys count).
            spki_sha256: devid_core::csr::spki_sha256(&n.to_be_bytes()),
            profile: "idevid".into(),
        }),
    }
}

fn taken(holder: &str, differs: &'static str) -> RegConflict {
    RegConflict::SerialTaken {
        holder: holder.into(),
        differs,
    }
}

async fn register_one(s: &Store, d: &NewDevice) -> Result<RegOutcome, RegConflict> {
    let mut v = s
        .register(std::slice::from_ref(d), RegMode::Independent, &actor(), T0)
        .await
        .expect("register");
    assert_eq!(v.len(), 1);
    v.remove(0)
}

async fn audit_count(s: &Store, action: &str) -> usize {
    let (mut n, mut after) = (0, None);
    loop {
        let page = s
            .list_audit(None, None, after, 10_000)
            .await
            .expect("audit");
        let Some(last) = page.last() else { return n };
        after = Some(last.id);
        n += page.iter().filter(|a| a.record.action == action).count();
    }
}

fn token(id: &str, role: Role, hash: &[u8]) -> TokenRow {
    TokenRow {
        id: id.into(),
        name: format!("name-{id}"),
        role,
        models: Some(vec!["sensor".into()]),
        hash: hash.to_vec(),
        created_at: T0,
        expires_at: Some(T0 + 3600),
        revoked_at: None,
    }
}

fn audit_rec(actor: &Actor, action: &str, target: &str, at: i64) -> AuditRecord {
    AuditRecord {
        at,
        actor: actor.clone(),
        action: action.into(),
        target: target.into(),
        outcome: "ok".into(),
        detail: None,
    }
}

// ---- tests ------------------------------------------------------------------------------------

async fn migrate_twice_and_ping(env: Env) {
    env.store
        .migrate()
        .await
        .expect("second migrate is a no-op");
    env.store.ping().await.expect("ping");
    assert_eq!(env.store.is_postgres(), env.pg.is_some());
    assert_eq!(env.store.feed_head().await.expect("head"), 0);
    assert!(env.store.crl_get().await.expect("crl").is_none());
}

async fn tokens_bootstrap_find_list_revoke(env: Env) {
    let s = &env.store;
    let a = token("a", Role::Admin, b"hash-a");
    assert!(s
        .bootstrap_admin(
            &a,
            &audit_rec(
                &Actor {
                    id: "system".into(),
                    name: "system".into()
                },
                "token.bootstrap",
                "a",
                T0
            )
        )
        .await
        .expect("bootstrap"));
    let b = token("b", Role::Admin, b"hash-b");
    assert!(!s
        .bootstrap_admin(&b, &audit_rec(&admin(), "token.bootstrap", "b", T0))
        .await
        .expect("second bootstrap"));
    let f = token("f", Role::Factory, b"hash-f");
    s.insert_token(&f, &audit_rec(&admin(), "token.create", "f", T0 + 1))
        .await
        .expect("insert");
    // Same hash twice is refused.
    assert!(s
        .insert_token(
            &token("g", Role::Broker, b"hash-f"),
            &audit_rec(&admin(), "token.create", "g", T0)
        )
        .await
        .is_err());
    let found = s
        .find_token_by_hash(b"hash-f")
        .await
        .expect("find")
        .expect("some");
    assert_eq!(found.id, "f");
    assert_eq!(found.role, Role::Factory);
    assert_eq!(found.models, Some(vec!["sensor".to_string()]));
    assert_eq!(found.expires_at, Some(T0 + 3600));
    assert!(s.find_token_by_hash(b"nope").await.expect("find").is_none());
    let all: Vec<String> = s
        .list_tokens()
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(all, vec!["a", "f"]);
    let r = s
        .revoke_token(
            "f",
            T0 + 10,
            &audit_rec(&admin(), "token.revoke", "f", T0 + 10),
        )
        .await
        .expect("revoke");
    assert_eq!(r.revoked_at, Some(T0 + 10));
    let r = s
        .revoke_token(
            "f",
            T0 + 20,
            &audit_rec(&admin(), "token.revoke", "f", T0 + 20),
        )
        .await
        .expect("revoke again");
    assert_eq!(
        r.revoked_at,
        Some(T0 + 10),
        "second revocation keeps the first time"
    );
    assert!(matches!(
        s.revoke_token("zzz", T0, &audit_rec(&admin(), "token.revoke", "zzz", T0))
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(audit_count(s, "token.bootstrap").await, 1);
    assert_eq!(audit_count(s, "token.create").await, 1);
    assert_eq!(audit_count(s, "token.revoke").await, 2);
}

async fn register_stores_device_cert_and_audit(env: Env) {
    let s = &env.store;
    let d = dev("HW-1", "SNabc123", Some("csr1"));
    assert!(matches!(register_one(s, &d).await, Ok(RegOutcome::Created)));
    let got = s.get_device("SNabc123").await.expect("get").expect("some");
    assert_eq!(got.device.hardware_serial, "HW-1");
    assert_eq!(got.device.status, DeviceState::Active);
    assert_eq!(got.device.model.as_deref(), Some("sensor"));
    assert_eq!(got.device.metadata.as_deref(), Some(r#"{"line":1}"#));
    assert_eq!(got.device.created_at, T0);
    assert_eq!(got.certs.len(), 1);
    let c = &got.certs[0];
    assert_eq!(c.serial, d.cert().expect("a device").serial);
    assert_eq!(c.client_id, "SNabc123");
    assert_eq!(c.der, d.cert().expect("a device").der);
    assert_eq!(c.status, CertState::Good);
    assert_eq!(c.csr_sha256.as_deref(), Some("csr1"));
    let by_serial = s
        .get_certificate(&d.cert().expect("a device").serial)
        .await
        .expect("cert")
        .expect("some");
    assert_eq!(
        by_serial.fingerprint,
        d.cert().expect("a device").fingerprint
    );
    assert!(s.get_certificate("00").await.expect("cert").is_none());
    assert!(s.get_device("nobody").await.expect("get").is_none());
    assert!(s.hardware_serial_exists("HW-1").await.expect("exists"));
    assert!(!s.hardware_serial_exists("HW-2").await.expect("exists"));
    assert!(s.client_id_exists("SNabc123").await.expect("exists"));
    assert_eq!(
        s.get_device_by_serial("HW-1")
            .await
            .expect("get")
            .expect("some")
            .device
            .client_id,
        "SNabc123"
    );
    let audit = s.list_audit(None, None, None, 0).await.expect("audit");
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].record.action, "device.register");
    assert_eq!(audit[0].record.target, "SNabc123");
    assert_eq!(audit[0].record.actor.name, "line-1");
    assert_eq!(s.count_devices().await.expect("count"), 1);
}

async fn replay_same_csr_returns_existing_else_conflicts(env: Env) {
    let s = &env.store;
    let first = dev("HW-1", "CID1", Some("csr1"));
    assert!(matches!(
        register_one(s, &first).await,
        Ok(RegOutcome::Created)
    ));
    // Same serial, same CSR, a freshly generated ClientID and certificate: the stored device.
    let mut replay = dev("HW-1", "CID-other", Some("csr1"));
    replay.client_id_generated = true;
    match register_one(s, &replay).await {
        Ok(RegOutcome::Existing(d)) => {
            assert_eq!(d.device.client_id, "CID1");
            assert_eq!(d.certs.len(), 1);
            assert_eq!(d.certs[0].serial, first.cert().expect("a device").serial);
        }
        other => panic!("expected Existing, got {other:?}"),
    }
    assert!(s
        .get_certificate(&replay.cert().expect("a device").serial)
        .await
        .expect("get")
        .is_none());
    assert_eq!(
        register_one(s, &dev("HW-1", "CID2", Some("csr2")))
            .await
            .err(),
        Some(taken("CID1", "csr"))
    );
    assert_eq!(
        register_one(s, &dev("HW-1", "CID2", None)).await.err(),
        Some(taken("CID1", "generate_key"))
    );
    // The same CSR under another ClientID, model or metadata is not a replay.
    assert_eq!(
        register_one(s, &dev("HW-1", "CID2", Some("csr1")))
            .await
            .err(),
        Some(taken("CID1", "client_id"))
    );
    let mut other_model = dev("HW-1", "CID1", Some("csr1"));
    other_model.model = Some("valve".into());
    assert_eq!(
        register_one(s, &other_model).await.err(),
        Some(taken("CID1", "model"))
    );
    let mut other_metadata = dev("HW-1", "CID1", Some("csr1"));
    other_metadata.metadata = Some(r#"{"line":2}"#.into());
    assert_eq!(
        register_one(s, &other_metadata).await.err(),
        Some(taken("CID1", "metadata"))
    );
    assert_eq!(
        register_one(s, &dev("HW-2", "CID1", Some("csr3")))
            .await
            .err(),
        Some(RegConflict::ClientIdTaken)
    );
    // A device whose key devid generated can never be replayed.
    assert!(matches!(
        register_one(s, &dev("HW-3", "CID3", None)).await,
        Ok(RegOutcome::Created)
    ));
    assert_eq!(
        register_one(s, &dev("HW-3", "CID4", None)).await.err(),
        Some(taken("CID3", "generate_key"))
    );
    assert_eq!(s.count_devices().await.expect("count"), 2);
    assert_eq!(audit_count(s, "device.register").await, 2);
}

async fn duplicates_within_one_call_see_the_earlier_item(env: Env) {
    let s = &env.store;
    let items = vec![
        dev("HW-1", "C1", Some("csr1")),
        dev("HW-1", "C1", Some("csr1")),  // replay of item 0
        dev("HW-1", "C1c", Some("csrX")), // serial taken by item 0
        dev("HW-2", "C1", Some("csr2")),  // ClientID taken by item 0
        dev("HW-3", "C3", Some("csr3")),
    ];
    let out = s
        .register(&items, RegMode::Independent, &actor(), T0)
        .await
        .expect("register");
    assert!(matches!(out[0], Ok(RegOutcome::Created)));
    match &out[1] {
        Ok(RegOutcome::Existing(d)) => {
            assert_eq!(d.device.client_id, "C1");
            assert_eq!(d.certs[0].serial, items[0].cert().expect("a device").serial);
        }
        other => panic!("expected Existing, got {other:?}"),
    }
    assert_eq!(out[2].as_ref().err(), Some(&taken("C1", "csr")));
    assert_eq!(out[3].as_ref().err(), Some(&RegConflict::ClientIdTaken));
    assert!(matches!(out[4], Ok(RegOutcome::Created)));
    assert_eq!(s.count_devices().await.expect("count"), 2);
    // All or nothing: an in-call replay is fine, an in-call conflict names its index.
    let ok = vec![
        dev("HW-10", "C10", Some("a")),
        dev("HW-10", "C10", Some("a")),
    ];
    let out = s
        .register(&ok, RegMode::AllOrNothing, &actor(), T0)
        .await
        .expect("register");
    assert!(matches!(out[0], Ok(RegOutcome::Created)));
    assert!(matches!(out[1], Ok(RegOutcome::Existing(_))));
    let bad = vec![
        dev("HW-11", "C11", Some("a")),
        dev("HW-11", "C11x", Some("b")),
    ];
    match s.register(&bad, RegMode::AllOrNothing, &actor(), T0).await {
        Err(StoreError::BatchConflict {
            index: 1,
            conflict: RegConflict::SerialTaken { .. },
        }) => {}
        other => panic!("expected BatchConflict at 1, got {other:?}"),
    }
    assert!(s.get_device("C11").await.expect("get").is_none());
}

async fn all_or_nothing_conflict_leaves_nothing_behind(env: Env) {
    let s = &env.store;
    assert!(matches!(
        register_one(s, &dev("HW-0", "TAKEN", Some("c0"))).await,
        Ok(RegOutcome::Created)
    ));
    let before_audit = s
        .list_audit(None, None, None, 10_000)
        .await
        .expect("audit")
        .len();
    let mut items: Vec<NewDevice> = (0..100)
        .map(|i| dev(&format!("B-{i}"), &format!("B{i}"), Some("c")))
        .collect();
    items[57].client_id = "TAKEN".into();
    match s
        .register(&items, RegMode::AllOrNothing, &actor(), T0)
        .await
    {
        Err(StoreError::BatchConflict {
            index: 57,
            conflict: RegConflict::ClientIdTaken,
        }) => {}
        other => panic!("expected BatchConflict at 57, got {other:?}"),
    }
    assert_eq!(s.count_devices().await.expect("count"), 1);
    for it in &items {
        assert!(s
            .get_certificate(&it.cert().expect("a device").serial)
            .await
            .expect("cert")
            .is_none());
    }
    assert!(s.get_device("B0").await.expect("get").is_none());
    assert_eq!(
        s.list_audit(None, None, None, 10_000)
            .await
            .expect("audit")
            .len(),
        before_audit
    );
    // The same batch without the conflict goes through whole.
    items[57].client_id = "B57".into();
    let out = s
        .register(&items, RegMode::AllOrNothing, &actor(), T0)
        .await
        .expect("register");
    assert!(out.iter().all(|o| matches!(o, Ok(RegOutcome::Created))));
    assert_eq!(s.count_devices().await.expect("count"), 101);
    assert_eq!(audit_count(s, "device.register").await, 101);
}

async fn independent_mode_commits_the_good_items(env: Env) {
    let s = &env.store;
    assert!(matches!(
        register_one(s, &dev("HW-X", "X", Some("x"))).await,
        Ok(RegOutcome::Created)
    ));
    let items = vec![
        dev("I-0", "I0", Some("a")),
        dev("HW-X", "I1", Some("other")),
        dev("I-2", "X", Some("b")),
        dev("I-3", "I3", Some("c")),
    ];
    let out = s
        .register(&items, RegMode::Independent, &actor(), T0)
        .await
        .expect("register");
    assert!(matches!(out[0], Ok(RegOutcome::Created)));
    assert_eq!(out[1].as_ref().err(), Some(&taken("X", "csr")));
    assert_eq!(out[2].as_ref().err(), Some(&RegConflict::ClientIdTaken));
    assert!(matches!(out[3], Ok(RegOutcome::Created)));
    assert!(s.get_device("I0").await.expect("get").is_some());
    assert!(s.get_device("I3").await.expect("get").is_some());
    assert!(s.get_device("I1").await.expect("get").is_none());
    assert_eq!(s.count_devices().await.expect("count"), 3);
    assert_eq!(audit_count(s, "device.register").await, 3);
}

/// The conflicting item sits in the last of several statement-sized chunks: the chunks stored
/// before it must be rolled back with it.
async fn conflict_in_a_later_chunk_leaves_nothing_behind(env: Env) {
    let s = &env.store;
    assert!(matches!(
        register_one(s, &dev("HW-0", "TAKEN", Some("c0"))).await,
        Ok(RegOutcome::Created)
    ));
    let mut items: Vec<NewDevice> = (0..5_000)
        .map(|i| dev(&format!("K-{i}"), &format!("K{i}"), Some("c")))
        .collect();
    items[4_900].client_id = "TAKEN".into();
    match s
        .register(&items, RegMode::AllOrNothing, &actor(), T0)
        .await
    {
        Err(StoreError::BatchConflict {
            index: 4_900,
            conflict: RegConflict::ClientIdTaken,
        }) => {}
        other => panic!("expected BatchConflict at 4900, got {other:?}"),
    }
    assert_eq!(s.count_devices().await.expect("count"), 1);
    assert!(s.get_device("K0").await.expect("get").is_none());
    assert!(s
        .get_certificate(&items[0].cert().expect("a device").serial)
        .await
        .expect("cert")
        .is_none());
    assert_eq!(audit_count(s, "device.register").await, 1);
}

/// Every device stored by one multi-row call gets its own certificate (not a neighbour's) and
/// its own audit row.
async fn many_rows_in_one_call_keep_each_certificate_with_its_device(env: Env) {
    let s = &env.store;
    let items: Vec<NewDevice> = (0..300)
        .map(|i| dev(&format!("M-{i}"), &format!("M{i}"), Some(&format!("m{i}"))))
        .collect();
    let out = s
        .register(&items, RegMode::Independent, &actor(), T0)
        .await
        .expect("register");
    assert!(out.iter().all(|o| matches!(o, Ok(RegOutcome::Created))));
    for it in &items {
        let got = s
            .get_device(&it.client_id)
            .await
            .expect("get")
            .expect("some");
        assert_eq!(got.device.hardware_serial, it.hardware_serial);
        assert_eq!(got.certs.len(), 1, "{}", it.client_id);
        assert_eq!(
            got.certs[0].serial,
            it.cert().expect("a device").serial,
            "{}",
            it.client_id
        );
        assert_eq!(
            got.certs[0].fingerprint,
            it.cert().expect("a device").fingerprint
        );
        assert_eq!(
            got.certs[0].csr_sha256,
            it.cert().expect("a device").csr_sha256
        );
        let cert = s
            .get_certificate(&it.cert().expect("a device").serial)
            .await
            .expect("cert")
            .expect("some");
        assert_eq!(cert.client_id, it.client_id);
    }
    let audit = s.list_audit(None, None, None, 10_000).await.expect("audit");
    let targets: HashSet<&str> = audit
        .iter()
        .filter(|a| a.record.action == "device.register")
        .map(|a| a.record.target.as_str())
        .collect();
    assert_eq!(targets.len(), 300);
    assert!(items
        .iter()
        .all(|it| targets.contains(it.client_id.as_str())));
}

async fn large_batch_spans_several_chunks(env: Env) {
    let s = &env.store;
    // 12,000 items: more rows than one multi-row INSERT takes on either backend.
    let items: Vec<NewDevice> = (0..12_000)
        .map(|i| dev(&format!("L-{i}"), &format!("L{i}"), Some(&format!("c{i}"))))
        .collect();
    let out = s
        .register(&items, RegMode::AllOrNothing, &actor(), T0)
        .await
        .expect("register");
    assert_eq!(out.len(), 12_000);
    assert!(out.iter().all(|o| matches!(o, Ok(RegOutcome::Created))));
    assert_eq!(s.count_devices().await.expect("count"), 12_000);
    let last = s.get_device("L11999").await.expect("get").expect("some");
    assert_eq!(
        last.certs[0].serial,
        items[11_999].cert().expect("a device").serial
    );
    // Replaying the whole batch (with freshly generated ClientIDs, as a replay that names none
    // gets) returns every device as Existing and adds nothing.
    let replay: Vec<NewDevice> = (0..12_000)
        .map(|i| NewDevice {
            client_id_generated: true,
            ..dev(&format!("L-{i}"), &format!("R{i}"), Some(&format!("c{i}")))
        })
        .collect();
    let out = s
        .register(&replay, RegMode::AllOrNothing, &actor(), T0)
        .await
        .expect("replay");
    for (i, o) in out.iter().enumerate() {
        match o {
            Ok(RegOutcome::Existing(d)) => assert_eq!(d.device.client_id, format!("L{i}")),
            other => panic!("item {i}: expected Existing, got {other:?}"),
        }
    }
    assert_eq!(s.count_devices().await.expect("count"), 12_000);
    assert_eq!(audit_count(s, "device.register").await, 12_000);
}

async fn list_devices_filters_and_pages(env: Env) {
    let s = &env.store;
    let mut items = Vec::new();
    for i in 0..10 {
        let mut d = dev(&format!("P-{i}"), &format!("P{i}"), Some("c"));
        d.model = Some(if i % 2 == 0 { "even" } else { "odd" }.into());
        d.created_at = T0 + i;
        items.push(d);
    }
    s.register(&items, RegMode::AllOrNothing, &actor(), T0)
        .await
        .expect("register");
    s.revoke_device("P3", RevocationReason::KeyCompromise, T0 + 100, &admin())
        .await
        .expect("revoke");
    s.suspend_device("P4", T0 + 100, &admin(), None)
        .await
        .expect("suspend");
    let all = s
        .list_devices(&DeviceFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(all.len(), 10);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    let page1 = s
        .list_devices(&DeviceFilter {
            limit: 4,
            ..Default::default()
        })
        .await
        .expect("list");
    let page2 = s
        .list_devices(&DeviceFilter {
            limit: 4,
            after_id: Some(page1[3].id),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(page1.len(), 4);
    assert_eq!(page2[0].client_id, "P4");
    let even = s
        .list_devices(&DeviceFilter {
            model: Some("even".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(
        even.iter()
            .map(|d| d.client_id.as_str())
            .collect::<Vec<_>>(),
        vec!["P0", "P2", "P4", "P6", "P8"]
    );
    let revoked = s
        .list_devices(&DeviceFilter {
            status: Some(DeviceState::Revoked),
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].client_id, "P3");
    assert_eq!(revoked[0].reason, Some(RevocationReason::KeyCompromise));
    let suspended = s
        .list_devices(&DeviceFilter {
            status: Some(DeviceState::Suspended),
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(suspended[0].client_id, "P4");
    let late = s
        .list_devices(&DeviceFilter {
            created_after: Some(T0 + 7),
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(
        late.iter()
            .map(|d| d.client_id.as_str())
            .collect::<Vec<_>>(),
        vec!["P8", "P9"]
    );
}

async fn revoke_device_revokes_all_certs_once(env: Env) {
    let s = &env.store;
    let d = dev("HW-1", "R1", Some("c"));
    register_one(s, &d).await.expect("register");
    s.suspend_device("R1", T0 + 1, &admin(), None)
        .await
        .expect("suspend");
    let (got, entry) = s
        .revoke_device(
            "R1",
            RevocationReason::CessationOfOperation,
            T0 + 5,
            &admin(),
        )
        .await
        .expect("revoke");
    assert_eq!(got.device.status, DeviceState::Revoked);
    assert_eq!(got.device.revoked_at, Some(T0 + 5));
    assert_eq!(
        got.device.reason,
        Some(RevocationReason::CessationOfOperation)
    );
    assert!(got.certs.iter().all(|c| c.status == CertState::Revoked
        && c.reason == Some(RevocationReason::CessationOfOperation)
        && c.revoked_at == Some(T0 + 5)));
    assert_eq!(entry.seq, 2);
    assert_eq!(entry.scope, RevocationScope::Device);
    assert_eq!(entry.action, RevocationAction::Revoked);
    assert_eq!(
        entry.serials,
        vec![d.cert().expect("a device").serial.clone()]
    );
    assert_eq!(entry.client_id, "R1");
    match s
        .revoke_device("R1", RevocationReason::KeyCompromise, T0 + 6, &admin())
        .await
    {
        Err(StoreError::InvalidTransition(m)) => assert_eq!(m, "device is already revoked"),
        other => panic!("expected InvalidTransition, got {other:?}"),
    }
    assert!(matches!(
        s.revoke_device("nobody", RevocationReason::KeyCompromise, T0, &admin())
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.revoke_device("R1", RevocationReason::CertificateHold, T0, &admin())
            .await,
        Err(StoreError::InvalidTransition(_))
    ));
    assert!(matches!(
        s.suspend_device("R1", T0, &admin(), None).await,
        Err(StoreError::InvalidTransition(_))
    ));
    assert!(matches!(
        s.resume_device("R1", T0, &admin()).await,
        Err(StoreError::InvalidTransition(_))
    ));
    assert_eq!(s.feed_head().await.expect("head"), 2);
    assert_eq!(audit_count(s, "device.revoke").await, 1);
    let crl = s.crl_listing().await.expect("crl");
    assert_eq!(crl.len(), 1);
    assert_eq!(crl[0].serial, d.cert().expect("a device").serial);
    assert_eq!(crl[0].reason_code, 5);
    assert_eq!(crl[0].revoked_at, T0 + 5);
}

async fn suspend_and_resume_toggle_hold(env: Env) {
    let s = &env.store;
    let d = dev("HW-1", "S1", Some("c"));
    register_one(s, &d).await.expect("register");
    let (got, entry) = s
        .suspend_device("S1", T0 + 1, &admin(), None)
        .await
        .expect("suspend");
    let entry = entry.expect("an entry");
    assert_eq!(got.device.status, DeviceState::Suspended);
    assert_eq!(got.certs[0].status, CertState::Hold);
    assert_eq!(entry.action, RevocationAction::Suspended);
    assert_eq!(entry.reason, Some(RevocationReason::CertificateHold));
    assert_eq!(
        entry.serials,
        vec![d.cert().expect("a device").serial.clone()]
    );
    let crl = s.crl_listing().await.expect("crl");
    assert_eq!(crl.len(), 1);
    assert_eq!(crl[0].reason_code, 6);
    let (_, again) = s
        .suspend_device("S1", T0 + 2, &admin(), None)
        .await
        .expect("suspend again");
    assert!(again.is_none());
    let (got, entry) = s
        .resume_device("S1", T0 + 3, &admin())
        .await
        .expect("resume");
    let entry = entry.expect("an entry");
    assert_eq!(entry.seq, 2);
    assert_eq!(entry.action, RevocationAction::Resumed);
    assert_eq!(got.device.status, DeviceState::Active);
    assert_eq!(got.certs[0].status, CertState::Good);
    assert_eq!(got.certs[0].revoked_at, None);
    assert!(s.crl_listing().await.expect("crl").is_empty());
    let (_, again) = s
        .resume_device("S1", T0 + 4, &admin())
        .await
        .expect("resume again");
    assert!(again.is_none());
    assert_eq!(s.feed_head().await.expect("head"), 2);
    assert!(matches!(
        s.suspend_device("nobody", T0, &admin(), None).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.resume_device("nobody", T0, &admin()).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(audit_count(s, "device.suspend").await, 1);
    assert_eq!(audit_count(s, "device.resume").await, 1);
}

async fn revoke_certificate_once(env: Env) {
    let s = &env.store;
    let d = dev("HW-1", "V1", Some("c"));
    register_one(s, &d).await.expect("register");
    let (cert, entry) = s
        .revoke_certificate(
            &d.cert().expect("a device").serial,
            RevocationReason::Superseded,
            T0 + 9,
            &admin(),
        )
        .await
        .expect("revoke");
    assert_eq!(cert.status, CertState::Revoked);
    assert_eq!(cert.reason, Some(RevocationReason::Superseded));
    assert_eq!(entry.scope, RevocationScope::Certificate);
    assert_eq!(entry.client_id, "V1");
    assert_eq!(
        entry.serials,
        vec![d.cert().expect("a device").serial.clone()]
    );
    assert!(matches!(
        s.revoke_certificate(
            &d.cert().expect("a device").serial,
            RevocationReason::KeyCompromise,
            T0,
            &admin()
        )
        .await,
        Err(StoreError::InvalidTransition(_))
    ));
    assert!(matches!(
        s.revoke_certificate("ffff", RevocationReason::KeyCompromise, T0, &admin())
            .await,
        Err(StoreError::NotFound)
    ));
    // The device itself stays active.
    assert_eq!(
        s.get_device("V1")
            .await
            .expect("get")
            .expect("some")
            .device
            .status,
        DeviceState::Active
    );
    let crl = s.crl_listing().await.expect("crl");
    assert_eq!(crl.len(), 1);
    assert_eq!(crl[0].reason_code, 4);
    assert_eq!(audit_count(s, "certificate.revoke").await, 1);
}

async fn feed_seq_increases_by_one_and_pages(env: Env) {
    let s = &env.store;
    let items: Vec<NewDevice> = (0..7)
        .map(|i| dev(&format!("F-{i}"), &format!("F{i}"), Some("c")))
        .collect();
    s.register(&items, RegMode::AllOrNothing, &actor(), T0)
        .await
        .expect("register");
    for i in 0..7 {
        let (_, e) = s
            .revoke_device(
                &format!("F{i}"),
                RevocationReason::Unspecified,
                T0 + i,
                &admin(),
            )
            .await
            .expect("revoke");
        assert_eq!(e.seq, i + 1);
    }
    let (all, head) = s.feed_since(0, 100).await.expect("feed");
    assert_eq!(head, 7);
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    assert_eq!(all[2].client_id, "F2");
    assert_eq!(
        all[2].serials,
        vec![items[2].cert().expect("a device").serial.clone()]
    );
    assert_eq!(all[2].at, T0 + 2);
    let (page, head) = s.feed_since(3, 2).await.expect("feed");
    assert_eq!(head, 7);
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4, 5]);
    let (none, head) = s.feed_since(7, 10).await.expect("feed");
    assert!(none.is_empty());
    assert_eq!(head, 7);
}

/// While revocations commit, a page that is not full must end exactly at the head it comes
/// with (entries and head from one snapshot).
async fn feed_page_and_head_come_from_one_snapshot(env: Env) {
    let s = env.store.clone();
    const N: i64 = 60;
    let items: Vec<NewDevice> = (0..N)
        .map(|i| dev(&format!("S-{i}"), &format!("S{i}"), Some("c")))
        .collect();
    s.register(&items, RegMode::AllOrNothing, &actor(), T0)
        .await
        .expect("register");
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 0..N {
                s.revoke_device(
                    &format!("S{i}"),
                    RevocationReason::Unspecified,
                    T0 + i,
                    &admin(),
                )
                .await
                .expect("revoke");
                tokio::task::yield_now().await;
            }
        })
    };
    let mut reads = 0;
    loop {
        let (entries, head) = s.feed_since(0, 1000).await.expect("feed");
        reads += 1;
        let last = entries.last().map_or(0, |e| e.seq);
        assert_eq!(
            last, head,
            "a short page must end at its head (read {reads})"
        );
        if head == N {
            break;
        }
    }
    writer.await.expect("writer");
}

async fn crl_compare_and_set(env: Env) {
    let s = &env.store;
    let row = |number: i64| CrlRow {
        number,
        feed_head: number * 10,
        der: vec![number as u8; 3],
        this_update: T0 + number,
        next_update: T0 + number + 3600,
    };
    assert!(s.crl_put(&row(1), None).await.expect("put"));
    assert!(
        !s.crl_put(&row(1), None).await.expect("put"),
        "a second first CRL is refused"
    );
    assert!(
        !s.crl_put(&row(3), Some(2)).await.expect("put"),
        "wrong previous number"
    );
    assert!(
        !s.crl_put(&row(1), Some(1)).await.expect("put"),
        "number must increase"
    );
    assert!(s.crl_put(&row(2), Some(1)).await.expect("put"));
    assert!(
        !s.crl_put(&row(3), Some(1)).await.expect("put"),
        "lost the race"
    );
    let got = s.crl_get().await.expect("get").expect("some");
    assert_eq!(got.number, 2);
    assert_eq!(got.feed_head, 20);
    assert_eq!(got.der, vec![2, 2, 2]);
    assert_eq!(got.next_update, T0 + 2 + 3600);
    // Two stores racing for the same next number: exactly one wins.
    let other = env.another().await;
    let (r3a, r3b) = (row(3), row(3));
    let (a, b) = tokio::join!(s.crl_put(&r3a, Some(2)), other.crl_put(&r3b, Some(2)));
    assert_eq!(
        [a.expect("a"), b.expect("b")]
            .iter()
            .filter(|w| **w)
            .count(),
        1
    );
    assert_eq!(s.crl_get().await.expect("get").expect("some").number, 3);
}

async fn audit_filters_and_pages(env: Env) {
    let s = &env.store;
    let alice = Actor {
        id: "t-a".into(),
        name: "alice".into(),
    };
    let bob = Actor {
        id: "t-b".into(),
        name: "bob".into(),
    };
    for i in 0..6 {
        let who = if i % 2 == 0 { &alice } else { &bob };
        s.insert_audit(&AuditRecord {
            at: T0 + i,
            actor: who.clone(),
            action: "thing.do".into(),
            target: format!("t{i}"),
            outcome: if i == 5 {
                "error: nope".into()
            } else {
                "ok".into()
            },
            detail: (i == 3).then(|| "returned for repair".to_string()),
        })
        .await
        .expect("insert");
    }
    let all = s.list_audit(None, None, None, 100).await.expect("audit");
    let details: Vec<Option<&str>> = all.iter().map(|a| a.record.detail.as_deref()).collect();
    assert_eq!(
        details,
        [None, None, None, Some("returned for repair"), None, None],
        "the detail comes back with its row only"
    );
    let all = s.list_audit(None, None, None, 100).await.expect("list");
    assert_eq!(all.len(), 6);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(all[5].record.outcome, "error: nope");
    let by_id = s
        .list_audit(None, Some("t-a"), None, 100)
        .await
        .expect("list");
    assert_eq!(
        by_id
            .iter()
            .map(|a| a.record.target.as_str())
            .collect::<Vec<_>>(),
        vec!["t0", "t2", "t4"]
    );
    let by_name = s
        .list_audit(None, Some("bob"), None, 100)
        .await
        .expect("list");
    assert_eq!(by_name.len(), 3);
    assert!(by_name.iter().all(|a| a.record.actor.id == "t-b"));
    let since = s
        .list_audit(Some(T0 + 4), None, None, 100)
        .await
        .expect("list");
    assert_eq!(since.len(), 2);
    let page = s
        .list_audit(None, None, Some(all[1].id), 2)
        .await
        .expect("list");
    assert_eq!(
        page.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![all[2].id, all[3].id]
    );
}

async fn concurrent_same_serial_from_two_stores_makes_one_device(env: Env) {
    let a = env.store.clone();
    let b = env.another().await;
    for round in 0..5 {
        let serial = format!("RACE-{round}");
        let mut tasks = Vec::new();
        for i in 0..8 {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            // Half replay the same CSR, half bring a different one.
            let csr = if i < 4 { "same" } else { "different" };
            let d = dev(
                &serial,
                &format!("RC{round}x{i}"),
                Some(&format!("{csr}-{}", if i < 4 { 0 } else { i })),
            );
            tasks.push(tokio::spawn(async move {
                s.register(std::slice::from_ref(&d), RegMode::Independent, &actor(), T0)
                    .await
            }));
        }
        let mut created = 0;
        for t in tasks {
            match t
                .await
                .expect("join")
                .expect("no raw database error")
                .remove(0)
            {
                Ok(RegOutcome::Created) => created += 1,
                Ok(RegOutcome::Existing(d)) => assert_eq!(d.device.hardware_serial, serial),
                Err(RegConflict::SerialTaken { .. }) => {}
                Err(c) => panic!("unexpected {c:?}"),
            }
        }
        assert_eq!(created, 1, "round {round}");
    }
    assert_eq!(a.count_devices().await.expect("count"), 5);
    assert_eq!(audit_count(&a, "device.register").await, 5);
}

async fn concurrent_revocations_from_two_stores_keep_feed_gap_free(env: Env) {
    let a = env.store.clone();
    let b = env.another().await;
    let n = 40;
    let items: Vec<NewDevice> = (0..n)
        .map(|i| dev(&format!("CR-{i}"), &format!("CR{i}"), Some("c")))
        .collect();
    a.register(&items, RegMode::AllOrNothing, &actor(), T0)
        .await
        .expect("register");
    let mut tasks = Vec::new();
    for i in 0..n {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let cid = format!("CR{i}");
            if i % 3 == 0 {
                s.suspend_device(&cid, T0, &admin(), None)
                    .await
                    .map(|(_, e)| e.map(|e| e.seq))
            } else {
                s.revoke_device(&cid, RevocationReason::KeyCompromise, T0, &admin())
                    .await
                    .map(|(_, e)| Some(e.seq))
            }
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.expect("join").expect("change").expect("an entry"));
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=n as i64).collect::<Vec<_>>());
    let (feed, head) = b.feed_since(0, 1000).await.expect("feed");
    assert_eq!(head, n as i64);
    assert_eq!(
        feed.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=n as i64).collect::<Vec<_>>()
    );
    let clients: HashSet<&str> = feed.iter().map(|e| e.client_id.as_str()).collect();
    assert_eq!(clients.len(), n);
}

async fn feed_listener_sees_other_store_commits(env: Env) {
    let (tx, mut rx) = tokio::sync::broadcast::channel(16);
    let b = env.another().await;
    let handle = b.spawn_feed_listener(tx).await.expect("listen");
    if !env.store.is_postgres() {
        assert!(handle.is_none(), "SQLite has no cross-process notification");
        return;
    }
    let handle = handle.expect("a listener task on PostgreSQL");
    let s = &env.store;
    register_one(s, &dev("HW-L", "L1", Some("c")))
        .await
        .expect("register");
    s.revoke_device("L1", RevocationReason::KeyCompromise, T0, &admin())
        .await
        .expect("revoke");
    let seq = tokio::time::timeout(Duration::from_secs(2), rx.recv())
        .await
        .expect("notified within 2 s")
        .expect("a value");
    assert_eq!(seq, 1);
    // Every receiver gone: the listener ends at the next notification instead of running on.
    drop(rx);
    register_one(s, &dev("HW-L2", "L2", Some("c")))
        .await
        .expect("register");
    s.revoke_device("L2", RevocationReason::KeyCompromise, T0, &admin())
        .await
        .expect("revoke");
    tokio::time::timeout(Duration::from_secs(2), handle)
        .await
        .expect("the listener ended within 2 s of losing its last receiver")
        .expect("no panic");
}

/// PostgreSQL only: the listener's connection is killed (as a failover or an idle-connection
/// reaper would); it reconnects by itself, and an entry committed meanwhile still reaches the
/// sink, through a new notification or the head it announces after reconnecting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_feed_listener_recovers_from_a_killed_connection() {
    let Some(env) = Env::postgres().await else {
        eprintln!("DEVID_TEST_POSTGRES_URL not set: skipped");
        return;
    };
    let (tx, mut rx) = tokio::sync::broadcast::channel(16);
    let b = env.another().await;
    let handle = b
        .spawn_feed_listener(tx)
        .await
        .expect("listen")
        .expect("a listener task on PostgreSQL");
    let s = &env.store;
    let db = &env.pg.as_ref().expect("a database").name;
    let mut pg_admin = sqlx::PgConnection::connect(&env.pg.as_ref().expect("db").admin_url)
        .await
        .expect("connect admin");
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND query ILIKE 'LISTEN%'",
    )
    .bind(db)
    .fetch_all(&mut pg_admin)
    .await
    .expect("terminate the listener");
    assert_eq!(
        killed,
        [true],
        "exactly the listener's backend was terminated"
    );
    register_one(s, &dev("HW-K", "K1", Some("c")))
        .await
        .expect("register");
    s.revoke_device("K1", RevocationReason::KeyCompromise, T0, &admin())
        .await
        .expect("revoke");
    let seq = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match rx.recv().await {
                Ok(seq) if seq >= 1 => return seq,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(e) => panic!("sink closed: {e}"),
            }
        }
    })
    .await
    .expect("the entry reached the sink within 5 s of the connection being killed");
    assert_eq!(seq, 1);
    handle.abort();
}

/// PostgreSQL only: the listener's connection is killed while the database refuses new
/// connections, so it cannot reconnect at once; an entry committed in that gap (by a process
/// whose connection stayed up) reaches the sink once the listener is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_feed_listener_catches_up_after_it_could_not_reconnect() {
    let Some(env) = Env::postgres().await else {
        eprintln!("DEVID_TEST_POSTGRES_URL not set: skipped");
        return;
    };
    let (tx, mut rx) = tokio::sync::broadcast::channel(16);
    let b = env.another().await;
    let handle = b
        .spawn_feed_listener(tx)
        .await
        .expect("listen")
        .expect("a listener task on PostgreSQL");
    let s = &env.store;
    register_one(s, &dev("HW-G", "G1", Some("c")))
        .await
        .expect("register");
    let pg = env.pg.as_ref().expect("a database");
    let mut pg_admin = sqlx::PgConnection::connect(&pg.admin_url)
        .await
        .expect("connect admin");
    let allow = |on: bool| format!("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {on}", pg.name);
    pg_admin
        .execute(allow(false).as_str())
        .await
        .expect("refuse new connections");
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND query ILIKE 'LISTEN%'",
    )
    .bind(&pg.name)
    .fetch_all(&mut pg_admin)
    .await
    .expect("terminate the listener");
    // Give the listener time to notice and fail to reconnect.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let revoked = s
        .revoke_device("G1", RevocationReason::KeyCompromise, T0, &admin())
        .await;
    pg_admin
        .execute(allow(true).as_str())
        .await
        .expect("accept connections again");
    assert_eq!(
        killed,
        [true],
        "exactly the listener's backend was terminated"
    );
    revoked.expect("revoke over a connection that stayed up");
    let seq = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match rx.recv().await {
                Ok(seq) if seq >= 1 => return seq,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(e) => panic!("sink closed: {e}"),
            }
        }
    })
    .await
    .expect("the entry reached the sink within 5 s of the listener getting back");
    assert_eq!(seq, 1);
    handle.abort();
}

async fn events_policy_and_models(env: Env) {
    let s = &env.store;
    register_one(s, &dev("HW-E", "E1", Some("c")))
        .await
        .expect("register");
    let ev = |client_id: &str, at: i64, addr: &str, kind: ConnectionEventKind| Event {
        kind,
        client_id: client_id.into(),
        at,
        address: Some(addr.into()),
        refusal: None,
        reason: None,
        broker: "b1".into(),
        auth: None,
        serial: None,
        sw_version: None,
    };
    let batch = |events: Vec<Event>| Batch {
        events,
        ..Batch::default()
    };
    let connect = ConnectionEventKind::Connect;
    // The batch's one transaction writes last seen and the counts.
    s.ingest_batch(
        &batch(vec![
            ev("E1", T0 + 10, "10.0.0.1:1", connect),
            ev("E1", T0 + 30, "10.0.0.3:1", connect),
            ev("E1", T0 + 20, "10.0.0.2:1", connect),
            ev(
                "E1",
                T0 + 25,
                "10.0.0.9:1",
                ConnectionEventKind::AuthFailure,
            ),
            ev("E1", T0 + 40, "10.0.0.4:1", ConnectionEventKind::Disconnect),
            ev("nobody", T0, "10.0.0.7:1", connect),
        ]),
        T0 + 50,
    )
    .await
    .expect("events");
    let act = s
        .device_activity("E1")
        .await
        .expect("activity")
        .expect("some");
    assert_eq!(act.last_seen, Some(T0 + 30));
    assert_eq!(act.last_address.as_deref(), Some("10.0.0.3:1"));
    assert_eq!(act.connect_count, 3);
    assert_eq!(act.auth_failure_count, 1);
    assert_eq!(act.last_auth_failure, Some(T0 + 25));
    // An older connect does not move last_seen back.
    s.ingest_batch(
        &batch(vec![ev("E1", T0 + 5, "10.0.0.5:1", connect)]),
        T0 + 60,
    )
    .await
    .expect("events");
    let act = s
        .device_activity("E1")
        .await
        .expect("activity")
        .expect("some");
    assert_eq!(act.last_seen, Some(T0 + 30));
    assert_eq!(act.connect_count, 4);
    assert_eq!(
        s.get_device("E1")
            .await
            .expect("get")
            .expect("some")
            .device
            .last_seen,
        Some(T0 + 30)
    );

    assert_eq!(
        s.get_device_policy("E1").await.expect("policy"),
        Some(DevicePolicyRow::default())
    );
    let p = DevicePolicyRow {
        allowed_cidrs: Some(vec!["10.0.0.0/8".into()]),
        topic_policy: Some(r#"{"publish":[],"subscribe":[]}"#.into()),
        message_auth: Some("required".into()),
    };
    let all = DevicePolicyChange {
        allowed_cidrs: Some(p.allowed_cidrs.clone()),
        topic_policy: Some(p.topic_policy.clone()),
        message_auth: Some(p.message_auth.clone()),
    };
    s.change_device_policy("E1", &all, &audit_rec(&admin(), "device.policy", "E1", T0))
        .await
        .expect("set");
    assert_eq!(
        s.get_device_policy("E1").await.expect("policy"),
        Some(p.clone())
    );
    // A change names its fields; the others keep their values.
    let cidrs_only = DevicePolicyChange {
        allowed_cidrs: Some(None),
        ..DevicePolicyChange::default()
    };
    s.change_device_policy(
        "E1",
        &cidrs_only,
        &audit_rec(&admin(), "device.allowlist", "E1", T0),
    )
    .await
    .expect("set");
    assert_eq!(
        s.get_device_policy("E1").await.expect("policy"),
        Some(DevicePolicyRow {
            allowed_cidrs: None,
            ..p.clone()
        })
    );
    assert!(matches!(
        s.change_device_policy(
            "nobody",
            &all,
            &audit_rec(&admin(), "device.policy", "x", T0)
        )
        .await,
        Err(StoreError::NotFound)
    ));

    let m = ModelRow {
        name: "sensor".into(),
        client_id_prefix: Some("SN".into()),
        topic_policy: None,
        message_auth: Some("off".into()),
        ldevid_validity: Some("30d".parse().expect("validity")),
        renewal_grace: Some("0".parse().expect("grace")),
        connect_with: Some(devid_core::ConnectWith::Ldevid),
        updated_at: T0,
    };
    s.put_model(&m, &audit_rec(&admin(), "model.put", "sensor", T0))
        .await
        .expect("put");
    let m2 = ModelRow {
        client_id_prefix: Some("SX".into()),
        // Settings absent: back to the defaults (NULL).
        connect_with: None,
        updated_at: T0 + 1,
        ..m.clone()
    };
    s.put_model(&m2, &audit_rec(&admin(), "model.put", "sensor", T0 + 1))
        .await
        .expect("put");
    assert_eq!(s.get_model("sensor").await.expect("get"), Some(m2.clone()));
    assert!(s.get_model("other").await.expect("get").is_none());
    assert_eq!(s.list_models().await.expect("list"), vec![m2]);
    assert_eq!(audit_count(s, "model.put").await, 2);
}

async fn bootstrap_admin_is_atomic_across_stores(env: Env) {
    let other = env.another().await;
    let mut tasks = Vec::new();
    for i in 0..6 {
        let s = if i % 2 == 0 {
            env.store.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            let t = token(
                &format!("boot{i}"),
                Role::Admin,
                format!("hash{i}").as_bytes(),
            );
            s.bootstrap_admin(&t, &audit_rec(&admin(), "token.bootstrap", &t.id, T0))
                .await
        }));
    }
    let mut inserted = 0;
    for t in tasks {
        if t.await.expect("join").expect("bootstrap") {
            inserted += 1;
        }
    }
    assert_eq!(inserted, 1);
    assert_eq!(env.store.list_tokens().await.expect("list").len(), 1);
    assert_eq!(audit_count(&env.store, "token.bootstrap").await, 1);
}

async fn racing_changes_to_one_device_apply_once(env: Env) {
    let a = env.store.clone();
    let b = env.another().await;
    let d = dev("HW-RR", "RR", Some("c"));
    register_one(&a, &d).await.expect("register");
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        let serial = d.cert().expect("a device").serial.clone();
        tasks.push(tokio::spawn(async move {
            match i % 4 {
                0 | 1 => s
                    .revoke_device("RR", RevocationReason::KeyCompromise, T0, &admin())
                    .await
                    .map(|_| "device"),
                2 => s
                    .revoke_certificate(&serial, RevocationReason::Superseded, T0, &admin())
                    .await
                    .map(|_| "certificate"),
                _ => s
                    .suspend_device("RR", T0, &admin(), None)
                    .await
                    .map(|_| "suspend"),
            }
        }));
    }
    let mut device_revocations = 0;
    for t in tasks {
        match t.await.expect("join") {
            Ok("device") => device_revocations += 1,
            Ok(_) => {}
            Err(StoreError::InvalidTransition(_)) => {}
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!(device_revocations, 1, "a device is revoked exactly once");
    let (feed, head) = a.feed_since(0, 100).await.expect("feed");
    assert_eq!(
        feed.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=head).collect::<Vec<_>>()
    );
    let revoked_serial_entries = feed
        .iter()
        .filter(|e| e.action == RevocationAction::Revoked && !e.serials.is_empty())
        .count();
    assert_eq!(
        revoked_serial_entries, 1,
        "the certificate is revoked by exactly one entry"
    );
    let got = a.get_device("RR").await.expect("get").expect("some");
    assert_eq!(got.device.status, DeviceState::Revoked);
    assert_eq!(got.certs[0].status, CertState::Revoked);
}

async fn reopening_keeps_devices_feed_and_crl(env: Env) {
    let d = dev("HW-K", "K1", Some("c"));
    register_one(&env.store, &d).await.expect("register");
    env.store
        .revoke_device("K1", RevocationReason::KeyCompromise, T0, &admin())
        .await
        .expect("revoke");
    let crl = CrlRow {
        number: 1,
        feed_head: 1,
        der: vec![1, 2, 3],
        this_update: T0,
        next_update: T0 + 60,
    };
    assert!(env.store.crl_put(&crl, None).await.expect("crl"));
    env.store.close().await;
    let s = env.another().await;
    let got = s.get_device("K1").await.expect("get").expect("some");
    assert_eq!(got.device.status, DeviceState::Revoked);
    assert_eq!(got.certs[0].serial, d.cert().expect("a device").serial);
    assert_eq!(s.feed_head().await.expect("head"), 1);
    assert_eq!(s.crl_get().await.expect("crl").expect("some").number, 1);
    // Numbering continues after a restart.
    register_one(&s, &dev("HW-K2", "K2", Some("c")))
        .await
        .expect("register");
    let (_, e) = s
        .suspend_device("K2", T0, &admin(), None)
        .await
        .expect("suspend");
    assert_eq!(e.expect("entry").seq, 2);
}

async fn overlapping_batches_from_two_stores_do_not_fail(env: Env) {
    let a = env.store.clone();
    let b = env.another().await;
    // The same 300 serials (same CSRs) in opposite orders, several times, from both stores.
    let mut tasks = Vec::new();
    for round in 0..6 {
        let s = if round % 2 == 0 { a.clone() } else { b.clone() };
        let mut items: Vec<NewDevice> = (0..300)
            .map(|i| NewDevice {
                // Generated ClientIDs: a replay that names none matches the stored device.
                client_id_generated: true,
                ..dev(
                    &format!("OV-{i:03}"),
                    &format!("OV{round}x{i}"),
                    Some(&format!("c{i}")),
                )
            })
            .collect();
        if round % 2 == 1 {
            items.reverse();
        }
        tasks.push(tokio::spawn(async move {
            s.register(&items, RegMode::Independent, &actor(), T0).await
        }));
    }
    for t in tasks {
        let out = t.await.expect("join").expect("no raw database error");
        assert!(out
            .iter()
            .all(|o| matches!(o, Ok(RegOutcome::Created) | Ok(RegOutcome::Existing(_)))));
    }
    assert_eq!(a.count_devices().await.expect("count"), 300);
    assert_eq!(audit_count(&a, "device.register").await, 300);
}

/// A database made by the first schema keeps its devices and certificates through the later
/// migrations (0002 rebuilds the certificates table), and registration works on it afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_upgrade_from_the_first_schema_keeps_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("devid.db");
    let first = dir.path().join("first");
    std::fs::create_dir(&first).expect("mkdir");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../migrations/sqlite/0001_init.sql"
        ),
        first.join("0001_init.sql"),
    )
    .expect("copy 0001");
    {
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&db)
            .create_if_missing(true)
            .foreign_keys(true);
        let pool = sqlx::SqlitePool::connect_with(opts).await.expect("open");
        sqlx::migrate::Migrator::new(first.as_path())
            .await
            .expect("migrator")
            .run(&pool)
            .await
            .expect("0001");
        pool.execute(
            "INSERT INTO devices (id, client_id, hardware_serial, created_at) \
             VALUES (7, 'OLD1', 'HW-OLD', 1);
             INSERT INTO certificates (serial, device_id, fingerprint, der, not_before, not_after, \
             status, profile, created_at) \
             VALUES ('0a0b', 7, 'ff00', x'3000', 1, 2, 'hold', 'idevid', 1);",
        )
        .await
        .expect("old rows");
        pool.close().await;
    }
    let s = Store::connect_sqlite(&db, true).await.expect("connect");
    s.migrate().await.expect("migrate to the current schema");
    let old = s.get_device("OLD1").await.expect("get").expect("some");
    assert_eq!(old.device.hardware_serial, "HW-OLD");
    assert_eq!(old.certs.len(), 1);
    assert_eq!(old.certs[0].serial, "0a0b");
    assert_eq!(old.certs[0].status, CertState::Hold);
    // The held certificate is still on the CRL listing (its partial index was rebuilt too).
    let listing = s.crl_listing().await.expect("crl listing");
    assert_eq!(listing.len(), 1);
    let new = dev("HW-NEW", "NEW1", Some("n"));
    assert!(matches!(
        register_one(&s, &new).await,
        Ok(RegOutcome::Created)
    ));
    let got = s.get_device("NEW1").await.expect("get").expect("some");
    assert_eq!(got.certs[0].serial, new.cert().expect("a device").serial);
    assert_eq!(s.count_devices().await.expect("count"), 2);
}

// ---- keys: one key pair, one device ----------------------------------------------------------

/// A device whose certificate certifies `key` (any bytes standing for a key).
fn dev_with_key(serial: &str, client_id: &str, csr: &str, key: &str) -> NewDevice {
    let mut d = dev(serial, client_id, Some(csr));
    if let Credential::Certificate(c) = &mut d.credential {
        c.spki_sha256 = devid_core::csr::spki_sha256(key.as_bytes());
    }
    d
}

async fn one_key_belongs_to_one_device(env: Env) {
    let s = &env.store;
    assert!(matches!(
        register_one(s, &dev_with_key("HW-A", "A", "csr-a", "K")).await,
        Ok(RegOutcome::Created)
    ));
    // The same serial and CSR is a replay; another serial with the key is refused, naming A.
    assert!(matches!(
        register_one(s, &dev_with_key("HW-A", "A", "csr-a", "K")).await,
        Ok(RegOutcome::Existing(_))
    ));
    assert_eq!(
        register_one(s, &dev_with_key("HW-B", "B", "csr-b", "K"))
            .await
            .err(),
        Some(RegConflict::KeyTaken { holder: "A".into() })
    );
    // In one call: the second item with a key names the first's device; all or nothing names
    // the index and stores nothing.
    let items = vec![
        dev_with_key("HW-C", "C", "csr-c", "K2"),
        dev_with_key("HW-D", "D", "csr-d", "K2"),
    ];
    let out = s
        .register(&items, RegMode::Independent, &actor(), T0)
        .await
        .expect("register");
    assert!(matches!(out[0], Ok(RegOutcome::Created)));
    assert_eq!(
        out[1].as_ref().err(),
        Some(&RegConflict::KeyTaken { holder: "C".into() })
    );
    let batch = vec![
        dev_with_key("HW-E", "E", "csr-e", "K3"),
        dev_with_key("HW-F", "F", "csr-f", "K"),
    ];
    match s
        .register(&batch, RegMode::AllOrNothing, &actor(), T0)
        .await
    {
        Err(StoreError::BatchConflict {
            index: 1,
            conflict: RegConflict::KeyTaken { holder },
        }) => assert_eq!(holder, "A"),
        other => panic!("expected BatchConflict at 1, got {other:?}"),
    }
    assert!(s.get_device("E").await.expect("get").is_none());
    // A device revoked for another reason keeps its key.
    s.revoke_device("A", RevocationReason::Superseded, T0, &admin())
        .await
        .expect("revoke");
    assert_eq!(
        register_one(s, &dev_with_key("HW-G", "G", "csr-g", "K"))
            .await
            .err(),
        Some(RegConflict::KeyTaken { holder: "A".into() })
    );
    assert_eq!(s.count_devices().await.expect("count"), 2);
}

async fn compromised_keys_are_refused_for_good(env: Env) {
    let s = &env.store;
    for (serial, id, key) in [
        ("HW-1", "D1", "K1"),
        ("HW-2", "D2", "K2"),
        ("HW-3", "D3", "K3"),
    ] {
        assert!(matches!(
            register_one(s, &dev_with_key(serial, id, &format!("csr-{id}"), key)).await,
            Ok(RegOutcome::Created)
        ));
    }
    // A device revoked for keyCompromise, and a single certificate revoked for it.
    s.revoke_device("D1", RevocationReason::KeyCompromise, T0, &admin())
        .await
        .expect("revoke device");
    let cert = s.get_device("D2").await.expect("get").expect("some").certs[0]
        .serial
        .clone();
    s.revoke_certificate(&cert, RevocationReason::KeyCompromise, T0, &admin())
        .await
        .expect("revoke certificate");
    // Another reason does not make a key compromised.
    s.revoke_device("D3", RevocationReason::CessationOfOperation, T0, &admin())
        .await
        .expect("revoke device");
    let other = env.another().await;
    for store in [s, &other] {
        for key in ["K1", "K2"] {
            assert_eq!(
                register_one(store, &dev_with_key("HW-X", "X", "csr-x", key))
                    .await
                    .err(),
                Some(RegConflict::KeyCompromised),
                "{key}"
            );
        }
        assert_eq!(
            register_one(store, &dev_with_key("HW-X", "X", "csr-x", "K3"))
                .await
                .err(),
            Some(RegConflict::KeyTaken {
                holder: "D3".into()
            })
        );
    }
    // The revoked device's own replay still answers with the device (revoked).
    match register_one(s, &dev_with_key("HW-1", "D1", "csr-D1", "K1")).await {
        Ok(RegOutcome::Existing(d)) => assert_eq!(d.device.status, DeviceState::Revoked),
        other => panic!("expected Existing, got {other:?}"),
    }
}

async fn concurrent_same_key_from_two_stores_makes_one_device(env: Env) {
    let a = env.store.clone();
    let b = env.another().await;
    for round in 0..20 {
        let key = format!("K{round}");
        let mut tasks = Vec::new();
        for i in 0..4 {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            let d = dev_with_key(
                &format!("R{round}-{i}"),
                &format!("R{round}x{i}"),
                &format!("csr{round}-{i}"),
                &key,
            );
            tasks.push(tokio::spawn(async move {
                s.register(std::slice::from_ref(&d), RegMode::Independent, &actor(), T0)
                    .await
            }));
        }
        let mut created = 0;
        for t in tasks {
            match t
                .await
                .expect("join")
                .expect("no raw database error")
                .remove(0)
            {
                Ok(RegOutcome::Created) => created += 1,
                Err(RegConflict::KeyTaken { .. }) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(created, 1, "round {round}");
    }
    assert_eq!(a.count_devices().await.expect("count"), 20);
}

/// A certificate DER for a fresh key (self-signed: only its key matters here) and that key's
/// identity.
fn real_cert() -> (Vec<u8>, [u8; 32]) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let cert = rcgen::CertificateParams::new(Vec::<String>::new())
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let der = cert.der().to_vec();
    // The hash registration takes from a CSR is the hash read out of a certificate.
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .expect("params")
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    let spki = devid_core::csr::parse_csr_pem(&csr)
        .expect("csr parses")
        .spki_sha256();
    assert_eq!(devid_core::csr::certificate_spki_sha256(&der), Some(spki));
    (der, spki)
}

async fn keys_of_earlier_certificates_are_bound_on_open(env: Env) {
    let s = &env.store;
    let (der_k, spki_k) = real_cert();
    let (der_c, spki_c) = real_cert();
    // A and B share a key (possible before keys were tracked: B gets a made-up key hash now);
    // C was revoked for keyCompromise.
    let mut a = dev("HW-A", "A", Some("csr-a"));
    a.cert_mut().expect("a device").der = der_k.clone();
    let mut b = dev("HW-B", "B", Some("csr-b"));
    b.cert_mut().expect("a device").der = der_k;
    let mut c = dev("HW-C", "C", Some("csr-c"));
    c.cert_mut().expect("a device").der = der_c;
    for d in [&a, &b, &c] {
        assert!(matches!(register_one(s, d).await, Ok(RegOutcome::Created)));
    }
    s.revoke_device("C", RevocationReason::KeyCompromise, T0, &admin())
        .await
        .expect("revoke");
    // What a server from before keys were tracked leaves behind.
    env.raw_exec("UPDATE certificates SET spki_sha256 = NULL")
        .await;
    env.raw_exec("DELETE FROM device_keys").await;
    let mut k = dev("HW-K", "K", Some("csr-k"));
    k.cert_mut().expect("a device").spki_sha256 = spki_k;
    assert!(
        matches!(register_one(s, &k).await, Ok(RegOutcome::Created)),
        "without the backfill the key is free"
    );
    env.raw_exec("UPDATE certificates SET spki_sha256 = NULL")
        .await;
    env.raw_exec("DELETE FROM device_keys").await;
    // Opening the store binds the keys again, the earliest device first.
    let reopened = env.another().await;
    let mut k2 = dev("HW-K2", "K2", Some("csr-k2"));
    k2.cert_mut().expect("a device").spki_sha256 = spki_k;
    assert_eq!(
        register_one(&reopened, &k2).await.err(),
        Some(RegConflict::KeyTaken { holder: "A".into() })
    );
    k2.cert_mut().expect("a device").spki_sha256 = spki_c;
    assert_eq!(
        register_one(&reopened, &k2).await.err(),
        Some(RegConflict::KeyCompromised)
    );
    // The made-up hashes of the other fixtures' certificates (not DER) are marked done, so the
    // next open has nothing to do.
    let again = env.another().await;
    k2.cert_mut().expect("a device").spki_sha256 = spki_k;
    assert!(matches!(
        register_one(&again, &k2).await,
        Err(RegConflict::KeyTaken { .. })
    ));
}

// ---- events for applications ------------------------------------------------------------------

fn app_event(kind: devid_core::api::AppEventKind, id: &str, model: &str) -> NewAppEvent {
    NewAppEvent {
        kind,
        at: T0,
        client_id: Some(id.into()),
        model: Some(model.into()),
        data: serde_json::json!({"n": id}),
    }
}

async fn app_events_append_in_order_and_filter(env: Env) {
    use devid_core::api::AppEventKind as K;
    let s = &env.store;
    assert_eq!(s.app_events_head().await.expect("head"), 0);
    assert_eq!(s.append_app_events(&[]).await.expect("nothing"), 0);
    let last = s
        .append_app_events(&[
            app_event(K::Registered, "A1", "thermo"),
            app_event(K::Revoked, "A2", "thermo"),
            app_event(K::Registered, "B1", "valve"),
        ])
        .await
        .expect("append");
    assert_eq!(last, 3);
    // Another process appends concurrently with this one: seqs stay gap-free and unique.
    let other = env.another().await;
    let mine = [app_event(K::Connected, "A1", "thermo")];
    let theirs = [
        app_event(K::Disconnected, "A1", "thermo"),
        app_event(K::Suspended, "B1", "valve"),
    ];
    let (a, b) = tokio::join!(s.append_app_events(&mine), other.append_app_events(&theirs));
    assert!(a.expect("a") > 3 && b.expect("b") > 3);
    let all = s
        .app_events_since(0, 0, &AppEventFilter::default())
        .await
        .expect("all");
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
    assert_eq!(all[1].kind, K::Revoked);
    assert_eq!(all[1].client_id.as_deref(), Some("A2"));
    let data: serde_json::Value = serde_json::from_str(&all[1].data).expect("data is JSON");
    assert_eq!(data, serde_json::json!({"n": "A2"}));
    let registered = s
        .app_events_since(
            0,
            0,
            &AppEventFilter {
                kinds: vec![K::Registered, K::Suspended],
                ..Default::default()
            },
        )
        .await
        .expect("by kind");
    assert_eq!(
        registered.iter().map(|e| e.kind).collect::<Vec<_>>(),
        vec![K::Registered, K::Registered, K::Suspended]
    );
    let valve = s
        .app_events_since(
            1,
            1,
            &AppEventFilter {
                model: Some("valve".into()),
                ..Default::default()
            },
        )
        .await
        .expect("by model, one");
    assert_eq!(valve.len(), 1);
    assert_eq!(valve[0].client_id.as_deref(), Some("B1"));
    let a1 = s
        .app_events_since(
            0,
            0,
            &AppEventFilter {
                client_id: Some("A1".into()),
                ..Default::default()
            },
        )
        .await
        .expect("by device");
    assert_eq!(a1.len(), 3);
    assert_eq!(s.app_events_head().await.expect("head"), 6);
}

both!(app_events_append_in_order_and_filter);

/// One holder per lease across processes: another store cannot take it while it is held, can
/// once it lapses or is given up, and the two leases are independent.
async fn a_lease_has_one_holder_until_released_or_lapsed(env: Env) {
    let a = &env.store;
    let b = env.another().await;
    for lease in [Lease::Webhooks, Lease::FleetSweep] {
        assert!(
            a.take_lease(lease, "A", T0, 90).await.expect("lease"),
            "{lease:?} free"
        );
        assert!(
            a.take_lease(lease, "A", T0 + 30, 90).await.expect("lease"),
            "renewed"
        );
        assert!(
            !b.take_lease(lease, "B", T0 + 60, 90).await.expect("lease"),
            "held"
        );
        // Until T0 + 30 + 90.
        assert!(
            !b.take_lease(lease, "B", T0 + 120, 90).await.expect("lease"),
            "still held"
        );
        assert!(
            b.take_lease(lease, "B", T0 + 121, 90).await.expect("lease"),
            "lapsed"
        );
        assert!(
            !a.take_lease(lease, "A", T0 + 122, 90).await.expect("lease"),
            "B's now"
        );
        // Giving up a lease one does not hold changes nothing; the holder's release frees it.
        a.release_lease(lease, "A").await.expect("lease");
        assert!(
            !a.take_lease(lease, "A", T0 + 123, 90).await.expect("lease"),
            "B's still"
        );
        b.release_lease(lease, "B").await.expect("lease");
        assert!(
            a.take_lease(lease, "A", T0 + 124, 90).await.expect("lease"),
            "released"
        );
    }
    // Each lease on its own: A holds the webhooks one, B takes the sweep's.
    a.release_lease(Lease::FleetSweep, "A")
        .await
        .expect("lease");
    assert!(b
        .take_lease(Lease::FleetSweep, "B", T0 + 125, 90)
        .await
        .expect("lease"));
    assert!(!b
        .take_lease(Lease::Webhooks, "B", T0 + 125, 90)
        .await
        .expect("lease"));
}

/// Bulk writes can outrun autovacuum and leave PostgreSQL planning a million-row table as if it
/// were small. The store analyzes the fleet tables that changed by more than a tenth since
/// their last analyze, and only those; SQLite has nothing to do.
async fn tables_grown_in_bulk_get_fresh_planner_statistics(env: Env) {
    let s = &env.store;
    if s.is_postgres() {
        // Autovacuum falls behind under bulk load; here it is kept out of the way altogether.
        env.raw_exec(
            "ALTER TABLE devices SET (autovacuum_enabled = false); \
             ALTER TABLE certificates SET (autovacuum_enabled = false); \
             ALTER TABLE device_keys SET (autovacuum_enabled = false)",
        )
        .await;
    }
    let items: Vec<NewDevice> = (0..1_500)
        .map(|i| dev(&format!("HW-{i}"), &format!("C{i}"), None))
        .collect();
    s.register(&items, RegMode::AllOrNothing, &actor(), T0)
        .await
        .expect("register");
    let Some(pg) = &env.pg else {
        assert_eq!(
            s.refresh_statistics().await.expect("refresh"),
            Vec::<String>::new()
        );
        return;
    };
    let url = pg.url.clone();
    let reltuples = |table: &'static str| {
        let url = url.clone();
        async move {
            let mut c = sqlx::PgConnection::connect(&url)
                .await
                .expect("connect postgres");
            sqlx::query_scalar::<_, f32>("SELECT reltuples FROM pg_class WHERE relname = $1")
                .bind(table)
                .fetch_one(&mut c)
                .await
                .expect("reltuples")
        }
    };
    assert_eq!(reltuples("devices").await, -1.0, "never analyzed");
    // A backend reports its table counts to the statistics system within a second or so of
    // its commit.
    let mut analyzed = Vec::new();
    for _ in 0..100 {
        analyzed = s.refresh_statistics().await.expect("refresh");
        if !analyzed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        analyzed,
        [
            "app_events",
            "audit",
            "certificates",
            "device_keys",
            "devices"
        ]
    );
    for table in ["devices", "certificates", "device_keys"] {
        assert_eq!(reltuples(table).await, 1_500.0, "{table}");
    }
    // Nothing changed since: nothing is analyzed again.
    assert_eq!(
        s.refresh_statistics().await.expect("refresh"),
        Vec::<String>::new()
    );
}

/// SQLite: committed pages reach the database file without the writer checkpointing (its
/// automatic checkpoint waits for 256 MiB of WAL): a checkpointer copies them in the background.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_pages_reach_the_database_file_from_a_background_checkpoint() {
    let env = Env::sqlite().await;
    let dir = env.dir.as_ref().expect("a directory");
    let size = |name: &str| std::fs::metadata(dir.path().join(name)).map_or(0, |m| m.len());
    let items: Vec<NewDevice> = (0..2_000)
        .map(|i| dev(&format!("HW-{i}"), &format!("C{i}"), None))
        .collect();
    let before = size("devid.db");
    env.store
        .register(&items, RegMode::AllOrNothing, &actor(), T0)
        .await
        .expect("register");
    assert!(size("devid.db-wal") > 1_000_000, "the commit is in the WAL");
    // 2,000 devices are more than 1 MB of pages; until a checkpoint copies them, the database
    // file keeps its size.
    let mut after = before;
    for _ in 0..100 {
        after = size("devid.db");
        if after > before + 1_000_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(after > before + 1_000_000, "{before} -> {after} bytes");
    assert_eq!(env.store.count_devices().await.expect("count"), 2_000);
}
