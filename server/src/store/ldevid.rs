//! LDevID issuance: the one write path of an operational certificate. The rules are
//! `domain::renewal`'s; this reads what they need under the devices' locks and writes what they
//! decided. Issuances that arrive together share one transaction, with a constant number of
//! statements for all of them (and one commit).

use std::collections::HashMap;

use devid_core::api::{AppEventKind, CertState};

use super::app_events::{append_app_events, NewAppEvent};
use super::sql::{Arg, Stmt, Tx};
use super::types::CERT_COLUMNS;
use super::{AuditRecord, CertRow, DeviceRow, ModelRow, NewCert, Store, StoreError};

/// What the issuance rules read, as of the transaction (the device's row is locked).
#[derive(Debug, Clone)]
pub struct LdevidFacts {
    pub device: DeviceRow,
    /// The certificate that authenticated the request.
    pub presented: CertRow,
    /// The device's model settings (None: no model, or a model never configured).
    pub model: Option<ModelRow>,
    /// created_at of the device's LDevIDs issued at or after `since` (the caller's window).
    pub recent: Vec<i64>,
    /// The CSR key's binding, if the key is known: its device's id and whether it was revoked
    /// for keyCompromise.
    pub key: Option<KeyBinding>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyBinding {
    pub device_id: i64,
    pub compromised: bool,
}

/// What to write: the new certificate, its audit row, and whether its key is new to the device.
#[derive(Debug, Clone)]
pub struct LdevidPlan {
    pub cert: NewCert,
    pub audit: AuditRecord,
    pub bind_key: bool,
}

/// One issuance of a shared transaction ([`Store::issue_ldevids`]): the certificate that
/// authenticated the request (`presented`, lowercase hex serial), the CSR key's SHA-256
/// (`spki_sha256`), the start of the rate window (`since`), and the rules to apply to what is
/// read (`decide`: the rules, then the CA's signature), which hand back, with the plan,
/// whatever the caller wants to keep of their decision (`T`).
pub struct LdevidAsk<E, T> {
    pub presented: String,
    pub spki_sha256: [u8; 32],
    pub since: i64,
    pub decide: Decide<E, T>,
}

/// The rules of one issuance, applied to what the transaction read.
pub type Decide<E, T> = Box<dyn FnOnce(&LdevidFacts) -> Result<(LdevidPlan, T), E> + Send>;

/// What the issuances of one transaction read, each kind with one statement.
struct Read {
    /// Device id of each presented certificate's serial.
    cert_device: HashMap<String, i64>,
    devices: HashMap<i64, DeviceRow>,
    presented: HashMap<String, CertRow>,
    models: HashMap<String, ModelRow>,
    /// created_at of each device's LDevIDs since the earliest `since` asked for.
    recent: HashMap<i64, Vec<i64>>,
    keys: HashMap<[u8; 32], KeyBinding>,
}

impl Store {
    /// Issues LDevIDs in one shared transaction, each item with its own rules and result. Reads
    /// what the rules need for all items at once: the device of each certificate `presented`
    /// (an item whose certificate is unknown gets NotFound), the devices' rows, locked in the
    /// order of their ids (so that transactions running at once, in this process or another
    /// one on PostgreSQL, cannot wait on each other in a cycle, and the count of recent
    /// LDevIDs holds across processes), the presented certificates, the models, the LDevIDs
    /// issued since each item's `since`, and the bindings of the keys `spki_sha256`. Then asks
    /// each item's `decide` in order, an item seeing what the earlier items of the call were
    /// granted (their LDevIDs count towards the rate limit; their keys are bound), and writes
    /// the granted certificates, the new keys' bindings, the audit rows and the app events.
    /// A refusal is that item's result and writes nothing. Err: the transaction failed as a
    /// whole (for instance a key bound meanwhile by another process), and nothing of it was
    /// written; else one result per item, in order.
    pub async fn issue_ldevids<E, T>(
        &self,
        asks: Vec<LdevidAsk<E, T>>,
    ) -> Result<Vec<Result<(CertRow, T), E>>, StoreError>
    where
        E: From<StoreError>,
    {
        if asks.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pools.begin_write().await?;
        let wanted: Vec<Wanted<'_>> = asks
            .iter()
            .map(|a| Wanted {
                presented: &a.presented,
                spki_sha256: &a.spki_sha256,
                since: a.since,
            })
            .collect();
        let mut read = read_facts(&mut tx, &wanted).await?;
        drop(wanted);
        let mut results = Vec::with_capacity(asks.len());
        let mut granted = Vec::new();
        for ask in asks {
            let facts = match facts_of(&read, &ask) {
                Some(f) => f,
                None => {
                    results.push(Err(E::from(StoreError::NotFound)));
                    continue;
                }
            };
            match (ask.decide)(&facts) {
                Ok((plan, kept)) => {
                    // What the next items of this call see.
                    let device_id = facts.device.id;
                    read.recent
                        .entry(device_id)
                        .or_default()
                        .push(plan.audit.at);
                    if plan.bind_key {
                        read.keys.insert(
                            plan.cert.spki_sha256,
                            KeyBinding {
                                device_id,
                                compromised: false,
                            },
                        );
                    }
                    results.push(Ok((row_of(&plan, &facts.device), kept)));
                    granted.push((plan, facts.device));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        write_granted(&mut tx, &granted).await?;
        let events: Vec<NewAppEvent> = granted
            .iter()
            .map(|(plan, device)| NewAppEvent {
                kind: AppEventKind::CertificateIssued,
                at: plan.audit.at,
                client_id: Some(device.client_id.clone()),
                model: device.model.clone(),
                data: serde_json::json!({
                    "serial": plan.cert.serial,
                    "not_after": crate::timefmt::rfc3339(plan.cert.not_after),
                    "kind": "ldevid",
                }),
            })
            .collect();
        let appended = append_app_events(&mut tx, &events).await?;
        tx.commit().await?;
        self.app_events_committed(appended);
        Ok(results)
    }
}

/// What an item's rules read about: an [`LdevidAsk`] without its rules.
struct Wanted<'a> {
    presented: &'a str,
    spki_sha256: &'a [u8; 32],
    since: i64,
}

/// Reads (and on PostgreSQL locks) what the rules of `asks` need, one statement per kind.
async fn read_facts(tx: &mut Tx, asks: &[Wanted<'_>]) -> Result<Read, StoreError> {
    let dialect = tx.dialect();
    let serials: Vec<Arg<'_>> = asks.iter().map(|a| Arg::from(a.presented)).collect();
    let cert_device: HashMap<String, i64> =
        Stmt::new("SELECT serial, device_id FROM certificates WHERE serial IN (")
            .list(dialect, &serials)
            .push(")")
            .fetch_all::<(String, i64)>(&mut *tx)
            .await?
            .into_iter()
            .collect();
    let mut ids: Vec<i64> = cert_device.values().copied().collect();
    ids.sort_unstable();
    ids.dedup();
    let mut read = Read {
        cert_device,
        devices: HashMap::new(),
        presented: HashMap::new(),
        models: HashMap::new(),
        recent: HashMap::new(),
        keys: HashMap::new(),
    };
    if ids.is_empty() {
        return Ok(read);
    }
    let id_args: Vec<Arg<'_>> = ids.iter().map(|i| Arg::from(*i)).collect();
    let devices: Vec<DeviceRow> = Stmt::new("SELECT * FROM devices WHERE id IN (")
        .list(dialect, &id_args)
        .push(") ORDER BY id")
        .push(dialect.for_update())
        .fetch_all(&mut *tx)
        .await?;
    read.devices = devices.into_iter().map(|d| (d.id, d)).collect();
    let presented: Vec<CertRow> = Stmt::new(format!(
        "SELECT {CERT_COLUMNS} FROM certificates c JOIN devices d ON d.id = c.device_id \
         WHERE c.serial IN ("
    ))
    .list(dialect, &serials)
    .push(")")
    .fetch_all(&mut *tx)
    .await?;
    read.presented = presented
        .into_iter()
        .map(|c| (c.serial.clone(), c))
        .collect();
    let mut names: Vec<&str> = read
        .devices
        .values()
        .filter_map(|d| d.model.as_deref())
        .collect();
    names.sort_unstable();
    names.dedup();
    if !names.is_empty() {
        let name_args: Vec<Arg<'_>> = names.iter().map(|n| Arg::from(*n)).collect();
        let models: Vec<ModelRow> = Stmt::new("SELECT * FROM models WHERE name IN (")
            .list(dialect, &name_args)
            .push(")")
            .fetch_all(&mut *tx)
            .await?;
        read.models = models.into_iter().map(|m| (m.name.clone(), m)).collect();
    }
    let since = asks.iter().map(|a| a.since).min().unwrap_or(0);
    let recent: Vec<(i64, i64)> = Stmt::new(
        "SELECT device_id, created_at FROM certificates \
         WHERE profile = 'ldevid' AND device_id IN (",
    )
    .list(dialect, &id_args)
    .push(") AND created_at >= ")
    .list(dialect, &[Arg::from(since)])
    .fetch_all(&mut *tx)
    .await?;
    for (device_id, at) in recent {
        read.recent.entry(device_id).or_default().push(at);
    }
    let spkis: Vec<Arg<'_>> = asks
        .iter()
        .map(|a| Arg::from(a.spki_sha256.as_slice()))
        .collect();
    let keys: Vec<(Vec<u8>, i64, Option<i64>)> = Stmt::new(
        "SELECT spki_sha256, device_id, compromised_at FROM device_keys WHERE spki_sha256 IN (",
    )
    .list(dialect, &spkis)
    .push(")")
    .fetch_all(&mut *tx)
    .await?;
    for (spki, device_id, compromised_at) in keys {
        if let Ok(spki) = <[u8; 32]>::try_from(spki.as_slice()) {
            read.keys.insert(
                spki,
                KeyBinding {
                    device_id,
                    compromised: compromised_at.is_some(),
                },
            );
        }
    }
    Ok(read)
}

/// The facts of one item, as of the reads and the items granted before it; None when its
/// presented certificate is unknown.
fn facts_of<E, T>(read: &Read, ask: &LdevidAsk<E, T>) -> Option<LdevidFacts> {
    let device_id = read.cert_device.get(&ask.presented)?;
    let device = read.devices.get(device_id)?.clone();
    let presented = read.presented.get(&ask.presented)?.clone();
    let model = device
        .model
        .as_ref()
        .and_then(|m| read.models.get(m))
        .cloned();
    let recent = read
        .recent
        .get(device_id)
        .map(|v| v.iter().copied().filter(|t| *t >= ask.since).collect())
        .unwrap_or_default();
    Some(LdevidFacts {
        device,
        presented,
        model,
        recent,
        key: read.keys.get(&ask.spki_sha256).copied(),
    })
}

/// The row a granted certificate is stored as (status, revocation: the columns' defaults).
fn row_of(plan: &LdevidPlan, device: &DeviceRow) -> CertRow {
    let c = &plan.cert;
    CertRow {
        serial: c.serial.clone(),
        client_id: device.client_id.clone(),
        fingerprint: c.fingerprint.clone(),
        der: c.der.clone(),
        not_before: c.not_before,
        not_after: c.not_after,
        status: CertState::Good,
        profile: c.profile.clone(),
        csr_sha256: c.csr_sha256.clone(),
        revoked_at: None,
        reason: None,
        created_at: plan.audit.at,
    }
}

/// Writes the granted certificates, their keys' bindings (when new) and their audit rows, a
/// statement per kind (per chunk of the bind limit). A key bound to another device meanwhile
/// (another process) makes this fail on the primary key: nothing is issued.
async fn write_granted(tx: &mut Tx, granted: &[(LdevidPlan, DeviceRow)]) -> Result<(), StoreError> {
    if granted.is_empty() {
        return Ok(());
    }
    let dialect = tx.dialect();
    let certs: Vec<[Arg<'_>; 10]> = granted
        .iter()
        .map(|(p, d)| {
            let c = &p.cert;
            [
                Arg::from(&c.serial),
                Arg::from(d.id),
                Arg::from(&c.fingerprint),
                Arg::from(&c.der),
                Arg::from(c.not_before),
                Arg::from(c.not_after),
                Arg::from(&c.profile),
                Arg::from(&c.csr_sha256),
                Arg::from(c.spki_sha256.as_slice()),
                Arg::from(p.audit.at),
            ]
        })
        .collect();
    for chunk in dialect.chunks(&certs) {
        Stmt::new(
            "INSERT INTO certificates (serial, device_id, fingerprint, der, not_before, \
             not_after, profile, csr_sha256, spki_sha256, created_at) VALUES ",
        )
        .values(dialect, chunk)
        .execute(&mut *tx)
        .await?;
    }
    let keys: Vec<[Arg<'_>; 2]> = granted
        .iter()
        .filter(|(p, _)| p.bind_key)
        .map(|(p, d)| [Arg::from(p.cert.spki_sha256.as_slice()), Arg::from(d.id)])
        .collect();
    for chunk in dialect.chunks(&keys) {
        Stmt::new("INSERT INTO device_keys (spki_sha256, device_id) VALUES ")
            .values(dialect, chunk)
            .execute(&mut *tx)
            .await?;
    }
    let audits: Vec<[Arg<'_>; 7]> = granted
        .iter()
        .map(|(p, _)| {
            let a = &p.audit;
            [
                Arg::from(a.at),
                Arg::from(&a.actor.id),
                Arg::from(&a.actor.name),
                Arg::from(&a.action),
                Arg::from(&a.target),
                Arg::from(&a.outcome),
                Arg::from(&a.detail),
            ]
        })
        .collect();
    for chunk in dialect.chunks(&audits) {
        Stmt::new(
            "INSERT INTO audit (at, actor_id, actor_name, action, target, outcome, detail) \
             VALUES ",
        )
        .values(dialect, chunk)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}
