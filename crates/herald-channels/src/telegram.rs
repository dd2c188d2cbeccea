//! The `telegram` kind: Bot API `sendMessage` (and `sendPhoto`/`sendDocument` for files).
//!
//! Sends `POST {api_base}/bot<token>/sendMessage` with `{"chat_id", "text", "parse_mode":
//! "HTML"}`. The default text is the title in bold with the severity emoji, the text, the
//! payload's scalar values as `key: value` lines and the event type and message id in
//! italics, with `&`, `<` and `>` escaped. Telegram takes 4096 characters: Herald
//! **truncates** (with a visible marker) rather than splitting into several messages, so
//! an attempt without files is always one request and a retry never repeats half a
//! message. A message's `channels.telegram.html` is sent as given (it must already be
//! Telegram HTML; over 4096 characters, markup included, it is a permanent `override`
//! error). Otherwise a destination
//! `template` renders the whole JSON body (`chat_id` is added when it has none).
//!
//! Attachments: each file is one multipart request, `sendPhoto` for PNG, JPEG and WebP
//! pictures up to 10 MB and `sendDocument` for everything else (Telegram takes documents
//! up to 50 MB). The text is the first file's `caption` when it fits Telegram's 1024
//! characters (markup counted); a longer text is sent first with `sendMessage`. Requests
//! that succeeded are remembered in memory, so a retry sends only the rest (after a restart
//! it starts over and may repeat them); the attempt lists what was sent and what an earlier
//! attempt had sent.
//!
//! Answers: 200 `{"ok":true}` delivered; `parameters.retry_after` (a 429) retries after it
//! and pauses the destination; a 400 with `parameters.migrate_to_chat_id` (the group became
//! a supergroup) is sent again once, in the same attempt, to the new chat id, and the new id
//! is recorded in the attempt so the operator can update `chat_id`; 401, 403 (`bot was
//! blocked by the user`), other 400 and other 4xx permanent; 5xx retry.
//!
//! The bot token is part of the URL path: it is kept out of every error, log line and
//! response excerpt.

use crate::files::{File, Multipart, files, step_error, with_note};
use crate::render::{
    Escape, escape_truncate, footer, override_error, override_str, overrides, payload_fields,
    severity_emoji, template_json, text_of, title_of, units,
};
use crate::response::{
    HttpAnswer, Outgoing, classify_http, seconds, send as send_http, with_detail,
};
use crate::{Attempt, Channels};
use herald_core::delivery::{ErrorClass, SendReport, Verdict};
use herald_core::destination::{ChatId, TelegramSpec};
use herald_core::message::Message;
use serde_json::{Map, Value, json};

pub const DEFAULT_API_BASE: &str = "https://api.telegram.org";
/// `sendMessage` text limit (after entity parsing; Herald counts the markup too).
pub const MAX_TEXT: usize = 4096;
const MAX_TITLE: usize = 256;
const MAX_FIELDS: usize = 10;
const MAX_FIELD: usize = 300;

/// The default HTML text.
pub fn render(message: &Message) -> String {
    let emoji = severity_emoji(message.body.severity);
    let heading = title_of(message).map(|t| {
        format!(
            "<b>{emoji} {}</b>",
            escape_truncate(t, MAX_TITLE, Escape::Html)
        )
    });
    let foot = format!("<i>{}</i>", Escape::Html.apply(&footer(message)));
    let sep = "\n\n";
    let fixed = heading.as_deref().map_or(0, |h| units(h) + units(sep)) + units(&foot);
    let mut parts: Vec<String> = heading.into_iter().collect();
    let text = text_of(message).or(if parts.is_empty() {
        Some(message.event_type.as_str())
    } else {
        None
    });
    if let Some(t) = text {
        let prefix = if parts.is_empty() {
            format!("{emoji} ")
        } else {
            String::new()
        };
        let room = MAX_TEXT - fixed - units(sep) - units(&prefix);
        parts.push(format!(
            "{prefix}{}",
            escape_truncate(t, room, Escape::Html)
        ));
    }
    // Fields take what the text left; the ones that do not fit are left out.
    let mut used = parts.iter().map(|p| units(p) + units(sep)).sum::<usize>() + units(&foot);
    let mut lines = Vec::new();
    for (k, v) in payload_fields(message, MAX_FIELDS) {
        let line = format!(
            "<b>{}</b>: {}",
            escape_truncate(k, 64, Escape::Html),
            escape_truncate(&v, MAX_FIELD, Escape::Html)
        );
        let need = units(&line) + if lines.is_empty() { units(sep) } else { 1 };
        if used + need > MAX_TEXT {
            break;
        }
        used += need;
        lines.push(line);
    }
    if !lines.is_empty() {
        parts.push(lines.join("\n"));
    }
    parts.push(foot);
    parts.join(sep)
}

