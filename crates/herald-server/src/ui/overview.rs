//! The overview: what came in and what went out over the last hour, and where dead letters
//! pile up.

use super::session::UiUser;
use super::{UiResult, render};
use crate::state::AppState;
use axum::extract::State;
use herald_core::clock::now_ms;
use minijinja::context;

const HOUR_MS: i64 = 3_600_000;

/// `12.5/min` from a count over the last hour.
fn per_minute(n: u64) -> String {
    let r = n as f64 / 60.0;
    if r >= 10.0 {
        format!("{r:.0}/min")
    } else {
        format!("{r:.1}/min")
    }
}

pub async fn page(State(state): State<AppState>, user: UiUser) -> UiResult {
    let now = now_ms();
    let since = now - HOUR_MS;
    let accepted = state.store.count_messages_since(since).await?;
    let (mut attempts, mut delivered, mut dead_total) = (0u64, 0u64, 0u64);
    let mut rows = Vec::new();
    for e in state.destinations.of_tenant(None) {
        let stats = state.store.attempt_stats(&e.name, since).await?;
        let counts = state.store.queue_counts(&e.name).await?;
        attempts += stats.total;
        delivered += stats.delivered;
        dead_total += counts.dead;
        let breaker = e.breaker.lock().expect("breaker lock").name();
        let health = if !e.enabled() {
            "disabled"
        } else if breaker == "open" {
            "circuit open"
        } else if e.is_paused(now) {
            "paused"
        } else if stats.total > 0 && stats.delivered * 2 < stats.total {
            "failing"
        } else {
            "healthy"
        };
        rows.push(context! {
            name => e.name.clone(),
            kind => e.spec.kind.name(),
            health,
            pending => counts.pending,
            in_flight => counts.in_flight,
            dead => counts.dead,
            attempts => stats.total,
            failed => stats.total - stats.delivered,
            success => (stats.total > 0).then(|| format!("{:.1}%", stats.delivered as f64 * 100.0 / stats.total as f64)),
        });
    }
    let failed = attempts - delivered;
    Ok(render(
        &user,
        "/ui",
        "overview.html",
        context! {
            accepted, accepted_rate => per_minute(accepted),
            delivered, delivered_rate => per_minute(delivered),
            failed, failed_rate => per_minute(failed),
            success => (attempts > 0).then(|| format!("{:.1}%", delivered as f64 * 100.0 / attempts as f64)),
            dead_total,
            rows,
            updated => super::when(now),
        },
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn rates_are_per_minute() {
        assert_eq!(super::per_minute(0), "0.0/min");
        assert_eq!(super::per_minute(90), "1.5/min");
        assert_eq!(super::per_minute(6000), "100/min");
    }
}
