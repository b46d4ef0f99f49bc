//! Checks every request passes before it reaches a handler, and the rule every response keeps
//! on its way out:
//!
//! - [`refuse_control_characters`]: no path segment or query parameter holds a control
//!   character, and no request body holds a NUL (`\u0000`; PostgreSQL text cannot store it).
//!   The refusal is a 422 and, when the caller has a valid token, an audit row
//!   (`request.refused`).
//! - [`problem_documents`]: every error response is RFC 9457 `application/problem+json`, also
//!   those axum makes itself (405 with its `Allow` header, rejections of path parameters).
//! - [`query_fields`]: the parameter names a query type takes, so that
//!   [`ApiQuery`](crate::app::ApiQuery) refuses the others.
//! - [`layers`]: the stack around every route, outermost first: the request id and its tracing
//!   span ([`request_context`]), problem documents, request metrics, and the panic guard (a
//!   panicking handler answers a problem+json 500 and the panic is logged).

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::de::{self, Deserializer, Visitor};
use tower_http::catch_panic::CatchPanicLayer;
use tracing::Instrument;

use crate::app::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// The header that carries a request's id, in both directions.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest incoming request id kept as it is.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// Wraps `router` (every route and the fallback) in the layers every request passes, outermost
/// first: [`request_context`], [`problem_documents`], request metrics, and the panic guard.
/// The panic guard is innermost so that a panic's 500 is counted, turned into a problem document
/// and answered with the request id like any other response.
pub fn layers(router: Router, metrics: Arc<Metrics>) -> Router {
    router
        .layer(CatchPanicLayer::custom(
            answer_panic as fn(Box<dyn Any + Send + 'static>) -> Response,
        ))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            count_requests,
        ))
        .layer(axum::middleware::from_fn(problem_documents))
        .layer(axum::middleware::from_fn(request_context))
}

/// The answer to a handler that panicked: a problem+json 500 (the panic message is logged, in
/// the request's span, and not sent).
fn answer_panic(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    ApiError::Internal(format!("handler panicked: {message}")).into_response()
}

async fn count_requests(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(req).await;
    metrics.request(&method, &route, response.status().as_u16());
    response
}

/// Gives the request an id (the caller's `x-request-id` when well-formed, see
/// [`valid_request_id`], else a new one), runs it inside one tracing span that carries the id,
/// method and path (so every log line of the request names it), logs its status and latency at
/// info when the response is ready, and echoes the id in the response's `x-request-id`.
pub async fn request_context(mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let id = match req.headers().get(&REQUEST_ID) {
        Some(v) if valid_request_id(v.as_bytes()) => v.clone(),
        _ => {
            let v = new_request_id();
            req.headers_mut().insert(REQUEST_ID, v.clone());
            v
        }
    };
    let span = tracing::info_span!(
        "request",
        id = %id.to_str().unwrap_or_default(),
        method = %req.method(),
        path = %req.uri().path(),
    );
    let mut response = async {
        let response = next.run(req).await;
        tracing::info!(
            status = response.status().as_u16(),
            latency_us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX),
            "request done"
        );
        response
    }
    .instrument(span)
    .await;
    response.headers_mut().insert(REQUEST_ID, id);
    response
}

/// Whether an incoming request id is kept: 1 to [`MAX_REQUEST_ID_LEN`] characters from
/// `A-Z a-z 0-9 - _ .` (safe in a header, a log line and a JSON string as they are).
pub fn valid_request_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A new request id: 16 lowercase hex digits, distinct for every request of this process and
/// unpredictable across processes (a counter from a random start, passed through a bijective
/// mix), made without a system call.
fn new_request_id() -> HeaderValue {
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        use ring::rand::SecureRandom;
        let mut b = [0u8; 8];
        // Without the system's randomness the ids are still distinct within the process.
        let _ = ring::rand::SystemRandom::new().fill(&mut b);
        u64::from_ne_bytes(b)
    });
    let n = seed.wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed));
    let mut out = [0u8; 16];
    hex::encode_to_slice(splitmix64(n).to_be_bytes(), &mut out).unwrap_or_default();
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// SplitMix64's output function: a bijection on u64, so distinct counters give distinct ids.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The audit action of a request refused here.
pub const REFUSED_ACTION: &str = "request.refused";

