//! `PUT/GET/DELETE /destinations/{name}`, `GET /destinations`, health and test sends.

use super::extract::{ApiJson, parse_query};
use super::problem::{ApiError, ApiResult, Problem};
use super::views::AttemptView;
use crate::auth::{Caller, Scope};
use crate::destinations::{self, DestinationEntry, DestinationHealth, Exposure, health_of};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use herald_core::clock::{now_ms, rfc3339};
use herald_core::destination::DestinationSpec;
use herald_store::NewAudit;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

/// A destination as shown: its settings (secrets masked) and its state.
#[derive(Serialize, ToSchema)]
pub struct DestinationView {
    #[serde(flatten)]
    pub spec: DestinationSpec,
    pub disabled_reason: Option<String>,
    pub paused_until: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Shown once, when Herald generated the webhook secret in this request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generated_secret: Option<String>,
    /// On a `PUT`: what will fail although the settings are valid, e.g. an address the SSRF
    /// guard blocks (`"url: 127.0.0.1 is a loopback address, which …"`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

fn view(e: &DestinationEntry, exposure: Exposure) -> DestinationView {
    DestinationView {
        spec: e.public_spec(exposure),
        disabled_reason: e.disabled_reason(),
        paused_until: e.paused_until().filter(|p| *p > now_ms()).map(rfc3339),
        created_at: rfc3339(e.created_at),
        updated_at: rfc3339(e.updated_at),
        generated_secret: None,
        warnings: Vec::new(),
    }
}

fn find(state: &AppState, name: &str) -> ApiResult<std::sync::Arc<DestinationEntry>> {
    state
        .destinations
        .get(name)
        .ok_or_else(|| ApiError::NotFound(format!("no destination {name:?}")))
}

/// Create or replace a destination (201 created, 200 replaced).
#[utoipa::path(put, path = "/api/v1/destinations/{name}", tag = "destinations", params(("name" = String, Path)),
    request_body = DestinationSpec,
    responses((status = 200, body = DestinationView), (status = 201, body = DestinationView), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn put(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(spec): ApiJson<DestinationSpec>,
) -> ApiResult<(StatusCode, Json<DestinationView>)> {
    caller.require(Scope::Admin)?;
    let out = destinations::put(&state, &name, spec, &caller.actor()).await?;
    let mut v = view(&out.entry, Exposure::Settings);
    v.generated_secret = out.generated_secret;
    v.warnings = out.warnings;
    Ok((
        if out.created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(v),
    ))
}

#[derive(Serialize, ToSchema)]
pub struct DestinationList {
    pub items: Vec<DestinationView>,
}

/// List destinations.
#[utoipa::path(get, path = "/api/v1/destinations", tag = "destinations", responses((status = 200, body = DestinationList)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<DestinationList>> {
    caller.require(Scope::Read)?;
    let exposure = Exposure::for_caller(&caller);
    Ok(Json(DestinationList {
        items: state
            .destinations
            .of_tenant(None)
            .iter()
            .map(|e| view(e, exposure))
            .collect(),
    }))
}

#[derive(Deserialize, IntoParams)]
pub struct RevealQuery {
    /// `true`: show the stored secrets themselves (admins only; audited).
    #[serde(default)]
    pub reveal: bool,
}

/// Read a destination: secrets masked (for `read` tokens also every header value and URL
/// path, query and user-info); `?reveal=true` shows an admin the stored secrets, audited.
#[utoipa::path(get, path = "/api/v1/destinations/{name}", tag = "destinations", params(("name" = String, Path), RevealQuery),
    responses((status = 200, body = DestinationView), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    uri: Uri,
) -> ApiResult<Json<DestinationView>> {
    caller.require(Scope::Read)?;
    let q: RevealQuery = parse_query(&uri)?;
    let e = find(&state, &name)?;
    if !q.reveal {
        return Ok(Json(view(&e, Exposure::for_caller(&caller))));
    }
    caller.require(Scope::Admin)?;
    state
        .store
        .append_audit(vec![NewAudit {
            at: now_ms(),
            actor: caller.actor(),
            action: "destination.revealed".into(),
            resource: name.clone(),
            detail: json!({"destination": name}),
        }])
        .await?;
    tracing::warn!(destination = %name, actor = %caller.actor(), "stored secrets revealed");
    Ok(Json(view(&e, Exposure::Secrets)))
}

/// Delete a destination; its unfinished deliveries are discarded.
#[utoipa::path(delete, path = "/api/v1/destinations/{name}", tag = "destinations", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Scope::Admin)?;
    let referrers = destinations::fallback_referrers(&state, &name);
    if !referrers.is_empty() {
        return Err(ApiError::Conflict(format!(
            "{name:?} is the fallback of {}; change those first",
            referrers.join(", ")
        )));
    }
    if destinations::delete(&state, &name, &caller.actor()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no destination {name:?}")))
    }
}

