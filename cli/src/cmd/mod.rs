//! The commands. Each prints a table (for people) or the documented JSON object (for scripts).

pub mod brokers;
mod bulk;
mod ca;
mod crl;
mod device;
mod feed;
mod fleet;
mod gateway;
mod sensor;
mod token;
mod webhook;

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use devid_core::api::{AuditPage, AuditQuery, DeviceState, Registered, RevocationReason};
use serde::Serialize;

use crate::cli::{AuditArgs, CertCommand, Command, OutputFormat};
use crate::client::{seg, Api};
use crate::error::{io_err, CliError, Result};
use crate::settings::Settings;
use crate::table::{self, Table};

pub async fn run(command: Command, settings: Settings) -> Result<ExitCode> {
    let api = Api::new(&settings)?;
    let out = settings.output;
    match command {
        Command::Ca(c) => ca::run(&api, out, c).await,
        Command::Device(c) => device::run(&api, out, c).await,
        Command::Cert(c) => cert(&api, out, c).await,
        Command::Revocations(c) => feed::run(&api, out, c).await,
        Command::Crl(c) => crl::run(&api, out, c).await,
        Command::Token(c) => token::run(&api, out, c).await,
        Command::Webhook(c) => webhook::run(&api, out, c).await,
        Command::Audit(a) => audit(&api, out, a).await,
        Command::Broker(c) => brokers::broker(&api, out, c).await,
        Command::Model(c) => brokers::model(&api, out, c).await,
        Command::Gateway(c) => gateway::run(&api, out, c).await,
        Command::Fleet(c) => fleet::run(&api, out, c).await,
        Command::Sensor(c) => sensor::run(&api, out, c).await,
        // Handled before the settings are resolved.
        Command::Completions { .. } => Ok(ExitCode::SUCCESS),
    }
}

/// The CA chain (PEM) from `GET /v1/ca`.
pub async fn ca_chain(api: &Api) -> Result<String> {
    ca::fetch_chain(api).await
}

/// The file a device presents in a TLS handshake, `<ClientID>.chain.pem`: its certificate, then
/// the CA certificates of the answer's chain except the last (the root, which the broker already
/// trusts). Stock TLS clients (mosquitto_pub, paho) send a certificate file as it is, and a
/// broker whose `cafile` is the devid root cannot build the path from the leaf alone.
pub fn device_chain_pem(reg: &Registered) -> Result<String> {
    let bad = |what: &str, e: pem::PemError| {
        CliError::failed(format!("the server answered an unreadable {what}: {e}"))
    };
    let issued = issued(reg)?;
    let leaf = pem::parse(issued.certificate).map_err(|e| bad("certificate", e))?;
    let cas = pem::parse_many(issued.chain).map_err(|e| bad("CA chain", e))?;
    let mut blocks = vec![leaf];
    blocks.extend(cas.iter().take(cas.len().saturating_sub(1)).cloned());
    if blocks.iter().any(|b| b.tag() != "CERTIFICATE") || cas.is_empty() {
        return Err(CliError::failed(
            "the server answered a certificate or CA chain that is not PEM certificates",
        ));
    }
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    Ok(blocks
        .iter()
        .map(|b| pem::encode_config(b, config))
        .collect())
}

/// The certificate fields of a device's registration answer (a sensor's answer has none).
pub struct Issued<'a> {
    pub certificate: &'a str,
    pub chain: &'a str,
    pub serial: &'a str,
    pub fingerprint_sha256: &'a str,
    pub not_after: &'a str,
}

/// The certificate fields of `reg`, all of them, or an error naming the device.
pub fn issued(reg: &Registered) -> Result<Issued<'_>> {
    match (
        &reg.certificate,
        &reg.chain,
        &reg.serial,
        &reg.fingerprint_sha256,
        &reg.not_after,
    ) {
        (
            Some(certificate),
            Some(chain),
            Some(serial),
            Some(fingerprint_sha256),
            Some(not_after),
        ) => Ok(Issued {
            certificate,
            chain,
            serial,
            fingerprint_sha256,
            not_after,
        }),
        _ => Err(CliError::failed(format!(
            "the server answered device {} ({}) without its certificate",
            reg.client_id,
            reg.kind.as_str()
        ))),
    }
}

/// Why a sensor answered without its key cannot be flashed: its key was returned once, to the
/// request that registered it.
pub fn sensor_key_lost(reg: &Registered) -> String {
    format!(
        "hardware_serial {:?} is already registered as sensor {} and its key was returned once, \
         to the request that registered it; the server never shows it again",
        reg.hardware_serial, reg.client_id
    )
}

