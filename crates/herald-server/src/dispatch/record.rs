//! Recording attempts: batched with others finishing at the same time, retried while the
//! store is down until the lease ends, then applied to the destination cache.

use super::*;

impl Dispatcher {
    /// Records an attempt's outcome, batched with others finishing at the same time.
    pub(super) async fn store_finish(
        &self,
        ctx: &DispatchContext,
        f: FinishAttempt,
    ) -> Result<FinishOutcome, String> {
        if let Some(tx) = self.inner.recorder.get() {
            let (reply, answer) = oneshot::channel();
            // A full queue (the store is slower than attempts finish) makes the attempt
            // wait here, holding its slot: back-pressure up to the claims.
            if tx.send((f.clone(), reply)).await.is_ok() {
                return answer
                    .await
                    .map_err(|_| "the recorder stopped".to_string())?;
            }
        }
        ctx.store.finish_attempt(f).await.map_err(|e| e.to_string())
    }
}

/// Most attempt records one transaction carries, and most waiting for the recorder.
pub(super) const MAX_RECORDS: usize = 2048;

/// Takes every attempt record that is waiting and stores them in one store call: under
/// load, hundreds of attempts share one transaction instead of one each.
pub(super) async fn run_recorder(
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<(FinishAttempt, RecordReply)>,
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

/// Stores the transition, then applies what it changed to the destination: disabled →
/// cache updated and an operational message sent. While the store is down it keeps trying,
/// with backoff, until the lease ends (`until`, epoch ms): a record lost means the attempt
/// is made again, a duplicate; one kept means the store's recovery costs nothing.
pub(super) async fn record(ctx: &DispatchContext, finish: FinishAttempt, until: i64) {
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
    if matches!(finish.next, NextState::Dead)
        && herald_core::ids::split_destination_key(&destination)
            .0
            .is_some()
    {
        let _ = ctx.events.send(DispatchEvent::AttemptsExhausted {
            delivery_id: finish.delivery_id.clone(),
            destination: destination.clone(),
            status_code: finish.attempt.as_ref().and_then(|a| a.status_code),
        });
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
