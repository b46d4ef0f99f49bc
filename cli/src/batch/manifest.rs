//! `manifest.csv`: one line per device this output directory holds, appended and synced after
//! the device's files are written. A serial is done when it is here and its files exist.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::lines::LineFile;
use crate::error::{io_err, CliError, Result};

pub const MANIFEST_FILE: &str = "manifest.csv";

const MANIFEST_HEADER: &str =
    "hardware_serial,model,client_id,serial,fingerprint_sha256,not_after,chain_file\n";

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

/// The name of a device's `<ClientID>.chain.pem`.
pub fn chain_file(client_id: &str) -> String {
    format!("{client_id}.chain.pem")
}

pub struct Manifest {
    file: LineFile,
}

impl Manifest {
    /// Refuses, before anything is written, an output directory whose manifest has other
    /// columns (written by another version of devid): rows appended to it would not match its
    /// header.
    pub fn check_header(out: &Path) -> Result<()> {
        let path = out.join(MANIFEST_FILE);
        let Ok(f) = File::open(&path) else {
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

    /// Opens (or starts) the manifest and returns it with the rows earlier runs recorded, by
    /// hardware serial.
    pub fn open(out: &Path) -> Result<(Manifest, HashMap<String, ManifestRow>)> {
        let (file, lines) = LineFile::open(&out.join(MANIFEST_FILE), false)?;
        let mut done = HashMap::new();
        if lines.is_empty() {
            file.append_sync(MANIFEST_HEADER.as_bytes())?;
        } else {
            let text = lines.join("\n");
            let mut rdr = csv::Reader::from_reader(text.as_bytes());
            for m in rdr.deserialize::<ManifestRow>().flatten() {
                done.insert(m.hardware_serial.clone(), m);
            }
        }
        Ok((Manifest { file }, done))
    }

    /// Appends rows and syncs them to disk.
    pub fn append(&self, rows: &[ManifestRow]) -> Result<()> {
        self.file
            .append_sync(&super::csv_bytes(rows, false, MANIFEST_FILE)?)
    }
}
