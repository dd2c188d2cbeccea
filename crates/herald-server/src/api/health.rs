//! Liveness and readiness.

use super::problem::{ApiError, ApiResult};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct Status {
    pub status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Status)))]
pub async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// The store answers and its migrations are applied.
#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, body = Status), (status = 503, body = super::problem::Problem)))]
pub async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Status>> {
    if let Err(e) = state.store.ping().await {
        tracing::warn!(error = %e, "readiness check failed");
        return Err(ApiError::Store(herald_store::StoreError::Closed));
    }
    Ok(Json(Status { status: "ready" }))
}
