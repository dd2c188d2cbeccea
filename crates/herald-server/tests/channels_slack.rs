//! Slack stories, end to end: a real Herald, real HTTP to a loopback fake that answers as
//! Slack's incoming webhooks and Web API do (shared/PROVIDERS.md).

use herald_testkit::herald::{TestHerald, fast_retry};
use herald_testkit::providers::{slack_api, slack_webhook};
use herald_testkit::receiver::FakeReceiver;
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);
const MARKER: &str = "… (truncated)";

async fn webhook(h: &TestHerald, rx: &FakeReceiver) {
    h.put_destination(
        "slack",
        json!({"kind": "slack", "url": rx.url("/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX"), "retry": fast_retry()}),
    )
    .await;
}

async fn web_api(h: &TestHerald, rx: &FakeReceiver) {
    h.put_destination(
        "slack",
        json!({"kind": "slack", "token": "xoxb-0000-1111-abcdefghijklmnop", "channel": "C0123456789",
               "api_base": rx.url("/api"), "retry": fast_retry()}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incoming_webhook_gets_block_kit_and_korean_and_emoji_survive() {
    let rx = FakeReceiver::start().await;
    rx.set_default(slack_webhook::ok());
    let h = TestHerald::start().await;
    webhook(&h, &rx).await;
    let shown = h.destination("slack").await;
    assert!(
        !shown["url"].as_str().unwrap().contains("XXXXXXXXXXXXXXXX"),
        "the webhook URL is the secret and is masked: {shown}"
    );

    let accepted = h
        .send(json!({
            "event_type": "pipeline.failed", "title": "배포 실패 🚀", "text": "롤백 <완료> & 재시도 🎉",
            "severity": "error", "payload": {"rows": 1200, "table": "주문"}, "to": ["slack"]
        }))
        .await;
    let d = h
        .wait_status(&TestHerald::first_delivery(&accepted), "delivered", WAIT)
        .await;
    assert_eq!(d["attempts"][0]["status_code"], 200);
    assert_eq!(d["attempts"][0]["response_excerpt"], "ok");

    let req = &rx.received()[0];
    assert_eq!(req.path, "/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX");
    assert!(
        req.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let body = req.json();
    let blocks = body["blocks"].as_array().unwrap();
    assert_eq!(
        blocks[0],
        json!({"type": "header", "text": {"type": "plain_text", "text": "❌ 배포 실패 🚀", "emoji": true}})
    );
    assert_eq!(
        blocks[1]["text"],
        json!({"type": "mrkdwn", "text": "롤백 &lt;완료&gt; &amp; 재시도 🎉"})
    );
    assert_eq!(
        blocks[2]["fields"],
        json!([{"type": "mrkdwn", "text": "*rows*\n1200"}, {"type": "mrkdwn", "text": "*table*\n주문"}])
    );
    assert_eq!(
        blocks[3]["elements"][0]["text"],
        format!("pipeline.failed · {}", accepted["id"].as_str().unwrap())
    );
    assert_eq!(
        body["text"],
        "배포 실패 🚀\n롤백 &lt;완료&gt; &amp; 재시도 🎉"
    );
    // Byte-exact: the raw request carries the UTF-8 as sent.
    assert!(req.text().contains("배포 실패 🚀"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_post_message_sends_the_bearer_token_and_the_channel() {
    let rx = FakeReceiver::start().await;
    rx.set_default(slack_api::ok());
    let h = TestHerald::start().await;
    web_api(&h, &rx).await;
    let shown = h.destination("slack").await;
    assert!(!shown.to_string().contains("abcdefghijklmnop"), "{shown}");
    let id = h
        .send_one(json!({"text": "안녕 👋", "to": ["slack"]}))
        .await;
    let d = h.wait_status(&id, "delivered", WAIT).await;
    assert!(
        d["attempts"][0]["response_excerpt"]
            .as_str()
            .unwrap()
            .contains("1503435956.000247")
    );
    let req = &rx.received()[0];
    assert_eq!(req.path, "/api/chat.postMessage");
    assert_eq!(
        req.header("authorization"),
        Some("Bearer xoxb-0000-1111-abcdefghijklmnop")
    );
    assert_eq!(
        req.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    let body = req.json();
    assert_eq!(body["channel"], "C0123456789");
    assert_eq!(body["text"], "안녕 👋");
    assert_eq!(body["blocks"][0]["text"]["text"], "ℹ️ 안녕 👋");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_permanent_api_error_code_dead_letters_at_once() {
    let codes = [
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "missing_scope",
        "invalid_blocks",
        "invalid_blocks_format",
        "msg_blocks_too_long",
        "no_text",
        "too_many_attachments",
        "restricted_action",
        "posting_to_general_channel_denied",
    ];
    let rx = FakeReceiver::start().await;
    let h = TestHerald::start().await;
    web_api(&h, &rx).await;
    for code in codes {
        rx.push(slack_api::error(code));
        let id = h.send_one(json!({"text": code, "to": ["slack"]})).await;
        let d = h.wait_status(&id, "dead", WAIT).await;
        assert_eq!(d["attempt_count"], 1, "{code} is not retried");
        let a = &d["attempts"][0];
        assert_eq!(a["outcome"], "permanent");
        assert_eq!(a["status_code"], 200);
        assert!(a["error"].as_str().unwrap().contains(code), "{a}");
    }
    assert_eq!(
        h.destination("slack").await["enabled"],
        true,
        "API errors do not disable"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_retryable_api_error_code_is_retried_until_delivered() {
    let rx = FakeReceiver::start().await;
    let h = TestHerald::start().await;
    web_api(&h, &rx).await;
    for code in [
        "ratelimited",
        "rate_limited",
        "internal_error",
        "fatal_error",
        "service_unavailable",
        "request_timeout",
    ] {
        rx.push(slack_api::error(code));
        rx.push(slack_api::ok());
        let id = h.send_one(json!({"text": code, "to": ["slack"]})).await;
        let d = h.wait_status(&id, "delivered", WAIT).await;
        assert_eq!(d["attempt_count"], 2, "{code}");
        assert_eq!(d["attempts"][0]["outcome"], "retry");
        assert!(d["attempts"][0]["error"].as_str().unwrap().contains(code));
    }
    // HTTP 5xx from the API is retried too.
    rx.push(herald_testkit::receiver::Reply::status(503));
    rx.push(slack_api::ok());
    let id = h.send_one(json!({"text": "5xx", "to": ["slack"]})).await;
    let d = h.wait_status(&id, "delivered", WAIT).await;
    assert_eq!(d["attempts"][0]["status_code"], 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_429_pauses_the_destination_until_retry_after() {
    let rx = FakeReceiver::start().await;
    rx.push(slack_webhook::rate_limited(2));
    rx.set_default(slack_webhook::ok());
    let h = TestHerald::start().await;
    webhook(&h, &rx).await;
    let a = h.send_one(json!({"text": "a", "to": ["slack"]})).await;
    rx.wait_for(1, WAIT).await;
    h.wait_paused("slack", WAIT).await;
    let b = h.send_one(json!({"text": "b", "to": ["slack"]})).await;
    let d = h.wait_status(&a, "delivered", WAIT).await;
    h.wait_status(&b, "delivered", WAIT).await;
    assert_eq!(d["attempts"][0]["outcome"], "retry");
    assert_eq!(d["attempts"][0]["status_code"], 429);
    let got = rx.received();
    assert_eq!(got.len(), 3);
    for later in &got[1..] {
        let waited = later.at.duration_since(got[0].at);
        assert!(
            waited >= Duration::from_millis(1900),
            "no request before Retry-After (waited {waited:?})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_api_429_is_retried_after_retry_after() {
    let rx = FakeReceiver::start().await;
    rx.push(slack_api::rate_limited(1));
    rx.set_default(slack_api::ok());
    let h = TestHerald::start().await;
    web_api(&h, &rx).await;
    let id = h.send_one(json!({"text": "x", "to": ["slack"]})).await;
    rx.wait_for(1, WAIT).await;
    h.wait_paused("slack", WAIT).await;
    h.wait_status(&id, "delivered", WAIT).await;
    let got = rx.received();
    assert!(got[1].at.duration_since(got[0].at) >= Duration::from_millis(900));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_client_errors_are_permanent_and_server_errors_retried() {
    let rx = FakeReceiver::start().await;
    rx.set_default(slack_webhook::ok());
    let h = TestHerald::start().await;
    webhook(&h, &rx).await;
    for (status, code) in [
        (400, "invalid_payload"),
        (400, "invalid_blocks"),
        (400, "no_text"),
        (403, "action_prohibited"),
        (403, "invalid_token"),
        (403, "team_disabled"),
        (404, "some_other_404"),
    ] {
        rx.push(slack_webhook::error(status, code));
        let id = h.send_one(json!({"text": code, "to": ["slack"]})).await;
        let d = h.wait_status(&id, "dead", WAIT).await;
        assert_eq!(d["attempt_count"], 1);
        assert_eq!(d["attempts"][0]["status_code"], status);
        assert!(d["attempts"][0]["error"].as_str().unwrap().contains(code));
    }
    assert_eq!(h.destination("slack").await["enabled"], true);
    rx.push(slack_webhook::error(500, "rollup_error"));
    rx.push(slack_webhook::error(502, "bad gateway"));
    let id = h.send_one(json!({"text": "x", "to": ["slack"]})).await;
    let d = h.wait_status(&id, "delivered", WAIT).await;
    assert_eq!(d["attempt_count"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gone_webhook_disables_the_destination() {
    for (status, code) in [
        (404, "no_service"),
        (404, "channel_not_found"),
        (410, "channel_is_archived"),
    ] {
        let rx = FakeReceiver::start().await;
        rx.push(slack_webhook::error(status, code));
        let h = TestHerald::start().await;
        webhook(&h, &rx).await;
        let id = h.send_one(json!({"text": "x", "to": ["slack"]})).await;
        let d = h.wait_status(&id, "dead", WAIT).await;
        assert_eq!(d["attempts"][0]["outcome"], "permanent");
        let dest = h.destination("slack").await;
        assert_eq!(dest["enabled"], false, "{code}");
        assert!(
            dest["disabled_reason"].as_str().unwrap().contains(code),
            "{dest}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_blocks_pass_through_and_blocks_over_the_limits_are_refused() {
    let rx = FakeReceiver::start().await;
    rx.set_default(slack_webhook::ok());
    let h = TestHerald::start().await;
    webhook(&h, &rx).await;
    let blocks = json!([{"type": "section", "text": {"type": "mrkdwn", "text": "*직접* 만든 블록 🧱"}}, {"type": "divider"}]);
    let id = h
        .send_one(json!({"text": "fallback", "to": ["slack"], "channels": {"slack": {"blocks": blocks, "text": "알림 🔔"}}}))
        .await;
    h.wait_status(&id, "delivered", WAIT).await;
    let body = rx.received()[0].json();
    assert_eq!(body["blocks"], blocks);
    assert_eq!(body["text"], "알림 🔔");

    let too_many = Value::Array(vec![json!({"type": "divider"}); 51]);
    let id = h
        .send_one(
            json!({"text": "x", "to": ["slack"], "channels": {"slack": {"blocks": too_many}}}),
        )
        .await;
    let d = h.wait_status(&id, "dead", WAIT).await;
    assert_eq!(d["attempts"][0]["error_class"], "override");
    assert!(
        d["attempts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("51 blocks")
    );
    assert_eq!(rx.count(), 1, "nothing over the limits reaches Slack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_text_is_truncated_with_a_marker_never_rejected() {
    let rx = FakeReceiver::start().await;
    rx.set_default(slack_webhook::ok());
    let h = TestHerald::start().await;
    webhook(&h, &rx).await;
    let long = "긴 로그 줄 🎉 ".repeat(2000);
    let id = h
        .send_one(json!({"title": "t".repeat(400), "text": long, "to": ["slack"]}))
        .await;
    h.wait_status(&id, "delivered", WAIT).await;
    let body = rx.received()[0].json();
    let header = body["blocks"][0]["text"]["text"].as_str().unwrap();
    let section = body["blocks"][1]["text"]["text"].as_str().unwrap();
    let utf16 = |s: &str| s.encode_utf16().count();
    assert!(utf16(header) <= 150 && header.ends_with(MARKER));
    assert!(utf16(section) <= 3000 && section.ends_with(MARKER));
    assert!(long.starts_with(section.trim_end_matches(MARKER)));
    let text = body["text"].as_str().unwrap();
    assert!(utf16(text) <= 4000 && text.ends_with(MARKER));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_template_renders_the_whole_body() {
    let rx = FakeReceiver::start().await;
    rx.set_default(slack_webhook::ok());
    let h = TestHerald::start().await;
    h.put_destination(
        "slack",
        json!({"kind": "slack", "url": rx.url("/hook"),
               "template": "{\"text\": {{ (destination.name ~ ': ' ~ text)|tojson }}, \"unfurl_links\": false}"}),
    )
    .await;
    let id = h
        .send_one(json!({"text": "템플릿 ✅", "to": ["slack"]}))
        .await;
    h.wait_status(&id, "delivered", WAIT).await;
    assert_eq!(
        rx.received()[0].json(),
        json!({"text": "slack: 템플릿 ✅", "unfurl_links": false})
    );
    // A message's own blocks win over the destination's template.
    let blocks = json!([{"type": "section", "text": {"type": "plain_text", "text": "직접"}}]);
    let id = h
        .send_one(json!({"text": "x", "to": ["slack"], "channels": {"slack": {"blocks": blocks}}}))
        .await;
    h.wait_status(&id, "delivered", WAIT).await;
    assert_eq!(rx.received()[1].json()["blocks"], blocks);
}
