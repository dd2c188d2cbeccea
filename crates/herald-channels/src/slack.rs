//! The `slack` kind: an incoming webhook (`url`) or the Web API `chat.postMessage`
//! (`token` + `channel`), rendered as Block Kit.
//!
//! Sends `{"text", "blocks"}` (plus `channel` for `chat.postMessage`, with
//! `Authorization: Bearer <token>`). The default rendering is a header (the title with a
//! severity emoji), a section with the text (mrkdwn, `&<>` escaped), a section of fields
//! from the payload's scalar values and a context line with the event type and message id,
//! always within Block Kit's limits: long text is cut with a visible marker. A message's
//! `channels.slack.blocks` are sent as given, but checked against the same limits first:
//! blocks over them are a permanent `override` error (Herald does not guess how to cut
//! someone else's layout). `channels.slack.text` replaces the notification fallback text.
//! Without overrides, a destination `template` renders the whole JSON body instead.
//!
//! Attachments: pictures that came from a public `url` are `image` blocks (before the
//! context line). Other files, with the Web API, go through Slack's external upload flow:
//! `files.getUploadURLExternal` (`filename`, `length`) and a POST of the bytes to the
//! `upload_url` it answers, for each file — invisible until shared — then one
//! `files.completeUploadExternal` (`files`, `channel_id`, the message's `blocks`) that
//! posts the message and its files together. That call needs a channel id; with a name, the
//! message is posted with `chat.postMessage` first (remembered across retries) and the
//! files shared after it to the id Slack answered. Each step's answer is classified like
//! `chat.postMessage`'s and named in the error. Incoming webhooks cannot upload: other
//! files are listed in a section, and the attempt says they were not uploaded.
//!
//! Incoming webhook answers: 2xx delivered; 429 retries after `Retry-After` and pauses
//! the destination; 404 `no_service`/`channel_not_found` and 410 are permanent and disable
//! the destination (the webhook or its channel is gone); 400/403 and other 4xx permanent;
//! 5xx retry.
//!
//! `chat.postMessage` answers: 200 `{"ok":true}` delivered; 200 `{"ok":false,"error"}`
//! retries for `ratelimited`, `rate_limited`, `internal_error`, `fatal_error`,
//! `service_unavailable`, `request_timeout` and is permanent for every other code; 429
//! retries after `Retry-After` and pauses the destination; 5xx retry.

use crate::files::{File, files, not_sent_note, step_error, with_note};
use crate::render::{
    ERROR_FRAMES, Escape, error_alert, error_context, error_facts, escape_truncate, first_line,
    footer, heading_of, override_error, override_str, overrides, payload_fields, severity_emoji,
    template_json, text_of, title_of, truncate, units,
};
use crate::response::{HttpAnswer, Outgoing, classify_http, send as send_http, with_detail};
use crate::{Attempt, Channels};
use herald_core::attachment::human_size;
use herald_core::delivery::{ErrorClass, SendReport, Verdict};
use herald_core::destination::SlackSpec;
use herald_core::error_report::ErrorAlert;
use herald_core::message::Message;
use serde_json::{Map, Value, json};

pub const DEFAULT_API_BASE: &str = "https://slack.com/api";

/// Block Kit limits (characters; Herald counts UTF-16 units, never fewer).
pub const MAX_BLOCKS: usize = 50;
pub const MAX_SECTION_TEXT: usize = 3000;
pub const MAX_FIELDS: usize = 10;
pub const MAX_FIELD_TEXT: usize = 2000;
pub const MAX_HEADER_TEXT: usize = 150;
pub const MAX_BLOCK_ID: usize = 255;
/// Slack answers `msg_blocks_too_long` past about this much text in all blocks.
pub const MAX_TOTAL_TEXT: usize = 12_000;
/// Longest top-level `text` Slack shows in full.
pub const MAX_FALLBACK_TEXT: usize = 4000;
const MAX_CONTEXT_TEXT: usize = 2000;
/// An image block's `alt_text`.
const MAX_ALT_TEXT: usize = 2000;
const MAX_FIELD_KEY: usize = 100;

