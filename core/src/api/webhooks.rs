//! Webhooks: the events for applications, POSTed to a URL (see `docs/webhooks.md`).

use serde::{Deserialize, Serialize};

use super::AppEventKind;

/// `POST /v1/webhooks`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookRequest {
    /// Where events are POSTed: an `http` or `https` URL.
    pub url: String,
    /// The kinds delivered (at least one).
    pub kinds: Vec<AppEventKind>,
    /// Only events about devices of these models (absent: every device's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
}

/// A webhook as listed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Webhook {
    pub id: String,
    pub url: String,
    pub kinds: Vec<AppEventKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// RFC 3339.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created_at: String,
}

/// The answer to `POST /v1/webhooks`: the webhook and its signing secret, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub webhook: Webhook,
    /// 32 random bytes, base64url without padding: the HMAC-SHA256 key of `devid-signature`.
    pub secret: String,
}

/// `GET /v1/webhooks`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookList {
    pub items: Vec<Webhook>,
}

named_enum! {
    /// Where a delivery stands.
    pub enum DeliveryState {
        /// Not delivered yet: waiting for its turn or its next attempt.
        Pending = "pending",
        /// The receiver answered 2xx.
        Delivered = "delivered",
        /// Given up after 24 h of failed attempts (the next events went on).
        Failed = "failed",
    }
}

/// One event's delivery to one webhook.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookDelivery {
    pub id: i64,
    /// The event's id (`devid-event-id`).
    pub event_id: i64,
    pub kind: AppEventKind,
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: u32,
    /// RFC 3339: when the next attempt is due (pending only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_at: Option<String>,
    /// The HTTP status of the last attempt, if the receiver answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    /// Why the last attempt failed, when no answer came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// `GET /v1/webhooks/{id}/deliveries`: newest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookDeliveries {
    pub items: Vec<WebhookDelivery>,
}
