//! Error reports (DESIGN §9): what `POST /api/v1/errors` and the Sentry ingest take, how
//! reports fold into groups, and when a group alerts.
//!
//! **Grouping.** A report's group is its `fingerprint` when given (Sentry's `{{ default }}`
//! element stands for the default key), otherwise the exception type plus the innermost
//! in-app frame (the last `in_app` frame in Sentry's oldest-first order; the last frame when
//! none is marked in-app), as `module-or-filename` + `function` (line numbers are left out:
//! they move with every edit). An exception without frames groups by type + value; a report
//! without an exception by its message. Groups are per service.
//!
//! **Alerts** ([`observe`]): a group alerts when it is *new*, on a *regression* (a resolved
//! group seen again) and on a *spike* (the count in the current window reaches
//! `max(spike_threshold, spike_factor × the previous window's count)`; it fires once, when
//! the count crosses that line). At most one alert per group per window: a report that
//! would alert within `window` of the group's last alert is folded in and its reason is
//! kept pending; the first report after the window sends the pending alert, saying how many
//! reports were folded in since the previous one.
//!
//! ```
//! use herald_core::error_report::{AlertPolicy, AlertReason, observe};
//! let p = AlertPolicy { window_ms: 600_000, spike_factor: 5, spike_threshold: 10 };
//! let (g, alert) = observe(None, 0, &p);
//! assert_eq!(alert.unwrap().reason, AlertReason::New);
//! let (g, alert) = observe(Some(&g), 1_000, &p);
//! assert!(alert.is_none());
//! assert_eq!(g.folded, 1);
//! ```

use crate::error::ValidationErrors;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// The event type of every error alert.
pub const EVENT_TYPE: &str = "error.reported";
/// Frames kept per report (the innermost ones).
pub const MAX_FRAMES: usize = 100;
/// Longer strings are cut (reports are evidence, not input to reject).
pub const MAX_STRING: usize = 4096;
pub const MAX_MESSAGE: usize = 16 * 1024;
pub const MAX_TAGS: usize = 100;
pub const MAX_FINGERPRINT: usize = 32;
pub const MAX_SERVICE: usize = 128;
/// The service of a report that names none.
pub const DEFAULT_SERVICE: &str = "default";

/// `POST /api/v1/errors` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorReport {
    /// The application; default `default`. Groups are per service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// `error`, `fatal`, `warning`… (free text, lower-cased).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception: Option<ExceptionInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserInfo>,
    /// String values (numbers and booleans are turned into strings).
    #[serde(
        default,
        deserialize_with = "scalar_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub tags: BTreeMap<String, String>,
    /// Groups reports explicitly (a string or a list of strings); `{{ default }}` stands
    /// for the default grouping.
    #[serde(
        default,
        deserialize_with = "string_or_list",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<Vec<String>>)]
    pub fingerprint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// The reporter's id for this event (Sentry `event_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// Explicit destinations for the alert; otherwise it is routed by `events` + `filter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<String>>,
    /// Anything else worth showing (kept in the alert's payload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub extra: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExceptionInfo {
    #[serde(
        rename = "type",
        default,
        deserialize_with = "opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub kind: Option<String>,
    #[serde(
        default,
        deserialize_with = "opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub value: Option<String>,
    #[serde(
        default,
        deserialize_with = "opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub module: Option<String>,
    /// Oldest call first, the raising frame last (Sentry's order).
    #[serde(default, deserialize_with = "null_as_default")]
    pub stacktrace: Vec<Frame>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Frame {
    #[serde(
        default,
        deserialize_with = "opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub filename: Option<String>,
    #[serde(
        default,
        deserialize_with = "opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub function: Option<String>,
    #[serde(
        default,
        deserialize_with = "opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub module: Option<String>,
    #[serde(
        default,
        deserialize_with = "opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<u64>)]
    pub lineno: Option<u64>,
    #[serde(
        default,
        deserialize_with = "opt_bool",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<bool>)]
    pub in_app: Option<bool>,
    #[serde(
        default,
        deserialize_with = "opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub context_line: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RequestInfo {
    #[serde(
        default,
        deserialize_with = "opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub method: Option<String>,
    #[serde(
        default,
        deserialize_with = "opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub url: Option<String>,
    #[serde(
        default,
        deserialize_with = "opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub path: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UserInfo {
    /// A string or a number.
    #[serde(
        default,
        deserialize_with = "opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub id: Option<String>,
    #[serde(
        default,
        deserialize_with = "opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub username: Option<String>,
    #[serde(
        default,
        deserialize_with = "opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub email: Option<String>,
    #[serde(
        default,
        deserialize_with = "opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub ip_address: Option<String>,
}

