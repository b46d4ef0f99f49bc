//! What the devid-server binary says at start-up and on `init`, driven as a process.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn a_second_init_says_the_data_directory_is_already_initialized() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let init = || {
        Command::new(BIN)
            .arg("--data-dir")
            .arg(&dir)
            .arg("init")
            .env_remove("DEVID_DATABASE_URL")
            .env_remove("DEVID_CA_PASSPHRASE")
            .output()
            .unwrap()
    };
    let first = init();
    assert!(first.status.success());
    assert!(String::from_utf8_lossy(&first.stdout).contains("admin token written"));
    let second = init();
    assert!(second.status.success());
    let out = String::from_utf8_lossy(&second.stdout);
    assert!(out.contains("already initialized"), "{out:?}");
    assert!(out.contains(&dir.display().to_string()), "{out:?}");
}

#[test]
fn an_unreachable_database_fails_soon_naming_its_address_and_the_error() {
    // A local port with nothing listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tmp = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--database-url")
        .arg(format!("postgres://devid:s3cret-pw@127.0.0.1:{port}/fleet"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(25));
    let elapsed = started.elapsed();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!status.success());
    assert!(
        elapsed < Duration::from_secs(15),
        "took {elapsed:?} to give up:\n{text}"
    );
    let address = format!("127.0.0.1:{port}/fleet");
    assert!(
        text.contains("connecting to PostgreSQL") && text.contains(&address),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains(&address) && l.to_lowercase().contains("refused")),
        "no line names both the address and the error:\n{text}"
    );
    assert!(!text.contains("s3cret-pw"), "the password leaked:\n{text}");
}
