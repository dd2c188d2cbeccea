//! The `http` kind: any in-house JSON API, such as a messenger at
//! `POST {host}/api/v1/message` with a Bearer token.
//!
//! The body is the message payload as-is, or what `body_template` renders (it must be
//! JSON). `Idempotency-Key` is the message id, stable across retries, so the receiver can
//! drop duplicates. With `"include_attachments": true` the default body also carries the
//! message's `attachments` (`filename`, `content_type`, base64 `data`, `url`) as
//! `"attachments"`; otherwise files are left out.
//!
//! Classification per PROVIDERS.md: 2xx delivered; 409, 408, 425, 429 and 5xx retry (429 honours `Retry-After` and pauses the destination); 410 permanent and
//! disables; other 4xx permanent.

use crate::response::{Outgoing, classify_http, send as send_http};
use crate::{Attempt, Channels};
use herald_core::delivery::{ErrorClass, SendReport, Verdict};
use herald_core::destination::HttpSpec;
use herald_core::template::context;

pub async fn send(ch: &Channels, h: &HttpSpec, a: &Attempt<'_>) -> SendReport {
    let body = match &h.body_template {
        Some(t) => {
            let ctx = context(a.message, a.destination, "http", a.number);
            match ch.templates.render_json(t, &ctx) {
                Ok(v) => v.to_string().into_bytes(),
                Err(e) => return SendReport::failed(Verdict::permanent(), ErrorClass::Template, e),
            }
        }
        None => {
            let mut payload = a.message.body.payload.clone();
            if h.include_attachments && !a.message.body.attachments.is_empty() {
                payload.insert(
                    "attachments".into(),
                    serde_json::json!(a.message.body.attachments),
                );
            }
            serde_json::Value::Object(payload).to_string().into_bytes()
        }
    };
    let mut headers: Vec<(String, String)> = vec![
        (
            "content-type".into(),
            "application/json; charset=utf-8".into(),
        ),
        ("idempotency-key".into(), a.message.id.to_string()),
    ];
    headers.extend(h.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
    let method = match h.method.as_deref().unwrap_or("POST") {
        "PUT" => reqwest::Method::PUT,
        "PATCH" => reqwest::Method::PATCH,
        _ => reqwest::Method::POST,
    };
    let out = Outgoing {
        method,
        url: &h.url,
        headers,
        body,
        timeout: a.spec.timeout(),
    };
    match send_http(ch, out).await {
        Ok(ans) if ans.status == 409 => {
            ans.retry(ans.retry_after(), false, "HTTP 409 Conflict".into())
        }
        Ok(ans) => classify_http(&ans),
        Err(report) => report,
    }
}
