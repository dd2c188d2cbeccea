//! The ready queue and slots: `pump` starts what the limits allow, destinations in turn,
//! never a delivery whose lease could end during its attempt, and what cannot be started
//! goes back to the store (also at shutdown).

use super::*;

fn lease_for(w: &World, dest: &str) -> i64 {
    now_ms() + lease(&w.ctx, &w.dest(dest)).as_millis() as i64
}

fn busy(w: &World, dest: &str) -> u32 {
    w.sched().busy.get(dest).copied().unwrap_or(0)
}

#[tokio::test]
async fn pump_starts_within_global_and_destination_limits() {
    let w = world(settings(3)).await;
    for name in ["a", "b"] {
        w.destination(name, json!({"max_in_flight": 2})).await;
        let items = w.leased(name, 3, lease_for(&w, name)).await;
        w.push_ready(items);
    }
    // Nothing is given back, so `pump` does not wait: the started tasks have not run yet
    // when it returns, and the counts are exactly what it started.
    w.dispatcher().pump(&w.ctx).await;
    assert_eq!(w.dispatcher().in_flight(), 3);
    assert_eq!((busy(&w, "a"), busy(&w, "b")), (2, 1));
    let queued = {
        let s = w.sched();
        (s.queued("a"), s.queued("b"))
    };
    assert_eq!(queued, (1, 2));
    assert_eq!(w.dispatcher().running(), 3);
}

#[tokio::test]
async fn pump_takes_destinations_in_turn() {
    let w = world(settings(1)).await;
    for name in ["a", "b"] {
        w.destination(name, json!({})).await;
        let items = w.leased(name, 1, lease_for(&w, name)).await;
        w.push_ready(items);
    }
    w.sched().turn = 1;
    w.dispatcher().pump(&w.ctx).await;
    // Names in order are [a, b]; the second round starts from b.
    assert_eq!((busy(&w, "a"), busy(&w, "b")), (0, 1));
    assert_eq!(w.sched().turn, 2);
}

#[tokio::test]
async fn a_delivery_whose_lease_ends_too_soon_is_given_back_not_started() {
    let w = world(settings(10)).await;
    w.destination("a", json!({"timeout": "10s"})).await;
    let now = now_ms();
    let bound = (Duration::from_secs(10) + LEASE_MARGIN).as_millis() as i64;
    // Stored with a long lease; the ready queue believes the first ends just short of
    // timeout + margin from now, the second comfortably after.
    let short = w.leased("a", 1, now + 60_000).await.pop().unwrap();
    let long = w.leased("a", 1, now + 60_000).await.pop().unwrap();
    let (short_id, long_id) = (
        short.claim.delivery.id.clone(),
        long.claim.delivery.id.clone(),
    );
    w.push_ready(vec![
        Ready {
            lease_until: now + bound - 2_000,
            ..short
        },
        Ready {
            lease_until: now + bound + 10_000,
            ..long
        },
    ]);
    w.dispatcher().pump(&w.ctx).await;
    assert_eq!(w.status(&short_id).await, DeliveryStatus::Pending);
    w.wait_status(&long_id, DeliveryStatus::Delivered).await;
    assert_eq!(
        w.rx.count(),
        1,
        "only the delivery with lease enough was attempted"
    );
    assert_eq!(w.status(&short_id).await, DeliveryStatus::Pending);
}

#[tokio::test]
async fn the_queue_of_a_destination_no_longer_usable_goes_back_whole() {
    let w = world(settings(10)).await;
    w.destination("a", json!({})).await;
    w.destination("b", json!({})).await;
    let a = w.leased("a", 2, lease_for(&w, "a")).await;
    let ids: Vec<DeliveryId> = a.iter().map(|r| r.claim.delivery.id.clone()).collect();
    w.push_ready(a);
    // b's queue is usable but has no free slot: it waits.
    let b = w.leased("b", 1, lease_for(&w, "b")).await;
    let b_id = b[0].claim.delivery.id.clone();
    w.push_ready(b);
    let _slots: Vec<Slot> = (0..4).map(|_| Slot::take(w.dispatcher(), "b")).collect();
    w.dest("a").disable("gone".into());
    w.dispatcher().pump(&w.ctx).await;
    assert_eq!(w.sched().queued("a"), 0);
    assert!(!w.sched().ready.contains_key("a"));
    for id in &ids {
        assert_eq!(w.status(id).await, DeliveryStatus::Pending);
    }
    assert_eq!(w.sched().queued("b"), 1);
    assert_eq!(w.status(&b_id).await, DeliveryStatus::InFlight);
    assert_eq!(w.rx.count(), 0);
}

#[tokio::test]
async fn shutdown_gives_the_ready_queue_back() {
    let w = world(settings(10)).await;
    w.destination("a", json!({})).await;
    let items = w.leased("a", 3, lease_for(&w, "a")).await;
    let ids: Vec<DeliveryId> = items.iter().map(|r| r.claim.delivery.id.clone()).collect();
    w.push_ready(items);
    w.dispatcher().shutdown(&w.ctx, Duration::ZERO).await;
    assert!(w.sched().ready.is_empty());
    for id in &ids {
        assert_eq!(w.status(id).await, DeliveryStatus::Pending);
    }
    // Stopped: nothing more starts.
    let late = w.leased("a", 1, lease_for(&w, "a")).await;
    w.push_ready(late);
    w.dispatcher().pump(&w.ctx).await;
    assert_eq!(w.dispatcher().in_flight(), 0);
    assert_eq!(w.rx.count(), 0);
}
