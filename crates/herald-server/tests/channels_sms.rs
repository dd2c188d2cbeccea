//! SMS stories, end to end: a real Herald, real HTTP to a loopback fake that answers as
//! Twilio's Messages API does (shared/PROVIDERS.md).

use base64::Engine;
use herald_testkit::herald::{TestHerald, fast_retry};
use herald_testkit::providers::twilio;
use herald_testkit::receiver::{FakeReceiver, Reply};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);
const SID: &str = "AC0123456789abcdef0123456789abcdef";
const AUTH_TOKEN: &str = "twilio-auth-token-0123456789abcdef";

async fn sms_destination(h: &TestHerald, rx: &FakeReceiver) {
    h.put_destination(
        "sms",
        json!({"kind": "sms", "account_sid": SID, "auth_token": AUTH_TOKEN, "from": "+15005550006",
               "to": "+821012345678", "api_base": rx.url(""), "retry": fast_retry(), "timeout": "500ms"}),
    )
    .await;
}

fn form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_gets_a_form_with_basic_auth_and_korean_and_emoji_survive() {
    let rx = FakeReceiver::start().await;
    rx.set_default(twilio::created());
    let h = TestHerald::start().await;
    sms_destination(&h, &rx).await;
    let shown = h.destination("sms").await;
    assert!(
        !shown.to_string().contains(AUTH_TOKEN),
        "auth_token masked: {shown}"
    );
    let id = h
        .send_one(json!({"title": "서버 경보 🚨", "text": "디스크 95% & 증가 중", "to": ["sms"]}))
        .await;
    let d = h.wait_status(&id, "delivered", WAIT).await;
    assert_eq!(d["attempts"][0]["status_code"], 201);
    let req = &rx.received()[0];
    assert_eq!(
        req.path,
        format!("/2010-04-01/Accounts/{SID}/Messages.json")
    );
    assert_eq!(
        req.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{SID}:{AUTH_TOKEN}"));
    assert_eq!(
        req.header("authorization"),
        Some(format!("Basic {basic}").as_str())
    );
    let f = form(&req.body);
    assert_eq!(f["To"], "+821012345678");
    assert_eq!(f["From"], "+15005550006");
    assert_eq!(f["Body"], "서버 경보 🚨\n디스크 95% & 증가 중");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_twilio_errors_dead_letter_at_once() {
    let rx = FakeReceiver::start().await;
    rx.set_default(twilio::created());
    let h = TestHerald::start().await;
    sms_destination(&h, &rx).await;
    for (status, code) in [
        (401, 20003),
        (404, 20404),
        (400, 21211),
        (400, 21606),
        (400, 21608),
        (400, 21610),
        (400, 21612),
        (400, 21614),
        (400, 21617),
    ] {
        rx.push(twilio::error(status, code, "The request was refused"));
        let id = h.send_one(json!({"text": "x", "to": ["sms"]})).await;
        let d = h.wait_status(&id, "dead", WAIT).await;
        assert_eq!(d["attempt_count"], 1, "{code}");
        assert_eq!(d["attempts"][0]["status_code"], status);
        assert!(
            d["attempts"][0]["error"]
                .as_str()
                .unwrap()
                .contains(&code.to_string())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_server_errors_are_retried() {
    let rx = FakeReceiver::start().await;
    rx.push(twilio::error(429, 20429, "Too Many Requests"));
    rx.push(twilio::error(400, 20429, "Too Many Requests"));
    rx.push(Reply::status(503));
    rx.set_default(twilio::created());
    let h = TestHerald::start().await;
    sms_destination(&h, &rx).await;
    let id = h.send_one(json!({"text": "재시도", "to": ["sms"]})).await;
    let d = h.wait_status(&id, "delivered", WAIT).await;
    let codes: Vec<_> = d["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].clone())
        .collect();
    assert_eq!(codes, vec![json!(429), json!(400), json!(503), json!(201)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_is_retried_and_warns_of_a_duplicate_sms() {
    let rx = FakeReceiver::start().await;
    rx.push(twilio::created().delay(Duration::from_secs(2)));
    rx.set_default(twilio::created());
    let h = TestHerald::start().await;
    sms_destination(&h, &rx).await;
    let id = h.send_one(json!({"text": "x", "to": ["sms"]})).await;
    let d = h.wait_status(&id, "delivered", WAIT).await;
    let a = &d["attempts"][0];
    assert_eq!(a["error_class"], "timeout");
    assert!(
        a["error"].as_str().unwrap().contains("twice"),
        "the duplicate risk is recorded: {a}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_bodies_are_truncated_to_1600_and_templates_render_the_text() {
    let rx = FakeReceiver::start().await;
    rx.set_default(twilio::created());
    let h = TestHerald::start().await;
    sms_destination(&h, &rx).await;
    let id = h
        .send_one(json!({"text": "문자 메시지 🎉 ".repeat(400), "to": ["sms"]}))
        .await;
    h.wait_status(&id, "delivered", WAIT).await;
    let body = form(&rx.received()[0].body)["Body"].clone();
    assert!(body.encode_utf16().count() <= 1600);
    assert!(body.ends_with("… (truncated)"));

    h.put_destination(
        "sms-t",
        json!({"kind": "sms", "account_sid": SID, "auth_token": "${env:HERALD_SECRET_TEST_UNUSED_TWILIO}", "from": "Herald",
               "to": "+821012345678", "api_base": rx.url(""), "template": "[{{ event_type }}] {{ text }}"}),
    )
    .await;
    // SAFETY: set before the message is sent; no other test reads this variable.
    unsafe { std::env::set_var("HERALD_SECRET_TEST_UNUSED_TWILIO", "tok-from-env") };
    let id = h
        .send_one(json!({"event_type": "otp", "text": "인증번호 123456", "to": ["sms-t"]}))
        .await;
    h.wait_status(&id, "delivered", WAIT).await;
    let req = rx.received().pop().unwrap();
    let f = form(&req.body);
    assert_eq!(f["Body"], "[otp] 인증번호 123456");
    assert_eq!(f["From"], "Herald");
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{SID}:tok-from-env"));
    assert_eq!(
        req.header("authorization"),
        Some(format!("Basic {basic}").as_str())
    );
}
