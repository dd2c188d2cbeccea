//! Claim planning: which destinations are asked for how many deliveries, in which mode,
//! and when the loop looks again.

use super::*;

/// Capacities asked for, by destination.
fn capacities(req: &ClaimRequest) -> HashMap<String, u32> {
    req.queues
        .iter()
        .map(|q| (q.destination.clone(), q.capacity))
        .collect()
}

fn queue<'a>(req: &'a ClaimRequest, name: &str) -> &'a QueueClaim {
    req.queues
        .iter()
        .find(|q| q.destination == name)
        .unwrap_or_else(|| panic!("{name} is planned"))
}

/// Rate-limited destinations are not leased ahead, so their capacity is what the global
/// and per-destination limits leave.
fn limited(max_in_flight: u32) -> Value {
    json!({"rate_limit": "1000/s", "max_in_flight": max_in_flight})
}

#[tokio::test]
async fn global_concurrency_is_shared_and_rotates_over_destinations() {
    let w = world(settings(3)).await;
    w.destination("a", limited(2)).await;
    w.destination("b", limited(2)).await;
    let now = now_ms();
    let (req, _, _) = w.dispatcher().plan(&w.ctx, now, 0);
    assert_eq!(
        capacities(&req),
        HashMap::from([("a".into(), 2), ("b".into(), 1)])
    );
    // The next round starts from the next destination: b is not always last.
    let (req, _, _) = w.dispatcher().plan(&w.ctx, now, 1);
    assert_eq!(
        capacities(&req),
        HashMap::from([("a".into(), 1), ("b".into(), 2)])
    );
}

#[tokio::test]
async fn attempts_in_flight_count_against_global_concurrency() {
    let w = world(settings(3)).await;
    w.destination("a", limited(4)).await;
    let _s1 = Slot::take(w.dispatcher(), "elsewhere");
    let _s2 = Slot::take(w.dispatcher(), "elsewhere");
    let (req, _, _) = w.dispatcher().plan(&w.ctx, now_ms(), 0);
    assert_eq!(queue(&req, "a").capacity, 1);
    let _s3 = Slot::take(w.dispatcher(), "elsewhere");
    let (req, _, _) = w.dispatcher().plan(&w.ctx, now_ms(), 0);
    assert_eq!(queue(&req, "a").capacity, 0);
}

#[tokio::test]
async fn each_destination_is_bounded_by_its_max_in_flight() {
    let w = world(settings(100)).await;
    w.destination("a", limited(2)).await;
    w.destination("b", json!({"rate_limit": "1000/s"})).await;
    let _running = Slot::take(w.dispatcher(), "a");
    let (req, _, _) = w.dispatcher().plan(&w.ctx, now_ms(), 0);
    // a: max_in_flight 2, one running; b: the default per destination (4).
    assert_eq!(
        capacities(&req),
        HashMap::from([("a".into(), 1), ("b".into(), 4)])
    );
}

#[tokio::test]
async fn paused_and_disabled_destinations_are_not_planned() {
    let w = world(settings(10)).await;
    w.destination("paused", json!({})).await;
    w.destination("disabled", json!({})).await;
    w.destination("open", json!({})).await;
    let now = now_ms();
    w.dest("paused").pause_until(now + 400);
    w.dest("disabled").disable("gone".into());
    let (req, modes, wake_at) = w.dispatcher().plan(&w.ctx, now, 0);
    let names: Vec<&str> = req.queues.iter().map(|q| q.destination.as_str()).collect();
    assert_eq!(names, ["open"]);
    assert!(!modes.contains_key("paused") && !modes.contains_key("disabled"));
    // The loop looks again when the pause ends (sooner than the poll).
    assert_eq!(wake_at, now + 400);
    // A pause that has ended does not count.
    let (req, _, wake_at) = w.dispatcher().plan(&w.ctx, now + 400, 0);
    assert!(req.queues.iter().any(|q| q.destination == "paused"));
    assert_eq!(wake_at, now + 400 + POLL.as_millis() as i64);
}

#[tokio::test]
async fn an_open_breaker_blocks_claims_until_its_cooldown_ends() {
    let w = world(settings(10)).await;
    w.destination("limited", limited(4)).await;
    w.destination("plain", json!({})).await;
    w.destination("spare", json!({})).await;
    w.destination(
        "guarded",
        json!({"fallback": {"destination": "spare", "when": "failure"}}),
    )
    .await;
    let now = now_ms();
    for name in ["limited", "plain", "guarded"] {
        *w.dest(name).breaker.lock().unwrap() = open_breaker(now + 700);
    }
    let (req, modes, wake_at) = w.dispatcher().plan(&w.ctx, now, 0);
    // Not leased ahead: nothing asked for.
    assert_eq!(queue(&req, "limited").capacity, 0);
    // A plain queue's ask is its room ahead, but the store claims only from a closed
    // breaker (the stored state is the truth for every node).
    assert!(queue(&req, "plain").require_closed_breaker);
    assert!(queue(&req, "limited").require_closed_breaker);
    assert_eq!(modes["plain"], Mode::Send);
    // A `when = "failure"` fallback takes the deliveries without an attempt.
    assert_eq!(modes["guarded"], Mode::FailOver("spare".into()));
    assert!(!queue(&req, "guarded").require_closed_breaker);
    assert_eq!(wake_at, now + 700);
    // Closed: claimed normally, still guarded against another node having tripped it.
    assert_eq!(modes["spare"], Mode::Send);
    assert!(queue(&req, "spare").require_closed_breaker);
}

