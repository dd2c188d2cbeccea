//! The `email` kind: SMTP through lettre, one pooled transport per destination.
//!
//! Sends a `multipart/alternative` message (UTF-8 text and HTML parts) from `from` to every
//! address in `to`. The subject is the title, else the first line of the text, else the
//! event type (non-ASCII subjects are RFC 2047 encoded). `Message-ID` is stable across retries
//! (`<message id>.<destination>@herald`) so mail systems can drop duplicates. Overrides:
//! `channels.email.subject`, `.text` and `.html`; a destination `template` renders the text
//! part and `html_template` the HTML part (with a `template` and no `html_template` the
//! email is text only).
//!
//! Attachments make it `multipart/mixed`: the body first, then one part per file
//! (`Content-Disposition: attachment`, the filename RFC 2231-encoded when it is not ASCII,
//! base64 content). An image with `"inline": true` is shown inside the HTML instead: the
//! HTML part and the images form a `multipart/related` (each image with `Content-ID:
//! <att<n>.<message id>@herald>`, `n` its position in `attachments`); the default HTML
//! references them, and a custom HTML part (override or `html_template`) shows an image
//! inline only if it contains `cid:att<n>.<message id>@herald` — else it is attached.
//!
//! Connections: `smtps://` is TLS from the first byte (port 465); `smtp://` requires STARTTLS
//! (port 587; `?tls=required` says so explicitly); `smtp://…?tls=none` is plain text (port
//! 25), for local relays. A `user:password` in the URL logs in (percent-encode special
//! characters). The SMTP host is resolved and every address checked against the SSRF policy;
//! the transport then connects to the checked address (TLS still verifies the host name), so
//! a changed DNS answer cannot slip past the check.
//!
//! Answers: 2xx delivered; SMTP 4xx replies retry, 5xx replies are permanent (one rejected
//! recipient fails the whole send); connection errors and timeouts retry; TLS failures and
//! client errors (e.g. STARTTLS required but not offered) are permanent: they need a
//! configuration change. The attempt's `status_code` is the SMTP reply code.

use crate::files::File;
use crate::render::{
    ERROR_FRAMES, Escape, error_alert, error_context, error_facts, error_summary, first_line,
    footer, override_str, overrides, payload_fields, severity_emoji, template_text, text_of,
    title_of, truncate,
};
use crate::{Attempt, Channels};
use herald_core::delivery::{ErrorClass, SendReport, Verdict, excerpt};
use herald_core::destination::{EmailSpec, SmtpSecurity, parse_smtp_url};
use herald_core::error_report::ErrorAlert;
use herald_core::message::Message;
use herald_core::netpolicy::NetPolicy;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::{AsyncSmtpTransport, PoolConfig};
use lettre::{AsyncTransport, Tokio1Executor};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

type Transport = AsyncSmtpTransport<Tokio1Executor>;

const MAX_SUBJECT: usize = 250;
const MAX_FIELDS: usize = 50;
/// Pooled connections kept per destination.
const POOL_SIZE: u32 = 8;
const POOL_IDLE: Duration = Duration::from_secs(60);

/// One pooled SMTP transport per destination, rebuilt when its settings or its server's
/// address change.
#[derive(Default)]
pub struct SmtpPools {
    by_destination: Mutex<HashMap<String, (String, Transport)>>,
}

impl SmtpPools {
    /// The transport for `destination`, built by `build` unless one with the same `key`
    /// (resolved URL, address, timeout) is cached.
    fn get(
        &self,
        destination: &str,
        key: &str,
        build: impl FnOnce() -> Result<Transport, SendReport>,
    ) -> Result<Transport, SendReport> {
        let mut map = self
            .by_destination
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((k, t)) = map.get(destination)
            && k == key
        {
            return Ok(t.clone());
        }
        let t = build()?;
        map.insert(destination.to_string(), (key.to_string(), t.clone()));
        Ok(t)
    }

