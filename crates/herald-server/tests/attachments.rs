//! Attachment stories, end to end: a real Herald accepting files (inline base64 or fetched
//! once from a URL), storing them with the message, serving them back, and delivering them
//! to loopback fakes that take uploads as the providers do and to a real SMTP server.

use base64::Engine;
use herald_testkit::herald::{TestHerald, fast_retry};
use herald_testkit::mime::{self, field};
use herald_testkit::providers::{discord, slack_api, slack_webhook, telegram};
use herald_testkit::receiver::{FakeReceiver, Received, Reply};
use herald_testkit::smtp::SmtpSink;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

/// A PNG signature followed by every byte value (CR, LF, NUL included): any re-encoding
/// on the way would show.
fn png() -> Vec<u8> {
    let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
    b.extend(0..=255u8);
    b
}

const CSV: &str = "날짜,행 수\r\n2026-12-01,1200\r\n";
const CSV_NAME: &str = "주간 보고서.csv";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A Herald with one destination.
async fn herald_with(name: &str, spec: Value) -> TestHerald {
    let h = TestHerald::start().await;
    h.put_destination(name, spec).await;
    h
}

/// The chart (as `data`) and the Korean-named CSV report.
fn chart_and_report() -> Value {
    json!([
        {"filename": "chart.png", "content_type": "image/png", "data": b64(&png())},
        {"filename": CSV_NAME, "content_type": "text/csv", "data": b64(CSV.as_bytes())}
    ])
}

/// The delivery of an accepted message to one destination.
fn delivery_to(accepted: &Value, destination: &str) -> String {
    accepted["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["destination"] == destination)
        .and_then(|d| d["id"].as_str())
        .unwrap_or_else(|| panic!("no delivery to {destination}: {accepted}"))
        .to_string()
}

/// What attempt `n` recorded (its excerpt), checked to mention every one of `needles`.
fn attempt_note(delivery: &Value, n: usize, needles: &[&str]) -> String {
    let excerpt = delivery["attempts"][n]["response_excerpt"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for needle in needles {
        assert!(excerpt.contains(needle), "{needle:?} not in {excerpt}");
    }
    excerpt
}

fn requests_to<'a>(all: &'a [Received], method: &str) -> Vec<&'a Received> {
    all.iter().filter(|r| r.path.ends_with(method)).collect()
}

