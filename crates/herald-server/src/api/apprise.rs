//! Apprise-API-compatible ingest: `POST /notify/{key}`, so `AppriseNotifier`s, `apprise://`
//! URLs and scripts that post to an Apprise API switch to durable delivery by changing the
//! host.
//!
//! The body is Apprise API's, as a form (`application/x-www-form-urlencoded`) or JSON:
//! `body` (required), `title`, `type` (`info`·`success`·`warning`·`failure` → severity
//! info·info·warning·error), `format` (`text`·`markdown`·`html`), `tag` (or `tags`); the
//! query string may carry `tag`, `type`, `format` and `title` too. The message goes to
//! every enabled destination whose `tags` contain the key and match `tag` (comma = OR,
//! space = AND; no `tag`: all of them), as event type `notify.<type>`.
//!
//! Credentials: a `send` token as `Authorization: Bearer`, as the password of HTTP Basic
//! auth (`apprise://user:<token>@host/<key>`), or as the key itself
//! (`apprise://host/<token>`) — then the token's *name* is the key. Answers follow Apprise
//! API: 200 when accepted (a JSON body naming the message and its deliveries), 204 when no
//! destination carries the key, 424 when none matches the tags, 400 for a bad body.

use super::extract::read_json_body;
use super::problem::{ApiError, ApiResult, Problem};
use crate::auth::{Caller, Scope};
use crate::ingest::{self, IngestError, MessageAccepted, Submission};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use herald_core::apprise::{TagExpr, is_format, severity_of};
use herald_core::message::MessageInput;
use serde_json::{Map, Value, json};

/// What an Apprise notify request asks for.
#[derive(Debug, Default)]
struct Notify {
    body: Option<String>,
    title: Option<String>,
    kind: Option<String>,
    format: Option<String>,
    tags: Vec<String>,
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::BadRequest(msg.into())
}

fn from_form(body: &[u8]) -> Notify {
    let mut n = Notify::default();
    for (k, v) in url::form_urlencoded::parse(body) {
        let v = v.into_owned();
        match k.as_ref() {
            "body" => n.body = Some(v),
            "title" => n.title = Some(v),
            "type" => n.kind = Some(v),
            "format" => n.format = Some(v),
            "tag" | "tags" => n.tags.push(v),
            _ => {}
        }
    }
    n
}

fn from_json(body: &[u8]) -> ApiResult<Notify> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON provided: {e}")))?;
    let o = v
        .as_object()
        .ok_or_else(|| bad("the body must be a JSON object"))?;
    let text = |k: &str| -> ApiResult<Option<String>> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(bad(format!("`{k}` must be a string"))),
        }
    };
    let tags = match o.get("tag").or_else(|| o.get("tags")) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|t| match t {
                Value::String(s) => Ok(s.clone()),
                Value::Array(all) => all
                    .iter()
                    .map(|x| x.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .map(|v| v.join(" "))
                    .ok_or_else(|| bad("unsupported characters found in tag definition")),
                _ => Err(bad("unsupported characters found in tag definition")),
            })
            .collect::<ApiResult<_>>()?,
        Some(_) => return Err(bad("unsupported characters found in tag definition")),
    };
    if o.get("attachment")
        .or_else(|| o.get("attachments"))
        .is_some_and(|a| !(a.is_null() || a.as_array().is_some_and(Vec::is_empty)))
    {
        return Err(bad(
            "attachments are not supported by Herald's notify ingest",
        ));
    }
    Ok(Notify {
        body: text("body")?,
        title: text("title")?,
        kind: text("type")?,
        format: text("format")?,
        tags,
    })
}

/// Parses the body by its content type, then applies the query string's fallbacks.
fn parse(headers: &HeaderMap, query: Option<&str>, body: &[u8]) -> ApiResult<Notify> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut n = if ct.starts_with("application/x-www-form-urlencoded") {
        from_form(body)
    } else if ct.starts_with("multipart/") {
        return Err(bad(
            "multipart bodies (attachments) are not supported; send a form or JSON",
        ));
    } else if ct.contains("json") || body.trim_ascii_start().starts_with(b"{") {
        from_json(body)?
    } else {
        from_form(body)
    };
    if let Some(q) = query {
        let q = from_form(q.as_bytes());
        if n.tags.is_empty() {
            n.tags = q.tags;
        }
        n.kind = n.kind.or(q.kind);
        n.format = n.format.or(q.format);
        n.title = n.title.or(q.title);
    }
    Ok(n)
}

/// A token from `Authorization: Bearer …` or the password (else user) of Basic auth.
fn credentials(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    if let Some(t) = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
    {
        return Some(t.trim().to_string());
    }
    let b64 = v
        .strip_prefix("Basic ")
        .or_else(|| v.strip_prefix("basic "))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let pair = String::from_utf8(raw).ok()?;
    let (user, pass) = pair.split_once(':').unwrap_or((&pair, ""));
    // `apprise://<token>@host/key` sends the token as the user (and `None` as password).
    let t = [pass, user]
        .into_iter()
        .find(|t| t.starts_with("hrld_"))
        .unwrap_or(if pass.is_empty() { user } else { pass });
    (!t.is_empty()).then(|| t.to_string())
}

/// Authenticates; returns the caller and the key destinations are tagged with.
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    key: &str,
) -> ApiResult<(Caller, String)> {
    let (token, key_is_token) = if key.starts_with("hrld_") {
        (key.to_string(), true)
    } else {
        let t = credentials(headers).ok_or_else(|| {
            ApiError::Unauthorized(
                "give a send token: as the key, as Bearer, or as the Basic auth password".into(),
            )
        })?;
        (t, false)
    };
    let caller = state
        .auth
        .authenticate(state.store.as_ref(), &token)
        .await?;
    caller.require(Scope::Send)?;
    let routing = if key_is_token {
        caller.name.clone()
    } else {
        key.to_string()
    };
    Ok((caller, routing.to_ascii_lowercase()))
}

