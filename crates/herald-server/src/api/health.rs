//! Liveness, readiness and the Prometheus scrape.

use super::problem::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct Status {
    pub status: &'static str,
}

/// The node is ready.
#[derive(Serialize, ToSchema)]
pub struct Ready {
    pub ready: bool,
    pub status: &'static str,
}

/// Not ready: a problem document (`urn:herald:problem:unavailable`, or
/// `insufficient-storage` for a full disk) that also says `ready: false` and why.
#[derive(Serialize, ToSchema)]
pub struct NotReady {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    pub ready: bool,
    /// What is wrong (e.g. "disk full: …", "database unreachable").
    pub reason: String,
    /// `unavailable`, `insufficient-storage`, `damaged` or `closed`.
    pub fault: &'static str,
}

/// The process is up (liveness: it says nothing about the store).
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Status)))]
pub async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// The node can take work: the store answers reads, its writer commits (a commit succeeded
/// lately or a probe commit does now) and the disk is not full. 503 with the reason
/// otherwise; it turns 200 again by itself as soon as a commit succeeds.
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, body = Ready),
    (status = 503, description = "Not ready: the store is unreachable, cannot commit, or its disk is full", body = NotReady, content_type = "application/problem+json"),
))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let Err(e) = state.store.ping().await else {
        return Json(Ready {
            ready: true,
            status: "ready",
        })
        .into_response();
    };
    use herald_store::StoreError as E;
    let fault = match &e {
        E::Full(_) => "insufficient-storage",
        E::Damaged(_) | E::Corrupt(_) => "damaged",
        E::Closed => "closed",
        _ => "unavailable",
    };
    tracing::debug!(error = %e, "readiness check failed");
    // The kind of fault, not the database's own words: this route needs no token.
    let reason = match (&e, e.fault()) {
        (E::Full(detail), _) => format!("disk full: {detail}"),
        (E::Closed, _) => "the store is closed (shutting down)".to_string(),
        (E::CommitUnknown(_), _) => "database unreachable".to_string(),
        (_, Some(fault)) => fault.as_str().to_string(),
        (_, None) => "the store check failed; see the log".to_string(),
    };
    let slug = if fault == "insufficient-storage" {
        fault
    } else {
        "unavailable"
    };
    let body = NotReady {
        kind: format!("urn:herald:problem:{slug}"),
        title: "Not ready",
        status: 503,
        detail: format!("this node cannot take work: {reason}"),
        ready: false,
        reason,
        fault,
    };
    let mut resp = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// Every metric (`crate::telemetry`), behind `metrics_token` when one is set.
pub async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(expected) = &state.config.metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if given.is_empty() || !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
            return Err(ApiError::Unauthorized(
                "metrics need `Authorization: Bearer <metrics_token>`".into(),
            ));
        }
    }
    let mut resp = crate::telemetry::render(&state).await?.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(resp)
}
