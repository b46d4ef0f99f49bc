//! The certificates of a certs-only CMS SignedData (RFC 5652, as EST answers: RFC 7030 4.1.3,
//! 4.2.3). A degenerate SignedData has no signers, so reading it needs no crypto.

use rustls::pki_types::CertificateDer;

use super::der::{DerError, Reader, INTEGER, OID, SEQUENCE, SET};

/// 1.2.840.113549.1.7.2 signedData
const OID_SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];

/// The certificates, in the order they appear.
pub fn certs_only(der: &[u8]) -> Result<Vec<CertificateDer<'static>>, DerError> {
    let mut outer = Reader::new(der);
    let content_info = outer.expect(SEQUENCE, "ContentInfo is not a SEQUENCE")?;
    if !outer.is_empty() {
        return Err(DerError("trailing bytes after the ContentInfo"));
    }
    let mut ci = Reader::new(content_info);
    if ci.expect(OID, "ContentInfo has no content type")? != OID_SIGNED_DATA {
        return Err(DerError("the content is not a SignedData"));
    }
    let explicit = ci.expect(0xa0, "ContentInfo has no [0] content")?;
    let mut e = Reader::new(explicit);
    let signed_data = e.expect(SEQUENCE, "SignedData is not a SEQUENCE")?;
    let mut sd = Reader::new(signed_data);
    sd.expect(INTEGER, "SignedData has no version")?;
    sd.expect(SET, "SignedData has no digestAlgorithms")?;
    sd.expect(SEQUENCE, "SignedData has no encapContentInfo")?;
    let mut certs = Vec::new();
    while !sd.is_empty() {
        let (tag, content, _) = sd.read()?;
        // certificates [0] IMPLICIT CertificateSet; crls [1] and signerInfos follow.
        if tag == 0xa0 {
            let mut set = Reader::new(content);
            while !set.is_empty() {
                let (tag, _, whole) = set.read()?;
                // Other certificate formats ([0]..[3] choices) are skipped.
                if tag == SEQUENCE {
                    certs.push(CertificateDer::from(whole.to_vec()));
                }
            }
        }
    }
    if certs.is_empty() {
        return Err(DerError("the SignedData holds no certificate"));
    }
    Ok(certs)
}

/// Base64 as EST sends it (RFC 8951: whitespace and line breaks tolerated).
pub fn decode_base64(body: &[u8]) -> Result<Vec<u8>, DerError> {
    use base64::Engine;
    let clean: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(clean)
        .map_err(|_| DerError("the body is not base64"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn cert(cn: &str) -> (String, Vec<u8>) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let c = p.self_signed(&key).unwrap();
        (c.pem(), c.der().to_vec())
    }

    #[test]
    fn reads_what_openssl_writes() {
        // openssl crl2pkcs7 -nocrl writes a certs-only SignedData: an independent producer.
        let dir = tempfile::tempdir().unwrap();
        let (a_pem, a_der) = cert("leaf");
        let (b_pem, b_der) = cert("issuer");
        let f = dir.path().join("certs.pem");
        std::fs::write(&f, format!("{a_pem}{b_pem}")).unwrap();
        let out = Command::new("openssl")
            .args(["crl2pkcs7", "-nocrl", "-outform", "DER", "-certfile"])
            .arg(&f)
            .output()
            .unwrap();
        assert!(out.status.success());
        let certs = certs_only(&out.stdout).unwrap();
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[0].as_ref(), a_der.as_slice());
        assert_eq!(certs[1].as_ref(), b_der.as_slice());
        // And as EST sends it: base64 with line breaks.
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&out.stdout);
        let wrapped: String = b64
            .as_bytes()
            .chunks(64)
            .map(|c| format!("{}\r\n", String::from_utf8_lossy(c)))
            .collect();
        let again = certs_only(&decode_base64(wrapped.as_bytes()).unwrap()).unwrap();
        assert_eq!(again, certs);
    }

    #[test]
    fn refuses_what_is_not_a_certs_only_signed_data() {
        let (_, a) = cert("x");
        // A bare certificate, garbage, trailing bytes, no certificates.
        assert!(certs_only(&a).is_err());
        assert!(certs_only(&[0x30, 0x00]).is_err());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.pem");
        std::fs::write(&f, cert("y").0).unwrap();
        let out = Command::new("openssl")
            .args(["crl2pkcs7", "-nocrl", "-outform", "DER", "-certfile"])
            .arg(&f)
            .output()
            .unwrap();
        let mut extra = out.stdout.clone();
        extra.push(0);
        assert_eq!(
            certs_only(&extra),
            Err(DerError("trailing bytes after the ContentInfo"))
        );
        // A SignedData without certificates.
        use crate::renew::der::{seq, tlv};
        let data_oid = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
        let sd = seq(&[
            &tlv(INTEGER, &[1]),
            &tlv(SET, &[]),
            &seq(&[&tlv(OID, &data_oid)]),
        ]);
        let empty = seq(&[&tlv(OID, OID_SIGNED_DATA), &tlv(0xa0, &sd)]);
        assert_eq!(
            certs_only(&empty),
            Err(DerError("the SignedData holds no certificate"))
        );
        assert!(decode_base64(b"not base64!").is_err());
    }
}
