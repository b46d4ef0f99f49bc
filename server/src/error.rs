//! The service's one HTTP error type. Every handler returns `Result<_, ApiError>`; every error
//! leaves as an RFC 9457 problem document; the domain's errors become one in one place
//! (`From<DomainError>`). Internal causes are logged with a correlation id and never
//! sent to the client.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use devid_core::api::Problem;

use crate::domain::audit::AuditOutcome;
use crate::domain::DomainError;
use crate::store::StoreError;

#[derive(Debug)]
pub enum ApiError {
    /// 400: the request is malformed.
    BadRequest(String),
    /// 401: no valid token.
    Unauthorized,
    /// 403: the token's role may not do this (in a batch: because of item `index`).
    Forbidden {
        detail: String,
        index: Option<usize>,
    },
    NotFound(String),
    /// 405: the route exists but not with this method (the response keeps axum's `Allow`).
    MethodNotAllowed(String),
    /// 409: the request conflicts with what is stored.
    Conflict {
        detail: String,
        index: Option<usize>,
    },
    /// 413.
    PayloadTooLarge(String),
    /// 415.
    UnsupportedMediaType(String),
    /// 422: well-formed but unacceptable (bad CSR, bad ClientID, ...).
    Unprocessable {
        detail: String,
        index: Option<usize>,
    },
    /// 503: a dependency is not ready.
    Unavailable(String),
    /// 500: the cause is logged, the client sees a generic message.
    Internal(String),
    /// Any other client error status (e.g. 414) that reached the edge without a problem document.
    OtherClientError {
        status: StatusCode,
        detail: String,
    },
}

impl ApiError {
    pub fn unprocessable(detail: impl Into<String>) -> Self {
        ApiError::Unprocessable {
            detail: detail.into(),
            index: None,
        }
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        ApiError::Forbidden {
            detail: detail.into(),
            index: None,
        }
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        ApiError::Conflict {
            detail: detail.into(),
            index: None,
        }
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        ApiError::Internal(cause.to_string())
    }

    /// The error for a response of `status` that left a handler or axum without a problem
    /// document; `detail` is the text it carried, if any. Server errors keep no detail.
    pub fn from_status(status: StatusCode, detail: Option<String>) -> Self {
        let detail = detail
            .filter(|d| !d.trim().is_empty())
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
        match status {
            StatusCode::BAD_REQUEST => ApiError::BadRequest(detail),
            StatusCode::UNAUTHORIZED => ApiError::Unauthorized,
            StatusCode::FORBIDDEN => ApiError::forbidden(detail),
            StatusCode::NOT_FOUND => ApiError::NotFound(detail),
            StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed(detail),
            StatusCode::CONFLICT => ApiError::conflict(detail),
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(detail),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(detail),
            StatusCode::UNPROCESSABLE_ENTITY => ApiError::unprocessable(detail),
            StatusCode::SERVICE_UNAVAILABLE => ApiError::Unavailable(detail),
            s if s.is_client_error() => ApiError::OtherClientError { status: s, detail },
            s => ApiError::Internal(format!("status {s} without a problem document")),
        }
    }

    /// The same error, attributed to item `index` of a batch.
    pub fn at_index(self, index: usize) -> Self {
        match self {
            ApiError::Unprocessable { detail, .. } => ApiError::Unprocessable {
                detail: format!("item {index}: {detail}"),
                index: Some(index),
            },
            ApiError::Conflict { detail, .. } => ApiError::Conflict {
                detail: format!("item {index}: {detail}"),
                index: Some(index),
            },
            ApiError::BadRequest(detail) => ApiError::Unprocessable {
                detail: format!("item {index}: {detail}"),
                index: Some(index),
            },
            ApiError::Forbidden { detail, .. } => ApiError::Forbidden {
                detail: format!("item {index}: {detail}"),
                index: Some(index),
            },
            other => other,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::OtherClientError { status, .. } => *status,
        }
    }

