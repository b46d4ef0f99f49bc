//! Certificate checks for both sides: path validation with rustls-webpki (P-256/SHA-256 only,
//! EKU required), the devid profile and ClientID binding with x509-parser, and the broker-side
//! cache of verified device certificates.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::extensions::ParsedExtension;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_X509_EXT_EXTENDED_KEY_USAGE,
};
use x509_parser::prelude::FromDer;

use super::error::{ConfigError, Error};
use super::issuers::issuer_id_of;
use super::keys::sha256;

/// id-kp-clientAuth (1.3.6.1.5.5.7.3.2), DER body of the OID.
const EKU_CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];
/// id-kp-serverAuth (1.3.6.1.5.5.7.3.1).
const EKU_SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];

/// The only signature algorithm DEVID-1 accepts in a certificate chain.
/// Counted, so that [`PkOps`](super::PkOps) includes chain signature checks.
const SIG_ALGS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] =
    &[&super::pk::CountedP256Sha256];

/// The URI SAN prefix binding a certificate to a ClientID.
pub const DEVID_URN_PREFIX: &str = "urn:devid:";

/// The devid root a side trusts, owned.
#[derive(Debug, Clone)]
pub(crate) struct Anchor {
    anchors: Vec<TrustAnchor<'static>>,
}

impl Anchor {
    pub(crate) fn from_der(root_der: &[u8]) -> Result<Self, ConfigError> {
        let der = CertificateDer::from(root_der);
        let anchor = webpki::anchor_from_trusted_cert(&der)
            .map_err(|e| ConfigError(format!("trust anchor is not a usable certificate: {e}")))?
            .to_owned();
        Ok(Anchor {
            anchors: vec![anchor],
        })
    }
}

/// A device identity the broker has verified: chain, validity, EKU clientAuth, keyUsage and
/// the CN/SAN binding. Revocation and allow-lists are the caller's to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIdentity {
    /// The ClientID from the certificate (equal to the CONNECT's ClientID).
    pub client_id: String,
    /// The certificate serial: lowercase hex of its big-endian magnitude, leading zero bytes
    /// removed (a DER sign byte is not part of it).
    pub serial_hex: String,
    /// SHA-256 of the leaf certificate's DER.
    pub fingerprint: [u8; 32],
    /// The leaf's notAfter, in seconds since the Unix epoch.
    pub not_after: u64,
    /// The leaf certificate, DER.
    pub leaf_der: Arc<[u8]>,
}

impl DeviceIdentity {
    /// The fingerprint as lowercase hex.
    pub fn fingerprint_hex(&self) -> String {
        hex::encode(self.fingerprint)
    }

    /// The id of the issuing CA that signed the leaf ([`issuing_ca_id`](super::issuing_ca_id) of its AKI); None
    /// without an AKI key identifier.
    pub fn issuer_id(&self) -> Option<String> {
        issuer_id_of(&self.leaf_der)
    }
}

/// A verified device certificate as kept in a [`CertCache`]: the identity, the public key and
/// the time window in which the whole verified path is valid.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifiedDeviceCert {
    identity: DeviceIdentity,
    public_key: [u8; 65],
    valid_from: u64,
    valid_until: u64,
}

impl fmt::Debug for VerifiedDeviceCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedDeviceCert")
            .field("client_id", &self.identity.client_id)
            .field("serial", &self.identity.serial_hex)
            .field("valid_from", &self.valid_from)
            .field("valid_until", &self.valid_until)
            .finish_non_exhaustive()
    }
}

impl VerifiedDeviceCert {
    /// The verified identity.
    pub fn identity(&self) -> &DeviceIdentity {
        &self.identity
    }

    /// The device's P-256 public key, SEC1 uncompressed.
    pub fn public_key(&self) -> &[u8; 65] {
        &self.public_key
    }

    /// True when the verified path (leaf and intermediates) is valid at `now` (Unix seconds).
    pub fn valid_at(&self, now: u64) -> bool {
        self.valid_from <= now && now <= self.valid_until
    }
}

/// A store of verified device certificates keyed by the SHA-256 of the leaf DER, so a device
/// that reconnects skips path validation. Only certificates that passed every check are
/// inserted; on a hit the handshake still checks the validity window and the ClientID.
/// A cache belongs to one [`ServerConfig`](super::ServerConfig) (one trust anchor).
pub trait CertCache: Send + Sync {
    /// The entry for this leaf fingerprint, if any.
    fn get(&self, fingerprint: &[u8; 32]) -> Option<Arc<VerifiedDeviceCert>>;
    /// Remembers a verified certificate.
    fn insert(&self, cert: Arc<VerifiedDeviceCert>);
}

