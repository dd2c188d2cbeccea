//! `/api/v1/tenants`: tenants (Svix: applications) in Herald's own shapes.

use super::extract::{ApiJson, parse_query};
use super::problem::{ApiError, ApiResult, Problem};
use crate::auth::{Caller, Scope};
use crate::state::AppState;
use crate::tenants::{self, TenantInput};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use herald_core::clock::rfc3339;
use herald_store::TenantRecord;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

/// A tenant as shown.
#[derive(Serialize, ToSchema)]
pub struct TenantView {
    /// `app_<32 hex>`.
    pub id: String,
    pub uid: Option<String>,
    pub name: String,
    pub metadata: BTreeMap<String, String>,
    /// Messages per second over all its destinations.
    pub rate_limit: Option<u32>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<TenantRecord> for TenantView {
    fn from(t: TenantRecord) -> Self {
        TenantView {
            id: t.id,
            uid: t.uid,
            name: t.name,
            metadata: t.metadata,
            rate_limit: t.rate_limit,
            created_at: rfc3339(t.created_at),
            updated_at: rfc3339(t.updated_at),
        }
    }
}

/// A tenant to make or replace.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantBody {
    pub name: String,
    #[serde(default)]
    pub uid: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub rate_limit: Option<u32>,
}

impl From<TenantBody> for TenantInput {
    fn from(b: TenantBody) -> Self {
        TenantInput {
            name: b.name,
            uid: b.uid,
            metadata: b.metadata,
            rate_limit: b.rate_limit,
        }
    }
}

/// Some fields of a tenant to change (`null` clears `uid` and `rate_limit`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, with = "serde_with_null")]
    #[schema(value_type = Option<String>)]
    pub uid: Option<Option<String>>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default, with = "serde_with_null")]
    #[schema(value_type = Option<u32>)]
    pub rate_limit: Option<Option<u32>>,
}

/// `Option<Option<T>>` that tells a field set to `null` (`Some(None)`) from one left out
/// (`None`).
pub(crate) mod serde_with_null {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

impl TenantPatch {
    /// The tenant's fields with this patch applied.
    pub fn apply(self, t: &TenantRecord) -> TenantInput {
        TenantInput {
            name: self.name.unwrap_or_else(|| t.name.clone()),
            uid: self.uid.unwrap_or_else(|| t.uid.clone()),
            metadata: self.metadata.unwrap_or_else(|| t.metadata.clone()),
            rate_limit: self.rate_limit.unwrap_or(t.rate_limit),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct TenantList {
    pub items: Vec<TenantView>,
    /// Give as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TenantListQuery {
    /// 1–1000, default 50.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Make a tenant (admins).
#[utoipa::path(post, path = "/api/v1/tenants", tag = "tenants", request_body = TenantBody,
    responses((status = 201, body = TenantView), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<TenantBody>,
) -> ApiResult<(StatusCode, Json<TenantView>)> {
    caller.require(Scope::Admin)?;
    let t = tenants::create(&state, body.into(), &caller.actor()).await?;
    Ok((StatusCode::CREATED, Json(t.into())))
}

/// List tenants, by id; a tenant's token sees only its own.
#[utoipa::path(get, path = "/api/v1/tenants", tag = "tenants", params(TenantListQuery),
    responses((status = 200, body = TenantList)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
) -> ApiResult<Json<TenantList>> {
    caller.require_scope(Scope::Read)?;
    let q: TenantListQuery = parse_query(&uri)?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::field("limit", "1–1000"));
    }
    let mut items = tenants::list(&state, &caller, q.cursor.as_deref(), limit + 1).await?;
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next_cursor = more.then(|| items.last().map(|t| t.id.clone())).flatten();
    Ok(Json(TenantList {
        items: items.into_iter().map(TenantView::from).collect(),
        next_cursor,
    }))
}

/// Read a tenant by id or uid.
#[utoipa::path(get, path = "/api/v1/tenants/{id}", tag = "tenants", params(("id" = String, Path, description = "id or uid")),
    responses((status = 200, body = TenantView), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<TenantView>> {
    caller.require_scope(Scope::Read)?;
    Ok(Json(tenants::find(&state, &caller, &id).await?.into()))
}

/// Replace a tenant's fields (admins).
#[utoipa::path(put, path = "/api/v1/tenants/{id}", tag = "tenants", params(("id" = String, Path, description = "id or uid")),
    request_body = TenantBody,
    responses((status = 200, body = TenantView), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn put(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<TenantBody>,
) -> ApiResult<Json<TenantView>> {
    caller.require_scope(Scope::Admin)?;
    let t = tenants::find(&state, &caller, &id).await?;
    let t = tenants::replace(&state, t, body.into(), &caller.actor()).await?;
    Ok(Json(t.into()))
}

/// Change some of a tenant's fields (admins).
#[utoipa::path(patch, path = "/api/v1/tenants/{id}", tag = "tenants", params(("id" = String, Path, description = "id or uid")),
    request_body = TenantPatch,
    responses((status = 200, body = TenantView), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn patch(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<TenantPatch>,
) -> ApiResult<Json<TenantView>> {
    caller.require_scope(Scope::Admin)?;
    let t = tenants::find(&state, &caller, &id).await?;
    let input = body.apply(&t);
    let t = tenants::replace(&state, t, input, &caller.actor()).await?;
    Ok(Json(t.into()))
}

#[derive(Serialize, ToSchema)]
pub struct PortalAccessView {
    /// Opens the customer portal for this tenant (give it to the customer, or put it in a
    /// frame).
    pub url: String,
    /// The token in the URL: confined to the tenant, revocable with `DELETE /tokens/{id}`.
    pub token: String,
    pub token_id: String,
    pub expires_at: String,
}

/// A customer portal link for a tenant (admins).
#[utoipa::path(post, path = "/api/v1/tenants/{id}/portal-access", tag = "tenants", params(("id" = String, Path, description = "id or uid")),
    responses((status = 201, body = PortalAccessView), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn portal_access(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> ApiResult<(StatusCode, Json<PortalAccessView>)> {
    caller.require(Scope::Admin)?;
    let t = tenants::find(&state, &caller, &id).await?;
    let base = tenants::base_url_of(&headers);
    let a = tenants::portal_access(&state, &t, &caller.actor(), &base).await?;
    Ok((
        StatusCode::CREATED,
        Json(PortalAccessView {
            url: a.url,
            token: a.token,
            token_id: a.token_id,
            expires_at: rfc3339(a.expires_at),
        }),
    ))
}

/// Delete a tenant with its destinations (their unfinished deliveries are discarded).
#[utoipa::path(delete, path = "/api/v1/tenants/{id}", tag = "tenants", params(("id" = String, Path, description = "id or uid")),
    responses((status = 204), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Scope::Admin)?;
    let t = tenants::find(&state, &caller, &id).await?;
    tenants::delete(&state, &t, &caller.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}
