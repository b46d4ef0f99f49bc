//! Sensors through the CLI against a real devid-server on SQLite and PostgreSQL: `device
//! register --sensor` and `register-batch --sensors` (key files of mode 0600, resumable, a key
//! shown once), `gateway attach|detach|sensors`, and sensors in device lists. Needs
//! `cargo build --workspace` first (see common/mod.rs).

mod common;

use std::path::Path;

use common::{mode, Server};

fn key_file(out: &Path, id: &str) -> std::path::PathBuf {
    out.join(format!("{id}.sensor.key"))
}

/// A key file holds K as base64url without padding (43 characters) and a newline.
fn check_key_file(out: &Path, id: &str) -> String {
    let path = key_file(out, id);
    let text = std::fs::read_to_string(&path).expect("key file");
    assert_eq!(mode(&path), 0o600, "{}", path.display());
    let key = text.strip_suffix('\n').expect("newline");
    assert_eq!(key.len(), 43, "{key}");
    assert!(key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    key.to_string()
}

#[test]
fn register_a_sensor_and_its_key_is_written_once() {
    for s in Server::each_backend() {
        let out = s.work().join("flash");
        let out_s = out.to_str().expect("utf8");
        let args = [
            "device",
            "register",
            "--serial",
            "TS-1",
            "--model",
            "tempsense",
            "--sensor",
            "--out",
            out_s,
        ];
        let r = s.devid(&args).ok();
        let id = r.stdout.trim().to_string();
        devid_core::clientid::validate(&id).expect("a ClientID");
        let key = check_key_file(&out, &id);
        assert!(
            !out.join(format!("{id}.crt")).exists(),
            "a sensor has no certificate"
        );
        // Again: the server answers without the key; the file written before is kept.
        let r = s.devid(&args).ok();
        assert_eq!(r.stdout.trim(), id);
        assert!(r.stderr.contains("already registered"), "{r:?}");
        assert_eq!(check_key_file(&out, &id), key);
        // Without that file the key is gone for good, and the CLI says so.
        std::fs::remove_file(key_file(&out, &id)).expect("rm");
        let r = s.devid(&args).code(1);
        assert!(r.stderr.contains("returned once"), "{}: {r:?}", s.backend());
        assert!(!key_file(&out, &id).exists());
        // A sensor takes no CSR and no key pair.
        s.devid(&[
            "device",
            "register",
            "--serial",
            "TS-2",
            "--sensor",
            "--generate-key",
            "--out",
            out_s,
        ])
        .code(2);
        // JSON: the registration answer, with the key.
        let j = s
            .devid(&[
                "-o", "json", "device", "register", "--serial", "TS-3", "--sensor", "--out", out_s,
            ])
            .ok()
            .json();
        assert_eq!(j["kind"], "sensor");
        let id3 = j["client_id"].as_str().expect("id");
        assert_eq!(format!("{}\n", j["sensor_key"].as_str().expect("key")), {
            std::fs::read_to_string(key_file(&out, id3)).expect("file")
        });
    }
}

fn write_csv(path: &Path, serials: &[&str]) {
    let mut text = String::from("hardware_serial,model\n");
    for s in serials {
        text.push_str(&format!("{s},tempsense\n"));
    }
    std::fs::write(path, text).expect("csv");
}

fn manifest(out: &Path) -> Vec<csv::StringRecord> {
    csv::Reader::from_path(out.join("manifest.csv"))
        .expect("manifest")
        .records()
        .map(|r| r.expect("row"))
        .collect()
}

#[test]
fn register_batch_of_sensors_writes_each_key_and_resumes() {
    for s in Server::each_backend() {
        let w = s.work();
        let csv = w.join("sensors.csv");
        let out = w.join("flash");
        let (csv_s, out_s) = (csv.to_str().expect("utf8"), out.to_str().expect("utf8"));
        write_csv(&csv, &["B-1", "B-2", "B-3"]);
        let batch = [
            "device",
            "register-batch",
            "--csv",
            csv_s,
            "--sensors",
            "--out",
            out_s,
        ];
        let j = s
            .devid(&[&["-o", "json"][..], &batch[..]].concat())
            .ok()
            .json();
        assert_eq!(j["registered"], 3, "{j}");
        let rows = manifest(&out);
        assert_eq!(rows.len(), 3);
        let ids: Vec<String> = rows.iter().map(|r| r[2].to_string()).collect();
        for (row, id) in rows.iter().zip(&ids) {
            check_key_file(&out, id);
            assert_eq!(&row[3], "", "no certificate serial for a sensor");
        }
        // Done rows are skipped.
        let j = s
            .devid(&[&["-o", "json"][..], &batch[..]].concat())
            .ok()
            .json();
        assert_eq!(j["skipped"], 3, "{j}");
        assert_eq!(j["registered"], 0, "{j}");

        // A run cut short after a key file was synced but before its manifest line: the re-run
        // finds the key file and records the sensor.
        let text = std::fs::read_to_string(out.join("manifest.csv")).expect("manifest");
        let kept: Vec<&str> = text.lines().take(3).collect();
        std::fs::write(out.join("manifest.csv"), format!("{}\n", kept.join("\n"))).expect("w");
        let j = s
            .devid(&[&["-o", "json"][..], &batch[..]].concat())
            .ok()
            .json();
        assert_eq!(
            (j["skipped"].as_u64(), j["already_registered"].as_u64()),
            (Some(2), Some(1))
        );
        assert_eq!(manifest(&out).len(), 3);

        // A sensor whose answer was lost (no key file): its key is never shown again.
        std::fs::remove_file(key_file(&out, &ids[0])).expect("rm");
        write_csv(&csv, &["B-1", "B-2", "B-3", "B-4"]);
        let r = s.devid(&batch).code(1);
        assert!(r.stderr.contains("returned once"), "{}: {r:?}", s.backend());
        let failures = std::fs::read_to_string(out.join("failures.csv")).expect("failures");
        assert!(failures.contains("B-1"), "{failures}");
        assert!(!failures.contains("B-4"), "{failures}");
        // The other rows went through.
        let rows = manifest(&out);
        let b4 = rows
            .iter()
            .find(|r| &r[0] == "B-4")
            .expect("B-4 registered");
        check_key_file(&out, &b4[2]);
    }
}

#[test]
fn gateways_attach_detach_and_list_sensors() {
    for s in Server::each_backend() {
        let out = s.work().join("flash");
        let out_s = out.to_str().expect("utf8");
        let register = |serial: &str, sensor: bool| {
            let mut args = vec!["device", "register", "--serial", serial, "--out", out_s];
            args.push(if sensor { "--sensor" } else { "--generate-key" });
            s.devid(&args).ok().stdout.trim().to_string()
        };
        let (gw1, gw2) = (register("G-1", false), register("G-2", false));
        let (s1, s2) = (register("GS-1", true), register("GS-2", true));

        let r = s.devid(&["gateway", "attach", &gw1, &s1, &s2]).ok();
        assert!(r.stdout.contains(&s1) && r.stdout.contains(&s2), "{r:?}");
        let j = s
            .devid(&["-o", "json", "gateway", "sensors", &gw1])
            .ok()
            .json();
        assert_eq!(j["sensors"].as_array().expect("list").len(), 2, "{j}");

        // Attaching to another gateway moves it.
        s.devid(&["gateway", "attach", &gw2, &s2]).ok();
        let j = s
            .devid(&["-o", "json", "gateway", "sensors", &gw1])
            .ok()
            .json();
        assert_eq!(j["sensors"][0]["client_id"], s1.as_str(), "{j}");
        assert_eq!(j["sensors"].as_array().expect("list").len(), 1);
        s.devid(&["gateway", "detach", &gw1, &s1]).ok();
        let j = s
            .devid(&["-o", "json", "gateway", "sensors", &gw1])
            .ok()
            .json();
        assert_eq!(j["sensors"], serde_json::json!([]));

        // A sensor is no gateway, and a device is no sensor: refused, nothing changed.
        let r = s.devid(&["gateway", "attach", &s1, &s2]).code(1);
        assert!(r.stderr.contains("is a sensor"), "{r:?}");
        s.devid(&["gateway", "attach", &gw1, &gw2]).code(1);
        s.devid(&["gateway", "attach", &gw1, "not-an-id"]).code(2);

        // Device lists show kind and gateway.
        let j = s
            .devid(&["-o", "json", "device", "list", "--kind", "sensor"])
            .ok()
            .json();
        let items = j["items"].as_array().expect("items");
        assert_eq!(items.len(), 2, "{}: {j}", s.backend());
        let row = items
            .iter()
            .find(|d| d["client_id"] == s2.as_str())
            .expect("s2");
        assert_eq!(row["gateway"], gw2.as_str());
        assert_eq!(row["kind"], "sensor");
        let table = s.devid(&["device", "list"]).ok().stdout;
        assert!(
            table.lines().next().expect("header").contains("GATEWAY"),
            "{table}"
        );
        let shown = s.devid(&["device", "show", &s2]).ok().stdout;
        assert!(shown.contains("sensor") && shown.contains(&gw2), "{shown}");
    }
}

#[test]
fn sensor_rekey_writes_the_new_key_to_a_private_file() {
    use std::os::unix::fs::PermissionsExt;
    for s in Server::each_backend() {
        let out = s.work().join("flash");
        let out_s = out.to_str().expect("utf8");
        let id = s
            .devid(&[
                "device", "register", "--serial", "RK-1", "--sensor", "--out", out_s,
            ])
            .ok()
            .stdout
            .trim()
            .to_string();
        let file = out.join(format!("{id}.sensor.key"));
        let old = std::fs::read_to_string(&file).expect("registration's key file");
        let j = s
            .devid(&["-o", "json", "sensor", "rekey", &id, "--out", out_s])
            .ok()
            .json();
        assert_eq!(j["client_id"], id.as_str(), "{j}");
        assert_eq!(j["key_file"], file.to_str().expect("utf8"), "{j}");
        let new = std::fs::read_to_string(&file).expect("new key file");
        assert_eq!(new.trim().len(), 43, "{new}");
        assert_ne!(new, old, "{}: a new key", s.backend());
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A device has no sensor key: refused, no file written.
        let gw = s
            .devid(&[
                "device",
                "register",
                "--serial",
                "RK-G",
                "--generate-key",
                "--out",
                out_s,
            ])
            .ok()
            .stdout
            .trim()
            .to_string();
        let r = s.devid(&["sensor", "rekey", &gw, "--out", out_s]).code(1);
        assert!(r.stderr.contains("not a sensor"), "{r:?}");
        assert!(!out.join(format!("{gw}.sensor.key")).exists());
    }
}
