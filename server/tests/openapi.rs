//! The OpenAPI document as the running server serves it: valid for an independent validator,
//! true to what the server answers, and true to the server's role checks. The route table is
//! the only source of both the router and the document; these tests hold the two against each
//! other from the outside.
//!
//! The validator is openapi-spec-validator from PyPI, which scripts/setup.sh installs into
//! `target/tools/openapi-venv` (`DEVID_OPENAPI_VENV` names another virtual environment). Without
//! it the validating test is skipped, except under `CI=true` or `DEVID_TEST_REQUIRE_POSTGRES=1`
//! (scripts/test.sh sets it), where it fails.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// The virtual environment with openapi-spec-validator, or None when the test may be skipped.
fn validator_venv() -> Option<PathBuf> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let venv = var("DEVID_OPENAPI_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/tools/openapi-venv")
        });
    if venv.join("bin/openapi-spec-validator").exists() {
        return Some(venv);
    }
    let ci = var("CI").is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    let required = var("DEVID_TEST_REQUIRE_POSTGRES").is_some_and(|v| v != "0");
    assert!(
        !(ci || required),
        "openapi-spec-validator is not installed in {} and this run requires it (CI=true or \
         DEVID_TEST_REQUIRE_POSTGRES=1): run scripts/setup.sh",
        venv.display()
    );
    eprintln!(
        "skipped: no openapi-spec-validator in {} (scripts/setup.sh installs it)",
        venv.display()
    );
    None
}

/// Whether `cmd` succeeded, and what it printed.
fn verdict(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Runs openapi-spec-validator on `doc`.
fn validate(venv: &std::path::Path, doc: &Value) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "openapi.json", &doc.to_string());
    verdict(Command::new(venv.join("bin/openapi-spec-validator")).arg(&file))
}

