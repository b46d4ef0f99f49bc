//! Issuing CAs' ids: how a broker matches a certificate to the issuing CA that signed it (its
//! AKI against the CA's SKI), the way the service names each issuing CA.

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;

/// An issuing CA's id: the first 8 bytes of its key identifier (its SKI, the AKI of what it
/// signs), lowercase hex. The service names each issuing CA by it (its CRL, its row, the feed
/// entry that revokes it); brokers match it against a leaf's AKI.
pub fn issuing_ca_id(key_id: &[u8]) -> String {
    hex::encode(key_id.get(..8).unwrap_or(key_id))
}

/// The [`issuing_ca_id`] of the CA that signed a DER certificate, from its AKI.
pub fn issuer_id_of(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let id = cert
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| issuing_ca_id(k.0))
            }
            _ => None,
        });
    id
}

/// The [`issuing_ca_id`] of a DER CA certificate itself, from its SKI: equal to
/// [`issuer_id_of`] of every certificate it signed.
pub fn ca_id_of(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let id = cert
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(issuing_ca_id(k.0)),
            _ => None,
        });
    id
}
