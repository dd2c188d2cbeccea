//! The dispatcher: claims due deliveries under a lease and runs one attempt each.
//!
//! * It wakes when a message is accepted (so a fresh message is attempted at once, not at
//!   the next poll), when an attempt finishes (freeing capacity), when the earliest
//!   scheduled retry or pause ends, and at least once a second (expired leases).
//! * Capacity is bounded globally (`concurrency`) and per destination (`max_in_flight`),
//!   and claims rotate over destinations, so one slow or failing destination can hold at
//!   most its own share and never starves the others.
//! * A paused (Retry-After) or disabled destination is not claimed from at all; neither is
//!   one whose circuit breaker is open (after the cooldown, exactly one probe), nor beyond
//!   its rate limit (token bucket). An ordered destination has at most one delivery in
//!   flight: the oldest unfinished one.
//! * While a breaker is open, a destination with a `when = "failure"` fallback hands its
//!   due deliveries to the fallback without attempting them.
//! * Every attempt is recorded with its outcome in one store transition; a lost lease
//!   (another worker took over) discards the result instead of overwriting.
//! * A fast destination's deliveries are leased ahead of its free capacity into a local
//!   ready queue, and started from there the moment a slot frees: throughput is not bound
//!   by how many claim rounds the store commits per second. How many (Little's law): twice
//!   what its slots get through while a claim round takes, from the average attempt and
//!   claim times; none for a destination whose attempts take longer than a claim round.
//!   Only plain queues (not ordered, not rate-limited, not probing); emptied back into the
//!   store when the destination stops being usable or at shutdown; never started so late
//!   that the lease could end during the attempt.
//! * On a single node, a fresh delivery to such a queue is leased in its accept's own
//!   transaction while the queue has room ahead ([`Dispatcher::lease_at_accept`]), and goes
//!   to the ready queue when that commit answers: no claim round between accept and first
//!   attempt.
//! * It knows nothing of the server around it: it takes a [`DispatchContext`] (the store,
//!   the destination cache, the channels and its settings) and reports what the server
//!   must act on — a destination it disabled — as [`DispatchEvent`]s on a channel.
use crate::destination_cache::DestinationCache;
use crate::destination_cache::DestinationEntry;
use herald_channels::Attempt;
use herald_channels::Channels;
use herald_core::breaker::Permit;
use herald_core::clock::now_ms;
use herald_core::delivery::DeliveryStatus;
use herald_core::delivery::{Decision, DeliveryRules, SendReport, Verdict, decide_next};
use herald_core::destination::FallbackWhen;
use herald_core::ids::{DeliveryId, LeaseToken};
use herald_core::message::{Message, MessageBody};
use herald_store::{
    AcceptLease, AcceptOutcome, AttemptRecord, BreakerEvent, ClaimRequest, ClaimedDelivery,
    DeliveryRecord, FinishAttempt, MessageRecord, NextState, QueueClaim,
};
use herald_store::{FinishOutcome, Store};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::AbortHandle;
use tracing::Instrument;

mod accept;
mod attempt;
mod plan;
mod ready;
mod record;
#[cfg(test)]
mod tests;

use attempt::*;
use plan::*;
use ready::*;
use record::*;

/// Longest sleep between claims (expired leases are found at least this often).
const POLL: Duration = Duration::from_secs(1);

/// Most deliveries one destination leases ahead of its free capacity. Each one held costs
/// its parsed message: with 4 096 a million-message backlog took Herald past 100 MB RSS.
const MAX_AHEAD: u32 = 2048;

/// A delivery from the ready queue is started only with at least this much lease left
/// beyond the destination's timeout; otherwise it goes back to the store.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// Everything the dispatcher works with, and nothing else of the server.
#[derive(Clone)]
pub struct DispatchContext {
    pub store: Arc<dyn Store>,
    pub destinations: Arc<DestinationCache>,
    pub channels: Channels,
    pub settings: DispatchSettings,
    pub dispatcher: Dispatcher,
    /// What the server must act on; see [`DispatchEvent`].
    pub events: mpsc::UnboundedSender<DispatchEvent>,
}

