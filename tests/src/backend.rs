//! Which database a devid-server under test runs on: SQLite in its data directory, or a fresh
//! PostgreSQL database (made with `psql`) on the server at DEVID_TEST_POSTGRES_URL.

use std::process::Command;

/// A test's database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    /// URL of a database made for this test.
    Postgres(String),
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }
}

/// SQLite, and PostgreSQL when DEVID_TEST_POSTGRES_URL is set. Without it, under CI=true or
/// DEVID_TEST_REQUIRE_POSTGRES=1 this fails instead of leaving PostgreSQL out.
pub fn backends() -> Vec<Backend> {
    let mut v = vec![Backend::Sqlite];
    match std::env::var("DEVID_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => v.push(Backend::Postgres(fresh_pg_database(&url))),
        _ => {
            let required = std::env::var("CI").is_ok_and(|v| v == "true")
                || std::env::var("DEVID_TEST_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "DEVID_TEST_POSTGRES_URL is not set (e.g. postgres://postgres@127.0.0.1:5432/postgres)"
            );
            eprintln!("DEVID_TEST_POSTGRES_URL is not set: PostgreSQL left out");
        }
    }
    v
}

/// A new empty database on the server of `admin_url`; its URL.
pub fn fresh_pg_database(admin_url: &str) -> String {
    // `devid_test_p<pid>_`: scripts/test.sh drops the databases of processes that have ended.
    let name = format!(
        "devid_test_p{}_e2e{}",
        std::process::id(),
        hex::encode(crate::rand_bytes::<6>())
    );
    let out = Command::new("psql")
        .arg(admin_url)
        .args(["-v", "ON_ERROR_STOP=1", "-qAtc"])
        .arg(format!("CREATE DATABASE {name}"))
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "CREATE DATABASE {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (base, _) = admin_url
        .rsplit_once('/')
        .expect("DEVID_TEST_POSTGRES_URL ends with /DATABASE");
    format!("{base}/{name}")
}
