//! An EST client (RFC 7030, with RFC 8951's clarifications) for the two calls a device makes
//! on its own: `simpleenroll` authenticated by the IDevID and `simplereenroll` authenticated by
//! the current LDevID, each as the TLS client certificate; and `cacerts` to complete a chain.
//! TLS is rustls on ring (the server's certificate is checked against the configured roots).

use std::time::Duration;

use rustls::pki_types::CertificateDer;

use super::engine::Call;
use super::files::Pair;
use super::pkcs7::{certs_only, decode_base64};
use super::{RenewTransport, TransportError};
use crate::transport::{tls_config, TlsOptions};

/// Where the EST server is and what it is trusted by.
#[derive(Clone)]
pub struct EstClient {
    /// `https://host:port/.well-known/est` or `https://host:port/.well-known/est/<label>`.
    base: String,
    roots: Vec<CertificateDer<'static>>,
    timeout: Duration,
}

impl EstClient {
    /// `url` is the server (`https://host:port`), to which `/.well-known/est` (and the label,
    /// if any) is added, or already a URL that contains `/.well-known/est`.
    pub fn new(
        url: &str,
        label: Option<&str>,
        roots: Vec<CertificateDer<'static>>,
    ) -> Result<EstClient, String> {
        let url = url.trim_end_matches('/');
        if !url.starts_with("https://") {
            return Err(format!("{url}: EST needs an https:// URL"));
        }
        let mut base = if url.contains("/.well-known/est") {
            url.to_owned()
        } else {
            format!("{url}/.well-known/est")
        };
        if let Some(l) = label {
            if l.is_empty()
                || !l
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                return Err(format!("{l:?} is not an EST label"));
            }
            base = format!("{base}/{l}");
        }
        Ok(EstClient {
            base,
            roots,
            timeout: Duration::from_secs(60),
        })
    }

    /// The URL of an operation.
    pub fn url(&self, op: &str) -> String {
        format!("{}/{op}", self.base)
    }

    fn http(&self, auth: Option<&Pair>) -> Result<reqwest::Client, TransportError> {
        let tls = tls_config(TlsOptions {
            roots: self.roots.clone(),
            client_auth: auth.map(|p| {
                (
                    p.chain.clone(),
                    rustls::pki_types::PrivateKeyDer::Pkcs8(p.key.clone_key()),
                )
            }),
            tls13_only: false,
            resumption: false,
        })
        .map_err(|e| TransportError::Invalid(e.to_string()))?;
        reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .no_proxy()
            .timeout(self.timeout)
            .build()
            .map_err(|e| TransportError::Invalid(format!("HTTP client: {e}")))
    }

    /// `GET cacerts`: the issuing CA(s) and the root.
    pub async fn cacerts(&self) -> Result<Vec<CertificateDer<'static>>, TransportError> {
        let resp = self
            .http(None)?
            .get(self.url("cacerts"))
            .send()
            .await
            .map_err(unreachable)?;
        read_certs(resp).await
    }

    /// `POST simpleenroll` / `simplereenroll` with `csr` (DER), authenticated by `auth`.
    pub async fn enroll(
        &self,
        auth: &Pair,
        call: Call,
        csr: &[u8],
    ) -> Result<Vec<CertificateDer<'static>>, TransportError> {
        use base64::Engine;
        let op = match call {
            Call::Enroll => "simpleenroll",
            Call::Reenroll => "simplereenroll",
        };
        let body = base64::engine::general_purpose::STANDARD.encode(csr);
        let resp = self
            .http(Some(auth))?
            .post(self.url(op))
            .header("content-type", "application/pkcs10")
            .header("content-transfer-encoding", "base64")
            .body(body)
            .send()
            .await
            .map_err(unreachable)?;
        read_certs(resp).await
    }
}

fn unreachable(e: reqwest::Error) -> TransportError {
    // The whole cause chain: "error sending request" alone says nothing.
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    TransportError::Unreachable(msg)
}

/// A certs-only answer, or the error its status says.
async fn read_certs(
    resp: reqwest::Response,
) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let body = resp.bytes().await.map_err(unreachable)?;
    let text = || {
        String::from_utf8_lossy(&body[..body.len().min(500)])
            .trim()
            .to_owned()
    };
    match status {
        200 => {
            let der = decode_base64(&body).map_err(|e| TransportError::Invalid(e.to_string()))?;
            certs_only(&der).map_err(|e| TransportError::Invalid(e.to_string()))
        }
        // RFC 7030 4.2.3: 202 (pending) or 503 with Retry-After.
        202 | 503 if retry_after.is_some() => Err(TransportError::RetryAfter(
            retry_after.unwrap_or(60),
            format!("HTTP {status}: {}", text()),
        )),
        // Too many requests and the server's own failures: back off and try again.
        429 | 500..=599 => Err(TransportError::Unreachable(format!(
            "HTTP {status}: {}",
            text()
        ))),
        _ => Err(TransportError::Refused(format!(
            "HTTP {status}: {}",
            text()
        ))),
    }
}

impl RenewTransport for EstClient {
    async fn request(
        &self,
        auth: &Pair,
        call: Call,
        csr: &[u8],
    ) -> Result<Vec<CertificateDer<'static>>, TransportError> {
        self.enroll(auth, call, csr).await
    }

    async fn ca_certs(&self) -> Result<Vec<CertificateDer<'static>>, TransportError> {
        self.cacerts().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_rfc_7030_paths() {
        let c = EstClient::new("https://est.example:8443/", None, vec![]).unwrap();
        assert_eq!(
            c.url("simpleenroll"),
            "https://est.example:8443/.well-known/est/simpleenroll"
        );
        let c = EstClient::new("https://est.example", Some("sensor-v2"), vec![]).unwrap();
        assert_eq!(
            c.url("simplereenroll"),
            "https://est.example/.well-known/est/sensor-v2/simplereenroll"
        );
        let c = EstClient::new("https://h/.well-known/est/m1", None, vec![]).unwrap();
        assert_eq!(c.url("cacerts"), "https://h/.well-known/est/m1/cacerts");
        assert!(EstClient::new("http://h", None, vec![]).is_err());
        assert!(EstClient::new("https://h", Some("a/b"), vec![]).is_err());
        assert!(EstClient::new("https://h", Some(""), vec![]).is_err());
    }
}