/// The dispatcher's part of the configuration.
#[derive(Debug, Clone, Copy)]
pub struct DispatchSettings {
    /// Attempts in flight on this node, in all.
    pub concurrency: u32,
    /// Attempts in flight per destination, unless it sets `max_in_flight`.
    pub destination_concurrency: u32,
    /// How long a claimed delivery is leased (at least the destination's timeout + 10 s).
    pub lease: Duration,
    /// The longest `Retry-After` honoured.
    pub max_retry_after: Duration,
}

/// What the dispatcher tells the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DispatchEvent {
    /// The dispatcher disabled a destination (a 410, a deleted webhook, sustained
    /// failure): someone should hear about it
    /// ([`DISABLED_EVENT`](crate::operational::DISABLED_EVENT)).
    DestinationDisabled { destination: String, reason: String },
    /// A delivery to a tenant's destination ran out of attempts (went dead): the
    /// platform's operational webhooks hear of it (`message.attempt.exhausted`).
    AttemptsExhausted {
        delivery_id: herald_core::ids::DeliveryId,
        destination: String,
        status_code: Option<u16>,
    },
}

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
    sched: Mutex<Sched>,
    /// Where finished attempts go to be recorded together (see [`run_recorder`]).
    recorder: OnceLock<mpsc::Sender<(FinishAttempt, RecordReply)>>,
    /// Attempts running now: delivery id → (lease token, task).
    running: Mutex<HashMap<DeliveryId, (LeaseToken, AbortHandle)>>,
}

/// Capacity in use and deliveries leased ahead, under one lock so that starting from the
/// ready queue and taking the slot are one step.
#[derive(Default)]
struct Sched {
    /// Attempts running per destination.
    busy: HashMap<String, u32>,
    /// Attempts per destination started and not yet recorded (running, or waiting for the
    /// store).
    held: HashMap<String, u32>,
    /// Leased deliveries waiting for a slot, per destination, oldest first.
    ready: HashMap<String, VecDeque<Ready>>,
    /// Deliveries leased at accept whose commit has not answered yet, per destination.
    leasing: HashMap<String, u32>,
    /// Average attempt time per destination (ms, moving average).
    attempt_ms: HashMap<String, f64>,
    /// Average time a claim round takes in the store (ms, moving average).
    claim_ms: f64,
    /// Where the next round of starts begins (fairness under the global limit).
    turn: usize,
}

/// A delivery leased ahead of capacity.
struct Ready {
    claim: ClaimedDelivery,
    lease_until: i64,
    /// The message as ingest parsed it, for a delivery leased at accept: its attempt reads
    /// it from here instead of parsing the stored JSON again.
    message: Option<Arc<Message>>,
}

/// Deliveries of one accept call leased to this node in the accept's own transaction:
/// (index of the message in the batch, the delivery as it will be started). Dropped without
/// [`Dispatcher::accept_committed`] (the accept's task failed), it frees the room it held;
/// what the store may still hold leased expires like any lease.
pub struct AcceptLeases {
    dispatcher: Dispatcher,
    items: Vec<(usize, Ready)>,
    /// Every delivery of the batch is leased: the claim loop need not be woken.
    pub all: bool,
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
    pub fn spawn(&self, ctx: DispatchContext) -> tokio::task::JoinHandle<()> {
        let (tx, rx) = mpsc::channel(MAX_RECORDS);
        if self.inner.recorder.set(tx).is_ok() {
            tokio::spawn(run_recorder(ctx.store.clone(), rx));
        }
        let this = self.clone();
        tokio::spawn(async move { this.run(ctx).await })
    }

