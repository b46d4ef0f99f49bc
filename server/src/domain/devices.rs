//! Finding devices, and the status brokers poll.

use devid_core::api::{CertState, DeviceStatus, TopicPolicy};
use devid_core::{clientid, TopicFilter};

use super::{policy, DomainError};
use crate::store::{DeviceWithCerts, Store};

/// Looks a device up by ClientID, refusing malformed ids and explaining likely typos.
pub async fn find(store: &Store, client_id: &str) -> Result<DeviceWithCerts, DomainError> {
    clientid::validate(client_id)
        .map_err(|e| DomainError::invalid_field("client_id", format!("client_id: {e}")))?;
    match store.get_device(client_id).await? {
        Some(d) => Ok(d),
        None => match clientid::verify_check(client_id) {
            Err(e) => Err(DomainError::invalid_field(
                "client_id",
                format!("client_id: {e}"),
            )),
            Ok(()) => Err(DomainError::not_found(format!(
                "no device has ClientID {client_id}"
            ))),
        },
    }
}

/// What a broker needs to know of a device: its state, which of its certificates are revoked
/// or on hold, and the policy that applies to it (topics with `%c` replaced by its ClientID).
pub async fn status(store: &Store, d: &DeviceWithCerts) -> Result<DeviceStatus, DomainError> {
    let policy = policy::effective_policy(store, &d.device).await?;
    // Stored filters passed the policy rule when they were set; one that no longer reads as a
    // filter is a fault of the store.
    let expand = |v: &[String]| -> Result<Vec<String>, DomainError> {
        v.iter()
            .map(|t| {
                TopicFilter::parse(t)
                    .and_then(|f| f.expand(&d.device.client_id))
                    .map(TopicFilter::into_string)
                    .map_err(DomainError::internal)
            })
            .collect()
    };
    Ok(DeviceStatus {
        client_id: d.device.client_id.clone(),
        status: d.device.status,
        model: d.device.model.clone(),
        revoked_serials: d
            .certs
            .iter()
            .filter(|c| c.status != CertState::Good)
            .map(|c| c.serial.clone())
            .collect(),
        policy: Some(TopicPolicy {
            publish: expand(&policy.topics.publish)?,
            subscribe: expand(&policy.topics.subscribe)?,
        }),
        allowed_cidrs: policy.allowed_cidrs,
        message_auth: policy.message_auth,
        connect_with: policy.connect_with,
    })
}