/// A destination's state: enabled, circuit, pause, queue and recent success rate.
#[utoipa::path(get, path = "/api/v1/destinations/{name}/health", tag = "destinations", params(("name" = String, Path)),
    responses((status = 200, body = DestinationHealth), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn health(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<DestinationHealth>> {
    caller.require(Scope::Read)?;
    let e = find(&state, &name)?;
    Ok(Json(health_of(&state, &e).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseInput {
    /// How long: `30s`, `10m`, `2h`, up to `7d`.
    #[serde(rename = "for")]
    pub duration: String,
}

/// Pause a destination by hand: nothing is attempted before the time it names (deliveries
/// wait, pending); `enable` ends it early. Audited as `destination.paused`.
#[utoipa::path(post, path = "/api/v1/destinations/{name}/pause", tag = "destinations", params(("name" = String, Path)),
    request_body = PauseInput,
    responses((status = 200, body = DestinationView), (status = 404, body = Problem), (status = 422, body = Problem)), security(("bearer" = [])))]
pub async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(input): ApiJson<PauseInput>,
) -> ApiResult<Json<DestinationView>> {
    caller.require(Scope::Admin)?;
    let d = herald_core::duration::parse_duration(&input.duration)
        .map_err(|e| ApiError::field("for", e))?;
    hold(&state, &caller, &name, destinations::HoldRequest::Pause(d)).await
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct DisableInput {
    /// Why (shown with the destination); at most 200 characters.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Disable a destination by hand: nothing is attempted until it is enabled again.
/// Audited as `destination.disabled`.
#[utoipa::path(post, path = "/api/v1/destinations/{name}/disable", tag = "destinations", params(("name" = String, Path)),
    request_body = DisableInput,
    responses((status = 200, body = DestinationView), (status = 404, body = Problem), (status = 422, body = Problem)), security(("bearer" = [])))]
pub async fn disable(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(input): ApiJson<DisableInput>,
) -> ApiResult<Json<DestinationView>> {
    caller.require(Scope::Admin)?;
    let request = destinations::HoldRequest::Disable(input.reason.as_deref());
    hold(&state, &caller, &name, request).await
}

async fn hold(
    state: &AppState,
    caller: &Caller,
    name: &str,
    request: destinations::HoldRequest<'_>,
) -> ApiResult<Json<DestinationView>> {
    if !destinations::hold(state, name, request, &caller.actor()).await? {
        return Err(ApiError::NotFound(format!("no destination {name:?}")));
    }
    let e = find(state, name)?;
    Ok(Json(view(&e, Exposure::Settings)))
}

/// Re-enable a destination (after it was disabled for 410, a vanished webhook or sustained
/// failure): clears the pause, the breaker and the failure streak.
#[utoipa::path(post, path = "/api/v1/destinations/{name}/enable", tag = "destinations", params(("name" = String, Path)),
    responses((status = 200, body = DestinationView), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn enable(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<DestinationView>> {
    caller.require(Scope::Admin)?;
    if !destinations::enable(&state, &name, &caller.actor()).await? {
        return Err(ApiError::NotFound(format!("no destination {name:?}")));
    }
    let e = find(&state, &name)?;
    Ok(Json(view(&e, Exposure::Settings)))
}

#[derive(Serialize, ToSchema)]
pub struct TestResult {
    pub destination: String,
    pub message_id: String,
    pub attempt: AttemptView,
}

/// Send a test message now (not queued, not retried) and return the attempt.
#[utoipa::path(post, path = "/api/v1/destinations/{name}/test", tag = "destinations", params(("name" = String, Path)),
    responses((status = 200, body = TestResult), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn test(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<TestResult>> {
    caller.require(Scope::Admin)?;
    let e = find(&state, &name)?;
    let sent = destinations::send_test(&state, &e, &caller.actor()).await?;
    let attempt = AttemptView {
        number: 1,
        started_at: rfc3339(sent.started_at),
        duration_ms: sent.duration_ms,
        outcome: sent.report.verdict.outcome(),
        status_code: sent.report.status_code,
        error_class: sent.report.error_class,
        error: sent.report.error,
        response_excerpt: sent.report.response_excerpt,
        exchange: sent.report.exchange.map(|x| *x),
    };
    Ok(Json(TestResult {
        destination: name,
        message_id: sent.message_id.into_string(),
        attempt,
    }))
}
