//! Lease-at-accept: fresh deliveries of plain, usable queues are leased in the accept's
//! transaction as far as the queue has room ahead; the room is given back when the
//! leases are dropped without hand-over; committed ones start without a claim round.

use super::*;

fn leasing(w: &World, dest: &str) -> u32 {
    w.sched().leasing.get(dest).copied().unwrap_or(0)
}

fn room(w: &World, dest: &str) -> u32 {
    let d = w.dest(dest);
    w.sched().lease_room(dest, w.dispatcher().limit(&w.ctx, &d))
}

#[tokio::test]
async fn deliveries_are_leased_as_far_as_the_queue_has_room_ahead() {
    let w = world(settings(10)).await;
    w.destination("a", json!({"max_in_flight": 2})).await;
    let mut batch = vec![message("a"), message("a"), message("a")];
    let now = now_ms();
    let leases = w.dispatcher().lease_at_accept(&w.ctx, &mut batch, &[], now);
    let leased: Vec<bool> = batch
        .iter()
        .map(|m| m.deliveries[0].lease.is_some())
        .collect();
    assert_eq!(leased, [true, true, false]);
    assert!(!leases.all, "the third waits for a claim round");
    assert!(!leases.is_empty());
    let l0 = batch[0].deliveries[0].lease.clone().unwrap();
    assert_eq!(
        l0,
        batch[1].deliveries[0].lease.clone().unwrap(),
        "one token per call"
    );
    assert_eq!(l0.until, now + 60_000);
    assert_eq!(leasing(&w, "a"), 2);
    assert_eq!(room(&w, "a"), 0);
    // While those wait for their commit, a second accept finds no room.
    let mut more = vec![message("a")];
    let again = w.dispatcher().lease_at_accept(&w.ctx, &mut more, &[], now);
    assert!(again.is_empty() && !again.all);
    assert!(more[0].deliveries[0].lease.is_none());
    drop((leases, again));
}

#[tokio::test]
async fn dropped_without_hand_over_the_leases_free_their_room() {
    let w = world(settings(10)).await;
    w.destination("a", json!({"max_in_flight": 2})).await;
    w.destination("b", json!({"max_in_flight": 3})).await;
    let mut batch = vec![message("a"), message("b"), message("a")];
    let leases = w
        .dispatcher()
        .lease_at_accept(&w.ctx, &mut batch, &[], now_ms());
    assert!(leases.all);
    assert_eq!((room(&w, "a"), room(&w, "b")), (0, 2));
    // The accept's task failed before `accept_committed`.
    drop(leases);
    assert!(w.sched().leasing.is_empty());
    assert_eq!((room(&w, "a"), room(&w, "b")), (2, 3));
}

#[tokio::test]
async fn only_plain_usable_queues_are_leased_at_accept() {
    let w = world(settings(10)).await;
    w.destination("plain", json!({})).await;
    w.destination("fifo", json!({"ordered": true})).await;
    w.destination("limited", json!({"rate_limit": "5/s"})).await;
    w.destination("paused", json!({})).await;
    w.destination("disabled", json!({})).await;
    w.destination("tripped", json!({})).await;
    let now = now_ms();
    w.dest("paused").pause_until(now + 60_000);
    w.dest("disabled").disable("gone".into());
    *w.dest("tripped").breaker.lock().unwrap() = open_breaker(now + 60_000);
    let names = ["plain", "fifo", "limited", "paused", "disabled", "tripped"];
    let mut m = message("plain");
    m.deliveries = names
        .iter()
        .map(|n| NewDelivery {
            id: DeliveryId::new(),
            destination: n.to_string(),
            lease: None,
        })
        .collect();
    let mut batch = vec![m];
    let leases = w.dispatcher().lease_at_accept(&w.ctx, &mut batch, &[], now);
    let leased: Vec<&str> = batch[0]
        .deliveries
        .iter()
        .filter(|d| d.lease.is_some())
        .map(|d| d.destination.as_str())
        .collect();
    assert_eq!(leased, ["plain"]);
    assert!(!leases.all);
    assert_eq!(w.sched().leasing.keys().collect::<Vec<_>>(), ["plain"]);
}

#[tokio::test]
async fn nothing_is_leased_at_accept_on_a_shared_store_or_when_stopping() {
    let (w, _flaky) = flaky_world(settings(10), |f| f.shared = true).await;
    w.destination("a", json!({})).await;
    let mut batch = vec![message("a")];
    let leases = w
        .dispatcher()
        .lease_at_accept(&w.ctx, &mut batch, &[], now_ms());
    assert!(leases.is_empty() && !leases.all);
    assert!(batch[0].deliveries[0].lease.is_none());

    let w = world(settings(10)).await;
    w.destination("a", json!({})).await;
    w.dispatcher().inner.stopping.store(true, Ordering::Relaxed);
    let mut batch = vec![message("a")];
    let leases = w
        .dispatcher()
        .lease_at_accept(&w.ctx, &mut batch, &[], now_ms());
    assert!(leases.is_empty() && !leases.all);
    assert!(batch[0].deliveries[0].lease.is_none());
}