/// API error codes worth another try; every other code is permanent.
const RETRY_CODES: &[&str] = &[
    "ratelimited",
    "rate_limited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
];

/// The default Block Kit rendering: `{"text", "blocks"}` (an error card for
/// `error.reported` messages).
pub fn render(message: &Message) -> Map<String, Value> {
    if let Some(alert) = error_alert(message) {
        return render_error(&alert);
    }
    let emoji = severity_emoji(message.body.severity);
    let text = text_of(message);
    let heading = heading_of(message);
    let mut blocks = Vec::new();
    let mut used = 0;
    if let Some(h) = heading {
        let t = truncate(&format!("{emoji} {h}"), MAX_HEADER_TEXT).into_owned();
        used += units(&t);
        blocks.push(
            json!({"type": "header", "text": {"type": "plain_text", "text": t, "emoji": true}}),
        );
    }
    if let Some(t) = text {
        let prefix = if heading.is_none() {
            format!("{emoji} ")
        } else {
            String::new()
        };
        let body = escape_truncate(t, MAX_SECTION_TEXT - units(&prefix), Escape::Html);
        let s = format!("{prefix}{body}");
        used += units(&s);
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": s}}));
    }
    let context = escape_truncate(&footer(message), MAX_CONTEXT_TEXT, Escape::Html);
    used += units(&context);
    let fields = payload_fields(message, MAX_FIELDS);
    if !fields.is_empty() {
        // Fields share what the other blocks left of the total.
        let each = (MAX_TOTAL_TEXT.saturating_sub(used) / fields.len()).min(MAX_FIELD_TEXT);
        let items: Vec<Value> = fields
            .iter()
            .map(|(k, v)| {
                let key = escape_truncate(k, MAX_FIELD_KEY, Escape::Html);
                let room = each.saturating_sub(units(&key) + 3).max(1);
                let text = format!("*{key}*\n{}", escape_truncate(v, room, Escape::Html));
                json!({"type": "mrkdwn", "text": text})
            })
            .collect();
        blocks.push(json!({"type": "section", "fields": items}));
    }
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]}));
    let mut body = Map::new();
    body.insert("text".into(), json!(fallback_text(message)));
    body.insert("blocks".into(), Value::Array(blocks));
    body
}

/// An error alert: a header naming the exception and the service, the error and why it
/// alerts, fields (environment, path, method, user, count), the innermost frames in a code
/// block and a context line with first and last seen — every part within Block Kit limits.
fn render_error(a: &ErrorAlert) -> Map<String, Value> {
    let esc = |s: &str, max: usize| escape_truncate(s, max, Escape::Html);
    let header = truncate(
        &format!(":rotating_light: {}", a.headline()),
        MAX_HEADER_TEXT,
    )
    .into_owned();
    let summary = match (a.report.exception_type(), a.report.detail()) {
        (Some(t), Some(d)) => format!("*{}*: {}", esc(t, 200), esc(d, 2000)),
        (Some(t), None) => format!("*{}*", esc(t, 200)),
        (None, Some(d)) => esc(d, 2000),
        (None, None) => esc(&a.title, 2000),
    };
    let summary = format!("{summary}\n_{}_", esc(&a.reason_line(), 500));
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": header, "emoji": true}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": summary}}),
    ];
    let fields: Vec<Value> = error_facts(a)
        .into_iter()
        .map(|(k, v)| json!({"type": "mrkdwn", "text": format!("*{k}*\n{}", esc(&v, 500))}))
        .collect();
    blocks.push(json!({"type": "section", "fields": fields}));
    let frames = a.frames_text(ERROR_FRAMES);
    if !frames.is_empty() {
        let code = esc(frames.trim_end(), MAX_SECTION_TEXT - 6);
        blocks.push(
            json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("```{code}```")}}),
        );
    }
    let context = esc(&error_context(a), MAX_CONTEXT_TEXT);
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]}));
    let fallback = match (a.report.exception_type(), a.report.detail()) {
        (Some(_), Some(d)) => format!("{}: {}", a.headline(), first_line(d)),
        _ => a.headline(),
    };
    let mut body = Map::new();
    body.insert("text".into(), json!(esc(&fallback, MAX_FALLBACK_TEXT)));
    body.insert("blocks".into(), Value::Array(blocks));
    body
}

