//! Changing many devices in one call: revoke, suspend or resume every device a filter selects
//! (a recall revokes a whole lot at once).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::RevocationReason;
use crate::{ClientId, ModelName};

/// Most ClientIDs one filter may list.
pub const MAX_BULK_CLIENT_IDS: usize = 100_000;

/// How many ClientIDs a [`BulkResult`] shows.
pub const BULK_SAMPLE: usize = 20;

/// Which devices a bulk change applies to: those that meet every criterion given. At least one
/// criterion is required (an empty filter would select the whole fleet).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DeviceFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelName>,
    /// Each key's value in the device's metadata must be this string (all must match; a
    /// metadata value that is not a string never matches).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// RFC 3339; devices registered strictly after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created_after: Option<String>,
    /// RFC 3339; devices registered strictly before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created_before: Option<String>,
    /// At most [`MAX_BULK_CLIENT_IDS`]; a ClientID no device has matches nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ids: Option<Vec<ClientId>>,
}

impl DeviceFilter {
    /// The rules that need no clock or store: at least one criterion, at most
    /// [`MAX_BULK_CLIENT_IDS`] ClientIDs, metadata keys not empty. The message is the public
    /// one.
    pub fn check(&self) -> Result<(), String> {
        if self.model.is_none()
            && self.metadata.is_empty()
            && self.created_after.is_none()
            && self.created_before.is_none()
            && self.client_ids.is_none()
        {
            return Err(
                "filter: give at least one of model, metadata, created_after, \
                        created_before, client_ids"
                    .into(),
            );
        }
        if let Some(ids) = &self.client_ids {
            if ids.len() > MAX_BULK_CLIENT_IDS {
                return Err(format!(
                    "filter.client_ids: at most {MAX_BULK_CLIENT_IDS} ClientIDs; this one has {}",
                    ids.len()
                ));
            }
        }
        if self.metadata.keys().any(String::is_empty) {
            return Err("filter.metadata: a key is empty".into());
        }
        Ok(())
    }
}

/// `POST /v1/devices/revoke`, `/v1/devices/suspend`, `/v1/devices/resume`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    pub filter: DeviceFilter,
    /// Revoke only (required there); refused on suspend and resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<RevocationReason>,
    /// Count and sample only; nothing changes.
    #[serde(default)]
    pub dry_run: bool,
}

/// What a bulk change did (or, on a dry run, would do).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BulkResult {
    /// Devices the filter selects, whatever their state.
    pub matched: u64,
    /// Devices whose state changed (would change, on a dry run); the others were already in
    /// the state asked for, or (revoked) cannot change.
    pub changed: u64,
    /// The first [`BULK_SAMPLE`] ClientIDs of the changed devices, oldest first.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::ClientId>))]
    pub sample: Vec<String>,
    pub dry_run: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_parses_and_keeps_its_rules() {
        let r: BulkRequest = serde_json::from_str(
            r#"{"filter":{"model":"thermo","metadata":{"lot":"L7"}},"reason":"superseded"}"#,
        )
        .expect("parse");
        assert_eq!(
            r.filter.model.as_ref().map(ModelName::as_str),
            Some("thermo")
        );
        assert_eq!(r.filter.metadata["lot"], "L7");
        assert!(!r.dry_run);
        assert!(r.filter.check().is_ok());
        for bad in [
            r#"{"filter":{"model":"thermo"},"colour":"red"}"#,
            r#"{"filter":{"modle":"thermo"}}"#,
            r#"{"filter":{"model":"no/slash"}}"#,
            r#"{"filter":{"client_ids":["bad id"]}}"#,
            r#"{"filter":{"metadata":{"lot":7}}}"#,
        ] {
            assert!(serde_json::from_str::<BulkRequest>(bad).is_err(), "{bad}");
        }
        let empty: BulkRequest = serde_json::from_str(r#"{"filter":{}}"#).expect("parse");
        assert!(empty.filter.check().is_err());
        let f = DeviceFilter {
            client_ids: Some(vec![
                ClientId::parse("A1").expect("id");
                MAX_BULK_CLIENT_IDS + 1
            ]),
            ..DeviceFilter::default()
        };
        assert!(f.check().expect_err("too many").contains("100000"));
    }
}
