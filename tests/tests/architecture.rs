//! The architecture's invariants (ARCHITECTURE.md, "Invariants"), checked on the source tree so
//! that a change which breaks one fails the suite instead of waiting for a reviewer to notice.
//! Comment lines are skipped: they may name what the code must not use.

use std::fs;
use std::path::{Path, PathBuf};

/// Longest a non-test source file may be, counted up to its inline `#[cfg(test)]` module.
const MAX_LINES: usize = 600;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Every `.rs` file under `dir` (relative to the workspace root), recursively.
fn sources(dir: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join(dir), &mut out);
    out.sort();
    assert!(!out.is_empty(), "no sources under {dir}");
    out
}

fn rel(path: &Path) -> String {
    path.strip_prefix(root())
        .expect("under the workspace")
        .to_string_lossy()
        .into_owned()
}

/// How many lines of `text` come before its inline test module: a `#[cfg(test)]` at column 0
/// directly followed by a `mod` line. A test-only item elsewhere in the file does not end the
/// count.
fn lines_before_tests(text: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    lines
        .windows(2)
        .position(|w| w[0].starts_with("#[cfg(test)]") && w[1].starts_with("mod "))
        .unwrap_or(lines.len())
}

/// The code lines of a file before its inline test module, with comments dropped.
fn code_lines(path: &Path) -> Vec<(usize, String)> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let end = lines_before_tests(&text);
    text.lines()
        .enumerate()
        .take(end)
        .filter(|(_, l)| {
            let t = l.trim_start();
            !(t.starts_with("//") || t.starts_with("/*") || t.starts_with('*'))
        })
        .map(|(i, l)| (i + 1, l.to_string()))
        .collect()
}

/// Lines of the files under `dirs` (minus `allowed`, which are prefixes) that mention `word` as
/// a path or identifier.
fn uses(dirs: &[&str], allowed: &[&str], word: &str) -> Vec<String> {
    let mut found = Vec::new();
    for dir in dirs {
        for path in sources(dir) {
            let name = rel(&path);
            if allowed.iter().any(|a| name.starts_with(a)) {
                continue;
            }
            for (n, line) in code_lines(&path) {
                if mentions(&line, word) {
                    found.push(format!("{name}:{n}: {}", line.trim()));
                }
            }
        }
    }
    found
}

