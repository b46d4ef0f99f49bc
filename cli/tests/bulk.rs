//! `devid device revoke|suspend|resume` with a filter: dry run, `--yes` required without a
//! terminal, a confirmation on one, the ids file; on SQLite and PostgreSQL.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;

fn register(s: &Server, serial: &str, lot: &str) -> String {
    let out = s.work().join("flash");
    s.devid(&[
        "device",
        "register",
        "--serial",
        serial,
        "--model",
        "thermo",
        "--meta",
        &format!("lot={lot}"),
        "--generate-key",
        "--out",
        out.to_str().expect("utf8"),
    ])
    .ok()
    .stdout
    .trim()
    .to_string()
}

fn status(s: &Server, id: &str) -> String {
    let j = s.devid(&["-o", "json", "device", "show", id]).ok().json();
    j["status"].as_str().expect("status").to_string()
}

/// Runs devid under `script` so it has a terminal, typing `input`; the exit code and output.
fn on_terminal(s: &Server, args: &str, input: &str) -> (i32, String) {
    use std::io::Write as _;
    let cmd = format!("{} {args}", env!("CARGO_BIN_EXE_devid"));
    let mut child = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("DEVID_SERVER", &s.url)
        .env("DEVID_TOKEN_FILE", s.token_file())
        .env("XDG_CONFIG_HOME", s.work().join("xdg"))
        .current_dir(s.work())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("type");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        assert!(std::time::Instant::now() < deadline, "devid did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut out)
        .expect("read");
    (status.code().unwrap_or(-1), out)
}

#[test]
fn a_lot_is_revoked_by_filter_after_a_dry_run_and_a_confirmation() {
    for s in Server::each_backend() {
        let a = register(&s, "CL-A", "L7");
        let b = register(&s, "CL-B", "L7");
        let c = register(&s, "CL-C", "L8");
        let filter = ["--model", "thermo", "--where", "lot=L7"];
        let revoke = |extra: &[&str]| {
            let mut args = vec![
                "-o",
                "json",
                "device",
                "revoke",
                "--reason",
                "keyCompromise",
            ];
            args.extend(filter);
            args.extend(extra);
            s.devid(&args)
        };
        let dry = revoke(&["--dry-run"]).ok().json();
        assert_eq!(dry["matched"], 2);
        assert_eq!(dry["changed"], 2);
        assert_eq!(dry["dry_run"], true);
        assert_eq!(dry["sample"], serde_json::json!([a, b]));
        // No terminal and no --yes: refused, nothing changed.
        let r = revoke(&[]).code(2);
        assert!(r.stderr.contains("--yes"), "{r:#?}");
        assert_eq!(status(&s, &a), "active");
        // A ClientID and a filter together, or neither: usage errors.
        s.devid(&[
            "device",
            "revoke",
            &a,
            "--reason",
            "superseded",
            "--model",
            "thermo",
        ])
        .code(2);
        s.devid(&["device", "suspend"]).code(2);
        s.devid(&["device", "suspend", "--where", "lot"]).code(2);

        // On a terminal: asked with the count; "n" changes nothing, "y" revokes.
        let args = "device revoke --reason keyCompromise --model thermo --where lot=L7";
        let (code, text) = on_terminal(&s, args, "n\n");
        assert!(text.contains("revoke 2 devices? [y/N]"), "{text}");
        assert_eq!(code, 1, "{text}");
        assert_eq!(status(&s, &a), "active");
        let (code, text) = on_terminal(&s, args, "y\n");
        assert_eq!(code, 0, "{text}");
        assert_eq!(status(&s, &a), "revoked");
        assert_eq!(status(&s, &b), "revoked");
        assert_eq!(status(&s, &c), "active");

        // An ids file: suspend, then resume, with --yes.
        let ids = s.work().join("ids.txt");
        std::fs::write(&ids, format!("{c}\n\n")).expect("ids file");
        let ids = ids.to_str().expect("utf8");
        let r = s
            .devid(&[
                "-o",
                "json",
                "device",
                "suspend",
                "--ids-file",
                ids,
                "--yes",
            ])
            .ok()
            .json();
        assert_eq!(r["changed"], 1);
        assert_eq!(status(&s, &c), "suspended");
        let r = s
            .devid(&["device", "resume", "--ids-file", ids, "--yes"])
            .ok();
        assert!(r.stdout.contains("changed"), "{r:#?}");
        assert_eq!(status(&s, &c), "active");
        // A bad line in the file is named.
        let bad = s.work().join("bad.txt");
        std::fs::write(&bad, format!("{c}\nnot an id\n")).expect("file");
        let r = s
            .devid(&[
                "device",
                "suspend",
                "--ids-file",
                bad.to_str().expect("utf8"),
                "--yes",
            ])
            .code(2);
        assert!(r.stderr.contains("bad.txt:2"), "{r:#?}");
        // The single-device form still works.
        s.devid(&["device", "suspend", &c]).ok();
        assert_eq!(status(&s, &c), "suspended");
    }
}
