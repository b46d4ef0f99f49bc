//! The last step of a chunk: the server's answer written to the output directory. Each device's
//! files first, then its manifest line, so a device in the manifest always has its files.

use std::collections::HashMap;

use devid_core::api::{BatchResponse, Registered};

use super::input::Failure;
use super::manifest::{chain_file, ManifestRow};
use super::prepare::Item;
use super::sensor_key_file;
use super::{locked, Shared, CHAIN_FILE};
use crate::cmd::{write_direct, write_public};
use crate::error::{CliError, Result};

/// Writes the certificates and keys of a registered chunk, then records it in the manifest.
pub fn store(s: &Shared, items: Vec<Item>, body: BatchResponse) -> Result<()> {
    if body.items.len() != items.len() {
        return Err(CliError::failed(format!(
            "the server answered {} items for {} sent",
            body.items.len(),
            items.len()
        )));
    }
    {
        let mut chain_written = locked(&s.chain_written)?;
        if !*chain_written {
            if let Some(chain) = body.items.iter().find_map(|r| r.chain.as_ref()) {
                write_public(&s.out.join(CHAIN_FILE), chain.as_bytes())?;
                *chain_written = true;
            }
        }
    }
    if s.sensors {
        return store_sensors(s, &items, &body);
    }
    let (ready, refused) = match_answers(&items, &body)?;
    write_files(s, &ready)?;
    let rows: Vec<ManifestRow> = ready
        .iter()
        .map(|(item, reg, _)| {
            let issued = crate::cmd::issued(reg)?;
            Ok(ManifestRow {
                hardware_serial: item.row.serial.clone(),
                model: reg.model.clone().unwrap_or_default(),
                client_id: reg.client_id.clone(),
                serial: issued.serial.to_string(),
                fingerprint_sha256: issued.fingerprint_sha256.to_string(),
                not_after: issued.not_after.to_string(),
                chain_file: chain_file(&reg.client_id),
            })
        })
        .collect::<Result<_>>()?;
    s.manifest.append(&rows)?;
    let created = ready.iter().filter(|(_, reg, _)| reg.created).count();
    s.progress.registered(created, ready.len() - created);
    s.fail(refused)
}

/// A device ready to ship: its item, the server's answer and its `<ClientID>.chain.pem` text.
type Ready<'a> = (&'a Item, &'a Registered, String);

/// Matches each item to its answer. A device the server answers as suspended or revoked (a
/// repeated request finds it as it is now) is not ready to ship: its row fails and nothing of
/// it is written.
fn match_answers<'a>(
    items: &'a [Item],
    body: &'a BatchResponse,
) -> Result<(Vec<Ready<'a>>, Vec<Failure>)> {
    let by_serial: HashMap<&str, &Registered> = body
        .items
        .iter()
        .map(|r| (r.hardware_serial.as_str(), r))
        .collect();
    let mut ready = Vec::with_capacity(items.len());
    let mut refused = Vec::new();
    for item in items {
        let reg = *by_serial.get(item.row.serial.as_str()).ok_or_else(|| {
            CliError::failed(format!(
                "the server's answer lacks hardware_serial {:?}",
                item.row.serial
            ))
        })?;
        devid_core::clientid::validate(&reg.client_id)
            .map_err(|e| CliError::failed(format!("server answered an unusable ClientID: {e}")))?;
        if let Some(why) = crate::cmd::not_ready(reg) {
            refused.push(item.row.failure(why));
            continue;
        }
        let chain = crate::cmd::device_chain_pem(reg)?;
        ready.push((item, reg, chain));
    }
    Ok((ready, refused))
}

/// Writes `<ClientID>.crt`, `<ClientID>.chain.pem` and, when the key was made here,
/// `<ClientID>.key` (mode 0600).
fn write_files(s: &Shared, ready: &[Ready<'_>]) -> Result<()> {
    // One chunk writes files at a time, on one thread: creating files in one directory from
    // several threads only contends on the directory's lock in the kernel (measured: 3x the
    // system time with two writers on ext4).
    let _one_writer = s
        .file_writer
        .lock()
        .map_err(|_| CliError::failed("an earlier write failed"))?;
    for (item, reg, chain) in ready {
        let file = |ext: &str| s.out.join(format!("{}.{ext}", reg.client_id));
        write_direct(
            &file("crt"),
            crate::cmd::issued(reg)?.certificate.as_bytes(),
            false,
        )?;
        write_direct(
            &s.out.join(chain_file(&reg.client_id)),
            chain.as_bytes(),
            false,
        )?;
        if let Some(key) = &item.key {
            write_direct(&file("key"), key.as_bytes(), true)?;
        }
    }
    Ok(())
}

/// [`store`] for sensors: each sensor's key file (mode 0600, synced), then the manifest lines.
/// A sensor the server answers without its key (it was registered before and its key was
/// returned then) is done when an earlier run wrote its key file, and fails otherwise: the
/// server never shows a sensor's key again.
fn store_sensors(s: &Shared, items: &[Item], body: &BatchResponse) -> Result<()> {
    let by_serial: HashMap<&str, &Registered> = body
        .items
        .iter()
        .map(|r| (r.hardware_serial.as_str(), r))
        .collect();
    let mut rows = Vec::with_capacity(items.len());
    let mut refused = Vec::new();
    let (mut created, mut already) = (0, 0);
    {
        let _one_writer = s
            .file_writer
            .lock()
            .map_err(|_| CliError::failed("an earlier write failed"))?;
        for item in items {
            let reg = *by_serial.get(item.row.serial.as_str()).ok_or_else(|| {
                CliError::failed(format!(
                    "the server's answer lacks hardware_serial {:?}",
                    item.row.serial
                ))
            })?;
            devid_core::clientid::validate(&reg.client_id).map_err(|e| {
                CliError::failed(format!("server answered an unusable ClientID: {e}"))
            })?;
            if let Some(why) = crate::cmd::not_ready(reg) {
                refused.push(item.row.failure(why));
                continue;
            }
            let path = s.out.join(sensor_key_file(&reg.client_id));
            match &reg.sensor_key {
                Some(key) => {
                    crate::cmd::write_synced_private(&path, format!("{key}\n").as_bytes())?;
                    created += 1;
                }
                None if std::fs::metadata(&path).is_ok_and(|m| m.len() > 0) => already += 1,
                None => {
                    refused.push(item.row.failure(crate::cmd::sensor_key_lost(reg)));
                    continue;
                }
            }
            rows.push(ManifestRow {
                hardware_serial: item.row.serial.clone(),
                model: reg.model.clone().unwrap_or_default(),
                client_id: reg.client_id.clone(),
                serial: String::new(),
                fingerprint_sha256: String::new(),
                not_after: String::new(),
                chain_file: String::new(),
            });
        }
    }
    s.manifest.append(&rows)?;
    s.progress.registered(created, already);
    s.fail(refused)
}
