//! Bearer tokens and the roles they carry.

use serde::{Deserialize, Serialize};

named_enum! {
    /// The role a token carries.
    pub enum Role {
        /// Everything.
        Admin = "admin",
        /// Registers devices, optionally limited to some models.
        Factory = "factory",
        /// Reads device status and policies, follows revocations, posts connection events.
        Broker = "broker",
        /// Reads everything, changes nothing.
        Auditor = "auditor",
        /// An application beside the fleet: reads events, devices and fleet health, nothing
        /// else.
        App = "app",
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    pub role: Role,
    pub name: String,
    /// Factory tokens only: models it may register. Absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<crate::ModelName>>))]
    pub models: Option<Vec<String>>,
    /// Lifetime in seconds. Absent: no expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub role: Role,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<crate::ModelName>>))]
    pub models: Option<Vec<String>>,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created_at: String,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub expires_at: Option<String>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub revoked_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedToken {
    #[serde(flatten)]
    pub info: TokenInfo,
    /// The secret, shown once: `devid_<id>_<random>`.
    pub token: String,
}

/// `GET /v1/whoami`: the calling token, so that a client (the web console) offers only what
/// the token may do.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Whoami {
    pub token_id: String,
    pub role: Role,
    /// Factory tokens limited to some models: those models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<crate::ModelName>>))]
    pub models: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenList {
    pub items: Vec<TokenInfo>,
}
