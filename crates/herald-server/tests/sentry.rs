//! Sentry ingest stories: envelopes and store bodies as Sentry SDKs send them (compressed,
//! with extra item types, keyed by DSN), over real HTTP to a real Herald; alerts delivered
//! to a loopback webhook receiver.

use herald_testkit::compress::{br, deflate, gzip};
use herald_testkit::herald::{TestHerald, fast_retry};
use herald_testkit::receiver::{FakeReceiver, Reply};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);
const EVENT_ID: &str = "9ec79c33ec9942ab8353589fcb2e04dc";

fn event() -> Value {
    json!({
        "event_id": EVENT_ID, "level": "error", "platform": "python", "environment": "production",
        "release": "shop@1.4.2", "server_name": "web-1", "timestamp": "2026-12-01T10:00:00Z",
        "tags": {"region": "eu"},
        "exception": {"values": [{
            "type": "ZeroDivisionError", "value": "division by zero", "module": null, "mechanism": {"type": "django", "handled": false},
            "stacktrace": {"frames": [
                {"filename": "django/core/handlers/base.py", "abs_path": "/venv/django/core/handlers/base.py", "function": "_get_response",
                 "module": "django.core.handlers.base", "lineno": 197, "in_app": false, "pre_context": [], "vars": {"x": "1"}},
                {"filename": "shop/views.py", "abs_path": "/srv/shop/views.py", "function": "divide", "module": "shop.views",
                 "lineno": 42, "in_app": true, "context_line": "    return a / b"}]}}]},
        "request": {"method": "GET", "url": "http://testserver/api/divide", "query_string": "a=1", "headers": {"Host": "testserver"}},
        "user": {"id": "7", "username": "alice", "email": "alice@example.com", "ip_address": "127.0.0.1"},
        "sdk": {"name": "sentry.python.django", "version": "2.19.0"},
        "contexts": {"runtime": {"name": "CPython"}}, "breadcrumbs": {"values": []}
    })
}

/// An envelope as sentry-python writes it: header, the event (with `length`), then a
/// `client_report` item without one.
fn envelope(token: Option<&str>, addr: &str) -> Vec<u8> {
    let mut header = json!({"event_id": EVENT_ID, "sent_at": "2026-12-01T10:00:01Z",
                            "sdk": {"name": "sentry.python", "version": "2.19.0"}});
    if let Some(t) = token {
        header["dsn"] = json!(format!("http://{t}@{addr}/42"));
    }
    let ev = event().to_string();
    let mut out = format!("{header}\n");
    out.push_str(&format!(
        "{}\n{ev}\n",
        json!({"type": "event", "length": ev.len(), "content_type": "application/json"})
    ));
    out.push_str(&format!(
        "{}\n{}\n",
        json!({"type": "client_report"}),
        json!({"timestamp": 1733047201, "discarded_events": [{"reason": "sample_rate", "category": "transaction", "quantity": 2}]})
    ));
    out.push_str(&format!(
        "{}\n{}\n",
        json!({"type": "session", "length": 2}),
        "{}"
    ));
    out.into_bytes()
}

async fn setup() -> (TestHerald, FakeReceiver, String) {
    let rx = FakeReceiver::start().await;
    rx.set_default(Reply::ok());
    let h = TestHerald::start().await;
    h.put_destination(
        "alerts",
        json!({"kind": "webhook", "url": rx.url("/alerts"), "events": ["error.reported"], "retry": fast_retry()}),
    )
    .await;
    let token = h.token("django", &["send"]).await;
    (h, rx, token)
}

async fn post(
    h: &TestHerald,
    path: &str,
    body: Vec<u8>,
    headers: &[(&str, String)],
) -> (StatusCode, Value) {
    let mut req = h.http.post(h.url(path)).body(body);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.expect("herald answers");
    let status = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        assert_eq!(ct, "application/problem+json", "{status} {body}");
    }
    (status, body)
}

