//! `/api/v1/app`: Svix applications, which are Herald's tenants.

use super::{
    ListResponse, SvixCaller, SvixError, SvixJson, SvixResult, app, limit, page, query, require,
    time,
};
use crate::api::tenants::serde_with_null;
use crate::auth::Scope;
use crate::state::AppState;
use crate::tenants::{self, TenantInput};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use herald_store::TenantRecord;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationIn {
    pub name: Option<String>,
    #[serde(default)]
    pub uid: Option<String>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub throttle_rate: Option<u32>,
    #[serde(default)]
    pub rate_limit: Option<u32>,
}

impl ApplicationIn {
    /// The tenant it describes; `name` is required.
    pub fn input(self) -> SvixResult<TenantInput> {
        let name = self
            .name
            .ok_or_else(|| SvixError::body_field("name", "field required"))?;
        if let Some(uid) = &self.uid {
            check_uid(uid, "uid")?;
        }
        Ok(TenantInput {
            name,
            uid: self.uid,
            metadata: self.metadata.unwrap_or_default(),
            rate_limit: self.throttle_rate.or(self.rate_limit),
        })
    }
}

/// Svix's rule for uids: they may not look like ids.
pub fn check_uid(uid: &str, field: &str) -> SvixResult<()> {
    if uid.starts_with("app_") || uid.starts_with("ep_") || uid.starts_with("msg_") {
        return Err(SvixError::body_field(
            field,
            "Uids are not allowed to have the same prefix as the ID. Prefix with _?",
        ));
    }
    Ok(())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationOut {
    pub id: String,
    pub uid: Option<String>,
    pub name: String,
    pub metadata: BTreeMap<String, String>,
    pub throttle_rate: Option<u32>,
    pub rate_limit: Option<u32>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<TenantRecord> for ApplicationOut {
    fn from(t: TenantRecord) -> Self {
        ApplicationOut {
            id: t.id,
            uid: t.uid,
            name: t.name,
            metadata: t.metadata,
            throttle_rate: t.rate_limit,
            rate_limit: t.rate_limit,
            created_at: time(t.created_at),
            updated_at: time(t.updated_at),
        }
    }
}

#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<u32>,
    iterator: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    uri: Uri,
) -> SvixResult<Json<ListResponse<ApplicationOut>>> {
    require(&caller, Scope::Read)?;
    let q: ListQuery = query(&uri)?;
    let limit = limit(q.limit)?;
    let after = q.iterator.as_deref().filter(|i| !i.starts_with('-'));
    let items = tenants::list(&state, &caller, after, limit + 1).await?;
    let out = page(items, limit, |t| t.id.clone());
    Ok(Json(ListResponse {
        data: out.data.into_iter().map(ApplicationOut::from).collect(),
        iterator: out.iterator,
        prev_iterator: out.prev_iterator,
        done: out.done,
    }))
}

#[derive(Deserialize)]
pub struct CreateQuery {
    #[serde(default)]
    get_if_exists: bool,
}

/// `POST /app` (`?get_if_exists=true`: the app with this uid as it is, 200).
pub async fn create(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    uri: Uri,
    SvixJson(body): SvixJson<ApplicationIn>,
) -> SvixResult<Response> {
    let q: CreateQuery = query(&uri)?;
    let input = body.input()?;
    if q.get_if_exists
        && let Some(uid) = &input.uid
    {
        require(&caller, Scope::Read)?;
        if let Some(t) = state.store.get_tenant(uid).await?
            && t.uid.as_deref() == Some(uid.as_str())
        {
            return if caller.sees_tenant(&t.id) {
                Ok((StatusCode::OK, Json(ApplicationOut::from(t))).into_response())
            } else {
                Err(SvixError::not_found("Application"))
            };
        }
    }
    // Only the operator makes applications.
    caller.require(Scope::Admin)?;
    let t = tenants::create(&state, input, &caller.actor()).await?;
    Ok((StatusCode::CREATED, Json(ApplicationOut::from(t))).into_response())
}

pub async fn get(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    Path(app_id): Path<String>,
) -> SvixResult<Json<ApplicationOut>> {
    require(&caller, Scope::Read)?;
    Ok(Json(app(&state, &caller, &app_id).await?.into()))
}

/// `PUT /app/{app_id}`: replaces, or creates the app when there is none (201).
pub async fn put(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    Path(app_id): Path<String>,
    SvixJson(body): SvixJson<ApplicationIn>,
) -> SvixResult<Response> {
    require(&caller, Scope::Admin)?;
    let input = body.input()?;
    match app(&state, &caller, &app_id).await {
        Ok(t) => {
            let t = tenants::replace(&state, t, input, &caller.actor()).await?;
            Ok((StatusCode::OK, Json(ApplicationOut::from(t))).into_response())
        }
        Err(SvixError::Http {
            status: StatusCode::NOT_FOUND,
            ..
        }) if caller.tenant.is_none() => {
            let t = tenants::create(&state, input, &caller.actor()).await?;
            Ok((StatusCode::CREATED, Json(ApplicationOut::from(t))).into_response())
        }
        Err(e) => Err(e),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationPatch {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, with = "serde_with_null")]
    uid: Option<Option<String>>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(default, with = "serde_with_null")]
    throttle_rate: Option<Option<u32>>,
    #[serde(default, with = "serde_with_null")]
    rate_limit: Option<Option<u32>>,
}

pub async fn patch(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    Path(app_id): Path<String>,
    SvixJson(body): SvixJson<ApplicationPatch>,
) -> SvixResult<Json<ApplicationOut>> {
    require(&caller, Scope::Admin)?;
    let t = app(&state, &caller, &app_id).await?;
    if let Some(Some(uid)) = &body.uid {
        check_uid(uid, "uid")?;
    }
    let input = TenantInput {
        name: body.name.unwrap_or_else(|| t.name.clone()),
        uid: body.uid.unwrap_or_else(|| t.uid.clone()),
        metadata: body.metadata.unwrap_or_else(|| t.metadata.clone()),
        rate_limit: body
            .throttle_rate
            .or(body.rate_limit)
            .unwrap_or(t.rate_limit),
    };
    Ok(Json(
        tenants::replace(&state, t, input, &caller.actor())
            .await?
            .into(),
    ))
}

#[derive(Serialize)]
pub struct PortalAccessOut {
    url: String,
    token: String,
}

/// `POST /auth/app-portal-access/{app_id}`: a link to the customer portal for this app
/// (a token confined to it, short-lived and revocable).
pub async fn portal_access(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    Path(app_id): Path<String>,
    headers: axum::http::HeaderMap,
) -> SvixResult<Json<PortalAccessOut>> {
    caller.require(Scope::Admin)?;
    let t = app(&state, &caller, &app_id).await?;
    let base = tenants::base_url_of(&headers);
    let access = tenants::portal_access(&state, &t, &caller.actor(), &base).await?;
    Ok(Json(PortalAccessOut {
        url: access.url,
        token: access.token,
    }))
}

pub async fn delete(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    Path(app_id): Path<String>,
) -> SvixResult<StatusCode> {
    caller.require(Scope::Admin)?;
    let t = app(&state, &caller, &app_id).await?;
    tenants::delete(&state, &t, &caller.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}
