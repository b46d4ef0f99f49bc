//! Token management (admin; auditors may list).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::{Json, Router};
use devid_core::api::{CreateTokenRequest, CreatedToken, Role, TokenInfo, TokenList};

use crate::app::{ApiJson, ApiQuery, AppState, NoQuery};
use crate::auth::Caller;
use crate::domain::tokens;
use crate::error::ApiError;
use crate::store::TokenRow;
use crate::timefmt::{rfc3339, rfc3339_opt};

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
    let audit = caller.audit("token.create", &req.name);
    let token = audit
        .run(&state.store, tokens::create(&state.store, &audit, &req))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            info: token_json(&token.row),
            token: token.secret,
        }),
    ))
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
    let audit = caller.audit("token.revoke", &id);
    let row = audit
        .run(&state.store, tokens::revoke(&state.store, &audit, &id))
        .await?;
    state.tokens.evict(&row.id);
    Ok(Json(token_json(&row)))
}
