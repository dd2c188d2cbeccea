//! Answers shaped like the real providers' (shared/PROVIDERS.md), for scripting a
//! [`FakeReceiver`](crate::receiver::FakeReceiver) that stands in for Slack, Teams, Discord,
//! Telegram or Twilio.

use crate::receiver::Reply;
use serde_json::json;

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
