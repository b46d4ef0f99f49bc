//! `devid fleet` and `devid device health|timeline` against a real devid-server, on SQLite and
//! (with DEVID_TEST_POSTGRES_URL) PostgreSQL, in table and JSON output. Needs
//! `cargo build -p devid-cli -p devid-server` first (see common/mod.rs).

mod common;

use common::Server;

#[test]
fn fleet_summary_findings_checks_health_and_timeline() {
    for s in Server::each_backend() {
        let out = s.work().join("flash");
        let out_s = out.to_str().expect("utf8");
        let reg = s
            .devid(&[
                "-o",
                "json",
                "device",
                "register",
                "--serial",
                "FC-1",
                "--model",
                "thermo",
                "--generate-key",
                "--out",
                out_s,
            ])
            .ok()
            .json();
        let id = reg["client_id"].as_str().expect("client_id").to_string();

        let j = s.devid(&["-o", "json", "fleet", "summary"]).ok().json();
        assert_eq!(j["total"], 1, "{}: {j}", s.backend());
        assert_eq!(j["never_seen"], 1);
        assert_eq!(j["connected_now"], 0);
        let t = s.devid(&["fleet", "summary"]).ok();
        assert!(t.stdout.contains("never_seen:"), "{}", t.stdout);
        assert!(
            t.stdout.contains("brokers:       0 live of 0"),
            "{}",
            t.stdout
        );

        let j = s.devid(&["-o", "json", "fleet", "findings"]).ok().json();
        assert_eq!(j["items"], serde_json::json!([]), "{j}");
        let t = s
            .devid(&["fleet", "findings", "--state", "all", "--check", "silent"])
            .ok();
        assert!(t.stdout.starts_with("ID"), "{}", t.stdout);
        // A bad filter is the server's clear error, exit non-zero.
        let r = s.devid(&["fleet", "findings", "--state", "maybe"]);
        assert_ne!(r.code, 0, "{r:?}");
        assert!(r.stderr.contains("maybe"), "{}", r.stderr);

        let t = s.devid(&["fleet", "checks", "thermo"]).ok();
        assert!(t.stdout.contains("24h (default)"), "{}", t.stdout);
        let j = s
            .devid(&[
                "-o",
                "json",
                "fleet",
                "checks",
                "thermo",
                "--silent-after",
                "2h",
            ])
            .ok()
            .json();
        assert_eq!(j, serde_json::json!({"silent_after": "2h"}));
        let j = s
            .devid(&[
                "-o",
                "json",
                "fleet",
                "checks",
                "thermo",
                "--auth-failures",
                "5",
            ])
            .ok()
            .json();
        assert_eq!(
            j,
            serde_json::json!({"silent_after": "2h", "auth_failures": 5})
        );
        // A duration without its unit is refused before anything is sent.
        let r = s.devid(&["fleet", "checks", "thermo", "--never-seen", "30x"]);
        assert_ne!(r.code, 0);

        let j = s
            .devid(&["-o", "json", "device", "health", &id])
            .ok()
            .json();
        assert_eq!(j["client_id"], id.as_str());
        assert_eq!(j["status"], "active");
        assert_eq!(j["connected_on"], serde_json::json!([]));
        let t = s.devid(&["device", "health", &id]).ok();
        assert!(t.stdout.contains("last_connect:"), "{}", t.stdout);
        assert!(t.stdout.contains("model:") && t.stdout.contains("thermo"));

        s.devid(&["device", "suspend", &id, "--yes"]);
        let j = s
            .devid(&["-o", "json", "device", "timeline", &id, "--limit", "10"])
            .ok()
            .json();
        assert!(j["items"].is_array(), "{j}");
        let t = s.devid(&["device", "timeline", &id]).ok();
        assert!(t.stdout.starts_with("ID"), "{}", t.stdout);
        let r = s.devid(&["device", "health", "NoSuchDevice"]);
        assert_ne!(r.code, 0);
    }
}
