//! EST (RFC 7030, as clarified by RFC 8951): the bytes of the answers and the reading of the
//! requests, apart from HTTP. The routes are in `routes::est`.
//!
//! - Bodies are base64 of DER both ways (RFC 8951 section 3.2); whitespace and line breaks in
//!   what a client sends are ignored, as is any `Content-Transfer-Encoding` header; a PEM
//!   armour around a CSR is tolerated too.
//! - Certificates go out as a certs-only CMS SignedData (RFC 5652 section 5, with no signers and
//!   no content: the "degenerate" form of RFC 7030 section 4.1.3). It is built here: it needs no
//!   cryptography, only DER framing around certificates the CA already encoded.

use base64::Engine as _;
use x509_parser::prelude::FromDer;

/// The largest base64 body read, in characters (a CSR is a few hundred bytes).
pub const MAX_BODY_CHARS: usize = 64 * 1024;

/// DER of `application/csrattrs` (RFC 7030 section 4.5.2): a CsrAttrs SEQUENCE naming what
/// devid accepts: the signature algorithm ecdsa-with-SHA256 (1.2.840.10045.4.3.2), and an
/// attribute saying the key is id-ecPublicKey (1.2.840.10045.2.1) on prime256v1
/// (1.2.840.10045.3.1.7).
pub fn csr_attrs() -> Vec<u8> {
    const ECDSA_WITH_SHA256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
    const EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    const PRIME256V1: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let values = tlv(0x31, &[PRIME256V1]);
    let attribute = tlv(0x30, &[EC_PUBLIC_KEY, &values]);
    tlv(0x30, &[ECDSA_WITH_SHA256, &attribute])
}

/// id-signedData, 1.2.840.113549.1.7.2.
const OID_SIGNED_DATA: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02,
];
/// id-data, 1.2.840.113549.1.7.1.
const OID_DATA: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01,
];

/// Why a request body was refused. The text is for the person reading the answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the body is empty; EST wants base64 of the DER request (RFC 8951)")]
    Empty,
    #[error("the body is longer than {MAX_BODY_CHARS} characters")]
    TooLong,
    #[error("the body is not base64 of DER (RFC 8951): {0}")]
    NotBase64(String),
}

/// The DER a client sent as base64 (RFC 8951): whitespace anywhere is ignored, and so are PEM
/// armour lines (`-----BEGIN ...-----`), which some clients send although RFC 7030 says base64.
pub fn decode_body(body: &[u8]) -> Result<Vec<u8>, BodyError> {
    if body.len() > MAX_BODY_CHARS {
        return Err(BodyError::TooLong);
    }
    let text = String::from_utf8_lossy(body);
    let b64: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("-----"))
        .flat_map(|l| l.chars())
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    if b64.is_empty() {
        return Err(BodyError::Empty);
    }
    base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .map_err(|e| BodyError::NotBase64(e.to_string()))
}

/// Base64 of `der` in lines of 64 characters, each ending in CRLF (RFC 2045 line length;
/// `openssl base64 -d` reads it as it is).
pub fn encode_body(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 32 + 2);
    for chunk in b64.as_bytes().chunks(64) {
        // Base64 output is ASCII.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push_str("\r\n");
    }
    out
}

/// A DER length.
fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let bytes = len.to_be_bytes();
    let first = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len() - 1);
    out.push(0x80 | (bytes.len() - first) as u8);
    out.extend_from_slice(&bytes[first..]);
}

/// A DER TLV of `tag` around `parts`.
fn tlv(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let len = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(len + 6);
    out.push(tag);
    push_len(&mut out, len);
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

/// A certs-only CMS `ContentInfo` (RFC 5652): SignedData version 1, no digest algorithms,
/// encapsulated content type id-data with no content, `certs` (DER certificates) as the
/// certificate set, no signers. `openssl pkcs7 -inform DER -print_certs` lists them.
pub fn certs_only(certs: &[&[u8]]) -> Vec<u8> {
    let version: &[u8] = &[0x02, 0x01, 0x01];
    let digest_algorithms: &[u8] = &[0x31, 0x00];
    let encap = tlv(0x30, &[OID_DATA]);
    // certificates [0] IMPLICIT CertificateSet
    let cert_set = tlv(0xa0, certs);
    let signer_infos: &[u8] = &[0x31, 0x00];
    let signed_data = tlv(
        0x30,
        &[version, digest_algorithms, &encap, &cert_set, signer_infos],
    );
    let content = tlv(0xa0, &[&signed_data]);
    tlv(0x30, &[OID_SIGNED_DATA, &content])
}

/// The subject's serialNumber attribute (2.5.4.5) of a DER CSR: where a device's hardware
/// serial travels when the manufacturing line enrolls it over EST. None when the CSR does not
/// parse or carries no serialNumber.
pub fn csr_subject_serial(csr_der: &[u8]) -> Option<String> {
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(csr_der).ok()?;
    let subject = &csr.certification_request_info.subject;
    let serial = subject
        .iter_by_oid(&x509_parser::oid_registry::OID_X509_SERIALNUMBER)
        .next()?;
    serial.as_str().ok().map(str::to_string)
}

/// PEM of a DER CSR (the form `POST /v1/devices` takes).
pub fn csr_pem(csr_der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", csr_der.to_vec()))
}

/// The DER of every PEM `CERTIFICATE` block in `text`, in order.
pub fn pem_certs(text: &str) -> Vec<Vec<u8>> {
    pem::parse_many(text)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| p.into_contents())
        .collect()
}

