//! Sending one HTTP request and classifying what came back (DESIGN §5). Channels whose
//! providers answer differently refine [`classify_http`].

use crate::Channels;
use crate::client::{UrlProblem, ssrf_cause};
use herald_core::classify::{StatusClass, classify_status};
use herald_core::delivery::{ErrorClass, HttpExchange, SendReport, Verdict, excerpt};
use herald_core::retry_after::parse_retry_after;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use std::time::{Duration, SystemTime};

/// Most of a response body read (the excerpt keeps 4 KiB of it).
const MAX_BODY: usize = 64 * 1024;

/// A provider's answer.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl HttpAnswer {
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// The body as JSON, if it is.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The `Retry-After` header, if present and valid.
    pub fn retry_after(&self) -> Option<Duration> {
        self.headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()))
    }

    fn report(
        &self,
        verdict: Verdict,
        class: Option<ErrorClass>,
        error: Option<String>,
    ) -> SendReport {
        SendReport {
            verdict,
            status_code: Some(self.status),
            error_class: class,
            error,
            response_excerpt: excerpt(&self.body),
            exchange: None,
        }
    }

    pub fn delivered(&self) -> SendReport {
        self.report(Verdict::Delivered, None, None)
    }

    pub fn retry(&self, after: Option<Duration>, pause: bool, error: String) -> SendReport {
        self.report(
            Verdict::Retry {
                after,
                pause_destination: pause,
            },
            Some(ErrorClass::HttpStatus),
            Some(error),
        )
    }

    pub fn permanent(&self, disable: Option<String>, error: String) -> SendReport {
        self.report(
            Verdict::Permanent {
                disable_destination: disable,
            },
            Some(ErrorClass::HttpStatus),
            Some(error),
        )
    }
}

/// A request ready to send.
pub struct Outgoing<'a> {
    pub method: reqwest::Method,
    pub url: &'a str,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout: Duration,
}

impl<'a> Outgoing<'a> {
    /// A `POST` of a JSON body, as every chat provider takes it.
    pub fn post_json(url: &'a str, body: &serde_json::Value, timeout: Duration) -> Self {
        Outgoing {
            method: reqwest::Method::POST,
            url,
            headers: vec![(
                "content-type".into(),
                "application/json; charset=utf-8".into(),
            )],
            body: body.to_string().into_bytes(),
            timeout,
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A provider's wait in (possibly fractional) seconds, such as Discord's `retry_after`
/// or Telegram's `parameters.retry_after`; `None` when it is not a sane number.
pub fn seconds(v: &serde_json::Value) -> Option<Duration> {
    v.as_f64()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
}

/// Adds what the provider said to a report's error, e.g. `HTTP 400: invalid_payload`.
pub fn with_detail(mut report: SendReport, detail: &str) -> SendReport {
    let detail = detail.trim();
    if !detail.is_empty() {
        report.error = Some(match report.error {
            Some(e) => format!("{e}: {detail}"),
            None => detail.to_string(),
        });
    }
    report
}

/// Sends the request; a transport failure comes back as a classified report.
pub async fn send(ch: &Channels, out: Outgoing<'_>) -> Result<HttpAnswer, SendReport> {
    let url = match ch.http.check_url(out.url) {
        Ok(u) => u,
        Err(UrlProblem::Invalid(e)) => {
            return Err(SendReport::failed(
                Verdict::permanent(),
                ErrorClass::Config,
                e,
            ));
        }
        Err(UrlProblem::Blocked(b)) => {
            return Err(SendReport::failed(
                Verdict::permanent(),
                ErrorClass::SsrfBlocked,
                b.to_string(),
            ));
        }
    };
    crate::note_sent(secret_parts(&url, &out.headers));
    let mut headers = HeaderMap::with_capacity(out.headers.len());
    for (k, v) in &out.headers {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
            SendReport::failed(
                Verdict::permanent(),
                ErrorClass::Config,
                format!("invalid header name {k:?}"),
            )
        })?;
        let value = HeaderValue::from_str(v).map_err(|_| {
            SendReport::failed(
                Verdict::permanent(),
                ErrorClass::Config,
                format!("invalid value for header {k}"),
            )
        })?;
        headers.insert(name, value);
    }
    crate::note_exchange(HttpExchange {
        method: out.method.to_string(),
        url: url.to_string(),
        request_headers: out.headers.clone(),
        request_body: excerpt(&out.body),
        status: None,
        response_headers: Vec::new(),
    });
    let request = ch
        .http
        .inner()
        .request(out.method, url)
        .headers(headers)
        .body(out.body)
        .timeout(out.timeout);
    let mut resp = request.send().await.map_err(transport_report)?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    crate::note_answer(status, &headers);
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_BODY.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() >= MAX_BODY {
                    break;
                }
            }
            Ok(None) => break,
            // The status is what counts; a body cut short still classifies.
            Err(_) => break,
        }
    }
    Ok(HttpAnswer {
        status,
        headers,
        body,
    })
}

