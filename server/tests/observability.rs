//! What every request gets from the layers around the routes: an id (`x-request-id`, kept when
//! the caller's is well-formed, made otherwise) carried by its log lines, and a problem+json 500
//! when its handler panics. The panic test serves a router of its own wrapped in the server's
//! real layer stack (`devid_server::edge::layers`), since no production route panics; the others
//! run the real server binary (request ids do not touch the database: SQLite only).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use common::*;
use devid_server::metrics::Metrics;
use reqwest::StatusCode;
use serde_json::Value;

/// A log writer that keeps what it is given.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn request_id(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("x-request-id")
        .expect("every response has an x-request-id")
        .to_str()
        .unwrap()
        .to_string()
}

fn is_generated_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

// current_thread runtime: the server task runs on this thread, under the capturing subscriber.
#[tokio::test]
async fn a_panicking_handler_answers_problem_json_500_and_the_server_keeps_serving() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let metrics = Arc::new(Metrics::default());
    let routes = Router::new()
        .route(
            "/panic",
            get(|| async {
                if true {
                    panic!("boom in the handler");
                }
                "unreachable"
            }),
        )
        .route("/ok", get(|| async { "fine" }));
    let app = devid_server::edge::layers(routes, metrics.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    install_crypto();
    let client = reqwest::Client::new();

    for round in 0..2 {
        let resp = client
            .get(format!("{base}/panic"))
            .header("x-request-id", format!("panic-{round}"))
            .send()
            .await
            .expect("a panicking handler still gets an answer");
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            resp.headers().get("content-type").unwrap(),
            "application/problem+json"
        );
        assert_eq!(request_id(&resp), format!("panic-{round}"));
        let (_, body) = json_of(resp).await;
        assert_eq!(body["status"], 500, "{body}");
        assert_eq!(body["type"], "urn:devid:problem:internal", "{body}");
        assert!(
            !body.to_string().contains("boom"),
            "the panic message is not sent: {body}"
        );

        // The same client (and connection) is still served.
        let resp = client.get(format!("{base}/ok")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(is_generated_id(&request_id(&resp)));
        assert_eq!(resp.text().await.unwrap(), "fine");
    }

    let rendered = metrics.render();
    assert!(
        rendered.contains(
            "devid_http_requests_total{method=\"GET\",route=\"/panic\",status=\"500\"} 2"
        ),
        "{rendered}"
    );
    // The panic is logged, in the span that names the request.
    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains("handler panicked: boom in the handler"))
        .unwrap_or_else(|| panic!("the panic is logged:\n{text}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("id=panic-0"), "{line}");
    assert!(line.contains("path=/panic"), "{line}");
}

/// The first JSON log line printed by `server` that matches `want`, waiting for it a while.
async fn log_line(server: &Server, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = server
            .output
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| want(v));
        if let Some(v) = found {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "no such log line in:\n{}",
            server.printed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn request_ids_are_echoed_made_or_replaced_and_carried_in_the_logs() {
    let server = Server::start_with(
        &Backend::Sqlite,
        Options {
            env: vec![("DEVID_LOG_FORMAT".into(), "json".into())],
            ..Options::default()
        },
    )
    .await;
    let get = |path: &str, id: Option<&str>| {
        let mut req = server.client.get(server.url(path));
        if let Some(id) = id {
            req = req.header("x-request-id", id);
        }
        req.send()
    };

    // A well-formed id is kept, on success and on error alike.
    let resp = get("/healthz", Some("client-req.42_A")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(request_id(&resp), "client-req.42_A");
    let resp = get("/v1/no-such-route", Some("client-req-404"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(request_id(&resp), "client-req-404");

    // None given: one is made, different for each request.
    let a = request_id(&get("/healthz", None).await.unwrap());
    let b = request_id(&get("/healthz", None).await.unwrap());
    assert!(is_generated_id(&a) && is_generated_id(&b), "{a} {b}");
    assert_ne!(a, b);

    // Malformed (a space, a quote, too long, empty): replaced by a made one.
    let long = "a".repeat(65);
    for bad in ["two words", "quote\"d", long.as_str(), ""] {
        let id = request_id(&get("/healthz", Some(bad)).await.unwrap());
        assert!(is_generated_id(&id), "{bad:?} replaced by {id:?}");
    }

    // The completion line carries the id, method, path, status and latency.
    for (id, path, status) in [
        ("client-req.42_A", "/healthz", 200),
        ("client-req-404", "/v1/no-such-route", 404),
        (a.as_str(), "/healthz", 200),
    ] {
        let line = log_line(&server, |v| {
            v["span"]["id"] == id && v["fields"]["message"] == "request done"
        })
        .await;
        assert_eq!(line["level"], "INFO", "{line}");
        assert_eq!(line["span"]["method"], "GET", "{line}");
        assert_eq!(line["span"]["path"], path, "{line}");
        assert_eq!(line["fields"]["status"], status, "{line}");
        assert!(line["fields"]["latency_us"].is_u64(), "{line}");
    }
}