/// A scalar as a string: strings as they are, numbers and booleans printed, null absent.
pub fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Value::deserialize(d)?;
    match v {
        Value::Null => Ok(None),
        Value::Array(_) | Value::Object(_) => Err(serde::de::Error::custom(
            "expected a string, a number or a boolean",
        )),
        other => Ok(scalar_string(&other)),
    }
}

fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(Value::deserialize(d)?.as_u64())
}

fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(Value::deserialize(d)?.as_bool())
}

fn null_as_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn scalar_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(BTreeMap::new()),
        Value::Object(o) => Ok(o
            .iter()
            .filter_map(|(k, v)| scalar_string(v).map(|s| (k.clone(), s)))
            .collect()),
        _ => Err(serde::de::Error::custom("expected an object")),
    }
}

fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(vec![s])),
        Value::Array(items) => items
            .iter()
            .map(|v| {
                scalar_string(v)
                    .ok_or_else(|| serde::de::Error::custom("expected a list of strings"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        _ => Err(serde::de::Error::custom(
            "expected a string or a list of strings",
        )),
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
fn cut(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
}

fn cut_opt(s: &mut Option<String>, max: usize) {
    if let Some(s) = s {
        cut(s, max);
    }
}

impl ErrorReport {
    /// Checks the report and bounds it: long strings are cut, only the innermost frames and
    /// the first tags are kept, the service defaults to `default`.
    pub fn validate(mut self) -> Result<ErrorReport, ValidationErrors> {
        let mut errs = ValidationErrors::new();
        let service = self
            .service
            .take()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_SERVICE.to_string());
        if service.len() > MAX_SERVICE || service.chars().any(char::is_control) {
            errs.push(
                "service",
                format!("at most {MAX_SERVICE} bytes without control characters"),
            );
        }
        self.service = Some(service);
        let has_exception = self
            .exception
            .as_ref()
            .is_some_and(|e| e.kind.is_some() || e.value.is_some() || !e.stacktrace.is_empty());
        if !has_exception && self.message.as_deref().is_none_or(|m| m.trim().is_empty()) {
            errs.push(
                "message",
                "a report needs a message or an exception (type, value or stacktrace)",
            );
        }
        if let Some(fp) = &self.fingerprint
            && (fp.is_empty() || fp.len() > MAX_FINGERPRINT || fp.iter().any(|s| s.len() > 1024))
        {
            errs.push(
                "fingerprint",
                format!("1–{MAX_FINGERPRINT} strings of at most 1024 bytes"),
            );
        }
        if let Some(to) = &self.to
            && to.is_empty()
        {
            errs.push(
                "to",
                "must name at least one destination (omit it to route by events)",
            );
        }
        errs.into_result()?;
        self.level = Some(
            self.level
                .take()
                .map(|l| l.trim().to_ascii_lowercase())
                .filter(|l| !l.is_empty())
                .unwrap_or_else(|| "error".into()),
        );
        cut_opt(&mut self.level, 32);
        cut_opt(&mut self.message, MAX_MESSAGE);
        for s in [
            &mut self.environment,
            &mut self.release,
            &mut self.server_name,
            &mut self.event_id,
        ] {
            cut_opt(s, MAX_STRING);
        }
        if let Some(e) = &mut self.exception {
            cut_opt(&mut e.kind, MAX_STRING);
            cut_opt(&mut e.value, MAX_MESSAGE);
            cut_opt(&mut e.module, MAX_STRING);
            if e.stacktrace.len() > MAX_FRAMES {
                e.stacktrace.drain(..e.stacktrace.len() - MAX_FRAMES);
            }
            for f in &mut e.stacktrace {
                for s in [
                    &mut f.filename,
                    &mut f.function,
                    &mut f.module,
                    &mut f.context_line,
                ] {
                    cut_opt(s, MAX_STRING);
                }
            }
        }
        if let Some(r) = &mut self.request {
            for s in [&mut r.method, &mut r.url, &mut r.path] {
                cut_opt(s, MAX_STRING);
            }
            if r.path.is_none() {
                r.path = r.url.as_deref().and_then(path_of_url);
            }
        }
        if let Some(u) = &mut self.user {
            for s in [&mut u.id, &mut u.username, &mut u.email, &mut u.ip_address] {
                cut_opt(s, MAX_STRING);
            }
        }
        if self.tags.len() > MAX_TAGS {
            self.tags = std::mem::take(&mut self.tags)
                .into_iter()
                .take(MAX_TAGS)
                .collect();
        }
        for v in self.tags.values_mut() {
            cut(v, MAX_STRING);
        }
        Ok(self)
    }

    /// The service (after [`validate`](Self::validate), always set).
    pub fn service(&self) -> &str {
        self.service.as_deref().unwrap_or(DEFAULT_SERVICE)
    }

    /// The frame the group is named after: the innermost in-app frame, else the last.
    pub fn culprit_frame(&self) -> Option<&Frame> {
        let frames = &self.exception.as_ref()?.stacktrace;
        frames
            .iter()
            .rev()
            .find(|f| f.in_app == Some(true))
            .or(frames.last())
    }

    /// The exception type, if any.
    pub fn exception_type(&self) -> Option<&str> {
        self.exception.as_ref()?.kind.as_deref()
    }

    /// The exception value, else the message.
    pub fn detail(&self) -> Option<&str> {
        self.exception
            .as_ref()
            .and_then(|e| e.value.as_deref())
            .or(self.message.as_deref())
            .filter(|s| !s.trim().is_empty())
    }
}

/// The path of an absolute URL (`https://h/a/b?q` → `/a/b`), or of a relative one.
pub fn path_of_url(u: &str) -> Option<String> {
    match url::Url::parse(u) {
        Ok(parsed) => Some(parsed.path().to_string()),
        Err(_) if u.starts_with('/') => Some(u.split(['?', '#']).next().unwrap_or(u).to_string()),
        Err(_) => None,
    }
}

/// `app/views.py in divide` — where an error happened, for people.
pub fn frame_label(f: &Frame) -> String {
    let place = f.module.as_deref().or(f.filename.as_deref()).unwrap_or("?");
    match (&f.function, f.lineno) {
        (Some(func), _) => format!("{place} in {func}"),
        (None, Some(line)) => format!("{place}:{line}"),
        (None, None) => place.to_string(),
    }
}

/// How a report is grouped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grouping {
    /// SHA-256 (hex) of the service and the grouping parts: the group's identity.
    pub key: String,
    /// The parts, readable (`ZeroDivisionError · app.views in divide`).
    pub fingerprint: String,
    /// `ZeroDivisionError: division by zero`, or the message's first line.
    pub title: String,
    /// The culprit frame, readable.
    pub culprit: Option<String>,
}

fn first_line(s: &str) -> &str {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

fn default_parts(r: &ErrorReport) -> Vec<String> {
    let message = r.message.as_deref().map(first_line).unwrap_or("");
    match &r.exception {
        Some(e) if e.kind.is_some() || !e.stacktrace.is_empty() => {
            let kind = e.kind.clone().unwrap_or_else(|| "Error".into());
            match r.culprit_frame() {
                Some(f) => vec![
                    kind,
                    frame_label(&Frame {
                        lineno: None,
                        ..f.clone()
                    }),
                ],
                None => vec![
                    kind,
                    e.value.as_deref().map(first_line).unwrap_or(message).into(),
                ],
            }
        }
        Some(e) => vec![
            "Error".into(),
            e.value.as_deref().map(first_line).unwrap_or(message).into(),
        ],
        None => vec![message.to_string()],
    }
}

/// Groups a validated report.
pub fn group(r: &ErrorReport) -> Grouping {
    let defaults = default_parts(r);
    let parts: Vec<String> = match &r.fingerprint {
        Some(fp) => fp
            .iter()
            .flat_map(|p| {
                let t = p.trim();
                if t == "{{ default }}" || t == "{{default}}" {
                    defaults.clone()
                } else {
                    vec![p.clone()]
                }
            })
            .collect(),
        None => defaults,
    };
    let mut h = Sha256::new();
    h.update(r.service().as_bytes());
    for p in &parts {
        h.update([0u8]);
        h.update(p.as_bytes());
    }
    let mut fingerprint = parts.join(" · ");
    cut(&mut fingerprint, 1024);
    let mut title = match (r.exception_type(), r.detail()) {
        (Some(t), Some(d)) => format!("{t}: {}", first_line(d)),
        (Some(t), None) => t.to_string(),
        (None, Some(d)) => first_line(d).to_string(),
        (None, None) => "Error".to_string(),
    };
    cut(&mut title, 512);
    Grouping {
        key: hex::encode(h.finalize()),
        fingerprint,
        title,
        culprit: r.culprit_frame().map(frame_label),
    }
}

/// Whether a group is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GroupStatus {
    Unresolved,
    Resolved,
}

impl GroupStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupStatus::Unresolved => "unresolved",
            GroupStatus::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "unresolved" => Some(GroupStatus::Unresolved),
            "resolved" => Some(GroupStatus::Resolved),
            _ => None,
        }
    }
}

