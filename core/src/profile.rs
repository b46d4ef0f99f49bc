//! Certificate profiles: what devid puts in the certificates it issues.
//!
//! Every function here is pure: time and randomness come in as arguments and the result is an
//! [`rcgen::CertificateParams`] that the CA signs. Nothing a CSR asks for reaches these
//! functions; only the CSR's public key does.
//!
//! Profiles:
//! - [`Profile::IDevId`]: the device birth certificate of IEEE 802.1AR. Subject CN = ClientID,
//!   serialNumber (2.5.4.5) = hardware serial (PrintableString), O from the settings; SAN URI
//!   `urn:devid:<ClientID>`; keyUsage digitalSignature (critical); EKU clientAuth;
//!   basicConstraints CA:FALSE (critical); AKI and SKI; a CRL distribution point when
//!   configured; validity from the settings (default 20 years, or no expiry:
//!   notAfter 99991231235959Z, RFC 5280 4.1.2.5).
//! - [`Profile::LDevId`]: a short-lived operational identity with the same names and
//!   extensions and a validity given by the profile itself (at most
//!   [`MAX_LDEVID_LIFETIME_SECS`]), plus a certificatePolicies extension naming
//!   [`crate::ldevid::LDEVID_POLICY_OID`], the mark that tells it from an IDevID.
//! - [`broker_params`]: an MQTT broker's server certificate: CN = first DNS name, SAN DNS
//!   names, EKU serverAuth and clientAuth, same serial, key-identifier and CRL rules; default
//!   validity 2 years.
//! - [`root_ca_params`] and [`issuing_ca_params`]: the CA certificates (root: default
//!   [`DEFAULT_ROOT_YEARS`]; issuing CA: default [`DEFAULT_ISSUING_YEARS`], never past the
//!   root's notAfter, with a CRL distribution point naming the root's CRL when given).
//!
//! No certificate outlives its issuer: [`cap_to_issuer`] is the one rule, applied by the CA to
//! everything it signs.
//!
//! Key identifiers: the SKI is rcgen's `KeyIdMethod::Sha256`, the first 160 bits of SHA-256
//! over the subject's SubjectPublicKeyInfo DER; the AKI is copied from the issuing CA's SKI.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CrlDistributionPoint, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::SecureRandom;
use time::OffsetDateTime;

use crate::clientid;
use crate::dnsname::{DnsName, DnsNameError};
use crate::hwserial::{self, HardwareSerial};

/// Default validity of a device birth certificate (IDevID).
pub const DEFAULT_DEVICE_YEARS: u32 = 20;
/// Default validity of the root CA certificate.
pub const DEFAULT_ROOT_YEARS: u32 = 30;
/// Default validity of an issuing CA certificate.
pub const DEFAULT_ISSUING_YEARS: u32 = 10;
/// Default validity of a broker certificate.
pub const DEFAULT_BROKER_YEARS: u32 = 2;
/// notBefore is set this far before the issuing time, to tolerate clocks running behind.
pub const BACKDATE_SECS: i64 = 60;
/// Length of the random certificate serial number, in bytes.
pub const SERIAL_LEN: usize = 16;
/// Longest lifetime of an LDevID (operational) certificate: 90 days.
pub const MAX_LDEVID_LIFETIME_SECS: u64 = crate::ldevid::MAX_LDEVID_VALIDITY_SECS;
/// X.520 upper bounds (RFC 5280 appendix A.1): ub-common-name,
/// ub-organization-name.
const UB_COMMON_NAME: usize = 64;
/// Longest hardware serial a certificate can carry (the X.520 upper bound of serialNumber).
pub const MAX_HARDWARE_SERIAL_LEN: usize = hwserial::MAX_LEN;
const UB_ORGANIZATION_NAME: usize = 64;
/// Longest CRL URL accepted.
const MAX_URL_LEN: usize = 2048;