/// Refuses control characters in the path and the query, and NUL anywhere in the body, with a
/// 422 before any handler runs. Route layer: runs only for requests that matched a route.
pub async fn refuse_control_characters(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let mut problem = uri_problem(req.uri());
    let req = if problem.is_none() && may_have_body(&req) {
        let (parts, body) = req.into_parts();
        // Buffered under the same limit the body extractors apply (DefaultBodyLimit).
        let bytes =
            match Bytes::from_request(Request::from_parts(parts.clone(), body), &state).await {
                Ok(b) => b,
                Err(rejection) => return ApiError::from(rejection).into_response(),
            };
        problem = body_problem(&bytes);
        Request::from_parts(parts, Body::from(bytes))
    } else {
        req
    };
    let Some(detail) = problem else {
        return next.run(req).await;
    };
    let err = ApiError::unprocessable(detail);
    let (mut parts, _) = req.into_parts();
    if let Ok(caller) = Caller::from_request_parts(&mut parts, &state).await {
        // The URI as received is percent-encoded, so it names the request without the
        // characters it was refused for.
        let target = format!("{} {}", parts.method, parts.uri);
        state
            .audit_failure(&caller, REFUSED_ACTION, &target, &err)
            .await;
    }
    err.into_response()
}

fn may_have_body(req: &Request) -> bool {
    !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        || req.headers().contains_key(header::CONTENT_LENGTH)
        || req.headers().contains_key(header::TRANSFER_ENCODING)
}

/// Why the path or query of `uri` is refused, if it is.
fn uri_problem(uri: &Uri) -> Option<String> {
    if uri
        .path()
        .split('/')
        .any(|s| has_control(&percent_decode(s)))
    {
        return Some("the path holds a control character".to_string());
    }
    for pair in uri.query().unwrap_or("").split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(&key.replace('+', " "));
        let value = percent_decode(&value.replace('+', " "));
        if has_control(&key) {
            return Some("a query parameter name holds a control character".to_string());
        }
        if has_control(&value) {
            return Some(format!(
                "query parameter {} holds a control character",
                key.escape_debug()
            ));
        }
    }
    None
}

/// Why a body is refused, if it is: a NUL, raw or as the JSON escape `\u0000`.
fn body_problem(body: &[u8]) -> Option<String> {
    json_has_nul(body)
        .then(|| "the body holds a NUL character (\\u0000), which no field accepts".to_string())
}

