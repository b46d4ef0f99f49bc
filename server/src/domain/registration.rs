//! The rules of registration: what an item must be before it is signed, what a batch may not
//! repeat, whether an item is new, a replay or a conflict given what is stored ([`classify`],
//! which the store asks inside its registration transaction), and what a refused registration
//! means to the caller.

use std::collections::{HashMap, HashSet};

use devid_core::api::{DeviceKind, RegisterRequest};
use devid_core::{clientid, HardwareSerial, ModelName};
use ring::rand::SecureRandom;

use super::DomainError;
use crate::auth::Caller;
use crate::store::{NewDevice, RegConflict, RegMode};

/// Largest metadata object, serialized.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// An item that passed the cheap checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub hardware_serial: String,
    pub model: Option<String>,
    pub client_id: String,
    /// True when the ClientID was made here (a collision may be retried with a fresh one).
    pub client_id_generated: bool,
    pub metadata: Option<String>,
    /// What the device is registered with.
    pub with: Credentials,
}

/// How an item's credential is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A device whose key pair was made elsewhere: its CSR (PEM), to check and sign.
    Csr(String),
    /// A device whose key pair the service makes (returned once).
    GenerateKey,
    /// A sensor: the service makes its key K (returned once), no certificate.
    SensorKey,
}

/// The cheap, synchronous checks of one item, before its CSR is read: the hardware serial, the
/// model (and whether the caller may register it), metadata, csr or generate_key for a device
/// and neither for a sensor, the ClientID given or one made with the model's prefix (from
/// `prefixes`, else none).
pub fn check(
    caller: &Caller,
    req: RegisterRequest,
    prefixes: &HashMap<String, String>,
    now: i64,
    rng: &dyn SecureRandom,
) -> Result<Checked, DomainError> {
    let serial = HardwareSerial::parse(&req.hardware_serial).map_err(|e| {
        DomainError::invalid_field("hardware_serial", format!("hardware_serial {e}"))
    })?;
    if let Some(model) = &req.model {
        ModelName::parse(model).map_err(|e| DomainError::invalid_field("model", e.to_string()))?;
    }
    caller.may_register_model(req.model.as_deref())?;
    let metadata = match req.metadata {
        None | Some(serde_json::Value::Null) => None,
        Some(v @ serde_json::Value::Object(_)) => {
            let text = v.to_string();
            if text.len() > MAX_METADATA_BYTES {
                return Err(DomainError::invalid_field(
                    "metadata",
                    format!("metadata is larger than {MAX_METADATA_BYTES} bytes"),
                ));
            }
            Some(text)
        }
        Some(_) => {
            return Err(DomainError::invalid_field(
                "metadata",
                "metadata must be a JSON object",
            ))
        }
    };
    let with = match (req.kind, req.csr, req.generate_key) {
        (DeviceKind::Sensor, None, false) => Credentials::SensorKey,
        (DeviceKind::Sensor, _, _) => {
            return Err(DomainError::invalid(
                "a sensor has no certificate: give neither csr nor generate_key (its key is \
                 made by the service and returned once as sensor_key)",
            ))
        }
        (DeviceKind::Device, Some(_), true) => {
            return Err(DomainError::invalid(
                "give either csr or generate_key, not both",
            ))
        }
        (DeviceKind::Device, None, false) => {
            return Err(DomainError::invalid(
                "give a csr (PEM) or \"generate_key\": true",
            ))
        }
        (DeviceKind::Device, Some(csr), false) => Credentials::Csr(csr),
        (DeviceKind::Device, None, true) => Credentials::GenerateKey,
    };
    let (client_id, generated) = match req.client_id {
        Some(id) => {
            clientid::validate(&id)
                .map_err(|e| DomainError::invalid_field("client_id", format!("client_id: {e}")))?;
            (id, false)
        }
        None => (
            new_client_id(req.model.as_deref(), prefixes, now, rng)?,
            true,
        ),
    };
    Ok(Checked {
        hardware_serial: serial.into_string(),
        model: req.model,
        client_id,
        client_id_generated: generated,
        metadata,
        with,
    })
}

