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

use crate::destinations::DestinationCache;
use crate::destinations::DestinationEntry;
use herald_channels::Attempt;
use herald_channels::Channels;
use herald_core::breaker::Permit;
use herald_core::clock::now_ms;
use herald_core::delivery::DeliveryStatus;
use herald_core::delivery::{Decision, DeliveryRules, SendReport, Verdict, decide_next};
use herald_core::destination::FallbackWhen;
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
    recorder: OnceLock<mpsc::UnboundedSender<(FinishAttempt, RecordReply)>>,
    /// Attempts running now: delivery id → (lease token, task).
    running: Mutex<HashMap<String, (String, AbortHandle)>>,
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
}

impl Sched {
    /// How many more deliveries a plain queue may lease ahead now: its slots plus what they
    /// get through during a claim round, twice (Little's law), less what it already holds
    /// (running, being recorded, waiting in the ready queue, or being leased at accept).
    /// No lead for a destination whose attempts take longer than a claim round.
    fn lease_room(&self, name: &str, limit: u32) -> u32 {
        let ahead = match self.attempt_ms.get(name) {
            Some(a) if *a < self.claim_ms => 2.0 * f64::from(limit) * self.claim_ms / a.max(0.1),
            _ => 0.0,
        };
        let ahead = (ahead as u32).min(MAX_AHEAD);
        let count = |m: &HashMap<String, u32>| m.get(name).copied().unwrap_or(0);
        (limit + ahead).saturating_sub(count(&self.held).max(count(&self.busy)) + self.queued(name))
    }

    /// One delivery leased at accept is no longer waiting for its commit.
    fn unlease(&mut self, name: &str) {
        if let Some(n) = self.leasing.get_mut(name) {
            *n -= 1;
            if *n == 0 {
                self.leasing.remove(name);
            }
        }
    }

    /// Deliveries of a queue leased and not yet started: in the ready queue, or being leased
    /// at accept.
    fn queued(&self, name: &str) -> u32 {
        self.ready.get(name).map_or(0, |q| q.len() as u32)
            + self.leasing.get(name).copied().unwrap_or(0)
    }
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

impl AcceptLeases {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl Drop for AcceptLeases {
    fn drop(&mut self) {
        if self.items.is_empty() {
            return;
        }
        let mut sched = self.dispatcher.inner.sched.lock().expect("dispatcher lock");
        for (_, r) in &self.items {
            sched.unlease(&r.claim.delivery.destination);
        }
    }
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
        let (tx, rx) = mpsc::unbounded_channel();
        if self.inner.recorder.set(tx).is_ok() {
            tokio::spawn(run_recorder(ctx.store.clone(), rx));
        }
        let this = self.clone();
        tokio::spawn(async move { this.run(ctx).await })
    }

