//! What the web console needs of the server, over HTTP against the real binary on SQLite and
//! PostgreSQL: its files with a Content-Security-Policy, `GET /v1/whoami` for every role, and
//! the device search (`q`, a prefix of the ClientID or hardware serial, paged by the server).
//! The console itself runs in a browser in devid-e2e's `tests/console.rs`.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test]
async fn the_console_is_served_with_a_policy_that_admits_only_its_own_files() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        served_with_policy(&server).await;
    }
}

async fn served_with_policy(server: &Server) {
    for (path, media) in [
        ("/", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/pages.js", "text/javascript"),
        ("/console/device.js", "text/javascript"),
        ("/console/plot.js", "text/javascript"),
        ("/console/app.css", "text/css"),
    ] {
        let resp = server.client.get(server.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default()
        };
        assert!(header("content-type").starts_with(media), "{path}");
        let csp = header("content-security-policy");
        assert!(csp.starts_with("default-src 'self';"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        let body = resp.text().await.unwrap();
        assert!(!body.is_empty(), "{path}");
        if path == "/" {
            // No inline script: the page loads its module from this origin only.
            assert!(body.contains(r#"<script type="module" src="/console/app.js"></script>"#));
            assert_eq!(body.matches("<script").count(), 1, "{body}");
        }
    }
    let (status, v) = server.get("/console/secrets.txt", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["status"], 404, "a problem document: {v}");
    let (status, _) = server.get("/?x=1", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn whoami_names_the_calling_token_for_every_role() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let (status, me) = server.admin_get("/v1/whoami").await;
        assert_eq!(status, StatusCode::OK, "{me}");
        assert_eq!(me["role"], "admin", "{me}");
        assert!(server.token.contains(me["token_id"].as_str().unwrap()));
        assert!(me.get("models").is_none(), "{me}");
        for role in ["auditor", "broker", "factory"] {
            let t = server.token(role, None).await;
            let (status, me) = server.get("/v1/whoami", Some(&t)).await;
            assert_eq!(status, StatusCode::OK, "{role}: {me}");
            assert_eq!(me["role"], role, "{me}");
        }
        let t = server.token("factory", Some(vec!["m1", "m2"])).await;
        let (_, me) = server.get("/v1/whoami", Some(&t)).await;
        assert_eq!(me["models"], json!(["m1", "m2"]), "{me}");
        let (status, _) = server.get("/v1/whoami", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = server.get("/v1/whoami", Some("devid_nope_nope")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = server.admin_get("/v1/whoami?role=admin").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
}

fn serials(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["hardware_serial"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn devices_are_found_by_the_start_of_their_client_id_or_serial_a_page_at_a_time() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let mut ids = Vec::new();
        for serial in ["AB-1", "AB-2", "AB-10", "ab-3", "AC-1", "X:AB-9"] {
            let (s, v) = server
                .admin_post(
                    "/v1/devices",
                    &json!({"hardware_serial": serial, "generate_key": true}),
                )
                .await;
            assert_eq!(s, StatusCode::CREATED, "{v}");
            ids.push(v["client_id"].as_str().unwrap().to_string());
        }
        // A device is found when its serial or its ClientID starts with the query, case
        // sensitive: a random ClientID may start with the query too, so what each query must
        // find is worked out from both, in registration order.
        let registered = ["AB-1", "AB-2", "AB-10", "ab-3", "AC-1", "X:AB-9"];
        let found = |q: &str| -> Vec<String> {
            registered
                .iter()
                .zip(&ids)
                .filter(|(serial, id)| serial.starts_with(q) || id.starts_with(q))
                .map(|(serial, _)| serial.to_string())
                .collect()
        };
        assert!(found("A").starts_with(&["AB-1".to_string(), "AB-2".into(), "AB-10".into()]));
        let (s, page) = server.admin_get("/v1/devices?q=AB-").await;
        assert_eq!(s, StatusCode::OK, "{page}");
        assert_eq!(serials(&page), found("AB-"), "case-sensitive, prefix only");
        assert_eq!(found("AB-"), ["AB-1", "AB-2", "AB-10"]);
        let (_, page) = server.admin_get("/v1/devices?q=AB-1").await;
        assert_eq!(serials(&page), ["AB-1", "AB-10"]);
        let (_, page) = server.admin_get("/v1/devices?q=A").await;
        assert_eq!(serials(&page), found("A"));
        // Paged by the server, in registration order.
        let (_, first) = server.admin_get("/v1/devices?q=A&limit=3").await;
        assert_eq!(serials(&first), found("A")[..3]);
        let cursor = first["next_cursor"].as_str().unwrap();
        let (_, rest) = server
            .admin_get(&format!("/v1/devices?q=A&limit=3&cursor={cursor}"))
            .await;
        assert_eq!(serials(&rest), found("A")[3..]);
        assert!(found("A")[3..].contains(&"AC-1".to_string()));
        assert!(rest.get("next_cursor").is_none(), "{rest}");
        // With the other filters.
        let (_, revoked) = server.admin_get("/v1/devices?q=AB&status=revoked").await;
        assert_eq!(serials(&revoked), Vec::<String>::new());
        // By ClientID: the whole ClientID, and its first characters.
        let (_, page) = server.admin_get(&format!("/v1/devices?q={}", ids[4])).await;
        assert_eq!(serials(&page), ["AC-1"]);
        let (_, page) = server
            .admin_get(&format!("/v1/devices?q={}", &ids[5][..10]))
            .await;
        assert!(serials(&page).contains(&"X:AB-9".to_string()), "{page}");
        let (_, none) = server.admin_get("/v1/devices?q=ZZ").await;
        assert_eq!(serials(&none), found("ZZ"));
        // Refused, naming the problem.
        for (query, says) in [
            ("q=", "empty"),
            ("q=AB%25", "position 3"),
            ("q=a_b", "position 2"),
            ("q=%20A", "space"),
            ("q=AB&hardware_serial=AB-1", "exclude each other"),
        ] {
            let (s, v) = server.admin_get(&format!("/v1/devices?{query}")).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{query}: {v}");
            assert!(v["detail"].as_str().unwrap().contains(says), "{query}: {v}");
        }
        let too_long = "A".repeat(65);
        let (s, _) = server.admin_get(&format!("/v1/devices?q={too_long}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
    }
}
