//! The `teams` kind: an Adaptive Card posted to a Teams Workflows (Power Automate) webhook
//! or a legacy Office 365 connector.
//!
//! Sends `{"type":"message","attachments":[{"contentType":
//! "application/vnd.microsoft.card.adaptive","contentUrl":null,"content":<card>}]}`. The
//! default card has a bold heading (severity emoji and title, coloured for warnings and
//! errors), the text, a fact set from the payload's scalar values and a small line with the
//! event type and message id. Teams refuses requests over about 28 KB, so the text is cut
//! (with a visible marker) to keep the request under 26 KB. A message's
//! `channels.teams.card` replaces the card as given (over the size limit it is a permanent
//! `override` error); otherwise a destination `template` renders the whole JSON body.
//!
//! Attachments: the default card shows each picture that came from a public URL as an
//! `Image` element and links other files that have a URL; files given only as `data` are
//! named, not sent (neither webhook kind can carry files), and the attempt says so.
//!
//! Answers: Workflows 202 (any 2xx but 200) delivered; legacy 200 with body `1` delivered;
//! a 200 with any other body is a failure — one mentioning `HTTP error 429` or
//! `HTTP error 5xx` retries with backoff, anything else is permanent; 429 retries after
//! `Retry-After` and pauses the destination; 5xx retry; 400/404/413 and other 4xx
//! permanent; 410 permanent and disables the destination.

use crate::files::with_note;
use crate::render::{
    ERROR_FRAMES, error_alert, error_facts, error_summary, footer, override_error, overrides,
    payload_fields, severity_emoji, template_json, text_of, title_of, truncate_json_bytes,
};
use crate::response::{HttpAnswer, Outgoing, classify_http, send as send_http, with_detail};
use crate::{Attempt, Channels};
use herald_core::attachment::human_size;
use herald_core::delivery::SendReport;
use herald_core::destination::TeamsSpec;
use herald_core::error_report::ErrorAlert;
use herald_core::message::{Message, Severity};
use serde_json::{Value, json};

/// Largest request Herald sends (Teams refuses about 28 KB).
pub const MAX_BODY_BYTES: usize = 26_000;
const MAX_TITLE_BYTES: usize = 500;
const MAX_TEXT_BYTES: usize = 18_000;
const MAX_FACTS: usize = 10;
const MAX_FACT_TITLE_BYTES: usize = 100;
const MAX_FACT_VALUE_BYTES: usize = 500;

/// The default Adaptive Card (the `content` of the attachment); an error card for
/// `error.reported` messages.
pub fn card(message: &Message) -> Value {
    if let Some(alert) = error_alert(message) {
        return error_card(message, &alert);
    }
    let mut body = Vec::new();
    let emoji = severity_emoji(message.body.severity);
    let heading = title_of(message).unwrap_or(&message.event_type);
    let mut head = json!({
        "type": "TextBlock",
        "text": truncate_json_bytes(&format!("{emoji} {heading}"), MAX_TITLE_BYTES),
        "weight": "Bolder",
        "size": "Medium",
        "wrap": true,
    });
    let color = match message.body.severity {
        Severity::Info => None,
        Severity::Warning => Some("Warning"),
        Severity::Error | Severity::Critical => Some("Attention"),
    };
    if let Some(c) = color {
        head["color"] = json!(c);
    }
    body.push(head);
    if let Some(t) = text_of(message) {
        body.push(json!({"type": "TextBlock", "text": truncate_json_bytes(t, MAX_TEXT_BYTES), "wrap": true}));
    }
    let facts: Vec<Value> = payload_fields(message, MAX_FACTS)
        .into_iter()
        .map(|(k, v)| {
            json!({
                "title": truncate_json_bytes(k, MAX_FACT_TITLE_BYTES),
                "value": truncate_json_bytes(&v, MAX_FACT_VALUE_BYTES),
            })
        })
        .collect();
    if !facts.is_empty() {
        body.push(json!({"type": "FactSet", "facts": facts}));
    }
    body.push(json!({
        "type": "TextBlock",
        "text": footer(message),
        "isSubtle": true,
        "size": "Small",
        "wrap": true,
    }));
    json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    })
}

