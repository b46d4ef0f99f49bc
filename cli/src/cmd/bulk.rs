//! `devid device revoke|suspend|resume` with a filter instead of a ClientID: a dry run, a
//! confirmation ("revoke N devices? [y/N]" on a terminal, `--yes` otherwise), then the one call.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::process::ExitCode;

use devid_core::api::{BulkRequest, BulkResult, DeviceFilter, RevocationReason};
use devid_core::ClientId;

use crate::cli::{FilterArgs, OutputFormat};
use crate::client::Api;
use crate::error::{io_err, CliError, Result};
use crate::table;

/// Which change: the route's last segment and the verb shown.
#[derive(Debug, Clone, Copy)]
pub enum Verb {
    Revoke(RevocationReason),
    Suspend,
    Resume,
}

impl Verb {
    fn word(self) -> &'static str {
        match self {
            Verb::Revoke(_) => "revoke",
            Verb::Suspend => "suspend",
            Verb::Resume => "resume",
        }
    }
}

impl FilterArgs {
    /// Whether any criterion (or --dry-run) was given.
    pub fn is_given(&self) -> bool {
        self.model.is_some()
            || !self.metadata.is_empty()
            || self.created_after.is_some()
            || self.created_before.is_some()
            || self.ids_file.is_some()
            || self.dry_run
    }

    /// The request's filter; the file of ClientIDs read and checked line by line.
    pub fn filter(&self) -> Result<DeviceFilter> {
        let mut metadata = std::collections::BTreeMap::new();
        for pair in &self.metadata {
            let (k, v) = pair
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| CliError::usage(format!("--where {pair:?}: give KEY=VALUE")))?;
            metadata.insert(k.to_string(), v.to_string());
        }
        let client_ids = match &self.ids_file {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| io_err(format!("cannot read {}", path.display()), e))?;
                let ids = text
                    .lines()
                    .enumerate()
                    .filter(|(_, l)| !l.trim().is_empty())
                    .map(|(n, l)| {
                        ClientId::parse(l.trim()).map_err(|e| {
                            CliError::usage(format!("{}:{}: {e}", path.display(), n + 1))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Some(ids)
            }
        };
        let filter = DeviceFilter {
            model: self.model.clone(),
            metadata,
            created_after: self.created_after.clone(),
            created_before: self.created_before.clone(),
            client_ids,
        };
        filter.check().map_err(CliError::usage)?;
        Ok(filter)
    }
}

/// Runs the change for the devices `args` selects.
pub async fn run(
    api: &Api,
    out: OutputFormat,
    verb: Verb,
    args: &FilterArgs,
    yes: bool,
) -> Result<ExitCode> {
    let filter = args.filter()?;
    let request = |dry_run| BulkRequest {
        filter: filter.clone(),
        reason: match verb {
            Verb::Revoke(r) => Some(r),
            _ => None,
        },
        dry_run,
    };
    let path = format!("/v1/devices/{}", verb.word());
    if args.dry_run {
        let r: BulkResult = api.post(&path, &request(true)).await?;
        return print(out, &r);
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(CliError::usage(format!(
                "{} by filter changes many devices: give --yes when stdin is not a terminal \
                 (see --dry-run first)",
                verb.word()
            )));
        }
        let r: BulkResult = api.post(&path, &request(true)).await?;
        eprint!("{} {} devices? [y/N] ", verb.word(), r.changed);
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .map_err(|e| io_err("cannot read the answer", e))?;
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES") {
            return Err(CliError::failed(format!(
                "nothing done (not confirmed): {} devices would change",
                r.changed
            )));
        }
    }
    let r: BulkResult = api.post(&path, &request(false)).await?;
    print(out, &r)
}

fn print(out: OutputFormat, r: &BulkResult) -> Result<ExitCode> {
    match out {
        OutputFormat::Json => super::print_json(r),
        OutputFormat::Table => super::print_text(&table::fields(&[
            ("matched", r.matched.to_string()),
            (
                if r.dry_run { "would_change" } else { "changed" },
                r.changed.to_string(),
            ),
            ("sample", r.sample.join(" ")),
        ])),
    }
}
