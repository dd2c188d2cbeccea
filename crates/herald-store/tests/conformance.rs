//! The store conformance suite: every story runs on the SQLite store (real files) and on the
//! Postgres store (a fresh database on a real server), the cluster stories with two stores
//! ("nodes") on one database: group commit, leases, the shared audit chain, idempotency,
//! rate limits, breakers and pauses that hold across nodes.

use herald_core::audit::verify_chain;
use herald_core::delivery::{AttemptOutcome, DeliveryStatus};
use herald_core::ids::{DELIVERY, MESSAGE, new_id};
use herald_store::Location;
use herald_store::sql::{SqlStore, StoreOptions};
use herald_store::*;
use std::sync::Arc;

/// One store under test: "two nodes" are two stores on one database (on SQLite, where one
/// process owns the file, both are the same store).
struct Backend {
    name: &'static str,
    a: Arc<SqlStore>,
    b: Arc<SqlStore>,
    _dir: tempfile::TempDir,
}

/// The SQLite store on a fresh file, and the Postgres store on a fresh database when
/// `HERALD_TEST_POSTGRES_URL` is set: every story runs on both.
async fn backends(label: &str) -> Vec<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = open_sqlite(&dir).await;
    let mut v = vec![Backend {
        name: "sqlite",
        a: sqlite.clone(),
        b: sqlite,
        _dir: dir,
    }];
    if let Some(url) = herald_testkit::postgres::fresh_database(label).await {
        let a = Arc::new(
            SqlStore::open_postgres(&url, StoreOptions::default())
                .await
                .unwrap(),
        );
        let b = Arc::new(
            SqlStore::open_postgres(&url, StoreOptions::default())
                .await
                .unwrap(),
        );
        v.push(Backend {
            name: "postgres",
            a,
            b,
            _dir: tempfile::tempdir().unwrap(),
        });
    }
    v
}

async fn open_sqlite(dir: &tempfile::TempDir) -> Arc<SqlStore> {
    Arc::new(
        SqlStore::open(&dir.path().join("herald.db"), StoreOptions::default())
            .await
            .unwrap(),
    )
}

fn message(dest: &str, key: Option<(&str, &str)>) -> NewMessage {
    let id = new_id(MESSAGE);
    NewMessage {
        id: id.clone(),
        event_type: "test".into(),
        body: r#"{"text":"hi"}"#.into(),
        created_at: herald_core::clock::now_ms(),
        deliveries: vec![NewDelivery {
            id: new_id(DELIVERY),
            destination: dest.into(),
            lease: None,
        }],
        idempotency: key.map(|(k, h)| IdempotencyRecord {
            key: k.into(),
            scoped_key: format!("test/{k}"),
            request_hash: h.into(),
            response: format!("{{\"id\":\"{id}\"}}"),
            expires_at: i64::MAX,
        }),
        actor: "test".into(),
    }
}

/// A message whose delivery is leased at accept (as the dispatcher does on a single node).
fn leased_message(dest: &str, token: &str, until: i64) -> NewMessage {
    let mut m = message(dest, None);
    m.deliveries[0].lease = Some(AcceptLease {
        token: token.into(),
        until,
    });
    m
}

fn claim(now: i64, token: &str, dest: &str, n: u32, lease_ms: i64) -> ClaimRequest {
    ClaimRequest {
        now,
        lease_token: token.into(),
        queues: vec![QueueClaim {
            destination: dest.into(),
            capacity: n,
            lease_ms,
            ordered: false,
            rate_limit: None,
            require_closed_breaker: false,
        }],
    }
}

fn attempt(outcome: AttemptOutcome) -> AttemptRecord {
    AttemptRecord {
        number: 0,
        started_at: 0,
        duration_ms: 1,
        outcome,
        status_code: Some(200),
        error_class: None,
        error: None,
        response_excerpt: String::new(),
    }
}

async fn destination(store: &SqlStore, name: &str) {
    let now = herald_core::clock::now_ms();
    store
        .put_destination(
            DestinationRow {
                name: name.into(),
                kind: "webhook".into(),
                sealed_spec: "sealed".into(),
                enabled: true,
                disabled_reason: None,
                paused_until: None,
                breaker: None,
                failing_since: None,
                last_success_at: None,
                created_at: now,
                updated_at: now,
            },
            "test",
        )
        .await
        .unwrap();
}

