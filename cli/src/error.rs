//! One error type for the whole command, carrying the exit code it maps to.
//!
//! Exit codes (documented in `devid --help`):
//! 0 success, 1 operation failed, 2 usage, 3 authentication or permission, 4 not found,
//! 5 conflict; 141 (128 + SIGPIPE, as a shell reports a command killed by SIGPIPE) when the
//! reader of standard output went away, as in `devid device list | head -1`.

use std::fmt;

use devid_core::api::Problem;

/// The documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Failed = 1,
    Usage = 2,
    Auth = 3,
    NotFound = 4,
    Conflict = 5,
    /// Standard output was closed by its reader: end quietly, as a command killed by SIGPIPE.
    Pipe = 141,
}

impl Exit {
    /// The exit code an HTTP error status maps to.
    pub fn for_status(status: u16) -> Exit {
        match status {
            401 | 403 => Exit::Auth,
            404 => Exit::NotFound,
            409 => Exit::Conflict,
            _ => Exit::Failed,
        }
    }
}

/// An error to print as one line on stderr, with its exit code.
#[derive(Debug, Clone)]
pub struct CliError {
    pub exit: Exit,
    pub message: String,
    /// The server's problem document, when the error came from one.
    pub problem: Option<Box<Problem>>,
}

impl CliError {
    pub fn new(exit: Exit, message: impl Into<String>) -> CliError {
        CliError {
            exit,
            message: message.into(),
            problem: None,
        }
    }

    pub fn failed(message: impl Into<String>) -> CliError {
        CliError::new(Exit::Failed, message)
    }

    pub fn usage(message: impl Into<String>) -> CliError {
        CliError::new(Exit::Usage, message)
    }

    /// Standard output is gone (its reader closed the pipe): nothing to say, nowhere to say it.
    pub fn pipe() -> CliError {
        CliError::new(Exit::Pipe, "standard output was closed")
    }

    /// Renders a problem document as one line: `<title>: <detail> (HTTP <status>)`.
    pub fn from_problem(problem: Problem) -> CliError {
        CliError {
            exit: Exit::for_status(problem.status),
            message: problem_line(&problem),
            problem: Some(Box::new(problem)),
        }
    }

    pub fn status(&self) -> Option<u16> {
        self.problem.as_ref().map(|p| p.status)
    }
}

/// One line for a problem document.
pub fn problem_line(p: &Problem) -> String {
    let text = match p.detail.as_deref() {
        Some(detail) if !detail.is_empty() && detail != p.title => {
            format!("{}: {}", p.title, detail)
        }
        _ => p.title.clone(),
    };
    // Keep it to one line whatever the server put in.
    let text = text.replace(['\n', '\r'], " ");
    format!("{text} (HTTP {})", p.status)
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

pub type Result<T, E = CliError> = std::result::Result<T, E>;

/// Adds context to I/O errors: `cannot write out/x.crt: Permission denied`.
pub fn io_err(what: impl fmt::Display, e: std::io::Error) -> CliError {
    CliError::failed(format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_renders_as_one_line_with_status() {
        let p = Problem {
            kind: "urn:devid:problem:not-found".into(),
            title: "Not Found".into(),
            status: 404,
            detail: Some("no device\nwith ClientID X".into()),
            index: None,
        };
        let e = CliError::from_problem(p);
        assert_eq!(e.exit, Exit::NotFound);
        assert_eq!(e.message, "Not Found: no device with ClientID X (HTTP 404)");
    }

    #[test]
    fn statuses_map_to_documented_exit_codes() {
        assert_eq!(Exit::for_status(401), Exit::Auth);
        assert_eq!(Exit::for_status(403), Exit::Auth);
        assert_eq!(Exit::for_status(404), Exit::NotFound);
        assert_eq!(Exit::for_status(409), Exit::Conflict);
        assert_eq!(Exit::for_status(422), Exit::Failed);
        assert_eq!(Exit::for_status(500), Exit::Failed);
    }
}
