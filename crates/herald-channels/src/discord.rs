//! The `discord` kind: execute webhook.
//!
//! Sends `{"embeds": [...], "allowed_mentions": {"parse": []}}` (so text from a message can
//! never ping `@everyone`). The default embed has the severity emoji and title as its title,
//! the text as its description, the payload's scalar values as inline fields, a colour per
//! severity, a footer with the event type and message id and the message's timestamp — all
//! within Discord's limits (title 256, description 4096, field values 1024, 6000 characters
//! of embed text in all): long text is cut with a visible marker. A message's
//! `channels.discord.content` (cut to 2000) and `channels.discord.embeds` (at most 10,
//! checked against the limits: over them is a permanent `override` error) replace the
//! defaults; without them, a destination `template` renders the whole JSON body.
//!
//! Attachments: the request becomes `multipart/form-data` with the JSON body as
//! `payload_json` (plus `"attachments": [{"id": n, "filename"}]`) and each file as
//! `files[n]`, as many as fit the destination's `max_upload_bytes` (default 10 MiB, Discord's
//! limit for a server without boosts) and Discord's 10 files per message; the rest are
//! listed in `content` (linked when they came from a URL) and named in the attempt.
//!
//! Answers: 204 (or 200 with `?wait=true`) delivered; 429 retries after the body's float
//! `retry_after` (preferred over the rounded `Retry-After` header) and pauses the
//! destination; 404 with code 10015 (unknown webhook) is permanent and disables the
//! destination; 400 (50035 invalid form body, 50006 empty message), 401, 403 and other 4xx
//! permanent; 410 permanent and disables; 5xx retry.

use crate::files::{File, Multipart, files, not_sent_note, with_note};
use crate::render::{
    footer, heading_of, override_error, override_str, overrides, payload_fields, severity_emoji,
    template_json, text_of, truncate, units,
};
use crate::response::{
    HttpAnswer, Outgoing, classify_http, seconds, send as send_http, with_detail,
};
use crate::{Attempt, Channels};
use herald_core::attachment::human_size;
use herald_core::clock::rfc3339;
use herald_core::delivery::SendReport;
use herald_core::destination::DiscordSpec;
use herald_core::kinds::DISCORD_DEFAULT_UPLOAD_BYTES;
use herald_core::message::{Message, Severity};
use serde_json::{Map, Value, json};

pub const MAX_CONTENT: usize = 2000;
pub const MAX_EMBEDS: usize = 10;
pub const MAX_TITLE: usize = 256;
pub const MAX_DESCRIPTION: usize = 4096;
pub const MAX_FIELD_NAME: usize = 256;
pub const MAX_FIELD_VALUE: usize = 1024;
pub const MAX_FOOTER: usize = 2048;
/// All embed text of one message together.
pub const MAX_EMBED_TOTAL: usize = 6000;
const MAX_FIELDS: usize = 10;

fn color(severity: Severity) -> u32 {
    match severity {
        Severity::Info => 0x3498db,
        Severity::Warning => 0xf1c40f,
        Severity::Error => 0xe74c3c,
        Severity::Critical => 0x992d22,
    }
}

/// The default embed.
pub fn embed(message: &Message) -> Value {
    let emoji = severity_emoji(message.body.severity);
    let text = text_of(message);
    let heading = heading_of(message);
    let mut e = Map::new();
    let mut used = 0;
    if let Some(h) = heading {
        let t = truncate(&format!("{emoji} {h}"), MAX_TITLE).into_owned();
        used += units(&t);
        e.insert("title".into(), json!(t));
    }
    if let Some(t) = text {
        let prefix = if heading.is_none() {
            format!("{emoji} ")
        } else {
            String::new()
        };
        let d = format!("{prefix}{}", truncate(t, MAX_DESCRIPTION - units(&prefix)));
        used += units(&d);
        e.insert("description".into(), json!(d));
    }
    let foot = truncate(&footer(message), MAX_FOOTER).into_owned();
    used += units(&foot);
    let fields = payload_fields(message, MAX_FIELDS);
    if !fields.is_empty() {
        // Fields share what the rest left of the 6000 characters.
        let each = MAX_EMBED_TOTAL.saturating_sub(used) / fields.len();
        let items: Vec<Value> = fields
            .iter()
            .map(|(k, v)| {
                // Discord refuses empty names and values; a zero-width space stands in.
                let k = if k.is_empty() { "\u{200b}" } else { k };
                let name = truncate(k, MAX_FIELD_NAME.min(each / 2).max(1)).into_owned();
                let room = each.saturating_sub(units(&name)).clamp(1, MAX_FIELD_VALUE);
                let value = if v.is_empty() { "\u{200b}" } else { v.as_ref() };
                json!({"name": name, "value": truncate(value, room), "inline": true})
            })
            .collect();
        e.insert("fields".into(), Value::Array(items));
    }
    e.insert("color".into(), json!(color(message.body.severity)));
    e.insert("footer".into(), json!({"text": foot}));
    e.insert("timestamp".into(), json!(rfc3339(message.created_at)));
    Value::Object(e)
}

