//! Leasing fresh deliveries in their accept's own transaction (one node), and handing
//! them to the ready queue once that commit answers.

use super::*;

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
        parsed: &[Arc<Message>],
        now: i64,
    ) -> AcceptLeases {
        let mut leases = AcceptLeases {
            dispatcher: self.clone(),
            items: Vec::new(),
            all: true,
        };
        let single = ctx.store.single_node() && !self.inner.stopping.load(Ordering::Relaxed);
        let mut token: Option<LeaseToken> = None;
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
                let token = token.get_or_insert_with(LeaseToken::new).clone();
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
                        tenant: m.tenant.clone(),
                    },
                    lease_token: token,
                };
                let ready = Ready {
                    claim,
                    lease_until: until,
                    message: parsed.get(i).cloned(),
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
}
