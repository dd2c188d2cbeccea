//! The SSRF guard under the default policy, proved with loopback targets only.

use herald_testkit::herald::TestHerald;
use herald_testkit::receiver::FakeReceiver;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_the_default_policy_loopback_destinations_are_refused_and_receive_nothing() {
    let rx = FakeReceiver::start().await;
    let h = TestHerald::start_with(|c| c.allow_networks = String::new()).await;
    let port = rx.addr.port();
    let targets = [
        ("literal", format!("http://127.0.0.1:{port}/")),
        ("name", format!("http://localhost:{port}/")),
        ("v6", format!("http://[::1]:{port}/")),
        ("mapped", format!("http://[::ffff:127.0.0.1]:{port}/")),
        ("decimal", format!("http://2130706433:{port}/")),
    ];
    for (name, url) in &targets {
        h.put_destination(name, json!({"kind": "webhook", "url": url}))
            .await;
        let id = TestHerald::first_delivery(&h.send(json!({"text": "x", "to": [name]})).await);
        let d = h.wait_status(&id, "dead", Duration::from_secs(15)).await;
        assert_eq!(
            d["attempts"][0]["error_class"], "ssrf_blocked",
            "{name}: {d}"
        );
        assert!(
            d["attempts"][0]["error"].as_str().unwrap().contains("SSRF"),
            "{d}"
        );
        assert_eq!(d["attempt_count"], 1, "blocked is permanent, not retried");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.count(), 0, "the loopback receiver got nothing");
}
