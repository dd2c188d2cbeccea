//! JSON shapes the API returns, built from store rows.

use crate::destination_cache::DestinationCache;
use crate::waiting::Waiting;
use herald_core::clock::rfc3339;
use herald_core::delivery::{AttemptOutcome, DeliveryStatus, ErrorClass, HttpExchange};
use herald_core::scope::Scope;
use herald_store::{AttemptRecord, DeadItem, DeliveryRecord, TokenRecord};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 1000;

/// A page of items; `next_cursor` is null on the last page.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page; a full page gets a cursor naming its last item.
    pub fn new(items: Vec<T>, limit: u32, cursor_of: impl Fn(&T) -> String) -> Self {
        let next_cursor = if items.len() as u32 >= limit {
            items.last().map(cursor_of)
        } else {
            None
        };
        Page { items, next_cursor }
    }
}

/// Clamps a requested page size.
pub fn limit(requested: Option<u32>) -> u32 {
    requested.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    pub number: u32,
    pub started_at: String,
    pub duration_ms: i64,
    pub outcome: AttemptOutcome,
    pub status_code: Option<u16>,
    pub error_class: Option<ErrorClass>,
    pub error: Option<String>,
    pub response_excerpt: String,
    /// A failed attempt's last HTTP request and the answer's status and headers, secrets
    /// masked; shown to admins only (a read token sees no header value or URL path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exchange: Option<HttpExchange>,
}

impl From<AttemptRecord> for AttemptView {
    fn from(a: AttemptRecord) -> Self {
        AttemptView {
            number: a.number,
            started_at: rfc3339(a.started_at),
            duration_ms: a.duration_ms,
            outcome: a.outcome,
            status_code: a.status_code,
            error_class: a.error_class,
            error: a.error,
            response_excerpt: a.response_excerpt,
            exchange: a.exchange,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: String,
    pub message_id: String,
    pub destination: String,
    pub status: DeliveryStatus,
    pub attempt_count: u32,
    pub next_attempt_at: Option<String>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_of: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_at: Option<String>,
    /// Why a pending delivery is not being attempted now (disabled, paused, circuit open,
    /// rate limited, scheduled for later); null when it is not waiting.
    pub waiting: Option<Waiting>,
    /// Present on the single-delivery view.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<AttemptView>>,
}

impl DeliveryView {
    /// The view with `waiting` read from the destination's live state.
    pub fn new(d: DeliveryRecord, destinations: &DestinationCache, now: i64) -> Self {
        let waiting = crate::waiting::for_delivery(destinations, &d, now);
        DeliveryView {
            waiting,
            ..DeliveryView::from(d)
        }
    }
}

impl From<DeliveryRecord> for DeliveryView {
    fn from(d: DeliveryRecord) -> Self {
        let pending = d.status == DeliveryStatus::Pending;
        DeliveryView {
            id: d.id.into_string(),
            message_id: d.message_id.into_string(),
            destination: d.destination,
            status: d.status,
            attempt_count: d.attempt_count,
            next_attempt_at: d.next_attempt_at.filter(|_| pending).map(rfc3339),
            last_status_code: d.last_status_code,
            last_error: d.last_error,
            created_at: rfc3339(d.created_at),
            updated_at: rfc3339(d.updated_at),
            fallback_of: d.fallback_of,
            dead_at: d.dead_at.map(rfc3339),
            waiting: None,
            attempts: None,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadItemView {
    pub id: String,
    pub queue: String,
    pub message_id: String,
    pub event_type: String,
    pub attempt_count: u32,
    pub last_error: Option<String>,
    pub last_status_code: Option<u16>,
    pub dead_at: String,
}

impl From<DeadItem> for DeadItemView {
    fn from(d: DeadItem) -> Self {
        DeadItemView {
            id: d.id.into_string(),
            queue: d.queue,
            message_id: d.message_id.into_string(),
            event_type: d.event_type,
            attempt_count: d.attempt_count,
            last_error: d.last_error,
            last_status_code: d.last_status_code,
            dead_at: rfc3339(d.dead_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
    /// The tenant it is confined to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

impl From<TokenRecord> for TokenView {
    fn from(t: TokenRecord) -> Self {
        TokenView {
            id: t.id,
            name: t.name,
            scopes: t.scopes,
            created_at: rfc3339(t.created_at),
            last_used_at: t.last_used_at.map(rfc3339),
            revoked_at: t.revoked_at.map(rfc3339),
            tenant: t.tenant,
        }
    }
}

/// `limit` and `cursor` of list endpoints.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    /// 1–1000, default 50.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}
