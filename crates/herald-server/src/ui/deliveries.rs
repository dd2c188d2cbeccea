//! Deliveries: search by message id, idempotency key, status and destination (newest first,
//! cursor-paged), and one delivery with its attempt timeline.

use super::session::UiUser;
use super::{PAGE_SIZE, UiError, UiResult, ago, render, when};
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use herald_core::clock::now_ms;
use herald_core::delivery::DeliveryStatus;
use herald_core::delivery::ErrorClass;
use herald_core::ids::{self, DeliveryId};
use herald_store::{DeliveryQuery, DeliveryRecord};
use minijinja::{Value, context};
use serde::{Deserialize, Serialize};

pub const STATUSES: &[&str] = &[
    "pending",
    "in_flight",
    "delivered",
    "dead",
    "failed_over",
    "discarded",
];

/// The search form; empty fields mean "any".
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Search {
    /// A message id (`msg_…`) or a delivery id (`dlv_…`, opens that delivery).
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub idempotency_key: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub destination: String,
    #[serde(default)]
    pub cursor: String,
}

fn given(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

fn row(d: &DeliveryRecord, now: i64) -> Value {
    context! {
        id => d.id.clone(),
        message_id => d.message_id.clone(),
        destination => d.destination.clone(),
        status => d.status.as_str(),
        attempts => d.attempt_count,
        last_status_code => d.last_status_code,
        last_error => d.last_error.clone(),
        created => when(d.created_at),
        updated => ago(d.updated_at, now),
        next_attempt => d.next_attempt_at.filter(|_| d.status == DeliveryStatus::Pending).map(|t| ago(t, now)),
    }
}

pub async fn page(
    State(state): State<AppState>,
    user: UiUser,
    Query(search): Query<Search>,
) -> UiResult {
    let id = given(&search.id);
    if let Some(id) = &id
        && id.starts_with(ids::DELIVERY)
    {
        return Ok(Redirect::to(&format!("/ui/deliveries/{id}")).into_response());
    }
    let mut problem = None;
    let status = match given(&search.status) {
        None => None,
        Some(s) => match DeliveryStatus::parse(&s) {
            Some(st) => Some(st),
            None => {
                problem = Some(format!("Unknown status {s:?}."));
                None
            }
        },
    };
    let q = DeliveryQuery {
        destination: given(&search.destination),
        status,
        message_id: id,
        idempotency_key: given(&search.idempotency_key),
        before: given(&search.cursor),
        limit: PAGE_SIZE,
    };
    let rows = if problem.is_some() {
        Vec::new()
    } else {
        state.store.list_deliveries(&q).await?
    };
    let now = now_ms();
    let next = (rows.len() as u32 == PAGE_SIZE)
        .then(|| rows.last().map(|d| d.id.clone()))
        .flatten()
        .map(|cursor| {
            // The same search, one page on (serde_urlencoded escapes every value).
            let next = Search {
                cursor: cursor.to_string(),
                ..search.clone()
            };
            serde_urlencoded::to_string(&next).unwrap_or_default()
        });
    let filtered = q.destination.is_some()
        || q.status.is_some()
        || q.message_id.is_some()
        || q.idempotency_key.is_some();
    Ok(render(
        &user,
        "/ui/deliveries",
        "deliveries.html",
        context! {
            search => &search,
            statuses => STATUSES,
            destinations => state.destinations.of_tenant(None).iter().map(|e| e.name.clone()).collect::<Vec<_>>(),
            rows => rows.iter().map(|d| row(d, now)).collect::<Vec<_>>(),
            next,
            paged => q.before.is_some(),
            filtered,
            problem,
        },
    ))
}

pub async fn detail(
    State(state): State<AppState>,
    user: UiUser,
    Path(id): Path<String>,
) -> UiResult {
    let not_found = || UiError::new(StatusCode::NOT_FOUND, format!("No delivery {id:?}."));
    let Some(id) = DeliveryId::parse(&id) else {
        return Err(not_found());
    };
    let d = state.store.get_delivery(&id).await?.ok_or_else(not_found)?;
    let now = now_ms();
    let message = state.store.get_message(&d.message_id).await?;
    let body: serde_json::Value = message
        .as_ref()
        .and_then(|m| serde_json::from_str(&m.body).ok())
        .unwrap_or_default();
    let text = |k: &str| body.get(k).and_then(|v| v.as_str()).map(str::to_string);
    // The structured parts as sent (pretty JSON), so a template's input can be read here.
    let pretty = |k: &str| {
        body.get(k)
            .filter(|v| v.as_object().is_some_and(|o| !o.is_empty()))
            .and_then(|v| serde_json::to_string_pretty(v).ok())
    };
    let attachments: Vec<Value> = message
        .as_ref()
        .and_then(|m| serde_json::from_str::<herald_core::message::MessageBody>(&m.body).ok())
        .map(|b| {
            b.attachments
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    context! {
                        filename => a.filename.clone(),
                        content_type => a.content_type.clone(),
                        size => a.size(),
                        inline => a.inline.unwrap_or(false),
                        url => a.url.clone(),
                        download => format!("/ui/messages/{}/attachments/{i}", d.message_id),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let attempts = state.store.list_attempts(&id).await?;
    let siblings = state
        .store
        .list_deliveries(&DeliveryQuery {
            message_id: Some(d.message_id.to_string()),
            limit: 100,
            ..Default::default()
        })
        .await?;
    Ok(render(
        &user,
        "/ui/deliveries",
        "delivery.html",
        context! {
            d => row(&d, now),
            dead_at => d.dead_at.map(when),
            fallback_of => d.fallback_of.clone(),
            is_dead => d.status == DeliveryStatus::Dead,
            event_type => message.as_ref().map(|m| m.event_type.clone()),
            idempotency_key => message.as_ref().and_then(|m| m.idempotency_key.clone()),
            title => text("title"),
            text => text("text"),
            severity => text("severity"),
            payload => pretty("payload"),
            channels => pretty("channels"),
            attachments,
            attempts => attempts.iter().map(|a| context! {
                number => a.number,
                started => when(a.started_at),
                duration_ms => a.duration_ms,
                outcome => a.outcome.as_str(),
                status_code => a.status_code,
                error_class => a.error_class.map(ErrorClass::as_str),
                error => a.error.clone(),
                response_excerpt => a.response_excerpt.clone(),
                exchange => a.exchange.as_ref().filter(|_| user.can_write()).map(|x| context! {
                    method => x.method.clone(),
                    url => x.url.clone(),
                    request_headers => x.request_headers.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>(),
                    request_body => x.request_body.clone(),
                    status => x.status,
                    response_headers => x.response_headers.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>(),
                }),
            }).collect::<Vec<_>>(),
            siblings => siblings.iter().filter(|s| s.id != d.id).map(|s| row(s, now)).collect::<Vec<_>>(),
        },
    ))
}

/// Downloads an attachment of a message, for a signed-in operator (read scope is enough).
pub async fn attachment(
    State(state): State<AppState>,
    _user: UiUser,
    Path((id, n)): Path<(String, String)>,
) -> UiResult {
    Ok(crate::attachments::download(&state, &id, &n).await?)
}
