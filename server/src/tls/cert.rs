//! The TLS listener's own certificate: the operator's files, or one devid's CA issues for the
//! host of `--public-url` (broker profile: SAN DNS, EKU serverAuth), made at start and renewed
//! by the server at two thirds of its life. The key is made in memory and never written.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use devid_core::csr::parse_csr_der;
use devid_core::profile::{ProfileSettings, Validity};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;

use crate::ca::Ca;

/// Lifetime of the certificate devid issues for its own TLS listener.
pub const OWN_CERT_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// The certificate the listener presents; swapped in place when renewed.
#[derive(Debug)]
pub struct ServerCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ServerCert {
    pub fn new(key: CertifiedKey) -> Self {
        ServerCert {
            current: RwLock::new(Arc::new(key)),
        }
    }

    pub fn replace(&self, key: CertifiedKey) {
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(key);
        }
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

/// The operator's chain (leaf first) and key, PEM files.
pub fn from_files(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let chain: Vec<CertificateDer<'static>> = crate::est::pem_certs(&read(cert)?)
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    if chain.is_empty() {
        return Err(format!("{} holds no PEM CERTIFICATE", cert.display()));
    }
    let key_pem =
        pem::parse_many(read(key)?).map_err(|e| format!("{} is not PEM: {e}", key.display()))?;
    let key_der: PrivateKeyDer<'static> = key_pem
        .into_iter()
        .find_map(|p| match p.tag() {
            "PRIVATE KEY" => Some(PrivatePkcs8KeyDer::from(p.into_contents()).into()),
            "EC PRIVATE KEY" => Some(PrivateSec1KeyDer::from(p.into_contents()).into()),
            _ => None,
        })
        .ok_or_else(|| {
            format!(
                "{} holds no PRIVATE KEY or EC PRIVATE KEY block",
                key.display()
            )
        })?;
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| format!("{}: {e}", key.display()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| format!("{} does not match {}: {e}", key.display(), cert.display()))?;
    Ok(certified)
}

/// The host a certificate must name for clients that reach the service at `public_url`:
/// `https://devid.example:8443/x` -> `devid.example`. Without a public URL: `localhost`.
pub fn public_host(public_url: Option<&str>) -> Result<String, String> {
    let Some(url) = public_url else {
        return Ok("localhost".into());
    };
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.starts_with('[') || host_port.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!(
            "the host of --public-url {url} is an IP address; devid's own TLS certificate names \
             a DNS host: give a DNS name in --public-url, or --tls-cert and --tls-key"
        ));
    }
    let host = host_port.split(':').next().unwrap_or_default();
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(format!(
            "the host of --public-url {url} is an IP address; devid's own TLS certificate names \
             a DNS host: give a DNS name in --public-url, or --tls-cert and --tls-key"
        ));
    }
    if host.is_empty() {
        return Err(format!("--public-url {url} names no host"));
    }
    Ok(host.to_ascii_lowercase())
}

/// A new key and a certificate from devid's CA for `host`, valid for [`OWN_CERT_LIFETIME`]
/// (capped by the CA at its own notAfter). Returns the key and its notAfter.
pub fn issue_own(
    ca: &Ca,
    host: &str,
    settings: &ProfileSettings,
    provider: &CryptoProvider,
    now: OffsetDateTime,
) -> Result<(CertifiedKey, OffsetDateTime), String> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("cannot make the TLS key: {e}"))?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .map_err(|e| format!("cannot make the TLS key's request: {e}"))?;
    let csr = parse_csr_der(csr.der()).map_err(|e| e.to_string())?;
    let settings = ProfileSettings {
        validity: Validity::Seconds(OWN_CERT_LIFETIME.as_secs()),
        ..settings.clone()
    };
    let rng = ring::rand::SystemRandom::new();
    let issued = ca
        .issue_broker(&csr, host, &settings, now, &rng)
        .map_err(|e| format!("cannot issue the TLS certificate for {host}: {e}"))?;
    let mut chain = vec![CertificateDer::from(issued.der)];
    let ca_chain = ca.chain_der();
    chain.extend(
        ca_chain[..ca_chain.len().saturating_sub(1)]
            .iter()
            .map(|d| CertificateDer::from(d.clone())),
    );
    let key_der = PrivatePkcs8KeyDer::from(key.serialize_der());
    let signing = provider
        .key_provider
        .load_private_key(key_der.into())
        .map_err(|e| format!("the TLS key does not load: {e}"))?;
    Ok((CertifiedKey::new(chain, signing), issued.not_after))
}

/// When to renew a certificate valid from `now` until `not_after`: at two thirds of its life.
pub fn renew_in(now: OffsetDateTime, not_after: OffsetDateTime) -> Duration {
    let life = (not_after - now).whole_seconds().max(0);
    Duration::from_secs(u64::try_from(life * 2 / 3).unwrap_or(0).max(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_hosts() {
        assert_eq!(public_host(None).as_deref(), Ok("localhost"));
        for (url, host) in [
            ("https://devid.example", "devid.example"),
            ("https://Devid.Example:8443/base", "devid.example"),
            ("http://localhost:8080", "localhost"),
        ] {
            assert_eq!(public_host(Some(url)).as_deref(), Ok(host), "{url}");
        }
        for url in ["https://127.0.0.1:8443", "https://[::1]:8443", "https://"] {
            assert!(public_host(Some(url)).is_err(), "{url}");
        }
    }

    #[test]
    fn renewal_at_two_thirds() {
        let now = OffsetDateTime::UNIX_EPOCH;
        assert_eq!(
            renew_in(now, now + time::Duration::days(30)),
            Duration::from_secs(20 * 24 * 3600)
        );
        assert_eq!(renew_in(now, now), Duration::from_secs(60));
    }
}
