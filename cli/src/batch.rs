//! `devid device register-batch`: the manufacturing line's hot path.
//!
//! Flow: read and check the whole CSV (bad rows are reported by line and never sent) → load the
//! output directory's state → for each chunk of rows still to do: make keys and CSRs on all cores
//! (or read them from --csr-dir), append the new keys to the journal and fsync it, *then* send the
//! chunk; write each `<ClientID>.crt` / `.key`, then append the chunk to `manifest.csv` and fsync
//! it. A couple of chunks are in flight at once.
//!
//! Why a re-run registers every serial exactly once: a serial is done when it is in
//! `manifest.csv` and its files exist. Anything else is sent again with the very CSR it was sent
//! with before (kept in the journal), and the server answers a repeated serial + CSR with the
//! existing device (200, `created: false`) instead of issuing again. A key is in the journal on
//! disk before its CSR ever leaves the machine, so no issued certificate can lack its key.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead as _, BufReader, IsTerminal as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use devid_core::api::{BatchRequest, BatchResponse, RegisterRequest, Registered};
use futures::StreamExt as _;
use reqwest::Method;
use serde::{Deserialize, Serialize};

use crate::cli::{BatchArgs, OutputFormat};
use crate::client::Api;
use crate::cmd::{create_dir, print_json, print_text, write_direct, write_public};
use crate::error::{io_err, problem_line, CliError, Exit, Result};
use crate::keys;
use crate::table;

/// The name a hardware serial gets in file names: `[A-Za-z0-9._-]` kept, anything else (and a
/// leading dot) as `%XX`.
pub fn file_key(serial: &str) -> String {
    let mut out = String::with_capacity(serial.len());
    for (i, b) in serial.bytes().enumerate() {
        let keep = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if keep {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One good CSV row.
#[derive(Debug, Clone)]
pub struct Row {
    /// 1-based line in the CSV file (the header is line 1).
    pub line: u64,
    pub serial: String,
    pub model: Option<String>,
    pub client_id: Option<String>,
    pub metadata: Option<serde_json::Value>,
}

/// A row that failed, for the summary and `failures.csv`.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub line: u64,
    pub hardware_serial: String,
    pub error: String,
}

/// Reads and checks the CSV. Errors about the file as a whole (unreadable, bad header) are
/// usage errors; errors about a row become [`Failure`]s.
pub fn read_csv(path: &Path) -> Result<(Vec<Row>, Vec<Failure>)> {
    let file =
        File::open(path).map_err(|e| io_err(format!("cannot read CSV {}", path.display()), e))?;
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(BufReader::new(file));
    let headers: Vec<String> = rdr
        .headers()
        .map_err(|e| CliError::usage(format!("CSV {}: {e}", path.display())))?
        .iter()
        .map(str::to_string)
        .collect();
    let mut seen_h = HashSet::new();
    for h in &headers {
        if h.is_empty() {
            return Err(CliError::usage(format!(
                "CSV {}: the header has an empty column name",
                path.display()
            )));
        }
        if !seen_h.insert(h.as_str()) {
            return Err(CliError::usage(format!(
                "CSV {}: column {h:?} appears twice in the header",
                path.display()
            )));
        }
    }
    let col = |name: &str| headers.iter().position(|h| h == name);
    let serial_col = col("hardware_serial").ok_or_else(|| {
        CliError::usage(format!(
            "CSV {}: the header lacks the hardware_serial column (expected hardware_serial,model[,client_id][,metadata…])",
            path.display()
        ))
    })?;
    let model_col = col("model").ok_or_else(|| {
        CliError::usage(format!(
            "CSV {}: the header lacks the model column (expected hardware_serial,model[,client_id][,metadata…])",
            path.display()
        ))
    })?;
    let client_col = col("client_id");

    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let mut first_line: HashMap<String, u64> = HashMap::new();
    for rec in rdr.records() {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                failures.push(Failure {
                    line,
                    hardware_serial: String::new(),
                    error: format!("line {line}: unreadable: {e}"),
                });
                continue;
            }
        };
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        let serial = rec.get(serial_col).unwrap_or("").to_string();
        let fail = |error: String| Failure {
            line,
            hardware_serial: serial.clone(),
            error: format!("line {line}: {error}"),
        };
        if rec.len() != headers.len() {
            failures.push(fail(format!(
                "has {} columns, the header has {} ({})",
                rec.len(),
                headers.len(),
                headers.join(",")
            )));
            continue;
        }
        if let Err(e) = devid_core::HardwareSerial::parse(&serial) {
            failures.push(fail(format!("hardware_serial {e}")));
            continue;
        }
        if let Some(first) = first_line.get(&serial) {
            failures.push(fail(format!(
                "hardware_serial {serial:?} duplicates line {first}"
            )));
            continue;
        }
        let client_id = client_col
            .and_then(|c| rec.get(c))
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        if let Some(id) = &client_id {
            if let Err(e) = devid_core::clientid::validate(id) {
                failures.push(fail(format!("client_id {id:?}: {e}")));
                continue;
            }
        }
        let model = rec
            .get(model_col)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        if let Some(Err(e)) = model.as_deref().map(devid_core::ModelName::parse) {
            failures.push(fail(e.to_string()));
            continue;
        }
        let mut meta = serde_json::Map::new();
        for (i, h) in headers.iter().enumerate() {
            if i == serial_col || i == model_col || Some(i) == client_col {
                continue;
            }
            if let Some(v) = rec.get(i).filter(|v| !v.is_empty()) {
                meta.insert(h.clone(), serde_json::Value::String(v.to_string()));
            }
        }
        first_line.insert(serial.clone(), line);
        rows.push(Row {
            line,
            serial,
            model,
            client_id,
            metadata: (!meta.is_empty()).then_some(serde_json::Value::Object(meta)),
        });
    }
    Ok((rows, failures))
}

