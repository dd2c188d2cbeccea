//! `/api/v1/operational-webhook/endpoint`: the platform's own endpoints for operational
//! events about its tenants' endpoints (`endpoint.disabled`, `message.attempt.exhausted`),
//! signed like every Svix endpoint. They belong to a tenant of their own
//! ([`OPERATIONAL_TENANT`]) that no customer reaches; only the operator's admins manage them.

use super::endpoints::{self as ep, EndpointIn, EndpointOut, endpoint_out};
use super::{ListResponse, SvixCaller, SvixJson, SvixResult, limit, page, query};
use crate::auth::{Caller, Scope};
use crate::operational::OPERATIONAL_TENANT;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use herald_core::ids::split_destination_key;
use herald_store::TenantRecord;
use serde::Deserialize;
use serde_json::{Value, json};

/// The operational webhooks' owner, as a tenant.
fn owner() -> TenantRecord {
    TenantRecord {
        id: OPERATIONAL_TENANT.to_string(),
        uid: None,
        name: "operational webhooks".into(),
        metadata: Default::default(),
        rate_limit: None,
        created_at: 0,
        updated_at: 0,
    }
}

fn admin(caller: &Caller) -> SvixResult<()> {
    Ok(caller.require(Scope::Admin)?)
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
) -> SvixResult<Json<ListResponse<EndpointOut>>> {
    admin(&caller)?;
    let q: ListQuery = query(&uri)?;
    let limit = limit(q.limit)?;
    let after = q.iterator.filter(|i| !i.starts_with('-'));
    let items: Vec<_> = state
        .destinations
        .of_tenant(Some(OPERATIONAL_TENANT))
        .into_iter()
        .filter(|e| {
            after
                .as_deref()
                .is_none_or(|a| split_destination_key(&e.name).1 > a)
        })
        .take(limit as usize + 1)
        .collect();
    let out = page(items, limit, |e| {
        split_destination_key(&e.name).1.to_string()
    });
    Ok(Json(ListResponse {
        data: out.data.iter().map(|e| endpoint_out(e)).collect(),
        iterator: out.iterator,
        prev_iterator: out.prev_iterator,
        done: out.done,
    }))
}

pub async fn create(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    SvixJson(body): SvixJson<EndpointIn>,
) -> SvixResult<(StatusCode, Json<EndpointOut>)> {
    admin(&caller)?;
    let e = ep::create_endpoint(&state, &caller, &owner(), body).await?;
    Ok((StatusCode::CREATED, Json(endpoint_out(&e))))
}

pub async fn get(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    Path(id): Path<String>,
) -> SvixResult<Json<EndpointOut>> {
    admin(&caller)?;
    let e = ep::find(&state, &owner(), &id)?;
    Ok(Json(endpoint_out(&e)))
}

pub async fn put(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    Path(id): Path<String>,
    SvixJson(mut body): SvixJson<EndpointIn>,
) -> SvixResult<Json<EndpointOut>> {
    admin(&caller)?;
    let e = ep::find(&state, &owner(), &id)?;
    body.secret = None;
    body.headers = None;
    let e = ep::update_endpoint(&state, &caller, &owner(), &e, body).await?;
    Ok(Json(endpoint_out(&e)))
}

pub async fn delete(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    Path(id): Path<String>,
) -> SvixResult<StatusCode> {
    admin(&caller)?;
    let e = ep::find(&state, &owner(), &id)?;
    ep::delete_endpoint(&state, &caller, &e).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn secret(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    Path(id): Path<String>,
) -> SvixResult<Json<Value>> {
    admin(&caller)?;
    let o = owner();
    let e = ep::find(&state, &o, &id)?;
    let key = ep::reveal_secret(&state, &caller, &o, &e).await?;
    Ok(Json(json!({"key": key})))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RotateIn {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    grace_period_seconds: Option<i64>,
}

pub async fn rotate(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    Path(id): Path<String>,
    SvixJson(body): SvixJson<RotateIn>,
) -> SvixResult<Json<Value>> {
    admin(&caller)?;
    let e = ep::find(&state, &owner(), &id)?;
    let new = ep::rotate_secret(&state, &caller, &e, body.key, body.grace_period_seconds).await?;
    Ok(Json(json!({"key": new})))
}
