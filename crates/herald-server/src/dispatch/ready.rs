//! The ready queues and slots: leased deliveries wait here and start the moment a slot
//! frees, without a claim round.

use super::*;

impl Dispatcher {
    /// Opens half-open probes (one for the whole cluster) and starts a task per claim.
    pub(super) async fn dispatch(
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
                    message: None,
                });
            } else {
                let slot = Slot::take(self, name);
                self.start(ctx.clone(), c, None, mode, slot);
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

    /// Folds a claim round's time (`None`) or a destination's attempt time into its
    /// moving average.
    pub(super) fn observe(&self, destination: Option<&str>, took: Duration) {
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

    /// Starts deliveries from the ready queues into the free slots, destinations in turn.
    /// A queue whose destination can no longer be attempted (disabled, paused, tripped,
    /// deleted, or changed to ordered or rate-limited) goes back to the store whole, and so
    /// does a delivery whose lease would end before its attempt could time out.
    pub(super) async fn pump(&self, ctx: &DispatchContext) {
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
                    starts.push((r.claim, r.message, slot));
                }
            }
            sched.ready.retain(|_, q| !q.is_empty());
        }
        for (c, message, slot) in starts {
            self.start(ctx.clone(), c, message, Mode::Send, slot);
        }
        let leases = give_back
            .into_iter()
            .map(|c| (c.delivery.id, c.lease_token))
            .collect();
        give_back_leases(ctx, leases, now).await;
    }

    pub(super) fn start(
        &self,
        ctx: DispatchContext,
        c: ClaimedDelivery,
        message: Option<Arc<Message>>,
        mode: Mode,
        slot: Slot,
    ) {
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
                        run_attempt(&ctx, c, message, mode == Mode::Probe, slot).await
                    }
                }
                this.finished(&task_id);
            }
            .instrument(span),
        );
        running.insert(id, (lease, handle.abort_handle()));
    }

    pub(super) fn finished(&self, id: &DeliveryId) {
        self.inner
            .running
            .lock()
            .expect("dispatcher lock")
            .remove(id);
        self.inner.idle.notify_waiters();
    }

    /// Tasks not yet finished (attempting, or recording their outcome).
    pub(super) fn running(&self) -> usize {
        self.inner.running.lock().expect("dispatcher lock").len()
    }
}

impl Slot {
    pub(super) fn take(d: &Dispatcher, destination: &str) -> Slot {
        let mut sched = d.inner.sched.lock().expect("dispatcher lock");
        Slot::take_locked(d, &mut sched, destination)
    }

    pub(super) fn take_locked(d: &Dispatcher, sched: &mut Sched, destination: &str) -> Slot {
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
    pub(super) fn answered(&mut self) {
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

/// Puts leased deliveries back to pending (their leases would otherwise run out).
pub(super) async fn give_back_leases(
    ctx: &DispatchContext,
    leases: Vec<(DeliveryId, LeaseToken)>,
    now: i64,
) {
    if leases.is_empty() {
        return;
    }
    if let Err(e) = ctx.store.release(leases, now).await {
        tracing::warn!(error = %e, "giving back deliveries failed; their leases expire on their own");
    }
}
