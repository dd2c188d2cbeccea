//! What every human-facing channel (chat, email, SMS) renders from a message: text cut to
//! a provider's limit with a visible marker, escaping, the severity emoji, the payload's
//! scalar values as fields, per-message `channels.<kind>` overrides and destination
//! templates.
//!
//! Limits are counted in UTF-16 code units. That is what Telegram counts, and never less
//! than the characters Slack, Discord or Twilio count, so text that fits here fits there.
//! Cuts fall on character boundaries (a flag or a family emoji made of several characters
//! may lose its tail, never a byte).

use crate::{Attempt, Channels};
use herald_core::delivery::{ErrorClass, SendReport, Verdict};
use herald_core::error_report::{EVENT_TYPE as ERROR_EVENT, ErrorAlert};
use herald_core::message::{Message, Severity};
use herald_core::template::context;
use serde_json::{Map, Value};
use std::borrow::Cow;

/// Ends every text Herald had to shorten.
pub const MARKER: &str = "… (truncated)";

/// The length of `s` in UTF-16 code units.
pub fn units(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// How text is escaped before it goes into a provider's markup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// As is (plain text, JSON strings).
    None,
    /// `&`, `<`, `>` as entities: Slack mrkdwn, Telegram HTML, HTML text.
    Html,
}

impl Escape {
    fn piece(self, c: char) -> Option<&'static str> {
        match (self, c) {
            (Escape::Html, '&') => Some("&amp;"),
            (Escape::Html, '<') => Some("&lt;"),
            (Escape::Html, '>') => Some("&gt;"),
            _ => None,
        }
    }

    /// `s` escaped.
    pub fn apply(self, s: &str) -> Cow<'_, str> {
        if self == Escape::None || !s.contains(['&', '<', '>']) {
            return Cow::Borrowed(s);
        }
        let mut out = String::with_capacity(s.len() + 16);
        for c in s.chars() {
            match self.piece(c) {
                Some(p) => out.push_str(p),
                None => out.push(c),
            }
        }
        Cow::Owned(out)
    }
}

/// `s` cut to at most `max` UTF-16 units, ending in [`MARKER`] when cut.
pub fn truncate(s: &str, max: usize) -> Cow<'_, str> {
    fit(s, max, Escape::None, units)
}

/// `s` escaped, then cut to at most `max` UTF-16 units without splitting an entity.
pub fn escape_truncate(s: &str, max: usize, escape: Escape) -> String {
    fit(s, max, escape, units).into_owned()
}

/// `s` cut to at most `max` bytes of UTF-8, ending in [`MARKER`] when cut.
pub fn truncate_bytes(s: &str, max: usize) -> Cow<'_, str> {
    fit(s, max, Escape::None, str::len)
}

/// `s` cut so that, as a JSON string, it takes at most `max` bytes (quotes excluded):
/// for providers that limit the size of the request (Teams).
pub fn truncate_json_bytes(s: &str, max: usize) -> Cow<'_, str> {
    fit(s, max, Escape::None, json_len)
}

fn json_len(s: &str) -> usize {
    s.chars()
        .map(|c| match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if (c as u32) < 0x20 => 6,
            c => c.len_utf8(),
        })
        .sum()
}

fn fit(s: &str, max: usize, escape: Escape, measure: fn(&str) -> usize) -> Cow<'_, str> {
    let escaped = escape.apply(s);
    if measure(&escaped) <= max {
        return escaped;
    }
    let marker_len = measure(MARKER);
    if max < marker_len {
        // No room for the marker: an ellipsis alone, if even that fits.
        return Cow::Borrowed(if measure("…") <= max { "…" } else { "" });
    }
    let budget = max - marker_len;
    let mut out = String::with_capacity(budget.min(s.len()) + MARKER.len());
    let mut used = 0;
    let mut buf = [0u8; 4];
    for c in s.chars() {
        let piece = escape.piece(c).unwrap_or_else(|| c.encode_utf8(&mut buf));
        let w = measure(piece);
        if used + w > budget {
            break;
        }
        out.push_str(piece);
        used += w;
    }
    let kept = out.trim_end().len();
    out.truncate(kept);
    out.push_str(MARKER);
    Cow::Owned(out)
}

/// The first non-empty line of `s`, trimmed.
pub fn first_line(s: &str) -> &str {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

/// The text, if it has anything but white space.
pub fn text_of(message: &Message) -> Option<&str> {
    message
        .body
        .text
        .as_deref()
        .filter(|t| !t.trim().is_empty())
}

/// The title, if it has anything but white space.
pub fn title_of(message: &Message) -> Option<&str> {
    message
        .body
        .title
        .as_deref()
        .filter(|t| !t.trim().is_empty())
}

/// The heading a chat card shows: the title, or the event type when there is no text either.
pub fn heading_of(message: &Message) -> Option<&str> {
    title_of(message).or(if text_of(message).is_none() {
        Some(message.event_type.as_str())
    } else {
        None
    })
}

/// A glyph that tells severities apart at a glance.
pub fn severity_emoji(severity: Severity) -> &'static str {
    match severity {
        Severity::Info => "ℹ️",
        Severity::Warning => "⚠️",
        Severity::Error => "❌",
        Severity::Critical => "🚨",
    }
}

