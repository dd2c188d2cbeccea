//! The dispatcher: claims due deliveries under a lease and runs one attempt each.
//!
//! * It wakes when a message is accepted (so a fresh message is attempted at once, not at
//!   the next poll), when an attempt finishes (freeing capacity), when the earliest
//!   scheduled retry or pause ends, and at least once a second (expired leases).
//! * Capacity is bounded globally (`concurrency`) and per destination (`max_in_flight`),
//!   and claims rotate over destinations, so one slow or failing destination can hold at
//!   most its own share and never starves the others.
//! * A paused (Retry-After) or disabled destination is not claimed from at all.
//! * Every attempt is recorded with its outcome in one store transition; a lost lease
//!   (another worker took over) discards the result instead of overwriting.

use crate::state::AppState;
use herald_channels::Attempt;
use herald_core::clock::now_ms;
use herald_core::delivery::Verdict;
use herald_core::message::{Message, MessageBody};
use herald_store::{
    AttemptRecord, ClaimRequest, ClaimedDelivery, FinishAttempt, NextState, QueueClaim,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tracing::Instrument;

/// Longest sleep between claims (expired leases are found at least this often).
const POLL: Duration = Duration::from_secs(1);
/// How often destinations are re-read from the store (changes made by other nodes).
const RELOAD: Duration = Duration::from_secs(10);

#[derive(Clone, Default)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    wake: Notify,
    idle: Notify,
    stopping: AtomicBool,
    total: AtomicU32,
    per_destination: Mutex<HashMap<String, u32>>,
    /// Attempts running now: delivery id → (lease token, task).
    running: Mutex<HashMap<String, (String, AbortHandle)>>,
}

impl Dispatcher {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the loop to claim now.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Attempts running at this moment.
    pub fn in_flight(&self) -> u32 {
        self.inner.total.load(Ordering::Relaxed)
    }

    /// Runs the claim loop until [`Dispatcher::shutdown`].
    pub fn spawn(&self, state: AppState) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move { this.run(state).await })
    }

    async fn run(self, state: AppState) {
        let mut rotate = 0usize;
        let mut last_reload = Instant::now();
        let lease_floor = state.config.lease.0;
        while !self.inner.stopping.load(Ordering::Relaxed) {
            let now = now_ms();
            let destinations = state.destinations.all();
            let mut room = state.config.concurrency.saturating_sub(self.in_flight());
            let mut queues = Vec::with_capacity(destinations.len());
            let mut wake_at = now + POLL.as_millis() as i64;
            {
                let busy = self.inner.per_destination.lock().expect("dispatcher lock");
                let n = destinations.len();
                for i in 0..n {
                    let d = &destinations[(i + rotate) % n.max(1)];
                    if !d.enabled() {
                        continue;
                    }
                    if let Some(p) = d.paused_until().filter(|p| *p > now) {
                        wake_at = wake_at.min(p);
                        continue;
                    }
                    let limit = d
                        .spec
                        .max_in_flight
                        .unwrap_or(state.config.destination_concurrency);
                    let capacity = limit
                        .saturating_sub(busy.get(&d.name).copied().unwrap_or(0))
                        .min(room);
                    room -= capacity;
                    let lease = lease_floor.max(d.spec.timeout() + Duration::from_secs(10));
                    queues.push(QueueClaim {
                        destination: d.name.clone(),
                        capacity,
                        lease_ms: lease.as_millis() as i64,
                    });
                }
            }
            rotate = rotate.wrapping_add(1);
            let req = ClaimRequest {
                now,
                lease_token: uuid_token(),
                queues,
            };
            match state.store.claim(req).await {
                Ok(res) => {
                    if res.recovered > 0 {
                        tracing::warn!(
                            count = res.recovered,
                            "took back deliveries whose lease expired"
                        );
                    }
                    for c in res.claimed {
                        self.start(state.clone(), c);
                    }
                    if let Some(due) = res.next_due_at.filter(|d| *d > now) {
                        wake_at = wake_at.min(due);
                    }
                }
                Err(e) => tracing::error!(error = %e, "claiming deliveries failed"),
            }
            let sleep = Duration::from_millis(
                (wake_at - now_ms()).clamp(0, POLL.as_millis() as i64) as u64,
            );
            tokio::select! {
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
            if last_reload.elapsed() >= RELOAD {
                last_reload = Instant::now();
                if let Err(e) = state
                    .destinations
                    .reload(state.store.as_ref(), &state.secrets)
                    .await
                {
                    tracing::error!(error = %e, "reloading destinations failed");
                }
                state.auth.flush_last_used(state.store.as_ref()).await;
            }
        }
    }

    fn start(&self, state: AppState, c: ClaimedDelivery) {
        let dest = c.delivery.destination.clone();
        *self
            .inner
            .per_destination
            .lock()
            .expect("dispatcher lock")
            .entry(dest.clone())
            .or_default() += 1;
        self.inner.total.fetch_add(1, Ordering::Relaxed);
        let id = c.delivery.id.clone();
        let lease = c.lease_token.clone();
        let this = self.clone();
        // Hold the registry lock while spawning so the task cannot finish (and deregister)
        // before it is registered.
        let mut running = self.inner.running.lock().expect("dispatcher lock");
        let span = tracing::info_span!("attempt", destination = %dest, delivery = %id, number = c.delivery.attempt_count + 1, outcome = tracing::field::Empty);
        let task_id = id.clone();
        let handle = tokio::spawn(
            async move {
                run_attempt(&state, c).await;
                this.finished(&dest, &task_id);
            }
            .instrument(span),
        );
        running.insert(id, (lease, handle.abort_handle()));
    }

    fn finished(&self, destination: &str, id: &str) {
        self.inner
            .running
            .lock()
            .expect("dispatcher lock")
            .remove(id);
        if let Some(n) = self
            .inner
            .per_destination
            .lock()
            .expect("dispatcher lock")
            .get_mut(destination)
        {
            *n = n.saturating_sub(1);
        }
        self.inner.total.fetch_sub(1, Ordering::Relaxed);
        self.inner.idle.notify_waiters();
        self.wake();
    }

    /// Stops claiming, lets running attempts finish for up to `grace`, then aborts the rest
    /// and gives their leases back so no delivery waits for a lease to expire.
    pub async fn shutdown(&self, state: &AppState, grace: Duration) {
        self.inner.stopping.store(true, Ordering::Relaxed);
        self.wake();
        let deadline = Instant::now() + grace;
        while self.in_flight() > 0 && Instant::now() < deadline {
            let _ =
                tokio::time::timeout(Duration::from_millis(50), self.inner.idle.notified()).await;
        }
        let left: Vec<(String, (String, AbortHandle))> = self
            .inner
            .running
            .lock()
            .expect("dispatcher lock")
            .drain()
            .collect();
        if left.is_empty() {
            return;
        }
        tracing::warn!(
            count = left.len(),
            "shutdown: aborting attempts still running and releasing their leases"
        );
        let leases = left
            .into_iter()
            .map(|(id, (lease, h))| {
                h.abort();
                (id, lease)
            })
            .collect();
        if let Err(e) = state.store.release(leases, now_ms()).await {
            tracing::error!(error = %e, "shutdown: releasing leases failed; they expire on their own");
        }
    }
}

