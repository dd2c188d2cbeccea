//! Destinations: named places to deliver to, with their kind-specific settings and the
//! common delivery settings (routing, retries, timeouts, rate limit, breaker, fallback).
//!
//! Any string field may contain `${env:NAME}` or `${file:PATH}` references, also inside a
//! longer value (`"Bearer ${env:RISE_TOKEN}"`); they are resolved at send time, so rotating
//! a token means changing the referenced value, without a restart.

use crate::duration::HumanDuration;
use crate::error::ValidationErrors;
use crate::glob::glob_match;
use crate::ids::is_valid_name;
use crate::retry::{RetryPolicy, RetrySpec};
use crate::signature::SigningKey;
use crate::template::TemplateEngine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use utoipa::ToSchema;

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);
const MASK: &str = "****";

/// A destination as configured (TOML or `PUT /api/v1/destinations/{name}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DestinationSpec {
    /// Taken from the path on `PUT`; if given in the body it must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Glob patterns on event types this destination receives when a message has no `to`.
    #[serde(default = "all_events")]
    pub events: Vec<String>,
    /// A minijinja expression over the message, e.g. `severity == "critical"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Largest number of attempts to this destination running at once (default 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(flatten)]
    pub kind: KindSpec,
}

fn yes() -> bool {
    true
}

fn all_events() -> Vec<String> {
    vec!["*".to_string()]
}

/// The kind-specific part of a destination, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KindSpec {
    /// POST JSON signed per Standard Webhooks.
    Webhook(WebhookSpec),
    /// Any in-house HTTP API, e.g. a messenger with a Bearer token.
    Http(HttpSpec),
}

/// One secret or several (during rotation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Secrets {
    One(String),
    Many(Vec<String>),
}

impl Secrets {
    pub fn as_slice(&self) -> &[String] {
        match self {
            Secrets::One(s) => std::slice::from_ref(s),
            Secrets::Many(v) => v,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Signing {
    /// Standard Webhooks headers only.
    Standard,
    /// Also `X-Webhook-Signature: sha256=<hex>` and `X-Webhook-Event` for older receivers.
    HexSha256,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    pub url: String,
    /// `whsec_…`; generated when absent. Several during rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secrets>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<Signing>,
    /// Extra request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Leave attachments out of the JSON body (default: included, base64).
    #[serde(default, skip_serializing_if = "is_false")]
    pub omit_attachments: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSpec {
    pub url: String,
    /// `POST` (default), `PUT` or `PATCH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// `"payload"` (default): the message payload as-is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// A minijinja template that renders the JSON body; wins over `body`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_template: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl KindSpec {
    pub fn name(&self) -> &'static str {
        match self {
            KindSpec::Webhook(_) => "webhook",
            KindSpec::Http(_) => "http",
        }
    }
}

/// Whether `s` contains a `${env:…}` or `${file:…}` reference.
pub fn has_reference(s: &str) -> bool {
    s.contains("${env:") || s.contains("${file:")
}

/// A piece of a string field: literal text or a reference to resolve at send time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment<'a> {
    Literal(&'a str),
    Env(&'a str),
    File(&'a str),
}

/// Splits a string field into literals and references; an unterminated or unknown
/// `${…}` is an error.
pub fn parse_references(s: &str) -> Result<Vec<Segment<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        if start > 0 {
            out.push(Segment::Literal(&rest[..start]));
        }
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "unterminated `${` reference".to_string())?;
        let inner = &after[..end];
        let seg = if let Some(name) = inner.strip_prefix("env:") {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!(
                    "`${{env:{name}}}`: variable names are [A-Za-z0-9_]+"
                ));
            }
            Segment::Env(name)
        } else if let Some(path) = inner.strip_prefix("file:") {
            if !path.starts_with('/') {
                return Err(format!("`${{file:{path}}}`: the path must be absolute"));
            }
            Segment::File(path)
        } else {
            return Err(format!(
                "`${{{inner}}}`: references are ${{env:NAME}} or ${{file:/path}}"
            ));
        };
        out.push(seg);
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        out.push(Segment::Literal(rest));
    }
    Ok(out)
}

/// Whether a header (by name) typically carries a credential.
pub fn is_sensitive_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "auth",
        "token",
        "secret",
        "key",
        "cookie",
        "password",
        "signature",
        "session",
    ]
    .iter()
    .any(|w| n.contains(w))
}

/// A secret value as shown on read: references stay visible (they are not secrets),
/// inline values are masked but for a short tail that helps tell them apart.
pub fn mask(value: &str) -> String {
    if has_reference(value) {
        return value.to_string();
    }
    let chars: Vec<char> = value.chars().collect();
    if chars.len() >= 20 {
        format!(
            "{MASK}{}",
            chars[chars.len() - 4..].iter().collect::<String>()
        )
    } else {
        MASK.to_string()
    }
}

