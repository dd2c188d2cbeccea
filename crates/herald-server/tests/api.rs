//! API contract stories: idempotency, validation, scopes, problem+json, OpenAPI.

use herald_testkit::herald::TestHerald;
use herald_testkit::receiver::FakeReceiver;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

async fn with_hook() -> (TestHerald, FakeReceiver) {
    let rx = FakeReceiver::start().await;
    let h = TestHerald::start().await;
    h.put_destination("hook", json!({"kind": "webhook", "url": rx.url("/")}))
        .await;
    (h, rx)
}

async fn post_raw(
    h: &TestHerald,
    path: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = h
        .http
        .post(h.url(path))
        .bearer_auth(&h.token)
        .body(body)
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_repeat_replays_the_original_answer_without_a_new_delivery() {
    let (h, rx) = with_hook().await;
    let body = serde_json::to_vec(&json!({"text": "once", "to": ["hook"]})).unwrap();
    let first = post_raw(
        &h,
        "/api/v1/messages",
        body.clone(),
        &[("idempotency-key", "dag1/task1/run1")],
    )
    .await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();

    let again = post_raw(
        &h,
        "/api/v1/messages",
        body,
        &[("idempotency-key", "dag1/task1/run1")],
    )
    .await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again, first, "the original body, same message id");

    // The key in the body works the same way, and key order does not matter.
    let reordered = json!({"to": ["hook"], "text": "once", "idempotency_key": "dag1/task1/run1"});
    assert_eq!(h.send(reordered).await["id"], first["id"]);

    let changed = post_raw(
        &h,
        "/api/v1/messages",
        serde_json::to_vec(&json!({"text": "twice", "to": ["hook"]})).unwrap(),
        &[("idempotency-key", "dag1/task1/run1")],
    )
    .await;
    assert_eq!(changed.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        changed.headers()["content-type"],
        "application/problem+json"
    );

    h.wait_status(&TestHerald::first_delivery(&first), "delivered", WAIT)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.count(), 1, "exactly one delivery");
    let (_, list) = h
        .call(Method::GET, "/api/v1/deliveries?destination=hook", None)
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_belong_to_the_token_that_used_them() {
    let (h, _rx) = with_hook().await;
    let (a, b) = (
        h.token("airflow-a", &["send"]).await,
        h.token("airflow-b", &["send"]).await,
    );
    let send = |token: String, text: &'static str| {
        let h = &h;
        async move {
            let r = h
                .http
                .post(h.url("/api/v1/messages"))
                .bearer_auth(token)
                .header("idempotency-key", "nightly/run1")
                .json(&json!({"text": text, "to": ["hook"]}))
                .send()
                .await
                .unwrap();
            let replayed = r.headers().get("idempotent-replayed").is_some();
            (r.status(), replayed, r.json::<Value>().await.unwrap())
        }
    };
    let (status, _, first) = send(a.clone(), "from a").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // Another token with the same key and another body: its own message, and no word
    // about what the first token sent.
    let (status, replayed, other) = send(b.clone(), "from b").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{other}");
    assert!(!replayed);
    assert_ne!(other["id"], first["id"]);
    // b's repeat replays b's own answer.
    let (status, replayed, same) = send(b, "from b").await;
    assert_eq!((status, replayed), (StatusCode::ACCEPTED, true));
    assert_eq!(same["id"], other["id"]);
    // Within one token, keys work as before.
    let (status, replayed, again) = send(a, "from a").await;
    assert_eq!((status, replayed), (StatusCode::ACCEPTED, true));
    assert_eq!(again["id"], first["id"]);
}

async fn get_problem(h: &TestHerald, path: &str, status: StatusCode) -> Value {
    let resp = h
        .http
        .get(h.url(path))
        .bearer_auth(&h.token)
        .send()
        .await
        .unwrap();
    expect_problem(resp, status).await
}