/// The Airflow story: one message with a PNG chart (shown inline) and a CSV report reaches
/// Slack as uploaded files shared with the message, and email as an inline image and an
/// attachment — and both files can be downloaded back from Herald byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chart_and_a_report_reach_slack_and_email_as_native_files() {
    let slack = FakeReceiver::start().await;
    slack_api::serve_uploads(&slack);
    let sink = SmtpSink::start().await;
    let h = herald_with(
        "slack",
        json!({"kind": "slack", "token": "xoxb-test-token", "channel": "C0123456789",
               "api_base": slack.url("/api"), "retry": fast_retry()}),
    )
    .await;
    h.put_destination(
        "mail",
        json!({"kind": "email", "smtp_url": format!("smtp://{}?tls=none", sink.addr),
               "from": "herald@example.com", "to": ["data@example.com"], "retry": fast_retry()}),
    )
    .await;

    let accepted = h
        .send(json!({
            "event_type": "airflow.report", "title": "일일 매출 리포트", "text": "차트와 CSV를 첨부합니다",
            "to": ["slack", "mail"],
            "attachments": [
                {"filename": "chart.png", "content_type": "image/png", "data": b64(&png()), "inline": true},
                {"filename": CSV_NAME, "content_type": "text/csv", "data": b64(CSV.as_bytes())}
            ]
        }))
        .await;
    let id = accepted["id"].as_str().unwrap().to_string();
    let slack_d = h
        .wait_status(&delivery_to(&accepted, "slack"), "delivered", WAIT)
        .await;
    h.wait_status(&delivery_to(&accepted, "mail"), "delivered", WAIT)
        .await;

    // Slack: two uploads announced with their names and sizes, the bytes posted to the
    // upload URLs Slack gave, then one share of both files with the message's blocks.
    let got = slack.received();
    let asks = requests_to(&got, "/files.getUploadURLExternal");
    assert_eq!(asks.len(), 2);
    let ask_args: Vec<_> = asks.iter().map(|r| slack_api::args(r)).collect();
    assert_eq!(ask_args[0]["filename"], "chart.png");
    assert_eq!(ask_args[0]["length"], png().len().to_string());
    assert_eq!(ask_args[1]["filename"], CSV_NAME);
    assert_eq!(ask_args[1]["length"], CSV.len().to_string());
    assert_eq!(
        asks[0].header("authorization"),
        Some("Bearer xoxb-test-token")
    );
    let uploads: Vec<_> = got
        .iter()
        .filter(|r| r.path.starts_with("/upload/"))
        .collect();
    assert_eq!(uploads.len(), 2);
    assert_eq!(uploads[0].body.as_ref(), png().as_slice());
    assert_eq!(uploads[1].body.as_ref(), CSV.as_bytes());
    let completes = requests_to(&got, "/files.completeUploadExternal");
    assert_eq!(
        completes.len(),
        1,
        "one share: the message and its files are one post"
    );
    let args = slack_api::args(completes[0]);
    assert_eq!(args["channel_id"], "C0123456789");
    let files: Value = serde_json::from_str(&args["files"]).unwrap();
    assert_eq!(
        files,
        json!([{"id": "F0000000001", "title": "chart.png"}, {"id": "F0000000002", "title": CSV_NAME}])
    );
    let blocks: Value = serde_json::from_str(&args["blocks"]).unwrap();
    assert_eq!(blocks[0]["text"]["text"], "ℹ️ 일일 매출 리포트");
    assert!(
        requests_to(&got, "/chat.postMessage").is_empty(),
        "no separate post"
    );
    attempt_note(
        &slack_d,
        0,
        &["2 file(s) uploaded and shared in C0123456789"],
    );

    // Email: text and HTML alternatives, the chart inline in a multipart/related with
    // the HTML that references its Content-ID, the CSV attached with its Korean name.
    let mail = &sink.mails()[0];
    let parts = mail.parts();
    let chart = parts
        .iter()
        .find(|p| p.content_type == "image/png")
        .expect("the chart");
    assert_eq!(chart.parent, "multipart/related");
    assert_eq!(chart.disposition.as_deref(), Some("inline"));
    assert_eq!(chart.bytes, png());
    let cid = chart.content_id.clone().expect("a Content-ID");
    assert_eq!(cid, format!("att0.{id}@herald"));
    let html = mail.html().expect("an HTML part");
    assert!(html.contains(&format!("src=\"cid:{cid}\"")), "{html}");
    let csv = parts
        .iter()
        .find(|p| p.content_type == "text/csv")
        .expect("the CSV");
    assert_eq!(csv.disposition.as_deref(), Some("attachment"));
    assert_eq!(csv.filename.as_deref(), Some(CSV_NAME));
    assert_eq!(csv.parent, "multipart/mixed");
    assert_eq!(csv.bytes, CSV.as_bytes());
    let raw = mail.raw_text();
    assert!(
        raw.contains("filename*=utf-8''") || raw.contains("filename*0*=utf-8''"),
        "the Korean filename is RFC 2231-encoded: {raw}"
    );
    assert!(mail.text().unwrap().contains("차트와 CSV를 첨부합니다"));

    // Download: the bytes as sent, the declared type, the filename per RFC 6266/5987.
    let resp = h
        .http
        .get(h.url(&format!("/api/v1/messages/{id}/attachments/1")))
        .bearer_auth(&h.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(header("content-type"), "text/csv");
    assert_eq!(
        header("content-disposition"),
        "attachment; filename=\"__ ___.csv\"; filename*=UTF-8''%EC%A3%BC%EA%B0%84%20%EB%B3%B4%EA%B3%A0%EC%84%9C.csv"
    );
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), CSV.as_bytes());

    // The message view lists the files without their bytes.
    let (_, view) = h
        .call(Method::GET, &format!("/api/v1/messages/{id}"), None)
        .await;
    let listed = &view["attachments"][0];
    assert_eq!(listed["filename"], "chart.png");
    assert_eq!(listed["size"], png().len());
    assert_eq!(
        listed["download"],
        format!("/api/v1/messages/{id}/attachments/0")
    );
    assert!(listed.get("data").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_need_the_read_scope_and_unknown_ones_are_404_problems() {
    let h = herald_with(
        "hook",
        json!({"kind": "webhook", "url": "http://127.0.0.1:9/none"}),
    )
    .await;
    let accepted = h
        .send(json!({"text": "x", "to": ["hook"], "attachments": [
            {"filename": "a.txt", "content_type": "text/plain", "data": b64(b"hello")}]}))
        .await;
    let id = accepted["id"].as_str().unwrap();
    for path in [
        format!("/api/v1/messages/{id}/attachments/1"),
        format!("/api/v1/messages/{id}/attachments/-1"),
        format!("/api/v1/messages/{id}/attachments/x"),
        "/api/v1/messages/msg_00000000000000000000000000000000/attachments/0".to_string(),
        "/api/v1/messages/nope/attachments/0".to_string(),
    ] {
        let resp = h
            .http
            .get(h.url(&path))
            .bearer_auth(&h.token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
    let (_, spec) = h.call(Method::GET, "/api/openapi.json", None).await;
    let op = &spec["paths"]["/api/v1/messages/{id}/attachments/{n}"]["get"];
    assert_eq!(
        op["responses"]["200"]["content"]["*/*"]["schema"],
        json!({"type": "string", "format": "binary"})
    );
    assert!(op["responses"]["404"]["content"]["application/problem+json"].is_object());
    let (status, _) = h
        .call_as(
            "hrld_nope",
            Method::GET,
            &format!("/api/v1/messages/{id}/attachments/0"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_checked_and_named_safely_before_they_are_stored() {
    let h = herald_with(
        "hook",
        json!({"kind": "webhook", "url": "http://127.0.0.1:9/none"}),
    )
    .await;
    let send = |att: Value| {
        h.call(
            Method::POST,
            "/api/v1/messages",
            Some(json!({"text": "x", "to": ["hook"], "attachments": [att]})),
        )
    };
    // A PDF declared as a PNG, and a "PNG" that is text.
    let (status, body) = send(
        json!({"filename": "a.png", "content_type": "image/png", "data": b64(b"%PDF-1.7 ...")}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["field"], "attachments[0].data");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("application/pdf"),
        "{body}"
    );
    let (status, _) =
        send(json!({"filename": "a.png", "content_type": "image/png", "data": b64(b"just text")}))
            .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // A name with a path and a right-to-left override is cut down to a safe one.
    let (status, body) = send(json!({"filename": "../../etc/\u{202e}vsc.exe", "content_type": "text/csv", "data": b64(b"a,b")})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().unwrap();
    let (_, view) = h
        .call(Method::GET, &format!("/api/v1/messages/{id}"), None)
        .await;
    assert_eq!(view["attachments"][0]["filename"], "vsc.exe");
    let (status, body) =
        send(json!({"filename": "/../", "content_type": "text/csv", "data": b64(b"a")})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["field"], "attachments[0].filename");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_file_and_total_caps_are_configurable() {
    let h = TestHerald::start_with(|c| {
        c.max_attachment_file_bytes = 4;
        c.max_attachment_bytes = 6;
    })
    .await;
    h.put_destination(
        "hook",
        json!({"kind": "webhook", "url": "http://127.0.0.1:9/none"}),
    )
    .await;
    let att =
        |data: &[u8]| json!({"filename": "a.txt", "content_type": "text/plain", "data": b64(data)});
    let (status, body) = h
        .call(
            Method::POST,
            "/api/v1/messages",
            Some(json!({"text": "x", "to": ["hook"], "attachments": [att(b"12345")]})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("per-attachment limit of 4")
    );
    let (status, body) = h
        .call(
            Method::POST,
            "/api/v1/messages",
            Some(json!({"text": "x", "to": ["hook"], "attachments": [att(b"1234"), att(b"1234")]})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("limit of 6"),
        "{body}"
    );
    // A URL's file counts against what the data attachments left: 6 - 4 = 2 bytes.
    let files = FakeReceiver::start().await;
    files.set_default(Reply::status(200).body("abc"));
    let (status, body) = h
        .call(
            Method::POST,
            "/api/v1/messages",
            Some(
                json!({"text": "x", "to": ["hook"], "attachments": [att(b"1234"),
                {"filename": "b.txt", "content_type": "text/plain", "url": files.url("/b.txt")}]}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["field"], "attachments[1].url");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("over the limit of 2 bytes"),
        "{body}"
    );
}

/// A `url` attachment is fetched once, when the message is accepted, and stored: no
/// attempt downloads it again, and the webhook carries the stored bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_attachments_are_fetched_once_at_acceptance_and_stored() {
    let files = FakeReceiver::start().await;
    files.push(
        Reply::status(200)
            .header("content-type", "image/png")
            .bytes(png()),
    );
    let hook = FakeReceiver::start().await;
    hook.push(Reply::status(503));
    let h = herald_with(
        "hook",
        json!({"kind": "webhook", "url": hook.url("/hook"), "retry": fast_retry()}),
    )
    .await;
    let url = files.url("/charts/day.png?sig=abc");
    let id = h
        .send_one(json!({"text": "x", "to": ["hook"], "attachments": [
            {"filename": "day.png", "content_type": "image/png", "url": url}]}))
        .await;
    assert_eq!(files.count(), 1, "fetched while accepting");
    h.wait_status(&id, "delivered", WAIT).await;
    assert_eq!(
        files.count(),
        1,
        "never fetched again, not even by the retry"
    );
    let body = hook.received()[1].json();
    assert_eq!(body["attachments"][0]["url"], url);
    assert_eq!(body["attachments"][0]["data"], b64(&png()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_that_cannot_be_fetched_is_a_clear_422() {
    let files = FakeReceiver::start().await;
    files.push(Reply::status(404));
    files.push(Reply::status(302).header("location", "/elsewhere"));
    files.push(Reply::status(200).body("<html>not a png</html>"));
    let h = herald_with(
        "hook",
        json!({"kind": "webhook", "url": "http://127.0.0.1:9/none"}),
    )
    .await;
    let send = |url: String| {
        h.call(
            Method::POST,
            "/api/v1/messages",
            Some(json!({"text": "x", "to": ["hook"], "attachments": [
                {"filename": "a.png", "content_type": "image/png", "url": url}]})),
        )
    };
    for expected in [
        "HTTP 404",
        "redirects are not followed",
        "the content is not image/png",
    ] {
        let (status, body) = send(files.url("/a.png")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["errors"][0]["field"], "attachments[0].url");
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{expected}: {message}");
    }

    // A send token learns only that the URL could not be fetched: why (an HTTP status, a
    // DNS answer for an internal name) goes to the server log.
    let sender = h.token("app", &["send"]).await;
    files.push(Reply::status(404));
    let (status, body) = h
        .call_as(
            &sender,
            Method::POST,
            "/api/v1/messages",
            Some(json!({"text": "x", "to": ["hook"], "attachments": [
                {"filename": "a.png", "content_type": "image/png", "url": files.url("/a.png")}]})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["errors"][0]["field"], "attachments[0].url");
    assert_eq!(
        body["errors"][0]["message"], "could not fetch the attachment URL",
        "{body}"
    );
    assert!(!body.to_string().contains("404"), "{body}");
}

/// With the default SSRF policy a loopback URL is refused before any connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_attachment_behind_the_ssrf_guard_is_refused() {
    let files = FakeReceiver::start().await;
    let h = TestHerald::start_with(|c| c.allow_networks = String::new()).await;
    h.put_destination(
        "hook",
        json!({"kind": "webhook", "url": "https://hooks.example.com/x"}),
    )
    .await;
    let (status, body) = h
        .call(
            Method::POST,
            "/api/v1/messages",
            Some(json!({"text": "x", "to": ["hook"], "attachments": [
                {"filename": "a.png", "content_type": "image/png", "url": files.url("/a.png")}]})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("SSRF"),
        "{body}"
    );
    assert_eq!(files.count(), 0);
}

/// An incoming webhook cannot upload: pictures with a public URL become `image` blocks,
/// other files are listed, and the attempt says they were not uploaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_incoming_webhook_shows_pictures_and_lists_other_files() {
    let files = FakeReceiver::start().await;
    files.push(Reply::status(200).bytes(png()));
    let slack = FakeReceiver::start().await;
    slack.set_default(slack_webhook::ok());
    let h = herald_with(
        "slack",
        json!({"kind": "slack", "url": slack.url("/services/T/B/x")}),
    )
    .await;
    let chart = files.url("/chart.png");
    let id = h
        .send_one(
            json!({"title": "리포트", "text": "첨부", "to": ["slack"], "attachments": [
            {"filename": "chart.png", "content_type": "image/png", "url": chart},
            {"filename": CSV_NAME, "content_type": "text/csv", "data": b64(CSV.as_bytes())}]}),
        )
        .await;
    let d = h.wait_status(&id, "delivered", WAIT).await;
    let body = slack.received()[0].json();
    let blocks = body["blocks"].as_array().unwrap();
    let image = blocks
        .iter()
        .find(|b| b["type"] == "image")
        .expect("an image block");
    assert_eq!(image["image_url"], chart);
    assert_eq!(image["alt_text"], "chart.png");
    let listed = blocks
        .iter()
        .filter_map(|b| b["text"]["text"].as_str())
        .find(|t| t.contains(":paperclip:"))
        .expect("the CSV listed");
    assert!(
        listed.contains(CSV_NAME) && listed.contains("text/csv"),
        "{listed}"
    );
    assert_eq!(blocks.last().unwrap()["type"], "context");
    attempt_note(&d, 0, &["incoming webhooks cannot upload files", CSV_NAME]);
}

/// Each upload step is classified as Slack answers it; a failed share retries, and the
/// retry uploads again (uploads are invisible until shared) and shares once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_upload_steps_are_classified_per_step() {
    let slack = FakeReceiver::start().await;
    slack_api::serve_uploads(&slack);
    let h = herald_with(
        "slack",
        json!({"kind": "slack", "token": "xoxb-t", "channel": "C0123456789",
               "api_base": slack.url("/api"), "retry": fast_retry()}),
    )
    .await;
    let message = json!({"text": "x", "to": ["slack"], "attachments": [
        {"filename": "r.csv", "content_type": "text/csv", "data": b64(b"a,b")}]});

    slack.push_for(
        "/files.getUploadURLExternal",
        slack_api::error("file_uploads_disabled"),
    );
    let id = h.send_one(message.clone()).await;
    let d = h.wait_status(&id, "dead", WAIT).await;
    assert_eq!(d["attempt_count"], 1, "a permanent code is not retried");
    let error = d["attempts"][0]["error"].as_str().unwrap();
    assert!(
        error.starts_with("files.getUploadURLExternal: Slack error file_uploads_disabled"),
        "{error}"
    );
    assert!(requests_to(&slack.received(), "/files.completeUploadExternal").is_empty());

    slack.push_for(
        "/files.completeUploadExternal",
        slack_api::error("internal_error"),
    );
    let before = slack.received().len();
    let id = h.send_one(message).await;
    let d = h.wait_status(&id, "delivered", WAIT).await;
    assert_eq!(d["attempt_count"], 2);
    assert_eq!(d["attempts"][0]["outcome"], "retry");
    let error = d["attempts"][0]["error"].as_str().unwrap();
    assert!(
        error.starts_with("files.completeUploadExternal: Slack error internal_error"),
        "{error}"
    );
    let got = slack.received()[before..].to_vec();
    assert_eq!(requests_to(&got, "/files.getUploadURLExternal").len(), 2);
    assert_eq!(requests_to(&got, "/files.completeUploadExternal").len(), 2);
}

/// Serves the chart for `url` attachments.
async fn file_server() -> FakeReceiver {
    let files = FakeReceiver::start().await;
    files.set_default(Reply::status(200).bytes(png()));
    files
}

/// Discord takes `payload_json` and `files[n]` in one multipart request; what does not
/// fit the upload limit is listed in `content` and named in the attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_uploads_files_as_multipart_within_the_limit() {
    let discord = FakeReceiver::start().await;
    discord::serve_webhook(&discord, 280);
    let h = herald_with("discord", json!({"kind": "discord", "url": discord.url("/api/webhooks/1/tok"), "max_upload_bytes": 280})).await;
    let id = h
        .send_one(
            json!({"title": "리포트", "text": "첨부", "to": ["discord"], "attachments": chart_and_report()}),
        )
        .await;
    let d = h.wait_status(&id, "delivered", WAIT).await;
    let parts = mime::form_data(&discord.received()[0]);
    let payload: Value = serde_json::from_slice(&field(&parts, "payload_json").bytes).unwrap();
    assert_eq!(
        payload["attachments"],
        json!([{"id": 0, "filename": "chart.png"}])
    );
    assert_eq!(payload["embeds"][0]["title"], "ℹ️ 리포트");
    assert_eq!(payload["allowed_mentions"], json!({"parse": []}));
    let chart = field(&parts, "files[0]");
    assert_eq!(chart.filename.as_deref(), Some("chart.png"));
    assert_eq!(chart.content_type, "image/png");
    assert_eq!(chart.bytes, png());
    assert_eq!(
        parts.iter().filter(|p| p.filename.is_some()).count(),
        1,
        "the CSV is over the 280-byte limit"
    );
    let content = payload["content"].as_str().unwrap();
    assert!(
        content.contains(CSV_NAME) && content.contains("not uploaded"),
        "{content}"
    );
    attempt_note(&d, 0, &["discord", CSV_NAME]);
}

/// Telegram: a picture by `sendPhoto` with the text as caption, other files by
/// `sendDocument`, each multipart; a Korean filename arrives intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_sends_photos_and_documents_with_the_text_as_caption() {
    let tg = FakeReceiver::start().await;
    telegram::serve_bot(&tg);
    let h = herald_with(
        "tg",
        json!({"kind": "telegram", "token": "123:abc", "chat_id": -100123, "api_base": tg.url("")}),
    )
    .await;
    let id = h
        .send_one(
            json!({"title": "리포트", "text": "차트 <첨부>", "to": ["tg"], "attachments": chart_and_report()}),
        )
        .await;
    let d = h.wait_status(&id, "delivered", WAIT).await;
    let got = tg.received();
    let paths: Vec<&str> = got.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/bot123:abc/sendPhoto", "/bot123:abc/sendDocument"]);
    let photo = mime::form_data(&got[0]);
    assert_eq!(field(&photo, "chat_id").text(), "-100123");
    assert_eq!(field(&photo, "photo").bytes, png());
    let caption = field(&photo, "caption").text();
    assert!(
        caption.starts_with("<b>ℹ️ 리포트</b>\n\n차트 &lt;첨부&gt;"),
        "{caption}"
    );
    assert_eq!(field(&photo, "parse_mode").text(), "HTML");
    let doc = mime::form_data(&got[1]);
    let csv = field(&doc, "document");
    assert_eq!(csv.filename.as_deref(), Some(CSV_NAME));
    assert_eq!(csv.bytes, CSV.as_bytes());
    assert!(doc.iter().all(|p| p.name.as_deref() != Some("caption")));
    let excerpt = attempt_note(
        &d,
        0,
        &["telegram: sent sendPhoto chart.png, sendDocument 주간 보고서.csv"],
    );
    assert!(!excerpt.contains("123:abc"), "the token stays out");
}

/// A text over the caption limit goes first as a message; a failed file is retried
/// alone, without repeating what was already sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_retries_only_the_files_not_yet_sent() {
    let tg = FakeReceiver::start().await;
    telegram::serve_bot(&tg);
    tg.push_for("/sendDocument", Reply::status(502));
    let h = herald_with(
        "tg",
        json!({"kind": "telegram", "token": "123:abc", "chat_id": 42, "api_base": tg.url(""),
               "retry": fast_retry()}),
    )
    .await;
    let long = "긴 본문 ".repeat(300);
    let id = h
        .send_one(json!({"text": long, "to": ["tg"], "attachments": [
            {"filename": "chart.png", "content_type": "image/png", "data": b64(&png())},
            {"filename": "r.csv", "content_type": "text/csv", "data": b64(b"a,b")}]}))
        .await;
    let d = h.wait_status(&id, "delivered", WAIT).await;
    assert_eq!(d["attempt_count"], 2);
    let error = d["attempts"][0]["error"].as_str().unwrap();
    assert!(error.starts_with("sendDocument r.csv: HTTP 502"), "{error}");
    let paths: Vec<String> = tg
        .received()
        .iter()
        .map(|r| r.path.rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(
        paths,
        ["sendMessage", "sendPhoto", "sendDocument", "sendDocument"],
        "the retry sends only the document"
    );
    let text: Value = tg.received()[0].json();
    assert!(text["text"].as_str().unwrap().contains("긴 본문"));
    let photo = mime::form_data(&tg.received()[1]);
    assert!(photo.iter().all(|p| p.name.as_deref() != Some("caption")));
    attempt_note(
        &d,
        1,
        &["already sent by an earlier attempt, not repeated: the text, sendPhoto chart.png"],
    );
}

/// Teams: a picture with a URL is an `Image` element; a file without one is named, and
/// the attempt says it was not sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teams_shows_pictures_by_url_and_names_other_files() {
    let files = file_server().await;
    let teams = FakeReceiver::start().await;
    teams.set_default(Reply::status(202));
    let h = herald_with(
        "teams",
        json!({"kind": "teams", "url": teams.url("/workflows/x")}),
    )
    .await;
    let chart = files.url("/chart.png");
    let id = h
        .send_one(json!({"title": "리포트", "to": ["teams"], "attachments": [
            {"filename": "chart.png", "content_type": "image/png", "url": chart},
            {"filename": CSV_NAME, "content_type": "text/csv", "data": b64(CSV.as_bytes())}]}))
        .await;
    let d = h.wait_status(&id, "delivered", WAIT).await;
    let card = &teams.received()[0].json()["attachments"][0]["content"];
    let body = card["body"].as_array().unwrap();
    let image = body
        .iter()
        .find(|e| e["type"] == "Image")
        .expect("an Image");
    assert_eq!(image["url"], chart);
    assert_eq!(image["altText"], "chart.png");
    assert!(body.iter().any(|e| {
        e["text"]
            .as_str()
            .is_some_and(|t| t.contains(CSV_NAME) && t.contains("not attached"))
    }));
    assert!(
        body.last().unwrap()["text"]
            .as_str()
            .unwrap()
            .contains(&d["message_id"].as_str().unwrap().to_string())
    );
    attempt_note(&d, 0, &["teams: files are not uploaded", CSV_NAME]);
}

/// SMS: a file with a public URL is an MMS `MediaUrl`; one without is named in the text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_sends_media_urls_and_names_the_rest() {
    let files = file_server().await;
    let twilio = FakeReceiver::start().await;
    twilio.set_default(herald_testkit::providers::twilio::created());
    let h = TestHerald::start().await;
    let sid = format!("AC{}", "0".repeat(32));
    h.put_destination(
        "sms",
        json!({"kind": "sms", "account_sid": sid, "auth_token": "t", "from": "+15005550006",
               "to": "+821012345678", "api_base": twilio.url("")}),
    )
    .await;
    let chart = files.url("/chart.png");
    let id = h
        .send_one(json!({"text": "경보", "to": ["sms"], "attachments": [
            {"filename": "chart.png", "content_type": "image/png", "url": chart},
            {"filename": CSV_NAME, "content_type": "text/csv", "data": b64(CSV.as_bytes())}]}))
        .await;
    let d = h.wait_status(&id, "delivered", WAIT).await;
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&twilio.received()[0].body)
        .into_owned()
        .collect();
    let get = |k: &str| {
        form.iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(get("MediaUrl"), [chart]);
    assert_eq!(get("Body"), [format!("경보\n[files not sent: {CSV_NAME}]")]);
    attempt_note(&d, 0, &["1 MediaUrl(s) sent", CSV_NAME]);
}

/// Webhooks carry attachments (base64) unless `omit_attachments`; the `http` kind only
/// with `include_attachments`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_and_http_bodies_carry_or_omit_attachments_by_option() {
    let rx = FakeReceiver::start().await;
    let h = TestHerald::start().await;
    for (name, spec) in [
        ("hook", json!({"kind": "webhook", "url": rx.url("/hook")})),
        (
            "bare",
            json!({"kind": "webhook", "url": rx.url("/bare"), "omit_attachments": true}),
        ),
        (
            "api",
            json!({"kind": "http", "url": rx.url("/api"), "include_attachments": true}),
        ),
        ("plain", json!({"kind": "http", "url": rx.url("/plain")})),
    ] {
        h.put_destination(name, spec).await;
    }
    h.send(json!({"text": "x", "payload": {"k": 1}, "to": ["hook", "bare", "api", "plain"],
                  "attachments": [{"filename": CSV_NAME, "content_type": "text/csv", "data": b64(CSV.as_bytes())}]}))
        .await;
    let got = rx.wait_for(4, WAIT).await;
    let body = |path: &str| got.iter().find(|r| r.path == path).unwrap().json();
    let expected =
        json!([{"filename": CSV_NAME, "content_type": "text/csv", "data": b64(CSV.as_bytes())}]);
    assert_eq!(body("/hook")["attachments"], expected);
    assert!(body("/bare").get("attachments").is_none());
    assert_eq!(body("/api"), json!({"k": 1, "attachments": expected}));
    assert_eq!(body("/plain"), json!({"k": 1}));
}

/// `files.completeUploadExternal` needs a channel id: with a channel name the message is
/// posted first and the files shared right after it, to the id Slack answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_with_a_channel_name_posts_then_shares_to_the_answered_id() {
    let slack = FakeReceiver::start().await;
    slack_api::serve_uploads(&slack);
    let h = herald_with(
        "slack",
        json!({"kind": "slack", "token": "xoxb-t", "channel": "#data-reports",
               "api_base": slack.url("/api")}),
    )
    .await;
    let id = h
        .send_one(json!({"text": "리포트", "to": ["slack"], "attachments": [
            {"filename": CSV_NAME, "content_type": "text/csv", "data": b64(CSV.as_bytes())}]}))
        .await;
    let d = h.wait_status(&id, "delivered", WAIT).await;
    let got = slack.received();
    let methods: Vec<&str> = got
        .iter()
        .map(|r| r.path.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(
        methods,
        [
            "chat.postMessage",
            "files.getUploadURLExternal",
            "F0000000001",
            "files.completeUploadExternal"
        ]
    );
    assert_eq!(got[0].json()["channel"], "#data-reports");
    let share = slack_api::args(&got[3]);
    assert_eq!(share["channel_id"], "C0123456789");
    assert!(!share.contains_key("blocks") && !share.contains_key("initial_comment"));
    attempt_note(&d, 0, &["shared in C0123456789 after the message"]);
}

/// A custom HTML part shows a picture inline only where it references its Content-ID;
/// a text-only email attaches every file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_inline_pictures_follow_the_html_that_references_them() {
    let sink = SmtpSink::start().await;
    let h = TestHerald::start().await;
    let smtp = format!("smtp://{}?tls=none", sink.addr);
    h.put_destination(
        "mail",
        json!({"kind": "email", "smtp_url": smtp, "from": "h@example.com", "to": ["a@example.com"],
               "html_template": "<p>{{ text }}</p><img src=\"cid:att1.{{ id }}@herald\">"}),
    )
    .await;
    h.put_destination(
        "plain",
        json!({"kind": "email", "smtp_url": smtp, "from": "h@example.com", "to": ["b@example.com"],
               "template": "{{ text }}"}),
    )
    .await;
    let pic = |name: &str| json!({"filename": name, "content_type": "image/png", "data": b64(&png()), "inline": true});
    let accepted = h
        .send(json!({"text": "차트", "to": ["mail", "plain"], "attachments": [pic("a.png"), pic("b.png")]}))
        .await;
    for name in ["mail", "plain"] {
        h.wait_status(&delivery_to(&accepted, name), "delivered", WAIT)
            .await;
    }
    let mails = sink.mails();
    let by_rcpt = |r: &str| mails.iter().find(|m| m.to == [r]).unwrap().parts();
    let html_mail = by_rcpt("a@example.com");
    let find = |parts: &[mime::Part], f: &str| {
        parts
            .iter()
            .find(|p| p.filename.as_deref() == Some(f))
            .cloned()
            .unwrap()
    };
    let (a, b) = (find(&html_mail, "a.png"), find(&html_mail, "b.png"));
    assert_eq!(
        a.disposition.as_deref(),
        Some("attachment"),
        "not referenced"
    );
    assert_eq!(a.parent, "multipart/mixed");
    assert_eq!(b.disposition.as_deref(), Some("inline"));
    assert_eq!(b.parent, "multipart/related");
    let text_mail = by_rcpt("b@example.com");
    assert!(text_mail.iter().all(|p| p.content_type != "text/html"));
    for f in ["a.png", "b.png"] {
        let p = find(&text_mail, f);
        assert_eq!(
            (p.disposition.as_deref(), p.bytes),
            (Some("attachment"), png())
        );
    }
}