fn finish(
    c: &ClaimedDelivery,
    next: NextState,
    outcome: AttemptOutcome,
    now: i64,
) -> FinishAttempt {
    FinishAttempt {
        delivery_id: c.delivery.id.clone(),
        lease_token: c.lease_token.clone(),
        destination: c.delivery.destination.clone(),
        attempt: Some(attempt(outcome)),
        next,
        breaker: None,
        disable_if_failing_since: None,
        pause_destination_until: None,
        disable_destination: None,
        now,
    }
}

async fn whole_chain(store: &SqlStore) -> Vec<herald_core::audit::AuditEntry> {
    let mut all = Vec::new();
    loop {
        let page = store
            .list_audit(
                all.last()
                    .map_or(0, |e: &herald_core::audit::AuditEntry| e.seq),
                1000,
            )
            .await
            .unwrap();
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_share_commits_and_keep_one_valid_audit_chain() {
    for be in backends("auditchain").await {
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let s = if i % 2 == 0 {
                    be.a.clone()
                } else {
                    be.b.clone()
                };
                tokio::spawn(async move {
                    s.accept_messages(vec![message("hook", None)])
                        .await
                        .unwrap()
                })
            })
            .collect();
        // Checkpoints from both nodes while they write.
        let mut checkpoints = 0;
        for s in [&be.a, &be.b, &be.a] {
            let sign: CheckpointFn =
                Box::new(|seq, hash| serde_json::json!({"seq": seq, "hash": hash}));
            if s.append_checkpoint(sign, herald_core::clock::now_ms())
                .await
                .unwrap()
                .is_some()
            {
                checkpoints += 1;
            }
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), vec![AcceptOutcome::Accepted]);
        }
        let (commits, jobs) = be.a.writer_stats();
        println!(
            "group commit ({}): {jobs} store calls in {commits} commits",
            be.name
        );
        assert!(
            commits < jobs,
            "{}: concurrent callers must share commits ({commits} commits for {jobs} jobs)",
            be.name
        );
        let audit = whole_chain(&be.a).await;
        assert_eq!(audit.len(), 200 + checkpoints, "{}", be.name);
        let v = verify_chain(&audit);
        assert!(
            v.ok,
            "{}: one valid chain from both writers: {v:?}",
            be.name
        );
    }
}