    /// Drops a destination's transport and its pooled connections.
    fn evict(&self, destination: &str) {
        self.by_destination
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(destination);
    }
}

/// The subject: `title`, else the first line of `text`, else the event type.
pub fn subject(message: &Message) -> String {
    let s = title_of(message)
        .or(text_of(message).map(first_line))
        .unwrap_or(&message.event_type);
    truncate(s, MAX_SUBJECT).into_owned()
}

/// The default plain-text part (an error report for `error.reported` messages).
pub fn render_text(message: &Message) -> String {
    if let Some(a) = error_alert(message) {
        return error_text(message, &a);
    }
    let mut out = String::new();
    if let Some(t) = title_of(message) {
        out.push_str(t);
        out.push_str("\n\n");
    }
    if let Some(t) = text_of(message) {
        out.push_str(t);
        out.push_str("\n\n");
    }
    for (k, v) in payload_fields(message, MAX_FIELDS) {
        out.push_str(&format!("{k}: {v}\n"));
    }
    out.push_str(&format!("\n-- \n{}\n", footer(message)));
    out
}

/// The default HTML part (an error report for `error.reported` messages); inline images
/// (`"inline": true`) are shown after the text.
pub fn render_html(message: &Message) -> String {
    if let Some(a) = error_alert(message) {
        return error_html(message, &a);
    }
    let esc = |s: &str| Escape::Html.apply(s).into_owned();
    let mut out = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head>\n<body style=\"font-family: sans-serif\">\n",
    );
    let emoji = severity_emoji(message.body.severity);
    if let Some(t) = title_of(message) {
        out.push_str(&format!("<h2>{emoji} {}</h2>\n", esc(t)));
    }
    if let Some(t) = text_of(message) {
        out.push_str(&format!(
            "<p style=\"white-space: pre-wrap\">{}</p>\n",
            esc(t)
        ));
    }
    let fields = payload_fields(message, MAX_FIELDS);
    if !fields.is_empty() {
        out.push_str("<table>\n");
        for (k, v) in fields {
            out.push_str(&format!(
                "<tr><th align=\"left\">{}</th><td>{}</td></tr>\n",
                esc(k),
                esc(&v)
            ));
        }
        out.push_str("</table>\n");
    }
    for (index, att) in message.body.attachments.iter().enumerate() {
        if att.is_image() && att.inline == Some(true) {
            out.push_str(&format!(
                "<p><img src=\"cid:{}\" alt=\"{}\" style=\"max-width: 100%\"></p>\n",
                esc(&content_id(message, index)),
                esc(&att.filename)
            ));
        }
    }
    out.push_str(&format!(
        "<p style=\"color: #888; font-size: small\">{}</p>\n</body></html>\n",
        esc(&footer(message))
    ));
    out
}

fn error_text(message: &Message, a: &ErrorAlert) -> String {
    let mut out = format!(
        "{}\n\n{}\n{}\n\n",
        a.headline(),
        error_summary(a),
        a.reason_line()
    );
    for (k, v) in error_facts(a) {
        out.push_str(&format!("{k}: {v}\n"));
    }
    out.push_str(&format!(
        "First seen: {}\nLast seen: {}\n",
        a.first_seen, a.last_seen
    ));
    let frames = a.frames_text(ERROR_FRAMES);
    if !frames.is_empty() {
        out.push_str(&format!("\nInnermost frames:\n{frames}"));
    }
    out.push_str(&format!(
        "\n-- \n{}\n{}\n",
        error_context(a),
        footer(message)
    ));
    out
}