#[tokio::test]
async fn committed_leases_are_attempted_without_a_claim_round() {
    let w = world(settings(10)).await;
    w.destination("a", json!({})).await;
    let mut batch = vec![message("a"), message("a")];
    let ids: Vec<DeliveryId> = batch.iter().map(|m| m.deliveries[0].id.clone()).collect();
    let leases = w
        .dispatcher()
        .lease_at_accept(&w.ctx, &mut batch, &[], now_ms());
    assert!(leases.all);
    let outcomes = w.ctx.store.accept_messages(batch).await.unwrap();
    for id in &ids {
        assert_eq!(w.status(id).await, DeliveryStatus::InFlight);
    }
    // No claim loop runs in this test: only the hand-over can start them.
    w.dispatcher()
        .accept_committed(&w.ctx, leases, Some(&outcomes))
        .await;
    assert_eq!(leasing(&w, "a"), 0);
    for id in &ids {
        w.wait_status(id, DeliveryStatus::Delivered).await;
    }
    assert_eq!(w.rx.count(), 2);
}

#[tokio::test]
async fn a_delivery_leased_at_accept_is_sent_from_the_parsed_message() {
    let w = world(settings(10)).await;
    w.destination("a", json!({})).await;
    let mut batch = vec![message("a")];
    let id = batch[0].deliveries[0].id.clone();
    // What ingest parsed, told apart from the stored JSON ("hi") by its text: the attempt
    // must send this one, not parse the stored body again.
    let parsed = Arc::new(Message {
        id: batch[0].id.clone(),
        event_type: batch[0].event_type.clone(),
        idempotency_key: None,
        created_at: batch[0].created_at,
        body: serde_json::from_value(json!({"text": "as parsed"})).unwrap(),
    });
    let leases = w
        .dispatcher()
        .lease_at_accept(&w.ctx, &mut batch, &[parsed], now_ms());
    let outcomes = w.ctx.store.accept_messages(batch).await.unwrap();
    w.dispatcher()
        .accept_committed(&w.ctx, leases, Some(&outcomes))
        .await;
    w.wait_status(&id, DeliveryStatus::Delivered).await;
    let sent = w.rx.received();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].text().contains("as parsed"), "{}", sent[0].text());
}

#[tokio::test]
async fn what_the_accept_did_not_store_is_not_started() {
    let w = world(settings(10)).await;
    w.destination("a", json!({})).await;
    // The accept failed: nothing stored, nothing to start, the room is free again.
    let mut batch = vec![message("a"), message("a")];
    let leases = w
        .dispatcher()
        .lease_at_accept(&w.ctx, &mut batch, &[], now_ms());
    w.dispatcher().accept_committed(&w.ctx, leases, None).await;
    assert_eq!(leasing(&w, "a"), 0);
    assert_eq!(w.sched().queued("a"), 0);
    assert_eq!(w.dispatcher().in_flight(), 0);
    // Stored for one message only (the other replayed an idempotency key): one starts.
    let mut batch = vec![message("a"), message("a")];
    let stored = batch[0].deliveries[0].id.clone();
    let leases = w
        .dispatcher()
        .lease_at_accept(&w.ctx, &mut batch, &[], now_ms());
    let outcomes = w
        .ctx
        .store
        .accept_messages(vec![batch.remove(0)])
        .await
        .unwrap();
    let outcomes = [
        outcomes[0].clone(),
        AcceptOutcome::Replayed {
            response: "{}".into(),
        },
    ];
    w.dispatcher()
        .accept_committed(&w.ctx, leases, Some(&outcomes))
        .await;
    assert_eq!(leasing(&w, "a"), 0);
    w.wait_status(&stored, DeliveryStatus::Delivered).await;
    assert_eq!(w.rx.count(), 1);
}

#[tokio::test]
async fn leases_committed_during_shutdown_are_given_back() {
    let w = world(settings(10)).await;
    w.destination("a", json!({})).await;
    let mut batch = vec![message("a")];
    let id = batch[0].deliveries[0].id.clone();
    let leases = w
        .dispatcher()
        .lease_at_accept(&w.ctx, &mut batch, &[], now_ms());
    let outcomes = w.ctx.store.accept_messages(batch).await.unwrap();
    w.dispatcher().shutdown(&w.ctx, Duration::ZERO).await;
    w.dispatcher()
        .accept_committed(&w.ctx, leases, Some(&outcomes))
        .await;
    assert_eq!(w.status(&id).await, DeliveryStatus::Pending);
    assert!(w.sched().ready.is_empty());
    assert_eq!(leasing(&w, "a"), 0);
    assert_eq!(w.rx.count(), 0);
}
