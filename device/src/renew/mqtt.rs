//! Renewal over MQTT, the device's side (`docs/protocol.md`, "MQTT renewal"): over an open
//! [`Client`] connection, publish the CSR to `$CONTROL/devid/renew/v1` with fresh Correlation
//! Data (and the re-key proof for a new key), and wait for the reply the broker addresses to
//! this client on `$CONTROL/devid/renew/v1/response`.

use std::time::Duration;

use devid_core::ldevid::Refusal;
use devid_core::protocol::renewal::{
    self, Reply, REKEY_PROOF_PROPERTY, RENEW_RESPONSE_TOPIC, RENEW_TOPIC,
};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::EcdsaKeyPair;

use crate::client::{Client, OutgoingMessage};
use crate::connection::ClientError;
use crate::mqtt::{Property, QoS, ReasonCode};

/// Why a renewal over MQTT gave no certificate.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    /// The connection failed or closed.
    #[error("{0}")]
    Client(#[from] ClientError),
    /// The broker refused the PUBLISH itself (e.g. 0x87: the plugin's ACL).
    #[error("the broker refused the renewal request: PUBACK {0}")]
    NotAccepted(ReasonCode),
    /// The service (or the broker) refused: `refusal` when the code is one this version knows.
    #[error("renewal refused ({}, code {code:#04x}): {detail}", .refusal.map(|r| r.as_str()).unwrap_or("unknown"))]
    Refused {
        code: u8,
        refusal: Option<Refusal>,
        detail: String,
    },
    /// The reply could not be read.
    #[error("bad renewal reply: {0}")]
    BadReply(String),
    /// No reply within the time given.
    #[error("no renewal reply within {0:?}")]
    Timeout(Duration),
    /// Making the CSR, the proof or the correlation data failed.
    #[error("{0}")]
    Local(String),
}

/// A renewal request's parts: the CSR for `new_key` (or the current key) with the current
/// certificate's subject and SAN, and, for a new key, the proof signed by `current_key`.
pub fn renewal_request(
    current_cert_der: &[u8],
    current_key: &EcdsaKeyPair,
    new_key: Option<&EcdsaKeyPair>,
) -> Result<(Vec<u8>, Option<Vec<u8>>), RenewError> {
    let rng = SystemRandom::new();
    let local = |e: devid_core::protocol::Error| RenewError::Local(e.to_string());
    let csr = renewal::renewal_csr(current_cert_der, new_key.unwrap_or(current_key), &rng)
        .map_err(local)?;
    let proof = match new_key {
        Some(_) => Some(renewal::rekey_proof(current_key, &csr, &rng).map_err(local)?),
        None => None,
    };
    Ok((csr, proof))
}

/// Asks for a new certificate over `client`'s connection and waits at most `timeout` for the
/// reply. Returns the chain: the new certificate first, then its issuer(s), root last (DER).
/// `rekey_proof` is required when the CSR's key is not the current certificate's (see
/// [`renewal_request`]).
pub async fn renew_over_mqtt(
    client: &Client,
    csr_der: Vec<u8>,
    rekey_proof: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Vec<Vec<u8>>, RenewError> {
    let mut correlation = vec![0u8; 16];
    SystemRandom::new()
        .fill(&mut correlation)
        .map_err(|_| RenewError::Local("no randomness for the correlation data".into()))?;
    let mut msg = OutgoingMessage::new(RENEW_TOPIC, csr_der, QoS::AtLeastOnce);
    msg.correlation_data = Some(correlation.clone());
    if let Some(p) = rekey_proof {
        msg.user_properties
            .push((REKEY_PROOF_PROPERTY.to_string(), renewal::encode_proof(&p)));
    }
    let (ack, reply) = tokio::time::timeout(timeout, client.request(msg, RENEW_RESPONSE_TOPIC))
        .await
        .map_err(|_| RenewError::Timeout(timeout))??;
    if let Some(a) = ack {
        if !a.reason.is_success() {
            return Err(RenewError::NotAccepted(a.reason));
        }
    }
    let echoed = reply.properties.iter().any(|p| match p {
        Property::CorrelationData(c) => *c == correlation,
        _ => false,
    });
    if !echoed {
        return Err(RenewError::BadReply("correlation data differs".into()));
    }
    match Reply::decode(&reply.payload).map_err(|e| RenewError::BadReply(e.to_string()))? {
        Reply::Issued(chain) => Ok(chain),
        Reply::Refused { code, detail } => Err(RenewError::Refused {
            code,
            refusal: Refusal::from_code(code),
            detail,
        }),
    }
}

/// Renewal over an open connection as a [`super::RenewTransport`]: the agent's attempt sends
/// its CSR here, with the re-key proof when the CSR's key is not the connection's certificate's.
pub struct MqttRenewal<'a> {
    pub client: &'a Client,
    /// How long to wait for the reply.
    pub timeout: Duration,
}

impl super::RenewTransport for MqttRenewal<'_> {
    async fn request(
        &self,
        auth: &super::files::Pair,
        _call: super::engine::Call,
        csr: &[u8],
    ) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, super::TransportError> {
        use super::TransportError as T;
        let rng = SystemRandom::new();
        let current = EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            auth.key.secret_pkcs8_der(),
            &rng,
        )
        .map_err(|e| T::Invalid(format!("the current key: {e}")))?;
        let same_key = csr_public_key(csr).as_deref()
            == Some(ring::signature::KeyPair::public_key(&current).as_ref());
        let proof = if same_key {
            None
        } else {
            Some(renewal::rekey_proof(&current, csr, &rng).map_err(|e| T::Invalid(e.to_string()))?)
        };
        match renew_over_mqtt(self.client, csr.to_vec(), proof, self.timeout).await {
            Ok(chain) => Ok(chain
                .into_iter()
                .map(rustls::pki_types::CertificateDer::from)
                .collect()),
            Err(e @ RenewError::Refused { refusal, .. }) => match refusal {
                Some(Refusal::RateLimited | Refusal::Unavailable | Refusal::Internal) | None => {
                    Err(T::Unreachable(e.to_string()))
                }
                Some(_) => Err(T::Refused(e.to_string())),
            },
            Err(e @ RenewError::NotAccepted(_)) => Err(T::Refused(e.to_string())),
            Err(e @ RenewError::BadReply(_)) => Err(T::Invalid(e.to_string())),
            Err(e) => Err(T::Unreachable(e.to_string())),
        }
    }
}

/// The public point of a DER PKCS#10 request.
fn csr_public_key(csr: &[u8]) -> Option<Vec<u8>> {
    use x509_parser::prelude::FromDer;
    let (_, r) =
        x509_parser::certification_request::X509CertificationRequest::from_der(csr).ok()?;
    Some(
        r.certification_request_info
            .subject_pki
            .subject_public_key
            .data
            .to_vec(),
    )
}
