//! One attempt, from claim to record: what changed since the claim is respected, the
//! receiver's answer decides the next state, and shutdown gives back what still runs.

use super::*;
use herald_testkit::receiver::Reply;

async fn one(w: &World, dest: &str) -> Ready {
    let until = now_ms() + lease(&w.ctx, &w.dest(dest)).as_millis() as i64;
    w.leased(dest, 1, until).await.remove(0)
}

#[tokio::test]
async fn an_answered_attempt_frees_its_slot_and_is_recorded() {
    let w = world(settings(10)).await;
    w.destination("a", json!({})).await;
    let r = one(&w, "a").await;
    let id = r.claim.delivery.id.clone();
    let slot = Slot::take(w.dispatcher(), "a");
    run_attempt(&w.ctx, r.claim, None, false, slot).await;
    assert_eq!(w.rx.count(), 1);
    assert_eq!(w.status(&id).await, DeliveryStatus::Delivered);
    assert_eq!(w.sql.list_attempts(&id).await.unwrap().len(), 1);
    assert_eq!(w.dispatcher().in_flight(), 0);
    let s = w.sched();
    assert_eq!((s.busy["a"], s.held["a"]), (0, 0));
    assert!(
        s.attempt_ms.contains_key("a"),
        "its time feeds the lease-ahead estimate"
    );
}

#[tokio::test]
async fn a_destination_unusable_since_the_claim_gets_its_delivery_back_untouched() {
    let w = world(settings(10)).await;
    w.destination("a", json!({})).await;
    let r = one(&w, "a").await;
    let id = r.claim.delivery.id.clone();
    w.dest("a").disable("gone".into());
    let slot = Slot::take(w.dispatcher(), "a");
    run_attempt(&w.ctx, r.claim, None, false, slot).await;
    assert_eq!(w.rx.count(), 0);
    let d = w.sql.get_delivery(&id).await.unwrap().unwrap();
    assert_eq!((d.status, d.attempt_count), (DeliveryStatus::Pending, 0));
    assert_eq!(w.dispatcher().in_flight(), 0);
}

#[tokio::test]
async fn the_probe_is_attempted_through_an_open_breaker() {
    let w = world(settings(10)).await;
    w.destination("a", json!({})).await;
    *w.dest("a").breaker.lock().unwrap() = open_breaker(now_ms() - 1);
    let r = one(&w, "a").await;
    let id = r.claim.delivery.id.clone();
    let slot = Slot::take(w.dispatcher(), "a");
    run_attempt(&w.ctx, r.claim, None, true, slot).await;
    assert_eq!(w.rx.count(), 1);
    assert_eq!(w.status(&id).await, DeliveryStatus::Delivered);
}

#[tokio::test]
async fn retry_after_pauses_the_destination_and_reschedules() {
    let w = world(settings(10)).await;
    w.destination("a", json!({})).await;
    w.rx.push(Reply::status(429).header("retry-after", "30"));
    let r = one(&w, "a").await;
    let id = r.claim.delivery.id.clone();
    let slot = Slot::take(w.dispatcher(), "a");
    let before = now_ms();
    run_attempt(&w.ctx, r.claim, None, false, slot).await;
    assert_eq!(w.rx.count(), 1);
    let d = w.sql.get_delivery(&id).await.unwrap().unwrap();
    assert_eq!((d.status, d.attempt_count), (DeliveryStatus::Pending, 1));
    assert!(d.next_attempt_at.unwrap() >= before + 30_000);
    // Paused here at once (no claim until it ends) and in the store for every node.
    assert!(w.dest("a").is_paused(now_ms()));
    let row = w.sql.get_destination("a").await.unwrap().unwrap();
    assert!(row.paused_until.unwrap() >= before + 30_000);
}

#[tokio::test]
async fn an_unreadable_stored_message_is_dead_without_a_request() {
    let w = world(settings(10)).await;
    w.destination("a", json!({})).await;
    let mut r = one(&w, "a").await;
    r.claim.message.body = "{not json".into();
    let id = r.claim.delivery.id.clone();
    let slot = Slot::take(w.dispatcher(), "a");
    run_attempt(&w.ctx, r.claim, None, false, slot).await;
    assert_eq!(w.rx.count(), 0);
    assert_eq!(w.status(&id).await, DeliveryStatus::Dead);
}

#[tokio::test]
async fn failing_over_unattempted_hands_the_delivery_to_the_fallback() {
    let w = world(settings(10)).await;
    w.destination("spare", json!({})).await;
    w.destination(
        "a",
        json!({"fallback": {"destination": "spare", "when": "failure"}}),
    )
    .await;
    let r = one(&w, "a").await;
    let id = r.claim.delivery.id.clone();
    fail_over_unattempted(&w.ctx, r.claim, "spare".into()).await;
    assert_eq!(w.rx.count(), 0);
    assert_eq!(w.status(&id).await, DeliveryStatus::FailedOver);
    assert!(w.sql.list_attempts(&id).await.unwrap().is_empty());
    let spare = w.sql.queue_counts("spare").await.unwrap();
    assert_eq!(spare.pending, 1);
}

#[tokio::test]
async fn shutdown_aborts_what_outlives_the_grace_and_gives_its_lease_back() {
    let w = world(settings(10)).await;
    w.destination("a", json!({})).await;
    w.rx.push(Reply::ok().delay(Duration::from_secs(60)));
    let r = one(&w, "a").await;
    let id = r.claim.delivery.id.clone();
    let slot = Slot::take(w.dispatcher(), "a");
    w.dispatcher()
        .start(w.ctx.clone(), r.claim, None, Mode::Send, slot);
    w.rx.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(w.dispatcher().running(), 1);
    w.dispatcher()
        .shutdown(&w.ctx, Duration::from_millis(100))
        .await;
    assert_eq!(w.dispatcher().running(), 0);
    let d = w.sql.get_delivery(&id).await.unwrap().unwrap();
    assert_eq!((d.status, d.attempt_count), (DeliveryStatus::Pending, 0));
}
