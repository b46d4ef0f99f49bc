//! Operational certificates (LDevID, IEEE 802.1AR): the per-model settings that govern them and
//! the mark that tells an LDevID from a birth certificate (IDevID).
//!
//! - [`LdevidValidity`]: how long an LDevID is valid (a [`HumanDuration`] of at most
//!   [`MAX_LDEVID_VALIDITY_SECS`]; default [`DEFAULT_LDEVID_VALIDITY_SECS`], 90 days).
//! - [`RenewalGrace`]: how long after its expiry an LDevID may still be used to renew (`0` =
//!   never; default [`DEFAULT_RENEWAL_GRACE_SECS`], 30 days).
//! - [`ConnectWith`]: which certificates a broker admits for a model's devices.
//! - [`LDEVID_POLICY_OID`]: the certificate policy every LDevID carries and no IDevID does.

use std::fmt;
use std::str::FromStr;

use crate::duration::{DurationError, HumanDuration};

/// Default lifetime of an LDevID: 90 days.
pub const DEFAULT_LDEVID_VALIDITY_SECS: u64 = 90 * 86_400;
/// Longest lifetime of an LDevID: 90 days.
pub const MAX_LDEVID_VALIDITY_SECS: u64 = 90 * 86_400;
/// Default renewal grace: 30 days.
pub const DEFAULT_RENEWAL_GRACE_SECS: u64 = 30 * 86_400;

named_enum! {
    /// Which certificates a broker admits for a model's devices, on DEVID-1 and on mutual TLS.
    #[derive(Default)]
    pub enum ConnectWith {
        /// The birth certificate (IDevID) or an LDevID (the default).
        #[default]
        Any = "any",
        /// An LDevID only: the IDevID then serves only to enroll an LDevID.
        Ldevid = "ldevid",
    }
}

/// Why a text is not an LDevID validity or renewal grace. The `Display` text is safe to show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LdevidSettingError {
    #[error("{0}")]
    Duration(#[from] DurationError),
    #[error("{0:?} is longer than the longest LDevID lifetime, 90d")]
    TooLong(String),
}

/// How long an LDevID is valid: a duration of at most 90 days (`90d`), with its unit
/// (a number without a unit is seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LdevidValidity(HumanDuration);

impl LdevidValidity {
    pub fn parse(s: &str) -> Result<Self, LdevidSettingError> {
        let d: HumanDuration = s.parse()?;
        if d.as_secs() > MAX_LDEVID_VALIDITY_SECS {
            return Err(LdevidSettingError::TooLong(s.chars().take(40).collect()));
        }
        Ok(LdevidValidity(d))
    }

    pub fn as_secs(&self) -> u64 {
        self.0.as_secs()
    }

    pub fn to_std(&self) -> std::time::Duration {
        self.0.to_std()
    }
}

impl Default for LdevidValidity {
    /// 90 days, written `90d`.
    fn default() -> Self {
        LdevidValidity::parse("90d").expect("90d is a valid LDevID validity")
    }
}

impl FromStr for LdevidValidity {
    type Err = LdevidSettingError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for LdevidValidity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

serde_as_text!(LdevidValidity, "ldevid_validity: {}");

/// How long after its notAfter an LDevID may still be presented to renew it: `0` (never) or a
/// duration with its unit. Only renewal accepts an expired LDevID; nothing else does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RenewalGrace(Option<HumanDuration>);

impl RenewalGrace {
    /// No renewal after expiry.
    pub const NEVER: RenewalGrace = RenewalGrace(None);

    pub fn parse(s: &str) -> Result<Self, LdevidSettingError> {
        if s == "0" {
            return Ok(RenewalGrace::NEVER);
        }
        Ok(RenewalGrace(Some(s.parse()?)))
    }

    /// The grace in seconds; 0 = never.
    pub fn as_secs(&self) -> u64 {
        self.0.map_or(0, |d| d.as_secs())
    }

    /// True when an LDevID whose notAfter is `not_after` may renew at `now` (unix seconds):
    /// before it expires, or less than the grace after.
    pub fn admits(&self, not_after: i64, now: i64) -> bool {
        let grace = i64::try_from(self.as_secs()).unwrap_or(i64::MAX);
        now <= not_after || now - not_after < grace
    }
}

impl Default for RenewalGrace {
    /// 30 days, written `30d`.
    fn default() -> Self {
        RenewalGrace::parse("30d").expect("30d is a valid renewal grace")
    }
}

impl FromStr for RenewalGrace {
    type Err = LdevidSettingError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for RenewalGrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("0"),
            Some(d) => d.fmt(f),
        }
    }
}

