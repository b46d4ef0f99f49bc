//! `devid crl fetch --out crl.der [--verify]`.

use std::process::ExitCode;

use serde::Serialize;
use x509_parser::oid_registry::{OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384};
use x509_parser::prelude::*;

use super::ca::{asn1_time, chain_ders, fetch_chain};
use crate::cli::{CrlCommand, OutputFormat};
use crate::client::Api;
use crate::error::{CliError, Result};
use crate::table;

/// What `devid crl fetch -o json` prints.
#[derive(Debug, Serialize)]
pub struct CrlSummary {
    pub out: String,
    pub bytes: usize,
    /// True when --verify checked the signature against the CA chain.
    pub verified: bool,
    pub issuer: String,
    /// Decimal.
    pub crl_number: Option<String>,
    pub this_update: String,
    pub next_update: Option<String>,
    /// Lowercase hex, as the API prints serials.
    pub revoked_serials: Vec<String>,
}

/// Hex of a DER INTEGER's value bytes without the leading zero octets.
pub fn serial_hex(raw: &[u8]) -> String {
    let start = raw
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(raw.len().saturating_sub(1));
    hex::encode(&raw[start..])
}

fn ecdsa_only(alg: &x509_parser::x509::AlgorithmIdentifier, what: &str) -> Result<()> {
    if alg.algorithm == OID_SIG_ECDSA_WITH_SHA256 || alg.algorithm == OID_SIG_ECDSA_WITH_SHA384 {
        Ok(())
    } else {
        Err(CliError::failed(format!(
            "{what} is signed with {}; devid accepts ECDSA with SHA-256 or SHA-384 only",
            alg.algorithm
        )))
    }
}