/// One journal line: a key made here and the CSR it signed, recorded before the CSR is sent.
#[derive(Serialize, Deserialize)]
struct JournalEntry {
    hardware_serial: String,
    key: String,
    csr: String,
}

/// One `manifest.csv` line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestRow {
    pub hardware_serial: String,
    pub model: String,
    pub client_id: String,
    pub serial: String,
    pub fingerprint_sha256: String,
    pub not_after: String,
    /// `<ClientID>.chain.pem` (certificate and issuing CA, for TLS clients), beside the manifest.
    pub chain_file: String,
}

const MANIFEST_HEADER: &str =
    "hardware_serial,model,client_id,serial,fingerprint_sha256,not_after,chain_file\n";

/// The name of a device's `<ClientID>.chain.pem`.
pub fn chain_file(client_id: &str) -> String {
    format!("{client_id}.chain.pem")
}

/// Refuses, before anything is written, an output directory whose manifest has other columns
/// (written by another version of devid): rows appended to it would not match its header.
fn check_manifest_header(path: &Path) -> Result<()> {
    let Ok(f) = File::open(path) else {
        return Ok(());
    };
    let mut header = String::new();
    BufReader::new(f)
        .read_line(&mut header)
        .map_err(|e| io_err(format!("cannot read {}", path.display()), e))?;
    let header = header.trim_end();
    if header.is_empty() || header == MANIFEST_HEADER.trim_end() {
        return Ok(());
    }
    Err(CliError::usage(format!(
        "{} has the columns {header}, this devid writes {}: finish that batch with the devid \
         that started it, or use another --out directory",
        path.display(),
        MANIFEST_HEADER.trim_end()
    )))
}

/// Opens an append-only line file, cutting off a torn last line left by a killed run, and
/// returns its complete lines.
fn open_lines(path: &Path, private: bool) -> Result<(File, Vec<String>)> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .map_err(|e| io_err(format!("cannot open {}", path.display()), e))?;
    let mut lines = Vec::new();
    let mut good_len: u64 = 0;
    {
        let mut rdr = BufReader::new(&f);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = rdr
                .read_until(b'\n', &mut buf)
                .map_err(|e| io_err(format!("cannot read {}", path.display()), e))?;
            if n == 0 || buf.last() != Some(&b'\n') {
                break;
            }
            good_len += n as u64;
            lines.push(String::from_utf8_lossy(&buf[..n - 1]).into_owned());
        }
    }
    f.set_len(good_len)
        .map_err(|e| io_err(format!("cannot repair {}", path.display()), e))?;
    f.seek(SeekFrom::End(0))
        .map_err(|e| io_err(format!("cannot open {}", path.display()), e))?;
    Ok((f, lines))
}

fn append_sync(f: &Mutex<File>, data: &[u8], what: &Path) -> Result<()> {
    let mut f = f
        .lock()
        .map_err(|_| CliError::failed("an earlier write failed"))?;
    f.write_all(data)
        .and_then(|_| f.sync_data())
        .map_err(|e| io_err(format!("cannot write {}", what.display()), e))
}

/// Keeps two runs from working on one output directory: an OS lock (`flock`) on
/// `.devid-batch/lock`, held for the whole run and released by the kernel when the process
/// ends, however it ends. A lock file left behind by a killed run is therefore no obstacle, and
/// two runs can never both decide that the other's lock is stale.
struct DirLock {
    file: File,
    path: PathBuf,
}