/// Checks embeds given by a message against Discord's limits.
pub fn check_embeds(embeds: &Value) -> Result<(), String> {
    let list = embeds
        .as_array()
        .ok_or_else(|| "embeds must be an array".to_string())?;
    if list.len() > MAX_EMBEDS {
        return Err(format!(
            "{} embeds; Discord takes at most {MAX_EMBEDS}",
            list.len()
        ));
    }
    let len = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).map_or(0, units);
    let mut total = 0;
    for (i, e) in list.iter().enumerate() {
        if !e.is_object() {
            return Err(format!("embeds[{i}] must be an object"));
        }
        let (title, description) = (len(e, "/title"), len(e, "/description"));
        if title > MAX_TITLE {
            return Err(format!("embeds[{i}].title is over {MAX_TITLE} characters"));
        }
        if description > MAX_DESCRIPTION {
            return Err(format!(
                "embeds[{i}].description is over {MAX_DESCRIPTION} characters"
            ));
        }
        total += title + description + len(e, "/footer/text") + len(e, "/author/name");
        if let Some(fields) = e.get("fields").and_then(Value::as_array) {
            for f in fields {
                let (n, v) = (len(f, "/name"), len(f, "/value"));
                if n > MAX_FIELD_NAME || v > MAX_FIELD_VALUE {
                    return Err(format!(
                        "embeds[{i}]: a field's name is at most {MAX_FIELD_NAME} and its value {MAX_FIELD_VALUE} characters"
                    ));
                }
                total += n + v;
            }
        }
    }
    if total > MAX_EMBED_TOTAL {
        return Err(format!(
            "the embeds carry {total} characters; Discord takes at most {MAX_EMBED_TOTAL}"
        ));
    }
    Ok(())
}

fn body(ch: &Channels, d: &DiscordSpec, a: &Attempt<'_>) -> Result<Value, SendReport> {
    let o = overrides(a.message, "discord")?;
    if let (None, Some(t)) = (o, &d.template) {
        return template_json(ch, t, a, "discord").map(Value::Object);
    }
    let mut body = Map::new();
    match o.and_then(|o| o.get("embeds")) {
        None | Some(Value::Null) => {
            body.insert("embeds".into(), json!([embed(a.message)]));
        }
        Some(given) => {
            check_embeds(given)
                .map_err(|e| override_error(format!("channels.discord.embeds: {e}")))?;
            body.insert("embeds".into(), given.clone());
        }
    }
    if let Some(c) = override_str(o, "discord", "content")? {
        body.insert("content".into(), json!(truncate(c, MAX_CONTENT)));
    }
    body.insert("allowed_mentions".into(), json!({"parse": []}));
    Ok(Value::Object(body))
}

pub async fn send(ch: &Channels, d: &DiscordSpec, a: &Attempt<'_>) -> SendReport {
    let mut body = match body(ch, d, a) {
        Ok(b) => b,
        Err(report) => return report,
    };
    let files = match files(a.message) {
        Ok(f) => f,
        Err(report) => return report,
    };
    let timeout = a.spec.timeout();
    if files.is_empty() {
        return match send_http(ch, Outgoing::post_json(&d.url, &body, timeout)).await {
            Ok(ans) => classify(&ans),
            Err(report) => report,
        };
    }
    let limit = d.max_upload_bytes.unwrap_or(DISCORD_DEFAULT_UPLOAD_BYTES);
    let (upload, listed) = fit_uploads(&files, usize::try_from(limit).unwrap_or(usize::MAX));
    let note = not_sent_note(
        "discord",
        &format!(
            "over {} or {MAX_FILES} files per message",
            human_size(limit as usize)
        ),
        &listed,
    );
    if !listed.is_empty() {
        list_in_content(&mut body, &listed);
    }
    let out = if upload.is_empty() {
        Outgoing::post_json(&d.url, &body, timeout)
    } else {
        let refs: Vec<Value> = upload
            .iter()
            .enumerate()
            .map(|(i, f)| json!({"id": i, "filename": f.filename()}))
            .collect();
        body["attachments"] = Value::Array(refs);
        let mut form = Multipart::new().json("payload_json", &body);
        for (i, f) in upload.iter().enumerate() {
            form = form.file(
                &format!("files[{i}]"),
                f.filename(),
                f.content_type(),
                &f.bytes,
            );
        }
        let (content_type, bytes) = form.finish();
        Outgoing {
            method: reqwest::Method::POST,
            url: &d.url,
            headers: vec![("content-type".into(), content_type)],
            body: bytes,
            timeout,
        }
    };
    let report = match send_http(ch, out).await {
        Ok(ans) => classify(&ans),
        Err(report) => report,
    };
    with_note(report, &note)
}

