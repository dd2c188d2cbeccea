//! Sentry's wire formats, read tolerantly: envelopes (`POST /api/{project}/envelope/`) and
//! events (the `event` items of envelopes, and `POST /api/{project}/store/` bodies), mapped
//! to [`ErrorReport`]s.
//!
//! An envelope is a JSON header line, then items: each a JSON header line (with `type` and
//! maybe `length`) and a payload of `length` bytes, or up to the next newline when there is
//! no `length`. Item types Herald does not use (`client_report`, `session`, `transaction`,
//! attachments…) are skipped.
//!
//! ```
//! use herald_core::sentry::parse_envelope;
//! let body = b"{\"event_id\":\"9ec79c33ec9942ab8353589fcb2e04dc\"}\n{\"type\":\"event\",\"length\":2}\n{}\n{\"type\":\"client_report\"}\n{\"discarded_events\":[]}\n";
//! let env = parse_envelope(body).unwrap();
//! assert_eq!(env.items.len(), 2);
//! assert_eq!(env.events().count(), 1);
//! ```

use crate::error_report::{
    ErrorReport, ExceptionInfo, Frame, RequestInfo, UserInfo, path_of_url, scalar_string,
};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Most items one envelope may carry.
pub const MAX_ITEMS: usize = 1000;

/// A parsed envelope; payloads borrow from the body.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope<'a> {
    pub header: Map<String, Value>,
    pub items: Vec<Item<'a>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Item<'a> {
    /// The item header's `type` (empty when absent).
    pub kind: String,
    pub header: Map<String, Value>,
    pub payload: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the envelope is empty")]
    Empty,
    #[error("line {line}: the header is not a JSON object: {reason}")]
    Header { line: usize, reason: String },
    #[error("item {item}: `length` is {length}, but only {left} bytes follow")]
    Length {
        item: usize,
        length: u64,
        left: usize,
    },
    #[error("more than {MAX_ITEMS} items")]
    TooManyItems,
}

fn header(line: &[u8], line_no: usize) -> Result<Map<String, Value>, EnvelopeError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match serde_json::from_slice::<Value>(line) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(EnvelopeError::Header {
            line: line_no,
            reason: "not an object".into(),
        }),
        Err(e) => Err(EnvelopeError::Header {
            line: line_no,
            reason: e.to_string(),
        }),
    }
}

/// Splits off the next line (without its `\n`).
fn next_line(rest: &[u8]) -> (&[u8], &[u8]) {
    match rest.iter().position(|b| *b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[]),
    }
}

/// Parses an envelope. Blank lines where an item header is expected are skipped.
pub fn parse_envelope(body: &[u8]) -> Result<Envelope<'_>, EnvelopeError> {
    let (first, mut rest) = next_line(body);
    if first.iter().all(u8::is_ascii_whitespace) && rest.is_empty() {
        return Err(EnvelopeError::Empty);
    }
    let env_header = header(first, 1)?;
    let mut items = Vec::new();
    let mut line_no = 1;
    while !rest.is_empty() {
        let (line, after) = next_line(rest);
        line_no += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            rest = after;
            continue;
        }
        if items.len() >= MAX_ITEMS {
            return Err(EnvelopeError::TooManyItems);
        }
        let h = header(line, line_no)?;
        let payload;
        match h.get("length").and_then(Value::as_u64) {
            Some(length) => {
                if length > after.len() as u64 {
                    return Err(EnvelopeError::Length {
                        item: items.len(),
                        length,
                        left: after.len(),
                    });
                }
                let n = length as usize;
                payload = &after[..n];
                let tail = &after[n..];
                rest = tail.strip_prefix(b"\n").unwrap_or(tail);
            }
            None => {
                let (p, tail) = next_line(after);
                payload = p.strip_suffix(b"\r").unwrap_or(p);
                rest = tail;
            }
        }
        line_no += payload.iter().filter(|b| **b == b'\n').count() + 1;
        let kind = h
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        items.push(Item {
            kind,
            header: h,
            payload,
        });
    }
    Ok(Envelope {
        header: env_header,
        items,
    })
}

impl<'a> Envelope<'a> {
    /// The `event` items' payloads.
    pub fn events(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.items
            .iter()
            .filter(|i| i.kind == "event")
            .map(|i| i.payload)
    }

    /// The header's `event_id`.
    pub fn event_id(&self) -> Option<&str> {
        self.header.get("event_id").and_then(Value::as_str)
    }

    /// The header's `dsn`.
    pub fn dsn(&self) -> Option<&str> {
        self.header.get("dsn").and_then(Value::as_str)
    }
}

/// A fresh Sentry event id: 32 hex digits.
pub fn new_event_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The public key of a DSN `http://<key>@host/<project>` (Herald: the API token).
pub fn dsn_key(dsn: &str) -> Option<String> {
    let u = url::Url::parse(dsn).ok()?;
    let user = u.username();
    (!user.is_empty()).then(|| {
        percent_encoding::percent_decode_str(user)
            .decode_utf8_lossy()
            .into_owned()
    })
}