    /// Records an attempt's outcome, batched with others finishing at the same time.
    async fn store_finish(
        &self,
        ctx: &DispatchContext,
        f: FinishAttempt,
    ) -> Result<FinishOutcome, String> {
        if let Some(tx) = self.inner.recorder.get() {
            let (reply, answer) = oneshot::channel();
            if tx.send((f.clone(), reply)).is_ok() {
                return answer
                    .await
                    .map_err(|_| "the recorder stopped".to_string())?;
            }
        }
        ctx.store.finish_attempt(f).await.map_err(|e| e.to_string())
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

    /// Decides how many deliveries each destination may take now, and when to look again.
    fn plan(
        &self,
        ctx: &DispatchContext,
        now: i64,
        rotate: usize,
    ) -> (ClaimRequest, HashMap<String, Mode>, i64) {
        let destinations = ctx.destinations.all();
        let mut room = ctx.settings.concurrency.saturating_sub(self.in_flight());
        let mut queues = Vec::with_capacity(destinations.len());
        let mut modes = HashMap::with_capacity(destinations.len());
        let mut wake_at = now + POLL.as_millis() as i64;
        let sched = self.inner.sched.lock().expect("dispatcher lock");
        let n = destinations.len();
        for i in 0..n {
            let d = &destinations[(i + rotate) % n];
            if !d.enabled() {
                continue;
            }
            if let Some(p) = d.paused_until().filter(|p| *p > now) {
                wake_at = wake_at.min(p);
                continue;
            }
            let running = sched.busy.get(&d.name).copied().unwrap_or(0);
            let queued = sched.queued(&d.name);
            let limit = self.limit(ctx, d);
            let free_now = limit.saturating_sub(running).min(room);
            let mut capacity = free_now;
            let idle = running == 0 && queued == 0;
            if d.spec.ordered {
                capacity = if idle { capacity.min(1) } else { 0 };
            }
            let mut mode = Mode::Send;
            if d.spec.breaker().is_some() {
                match d.breaker.lock().expect("breaker lock").permit(now) {
                    Permit::Any => {}
                    Permit::Probe => {
                        capacity = if idle { capacity.min(1) } else { 0 };
                        mode = Mode::Probe;
                    }
                    Permit::Blocked { until } => {
                        wake_at = wake_at.min(until);
                        match &d.spec.fallback {
                            Some(f) if f.when == FallbackWhen::Failure => {
                                mode = Mode::FailOver(f.destination.clone())
                            }
                            _ => capacity = 0,
                        }
                    }
                }
            }
            // The token bucket is spent in the claim transaction (shared by every node).
            let rate_limit = match mode {
                Mode::FailOver(_) => None,
                _ => d.spec.rate_limit(),
            };
            let require_closed_breaker = mode == Mode::Send && d.spec.breaker().is_some();
            room -= free_now.min(capacity);
            if mode == Mode::Send && prefetchable(d) {
                // The slots that free before the next claim returns find a delivery waiting.
                capacity = sched.lease_room(&d.name, limit);
            }
            let lease = lease(ctx, d);
            queues.push(QueueClaim {
                destination: d.name.clone(),
                capacity,
                lease_ms: lease.as_millis() as i64,
                ordered: d.spec.ordered,
                rate_limit,
                require_closed_breaker,
            });
            modes.insert(d.name.clone(), mode);
        }
        (
            ClaimRequest {
                now,
                lease_token: herald_core::ids::new_id("lease"),
                queues,
            },
            modes,
            wake_at,
        )
    }

    /// Opens half-open probes (one for the whole cluster) and starts a task per claim.
    async fn dispatch(
        &self,
        ctx: &DispatchContext,
        claimed: Vec<ClaimedDelivery>,
        modes: &HashMap<String, Mode>,
        now: i64,
    ) {
        let mut refused: Vec<String> = Vec::new();
        for c in &claimed {
            let name = c.delivery.destination.as_str();
            if modes.get(name) != Some(&Mode::Probe) || refused.iter().any(|r| r == name) {
                continue;
            }
            let Some(d) = ctx.destinations.get(name) else {
                continue;
            };
            let deadline = now + lease(ctx, &d).as_millis() as i64;
            match ctx.store.start_probe(name, deadline, now).await {
                Ok(Some(stored)) => d.set_breaker(Some(&stored)),
                Ok(None) => {
                    // Another node holds the probe: take on the stored state, so this node
                    // waits for its outcome instead of asking again.
                    if let Ok(Some(row)) = ctx.store.get_destination(name).await {
                        d.set_breaker(row.breaker.as_deref());
                    }
                    refused.push(name.to_string());
                }
                Err(e) => {
                    tracing::warn!(destination = name, error = %e, "starting the half-open probe failed");
                    refused.push(name.to_string());
                }
            }
        }
        let mut give_back = Vec::new();
        let mut ready = Vec::new();
        for c in claimed {
            let name = c.delivery.destination.as_str();
            // The claim just refreshed the shared breaker state: if another node's probe
            // closed it meanwhile, these deliveries are attempted normally, not failed over.
            let closed_again = matches!(modes.get(name), Some(Mode::FailOver(_)))
                && ctx.destinations.get(name).is_some_and(|d| {
                    d.breaker.lock().expect("breaker lock").permit(now) == Permit::Any
                });
            if refused.iter().any(|r| r == name) || closed_again {
                // Another node is probing (or the breaker changed): not this one's turn.
                give_back.push((c.delivery.id.clone(), c.lease_token.clone()));
                continue;
            }
            let mode = modes
                .get(&c.delivery.destination)
                .cloned()
                .unwrap_or(Mode::Send);
            let dest = ctx.destinations.get(name);
            let queue = mode == Mode::Send && dest.as_deref().is_some_and(prefetchable);
            if let (true, Some(d)) = (queue, dest) {
                let lease_until = now + lease(ctx, &d).as_millis() as i64;
                ready.push(Ready {
                    claim: c,
                    lease_until,
                });
            } else {
                let slot = Slot::take(self, name);
                self.start(ctx.clone(), c, mode, slot);
            }
        }
        if !ready.is_empty() {
            let mut sched = self.inner.sched.lock().expect("dispatcher lock");
            for r in ready {
                sched
                    .ready
                    .entry(r.claim.delivery.destination.clone())
                    .or_default()
                    .push_back(r);
            }
        }
        give_back_leases(ctx, give_back, now).await;
        self.pump(ctx).await;
    }

    /// Leases a batch's fresh deliveries to this node in the accept's own transaction, as
    /// far as their queues have room ahead (single node only): such a delivery skips the
    /// claim round, its first attempt waits for one commit instead of two, and its row is
    /// written `in_flight` once instead of `pending` and then again. Only plain queues
    /// (not ordered, not rate-limited) of destinations usable now (enabled, not paused,
    /// breaker closed) qualify; the rest are stored `pending` for the claim loop.
    /// Hand the result to [`Dispatcher::accept_committed`] once the accept has answered.
    pub fn lease_at_accept(
        &self,
        ctx: &DispatchContext,
        batch: &mut [herald_store::NewMessage],
        now: i64,
    ) -> AcceptLeases {
        let mut leases = AcceptLeases {
            dispatcher: self.clone(),
            items: Vec::new(),
            all: true,
        };
        let single = ctx.store.single_node() && !self.inner.stopping.load(Ordering::Relaxed);
        let mut token: Option<String> = None;
        let mut sched = self.inner.sched.lock().expect("dispatcher lock");
        for (i, m) in batch.iter_mut().enumerate() {
            for d in &mut m.deliveries {
                let dest = ctx
                    .destinations
                    .get(&d.destination)
                    .filter(|e| single && prefetchable(e) && sendable(e, now))
                    .filter(|e| sched.lease_room(&e.name, self.limit(ctx, e)) > 0);
                let Some(dest) = dest else {
                    leases.all = false;
                    continue;
                };
                let token = token
                    .get_or_insert_with(|| herald_core::ids::new_id("lease"))
                    .clone();
                let until = now + lease(ctx, &dest).as_millis() as i64;
                *sched.leasing.entry(dest.name.clone()).or_default() += 1;
                d.lease = Some(AcceptLease {
                    token: token.clone(),
                    until,
                });
                let claim = ClaimedDelivery {
                    delivery: DeliveryRecord {
                        id: d.id.clone(),
                        message_id: m.id.clone(),
                        destination: d.destination.clone(),
                        status: DeliveryStatus::InFlight,
                        attempt_count: 0,
                        budget_base: 0,
                        next_attempt_at: Some(m.created_at),
                        last_status_code: None,
                        last_error: None,
                        fallback_of: None,
                        dead_at: None,
                        created_at: m.created_at,
                        updated_at: m.created_at,
                    },
                    message: MessageRecord {
                        id: m.id.clone(),
                        event_type: m.event_type.clone(),
                        idempotency_key: m.idempotency.as_ref().map(|k| k.key.clone()),
                        body: m.body.clone(),
                        created_at: m.created_at,
                    },
                    lease_token: token,
                };
                let ready = Ready {
                    claim,
                    lease_until: until,
                };
                leases.items.push((i, ready));
            }
        }
        leases
    }

    /// The accept that [`Dispatcher::lease_at_accept`] prepared has answered: the leased
    /// deliveries of the messages it stored go to the ready queue and start as slots allow.
    /// `outcomes`: `None` when the accept failed (nothing was stored).
    pub async fn accept_committed(
        &self,
        ctx: &DispatchContext,
        mut leases: AcceptLeases,
        outcomes: Option<&[AcceptOutcome]>,
    ) {
        let items = std::mem::take(&mut leases.items);
        if items.is_empty() {
            return;
        }
        let mut give_back = Vec::new();
        let mut started = 0u64;
        {
            let mut sched = self.inner.sched.lock().expect("dispatcher lock");
            // Read under the lock: shutdown sets it before emptying the ready queues.
            let stopping = self.inner.stopping.load(Ordering::Relaxed);
            for (i, r) in items {
                let name = &r.claim.delivery.destination;
                sched.unlease(name);
                let stored = outcomes.and_then(|o| o.get(i)) == Some(&AcceptOutcome::Accepted);
                if !stored {
                    continue;
                }
                if stopping {
                    give_back.push((r.claim.delivery.id, r.claim.lease_token));
                    continue;
                }
                started += 1;
                sched.ready.entry(name.clone()).or_default().push_back(r);
            }
        }
        metrics::counter!("herald_deliveries_leased_at_accept_total").increment(started);
        give_back_leases(ctx, give_back, now_ms()).await;
        self.pump(ctx).await;
    }

    /// Folds a claim round's time (`None`) or a destination's attempt time into its
    /// moving average.
    fn observe(&self, destination: Option<&str>, took: Duration) {
        let ms = took.as_secs_f64() * 1000.0;
        let mut sched = self.inner.sched.lock().expect("dispatcher lock");
        let avg = match destination {
            None => &mut sched.claim_ms,
            Some(d) => match sched.attempt_ms.get_mut(d) {
                Some(a) => a,
                None => {
                    sched.attempt_ms.insert(d.to_string(), ms);
                    return;
                }
            },
        };
        *avg += (ms - *avg) * 0.2;
    }

    /// The most attempts a destination may have running at once.
    fn limit(&self, ctx: &DispatchContext, d: &DestinationEntry) -> u32 {
        d.spec
            .max_in_flight
            .unwrap_or(ctx.settings.destination_concurrency)
    }

    /// Starts deliveries from the ready queues into the free slots, destinations in turn.
    /// A queue whose destination can no longer be attempted (disabled, paused, tripped,
    /// deleted, or changed to ordered or rate-limited) goes back to the store whole, and so
    /// does a delivery whose lease would end before its attempt could time out.
    async fn pump(&self, ctx: &DispatchContext) {
        // While the store cannot commit, an attempt's outcome could not be recorded: what is
        // leased waits (the next successful claim round pumps again).
        if self.inner.stopping.load(Ordering::Relaxed) || !ctx.store.health().is_up() {
            return;
        }
        let now = now_ms();
        let concurrency = ctx.settings.concurrency;
        let mut starts = Vec::new();
        let mut give_back = Vec::new();
        {
            let mut sched = self.inner.sched.lock().expect("dispatcher lock");
            let mut names: Vec<String> = sched
                .ready
                .iter()
                .filter(|(_, q)| !q.is_empty())
                .map(|(n, _)| n.clone())
                .collect();
            if names.is_empty() {
                return;
            }
            names.sort_unstable();
            let turn = sched.turn;
            sched.turn = sched.turn.wrapping_add(1);
            let n = names.len();
            for i in 0..n {
                let name = &names[(i + turn) % n];
                let dest = ctx
                    .destinations
                    .get(name)
                    .filter(|d| prefetchable(d) && sendable(d, now));
                let Some(dest) = dest else {
                    let q = sched.ready.remove(name).unwrap_or_default();
                    give_back.extend(q.into_iter().map(|r| r.claim));
                    continue;
                };
                let limit = self.limit(ctx, &dest);
                let latest_start = now + (dest.spec.timeout() + LEASE_MARGIN).as_millis() as i64;
                loop {
                    let running = sched.busy.get(name).copied().unwrap_or(0);
                    let total = self.inner.total.load(Ordering::Relaxed);
                    if running >= limit || total >= concurrency {
                        break;
                    }
                    let Some(r) = sched.ready.get_mut(name).and_then(|q| q.pop_front()) else {
                        break;
                    };
                    if r.lease_until < latest_start {
                        give_back.push(r.claim);
                        continue;
                    }
                    let slot = Slot::take_locked(self, &mut sched, name);
                    starts.push((r.claim, slot));
                }
            }
            sched.ready.retain(|_, q| !q.is_empty());
        }
        for (c, slot) in starts {
            self.start(ctx.clone(), c, Mode::Send, slot);
        }
        let leases = give_back
            .into_iter()
            .map(|c| (c.delivery.id, c.lease_token))
            .collect();
        give_back_leases(ctx, leases, now).await;
    }

    fn start(&self, ctx: DispatchContext, c: ClaimedDelivery, mode: Mode, slot: Slot) {
        let dest = c.delivery.destination.clone();
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
                match mode {
                    Mode::FailOver(fallback) => fail_over_unattempted(&ctx, c, fallback).await,
                    Mode::Send | Mode::Probe => {
                        run_attempt(&ctx, c, mode == Mode::Probe, slot).await
                    }
                }
                this.finished(&task_id);
            }
            .instrument(span),
        );
        running.insert(id, (lease, handle.abort_handle()));
    }

