//! One run per output directory.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::cmd::create_dir;
use crate::error::{io_err, CliError, Exit, Result};

/// Keeps two runs from working on one output directory: an OS lock (`flock`) on
/// `.devid-batch/lock`, held for the whole run and released by the kernel when the process
/// ends, however it ends. A lock file left behind by a killed run is therefore no obstacle, and
/// two runs can never both decide that the other's lock is stale.
pub struct DirLock {
    file: File,
    path: PathBuf,
}

impl DirLock {
    pub fn take(out: &Path, state: &Path) -> Result<DirLock> {
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
                Err(std::fs::TryLockError::WouldBlock) => return Err(held_by_another(out, &path)),
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
    pub fn finish(self, state: &Path) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(state);
        drop(self.file);
    }
}

/// The conflict a second run reports, naming the process that holds the lock when it can.
fn held_by_another(out: &Path, path: &Path) -> CliError {
    let pid = std::fs::read_to_string(path).unwrap_or_default();
    let pid = pid.trim();
    let who = if pid.is_empty() {
        String::new()
    } else {
        format!(" (pid {pid})")
    };
    CliError::new(
        Exit::Conflict,
        format!(
            "another register-batch{who} is working on {}; wait for it to end (it holds {})",
            out.display(),
            path.display()
        ),
    )
}

/// Creates `.devid-batch/`, readable by its owner only (the journal holds private keys).
fn make_state_dir(state: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    create_dir(state)?;
    std::fs::set_permissions(state, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| io_err(format!("cannot protect {}", state.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
