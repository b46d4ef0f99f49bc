//! `devid ca show` and `devid ca export`.

use std::process::ExitCode;

use serde::Serialize;
use x509_parser::prelude::*;

use crate::cli::{CaCommand, OutputFormat};
use crate::client::Api;
use crate::error::{CliError, Result};
use crate::table;

/// One CA certificate, as `devid ca show -o json` prints it (in `{"certificates": [...]}`).
#[derive(Debug, Serialize)]
pub struct CaCertInfo {
    /// `issuing`, `intermediate` or `root` (position in the chain).
    pub role: String,
    pub subject: String,
    pub issuer: String,
    /// Lowercase hex.
    pub serial: String,
    pub not_before: String,
    pub not_after: String,
    pub fingerprint_sha256: String,
    pub fingerprint_sha1: String,
}

#[derive(Debug, Serialize)]
struct CaShow {
    certificates: Vec<CaCertInfo>,
}

pub fn asn1_time(t: &ASN1Time) -> String {
    t.to_datetime()
        .format(&::time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// The DER certificates of a PEM chain.
pub fn chain_ders(pem_text: &str) -> Result<Vec<Vec<u8>>> {
    let blocks = ::pem::parse_many(pem_text)
        .map_err(|e| CliError::failed(format!("the CA chain is not PEM: {e}")))?;
    let ders: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.into_contents())
        .collect();
    if ders.is_empty() {
        return Err(CliError::failed("the CA chain holds no certificate"));
    }
    Ok(ders)
}

pub fn describe(ders: &[Vec<u8>]) -> Result<Vec<CaCertInfo>> {
    let n = ders.len();
    ders.iter()
        .enumerate()
        .map(|(i, der)| {
            let (_, cert) = parse_x509_certificate(der).map_err(|e| {
                CliError::failed(format!("CA certificate {} does not parse: {e}", i + 1))
            })?;
            let role = if i + 1 == n && n > 1 {
                "root"
            } else if i == 0 {
                "issuing"
            } else {
                "intermediate"
            };
            let sha256 = ring::digest::digest(&ring::digest::SHA256, der);
            let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
            Ok(CaCertInfo {
                role: role.to_string(),
                subject: cert.subject().to_string(),
                issuer: cert.issuer().to_string(),
                serial: hex::encode(cert.raw_serial()),
                not_before: asn1_time(&cert.validity().not_before),
                not_after: asn1_time(&cert.validity().not_after),
                fingerprint_sha256: hex::encode(sha256.as_ref()),
                fingerprint_sha1: hex::encode(sha1.as_ref()),
            })
        })
        .collect()
}

pub async fn fetch_chain(api: &Api) -> Result<String> {
    let bytes = api.get_bytes("/v1/ca").await?;
    String::from_utf8(bytes).map_err(|_| CliError::failed("the CA chain is not text"))
}

pub async fn run(api: &Api, out: OutputFormat, c: CaCommand) -> Result<ExitCode> {
    let chain = fetch_chain(api).await?;
    match c {
        CaCommand::Export { out: path } => {
            chain_ders(&chain)?;
            super::write_out(&path, chain.as_bytes())?;
            if path != std::path::Path::new("-") {
                eprintln!("wrote {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        CaCommand::Show => {
            let certs = describe(&chain_ders(&chain)?)?;
            match out {
                OutputFormat::Json => super::print_json(&CaShow {
                    certificates: certs,
                }),
                OutputFormat::Table => {
                    let mut s = String::new();
                    for (i, c) in certs.iter().enumerate() {
                        if i > 0 {
                            s.push('\n');
                        }
                        s.push_str(&table::fields(&[
                            ("role", c.role.clone()),
                            ("subject", c.subject.clone()),
                            ("issuer", c.issuer.clone()),
                            ("serial", c.serial.clone()),
                            ("not_before", c.not_before.clone()),
                            ("not_after", c.not_after.clone()),
                            ("sha256", c.fingerprint_sha256.clone()),
                            ("sha1", c.fingerprint_sha1.clone()),
                        ]));
                    }
                    super::print_text(&s)
                }
            }
        }
    }
}
