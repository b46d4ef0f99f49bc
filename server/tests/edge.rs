//! The HTTP edges: what every request and response passes whatever the route (problem documents,
//! unknown query parameters, control characters, the bearer scheme), and long-lived responses
//! and their tokens. Against the real server binary, on SQLite and (when DEVID_TEST_POSTGRES_URL
//! is set) PostgreSQL.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn is_problem(resp: &reqwest::Response) -> bool {
    resp.headers()
        .get(reqwest::header::CONTENT_TYPE)
        .is_some_and(|v| v == "application/problem+json")
}

/// Sends a request and returns the status, whether it came as problem+json, the `Allow` header
/// and the body.
async fn call(
    server: &Server,
    method: Method,
    path: &str,
    body: Option<String>,
) -> (StatusCode, bool, Option<String>, Value) {
    let mut req = server
        .client
        .request(method, server.url(path))
        .bearer_auth(&server.token);
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let resp = req.send().await.unwrap();
    let problem = is_problem(&resp);
    let allow = resp
        .headers()
        .get(reqwest::header::ALLOW)
        .map(|v| v.to_str().unwrap().to_string());
    let (status, body) = json_of(resp).await;
    (status, problem, allow, body)
}

#[tokio::test]
async fn every_error_is_a_problem_document_unknown_routes_and_methods_included() {
    let server = Server::start(&Backend::Sqlite).await;
    let (status, problem, _, body) = call(&server, Method::GET, "/v1/no-such-route", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(problem, "{body}");
    assert_eq!(body["status"], 404);

    let (status, problem, allow, body) = call(&server, Method::DELETE, "/v1/devices", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(problem, "{body}");
    assert_eq!(body["status"], 405);
    assert_eq!(body["type"], "urn:devid:problem:method-not-allowed");
    let allow = allow.expect("405 keeps its Allow header");
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");

    let (status, problem, allow, body) = call(&server, Method::PATCH, "/v1/tokens", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(problem && allow.is_some(), "{body}");

    // A path parameter axum cannot decode (not UTF-8).
    let (status, problem, _, body) = call(&server, Method::GET, "/v1/devices/%FF", None).await;
    assert!(status.is_client_error(), "{status}");
    assert!(problem, "{status} {body}");
    assert_eq!(body["status"], status.as_u16());
}

#[tokio::test]
async fn unknown_query_parameters_are_refused_naming_them() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let (status, reg) = server
            .admin_post(
                "/v1/devices",
                &json!({"hardware_serial": "Q-1", "model": "thermo", "generate_key": true}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{reg}");
        // Every endpoint that takes a query, with a misspelled parameter.
        let cases = [
            ("/v1/devices?sttaus=revoked", "sttaus"),
            ("/v1/devices?status=active&modle=thermo", "modle"),
            ("/v1/audit?actr=admin", "actr"),
            ("/v1/revocations?sinse=0", "sinse"),
            ("/v1/revocations/stream?sinse=0", "sinse"),
            ("/v1/tokens?role=broker", "role"),
            ("/v1/models?name=thermo", "name"),
        ];
        for (path, name) in cases {
            let (status, problem, _, body) = call(&server, Method::GET, path, None).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
            assert!(problem, "{path}: {body}");
            let detail = body["detail"].as_str().unwrap_or_default();
            assert!(detail.contains(name), "{path}: {detail}");
        }
        // The right names still work, and filter.
        let (status, list) = server.admin_get("/v1/devices?status=revoked").await;
        assert_eq!(status, StatusCode::OK, "{list}");
        assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");
        let (status, list) = server.admin_get("/v1/devices?status=active").await;
        assert_eq!(status, StatusCode::OK, "{list}");
        assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
        for path in [
            "/v1/audit?limit=5",
            "/v1/revocations?since=0&limit=5",
            "/v1/tokens",
            "/v1/models",
        ] {
            let (status, body) = server.admin_get(path).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
        }
    }
}

#[tokio::test]
async fn control_characters_are_refused_with_422_and_the_refusal_is_audited() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let (_, reg) = server
            .admin_post(
                "/v1/devices",
                &json!({"hardware_serial": "NUL-1", "model": "thermo", "generate_key": true}),
            )
            .await;
        let id = reg["client_id"].as_str().unwrap().to_string();
        let connect = |address: &str| {
            json!({"events": [{"kind": "connect", "client_id": id, "at": "2026-11-25T12:00:00Z",
                "address": address}]})
            .to_string()
        };
        let cases: Vec<(Method, String, Option<String>)> = vec![
            (Method::GET, "/v1/devices?hardware_serial=%00".into(), None),
            (Method::GET, "/v1/devices?model=%00".into(), None),
            (Method::GET, "/v1/devices?model=therm%01o".into(), None),
            (Method::GET, "/v1/audit?actor=%00".into(), None),
            (Method::DELETE, "/v1/tokens/ab%00".into(), None),
            (Method::GET, format!("/v1/devices/{id}%00"), None),
            (Method::PUT, "/v1/models/thermo%00".into(), Some("{}".into())),
            (
                Method::POST,
                "/v1/events".into(),
                Some(connect("10.0.0.1:5\u{0}")),
            ),
            (
                Method::POST,
                "/v1/devices".into(),
                Some(r#"{"hardware_serial":"NUL-2\u0000","generate_key":true}"#.into()),
            ),
            (
                Method::POST,
                "/v1/devices/batch".into(),
                Some(r#"{"items":[{"hardware_serial":"NUL-3","metadata":{"a\u0000":1},"generate_key":true}]}"#.into()),
            ),
        ];
        let (_, tokens_before) = server.admin_get("/v1/tokens").await;
        for (method, path, body) in &cases {
            let (status, problem, _, answer) =
                call(&server, method.clone(), path, body.clone()).await;
            let case = format!("{} {method} {path}", backend.name());
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{case}: {answer}");
            assert!(problem, "{case}: {answer}");
            assert_eq!(answer["status"], 422, "{case}");
        }
        // Nothing changed.
        let (_, tokens_after) = server.admin_get("/v1/tokens").await;
        assert_eq!(tokens_before, tokens_after);
        let (_, list) = server.admin_get("/v1/devices").await;
        assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
        let (_, dev) = server.admin_get(&format!("/v1/devices/{id}")).await;
        assert_eq!(dev["last_address"], Value::Null, "{dev}");
        assert_eq!(dev["last_seen"], Value::Null, "{dev}");
        let (status, _) = server.admin_get("/v1/models/thermo").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        // Every refusal has its audit row.
        let (status, audit) = server.admin_get("/v1/audit?limit=1000").await;
        assert_eq!(status, StatusCode::OK, "{audit}");
        let rows = audit["items"].as_array().unwrap();
        for (method, path, _) in &cases {
            let target = format!("{method} {path}");
            assert!(
                rows.iter().any(|r| r["action"] == "request.refused"
                    && r["target"] == target.as_str()
                    && r["outcome"].as_str().unwrap().starts_with("error: 422")),
                "{}: no audit row for {target}: {audit}",
                backend.name()
            );
        }
        // Printable text is unaffected: a newline inside a CSR, a space in a query.
        let (status, _) = server.admin_get("/v1/devices?model=a+b").await;
        assert_eq!(status, StatusCode::OK);
    }
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let server = Server::start(&Backend::Sqlite).await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let resp = server
            .client
            .get(server.url("/v1/tokens"))
            .header("authorization", format!("{scheme} {}", server.token))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{scheme}");
    }
    let resp = server
        .client
        .get(server.url("/v1/tokens"))
        .header("authorization", format!("Basic {}", server.token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

/// Opens the revocation stream with `token`; returns the response once its headers arrived.
async fn open_stream(server: &Server, token: &str) -> reqwest::Response {
    let client = reqwest::Client::new();
    let resp = client
        .get(server.url("/v1/revocations/stream"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp
}

/// Reads `resp` until its body ends (or fails); returns when, or None if still open at
/// `deadline`.
async fn wait_for_end(mut resp: reqwest::Response, deadline: Instant) -> Option<Instant> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, resp.chunk()).await {
            Err(_) => return None,
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None) | Err(_)) => return Some(Instant::now()),
        }
    }
}

/// Ending the stream must happen within 5 s of the token going; this much more is allowed for a
/// loaded test machine.
const MARGIN: Duration = Duration::from_millis(1500);

#[tokio::test]
async fn a_live_stream_ends_when_its_token_is_revoked() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let (_, created) = server
            .admin_post("/v1/tokens", &json!({"role": "broker", "name": "b1"}))
            .await;
        let token = created["token"].as_str().unwrap();
        let token_id = created["id"].as_str().unwrap();
        let resp = open_stream(&server, token).await;
        // Still open a while later.
        let open = wait_for_end(resp, Instant::now() + Duration::from_millis(1200)).await;
        assert_eq!(open, None, "{}: the stream ended by itself", backend.name());
        let resp = open_stream(&server, token).await;
        let (status, _) = server
            .send(
                Method::DELETE,
                &format!("/v1/tokens/{token_id}"),
                Some(&server.token.clone()),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let revoked = Instant::now();
        let ended = wait_for_end(resp, revoked + Duration::from_secs(5) + MARGIN).await;
        assert!(
            ended.is_some(),
            "{}: the stream outlived its token",
            backend.name()
        );
    }
}

#[tokio::test]
async fn a_live_stream_ends_when_its_token_expires() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let (_, created) = server
            .admin_post(
                "/v1/tokens",
                &json!({"role": "broker", "name": "short", "expires_in": 3}),
            )
            .await;
        let made = Instant::now();
        let token = created["token"].as_str().unwrap();
        let resp = open_stream(&server, token).await;
        // The expiry is in whole seconds: at most 3 s after creation, at least 2 s.
        let ended = wait_for_end(resp, made + Duration::from_secs(3 + 5) + MARGIN).await;
        let ended =
            ended.unwrap_or_else(|| panic!("{}: the stream outlived its token", backend.name()));
        assert!(
            ended.duration_since(made) >= Duration::from_millis(1500),
            "{}: ended before the token expired",
            backend.name()
        );
    }
}

#[tokio::test]
async fn a_stream_ends_when_its_token_is_revoked_through_another_process() {
    let Some(backend) = postgres().await else {
        // Only off CI: under CI `postgres()` fails the test instead.
        return;
    };
    let a = Server::start(&backend).await;
    let b = a.another_process().await;
    let (_, created) = a
        .admin_post("/v1/tokens", &json!({"role": "broker", "name": "b2"}))
        .await;
    let token = created["token"].as_str().unwrap();
    let resp = open_stream(&b, token).await;
    let (status, _) = a
        .send(
            Method::DELETE,
            &format!("/v1/tokens/{}", created["id"].as_str().unwrap()),
            Some(&a.token.clone()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let ended = wait_for_end(resp, Instant::now() + Duration::from_secs(5) + MARGIN).await;
    assert!(
        ended.is_some(),
        "the stream on the other process outlived its token"
    );
}
