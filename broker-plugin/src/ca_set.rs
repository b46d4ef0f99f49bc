//! The CA certificates a mutual-TLS client certificate is chained through. Mosquitto hands the
//! plugin only the leaf, so the intermediates come from here: until the service has answered,
//! the broker's own chain (or the set persisted at the last answer, `ca-set.pem` in
//! `state_dir`); then the service's CA set (`GET /v1/ca`: every issuing CA in use, then the
//! root), which the service thread fetches at each catch-up with the feed and again whenever
//! the feed carries an `issuing_ca` entry (a rotation or a revocation). A device certificate
//! from a rotated issuing CA thus verifies without a broker restart, and one under a revoked
//! issuing CA no longer finds its issuer (the revocation state refuses it as well).
//!
//! The set is no trust decision: every path still ends at the configured trust anchor.

#![deny(unsafe_code)]

use std::path::Path;

use devid_core::protocol::{ca_id_of, issuer_id_of, MAX_CERTS};

/// A CA set's file in `state_dir`, as the service sent it.
pub const CA_SET_FILE: &str = "ca-set.pem";

/// One CA certificate with the key ids that link it: its own (SKI) and its issuer's (AKI).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ca {
    id: Option<String>,
    issuer: Option<String>,
    der: Vec<u8>,
}

/// The CA certificates below the trust anchor, in the order received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaSet {
    cas: Vec<Ca>,
}

impl CaSet {
    /// The set of these certificates (DER), without the trust anchor itself and duplicates.
    pub fn new(certs: impl IntoIterator<Item = Vec<u8>>, anchor_der: &[u8]) -> CaSet {
        let mut cas: Vec<Ca> = Vec::new();
        for der in certs {
            if der == anchor_der || cas.iter().any(|c| c.der == der) {
                continue;
            }
            cas.push(Ca {
                id: ca_id_of(&der),
                issuer: issuer_id_of(&der),
                der,
            });
        }
        CaSet { cas }
    }

    /// The set in a PEM answer of `GET /v1/ca`. Err when it holds anything but certificates,
    /// or no certificate.
    pub fn from_pem(text: &str, anchor_der: &[u8]) -> Result<CaSet, String> {
        let blocks = pem::parse_many(text).map_err(|e| format!("CA set: {e}"))?;
        if blocks.is_empty() {
            return Err("CA set: no certificate".into());
        }
        if let Some(b) = blocks.iter().find(|b| b.tag() != "CERTIFICATE") {
            return Err(format!("CA set: unexpected PEM block {}", b.tag()));
        }
        Ok(CaSet::new(
            blocks.into_iter().map(pem::Pem::into_contents),
            anchor_der,
        ))
    }

    /// The set persisted in `dir` at the service's last answer; None when there is none.
    pub fn load(dir: &Path, anchor_der: &[u8]) -> Result<Option<CaSet>, String> {
        let path = dir.join(CA_SET_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => CaSet::from_pem(&text, anchor_der)
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// How many CA certificates the set holds (the trust anchor not counted).
    pub fn len(&self) -> usize {
        self.cas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cas.is_empty()
    }

    /// The ids of the CAs (`-` for one without a key identifier), for the log.
    pub fn ids(&self) -> Vec<String> {
        self.cas
            .iter()
            .map(|c| c.id.clone().unwrap_or_else(|| "-".into()))
            .collect()
    }

    /// The chain to verify for `leaf`: the leaf, then its issuer found by key id (the leaf's
    /// AKI against each CA's SKI), then that one's issuer, and so on, at most [`MAX_CERTS`] in
    /// all. A leaf without an AKI gets the first CAs of the set and path building picks.
    pub fn path<'a>(&'a self, leaf: &'a [u8]) -> Vec<&'a [u8]> {
        self.path_from(leaf, issuer_id_of(leaf))
    }

    /// [`CaSet::path`] for a leaf whose issuer's id is `issuer`.
    fn path_from<'a>(&'a self, leaf: &'a [u8], issuer: Option<String>) -> Vec<&'a [u8]> {
        let mut out = vec![leaf];
        let Some(mut want) = issuer else {
            out.extend(self.cas.iter().map(|c| c.der.as_slice()));
            out.truncate(MAX_CERTS);
            return out;
        };
        while out.len() < MAX_CERTS {
            let Some(ca) = self.cas.iter().find(|c| c.id.as_deref() == Some(&want)) else {
                break;
            };
            if out.contains(&ca.der.as_slice()) {
                break;
            }
            out.push(&ca.der);
            match &ca.issuer {
                Some(next) if *next != want => want = next.clone(),
                _ => break,
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A set whose certificates are stand-ins: (id, issuer id, bytes).
    fn set(cas: &[(&str, &str, &[u8])]) -> CaSet {
        CaSet {
            cas: cas
                .iter()
                .map(|(id, issuer, der)| Ca {
                    id: Some(id.to_string()),
                    issuer: Some(issuer.to_string()),
                    der: der.to_vec(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_leaf_without_a_key_identifier_gets_the_first_cas() {
        let s = set(&[
            ("a", "r", b"A"),
            ("b", "r", b"B"),
            ("c", "r", b"C"),
            ("d", "r", b"D"),
        ]);
        let leaf: &[u8] = b"not a certificate";
        assert_eq!(s.path(leaf), vec![leaf, b"A", b"B", b"C"]);
        assert_eq!(s.path_from(leaf, None), s.path(leaf));
        assert_eq!(CaSet::default().path(leaf), vec![leaf]);
    }

    #[test]
    fn the_path_follows_key_ids_from_the_leaf_up() {
        let s = set(&[
            ("old", "r", b"OLD"),
            ("new", "mid", b"NEW"),
            ("mid", "r", b"MID"),
            ("self", "self", b"SELF"),
            ("x", "y", b"X"),
            ("y", "x", b"Y"),
        ]);
        let leaf: &[u8] = b"LEAF";
        let path = |issuer: &str| s.path_from(leaf, Some(issuer.into()));
        assert_eq!(path("old"), vec![leaf, b"OLD"]);
        assert_eq!(path("new"), vec![leaf, b"NEW", b"MID"]);
        assert_eq!(
            path("gone"),
            vec![leaf],
            "a revoked issuer is not in the set"
        );
        assert_eq!(path("self"), vec![leaf, b"SELF"]);
        assert_eq!(path("x"), vec![leaf, b"X", b"Y"], "a loop ends");
    }

    #[test]
    fn the_anchor_and_duplicates_are_left_out() {
        let s = CaSet::new([b"A".to_vec(), b"ROOT".to_vec(), b"A".to_vec()], b"ROOT");
        assert_eq!(s.len(), 1);
        assert_eq!(s.ids(), vec!["-"]);
    }

    #[test]
    fn pem_answers_hold_certificates_only() {
        let cert = |d: &[u8]| pem::encode(&pem::Pem::new("CERTIFICATE", d.to_vec()));
        let text = format!("{}{}", cert(b"A"), cert(b"ROOT"));
        assert_eq!(CaSet::from_pem(&text, b"ROOT").map(|s| s.len()), Ok(1));
        assert!(CaSet::from_pem("", b"ROOT").is_err());
        let key = pem::encode(&pem::Pem::new("PRIVATE KEY", b"k".to_vec()));
        assert!(CaSet::from_pem(&format!("{}{key}", cert(b"A")), b"ROOT").is_err());
    }
}
