//! A device's certificate chain and key, in the forms the tests hand around.

use std::sync::Arc;

use devid_core::api::Registered;
use devid_core::protocol::{ClientConfig, EcdsaSigner};

/// A device's credentials.
#[derive(Clone)]
pub struct DeviceCreds {
    pub client_id: String,
    pub serial: String,
    /// Leaf first, then intermediates, without the root.
    pub chain_der: Vec<Vec<u8>>,
    pub key_pkcs8_der: Vec<u8>,
}

impl DeviceCreds {
    pub fn from_registered(r: &Registered) -> DeviceCreds {
        let leaf = pem::parse(r.certificate.as_deref().expect("a device's certificate"))
            .expect("cert PEM")
            .into_contents();
        let mut chain_der = vec![leaf];
        let blocks = pem::parse_many(r.chain.as_deref().expect("chain")).expect("chain PEM");
        // Chain: issuing CA first, root last; the root is not sent.
        let n = blocks.len();
        for b in blocks.into_iter().take(n.saturating_sub(1)) {
            chain_der.push(b.into_contents());
        }
        let key = r
            .private_key
            .as_deref()
            .expect("generated key in the answer");
        DeviceCreds {
            client_id: r.client_id.clone(),
            serial: r.serial.clone().expect("certificate serial"),
            chain_der,
            key_pkcs8_der: pem::parse(key).expect("key PEM").into_contents(),
        }
    }

    pub fn cert_pem(&self) -> String {
        self.chain_der
            .iter()
            .map(|d| pem::encode(&pem::Pem::new("CERTIFICATE", d.clone())))
            .collect()
    }

    /// The DEVID-1 device configuration: this chain and key, trusting `root_der`.
    pub fn config(&self, root_der: &[u8]) -> Arc<ClientConfig> {
        let rng = ring::rand::SystemRandom::new();
        let key = EcdsaSigner::from_pkcs8_der(&self.key_pkcs8_der, &rng).expect("device key");
        let config = ClientConfig::new(root_der, self.chain_der.clone(), Arc::new(key))
            .expect("device config");
        Arc::new(config)
    }

    pub fn key_pem(&self) -> String {
        pem::encode(&pem::Pem::new("PRIVATE KEY", self.key_pkcs8_der.clone()))
    }
}
