//! The dead-letter queue: list, replay one or all, discard.

use super::extract::{parse_json, parse_query};
use super::problem::{ApiError, ApiResult, Problem};
use super::views::{DeadItemView, Page, limit};
use crate::auth::{Caller, Scope};
use crate::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use herald_core::clock::{now_ms, parse_rfc3339};
use herald_store::{DlqChange, DlqQuery, ReplayFilter};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DlqParams {
    /// A destination name.
    pub queue: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Dead deliveries, newest first.
#[utoipa::path(get, path = "/api/v1/dlq", tag = "dlq", params(DlqParams),
    responses((status = 200, body = Page<DeadItemView>), (status = 422, body = Problem)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
) -> ApiResult<Json<Page<DeadItemView>>> {
    caller.require(Scope::Read)?;
    let p: DlqParams = parse_query(&uri)?;
    let limit = limit(p.limit);
    let rows = state
        .store
        .list_dead(&DlqQuery {
            queue: p.queue,
            before: p.cursor,
            limit,
        })
        .await?;
    Ok(Json(Page::new(
        rows.into_iter().map(DeadItemView::from).collect(),
        limit,
        |d| d.id.clone(),
    )))
}

fn change_result(change: DlqChange, queue: &str, id: &str) -> ApiResult<()> {
    match change {
        DlqChange::Done => Ok(()),
        DlqChange::NotFound => Err(ApiError::NotFound(format!(
            "no delivery {id:?} in queue {queue:?}"
        ))),
        DlqChange::NotDead => Err(ApiError::Conflict(format!(
            "delivery {id:?} is not dead-lettered"
        ))),
    }
}

/// Replay one dead delivery: back to pending with a fresh attempt budget.
#[utoipa::path(post, path = "/api/v1/dlq/{queue}/replay/{item_id}", tag = "dlq", params(("queue" = String, Path), ("item_id" = String, Path)),
    responses((status = 202, body = Object), (status = 404, body = Problem), (status = 409, body = Problem)), security(("bearer" = [])))]
pub async fn replay_one(
    State(state): State<AppState>,
    caller: Caller,
    Path((queue, id)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require(Scope::Admin)?;
    let change = state
        .store
        .replay_dead(&queue, &id, &caller.actor(), now_ms())
        .await?;
    change_result(change, &queue, &id)?;
    state.dispatch.dispatcher.wake();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "status": "pending"})),
    ))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayAllInput {
    pub event_type: Option<String>,
    /// RFC 3339: only deliveries dead since then.
    pub since: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Replayed {
    pub replayed: u64,
}

/// Replay every dead delivery of a queue (optionally filtered).
#[utoipa::path(post, path = "/api/v1/dlq/{queue}/replay", tag = "dlq", params(("queue" = String, Path)), request_body(content = Option<ReplayAllInput>),
    responses((status = 202, body = Replayed), (status = 404, body = Problem), (status = 422, body = Problem)), security(("bearer" = [])))]
pub async fn replay_all(
    State(state): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Replayed>)> {
    caller.require(Scope::Admin)?;
    let input: ReplayAllInput = if body.iter().all(u8::is_ascii_whitespace) {
        ReplayAllInput::default()
    } else {
        parse_json(&body)?
    };
    let since = match input.since.as_deref() {
        None => None,
        Some(s) => Some(
            parse_rfc3339(s)
                .ok_or_else(|| ApiError::field("since", "must be an RFC 3339 timestamp"))?,
        ),
    };
    if state.destinations.get(&queue).is_none() {
        return Err(ApiError::NotFound(format!("no queue {queue:?}")));
    }
    let n = state
        .store
        .replay_all_dead(
            &queue,
            &ReplayFilter {
                event_type: input.event_type,
                since,
            },
            &caller.actor(),
            now_ms(),
        )
        .await?;
    state.dispatch.dispatcher.wake();
    Ok((StatusCode::ACCEPTED, Json(Replayed { replayed: n })))
}

/// Discard one dead delivery.
#[utoipa::path(delete, path = "/api/v1/dlq/{queue}/{item_id}", tag = "dlq", params(("queue" = String, Path), ("item_id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)), security(("bearer" = [])))]
pub async fn discard(
    State(state): State<AppState>,
    caller: Caller,
    Path((queue, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require(Scope::Admin)?;
    let change = state
        .store
        .discard_dead(&queue, &id, &caller.actor(), now_ms())
        .await?;
    change_result(change, &queue, &id)?;
    Ok(StatusCode::NO_CONTENT)
}