async fn expect_problem(resp: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(resp.status(), status);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16());
    assert!(
        body["type"].is_string() && body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_problem_and_the_server_stays_healthy() {
    let (h, _rx) = with_hook().await;
    expect_problem(
        post_raw(&h, "/api/v1/messages", b"{\"text\": ".to_vec(), &[]).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    expect_problem(
        post_raw(&h, "/api/v1/messages", vec![b' '; 17 << 20], &[]).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    let big = json!({"kind": "webhook", "url": "https://example.com", "headers": {"X-Pad": "a".repeat(2 << 20)}});
    let resp = h
        .http
        .put(h.url("/api/v1/destinations/big"))
        .bearer_auth(&h.token)
        .json(&big)
        .send()
        .await
        .unwrap();
    expect_problem(resp, StatusCode::PAYLOAD_TOO_LARGE).await;

    let cases = [
        (
            json!({"kind": "carrier-pigeon", "url": "https://example.com"}),
            "kind",
        ),
        (
            json!({"kind": "webhook", "url": "https://example.com", "timeout": "5 parsecs"}),
            "timeout",
        ),
        (
            json!({"kind": "webhook", "url": "https://example.com", "retry": {"schedule": ["1x"]}}),
            "retry.schedule[0]",
        ),
        (
            json!({"kind": "http", "url": "https://example.com", "headers": {"X-Evil": "a\r\nInjected: 1"}}),
            "headers.X-Evil",
        ),
        (
            json!({"kind": "http", "url": "https://example.com", "body_template": "{{ text "}),
            "body_template",
        ),
        (json!({"kind": "webhook", "url": "not a url"}), "url"),
        (
            json!({"kind": "webhook", "url": "https://example.com", "secret": "plain"}),
            "secret[0]",
        ),
    ];
    for (spec, field) in cases {
        let resp = h
            .http
            .put(h.url("/api/v1/destinations/d1"))
            .bearer_auth(&h.token)
            .json(&spec)
            .send()
            .await
            .unwrap();
        let body = expect_problem(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(body["errors"][0]["field"], field, "{spec} → {body}");
    }
    let resp = h
        .http
        .put(h.url("/api/v1/destinations/Bad%20Name"))
        .bearer_auth(&h.token)
        .json(&json!({"kind": "webhook", "url": "https://e.com"}))
        .send()
        .await
        .unwrap();
    expect_problem(resp, StatusCode::UNPROCESSABLE_ENTITY).await;

    let msgs = [
        (
            json!({"text": "x", "event_type": "has spaces"}),
            "event_type",
        ),
        (json!({"text": "x", "severity": "apocalyptic"}), "severity"),
        (json!({"text": "x", "to": ["nowhere"]}), "to"),
        (json!({"text": 5}), "text"),
        (json!({"txt": "typo"}), "txt"),
        (json!({}), "text"),
    ];
    for (msg, field) in msgs {
        let resp = post_raw(
            &h,
            "/api/v1/messages",
            serde_json::to_vec(&msg).unwrap(),
            &[],
        )
        .await;
        let body = expect_problem(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(body["errors"][0]["field"], field, "{msg} → {body}");
    }
    get_problem(
        &h,
        "/api/v1/deliveries?status=lost",
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    get_problem(
        &h,
        "/api/v1/deliveries?limit=-1",
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    get_problem(&h, "/api/v1/messages/msg_nope", StatusCode::NOT_FOUND).await;
    get_problem(
        &h,
        "/api/v1/destinations/Not%20A%20Name",
        StatusCode::NOT_FOUND,
    )
    .await;
    let resp = h
        .http
        .patch(h.url("/api/v1/messages"))
        .bearer_auth(&h.token)
        .send()
        .await
        .unwrap();
    expect_problem(resp, StatusCode::METHOD_NOT_ALLOWED).await;
    let resp = h.http.get(h.url("/nowhere")).send().await.unwrap();
    expect_problem(resp, StatusCode::NOT_FOUND).await;

    let health = h.http.get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let ready = h.http.get(h.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    h.send(json!({"text": "still accepting", "to": ["hook"]}))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_are_enforced_on_every_route() {
    let (h, _rx) = with_hook().await;
    let resp = h
        .http
        .get(h.url("/api/v1/deliveries"))
        .send()
        .await
        .unwrap();
    expect_problem(resp, StatusCode::UNAUTHORIZED).await;
    let resp = h
        .http
        .get(h.url("/api/v1/deliveries"))
        .bearer_auth("hrld_aaaaaaaaaaaa_wrong")
        .send()
        .await
        .unwrap();
    expect_problem(resp, StatusCode::UNAUTHORIZED).await;

    let (status, created) = h
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": "airflow", "scopes": ["send"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let send = created["token"].as_str().unwrap().to_string();
    let (_, created) = h
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": "grafana", "scopes": ["read"]})),
        )
        .await;
    let read = created["token"].as_str().unwrap().to_string();

    let (status, _) = h
        .call_as(
            &send,
            Method::POST,
            "/api/v1/messages",
            Some(json!({"text": "hi", "to": ["hook"]})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    for (method, path) in [
        (Method::GET, "/api/v1/deliveries"),
        (Method::GET, "/api/v1/destinations"),
        (Method::GET, "/api/v1/audit"),
        (Method::GET, "/api/v1/dlq"),
    ] {
        let (status, _) = h.call_as(&send, method, path, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "send token on {path}");
    }
    let (status, _) = h
        .call_as(&read, Method::GET, "/api/v1/deliveries", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = h
        .call_as(
            &read,
            Method::POST,
            "/api/v1/messages",
            Some(json!({"text": "hi"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = h
        .call_as(
            &read,
            Method::PUT,
            "/api/v1/destinations/x",
            Some(json!({"kind": "webhook", "url": "https://e.com"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = h
        .call_as(
            &read,
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": "x", "scopes": ["admin"]})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (_, list) = h.call(Method::GET, "/api/v1/tokens", None).await;
    assert!(
        !list.to_string().contains(&send[18..]),
        "secrets never listed"
    );
    let send_id = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "airflow")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = h
        .call(Method::DELETE, &format!("/api/v1/tokens/{send_id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = h
        .call_as(
            &send,
            Method::POST,
            "/api/v1/messages",
            Some(json!({"text": "hi", "to": ["hook"]})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a revoked token is refused at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_accepts_the_good_messages_and_explains_the_bad() {
    let (h, rx) = with_hook().await;
    let (status, body) = h
        .call(
            Method::POST,
            "/api/v1/messages/batch",
            Some(json!({"messages": [{"text": "a", "to": ["hook"]}, {"text": "b", "to": ["nowhere"]}, {"text": 1}, {"text": "c", "to": ["hook"]}]})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let r = body["results"].as_array().unwrap();
    assert_eq!(r.len(), 4);
    assert_eq!(r[0]["status"], 202);
    assert_eq!(r[1]["status"], 422);
    assert_eq!(r[2]["status"], 422);
    assert_eq!(r[2]["errors"][0]["field"], "messages[2].text");
    assert_eq!(r[3]["status"], 202);
    rx.wait_for(2, WAIT).await;
    let (status, _) = h
        .call(
            Method::POST,
            "/api/v1/messages/batch",
            Some(json!({"messages": []})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_show_messages_deliveries_and_a_verifiable_audit_log() {
    let (h, rx) = with_hook().await;
    let accepted = h
        .send(json!({"text": "read me", "title": "T", "to": ["hook"], "payload": {"k": "v"}}))
        .await;
    let id = accepted["id"].as_str().unwrap();
    h.wait_status(&TestHerald::first_delivery(&accepted), "delivered", WAIT)
        .await;
    rx.wait_for(1, WAIT).await;
    let (status, m) = h
        .call(Method::GET, &format!("/api/v1/messages/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(m["text"], "read me");
    assert_eq!(m["payload"], json!({"k": "v"}));
    assert_eq!(m["deliveries"][0]["status"], "delivered");

    for i in 0..3 {
        h.send(json!({"text": format!("p{i}"), "to": ["hook"]}))
            .await;
    }
    let (_, page1) = h
        .call(Method::GET, "/api/v1/deliveries?limit=2", None)
        .await;
    assert_eq!(page1["items"].as_array().unwrap().len(), 2);
    let cursor = page1["next_cursor"].as_str().unwrap();
    let (_, page2) = h
        .call(
            Method::GET,
            &format!("/api/v1/deliveries?limit=2&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(page2["items"].as_array().unwrap().len(), 2);
    assert!(
        page2["items"][0]["id"].as_str().unwrap() < cursor,
        "newest first"
    );

    let (_, audit) = h.call(Method::GET, "/api/v1/audit?limit=1000", None).await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"destination.created")
            && actions.contains(&"message.accepted")
            && actions.contains(&"delivery.delivered"),
        "{actions:?}"
    );
    let (_, v) = h.call(Method::GET, "/api/v1/audit/verify", None).await;
    assert_eq!(v["ok"], true);
    assert!(v["entries"].as_u64().unwrap() >= 5);
    assert!(
        !audit.to_string().contains("whsec_"),
        "no secret enters the audit log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_route_with_full_paths() {
    let h = TestHerald::start().await;
    let spec = h.openapi().await;
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/api/v1/messages",
        "/api/v1/messages/batch",
        "/api/v1/messages/{id}",
        "/api/v1/deliveries",
        "/api/v1/deliveries/{id}",
        "/api/v1/destinations/{name}",
        "/api/v1/destinations/{name}/health",
        "/api/v1/dlq",
        "/api/v1/dlq/{queue}/replay/{item_id}",
        "/api/v1/audit/verify",
        "/api/v1/tokens",
        "/api/v1/tenants",
        "/api/v1/tenants/{id}",
    ] {
        assert!(
            spec["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    // Why a pending delivery waits is part of the documented delivery view.
    let schemas = &spec["components"]["schemas"];
    assert!(
        schemas["DeliveryView"]["properties"]["waiting"]
            .to_string()
            .contains("#/components/schemas/Waiting"),
        "{}",
        schemas["DeliveryView"]
    );
    assert_eq!(
        schemas["WaitReason"]["enum"],
        json!([
            "disabled",
            "paused",
            "circuit_open",
            "probing",
            "rate_limited",
            "scheduled"
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_mask_secrets_and_can_be_deleted() {
    let h = TestHerald::start().await;
    let secret = herald_core::signature::SigningKey::generate();
    let (status, body) = h
        .call(Method::PUT, "/api/v1/destinations/hook", Some(json!({"kind": "webhook", "url": "https://example.com/h", "secret": secret, "headers": {"Authorization": "Bearer very-secret-value-123"}})))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(body.get("generated_secret").is_none());
    let (status, _) = h
        .call(
            Method::PUT,
            "/api/v1/destinations/hook",
            Some(json!({"kind": "webhook", "url": "https://example.com/h2", "secret": secret})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "replacing answers 200");
    let (_, list) = h.call(Method::GET, "/api/v1/destinations", None).await;
    assert!(
        !list.to_string().contains(&secret[10..]),
        "secret masked: {list}"
    );
    let (status, _) = h
        .call(Method::DELETE, "/api/v1/destinations/hook", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = h.call(Method::GET, "/api/v1/destinations/hook", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = h
        .call(
            Method::PUT,
            "/api/v1/destinations/other",
            Some(json!({"name": "mismatch", "kind": "webhook", "url": "https://e.com"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_use_is_recorded() {
    let h = TestHerald::start().await;
    let (_, created) = h
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": "ci", "scopes": ["read"]})),
        )
        .await;
    let token = created["token"].as_str().unwrap().to_string();
    let (status, _) = h
        .call_as(&token, Method::GET, "/api/v1/deliveries", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let cfg = h.herald.as_ref().unwrap().state.config.as_ref().clone();
    let dir = h.stop().await; // a graceful stop writes the batched last-use times
    let h = TestHerald::start_config(cfg, dir).await;
    let (_, list) = h.call(Method::GET, "/api/v1/tokens", None).await;
    let ci = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ci")
        .unwrap()
        .clone();
    assert!(ci["last_used_at"].is_string(), "{ci}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_tokens_see_no_secret_and_admins_reveal_them_only_on_request_audited() {
    let h = TestHerald::start().await;
    // No message goes there: the URL is only stored and read back.
    h.put_destination(
        "inhouse",
        json!({"kind": "http", "url": "https://in.example.com/hook/abcdefghijklmnopqrstuvwx?access_token=tok-0123456789",
               "headers": {"X-Access": "custom-secret-value-123", "Authorization": "Bearer auth-secret-value-456"}}),
    )
    .await;
    let reader = h.token("dashboards", &["read"]).await;
    for path in ["/api/v1/destinations/inhouse", "/api/v1/destinations"] {
        let (status, body) = h.call_as(&reader, Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK);
        let shown = body.to_string();
        for secret in [
            "tok-0123456789",
            "abcdefghijklmnopqrstuvwx",
            "custom-secret-value-123",
            "auth-secret-value-456",
        ] {
            assert!(
                !shown.contains(secret),
                "{path}: a read token sees {secret}: {shown}"
            );
        }
        assert!(
            shown.contains("https://in.example.com/"),
            "the origin stays: {shown}"
        );
    }
    let (status, _) = h
        .call_as(
            &reader,
            Method::GET,
            "/api/v1/destinations/inhouse?reveal=true",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "only admins reveal");

    let (_, admin_view) = h
        .call(Method::GET, "/api/v1/destinations/inhouse", None)
        .await;
    assert!(
        !admin_view.to_string().contains("auth-secret-value-456"),
        "masked without reveal"
    );
    let (status, revealed) = h
        .call(
            Method::GET,
            "/api/v1/destinations/inhouse?reveal=true",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        revealed["headers"]["Authorization"],
        "Bearer auth-secret-value-456"
    );
    let (_, audit) = h.call(Method::GET, "/api/v1/audit?limit=1000", None).await;
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "destination.revealed" && e["resource"] == "inhouse"),
        "the reveal is audited: {audit}"
    );
}
