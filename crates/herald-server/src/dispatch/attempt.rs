//! One attempt: send through the channel, decide the next state ([`decide_next`]), record.

use super::*;
use herald_core::delivery::ErrorClass;

pub(super) async fn run_attempt(
    ctx: &DispatchContext,
    c: ClaimedDelivery,
    parsed: Option<Arc<Message>>,
    probe: bool,
    mut slot: Slot,
) {
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
    let message = match parsed {
        Some(m) => Ok(m),
        None => serde_json::from_str::<MessageBody>(&c.message.body).map(|body| {
            Arc::new(Message {
                id: c.message.id.clone(),
                event_type: c.message.event_type.clone(),
                idempotency_key: c.message.idempotency_key.clone(),
                created_at: c.message.created_at,
                body,
            })
        }),
    };
    let report = match message {
        Ok(message) => {
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
            ErrorClass::Corrupt,
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
        rand::random::<f64>,
        finished_at,
        DeliveryId::new,
    );
    let breaker = dest.spec.breaker().map(|config| BreakerEvent {
        config,
        failure: matches!(report.verdict, Verdict::Retry { .. }),
    });
    tracing::Span::current().record("outcome", report.verdict.outcome().as_str());
    // Options as plain values (`status=200`), left out when absent, never `Some(200)`.
    tracing::info!(status = report.status_code, error = report.error.as_deref(), duration_ms, next = %next, "attempt finished");
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
            // Kept only when there is something to debug: a delivered attempt writes less.
            exchange: report
                .exchange
                .filter(|_| report.verdict != Verdict::Delivered)
                .map(|x| *x),
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
pub(super) async fn fail_over_unattempted(
    ctx: &DispatchContext,
    c: ClaimedDelivery,
    fallback: String,
) {
    let now = now_ms();
    let finish = FinishAttempt {
        delivery_id: c.delivery.id.clone(),
        lease_token: c.lease_token.clone(),
        destination: c.delivery.destination.clone(),
        attempt: None,
        next: NextState::FailedOver {
            fallback,
            new_delivery_id: DeliveryId::new(),
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
