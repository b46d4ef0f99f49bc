//! The web console: static files built into the binary (`server/console/`), served at `/` and
//! `/console/{file}`. It is plain HTML, CSS and JavaScript modules that call the REST API with
//! the token the operator pastes (kept in the tab's sessionStorage, sent as a bearer token; no
//! cookies), so it can do exactly what its token may.
//!
//! Every answer carries a Content-Security-Policy that admits only this origin's own files:
//! no inline script or style, no other origin, no framing.

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa_axum::routes;

use crate::app::{ApiQuery, NoQuery};
use crate::error::ApiError;
use crate::openapi::NotFound;
use crate::routes::{Access, Routes};

/// What the console's pages may load and do: only this origin, nothing inline, no frames.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'; object-src 'none'";

/// The console's files: name, media type, content.
const FILES: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/app.js"),
    ),
    (
        "pages.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/pages.js"),
    ),
    (
        "device.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/device.js"),
    ),
    (
        "plot.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/plot.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../../console/app.css"),
    ),
];

const INDEX: &str = include_str!("../../console/index.html");

pub fn router() -> Routes {
    Routes::new()
        .add(Access::Public, routes!(index))
        .add(Access::Public, routes!(file))
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            // The files change with the binary; the browser asks again each time.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The web console's page (its scripts under `/console/`).
#[utoipa::path(
    get,
    path = "/",
    responses((status = 200, description = "The console's HTML page", content_type = "text/html", body = String))
)]
async fn index(_: ApiQuery<NoQuery>) -> Response {
    page("text/html; charset=utf-8", INDEX)
}

/// One of the console's scripts or its style sheet.
#[utoipa::path(
    get,
    path = "/console/{file}",
    params(("file" = String, Path, description = "`app.js`, `pages.js`, `device.js`, `plot.js` or `app.css`")),
    responses(
        (status = 200, description = "The file", content_type = "text/javascript", body = String),
        (status = 404, response = NotFound),
    )
)]
async fn file(Path(name): Path<String>, _: ApiQuery<NoQuery>) -> Result<Response, ApiError> {
    FILES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, content_type, body)| page(content_type, body))
        .ok_or_else(|| ApiError::NotFound(format!("the console has no file {name:?}")))
}
