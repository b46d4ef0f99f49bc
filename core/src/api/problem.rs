//! Errors: the RFC 9457 problem document every error response carries.

use serde::{Deserialize, Serialize};

/// An RFC 9457 problem document. `type` is a `urn:devid:problem:<slug>` URN.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// For batch registration: the index of the first failing item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
}
