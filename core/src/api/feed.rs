//! The device feed (`/v1/revocations`, paged and live): status changes and settings changes.

use super::RevocationReason;
use serde::{Deserialize, Serialize};

named_enum! {
    /// What a device-feed entry did (a status change, or `updated` settings).
    pub enum RevocationAction {
        /// Final: the certificates in `serials` (and, for scope device, the device) are revoked.
        Revoked = "revoked",
        /// The device and its certificates are on hold.
        Suspended = "suspended",
        /// The hold is lifted.
        Resumed = "resumed",
        /// Settings changed (topic policy, allow-list, message authentication): brokers fetch the
        /// device's status again (scope device) or that of every connected device of the model
        /// (scope model) and apply it to live connections.
        Updated = "updated",
        /// Scope issuing_ca: a new issuing CA (`client_id` is its id, `serials` its serial) is
        /// active; the previous one is retired and still trusted. Brokers fetch the CA set again.
        Rotated = "rotated",
    }
}

named_enum! {
    /// Whether an entry is about a whole device or one certificate.
    pub enum RevocationScope {
        Device = "device",
        Certificate = "certificate",
        /// Every device of `model` (only with [`RevocationAction::Updated`]).
        Model = "model",
        /// An issuing CA (`client_id` is its id, `serials` its certificate's serial): with
        /// `revoked`, every certificate under it is refused; with `rotated`, the CA set changed.
        IssuingCa = "issuing_ca",
    }
}

/// One entry of the device feed (served at `/v1/revocations`): a status change or an
/// `updated` settings change. `seq` is strictly increasing and gap-free in commit order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FeedEntry {
    pub seq: i64,
    pub scope: RevocationScope,
    pub action: RevocationAction,
    pub client_id: String,
    /// Certificate serials affected, lowercase hex.
    pub serials: Vec<String>,
    #[serde(default)]
    pub reason: Option<RevocationReason>,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub at: String,
    /// Scope model: the model whose settings changed (`client_id` is then empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::ModelName>))]
    pub model: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FeedPage {
    pub entries: Vec<FeedEntry>,
    /// The newest seq in the feed (0 when empty). Keep calling with `since = last entry's seq`
    /// until it is reached.
    pub head: i64,
}