/// `word` as a whole identifier in `line` (so `sqlx` does not match `sqlxish`).
fn mentions(line: &str, word: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    line.match_indices(word).any(|(i, _)| {
        let before = line[..i].chars().next_back();
        let after = line[i + word.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

#[test]
fn core_does_no_io() {
    let mut found = Vec::new();
    for word in ["tokio", "sqlx", "reqwest", "axum", "TcpStream", "UdpSocket"] {
        found.extend(uses(&["core/src"], &[], word));
    }
    for path in [
        "std::fs",
        "std::net::Tcp",
        "std::net::Udp",
        "ToSocketAddrs",
        "std::process",
        "std::thread",
        "std::env",
    ] {
        for file in sources("core/src") {
            for (n, line) in code_lines(&file) {
                if line.contains(path) {
                    found.push(format!("{}:{n}: {}", rel(&file), line.trim()));
                }
            }
        }
    }
    assert!(found.is_empty(), "I/O in core:\n{}", found.join("\n"));
}

/// Sans-IO: the protocol, the profiles and the ClientID rules take the time (`UnixTime`,
/// `OffsetDateTime`) and randomness (`&dyn SecureRandom`) from their caller, so tests and fuzz
/// targets can fix both and the I/O shells choose the sources.
#[test]
fn core_takes_time_and_randomness_as_arguments() {
    let mut found = Vec::new();
    for word in [
        "SystemRandom",
        "OsRng",
        "thread_rng",
        "getrandom",
        "SystemTime",
        "Instant::now",
        "UnixTime::now",
        "OffsetDateTime::now_utc",
    ] {
        found.extend(uses(&["core/src"], &[], word));
    }
    assert!(
        found.is_empty(),
        "core makes its own time or randomness (take it as an argument):\n{}",
        found.join("\n")
    );
}

#[test]
fn only_the_store_speaks_sql() {
    let found = uses(
        &[
            "server/src",
            "core/src",
            "cli/src",
            "device/src",
            "broker-plugin/src",
        ],
        &["server/src/store/"],
        "sqlx",
    );
    assert!(
        found.is_empty(),
        "sqlx outside server/src/store:\n{}",
        found.join("\n")
    );
}

#[test]
fn only_the_http_edge_knows_axum() {
    let found = uses(
        &[
            "server/src",
            "core/src",
            "cli/src",
            "device/src",
            "broker-plugin/src",
        ],
        &[
            "server/src/routes/",
            "server/src/app.rs",
            "server/src/serve.rs",
            "server/src/edge.rs",
            "server/src/error.rs",
            "server/src/auth.rs",
            "server/src/tls/listener.rs",
        ],
        "axum",
    );
    assert!(
        found.is_empty(),
        "axum outside the HTTP edge (routes, app, serve, edge, error, the auth extractor, the TLS listener):\n{}",
        found.join("\n")
    );
}

#[test]
fn unsafe_code_only_at_the_plugins_ffi_boundary() {
    let mut found = Vec::new();
    for dir in [
        "core/src",
        "server/src",
        "cli/src",
        "device/src",
        "broker-plugin/src",
        "tests/src",
    ] {
        for path in sources(dir) {
            let name = rel(&path);
            if name == "broker-plugin/src/lib.rs" || name.starts_with("broker-plugin/src/ffi") {
                continue;
            }
            let text = fs::read_to_string(&path).expect("read");
            for (n, line) in text.lines().enumerate() {
                let t = line.trim_start();
                if t.starts_with("//") {
                    continue;
                }
                if mentions(line, "unsafe") {
                    found.push(format!("{name}:{}: {}", n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "unsafe outside broker-plugin/src/lib.rs and broker-plugin/src/ffi*:\n{}",
        found.join("\n")
    );
}

#[test]
fn no_rust_source_is_included_textually() {
    let mut found = Vec::new();
    for dir in [
        "core/src",
        "server/src",
        "cli/src",
        "device/src",
        "broker-plugin/src",
        "tests/src",
    ] {
        for path in sources(dir) {
            for (n, line) in code_lines(&path) {
                if line.contains("include!(") && line.contains(".rs\"") || line.contains("#[path") {
                    found.push(format!("{}:{n}: {}", rel(&path), line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "Rust source pulled in by include! or #[path] instead of a module:\n{}",
        found.join("\n")
    );
}

#[test]
fn no_source_file_is_longer_than_the_limit() {
    let mut long = Vec::new();
    for dir in [
        "core/src",
        "server/src",
        "cli/src",
        "device/src",
        "broker-plugin/src",
        "tests/src",
    ] {
        for path in sources(dir) {
            let text = fs::read_to_string(&path).expect("read");
            let lines = lines_before_tests(&text);
            if lines > MAX_LINES {
                long.push(format!("{}: {lines} lines", rel(&path)));
            }
        }
    }
    assert!(
        long.is_empty(),
        "split these along their concerns (limit {MAX_LINES} lines before the inline tests):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_checks_see_what_they_check() {
    // The scanner itself: a rule that finds nothing because it reads nothing would pass forever.
    assert!(mentions("use sqlx::Row;", "sqlx"));
    assert!(!mentions("let sqlxish = 1;", "sqlx"));
    assert!(!uses(&["server/src"], &[], "sqlx").is_empty());
    assert!(!uses(&["server/src"], &[], "axum").is_empty());
    assert_eq!(lines_before_tests("a\n#[cfg(test)]\nfn f() {}\nb\n"), 4);
    assert_eq!(
        lines_before_tests("a\nb\n#[cfg(test)]\nmod tests {\n}\n"),
        2
    );
    assert!(!uses(&["server/src"], &[], "SystemRandom").is_empty());
}
