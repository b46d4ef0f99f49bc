//! Per-model settings: ClientID prefix, topic policy, message authentication, LDevIDs
//! (validity, renewal grace, which certificates brokers admit).

use devid_core::api::{ModelSettings, TopicPolicy};
use devid_core::{clientid, ModelName};

use super::audit::Audit;
use super::policy::{parse_message_auth, validate_topics};
use super::{Ctx, DomainError};
use crate::store::ModelRow;
use crate::timefmt;

pub fn check_model_name(model: &str) -> Result<(), DomainError> {
    ModelName::parse(model)
        .map(drop)
        .map_err(|e| DomainError::invalid_field("model", e.to_string()))
}

/// Stores `settings` as model `model`'s (the name in the body, if any, must be the same), tells
/// brokers and forgets the ClientID prefix the registry cached for it.
pub async fn put(
    ctx: Ctx<'_>,
    audit: &Audit,
    model: &str,
    mut settings: ModelSettings,
) -> Result<ModelSettings, DomainError> {
    check_model_name(model)?;
    if !settings.name.is_empty() && settings.name != model {
        return Err(DomainError::invalid_field(
            "name",
            "name in the body differs from the path",
        ));
    }
    settings.name = model.to_string();
    if let Some(p) = &settings.client_id_prefix {
        clientid::validate_prefix(p).map_err(|e| {
            DomainError::invalid_field("client_id_prefix", format!("client_id_prefix: {e}"))
        })?;
    }
    if let Some(m) = &settings.message_auth {
        parse_message_auth(m)?;
    }
    if let Some(t) = &settings.topics {
        validate_topics(t)?;
    }
    let row = ModelRow {
        name: model.to_string(),
        client_id_prefix: settings.client_id_prefix.clone(),
        topic_policy: settings
            .topics
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(DomainError::internal)?,
        message_auth: settings.message_auth.clone(),
        ldevid_validity: settings.ldevid_validity,
        renewal_grace: settings.renewal_grace,
        connect_with: settings.connect_with,
        updated_at: timefmt::now(),
    };
    let entry = ctx.store.put_model(&row, &audit.ok()).await?;
    ctx.updated(&entry);
    ctx.registry.forget_model(model);
    Ok(settings)
}

/// A stored model's settings as the API shows them.
pub fn settings(m: &ModelRow) -> Result<ModelSettings, DomainError> {
    Ok(ModelSettings {
        name: m.name.clone(),
        client_id_prefix: m.client_id_prefix.clone(),
        topics: m
            .topic_policy
            .as_deref()
            .map(serde_json::from_str::<TopicPolicy>)
            .transpose()
            .map_err(DomainError::internal)?,
        message_auth: m.message_auth.clone(),
        ldevid_validity: m.ldevid_validity,
        renewal_grace: m.renewal_grace,
        connect_with: m.connect_with,
    })
}
