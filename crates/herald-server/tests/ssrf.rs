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

/// A destination whose address the guard would refuse is saved, with a warning in the
/// answer naming the field, instead of failing silently at its first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saving_an_address_the_guard_blocks_warns_at_once() {
    use reqwest::Method;
    let strict = TestHerald::start_with(|c| c.allow_networks = String::new()).await;
    for (name, spec, field) in [
        (
            "literal",
            json!({"kind": "webhook", "url": "http://127.0.0.1:9/x"}),
            "url",
        ),
        (
            "name",
            json!({"kind": "http", "url": "http://localhost:9/x"}),
            "url",
        ),
        (
            "v6",
            json!({"kind": "discord", "url": "http://[::1]:9/api/webhooks/1/x"}),
            "url",
        ),
        (
            "smtp",
            json!({"kind": "email", "smtp_url": "smtp://127.0.0.1:2525?tls=none", "from": "h@example.com", "to": ["o@example.com"]}),
            "smtp_url",
        ),
        (
            "tg",
            json!({"kind": "telegram", "token": "123:abc", "chat_id": "1", "api_base": "http://127.0.0.1:9"}),
            "api_base",
        ),
    ] {
        let (status, body) = strict
            .call(
                Method::PUT,
                &format!("/api/v1/destinations/{name}"),
                Some(spec),
            )
            .await;
        assert!(status.is_success(), "{name}: saved anyway: {body}");
        let warnings = body["warnings"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: {body}"));
        assert_eq!(warnings.len(), 1, "{body}");
        let w = warnings[0].as_str().unwrap();
        assert!(
            w.starts_with(&format!("{field}: ")) && w.contains("SSRF guard"),
            "{w}"
        );
    }
    // A public name is checked at each connection, not now; an exempted address is fine.
    let (_, body) = strict
        .call(
            Method::PUT,
            "/api/v1/destinations/public",
            Some(json!({"kind": "webhook", "url": "https://hooks.example.com/x"})),
        )
        .await;
    assert!(body.get("warnings").is_none(), "{body}");
    let lax = TestHerald::start().await; // allow_networks covers 127.0.0.0/8
    let (_, body) = lax
        .call(
            Method::PUT,
            "/api/v1/destinations/literal",
            Some(json!({"kind": "webhook", "url": "http://127.0.0.1:9/x"})),
        )
        .await;
    assert!(body.get("warnings").is_none(), "{body}");
}