/// Whether `body` holds a NUL byte or a JSON `\u0000` escape. Outside strings JSON has no
/// backslashes, so reading escapes pairwise from the start finds exactly the escaped NULs
/// (`\\u0000` is a backslash followed by the text `u0000`).
fn json_has_nul(body: &[u8]) -> bool {
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            0 => return true,
            b'\\' => {
                if body.get(i + 1) == Some(&b'u')
                    && body.get(i + 2..i + 6) == Some(b"0000".as_slice())
                {
                    return true;
                }
                i += 2;
            }
            _ => i += 1,
        }
    }
    false
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Percent-decodes `s`; bytes that are not UTF-8 become U+FFFD (what matters here is only
/// whether a control character is among them).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Turns every error response that is not yet a problem document (axum's own 405, rejections of
/// extractors that are not ours) into one, keeping its status and headers. EST answers are left
/// alone: RFC 7030 clients get plain text. Client errors keep
/// axum's text as the detail; server errors get the generic one.
pub async fn problem_documents(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || is_problem(&response)
        || response
            .extensions()
            .get::<crate::routes::est::EstAnswer>()
            .is_some()
    {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = if status.is_client_error() {
        axum::body::to_bytes(body, 4096)
            .await
            .ok()
            .and_then(|b| String::from_utf8(b.to_vec()).ok())
    } else {
        None
    };
    let (problem_parts, problem_body) = ApiError::from_status(status, text)
        .into_response()
        .into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in &problem_parts.headers {
        parts.headers.insert(name, value.clone());
    }
    parts.status = problem_parts.status;
    Response::from_parts(parts, problem_body)
}

fn is_problem(response: &Response) -> bool {
    response.headers().get(header::CONTENT_TYPE)
        == Some(&HeaderValue::from_static("application/problem+json"))
}

/// The field names of a struct deserialized with serde's derive (which passes them to
/// `deserialize_struct`); None for types that are not such a struct (maps, or structs with
/// `#[serde(flatten)]`, which serde reads as maps).
pub fn query_fields<T: de::DeserializeOwned>() -> Option<&'static [&'static str]> {
    let mut fields = None;
    let _ = T::deserialize(FieldProbe(&mut fields));
    fields
}

/// A deserializer that gives nothing and only notes the fields it is asked for.
struct FieldProbe<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> Deserializer<'de> for FieldProbe<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some(fields);
        Err(de::Error::custom("fields noted"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_nul_escapes_are_found_and_escaped_backslashes_are_not() {
        assert!(json_has_nul(br#"{"a":"x\u0000"}"#));
        assert!(json_has_nul(b"{\"a\":\"\0\"}"));
        assert!(json_has_nul(br#"{"a\u0000":1}"#));
        assert!(!json_has_nul(br#"{"a":"x\\u0000"}"#));
        assert!(json_has_nul(br#"{"a":"x\\\u0000"}"#));
        assert!(!json_has_nul(br#"{"a":"\u0001 \n \\"}"#));
        assert!(!json_has_nul(br#"{"a":"\"}"#));
    }

    #[test]
    fn control_characters_in_path_and_query() {
        let uri = |s: &str| s.parse::<Uri>().unwrap_or_default();
        assert!(uri_problem(&uri("/v1/tokens/ab%00")).is_some());
        assert!(uri_problem(&uri("/v1/devices?model=a%1Fb")).is_some());
        assert!(uri_problem(&uri("/v1/devices?model=%C2%85")).is_some());
        assert!(uri_problem(&uri("/v1/devices?a%00=1")).is_some());
        assert!(uri_problem(&uri("/v1/devices?model=a+b&status=active")).is_none());
        assert!(uri_problem(&uri("/v1/devices/%41b%")).is_none());
        let p = uri_problem(&uri("/v1/audit?actor=%00")).unwrap_or_default();
        assert!(p.contains("actor"), "{p}");
    }

    #[test]
    fn request_ids() {
        assert!(valid_request_id(b"abc-123_X.y"));
        assert!(valid_request_id(&[b'a'; MAX_REQUEST_ID_LEN]));
        assert!(!valid_request_id(&[b'a'; MAX_REQUEST_ID_LEN + 1]));
        assert!(!valid_request_id(b""));
        assert!(!valid_request_id(b"a b"));
        assert!(!valid_request_id(b"a\"b"));
        assert!(!valid_request_id("é".as_bytes()));
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        for id in [a, b] {
            assert_eq!(id.len(), 16);
            assert!(id.as_bytes().iter().all(|c| c.is_ascii_hexdigit()));
            assert!(valid_request_id(id.as_bytes()));
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%"), "a b%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }

    #[test]
    fn query_fields_of_derived_structs() {
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct Q {
            status: Option<String>,
            #[serde(rename = "max")]
            limit: Option<u32>,
        }
        assert_eq!(query_fields::<Q>(), Some(["status", "max"].as_slice()));
        assert_eq!(
            query_fields::<std::collections::HashMap<String, String>>(),
            None
        );
        assert!(query_fields::<devid_core::api::DeviceListQuery>().is_some());
        assert!(query_fields::<devid_core::api::AuditQuery>().is_some());
        assert_eq!(query_fields::<crate::app::NoQuery>(), Some([].as_slice()));
    }
}
