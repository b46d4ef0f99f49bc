//! Renewal over MQTT, the service thread's side: a request the broker thread checked is
//! relayed to `POST /v1/brokers/renewals`, and the service's answer (or its absence) becomes the
//! reply bytes of `docs/protocol.md` ("MQTT renewal") for the requesting client.

#![deny(unsafe_code)]

use std::time::Duration;

use base64::Engine as _;
use devid_core::api::{RenewalAnswer, RenewalRequest};
use devid_core::ldevid::Refusal;
use devid_core::protocol::renewal::Reply;

use crate::engine::RenewReply;
use crate::service::RenewJob;

/// How long the service may take to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Asks the service at `url`; returns the reply for the device and, when something went wrong
/// on the way (not a refusal), a line for the broker log. A service that cannot be reached or
/// refuses the broker answers `unavailable`.
pub async fn renew(
    http: &reqwest::Client,
    url: &str,
    job: &RenewJob,
) -> (RenewReply, Option<String>) {
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = RenewalRequest {
        client_id: job.client_id.clone(),
        serial: job.serial.clone(),
        csr: b64.encode(&job.csr),
        rekey_proof: job.proof.as_deref().map(|p| b64.encode(p)),
    };
    let res = http.post(url).json(&body).timeout(TIMEOUT).send().await;
    let who = &job.client_id;
    let (reply, problem) = match res {
        Ok(r) if r.status().is_success() => match r.json::<RenewalAnswer>().await {
            Ok(a) => (answer(a), None),
            Err(e) => (
                Reply::refused(Refusal::Internal, "bad answer from the service"),
                Some(format!("devid: renewal of {who}: bad answer: {e}")),
            ),
        },
        Ok(r) => (
            Reply::refused(Refusal::Unavailable, "the service refused the broker"),
            Some(format!("devid: renewal of {who}: HTTP {}", r.status())),
        ),
        Err(e) => (
            Reply::refused(Refusal::Unavailable, "the service is unreachable"),
            Some(format!("devid: renewal of {who}: {e}")),
        ),
    };
    let reply = RenewReply {
        client_id: job.client_id.clone(),
        correlation: job.correlation.clone(),
        payload: reply.encode(),
    };
    (reply, problem)
}

/// The reply an answer of the service makes.
fn answer(a: RenewalAnswer) -> Reply {
    let b64 = base64::engine::general_purpose::STANDARD;
    if let Some(refusal) = a.refusal {
        return Reply::refused(refusal, a.detail.unwrap_or_default());
    }
    let chain: Result<Vec<Vec<u8>>, _> = a.chain.iter().map(|c| b64.decode(c)).collect();
    match chain {
        Ok(c) if !c.is_empty() => Reply::Issued(c),
        _ => Reply::refused(Refusal::Internal, "bad answer from the service"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty() -> RenewalAnswer {
        RenewalAnswer {
            refusal: None,
            detail: None,
            chain: vec![],
            serial: None,
            not_after: None,
            outcome: None,
        }
    }

    #[test]
    fn answers_become_replies() {
        let issued = RenewalAnswer {
            chain: vec!["MAA=".into(), "MAEA".into()],
            ..empty()
        };
        assert_eq!(
            answer(issued),
            Reply::Issued(vec![vec![0x30, 0], vec![0x30, 1, 0]])
        );
        let refused = RenewalAnswer {
            refusal: Some(Refusal::RateLimited),
            detail: Some("later".into()),
            ..empty()
        };
        assert_eq!(
            answer(refused),
            Reply::refused(Refusal::RateLimited, "later")
        );
        assert_eq!(answer(empty()).refusal(), Some(Refusal::Internal));
        let bad = RenewalAnswer {
            chain: vec!["***".into()],
            ..empty()
        };
        assert_eq!(answer(bad).refusal(), Some(Refusal::Internal));
    }
}
