//! `GET /deliveries`, `GET /deliveries/{id}`.

use super::extract::parse_query;
use super::problem::{ApiError, ApiResult, Problem};
use super::views::{AttemptView, DeliveryView, Page, limit};
use crate::auth::{Caller, Scope};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::Uri;
use herald_core::clock::now_ms;
use herald_core::delivery::DeliveryStatus;
use herald_core::ids::DeliveryId;
use herald_store::DeliveryQuery;
use serde::Deserialize;
use utoipa::IntoParams;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeliveryParams {
    pub destination: Option<String>,
    /// pending, in_flight, delivered, dead, failed_over, discarded
    pub status: Option<String>,
    pub message_id: Option<String>,
    /// Deliveries of the message accepted with this idempotency key.
    pub idempotency_key: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// List deliveries, newest first.
#[utoipa::path(get, path = "/api/v1/deliveries", tag = "deliveries", params(DeliveryParams),
    responses((status = 200, body = Page<DeliveryView>), (status = 422, body = Problem)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
) -> ApiResult<Json<Page<DeliveryView>>> {
    caller.require(Scope::Read)?;
    let p: DeliveryParams = parse_query(&uri)?;
    let status = match p.status.as_deref() {
        None => None,
        Some(s) => Some(
            DeliveryStatus::parse(s)
                .ok_or_else(|| ApiError::field("status", format!("unknown status {s:?}")))?,
        ),
    };
    let limit = limit(p.limit);
    let rows = state
        .store
        .list_deliveries(&DeliveryQuery {
            destination: p.destination,
            status,
            message_id: p.message_id,
            idempotency_key: p.idempotency_key,
            before: p.cursor,
            limit,
        })
        .await?;
    let now = now_ms();
    Ok(Json(Page::new(
        rows.into_iter()
            .map(|d| DeliveryView::new(d, &state.destinations, now))
            .collect(),
        limit,
        |d| d.id.clone(),
    )))
}

/// One delivery with its attempts.
#[utoipa::path(get, path = "/api/v1/deliveries/{id}", tag = "deliveries", params(("id" = String, Path)),
    responses((status = 200, body = DeliveryView), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<DeliveryView>> {
    caller.require(Scope::Read)?;
    let not_found = || ApiError::NotFound(format!("no delivery {id:?}"));
    let Some(id) = DeliveryId::parse(&id) else {
        return Err(not_found());
    };
    let d = state.store.get_delivery(&id).await?.ok_or_else(not_found)?;
    let attempts = state.store.list_attempts(&id).await?;
    let mut view = DeliveryView::new(d, &state.destinations, now_ms());
    let admin = caller.can(Scope::Admin);
    view.attempts = Some(
        attempts
            .into_iter()
            .map(|a| {
                let mut v = AttemptView::from(a);
                if !admin {
                    v.exchange = None;
                }
                v
            })
            .collect(),
    );
    Ok(Json(view))
}
