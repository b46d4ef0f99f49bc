//! Token management (admin; auditors may list).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::{Json, Router};
use devid_core::api::{CreateTokenRequest, CreatedToken, Role, TokenInfo, TokenList};
use devid_core::ModelName;

use crate::app::{ApiJson, ApiQuery, AppState, NoQuery};
use crate::auth::{new_token, Caller};
use crate::error::ApiError;
use crate::store::TokenRow;
use crate::timefmt::{self, rfc3339, rfc3339_opt};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tokens", post(create).get(list))
        .route("/v1/tokens/{id}", delete(revoke))
}

pub fn token_json(t: &TokenRow) -> TokenInfo {
    TokenInfo {
        id: t.id.clone(),
        name: t.name.clone(),
        role: t.role,
        models: t.models.clone(),
        created_at: rfc3339(t.created_at),
        expires_at: rfc3339_opt(t.expires_at),
        revoked_at: rfc3339_opt(t.revoked_at),
    }
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateTokenRequest>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    caller.require(&[Role::Admin])?;
    let result = async {
        let name = req.name.trim();
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err(ApiError::unprocessable(
                "name must be 1 to 128 printable characters",
            ));
        }
        if req.models.is_some() && req.role != Role::Factory {
            return Err(ApiError::unprocessable(
                "models limits apply to factory tokens only",
            ));
        }
        if req.models.as_ref().is_some_and(Vec::is_empty) {
            return Err(ApiError::unprocessable(
                "models, when given, must name at least one model",
            ));
        }
        for model in req.models.iter().flatten() {
            ModelName::parse(model).map_err(|e| ApiError::unprocessable(e.to_string()))?;
        }
        let expires_at = match req.expires_in {
            None => None,
            Some(0) => return Err(ApiError::unprocessable("expires_in must be positive")),
            Some(s) => Some(
                i64::try_from(s)
                    .ok()
                    .and_then(|s| timefmt::now().checked_add(s))
                    .ok_or_else(|| ApiError::unprocessable("expires_in is too large"))?,
            ),
        };
        let rng = ring::rand::SystemRandom::new();
        let token = new_token(&rng, req.role, name, req.models.clone(), expires_at)?;
        let audit = caller.audit_ok(
            "token.create",
            &format!("{} ({}, {})", token.row.id, name, req.role.as_str()),
        );
        state.store.insert_token(&token.row, &audit).await?;
        Ok(CreatedToken {
            info: token_json(&token.row),
            token: token.secret,
        })
    }
    .await;
    let created = state
        .audited(&caller, "token.create", &req.name, result)
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    _: ApiQuery<NoQuery>,
) -> Result<Json<TokenList>, ApiError> {
    caller.require(&[Role::Admin, Role::Auditor])?;
    let rows = state.store.list_tokens().await?;
    Ok(Json(TokenList {
        items: rows.iter().map(token_json).collect(),
    }))
}

async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<TokenInfo>, ApiError> {
    caller.require(&[Role::Admin])?;
    let audit = caller.audit_ok("token.revoke", &id);
    let result = state
        .store
        .revoke_token(&id, timefmt::now(), &audit)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::NotFound => {
                ApiError::NotFound(format!("no token has id {id}"))
            }
            other => other.into(),
        });
    let row = state.audited(&caller, "token.revoke", &id, result).await?;
    state.tokens.evict(&row.id);
    Ok(Json(token_json(&row)))
}
