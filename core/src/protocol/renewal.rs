//! Renewal over MQTT (`docs/protocol.md`, "MQTT renewal"): the topics, the re-key proof's
//! property and the reply's bytes, shared by the broker plugin and the device.
//!
//! Request: a PUBLISH to [`RENEW_TOPIC`] whose payload is the CSR (DER), with MQTT v5
//! Correlation Data (1 to [`MAX_CORRELATION_LEN`] bytes) and, when the CSR's key is not the
//! current certificate's, the user property [`REKEY_PROOF_PROPERTY`] = base64 (standard
//! alphabet, padded) of a DER ECDSA P-256 signature by the current certificate's key over
//! [`crate::ldevid::rekey_proof_message`] of the CSR.
//!
//! Reply: a PUBLISH to [`RENEW_RESPONSE_TOPIC`], to the requesting client alone, with the same
//! Correlation Data; payload [`Reply::encode`]: one reason-code byte, then either the chain
//! (0x00: each certificate as a 2-byte big-endian length and its DER, the new certificate
//! first, then its issuer(s), root last) or a UTF-8 text saying why.

use base64::Engine as _;
use ring::rand::SecureRandom;
use ring::signature::{EcdsaKeyPair, KeyPair as _};

use super::{DecodeError, Error};
use crate::ldevid::Refusal;

/// Where a device publishes its renewal request. Mosquitto hands PUBLISHes to `$CONTROL/...`
/// topics to the plugin that registered them and never delivers them to subscribers.
pub const RENEW_TOPIC: &str = "$CONTROL/devid/renew/v1";
/// Where the reply comes from (no subscription needed: it is addressed to the client).
pub const RENEW_RESPONSE_TOPIC: &str = "$CONTROL/devid/renew/v1/response";
/// The user property carrying the re-key proof (base64 of the DER signature).
pub const REKEY_PROOF_PROPERTY: &str = "devid-rekey-proof";
/// Longest Correlation Data accepted.
pub const MAX_CORRELATION_LEN: usize = 64;
/// Most certificates a reply carries.
pub const MAX_REPLY_CERTS: usize = 8;
/// The reason code of success.
pub const ISSUED: u8 = 0x00;

/// A renewal reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The new certificate first, then its issuer(s), root last (DER).
    Issued(Vec<Vec<u8>>),
    /// A reason code (see [`Refusal::code`]; an unknown one is kept as it is) and a text.
    Refused { code: u8, detail: String },
}

impl Reply {
    pub fn refused(refusal: Refusal, detail: impl Into<String>) -> Reply {
        Reply::Refused {
            code: refusal.code(),
            detail: detail.into(),
        }
    }

    /// The refusal, when it is one this version knows.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            Reply::Issued(_) => None,
            Reply::Refused { code, .. } => Refusal::from_code(*code),
        }
    }

    /// The reply's payload. A certificate longer than 65,535 bytes cannot be carried (devid's
    /// are well under 2 KB): the reply then says `internal`.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Reply::Issued(chain) => {
                let mut out = vec![ISSUED];
                for c in chain {
                    let Ok(len) = u16::try_from(c.len()) else {
                        return Reply::refused(Refusal::Internal, "certificate too long").encode();
                    };
                    out.extend_from_slice(&len.to_be_bytes());
                    out.extend_from_slice(c);
                }
                out
            }
            Reply::Refused { code, detail } => {
                let mut out = vec![*code];
                out.extend_from_slice(detail.as_bytes());
                out
            }
        }
    }

    /// Reads a reply's payload: a success with at least one certificate, none empty; or a
    /// non-zero code and UTF-8 text.
    pub fn decode(bytes: &[u8]) -> Result<Reply, DecodeError> {
        let (&code, mut rest) = bytes.split_first().ok_or(DecodeError::Truncated)?;
        if code != ISSUED {
            let detail = std::str::from_utf8(rest).map_err(|_| DecodeError::BadValue)?;
            return Ok(Reply::Refused {
                code,
                detail: detail.to_string(),
            });
        }
        let mut chain = Vec::new();
        while !rest.is_empty() {
            if rest.len() < 2 {
                return Err(DecodeError::Truncated);
            }
            let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
            if len == 0 {
                return Err(DecodeError::EmptyCertificate);
            }
            let cert = rest.get(2..2 + len).ok_or(DecodeError::Truncated)?;
            chain.push(cert.to_vec());
            rest = &rest[2 + len..];
            if chain.len() > MAX_REPLY_CERTS {
                return Err(DecodeError::TooManyCertificates);
            }
        }
        if chain.is_empty() {
            return Err(DecodeError::EmptyCertificate);
        }
        Ok(Reply::Issued(chain))
    }
}

/// The value of [`REKEY_PROOF_PROPERTY`] for a DER signature.
pub fn encode_proof(signature: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(signature)
}

/// The signature in a [`REKEY_PROOF_PROPERTY`] value; None if it is not base64 or longer than
/// a P-256 DER signature can be (72 bytes).
pub fn decode_proof(value: &str) -> Option<Vec<u8>> {
    let sig = base64::engine::general_purpose::STANDARD
        .decode(value)
        .ok()?;
    (!sig.is_empty() && sig.len() <= 72).then_some(sig)
}