fn body(
    ch: &Channels,
    t: &TelegramSpec,
    a: &Attempt<'_>,
) -> Result<Map<String, Value>, SendReport> {
    let html = override_str(overrides(a.message, "telegram")?, "telegram", "html")?;
    let mut body = match (html, &t.template) {
        (Some(html), _) if units(html) > MAX_TEXT => {
            return Err(override_error(format!(
                "channels.telegram.html is {} characters; Telegram takes {MAX_TEXT}",
                units(html)
            )));
        }
        (None, Some(src)) => template_json(ch, src, a, "telegram")?,
        (html, _) => {
            let mut b = Map::new();
            let text = html.map_or_else(|| render(a.message), str::to_string);
            b.insert("text".into(), json!(text));
            b.insert("parse_mode".into(), json!("HTML"));
            b
        }
    };
    if !body.contains_key("chat_id") {
        body.insert("chat_id".into(), chat_id_value(&t.chat_id));
    }
    Ok(body)
}

fn chat_id_value(c: &ChatId) -> Value {
    match c {
        ChatId::Id(i) => json!(i),
        ChatId::Name(n) => json!(n),
    }
}

pub async fn send(ch: &Channels, t: &TelegramSpec, a: &Attempt<'_>) -> SendReport {
    let report = send_inner(ch, t, a).await;
    redact(report, &t.token)
}

async fn send_inner(ch: &Channels, t: &TelegramSpec, a: &Attempt<'_>) -> SendReport {
    // A resolved `${env:…}` token is only seen here; never echo it.
    if t.token.is_empty()
        || !t
            .token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_:-".contains(&b))
    {
        return SendReport::failed(
            Verdict::permanent(),
            ErrorClass::Config,
            "the bot token has characters a Telegram token never has",
        );
    }
    let body = match body(ch, t, a) {
        Ok(b) => b,
        Err(report) => return report,
    };
    let files = match files(a.message) {
        Ok(f) => f,
        Err(report) => return report,
    };
    let base = t.api_base.as_deref().unwrap_or(DEFAULT_API_BASE);
    let mut bot = Bot {
        ch,
        base: format!("{}/bot{}", base.trim_end_matches('/'), t.token),
        timeout: a.spec.timeout(),
        chat_id: body.get("chat_id").cloned().unwrap_or(Value::Null),
        migration: None,
        destination: a.destination,
    };
    let report = if files.is_empty() {
        bot.send_message(&body).await
    } else {
        send_with_files(&mut bot, a, body, &files).await
    };
    match &bot.migration {
        Some(note) => with_note(report, note),
        None => report,
    }
}

/// Telegram's caption limit for a photo or document.
pub const MAX_CAPTION: usize = 1024;
/// Largest photo `sendPhoto` takes; bigger pictures go as documents.
const MAX_PHOTO: usize = 10 * 1000 * 1000;

/// The Bot API for one attempt, following a chat's migration to a supergroup.
struct Bot<'a> {
    ch: &'a Channels,
    /// `{api_base}/bot<token>`.
    base: String,
    timeout: std::time::Duration,
    chat_id: Value,
    /// Set when the chat moved, to record in the attempt.
    migration: Option<String>,
    destination: &'a str,
}