/// Why certificate parameters could not be built. The `Display` text is client-safe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    #[error("invalid ClientID for a certificate: {0}")]
    ClientId(String),
    #[error("invalid hardware serial: {0}")]
    HardwareSerial(String),
    #[error("invalid organization name: {0}")]
    Organization(String),
    #[error("invalid DNS name {name:?}: {reason}")]
    DnsName { name: String, reason: String },
    #[error("invalid CRL URL: {0}")]
    CrlUrl(String),
    #[error("invalid validity: {0}")]
    Validity(String),
    #[error("invalid CA name: {0}")]
    CaName(String),
    #[error("the random number generator failed")]
    Rng,
}

impl From<DnsNameError> for ProfileError {
    fn from(e: DnsNameError) -> Self {
        ProfileError::DnsName {
            name: e.name,
            reason: e.rule.to_string(),
        }
    }
}

/// How long a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// Calendar years from now (Feb 29 falls back to Feb 28). Clamped to no expiry.
    Years(u32),
    /// Seconds from now. Clamped to no expiry.
    Seconds(u64),
    /// notAfter 99991231235959Z: "no well-defined expiration date" (RFC 5280 4.1.2.5).
    NoExpiry,
}

impl Default for Validity {
    fn default() -> Self {
        Validity::Years(DEFAULT_DEVICE_YEARS)
    }
}

impl Validity {
    /// notAfter for a certificate issued at `now` (whole seconds).
    pub fn not_after(&self, now: OffsetDateTime) -> Result<OffsetDateTime, ProfileError> {
        let now = whole_seconds(now);
        let end = no_expiry();
        match *self {
            Validity::NoExpiry => Ok(end),
            Validity::Years(0) | Validity::Seconds(0) => Err(ProfileError::Validity(
                "validity must be longer than zero".into(),
            )),
            Validity::Years(n) => {
                let year = i64::from(now.year()) + i64::from(n);
                if year > 9999 {
                    return Ok(end);
                }
                // `year` is at most 9999 here, so it fits an i32.
                let year = year as i32;
                let date = now
                    .date()
                    .replace_year(year)
                    .or_else(|_| {
                        // Only Feb 29 can fail: use Feb 28 of the target year.
                        time::Date::from_calendar_date(year, time::Month::February, 28)
                    })
                    .map_err(|e| ProfileError::Validity(e.to_string()))?;
                Ok(now.replace_date(date))
            }
            Validity::Seconds(s) => {
                let secs = i64::try_from(s).unwrap_or(i64::MAX);
                match now.checked_add(time::Duration::seconds(secs)) {
                    Some(t) if t < end => Ok(t),
                    _ => Ok(end),
                }
            }
        }
    }
}

/// The settings a profile takes from the service's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileSettings {
    /// Subject O, when set.
    pub organization: Option<String>,
    pub validity: Validity,
    /// The CRL distribution point, e.g. `http://host:8080/v1/crl`. devid's CA makes it name
    /// the signing CA's own CRL: `<crl_url>/issuing/<issuing CA id>`.
    pub crl_url: Option<String>,
}

impl Default for ProfileSettings {
    /// Device defaults: no O, 20 years, no CRL distribution point.
    fn default() -> Self {
        ProfileSettings {
            organization: None,
            validity: Validity::Years(DEFAULT_DEVICE_YEARS),
            crl_url: None,
        }
    }
}

impl ProfileSettings {
    /// Broker defaults: no O, 2 years, no CRL distribution point.
    pub fn broker_default() -> Self {
        ProfileSettings {
            validity: Validity::Years(DEFAULT_BROKER_YEARS),
            ..ProfileSettings::default()
        }
    }

    /// Checks the organization and CRL URL once (e.g. at start-up); the profile functions
    /// check them again on every call, so this is only for early, clear errors.
    pub fn validate(&self) -> Result<(), ProfileError> {
        if let Some(o) = &self.organization {
            check_organization(o)?;
        }
        if let Some(url) = &self.crl_url {
            check_crl_url(url)?;
        }
        Ok(())
    }
}

