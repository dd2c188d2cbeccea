//! Answers shaped like the real providers' (shared/PROVIDERS.md), for scripting a
//! [`FakeReceiver`](crate::receiver::FakeReceiver) that stands in for Slack, Teams, Discord,
//! Telegram or Twilio.

use crate::receiver::{FakeReceiver, Received, Reply};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Slack incoming webhooks answer in plain text.
pub mod slack_webhook {
    use super::*;

    /// 200 `ok`.
    pub fn ok() -> Reply {
        Reply::status(200)
            .header("content-type", "text/plain")
            .body("ok")
    }

    /// An error status with a plain-text code such as `invalid_blocks` or `no_service`.
    pub fn error(status: u16, code: &str) -> Reply {
        Reply::status(status)
            .header("content-type", "text/plain")
            .body(code)
    }

    /// 429 with `Retry-After: <secs>`.
    pub fn rate_limited(secs: u64) -> Reply {
        Reply::status(429)
            .header("retry-after", &secs.to_string())
            .json(json!({"retry_after": secs, "ok": false, "error": "rate_limited"}))
    }
}

/// Slack's Web API answers 200 with `ok` true or false.
pub mod slack_api {
    use super::*;

    pub fn ok() -> Reply {
        Reply::status(200).json(json!({
            "ok": true, "channel": "C0123456789", "ts": "1503435956.000247",
            "message": {"text": "posted"}
        }))
    }

    /// 200 `{"ok":false,"error":code}`.
    pub fn error(code: &str) -> Reply {
        Reply::status(200).json(json!({"ok": false, "error": code}))
    }

    /// 429 `ratelimited` with `Retry-After: <secs>`.
    pub fn rate_limited(secs: u64) -> Reply {
        Reply::status(429)
            .header("retry-after", &secs.to_string())
            .json(json!({"ok": false, "error": "ratelimited"}))
    }

    /// Makes `rx` answer the Web API as Slack does for posts and the external upload flow:
    /// `files.getUploadURLExternal` (form `filename` + `length`) answers an `upload_url`
    /// on `rx` itself and a `file_id`; a POST of exactly `length` bytes there answers
    /// `200 OK - <length>`; `files.completeUploadExternal` (form or JSON `files` with ids that
    /// were uploaded, `channel_id`) shares them; `chat.postMessage` posts. A missing
    /// bearer token is `not_authed`, a missing argument `invalid_arguments`.
    /// Inject a failure into one step with [`FakeReceiver::push_for`].
    pub fn serve_uploads(rx: &FakeReceiver) {
        let base = rx.url("");
        let files: Arc<Mutex<HashMap<String, Upload>>> = Arc::default();
        rx.respond_with(move |r| {
            let method = r.path.rsplit('/').next().unwrap_or_default();
            if r.path.starts_with("/upload/") {
                let mut files = files.lock().unwrap();
                return Some(match files.get_mut(method) {
                    Some((_, len, done)) if *len == r.body.len() => {
                        *done = true;
                        Reply::status(200).body(format!("OK - {len}"))
                    }
                    Some((_, len, _)) => Reply::status(400).body(format!(
                        "length mismatch: {len} announced, {} sent",
                        r.body.len()
                    )),
                    None => Reply::status(404).body("unknown upload"),
                });
            }
            if !r
                .header("authorization")
                .is_some_and(|a| a.starts_with("Bearer xox"))
            {
                return Some(error("not_authed"));
            }
            let args = args(r);
            let arg = |k: &str| args.get(k).cloned().unwrap_or_default();
            Some(match method {
                "chat.postMessage" => ok(),
                "files.getUploadURLExternal" => {
                    let (name, len) =
                        (arg("filename"), arg("length").parse::<usize>().unwrap_or(0));
                    if name.is_empty() || len == 0 {
                        return Some(error("invalid_arguments"));
                    }
                    let mut files = files.lock().unwrap();
                    let id = format!("F{:010}", files.len() + 1);
                    files.insert(id.clone(), (name, len, false));
                    Reply::status(200).json(json!({
                        "ok": true, "upload_url": format!("{base}/upload/{id}"), "file_id": id
                    }))
                }
                "files.completeUploadExternal" => {
                    let list: Vec<serde_json::Value> =
                        serde_json::from_str(&arg("files")).unwrap_or_default();
                    let files = files.lock().unwrap();
                    let mut shared = Vec::new();
                    for f in &list {
                        match f["id"]
                            .as_str()
                            .and_then(|id| files.get(id).map(|v| (id, v)))
                        {
                            Some((id, (name, len, true))) => shared.push(json!({
                                "id": id, "name": name, "title": f["title"], "size": len,
                                "channels": [arg("channel_id")]
                            })),
                            _ => return Some(error("file_not_found")),
                        }
                    }
                    if shared.is_empty() {
                        return Some(error("invalid_arguments"));
                    }
                    Reply::status(200).json(json!({"ok": true, "files": shared}))
                }
                _ => error("unknown_method"),
            })
        });
    }