fn check_url(url: &str, field: &str, errs: &mut ValidationErrors) {
    if let Err(e) = parse_references(url) {
        errs.push(field, e);
        return;
    }
    if has_reference(url) {
        return; // checked again after resolution, at send time
    }
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            if !u.username().is_empty() || u.password().is_some() {
                errs.push(field, "credentials in the URL are not allowed; use headers");
            }
        }
        Ok(_) => errs.push(field, "must be an http:// or https:// URL with a host"),
        Err(e) => errs.push(field, format!("not a valid URL: {e}")),
    }
}

/// Checks a header name and value (no CR/LF/NUL: header injection).
pub fn check_header(name: &str, value: &str) -> Result<(), String> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        return Err(format!("{name:?} is not a valid header name"));
    }
    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err("header values must not contain CR, LF or NUL".into());
    }
    Ok(())
}

fn check_headers(headers: &BTreeMap<String, String>, field: &str, errs: &mut ValidationErrors) {
    for (k, v) in headers {
        if let Err(e) = check_header(k, v).and_then(|_| parse_references(v).map(|_| ())) {
            errs.push(format!("{field}.{k}"), e);
        }
    }
}

impl DestinationSpec {
    /// Validates everything that can be checked without other destinations or I/O.
    /// `name` is the destination's name (from the path or the config key).
    pub fn validate(&self, name: &str, templates: &TemplateEngine) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::new();
        if !is_valid_name(name) {
            errs.push("name", "must match [a-z0-9][a-z0-9_-]{0,63}");
        }
        if let Some(n) = &self.name
            && n != name
        {
            errs.push(
                "name",
                format!("{n:?} does not match the name in the path ({name:?})"),
            );
        }
        if self.events.is_empty() {
            errs.push(
                "events",
                "must list at least one pattern (use [\"*\"] for every event)",
            );
        }
        for (i, e) in self.events.iter().enumerate() {
            if e.is_empty()
                || e.len() > 128
                || !e
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.:-*?".contains(&b))
            {
                errs.push(
                    format!("events[{i}]"),
                    "a glob of [A-Za-z0-9_.:-*?], at most 128 characters",
                );
            }
        }
        if let Some(f) = &self.filter
            && let Err(e) = templates.check_expression(f)
        {
            errs.push("filter", format!("does not compile: {e}"));
        }
        if let Err(e) = RetryPolicy::from_spec(self.retry.as_ref(), "retry") {
            errs.0.extend(e.0);
        }
        if let Some(t) = self.timeout
            && (t.0.is_zero() || t.0 > MAX_TIMEOUT)
        {
            errs.push("timeout", "must be between 1ms and 5m");
        }
        if self.max_in_flight == Some(0) || self.max_in_flight.is_some_and(|m| m > 1000) {
            errs.push("max_in_flight", "must be between 1 and 1000");
        }
        for (i, t) in self.tags.iter().enumerate() {
            if !is_valid_name(t) {
                errs.push(format!("tags[{i}]"), "must match [a-z0-9][a-z0-9_-]{0,63}");
            }
        }
        match &self.kind {
            KindSpec::Webhook(w) => {
                check_url(&w.url, "url", &mut errs);
                check_headers(&w.headers, "headers", &mut errs);
                if let Some(secrets) = &w.secret {
                    if secrets.as_slice().is_empty() {
                        errs.push(
                            "secret",
                            "give at least one secret, or omit it to have one generated",
                        );
                    }
                    for (i, s) in secrets.as_slice().iter().enumerate() {
                        let res = if has_reference(s) {
                            parse_references(s).map(|_| ())
                        } else {
                            SigningKey::parse(s).map(|_| ())
                        };
                        if let Err(e) = res {
                            errs.push(format!("secret[{i}]"), e);
                        }
                    }
                }
            }
            KindSpec::Http(h) => {
                check_url(&h.url, "url", &mut errs);
                check_headers(&h.headers, "headers", &mut errs);
                if let Some(m) = &h.method
                    && !matches!(m.as_str(), "POST" | "PUT" | "PATCH")
                {
                    errs.push("method", "must be POST, PUT or PATCH");
                }
                if let Some(b) = &h.body
                    && b != "payload"
                {
                    errs.push("body", "must be \"payload\" (or use body_template)");
                }
                if let Some(t) = &h.body_template
                    && let Err(e) = templates.check_template(t)
                {
                    errs.push("body_template", format!("does not compile: {e}"));
                }
            }
        }
        errs.into_result()
    }

    /// Fills in generated values (a webhook secret when none was given). Returns the
    /// generated secret so the caller can show it once.
    pub fn complete(&mut self) -> Option<String> {
        if let KindSpec::Webhook(w) = &mut self.kind
            && w.secret.is_none()
        {
            let s = SigningKey::generate();
            w.secret = Some(Secrets::One(s.clone()));
            return Some(s);
        }
        None
    }

    /// A copy safe to show: inline secrets masked.
    pub fn masked(&self) -> DestinationSpec {
        let mut out = self.clone();
        match &mut out.kind {
            KindSpec::Webhook(w) => {
                if let Some(s) = &mut w.secret {
                    *s = match s {
                        Secrets::One(v) => Secrets::One(mask(v)),
                        Secrets::Many(vs) => Secrets::Many(vs.iter().map(|v| mask(v)).collect()),
                    };
                }
                mask_headers(&mut w.headers);
            }
            KindSpec::Http(h) => mask_headers(&mut h.headers),
        }
        out
    }

    pub fn timeout(&self) -> Duration {
        self.timeout.map(|t| t.0).unwrap_or(DEFAULT_TIMEOUT)
    }

    /// The validated retry policy (falls back to the default if the spec is invalid, which
    /// `validate` prevents from being stored).
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::from_spec(self.retry.as_ref(), "retry").unwrap_or_default()
    }

    /// Whether this destination's `events` patterns accept an event type.
    pub fn accepts_event(&self, event_type: &str) -> bool {
        self.events.iter().any(|p| glob_match(p, event_type))
    }
}