/// Who a device certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceIdentity<'a> {
    pub client_id: &'a str,
    pub hardware_serial: &'a str,
}

/// The device certificate profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// IEEE 802.1AR initial device identity (birth certificate). Validity from the settings.
    IDevId,
    /// Locally significant, short-lived operational identity. Its own lifetime replaces the
    /// settings' validity; at most [`MAX_LDEVID_LIFETIME_SECS`].
    LDevId { lifetime: Duration },
}

impl Profile {
    fn not_after(
        &self,
        settings: &ProfileSettings,
        now: OffsetDateTime,
    ) -> Result<OffsetDateTime, ProfileError> {
        match self {
            Profile::IDevId => settings.validity.not_after(now),
            Profile::LDevId { lifetime } => {
                let secs = lifetime.as_secs();
                if secs == 0 || secs > MAX_LDEVID_LIFETIME_SECS {
                    return Err(ProfileError::Validity(format!(
                        "LDevID lifetime must be 1 to {MAX_LDEVID_LIFETIME_SECS} seconds"
                    )));
                }
                Validity::Seconds(secs).not_after(now)
            }
        }
    }
}

/// 9999-12-31T23:59:59Z, encoded as GeneralizedTime 99991231235959Z.
pub fn no_expiry() -> OffsetDateTime {
    time::macros::datetime!(9999-12-31 23:59:59 UTC)
}

/// A new certificate serial number: positive, exactly 16 bytes in DER, never zero and never
/// derived from the key. The first byte is 0x40 (top bit clear: positive; next bit set: no
/// shorter encoding), then the time of issue in unix seconds (4 bytes, big-endian, modulo 2^32),
/// then 88 random bits. The time comes first so that serials issued together sort together: a
/// registry's unique index on serials then takes new ones at its right edge instead of on a
/// random leaf page each. 88 random bits are more than the 64 the CA/Browser Forum asks of
/// public CAs' serials.
pub fn new_serial(
    unix_secs: i64,
    rng: &dyn SecureRandom,
) -> Result<[u8; SERIAL_LEN], ProfileError> {
    let mut serial = [0u8; SERIAL_LEN];
    rng.fill(&mut serial[5..]).map_err(|_| ProfileError::Rng)?;
    serial[0] = 0x40;
    // Truncation is the rule: the low 32 bits of the time.
    serial[1..5].copy_from_slice(&(unix_secs as u32).to_be_bytes());
    Ok(serial)
}

/// Parameters of a device certificate. Sign them with the CSR's (or a generated) public key.
pub fn device_params(
    profile: Profile,
    id: &DeviceIdentity<'_>,
    settings: &ProfileSettings,
    serial: &[u8; SERIAL_LEN],
    now: OffsetDateTime,
) -> Result<CertificateParams, ProfileError> {
    clientid::validate(id.client_id).map_err(|e| ProfileError::ClientId(e.to_string()))?;
    let serial_value = hardware_serial_value(id.hardware_serial)?;

    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, id.client_id);
    dn.push(DnType::CustomDnType(vec![2, 5, 4, 5]), serial_value);
    if let Some(o) = &settings.organization {
        check_organization(o)?;
        dn.push(DnType::OrganizationName, o.as_str());
    }
    let uri = format!("urn:devid:{}", id.client_id);
    // The ClientID was validated as [0-9A-Za-z]: the URI is ASCII.
    let uri = uri
        .try_into()
        .map_err(|_| ProfileError::ClientId("not ASCII".into()))?;

    let mut params = end_entity_params(serial, settings, now, profile.not_after(settings, now)?)?;
    params.distinguished_name = dn;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if let Profile::LDevId { .. } = profile {
        // certificatePolicies (2.5.29.32), not critical: the LDevID mark.
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                &[2, 5, 29, 32],
                crate::ldevid::ldevid_policies_der(),
            ));
    }
    Ok(params)
}

