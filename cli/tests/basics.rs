//! Behaviour that needs no server: help text, completions, usage errors, unreachable servers.

mod common;

use common::{free_port, run_in};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

#[test]
fn help_snapshots() {
    let d = tmp();
    for (name, args) in [
        ("main", vec!["--help"]),
        ("device", vec!["device", "--help"]),
        ("register_batch", vec!["device", "register-batch", "--help"]),
        ("revocations_watch", vec!["revocations", "watch", "--help"]),
    ] {
        let r = run_in(d.path(), &[], &args).ok();
        insta::assert_snapshot!(format!("help_{name}"), r.stdout);
    }
}

/// Every command's --help shows an example.
#[test]
fn every_command_has_an_example() {
    let d = tmp();
    let commands: &[&[&str]] = &[
        &["ca", "show"],
        &["ca", "export"],
        &["device", "register"],
        &["device", "register-batch"],
        &["device", "list"],
        &["device", "show"],
        &["device", "revoke"],
        &["device", "suspend"],
        &["device", "resume"],
        &["cert", "revoke"],
        &["cert", "show"],
        &["revocations", "list"],
        &["revocations", "watch"],
        &["crl", "fetch"],
        &["token", "create"],
        &["token", "list"],
        &["token", "revoke"],
        &["audit"],
        &["completions"],
        &["device", "status"],
        &["device", "policy"],
        &["device", "allowlist"],
        &["broker", "enroll"],
        &["model", "list"],
        &["model", "show"],
        &["model", "set"],
    ];
    for c in commands {
        let mut args = c.to_vec();
        args.push("--help");
        let r = run_in(d.path(), &[], &args).ok();
        assert!(
            r.stdout.contains("Examples:\n  devid "),
            "`devid {}` has no example:\n{}",
            c.join(" "),
            r.stdout
        );
    }
}

#[test]
fn completions_for_each_shell() {
    let d = tmp();
    for shell in ["bash", "zsh", "fish"] {
        let r = run_in(d.path(), &[], &["completions", shell]).ok();
        assert!(
            r.stdout.contains("register-batch"),
            "{shell} completions lack subcommands"
        );
    }
    run_in(d.path(), &[], &["completions", "tcsh"]).code(2);
}

#[test]
fn usage_errors_exit_2() {
    let d = tmp();
    // Unknown subcommand, missing required flag, conflicting flags, bad value.
    run_in(d.path(), &[], &["frobnicate"]).code(2);
    run_in(d.path(), &[], &["device", "revoke", "X"]).code(2);
    run_in(
        d.path(),
        &[],
        &[
            "device",
            "register",
            "--serial",
            "S",
            "--out",
            "o",
            "--csr",
            "c",
            "--generate-key",
        ],
    )
    .code(2);
    run_in(d.path(), &[], &["-o", "yaml", "ca", "show"]).code(2);
    // Reasons and roles are checked before anything is sent.
    let r = run_in(
        d.path(),
        &[],
        &["device", "revoke", "X", "--reason", "stolen", "--yes"],
    )
    .code(2);
    assert!(r.stderr.contains("keyCompromise"), "{}", r.stderr);
    run_in(
        d.path(),
        &[],
        &["token", "create", "--role", "root", "--name", "n"],
    )
    .code(2);
    // An unknown profile.
    let r = run_in(d.path(), &[], &["--profile", "nope", "ca", "show"]).code(2);
    assert!(r.stderr.contains("nope"), "{}", r.stderr);
    // Errors are one line on stderr, prefixed.
    assert_eq!(r.stderr.trim_end().lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.starts_with("error: "));
}

#[test]
fn unreachable_server_names_the_url() {
    let d = tmp();
    let url = format!("http://127.0.0.1:{}", free_port());
    let r = run_in(d.path(), &[("DEVID_SERVER", &url)], &["ca", "show"]).code(1);
    assert_eq!(
        r.stderr.trim_end(),
        format!("error: could not reach {url} (connection refused)")
    );
    let r = run_in(d.path(), &[], &["--server", &url, "device", "list"]).code(1);
    assert!(r.stderr.contains(&url), "{}", r.stderr);
}

#[test]
fn profile_selects_server_and_flag_overrides_it() {
    let d = tmp();
    let p1 = free_port();
    let p2 = free_port();
    let cfg = d.path().join("xdg/devid");
    std::fs::create_dir_all(&cfg).expect("mkdir");
    std::fs::write(
        cfg.join("config.toml"),
        format!("[profiles.line3]\nserver = \"http://127.0.0.1:{p1}\"\ntoken = \"t\"\n"),
    )
    .expect("write");
    let r = run_in(d.path(), &[], &["--profile", "line3", "ca", "show"]).code(1);
    assert!(r.stderr.contains(&format!(":{p1} ")), "{}", r.stderr);
    let r = run_in(
        d.path(),
        &[
            ("DEVID_PROFILE", "line3"),
            ("DEVID_SERVER", &format!("http://127.0.0.1:{p2}")),
        ],
        &["ca", "show"],
    )
    .code(1);
    assert!(r.stderr.contains(&format!(":{p2} ")), "{}", r.stderr);
}
