//! `/api/v1/app/{app_id}/msg` and the attempt routes: Svix messages are Herald messages of
//! the tenant, routed only to its endpoints; `eventId` is the message's idempotency key,
//! remembered per tenant.

use super::apps::{ApplicationIn, check_uid};
use super::endpoints::{EndpointOut, endpoint_out, find as find_endpoint};
use super::{
    ListResponse, SvixCaller, SvixError, SvixJson, SvixResult, app, limit, page, parse_time, query,
    require, time,
};
use crate::api::problem::ApiError;
use crate::auth::{Caller, Scope};
use crate::ingest::{self, IngestError, Submission, Submitter};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use herald_core::delivery::{AttemptOutcome, DeliveryStatus};
use herald_core::ids::{DeliveryId, MessageId, split_destination_key};
use herald_core::message::{MessageBody, MessageInput};
use herald_store::{
    AttemptCursor, DeliveryQuery, DestinationAttempt, MessageQuery, MessageRecord, TenantRecord,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageIn {
    event_type: Option<String>,
    payload: Option<Value>,
    #[serde(default)]
    event_id: Option<String>,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    application: Option<ApplicationIn>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageOut {
    id: String,
    event_type: String,
    payload: Value,
    timestamp: String,
    event_id: Option<String>,
    channels: Option<Vec<String>>,
    tags: Option<Vec<String>>,
}

impl MessageOut {
    pub fn id(&self) -> &str {
        &self.id
    }
}

fn message_out(m: &MessageRecord, with_content: bool) -> MessageOut {
    let payload = if with_content {
        serde_json::from_str::<MessageBody>(&m.body)
            .map(|b| Value::Object(b.payload))
            .unwrap_or_else(|_| json!({}))
    } else {
        json!({})
    };
    MessageOut {
        id: m.id.to_string(),
        event_type: m.event_type.clone(),
        payload,
        timestamp: time(m.created_at),
        event_id: m.idempotency_key.clone(),
        channels: None,
        tags: None,
    }
}

/// A message for [`send`].
pub struct Outgoing {
    pub event_type: String,
    pub payload: Value,
    pub event_id: Option<String>,
    /// What a repeat of `event_id` must also match to be a replay (the request's
    /// `Idempotency-Key`): a different one is a duplicate event, 409.
    pub replay_context: Option<String>,
    /// Only these endpoints (local names); `None`: routed by the endpoints' filters.
    pub to: Option<Vec<String>>,
}

/// Accepts a message of `tenant` through Herald's ingest (one durable commit).
pub async fn send(
    state: &AppState,
    caller: &Caller,
    tenant: &TenantRecord,
    m: Outgoing,
) -> SvixResult<MessageOut> {
    let Value::Object(payload) = m.payload else {
        return Err(SvixError::body_field("payload", "must be a JSON object"));
    };
    let now = herald_core::clock::now_ms();
    if let Err(next) = state.quotas.admit(tenant, now) {
        return Err(SvixError::TooMany {
            retry_after_s: ((next - now) as u64).div_ceil(1000).max(1),
        });
    }
    let input: MessageInput = serde_json::from_value(json!({
        "event_type": m.event_type,
        "payload": payload,
        "idempotency_key": m.event_id,
        "to": m.to,
    }))
    .map_err(|e| SvixError::body_field("body", e.to_string()))?;
    let mut who = Submitter::of(caller).in_tenant(Some(tenant.id.clone()));
    who.keys_per_tenant = true;
    let sub = Submission {
        input,
        header_key: None,
        replay_context: m.replay_context,
    };
    let result = ingest::submit(state, vec![sub], &who)
        .await
        .map_err(ingest_error)?
        .into_iter()
        .next()
        .ok_or_else(|| SvixError::from(ApiError::Internal("no answer for the message".into())))?
        .map_err(ingest_error)?;
    let id = result
        .body
        .get("id")
        .and_then(Value::as_str)
        .and_then(MessageId::parse)
        .ok_or_else(|| SvixError::from(ApiError::Internal("accepted without an id".into())))?;
    let stored =
        state.store.get_message(&id).await?.ok_or_else(|| {
            SvixError::from(ApiError::Internal("accepted message not found".into()))
        })?;
    Ok(message_out(&stored, true))
}

fn ingest_error(e: IngestError) -> SvixError {
    match e {
        // Svix answers a second message with the same eventId so, and sends nothing.
        IngestError::KeyConflict => SvixError::conflict("A conflict has occurred"),
        IngestError::Invalid(v) => SvixError::Validation(
            v.0.into_iter()
                .map(|f| {
                    let field = match f.field.as_str() {
                        "event_type" => "eventType".to_string(),
                        "idempotency_key" => "eventId".to_string(),
                        other => other.to_string(),
                    };
                    (vec!["body".to_string(), field], f.message)
                })
                .collect(),
        ),
        other => ApiError::from(other).into(),
    }
}

#[derive(Deserialize)]
pub struct WithContent {
    with_content: Option<bool>,
}

/// `POST /app/{app_id}/msg`: 202 with the message; an `application` in the body makes the
/// app when the path names none yet (its `uid` must be the path's).
pub async fn create(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    Path(app_id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    SvixJson(body): SvixJson<MessageIn>,
) -> SvixResult<(StatusCode, Json<MessageOut>)> {
    require(&caller, Scope::Send)?;
    let q: WithContent = query(&uri)?;
    let tenant = match app(&state, &caller, &app_id).await {
        Ok(t) => t,
        Err(not_found) => match body.application {
            Some(a) if caller.tenant.is_none() => {
                if a.uid.as_deref() != Some(app_id.as_str()) {
                    return Err(SvixError::body_field(
                        "application.uid",
                        "the application's uid must be the app id of the path",
                    ));
                }
                caller.require(Scope::Admin)?;
                let input = a.input()?;
                match crate::tenants::create(&state, input, &caller.actor()).await {
                    Ok(t) => t,
                    // Made by a concurrent request a moment ago.
                    Err(crate::tenants::TenantError::UidTaken(_)) => {
                        app(&state, &caller, &app_id).await?
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            _ => return Err(not_found),
        },
    };
    let event_type = body
        .event_type
        .ok_or_else(|| SvixError::body_field("eventType", "field required"))?;
    let payload = body
        .payload
        .ok_or_else(|| SvixError::body_field("payload", "field required"))?;
    if body.channels.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err(SvixError::body_field(
            "channels",
            "channels are not supported by Herald (endpoints filter by event type)",
        ));
    }
    if let Some(id) = &body.event_id {
        check_uid(id, "eventId")?;
    }
    // A repeated eventId is a replay only with the same Idempotency-Key (an SDK retrying
    // one call); without a key every repeat is a new call, a conflict.
    let replay_context = Some(
        headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .unwrap_or_else(herald_core::ids::unique_hex),
    );
    let mut out = send(
        &state,
        &caller,
        &tenant,
        Outgoing {
            event_type,
            payload,
            event_id: body.event_id,
            replay_context,
            to: None,
        },
    )
    .await?;
    if q.with_content == Some(false) {
        out.payload = json!({});
    }
    Ok((StatusCode::ACCEPTED, Json(out)))
}

/// The message of `tenant` named by id or `eventId`; 404 otherwise.
async fn find_message(
    state: &AppState,
    tenant: &TenantRecord,
    id_or_event: &str,
) -> SvixResult<MessageRecord> {
    if let Some(id) = MessageId::parse(id_or_event)
        && let Some(m) = state.store.get_message(&id).await?
    {
        return if m.tenant.as_deref() == Some(tenant.id.as_str()) {
            Ok(m)
        } else {
            Err(SvixError::not_found("Message"))
        };
    }
    let q = MessageQuery {
        tenant: Some(tenant.id.clone()),
        idempotency_key: Some(id_or_event.to_string()),
        limit: 1,
        ..Default::default()
    };
    state
        .store
        .list_messages(&q)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| SvixError::not_found("Message"))
}

pub async fn get(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    Path((app_id, msg_id)): Path<(String, String)>,
    uri: Uri,
) -> SvixResult<Json<MessageOut>> {
    require(&caller, Scope::Read)?;
    let q: WithContent = query(&uri)?;
    let tenant = app(&state, &caller, &app_id).await?;
    let m = find_message(&state, &tenant, &msg_id).await?;
    Ok(Json(message_out(&m, q.with_content.unwrap_or(true))))
}

#[derive(Deserialize)]
pub struct MessageListQuery {
    limit: Option<u32>,
    iterator: Option<String>,
    before: Option<String>,
    after: Option<String>,
    event_types: Option<String>,
    with_content: Option<bool>,
}

/// Comma-separated event types (how the SDKs send a list).
fn types_of(s: Option<&str>) -> Vec<String> {
    s.map(|s| {
        s.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect()
    })
    .unwrap_or_default()
}

pub async fn list(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    Path(app_id): Path<String>,
    uri: Uri,
) -> SvixResult<Json<ListResponse<MessageOut>>> {
    require(&caller, Scope::Read)?;
    let q: MessageListQuery = query(&uri)?;
    let limit = limit(q.limit)?;
    let tenant = app(&state, &caller, &app_id).await?;
    let mq = MessageQuery {
        tenant: Some(tenant.id.clone()),
        event_types: types_of(q.event_types.as_deref()),
        idempotency_key: None,
        before_id: q.iterator.filter(|i| !i.starts_with('-')),
        created_before: q
            .before
            .as_deref()
            .map(|b| parse_time(b, "before"))
            .transpose()?,
        created_after: q
            .after
            .as_deref()
            .map(|a| parse_time(a, "after"))
            .transpose()?,
        limit: limit + 1,
    };
    let items = state.store.list_messages(&mq).await?;
    let out = page(items, limit, |m| m.id.to_string());
    let with_content = q.with_content.unwrap_or(true);
    Ok(Json(ListResponse {
        data: out
            .data
            .iter()
            .map(|m| message_out(m, with_content))
            .collect(),
        iterator: out.iterator,
        prev_iterator: out.prev_iterator,
        done: out.done,
    }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptOut {
    id: String,
    msg_id: String,
    endpoint_id: String,
    url: String,
    response: String,
    response_status_code: u16,
    response_duration_ms: i64,
    status: u8,
    status_text: &'static str,
    trigger_type: u8,
    timestamp: String,
}

/// `atmpt_<delivery's hex>_<number>`: an attempt is its delivery's n-th.
fn attempt_id(a: &DestinationAttempt) -> String {
    let hex = a
        .delivery_id
        .as_str()
        .strip_prefix("dlv_")
        .unwrap_or(a.delivery_id.as_str());
    format!("atmpt_{hex}_{}", a.attempt.number)
}

/// The delivery and number an attempt id names.
fn parse_attempt_id(s: &str) -> Option<(DeliveryId, u32)> {
    let rest = s.strip_prefix("atmpt_")?;
    let (hex, n) = rest.rsplit_once('_')?;
    Some((DeliveryId::parse(&format!("dlv_{hex}"))?, n.parse().ok()?))
}

fn attempt_out(state: &AppState, a: &DestinationAttempt) -> AttemptOut {
    let url = state
        .destinations
        .get(&a.destination)
        .and_then(|e| match &e.spec.kind {
            herald_core::destination::KindSpec::Webhook(w) => Some(w.url.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let delivered = a.attempt.outcome == AttemptOutcome::Delivered;
    let response = if a.attempt.response_excerpt.is_empty() {
        a.attempt.error.clone().unwrap_or_default()
    } else {
        a.attempt.response_excerpt.clone()
    };
    AttemptOut {
        id: attempt_id(a),
        msg_id: a.message_id.to_string(),
        endpoint_id: split_destination_key(&a.destination).1.to_string(),
        url,
        response,
        response_status_code: a.attempt.status_code.unwrap_or(0),
        response_duration_ms: a.attempt.duration_ms,
        status: if delivered { 0 } else { 2 },
        status_text: if delivered { "success" } else { "fail" },
        trigger_type: u8::from(a.manual),
        timestamp: time(a.attempt.started_at),
    }
}

#[derive(Deserialize)]
pub struct AttemptQuery {
    limit: Option<u32>,
    iterator: Option<String>,
    endpoint_id: Option<String>,
    status: Option<u8>,
}

fn status_matches(a: &DestinationAttempt, status: Option<u8>) -> bool {
    let delivered = a.attempt.outcome == AttemptOutcome::Delivered;
    match status {
        None => true,
        Some(0) => delivered,
        Some(2) => !delivered,
        Some(_) => false,
    }
}

/// `GET /app/{app_id}/attempt/msg/{msg_id}`: the message's attempts, newest first.
pub async fn attempts_of_message(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    Path((app_id, msg_id)): Path<(String, String)>,
    uri: Uri,
) -> SvixResult<Json<ListResponse<AttemptOut>>> {
    require(&caller, Scope::Read)?;
    let q: AttemptQuery = query(&uri)?;
    let limit = limit(q.limit)?;
    let tenant = app(&state, &caller, &app_id).await?;
    let m = find_message(&state, &tenant, &msg_id).await?;
    let only = match &q.endpoint_id {
        Some(ep) => Some(find_endpoint(&state, &tenant, ep)?.name.clone()),
        None => None,
    };
    let all = state.store.list_message_attempts(&m.id, 10_000).await?;
    let after = q.iterator.as_deref().filter(|i| !i.starts_with('-'));
    let mut past_iterator = after.is_none();
    let items: Vec<DestinationAttempt> = all
        .into_iter()
        .filter(|a| {
            if !past_iterator {
                past_iterator = after == Some(attempt_id(a).as_str());
                return false;
            }
            true
        })
        .filter(|a| only.as_ref().is_none_or(|d| &a.destination == d))
        .filter(|a| status_matches(a, q.status))
        .take(limit as usize + 1)
        .collect();
    let out = page(items, limit, attempt_id);
    Ok(Json(ListResponse {
        data: out.data.iter().map(|a| attempt_out(&state, a)).collect(),
        iterator: out.iterator,
        prev_iterator: out.prev_iterator,
        done: out.done,
    }))
}

/// `GET /app/{app_id}/attempt/endpoint/{endpoint_id}`: the endpoint's attempts, newest
/// first (a page is an index range).
pub async fn attempts_of_endpoint(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    Path((app_id, endpoint_id)): Path<(String, String)>,
    uri: Uri,
) -> SvixResult<Json<ListResponse<AttemptOut>>> {
    require(&caller, Scope::Read)?;
    let q: AttemptQuery = query(&uri)?;
    let limit = limit(q.limit)?;
    let tenant = app(&state, &caller, &app_id).await?;
    let e = find_endpoint(&state, &tenant, &endpoint_id)?;
    let cursor = match q.iterator.as_deref().filter(|i| !i.starts_with('-')) {
        Some(it) => {
            let (delivery, number) = parse_attempt_id(it).ok_or_else(|| {
                SvixError::Validation(vec![(
                    vec!["query".into(), "iterator".into()],
                    "not an attempt id".into(),
                )])
            })?;
            let started_at = state
                .store
                .list_attempts(&delivery)
                .await?
                .into_iter()
                .find(|a| a.number == number)
                .map(|a| a.started_at)
                .ok_or_else(|| SvixError::not_found("Attempt"))?;
            Some(AttemptCursor {
                started_at,
                delivery_id: delivery.into_string(),
                number,
            })
        }
        None => None,
    };
    let items: Vec<DestinationAttempt> = state
        .store
        .list_destination_attempts(&e.name, cursor, limit + 1)
        .await?
        .into_iter()
        .filter(|a| status_matches(a, q.status))
        .collect();
    let out = page(items, limit, attempt_id);
    Ok(Json(ListResponse {
        data: out.data.iter().map(|a| attempt_out(&state, a)).collect(),
        iterator: out.iterator,
        prev_iterator: out.prev_iterator,
        done: out.done,
    }))
}

/// `GET /app/{app_id}/msg/{msg_id}/attempt/{attempt_id}`.
pub async fn attempt(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    Path((app_id, msg_id, attempt_id_given)): Path<(String, String, String)>,
) -> SvixResult<Json<AttemptOut>> {
    require(&caller, Scope::Read)?;
    let tenant = app(&state, &caller, &app_id).await?;
    let m = find_message(&state, &tenant, &msg_id).await?;
    let a = state
        .store
        .list_message_attempts(&m.id, 10_000)
        .await?
        .into_iter()
        .find(|a| attempt_id(a) == attempt_id_given)
        .ok_or_else(|| SvixError::not_found("Attempt"))?;
    Ok(Json(attempt_out(&state, &a)))
}

/// `POST /app/{app_id}/msg/{msg_id}/endpoint/{endpoint_id}/resend`: one more delivery of
/// the message to the endpoint (its attempts are manual), whatever its filters say.
pub async fn resend(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    Path((app_id, msg_id, endpoint_id)): Path<(String, String, String)>,
) -> SvixResult<(StatusCode, Json<Map<String, Value>>)> {
    require(&caller, Scope::Send)?;
    let tenant = app(&state, &caller, &app_id).await?;
    let m = find_message(&state, &tenant, &msg_id).await?;
    let e = find_endpoint(&state, &tenant, &endpoint_id)?;
    let now = herald_core::clock::now_ms();
    if !state
        .store
        .resend(&m.id, &e.name, DeliveryId::new(), &caller.actor(), now)
        .await?
    {
        return Err(SvixError::not_found("Message"));
    }
    state.dispatch.dispatcher.wake();
    Ok((StatusCode::ACCEPTED, Json(Map::new())))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageEndpointOut {
    #[serde(flatten)]
    endpoint: EndpointOut,
    status: u8,
    status_text: &'static str,
    next_attempt: Option<String>,
}

/// `GET /app/{app_id}/msg/{msg_id}/endpoint`: the endpoints the message went to, with
/// where its delivery stands (the latest delivery, when it was resent).
pub async fn attempted_endpoints(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    Path((app_id, msg_id)): Path<(String, String)>,
    uri: Uri,
) -> SvixResult<Json<ListResponse<MessageEndpointOut>>> {
    require(&caller, Scope::Read)?;
    let q: AttemptQuery = query(&uri)?;
    let limit = limit(q.limit)?;
    let tenant = app(&state, &caller, &app_id).await?;
    let m = find_message(&state, &tenant, &msg_id).await?;
    let deliveries = state
        .store
        .list_deliveries(&DeliveryQuery {
            message_id: Some(m.id.to_string()),
            limit: 1000,
            ..Default::default()
        })
        .await?;
    // Newest delivery first: the first seen per endpoint is its latest.
    let mut latest = std::collections::BTreeMap::new();
    for d in deliveries {
        latest.entry(d.destination.clone()).or_insert(d);
    }
    let after = q.iterator.filter(|i| !i.starts_with('-'));
    let items: Vec<MessageEndpointOut> = latest
        .into_values()
        .filter(|d| d.attempt_count > 0 || d.status == DeliveryStatus::Delivered)
        .filter_map(|d| {
            let e = state.destinations.get(&d.destination)?;
            let (status, status_text) = delivery_status(&d);
            Some(MessageEndpointOut {
                endpoint: endpoint_out(&e),
                status,
                status_text,
                next_attempt: d.next_attempt_at.filter(|_| status == 3).map(time),
            })
        })
        .filter(|o| after.as_deref().is_none_or(|a| o.endpoint.id.as_str() > a))
        .take(limit as usize + 1)
        .collect();
    let out = page(items, limit, |o| o.endpoint.id.clone());
    Ok(Json(out))
}

/// Where a delivery stands, as Svix's message status and its text.
fn delivery_status(d: &herald_store::DeliveryRecord) -> (u8, &'static str) {
    match d.status {
        DeliveryStatus::Delivered => (0, "success"),
        DeliveryStatus::Pending | DeliveryStatus::InFlight if d.attempt_count > 0 => (3, "sending"),
        DeliveryStatus::Pending | DeliveryStatus::InFlight => (1, "pending"),
        DeliveryStatus::Dead | DeliveryStatus::FailedOver => (2, "fail"),
        DeliveryStatus::Discarded => (4, "canceled"),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointMessageOut {
    #[serde(flatten)]
    message: MessageOut,
    status: u8,
    status_text: &'static str,
    next_attempt: Option<String>,
}

#[derive(Deserialize)]
pub struct AttemptedMessagesQuery {
    limit: Option<u32>,
    iterator: Option<String>,
    with_content: Option<bool>,
}

/// `GET /app/{app_id}/endpoint/{endpoint_id}/msg`: the messages sent to the endpoint,
/// newest delivery first, with where each stands (the iterator is a delivery's id).
pub async fn attempted_messages(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    Path((app_id, endpoint_id)): Path<(String, String)>,
    uri: Uri,
) -> SvixResult<Json<ListResponse<EndpointMessageOut>>> {
    require(&caller, Scope::Read)?;
    let q: AttemptedMessagesQuery = query(&uri)?;
    let limit = limit(q.limit)?;
    let tenant = app(&state, &caller, &app_id).await?;
    let e = find_endpoint(&state, &tenant, &endpoint_id)?;
    let deliveries = state
        .store
        .list_deliveries(&DeliveryQuery {
            destination: Some(e.name.clone()),
            before: q.iterator.filter(|i| !i.starts_with('-')),
            limit: limit + 1,
            ..Default::default()
        })
        .await?;
    let with_content = q.with_content.unwrap_or(true);
    let mut items = Vec::with_capacity(deliveries.len());
    for d in deliveries {
        let Some(m) = state.store.get_message(&d.message_id).await? else {
            continue;
        };
        let (status, status_text) = delivery_status(&d);
        items.push((
            d.id.to_string(),
            EndpointMessageOut {
                message: message_out(&m, with_content),
                status,
                status_text,
                next_attempt: d.next_attempt_at.filter(|_| status == 3).map(time),
            },
        ));
    }
    let out = page(items, limit, |(id, _)| id.clone());
    Ok(Json(ListResponse {
        data: out.data.into_iter().map(|(_, m)| m).collect(),
        iterator: out.iterator,
        prev_iterator: out.prev_iterator,
        done: out.done,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_ids_name_their_delivery_and_number() {
        let d = DeliveryId::new();
        let a = DestinationAttempt {
            delivery_id: d.clone(),
            message_id: MessageId::new(),
            destination: "app_x.ep_y".into(),
            manual: false,
            attempt: herald_store::AttemptRecord {
                number: 3,
                started_at: 0,
                duration_ms: 1,
                outcome: AttemptOutcome::Delivered,
                status_code: Some(200),
                error_class: None,
                error: None,
                response_excerpt: String::new(),
                exchange: None,
            },
        };
        let id = attempt_id(&a);
        assert!(id.starts_with("atmpt_"));
        assert_eq!(parse_attempt_id(&id), Some((d, 3)));
        assert_eq!(parse_attempt_id("atmpt_nope"), None);
    }
}
