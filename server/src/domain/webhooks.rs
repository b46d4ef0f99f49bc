//! Webhooks' rules: what a webhook may be, its secret, the signature of a delivery, which
//! events it takes and when a failed delivery is tried again. No I/O: the store keeps
//! webhooks and deliveries, `crate::webhooks` is the worker that sends them.

use std::time::Duration;

use base64::Engine as _;
use devid_core::api::{
    AppEventKind, CreateWebhookRequest, DeliveryState, Webhook, WebhookDelivery,
};
use devid_core::ModelName;
use ring::hmac;
use ring::rand::{SecureRandom as _, SystemRandom};

use super::audit::Audit;
use super::DomainError;
use crate::ca::SensorKek;
use crate::store::{AppEventRow, DeliveryRow, Store, StoreError, WebhookRow};
use crate::timefmt::{self, rfc3339};

/// The first retry waits up to this long; each further one up to twice as long ...
pub const RETRY_BASE: Duration = Duration::from_secs(1);
/// ... but never more than this.
pub const RETRY_CAP: Duration = Duration::from_secs(3600);
/// A delivery still failing this long after its first attempt is given up (`failed`), and
/// the webhook's next events go on.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);
/// At most this many webhooks.
pub const MAX_WEBHOOKS: usize = 100;

/// A checked request: the URL is `http`/`https` with a host, kinds are at least one (no
/// duplicates kept), models follow the model-name rule.
pub fn check_request(req: &CreateWebhookRequest) -> Result<(), DomainError> {
    let url = reqwest::Url::parse(&req.url)
        .map_err(|e| DomainError::invalid_field("url", format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(DomainError::invalid_field(
            "url",
            "url must be an http or https URL with a host",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(DomainError::invalid_field(
            "url",
            "url must not carry credentials (the signature authenticates devid)",
        ));
    }
    if req.kinds.is_empty() {
        return Err(DomainError::invalid_field(
            "kinds",
            "kinds must name at least one event kind",
        ));
    }
    match &req.models {
        Some(models) if models.is_empty() => {
            return Err(DomainError::invalid_field(
                "models",
                "models, when given, must name at least one model",
            ))
        }
        Some(models) => {
            for m in models {
                ModelName::parse(m)
                    .map_err(|e| DomainError::invalid_field("models", e.to_string()))?;
            }
        }
        None => {}
    }
    Ok(())
}

/// A new secret, base64url without padding, from 32 random bytes.
pub fn secret_text(bytes: &[u8; 32]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The `devid-signature` header of `body` sent at unix time `t`:
/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>." || body)>`. The key is the secret's 32 bytes.
pub fn signature(secret: &[u8; 32], t: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(format!("{t}.").as_bytes());
    ctx.update(body);
    format!("t={t},v1={}", hex::encode(ctx.sign().as_ref()))
}

/// What the sealed secret's AAD names: a webhook, never a ClientID (ClientIDs have no ':').
pub fn seal_name(id: &str) -> String {
    format!("webhook:{id}")
}

/// Whether `hook` takes `event`: its kind is one of the webhook's, and when the webhook names
/// models, the event is about a device of one of them.
pub fn wants(hook: &WebhookRow, event: &AppEventRow) -> bool {
    if !hook.kinds.iter().any(|k| k == event.kind.as_str()) {
        return false;
    }
    match models(hook) {
        None => true,
        Some(models) => event
            .model
            .as_deref()
            .is_some_and(|m| models.iter().any(|x| x == m)),
    }
}

fn models(hook: &WebhookRow) -> Option<Vec<String>> {
    hook.models
        .as_deref()
        .and_then(|m| serde_json::from_str(m).ok())
}

/// The webhook as the API shows it.
pub fn webhook_json(hook: &WebhookRow) -> Webhook {
    Webhook {
        id: hook.id.clone(),
        url: hook.url.clone(),
        kinds: hook
            .kinds
            .iter()
            .filter_map(|k| AppEventKind::parse(k))
            .collect(),
        models: models(hook),
        created_at: rfc3339(hook.created_at),
    }
}

/// After a failed attempt (`attempts` made so far, including this one): the delivery's next
/// state and when it is due. Exponential backoff with full jitter: a uniform wait in
/// [0, min(cap, base * 2^(attempts-1))], `jitter` in [0, 1) picking the point; given up once
/// the first attempt is [`GIVE_UP_AFTER`] old.
pub fn after_failure(attempts: u32, first_at: i64, now: i64, jitter: f64) -> (DeliveryState, i64) {
    if now - first_at >= GIVE_UP_AFTER.as_secs() as i64 {
        return (DeliveryState::Failed, now);
    }
    let exp = attempts.saturating_sub(1).min(32);
    let ceiling = RETRY_BASE.as_secs_f64() * 2f64.powi(exp as i32);
    let ceiling = ceiling.min(RETRY_CAP.as_secs_f64());
    let wait = (ceiling * jitter.clamp(0.0, 1.0)).floor() as i64;
    (DeliveryState::Pending, now + wait)
}

/// Creates a webhook as `req` asks: checked, with a new secret sealed under the sensor KEK.
/// Returns the stored webhook and the secret's text (shown this once).
pub async fn create(
    store: &Store,
    kek: &SensorKek,
    audit: &Audit,
    req: &CreateWebhookRequest,
) -> Result<(WebhookRow, String), DomainError> {
    check_request(req)?;
    super::sensors::check_kek(store, kek).await?;
    if store.webhooks().await?.len() >= MAX_WEBHOOKS {
        return Err(DomainError::invalid_field(
            "url",
            format!("at most {MAX_WEBHOOKS} webhooks; delete one first"),
        ));
    }
    let rng = SystemRandom::new();
    let mut id = [0u8; 8];
    let mut secret = zeroize::Zeroizing::new([0u8; 32]);
    rng.fill(&mut id)
        .map_err(|_| DomainError::internal("no randomness"))?;
    rng.fill(&mut secret[..])
        .map_err(|_| DomainError::internal("no randomness"))?;
    let id = format!("wh_{}", hex::encode(id));
    let sealed = kek
        .seal(&seal_name(&id), &secret, &rng)
        .map_err(DomainError::internal)?;
    let mut kinds: Vec<String> = Vec::new();
    for k in &req.kinds {
        if !kinds.iter().any(|x| x == k.as_str()) {
            kinds.push(k.as_str().to_string());
        }
    }
    let row = WebhookRow {
        id,
        url: req.url.clone(),
        kinds,
        models: req
            .models
            .as_ref()
            .map(|m| serde_json::to_string(m).unwrap_or_else(|_| "[]".into())),
        sealed_secret: sealed,
        scanned_seq: 0,
        created_at: timefmt::now(),
    };
    let row = store.create_webhook(&row, audit.actor()).await?;
    Ok((row, secret_text(&secret)))
}

/// The webhook named, or NotFound.
pub async fn get(store: &Store, id: &str) -> Result<WebhookRow, DomainError> {
    store
        .webhook(id)
        .await?
        .ok_or_else(|| DomainError::not_found(format!("no webhook has id {id}")))
}

/// Deletes the webhook named (and its deliveries); returns it as it was.
pub async fn delete(store: &Store, audit: &Audit, id: &str) -> Result<WebhookRow, DomainError> {
    let row = get(store, id).await?;
    store
        .delete_webhook(id, audit.actor(), timefmt::now())
        .await
        .map_err(|e| match e {
            StoreError::NotFound => DomainError::not_found(format!("no webhook has id {id}")),
            other => other.into(),
        })?;
    Ok(row)
}

pub async fn redeliver(
    store: &Store,
    audit: &Audit,
    id: &str,
    delivery: i64,
) -> Result<(DeliveryRow, AppEventRow), DomainError> {
    get(store, id).await?;
    let row = store
        .redeliver(id, delivery, audit.actor(), timefmt::now())
        .await
        .map_err(|e| match e {
            StoreError::NotFound => {
                DomainError::not_found(format!("webhook {id} has no delivery {delivery}"))
            }
            other => other.into(),
        })?;
    let event = store
        .app_event(row.event_seq)
        .await?
        .ok_or_else(|| DomainError::not_found(format!("event {} is gone", row.event_seq)))?;
    Ok((row, event))
}

/// A delivery as the API shows it.
pub fn delivery_json(d: &DeliveryRow, e: &AppEventRow) -> WebhookDelivery {
    WebhookDelivery {
        id: d.id,
        event_id: d.event_seq,
        kind: e.kind,
        state: d.state,
        attempts: u32::try_from(d.attempts).unwrap_or(u32::MAX),
        next_attempt_at: (d.state == DeliveryState::Pending).then(|| rfc3339(d.next_attempt_at)),
        last_attempt_at: d.last_attempt_at.map(rfc3339),
        last_status: d.last_status.and_then(|s| u16::try_from(s).ok()),
        last_error: d.last_error.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector of `docs/webhooks.md`.
    #[test]
    fn the_signature_matches_the_documented_vector() {
        let secret = [7u8; 32];
        assert_eq!(
            secret_text(&secret),
            "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc"
        );
        let body = br#"{"id":42,"kind":"revoked","at":"2026-12-07T12:00:00Z","client_id":"ABC","data":{}}"#;
        let sig = signature(&secret, 1_796_644_800, body);
        let doc = include_str!("../../../docs/webhooks.md");
        assert!(doc.contains(&sig), "docs/webhooks.md does not show {sig}");
    }

    #[test]
    fn backoff_grows_with_full_jitter_and_gives_up_after_a_day() {
        assert_eq!(after_failure(1, 0, 10, 0.0), (DeliveryState::Pending, 10));
        assert_eq!(after_failure(1, 0, 10, 0.999), (DeliveryState::Pending, 10));
        assert_eq!(after_failure(5, 0, 10, 0.5), (DeliveryState::Pending, 18));
        assert_eq!(
            after_failure(40, 0, 10, 0.999),
            (DeliveryState::Pending, 3606)
        );
        let day = GIVE_UP_AFTER.as_secs() as i64;
        assert_eq!(after_failure(3, 5, 5 + day, 0.5).0, DeliveryState::Failed);
    }

    #[test]
    fn requests_are_checked() {
        let ok = CreateWebhookRequest {
            url: "https://example.com/hook".into(),
            kinds: vec![AppEventKind::Revoked],
            models: None,
        };
        assert!(check_request(&ok).is_ok());
        for bad in [
            CreateWebhookRequest {
                url: "ftp://x/".into(),
                ..ok.clone()
            },
            CreateWebhookRequest {
                url: "nope".into(),
                ..ok.clone()
            },
            CreateWebhookRequest {
                url: "https://u:p@x/".into(),
                ..ok.clone()
            },
            CreateWebhookRequest {
                kinds: vec![],
                ..ok.clone()
            },
            CreateWebhookRequest {
                models: Some(vec![]),
                ..ok.clone()
            },
            CreateWebhookRequest {
                models: Some(vec!["bad model".into()]),
                ..ok.clone()
            },
        ] {
            assert!(check_request(&bad).is_err(), "{bad:?}");
        }
    }
}
