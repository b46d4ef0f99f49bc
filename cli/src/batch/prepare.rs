//! The first step of a chunk: each row's CSR, made here with a new key (on every core) or read
//! from `--csr-dir`. New keys are in the journal on disk before this step ends.

use std::path::Path;

use super::input::{file_key, Failure, Row};
use super::journal::JournalEntry;
use super::Shared;
use crate::error::Result;
use crate::keys;

/// A row ready to send: its CSR (none for a sensor), and its key when the key was made here.
pub struct Item {
    pub row: Row,
    pub csr: Option<String>,
    pub key: Option<String>,
}

/// Makes or loads the keys and CSRs of a chunk, on `threads` threads. Keys made here are
/// appended to the journal (and fsynced) before this returns.
pub fn prepare(s: &Shared, rows: Vec<Row>) -> Result<(Vec<Item>, Vec<Failure>)> {
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
    let mut new_keys = Vec::new();
    for p in prepared {
        match p {
            Ok((item, new)) => {
                if new {
                    new_keys.push(JournalEntry {
                        hardware_serial: item.row.serial.clone(),
                        key: item.key.clone().unwrap_or_default(),
                        csr: item.csr.clone().unwrap_or_default(),
                    });
                }
                items.push(item);
            }
            Err(f) => failures.push(f),
        }
    }
    s.journal.record(&new_keys)?;
    Ok((items, failures))
}

/// The item for one row and whether its key is new (to be journaled).
fn prepare_one(s: &Shared, r: &Row) -> std::result::Result<(Item, bool), Failure> {
    let item = |csr: String, key: Option<String>| Item {
        row: r.clone(),
        csr: Some(csr),
        key,
    };
    if s.sensors {
        let sensor = Item {
            row: r.clone(),
            csr: None,
            key: None,
        };
        return Ok((sensor, false));
    }
    if s.generate {
        if let Some(e) = s.journal.earlier(&r.serial) {
            return Ok((item(e.csr.clone(), Some(e.key.clone())), false));
        }
        let k = keys::generate(&r.serial).map_err(|e| r.failure(e))?;
        Ok((item(k.csr_pem, Some(k.key_pem)), true))
    } else {
        let dir = s.csr_dir.as_deref().unwrap_or(Path::new("."));
        let base = file_key(&r.serial);
        let candidates = [
            dir.join(format!("{base}.csr")),
            dir.join(format!("{base}.pem")),
        ];
        let path = candidates.iter().find(|p| p.is_file()).ok_or_else(|| {
            r.failure(format!("no CSR file {} (or .pem)", candidates[0].display()))
        })?;
        let text = std::fs::read_to_string(path)
            .map_err(|e| r.failure(format!("cannot read CSR {}: {e}", path.display())))?;
        keys::check_csr(&text).map_err(|e| r.failure(format!("CSR {}: {e}", path.display())))?;
        Ok((item(text, None), false))
    }
}
