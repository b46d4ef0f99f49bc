//! A throwaway devid PKI made with rcgen: root CA, device certificates (CN and SAN URI bound to
//! the ClientID, EKU clientAuth), broker certificates (SAN DNS, EKU serverAuth + clientAuth).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::SecureRandom;

pub struct Pki {
    pub root: CertifiedIssuer<'static, KeyPair>,
}

/// A device's files and DER forms.
pub struct DeviceFiles {
    pub client_id: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub chain_der: Vec<Vec<u8>>,
    pub key_pkcs8: Vec<u8>,
}

/// A broker identity.
pub struct BrokerFiles {
    pub chain_der: Vec<Vec<u8>>,
    pub key_pkcs8: Vec<u8>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn random_serial() -> SerialNumber {
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut b).unwrap();
    b[0] &= 0x7f;
    b[0] |= 0x01;
    SerialNumber::from(b.to_vec())
}

/// A fresh valid ClientID with prefix `p`.
pub fn client_id(p: &str) -> String {
    let mut r = [0u8; 10];
    ring::rand::SystemRandom::new().fill(&mut r).unwrap();
    devid_core::clientid::generate(p, &r).unwrap()
}

impl Pki {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(random_serial());
        let key = KeyPair::generate().unwrap();
        Pki {
            root: CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    pub fn root_der(&self) -> Vec<u8> {
        self.root.der().to_vec()
    }

    pub fn write_root(&self, dir: &Path) -> PathBuf {
        let p = dir.join("root.pem");
        std::fs::write(&p, self.root.pem()).unwrap();
        p
    }

    pub fn device(&self, dir: &Path, client_id: &str) -> DeviceFiles {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, client_id);
        params.subject_alt_names = vec![SanType::URI(
            format!("urn:devid:{client_id}").try_into().unwrap(),
        )];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(random_serial());
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.root).unwrap();
        let cert_path = dir.join(format!("{client_id}.crt"));
        let key_path = dir.join(format!("{client_id}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        DeviceFiles {
            client_id: client_id.to_owned(),
            cert: cert_path,
            key: key_path,
            chain_der: vec![cert.der().to_vec()],
            key_pkcs8: key.serialize_der(),
        }
    }

    pub fn broker(&self, dir: &Path, dns: &str) -> BrokerFiles {
        let mut params = CertificateParams::new(vec![dns.to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params.distinguished_name.push(DnType::CommonName, dns);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(random_serial());
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.root).unwrap();
        let cert_path = dir.join("broker.crt");
        let key_path = dir.join("broker.key");
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        BrokerFiles {
            chain_der: vec![cert.der().to_vec()],
            key_pkcs8: key.serialize_der(),
            cert: cert_path,
            key: key_path,
        }
    }
}