/// The body of a `serverkeygen` answer (RFC 7030 section 4.4.2): `multipart/mixed` with the
/// private key (`application/pkcs8`, base64 of the PKCS#8 DER) and the certificate
/// (`application/pkcs7-mime; smime-type=certs-only`). Returns the boundary and the body.
pub fn serverkeygen_body(pkcs8_der: &[u8], certs_only_der: &[u8], boundary: &str) -> String {
    format!(
        "--{boundary}\r\n\
         Content-Type: application/pkcs8\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n\
         {}\
         --{boundary}\r\n\
         Content-Type: application/pkcs7-mime; smime-type=certs-only\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n\
         {}\
         --{boundary}--\r\n",
        encode_body(pkcs8_der),
        encode_body(certs_only_der),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_tolerate_whitespace_and_pem_armour() {
        let der = vec![0x30, 0x03, 0x02, 0x01, 0x05];
        let b64 = encode_body(&der);
        assert!(b64.ends_with("\r\n"));
        assert_eq!(decode_body(b64.as_bytes()), Ok(der.clone()));
        assert_eq!(decode_body(b"MAMC\n AQU=\r\n"), Ok(der.clone()));
        let pem =
            "-----BEGIN CERTIFICATE REQUEST-----\nMAMCAQU=\n-----END CERTIFICATE REQUEST-----\n";
        assert_eq!(decode_body(pem.as_bytes()), Ok(der));
        assert_eq!(decode_body(b" \r\n"), Err(BodyError::Empty));
        assert!(matches!(
            decode_body(b"not base64!"),
            Err(BodyError::NotBase64(_))
        ));
        assert_eq!(
            decode_body(&vec![b'A'; MAX_BODY_CHARS + 1]),
            Err(BodyError::TooLong)
        );
    }

    #[test]
    fn long_lines_are_cut_at_64() {
        let b64 = encode_body(&[7u8; 200]);
        assert!(b64.split("\r\n").all(|l| l.len() <= 64), "{b64}");
    }

    #[test]
    fn der_lengths() {
        let mut v = Vec::new();
        push_len(&mut v, 0x7f);
        push_len(&mut v, 0x80);
        push_len(&mut v, 0x1234);
        assert_eq!(v, [0x7f, 0x81, 0x80, 0x82, 0x12, 0x34]);
    }

    #[test]
    fn certs_only_frames_the_certificates() {
        let a = [0x30, 0x00];
        let b = vec![0x30, 0x81, 0x80]
            .into_iter()
            .chain([0u8; 0x80])
            .collect::<Vec<_>>();
        let der = certs_only(&[&a, &b]);
        // ContentInfo SEQUENCE, id-signedData, [0] { SignedData }.
        assert_eq!(der[0], 0x30);
        let body = &der[3..];
        assert_eq!(&body[..OID_SIGNED_DATA.len()], OID_SIGNED_DATA);
        // The certificates appear whole and in order, then the empty signerInfos ends it.
        let at = der.windows(2).position(|w| w == a).unwrap_or(0);
        assert!(der[at..].starts_with(&a));
        assert!(der.ends_with(&[0x31, 0x00]));
        assert!(der.windows(b.len()).any(|w| w == b.as_slice()));
    }

    #[test]
    fn csr_attrs_nest_with_exact_lengths() {
        let der = csr_attrs();
        assert_eq!(der[0], 0x30);
        assert_eq!(usize::from(der[1]), der.len() - 2);
        // The OID (10 bytes), then the attribute SEQUENCE filling the rest.
        assert_eq!(der[12], 0x30);
        assert_eq!(usize::from(der[13]), der.len() - 14);
        // Its SET of one OID closes it.
        let set = der.len() - 12;
        assert_eq!((der[set], usize::from(der[set + 1])), (0x31, 10));
    }

    #[test]
    fn serverkeygen_parts() {
        let body = serverkeygen_body(&[1, 2, 3], &[4, 5], "b0undary");
        assert!(body.starts_with("--b0undary\r\nContent-Type: application/pkcs8\r\n"));
        assert!(body.contains(
            "\r\n--b0undary\r\nContent-Type: application/pkcs7-mime; smime-type=certs-only\r\n"
        ));
        assert!(body.ends_with("--b0undary--\r\n"));
    }
}
