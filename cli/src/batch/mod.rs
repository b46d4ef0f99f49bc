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
//!
//! The modules: `input` (the CSV), `lock` (one run per directory), `lines` (append-only files
//! that survive a killed run) under `journal` and `manifest`, then a chunk's three steps
//! `prepare` (keys and CSRs), `send` (the request and its retries) and `output` (files and
//! manifest lines), and `progress`.

mod input;
mod journal;
mod lines;
mod lock;
mod manifest;
mod output;
mod prepare;
mod progress;
mod send;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use futures::StreamExt as _;
use serde::Serialize;

use crate::cli::{BatchArgs, OutputFormat};
use crate::client::Api;
use crate::cmd::{create_dir, print_json, print_text, write_public};
use crate::error::{CliError, Result};
use crate::table;

pub use input::file_key;
pub use manifest::chain_file;

/// The name of a sensor's key file, `<ClientID>.sensor.key`: its key K as base64url without
/// padding and a newline.
pub fn sensor_key_file(client_id: &str) -> String {
    format!("{client_id}.sensor.key")
}

use input::{read_csv, Failure, Row};
use journal::Journal;
use lock::DirLock;
use manifest::{Manifest, ManifestRow};
use progress::{Counts, Progress};

/// The CA chain beside the devices' files.
const CHAIN_FILE: &str = "chain.pem";
/// The rows that failed, when any did.
const FAILURES_FILE: &str = "failures.csv";
/// The state a re-run resumes from (lock and journal); removed once every row is done.
const STATE_DIR: &str = ".devid-batch";

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

/// What the chunks of a run share.
struct Shared {
    api: Api,
    out: PathBuf,
    generate: bool,
    /// Every row is a sensor (no CSR; the server makes its key).
    sensors: bool,
    csr_dir: Option<PathBuf>,
    threads: usize,
    journal: Journal,
    manifest: Manifest,
    chain_written: Mutex<bool>,
    file_writer: Mutex<()>,
    failures: Mutex<Vec<Failure>>,
    progress: Progress,
}

impl Shared {
    /// Records rows that failed and counts them.
    fn fail(&self, failures: Vec<Failure>) -> Result<()> {
        if failures.is_empty() {
            return Ok(());
        }
        let n = failures.len();
        locked(&self.failures)?.extend(failures);
        self.progress.failed(n);
        Ok(())
    }
}

pub async fn run(api: &Api, out: OutputFormat, a: BatchArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let (rows, bad) = read_csv(&a.csv)?;
    let total_rows = rows.len() + bad.len();
    Manifest::check_header(&a.out)?;
    create_dir(&a.out)?;
    let state = a.out.join(STATE_DIR);
    let lock = DirLock::take(&a.out, &state)?;
    let journal = Journal::open(&state)?;
    let (manifest, done) = Manifest::open(&a.out)?;
    let (todo, skipped) = still_to_do(rows, &done, &a.out, a.generate_keys, a.sensors);

    let shared = Arc::new(Shared {
        api: api.clone(),
        out: a.out.clone(),
        generate: a.generate_keys,
        sensors: a.sensors,
        csr_dir: a.csr_dir.clone(),
        threads: a
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
            .max(1),
        journal,
        manifest,
        chain_written: Mutex::new(a.out.join(CHAIN_FILE).is_file()),
        file_writer: Mutex::new(()),
        failures: Mutex::new(Vec::new()),
        // This run's rows: those still to do, and the CSV's bad rows (failed already).
        progress: Progress::for_run(todo.len(), bad.len()),
    });
    if skipped > 0 {
        shared.progress.note(format!(
            "resuming: {skipped} rows were done by an earlier run"
        ));
    }
    let fatal = send_chunks(&shared, todo, a.chunk as usize, a.in_flight as usize).await;
    shared.progress.finish();
    if fatal.is_none() {
        write_chain_if_missing(api, &shared).await?;
    }

    let failures = all_failures(&shared, bad)?;
    let failures_path = a.out.join(FAILURES_FILE);
    write_failures(&failures_path, &failures)?;
    let counts = shared.progress.counts();
    let elapsed = started.elapsed().as_secs_f64();
    // The journal holds a second copy of every key: drop it, and the state directory with it,
    // once every row is done.
    if fatal.is_none() && failures.is_empty() {
        shared.journal.remove();
        lock.finish(&state);
    }
    let summary = BatchSummary::new(total_rows, counts, skipped, failures, elapsed, &a.out);
    summary.print(out, &failures_path)?;
    outcome(&summary, fatal, &failures_path)
}

/// The rows not yet done: not in the manifest, or in it with a file missing. Returns them and
/// how many were done.
fn still_to_do(
    rows: Vec<Row>,
    done: &HashMap<String, ManifestRow>,
    out: &Path,
    with_keys: bool,
    sensors: bool,
) -> (Vec<Row>, usize) {
    let nonempty =
        |name: String| std::fs::metadata(out.join(name)).is_ok_and(|m| m.is_file() && m.len() > 0);
    let finished = |r: &Row| {
        done.get(&r.serial).is_some_and(|m| {
            if sensors {
                return nonempty(sensor_key_file(&m.client_id));
            }
            nonempty(format!("{}.crt", m.client_id))
                && nonempty(chain_file(&m.client_id))
                && (!with_keys || nonempty(format!("{}.key", m.client_id)))
        })
    };
    let (finished, todo): (Vec<Row>, Vec<Row>) = rows.into_iter().partition(finished);
    (todo, finished.len())
}