/// Discord takes at most this many files in one message.
pub const MAX_FILES: usize = 10;

/// Splits files into those uploaded (in order, while they fit the byte limit and the
/// file count) and those only listed.
fn fit_uploads<'f, 'a>(
    files: &'f [File<'a>],
    limit: usize,
) -> (Vec<&'f File<'a>>, Vec<&'f File<'a>>) {
    let mut used = 0usize;
    let (mut up, mut rest) = (Vec::new(), Vec::new());
    for f in files {
        if up.len() < MAX_FILES && used + f.bytes.len() <= limit {
            used += f.bytes.len();
            up.push(f);
        } else {
            rest.push(f);
        }
    }
    (up, rest)
}

/// Mentions files that were not uploaded in `content` (linked where they have a URL).
fn list_in_content(body: &mut Value, files: &[&File<'_>]) {
    let mut content = body["content"].as_str().unwrap_or_default().to_string();
    for f in files {
        if !content.is_empty() {
            content.push('\n');
        }
        let name = f.filename().replace(['[', ']'], "");
        match f.url() {
            Some(u) => content.push_str(&format!("📎 [{name}](<{u}>) ({})", f.meta.essence())),
            None => content.push_str(&format!("📎 {} (not uploaded)", f.describe())),
        }
    }
    body["content"] = json!(truncate(&content, MAX_CONTENT));
}

/// Classifies an execute-webhook answer (`{"code","message"}` on errors).
pub fn classify(ans: &HttpAnswer) -> SendReport {
    let v = ans.json().unwrap_or(Value::Null);
    let detail = match (v["code"].as_i64(), v["message"].as_str()) {
        (Some(c), Some(m)) => format!("{c} {m}"),
        (None, Some(m)) => m.to_string(),
        _ => String::new(),
    };
    match ans.status {
        200..=299 => ans.delivered(),
        429 => {
            // The body's float is exact; the header is rounded up.
            let after = seconds(&v["retry_after"]).or_else(|| ans.retry_after());
            let scope = if v["global"] == json!(true) {
                " (global)"
            } else {
                ""
            };
            ans.retry(after, true, format!("HTTP 429: rate limited{scope}"))
        }
        404 if v["code"] == json!(10015) => ans.permanent(
            Some("Discord answered 404 Unknown Webhook (10015): the webhook was deleted".into()),
            format!("HTTP 404: {detail}"),
        ),
        _ => with_detail(classify_http(ans), &detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::MARKER;
    use herald_core::message::MessageBody;

    fn message(title: &str, text: &str, payload: Value) -> Message {
        Message {
            id: herald_core::ids::MessageId::stored("msg_1".into()),
            event_type: "job.done".into(),
            idempotency_key: None,
            created_at: 0,
            body: MessageBody {
                title: Some(title.into()),
                text: Some(text.into()),
                severity: Severity::Warning,
                payload: payload.as_object().cloned().unwrap_or_default(),
                ..MessageBody::default()
            },
        }
    }

    #[test]
    fn the_default_embed() {
        let e = embed(&message("작업 완료", "행 3개 🎉", json!({"rows": 3})));
        assert_eq!(e["title"], "⚠️ 작업 완료");
        assert_eq!(e["description"], "행 3개 🎉");
        assert_eq!(
            e["fields"],
            json!([{"name": "rows", "value": "3", "inline": true}])
        );
        assert_eq!(e["color"], 0xf1c40f);
        assert_eq!(e["footer"]["text"], "job.done · msg_1");
        check_embeds(&json!([e])).unwrap();
    }

    #[test]
    fn long_messages_fit_every_embed_limit() {
        let long = "디스코드🎉".repeat(5000);
        let payload: Map<String, Value> = (0..20)
            .map(|i| (format!("{i:02}{long}"), json!(long.clone())))
            .collect();
        let e = embed(&message(&long, &long, Value::Object(payload)));
        check_embeds(&json!([e])).unwrap();
        assert!(e["title"].as_str().unwrap().ends_with(MARKER));
        assert!(e["description"].as_str().unwrap().ends_with(MARKER));
        assert_eq!(e["fields"].as_array().unwrap().len(), MAX_FIELDS);
    }

    #[test]
    fn given_embeds_over_the_limits_are_refused() {
        assert!(check_embeds(&Value::Array(vec![json!({}); 11])).is_err());
        assert!(check_embeds(&json!([{"title": "x".repeat(257)}])).is_err());
        assert!(check_embeds(&json!([{"description": "x".repeat(4097)}])).is_err());
        let total = Value::Array(vec![json!({"description": "x".repeat(4000)}); 2]);
        assert!(check_embeds(&total).unwrap_err().contains("6000"));
        assert!(check_embeds(&json!([{"title": "ok"}])).is_ok());
    }
}
