//! Sensors behind gateways: which gateway relays which sensors (the rules of attachment,
//! [`plan_attachment`], which the store asks inside its transaction), the keys a broker gets
//! for a gateway's sensors (DEVID-S1: `K_mac` and `K_enc` derived from `K`, never `K`), and
//! what brokers report of sensors' readings.

use std::collections::{BTreeMap, HashMap, HashSet};

use base64::Engine as _;
use devid_core::api::{
    AttachedSensor, DeviceKind, DeviceState, GatewaySensors, SensorKeyEntry, SensorKeys,
    SensorRekeyed, SensorReport, MAX_SENSORS_PER_GATEWAY, MAX_SENSOR_REPORTS,
};
use devid_core::clientid;

use super::audit::Audit;
use super::{devices, policy, Ctx, DomainError};
use crate::ca::SensorKek;
use crate::store::{DeviceRow, SensorReading, SensorRow, Store};
use crate::timefmt;

/// Longest refusal reason name a report may carry.
const MAX_REASON_LEN: usize = 64;

/// A device named in an attachment, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub client_id: String,
    pub kind: DeviceKind,
    pub status: DeviceState,
    /// Its gateway now.
    pub gateway: Option<String>,
}

/// What an attachment changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttachmentPlan {
    /// Sensors to attach to the gateway (new to it, possibly moved from another).
    pub attach: Vec<String>,
    /// The gateway's sensors not in the new set, to detach.
    pub detach: Vec<String>,
    /// Devices whose feed gets an `updated` entry, in order: the gateway when its set changed,
    /// each other gateway that loses a sensor, each sensor attached, moved or detached.
    pub updated: Vec<String>,
}

/// The cheap checks of a gateway's new set, before any look-up: ClientIDs by core's rule, no
/// repeats, at most [`MAX_SENSORS_PER_GATEWAY`].
pub fn check_set(sensors: &[String]) -> Result<(), DomainError> {
    if sensors.len() > MAX_SENSORS_PER_GATEWAY {
        return Err(DomainError::invalid_field(
            "sensors",
            format!(
                "a gateway has at most {MAX_SENSORS_PER_GATEWAY} sensors; the list has {}",
                sensors.len()
            ),
        ));
    }
    let mut seen = HashSet::with_capacity(sensors.len());
    for s in sensors {
        clientid::validate(s)
            .map_err(|e| DomainError::invalid_field("sensors", format!("sensor {s:?}: {e}")))?;
        if !seen.insert(s.as_str()) {
            return Err(DomainError::invalid_field(
                "sensors",
                format!("sensor {s} appears twice"),
            ));
        }
    }
    Ok(())
}