impl DirLock {
    fn take(out: &Path, state: &Path) -> Result<DirLock> {
        use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
        let path = state.join("lock");
        // A run that finishes removes the lock file and its directory while it still holds the
        // lock: a file locked after that is no longer the one at `path`, so try again.
        for _ in 0..8 {
            make_state_dir(state)?;
            let file = match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(format!("cannot open {}", path.display()), e)),
            };
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let pid = std::fs::read_to_string(&path).unwrap_or_default();
                    let pid = pid.trim();
                    let who = if pid.is_empty() {
                        String::new()
                    } else {
                        format!(" (pid {pid})")
                    };
                    return Err(CliError::new(
                        Exit::Conflict,
                        format!(
                            "another register-batch{who} is working on {}; wait for it to end (it holds {})",
                            out.display(),
                            path.display()
                        ),
                    ));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(io_err(format!("cannot lock {}", path.display()), e))
                }
            }
            let same = match (file.metadata(), std::fs::metadata(&path)) {
                (Ok(held), Ok(now)) => held.dev() == now.dev() && held.ino() == now.ino(),
                _ => false,
            };
            if !same {
                continue;
            }
            // Which process holds it, for the message a second run prints.
            let mut f = &file;
            let _ = f
                .set_len(0)
                .and_then(|_| writeln!(f, "{}", std::process::id()));
            return Ok(DirLock { file, path });
        }
        Err(CliError::failed(format!("cannot take {}", path.display())))
    }

    /// Ends a run that left nothing to resume: removes the lock file and the (then empty)
    /// state directory while still holding the lock.
    fn finish(self, state: &Path) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(state);
        drop(self.file);
    }
}

/// Creates `.devid-batch/`, readable by its owner only (the journal holds private keys).
fn make_state_dir(state: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    create_dir(state)?;
    std::fs::set_permissions(state, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| io_err(format!("cannot protect {}", state.display()), e))
}

/// What `register-batch -o json` prints.
#[derive(Debug, Serialize)]
pub struct BatchSummary {
    /// Data rows in the CSV.
    pub rows: usize,
    /// Devices newly registered by this run.
    pub registered: usize,
    /// Sent again and found already registered with the same CSR (an earlier run's answer was
    /// lost); their certificates were written.
    pub already_registered: usize,
    /// Done by an earlier run (in manifest.csv with their files); not sent.
    pub skipped: usize,
    pub failed: usize,
    pub failures: Vec<Failure>,
    pub elapsed_seconds: f64,
    /// (registered + already_registered) / elapsed.
    pub devices_per_second: f64,
    pub out: String,
}

struct Item {
    row: Row,
    csr: String,
    key: Option<String>,
}

struct Shared {
    api: Api,
    out: PathBuf,
    generate: bool,
    csr_dir: Option<PathBuf>,
    threads: usize,
    journal: HashMap<String, (String, String)>,
    journal_file: Mutex<File>,
    journal_path: PathBuf,
    manifest_file: Mutex<File>,
    manifest_path: PathBuf,
    chain_written: Mutex<bool>,
    file_writer: Mutex<()>,
    failures: Mutex<Vec<Failure>>,
    progress: Progress,
}

/// Where the rows of a run stand. A run's rows are the CSV's rows less those an earlier run
/// finished; each ends registered (new), already registered (sent again, the device existed) or
/// failed (refused by the CSV check, the key or CSR step, or the server). Updated from several
/// tasks at once.
#[derive(Debug, Default)]
struct Tally {
    total: usize,
    registered: AtomicUsize,
    already: AtomicUsize,
    failed: AtomicUsize,
}

/// A snapshot of a [`Tally`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    total: usize,
    registered: usize,
    already: usize,
    failed: usize,
}

impl Tally {
    fn new(total: usize) -> Tally {
        Tally {
            total,
            ..Tally::default()
        }
    }

    fn counts(&self) -> Counts {
        Counts {
            total: self.total,
            registered: self.registered.load(Ordering::SeqCst),
            already: self.already.load(Ordering::SeqCst),
            failed: self.failed.load(Ordering::SeqCst),
        }
    }
}

impl Counts {
    /// Rows of this run that have an outcome.
    fn done(&self) -> usize {
        self.registered + self.already + self.failed
    }

    /// `2 registered, 0 already registered, 3 failed`.
    fn outcomes(&self) -> String {
        format!(
            "{} registered, {} already registered, {} failed",
            self.registered, self.already, self.failed
        )
    }
}

/// The tally, shown as a bar on a terminal, else as a `progress:` line per change.
struct Progress {
    tally: Tally,
    view: View,
}

enum View {
    Bar(indicatif::ProgressBar),
    Lines { start: Instant },
}

