//! What goes in and out of a [`Store`](crate::Store): plain rows, no behaviour.

use herald_core::breaker::BreakerConfig;
use herald_core::delivery::{AttemptOutcome, DeliveryStatus, ErrorClass, HttpExchange};
use herald_core::error_report::{AlertDecision, AlertPolicy, GroupState, GroupStatus};
use herald_core::ids::{DeliveryId, ErrorGroupId, LeaseToken, MessageId};
use herald_core::rate_limit::RateLimit;
use herald_core::scope::Scope;
use serde_json::Value;
use std::collections::BTreeMap;

/// A message to accept, with one delivery per routed destination.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: MessageId,
    pub event_type: String,
    /// JSON of [`herald_core::message::MessageBody`].
    pub body: String,
    pub created_at: i64,
    pub deliveries: Vec<NewDelivery>,
    pub idempotency: Option<IdempotencyRecord>,
    /// Who submitted it (token name), for the audit log.
    pub actor: String,
    /// The tenant it belongs to (`None`: the operator's).
    pub tenant: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: DeliveryId,
    pub destination: String,
    /// Leased to this node in the accept's own transaction (stored `in_flight`), so its
    /// first attempt needs no claim round; `None`: stored `pending` for a claim. Only a
    /// store that is [`crate::Store::single_node`] takes leases here.
    pub lease: Option<AcceptLease>,
}

/// The lease a delivery is stored with when it is leased at accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptLease {
    pub token: LeaseToken,
    pub until: i64,
}

/// The idempotency record stored with a message.
#[derive(Debug, Clone)]
pub struct IdempotencyRecord {
    /// The client's key, as sent (kept on the message, searchable).
    pub key: String,
    /// What the key is remembered under: the key within its sender's scope, so one
    /// client's keys never meet another's.
    pub scoped_key: String,
    /// SHA-256 of the canonical request, to tell a replay from a different body.
    pub request_hash: String,
    /// The 202 body to replay verbatim.
    pub response: String,
    pub expires_at: i64,
}

/// What happened to one message of an accept call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcceptOutcome {
    Accepted,
    /// Same key, same body: the stored response.
    Replayed {
        response: String,
    },
    /// Same key, different body.
    KeyConflict,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MessageRecord {
    pub id: MessageId,
    pub event_type: String,
    pub idempotency_key: Option<String>,
    pub body: String,
    pub created_at: i64,
    /// The tenant it belongs to (`None`: the operator's).
    pub tenant: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRecord {
    pub id: DeliveryId,
    pub message_id: MessageId,
    pub destination: String,
    pub status: DeliveryStatus,
    pub attempt_count: u32,
    /// Attempts made before the last replay; the retry budget counts from here.
    pub budget_base: u32,
    pub next_attempt_at: Option<i64>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub fallback_of: Option<String>,
    pub dead_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    pub number: u32,
    pub started_at: i64,
    pub duration_ms: i64,
    pub outcome: AttemptOutcome,
    pub status_code: Option<u16>,
    pub error_class: Option<ErrorClass>,
    pub error: Option<String>,
    pub response_excerpt: String,
    /// The request and answer of a failed attempt (see [`HttpExchange`]).
    pub exchange: Option<HttpExchange>,
}

/// How an operator holds a destination back (see `Store::hold_destination`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestinationHold {
    /// Nothing is attempted before this time (epoch ms); deliveries wait, pending.
    Pause { until: i64 },
    /// Nothing is attempted until it is enabled again.
    Disable { reason: String },
}

/// A destination row. The spec is sealed by the caller; the store never sees secrets.
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationRow {
    pub name: String,
    pub kind: String,
    pub sealed_spec: String,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub paused_until: Option<i64>,
    /// JSON of the breaker state (`None`: closed, never tripped).
    pub breaker: Option<String>,
    pub failing_since: Option<i64>,
    pub last_success_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Filters for listing deliveries, newest first.
#[derive(Debug, Clone, Default)]
pub struct DeliveryQuery {
    pub destination: Option<String>,
    pub status: Option<DeliveryStatus>,
    pub message_id: Option<String>,
    /// Deliveries of the message accepted with this idempotency key.
    pub idempotency_key: Option<String>,
    /// Only ids older than this one (the previous page's last id).
    pub before: Option<String>,
    pub limit: u32,
}

/// One destination the dispatcher wants work for.
#[derive(Debug, Clone)]
pub struct QueueClaim {
    pub destination: String,
    /// How many deliveries it may take now.
    pub capacity: u32,
    pub lease_ms: i64,
    /// FIFO: only the oldest unfinished delivery may be claimed, and only when none is in
    /// flight.
    pub ordered: bool,
    /// The destination's token bucket, kept in its row and spent in the claim transaction,
    /// so the limit holds for every node together.
    pub rate_limit: Option<RateLimit>,
    /// Claim only while the stored circuit breaker is closed (another node may have opened
    /// it since this node last looked).
    pub require_closed_breaker: bool,
}

/// A destination's shared state as the claim transaction saw it, so every node acts on
/// what the others decided (pauses, breakers, disablement).
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationState {
    pub name: String,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub paused_until: Option<i64>,
    /// JSON of the breaker state (`None`: closed, never tripped).
    pub breaker: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub now: i64,
    /// Unique per claim call; a finish must present it.
    pub lease_token: LeaseToken,
    pub queues: Vec<QueueClaim>,
}

/// A delivery leased to a worker, with its message.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub delivery: DeliveryRecord,
    pub message: MessageRecord,
    pub lease_token: LeaseToken,
}

