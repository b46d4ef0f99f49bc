//! Webhooks against a real HTTP receiver in the test: signed deliveries in event order, a
//! retry after the receiver answers 500, redelivery, and registration while the receiver is
//! down; on SQLite and PostgreSQL. On PostgreSQL also two processes: one worker at a time (the
//! lease), and the other taking over when the holder dies.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxStatus};
use base64::Engine as _;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// What the receiver got: the request's `devid-event-id`, `devid-signature`, body, and the
/// status it answered.
#[derive(Debug, Clone)]
struct Got {
    event_id: i64,
    signature: String,
    body: Vec<u8>,
    answered: u16,
}

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Got>>>,
    /// Statuses to answer, in turn; 200 once empty.
    script: Arc<Mutex<VecDeque<u16>>>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> AxStatus {
    let answered = r.script.lock().unwrap().pop_front().unwrap_or(200);
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    r.got.lock().unwrap().push(Got {
        event_id: header("devid-event-id").parse().unwrap_or(-1),
        signature: header("devid-signature"),
        body: body.to_vec(),
        answered,
    });
    AxStatus::from_u16(answered).unwrap()
}

/// A receiver on a free port; its URL.
async fn start_receiver(r: &Receiver) -> String {
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/hook")
}

/// Checks `devid-signature` as docs/webhooks.md tells a receiver to.
fn signature_ok(secret: &str, got: &Got) -> bool {
    let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(secret)
        .unwrap();
    let (t, v1) = got.signature.split_once(",v1=").unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let msg = [format!("{t}.").as_bytes(), &got.body].concat();
    ring::hmac::verify(&key, &msg, &hex::decode(v1).unwrap()).is_ok()
}

