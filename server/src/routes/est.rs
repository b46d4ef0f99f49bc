//! EST (RFC 7030 with RFC 8951) under `/.well-known/est/` and `/.well-known/est/<label>/`,
//! where the label is a model name. The bytes are built and read in [`crate::est`]; this module
//! authenticates, calls the registry or the LDevID issuance, and answers.
//!
//! Authentication: a TLS client certificate of a device (only on the TLS listener), or HTTP
//! Basic with a factory or admin token as the password (the user name is ignored). Errors are
//! plain text a person can read, with RFC 7030's status codes; nothing is issued on an error,
//! and every refusal is audited.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use devid_core::api::{RegisterRequest, Registered};
use utoipa_axum::routes;

use super::est_answer::{anonymous_actor, audit_refusal, basic_caller, presented};
use super::est_answer::{base64_answer, EstAnswer, EstError};
use crate::app::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::est::{self, certs_only};
use crate::routes::{Access, Routes};

/// `application/pkcs7-mime`, the type of `cacerts` answers.
const PKCS7: &str = "application/pkcs7-mime";
/// The type of enrollment answers.
pub const PKCS7_CERTS_ONLY: &str = "application/pkcs7-mime; smime-type=certs-only";
const CSRATTRS: &str = "application/csrattrs";
const PKCS10: &str = "application/pkcs10";

pub fn router() -> Routes {
    Routes::new()
        .add(Access::Public, routes!(cacerts))
        .add(Access::Public, routes!(cacerts_labeled))
        .add(Access::Public, routes!(csrattrs))
        .add(Access::Public, routes!(csrattrs_labeled))
        .add(Access::Public, routes!(simpleenroll))
        .add(Access::Public, routes!(simpleenroll_labeled))
        .add(Access::Public, routes!(simplereenroll))
        .add(Access::Public, routes!(simplereenroll_labeled))
        .add(Access::Public, routes!(serverkeygen))
        .add(Access::Public, routes!(serverkeygen_labeled))
}

/// The DER CSR of an enrollment request.
fn csr_of(body: &Bytes) -> Result<Vec<u8>, EstError> {
    est::decode_body(body).map_err(|e| EstError(ApiError::BadRequest(e.to_string())))
}

/// The label as a model name (RFC 7030 section 3.2.2: one path segment).
fn model_of(label: Option<String>) -> Option<String> {
    label.filter(|l| !l.is_empty())
}

/// Registers a new device from an EST request authenticated by a token: exactly what
/// `POST /v1/devices` does, with the hardware serial from the CSR subject's serialNumber and
/// the model from the label.
async fn register(
    state: &AppState,
    caller: &Caller,
    csr_der: &[u8],
    label: Option<String>,
    generate_key: bool,
) -> Result<Registered, EstError> {
    let serial = est::csr_subject_serial(csr_der);
    let target = serial.clone().unwrap_or_else(|| "(no serialNumber)".into());
    let work = async {
        let serial = serial.ok_or_else(|| {
            ApiError::BadRequest(
                "the CSR's subject has no serialNumber (2.5.4.5): EST enrollment with a token \
                 takes the device's hardware serial from it"
                    .into(),
            )
        })?;
        // serverkeygen ignores the CSR's key (RFC 7030 section 4.4.1), but not its signature.
        devid_core::csr::parse_csr_der(csr_der).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let req = RegisterRequest {
            hardware_serial: serial,
            model: model_of(label),
            client_id: None,
            metadata: None,
            csr: (!generate_key).then(|| est::csr_pem(csr_der)),
            generate_key,
            kind: Default::default(),
        };
        Ok::<_, ApiError>(state.registry.register_one(caller, req).await?)
    };
    Ok(caller
        .audit("device.register", &target)
        .run(&state.store, work)
        .await?)
}

/// The certificate of a registration, as a certs-only answer.
fn registered_answer(reg: &Registered) -> Result<Response, EstError> {
    let cert = est::pem_certs(reg.certificate.as_deref().unwrap_or_default());
    let cert = cert
        .first()
        .ok_or_else(|| ApiError::internal("a registration answered no certificate"))?;
    Ok(base64_answer(PKCS7_CERTS_ONLY, &certs_only(&[cert])))
}