fn mask_headers(headers: &mut BTreeMap<String, String>) {
    for (k, v) in headers.iter_mut() {
        if is_sensitive_header(k) {
            *v = mask(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> DestinationSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn parses_webhook_with_defaults() {
        let s = spec(json!({"kind": "webhook", "url": "https://example.com/hook"}));
        assert!(s.enabled);
        assert_eq!(s.events, vec!["*"]);
        assert!(s.validate("hook", &TemplateEngine::new()).is_ok());
        assert_eq!(s.timeout(), DEFAULT_TIMEOUT);
    }

    #[test]
    fn unknown_kind_and_unknown_field_are_errors() {
        assert!(
            serde_json::from_value::<DestinationSpec>(json!({"kind": "pigeon", "url": "x"}))
                .is_err()
        );
        assert!(
            serde_json::from_value::<DestinationSpec>(
                json!({"kind": "webhook", "url": "https://e.com", "urll": 1})
            )
            .is_err()
        );
    }

    #[test]
    fn validation_names_fields() {
        let t = TemplateEngine::new();
        let s = spec(
            json!({"kind": "http", "url": "ftp://x", "headers": {"X-A": "a\r\nb"}, "body_template": "{{ oops", "method": "GET"}),
        );
        let errs = s.validate("BAD NAME", &t).unwrap_err();
        let fields: Vec<&str> = errs.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec!["name", "url", "headers.X-A", "method", "body_template"]
        );
    }

    #[test]
    fn references_parse() {
        assert_eq!(
            parse_references("Bearer ${env:RISE_TOKEN}").unwrap(),
            vec![Segment::Literal("Bearer "), Segment::Env("RISE_TOKEN")]
        );
        assert_eq!(
            parse_references("${file:/run/secrets/t}").unwrap(),
            vec![Segment::File("/run/secrets/t")]
        );
        assert!(parse_references("${env:}").is_err());
        assert!(parse_references("${vault:x}").is_err());
        assert!(parse_references("${env:X").is_err());
        assert!(parse_references("${file:relative}").is_err());
    }

    #[test]
    fn secrets_are_generated_and_masked() {
        let mut s = spec(
            json!({"kind": "webhook", "url": "https://e.com", "headers": {"Authorization": "Bearer abcdefghijklmnopqrstu", "X-Trace": "1"}}),
        );
        let generated = s.complete().unwrap();
        assert!(generated.starts_with("whsec_"));
        let m = s.masked();
        let KindSpec::Webhook(w) = &m.kind else {
            panic!()
        };
        assert_eq!(w.secret, Some(Secrets::One(mask(&generated))));
        assert!(!serde_json::to_string(&m).unwrap().contains(&generated));
        assert_eq!(w.headers["Authorization"], "****rstu");
        assert_eq!(w.headers["X-Trace"], "1");
        let r = spec(
            json!({"kind": "http", "url": "https://e.com", "headers": {"Authorization": "Bearer ${env:T}"}}),
        );
        let KindSpec::Http(h) = r.masked().kind else {
            panic!()
        };
        assert_eq!(h.headers["Authorization"], "Bearer ${env:T}");
    }

    #[test]
    fn routes_by_event_glob() {
        let s = spec(json!({"kind": "webhook", "url": "https://e.com", "events": ["pipeline.*"]}));
        assert!(s.accepts_event("pipeline.done"));
        assert!(!s.accepts_event("error.reported"));
    }
}