/// The payload's scalar values (strings, numbers, booleans) as `(key, value)`, in key
/// order, at most `max`. Objects, arrays and nulls are left to webhooks and templates.
pub fn payload_fields(message: &Message, max: usize) -> Vec<(&str, Cow<'_, str>)> {
    message
        .body
        .payload
        .iter()
        .filter_map(|(k, v)| {
            let value = match v {
                Value::String(s) => Cow::Borrowed(s.as_str()),
                Value::Number(n) => Cow::Owned(n.to_string()),
                Value::Bool(b) => Cow::Owned(b.to_string()),
                _ => return None,
            };
            Some((k.as_str(), value))
        })
        .take(max)
        .collect()
}

/// The structured alert of an `error.reported` message (its payload), which the chat and
/// email kinds render as an error card by default.
pub fn error_alert(message: &Message) -> Option<ErrorAlert> {
    if message.event_type != ERROR_EVENT {
        return None;
    }
    serde_json::from_value(Value::Object(message.body.payload.clone())).ok()
}

/// An error card's facts, in order: environment, path, method, user, count (the ones known).
pub fn error_facts(a: &ErrorAlert) -> Vec<(&'static str, String)> {
    let mut facts = Vec::new();
    if let Some(e) = &a.report.environment {
        facts.push(("Environment", e.clone()));
    }
    if let Some(r) = &a.report.request {
        if let Some(p) = r.path.as_ref().or(r.url.as_ref()) {
            facts.push(("Path", p.clone()));
        }
        if let Some(m) = &r.method {
            facts.push(("Method", m.clone()));
        }
    }
    if let Some(u) = a.user_line() {
        facts.push(("User", u));
    }
    facts.push(("Count", a.count.to_string()));
    facts
}

/// `First seen … · Last seen … · grp_… · release …`: where and when, for an error card.
pub fn error_context(a: &ErrorAlert) -> String {
    let mut parts = vec![
        format!("First seen {}", a.first_seen),
        format!("Last seen {}", a.last_seen),
        a.group.clone(),
    ];
    if let Some(r) = &a.report.release {
        parts.push(format!("release {r}"));
    }
    if let Some(s) = &a.report.server_name {
        parts.push(format!("server {s}"));
    }
    parts.join(" · ")
}

/// `ZeroDivisionError: division by zero` (or what is known), one line.
pub fn error_summary(a: &ErrorAlert) -> String {
    let detail = a.report.detail().map(first_line);
    match (a.report.exception_type(), detail) {
        (Some(t), Some(d)) => format!("{t}: {d}"),
        (Some(t), None) => t.to_string(),
        (None, Some(d)) => d.to_string(),
        (None, None) => a.title.clone(),
    }
}

/// Frames shown in an error card.
pub const ERROR_FRAMES: usize = 8;

/// `event_type · message id`, the line that lets a reader find the message in Herald.
pub fn footer(message: &Message) -> String {
    format!("{} · {}", message.event_type, message.id)
}

/// The message's `channels.<kind>` override object, if any.
pub fn overrides<'m>(
    message: &'m Message,
    kind: &str,
) -> Result<Option<&'m Map<String, Value>>, SendReport> {
    match message.body.channels.get(kind) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(override_error(format!("channels.{kind} must be an object"))),
    }
}

/// A string field of an override object.
pub fn override_str<'m>(
    o: Option<&'m Map<String, Value>>,
    kind: &str,
    field: &str,
) -> Result<Option<&'m str>, SendReport> {
    match o.and_then(|o| o.get(field)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(override_error(format!(
            "channels.{kind}.{field} must be a string"
        ))),
    }
}

/// A per-message override that cannot be sent as given: permanent, the message is wrong.
pub fn override_error(error: String) -> SendReport {
    SendReport::failed(Verdict::permanent(), ErrorClass::Override, error)
}

/// Renders the destination's `template` to text.
pub fn template_text(
    ch: &Channels,
    template: &str,
    a: &Attempt<'_>,
    kind: &str,
) -> Result<String, SendReport> {
    let ctx = context(a.message, a.destination, kind, a.number);
    ch.templates
        .render(template, &ctx)
        .map_err(|e| SendReport::failed(Verdict::permanent(), ErrorClass::Template, e))
}

/// Renders the destination's `template` to a JSON object (a request body).
pub fn template_json(
    ch: &Channels,
    template: &str,
    a: &Attempt<'_>,
    kind: &str,
) -> Result<Map<String, Value>, SendReport> {
    let ctx = context(a.message, a.destination, kind, a.number);
    match ch.templates.render_json(template, &ctx) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(SendReport::failed(
            Verdict::permanent(),
            ErrorClass::Template,
            "the template must render a JSON object",
        )),
        Err(e) => Err(SendReport::failed(
            Verdict::permanent(),
            ErrorClass::Template,
            e,
        )),
    }
}