    /// An announced upload: filename, announced length, whether the bytes arrived.
    type Upload = (String, usize, bool);

    /// The arguments of a Web API call, form-encoded or JSON (JSON values as text).
    pub fn args(r: &Received) -> HashMap<String, String> {
        if r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json"))
        {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
            v.as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| {
                            let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                            (k.clone(), text)
                        })
                        .collect()
                })
                .unwrap_or_default()
        } else {
            url::form_urlencoded::parse(&r.body).into_owned().collect()
        }
    }
}

pub mod teams {
    use super::*;

    /// Workflows: 202 with an empty body.
    pub fn workflows_accepted() -> Reply {
        Reply::status(202)
    }

    /// Legacy connector: 200 with body `1`.
    pub fn connector_ok() -> Reply {
        Reply::status(200)
            .header("content-type", "text/plain")
            .body("1")
    }

    /// Legacy connector throttling: a 200 whose body mentions `HTTP error 429`.
    pub fn connector_throttled() -> Reply {
        Reply::status(200)
            .header("content-type", "text/plain")
            .body("Webhook message delivery failed with error: Microsoft Teams endpoint returned HTTP error 429 with ContextId tcid=0,server=msgapi-production-eus-azsc2-4-170,cv=deadbeef.0..")
    }

    /// 429 with `Retry-After: <secs>`.
    pub fn rate_limited(secs: u64) -> Reply {
        Reply::status(429).header("retry-after", &secs.to_string())
    }
}

pub mod discord {
    use super::*;

    /// 204 No Content (no `?wait=true`).
    pub fn no_content() -> Reply {
        Reply::status(204)
    }

    /// An error with Discord's `{"code","message"}` body.
    pub fn error(status: u16, code: u32, message: &str) -> Reply {
        Reply::status(status).json(json!({"code": code, "message": message}))
    }

    /// Makes `rx` execute webhooks as Discord does, JSON or `multipart/form-data`: a
    /// multipart request needs a `payload_json` field, and every entry of its
    /// `attachments` a `files[<id>]` part; files over `limit` bytes in all are a 413
    /// (`40005 Request entity too large`), a malformed form a 400 50035. Answers 204.
    pub fn serve_webhook(rx: &FakeReceiver, limit: usize) {
        rx.respond_with(move |r| {
            let is_form = r
                .header("content-type")
                .is_some_and(|c| c.starts_with("multipart/form-data"));
            if !is_form {
                return Some(match serde_json::from_slice::<serde_json::Value>(&r.body) {
                    Ok(_) => no_content(),
                    Err(_) => error(400, 50035, "Invalid Form Body"),
                });
            }
            let parts = crate::mime::form_data(r);
            let Some(payload) = parts
                .iter()
                .find(|p| p.name.as_deref() == Some("payload_json"))
                .and_then(|p| serde_json::from_slice::<serde_json::Value>(&p.bytes).ok())
            else {
                return Some(error(400, 50035, "Invalid Form Body"));
            };
            let total: usize = parts
                .iter()
                .filter(|p| p.filename.is_some())
                .map(|p| p.bytes.len())
                .sum();
            if total > limit {
                return Some(error(413, 40005, "Request entity too large"));
            }
            let refs = payload["attachments"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let complete = refs.iter().all(|a| {
                let name = format!("files[{}]", a["id"]);
                parts
                    .iter()
                    .any(|p| p.name.as_deref() == Some(&name) && p.filename.is_some())
            });
            Some(if complete {
                no_content()
            } else {
                error(400, 50035, "Invalid Form Body")
            })
        });
    }

    /// 429 with a float `retry_after` in the body and a rounded-up `Retry-After` header
    /// of `header_secs` (set it far off to prove the float wins).
    pub fn rate_limited(retry_after: f64, header_secs: u64) -> Reply {
        Reply::status(429)
            .header("retry-after", &header_secs.to_string())
            .header("x-ratelimit-limit", "5")
            .header("x-ratelimit-remaining", "0")
            .header("x-ratelimit-scope", "shared")
            .json(json!({"message": "You are being rate limited.", "retry_after": retry_after, "global": false}))
    }
}

pub mod telegram {
    use super::*;