serde_as_text!(RenewalGrace, "renewal_grace: {}");

/// The certificate policy that marks an LDevID: `2.25.57464032336958439202564080480971296941`
/// (an OID made from the UUID 2b3b2b89-125c-45ab-a271-87714c4e90ad, ITU-T X.667), in the
/// certificatePolicies extension. IDevIDs carry no certificatePolicies extension. The mark is
/// signed by the CA with the rest of the certificate, so a broker tells an LDevID from an IDevID
/// from the certificate alone.
pub const LDEVID_POLICY_OID: &str = "2.25.57464032336958439202564080480971296941";

/// [`LDEVID_POLICY_OID`]'s DER content octets (what follows the OBJECT IDENTIFIER tag and
/// length).
pub const LDEVID_POLICY_OID_DER: &[u8] = &[
    0x69, 0xd6, 0xbb, 0x95, 0xe2, 0xa2, 0xa5, 0xe2, 0x96, 0xd7, 0xa2, 0xb8, 0xe1, 0xee, 0x94, 0xe2,
    0xba, 0xa1, 0x2d,
];

/// The certificatePolicies extension value (DER) of an LDevID: one PolicyInformation with
/// [`LDEVID_POLICY_OID`] and no qualifiers.
pub fn ldevid_policies_der() -> Vec<u8> {
    let oid_len = LDEVID_POLICY_OID_DER.len() as u8;
    let mut out = vec![0x30, oid_len + 4, 0x30, oid_len + 2, 0x06, oid_len];
    out.extend_from_slice(LDEVID_POLICY_OID_DER);
    out
}

named_enum! {
    /// Why an LDevID was not issued: the one list, shared by the service, the broker's MQTT
    /// renewal replies ([`Refusal::code`]) and the device.
    pub enum Refusal {
        /// The request could not be read (payload, CSR, correlation data).
        Malformed = "malformed",
        /// The caller is not a device known by a certificate of its own (unknown serial, a
        /// certificate of another device, a connection the broker did not authenticate).
        NotAuthorized = "not_authorized",
        /// The device is revoked: it never gets another certificate.
        DeviceRevoked = "device_revoked",
        /// The device is suspended: no certificate while it is.
        DeviceSuspended = "device_suspended",
        /// The certificate presented is revoked, on hold, or an LDevID expired beyond the
        /// model's renewal grace.
        CertificateNotAccepted = "certificate_not_accepted",
        /// Re-enrollment: the CSR's subject or SAN differs from the certificate's.
        SubjectMismatch = "subject_mismatch",
        /// A new key without a valid proof by the current certificate's key.
        ProofInvalid = "proof_invalid",
        /// The key belongs to another device, or was revoked for keyCompromise.
        KeyRefused = "key_refused",
        /// Too many certificates for this device in a short time.
        RateLimited = "rate_limited",
        /// The service cannot issue now (unreachable, busy, shutting down): try later.
        Unavailable = "unavailable",
        /// Anything else (logged by the service).
        Internal = "internal",
    }
}

impl Refusal {
    /// The one-byte reason code of an MQTT renewal reply (`docs/protocol.md`); 0x00 is success.
    pub fn code(self) -> u8 {
        match self {
            Refusal::Malformed => 0x01,
            Refusal::NotAuthorized => 0x02,
            Refusal::DeviceRevoked => 0x03,
            Refusal::DeviceSuspended => 0x04,
            Refusal::CertificateNotAccepted => 0x05,
            Refusal::SubjectMismatch => 0x06,
            Refusal::ProofInvalid => 0x07,
            Refusal::KeyRefused => 0x08,
            Refusal::RateLimited => 0x09,
            Refusal::Unavailable => 0x0a,
            Refusal::Internal => 0xff,
        }
    }

    /// The refusal with reason code `code`; None for 0x00 (success) and unknown codes.
    pub fn from_code(code: u8) -> Option<Refusal> {
        Refusal::ALL.into_iter().find(|r| r.code() == code)
    }
}

/// The label that starts the message a re-key proof signs (`docs/protocol.md`, "MQTT
/// renewal"): ASCII, ending in one 0x00 byte.
pub const REKEY_PROOF_LABEL: &[u8] = b"devid LDevID re-key proof v1\0";

