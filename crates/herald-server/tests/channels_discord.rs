//! Discord stories, end to end: a real Herald, real HTTP to a loopback fake that answers as
//! Discord's execute-webhook endpoint does (shared/PROVIDERS.md).

use herald_testkit::herald::{TestHerald, fast_retry};
use herald_testkit::providers::discord;
use herald_testkit::receiver::{FakeReceiver, Reply};
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

async fn discord_destination(h: &TestHerald, rx: &FakeReceiver) {
    h.put_destination(
        "discord",
        json!({"kind": "discord", "url": rx.url("/api/webhooks/1234567890/SECRETTOKENabcdefghijklmnop"), "retry": fast_retry()}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discord_webhook_gets_an_embed_and_korean_and_emoji_survive() {
    let rx = FakeReceiver::start().await;
    rx.set_default(discord::no_content());
    let h = TestHerald::start().await;
    discord_destination(&h, &rx).await;
    assert!(
        !h.destination("discord")
            .await
            .to_string()
            .contains("SECRETTOKEN"),
        "the webhook URL is masked on read"
    );
    let accepted = h
        .send(json!({"event_type": "build.done", "title": "빌드 성공 🎉", "text": "@everyone 모든 테스트 통과 ✅",
                     "payload": {"duration_s": 93.5, "branch": "main"}, "to": ["discord"]}))
        .await;
    let d = h
        .wait_status(&TestHerald::first_delivery(&accepted), "delivered", WAIT)
        .await;
    assert_eq!(d["attempts"][0]["status_code"], 204);
    let body = rx.received()[0].json();
    assert_eq!(
        body["allowed_mentions"],
        json!({"parse": []}),
        "message text never pings"
    );
    let e = &body["embeds"][0];
    assert_eq!(e["title"], "ℹ️ 빌드 성공 🎉");
    assert_eq!(e["description"], "@everyone 모든 테스트 통과 ✅");
    assert_eq!(
        e["fields"],
        json!([{"name": "branch", "value": "main", "inline": true}, {"name": "duration_s", "value": "93.5", "inline": true}])
    );
    assert_eq!(
        e["footer"]["text"],
        format!("build.done · {}", accepted["id"].as_str().unwrap())
    );
    assert!(e["timestamp"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discord_429_waits_the_float_retry_after_and_pauses_the_destination() {
    let rx = FakeReceiver::start().await;
    // The header says an hour: only the body's 1.2 s lets the test finish in time.
    rx.push(discord::rate_limited(1.2, 3600));
    rx.set_default(discord::no_content());
    let h = TestHerald::start().await;
    discord_destination(&h, &rx).await;
    let a = h.send_one(json!({"text": "a", "to": ["discord"]})).await;
    rx.wait_for(1, WAIT).await;
    h.wait_paused("discord", WAIT).await;
    let b = h.send_one(json!({"text": "b", "to": ["discord"]})).await;
    let d = h.wait_status(&a, "delivered", WAIT).await;
    h.wait_status(&b, "delivered", WAIT).await;
    assert_eq!(d["attempts"][0]["status_code"], 429);
    assert_eq!(d["attempts"][0]["outcome"], "retry");
    let got = rx.received();
    assert_eq!(got.len(), 3);
    for later in &got[1..] {
        let waited = later.at.duration_since(got[0].at);
        assert!(
            waited >= Duration::from_millis(1100),
            "no request before retry_after (waited {waited:?})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_webhook_disables_the_destination() {
    let rx = FakeReceiver::start().await;
    rx.push(discord::error(404, 10015, "Unknown Webhook"));
    let h = TestHerald::start().await;
    discord_destination(&h, &rx).await;
    let id = h.send_one(json!({"text": "x", "to": ["discord"]})).await;
    let d = h.wait_status(&id, "dead", WAIT).await;
    assert!(
        d["attempts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("10015")
    );
    let dest = h.destination("discord").await;
    assert_eq!(dest["enabled"], false);
    assert!(
        dest["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("Unknown Webhook")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_are_permanent_and_server_errors_retried() {
    let rx = FakeReceiver::start().await;
    rx.set_default(discord::no_content());
    let h = TestHerald::start().await;
    discord_destination(&h, &rx).await;
    for (status, code, message) in [
        (400, 50035, "Invalid Form Body"),
        (400, 50006, "Cannot send an empty message"),
        (401, 50014, "Invalid authentication token"),
        (403, 50013, "Missing Permissions"),
        (404, 10003, "Unknown Channel"),
    ] {
        rx.push(discord::error(status, code, message));
        let id = h.send_one(json!({"text": "x", "to": ["discord"]})).await;
        let d = h.wait_status(&id, "dead", WAIT).await;
        assert_eq!(d["attempt_count"], 1, "{code}");
        assert!(
            d["attempts"][0]["error"]
                .as_str()
                .unwrap()
                .contains(&code.to_string())
        );
    }
    assert_eq!(
        h.destination("discord").await["enabled"],
        true,
        "only 10015 disables"
    );
    rx.push(Reply::status(500));
    rx.push(Reply::status(503));
    let id = h.send_one(json!({"text": "x", "to": ["discord"]})).await;
    let d = h.wait_status(&id, "delivered", WAIT).await;
    assert_eq!(d["attempt_count"], 3);
    // With ?wait=true Discord answers 200 and the message.
    rx.push(Reply::status(200).json(json!({"id": "1", "content": ""})));
    let id = h.send_one(json!({"text": "y", "to": ["discord"]})).await;
    h.wait_status(&id, "delivered", WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_embeds_and_content_override_the_default_within_the_limits() {
    let rx = FakeReceiver::start().await;
    rx.set_default(discord::no_content());
    let h = TestHerald::start().await;
    discord_destination(&h, &rx).await;
    let embeds = json!([{"title": "직접 🎨", "color": 255}]);
    let id = h
        .send_one(json!({"text": "x", "to": ["discord"], "channels": {"discord": {"embeds": embeds, "content": "내용 💬"}}}))
        .await;
    h.wait_status(&id, "delivered", WAIT).await;
    let body = rx.received()[0].json();
    assert_eq!(body["embeds"], embeds);
    assert_eq!(body["content"], "내용 💬");

    let eleven = Value::Array(vec![json!({"title": "e"}); 11]);
    let id = h
        .send_one(
            json!({"text": "x", "to": ["discord"], "channels": {"discord": {"embeds": eleven}}}),
        )
        .await;
    let d = h.wait_status(&id, "dead", WAIT).await;
    assert_eq!(d["attempts"][0]["error_class"], "override");
    assert_eq!(rx.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_text_is_cut_to_discord_limits() {
    let rx = FakeReceiver::start().await;
    rx.set_default(discord::no_content());
    let h = TestHerald::start().await;
    discord_destination(&h, &rx).await;
    let id = h
        .send_one(
            json!({"title": "제목".repeat(150), "text": "본문 🎉".repeat(3000), "to": ["discord"]}),
        )
        .await;
    h.wait_status(&id, "delivered", WAIT).await;
    let e = &rx.received()[0].json()["embeds"][0];
    let chars = |v: &Value| v.as_str().unwrap().chars().count();
    assert!(chars(&e["title"]) <= 256);
    assert!(chars(&e["description"]) <= 4096);
    assert!(
        e["description"]
            .as_str()
            .unwrap()
            .ends_with("… (truncated)")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_template_renders_the_body() {
    let rx = FakeReceiver::start().await;
    rx.set_default(discord::no_content());
    let h = TestHerald::start().await;
    h.put_destination(
        "discord",
        json!({"kind": "discord", "url": rx.url("/hook"), "template": "{\"content\": {{ ('**' ~ event_type ~ '** ' ~ text)|tojson }}}"}),
    )
    .await;
    let id = h
        .send_one(json!({"event_type": "deploy", "text": "배포 🚀", "to": ["discord"]}))
        .await;
    h.wait_status(&id, "delivered", WAIT).await;
    assert_eq!(
        rx.received()[0].json(),
        json!({"content": "**deploy** 배포 🚀"})
    );
}