/// `cacerts`: every issuing CA still in use and the root, the set `GET /v1/ca` answers.
async fn cacerts_answer(state: &AppState) -> Result<Response, EstError> {
    let set = crate::domain::issuers::ca_set_der(&state.store, &state.ca, crate::timefmt::now())
        .await
        .map_err(|e| EstError(ApiError::from(e)))?;
    let chain: Vec<&[u8]> = set.iter().map(Vec::as_slice).collect();
    Ok(base64_answer(PKCS7, &certs_only(&chain)))
}

/// What an enrollment is: first enrollment, or renewal of the presented certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Enroll,
    Reenroll,
}

/// An enrollment route's whole body: read the request, then [`enroll`].
async fn enroll_request(
    state: AppState,
    req: axum::extract::Request,
    label: Option<String>,
    kind: Kind,
) -> Result<Response, EstError> {
    let (parts, body) = split(req, &state).await?;
    enroll(state, parts.extensions, parts.headers, label, body, kind).await
}

async fn enroll(
    state: AppState,
    ext: axum::http::Extensions,
    headers: HeaderMap,
    label: Option<String>,
    body: Bytes,
    kind: Kind,
) -> Result<Response, EstError> {
    let presented = presented(&ext);
    let action = match kind {
        Kind::Enroll => "est.simpleenroll",
        Kind::Reenroll => "est.simplereenroll",
    };
    // Refusals met here are audited here; the registry and the LDevID issuance audit their own.
    let refuse = |e: EstError| async {
        audit_refusal(&state, &anonymous_actor(presented.as_ref()), action, "", &e).await;
        Err(e)
    };
    let csr_der = match csr_of(&body) {
        Ok(der) => der,
        Err(e) => return refuse(e).await,
    };
    let now = crate::timefmt::now();
    // An expired certificate counts only for re-enrollment (the model's renewal grace is
    // applied by the issuance); everywhere else it is no certificate.
    let usable = presented
        .as_ref()
        .filter(|p| kind == Kind::Reenroll || !p.expired_at(now));
    if let Some(p) = usable {
        return super::est_ldevid::issue(&state, p, csr_der, kind).await;
    }
    if kind == Kind::Reenroll {
        return refuse(EstError(ApiError::Unauthorized)).await;
    }
    match basic_caller(&state, &headers).await {
        Ok(Some(caller)) => {
            registered_answer(&register(&state, &caller, &csr_der, label, false).await?)
        }
        Ok(None) => refuse(EstError(ApiError::Unauthorized)).await,
        Err(e) => refuse(e).await,
    }
}

async fn serverkeygen_answer(
    state: AppState,
    ext: axum::http::Extensions,
    headers: HeaderMap,
    label: Option<String>,
    body: Bytes,
) -> Result<Response, EstError> {
    let presented = presented(&ext).filter(|p| !p.expired_at(crate::timefmt::now()));
    if let Some(p) = &presented {
        // The device's own certificate: an LDevID for a key made here. The CSR (required by
        // RFC 7030 section 4.4.1) is read, not used.
        if let Err(e) = csr_of(&body) {
            audit_refusal(
                &state,
                &anonymous_actor(Some(p)),
                "est.serverkeygen",
                "",
                &e,
            )
            .await;
            return Err(e);
        }
        return super::est_ldevid::serverkeygen(&state, p).await;
    }
    let refuse = |e: EstError| async {
        audit_refusal(&state, &anonymous_actor(None), "est.serverkeygen", "", &e).await;
        Err(e)
    };
    let csr_der = match csr_of(&body) {
        Ok(der) => der,
        Err(e) => return refuse(e).await,
    };
    let caller = match basic_caller(&state, &headers).await {
        Ok(Some(caller)) => caller,
        Ok(None) => return refuse(EstError(ApiError::Unauthorized)).await,
        Err(e) => return refuse(e).await,
    };
    let reg = register(&state, &caller, &csr_der, label, true).await?;
    let Some(key_pem) = reg.private_key.as_deref() else {
        let e = EstError(ApiError::conflict(
            "this device is already registered; its server-made key was returned once, in the \
             first answer, and is not kept",
        ));
        caller
            .audit("device.register", &reg.hardware_serial)
            .failed(&state.store, &e)
            .await;
        return Err(e);
    };
    let key = pem::parse(key_pem).map_err(ApiError::internal)?;
    let cert = est::pem_certs(reg.certificate.as_deref().unwrap_or_default());
    let cert = cert
        .first()
        .ok_or_else(|| ApiError::internal("a registration answered no certificate"))?;
    let boundary = format!("devid-est-{}", reg.serial.as_deref().unwrap_or_default());
    let body = est::serverkeygen_body(key.contents(), &certs_only(&[cert]), &boundary);
    let mut response = (
        [(
            header::CONTENT_TYPE,
            format!("multipart/mixed; boundary={boundary}"),
        )],
        body,
    )
        .into_response();
    response.extensions_mut().insert(EstAnswer);
    Ok(response)
}

