//! Error alert stories: `POST /api/v1/errors` against a real Herald, alerts delivered over
//! real HTTP to loopback fakes (a signed webhook receiver, a Slack incoming webhook).

use herald_testkit::eventually;
use herald_testkit::herald::{TestHerald, fast_retry};
use herald_testkit::providers::slack_webhook;
use herald_testkit::receiver::{FakeReceiver, Reply};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

fn zero_division(service: &str) -> Value {
    json!({
        "service": service, "environment": "production", "level": "error",
        "message": "Internal Server Error: /api/divide",
        "exception": {"type": "ZeroDivisionError", "value": "division by zero", "stacktrace": [
            {"filename": "django/core/handlers/base.py", "function": "_get_response", "lineno": 197, "in_app": false},
            {"filename": "shop/views.py", "function": "divide", "lineno": 42, "in_app": true, "context_line": "    return a / b"},
            {"filename": "shop/math.py", "function": "safe_div", "lineno": 7, "in_app": true, "context_line": "    return x / y"}]},
        "request": {"method": "POST", "url": "https://shop.example/api/divide?a=1", "path": "/api/divide"},
        "user": {"id": 7, "username": "alice", "email": "alice@example.com"},
        "tags": {"region": "eu"}
    })
}

/// A webhook destination that takes error alerts.
async fn alert_hook(h: &TestHerald, rx: &FakeReceiver) {
    h.put_destination(
        "alerts",
        json!({"kind": "webhook", "url": rx.url("/alerts"), "events": ["error.reported"], "retry": fast_retry()}),
    )
    .await;
}

