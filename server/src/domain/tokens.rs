//! API tokens: what a new token may be, and revocation.

use devid_core::api::{CreateTokenRequest, Role};
use devid_core::ModelName;

use super::audit::Audit;
use super::DomainError;
use crate::auth::{new_token, NewToken};
use crate::store::{Store, StoreError, TokenRow};
use crate::timefmt;

/// Makes and stores a token as `req` asks. The secret is in the answer, and nowhere else.
pub async fn create(
    store: &Store,
    audit: &Audit,
    req: &CreateTokenRequest,
) -> Result<NewToken, DomainError> {
    let name = req.name.trim();
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(DomainError::invalid_field(
            "name",
            "name must be 1 to 128 printable characters",
        ));
    }
    if req.models.is_some() && req.role != Role::Factory {
        return Err(DomainError::invalid_field(
            "models",
            "models limits apply to factory tokens only",
        ));
    }
    if req.models.as_ref().is_some_and(Vec::is_empty) {
        return Err(DomainError::invalid_field(
            "models",
            "models, when given, must name at least one model",
        ));
    }
    for model in req.models.iter().flatten() {
        ModelName::parse(model).map_err(|e| DomainError::invalid_field("models", e.to_string()))?;
    }
    let expires_at = match req.expires_in {
        None => None,
        Some(0) => {
            return Err(DomainError::invalid_field(
                "expires_in",
                "expires_in must be positive",
            ))
        }
        Some(s) => Some(
            i64::try_from(s)
                .ok()
                .and_then(|s| timefmt::now().checked_add(s))
                .ok_or_else(|| {
                    DomainError::invalid_field("expires_in", "expires_in is too large")
                })?,
        ),
    };
    let rng = ring::rand::SystemRandom::new();
    let token = new_token(&rng, req.role, name, req.models.clone(), expires_at)?;
    let record = audit.ok_about(&format!(
        "{} ({}, {})",
        token.row.id,
        name,
        req.role.as_str()
    ));
    store.insert_token(&token.row, &record).await?;
    Ok(token)
}

/// Revokes token `id` (a second revocation keeps the first time).
pub async fn revoke(store: &Store, audit: &Audit, id: &str) -> Result<TokenRow, DomainError> {
    store
        .revoke_token(id, timefmt::now(), &audit.ok())
        .await
        .map_err(|e| match e {
            StoreError::NotFound => DomainError::not_found(format!("no token has id {id}")),
            other => other.into(),
        })
}