/// The CA certificates: issuing CA(s) and root, as a certs-only CMS (base64 DER).
#[utoipa::path(
    get,
    path = "/.well-known/est/cacerts",
    tag = "est",
    responses((status = 200, description = "Certs-only CMS SignedData, base64 of DER", content_type = PKCS7, body = String))
)]
async fn cacerts(State(state): State<AppState>) -> Result<Response, EstError> {
    cacerts_answer(&state).await
}

/// [`cacerts`] under a label (a model name): the same CA certificates.
#[utoipa::path(
    get,
    path = "/.well-known/est/{label}/cacerts",
    tag = "est",
    params(("label" = String, Path, description = "A model name")),
    responses((status = 200, description = "Certs-only CMS SignedData, base64 of DER", content_type = PKCS7, body = String))
)]
async fn cacerts_labeled(
    State(state): State<AppState>,
    Path(_label): Path<String>,
) -> Result<Response, EstError> {
    cacerts_answer(&state).await
}

fn csrattrs_answer() -> Response {
    base64_answer(CSRATTRS, &est::csr_attrs())
}

/// What devid accepts in a CSR: an ECDSA P-256 key, signed with ecdsa-with-SHA256.
#[utoipa::path(
    get,
    path = "/.well-known/est/csrattrs",
    tag = "est",
    responses((status = 200, description = "CsrAttrs, base64 of DER", content_type = CSRATTRS, body = String))
)]
async fn csrattrs() -> Response {
    csrattrs_answer()
}

/// [`csrattrs`] under a label.
#[utoipa::path(
    get,
    path = "/.well-known/est/{label}/csrattrs",
    tag = "est",
    params(("label" = String, Path, description = "A model name")),
    responses((status = 200, description = "CsrAttrs, base64 of DER", content_type = CSRATTRS, body = String))
)]
async fn csrattrs_labeled(Path(_label): Path<String>) -> Response {
    csrattrs_answer()
}

/// Enroll: with the device's TLS client certificate (an IDevID or a valid LDevID), an LDevID
/// for that device; with HTTP Basic and a factory or admin token, a new device registered as
/// `POST /v1/devices` would (hardware serial from the CSR subject's serialNumber).
#[utoipa::path(
    post,
    path = "/.well-known/est/simpleenroll",
    tag = "est",
    request_body(content = String, content_type = PKCS10, description = "PKCS#10, base64 of DER"),
    responses(
        (status = 200, description = "The new certificate, certs-only CMS, base64 of DER", content_type = PKCS7_CERTS_ONLY, body = String),
        (status = 400, description = "Bad request (plain text)", content_type = "text/plain", body = String),
        (status = 401, description = "No usable credential (plain text)", content_type = "text/plain", body = String),
        (status = 403, description = "Refused (plain text)", content_type = "text/plain", body = String),
    )
)]
async fn simpleenroll(
    State(state): State<AppState>,
    req: axum::extract::Request,
) -> Result<Response, EstError> {
    enroll_request(state, req, None, Kind::Enroll).await
}

/// [`simpleenroll`] for the model named by the label.
#[utoipa::path(
    post,
    path = "/.well-known/est/{label}/simpleenroll",
    tag = "est",
    params(("label" = String, Path, description = "A model name")),
    request_body(content = String, content_type = PKCS10, description = "PKCS#10, base64 of DER"),
    responses(
        (status = 200, description = "The new certificate, certs-only CMS, base64 of DER", content_type = PKCS7_CERTS_ONLY, body = String),
        (status = 400, description = "Bad request (plain text)", content_type = "text/plain", body = String),
        (status = 401, description = "No usable credential (plain text)", content_type = "text/plain", body = String),
    )
)]
async fn simpleenroll_labeled(
    State(state): State<AppState>,
    Path(label): Path<String>,
    req: axum::extract::Request,
) -> Result<Response, EstError> {
    enroll_request(state, req, Some(label), Kind::Enroll).await
}