/// Why an alert is sent. Ordered by importance: when reasons meet, the greater wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertReason {
    Spike,
    Regression,
    New,
}

impl AlertReason {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertReason::New => "new",
            AlertReason::Regression => "regression",
            AlertReason::Spike => "spike",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "new" => Some(AlertReason::New),
            "regression" => Some(AlertReason::Regression),
            "spike" => Some(AlertReason::Spike),
            _ => None,
        }
    }

    /// How an alert says it, e.g. `New error`.
    pub fn label(self) -> &'static str {
        match self {
            AlertReason::New => "New error",
            AlertReason::Regression => "Regression: seen again after it was resolved",
            AlertReason::Spike => "Spike",
        }
    }
}

/// When groups alert (configuration `[errors]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlertPolicy {
    /// At most one alert per group per window; also the span the spike rule counts over.
    pub window_ms: i64,
    /// A spike is `spike_factor` × the previous window's count…
    pub spike_factor: i64,
    /// …and at least this many reports in the current window.
    pub spike_threshold: i64,
}

impl Default for AlertPolicy {
    fn default() -> Self {
        AlertPolicy {
            window_ms: 600_000,
            spike_factor: 5,
            spike_threshold: 10,
        }
    }
}

/// The counters of a group that decide its alerts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    pub status: GroupStatus,
    /// Reports ever.
    pub count: i64,
    pub first_seen: i64,
    pub last_seen: i64,
    /// Start of the current counting window and the reports in it.
    pub window_start: i64,
    pub window_count: i64,
    /// Reports in the window before (0 when it was empty or longer ago).
    pub prev_window_count: i64,
    pub last_alert_at: Option<i64>,
    /// Reports since the last alert that did not alert.
    pub folded: i64,
    /// An alert held back by the window: sent with the first report after it.
    pub pending: Option<AlertReason>,
}

