//! Prometheus metrics at `GET /metrics`. Names and labels are documented in
//! docs/operations.md; the only label with open values is `destination`, bounded by the
//! destinations an admin configures.

use crate::state::AppState;
use herald_core::breaker::Breaker;
use herald_store::StoreError;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// Latency buckets (seconds) for attempts and commits.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// The process-wide recorder (installed once, shared by every server in the process).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("herald_store_commit_jobs".into()),
                    BATCH_BUCKETS,
                )
            });
        let recorder = match builder {
            Ok(b) => b.build_recorder(),
            Err(_) => PrometheusBuilder::new().build_recorder(),
        };
        let handle = recorder.handle();
        // Another recorder may already be installed (an embedding application's): then
        // Herald's metrics go there and this handle renders only what it saw.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Folds the histogram samples recorded since the last time into their buckets, every few
/// seconds for the life of the process: the recorder otherwise keeps every sample until
/// `/metrics` is scraped, so an unscraped Herald would grow by some bytes per message.
pub fn spawn_metrics_upkeep() {
    static STARTED: OnceLock<()> = OnceLock::new();
    if STARTED.set(()).is_ok() {
        tokio::spawn(async {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                every.tick().await;
                prometheus().run_upkeep();
            }
        });
    }
}

/// Renders every metric in Prometheus's text format, with queue depths and breaker states
/// read fresh. (`api::health` serves it at `/metrics`, behind the metrics token.)
pub async fn render(state: &AppState) -> Result<String, StoreError> {
    // While the store is down the queue gauges keep their last values: the scrape still
    // answers at once, and `herald_store_up` says why they are stale.
    let up = state.store.health().is_up();
    metrics::gauge!("herald_store_up").set(if up { 1.0 } else { 0.0 });
    for d in state.destinations.all() {
        let name = d.name.clone();
        let counts = match up {
            true => Some(state.store.queue_counts(&name).await),
            false => None,
        };
        match counts {
            None => {}
            Some(Ok(counts)) => {
                for (status, n) in [
                    ("pending", counts.pending),
                    ("in_flight", counts.in_flight),
                    ("dead", counts.dead),
                ] {
                    metrics::gauge!("herald_queue_depth", "destination" => name.clone(), "status" => status).set(n as f64);
                }
                metrics::gauge!("herald_dlq_size", "destination" => name.clone())
                    .set(counts.dead as f64);
            }
            Some(Err(e)) if e.fault().is_some() => {}
            Some(Err(e)) => return Err(e),
        }
        let state_code = match *d.breaker.lock().expect("breaker lock") {
            Breaker::Closed { .. } => 0.0,
            Breaker::HalfOpen { .. } => 1.0,
            Breaker::Open { .. } => 2.0,
        };
        metrics::gauge!("herald_breaker_state", "destination" => name.clone()).set(state_code);
        metrics::gauge!("herald_destination_enabled", "destination" => name.clone())
            .set(if d.enabled() { 1.0 } else { 0.0 });
        let paused = d
            .paused_until()
            .is_some_and(|p| p > herald_core::clock::now_ms());
        metrics::gauge!("herald_destination_paused", "destination" => name).set(if paused {
            1.0
        } else {
            0.0
        });
    }
    metrics::gauge!("herald_attempts_in_flight").set(state.dispatch.dispatcher.in_flight() as f64);
    Ok(prometheus().render())
}