impl Bot<'_> {
    /// Calls `method` with a body built for the current chat id; a 400 with
    /// `migrate_to_chat_id` (the group became a supergroup) is sent again once, in the same
    /// attempt, to the new id, which the rest of the attempt then uses.
    async fn call(
        &mut self,
        method: &str,
        build: impl Fn(&Value) -> (String, Vec<u8>),
    ) -> SendReport {
        let url = format!("{}/{method}", self.base);
        let request = |chat: &Value| {
            let (content_type, body) = build(chat);
            Outgoing {
                method: reqwest::Method::POST,
                url: &url,
                headers: vec![("content-type".into(), content_type)],
                body,
                timeout: self.timeout,
            }
        };
        let ans = match send_http(self.ch, request(&self.chat_id)).await {
            Ok(ans) => ans,
            Err(report) => return report,
        };
        let Some(new_id) = migrated_to(&ans) else {
            return classify(&ans);
        };
        self.migration = Some(format!(
            "the chat moved to chat_id {new_id} (it became a supergroup); set chat_id = {new_id} in the destination"
        ));
        tracing::warn!(destination = self.destination, new_chat_id = %new_id, "telegram chat migrated; update the destination's chat_id");
        self.chat_id = new_id;
        match send_http(self.ch, request(&self.chat_id)).await {
            Ok(ans) => classify(&ans),
            Err(report) => report,
        }
    }

    async fn send_message(&mut self, body: &Map<String, Value>) -> SendReport {
        self.call("sendMessage", |chat| {
            let mut b = body.clone();
            b.insert("chat_id".into(), chat.clone());
            (
                "application/json; charset=utf-8".into(),
                Value::Object(b).to_string().into_bytes(),
            )
        })
        .await
    }
}

