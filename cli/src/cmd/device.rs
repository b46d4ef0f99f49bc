//! `devid device …` except register-batch (in `batch.rs`).

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::Path;
use std::process::ExitCode;

use devid_core::api::{
    Device, DeviceKind, DeviceList, DeviceListQuery, DeviceState, ReasonRequest, RegisterRequest,
    Registered, RevokeRequest,
};
use devid_core::ModelName;
use reqwest::Method;

use super::bulk::Verb;
use crate::batch::file_key;
use crate::cli::{DeviceCommand, FilterArgs, ListArgs, OutputFormat, RegisterArgs};
use crate::client::{seg, Api};
use crate::error::{io_err, CliError, Result};
use crate::keys;
use crate::table::{self, Table};

pub async fn run(api: &Api, out: OutputFormat, c: DeviceCommand) -> Result<ExitCode> {
    match c {
        DeviceCommand::Register(a) => register(api, out, a).await,
        DeviceCommand::RegisterBatch(a) => crate::batch::run(api, out, a).await,
        DeviceCommand::List(a) => list(api, out, a).await,
        DeviceCommand::Show { id } => {
            let d: Device = api.get(&format!("/v1/devices/{}", seg(&id))).await?;
            print_device(out, &d)
        }
        DeviceCommand::Revoke {
            id,
            reason,
            yes,
            filter,
        } => {
            let reason = super::parse_reason(&reason)?;
            let Some(id) = one_or_filter(id, &filter)? else {
                return super::bulk::run(api, out, Verb::Revoke(reason), &filter, yes).await;
            };
            if !yes && std::io::stdin().is_terminal() {
                eprint!(
                    "Revoke device {id} and all its certificates ({})? This cannot be undone. [y/N] ",
                    reason.as_str()
                );
                let _ = std::io::stderr().flush();
                let mut answer = String::new();
                std::io::stdin()
                    .lock()
                    .read_line(&mut answer)
                    .map_err(|e| io_err("cannot read the answer", e))?;
                if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES") {
                    return Err(CliError::failed("not revoked (not confirmed)"));
                }
            }
            let d: Device = api
                .post(
                    &format!("/v1/devices/{}/revoke", seg(&id)),
                    &RevokeRequest { reason },
                )
                .await?;
            print_device(out, &d)
        }
        DeviceCommand::Suspend {
            id,
            comment,
            yes,
            filter,
        } => {
            let Some(id) = one_or_filter(id, &filter)? else {
                if comment.is_some() {
                    return Err(CliError::usage("--comment is for one device"));
                }
                return super::bulk::run(api, out, Verb::Suspend, &filter, yes).await;
            };
            let d: Device = api
                .post(
                    &format!("/v1/devices/{}/suspend", seg(&id)),
                    &ReasonRequest { comment },
                )
                .await?;
            print_device(out, &d)
        }
        DeviceCommand::Status { id } => super::brokers::status(api, out, &id).await,
        DeviceCommand::Health { id } => super::fleet::health(api, out, &id).await,
        DeviceCommand::Timeline { id, limit } => super::fleet::timeline(api, out, &id, limit).await,
        DeviceCommand::Policy {
            id,
            publish,
            subscribe,
            message_auth,
        } => super::brokers::policy(api, out, &id, publish, subscribe, message_auth).await,
        DeviceCommand::Allowlist { id, cidrs, clear } => {
            let cidrs = if clear { Vec::new() } else { cidrs };
            super::brokers::allowlist(api, out, &id, cidrs).await
        }
        DeviceCommand::Resume { id, yes, filter } => {
            let Some(id) = one_or_filter(id, &filter)? else {
                return super::bulk::run(api, out, Verb::Resume, &filter, yes).await;
            };
            let d: Device = api
                .post(
                    &format!("/v1/devices/{}/resume", seg(&id)),
                    &serde_json::json!({}),
                )
                .await?;
            print_device(out, &d)
        }
    }
}