/// Accepts waiting together are written as one batch; one that cannot be written (here: a
/// message id that exists already) fails alone and the others are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepts_written_together_fail_alone() {
    for be in backends("acceptsalone").await {
        let first = message("hook", None);
        let taken = first.id.clone();
        be.a.accept_messages(vec![first]).await.unwrap();
        let tasks: Vec<_> = (0..60)
            .map(|i| {
                let s = be.a.clone();
                let mut m = message("hook", None);
                if i == 30 {
                    m.id = taken.clone();
                }
                let id = m.id.clone();
                tokio::spawn(async move { (i, id, s.accept_messages(vec![m]).await) })
            })
            .collect();
        for t in tasks {
            let (i, id, result) = t.await.unwrap();
            if i == 30 {
                assert!(result.is_err(), "{}: a duplicate id is refused", be.name);
                continue;
            }
            assert_eq!(
                result.unwrap(),
                vec![AcceptOutcome::Accepted],
                "{}",
                be.name
            );
            assert!(
                be.a.get_message(&id).await.unwrap().is_some(),
                "{}: {id} stored",
                be.name
            );
        }
        let audit = whole_chain(&be.a).await;
        assert_eq!(
            audit.len(),
            60,
            "{}: one entry per accepted message",
            be.name
        );
        assert!(verify_chain(&audit).ok, "{}", be.name);
    }
}

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
            lease_token: "lease-a".into(),
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
                lease_token: "lease-accept".into(),
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
        finishes[3].lease_token = "stolen".into();
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
            let d = be.a.get_delivery(id).await.unwrap().unwrap();
            assert_eq!(
                (*number, message_id),
                (i64::from(d.attempt_count), &d.message_id)
            );
        }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_copies_whole_into_an_empty_database_and_its_chain_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let src = open_sqlite(&dir).await;
    destination(&src, "hook").await;
    let batch: Vec<_> = (0..250)
        .map(|i| message("hook", Some((&format!("k{i}"), "h"))))
        .collect();
    src.accept_messages(batch).await.unwrap();
    let c = src
        .claim(claim(herald_core::clock::now_ms(), "l", "hook", 3, 600_000))
        .await
        .unwrap()
        .claimed;
    for d in &c {
        src.finish_attempt(finish(
            d,
            NextState::Delivered,
            AttemptOutcome::Delivered,
            herald_core::clock::now_ms(),
        ))
        .await
        .unwrap();
    }
    src.close().await;
    let from = Location::Sqlite(dir.path().join("herald.db"));

    let mut targets = vec![Location::Sqlite(dir.path().join("copy.db"))];
    if let Some(url) = herald_testkit::postgres::fresh_database("copy").await {
        targets.push(Location::Postgres(url));
    }
    for to in targets {
        let report = herald_store::copy::copy_store(&from, &to, |_, _| {})
            .await
            .unwrap();
        let rows = |t: &str| report.iter().find(|(n, _)| n == t).map(|r| r.1);
        assert_eq!(rows("messages"), Some(250), "{}", to.describe());
        assert_eq!(rows("deliveries"), Some(250));
        assert_eq!(rows("attempts"), Some(3));
        assert_eq!(rows("idempotency_keys"), Some(250));
        assert_eq!(rows("destinations"), Some(1));
        let copy = match &to {
            Location::Sqlite(p) => SqlStore::open(p, StoreOptions::default()).await.unwrap(),
            Location::Postgres(u) => SqlStore::open_postgres(u, StoreOptions::default())
                .await
                .unwrap(),
        };
        let chain = whole_chain(&copy).await;
        assert_eq!(chain.len() as u64, rows("audit_log").unwrap());
        assert!(
            verify_chain(&chain).ok,
            "{}: the copied chain verifies",
            to.describe()
        );
        // The copy is a working store: a repeat key is a replay, new messages chain on.
        let again = copy
            .accept_messages(vec![message("hook", Some(("k7", "h")))])
            .await
            .unwrap();
        assert!(matches!(again[0], AcceptOutcome::Replayed { .. }));
        copy.accept_messages(vec![message("hook", None)])
            .await
            .unwrap();
        assert!(verify_chain(&whole_chain(&copy).await).ok);
        copy.close().await;
        let err = herald_store::copy::copy_store(&from, &to, |_, _| {})
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// SQLite semantics: one node owns the file, so a restart releases its leases at once.
async fn everything_survives_reopening_and_leases_of_a_dead_process_are_released() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_sqlite(&dir).await;
    store
        .accept_messages(vec![message("hook", None)])
        .await
        .unwrap();
    let claimed = store
        .claim(claim(
            herald_core::clock::now_ms(),
            "l",
            "hook",
            1,
            3_600_000,
        ))
        .await
        .unwrap();
    assert_eq!(claimed.claimed.len(), 1);
    drop(store); // no close: as if the process died

    let store = open_sqlite(&dir).await;
    let again = store
        .claim(claim(herald_core::clock::now_ms(), "l2", "hook", 1, 1_000))
        .await
        .unwrap();
    assert_eq!(again.claimed.len(), 1, "the old lease was released on open");
    assert!(verify_chain(&store.list_audit(0, 100).await.unwrap()).ok);
    store.close().await;
    assert!(store.ping().await.is_err(), "a closed store says so");
}

fn occurrence(key: &str, now: i64) -> ErrorOccurrence {
    ErrorOccurrence {
        new_id: new_id("grp"),
        key: key.into(),
        service: "shop".into(),
        fingerprint: "ZeroDivisionError · shop.views in divide".into(),
        title: "ZeroDivisionError: division by zero".into(),
        culprit: Some("shop.views in divide".into()),
        level: "error".into(),
        environment: Some("production".into()),
        event: r#"{"message":"boom"}"#.into(),
        policy: herald_core::error_report::AlertPolicy::default(),
        now,
        actor: "token:test".into(),
    }
}

