//! The OpenAPI 3.1 document served at `/openapi.json`, derived from the route table
//! (`crate::routes::table`): paths, parameters and bodies from each handler's
//! `#[utoipa::path]`, schemas from devid-core's API and value types (`utoipa::ToSchema`), roles
//! from each route's [`Access`], the one the handler's check reads.
//!
//! Every error is an RFC 9457 problem document (`application/problem+json`, schema `Problem`).
//! Operations name the problem responses particular to them (`response = NotFound`); the
//! document adds 401 and 403 to every operation that needs a token, and a `default` problem
//! response (422 for control characters in the path or query, 500, 503) to every operation.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use devid_core::api::Problem;
use serde_json::{json, Value};
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::path::{Operation, Paths};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{OpenApi, Ref, RefOr, Response};
use utoipa::PartialSchema;

use crate::routes::Access;

/// Media type of every error response.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A problem response of `components/responses`.
pub trait ProblemResponse {
    const NAME: &'static str;
    const STATUS: &'static str;
    const DESCRIPTION: &'static str;
}

/// The status and a reference of the problem response `P`, for an operation's responses.
fn reference<P: ProblemResponse>() -> (String, RefOr<Response>) {
    (
        P::STATUS.to_string(),
        Ref::from_response_name(P::NAME).into(),
    )
}

/// Declares the problem responses: marker types for `#[utoipa::path]`'s
/// `(status = N, response = Marker)`, and the list the document's components are made from.
macro_rules! problem_responses {
    ($( $name:ident $status:literal $description:literal; )*) => {
        $(
            #[doc = concat!("`", $status, "`: ", $description)]
            pub struct $name;

            impl ProblemResponse for $name {
                const NAME: &'static str = stringify!($name);
                const STATUS: &'static str = $status;
                const DESCRIPTION: &'static str = $description;
            }

            impl<'r> utoipa::ToResponse<'r> for $name {
                fn response() -> (&'r str, RefOr<Response>) {
                    (Self::NAME, problem_response(Self::DESCRIPTION))
                }
            }
        )*

        /// (component name, description) of every problem response.
        const PROBLEM_RESPONSES: &[(&str, &str)] = &[$( ($name::NAME, $name::DESCRIPTION), )*];
    };
}

problem_responses! {
    BadRequest "400" "The request is malformed: a body that is not JSON, an unknown query \
        parameter, a bad cursor or time.";
    Unauthorized "401" "No valid bearer token: missing, unknown, revoked or expired.";
    Forbidden "403" "The token's role may not do this (for a factory token: not for this model).";
    NotFound "404" "No such device, certificate, token or model.";
    Conflict "409" "The request conflicts with what is stored (another device has this serial, \
        ClientID or key; the device is revoked).";
    PayloadTooLarge "413" "The body, or its number of items, is over the limit.";
    UnsupportedMediaType "415" "The body is not `application/json`.";
    Unprocessable "422" "Well-formed but unacceptable: a value breaks its rule (the detail \
        names it; in a batch, `index` names the item).";
    Unavailable "503" "The database is unreachable or the CA is not loaded.";
}

/// A problem response with `description`.
fn problem_response(description: &str) -> RefOr<Response> {
    Response::builder()
        .description(description)
        .content(
            PROBLEM_JSON,
            utoipa::openapi::Content::new(Some(Ref::from_schema_name("Problem"))),
        )
        .into()
}

/// The problems of an operation whose body is JSON: bad JSON, too large, not JSON, or a field
/// that breaks its rule.
pub struct JsonBodyProblems;

impl utoipa::IntoResponses for JsonBodyProblems {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        BTreeMap::from([
            reference::<BadRequest>(),
            reference::<PayloadTooLarge>(),
            reference::<UnsupportedMediaType>(),
            reference::<Unprocessable>(),
        ])
    }
}

/// Where EST lives (RFC 7030 section 3.2.2): its operations answer errors in plain text.
pub const EST_PREFIX: &str = "/.well-known/est/";

/// The operations of a path item.
fn operations(paths: &mut Paths) -> impl Iterator<Item = &mut Operation> {
    paths.paths.values_mut().flat_map(|item| {
        [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ]
        .into_iter()
        .flatten()
    })
}

/// Writes `access` into the operations of `paths`: the `x-devid-roles` extension (empty:
/// public), for a token's routes the bearer security requirement naming the roles (OpenAPI
/// 3.1 allows role names there for an HTTP scheme), a line of the description, and the 401
/// and 403 responses.
pub fn document_access(paths: &mut Paths, access: Access) {
    let roles: Vec<&str> = match access {
        Access::Public => Vec::new(),
        Access::Roles(roles) => roles.iter().map(|r| r.as_str()).collect(),
    };
    for op in operations(paths) {
        let line = if roles.is_empty() {
            "Public: no token needed.".to_string()
        } else {
            format!("Roles: {}.", roles.join(", "))
        };
        op.description = Some(match op.description.take() {
            Some(d) if !d.is_empty() => format!("{d}\n\n{line}"),
            _ => line,
        });
        let ext = ExtensionsBuilder::new()
            .add("x-devid-roles", json!(roles))
            .build();
        op.extensions
            .get_or_insert_with(Default::default)
            .merge(ext);
        if !roles.is_empty() {
            op.security = Some(vec![SecurityRequirement::new("bearer", roles.clone())]);
            let problems = [reference::<Unauthorized>(), reference::<Forbidden>()];
            op.responses.responses.extend(problems);
        }
    }
}

