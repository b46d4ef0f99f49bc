//! Device certificates the service would not issue: from another CA, expired, not yet valid.

use crate::creds::DeviceCreds;
use crate::rand_bytes;
use crate::service::Service;

/// A test CA that is not devid's: root + issuing CA, for "other CA" and expired certificates.
pub struct TestCa {
    pub root_der: Vec<u8>,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    issuing_der: Vec<u8>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let root_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut rp = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        rp.distinguished_name
            .push(rcgen::DnType::CommonName, "Other Root");
        rp.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        rp.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let root = rp.self_signed(&root_key).expect("root");
        let root_issuer = rcgen::Issuer::new(rp, root_key);
        let ik = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut ip = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ip.distinguished_name
            .push(rcgen::DnType::CommonName, "Other Issuing");
        ip.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        ip.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let issuing = ip.signed_by(&ik, &root_issuer).expect("issuing");
        TestCa {
            root_der: root.der().to_vec(),
            issuing_der: issuing.der().to_vec(),
            issuer: rcgen::Issuer::new(ip, ik),
        }
    }

    /// A device certificate in devid's profile (CN and SAN URI bound to `client_id`).
    pub fn device(
        &self,
        client_id: &str,
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    ) -> DeviceCreds {
        issue_device(
            &self.issuer,
            &self.issuing_der,
            client_id,
            not_before,
            not_after,
        )
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// Issues a device certificate in devid's profile under `issuer`.
pub fn issue_device(
    issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
    issuing_der: &[u8],
    client_id: &str,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
) -> DeviceCreds {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    p.distinguished_name
        .push(rcgen::DnType::CommonName, client_id);
    p.subject_alt_names = vec![rcgen::SanType::URI(
        format!("urn:devid:{client_id}").try_into().expect("uri"),
    )];
    p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    p.not_before = not_before;
    p.not_after = not_after;
    let serial: [u8; 8] = rand_bytes();
    p.serial_number = Some(rcgen::SerialNumber::from_slice(
        &[&[0x01u8][..], &serial[..]].concat(),
    ));
    let cert = p.signed_by(&key, issuer).expect("device cert");
    DeviceCreds {
        client_id: client_id.to_string(),
        serial: hex::encode(
            p.serial_number
                .as_ref()
                .map(|s| s.to_bytes())
                .unwrap_or_default(),
        ),
        chain_der: vec![cert.der().to_vec(), issuing_der.to_vec()],
        key_pkcs8_der: key.serialize_der(),
    }
}

/// Issues a device certificate with devid's own issuing CA (read from the service's data dir;
/// the key is stored unencrypted when no passphrase is set), for cases the API cannot make,
/// such as an expired certificate.
pub fn issue_with_service_ca(
    service: &Service,
    client_id: &str,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
) -> DeviceCreds {
    let ca = service.data_dir.path().join("ca");
    let cert_pem = std::fs::read_to_string(ca.join("issuing.crt")).expect("issuing.crt");
    let key_pem = std::fs::read_to_string(ca.join("issuing.key")).expect("issuing.key");
    let key = rcgen::KeyPair::from_pem(&key_pem).expect("issuing key (unencrypted)");
    let der = pem::parse(&cert_pem).expect("pem").into_contents();
    let issuer = rcgen::Issuer::from_ca_cert_der(&der.clone().into(), key).expect("issuer");
    issue_device(&issuer, &der, client_id, not_before, not_after)
}
