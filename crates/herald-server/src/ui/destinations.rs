//! Destinations: health, circuit, pause, rate limit and the last error of each; one
//! destination's settings (secrets masked), with a test send and re-enabling for admins.

use super::session::{self, UiUser};
use super::{UiError, UiResult, ago, render, when};
use crate::destinations::{self as domain, DestinationEntry, Exposure, health_of};
use crate::state::AppState;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect};
use herald_core::clock::{now_ms, parse_rfc3339};
use herald_core::rate_limit::RateLimitSpec;
use minijinja::{Value, context};
use serde::Deserialize;
use std::sync::Arc;

/// How far back the "last error" column looks.
const LAST_ERROR_WINDOW_MS: i64 = 24 * 3_600_000;

fn rate_limit_text(spec: &RateLimitSpec) -> String {
    match spec {
        RateLimitSpec::Rate(r) => r.clone(),
        RateLimitSpec::Full { rate, burst: None } => rate.clone(),
        RateLimitSpec::Full {
            rate,
            burst: Some(b),
        } => format!("{rate}, burst {b}"),
    }
}

/// An RFC 3339 time from a view, re-shown in the dashboard's format with a relative hint.
fn shown(t: Option<&str>, now: i64) -> Option<String> {
    let ms = parse_rfc3339(t?)?;
    Some(format!("{} ({})", when(ms), ago(ms, now)))
}

pub async fn page(State(state): State<AppState>, user: UiUser) -> UiResult {
    let now = now_ms();
    let mut rows = Vec::new();
    for e in state.destinations.of_tenant(None) {
        let h = health_of(&state, &e).await?;
        let last = state
            .store
            .last_failure(&e.name, now - LAST_ERROR_WINDOW_MS)
            .await?;
        rows.push(context! {
            name => h.name,
            kind => e.spec.kind.name(),
            enabled => h.enabled,
            disabled_reason => h.disabled_reason,
            circuit => h.circuit.state,
            failures => h.circuit.consecutive_failures,
            next_probe => shown(h.circuit.next_probe_at.as_deref(), now),
            paused_until => shown(h.paused_until.as_deref(), now),
            rate_limit => e.spec.rate_limit.as_ref().map(rate_limit_text),
            ordered => e.spec.ordered,
            fallback => e.spec.fallback.as_ref().map(|f| f.destination.clone()),
            pending => h.pending,
            in_flight => h.in_flight,
            dead => h.dead,
            attempts => h.attempts_1h,
            success => h.success_rate_1h.map(|r| format!("{:.1}%", r * 100.0)),
            last_error_at => last.as_ref().map(|l| format!("{} ({})", when(l.at), ago(l.at, now))),
            last_error_code => last.as_ref().and_then(|l| l.status_code),
            last_error => last.and_then(|l| l.error),
        });
    }
    Ok(render(
        &user,
        "/ui/destinations",
        "destinations.html",
        context! { rows },
    ))
}

/// Checks a state-changing form (origin, CSRF token, admin scope) and finds its
/// destination.
fn admin_action(
    state: &AppState,
    user: &UiUser,
    headers: &HeaderMap,
    f: &ActionForm,
    name: &str,
) -> Result<Arc<DestinationEntry>, UiError> {
    session::check_origin(headers)?;
    user.check_action(&f.csrf)?;
    find(state, name)
}

/// Back to the destination's page. `find` passed, so the name is a valid destination name
/// (`[a-z0-9_-]`): safe in a path.
fn back_to(name: &str) -> UiResult {
    Ok(Redirect::to(&format!("/ui/destinations/{name}")).into_response())
}

fn find(state: &AppState, name: &str) -> Result<Arc<DestinationEntry>, UiError> {
    state
        .destinations
        .get(name)
        .ok_or_else(|| UiError::new(StatusCode::NOT_FOUND, format!("No destination {name:?}.")))
}

/// One destination: its state and its settings as the API shows them to this session's
/// token (admins: inline secrets masked; read tokens: no header value, URL path or query).
async fn detail_page(
    state: &AppState,
    user: &UiUser,
    e: &DestinationEntry,
    tested: Option<Value>,
    edit: Option<(String, String)>,
) -> UiResult {
    let now = now_ms();
    let h = health_of(state, e).await?;
    let spec = e.public_spec(Exposure::for_caller(&user.caller));
    let settings = serde_json::to_string_pretty(&spec).unwrap_or_default();
    let (edit_text, edit_error) = edit.unzip();
    let status = if edit_error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let mut resp = render(
        user,
        "/ui/destinations",
        "destination.html",
        context! {
            name => e.name.clone(),
            kind => e.spec.kind.name(),
            enabled => h.enabled,
            disabled_reason => h.disabled_reason,
            circuit => h.circuit.state,
            next_probe => shown(h.circuit.next_probe_at.as_deref(), now),
            paused_until => shown(h.paused_until.as_deref(), now),
            pending => h.pending,
            in_flight => h.in_flight,
            dead => h.dead,
            edit_text => edit_text.unwrap_or_else(|| settings.clone()),
            edit_error,
            settings,
            tested,
        },
    );
    *resp.status_mut() = status;
    Ok(resp)
}