#[derive(Debug, Clone, Default)]
pub struct ClaimResult {
    pub claimed: Vec<ClaimedDelivery>,
    /// The earliest `next_attempt_at` still in the future among the requested queues.
    pub next_due_at: Option<i64>,
    /// Deliveries whose lease had expired and went back to pending.
    pub recovered: u64,
    /// The shared state of every destination, as of this claim.
    pub destinations: Vec<DestinationState>,
    /// Queues that got fewer deliveries than asked because their rate limit ran out.
    pub rate_limited: Vec<String>,
}

/// The state a delivery moves to after an attempt: decided in core
/// ([`herald_core::delivery::decide_next`]), beside the state diagram.
pub use herald_core::delivery::NextState;

/// What an attempt tells the destination's circuit breaker. The store applies it to the
/// stored state inside the attempt's transaction, so failures seen by every node count.
#[derive(Debug, Clone)]
pub struct BreakerEvent {
    pub config: BreakerConfig,
    /// A retryable failure (`true`) or an answer from the receiver (`false`).
    pub failure: bool,
}

#[derive(Debug, Clone)]
pub struct FinishAttempt {
    pub delivery_id: DeliveryId,
    pub lease_token: LeaseToken,
    pub destination: String,
    /// `None` when no attempt was made (failed over while the breaker is open).
    pub attempt: Option<AttemptRecord>,
    pub next: NextState,
    pub breaker: Option<BreakerEvent>,
    /// Disable the destination if it has been failing since before this time with no
    /// success (sustained failure).
    pub disable_if_failing_since: Option<i64>,
    /// Pause every delivery of the destination until then (a 429 with Retry-After).
    pub pause_destination_until: Option<i64>,
    /// Disable the destination for this reason (410, webhook gone).
    pub disable_destination: Option<String>,
    pub now: i64,
}

/// What [`Store::finish_attempt`](crate::Store::finish_attempt) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FinishOutcome {
    /// `false` when the lease was lost: nothing was written.
    pub recorded: bool,
    /// The destination was disabled by this transition, for this reason.
    pub disabled: Option<String>,
    /// The stored breaker state after this attempt (JSON), when a breaker is configured.
    pub breaker: Option<String>,
    /// The audit action of the breaker's transition, if it changed state.
    pub breaker_transition: Option<String>,
}

/// Attempts to a destination over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttemptStats {
    pub total: u64,
    pub delivered: u64,
}

/// A destination's most recent failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct LastFailure {
    pub at: i64,
    pub status_code: Option<u16>,
    pub error: Option<String>,
}

/// A dead delivery as the DLQ shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadItem {
    pub id: DeliveryId,
    pub queue: String,
    pub message_id: MessageId,
    pub event_type: String,
    pub attempt_count: u32,
    pub last_error: Option<String>,
    pub last_status_code: Option<u16>,
    pub dead_at: i64,
}

#[derive(Debug, Clone, Default)]
pub struct DlqQuery {
    pub queue: Option<String>,
    pub before: Option<String>,
    pub limit: u32,
}

/// Which dead deliveries a bulk replay takes.
#[derive(Debug, Clone, Default)]
pub struct ReplayFilter {
    pub event_type: Option<String>,
    /// Dead since (epoch ms).
    pub since: Option<i64>,
}

/// The result of an operation on one DLQ item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DlqChange {
    Done,
    NotFound,
    /// The delivery exists in this queue but is not dead.
    NotDead,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub hash: String,
    pub scopes: Vec<Scope>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// The one tenant it may see and act in (`None`: the operator's token, every tenant).
    pub tenant: Option<String>,
    /// When it stops opening Herald (epoch ms; `None`: never). Portal access tokens.
    pub expires_at: Option<i64>,
}