async fn group(h: &TestHerald, id: &str) -> Value {
    let (status, body) = h
        .call(Method::GET, &format!("/api/v1/error-groups/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_error_alerts_once_and_repeats_fold_into_its_group() {
    let rx = FakeReceiver::start().await;
    rx.set_default(Reply::ok());
    let h = TestHerald::start().await;
    alert_hook(&h, &rx).await;

    let first = h.report_error(zero_division("shop")).await;
    assert_eq!(first["new_group"], true);
    assert_eq!(first["alerted"], true);
    let gid = first["group"].as_str().unwrap().to_string();
    for _ in 0..4 {
        // Another line number in the same function is the same error.
        let mut r = zero_division("shop");
        r["exception"]["stacktrace"][2]["lineno"] = json!(8);
        let again = h.report_error(r).await;
        assert_eq!(again["group"], gid.as_str());
        assert_eq!(
            (again["new_group"].clone(), again["alerted"].clone()),
            (json!(false), json!(false))
        );
    }
    let alert = rx.wait_for(1, WAIT).await.remove(0).json();
    assert_eq!(alert["type"], "error.reported");
    assert_eq!(alert["severity"], "error");
    assert_eq!(alert["title"], "ZeroDivisionError in shop");
    let data = &alert["data"];
    assert_eq!(data["group"], gid.as_str());
    assert_eq!(data["reason"], "new");
    assert_eq!(data["count"], 1);
    assert_eq!(data["culprit"], "shop/math.py in safe_div");
    assert_eq!(data["report"]["user"]["id"], "7");
    assert_eq!(data["report"]["request"]["path"], "/api/divide");
    assert_eq!(
        data["report"]["exception"]["stacktrace"][1]["context_line"],
        "    return a / b"
    );

    let g = group(&h, &gid).await;
    assert_eq!(g["count"], 5);
    assert_eq!(g["folded"], 4);
    assert_eq!(g["status"], "unresolved");
    assert_eq!(g["title"], "ZeroDivisionError: division by zero");
    assert_eq!(g["last_event"]["exception"]["stacktrace"][2]["lineno"], 8);
    assert!(
        g["last_message_id"].as_str().unwrap().starts_with("msg_"),
        "{g}"
    );

    // Another in-app frame, another service, or a fingerprint: other groups, each alerting.
    let mut other = zero_division("shop");
    other["exception"]["stacktrace"][2]["function"] = json!("ratio");
    assert_eq!(h.report_error(other).await["new_group"], true);
    assert_eq!(
        h.report_error(zero_division("admin")).await["new_group"],
        true
    );
    let mut fp = zero_division("shop");
    fp["fingerprint"] = json!(["math-errors"]);
    assert_eq!(h.report_error(fp).await["new_group"], true);
    rx.wait_for(4, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rx.count(),
        4,
        "one alert per new group, none for the folded reports"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolved_group_seen_again_alerts_as_a_regression_saying_what_was_folded_in() {
    let rx = FakeReceiver::start().await;
    rx.set_default(Reply::ok());
    let h = TestHerald::start_with(|c| c.errors.window.0 = Duration::from_secs(1)).await;
    alert_hook(&h, &rx).await;
    let gid = h.report_error(zero_division("shop")).await["group"]
        .as_str()
        .unwrap()
        .to_string();
    h.report_error(zero_division("shop")).await;
    h.report_error(zero_division("shop")).await;

    let (status, resolved) = h
        .call(
            Method::POST,
            &format!("/api/v1/error-groups/{gid}/resolve"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resolved}");
    assert_eq!(resolved["status"], "resolved");
    assert!(resolved["resolved_at"].is_string());
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let back = h.report_error(zero_division("shop")).await;
    assert_eq!(
        (back["new_group"].clone(), back["alerted"].clone()),
        (json!(false), json!(true))
    );
    let alerts = rx.wait_for(2, WAIT).await;
    let data = alerts[1].json()["data"].clone();
    assert_eq!(data["reason"], "regression");
    assert_eq!(data["folded"], 2);
    assert_eq!(data["count"], 4);
    assert!(
        alerts[1].json()["text"]
            .as_str()
            .unwrap()
            .contains("2 more since the last alert"),
        "{}",
        alerts[1].text()
    );
    let g = group(&h, &gid).await;
    assert_eq!(g["status"], "unresolved");
    assert_eq!(g["folded"], 0);

    // Resolving and reopening are audited with the caller.
    let (_, audit) = h.call(Method::GET, "/api/v1/audit?limit=1000", None).await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["resource"] == gid.as_str())
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["error_group.created", "error_group.resolved"]);
    let (status, _) = h
        .call(
            Method::POST,
            &format!("/api/v1/error-groups/{gid}/unresolve"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spike_alerts_once_and_reports_held_back_by_the_window_go_out_after_it() {
    let rx = FakeReceiver::start().await;
    rx.set_default(Reply::ok());
    let h = TestHerald::start_with(|c| {
        c.errors.window.0 = Duration::from_secs(2);
        c.errors.spike_threshold = 5;
    })
    .await;
    alert_hook(&h, &rx).await;
    // The new-group alert, then a burst inside its window: the spike is held back…
    let mut alerted = 0;
    for _ in 0..8 {
        alerted += h.report_error(zero_division("shop")).await["alerted"]
            .as_bool()
            .unwrap() as u32;
    }
    // …and sent with the first report after the window.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let after = h.report_error(zero_division("shop")).await;
    alerted += after["alerted"].as_bool().unwrap() as u32;
    assert_eq!(alerted, 2);
    let alerts = rx.wait_for(2, WAIT).await;
    let reasons: Vec<Value> = alerts
        .iter()
        .map(|a| a.json()["data"]["reason"].clone())
        .collect();
    assert_eq!(reasons, [json!("new"), json!("spike")]);
    let spike = alerts[1].json()["data"].clone();
    assert_eq!(spike["folded"], 7);
    assert_eq!(spike["count"], 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_parallel_reports_of_a_new_error_alert_exactly_once() {
    let rx = FakeReceiver::start().await;
    rx.set_default(Reply::ok());
    let h = TestHerald::start().await;
    alert_hook(&h, &rx).await;
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let http = h.http.clone();
        let url = h.url("/api/v1/errors");
        let token = h.token.clone();
        tasks.push(tokio::spawn(async move {
            let resp = http
                .post(url)
                .bearer_auth(token)
                .json(&zero_division("shop"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::ACCEPTED);
            resp.json::<Value>().await.unwrap()
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let alerted = answers.iter().filter(|a| a["alerted"] == true).count();
    let created = answers.iter().filter(|a| a["new_group"] == true).count();
    assert_eq!((alerted, created), (1, 1));
    let gid = answers[0]["group"].as_str().unwrap();
    assert!(answers.iter().all(|a| a["group"] == gid));
    assert_eq!(group(&h, gid).await["count"], 40);
    rx.wait_for(1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_listed_newest_first_with_filters_and_cursors() {
    let h = TestHerald::start().await;
    for i in 0..3 {
        h.report_error(json!({"service": "shop", "message": format!("failure {i}")}))
            .await;
    }
    let billing = h
        .report_error(json!({"service": "billing", "message": "card declined"}))
        .await;
    let (_, all) = h
        .call(Method::GET, "/api/v1/error-groups?limit=3", None)
        .await;
    let items = all["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["id"], billing["group"]);
    let cursor = all["next_cursor"].as_str().unwrap();
    let (_, rest) = h
        .call(
            Method::GET,
            &format!("/api/v1/error-groups?limit=3&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert!(rest["next_cursor"].is_null());
    let (_, shop) = h
        .call(Method::GET, "/api/v1/error-groups?service=shop", None)
        .await;
    assert_eq!(shop["items"].as_array().unwrap().len(), 3);
    let gid = billing["group"].as_str().unwrap();
    h.call(
        Method::POST,
        &format!("/api/v1/error-groups/{gid}/resolve"),
        None,
    )
    .await;
    let (_, resolved) = h
        .call(Method::GET, "/api/v1/error-groups?status=resolved", None)
        .await;
    assert_eq!(resolved["items"].as_array().unwrap().len(), 1);
    assert_eq!(resolved["items"][0]["service"], "billing");
    let (status, _) = h
        .call(Method::GET, "/api/v1/error-groups?status=gone", None)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    for path in [
        "/api/v1/error-groups/grp_00000000000000000000000000000000",
        "/api/v1/error-groups/nope",
    ] {
        let (status, body) = h.call(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    }
    let (status, _) = h
        .call(
            Method::POST,
            "/api/v1/error-groups/grp_00000000000000000000000000000000/resolve",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reports_are_clear_problems() {
    let h = TestHerald::start().await;
    for (body, field) in [
        (json!({"service": "shop"}), "message"),
        (json!({"message": "x", "colour": "red"}), "colour"),
        (json!({"message": "x", "to": ["nowhere"]}), "to"),
        (
            json!({"message": "x", "exception": {"stacktrace": "oops"}}),
            "exception.stacktrace",
        ),
    ] {
        let (status, p) = h
            .call(Method::POST, "/api/v1/errors", Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {p}");
        assert_eq!(p["errors"][0]["field"], field, "{p}");
    }
    let resp = h
        .http
        .post(h.url("/api/v1/errors"))
        .bearer_auth(&h.token)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let reader = h.token("dash", &["read"]).await;
    let (status, _) = h
        .call_as(
            &reader,
            Method::POST,
            "/api/v1/errors",
            Some(json!({"message": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let sender = h.token("app", &["send"]).await;
    let (status, r) = h
        .call_as(
            &sender,
            Method::POST,
            "/api/v1/errors",
            Some(json!({"message": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let gid = r["group"].as_str().unwrap();
    let (status, _) = h
        .call_as(
            &sender,
            Method::POST,
            &format!("/api/v1/error-groups/{gid}/resolve"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "send may resolve");
    let (status, _) = h
        .call_as(
            &reader,
            Method::POST,
            &format!("/api/v1/error-groups/{gid}/resolve"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_alert_shows_the_error_the_request_the_user_and_the_frames() {
    let rx = FakeReceiver::start().await;
    rx.set_default(slack_webhook::ok());
    let h = TestHerald::start().await;
    h.put_destination(
        "slack",
        json!({"kind": "slack", "url": rx.url("/services/T0/B0/XYZ"), "events": ["error.reported"]}),
    )
    .await;
    let r = h.report_error(zero_division("shop")).await;
    let body = rx.wait_for(1, WAIT).await[0].json();
    let blocks = body["blocks"].as_array().unwrap();
    assert_eq!(
        blocks[0],
        json!({"type": "header", "text": {"type": "plain_text", "text": ":rotating_light: ZeroDivisionError in shop", "emoji": true}})
    );
    assert!(
        blocks[1]["text"]["text"]
            .as_str()
            .unwrap()
            .starts_with("*ZeroDivisionError*: division by zero")
    );
    let fields: Vec<&str> = blocks[2]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "*Environment*\nproduction",
            "*Path*\n/api/divide",
            "*Method*\nPOST",
            "*User*\nalice (alice@example.com, id 7)",
            "*Count*\n1",
        ]
    );
    let code = blocks[3]["text"]["text"].as_str().unwrap();
    assert!(
        code.starts_with(
            "```shop/math.py:7 in safe_div\n    return x / y\nshop/views.py:42 in divide"
        ),
        "{code}"
    );
    assert!(code.ends_with("```"));
    let context = blocks[4]["elements"][0]["text"].as_str().unwrap();
    assert!(
        context.contains("First seen") && context.contains("Last seen"),
        "{context}"
    );
    assert!(context.contains(r["group"].as_str().unwrap()), "{context}");
    assert_eq!(body["text"], "ZeroDivisionError in shop: division by zero");

    // A destination template still wins over the error rendering.
    h.put_destination(
        "slack",
        json!({"kind": "slack", "url": rx.url("/services/T0/B0/XYZ"), "events": ["error.reported"],
               "template": "{\"text\": {{ (payload.title ~ \" x\" ~ payload.count)|tojson }}}"}),
    )
    .await;
    h.report_error(json!({"service": "shop", "message": "another failure"}))
        .await;
    let second = rx.wait_for(2, WAIT).await[1].json();
    assert_eq!(second, json!({"text": "another failure x1"}));
    eventually(WAIT, "the alerts to be delivered", || async {
        let (_, d) = h
            .call(Method::GET, "/api/v1/deliveries?status=delivered", None)
            .await;
        (d["items"].as_array().map(Vec::len) == Some(2)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teams_gets_an_error_card_and_email_a_text_and_html_report() {
    let rx = FakeReceiver::start().await;
    rx.set_default(herald_testkit::providers::teams::workflows_accepted());
    let sink = herald_testkit::smtp::SmtpSink::start().await;
    let h = TestHerald::start().await;
    h.put_destination(
        "teams",
        json!({"kind": "teams", "url": rx.url("/workflows/x/triggers/manual/paths/invoke"), "events": ["error.reported"]}),
    )
    .await;
    h.put_destination(
        "mail",
        json!({"kind": "email", "smtp_url": sink.url(), "from": "herald@example.com", "to": ["dev@example.com"],
               "events": ["error.reported"]}),
    )
    .await;
    let mut report = zero_division("shop");
    report["exception"]["value"] = json!("division <by> zero & more");
    h.report_error(report).await;

    let card = rx.wait_for(1, WAIT).await[0].json()["attachments"][0]["content"].clone();
    let body = card["body"].as_array().unwrap();
    assert_eq!(body[0]["text"], "🚨 ZeroDivisionError in shop");
    assert_eq!(body[0]["color"], "Attention");
    assert!(
        body[1]["text"]
            .as_str()
            .unwrap()
            .starts_with("ZeroDivisionError: division <by> zero & more\n\nNew error")
    );
    let facts: Vec<(String, String)> = body[2]["facts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["title"].as_str().unwrap().into(),
                f["value"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(facts[0], ("Environment".into(), "production".into()));
    assert_eq!(
        facts[3],
        ("User".into(), "alice (alice@example.com, id 7)".into())
    );
    assert!(facts.iter().any(|(k, _)| k == "First seen"));
    assert_eq!(body[3]["fontType"], "Monospace");
    assert!(
        body[3]["text"]
            .as_str()
            .unwrap()
            .starts_with("shop/math.py:7 in safe_div")
    );

    let mail = sink.wait_for(1, WAIT).await.remove(0);
    assert_eq!(mail.subject().as_deref(), Some("ZeroDivisionError in shop"));
    let text = mail.text().unwrap().replace("\r\n", "\n");
    assert!(
        text.contains("Path: /api/divide") && text.contains("Method: POST"),
        "{text}"
    );
    assert!(
        text.contains("Innermost frames:\nshop/math.py:7 in safe_div\n    return x / y"),
        "{text}"
    );
    let html = mail.html().unwrap();
    assert!(
        html.contains("division &lt;by&gt; zero &amp; more"),
        "{html}"
    );
    assert!(html.contains("<pre"), "{html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_the_error_and_ingest_routes() {
    let h = TestHerald::start().await;
    let spec = h.openapi().await;
    for (path, method, codes) in [
        ("/api/v1/errors", "post", &["202", "401", "422"][..]),
        ("/api/v1/error-groups", "get", &["200", "422"]),
        ("/api/v1/error-groups/{id}", "get", &["200", "404"]),
        ("/api/v1/error-groups/{id}/resolve", "post", &["200", "404"]),
        (
            "/api/v1/error-groups/{id}/unresolve",
            "post",
            &["200", "404"],
        ),
        (
            "/api/{project_id}/envelope/",
            "post",
            &["200", "400", "401", "413", "415"],
        ),
        (
            "/api/{project_id}/store/",
            "post",
            &["200", "400", "401", "415"],
        ),
        (
            "/notify/{key}",
            "post",
            &["200", "204", "400", "401", "424"],
        ),
    ] {
        let op = &spec["paths"][path][method];
        assert!(op.is_object(), "{method} {path} missing");
        for code in codes {
            let r = &op["responses"][*code];
            assert!(r.is_object(), "{method} {path}: no {code}");
            if code.starts_with('4') {
                assert!(
                    r["content"]["application/problem+json"].is_object(),
                    "{method} {path} {code} is not problem+json: {r}"
                );
            }
        }
    }
}