/// An alert to send for the report just observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlertDecision {
    pub reason: AlertReason,
    /// Reports folded in since the previous alert (not counting this one).
    pub folded: i64,
}

/// Folds one report seen at `now` into a group (`None`: the group is new) and decides
/// whether it alerts. See the module docs for the rules.
pub fn observe(
    prev: Option<&GroupState>,
    now: i64,
    p: &AlertPolicy,
) -> (GroupState, Option<AlertDecision>) {
    let Some(prev) = prev else {
        let g = GroupState {
            status: GroupStatus::Unresolved,
            count: 1,
            first_seen: now,
            last_seen: now,
            window_start: now,
            window_count: 1,
            prev_window_count: 0,
            last_alert_at: Some(now),
            folded: 0,
            pending: None,
        };
        let alert = AlertDecision {
            reason: AlertReason::New,
            folded: 0,
        };
        return (g, Some(alert));
    };
    let w = p.window_ms.max(1);
    let mut g = prev.clone();
    g.count += 1;
    g.last_seen = g.last_seen.max(now);
    if now >= g.window_start.saturating_add(w) {
        g.prev_window_count = if now < g.window_start.saturating_add(2 * w) {
            g.window_count
        } else {
            0
        };
        g.window_start = now;
        g.window_count = 0;
    }
    g.window_count += 1;
    let mut reason = g.pending;
    if g.status == GroupStatus::Resolved {
        g.status = GroupStatus::Unresolved;
        reason = reason.max(Some(AlertReason::Regression));
    }
    let threshold = p
        .spike_threshold
        .max(1)
        .max(p.spike_factor.saturating_mul(g.prev_window_count));
    if g.window_count == threshold {
        reason = reason.max(Some(AlertReason::Spike));
    }
    let open = g.last_alert_at.is_none_or(|t| now - t >= w);
    match reason {
        Some(reason) if open => {
            let alert = AlertDecision {
                reason,
                folded: g.folded,
            };
            g.folded = 0;
            g.pending = None;
            g.last_alert_at = Some(now);
            (g, Some(alert))
        }
        _ => {
            g.folded += 1;
            g.pending = reason;
            (g, None)
        }
    }
}