/// An audit entry to append; the store assigns `seq` and the hashes.
#[derive(Debug, Clone)]
pub struct NewAudit {
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub resource: String,
    pub detail: Value,
}

/// Counts per status for one destination.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueCounts {
    pub pending: u64,
    pub in_flight: u64,
    pub dead: u64,
}

/// A group of error reports.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorGroupRecord {
    pub id: String,
    pub key: String,
    pub service: String,
    pub fingerprint: String,
    pub title: String,
    pub culprit: Option<String>,
    pub level: String,
    pub environment: Option<String>,
    /// The counters that decide alerts (status, counts, windows, last alert).
    pub state: GroupState,
    /// JSON of the latest report.
    pub last_event: String,
    pub last_message_id: Option<String>,
    pub resolved_at: Option<i64>,
    pub updated_at: i64,
}

/// One error report to fold into its group.
#[derive(Debug, Clone)]
pub struct ErrorOccurrence {
    /// The id the group gets if this report creates it.
    pub new_id: ErrorGroupId,
    pub key: String,
    pub service: String,
    pub fingerprint: String,
    pub title: String,
    pub culprit: Option<String>,
    pub level: String,
    pub environment: Option<String>,
    /// JSON of the report.
    pub event: String,
    pub policy: AlertPolicy,
    pub now: i64,
    pub actor: String,
}

/// Builds the alert message for a group (in its new state) inside the store's transaction.
pub type AlertBuilder = Box<
    dyn FnOnce(&ErrorGroupRecord, &AlertDecision) -> std::result::Result<NewMessage, String> + Send,
>;

/// What [`Store::record_error`](crate::Store::record_error) did.
#[derive(Debug, Clone)]
pub struct ErrorOutcome {
    pub group: ErrorGroupRecord,
    pub new_group: bool,
    /// The alert sent, if any, and its message id.
    pub alert: Option<(AlertDecision, MessageId)>,
}

/// Filters for listing error groups, newest group first.
#[derive(Debug, Clone, Default)]
pub struct ErrorGroupQuery {
    pub status: Option<GroupStatus>,
    pub service: Option<String>,
    pub before: Option<String>,
    pub limit: u32,
}

/// A dashboard session, found by the SHA-256 of the id its cookie carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id_hash: String,
    /// What it is bound to: the id of the API token it was opened with, or `env:<hmac>`
    /// of the fixed admin token keyed with the master key (`None`: a session from before
    /// sessions were bound, void).
    pub token_id: Option<String>,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub csrf: String,
    pub created_at: i64,
    pub expires_at: i64,
    /// A customer portal session: the tenant it is confined to (`None`: a dashboard
    /// session, the operator's).
    pub tenant: Option<String>,
}

/// A tenant (Svix: an application): one customer of the platform running Herald. Its
/// destinations are keyed `<id>.<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRecord {
    /// `app_<32 hex>`.
    pub id: String,
    /// The platform's own id for it, unique.
    pub uid: Option<String>,
    pub name: String,
    pub metadata: BTreeMap<String, String>,
    /// Messages per second accepted for it, over all its destinations.
    pub rate_limit: Option<u32>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What [`Store::put_tenant`](crate::Store::put_tenant) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantPut {
    Created,
    Updated,
    /// Another tenant has this `uid`; nothing was written.
    UidTaken,
}

/// One event type of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTypeRecord {
    pub name: String,
    pub description: String,
    /// JSON object: schema version (`"1"`) to a JSON Schema.
    pub schemas: Option<String>,
    pub archived: bool,
    pub deprecated: bool,
    pub feature_flag: Option<String>,
    pub group_name: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Filters for listing messages, newest first.
#[derive(Debug, Clone, Default)]
pub struct MessageQuery {
    /// Only this tenant's (`None`: the operator's own messages).
    pub tenant: Option<String>,
    /// Only these event types (any of them; empty: all).
    pub event_types: Vec<String>,
    /// Only the message accepted with this idempotency key (Svix: `eventId`).
    pub idempotency_key: Option<String>,
    /// Only ids older than this one (the previous page's last id).
    pub before_id: Option<String>,
    /// Created before / after (epoch ms).
    pub created_before: Option<i64>,
    pub created_after: Option<i64>,
    pub limit: u32,
}

/// An attempt with the delivery and message it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationAttempt {
    pub delivery_id: DeliveryId,
    pub message_id: MessageId,
    pub destination: String,
    /// Made by hand: the delivery was a resend, or this attempt came after a replay.
    pub manual: bool,
    pub attempt: AttemptRecord,
}

/// Where a page of a destination's attempts starts: after this attempt (newest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptCursor {
    pub started_at: i64,
    pub delivery_id: String,
    pub number: u32,
}