/// Apprise-API-compatible notify.
///
/// Sends `body` (form or JSON) to every destination tagged with `{key}` whose tags match
/// `tag` (comma = OR, space = AND). `{key}` may be a `send` token: then the token's name is
/// the key.
#[utoipa::path(post, path = "/notify/{key}", tag = "ingest",
    params(("key" = String, Path, description = "the tag destinations carry, or a send token (its name is then the key)")),
    request_body(content = Object, description = "Apprise API's fields: body, title, type, format, tag", content_type = "application/json"),
    responses((status = 200, body = MessageAccepted, description = "accepted for delivery"),
              (status = 204, description = "no destination carries the key"),
              (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 413, body = Problem), (status = 424, body = Problem, description = "no destination with the key matches the tags")),
    security(("bearer" = [])))]
pub async fn notify(
    State(state): State<AppState>,
    Path(key): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    notify_with_key(state, key, req).await
}

/// The header Apprise 2.x (`apprise://host/KEY`, its default `version=2`) carries the key in,
/// posting to `/notify` itself.
pub const CONFIG_ID_HEADER: &str = "x-apprise-config-id";

/// Apprise-API-compatible notify, the key in the `X-Apprise-Config-ID` header (what the
/// `apprise` package's default `apprise://host/KEY` URL sends).
#[utoipa::path(post, path = "/notify", tag = "ingest",
    params(("X-Apprise-Config-ID" = String, Header, description = "the tag destinations carry, or a send token (its name is then the key)")),
    request_body(content = Object, description = "Apprise API's fields: body, title, type, format, tag", content_type = "application/json"),
    responses((status = 200, body = MessageAccepted, description = "accepted for delivery"),
              (status = 204, description = "no destination carries the key"),
              (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 413, body = Problem), (status = 424, body = Problem, description = "no destination with the key matches the tags")),
    security(("bearer" = [])))]
pub async fn notify_by_header(State(state): State<AppState>, req: Request) -> ApiResult<Response> {
    let key = req
        .headers()
        .get(CONFIG_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
        .ok_or_else(|| {
            bad("the key goes in the path (/notify/{key}) or in the X-Apprise-Config-ID header")
        })?;
    notify_with_key(state, key, req).await
}

async fn notify_with_key(state: AppState, key: String, req: Request) -> ApiResult<Response> {
    if key.is_empty()
        || key.len() > 128
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(bad("the key must be 1–128 characters of [A-Za-z0-9_-]"));
    }
    let headers = req.headers().clone();
    let query = req.uri().query().map(str::to_string);
    let (caller, routing) = authenticate(&state, &headers, &key).await?;
    let raw = read_json_body(req, &state).await?;
    let n = parse(&headers, query.as_deref(), &raw)?;
    let body = n
        .body
        .filter(|b| !b.trim().is_empty())
        .ok_or_else(|| bad("payload lacks minimum requirements: `body` is required"))?;
    let kind = n.kind.unwrap_or_else(|| "info".into()).to_ascii_lowercase();
    let severity = severity_of(&kind).ok_or_else(|| {
        bad(format!(
            "unsupported type {kind:?}: use info, success, warning or failure"
        ))
    })?;
    let format = n
        .format
        .unwrap_or_else(|| "text".into())
        .to_ascii_lowercase();
    if !is_format(&format) {
        return Err(bad(format!(
            "unsupported format {format:?}: use text, markdown or html"
        )));
    }
    let expr = TagExpr::parse_list(&n.tags)
        .ok_or_else(|| bad("unsupported characters found in tag definition"))?;

    let keyed: Vec<_> = state
        .destinations
        .of_tenant(None)
        .into_iter()
        .filter(|d| d.enabled() && d.spec.tags.contains(&routing))
        .collect();
    if keyed.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let mut to: Vec<String> = keyed
        .iter()
        .filter(|d| expr.matches(&d.spec.tags))
        .map(|d| d.name.clone())
        .collect();
    if to.is_empty() {
        return Err(ApiError::FailedDependency(format!(
            "no destination tagged {routing:?} matches the tags {:?}",
            n.tags.join(", ")
        )));
    }
    to.sort();
    let mut apprise = Map::new();
    apprise.insert("key".into(), json!(routing));
    apprise.insert("type".into(), json!(kind));
    apprise.insert("format".into(), json!(format));
    if !n.tags.is_empty() {
        apprise.insert("tag".into(), json!(n.tags));
    }
    let mut payload = Map::new();
    payload.insert("apprise".into(), Value::Object(apprise));
    let input = MessageInput {
        event_type: Some(format!("notify.{kind}")),
        text: Some(body),
        title: n.title.filter(|t| !t.trim().is_empty()),
        severity: Some(severity),
        payload: Some(payload),
        to: Some(to),
        ..Default::default()
    };
    let mut results = ingest::submit(
        &state,
        vec![Submission {
            input,
            header_key: None,
            replay_context: None,
        }],
        &ingest::Submitter::of(&caller),
    )
    .await?;
    // A validation failure (e.g. an over-long body) is a bad request in Apprise's terms.
    let accepted = results
        .pop()
        .ok_or_else(|| ApiError::Internal("no result for the submission".into()))?
        .map_err(|e| match e {
            IngestError::Invalid(v) => bad(v.summary()),
            other => other.into(),
        })?;
    Ok((StatusCode::OK, Json(accepted.body)).into_response())
}