/// The document, built from the route table.
pub fn document() -> Value {
    let (_, api) = crate::routes::table().split();
    complete(api)
}

/// The document as served (built once).
pub fn document_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| document().to_string())
}

/// An optional parameter or body is absent, never `null`: utoipa writes `Option<T>` as "T or
/// null", which is right for a JSON field and wrong for an operation's inputs (a header, a
/// path or query parameter cannot be null; the body `null` is refused).
fn inputs_not_null(op: &mut Value) {
    for (key, value) in op.as_object_mut().into_iter().flatten() {
        let schemas: Vec<&mut Value> = match key.as_str() {
            "parameters" => value
                .as_array_mut()
                .into_iter()
                .flatten()
                .filter_map(|p| p.get_mut("schema"))
                .collect(),
            "requestBody" => value
                .get_mut("content")
                .and_then(Value::as_object_mut)
                .into_iter()
                .flat_map(|c| c.values_mut())
                .filter_map(|m| m.get_mut("schema"))
                .collect(),
            _ => Vec::new(),
        };
        schemas.into_iter().for_each(not_null);
    }
}

fn not_null(schema: &mut Value) {
    if let Some(types) = schema.get_mut("type").and_then(Value::as_array_mut) {
        types.retain(|t| t != "null");
        if let [one] = types.as_slice() {
            schema["type"] = one.clone();
        }
    }
    if let Some(options) = schema.get_mut("oneOf").and_then(Value::as_array_mut) {
        options.retain(|o| o["type"] != "null");
        if let [one] = options.as_slice() {
            *schema = one.clone();
        }
    }
}

