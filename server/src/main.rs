//! `devid-server`: thin binary around the devid_server library.

use std::process::ExitCode;

use clap::Parser;
use devid_server::config::{Cli, Command};
use devid_server::serve;

fn main() -> ExitCode {
    let cli = Cli::parse();
    serve::init_tracing();
    let settings = match cli.opts.resolve() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("devid-server: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("devid-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command.unwrap_or(Command::Run) {
            Command::Run => serve::run(settings).await,
            Command::Init => serve::init_command(&settings).await,
            Command::ImportCa {
                cert,
                key,
                token_key,
                chain,
            } => {
                let key = match (key, token_key) {
                    (_, Some(label_or_id)) => serve::ImportKey::Token(label_or_id),
                    (Some(path), None) => serve::ImportKey::File(path),
                    // clap requires one of them.
                    (None, None) => return Err("give --key or --token-key".into()),
                };
                serve::import_ca(&settings, &cert, key, &chain).await
            }
            Command::ChangePassphrase { remove } => serve::change_passphrase(&settings, remove),
            Command::Ca { command } => devid_server::ca_command::run(&settings, command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("devid-server: {e}");
            ExitCode::FAILURE
        }
    }
}
