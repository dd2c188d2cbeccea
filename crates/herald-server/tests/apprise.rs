//! Apprise-API-compatible ingest stories: `POST /notify/{key}` with the form and JSON bodies
//! Apprise clients send, over real HTTP to a real Herald; deliveries go to loopback webhook
//! receivers.

use base64::Engine;
use herald_testkit::herald::{TestHerald, fast_retry};
use herald_testkit::receiver::{FakeReceiver, Reply};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

/// Destinations `ops` (tags alerts, devops), `sales` (alerts, sales) and `misc` (no tags),
/// and a `send` token named `alerts`.
async fn setup() -> (TestHerald, FakeReceiver, String) {
    let rx = FakeReceiver::start().await;
    rx.set_default(Reply::ok());
    let h = TestHerald::start().await;
    for (name, tags) in [
        ("ops", json!(["alerts", "devops"])),
        ("sales", json!(["alerts", "sales"])),
        ("misc", json!([])),
    ] {
        h.put_destination(
            name,
            json!({"kind": "webhook", "url": rx.url(&format!("/{name}")), "tags": tags, "retry": fast_retry()}),
        )
        .await;
    }
    let token = h.token("alerts", &["send"]).await;
    (h, rx, token)
}

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

async fn notify(
    h: &TestHerald,
    path: &str,
    auth: Option<String>,
    content_type: &str,
    body: String,
) -> (StatusCode, Value) {
    let mut req = h
        .http
        .post(h.url(path))
        .header("content-type", content_type)
        .header("accept", "application/json")
        .body(body);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = req.send().await.expect("herald answers");
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

const FORM: &str = "application/x-www-form-urlencoded";

fn destinations(accepted: &Value) -> Vec<String> {
    accepted["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["destination"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_post_with_basic_auth_reaches_the_destinations_tagged_with_the_key() {
    let (h, rx, token) = setup().await;
    let (status, accepted) = notify(
        &h,
        "/notify/alerts",
        Some(basic("airflow", &token)),
        FORM,
        "title=ETL+%ED%95%9C%EA%B8%80&body=3+rows+failed+%F0%9F%9A%A8&type=failure&format=text&tag=devops".into(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{accepted}");
    assert_eq!(accepted["event_type"], "notify.failure");
    assert_eq!(destinations(&accepted), ["ops"]);
    let got = rx.wait_for(1, WAIT).await;
    assert_eq!(got[0].path, "/ops");
    let body = got[0].json();
    assert_eq!(body["type"], "notify.failure");
    assert_eq!(body["title"], "ETL 한글");
    assert_eq!(body["text"], "3 rows failed 🚨");
    assert_eq!(body["severity"], "error");
    assert_eq!(body["data"]["apprise"]["key"], "alerts");
    assert_eq!(body["data"]["apprise"]["tag"], json!(["devops"]));

    // Repeated form tags are an OR, like a list; no tag: every destination with the key.
    let (_, a) = notify(
        &h,
        "/notify/alerts",
        Some(basic("x", &token)),
        FORM,
        "body=b&tag=devops&tag=sales".into(),
    )
    .await;
    assert_eq!(destinations(&a), ["ops", "sales"]);
    let (_, a) = notify(
        &h,
        "/notify/alerts",
        Some(format!("Bearer {token}")),
        FORM,
        "body=b".into(),
    )
    .await;
    assert_eq!(destinations(&a), ["ops", "sales"]);
    // The query string may carry the tag (and type) too.
    let (_, a) = notify(
        &h,
        "/notify/alerts?tag=sales&type=warning",
        Some(basic(&token, "None")),
        FORM,
        "body=b".into(),
    )
    .await;
    assert_eq!(destinations(&a), ["sales"]);
    assert_eq!(a["event_type"], "notify.warning");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bodies_and_tag_logic_comma_or_space_and() {
    let (h, _rx, token) = setup().await;
    let auth = || Some(format!("Bearer {token}"));
    let send = |tag: Value| {
        json!({"body": "disk full", "title": "", "type": "warning", "format": "markdown", "tag": tag, "attachments": []})
            .to_string()
    };
    let (status, a) = notify(
        &h,
        "/notify/alerts",
        auth(),
        "application/json",
        send(json!("devops, sales")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{a}");
    assert_eq!(destinations(&a), ["ops", "sales"]);
    let (_, a) = notify(
        &h,
        "/notify/alerts",
        auth(),
        "application/json",
        send(json!("alerts devops")),
    )
    .await;
    assert_eq!(destinations(&a), ["ops"]);
    let (_, a) = notify(
        &h,
        "/notify/alerts",
        auth(),
        "application/json",
        send(json!(["sales", "devops alerts"])),
    )
    .await;
    assert_eq!(destinations(&a), ["ops", "sales"]);
    let (status, p) = notify(
        &h,
        "/notify/alerts",
        auth(),
        "application/json",
        send(json!("devops sales")),
    )
    .await;
    assert_eq!(status, StatusCode::FAILED_DEPENDENCY, "{p}");
    assert_eq!(p["status"], 424);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_may_be_a_send_token_whose_name_is_the_key() {
    let (h, rx, token) = setup().await;
    // What `apprise://herald-host:port/<token>` posts: the token as the key, no auth header.
    let (status, a) = notify(
        &h,
        &format!("/notify/{token}"),
        None,
        FORM,
        "title=&body=nightly+load+done&type=success&format=text".into(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{a}");
    assert_eq!(
        destinations(&a),
        ["ops", "sales"],
        "the token is named `alerts`"
    );
    assert_eq!(a["event_type"], "notify.success");
    let got = rx.wait_for(2, WAIT).await;
    assert_eq!(got[0].json()["severity"], "info");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_answer_as_apprise_api_does() {
    let (h, rx, token) = setup().await;
    let auth = || Some(format!("Bearer {token}"));
    // No destination carries the key: 204, nothing stored.
    let (status, _) = notify(&h, "/notify/nobody", auth(), FORM, "body=x".into()).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for (body, ct) in [
        ("title=only", FORM),
        ("body=x&type=loud", FORM),
        ("body=x&format=rtf", FORM),
        ("body=x&tag=bad%2Ftag", FORM),
        ("{\"body\": 3}", "application/json"),
        ("{not json", "application/json"),
        ("--b\r\n", "multipart/form-data; boundary=b"),
    ] {
        let (status, p) = notify(&h, "/notify/alerts", auth(), ct, body.into()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {p}");
        assert_eq!(p["status"], 400, "{p}");
    }
    let (status, _) = notify(&h, "/notify/alerts", None, FORM, "body=x".into()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = notify(
        &h,
        "/notify/alerts",
        Some(basic("u", "hrld_wrongwrongwr_nope")),
        FORM,
        "body=x".into(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // An empty key is no key, however it is given.
    for auth in ["Bearer ".to_string(), basic("", ""), basic("u", "")] {
        let (status, p) = notify(
            &h,
            "/notify/alerts",
            Some(auth.clone()),
            FORM,
            "body=x".into(),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth}: {p}");
    }
    let (status, p) = notify(&h, "/notify/hrld_", None, FORM, "body=x".into()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{p}");
    let reader = h.token("dash", &["read"]).await;
    let (status, _) = notify(
        &h,
        "/notify/alerts",
        Some(format!("Bearer {reader}")),
        FORM,
        "body=x".into(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = notify(&h, "/notify/bad%20key", auth(), FORM, "body=x".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apprise_2_posts_to_notify_with_the_key_in_a_header() {
    let (h, rx, token) = setup().await;
    // What the apprise package's default `apprise://herald-host:port/<token>` (version 2)
    // sends: POST /notify, the key in X-Apprise-Config-ID.
    let resp = h
        .http
        .post(h.url("/notify"))
        .header("content-type", FORM)
        .header("x-apprise-config-id", &token)
        .body("title=Load&body=nightly+load+done&type=info")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let a: Value = resp.json().await.unwrap();
    assert_eq!(destinations(&a), ["ops", "sales"]);
    rx.wait_for(2, WAIT).await;
    let bearer = Some(format!("Bearer {token}"));
    let (status, p) = notify(&h, "/notify", bearer, FORM, "body=x".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "no key anywhere: {p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("X-Apprise-Config-ID"),
        "{p}"
    );
}