async fn wait_for<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn register(server: &Server, serial: &str) -> Value {
    let (status, reg) = server
        .admin_post(
            "/v1/devices",
            &json!({"hardware_serial": serial, "generate_key": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{reg}");
    reg
}

async fn create_webhook(server: &Server, url: &str, kinds: &[&str]) -> Value {
    let (status, hook) = server
        .admin_post("/v1/webhooks", &json!({"url": url, "kinds": kinds}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    hook
}

async fn deliveries(server: &Server, id: &str) -> Vec<Value> {
    let (status, v) = server
        .admin_get(&format!("/v1/webhooks/{id}/deliveries"))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn deliveries_are_signed_in_order_retried_and_redelivered() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let receiver = Receiver::default();
        receiver.script.lock().unwrap().push_back(500);
        let url = start_receiver(&receiver).await;
        let hook = create_webhook(&server, &url, &["registered", "revoked"]).await;
        let id = hook["id"].as_str().unwrap();
        let secret = hook["secret"].as_str().unwrap();
        assert_eq!(secret.len(), 43, "32 bytes, base64url");
        let a = register(&server, "WH-A").await;
        let b = register(&server, "WH-B").await;
        let a_id = a["client_id"].as_str().unwrap();
        let (status, _) = server
            .admin_post(
                &format!("/v1/devices/{a_id}/revoke"),
                &json!({"reason": "keyCompromise"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let got = wait_for("three events delivered", async || {
            let got = receiver.got.lock().unwrap().clone();
            let ok = got.iter().filter(|g| g.answered == 200).count();
            (ok >= 3).then_some(got)
        })
        .await;
        let name = backend.name();
        assert!(
            got.iter().all(|g| signature_ok(secret, g)),
            "{name}: signature"
        );
        // The first answer was a 500: the same event again, then the others in order.
        assert_eq!(got[0].answered, 500, "{name}");
        assert_eq!(got[1].event_id, got[0].event_id, "{name}: retried");
        let delivered: Vec<Value> = got
            .iter()
            .filter(|g| g.answered == 200)
            .map(|g| serde_json::from_slice(&g.body).unwrap())
            .collect();
        let seen: Vec<(String, Value)> = delivered
            .iter()
            .map(|e| {
                (
                    e["kind"].as_str().unwrap().to_string(),
                    e["client_id"].clone(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("registered".to_string(), a["client_id"].clone()),
                ("registered".to_string(), b["client_id"].clone()),
                ("revoked".to_string(), a["client_id"].clone()),
            ],
            "{name}: kinds filtered, in order"
        );
        for (g, e) in got.iter().filter(|g| g.answered == 200).zip(&delivered) {
            assert_eq!(e["id"].as_i64(), Some(g.event_id));
        }
        let list = wait_for("the deliveries recorded", async || {
            let list = deliveries(&server, id).await;
            list.iter()
                .all(|d| d["state"] == "delivered")
                .then_some(list)
        })
        .await;
        assert_eq!(list.len(), 3);
        // Newest first: the oldest was tried twice.
        assert_eq!(list[2]["attempts"], 2, "{list:?}");
        assert_eq!(list[0]["attempts"], 1);
        assert_eq!(list[0]["kind"], "revoked");
        // Redelivery: the first event again.
        let delivery = list[2]["id"].as_i64().unwrap();
        let (status, d) = server
            .admin_post(
                &format!("/v1/webhooks/{id}/deliveries/{delivery}/redeliver"),
                &json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{d}");
        assert_eq!(d["state"], "pending");
        let again = wait_for("the redelivery", async || {
            let got = receiver.got.lock().unwrap().clone();
            (got.len() >= 5).then(|| got[4].clone())
        })
        .await;
        assert_eq!(again.event_id, list[2]["event_id"].as_i64().unwrap());
        assert!(signature_ok(secret, &again));
        let (status, _) = server
            .admin_post(
                &format!("/v1/webhooks/{id}/deliveries/999999/redeliver"),
                &json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        // Listed without its secret; deleted, it is gone.
        let (_, hooks) = server.admin_get("/v1/webhooks").await;
        assert_eq!(hooks["items"][0]["id"], id);
        assert!(hooks["items"][0].get("secret").is_none());
        let (status, _) = server
            .send(
                Method::DELETE,
                &format!("/v1/webhooks/{id}"),
                Some(&server.token.clone()),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = server
            .admin_get(&format!("/v1/webhooks/{id}/deliveries"))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn registration_goes_on_while_the_receiver_is_down() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        // A port nobody listens on.
        let down = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}/hook", l.local_addr().unwrap())
        };
        let hook = create_webhook(&server, &down, &["registered"]).await;
        let id = hook["id"].as_str().unwrap();
        for i in 0..20 {
            register(&server, &format!("DOWN-{i}")).await;
        }
        let list = wait_for("20 deliveries, the first tried", async || {
            let list = deliveries(&server, id).await;
            let tried = list
                .last()
                .is_some_and(|d| d["attempts"].as_u64() >= Some(1));
            (list.len() == 20 && tried).then_some(list)
        })
        .await;
        let first = &list[19];
        assert_eq!(first["state"], "pending", "{}", backend.name());
        assert!(first["last_error"].is_string(), "{first}");
        assert!(first["next_attempt_at"].is_string());
        // In order: nothing after the first was tried while it fails.
        assert!(list[..19].iter().all(|d| d["attempts"] == 0));
    }
}

#[tokio::test]
async fn webhook_requests_are_checked() {
    let server = Server::start(&Backend::Sqlite).await;
    for body in [
        json!({"url": "ftp://x/", "kinds": ["revoked"]}),
        json!({"url": "https://x/", "kinds": []}),
        json!({"url": "https://x/", "kinds": ["exploded"]}),
        json!({"url": "https://x/", "kinds": ["revoked"], "models": ["bad model"]}),
        json!({"url": "https://x/", "kinds": ["revoked"], "extra": 1}),
    ] {
        let (status, v) = server.admin_post("/v1/webhooks", &body).await;
        assert!(status.is_client_error(), "{body}: {status} {v}");
    }
    let (_, hooks) = server.admin_get("/v1/webhooks").await;
    assert_eq!(hooks["items"], json!([]), "nothing was created");
}

/// PostgreSQL: two processes, one worker (the lease): each event reaches the receiver once,
/// in order, whichever process registered it.
#[tokio::test]
async fn two_processes_deliver_each_event_once_in_order() {
    let Some(backend) = postgres().await else {
        eprintln!("DEVID_TEST_POSTGRES_URL is not set: skipping the two-process test");
        return;
    };
    let a = Server::start(&backend).await;
    let b = a.another_process().await;
    let receiver = Receiver::default();
    let url = start_receiver(&receiver).await;
    let hook = create_webhook(&a, &url, &["registered"]).await;
    let secret = hook["secret"].as_str().unwrap();
    for i in 0..10 {
        let server = if i % 2 == 0 { &a } else { &b };
        register(server, &format!("TP-{i}")).await;
    }
    let got = wait_for("ten deliveries", async || {
        let got = receiver.got.lock().unwrap().clone();
        (got.len() >= 10).then_some(got)
    })
    .await;
    // A little longer: a second worker would deliver duplicates meanwhile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got_now = receiver.got.lock().unwrap().clone();
    assert_eq!(got_now.len(), 10, "each event once");
    let ids: Vec<i64> = got.iter().map(|g| g.event_id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in order: {ids:?}");
    assert!(got.iter().all(|g| signature_ok(secret, g)));
}

/// PostgreSQL: the process holding the worker lease dies (SIGKILL, so the lease is left to
/// expire); the other process takes the lease over and delivers the rest, events made before
/// and after the death alike, none lost and each device's in order.
#[tokio::test]
async fn another_process_takes_over_deliveries_when_the_lease_holder_dies() {
    let Some(backend) = postgres().await else {
        eprintln!("DEVID_TEST_POSTGRES_URL is not set: skipping the lease takeover test");
        return;
    };
    let mut a = Server::start(&backend).await;
    let receiver = Receiver::default();
    let url = start_receiver(&receiver).await;
    let kinds = ["registered", "suspended", "resumed", "revoked"];
    create_webhook(&a, &url, &kinds).await;
    // Alone, the first process takes the lease and delivers.
    let mut devices = Vec::new();
    for i in 0..3 {
        let reg = register(&a, &format!("LT-{i}")).await;
        devices.push(reg["client_id"].as_str().unwrap().to_string());
    }
    wait_for("the first process delivering", async || {
        (receiver.got.lock().unwrap().len() >= 3).then_some(())
    })
    .await;
    let b = a.another_process().await;
    // Events through the holder, which then dies, likely with some not yet delivered.
    for id in &devices {
        let (status, v) = a
            .admin_post(&format!("/v1/devices/{id}/suspend"), &json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
    }
    a.kill();
    // More through the survivor.
    for id in &devices {
        let (status, v) = b
            .admin_post(&format!("/v1/devices/{id}/resume"), &json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let (status, v) = b
            .admin_post(
                &format!("/v1/devices/{id}/revoke"),
                &json!({"reason": "superseded"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
    }
    let (status, page) = b
        .admin_get(&format!("/v1/events?since=0&kind={}", kinds.join(",")))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let events: Vec<(i64, String)> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let cid = e["client_id"].as_str().unwrap().to_string();
            (e["id"].as_i64().unwrap(), cid)
        })
        .collect();
    assert_eq!(events.len(), 12, "{page}");
    // The lease expires 30 s after the last renewal; then the survivor delivers everything.
    let got = wait_for("every event delivered after the takeover", async || {
        let got = receiver.got.lock().unwrap().clone();
        events
            .iter()
            .all(|(id, _)| got.iter().any(|g| g.event_id == *id && g.answered == 200))
            .then_some(got)
    })
    .await;
    // At least once: a delivery in flight when the holder died may come twice. The first
    // arrival of each event is in event order, so each device's events are in order too.
    let mut first: Vec<i64> = Vec::new();
    for g in &got {
        if !first.contains(&g.event_id) {
            first.push(g.event_id);
        }
    }
    assert!(first.windows(2).all(|w| w[0] < w[1]), "in order: {first:?}");
    for id in &devices {
        let mine: Vec<i64> = events
            .iter()
            .filter(|(_, c)| c == id)
            .map(|(e, _)| *e)
            .collect();
        let arrived: Vec<i64> = first.iter().copied().filter(|e| mine.contains(e)).collect();
        assert_eq!(arrived, mine, "{id}: all four, in order");
    }
}

/// PostgreSQL: a process that stops (SIGTERM) gives its worker lease up, so the other process
/// delivers at once, well before the 30 s lease would have lapsed.
#[tokio::test]
async fn a_process_that_stops_hands_deliveries_over_at_once() {
    let Some(backend) = postgres().await else {
        eprintln!("DEVID_TEST_POSTGRES_URL is not set: skipping the hand-over test");
        return;
    };
    let mut a = Server::start(&backend).await;
    let receiver = Receiver::default();
    let url = start_receiver(&receiver).await;
    create_webhook(&a, &url, &["registered"]).await;
    // Alone, the first process holds the lease and delivers.
    register(&a, "HO-0").await;
    wait_for("the first delivery", async || {
        (receiver.got.lock().unwrap().len() == 1).then_some(())
    })
    .await;
    let b = a.another_process().await;
    assert!(a.stop().success(), "{}", a.printed());
    let stopped = Instant::now();
    register(&b, "HO-1").await;
    wait_for("the delivery after the hand-over", async || {
        (receiver.got.lock().unwrap().len() == 2).then_some(())
    })
    .await;
    assert!(
        stopped.elapsed() < Duration::from_secs(25),
        "delivered {:?} after the holder stopped: its lease was not given up",
        stopped.elapsed()
    );
}
