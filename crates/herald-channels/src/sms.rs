//! The `sms` kind: Twilio's Messages API.
//!
//! Sends `POST {api_base}/2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded
//! `To`, `From` and `Body`, with HTTP Basic `AccountSid:AuthToken`. The body is the title
//! and the text (or the message's `channels.sms.text`, or the destination `template`), cut
//! to Twilio's 1600 characters with a visible marker.
//!
//! Attachments: each file that came from a public URL is sent as a `MediaUrl` (an MMS; at
//! most 10, and Twilio fetches them itself — MMS reaches US and Canadian numbers, elsewhere
//! Twilio may send a link instead); files given only as `data` cannot be sent by SMS and
//! are named on a last line of the text. The attempt records both.
//!
//! Answers: 201 (any 2xx) delivered; error code 20429 or HTTP 429 retries (after
//! `Retry-After` if Twilio sent one, pausing the destination), 5xx retry; codes 20003
//! (authentication), 20404, 21211, 21606, 21608, 21610, 21612, 21614 and 21617 and every
//! other 4xx are permanent. Twilio has no idempotency key: when a request may have reached
//! Twilio but no answer came back (a timeout, a connection cut mid-answer), the retry may
//! send a second SMS, and the attempt's error says so.

use crate::files::with_note;
use crate::render::{override_str, overrides, template_text, text_of, title_of, truncate, units};
use crate::response::{HttpAnswer, Outgoing, classify_http, send as send_http, with_detail};
use crate::{Attempt, Channels};
use base64::Engine;
use herald_core::delivery::{ErrorClass, SendReport, Verdict};
use herald_core::destination::SmsSpec;
use herald_core::message::Message;
use serde_json::Value;

pub const DEFAULT_API_BASE: &str = "https://api.twilio.com";
/// Twilio refuses longer bodies (error 21617).
pub const MAX_BODY: usize = 1600;

/// Error codes that no retry can fix.
const PERMANENT_CODES: &[i64] = &[
    20003, 20404, 21211, 21606, 21608, 21610, 21612, 21614, 21617,
];

/// The default SMS text: the title on its own line, then the text.
pub fn render(message: &Message) -> String {
    let s = match (title_of(message), text_of(message)) {
        (Some(t), Some(x)) => format!("{t}\n{x}"),
        (Some(t), None) => t.to_string(),
        (None, Some(x)) => x.to_string(),
        (None, None) => message.event_type.clone(),
    };
    truncate(&s, MAX_BODY).into_owned()
}

fn text(ch: &Channels, s: &SmsSpec, a: &Attempt<'_>) -> Result<String, SendReport> {
    let given = override_str(overrides(a.message, "sms")?, "sms", "text")?;
    Ok(match (given, &s.template) {
        (Some(t), _) => truncate(t, MAX_BODY).into_owned(),
        (None, Some(src)) => truncate(&template_text(ch, src, a, "sms")?, MAX_BODY).into_owned(),
        (None, None) => render(a.message),
    })
}

pub async fn send(ch: &Channels, s: &SmsSpec, a: &Attempt<'_>) -> SendReport {
    // The SID goes into the path: after `${env:…}` resolution it must still be one segment.
    if s.account_sid.is_empty() || !s.account_sid.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return SendReport::failed(
            Verdict::permanent(),
            ErrorClass::Config,
            "account_sid must be letters and digits (AC…)",
        );
    }
    let body = match text(ch, s, a) {
        Ok(t) => t,
        Err(report) => return report,
    };
    let (media, listed) = media(a.message);
    let body = with_file_line(body, &listed);
    let form = {
        let mut f = url::form_urlencoded::Serializer::new(String::new());
        f.append_pair("To", &s.to)
            .append_pair("From", &s.from)
            .append_pair("Body", &body);
        for url in &media {
            f.append_pair("MediaUrl", url);
        }
        f.finish()
    };
    let base = s.api_base.as_deref().unwrap_or(DEFAULT_API_BASE);
    let url = format!(
        "{}/2010-04-01/Accounts/{}/Messages.json",
        base.trim_end_matches('/'),
        s.account_sid
    );
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", s.account_sid, s.auth_token));
    let out = Outgoing {
        method: reqwest::Method::POST,
        url: &url,
        headers: vec![
            (
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            ),
            ("authorization".into(), format!("Basic {basic}")),
        ],
        body: form.into_bytes(),
        timeout: a.spec.timeout(),
    };
    let report = match send_http(ch, out).await {
        Ok(ans) => classify(&ans),
        Err(report) => warn_duplicate(report),
    };
    let mut notes = Vec::new();
    if !media.is_empty() {
        notes.push(format!("sms: {} MediaUrl(s) sent (MMS)", media.len()));
    }
    if !listed.is_empty() {
        notes.push(format!(
            "sms: not sent (no public URL, or over Twilio's {MAX_MEDIA} media), named in the text: {}",
            listed.join(", ")
        ));
    }
    with_note(report, &notes.join("; "))
}

