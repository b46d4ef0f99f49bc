//! The rules of registration: what an item must be before it is signed, what a batch may not
//! repeat, and what a refused registration means to the caller. (Whether a stored device makes
//! an item a replay or a conflict is decided in the store's registration transaction.)

use std::collections::HashMap;

use devid_core::api::RegisterRequest;
use devid_core::{clientid, HardwareSerial, ModelName};
use ring::rand::SecureRandom;

use super::DomainError;
use crate::auth::Caller;
use crate::store::{NewDevice, RegConflict};

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
    pub csr: Option<String>,
}

/// The cheap, synchronous checks of one item, before its CSR is read: the hardware serial, the
/// model (and whether the caller may register it), metadata, csr or generate_key, the ClientID
/// given or one made with the model's prefix (from `prefixes`, else none).
pub fn check(
    caller: &Caller,
    req: RegisterRequest,
    prefixes: &HashMap<String, String>,
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
    match (&req.csr, req.generate_key) {
        (Some(_), true) => {
            return Err(DomainError::invalid(
                "give either csr or generate_key, not both",
            ))
        }
        (None, false) => {
            return Err(DomainError::invalid(
                "give a csr (PEM) or \"generate_key\": true",
            ))
        }
        _ => {}
    }
    let (client_id, generated) = match req.client_id {
        Some(id) => {
            clientid::validate(&id)
                .map_err(|e| DomainError::invalid_field("client_id", format!("client_id: {e}")))?;
            (id, false)
        }
        None => {
            let prefix = req
                .model
                .as_deref()
                .and_then(|m| prefixes.get(m))
                .map_or("", String::as_str);
            let mut random = [0u8; 10];
            rng.fill(&mut random)
                .map_err(|_| DomainError::internal("rng failure"))?;
            let id = clientid::generate(prefix, &random)
                .map_err(|e| DomainError::internal(format!("client id generation: {e}")))?;
            (id, true)
        }
    };
    Ok(Checked {
        hardware_serial: serial.into_string(),
        model: req.model,
        client_id,
        client_id_generated: generated,
        metadata,
        csr: req.csr,
    })
}

/// [`check`] for every item of a batch; an item may not repeat an earlier item's hardware
/// serial or ClientID. Errors name the item.
pub fn check_batch(
    caller: &Caller,
    items: Vec<RegisterRequest>,
    prefixes: &HashMap<String, String>,
    rng: &dyn SecureRandom,
) -> Result<Vec<Checked>, DomainError> {
    let mut serials = HashMap::with_capacity(items.len());
    let mut ids = HashMap::with_capacity(items.len());
    let mut checked = Vec::with_capacity(items.len());
    for (index, req) in items.into_iter().enumerate() {
        let c = check(caller, req, prefixes, rng).map_err(|e| e.at_index(index))?;
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
        if let Some(first) = spkis.insert(d.cert.spki_sha256, index) {
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
            field => format!(
                "hardware_serial is already registered to device {holder} with this CSR but \
                 another {field}; repeating a registration means repeating the whole request"
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

#[cfg(test)]
mod tests {
    use super::*;
    use devid_core::api::Role;

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
        let c = check(&caller(None), r, &prefixes, &rng).expect("checked");
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
            check(&caller(None), both, &none, &rng),
            Err(DomainError::invalid(
                "give either csr or generate_key, not both"
            ))
        );
        let mut list = req("SN-1", None);
        list.metadata = Some(serde_json::json!([1]));
        assert_eq!(
            check(&caller(None), list, &none, &rng),
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
                &rng
            ),
            Err(DomainError::Forbidden { .. })
        ));
    }

    #[test]
    fn fail_a_batch_repeating_a_serial_names_both_items() {
        let rng = ring::rand::SystemRandom::new();
        let items = vec![req("SN-1", None), req("SN-2", None), req("SN-1", None)];
        let e = check_batch(&caller(None), items, &HashMap::new(), &rng).expect_err("refused");
        assert_eq!(
            e,
            DomainError::Invalid {
                field: Some("hardware_serial"),
                detail: "item 2: hardware_serial \"SN-1\" also appears at item 0".into(),
                index: Some(2),
            }
        );
    }
}
