//! The `webhook` kind: POST JSON signed per Standard Webhooks 1.0.
//!
//! Body: `{"type": event_type, "timestamp": RFC 3339, "data": payload}` plus `text`, `title`
//! and `attachments` when present. Headers: `webhook-id` (the message id, stable across
//! retries), `webhook-timestamp` (this attempt), `webhook-signature` (one `v1,` entry per
//! active secret). With `"signing": "hex-sha256"` also `X-Webhook-Signature:
//! sha256=<hex>` and `X-Webhook-Event` for older receivers. With `"signing": "svix"`
//! Svix's wire format: the same signature under `svix-id`, `svix-timestamp` and
//! `svix-signature`, and the payload itself as the body. Secrets retired by a rotation keep
//! signing (one more `v1,` entry each) until their time is up.

use crate::response::{Outgoing, classify_http, send as send_http};
use crate::{Attempt, Channels};
use herald_core::clock::rfc3339;
use herald_core::delivery::{ErrorClass, SendReport, Verdict};
use herald_core::destination::{Signing, WebhookSpec};
use herald_core::message::Message;
use herald_core::signature::{SigningKey, signature_header};
use serde_json::{Value, json};

/// The JSON body a webhook receiver gets.
pub fn body(message: &Message, include_attachments: bool) -> Value {
    let mut body = json!({
        "type": message.event_type,
        "timestamp": rfc3339(message.created_at),
        "data": message.body.payload,
    });
    let obj = body.as_object_mut().expect("built as an object");
    if let Some(t) = &message.body.text {
        obj.insert("text".into(), json!(t));
    }
    if let Some(t) = &message.body.title {
        obj.insert("title".into(), json!(t));
    }
    obj.insert("severity".into(), json!(message.body.severity.as_str()));
    if include_attachments && !message.body.attachments.is_empty() {
        obj.insert("attachments".into(), json!(message.body.attachments));
    }
    body
}

pub async fn send(ch: &Channels, w: &WebhookSpec, a: &Attempt<'_>) -> SendReport {
    let now = herald_core::clock::now_ms();
    let keys: Result<Vec<SigningKey>, String> = w
        .signing_secrets(now)
        .into_iter()
        .map(SigningKey::parse)
        .collect();
    let keys = match keys {
        Ok(keys) if !keys.is_empty() => keys,
        Err(e) => {
            return SendReport::failed(
                Verdict::permanent(),
                ErrorClass::Config,
                format!("webhook secret: {e}"),
            );
        }
        Ok(_) => {
            return SendReport::failed(
                Verdict::permanent(),
                ErrorClass::Config,
                "the webhook has no signing secret",
            );
        }
    };
    let svix = w.signing == Some(Signing::Svix);
    let payload = if svix {
        serde_json::to_vec(&a.message.body.payload).unwrap_or_default()
    } else {
        body(a.message, !w.omit_attachments)
            .to_string()
            .into_bytes()
    };
    let timestamp = now / 1000;
    let mut headers: Vec<(String, String)> = w
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    headers.push(("content-type".into(), "application/json".into()));
    let prefix = if svix { "svix" } else { "webhook" };
    headers.push((format!("{prefix}-id"), a.message.id.to_string()));
    headers.push((format!("{prefix}-timestamp"), timestamp.to_string()));
    headers.push((
        format!("{prefix}-signature"),
        signature_header(&keys, a.message.id.as_str(), timestamp, &payload),
    ));
    if w.signing == Some(Signing::HexSha256) {
        headers.push((
            "x-webhook-signature".into(),
            keys[0].sign_legacy_hex(&payload),
        ));
        headers.push(("x-webhook-event".into(), a.message.event_type.clone()));
    }
    let out = Outgoing {
        method: reqwest::Method::POST,
        url: &w.url,
        headers,
        body: payload,
        timeout: a.spec.timeout(),
    };
    match send_http(ch, out).await {
        Ok(ans) => classify_http(&ans),
        Err(report) => report,
    }
}
