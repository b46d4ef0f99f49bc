//! Brokers: their certificates.

use devid_core::api::{BrokerCertificate, BrokerEnrollRequest};
use devid_core::csr::parse_csr_pem;
use devid_core::profile::{ProfileSettings, Validity};
use devid_core::DnsName;

use super::audit::Audit;
use super::DomainError;
use crate::ca::Ca;
use crate::store::Store;
use crate::timefmt::rfc3339;

/// Issues a broker certificate (two years) for `req.name` from its CSR.
pub async fn enroll(
    store: &Store,
    ca: &Ca,
    profile: &ProfileSettings,
    audit: &Audit,
    req: &BrokerEnrollRequest,
) -> Result<BrokerCertificate, DomainError> {
    // Core's one DNS-name rule, which the certificate profile applies too.
    DnsName::parse(&req.name).map_err(|_| {
        DomainError::invalid_field("name", format!("{:?} is not a DNS name", req.name))
    })?;
    let csr = parse_csr_pem(&req.csr)
        .map_err(|e| DomainError::invalid_field("csr", format!("csr: {e}")))?;
    let settings = ProfileSettings {
        validity: Validity::Years(2),
        ..profile.clone()
    };
    let issued = ca.issue_broker(
        &csr,
        &req.name,
        &settings,
        time::OffsetDateTime::now_utc(),
        &ring::rand::SystemRandom::new(),
    )?;
    store
        .insert_audit(&audit.ok_about(&format!("{} (serial {})", req.name, issued.serial_hex)))
        .await?;
    Ok(BrokerCertificate {
        name: req.name.clone(),
        certificate: issued.pem,
        chain: ca.chain_pem().to_string(),
        serial: issued.serial_hex,
        fingerprint_sha256: issued.fingerprint_sha256,
        not_before: rfc3339(issued.not_before.unix_timestamp()),
        not_after: rfc3339(issued.not_after.unix_timestamp()),
        not_after_capped: issued.not_after_capped,
    })
}