/// An error alert as the server builds it, with everything as long as it can get.
#[cfg(test)]
pub(crate) fn huge_error_alert() -> Message {
    let frames: Vec<Value> = (0..100)
        .map(|i| serde_json::json!({"filename": format!("app/{}.py", "m".repeat(300)), "function": format!("f{i}"),
                        "lineno": i, "in_app": true, "context_line": "<&>".repeat(1000)}))
        .collect();
    let report = serde_json::json!({"service": "s".repeat(128), "environment": "e".repeat(4000), "message": "m",
        "exception": {"type": "T".repeat(4000), "value": "<v>".repeat(5000), "stacktrace": frames},
        "request": {"method": "GET", "path": "/".repeat(4000)},
        "user": {"id": "1", "username": "u".repeat(4000), "email": "x".repeat(4000)},
        "release": "r".repeat(4000), "server_name": "n".repeat(4000)});
    let report: herald_core::error_report::ErrorReport = serde_json::from_value(report).unwrap();
    let report = report.validate().unwrap();
    let alert = ErrorAlert {
        group: "grp_1".into(),
        reason: herald_core::error_report::AlertReason::Spike,
        title: "t".repeat(512),
        culprit: None,
        count: 123_456,
        folded: 99,
        window_count: 1000,
        window: "10m".into(),
        first_seen: "2026-12-01T10:00:00Z".into(),
        last_seen: "2026-12-01T10:05:00Z".into(),
        report,
    };
    Message {
        id: herald_core::ids::MessageId::stored("msg_1".into()),
        event_type: "error.reported".into(),
        idempotency_key: None,
        created_at: 0,
        body: herald_core::message::MessageBody {
            title: Some(alert.headline()),
            text: Some(alert.text()),
            severity: Severity::Error,
            payload: serde_json::to_value(&alert)
                .unwrap()
                .as_object()
                .cloned()
                .unwrap(),
            ..Default::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_untouched() {
        assert_eq!(truncate("파이프라인 완료 🎉", 100), "파이프라인 완료 🎉");
        assert!(matches!(truncate("abc", 3), Cow::Borrowed(_)));
    }

    #[test]
    fn long_text_ends_in_the_marker_within_the_limit() {
        let s = "가나다라마바사 🎉🎉🎉 ".repeat(500);
        for max in [20, 150, 2000, 4096] {
            let t = truncate(&s, max);
            assert!(units(&t) <= max, "{max}: {}", units(&t));
            assert!(t.ends_with(MARKER));
            assert!(s.starts_with(t.trim_end_matches(MARKER)));
        }
        assert_eq!(truncate("abcdef", 3), "…");
        assert_eq!(truncate("abcdef", 0), "");
    }

    #[test]
    fn emoji_count_as_two_units_and_are_never_split() {
        assert_eq!(units("🎉"), 2);
        assert_eq!(units("한"), 1);
        let s = "🎉".repeat(100);
        let t = truncate(&s, units(MARKER) + 3);
        assert_eq!(t, format!("🎉{MARKER}"));
    }

    #[test]
    fn bytes_limit_counts_utf8() {
        let s = "한".repeat(100);
        let t = truncate_bytes(&s, 40);
        assert!(t.len() <= 40);
        assert!(t.ends_with(MARKER));
    }

    #[test]
    fn json_size_counts_escapes() {
        let s = "\"\n한\u{1}";
        assert_eq!(json_len(s), serde_json::to_string(s).unwrap().len() - 2);
        let s = "\"".repeat(100);
        let t = truncate_json_bytes(&s, 40);
        assert!(serde_json::to_string(&t).unwrap().len() - 2 <= 40);
    }

    #[test]
    fn html_escaping() {
        assert_eq!(
            Escape::Html.apply("a < b && c > d"),
            "a &lt; b &amp;&amp; c &gt; d"
        );
        assert_eq!(Escape::Html.apply("plain 한글"), "plain 한글");
        assert_eq!(Escape::None.apply("<b>"), "<b>");
    }

    #[test]
    fn escaped_cuts_never_split_an_entity() {
        let s = "<&>".repeat(1000);
        let t = escape_truncate(&s, 100, Escape::Html);
        assert!(units(&t) <= 100);
        let body = t.trim_end_matches(MARKER);
        assert!(
            body.ends_with("&lt;") || body.ends_with("&amp;") || body.ends_with("&gt;"),
            "{body}"
        );
        assert!(!body.contains('<') && !body.contains('>'));
    }

    #[test]
    fn first_line_skips_blank_lines() {
        assert_eq!(first_line("\n\n  배포 완료  \nsecond"), "배포 완료");
        assert_eq!(first_line(""), "");
    }
}