    fn slug_and_title(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::BadRequest(_) => ("bad-request", "Bad request"),
            ApiError::Unauthorized => ("unauthorized", "Missing or invalid token"),
            ApiError::Forbidden { .. } => ("forbidden", "Not allowed for this token"),
            ApiError::NotFound(_) => ("not-found", "Not found"),
            ApiError::MethodNotAllowed(_) => ("method-not-allowed", "Method not allowed"),
            ApiError::Conflict { .. } => ("conflict", "Conflict"),
            ApiError::PayloadTooLarge(_) => ("payload-too-large", "Request body too large"),
            ApiError::UnsupportedMediaType(_) => {
                ("unsupported-media-type", "Unsupported media type")
            }
            ApiError::Unprocessable { .. } => ("unprocessable", "Request cannot be processed"),
            ApiError::Unavailable(_) => ("unavailable", "Service unavailable"),
            ApiError::Internal(_) => ("internal", "Internal error"),
            ApiError::OtherClientError { .. } => ("client-error", "Request refused"),
        }
    }

    /// The problem document a client sees. Internal causes are replaced by a generic message.
    pub fn problem(&self) -> Problem {
        let (slug, title) = self.slug_and_title();
        let (detail, index) = match self {
            ApiError::BadRequest(d)
            | ApiError::NotFound(d)
            | ApiError::MethodNotAllowed(d)
            | ApiError::OtherClientError { detail: d, .. }
            | ApiError::PayloadTooLarge(d)
            | ApiError::UnsupportedMediaType(d)
            | ApiError::Unavailable(d) => (Some(d.clone()), None),
            ApiError::Conflict { detail, index }
            | ApiError::Unprocessable { detail, index }
            | ApiError::Forbidden { detail, index } => (Some(detail.clone()), *index),
            ApiError::Unauthorized => (
                Some("send a valid token as 'Authorization: Bearer <token>'".to_string()),
                None,
            ),
            ApiError::Internal(_) => (
                Some("the server hit an internal error; it has been logged".to_string()),
                None,
            ),
        };
        Problem {
            kind: format!("urn:devid:problem:{slug}"),
            title: title.to_string(),
            status: self.status().as_u16(),
            detail,
            index,
        }
    }

    /// The message an audit record keeps for a failed call (never an internal cause).
    pub fn audit_outcome(&self) -> String {
        let p = self.problem();
        format!("error: {} {}", p.status, p.detail.unwrap_or(p.title))
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = self.problem();
        write!(f, "{} {}", p.status, p.detail.unwrap_or(p.title))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(cause) = &self {
            tracing::error!(%cause, "internal error");
        }
        let status = self.status();
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// The one mapping of the domain's errors to HTTP. Messages pass unchanged; an internal cause
/// stays in the log.
impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::NotFound(detail) => ApiError::NotFound(detail),
            DomainError::Conflict { detail, index } => ApiError::Conflict { detail, index },
            DomainError::InvalidTransition(detail) => ApiError::conflict(detail),
            DomainError::Forbidden { detail, index } => ApiError::Forbidden { detail, index },
            DomainError::Invalid { detail, index, .. } => ApiError::Unprocessable { detail, index },
            DomainError::Mismatch(detail) => ApiError::BadRequest(detail),
            DomainError::RateLimited(detail) => ApiError::OtherClientError {
                status: StatusCode::TOO_MANY_REQUESTS,
                detail,
            },
            DomainError::Unauthenticated => ApiError::Unauthorized,
            DomainError::Unavailable(detail) => ApiError::Unavailable(detail),
            DomainError::Internal(cause) => ApiError::Internal(cause),
        }
    }
}

/// A store error met by a route directly (a read) means what it means to the domain.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        DomainError::from(e).into()
    }
}

/// Lets extractors (the caller's token) reject with a domain error.
impl IntoResponse for DomainError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

impl AuditOutcome for ApiError {
    fn audit_outcome(&self) -> String {
        ApiError::audit_outcome(self)
    }
}

impl AuditOutcome for DomainError {
    fn audit_outcome(&self) -> String {
        ApiError::from(self.clone()).audit_outcome()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let text = rejection.body_text();
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(text),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(text),
            StatusCode::UNPROCESSABLE_ENTITY => ApiError::unprocessable(text),
            _ => ApiError::BadRequest(text),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::BadRequest(rejection.body_text())
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::BytesRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(rejection.body_text()),
            _ => ApiError::BadRequest(rejection.body_text()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_causes_are_not_sent() {
        let e = ApiError::internal("password=hunter2 in connection string");
        let p = e.problem();
        assert_eq!(p.status, 500);
        assert!(!p.detail.unwrap_or_default().contains("hunter2"));
    }

    #[test]
    fn domain_errors_keep_their_status_and_message() {
        let cases = [
            (DomainError::not_found("no device has ClientID X"), 404),
            (
                DomainError::conflict("client_id belongs to another device"),
                409,
            ),
            (
                DomainError::InvalidTransition("device is revoked".into()),
                409,
            ),
            (
                DomainError::forbidden("a factory token may not do this"),
                403,
            ),
            (DomainError::invalid_field("csr", "csr: bad"), 422),
            (DomainError::Mismatch("subject differs".into()), 400),
            (DomainError::RateLimited("at most 5".into()), 429),
            (
                DomainError::Unavailable("the service is shutting down".into()),
                503,
            ),
        ];
        for (e, status) in cases {
            let message = e.to_string();
            let p = ApiError::from(e).problem();
            assert_eq!(p.status, status, "{message}");
            assert_eq!(p.detail.as_deref(), Some(message.as_str()));
        }
        let p = ApiError::from(DomainError::Unauthenticated).problem();
        assert_eq!(p.status, 401);
        let p = ApiError::from(DomainError::internal("secret cause")).problem();
        assert_eq!(p.status, 500);
        assert!(!p.detail.unwrap_or_default().contains("secret"));
        let p = ApiError::from(DomainError::invalid("bad").at_index(2)).problem();
        assert_eq!(
            (p.index, p.detail.as_deref()),
            (Some(2), Some("item 2: bad"))
        );
    }

    #[test]
    fn batch_errors_carry_the_index() {
        let e = ApiError::unprocessable("bad CSR").at_index(7);
        let p = e.problem();
        assert_eq!(p.index, Some(7));
        assert_eq!(p.status, 422);
        assert!(p.detail.unwrap_or_default().starts_with("item 7:"));
    }
}