/// The bytes a re-key proof signs: [`REKEY_PROOF_LABEL`] followed by the SHA-256 of the CSR's
/// DER (32 bytes).
#[cfg(any(feature = "protocol", feature = "ca"))]
pub fn rekey_proof_message(csr_der: &[u8]) -> Vec<u8> {
    let mut m = REKEY_PROOF_LABEL.to_vec();
    m.extend_from_slice(ring::digest::digest(&ring::digest::SHA256, csr_der).as_ref());
    m
}

/// True when `signature` (ECDSA P-256 with SHA-256, DER-encoded as in X.509) verifies
/// [`rekey_proof_message`] of `csr_der` under the key of the certificate `cert_der`.
#[cfg(any(feature = "protocol", feature = "ca"))]
pub fn verify_rekey_proof(cert_der: &[u8], csr_der: &[u8], signature: &[u8]) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(cert_der) else {
        return false;
    };
    let point = &cert.tbs_certificate.subject_pki.subject_public_key.data;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, point)
        .verify(&rekey_proof_message(csr_der), signature)
        .is_ok()
}

/// The subject and subjectAltName of a certificate or CSR, for the re-enrollment rule
/// (RFC 7030 4.2.2: the CSR's must equal the certificate's).
#[cfg(feature = "ca")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// `(attribute type OID, value)` in order, e.g. `("2.5.4.3", "thermoABC")`.
    pub subject: Vec<(String, String)>,
    /// Each general name, e.g. `URI:urn:devid:thermoABC`.
    pub san: Vec<String>,
}

