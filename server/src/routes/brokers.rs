//! What brokers need besides device status: their own certificate, per-model settings, and a
//! place to report connection events.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use devid_core::api::{
    BrokerCertificate, BrokerEnrollRequest, EventBatch, ModelList, ModelSettings, Role,
};
use devid_core::clientid;
use devid_core::csr::parse_csr_pem;
use devid_core::profile::{ProfileSettings, Validity};
use devid_core::ModelName;

use crate::app::{ApiJson, ApiQuery, AppState, NoQuery};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::routes::devices::{validate_message_auth, validate_topics};
use crate::store::{DeviceEvent, ModelRow};
use crate::timefmt::{self, rfc3339};
use devid_core::api::{ConnectionEventKind, TopicPolicy};

/// Most events one `POST /v1/events` may carry.
pub const MAX_EVENTS: usize = 1000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/brokers", post(enroll))
        .route("/v1/events", post(events))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{model}", get(show_model).put(put_model))
}

/// A DNS name: labels of letters, digits and hyphens, not starting or ending with a hyphen.
fn valid_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

async fn enroll(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<BrokerEnrollRequest>,
) -> Result<(StatusCode, Json<BrokerCertificate>), ApiError> {
    caller.require(&[Role::Admin])?;
    let result = async {
        if !valid_dns_name(&req.name) {
            return Err(ApiError::unprocessable(format!(
                "{:?} is not a DNS name",
                req.name
            )));
        }
        let csr =
            parse_csr_pem(&req.csr).map_err(|e| ApiError::unprocessable(format!("csr: {e}")))?;
        let settings = ProfileSettings {
            validity: Validity::Years(2),
            ..(*state.profile).clone()
        };
        let issued = state
            .ca
            .issue_broker(
                &csr,
                &req.name,
                &settings,
                time::OffsetDateTime::now_utc(),
                &ring::rand::SystemRandom::new(),
            )
            .map_err(ApiError::from)?;
        state
            .store
            .insert_audit(&caller.audit_ok(
                "broker.enroll",
                &format!("{} (serial {})", req.name, issued.serial_hex),
            ))
            .await?;
        Ok(BrokerCertificate {
            name: req.name.clone(),
            certificate: issued.pem,
            chain: state.ca.chain_pem().to_string(),
            serial: issued.serial_hex,
            fingerprint_sha256: issued.fingerprint_sha256,
            not_before: rfc3339(issued.not_before.unix_timestamp()),
            not_after: rfc3339(issued.not_after.unix_timestamp()),
        })
    }
    .await;
    let cert = state
        .audited(&caller, "broker.enroll", &req.name, result)
        .await?;
    Ok((StatusCode::CREATED, Json(cert)))
}

/// Connection events from brokers: kept as last_seen / last_address and counts per device.
async fn events(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(batch): ApiJson<EventBatch>,
) -> Result<StatusCode, ApiError> {
    caller.require(&[Role::Admin, Role::Broker])?;
    if batch.events.len() > MAX_EVENTS {
        return Err(ApiError::PayloadTooLarge(format!(
            "at most {MAX_EVENTS} events per call"
        )));
    }
    let mut rows = Vec::with_capacity(batch.events.len());
    let mut failures = Vec::new();
    for (i, e) in batch.events.into_iter().enumerate() {
        let at = timefmt::parse_rfc3339(&e.at).ok_or_else(|| {
            ApiError::unprocessable(format!("at {:?} is not an RFC 3339 time", e.at)).at_index(i)
        })?;
        if e.kind == ConnectionEventKind::AuthFailure {
            failures.push(e.refusal.clone());
        }
        // A disconnect changes no counter; connects and failures do.
        if e.kind == ConnectionEventKind::Disconnect || e.client_id.is_empty() {
            continue;
        }
        rows.push(DeviceEvent {
            client_id: e.client_id,
            at,
            address: e.address,
            auth_failure: e.kind == ConnectionEventKind::AuthFailure,
        });
    }
    state.store.record_events(&rows).await?;
    for refusal in &failures {
        state.metrics.auth_failure(refusal.as_deref());
    }
    Ok(StatusCode::ACCEPTED)
}

fn check_model_name(model: &str) -> Result<(), ApiError> {
    ModelName::parse(model)
        .map(drop)
        .map_err(|e| ApiError::unprocessable(e.to_string()))
}

async fn list_models(
    State(state): State<AppState>,
    caller: Caller,
    _: ApiQuery<NoQuery>,
) -> Result<Json<ModelList>, ApiError> {
    caller.require(&[Role::Admin, Role::Auditor, Role::Broker])?;
    let rows = state.store.list_models().await?;
    Ok(Json(ModelList {
        items: rows.iter().map(model_json).collect::<Result<_, _>>()?,
    }))
}

async fn show_model(
    State(state): State<AppState>,
    caller: Caller,
    Path(model): Path<String>,
) -> Result<Json<ModelSettings>, ApiError> {
    caller.require(&[Role::Admin, Role::Auditor, Role::Broker])?;
    state
        .store
        .get_model(&model)
        .await?
        .map(|m| model_json(&m).map(Json))
        .transpose()?
        .ok_or_else(|| ApiError::NotFound(format!("model {model:?} has no settings")))
}

async fn put_model(
    State(state): State<AppState>,
    caller: Caller,
    Path(model): Path<String>,
    ApiJson(mut settings): ApiJson<ModelSettings>,
) -> Result<Json<ModelSettings>, ApiError> {
    caller.require(&[Role::Admin])?;
    let result = async {
        check_model_name(&model)?;
        if !settings.name.is_empty() && settings.name != model {
            return Err(ApiError::unprocessable(
                "name in the body differs from the path",
            ));
        }
        settings.name = model.clone();
        if let Some(p) = &settings.client_id_prefix {
            clientid::validate_prefix(p)
                .map_err(|e| ApiError::unprocessable(format!("client_id_prefix: {e}")))?;
        }
        if let Some(m) = &settings.message_auth {
            validate_message_auth(m)?;
        }
        if let Some(t) = &settings.topics {
            validate_topics(t)?;
        }
        let row = ModelRow {
            name: model.clone(),
            client_id_prefix: settings.client_id_prefix.clone(),
            topic_policy: settings
                .topics
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(ApiError::internal)?,
            message_auth: settings.message_auth.clone(),
            updated_at: timefmt::now(),
        };
        let entry = state
            .store
            .put_model(&row, &caller.audit_ok("model.update", &model))
            .await?;
        state.feed.notify(entry.seq);
        state.registry.forget_model(&model);
        Ok(settings)
    }
    .await;
    state
        .audited(&caller, "model.update", &model, result)
        .await
        .map(Json)
}

fn model_json(m: &ModelRow) -> Result<ModelSettings, ApiError> {
    Ok(ModelSettings {
        name: m.name.clone(),
        client_id_prefix: m.client_id_prefix.clone(),
        topics: m
            .topic_policy
            .as_deref()
            .map(serde_json::from_str::<TopicPolicy>)
            .transpose()
            .map_err(ApiError::internal)?,
        message_auth: m.message_auth.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::valid_dns_name;

    #[test]
    fn dns_names() {
        assert!(valid_dns_name("mqtt.example.com"));
        assert!(valid_dns_name("localhost"));
        for bad in ["", "-a.com", "a..b", "a b", "*.example.com", "a_b.com"] {
            assert!(!valid_dns_name(bad), "{bad}");
        }
    }
}