/// Adds what the route table does not carry: info, the security scheme, the problem schema
/// and responses, each operation's `default` problem response.
fn complete(mut api: OpenApi) -> Value {
    api.info = utoipa::openapi::InfoBuilder::new()
        .title("devid")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "Device identity for IoT fleets: registration and certificates of devices, their \
             lifecycle and revocation feed, broker enrolment and per-device policy. \
             Authentication: `Authorization: Bearer <token>`; each operation names the roles \
             it admits (`x-devid-roles`, and the bearer requirement's role names). Times are \
             RFC 3339 in UTC; certificate serials and fingerprints are lowercase hex.",
        ))
        .build();
    // EST answers its errors in plain text (RFC 7030); everything else in problem documents.
    let (est, mut rest): (Paths, Paths) = {
        let mut est = Paths::new();
        let mut rest = Paths::new();
        for (path, item) in std::mem::take(&mut api.paths.paths) {
            if path.starts_with(EST_PREFIX) {
                est.paths.insert(path, item);
            } else {
                rest.paths.insert(path, item);
            }
        }
        (est, rest)
    };
    for op in operations(&mut rest) {
        op.responses.responses.insert(
            "default".to_string(),
            problem_response(
                "Any other error, as a problem document: 422 for control characters in the \
                 path or query, 500 (logged under the response's `x-request-id`), 503.",
            ),
        );
    }
    let mut est = est;
    for op in operations(&mut est) {
        op.responses.responses.insert(
            "default".to_string(),
            Response::builder()
                .description("Any other error, as plain text a person can read (RFC 7030).")
                .content(
                    "text/plain",
                    utoipa::openapi::Content::new(Some(String::schema())),
                )
                .into(),
        );
    }
    rest.paths.append(&mut est.paths);
    api.paths.paths = rest.paths;
    let mut doc = serde_json::to_value(&api).expect("utoipa's OpenApi serializes to JSON");
    for item in doc["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|p| p.values_mut())
    {
        for op in item
            .as_object_mut()
            .into_iter()
            .flat_map(|o| o.values_mut())
        {
            inputs_not_null(op);
        }
    }
    let components = &mut doc["components"];
    components["securitySchemes"] = json!({
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "A devid token, `devid_<id>_<secret>`, made by `POST /v1/tokens`.",
        }
    });
    components["schemas"]["Problem"] = json!(Problem::schema());
    let responses: serde_json::Map<String, Value> = PROBLEM_RESPONSES
        .iter()
        .map(|(name, description)| (name.to_string(), json!(problem_response(description))))
        .collect();
    components["responses"] = Value::Object(responses);
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    /// Every schema of `v` (reached at `at`) with where it is: the values of `schema`,
    /// `contentSchema`, `items`, `additionalProperties`, of `properties` and
    /// `components/schemas`, and the members of `oneOf`, `anyOf`, `allOf`.
    fn schemas<'a>(v: &'a Value, at: String, out: &mut Vec<(String, &'a Value)>) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    let here = format!("{at}/{k}");
                    match k.as_str() {
                        "schema" | "contentSchema" | "items" => out.push((here.clone(), child)),
                        "additionalProperties" if child.is_object() => {
                            out.push((here.clone(), child))
                        }
                        "properties" | "schemas" => {
                            for (name, s) in child.as_object().into_iter().flatten() {
                                out.push((format!("{here}/{name}"), s));
                            }
                        }
                        "oneOf" | "anyOf" | "allOf" => {
                            for (i, s) in child.as_array().into_iter().flatten().enumerate() {
                                out.push((format!("{here}/{i}"), s));
                            }
                        }
                        // Values, not schemas.
                        "examples" | "example" | "enum" | "const" | "default" => continue,
                        _ => {}
                    }
                    schemas(child, here, out);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    schemas(child, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }

    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    match (k.as_str(), child) {
                        ("$ref", Value::String(r)) => out.push(r),
                        _ => refs(child, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|c| refs(c, out)),
            _ => {}
        }
    }

    #[test]
    fn every_schema_says_what_it_holds() {
        let doc = document();
        let mut found = Vec::new();
        schemas(&doc, String::new(), &mut found);
        assert!(
            found.len() > 100,
            "the walk finds the schemas: {}",
            found.len()
        );
        let says = ["type", "$ref", "oneOf", "anyOf", "allOf", "enum", "const"];
        let empty: Vec<&String> = found
            .iter()
            .filter(|(_, s)| !says.iter().any(|k| s.get(k).is_some()))
            .map(|(at, _)| at)
            .collect();
        assert!(empty.is_empty(), "schemas that admit anything: {empty:#?}");
        for name in [
            "Problem",
            "ClientId",
            "HardwareSerial",
            "ModelName",
            "Cidr",
            "FeedEvents",
        ] {
            assert!(doc["components"]["schemas"][name].is_object(), "{name}");
        }
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(
            found.len() > 50,
            "the walk finds the references: {}",
            found.len()
        );
        for r in found {
            let pointer = r
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("external {r}"));
            assert!(doc.pointer(pointer).is_some(), "{r} resolves to nothing");
        }
    }

    #[test]
    fn every_operation_states_its_roles_and_outcomes() {
        let doc = document();
        let mut ids = std::collections::HashSet::new();
        let mut count = 0;
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                assert!(METHODS.contains(&method.as_str()), "{path}: {method}");
                count += 1;
                let at = format!("{method} {path}");
                let id = op["operationId"].as_str().expect("operationId");
                assert!(ids.insert(id.to_string()), "{at}: operationId {id} twice");
                assert!(op["summary"].is_string(), "{at}: no summary");
                let roles = op["x-devid-roles"].as_array().expect("x-devid-roles");
                let responses = op["responses"].as_object().expect("responses");
                assert!(
                    responses.keys().any(|s| s.starts_with('2')),
                    "{at}: no success response"
                );
                assert!(responses.contains_key("default"), "{at}: no default");
                for (status, response) in responses {
                    let response = match response["$ref"].as_str() {
                        Some(r) => doc.pointer(r.trim_start_matches('#')).expect("resolves"),
                        None => response,
                    };
                    assert!(
                        response["description"].is_string(),
                        "{at} {status}: no description"
                    );
                    if !status.starts_with('2') && path.starts_with(EST_PREFIX) {
                        assert!(
                            response["content"]["text/plain"].is_object(),
                            "{at} {status}: EST errors are plain text"
                        );
                    } else if !status.starts_with('2') && status != "304" {
                        assert!(
                            response["content"][PROBLEM_JSON].is_object(),
                            "{at} {status}: not a problem document"
                        );
                    }
                }
                if roles.is_empty() {
                    assert!(op.get("security").is_none(), "{at}: public with security");
                    // EST authenticates by TLS client certificate or HTTP Basic, not by bearer.
                    assert!(
                        !responses.contains_key("401") || path.starts_with(EST_PREFIX),
                        "{at}"
                    );
                } else {
                    assert_eq!(op["security"][0]["bearer"], json!(roles), "{at}");
                    assert!(responses.contains_key("401") && responses.contains_key("403"));
                }
                for p in op["parameters"].as_array().into_iter().flatten() {
                    if p["in"] == "path" {
                        assert!(path
                            .contains(&format!("{{{}}}", p["name"].as_str().unwrap_or_default())));
                        assert_eq!(p["required"], true, "{at}: {p}");
                    }
                }
                let named = path.matches('{').count();
                let declared = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "path")
                    .count();
                assert_eq!(named, declared, "{at}: path parameters");
            }
        }
        assert_eq!(count, 68, "operations in the document");
    }

    #[test]
    fn the_feed_stream_is_documented_as_server_sent_events_of_feed_entries() {
        let doc = document();
        let ok = &doc["paths"]["/v1/revocations/stream"]["get"]["responses"]["200"];
        let schema = &ok["content"]["text/event-stream"]["schema"];
        assert_eq!(schema["$ref"], "#/components/schemas/FeedEvents");
        let data = &doc["components"]["schemas"]["FeedEvents"]["items"]["properties"]["data"];
        assert_eq!(
            data["contentSchema"]["$ref"],
            "#/components/schemas/FeedEntry"
        );
    }
}
