//! The OpenAPI 3.1 document served at `/openapi.json`. Written by hand from one table of
//! operations; a test checks that every route the router serves is in the table.

use serde_json::{json, Map, Value};

/// One operation: method, path, summary, roles allowed (empty: public), request schema, response
/// schema, success status.
pub struct Op {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub roles: &'static [&'static str],
    pub request: Option<&'static str>,
    pub response: &'static str,
    pub status: &'static str,
}

const ADMIN: &[&str] = &["admin"];
const READERS: &[&str] = &["admin", "auditor"];
const FOLLOWERS: &[&str] = &["admin", "auditor", "broker"];
const PUBLIC: &[&str] = &[];

pub const OPS: &[Op] = &[
    Op {
        method: "get",
        path: "/healthz",
        summary: "Liveness: the process is up",
        roles: PUBLIC,
        request: None,
        response: "Status",
        status: "200",
    },
    Op {
        method: "get",
        path: "/readyz",
        summary: "Readiness: database reachable and CA loaded",
        roles: PUBLIC,
        request: None,
        response: "Status",
        status: "200",
    },
    Op {
        method: "get",
        path: "/metrics",
        summary: "Prometheus metrics (text)",
        roles: PUBLIC,
        request: None,
        response: "Text",
        status: "200",
    },
    Op {
        method: "get",
        path: "/openapi.json",
        summary: "This document",
        roles: PUBLIC,
        request: None,
        response: "Any",
        status: "200",
    },
    Op {
        method: "get",
        path: "/v1/ca",
        summary: "CA chain, PEM, issuing CA first, root last",
        roles: PUBLIC,
        request: None,
        response: "Text",
        status: "200",
    },
    Op {
        method: "get",
        path: "/v1/crl",
        summary: "DER CRL signed by the issuing CA",
        roles: PUBLIC,
        request: None,
        response: "Binary",
        status: "200",
    },
    Op {
        method: "post",
        path: "/v1/devices",
        summary: "Register one device (201 new, 200 idempotent replay)",
        roles: &["admin", "factory"],
        request: Some("RegisterRequest"),
        response: "Registered",
        status: "201",
    },
    Op {
        method: "get",
        path: "/v1/devices",
        summary: "List devices (filters status, model, created_after; cursor pagination)",
        roles: READERS,
        request: None,
        response: "DeviceList",
        status: "200",
    },
    Op {
        method: "post",
        path: "/v1/devices/batch",
        summary: "Register up to 10,000 devices, all or nothing",
        roles: &["admin", "factory"],
        request: Some("BatchRequest"),
        response: "BatchResponse",
        status: "201",
    },
    Op {
        method: "get",
        path: "/v1/devices/{client_id}",
        summary: "One device with its certificates",
        roles: READERS,
        request: None,
        response: "Device",
        status: "200",
    },
    Op {
        method: "get",
        path: "/v1/devices/{client_id}/status",
        summary: "Small status for brokers, with an ETag",
        roles: FOLLOWERS,
        request: None,
        response: "DeviceStatus",
        status: "200",
    },
    Op {
        method: "post",
        path: "/v1/devices/{client_id}/revoke",
        summary: "Revoke a device and all its certificates",
        roles: ADMIN,
        request: Some("RevokeRequest"),
        response: "Device",
        status: "200",
    },
    Op {
        method: "post",
        path: "/v1/devices/{client_id}/suspend",
        summary: "Put a device on hold (certificateHold)",
        roles: ADMIN,
        request: Some("ReasonRequest"),
        response: "Device",
        status: "200",
    },
    Op {
        method: "post",
        path: "/v1/devices/{client_id}/resume",
        summary: "Lift a hold",
        roles: ADMIN,
        request: None,
        response: "Device",
        status: "200",
    },
    Op {
        method: "put",
        path: "/v1/devices/{client_id}/allowlist",
        summary: "Set the CIDRs a device may connect from",
        roles: ADMIN,
        request: Some("AllowList"),
        response: "DeviceStatus",
        status: "200",
    },
    Op {
        method: "put",
        path: "/v1/devices/{client_id}/policy",
        summary: "Per-device topic and message-authentication policy",
        roles: ADMIN,
        request: Some("PolicyUpdate"),
        response: "DeviceStatus",
        status: "200",
    },
    Op {
        method: "get",
        path: "/v1/certificates/{serial}",
        summary: "One certificate",
        roles: FOLLOWERS,
        request: None,
        response: "CertificateInfo",
        status: "200",
    },
    Op {
        method: "post",
        path: "/v1/certificates/{serial}/revoke",
        summary: "Revoke one certificate",
        roles: ADMIN,
        request: Some("RevokeRequest"),
        response: "CertificateInfo",
        status: "200",
    },
    Op {
        method: "get",
        path: "/v1/revocations",
        summary: "Device feed entries (revocations and settings changes) after ?since=N, and the head",
        roles: FOLLOWERS,
        request: None,
        response: "FeedPage",
        status: "200",
    },
    Op {
        method: "get",
        path: "/v1/revocations/stream",
        summary: "Live device feed: revocations and settings changes (Server-Sent Events; Last-Event-ID resumes)",
        roles: FOLLOWERS,
        request: None,
        response: "EventStream",
        status: "200",
    },
    Op {
        method: "post",
        path: "/v1/tokens",
        summary: "Create a token (the secret is shown once)",
        roles: ADMIN,
        request: Some("CreateTokenRequest"),
        response: "CreatedToken",
        status: "201",
    },
    Op {
        method: "get",
        path: "/v1/tokens",
        summary: "List tokens",
        roles: READERS,
        request: None,
        response: "TokenList",
        status: "200",
    },
    Op {
        method: "delete",
        path: "/v1/tokens/{id}",
        summary: "Revoke a token",
        roles: ADMIN,
        request: None,
        response: "TokenInfo",
        status: "200",
    },
    Op {
        method: "get",
        path: "/v1/audit",
        summary: "Audit log (filters since, actor; cursor pagination)",
        roles: READERS,
        request: None,
        response: "AuditPage",
        status: "200",
    },
    Op {
        method: "post",
        path: "/v1/brokers",
        summary: "Enrol a broker: issue a serverAuth certificate for its CSR",
        roles: ADMIN,
        request: Some("BrokerEnrollRequest"),
        response: "BrokerCertificate",
        status: "201",
    },
    Op {
        method: "post",
        path: "/v1/events",
        summary: "Connection events from brokers",
        roles: &["admin", "broker"],
        request: Some("EventBatch"),
        response: "Empty",
        status: "202",
    },
    Op {
        method: "get",
        path: "/v1/models",
        summary: "Per-model settings",
        roles: FOLLOWERS,
        request: None,
        response: "ModelList",
        status: "200",
    },
    Op {
        method: "get",
        path: "/v1/models/{model}",
        summary: "One model's settings",
        roles: FOLLOWERS,
        request: None,
        response: "ModelSettings",
        status: "200",
    },
    Op {
        method: "put",
        path: "/v1/models/{model}",
        summary: "Set a model's ClientID prefix, topic templates and message authentication",
        roles: ADMIN,
        request: Some("ModelSettings"),
        response: "ModelSettings",
        status: "200",
    },
];

