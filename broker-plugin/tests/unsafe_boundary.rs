//! Only the FFI boundary (`lib.rs` and everything under `ffi/`) may contain `unsafe`: every
//! other module of the plugin carries `#![deny(unsafe_code)]`, including modules added later and
//! modules in subdirectories.

use std::fs;
use std::path::{Path, PathBuf};

/// The crate root, which holds the exported entry points.
const ROOT: &str = "lib.rs";
/// The directory of the FFI modules.
const FFI_DIR: &str = "ffi";

/// True for a file of the boundary, given as a path relative to `src`.
fn in_boundary(rel: &Path) -> bool {
    rel == Path::new(ROOT) || rel.starts_with(FFI_DIR)
}

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
    let mut boundary = 0;
    let mut missing = Vec::new();
    for path in files {
        let rel = path.strip_prefix(&src).expect("under src");
        if in_boundary(rel) {
            boundary += 1;
            continue;
        }
        let name = rel.to_string_lossy().into_owned();
        checked += 1;
        let text = fs::read_to_string(&path).expect("read module");
        if !text.lines().any(|l| l.trim() == "#![deny(unsafe_code)]") {
            missing.push(name);
        }
    }
    assert!(
        checked >= 15,
        "only {checked} modules outside the boundary found in {}",
        src.display()
    );
    assert!(
        boundary >= 2,
        "the boundary ({ROOT}, {FFI_DIR}/) has only {boundary} files in {}",
        src.display()
    );
    assert!(
        missing.is_empty(),
        "modules without #![deny(unsafe_code)]: {missing:?}"
    );
}
