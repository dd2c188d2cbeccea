//! Prometheus can alert on what Herald does.

use herald_testkit::herald::TestHerald;
use herald_testkit::receiver::{FakeReceiver, Reply};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_traffic_outcomes_queues_and_commits() {
    let rx = FakeReceiver::start().await;
    rx.push(Reply::status(500));
    let h = TestHerald::start_with(|c| c.metrics_token = Some("scrape-secret".into())).await;
    h.put_destination("hook", json!({"kind": "webhook", "url": rx.url("/"), "retry": {"schedule": ["50ms"], "jitter": false}})).await;
    let id = TestHerald::first_delivery(&h.send(json!({"text": "x", "to": ["hook"]})).await);
    h.wait_status(&id, "delivered", Duration::from_secs(15))
        .await;
    // A rate-limited queue's deliveries wait for a claim (the bucket is spent there): not
    // leased at accept like the plain queue's.
    h.put_destination(
        "limited",
        json!({"kind": "webhook", "url": rx.url("/"), "rate_limit": "5/s"}),
    )
    .await;
    let limited =
        TestHerald::first_delivery(&h.send(json!({"text": "y", "to": ["limited"]})).await);
    h.wait_status(&limited, "delivered", Duration::from_secs(15))
        .await;

    let denied = h.http.get(h.url("/metrics")).send().await.unwrap();
    assert_eq!(
        denied.status(),
        401,
        "the metrics token is required when configured"
    );
    let resp = h
        .http
        .get(h.url("/metrics"))
        .bearer_auth("scrape-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = resp.text().await.unwrap();
    for needle in [
        "herald_messages_accepted_total 2",
        "herald_deliveries_leased_at_accept_total 1",
        r#"herald_attempts_total{destination="hook",outcome="retry"} 1"#,
        r#"herald_attempts_total{destination="hook",outcome="delivered"} 1"#,
        r#"herald_deliveries_finished_total{destination="hook",status="delivered"} 1"#,
        r#"herald_deliveries_finished_total{destination="limited",status="delivered"} 1"#,
        r#"herald_queue_depth{destination="hook",status="pending"} 0"#,
        r#"herald_breaker_state{destination="hook"} 0"#,
        "herald_attempt_duration_seconds_bucket",
        "herald_first_attempt_delay_seconds_bucket",
        "herald_store_commit_seconds_bucket",
        "herald_store_commit_jobs_bucket",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
}
