//! Opening the byte stream: TCP, or TLS over TCP with rustls (ring provider only).

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;

use crate::connection::{ClientError, Connection};

/// How to reach the broker.
#[derive(Clone)]
pub enum Transport {
    Tcp,
    Tls {
        config: Arc<ClientConfig>,
        server_name: ServerName<'static>,
    },
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Tcp => f.write_str("Tcp"),
            Transport::Tls { server_name, .. } => write!(f, "Tls({server_name:?})"),
        }
    }
}

/// TLS client settings.
pub struct TlsOptions {
    /// Trust anchors for the broker's certificate.
    pub roots: Vec<CertificateDer<'static>>,
    /// Client certificate chain (leaf first) and key, for mutual TLS.
    pub client_auth: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    /// Offer TLS 1.3 only (the benchmark's baseline); otherwise 1.2 and 1.3.
    pub tls13_only: bool,
    /// Keep session tickets for resumption. Off for benchmarks of full handshakes.
    pub resumption: bool,
}

/// Builds a rustls client configuration on the ring provider (never the process default, so
/// this works whether or not a default provider was installed).
pub fn tls_config(opts: TlsOptions) -> Result<Arc<ClientConfig>, ClientError> {
    let mut roots = RootCertStore::empty();
    for c in opts.roots {
        roots
            .add(c)
            .map_err(|e| ClientError::Tls(format!("bad trust anchor: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if opts.tls13_only {
        &[&rustls::version::TLS13]
    } else {
        rustls::DEFAULT_VERSIONS
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match opts.client_auth {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| ClientError::Tls(format!("client certificate: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    if !opts.resumption {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(Arc::new(config))
}

/// Connects TCP (no Nagle delay) and, if asked, TLS, and wraps the stream in a [`Connection`].
pub async fn open(addr: &str, transport: &Transport) -> Result<Connection, ClientError> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    match transport {
        Transport::Tcp => Ok(Connection::new(tcp)),
        Transport::Tls {
            config,
            server_name,
        } => {
            let tls = tokio_rustls::TlsConnector::from(config.clone())
                .connect(server_name.clone(), tcp)
                .await
                .map_err(|e| ClientError::Tls(e.to_string()))?;
            Ok(Connection::new(tls))
        }
    }
}

/// The server name to check the broker's certificate against: `name` if given, else the host
/// part of `addr` (`HOST:PORT`).
pub fn server_name(addr: &str, name: Option<&str>) -> Result<ServerName<'static>, ClientError> {
    let host = match name {
        Some(n) => n,
        None => addr
            .rsplit_once(':')
            .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
            .unwrap_or(addr),
    };
    ServerName::try_from(host.to_owned())
        .map_err(|e| ClientError::Tls(format!("bad server name {host:?}: {e}")))
}
