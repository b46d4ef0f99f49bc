//! The API applies core's value rules (hardware serial, model name, CIDR) and nothing else: what
//! core refuses is a 422 problem that changes nothing, on SQLite and (when
//! DEVID_TEST_POSTGRES_URL is set) on PostgreSQL.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn device_count(server: &Server) -> usize {
    let (_, list) = server.admin_get("/v1/devices").await;
    list["items"].as_array().unwrap().len()
}

#[tokio::test]
async fn hardware_serials_outside_printable_string_are_refused_naming_the_character() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        for (serial, names) in [
            ("SN_0010@y", "'_' (U+005F) at position 3"),
            ("SN 0008*", "'*' (U+002A) at position 8"),
            ("SN\u{d6}11", "U+00D6 at position 3"),
            ("SN\u{202e}11", "U+202E at position 3"),
            ("SN?1", "'?' (U+003F) at position 3"),
            (" SN1", "starts with a space"),
        ] {
            let (status, problem) = server
                .admin_post(
                    "/v1/devices",
                    &json!({"hardware_serial": serial, "generate_key": true}),
                )
                .await;
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{} {serial:?}: {problem}",
                backend.name()
            );
            let detail = problem["detail"].as_str().unwrap_or_default();
            assert!(detail.contains(names), "{serial:?}: {detail}");
            assert!(!detail.contains('\u{202e}'), "{detail}");
        }
        // In a batch, the bad item is named and nothing is stored.
        let (status, problem) = server
            .admin_post(
                "/v1/devices/batch",
                &json!({"items": [
                    {"hardware_serial": "OK-1", "generate_key": true},
                    {"hardware_serial": "SN_2", "generate_key": true}
                ]}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert_eq!(device_count(&server).await, 0, "{}", backend.name());
    }
}

#[tokio::test]
async fn the_certificate_carries_the_hardware_serial_as_printable_string() {
    let server = Server::start(&Backend::Sqlite).await;
    let serial = "SN 0008 (rev.2)/A:B=C";
    let (status, reg) = server
        .admin_post(
            "/v1/devices",
            &json!({"hardware_serial": serial, "generate_key": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{reg}");
    assert_eq!(reg["hardware_serial"], serial);
    let dir = tempfile::tempdir().unwrap();
    let cert = write(dir.path(), "d.pem", reg["certificate"].as_str().unwrap());
    let parsed = run_ok(
        Command::new("openssl")
            .args(["asn1parse", "-in"])
            .arg(&cert),
    );
    // The serialNumber attribute (2.5.4.5) and its value on the next line.
    let mut lines = parsed.lines();
    lines.find(|l| l.contains(":serialNumber")).expect(&parsed);
    let value = lines.next().unwrap();
    assert!(
        value.contains(&format!("PRINTABLESTRING   :{serial}")),
        "{value}\n{parsed}"
    );
}

#[tokio::test]
async fn model_names_made_of_dots_are_refused_everywhere() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let admin = server.token.clone();
        for model in [".", "..", "..."] {
            let (status, problem) = server
                .admin_post(
                    "/v1/devices",
                    &json!({"hardware_serial": "M1", "model": model, "generate_key": true}),
                )
                .await;
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{} {model:?}: {problem}",
                backend.name()
            );
            let (status, problem) = server
                .admin_post(
                    "/v1/tokens",
                    &json!({"role": "factory", "name": "line", "models": [model]}),
                )
                .await;
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "token {model:?}: {problem}"
            );
        }
        // `.` and `..` never reach the route (URL normalization); `...` does and is refused.
        let (status, problem) = server
            .send(
                Method::PUT,
                "/v1/models/...",
                Some(&admin),
                Some(&json!({"client_id_prefix": "AB"})),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        let (_, models) = server.admin_get("/v1/models").await;
        assert_eq!(models["items"], json!([]), "{models}");
        assert_eq!(device_count(&server).await, 0);
        let (_, tokens) = server.admin_get("/v1/tokens").await;
        assert_eq!(tokens["items"].as_array().unwrap().len(), 1, "{tokens}");
    }
}

#[tokio::test]
async fn allow_lists_take_only_what_core_accepts_in_canonical_form() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let admin = server.token.clone();
        let (_, reg) = server
            .admin_post(
                "/v1/devices",
                &json!({"hardware_serial": "AL1", "generate_key": true}),
            )
            .await;
        let id = reg["client_id"].as_str().unwrap().to_string();
        let path = format!("/v1/devices/{id}/allowlist");
        let put = |cidrs: Value| {
            let server = &server;
            let admin = admin.clone();
            let path = path.clone();
            async move {
                server
                    .send(
                        Method::PUT,
                        &path,
                        Some(&admin),
                        Some(&json!({ "cidrs": cidrs })),
                    )
                    .await
            }
        };
        let (code, st) = put(json!(["10.0.0.0/8", "2001:DB8::/32", "192.0.2.7/32"])).await;
        assert_eq!(code, StatusCode::OK, "{st}");
        let want = json!(["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]);
        assert_eq!(st["allowed_cidrs"], want, "{}", backend.name());
        for bad in [
            "10.0.0.0/+8",
            "10.0.0.0/33",
            "10.0.0.1/8",
            " 10.0.0.0/8",
            "::1/129",
            "010.0.0.0/8",
            "10.0.0.0/08",
        ] {
            let (code, problem) = put(json!(["127.0.0.1", bad])).await;
            assert_eq!(
                code,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{} {bad:?}: {problem}",
                backend.name()
            );
            assert!(
                devid_core::Cidr::parse(bad).is_err(),
                "core refuses {bad:?} too"
            );
        }
        let (_, problem) = put(json!(["10.0.0.1/8"])).await;
        assert!(
            problem["detail"].as_str().unwrap().contains("10.0.0.0/8"),
            "{problem}"
        );
        let broker = server.token("broker", None).await;
        let (_, st) = server
            .get(&format!("/v1/devices/{id}/status"), Some(&broker))
            .await;
        assert_eq!(st["allowed_cidrs"], want, "refused lists change nothing");
    }
}