    async fn run(self, ctx: DispatchContext) {
        let mut rotate = 0usize;
        // Claims fail while the store is down: logged when that starts and when it ends.
        let mut failing_since: Option<Instant> = None;
        // Other nodes' news (Postgres NOTIFY); polling covers what it misses.
        let remote = ctx.store.remote_signals();
        while !self.inner.stopping.load(Ordering::Relaxed) {
            let now = now_ms();
            let (req, modes, mut wake_at) = self.plan(&ctx, now, rotate);
            rotate = rotate.wrapping_add(1);
            let asked = Instant::now();
            let claimed = ctx.store.claim(req).await;
            self.observe(None, asked.elapsed());
            match claimed {
                Ok(res) => {
                    if let Some(since) = failing_since.take() {
                        tracing::info!(
                            after_ms = since.elapsed().as_millis() as u64,
                            "claiming deliveries works again"
                        );
                    }
                    for ds in &res.destinations {
                        if let Some(d) = ctx.destinations.get(&ds.name) {
                            d.observe(ds);
                        }
                    }
                    for name in &res.rate_limited {
                        metrics::counter!("herald_rate_limit_waits_total", "destination" => name.clone()).increment(1);
                    }
                    // Every queue asked for learns whether its rate limit held it back.
                    for name in modes.keys() {
                        if let Some(d) = ctx.destinations.get(name) {
                            d.set_rate_limited(res.rate_limited.contains(name));
                        }
                    }
                    if res.recovered > 0 {
                        tracing::warn!(
                            count = res.recovered,
                            "took back deliveries whose lease expired"
                        );
                    }
                    self.dispatch(&ctx, res.claimed, &modes, now).await;
                    if let Some(due) = res.next_due_at.filter(|d| *d > now) {
                        wake_at = wake_at.min(due);
                    }
                }
                Err(e) => {
                    if failing_since.is_none() {
                        tracing::error!(error = %e, "claiming deliveries failed; retrying until the store answers");
                        failing_since = Some(Instant::now());
                    }
                }
            }
            let sleep = Duration::from_millis(
                (wake_at - now_ms()).clamp(0, POLL.as_millis() as i64) as u64,
            );
            let remote_work = async {
                match &remote {
                    Some(r) => r.work.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.inner.wake.notified() => {}
                _ = remote_work => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// Stops claiming, lets running attempts finish for up to `grace`, then aborts the rest
    /// and gives their leases back so no delivery waits for a lease to expire.
    pub async fn shutdown(&self, ctx: &DispatchContext, grace: Duration) {
        self.inner.stopping.store(true, Ordering::Relaxed);
        self.wake();
        let waiting: Vec<(DeliveryId, LeaseToken)> = {
            let mut sched = self.inner.sched.lock().expect("dispatcher lock");
            sched
                .ready
                .drain()
                .flat_map(|(_, q)| q)
                .map(|r| (r.claim.delivery.id, r.claim.lease_token))
                .collect()
        };
        give_back_leases(ctx, waiting, now_ms()).await;
        let deadline = Instant::now() + grace;
        while self.running() > 0 && Instant::now() < deadline {
            let _ =
                tokio::time::timeout(Duration::from_millis(50), self.inner.idle.notified()).await;
        }
        let left: Vec<(DeliveryId, (LeaseToken, AbortHandle))> = self
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
        if let Err(e) = ctx.store.release(leases, now_ms()).await {
            tracing::error!(error = %e, "shutdown: releasing leases failed; they expire on their own");
        }
    }
}

/// One unit of a destination's (and the global) attempt capacity. It is given back as soon
/// as the receiver has answered ([`Slot::answered`]) — not when the answer is recorded — so
/// a busy store does not hold a destination's concurrency hostage. The delivery stays
/// leased, and counted in its destination's claim-ahead window, until the whole Slot is
/// dropped after the record: attempts never outrun the store's recording by more than the
/// window, so none waits to be recorded until its lease runs out.
struct Slot {
    dispatcher: Dispatcher,
    destination: String,
    running: bool,
}

type RecordReply = oneshot::Sender<Result<FinishOutcome, String>>;

/// How a destination's claims are handled this round.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    Send,
    /// The single half-open probe of an open breaker.
    Probe,
    /// The breaker is open and the fallback takes failures: hand over without attempting.
    FailOver(String),
}
