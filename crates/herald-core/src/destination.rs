//! Destinations: named places to deliver to, with their kind-specific settings and the
//! common delivery settings (routing, retries, timeouts, rate limit, breaker, fallback).
//!
//! The fields that carry secrets (URLs, header values, tokens, secrets, passwords) may
//! contain `${env:NAME}` or `${file:PATH}` references, also inside a longer value
//! (`"Bearer ${env:HERALD_SECRET_RISE_TOKEN}"`); they are resolved at send time, so
//! rotating a token means changing the referenced value, without a restart. A reference
//! in any other field (template text above all) is refused. The kind-specific part
//! lives in [`crate::kinds`].

use crate::breaker::{BreakerConfig, BreakerSpec};
use crate::duration::HumanDuration;
use crate::error::ValidationErrors;
use crate::glob::glob_match;
use crate::ids::is_valid_name;
pub use crate::kinds::*;
use crate::rate_limit::{RateLimit, RateLimitSpec};
use crate::retry::{RetryPolicy, RetrySpec};
pub use crate::secret_ref::*;
use crate::template::TemplateEngine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use utoipa::ToSchema;

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Caps on lists and expressions in a destination (input hardening).
const MAX_LIST: usize = 100;
const MAX_FILTER: usize = 4096;
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// A destination as configured (TOML or `PUT /api/v1/destinations/{name}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DestinationSpec {
    /// Taken from the path on `PUT`; if given in the body it must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// What it is for, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The owner's own id for it (Svix endpoints' `uid`), unique within its tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Free-form labels of the owner's (strings).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
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
    /// `"5/s"`, `"60/m"`, `"1000/h"` or `{"rate": "5/s", "burst": 5}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
    /// `false` disables; `{"failure_threshold", "cooldown", "max_cooldown"}` tunes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<BreakerSpec>,
    /// Where a message goes when this destination cannot take it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FallbackSpec>,
    /// Deliver in order (FIFO): message N+1 waits until N is delivered, dead or failed over.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ordered: bool,
    /// Disable the destination after this long without a successful delivery while it keeps
    /// failing (default 3 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_after: Option<HumanDuration>,
    #[serde(flatten)]
    pub kind: KindSpec,
}

/// When a fallback takes over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FallbackWhen {
    /// When the delivery would be dead-lettered.
    #[default]
    Dead,
    /// After the first failed attempt, or at once while the circuit breaker is open.
    Failure,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FallbackSpec {
    pub destination: String,
    #[serde(default)]
    pub when: FallbackWhen,
}

pub const DEFAULT_DISABLE_AFTER: Duration = Duration::from_secs(3 * 86_400);

fn is_false(b: &bool) -> bool {
    !*b
}

fn yes() -> bool {
    true
}

/// Event types Herald sends about itself (`herald.destination.disabled`, …).
pub const OPERATIONAL_PREFIX: &str = "herald.";

