//! Where a command's output goes: a reader that closes stdout early, a token written to a file,
//! and what `revocations watch` says before its first entry.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{devid_cmd, Server};

/// Runs a command whose stdout is a pipe nobody reads any more (as `devid ... | head -1` is once
/// `head` has its line): the reading end is closed before the command starts, so every write to
/// stdout fails with EPIPE.
fn with_closed_stdout(mut cmd: std::process::Command) -> (i32, String) {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = cmd
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run devid");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn completions_into_a_closed_pipe_end_quietly_with_success() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = devid_cmd(dir.path());
    cmd.args(["completions", "bash"]);
    let (code, stderr) = with_closed_stdout(cmd);
    assert_eq!(code, 0, "stderr: {stderr}");
    assert!(stderr.is_empty(), "nothing on stderr, got: {stderr}");
}

#[test]
fn a_command_whose_reader_went_away_exits_141_without_a_panic() {
    let s = Server::start();
    for args in [
        &["-o", "json", "token", "list"][..],
        &["token", "list"][..],
        &["ca", "export", "--out", "-"][..],
        &["revocations", "watch", "--count", "1"][..],
    ] {
        let mut cmd = s.devid_cmd();
        cmd.args(args);
        let (code, stderr) = with_closed_stdout(cmd);
        assert_eq!(code, 141, "{args:?}: stderr: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("error:"), "{args:?}: {stderr}");
    }
}

#[test]
fn token_create_out_writes_the_secret_to_a_private_file_only() {
    let s = Server::start();
    let file = s.work().join("auditor.token");
    let file_s = file.to_str().expect("utf8");
    for format in ["table", "json"] {
        let r = s
            .devid(&[
                "-o", format, "token", "create", "--role", "auditor", "--name", "audit-1", "--out",
                file_s,
            ])
            .ok();
        let secret = std::fs::read_to_string(&file).expect("token file");
        let secret = secret.trim();
        assert!(secret.starts_with("devid_"), "{secret}");
        assert!(
            !r.stdout.contains(secret),
            "the secret is not printed: {}",
            r.stdout
        );
        assert!(r.stderr.contains(file_s), "{}", r.stderr);
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        if format == "json" {
            let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
            assert_eq!(v["role"], "auditor");
            assert!(v.get("token").is_none(), "{v}");
        }
        // The file is usable as it is.
        let mut cmd = devid_cmd(&s.work());
        cmd.env("DEVID_SERVER", &s.url)
            .args(["--token-file", file_s, "device", "list"]);
        let out = cmd.output().expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Without --out, `-o json | jq -r .token` has the secret.
    let v = s
        .devid(&[
            "-o", "json", "token", "create", "--role", "broker", "--name", "b1",
        ])
        .ok()
        .json();
    assert!(v["token"].as_str().is_some_and(|t| t.starts_with("devid_")));
}

#[test]
fn watch_without_since_says_it_follows_from_the_head_and_shows_only_new_entries() {
    let s = Server::start();
    let out = s.work().join("w");
    let out_s = out.to_str().expect("utf8");
    let mut ids = Vec::new();
    for serial in ["H1", "H2"] {
        let r = s
            .devid(&[
                "device",
                "register",
                "--serial",
                serial,
                "--model",
                "thermo",
                "--generate-key",
                "--out",
                out_s,
            ])
            .ok();
        ids.push(r.stdout.trim().to_string());
    }
    s.devid(&["device", "suspend", &ids[0]]).ok();
    s.devid(&["device", "resume", &ids[0]]).ok();

    let mut child = s
        .devid_cmd()
        .args(["-o", "json", "revocations", "watch", "--count", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn watch");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    stderr.read_line(&mut line).expect("stderr line");
    assert!(
        line.contains("following the feed after its head, sequence 2"),
        "{line}"
    );

    s.devid(&["device", "suspend", &ids[1]]).ok();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "watch exited with {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "watch did not see the suspension"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut stdout)
        .expect("stdout");
    let entry: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(entry["seq"], 3, "only the entry made after the watch began");
    assert_eq!(entry["client_id"], ids[1].as_str());
}
