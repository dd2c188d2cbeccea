//! Microsoft Teams stories, end to end: a real Herald, real HTTP to a loopback fake that
//! answers as Workflows webhooks and legacy connectors do (shared/PROVIDERS.md).

use herald_testkit::herald::{TestHerald, fast_retry};
use herald_testkit::providers::teams;
use herald_testkit::receiver::{FakeReceiver, Reply};
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

async fn teams_destination(h: &TestHerald, rx: &FakeReceiver) {
    h.put_destination(
        "teams",
        json!({"kind": "teams", "url": rx.url("/workflows/abcdefghijklmnopqrstuvwxyz/triggers/manual/paths/invoke"), "retry": fast_retry()}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflows_webhook_gets_an_adaptive_card_in_the_message_envelope() {
    let rx = FakeReceiver::start().await;
    rx.set_default(teams::workflows_accepted());
    let h = TestHerald::start().await;
    teams_destination(&h, &rx).await;
    assert!(
        !h.destination("teams")
            .await
            .to_string()
            .contains("abcdefghijklmnopqrstuvwxyz"),
        "the webhook URL is masked on read"
    );
    let accepted = h
        .send(json!({"event_type": "etl.done", "title": "적재 완료 ✅", "text": "주문 1,200건 🎉\n둘째 줄",
                     "severity": "warning", "payload": {"rows": 1200}, "to": ["teams"]}))
        .await;
    let d = h
        .wait_status(&TestHerald::first_delivery(&accepted), "delivered", WAIT)
        .await;
    assert_eq!(d["attempts"][0]["status_code"], 202);
    let body = rx.received()[0].json();
    assert_eq!(body["type"], "message");
    let att = &body["attachments"][0];
    assert_eq!(
        att["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert!(att["contentUrl"].is_null());
    let card = &att["content"];
    assert_eq!(
        card["$schema"],
        "http://adaptivecards.io/schemas/adaptive-card.json"
    );
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(card["version"], "1.4");
    assert_eq!(card["body"][0]["text"], "⚠️ 적재 완료 ✅");
    assert_eq!(card["body"][0]["color"], "Warning");
    assert_eq!(
        card["body"][1],
        json!({"type": "TextBlock", "text": "주문 1,200건 🎉\n둘째 줄", "wrap": true})
    );
    assert_eq!(
        card["body"][2]["facts"],
        json!([{"title": "rows", "value": "1200"}])
    );
    assert_eq!(
        card["body"][3]["text"],
        format!("etl.done · {}", accepted["id"].as_str().unwrap())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_connector_delivers_only_with_body_1() {
    let rx = FakeReceiver::start().await;
    rx.push(teams::connector_ok());
    rx.push(Reply::status(200).body("Summary or Text is required."));
    let h = TestHerald::start().await;
    teams_destination(&h, &rx).await;
    let ok = h.send_one(json!({"text": "one", "to": ["teams"]})).await;
    let d = h.wait_status(&ok, "delivered", WAIT).await;
    assert_eq!(d["attempts"][0]["response_excerpt"], "1");
    let bad = h.send_one(json!({"text": "two", "to": ["teams"]})).await;
    let d = h.wait_status(&bad, "dead", WAIT).await;
    assert_eq!(d["attempt_count"], 1);
    assert_eq!(d["attempts"][0]["status_code"], 200);
    assert_eq!(d["attempts"][0]["outcome"], "permanent");
    assert_eq!(
        d["attempts"][0]["response_excerpt"],
        "Summary or Text is required."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_throttling_inside_a_200_is_retried_with_backoff() {
    let rx = FakeReceiver::start().await;
    rx.push(teams::connector_throttled());
    rx.push(teams::connector_ok());
    let h = TestHerald::start().await;
    teams_destination(&h, &rx).await;
    let id = h.send_one(json!({"text": "x", "to": ["teams"]})).await;
    let d = h.wait_status(&id, "delivered", WAIT).await;
    assert_eq!(d["attempt_count"], 2);
    assert_eq!(d["attempts"][0]["outcome"], "retry");
    assert!(d["attempts"][0]["error"].as_str().unwrap().contains("429"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflows_429_pauses_the_destination_until_retry_after() {
    let rx = FakeReceiver::start().await;
    rx.push(teams::rate_limited(1));
    rx.set_default(teams::workflows_accepted());
    let h = TestHerald::start().await;
    teams_destination(&h, &rx).await;
    let a = h.send_one(json!({"text": "a", "to": ["teams"]})).await;
    rx.wait_for(1, WAIT).await;
    h.wait_paused("teams", WAIT).await;
    let b = h.send_one(json!({"text": "b", "to": ["teams"]})).await;
    h.wait_status(&a, "delivered", WAIT).await;
    h.wait_status(&b, "delivered", WAIT).await;
    let got = rx.received();
    for later in &got[1..] {
        assert!(later.at.duration_since(got[0].at) >= Duration::from_millis(900));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_are_permanent_server_errors_retried() {
    let rx = FakeReceiver::start().await;
    rx.set_default(teams::workflows_accepted());
    let h = TestHerald::start().await;
    teams_destination(&h, &rx).await;
    for status in [400, 404, 413] {
        rx.push(Reply::status(status).body("Bad payload"));
        let id = h.send_one(json!({"text": "x", "to": ["teams"]})).await;
        let d = h.wait_status(&id, "dead", WAIT).await;
        assert_eq!(d["attempt_count"], 1, "{status}");
        assert_eq!(d["attempts"][0]["status_code"], status);
    }
    rx.push(Reply::status(502));
    let id = h.send_one(json!({"text": "x", "to": ["teams"]})).await;
    let d = h.wait_status(&id, "delivered", WAIT).await;
    assert_eq!(d["attempts"][0]["outcome"], "retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_card_replaces_the_default_and_a_template_renders_the_body() {
    let rx = FakeReceiver::start().await;
    rx.set_default(teams::workflows_accepted());
    let h = TestHerald::start().await;
    teams_destination(&h, &rx).await;
    let card = json!({"type": "AdaptiveCard", "version": "1.5", "body": [{"type": "TextBlock", "text": "직접 만든 카드 🃏"}]});
    let id = h
        .send_one(json!({"text": "x", "to": ["teams"], "channels": {"teams": {"card": card}}}))
        .await;
    h.wait_status(&id, "delivered", WAIT).await;
    assert_eq!(rx.received()[0].json()["attachments"][0]["content"], card);

    let huge = json!({"type": "AdaptiveCard", "body": [{"type": "TextBlock", "text": "x".repeat(30_000)}]});
    let id = h
        .send_one(json!({"text": "x", "to": ["teams"], "channels": {"teams": {"card": huge}}}))
        .await;
    let d = h.wait_status(&id, "dead", WAIT).await;
    assert_eq!(d["attempts"][0]["error_class"], "override");

    h.put_destination(
        "teams-t",
        json!({"kind": "teams", "url": rx.url("/t"),
               "template": "{\"type\": \"message\", \"text\": {{ (severity ~ ' ' ~ text)|tojson }}}"}),
    )
    .await;
    let id = h
        .send_one(json!({"text": "템플릿", "severity": "critical", "to": ["teams-t"]}))
        .await;
    h.wait_status(&id, "delivered", WAIT).await;
    let last = rx.received().pop().unwrap();
    assert_eq!(last.path, "/t");
    assert_eq!(
        last.json(),
        json!({"type": "message", "text": "critical 템플릿"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_text_is_cut_to_fit_the_request_size_limit() {
    let rx = FakeReceiver::start().await;
    rx.set_default(teams::workflows_accepted());
    let h = TestHerald::start().await;
    teams_destination(&h, &rx).await;
    let id = h
        .send_one(json!({"text": "팀즈 🎉 ".repeat(20_000), "to": ["teams"]}))
        .await;
    h.wait_status(&id, "delivered", WAIT).await;
    let req = &rx.received()[0];
    assert!(req.body.len() < 28_000, "{} bytes", req.body.len());
    assert!(
        req.json()["attachments"][0]["content"]["body"][1]["text"]
            .as_str()
            .unwrap()
            .ends_with("… (truncated)")
    );
}