/// Why a registration answer is not a device ready to ship, if it is not: a repeated request
/// is answered with the device as it is now, which may be suspended or revoked.
pub fn not_ready(reg: &Registered) -> Option<String> {
    let then = match reg.status {
        DeviceState::Active => return None,
        DeviceState::Suspended => "; resume it, then run this again to write its files",
        DeviceState::Revoked => "",
    };
    Some(format!(
        "hardware_serial {:?} is registered as device {}, which is {}: its files were not written{then}",
        reg.hardware_serial,
        reg.client_id,
        reg.status.as_str()
    ))
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json<T: Serialize + ?Sized>(v: &T) -> Result<ExitCode> {
    let text = serde_json::to_string_pretty(v)
        .map_err(|e| CliError::failed(format!("cannot encode JSON: {e}")))?;
    emit(format!("{text}\n").as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

pub fn print_text(s: &str) -> Result<ExitCode> {
    emit(s.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// Writes to standard output and flushes. Every command writes its stdout through here, so a
/// reader that closes the pipe early ends the command quietly ([`CliError::pipe`]) instead of
/// a panic in `println!`.
pub fn emit(bytes: &[u8]) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => CliError::pipe(),
            _ => io_err("cannot write to standard output", e),
        })
}

/// A revocation reason by its RFC 5280 name; certificateHold is only set by suspension.
pub fn parse_reason(s: &str) -> Result<RevocationReason> {
    match RevocationReason::parse(s) {
        Some(RevocationReason::CertificateHold) => Err(CliError::usage(
            "certificateHold is set by `devid device suspend`, not by revocation",
        )),
        Some(r) => Ok(r),
        None => {
            let names: Vec<&str> = RevocationReason::ALL
                .iter()
                .filter(|r| **r != RevocationReason::CertificateHold)
                .map(|r| r.as_str())
                .collect();
            Err(CliError::usage(format!(
                "unknown reason {s:?}; use one of {}",
                names.join(", ")
            )))
        }
    }
}

/// An RFC 3339 time, or an age in core's duration grammar ([`devid_core::HumanDuration`]:
/// `24h`, `7d`) counted back from now, as RFC 3339 UTC.
pub fn parse_since(s: &str) -> Result<String> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return t
            .to_offset(time::UtcOffset::UTC)
            .format(&Rfc3339)
            .map_err(|e| CliError::usage(format!("{s:?}: {e}")));
    }
    let secs = s
        .parse::<devid_core::HumanDuration>()
        .map(|d| d.as_secs())
        .map_err(|_| {
            CliError::usage(format!(
            "{s:?} is neither an RFC 3339 time (2026-11-25T13:00:00Z) nor an age (30m, 24h, 7d)"
        ))
        })?;
    let secs = i64::try_from(secs).map_err(|_| CliError::usage(format!("{s:?} is too long")))?;
    let t = time::OffsetDateTime::now_utc()
        .checked_sub(time::Duration::seconds(secs))
        .filter(|t| t.year() >= 1)
        .ok_or_else(|| CliError::usage(format!("{s:?} reaches back too far")))?;
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&Rfc3339)
        .map_err(|e| CliError::usage(format!("{s:?}: {e}")))
}

/// Writes a file readable by its owner only (private keys), replacing any old one atomically.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    write_with_mode(path, contents, 0o600)
}

/// Writes a private file (mode 0600) in place and syncs it to disk: a secret that exists
/// nowhere else (a sensor's key) is on disk before anything records it as written.
pub fn write_synced_private(path: &Path, contents: &[u8]) -> Result<()> {
    write_direct(path, contents, true)?;
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_err(format!("cannot sync {}", path.display()), e))
}

/// Writes a file atomically (temporary name, then rename) with the given mode.
pub fn write_with_mode(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| io_err(format!("cannot write {}", tmp.display()), e))?;
    // The mode given to open() is filtered by the umask; set it exactly.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| io_err(format!("cannot set the mode of {}", tmp.display()), e))?;
    f.write_all(contents)
        .map_err(|e| io_err(format!("cannot write {}", tmp.display()), e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| io_err(format!("cannot write {}", path.display()), e))
}