/// A renewal CSR (DER, PKCS#10, ecdsa-with-SHA256) for `key`, with exactly the subject and the
/// subjectAltName of the current certificate `cert_der` (copied byte for byte, so the service's
/// re-enrollment check sees them equal). `key` may be the current key (renewal) or a new one
/// (re-key, which also needs [`rekey_proof`]).
pub fn renewal_csr(
    cert_der: &[u8],
    key: &EcdsaKeyPair,
    rng: &dyn SecureRandom,
) -> Result<Vec<u8>, Error> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|_| Error::BadCertificate("not a DER certificate"))?;
    let subject = cert.tbs_certificate.subject.as_raw();
    let san = cert
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == "2.5.29.17")
        .map(|e| e.value);
    // SubjectPublicKeyInfo: id-ecPublicKey, prime256v1, the uncompressed point.
    let spki = der(
        0x30,
        &[
            der(
                0x30,
                &[
                    der(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]),
                    der(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]),
                ]
                .concat(),
            ),
            bit_string(key.public_key().as_ref()),
        ]
        .concat(),
    );
    let attributes = match san {
        // [0] { Attribute { extensionRequest, SET { Extensions { Extension { SAN, value } } } } }
        Some(value) => der(
            0xa0,
            &der(
                0x30,
                &[
                    der(
                        0x06,
                        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e],
                    ),
                    der(
                        0x31,
                        &der(
                            0x30,
                            &der(
                                0x30,
                                &[der(0x06, &[0x55, 0x1d, 0x11]), der(0x04, value)].concat(),
                            ),
                        ),
                    ),
                ]
                .concat(),
            ),
        ),
        None => der(0xa0, &[]),
    };
    let info = der(
        0x30,
        &[der(0x02, &[0]), subject.to_vec(), spki, attributes].concat(),
    );
    let sig = key
        .sign(rng, &info)
        .map_err(|_| Error::Internal("signing the CSR failed"))?;
    let alg = der(
        0x30,
        &der(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]),
    );
    Ok(der(0x30, &[info, alg, bit_string(sig.as_ref())].concat()))
}

/// The re-key proof: `key` (the current certificate's) signs
/// [`crate::ldevid::rekey_proof_message`] of the CSR; DER ECDSA signature.
pub fn rekey_proof(
    key: &EcdsaKeyPair,
    csr_der: &[u8],
    rng: &dyn SecureRandom,
) -> Result<Vec<u8>, Error> {
    key.sign(rng, &crate::ldevid::rekey_proof_message(csr_der))
        .map(|s| s.as_ref().to_vec())
        .map_err(|_| Error::Internal("signing the re-key proof failed"))
}

/// A DER TLV.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let first = bytes
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(bytes.len() - 1);
        out.push(0x80 | (bytes.len() - first) as u8);
        out.extend_from_slice(&bytes[first..]);
    }
    out.extend_from_slice(content);
    out
}

/// A BIT STRING with no unused bits.
fn bit_string(bytes: &[u8]) -> Vec<u8> {
    der(0x03, &[&[0u8][..], bytes].concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip_and_bad_ones_fail() {
        let ok = Reply::Issued(vec![vec![0x30, 1, 2], vec![0x30; 300]]);
        let bytes = ok.encode();
        assert_eq!(&bytes[..6], &[0, 0, 3, 0x30, 1, 2]);
        assert_eq!(Reply::decode(&bytes), Ok(ok));
        let no = Reply::refused(Refusal::RateLimited, "slow down");
        assert_eq!(no.encode(), b"\x09slow down".to_vec());
        assert_eq!(Reply::decode(&no.encode()), Ok(no.clone()));
        assert_eq!(no.refusal(), Some(Refusal::RateLimited));
        for bad in [
            &b""[..],
            &[0],
            &[0, 0],
            &[0, 0, 0],
            &[0, 0, 5, 1],
            &[0x05, 0xff],
        ] {
            assert!(Reply::decode(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Reply::decode(&[0x42, b'x']).map(|r| r.refusal()),
            Ok(None),
            "an unknown code is kept, not refused"
        );
    }

    #[test]
    fn proofs_are_base64_of_a_short_signature() {
        assert_eq!(encode_proof(&[1, 2, 3]), "AQID");
        assert_eq!(decode_proof("AQID"), Some(vec![1, 2, 3]));
        assert_eq!(decode_proof(""), None);
        assert_eq!(decode_proof("not base64!"), None);
        assert_eq!(decode_proof(&encode_proof(&[7; 73])), None);
    }

    #[test]
    fn every_refusal_has_its_own_code() {
        let mut codes: Vec<u8> = Refusal::ALL.iter().map(|r| r.code()).collect();
        assert!(!codes.contains(&ISSUED));
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), Refusal::ALL.len());
        for r in Refusal::ALL {
            assert_eq!(Refusal::from_code(r.code()), Some(r));
        }
    }
}