fn all_events() -> Vec<String> {
    vec!["*".to_string()]
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
        if self.events.len() > MAX_LIST {
            errs.push("events", format!("at most {MAX_LIST} patterns"));
        }
        if self.description.as_ref().is_some_and(|d| d.len() > 1024) {
            errs.push("description", "at most 1024 bytes");
        }
        if let Some(uid) = &self.uid
            && (uid.is_empty()
                || uid.len() > 256
                || !uid
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)))
        {
            errs.push("uid", "1–256 characters of a-z, A-Z, 0-9, _ . -");
        }
        if self.metadata.len() > MAX_LIST
            || self
                .metadata
                .iter()
                .any(|(k, v)| k.is_empty() || k.len() > 256 || v.len() > 1024)
        {
            errs.push(
                "metadata",
                format!("at most {MAX_LIST} entries, keys of 1–256 bytes, values of at most 1024"),
            );
        }
        if self.tags.len() > MAX_LIST {
            errs.push("tags", format!("at most {MAX_LIST} tags"));
        }
        if self.filter.as_ref().is_some_and(|f| f.len() > MAX_FILTER) {
            errs.push("filter", format!("at most {MAX_FILTER} bytes"));
        }
        if let Some(field) = self.reference_outside_secret_fields() {
            errs.push(
                field,
                "`${env:…}`/`${file:…}` references are resolved only in fields that carry secrets (URLs, header values, tokens, secrets, passwords), never in templates or other settings",
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
        if let Some(r) = &self.rate_limit
            && let Err(e) = RateLimit::from_spec(r, "rate_limit")
        {
            errs.0.extend(e.0);
        }
        if let Err(e) = BreakerConfig::from_spec(self.circuit_breaker.as_ref(), "circuit_breaker") {
            errs.0.extend(e.0);
        }
        if let Some(f) = &self.fallback {
            if !is_valid_name(&f.destination) {
                errs.push("fallback.destination", "must be a destination name");
            } else if f.destination == name {
                errs.push(
                    "fallback.destination",
                    "a destination cannot fall back to itself",
                );
            }
        }
        if let Some(d) = self.disable_after
            && (d.0 < Duration::from_secs(1) || d.0 > Duration::from_secs(365 * 86_400))
        {
            errs.push("disable_after", "must be between 1s and 365d");
        }
        self.kind.validate(templates, &mut errs);
        errs.into_result()
    }

    /// Fills in generated values (a webhook secret when none was given). Returns the
    /// generated secret so the caller can show it once.
    pub fn complete(&mut self) -> Option<String> {
        self.kind.complete()
    }

    /// A copy safe to show: inline secrets masked.
    pub fn masked(&self) -> DestinationSpec {
        let mut out = self.clone();
        out.kind.mask();
        out
    }

    /// A copy for readers who may see no secret at all: every header value and URL path,
    /// query and user-info masked too ([`KindSpec::mask_all`]).
    pub fn masked_all(&self) -> DestinationSpec {
        let mut out = self.clone();
        out.kind.mask_all();
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

    /// The rate limit, if any (validated on save).
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.rate_limit
            .as_ref()
            .and_then(|r| RateLimit::from_spec(r, "rate_limit").ok())
    }

    /// The breaker configuration, or `None` when disabled (validated on save).
    pub fn breaker(&self) -> Option<BreakerConfig> {
        BreakerConfig::from_spec(self.circuit_breaker.as_ref(), "circuit_breaker")
            .unwrap_or(Some(BreakerConfig::default()))
    }

    pub fn disable_after(&self) -> Duration {
        self.disable_after
            .map(|d| d.0)
            .unwrap_or(DEFAULT_DISABLE_AFTER)
    }

    /// A setting (other than a secret-bearing field) that holds a reference: references
    /// there would never be resolved, and resolving them in template text would let a
    /// template read any variable or file, so they are refused.
    fn reference_outside_secret_fields(&self) -> Option<String> {
        let mut rest = self.clone();
        let _ = rest.kind.visit_secret_fields(&mut |_, v| {
            v.clear();
            Ok(())
        });
        let v = serde_json::to_value(&rest).ok()?;
        first_reference(&v, "")
    }

    /// Whether this destination's `events` patterns accept an event type. Herald's own
    /// operational events (`herald.*`) go only to destinations that ask for them by a
    /// pattern starting with `herald.`: a catch-all `*` — a customer's endpoint, say — never
    /// hears about other destinations, nor spends its rate limit and retries on them.
    pub fn accepts_event(&self, event_type: &str) -> bool {
        let operational = event_type.starts_with(OPERATIONAL_PREFIX);
        self.events.iter().any(|p| {
            (!operational || p.starts_with(OPERATIONAL_PREFIX)) && glob_match(p, event_type)
        })
    }
}

/// The path of the first string in `v` holding a reference.
fn first_reference(v: &serde_json::Value, at: &str) -> Option<String> {
    let join = |k: &str| {
        if at.is_empty() {
            k.to_string()
        } else {
            format!("{at}.{k}")
        }
    };
    match v {
        serde_json::Value::String(s) if has_reference(s) => Some(at.to_string()),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, x)| first_reference(x, &format!("{at}[{i}]"))),
        serde_json::Value::Object(map) => {
            map.iter().find_map(|(k, x)| first_reference(x, &join(k)))
        }
        _ => None,
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
    fn resilience_settings_validate() {
        let t = TemplateEngine::new();
        let s = spec(
            json!({"kind": "webhook", "url": "https://e.com", "rate_limit": "5/s", "circuit_breaker": false,
                            "fallback": {"destination": "ops", "when": "failure"}, "ordered": true, "disable_after": "1d"}),
        );
        assert!(s.validate("hook", &t).is_ok());
        assert_eq!(s.rate_limit().unwrap().burst, 5.0);
        assert_eq!(s.breaker(), None);
        let s = spec(
            json!({"kind": "webhook", "url": "https://e.com", "rate_limit": {"rate": "1/x"}, "fallback": {"destination": "hook"},
                            "circuit_breaker": {"failure_threshold": 0}, "disable_after": "500ms"}),
        );
        let fields: Vec<String> = s
            .validate("hook", &t)
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            vec![
                "rate_limit",
                "circuit_breaker.failure_threshold",
                "fallback.destination",
                "disable_after"
            ]
        );
    }

    #[test]
    fn routes_by_event_glob() {
        let s = spec(json!({"kind": "webhook", "url": "https://e.com", "events": ["pipeline.*"]}));
        assert!(s.accepts_event("pipeline.done"));
        assert!(!s.accepts_event("error.reported"));
    }

    #[test]
    fn operational_events_reach_only_destinations_that_name_them() {
        let catch_all = spec(json!({"kind": "webhook", "url": "https://e.com"}));
        assert!(catch_all.accepts_event("order.paid"));
        assert!(!catch_all.accepts_event("herald.destination.disabled"));
        let broad = spec(
            json!({"kind": "webhook", "url": "https://e.com", "events": ["*.disabled", "h*"]}),
        );
        assert!(!broad.accepts_event("herald.destination.disabled"));
        let ops = spec(json!({"kind": "webhook", "url": "https://e.com", "events": ["herald.*"]}));
        assert!(ops.accepts_event("herald.destination.disabled"));
        assert!(!ops.accepts_event("order.paid"));
        let exact = spec(
            json!({"kind": "webhook", "url": "https://e.com", "events": ["herald.destination.disabled", "*"]}),
        );
        assert!(exact.accepts_event("herald.destination.disabled"));
        assert!(exact.accepts_event("order.paid"));
    }
}
