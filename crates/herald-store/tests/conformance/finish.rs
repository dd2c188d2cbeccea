//! Recording attempts: a batch leaves what one by one leaves.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_recorded_together_leave_what_recording_them_one_by_one_leaves() {
    let cfg = herald_core::breaker::BreakerConfig {
        failure_threshold: 1,
        cooldown_ms: 1_000,
        max_cooldown_ms: 10_000,
    };
    let event = |failure| {
        Some(BreakerEvent {
            config: cfg,
            failure,
        })
    };
    for be in backends("finishmany").await {
        destination(&be.a, "hook").await;
        destination(&be.a, "flaky").await;
        // One failure opens hook's breaker; after the cooldown this node probes.
        be.a.accept_messages(vec![message("hook", None)])
            .await
            .unwrap();
        // Taken after the accept, so the message is due at `t`.
        let t = herald_core::clock::now_ms();
        let first =
            be.a.claim(claim(t, "t0", "hook", 1, 600_000))
                .await
                .unwrap();
        let failed = FinishAttempt {
            breaker: event(true),
            ..finish(
                &first.claimed[0],
                NextState::Retry { at: t },
                AttemptOutcome::Retry,
                t,
            )
        };
        let opened = be.a.finish_attempt(failed).await.unwrap();
        assert_eq!(opened.breaker_transition.as_deref(), Some("breaker.opened"));
        let mut batch: Vec<_> = (0..4).map(|_| message("hook", None)).collect();
        batch.extend((0..2).map(|_| message("flaky", None)));
        be.a.accept_messages(batch).await.unwrap();
        // After the cooldown, and after every message is due.
        let later = (t + 1_000).max(herald_core::clock::now_ms());
        assert!(
            be.a.start_probe("hook", later + 60_000, later)
                .await
                .unwrap()
                .is_some()
        );
        let hook =
            be.a.claim(claim(later, "t1", "hook", 10, 600_000))
                .await
                .unwrap();
        let flaky =
            be.a.claim(claim(later, "t2", "flaky", 10, 600_000))
                .await
                .unwrap();
        assert_eq!((hook.claimed.len(), flaky.claimed.len()), (5, 2));

        // hook: every attempt delivered (written together), one of them on a lost lease;
        // flaky: one delivered, one failed (recorded one by one, in order).
        let done = |c: &ClaimedDelivery, at: i64| FinishAttempt {
            breaker: event(false),
            ..finish(c, NextState::Delivered, AttemptOutcome::Delivered, at)
        };
        let mut finishes: Vec<FinishAttempt> = hook
            .claimed
            .iter()
            .enumerate()
            .map(|(i, c)| done(c, later + i as i64))
            .collect();
        finishes[3].lease_token = LeaseToken::stored("stolen".into());
        finishes.push(done(&flaky.claimed[0], later));
        finishes.push(FinishAttempt {
            breaker: event(true),
            ..finish(
                &flaky.claimed[1],
                NextState::Retry { at: later + 60_000 },
                AttemptOutcome::Retry,
                later,
            )
        });
        let out = be.a.finish_attempts(finishes.clone()).await.unwrap();

        let recorded: Vec<bool> = out.iter().map(|o| o.recorded).collect();
        assert_eq!(
            recorded,
            [true, true, true, false, true, true, true],
            "{}",
            be.name
        );
        let transitions: Vec<_> = out[..5]
            .iter()
            .filter_map(|o| o.breaker_transition.as_deref())
            .collect();
        assert_eq!(transitions, ["breaker.closed"], "{}: closed once", be.name);
        for o in [&out[0], &out[1], &out[2], &out[4]] {
            assert!(o.breaker.as_deref().unwrap().contains("closed"), "{o:?}");
        }
        // The flaky destination's failure, after its success, opens its breaker.
        assert_eq!(out[6].breaker_transition.as_deref(), Some("breaker.opened"));

        for (i, f) in finishes.iter().enumerate() {
            let d = be.a.get_delivery(&f.delivery_id).await.unwrap().unwrap();
            let attempts = be.a.list_attempts(&f.delivery_id).await.unwrap();
            let (status, count) = match i {
                3 => (DeliveryStatus::InFlight, 0),
                6 => (DeliveryStatus::Pending, 1),
                _ if f.delivery_id == first.claimed[0].delivery.id => {
                    (DeliveryStatus::Delivered, 2)
                }
                _ => (DeliveryStatus::Delivered, 1),
            };
            assert_eq!(
                (d.status, d.attempt_count, attempts.len()),
                (status, count, count as usize),
                "{}: delivery {i}",
                be.name
            );
            if count > 0 {
                let last = attempts.last().unwrap();
                assert_eq!(last.number, count);
                assert_eq!(last.status_code, Some(200));
                assert_eq!(d.last_status_code, Some(200));
            }
        }
        let row = be.a.get_destination("hook").await.unwrap().unwrap();
        assert_eq!(row.last_success_at, Some(later + 4), "{}", be.name);
        assert!(row.breaker.as_deref().unwrap().contains("closed"));
        let flaky_row = be.a.get_destination("flaky").await.unwrap().unwrap();
        assert_eq!(flaky_row.failing_since, Some(later));

        let chain = whole_chain(&be.a).await;
        assert!(verify_chain(&chain).ok, "{}", be.name);
        let delivered: Vec<_> = chain
            .iter()
            .filter(|e| e.action == "delivery.delivered")
            .map(|e| {
                (
                    e.resource.clone(),
                    e.detail["attempt"].as_i64().unwrap(),
                    e.detail["message_id"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(delivered.len(), 5, "{}: {delivered:?}", be.name);
        for (id, number, message_id) in &delivered {
            let d =
                be.a.get_delivery(&DeliveryId::stored(id.clone()))
                    .await
                    .unwrap()
                    .unwrap();
            assert_eq!(
                (*number, message_id),
                (i64::from(d.attempt_count), &d.message_id.to_string())
            );
        }
    }
}