impl Progress {
    fn new(tally: Tally) -> Progress {
        let view = if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(tally.total as u64);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} rows  {rate}  ETA {eta}  {msg}",
            ) {
                bar.set_style(style.with_key(
                    "rate",
                    |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{:.0}/s", s.per_sec());
                    },
                ));
            }
            View::Bar(bar)
        } else {
            View::Lines {
                start: Instant::now(),
            }
        };
        let p = Progress { tally, view };
        if let View::Bar(bar) = &p.view {
            let c = p.tally.counts();
            bar.set_position(c.done() as u64);
            bar.set_message(c.outcomes());
        }
        p
    }

    /// Rows the server answered with a device ready to ship: `created` new, `existing` found.
    fn registered(&self, created: usize, existing: usize) {
        self.tally.registered.fetch_add(created, Ordering::SeqCst);
        self.tally.already.fetch_add(existing, Ordering::SeqCst);
        self.show();
    }

    fn failed(&self, n: usize) {
        self.tally.failed.fetch_add(n, Ordering::SeqCst);
        self.show();
    }

    fn show(&self) {
        let c = self.tally.counts();
        match &self.view {
            View::Bar(bar) => {
                bar.set_position(c.done() as u64);
                bar.set_message(c.outcomes());
            }
            View::Lines { start } => {
                let secs = start.elapsed().as_secs_f64().max(1e-3);
                eprintln!("{}", progress_line(&c, secs));
            }
        }
    }

    fn note(&self, msg: String) {
        match &self.view {
            View::Bar(b) => b.println(msg),
            View::Lines { .. } => eprintln!("{msg}"),
        }
    }

    fn finish(&self) {
        if let View::Bar(b) = &self.view {
            b.finish_and_clear();
        }
    }
}

/// `progress: 5/8 rows (2 registered, 0 already registered, 3 failed; 40 rows/s)`.
fn progress_line(c: &Counts, secs: f64) -> String {
    format!(
        "progress: {}/{} rows ({}; {:.0} rows/s)",
        c.done(),
        c.total,
        c.outcomes(),
        c.done() as f64 / secs
    )
}

pub async fn run(api: &Api, out: OutputFormat, a: BatchArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let (rows, mut bad) = read_csv(&a.csv)?;
    let total_rows = rows.len() + bad.len();
    check_manifest_header(&a.out.join("manifest.csv"))?;
    create_dir(&a.out)?;
    let state = a.out.join(".devid-batch");
    let lock = DirLock::take(&a.out, &state)?;

    let journal_path = state.join("journal.jsonl");
    let (journal_file, jlines) = open_lines(&journal_path, true)?;
    let mut journal = HashMap::new();
    for l in jlines {
        if let Ok(e) = serde_json::from_str::<JournalEntry>(&l) {
            journal.insert(e.hardware_serial, (e.key, e.csr));
        }
    }
    let manifest_path = a.out.join("manifest.csv");
    let (mut manifest_file, mlines) = open_lines(&manifest_path, false)?;
    if mlines.is_empty() {
        manifest_file
            .write_all(MANIFEST_HEADER.as_bytes())
            .and_then(|_| manifest_file.sync_data())
            .map_err(|e| io_err(format!("cannot write {}", manifest_path.display()), e))?;
    }
    let mut done: HashMap<String, ManifestRow> = HashMap::new();
    if !mlines.is_empty() {
        let text = mlines.join("\n");
        let mut rdr = csv::Reader::from_reader(text.as_bytes());
        for m in rdr.deserialize::<ManifestRow>().flatten() {
            done.insert(m.hardware_serial.clone(), m);
        }
    }

    // What is left to do: rows not in the manifest, or whose files went missing.
    let mut todo = Vec::new();
    let mut skipped = 0;
    for r in rows {
        let finished = done.get(&r.serial).is_some_and(|m| {
            nonempty(&a.out.join(format!("{}.crt", m.client_id)))
                && nonempty(&a.out.join(chain_file(&m.client_id)))
                && (!a.generate_keys || nonempty(&a.out.join(format!("{}.key", m.client_id))))
        });
        if finished {
            skipped += 1;
        } else {
            todo.push(r);
        }
    }

    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    let shared = Arc::new(Shared {
        api: api.clone(),
        out: a.out.clone(),
        generate: a.generate_keys,
        csr_dir: a.csr_dir.clone(),
        threads,
        journal,
        journal_file: Mutex::new(journal_file),
        journal_path,
        manifest_file: Mutex::new(manifest_file),
        manifest_path,
        chain_written: Mutex::new(a.out.join("chain.pem").is_file()),
        file_writer: Mutex::new(()),
        failures: Mutex::new(Vec::new()),
        progress: Progress::new({
            // This run's rows: those still to do, and the CSV's bad rows (failed already).
            let tally = Tally::new(todo.len() + bad.len());
            tally.failed.store(bad.len(), Ordering::SeqCst);
            tally
        }),
    });
    if skipped > 0 {
        shared.progress.note(format!(
            "resuming: {skipped} rows were done by an earlier run"
        ));
    }

    let chunk = a.chunk as usize;
    let chunks: Vec<Vec<Row>> = todo.chunks(chunk).map(<[Row]>::to_vec).collect();
    let mut results = futures::stream::iter(chunks)
        .map(|c| {
            let s = shared.clone();
            async move { process_chunk(s, c).await }
        })
        .buffer_unordered(a.in_flight as usize);
    let mut fatal = None;
    while let Some(r) = results.next().await {
        if let Err(e) = r {
            fatal = Some(e);
            break;
        }
    }
    drop(results);
    shared.progress.finish();

    if fatal.is_none()
        && !*shared
            .chain_written
            .lock()
            .map_err(|_| CliError::failed("lock"))?
    {
        // Nothing was sent (all done earlier or all rows bad): still leave the chain there.
        if let Ok(chain) = crate::cmd::ca_chain(api).await {
            write_public(&a.out.join("chain.pem"), chain.as_bytes())?;
        }
    }

    let mut failures = std::mem::take(
        &mut *shared
            .failures
            .lock()
            .map_err(|_| CliError::failed("lock"))?,
    );
    failures.append(&mut bad);
    failures.sort_by_key(|f| f.line);
    let failures_path = a.out.join("failures.csv");
    if failures.is_empty() {
        let _ = std::fs::remove_file(&failures_path);
    } else {
        let mut w = csv::Writer::from_writer(Vec::new());
        for f in &failures {
            w.serialize(f)
                .map_err(|e| CliError::failed(format!("cannot encode failures.csv: {e}")))?;
        }
        let bytes = w
            .into_inner()
            .map_err(|e| CliError::failed(format!("cannot encode failures.csv: {e}")))?;
        write_public(&failures_path, &bytes)?;
    }

    let Counts {
        registered,
        already,
        ..
    } = shared.progress.tally.counts();
    let elapsed = started.elapsed().as_secs_f64();
    // The journal holds a second copy of every key: drop it, and the state directory with it,
    // once every row is done.
    if fatal.is_none() && failures.is_empty() {
        let _ = std::fs::remove_file(&shared.journal_path);
        lock.finish(&state);
    }
    let summary = BatchSummary {
        rows: total_rows,
        registered,
        already_registered: already,
        skipped,
        failed: failures.len(),
        failures,
        elapsed_seconds: (elapsed * 1000.0).round() / 1000.0,
        devices_per_second: ((registered + already) as f64 / elapsed.max(1e-6)).round(),
        out: a.out.display().to_string(),
    };
    for f in &summary.failures {
        eprintln!("failed: {}", f.error);
    }
    match out {
        OutputFormat::Json => {
            print_json(&summary)?;
        }
        OutputFormat::Table => {
            let mut fields = vec![
                ("rows", summary.rows.to_string()),
                ("registered", summary.registered.to_string()),
                ("already registered", summary.already_registered.to_string()),
                ("skipped (done earlier)", summary.skipped.to_string()),
                ("failed", summary.failed.to_string()),
                ("elapsed", format!("{:.2}s", summary.elapsed_seconds)),
                ("rate", format!("{} devices/s", summary.devices_per_second)),
                ("output", summary.out.clone()),
            ];
            if summary.failed > 0 {
                fields.push(("failures", failures_path.display().to_string()));
            }
            print_text(&table::fields(&fields))?;
        }
    }
    if let Some(e) = fatal {
        return Err(CliError::new(
            e.exit,
            format!("{}; stopped (re-run the same command to resume)", e.message),
        ));
    }
    if summary.failed > 0 {
        return Err(CliError::failed(format!(
            "{} of {} rows failed; see {}",
            summary.failed,
            summary.rows,
            failures_path.display()
        )));
    }
    Ok(ExitCode::SUCCESS)
}

