//! The recorder: finished attempts waiting together are written in one store call of at
//! most MAX_RECORDS; the attempt waits for its record (holding its place in the
//! destination's window) instead of dropping it; a record the store refused is retried
//! until the store answers or the lease ends.
//!
//! The bound is MAX_RECORDS per transaction and MAX_RECORDS waiting in the recorder's
//! queue; the back-pressure is that each attempt awaits its own record (and a place in
//! that queue) while its Slot keeps it counted in `held` (see the capacity tests), so a
//! slow store stops its destination leasing ahead. The retry is in `record`, not the recorder:
//! the recorder answers every record of a failed group with the error.

use super::*;
use herald_core::delivery::AttemptOutcome;

fn delivered(r: &Ready) -> FinishAttempt {
    let now = now_ms();
    FinishAttempt {
        delivery_id: r.claim.delivery.id.clone(),
        lease_token: r.claim.lease_token.clone(),
        destination: r.claim.delivery.destination.clone(),
        attempt: Some(AttemptRecord {
            number: 1,
            started_at: now,
            duration_ms: 1,
            outcome: AttemptOutcome::Delivered,
            status_code: Some(200),
            error_class: None,
            error: None,
            response_excerpt: String::new(),
            exchange: None,
        }),
        next: NextState::Delivered,
        breaker: None,
        disable_if_failing_since: None,
        pause_destination_until: None,
        disable_destination: None,
        now,
    }
}

/// Queues `items`' records for a recorder that has not started, then runs it to the end.
async fn record_all(w: &World, items: &[Ready]) -> Vec<Result<FinishOutcome, String>> {
    let (tx, rx) = mpsc::channel(items.len().max(1));
    let mut answers = Vec::new();
    for r in items {
        let (reply, answer) = oneshot::channel();
        tx.send((delivered(r), reply)).await.unwrap();
        answers.push(answer);
    }
    drop(tx);
    run_recorder(w.ctx.store.clone(), rx).await;
    let mut out = Vec::new();
    for a in answers {
        out.push(a.await.expect("answered"));
    }
    out
}

/// Starts the dispatcher's recorder (as `spawn` does, without the claim loop).
fn start_recorder(w: &World) {
    let (tx, rx) = mpsc::channel(MAX_RECORDS);
    assert!(w.dispatcher().inner.recorder.set(tx).is_ok());
    tokio::spawn(run_recorder(w.ctx.store.clone(), rx));
}

fn recorded() -> Result<FinishOutcome, String> {
    Ok(FinishOutcome {
        recorded: true,
        ..FinishOutcome::default()
    })
}

#[tokio::test]
async fn records_waiting_together_are_written_in_one_group() {
    let (w, flaky) = flaky_world(settings(10), |_| {}).await;
    w.destination("a", json!({})).await;
    let items = w.leased("a", 5, now_ms() + 60_000).await;
    let answers = record_all(&w, &items).await;
    assert_eq!(flaky.batches(), [5]);
    assert!(answers.iter().all(|a| *a == recorded()), "{answers:?}");
    for r in &items {
        assert_eq!(
            w.status(&r.claim.delivery.id).await,
            DeliveryStatus::Delivered
        );
    }
}

#[tokio::test]
async fn a_group_carries_at_most_max_records() {
    let (w, flaky) = flaky_world(settings(10), |_| {}).await;
    w.destination("a", json!({})).await;
    let items = w.leased("a", MAX_RECORDS + 1, now_ms() + 600_000).await;
    let answers = record_all(&w, &items).await;
    assert_eq!(flaky.batches(), [MAX_RECORDS, 1]);
    assert!(answers.iter().all(|a| *a == recorded()));
    let counts = w.sql.queue_counts("a").await.unwrap();
    assert_eq!((counts.pending, counts.in_flight), (0, 0));
}

#[tokio::test]
async fn an_attempt_waits_for_its_record_and_later_ones_are_grouped() {
    let (w, flaky) = flaky_world(settings(10), |f| {
        f.gate = Some(tokio::sync::Semaphore::new(0));
    })
    .await;
    w.destination("a", json!({})).await;
    start_recorder(&w);
    let mut items = w.leased("a", 4, now_ms() + 60_000).await;
    let until = now_ms() + 60_000;
    let first = items.remove(0);
    let first_id = first.claim.delivery.id.clone();
    let ctx = w.ctx.clone();
    let finish = delivered(&first);
    let waiting = tokio::spawn(async move { record(&ctx, finish, until).await });
    herald_testkit::eventually(Duration::from_secs(10), "the first group", || async {
        (flaky.batches().len() == 1).then_some(())
    })
    .await;
    // The store has not answered: the record is neither dropped nor done.
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    assert_eq!(w.status(&first_id).await, DeliveryStatus::InFlight);
    // Three more finish meanwhile: they wait in the channel and go together.
    let mut later = Vec::new();
    for r in &items {
        let ctx = w.ctx.clone();
        let finish = delivered(r);
        later.push(tokio::spawn(
            async move { record(&ctx, finish, until).await },
        ));
    }
    // Let them run up to their wait for an answer: each has sent its record by then.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(later.iter().all(|h| !h.is_finished()));
    assert_eq!(
        flaky.batches(),
        [1],
        "the later ones wait behind the first group"
    );
    flaky.gate.as_ref().unwrap().add_permits(2);
    waiting.await.unwrap();
    for h in later {
        h.await.unwrap();
    }
    assert_eq!(flaky.batches(), [1, 3]);
    assert_eq!(w.status(&first_id).await, DeliveryStatus::Delivered);
    for r in &items {
        assert_eq!(
            w.status(&r.claim.delivery.id).await,
            DeliveryStatus::Delivered
        );
    }
}

#[tokio::test]
async fn a_group_the_store_refused_is_retried_until_it_answers() {
    let (w, flaky) = flaky_world(settings(10), |f| f.fail = 2.into()).await;
    w.destination("a", json!({})).await;
    start_recorder(&w);
    let items = w.leased("a", 2, now_ms() + 60_000).await;
    let until = now_ms() + 60_000;
    // Both are sent before the recorder runs: one group, refused twice, then stored.
    tokio::join!(
        record(&w.ctx, delivered(&items[0]), until),
        record(&w.ctx, delivered(&items[1]), until),
    );
    let batches = flaky.batches();
    assert_eq!(batches[0], 2, "{batches:?}");
    // Both refusals were spent, and what followed stored both (in one group or two,
    // depending on how their backoffs meet).
    assert_eq!(flaky.fail.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(batches.len() >= 3, "{batches:?}");
    for r in &items {
        let id = &r.claim.delivery.id;
        assert_eq!(w.status(id).await, DeliveryStatus::Delivered);
        assert_eq!(
            w.sql.list_attempts(id).await.unwrap().len(),
            1,
            "recorded once"
        );
    }
}

#[tokio::test]
async fn a_record_is_given_up_once_its_lease_has_ended() {
    let (w, flaky) = flaky_world(settings(10), |f| f.fail = u32::MAX.into()).await;
    w.destination("a", json!({})).await;
    start_recorder(&w);
    let r = w.leased("a", 1, now_ms() + 60_000).await.remove(0);
    // Retrying past the lease would record over another worker's claim: it stops.
    record(&w.ctx, delivered(&r), now_ms() - 1).await;
    assert_eq!(flaky.batches(), [1]);
    let id = &r.claim.delivery.id;
    assert_eq!(w.status(id).await, DeliveryStatus::InFlight);
    assert!(w.sql.list_attempts(id).await.unwrap().is_empty());
}