/// The payload of an `error.reported` message: what webhooks get as `data` and what the
/// chat and email renderings are built from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorAlert {
    pub group: String,
    pub reason: AlertReason,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub culprit: Option<String>,
    /// Reports in the group ever.
    pub count: i64,
    /// Reports folded in since the previous alert.
    pub folded: i64,
    /// Reports in the current window, and its length (`10m`).
    pub window_count: i64,
    pub window: String,
    /// RFC 3339.
    pub first_seen: String,
    pub last_seen: String,
    /// The report that triggered the alert (validated).
    pub report: ErrorReport,
}

impl ErrorAlert {
    /// `ZeroDivisionError in shop` (or the title when there is no exception type).
    pub fn headline(&self) -> String {
        let what = self
            .report
            .exception_type()
            .map(str::to_string)
            .unwrap_or_else(|| self.title.clone());
        format!("{what} in {}", self.report.service())
    }

    /// `New error`, `Spike: 57 in 10m`…, plus what was folded in.
    pub fn reason_line(&self) -> String {
        let mut s = match self.reason {
            AlertReason::Spike => format!("Spike: {} in {}", self.window_count, self.window),
            r => r.label().to_string(),
        };
        if self.folded > 0 {
            s.push_str(&format!(" · {} more since the last alert", self.folded));
        }
        s
    }

    /// `GET /api/orders` when the request is known.
    pub fn request_line(&self) -> Option<String> {
        let r = self.report.request.as_ref()?;
        let path = r.path.as_deref().or(r.url.as_deref());
        match (r.method.as_deref(), path) {
            (Some(m), Some(p)) => Some(format!("{m} {p}")),
            (None, Some(p)) => Some(p.to_string()),
            (Some(m), None) => Some(m.to_string()),
            (None, None) => None,
        }
    }

    /// The user, as `username (email, id 7)` with what is known.
    pub fn user_line(&self) -> Option<String> {
        let u = self.report.user.as_ref()?;
        let name = u
            .username
            .as_deref()
            .or(u.email.as_deref())
            .or(u.id.as_deref())?;
        let mut extra = Vec::new();
        if let Some(e) = u.email.as_deref().filter(|e| *e != name) {
            extra.push(e.to_string());
        }
        if let Some(id) = u.id.as_deref().filter(|i| *i != name) {
            extra.push(format!("id {id}"));
        }
        Some(if extra.is_empty() {
            name.to_string()
        } else {
            format!("{name} ({})", extra.join(", "))
        })
    }

    /// The innermost `max` frames, innermost first: `app/views.py:42 in divide` and the
    /// source line under it.
    pub fn frames_text(&self, max: usize) -> String {
        let Some(e) = &self.report.exception else {
            return String::new();
        };
        let mut out = String::new();
        for f in e.stacktrace.iter().rev().take(max) {
            let place = f.filename.as_deref().or(f.module.as_deref()).unwrap_or("?");
            out.push_str(place);
            if let Some(l) = f.lineno {
                out.push_str(&format!(":{l}"));
            }
            if let Some(func) = &f.function {
                out.push_str(&format!(" in {func}"));
            }
            out.push('\n');
            if let Some(c) = f
                .context_line
                .as_deref()
                .map(str::trim)
                .filter(|c| !c.is_empty())
            {
                out.push_str("    ");
                out.push_str(c);
                out.push('\n');
            }
        }
        out
    }

