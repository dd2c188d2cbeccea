//! The real store, seen through a wrapper that can make `finish_attempts` fail or wait,
//! counts its batches, and can pretend to be a shared (several-node) store.

use herald_core::audit::AuditEntry;
use herald_core::ids::{DeliveryId, ErrorGroupId, LeaseToken, MessageId};
use herald_store::*;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

pub(super) struct Flaky {
    inner: Arc<dyn Store>,
    /// `finish_attempts` calls still to fail (`StoreError::Unavailable`).
    pub fail: AtomicU32,
    /// The sizes of the `finish_attempts` batches asked for, failed ones included.
    pub batches: Mutex<Vec<usize>>,
    /// When set, each `finish_attempts` call first waits for a permit.
    pub gate: Option<tokio::sync::Semaphore>,
    /// Answer `single_node() == false`.
    pub shared: bool,
}

impl Flaky {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Flaky {
            inner,
            fail: AtomicU32::new(0),
            batches: Mutex::new(Vec::new()),
            gate: None,
            shared: false,
        }
    }

    pub fn batches(&self) -> Vec<usize> {
        self.batches.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl Store for Flaky {
    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }
    fn health(&self) -> Arc<health::Health> {
        self.inner.health()
    }
    async fn accept_messages(&self, batch: Vec<NewMessage>) -> Result<Vec<AcceptOutcome>> {
        self.inner.accept_messages(batch).await
    }
    async fn get_message(&self, id: &MessageId) -> Result<Option<MessageRecord>> {
        self.inner.get_message(id).await
    }
    async fn get_delivery(&self, id: &DeliveryId) -> Result<Option<DeliveryRecord>> {
        self.inner.get_delivery(id).await
    }
    async fn list_deliveries(&self, q: &DeliveryQuery) -> Result<Vec<DeliveryRecord>> {
        self.inner.list_deliveries(q).await
    }
    async fn list_attempts(&self, delivery_id: &DeliveryId) -> Result<Vec<AttemptRecord>> {
        self.inner.list_attempts(delivery_id).await
    }
    async fn queue_counts(&self, destination: &str) -> Result<QueueCounts> {
        self.inner.queue_counts(destination).await
    }
    async fn put_destination(&self, row: DestinationRow, actor: &str) -> Result<bool> {
        self.inner.put_destination(row, actor).await
    }
    async fn get_destination(&self, name: &str) -> Result<Option<DestinationRow>> {
        self.inner.get_destination(name).await
    }
    async fn list_destinations(&self) -> Result<Vec<DestinationRow>> {
        self.inner.list_destinations().await
    }
    async fn delete_destination(&self, name: &str, actor: &str, now: i64) -> Result<bool> {
        self.inner.delete_destination(name, actor, now).await
    }
    async fn enable_destination(&self, name: &str, actor: &str, now: i64) -> Result<bool> {
        self.inner.enable_destination(name, actor, now).await
    }
    async fn start_probe(&self, name: &str, deadline: i64, now: i64) -> Result<Option<String>> {
        self.inner.start_probe(name, deadline, now).await
    }
    async fn attempt_stats(&self, destination: &str, since: i64) -> Result<AttemptStats> {
        self.inner.attempt_stats(destination, since).await
    }
    async fn last_failure(&self, destination: &str, since: i64) -> Result<Option<LastFailure>> {
        self.inner.last_failure(destination, since).await
    }
    async fn count_messages_since(&self, since: i64) -> Result<u64> {
        self.inner.count_messages_since(since).await
    }
    async fn claim(&self, req: ClaimRequest) -> Result<ClaimResult> {
        self.inner.claim(req).await
    }
    async fn finish_attempt(&self, f: FinishAttempt) -> Result<FinishOutcome> {
        let mut v = self.finish_attempts(vec![f]).await?;
        Ok(v.remove(0))
    }
    async fn finish_attempts(&self, batch: Vec<FinishAttempt>) -> Result<Vec<FinishOutcome>> {
        self.batches.lock().unwrap().push(batch.len());
        if let Some(gate) = &self.gate {
            gate.acquire().await.expect("gate open").forget();
        }
        let failing = self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(StoreError::Unavailable("injected by the test".into()));
        }
        self.inner.finish_attempts(batch).await
    }
    async fn release(&self, leases: Vec<(DeliveryId, LeaseToken)>, now: i64) -> Result<()> {
        self.inner.release(leases, now).await
    }
    async fn list_dead(&self, q: &DlqQuery) -> Result<Vec<DeadItem>> {
        self.inner.list_dead(q).await
    }
    async fn replay_dead(&self, queue: &str, id: &str, actor: &str, now: i64) -> Result<DlqChange> {
        self.inner.replay_dead(queue, id, actor, now).await
    }
    async fn replay_all_dead(
        &self,
        queue: &str,
        filter: &ReplayFilter,
        actor: &str,
        now: i64,
    ) -> Result<u64> {
        self.inner.replay_all_dead(queue, filter, actor, now).await
    }
    async fn discard_dead(
        &self,
        queue: &str,
        id: &str,
        actor: &str,
        now: i64,
    ) -> Result<DlqChange> {
        self.inner.discard_dead(queue, id, actor, now).await
    }
    async fn discard_all_dead(&self, queue: &str, actor: &str, now: i64) -> Result<u64> {
        self.inner.discard_all_dead(queue, actor, now).await
    }
    async fn record_error(
        &self,
        occ: ErrorOccurrence,
        alert: AlertBuilder,
    ) -> Result<ErrorOutcome> {
        self.inner.record_error(occ, alert).await
    }
    async fn hold_destination(
        &self,
        name: &str,
        hold: DestinationHold,
        actor: &str,
        now: i64,
    ) -> Result<bool> {
        self.inner.hold_destination(name, hold, actor, now).await
    }
    async fn get_error_group(&self, id: &ErrorGroupId) -> Result<Option<ErrorGroupRecord>> {
        self.inner.get_error_group(id).await
    }
    async fn list_error_groups(&self, q: &ErrorGroupQuery) -> Result<Vec<ErrorGroupRecord>> {
        self.inner.list_error_groups(q).await
    }
    async fn set_error_group_status(
        &self,
        id: &ErrorGroupId,
        status: herald_core::error_report::GroupStatus,
        actor: &str,
        now: i64,
    ) -> Result<Option<ErrorGroupRecord>> {
        self.inner
            .set_error_group_status(id, status, actor, now)
            .await
    }
    async fn create_token(&self, t: TokenRecord, actor: &str) -> Result<()> {
        self.inner.create_token(t, actor).await
    }
    async fn get_token(&self, id: &str) -> Result<Option<TokenRecord>> {
        self.inner.get_token(id).await
    }
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        self.inner.list_tokens().await
    }
    async fn revoke_token(&self, id: &str, actor: &str, now: i64) -> Result<bool> {
        self.inner.revoke_token(id, actor, now).await
    }
    async fn touch_tokens(&self, used: Vec<(String, i64)>) -> Result<()> {
        self.inner.touch_tokens(used).await
    }
    async fn append_audit(&self, entries: Vec<NewAudit>) -> Result<()> {
        self.inner.append_audit(entries).await
    }
    async fn append_checkpoint(&self, sign: CheckpointFn, now: i64) -> Result<Option<i64>> {
        self.inner.append_checkpoint(sign, now).await
    }
    async fn reseal(
        &self,
        destinations: Vec<(String, String)>,
        meta: Vec<(String, String)>,
        actor: &str,
        now: i64,
    ) -> Result<()> {
        self.inner.reseal(destinations, meta, actor, now).await
    }
    async fn list_audit(&self, after: i64, limit: u32) -> Result<Vec<AuditEntry>> {
        self.inner.list_audit(after, limit).await
    }
    async fn list_recent_audit(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditEntry>> {
        self.inner.list_recent_audit(before, limit).await
    }
    async fn create_session(&self, s: SessionRecord) -> Result<()> {
        self.inner.create_session(s).await
    }
    async fn get_session(&self, id_hash: &str, now: i64) -> Result<Option<SessionRecord>> {
        self.inner.get_session(id_hash, now).await
    }
    async fn delete_session(&self, id_hash: &str) -> Result<()> {
        self.inner.delete_session(id_hash).await
    }
    async fn get_meta(&self, key: &str) -> Result<Option<String>> {
        self.inner.get_meta(key).await
    }
    async fn init_meta(&self, key: &str, value: &str) -> Result<String> {
        self.inner.init_meta(key, value).await
    }
    async fn prune(&self, now: i64, older_than: i64) -> Result<u64> {
        self.inner.prune(now, older_than).await
    }
    async fn close(&self) {
        self.inner.close().await
    }
    fn remote_signals(&self) -> Option<RemoteSignals> {
        self.inner.remote_signals()
    }
    fn single_node(&self) -> bool {
        !self.shared && self.inner.single_node()
    }
    async fn put_tenant(&self, t: TenantRecord, actor: &str) -> Result<TenantPut> {
        self.inner.put_tenant(t, actor).await
    }
    async fn get_tenant(&self, id_or_uid: &str) -> Result<Option<TenantRecord>> {
        self.inner.get_tenant(id_or_uid).await
    }
    async fn list_tenants(&self, after: Option<&str>, limit: u32) -> Result<Vec<TenantRecord>> {
        self.inner.list_tenants(after, limit).await
    }
    async fn delete_tenant(&self, id: &str, actor: &str, now: i64) -> Result<bool> {
        self.inner.delete_tenant(id, actor, now).await
    }
    async fn put_event_type(&self, e: EventTypeRecord, actor: &str) -> Result<bool> {
        self.inner.put_event_type(e, actor).await
    }
    async fn get_event_type(&self, name: &str) -> Result<Option<EventTypeRecord>> {
        self.inner.get_event_type(name).await
    }
    async fn list_event_types(
        &self,
        after: Option<&str>,
        limit: u32,
        include_archived: bool,
    ) -> Result<Vec<EventTypeRecord>> {
        self.inner
            .list_event_types(after, limit, include_archived)
            .await
    }
    async fn delete_event_type(
        &self,
        name: &str,
        expunge: bool,
        actor: &str,
        now: i64,
    ) -> Result<bool> {
        self.inner
            .delete_event_type(name, expunge, actor, now)
            .await
    }
    async fn list_messages(&self, q: &MessageQuery) -> Result<Vec<MessageRecord>> {
        self.inner.list_messages(q).await
    }
    async fn list_destination_attempts(
        &self,
        destination: &str,
        after: Option<AttemptCursor>,
        limit: u32,
    ) -> Result<Vec<DestinationAttempt>> {
        self.inner
            .list_destination_attempts(destination, after, limit)
            .await
    }
    async fn list_message_attempts(
        &self,
        message: &MessageId,
        limit: u32,
    ) -> Result<Vec<DestinationAttempt>> {
        self.inner.list_message_attempts(message, limit).await
    }
    async fn resend(
        &self,
        message: &MessageId,
        destination: &str,
        delivery: DeliveryId,
        actor: &str,
        now: i64,
    ) -> Result<bool> {
        self.inner
            .resend(message, destination, delivery, actor, now)
            .await
    }
}
