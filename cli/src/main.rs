//! `devid`: the manufacturing line's and the operator's tool. It talks to devid-server's REST API
//! only. This file parses the command line, resolves settings and maps errors to exit codes; the
//! commands live in `cmd/`.

mod batch;
mod cli;
mod client;
mod cmd;
mod error;
mod keys;
mod settings;
mod table;

use std::io::Write as _;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Command};
use crate::error::{CliError, Exit};

fn main() -> ExitCode {
    // Another part of the process may have installed it already; either way ring is the provider.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        // The reader of stdout went away (`devid ... | head`): end quietly, like a command
        // that SIGPIPE ended, with its conventional status.
        Err(e) if e.exit == Exit::Pipe => ExitCode::from(e.exit as u8),
        Err(e) => {
            let _ = std::io::stdout().flush();
            eprintln!("error: {}", e.message);
            ExitCode::from(e.exit as u8)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, CliError> {
    if let Command::Completions { shell } = cli.command {
        let mut cmd = Cli::command();
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut cmd, "devid", &mut script);
        // `devid completions bash | head` is a reader that has seen enough, not a failure.
        return match cmd::emit(&script) {
            Err(e) if e.exit == Exit::Pipe => Ok(ExitCode::SUCCESS),
            Err(e) => Err(e),
            Ok(()) => Ok(ExitCode::SUCCESS),
        };
    }
    let cwd = std::env::current_dir()
        .map_err(|e| CliError::failed(format!("cannot read the working directory: {e}")))?;
    let settings = settings::resolve(&cli.global, &|k| std::env::var(k).ok(), &cwd)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failed(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(cmd::run(cli.command, settings))
}