    pub fn ok() -> Reply {
        Reply::status(200).json(json!({
            "ok": true,
            "result": {"message_id": 42, "chat": {"id": -1001234567890_i64, "type": "supergroup"}, "date": 1700000000, "text": "sent"}
        }))
    }

    /// HTTP status = `error_code`, `{"ok":false,"error_code","description"}`.
    pub fn error(code: u16, description: &str) -> Reply {
        Reply::status(code)
            .json(json!({"ok": false, "error_code": code, "description": description}))
    }

    /// 429 with `parameters.retry_after` (and no header, as Telegram does).
    pub fn too_many_requests(retry_after: u64) -> Reply {
        Reply::status(429).json(json!({
            "ok": false, "error_code": 429,
            "description": format!("Too Many Requests: retry after {retry_after}"),
            "parameters": {"retry_after": retry_after}
        }))
    }

    /// Makes `rx` answer `sendMessage` (JSON) and `sendPhoto`/`sendDocument`
    /// (`multipart/form-data` with `chat_id` and a `photo`/`document` file part) as the
    /// Bot API does: a caption over 1024 characters is `400 Bad Request: message caption
    /// is too long`, a missing file `400 Bad Request: there is no photo in the request`.
    pub fn serve_bot(rx: &FakeReceiver) {
        rx.respond_with(|r| {
            let method = r.path.rsplit('/').next().unwrap_or_default();
            let field = match method {
                "sendMessage" => return Some(ok()),
                "sendPhoto" => "photo",
                "sendDocument" => "document",
                _ => return Some(error(404, "Not Found")),
            };
            let parts = crate::mime::form_data(r);
            let has = |name: &str| parts.iter().any(|p| p.name.as_deref() == Some(name));
            if !has("chat_id") {
                return Some(error(400, "Bad Request: chat_id is empty"));
            }
            if !parts
                .iter()
                .any(|p| p.name.as_deref() == Some(field) && p.filename.is_some())
            {
                return Some(error(
                    400,
                    &format!("Bad Request: there is no {field} in the request"),
                ));
            }
            let caption = parts
                .iter()
                .find(|p| p.name.as_deref() == Some("caption"))
                .map(|p| p.text().encode_utf16().count())
                .unwrap_or(0);
            Some(if caption > 1024 {
                error(400, "Bad Request: message caption is too long")
            } else {
                ok()
            })
        });
    }

    /// 400 telling that the group became the supergroup `new_id`.
    pub fn migrated(new_id: i64) -> Reply {
        Reply::status(400).json(json!({
            "ok": false, "error_code": 400,
            "description": "Bad Request: group chat was upgraded to a supergroup chat",
            "parameters": {"migrate_to_chat_id": new_id}
        }))
    }
}

pub mod twilio {
    use super::*;

    /// 201 with a queued message resource.
    pub fn created() -> Reply {
        Reply::status(201).json(json!({
            "sid": "SM1f0e8ae6ade43cb3c0ce4525424e404f",
            "status": "queued",
            "to": "+821012345678",
            "from": "+15005550006",
            "num_segments": "1"
        }))
    }

    /// An error with Twilio's `{"code","message","more_info","status"}` body.
    pub fn error(status: u16, code: u32, message: &str) -> Reply {
        Reply::status(status).json(json!({
            "code": code,
            "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status
        }))
    }
}