/// The one ClientID given, or None when a filter is; refused when both or neither are.
fn one_or_filter(id: Option<String>, filter: &FilterArgs) -> Result<Option<String>> {
    match (id, filter.is_given()) {
        (Some(_), true) => Err(CliError::usage(
            "give a ClientID or a filter (--model, --where, --created-after, --created-before, \
             --ids-file), not both",
        )),
        (None, false) => Err(CliError::usage(
            "give a ClientID, or a filter: --model, --where, --created-after, \
             --created-before, --ids-file",
        )),
        (id, _) => Ok(id),
    }
}

pub fn device_text(d: &Device) -> String {
    let mut s = table::fields(&[
        ("client_id", d.client_id.clone()),
        ("hardware_serial", d.hardware_serial.clone()),
        ("model", table::opt(&d.model)),
        ("kind", d.kind.as_str().to_string()),
        ("gateway", table::opt(&d.gateway)),
        ("status", d.status.as_str().to_string()),
        ("created_at", d.created_at.clone()),
        ("revoked_at", table::opt(&d.revoked_at)),
        (
            "revocation_reason",
            table::opt(&d.revocation_reason.map(|r| r.as_str().to_string())),
        ),
        ("last_seen", table::opt(&d.last_seen)),
        ("last_address", table::opt(&d.last_address)),
        (
            "metadata",
            match &d.metadata {
                Some(m) if m.as_object().is_none_or(|o| !o.is_empty()) => m.to_string(),
                _ => "-".into(),
            },
        ),
    ]);
    s.push('\n');
    let mut t = Table::new(&[
        "serial",
        "status",
        "profile",
        "not_before",
        "not_after",
        "fingerprint_sha256",
    ]);
    for c in &d.certificates {
        t.row(vec![
            c.serial.clone(),
            c.status.as_str().to_string(),
            c.profile.clone(),
            c.not_before.clone(),
            c.not_after.clone(),
            c.fingerprint_sha256.clone(),
        ]);
    }
    s.push_str(&t.render());
    s
}

fn print_device(out: OutputFormat, d: &Device) -> Result<ExitCode> {
    match out {
        OutputFormat::Json => super::print_json(d),
        OutputFormat::Table => super::print_text(&device_text(d)),
    }
}

async fn list(api: &Api, out: OutputFormat, a: ListArgs) -> Result<ExitCode> {
    let status = a
        .status
        .as_deref()
        .map(|s| {
            DeviceState::parse(s).ok_or_else(|| {
                CliError::usage(format!(
                    "unknown status {s:?}; use active, suspended or revoked"
                ))
            })
        })
        .transpose()?;
    let created_after = a.since.as_deref().map(super::parse_since).transpose()?;
    let mut items = Vec::new();
    let mut cursor = None;
    let next_cursor = loop {
        let remaining = (a.limit as usize).saturating_sub(items.len());
        let q = DeviceListQuery {
            status,
            q: None,
            hardware_serial: a.serial.clone(),
            model: a.model.clone(),
            kind: a.kind,
            created_after: created_after.clone(),
            limit: Some(u32::try_from(remaining.clamp(1, 1000)).unwrap_or(1000)),
            cursor: cursor.take(),
        };
        let page: DeviceList = api.get_query("/v1/devices", &q).await?;
        items.extend(page.items);
        match page.next_cursor {
            Some(c) if items.len() < a.limit as usize => cursor = Some(c),
            other => break other,
        }
    };
    items.truncate(a.limit as usize);
    let list = DeviceList { items, next_cursor };
    match out {
        OutputFormat::Json => super::print_json(&list),
        OutputFormat::Table => {
            let mut t = Table::new(&[
                "client_id",
                "hardware_serial",
                "model",
                "kind",
                "gateway",
                "status",
                "created_at",
                "last_seen",
            ]);
            for d in &list.items {
                t.row(vec![
                    d.client_id.clone(),
                    d.hardware_serial.clone(),
                    table::opt(&d.model),
                    d.kind.as_str().to_string(),
                    table::opt(&d.gateway),
                    d.status.as_str().to_string(),
                    d.created_at.clone(),
                    table::opt(&d.last_seen),
                ]);
            }
            let mut s = t.render();
            if list.next_cursor.is_some() {
                s.push_str(&format!(
                    "(first {} shown; raise --limit for more)\n",
                    list.items.len()
                ));
            }
            super::print_text(&s)
        }
    }
}

