//! Email stories, end to end: a real Herald sending through lettre to a real SMTP server on
//! 127.0.0.1 (the testkit's sink), which can be told to answer failures.

use herald_testkit::herald::{TestHerald, fast_retry};
use herald_testkit::smtp::{SmtpReply, SmtpSink, Stage};
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

async fn email_destination(h: &TestHerald, smtp_url: String) {
    h.put_destination(
        "mail",
        json!({"kind": "email", "smtp_url": smtp_url, "from": "헤럴드 <herald@example.com>",
               "to": ["ops@example.com", "데이터팀 <data@example.com>"], "retry": fast_retry()}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_has_a_korean_subject_and_utf8_text_and_html_parts() {
    let sink = SmtpSink::start().await;
    let h = TestHerald::start().await;
    let url = format!("smtp://herald:p%40ss%20w0rd@{}?tls=none", sink.addr);
    email_destination(&h, url).await;
    let shown = h.destination("mail").await;
    assert_eq!(
        shown["smtp_url"],
        format!("smtp://herald:****@{}?tls=none", sink.addr),
        "only the password is masked"
    );

    let text = "주문 적재가 끝났습니다 🎉\n둘째 줄 <b>태그 아님</b> & 기호\n.점으로 시작하는 줄";
    let accepted = h
        .send(
            json!({"event_type": "etl.done", "title": "일일 리포트 📊 준비 완료", "text": text,
                     "severity": "warning", "payload": {"rows": 1200}, "to": ["mail"]}),
        )
        .await;
    let id = accepted["id"].as_str().unwrap().to_string();
    let d = h
        .wait_status(&TestHerald::first_delivery(&accepted), "delivered", WAIT)
        .await;
    assert_eq!(d["attempts"][0]["status_code"], 250);
    assert!(
        d["attempts"][0]["response_excerpt"]
            .as_str()
            .unwrap()
            .contains("queued")
    );

    let mail = &sink.mails()[0];
    assert_eq!(mail.from, "herald@example.com");
    assert_eq!(mail.to, vec!["ops@example.com", "data@example.com"]);
    assert_eq!(
        mail.auth,
        Some(("herald".to_string(), "p@ss w0rd".to_string())),
        "credentials from the URL, percent-decoded"
    );
    let raw = mail.raw_text();
    assert!(raw.is_ascii(), "headers and parts are transfer-encoded");
    assert!(raw.contains("multipart/alternative"));
    assert_eq!(mail.subject().as_deref(), Some("일일 리포트 📊 준비 완료"));
    // Mail's line break is CRLF (RFC 5322); every other byte is the sender's.
    let plain = mail.text().unwrap().replace("\r\n", "\n");
    assert!(
        plain.contains(text),
        "the text part carries the text byte for byte: {plain:?}"
    );
    assert!(plain.contains("rows: 1200"));
    let html = mail.html().unwrap();
    assert!(html.contains("<h2>⚠️ 일일 리포트 📊 준비 완료</h2>"));
    assert!(html.contains("둘째 줄 &lt;b&gt;태그 아님&lt;/b&gt; &amp; 기호"));
    assert_eq!(
        mail.header("Message-ID").as_deref(),
        Some(format!("<{id}.mail@herald>").as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_smtp_replies_are_retried() {
    let sink = SmtpSink::start().await;
    sink.push(Stage::Rcpt, 450, "4.2.1 mailbox busy");
    sink.push(Stage::Mail, 421, "4.3.2 service shutting down");
    sink.push(Stage::Data, 451, "4.3.0 local error in processing");
    let h = TestHerald::start().await;
    email_destination(&h, sink.url()).await;
    let id = h.send_one(json!({"text": "다시", "to": ["mail"]})).await;
    let d = h.wait_status(&id, "delivered", WAIT).await;
    let codes: Vec<Value> = d["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].clone())
        .collect();
    assert_eq!(codes, vec![json!(421), json!(450), json!(451), json!(250)]);
    assert_eq!(d["attempts"][0]["outcome"], "retry");
    assert_eq!(d["attempts"][0]["error_class"], "smtp_reply");
    assert_eq!(sink.mails().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_smtp_replies_dead_letter_at_once() {
    let sink = SmtpSink::start().await;
    let h = TestHerald::start().await;
    email_destination(&h, sink.url()).await;
    for (stage, code, text) in [
        (Stage::Mail, 553, "5.7.1 sender not allowed"),
        (Stage::Rcpt, 550, "5.1.1 no such user"),
        (Stage::Data, 554, "5.6.0 message rejected"),
    ] {
        sink.push(stage, code, text);
        let id = h.send_one(json!({"text": "x", "to": ["mail"]})).await;
        let d = h.wait_status(&id, "dead", WAIT).await;
        assert_eq!(d["attempt_count"], 1, "{code}");
        let a = &d["attempts"][0];
        assert_eq!(a["outcome"], "permanent");
        assert_eq!(a["status_code"], code);
        assert!(a["error"].as_str().unwrap().contains(text), "{a}");
    }
    assert!(
        sink.mails().is_empty(),
        "one rejected recipient fails the send"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_and_a_timeout_are_retried() {
    let h = TestHerald::start().await;
    let closed = herald_testkit::process::free_port();
    h.put_destination(
        "down",
        json!({"kind": "email", "smtp_url": format!("smtp://127.0.0.1:{closed}?tls=none"),
               "from": "h@example.com", "to": ["o@example.com"], "retry": {"schedule": ["100ms"], "jitter": false}}),
    )
    .await;
    let id = h.send_one(json!({"text": "x", "to": ["down"]})).await;
    let d = h.wait_status(&id, "dead", WAIT).await;
    assert_eq!(d["attempt_count"], 2, "connection errors are retried");
    assert_eq!(d["attempts"][0]["outcome"], "retry");
    assert_eq!(d["attempts"][0]["error_class"], "connect");

    let sink = SmtpSink::start().await;
    sink.push_reply(SmtpReply {
        stage: Stage::Data,
        code: 250,
        text: "too late".into(),
        delay: Duration::from_secs(3),
    });
    h.put_destination(
        "slow",
        json!({"kind": "email", "smtp_url": sink.url(), "from": "h@example.com", "to": ["o@example.com"],
               "timeout": "500ms", "retry": fast_retry()}),
    )
    .await;
    let id = h.send_one(json!({"text": "느림", "to": ["slow"]})).await;
    let d = h.wait_status(&id, "delivered", WAIT).await;
    assert_eq!(d["attempts"][0]["outcome"], "retry");
    assert_eq!(d["attempts"][0]["error_class"], "timeout");
    assert_eq!(sink.mails().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_problems_are_permanent_configuration_errors() {
    let sink = SmtpSink::start().await;
    let h = TestHerald::start().await;
    // The sink offers no STARTTLS: required TLS refuses to go on in plain text.
    h.put_destination(
        "starttls",
        json!({"kind": "email", "smtp_url": format!("smtp://u:secret-pw@{}?tls=required", sink.addr),
               "from": "h@example.com", "to": ["o@example.com"], "retry": fast_retry()}),
    )
    .await;
    let id = h.send_one(json!({"text": "x", "to": ["starttls"]})).await;
    let d = h.wait_status(&id, "dead", WAIT).await;
    assert_eq!(d["attempt_count"], 1);
    assert_eq!(d["attempts"][0]["error_class"], "config");
    assert!(
        d["attempts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("STARTTLS")
    );
    // Implicit TLS against a plain-text server fails the handshake.
    h.put_destination(
        "smtps",
        json!({"kind": "email", "smtp_url": format!("smtps://u:secret-pw@{}", sink.addr),
               "from": "h@example.com", "to": ["o@example.com"], "retry": fast_retry()}),
    )
    .await;
    let id = h.send_one(json!({"text": "x", "to": ["smtps"]})).await;
    let d = h.wait_status(&id, "dead", WAIT).await;
    assert_eq!(d["attempt_count"], 1, "{d}");
    assert_eq!(d["attempts"][0]["error_class"], "tls");
    for dest in ["starttls", "smtps"] {
        let shown = h.destination(dest).await.to_string();
        assert!(!shown.contains("secret-pw"), "{shown}");
    }
    assert!(sink.mails().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ssrf_policy_applies_to_the_smtp_host() {
    let sink = SmtpSink::start().await;
    let h = TestHerald::start_with(|c| c.allow_networks = String::new()).await;
    email_destination(&h, sink.url()).await;
    let id = h.send_one(json!({"text": "x", "to": ["mail"]})).await;
    let d = h.wait_status(&id, "dead", WAIT).await;
    assert_eq!(d["attempts"][0]["error_class"], "ssrf_blocked");
    assert_eq!(sink.connections(), 0, "no connection was made");
    // A host name is resolved and each address checked.
    h.put_destination(
        "byname",
        json!({"kind": "email", "smtp_url": format!("smtp://localhost:{}?tls=none", sink.addr.port()),
               "from": "h@example.com", "to": ["o@example.com"]}),
    )
    .await;
    let id = h.send_one(json!({"text": "x", "to": ["byname"]})).await;
    let d = h.wait_status(&id, "dead", WAIT).await;
    assert_eq!(d["attempts"][0]["error_class"], "ssrf_blocked");
    assert_eq!(sink.connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_pooled_per_destination() {
    let sink = SmtpSink::start().await;
    let h = TestHerald::start().await;
    email_destination(&h, sink.url()).await;
    for i in 0..3 {
        let id = h
            .send_one(json!({"text": format!("메일 {i}"), "to": ["mail"]}))
            .await;
        h.wait_status(&id, "delivered", WAIT).await;
    }
    assert_eq!(sink.mails().len(), 3);
    assert_eq!(
        sink.connections(),
        1,
        "one connection carried every message"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_and_message_overrides_shape_the_email() {
    let sink = SmtpSink::start().await;
    let h = TestHerald::start().await;
    h.put_destination(
        "tmpl",
        json!({"kind": "email", "smtp_url": sink.url(), "from": "h@example.com", "to": ["o@example.com"],
               "template": "[{{ severity }}] {{ text }} — {{ destination.name }}",
               "html_template": "<p>{{ payload.who }}님, {{ text }}</p>"}),
    )
    .await;
    h.put_destination(
        "textonly",
        json!({"kind": "email", "smtp_url": sink.url(), "from": "h@example.com", "to": ["o@example.com"],
               "template": "{{ text }} ✉️"}),
    )
    .await;
    h.put_destination(
        "plain",
        json!({"kind": "email", "smtp_url": sink.url(), "from": "h@example.com", "to": ["o@example.com"]}),
    )
    .await;
    let id = h
        .send_one(json!({"text": "완료 🎉", "severity": "error", "payload": {"who": "민수"}, "to": ["tmpl"]}))
        .await;
    h.wait_status(&id, "delivered", WAIT).await;
    let m = &sink.mails()[0];
    assert_eq!(m.text().as_deref(), Some("[error] 완료 🎉 — tmpl"));
    assert_eq!(m.html().as_deref(), Some("<p>민수님, 완료 🎉</p>"));
    assert_eq!(
        m.subject().as_deref(),
        Some("완료 🎉"),
        "first line of the text"
    );

    let id = h
        .send_one(json!({"text": "텍스트만", "to": ["textonly"]}))
        .await;
    h.wait_status(&id, "delivered", WAIT).await;
    let m = &sink.mails()[1];
    assert_eq!(m.text().as_deref(), Some("텍스트만 ✉️"));
    assert_eq!(m.html(), None, "a text template alone sends text only");
    assert!(!m.raw_text().contains("multipart"));

    let id = h
        .send_one(json!({"text": "x", "to": ["plain"], "channels": {"email": {
            "subject": "직접 정한 제목 ✍️", "html": "<h1>직접 🎨</h1>", "text": "직접 쓴 본문"}}}))
        .await;
    h.wait_status(&id, "delivered", WAIT).await;
    let m = &sink.mails()[2];
    assert_eq!(m.subject().as_deref(), Some("직접 정한 제목 ✍️"));
    assert_eq!(m.html().as_deref(), Some("<h1>직접 🎨</h1>"));
    assert_eq!(m.text().as_deref(), Some("직접 쓴 본문"));
}
