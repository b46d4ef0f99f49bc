//! What every EST answer shares: plain-text errors with RFC 7030's statuses, base64 bodies, the
//! device certificate a request presented, the token of an HTTP Basic header, and the audit of
//! refusals met before any token or certificate was accepted.

use axum::extract::connect_info::ConnectInfo;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use devid_core::api::Role;

use crate::app::AppState;
use crate::auth::{basic_password, Caller};
use crate::domain::audit::{self, AuditOutcome as _};
use crate::error::ApiError;
use crate::est;
use crate::store::Actor;
use crate::tls::ClientTls;

/// Marks an EST answer, so that the edge leaves its plain-text errors as they are.
#[derive(Debug, Clone, Copy)]
pub struct EstAnswer;

/// An EST error: the status RFC 7030 uses and a plain-text body saying why.
#[derive(Debug)]
pub struct EstError(pub ApiError);

impl From<ApiError> for EstError {
    fn from(e: ApiError) -> Self {
        EstError(e)
    }
}

impl From<crate::domain::DomainError> for EstError {
    fn from(e: crate::domain::DomainError) -> Self {
        EstError(e.into())
    }
}

impl EstError {
    /// The status of the answer: those RFC 7030 clients know (400 for any request the server
    /// will not act on, 401, 403, 404, 500, 503; libest, for one, knows no other), and 429 for
    /// a device renewing too often (with the reason in the body).
    pub fn status(&self) -> StatusCode {
        match self.0.status() {
            StatusCode::UNPROCESSABLE_ENTITY
            | StatusCode::CONFLICT
            | StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::UNSUPPORTED_MEDIA_TYPE => StatusCode::BAD_REQUEST,
            other => other,
        }
    }

    /// The plain-text reason.
    pub fn text(&self) -> String {
        match &self.0 {
            ApiError::Unauthorized => "authenticate with the device's TLS client certificate, \
                 or with HTTP Basic and a factory or admin token as the password"
                .to_string(),
            other => {
                let p = other.problem();
                p.detail.unwrap_or(p.title)
            }
        }
    }
}

impl IntoResponse for EstError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(cause) = &self.0 {
            tracing::error!(%cause, "internal error");
        }
        let status = self.status();
        let text = self.text();
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{text}\n"),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"devid EST\""),
            );
        }
        response.extensions_mut().insert(EstAnswer);
        response
    }
}

impl crate::domain::audit::AuditOutcome for EstError {
    fn audit_outcome(&self) -> String {
        format!("error: {} {}", self.status().as_u16(), self.text())
    }
}

/// A base64 body with its content type.
pub fn base64_answer(content_type: &'static str, der: &[u8]) -> Response {
    let mut response = (
        [
            (header::CONTENT_TYPE, content_type),
            (
                header::HeaderName::from_static("content-transfer-encoding"),
                "base64",
            ),
        ],
        est::encode_body(der),
    )
        .into_response();
    response.extensions_mut().insert(EstAnswer);
    response
}

/// A device certificate the TLS layer passed, read for what EST needs of it.
pub struct Presented {
    pub leaf_der: Vec<u8>,
    /// The subject CN: the device's ClientID.
    pub client_id: String,
    /// Lowercase hex, as the registry keeps serials.
    pub serial_hex: String,
    /// Unix seconds.
    pub not_after: i64,
    pub not_before: i64,
}

impl Presented {
    /// Whether the certificate is outside its validity at `now` (unix seconds).
    pub fn expired_at(&self, now: i64) -> bool {
        now > self.not_after || now < self.not_before
    }
}

/// The client certificate of the request's TLS connection, if any (never on the plain
/// listener).
pub fn presented(headers_ext: &axum::http::Extensions) -> Option<Presented> {
    let tls = headers_ext.get::<ConnectInfo<ClientTls>>()?;
    let leaf = tls.0.chain.as_ref()?.first()?.as_ref().to_vec();
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).ok()?;
    let client_id = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())?
        .to_string();
    let raw = cert.raw_serial();
    let first = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    Some(Presented {
        serial_hex: hex::encode(&raw[first..]),
        client_id,
        not_after: cert.validity().not_after.timestamp(),
        not_before: cert.validity().not_before.timestamp(),
        leaf_der: leaf,
    })
}

/// Who is calling, for the audit of a refusal: the certificate's device, the token, or nobody.
pub fn anonymous_actor(presented: Option<&Presented>) -> Actor {
    match presented {
        Some(p) => Actor {
            id: format!("cert:{}", p.serial_hex),
            name: p.client_id.clone(),
        },
        None => Actor {
            id: "anonymous".into(),
            name: "EST client".into(),
        },
    }
}

/// Records a refused EST call made before (or without) a token.
pub async fn audit_refusal(
    state: &AppState,
    actor: &Actor,
    action: &str,
    target: &str,
    err: &EstError,
) {
    let rec = audit::record(actor, action, target, err.audit_outcome());
    if let Err(e) = state.store.insert_audit(&rec).await {
        tracing::error!(error = %e, action, "could not write audit record");
    }
}

/// The token of an HTTP Basic header, as a caller that may register devices.
pub async fn basic_caller(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Caller>, EstError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let password = value
        .to_str()
        .ok()
        .and_then(basic_password)
        .ok_or(EstError(ApiError::Unauthorized))?;
    let caller = Caller::from_secret(state, &password)
        .await
        .map_err(|_| EstError(ApiError::Unauthorized))?;
    caller.require(&[Role::Admin, Role::Factory])?;
    Ok(Some(caller))
}
