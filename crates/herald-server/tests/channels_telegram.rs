//! Telegram stories, end to end: a real Herald, real HTTP to a loopback fake that answers as
//! the Bot API does (shared/PROVIDERS.md).

use herald_testkit::herald::{TestHerald, fast_retry};
use herald_testkit::providers::telegram;
use herald_testkit::receiver::{FakeReceiver, Reply};
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);
const TOKEN: &str = "123456789:AAHsecretBotTokenXYZ_abcdefghijklm";

async fn telegram_destination(h: &TestHerald, api_base: String) {
    h.put_destination(
        "tg",
        json!({"kind": "telegram", "token": TOKEN, "chat_id": -1001234567890_i64,
               "api_base": api_base, "retry": fast_retry(), "timeout": "500ms"}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_message_gets_escaped_html_and_korean_and_emoji_survive() {
    let rx = FakeReceiver::start().await;
    rx.set_default(telegram::ok());
    let h = TestHerald::start().await;
    telegram_destination(&h, rx.url("")).await;
    assert!(
        !h.destination("tg").await.to_string().contains(TOKEN),
        "the token is masked on read"
    );
    let accepted = h
        .send(json!({"event_type": "etl.done", "title": "적재 <완료>", "text": "행 수 < 10 & 이모지 🎉",
                     "payload": {"rows": 7}, "to": ["tg"]}))
        .await;
    let d = h
        .wait_status(&TestHerald::first_delivery(&accepted), "delivered", WAIT)
        .await;
    assert!(
        d["attempts"][0]["response_excerpt"]
            .as_str()
            .unwrap()
            .contains("message_id")
    );
    let req = &rx.received()[0];
    assert_eq!(req.path, format!("/bot{TOKEN}/sendMessage"));
    let body = req.json();
    assert_eq!(body["chat_id"], -1001234567890_i64);
    assert_eq!(body["parse_mode"], "HTML");
    assert_eq!(
        body["text"],
        format!(
            "<b>ℹ️ 적재 &lt;완료&gt;</b>\n\n행 수 &lt; 10 &amp; 이모지 🎉\n\n<b>rows</b>: 7\n\n<i>etl.done · {}</i>",
            accepted["id"].as_str().unwrap()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_in_parameters_pauses_the_destination() {
    let rx = FakeReceiver::start().await;
    rx.push(telegram::too_many_requests(1));
    rx.set_default(telegram::ok());
    let h = TestHerald::start().await;
    telegram_destination(&h, rx.url("")).await;
    let a = h.send_one(json!({"text": "a", "to": ["tg"]})).await;
    rx.wait_for(1, WAIT).await;
    h.wait_paused("tg", WAIT).await;
    let b = h.send_one(json!({"text": "b", "to": ["tg"]})).await;
    let d = h.wait_status(&a, "delivered", WAIT).await;
    h.wait_status(&b, "delivered", WAIT).await;
    assert_eq!(d["attempts"][0]["status_code"], 429);
    let got = rx.received();
    for later in &got[1..] {
        assert!(later.at.duration_since(got[0].at) >= Duration::from_millis(900));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrated_group_is_sent_again_to_the_new_chat_in_the_same_attempt() {
    let rx = FakeReceiver::start().await;
    rx.push(telegram::migrated(-1009876543210));
    rx.push(telegram::ok());
    let h = TestHerald::start().await;
    telegram_destination(&h, rx.url("")).await;
    let id = h.send_one(json!({"text": "그룹 이전", "to": ["tg"]})).await;
    let d = h.wait_status(&id, "delivered", WAIT).await;
    assert_eq!(d["attempt_count"], 1, "one attempt, two requests");
    let got = rx.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].json()["chat_id"], -1001234567890_i64);
    assert_eq!(got[1].json()["chat_id"], -1009876543210_i64);
    assert_eq!(got[1].json()["text"], got[0].json()["text"]);
    let excerpt = d["attempts"][0]["response_excerpt"].as_str().unwrap();
    assert!(
        excerpt.contains("chat_id = -1009876543210"),
        "the new id is recorded for the operator: {excerpt}"
    );

    // Migrated again on the resend: no loop, the second answer is classified.
    rx.push(telegram::migrated(-1001));
    rx.push(telegram::migrated(-1002));
    let id = h.send_one(json!({"text": "x", "to": ["tg"]})).await;
    let d = h.wait_status(&id, "dead", WAIT).await;
    assert_eq!(rx.count(), 4);
    assert!(
        d["attempts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("-1001")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_blocked_and_bad_requests_are_permanent_server_errors_retried() {
    let rx = FakeReceiver::start().await;
    rx.set_default(telegram::ok());
    let h = TestHerald::start().await;
    telegram_destination(&h, rx.url("")).await;
    for (code, description) in [
        (401, "Unauthorized"),
        (403, "Forbidden: bot was blocked by the user"),
        (400, "Bad Request: chat not found"),
        (
            400,
            "Bad Request: can't parse entities: Unsupported start tag",
        ),
    ] {
        rx.push(telegram::error(code, description));
        let id = h.send_one(json!({"text": "x", "to": ["tg"]})).await;
        let d = h.wait_status(&id, "dead", WAIT).await;
        assert_eq!(d["attempt_count"], 1, "{description}");
        assert!(
            d["attempts"][0]["error"]
                .as_str()
                .unwrap()
                .contains(description)
        );
    }
    rx.push(telegram::error(502, "Bad Gateway"));
    let id = h.send_one(json!({"text": "x", "to": ["tg"]})).await;
    let d = h.wait_status(&id, "delivered", WAIT).await;
    assert_eq!(d["attempts"][0]["outcome"], "retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bot_token_never_appears_in_attempts() {
    let rx = FakeReceiver::start().await;
    // A proxy that echoes the path, a timeout, then a refused connection.
    rx.push(Reply::status(404).body(format!("Cannot POST /bot{TOKEN}/sendMessage")));
    rx.push(telegram::ok().delay(Duration::from_secs(2)));
    rx.set_default(telegram::ok());
    let h = TestHerald::start().await;
    telegram_destination(&h, rx.url("")).await;
    let echoed = h.send_one(json!({"text": "a", "to": ["tg"]})).await;
    let d = h.wait_status(&echoed, "dead", WAIT).await;
    let slow = h.send_one(json!({"text": "b", "to": ["tg"]})).await;
    let timed_out = h.wait_status(&slow, "delivered", WAIT).await;
    assert_eq!(timed_out["attempts"][0]["error_class"], "timeout");

    let closed = herald_testkit::process::free_port();
    h.put_destination(
        "tg-down",
        json!({"kind": "telegram", "token": TOKEN, "chat_id": 1,
               "api_base": format!("http://127.0.0.1:{closed}"), "retry": {"schedule": [], "jitter": false}}),
    )
    .await;
    let refused = h.send_one(json!({"text": "c", "to": ["tg-down"]})).await;
    let r = h.wait_status(&refused, "dead", WAIT).await;
    assert_eq!(r["attempts"][0]["error_class"], "connect");

    for attempt_view in [&d, &timed_out, &r] {
        let text = attempt_view.to_string();
        assert!(!text.contains(TOKEN), "token leaked: {text}");
        assert!(!text.contains("AAHsecretBotToken"), "token leaked: {text}");
    }
    assert!(
        d["attempts"][0]["response_excerpt"]
            .as_str()
            .unwrap()
            .contains("/bot<token>/sendMessage")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_text_is_truncated_to_4096_and_html_overrides_pass_through() {
    let rx = FakeReceiver::start().await;
    rx.set_default(telegram::ok());
    let h = TestHerald::start().await;
    telegram_destination(&h, rx.url("")).await;
    let id = h
        .send_one(json!({"text": "<긴> 메시지 🎉 ".repeat(1000), "to": ["tg"]}))
        .await;
    h.wait_status(&id, "delivered", WAIT).await;
    let text = rx.received()[0].json()["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(text.encode_utf16().count() <= 4096);
    assert!(text.contains("… (truncated)"));

    let html = "<b>굵게</b> <i>기울임</i> 🎉";
    let id = h
        .send_one(json!({"text": "x", "to": ["tg"], "channels": {"telegram": {"html": html}}}))
        .await;
    h.wait_status(&id, "delivered", WAIT).await;
    assert_eq!(rx.received()[1].json()["text"], html);

    let id = h
        .send_one(json!({"text": "x", "to": ["tg"], "channels": {"telegram": {"html": "x".repeat(5000)}}}))
        .await;
    let d = h.wait_status(&id, "dead", WAIT).await;
    assert_eq!(d["attempts"][0]["error_class"], "override");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_the_environment_and_a_template_body() {
    // SAFETY: set before Herald starts; no other test reads this variable.
    unsafe { std::env::set_var("HERALD_SECRET_TEST_TG_TOKEN", TOKEN) };
    let rx = FakeReceiver::start().await;
    rx.set_default(telegram::ok());
    let h = TestHerald::start().await;
    let shown = h
        .put_destination(
            "tg",
            json!({"kind": "telegram", "token": "${env:HERALD_SECRET_TEST_TG_TOKEN}", "chat_id": "@herald_alerts",
                   "api_base": rx.url(""), "template": "{\"text\": {{ ('🔔 ' ~ text)|tojson }}, \"disable_notification\": true}"}),
        )
        .await;
    assert_eq!(shown["token"], "${env:HERALD_SECRET_TEST_TG_TOKEN}");
    let id = h.send_one(json!({"text": "조용히", "to": ["tg"]})).await;
    h.wait_status(&id, "delivered", WAIT).await;
    let req = &rx.received()[0];
    assert_eq!(req.path, format!("/bot{TOKEN}/sendMessage"));
    assert_eq!(
        req.json(),
        json!({"text": "🔔 조용히", "disable_notification": true, "chat_id": "@herald_alerts"})
    );
}