#[tokio::test]
async fn after_the_cooldown_exactly_one_probe_when_idle() {
    let w = world(settings(10)).await;
    w.destination("plain", json!({})).await;
    let now = now_ms();
    *w.dest("plain").breaker.lock().unwrap() = open_breaker(now - 1);
    let (req, modes, _) = w.dispatcher().plan(&w.ctx, now, 0);
    assert_eq!(modes["plain"], Mode::Probe);
    // One, although a plain queue would otherwise be leased ahead.
    assert_eq!(queue(&req, "plain").capacity, 1);
    assert!(!queue(&req, "plain").require_closed_breaker);
    let _running = Slot::take(w.dispatcher(), "plain");
    let (req, _, _) = w.dispatcher().plan(&w.ctx, now, 0);
    assert_eq!(queue(&req, "plain").capacity, 0);
}

#[tokio::test]
async fn an_ordered_destination_gets_at_most_one_and_only_when_idle() {
    let w = world(settings(10)).await;
    w.destination("fifo", json!({"ordered": true, "max_in_flight": 8}))
        .await;
    let now = now_ms();
    let (req, modes, _) = w.dispatcher().plan(&w.ctx, now, 0);
    assert_eq!(queue(&req, "fifo").capacity, 1);
    assert!(queue(&req, "fifo").ordered);
    assert_eq!(modes["fifo"], Mode::Send);
    {
        let _running = Slot::take(w.dispatcher(), "fifo");
        let (req, _, _) = w.dispatcher().plan(&w.ctx, now, 0);
        assert_eq!(queue(&req, "fifo").capacity, 0);
    }
    // One waiting to be started (e.g. leased at accept) is not idle either.
    w.sched().leasing.insert("fifo".into(), 1);
    let (req, _, _) = w.dispatcher().plan(&w.ctx, now, 0);
    assert_eq!(queue(&req, "fifo").capacity, 0);
}

#[tokio::test]
async fn a_rate_limited_destination_is_claimed_within_its_bucket() {
    let w = world(settings(10)).await;
    w.destination("slow", json!({"rate_limit": "1/m"})).await;
    for _ in 0..3 {
        w.sql.accept_messages(vec![message("slow")]).await.unwrap();
    }
    let now = now_ms();
    let (req, _, _) = w.dispatcher().plan(&w.ctx, now, 0);
    let q = queue(&req, "slow");
    assert!(q.rate_limit.is_some());
    assert_eq!(q.capacity, 4, "free slots, not leased ahead");
    let res = w.sql.claim(req).await.unwrap();
    assert_eq!(res.claimed.len(), 1, "one token in the bucket");
    // The bucket is empty now: the next round claims nothing.
    let (req, _, _) = w.dispatcher().plan(&w.ctx, now + 10, 1);
    let res = w.sql.claim(req).await.unwrap();
    assert!(res.claimed.is_empty());
    assert_eq!(res.rate_limited, ["slow"]);
}

#[tokio::test]
async fn only_plain_queues_are_prefetchable() {
    let w = world(settings(10)).await;
    w.destination("plain", json!({})).await;
    w.destination("fifo", json!({"ordered": true})).await;
    w.destination("limited", json!({"rate_limit": "5/s"})).await;
    assert!(prefetchable(&w.dest("plain")));
    assert!(!prefetchable(&w.dest("fifo")));
    assert!(!prefetchable(&w.dest("limited")));
}

#[tokio::test]
async fn a_plain_queue_is_leased_ahead_by_littles_law() {
    let w = world(settings(2)).await;
    w.destination("fast", json!({"max_in_flight": 4})).await;
    let now = now_ms();
    // No timings yet: its slots only.
    let (req, _, _) = w.dispatcher().plan(&w.ctx, now, 0);
    assert_eq!(queue(&req, "fast").capacity, 4);
    {
        let mut s = w.sched();
        s.claim_ms = 20.0;
        s.attempt_ms.insert("fast".into(), 10.0);
    }
    // Slots plus twice what they get through in a claim round (the global concurrency is
    // applied when starting, not when leasing).
    let (req, _, _) = w.dispatcher().plan(&w.ctx, now, 0);
    assert_eq!(queue(&req, "fast").capacity, 4 + 16);
    // Attempts slower than a claim round: no lead.
    w.sched().attempt_ms.insert("fast".into(), 25.0);
    let (req, _, _) = w.dispatcher().plan(&w.ctx, now, 0);
    assert_eq!(queue(&req, "fast").capacity, 4);
}

#[tokio::test]
async fn the_lease_is_at_least_the_timeout_plus_ten_seconds() {
    let w = world(settings(10)).await;
    w.destination("quick", json!({"timeout": "5s"})).await;
    w.destination("patient", json!({"timeout": "120s"})).await;
    let (req, _, _) = w.dispatcher().plan(&w.ctx, now_ms(), 0);
    assert_eq!(queue(&req, "quick").lease_ms, 60_000);
    assert_eq!(queue(&req, "patient").lease_ms, 130_000);
}

#[tokio::test]
async fn sendable_means_enabled_unpaused_and_breaker_closed() {
    let w = world(settings(10)).await;
    for name in ["ok", "paused", "disabled", "tripped", "probing"] {
        w.destination(name, json!({})).await;
    }
    let now = now_ms();
    w.dest("paused").pause_until(now + 1_000);
    w.dest("disabled").disable("gone".into());
    *w.dest("tripped").breaker.lock().unwrap() = open_breaker(now + 1_000);
    *w.dest("probing").breaker.lock().unwrap() = open_breaker(now - 1);
    assert!(sendable(&w.dest("ok"), now));
    for name in ["paused", "disabled", "tripped", "probing"] {
        assert!(!sendable(&w.dest(name), now), "{name}");
    }
}
