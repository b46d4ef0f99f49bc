//! A thin client for devid-server's REST API: bearer token, JSON bodies, problem+json errors
//! turned into one-line [`CliError`]s, and transport errors that name the URL.

use std::time::Duration;

use devid_core::api::Problem;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{CliError, Exit, Result};
use crate::settings::{Settings, TokenSource};

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    token_source: TokenSource,
}

impl Api {
    pub fn new(settings: &Settings) -> Result<Api> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("devid-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &settings.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                CliError::usage(format!("cannot read CA file {}: {e}", path.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    CliError::usage(format!(
                        "CA file {} holds no PEM certificate",
                        path.display()
                    ))
                })?;
            builder = builder.tls_certs_only(certs);
        }
        let http = builder
            .build()
            .map_err(|e| CliError::failed(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Api {
            http,
            base: settings.server.clone(),
            token: settings.token.clone(),
            token_source: settings.token_source.clone(),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let rb = self.http.request(method, self.url(path));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// Sends and turns any non-2xx answer into a [`CliError`].
    pub async fn send(&self, rb: RequestBuilder) -> Result<Response> {
        let resp = rb.send().await.map_err(|e| self.transport_error(&e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(self.error_from_response(resp).await)
    }

    pub async fn error_from_response(&self, resp: Response) -> CliError {
        let status = resp.status();
        let body = resp.bytes().await.unwrap_or_default();
        let mut err = match serde_json::from_slice::<Problem>(&body) {
            Ok(p) => CliError::from_problem(p),
            Err(_) => CliError::new(
                Exit::for_status(status.as_u16()),
                format!(
                    "server answered HTTP {} {}",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or("")
                )
                .trim_end()
                .to_string(),
            ),
        };
        if status == StatusCode::UNAUTHORIZED && self.token_source == TokenSource::None {
            err.message.push_str(
                "; no token given: use --token, --token-file, DEVID_TOKEN or DEVID_TOKEN_FILE",
            );
        }
        err
    }

    /// "could not reach http://… (connection refused)".
    pub fn transport_error(&self, e: &reqwest::Error) -> CliError {
        CliError::failed(format!(
            "could not reach {} ({})",
            self.base,
            transport_reason(e)
        ))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let resp = self.send(self.request(Method::GET, path)).await?;
        self.json(resp).await
    }

    pub async fn get_query<T: DeserializeOwned, Q: Serialize + ?Sized>(
        &self,
        path: &str,
        query: &Q,
    ) -> Result<T> {
        let resp = self
            .send(self.request(Method::GET, path).query(query))
            .await?;
        self.json(resp).await
    }

    pub async fn get_bytes(&self, path: &str) -> Result<Vec<u8>> {
        let resp = self.send(self.request(Method::GET, path)).await?;
        resp.bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| self.transport_error(&e))
    }

    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        let resp = self
            .send(self.request(Method::POST, path).json(body))
            .await?;
        self.json(resp).await
    }

    pub async fn put<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        let resp = self
            .send(self.request(Method::PUT, path).json(body))
            .await?;
        self.json(resp).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let resp = self.send(self.request(Method::DELETE, path)).await?;
        self.json(resp).await
    }

    pub async fn json<T: DeserializeOwned>(&self, resp: Response) -> Result<T> {
        let url = resp.url().path().to_string();
        let body = resp.bytes().await.map_err(|e| self.transport_error(&e))?;
        serde_json::from_slice(&body).map_err(|e| {
            CliError::failed(format!("unexpected answer from {}{url}: {e}", self.base))
        })
    }
}

/// A short reason for a transport failure, from the innermost I/O error when there is one.
pub fn transport_reason(e: &reqwest::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut io_kind = None;
    let mut innermost = e.to_string();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            io_kind = Some(io.kind());
        }
        innermost = s.to_string();
        source = s.source();
    }
    use std::io::ErrorKind::*;
    match io_kind {
        Some(ConnectionRefused) => "connection refused".into(),
        Some(ConnectionReset) => "connection reset".into(),
        Some(TimedOut) => "timed out".into(),
        Some(NotFound) => "host not found".into(),
        _ if e.is_timeout() => "timed out".into(),
        _ if innermost.contains("dns error") || innermost.contains("failed to lookup") => {
            "host not found".into()
        }
        _ => innermost,
    }
}

/// Percent-encodes one path segment (ClientIDs and serials are alphanumeric, but a typo must not
/// turn into another path).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