/// A ClientID made here for a device of `model`: the model's prefix (from `prefixes`, else
/// none), then [`clientid::body`] of `now` and fresh random bits.
pub fn new_client_id(
    model: Option<&str>,
    prefixes: &HashMap<String, String>,
    now: i64,
    rng: &dyn SecureRandom,
) -> Result<String, DomainError> {
    let prefix = model
        .and_then(|m| prefixes.get(m))
        .map_or("", String::as_str);
    let mut random = [0u8; clientid::RANDOM_LEN];
    rng.fill(&mut random)
        .map_err(|_| DomainError::internal("rng failure"))?;
    let now = u64::try_from(now).unwrap_or(0);
    clientid::generate(prefix, &clientid::body(now, &random))
        .map_err(|e| DomainError::internal(format!("client id generation: {e}")))
}

/// [`check`] for every item of a batch; an item may not repeat an earlier item's hardware
/// serial or ClientID. A ClientID made here that repeats an earlier one (48 random bits within
/// one second) is made again. Errors name the item.
pub fn check_batch(
    caller: &Caller,
    items: Vec<RegisterRequest>,
    prefixes: &HashMap<String, String>,
    now: i64,
    rng: &dyn SecureRandom,
) -> Result<Vec<Checked>, DomainError> {
    let mut serials = HashMap::with_capacity(items.len());
    let mut ids = HashMap::with_capacity(items.len());
    let mut checked = Vec::with_capacity(items.len());
    for (index, req) in items.into_iter().enumerate() {
        let mut c = check(caller, req, prefixes, now, rng).map_err(|e| e.at_index(index))?;
        while c.client_id_generated && ids.contains_key(&c.client_id) {
            c.client_id = new_client_id(c.model.as_deref(), prefixes, now, rng)?;
        }
        if let Some(first) = serials.insert(c.hardware_serial.clone(), index) {
            return Err(DomainError::invalid_field(
                "hardware_serial",
                format!(
                    "hardware_serial {:?} also appears at item {first}",
                    c.hardware_serial
                ),
            )
            .at_index(index));
        }
        if let Some(first) = ids.insert(c.client_id.clone(), index) {
            return Err(DomainError::invalid_field(
                "client_id",
                format!("client_id {:?} also appears at item {first}", c.client_id),
            )
            .at_index(index));
        }
        checked.push(c);
    }
    Ok(checked)
}

/// One key pair, one device: two items of a batch may not share a key.
pub fn distinct_keys(devices: &[NewDevice]) -> Result<(), DomainError> {
    let mut spkis = HashMap::with_capacity(devices.len());
    for (index, d) in devices.iter().enumerate() {
        let Some(cert) = d.cert() else { continue };
        if let Some(first) = spkis.insert(cert.spki_sha256, index) {
            return Err(DomainError::invalid_field(
                "csr",
                format!(
                    "the public key also appears at item {first}; every device needs a key pair \
                     of its own"
                ),
            )
            .at_index(index));
        }
    }
    Ok(())
}

/// A conflict naming the device that holds what was asked for, or an invalid request for a key
/// revoked as compromised (no request with that key can ever succeed).
pub fn refusal(c: &RegConflict) -> DomainError {
    match c {
        RegConflict::SerialTaken { holder, differs } => DomainError::conflict(match *differs {
            "csr" => format!(
                "hardware_serial is already registered to device {holder} with a different CSR"
            ),
            "generate_key" => format!(
                "hardware_serial is already registered to device {holder}; a generate_key \
                 request makes a new key, so it never repeats a registration"
            ),
            "kind" => format!(
                "hardware_serial is already registered to {holder}, which is of the other kind \
                 (a device with a certificate, or a sensor)"
            ),
            field => format!(
                "hardware_serial is already registered to device {holder} with another \
                 {field}; repeating a registration means repeating the whole request"
            ),
        }),
        RegConflict::ClientIdTaken => DomainError::conflict("client_id belongs to another device"),
        RegConflict::KeyTaken { holder } => DomainError::conflict(format!(
            "the public key belongs to device {holder}; every device needs a key pair of its own"
        )),
        RegConflict::KeyCompromised => DomainError::invalid_field(
            "csr",
            "the public key was revoked for keyCompromise and is never certified again",
        ),
    }
}

// ---- replay or conflict ------------------------------------------------------------------

/// Where an `Existing` outcome's device comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExistingRef {
    /// Stored before this call: its device id.
    Stored(i64),
    /// Created by an earlier item of this call: that item's index.
    InBatch(usize),
}