fn uuid_token() -> String {
    herald_core::ids::new_id("lease")
}

async fn run_attempt(state: &AppState, c: ClaimedDelivery) {
    let now = now_ms();
    let Some(dest) = state
        .destinations
        .get(&c.delivery.destination)
        .filter(|d| d.enabled() && !d.is_paused(now))
    else {
        // Deleted, disabled or paused since the claim: give the delivery back untouched.
        let _ = state
            .store
            .release(vec![(c.delivery.id.clone(), c.lease_token.clone())], now)
            .await;
        return;
    };
    let number = c.delivery.attempt_count + 1;
    let started_at = now_ms();
    let t0 = Instant::now();
    let report = match serde_json::from_str::<MessageBody>(&c.message.body) {
        Ok(body) => {
            let message = Message {
                id: c.message.id.clone(),
                event_type: c.message.event_type.clone(),
                idempotency_key: c.message.idempotency_key.clone(),
                created_at: c.message.created_at,
                body,
            };
            state
                .channels
                .send(&Attempt {
                    message: &message,
                    destination: &dest.name,
                    spec: &dest.spec,
                    number,
                })
                .await
        }
        Err(e) => herald_core::delivery::SendReport::failed(
            Verdict::permanent(),
            "corrupt",
            format!("stored message unreadable: {e}"),
        ),
    };
    let duration_ms = t0.elapsed().as_millis() as i64;
    let finished_at = now_ms();
    let max_wait = state.config.max_retry_after.0;
    let used = number.saturating_sub(c.delivery.budget_base);
    let (next, pause_until) = match &report.verdict {
        Verdict::Delivered => (NextState::Delivered, None),
        Verdict::Retry {
            after,
            pause_destination,
        } => {
            let after = after.map(|a| a.min(max_wait));
            let pause = if *pause_destination {
                after.map(|a| finished_at + a.as_millis() as i64)
            } else {
                None
            };
            match dest.spec.retry_policy().delay(used) {
                Some(backoff) => (
                    NextState::Retry {
                        at: finished_at + backoff.max(after.unwrap_or_default()).as_millis() as i64,
                    },
                    pause,
                ),
                None => (NextState::Dead, pause),
            }
        }
        Verdict::Permanent { .. } => (NextState::Dead, None),
    };
    let disable = match &report.verdict {
        Verdict::Permanent {
            disable_destination: Some(reason),
        } => Some(reason.clone()),
        _ => None,
    };
    tracing::Span::current().record("outcome", report.verdict.outcome().as_str());
    tracing::info!(status = ?report.status_code, error = ?report.error, duration_ms, next = ?next, "attempt finished");
    let finish = FinishAttempt {
        delivery_id: c.delivery.id.clone(),
        lease_token: c.lease_token.clone(),
        destination: dest.name.clone(),
        attempt: AttemptRecord {
            number,
            started_at,
            duration_ms,
            outcome: report.verdict.outcome(),
            status_code: report.status_code,
            error_class: report.error_class,
            error: report.error,
            response_excerpt: report.response_excerpt,
        },
        next,
        pause_destination_until: pause_until,
        disable_destination: disable.clone(),
        now: finished_at,
    };
    // The attempt happened: try hard to record it, since a lost record means a duplicate.
    for i in 0..5u64 {
        match state.store.finish_attempt(finish.clone()).await {
            Ok(true) => break,
            Ok(false) => {
                tracing::warn!(
                    "lease lost before the attempt was recorded; another worker owns the delivery"
                );
                break;
            }
            Err(e) => {
                tracing::error!(error = %e, try_no = i + 1, "recording the attempt failed");
                tokio::time::sleep(Duration::from_millis(200 * (i + 1))).await;
            }
        }
    }
    if let Some(p) = pause_until {
        dest.pause_until(p);
    }
    if let Some(reason) = disable {
        tracing::warn!(destination = %dest.name, %reason, "destination disabled");
        dest.disable(reason);
    }
}