/// A bounded in-memory certificate cache keyed by leaf fingerprint; when full it is emptied
/// (cheap, and good enough for brokers whose devices reconnect in waves and for devices that
/// talk to a few brokers). [`MemoryCertCache`] and [`MemoryBrokerCertCache`] are its two uses.
pub struct MemoryCache<T> {
    capacity: usize,
    map: Mutex<HashMap<[u8; 32], Arc<T>>>,
}

/// The broker side's [`CertCache`] of verified device certificates.
pub type MemoryCertCache = MemoryCache<VerifiedDeviceCert>;
/// The device side's [`BrokerCertCache`] of verified broker certificates.
pub type MemoryBrokerCertCache = MemoryCache<VerifiedBrokerCert>;

impl<T> MemoryCache<T> {
    /// A cache holding up to `capacity` certificates.
    pub fn new(capacity: usize) -> Self {
        MemoryCache {
            capacity: capacity.max(1),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Number of cached certificates.
    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get_entry(&self, fingerprint: &[u8; 32]) -> Option<Arc<T>> {
        // A poisoned lock only means another thread panicked mid-insert: treat as a miss.
        self.map.lock().ok()?.get(fingerprint).cloned()
    }

    fn insert_entry(&self, fingerprint: [u8; 32], cert: Arc<T>) {
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= self.capacity {
                map.clear();
            }
            map.insert(fingerprint, cert);
        }
    }
}

impl CertCache for MemoryCertCache {
    fn get(&self, fingerprint: &[u8; 32]) -> Option<Arc<VerifiedDeviceCert>> {
        self.get_entry(fingerprint)
    }

    fn insert(&self, cert: Arc<VerifiedDeviceCert>) {
        self.insert_entry(cert.identity.fingerprint, cert);
    }
}

fn unix(now: u64) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(now))
}

fn parse_x509(der: &[u8]) -> Result<X509Certificate<'_>, Error> {
    match X509Certificate::from_der(der) {
        Ok((&[], cert)) => Ok(cert),
        Ok(_) => Err(Error::BadCertificate("trailing bytes after certificate")),
        Err(_) => Err(Error::BadCertificate("unparsable certificate")),
    }
}

/// The SEC1 point of a P-256 SubjectPublicKeyInfo; anything else is refused.
fn p256_public_key(cert: &X509Certificate<'_>) -> Result<[u8; 65], Error> {
    let spki = cert.public_key();
    if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY {
        return Err(Error::BadCertificate("public key is not EC"));
    }
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    if curve.as_ref() != Some(&OID_EC_P256) {
        return Err(Error::BadCertificate("public key is not P-256"));
    }
    let point: &[u8] = &spki.subject_public_key.data;
    if point.len() != 65 || point[0] != 0x04 {
        return Err(Error::BadCertificate(
            "public key is not an uncompressed P-256 point",
        ));
    }
    let mut out = [0u8; 65];
    out.copy_from_slice(point);
    Ok(out)
}

fn validity(cert: &X509Certificate<'_>) -> (u64, u64) {
    let v = cert.validity();
    let from = u64::try_from(v.not_before.timestamp()).unwrap_or(0);
    let until = u64::try_from(v.not_after.timestamp()).unwrap_or(0);
    (from, until)
}

fn serial_hex(cert: &X509Certificate<'_>) -> String {
    serial_hex_of(cert.raw_serial())
}

/// The canonical text of a certificate serial: lowercase hex of the big-endian magnitude with
/// leading zero bytes removed (a zero serial is `00`). This is [`DeviceIdentity::serial_hex`]
/// and the form devid-server stores and publishes.
fn serial_hex_of(raw: &[u8]) -> String {
    let first = raw
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(raw.len().saturating_sub(1));
    hex::encode(&raw[first..])
}

/// Normalizes a serial as written by people, openssl or the service (any case, `:` separators,
/// an odd number of digits, leading zero bytes) to the canonical form of
/// [`DeviceIdentity::serial_hex`]. `None` when it is not hexadecimal or is empty.
pub fn normalize_serial_hex(s: &str) -> Option<String> {
    let digits: Vec<u8> = s.trim().bytes().filter(|b| *b != b':').collect();
    if digits.is_empty() {
        return None;
    }
    let mut padded = Vec::with_capacity(digits.len() + 1);
    if digits.len() % 2 == 1 {
        padded.push(b'0');
    }
    padded.extend_from_slice(&digits);
    let raw = hex::decode(&padded).ok()?;
    Some(serial_hex_of(&raw))
}