/// Parameters of an MQTT broker's certificate: CN = the first name, SAN DNS = all names.
pub fn broker_params(
    dns_names: &[&str],
    settings: &ProfileSettings,
    serial: &[u8; SERIAL_LEN],
    now: OffsetDateTime,
) -> Result<CertificateParams, ProfileError> {
    let first = dns_names.first().ok_or_else(|| ProfileError::DnsName {
        name: String::new(),
        reason: "at least one DNS name is required".into(),
    })?;
    let mut sans = Vec::with_capacity(dns_names.len());
    for name in dns_names {
        DnsName::parse(name)?;
        let ia5 = (*name).try_into().map_err(|_| ProfileError::DnsName {
            name: name.to_string(),
            reason: "not ASCII".into(),
        })?;
        sans.push(SanType::DnsName(ia5));
    }
    if first.len() > UB_COMMON_NAME {
        return Err(ProfileError::DnsName {
            name: first.to_string(),
            reason: format!("longer than {UB_COMMON_NAME} characters, too long for the CN"),
        });
    }
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, *first);
    if let Some(o) = &settings.organization {
        check_organization(o)?;
        dn.push(DnType::OrganizationName, o.as_str());
    }

    let not_after = settings.validity.not_after(now)?;
    let mut params = end_entity_params(serial, settings, now, not_after)?;
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    Ok(params)
}

/// Common end-entity parts: serial, validity, KU digitalSignature, CA:FALSE, AKI, SKI, CRL DP.
fn end_entity_params(
    serial: &[u8; SERIAL_LEN],
    settings: &ProfileSettings,
    now: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, ProfileError> {
    let mut params = CertificateParams::default();
    params.serial_number = Some(SerialNumber::from_slice(serial));
    params.not_before = not_before(now);
    params.not_after = not_after;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // ExplicitNoCa writes basicConstraints CA:FALSE and, with it, the SKI (rcgen writes the
    // SKI only together with basicConstraints).
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    params.key_identifier_method = KeyIdMethod::Sha256;
    if let Some(url) = &settings.crl_url {
        check_crl_url(url)?;
        params.crl_distribution_points = vec![CrlDistributionPoint {
            uris: vec![url.clone()],
        }];
    }
    Ok(params)
}

/// What a CA certificate takes besides its serial and issuing time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaCertSettings<'a> {
    /// The subject CN.
    pub common_name: &'a str,
    /// Subject O, when set.
    pub organization: Option<&'a str>,
    pub validity: Validity,
    /// An issuing CA: the CRL distribution point naming the root's CRL (e.g.
    /// `http://host:8080/v1/crl/root`). Ignored for the root.
    pub crl_url: Option<&'a str>,
}

/// The CN of the root devid makes.
pub const ROOT_CN: &str = "devid Root CA";
/// The CN of the first issuing CA devid makes; later ones add their key identifier.
pub const ISSUING_CN: &str = "devid Issuing CA";

/// The self-signed root CA: CA:TRUE (critical), keyCertSign and cRLSign (critical), SKI;
/// validity from the settings (default [`DEFAULT_ROOT_YEARS`]).
pub fn root_ca_params(
    settings: &CaCertSettings<'_>,
    serial: &[u8; SERIAL_LEN],
    now: OffsetDateTime,
) -> Result<CertificateParams, ProfileError> {
    let not_after = settings.validity.not_after(now)?;
    ca_params(settings, serial, now, not_after, None)
}

