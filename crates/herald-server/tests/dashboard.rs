//! Dashboard stories: an operator signs in, finds why a message did not arrive and fixes it;
//! read-only sessions see no actions; forged and cross-site posts are refused.

use herald_testkit::dashboard::Dashboard;
use herald_testkit::herald::{ADMIN_TOKEN, TestHerald};
use herald_testkit::receiver::{FakeReceiver, Reply};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

/// A hook whose receiver fails twice (500) then accepts, with one 100 ms retry: the first
/// message dies in the DLQ; a replay delivers it.
async fn dead_letter() -> (TestHerald, FakeReceiver, String, String) {
    let rx = FakeReceiver::start().await;
    rx.push(Reply::status(500).body("upstream exploded"));
    rx.push(Reply::status(500).body("upstream exploded"));
    let h = TestHerald::start().await;
    h.put_destination(
        "hook",
        json!({"kind": "webhook", "url": rx.url("/"), "retry": {"schedule": ["100ms"], "jitter": false}, "circuit_breaker": false}),
    )
    .await;
    let accepted = h
        .send(json!({"text": "disk full on db-1", "to": ["hook"], "idempotency_key": "alert-<b>42</b>"}))
        .await;
    let message_id = accepted["id"].as_str().unwrap().to_string();
    let delivery = TestHerald::first_delivery(&accepted);
    h.wait_status(&delivery, "dead", WAIT).await;
    (h, rx, message_id, delivery)
}

async fn token(h: &TestHerald, name: &str, scopes: &[&str]) -> String {
    let (status, body) = h
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": name, "scopes": scopes})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["token"].as_str().unwrap().to_string()
}