/// The ClientID a device certificate binds: the CN, which must equal the SAN URI
/// `urn:devid:<ClientID>`; every `urn:devid:` URI must agree.
fn bound_client_id(cert: &X509Certificate<'_>) -> Result<String, Error> {
    let mut cns = cert.subject().iter_common_name();
    let cn = cns
        .next()
        .and_then(|a| a.as_str().ok())
        .ok_or(Error::CertificateNotBound)?;
    if cns.next().is_some() {
        return Err(Error::CertificateNotBound);
    }
    let san = cert
        .subject_alternative_name()
        .map_err(|_| Error::BadCertificate("bad subjectAltName"))?
        .ok_or(Error::CertificateNotBound)?;
    let mut bound = false;
    for name in &san.value.general_names {
        if let GeneralName::URI(uri) = name {
            if let Some(id) = uri.strip_prefix(DEVID_URN_PREFIX) {
                if id != cn {
                    return Err(Error::CertificateNotBound);
                }
                bound = true;
            }
        }
    }
    if !bound {
        return Err(Error::CertificateNotBound);
    }
    Ok(cn.to_string())
}

/// The leaf must carry an EKU extension that lists `oid`.
///
/// webpki applies its EKU rule to every certificate of the path, so `KeyUsage::required` would
/// refuse intermediates without EKU (the usual case); the path check therefore uses
/// `required_if_present` (an intermediate with EKU must list the purpose too) and this function
/// insists on presence at the leaf.
fn require_leaf_eku(cert: &X509Certificate<'_>, oid: &[u8]) -> Result<(), Error> {
    let missing = Error::BadCertificate("leaf lacks the required extendedKeyUsage");
    let eku = cert
        .tbs_certificate
        .extensions()
        .iter()
        .find(|e| e.oid == OID_X509_EXT_EXTENDED_KEY_USAGE)
        .ok_or_else(|| missing.clone())?;
    let ParsedExtension::ExtendedKeyUsage(eku) = eku.parsed_extension() else {
        return Err(Error::BadCertificate("bad extendedKeyUsage"));
    };
    let wanted = if oid == EKU_CLIENT_AUTH {
        eku.client_auth
    } else {
        eku.server_auth
    };
    if wanted {
        Ok(())
    } else {
        Err(missing)
    }
}

/// Verifies a device's `certs` (leaf first) against the anchor at `now`: the whole chain, the
/// devid profile and the binding. Does not compare with the CONNECT's ClientID.
pub(crate) fn verify_device_chain(
    anchor: &Anchor,
    certs: &[&[u8]],
    now: u64,
) -> Result<VerifiedDeviceCert, Error> {
    let path = verify_path(anchor, certs, now, EKU_CLIENT_AUTH)?;
    let cert = &path.cert;
    let ku = cert
        .key_usage()
        .map_err(|_| Error::BadCertificate("bad keyUsage"))?
        .ok_or(Error::BadCertificate("no keyUsage"))?;
    if !ku.value.digital_signature() {
        return Err(Error::BadCertificate("keyUsage lacks digitalSignature"));
    }
    let public_key = p256_public_key(cert)?;
    let client_id = bound_client_id(cert)?;
    Ok(VerifiedDeviceCert {
        identity: DeviceIdentity {
            client_id,
            serial_hex: serial_hex(cert),
            fingerprint: sha256(&[path.leaf]),
            not_after: path.leaf_until,
            leaf_der: Arc::from(path.leaf),
        },
        public_key,
        valid_from: path.valid_from,
        valid_until: path.valid_until,
    })
}

/// Verifies a device with an optional cache in front of [`verify_device_chain`].
pub(crate) fn verify_device(
    anchor: &Anchor,
    cache: Option<&dyn CertCache>,
    certs: &[&[u8]],
    now: u64,
) -> Result<Arc<VerifiedDeviceCert>, Error> {
    let Some(cache) = cache else {
        return verify_device_chain(anchor, certs, now).map(Arc::new);
    };
    let leaf = certs
        .first()
        .ok_or(Error::BadCertificate("no certificate"))?;
    let fingerprint = sha256(&[leaf]);
    if let Some(hit) = cache.get(&fingerprint) {
        // The fingerprint covers the whole leaf DER, so the entry is this very certificate.
        if hit.valid_at(now) && *hit.identity.leaf_der == **leaf {
            return Ok(hit);
        }
    }
    let verified = Arc::new(verify_device_chain(anchor, certs, now)?);
    cache.insert(verified.clone());
    Ok(verified)
}