/// Checks each `(schema name, value)` against the document's schema with the validator's own
/// OpenAPI 3.1 schema validator (openapi-schema-validator, installed with it).
fn conform(venv: &std::path::Path, doc: &Value, samples: &[(&str, Value)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let doc_file = write(dir.path(), "openapi.json", &doc.to_string());
    let samples_file = write(dir.path(), "samples.json", &json!(samples).to_string());
    let script = r#"
import json, sys
from openapi_schema_validator import OAS31Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
doc = json.load(open(sys.argv[1]))
registry = Registry().with_resource(
    "urn:devid:openapi", Resource.from_contents(doc, default_specification=DRAFT202012))
bad = 0
for name, value in json.load(open(sys.argv[2])):
    schema = {"$ref": "urn:devid:openapi#/components/schemas/" + name}
    for e in OAS31Validator(schema, registry=registry).iter_errors(value):
        bad += 1
        print(f"{name}: {e.message} at {list(e.absolute_path)}")
sys.exit(1 if bad else 0)
"#;
    verdict(
        Command::new(venv.join("bin/python"))
            .arg("-c")
            .arg(script)
            .arg(&doc_file)
            .arg(&samples_file),
    )
}

#[tokio::test]
async fn served_document_passes_an_independent_openapi_validator() {
    let server = Server::start(&Backend::Sqlite).await;
    let resp = server
        .client
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let doc: Value = resp.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let Some(venv) = validator_venv() else {
        return;
    };
    let (ok, said) = validate(&venv, &doc);
    assert!(
        ok,
        "openapi-spec-validator refuses the served document:\n{said}"
    );
    // The validator is awake: a response without its required description is refused.
    let mut broken = doc.clone();
    broken["paths"]["/healthz"]["get"]["responses"]["200"]
        .as_object_mut()
        .unwrap()
        .remove("description");
    let (ok, said) = validate(&venv, &broken);
    assert!(!ok, "a broken document passed: {said}");
}

#[tokio::test]
async fn what_the_server_answers_fits_the_documented_schemas() {
    let Some(venv) = validator_venv() else {
        return;
    };
    let server = Server::start(&Backend::Sqlite).await;
    let (_, doc) = server.get("/openapi.json", None).await;
    let (status, registered) = server
        .admin_post(
            "/v1/devices",
            &json!({"hardware_serial": "OA-1", "model": "thermo-v2", "generate_key": true,
                    "metadata": {"line": 3}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{registered}");
    let id = registered["client_id"].as_str().unwrap().to_string();
    let serial = registered["serial"].as_str().unwrap().to_string();
    let (_, batch) = server
        .admin_post(
            "/v1/devices/batch",
            &json!({"items": [{"hardware_serial": "OA-2", "generate_key": true}]}),
        )
        .await;
    let put = |path: String, body: Value| {
        let server = &server;
        async move {
            let token = server.token.clone();
            server
                .send(Method::PUT, &path, Some(&token), Some(&body))
                .await
                .1
        }
    };
    let allow = put(
        format!("/v1/devices/{id}/allowlist"),
        json!({"cidrs": ["10.0.0.0/8"]}),
    )
    .await;
    let model = put(
        "/v1/models/thermo-v2".into(),
        json!({"client_id_prefix": "th", "message_auth": "required",
               "topics": {"publish": ["t/%c/#"], "subscribe": ["t/%c/#"]}}),
    )
    .await;
    let (_, suspended) = server
        .admin_post(
            &format!("/v1/devices/{id}/suspend"),
            &json!({"comment": "audit"}),
        )
        .await;
    let created = {
        let body = json!({"role": "factory", "name": "line 1", "models": ["thermo-v2"],
                          "expires_in": 3600});
        server.admin_post("/v1/tokens", &body).await.1
    };
    let get = |path: String| {
        let server = &server;
        async move { server.admin_get(&path).await.1 }
    };
    // A sensor behind the device (resumed first: a gateway may be suspended, but not revoked).
    let (status, sensor) = server
        .admin_post(
            "/v1/devices",
            &json!({"hardware_serial": "OA-S1", "kind": "sensor", "model": "thermo-v2"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{sensor}");
    let sensor_id = sensor["client_id"].as_str().unwrap().to_string();
    let attached = put(
        format!("/v1/devices/{id}/sensors"),
        json!({"sensors": [sensor_id]}),
    )
    .await;
    let broker = server.token("broker", None).await;
    let (status, keys) = server
        .get(&format!("/v1/devices/{id}/sensors/keys"), Some(&broker))
        .await;
    assert_eq!(status, StatusCode::OK, "{keys}");
    let samples = [
        ("Health", get("/healthz".into()).await),
        ("Readiness", get("/readyz".into()).await),
        ("Registered", registered),
        ("BatchResponse", batch),
        ("DeviceStatus", allow),
        ("ModelSettings", model),
        ("Device", suspended),
        ("CreatedToken", created),
        ("DeviceList", get("/v1/devices".into()).await),
        ("Device", get(format!("/v1/devices/{id}")).await),
        (
            "DeviceStatus",
            get(format!("/v1/devices/{id}/status")).await,
        ),
        (
            "CertificateInfo",
            get(format!("/v1/certificates/{serial}")).await,
        ),
        ("FeedPage", get("/v1/revocations".into()).await),
        ("TokenList", get("/v1/tokens".into()).await),
        ("AuditPage", get("/v1/audit".into()).await),
        ("ModelList", get("/v1/models".into()).await),
        ("Problem", get("/v1/devices/NOSUCHDEVICE".into()).await),
        ("Problem", server.get("/v1/devices", None).await.1),
        ("Registered", sensor),
        ("GatewaySensors", attached),
        (
            "GatewaySensors",
            get(format!("/v1/devices/{id}/sensors")).await,
        ),
        ("SensorKeys", keys),
        ("Device", get(format!("/v1/devices/{sensor_id}")).await),
        ("FleetSummary", get("/v1/fleet/summary".into()).await),
        ("FleetActivity", get("/v1/fleet/activity".into()).await),
        (
            "FindingPage",
            get("/v1/fleet/findings?state=all".into()).await,
        ),
        (
            "DeviceHealth",
            get(format!("/v1/devices/{id}/health")).await,
        ),
        (
            "AppEventPage",
            get(format!("/v1/devices/{id}/timeline")).await,
        ),
        (
            "CheckThresholds",
            get("/v1/fleet/checks/thermo".into()).await,
        ),
    ];
    let (ok, said) = conform(&venv, &doc, &samples);
    assert!(ok, "answers that break their schema:\n{said}");
    // The check is awake: a device whose status is not a state is refused.
    let mut wrong = samples[9].1.clone();
    wrong["status"] = json!("lost");
    let (ok, said) = conform(&venv, &doc, &[("Device", wrong)]);
    assert!(!ok && said.contains("lost"), "{said}");
}

/// A value for each path parameter, naming nothing that exists.
fn concrete(path: &str) -> String {
    path.replace("{client_id}", "NOSUCHDEVICE1")
        .replace("{serial}", "0abc")
        .replace("{id}", "nosuchtoken")
        .replace("{model}", "nosuchmodel")
        .replace("{gateway}", "NOSUCHDEVICE1")
}

/// A body that passes an operation's JSON extraction, so that the role check is what answers
/// a role it does not admit.
fn sample_body(schema: &str) -> Value {
    match schema {
        "RegisterRequest" => json!({"hardware_serial": "OA-9"}),
        "BatchRequest" => json!({"items": []}),
        "RevokeRequest" => json!({"reason": "superseded"}),
        "BulkRequest" => json!({"filter": {"model": "nosuchmodel"}, "dry_run": true}),
        "ReasonRequest" => json!({}),
        "AllowList" => json!({"cidrs": []}),
        "PolicyUpdate" => json!({}),
        "ModelSettings" => json!({}),
        "CreateTokenRequest" => json!({"role": "auditor", "name": "probe"}),
        "BrokerEnrollRequest" => json!({"name": "mqtt.example.com", "csr": "x"}),
        "EventBatch" => json!({"events": []}),
        "RenewalRequest" => json!({"client_id": "X", "serial": "01", "csr": ""}),
        "SensorAttachment" => json!({"sensors": []}),
        "CheckThresholds" => json!({}),
        "CreateWebhookRequest" => json!({"url": "http://127.0.0.1:9/hook", "kinds": ["revoked"]}),
        other => panic!("no sample body for {other}: add one"),
    }
}

/// The status of a request, and its problem document when it is an error (a success body is
/// not read: the feed's stream never ends).
async fn probe(
    server: &Server,
    method: &Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let mut req = server.client.request(method.clone(), server.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.unwrap();
    if resp.status().is_success() {
        (resp.status(), Value::Null)
    } else {
        json_of(resp).await
    }
}

#[tokio::test]
async fn the_server_serves_what_the_document_says_to_the_roles_it_names() {
    let server = Server::start(&Backend::Sqlite).await;
    let (_, doc) = server.get("/openapi.json", None).await;
    let mut tokens = vec![("admin".to_string(), server.token.clone())];
    for role in ["factory", "broker", "auditor", "app"] {
        tokens.push((role.to_string(), server.token(role, None).await));
    }
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        let target = concrete(path);
        for method in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
        ] {
            let name = method.as_str().to_lowercase();
            let at = format!("{method} {path}");
            let Some(op) = item.get(&name) else {
                // A method the document does not name is not served on this path.
                let (status, _) = probe(&server, &method, &target, Some(&server.token), None).await;
                assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{at}");
                continue;
            };
            operations += 1;
            let body = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                .as_str()
                .map(|r| sample_body(r.rsplit('/').next().unwrap()));
            let roles: Vec<&str> = op["x-devid-roles"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap())
                .collect();
            let (status, problem) = probe(&server, &method, &target, None, body.as_ref()).await;
            assert_ne!(problem["detail"], "no such route", "{at} is not served");
            if roles.is_empty() && method == Method::POST && path.starts_with("/.well-known/est/") {
                // EST authenticates by client certificate or HTTP Basic: with neither (and no
                // CSR) it refuses, in plain text.
                assert!(
                    matches!(status.as_u16(), 400 | 401) && problem.is_string(),
                    "{at}: {status} {problem}"
                );
                continue;
            }
            if roles.is_empty() {
                // A public route that names something in its path finds nothing here: 404.
                let named_nothing = path.contains('{')
                    && status == StatusCode::NOT_FOUND
                    && problem["status"] == 404;
                assert!(
                    status.is_success() || named_nothing,
                    "{at} is public: {status} {problem}"
                );
                continue;
            }
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{at} without a token");
            for (role, token) in &tokens {
                let (status, problem) =
                    probe(&server, &method, &target, Some(token), body.as_ref()).await;
                if roles.contains(&role.as_str()) {
                    assert!(
                        status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED,
                        "{at} documents {role} but refuses it: {status} {problem}"
                    );
                    assert_ne!(problem["detail"], "no such route", "{at} is not served");
                } else {
                    assert_eq!(
                        status,
                        StatusCode::FORBIDDEN,
                        "{at} does not document {role} but lets it through: {problem}"
                    );
                }
            }
        }
    }
    assert_eq!(operations, 68, "operations in the document");
    // And a path the document does not name is not served.
    let (status, problem) = probe(&server, &Method::GET, "/v1/nothing", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(problem["detail"], "no such route");
}
