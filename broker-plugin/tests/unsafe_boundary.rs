//! Only the FFI boundary (`lib.rs`, `ffi.rs`) may contain `unsafe`: every other module of the
//! plugin carries `#![deny(unsafe_code)]`, including modules added later and modules in
//! subdirectories.

use std::fs;
use std::path::{Path, PathBuf};

/// The boundary, as paths relative to `src`.
const BOUNDARY: &[&str] = &["lib.rs", "ffi.rs"];

/// Every `.rs` file under `dir`, in its subdirectories too.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("src dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_module_outside_the_ffi_boundary_denies_unsafe_code() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut checked = 0;
    let mut missing = Vec::new();
    for path in files {
        let name = path
            .strip_prefix(&src)
            .expect("under src")
            .to_string_lossy()
            .into_owned();
        if BOUNDARY.contains(&name.as_str()) {
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
