//! [`Store`] for [`SqlStore`]: each method is implemented in the file of its topic.

use super::*;

#[async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> Result<()> {
        meta::ping(self).await
    }

    fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    async fn accept_messages(&self, batch: Vec<NewMessage>) -> Result<Vec<AcceptOutcome>> {
        accept::accept_messages(self, batch).await
    }

    async fn get_message(&self, id: &MessageId) -> Result<Option<MessageRecord>> {
        accept::get_message(self, id.as_str()).await
    }

    async fn get_delivery(&self, id: &DeliveryId) -> Result<Option<DeliveryRecord>> {
        deliveries::get_delivery(self, id.as_str()).await
    }

    async fn list_deliveries(&self, q: &DeliveryQuery) -> Result<Vec<DeliveryRecord>> {
        deliveries::list_deliveries(self, q).await
    }

    async fn list_attempts(&self, delivery_id: &DeliveryId) -> Result<Vec<AttemptRecord>> {
        deliveries::list_attempts(self, delivery_id.as_str()).await
    }

    async fn queue_counts(&self, destination: &str) -> Result<QueueCounts> {
        deliveries::queue_counts(self, destination).await
    }

    async fn put_destination(&self, row: DestinationRow, actor: &str) -> Result<bool> {
        destinations::put_destination(self, row, actor).await
    }

    async fn get_destination(&self, name: &str) -> Result<Option<DestinationRow>> {
        destinations::get_destination(self, name).await
    }

    async fn list_destinations(&self) -> Result<Vec<DestinationRow>> {
        destinations::list_destinations(self).await
    }

    async fn delete_destination(&self, name: &str, actor: &str, now: i64) -> Result<bool> {
        destinations::delete_destination(self, name, actor, now).await
    }

    async fn enable_destination(&self, name: &str, actor: &str, now: i64) -> Result<bool> {
        destinations::enable_destination(self, name, actor, now).await
    }

    async fn hold_destination(
        &self,
        name: &str,
        hold: DestinationHold,
        actor: &str,
        now: i64,
    ) -> Result<bool> {
        destinations::hold_destination(self, name, hold, actor, now).await
    }

    async fn start_probe(&self, name: &str, deadline: i64, now: i64) -> Result<Option<String>> {
        destinations::start_probe(self, name, deadline, now).await
    }

    async fn attempt_stats(&self, destination: &str, since: i64) -> Result<AttemptStats> {
        deliveries::attempt_stats(self, destination, since).await
    }

    async fn last_failure(&self, destination: &str, since: i64) -> Result<Option<LastFailure>> {
        deliveries::last_failure(self, destination, since).await
    }

    async fn count_messages_since(&self, since: i64) -> Result<u64> {
        accept::count_messages_since(self, since).await
    }

    async fn claim(&self, req: ClaimRequest) -> Result<ClaimResult> {
        claim::claim(self, req).await
    }

    async fn finish_attempt(&self, f: FinishAttempt) -> Result<FinishOutcome> {
        finish::finish_attempt(self, f).await
    }

    async fn finish_attempts(&self, batch: Vec<FinishAttempt>) -> Result<Vec<FinishOutcome>> {
        finish::finish_attempts(self, batch).await
    }

    async fn release(&self, leases: Vec<(DeliveryId, LeaseToken)>, now: i64) -> Result<()> {
        claim::release(self, leases, now).await
    }

    async fn list_dead(&self, q: &DlqQuery) -> Result<Vec<DeadItem>> {
        dlq::list_dead(self, q).await
    }

    async fn replay_dead(&self, queue: &str, id: &str, actor: &str, now: i64) -> Result<DlqChange> {
        dlq::replay_dead(self, queue, id, actor, now).await
    }

    async fn replay_all_dead(
        &self,
        queue: &str,
        filter: &ReplayFilter,
        actor: &str,
        now: i64,
    ) -> Result<u64> {
        dlq::replay_all_dead(self, queue, filter, actor, now).await
    }

    async fn discard_all_dead(&self, queue: &str, actor: &str, now: i64) -> Result<u64> {
        dlq::discard_all_dead(self, queue, actor, now).await
    }

    async fn discard_dead(
        &self,
        queue: &str,
        id: &str,
        actor: &str,
        now: i64,
    ) -> Result<DlqChange> {
        dlq::discard_dead(self, queue, id, actor, now).await
    }

    async fn record_error(
        &self,
        occ: ErrorOccurrence,
        alert: AlertBuilder,
    ) -> Result<ErrorOutcome> {
        error_groups::record_error(self, occ, alert).await
    }

    async fn get_error_group(&self, id: &ErrorGroupId) -> Result<Option<ErrorGroupRecord>> {
        error_groups::get_error_group(self, id.as_str()).await
    }

    async fn list_error_groups(&self, q: &ErrorGroupQuery) -> Result<Vec<ErrorGroupRecord>> {
        error_groups::list_error_groups(self, q).await
    }

    async fn set_error_group_status(
        &self,
        id: &ErrorGroupId,
        status: GroupStatus,
        actor: &str,
        now: i64,
    ) -> Result<Option<ErrorGroupRecord>> {
        error_groups::set_error_group_status(self, id.as_str(), status, actor, now).await
    }

    async fn create_token(&self, t: TokenRecord, actor: &str) -> Result<()> {
        access::create_token(self, t, actor).await
    }

    async fn get_token(&self, id: &str) -> Result<Option<TokenRecord>> {
        access::get_token(self, id).await
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        access::list_tokens(self).await
    }

    async fn revoke_token(&self, id: &str, actor: &str, now: i64) -> Result<bool> {
        access::revoke_token(self, id, actor, now).await
    }

    async fn touch_tokens(&self, used: Vec<(String, i64)>) -> Result<()> {
        access::touch_tokens(self, used).await
    }

    async fn append_audit(&self, entries: Vec<NewAudit>) -> Result<()> {
        audit::append_audit(self, entries).await
    }

    async fn append_checkpoint(&self, sign: CheckpointFn, now: i64) -> Result<Option<i64>> {
        audit::append_checkpoint(self, sign, now).await
    }

    async fn reseal(
        &self,
        destinations: Vec<(String, String)>,
        meta: Vec<(String, String)>,
        actor: &str,
        now: i64,
    ) -> Result<()> {
        meta::reseal(self, destinations, meta, actor, now).await
    }

    async fn list_audit(&self, after: i64, limit: u32) -> Result<Vec<AuditEntry>> {
        audit::list_audit(self, after, limit).await
    }

    async fn list_recent_audit(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditEntry>> {
        audit::list_recent_audit(self, before, limit).await
    }

    async fn create_session(&self, s: SessionRecord) -> Result<()> {
        access::create_session(self, s).await
    }

    async fn get_session(&self, id_hash: &str, now: i64) -> Result<Option<SessionRecord>> {
        access::get_session(self, id_hash, now).await
    }

    async fn delete_session(&self, id_hash: &str) -> Result<()> {
        access::delete_session(self, id_hash).await
    }

    async fn get_meta(&self, key: &str) -> Result<Option<String>> {
        meta::get_meta(self, key).await
    }

    async fn init_meta(&self, key: &str, value: &str) -> Result<String> {
        meta::init_meta(self, key, value).await
    }

    async fn prune(&self, now: i64, older_than: i64) -> Result<u64> {
        meta::prune(self, now, older_than).await
    }

    async fn close(&self) {
        meta::close(self).await
    }

    fn remote_signals(&self) -> Option<crate::RemoteSignals> {
        self.remote.clone()
    }

    fn single_node(&self) -> bool {
        self.dialect == Dialect::Sqlite
    }

    async fn put_tenant(&self, t: TenantRecord, actor: &str) -> Result<TenantPut> {
        tenants::put_tenant(self, t, actor).await
    }

    async fn get_tenant(&self, id_or_uid: &str) -> Result<Option<TenantRecord>> {
        tenants::get_tenant(self, id_or_uid).await
    }

    async fn list_tenants(&self, after: Option<&str>, limit: u32) -> Result<Vec<TenantRecord>> {
        tenants::list_tenants(self, after, limit).await
    }

    async fn delete_tenant(&self, id: &str, actor: &str, now: i64) -> Result<bool> {
        tenants::delete_tenant(self, id, actor, now).await
    }

    async fn put_event_type(&self, e: EventTypeRecord, actor: &str) -> Result<bool> {
        tenants::put_event_type(self, e, actor).await
    }

    async fn get_event_type(&self, name: &str) -> Result<Option<EventTypeRecord>> {
        tenants::get_event_type(self, name).await
    }

    async fn list_event_types(
        &self,
        after: Option<&str>,
        limit: u32,
        include_archived: bool,
    ) -> Result<Vec<EventTypeRecord>> {
        tenants::list_event_types(self, after, limit, include_archived).await
    }

    async fn delete_event_type(
        &self,
        name: &str,
        expunge: bool,
        actor: &str,
        now: i64,
    ) -> Result<bool> {
        tenants::delete_event_type(self, name, expunge, actor, now).await
    }

    async fn list_messages(&self, q: &MessageQuery) -> Result<Vec<MessageRecord>> {
        accept::list_messages(self, q).await
    }

    async fn list_destination_attempts(
        &self,
        destination: &str,
        after: Option<AttemptCursor>,
        limit: u32,
    ) -> Result<Vec<DestinationAttempt>> {
        deliveries::list_destination_attempts(self, destination, after, limit).await
    }

    async fn list_message_attempts(
        &self,
        message: &MessageId,
        limit: u32,
    ) -> Result<Vec<DestinationAttempt>> {
        deliveries::list_message_attempts(self, message.as_str(), limit).await
    }

    async fn resend(
        &self,
        message: &MessageId,
        destination: &str,
        delivery: DeliveryId,
        actor: &str,
        now: i64,
    ) -> Result<bool> {
        dlq::resend(self, message.as_str(), destination, delivery, actor, now).await
    }
}
