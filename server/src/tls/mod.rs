//! The TLS listener (`--tls-listen`): the same routes as the plain listener, over rustls on
//! ring, with client certificates requested but not required (EST authenticates devices by
//! them; bearer-token clients send none).
//!
//! - `cert`: the server's own certificate (the operator's, or issued by devid's CA and renewed
//!   here).
//! - `verifier`: which client certificates pass the handshake.
//! - `listener`: the accept loop, handshakes on tasks of their own, and [`ClientTls`], what a
//!   request knows of its connection.

pub mod cert;
pub mod listener;
pub mod verifier;

use std::sync::Arc;

use devid_core::profile::ProfileSettings;
use rustls::crypto::CryptoProvider;
use rustls::ServerConfig;
use time::OffsetDateTime;

pub use listener::{serve, ClientTls};

use crate::ca::Ca;
use crate::config::TlsSettings;
use cert::ServerCert;

/// The rustls configuration of the listener. With no certificate files, issues the server's
/// own certificate and starts the task that renews it.
pub fn server_config(
    tls: &TlsSettings,
    ca: Arc<Ca>,
    public_url: Option<&str>,
    profile: &ProfileSettings,
) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = match &tls.files {
        Some((cert_file, key_file)) => Arc::new(ServerCert::new(cert::from_files(
            cert_file, key_file, &provider,
        )?)),
        None => {
            let host = cert::public_host(public_url)?;
            let (key, not_after) =
                cert::issue_own(&ca, &host, profile, &provider, OffsetDateTime::now_utc())?;
            tracing::info!(%host, %not_after, "issued the TLS listener's certificate");
            let resolver = Arc::new(ServerCert::new(key));
            tokio::spawn(renew(
                resolver.clone(),
                ca.clone(),
                host,
                profile.clone(),
                provider.clone(),
                not_after,
            ));
            resolver
        }
    };
    let verifier = Arc::new(verifier::DeviceCertVerifier::new(ca, provider.clone())?);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Renews the server's own certificate at two thirds of its life, for as long as the server
/// runs; a failure is logged and retried a minute later.
async fn renew(
    resolver: Arc<ServerCert>,
    ca: Arc<Ca>,
    host: String,
    profile: ProfileSettings,
    provider: Arc<CryptoProvider>,
    mut not_after: OffsetDateTime,
) {
    let mut wait = cert::renew_in(OffsetDateTime::now_utc(), not_after);
    loop {
        tokio::time::sleep(wait).await;
        match cert::issue_own(&ca, &host, &profile, &provider, OffsetDateTime::now_utc()) {
            Ok((key, until)) => {
                resolver.replace(key);
                not_after = until;
                wait = cert::renew_in(OffsetDateTime::now_utc(), not_after);
                tracing::info!(%host, not_after = %until, "renewed the TLS listener's certificate");
            }
            Err(e) => {
                tracing::error!(error = %e, %not_after, "could not renew the TLS listener's certificate; retrying in a minute");
                wait = std::time::Duration::from_secs(60);
            }
        }
    }
}