/// Writes a file in place (no temporary name): for register-batch's per-device files, where a
/// torn file can only belong to a chunk not yet in the manifest, which a re-run writes again.
/// Keys get mode 0600 even when the file existed before.
pub fn write_direct(path: &Path, contents: &[u8], private: bool) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mode = if private { 0o600 } else { 0o644 };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| io_err(format!("cannot write {}", path.display()), e))?;
    if private {
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| io_err(format!("cannot set the mode of {}", path.display()), e))?;
    }
    f.write_all(contents)
        .map_err(|e| io_err(format!("cannot write {}", path.display()), e))
}

pub fn write_public(path: &Path, contents: &[u8]) -> Result<()> {
    write_with_mode(path, contents, 0o644)
}

/// Writes to a file, or to stdout for `-`.
pub fn write_out(path: &Path, contents: &[u8]) -> Result<()> {
    if path == Path::new("-") {
        emit(contents)
    } else {
        write_public(path, contents)
    }
}

pub fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| io_err(format!("cannot create directory {}", dir.display()), e))
}

async fn cert(api: &Api, out: OutputFormat, c: CertCommand) -> Result<ExitCode> {
    let info: devid_core::api::CertificateInfo = match c {
        CertCommand::Revoke { serial, reason } => {
            let reason = parse_reason(&reason)?;
            api.post(
                &format!("/v1/certificates/{}/revoke", seg(&serial)),
                &devid_core::api::RevokeRequest { reason },
            )
            .await?
        }
        CertCommand::Show { serial } => {
            api.get(&format!("/v1/certificates/{}", seg(&serial)))
                .await?
        }
    };
    match out {
        OutputFormat::Json => print_json(&info),
        OutputFormat::Table => {
            let mut s = table::fields(&[
                ("serial", info.serial.clone()),
                ("client_id", info.client_id.clone()),
                ("status", info.status.as_str().to_string()),
                ("profile", info.profile.clone()),
                ("not_before", info.not_before.clone()),
                ("not_after", info.not_after.clone()),
                ("fingerprint_sha256", info.fingerprint_sha256.clone()),
                ("revoked_at", table::opt(&info.revoked_at)),
                (
                    "revocation_reason",
                    table::opt(&info.revocation_reason.map(|r| r.as_str().to_string())),
                ),
            ]);
            if let Some(pem) = &info.certificate {
                s.push('\n');
                s.push_str(pem);
            }
            print_text(&s)
        }
    }
}

async fn audit(api: &Api, out: OutputFormat, a: AuditArgs) -> Result<ExitCode> {
    let since = a.since.as_deref().map(parse_since).transpose()?;
    let mut items = Vec::new();
    let mut cursor = None;
    let mut next_cursor;
    loop {
        let remaining = a
            .limit
            .saturating_sub(u32::try_from(items.len()).unwrap_or(u32::MAX));
        let q = AuditQuery {
            since: since.clone(),
            actor: a.actor.clone(),
            limit: Some(remaining.clamp(1, 1000)),
            cursor: cursor.take(),
        };
        let page: AuditPage = api.get_query("/v1/audit", &q).await?;
        items.extend(page.items);
        next_cursor = page.next_cursor;
        if next_cursor.is_none() || items.len() >= a.limit as usize {
            break;
        }
        cursor = next_cursor.clone();
    }
    items.truncate(a.limit as usize);
    let page = AuditPage { items, next_cursor };
    match out {
        OutputFormat::Json => print_json(&page),
        OutputFormat::Table => {
            let mut t = Table::new(&["id", "at", "actor", "action", "target", "outcome", "detail"]);
            for e in &page.items {
                t.row(vec![
                    e.id.to_string(),
                    e.at.clone(),
                    e.actor_name.clone(),
                    e.action.clone(),
                    e.target.clone(),
                    e.outcome.clone(),
                    e.detail.clone().unwrap_or_default(),
                ]);
            }
            print_text(&t.render())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_rfc3339_and_ages() {
        assert_eq!(
            parse_since("2026-11-25T14:00:00+01:00").expect("ok"),
            "2026-11-25T13:00:00Z"
        );
        let s = parse_since("1h").expect("ok");
        assert!(s.ends_with('Z'), "{s}");
        assert!(parse_since("yesterday").is_err());
        assert!(parse_since("3000y").is_err(), "before year 1");
    }

    #[test]
    fn reasons() {
        assert_eq!(
            parse_reason("keyCompromise").expect("ok"),
            RevocationReason::KeyCompromise
        );
        assert!(parse_reason("certificateHold").is_err());
        let e = parse_reason("stolen").expect_err("unknown");
        assert!(e.message.contains("keyCompromise"));
    }
}