    fn finished(&self, id: &str) {
        self.inner
            .running
            .lock()
            .expect("dispatcher lock")
            .remove(id);
        self.inner.idle.notify_waiters();
    }

    /// Tasks not yet finished (attempting, or recording their outcome).
    fn running(&self) -> usize {
        self.inner.running.lock().expect("dispatcher lock").len()
    }

    /// Stops claiming, lets running attempts finish for up to `grace`, then aborts the rest
    /// and gives their leases back so no delivery waits for a lease to expire.
    pub async fn shutdown(&self, ctx: &DispatchContext, grace: Duration) {
        self.inner.stopping.store(true, Ordering::Relaxed);
        self.wake();
        let waiting: Vec<(String, String)> = {
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

impl Slot {
    fn take(d: &Dispatcher, destination: &str) -> Slot {
        let mut sched = d.inner.sched.lock().expect("dispatcher lock");
        Slot::take_locked(d, &mut sched, destination)
    }

    fn take_locked(d: &Dispatcher, sched: &mut Sched, destination: &str) -> Slot {
        *sched.busy.entry(destination.to_string()).or_default() += 1;
        *sched.held.entry(destination.to_string()).or_default() += 1;
        d.inner.total.fetch_add(1, Ordering::Relaxed);
        Slot {
            dispatcher: d.clone(),
            destination: destination.to_string(),
            running: true,
        }
    }

    /// The receiver answered: the attempt capacity is free for the next delivery.
    fn answered(&mut self) {
        if std::mem::take(&mut self.running) {
            let inner = &self.dispatcher.inner;
            {
                let mut sched = inner.sched.lock().expect("dispatcher lock");
                if let Some(n) = sched.busy.get_mut(&self.destination) {
                    *n = n.saturating_sub(1);
                }
                inner.total.fetch_sub(1, Ordering::Relaxed);
            }
            self.dispatcher.wake();
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.answered();
        let mut sched = self.dispatcher.inner.sched.lock().expect("dispatcher lock");
        if let Some(n) = sched.held.get_mut(&self.destination) {
            *n = n.saturating_sub(1);
        }
    }
}

/// A plain queue: deliveries may be leased ahead of capacity (no ordering to keep, no
/// rate to respect, no probe to run alone).
fn prefetchable(d: &DestinationEntry) -> bool {
    !d.spec.ordered && d.spec.rate_limit().is_none()
}

/// How long a claim of this destination's deliveries is leased: at least its timeout
/// plus 10 s.
fn lease(ctx: &DispatchContext, d: &DestinationEntry) -> Duration {
    ctx.settings
        .lease
        .max(d.spec.timeout() + Duration::from_secs(10))
}

/// Whether a destination may be attempted normally now.
fn sendable(d: &DestinationEntry, now: i64) -> bool {
    d.enabled()
        && !d.is_paused(now)
        && (d.spec.breaker().is_none()
            || d.breaker.lock().expect("breaker lock").permit(now) == Permit::Any)
}

/// Puts leased deliveries back to pending (their leases would otherwise run out).
async fn give_back_leases(ctx: &DispatchContext, leases: Vec<(String, String)>, now: i64) {
    if leases.is_empty() {
        return;
    }
    if let Err(e) = ctx.store.release(leases, now).await {
        tracing::warn!(error = %e, "giving back deliveries failed; their leases expire on their own");
    }
}

type RecordReply = oneshot::Sender<Result<FinishOutcome, String>>;
/// Most attempt records one transaction carries.
const MAX_RECORDS: usize = 2048;

/// Takes every attempt record that is waiting and stores them in one store call: under
/// load, hundreds of attempts share one transaction instead of one each.
async fn run_recorder(
    store: Arc<dyn Store>,
    mut rx: mpsc::UnboundedReceiver<(FinishAttempt, RecordReply)>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_RECORDS {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let (finishes, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        match store.finish_attempts(finishes).await {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(msg.clone()));
                }
            }
        }
    }
}

/// How a destination's claims are handled this round.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    Send,
    /// The single half-open probe of an open breaker.
    Probe,
    /// The breaker is open and the fallback takes failures: hand over without attempting.
    FailOver(String),
}

async fn run_attempt(ctx: &DispatchContext, c: ClaimedDelivery, probe: bool, mut slot: Slot) {
    let now = now_ms();
    let usable = ctx
        .destinations
        .get(&c.delivery.destination)
        .filter(|d| sendable(d, now) || (probe && d.enabled() && !d.is_paused(now)));
    let Some(dest) = usable else {
        // Deleted, disabled, paused or tripped since the claim: give the delivery back untouched.
        let _ = ctx
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
            ctx.channels
                .send(&Attempt {
                    message: &message,
                    destination: &dest.name,
                    spec: &dest.spec,
                    number,
                })
                .await
        }
        Err(e) => SendReport::failed(
            Verdict::permanent(),
            "corrupt",
            format!("stored message unreadable: {e}"),
        ),
    };
    let took = t0.elapsed();
    let duration_ms = took.as_millis() as i64;
    slot.answered();
    ctx.dispatcher.observe(Some(&dest.name), took);
    // The freed slot goes to the next delivery waiting, without a claim round.
    ctx.dispatcher.pump(ctx).await;
    let finished_at = now_ms();
    let outcome = report.verdict.outcome().as_str();
    metrics::counter!("herald_attempts_total", "destination" => dest.name.clone(), "outcome" => outcome).increment(1);
    metrics::histogram!("herald_attempt_duration_seconds", "destination" => dest.name.clone())
        .record(duration_ms as f64 / 1000.0);
    if number == 1 {
        let waited = (started_at - c.message.created_at).max(0) as f64 / 1000.0;
        metrics::histogram!("herald_first_attempt_delay_seconds").record(waited);
    }
    let retry = dest.spec.retry_policy();
    let rules = DeliveryRules {
        retry: &retry,
        fallback: dest.spec.fallback.as_ref(),
        max_retry_after: ctx.settings.max_retry_after,
    };
    let Decision {
        next,
        pause_until,
        disable_destination: disable,
    } = decide_next(
        &report.verdict,
        &rules,
        number.saturating_sub(c.delivery.budget_base),
        rand::random::<f64>(),
        finished_at,
        || herald_core::ids::new_id(herald_core::ids::DELIVERY),
    );
    let breaker = dest.spec.breaker().map(|config| BreakerEvent {
        config,
        failure: matches!(report.verdict, Verdict::Retry { .. }),
    });
    tracing::Span::current().record("outcome", report.verdict.outcome().as_str());
    tracing::info!(status = ?report.status_code, error = ?report.error, duration_ms, next = ?next, "attempt finished");
    let finish = FinishAttempt {
        delivery_id: c.delivery.id.clone(),
        lease_token: c.lease_token.clone(),
        destination: dest.name.clone(),
        attempt: Some(AttemptRecord {
            number,
            started_at,
            duration_ms,
            outcome: report.verdict.outcome(),
            status_code: report.status_code,
            error_class: report.error_class,
            error: report.error,
            response_excerpt: report.response_excerpt,
        }),
        next,
        breaker,
        disable_if_failing_since: Some(finished_at - dest.spec.disable_after().as_millis() as i64),
        pause_destination_until: pause_until,
        disable_destination: disable,
        now: finished_at,
    };
    if let Some(p) = pause_until {
        dest.pause_until(p);
    }
    let record_until = started_at + lease(ctx, &dest).as_millis() as i64;
    record(ctx, finish, record_until).await;
    drop(slot);
}