/// `sentry_key` from an `X-Sentry-Auth` header (`Sentry sentry_key=…, sentry_version=7`).
pub fn auth_header_key(header: &str) -> Option<String> {
    let h = header.trim();
    let h = h
        .strip_prefix("Sentry ")
        .or_else(|| h.strip_prefix("sentry "))
        .unwrap_or(h);
    h.split(',').find_map(|part| {
        let (k, v) = part.trim().split_once('=')?;
        (k.trim() == "sentry_key" && !v.trim().is_empty()).then(|| v.trim().to_string())
    })
}

fn str_at<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

fn string_at(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(scalar_string)
}

/// The event's message: `message` (a string or `{formatted, message}`) or `logentry`.
fn event_message(e: &Value) -> Option<String> {
    let from = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(_) => string_at(v, "formatted").or_else(|| string_at(v, "message")),
        _ => None,
    };
    e.get("message")
        .and_then(from)
        .or_else(|| e.get("logentry").and_then(from))
        .filter(|s| !s.trim().is_empty())
}

fn frame(f: &Value) -> Frame {
    Frame {
        filename: string_at(f, "filename").or_else(|| string_at(f, "abs_path")),
        function: string_at(f, "function"),
        module: string_at(f, "module"),
        lineno: f.get("lineno").and_then(Value::as_u64),
        in_app: f.get("in_app").and_then(Value::as_bool),
        context_line: string_at(f, "context_line"),
    }
}

/// The raised exception: the last of `exception.values` (Sentry lists chained exceptions
/// oldest first), with its stack trace.
fn exception(e: &Value) -> Option<ExceptionInfo> {
    let ex = e.get("exception")?;
    let values = match ex {
        Value::Array(v) => v,
        Value::Object(_) => ex.get("values")?.as_array()?,
        _ => return None,
    };
    let last = values.last()?;
    let frames = last
        .pointer("/stacktrace/frames")
        .or_else(|| e.pointer("/stacktrace/frames"))
        .and_then(Value::as_array)
        .map(|fs| fs.iter().map(frame).collect())
        .unwrap_or_default();
    Some(ExceptionInfo {
        kind: string_at(last, "type"),
        value: string_at(last, "value"),
        module: string_at(last, "module"),
        stacktrace: frames,
    })
}