fn error_html(message: &Message, a: &ErrorAlert) -> String {
    let esc = |s: &str| Escape::Html.apply(s).into_owned();
    let mut out = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head>\n<body style=\"font-family: sans-serif\">\n",
    );
    out.push_str(&format!("<h2>🚨 {}</h2>\n", esc(&a.headline())));
    out.push_str(&format!(
        "<p><b>{}</b><br>\n<i>{}</i></p>\n<table>\n",
        esc(&error_summary(a)),
        esc(&a.reason_line())
    ));
    let mut facts = error_facts(a);
    facts.push(("First seen", a.first_seen.clone()));
    facts.push(("Last seen", a.last_seen.clone()));
    for (k, v) in facts {
        out.push_str(&format!(
            "<tr><th align=\"left\">{k}</th><td>{}</td></tr>\n",
            esc(&v)
        ));
    }
    out.push_str("</table>\n");
    let frames = a.frames_text(ERROR_FRAMES);
    if !frames.is_empty() {
        out.push_str(&format!(
            "<pre style=\"background: #f4f4f4; padding: 8px\">{}</pre>\n",
            esc(&frames)
        ));
    }
    out.push_str(&format!(
        "<p style=\"color: #888; font-size: small\">{}<br>{}</p>\n</body></html>\n",
        esc(&error_context(a)),
        esc(&footer(message))
    ));
    out
}

fn config_error(error: impl Into<String>) -> SendReport {
    SendReport::failed(Verdict::permanent(), ErrorClass::Config, error)
}

/// The email for this attempt.
fn build_message(
    ch: &Channels,
    e: &EmailSpec,
    a: &Attempt<'_>,
) -> Result<lettre::Message, SendReport> {
    let o = overrides(a.message, "email")?;
    let subject = match override_str(o, "email", "subject")? {
        Some(s) => truncate(s, MAX_SUBJECT).into_owned(),
        None => subject(a.message),
    };
    let text = match (override_str(o, "email", "text")?, &e.template) {
        (Some(t), _) => t.to_string(),
        (None, Some(src)) => template_text(ch, src, a, "email")?,
        (None, None) => render_text(a.message),
    };
    let html = match (override_str(o, "email", "html")?, &e.html_template) {
        (Some(h), _) => Some(h.to_string()),
        (None, Some(src)) => Some(template_text(ch, src, a, "email")?),
        // A custom text part with a default HTML part would say two different things.
        (None, None) if e.template.is_some() => None,
        (None, None) => Some(render_html(a.message)),
    };
    let from: Mailbox = e
        .from
        .parse()
        .map_err(|err| config_error(format!("from: {err}")))?;
    let mut b = lettre::Message::builder()
        .from(from)
        .subject(subject)
        .message_id(Some(format!("<{}.{}@herald>", a.message.id, a.destination)))
        .user_agent(crate::USER_AGENT.to_string());
    for (i, t) in e.to.iter().enumerate() {
        let to: Mailbox = t
            .parse()
            .map_err(|err| config_error(format!("to[{i}]: {err}")))?;
        b = b.to(to);
    }
    let files = crate::files::files(a.message)?;
    let (related, attached): (Vec<&File<'_>>, Vec<&File<'_>>) = files.iter().partition(|f| {
        f.is_image()
            && f.meta.inline == Some(true)
            && html
                .as_deref()
                .is_some_and(|h| h.contains(&format!("cid:{}", content_id(a.message, f.index))))
    });
    let body = match html {
        Some(h) if related.is_empty() => Body::Multi(MultiPart::alternative_plain_html(text, h)),
        Some(h) => {
            let mut rel = MultiPart::related().singlepart(SinglePart::html(h));
            for f in &related {
                rel = rel.singlepart(
                    Attachment::new_inline_with_name(
                        content_id(a.message, f.index),
                        f.filename().to_string(),
                    )
                    .body(f.bytes.clone(), content_type(f)),
                );
            }
            Body::Multi(
                MultiPart::alternative()
                    .singlepart(SinglePart::plain(text))
                    .multipart(rel),
            )
        }
        None => Body::Single(SinglePart::plain(text)),
    };
    let body = if attached.is_empty() {
        body
    } else {
        let mut mixed = match body {
            Body::Multi(m) => MultiPart::mixed().multipart(m),
            Body::Single(s) => MultiPart::mixed().singlepart(s),
        };
        for f in attached {
            mixed = mixed.singlepart(
                Attachment::new(f.filename().to_string()).body(f.bytes.clone(), content_type(f)),
            );
        }
        Body::Multi(mixed)
    };
    let built = match body {
        Body::Multi(m) => b.multipart(m),
        Body::Single(s) => b.singlepart(s),
    };
    built.map_err(|err| config_error(format!("cannot build the email: {err}")))
}