/// While the breaker is open, a `when = "failure"` fallback takes the delivery at once.
async fn fail_over_unattempted(ctx: &DispatchContext, c: ClaimedDelivery, fallback: String) {
    let now = now_ms();
    let finish = FinishAttempt {
        delivery_id: c.delivery.id.clone(),
        lease_token: c.lease_token.clone(),
        destination: c.delivery.destination.clone(),
        attempt: None,
        next: NextState::FailedOver {
            fallback,
            new_delivery_id: herald_core::ids::new_id(herald_core::ids::DELIVERY),
        },
        breaker: None,
        disable_if_failing_since: None,
        pause_destination_until: None,
        disable_destination: None,
        now,
    };
    tracing::Span::current().record("outcome", "failed_over");
    let record_until = now + ctx.settings.lease.as_millis() as i64;
    record(ctx, finish, record_until).await;
}

/// Stores the transition, then applies what it changed to the destination: disabled →
/// cache updated and an operational message sent. While the store is down it keeps trying,
/// with backoff, until the lease ends (`until`, epoch ms): a record lost means the attempt
/// is made again, a duplicate; one kept means the store's recovery costs nothing.
async fn record(ctx: &DispatchContext, finish: FinishAttempt, until: i64) {
    let destination = finish.destination.clone();
    let mut wait = Duration::from_millis(100);
    let mut tries = 0u32;
    let outcome = loop {
        tries += 1;
        match ctx.dispatcher.store_finish(ctx, finish.clone()).await {
            Ok(o) => {
                if tries > 1 {
                    tracing::info!(tries, "attempt recorded once the store answered again");
                }
                break o;
            }
            Err(e) => {
                if tries == 1 {
                    tracing::warn!(error = %e, "recording the attempt failed; retrying until its lease ends");
                }
                if now_ms() + wait.as_millis() as i64 >= until {
                    tracing::error!(error = %e, tries, "the attempt could not be recorded before its lease ended; it will be made again");
                    return;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    };
    if let Some(stored) = &outcome.breaker
        && let Some(d) = ctx.destinations.get(&destination)
    {
        d.set_breaker(Some(stored));
    }
    if let Some(t) = &outcome.breaker_transition {
        tracing::warn!(destination = %destination, transition = %t, "circuit breaker changed state");
        metrics::counter!("herald_breaker_transitions_total", "destination" => destination.clone(), "transition" => t.clone()).increment(1);
    }
    if !outcome.recorded {
        tracing::warn!(
            "lease lost before the attempt was recorded; another worker owns the delivery"
        );
        return;
    }
    if let Some(status) = finish.next.finished() {
        metrics::counter!("herald_deliveries_finished_total", "destination" => destination.clone(), "status" => status.as_str()).increment(1);
    }
    if matches!(finish.next, NextState::FailedOver { .. }) {
        ctx.dispatcher.wake();
    }
    if let Some(reason) = outcome.disabled {
        tracing::warn!(destination = %destination, %reason, "destination disabled");
        if let Some(d) = ctx.destinations.get(&destination) {
            d.disable(reason.clone());
        }
        let _ = ctx.events.send(DispatchEvent::DestinationDisabled {
            destination: destination.clone(),
            reason,
        });
    }
}
