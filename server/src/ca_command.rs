//! `devid-server ca rotate` and `devid-server ca revoke-issuing`: one-shot commands on the data
//! directory and the database a running service uses. The change is committed with a feed
//! entry, so running servers (NOTIFY on PostgreSQL, the feed poll on SQLite) and brokers
//! follow at once.

use std::sync::Arc;

use devid_core::api::RevocationReason;

use crate::config::{CaCommand, Settings};
use crate::domain::issuers;
use crate::serve::{self, BoxError};
use crate::store::Actor;

pub async fn run(settings: &Settings, command: CaCommand) -> Result<(), BoxError> {
    let ready = serve::init(settings).await?;
    let actor = Actor {
        id: "system".into(),
        name: "devid-server ca".into(),
    };
    let result = match command {
        CaCommand::Rotate => rotate(settings, &ready, &actor).await,
        CaCommand::RevokeIssuing { id, reason } => {
            let reason = RevocationReason::parse(&reason).ok_or_else(|| {
                format!(
                    "--reason {reason:?} is not one of {}",
                    RevocationReason::ALL
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            let (row, entry) =
                issuers::revoke(&ready.store, &ready.ca, &id, reason, &actor).await?;
            println!(
                "devid-server: revoked issuing CA {} (serial {}); feed entry {}",
                row.id, row.serial, entry.seq
            );
            Ok(())
        }
    };
    ready.store.close().await;
    result
}

async fn rotate(settings: &Settings, ready: &serve::Ready, actor: &Actor) -> Result<(), BoxError> {
    let options = serve::ca_options(settings);
    let ca: Arc<_> = ready.ca.clone();
    let (issuing, entry) = issuers::rotate(&ready.store, &ca, &options, actor).await?;
    println!(
        "devid-server: issuing CA {} (serial {}, notAfter {}) is active; feed entry {}",
        issuing.id(),
        issuing.serial_hex(),
        crate::timefmt::rfc3339(issuing.not_after().unix_timestamp()),
        entry.seq
    );
    Ok(())
}