/// Runs the chunks, `in_flight` at a time, until all are done or one fails for good; returns
/// that failure.
async fn send_chunks(
    shared: &Arc<Shared>,
    todo: Vec<Row>,
    chunk: usize,
    in_flight: usize,
) -> Option<CliError> {
    let chunks: Vec<Vec<Row>> = todo.chunks(chunk).map(<[Row]>::to_vec).collect();
    let mut results = futures::stream::iter(chunks)
        .map(|c| process_chunk(shared.clone(), c))
        .buffer_unordered(in_flight);
    while let Some(r) = results.next().await {
        if let Err(e) = r {
            return Some(e);
        }
    }
    None
}

/// One chunk: its keys and CSRs (on blocking threads), then the request, then the files.
async fn process_chunk(s: Arc<Shared>, rows: Vec<Row>) -> Result<()> {
    let s2 = s.clone();
    let (items, prep_failures) = tokio::task::spawn_blocking(move || prepare::prepare(&s2, rows))
        .await
        .map_err(|e| CliError::failed(format!("key making stopped: {e}")))??;
    s.fail(prep_failures)?;
    send::send_items(&s, items).await
}

/// Nothing was sent (all done earlier or all rows bad): still leave the chain there.
async fn write_chain_if_missing(api: &Api, s: &Shared) -> Result<()> {
    if *locked(&s.chain_written)? {
        return Ok(());
    }
    if let Ok(chain) = crate::cmd::ca_chain(api).await {
        write_public(&s.out.join(CHAIN_FILE), chain.as_bytes())?;
    }
    Ok(())
}

/// Every failure of the run, the CSV's and the later steps', in CSV line order.
fn all_failures(s: &Shared, mut bad: Vec<Failure>) -> Result<Vec<Failure>> {
    let mut failures = std::mem::take(&mut *locked(&s.failures)?);
    failures.append(&mut bad);
    failures.sort_by_key(|f| f.line);
    Ok(failures)
}

/// `failures.csv` lists the failures; without any, an earlier run's is removed.
fn write_failures(path: &Path, failures: &[Failure]) -> Result<()> {
    if failures.is_empty() {
        let _ = std::fs::remove_file(path);
        return Ok(());
    }
    write_public(path, &csv_bytes(failures, true, FAILURES_FILE)?)
}

impl BatchSummary {
    fn new(
        rows: usize,
        counts: Counts,
        skipped: usize,
        failures: Vec<Failure>,
        elapsed: f64,
        out: &Path,
    ) -> BatchSummary {
        let Counts {
            registered,
            already,
            ..
        } = counts;
        BatchSummary {
            rows,
            registered,
            already_registered: already,
            skipped,
            failed: failures.len(),
            failures,
            elapsed_seconds: (elapsed * 1000.0).round() / 1000.0,
            devices_per_second: ((registered + already) as f64 / elapsed.max(1e-6)).round(),
            out: out.display().to_string(),
        }
    }

    /// Each failure on stderr, then the summary on stdout.
    fn print(&self, out: OutputFormat, failures_path: &Path) -> Result<()> {
        for f in &self.failures {
            eprintln!("failed: {}", f.error);
        }
        match out {
            OutputFormat::Json => print_json(self)?,
            OutputFormat::Table => {
                let mut fields = vec![
                    ("rows", self.rows.to_string()),
                    ("registered", self.registered.to_string()),
                    ("already registered", self.already_registered.to_string()),
                    ("skipped (done earlier)", self.skipped.to_string()),
                    ("failed", self.failed.to_string()),
                    ("elapsed", format!("{:.2}s", self.elapsed_seconds)),
                    ("rate", format!("{} devices/s", self.devices_per_second)),
                    ("output", self.out.clone()),
                ];
                if self.failed > 0 {
                    fields.push(("failures", failures_path.display().to_string()));
                }
                print_text(&table::fields(&fields))?
            }
        };
        Ok(())
    }
}

/// The exit: a run stopped by an error says how to resume; a run with failed rows fails.
fn outcome(
    summary: &BatchSummary,
    fatal: Option<CliError>,
    failures_path: &Path,
) -> Result<ExitCode> {
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

/// Locks a mutex of the run's shared state.
fn locked<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>> {
    m.lock().map_err(|_| CliError::failed("lock"))
}

/// Rows as CSV text (`header`: with a header line); `name` names the file in errors.
fn csv_bytes<T: Serialize>(rows: &[T], header: bool, name: &str) -> Result<Vec<u8>> {
    let encode = |e: &dyn std::fmt::Display| CliError::failed(format!("cannot encode {name}: {e}"));
    let mut w = csv::WriterBuilder::new()
        .has_headers(header)
        .from_writer(Vec::new());
    for r in rows {
        w.serialize(r).map_err(|e| encode(&e))?;
    }
    w.into_inner().map_err(|e| encode(&e))
}
