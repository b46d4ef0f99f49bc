//! What applies to a device: its own settings, else its model's, else the defaults; and the
//! changes of a device's own settings (topic policy, message authentication, allow-list).

use devid_core::api::{PolicyUpdate, TopicPolicy};
use devid_core::{Cidr, ConnectWith, LdevidValidity, MessageAuth, RenewalGrace, TopicFilter};

use super::audit::Audit;
use super::{devices, Ctx, DomainError};
use crate::store::{DevicePolicyChange, DeviceRow, DeviceWithCerts, ModelRow, Store};

/// The policy that applies to a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectivePolicy {
    pub topics: TopicPolicy,
    pub allowed_cidrs: Vec<String>,
    pub message_auth: MessageAuth,
    pub connect_with: ConnectWith,
}

/// A model's LDevID settings, defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LdevidSettings {
    pub validity: LdevidValidity,
    pub renewal_grace: RenewalGrace,
    pub connect_with: ConnectWith,
}

impl LdevidSettings {
    /// The settings of `model` (None: a device without a model, or a model never configured).
    pub fn of(model: Option<&ModelRow>) -> LdevidSettings {
        LdevidSettings {
            validity: model.and_then(|m| m.ldevid_validity).unwrap_or_default(),
            renewal_grace: model.and_then(|m| m.renewal_grace).unwrap_or_default(),
            connect_with: model.and_then(|m| m.connect_with).unwrap_or_default(),
        }
    }
}

/// The LDevID settings of a device's model.
pub async fn ldevid_settings(store: &Store, d: &DeviceRow) -> Result<LdevidSettings, DomainError> {
    let model = match &d.model {
        Some(m) => store.get_model(m).await?,
        None => None,
    };
    Ok(LdevidSettings::of(model.as_ref()))
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
    let connect_with = LdevidSettings::of(model.as_ref()).connect_with;
    let message_auth = match own
        .message_auth
        .or_else(|| model.and_then(|m| m.message_auth))
    {
        Some(m) => MessageAuth::parse(&m).map_err(DomainError::internal)?,
        None => MessageAuth::default(),
    };
    Ok(EffectivePolicy {
        topics,
        allowed_cidrs: own.allowed_cidrs.unwrap_or_default(),
        message_auth,
        connect_with,
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
    let message_auth = update
        .message_auth
        .as_deref()
        .map(parse_message_auth)
        .transpose()?;
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
        message_auth: message_auth.map(|m| Some(m.as_str().to_string())),
        ..DevicePolicyChange::default()
    };
    let entry = ctx
        .store
        .change_device_policy(client_id, &change, &audit.ok())
        .await?;
    ctx.updated(&entry);
    devices::find(ctx.store, client_id).await
}

/// A message-authentication setting by core's rule.
pub fn parse_message_auth(m: &str) -> Result<MessageAuth, DomainError> {
    MessageAuth::parse(m).map_err(|e| DomainError::invalid_field("message_auth", e.to_string()))
}

/// Longest filter a stored topic policy may hold: a bound on what the service keeps, below
/// the MQTT limit (a filter grows when `%c` is replaced by a ClientID).
pub const MAX_POLICY_FILTER_LEN: usize = 1024;

/// A topic policy's filters: MQTT topic filters by core's rule ([`TopicFilter`], where `%c`
/// stands for the ClientID), each at most [`MAX_POLICY_FILTER_LEN`] bytes.
pub fn validate_topics(t: &TopicPolicy) -> Result<(), DomainError> {
    for filter in t.publish.iter().chain(&t.subscribe) {
        if filter.len() > MAX_POLICY_FILTER_LEN || TopicFilter::check(filter).is_err() {
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
        let longest = "t".repeat(MAX_POLICY_FILTER_LEN);
        let ok = TopicPolicy {
            publish: vec!["devices/%c/#".into(), "a/+/b".into(), longest],
            subscribe: vec!["#".into()],
        };
        assert!(validate_topics(&ok).is_ok());
        let long = "t".repeat(MAX_POLICY_FILTER_LEN + 1);
        for bad in ["a/#/b", "a#", "a/b+", "", "a\0", long.as_str()] {
            let t = TopicPolicy {
                publish: vec![bad.into()],
                subscribe: vec![],
            };
            assert!(validate_topics(&t).is_err(), "{bad}");
        }
    }

    #[test]
    fn message_auth_is_off_or_required() {
        assert_eq!(parse_message_auth("off"), Ok(MessageAuth::Off));
        assert_eq!(parse_message_auth("required"), Ok(MessageAuth::Required));
        assert!(parse_message_auth("on").is_err());
    }
}