/// An online issuing CA, signed by the root: CA:TRUE with pathlen 0, keyCertSign, cRLSign and
/// digitalSignature, SKI and AKI, the root's CRL as distribution point when given; validity
/// from the settings (default [`DEFAULT_ISSUING_YEARS`]), capped at the root's notAfter.
pub fn issuing_ca_params(
    settings: &CaCertSettings<'_>,
    serial: &[u8; SERIAL_LEN],
    now: OffsetDateTime,
    root_not_after: OffsetDateTime,
) -> Result<CertificateParams, ProfileError> {
    let (not_after, _) = cap_to_issuer(settings.validity.not_after(now)?, root_not_after);
    if not_after <= not_before(now) {
        return Err(ProfileError::Validity(
            "the root CA has expired: no issuing CA can be made under it".into(),
        ));
    }
    let mut params = ca_params(settings, serial, now, not_after, Some(0))?;
    if let Some(url) = settings.crl_url {
        check_crl_url(url)?;
        params.crl_distribution_points = vec![CrlDistributionPoint {
            uris: vec![url.to_string()],
        }];
    }
    Ok(params)
}

/// No certificate outlives its issuer: `not_after` capped at the issuer's notAfter, and
/// whether it was capped.
pub fn cap_to_issuer(
    not_after: OffsetDateTime,
    issuer_not_after: OffsetDateTime,
) -> (OffsetDateTime, bool) {
    if not_after > issuer_not_after {
        (issuer_not_after, true)
    } else {
        (not_after, false)
    }
}

fn ca_params(
    settings: &CaCertSettings<'_>,
    serial: &[u8; SERIAL_LEN],
    now: OffsetDateTime,
    not_after: OffsetDateTime,
    path_len: Option<u8>,
) -> Result<CertificateParams, ProfileError> {
    let cn = settings.common_name;
    if cn.is_empty() || cn.chars().count() > UB_COMMON_NAME || cn.chars().any(char::is_control) {
        return Err(ProfileError::CaName(format!(
            "the common name must be 1 to {UB_COMMON_NAME} characters"
        )));
    }
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    if let Some(o) = settings.organization {
        check_organization(o)?;
        dn.push(DnType::OrganizationName, o);
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.serial_number = Some(SerialNumber::from_slice(serial));
    params.not_before = not_before(now);
    params.not_after = not_after;
    params.key_identifier_method = KeyIdMethod::Sha256;
    match path_len {
        None => {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        }
        Some(n) => {
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(n));
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
            ];
            params.use_authority_key_identifier_extension = true;
        }
    }
    Ok(params)
}

fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

fn not_before(now: OffsetDateTime) -> OffsetDateTime {
    let t = whole_seconds(now);
    t.checked_sub(time::Duration::seconds(BACKDATE_SECS))
        .unwrap_or(t)
}

/// The hardware serial as an X.520 serialNumber value: always a PrintableString (RFC 5280
/// appendix A.1), so the serial must pass [`HardwareSerial`]'s rules.
fn hardware_serial_value(s: &str) -> Result<DnValue, ProfileError> {
    let serial =
        HardwareSerial::parse(s).map_err(|e| ProfileError::HardwareSerial(e.to_string()))?;
    rcgen::string::PrintableString::try_from(serial.as_str())
        .map(DnValue::PrintableString)
        .map_err(|_| ProfileError::HardwareSerial("not a PrintableString".into()))
}

fn check_organization(o: &str) -> Result<(), ProfileError> {
    let chars = o.chars().count();
    if chars == 0 || chars > UB_ORGANIZATION_NAME {
        return Err(ProfileError::Organization(format!(
            "must be 1 to {UB_ORGANIZATION_NAME} characters"
        )));
    }
    if o.chars().any(|c| c.is_control()) {
        return Err(ProfileError::Organization(
            "contains a control character".into(),
        ));
    }
    Ok(())
}

fn check_crl_url(url: &str) -> Result<(), ProfileError> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ProfileError::CrlUrl(
            "must start with http:// or https://".into(),
        ));
    }
    if url.len() > MAX_URL_LEN {
        return Err(ProfileError::CrlUrl(format!(
            "longer than {MAX_URL_LEN} characters"
        )));
    }
    if !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ProfileError::CrlUrl(
            "must be ASCII without spaces or control characters".into(),
        ));
    }
    Ok(())
}
