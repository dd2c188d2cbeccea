//! Tenants stories: the native `/tenants` API, the Svix-compatible API's shapes, and
//! isolation — a tenant's token walks every route against another tenant's objects and
//! gets 404 each time, and messages never cross between the operator and tenants.

use herald_testkit::herald::TestHerald;
use herald_testkit::receiver::FakeReceiver;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

async fn app(h: &TestHerald, uid: &str) -> Value {
    let (s, b) = h
        .call(
            Method::POST,
            "/api/v1/app",
            Some(json!({"name": uid, "uid": uid})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    b
}

async fn endpoint(h: &TestHerald, app_id: &str, url: &str) -> Value {
    let (s, b) = h
        .call(
            Method::POST,
            &format!("/api/v1/app/{app_id}/endpoint"),
            Some(json!({"url": url})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    b
}

async fn message(
    h: &TestHerald,
    token: &str,
    app_id: &str,
    event_id: Option<&str>,
) -> (StatusCode, Value) {
    let mut body = json!({"eventType": "user.signup", "payload": {"user": "u1"}});
    if let Some(e) = event_id {
        body["eventId"] = json!(e);
    }
    h.call_as(
        token,
        Method::POST,
        &format!("/api/v1/app/{app_id}/msg"),
        Some(body),
    )
    .await
}

async fn tenant_token(h: &TestHerald, tenant: &str, scopes: &[&str]) -> String {
    let (s, b) = h
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": format!("{tenant}-token"), "scopes": scopes, "tenant": tenant})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert!(b["tenant"].as_str().is_some_and(|t| t.starts_with("app_")));
    b["token"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_made_read_changed_and_deleted_by_id_or_uid() {
    let h = TestHerald::start().await;
    let (s, t) = h
        .call(
            Method::POST,
            "/api/v1/tenants",
            Some(json!({"name": "Acme", "uid": "acme", "metadata": {"plan": "pro"}, "rate_limit": 50})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let id = t["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("app_") && id.len() == 36);
    assert_eq!(t["metadata"]["plan"], "pro");

    let (s, by_uid) = h.call(Method::GET, "/api/v1/tenants/acme", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(by_uid["id"], id.as_str());

    // A uid is unique; bad input is a 422 naming the fields.
    let (s, b) = h
        .call(
            Method::POST,
            "/api/v1/tenants",
            Some(json!({"name": "Other", "uid": "acme"})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    let (s, b) = h
        .call(
            Method::POST,
            "/api/v1/tenants",
            Some(json!({"name": "", "rate_limit": 0})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = b["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "rate_limit"]);

    let (s, p) = h
        .call(
            Method::PATCH,
            &format!("/api/v1/tenants/{id}"),
            Some(json!({"name": "Acme Inc", "rate_limit": null})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["name"], "Acme Inc");
    assert_eq!(p["uid"], "acme", "left out: unchanged");
    assert_eq!(p["rate_limit"], Value::Null, "null: cleared");

    // Pages by id.
    for i in 0..3 {
        h.call(
            Method::POST,
            "/api/v1/tenants",
            Some(json!({"name": format!("t{i}")})),
        )
        .await;
    }
    let (_, first) = h.call(Method::GET, "/api/v1/tenants?limit=2", None).await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = h
        .call(
            Method::GET,
            &format!("/api/v1/tenants?limit=2&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(second["items"].as_array().unwrap().len(), 2);
    assert!(second["next_cursor"].is_null());

    let (s, _) = h.call(Method::DELETE, "/api/v1/tenants/acme", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = h
        .call(Method::GET, &format!("/api/v1/tenants/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_token_gets_404_for_every_object_of_another_tenant() {
    let rx = FakeReceiver::start().await;
    let h = TestHerald::start().await;
    let a = app(&h, "tenant-a").await;
    let b = app(&h, "tenant-b").await;
    let (a_id, b_id) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let b_ep = endpoint(&h, b_id, &rx.url("/b")).await;
    let b_ep = b_ep["id"].as_str().unwrap();
    let (s, b_msg) = message(&h, &h.token, b_id, Some("evt-b")).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b_msg}");
    let b_msg = b_msg["id"].as_str().unwrap();
    rx.wait_for(1, WAIT).await;

    let ta = tenant_token(&h, a_id, &["admin"]).await;

    // Inside its tenant the token works: an endpoint, a message, its delivery.
    let (s, a_ep) = h
        .call_as(
            &ta,
            Method::POST,
            &format!("/api/v1/app/{a_id}/endpoint"),
            Some(json!({"url": rx.url("/a")})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{a_ep}");
    let a_ep = a_ep["id"].as_str().unwrap();
    let (s, a_msg) = message(&h, &ta, a_id, None).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{a_msg}");
    let got = rx.wait_for(2, WAIT).await;
    assert_eq!(got.iter().filter(|r| r.path == "/a").count(), 1);
    let (s, apps) = h.call_as(&ta, Method::GET, "/api/v1/app", None).await;
    assert_eq!(s, StatusCode::OK);
    let ids: Vec<&str> = apps["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [a_id], "only its own application");

    // Every Svix route, against tenant B's application, endpoint and message.
    let ep_body = json!({"url": rx.url("/x")});
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/api/v1/app/{b_id}"), None),
        (Method::GET, "/api/v1/app/tenant-b".into(), None),
        (
            Method::PUT,
            format!("/api/v1/app/{b_id}"),
            Some(json!({"name": "x"})),
        ),
        (
            Method::PATCH,
            format!("/api/v1/app/{b_id}"),
            Some(json!({"name": "x"})),
        ),
        (Method::DELETE, format!("/api/v1/app/{b_id}"), None),
        (Method::GET, format!("/api/v1/app/{b_id}/endpoint"), None),
        (
            Method::POST,
            format!("/api/v1/app/{b_id}/endpoint"),
            Some(ep_body.clone()),
        ),
        (
            Method::GET,
            format!("/api/v1/app/{b_id}/endpoint/{b_ep}"),
            None,
        ),
        (
            Method::PUT,
            format!("/api/v1/app/{b_id}/endpoint/{b_ep}"),
            Some(ep_body.clone()),
        ),
        (
            Method::PATCH,
            format!("/api/v1/app/{b_id}/endpoint/{b_ep}"),
            Some(json!({})),
        ),
        (
            Method::DELETE,
            format!("/api/v1/app/{b_id}/endpoint/{b_ep}"),
            None,
        ),
        (
            Method::GET,
            format!("/api/v1/app/{b_id}/endpoint/{b_ep}/secret"),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/app/{b_id}/endpoint/{b_ep}/secret/rotate"),
            Some(json!({})),
        ),
        (
            Method::GET,
            format!("/api/v1/app/{b_id}/endpoint/{b_ep}/headers"),
            None,
        ),
        (
            Method::PUT,
            format!("/api/v1/app/{b_id}/endpoint/{b_ep}/headers"),
            Some(json!({"headers": {}})),
        ),
        (
            Method::POST,
            format!("/api/v1/app/{b_id}/endpoint/{b_ep}/recover"),
            Some(json!({"since": "2026-01-01T00:00:00Z"})),
        ),
        (
            Method::POST,
            format!("/api/v1/app/{b_id}/endpoint/{b_ep}/send-example"),
            Some(json!({"eventType": "svix.ping"})),
        ),
        (
            Method::GET,
            format!("/api/v1/app/{b_id}/endpoint/{b_ep}/stats"),
            None,
        ),
        (Method::GET, format!("/api/v1/app/{b_id}/msg"), None),
        (
            Method::POST,
            format!("/api/v1/app/{b_id}/msg"),
            Some(json!({"eventType": "x", "payload": {}})),
        ),
        (Method::GET, format!("/api/v1/app/{b_id}/msg/{b_msg}"), None),
        (Method::GET, format!("/api/v1/app/{b_id}/msg/evt-b"), None),
        (
            Method::GET,
            format!("/api/v1/app/{b_id}/attempt/msg/{b_msg}"),
            None,
        ),
        (
            Method::GET,
            format!("/api/v1/app/{b_id}/attempt/endpoint/{b_ep}"),
            None,
        ),
        (
            Method::GET,
            format!("/api/v1/app/{b_id}/msg/{b_msg}/endpoint"),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/app/{b_id}/msg/{b_msg}/endpoint/{b_ep}/resend"),
            None,
        ),
        // B's objects under A's own application are not there either.
        (
            Method::GET,
            format!("/api/v1/app/{a_id}/endpoint/{b_ep}"),
            None,
        ),
        (Method::GET, format!("/api/v1/app/{a_id}/msg/{b_msg}"), None),
        (
            Method::GET,
            format!("/api/v1/app/{a_id}/attempt/msg/{b_msg}"),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/app/{a_id}/msg/{b_msg}/endpoint/{a_ep}/resend"),
            None,
        ),
        (
            Method::POST,
            format!(
                "/api/v1/app/{a_id}/msg/{}/endpoint/{b_ep}/resend",
                a_msg["id"].as_str().unwrap()
            ),
            None,
        ),
        // The native routes: a tenant's token reaches none of the operator's.
        (Method::GET, format!("/api/v1/tenants/{b_id}"), None),
        (Method::GET, "/api/v1/destinations".into(), None),
        (
            Method::GET,
            format!("/api/v1/destinations/{b_id}.{b_ep}"),
            None,
        ),
        (
            Method::PUT,
            "/api/v1/destinations/x".into(),
            Some(json!({"kind": "webhook", "url": rx.url("/")})),
        ),
        (
            Method::POST,
            "/api/v1/messages".into(),
            Some(json!({"text": "x"})),
        ),
        (Method::GET, format!("/api/v1/messages/{b_msg}"), None),
        (Method::GET, "/api/v1/deliveries".into(), None),
        (Method::GET, "/api/v1/dlq".into(), None),
        (Method::GET, "/api/v1/audit".into(), None),
        (Method::GET, "/api/v1/tokens".into(), None),
        (Method::GET, "/api/v1/error-groups".into(), None),
        (
            Method::POST,
            "/api/v1/tenants".into(),
            Some(json!({"name": "x"})),
        ),
    ];
    for (method, path, body) in routes {
        let (s, answer) = h.call_as(&ta, method.clone(), &path, body).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{method} {path}: {answer}");
    }
    // The customer portal: a session opened with A's token sees none of B's objects.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let opened = plain
        .get(h.url(&format!("/portal/access?token={ta}")))
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), StatusCode::SEE_OTHER);
    let cookie = opened.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let page = plain
        .get(h.url("/portal"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(
        html.contains(a_ep) && !html.contains(b_ep),
        "only A's endpoints"
    );
    for path in [
        format!("/portal/endpoints/{b_ep}"),
        format!("/portal/messages/{b_msg}"),
    ] {
        let r = plain
            .get(h.url(&path))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "portal {path}");
    }
    // The portal's cookie opens no dashboard, and the dashboard refuses the token itself.
    let ui = plain
        .get(h.url("/ui"))
        .header("cookie", cookie.replace("herald_portal", "herald_session"))
        .send()
        .await
        .unwrap();
    assert_eq!(ui.status(), StatusCode::SEE_OTHER, "to the sign-in page");
    let signin = plain
        .post(h.url("/ui/signin"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={ta}"))
        .send()
        .await
        .unwrap();
    assert_eq!(signin.status(), StatusCode::FORBIDDEN);

    // Nothing of B changed.
    let (s, _) = h
        .call(
            Method::GET,
            &format!("/api/v1/app/{b_id}/endpoint/{b_ep}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(rx.received().iter().filter(|r| r.path == "/b").count(), 1);
    let (_, own) = h.call_as(&ta, Method::GET, "/api/v1/tenants", None).await;
    assert_eq!(own["items"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_never_cross_between_the_operator_and_tenants() {
    let rx = FakeReceiver::start().await;
    let h = TestHerald::start().await;
    h.put_destination("ops", json!({"kind": "webhook", "url": rx.url("/ops")}))
        .await;
    let a = app(&h, "crossing").await;
    let a_id = a["id"].as_str().unwrap();
    endpoint(&h, a_id, &rx.url("/tenant")).await;

    h.send(json!({"text": "operator's", "event_type": "user.signup"}))
        .await;
    let (s, _) = message(&h, &h.token, a_id, None).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let got = rx.wait_for(2, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got: Vec<_> = got
        .iter()
        .chain(rx.received().iter().skip(2))
        .cloned()
        .collect();
    let ops: Vec<_> = got.iter().filter(|r| r.path == "/ops").collect();
    let tenant: Vec<_> = got.iter().filter(|r| r.path == "/tenant").collect();
    assert_eq!((ops.len(), tenant.len()), (1, 1), "one each, no crossing");
    assert!(ops[0].header("webhook-signature").is_some());
    assert!(tenant[0].header("svix-signature").is_some());
    assert_eq!(
        tenant[0].json(),
        json!({"user": "u1"}),
        "the payload is the body"
    );

    // The operator's lists show only the operator's destinations.
    let (_, list) = h.call(Method::GET, "/api/v1/destinations", None).await;
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ops"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_id_is_accepted_once_per_application() {
    let rx = FakeReceiver::start().await;
    let h = TestHerald::start().await;
    let a = app(&h, "dedup-a").await;
    let b = app(&h, "dedup-b").await;
    let (a_id, b_id) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    endpoint(&h, a_id, &rx.url("/a")).await;
    endpoint(&h, b_id, &rx.url("/b")).await;

    let (s, first) = message(&h, &h.token, a_id, Some("order-1")).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{first}");
    let (s, again) = message(&h, &h.token, a_id, Some("order-1")).await;
    assert_eq!(s, StatusCode::CONFLICT, "{again}");
    assert_eq!(again["code"], "conflict");
    // Another application may use the same eventId.
    let (s, other) = message(&h, &h.token, b_id, Some("order-1")).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{other}");
    rx.wait_for(2, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.count(), 2, "one delivery per application");

    let (s, by_event) = h
        .call(
            Method::GET,
            &format!("/api/v1/app/{a_id}/msg/order-1"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(by_event["id"], first["id"]);
    assert_eq!(by_event["eventId"], "order-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svix_errors_have_svix_shapes_and_unknown_routes_answer_json() {
    let h = TestHerald::start().await;
    let (s, b) = h
        .call_as("hrld_wrong", Method::GET, "/api/v1/app", None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(b["code"], "authentication_failed");
    let (s, b) = h
        .call(Method::POST, "/api/v1/app", Some(json!({"uid": "no-name"})))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(b["detail"][0]["loc"], json!(["body", "name"]));
    let (s, b) = h.call(Method::GET, "/api/v1/app/nope", None).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (s, b) = h.call(Method::GET, "/api/v1/app?limit=251", None).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(b["detail"][0]["loc"], json!(["query", "limit"]));
    let a = app(&h, "shapes").await;
    let (s, b) = h
        .call(
            Method::POST,
            &format!(
                "/api/v1/auth/app-portal-access/{}",
                a["id"].as_str().unwrap()
            ),
            Some(json!({})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(
        b["url"]
            .as_str()
            .unwrap()
            .contains("/portal/access?token=hrld_")
    );
    let (s, b) = h
        .call(Method::POST, "/api/v1/app/x/integration", Some(json!({})))
        .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::NOT_IMPLEMENTED, Some("not_implemented"))
    );
    // Unknown fields (the SDKs send fields of Svix's hosted API) are ignored.
    let (s, b) = h
        .call(
            Method::POST,
            "/api/v1/app",
            Some(json!({"name": "x", "throttleRate": 5, "someCloudField": true})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["throttleRate"], 5);
    let (s, b) = h.call(Method::GET, "/api/v1/health", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["database"]["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_application_removes_its_endpoints_and_discards_their_deliveries() {
    let rx = FakeReceiver::start().await;
    rx.set_default(herald_testkit::receiver::Reply::status(503));
    let h = TestHerald::start().await;
    let a = app(&h, "going").await;
    let a_id = a["id"].as_str().unwrap();
    let ep = endpoint(&h, a_id, &rx.url("/down")).await;
    let ep = ep["id"].as_str().unwrap();
    let (s, _) = message(&h, &h.token, a_id, None).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    rx.wait_for(1, WAIT).await;
    let (s, _) = h
        .call(Method::DELETE, &format!("/api/v1/app/{a_id}"), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = h
        .call(
            Method::GET,
            &format!("/api/v1/app/{a_id}/endpoint/{ep}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let key = format!("{a_id}.{ep}");
    let (_, d) = h
        .call(
            Method::GET,
            &format!("/api/v1/deliveries?destination={key}"),
            None,
        )
        .await;
    let items = d["items"].as_array().cloned().unwrap_or_default();
    assert!(
        items.iter().all(|d| d["status"] == "discarded"),
        "{items:?}"
    );
    // The audit chain has the deletion, with the tenant.
    let (_, audit) = h.call(Method::GET, "/api/v1/audit?limit=200", None).await;
    let deleted = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "tenant.deleted")
        .cloned()
        .expect("audited");
    assert_eq!(deleted["detail"]["tenant"], a_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applications_throttle_rate_holds_messages_back_with_retry_after() {
    let rx = FakeReceiver::start().await;
    let h = TestHerald::start().await;
    let (s, a) = h
        .call(
            Method::POST,
            "/api/v1/app",
            Some(json!({"name": "slow", "throttleRate": 2})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    let a_id = a["id"].as_str().unwrap();
    endpoint(&h, a_id, &rx.url("/slow")).await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(message(&h, &h.token, a_id, None).await.0);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::ACCEPTED,
            StatusCode::ACCEPTED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    let resp = h
        .http
        .post(h.url(&format!("/api/v1/app/{a_id}/msg")))
        .bearer_auth(&h.token)
        .json(&json!({"eventType": "x", "payload": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=1).contains(&wait), "{wait}");
    assert_eq!(rx.wait_for(2, WAIT).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operational_webhooks_hear_about_tenants_endpoints_and_customers_never_do() {
    let rx = FakeReceiver::start().await;
    rx.respond_with(|r| (r.path == "/gone").then(|| herald_testkit::receiver::Reply::status(410)));
    let h = TestHerald::start().await;
    let (s, op) = h
        .call(
            Method::POST,
            "/api/v1/operational-webhook/endpoint",
            Some(json!({"url": rx.url("/ops"), "filterTypes": ["endpoint.disabled", "message.attempt.exhausted"]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{op}");
    let (s, bad) = h
        .call(
            Method::POST,
            "/api/v1/operational-webhook/endpoint",
            Some(json!({"url": rx.url("/ops"), "filterTypes": ["user.signup"]})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    let (_, list) = h
        .call(Method::GET, "/api/v1/operational-webhook/endpoint", None)
        .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);

    let a = app(&h, "ops-story").await;
    let a_id = a["id"].as_str().unwrap();
    let ep = endpoint(&h, a_id, &rx.url("/gone")).await;
    let ep = ep["id"].as_str().unwrap();
    let sibling = endpoint(&h, a_id, &rx.url("/customer")).await;
    let (s, m) = message(&h, &h.token, a_id, None).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{m}");

    // 410: the delivery dies and the endpoint is disabled; the platform hears both.
    let got = rx.wait_for(4, WAIT).await;
    let ops: Vec<_> = got.iter().filter(|r| r.path == "/ops").collect();
    let mut types: Vec<String> = ops
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap().to_string())
        .collect();
    types.sort();
    assert_eq!(types, ["endpoint.disabled", "message.attempt.exhausted"]);
    for r in &ops {
        assert!(r.header("svix-signature").is_some(), "signed like Svix");
        assert_eq!(r.json()["data"]["appId"], a_id);
        assert_eq!(r.json()["data"]["endpointId"], ep);
        assert_eq!(r.json()["data"]["appUid"], "ops-story");
    }
    let exhausted = ops
        .iter()
        .find(|r| r.json()["type"] == "message.attempt.exhausted")
        .unwrap();
    assert_eq!(exhausted.json()["data"]["msgId"], m["id"]);
    assert_eq!(
        exhausted.json()["data"]["lastAttempt"]["responseStatusCode"],
        410
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let customer: Vec<_> = rx
        .received()
        .into_iter()
        .filter(|r| r.path == "/customer")
        .collect();
    assert_eq!(
        customer.len(),
        1,
        "the customer gets its message, no operational event"
    );
    assert_eq!(customer[0].json(), json!({"user": "u1"}));
    let _ = sibling;

    // A tenant's token does not reach them.
    let ta = tenant_token(&h, a_id, &["admin"]).await;
    let (s, _) = h
        .call_as(
            &ta,
            Method::GET,
            "/api/v1/operational-webhook/endpoint",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