fn nonempty(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() > 0)
}

/// Makes or loads the keys and CSRs of a chunk, on `threads` threads. Keys made here are
/// appended to the journal (and fsynced) before this returns.
fn prepare(s: &Shared, rows: Vec<Row>) -> Result<(Vec<Item>, Vec<Failure>)> {
    let n = rows.len();
    let per = n.div_ceil(s.threads).max(1);
    let prepared: Vec<std::result::Result<(Item, bool), Failure>> = std::thread::scope(|scope| {
        let handles: Vec<_> = rows
            .chunks(per)
            .map(|part| {
                scope.spawn(move || part.iter().map(|r| prepare_one(s, r)).collect::<Vec<_>>())
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join().unwrap_or_else(|_| {
                    vec![Err(Failure {
                        line: 0,
                        hardware_serial: String::new(),
                        error: "a key-making thread panicked".into(),
                    })]
                })
            })
            .collect()
    });
    let mut items = Vec::with_capacity(n);
    let mut failures = Vec::new();
    let mut journal = Vec::new();
    for p in prepared {
        match p {
            Ok((item, new)) => {
                if new {
                    let e = JournalEntry {
                        hardware_serial: item.row.serial.clone(),
                        key: item.key.clone().unwrap_or_default(),
                        csr: item.csr.clone(),
                    };
                    let line = serde_json::to_string(&e)
                        .map_err(|e| CliError::failed(format!("cannot encode the journal: {e}")))?;
                    journal.extend_from_slice(line.as_bytes());
                    journal.push(b'\n');
                }
                items.push(item);
            }
            Err(f) => failures.push(f),
        }
    }
    if !journal.is_empty() {
        append_sync(&s.journal_file, &journal, &s.journal_path)?;
    }
    Ok((items, failures))
}