pub async fn detail(
    State(state): State<AppState>,
    user: UiUser,
    Path(name): Path<String>,
) -> UiResult {
    let e = find(&state, &name)?;
    detail_page(&state, &user, &e, None, None).await
}

#[derive(Debug, Deserialize)]
pub struct ActionForm {
    /// Missing counts as wrong (403), not as a malformed form.
    #[serde(default)]
    csrf: String,
    /// `pause`: how long (`30m`, `2h`, up to `7d`).
    #[serde(default, rename = "for")]
    duration: String,
    /// `disable`: why (optional).
    #[serde(default)]
    reason: String,
    /// `edit`: the settings as JSON, edited from the masked copy shown.
    #[serde(default)]
    settings: String,
}

/// Saves settings edited on the page (admins) through the API's validation and audit; a
/// value left masked keeps the stored secret. A refusal shows the page again with the
/// text as submitted and why (422).
pub async fn edit(
    State(state): State<AppState>,
    user: UiUser,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(f): Form<ActionForm>,
) -> UiResult {
    let e = admin_action(&state, &user, &headers, &f, &name)?;
    let refuse = |why: String| Some((f.settings.clone(), why));
    let parsed: Result<serde_json::Value, _> = serde_json::from_str(&f.settings);
    let spec = match parsed {
        Err(err) => {
            return detail_page(&state, &user, &e, None, refuse(format!("Not JSON: {err}"))).await;
        }
        Ok(v) => serde_json::from_value::<herald_core::destination::DestinationSpec>(
            domain::unmask_edit(&e.spec, v),
        ),
    };
    let spec = match spec {
        Ok(s) => s,
        Err(err) => return detail_page(&state, &user, &e, None, refuse(err.to_string())).await,
    };
    match domain::put(&state, &name, spec, &user.caller.actor()).await {
        Ok(_) => back_to(&name),
        Err(domain::DestinationError::Invalid(v)) => {
            detail_page(&state, &user, &e, None, refuse(v.summary())).await
        }
        Err(other) => Err(other.into()),
    }
}

/// Sends a test message now (admins), audited like the API's, and shows what came back.
pub async fn test(
    State(state): State<AppState>,
    user: UiUser,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(f): Form<ActionForm>,
) -> UiResult {
    let e = admin_action(&state, &user, &headers, &f, &name)?;
    let sent = domain::send_test(&state, &e, &user.caller.actor()).await?;
    let tested = context! {
        message_id => sent.message_id.to_string(),
        outcome => sent.report.verdict.outcome().as_str(),
        status_code => sent.report.status_code,
        error => sent.report.error,
        excerpt => sent.report.response_excerpt,
        duration_ms => sent.duration_ms,
    };
    detail_page(&state, &user, &e, Some(tested), None).await
}

/// Pauses (admins) for the time asked, with the API's validation and audit.
pub async fn pause(
    State(state): State<AppState>,
    user: UiUser,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(f): Form<ActionForm>,
) -> UiResult {
    admin_action(&state, &user, &headers, &f, &name)?;
    let d = herald_core::duration::parse_duration(f.duration.trim())
        .map_err(|e| UiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("Pause for: {e}")))?;
    domain::hold(
        &state,
        &name,
        domain::HoldRequest::Pause(d),
        &user.caller.actor(),
    )
    .await?;
    back_to(&name)
}

/// Disables (admins), with an optional reason, like the API's `disable`.
pub async fn disable(
    State(state): State<AppState>,
    user: UiUser,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(f): Form<ActionForm>,
) -> UiResult {
    admin_action(&state, &user, &headers, &f, &name)?;
    let request = domain::HoldRequest::Disable(Some(f.reason.as_str()));
    domain::hold(&state, &name, request, &user.caller.actor()).await?;
    back_to(&name)
}

/// Re-enables a destination (admins): clears the pause, the breaker and the failure streak.
pub async fn enable(
    State(state): State<AppState>,
    user: UiUser,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(f): Form<ActionForm>,
) -> UiResult {
    admin_action(&state, &user, &headers, &f, &name)?;
    domain::enable(&state, &name, &user.caller.actor()).await?;
    back_to(&name)
}