/// Headers whose values are never secret (and would mask ordinary text if redacted).
const PLAIN_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "accept",
    "user-agent",
    "webhook-id",
    "webhook-timestamp",
    "x-webhook-event",
];

/// What of a request could be secret: every header value but the plain ones, the URL's
/// password and query values, and long path segments (tokens in webhook paths).
fn secret_parts(url: &reqwest::Url, headers: &[(String, String)]) -> Vec<String> {
    let mut out: Vec<String> = headers
        .iter()
        .filter(|(k, _)| !PLAIN_HEADERS.contains(&k.to_ascii_lowercase().as_str()))
        .flat_map(|(_, v)| {
            // `Bearer x`, `v1,a v1,b`: each part on its own as well as the whole.
            let parts = v
                .split([' ', ','])
                .filter(|p| {
                    !["bearer", "basic", "token"].contains(&p.to_ascii_lowercase().as_str())
                })
                .map(str::to_string)
                .collect::<Vec<_>>();
            std::iter::once(v.clone()).chain(parts)
        })
        .collect();
    out.extend(url.password().map(str::to_string));
    out.extend(url.query_pairs().map(|(_, v)| v.into_owned()));
    out.extend(
        url.path_segments()
            .into_iter()
            .flatten()
            .filter(|s| looks_random(s))
            .map(str::to_string),
    );
    out
}

/// A path segment that reads like a token (a Discord or Slack webhook's secret part), not
/// like a method name such as `files.getUploadURLExternal`.
fn looks_random(segment: &str) -> bool {
    segment.len() >= 20
        && !segment.contains('.')
        && segment.chars().any(|c| c.is_ascii_digit())
        && segment.chars().any(|c| c.is_ascii_alphabetic())
}

/// Classifies a transport-level failure.
pub fn transport_report(e: reqwest::Error) -> SendReport {
    if let Some(blocked) = ssrf_cause(&e) {
        return SendReport::failed(
            Verdict::permanent(),
            ErrorClass::SsrfBlocked,
            blocked.to_string(),
        );
    }
    let (class, verdict) = if e.is_timeout() {
        (ErrorClass::Timeout, Verdict::retry())
    } else if e.is_connect() {
        (ErrorClass::Connect, Verdict::retry())
    } else if e.is_builder() {
        (ErrorClass::Config, Verdict::permanent())
    } else {
        (ErrorClass::Network, Verdict::retry())
    };
    SendReport::failed(verdict, class, describe(&e))
}

/// The error with its causes, without the URL (which may carry a secret, e.g. a Slack or
/// Discord webhook).
fn describe(e: &reqwest::Error) -> String {
    let mut parts = vec![e.without_url_ref().to_string()];
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let mut s = self.to_string();
        if let Some(url) = self.url() {
            s = s.replace(url.as_str(), "<url>");
        }
        s
    }
}

/// The default classification of an HTTP answer (DESIGN §5): 2xx delivered; 408, 425,
/// 429, 5xx retry (429 pauses the destination until `Retry-After`); 410 permanent and
/// disables the destination; other 3xx/4xx permanent.
pub fn classify_http(ans: &HttpAnswer) -> SendReport {
    match classify_status(ans.status) {
        StatusClass::Delivered => ans.delivered(),
        StatusClass::Retry => ans.retry(
            ans.retry_after(),
            ans.status == 429,
            format!("HTTP {}", ans.status),
        ),
        StatusClass::Gone => ans.permanent(
            Some("the receiver answered HTTP 410 Gone".to_string()),
            "HTTP 410 Gone".into(),
        ),
        StatusClass::Permanent => ans.permanent(None, format!("HTTP {}", ans.status)),
    }
}
