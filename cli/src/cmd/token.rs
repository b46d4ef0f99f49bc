//! `devid token create|list|revoke`.

use std::process::ExitCode;

use devid_core::api::{CreateTokenRequest, CreatedToken, Role, TokenInfo, TokenList};
use devid_core::ModelName;

use crate::cli::{OutputFormat, TokenCommand};
use crate::client::{seg, Api};
use crate::error::{CliError, Result};
use crate::table::{self, Table};

fn info_fields(t: &TokenInfo) -> Vec<(&'static str, String)> {
    vec![
        ("id", t.id.clone()),
        ("name", t.name.clone()),
        ("role", t.role.as_str().to_string()),
        ("models", models(t)),
        ("created_at", t.created_at.clone()),
        ("expires_at", table::opt(&t.expires_at)),
        ("revoked_at", table::opt(&t.revoked_at)),
    ]
}

fn models(t: &TokenInfo) -> String {
    match &t.models {
        Some(m) if !m.is_empty() => m.join(","),
        _ => "-".into(),
    }
}

pub async fn run(api: &Api, out: OutputFormat, c: TokenCommand) -> Result<ExitCode> {
    match c {
        TokenCommand::Create {
            role,
            name,
            models,
            expires,
            out: token_file,
        } => {
            let role = Role::parse(&role).ok_or_else(|| {
                CliError::usage(format!(
                    "unknown role {role:?}; use admin, factory, broker, auditor or app"
                ))
            })?;
            if models.is_some() && role != Role::Factory {
                return Err(CliError::usage("--models applies to factory tokens only"));
            }
            // Model names and the lifetime were checked by core's rules when the command line
            // was read.
            let req = CreateTokenRequest {
                role,
                name,
                models: models.map(|v| v.into_iter().map(ModelName::into_string).collect()),
                expires_in: expires.map(|d| d.as_secs()),
            };
            let created: CreatedToken = api.post("/v1/tokens", &req).await?;
            if let Some(path) = token_file {
                // The secret goes to the file only; stdout gets what describes it.
                super::write_private(&path, format!("{}\n", created.token).as_bytes())?;
                eprintln!("wrote the token to {} (mode 0600)", path.display());
                return match out {
                    OutputFormat::Json => super::print_json(&created.info),
                    OutputFormat::Table => {
                        super::print_text(&table::fields(&info_fields(&created.info)))
                    }
                };
            }
            match out {
                OutputFormat::Json => super::print_json(&created),
                OutputFormat::Table => {
                    let mut f = info_fields(&created.info);
                    f.push(("token", created.token.clone()));
                    eprintln!("The token is shown once: store it now.");
                    super::print_text(&table::fields(&f))
                }
            }
        }
        TokenCommand::List => {
            let list: TokenList = api.get("/v1/tokens").await?;
            match out {
                OutputFormat::Json => super::print_json(&list),
                OutputFormat::Table => {
                    let mut t = Table::new(&[
                        "id",
                        "name",
                        "role",
                        "models",
                        "created_at",
                        "expires_at",
                        "revoked_at",
                    ]);
                    for i in &list.items {
                        t.row(vec![
                            i.id.clone(),
                            i.name.clone(),
                            i.role.as_str().into(),
                            models(i),
                            i.created_at.clone(),
                            table::opt(&i.expires_at),
                            table::opt(&i.revoked_at),
                        ]);
                    }
                    super::print_text(&t.render())
                }
            }
        }
        TokenCommand::Revoke { id } => {
            let info: TokenInfo = api.delete(&format!("/v1/tokens/{}", seg(&id))).await?;
            match out {
                OutputFormat::Json => super::print_json(&info),
                OutputFormat::Table => super::print_text(&table::fields(&info_fields(&info))),
            }
        }
    }
}