/// What the store does with one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Create,
    Existing(ExistingRef),
    Conflict(RegConflict),
}

/// What the database holds for a hardware serial named in a registration call.
#[derive(Debug, Clone)]
pub struct KnownSerial {
    pub device_id: i64,
    pub client_id: String,
    pub model: Option<String>,
    pub metadata: Option<String>,
    pub kind: DeviceKind,
    /// csr_sha256 of the device's current certificate.
    pub csr_sha256: Option<String>,
}

/// What the database holds for a public key named in a registration call.
#[derive(Debug, Clone)]
pub struct KnownKey {
    /// ClientID of the device the key is bound to.
    pub holder: String,
    pub compromised: bool,
}

/// What a registration stored, to compare a repeated request with.
struct Stored<'a> {
    kind: DeviceKind,
    csr_sha256: Option<&'a str>,
    client_id: &'a str,
    model: Option<&'a str>,
    metadata: Option<&'a str>,
}

/// Why `item` is not a replay of the registration that stored `stored`: the first field that
/// differs, or None for a replay. A device with a generated key is never a replay (the key was
/// returned once); a sensor is a replay when kind, model, ClientID and metadata match (its key
/// was returned once too: the replay's answer carries none); a ClientID or metadata the item
/// does not give is not compared; metadata is compared as JSON values.
fn replay_differs(item: &NewDevice, stored: Stored<'_>) -> Option<&'static str> {
    if item.kind() != stored.kind {
        return Some("kind");
    }
    if let Some(cert) = item.cert() {
        let Some(csr) = cert.csr_sha256.as_deref() else {
            return Some("generate_key");
        };
        if stored.csr_sha256 != Some(csr) {
            return Some("csr");
        }
    }
    if item.model.as_deref() != stored.model {
        return Some("model");
    }
    if !item.client_id_generated && item.client_id != stored.client_id {
        return Some("client_id");
    }
    if let Some(given) = item.metadata.as_deref() {
        let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).ok();
        if stored
            .metadata
            .is_none_or(|stored| parse(stored) != parse(given))
        {
            return Some("metadata");
        }
    }
    None
}