/// A broker certificate whose path to the anchor verified (chain signatures, validity, EKU
/// serverAuth at the leaf, P-256 key), as kept in a [`BrokerCertCache`]. The broker name is not
/// part of it: it is checked on every handshake.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifiedBrokerCert {
    fingerprint: [u8; 32],
    leaf_der: Arc<[u8]>,
    public_key: [u8; 65],
    valid_from: u64,
    valid_until: u64,
}

impl fmt::Debug for VerifiedBrokerCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedBrokerCert")
            .field("fingerprint", &hex::encode(self.fingerprint))
            .field("valid_from", &self.valid_from)
            .field("valid_until", &self.valid_until)
            .finish_non_exhaustive()
    }
}

impl VerifiedBrokerCert {
    /// SHA-256 of the leaf DER.
    pub fn fingerprint(&self) -> &[u8; 32] {
        &self.fingerprint
    }

    /// The broker's P-256 public key, SEC1 uncompressed.
    pub fn public_key(&self) -> &[u8; 65] {
        &self.public_key
    }

    /// True when the verified path (leaf and intermediates) is valid at `now` (Unix seconds).
    pub fn valid_at(&self, now: u64) -> bool {
        self.valid_from <= now && now <= self.valid_until
    }
}

/// The device-side store of verified broker certificates, keyed by the SHA-256 of the leaf
/// DER, so a device (or a load tool with many devices) that reconnects skips the chain's
/// signature checks. Only paths that verified are inserted; on a hit the handshake still checks
/// the validity window, the broker name, sig_s, mac_s and mac_f. A cache belongs to one
/// [`ClientConfig`](super::ClientConfig) trust anchor (share it only between configs with the
/// same root).
pub trait BrokerCertCache: Send + Sync {
    /// The entry for this leaf fingerprint, if any.
    fn get(&self, fingerprint: &[u8; 32]) -> Option<Arc<VerifiedBrokerCert>>;
    /// Remembers a verified broker certificate.
    fn insert(&self, cert: Arc<VerifiedBrokerCert>);
}

impl BrokerCertCache for MemoryBrokerCertCache {
    fn get(&self, fingerprint: &[u8; 32]) -> Option<Arc<VerifiedBrokerCert>> {
        self.get_entry(fingerprint)
    }

    fn insert(&self, cert: Arc<VerifiedBrokerCert>) {
        self.insert_entry(cert.fingerprint, cert);
    }
}

/// Verifies the broker's path (leaf first) at `now`: chain to the anchor, EKU serverAuth, a
/// P-256 key. The name is checked separately ([`check_broker_name`]).
fn verify_broker_path(
    anchor: &Anchor,
    certs: &[&[u8]],
    now: u64,
) -> Result<VerifiedBrokerCert, Error> {
    let path = verify_path(anchor, certs, now, EKU_SERVER_AUTH)?;
    Ok(VerifiedBrokerCert {
        fingerprint: sha256(&[path.leaf]),
        leaf_der: Arc::from(path.leaf),
        public_key: p256_public_key(&path.cert)?,
        valid_from: path.valid_from,
        valid_until: path.valid_until,
    })
}

/// A leaf whose chain to the anchor verified for one extended key usage.
struct VerifiedPath<'a> {
    leaf: &'a [u8],
    cert: X509Certificate<'a>,
    /// The leaf's own notAfter.
    leaf_until: u64,
    /// The window in which the leaf and every intermediate of the verified path are valid.
    valid_from: u64,
    valid_until: u64,
}

