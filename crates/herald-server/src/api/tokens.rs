//! API tokens: create (shown once), list (no secrets), revoke.

use super::extract::ApiJson;
use super::problem::{ApiError, ApiResult, Problem};
use super::views::TokenView;
use crate::auth::{Caller, Scope, make_token};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use herald_core::clock::now_ms;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenInput {
    pub name: String,
    pub scopes: Vec<Scope>,
    /// A tenant's id or uid: the token then sees and acts only inside that tenant.
    #[serde(default)]
    pub tenant: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TokenCreated {
    pub id: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The secret token; shown only in this answer.
    pub token: String,
}

/// Create a token.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = TokenInput,
    responses((status = 201, body = TokenCreated), (status = 422, body = Problem)), security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<TokenInput>,
) -> ApiResult<(StatusCode, Json<TokenCreated>)> {
    caller.require(Scope::Admin)?;
    let tenant = match &input.tenant {
        Some(t) => Some(
            state
                .store
                .get_tenant(t)
                .await?
                .ok_or_else(|| ApiError::field("tenant", format!("no tenant {t:?}")))?
                .id,
        ),
        None => None,
    };
    let t = make_token(&input.name, input.scopes, tenant.as_deref(), now_ms())
        .map_err(|e| ApiError::field(e.field(), e.to_string()))?;
    let scopes = t.record.scopes.clone();
    state
        .store
        .create_token(t.record.clone(), &caller.actor())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(TokenCreated {
            id: t.record.id,
            name: t.record.name,
            scopes,
            tenant,
            token: t.token,
        }),
    ))
}

#[derive(Serialize, ToSchema)]
pub struct TokenList {
    pub items: Vec<TokenView>,
}

/// List tokens (never their secrets).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", responses((status = 200, body = TokenList)), security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<TokenList>> {
    caller.require(Scope::Admin)?;
    let items = state
        .store
        .list_tokens()
        .await?
        .into_iter()
        .map(TokenView::from)
        .collect();
    Ok(Json(TokenList { items }))
}

/// Revoke a token.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Scope::Admin)?;
    if state
        .store
        .revoke_token(&id, &caller.actor(), now_ms())
        .await?
    {
        state.auth.forget(&id);
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no active token {id:?}")))
    }
}