fn schema_ref(name: &str) -> Value {
    match name {
        "Text" => json!({"text/plain": {"schema": {"type": "string"}}}),
        "Binary" => {
            json!({"application/pkix-crl": {"schema": {"type": "string", "format": "binary"}}})
        }
        "EventStream" => json!({"text/event-stream": {"schema": {"type": "string"}}}),
        "Any" => json!({"application/json": {"schema": {}}}),
        "Empty" => json!({}),
        "Status" => json!({"application/json": {"schema": {"type": "object"}}}),
        other => {
            json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{other}")}}})
        }
    }
}

/// Names of the schemas the operations refer to (described by their Rust types in devid-core's
/// `api` module; the document keeps them as open objects).
fn schemas() -> Value {
    let mut map = Map::new();
    for op in OPS {
        for name in op.request.iter().chain(std::iter::once(&op.response)) {
            if !["Text", "Binary", "EventStream", "Any", "Empty", "Status"].contains(name) {
                map.insert(
                    (*name).to_string(),
                    json!({"type": "object", "description": format!("devid_core::api::{name}")}),
                );
            }
        }
    }
    map.insert(
        "Problem".into(),
        json!({"type": "object", "required": ["type", "title", "status"], "properties": {
            "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
            "detail": {"type": "string"}, "index": {"type": "integer"}}}),
    );
    Value::Object(map)
}

pub fn document() -> Value {
    let mut paths = Map::new();
    for op in OPS {
        let entry = paths
            .entry(op.path.to_string())
            .or_insert_with(|| json!({}));
        let mut operation = json!({
            "summary": op.summary,
            "x-devid-roles": op.roles,
            "responses": {
                op.status: {"description": "success", "content": schema_ref(op.response)},
                "default": {"description": "problem", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
            }
        });
        if !op.roles.is_empty() {
            operation["security"] = json!([{"bearer": []}]);
        }
        if let Some(req) = op.request {
            operation["requestBody"] = json!({"content": schema_ref(req)});
        }
        let params: Vec<Value> = op
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !params.is_empty() {
            operation["parameters"] = Value::Array(params);
        }
        entry[op.method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "devid", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Device identity and provisioning for IoT fleets"},
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `.route("path", method(...).method(...))` in the route modules is documented.
    #[test]
    fn every_route_is_documented() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/routes");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).expect("routes dir") {
            let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
            for chunk in text.split(".route(\"").skip(1) {
                let (path, rest) = chunk.split_once('"').expect("closing quote");
                let call = &rest[..rest.find(")\n").unwrap_or(rest.len())];
                for method in ["get", "post", "put", "delete"] {
                    if call.contains(&format!("{method}(")) {
                        seen += 1;
                        assert!(
                            OPS.iter().any(|op| op.path == path && op.method == method),
                            "{method} {path} is served but missing from openapi::OPS"
                        );
                    }
                }
            }
        }
        assert_eq!(
            seen,
            OPS.len(),
            "OPS lists operations the router does not serve"
        );
    }

    #[test]
    fn document_has_every_operation() {
        let doc = document();
        for op in OPS {
            assert!(
                doc["paths"][op.path][op.method].is_object(),
                "{} {}",
                op.method,
                op.path
            );
        }
    }
}
