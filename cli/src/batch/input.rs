//! The CSV input: every row checked before anything is sent; a bad row becomes a [`Failure`]
//! named by its line, never a request.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use serde::Serialize;

use crate::error::{io_err, CliError, Result};

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

impl Failure {
    /// The failure of the row at CSV `line`; its error text starts with `line N: `.
    pub fn new(line: u64, hardware_serial: &str, error: impl std::fmt::Display) -> Failure {
        Failure {
            line,
            hardware_serial: hardware_serial.to_string(),
            error: format!("line {line}: {error}"),
        }
    }
}

impl Row {
    /// This row's failure.
    pub fn failure(&self, error: impl std::fmt::Display) -> Failure {
        Failure::new(self.line, &self.serial, error)
    }
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
    let header_err = |what: String| CliError::usage(format!("CSV {}: {what}", path.display()));
    let headers: Vec<String> = rdr
        .headers()
        .map_err(|e| header_err(e.to_string()))?
        .iter()
        .map(str::to_string)
        .collect();
    let columns = Columns::find(&headers).map_err(header_err)?;

    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let mut first_line: HashMap<String, u64> = HashMap::new();
    for rec in rdr.records() {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                failures.push(Failure::new(line, "", format!("unreadable: {e}")));
                continue;
            }
        };
        match columns.row(&headers, &rec, &first_line) {
            Ok(row) => {
                first_line.insert(row.serial.clone(), row.line);
                rows.push(row);
            }
            Err(f) => failures.push(f),
        }
    }
    Ok((rows, failures))
}

/// Where the known columns are in the header.
struct Columns {
    serial: usize,
    model: usize,
    client_id: Option<usize>,
}

impl Columns {
    /// Checks the header (no empty or repeated names, hardware_serial and model present).
    fn find(headers: &[String]) -> std::result::Result<Columns, String> {
        let mut seen = HashSet::new();
        for h in headers {
            if h.is_empty() {
                return Err("the header has an empty column name".into());
            }
            if !seen.insert(h.as_str()) {
                return Err(format!("column {h:?} appears twice in the header"));
            }
        }
        let col = |name: &str| headers.iter().position(|h| h == name);
        let required = |name: &str| {
            col(name).ok_or_else(|| {
                format!(
                    "the header lacks the {name} column (expected \
                     hardware_serial,model[,client_id][,metadata…])"
                )
            })
        };
        Ok(Columns {
            serial: required("hardware_serial")?,
            model: required("model")?,
            client_id: col("client_id"),
        })
    }

    /// One record as a row, or why it is refused. `first_line` holds the serials of the rows
    /// before it.
    fn row(
        &self,
        headers: &[String],
        rec: &csv::StringRecord,
        first_line: &HashMap<String, u64>,
    ) -> std::result::Result<Row, Failure> {
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        let serial = rec.get(self.serial).unwrap_or("").to_string();
        let fail = |error: String| Failure::new(line, &serial, error);
        if rec.len() != headers.len() {
            return Err(fail(format!(
                "has {} columns, the header has {} ({})",
                rec.len(),
                headers.len(),
                headers.join(",")
            )));
        }
        if let Err(e) = devid_core::HardwareSerial::parse(&serial) {
            return Err(fail(format!("hardware_serial {e}")));
        }
        if let Some(first) = first_line.get(&serial) {
            return Err(fail(format!(
                "hardware_serial {serial:?} duplicates line {first}"
            )));
        }
        let client_id = self
            .client_id
            .and_then(|c| rec.get(c))
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        if let Some(id) = &client_id {
            if let Err(e) = devid_core::clientid::validate(id) {
                return Err(fail(format!("client_id {id:?}: {e}")));
            }
        }
        let model = rec
            .get(self.model)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        if let Some(Err(e)) = model.as_deref().map(devid_core::ModelName::parse) {
            return Err(fail(e.to_string()));
        }
        let mut meta = serde_json::Map::new();
        for (i, h) in headers.iter().enumerate() {
            if i == self.serial || i == self.model || Some(i) == self.client_id {
                continue;
            }
            if let Some(v) = rec.get(i).filter(|v| !v.is_empty()) {
                meta.insert(h.clone(), serde_json::Value::String(v.to_string()));
            }
        }
        Ok(Row {
            line,
            serial,
            model,
            client_id,
            metadata: (!meta.is_empty()).then_some(serde_json::Value::Object(meta)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Exit;

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
}