enum Body {
    Single(SinglePart),
    Multi(MultiPart),
}

/// The `Content-ID` of an inline image: `att<n>.<message id>@herald`, referenced from
/// the HTML part as `cid:att<n>.<message id>@herald`.
pub fn content_id(message: &Message, index: usize) -> String {
    format!("att{index}.{}@herald", message.id)
}

fn content_type(f: &File<'_>) -> ContentType {
    ContentType::parse(f.content_type())
        .or_else(|_| ContentType::parse("application/octet-stream"))
        .unwrap_or(ContentType::TEXT_PLAIN)
}

/// Resolves the SMTP host and returns the first address the policy allows.
async fn allowed_address(
    policy: &NetPolicy,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<IpAddr, SendReport> {
    let blocked = |reason: &str| {
        SendReport::failed(
            Verdict::permanent(),
            ErrorClass::SsrfBlocked,
            format!(
                "blocked by the SSRF policy: {host} is a {reason} (exempt networks with HERALD_ALLOW_NETWORKS)"
            ),
        )
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return policy.check(ip).map(|()| ip).map_err(blocked);
    }
    let addrs = match tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect::<Vec<_>>(),
        Ok(Err(err)) => {
            return Err(SendReport::failed(
                Verdict::retry(),
                ErrorClass::Connect,
                format!("cannot resolve {host}: {err}"),
            ));
        }
        Err(_) => {
            return Err(SendReport::failed(
                Verdict::retry(),
                ErrorClass::Timeout,
                format!("resolving {host} timed out"),
            ));
        }
    };
    let mut reason = "address without public route";
    for ip in addrs {
        match policy.check(ip) {
            Ok(()) => return Ok(ip),
            Err(r) => reason = r,
        }
    }
    Err(blocked(reason))
}

pub async fn send(ch: &Channels, e: &EmailSpec, a: &Attempt<'_>) -> SendReport {
    let url = match parse_smtp_url(&e.smtp_url) {
        Ok(u) => u,
        Err(err) => return config_error(format!("smtp_url: {err}")),
    };
    let email = match build_message(ch, e, a) {
        Ok(m) => m,
        Err(report) => return report,
    };
    let timeout = a.spec.timeout();
    let ip = match allowed_address(ch.http.policy(), &url.host, url.port, timeout).await {
        Ok(ip) => ip,
        Err(report) => return report,
    };
    let key = format!("{}|{ip}|{}", e.smtp_url, timeout.as_millis());
    let transport = ch.smtp.get(a.destination, &key, || {
        let tls = match url.security {
            SmtpSecurity::None => Tls::None,
            SmtpSecurity::StartTls | SmtpSecurity::ImplicitTls => {
                let params = TlsParameters::new(url.host.clone()).map_err(|err| {
                    SendReport::failed(Verdict::permanent(), ErrorClass::Tls, err.to_string())
                })?;
                if url.security == SmtpSecurity::ImplicitTls {
                    Tls::Wrapper(params)
                } else {
                    Tls::Required(params)
                }
            }
        };
        // Connect to the address that passed the policy, not to a fresh DNS answer.
        let mut b = Transport::builder_dangerous(ip.to_string())
            .port(url.port)
            .tls(tls)
            .timeout(Some(timeout))
            .pool_config(
                PoolConfig::new()
                    .max_size(POOL_SIZE)
                    .idle_timeout(POOL_IDLE),
            );
        if let (Some(user), Some(pass)) = (&url.user, &url.password) {
            crate::note_sent([pass.clone()]);
            b = b.credentials(Credentials::new(user.clone(), pass.clone()));
        }
        Ok(b.build())
    });
    let transport = match transport {
        Ok(t) => t,
        Err(report) => return report,
    };
    match tokio::time::timeout(timeout, transport.send(email)).await {
        Ok(Ok(resp)) => {
            let text = resp.message().collect::<Vec<_>>().join(" ");
            let code = u16::from(resp.code());
            SendReport::delivered(Some(code), excerpt(format!("{code} {text}").as_bytes()))
        }
        Ok(Err(err)) => classify(&err),
        Err(_) => {
            // A conversation cut mid-command must not go back to the pool.
            ch.smtp.evict(a.destination);
            SendReport::failed(
                Verdict::retry(),
                ErrorClass::Timeout,
                format!(
                    "no complete SMTP answer within {timeout:?} (if the server accepted the message, the retry sends it again)"
                ),
            )
        }
    }
}

