//! What a device may do on the broker: topic policies, allow-lists, message authentication,
//! per device and per model.

use serde::{Deserialize, Serialize};

/// Topic filters a device may publish and subscribe to, `%c` standing for its ClientID.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TopicPolicy {
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::TopicFilter>))]
    pub publish: Vec<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::TopicFilter>))]
    pub subscribe: Vec<String>,
}

impl Default for TopicPolicy {
    /// Publish and subscribe under `devices/%c/#`, subscribe to `broadcast/#`.
    fn default() -> Self {
        TopicPolicy {
            publish: vec!["devices/%c/#".to_string()],
            subscribe: vec!["devices/%c/#".to_string(), "broadcast/#".to_string()],
        }
    }
}

/// `PUT /v1/devices/{client_id}/allowlist`: CIDRs (`10.0.0.0/8`, `2001:db8::/32`, or a single
/// address) the device may connect from. Empty: anywhere. Each entry is checked by
/// [`crate::Cidr`] and stored in its canonical form.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AllowList {
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::Cidr>))]
    pub cidrs: Vec<String>,
}

/// `PUT /v1/devices/{client_id}/policy`: per-device overrides. Absent fields fall back to the
/// model's settings, then to the defaults.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PolicyUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topics: Option<TopicPolicy>,
    /// `off` or `required`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::MessageAuth>))]
    pub message_auth: Option<String>,
}

/// Per-model settings (`PUT /v1/models/{model}`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::ModelName))]
    pub name: String,
    /// 1 to 6 of `[0-9A-Za-z]`; absent: derived from the model name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id_prefix: Option<String>,
    /// Topic templates with `%c` for the ClientID; absent: [`TopicPolicy::default`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topics: Option<TopicPolicy>,
    /// `off` (default) or `required`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::MessageAuth>))]
    pub message_auth: Option<String>,
    /// Lifetime of the model's LDevIDs (operational certificates), at most `90d`; absent: `90d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::LdevidValidity>))]
    pub ldevid_validity: Option<crate::LdevidValidity>,
    /// How long after its expiry an LDevID may still be used to renew it (`0` = never);
    /// absent: `30d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::RenewalGrace>))]
    pub renewal_grace: Option<crate::RenewalGrace>,
    /// `any` (default): brokers admit the IDevID or an LDevID; `ldevid`: an LDevID only (the
    /// IDevID then serves only to enroll).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_with: Option<crate::ConnectWith>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelList {
    pub items: Vec<ModelSettings>,
}
