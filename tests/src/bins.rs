//! The workspace's command-line binaries as the tests run them: the `devid` CLI as the admin of
//! a [`Service`], `devid-agent` with a device's files, and what a finished process printed.

use std::path::Path;
use std::process::{Command, Output};

use crate::{artifact, Service};

/// What a finished process printed, with its exit status: the message of a failed assertion.
pub fn output_text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `devid ARGS` against `service` with its admin token, whatever `DEVID_*` variables the
/// environment of the test holds. Returns the output whether or not the command succeeded.
pub fn devid_cli(service: &Service, args: &[&str]) -> Output {
    Command::new(artifact("devid"))
        .arg("--server")
        .arg(service.url())
        .arg("--token")
        .arg(&service.admin_token)
        .args(args)
        .env_remove("DEVID_SERVER")
        .env_remove("DEVID_TOKEN")
        .env_remove("DEVID_TOKEN_FILE")
        .env_remove("DEVID_PROFILE")
        .output()
        .expect("run devid")
}

/// [`devid_cli`] that must succeed.
pub fn devid_cli_ok(service: &Service, args: &[&str]) -> Output {
    let o = devid_cli(service, args);
    assert!(o.status.success(), "devid {args:?}: {}", output_text(&o));
    o
}

/// A device's files as `devid-agent` takes them.
pub struct AgentFiles<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
    pub root: &'a Path,
    /// The broker's name in its certificate (`--broker-name`).
    pub broker_name: &'a str,
}

/// [`agent_command`] for a device whose files are `dev.crt`, `dev.key` and `root.pem` in `dir`.
pub fn agent_command_in(subcommand: &str, broker: &str, dir: &Path, broker_name: &str) -> Command {
    let (cert, key, root) = (
        dir.join("dev.crt"),
        dir.join("dev.key"),
        dir.join("root.pem"),
    );
    let files = AgentFiles {
        cert: &cert,
        key: &key,
        root: &root,
        broker_name,
    };
    agent_command(subcommand, broker, &files)
}

/// `devid-agent SUBCOMMAND --broker BROKER` with the device's files; the caller adds the rest.
pub fn agent_command(subcommand: &str, broker: &str, files: &AgentFiles<'_>) -> Command {
    let mut cmd = Command::new(artifact("devid-agent"));
    cmd.arg(subcommand)
        .arg("--broker")
        .arg(broker)
        .arg("--cert")
        .arg(files.cert)
        .arg("--key")
        .arg(files.key)
        .arg("--root")
        .arg(files.root)
        .arg("--broker-name")
        .arg(files.broker_name);
    cmd
}