/// The item for one row and whether its key is new (to be journaled).
fn prepare_one(s: &Shared, r: &Row) -> std::result::Result<(Item, bool), Failure> {
    let fail = |error: String| Failure {
        line: r.line,
        hardware_serial: r.serial.clone(),
        error: format!("line {}: {error}", r.line),
    };
    if s.generate {
        if let Some((key, csr)) = s.journal.get(&r.serial) {
            return Ok((
                Item {
                    row: r.clone(),
                    csr: csr.clone(),
                    key: Some(key.clone()),
                },
                false,
            ));
        }
        let k = keys::generate(&r.serial).map_err(fail)?;
        Ok((
            Item {
                row: r.clone(),
                csr: k.csr_pem,
                key: Some(k.key_pem),
            },
            true,
        ))
    } else {
        let dir = s.csr_dir.as_deref().unwrap_or(Path::new("."));
        let base = file_key(&r.serial);
        let candidates = [
            dir.join(format!("{base}.csr")),
            dir.join(format!("{base}.pem")),
        ];
        let path = candidates
            .iter()
            .find(|p| p.is_file())
            .ok_or_else(|| fail(format!("no CSR file {} (or .pem)", candidates[0].display())))?;
        let text = std::fs::read_to_string(path)
            .map_err(|e| fail(format!("cannot read CSR {}: {e}", path.display())))?;
        keys::check_csr(&text).map_err(|e| fail(format!("CSR {}: {e}", path.display())))?;
        Ok((
            Item {
                row: r.clone(),
                csr: text,
                key: None,
            },
            false,
        ))
    }
}

async fn process_chunk(s: Arc<Shared>, rows: Vec<Row>) -> Result<()> {
    let s2 = s.clone();
    let (items, prep_failures) = tokio::task::spawn_blocking(move || prepare(&s2, rows))
        .await
        .map_err(|e| CliError::failed(format!("key making stopped: {e}")))??;
    if !prep_failures.is_empty() {
        let n = prep_failures.len();
        s.failures
            .lock()
            .map_err(|_| CliError::failed("lock"))?
            .extend(prep_failures);
        s.progress.failed(n);
    }
    send_items(&s, items).await
}

/// Sends items as one batch; a failing item (named by the problem's `index`) is recorded and the
/// rest sent again without it; a body too large is split; transport errors and 5xx are retried.
async fn send_items(s: &Arc<Shared>, mut items: Vec<Item>) -> Result<()> {
    let mut attempt = 0u32;
    while !items.is_empty() {
        let req = BatchRequest {
            items: items
                .iter()
                .map(|i| RegisterRequest {
                    hardware_serial: i.row.serial.clone(),
                    model: i.row.model.clone(),
                    client_id: i.row.client_id.clone(),
                    metadata: i.row.metadata.clone(),
                    csr: Some(i.csr.clone()),
                    generate_key: false,
                })
                .collect(),
        };
        let sent = s
            .api
            .request(Method::POST, "/v1/devices/batch")
            .json(&req)
            .send()
            .await;
        let retry_reason = match sent {
            Ok(resp) if resp.status().is_success() => {
                let body: BatchResponse = s.api.json(resp).await?;
                let s2 = s.clone();
                return tokio::task::spawn_blocking(move || store(&s2, items, body))
                    .await
                    .map_err(|e| CliError::failed(format!("writing results stopped: {e}")))?;
            }
            Ok(resp) => {
                let status = resp.status().as_u16();
                let err = s.api.error_from_response(resp).await;
                let index = err.problem.as_ref().and_then(|p| p.index);
                match (status, index) {
                    (400..=499, Some(i)) if i < items.len() => {
                        let bad = items.remove(i);
                        s.failures
                            .lock()
                            .map_err(|_| CliError::failed("lock"))?
                            .push(Failure {
                                line: bad.row.line,
                                hardware_serial: bad.row.serial.clone(),
                                error: format!(
                                    "line {}: {}",
                                    bad.row.line,
                                    err.problem
                                        .as_deref()
                                        .map(problem_line)
                                        .unwrap_or(err.message)
                                ),
                            });
                        s.progress.failed(1);
                        continue;
                    }
                    (413, _) if items.len() > 1 => {
                        let second = items.split_off(items.len() / 2);
                        Box::pin(send_items(s, items)).await?;
                        return Box::pin(send_items(s, second)).await;
                    }
                    (500..=599, _) | (429, _) => err.message,
                    _ => return Err(name_line(err, &items)),
                }
            }
            Err(e) => s.api.transport_error(&e).message,
        };
        attempt += 1;
        if attempt > 8 {
            return Err(CliError::failed(format!(
                "{retry_reason} (gave up after {attempt} attempts)"
            )));
        }
        let wait = Duration::from_millis(250 * (1 << attempt.min(6)));
        s.progress.note(format!(
            "{retry_reason}; retrying {} devices in {:.1}s",
            items.len(),
            wait.as_secs_f64()
        ));
        tokio::time::sleep(wait).await;
    }
    Ok(())
}

