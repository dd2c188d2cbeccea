//! Accepting: leases at accept, idempotency keys within and across batches and nodes.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_leased_at_accept_is_in_flight_on_one_node_and_pending_on_a_shared_store() {
    for be in backends("acceptlease").await {
        let now = herald_core::clock::now_ms();
        let m = leased_message("hook", "lease-accept", now + 1_000);
        let id = m.deliveries[0].id.clone();
        be.a.accept_messages(vec![m]).await.unwrap();
        let stored = be.a.get_delivery(&id).await.unwrap().unwrap();
        let taken =
            be.b.claim(claim(now, "lease-b", "hook", 10, 1_000))
                .await
                .unwrap();
        if be.a.single_node() {
            assert_eq!(stored.status, DeliveryStatus::InFlight, "{}", be.name);
            assert!(
                taken.claimed.is_empty(),
                "{}: leased, not claimable",
                be.name
            );
            // The lease is the accept's: its holder records the attempt.
            let record = be.a.get_message(&stored.message_id).await.unwrap().unwrap();
            let claimed = ClaimedDelivery {
                delivery: stored,
                message: record,
                lease_token: LeaseToken::stored("lease-accept".into()),
            };
            let done = finish(
                &claimed,
                NextState::Delivered,
                AttemptOutcome::Delivered,
                now,
            );
            assert!(
                be.a.finish_attempt(done).await.unwrap().recorded,
                "{}",
                be.name
            );
            let d = be.a.get_delivery(&id).await.unwrap().unwrap();
            assert_eq!(d.status, DeliveryStatus::Delivered);
            assert_eq!(d.attempt_count, 1);

            // Unattempted past its lease (the node stalled): taken back like any lease.
            let m = leased_message("hook", "lease-accept-2", now + 1_000);
            let id = m.deliveries[0].id.clone();
            be.a.accept_messages(vec![m]).await.unwrap();
            let later =
                be.a.claim(claim(now + 5_000, "lease-c", "hook", 10, 1_000))
                    .await
                    .unwrap();
            assert_eq!(later.recovered, 1, "{}", be.name);
            assert_eq!(later.claimed.len(), 1);
            assert_eq!(later.claimed[0].delivery.id, id);
        } else {
            // A shared store leaves fresh work to whichever node claims it.
            assert_eq!(stored.status, DeliveryStatus::Pending, "{}", be.name);
            assert_eq!(taken.claimed.len(), 1, "{}", be.name);
            assert_eq!(taken.claimed[0].delivery.id, id);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_replay_or_conflict_within_one_batch_and_across_batches() {
    for be in backends("idempotency").await {
        let store = &be.a;
        let a = message("hook", Some(("k1", "h1")));
        let out = store
            .accept_messages(vec![
                a.clone(),
                message("hook", Some(("k1", "h1"))),
                message("hook", Some(("k1", "h2"))),
            ])
            .await
            .unwrap();
        assert_eq!(out[0], AcceptOutcome::Accepted);
        assert_eq!(
            out[1],
            AcceptOutcome::Replayed {
                response: format!("{{\"id\":\"{}\"}}", a.id)
            }
        );
        assert_eq!(out[2], AcceptOutcome::KeyConflict);
        let again =
            be.b.accept_messages(vec![message("hook", Some(("k1", "h1")))])
                .await
                .unwrap();
        assert!(
            matches!(again[0], AcceptOutcome::Replayed { .. }),
            "{}: the other node replays",
            be.name
        );
        let all = store
            .list_deliveries(&DeliveryQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(all.len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_sent_to_two_nodes_at_once_is_accepted_once() {
    for be in backends("idemrace").await {
        for round in 0..20 {
            let key = format!("race-{round}");
            let (x, y) = tokio::join!(
                be.a.accept_messages(vec![message("hook", Some((&key, "h")))]),
                be.b.accept_messages(vec![message("hook", Some((&key, "h")))]),
            );
            let outcomes = [x.unwrap().remove(0), y.unwrap().remove(0)];
            let accepted = outcomes
                .iter()
                .filter(|o| **o == AcceptOutcome::Accepted)
                .count();
            let replayed = outcomes
                .iter()
                .filter(|o| matches!(o, AcceptOutcome::Replayed { .. }))
                .count();
            assert_eq!(
                (accepted, replayed),
                (1, 1),
                "{} round {round}: {outcomes:?}",
                be.name
            );
        }
        let all =
            be.a.list_deliveries(&DeliveryQuery {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(all.len(), 20, "{}: one delivery per key", be.name);
    }
}