#[cfg(feature = "ca")]
impl Names {
    /// The names of a DER certificate; None if it is not one.
    pub fn of_certificate(der: &[u8]) -> Option<Names> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let san = cert
            .extensions()
            .iter()
            .filter_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::SubjectAlternativeName(s) => Some(s),
                _ => None,
            })
            .flat_map(|s| s.general_names.iter().map(general_name))
            .collect();
        Some(Names {
            subject: name_pairs(cert.subject()),
            san,
        })
    }

    /// The names of a DER CSR (SAN from its extensionRequest); None if it is not one.
    pub fn of_csr(der: &[u8]) -> Option<Names> {
        use x509_parser::prelude::FromDer;
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(der).ok()?;
        let san = csr
            .requested_extensions()
            .into_iter()
            .flatten()
            .filter_map(|e| match e {
                x509_parser::extensions::ParsedExtension::SubjectAlternativeName(s) => Some(s),
                _ => None,
            })
            .flat_map(|s| s.general_names.iter().map(general_name))
            .collect();
        Some(Names {
            subject: name_pairs(&csr.certification_request_info.subject),
            san,
        })
    }

    /// The subject as text, e.g. `CN=thermoABC, serialNumber=SN-1`.
    pub fn subject_text(&self) -> String {
        self.subject
            .iter()
            .map(|(oid, v)| format!("{}={v}", short_name(oid)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The SAN as text, e.g. `URI:urn:devid:thermoABC` (`none` when absent).
    pub fn san_text(&self) -> String {
        if self.san.is_empty() {
            "none".into()
        } else {
            self.san.join(", ")
        }
    }
}

#[cfg(feature = "ca")]
fn name_pairs(name: &x509_parser::x509::X509Name<'_>) -> Vec<(String, String)> {
    name.iter_attributes()
        .map(|a| {
            let value = match a.as_str() {
                Ok(s) => s.to_string(),
                Err(_) => format!("#{}", hex::encode(a.attr_value().data)),
            };
            (a.attr_type().to_id_string(), value)
        })
        .collect()
}

#[cfg(feature = "ca")]
fn general_name(g: &x509_parser::extensions::GeneralName<'_>) -> String {
    use x509_parser::extensions::GeneralName;
    match g {
        GeneralName::URI(u) => format!("URI:{u}"),
        GeneralName::DNSName(d) => format!("DNS:{d}"),
        GeneralName::RFC822Name(m) => format!("email:{m}"),
        GeneralName::IPAddress(ip) => format!("IP:{}", hex::encode(ip)),
        other => format!("{other:?}"),
    }
}

#[cfg(feature = "ca")]
fn short_name(oid: &str) -> &str {
    match oid {
        "2.5.4.3" => "CN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.6" => "C",
        other => other,
    }
}

/// True when the DER certificate carries the LDevID mark ([`LDEVID_POLICY_OID`] in its
/// certificatePolicies); false for an IDevID (or any other certificate); None when the bytes
/// are not a certificate.
#[cfg(any(feature = "protocol", feature = "ca"))]
pub fn is_ldevid(cert_der: &[u8]) -> Option<bool> {
    use x509_parser::extensions::ParsedExtension;
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    Some(cert.extensions().iter().any(|ext| {
        matches!(ext.parsed_extension(), ParsedExtension::CertificatePolicies(policies)
            if policies.iter().any(|p| p.policy_id.as_bytes() == LDEVID_POLICY_OID_DER))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes dotted OID text the way DER does, independently of the constant.
    fn encode_oid(text: &str) -> Vec<u8> {
        let arcs: Vec<u128> = text.split('.').map(|a| a.parse().expect("arc")).collect();
        let mut out = Vec::new();
        let mut push = |mut v: u128| {
            let mut bytes = vec![(v & 0x7f) as u8];
            v >>= 7;
            while v > 0 {
                bytes.push((v & 0x7f) as u8 | 0x80);
                v >>= 7;
            }
            bytes.reverse();
            out.extend(bytes);
        };
        push(arcs[0] * 40 + arcs[1]);
        for a in &arcs[2..] {
            push(*a);
        }
        out
    }

    #[test]
    fn the_policy_oid_constants_agree() {
        assert_eq!(encode_oid(LDEVID_POLICY_OID), LDEVID_POLICY_OID_DER);
        let uuid = u128::from_str_radix("2b3b2b89125c45aba27187714c4e90ad", 16).expect("hex");
        assert_eq!(LDEVID_POLICY_OID, format!("2.25.{uuid}"));
        let der = ldevid_policies_der();
        assert_eq!(der.len(), 2 + 2 + 2 + LDEVID_POLICY_OID_DER.len());
        assert_eq!(&der[6..], LDEVID_POLICY_OID_DER);
    }

    #[test]
    fn validity_table() {
        assert_eq!(LdevidValidity::default().as_secs(), 90 * 86_400);
        assert_eq!(LdevidValidity::default().to_string(), "90d");
        for (ok, secs) in [
            ("1s", 1),
            ("60", 60),
            ("90d", 7_776_000),
            ("12w", 7_257_600),
        ] {
            assert_eq!(
                LdevidValidity::parse(ok).map(|v| v.as_secs()),
                Ok(secs),
                "{ok}"
            );
        }
        for bad in ["0", "0s", "91d", "13w", "1y", "", "x", "-1d"] {
            assert!(LdevidValidity::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            LdevidValidity::parse("91d")
                .expect_err("too long")
                .to_string(),
            "\"91d\" is longer than the longest LDevID lifetime, 90d"
        );
    }

    #[test]
    fn grace_table() {
        assert_eq!(RenewalGrace::default().as_secs(), 30 * 86_400);
        assert_eq!(RenewalGrace::parse("0"), Ok(RenewalGrace::NEVER));
        assert_eq!(RenewalGrace::NEVER.to_string(), "0");
        assert_eq!(
            RenewalGrace::parse("7d").map(|g| g.to_string()),
            Ok("7d".into())
        );
        for bad in ["", "00", "0s", "-1", "1x", "never"] {
            assert!(RenewalGrace::parse(bad).is_err(), "{bad}");
        }
        let g = RenewalGrace::parse("10s").expect("ok");
        assert!(g.admits(100, 100));
        assert!(g.admits(100, 109));
        assert!(!g.admits(100, 110));
        assert!(RenewalGrace::NEVER.admits(100, 100));
        assert!(!RenewalGrace::NEVER.admits(100, 101));
    }

    #[test]
    fn connect_with_names() {
        assert_eq!(ConnectWith::default(), ConnectWith::Any);
        assert_eq!("ldevid".parse::<ConnectWith>(), Ok(ConnectWith::Ldevid));
        assert!("LDevID".parse::<ConnectWith>().is_err());
        let json = serde_json::to_string(&ConnectWith::Ldevid).expect("json");
        assert_eq!(json, "\"ldevid\"");
        let v: LdevidValidity = serde_json::from_str("\"30d\"").expect("json");
        assert_eq!(serde_json::to_string(&v).expect("json"), "\"30d\"");
        let e = serde_json::from_str::<RenewalGrace>("\"soon\"").expect_err("not a grace");
        assert!(e.to_string().starts_with("renewal_grace: "), "{e}");
    }
}