/// The top-level `text`: what notifications and old clients show.
fn fallback_text(message: &Message) -> String {
    let s = match (title_of(message), text_of(message)) {
        (Some(t), Some(x)) => format!("{t}\n{x}"),
        (Some(t), None) => t.to_string(),
        (None, Some(x)) => x.to_string(),
        (None, None) => message.event_type.clone(),
    };
    escape_truncate(&s, MAX_FALLBACK_TEXT, Escape::Html)
}

/// Checks blocks given by a message or a template against Block Kit's limits.
pub fn check_blocks(blocks: &Value) -> Result<(), String> {
    let list = blocks
        .as_array()
        .ok_or_else(|| "blocks must be an array".to_string())?;
    if list.len() > MAX_BLOCKS {
        return Err(format!(
            "{} blocks; Slack takes at most {MAX_BLOCKS}",
            list.len()
        ));
    }
    for (i, b) in list.iter().enumerate() {
        let kind = b
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("blocks[{i}] has no type"))?;
        if let Some(id) = b.get("block_id").and_then(Value::as_str)
            && units(id) > MAX_BLOCK_ID
        {
            return Err(format!(
                "blocks[{i}].block_id is over {MAX_BLOCK_ID} characters"
            ));
        }
        let text_len = b.pointer("/text/text").and_then(Value::as_str).map(units);
        match kind {
            "header" if text_len.is_some_and(|n| n > MAX_HEADER_TEXT) => {
                return Err(format!(
                    "blocks[{i}]: a header's text is at most {MAX_HEADER_TEXT} characters"
                ));
            }
            "section" => {
                if text_len.is_some_and(|n| n == 0 || n > MAX_SECTION_TEXT) {
                    return Err(format!(
                        "blocks[{i}]: a section's text is 1–{MAX_SECTION_TEXT} characters"
                    ));
                }
                if let Some(fields) = b.get("fields").and_then(Value::as_array) {
                    if fields.len() > MAX_FIELDS {
                        return Err(format!(
                            "blocks[{i}]: a section has at most {MAX_FIELDS} fields"
                        ));
                    }
                    if fields.iter().any(|f| {
                        f.get("text")
                            .and_then(Value::as_str)
                            .is_some_and(|t| units(t) > MAX_FIELD_TEXT)
                    }) {
                        return Err(format!(
                            "blocks[{i}]: a field's text is at most {MAX_FIELD_TEXT} characters"
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    let total = text_units(blocks);
    if total > MAX_TOTAL_TEXT {
        return Err(format!(
            "the blocks carry {total} characters of text; Slack takes about {MAX_TOTAL_TEXT}"
        ));
    }
    Ok(())
}

/// The length of every `text` string inside `v`.
fn text_units(v: &Value) -> usize {
    match v {
        Value::Array(items) => items.iter().map(text_units).sum(),
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) if k == "text" => units(s),
                other => text_units(other),
            })
            .sum(),
        _ => 0,
    }
}

/// The JSON body for this attempt: the message's overrides on the default rendering, else
/// the destination template's, else the default.
fn body(ch: &Channels, s: &SlackSpec, a: &Attempt<'_>) -> Result<Map<String, Value>, SendReport> {
    let o = overrides(a.message, "slack")?;
    if let (None, Some(t)) = (o, &s.template) {
        let body = template_json(ch, t, a, "slack")?;
        if let Some(blocks) = body.get("blocks") {
            check_blocks(blocks).map_err(|e| {
                SendReport::failed(
                    Verdict::permanent(),
                    ErrorClass::Template,
                    format!("blocks: {e}"),
                )
            })?;
        }
        return Ok(body);
    }
    let mut body = render(a.message);
    if let Some(blocks) = o.and_then(|o| o.get("blocks")) {
        check_blocks(blocks).map_err(|e| override_error(format!("channels.slack.blocks: {e}")))?;
        body.insert("blocks".into(), blocks.clone());
    }
    if let Some(text) = override_str(o, "slack", "text")? {
        body.insert("text".into(), json!(truncate(text, MAX_FALLBACK_TEXT)));
    }
    Ok(body)
}

pub async fn send(ch: &Channels, s: &SlackSpec, a: &Attempt<'_>) -> SendReport {
    let mut body = match body(ch, s, a) {
        Ok(b) => b,
        Err(report) => return report,
    };
    let files = match files(a.message) {
        Ok(f) => f,
        Err(report) => return report,
    };
    // Pictures with a public address are shown by Slack itself; the rest are uploaded
    // (Web API) or listed (incoming webhooks).
    let (pictures, others): (Vec<&File<'_>>, Vec<&File<'_>>) = files
        .iter()
        .partition(|f| f.is_image() && f.url().is_some());
    add_blocks(&mut body, pictures.iter().map(|f| image_block(f)).collect());
    let timeout = a.spec.timeout();
    match (&s.url, &s.token, &s.channel) {
        (Some(url), _, _) => {
            let note = not_sent_note(
                "slack",
                "incoming webhooks cannot upload files; use a bot token and channel for uploads",
                &others,
            );
            if let Some(list) = file_list_block(&body, &others) {
                add_blocks(&mut body, vec![list]);
            }
            let out = Outgoing::post_json(url, &Value::Object(body), timeout);
            let report = match send_http(ch, out).await {
                Ok(ans) => classify_webhook(&ans),
                Err(report) => report,
            };
            with_note(report, &note)
        }
        (None, Some(token), Some(channel)) => {
            let api = Api {
                ch,
                base: s
                    .api_base
                    .as_deref()
                    .unwrap_or(DEFAULT_API_BASE)
                    .trim_end_matches('/'),
                token,
                timeout,
            };
            if others.is_empty() {
                body.entry("channel").or_insert_with(|| json!(channel));
                return match api
                    .call_json("chat.postMessage", &Value::Object(body))
                    .await
                {
                    Ok((ans, _)) => ans.delivered(),
                    Err(report) => report,
                };
            }
            share_files(&api, a, channel, body, &others).await
        }
        _ => SendReport::failed(
            Verdict::permanent(),
            ErrorClass::Config,
            "a Slack destination needs `url`, or `token` and `channel`",
        ),
    }
}

/// An `image` block for a picture Slack loads from its public URL.
fn image_block(f: &File<'_>) -> Value {
    json!({
        "type": "image",
        "image_url": f.url(),
        "alt_text": truncate(f.filename(), MAX_ALT_TEXT),
    })
}

/// A section listing files that are not uploaded, linked where they have an address, in
/// what Block Kit's total text leaves (none when too little is left: the attempt still
/// names them).
fn file_list_block(body: &Map<String, Value>, files: &[&File<'_>]) -> Option<Value> {
    let room = MAX_TOTAL_TEXT
        .saturating_sub(body.get("blocks").map_or(0, text_units))
        .min(MAX_SECTION_TEXT);
    if files.is_empty() || room < 100 {
        return None;
    }
    let lines: Vec<String> = files
        .iter()
        .map(|f| {
            let name = Escape::Html.apply(f.filename()).replace('|', "¦");
            let label = match f.url() {
                Some(u) => format!("<{}|{name}>", u.replace(['<', '>', '|'], "")),
                None => name,
            };
            format!(
                ":paperclip: {label} ({}, {})",
                f.meta.essence(),
                human_size(f.bytes.len())
            )
        })
        .collect();
    let text = truncate(&lines.join("\n"), room).into_owned();
    Some(json!({"type": "section", "text": {"type": "mrkdwn", "text": text}}))
}

/// Adds blocks before the default rendering's closing context line (else at the end),
/// as many as Block Kit's 50 allow. A body without blocks (a template's plain `text`)
/// is left alone.
fn add_blocks(body: &mut Map<String, Value>, extra: Vec<Value>) {
    let Some(Value::Array(blocks)) = body.get_mut("blocks") else {
        return;
    };
    let at = match blocks.last() {
        Some(b) if b["type"] == "context" => blocks.len() - 1,
        _ => blocks.len(),
    };
    let room = MAX_BLOCKS.saturating_sub(blocks.len());
    for (i, b) in extra.into_iter().take(room).enumerate() {
        blocks.insert(at + i, b);
    }
}

/// The Web API, called with the bot token.
struct Api<'a> {
    ch: &'a Channels,
    base: &'a str,
    token: &'a str,
    timeout: std::time::Duration,
}

impl Api<'_> {
    async fn call(
        &self,
        method: &str,
        out: Outgoing<'_>,
    ) -> Result<(HttpAnswer, Value), SendReport> {
        let out = out.header("authorization", format!("Bearer {}", self.token));
        let ans = send_http(self.ch, out)
            .await
            .map_err(|r| step_error(r, method))?;
        let report = classify_api(&ans);
        if report.verdict != Verdict::Delivered {
            return Err(step_error(report, method));
        }
        let v = ans.json().unwrap_or(Value::Null);
        Ok((ans, v))
    }

    async fn call_json(
        &self,
        method: &str,
        body: &Value,
    ) -> Result<(HttpAnswer, Value), SendReport> {
        let url = format!("{}/{method}", self.base);
        self.call(method, Outgoing::post_json(&url, body, self.timeout))
            .await
    }

    async fn call_form(
        &self,
        method: &str,
        pairs: &[(&str, &str)],
    ) -> Result<(HttpAnswer, Value), SendReport> {
        let url = format!("{}/{method}", self.base);
        // The serializer is not `Sync`: finish it before anything awaits.
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in pairs {
                form.append_pair(k, v);
            }
            form.finish()
        };
        let out = Outgoing {
            method: reqwest::Method::POST,
            url: &url,
            headers: vec![(
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            )],
            body: body.into_bytes(),
            timeout: self.timeout,
        };
        self.call(method, out).await
    }

    /// `files.getUploadURLExternal`, then the bytes to the `upload_url` it gave: the file
    /// is uploaded but not shared anywhere yet (so repeating this never shows twice).
    async fn upload(&self, f: &File<'_>) -> Result<String, SendReport> {
        let method = "files.getUploadURLExternal";
        let length = f.bytes.len().to_string();
        let mut pairs = vec![("filename", f.filename()), ("length", length.as_str())];
        if f.is_image() {
            pairs.push(("alt_txt", f.filename()));
        }
        let (ans, v) = self.call_form(method, &pairs).await?;
        let (Some(upload_url), Some(file_id)) = (v["upload_url"].as_str(), v["file_id"].as_str())
        else {
            return Err(step_error(
                ans.permanent(None, "the answer has no upload_url and file_id".into()),
                method,
            ));
        };
        let out = Outgoing {
            method: reqwest::Method::POST,
            url: upload_url,
            headers: vec![("content-type".into(), "application/octet-stream".into())],
            body: f.bytes.clone(),
            timeout: self.timeout,
        };
        let step = format!("upload of {}", f.filename());
        let ans = send_http(self.ch, out)
            .await
            .map_err(|r| step_error(r, &step))?;
        if ans.status != 200 {
            return Err(step_error(
                with_detail(classify_http(&ans), &ans.text()),
                &step,
            ));
        }
        Ok(file_id.to_string())
    }
}

/// Whether `channel` is an id (`C…`, `G…`, `D…`), as `files.completeUploadExternal` needs.
fn is_channel_id(channel: &str) -> bool {
    channel.len() >= 9
        && channel.starts_with(['C', 'G', 'D'])
        && channel
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// The upload flow: every file through `files.getUploadURLExternal` and its `upload_url`
/// (invisible until shared), then one `files.completeUploadExternal` that shares them all
/// in the channel with the message's blocks, so the message and its files are one post.
/// With a channel name instead of an id, the message goes first through
/// `chat.postMessage` (remembered, not repeated by a retry) and the files follow, shared
/// to the id Slack answered with.
async fn share_files(
    api: &Api<'_>,
    a: &Attempt<'_>,
    channel: &str,
    mut body: Map<String, Value>,
    files: &[&File<'_>],
) -> SendReport {
    let mut channel_id = channel.to_string();
    let mut with_message = true;
    if !is_channel_id(channel) {
        let step = format!("post:{channel}");
        if let Some(id) = api
            .ch
            .progress
            .posted_channel(a.message, a.destination, &step)
        {
            channel_id = id;
        } else {
            body.entry("channel").or_insert_with(|| json!(channel));
            match api
                .call_json("chat.postMessage", &Value::Object(body.clone()))
                .await
            {
                Ok((_, v)) => match v["channel"].as_str() {
                    Some(id) => channel_id = id.to_string(),
                    None => {
                        return SendReport::failed(
                            Verdict::permanent(),
                            ErrorClass::ProviderError,
                            "chat.postMessage answered without the channel id the files need",
                        );
                    }
                },
                Err(report) => return report,
            }
            api.ch
                .progress
                .remember_channel(a.message, a.destination, &step, &channel_id);
        }
        with_message = false;
    }
    let mut shared = Vec::with_capacity(files.len());
    for f in files {
        match api.upload(f).await {
            Ok(id) => shared.push(json!({"id": id, "title": f.filename()})),
            Err(report) => return report,
        }
    }
    let files_json = Value::Array(shared).to_string();
    let mut pairs = vec![
        ("files", files_json.as_str()),
        ("channel_id", channel_id.as_str()),
    ];
    let blocks = body.get("blocks").map(Value::to_string);
    let text = body.get("text").and_then(Value::as_str).unwrap_or_default();
    match (&blocks, with_message) {
        (Some(b), true) => pairs.push(("blocks", b.as_str())),
        (None, true) if !text.is_empty() => pairs.push(("initial_comment", text)),
        _ => {}
    }
    let method = "files.completeUploadExternal";
    match api.call_form(method, &pairs).await {
        Ok((ans, _)) => with_note(
            ans.delivered(),
            &format!(
                "slack: {} file(s) uploaded and shared in {channel_id}{}",
                files.len(),
                if with_message {
                    " with the message"
                } else {
                    " after the message"
                }
            ),
        ),
        Err(report)
            if report
                .error_class
                .is_some_and(ErrorClass::may_have_reached_provider) =>
        {
            with_note(
                report,
                "Slack may have shared the files already; the retry can share them twice",
            )
        }
        Err(report) => report,
    }
}

/// Classifies an incoming webhook's answer (a plain-text code such as `no_service`).
pub fn classify_webhook(ans: &HttpAnswer) -> SendReport {
    let code = ans.text().trim().chars().take(200).collect::<String>();
    match ans.status {
        200..=299 => ans.delivered(),
        429 => ans.retry(
            ans.retry_after(),
            true,
            format!(
                "HTTP 429 {}",
                if code.is_empty() {
                    "rate limited"
                } else {
                    &code
                }
            ),
        ),
        404 if matches!(code.as_str(), "no_service" | "channel_not_found") => ans.permanent(
            Some(format!(
                "Slack answered 404 {code}: the incoming webhook is gone"
            )),
            format!("HTTP 404: {code}"),
        ),
        410 => ans.permanent(
            Some(format!(
                "Slack answered 410 {code}: the channel is archived"
            )),
            format!("HTTP 410: {code}"),
        ),
        _ => with_detail(classify_http(ans), &code),
    }
}

/// Classifies a `chat.postMessage` answer: errors come as 200 `{"ok":false,"error"}`.
pub fn classify_api(ans: &HttpAnswer) -> SendReport {
    match ans.status {
        429 => ans.retry(ans.retry_after(), true, "HTTP 429: ratelimited".into()),
        200 => {
            let Some(v) = ans.json() else {
                return ans.permanent(None, "HTTP 200 without a Slack API answer".into());
            };
            if v["ok"] == json!(true) {
                return ans.delivered();
            }
            let code = v["error"].as_str().unwrap_or("unknown_error");
            let mut error = format!("Slack error {code}");
            if let Some(details) = v.get("errors") {
                error.push_str(&format!(": {}", truncate(&details.to_string(), 1000)));
            }
            if RETRY_CODES.contains(&code) {
                ans.retry(None, false, error)
            } else {
                ans.permanent(None, error)
            }
        }
        _ => {
            let code = ans
                .json()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_default();
            with_detail(classify_http(ans), &code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::MARKER;
    use herald_core::message::{MessageBody, Severity};

    fn message(title: Option<&str>, text: Option<&str>, payload: Value) -> Message {
        Message {
            id: herald_core::ids::MessageId::stored("msg_1".into()),
            event_type: "pipeline.failed".into(),
            idempotency_key: None,
            created_at: 0,
            body: MessageBody {
                title: title.map(str::to_string),
                text: text.map(str::to_string),
                severity: Severity::Critical,
                payload: payload.as_object().cloned().unwrap_or_default(),
                ..MessageBody::default()
            },
        }
    }

    #[test]
    fn an_error_card_stays_within_block_kit_limits_however_big_the_report() {
        let body = render(&crate::render::huge_error_alert());
        let blocks = &body["blocks"];
        check_blocks(blocks).unwrap();
        assert!(
            blocks[0]["text"]["text"]
                .as_str()
                .unwrap()
                .starts_with(":rotating_light: TTT")
        );
        let code = blocks[3]["text"]["text"].as_str().unwrap();
        assert!(code.starts_with("```") && code.ends_with("```"), "{code}");
        assert!(!code.contains('<'), "escaped inside the code block");
        assert!(units(body["text"].as_str().unwrap()) <= MAX_FALLBACK_TEXT);
        // Not an error alert after all (a payload of another shape): the default rendering.
        let mut m = crate::render::huge_error_alert();
        m.body.payload.remove("report");
        assert!(
            render(&m)["blocks"][0]["text"]["text"]
                .as_str()
                .unwrap()
                .starts_with("❌")
        );
    }

    #[test]
    fn default_rendering_has_header_section_fields_and_context() {
        let m = message(
            Some("배포 실패"),
            Some("a < b & c > d 🎉"),
            json!({"rows": 3, "ok": false, "table": "주문", "nested": {"x": 1}, "none": null}),
        );
        let v = Value::Object(render(&m));
        assert_eq!(v["blocks"][0]["type"], "header");
        assert_eq!(v["blocks"][0]["text"]["text"], "🚨 배포 실패");
        assert_eq!(v["blocks"][1]["text"]["text"], "a &lt; b &amp; c &gt; d 🎉");
        let fields: Vec<&str> = v["blocks"][2]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["text"].as_str().unwrap())
            .collect();
        assert_eq!(fields, vec!["*ok*\nfalse", "*rows*\n3", "*table*\n주문"]);
        assert_eq!(v["blocks"][3]["type"], "context");
        assert_eq!(
            v["blocks"][3]["elements"][0]["text"],
            "pipeline.failed · msg_1"
        );
        assert_eq!(v["text"], "배포 실패\na &lt; b &amp; c &gt; d 🎉");
        check_blocks(&v["blocks"]).unwrap();
    }

    #[test]
    fn without_a_title_the_emoji_leads_the_text() {
        let v = Value::Object(render(&message(None, Some("hello"), json!({}))));
        assert_eq!(v["blocks"][0]["type"], "section");
        assert_eq!(v["blocks"][0]["text"]["text"], "🚨 hello");
        let v = Value::Object(render(&message(None, None, json!({"k": "v"}))));
        assert_eq!(v["blocks"][0]["text"]["text"], "🚨 pipeline.failed");
    }

    #[test]
    fn huge_messages_are_cut_to_block_kit_limits() {
        let long = "가🎉&".repeat(20_000);
        let payload: Map<String, Value> = (0..30)
            .map(|i| (format!("k{i:02}"), json!(long.clone())))
            .collect();
        let m = message(Some(&long), Some(&long), Value::Object(payload));
        let v = Value::Object(render(&m));
        check_blocks(&v["blocks"]).unwrap();
        let header = v["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(units(header) <= MAX_HEADER_TEXT && header.ends_with(MARKER));
        let section = v["blocks"][1]["text"]["text"].as_str().unwrap();
        assert!(units(section) <= MAX_SECTION_TEXT && section.ends_with(MARKER));
        assert_eq!(
            v["blocks"][2]["fields"].as_array().unwrap().len(),
            MAX_FIELDS
        );
        assert!(text_units(&v["blocks"]) <= MAX_TOTAL_TEXT);
        let text = v["text"].as_str().unwrap();
        assert!(units(text) <= MAX_FALLBACK_TEXT && text.ends_with(MARKER));
    }

    #[test]
    fn files_listed_for_a_webhook_stay_within_block_kit_limits() {
        let long = "가🎉&".repeat(20_000);
        let payload: Map<String, Value> = (0..30)
            .map(|i| (format!("k{i:02}"), json!(long.clone())))
            .collect();
        let meta = herald_core::message::Attachment {
            filename: "보고서 <1>|x.csv".into(),
            content_type: "text/csv".into(),
            data: Some("YSxi".into()),
            url: None,
            inline: None,
        };
        let file = File {
            index: 0,
            meta: &meta,
            bytes: b"a,b".to_vec(),
        };
        let small = render(&message(Some("t"), Some("x"), json!({})));
        let list = file_list_block(&small, &[&file]).unwrap();
        assert_eq!(
            list["text"]["text"],
            ":paperclip: 보고서 &lt;1&gt;¦x.csv (text/csv, 3 B)"
        );
        let mut big = render(&message(Some(&long), Some(&long), Value::Object(payload)));
        if let Some(list) = file_list_block(&big, &[&file]) {
            add_blocks(&mut big, vec![list]);
        }
        add_blocks(&mut big, vec![json!({"type": "divider"}); 60]);
        check_blocks(&big["blocks"]).unwrap();
        assert_eq!(big["blocks"].as_array().unwrap().len(), MAX_BLOCKS);
        assert_eq!(big["blocks"][MAX_BLOCKS - 1]["type"], "context");
    }

    #[test]
    fn given_blocks_over_the_limits_are_refused_with_a_reason() {
        assert!(check_blocks(&json!([{"type": "divider"}])).is_ok());
        let too_many = Value::Array(vec![json!({"type": "divider"}); 51]);
        assert!(check_blocks(&too_many).unwrap_err().contains("51 blocks"));
        let long =
            json!([{"type": "section", "text": {"type": "mrkdwn", "text": "x".repeat(3001)}}]);
        assert!(check_blocks(&long).unwrap_err().contains("section"));
        let header =
            json!([{"type": "header", "text": {"type": "plain_text", "text": "x".repeat(151)}}]);
        assert!(check_blocks(&header).is_err());
        let total = Value::Array(vec![
            json!({"type": "section", "text": {"type": "mrkdwn", "text": "x".repeat(2500)}});
            5
        ]);
        assert!(check_blocks(&total).unwrap_err().contains("12000"));
        assert!(check_blocks(&json!({"type": "section"})).is_err());
        assert!(check_blocks(&json!([{"text": "no type"}])).is_err());
    }
}