    /// The message text of the alert, for kinds without a dedicated rendering.
    pub fn text(&self) -> String {
        let mut lines = vec![self.title.clone(), self.reason_line()];
        if let Some(r) = self.request_line() {
            lines.push(r);
        }
        if let Some(u) = self.user_line() {
            lines.push(format!("user {u}"));
        }
        if let Some(c) = &self.culprit {
            lines.push(c.clone());
        }
        lines.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(v: Value) -> ErrorReport {
        serde_json::from_value::<ErrorReport>(v)
            .unwrap()
            .validate()
            .unwrap()
    }

    const P: AlertPolicy = AlertPolicy {
        window_ms: 1000,
        spike_factor: 5,
        spike_threshold: 10,
    };

    #[test]
    fn groups_by_type_and_innermost_in_app_frame() {
        let a = report(
            json!({"service": "shop", "exception": {"type": "KeyError", "value": "'a'", "stacktrace": [
            {"filename": "app/views.py", "function": "order", "lineno": 10, "in_app": true},
            {"filename": "app/cart.py", "function": "total", "lineno": 42, "in_app": true},
            {"filename": "django/core.py", "function": "get", "lineno": 7, "in_app": false}]}}),
        );
        let g = group(&a);
        assert_eq!(g.culprit.as_deref(), Some("app/cart.py in total"));
        assert_eq!(g.title, "KeyError: 'a'");
        // Another value and line, same place: same group.
        let b = report(
            json!({"service": "shop", "exception": {"type": "KeyError", "value": "'b'", "stacktrace": [
            {"filename": "app/cart.py", "function": "total", "lineno": 43, "in_app": true}]}}),
        );
        assert_eq!(group(&b).key, g.key);
        // Another service: another group.
        let mut c = b.clone();
        c.service = Some("admin".into());
        assert_ne!(group(&c).key, g.key);
        // No in-app frame: the last frame.
        let d = report(json!({"exception": {"type": "E", "stacktrace": [
            {"filename": "a.py", "function": "f"}, {"filename": "b.py", "function": "g"}]}}));
        assert_eq!(group(&d).culprit.as_deref(), Some("b.py in g"));
    }

    #[test]
    fn fingerprint_and_message_grouping() {
        let a = report(json!({"message": "disk full", "fingerprint": ["disk"]}));
        let b = report(json!({"message": "disk almost full", "fingerprint": "disk"}));
        assert_eq!(group(&a).key, group(&b).key);
        let c = report(json!({"message": "disk full"}));
        assert_ne!(group(&a).key, group(&c).key);
        let d = report(json!({"message": "disk full\nmore"}));
        assert_eq!(group(&c).key, group(&d).key);
        let e = report(json!({"message": "disk full", "fingerprint": ["{{ default }}", "eu"]}));
        assert_eq!(group(&e).fingerprint, "disk full · eu");
    }

    #[test]
    fn validation_bounds_and_rejects() {
        let err = serde_json::from_value::<ErrorReport>(json!({"service": "x"}))
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(err.0[0].field, "message");
        assert!(
            serde_json::from_value::<ErrorReport>(json!({"message": "x", "bogus": 1})).is_err()
        );
        let frames: Vec<Value> = (0..300)
            .map(|i| json!({"function": format!("f{i}"), "lineno": i}))
            .collect();
        let r = report(
            json!({"message": "x".repeat(100_000), "user": {"id": 7}, "tags": {"n": 1, "b": true},
                              "exception": {"type": "E", "stacktrace": frames}}),
        );
        assert!(r.message.as_ref().unwrap().len() <= MAX_MESSAGE + 3);
        let st = &r.exception.as_ref().unwrap().stacktrace;
        assert_eq!(st.len(), MAX_FRAMES);
        assert_eq!(st.last().unwrap().function.as_deref(), Some("f299"));
        assert_eq!(r.user.as_ref().unwrap().id.as_deref(), Some("7"));
        assert_eq!(r.tags["n"], "1");
        assert_eq!(r.service(), DEFAULT_SERVICE);
        assert_eq!(r.level.as_deref(), Some("error"));
        let r = report(
            json!({"message": "x", "request": {"url": "https://shop.example/api/orders?id=3", "method": "POST"}}),
        );
        assert_eq!(r.request.unwrap().path.as_deref(), Some("/api/orders"));
    }

    #[test]
    fn a_new_group_alerts_and_the_window_folds_the_rest() {
        let (g, a) = observe(None, 0, &P);
        assert_eq!(a.unwrap().reason, AlertReason::New);
        let mut g = g;
        for t in 1..5 {
            let (n, a) = observe(Some(&g), t * 100, &P);
            assert!(a.is_none());
            g = n;
        }
        assert_eq!((g.count, g.folded, g.pending), (5, 4, None));
        // After the window, nothing pending: still no alert (no new reason).
        let (g, a) = observe(Some(&g), 1500, &P);
        assert!(a.is_none());
        assert_eq!(g.folded, 5);
    }

    #[test]
    fn a_regression_alerts_with_the_folded_count_and_waits_for_the_window() {
        let (mut g, _) = observe(None, 0, &P);
        for t in 1..4 {
            g = observe(Some(&g), t, &P).0;
        }
        g.status = GroupStatus::Resolved;
        // Seen again inside the window of the last alert: held back.
        let (g, a) = observe(Some(&g), 500, &P);
        assert!(a.is_none());
        assert_eq!(g.pending, Some(AlertReason::Regression));
        assert_eq!(g.status, GroupStatus::Unresolved);
        // The first report after the window sends it, saying what was folded in.
        let (g, a) = observe(Some(&g), 1000, &P);
        assert_eq!(
            a,
            Some(AlertDecision {
                reason: AlertReason::Regression,
                folded: 4
            })
        );
        assert_eq!(
            (g.folded, g.pending, g.last_alert_at),
            (0, None, Some(1000))
        );
        // Resolved long after: alerts at once.
        let mut r = g.clone();
        r.status = GroupStatus::Resolved;
        let (_, a) = observe(Some(&r), 5000, &P);
        assert_eq!(a.unwrap().reason, AlertReason::Regression);
    }

    #[test]
    fn a_spike_is_a_multiple_of_the_previous_window() {
        let (mut g, _) = observe(None, 0, &P);
        // Window [0, 1000): 3 reports. Window [1000, 2000): the spike line is
        // max(10, 5 × 3) = 15.
        g = observe(Some(&g), 10, &P).0;
        g = observe(Some(&g), 20, &P).0;
        let mut alerts = Vec::new();
        for i in 0..20 {
            let (n, a) = observe(Some(&g), 1000 + i, &P);
            if let Some(a) = a {
                alerts.push((n.window_count, a));
            }
            g = n;
        }
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].0, 15);
        assert_eq!(alerts[0].1.reason, AlertReason::Spike);
        assert_eq!(alerts[0].1.folded, 2 + 14);
        assert_eq!(g.prev_window_count, 3);
        // A quiet gap of two windows resets the baseline.
        let (g, _) = observe(Some(&g), 10_000, &P);
        assert_eq!((g.prev_window_count, g.window_count), (0, 1));
    }

    #[test]
    fn alert_texts() {
        let r = report(
            json!({"service": "shop", "exception": {"type": "ZeroDivisionError", "value": "division by zero",
            "stacktrace": [{"filename": "app/views.py", "function": "divide", "lineno": 42, "in_app": true, "context_line": "  return a / b"}]},
            "request": {"method": "GET", "path": "/api/divide"}, "user": {"id": 7, "username": "alice", "email": "a@x.io"}}),
        );
        let g = group(&r);
        let a = ErrorAlert {
            group: "grp_1".into(),
            reason: AlertReason::Spike,
            title: g.title.clone(),
            culprit: g.culprit.clone(),
            count: 80,
            folded: 3,
            window_count: 57,
            window: "10m".into(),
            first_seen: "2026-12-01T10:00:00Z".into(),
            last_seen: "2026-12-01T10:05:00Z".into(),
            report: r,
        };
        assert_eq!(a.headline(), "ZeroDivisionError in shop");
        assert_eq!(
            a.reason_line(),
            "Spike: 57 in 10m · 3 more since the last alert"
        );
        assert_eq!(a.request_line().as_deref(), Some("GET /api/divide"));
        assert_eq!(a.user_line().as_deref(), Some("alice (a@x.io, id 7)"));
        assert_eq!(
            a.frames_text(5),
            "app/views.py:42 in divide\n    return a / b\n"
        );
        let back: ErrorAlert = serde_json::from_value(serde_json::to_value(&a).unwrap()).unwrap();
        assert_eq!(back, a);
    }
}
