//! Resilience stories: one failing, throttling, hanging or vanished destination affects only
//! itself, and its traffic goes where its configuration says.

use herald_testkit::herald::TestHerald;
use herald_testkit::receiver::{FakeReceiver, Reply};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

fn fast_retries(n: usize) -> Value {
    json!({"schedule": vec!["50ms"; n], "jitter": false})
}

async fn health(h: &TestHerald, name: &str) -> Value {
    let (status, body) = h
        .call(
            Method::GET,
            &format!("/api/v1/destinations/{name}/health"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn audit_actions(h: &TestHerald) -> Vec<String> {
    let (_, audit) = h.call(Method::GET, "/api/v1/audit?limit=1000", None).await;
    audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_at_the_receiver_without_slowing_other_destinations() {
    let limited = FakeReceiver::start().await;
    let free = FakeReceiver::start().await;
    let h = TestHerald::start().await;
    h.put_destination("limited", json!({"kind": "webhook", "url": limited.url("/"), "rate_limit": {"rate": "4/s", "burst": 2}})).await;
    h.put_destination("free", json!({"kind": "webhook", "url": free.url("/")}))
        .await;
    let t0 = Instant::now();
    for i in 0..10 {
        h.send(json!({"text": format!("l{i}"), "to": ["limited"]}))
            .await;
    }
    for i in 0..20 {
        h.send(json!({"text": format!("f{i}"), "to": ["free"]}))
            .await;
    }
    free.wait_for(20, WAIT).await;
    let free_done = t0.elapsed();
    assert!(
        limited.count() < 10,
        "the free destination finished while the limited one was still waiting on its limit"
    );
    let got = limited.wait_for(10, WAIT).await;
    // Over any window, at most burst + rate × window requests arrived.
    for (i, a) in got.iter().enumerate() {
        for (j, b) in got.iter().enumerate().skip(i) {
            let window = b.at.duration_since(a.at).as_secs_f64();
            let allowed = 2.0 + 4.0 * window + 1.0; // +1: the request that opens the window
            assert!(
                ((j - i + 1) as f64) <= allowed + 0.05,
                "{} requests in {window:.3}s",
                j - i + 1
            );
        }
    }
    let span = got[9].at.duration_since(got[0].at);
    println!(
        "rate limit 4/s burst 2: 10 requests over {span:?}; 20 unlimited delivered in {free_done:?}"
    );
    assert!(
        span >= Duration::from_millis(1_900),
        "10 requests at 4/s with a burst of 2 take at least 2 s, took {span:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_stops_attempts_without_burning_the_budget_and_a_probe_closes_it() {
    let rx = FakeReceiver::start().await;
    rx.set_default(Reply::status(503));
    let h = TestHerald::start().await;
    h.put_destination(
        "flaky",
        json!({"kind": "webhook", "url": rx.url("/"), "retry": fast_retries(20), "circuit_breaker": {"failure_threshold": 3, "cooldown": "1s", "max_cooldown": "4s"}}),
    )
    .await;
    let id = TestHerald::first_delivery(&h.send(json!({"text": "x", "to": ["flaky"]})).await);
    rx.wait_for(3, WAIT).await;
    // The third failure opens the breaker once its attempt is recorded.
    let opened = herald_testkit::eventually(WAIT, "the breaker open", || async {
        let v = health(&h, "flaky").await;
        (v["circuit"]["state"] == "open").then_some(v)
    })
    .await;
    assert_eq!(opened["circuit"]["consecutive_failures"], 3);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    // Without the breaker, 21 attempts 50 ms apart would all have been spent by now.
    let d = h.delivery(&id).await;
    let attempts = d["attempt_count"].as_u64().unwrap();
    assert_eq!(
        d["status"], "pending",
        "the budget is not burned while the breaker is open: {d}"
    );
    assert!(
        (4..=5).contains(&attempts),
        "3 failures, then one probe per cooldown (1 s, then 2 s): {attempts}"
    );
    println!(
        "breaker: {attempts} attempts in 2.5 s instead of 21; {} attempts avoided",
        21 - attempts
    );

    rx.set_default(Reply::ok());
    h.wait_status(&id, "delivered", WAIT).await;
    let closed = health(&h, "flaky").await;
    assert_eq!(closed["circuit"]["state"], "closed", "{closed}");
    let actions = audit_actions(&h).await;
    for a in [
        "breaker.opened",
        "breaker.half_opened",
        "breaker.reopened",
        "breaker.closed",
    ] {
        assert!(actions.iter().any(|x| x == a), "{a} audited: {actions:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_state_survives_a_restart() {
    let rx = FakeReceiver::start().await;
    rx.set_default(Reply::status(500));
    let h = TestHerald::start().await;
    h.put_destination("flaky", json!({"kind": "webhook", "url": rx.url("/"), "retry": fast_retries(10), "circuit_breaker": {"failure_threshold": 2, "cooldown": "1h"}})).await;
    h.send(json!({"text": "x", "to": ["flaky"]})).await;
    rx.wait_for(2, WAIT).await;
    let cfg = h.herald.as_ref().unwrap().state.config.as_ref().clone();
    let dir = h.stop().await;
    let h = TestHerald::start_config(cfg, dir).await;
    assert_eq!(health(&h, "flaky").await["circuit"]["state"], "open");
    h.send(json!({"text": "y", "to": ["flaky"]})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.count(), 2, "no attempt while open, even after a restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_delivery_fails_over_to_the_fallback_and_both_are_visible() {
    let primary = FakeReceiver::start().await;
    primary.set_default(Reply::status(400));
    let backup = FakeReceiver::start().await;
    let h = TestHerald::start().await;
    h.put_destination(
        "ops-email",
        json!({"kind": "webhook", "url": backup.url("/")}),
    )
    .await;
    h.put_destination("slack", json!({"kind": "webhook", "url": primary.url("/"), "fallback": {"destination": "ops-email"}})).await;
    let accepted = h.send(json!({"text": "db down", "to": ["slack"]})).await;
    let first = TestHerald::first_delivery(&accepted);
    h.wait_status(&first, "failed_over", WAIT).await;
    backup.wait_for(1, WAIT).await;
    let (_, m) = h
        .call(
            Method::GET,
            &format!("/api/v1/messages/{}", accepted["id"].as_str().unwrap()),
            None,
        )
        .await;
    let deliveries = m["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 2, "{m}");
    let fb = deliveries
        .iter()
        .find(|d| d["destination"] == "ops-email")
        .unwrap();
    assert_eq!(fb["fallback_of"], first.as_str());
    h.wait_status(fb["id"].as_str().unwrap(), "delivered", WAIT)
        .await;
    assert_eq!(backup.received()[0].json()["text"], "db down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_when_failure_the_fallback_takes_over_after_one_failure_and_while_the_breaker_is_open()
{
    let primary = FakeReceiver::start().await;
    primary.set_default(Reply::status(503));
    let backup = FakeReceiver::start().await;
    let h = TestHerald::start().await;
    h.put_destination("sms", json!({"kind": "webhook", "url": backup.url("/")}))
        .await;
    h.put_destination(
        "slack",
        json!({"kind": "webhook", "url": primary.url("/"), "fallback": {"destination": "sms", "when": "failure"},
               "circuit_breaker": {"failure_threshold": 1, "cooldown": "1h"}}),
    )
    .await;
    let a = TestHerald::first_delivery(&h.send(json!({"text": "a", "to": ["slack"]})).await);
    let d = h.wait_status(&a, "failed_over", WAIT).await;
    assert_eq!(
        d["attempt_count"], 1,
        "one failed attempt, then the fallback"
    );
    backup.wait_for(1, WAIT).await;
    // The breaker is open now: the next message goes to the fallback without an attempt.
    let b = TestHerald::first_delivery(&h.send(json!({"text": "b", "to": ["slack"]})).await);
    let d = h.wait_status(&b, "failed_over", WAIT).await;
    assert_eq!(d["attempt_count"], 0, "{d}");
    backup.wait_for(2, WAIT).await;
    assert_eq!(primary.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_cycles_unknown_fallbacks_and_deleting_a_fallback_are_refused() {
    let h = TestHerald::start().await;
    h.put_destination(
        "a",
        json!({"kind": "webhook", "url": "https://example.com/a"}),
    )
    .await;
    h.put_destination("b", json!({"kind": "webhook", "url": "https://example.com/b", "fallback": {"destination": "a"}})).await;
    let (status, body) = h.call(Method::PUT, "/api/v1/destinations/a", Some(json!({"kind": "webhook", "url": "https://example.com/a", "fallback": {"destination": "b"}}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["detail"].as_str().unwrap().contains("a → b → a"),
        "{body}"
    );
    let (status, _) = h.call(Method::PUT, "/api/v1/destinations/c", Some(json!({"kind": "webhook", "url": "https://example.com/c", "fallback": {"destination": "nope"}}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, body) = h.call(Method::DELETE, "/api/v1/destinations/a", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_destination_delivers_first_in_first_out_and_a_dead_head_releases_the_next() {
    let rx = FakeReceiver::start().await;
    rx.push(Reply::status(503));
    rx.push(Reply::status(503));
    let h = TestHerald::start().await;
    h.put_destination("feed", json!({"kind": "webhook", "url": rx.url("/"), "ordered": true, "retry": {"schedule": ["200ms", "200ms"], "jitter": false}})).await;
    for i in 0..5 {
        h.send(json!({"text": format!("m{i}"), "to": ["feed"]}))
            .await;
    }
    let got = rx.wait_for(7, WAIT).await;
    let texts: Vec<String> = got
        .iter()
        .map(|r| r.json()["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        texts,
        vec!["m0", "m0", "m0", "m1", "m2", "m3", "m4"],
        "m1 waits for m0's retries"
    );

    // A head that dies releases the next one.
    rx.push(Reply::status(400));
    let dead = TestHerald::first_delivery(&h.send(json!({"text": "n0", "to": ["feed"]})).await);
    h.send(json!({"text": "n1", "to": ["feed"]})).await;
    h.wait_status(&dead, "dead", WAIT).await;
    let got = rx.wait_for(9, WAIT).await;
    assert_eq!(got[8].json()["text"], "n1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_failure_disables_the_destination_and_someone_hears_about_it() {
    let broken = FakeReceiver::start().await;
    broken.set_default(Reply::status(502));
    let ops = FakeReceiver::start().await;
    let customer = FakeReceiver::start().await;
    let h = TestHerald::start().await;
    h.put_destination(
        "ops",
        json!({"kind": "webhook", "url": ops.url("/"), "events": ["herald.*"]}),
    )
    .await;
    // A customer's endpoint with no `events`: it takes every event, but not Herald's own.
    h.put_destination(
        "customer",
        json!({"kind": "webhook", "url": customer.url("/")}),
    )
    .await;
    h.put_destination(
        "partner",
        json!({"kind": "webhook", "url": broken.url("/"), "events": ["order.*"], "disable_after": "1s", "circuit_breaker": false,
               "retry": {"schedule": vec!["300ms"; 30], "jitter": false}}),
    )
    .await;
    h.send(json!({"event_type": "order.paid", "text": "x"}))
        .await;
    let alert = ops.wait_for(1, WAIT).await;
    let body = alert[0].json();
    assert_eq!(body["type"], "herald.destination.disabled");
    assert_eq!(body["data"]["destination"], "partner");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let heard: Vec<String> = customer
        .received()
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        heard,
        vec!["order.paid"],
        "the catch-all customer endpoint got the order, not the operational event"
    );
    let (_, d) = h
        .call(Method::GET, "/api/v1/destinations/partner", None)
        .await;
    assert_eq!(d["enabled"], false);
    assert!(
        d["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("no successful delivery since"),
        "{d}"
    );
    assert!(
        audit_actions(&h)
            .await
            .iter()
            .any(|a| a == "destination.disabled")
    );

    let (status, d) = h
        .call(Method::POST, "/api/v1/destinations/partner/enable", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(d["enabled"], true);
    assert!(d["disabled_reason"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_does_not_starve_a_fast_one() {
    let slow = FakeReceiver::start().await;
    slow.set_default(Reply::ok().delay(Duration::from_secs(3)));
    let fast = FakeReceiver::start().await;
    let h = TestHerald::start().await;
    h.put_destination("slow", json!({"kind": "webhook", "url": slow.url("/"), "timeout": "300ms", "max_in_flight": 4, "circuit_breaker": false})).await;
    h.put_destination("fast", json!({"kind": "webhook", "url": fast.url("/")}))
        .await;
    let (status, _) = h.call(Method::POST, "/api/v1/messages/batch", Some(json!({"messages": (0..40).map(|i| json!({"text": format!("s{i}"), "to": ["slow"]})).collect::<Vec<_>>()}))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let t0 = Instant::now();
    let (status, _) = h.call(Method::POST, "/api/v1/messages/batch", Some(json!({"messages": (0..300).map(|i| json!({"text": format!("f{i}"), "to": ["fast"]})).collect::<Vec<_>>()}))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    fast.wait_for(300, WAIT).await;
    let took = t0.elapsed();
    let slow_health = health(&h, "slow").await;
    assert!(
        slow_health["in_flight"].as_u64().unwrap() <= 4,
        "{slow_health}"
    );
    assert!(
        slow_health["pending"].as_u64().unwrap() + slow_health["in_flight"].as_u64().unwrap() >= 30,
        "the slow destination is still working through its queue: {slow_health}"
    );
    println!(
        "fast destination: 300 deliveries in {took:?} next to a receiver that hangs past its timeout"
    );
}