/// A fatal batch error whose text names an item (`item 3: ...`) but carries no `index`: say
/// which CSV line that item came from.
fn name_line(mut err: CliError, items: &[Item]) -> CliError {
    let n = err
        .message
        .split_once("item ")
        .and_then(|(_, rest)| rest.split_once(':'))
        .and_then(|(n, _)| n.parse::<usize>().ok());
    if let Some(item) = n.and_then(|n| items.get(n)) {
        err.message = format!(
            "{} (CSV line {}, hardware_serial {:?})",
            err.message, item.row.line, item.row.serial
        );
    }
    err
}

/// Writes the certificates and keys of a registered chunk, then records it in the manifest.
fn store(s: &Shared, items: Vec<Item>, body: BatchResponse) -> Result<()> {
    if body.items.len() != items.len() {
        return Err(CliError::failed(format!(
            "the server answered {} items for {} sent",
            body.items.len(),
            items.len()
        )));
    }
    let by_serial: HashMap<&str, &Registered> = body
        .items
        .iter()
        .map(|r| (r.hardware_serial.as_str(), r))
        .collect();
    {
        let mut chain_written = s
            .chain_written
            .lock()
            .map_err(|_| CliError::failed("lock"))?;
        if !*chain_written {
            if let Some(first) = body.items.first() {
                write_public(&s.out.join("chain.pem"), first.chain.as_bytes())?;
                *chain_written = true;
            }
        }
    }
    // Match each item to its answer, then write the files. A device the server answers as
    // suspended or revoked (a repeated request finds it as it is now) is not ready to ship:
    // its row fails and nothing of it is written.
    let mut pairs = Vec::with_capacity(items.len());
    let mut refused = Vec::new();
    for item in &items {
        let reg = *by_serial.get(item.row.serial.as_str()).ok_or_else(|| {
            CliError::failed(format!(
                "the server's answer lacks hardware_serial {:?}",
                item.row.serial
            ))
        })?;
        devid_core::clientid::validate(&reg.client_id)
            .map_err(|e| CliError::failed(format!("server answered an unusable ClientID: {e}")))?;
        if let Some(why) = crate::cmd::not_ready(reg) {
            refused.push(Failure {
                line: item.row.line,
                hardware_serial: item.row.serial.clone(),
                error: format!("line {}: {why}", item.row.line),
            });
            continue;
        }
        let chain = crate::cmd::device_chain_pem(reg)?;
        pairs.push((item, reg, chain));
    }
    {
        // One chunk writes files at a time, on one thread: creating files in one directory from
        // several threads only contends on the directory's lock in the kernel (measured: 3x the
        // system time with two writers on ext4).
        let _one_writer = s
            .file_writer
            .lock()
            .map_err(|_| CliError::failed("an earlier write failed"))?;
        for (item, reg, chain) in &pairs {
            write_direct(
                &s.out.join(format!("{}.crt", reg.client_id)),
                reg.certificate.as_bytes(),
                false,
            )?;
            write_direct(
                &s.out.join(chain_file(&reg.client_id)),
                chain.as_bytes(),
                false,
            )?;
            if let Some(key) = &item.key {
                write_direct(
                    &s.out.join(format!("{}.key", reg.client_id)),
                    key.as_bytes(),
                    true,
                )?;
            }
        }
    }
    let mut manifest = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    let (mut created, mut existing) = (0, 0);
    for (item, reg, _) in &pairs {
        manifest
            .serialize(ManifestRow {
                hardware_serial: item.row.serial.clone(),
                model: reg.model.clone().unwrap_or_default(),
                client_id: reg.client_id.clone(),
                serial: reg.serial.clone(),
                fingerprint_sha256: reg.fingerprint_sha256.clone(),
                not_after: reg.not_after.clone(),
                chain_file: chain_file(&reg.client_id),
            })
            .map_err(|e| CliError::failed(format!("cannot encode manifest.csv: {e}")))?;
        if reg.created {
            created += 1;
        } else {
            existing += 1;
        }
    }
    let bytes = manifest
        .into_inner()
        .map_err(|e| CliError::failed(format!("cannot encode manifest.csv: {e}")))?;
    append_sync(&s.manifest_file, &bytes, &s.manifest_path)?;
    let n_refused = refused.len();
    if n_refused > 0 {
        s.failures
            .lock()
            .map_err(|_| CliError::failed("lock"))?
            .extend(refused);
    }
    s.progress.registered(created, existing);
    if n_refused > 0 {
        s.progress.failed(n_refused);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_keys_are_safe_names() {
        assert_eq!(file_key("SN-0001_a.b"), "SN-0001_a.b");
        assert_eq!(file_key("../etc"), "%2E.%2Fetc");
        assert_eq!(file_key("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn csv_rows_are_checked_and_reported_by_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("d.csv");
        std::fs::write(
            &p,
            "hardware_serial,model,client_id,batch\n\
             SN1,thermo,,B7\n\
             SN2,thermo\n\
             SN1,thermo,,B8\n\
             SN3,thermo,bad/id,B7\n\
             ,thermo,,B7\n\
             SN4,,MYID1,\n",
        )
        .expect("write");
        let (rows, bad) = read_csv(&p).expect("read");
        let serials: Vec<&str> = rows.iter().map(|r| r.serial.as_str()).collect();
        assert_eq!(serials, ["SN1", "SN4"]);
        assert_eq!(rows[0].metadata, Some(serde_json::json!({"batch": "B7"})));
        assert_eq!(rows[1].client_id.as_deref(), Some("MYID1"));
        assert_eq!(rows[1].model, None);
        assert_eq!(rows[1].metadata, None);
        let lines: Vec<u64> = bad.iter().map(|f| f.line).collect();
        assert_eq!(lines, [3, 4, 5, 6]);
        assert!(bad[0].error.contains("has 2 columns"), "{}", bad[0].error);
        assert!(
            bad[1].error.contains("duplicates line 2"),
            "{}",
            bad[1].error
        );
        assert!(bad[2].error.contains("client_id"), "{}", bad[2].error);
        assert!(bad[3].error.contains("empty"), "{}", bad[3].error);
    }

    #[test]
    fn csv_without_model_column_is_a_usage_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("d.csv");
        std::fs::write(&p, "hardware_serial,client_id\nSN1,X\n").expect("write");
        let e = read_csv(&p).expect_err("must fail");
        assert_eq!(e.exit, Exit::Usage);
        assert!(e.message.contains("model"));
    }

    #[test]
    fn progress_counts_this_runs_rows_by_outcome() {
        // 8 rows: 2 done by an earlier run (not this run's), 3 refused by the CSV check, 1
        // refused by the server, 2 registered: this run has 6 rows.
        let tally = Tally::new(8 - 2);
        tally.failed.store(3, Ordering::SeqCst);
        let p = Progress {
            tally,
            view: View::Lines {
                start: Instant::now(),
            },
        };
        assert_eq!(p.tally.counts().done(), 3);
        p.failed(1);
        p.registered(2, 0);
        let c = p.tally.counts();
        assert_eq!(
            c,
            Counts {
                total: 6,
                registered: 2,
                already: 0,
                failed: 4
            }
        );
        assert_eq!(
            progress_line(&c, 2.0),
            "progress: 6/6 rows (2 registered, 0 already registered, 4 failed; 3 rows/s)"
        );
        // A chunk found already registered, and one with a refused device.
        let p = Progress::new(Tally::new(5));
        p.registered(0, 3);
        p.failed(1);
        p.registered(1, 0);
        let c = p.tally.counts();
        assert_eq!((c.done(), c.total, c.already), (5, 5, 3));
        assert_eq!(c.outcomes(), "1 registered, 3 already registered, 1 failed");
    }

    #[test]
    fn a_second_lock_on_one_directory_is_refused_until_the_first_ends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join(".devid-batch");
        // A lock file left by a killed run, naming a process that is alive (a PID reused).
        std::fs::create_dir_all(&state).expect("mkdir");
        std::fs::write(state.join("lock"), "1\n").expect("write");
        let first = DirLock::take(dir.path(), &state).expect("a stale lock file is no obstacle");
        let e = DirLock::take(dir.path(), &state)
            .err()
            .expect("a second lock is refused");
        assert_eq!(e.exit, Exit::Conflict);
        assert!(
            e.message.contains(&format!(
                "another register-batch (pid {}) is working on",
                std::process::id()
            )),
            "{}",
            e.message
        );
        // Finishing removes the state directory; the next run starts afresh.
        first.finish(&state);
        assert!(!state.exists());
        let again = DirLock::take(dir.path(), &state).expect("free again");
        drop(again);
        // Dropped without finishing (a run with rows left): free again, directory kept.
        assert!(state.is_dir());
        DirLock::take(dir.path(), &state).expect("free after drop");
    }

    #[test]
    fn torn_last_line_is_cut_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("j");
        std::fs::write(&p, "one\ntwo\nthr").expect("write");
        let (mut f, lines) = open_lines(&p, true).expect("open");
        assert_eq!(lines, ["one", "two"]);
        f.write_all(b"three\n").expect("append");
        drop(f);
        assert_eq!(
            std::fs::read_to_string(&p).expect("read"),
            "one\ntwo\nthree\n"
        );
    }
}
