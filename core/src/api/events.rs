//! Events for applications: what happened in the fleet, as the event stream
//! (`GET /v1/events/stream`), the event pages and webhooks carry it.

use serde::{Deserialize, Serialize};

named_enum! {
    /// What happened.
    pub enum AppEventKind {
        Registered = "registered",
        Revoked = "revoked",
        Suspended = "suspended",
        Resumed = "resumed",
        Connected = "connected",
        Disconnected = "disconnected",
        AuthFailed = "auth_failed",
        FindingOpened = "finding_opened",
        FindingClosed = "finding_closed",
        CertificateIssued = "certificate_issued",
    }
}

/// One event. `id` is strictly increasing in commit order (the SSE `id:` and `Last-Event-ID`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppEvent {
    pub id: i64,
    pub kind: AppEventKind,
    /// RFC 3339.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub at: String,
    /// The device the event is about, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The kind's own fields (a revocation's reason, a connect's broker and address, a
    /// finding's check and severity, a certificate's serial and notAfter, ...).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: serde_json::Value,
}

/// A page of events, oldest first (`GET /v1/events`), or a device's timeline, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppEventPage {
    pub items: Vec<AppEvent>,
    /// Where the next page starts: `GET /v1/events` takes it as `since`, a timeline as
    /// `cursor` (older events); absent when this page is the last one for now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}