/// Twilio takes at most this many `MediaUrl`s per message.
pub const MAX_MEDIA: usize = 10;

/// The public URLs to send as MMS media, and the names of files that cannot be.
fn media(message: &Message) -> (Vec<&str>, Vec<&str>) {
    let mut urls = Vec::new();
    let mut listed = Vec::new();
    for a in &message.body.attachments {
        match a.url.as_deref() {
            Some(u) if urls.len() < MAX_MEDIA => urls.push(u),
            _ => listed.push(a.filename.as_str()),
        }
    }
    (urls, listed)
}

/// The text with a last line naming files not sent, all within 1600 characters.
fn with_file_line(text: String, listed: &[&str]) -> String {
    if listed.is_empty() {
        return text;
    }
    let line = truncate(&format!("\n[files not sent: {}]", listed.join(", ")), 400).into_owned();
    format!("{}{line}", truncate(&text, MAX_BODY - units(&line)))
}

/// Adds the duplicate-SMS risk to a transport failure that may have happened after Twilio
/// got the request.
fn warn_duplicate(mut report: SendReport) -> SendReport {
    if report
        .error_class
        .is_some_and(ErrorClass::may_have_reached_provider)
    {
        report.error = Some(format!(
            "{}; Twilio may have sent the SMS already, and without an idempotency key the retry can send it twice",
            report.error.as_deref().unwrap_or("no answer")
        ));
    }
    report
}

/// Classifies a Messages API answer (`{"code","message","more_info","status"}` on errors).
pub fn classify(ans: &HttpAnswer) -> SendReport {
    let v = ans.json().unwrap_or(Value::Null);
    let code = v["code"].as_i64();
    let detail = match (code, v["message"].as_str()) {
        (Some(c), Some(m)) => format!("Twilio error {c}: {m}"),
        (Some(c), None) => format!("Twilio error {c}"),
        (None, Some(m)) => m.to_string(),
        (None, None) => String::new(),
    };
    match ans.status {
        200..=299 => ans.delivered(),
        _ if ans.status == 429 || code == Some(20429) => {
            let after = ans.retry_after();
            ans.retry(
                after,
                after.is_some(),
                format!("HTTP {}: {detail}", ans.status),
            )
        }
        500..=599 => with_detail(classify_http(ans), &detail),
        _ if code.is_some_and(|c| PERMANENT_CODES.contains(&c)) => {
            ans.permanent(None, format!("HTTP {}: {detail}", ans.status))
        }
        _ => with_detail(classify_http(ans), &detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{MARKER, units};
    use herald_core::message::MessageBody;

    fn message(title: Option<&str>, text: &str) -> Message {
        Message {
            id: herald_core::ids::MessageId::stored("msg_1".into()),
            event_type: "otp".into(),
            idempotency_key: None,
            created_at: 0,
            body: MessageBody {
                title: title.map(str::to_string),
                text: Some(text.into()),
                ..MessageBody::default()
            },
        }
    }

    #[test]
    fn title_then_text() {
        assert_eq!(
            render(&message(Some("경보"), "디스크 90% 🎉")),
            "경보\n디스크 90% 🎉"
        );
        assert_eq!(render(&message(None, "only")), "only");
    }

    #[test]
    fn long_bodies_are_cut_to_1600() {
        let t = render(&message(None, &"문자🎉".repeat(1000)));
        assert!(units(&t) <= MAX_BODY);
        assert!(t.ends_with(MARKER));
    }
}