/// Applies the registration rules to every item, in order, given what is stored.
/// `AllOrNothing` stops at the first conflict: its item's index and the conflict.
pub fn classify(
    items: &[NewDevice],
    serials: &HashMap<String, KnownSerial>,
    client_ids: &HashSet<String>,
    keys: &HashMap<[u8; 32], KnownKey>,
    mode: RegMode,
) -> Result<Vec<Plan>, (usize, RegConflict)> {
    let mut plans = Vec::with_capacity(items.len());
    // Serial (key) -> index of the item of this call that creates it; ClientIDs taken by it.
    let mut new_serials: HashMap<&str, usize> = HashMap::new();
    let mut new_keys: HashMap<[u8; 32], usize> = HashMap::new();
    let mut new_client_ids: HashSet<&str> = HashSet::new();
    for (index, item) in items.iter().enumerate() {
        // A sensor has no key pair to bind.
        let spki = item.cert().map(|c| c.spki_sha256);
        let plan = if let Some(known) = serials.get(&item.hardware_serial) {
            let stored = Stored {
                kind: known.kind,
                csr_sha256: known.csr_sha256.as_deref(),
                client_id: &known.client_id,
                model: known.model.as_deref(),
                metadata: known.metadata.as_deref(),
            };
            match replay_differs(item, stored) {
                None => Plan::Existing(ExistingRef::Stored(known.device_id)),
                Some(differs) => Plan::Conflict(RegConflict::SerialTaken {
                    holder: known.client_id.clone(),
                    differs,
                }),
            }
        } else if let Some(&first) = new_serials.get(item.hardware_serial.as_str()) {
            let f = &items[first];
            let stored = Stored {
                kind: f.kind(),
                csr_sha256: f.cert().and_then(|c| c.csr_sha256.as_deref()),
                client_id: &f.client_id,
                model: f.model.as_deref(),
                metadata: f.metadata.as_deref(),
            };
            match replay_differs(item, stored) {
                None => Plan::Existing(ExistingRef::InBatch(first)),
                Some(differs) => Plan::Conflict(RegConflict::SerialTaken {
                    holder: f.client_id.clone(),
                    differs,
                }),
            }
        } else if client_ids.contains(&item.client_id)
            || new_client_ids.contains(item.client_id.as_str())
        {
            Plan::Conflict(RegConflict::ClientIdTaken)
        } else if let Some(known) = spki.and_then(|k| keys.get(&k)) {
            Plan::Conflict(if known.compromised {
                RegConflict::KeyCompromised
            } else {
                RegConflict::KeyTaken {
                    holder: known.holder.clone(),
                }
            })
        } else if let Some(&first) = spki.and_then(|k| new_keys.get(&k)) {
            Plan::Conflict(RegConflict::KeyTaken {
                holder: items[first].client_id.clone(),
            })
        } else {
            new_serials.insert(&item.hardware_serial, index);
            if let Some(k) = spki {
                new_keys.insert(k, index);
            }
            new_client_ids.insert(&item.client_id);
            Plan::Create
        };
        if let (Plan::Conflict(conflict), RegMode::AllOrNothing) = (&plan, mode) {
            return Err((index, conflict.clone()));
        }
        plans.push(plan);
    }
    Ok(plans)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Credential, NewCert};
    use devid_core::api::Role;

    const NOW: i64 = 1_796_000_000;

    fn caller(models: Option<Vec<String>>) -> Caller {
        Caller::for_tests(Role::Factory, models)
    }

    fn req(serial: &str, client_id: Option<&str>) -> RegisterRequest {
        serde_json::from_value(serde_json::json!({
            "hardware_serial": serial,
            "client_id": client_id,
            "generate_key": true,
        }))
        .expect("request")
    }

    #[test]
    fn ok_items_get_a_client_id_with_their_models_prefix() {
        let rng = ring::rand::SystemRandom::new();
        let mut r = req("SN-1", None);
        r.model = Some("thermo".into());
        let prefixes = HashMap::from([("thermo".to_string(), "TH".to_string())]);
        let c = check(&caller(None), r, &prefixes, NOW, &rng).expect("checked");
        assert!(c.client_id.starts_with("TH"), "{}", c.client_id);
        assert!(c.client_id_generated);
        assert_eq!(clientid::validate(&c.client_id), Ok(()));
    }

    #[test]
    fn fail_items_name_the_rule() {
        let rng = ring::rand::SystemRandom::new();
        let none = HashMap::new();
        let mut both = req("SN-1", None);
        both.csr = Some("x".into());
        assert_eq!(
            check(&caller(None), both, &none, NOW, &rng),
            Err(DomainError::invalid(
                "give either csr or generate_key, not both"
            ))
        );
        let mut list = req("SN-1", None);
        list.metadata = Some(serde_json::json!([1]));
        assert_eq!(
            check(&caller(None), list, &none, NOW, &rng),
            Err(DomainError::invalid_field(
                "metadata",
                "metadata must be a JSON object"
            ))
        );
        // A factory token limited to a model may not register devices without one.
        assert!(matches!(
            check(
                &caller(Some(vec!["thermo".into()])),
                req("SN-1", None),
                &none,
                NOW,
                &rng
            ),
            Err(DomainError::Forbidden { .. })
        ));
    }

    #[test]
    // ring's fixed-sequence generator is the one way to hand `SecureRandom` chosen bytes.
    #[allow(deprecated)]
    fn a_batch_makes_again_a_client_id_that_repeats_one_it_made() {
        use ring::test::rand::FixedSliceSequenceRandom;
        let (a, b) = ([1u8; clientid::RANDOM_LEN], [2u8; clientid::RANDOM_LEN]);
        let draws: [&[u8]; 3] = [&a, &a, &b];
        let mut rng = FixedSliceSequenceRandom {
            bytes: &draws,
            current: core::cell::UnsafeCell::new(0),
        };
        let mut given = req("SN-3", None);
        given.client_id = Some("given1".into());
        let items = vec![req("SN-1", None), req("SN-2", None), given];
        let checked = check_batch(&caller(None), items, &HashMap::new(), NOW, &rng)
            .expect("no repeat refused");
        let made = |r: &[u8; clientid::RANDOM_LEN]| {
            clientid::generate("", &clientid::body(NOW as u64, r)).expect("id")
        };
        let ids: Vec<&str> = checked.iter().map(|c| c.client_id.as_str()).collect();
        assert_eq!(ids, [made(&a).as_str(), made(&b).as_str(), "given1"]);
        assert!(checked[1].client_id_generated && !checked[2].client_id_generated);
        assert_eq!(*rng.current.get_mut(), 3, "drew again once, for item 1");
    }

    #[test]
    fn fail_a_batch_repeating_a_serial_names_both_items() {
        let rng = ring::rand::SystemRandom::new();
        let items = vec![req("SN-1", None), req("SN-2", None), req("SN-1", None)];
        let e = check_batch(&caller(None), items, &HashMap::new(), NOW, &rng).expect_err("refused");
        assert_eq!(
            e,
            DomainError::Invalid {
                field: Some("hardware_serial"),
                detail: "item 2: hardware_serial \"SN-1\" also appears at item 0".into(),
                index: Some(2),
            }
        );
    }

    /// An item whose key is its own unless `key` names one.
    fn item_with_key(serial: &str, cid: &str, csr: Option<&str>, key: &str) -> NewDevice {
        NewDevice {
            client_id: cid.into(),
            client_id_generated: false,
            hardware_serial: serial.into(),
            model: None,
            metadata: None,
            created_at: 0,
            credential: Credential::Certificate(NewCert {
                serial: format!("s-{serial}-{cid}"),
                fingerprint: format!("f-{serial}-{cid}"),
                der: vec![],
                not_before: 0,
                not_after: 0,
                csr_sha256: csr.map(str::to_string),
                spki_sha256: devid_core::csr::spki_sha256(key.as_bytes()),
                profile: "idevid".into(),
            }),
        }
    }

    fn sensor(serial: &str, cid: &str) -> NewDevice {
        NewDevice {
            client_id: cid.into(),
            client_id_generated: false,
            hardware_serial: serial.into(),
            model: None,
            metadata: None,
            created_at: 0,
            credential: Credential::SensorKey {
                sealed: vec![1, 2, 3],
            },
        }
    }

    #[test]
    fn a_sensor_replays_by_kind_model_client_id_and_metadata_and_never_binds_a_key() {
        let mut stored = HashMap::new();
        for (serial, cid, kind) in [
            ("SS1", "CS1", DeviceKind::Sensor),
            ("SD1", "CD1", DeviceKind::Device),
        ] {
            stored.insert(
                serial.to_string(),
                KnownSerial {
                    device_id: 1,
                    client_id: cid.into(),
                    model: None,
                    metadata: None,
                    kind,
                    csr_sha256: None,
                },
            );
        }
        let client_ids: HashSet<String> = ["CS1".to_string(), "CD1".to_string()].into();
        let mut other_model = sensor("SS1", "CS1");
        other_model.model = Some("m".into());
        let items = vec![
            sensor("SS1", "CS1"),          // 0: replay of a stored sensor
            sensor("SD1", "CD1"),          // 1: the serial is a device's
            item("SS1", "CS1", Some("a")), // 2: a device on a sensor's serial
            other_model,                   // 3: another model
            sensor("SS2", "CS2"),          // 4: created
            sensor("SS3", "CS3"),          // 5: created (no key to collide with item 4's)
            sensor("SS2", "CS2"),          // 6: replay of item 4
        ];
        let plans = classify(
            &items,
            &stored,
            &client_ids,
            &HashMap::new(),
            RegMode::Independent,
        )
        .expect("independent");
        assert_eq!(
            plans,
            vec![
                Plan::Existing(ExistingRef::Stored(1)),
                taken("CD1", "kind"),
                taken("CS1", "kind"),
                taken("CS1", "model"),
                Plan::Create,
                Plan::Create,
                Plan::Existing(ExistingRef::InBatch(4)),
            ]
        );
    }

    #[test]
    fn a_sensor_takes_neither_csr_nor_generate_key() {
        let rng = ring::rand::SystemRandom::new();
        let none = HashMap::new();
        let mut ok = req("SN-1", None);
        ok.generate_key = false;
        ok.kind = DeviceKind::Sensor;
        let c = check(&caller(None), ok.clone(), &none, NOW, &rng).expect("a sensor");
        assert_eq!(c.with, Credentials::SensorKey);
        let mut with_key = ok.clone();
        with_key.generate_key = true;
        let mut with_csr = ok;
        with_csr.csr = Some("x".into());
        for bad in [with_key, with_csr] {
            assert!(matches!(
                check(&caller(None), bad, &none, NOW, &rng),
                Err(DomainError::Invalid { .. })
            ));
        }
    }

    fn item(serial: &str, cid: &str, csr: Option<&str>) -> NewDevice {
        item_with_key(serial, cid, csr, &format!("key-{serial}-{cid}"))
    }

    fn taken(holder: &str, differs: &'static str) -> Plan {
        Plan::Conflict(RegConflict::SerialTaken {
            holder: holder.into(),
            differs,
        })
    }

    #[test]
    fn classify_applies_the_rules_in_order() {
        let mut stored = HashMap::new();
        stored.insert(
            "S1".to_string(),
            KnownSerial {
                device_id: 7,
                client_id: "C7".into(),
                model: None,
                metadata: Some(r#"{"a":1,"b":2}"#.into()),
                kind: DeviceKind::Device,
                csr_sha256: Some("a".into()),
            },
        );
        let client_ids: HashSet<String> = ["C1".to_string(), "C7".to_string()].into();
        let mut keys = HashMap::new();
        keys.insert(
            devid_core::csr::spki_sha256(b"K7"),
            KnownKey {
                holder: "C7".into(),
                compromised: false,
            },
        );
        keys.insert(
            devid_core::csr::spki_sha256(b"KX"),
            KnownKey {
                holder: "C8".into(),
                compromised: true,
            },
        );
        let mut generated = item("S1", "X", Some("a"));
        generated.client_id_generated = true;
        let mut other_model = item("S1", "C7", Some("a"));
        other_model.model = Some("m".into());
        let mut same_metadata = item("S1", "C7", Some("a"));
        same_metadata.metadata = Some(r#"{"b":2,"a":1}"#.into());
        let mut other_metadata = item("S1", "C7", Some("a"));
        other_metadata.metadata = Some(r#"{"a":2}"#.into());
        let items = vec![
            generated,                                   // 0: replay, ClientID generated
            item("S1", "X", Some("a")),                  // 1: names another ClientID
            item("S1", "X", Some("b")),                  // 2: other CSR
            item("S2", "C1", Some("c")),                 // 3: ClientID taken
            item("S3", "C3", None),                      // 4: created
            item("S3", "C4", None),                      // 5: same serial, generated key
            item("S4", "C3", Some("d")),                 // 6: ClientID taken by item 4
            item("S5", "C5", Some("e")),                 // 7: created
            item("S5", "C5", Some("e")),                 // 8: replay of item 7
            other_model,                                 // 9: another model
            same_metadata,                               // 10: the same metadata
            other_metadata,                              // 11: other metadata
            item_with_key("S6", "C6", Some("f"), "K7"),  // 12: key of a stored device
            item_with_key("S7", "C9", Some("g"), "KX"),  // 13: compromised key
            item_with_key("S8", "C10", Some("h"), "K8"), // 14: created
            item_with_key("S9", "C11", Some("i"), "K8"), // 15: key of item 14
        ];
        let plans = classify(&items, &stored, &client_ids, &keys, RegMode::Independent)
            .expect("independent");
        assert_eq!(
            plans,
            vec![
                Plan::Existing(ExistingRef::Stored(7)),
                taken("C7", "client_id"),
                taken("C7", "csr"),
                Plan::Conflict(RegConflict::ClientIdTaken),
                Plan::Create,
                taken("C3", "generate_key"),
                Plan::Conflict(RegConflict::ClientIdTaken),
                Plan::Create,
                Plan::Existing(ExistingRef::InBatch(7)),
                taken("C7", "model"),
                Plan::Existing(ExistingRef::Stored(7)),
                taken("C7", "metadata"),
                Plan::Conflict(RegConflict::KeyTaken {
                    holder: "C7".into()
                }),
                Plan::Conflict(RegConflict::KeyCompromised),
                Plan::Create,
                Plan::Conflict(RegConflict::KeyTaken {
                    holder: "C10".into()
                }),
            ]
        );
        match classify(&items, &stored, &client_ids, &keys, RegMode::AllOrNothing) {
            Err((1, RegConflict::SerialTaken { .. })) => {}
            other => panic!("expected BatchConflict at 1, got {other:?}"),
        }
    }
}
