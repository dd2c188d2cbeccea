//! # herald-store
//!
//! Where Herald keeps everything: the [`Store`] trait, with one method per state
//! transition, and its implementation [`sql::SqlStore`] on embedded SQLite (one node) or a
//! shared Postgres (a cluster) — one schema ([`sql`]'s migrations), one set of SQL, a small
//! [`sql::Dialect`] for the few differences (locks, `SKIP LOCKED`, `NOTIFY`).
//!
//! Every method that changes state runs as one transaction that also appends its audit
//! entries, so the delivery state and the audit chain can never disagree. Each node funnels
//! its writes through one writer task that commits many callers' work together (group
//! commit): each caller's future resolves only after the shared commit is durable.
//! [`copy`] moves a whole store between databases (`herald migrate-store`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), herald_store::StoreError> {
//! use herald_store::{Store, sql::SqlStore};
//! let store = SqlStore::open(std::path::Path::new("herald-data/herald.db"), Default::default()).await?;
//! store.ping().await?;
//! # Ok(()) }
//! ```

pub mod copy;
pub mod doctor;
pub mod health;
pub mod location;
pub mod model;
pub mod sql;

use async_trait::async_trait;
use herald_core::audit::AuditEntry;
use herald_core::ids::{DeliveryId, ErrorGroupId, LeaseToken, MessageId};
pub use location::Location;
pub use model::*;

/// A store error. Storage faults (the database unreachable, the disk full or failing, the
/// file damaged) have variants of their own, so callers can answer 503/507 and retry; `Db`
/// is what is left, which is a bug.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(sqlx::Error),
    /// The database cannot be reached or the connection broke; nothing was committed.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The connection broke during `COMMIT`: the work may or may not be durable.
    #[error("the commit's outcome is unknown: {0}")]
    CommitUnknown(String),
    /// No space left for the database; nothing was committed.
    #[error("the disk is full: {0}")]
    Full(String),
    /// The disk failed a read or write (e.g. fsync); nothing is known to be committed.
    #[error("disk I/O error: {0}")]
    Io(String),
    /// The database file is damaged.
    #[error("the database is damaged: {0}")]
    Damaged(String),
    #[error("the store is closed")]
    Closed,
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("migration failed: {0}")]
    Migration(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match health::classify(&e) {
            Some(fault) => StoreError::from_fault(fault, e.to_string()),
            None => StoreError::Db(e),
        }
    }
}

impl StoreError {
    pub fn from_fault(fault: health::Fault, detail: String) -> Self {
        match fault {
            health::Fault::Unavailable => StoreError::Unavailable(detail),
            health::Fault::Full => StoreError::Full(detail),
            health::Fault::Io => StoreError::Io(detail),
            health::Fault::Damaged => StoreError::Damaged(detail),
        }
    }

    /// What went wrong, without the variant's own prefix (for wrapping it again).
    pub fn detail(&self) -> String {
        match self {
            StoreError::Unavailable(d)
            | StoreError::CommitUnknown(d)
            | StoreError::Full(d)
            | StoreError::Io(d)
            | StoreError::Damaged(d) => d.clone(),
            other => other.to_string(),
        }
    }