/// Tags as an object or as `[[key, value], …]`.
fn tags(e: &Value) -> BTreeMap<String, String> {
    match e.get("tags") {
        Some(Value::Object(o)) => o
            .iter()
            .filter_map(|(k, v)| scalar_string(v).map(|s| (k.clone(), s)))
            .collect(),
        Some(Value::Array(pairs)) => pairs
            .iter()
            .filter_map(|p| {
                let p = p.as_array()?;
                Some((scalar_string(p.first()?)?, scalar_string(p.get(1)?)?))
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// Maps a Sentry event to an error report (not yet validated). The service is the event's
/// `service` tag, else `project`.
pub fn event_to_report(e: &Value, project: &str) -> Option<ErrorReport> {
    if !e.is_object() {
        return None;
    }
    let tags = tags(e);
    let request = e.get("request").filter(|r| r.is_object()).map(|r| {
        let url = string_at(r, "url");
        RequestInfo {
            method: string_at(r, "method"),
            path: url.as_deref().and_then(path_of_url),
            url,
        }
    });
    let user = e.get("user").filter(|u| u.is_object()).map(|u| UserInfo {
        id: string_at(u, "id"),
        username: string_at(u, "username").or_else(|| string_at(u, "name")),
        email: string_at(u, "email"),
        ip_address: string_at(u, "ip_address"),
    });
    let fingerprint = e
        .get("fingerprint")
        .and_then(Value::as_array)
        .map(|fp| fp.iter().filter_map(scalar_string).collect::<Vec<_>>())
        .filter(|fp| !fp.is_empty());
    Some(ErrorReport {
        service: tags
            .get("service")
            .cloned()
            .or_else(|| Some(project.to_string())),
        environment: string_at(e, "environment"),
        level: string_at(e, "level"),
        message: event_message(e),
        exception: exception(e),
        request,
        user: user.filter(|u| *u != UserInfo::default()),
        tags,
        fingerprint,
        release: string_at(e, "release"),
        server_name: string_at(e, "server_name"),
        event_id: str_at(e, "event_id").map(str::to_string),
        to: None,
        extra: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_bytes_parse_or_fail_without_panicking(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(env) = parse_envelope(&data) {
                prop_assert!(env.items.iter().map(|i| i.payload.len()).sum::<usize>() <= data.len());
            }
        }

        #[test]
        fn envelopes_of_any_payloads_round_trip(payloads in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..64), any::<bool>()), 0..8)) {
            let mut body = b"{\"event_id\":\"x\"}\n".to_vec();
            for (p, with_length) in &payloads {
                if *with_length {
                    body.extend_from_slice(format!("{{\"type\":\"attachment\",\"length\":{}}}\n", p.len()).as_bytes());
                    body.extend_from_slice(p);
                    body.push(b'\n');
                }
            }
            let env = parse_envelope(&body).unwrap();
            let expected: Vec<&[u8]> = payloads.iter().filter(|(_, l)| *l).map(|(p, _)| p.as_slice()).collect();
            let got: Vec<&[u8]> = env.items.iter().map(|i| i.payload).collect();
            prop_assert_eq!(got, expected);
        }
    }

    #[test]
    fn items_with_and_without_length() {
        let body = b"{\"dsn\":\"http://hrld_abc_def@127.0.0.1:8080/1\"}\n{\"type\":\"event\",\"length\":9}\n{\"a\":\"\n\"}\n{\"type\":\"session\"}\n{\"sid\":1}\n\n{\"type\":\"attachment\",\"length\":3}\nxyz";
        let env = parse_envelope(body).unwrap();
        assert_eq!(env.items.len(), 3);
        assert_eq!(env.items[0].payload, b"{\"a\":\"\n\"}".as_slice());
        assert_eq!(env.items[1].kind, "session");
        assert_eq!(env.items[1].payload, b"{\"sid\":1}");
        assert_eq!(env.items[2].payload, b"xyz");
        assert_eq!(dsn_key(env.dsn().unwrap()).as_deref(), Some("hrld_abc_def"));
    }

    #[test]
    fn bad_envelopes_are_errors_not_panics() {
        assert_eq!(parse_envelope(b""), Err(EnvelopeError::Empty));
        assert!(matches!(
            parse_envelope(b"not json\n"),
            Err(EnvelopeError::Header { line: 1, .. })
        ));
        assert!(matches!(
            parse_envelope(b"{}\n{\"type\":\"event\",\"length\":100}\n{}"),
            Err(EnvelopeError::Length { .. })
        ));
        assert!(matches!(
            parse_envelope(b"{}\n[1]\n"),
            Err(EnvelopeError::Header { line: 2, .. })
        ));
        // A header alone is a valid, empty envelope.
        assert_eq!(parse_envelope(b"{}").unwrap().items.len(), 0);
    }

    #[test]
    fn auth_keys() {
        assert_eq!(
            auth_header_key(
                "Sentry sentry_key=hrld_x_y, sentry_version=7, sentry_client=sentry.python/2.0"
            )
            .as_deref(),
            Some("hrld_x_y")
        );
        assert_eq!(auth_header_key("Sentry sentry_version=7"), None);
        assert_eq!(dsn_key("http://127.0.0.1/1"), None);
        assert_eq!(dsn_key("garbage"), None);
    }

    #[test]
    fn events_map_to_reports() {
        let e = json!({
            "event_id": "9ec79c33ec9942ab8353589fcb2e04dc", "level": "error", "environment": "prod",
            "release": "shop@1.2", "server_name": "web-1", "tags": [["service", "shop"], ["region", "eu"]],
            "exception": {"values": [
                {"type": "KeyError", "value": "'x'"},
                {"type": "ZeroDivisionError", "value": "division by zero", "stacktrace": {"frames": [
                    {"filename": "django/core.py", "function": "dispatch", "lineno": 3, "in_app": false},
                    {"filename": "app/views.py", "function": "divide", "lineno": 42, "in_app": true, "context_line": "return a / b"}]}}]},
            "request": {"method": "GET", "url": "http://testserver/api/divide?x=1"},
            "user": {"id": 7, "username": "alice", "email": "a@x.io"},
        });
        let r = event_to_report(&e, "1").unwrap();
        assert_eq!(r.service.as_deref(), Some("shop"));
        let ex = r.exception.as_ref().unwrap();
        assert_eq!(ex.kind.as_deref(), Some("ZeroDivisionError"));
        assert_eq!(ex.stacktrace.len(), 2);
        assert_eq!(ex.stacktrace[1].in_app, Some(true));
        let req = r.request.as_ref().unwrap();
        assert_eq!(req.path.as_deref(), Some("/api/divide"));
        assert_eq!(r.user.as_ref().unwrap().id.as_deref(), Some("7"));
        assert_eq!(r.tags["region"], "eu");
        assert_eq!(
            r.event_id.as_deref(),
            Some("9ec79c33ec9942ab8353589fcb2e04dc")
        );
        let m =
            event_to_report(&json!({"logentry": {"formatted": "disk full"}}), "billing").unwrap();
        assert_eq!(m.message.as_deref(), Some("disk full"));
        assert_eq!(m.service.as_deref(), Some("billing"));
        assert!(event_to_report(&json!([1]), "x").is_none());
    }
}