/// An error alert: the exception and service as the heading (attention colour), the error
/// and why it alerts, facts (environment, path, method, user, count, first and last seen)
/// and the innermost frames in monospace.
fn error_card(message: &Message, a: &ErrorAlert) -> Value {
    let mut body = vec![
        json!({"type": "TextBlock", "text": truncate_json_bytes(&format!("🚨 {}", a.headline()), MAX_TITLE_BYTES),
               "weight": "Bolder", "size": "Medium", "color": "Attention", "wrap": true}),
        json!({"type": "TextBlock", "text": truncate_json_bytes(&format!("{}\n\n{}", error_summary(a), a.reason_line()), MAX_TEXT_BYTES / 2),
               "wrap": true}),
    ];
    let mut facts: Vec<Value> = error_facts(a)
        .into_iter()
        .map(|(k, v)| json!({"title": k, "value": truncate_json_bytes(&v, MAX_FACT_VALUE_BYTES)}))
        .collect();
    facts.push(json!({"title": "First seen", "value": a.first_seen}));
    facts.push(json!({"title": "Last seen", "value": a.last_seen}));
    body.push(json!({"type": "FactSet", "facts": facts}));
    let frames = a.frames_text(ERROR_FRAMES);
    if !frames.is_empty() {
        body.push(json!({"type": "TextBlock", "text": truncate_json_bytes(frames.trim_end(), MAX_TEXT_BYTES / 3),
                         "fontType": "Monospace", "wrap": true}));
    }
    body.push(json!({"type": "TextBlock", "text": footer(message), "isSubtle": true, "size": "Small", "wrap": true}));
    json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    })
}

/// The message/attachments envelope Teams takes around a card.
pub fn envelope(card: Value) -> Value {
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card,
        }],
    })
}

/// The card's elements for a message's attachments: an `Image` for each picture with a
/// public URL, a linked line for other files with a URL, a line naming files that have
/// none (a webhook cannot carry files).
fn file_elements(message: &Message) -> Vec<Value> {
    message
        .body
        .attachments
        .iter()
        .map(|att| {
            let what = format!("{}, {}", att.essence(), human_size(att.size()));
            match &att.url {
                Some(url) if att.is_image() => json!({
                    "type": "Image", "url": url, "altText": att.filename, "size": "Auto",
                }),
                Some(url) => json!({
                    "type": "TextBlock", "wrap": true,
                    "text": format!("📎 [{}]({url}) ({what})", att.filename.replace(['[', ']'], "")),
                }),
                None => json!({
                    "type": "TextBlock", "wrap": true, "isSubtle": true,
                    "text": format!("📎 {} ({what}) — not attached: Teams webhooks cannot carry files", att.filename),
                }),
            }
        })
        .collect()
}

/// The default card with the attachments' elements before its footer line, as many as
/// keep the request under the size limit (the rest are counted in one line).
fn card_with_files(message: &Message) -> Value {
    let mut c = card(message);
    let files = file_elements(message);
    if files.is_empty() {
        return c;
    }
    let base = envelope(c.clone()).to_string().len();
    let Some(body) = c["body"].as_array_mut() else {
        return c;
    };
    let at = body.len().saturating_sub(1);
    let mut used = base;
    let total = files.len();
    let mut shown = 0;
    for f in files {
        let size = f.to_string().len() + 1;
        if used + size + 200 > MAX_BODY_BYTES {
            break;
        }
        used += size;
        body.insert(at + shown, f);
        shown += 1;
    }
    if shown < total {
        body.insert(
            at + shown,
            json!({"type": "TextBlock", "wrap": true, "isSubtle": true,
                   "text": format!("… and {} more file(s), not shown (the card is at Teams' size limit)", total - shown)}),
        );
    }
    c
}

fn body(ch: &Channels, t: &TeamsSpec, a: &Attempt<'_>) -> Result<Value, SendReport> {
    let given = overrides(a.message, "teams")?.and_then(|o| o.get("card"));
    match given {
        None | Some(Value::Null) => match &t.template {
            Some(src) => template_json(ch, src, a, "teams").map(Value::Object),
            None => Ok(envelope(card_with_files(a.message))),
        },
        Some(c @ Value::Object(_)) => {
            let body = envelope(c.clone());
            let size = body.to_string().len();
            if size > MAX_BODY_BYTES {
                return Err(override_error(format!(
                    "channels.teams.card makes a {size}-byte request; Teams takes about {MAX_BODY_BYTES}"
                )));
            }
            Ok(body)
        }
        Some(_) => Err(override_error(
            "channels.teams.card must be an Adaptive Card object".into(),
        )),
    }
}

