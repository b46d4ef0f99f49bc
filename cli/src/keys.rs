//! Device key pairs and CSRs made locally (ECDSA P-256, ring through rcgen).

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use x509_parser::prelude::FromDer as _;

/// A fresh key and the CSR it signed.
pub struct KeyAndCsr {
    /// PKCS#8 PEM.
    pub key_pem: String,
    /// PKCS#10 PEM.
    pub csr_pem: String,
}

/// Makes a P-256 key pair and a CSR with CN = the hardware serial (devid replaces the subject
/// with its own profile; the CN only helps someone reading the CSR).
pub fn generate(hardware_serial: &str) -> Result<KeyAndCsr, String> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("cannot make a key pair: {e}"))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, hardware_serial);
    params.distinguished_name = dn;
    let csr = params
        .serialize_request(&key)
        .map_err(|e| format!("cannot make a CSR: {e}"))?;
    let csr_pem = csr
        .pem()
        .map_err(|e| format!("cannot encode the CSR: {e}"))?;
    Ok(KeyAndCsr {
        key_pem: key.serialize_pem(),
        csr_pem,
    })
}

/// Checks that `pem_text` holds one parseable PKCS#10 request whose signature verifies.
pub fn check_csr(pem_text: &str) -> Result<(), String> {
    let block = pem::parse(pem_text).map_err(|e| format!("not PEM: {e}"))?;
    if block.tag() != "CERTIFICATE REQUEST" && block.tag() != "NEW CERTIFICATE REQUEST" {
        return Err(format!(
            "PEM block is {:?}, expected CERTIFICATE REQUEST",
            block.tag()
        ));
    }
    let (rest, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(block.contents())
            .map_err(|e| format!("not a PKCS#10 request: {e}"))?;
    if !rest.is_empty() {
        return Err("trailing bytes after the CSR".into());
    }
    csr.verify_signature()
        .map_err(|e| format!("CSR signature does not verify: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_csr_checks_and_tampered_fails() {
        let k = generate("SN-1").expect("generate");
        assert!(k.key_pem.contains("PRIVATE KEY"));
        check_csr(&k.csr_pem).expect("valid CSR");
        assert!(check_csr("garbage").is_err());
        // Flip a byte inside the DER (in the signature region near the end).
        let block = pem::parse(&k.csr_pem).expect("pem");
        let mut der = block.contents().to_vec();
        let n = der.len();
        der[n - 5] ^= 0x01;
        let bad = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
        assert!(check_csr(&bad).is_err());
    }
}
