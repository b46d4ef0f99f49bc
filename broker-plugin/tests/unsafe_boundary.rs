//! Only the FFI boundary (`lib.rs`, `ffi.rs`) may contain `unsafe`: every other module of the
//! plugin carries `#![deny(unsafe_code)]`, including modules added later.

use std::fs;
use std::path::Path;

const BOUNDARY: &[&str] = &["lib.rs", "ffi.rs"];

#[test]
fn every_module_outside_the_ffi_boundary_denies_unsafe_code() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    let mut missing = Vec::new();
    for entry in fs::read_dir(&src).expect("src dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        if path.extension().is_none_or(|e| e != "rs") || BOUNDARY.contains(&name.as_str()) {
            continue;
        }
        checked += 1;
        let text = fs::read_to_string(&path).expect("read module");
        if !text.lines().any(|l| l.trim() == "#![deny(unsafe_code)]") {
            missing.push(name);
        }
    }
    assert!(
        checked >= 8,
        "only {checked} modules found in {}",
        src.display()
    );
    assert!(
        missing.is_empty(),
        "modules without #![deny(unsafe_code)]: {missing:?}"
    );
}