/// What an attachment call asks for: a gateway's whole new set (`PUT`), or sensors added to or
/// taken away from the set it has when the change is made (`POST .../attach`, `.../detach`),
/// which the store reads under the attachments lock, so concurrent calls lose nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachmentChange<'a> {
    Set(&'a [String]),
    Attach(&'a [String]),
    Detach(&'a [String]),
}

impl AttachmentChange<'_> {
    /// The gateway's new set, given its set now. Attaching a sensor it has, or detaching one it
    /// does not have, changes nothing; the new set passes [`check_set`].
    pub fn wanted(&self, current: &[String]) -> Result<Vec<String>, DomainError> {
        let wanted = match *self {
            AttachmentChange::Set(set) => set.to_vec(),
            AttachmentChange::Attach(add) => {
                let mut set = current.to_vec();
                set.extend(add.iter().filter(|s| !current.contains(s)).cloned());
                set
            }
            AttachmentChange::Detach(gone) => current
                .iter()
                .filter(|s| !gone.contains(s))
                .cloned()
                .collect(),
        };
        check_set(&wanted)?;
        Ok(wanted)
    }

    /// The ClientIDs the call names (checked before any look-up).
    fn named(&self) -> &[String] {
        match *self {
            AttachmentChange::Set(s)
            | AttachmentChange::Attach(s)
            | AttachmentChange::Detach(s) => s,
        }
    }
}

/// The rules of attachment: the gateway is a device (kind `device`) that is not revoked; every
/// named ClientID is a registered sensor that is not revoked; a sensor has one gateway at a
/// time, so one attached elsewhere moves here. `found` holds what the store found of `wanted`;
/// `current` is the gateway's set now. An error changes nothing.
pub fn plan_attachment(
    gateway: &DeviceRow,
    wanted: &[String],
    found: &[Named],
    current: &[String],
) -> Result<AttachmentPlan, DomainError> {
    if gateway.kind != DeviceKind::Device {
        return Err(DomainError::invalid(format!(
            "{} is a sensor; a gateway is a device that connects to the broker itself",
            gateway.client_id
        )));
    }
    if gateway.status == DeviceState::Revoked {
        return Err(DomainError::invalid(format!(
            "gateway {} is revoked",
            gateway.client_id
        )));
    }
    let by_id: HashMap<&str, &Named> = found.iter().map(|n| (n.client_id.as_str(), n)).collect();
    let mut plan = AttachmentPlan::default();
    let mut other_gateways = Vec::new();
    for s in wanted {
        let Some(n) = by_id.get(s.as_str()) else {
            return Err(DomainError::invalid_field(
                "sensors",
                format!("no sensor has ClientID {s}"),
            ));
        };
        if n.kind != DeviceKind::Sensor {
            return Err(DomainError::invalid_field(
                "sensors",
                format!(
                    "{s} is a device, not a sensor (register sensors with \"kind\": \"sensor\")"
                ),
            ));
        }
        if n.status == DeviceState::Revoked {
            return Err(DomainError::invalid_field(
                "sensors",
                format!("sensor {s} is revoked"),
            ));
        }
        match n.gateway.as_deref() {
            Some(g) if g == gateway.client_id => {}
            Some(g) => {
                if !other_gateways.iter().any(|o: &String| o == g) {
                    other_gateways.push(g.to_string());
                }
                plan.attach.push(s.clone());
            }
            None => plan.attach.push(s.clone()),
        }
    }
    let keep: HashSet<&str> = wanted.iter().map(String::as_str).collect();
    plan.detach = current
        .iter()
        .filter(|c| !keep.contains(c.as_str()))
        .cloned()
        .collect();
    if !plan.attach.is_empty() || !plan.detach.is_empty() {
        plan.updated.push(gateway.client_id.clone());
    }
    plan.updated.extend(other_gateways);
    plan.updated.extend(plan.attach.iter().cloned());
    plan.updated.extend(plan.detach.iter().cloned());
    Ok(plan)
}

/// `PUT /v1/devices/{gateway}/sensors` and `POST .../sensors/attach|detach`: changes the
/// gateway's sensors, tells brokers (an `updated` feed entry per device whose attachment
/// changed) and returns the new set.
pub async fn set_sensors(
    ctx: Ctx<'_>,
    audit: &Audit,
    gateway: &str,
    change: AttachmentChange<'_>,
) -> Result<GatewaySensors, DomainError> {
    check_set(change.named())?;
    devices::find(ctx.store, gateway).await?;
    let entries = ctx
        .store
        .set_gateway_sensors(gateway, change, &audit.ok(), timefmt::now())
        .await?;
    for e in &entries {
        ctx.updated(e);
    }
    list(ctx.store, gateway).await
}

/// Whether a device may be given a new sensor key: a sensor that is not revoked.
pub fn check_rekey(device: &DeviceRow) -> Result<(), DomainError> {
    if device.kind != DeviceKind::Sensor {
        return Err(DomainError::invalid(format!(
            "{} is a device, not a sensor: only a sensor has a key to re-key",
            device.client_id
        )));
    }
    if device.status == DeviceState::Revoked {
        return Err(DomainError::invalid(format!(
            "sensor {} is revoked",
            device.client_id
        )));
    }
    Ok(())
}

/// `POST /v1/devices/{sensor}/rekey`: a new key K for the sensor, sealed under the KEK in place
/// of the old one (the store checks [`check_rekey`] under the row lock and appends an
/// `updated` feed entry, on which brokers refetch the keys); K is returned this once.
pub async fn rekey(
    ctx: Ctx<'_>,
    audit: &Audit,
    kek: &SensorKek,
    sensor: &str,
) -> Result<SensorRekeyed, DomainError> {
    let found = devices::find(ctx.store, sensor).await?;
    check_rekey(&found.device)?;
    check_kek(ctx.store, kek).await?;
    let client_id = found.device.client_id;
    let rng = ring::rand::SystemRandom::new();
    let mut k = zeroize::Zeroizing::new([0u8; 32]);
    ring::rand::SecureRandom::fill(&rng, k.as_mut())
        .map_err(|_| DomainError::internal("rng failure"))?;
    let sealed = kek.seal(&client_id, &k, &rng)?;
    let entry = ctx
        .store
        .rekey_sensor(&client_id, &sealed, &audit.ok(), timefmt::now())
        .await?;
    ctx.updated(&entry);
    Ok(SensorRekeyed {
        client_id,
        sensor_key: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(k.as_ref()),
    })
}

/// A gateway's sensors.
pub async fn list(store: &Store, gateway: &str) -> Result<GatewaySensors, DomainError> {
    let gw = devices::find(store, gateway).await?;
    let rows = store.gateway_sensors(&gw.device.client_id).await?;
    Ok(GatewaySensors {
        gateway: gw.device.client_id,
        sensors: rows
            .into_iter()
            .map(|r| AttachedSensor {
                client_id: r.client_id,
                status: r.status,
                last_seen: timefmt::rfc3339_opt(r.last_seen),
                accepted: u64::try_from(r.accepted).unwrap_or(0),
                refused: r
                    .refused
                    .into_iter()
                    .map(|(k, n)| (k, u64::try_from(n).unwrap_or(0)))
                    .collect(),
                seq_floor: r.seq_floor,
            })
            .collect(),
    })
}

/// `GET /v1/devices/{gateway}/sensors/keys` (brokers): each attached sensor's DEVID-S1 keys
/// `K_mac` and `K_enc` (derived from `K`, which never leaves the service), its publish filters
/// and seq floor.
pub async fn keys(
    store: &Store,
    kek: &SensorKek,
    gateway: &str,
) -> Result<SensorKeys, DomainError> {
    let gw = devices::find(store, gateway).await?;
    check_kek(store, kek).await?;
    let rows = store.gateway_sensors(&gw.device.client_id).await?;
    let b64 = |k: &[u8; 32]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(k);
    let sensors = rows
        .into_iter()
        .map(|r: SensorRow| {
            let k = kek
                .open(&r.client_id, &r.sealed_key)
                .map_err(|e| DomainError::internal(format!("sensor {}: {e}", r.client_id)))?;
            let derived = devid_sensor::derive(&k, r.client_id.as_bytes()).map_err(|e| {
                DomainError::internal(format!("sensor {}: derive: {e:?}", r.client_id))
            })?;
            let topics =
                policy::topics_of(r.topic_policy.as_deref(), r.model_topic_policy.as_deref())?;
            Ok(SensorKeyEntry {
                k_mac: b64(&derived.mac),
                k_enc: b64(&derived.enc),
                status: r.status,
                publish: topics.publish,
                seq_floor: r.seq_floor,
                client_id: r.client_id,
            })
        })
        .collect::<Result<Vec<_>, DomainError>>()?;
    Ok(SensorKeys {
        gateway: gw.device.client_id,
        sensors,
    })
}

/// Checks, once per process, that the database's sensor keys are sealed under this process's
/// KEK (recording its check value when the database has none): a process of a scale-out with
/// another KEK would seal keys the others cannot open.
pub async fn check_kek(store: &Store, kek: &SensorKek) -> Result<(), DomainError> {
    if kek.matched() {
        return Ok(());
    }
    match store
        .check_sensor_kek(&kek.check_value(), timefmt::now())
        .await
    {
        Ok(()) => {
            kek.set_matched();
            Ok(())
        }
        Err(crate::store::StoreError::KekMismatch) => Err(DomainError::internal(format!(
            "this process's sensor key-encryption key (<data-dir>/ca/{}) is not the one the \
             database's sensor keys are sealed under: copy it from the data directory of a \
             process already serving this database, as the CA files are",
            crate::ca::sensor_kek::SENSOR_KEK_FILE
        ))),
        Err(e) => Err(e.into()),
    }
}

/// What a batch of sensor reports adds up to, per sensor: the highest seq reported, readings
/// accepted and refused (by reason), the newest accepted reading. Reports are checked first:
/// a bad one refuses the batch, naming its index.
pub fn fold_reports(reports: &[SensorReport]) -> Result<Vec<SensorReading>, DomainError> {
    if reports.len() > MAX_SENSOR_REPORTS {
        return Err(DomainError::invalid_field(
            "sensors",
            format!("at most {MAX_SENSOR_REPORTS} sensor reports per call"),
        ));
    }
    let mut per: BTreeMap<&str, SensorReading> = BTreeMap::new();
    for (i, r) in reports.iter().enumerate() {
        let bad = |detail: String| DomainError::invalid_field("sensors", detail).at_index(i);
        for id in [&r.client_id, &r.gateway] {
            clientid::validate(id).map_err(|e| bad(format!("ClientID {id:?}: {e}")))?;
        }
        let at =
            match &r.last_accepted_at {
                Some(t) => Some(timefmt::parse_rfc3339(t).ok_or_else(|| {
                    bad(format!("last_accepted_at {t:?} is not an RFC 3339 time"))
                })?),
                None => None,
            };
        for reason in r.refused.keys() {
            let ok = !reason.is_empty()
                && reason.len() <= MAX_REASON_LEN
                && reason
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !ok {
                return Err(bad(format!(
                    "refusal reason {reason:?} is not a snake_case name of at most \
                     {MAX_REASON_LEN} characters"
                )));
            }
        }
        let to_i64 = |n: u64| i64::try_from(n).map_err(|_| bad(format!("count {n} is too large")));
        let s = per
            .entry(r.client_id.as_str())
            .or_insert_with(|| SensorReading {
                client_id: r.client_id.clone(),
                ..SensorReading::default()
            });
        s.highest_seq = s.highest_seq.max(r.highest_seq);
        s.accepted = s.accepted.saturating_add(to_i64(r.accepted)?);
        for (reason, n) in &r.refused {
            let n = to_i64(*n)?;
            *s.refused.entry(reason.clone()).or_default() += n;
        }
        s.last_accepted_at = s.last_accepted_at.max(at);
    }
    Ok(per.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(kind: DeviceKind, status: DeviceState) -> DeviceRow {
        DeviceRow {
            id: 1,
            client_id: "GW".into(),
            hardware_serial: "HW".into(),
            model: None,
            metadata: None,
            status,
            kind,
            gateway: None,
            created_at: 0,
            revoked_at: None,
            reason: None,
            last_seen: None,
            last_address: None,
        }
    }

    fn named(id: &str, kind: DeviceKind, status: DeviceState, gw: Option<&str>) -> Named {
        Named {
            client_id: id.into(),
            kind,
            status,
            gateway: gw.map(str::to_string),
        }
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_attachment_moves_sensors_and_detaches_the_rest() {
        use DeviceKind::Sensor;
        use DeviceState::{Active, Suspended};
        let found = vec![
            named("S1", Sensor, Active, Some("GW")),
            named("S2", Sensor, Suspended, Some("G2")),
            named("S3", Sensor, Active, None),
        ];
        let plan = plan_attachment(
            &gateway(DeviceKind::Device, Active),
            &ids(&["S1", "S2", "S3"]),
            &found,
            &ids(&["S1", "S9"]),
        )
        .expect("plan");
        assert_eq!(plan.attach, ids(&["S2", "S3"]));
        assert_eq!(plan.detach, ids(&["S9"]));
        assert_eq!(plan.updated, ids(&["GW", "G2", "S2", "S3", "S9"]));
        // The same set again changes nothing and tells nobody.
        let again = plan_attachment(
            &gateway(DeviceKind::Device, Active),
            &ids(&["S1"]),
            &found[..1],
            &ids(&["S1"]),
        )
        .expect("plan");
        assert_eq!(again, AttachmentPlan::default());
    }

    #[test]
    fn fail_attachments_name_what_is_wrong() {
        use DeviceKind::{Device, Sensor};
        use DeviceState::{Active, Revoked};
        let ok_gw = gateway(Device, Active);
        let cases: Vec<(DeviceRow, Vec<Named>, &str)> = vec![
            (
                gateway(Sensor, Active),
                vec![named("S1", Sensor, Active, None)],
                "is a sensor",
            ),
            (
                gateway(Device, Revoked),
                vec![named("S1", Sensor, Active, None)],
                "is revoked",
            ),
            (ok_gw.clone(), vec![], "no sensor has ClientID S1"),
            (
                ok_gw.clone(),
                vec![named("S1", Device, Active, None)],
                "not a sensor",
            ),
            (
                ok_gw,
                vec![named("S1", Sensor, Revoked, None)],
                "sensor S1 is revoked",
            ),
        ];
        for (gw, found, want) in cases {
            let e = plan_attachment(&gw, &ids(&["S1"]), &found, &[]).expect_err(want);
            assert!(e.to_string().contains(want), "{e} / {want}");
        }
    }

    #[test]
    fn attach_and_detach_apply_to_the_set_now() {
        let id = |n: u8| clientid::generate("", &[n; 10]).expect("id");
        let (a, b, c, z) = (id(1), id(2), id(3), id(9));
        let now = vec![a.clone(), b.clone()];
        let add = vec![b.clone(), c.clone()];
        assert_eq!(
            AttachmentChange::Attach(&add).wanted(&now).expect("ok"),
            vec![a.clone(), b.clone(), c.clone()]
        );
        let gone = vec![a.clone(), z];
        assert_eq!(
            AttachmentChange::Detach(&gone).wanted(&now).expect("ok"),
            vec![b.clone()]
        );
        assert_eq!(AttachmentChange::Set(&add).wanted(&now).expect("ok"), add);
        let many: Vec<String> = (0..MAX_SENSORS_PER_GATEWAY)
            .map(|i| {
                let mut r = [0u8; 10];
                r[..8].copy_from_slice(&(i as u64 + 100).to_be_bytes());
                clientid::generate("", &r).expect("id")
            })
            .collect();
        let e = AttachmentChange::Attach(&[c])
            .wanted(&many)
            .expect_err("too many");
        assert!(e.to_string().contains("at most"), "{e}");
    }

    #[test]
    fn a_set_is_checked_before_any_look_up() {
        assert!(check_set(&[]).is_ok());
        assert!(check_set(&ids(&["not a client id"])).is_err());
        let id = clientid::generate("", &[1; 10]).expect("id");
        assert!(check_set(std::slice::from_ref(&id)).is_ok());
        assert!(check_set(&[id.clone(), id]).is_err());
    }

    fn report(
        id: &str,
        seq: u64,
        accepted: u64,
        refused: &[(&str, u64)],
        at: Option<&str>,
    ) -> SensorReport {
        SensorReport {
            client_id: id.into(),
            gateway: id.into(),
            highest_seq: seq,
            accepted,
            refused: refused.iter().map(|(r, n)| (r.to_string(), *n)).collect(),
            last_accepted_at: at.map(str::to_string),
        }
    }

    #[test]
    fn reports_fold_per_sensor_and_bad_ones_refuse_the_batch() {
        let a = clientid::generate("", &[1; 10]).expect("id");
        let b = clientid::generate("", &[2; 10]).expect("id");
        let folded = fold_reports(&[
            report(&a, 10, 3, &[("bad_mac", 1)], Some("2026-12-07T13:00:00Z")),
            report(&b, u64::MAX, 0, &[], None),
            report(
                &a,
                7,
                2,
                &[("bad_mac", 2), ("replayed", 1)],
                Some("2026-12-07T12:00:00Z"),
            ),
        ])
        .expect("folded");
        let sa = folded.iter().find(|s| s.client_id == a).expect("a");
        assert_eq!((sa.highest_seq, sa.accepted), (10, 5));
        assert_eq!(sa.refused.get("bad_mac"), Some(&3));
        assert_eq!(sa.refused.get("replayed"), Some(&1));
        assert_eq!(
            sa.last_accepted_at,
            timefmt::parse_rfc3339("2026-12-07T13:00:00Z")
        );
        let sb = folded.iter().find(|s| s.client_id == b).expect("b");
        assert_eq!(sb.highest_seq, u64::MAX);
        for bad in [
            report("bad id", 1, 0, &[], None),
            report(&a, 1, 0, &[("Bad-Reason", 1)], None),
            report(&a, 1, 0, &[], Some("yesterday")),
            report(&a, 1, u64::MAX, &[], None),
        ] {
            let e = fold_reports(&[report(&b, 1, 0, &[], None), bad]).expect_err("refused");
            assert!(
                matches!(e, DomainError::Invalid { index: Some(1), .. }),
                "{e:?}"
            );
        }
    }
}
