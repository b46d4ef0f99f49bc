//! The workspace's built binaries and plugin, refused when older than their sources.

use std::path::{Path, PathBuf};

/// `<workspace>/target/debug`, or `$CARGO_TARGET_DIR/debug`.
pub fn target_dir() -> PathBuf {
    profile_dir("debug")
}

/// `<workspace>/target/<profile>`, or `$CARGO_TARGET_DIR/<profile>`.
fn profile_dir(profile: &str) -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    base.join(profile)
}

/// A built artifact of the workspace (a binary, or the plugin `libdevid_mosquitto.so`); panics
/// with the fix when it is missing or older than its sources, so a test never runs a binary of
/// older code (`cargo test -p devid-e2e` builds this crate, not the server or the plugin).
pub fn artifact(name: &str) -> PathBuf {
    artifact_of("debug", name)
}

/// [`artifact`] from another profile's directory (`release`, for benchmarks).
pub fn artifact_of(profile: &str, name: &str) -> PathBuf {
    let p = profile_dir(profile).join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace` first",
        p.display()
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent");
    if let Some(why) = stale(&p, root) {
        panic!("{} {why}: run `cargo build --workspace` first", p.display());
    }
    p
}

/// Why `artifact` is not the build of the sources under `root`, or None when it is: cargo's
/// dep-info file next to it (`X.d` for `X` and `libX.so`) lists every source file of the
/// workspace that went into it; each must exist under `root` and be no newer than the artifact.
pub fn stale(artifact: &Path, root: &Path) -> Option<String> {
    let dep_info = artifact.with_extension("d");
    let Ok(text) = std::fs::read_to_string(&dep_info) else {
        return Some(format!(
            "has no dep-info file {} to check its sources against",
            dep_info.display()
        ));
    };
    let built = match std::fs::metadata(artifact).and_then(|m| m.modified()) {
        Ok(t) => t,
        Err(e) => return Some(format!("cannot be read ({e})")),
    };
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    // `target: dep dep ...`, one rule per line; a space inside a path is escaped as `\ `.
    for line in text.lines() {
        let Some((_, deps)) = line.split_once(": ") else {
            continue;
        };
        for dep in split_dep_paths(deps) {
            let dep = Path::new(&dep);
            let Ok(canonical) = dep.canonicalize() else {
                return Some(format!("was built from {}, which is gone", dep.display()));
            };
            if !canonical.starts_with(&root) {
                return Some(format!(
                    "was built from another checkout ({})",
                    dep.display()
                ));
            }
            match std::fs::metadata(&canonical).and_then(|m| m.modified()) {
                Ok(t) if t > built => {
                    return Some(format!(
                        "is older than its sources ({} changed since)",
                        dep.display()
                    ))
                }
                Ok(_) => {}
                Err(e) => return Some(format!("source {} unreadable ({e})", dep.display())),
            }
        }
    }
    None
}

fn split_dep_paths(deps: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = deps.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => cur.push(n),
                None => cur.push('\\'),
            },
            ' ' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    use tempfile::TempDir;

    fn set_mtime(p: &Path, t: SystemTime) {
        std::fs::File::options()
            .write(true)
            .open(p)
            .and_then(|f| f.set_modified(t))
            .expect("set mtime");
    }

    /// A workspace under a temp dir: `src/a b.rs` (a space, escaped in dep-info), `src/lib.rs`,
    /// and `target/debug/bin` built at `built` with its `bin.d`.
    fn tree(built: SystemTime, source: SystemTime) -> (TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("src")).expect("mkdir");
        std::fs::create_dir_all(root.join("target/debug")).expect("mkdir");
        let a = root.join("src/a b.rs");
        let lib = root.join("src/lib.rs");
        let bin = root.join("target/debug/bin");
        for p in [&a, &lib, &bin] {
            std::fs::write(p, "x").expect("write");
        }
        let esc = |p: &Path| p.display().to_string().replace(' ', "\\ ");
        std::fs::write(
            root.join("target/debug/bin.d"),
            format!("{}: {} {}\n", esc(&bin), esc(&a), esc(&lib)),
        )
        .expect("write dep-info");
        set_mtime(&a, source);
        set_mtime(&lib, source);
        set_mtime(&bin, built);
        (dir, bin)
    }

    #[test]
    fn an_artifact_newer_than_its_sources_is_fresh() {
        let now = SystemTime::now();
        let (dir, bin) = tree(now, now - Duration::from_secs(60));
        assert_eq!(stale(&bin, dir.path()), None);
    }

    #[test]
    fn an_artifact_older_than_a_source_is_stale() {
        let now = SystemTime::now();
        let (dir, bin) = tree(
            now - Duration::from_secs(60),
            now - Duration::from_secs(120),
        );
        assert_eq!(stale(&bin, dir.path()), None);
        set_mtime(&dir.path().join("src/a b.rs"), now);
        let why = stale(&bin, dir.path()).expect("stale");
        assert!(
            why.contains("older than its sources") && why.contains("a b.rs"),
            "{why}"
        );
    }

    #[test]
    fn an_artifact_of_another_checkout_or_without_dep_info_is_stale() {
        let now = SystemTime::now();
        let (dir, bin) = tree(now, now - Duration::from_secs(60));
        let other = tempfile::tempdir().expect("tempdir");
        let why = stale(&bin, other.path()).expect("stale");
        assert!(why.contains("another checkout"), "{why}");
        std::fs::remove_file(dir.path().join("target/debug/bin.d")).expect("rm");
        let why = stale(&bin, dir.path()).expect("stale");
        assert!(why.contains("no dep-info"), "{why}");
    }
}
