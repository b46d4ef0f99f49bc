//! The events for applications: the `app` role, what changes append, the event pages and the
//! live stream (resume, filters, the end of a revoked token's stream, and across processes on
//! PostgreSQL).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::sse::{open_sse, read_sse};
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn register(server: &Server, serial: &str, model: Option<&str>) -> Value {
    let mut body = json!({"hardware_serial": serial, "generate_key": true});
    if let Some(m) = model {
        body["model"] = json!(m);
    }
    let (status, reg) = server.admin_post("/v1/devices", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{reg}");
    reg
}

async fn revoke(server: &Server, client_id: &str) {
    let (status, v) = server
        .admin_post(
            &format!("/v1/devices/{client_id}/revoke"),
            &json!({"reason": "keyCompromise"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
}

/// `(id, event name, data)` of each event read, until `n` arrived, the stream ended or the
/// timeout passed.
async fn read_events(
    resp: reqwest::Response,
    n: usize,
    timeout: Duration,
) -> Vec<(i64, String, Value)> {
    read_sse(resp, n, timeout)
        .await
        .into_iter()
        .map(|e| (e.id, e.event.expect("an app event names its kind"), e.data))
        .collect()
}

async fn open_stream(
    server: &Server,
    token: &str,
    query: &str,
    last_event_id: Option<i64>,
) -> reqwest::Response {
    open_sse(
        server,
        &format!("/v1/events/stream{query}"),
        token,
        last_event_id,
    )
    .await
}

#[tokio::test]
async fn an_app_token_reads_devices_and_events_and_nothing_else() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let app = server.token("app", None).await;
        let dev = register(&server, "APP-1", None).await;
        let id = dev["client_id"].as_str().unwrap();
        for path in [
            "/v1/devices".to_string(),
            format!("/v1/devices/{id}"),
            "/v1/events".to_string(),
        ] {
            let (status, v) = server.get(&path, Some(&app)).await;
            assert_eq!(status, StatusCode::OK, "{} {path}: {v}", backend.name());
        }
        let refused: [(Method, String, Option<Value>); 6] = [
            (
                Method::POST,
                "/v1/devices".into(),
                Some(json!({"hardware_serial": "APP-2", "generate_key": true})),
            ),
            (
                Method::POST,
                format!("/v1/devices/{id}/revoke"),
                Some(json!({"reason": "keyCompromise"})),
            ),
            (Method::GET, format!("/v1/devices/{id}/status"), None),
            (Method::GET, "/v1/revocations".into(), None),
            (Method::GET, "/v1/audit".into(), None),
            (
                Method::POST,
                "/v1/tokens".into(),
                Some(json!({"role": "app", "name": "more"})),
            ),
        ];
        for (method, path, body) in refused {
            let (status, v) = server
                .send(method.clone(), &path, Some(&app), body.as_ref())
                .await;
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "{} {method} {path}: {v}",
                backend.name()
            );
        }
        let (_, dev2) = server.get(&format!("/v1/devices/{id}"), Some(&app)).await;
        assert_eq!(dev2["status"], "active", "nothing changed");
    }
}

#[tokio::test]
async fn changes_append_events_that_pages_filter_by_kind_and_model() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let app = server.token("app", None).await;
        let a = register(&server, "EV-A", Some("thermo")).await;
        let b = register(&server, "EV-B", Some("valve")).await;
        let a_id = a["client_id"].as_str().unwrap();
        let b_id = b["client_id"].as_str().unwrap();
        revoke(&server, a_id).await;
        for action in ["suspend", "resume"] {
            let (status, v) = server
                .admin_post(&format!("/v1/devices/{b_id}/{action}"), &json!({}))
                .await;
            assert_eq!(status, StatusCode::OK, "{v}");
        }
        let (status, page) = server.get("/v1/events", Some(&app)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = page["items"].as_array().unwrap();
        let seen: Vec<(String, String)> = items
            .iter()
            .map(|e| {
                (
                    e["kind"].as_str().unwrap().to_string(),
                    e["client_id"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let want: Vec<(String, String)> = [
            ("registered", a_id),
            ("certificate_issued", a_id),
            ("registered", b_id),
            ("certificate_issued", b_id),
            ("revoked", a_id),
            ("suspended", b_id),
            ("resumed", b_id),
        ]
        .iter()
        .map(|(k, c)| (k.to_string(), c.to_string()))
        .collect();
        assert_eq!(seen, want, "{}", backend.name());
        let ids: Vec<i64> = items.iter().map(|e| e["id"].as_i64().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        assert_eq!(items[0]["model"], "thermo");
        assert_eq!(items[0]["data"]["hardware_serial"], "EV-A");
        assert_eq!(items[0]["data"]["kind"], "device");
        assert_eq!(items[1]["data"]["kind"], "idevid");
        assert_eq!(items[1]["data"]["serial"], a["serial"]);
        assert_eq!(items[4]["data"]["reason"], "keyCompromise");
        assert_eq!(items[4]["data"]["serials"], json!([a["serial"]]));
        assert!(page.get("next_cursor").is_none(), "{page}");

        let (_, page) = server
            .get("/v1/events?kind=revoked,resumed", Some(&app))
            .await;
        let kinds: Vec<&str> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["revoked", "resumed"]);
        let (_, page) = server.get("/v1/events?model=valve", Some(&app)).await;
        let items = page["items"].as_array().unwrap();
        assert_eq!(items.len(), 4);
        assert!(items.iter().all(|e| e["client_id"] == b_id));
        // Paging: a full page names where the next starts.
        let (_, first) = server.get("/v1/events?limit=3", Some(&app)).await;
        assert_eq!(first["items"].as_array().unwrap().len(), 3);
        let next = first["next_cursor"].as_str().unwrap();
        assert_eq!(next, ids[2].to_string());
        let (_, rest) = server
            .get(&format!("/v1/events?since={next}"), Some(&app))
            .await;
        assert_eq!(rest["items"][0]["id"].as_i64(), Some(ids[3]));

        for bad in [
            "/v1/events?kind=exploded",
            "/v1/events?model=bad%20model",
            "/v1/events?limit=0",
            "/v1/events?client=x",
        ] {
            let (status, v) = server.get(bad, Some(&app)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {v}");
        }
    }
}

#[tokio::test]
async fn the_stream_pushes_events_live_resumes_without_gaps_and_filters() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let app = server.token("app", None).await;
        let stream = open_stream(&server, &app, "", None).await;
        let a = register(&server, "ST-A", Some("thermo")).await;
        let a_id = a["client_id"].as_str().unwrap().to_string();
        revoke(&server, &a_id).await;
        let events = read_events(stream, 3, Duration::from_secs(10)).await;
        let kinds: Vec<&str> = events.iter().map(|(_, k, _)| k.as_str()).collect();
        assert_eq!(
            kinds,
            ["registered", "certificate_issued", "revoked"],
            "{}",
            backend.name()
        );
        for (id, kind, data) in &events {
            assert_eq!(data["id"].as_i64(), Some(*id));
            assert_eq!(data["kind"].as_str(), Some(kind.as_str()));
            assert_eq!(data["client_id"], a_id.as_str());
        }
        let seen = events[1].0;
        // Resuming after the second: the third, then what happened meanwhile, once each.
        let b = register(&server, "ST-B", Some("valve")).await;
        let stream = open_stream(&server, &app, "", Some(seen)).await;
        let events = read_events(stream, 3, Duration::from_secs(10)).await;
        let got: Vec<(String, String)> = events
            .iter()
            .map(|(_, k, d)| (k.clone(), d["client_id"].as_str().unwrap().to_string()))
            .collect();
        let b_id = b["client_id"].as_str().unwrap().to_string();
        assert_eq!(
            got,
            [
                ("revoked".to_string(), a_id.clone()),
                ("registered".to_string(), b_id.clone()),
                ("certificate_issued".to_string(), b_id.clone()),
            ]
        );
        assert_eq!(events[0].0, seen + 1, "no gap");
        assert!(events.windows(2).all(|w| w[1].0 == w[0].0 + 1), "no gap");
        // `?since=` does the same; Last-Event-ID wins over it.
        let stream = open_stream(&server, &app, &format!("?since={seen}"), None).await;
        let events = read_events(stream, 1, Duration::from_secs(10)).await;
        assert_eq!(events[0].0, seen + 1);
        let stream = open_stream(&server, &app, "?since=0", Some(seen)).await;
        let events = read_events(stream, 1, Duration::from_secs(10)).await;
        assert_eq!(events[0].0, seen + 1);
        // Filters: kind and model, live.
        let filtered = open_stream(&server, &app, "?kind=revoked&model=valve", None).await;
        let c = register(&server, "ST-C", Some("valve")).await;
        revoke(&server, c["client_id"].as_str().unwrap()).await;
        revoke(&server, &b_id).await;
        let events = read_events(filtered, 2, Duration::from_secs(10)).await;
        let got: Vec<(String, String)> = events
            .iter()
            .map(|(_, k, d)| (k.clone(), d["client_id"].as_str().unwrap().to_string()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "revoked".to_string(),
                    c["client_id"].as_str().unwrap().to_string()
                ),
                ("revoked".to_string(), b_id.clone()),
            ]
        );
        let resp = server
            .client
            .get(server.url("/v1/events/stream"))
            .bearer_auth(&app)
            .header("last-event-id", "abc")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    }
}

#[tokio::test]
async fn the_stream_ends_when_its_token_is_revoked() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let (_, created) = server
            .admin_post("/v1/tokens", &json!({"role": "app", "name": "dashboard"}))
            .await;
        let token = created["token"].as_str().unwrap();
        let token_id = created["id"].as_str().unwrap();
        let mut resp = open_stream(&server, token, "", None).await;
        let (status, _) = server
            .send(
                Method::DELETE,
                &format!("/v1/tokens/{token_id}"),
                Some(&server.token.clone()),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        // The stream ends (within the token re-check interval); a hung stream fails here.
        let ended = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(_)) = resp.chunk().await {}
        })
        .await;
        assert!(
            ended.is_ok(),
            "{}: the stream outlived its token",
            backend.name()
        );
    }
}

/// PostgreSQL: an event committed by a second process reaches a stream on the first.
#[tokio::test]
async fn an_event_committed_by_another_process_reaches_the_stream() {
    let Some(backend) = postgres().await else {
        eprintln!("DEVID_TEST_POSTGRES_URL is not set: skipping the two-process test");
        return;
    };
    let a = Server::start(&backend).await;
    let b = a.another_process().await;
    let app = a.token("app", None).await;
    let stream = open_stream(&a, &app, "", None).await;
    let dev = register(&b, "XP-1", None).await;
    let events = read_events(stream, 2, Duration::from_secs(10)).await;
    let kinds: Vec<&str> = events.iter().map(|(_, k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["registered", "certificate_issued"]);
    assert_eq!(events[0].2["client_id"], dev["client_id"]);
}
