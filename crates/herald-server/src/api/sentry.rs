//! Sentry-compatible ingest: `POST /api/{project_id}/envelope/` and `/store/`, so an app
//! only sets `SENTRY_DSN=http://<herald token>@<herald host:port>/<project_id>`.
//!
//! The key is read from `X-Sentry-Auth: Sentry sentry_key=<token>, …`, `?sentry_key=`,
//! `Authorization: Bearer <token>` or the envelope header's `dsn`; it is a Herald API token
//! with the `send` scope (wrong → 401, which SDKs take as "drop the event"). Bodies may be
//! gzip, deflate or br (`Content-Encoding`); the compressed body is capped by
//! `max_body_bytes`, the decompressed one by `max_decompressed_bytes`. Each `event` item
//! becomes an error report (`<project_id>` names the service unless the event has a
//! `service` tag); other items (`client_report`, `session`, `transaction`, attachments…) are
//! skipped. The answer is Sentry's: 200 `{"id": "<event_id>"}`.

use super::extract::read_json_body;
use super::problem::{ApiError, ApiResult, Problem};
use crate::alerts;
use crate::auth::{Caller, Scope};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, Uri, header};
use herald_core::error_report::ErrorReport;
use herald_core::sentry::{auth_header_key, dsn_key, event_to_report, parse_envelope};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// Sentry's answer to an accepted envelope or event.
#[derive(Debug, Serialize, ToSchema)]
pub struct SentryAccepted {
    /// The event id (absent for envelopes without one, e.g. sessions only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

const MAX_PROJECT: usize = 128;

fn check_project(project: &str) -> ApiResult<()> {
    if project.is_empty()
        || project.len() > MAX_PROJECT
        || !project
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        return Err(ApiError::BadRequest(format!(
            "the project id must be 1–{MAX_PROJECT} characters of [A-Za-z0-9_.-]"
        )));
    }
    Ok(())
}

/// The key from the headers or the query string, if any.
fn request_key(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(k) = header("x-sentry-auth").and_then(auth_header_key) {
        return Some(k);
    }
    if let Some(auth) = header(header::AUTHORIZATION.as_str()) {
        if let Some(t) = auth
            .strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("bearer "))
        {
            return Some(t.trim().to_string());
        }
        if let Some(k) = auth_header_key(auth) {
            return Some(k);
        }
    }
    uri.query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "sentry_key")
            .map(|(_, v)| v.into_owned())
    })
}

async fn authenticate(state: &AppState, key: Option<String>) -> ApiResult<Caller> {
    let key = key.ok_or_else(|| {
        ApiError::Unauthorized(
            "no Sentry key: give X-Sentry-Auth (sentry_key=<token>), ?sentry_key= or a DSN".into(),
        )
    })?;
    let caller = state
        .auth
        .authenticate(state.store.as_ref(), key.trim())
        .await?;
    caller.require(Scope::Send)?;
    Ok(caller)
}

/// Maps and validates one event; invalid events are a 400 (Sentry's convention).
fn report_of(payload: &[u8], project: &str) -> ApiResult<ErrorReport> {
    let v: Value = serde_json::from_slice(payload)
        .map_err(|e| ApiError::BadRequest(format!("the event is not JSON: {e}")))?;
    let report = event_to_report(&v, project)
        .ok_or_else(|| ApiError::BadRequest("an event must be a JSON object".into()))?;
    report
        .validate()
        .map_err(|e| ApiError::BadRequest(format!("the event cannot be reported: {e}")))
}

/// Records every report (all were validated first, so a bad one stores none).
async fn record_all(state: &AppState, reports: Vec<ErrorReport>, caller: &Caller) -> ApiResult<()> {
    for r in reports {
        alerts::record(state, r, &caller.actor()).await?;
    }
    Ok(())
}

/// Sentry envelope ingest.
///
/// Each `event` item becomes an error report (see `POST /api/v1/errors`); other item types
/// are skipped. Authenticated by a `send` token given as `X-Sentry-Auth: Sentry
/// sentry_key=<token>`, `?sentry_key=`, a bearer token or the envelope header's `dsn`.
#[utoipa::path(post, path = "/api/{project_id}/envelope/", tag = "ingest",
    params(("project_id" = String, Path, description = "names the service unless the event has a `service` tag")),
    request_body(content = String, content_type = "text/plain",
        description = "a Sentry envelope (SDKs send `application/x-sentry-envelope`; the content type is not checked)"),
    responses((status = 200, body = SentryAccepted), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 413, body = Problem), (status = 415, body = Problem)),
    security(("bearer" = [])))]
pub async fn envelope(
    State(state): State<AppState>,
    Path(project): Path<String>,
    req: Request,
) -> ApiResult<Json<SentryAccepted>> {
    check_project(&project)?;
    let key = request_key(req.headers(), req.uri());
    let body = read_json_body(req, &state).await?;
    let parsed = parse_envelope(&body);
    let key = key.or_else(|| parsed.as_ref().ok().and_then(|e| e.dsn()).and_then(dsn_key));
    let caller = authenticate(&state, key).await?;
    let env = parsed.map_err(|e| ApiError::BadRequest(format!("invalid envelope: {e}")))?;
    let reports = env
        .events()
        .map(|p| report_of(p, &project))
        .collect::<ApiResult<Vec<_>>>()?;
    let id = env
        .event_id()
        .map(str::to_string)
        .or_else(|| reports.iter().find_map(|r| r.event_id.clone()));
    record_all(&state, reports, &caller).await?;
    Ok(Json(SentryAccepted { id }))
}

/// Sentry store ingest (one event as JSON), for older SDKs.
#[utoipa::path(post, path = "/api/{project_id}/store/", tag = "ingest",
    params(("project_id" = String, Path, description = "names the service unless the event has a `service` tag")),
    request_body(content = Object, content_type = "application/json"),
    responses((status = 200, body = SentryAccepted), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 413, body = Problem), (status = 415, body = Problem)),
    security(("bearer" = [])))]
pub async fn store(
    State(state): State<AppState>,
    Path(project): Path<String>,
    req: Request,
) -> ApiResult<Json<SentryAccepted>> {
    check_project(&project)?;
    let key = request_key(req.headers(), req.uri());
    let caller = authenticate(&state, key).await?;
    let body = read_json_body(req, &state).await?;
    let report = report_of(&body, &project)?;
    let id = Some(
        report
            .event_id
            .clone()
            .unwrap_or_else(herald_core::sentry::new_event_id),
    );
    record_all(&state, vec![report], &caller).await?;
    Ok(Json(SentryAccepted { id }))
}
