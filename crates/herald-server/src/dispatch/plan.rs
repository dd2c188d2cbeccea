//! Capacity and claim planning: how many deliveries each destination may take now, how
//! many it leases ahead (Little's law), and when to look again.

use super::*;

impl Sched {
    /// How many more deliveries a plain queue may lease ahead now: its slots plus what they
    /// get through during a claim round, twice (Little's law), less what it already holds
    /// (running, being recorded, waiting in the ready queue, or being leased at accept).
    /// No lead for a destination whose attempts take longer than a claim round.
    pub(super) fn lease_room(&self, name: &str, limit: u32) -> u32 {
        let ahead = match self.attempt_ms.get(name) {
            Some(a) if *a < self.claim_ms => 2.0 * f64::from(limit) * self.claim_ms / a.max(0.1),
            _ => 0.0,
        };
        let ahead = (ahead as u32).min(MAX_AHEAD);
        let count = |m: &HashMap<String, u32>| m.get(name).copied().unwrap_or(0);
        (limit + ahead).saturating_sub(count(&self.held).max(count(&self.busy)) + self.queued(name))
    }

    /// One delivery leased at accept is no longer waiting for its commit.
    pub(super) fn unlease(&mut self, name: &str) {
        if let Some(n) = self.leasing.get_mut(name) {
            *n -= 1;
            if *n == 0 {
                self.leasing.remove(name);
            }
        }
    }

    /// Deliveries of a queue leased and not yet started: in the ready queue, or being leased
    /// at accept.
    pub(super) fn queued(&self, name: &str) -> u32 {
        self.ready.get(name).map_or(0, |q| q.len() as u32)
            + self.leasing.get(name).copied().unwrap_or(0)
    }
}

impl Dispatcher {
    /// Decides how many deliveries each destination may take now, and when to look again.
    pub(super) fn plan(
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
                lease_token: LeaseToken::new(),
                queues,
            },
            modes,
            wake_at,
        )
    }

    /// The most attempts a destination may have running at once.
    pub(super) fn limit(&self, ctx: &DispatchContext, d: &DestinationEntry) -> u32 {
        d.spec
            .max_in_flight
            .unwrap_or(ctx.settings.destination_concurrency)
    }
}

/// A plain queue: deliveries may be leased ahead of capacity (no ordering to keep, no
/// rate to respect, no probe to run alone).
pub(super) fn prefetchable(d: &DestinationEntry) -> bool {
    !d.spec.ordered && d.spec.rate_limit().is_none()
}

/// How long a claim of this destination's deliveries is leased: at least its timeout
/// plus 10 s.
pub(super) fn lease(ctx: &DispatchContext, d: &DestinationEntry) -> Duration {
    ctx.settings
        .lease
        .max(d.spec.timeout() + Duration::from_secs(10))
}

/// Whether a destination may be attempted normally now.
pub(super) fn sendable(d: &DestinationEntry, now: i64) -> bool {
    d.enabled()
        && !d.is_paused(now)
        && (d.spec.breaker().is_none()
            || d.breaker.lock().expect("breaker lock").permit(now) == Permit::Any)
}
