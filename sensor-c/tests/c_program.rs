//! A C program compiled with the system C compiler against `devid_sensor.h` and the static
//! library checks the DEVID-S1 test vector through the C ABI.

use std::path::{Path, PathBuf};
use std::process::Command;

use devid_sensor::derive;
use devid_sensor::frame::{Decoder, Destination, Protection, Push, Reading, SensorRef};
use devid_sensor::publish_mac;

/// The static library cargo built with this test: the newest `libdevid_sensor_c-*.a` beside
/// this test executable (target/<profile>/deps), since cargo builds the library's crate types
/// together before running its tests.
fn static_library() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("target/<profile>/deps");
    std::fs::read_dir(deps)
        .expect("read deps")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libdevid_sensor_c-") && n.ends_with(".a"))
        })
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .expect("libdevid_sensor_c-*.a in target/<profile>/deps")
}

#[test]
fn a_c_program_checks_the_test_vector_through_the_header_and_static_library() {
    let lib = static_library();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let include = manifest.join("../sensor/include");
    let source = manifest.join("tests/c/vectors.c");
    let dir = tempfile::tempdir().expect("tempdir");
    let program = dir.path().join("vectors");
    let cc = Command::new("cc")
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-I"])
        .arg(&include)
        .arg(&source)
        .arg(&lib)
        // What a Rust static library with std needs from the system (rustc
        // --print native-static-libs).
        .args([
            "-lgcc_s",
            "-lutil",
            "-lrt",
            "-lpthread",
            "-lm",
            "-ldl",
            "-lc",
            "-o",
        ])
        .arg(&program)
        .output()
        .expect("run cc");
    assert!(
        cc.status.success(),
        "cc failed:\n{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let run = Command::new(&program).output().expect("run the C program");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "the C program failed:\n{stdout}");
    for line in [
        "ok K_mac",
        "ok K_enc",
        "ok devid-sensor-mac",
        "ok sealed payload",
        "ok persist before use",
        "ok frame_encode",
        "0 failures",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "{line:?} not in:\n{stdout}"
        );
    }
    // The frame the C program encoded decodes with the crate to the vector's MAC reading.
    let wire = stdout
        .lines()
        .find_map(|l| l.strip_prefix("frame "))
        .expect("a frame line");
    let wire = hex::decode(wire).expect("hex");
    let mut decoder = Decoder::<256>::new();
    let mut got = Vec::new();
    for b in wire {
        match decoder.push(b) {
            Push::Frame(r) => got.push(format!("{r:?}")),
            Push::Dropped(e) => panic!("dropped: {e}"),
            Push::Pending => {}
        }
    }
    let id = b"TMP0A1B2C3D4E5F6G7H8J9K";
    let topic = b"devices/TMP0A1B2C3D4E5F6G7H8J9K/temp";
    let keys = derive(&std::array::from_fn(|i| i as u8), id).expect("derive");
    let payload = br#"{"t":21.5}"#;
    let want = Reading {
        sensor: SensorRef::Id(id),
        seq: 1,
        destination: Destination::Channel(b"temp"),
        payload,
        protection: Protection::Mac(publish_mac(&keys.mac, id, 1, topic, payload).expect("mac")),
    };
    assert_eq!(got, [format!("{want:?}")]);
}
