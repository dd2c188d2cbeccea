//! Claims across nodes: leases, rate limits, breakers, pauses, ordered queues, wake-ups.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_lease_cannot_overwrite_a_newer_claim() {
    for be in backends("stalelease").await {
        be.a.accept_messages(vec![message("hook", None)])
            .await
            .unwrap();
        let now = herald_core::clock::now_ms();
        let first =
            be.a.claim(claim(now, "lease-a", "hook", 10, 1_000))
                .await
                .unwrap();
        assert_eq!(first.claimed.len(), 1);
        let id = first.claimed[0].delivery.id.clone();
        assert!(
            be.b.claim(claim(now, "lease-x", "hook", 10, 1_000))
                .await
                .unwrap()
                .claimed
                .is_empty(),
            "{}: leased: not claimable by the other node",
            be.name
        );

        // The first node stalls (or dies) past its lease; the other takes over.
        let later = now + 5_000;
        let second =
            be.b.claim(claim(later, "lease-b", "hook", 10, 1_000))
                .await
                .unwrap();
        assert_eq!(second.recovered, 1);
        assert_eq!(second.claimed.len(), 1);

        let stale = FinishAttempt {
            lease_token: LeaseToken::stored("lease-a".into()),
            ..finish(
                &second.claimed[0],
                NextState::Dead,
                AttemptOutcome::Permanent,
                later,
            )
        };
        assert!(
            !be.a.finish_attempt(stale).await.unwrap().recorded,
            "{}: the stale node is refused",
            be.name
        );
        let fresh = finish(
            &second.claimed[0],
            NextState::Delivered,
            AttemptOutcome::Delivered,
            later,
        );
        assert!(be.b.finish_attempt(fresh).await.unwrap().recorded);
        let d = be.a.get_delivery(&id).await.unwrap().unwrap();
        assert_eq!(d.status, DeliveryStatus::Delivered);
        assert_eq!(d.attempt_count, 1);
        assert_eq!(be.a.list_attempts(&id).await.unwrap().len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_claiming_at_once_never_take_the_same_delivery() {
    for be in backends("skiplocked").await {
        let batch: Vec<_> = (0..300).map(|_| message("hook", None)).collect();
        be.a.accept_messages(batch).await.unwrap();
        let node = |s: Arc<SqlStore>, tag: &'static str| {
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0.. {
                    let now = herald_core::clock::now_ms();
                    let r = s
                        .claim(claim(now, &format!("{tag}-{i}"), "hook", 7, 600_000))
                        .await
                        .unwrap();
                    if r.claimed.is_empty() {
                        break;
                    }
                    ids.extend(r.claimed.into_iter().map(|c| c.delivery.id));
                }
                ids
            })
        };
        let (x, y) = tokio::join!(node(be.a.clone(), "a"), node(be.b.clone(), "b"));
        let (x, y) = (x.unwrap(), y.unwrap());
        let mut all: Vec<_> = x.iter().chain(y.iter()).cloned().collect();
        let total = all.len();
        all.sort();
        all.dedup();
        println!(
            "claims ({}): node a {} + node b {} deliveries, {} distinct",
            be.name,
            x.len(),
            y.len(),
            all.len()
        );
        assert_eq!(total, 300, "{}: every delivery claimed once", be.name);
        assert_eq!(all.len(), 300, "{}: no delivery claimed twice", be.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_for_every_node_together() {
    for be in backends("ratelimit").await {
        destination(&be.a, "limited").await;
        let batch: Vec<_> = (0..50).map(|_| message("limited", None)).collect();
        be.a.accept_messages(batch).await.unwrap();
        let limit = herald_core::rate_limit::RateLimit::from_spec(
            &herald_core::rate_limit::RateLimitSpec::Rate("10/s".into()),
            "rate_limit",
        )
        .unwrap();
        let limited = |now: i64, token: &str| ClaimRequest {
            queues: vec![QueueClaim {
                rate_limit: Some(limit),
                ..claim(now, token, "limited", 100, 600_000).queues[0].clone()
            }],
            ..claim(now, token, "limited", 100, 600_000)
        };
        let t = herald_core::clock::now_ms();
        let a1 = be.a.claim(limited(t, "a1")).await.unwrap();
        let b1 = be.b.claim(limited(t, "b1")).await.unwrap();
        assert_eq!(
            (a1.claimed.len(), b1.claimed.len()),
            (10, 0),
            "{}: the burst is shared",
            be.name
        );
        assert_eq!(b1.rate_limited, vec!["limited".to_string()]);
        assert!(
            b1.next_due_at.is_some_and(|n| n > t && n <= t + 100),
            "{}: wake for the next token: {:?}",
            be.name,
            b1.next_due_at
        );
        let b2 = be.b.claim(limited(t + 500, "b2")).await.unwrap();
        let a2 = be.a.claim(limited(t + 500, "a2")).await.unwrap();
        assert_eq!(
            (b2.claimed.len(), a2.claimed.len()),
            (5, 0),
            "{}: 10/s refills 5 in 500 ms, for both nodes",
            be.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_opened_by_one_node_stops_the_other_and_only_one_probes() {
    let cfg = herald_core::breaker::BreakerConfig {
        failure_threshold: 2,
        cooldown_ms: 1_000,
        max_cooldown_ms: 10_000,
    };
    for be in backends("breaker").await {
        destination(&be.a, "flaky").await;
        let batch: Vec<_> = (0..4).map(|_| message("flaky", None)).collect();
        be.a.accept_messages(batch).await.unwrap();
        let t = herald_core::clock::now_ms();
        // One failure seen by each node: together they reach the threshold.
        let ca =
            be.a.claim(claim(t, "a", "flaky", 1, 600_000))
                .await
                .unwrap()
                .claimed;
        let cb =
            be.b.claim(claim(t, "b", "flaky", 1, 600_000))
                .await
                .unwrap()
                .claimed;
        assert_eq!((ca.len(), cb.len()), (1, 1));
        let failed = |c: &ClaimedDelivery| FinishAttempt {
            breaker: Some(BreakerEvent {
                config: cfg,
                failure: true,
            }),
            ..finish(
                c,
                NextState::Retry { at: t + 60_000 },
                AttemptOutcome::Retry,
                t,
            )
        };
        let first = be.a.finish_attempt(failed(&ca[0])).await.unwrap();
        assert_eq!(first.breaker_transition, None);
        let second = be.b.finish_attempt(failed(&cb[0])).await.unwrap();
        assert_eq!(
            second.breaker_transition.as_deref(),
            Some("breaker.opened"),
            "{}",
            be.name
        );

        let gated = |s: &'static str, now: i64| ClaimRequest {
            queues: vec![QueueClaim {
                require_closed_breaker: true,
                ..claim(now, s, "flaky", 5, 600_000).queues[0].clone()
            }],
            ..claim(now, s, "flaky", 5, 600_000)
        };
        let blocked = be.a.claim(gated("a2", t + 1)).await.unwrap();
        assert!(
            blocked.claimed.is_empty(),
            "{}: node a sees the breaker node b opened",
            be.name
        );
        let seen = blocked
            .destinations
            .iter()
            .find(|d| d.name == "flaky")
            .unwrap();
        assert!(
            seen.breaker.as_deref().unwrap().contains("\"open\""),
            "{:?}",
            seen.breaker
        );

        // After the cooldown exactly one node gets the probe.
        let probe_at = t + 1_000;
        let pa =
            be.a.start_probe("flaky", probe_at + 30_000, probe_at)
                .await
                .unwrap();
        let pb =
            be.b.start_probe("flaky", probe_at + 30_000, probe_at)
                .await
                .unwrap();
        assert!(
            pa.is_some() && pb.is_none(),
            "{}: one probe for the cluster ({pa:?}, {pb:?})",
            be.name
        );
        let audit = whole_chain(&be.a).await;
        let actions: Vec<_> = audit
            .iter()
            .map(|e| e.action.as_str())
            .filter(|a| a.starts_with("breaker."))
            .collect();
        assert_eq!(
            actions,
            ["breaker.opened", "breaker.half_opened"],
            "{}",
            be.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_pause_from_one_node_holds_on_the_other() {
    for be in backends("pause").await {
        destination(&be.a, "slow").await;
        be.a.accept_messages(vec![message("slow", None), message("slow", None)])
            .await
            .unwrap();
        let t = herald_core::clock::now_ms();
        let c =
            be.a.claim(claim(t, "a", "slow", 1, 600_000))
                .await
                .unwrap()
                .claimed;
        let paused = FinishAttempt {
            pause_destination_until: Some(t + 60_000),
            ..finish(
                &c[0],
                NextState::Retry { at: t + 60_000 },
                AttemptOutcome::Retry,
                t,
            )
        };
        be.a.finish_attempt(paused).await.unwrap();
        let r =
            be.b.claim(claim(t + 10, "b", "slow", 5, 600_000))
                .await
                .unwrap();
        assert!(
            r.claimed.is_empty(),
            "{}: paused for the whole cluster",
            be.name
        );
        assert_eq!(r.next_due_at, Some(t + 60_000));
        let after =
            be.b.claim(claim(t + 60_001, "b2", "slow", 5, 600_000))
                .await
                .unwrap();
        assert_eq!(
            after.claimed.len(),
            2,
            "{}: both due once the pause ends",
            be.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_queue_has_one_delivery_in_flight_across_nodes() {
    for be in backends("ordered").await {
        let batch: Vec<_> = (0..5).map(|_| message("fifo", None)).collect();
        be.a.accept_messages(batch).await.unwrap();
        let t = herald_core::clock::now_ms();
        let ordered = |s: &'static str| ClaimRequest {
            queues: vec![QueueClaim {
                ordered: true,
                ..claim(t, s, "fifo", 1, 600_000).queues[0].clone()
            }],
            ..claim(t, s, "fifo", 1, 600_000)
        };
        let (x, y) = tokio::join!(be.a.claim(ordered("a")), be.b.claim(ordered("b")));
        let n = x.unwrap().claimed.len() + y.unwrap().claimed.len();
        assert_eq!(n, 1, "{}: FIFO across nodes", be.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_work_on_one_node_wakes_the_others() {
    for be in backends("notify").await {
        match be.b.remote_signals() {
            None => assert_eq!(be.name, "sqlite", "only a single-node store has no signals"),
            Some(signals) => {
                let wait = |n: std::sync::Arc<tokio::sync::Notify>| async move {
                    tokio::time::timeout(std::time::Duration::from_secs(10), n.notified()).await
                };
                let work = tokio::spawn(wait(signals.work.clone()));
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                be.a.accept_messages(vec![message("hook", None)])
                    .await
                    .unwrap();
                work.await
                    .unwrap()
                    .expect("node b hears node a's new delivery (LISTEN/NOTIFY)");
                let changed = tokio::spawn(wait(signals.config.clone()));
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                destination(&be.a, "fresh").await;
                changed
                    .await
                    .unwrap()
                    .expect("node b hears of node a's new destination");
            }
        }
    }
}
