//! Messages: what a client submits, validated into what Herald stores and delivers.

use crate::error::ValidationErrors;
use crate::ids::MessageId;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

pub const MAX_IDEMPOTENCY_KEY: usize = 255;
pub const MAX_TEXT: usize = 256 * 1024;
pub const MAX_TITLE: usize = 1024;
pub const MAX_TO: usize = 100;
pub const MAX_ATTACHMENTS: usize = 20;
/// Default cap on the decoded size of all attachments of one message.
pub const DEFAULT_MAX_ATTACHMENT_BYTES: usize = 10 * 1024 * 1024;

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[default]
    Info,
    Warning,
    Error,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }
}

/// A file carried by a message: inline base64 `data` or a `url`. Stored, it always has
/// `data`; a `url` it was fetched from stays, for channels that can show a picture by its
/// public address (Slack `image` blocks, Teams `Image` elements, MMS `MediaUrl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    /// Sanitised on acceptance (see `herald_core::attachment`).
    pub filename: String,
    /// Checked against the content's magic number where one exists.
    pub content_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Email: show an image inside the HTML part (multipart/related, `cid:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<bool>,
}

/// `POST /api/v1/messages` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageInput {
    /// `[A-Za-z0-9_.:-]{1,128}`, default `message`.
    #[serde(default)]
    pub event_type: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub severity: Option<Severity>,
    /// Structured data: the webhook body's `data` and the template context's `payload`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Map<String, Value>>,
    /// Explicit destination names; when absent the message is routed by `events` + `filter`.
    #[serde(default)]
    pub to: Option<Vec<String>>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Per-kind overrides, e.g. `{"slack": {"blocks": [...]}}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub channels: Option<Map<String, Value>>,
    #[serde(default)]
    pub attachments: Option<Vec<Attachment>>,
}

/// The stored body of a message: everything a channel needs to render it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default)]
    pub severity: Severity,
    #[serde(default)]
    pub payload: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub channels: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

/// A validated, identified message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: MessageId,
    pub event_type: String,
    pub idempotency_key: Option<String>,
    pub created_at: i64,
    pub body: MessageBody,
}

pub fn is_valid_event_type(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
}

impl MessageInput {
    /// Validates the input; `header_key` is the `Idempotency-Key` header, which wins over
    /// the body field when both are given and differ (that is a 422).
    pub fn validate(
        self,
        header_key: Option<&str>,
        max_attachment_bytes: usize,
    ) -> Result<(String, Option<String>, MessageBody), ValidationErrors> {
        self.validate_with(header_key, AttachmentLimits::total(max_attachment_bytes))
    }

    /// [`validate`](Self::validate) with separate total and per-file attachment caps.
    /// Filenames are sanitised in place; `url` attachments are checked for their scheme
    /// only (the server fetches and checks them before storing).
    pub fn validate_with(
        self,
        header_key: Option<&str>,
        limits: AttachmentLimits,
    ) -> Result<(String, Option<String>, MessageBody), ValidationErrors> {
        let mut errs = ValidationErrors::new();
        let event_type = self.event_type.unwrap_or_else(|| "message".to_string());
        if !is_valid_event_type(&event_type) {
            errs.push("event_type", "must match [A-Za-z0-9_.:-]{1,128}");
        }
        let key = match (header_key, self.idempotency_key) {
            (Some(h), Some(b)) if h != b => {
                errs.push("idempotency_key", "differs from the Idempotency-Key header");
                None
            }
            (Some(h), _) => Some(h.to_string()),
            (None, b) => b,
        };
        if let Some(k) = &key
            && (k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY || k.chars().any(char::is_control))
        {
            errs.push(
                "idempotency_key",
                "must be 1–255 characters without control characters",
            );
        }
        if self.text.as_ref().is_some_and(|t| t.len() > MAX_TEXT) {
            errs.push("text", format!("at most {MAX_TEXT} bytes"));
        }
        if self.title.as_ref().is_some_and(|t| t.len() > MAX_TITLE) {
            errs.push("title", format!("at most {MAX_TITLE} bytes"));
        }
        if self.text.is_none()
            && self.title.is_none()
            && self.payload.as_ref().is_none_or(Map::is_empty)
            && self.attachments.as_ref().is_none_or(Vec::is_empty)
        {
            errs.push(
                "text",
                "a message needs at least one of text, title, payload or attachments",
            );
        }
        if let Some(to) = &self.to {
            if to.is_empty() {
                errs.push(
                    "to",
                    "must name at least one destination (omit it to route by events)",
                );
            }
            if to.len() > MAX_TO {
                errs.push("to", format!("at most {MAX_TO} destinations"));
            }
        }
        let mut attachments = self.attachments.unwrap_or_default();
        validate_attachments(&mut attachments, limits, &mut errs);
        errs.into_result()?;
        let mut to = self.to;
        if let Some(t) = &mut to {
            t.sort();
            t.dedup();
        }
        let body = MessageBody {
            text: self.text,
            title: self.title,
            severity: self.severity.unwrap_or_default(),
            payload: self.payload.unwrap_or_default(),
            to,
            channels: self.channels.unwrap_or_default(),
            attachments,
        };
        Ok((event_type, key, body))
    }
}

/// Caps on attachments (configurable: `max_attachment_bytes`, `max_attachment_file_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachmentLimits {
    /// All decoded attachments of one message together.
    pub total: usize,
    /// One decoded attachment.
    pub per_file: usize,
}

