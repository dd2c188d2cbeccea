//! `POST /messages`, `POST /messages/batch`, `GET /messages/{id}` and
//! `GET /messages/{id}/attachments/{n}`.

use super::extract::ApiJson;
use super::problem::{ApiError, ApiResult, Problem};
use super::views::DeliveryView;
use crate::auth::{Caller, Scope};
use crate::ingest::{self, MessageAccepted, Submission};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use herald_core::clock::{now_ms, rfc3339};
use herald_core::ids::MessageId;
use herald_core::message::{Attachment, MessageBody, MessageInput};
use herald_store::DeliveryQuery;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

pub const MAX_BATCH: usize = 1000;

fn idempotency_header(headers: &HeaderMap) -> ApiResult<Option<String>> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim().trim_matches('"').to_string()))
            .map_err(|_| ApiError::field("Idempotency-Key", "must be visible ASCII")),
    }
}

/// Submit a message.
///
/// Answers 202 once the message and one delivery per routed destination are durably
/// stored. With an `Idempotency-Key` (header or field), repeating the same request returns
/// the original answer with `Idempotent-Replayed: true`; the same key with a different body
/// is a 422.
#[utoipa::path(post, path = "/api/v1/messages", tag = "messages", request_body = MessageInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "at most 255 characters")),
    responses((status = 202, body = MessageAccepted), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 413, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(input): ApiJson<MessageInput>,
) -> ApiResult<Response> {
    caller.require(Scope::Send)?;
    let header_key = idempotency_header(&headers)?;
    let mut results = ingest::submit(
        &state,
        vec![Submission {
            input,
            header_key,
            replay_context: None,
        }],
        &ingest::Submitter::of(&caller),
    )
    .await?;
    let accepted = results.pop().expect("one result per submission")?;
    let mut resp = (StatusCode::ACCEPTED, Json(accepted.body)).into_response();
    if accepted.replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchInput {
    /// At most 1000 messages.
    #[schema(value_type = Vec<MessageInput>)]
    pub messages: Vec<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct BatchResult {
    /// Per message, in order: the 202 body plus `"status": 202`, or a problem document.
    #[schema(value_type = Vec<Object>)]
    pub results: Vec<Value>,
}

/// Submit up to 1000 messages in one request and one commit.
#[utoipa::path(post, path = "/api/v1/messages/batch", tag = "messages", request_body = BatchInput,
    responses((status = 202, body = BatchResult), (status = 400, body = Problem), (status = 413, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn batch(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<BatchInput>,
) -> ApiResult<(StatusCode, Json<BatchResult>)> {
    caller.require(Scope::Send)?;
    if input.messages.is_empty() || input.messages.len() > MAX_BATCH {
        return Err(ApiError::field(
            "messages",
            format!("give 1–{MAX_BATCH} messages"),
        ));
    }
    let mut results = vec![Value::Null; input.messages.len()];
    let mut subs = Vec::new();
    let mut positions = Vec::new();
    for (i, v) in input.messages.into_iter().enumerate() {
        match serde_path_to_error::deserialize::<_, MessageInput>(v) {
            Ok(input) => {
                subs.push(Submission {
                    input,
                    header_key: None,
                    replay_context: None,
                });
                positions.push(i);
            }
            Err(e) => {
                let path = e.path().to_string();
                let field = if path == "." {
                    format!("messages[{i}]")
                } else {
                    format!("messages[{i}].{path}")
                };
                results[i] = problem_value(&ApiError::field(&field, e.into_inner().to_string()));
            }
        }
    }
    let submitted = ingest::submit(&state, subs, &ingest::Submitter::of(&caller)).await?;
    for (pos, r) in positions.into_iter().zip(submitted) {
        results[pos] = match r {
            Ok(a) => {
                let mut body = a.body;
                if let Some(o) = body.as_object_mut() {
                    o.insert("status".into(), json!(202));
                    if a.replayed {
                        o.insert("idempotent_replayed".into(), json!(true));
                    }
                }
                body
            }
            Err(e) => problem_value(&e.into()),
        };
    }
    Ok((StatusCode::ACCEPTED, Json(BatchResult { results })))
}

/// A stored message with its deliveries.
#[derive(Serialize, ToSchema)]
pub struct MessageView {
    pub id: String,
    pub event_type: String,
    pub idempotency_key: Option<String>,
    pub created_at: String,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub body: Value,
    pub deliveries: Vec<DeliveryView>,
}

/// Read a message and its deliveries.
#[utoipa::path(get, path = "/api/v1/messages/{id}", tag = "messages", params(("id" = String, Path)),
    responses((status = 200, body = MessageView), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<MessageView>> {
    caller.require(Scope::Read)?;
    let not_found = || ApiError::NotFound(format!("no message {id:?}"));
    let Some(id) = MessageId::parse(&id) else {
        return Err(not_found());
    };
    let m = state.store.get_message(&id).await?.ok_or_else(not_found)?;
    let body: MessageBody = serde_json::from_str(&m.body)
        .map_err(|e| ApiError::Internal(format!("stored message unreadable: {e}")))?;
    let deliveries = state
        .store
        .list_deliveries(&DeliveryQuery {
            message_id: Some(id.to_string()),
            limit: 1000,
            ..Default::default()
        })
        .await?;
    let files = attachment_views(m.id.as_str(), &body.attachments);
    let mut body = serde_json::to_value(body).unwrap_or(Value::Null);
    if let Some(o) = body.as_object_mut()
        && o.contains_key("attachments")
    {
        o.insert("attachments".into(), files);
    }
    Ok(Json(MessageView {
        id: m.id.into_string(),
        event_type: m.event_type,
        idempotency_key: m.idempotency_key,
        created_at: rfc3339(m.created_at),
        body,
        deliveries: deliveries
            .into_iter()
            .rev()
            .map(|d| DeliveryView::new(d, &state.destinations, now_ms()))
            .collect(),
    }))
}

/// Download one attachment of a message, as it was sent.
///
/// `n` is its position in the message's `attachments` (from 0). The answer carries the
/// declared `Content-Type` and `Content-Disposition: attachment` with the filename as an
/// ASCII fallback and exactly as RFC 5987 `filename*` (RFC 6266), so non-ASCII names such
/// as `주간 보고서.csv` survive; `X-Content-Type-Options: nosniff`.
#[utoipa::path(get, path = "/api/v1/messages/{id}/attachments/{n}", tag = "messages",
    params(("id" = String, Path), ("n" = u32, Path, description = "position in `attachments`, from 0")),
    responses((status = 200, description = "The file's bytes, with its declared type", content_type = "*/*", body = Vec<u8>),
              (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn attachment(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, n)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require(Scope::Read)?;
    Ok(crate::attachments::download(&state, &id, &n).await?)
}

/// The message view's attachments: what was sent, without the bytes (download them).
fn attachment_views(id: &str, attachments: &[Attachment]) -> Value {
    attachments
        .iter()
        .enumerate()
        .map(|(i, a)| {
            json!({
                "filename": a.filename,
                "content_type": a.content_type,
                "size": a.size(),
                "url": a.url,
                "inline": a.inline.unwrap_or(false),
                "download": format!("/api/v1/messages/{id}/attachments/{i}"),
            })
        })
        .collect()
}

fn problem_value(e: &ApiError) -> Value {
    serde_json::to_value(e.problem()).unwrap_or(Value::Null)
}