/// Classifies a lettre SMTP error.
pub fn classify(err: &lettre::transport::smtp::Error) -> SendReport {
    let code = err.status().map(u16::from);
    let (verdict, class) = if err.is_transient() {
        (Verdict::retry(), ErrorClass::SmtpReply)
    } else if err.is_permanent() {
        (Verdict::permanent(), ErrorClass::SmtpReply)
    } else if err.is_timeout() {
        (Verdict::retry(), ErrorClass::Timeout)
    } else if err.is_tls() || caused_by_tls(err) {
        (Verdict::permanent(), ErrorClass::Tls)
    } else if err.is_client() {
        (Verdict::permanent(), ErrorClass::Config)
    } else if err.to_string().starts_with("Connection error") {
        (Verdict::retry(), ErrorClass::Connect)
    } else {
        (Verdict::retry(), ErrorClass::Network)
    };
    let mut report = SendReport::failed(verdict, class, err.to_string());
    report.status_code = code;
    report
}

/// Whether a connection error came from the TLS handshake (a certificate, or a server
/// that does not speak TLS on that port): a configuration problem, not a passing one.
fn caused_by_tls(err: &lettre::transport::smtp::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if e.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
        {
            return true;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_core::message::{MessageBody, Severity};
    use serde_json::json;

    fn message(title: Option<&str>, text: Option<&str>) -> Message {
        Message {
            id: herald_core::ids::MessageId::stored("msg_1".into()),
            event_type: "report.ready".into(),
            idempotency_key: None,
            created_at: 0,
            body: MessageBody {
                title: title.map(str::to_string),
                text: text.map(str::to_string),
                severity: Severity::Warning,
                payload: json!({"rows": 3, "owner": "<데이터팀>"})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
                ..MessageBody::default()
            },
        }
    }

    #[test]
    fn subject_is_the_title_else_the_first_line() {
        assert_eq!(
            subject(&message(Some("주간 리포트"), Some("x"))),
            "주간 리포트"
        );
        assert_eq!(
            subject(&message(None, Some("\n첫 줄 🎉\n둘째 줄"))),
            "첫 줄 🎉"
        );
        assert_eq!(subject(&message(None, None)), "report.ready");
    }

    #[test]
    fn parts_carry_text_fields_and_escaped_html() {
        let m = message(Some("a < b"), Some("본문 & 🎉"));
        let text = render_text(&m);
        assert!(text.starts_with("a < b\n\n본문 & 🎉\n\n"));
        assert!(text.contains("owner: <데이터팀>\nrows: 3\n"));
        assert!(text.ends_with("-- \nreport.ready · msg_1\n"));
        let html = render_html(&m);
        assert!(html.contains("<h2>⚠️ a &lt; b</h2>"));
        assert!(html.contains(">본문 &amp; 🎉</p>"));
        assert!(html.contains("<td>&lt;데이터팀&gt;</td>"));
    }
}
