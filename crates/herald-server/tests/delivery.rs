//! Delivery stories, end to end: a real Herald on SQLite, real HTTP to loopback fakes.

use herald_testkit::herald::TestHerald;
use herald_testkit::receiver::{FakeReceiver, Reply};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

fn fast_retry() -> serde_json::Value {
    json!({"schedule": ["100ms", "100ms", "100ms"], "jitter": false})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_is_signed_per_standard_webhooks_and_verifies_with_the_reference_crate() {
    let rx = FakeReceiver::start().await;
    let h = TestHerald::start().await;
    let created = h
        .put_destination("hook", json!({"kind": "webhook", "url": rx.url("/hook")}))
        .await;
    let secret = created["generated_secret"]
        .as_str()
        .expect("a generated secret")
        .to_string();
    assert_ne!(
        created["secret"],
        json!(secret),
        "the secret is masked on read"
    );

    let accepted = h.send(json!({"event_type": "pipeline.finished", "text": "파이프라인 완료 🎉", "payload": {"rows": 3}, "to": ["hook"]})).await;
    let got = rx.wait_for(1, WAIT).await;
    let req = &got[0];
    assert_eq!(req.header("webhook-id"), accepted["id"].as_str());
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert!(req.header("user-agent").unwrap().starts_with("herald/"));
    let body = req.json();
    assert_eq!(body["type"], "pipeline.finished");
    assert_eq!(body["data"], json!({"rows": 3}));
    assert_eq!(
        body["text"], "파이프라인 완료 🎉",
        "Korean and emoji survive byte-exactly"
    );

    let wh = standardwebhooks::Webhook::new(&secret).unwrap();
    let mut headers = http_headers(req);
    wh.verify(&req.body, &headers)
        .expect("signature verifies with the standardwebhooks crate");
    headers.insert("webhook-id", "msg_tampered".parse().unwrap());
    assert!(wh.verify(&req.body, &headers).is_err());

    let d = h
        .wait_status(&TestHerald::first_delivery(&accepted), "delivered", WAIT)
        .await;
    assert_eq!(d["attempts"][0]["status_code"], 200);
    assert_eq!(d["attempts"][0]["response_excerpt"], "ok");
}

fn http_headers(req: &herald_testkit::receiver::Received) -> reqwest::header::HeaderMap {
    let mut h = reqwest::header::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        h.insert(name, req.header(name).unwrap().parse().unwrap());
    }
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_signs_with_every_secret_and_legacy_headers_are_optional() {
    let rx = FakeReceiver::start().await;
    let h = TestHerald::start().await;
    let (a, b) = (
        herald_core::signature::SigningKey::generate(),
        herald_core::signature::SigningKey::generate(),
    );
    h.put_destination(
        "hook",
        json!({"kind": "webhook", "url": rx.url("/"), "secret": [a, b], "signing": "hex-sha256"}),
    )
    .await;
    h.send(json!({"event_type": "order.paid", "text": "x", "to": ["hook"]}))
        .await;
    let req = &rx.wait_for(1, WAIT).await[0];
    assert_eq!(
        req.header("webhook-signature").unwrap().split(' ').count(),
        2
    );
    for s in [&a, &b] {
        standardwebhooks::Webhook::new(s)
            .unwrap()
            .verify(&req.body, &http_headers(req))
            .expect("each active secret verifies");
    }
    let key = herald_core::signature::SigningKey::parse(&a).unwrap();
    assert_eq!(
        req.header("x-webhook-signature"),
        Some(key.sign_legacy_hex(&req.body).as_str())
    );
    assert_eq!(req.header("x-webhook-event"), Some("order.paid"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_until_delivered() {
    let rx = FakeReceiver::start().await;
    rx.push(Reply::status(500));
    rx.push(Reply::status(503));
    let h = TestHerald::start().await;
    h.put_destination(
        "hook",
        json!({"kind": "webhook", "url": rx.url("/"), "retry": fast_retry()}),
    )
    .await;
    let accepted = h.send(json!({"text": "retry me", "to": ["hook"]})).await;
    let d = h
        .wait_status(&TestHerald::first_delivery(&accepted), "delivered", WAIT)
        .await;
    let codes: Vec<_> = d["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].clone())
        .collect();
    assert_eq!(codes, vec![json!(500), json!(503), json!(200)]);
    assert_eq!(d["attempts"][0]["outcome"], "retry");
    assert_eq!(d["attempt_count"], 3);
    let ids: Vec<_> = rx
        .received()
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_string())
        .collect();
    assert!(
        ids.iter().all(|i| i == &ids[0]),
        "webhook-id is stable across retries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_error_is_dead_lettered_then_replayed_or_discarded() {
    let rx = FakeReceiver::start().await;
    rx.push(Reply::status(400).body("bad"));
    let h = TestHerald::start().await;
    h.put_destination(
        "hook",
        json!({"kind": "webhook", "url": rx.url("/"), "retry": fast_retry()}),
    )
    .await;
    let first = TestHerald::first_delivery(&h.send(json!({"text": "one", "to": ["hook"]})).await);
    let d = h.wait_status(&first, "dead", WAIT).await;
    assert_eq!(d["attempt_count"], 1, "a 400 is not retried");
    assert_eq!(d["attempts"][0]["outcome"], "permanent");

    let (status, dlq) = h.call(Method::GET, "/api/v1/dlq?queue=hook", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(dlq["items"][0]["id"], first.as_str());
    assert_eq!(dlq["items"][0]["last_status_code"], 400);

    let (status, _) = h
        .call(
            Method::POST,
            &format!("/api/v1/dlq/hook/replay/{first}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let d = h.wait_status(&first, "delivered", WAIT).await;
    assert_eq!(
        d["attempt_count"], 2,
        "the history is kept across the replay"
    );

    rx.push(Reply::status(422));
    let second = TestHerald::first_delivery(&h.send(json!({"text": "two", "to": ["hook"]})).await);
    h.wait_status(&second, "dead", WAIT).await;
    let (status, _) = h
        .call(Method::DELETE, &format!("/api/v1/dlq/hook/{second}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(h.delivery(&second).await["status"], "discarded");
    let (status, body) = h
        .call(Method::DELETE, &format!("/api/v1/dlq/hook/{second}"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _) = h
        .call(
            Method::POST,
            "/api/v1/dlq/hook/replay/dlv_00000000000000000000000000000000",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_all_takes_every_dead_delivery_of_the_queue() {
    let rx = FakeReceiver::start().await;
    for _ in 0..3 {
        rx.push(Reply::status(404));
    }
    let h = TestHerald::start().await;
    h.put_destination("hook", json!({"kind": "webhook", "url": rx.url("/")}))
        .await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(TestHerald::first_delivery(
            &h.send(json!({"text": format!("m{i}"), "to": ["hook"]}))
                .await,
        ));
    }
    for id in &ids {
        h.wait_status(id, "dead", WAIT).await;
    }
    let (status, body) = h.call(Method::POST, "/api/v1/dlq/hook/replay", None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body["replayed"], 3);
    for id in &ids {
        h.wait_status(id, "delivered", WAIT).await;
    }
}

async fn retry_after_pauses_the_destination(retry_after: String) {
    let rx = FakeReceiver::start().await;
    rx.push(Reply::status(429).header("retry-after", &retry_after));
    let h = TestHerald::start().await;
    h.put_destination("hook", json!({"kind": "webhook", "url": rx.url("/"), "retry": {"schedule": ["10ms"], "jitter": false}})).await;
    let a = TestHerald::first_delivery(&h.send(json!({"text": "a", "to": ["hook"]})).await);
    rx.wait_for(1, WAIT).await;
    let (_, health) = h
        .call(Method::GET, "/api/v1/destinations/hook/health", None)
        .await;
    assert!(
        health["paused_until"].is_string(),
        "the destination is paused: {health}"
    );
    let b = TestHerald::first_delivery(&h.send(json!({"text": "b", "to": ["hook"]})).await);
    h.wait_status(&a, "delivered", WAIT).await;
    h.wait_status(&b, "delivered", WAIT).await;
    let got = rx.received();
    assert_eq!(got.len(), 3);
    for later in &got[1..] {
        let waited = later.at.duration_since(got[0].at);
        assert!(
            waited >= Duration::from_millis(900),
            "no request before Retry-After (waited {waited:?})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_in_seconds_delays_the_next_attempt_and_pauses_the_destination() {
    retry_after_pauses_the_destination("2".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_as_an_http_date_delays_the_next_attempt_and_pauses_the_destination() {
    let at = std::time::SystemTime::now() + Duration::from_secs(3);
    retry_after_pauses_the_destination(httpdate::fmt_http_date(at)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_the_destination() {
    let rx = FakeReceiver::start().await;
    rx.push(Reply::status(410));
    let h = TestHerald::start().await;
    h.put_destination("hook", json!({"kind": "webhook", "url": rx.url("/")}))
        .await;
    let id = TestHerald::first_delivery(&h.send(json!({"text": "x", "to": ["hook"]})).await);
    h.wait_status(&id, "dead", WAIT).await;
    let (_, dest) = h.call(Method::GET, "/api/v1/destinations/hook", None).await;
    assert_eq!(dest["enabled"], false);
    assert!(dest["disabled_reason"].as_str().unwrap().contains("410"));
    // Routing by event type skips a disabled destination.
    let routed = h.send(json!({"text": "y"})).await;
    assert_eq!(routed["deliveries"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_house_messenger_gets_its_json_with_a_bearer_token_from_the_environment() {
    // SAFETY: set before Herald starts; no other test reads this variable.
    unsafe { std::env::set_var("HERALD_SECRET_TEST_RISE_TOKEN", "rise-secret-1") };
    let rx = FakeReceiver::start().await;
    rx.push(Reply::status(409));
    let h = TestHerald::start().await;
    let created = h
        .put_destination(
            "rise",
            json!({
                "kind": "http",
                "url": rx.url("/api/v1/message"),
                "headers": {"Authorization": "Bearer ${env:HERALD_SECRET_TEST_RISE_TOKEN}"},
                "body_template": "{\"chatroomId\": {{ payload.room|tojson }}, \"msgType\": \"TEXT\", \"chatMsg\": {{ text|tojson }}}",
                "retry": fast_retry(),
            }),
        )
        .await;
    assert_eq!(
        created["headers"]["Authorization"],
        "Bearer ${env:HERALD_SECRET_TEST_RISE_TOKEN}"
    );
    let accepted = h.send(json!({"text": "파이프라인 완료", "payload": {"room": "195878155435574272"}, "to": ["rise"]})).await;
    h.wait_status(&TestHerald::first_delivery(&accepted), "delivered", WAIT)
        .await;
    let got = rx.received();
    assert_eq!(got.len(), 2, "409 is retried");
    for r in &got {
        assert_eq!(r.path, "/api/v1/message");
        assert_eq!(r.header("authorization"), Some("Bearer rise-secret-1"));
        assert_eq!(
            r.header("idempotency-key"),
            accepted["id"].as_str(),
            "stable across retries"
        );
        assert_eq!(
            r.json(),
            json!({"chatroomId": "195878155435574272", "msgType": "TEXT", "chatMsg": "파이프라인 완료"})
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_kind_sends_the_payload_as_is_by_default() {
    let rx = FakeReceiver::start().await;
    let h = TestHerald::start().await;
    h.put_destination(
        "api",
        json!({"kind": "http", "url": rx.url("/in"), "method": "PUT"}),
    )
    .await;
    h.send(json!({"payload": {"a": [1, 2], "b": "c"}, "to": ["api"]}))
        .await;
    let r = &rx.wait_for(1, WAIT).await[0];
    assert_eq!(r.method, Method::PUT);
    assert_eq!(r.json(), json!({"a": [1, 2], "b": "c"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_follows_events_and_filters() {
    let rx = FakeReceiver::start().await;
    let h = TestHerald::start().await;
    h.put_destination(
        "pipelines",
        json!({"kind": "webhook", "url": rx.url("/p"), "events": ["pipeline.*"]}),
    )
    .await;
    h.put_destination(
        "critical",
        json!({"kind": "webhook", "url": rx.url("/c"), "filter": "severity == \"critical\""}),
    )
    .await;
    let a = h
        .send(json!({"event_type": "pipeline.done", "text": "x"}))
        .await;
    let names: Vec<_> = a["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["destination"].clone())
        .collect();
    assert_eq!(names, vec![json!("pipelines")]);
    let b = h
        .send(json!({"event_type": "db.down", "text": "x", "severity": "critical"}))
        .await;
    let names: Vec<_> = b["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["destination"].clone())
        .collect();
    assert_eq!(names, vec![json!("critical")]);
    let (status, body) = h
        .call(
            Method::PUT,
            "/api/v1/destinations/bad",
            Some(json!({"kind": "webhook", "url": rx.url("/"), "filter": "severity =="})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["field"], "filter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_times_out_and_is_retried() {
    let rx = FakeReceiver::start().await;
    rx.push(Reply::ok().delay(Duration::from_secs(3)));
    let h = TestHerald::start().await;
    h.put_destination(
        "slow",
        json!({"kind": "webhook", "url": rx.url("/"), "timeout": "300ms", "retry": fast_retry()}),
    )
    .await;
    let id = TestHerald::first_delivery(&h.send(json!({"text": "x", "to": ["slow"]})).await);
    let d = h.wait_status(&id, "delivered", WAIT).await;
    assert_eq!(d["attempts"][0]["error_class"], "timeout");
    assert_eq!(d["attempts"][0]["outcome"], "retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_then_restart_delivers_what_was_pending() {
    let rx = FakeReceiver::start().await;
    rx.push(Reply::status(503));
    let h = TestHerald::start().await;
    h.put_destination("hook", json!({"kind": "webhook", "url": rx.url("/"), "retry": {"schedule": ["2s"], "jitter": false}})).await;
    let id = TestHerald::first_delivery(
        &h.send(json!({"text": "survives a restart", "to": ["hook"]}))
            .await,
    );
    rx.wait_for(1, WAIT).await;
    let base = h.herald.as_ref().unwrap().state.config.as_ref().clone();
    let dir = h.stop().await;
    let h = TestHerald::start_config(
        herald_server::config::Config {
            listen: "127.0.0.1:0".into(),
            ..base
        },
        dir,
    )
    .await;
    h.wait_status(&id, "delivered", WAIT).await;
    assert_eq!(rx.count(), 2);
}

/// A receiver that echoes its request (headers, path and query) back, failing once so the
/// attempt also records an error: neither the stored excerpt nor the error may show what
/// Herald sent that could be secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_echoing_its_request_does_not_put_secrets_into_the_attempts() {
    let rx = FakeReceiver::start().await;
    rx.respond_with(|r| {
        let headers: Vec<String> = r
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("")))
            .collect();
        let echo = format!(
            "{} {}?{}\n{}",
            r.method,
            r.path,
            r.query.clone().unwrap_or_default(),
            headers.join("\n")
        );
        let status = if r.header("x-attempt-marker").is_some() {
            500
        } else {
            200
        };
        Some(Reply::status(status).body(echo))
    });
    let h = TestHerald::start().await;
    h.put_destination(
        "inhouse",
        json!({"kind": "http", "url": rx.url("/api/v1/message?access_token=qs-secret-0123456789"),
               "headers": {"Authorization": "Bearer hdr-secret-abcdefghij", "X-Access": "custom-secret-klmnop",
                           "X-Attempt-Marker": "1"},
               "retry": {"schedule": ["100ms"], "jitter": false}}),
    )
    .await;
    h.put_destination("hook", json!({"kind": "webhook", "url": rx.url("/hook")}))
        .await;
    let inhouse =
        TestHerald::first_delivery(&h.send(json!({"text": "x", "to": ["inhouse"]})).await);
    let hook = TestHerald::first_delivery(&h.send(json!({"text": "y", "to": ["hook"]})).await);
    h.wait_status(&hook, "delivered", Duration::from_secs(10))
        .await;
    let d = h
        .wait_status(&inhouse, "dead", Duration::from_secs(10))
        .await;
    let signature = rx
        .received()
        .iter()
        .find_map(|r| r.header("webhook-signature").map(str::to_string))
        .expect("the webhook was signed");
    let (_, hook_d) = h
        .call(Method::GET, &format!("/api/v1/deliveries/{hook}"), None)
        .await;
    let recorded = format!("{d}{hook_d}");
    for secret in [
        "qs-secret-0123456789",
        "hdr-secret-abcdefghij",
        "custom-secret-klmnop",
        signature.trim_start_matches("v1,"),
    ] {
        assert!(
            !recorded.contains(secret),
            "{secret} was stored: {recorded}"
        );
    }
    assert!(
        recorded.contains("****"),
        "the echo is kept, masked: {recorded}"
    );
    assert!(
        recorded.contains("/api/v1/message"),
        "and stays useful: {recorded}"
    );
}

/// References read only from the allowlist and only in secret-bearing fields: a template
/// including Herald's key file, a header naming the admin token's variable, a link out of
/// an allowed directory — each is refused when saved, and no answer shows a secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_cannot_reach_herald_s_own_secrets() {
    let secrets = tempfile::tempdir().unwrap();
    let allowed = secrets.path().to_path_buf();
    let h = TestHerald::start_with(|c| c.secrets.file_dirs = vec![allowed.clone()]).await;
    let key = h.dir.path().join("master.key");
    assert!(key.exists(), "the key file this test tries to reach");
    let key_text = std::fs::read_to_string(&key).unwrap();
    let link = secrets.path().join("innocent");
    std::os::unix::fs::symlink(&key, &link).unwrap();
    std::fs::write(secrets.path().join("token"), "allowed-token-value\n").unwrap();
    for (what, spec, field) in [
        (
            "a template including the key file",
            json!({"kind": "http", "url": "http://127.0.0.1:9/x",
                   "body_template": format!("{{% include \"${{file:{}}}\" %}}", key.display())}),
            "body_template",
        ),
        (
            "the admin token's variable",
            json!({"kind": "http", "url": "http://127.0.0.1:9/x",
                   "headers": {"X-Leak": "${env:HERALD_ADMIN_TOKEN}"}}),
            "headers.X-Leak",
        ),
        (
            "a link to the key from an allowed directory",
            json!({"kind": "http", "url": "http://127.0.0.1:9/x",
                   "headers": {"Authorization": format!("Bearer ${{file:{}}}", link.display())}}),
            "headers.Authorization",
        ),
        (
            "a file outside the allowed directories",
            json!({"kind": "webhook", "url": format!("http://127.0.0.1:9/${{file:{}}}", key.display())}),
            "url",
        ),
    ] {
        let (status, body) = h
            .call(Method::PUT, "/api/v1/destinations/leak", Some(spec))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {body}");
        assert_eq!(body["errors"][0]["field"], field, "{what}: {body}");
        assert!(
            !body.to_string().contains(key_text.trim()),
            "{what}: {body}"
        );
    }
    // An allowed file in an allowed field still works.
    let rx = FakeReceiver::start().await;
    let token_file = secrets.path().join("token");
    h.put_destination(
        "ok",
        json!({"kind": "http", "url": rx.url("/m"),
               "headers": {"Authorization": format!("Bearer ${{file:{}}}", token_file.display())}}),
    )
    .await;
    let id = TestHerald::first_delivery(&h.send(json!({"text": "x", "to": ["ok"]})).await);
    h.wait_status(&id, "delivered", Duration::from_secs(10))
        .await;
    assert_eq!(
        rx.received()[0].header("authorization"),
        Some("Bearer allowed-token-value")
    );
}

/// Template budgets end to end. What exceeds them whatever the message cannot be saved; what
/// exceeds them on one message's data fails that attempt (body template) or that request
/// (filter, 422) — naming the budget, never the data — and the next message goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_and_filters_that_exceed_their_budget_fail_alone() {
    let rx = FakeReceiver::start().await;
    let h = TestHerald::start().await;
    let nine = format!("'x'{}|length > 0", "|replace('x', 'xxxxxxxxxx')".repeat(9));
    let doubling = "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|tojson }}";
    for (spec, field) in [
        (
            json!({"kind": "webhook", "url": rx.url("/"), "filter": nine}),
            "filter",
        ),
        (
            json!({"kind": "http", "url": rx.url("/"), "body_template": doubling}),
            "body_template",
        ),
    ] {
        let (status, body) = h
            .call(Method::PUT, "/api/v1/destinations/greedy", Some(spec))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["errors"][0]["field"], field, "{body}");
        assert!(body.to_string().contains("byte budget"), "{body}");
    }

    // Depends on the data: `text` replaced into itself.
    h.put_destination(
        "echo",
        json!({"kind": "http", "url": rx.url("/echo"),
               "body_template": "{{ (text|replace('x', text))|tojson }}", "retry": fast_retry()}),
    )
    .await;
    let secret_text = format!("secret-{}", "x".repeat(20_000));
    let greedy = h.send(json!({"text": secret_text, "to": ["echo"]})).await;
    let d = h
        .wait_status(&TestHerald::first_delivery(&greedy), "dead", WAIT)
        .await;
    assert_eq!(d["attempts"].as_array().unwrap().len(), 1, "permanent: {d}");
    assert_eq!(d["attempts"][0]["outcome"], "permanent");
    let error = d["attempts"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("byte budget"), "{d}");
    assert!(
        !d.to_string().contains("secret-x"),
        "no data in the attempt"
    );
    let fine = h.send(json!({"text": "axb", "to": ["echo"]})).await;
    h.wait_status(&TestHerald::first_delivery(&fine), "delivered", WAIT)
        .await;
    assert_eq!(rx.received().last().unwrap().json(), json!("aaxbb"));

    h.put_destination(
        "picky",
        json!({"kind": "webhook", "url": rx.url("/picky"),
               "filter": "(text|replace('x', text))|length > 3"}),
    )
    .await;
    let (status, body) = h
        .call(
            Method::POST,
            "/api/v1/messages",
            Some(json!({"text": secret_text})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("picky") && detail.contains("budget"),
        "{body}"
    );
    assert!(!body.to_string().contains("secret-x"), "{body}");
    let routed = h.send(json!({"text": "axb"})).await;
    let names: Vec<_> = routed["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["destination"].as_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&"picky".to_string()), "{routed}");
}