/// Checks the CRL's signature with the CA certificate whose subject is the CRL's issuer, and
/// that certificate's path up the chain to a self-signed root.
pub fn verify_crl(crl_der: &[u8], chain: &[Vec<u8>]) -> Result<()> {
    let (_, crl) = parse_x509_crl(crl_der)
        .map_err(|e| CliError::failed(format!("the CRL does not parse: {e}")))?;
    let certs = chain
        .iter()
        .map(|d| {
            parse_x509_certificate(d)
                .map(|(_, c)| c)
                .map_err(|e| CliError::failed(format!("a CA certificate does not parse: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let start = certs
        .iter()
        .position(|c| c.subject().as_raw() == crl.issuer().as_raw())
        .ok_or_else(|| {
            CliError::failed(format!(
                "no certificate in the CA chain is the CRL's issuer ({})",
                crl.issuer()
            ))
        })?;
    ecdsa_only(&crl.signature_algorithm, "the CRL")?;
    crl.verify_signature(certs[start].public_key())
        .map_err(|e| CliError::failed(format!("the CRL's signature does not verify: {e}")))?;
    // Walk up from the CRL issuer to the root.
    let mut i = start;
    loop {
        let cert = &certs[i];
        ecdsa_only(&cert.signature_algorithm, "a CA certificate")?;
        if cert.subject().as_raw() == cert.issuer().as_raw() {
            cert.verify_signature(None).map_err(|e| {
                CliError::failed(format!(
                    "the root {} is not self-signed: {e}",
                    cert.subject()
                ))
            })?;
            return Ok(());
        }
        let parent = certs
            .iter()
            .position(|c| c.subject().as_raw() == cert.issuer().as_raw())
            .filter(|p| *p != i)
            .ok_or_else(|| {
                CliError::failed(format!(
                    "the CA chain does not contain the issuer of {}",
                    cert.subject()
                ))
            })?;
        cert.verify_signature(Some(certs[parent].public_key()))
            .map_err(|e| {
                CliError::failed(format!(
                    "{} is not signed by {}: {e}",
                    cert.subject(),
                    certs[parent].subject()
                ))
            })?;
        if parent <= i {
            // Chains go issuing CA first, root last; a loop back means a malformed chain.
            return Err(CliError::failed("the CA chain is out of order or loops"));
        }
        i = parent;
    }
}

pub async fn run(api: &Api, out: OutputFormat, c: CrlCommand) -> Result<ExitCode> {
    let CrlCommand::Fetch { out: path, verify } = c;
    let der = api.get_bytes("/v1/crl").await?;
    let (_, crl) = parse_x509_crl(&der)
        .map_err(|e| CliError::failed(format!("the server's CRL does not parse: {e}")))?;
    if verify {
        let chain = chain_ders(&fetch_chain(api).await?)?;
        verify_crl(&der, &chain)?;
    }
    super::write_out(&path, &der)?;
    let summary = CrlSummary {
        out: path.display().to_string(),
        bytes: der.len(),
        verified: verify,
        issuer: crl.issuer().to_string(),
        crl_number: crl.crl_number().map(|n| n.to_string()),
        this_update: asn1_time(&crl.last_update()),
        next_update: crl.next_update().map(|t| asn1_time(&t)),
        revoked_serials: crl
            .iter_revoked_certificates()
            .map(|r| serial_hex(r.raw_serial()))
            .collect(),
    };
    if path == std::path::Path::new("-") {
        return Ok(ExitCode::SUCCESS);
    }
    match out {
        OutputFormat::Json => super::print_json(&summary),
        OutputFormat::Table => super::print_text(&table::fields(&[
            ("out", summary.out.clone()),
            ("issuer", summary.issuer.clone()),
            ("crl_number", table::opt(&summary.crl_number)),
            ("this_update", summary.this_update.clone()),
            ("next_update", table::opt(&summary.next_update)),
            ("revoked", summary.revoked_serials.len().to_string()),
            (
                "signature",
                if verify {
                    "verified against the CA chain".into()
                } else {
                    "not checked (use --verify)".into()
                },
            ),
        ])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, IsCa, Issuer,
        KeyIdMethod, KeyPair, KeyUsagePurpose, SerialNumber, PKCS_ECDSA_P256_SHA256,
    };

    /// A root and an issuing CA; returns the chain (issuing first) and the issuing CA's signer.
    fn ca(name: &str) -> (Vec<Vec<u8>>, CertificateParams, KeyPair) {
        let mk = |cn: &str| {
            let mut p = CertificateParams::default();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            p
        };
        let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let root_params = mk(&format!("{name} root"));
        let root = root_params.self_signed(&root_key).expect("root");
        let issuing_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let issuing_params = mk(&format!("{name} issuing"));
        let root_issuer = Issuer::from_params(&root_params, &root_key);
        let issuing = issuing_params
            .signed_by(&issuing_key, &root_issuer)
            .expect("issuing");
        (
            vec![issuing.der().to_vec(), root.der().to_vec()],
            issuing_params,
            issuing_key,
        )
    }

    fn crl_by(params: &CertificateParams, key: &KeyPair) -> Vec<u8> {
        let now = ::time::OffsetDateTime::now_utc();
        let crl = CertificateRevocationListParams {
            this_update: now,
            next_update: now + ::time::Duration::days(1),
            crl_number: SerialNumber::from(7u64),
            issuing_distribution_point: None,
            revoked_certs: vec![],
            key_identifier_method: KeyIdMethod::Sha256,
        };
        crl.signed_by(&Issuer::from_params(params, key))
            .expect("crl")
            .der()
            .to_vec()
    }

    #[test]
    fn crl_verifies_against_its_own_chain_only() {
        let (chain_a, params_a, key_a) = ca("A");
        let (chain_b, _params_b, _key_b) = ca("B");
        let crl = crl_by(&params_a, &key_a);
        verify_crl(&crl, &chain_a).expect("own chain");
        let e = verify_crl(&crl, &chain_b).expect_err("other chain");
        assert!(e.message.contains("issuer"), "{}", e.message);
        // Same issuer name, different key: the signature check fails.
        let (chain_a2, _p, _k) = ca("A");
        let e = verify_crl(&crl, &chain_a2).expect_err("impostor");
        assert!(e.message.contains("signature"), "{}", e.message);
        // A tampered CRL fails.
        let mut bad = crl.clone();
        let n = bad.len();
        bad[n - 3] ^= 1;
        assert!(verify_crl(&bad, &chain_a).is_err());
        // A chain missing its root fails.
        assert!(verify_crl(&crl, &chain_a[..1]).is_err());
    }

    #[test]
    fn serial_hex_strips_sign_octet() {
        assert_eq!(serial_hex(&[0x00, 0x8f, 0x01]), "8f01");
        assert_eq!(serial_hex(&[0x0f, 0x01]), "0f01");
        assert_eq!(serial_hex(&[0x00]), "00");
    }
}
