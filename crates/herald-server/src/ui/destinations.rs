//! Destinations: health, circuit, pause, rate limit and the last error of each.

use super::session::UiUser;
use super::{UiResult, ago, render, when};
use crate::destinations::health_of;
use crate::state::AppState;
use axum::extract::State;
use herald_core::clock::{now_ms, parse_rfc3339};
use herald_core::rate_limit::RateLimitSpec;
use minijinja::context;

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
    for e in state.destinations.all() {
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