fn parse_metadata(entries: &[String]) -> Result<Option<serde_json::Value>> {
    if entries.is_empty() {
        return Ok(None);
    }
    let mut map = serde_json::Map::new();
    for e in entries {
        let (k, v) = e
            .split_once('=')
            .ok_or_else(|| CliError::usage(format!("--meta {e:?}: expected KEY=VALUE")))?;
        map.insert(k.to_string(), serde_json::Value::String(v.to_string()));
    }
    Ok(Some(serde_json::Value::Object(map)))
}

async fn register(api: &Api, out: OutputFormat, a: RegisterArgs) -> Result<ExitCode> {
    if a.sensor {
        return register_sensor(api, out, a).await;
    }
    let metadata = parse_metadata(&a.metadata)?;
    super::create_dir(&a.out)?;
    // With --generate-key the key and its CSR are kept in a pending file before the CSR is sent,
    // so a re-run after a lost answer sends the same CSR (the server then returns the existing
    // device) and the key is never lost.
    let pending = a
        .out
        .join(format!(".pending-{}.pem", file_key(a.serial.as_str())));
    // Whether the pending key was made by this run (its CSR never sent before).
    let mut fresh = false;
    let (csr, key_pem) = if a.generate_key {
        match std::fs::read_to_string(&pending) {
            Ok(text) => split_pending(&text).ok_or_else(|| {
                CliError::failed(format!(
                    "{} is damaged; remove it to make a new key",
                    pending.display()
                ))
            })?,
            Err(_) => {
                let k = keys::generate(a.serial.as_str()).map_err(CliError::failed)?;
                super::write_private(&pending, format!("{}{}", k.key_pem, k.csr_pem).as_bytes())?;
                fresh = true;
                (k.csr_pem, Some(k.key_pem))
            }
        }
    } else {
        let path = a
            .csr
            .as_ref()
            .ok_or_else(|| CliError::usage("give --csr FILE or --generate-key"))?;
        let text = std::fs::read_to_string(path)
            .map_err(|e| io_err(format!("cannot read CSR {}", path.display()), e))?;
        keys::check_csr(&text)
            .map_err(|e| CliError::failed(format!("CSR {}: {e}", path.display())))?;
        (text, None)
    };
    let req = RegisterRequest {
        hardware_serial: a.serial.to_string(),
        model: a.model.as_ref().map(ModelName::to_string),
        client_id: a.client_id.as_ref().map(|id| id.to_string()),
        metadata,
        csr: Some(csr),
        generate_key: false,
        kind: DeviceKind::Device,
    };
    // `refused`: the server answered 4xx, so nothing was registered by this request.
    let answer = match api
        .request(Method::POST, "/v1/devices")
        .json(&req)
        .send()
        .await
    {
        Err(e) => Err((api.transport_error(&e), false)),
        Ok(resp) if resp.status().is_success() => {
            api.json::<Registered>(resp).await.map_err(|e| (e, false))
        }
        Ok(resp) => {
            let refused = resp.status().is_client_error();
            Err((api.error_from_response(resp).await, refused))
        }
    };
    let reg = match answer {
        Ok(reg) => reg,
        Err((mut e, refused)) => {
            if a.generate_key {
                e.message
                    .push_str(&pending_after_error(&pending, fresh, refused));
            }
            return Err(e);
        }
    };
    devid_core::clientid::validate(&reg.client_id)
        .map_err(|e| CliError::failed(format!("server answered an unusable ClientID: {e}")))?;
    if let Some(why) = super::not_ready(&reg) {
        let mut e = CliError::failed(why);
        if a.generate_key {
            if reg.status == DeviceState::Revoked {
                // The key of a revoked certificate is of no use to anyone.
                let _ = std::fs::remove_file(&pending);
                e.message
                    .push_str(&format!("; removed its key ({})", pending.display()));
            } else {
                e.message
                    .push_str(&format!(" (its key waits in {})", pending.display()));
            }
        }
        return Err(e);
    }
    let chain = super::device_chain_pem(&reg)?;
    let issued = super::issued(&reg)?;
    super::write_public(
        &a.out.join(format!("{}.crt", reg.client_id)),
        issued.certificate.as_bytes(),
    )?;
    super::write_public(
        &a.out.join(crate::batch::chain_file(&reg.client_id)),
        chain.as_bytes(),
    )?;
    super::write_public(&a.out.join("chain.pem"), issued.chain.as_bytes())?;
    if let Some(key) = key_pem {
        super::write_private(
            &a.out.join(format!("{}.key", reg.client_id)),
            key.as_bytes(),
        )?;
        let _ = std::fs::remove_file(&pending);
    }
    match out {
        OutputFormat::Json => super::print_json(&reg),
        OutputFormat::Table => {
            if !reg.created {
                eprintln!("already registered with this CSR; wrote the existing certificate");
            }
            super::emit(format!("{}\n", reg.client_id).as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `register --sensor`: the sensor's key, returned once, goes to `<ClientID>.sensor.key` (mode
/// 0600, synced) before the ClientID is printed. A repeated request is answered without the
/// key: fine when that file is there already (an earlier run wrote it), an error otherwise.
async fn register_sensor(api: &Api, out: OutputFormat, a: RegisterArgs) -> Result<ExitCode> {
    let req = RegisterRequest {
        hardware_serial: a.serial.to_string(),
        model: a.model.as_ref().map(ModelName::to_string),
        client_id: a.client_id.as_ref().map(|id| id.to_string()),
        metadata: parse_metadata(&a.metadata)?,
        csr: None,
        generate_key: false,
        kind: DeviceKind::Sensor,
    };
    super::create_dir(&a.out)?;
    let resp = api
        .request(Method::POST, "/v1/devices")
        .json(&req)
        .send()
        .await
        .map_err(|e| api.transport_error(&e))?;
    if !resp.status().is_success() {
        return Err(api.error_from_response(resp).await);
    }
    let reg: Registered = api.json(resp).await?;
    devid_core::clientid::validate(&reg.client_id)
        .map_err(|e| CliError::failed(format!("server answered an unusable ClientID: {e}")))?;
    if let Some(why) = super::not_ready(&reg) {
        return Err(CliError::failed(why));
    }
    let path = a.out.join(crate::batch::sensor_key_file(&reg.client_id));
    match &reg.sensor_key {
        Some(key) => super::write_synced_private(&path, format!("{key}\n").as_bytes())?,
        None if std::fs::metadata(&path).is_ok_and(|m| m.len() > 0) => {
            eprintln!(
                "already registered; its key is in {} (written when it was registered)",
                path.display()
            );
        }
        None => return Err(CliError::failed(super::sensor_key_lost(&reg))),
    }
    match out {
        OutputFormat::Json => super::print_json(&reg),
        OutputFormat::Table => {
            super::emit(format!("{}\n", reg.client_id).as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// What became of the pending key after a registration that got no device, said as the end of
/// the error line. A key whose CSR this run sent first is removed when the server refused the
/// request (4xx: nothing was registered). It is kept when the outcome is unknown (no answer, 5xx)
/// or when an earlier run already sent its CSR (that run may have registered it, and only the
/// same CSR gets that device back).
fn pending_after_error(pending: &Path, fresh: bool, refused: bool) -> String {
    let path = pending.display();
    if refused && fresh {
        let _ = std::fs::remove_file(pending);
        format!("; removed the key made for it ({path}): nothing was registered with it")
    } else if refused {
        format!(
            "; kept the key in {path}: an earlier run sent its CSR and may have registered it, \
             so run again with that run's options to get its certificate, or remove the file to \
             start over with a new key"
        )
    } else {
        format!(
            "; the key waits in {path}: run the same command again to finish with this key \
             (a repeated request gets the device it registered)"
        )
    }
}

/// The (CSR, key) of a pending file: the key's PEM followed by the CSR's PEM, both kept
/// byte for byte so the re-sent CSR is the one sent before.
fn split_pending(text: &str) -> Option<(String, Option<String>)> {
    let at = text.find("-----BEGIN CERTIFICATE REQUEST-----")?;
    let (key, csr) = text.split_at(at);
    if !key.contains("PRIVATE KEY") || keys::check_csr(csr).is_err() {
        return None;
    }
    Some((csr.to_string(), Some(key.to_string())))
}