    /// The storage fault behind this error, if it is one (not a bug, not bad input).
    pub fn fault(&self) -> Option<health::Fault> {
        match self {
            StoreError::Unavailable(_) | StoreError::CommitUnknown(_) | StoreError::Closed => {
                Some(health::Fault::Unavailable)
            }
            StoreError::Full(_) => Some(health::Fault::Full),
            StoreError::Io(_) => Some(health::Fault::Io),
            StoreError::Damaged(_) | StoreError::Corrupt(_) => Some(health::Fault::Damaged),
            StoreError::Db(_) | StoreError::Migration(_) => None,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Signals raised by other nodes of a cluster.
#[derive(Debug, Clone, Default)]
pub struct RemoteSignals {
    /// Another node created due deliveries (accepted, replayed, failed over, released).
    pub work: std::sync::Arc<tokio::sync::Notify>,
    /// Another node created, changed, deleted, enabled or disabled a destination, or
    /// revoked a token.
    pub config: std::sync::Arc<tokio::sync::Notify>,
}

/// Walks a store's whole audit chain, page by page, through `v`.
pub async fn verify_audit(
    store: &dyn Store,
    v: herald_core::audit::ChainVerifier,
) -> Result<herald_core::audit::Verification> {
    verify_pages(v, |after, limit| store.list_audit(after, limit)).await
}

/// Walks an audit chain read by `page(after, limit)` through `v`. A page that cannot be
/// read for another reason than a passing fault (a damaged row or page, an undecodable
/// value) is read again entry by entry, so the answer names the first entry that cannot
/// be read — a damaged chain is a broken chain, never an error.
pub async fn verify_pages<F, Fut>(
    mut v: herald_core::audit::ChainVerifier,
    mut page: F,
) -> Result<herald_core::audit::Verification>
where
    F: FnMut(i64, u32) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<AuditEntry>>>,
{
    use health::Fault;
    const PAGE: u32 = 1000;
    let mut after = 0;
    // Entries still to read one at a time after a page that could not be read.
    let mut singly = 0;
    loop {
        let limit = if singly > 0 { 1 } else { PAGE };
        let entries = match page(after, limit).await {
            Ok(entries) => entries,
            Err(e)
                if matches!(
                    e.fault(),
                    Some(Fault::Unavailable | Fault::Full | Fault::Io)
                ) =>
            {
                return Err(e);
            }
            Err(e) if singly > 0 => {
                let seq = after + 1;
                return Ok(v.broken(seq, format!("entry {seq} cannot be read: {}", e.detail())));
            }
            Err(_) => {
                singly = PAGE;
                continue;
            }
        };
        singly = singly.saturating_sub(1);
        let Some(last) = entries.last() else {
            return Ok(v.finish());
        };
        after = last.seq;
        for e in &entries {
            if let Err(reason) = v.push(e) {
                return Ok(v.broken(e.seq, reason));
            }
        }
    }
}

/// Builds a checkpoint's detail from the `(seq, hash)` it attests.
pub type CheckpointFn = Box<dyn FnOnce(i64, &str) -> serde_json::Value + Send>;

/// Herald's storage. Implementations must make each method atomic and durable before it
/// returns.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Checks that the store can serve: it answers reads and its writer can commit (a
    /// commit succeeded lately, or a probe commit does now). Readiness is this.
    async fn ping(&self) -> Result<()>;

    /// The writer's view of whether commits succeed (for readiness and the dispatcher).
    fn health(&self) -> std::sync::Arc<health::Health>;

    // ----- messages -------------------------------------------------------------------

    /// Accepts messages with their deliveries, idempotency records and audit entries, all
    /// in one durable commit. Outcomes are in input order.
    async fn accept_messages(&self, batch: Vec<NewMessage>) -> Result<Vec<AcceptOutcome>>;
    async fn get_message(&self, id: &MessageId) -> Result<Option<MessageRecord>>;
    async fn get_delivery(&self, id: &DeliveryId) -> Result<Option<DeliveryRecord>>;
    async fn list_deliveries(&self, q: &DeliveryQuery) -> Result<Vec<DeliveryRecord>>;
    async fn list_attempts(&self, delivery_id: &DeliveryId) -> Result<Vec<AttemptRecord>>;
    async fn queue_counts(&self, destination: &str) -> Result<QueueCounts>;

    // ----- destinations ---------------------------------------------------------------

    /// Creates or replaces a destination; `true` when it was created.
    async fn put_destination(&self, row: DestinationRow, actor: &str) -> Result<bool>;
    async fn get_destination(&self, name: &str) -> Result<Option<DestinationRow>>;
    async fn list_destinations(&self) -> Result<Vec<DestinationRow>>;
    /// Deletes a destination; its pending deliveries are discarded. `false` if unknown.
    async fn delete_destination(&self, name: &str, actor: &str, now: i64) -> Result<bool>;
    /// Re-enables a destination: clears its disablement, pause, breaker and failure streak.
    async fn enable_destination(&self, name: &str, actor: &str, now: i64) -> Result<bool>;
    /// Holds a destination back by hand (an operator): paused until a time, or disabled
    /// with a reason; audited (`destination.paused`, `destination.disabled`). `false` when
    /// there is no such destination. [`enable_destination`](Store::enable_destination) undoes
    /// either.
    async fn hold_destination(
        &self,
        name: &str,
        hold: DestinationHold,
        actor: &str,
        now: i64,
    ) -> Result<bool>;
    /// Lets one half-open probe through an open breaker, for every node together: moves
    /// the stored breaker to half-open (probe running until `deadline`) and audits it, if
    /// it still permits a probe at `now`. Returns the new state (JSON), or `None` when the
    /// breaker no longer permits one (another node is probing, or it closed).
    async fn start_probe(&self, name: &str, deadline: i64, now: i64) -> Result<Option<String>>;
    /// Attempts to a destination started since `since`.
    async fn attempt_stats(&self, destination: &str, since: i64) -> Result<AttemptStats>;
    /// The latest attempt to a destination since `since` that did not deliver.
    async fn last_failure(&self, destination: &str, since: i64) -> Result<Option<LastFailure>>;
    /// Messages accepted since `since`.
    async fn count_messages_since(&self, since: i64) -> Result<u64>;

    // ----- dispatching ----------------------------------------------------------------

    /// Leases due deliveries of the requested queues (and first returns expired leases to
    /// pending).
    async fn claim(&self, req: ClaimRequest) -> Result<ClaimResult>;
    /// Records an attempt (if one was made) and moves the delivery on, with the destination's
    /// breaker state, pause and disablement. Nothing is written when the lease was lost (a
    /// newer claim owns the delivery).
    async fn finish_attempt(&self, f: FinishAttempt) -> Result<FinishOutcome>;
    /// [`finish_attempt`](Store::finish_attempt) for many deliveries in one transaction
    /// (outcomes in input order); an error fails them all, to be retried.
    async fn finish_attempts(&self, batch: Vec<FinishAttempt>) -> Result<Vec<FinishOutcome>>;
    /// Gives leased deliveries back (graceful shutdown) without counting an attempt.
    async fn release(&self, leases: Vec<(DeliveryId, LeaseToken)>, now: i64) -> Result<()>;

    // ----- dead-letter queue ----------------------------------------------------------

    async fn list_dead(&self, q: &DlqQuery) -> Result<Vec<DeadItem>>;
    async fn replay_dead(&self, queue: &str, id: &str, actor: &str, now: i64) -> Result<DlqChange>;
    async fn replay_all_dead(
        &self,
        queue: &str,
        filter: &ReplayFilter,
        actor: &str,
        now: i64,
    ) -> Result<u64>;
    async fn discard_dead(&self, queue: &str, id: &str, actor: &str, now: i64)
    -> Result<DlqChange>;
    /// Discards every dead delivery of a queue; returns how many.
    async fn discard_all_dead(&self, queue: &str, actor: &str, now: i64) -> Result<u64>;

    // ----- error groups ---------------------------------------------------------------

    /// Folds a report into its group (creating it) and, when the group alerts, accepts the
    /// message `alert` builds — all in one transaction, so concurrent reports of a group
    /// alert at most once.
    async fn record_error(&self, occ: ErrorOccurrence, alert: AlertBuilder)
    -> Result<ErrorOutcome>;
    async fn get_error_group(&self, id: &ErrorGroupId) -> Result<Option<ErrorGroupRecord>>;
    async fn list_error_groups(&self, q: &ErrorGroupQuery) -> Result<Vec<ErrorGroupRecord>>;
    /// Resolves or reopens a group (audited); `None` if unknown.
    async fn set_error_group_status(
        &self,
        id: &ErrorGroupId,
        status: herald_core::error_report::GroupStatus,
        actor: &str,
        now: i64,
    ) -> Result<Option<ErrorGroupRecord>>;

    // ----- tenants and the event-type catalog -----------------------------------------

    /// Creates or replaces a tenant (audited `tenant.created` / `tenant.updated`).
    async fn put_tenant(&self, t: TenantRecord, actor: &str) -> Result<TenantPut>;
    /// A tenant by its id or its uid.
    async fn get_tenant(&self, id_or_uid: &str) -> Result<Option<TenantRecord>>;
    /// Tenants by id, oldest first, after `after`.
    async fn list_tenants(&self, after: Option<&str>, limit: u32) -> Result<Vec<TenantRecord>>;
    /// Deletes a tenant with its destinations (their unfinished deliveries discarded);
    /// its messages stay until pruned. `false` if unknown.
    async fn delete_tenant(&self, id: &str, actor: &str, now: i64) -> Result<bool>;
    /// Creates or replaces an event type; `true` when it was created.
    async fn put_event_type(&self, e: EventTypeRecord, actor: &str) -> Result<bool>;
    async fn get_event_type(&self, name: &str) -> Result<Option<EventTypeRecord>>;
    /// Event types by name after `after`; archived ones only when asked.
    async fn list_event_types(
        &self,
        after: Option<&str>,
        limit: u32,
        include_archived: bool,
    ) -> Result<Vec<EventTypeRecord>>;
    /// Archives an event type, or with `expunge` deletes it. `false` if unknown.
    async fn delete_event_type(
        &self,
        name: &str,
        expunge: bool,
        actor: &str,
        now: i64,
    ) -> Result<bool>;
    /// Messages, newest first.
    async fn list_messages(&self, q: &MessageQuery) -> Result<Vec<MessageRecord>>;
    /// A destination's attempts, newest first, after `after`.
    async fn list_destination_attempts(
        &self,
        destination: &str,
        after: Option<AttemptCursor>,
        limit: u32,
    ) -> Result<Vec<DestinationAttempt>>;
    /// A message's attempts to every destination, newest first.
    async fn list_message_attempts(
        &self,
        message: &MessageId,
        limit: u32,
    ) -> Result<Vec<DestinationAttempt>>;
    /// Sends a stored message to a destination again: a new pending delivery `delivery`
    /// (audited `message.resent`). `false` when the message is unknown.
    async fn resend(
        &self,
        message: &MessageId,
        destination: &str,
        delivery: DeliveryId,
        actor: &str,
        now: i64,
    ) -> Result<bool>;

    // ----- tokens ---------------------------------------------------------------------

    async fn create_token(&self, t: TokenRecord, actor: &str) -> Result<()>;
    async fn get_token(&self, id: &str) -> Result<Option<TokenRecord>>;
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>>;
    async fn revoke_token(&self, id: &str, actor: &str, now: i64) -> Result<bool>;
    async fn touch_tokens(&self, used: Vec<(String, i64)>) -> Result<()>;

    // ----- audit, metadata, upkeep ----------------------------------------------------

    async fn append_audit(&self, entries: Vec<NewAudit>) -> Result<()>;
    /// Appends a checkpoint attesting the current head: `sign(seq, hash)` gives its detail.
    /// Does nothing (returns `None`) when the head is already a checkpoint or the log is empty.
    async fn append_checkpoint(&self, sign: CheckpointFn, now: i64) -> Result<Option<i64>>;
    /// Replaces every destination's sealed settings and the given metadata in one
    /// transaction (master-key rotation).
    async fn reseal(
        &self,
        destinations: Vec<(String, String)>,
        meta: Vec<(String, String)>,
        actor: &str,
        now: i64,
    ) -> Result<()>;
    /// Entries with `seq > after`, oldest first.
    async fn list_audit(&self, after: i64, limit: u32) -> Result<Vec<AuditEntry>>;
    /// Entries with `seq < before` (all when `None`), newest first.
    async fn list_recent_audit(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditEntry>>;
    // ----- dashboard sessions ---------------------------------------------------------

    /// Stores a dashboard session (and drops expired ones).
    async fn create_session(&self, s: SessionRecord) -> Result<()>;
    /// A live session by the hash of its id.
    async fn get_session(&self, id_hash: &str, now: i64) -> Result<Option<SessionRecord>>;
    async fn delete_session(&self, id_hash: &str) -> Result<()>;

    async fn get_meta(&self, key: &str) -> Result<Option<String>>;
    /// Sets a value only if the key is absent; returns the value now stored.
    async fn init_meta(&self, key: &str, value: &str) -> Result<String>;
    /// Removes expired idempotency keys and terminal messages older than `older_than`.
    async fn prune(&self, now: i64, older_than: i64) -> Result<u64>;
    /// Finishes queued writes and closes.
    async fn close(&self);

    /// What other nodes announce (Postgres `LISTEN`): new due work, so the dispatcher
    /// claims at once instead of at its next poll, and changed destinations or revoked tokens,
    /// so every node re-reads them. `None`: a single-node store.
    fn remote_signals(&self) -> Option<RemoteSignals> {
        None
    }

    /// Whether this node is the only one working the store (embedded SQLite): its own view
    /// of breakers, pauses and capacity is then the whole truth, and fresh deliveries may be
    /// leased to it at accept ([`NewDelivery::lease`]). A shared store says `false` and
    /// stores every new delivery `pending`, for whichever node claims it.
    fn single_node(&self) -> bool {
        false
    }
}