pub async fn send(ch: &Channels, t: &TeamsSpec, a: &Attempt<'_>) -> SendReport {
    let body = match body(ch, t, a) {
        Ok(b) => b,
        Err(report) => return report,
    };
    let report = match send_http(ch, Outgoing::post_json(&t.url, &body, a.spec.timeout())).await {
        Ok(ans) => classify(&ans),
        Err(report) => report,
    };
    let not_carried: Vec<&str> = a
        .message
        .body
        .attachments
        .iter()
        .filter(|f| f.url.is_none() || !f.is_image())
        .map(|f| f.filename.as_str())
        .collect();
    if not_carried.is_empty() {
        return report;
    }
    with_note(
        report,
        &format!(
            "teams: files are not uploaded (webhooks cannot carry them); pictures with a URL are shown, other files linked or named: {}",
            not_carried.join(", ")
        ),
    )
}

/// Classifies a Workflows or legacy connector answer.
pub fn classify(ans: &HttpAnswer) -> SendReport {
    let text = ans.text();
    let text = text.trim();
    match ans.status {
        200 if text == "1" => ans.delivered(),
        200 if text.contains("HTTP error 429") => ans.retry(
            None,
            false,
            "the connector answered 200 with a throttling error (HTTP error 429)".into(),
        ),
        200 if text.contains("HTTP error 5") => ans.retry(
            None,
            false,
            "the connector answered 200 with an upstream server error".into(),
        ),
        200 => ans.permanent(
            None,
            "the connector answered 200 without `1`: the message was not posted".into(),
        ),
        201..=299 => ans.delivered(),
        429 => ans.retry(ans.retry_after(), true, "HTTP 429".into()),
        _ => with_detail(
            classify_http(ans),
            &text.chars().take(200).collect::<String>(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_core::message::MessageBody;

    fn message(text: &str) -> Message {
        Message {
            id: herald_core::ids::MessageId::stored("msg_1".into()),
            event_type: "deploy.failed".into(),
            idempotency_key: None,
            created_at: 0,
            body: MessageBody {
                title: Some("배포 실패".into()),
                text: Some(text.into()),
                severity: Severity::Error,
                payload: json!({"env": "prod", "n": 2})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
                ..MessageBody::default()
            },
        }
    }

    #[test]
    fn an_error_card_stays_under_the_request_limit_however_big_the_report() {
        let m = crate::render::huge_error_alert();
        let body = envelope(card(&m));
        assert!(
            body.to_string().len() <= MAX_BODY_BYTES,
            "{}",
            body.to_string().len()
        );
        let card = &body["attachments"][0]["content"];
        assert_eq!(card["body"][0]["color"], "Attention");
        assert_eq!(card["body"][3]["fontType"], "Monospace");
    }

    #[test]
    fn the_card_has_heading_text_facts_and_footer() {
        let body = envelope(card(&message("롤백 중 🎉")));
        assert_eq!(body["type"], "message");
        let att = &body["attachments"][0];
        assert_eq!(
            att["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        assert_eq!(att["contentUrl"], Value::Null);
        let c = &att["content"];
        assert_eq!(c["type"], "AdaptiveCard");
        assert_eq!(c["version"], "1.4");
        assert_eq!(c["body"][0]["text"], "❌ 배포 실패");
        assert_eq!(c["body"][0]["color"], "Attention");
        assert_eq!(c["body"][1]["text"], "롤백 중 🎉");
        assert_eq!(
            c["body"][2]["facts"][0],
            json!({"title": "env", "value": "prod"})
        );
        assert_eq!(c["body"][3]["text"], "deploy.failed · msg_1");
    }

    #[test]
    fn a_huge_text_keeps_the_request_under_the_size_limit() {
        let body = envelope(card(&message(&"\"한\n".repeat(50_000))));
        let size = body.to_string().len();
        assert!(size <= MAX_BODY_BYTES, "{size}");
        assert!(
            body["attachments"][0]["content"]["body"][1]["text"]
                .as_str()
                .unwrap()
                .ends_with(crate::render::MARKER)
        );
    }
}
