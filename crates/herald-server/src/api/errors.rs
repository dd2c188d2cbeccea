//! `POST /errors` and the error groups: list, read, resolve, unresolve.

use super::extract::{ApiJson, parse_query};
use super::problem::{ApiError, ApiResult, Problem};
use super::views::{Page, limit};
use crate::alerts::{self, Reported};
use crate::auth::{Caller, Scope};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use herald_core::clock::{now_ms, rfc3339};
use herald_core::error_report::{AlertReason, ErrorReport, GroupStatus};
use herald_core::ids::ErrorGroupId;
use herald_store::{ErrorGroupQuery, ErrorGroupRecord};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

/// Report an error.
///
/// Groups the report (by `fingerprint`, else exception type + innermost in-app frame, else
/// message) and alerts — an `error.reported` message routed like any other — when the group
/// is new, regressed (resolved, then seen again) or spiking, at most once per group per
/// window; otherwise the report is folded into the group's count.
#[utoipa::path(post, path = "/api/v1/errors", tag = "errors", request_body = ErrorReport,
    responses((status = 202, body = Reported), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 413, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<ErrorReport>,
) -> ApiResult<(StatusCode, Json<Reported>)> {
    caller.require(Scope::Send)?;
    let r = alerts::report(&state, input, &caller.actor()).await?;
    Ok((StatusCode::ACCEPTED, Json(r)))
}

/// An error group.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorGroupView {
    pub id: String,
    pub service: String,
    pub title: String,
    pub culprit: Option<String>,
    /// The grouping parts, readable.
    pub fingerprint: String,
    pub level: String,
    pub environment: Option<String>,
    pub status: GroupStatus,
    /// Reports ever.
    pub count: i64,
    pub first_seen: String,
    pub last_seen: String,
    pub last_alert_at: Option<String>,
    /// Reports since the last alert that did not alert.
    pub folded: i64,
    /// An alert held back by the window, sent with the next report after it.
    pub pending_alert: Option<AlertReason>,
    /// Reports in the current window.
    pub window_count: i64,
    pub resolved_at: Option<String>,
    /// The latest alert message.
    pub last_message_id: Option<String>,
    /// The latest report (single-group view only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub last_event: Option<Value>,
}

impl ErrorGroupView {
    fn new(g: ErrorGroupRecord, with_event: bool) -> Self {
        let s = &g.state;
        ErrorGroupView {
            status: s.status,
            count: s.count,
            first_seen: rfc3339(s.first_seen),
            last_seen: rfc3339(s.last_seen),
            last_alert_at: s.last_alert_at.map(rfc3339),
            folded: s.folded,
            pending_alert: s.pending,
            window_count: s.window_count,
            last_event: with_event
                .then(|| serde_json::from_str(&g.last_event).unwrap_or(Value::Null)),
            id: g.id,
            service: g.service,
            title: g.title,
            culprit: g.culprit,
            fingerprint: g.fingerprint,
            level: g.level,
            environment: g.environment,
            resolved_at: g.resolved_at.map(rfc3339),
            last_message_id: g.last_message_id,
        }
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct GroupParams {
    pub status: Option<GroupStatus>,
    pub service: Option<String>,
    /// 1–1000, default 50.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Error groups, newest group first.
#[utoipa::path(get, path = "/api/v1/error-groups", tag = "errors", params(GroupParams),
    responses((status = 200, body = Page<ErrorGroupView>), (status = 422, body = Problem)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
) -> ApiResult<Json<Page<ErrorGroupView>>> {
    caller.require(Scope::Read)?;
    let p: GroupParams = parse_query(&uri)?;
    let limit = limit(p.limit);
    let rows = state
        .store
        .list_error_groups(&ErrorGroupQuery {
            status: p.status,
            service: p.service,
            before: p.cursor,
            limit,
        })
        .await?;
    Ok(Json(Page::new(
        rows.into_iter()
            .map(|g| ErrorGroupView::new(g, false))
            .collect(),
        limit,
        |g| g.id.clone(),
    )))
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("no error group {id:?}"))
}

/// One error group with its latest report.
#[utoipa::path(get, path = "/api/v1/error-groups/{id}", tag = "errors", params(("id" = String, Path)),
    responses((status = 200, body = ErrorGroupView), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ErrorGroupView>> {
    caller.require(Scope::Read)?;
    let Some(group) = ErrorGroupId::parse(&id) else {
        return Err(not_found(&id));
    };
    let g = state
        .store
        .get_error_group(&group)
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(ErrorGroupView::new(g, true)))
}

async fn set_status(
    state: &AppState,
    caller: &Caller,
    id: &str,
    status: GroupStatus,
) -> ApiResult<Json<ErrorGroupView>> {
    caller.require(Scope::Send)?;
    let Some(group) = ErrorGroupId::parse(id) else {
        return Err(not_found(id));
    };
    let g = state
        .store
        .set_error_group_status(&group, status, &caller.actor(), now_ms())
        .await?
        .ok_or_else(|| not_found(id))?;
    Ok(Json(ErrorGroupView::new(g, false)))
}

/// Resolve a group: its next report is a regression and alerts.
#[utoipa::path(post, path = "/api/v1/error-groups/{id}/resolve", tag = "errors", params(("id" = String, Path)),
    responses((status = 200, body = ErrorGroupView), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn resolve(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ErrorGroupView>> {
    set_status(&state, &caller, &id, GroupStatus::Resolved).await
}

/// Reopen a resolved group (without an alert).
#[utoipa::path(post, path = "/api/v1/error-groups/{id}/unresolve", tag = "errors", params(("id" = String, Path)),
    responses((status = 200, body = ErrorGroupView), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn unresolve(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ErrorGroupView>> {
    set_status(&state, &caller, &id, GroupStatus::Unresolved).await
}
