//! What applies to a device: its own settings, else its model's, else the defaults; and the
//! changes of a device's own settings (topic policy, message authentication, allow-list).

use devid_core::api::{PolicyUpdate, TopicPolicy};
use devid_core::Cidr;

use super::audit::Audit;
use super::{devices, Ctx, DomainError};
use crate::store::{DevicePolicyChange, DeviceRow, DeviceWithCerts, Store};

/// The policy that applies to a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectivePolicy {
    pub topics: TopicPolicy,
    pub allowed_cidrs: Vec<String>,
    pub message_auth: String,
}

pub async fn effective_policy(
    store: &Store,
    d: &DeviceRow,
) -> Result<EffectivePolicy, DomainError> {
    let own = store
        .get_device_policy(&d.client_id)
        .await?
        .unwrap_or_default();
    let model = match &d.model {
        Some(m) => store.get_model(m).await?,
        None => None,
    };
    let parse = |json: &str| -> Result<TopicPolicy, DomainError> {
        serde_json::from_str(json).map_err(DomainError::internal)
    };
    let topics = match (
        &own.topic_policy,
        model.as_ref().and_then(|m| m.topic_policy.as_ref()),
    ) {
        (Some(t), _) | (None, Some(t)) => parse(t)?,
        (None, None) => TopicPolicy::default(),
    };
    let message_auth = own
        .message_auth
        .or_else(|| model.and_then(|m| m.message_auth))
        .unwrap_or_else(|| "off".to_string());
    Ok(EffectivePolicy {
        topics,
        allowed_cidrs: own.allowed_cidrs.unwrap_or_default(),
        message_auth,
    })
}

/// Replaces a device's allow-list (empty: anywhere) and tells brokers. Only the allow-list
/// changes: a concurrent policy change keeps its fields. The success row's target names the
/// CIDRs.
pub async fn set_allowlist(
    ctx: Ctx<'_>,
    audit: &Audit,
    client_id: &str,
    cidrs: &[String],
) -> Result<DeviceWithCerts, DomainError> {
    // Parsed by core's one CIDR rule and stored in its canonical text, which the broker
    // plugin reads with the same rule.
    let cidrs = cidrs
        .iter()
        .map(|c| {
            Cidr::parse(c)
                .map(|c| c.to_string())
                .map_err(|e| DomainError::invalid_field("cidrs", e.to_string()))
        })
        .collect::<Result<Vec<String>, DomainError>>()?;
    devices::find(ctx.store, client_id).await?;
    let change = DevicePolicyChange {
        allowed_cidrs: Some(Some(cidrs.clone()).filter(|c| !c.is_empty())),
        ..DevicePolicyChange::default()
    };
    let record = audit.ok_about(&format!("{client_id}: {}", cidrs.join(" ")));
    let entry = ctx
        .store
        .change_device_policy(client_id, &change, &record)
        .await?;
    ctx.updated(&entry);
    devices::find(ctx.store, client_id).await
}

/// Changes the fields of a device's policy that `update` gives, and only those (a concurrent
/// allow-list change keeps its own), and tells brokers.
pub async fn set_policy(
    ctx: Ctx<'_>,
    audit: &Audit,
    client_id: &str,
    update: &PolicyUpdate,
) -> Result<DeviceWithCerts, DomainError> {
    if let Some(m) = &update.message_auth {
        validate_message_auth(m)?;
    }
    if let Some(t) = &update.topics {
        validate_topics(t)?;
    }
    devices::find(ctx.store, client_id).await?;
    let change = DevicePolicyChange {
        topic_policy: match &update.topics {
            Some(t) => Some(Some(
                serde_json::to_string(t).map_err(DomainError::internal)?,
            )),
            None => None,
        },
        message_auth: update.message_auth.clone().map(Some),
        ..DevicePolicyChange::default()
    };
    let entry = ctx
        .store
        .change_device_policy(client_id, &change, &audit.ok())
        .await?;
    ctx.updated(&entry);
    devices::find(ctx.store, client_id).await
}

pub fn validate_message_auth(m: &str) -> Result<(), DomainError> {
    match m {
        "off" | "required" => Ok(()),
        other => Err(DomainError::invalid_field(
            "message_auth",
            format!("message_auth must be \"off\" or \"required\", not {other:?}"),
        )),
    }
}

/// Topic filters: non-empty, no NUL, `#` only as the last level, `+` only as a whole level.
pub fn validate_topics(t: &TopicPolicy) -> Result<(), DomainError> {
    for filter in t.publish.iter().chain(&t.subscribe) {
        let levels: Vec<&str> = filter.split('/').collect();
        let bad = filter.is_empty()
            || filter.len() > 1024
            || filter.contains('\0')
            || levels.iter().enumerate().any(|(i, l)| {
                (l.contains('#') && (*l != "#" || i != levels.len() - 1))
                    || (l.contains('+') && *l != "+")
            });
        if bad {
            return Err(DomainError::invalid_field(
                "topics",
                format!("{filter:?} is not a valid MQTT topic filter"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_checked() {
        let ok = TopicPolicy {
            publish: vec!["devices/%c/#".into(), "a/+/b".into()],
            subscribe: vec!["#".into()],
        };
        assert!(validate_topics(&ok).is_ok());
        for bad in ["a/#/b", "a#", "a/b+", ""] {
            let t = TopicPolicy {
                publish: vec![bad.into()],
                subscribe: vec![],
            };
            assert!(validate_topics(&t).is_err(), "{bad}");
        }
    }

    #[test]
    fn message_auth_is_off_or_required() {
        assert!(validate_message_auth("off").is_ok());
        assert!(validate_message_auth("required").is_ok());
        assert!(validate_message_auth("on").is_err());
    }
}