/// A message with files: each file is one `sendPhoto` (PNG, JPEG, WebP up to 10 MB) or
/// `sendDocument` (anything else) request, multipart. The text rides as the first file's
/// caption when it fits Telegram's 1024 characters (and the body is only `text` and
/// `parse_mode`); otherwise it goes first as its own `sendMessage`. Every request that
/// succeeded is remembered, so a retry in this process sends only what is left.
async fn send_with_files(
    bot: &mut Bot<'_>,
    a: &Attempt<'_>,
    body: Map<String, Value>,
    files: &[File<'_>],
) -> SendReport {
    let progress = &bot.ch.progress;
    let text = body.get("text").and_then(Value::as_str).unwrap_or_default();
    let as_caption = units(text) <= MAX_CAPTION
        && body
            .keys()
            .all(|k| matches!(k.as_str(), "chat_id" | "text" | "parse_mode"));
    let mut sent = Vec::new();
    let mut earlier = Vec::new();
    let mut last = SendReport::delivered(None, String::new());
    if !as_caption {
        if progress.is_done(a.message, a.destination, "text") {
            earlier.push("the text".to_string());
        } else {
            let report = bot.send_message(&body).await;
            if report.verdict != Verdict::Delivered {
                return step_error(report, "sendMessage");
            }
            progress.mark(a.message, a.destination, "text");
            sent.push("sendMessage".to_string());
            last = report;
        }
    }
    let parse_mode = body.get("parse_mode").and_then(Value::as_str);
    for (i, f) in files.iter().enumerate() {
        let step = format!("file{}", f.index);
        let (method, field) =
            if f.is_image() && f.meta.essence() != "image/gif" && f.bytes.len() <= MAX_PHOTO {
                ("sendPhoto", "photo")
            } else {
                ("sendDocument", "document")
            };
        let label = format!("{method} {}", f.filename());
        if progress.is_done(a.message, a.destination, &step) {
            earlier.push(label);
            continue;
        }
        let caption = (i == 0 && as_caption && !text.is_empty()).then_some(text);
        let report = bot
            .call(method, |chat| {
                let chat = chat
                    .as_str()
                    .map_or_else(|| chat.to_string(), str::to_string);
                let mut form = Multipart::new().text("chat_id", &chat);
                if let Some(c) = caption {
                    form = form.text("caption", c);
                    if let Some(p) = parse_mode {
                        form = form.text("parse_mode", p);
                    }
                }
                form.file(field, f.filename(), f.content_type(), &f.bytes)
                    .finish()
            })
            .await;
        if report.verdict != Verdict::Delivered {
            let report = step_error(report, &label);
            return with_note(report, &progress_note(&sent, &earlier));
        }
        progress.mark(a.message, a.destination, &step);
        sent.push(label);
        last = report;
    }
    with_note(last, &progress_note(&sent, &earlier))
}

/// What a files attempt sent, and what earlier attempts had (not repeated).
fn progress_note(sent: &[String], earlier: &[String]) -> String {
    let mut parts = Vec::new();
    if !sent.is_empty() {
        parts.push(format!("telegram: sent {}", sent.join(", ")));
    }
    if !earlier.is_empty() {
        parts.push(format!(
            "already sent by an earlier attempt, not repeated: {}",
            earlier.join(", ")
        ));
    }
    parts.join("; ")
}

/// `parameters.migrate_to_chat_id` of a 400, if present.
fn migrated_to(ans: &HttpAnswer) -> Option<Value> {
    if ans.status != 400 {
        return None;
    }
    let id = ans
        .json()?
        .pointer("/parameters/migrate_to_chat_id")?
        .clone();
    (id.is_i64() || id.is_string()).then_some(id)
}

/// Classifies a Bot API answer (`{"ok":false,"error_code","description","parameters"}`).
pub fn classify(ans: &HttpAnswer) -> SendReport {
    let v = ans.json().unwrap_or(Value::Null);
    let description = v["description"].as_str().unwrap_or_default();
    if let Some(after) = seconds(&v["parameters"]["retry_after"]) {
        return ans.retry(
            Some(after),
            true,
            format!("HTTP {}: {description}", ans.status),
        );
    }
    match ans.status {
        200 if v["ok"] == json!(true) => ans.delivered(),
        200 => ans.permanent(None, "HTTP 200 without `ok: true`".into()),
        429 => ans.retry(ans.retry_after(), true, format!("HTTP 429: {description}")),
        _ => with_detail(classify_http(ans), description),
    }
}

/// Removes the token from everything the attempt records.
fn redact(mut report: SendReport, token: &str) -> SendReport {
    if token.is_empty() {
        return report;
    }
    let scrub = |s: &str| s.replace(token, "<token>");
    report.error = report.error.as_deref().map(scrub);
    report.response_excerpt = scrub(&report.response_excerpt);
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::MARKER;
    use herald_core::message::{MessageBody, Severity};

    fn message(title: Option<&str>, text: &str, payload: Value) -> Message {
        Message {
            id: herald_core::ids::MessageId::stored("msg_1".into()),
            event_type: "etl.done".into(),
            idempotency_key: None,
            created_at: 0,
            body: MessageBody {
                title: title.map(str::to_string),
                text: Some(text.into()),
                severity: Severity::Info,
                payload: payload.as_object().cloned().unwrap_or_default(),
                ..MessageBody::default()
            },
        }
    }

    #[test]
    fn renders_escaped_html() {
        let t = render(&message(
            Some("<적재> & 완료"),
            "rows < 10 🎉",
            json!({"table": "a&b"}),
        ));
        assert_eq!(
            t,
            "<b>ℹ️ &lt;적재&gt; &amp; 완료</b>\n\nrows &lt; 10 🎉\n\n<b>table</b>: a&amp;b\n\n<i>etl.done · msg_1</i>"
        );
    }

    #[test]
    fn long_text_is_truncated_to_4096_with_tags_intact() {
        let long = "<텔레그램 & 🎉>".repeat(2000);
        let payload: Map<String, Value> = (0..10)
            .map(|i| (format!("k{i}"), json!("v".repeat(500))))
            .collect();
        let t = render(&message(Some(&long), &long, Value::Object(payload)));
        assert!(units(&t) <= MAX_TEXT, "{}", units(&t));
        assert!(t.starts_with("<b>") && t.contains("</b>\n\n"));
        assert!(t.ends_with("<i>etl.done · msg_1</i>"));
        assert!(t.contains(MARKER));
        assert!(!t.contains("<텔"), "text is escaped");
    }

    #[test]
    fn tokens_are_scrubbed() {
        let r = SendReport {
            verdict: Verdict::permanent(),
            status_code: Some(404),
            error_class: Some(ErrorClass::HttpStatus),
            error: Some("Cannot POST /bot123:abc/sendMessage".into()),
            response_excerpt: "path /bot123:abc/sendMessage".into(),
            exchange: None,
        };
        let r = redact(r, "123:abc");
        assert_eq!(
            r.error.as_deref(),
            Some("Cannot POST /bot<token>/sendMessage")
        );
        assert!(!r.response_excerpt.contains("123:abc"));
    }
}
