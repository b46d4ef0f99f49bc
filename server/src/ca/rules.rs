//! The rules every CA meets, whether devid made it or it was imported; checked at creation,
//! at import and at every load (see [`Ca::import`] for the list).

use devid_core::csr::P256PublicKey;
use devid_core::profile::{self, device_params, DeviceIdentity, Profile, ProfileSettings};
use ring::digest;
use ring::rand::SystemRandom;
use time::OffsetDateTime;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384,
};
use x509_parser::prelude::{FromDer, ParsedExtension, X509Certificate};

use super::error::CaError;
use super::IssuingCa;

/// What the checks learned about the issuing certificate.
pub(super) struct CheckedIssuing {
    /// Its SKI (or, without one, rcgen's SHA-256 key identifier): the AKI of what it signs.
    pub key_id: Vec<u8>,
    /// Its subject name, DER.
    pub subject: Vec<u8>,
    /// Its SubjectPublicKeyInfo, DER.
    pub spki: Vec<u8>,
}

/// Checks the issuing certificate against its key and the chain above it: the issuing
/// certificate is a CA that may sign certificates and CRLs, with `key`'s P-256 public key; the
/// chain starts with it, each certificate is signed (ECDSA P-256 with SHA-256) by the next,
/// and it ends in a self-signed root. `key` is the private key's public key (uncompressed).
pub(super) fn check_ca(
    issuing_der: &[u8],
    key: &[u8],
    chain_der: &[Vec<u8>],
) -> Result<CheckedIssuing, CaError> {
    let invalid = CaError::InvalidCa;
    let parsed: Vec<X509Certificate<'_>> = chain_der
        .iter()
        .enumerate()
        .map(|(i, der)| parse_cert(der).map_err(|e| invalid(format!("chain[{i}]: {e}"))))
        .collect::<Result<_, _>>()?;
    let issuing = parse_cert(issuing_der).map_err(invalid)?;
    if chain_der.first().map(Vec::as_slice) != Some(issuing_der) {
        return Err(invalid(
            "the chain must start with the issuing certificate".into(),
        ));
    }
    check_issuing(&issuing, key)?;
    check_chain(&parsed)?;
    Ok(CheckedIssuing {
        key_id: key_id(&issuing),
        subject: issuing.subject().as_raw().to_vec(),
        spki: issuing.public_key().raw.to_vec(),
    })
}

/// The issuing certificate: a CA that may sign certificates and CRLs, with our key.
fn check_issuing(issuing: &X509Certificate<'_>, key: &[u8]) -> Result<(), CaError> {
    let invalid = CaError::InvalidCa;
    let bc = issuing
        .basic_constraints()
        .map_err(|e| invalid(format!("basicConstraints: {e}")))?;
    if !bc.is_some_and(|bc| bc.value.ca) {
        return Err(invalid(
            "the issuing certificate is not a CA (basicConstraints CA:TRUE missing)".into(),
        ));
    }
    if let Some(ku) = issuing
        .key_usage()
        .map_err(|e| invalid(format!("keyUsage: {e}")))?
    {
        if !ku.value.key_cert_sign() || !ku.value.crl_sign() {
            return Err(invalid(
                "the issuing certificate's keyUsage must include keyCertSign and cRLSign".into(),
            ));
        }
    }
    check_p256_spki(issuing, "the issuing certificate")?;
    if issuing.public_key().subject_public_key.data.as_ref() != key {
        return Err(invalid(
            "the private key does not match the issuing certificate".into(),
        ));
    }
    Ok(())
}

