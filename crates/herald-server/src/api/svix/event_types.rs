//! `/api/v1/event-type`: the event-type catalog (shared by every tenant; endpoints filter
//! on it).

use super::{ListResponse, SvixCaller, SvixError, SvixJson, SvixResult, limit, page, query, time};
use crate::api::tenants::serde_with_null;
use crate::auth::Scope;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use herald_core::message::is_valid_event_type;
use herald_store::EventTypeRecord;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventTypeIn {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    archived: bool,
    #[serde(default)]
    deprecated: bool,
    #[serde(default)]
    schemas: Option<Value>,
    #[serde(default)]
    feature_flag: Option<String>,
    #[serde(default)]
    group_name: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventTypeOut {
    name: String,
    description: String,
    archived: bool,
    deprecated: bool,
    schemas: Option<Value>,
    feature_flag: Option<String>,
    group_name: Option<String>,
    created_at: String,
    updated_at: String,
}

fn out(e: EventTypeRecord, with_content: bool) -> EventTypeOut {
    EventTypeOut {
        schemas: e
            .schemas
            .as_deref()
            .filter(|_| with_content)
            .and_then(|s| serde_json::from_str(s).ok()),
        name: e.name,
        description: e.description,
        archived: e.archived,
        deprecated: e.deprecated,
        feature_flag: e.feature_flag,
        group_name: e.group_name,
        created_at: time(e.created_at),
        updated_at: time(e.updated_at),
    }
}

fn check_name(name: &str) -> SvixResult<()> {
    if is_valid_event_type(name) {
        Ok(())
    } else {
        Err(SvixError::body_field(
            "name",
            "1–128 characters of A-Z a-z 0-9 _ . : -",
        ))
    }
}

/// The record `body` describes for `name`, keeping `created_at` of what it replaces.
fn record(name: String, body: EventTypeIn, created_at: Option<i64>) -> SvixResult<EventTypeRecord> {
    let description = body
        .description
        .ok_or_else(|| SvixError::body_field("description", "field required"))?;
    if let Some(s) = &body.schemas
        && !s.is_object()
    {
        return Err(SvixError::body_field(
            "schemas",
            "an object of version to JSON Schema, e.g. {\"1\": {…}}",
        ));
    }
    let now = herald_core::clock::now_ms();
    Ok(EventTypeRecord {
        name,
        description,
        schemas: body.schemas.map(|s| s.to_string()),
        archived: body.archived,
        deprecated: body.deprecated,
        feature_flag: body.feature_flag,
        group_name: body.group_name,
        created_at: created_at.unwrap_or(now),
        updated_at: now,
    })
}

#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<u32>,
    iterator: Option<String>,
    #[serde(default)]
    include_archived: bool,
    #[serde(default)]
    with_content: bool,
}

pub async fn list(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    uri: Uri,
) -> SvixResult<Json<ListResponse<EventTypeOut>>> {
    caller.require_scope(Scope::Read)?;
    let q: ListQuery = query(&uri)?;
    let limit = limit(q.limit)?;
    let after = q.iterator.as_deref().filter(|i| !i.starts_with('-'));
    let items = state
        .store
        .list_event_types(after, limit + 1, q.include_archived)
        .await?;
    let p = page(items, limit, |e| e.name.clone());
    Ok(Json(ListResponse {
        data: p.data.into_iter().map(|e| out(e, q.with_content)).collect(),
        iterator: p.iterator,
        prev_iterator: p.prev_iterator,
        done: p.done,
    }))
}

/// `POST /event-type`: 201; an archived type of that name is brought back and replaced;
/// a live one is a 409.
pub async fn create(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    SvixJson(body): SvixJson<EventTypeIn>,
) -> SvixResult<(StatusCode, Json<EventTypeOut>)> {
    caller.require(Scope::Admin)?;
    let name = body
        .name
        .clone()
        .ok_or_else(|| SvixError::body_field("name", "field required"))?;
    check_name(&name)?;
    let existing = state.store.get_event_type(&name).await?;
    if existing.as_ref().is_some_and(|e| !e.archived) {
        return Err(SvixError::Http {
            status: StatusCode::CONFLICT,
            code: "event_type_exists",
            detail: "An event_type with this name already exists".into(),
        });
    }
    let rec = record(name, body, None)?;
    state
        .store
        .put_event_type(rec.clone(), &caller.actor())
        .await?;
    Ok((StatusCode::CREATED, Json(out(rec, true))))
}

pub async fn get(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    Path(name): Path<String>,
) -> SvixResult<Json<EventTypeOut>> {
    caller.require_scope(Scope::Read)?;
    let e = state
        .store
        .get_event_type(&name)
        .await?
        .ok_or_else(|| SvixError::not_found("Event type"))?;
    Ok(Json(out(e, true)))
}

/// `PUT /event-type/{name}`: replaces (200) or creates (201).
pub async fn put(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    Path(name): Path<String>,
    SvixJson(body): SvixJson<EventTypeIn>,
) -> SvixResult<Response> {
    caller.require(Scope::Admin)?;
    check_name(&name)?;
    let existing = state.store.get_event_type(&name).await?;
    let rec = record(name, body, existing.as_ref().map(|e| e.created_at))?;
    let created = state
        .store
        .put_event_type(rec.clone(), &caller.actor())
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(out(rec, true))).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventTypePatch {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    archived: Option<bool>,
    #[serde(default)]
    deprecated: Option<bool>,
    #[serde(default, with = "serde_with_null")]
    schemas: Option<Option<Value>>,
    #[serde(default, with = "serde_with_null")]
    feature_flag: Option<Option<String>>,
    #[serde(default, with = "serde_with_null")]
    group_name: Option<Option<String>>,
}

pub async fn patch(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    Path(name): Path<String>,
    SvixJson(p): SvixJson<EventTypePatch>,
) -> SvixResult<Json<EventTypeOut>> {
    caller.require(Scope::Admin)?;
    let e = state
        .store
        .get_event_type(&name)
        .await?
        .ok_or_else(|| SvixError::not_found("Event type"))?;
    let current_schemas = e
        .schemas
        .as_deref()
        .and_then(|s| serde_json::from_str::<Value>(s).ok());
    let body = EventTypeIn {
        name: None,
        description: Some(p.description.unwrap_or(e.description)),
        archived: p.archived.unwrap_or(e.archived),
        deprecated: p.deprecated.unwrap_or(e.deprecated),
        schemas: p.schemas.unwrap_or(current_schemas),
        feature_flag: p.feature_flag.unwrap_or(e.feature_flag),
        group_name: p.group_name.unwrap_or(e.group_name),
    };
    let rec = record(name, body, Some(e.created_at))?;
    state
        .store
        .put_event_type(rec.clone(), &caller.actor())
        .await?;
    Ok(Json(out(rec, true)))
}

#[derive(Deserialize)]
pub struct DeleteQuery {
    #[serde(default)]
    expunge: bool,
}

/// `DELETE /event-type/{name}`: archives it (`?expunge=true` deletes it).
pub async fn delete(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    Path(name): Path<String>,
    uri: Uri,
) -> SvixResult<StatusCode> {
    caller.require(Scope::Admin)?;
    let q: DeleteQuery = query(&uri)?;
    let now = herald_core::clock::now_ms();
    if state
        .store
        .delete_event_type(&name, q.expunge, &caller.actor(), now)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(SvixError::not_found("Event type"))
    }
}