/// Verifies `certs` (leaf first) at `now`: signatures up to the anchor, validity, and `eku` on
/// the path (webpki) and on the leaf itself.
fn verify_path<'a>(
    anchor: &Anchor,
    certs: &[&'a [u8]],
    now: u64,
    eku: &'static [u8],
) -> Result<VerifiedPath<'a>, Error> {
    let (leaf, intermediates) = certs
        .split_first()
        .ok_or(Error::BadCertificate("no certificate"))?;
    let leaf_der = CertificateDer::from(*leaf);
    let ee = EndEntityCert::try_from(&leaf_der).map_err(Error::CertificateChain)?;
    let inter: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .map(|c| CertificateDer::from(*c))
        .collect();
    let path = ee
        .verify_for_usage(
            SIG_ALGS,
            &anchor.anchors,
            &inter,
            unix(now),
            KeyUsage::required_if_present(eku),
            None,
            None,
        )
        .map_err(Error::CertificateChain)?;
    let cert = parse_x509(leaf)?;
    require_leaf_eku(&cert, eku)?;
    let (mut valid_from, mut valid_until) = validity(&cert);
    let leaf_until = valid_until;
    for ic in path.intermediate_certificates() {
        let (f, u) = validity(&parse_x509(ic.der().as_ref())?);
        valid_from = valid_from.max(f);
        valid_until = valid_until.min(u);
    }
    Ok(VerifiedPath {
        leaf,
        cert,
        leaf_until,
        valid_from,
        valid_until,
    })
}

/// The configured broker name must be a SAN DNS name of the leaf.
fn check_broker_name(leaf: &[u8], name: &ServerName<'static>) -> Result<(), Error> {
    let leaf_der = CertificateDer::from(leaf);
    let ee = EndEntityCert::try_from(&leaf_der).map_err(Error::CertificateChain)?;
    ee.verify_is_valid_for_subject_name(name)
        .map_err(|_| Error::BrokerNameMismatch)
}

/// Verifies the broker's `certs` (leaf first) at `now`: chain to the anchor, EKU serverAuth,
/// the configured name as SAN DNS, through `cache` when given (a hit skips the chain's
/// signature checks but not the validity window or the name). Returns the broker's P-256
/// public key.
pub(crate) fn verify_broker_chain(
    anchor: &Anchor,
    broker_name: Option<&ServerName<'static>>,
    cache: Option<&dyn BrokerCertCache>,
    certs: &[&[u8]],
    now: u64,
) -> Result<[u8; 65], Error> {
    let leaf = *certs
        .first()
        .ok_or(Error::BadCertificate("no certificate"))?;
    let hit = cache.and_then(|c| c.get(&sha256(&[leaf]))).filter(|hit| {
        // The fingerprint covers the whole leaf DER, so the entry is this very certificate.
        hit.valid_at(now) && *hit.leaf_der == *leaf
    });
    let verified = match hit {
        Some(hit) => hit,
        None => {
            let v = Arc::new(verify_broker_path(anchor, certs, now)?);
            if let Some(c) = cache {
                c.insert(v.clone());
            }
            v
        }
    };
    if let Some(name) = broker_name {
        check_broker_name(leaf, name)?;
    }
    Ok(verified.public_key)
}

/// Reads the ClientID a device certificate binds, and its public key (configuration time).
pub(crate) fn own_device_cert(der: &[u8]) -> Result<(String, [u8; 65]), ConfigError> {
    let cert = parse_x509(der).map_err(|e| ConfigError(format!("device certificate: {e}")))?;
    let id = bound_client_id(&cert).map_err(|e| ConfigError(format!("device certificate: {e}")))?;
    let key =
        p256_public_key(&cert).map_err(|e| ConfigError(format!("device certificate: {e}")))?;
    Ok((id, key))
}

/// The public key of one's own leaf certificate (configuration time).
pub(crate) fn own_public_key(der: &[u8]) -> Result<[u8; 65], ConfigError> {
    let cert = parse_x509(der).map_err(|e| ConfigError(format!("certificate: {e}")))?;
    p256_public_key(&cert).map_err(|e| ConfigError(format!("certificate: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_text_normalizes_to_the_certificate_form() {
        assert_eq!(serial_hex_of(&[0x00, 0x0a, 0xff]), "0aff");
        assert_eq!(serial_hex_of(&[0x4f, 0x00]), "4f00");
        assert_eq!(serial_hex_of(&[0x00]), "00");
        for (text, want) in [
            ("00:0A:ff", Some("0aff")),
            ("aff", Some("0aff")),
            ("4F:00", Some("4f00")),
            (" 000 ", Some("00")),
            ("", None),
            ("xyz", None),
            ("0g", None),
        ] {
            assert_eq!(normalize_serial_hex(text).as_deref(), want, "{text:?}");
        }
        // devid serials: 16 bytes, first byte 0x40..=0x7f, i.e. 32 lowercase digits unchanged.
        let s = "4aa0b1c2d3e4f5061728394a5b6c7d8e";
        assert_eq!(normalize_serial_hex(s).as_deref(), Some(s));
        assert_eq!(normalize_serial_hex(&s.to_uppercase()).as_deref(), Some(s));
    }
}