/// The chain: each certificate signed (ECDSA P-256 with SHA-256) by the next, ending in a
/// self-signed root.
fn check_chain(parsed: &[X509Certificate<'_>]) -> Result<(), CaError> {
    let invalid = CaError::InvalidCa;
    for (i, pair) in parsed.windows(2).enumerate() {
        let (child, parent) = (&pair[0], &pair[1]);
        check_p256_spki(parent, &format!("chain[{}]", i + 1))?;
        if !parent.is_ca() {
            return Err(invalid(format!("chain[{}] is not a CA", i + 1)));
        }
        if child.issuer().as_raw() != parent.subject().as_raw() {
            return Err(invalid(format!(
                "the chain does not link: chain[{i}] was issued by \"{}\", but chain[{}] is \"{}\"",
                child.issuer(),
                i + 1,
                parent.subject()
            )));
        }
        if child.signature_algorithm.algorithm != OID_SIG_ECDSA_WITH_SHA256 {
            return Err(invalid(format!(
                "chain[{i}] is not signed with ecdsa-with-SHA256 (devid uses ECDSA P-256 \
                 with SHA-256 throughout)"
            )));
        }
        child
            .verify_signature(Some(parent.public_key()))
            .map_err(|_| {
                invalid(format!(
                    "the chain does not link: chain[{i}]'s signature does not verify under chain[{}]'s key",
                    i + 1
                ))
            })?;
    }
    let root = parsed.last().ok_or_else(|| invalid("empty chain".into()))?;
    let root_sig = &root.signature_algorithm.algorithm;
    if root.issuer().as_raw() != root.subject().as_raw()
        || !(*root_sig == OID_SIG_ECDSA_WITH_SHA256 || *root_sig == OID_SIG_ECDSA_WITH_SHA384)
        || root.verify_signature(None).is_err()
    {
        return Err(invalid(
            "the chain must end with the self-signed root certificate".into(),
        ));
    }
    Ok(())
}

/// The issuing certificate's SKI; without one, rcgen's `KeyIdMethod::Sha256` (first 160 bits
/// of SHA-256 over the SubjectPublicKeyInfo DER).
pub(super) fn key_id(issuing: &X509Certificate<'_>) -> Vec<u8> {
    issuing
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
        .unwrap_or_else(|| {
            digest::digest(&digest::SHA256, issuing.public_key().raw).as_ref()[..20].to_vec()
        })
}

impl IssuingCa {
    /// Issues a throw-away certificate and checks its issuer name, AKI and signature against
    /// the issuing certificate. rcgen re-encodes the issuer name from its own model, which
    /// cannot hold multi-valued RDNs or repeated attribute types.
    pub(super) fn probe(&self, issuing: &CheckedIssuing) -> Result<(), CaError> {
        let rng = SystemRandom::new();
        let id = DeviceIdentity {
            client_id: "probe",
            hardware_serial: "probe",
        };
        let key = P256PublicKey::from_uncompressed(self.signer.public_key_raw())
            .ok_or_else(|| CaError::InvalidCa("the issuing key is not a P-256 point".into()))?;
        let now = OffsetDateTime::now_utc();
        let serial = profile::new_serial(now.unix_timestamp(), &rng)?;
        let params = device_params(
            Profile::IDevId,
            &id,
            &ProfileSettings::default(),
            &serial,
            now,
        )?;
        let issued = self.sign(params, &key)?;
        let cert = parse_cert(&issued.der).map_err(CaError::InvalidCa)?;
        if cert.issuer().as_raw() != issuing.subject {
            return Err(CaError::InvalidCa(
                "the issuing certificate's subject name cannot be reproduced exactly (devid \
                 supports names with one attribute per RDN and no repeated attribute types)"
                    .into(),
            ));
        }
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&issuing.spki)
            .map_err(|_| CaError::InvalidCa("issuing public key does not parse".into()))?;
        cert.verify_signature(Some(&spki))
            .map_err(|_| CaError::InvalidCa("probe certificate does not verify".into()))?;
        let aki = cert
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    a.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => None,
            });
        if aki.as_deref() != Some(self.key_id.as_slice()) {
            return Err(CaError::InvalidCa(
                "the issued AKI does not match the issuing certificate's key identifier".into(),
            ));
        }
        Ok(())
    }
}

/// The public key of a DER certificate as it is written there (for P-256, the uncompressed
/// point).
pub(super) fn public_key_point(der: &[u8]) -> Result<Vec<u8>, CaError> {
    let cert = parse_cert(der).map_err(CaError::InvalidCa)?;
    Ok(cert.public_key().subject_public_key.data.to_vec())
}

/// The authority key identifier of a DER certificate: which issuing CA signed it.
pub fn authority_key_id(der: &[u8]) -> Option<Vec<u8>> {
    let cert = parse_cert(der).ok()?;
    let aki = cert
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        });
    aki
}

/// One DER certificate, nothing after it.
pub(super) fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err("trailing bytes after the certificate".into()),
        Err(e) => Err(format!("not an X.509 certificate: {e}")),
    }
}

fn check_p256_spki(cert: &X509Certificate<'_>, what: &str) -> Result<(), CaError> {
    let alg = &cert.public_key().algorithm;
    let is_p256 = alg.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY
        && alg
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .is_some_and(|c| c == OID_EC_P256);
    if is_p256 {
        Ok(())
    } else {
        Err(CaError::InvalidCa(format!(
            "{what} has a key other than ECDSA P-256 (algorithm {}); devid uses ECDSA P-256 \
             throughout",
            alg.algorithm.to_id_string()
        )))
    }
}
