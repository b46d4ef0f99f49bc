//! The CLI applies core's value rules (duration, hardware serial, model name, CIDR) to its flags
//! and CSV rows before anything is sent. Needs `cargo build --workspace` first (see
//! common/mod.rs).

mod common;

use common::Server;

fn device_count(s: &Server) -> usize {
    let j = s.devid(&["-o", "json", "device", "list"]).ok().json();
    j["items"].as_array().expect("items").len()
}

#[test]
fn token_expires_takes_every_unit_of_the_duration_grammar() {
    let s = Server::start();
    let j = s
        .devid(&[
            "-o",
            "json",
            "token",
            "create",
            "--role",
            "auditor",
            "--name",
            "yearly",
            "--expires",
            "1y",
        ])
        .ok()
        .json();
    let at = |k: &str| {
        let t = j[k].as_str().unwrap_or_else(|| panic!("{k} in {j}"));
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .expect("RFC 3339")
    };
    let (created, expires) = (at("created_at"), at("expires_at"));
    // A year is 365 days; the two times are taken a moment apart.
    let diff = (expires - created).whole_seconds();
    assert!(
        (365 * 86_400..365 * 86_400 + 60).contains(&diff),
        "1y from {created} is {expires}"
    );
    for ok in ["2w", "3600", "90m"] {
        s.devid(&[
            "token",
            "create",
            "--role",
            "auditor",
            "--name",
            ok,
            "--expires",
            ok,
        ])
        .ok();
    }
    for bad in ["1mo", "0d", "1h30m", "-1d"] {
        let r = s
            .devid(&[
                "token",
                "create",
                "--role",
                "auditor",
                "--name",
                "x",
                &format!("--expires={bad}"),
            ])
            .code(2);
        assert!(r.stderr.contains(bad), "{bad}: {}", r.stderr);
    }
}

#[test]
fn register_refuses_serials_and_models_core_refuses_before_sending() {
    let s = Server::start();
    let out = s.work().join("flash");
    let out = out.to_str().expect("utf8");
    let r = s
        .devid(&[
            "device",
            "register",
            "--serial",
            "SN_0010@y",
            "--generate-key",
            "--out",
            out,
        ])
        .code(2);
    assert!(
        r.stderr.contains("'_' (U+005F) at position 3"),
        "{}",
        r.stderr
    );
    let r = s
        .devid(&[
            "device",
            "register",
            "--serial",
            "SN1",
            "--model",
            "..",
            "--generate-key",
            "--out",
            out,
        ])
        .code(2);
    assert!(r.stderr.contains("dots"), "{}", r.stderr);
    s.devid(&["model", "show", "..."]).code(2);
    s.devid(&[
        "token", "create", "--role", "factory", "--name", "f", "--models", ".",
    ])
    .code(2);
    assert_eq!(device_count(&s), 0);
}

#[test]
fn register_batch_lists_bad_serials_and_models_as_failures_and_sends_the_rest() {
    let s = Server::start();
    let w = s.work();
    let csv = w.join("line.csv");
    std::fs::write(
        &csv,
        "hardware_serial,model\n\
         GOOD-1,thermo\n\
         SN\u{202e}2,thermo\n\
         SN 0008*,thermo\n\
         GOOD-2,...\n\
         GOOD 3,thermo\n",
    )
    .expect("write csv");
    let out = w.join("flash");
    let r = s
        .devid(&[
            "device",
            "register-batch",
            "--csv",
            csv.to_str().expect("utf8"),
            "--generate-keys",
            "--out",
            out.to_str().expect("utf8"),
        ])
        .code(1);
    for needle in [
        "line 3: hardware_serial has the character U+202E at position 3",
        "line 4: hardware_serial has the character '*' (U+002A) at position 8",
        "line 5: model \"...\" is made of dots alone",
    ] {
        assert!(
            r.stderr.contains(needle),
            "{needle:?} missing from:\n{}",
            r.stderr
        );
    }
    let j = s.devid(&["-o", "json", "device", "list"]).ok().json();
    let mut serials: Vec<&str> = j["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| d["hardware_serial"].as_str().expect("serial"))
        .collect();
    serials.sort_unstable();
    assert_eq!(serials, ["GOOD 3", "GOOD-1"]);
}

#[test]
fn allowlist_refuses_what_core_refuses_and_sends_the_canonical_form() {
    let s = Server::start();
    let reg = s
        .devid(&[
            "-o",
            "json",
            "device",
            "register",
            "--serial",
            "AL1",
            "--generate-key",
            "--out",
            s.work().join("flash").to_str().expect("utf8"),
        ])
        .ok()
        .json();
    let id = reg["client_id"].as_str().expect("client_id").to_string();
    for bad in ["10.0.0.0/+8", "10.0.0.1/8", "010.0.0.0/8", "::1/129"] {
        let r = s.devid(&["device", "allowlist", &id, bad]).code(2);
        assert!(r.stderr.contains(bad), "{bad}: {}", r.stderr);
    }
    let j = s
        .devid(&[
            "-o",
            "json",
            "device",
            "allowlist",
            &id,
            "2001:DB8::/32",
            "192.0.2.7/32",
        ])
        .ok()
        .json();
    assert_eq!(
        j["allowed_cidrs"],
        serde_json::json!(["2001:db8::/32", "192.0.2.7"])
    );
}

/// A person at the line reads the rules where they type: `devid device register --help`.
#[test]
fn register_help_names_the_input_rules() {
    let d = tempfile::tempdir().expect("tempdir");
    let r = common::run_in(d.path(), &[], &["device", "register", "--help"]).ok();
    for rule in [
        "ECDSA P-256",
        "1-64 of A-Z a-z 0-9, space and ' ( ) + , - . / : =",
        "1-64 of A-Z a-z 0-9 - _ . (not dots alone)",
        "at most 23 of 0-9 A-Z a-z",
    ] {
        assert!(
            r.stdout.contains(rule),
            "--help lacks {rule:?}:\n{}",
            r.stdout
        );
    }
}
