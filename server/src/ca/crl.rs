//! Certificate revocation lists: each issuing CA's (its revoked certificates), and the root's
//! (the ARL: revoked issuing CAs).

use rcgen::{
    CertificateRevocationListParams, KeyIdMethod, RevocationReason, RevokedCertParams, SerialNumber,
};
use time::OffsetDateTime;

use super::error::CaError;
use super::{Ca, IssuingCa};

/// One revoked (or held) certificate for [`Ca::sign_crl`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlEntry {
    /// The serial number's bytes (big-endian, as issued).
    pub serial: Vec<u8>,
    pub revoked_at: OffsetDateTime,
    /// RFC 5280 CRLReason: 0-6 or 8-10 (6 = certificateHold). 0 (unspecified) is written as
    /// no reason code, as RFC 5280 5.3.1 asks.
    pub reason_code: u8,
}

impl Ca {
    /// A DER CRL (v2) signed by the active issuing CA; see [`IssuingCa::sign_crl`].
    pub fn sign_crl(
        &self,
        entries: &[CrlEntry],
        crl_number: u64,
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> Result<Vec<u8>, CaError> {
        self.active()
            .sign_crl(entries, crl_number, this_update, next_update)
    }

    /// The root's CRL (ARL): DER, v2, signed by the root key, listing revoked issuing CAs.
    /// Refused when this data directory does not keep the root's key (an imported CA).
    pub fn sign_arl(
        &self,
        entries: &[CrlEntry],
        crl_number: u64,
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> Result<Vec<u8>, CaError> {
        let signer = self.root.signer.as_ref().ok_or(CaError::NoRootKey)?;
        let params = crl_params(
            entries,
            crl_number,
            this_update,
            next_update,
            self.root.key_id.clone(),
        )?;
        signer.crl(&params)
    }
}

impl IssuingCa {
    /// A DER CRL (v2) signed by this issuing CA, with AKI and CRL number. Serials are written
    /// as given; reason 0 (unspecified) is written as no reason code.
    pub fn sign_crl(
        &self,
        entries: &[CrlEntry],
        crl_number: u64,
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> Result<Vec<u8>, CaError> {
        let params = crl_params(
            entries,
            crl_number,
            this_update,
            next_update,
            self.key_id.clone(),
        )?;
        self.signer.crl(&params)
    }
}

fn crl_params(
    entries: &[CrlEntry],
    crl_number: u64,
    this_update: OffsetDateTime,
    next_update: OffsetDateTime,
    key_id: Vec<u8>,
) -> Result<CertificateRevocationListParams, CaError> {
    if next_update <= this_update {
        return Err(CaError::InvalidCrl(
            "nextUpdate must be after thisUpdate".into(),
        ));
    }
    let revoked_certs = entries
        .iter()
        .map(revoked_cert)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CertificateRevocationListParams {
        this_update,
        next_update,
        crl_number: SerialNumber::from_slice(&crl_number.to_be_bytes()),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::PreSpecified(key_id),
    })
}

fn revoked_cert(e: &CrlEntry) -> Result<RevokedCertParams, CaError> {
    let significant = e.serial.iter().skip_while(|b| **b == 0).count();
    if significant == 0 || e.serial.len() > 21 || significant > 20 {
        return Err(CaError::InvalidCrl(format!(
            "serial {} is not a positive number of at most 20 bytes",
            hex::encode(&e.serial)
        )));
    }
    Ok(RevokedCertParams {
        serial_number: SerialNumber::from_slice(&e.serial),
        revocation_time: e.revoked_at,
        reason_code: Some(revocation_reason(e.reason_code)?),
        invalidity_date: None,
    })
}

fn revocation_reason(code: u8) -> Result<RevocationReason, CaError> {
    Ok(match code {
        0 => RevocationReason::Unspecified,
        1 => RevocationReason::KeyCompromise,
        2 => RevocationReason::CaCompromise,
        3 => RevocationReason::AffiliationChanged,
        4 => RevocationReason::Superseded,
        5 => RevocationReason::CessationOfOperation,
        6 => RevocationReason::CertificateHold,
        8 => RevocationReason::RemoveFromCrl,
        9 => RevocationReason::PrivilegeWithdrawn,
        10 => RevocationReason::AaCompromise,
        other => {
            return Err(CaError::InvalidCrl(format!(
                "{other} is not an RFC 5280 reason code"
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes_map_and_7_is_refused() {
        assert_eq!(
            revocation_reason(6).expect("hold"),
            RevocationReason::CertificateHold
        );
        assert!(matches!(revocation_reason(7), Err(CaError::InvalidCrl(_))));
        assert!(matches!(revocation_reason(11), Err(CaError::InvalidCrl(_))));
    }
}
