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
    ///
    /// The returned handle queues a failure for the next call of one method.
    pub fn serve_uploads(rx: &FakeReceiver) -> SlackFake {
        let base = rx.url("");
        let files: Arc<Mutex<HashMap<String, Upload>>> = Arc::default();
        let fake = SlackFake::default();
        let failures = fake.failures.clone();
        rx.respond_with(move |r| {
            let method = r.path.rsplit('/').next().unwrap_or_default();
            {
                let mut failures = failures.lock().unwrap();
                if let Some(i) = failures.iter().position(|(m, _)| m == method) {
                    return Some(failures.remove(i).1);
                }
            }
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
        fake
    }

    /// An announced upload: filename, announced length, whether the bytes arrived.
    type Upload = (String, usize, bool);

    /// Failures queued per Web API method (e.g. `files.completeUploadExternal`).
    #[derive(Clone, Default)]
    pub struct SlackFake {
        failures: Arc<Mutex<Vec<(String, Reply)>>>,
    }

    impl SlackFake {
        /// The next call of `method` gets `reply` instead of the normal answer.
        pub fn fail(&self, method: &str, reply: Reply) {
            self.failures.lock().unwrap().push((method.into(), reply));
        }
    }

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