impl AttachmentLimits {
    /// One cap for the total and for each file.
    pub fn total(total: usize) -> Self {
        AttachmentLimits {
            total,
            per_file: total,
        }
    }
}

fn validate_attachments(
    list: &mut [Attachment],
    limits: AttachmentLimits,
    errs: &mut ValidationErrors,
) {
    if list.len() > MAX_ATTACHMENTS {
        errs.push(
            "attachments",
            format!("at most {MAX_ATTACHMENTS} attachments"),
        );
    }
    let mut total = 0usize;
    for (i, a) in list.iter_mut().enumerate() {
        let f = |name: &str| format!("attachments[{i}].{name}");
        match crate::attachment::sanitize_filename(&a.filename) {
            Some(clean) if a.filename.len() <= 1024 => a.filename = clean,
            _ => errs.push(
                f("filename"),
                "must be a file name of at most 1024 bytes with at least one usable character",
            ),
        }
        if !a.content_type.contains('/')
            || a.content_type.len() > 255
            || a.content_type.chars().any(char::is_control)
        {
            errs.push(f("content_type"), "must be a media type such as image/png");
        }
        match (&a.data, &a.url) {
            (Some(data), None) => match base64::engine::general_purpose::STANDARD.decode(data) {
                Ok(bytes) => {
                    total += bytes.len();
                    if let Err(e) = check_file(a, &bytes, limits) {
                        errs.push(f("data"), e);
                    }
                }
                Err(_) => errs.push(f("data"), "must be base64"),
            },
            (None, Some(url)) => {
                if !matches!(
                    url::Url::parse(url)
                        .map(|u| u.scheme().to_string())
                        .as_deref(),
                    Ok("http" | "https")
                ) {
                    errs.push(f("url"), "must be an http(s) URL");
                }
            }
            _ => errs.push(f("data"), "give exactly one of `data` (base64) or `url`"),
        }
    }
    if total > limits.total {
        errs.push(
            "attachments",
            format!(
                "decoded attachments total {total} bytes, over the limit of {}",
                limits.total
            ),
        );
    }
}

/// Checks one file's bytes: the per-file cap and the content against the declared type.
pub fn check_file(a: &Attachment, bytes: &[u8], limits: AttachmentLimits) -> Result<(), String> {
    if bytes.len() > limits.per_file {
        return Err(format!(
            "{} bytes, over the per-attachment limit of {}",
            bytes.len(),
            limits.per_file
        ));
    }
    crate::attachment::check_content(&a.content_type, bytes)
}

impl Message {
    /// The message as templates and webhook bodies see it.
    pub fn template_view(&self) -> Value {
        json!({
            "id": self.id,
            "event_type": self.event_type,
            "text": self.body.text,
            "title": self.body.title,
            "severity": self.body.severity.as_str(),
            "payload": self.body.payload,
            "created_at": crate::clock::rfc3339(self.created_at),
        })
    }

    /// The text to show a human: the text, else the title, else the event type.
    pub fn display_text(&self) -> &str {
        self.body
            .text
            .as_deref()
            .or(self.body.title.as_deref())
            .unwrap_or(&self.event_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(v: Value) -> MessageInput {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn defaults() {
        let (et, key, body) = input(json!({"text": "hi"}))
            .validate(None, DEFAULT_MAX_ATTACHMENT_BYTES)
            .unwrap();
        assert_eq!(et, "message");
        assert_eq!(key, None);
        assert_eq!(body.severity, Severity::Info);
    }

    #[test]
    fn rejects_bad_fields() {
        let err = input(json!({"text": "x", "event_type": "bad type!"}))
            .validate(None, 10)
            .unwrap_err();
        assert_eq!(err.0[0].field, "event_type");
        let err = input(json!({})).validate(None, 10).unwrap_err();
        assert_eq!(err.0[0].field, "text");
        let err = input(json!({"text": "x", "idempotency_key": "a"}))
            .validate(Some("b"), 10)
            .unwrap_err();
        assert_eq!(err.0[0].field, "idempotency_key");
        let three_bytes = || {
            input(
                json!({"text": "x", "attachments": [{"filename": "a.txt", "content_type": "text/plain", "data": "AAAA"}]}),
            )
        };
        let err = three_bytes()
            .validate_with(
                None,
                AttachmentLimits {
                    total: 2,
                    per_file: 10,
                },
            )
            .unwrap_err();
        assert_eq!(err.0[0].field, "attachments");
        let err = three_bytes().validate(None, 2).unwrap_err();
        assert_eq!(err.0[0].field, "attachments[0].data");
        assert!(err.0[0].message.contains("per-attachment limit of 2"));
        let err = input(json!({"text": "x", "attachments": [{"filename": "a.png", "content_type": "image/png", "data": "AAAA"}]}))
            .validate(None, 10)
            .unwrap_err();
        assert!(err.0[0].message.contains("not image/png"), "{:?}", err.0);
        let (_, _, body) = input(json!({"text": "x", "attachments": [{"filename": "dir\\..\\a:b.txt", "content_type": "text/plain", "data": "AAAA"}]}))
            .validate(None, 10)
            .unwrap();
        assert_eq!(body.attachments[0].filename, "a_b.txt");
        assert_eq!(body.attachments[0].size(), 3);
        assert!(
            serde_json::from_value::<MessageInput>(json!({"text": "x", "sevrity": "info"}))
                .is_err()
        );
        assert!(serde_json::from_value::<MessageInput>(json!({"severity": "loud"})).is_err());
    }
}
