//! The service's one error type. Every handler returns `Result<_, ApiError>`; every error leaves
//! as an RFC 9457 problem document. Internal causes are logged with a correlation id and never
//! sent to the client.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use devid_core::api::Problem;

use crate::store::{RegConflict, StoreError};

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

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::NotFound("no such item".to_string()),
            StoreError::InvalidTransition(msg) => ApiError::conflict(msg),
            StoreError::BatchConflict { index, conflict } => {
                conflict_error(&conflict).at_index(index)
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// The answer to a refused registration: 409 naming the device that holds what was asked for,
/// or 422 for a key revoked as compromised (no request with that key can ever succeed).
pub fn conflict_error(c: &RegConflict) -> ApiError {
    match c {
        RegConflict::SerialTaken { holder, differs } => ApiError::conflict(match *differs {
            "csr" => format!(
                "hardware_serial is already registered to device {holder} with a different CSR"
            ),
            "generate_key" => format!(
                "hardware_serial is already registered to device {holder}; a generate_key \
                 request makes a new key, so it never repeats a registration"
            ),
            field => format!(
                "hardware_serial is already registered to device {holder} with this CSR but \
                 another {field}; repeating a registration means repeating the whole request"
            ),
        }),
        RegConflict::ClientIdTaken => ApiError::conflict("client_id belongs to another device"),
        RegConflict::KeyTaken { holder } => ApiError::conflict(format!(
            "the public key belongs to device {holder}; every device needs a key pair of its own"
        )),
        RegConflict::KeyCompromised => ApiError::unprocessable(
            "the public key was revoked for keyCompromise and is never certified again",
        ),
    }
}

impl From<crate::ca::CaError> for ApiError {
    /// Errors caused by the request (e.g. a hardware serial the profile cannot carry) are 422;
    /// the rest are internal.
    fn from(e: crate::ca::CaError) -> Self {
        if e.is_client_error() {
            ApiError::unprocessable(e.to_string())
        } else {
            ApiError::Internal(e.to_string())
        }
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
    fn batch_errors_carry_the_index() {
        let e = ApiError::unprocessable("bad CSR").at_index(7);
        let p = e.problem();
        assert_eq!(p.index, Some(7));
        assert_eq!(p.status, 422);
        assert!(p.detail.unwrap_or_default().starts_with("item 7:"));
    }
}