/// Re-enroll with the current certificate (TLS client certificate): the CSR's subject and
/// SAN must be the certificate's; the same key renews, a new key re-keys. An LDevID expired
/// less than its model's renewal grace ago is accepted here, and nowhere else.
#[utoipa::path(
    post,
    path = "/.well-known/est/simplereenroll",
    tag = "est",
    request_body(content = String, content_type = PKCS10, description = "PKCS#10, base64 of DER"),
    responses(
        (status = 200, description = "The new certificate, certs-only CMS, base64 of DER", content_type = PKCS7_CERTS_ONLY, body = String),
        (status = 400, description = "Bad request, or the subject or SAN differs (plain text)", content_type = "text/plain", body = String),
        (status = 401, description = "No usable certificate (plain text)", content_type = "text/plain", body = String),
    )
)]
async fn simplereenroll(
    State(state): State<AppState>,
    req: axum::extract::Request,
) -> Result<Response, EstError> {
    enroll_request(state, req, None, Kind::Reenroll).await
}

/// [`simplereenroll`] under a label.
#[utoipa::path(
    post,
    path = "/.well-known/est/{label}/simplereenroll",
    tag = "est",
    params(("label" = String, Path, description = "A model name")),
    request_body(content = String, content_type = PKCS10, description = "PKCS#10, base64 of DER"),
    responses(
        (status = 200, description = "The new certificate, certs-only CMS, base64 of DER", content_type = PKCS7_CERTS_ONLY, body = String),
        (status = 400, description = "Bad request (plain text)", content_type = "text/plain", body = String),
        (status = 401, description = "No usable certificate (plain text)", content_type = "text/plain", body = String),
    )
)]
async fn simplereenroll_labeled(
    State(state): State<AppState>,
    Path(label): Path<String>,
    req: axum::extract::Request,
) -> Result<Response, EstError> {
    enroll_request(state, req, Some(label), Kind::Reenroll).await
}

/// Server-side key generation (RFC 7030 section 4.4): `multipart/mixed` with a PKCS#8 key made
/// by the server (returned once, not kept) and its certificate. With the device's TLS client
/// certificate: an LDevID for that device. With HTTP Basic and a factory or admin token: a new
/// device, named by the CSR subject's serialNumber. The CSR's key is not used.
#[utoipa::path(
    post,
    path = "/.well-known/est/serverkeygen",
    tag = "est",
    request_body(content = String, content_type = PKCS10, description = "PKCS#10, base64 of DER"),
    responses(
        (status = 200, description = "multipart/mixed: application/pkcs8 and a certs-only CMS", content_type = "multipart/mixed", body = String),
        (status = 400, description = "Bad request (plain text)", content_type = "text/plain", body = String),
        (status = 401, description = "No usable credential (plain text)", content_type = "text/plain", body = String),
    )
)]
async fn serverkeygen(
    State(state): State<AppState>,
    req: axum::extract::Request,
) -> Result<Response, EstError> {
    let (parts, body) = split(req, &state).await?;
    serverkeygen_answer(state, parts.extensions, parts.headers, None, body).await
}

/// [`serverkeygen`] for the model named by the label.
#[utoipa::path(
    post,
    path = "/.well-known/est/{label}/serverkeygen",
    tag = "est",
    params(("label" = String, Path, description = "A model name")),
    request_body(content = String, content_type = PKCS10, description = "PKCS#10, base64 of DER"),
    responses(
        (status = 200, description = "multipart/mixed: application/pkcs8 and a certs-only CMS", content_type = "multipart/mixed", body = String),
        (status = 400, description = "Bad request (plain text)", content_type = "text/plain", body = String),
    )
)]
async fn serverkeygen_labeled(
    State(state): State<AppState>,
    Path(label): Path<String>,
    req: axum::extract::Request,
) -> Result<Response, EstError> {
    let (parts, body) = split(req, &state).await?;
    serverkeygen_answer(state, parts.extensions, parts.headers, Some(label), body).await
}

/// The request's parts and its body (under the server's body limit).
async fn split(
    req: axum::extract::Request,
    state: &AppState,
) -> Result<(axum::http::request::Parts, Bytes), EstError> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, state.settings.max_body_bytes)
        .await
        .map_err(|e| EstError(ApiError::BadRequest(format!("cannot read the body: {e}"))))?;
    Ok((parts, body))
}