async fn signed_in(h: &TestHerald, token: &str) -> Dashboard {
    let mut ui = Dashboard::new(&h.base);
    let page = ui.sign_in(token).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(page.location.as_deref(), Some("/ui"));
    ui
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_finds_a_dead_delivery_sees_why_and_replays_it() {
    let (h, rx, message_id, delivery) = dead_letter().await;
    let ui = signed_in(&h, ADMIN_TOKEN).await;
    let cookie = ui.set_cookie.clone().unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(
        !cookie.contains(ADMIN_TOKEN),
        "the token never goes into the cookie"
    );

    let overview = ui.get("/ui").await;
    assert_eq!(overview.status, StatusCode::OK);
    assert!(overview.body.contains("Dead letters") && overview.body.contains("hook"));

    let found = ui
        .get(&format!("/ui/deliveries?id={message_id}&status=dead"))
        .await;
    assert_eq!(found.status, StatusCode::OK);
    assert!(found.body.contains(&delivery), "search finds the delivery");
    let by_key = ui
        .get("/ui/deliveries?idempotency_key=alert-%3Cb%3E42%3C%2Fb%3E")
        .await;
    assert!(
        by_key.body.contains(&delivery),
        "idempotency-key search finds it"
    );

    let detail = ui.get(&format!("/ui/deliveries/{delivery}")).await;
    assert_eq!(detail.status, StatusCode::OK);
    for text in ["Attempt 1", "Attempt 2", "HTTP 500", "upstream exploded"] {
        assert!(detail.body.contains(text), "timeline shows {text}");
    }
    assert!(
        detail.body.contains("alert-&lt;b&gt;42&lt;") && !detail.body.contains("<b>42"),
        "user data is escaped"
    );

    let dlq = ui.get("/ui/dlq?queue=hook").await;
    assert!(dlq.body.contains(&delivery) && dlq.body.contains("Replay"));
    let confirm = ui
        .get(&format!(
            "/ui/dlq/confirm?action=replay&queue=hook&id={delivery}"
        ))
        .await;
    assert_eq!(confirm.status, StatusCode::OK);
    let csrf = confirm
        .csrf()
        .expect("the confirmation carries a CSRF token");
    let done = ui
        .post(
            "/ui/dlq/replay",
            &[("csrf", &csrf), ("queue", "hook"), ("id", &delivery)],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let after = ui.get(done.location.as_deref().unwrap()).await;
    assert!(after.body.contains("Replayed 1 delivery"), "{}", after.body);
    h.wait_status(&delivery, "delivered", WAIT).await;
    assert_eq!(rx.count(), 3);

    let (_, audit) = h.call(Method::GET, "/api/v1/audit?limit=1000", None).await;
    let replays: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "dlq.replayed")
        .collect();
    assert_eq!(replays.len(), 1, "the replay is audited under the token");
    assert_eq!(replays[0]["actor"], "token:admin");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_session_sees_no_actions_and_its_posts_are_refused() {
    let (h, _rx, _message_id, delivery) = dead_letter().await;
    let read = token(&h, "viewer <i>x</i>", &["read"]).await;
    let ui = signed_in(&h, &read).await;
    let dlq = ui.get("/ui/dlq?queue=hook").await;
    assert_eq!(dlq.status, StatusCode::OK);
    assert!(dlq.body.contains(&delivery));
    assert!(!dlq.body.contains("Replay"), "no replay button");
    assert!(dlq.body.contains("read-only"));
    assert!(
        dlq.body.contains("viewer &lt;i&gt;x&lt;") && !dlq.body.contains("<i>x"),
        "the token name is escaped"
    );
    let confirm = ui
        .get(&format!(
            "/ui/dlq/confirm?action=replay&queue=hook&id={delivery}"
        ))
        .await;
    assert_eq!(confirm.status, StatusCode::FORBIDDEN);

    // A hand-made POST with the session's own CSRF token still needs the admin scope.
    let csrf = dlq
        .csrf()
        .expect("the sign-out form carries the CSRF token");
    for path in ["/ui/dlq/replay", "/ui/dlq/discard"] {
        let refused = ui
            .post(
                path,
                &[("csrf", &csrf), ("queue", "hook"), ("id", &delivery)],
            )
            .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{path}");
    }
    assert_eq!(h.delivery(&delivery).await["status"], "dead");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_cross_site_posts_are_refused() {
    let (h, _rx, _message_id, delivery) = dead_letter().await;
    let ui = signed_in(&h, ADMIN_TOKEN).await;
    let csrf = ui.get("/ui/dlq").await.csrf().unwrap();
    let target = [("queue", "hook"), ("id", delivery.as_str())];

    let no_csrf = ui.post("/ui/dlq/discard", &target).await;
    assert_eq!(
        no_csrf.status,
        StatusCode::FORBIDDEN,
        "a form without the CSRF token"
    );
    let wrong = ui
        .post(
            "/ui/dlq/discard",
            &[("csrf", "guess"), target[0], target[1]],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let cross_site = ui
        .post_from(
            Some("http://evil.example"),
            "/ui/dlq/discard",
            &[("csrf", &csrf), target[0], target[1]],
        )
        .await;
    assert_eq!(cross_site.status, StatusCode::FORBIDDEN);
    let anonymous = Dashboard::new(&h.base)
        .post("/ui/dlq/discard", &[("csrf", &csrf), target[0], target[1]])
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(h.delivery(&delivery).await["status"], "dead");

    // The real form discards; the whole-queue form then finds nothing left.
    let ok = ui
        .post("/ui/dlq/discard", &[("csrf", &csrf), target[0], target[1]])
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    assert_eq!(h.delivery(&delivery).await["status"], "discarded");
    let all = ui
        .post("/ui/dlq/discard", &[("csrf", &csrf), ("queue", "hook")])
        .await;
    assert!(all.location.unwrap().ends_with("n=0"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_takes_only_valid_read_tokens_and_sign_out_ends_the_session() {
    let h = TestHerald::start().await;
    let anonymous = Dashboard::new(&h.base);
    for path in [
        "/ui",
        "/ui/deliveries",
        "/ui/dlq",
        "/ui/audit",
        "/ui/destinations",
    ] {
        let p = anonymous.get(path).await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(p.location.as_deref(), Some("/ui/signin"));
    }
    let form = anonymous.get("/ui/signin").await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.body.contains("name=\"token\""));

    let mut ui = Dashboard::new(&h.base);
    assert_eq!(
        ui.sign_in("hrld_nope").await.status,
        StatusCode::UNAUTHORIZED
    );
    let send_only = token(&h, "ci", &["send"]).await;
    assert_eq!(ui.sign_in(&send_only).await.status, StatusCode::FORBIDDEN);
    assert!(ui.cookie.is_none());

    let read = token(&h, "viewer", &["read"]).await;
    let ui = signed_in(&h, &read).await;
    let page = ui.get("/ui/audit").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("token.created"), "recent audit entries");
    let verify = ui.get("/ui/audit/verify").await;
    assert!(
        verify.body.contains("The chain verifies"),
        "{}",
        verify.body
    );

    let csrf = page.csrf().unwrap();
    let out = ui.post("/ui/signout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(
        ui.get("/ui").await.status,
        StatusCode::SEE_OTHER,
        "session ended"
    );

    // Revoking the token ends its sessions too.
    let ui = signed_in(&h, &read).await;
    let (_, list) = h.call(Method::GET, "/api/v1/tokens", None).await;
    let id = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "viewer")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = h
        .call(Method::DELETE, &format!("/api/v1/tokens/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(ui.get("/ui").await.status, StatusCode::SEE_OTHER);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assets_are_embedded_and_cached_and_the_dashboard_is_not_in_the_api_document() {
    let h = TestHerald::start().await;
    let ui = signed_in(&h, ADMIN_TOKEN).await;
    let page = ui.get("/ui").await;
    let at = page.body.find("/ui/assets/htmx-").unwrap();
    let src = &page.body[at..];
    let src = &src[..src.find('"').unwrap()];
    let resp = reqwest::get(h.url(src)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age=31536000")
    );
    assert!(resp.text().await.unwrap().contains("htmx"));
    let css = reqwest::get(h.url("/ui/assets/herald.css")).await.unwrap();
    assert_eq!(css.status(), StatusCode::OK);
    assert_eq!(
        reqwest::get(h.url("/ui/assets/nope.js"))
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    let (_, doc) = h.call(Method::GET, "/api/openapi.json", None).await;
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.keys().all(|p| !p.starts_with("/ui")));
    assert!(
        paths["/api/v1/deliveries"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "idempotency_key")
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sees_error_groups_and_resolves_one_while_a_reader_cannot() {
    let h = TestHerald::start().await;
    let report = json!({
        "service": "shop", "environment": "production", "level": "error",
        "message": "division by zero",
        "exception": {"type": "ZeroDivisionError", "value": "division by zero",
            "stacktrace": [{"filename": "shop/views.py", "function": "divide", "lineno": 7, "in_app": true}]},
        "request": {"method": "GET", "path": "/divide/<script>"},
    });
    let first = h.report_error(report.clone()).await;
    h.report_error(report).await;
    let group = first["group"].as_str().unwrap().to_string();

    let ui = signed_in(&h, ADMIN_TOKEN).await;
    let page = ui.get("/ui/errors").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("ZeroDivisionError") && page.body.contains(&group),
        "{}",
        page.body
    );
    assert!(
        page.body.contains(">2<"),
        "the count of reports: {}",
        page.body
    );
    let csrf = page.csrf().unwrap();
    let done = ui
        .post(
            "/ui/errors/status",
            &[("csrf", &csrf), ("id", &group), ("action", "resolve")],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let (_, g) = h
        .call(Method::GET, &format!("/api/v1/error-groups/{group}"), None)
        .await;
    assert_eq!(g["status"], "resolved", "{g}");
    let resolved = ui.get("/ui/errors?status=resolved").await;
    assert!(resolved.body.contains(&group) && resolved.body.contains("Reopen"));
    let bad = ui.get("/ui/errors?status=sideways").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let forged = ui
        .post(
            "/ui/errors/status",
            &[("csrf", "wrong"), ("id", &group), ("action", "unresolve")],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    let reader = token(&h, "viewer", &["read"]).await;
    let ro = signed_in(&h, &reader).await;
    let page = ro.get("/ui/errors?status=all").await;
    assert!(
        page.body.contains(&group) && !page.body.contains("Reopen"),
        "no actions when read-only"
    );
    let refused = ro
        .post(
            "/ui/errors/status",
            &[
                ("csrf", &page.csrf().unwrap()),
                ("id", &group),
                ("action", "unresolve"),
            ],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let (_, g) = h
        .call(Method::GET, &format!("/api/v1/error-groups/{group}"), None)
        .await;
    assert_eq!(g["status"], "resolved", "unchanged by the reader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_page_lists_the_message_attachments_and_downloads_them() {
    use base64::Engine;
    let rx = FakeReceiver::start().await;
    let h = TestHerald::start().await;
    h.put_destination("hook", json!({"kind": "webhook", "url": rx.url("/")}))
        .await;
    let csv = "region,total\n서울,1200\n";
    let accepted = h
        .send(
            json!({"text": "weekly report", "to": ["hook"], "attachments": [{
            "filename": "주간 보고서.csv", "content_type": "text/csv",
            "data": base64::engine::general_purpose::STANDARD.encode(csv)}]}),
        )
        .await;
    let delivery = TestHerald::first_delivery(&accepted);
    let message = accepted["id"].as_str().unwrap();
    let ui = signed_in(&h, ADMIN_TOKEN).await;
    let mut page = ui.get(&format!("/ui/deliveries/{delivery}")).await;
    assert_eq!(page.status, StatusCode::OK);
    page.body = page.body.replace("&#x2f;", "/"); // minijinja escapes slashes in HTML
    assert!(
        page.body.contains("주간 보고서.csv") && page.body.contains("text/csv"),
        "{}",
        page.body
    );
    let link = format!("/ui/messages/{message}/attachments/0");
    assert!(page.body.contains(&link));
    let file = ui.get(&link).await;
    assert_eq!(file.status, StatusCode::OK);
    assert_eq!(file.body, csv, "the stored bytes, as sent");
    assert_eq!(
        ui.get(&format!("/ui/messages/{message}/attachments/7"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let anonymous = Dashboard::new(&h.base).get(&link).await;
    assert_ne!(anonymous.status, StatusCode::OK, "no session, no file");
}

/// A session is bound to the token it was made with: once the fixed admin token changes
/// (a restart with another `HERALD_ADMIN_TOKEN`), the old cookie opens nothing — and with
/// the same token it survives the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_when_the_admin_token_it_was_made_with_changes() {
    let (h, _rx, _message_id, delivery) = dead_letter().await;
    let mut ui = signed_in(&h, ADMIN_TOKEN).await;
    let confirm = ui
        .get(&format!(
            "/ui/dlq/confirm?action=replay&queue=hook&id={delivery}"
        ))
        .await;
    let csrf = confirm.csrf().expect("a CSRF token");
    let config = |token: &str, dir: &std::path::Path| herald_server::config::Config {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        admin_token: Some(token.into()),
        allow_networks: "127.0.0.0/8".into(),
        sqlite_synchronous: "normal".into(),
        ..Default::default()
    };

    // Same token after a restart: still signed in.
    let dir = h.stop().await;
    let h = TestHerald::start_config(config(ADMIN_TOKEN, dir.path()), dir).await;
    ui.base = h.base.clone();
    assert_eq!(ui.get("/ui/dlq").await.status, StatusCode::OK);

    // Another token: the old cookie is signed out and can replay nothing.
    let dir = h.stop().await;
    let other = "hrld_rotatedadmintok_abcdefghij0123456789XYZ";
    let h = TestHerald::start_config(config(other, dir.path()), dir).await;
    ui.base = h.base.clone();
    let page = ui.get("/ui/dlq").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location.as_deref(), Some("/ui/signin"));
    let replay = ui
        .post(
            "/ui/dlq/replay",
            &[("csrf", &csrf), ("queue", "hook"), ("id", &delivery)],
        )
        .await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED, "{}", replay.body);
    let (_, d) = h
        .call_as(
            other,
            Method::GET,
            &format!("/api/v1/deliveries/{delivery}"),
            None,
        )
        .await;
    assert_eq!(d["status"], "dead", "nothing was replayed");
    h.stop().await;
}

/// What a session keeps of the fixed admin token is keyed with the master key: a copy of
/// the database alone cannot test guesses of the token against it. The same token on two
/// Heralds with different master keys leaves two different bindings, neither holding it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_session_keeps_only_a_fingerprint_keyed_with_the_master_key() {
    use sha2::{Digest, Sha256};
    let mut bindings = Vec::new();
    for _ in 0..2 {
        let h = TestHerald::start().await;
        let ui = signed_in(&h, ADMIN_TOKEN).await;
        let cookie = ui.cookie.clone().unwrap();
        let id = cookie.strip_prefix("herald_session=").unwrap();
        let store = h.herald.as_ref().unwrap().state.store.clone();
        let session = store
            .get_session(
                &hex::encode(Sha256::digest(id.as_bytes())),
                herald_core::clock::now_ms(),
            )
            .await
            .unwrap()
            .expect("the session is stored");
        let binding = session.token_id.expect("bound to its token");
        assert!(!binding.contains(ADMIN_TOKEN), "{binding}");
        bindings.push(binding);
        h.stop().await;
    }
    assert_ne!(
        bindings[0], bindings[1],
        "the fingerprint depends on the master key, not on the token alone"
    );
}

/// A session made with a stored admin token dies with it: once the token is revoked the
/// old cookie is sent to sign-in and its DLQ replay does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_when_the_stored_token_it_was_made_with_is_revoked() {
    let (h, _rx, _message_id, delivery) = dead_letter().await;
    let (status, created) = h
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": "oncall", "scopes": ["admin"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let ui = signed_in(&h, created["token"].as_str().unwrap()).await;
    let confirm = ui
        .get(&format!(
            "/ui/dlq/confirm?action=replay&queue=hook&id={delivery}"
        ))
        .await;
    let csrf = confirm.csrf().expect("a CSRF token");

    let id = created["id"].as_str().unwrap();
    let (status, _) = h
        .call(Method::DELETE, &format!("/api/v1/tokens/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let replay = ui
        .post(
            "/ui/dlq/replay",
            &[("csrf", &csrf), ("queue", "hook"), ("id", &delivery)],
        )
        .await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED, "{}", replay.body);
    let page = ui.get("/ui/dlq").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location.as_deref(), Some("/ui/signin"));
    assert_eq!(
        h.delivery(&delivery).await["status"],
        "dead",
        "nothing replayed"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_page_shows_its_settings_masked_and_lets_an_admin_test_and_enable_it() {
    let rx = FakeReceiver::start().await;
    let h = TestHerald::start().await;
    h.put_destination(
        "crm",
        json!({"kind": "webhook", "url": rx.url("/hook?key=sekret-query"), "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
               "headers": {"x-api-key": "sekret-header"}}),
    )
    .await;
    rx.push(Reply::status(410).body("gone for good"));
    h.send(json!({"text": "hello", "to": ["crm"]})).await;
    herald_testkit::eventually(WAIT, "crm disabled by its 410", || async {
        let (_, d) = h
            .call(Method::GET, "/api/v1/destinations/crm/health", None)
            .await;
        (d["enabled"] == json!(false)).then_some(())
    })
    .await;

    // A read session sees the state and the settings without any secret, and no action.
    let reader = token(&h, "viewer", &["read"]).await;
    let ro = signed_in(&h, &reader).await;
    let page = ro.get("/ui/destinations/crm").await;
    assert_eq!(page.status, StatusCode::OK);
    for text in ["webhook", "HTTP 410 Gone", "Settings"] {
        assert!(page.body.contains(text), "shows {text}: {}", page.body);
    }
    for secret in [
        "sekret-header",
        "sekret-query",
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ] {
        assert!(
            !page.body.contains(secret),
            "a read session never sees {secret}"
        );
    }
    assert!(!page.body.contains("Send a test message"));
    let csrf = ro.get("/ui/destinations").await.csrf().unwrap_or_default();
    let refused = ro
        .post("/ui/destinations/crm/test", &[("csrf", &csrf)])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(rx.count(), 1, "a refused test sends nothing");

    // An admin sees the settings with inline secrets masked, tests and re-enables it.
    let ui = signed_in(&h, ADMIN_TOKEN).await;
    let page = ui.get("/ui/destinations/crm").await;
    assert!(page.body.contains("x-api-key") && !page.body.contains("sekret-header"));
    assert!(!page.body.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
    let csrf = page.csrf().expect("the admin's page carries a CSRF token");
    rx.push(Reply::status(500).body("still broken"));
    let tested = ui
        .post("/ui/destinations/crm/test", &[("csrf", &csrf)])
        .await;
    assert_eq!(tested.status, StatusCode::OK, "{}", tested.body);
    assert!(tested.body.contains("HTTP 500") && tested.body.contains("still broken"));
    assert_eq!(rx.count(), 2);
    let enabled = ui
        .post("/ui/destinations/crm/enable", &[("csrf", &csrf)])
        .await;
    assert_eq!(enabled.status, StatusCode::SEE_OTHER, "{}", enabled.body);
    assert_eq!(enabled.location.as_deref(), Some("/ui/destinations/crm"));
    let (_, health) = h
        .call(Method::GET, "/api/v1/destinations/crm/health", None)
        .await;
    assert_eq!(health["enabled"], json!(true));
    let forged = ui
        .post("/ui/destinations/crm/enable", &[("csrf", "forged")])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(
        ui.get("/ui/destinations/nope").await.status,
        StatusCode::NOT_FOUND
    );

    let (_, audit) = h.call(Method::GET, "/api/v1/audit?limit=1000", None).await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["resource"] == "crm")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"destination.tested"), "{actions:?}");
    assert!(actions.contains(&"destination.enabled"), "{actions:?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_page_shows_the_payload_as_sent() {
    let rx = FakeReceiver::start().await;
    let h = TestHerald::start().await;
    h.put_destination("hook", json!({"kind": "webhook", "url": rx.url("/")}))
        .await;
    let accepted = h
        .send(json!({"text": "nightly load", "to": ["hook"],
                     "payload": {"rows": 1200, "table": "<orders>"}}))
        .await;
    let delivery = TestHerald::first_delivery(&accepted);
    h.wait_status(&delivery, "delivered", WAIT).await;
    let ui = signed_in(&h, ADMIN_TOKEN).await;
    let page = ui.get(&format!("/ui/deliveries/{delivery}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Payload"), "{}", page.body);
    assert!(page.body.contains("1200"));
    assert!(
        page.body.contains("&lt;orders&gt;") && !page.body.contains("<orders>"),
        "payload values are escaped"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_attempt_shows_admins_the_request_it_sent_with_secrets_masked() {
    let rx = FakeReceiver::start().await;
    rx.push(Reply::status(503).body("try again later"));
    let h = TestHerald::start().await;
    h.put_destination(
        "hook",
        json!({"kind": "http", "url": rx.url("/v1/post"), "headers": {"x-api-key": "sekret-header-value"},
               "body_template": "{\"msg\": {{ text | tojson }}}",
               "retry": {"schedule": ["100ms"], "jitter": false}, "circuit_breaker": false}),
    )
    .await;
    let accepted = h
        .send(json!({"text": "nightly load done", "to": ["hook"]}))
        .await;
    let delivery = TestHerald::first_delivery(&accepted);
    h.wait_status(&delivery, "delivered", WAIT).await;

    let (_, d) = h
        .call(Method::GET, &format!("/api/v1/deliveries/{delivery}"), None)
        .await;
    let failed = &d["attempts"][0];
    assert_eq!(failed["status_code"], 503, "{d}");
    let x = &failed["exchange"];
    assert_eq!(x["method"], "POST", "{d}");
    assert!(x["url"].as_str().unwrap().ends_with("/v1/post"), "{x}");
    assert_eq!(x["status"], 503);
    assert!(
        x["request_body"]
            .as_str()
            .unwrap()
            .contains("\"msg\":\"nightly load done\""),
        "the rendered body as sent: {x}"
    );
    let headers = x["request_headers"].to_string();
    assert!(headers.contains("x-api-key"), "{headers}");
    assert!(
        !headers.contains("sekret-header-value"),
        "a header value the attempt sent is masked: {headers}"
    );
    assert!(
        x["response_headers"]
            .as_array()
            .is_some_and(|h| !h.is_empty())
    );
    assert!(
        d["attempts"][1].get("exchange").is_none(),
        "a delivered attempt keeps no exchange: {d}"
    );

    let reader = token(&h, "viewer", &["read"]).await;
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1/deliveries/{delivery}", h.base))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    let seen: Value = r.json().await.unwrap();
    assert!(
        seen["attempts"][0].get("exchange").is_none(),
        "a read token sees no request: {seen}"
    );

    let ui = signed_in(&h, ADMIN_TOKEN).await;
    let page = ui.get(&format!("/ui/deliveries/{delivery}")).await;
    assert!(page.body.contains("Request sent") && page.body.contains("answered HTTP 503"));
    assert!(page.body.contains("nightly load done") && !page.body.contains("sekret-header-value"));
    let ro = signed_in(&h, &reader).await;
    assert!(
        !ro.get(&format!("/ui/deliveries/{delivery}"))
            .await
            .body
            .contains("Request sent")
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_pauses_and_disables_a_destination_by_hand_in_the_api_and_the_dashboard() {
    let rx = FakeReceiver::start().await;
    let h = TestHerald::start().await;
    h.put_destination("crm", json!({"kind": "webhook", "url": rx.url("/")}))
        .await;
    let (status, _) = h
        .call(
            Method::POST,
            "/api/v1/destinations/crm/pause",
            Some(json!({"for": "1h"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let accepted = h.send(json!({"text": "held", "to": ["crm"]})).await;
    let delivery = TestHerald::first_delivery(&accepted);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.count(), 0, "nothing is sent to a paused destination");
    let (_, health) = h
        .call(Method::GET, "/api/v1/destinations/crm/health", None)
        .await;
    assert!(health["paused_until"].is_string(), "{health}");
    for (body, field) in [
        (json!({"for": "0s"}), "for"),
        (json!({"for": "30d"}), "for"),
        (json!({"for": "soon"}), "for"),
    ] {
        let (status, p) = h
            .call(Method::POST, "/api/v1/destinations/crm/pause", Some(body))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
        assert_eq!(p["errors"][0]["field"], field, "{p}");
    }
    let (status, _) = h
        .call(
            Method::POST,
            "/api/v1/destinations/nope/disable",
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = h
        .call(Method::POST, "/api/v1/destinations/crm/enable", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    h.wait_status(&delivery, "delivered", WAIT).await;

    // The dashboard: disable with a reason, then pause after enabling again.
    let ui = signed_in(&h, ADMIN_TOKEN).await;
    let page = ui.get("/ui/destinations/crm").await;
    let csrf = page.csrf().unwrap();
    let done = ui
        .post(
            "/ui/destinations/crm/disable",
            &[("csrf", &csrf), ("reason", "CRM maintenance window")],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let page = ui.get("/ui/destinations/crm").await;
    assert!(
        page.body.contains("CRM maintenance window"),
        "{}",
        page.body
    );
    let (_, health) = h
        .call(Method::GET, "/api/v1/destinations/crm/health", None)
        .await;
    assert_eq!(health["enabled"], json!(false));
    ui.post("/ui/destinations/crm/enable", &[("csrf", &csrf)])
        .await;
    let bad = ui
        .post(
            "/ui/destinations/crm/pause",
            &[("csrf", &csrf), ("for", "forever")],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let paused = ui
        .post(
            "/ui/destinations/crm/pause",
            &[("csrf", &csrf), ("for", "10m")],
        )
        .await;
    assert_eq!(paused.status, StatusCode::SEE_OTHER, "{}", paused.body);
    let page = ui.get("/ui/destinations/crm").await;
    assert!(
        !page.body.contains("Paused until</dt><dd>—"),
        "{}",
        page.body
    );

    let (_, audit) = h.call(Method::GET, "/api/v1/audit?limit=1000", None).await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["resource"] == "crm")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in [
        "destination.paused",
        "destination.disabled",
        "destination.enabled",
    ] {
        assert!(actions.contains(&a), "{a}: {actions:?}");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_edits_a_destination_from_its_masked_settings_without_losing_a_secret() {
    let rx = FakeReceiver::start().await;
    let h = TestHerald::start().await;
    h.put_destination(
        "crm",
        json!({"kind": "http", "url": rx.url("/in"), "headers": {"authorization": "Bearer sekret-token"},
               "body_template": "{\"wrong\": {{ text | tojson }}}"}),
    )
    .await;
    let ui = signed_in(&h, ADMIN_TOKEN).await;
    let page = ui.get("/ui/destinations/crm").await;
    let csrf = page.csrf().unwrap();
    let (_, shown) = h.call(Method::GET, "/api/v1/destinations/crm", None).await;
    assert!(!shown.to_string().contains("sekret-token"), "{shown}");
    let mut edited = shown.clone();
    for k in [
        "disabled_reason",
        "paused_until",
        "created_at",
        "updated_at",
    ] {
        edited.as_object_mut().unwrap().remove(k);
    }
    edited["body_template"] = json!("{\"text\": {{ text | tojson }}}");
    let text = serde_json::to_string_pretty(&edited).unwrap();

    let bad = ui
        .post(
            "/ui/destinations/crm/edit",
            &[
                ("csrf", &csrf),
                ("settings", "{\"kind\": \"http\", \"url\": 12}"),
            ],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.body.contains("Not saved"), "{}", bad.body);
    let invalid = ui
        .post(
            "/ui/destinations/crm/edit",
            &[
                ("csrf", &csrf),
                (
                    "settings",
                    &text.replace("{{ text | tojson }}", "{{ text | tojson"),
                ),
            ],
        )
        .await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(invalid.body.contains("body_template"), "{}", invalid.body);

    let saved = ui
        .post(
            "/ui/destinations/crm/edit",
            &[("csrf", &csrf), ("settings", &text)],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    h.send(json!({"text": "fixed", "to": ["crm"]})).await;
    rx.wait_for(1, WAIT).await;
    let got = &rx.received()[0];
    assert_eq!(
        got.header("authorization"),
        Some("Bearer sekret-token"),
        "the masked secret was kept"
    );
    assert_eq!(got.json()["text"], "fixed", "the new template is used");

    let reader = token(&h, "viewer", &["read"]).await;
    let ro = signed_in(&h, &reader).await;
    let page = ro.get("/ui/destinations/crm").await;
    assert!(
        !page.body.contains("<textarea"),
        "no edit form for a read session"
    );
    let refused = ro
        .post(
            "/ui/destinations/crm/edit",
            &[("csrf", &csrf), ("settings", &text)],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    h.stop().await;
}
