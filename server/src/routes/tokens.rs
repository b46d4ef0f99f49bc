//! Token management (admin; auditors may list), and `whoami` for every token.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use devid_core::api::{CreateTokenRequest, CreatedToken, TokenInfo, TokenList, Whoami};
use utoipa_axum::routes;

use crate::app::{ApiJson, ApiQuery, AppState, NoQuery};
use crate::domain::tokens;
use crate::error::ApiError;
use crate::openapi::{BadRequest, JsonBodyProblems, NotFound};
use crate::routes::{Guard, Routes, ADMIN, ANY_TOKEN, READERS};
use crate::store::TokenRow;
use crate::timefmt::{rfc3339, rfc3339_opt};

pub fn router() -> Routes {
    Routes::new()
        .add(ADMIN, routes!(create_token))
        .add(READERS, routes!(list_tokens))
        .add(ADMIN, routes!(revoke_token))
        .add(ANY_TOKEN, routes!(whoami))
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

/// Create a token; its secret is in this answer only.
#[utoipa::path(
    post,
    path = "/v1/tokens",
    request_body = CreateTokenRequest,
    responses(
        (status = 201, description = "Created; `token` is the secret", body = CreatedToken),
        JsonBodyProblems,
    )
)]
async fn create_token(
    State(state): State<AppState>,
    guard: Guard,
    ApiJson(req): ApiJson<CreateTokenRequest>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let caller = guard.check()?;
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

/// The calling token: its id, role and, for a factory token limited to some models, those.
#[utoipa::path(
    get,
    path = "/v1/whoami",
    responses((status = 200, description = "The calling token", body = Whoami), (status = 400, response = BadRequest))
)]
async fn whoami(guard: Guard, _: ApiQuery<NoQuery>) -> Result<Json<Whoami>, ApiError> {
    let caller = guard.check()?;
    Ok(Json(Whoami {
        token_id: caller.token_id,
        role: caller.role,
        models: caller.models,
    }))
}

/// List tokens (never their secrets).
#[utoipa::path(
    get,
    path = "/v1/tokens",
    responses((status = 200, description = "Every token", body = TokenList), (status = 400, response = BadRequest))
)]
async fn list_tokens(
    State(state): State<AppState>,
    guard: Guard,
    _: ApiQuery<NoQuery>,
) -> Result<Json<TokenList>, ApiError> {
    guard.check()?;
    let rows = state.store.list_tokens().await?;
    Ok(Json(TokenList {
        items: rows.iter().map(token_json).collect(),
    }))
}

/// Revoke a token: it stops working at once.
#[utoipa::path(
    delete,
    path = "/v1/tokens/{id}",
    params(("id" = String, Path, description = "The token's id, as `GET /v1/tokens` lists it")),
    responses(
        (status = 200, description = "The token, revoked", body = TokenInfo),
        (status = 404, response = NotFound),
    )
)]
async fn revoke_token(
    State(state): State<AppState>,
    guard: Guard,
    Path(id): Path<String>,
) -> Result<Json<TokenInfo>, ApiError> {
    let caller = guard.check()?;
    let audit = caller.audit("token.revoke", &id);
    let row = audit
        .run(&state.store, tokens::revoke(&state.store, &audit, &id))
        .await?;
    state.tokens.evict(&row.id);
    Ok(Json(token_json(&row)))
}