fn alert_builder() -> AlertBuilder {
    Box::new(|g, d| {
        let mut m = message("alerts", None);
        m.event_type = "error.reported".into();
        m.body = format!(r#"{{"text":"{} {}"}}"#, g.id, d.reason.as_str());
        Ok(m)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reports_of_a_new_group_alert_once_and_the_alert_commits_with_the_group() {
    use herald_core::error_report::{AlertReason, GroupStatus};
    for be in backends("errorgroups").await {
        let store = be.a.clone();
        let now = herald_core::clock::now_ms();
        let mut tasks = Vec::new();
        for i in 0..40 {
            // Both nodes report at once.
            let s = if i % 2 == 0 {
                be.a.clone()
            } else {
                be.b.clone()
            };
            tasks.push(tokio::spawn(async move {
                s.record_error(occurrence("k1", now + i), alert_builder())
                    .await
                    .unwrap()
            }));
        }
        let mut outcomes = Vec::new();
        for t in tasks {
            outcomes.push(t.await.unwrap());
        }
        let alerts: Vec<_> = outcomes.iter().filter_map(|o| o.alert.clone()).collect();
        assert_eq!(alerts.len(), 1, "{}: one alert for the cluster", be.name);
        assert_eq!(alerts[0].0.reason, AlertReason::New);
        assert_eq!(outcomes.iter().filter(|o| o.new_group).count(), 1);
        let gid = outcomes[0].group.id.clone();
        assert!(outcomes.iter().all(|o| o.group.id == gid));
        let g = store.get_error_group(&gid).await.unwrap().unwrap();
        assert_eq!((g.state.count, g.state.folded), (40, 39));
        assert_eq!(g.last_message_id.as_deref(), Some(alerts[0].1.as_str()));
        let m = store.get_message(&alerts[0].1).await.unwrap().unwrap();
        assert_eq!(m.event_type, "error.reported");

        // Resolved, then seen again inside the window: the regression waits (pending).
        let r = store
            .set_error_group_status(&gid, GroupStatus::Resolved, "token:test", now + 50)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.state.status, GroupStatus::Resolved);
        let o = store
            .record_error(occurrence("k1", now + 60), alert_builder())
            .await
            .unwrap();
        assert!(o.alert.is_none());
        assert_eq!(o.group.state.pending, Some(AlertReason::Regression));
        let listed = store
            .list_error_groups(&ErrorGroupQuery {
                status: Some(GroupStatus::Unresolved),
                service: Some("shop".into()),
                before: None,
                limit: 10,
            })
            .await
            .unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].state.pending, Some(AlertReason::Regression));
        assert!(
            store
                .set_error_group_status("grp_nope", GroupStatus::Resolved, "t", now)
                .await
                .unwrap()
                .is_none()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_queries_search_by_key_count_the_hour_and_page_the_audit_log_newest_first() {
    for be in backends("dashboard").await {
        let store = be.a.clone();
        let keyed = message("hook", Some(("nightly-backup", "h")));
        store
            .accept_messages(vec![
                keyed.clone(),
                message("hook", None),
                message("crm", None),
            ])
            .await
            .unwrap();
        let found = store
            .list_deliveries(&DeliveryQuery {
                idempotency_key: Some("nightly-backup".into()),
                limit: 50,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].message_id, keyed.id);
        let none = store
            .list_deliveries(&DeliveryQuery {
                idempotency_key: Some("other".into()),
                limit: 50,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(none.is_empty());
        let now = herald_core::clock::now_ms();
        assert_eq!(store.count_messages_since(now - 60_000).await.unwrap(), 3);
        assert_eq!(store.count_messages_since(now + 60_000).await.unwrap(), 0);

        // The CRM delivery fails once with 503 and dies.
        let c = store
            .claim(claim(now, "l", "crm", 1, 10_000))
            .await
            .unwrap();
        let id = c.claimed[0].delivery.id.clone();
        store
            .finish_attempt(FinishAttempt {
                delivery_id: id.clone(),
                lease_token: "l".into(),
                destination: "crm".into(),
                attempt: Some(AttemptRecord {
                    started_at: now,
                    status_code: Some(503),
                    error: Some("HTTP 503".into()),
                    ..attempt(AttemptOutcome::Permanent)
                }),
                next: NextState::Dead,
                breaker: None,
                disable_if_failing_since: None,
                pause_destination_until: None,
                disable_destination: None,
                now,
            })
            .await
            .unwrap();
        let last = store.last_failure("crm", now - 1).await.unwrap().unwrap();
        assert_eq!((last.at, last.status_code), (now, Some(503)));
        assert!(
            store.last_failure("crm", now + 1).await.unwrap().is_none(),
            "outside the window"
        );
        assert!(store.last_failure("hook", 0).await.unwrap().is_none());

        assert_eq!(store.discard_all_dead("crm", "ops", now).await.unwrap(), 1);
        assert_eq!(
            store.get_delivery(&id).await.unwrap().unwrap().status,
            DeliveryStatus::Discarded
        );
        assert_eq!(store.discard_all_dead("crm", "ops", now).await.unwrap(), 0);

        let all = store.list_audit(0, 1000).await.unwrap();
        let newest = store.list_recent_audit(None, 2).await.unwrap();
        assert_eq!(newest.len(), 2);
        assert_eq!(newest[0].seq, all.last().unwrap().seq);
        assert_eq!(newest[0].action, "dlq.discarded_all");
        assert!(newest[0].seq > newest[1].seq);
        let older = store
            .list_recent_audit(Some(newest[1].seq), 1000)
            .await
            .unwrap();
        assert_eq!(older.len() + 2, all.len(), "the pages cover the log once");
        assert!(older.iter().all(|e| e.seq < newest[1].seq));
    }
}

/// The dashboard's searches must stay index ranges at 100k+ deliveries: SQLite's plan for
/// each (the same SQL shapes the store builds) uses an index and needs no sort.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_searches_are_index_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_sqlite(&dir).await;
    store.close().await;
    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{}", dir.path().join("herald.db").display());
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let cols = "d.id, d.message_id, d.status";
    // (SQL, the index it must use, whether a sort is fine: only over one message's few
    // deliveries, one per destination.)
    for (sql, index, small_sort) in [
        (
            format!("SELECT {cols} FROM deliveries d WHERE 1 = 1 AND d.message_id IN (SELECT id FROM messages WHERE idempotency_key = 'k') ORDER BY d.id DESC LIMIT 50"),
            "messages_idempotency",
            true,
        ),
        (
            format!("SELECT {cols} FROM deliveries d WHERE 1 = 1 AND d.destination = 'a' AND d.status = 'dead' AND d.id < 'dlv_x' ORDER BY d.id DESC LIMIT 50"),
            "deliveries_dest_status",
            false,
        ),
        (
            format!("SELECT {cols} FROM deliveries d WHERE 1 = 1 AND d.message_id = 'm' ORDER BY d.id DESC LIMIT 50"),
            "deliveries_message",
            true,
        ),
        (
            "SELECT d.id, m.event_type FROM deliveries d JOIN messages m ON m.id = d.message_id WHERE d.status = 'dead' AND d.destination = 'a' AND d.id < 'dlv_x' ORDER BY d.id DESC LIMIT 50".to_string(),
            "deliveries_dest_status",
            false,
        ),
        (
            "SELECT COUNT(*) FROM messages WHERE created_at >= 0".to_string(),
            "messages_created",
            false,
        ),
        (
            "SELECT started_at, status_code, error FROM attempts WHERE destination = 'a' AND started_at >= 0 AND outcome <> 'delivered' ORDER BY started_at DESC LIMIT 1".to_string(),
            "attempts_destination",
            false,
        ),
        (
            "SELECT * FROM audit_log WHERE seq < 10 ORDER BY seq DESC LIMIT 50".to_string(),
            "sqlite_autoindex_audit_log_1",
            false,
        ),
    ] {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let plan: Vec<String> = rows
            .iter()
            .map(|r| sqlx::Row::try_get::<String, _>(r, "detail").unwrap())
            .collect();
        let plan = plan.join(" | ");
        assert!(plan.contains(index), "{sql}\n  plan: {plan}");
        assert!(
            small_sort || !plan.contains("TEMP B-TREE"),
            "{sql} sorts\n  plan: {plan}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_session_opened_on_one_node_is_known_to_the_other_until_it_ends() {
    for be in backends("sessions").await {
        let now = herald_core::clock::now_ms();
        let s = SessionRecord {
            id_hash: "h1".into(),
            token_id: Some("tok".into()),
            name: "ops".into(),
            scopes: vec!["read".into()],
            csrf: "c".into(),
            created_at: now,
            expires_at: now + 1_000,
        };
        be.a.create_session(s.clone()).await.unwrap();
        assert_eq!(
            be.b.get_session("h1", now).await.unwrap(),
            Some(s.clone()),
            "{}",
            be.name
        );
        assert_eq!(
            be.b.get_session("h1", now + 1_000).await.unwrap(),
            None,
            "expired"
        );
        assert_eq!(be.b.get_session("other", now).await.unwrap(), None);
        be.b.delete_session("h1").await.unwrap();
        assert_eq!(
            be.a.get_session("h1", now).await.unwrap(),
            None,
            "{}: signed out everywhere",
            be.name
        );
    }
}
