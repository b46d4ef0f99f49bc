//! The journal (`.devid-batch/journal.jsonl`, mode 0600): every key made here, with the CSR it
//! signed, appended and synced before that CSR is sent. A re-run sends the very same CSR again,
//! which the server answers with the device it already registered, so no certificate is ever
//! issued for a key that was lost.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::lines::LineFile;
use crate::error::{CliError, Result};

/// One journal line: a key made here and the CSR it signed (both PEM).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JournalEntry {
    pub hardware_serial: String,
    pub key: String,
    pub csr: String,
}

pub struct Journal {
    file: LineFile,
    /// What earlier runs recorded, by hardware serial.
    earlier: HashMap<String, JournalEntry>,
}

impl Journal {
    /// Opens the journal in the state directory and reads what earlier runs recorded (lines
    /// that do not parse are ignored).
    pub fn open(state: &Path) -> Result<Journal> {
        let (file, lines) = LineFile::open(&state.join("journal.jsonl"), true)?;
        let mut earlier = HashMap::new();
        for l in lines {
            if let Ok(e) = serde_json::from_str::<JournalEntry>(&l) {
                earlier.insert(e.hardware_serial.clone(), e);
            }
        }
        Ok(Journal { file, earlier })
    }

    /// The key and CSR an earlier run made for this serial.
    pub fn earlier(&self, hardware_serial: &str) -> Option<&JournalEntry> {
        self.earlier.get(hardware_serial)
    }

    /// Records new keys, one line each, and syncs them to disk.
    pub fn record(&self, entries: &[JournalEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::new();
        for e in entries {
            let line = serde_json::to_string(e)
                .map_err(|e| CliError::failed(format!("cannot encode the journal: {e}")))?;
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
        }
        self.file.append_sync(&bytes)
    }

    /// Deletes the journal: it holds a second copy of every key, needed no longer once every
    /// row is done.
    pub fn remove(&self) {
        let _ = std::fs::remove_file(self.file.path());
    }
}
