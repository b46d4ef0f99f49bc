//! Append-only line files (the journal, the manifest) that survive a killed run: a torn last
//! line is cut off when the file is opened, and every append is synced before it counts.

use std::fs::File;
use std::io::{BufRead as _, BufReader, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{io_err, CliError, Result};

/// An append-only line file, shared by the run's tasks.
pub struct LineFile {
    file: Mutex<File>,
    path: PathBuf,
}

impl LineFile {
    /// Opens (or creates) the file, cutting off a torn last line left by a killed run, and
    /// returns it with its complete lines. `private`: mode 0600 instead of 0644.
    pub fn open(path: &Path, private: bool) -> Result<(LineFile, Vec<String>)> {
        let (file, lines) = open_lines(path, private)?;
        let file = LineFile {
            file: Mutex::new(file),
            path: path.to_path_buf(),
        };
        Ok((file, lines))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `data` (whole lines) and syncs it to disk.
    pub fn append_sync(&self, data: &[u8]) -> Result<()> {
        let mut f = self
            .file
            .lock()
            .map_err(|_| CliError::failed("an earlier write failed"))?;
        f.write_all(data)
            .and_then(|_| f.sync_data())
            .map_err(|e| io_err(format!("cannot write {}", self.path.display()), e))
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_last_line_is_cut_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("j");
        std::fs::write(&p, "one\ntwo\nthr").expect("write");
        let (f, lines) = LineFile::open(&p, true).expect("open");
        assert_eq!(lines, ["one", "two"]);
        f.append_sync(b"three\n").expect("append");
        drop(f);
        assert_eq!(
            std::fs::read_to_string(&p).expect("read"),
            "one\ntwo\nthree\n"
        );
    }
}