fn sentry_auth(token: &str) -> (&'static str, String) {
    (
        "x-sentry-auth",
        format!("Sentry sentry_key={token}, sentry_version=7, sentry_client=sentry.python/2.19.0"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzipped_envelope_with_a_client_report_becomes_one_error_alert() {
    let (h, rx, token) = setup().await;
    let addr = h.base.trim_start_matches("http://").to_string();
    let (status, body) = post(
        &h,
        "/api/42/envelope/",
        gzip(&envelope(None, &addr)),
        &[
            sentry_auth(&token),
            ("content-encoding", "gzip".into()),
            ("content-type", "application/x-sentry-envelope".into()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"id": EVENT_ID}));

    let alerts = rx.wait_for(1, WAIT).await;
    let alert = alerts[0].json();
    assert_eq!(alert["type"], "error.reported");
    assert_eq!(
        alert["title"], "ZeroDivisionError in 42",
        "the project id names the service"
    );
    let r = &alert["data"]["report"];
    assert_eq!(r["exception"]["type"], "ZeroDivisionError");
    assert_eq!(r["exception"]["stacktrace"][1]["in_app"], true);
    assert_eq!(
        r["exception"]["stacktrace"][1]["context_line"],
        "    return a / b"
    );
    assert_eq!(
        r["request"],
        json!({"method": "GET", "url": "http://testserver/api/divide", "path": "/api/divide"})
    );
    assert_eq!(r["user"]["username"], "alice");
    assert_eq!(r["environment"], "production");
    assert_eq!(r["release"], "shop@1.4.2");
    assert_eq!(r["server_name"], "web-1");
    assert_eq!(r["event_id"], EVENT_ID);
    assert_eq!(alert["data"]["culprit"], "shop.views in divide");

    // The same event again folds into the group (one alert), and a `service` tag names
    // the service instead of the project.
    let (status, _) = post(
        &h,
        "/api/42/envelope/",
        envelope(None, &addr),
        &[sentry_auth(&token)],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let mut tagged = event();
    tagged["tags"] = json!([["service", "shop"]]);
    let (status, _) = post(
        &h,
        "/api/42/store/",
        tagged.to_string().into_bytes(),
        &[sentry_auth(&token)],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let alerts = rx.wait_for(2, WAIT).await;
    assert_eq!(alerts[1].json()["title"], "ZeroDivisionError in shop");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_comes_from_x_sentry_auth_the_query_a_bearer_token_or_the_dsn() {
    let (h, _rx, token) = setup().await;
    let addr = h.base.trim_start_matches("http://").to_string();
    let ok = [
        (
            "/api/42/envelope/".to_string(),
            envelope(None, &addr),
            vec![sentry_auth(&token)],
        ),
        (
            format!("/api/42/envelope/?sentry_key={token}&sentry_version=7"),
            envelope(None, &addr),
            vec![],
        ),
        (
            "/api/42/envelope/".to_string(),
            envelope(None, &addr),
            vec![("authorization", format!("Bearer {token}"))],
        ),
        (
            "/api/42/envelope/".to_string(),
            envelope(Some(&token), &addr),
            vec![],
        ),
    ];
    for (path, body, headers) in ok {
        let (status, answer) = post(&h, &path, body, &headers).await;
        assert_eq!(status, StatusCode::OK, "{path} {headers:?}: {answer}");
    }
    let wrong = "hrld_abcdefabcdef_notthesecretatall0000000000000000";
    for (body, headers) in [
        (envelope(None, &addr), vec![]),
        (envelope(None, &addr), vec![sentry_auth(wrong)]),
        (envelope(Some(wrong), &addr), vec![]),
        (b"garbage".to_vec(), vec![]),
    ] {
        let (status, answer) = post(&h, "/api/42/envelope/", body, &headers).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    }
    // An empty key is no key, wherever it is given.
    for (path, headers) in [
        ("/api/42/envelope/?sentry_key=", vec![]),
        ("/api/42/store/?sentry_key=", vec![]),
        ("/api/42/envelope/", vec![sentry_auth("")]),
    ] {
        let (status, answer) = post(&h, path, envelope(None, &addr), &headers).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{path} {headers:?}: {answer}"
        );
    }
    let reader = h.token("dash", &["read"]).await;
    let (status, _) = post(
        &h,
        "/api/42/envelope/",
        envelope(None, &addr),
        &[sentry_auth(&reader)],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = post(&h, "/api/42/store/", event().to_string().into_bytes(), &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_bodies_may_be_deflate_or_br_and_envelopes_may_be_br() {
    let (h, rx, token) = setup().await;
    let addr = h.base.trim_start_matches("http://").to_string();
    let mut e = event();
    e["event_id"] = json!("0123456789abcdef0123456789abcdef");
    e["exception"]["values"][0]["type"] = json!("KeyError");
    let (status, body) = post(
        &h,
        "/api/7/store/",
        deflate(e.to_string().as_bytes()),
        &[sentry_auth(&token), ("content-encoding", "deflate".into())],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"], "0123456789abcdef0123456789abcdef");
    let (status, body) = post(
        &h,
        "/api/7/envelope/",
        br(&envelope(None, &addr)),
        &[sentry_auth(&token), ("content-encoding", "br".into())],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    rx.wait_for(2, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_are_400_unknown_encodings_415_and_bombs_413() {
    let (h, rx, token) = setup().await;
    let auth = sentry_auth(&token);
    for body in [
        b"not an envelope".to_vec(),
        b"{}\n{\"type\":\"event\",\"length\":999}\n{}".to_vec(),
        b"{}\n{\"type\":\"event\"}\n[1,2]\n".to_vec(),
        b"{}\n{\"type\":\"event\"}\n{\"level\":\"error\"}\n".to_vec(),
    ] {
        let (status, p) = post(
            &h,
            "/api/42/envelope/",
            body.clone(),
            std::slice::from_ref(&auth),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{}: {p}",
            String::from_utf8_lossy(&body)
        );
    }
    let (status, _) = post(
        &h,
        "/api/bad%20project/envelope/",
        b"{}".to_vec(),
        std::slice::from_ref(&auth),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = post(
        &h,
        "/api/42/envelope/",
        b"{}".to_vec(),
        &[
            auth.clone(),
            ("content-encoding", "zstd-from-the-future".into()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, _) = post(
        &h,
        "/api/42/envelope/",
        b"\x1f\x8bnot gzip at all".to_vec(),
        &[auth.clone(), ("content-encoding", "gzip".into())],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // 64 MiB of zeros gzip to ~64 KiB: under the compressed cap, far over the inflated one.
    let bomb = gzip(&vec![b' '; 64 << 20]);
    assert!(bomb.len() < 1 << 20);
    let (status, _) = post(
        &h,
        "/api/42/envelope/",
        bomb,
        &[auth.clone(), ("content-encoding", "gzip".into())],
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let status = h
        .post_oversized("/api/42/store/", std::slice::from_ref(&auth), 2 << 20)
        .await;
    assert_eq!(status, 413);
    // An envelope with only a session is fine and alerts nobody.
    let (status, body) = post(
        &h,
        "/api/42/envelope/",
        b"{}\n{\"type\":\"session\"}\n{\"sid\":\"x\"}\n".to_vec(),
        &[auth],
    )
    .await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.count(), 0);
}
